//! What the tests that open an [`Exchange`] in process share: submitting commands as
//! the exchange itself, reading the engine, and waiting for a condition (polled, with a
//! deadline; never a fixed sleep).
#![allow(dead_code)] // each test binary uses its own subset

use kura::server::backend::NodeBackend;
use kura::server::Exchange;
use kura_engine::{codec, Command, Engine, Event};
use std::time::{Duration, Instant};

/// Journals `command` with the exchange's own origin; panics if it is refused.
pub fn submit(ex: &Exchange, command: Command) -> Vec<Event> {
    submit_to(ex.backend(), command)
}

/// [`submit`] through a backend (a node served on a runtime of the test's own).
pub fn submit_to(backend: &NodeBackend, command: Command) -> Vec<Event> {
    let ack = backend
        .handle()
        .submit_wait(codec::Entry {
            ctx_timestamp_ms: 0,
            origin: codec::Origin::Internal,
            command: command.clone(),
        })
        .expect("submitted");
    ack.result
        .unwrap_or_else(|r| panic!("{command:?} refused: {r}"))
}

/// Reads the engine's state.
pub fn query<R: Send + 'static>(ex: &Exchange, f: impl FnOnce(&Engine) -> R + Send + 'static) -> R {
    ex.backend().handle().query_wait(f).expect("query")
}

/// Wait (up to 30 s) until `cond` holds, checking every few milliseconds.
pub fn wait_for(ex: &Exchange, what: &str, mut cond: impl FnMut(&Exchange) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(ex) {
        if Instant::now() > deadline {
            let view = ex.custody().map(|c| format!("{:?}", c.view().last_error));
            panic!("timed out waiting for {what} (custody error: {view:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exchange's built-in devnet.
pub fn devnet(ex: &Exchange) -> kura_chain::Devnet {
    ex.custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone()
}
