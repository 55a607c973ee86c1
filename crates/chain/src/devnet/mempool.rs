//! The devnet's mempool: consensus checks against the next block, a few relay policies and
//! full replace-by-fee.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};

use super::chain::{check_spend, Chain};
use super::consensus::{
    self, Coin, MAX_REPLACEMENT_EVICTIONS, MAX_STANDARD_TX_WEIGHT, MIN_RELAY_SAT_PER_VB,
};
use super::TxReject;

/// One mempool transaction.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) tx: Arc<Transaction>,
    pub(crate) fee: Amount,
    pub(crate) vsize: u64,
    /// Unix seconds it entered.
    pub(crate) time: u64,
    /// Chain height when it entered.
    pub(crate) height: u32,
    /// Entry order: parents always have smaller numbers than their children.
    pub(crate) seq: u64,
}

/// What accepting a transaction would do.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) txid: Txid,
    pub(crate) fee: Amount,
    pub(crate) vsize: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Mempool {
    pub(crate) entries: HashMap<Txid, Entry>,
    /// Which mempool transaction spends each outpoint.
    spent_by: HashMap<OutPoint, Txid>,
    order: BTreeMap<u64, Txid>,
    next_seq: u64,
}

impl Mempool {
    /// Txids in entry order (parents before children).
    pub(crate) fn txids(&self) -> Vec<Txid> {
        self.order.values().copied().collect()
    }

    pub(crate) fn get(&self, txid: &Txid) -> Option<&Entry> {
        self.entries.get(txid)
    }

    pub(crate) fn spender(&self, op: &OutPoint) -> Option<Txid> {
        self.spent_by.get(op).copied()
    }

    /// The output `op` as the mempool sees it: created by a mempool transaction.
    pub(crate) fn output(&self, op: &OutPoint) -> Option<&TxOut> {
        self.entries
            .get(&op.txid)
            .and_then(|e| e.tx.output.get(op.vout as usize))
    }

