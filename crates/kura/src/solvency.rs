//! Solvency epochs: proofs of liabilities for every customer, tied to the chain and logged
//! in the journal (`kura solvency …`, the `solvency_every_*` options of `kura serve`, and
//! the `/kura/v1/solvency` endpoints).
//!
//! # An epoch
//!
//! 1. **The cut.** For every asset the node reconciles against a chain (BTC), the cut is
//!    the engine's last `Reconcile` of it: ledger sequence number `s`, block height `h`,
//!    block hash, the holdings the chain showed at `h` and the liabilities the engine
//!    recorded at `s`. Assets with no reconciliation (fiat) are cut at the newest
//!    on-chain cut's `s`, with its block (so every tree of the epoch describes one
//!    moment of the books). An epoch needs at least one reconciliation.
//! 2. **The balances.** The journal is replayed read-only (from the newest valid snapshot
//!    at or before the cut, whose chain hash is checked against the journal) up to `s`;
//!    every customer's balance of the asset is then `available + held` (held includes
//!    open orders and withdrawals still in flight). Every customer that exists at `s` is
//!    in the tree, with a zero balance if need be. Their total must equal the
//!    liabilities the engine recorded at the reconciliation (and the ledger's own
//!    customer total); otherwise nothing is published.
//! 3. **The trees.** One por/v1 tree (`kura_proofs::por`) per asset, of height `D`
//!    (`--depth`, default [`DEFAULT_DEPTH`]); account id = the customer's id, login =
//!    the customer's name (`#<id>` for a customer without one).
//! 4. **The record.** The roots are journaled (`Command::RecordSolvency`, codec tag 32)
//!    through the running node: per asset the cut's `s`, the por/v1 epoch id, `D`, the
//!    root hash and sum, and the reserves. The record is therefore a leaf of the signed
//!    Merkle audit log, and its sequence number, written in the report, proves that the
//!    roots were logged before any proof was handed out: proofs are served only for
//!    epochs whose report exists, and the report is written after the record.
//! 5. **The report**, in `DIR/solvency/epochs/<n>/`.
//!
//! # Secrets
//!
//! `DIR/solvency/secret` (32 random bytes as hex, mode 0600, created on first use,
//! refused when group or others may read it, like the audit key). Per epoch `n` and
//! asset symbol `A`, the tree's secrets are
//! `por_secret = HMAC-SHA256(secret, "kura/solvency/v1/por" ‖ u64be(n) ‖ A)` and
//! `pad_secret = HMAC-SHA256(secret, "kura/solvency/v1/pad" ‖ u64be(n) ‖ A)`, so leaves
//! are unlinkable across epochs and across the assets of one epoch.
//!
//! # Files
//!
//! ```text
//! DIR/solvency/LOCK                      flock: one epoch is taken at a time
//! DIR/solvency/secret                    the node's solvency secret (mode 0600)
//! DIR/solvency/epochs/<n>/report.json    the published report (written last)
//! DIR/solvency/epochs/<n>/summary.txt    the same, to read
//! DIR/solvency/epochs/<n>/reserves-BTC/   the epoch's proof of reserves (see below)
//! DIR/solvency/epochs/<n>/balances-<A>.tsv  mode 0600: `account_id TAB balance TAB login`
//!                                        per customer, by account id: what the tree of
//!                                        asset A was built from
//! ```
//!
//! An epoch directory without `report.json` is an attempt that stopped before its
//! record was journaled (or before the report was written): it is never listed or
//! served, and its number is not reused.
//!
//! Serving a proof later ([`SolvencyStore`]) rebuilds the asset's tree from its
//! balances file and the secret (deterministic; about two million SHA-256 calls at
//! `D = 20`, a second or two) and refuses it unless the rebuilt root is the published
//! one. Trees of the two most recently used epochs stay in memory.
//!
//! # The report (`report.json`)
//!
//! ```json
//! {"format": "kura-solvency/v1", "epoch": 3, "created_ms": …, "created": "… UTC",
//!  "record": {"seq": 1234, "timestamp_ms": …},
//!  "assets": [{
//!    "asset": "BTC", "scale": 8, "customers": 57, "depth": 20,
//!    "ledger_seq": 1200, "block_height": 850000, "block_hash": "<display order>",
//!    "time_ms": …, "time": "… UTC",
//!    "por": { por/v1 report: epoch, epoch_id, depth, root, reserves_message, reserves_sat },
//!    "liabilities": {"root_hash": HEX, "sum": 1234567890, "amount": "12.34567890"},
//!    "reserves": {"sum": …, "amount": "…", "source": "bip127" | "reconciliation"} | null,
//!    "reserves_note": "…", "ratio": "1.0530" | null,
//!    "status": "covered" | "shortfall" | "no on-chain reserves",
//!    "shortfall": {"sum": …, "amount": "…"} | null,
//!    "reserves_proof": {"format": "kura-reserves/1", "message": por.reserves_message,
//!      "commitment_sha256": HEX, "block_height": H, "block_hash": HEX, "at_cut": bool,
//!      "coins": N, "offline_coins": K, "total_sat": N, "amount": "…",
//!      "complete": bool, "proof": "reserves-BTC/reserves.json",
//!      "psbt": "reserves-BTC/reserves.psbt", "transaction": HEX | null} | null }]}
//! ```
//!
//! **Reserves.** Between the trees and the record, the epoch builds a BIP-127 proof of
//! reserves (`kura::reserves`) over every confirmed coin of every registered wallet,
//! committing to `por.reserves_message` (so to this epoch's liabilities root), into
//! `DIR/solvency/epochs/<n>/reserves-BTC/`. The hot and deposit coins are signed at
//! once; when that is every coin the proof is `complete`, its transaction is in the
//! report, and `reserves` states its total (`source: "bip127"`). Cold coins wait for the
//! offline ceremony: `kura cold sign` on copies of `reserves-BTC/reserves.psbt`,
//! `kura cold finalize --out FILE`, then `kura solvency attach-reserves --epoch n --tx
//! FILE` checks the transaction against the epoch's message and coins and writes
//! `reserves-BTC/reserves.tx`, which is served with the report from then on
//! (`transaction`, `"attached": true`); until then `reserves` are the holdings the node
//! reconciled at the block (`source: "reconciliation"`). `at_cut` says whether the coins
//! were listed at the cut's block (the node may have followed a newer one). If no proof
//! can be built (no coin yet, a signer failure), `reserves_proof` is null and
//! `reserves_note` says why; the liabilities are published all the same. Fiat assets have
//! `reserves: null`, `status: "no on-chain reserves"`. A customer checks the transaction
//! with `kura reserves verify --tx FILE --message MSG` or
//! `tools/verify/reserves_verify.py` (coins unspent, signatures, sum).
//!
//! # A customer's proofs (`kura solvency proof`, `GET /kura/v1/solvency/proof`)
//!
//! `{"format": "kura-solvency-proof/v1", "epoch": 3, "record_seq": 1234,
//!   "account_id": 7, "login": "alice",
//!   "proofs": [{"asset": "BTC", "proof": { por/v1 inclusion proof }}, …]}`.
//! `kura solvency verify` and `tools/verify/por_verify.py` check such a file (or a
//! single por/v1 proof) against `report.json` (or a single por/v1 report).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use kura_engine::codec;
use kura_engine::{Engine, Limits, SolvencyRoot};
use kura_journal::{list_snapshots, load_snapshot, JournalReader, StdFs};
use kura_proofs::por::{self, Epoch, InclusionProof, LiabilityTree, Report, MAX_SAT};
use kura_units::{AssetId, UserId};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The solvency subdirectory of the data directory.
pub const SOLVENCY_SUBDIR: &str = "solvency";
/// The node's solvency secret.
pub const SECRET_FILE: &str = "secret";
/// One subdirectory per epoch.
pub const EPOCHS_SUBDIR: &str = "epochs";
/// The published report of an epoch.
pub const REPORT_FILE: &str = "report.json";
/// The report, to read.
pub const SUMMARY_FILE: &str = "summary.txt";
/// The lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The `format` of a report.
pub const REPORT_FORMAT: &str = "kura-solvency/v1";
/// The `format` of a customer's proofs.
pub const PROOF_FORMAT: &str = "kura-solvency-proof/v1";
/// The default tree height: 1,048,576 slots.
pub const DEFAULT_DEPTH: u32 = 20;
/// Trees kept in memory by [`SolvencyStore`], in epochs.
const CACHED_EPOCHS: usize = 2;

