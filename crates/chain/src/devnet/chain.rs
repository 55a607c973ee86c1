//! The devnet's block chain and UTXO set: connects and disconnects blocks with full
//! validation and undo data, keeps a transaction index and the blocks that left the active
//! chain.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bitcoin::constants::genesis_block;
use bitcoin::{Amount, Block, BlockHash, Network, OutPoint, Transaction, TxOut, Txid, Work};

use super::consensus::{self, Coin, COINBASE_MATURITY, MAX_FUTURE_BLOCK_TIME};

/// The active chain and its UTXO set.
#[derive(Debug)]
pub(crate) struct Chain {
    blocks: Vec<Arc<Block>>,
    hashes: Vec<BlockHash>,
    /// Cumulative work up to each height.
    work: Vec<Work>,
    height_of: HashMap<BlockHash, u32>,
    /// Per height: the coins its block spent, in spending order.
    undo: Vec<Vec<(OutPoint, Coin)>>,
    pub(crate) utxos: HashMap<OutPoint, Coin>,
    /// Confirmed transactions: txid → (height, position in block).
    tx_index: HashMap<Txid, (u32, usize)>,
    /// Blocks disconnected from the active chain, with the height they had.
    stale: HashMap<BlockHash, (Arc<Block>, u32)>,
    /// Blocks marked invalid with `invalidateblock`.
    invalid: HashSet<BlockHash>,
}

/// What connecting a block did, for the mempool.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) block: Arc<Block>,
}

impl Chain {
    /// A chain holding only the regtest genesis block (whose coinbase is unspendable, as in
    /// Core).
    pub(crate) fn new() -> Chain {
        let genesis = Arc::new(genesis_block(Network::Regtest));
        let hash = genesis.block_hash();
        let mut height_of = HashMap::new();
        height_of.insert(hash, 0);
        Chain {
            work: vec![genesis.header.work()],
            blocks: vec![genesis],
            hashes: vec![hash],
            height_of,
            undo: vec![Vec::new()],
            utxos: HashMap::new(),
            tx_index: HashMap::new(),
            stale: HashMap::new(),
            invalid: HashSet::new(),
        }
    }

    pub(crate) fn height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub(crate) fn tip_hash(&self) -> BlockHash {
        self.hashes[self.hashes.len() - 1]
    }

