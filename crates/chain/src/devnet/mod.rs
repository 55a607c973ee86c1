//! The built-in devnet: a regtest chain in process, starting from the real regtest genesis
//! block, with real transactions and blocks that Bitcoin Core in regtest accepts.
//!
//! A [`Devnet`] is a cheap handle (clone it freely) on one chain kept in a directory:
//!
//! * `blocks.dat`: the append-only block file (format in the `store` module), replayed and fully
//!   re-validated at [`Devnet::open`]; the mempool is not kept across restarts;
//! * `faucet.key`: the faucet's seed (mode 0600);
//! * `lock`: held while the devnet is open, so a second process cannot write the chain;
//! * `.cookie` and `rpc.json`: written by [`crate::DevnetRpcServer`] while it serves.
//!
//! Blocks mined without an explicit address pay the faucet, which [`Devnet::send`] spends.

pub(crate) mod chain;
pub mod consensus;
pub(crate) mod mempool;
mod store;
mod wallet;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bitcoin::block::{Header, Version};
use bitcoin::blockdata::script::{Builder, PushBytesBuf};
use bitcoin::hash_types::TxMerkleNode;
use bitcoin::{
    absolute, transaction, Address, Amount, Block, BlockHash, OutPoint, Script, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use crate::{BlockRef, ChainError, ChainSource, TxStatus};
use chain::Chain;
use consensus::{Coin, COINBASE_MATURITY, MAX_BLOCK_WEIGHT};
use mempool::Mempool;
use store::{BlockFile, Record};
pub(crate) use wallet::create_private;
use wallet::Faucet;

/// An error from the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Reading or writing the devnet directory failed.
    #[error("devnet i/o: {0}")]
    Io(String),
    /// The devnet directory holds something that is not a valid chain.
    #[error("devnet data damaged: {0}")]
    Corrupt(String),
    /// Another process has this devnet directory open.
    #[error("devnet directory in use: {0}")]
    Locked(String),
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The faucet has too little mature, unspent value.
    #[error(
        "faucet has insufficient mature funds: needs {needed}, has {available} (mine more blocks)"
    )]
    InsufficientFunds {
        /// Amount plus fee.
        needed: Amount,
        /// What the faucet can spend now.
        available: Amount,
    },
    /// A block failed validation (Core's reject reason).
    #[error("block rejected: {0}")]
    BlockRejected(String),
    /// A transaction was refused.
    #[error("{0}")]
    TxRejected(TxReject),
}

/// A refused transaction, with Bitcoin Core's JSON-RPC error code and reject reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transaction rejected ({code}): {reason}")]
pub struct TxReject {
    /// -25 (inputs missing or spent), -26 (rejected by consensus or policy), -27 (already in
    /// the chain).
    pub code: i32,
    /// Core's reject reason, e.g. `bad-txns-inputs-missingorspent`,
    /// `insufficient fee, rejecting replacement …`, `mandatory-script-verify-flag-failed (…)`.
    pub reason: String,
}

impl TxReject {
    pub(crate) fn rejected(reason: impl Into<String>) -> TxReject {
        TxReject {
            code: -26,
            reason: reason.into(),
        }
    }
    pub(crate) fn missing_inputs() -> TxReject {
        TxReject {
            code: -25,
            reason: "bad-txns-inputs-missingorspent".into(),
        }
    }
    pub(crate) fn already_in_chain() -> TxReject {
        TxReject {
            code: -27,
            reason: "Transaction outputs already in utxo set".into(),
        }
    }
}

/// How to open a devnet.
#[derive(Clone, Debug, Default)]
pub struct DevnetOptions {
    /// Mine to the faucet until the chain is at least this high after loading (101 makes
    /// the first coinbase spendable at once). 0: mine nothing.
    pub premine: u32,
}

/// What a reorg or an `invalidateblock` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReorgReport {
    /// Blocks taken off the active chain, tip first.
    pub disconnected: Vec<BlockHash>,
    /// Their non-coinbase transactions now back in the mempool.
    pub returned_to_mempool: Vec<Txid>,
    /// Transactions (from those blocks or the mempool) no longer valid, dropped.
    pub dropped: Vec<Txid>,
    /// The replacement branch, lowest first.
    pub new_blocks: Vec<BlockHash>,
}