fn solvency_dir(data: &Path) -> PathBuf {
    data.join(SOLVENCY_SUBDIR)
}

/// The directory of epoch `n`.
pub fn epoch_dir(data: &Path, n: u64) -> PathBuf {
    solvency_dir(data).join(EPOCHS_SUBDIR).join(n.to_string())
}

fn balances_file(symbol: &str) -> String {
    format!("balances-{symbol}.tsv")
}

fn mkdir_private(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// The lock on `DIR/solvency`, released when dropped.
#[derive(Debug)]
pub struct SolvencyLock {
    _file: File,
}

impl SolvencyLock {
    /// Waits for the exclusive lock, creating the solvency directory if needed.
    pub fn exclusive(data: &Path) -> Result<SolvencyLock> {
        if !data.is_dir() {
            bail!("data directory {} does not exist", data.display());
        }
        let dir = solvency_dir(data);
        mkdir_private(&dir.join(EPOCHS_SUBDIR))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(SolvencyLock { _file: file })
    }
}

/// Loads `DIR/solvency/secret`, creating it on first use (mode 0600; refused when
/// group or others may read it).
pub fn load_secret(data: &Path) -> Result<[u8; 32]> {
    let dir = solvency_dir(data);
    mkdir_private(&dir)?;
    crate::server::files::load_or_create_secret(&dir.join(SECRET_FILE), "the solvency secret")
}

/// `(por_secret, pad_secret)` of asset `symbol` in epoch `n`.
pub fn tree_secrets(secret: &[u8; 32], n: u64, symbol: &str) -> ([u8; 32], [u8; 32]) {
    let derive = |tag: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(tag);
        mac.update(&n.to_be_bytes());
        mac.update(symbol.as_bytes());
        mac.finalize().into_bytes().into()
    };
    (
        derive(b"kura/solvency/v1/por"),
        derive(b"kura/solvency/v1/pad"),
    )
}

// ---- replaying the journal read-only -----------------------------------------------

fn engine_from_snapshot(snap: &kura_journal::Snapshot) -> Result<Engine> {
    let state_hash: [u8; 32] = Sha256::digest(&snap.state).into();
    if state_hash != snap.meta.state_hash {
        bail!(
            "snapshot {} (seq {}): state hash does not match its contents",
            snap.path.display(),
            snap.meta.seq
        );
    }
    Engine::decode_state(&snap.state, Limits::DEFAULT).map_err(|why| {
        anyhow!(
            "snapshot {} (seq {}): {why}",
            snap.path.display(),
            snap.meta.seq
        )
    })
}

/// Replays the journal of `data` without writing anything (safe while a server runs):
/// from the newest valid snapshot at or before `start_at_most` (or from genesis) up to
/// `until` (or the end of what is written). `visit(seq, timestamp_ms, engine)` sees the
/// state after each record from the starting point on (the snapshot's own seq first).
/// Returns the engine and the last sequence number applied.
pub fn replay(
    data: &Path,
    start_at_most: u64,
    until: Option<u64>,
    mut visit: impl FnMut(u64, u64, &Engine) -> Result<()>,
) -> Result<(Engine, u64)> {
    let mut snapshot = None;
    for file in list_snapshots(data)?.into_iter().rev() {
        if file.seq > start_at_most || until.is_some_and(|u| file.seq > u) {
            continue;
        }
        match load_snapshot(&file.path)
            .map_err(anyhow::Error::from)
            .and_then(|s| engine_from_snapshot(&s).map(|e| (s, e)))
        {
            Ok(found) => {
                snapshot = Some(found);
                break;
            }
            Err(e) => tracing::warn!(
                snapshot = %file.path.display(),
                error = %format!("{e:#}"),
                "solvency: skipping an unreadable snapshot"
            ),
        }
    }
    let (mut engine, from) = match snapshot {
        Some((snap, engine)) => (engine, snap.meta),
        None => (
            Engine::new(Limits::DEFAULT),
            kura_journal::SnapshotMeta {
                seq: 0,
                chain_hash: [0; 32],
                state_hash: [0; 32],
            },
        ),
    };
    let mut reader = JournalReader::open_with(StdFs, data, from.seq.max(1))
        .with_context(|| format!("reading the journal in {}", data.display()))?;
    let mut last = from.seq;
    let mut events = Vec::new();
    if from.seq > 0 {
        let record = match reader.next() {
            Some(r) => r.with_context(|| format!("reading journal record {}", from.seq))?,
            None => bail!("the journal ends before snapshot seq {}", from.seq),
        };
        if record.seq != from.seq || record.chain_hash != from.chain_hash {
            bail!(
                "the snapshot at seq {} does not match the journal's record {}",
                from.seq,
                record.seq
            );
        }
        let entry = codec::decode(&record.payload)
            .map_err(|e| anyhow!("journal record {}: {e}", record.seq))?;
        visit(from.seq, entry.ctx_timestamp_ms, &engine)?;
    }
    for record in reader {
        let record = record.with_context(|| format!("reading journal record {}", last + 1))?;
        if until.is_some_and(|u| record.seq > u) {
            break;
        }
        let entry = codec::decode(&record.payload)
            .map_err(|e| anyhow!("journal record {} cannot be decoded: {e}", record.seq))?;
        events.clear();
        let _ = engine.apply(&entry.command, entry.ctx(record.seq), &mut events);
        last = record.seq;
        visit(record.seq, entry.ctx_timestamp_ms, &engine)?;
    }
    if let Some(u) = until {
        if last < u {
            bail!("the journal ends at seq {last}, before seq {u}");
        }
    }
    Ok((engine, last))
}

// ---- the cut -------------------------------------------------------------------------

/// Where one asset's tree is cut.
#[derive(Clone, Debug)]
pub struct Cut {
    pub asset: AssetId,
    pub symbol: String,
    pub scale: u8,
    pub ledger_seq: u64,
    pub height: u32,
    /// Internal byte order.
    pub block_hash: [u8; 32],
    /// The reconciled holdings, for an asset reconciled against a chain.
    pub holdings: Option<u64>,
    /// What the engine recorded as owed at the reconciliation (on-chain assets).
    pub recorded_liabilities: Option<u128>,
}

