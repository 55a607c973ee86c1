//! Every integration test of `kura-journal`, in one binary (one link instead of one per
//! file); each module is one area and keeps its own tests.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod anchored;
mod common;
mod corruption;
mod crash;
mod faults;
mod proptests;
mod round_trip;
mod snapshots;
mod torn_tail;
