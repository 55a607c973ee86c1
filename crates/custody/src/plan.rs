//! What the books must do after the watcher connected a block.
//!
//! Order of the commands for one block: credits of deposits that reached the required
//! confirmations, reversals of credited deposits no longer in the chain, the end of
//! every withdrawal batch whose coins a confirmed transaction spent (paid, or returned
//! to our wallets by a cancel), a withdrawal halt for any of our coins spent by a
//! transaction nobody approved, then the reconciliation of this block — so the
//! liabilities it compares include the credits and payments made at the same height.
//!
//! A batch is recognised by the coins it spends and the outputs it pays, never by a
//! txid (research §1.6): whichever version confirms — the original, a fee bump, or a
//! version broadcast just before a crash — settles it exactly once.

use crate::watcher::{SpendReport, Watcher};
use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, ScriptBuf, Txid};
use kura_engine::Command;
use kura_units::{Amount, AssetId, UserId};
use std::collections::BTreeMap;

/// The rules' settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanParams {
    /// The ledger asset the chain's coin is booked as (BTC).
    pub asset: AssetId,
    /// Confirmations before a deposit is credited (1 = in the tip block).
    pub confirmations: u32,
    /// Deposits below this many satoshis are never credited.
    pub dust_sat: u64,
}

/// What the planner needs to know of the books (implemented over the engine's state by
/// the binary, and by a plain model in tests).
pub trait Books {
    /// Whether `reference` is credited now (known and not reversed).
    fn credited(&self, reference: &str) -> bool;
    /// Every chain deposit credited now (not reversed): its `txid:vout` reference.
    fn credited_chain_deposits(&self) -> Vec<String>;
    /// Whether withdrawals of the asset are halted already.
    fn withdrawals_halted(&self) -> bool;
    /// The withdrawal batch (or sweep) that spends our coin `coin`, if the books have
    /// one, open or finished.
    fn batch_of(&self, coin: &OutPoint) -> Option<BatchFacts>;
}

/// What the books say of one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFacts {
    pub id: u64,
    /// Still waiting for a confirmed transaction.
    pub open: bool,
    /// Every output it must pay: (script, amount in satoshis).
    pub payments: Vec<(ScriptBuf, u64)>,
    /// The transaction that finished it, when finished.
    pub finished_by: Option<Txid>,
}

/// How a confirmed transaction that spends our coins relates to the books.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpendVerdict {
    /// It pays batch `batch` (every payment, exact script and amount).
    Pays { batch: u64, network_fee: u64 },
    /// It spends batch `batch`'s coins back to our own wallets only: a cancel.
    Cancels { batch: u64, network_fee: u64 },
    /// It finished its batch before (seen again after a reorganisation).
    AlreadyFinished,
    /// Nothing approved explains it.
    Unapproved,
}

/// Judge the transaction `tx`, which spends exactly the coins `spent` of ours (all
/// spends in `spent` have `spent_by == tx`'s txid).
pub fn judge_spend(watcher: &Watcher, books: &dyn Books, spent: &[&SpendReport]) -> SpendVerdict {
    let Some(first) = spent.first() else {
        return SpendVerdict::Unapproved;
    };
    let tx = &first.tx;
    let mut batch: Option<BatchFacts> = None;
    for s in spent {
        match (books.batch_of(&s.outpoint), &batch) {
            (Some(b), None) => batch = Some(b),
            (Some(b), Some(seen)) if b.id == seen.id => {}
            _ => return SpendVerdict::Unapproved,
        }
    }
    let Some(b) = batch else {
        return SpendVerdict::Unapproved;
    };
    if !b.open {
        return if b.finished_by == Some(first.spent_by) {
            SpendVerdict::AlreadyFinished
        } else {
            SpendVerdict::Unapproved
        };
    }
    // Every input must be a coin of the batch: a version of our own transaction.
    if tx.input.len() != spent.len() {
        return SpendVerdict::Unapproved;
    }
    let inputs = spent
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.value_sat));
    let outputs = tx
        .output
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.value.to_sat()));
    let Some(network_fee) = inputs.zip(outputs).and_then(|(i, o)| i.checked_sub(o)) else {
        return SpendVerdict::Unapproved;
    };
    let mut unused: Vec<bool> = vec![true; tx.output.len()];
    let pays_all = b.payments.iter().all(|(script, amount)| {
        let found = tx.output.iter().enumerate().position(|(i, o)| {
            unused[i] && o.script_pubkey == *script && o.value.to_sat() == *amount
        });
        match found {
            Some(i) => {
                unused[i] = false;
                true
            }
            None => false,
        }
    });
    if pays_all && !b.payments.is_empty() {
        SpendVerdict::Pays {
            batch: b.id,
            network_fee,
        }
    } else if tx
        .output
        .iter()
        .all(|o| watcher.is_watched(&o.script_pubkey))
    {
        SpendVerdict::Cancels {
            batch: b.id,
            network_fee,
        }
    } else {
        SpendVerdict::Unapproved
    }
}