/// The cuts of the next epoch, from the engine state at the journal's end.
pub fn cuts(engine: &Engine) -> Result<Vec<Cut>> {
    let assets: Vec<AssetId> = (0..engine.asset_count())
        .filter_map(|i| u16::try_from(i).ok())
        .map(AssetId)
        .collect();
    let chain: Vec<(AssetId, kura_engine::Reconciliation)> = assets
        .iter()
        .filter_map(|&a| engine.last_reconciliation(a).map(|r| (a, r)))
        .collect();
    let Some(newest) = chain.iter().map(|(_, r)| *r).max_by_key(|r| r.seq) else {
        bail!(
            "no asset has been reconciled against a chain yet: an epoch needs a block to \
             tie the books to (run the node with a chain and let it process a block)"
        );
    };
    let mut out = Vec::new();
    for &asset in &assets {
        let symbol = engine
            .asset_symbol(asset)
            .ok_or_else(|| anyhow!("asset {} has no symbol", asset.0))?
            .to_owned();
        let scale = engine.asset_scale(asset).map_or(0, |s| s.places());
        let own = chain.iter().find(|(a, _)| *a == asset).map(|(_, r)| *r);
        let r = own.unwrap_or(newest);
        out.push(Cut {
            asset,
            symbol,
            scale,
            ledger_seq: r.seq,
            height: r.height,
            block_hash: r.block_hash,
            holdings: own.map(|r| r.holdings.get()),
            recorded_liabilities: own.map(|r| r.liabilities),
        });
    }
    Ok(out)
}

/// Every customer's balance of `asset` in `engine`: `(account id, login, balance)`,
/// by account id; and the total.
pub fn balances(engine: &Engine, asset: AssetId, symbol: &str) -> Result<(Vec<Account>, u128)> {
    let mut out = Vec::with_capacity(engine.user_count());
    let mut total: u128 = 0;
    for u in 0..engine.user_count() {
        let user = UserId(u32::try_from(u).map_err(|_| anyhow!("too many customers"))?);
        let b = engine
            .ledger()
            .balance(user, asset)
            .map_err(|e| anyhow!("customer {u}, asset {symbol}: {e:?}"))?;
        let balance = b.total();
        let balance = u64::try_from(balance)
            .ok()
            .filter(|&v| v <= MAX_SAT)
            .ok_or_else(|| {
                anyhow!(
                    "customer {u} holds {balance} {symbol} minor units, above what a por/v1 \
                     tree can hold ({MAX_SAT})"
                )
            })?;
        total += u128::from(balance);
        out.push(Account {
            id: u as u64,
            login: engine
                .user_name(user)
                .map_or_else(|| format!("#{u}"), str::to_owned),
            balance,
        });
    }
    Ok((out, total))
}

/// One customer in a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    pub login: String,
    pub balance: u64,
}

/// Builds asset `symbol`'s tree of epoch `n`.
pub fn build_tree(
    secret: &[u8; 32],
    n: u64,
    symbol: &str,
    epoch: &Epoch,
    depth: u32,
    accounts: &[Account],
) -> Result<LiabilityTree> {
    let (por_secret, pad_secret) = tree_secrets(secret, n, symbol);
    let rows: Vec<(u64, &str, u64)> = accounts
        .iter()
        .map(|a| (a.id, a.login.as_str(), a.balance))
        .collect();
    LiabilityTree::build(epoch, &por_secret, &pad_secret, depth, &rows)
        .map_err(|e| anyhow!("building the {symbol} tree of epoch {n}: {e}"))
}

// ---- taking an epoch -------------------------------------------------------------------

/// How the roots were journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub seq: u64,
    pub timestamp_ms: u64,
}

/// What [`take_epoch`] produced.
#[derive(Clone, Debug)]
pub struct EpochOutcome {
    pub epoch: u64,
    pub dir: PathBuf,
    pub report: Value,
    pub summary: String,
}

/// Options of [`take_epoch`].
#[derive(Clone, Copy, Debug)]
pub struct ProveOptions {
    pub depth: u32,
}

impl Default for ProveOptions {
    fn default() -> Self {
        ProveOptions {
            depth: DEFAULT_DEPTH,
        }
    }
}

struct AssetTree {
    cut: Cut,
    epoch: Epoch,
    time_ms: u64,
    customers: usize,
    tree: LiabilityTree,
    /// The epoch's proof of reserves of this asset (on-chain assets, when a coin
    /// source was given).
    reserves: Option<EpochReserves>,
}

impl AssetTree {
    /// The reserves the epoch states: a finished BIP-127 proof's total, else the
    /// reconciled holdings.
    fn stated_reserves(&self) -> Option<u64> {
        match &self.reserves {
            Some(EpochReserves::Proved(p)) if p.complete => Some(p.total_sat),
            _ => self.cut.holdings,
        }
    }
}

/// Where an epoch's proof of reserves gets the node's coins and wallets: the admin
/// socket's `custody_coins` answer (`kura::reserves::coins_via_admin`, or
/// `server::admin::custody_coins_now` inside the node).
pub type CoinSource<'a> = &'a dyn Fn() -> Result<Value>;

/// The subdirectory of an epoch holding the proof of reserves of asset `symbol`.
pub fn reserves_subdir(symbol: &str) -> String {
    format!("reserves-{symbol}")
}

/// What became of an epoch's proof of reserves.
#[derive(Clone, Debug)]
enum EpochReserves {
    Proved(ProvedReserves),
    /// Why there is none (no coin, the node not caught up, a signer failure…).
    Failed(String),
}

#[derive(Clone, Debug)]
struct ProvedReserves {
    message: String,
    height: u32,
    block_hash: String,
    total_sat: u64,
    coins: usize,
    offline: usize,
    /// Every coin signed: the transaction is final.
    complete: bool,
    tx_hex: Option<String>,
}

/// Builds asset `symbol`'s proof of reserves of epoch directory `dir`, committing to
/// `message`, into `dir/reserves-<symbol>/`.
fn prove_epoch_reserves(
    data: &Path,
    dir: &Path,
    symbol: &str,
    message: &str,
    coins: CoinSource<'_>,
) -> EpochReserves {
    let attempt = || -> Result<ProvedReserves> {
        let answer = coins()?;
        let proved = crate::reserves::prove_from(
            data,
            &answer,
            message,
            &dir.join(reserves_subdir(symbol)),
        )?;
        Ok(ProvedReserves {
            message: message.to_owned(),
            height: proved.height,
            block_hash: proved.block_hash.to_string(),
            total_sat: proved.total_sat,
            coins: proved.coins.len(),
            offline: proved.offline(),
            complete: proved.tx.is_some(),
            tx_hex: proved
                .tx
                .as_ref()
                .map(kura_chain::bitcoin::consensus::encode::serialize_hex),
        })
    };
    match attempt() {
        Ok(p) => EpochReserves::Proved(p),
        Err(e) => {
            tracing::warn!(asset = symbol, error = %format!("{e:#}"), "solvency: no proof of reserves");
            EpochReserves::Failed(format!("{e:#}"))
        }
    }
}

