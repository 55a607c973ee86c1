//! Every integration test of `kura-api`, in one binary (one link instead of one per
//! file); each module is one area and keeps its own tests.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod limits;
mod openapi;
mod router;
mod wallet;
mod ws;
