//! Custody rules over chain facts, with no I/O: blocks and mempool transactions come in,
//! engine commands come out.
//!
//! - [`wallet`]: output descriptors (SegWit only) and the addresses derived from them.
//! - [`watcher`]: the best chain as far as we have followed it, every output that pays
//!   one of our scripts, who it belongs to, and the undo data to step back over a
//!   reorganisation.
//! - [`plan`]: what the books must do after a block — credit deposits that reached the
//!   required confirmations (exactly once per `txid:vout`), reverse credited deposits a
//!   reorganisation removed, halt withdrawals when one of our coins is spent by a
//!   transaction nobody approved, and reconcile holdings against liabilities.
//! - [`band`]: the hot wallet's float band — when to sweep to cold storage and when to
//!   prepare a refill from it.
//! - [`reserves`]: proof of reserves as a BIP-127 transaction — build, finalize, verify.
//!
//! The binary owns the loop: it asks a chain source for blocks, feeds them here, and
//! submits the commands through the sequencer like any other. Because every decision is
//! a journaled command, the books never depend on what this crate remembers: after a
//! restart the watcher is rebuilt from the chain and the same rules give the same
//! commands (the engine refuses the ones already applied).

pub mod band;
pub mod plan;
pub mod psbt;
pub mod reserves;
pub mod wallet;
pub mod watcher;

pub use plan::{judge_spend, plan_block, BatchFacts, Books, Plan, PlanParams, SpendVerdict};
pub use psbt::{
    build_psbt, bump_psbt, cancel_psbt, BuildError, BuiltPsbt, ChangeTarget, Payment, SpendableCoin,
};
pub use wallet::{derive, parse_descriptor, DescriptorError, WatchDescriptor};
pub use watcher::{Deposit, Owner, SpendReport, WatchError, Watcher};