/// The epoch numbers that have a directory (published or not), ascending.
fn epoch_numbers(data: &Path) -> Result<Vec<u64>> {
    let dir = solvency_dir(data).join(EPOCHS_SUBDIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        {
            if n > 0 && n.to_string() == entry.file_name().to_string_lossy() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The published epochs (those with a report), ascending.
pub fn published_epochs(data: &Path) -> Result<Vec<u64>> {
    Ok(epoch_numbers(data)?
        .into_iter()
        .filter(|&n| epoch_dir(data, n).join(REPORT_FILE).is_file())
        .collect())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

fn write_balances(path: &Path, accounts: &[Account]) -> Result<()> {
    let mut text = String::with_capacity(accounts.len() * 24);
    for a in accounts {
        text.push_str(&format!("{}\t{}\t{}\n", a.id, a.balance, a.login));
    }
    write_file(path, text.as_bytes(), 0o600)
}

/// Reads a balances file written by [`take_epoch`].
pub fn read_balances(path: &Path) -> Result<Vec<Account>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let mut parts = line.splitn(3, '\t');
        let (Some(id), Some(balance), Some(login)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{} line {}: expected three fields", path.display(), i + 1);
        };
        out.push(Account {
            id: id
                .parse()
                .with_context(|| format!("{} line {}: account id", path.display(), i + 1))?,
            balance: balance
                .parse()
                .with_context(|| format!("{} line {}: balance", path.display(), i + 1))?,
            login: login.to_owned(),
        });
    }
    Ok(out)
}

/// `minor` at `scale` decimals, as text.
pub fn amount_text(minor: u128, scale: u8) -> String {
    if scale == 0 {
        return minor.to_string();
    }
    let factor = 10u128.pow(u32::from(scale));
    format!(
        "{}.{:0width$}",
        minor / factor,
        minor % factor,
        width = usize::from(scale)
    )
}

/// `reserves / liabilities` to four decimals (rounded down), or `None` without
/// liabilities.
fn ratio_text(reserves: u64, liabilities: u64) -> Option<String> {
    if liabilities == 0 {
        return None;
    }
    let r = u128::from(reserves) * 10_000 / u128::from(liabilities);
    Some(format!("{}.{:04}", r / 10_000, r % 10_000))
}

/// A block hash in display order (as block explorers and Bitcoin Core print it).
fn display_hash(internal: &[u8; 32]) -> String {
    let mut h = *internal;
    h.reverse();
    hex::encode(h)
}

fn utc(ms: u64) -> String {
    format!("{} UTC", kura_api::http::wallet::utc_text(ms))
}

/// Takes epoch `n` = the next free number: the cut, the balances, the trees; then
/// `record` journals the roots (through the running node); then the report is written.
/// Holds [`SolvencyLock`] throughout. `progress` is told what is being done.
pub fn take_epoch(
    data: &Path,
    options: ProveOptions,
    now_ms: u64,
    coins: Option<CoinSource<'_>>,
    record: impl FnOnce(u64, Vec<SolvencyRoot>) -> Result<Recorded>,
    mut progress: impl FnMut(&str),
) -> Result<EpochOutcome> {
    let _lock = SolvencyLock::exclusive(data)?;
    let secret = load_secret(data)?;

    progress("replaying the journal to its end to find the cut");
    let (head_engine, head) = replay(data, u64::MAX, None, |_, _, _| Ok(()))?;
    let cuts = cuts(&head_engine)?;
    drop(head_engine);
    let seqs: BTreeSet<u64> = cuts.iter().map(|c| c.ledger_seq).collect();
    let first = seqs.first().copied().unwrap_or(0);
    let last = seqs.last().copied().unwrap_or(0);

    progress(&format!(
        "replaying the journal to the cut (seq {first}..={last})"
    ));
    let mut captured: BTreeMap<u16, (Vec<Account>, u64)> = BTreeMap::new();
    replay(data, first, Some(last), |seq, ts, engine| {
        for c in cuts.iter().filter(|c| c.ledger_seq == seq) {
            let (accounts, total) = balances(engine, c.asset, &c.symbol)?;
            let ledger_total = engine
                .ledger()
                .customer_total(c.asset)
                .map_err(|e| anyhow!("asset {}: {e:?}", c.symbol))?;
            if total != ledger_total {
                bail!(
                    "{} at seq {seq}: the customers' balances add up to {total} but the \
                     ledger's customer total is {ledger_total}: refusing to publish",
                    c.symbol
                );
            }
            if let Some(recorded) = c.recorded_liabilities {
                if total != recorded {
                    bail!(
                        "{} at seq {seq}: the customers' balances (available + held) add up \
                         to {total} but the engine recorded liabilities of {recorded} at \
                         this reconciliation: refusing to publish",
                        c.symbol
                    );
                }
            }
            captured.insert(c.asset.0, (accounts, ts));
        }
        Ok(())
    })?;

    let n = epoch_numbers(data)?.last().copied().unwrap_or(0) + 1;
    let dir = epoch_dir(data, n);
    mkdir_private(&dir)?;
    let mut trees = Vec::new();
    for cut in &cuts {
        let (accounts, time_ms) = captured
            .remove(&cut.asset.0)
            .ok_or_else(|| anyhow!("the replay never reached seq {}", cut.ledger_seq))?;
        progress(&format!(
            "building the {} tree: {} customers, height {}",
            cut.symbol,
            accounts.len(),
            options.depth
        ));
        let epoch = Epoch {
            ledger_seq: cut.ledger_seq,
            block_height: cut.height,
            block_hash: cut.block_hash,
        };
        let tree = build_tree(&secret, n, &cut.symbol, &epoch, options.depth, &accounts)?;
        write_balances(&dir.join(balances_file(&cut.symbol)), &accounts)?;
        trees.push(AssetTree {
            cut: cut.clone(),
            epoch,
            time_ms,
            customers: accounts.len(),
            tree,
            reserves: None,
        });
    }
    // The coins are BTC's (the only asset kura holds on a chain): each on-chain tree
    // gets a BIP-127 proof committing to its root.
    if let Some(coins) = coins {
        for t in trees
            .iter_mut()
            .filter(|t| t.cut.holdings.is_some() && t.cut.symbol == "BTC")
        {
            progress(&format!("proving the {} reserves", t.cut.symbol));
            let message = t.tree.report(&t.epoch, None).reserves_message();
            t.reserves = Some(prove_epoch_reserves(
                data,
                &dir,
                &t.cut.symbol,
                &message,
                coins,
            ));
        }
    }

    let roots: Vec<SolvencyRoot> = trees
        .iter()
        .map(|t| SolvencyRoot {
            asset: t.cut.asset,
            ledger_seq: t.cut.ledger_seq,
            epoch_id: t.epoch.epoch_id(),
            depth: u8::try_from(options.depth).unwrap_or(u8::MAX),
            root_hash: t.tree.root().hash,
            root_sum: t.tree.root().sum,
            reserves: t.stated_reserves(),
        })
        .collect();
    progress(&format!("journaling the roots of epoch {n}"));
    let recorded = record(n, roots.clone())
        .with_context(|| format!("journaling the roots of solvency epoch {n}"))?;
    if recorded.seq <= head.max(last) {
        bail!(
            "the node journaled the roots at seq {}, not after the journal's end {}",
            recorded.seq,
            head
        );
    }

    let report = report_json(n, now_ms, recorded, &trees);
    let summary = summary_text(&report);
    write_file(&dir.join(SUMMARY_FILE), summary.as_bytes(), 0o644)?;
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    write_file(&dir.join(REPORT_FILE), &bytes, 0o644)?;
    Ok(EpochOutcome {
        epoch: n,
        dir,
        report,
        summary,
    })
}

fn report_json(n: u64, now_ms: u64, recorded: Recorded, trees: &[AssetTree]) -> Value {
    let assets: Vec<Value> = trees
        .iter()
        .map(|t| {
            let root = t.tree.root();
            let scale = t.cut.scale;
            let stated = t.stated_reserves();
            let por: Report = t.tree.report(&t.epoch, stated);
            let (reserves, note, status, shortfall, ratio) = match stated {
                Some(h) => {
                    let short = root.sum.saturating_sub(h);
                    let (source, note) = reserves_note(t);
                    (
                        json!({
                            "sum": h,
                            "amount": amount_text(u128::from(h), scale),
                            "source": source,
                        }),
                        note,
                        if short > 0 { "shortfall" } else { "covered" },
                        (short > 0).then(|| {
                            json!({"sum": short, "amount": amount_text(u128::from(short), scale)})
                        }),
                        ratio_text(h, root.sum),
                    )
                }
                None => (
                    Value::Null,
                    format!(
                        "{} is held off-chain (bank accounts): no on-chain reserves to \
                         state; only the liabilities are proven",
                        t.cut.symbol
                    ),
                    "no on-chain reserves",
                    None,
                    None,
                ),
            };
            json!({
                "asset": t.cut.symbol,
                "scale": scale,
                "customers": t.customers,
                "depth": t.tree.depth(),
                "ledger_seq": t.cut.ledger_seq,
                "block_height": t.cut.height,
                "block_hash": display_hash(&t.cut.block_hash),
                "time_ms": t.time_ms,
                "time": utc(t.time_ms),
                "por": por,
                "liabilities": {
                    "root_hash": hex::encode(root.hash),
                    "sum": root.sum,
                    "amount": amount_text(u128::from(root.sum), scale),
                },
                "reserves": reserves,
                "reserves_note": note,
                "ratio": ratio,
                "status": status,
                "shortfall": shortfall,
                "reserves_proof": reserves_proof_json(t, scale),
            })
        })
        .collect();
    json!({
        "format": REPORT_FORMAT,
        "epoch": n,
        "created_ms": now_ms,
        "created": utc(now_ms),
        "record": {"seq": recorded.seq, "timestamp_ms": recorded.timestamp_ms},
        "assets": assets,
    })
}

/// Where the stated reserves come from, and a sentence on them.
fn reserves_note(t: &AssetTree) -> (&'static str, String) {
    let sym = &t.cut.symbol;
    let dir = reserves_subdir(sym);
    match &t.reserves {
        Some(EpochReserves::Proved(p)) if p.complete => (
            "bip127",
            format!(
                "proven by the BIP-127 transaction in reserves_proof ({dir}/{}): {} coin(s) \
                 signed over the message committing to this epoch's liabilities root, at \
                 block {}; check it with `kura reserves verify` or \
                 tools/verify/reserves_verify.py",
                crate::reserves::TX_FILE,
                p.coins,
                p.height
            ),
        ),
        Some(EpochReserves::Proved(p)) => (
            "reconciliation",
            format!(
                "the coins the node's wallets held at block {} as its chain watcher \
                 reconciled them; the BIP-127 proof over them ({dir}/{}) waits for the cold \
                 wallet holders' signatures on {} coin(s) (`kura cold sign`, `kura cold \
                 finalize`, then `kura solvency attach-reserves`)",
                t.cut.height,
                crate::reserves::PSBT_FILE,
                p.offline
            ),
        ),
        Some(EpochReserves::Failed(why)) => (
            "reconciliation",
            format!(
                "the coins the node's wallets held at block {} as its chain watcher \
                 reconciled them; no proof of reserves could be built: {why}",
                t.cut.height
            ),
        ),
        None => (
            "reconciliation",
            format!(
                "the coins the node's wallets held at block {} as its chain watcher \
                 reconciled them; no proof of reserves was asked for",
                t.cut.height
            ),
        ),
    }
}

/// What [`attach_reserves`] attached.
#[derive(Clone, Debug)]
pub struct Attached {
    pub path: PathBuf,
    pub total_sat: u64,
    pub coins: usize,
}

/// Attaches the finished proof of reserves `tx` of asset `symbol` to published epoch
/// `n`, once the cold holders have signed it (`kura cold finalize`): it must commit to
/// the epoch's message and spend exactly the coins of the epoch's PSBT, every
/// signature valid, for the total built. Written as `reserves-<symbol>/reserves.tx`
/// (never overwritten); served with the report from then on.
pub fn attach_reserves(
    data: &Path,
    n: u64,
    symbol: &str,
    tx: &kura_chain::bitcoin::Transaction,
) -> Result<Attached> {
    use kura_chain::bitcoin::psbt::Psbt;
    use std::str::FromStr as _;
    let _lock = SolvencyLock::exclusive(data)?;
    let (_, report) = SolvencyStore::new(data)
        .report(Some(n))?
        .ok_or_else(|| anyhow!("no published epoch {n}"))?;
    let asset = report["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["asset"] == symbol)
        .ok_or_else(|| anyhow!("epoch {n} has no asset {symbol}"))?;
    let proof = &asset["reserves_proof"];
    let message = proof["message"].as_str().ok_or_else(|| {
        anyhow!("epoch {n} has no proof of reserves of {symbol} to finish (see its reserves_note)")
    })?;
    let dir = epoch_dir(data, n).join(reserves_subdir(symbol));
    let tx_path = dir.join(crate::reserves::TX_FILE);
    if proof["complete"] == true || tx_path.exists() {
        bail!(
            "epoch {n}'s proof of reserves of {symbol} is already finished ({})",
            tx_path.display()
        );
    }
    let psbt_path = dir.join(crate::reserves::PSBT_FILE);
    let text = std::fs::read_to_string(&psbt_path)
        .with_context(|| format!("reading {}", psbt_path.display()))?;
    let psbt = Psbt::from_str(text.trim())
        .map_err(|e| anyhow!("{} is not a PSBT: {e}", psbt_path.display()))?;
    let wanted: BTreeSet<_> = psbt
        .unsigned_tx
        .input
        .iter()
        .skip(1)
        .map(|i| i.previous_output)
        .collect();
    let given: BTreeSet<_> = tx.input.iter().skip(1).map(|i| i.previous_output).collect();
    if wanted != given || tx.input.len() != psbt.unsigned_tx.input.len() {
        bail!(
            "the transaction spends {} coins, not the {} coins of epoch {n}'s proof ({})",
            tx.input.len().saturating_sub(1),
            wanted.len(),
            psbt_path.display()
        );
    }
    let mut prevouts = BTreeMap::new();
    for (txin, input) in psbt.unsigned_tx.input.iter().zip(&psbt.inputs).skip(1) {
        let utxo = input.witness_utxo.clone().ok_or_else(|| {
            anyhow!(
                "{}: input {} has no amount",
                psbt_path.display(),
                txin.previous_output
            )
        })?;
        prevouts.insert(txin.previous_output, utxo);
    }
    let total = kura_custody::reserves::verify_reserves(tx, &prevouts, message)
        .map_err(|e| anyhow!("the transaction is not epoch {n}'s proof of reserves: {e}"))?;
    if Some(total) != proof["total_sat"].as_u64() {
        bail!(
            "the transaction proves {total} sat, not the {} of epoch {n}'s proof",
            proof["total_sat"]
        );
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tx_path)
        .with_context(|| format!("creating {}", tx_path.display()))?;
    f.write_all(
        format!(
            "{}\n",
            kura_chain::bitcoin::consensus::encode::serialize_hex(tx)
        )
        .as_bytes(),
    )
    .and_then(|()| f.sync_all())
    .with_context(|| format!("writing {}", tx_path.display()))?;
    Ok(Attached {
        path: tx_path,
        total_sat: total,
        coins: wanted.len(),
    })
}

/// Adds to a published report the proofs of reserves attached since
/// ([`attach_reserves`]): `reserves_proof.transaction` and `"attached": true`.
fn with_attached(data: &Path, n: u64, mut report: Value) -> Value {
    let dir = epoch_dir(data, n);
    for a in report["assets"].as_array_mut().into_iter().flatten() {
        let Some(symbol) = a["asset"].as_str().map(str::to_owned) else {
            continue;
        };
        let proof = &mut a["reserves_proof"];
        if !proof.is_object() || proof["complete"] == true {
            continue;
        }
        let path = dir
            .join(reserves_subdir(&symbol))
            .join(crate::reserves::TX_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            proof["transaction"] = Value::String(text.trim().to_owned());
            proof["attached"] = Value::Bool(true);
        }
    }
    report
}

/// The report's `reserves_proof` of one asset.
fn reserves_proof_json(t: &AssetTree, scale: u8) -> Value {
    let Some(EpochReserves::Proved(p)) = &t.reserves else {
        return Value::Null;
    };
    let dir = reserves_subdir(&t.cut.symbol);
    json!({
        "format": crate::reserves::FORMAT,
        "message": p.message,
        "commitment_sha256": crate::reserves::commitment_hex(&p.message),
        "block_height": p.height,
        "block_hash": p.block_hash,
        "at_cut": p.height == t.cut.height,
        "coins": p.coins,
        "offline_coins": p.offline,
        "total_sat": p.total_sat,
        "amount": amount_text(u128::from(p.total_sat), scale),
        "complete": p.complete,
        "proof": format!("{dir}/{}", crate::reserves::PROOF_FILE),
        "psbt": format!("{dir}/{}", crate::reserves::PSBT_FILE),
        "transaction": p.tx_hex,
    })
}

/// The report as text.
pub fn summary_text(report: &Value) -> String {
    let mut out = format!(
        "kura solvency epoch {}, roots logged in the journal at seq {} ({})\n",
        report["epoch"],
        report["record"]["seq"],
        utc(report["record"]["timestamp_ms"].as_u64().unwrap_or(0)),
    );
    for a in report["assets"].as_array().into_iter().flatten() {
        let sym = a["asset"].as_str().unwrap_or("?");
        let depth = a["depth"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "\n{sym}\n  cut:         ledger seq {}, block {} {} ({})\n",
            a["ledger_seq"],
            a["block_height"],
            a["block_hash"].as_str().unwrap_or(""),
            a["time"].as_str().unwrap_or(""),
        ));
        out.push_str(&format!(
            "  customers:   {} in a tree of height {depth} ({} slots)\n",
            a["customers"],
            1u64.checked_shl(u32::try_from(depth).unwrap_or(64))
                .map_or_else(|| "?".to_owned(), |v| v.to_string()),
        ));
        out.push_str(&format!(
            "  liabilities: {} {sym}  (root {})\n",
            a["liabilities"]["amount"].as_str().unwrap_or("?"),
            a["liabilities"]["root_hash"].as_str().unwrap_or("?"),
        ));
        let proof = &a["reserves_proof"];
        match a["reserves"]["amount"].as_str() {
            Some(r) if a["reserves"]["source"] == "bip127" => out.push_str(&format!(
                "  reserves:    {r} {sym}  (BIP-127 proof over {} coin(s) at block {})\n",
                proof["coins"], proof["block_height"]
            )),
            Some(r) if proof["complete"] == false => out.push_str(&format!(
                "  reserves:    {r} {sym}  (reconciled holdings; the BIP-127 proof waits for \
                 the cold holders to sign {} of {} coin(s): {})\n",
                proof["offline_coins"],
                proof["coins"],
                proof["psbt"].as_str().unwrap_or("?")
            )),
            Some(r) => out.push_str(&format!(
                "  reserves:    {r} {sym}  (reconciled holdings, no proof of reserves: {})\n",
                a["reserves_note"].as_str().unwrap_or("")
            )),
            None => out.push_str(&format!(
                "  reserves:    none stated: {}\n",
                a["reserves_note"].as_str().unwrap_or("")
            )),
        }
        match (a["status"].as_str(), a["ratio"].as_str()) {
            (Some("shortfall"), ratio) => out.push_str(&format!(
                "  SHORTFALL:   reserves are {} {sym} below liabilities (ratio {})\n",
                a["shortfall"]["amount"].as_str().unwrap_or("?"),
                ratio.unwrap_or("-"),
            )),
            (Some("covered"), Some(ratio)) => out.push_str(&format!(
                "  ratio:       {ratio}: reserves cover liabilities\n"
            )),
            (Some("covered"), None) => {
                out.push_str("  ratio:       no liabilities\n");
            }
            _ => {}
        }
    }
    out
}

// ---- serving proofs later ---------------------------------------------------------------

/// One epoch's trees, by asset symbol.
type Trees = Arc<BTreeMap<String, LiabilityTree>>;

/// Reads published epochs and serves customers' proofs, rebuilding trees from the
/// balances files (see the module documentation). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SolvencyStore {
    data: PathBuf,
    cache: Arc<Mutex<Vec<(u64, Trees)>>>,
}

impl SolvencyStore {
    pub fn new(data: &Path) -> SolvencyStore {
        SolvencyStore {
            data: data.to_path_buf(),
            cache: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The published epochs, ascending.
    pub fn epochs(&self) -> Result<Vec<u64>> {
        published_epochs(&self.data)
    }

    /// Epoch `n`'s report, or the newest when `None`; `Ok(None)` when there is none.
    pub fn report(&self, n: Option<u64>) -> Result<Option<(u64, Value)>> {
        let n = match n {
            Some(n) => n,
            None => match self.epochs()?.last() {
                Some(&n) => n,
                None => return Ok(None),
            },
        };
        let path = epoch_dir(&self.data, n).join(REPORT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let v: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Ok(Some((n, with_attached(&self.data, n, v))))
    }

    /// The trees of epoch `n`, from the cache or rebuilt and checked against `report`.
    fn trees(&self, n: u64, report: &Value) -> Result<Trees> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = cache.iter().position(|(e, _)| *e == n) {
            let hit = cache.remove(pos);
            let trees = Arc::clone(&hit.1);
            cache.push(hit);
            return Ok(trees);
        }
        // Rebuilt under the lock: one rebuild at a time, however many requests wait.
        let secret = load_secret(&self.data)?;
        let mut trees = BTreeMap::new();
        for a in report["assets"].as_array().into_iter().flatten() {
            let symbol = a["asset"]
                .as_str()
                .ok_or_else(|| anyhow!("epoch {n}: an asset without a name"))?;
            let por: Report = serde_json::from_value(a["por"].clone())
                .with_context(|| format!("epoch {n}, {symbol}: the por/v1 report"))?;
            let accounts = read_balances(&epoch_dir(&self.data, n).join(balances_file(symbol)))?;
            let tree = build_tree(&secret, n, symbol, &por.epoch, por.depth, &accounts)?;
            if tree.root() != por.root {
                bail!(
                    "epoch {n}, {symbol}: the stored balances do not give the published root \
                     (the balances file or the secret changed)"
                );
            }
            trees.insert(symbol.to_owned(), tree);
        }
        let trees = Arc::new(trees);
        cache.push((n, Arc::clone(&trees)));
        while cache.len() > CACHED_EPOCHS {
            cache.remove(0);
        }
        Ok(trees)
    }

    /// Customer `user`'s proofs in epoch `n` (the newest when `None`): `Ok(None)` when
    /// there is no such epoch. A customer created after the cut has no proofs.
    pub fn proofs(&self, user: u64, n: Option<u64>) -> Result<Option<Value>> {
        let Some((n, report)) = self.report(n)? else {
            return Ok(None);
        };
        let trees = self.trees(n, &report)?;
        let mut proofs = Vec::new();
        let mut login = None;
        for (symbol, tree) in trees.iter() {
            if let Some(p) = tree.proof(user) {
                login.get_or_insert_with(|| p.login.clone());
                proofs.push(json!({"asset": symbol, "proof": p}));
            }
        }
        Ok(Some(json!({
            "format": PROOF_FORMAT,
            "epoch": n,
            "record_seq": report["record"]["seq"],
            "account_id": user,
            "login": login,
            "proofs": proofs,
        })))
    }

    /// A short listing of every published epoch, oldest first.
    pub fn listing(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for n in self.epochs()? {
            if let Some((_, r)) = self.report(Some(n))? {
                out.push(epoch_listing(n, &r));
            }
        }
        Ok(out)
    }
}

/// One line of the epoch list: number, record seq, time, per asset its totals.
pub fn epoch_listing(n: u64, report: &Value) -> Value {
    let assets: Vec<Value> = report["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            json!({
                "asset": a["asset"],
                "ledger_seq": a["ledger_seq"],
                "block_height": a["block_height"],
                "liabilities": a["liabilities"]["amount"],
                "reserves": a["reserves"]["amount"],
                "status": a["status"],
            })
        })
        .collect();
    json!({
        "epoch": n,
        "record_seq": report["record"]["seq"],
        "created_ms": report["created_ms"],
        "assets": assets,
    })
}

