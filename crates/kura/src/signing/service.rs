//! `kura signer serve`: the hot key and the deposit seed in a process of their own,
//! answering one JSON line per connection on a unix socket (mode 0600).
//!
//! A signature request names a batch and gives a PSBT. Before deciding, the signer
//! applies what the journal gained since the last request ([`super::follow`]) and
//! derives what it may sign from the books alone:
//!
//! - the batch must be open, of BTC, and its latest journaled version must be this
//!   transaction (the txid is journaled before anything is signed);
//! - the coins are the batch's, the payments are its withdrawals' (or a transfer's
//!   one output to our own wallet); a cancellation pays only our own wallets;
//! - while the books halt BTC withdrawals, only cancellations are signed;
//! - then `kura-signer`'s own checks: every input and unrequested output ours, the fee
//!   limits and this process's velocity caps, recorded in `DIR/signer/velocity.log`.

use super::follow::Follower;
use super::{keys, Hello, Request, ReservesAnswer, Signed};
use crate::server::files::DirLock;
use crate::server::payout::batch_payments;
use anyhow::{anyhow, Context, Result};
use kura_chain::bitcoin::consensus::encode::serialize_hex;
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::{Network, OutPoint, Txid};
use kura_engine::{BatchState, Engine};
use kura_signer::{Authorization, Policy, Signer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The longest request line read.
const MAX_REQUEST: u64 = 4 << 20;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What `kura signer serve` needs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The node's data directory: the journal is read from it, the secrets and the
    /// velocity record are in its `signer/`.
    pub data: PathBuf,
    pub socket: PathBuf,
    pub network: Network,
    pub policy: Policy,
}

/// The signer and the books it checks against.
#[derive(Debug)]
pub struct Service {
    follower: Follower,
    signer: Signer,
    network: Network,
    hot_descriptor: String,
    deposit_descriptor: String,
    _lock: DirLock,
}

/// Why a request was not answered with a signature: a refusal (the request is not
/// something this signer signs) or an error (the signer could not decide).
#[derive(Debug)]
pub enum Failure {
    Refused(String),
    Error(anyhow::Error),
}

impl Service {
    /// Open (creating on first use) the secrets in `DIR/signer/`, hold its lock, and read
    /// the journal.
    pub fn open(config: &ServiceConfig) -> Result<Service> {
        let dir = keys::signer_dir(&config.data);
        let lock = keys::lock_signer_dir(&config.data)?;
        let hot = keys::hot_key(&config.data, config.network, keys::Missing::Create)?;
        let deposit = keys::deposit_master(&config.data, config.network, keys::Missing::Create)?;
        let hot_descriptor = keys::hot_descriptor_of(&hot)?;
        let deposit_descriptor = keys::deposit_descriptor_of(&deposit, config.network)?;
        let follower = Follower::open(&config.data)?;
        let signer = Signer::new(
            hot,
            vec![deposit_descriptor.clone()],
            vec![deposit],
            config.policy,
            &dir.join("velocity.log"),
        )
        .map_err(|e| anyhow!("starting the signer: {e}"))?;
        Ok(Service {
            follower,
            signer,
            network: config.network,
            hot_descriptor,
            deposit_descriptor,
            _lock: lock,
        })
    }

    pub fn hello(&self) -> Hello {
        Hello {
            network: self.network.to_string(),
            hot_descriptor: self.hot_descriptor.clone(),
            deposit_descriptor: self.deposit_descriptor.clone(),
            journal_seq: self.follower.seq(),
        }
    }

    /// Answer one request (see the module documentation) at `now_ms`.
    pub fn handle(&mut self, request: Request, now_ms: u64) -> Result<Value, Failure> {
        match request {
            Request::Hello => Ok(json!(self.hello())),
            Request::Sign {
                batch,
                psbt,
                cancel,
            } => {
                let psbt = Psbt::from_str(psbt.trim())
                    .map_err(|e| Failure::Refused(format!("not a base64 PSBT: {e}")))?;
                self.catch_up()?;
                let auth = authorize(self.follower.engine(), self.network, batch, &psbt, cancel)
                    .map_err(Failure::Refused)?;
                let signed = self
                    .signer
                    .sign(&psbt, &auth, now_ms)
                    .map_err(|r| Failure::Refused(r.to_string()))?;
                tracing::info!(batch, txid = %signed.txid, fee_sat = signed.fee_sat, cancel, "signed a withdrawal batch");
                Ok(json!(Signed {
                    tx: serialize_hex(&signed.tx),
                    txid: signed.txid.to_string(),
                    fee_sat: signed.fee_sat,
                }))
            }
            Request::SignReserves { psbt, message } => {
                let psbt = Psbt::from_str(psbt.trim())
                    .map_err(|e| Failure::Refused(format!("not a base64 PSBT: {e}")))?;
                self.catch_up()?;
                let signed = self
                    .signer
                    .sign_reserves(&psbt, &message)
                    .map_err(|r| Failure::Refused(r.to_string()))?;
                tracing::info!(coins = signed.signed.len(), "signed a proof of reserves");
                Ok(json!(ReservesAnswer {
                    psbt: signed.psbt.to_string(),
                    signed: signed.signed.iter().map(OutPoint::to_string).collect(),
                }))
            }
        }
    }

