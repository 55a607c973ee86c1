//! Coin tracing: where did the coins of a transaction (or of one outpoint) go, hop by hop,
//! and where are they now?
//!
//! Bitcoin Core keeps no index from an output to the transaction that spends it, so the
//! trace reads the chain forward: from the block holding the starting transaction to the
//! tip, every transaction that spends a followed output becomes a hop and its outputs are
//! followed in turn. One pass finds every hop up to the depth limit, because a spending
//! transaction always comes after the one it spends (later in the same block, or in a
//! later block). The mempool is read last, parents first, for spends not yet confirmed.
//!
//! # Hops
//!
//! The starting transaction is hop 0. A transaction spending followed outputs is hop
//! `1 + the highest hop it spends from`, so every edge of the graph goes from a lower hop
//! to a higher one (a merge of coins that moved once and coins that moved twice is hop 3).
//! A spending transaction beyond the depth limit is not followed: the outputs it spends
//! are reported as `spent_beyond_depth`, with its txid, so the trace can be resumed from
//! there (`kura trace TXID`).
//!
//! With an outpoint as the start, hop 0 is the transaction that created it, and only that
//! output is followed (the others are `not_followed`).
//!
//! # Traced amounts
//!
//! Every output carries `value_sat` (what it holds) and `traced_sat` (how much of it
//! comes from the start). Hop 0's outputs are traced in full. A hop whose inputs are all
//! followed outputs passes every satoshi on: its outputs are traced in full and its fee is
//! traced fee. A hop that also spends coins from elsewhere ("mixed") passes on the share
//! of its inputs that was traced (the "haircut" rule): `traced_in × value_out / value_in`
//! is split over its outputs in proportion to their values (largest remainder, so the
//! split adds up to the satoshi), and the rest of `traced_in` is the traced fee. If the
//! value of an input from elsewhere cannot be found (Bitcoin Core without `txindex=1`),
//! the share is unknown: the hop's outputs are traced in full, an upper bound, and the hop
//! says `share_known: false`.
//!
//! So, when every share is known, the totals balance to the satoshi:
//! `start = fees + unspent + beyond_depth + unspendable` (`balanced: true`).
//!
//! # The JSON report (`trace.json`, format `kura-trace/1`)
//!
//! One object: `format`, `start` (the argument), `network`, `depth_limit`, `tip`
//! (`height`, `hash`: the chain the trace read), `totals` (`start_sat`, `fees_sat`,
//! `unspent_sat`, `unspent_unconfirmed_sat`, `beyond_depth_sat`, `unspendable_sat`,
//! `transactions`, `max_hop`, `shares_known`, `balanced`), `holdings` (where the coins
//! are now: unspent followed outputs grouped by address, most first: `address`, `owner`,
//! `traced_sat`, `value_sat`, `coins` with `outpoint`, `hop`, `height` (null:
//! unconfirmed), `value_sat`, `traced_sat`), `beyond_depth` (outputs whose spender was
//! not followed: `outpoint`, `hop`, `address`, `owner`, `value_sat`, `traced_sat`,
//! `spent_by`, `spent_height`) and `hops`, in chain order. Each hop has `hop`, `txid`,
//! `height` and `block_hash` (null: in the mempool), `value_in_sat` and `fee_sat` (null
//! when an input's value is unknown), `value_out_sat`, `traced_in_sat`,
//! `traced_fee_sat`, `mixed`, `share_known`, `inputs` (`outpoint` or null for a
//! coinbase, `value_sat`, `address`, `owner`, `traced_sat`, `from_hop`) and `outputs`
//! (`vout`, `value_sat`, `traced_sat`, `address` or null, `script_hex`, `owner`, and
//! `state`: `unspent`; `spent` with `spent_by`, `spent_height`, `spent_hop`;
//! `spent_beyond_depth` with `spent_by`, `spent_height`; `unspendable` (an OP_RETURN
//! output); `not_followed`).
//!
//! `owner` is null for a foreign script, else which of our registered wallets it belongs
//! to: `wallet` (registry id), `role` (`deposit`, `hot`, `cold`, `retired`), `index`
//! (derivation index) and, for an assigned deposit address, `user`. Amounts are integer
//! satoshis.
//!
//! # Consistency
//!
//! Each block read must extend the one before it; a reorganisation under the trace stops
//! it with an error (run it again). The mempool is taken only when the tip did not move
//! while it was read, so no transaction is missed between the last block and the mempool.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use kura_chain::bitcoin::{
    Address, Block, BlockHash, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid,
};
use kura_chain::{BlockRef, ChainError, ChainSource, TxStatus};
use serde::Serialize;