impl kura_api::backend::Solvency for SolvencyStore {
    fn report(&self, epoch: Option<u64>) -> Result<Option<Value>, String> {
        SolvencyStore::report(self, epoch)
            .map(|r| r.map(|(_, v)| v))
            .map_err(|e| format!("{e:#}"))
    }

    fn epochs(&self) -> Result<Vec<Value>, String> {
        self.listing().map_err(|e| format!("{e:#}"))
    }

    fn proofs(&self, user: UserId, epoch: Option<u64>) -> Result<Option<Value>, String> {
        SolvencyStore::proofs(self, u64::from(user.0), epoch).map_err(|e| format!("{e:#}"))
    }
}

// ---- verifying ------------------------------------------------------------------------------

/// The outcome of checking one asset's proof against a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub asset: Option<String>,
    pub account_id: u64,
    pub login: String,
    pub balance: u64,
    pub liabilities: u64,
    /// `Some(reserves)` when the report states them.
    pub reserves: Option<u64>,
    /// Whether the published total exceeds the stated reserves.
    pub short: bool,
    /// The message a proof of reserves for this tree commits to.
    pub message: String,
}

/// The por/v1 proofs in a proof file: a `kura-solvency-proof/v1` bundle or a single
/// por/v1 proof. `(asset, proof)`.
pub fn proofs_in(v: &Value) -> Result<Vec<(Option<String>, InclusionProof)>> {
    if v["format"] == PROOF_FORMAT {
        let mut out = Vec::new();
        for p in v["proofs"].as_array().into_iter().flatten() {
            let asset = p["asset"]
                .as_str()
                .ok_or_else(|| anyhow!("a proof without an asset"))?;
            let proof: InclusionProof = serde_json::from_value(p["proof"].clone())
                .with_context(|| format!("the {asset} proof"))?;
            out.push((Some(asset.to_owned()), proof));
        }
        Ok(out)
    } else {
        let proof: InclusionProof =
            serde_json::from_value(v.clone()).context("not a por/v1 proof or a proof bundle")?;
        Ok(vec![(None, proof)])
    }
}

