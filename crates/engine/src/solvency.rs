//! Solvency epochs on the books: the journal record of each epoch's liabilities roots.
//!
//! The trees themselves (por/v1 Merkle sum trees over every customer's balance) are
//! built outside the engine from a replay of the journal up to each asset's cut; what
//! the engine journals is what an auditor needs to hold the exchange to them: per asset
//! the cut's ledger sequence number, the por/v1 epoch id, the tree height, the root hash
//! and sum, and the reserves stated for the cut. Because the record is a journaled
//! command, it is a leaf of the signed Merkle audit log, and its sequence number proves
//! the roots were logged before any proof against them was handed out.
//!
//! The engine keeps no state for it: the record is checked (known assets, each once,
//! cut before the record itself, height at most 32) and echoed as an event.

use crate::{Ctx, Engine, Event, EventKind, Reject};
use kura_units::AssetId;

/// Most roots in one record (one per asset).
pub const SOLVENCY_ROOTS_MAX: usize = 256;

/// Highest por/v1 tree height accepted.
pub const SOLVENCY_DEPTH_MAX: u8 = 32;

/// One asset's liabilities root of a solvency epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SolvencyRoot {
    pub asset: AssetId,
    /// The journal sequence number of the cut: every balance in the tree is the
    /// customer's balance (available + held) after this record.
    pub ledger_seq: u64,
    /// The por/v1 epoch id, `H("por/v1/epoch" ‖ u64be(ledger_seq) ‖ u32be(height) ‖
    /// block_hash)`.
    pub epoch_id: [u8; 32],
    /// The tree's height `D`.
    pub depth: u8,
    pub root_hash: [u8; 32],
    /// The tree's total: what customers are owed of the asset, in minor units.
    pub root_sum: u64,
    /// The reserves stated for the cut (the holdings reconciled at its block), in minor
    /// units; `None` for an asset with no on-chain reserves (fiat).
    pub reserves: Option<u64>,
}

impl Engine {
    pub(crate) fn record_solvency(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        epoch: u64,
        roots: &[SolvencyRoot],
    ) -> Result<(), Reject> {
        if roots.is_empty() || roots.len() > SOLVENCY_ROOTS_MAX {
            return Err(Reject::InvalidSpec("a solvency record has 1 to 256 roots"));
        }
        for (i, r) in roots.iter().enumerate() {
            self.check_asset(r.asset)?;
            if roots[..i].iter().any(|o| o.asset == r.asset) {
                return Err(Reject::InvalidSpec(
                    "a solvency record names an asset twice",
                ));
            }
            if r.ledger_seq >= ctx.seq {
                return Err(Reject::InvalidSpec(
                    "a solvency cut must be before the record that logs it",
                ));
            }
            if r.depth > SOLVENCY_DEPTH_MAX {
                return Err(Reject::InvalidSpec("a solvency tree is at most 32 high"));
            }
        }
        out.push(Event {
            seq: ctx.seq,
            kind: EventKind::SolvencyRecorded {
                epoch,
                roots: roots.to_vec(),
            },
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Limits};
    use kura_units::Scale;

    fn root(asset: u16, ledger_seq: u64) -> SolvencyRoot {
        SolvencyRoot {
            asset: AssetId(asset),
            ledger_seq,
            epoch_id: [1; 32],
            depth: 20,
            root_hash: [2; 32],
            root_sum: 5,
            reserves: Some(7),
        }
    }

    fn engine() -> Engine {
        let mut e = Engine::new(Limits::DEFAULT);
        for (i, symbol) in ["BTC", "JPY"].into_iter().enumerate() {
            let cmd = Command::AddAsset {
                symbol: symbol.into(),
                scale: Scale::new(8).expect("scale"),
            };
            let ctx = Ctx {
                seq: i as u64 + 1,
                timestamp_ms: 0,
            };
            e.apply_owned(&cmd, ctx).expect("asset");
        }
        e
    }

    fn run(e: &mut Engine, seq: u64, roots: Vec<SolvencyRoot>) -> Result<Vec<Event>, Reject> {
        let ctx = Ctx {
            seq,
            timestamp_ms: 0,
        };
        e.apply_owned(&Command::RecordSolvency { epoch: 3, roots }, ctx)
    }

    #[test]
    fn a_record_is_echoed_and_changes_no_state() {
        let mut e = engine();
        let before = e.state_hash();
        let roots = vec![root(0, 2), root(1, 2)];
        let events = run(&mut e, 10, roots.clone()).expect("recorded");
        assert_eq!(
            events,
            vec![Event {
                seq: 10,
                kind: EventKind::SolvencyRecorded { epoch: 3, roots }
            }]
        );
        assert_eq!(e.state_hash(), before);
    }

    #[test]
    fn bad_records_are_refused() {
        let mut e = engine();
        let before = e.state_hash();
        assert!(run(&mut e, 10, vec![]).is_err());
        assert_eq!(run(&mut e, 10, vec![root(9, 2)]), Err(Reject::UnknownAsset));
        assert!(run(&mut e, 10, vec![root(0, 2), root(0, 3)]).is_err());
        assert!(
            run(&mut e, 10, vec![root(0, 10)]).is_err(),
            "cut not before"
        );
        let tall = SolvencyRoot {
            depth: 33,
            ..root(0, 2)
        };
        assert!(run(&mut e, 10, vec![tall]).is_err());
        assert_eq!(e.state_hash(), before);
    }
}