pub mod render;

/// The report's format name.
pub const FORMAT: &str = "kura-trace/1";
/// Hops followed after the start unless told otherwise.
pub const DEFAULT_DEPTH: u32 = 10;
/// Addresses of a ranged wallet labelled beyond its next unused index (the node watches
/// its hot wallet that far ahead too).
pub const LABEL_LOOKAHEAD: u32 = 20;
/// Times the tip may move while the mempool is read before the trace gives up.
const SETTLE_TRIES: u32 = 5;

/// What a trace reads: the active chain block by block, the mempool, and transactions by
/// txid. Every [`ChainSource`] is one; tests use an in-memory chain.
pub trait BlockReader {
    /// The active chain's tip.
    fn tip(&self) -> Result<BlockRef, ChainError>;
    /// The hash of the active chain's block at `height`, or `None` above the tip.
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError>;
    /// A block by hash.
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError>;
    /// The mempool, parents before children.
    fn mempool(&self) -> Result<Vec<Transaction>, ChainError>;
    /// A transaction in the mempool or the active chain, with where it is.
    fn transaction(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError>;
}

impl<S: ChainSource + ?Sized> BlockReader for S {
    fn tip(&self) -> Result<BlockRef, ChainError> {
        ChainSource::tip(self)
    }
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        ChainSource::block_hash(self, height)
    }
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        ChainSource::block(self, hash)
    }
    fn mempool(&self) -> Result<Vec<Transaction>, ChainError> {
        self.mempool_txs()
    }
    fn transaction(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        self.get_tx(txid)
    }
}

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0:?} is neither a txid (64 hexadecimal digits) nor an outpoint (TXID:VOUT)")]
    BadStart(String),
    #[error(
        "no transaction {0} in the chain or the mempool (Bitcoin Core finds a confirmed \
         transaction by txid only with txindex=1)"
    )]
    NotFound(Txid),
    #[error("transaction {txid} has {outputs} output(s): there is no output {vout}")]
    NoSuchOutput {
        txid: Txid,
        vout: u32,
        outputs: usize,
    },
    #[error("the chain source has no block at height {height} below its tip {tip}")]
    MissingBlock { height: u32, tip: u32 },
    #[error("the chain reorganised during the trace (at height {height}); run it again")]
    Reorganised { height: u32 },
    #[error("the tip moved {0} times while the mempool was read; run the trace again")]
    Unsettled(u32),
    #[error("reading the chain: {0}")]
    Chain(#[from] ChainError),
}

/// Where a trace starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Every output of a transaction.
    Tx(Txid),
    /// One output.
    Output(OutPoint),
}

impl Start {
    pub fn txid(&self) -> Txid {
        match self {
            Start::Tx(t) => *t,
            Start::Output(o) => o.txid,
        }
    }
}

impl FromStr for Start {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Start, TraceError> {
        let bad = || TraceError::BadStart(s.to_owned());
        let hex = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
        match s.split_once(':') {
            Some((txid, vout)) => {
                if !hex(txid) || vout.is_empty() || !vout.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let txid = Txid::from_str(txid).map_err(|_| bad())?;
                let vout = vout.parse::<u32>().map_err(|_| bad())?;
                Ok(Start::Output(OutPoint::new(txid, vout)))
            }
            None if hex(s) => Ok(Start::Tx(Txid::from_str(s).map_err(|_| bad())?)),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Tx(t) => write!(f, "{t}"),
            Start::Output(o) => write!(f, "{o}"),
        }
    }
}