/// The por/v1 reports in a report file: a `kura-solvency/v1` report or a single por/v1
/// report. `(asset, report)`.
pub fn reports_in(v: &Value) -> Result<Vec<(Option<String>, Report)>> {
    if v["format"] == REPORT_FORMAT {
        let mut out = Vec::new();
        for a in v["assets"].as_array().into_iter().flatten() {
            let asset = a["asset"]
                .as_str()
                .ok_or_else(|| anyhow!("an asset without a name"))?;
            let report: Report = serde_json::from_value(a["por"].clone())
                .with_context(|| format!("the {asset} por/v1 report"))?;
            out.push((Some(asset.to_owned()), report));
        }
        Ok(out)
    } else {
        let report: Report = serde_json::from_value(v.clone())
            .context("not a por/v1 report or a kura solvency report")?;
        Ok(vec![(None, report)])
    }
}

/// Checks every proof of `proof_file` (only `asset` when given) against the matching
/// report of `report_file`. Fails on the first proof that does not lead to its published
/// root; a total above the stated reserves is reported in [`Checked::short`].
pub fn verify_files(
    proof_file: &Value,
    report_file: &Value,
    asset: Option<&str>,
) -> Result<Vec<Checked>> {
    if proof_file["format"] == PROOF_FORMAT
        && report_file["format"] == REPORT_FORMAT
        && proof_file["epoch"] != report_file["epoch"]
    {
        bail!(
            "the proofs are for epoch {} but the report is epoch {}",
            proof_file["epoch"],
            report_file["epoch"]
        );
    }
    let reports = reports_in(report_file)?;
    let mut out = Vec::new();
    for (name, proof) in proofs_in(proof_file)? {
        if asset.is_some_and(|a| name.as_deref().is_some_and(|n| n != a)) {
            continue;
        }
        let report = match (&name, reports.len()) {
            (_, 1) if reports[0].0.is_none() || reports[0].0 == name => &reports[0].1,
            (Some(n), _) => {
                &reports
                    .iter()
                    .find(|(r, _)| r.as_deref() == Some(n))
                    .ok_or_else(|| anyhow!("the report has no {n} tree"))?
                    .1
            }
            (None, _) => match asset {
                Some(a) => {
                    &reports
                        .iter()
                        .find(|(r, _)| r.as_deref() == Some(a))
                        .ok_or_else(|| anyhow!("the report has no {a} tree"))?
                        .1
                }
                None => bail!("the report has several assets: name one with --asset"),
            },
        };
        por::verify(&proof, &report.epoch_id(), report.depth, &report.root).map_err(|e| {
            anyhow!(
                "{}the proof of account {} does not lead to the published root: {e}",
                name.as_deref()
                    .map(|n| format!("{n}: "))
                    .unwrap_or_default(),
                proof.account_id
            )
        })?;
        out.push(Checked {
            asset: name.clone(),
            account_id: proof.account_id,
            login: proof.login.clone(),
            balance: proof.balance,
            liabilities: report.root.sum,
            reserves: report.reserves_sat,
            short: report.reserves_sat.is_some_and(|r| report.root.sum > r),
            message: report.reserves_message(),
        });
    }
    if out.is_empty() {
        bail!(
            "no proof to check{}",
            asset.map(|a| format!(" for {a}")).unwrap_or_default()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_ratios_read_plainly() {
        assert_eq!(amount_text(150_000_000, 8), "1.50000000");
        assert_eq!(amount_text(7, 0), "7");
        assert_eq!(ratio_text(105, 100).as_deref(), Some("1.0500"));
        assert_eq!(ratio_text(2, 3).as_deref(), Some("0.6666"));
        assert_eq!(ratio_text(5, 0), None);
    }

    #[test]
    fn secrets_differ_per_epoch_and_asset() {
        let s = [7u8; 32];
        let a = tree_secrets(&s, 1, "BTC");
        assert_ne!(a, tree_secrets(&s, 2, "BTC"));
        assert_ne!(a, tree_secrets(&s, 1, "JPY"));
        assert_ne!(a.0, a.1);
        assert_eq!(a, tree_secrets(&s, 1, "BTC"));
    }

    #[test]
    fn balances_files_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("b.tsv");
        let accounts = vec![
            Account {
                id: 0,
                login: "alice".into(),
                balance: 5,
            },
            Account {
                id: 3,
                login: "#3".into(),
                balance: 0,
            },
        ];
        write_balances(&path, &accounts).expect("write");
        assert_eq!(read_balances(&path).expect("read"), accounts);
        std::fs::write(&path, "1\tx\tbob\n").expect("write");
        assert!(read_balances(&path).is_err());
    }

    fn tree_of(balances: &[(u64, &str, u64)], reserves: Option<u64>) -> (LiabilityTree, Report) {
        let epoch = Epoch {
            ledger_seq: 10,
            block_height: 5,
            block_hash: [3; 32],
        };
        let tree = LiabilityTree::build(&epoch, &[1; 32], &[2; 32], 3, balances).expect("tree");
        let report = tree.report(&epoch, reserves);
        (tree, report)
    }

    #[test]
    fn a_proof_fails_against_a_root_that_omits_lowers_or_duplicates_a_balance() {
        let honest = [(1, "alice", 500), (2, "bob", 300), (3, "carol", 200)];
        let (tree, report) = tree_of(&honest, Some(1_000));
        let proof = serde_json::to_value(tree.proof(2).expect("bob")).expect("json");
        let report_json = serde_json::to_value(report).expect("json");
        let ok = verify_files(&proof, &report_json, None).expect("verifies");
        assert_eq!(ok[0].balance, 300);
        assert!(!ok[0].short);
        for cheat in [
            vec![(1, "alice", 500), (3, "carol", 200)],
            vec![(1, "alice", 500), (2, "bob", 299), (3, "carol", 200)],
            vec![
                (1, "alice", 500),
                (2, "bob", 300),
                (3, "carol", 200),
                (4, "bob", 300),
            ],
        ] {
            let (_, bad) = tree_of(&cheat, Some(1_000));
            let bad = serde_json::to_value(bad).expect("json");
            assert!(verify_files(&proof, &bad, None).is_err(), "{cheat:?}");
        }
        // A root short of reserves: the proof leads to it, and the shortfall is reported.
        let (tree, short) = tree_of(&honest, Some(900));
        let proof = serde_json::to_value(tree.proof(1).expect("alice")).expect("json");
        let short = serde_json::to_value(short).expect("json");
        let checked = verify_files(&proof, &short, None).expect("path verifies");
        assert!(checked[0].short);
    }
}

// ---- epochs on a schedule (`kura serve`) ----------------------------------------------

/// When a running node takes epochs by itself (`solvency_every_blocks`,
/// `solvency_every_minutes`, `solvency_depth`). Off by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Take an epoch once the newest reconciled block is this many blocks past the last
    /// epoch's (0: not by blocks).
    pub every_blocks: u32,
    /// ... or once this long has passed since the last epoch and a newer block has been
    /// reconciled (None: not by time).
    pub every: Option<std::time::Duration>,
    /// Height of the trees.
    pub depth: u32,
    /// How often the condition is looked at.
    pub poll: std::time::Duration,
    /// No first epoch (when none was published yet) before this long after start.
    pub first_after: std::time::Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            every_blocks: 0,
            every: None,
            depth: DEFAULT_DEPTH,
            poll: std::time::Duration::from_secs(1),
            first_after: std::time::Duration::ZERO,
        }
    }
}