    /// Apply the journal's new records and learn the wallets registered since.
    fn catch_up(&mut self) -> Result<(), Failure> {
        self.follower.catch_up().map_err(Failure::Error)?;
        let engine = self.follower.engine();
        if let Some(asset) = engine.asset_by_symbol("BTC") {
            let descriptors: Vec<String> = engine
                .wallets()
                .iter()
                .filter(|w| w.asset == asset)
                .map(|w| w.descriptor.clone())
                .collect();
            self.signer
                .learn(&descriptors)
                .map_err(|e| Failure::Error(anyhow!("a registered descriptor: {e}")))?;
        }
        Ok(())
    }
}

/// What the books allow `psbt` to be as batch `batch` (see the module documentation).
pub fn authorize(
    engine: &Engine,
    network: Network,
    batch: u64,
    psbt: &Psbt,
    cancel: bool,
) -> Result<Authorization, String> {
    let asset = engine
        .asset_by_symbol("BTC")
        .ok_or("the journal has no BTC asset yet")?;
    let b = engine
        .withdrawal_batch(batch)
        .ok_or_else(|| format!("the journal has no withdrawal batch {batch}"))?;
    if b.asset != asset {
        return Err(format!("batch {batch} is not a BTC batch"));
    }
    if b.state != BatchState::Open {
        return Err(format!("batch {batch} is no longer open ({:?})", b.state));
    }
    let txid = psbt.unsigned_tx.compute_txid();
    let latest = b
        .versions
        .last()
        .map(|v| Txid::from_byte_array(v.txid))
        .ok_or_else(|| format!("batch {batch} has no journaled version"))?;
    if txid != latest {
        return Err(format!(
            "transaction {txid} is not batch {batch}'s journaled version ({latest})"
        ));
    }
    if !cancel {
        if let Some(why) = engine.withdrawals_halted(asset) {
            return Err(format!(
                "BTC withdrawals are halted ({why}); only a cancellation is signed"
            ));
        }
    }
    let payments = if cancel {
        Vec::new()
    } else {
        batch_payments(engine, b, network).ok_or_else(|| {
            format!("the payments of batch {batch} cannot be derived from the books")
        })?
    };
    Ok(Authorization {
        batch,
        inputs: b
            .inputs
            .iter()
            .map(|o| OutPoint::new(Txid::from_byte_array(o.txid), o.vout))
            .collect(),
        payments,
    })
}

/// Bind `socket` (mode 0600; a stale one is replaced: the signer directory's lock
/// proves nobody serves it).
pub fn bind(socket: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the signer socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve `listener` for ever, one connection at a time (signatures are serialized
/// anyway: each one reads the velocity record the last one wrote).
pub fn serve(service: &mut Service, listener: &UnixListener) -> Result<()> {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(service, stream) {
                    tracing::warn!(error = %format!("{e:#}"), "a signer connection failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "accepting a signer connection failed"),
        }
    }
    Ok(())
}

fn answer(service: &mut Service, mut stream: UnixStream) -> Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => json!({ "refused": format!("malformed request: {e}") }),
        Ok(request) => match service.handle(request, crate::server::payout::now_ms()) {
            Ok(v) => json!({ "ok": v }),
            Err(Failure::Refused(why)) => {
                tracing::warn!(%why, "refused a request");
                json!({ "refused": why })
            }
            Err(Failure::Error(e)) => {
                tracing::error!(error = %format!("{e:#}"), "a request failed");
                json!({ "error": format!("{e:#}") })
            }
        },
    };
    let mut out = reply.to_string();
    out.push('\n');
    stream.write_all(out.as_bytes())?;
    Ok(())
}