/// Which of our wallets a script belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The wallet's id in the registry (the order it was registered in).
    pub wallet: u32,
    /// `deposit`, `hot`, `cold` or `retired`.
    pub role: String,
    /// The derivation index.
    pub index: u32,
    /// The customer an assigned deposit address belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ours: {} #{}/{}", self.role, self.wallet, self.index)?;
        if let Some(u) = self.user {
            write!(f, " user {u}")?;
        }
        Ok(())
    }
}

/// Our scripts, from the registered descriptors.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    by_script: HashMap<ScriptBuf, Owner>,
}

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    /// Label the addresses of registered wallet `wallet`: a ranged descriptor from index 0
    /// up to `next_index + LABEL_LOOKAHEAD`, a single-address one at its only address.
    /// `users` names the customer of each assigned deposit index.
    pub fn add_wallet(
        &mut self,
        wallet: u32,
        role: &str,
        descriptor: &str,
        next_index: u32,
        users: &BTreeMap<u32, u32>,
        network: Network,
    ) -> Result<(), kura_custody::DescriptorError> {
        let parsed = kura_custody::parse_descriptor(descriptor)?;
        let count = if parsed.is_ranged() {
            next_index.saturating_add(LABEL_LOOKAHEAD).min(1 << 31)
        } else {
            1
        };
        for index in 0..count {
            let (script, _) = parsed.at(index, network)?;
            self.by_script.insert(
                script,
                Owner {
                    wallet,
                    role: role.to_owned(),
                    index,
                    user: users.get(&index).copied(),
                },
            );
        }
        Ok(())
    }

    /// Label one script.
    pub fn insert(&mut self, script: ScriptBuf, owner: Owner) {
        self.by_script.insert(script, owner);
    }

    pub fn get(&self, script: &ScriptBuf) -> Option<&Owner> {
        self.by_script.get(script)
    }

    /// Scripts labelled.
    pub fn len(&self) -> usize {
        self.by_script.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_script.is_empty()
    }
}

/// How far to follow, and how to show addresses.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Hops followed after the start (0: only the start's outputs, and who spent them).
    pub depth: u32,
    pub network: Network,
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_opt<T: fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The whole trace (see the module documentation for the JSON form).
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub format: &'static str,
    pub start: String,
    pub network: String,
    pub depth_limit: u32,
    pub tip: Tip,
    pub totals: Totals,
    pub holdings: Vec<Holding>,
    pub beyond_depth: Vec<BeyondDepth>,
    pub hops: Vec<Hop>,
}

/// The chain the trace read.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tip {
    pub height: u32,
    #[serde(serialize_with = "display")]
    pub hash: BlockHash,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// What the start held: hop 0's inputs (a transaction) or the output (an outpoint).
    pub start_sat: u64,
    /// Traced fees paid along the way, hop 0's included.
    pub fees_sat: u64,
    /// Traced satoshis in unspent followed outputs, confirmed or not.
    pub unspent_sat: u64,
    /// The part of `unspent_sat` in mempool transactions.
    pub unspent_unconfirmed_sat: u64,
    /// Traced satoshis in outputs spent by a transaction beyond the depth limit.
    pub beyond_depth_sat: u64,
    /// Traced satoshis in unspendable (OP_RETURN) outputs.
    pub unspendable_sat: u64,
    /// Transactions in the trace (hop 0 included).
    pub transactions: usize,
    /// The highest hop.
    pub max_hop: u32,
    /// Whether every mixed hop's traced share could be computed.
    pub shares_known: bool,
    /// `start = fees + unspent + beyond_depth + unspendable`.
    pub balanced: bool,
}