impl Schedule {
    pub fn enabled(&self) -> bool {
        self.every_blocks > 0 || self.every.is_some()
    }
}

/// What the scheduler remembers of the last epoch.
#[derive(Clone, Copy, Debug, Default)]
struct Last {
    height: u32,
    seq: u64,
    created_ms: u64,
}

fn last_of(report: &Value) -> Last {
    let assets = report["assets"].as_array();
    let max = |k: &str| {
        assets
            .into_iter()
            .flatten()
            .filter_map(|a| a[k].as_u64())
            .max()
            .unwrap_or(0)
    };
    Last {
        height: u32::try_from(max("block_height")).unwrap_or(0),
        seq: max("ledger_seq"),
        created_ms: report["created_ms"].as_u64().unwrap_or(0),
    }
}

/// The thread that takes epochs on a [`Schedule`] inside `kura serve`; the roots are
/// journaled straight through the node (origin: the exchange itself).
#[derive(Debug)]
pub struct Scheduler(crate::ticker::Ticker);

impl Scheduler {
    /// Starts the thread, or nothing when the schedule is off. `synced` tells whether the
    /// chain follower has caught up with the chain's tip: no epoch is taken while it
    /// catches up (a node starting far behind would otherwise take one every few blocks
    /// of history).
    pub fn start(
        data: &Path,
        schedule: Schedule,
        handle: crate::node::NodeHandle,
        synced: Box<dyn Fn() -> bool + Send>,
        coins: Option<Box<dyn Fn() -> Result<Value> + Send>>,
    ) -> Result<Option<Scheduler>> {
        if !schedule.enabled() {
            return Ok(None);
        }
        let mut state = SchedulerState::new(data, schedule, handle, synced, coins);
        let ticker =
            crate::ticker::Ticker::start("kura-solvency", schedule.poll, move || state.step())?;
        Ok(Some(Scheduler(ticker)))
    }

