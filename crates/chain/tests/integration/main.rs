//! Every integration test of `kura-chain`, in one binary (one link instead of one per
//! file); each module is one area and keeps its own tests.

mod bdk_emitter;
mod bitcoind;
mod common;
mod devnet;
mod rpc;
mod rpc_bad_input;