/// Where some of the coins are now: one address (or a script without one).
#[derive(Clone, Debug, Serialize)]
pub struct Holding {
    pub address: String,
    pub owner: Option<Owner>,
    pub traced_sat: u64,
    pub value_sat: u64,
    pub coins: Vec<HeldCoin>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HeldCoin {
    #[serde(serialize_with = "display")]
    pub outpoint: OutPoint,
    pub hop: u32,
    /// `None`: in the mempool.
    pub height: Option<u32>,
    pub value_sat: u64,
    pub traced_sat: u64,
}

/// An output spent by a transaction the depth limit kept out of the trace.
#[derive(Clone, Debug, Serialize)]
pub struct BeyondDepth {
    #[serde(serialize_with = "display")]
    pub outpoint: OutPoint,
    pub hop: u32,
    pub address: Option<String>,
    pub owner: Option<Owner>,
    pub value_sat: u64,
    pub traced_sat: u64,
    #[serde(serialize_with = "display")]
    pub spent_by: Txid,
    pub spent_height: Option<u32>,
}

/// One transaction of the trace.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub hop: u32,
    #[serde(serialize_with = "display")]
    pub txid: Txid,
    /// `None`: in the mempool.
    pub height: Option<u32>,
    #[serde(serialize_with = "display_opt")]
    pub block_hash: Option<BlockHash>,
    /// `None` when an input's value is unknown (or for a coinbase).
    pub value_in_sat: Option<u64>,
    pub value_out_sat: u64,
    pub fee_sat: Option<u64>,
    pub traced_in_sat: u64,
    pub traced_fee_sat: u64,
    /// Spends coins that are not in the trace.
    pub mixed: bool,
    pub share_known: bool,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Input {
    /// `None`: a coinbase input.
    #[serde(serialize_with = "display_opt")]
    pub outpoint: Option<OutPoint>,
    pub value_sat: Option<u64>,
    pub address: Option<String>,
    pub owner: Option<Owner>,
    pub traced_sat: u64,
    /// The hop that created the coin, when it is in the trace.
    pub from_hop: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Output {
    pub vout: u32,
    pub value_sat: u64,
    pub traced_sat: u64,
    pub address: Option<String>,
    pub script_hex: String,
    pub owner: Option<Owner>,
    #[serde(flatten)]
    pub state: OutputState,
}

/// What became of an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutputState {
    /// Not spent in the chain nor in the mempool: the coins are here now.
    Unspent,
    /// Spent by a hop of the trace.
    Spent {
        #[serde(serialize_with = "display")]
        spent_by: Txid,
        spent_height: Option<u32>,
        spent_hop: u32,
    },
    /// Spent by a transaction beyond the depth limit.
    SpentBeyondDepth {
        #[serde(serialize_with = "display")]
        spent_by: Txid,
        spent_height: Option<u32>,
    },
    /// Unspendable (OP_RETURN).
    Unspendable,
    /// Not part of the trace (an outpoint start's sibling outputs).
    NotFollowed,
}

/// Follow the coins of `start` forward to the tip and through the mempool. `progress` is
/// called with (height read, tip height) after each block.
pub fn trace(
    reader: &dyn BlockReader,
    start: Start,
    options: &Options,
    labels: &Labels,
    progress: &mut dyn FnMut(u32, u32),
) -> Result<Trace, TraceError> {
    let mut tries = 0;
    loop {
        // An unconfirmed start that gets mined meanwhile is simply looked up again.
        match attempt(reader, start, options, labels, progress)? {
            Some(t) => return Ok(t),
            None if tries < SETTLE_TRIES => tries += 1,
            None => return Err(TraceError::Unsettled(tries)),
        }
    }
}

/// One try; `None` when the chain moved in a way that needs a fresh start.
fn attempt(
    reader: &dyn BlockReader,
    start: Start,
    options: &Options,
    labels: &Labels,
    progress: &mut dyn FnMut(u32, u32),
) -> Result<Option<Trace>, TraceError> {
    let txid = start.txid();
    let (tx, status) = reader
        .transaction(&txid)?
        .ok_or(TraceError::NotFound(txid))?;
    if let Start::Output(o) = start {
        if o.vout as usize >= tx.output.len() {
            return Err(TraceError::NoSuchOutput {
                txid,
                vout: o.vout,
                outputs: tx.output.len(),
            });
        }
    }
    let mut g = Graph::new(reader, options, labels);
    let place = match status {
        TxStatus::Confirmed(b) => Place {
            height: Some(b.height),
            block_hash: Some(b.hash),
        },
        TxStatus::Mempool => Place::MEMPOOL,
    };
    g.start(&tx, place, start)?;

    // Blocks: from the start's own block (later transactions in it may spend it) to a tip
    // that stays put while the mempool is read.
    let mut last: Option<BlockRef> = None;
    let next = match status {
        TxStatus::Confirmed(b) => Some(b),
        TxStatus::Mempool => None,
    };
    let mut moves = 0;
    loop {
        let tip = reader.tip()?;
        if let Some(from) = next {
            if tip.height < from.height {
                return Err(TraceError::Reorganised {
                    height: from.height,
                });
            }
            if let Some(l) = last {
                if tip.height < l.height || reader.block_hash(l.height)? != Some(l.hash) {
                    return Err(TraceError::Reorganised { height: l.height });
                }
            }
            let first = last.map_or(from.height, |l| l.height + 1);
            for height in first..=tip.height {
                let hash = reader.block_hash(height)?.ok_or(TraceError::MissingBlock {
                    height,
                    tip: tip.height,
                })?;
                let block = reader.block(&hash)?.ok_or(TraceError::MissingBlock {
                    height,
                    tip: tip.height,
                })?;
                let extends = match last {
                    None => hash == from.hash,
                    Some(l) => block.header.prev_blockhash == l.hash,
                };
                if !extends {
                    return Err(TraceError::Reorganised { height });
                }
                let place = Place {
                    height: Some(height),
                    block_hash: Some(hash),
                };
                let mut txs = block.txdata.iter();
                if last.is_none() {
                    // Nothing before the start in its own block can spend it.
                    if !txs.by_ref().any(|t| t.compute_txid() == txid) {
                        return Err(TraceError::Reorganised { height });
                    }
                }
                for t in txs {
                    g.spend(t, place)?;
                }
                last = Some(BlockRef { height, hash });
                progress(height, tip.height);
            }
        }
        let mempool = reader.mempool()?;
        let after = reader.tip()?;
        if after != tip {
            moves += 1;
            if moves > SETTLE_TRIES {
                return Err(TraceError::Unsettled(moves));
            }
            if next.is_none() {
                // The start was unconfirmed; it may be in the new block: start over.
                return Ok(None);
            }
            continue;
        }
        if next.is_none() && !mempool.iter().any(|t| t.compute_txid() == txid) {
            // Mined (or dropped) since it was looked up.
            return Ok(None);
        }
        for t in &mempool {
            if t.compute_txid() != txid {
                g.spend(t, Place::MEMPOOL)?;
            }
        }
        let tip = Tip {
            height: tip.height,
            hash: tip.hash,
        };
        return Ok(Some(g.finish(start, tip)));
    }
}

#[derive(Clone, Copy, Debug)]
struct Place {
    height: Option<u32>,
    block_hash: Option<BlockHash>,
}

impl Place {
    const MEMPOOL: Place = Place {
        height: None,
        block_hash: None,
    };
}

/// The trace as it is built.
struct Graph<'a> {
    reader: &'a dyn BlockReader,
    options: &'a Options,
    labels: &'a Labels,
    hops: Vec<Hop>,
    /// Followed outputs not yet seen spent: (hop position, vout).
    followed: HashMap<OutPoint, (usize, u32)>,
    /// Transactions looked up for the value of an input from elsewhere.
    prevs: HashMap<Txid, Option<Transaction>>,
}

