//! Following the best chain: which of its outputs pay us, which of our coins it spends,
//! and how to step back when a reorganisation replaces blocks.
//!
//! The watcher only believes confirmed blocks. Mempool transactions are shown to
//! customers as pending deposits ([`Watcher::set_mempool`]) and never affect the books.

use bitcoin::{Block, BlockHash, OutPoint, ScriptBuf, Transaction, Txid};
use kura_units::UserId;
use std::collections::{BTreeMap, HashMap};

/// Who an output script belongs to: a registered wallet's derivation index, and the
/// customer when it is a deposit address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub wallet: u32,
    pub index: u32,
    pub user: Option<UserId>,
}

/// An output paying a customer's deposit address, confirmed in the followed chain (or,
/// from [`Watcher::pending`], waiting in the mempool with `height` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deposit {
    pub outpoint: OutPoint,
    pub user: UserId,
    pub wallet: u32,
    pub index: u32,
    pub amount_sat: u64,
    pub height: u32,
}

impl Deposit {
    /// The engine's idempotency key for this deposit: `txid:vout`.
    pub fn reference(&self) -> String {
        self.outpoint.to_string()
    }
}

/// One of our coins spent in a connected block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendReport {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    pub owner: Owner,
    pub spent_by: Txid,
    pub height: u32,
    /// The spending transaction, so a caller can match it against approved payments
    /// by the outputs it pays (never by txid alone).
    pub tx: Transaction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("block {hash} at height {height} does not extend our tip {tip:?}")]
    NotOnTip {
        height: u32,
        hash: BlockHash,
        tip: Option<(u32, BlockHash)>,
    },
    #[error("nothing to disconnect: the watcher is at its start height")]
    NothingToDisconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Coin {
    owner: Owner,
    value: u64,
    height: u32,
}

#[derive(Clone, Debug, Default)]
struct Undo {
    created: Vec<OutPoint>,
    spent: Vec<(OutPoint, Coin)>,
}

/// The followed chain and our coins on it.
#[derive(Clone, Debug)]
pub struct Watcher {
    scripts: HashMap<ScriptBuf, Owner>,
    /// Height of the first block we follow (blocks below it are not scanned).
    start: u32,
    /// Hash of each followed block, from `start` up.
    chain: Vec<BlockHash>,
    undo: Vec<Undo>,
    /// Our unspent confirmed coins.
    coins: BTreeMap<OutPoint, Coin>,
    /// Confirmed deposits in the followed chain, spent or not.
    deposits: BTreeMap<OutPoint, Deposit>,
    pending: BTreeMap<OutPoint, Deposit>,
}

impl Watcher {
    /// Follow the chain from block `start` (the first block that can hold our coins).
    pub fn new(start: u32) -> Watcher {
        Watcher {
            scripts: HashMap::new(),
            start,
            chain: Vec::new(),
            undo: Vec::new(),
            coins: BTreeMap::new(),
            deposits: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Watch an output script from now on. Scripts are added before the blocks that
    /// pay them are connected (addresses are assigned before they are handed out).
    pub fn watch(&mut self, script: ScriptBuf, owner: Owner) {
        self.scripts.insert(script, owner);
    }

    pub fn is_watched(&self, script: &ScriptBuf) -> bool {
        self.scripts.contains_key(script)
    }

    pub fn start_height(&self) -> u32 {
        self.start
    }

    /// Height and hash of the last connected block.
    pub fn tip(&self) -> Option<(u32, BlockHash)> {
        let hash = *self.chain.last()?;
        Some((self.start + self.chain.len() as u32 - 1, hash))
    }

    /// Height the next connected block must have.
    pub fn next_height(&self) -> u32 {
        self.start + self.chain.len() as u32
    }

    /// The hash we followed at `height`, if any.
    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        let i = height.checked_sub(self.start)? as usize;
        self.chain.get(i).copied()
    }

    /// Connect the next block; returns our coins it spent.
    pub fn connect(&mut self, height: u32, block: &Block) -> Result<Vec<SpendReport>, WatchError> {
        let hash = block.block_hash();
        let extends = match self.tip() {
            None => height == self.start,
            Some((h, tip)) => height == h + 1 && block.header.prev_blockhash == tip,
        };
        if !extends {
            return Err(WatchError::NotOnTip {
                height,
                hash,
                tip: self.tip(),
            });
        }
        let mut undo = Undo::default();
        let mut spends = Vec::new();
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            if !tx.is_coinbase() {
                for input in &tx.input {
                    if let Some(coin) = self.coins.remove(&input.previous_output) {
                        undo.spent.push((input.previous_output, coin));
                        spends.push(SpendReport {
                            outpoint: input.previous_output,
                            value_sat: coin.value,
                            owner: coin.owner,
                            spent_by: txid,
                            height,
                            tx: tx.clone(),
                        });
                    }
                }
            }
            for (vout, out) in tx.output.iter().enumerate() {
                let Some(&owner) = self.scripts.get(&out.script_pubkey) else {
                    continue;
                };
                let outpoint = OutPoint::new(txid, vout as u32);
                let value = out.value.to_sat();
                self.coins.insert(
                    outpoint,
                    Coin {
                        owner,
                        value,
                        height,
                    },
                );
                undo.created.push(outpoint);
                if let Some(user) = owner.user {
                    self.deposits.insert(
                        outpoint,
                        Deposit {
                            outpoint,
                            user,
                            wallet: owner.wallet,
                            index: owner.index,
                            amount_sat: value,
                            height,
                        },
                    );
                }
            }
        }
        for (outpoint, _) in &undo.spent {
            self.pending.remove(outpoint);
        }
        for outpoint in &undo.created {
            self.pending.remove(outpoint);
        }
        self.chain.push(hash);
        self.undo.push(undo);
        Ok(spends)
    }