    /// Stops the thread (an epoch being taken is finished first).
    pub fn stop(self) {
        self.0.stop();
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the scheduler remembers between its steps.
struct SchedulerState {
    data: PathBuf,
    schedule: Schedule,
    handle: crate::node::NodeHandle,
    synced: Box<dyn Fn() -> bool + Send>,
    coins: Option<Box<dyn Fn() -> Result<Value> + Send>>,
    last: Option<Last>,
    retry_at: u64,
    started: std::time::Instant,
}

impl SchedulerState {
    fn new(
        data: &Path,
        schedule: Schedule,
        handle: crate::node::NodeHandle,
        synced: Box<dyn Fn() -> bool + Send>,
        coins: Option<Box<dyn Fn() -> Result<Value> + Send>>,
    ) -> SchedulerState {
        let last = match SolvencyStore::new(data).report(None) {
            Ok(r) => r.map(|(_, v)| last_of(&v)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "solvency: cannot read the last report");
                None
            }
        };
        SchedulerState {
            data: data.to_path_buf(),
            schedule,
            handle,
            synced,
            coins,
            last,
            retry_at: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Takes an epoch if one is due.
    fn step(&mut self) {
        let schedule = self.schedule;
        let (handle, data, last) = (&self.handle, self.data.as_path(), self.last);
        if !(self.synced)() || (last.is_none() && self.started.elapsed() < schedule.first_after) {
            return;
        }
        let newest = handle.query_wait(|e| {
            (0..e.asset_count())
                .filter_map(|i| u16::try_from(i).ok())
                .filter_map(|a| e.last_reconciliation(AssetId(a)))
                .max_by_key(|r| r.seq)
                .map(|r| (r.seq, r.height))
        });
        let Ok(Some((seq, height))) = newest else {
            return;
        };
        let now = wall_ms();
        let due = match last {
            None => true,
            Some(l) => {
                (schedule.every_blocks > 0
                    && height >= l.height.saturating_add(schedule.every_blocks))
                    || schedule.every.is_some_and(|every| {
                        seq != l.seq
                            && now.saturating_sub(l.created_ms)
                                >= u64::try_from(every.as_millis()).unwrap_or(u64::MAX)
                    })
            }
        };
        if !due || now < self.retry_at {
            return;
        }
        let record = |epoch: u64, roots: Vec<SolvencyRoot>| -> Result<Recorded> {
            let ack = handle
                .submit_wait(crate::node::internal(
                    kura_engine::Command::RecordSolvency { epoch, roots },
                ))
                .map_err(|e| anyhow!("{e}"))?;
            ack.result
                .map_err(|r| anyhow!("refused by the exchange: {r}"))?;
            Ok(Recorded {
                seq: ack.seq,
                timestamp_ms: ack.timestamp_ms,
            })
        };
        let options = ProveOptions {
            depth: schedule.depth,
        };
        let coins = self.coins.as_deref().map(|f| f as CoinSource<'_>);
        match take_epoch(data, options, now, coins, record, |msg| {
            tracing::debug!("solvency: {msg}")
        }) {
            Ok(out) => {
                tracing::info!(
                    epoch = out.epoch,
                    record_seq = out.report["record"]["seq"].as_u64(),
                    "solvency epoch published"
                );
                self.last = Some(last_of(&out.report));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "solvency: taking an epoch failed");
                self.retry_at = now + 60_000;
            }
        }
    }
}