impl<'a> Graph<'a> {
    fn new(reader: &'a dyn BlockReader, options: &'a Options, labels: &'a Labels) -> Graph<'a> {
        Graph {
            reader,
            options,
            labels,
            hops: Vec::new(),
            followed: HashMap::new(),
            prevs: HashMap::new(),
        }
    }

    fn address(&self, script: &ScriptBuf) -> Option<String> {
        Address::from_script(script, self.options.network)
            .ok()
            .map(|a| a.to_string())
    }

    /// An input spending a coin from outside the trace: its value and script, if found.
    fn outside_input(&mut self, outpoint: OutPoint) -> Result<Input, TraceError> {
        if !self.prevs.contains_key(&outpoint.txid) {
            let found = self.reader.transaction(&outpoint.txid)?.map(|(t, _)| t);
            self.prevs.insert(outpoint.txid, found);
        }
        let prev: Option<TxOut> = self
            .prevs
            .get(&outpoint.txid)
            .and_then(Option::as_ref)
            .and_then(|t| t.output.get(outpoint.vout as usize).cloned());
        Ok(Input {
            outpoint: Some(outpoint),
            value_sat: prev.as_ref().map(|o| o.value.to_sat()),
            address: prev.as_ref().and_then(|o| self.address(&o.script_pubkey)),
            owner: prev
                .as_ref()
                .and_then(|o| self.labels.get(&o.script_pubkey).cloned()),
            traced_sat: 0,
            from_hop: None,
        })
    }

    fn outputs(&self, tx: &Transaction, traced: &[u64]) -> Vec<Output> {
        tx.output
            .iter()
            .zip(traced)
            .enumerate()
            .map(|(vout, (o, t))| Output {
                vout: vout as u32,
                value_sat: o.value.to_sat(),
                traced_sat: *t,
                address: self.address(&o.script_pubkey),
                script_hex: o.script_pubkey.to_hex_string(),
                owner: self.labels.get(&o.script_pubkey).cloned(),
                state: if o.script_pubkey.is_op_return() {
                    OutputState::Unspendable
                } else {
                    OutputState::Unspent
                },
            })
            .collect()
    }

    /// Add a hop and follow its outputs (those still `Unspent`: spendable and in the trace).
    fn push(&mut self, hop: Hop) {
        let at = self.hops.len();
        for o in &hop.outputs {
            if o.state == OutputState::Unspent {
                self.followed
                    .insert(OutPoint::new(hop.txid, o.vout), (at, o.vout));
            }
        }
        self.hops.push(hop);
    }

    /// Hop 0.
    fn start(&mut self, tx: &Transaction, place: Place, start: Start) -> Result<(), TraceError> {
        let mut inputs = Vec::with_capacity(tx.input.len());
        for i in &tx.input {
            if tx.is_coinbase() {
                inputs.push(Input {
                    outpoint: None,
                    value_sat: None,
                    address: None,
                    owner: None,
                    traced_sat: 0,
                    from_hop: None,
                });
            } else {
                inputs.push(self.outside_input(i.previous_output)?);
            }
        }
        let value_in = inputs.iter().map(|i| i.value_sat).sum::<Option<u64>>();
        let value_in = value_in.filter(|_| !tx.is_coinbase());
        let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let fee = value_in.map(|v| v.saturating_sub(value_out));
        let (traced, traced_in, traced_fee) = match start {
            Start::Tx(_) => {
                let traced: Vec<u64> = tx.output.iter().map(|o| o.value.to_sat()).collect();
                (traced, value_out + fee.unwrap_or(0), fee.unwrap_or(0))
            }
            Start::Output(o) => {
                let traced: Vec<u64> = tx
                    .output
                    .iter()
                    .enumerate()
                    .map(|(v, out)| {
                        if v as u32 == o.vout {
                            out.value.to_sat()
                        } else {
                            0
                        }
                    })
                    .collect();
                let t = traced.iter().sum();
                (traced, t, 0)
            }
        };
        // A transaction start moved every one of its inputs.
        if let Start::Tx(_) = start {
            for i in &mut inputs {
                i.traced_sat = i.value_sat.unwrap_or(0);
            }
        }
        let mut outputs = self.outputs(tx, &traced);
        if let Start::Output(o) = start {
            for out in &mut outputs {
                if out.vout != o.vout {
                    out.state = OutputState::NotFollowed;
                }
            }
        }
        let hop = Hop {
            hop: 0,
            txid: tx.compute_txid(),
            height: place.height,
            block_hash: place.block_hash,
            value_in_sat: value_in,
            value_out_sat: value_out,
            fee_sat: fee,
            traced_in_sat: traced_in,
            traced_fee_sat: traced_fee,
            mixed: false,
            share_known: true,
            inputs,
            outputs,
        };
        self.push(hop);
        Ok(())
    }

    /// A transaction of the chain or the mempool: a hop if it spends followed outputs.
    fn spend(&mut self, tx: &Transaction, place: Place) -> Result<(), TraceError> {
        let parents: Vec<(usize, (usize, u32))> = tx
            .input
            .iter()
            .enumerate()
            .filter_map(|(n, i)| self.followed.get(&i.previous_output).map(|p| (n, *p)))
            .collect();
        if parents.is_empty() {
            return Ok(());
        }
        let txid = tx.compute_txid();
        let hop_no = 1 + parents
            .iter()
            .map(|(_, (at, _))| self.hops[*at].hop)
            .max()
            .unwrap_or(0);
        let within = hop_no <= self.options.depth;
        for (n, (at, vout)) in &parents {
            self.followed.remove(&tx.input[*n].previous_output);
            self.hops[*at].outputs[*vout as usize].state = if within {
                OutputState::Spent {
                    spent_by: txid,
                    spent_height: place.height,
                    spent_hop: hop_no,
                }
            } else {
                OutputState::SpentBeyondDepth {
                    spent_by: txid,
                    spent_height: place.height,
                }
            };
        }
        if !within {
            return Ok(());
        }
        let mut inputs = Vec::with_capacity(tx.input.len());
        for (n, i) in tx.input.iter().enumerate() {
            match parents.iter().find(|(p, _)| *p == n) {
                Some((_, (at, vout))) => {
                    let from = &self.hops[*at];
                    let o = &from.outputs[*vout as usize];
                    inputs.push(Input {
                        outpoint: Some(i.previous_output),
                        value_sat: Some(o.value_sat),
                        address: o.address.clone(),
                        owner: o.owner.clone(),
                        traced_sat: o.traced_sat,
                        from_hop: Some(from.hop),
                    });
                }
                None => inputs.push(self.outside_input(i.previous_output)?),
            }
        }
        let mixed = inputs.iter().any(|i| i.from_hop.is_none());
        let traced_in: u64 = inputs.iter().map(|i| i.traced_sat).sum();
        let value_in = inputs.iter().map(|i| i.value_sat).sum::<Option<u64>>();
        let values: Vec<u64> = tx.output.iter().map(|o| o.value.to_sat()).collect();
        let value_out: u64 = values.iter().sum();
        let (traced, share_known) = match value_in {
            Some(v) => (apportion(traced_in, v, &values), true),
            None => (values.clone(), false),
        };
        let traced_out: u64 = traced.iter().sum();
        let outputs = self.outputs(tx, &traced);
        let hop = Hop {
            hop: hop_no,
            txid,
            height: place.height,
            block_hash: place.block_hash,
            value_in_sat: value_in,
            value_out_sat: value_out,
            fee_sat: value_in.map(|v| v.saturating_sub(value_out)),
            traced_in_sat: traced_in,
            traced_fee_sat: traced_in.saturating_sub(traced_out),
            mixed,
            share_known,
            inputs,
            outputs,
        };
        self.push(hop);
        Ok(())
    }

    fn finish(self, start: Start, tip: Tip) -> Trace {
        let mut totals = Totals {
            start_sat: self.hops.first().map_or(0, |h| h.traced_in_sat),
            transactions: self.hops.len(),
            max_hop: self.hops.iter().map(|h| h.hop).max().unwrap_or(0),
            shares_known: self.hops.iter().all(|h| h.share_known),
            ..Totals::default()
        };
        let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
        let mut beyond = Vec::new();
        for h in &self.hops {
            totals.fees_sat += h.traced_fee_sat;
            for o in &h.outputs {
                let outpoint = OutPoint::new(h.txid, o.vout);
                match o.state {
                    OutputState::Unspent => {
                        totals.unspent_sat += o.traced_sat;
                        if h.height.is_none() {
                            totals.unspent_unconfirmed_sat += o.traced_sat;
                        }
                        let key = o
                            .address
                            .clone()
                            .unwrap_or_else(|| format!("script {}", o.script_hex));
                        let entry = holdings.entry(key.clone()).or_insert_with(|| Holding {
                            address: key,
                            owner: o.owner.clone(),
                            traced_sat: 0,
                            value_sat: 0,
                            coins: Vec::new(),
                        });
                        entry.traced_sat += o.traced_sat;
                        entry.value_sat += o.value_sat;
                        entry.coins.push(HeldCoin {
                            outpoint,
                            hop: h.hop,
                            height: h.height,
                            value_sat: o.value_sat,
                            traced_sat: o.traced_sat,
                        });
                    }
                    OutputState::SpentBeyondDepth {
                        spent_by,
                        spent_height,
                    } => {
                        totals.beyond_depth_sat += o.traced_sat;
                        beyond.push(BeyondDepth {
                            outpoint,
                            hop: h.hop,
                            address: o.address.clone(),
                            owner: o.owner.clone(),
                            value_sat: o.value_sat,
                            traced_sat: o.traced_sat,
                            spent_by,
                            spent_height,
                        });
                    }
                    OutputState::Unspendable => totals.unspendable_sat += o.traced_sat,
                    OutputState::Spent { .. } | OutputState::NotFollowed => {}
                }
            }
        }
        totals.balanced = totals.shares_known
            && u128::from(totals.start_sat)
                == u128::from(totals.fees_sat)
                    + u128::from(totals.unspent_sat)
                    + u128::from(totals.beyond_depth_sat)
                    + u128::from(totals.unspendable_sat);
        let mut holdings: Vec<Holding> = holdings.into_values().collect();
        holdings.sort_by_key(|h| std::cmp::Reverse(h.traced_sat));
        Trace {
            format: FORMAT,
            start: start.to_string(),
            network: self.options.network.to_string(),
            depth_limit: self.options.depth,
            tip,
            totals,
            holdings,
            beyond_depth: beyond,
            hops: self.hops,
        }
    }
}

/// The traced part of each output of a transaction that spends `value_in` satoshis,
/// `traced_in` of them traced, into outputs of `values`: `traced_in × Σvalues / value_in`
/// split in proportion to the values, the remainders going to the largest fractions
/// (ties to the lower index), so the parts add up exactly.
pub fn apportion(traced_in: u64, value_in: u64, values: &[u64]) -> Vec<u64> {
    let total: u128 = values.iter().map(|v| u128::from(*v)).sum();
    if total == 0 || value_in == 0 {
        return vec![0; values.len()];
    }
    let traced_in = u128::from(traced_in.min(value_in));
    // A valid transaction never pays out more than it spends; clamp if one claims to.
    let traced_out = (traced_in * total / u128::from(value_in)).min(traced_in);
    let mut parts: Vec<u64> = Vec::with_capacity(values.len());
    let mut fractions: Vec<(u128, usize)> = Vec::with_capacity(values.len());
    let mut given: u128 = 0;
    for (i, v) in values.iter().enumerate() {
        let exact = traced_out * u128::from(*v);
        let part = exact / total;
        given += part;
        parts.push(u64::try_from(part).unwrap_or(u64::MAX));
        fractions.push((exact % total, i));
    }
    let mut left = traced_out - given;
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in fractions {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Satoshis as BTC with eight decimals.
pub fn btc(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

/// A txid shortened for pictures: the first and last eight hex digits.
pub fn short_txid(txid: &Txid) -> String {
    let s = txid.to_string();
    format!("{}…{}", &s[..8], &s[s.len() - 8..])
}

#[cfg(test)]
mod tests;