    pub(crate) fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.hashes.get(height as usize).copied()
    }

    /// The time of the active block at `height` (0 above the tip).
    pub(crate) fn block_at_time(&self, height: u32) -> u32 {
        self.blocks
            .get(height as usize)
            .map_or(0, |b| b.header.time)
    }

    pub(crate) fn work_at(&self, height: u32) -> Option<Work> {
        self.work.get(height as usize).copied()
    }

    /// The active height of a block, if it is on the active chain.
    pub(crate) fn active_height(&self, hash: &BlockHash) -> Option<u32> {
        self.height_of.get(hash).copied()
    }

    /// A block by hash, active or stale, with its height and whether it is active.
    pub(crate) fn lookup_block(&self, hash: &BlockHash) -> Option<(Arc<Block>, u32, bool)> {
        if let Some(h) = self.active_height(hash) {
            return Some((self.blocks[h as usize].clone(), h, true));
        }
        self.stale.get(hash).map(|(b, h)| (b.clone(), *h, false))
    }

    pub(crate) fn confirmed_tx(&self, txid: &Txid) -> Option<(&Transaction, u32)> {
        let (height, pos) = *self.tx_index.get(txid)?;
        let tx = self.blocks.get(height as usize)?.txdata.get(pos)?;
        Some((tx, height))
    }

    pub(crate) fn is_invalid(&self, hash: &BlockHash) -> bool {
        self.invalid.contains(hash)
    }

    pub(crate) fn mark_invalid(&mut self, hash: BlockHash) {
        self.invalid.insert(hash);
    }

    /// Median time past of the active block at `height` (the median of its time and the ten
    /// before it).
    pub(crate) fn mtp_at(&self, height: u32) -> u32 {
        let end = (height as usize + 1).min(self.blocks.len());
        let start = end.saturating_sub(11);
        let times: Vec<u32> = self.blocks[start..end]
            .iter()
            .map(|b| b.header.time)
            .collect();
        consensus::median_time(&times)
    }

    pub(crate) fn tip_mtp(&self) -> u32 {
        self.mtp_at(self.height())
    }

    /// Validates `block` as the next block and connects it. `now` is the clock in Unix
    /// seconds (blocks more than two hours ahead of it are refused). Returns Core's reject
    /// reason on failure, leaving the chain unchanged.
    pub(crate) fn connect(&mut self, block: Block, now: u64) -> Result<Connected, String> {
        let hash = block.block_hash();
        if self.invalid.contains(&hash) {
            return Err("duplicate-invalid".into());
        }
        if self.height_of.contains_key(&hash) {
            return Err("duplicate".into());
        }
        if block.header.prev_blockhash != self.tip_hash() {
            return Err("prev-blk-not-tip".into());
        }
        let height = self.height() + 1;
        consensus::check_block_shape(&block, height).map_err(str::to_string)?;
        let prev_mtp = self.tip_mtp();
        if block.header.time <= prev_mtp {
            return Err("time-too-old".into());
        }
        if u64::from(block.header.time) > now + MAX_FUTURE_BLOCK_TIME {
            return Err("time-too-new".into());
        }

        // Spend and create coins against an overlay, so a failure changes nothing.
        let mut created: HashMap<OutPoint, Coin> = HashMap::new();
        let mut spent: Vec<(OutPoint, Coin)> = Vec::new();
        let mut spent_set: HashSet<OutPoint> = HashSet::new();
        let mut fees = Amount::ZERO;
        for (pos, tx) in block.txdata.iter().enumerate() {
            if !consensus::is_final(tx, height, prev_mtp) {
                return Err("bad-txns-nonfinal".into());
            }
            let txid = tx.compute_txid();
            if pos > 0 {
                let mut coins = Vec::with_capacity(tx.input.len());
                for input in &tx.input {
                    let op = input.previous_output;
                    if spent_set.contains(&op) {
                        return Err("bad-txns-inputs-missingorspent".into());
                    }
                    let coin = match created.get(&op).or_else(|| self.utxos.get(&op)) {
                        Some(c) => c.clone(),
                        None => return Err("bad-txns-inputs-missingorspent".into()),
                    };
                    coins.push(coin);
                }
                let fee = check_spend(tx, &coins, height)?;
                if !consensus::sequence_locks_ok(tx, &coins, height, prev_mtp, |h| self.mtp_at(h)) {
                    return Err("bad-txns-nonfinal".into());
                }
                let outs: Vec<TxOut> = coins.iter().map(|c| c.output.clone()).collect();
                consensus::verify_scripts(tx, &outs)
                    .map_err(|e| format!("block-validation-failed: {e}"))?;
                fees = fees
                    .checked_add(fee)
                    .ok_or_else(|| "bad-txns-accumulated-fee-outofrange".to_string())?;
                for (input, coin) in tx.input.iter().zip(coins) {
                    let op = input.previous_output;
                    spent_set.insert(op);
                    if created.remove(&op).is_none() {
                        spent.push((op, coin));
                    }
                }
            }
            for (vout, out) in tx.output.iter().enumerate() {
                if out.script_pubkey.is_op_return() {
                    continue;
                }
                created.insert(
                    OutPoint::new(txid, vout as u32),
                    Coin {
                        output: out.clone(),
                        height,
                        coinbase: pos == 0,
                    },
                );
            }
        }
        let cb_value: Amount = block.txdata[0].output.iter().map(|o| o.value).sum();
        let allowed = consensus::subsidy(height)
            .checked_add(fees)
            .ok_or_else(|| "bad-cb-amount".to_string())?;
        if cb_value > allowed {
            return Err("bad-cb-amount".into());
        }

        // Apply.
        for (op, _) in &spent {
            self.utxos.remove(op);
        }
        self.utxos.extend(created);
        for (pos, tx) in block.txdata.iter().enumerate() {
            self.tx_index.insert(tx.compute_txid(), (height, pos));
        }
        let work = self.work[self.work.len() - 1] + block.header.work();
        let block = Arc::new(block);
        self.stale.remove(&hash);
        self.blocks.push(block.clone());
        self.hashes.push(hash);
        self.work.push(work);
        self.height_of.insert(hash, height);
        self.undo.push(spent);
        Ok(Connected { block })
    }

    /// Disconnects the tip (never genesis): restores the coins it spent, removes those it
    /// created, and keeps the block as stale. Returns the block.
    pub(crate) fn disconnect_tip(&mut self) -> Option<Arc<Block>> {
        if self.height() == 0 {
            return None;
        }
        let height = self.height();
        let block = self.blocks.pop()?;
        let hash = self.hashes.pop()?;
        self.work.pop();
        let undo = self.undo.pop().unwrap_or_default();
        self.height_of.remove(&hash);
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for vout in 0..tx.output.len() {
                self.utxos.remove(&OutPoint::new(txid, vout as u32));
            }
            self.tx_index.remove(&txid);
        }
        for (op, coin) in undo {
            self.utxos.insert(op, coin);
        }
        self.stale.insert(hash, (block.clone(), height));
        Some(block)
    }
}

/// Value and maturity checks of a non-coinbase transaction spending `coins` in a block at
/// `height`. Returns its fee.
pub(crate) fn check_spend(tx: &Transaction, coins: &[Coin], height: u32) -> Result<Amount, String> {
    let mut value_in = Amount::ZERO;
    for coin in coins {
        if coin.coinbase && height.saturating_sub(coin.height) < COINBASE_MATURITY {
            return Err("bad-txns-premature-spend-of-coinbase".into());
        }
        value_in = match value_in.checked_add(coin.output.value) {
            Some(v) if v <= Amount::MAX_MONEY => v,
            _ => return Err("bad-txns-inputvalues-outofrange".into()),
        };
    }
    let value_out: Amount = tx.output.iter().map(|o| o.value).sum();
    value_in
        .checked_sub(value_out)
        .ok_or_else(|| "bad-txns-in-belowout".to_string())
}
