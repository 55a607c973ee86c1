//! Every integration test of the `kura` crate, in one binary: each module was its own
//! test binary once, and each of those linked the whole node again. One binary links it
//! once, and its tests share the harness threads (`cargo test` runs them in parallel as
//! before). A module is one area: its name says which (custody drills, solvency epochs,
//! end-to-end clients, benchmarks run as commands, ...). The overload drill stays a
//! binary of its own: it compares latencies before and after a flood, so it must not
//! share the machine with other tests.

mod admin_withdrawal;
mod admission;
mod audit_cli;
mod band;
mod bench_api;
mod bench_custody;
mod bench_journal;
mod bench_solvency;
mod cold_cli;
mod crash;
mod custody;
mod custody_status;
mod e2e_ccxt;
mod e2e_ccxt_custody;
mod e2e_ccxt_pro;
mod e2e_common;
mod e2e_schemathesis;
mod export;
mod journal_cli;
mod node;
mod node_common;
mod reserves;
mod server;
mod signer_process;
mod solvency;
mod trace;