/// The commands for one block, in the order they must be applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub commands: Vec<Command>,
}

/// Plan the commands after the watcher reached its current tip. `spends` are the
/// spends of our coins reported by the blocks connected since the last plan.
/// Reversals are only planned when `synced` (the watcher followed every block from its
/// start to the chain's tip): a watcher still catching up has not seen every deposit.
pub fn plan_block(
    watcher: &Watcher,
    books: &dyn Books,
    params: PlanParams,
    spends: &[SpendReport],
    synced: bool,
) -> Plan {
    let mut commands = Vec::new();
    let Some((height, hash)) = watcher.tip() else {
        return Plan { commands };
    };
    for d in watcher.deposits() {
        if d.amount_sat < params.dust_sat || watcher.confirmations(d.height) < params.confirmations
        {
            continue;
        }
        let reference = d.reference();
        if !books.credited(&reference) {
            commands.push(Command::Deposit {
                user: d.user,
                asset: params.asset,
                amount: Amount::new(d.amount_sat),
                reference,
            });
        }
    }
    if synced {
        for reference in books.credited_chain_deposits() {
            let gone = reference
                .parse::<bitcoin::OutPoint>()
                .map(|o| watcher.deposit(&o).is_none())
                .unwrap_or(false);
            if gone {
                commands.push(Command::ReverseDeposit {
                    reference,
                    reason: format!(
                        "deposit no longer in the best chain at height {height} (reorganisation)"
                    ),
                });
            }
        }
    }
    let mut by_tx: BTreeMap<Txid, Vec<&SpendReport>> = BTreeMap::new();
    for s in spends {
        by_tx.entry(s.spent_by).or_default().push(s);
    }
    let mut unapproved: Option<&SpendReport> = None;
    for (txid, spent) in &by_tx {
        let (batch, network_fee, paid) = match judge_spend(watcher, books, spent) {
            SpendVerdict::Pays { batch, network_fee } => (batch, network_fee, true),
            SpendVerdict::Cancels { batch, network_fee } => (batch, network_fee, false),
            SpendVerdict::AlreadyFinished => continue,
            SpendVerdict::Unapproved => {
                unapproved = unapproved.or(spent.first().copied());
                continue;
            }
        };
        commands.push(Command::FinishWithdrawalBatch {
            batch,
            txid: txid.to_byte_array(),
            height: spent.first().map_or(height, |s| s.height),
            network_fee: Amount::new(network_fee),
            paid,
        });
    }
    if !books.withdrawals_halted() {
        if let Some(s) = unapproved {
            commands.push(Command::HaltWithdrawals {
                asset: params.asset,
                reason: format!(
                    "coin {} ({} sat) spent by {} at height {} matches no approved withdrawal or sweep",
                    s.outpoint, s.value_sat, s.spent_by, s.height
                ),
            });
        }
    }
    commands.push(Command::Reconcile {
        asset: params.asset,
        height,
        block_hash: hash.to_byte_array(),
        holdings: Amount::new(watcher.holdings_sat()),
    });
    Plan { commands }
}

/// The user a deposit reference belongs to, for display (`None` if not ours).
pub fn deposit_owner(watcher: &Watcher, reference: &str) -> Option<UserId> {
    let outpoint = reference.parse::<bitcoin::OutPoint>().ok()?;
    watcher.deposit(&outpoint).map(|d| d.user)
}