    /// Mempool transactions spending outputs of `txid`.
    pub(crate) fn children(&self, txid: &Txid) -> Vec<Txid> {
        let Some(e) = self.entries.get(txid) else {
            return Vec::new();
        };
        let mut out: Vec<Txid> = (0..e.tx.output.len())
            .filter_map(|v| self.spent_by.get(&OutPoint::new(*txid, v as u32)).copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Mempool transactions whose outputs `txid` spends.
    pub(crate) fn parents(&self, txid: &Txid) -> Vec<Txid> {
        let Some(e) = self.entries.get(txid) else {
            return Vec::new();
        };
        let mut out: Vec<Txid> =
            e.tx.input
                .iter()
                .map(|i| i.previous_output.txid)
                .filter(|t| self.entries.contains_key(t))
                .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `txid` and every mempool transaction descending from it.
    pub(crate) fn with_descendants(&self, txid: &Txid) -> Vec<Txid> {
        let mut seen = HashSet::new();
        let mut stack = vec![*txid];
        let mut out = Vec::new();
        while let Some(t) = stack.pop() {
            if !self.entries.contains_key(&t) || !seen.insert(t) {
                continue;
            }
            out.push(t);
            stack.extend(self.children(&t));
        }
        out
    }

    /// `txid` and every mempool transaction it descends from.
    pub(crate) fn with_ancestors(&self, txid: &Txid) -> Vec<Txid> {
        let mut seen = HashSet::new();
        let mut stack = vec![*txid];
        let mut out = Vec::new();
        while let Some(t) = stack.pop() {
            if !self.entries.contains_key(&t) || !seen.insert(t) {
                continue;
            }
            out.push(t);
            stack.extend(self.parents(&t));
        }
        out
    }

    /// Removes `txid` and its descendants; returns what was removed.
    pub(crate) fn remove_with_descendants(&mut self, txid: &Txid) -> Vec<Txid> {
        let all = self.with_descendants(txid);
        for t in &all {
            self.remove_one(t);
        }
        all
    }

    fn remove_one(&mut self, txid: &Txid) {
        if let Some(e) = self.entries.remove(txid) {
            self.order.remove(&e.seq);
            for input in &e.tx.input {
                if self.spent_by.get(&input.previous_output) == Some(txid) {
                    self.spent_by.remove(&input.previous_output);
                }
            }
        }
    }

    /// After a block connected: drops its transactions, and every mempool transaction
    /// conflicting with them (with descendants). Returns the conflicts dropped.
    pub(crate) fn block_connected(&mut self, block: &bitcoin::Block) -> Vec<Txid> {
        let mut conflicts = Vec::new();
        for tx in block.txdata.iter().skip(1) {
            self.remove_one(&tx.compute_txid());
        }
        for tx in block.txdata.iter().skip(1) {
            for input in &tx.input {
                if let Some(other) = self.spent_by.get(&input.previous_output).copied() {
                    conflicts.extend(self.remove_with_descendants(&other));
                }
            }
        }
        conflicts
    }

    /// Empties the mempool, returning its transactions in entry order.
    pub(crate) fn drain(&mut self) -> Vec<Arc<Transaction>> {
        let out = self
            .order
            .values()
            .filter_map(|t| self.entries.get(t).map(|e| e.tx.clone()))
            .collect();
        *self = Mempool {
            next_seq: self.next_seq,
            ..Mempool::default()
        };
        out
    }

    /// Checks `tx` for the next block on `chain` and against the mempool's policies and
    /// replacement rules. With `apply`, admits it and evicts what it replaces.
    pub(crate) fn accept(
        &mut self,
        chain: &Chain,
        tx: &Transaction,
        now: u64,
        apply: bool,
    ) -> Result<Accepted, TxReject> {
        let txid = tx.compute_txid();
        consensus::check_transaction(tx).map_err(TxReject::rejected)?;
        if tx.is_coinbase() {
            return Err(TxReject::rejected("coinbase"));
        }
        if let Some(e) = self.entries.get(&txid) {
            if e.tx.compute_wtxid() == tx.compute_wtxid() {
                return Err(TxReject::rejected("txn-already-in-mempool"));
            }
            return Err(TxReject::rejected("txn-same-nonwitness-data-in-mempool"));
        }
        if tx.weight().to_wu() > MAX_STANDARD_TX_WEIGHT {
            return Err(TxReject::rejected("tx-size"));
        }
        let height = chain.height() + 1;
        let prev_mtp = chain.tip_mtp();
        if !consensus::is_final(tx, height, prev_mtp) {
            return Err(TxReject::rejected("non-final"));
        }

        // Direct conflicts: mempool transactions spending the same outpoints.
        let mut conflicts: Vec<Txid> = tx
            .input
            .iter()
            .filter_map(|i| self.spent_by.get(&i.previous_output).copied())
            .collect();
        conflicts.sort();
        conflicts.dedup();
        let mut replaced: Vec<Txid> = Vec::new();
        for c in &conflicts {
            for t in self.with_descendants(c) {
                if !replaced.contains(&t) {
                    replaced.push(t);
                }
            }
        }

        let mut coins = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            let op = input.previous_output;
            let coin = if let Some(out) = self.output(&op) {
                if replaced.contains(&op.txid) {
                    return Err(TxReject::rejected("bad-txns-spends-conflicting-tx"));
                }
                Coin {
                    output: out.clone(),
                    height,
                    coinbase: false,
                }
            } else if let Some(c) = chain.utxos.get(&op) {
                c.clone()
            } else if chain.confirmed_tx(&txid).is_some() {
                return Err(TxReject::already_in_chain());
            } else {
                return Err(TxReject::missing_inputs());
            };
            coins.push(coin);
        }
        let fee = check_spend(tx, &coins, height).map_err(TxReject::rejected)?;
        if !consensus::sequence_locks_ok(tx, &coins, height, prev_mtp, |h| chain.mtp_at(h)) {
            return Err(TxReject::rejected("non-BIP68-final"));
        }
        if coins
            .iter()
            .any(|c| !consensus::spend_verifiable(&c.output.script_pubkey))
        {
            return Err(TxReject::rejected(
                "devnet-unverifiable-spend (witness version 1+ is not verified by the devnet)",
            ));
        }
        let outs: Vec<TxOut> = coins.iter().map(|c| c.output.clone()).collect();
        consensus::verify_scripts(tx, &outs).map_err(TxReject::rejected)?;

        let vsize = tx.vsize() as u64;
        let min_fee = vsize * MIN_RELAY_SAT_PER_VB;
        if fee.to_sat() < min_fee {
            return Err(TxReject::rejected(format!(
                "min relay fee not met, {} < {}",
                fee.to_sat(),
                min_fee
            )));
        }

        if !conflicts.is_empty() {
            if replaced.len() > MAX_REPLACEMENT_EVICTIONS {
                return Err(TxReject::rejected(format!(
                    "too many potential replacements, rejecting replacement {txid}; too many \
                     potential replacements ({} > {MAX_REPLACEMENT_EVICTIONS})",
                    replaced.len()
                )));
            }
            // Rule 6: a higher feerate than every transaction it directly replaces.
            for c in &conflicts {
                let Some(old) = self.entries.get(c) else {
                    continue;
                };
                // fee / vsize > old.fee / old.vsize, compared without division.
                let new_rate = u128::from(fee.to_sat()) * u128::from(old.vsize);
                let old_rate = u128::from(old.fee.to_sat()) * u128::from(vsize);
                if new_rate <= old_rate {
                    return Err(TxReject::rejected(format!(
                        "insufficient fee, rejecting replacement {txid}; new feerate {} sat/kvB \
                         <= old feerate {} sat/kvB",
                        fee.to_sat() * 1000 / vsize.max(1),
                        old.fee.to_sat() * 1000 / old.vsize.max(1)
                    )));
                }
            }
            // Rules 3 and 4: pays at least everything it evicts, plus its own relay.
            let replaced_fees: u64 = replaced
                .iter()
                .filter_map(|t| self.entries.get(t))
                .map(|e| e.fee.to_sat())
                .sum();
            if fee.to_sat() < replaced_fees {
                return Err(TxReject::rejected(format!(
                    "insufficient fee, rejecting replacement {txid}, less fees than conflicting \
                     txs; {} < {}",
                    fee.to_sat(),
                    replaced_fees
                )));
            }
            let additional = fee.to_sat() - replaced_fees;
            if additional < vsize * MIN_RELAY_SAT_PER_VB {
                return Err(TxReject::rejected(format!(
                    "insufficient fee, rejecting replacement {txid}, not enough additional fees \
                     to relay; {additional} < {}",
                    vsize * MIN_RELAY_SAT_PER_VB
                )));
            }
        }

        if apply {
            for t in &replaced {
                self.remove_one(t);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            for input in &tx.input {
                self.spent_by.insert(input.previous_output, txid);
            }
            self.order.insert(seq, txid);
            self.entries.insert(
                txid,
                Entry {
                    tx: Arc::new(tx.clone()),
                    fee,
                    vsize,
                    time: now,
                    height: chain.height(),
                    seq,
                },
            );
        }
        Ok(Accepted { txid, fee, vsize })
    }
}
