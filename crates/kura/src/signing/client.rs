//! The node's side of `kura signer serve`: one connection per request, with timeouts,
//! and nothing it answers taken on trust that can be checked here (the signed
//! transaction must be the one asked for).

use super::{Hello, Request, ReservesAnswer, Signed};
use anyhow::{anyhow, bail, Context, Result};
use kura_chain::bitcoin::consensus::encode::deserialize_hex;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::{OutPoint, Transaction};
use kura_signer::SignedTx;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The longest answer read from a signer.
const MAX_ANSWER: u64 = 8 << 20;

/// A separate signer, reached at a unix socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "connecting to the signer at {} (is `kura signer serve` running?)",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .context("writing to the signer")?;
        let mut answer = String::new();
        BufReader::new(stream.take(MAX_ANSWER))
            .read_line(&mut answer)
            .context("reading the signer's answer")?;
        let value: Value = serde_json::from_str(answer.trim())
            .with_context(|| format!("the signer answered {:?}", answer.trim()))?;
        if let Some(why) = value.get("refused").and_then(Value::as_str) {
            bail!("the signer refused: {why}");
        }
        if let Some(why) = value.get("error").and_then(Value::as_str) {
            bail!("the signer failed: {why}");
        }
        let ok = value
            .get("ok")
            .cloned()
            .ok_or_else(|| anyhow!("the signer answered {value} (no \"ok\")"))?;
        serde_json::from_value(ok).context("the signer's answer")
    }

    /// The signer's network and descriptors.
    pub fn hello(&self) -> Result<Hello> {
        self.call(&Request::Hello)
    }

    /// [`Client::hello`], asked again until the signer answers or `within` has passed
    /// (a signer started beside the node may still be opening its key).
    pub fn wait_hello(&self, within: Duration) -> Result<Hello> {
        let deadline = Instant::now() + within;
        loop {
            match self.hello() {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no signer answered within {within:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Have batch `batch`'s version `psbt` signed; the transaction returned must be
    /// exactly the PSBT's.
    pub fn sign(&self, batch: u64, psbt: &Psbt, cancel: bool) -> Result<SignedTx> {
        let signed: Signed = self.call(&Request::Sign {
            batch,
            psbt: psbt.to_string(),
            cancel,
        })?;
        let tx: Transaction = deserialize_hex(&signed.tx)
            .map_err(|e| anyhow!("the signer returned a transaction that does not parse: {e}"))?;
        let txid = tx.compute_txid();
        if txid != psbt.unsigned_tx.compute_txid() || tx.input.len() != psbt.inputs.len() {
            bail!("the signer returned transaction {txid}, not the one it was asked to sign");
        }
        Ok(SignedTx {
            tx,
            txid,
            fee_sat: signed.fee_sat,
        })
    }

    /// Have the hot and deposit coins of a proof of reserves signed: the PSBT with
    /// their signatures, and which coins they are.
    pub fn sign_reserves(&self, psbt: &Psbt, message: &str) -> Result<(Psbt, Vec<OutPoint>)> {
        let answer: ReservesAnswer = self.call(&Request::SignReserves {
            psbt: psbt.to_string(),
            message: message.to_owned(),
        })?;
        let signed = Psbt::from_str(&answer.psbt)
            .map_err(|e| anyhow!("the signer returned a PSBT that does not parse: {e}"))?;
        if signed.unsigned_tx != psbt.unsigned_tx {
            bail!("the signer returned a proof for another transaction");
        }
        let coins = answer
            .signed
            .iter()
            .map(|o| OutPoint::from_str(o).map_err(|e| anyhow!("the signer named coin {o}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        Ok((signed, coins))
    }
}
