//! What the books must do after the watcher connected a block.
//!
//! Order of the commands for one block: credits of deposits that reached the required
//! confirmations, reversals of credited deposits no longer in the chain, a withdrawal
//! halt for any of our coins spent by a transaction nobody approved, then the
//! reconciliation of this block — so the liabilities it compares include the credits
//! made at the same height.

use crate::watcher::{SpendReport, Watcher};
use bitcoin::hashes::Hash;
use kura_engine::Command;
use kura_units::{Amount, AssetId, UserId};

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
    /// Whether spending our coin `spend.outpoint` with `spend.tx` was approved (a
    /// withdrawal batch or sweep the books know). With no withdrawal flow yet, none is.
    fn approved_spend(&self, spend: &SpendReport) -> bool;
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
    if !books.withdrawals_halted() {
        if let Some(s) = spends.iter().find(|s| !books.approved_spend(s)) {
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