    /// Step back over the tip block (a reorganisation replaced it).
    pub fn disconnect(&mut self) -> Result<BlockHash, WatchError> {
        let (Some(hash), Some(undo)) = (self.chain.pop(), self.undo.pop()) else {
            return Err(WatchError::NothingToDisconnect);
        };
        for outpoint in undo.created.iter().rev() {
            self.coins.remove(outpoint);
            self.deposits.remove(outpoint);
        }
        for (outpoint, coin) in undo.spent {
            self.coins.insert(outpoint, coin);
        }
        Ok(hash)
    }

    /// Replace the view of unconfirmed deposits with those in `txs` (the mempool).
    pub fn set_mempool(&mut self, txs: &[Transaction]) {
        self.pending.clear();
        for tx in txs {
            let txid = tx.compute_txid();
            for (vout, out) in tx.output.iter().enumerate() {
                let outpoint = OutPoint::new(txid, vout as u32);
                if self.coins.contains_key(&outpoint) || self.deposits.contains_key(&outpoint) {
                    continue;
                }
                if let Some(Owner {
                    wallet,
                    index,
                    user: Some(user),
                }) = self.scripts.get(&out.script_pubkey).copied()
                {
                    self.pending.insert(
                        outpoint,
                        Deposit {
                            outpoint,
                            user,
                            wallet,
                            index,
                            amount_sat: out.value.to_sat(),
                            height: 0,
                        },
                    );
                }
            }
        }
    }

    /// Confirmations of a block at `height` given our tip (1 = in the tip block).
    pub fn confirmations(&self, height: u32) -> u32 {
        match self.tip() {
            Some((tip, _)) if height <= tip && height >= self.start => tip - height + 1,
            _ => 0,
        }
    }

    /// Every confirmed deposit in the followed chain.
    pub fn deposits(&self) -> impl Iterator<Item = &Deposit> {
        self.deposits.values()
    }

    pub fn deposit(&self, outpoint: &OutPoint) -> Option<&Deposit> {
        self.deposits.get(outpoint)
    }

    /// Deposits seen in the mempool and not yet confirmed.
    pub fn pending(&self) -> impl Iterator<Item = &Deposit> {
        self.pending.values()
    }

    /// Sum of our unspent confirmed coins, in satoshis.
    pub fn holdings_sat(&self) -> u64 {
        self.coins
            .values()
            .fold(0u64, |sum, c| sum.saturating_add(c.value))
    }

    /// Our unspent confirmed coins: (outpoint, value, owner, height).
    pub fn coins(&self) -> impl Iterator<Item = (OutPoint, u64, Owner, u32)> + '_ {
        self.coins
            .iter()
            .map(|(&o, c)| (o, c.value, c.owner, c.height))
    }
}