/// The devnet's mutable state, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) chain: Chain,
    pub(crate) mempool: Mempool,
    file: BlockFile,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    faucet: Faucet,
    dir: PathBuf,
    _lock: std::fs::File,
}

/// A handle on a running devnet (see the module documentation).
#[derive(Clone, Debug)]
pub struct Devnet {
    inner: Arc<Inner>,
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Devnet {
    /// Opens the devnet kept in `dir` (created if missing), with default options.
    pub fn open(dir: &Path) -> Result<Devnet, DevnetError> {
        Devnet::open_with(dir, DevnetOptions::default())
    }

    /// Opens the devnet kept in `dir` (created if missing): takes the directory's lock,
    /// loads or creates the faucet key, replays and re-validates every block in the block
    /// file, then mines up to `options.premine`.
    pub fn open_with(dir: &Path, options: DevnetOptions) -> Result<Devnet, DevnetError> {
        let io = |e: std::io::Error| DevnetError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .map_err(io)?;
        lock.try_lock()
            .map_err(|e| DevnetError::Locked(format!("{}: {e}", dir.display())))?;
        let faucet = Faucet::load_or_create(&dir.join("faucet.key"))?;
        let (file, records) = BlockFile::open(&dir.join("blocks.dat"))?;
        let mut chain = Chain::new();
        for (i, rec) in records.into_iter().enumerate() {
            match rec {
                Record::Block(block) => {
                    // A block valid when it was mined stays valid: no clock check on replay.
                    chain.connect(block, u64::MAX / 2).map_err(|e| {
                        DevnetError::Corrupt(format!("block file record {i} is invalid: {e}"))
                    })?;
                }
                Record::Disconnect(hash) => {
                    if chain.tip_hash() != hash || chain.disconnect_tip().is_none() {
                        return Err(DevnetError::Corrupt(format!(
                            "block file record {i} disconnects {hash}, which is not the tip"
                        )));
                    }
                }
            }
        }
        let devnet = Devnet {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    chain,
                    mempool: Mempool::default(),
                    file,
                }),
                faucet,
                dir: dir.to_path_buf(),
                _lock: lock,
            }),
        };
        let height = devnet.tip().height;
        if height < options.premine {
            devnet.mine(options.premine - height)?;
        }
        Ok(devnet)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directory the devnet is kept in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The faucet's address (P2WPKH, regtest).
    pub fn faucet_address(&self) -> Address {
        self.inner.faucet.address.clone()
    }

    /// The active chain's tip.
    pub fn tip(&self) -> BlockRef {
        let st = self.state();
        BlockRef {
            height: st.chain.height(),
            hash: st.chain.tip_hash(),
        }
    }

    /// Mines `n` blocks paying the faucet, with the mempool's transactions. Returns their
    /// hashes, lowest first.
    pub fn mine(&self, n: u32) -> Result<Vec<BlockHash>, DevnetError> {
        let script = self.inner.faucet.script.clone();
        self.mine_to(n, &script)
    }

    /// Mines `n` blocks paying `script`, with the mempool's transactions.
    pub fn mine_to(&self, n: u32, script: &Script) -> Result<Vec<BlockHash>, DevnetError> {
        let mut st = self.state();
        (0..n).map(|_| mine_one(&mut st, script, true)).collect()
    }

    /// Builds (but does not connect) a valid next block: a coinbase paying `script`, then
    /// `txs` as given (not checked), then, with `include_mempool`, the mempool's
    /// transactions. The proof of work is solved. For tests and drills that submit blocks,
    /// tampered or not, with [`Devnet::submit_block`].
    pub fn block_template(
        &self,
        script: &Script,
        txs: Vec<Transaction>,
        include_mempool: bool,
    ) -> Result<Block, DevnetError> {
        let st = self.state();
        let mut all = txs;
        if include_mempool {
            all.extend(select_mempool(&st));
        }
        assemble(&st, script, all)
    }

    /// Submits a block that extends the tip. Returns Core's reject reason on failure
    /// (`duplicate`, `inconclusive` for a block not on the tip, `high-hash`, …).
    pub fn submit_block(&self, block: Block) -> Result<(), String> {
        let mut st = self.state();
        let hash = block.block_hash();
        if st
            .chain
            .lookup_block(&hash)
            .is_some_and(|(_, _, active)| active)
        {
            return Err("duplicate".into());
        }
        if st.chain.is_invalid(&hash) {
            return Err("duplicate-invalid".into());
        }
        if block.header.prev_blockhash != st.chain.tip_hash() {
            return Err(
                if st
                    .chain
                    .lookup_block(&block.header.prev_blockhash)
                    .is_some()
                {
                    "inconclusive".into()
                } else {
                    "prev-blk-not-found".into()
                },
            );
        }
        connect_block(&mut st, block, now_secs()).map_err(|e| match e {
            DevnetError::BlockRejected(r) => r,
            other => other.to_string(),
        })
    }

    /// Pays `amount` to `to` from the faucet's mature outputs (change back to the faucet,
    /// 2 sat/vB) and submits the transaction to the mempool.
    pub fn send(&self, to: &Address, amount: Amount) -> Result<Txid, DevnetError> {
        let mut st = self.state();
        let height = st.chain.height();
        let coins = faucet_coins(&st, &self.inner.faucet.script);
        let tx = self
            .inner
            .faucet
            .build_payment(&coins, &to.script_pubkey(), amount, height)?;
        let st = &mut *st;
        st.mempool
            .accept(&st.chain, &tx, now_secs(), true)
            .map(|a| a.txid)
            .map_err(DevnetError::TxRejected)
    }

    /// What the faucet can spend now: mature, confirmed, not spent in the mempool.
    pub fn faucet_balance(&self) -> Amount {
        let st = self.state();
        faucet_coins(&st, &self.inner.faucet.script)
            .iter()
            .map(|(_, c)| c.output.value)
            .sum()
    }

    /// Submits a transaction to the mempool. A transaction already there (same wtxid) is
    /// accepted again and its txid returned, as Core's `sendrawtransaction` does.
    pub fn submit_tx(&self, tx: &Transaction) -> Result<Txid, TxReject> {
        let mut st = self.state();
        let st = &mut *st;
        let txid = tx.compute_txid();
        if st
            .mempool
            .get(&txid)
            .is_some_and(|e| e.tx.compute_wtxid() == tx.compute_wtxid())
        {
            return Ok(txid);
        }
        st.mempool
            .accept(&st.chain, tx, now_secs(), true)
            .map(|a| a.txid)
    }

    /// Checks whether the mempool would accept `tx`, without adding it. Returns its fee and
    /// virtual size.
    pub fn test_accept(&self, tx: &Transaction) -> Result<(Amount, u64), TxReject> {
        let mut st = self.state();
        let st = &mut *st;
        st.mempool
            .accept(&st.chain, tx, now_secs(), false)
            .map(|a| (a.fee, a.vsize))
    }

    /// Reorganises the chain: disconnects the top `depth` blocks, returns their
    /// non-coinbase transactions to the mempool where still valid, and mines a replacement
    /// branch of `depth + 1` blocks that leaves the mempool alone (so the disconnected
    /// transactions stay unconfirmed). See [`Devnet::reorg_with`].
    pub fn reorg(&self, depth: u32) -> Result<ReorgReport, DevnetError> {
        self.reorg_with(depth, depth.saturating_add(1), false)
    }

    /// Disconnects the top `depth` blocks (1 ≤ depth ≤ height), puts their transactions
    /// back in the mempool where still valid, then mines `new_blocks` blocks to the faucet,
    /// with the mempool's transactions if `include_mempool`. A replacement branch longer
    /// than `depth` is what a real reorg looks like to a node.
    pub fn reorg_with(
        &self,
        depth: u32,
        new_blocks: u32,
        include_mempool: bool,
    ) -> Result<ReorgReport, DevnetError> {
        let mut st = self.state();
        let height = st.chain.height();
        if depth == 0 || depth > height {
            return Err(DevnetError::Invalid(format!(
                "reorg depth must be between 1 and the chain height ({height}), not {depth}"
            )));
        }
        let mut report = disconnect_to(&mut st, height - depth)?;
        let script = self.inner.faucet.script.clone();
        for _ in 0..new_blocks {
            report
                .new_blocks
                .push(mine_one(&mut st, &script, include_mempool)?);
        }
        Ok(report)
    }

    /// Core's `invalidateblock`: marks the block invalid and, if it is on the active chain,
    /// disconnects it and every block above it (their transactions return to the mempool
    /// where still valid). Mining then continues from its parent.
    pub fn invalidate_block(&self, hash: &BlockHash) -> Result<ReorgReport, DevnetError> {
        let mut st = self.state();
        let Some((_, height, active)) = st.chain.lookup_block(hash) else {
            return Err(DevnetError::Invalid("Block not found".into()));
        };
        if height == 0 {
            return Err(DevnetError::Invalid(
                "cannot invalidate the genesis block".into(),
            ));
        }
        st.chain.mark_invalid(*hash);
        if !active {
            return Ok(ReorgReport::default());
        }
        disconnect_to(&mut st, height - 1)
    }

    /// The active chain's block hash at `height`.
    pub fn block_hash(&self, height: u32) -> Option<BlockHash> {
        self.state().chain.hash_at(height)
    }

    /// A block by hash (active or stale).
    pub fn block(&self, hash: &BlockHash) -> Option<Block> {
        self.state()
            .chain
            .lookup_block(hash)
            .map(|(b, _, _)| (*b).clone())
    }

    /// The mempool's txids, parents before children.
    pub fn mempool_txids(&self) -> Vec<Txid> {
        self.state().mempool.txids()
    }

    /// A transaction in the mempool or on the active chain.
    pub fn tx(&self, txid: &Txid) -> Option<(Transaction, TxStatus)> {
        let st = self.state();
        tx_lookup(&st, txid)
    }

    /// Unspent confirmed outputs paying `script`: (outpoint, output, height, coinbase).
    pub fn utxos_for(&self, script: &Script) -> Vec<(OutPoint, TxOut, u32, bool)> {
        let st = self.state();
        let mut v: Vec<_> = st
            .chain
            .utxos
            .iter()
            .filter(|(_, c)| c.output.script_pubkey.as_script() == script)
            .map(|(op, c)| (*op, c.output.clone(), c.height, c.coinbase))
            .collect();
        v.sort_by_key(|(op, _, h, _)| (*h, *op));
        v
    }

    /// The whole UTXO set, sorted by outpoint (for tests and audits).
    pub fn utxo_set(&self) -> Vec<(OutPoint, TxOut)> {
        let st = self.state();
        let mut v: Vec<_> = st
            .chain
            .utxos
            .iter()
            .map(|(op, c)| (*op, c.output.clone()))
            .collect();
        v.sort_by_key(|(op, _)| *op);
        v
    }

    /// Balance of `script`: confirmed (the UTXO set), and the unconfirmed change the
    /// mempool makes to it (outputs received minus confirmed outputs spent), in satoshis.
    pub fn balance(&self, script: &Script) -> (Amount, i64) {
        let st = self.state();
        let confirmed: Amount = st
            .chain
            .utxos
            .values()
            .filter(|c| c.output.script_pubkey.as_script() == script)
            .map(|c| c.output.value)
            .sum();
        let mut delta: i64 = 0;
        for txid in st.mempool.txids() {
            let Some(e) = st.mempool.get(&txid) else {
                continue;
            };
            for out in &e.tx.output {
                if out.script_pubkey.as_script() == script {
                    delta = delta.saturating_add(out.value.to_sat() as i64);
                }
            }
            for input in &e.tx.input {
                let prev = st.mempool.output(&input.previous_output).or_else(|| {
                    st.chain
                        .utxos
                        .get(&input.previous_output)
                        .map(|c| &c.output)
                });
                if let Some(prev) = prev {
                    if prev.script_pubkey.as_script() == script {
                        delta = delta.saturating_sub(prev.value.to_sat() as i64);
                    }
                }
            }
        }
        (confirmed, delta)
    }

    /// Mines one block every `interval` on a background thread until the handle is
    /// dropped or stopped.
    pub fn start_miner(&self, interval: Duration) -> MinerHandle {
        let (tx, rx) = mpsc::channel::<()>();
        let devnet = self.clone();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                if let Err(e) = devnet.mine(1) {
                    tracing::error!(error = %e, "devnet interval miner failed");
                }
            }
        });
        MinerHandle {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

/// Stops the interval miner when dropped.
#[derive(Debug)]
pub struct MinerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MinerHandle {
    /// Stops the miner and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MinerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn tx_lookup(st: &State, txid: &Txid) -> Option<(Transaction, TxStatus)> {
    if let Some(e) = st.mempool.get(txid) {
        return Some(((*e.tx).clone(), TxStatus::Mempool));
    }
    let (tx, height) = st.chain.confirmed_tx(txid)?;
    let hash = st.chain.hash_at(height)?;
    Some((tx.clone(), TxStatus::Confirmed(BlockRef { height, hash })))
}

fn faucet_coins(st: &State, script: &ScriptBuf) -> Vec<(OutPoint, Coin)> {
    let next = st.chain.height() + 1;
    let mut v: Vec<(OutPoint, Coin)> = st
        .chain
        .utxos
        .iter()
        .filter(|(op, c)| {
            c.output.script_pubkey == *script
                && (!c.coinbase || next.saturating_sub(c.height) >= COINBASE_MATURITY)
                && st.mempool.spender(op).is_none()
        })
        .map(|(op, c)| (*op, c.clone()))
        .collect();
    v.sort_by_key(|(op, c)| (c.height, *op));
    v
}

/// Connects a block, updates the mempool and appends the block to the file (rolling the
/// connection back if the write fails).
fn connect_block(st: &mut State, block: Block, now: u64) -> Result<(), DevnetError> {
    let connected = st
        .chain
        .connect(block, now)
        .map_err(DevnetError::BlockRejected)?;
    if let Err(e) = st.file.append(&Record::Block((*connected.block).clone())) {
        st.chain.disconnect_tip();
        return Err(e);
    }
    st.mempool.block_connected(&connected.block);
    Ok(())
}

/// Disconnects blocks until the tip is at `height`, then refills the mempool: first the
/// disconnected blocks' transactions (oldest block first), then what was in it before.
fn disconnect_to(st: &mut State, height: u32) -> Result<ReorgReport, DevnetError> {
    let mut report = ReorgReport::default();
    let old_mempool = st.mempool.drain();
    let mut blocks = Vec::new();
    while st.chain.height() > height {
        let hash = st.chain.tip_hash();
        st.file.append(&Record::Disconnect(hash))?;
        if let Some(b) = st.chain.disconnect_tip() {
            blocks.push(b);
        }
        report.disconnected.push(hash);
    }
    let now = now_secs();
    let mut returned = HashSet::new();
    for block in blocks.iter().rev() {
        for tx in block.txdata.iter().skip(1) {
            match st.mempool.accept(&st.chain, tx, now, true) {
                Ok(a) => {
                    returned.insert(a.txid);
                    report.returned_to_mempool.push(a.txid);
                }
                Err(_) => report.dropped.push(tx.compute_txid()),
            }
        }
    }
    for tx in old_mempool {
        if st.mempool.accept(&st.chain, &tx, now, true).is_err() {
            report.dropped.push(tx.compute_txid());
        }
    }
    Ok(report)
}

/// Assembles, mines and connects one block paying `script`.
fn mine_one(
    st: &mut State,
    script: &Script,
    include_mempool: bool,
) -> Result<BlockHash, DevnetError> {
    let txs = if include_mempool {
        select_mempool(st)
    } else {
        Vec::new()
    };
    let block = assemble(st, script, txs)?;
    let hash = block.block_hash();
    connect_block(st, block, now_secs())?;
    Ok(hash)
}

/// Mempool transactions for the next block, parents first, within the weight limit.
fn select_mempool(st: &State) -> Vec<Transaction> {
    let mut txs = Vec::new();
    let mut included: HashSet<Txid> = HashSet::new();
    // Room for the header and the coinbase.
    let mut weight: u64 = 8_000;
    for txid in st.mempool.txids() {
        let Some(e) = st.mempool.get(&txid) else {
            continue;
        };
        let w = e.tx.weight().to_wu();
        let parents_in = st
            .mempool
            .parents(&txid)
            .iter()
            .all(|p| included.contains(p));
        if !parents_in || weight + w > MAX_BLOCK_WEIGHT {
            continue;
        }
        weight += w;
        included.insert(txid);
        txs.push((*e.tx).clone());
    }
    txs
}

/// Builds the next block with `txs` after a coinbase paying `script` the subsidy plus the
/// fees (of the inputs it can find; unknown inputs count as paying nothing), with the
/// witness commitment when a transaction has witness data, the merkle root, a timestamp
/// after the median time past and a nonce meeting the target.
fn assemble(st: &State, script: &Script, txs: Vec<Transaction>) -> Result<Block, DevnetError> {
    let height = st.chain.height() + 1;
    let mut fees: u64 = 0;
    let mut created: std::collections::HashMap<OutPoint, u64> = Default::default();
    for tx in &txs {
        let value_in = tx
            .input
            .iter()
            .filter_map(|i| {
                created.get(&i.previous_output).copied().or_else(|| {
                    st.chain
                        .utxos
                        .get(&i.previous_output)
                        .map(|c| c.output.value.to_sat())
                })
            })
            .fold(0u64, u64::saturating_add);
        let value_out = tx
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .fold(0u64, u64::saturating_add);
        fees = fees.saturating_add(value_in.saturating_sub(value_out));
        let txid = tx.compute_txid();
        for (v, o) in tx.output.iter().enumerate() {
            created.insert(OutPoint::new(txid, v as u32), o.value.to_sat());
        }
    }
    let reward = consensus::subsidy(height)
        .checked_add(Amount::from_sat(fees))
        .unwrap_or(Amount::MAX_MONEY);
    let witness = txs
        .iter()
        .any(|t| t.input.iter().any(|i| !i.witness.is_empty()));
    let extra: [u8; 8] = rand::random();
    let mut tag = PushBytesBuf::new();
    tag.extend_from_slice(b"kura devnet")
        .map_err(|e| DevnetError::Invalid(e.to_string()))?;
    let script_sig = Builder::from(consensus::bip34_prefix(height))
        .push_slice(extra)
        .push_slice(&tag)
        .into_script();
    let mut coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: reward,
            script_pubkey: script.to_owned(),
        }],
    };
    if witness {
        coinbase.input[0].witness = Witness::from_slice(&[[0u8; 32]]);
    }
    let mut txdata = Vec::with_capacity(txs.len() + 1);
    txdata.push(coinbase);
    txdata.extend(txs);
    let time = u32::try_from(now_secs())
        .unwrap_or(u32::MAX)
        .max(st.chain.tip_mtp().saturating_add(1));
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: st.chain.tip_hash(),
            merkle_root: TxMerkleNode::from_raw_hash(bitcoin::hashes::Hash::all_zeros()),
            time,
            bits: bitcoin::CompactTarget::from_consensus(consensus::REGTEST_BITS),
            nonce: 0,
        },
        txdata,
    };
    if witness {
        let root = block
            .witness_root()
            .ok_or_else(|| DevnetError::Invalid("no witness root".into()))?;
        let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
        let mut spk = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        spk.extend_from_slice(commitment.as_ref());
        block.txdata[0].output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(spk),
        });
    }
    block.header.merkle_root = block
        .compute_merkle_root()
        .ok_or_else(|| DevnetError::Invalid("empty block".into()))?;
    consensus::solve(&mut block.header);
    Ok(block)
}

impl ChainSource for Devnet {
    fn tip(&self) -> Result<BlockRef, ChainError> {
        Ok(Devnet::tip(self))
    }
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        Ok(Devnet::block_hash(self, height))
    }
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        Ok(Devnet::block(self, hash))
    }
    fn mempool_txs(&self) -> Result<Vec<Transaction>, ChainError> {
        let st = self.state();
        Ok(st
            .mempool
            .txids()
            .iter()
            .filter_map(|t| st.mempool.get(t).map(|e| (*e.tx).clone()))
            .collect())
    }
    fn get_tx(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        Ok(self.tx(txid))
    }
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.submit_tx(tx).map_err(|r| ChainError::Rejected {
            code: r.code,
            message: r.reason,
        })
    }
}
