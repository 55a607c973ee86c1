//! What the HTTP layer needs from the node, as a trait: the router never touches the
//! sequencer, the journal or SQLite directly. The `kura` binary implements it over the
//! real node (journal + sequencer + read-model thread); `MemoryBackend` (feature `testing`)
//! implements it in memory for the router tests.
//!
//! Consistency rules every implementation keeps:
//! - [`Backend::submit`] answers only after the command is durable (for the node) and
//!   applied; the outcome is the engine's.
//! - [`Backend::query`] runs on the engine's own state, ordered with commands: a query
//!   sent after a command's answer sees that command's effect.
//! - [`Backend::read`] runs on the read model only once it has caught up with every
//!   command answered before the call (read-your-writes for history endpoints).
//! - [`Backend::api_key`] sees a key as soon as the command that created it has been
//!   answered, and stops seeing a revoked one as soon as the revocation was answered.

use crate::auth::{ApiKeyId, ApiKeyRecord, MasterKey};
use crate::feed::Published;
use kura_engine::codec::Entry;
use kura_engine::{Engine, Event, Reject};
use kura_store::{OrderRow, Store};
use kura_units::{MarketId, OrderId};
use std::future::Future;
use std::sync::Arc;

/// Why the backend could not serve a call. The HTTP layer maps these to 503 / 500.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The sequencer queue is full: the command was not taken (load shedding).
    #[error("the exchange is busy; retry later")]
    Busy,
    /// The node has stopped (shutdown or a durability failure).
    #[error("the node has stopped: {0}")]
    Stopped(String),
    /// The command cannot be journaled (over a format limit); it was not sequenced.
    #[error("the command cannot be journaled: {0}")]
    Invalid(String),
    /// The read model did not catch up in time, or failed.
    #[error("the read model is unavailable: {0}")]
    ReadModel(String),
}

/// A command's durable outcome: its journal sequence number and the engine's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seq: u64,
    /// The time the sequencer stamped on the command (Binance `transactTime`).
    pub timestamp_ms: u64,
    pub result: Result<Vec<Event>, Reject>,
}

/// The node, as the HTTP layer sees it. Cheap to clone (an `Arc` inside).
pub trait Backend: Clone + Send + Sync + 'static {
    /// Sequence, journal and apply one command. `entry.ctx_timestamp_ms` is overwritten
    /// by the sequencer.
    fn submit(&self, entry: Entry) -> impl Future<Output = Result<Outcome, BackendError>> + Send;

    /// Run `f` on the live engine state, after every command answered before this call.
    fn query<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static;

    /// [`Backend::query`] for what a cancel needs before it is submitted: it must not be
    /// refused because new orders fill the normal queue (cancels are never shed).
    fn query_for_cancel<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        self.query(f)
    }

    /// Run `f` on the read model once it has caught up with every command answered
    /// before this call. `f` may block (SQLite); implementations run it off the async
    /// workers.
    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> R + Send + 'static;

    /// The orders `ids` of `market` exactly as [`Backend::read`] would show them now, from
    /// memory, when the backend keeps them there (open orders and the last ended ones:
    /// what a cancel answers with, without waiting for the read model). `None` when any
    /// of them is not in memory; the caller then reads the read model.
    fn live_orders(&self, market: MarketId, ids: &[OrderId]) -> Option<Vec<OrderRow>> {
        let _ = (market, ids);
        None
    }

    /// The key record for an `X-MBX-APIKEY` value, if the key exists (enabled or not).
    fn api_key(&self, id: &ApiKeyId) -> Option<ApiKeyRecord>;

    /// The node master key, from which HMAC secrets are derived.
    fn master_key(&self) -> &MasterKey;

    /// The server clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// The chain custody facts the wallet endpoints need (deposit addresses, address
    /// checks, confirmations), when the node follows a chain; `None` otherwise, and the
    /// wallet endpoints answer that the asset is not open for deposits or withdrawals.
    fn chain(&self) -> Option<Arc<dyn Chain>> {
        None
    }

    /// The published solvency epochs and customers' inclusion proofs (the
    /// `/kura/v1/solvency` endpoints), when the node keeps them; `None` otherwise, and
    /// those endpoints answer that no report has been published.
    fn solvency(&self) -> Option<Arc<dyn Solvency>> {
        None
    }

    /// Every durable, applied batch from now on, with its book changes (see
    /// [`crate::feed`]). A receiver that falls a whole channel behind gets `Lagged`
    /// and must resynchronise (a WebSocket connection is closed with a reason).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Published>>;
}

/// A deposit seen on chain to one of a customer's addresses and not credited yet
/// (in the mempool, or short of the required confirmations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDeposit {
    /// `txid:vout`, the reference it will be credited under.
    pub reference: String,
    pub amount: kura_units::Amount,
    /// 0 while in the mempool.
    pub confirmations: u32,
    pub address: String,
}

/// What the node's custody layer tells the wallet endpoints. Implemented by the `kura`
/// binary over its chain watcher; blocking-free (answers from memory).
pub trait Chain: Send + Sync + 'static {
    /// The asset the chain's coin is booked as (e.g. "BTC"); the network has the same name.
    fn asset_symbol(&self) -> &str;
    /// The address of a registered wallet's `descriptor` at derivation `index`.
    fn address_at(&self, descriptor: &str, index: u32) -> Result<String, String>;
    /// Check a withdrawal destination for this chain and network (SegWit only);
    /// the canonical text of the address, or why it is refused.
    fn check_address(&self, address: &str) -> Result<String, String>;
    /// Confirmations a deposit needs before it is credited.
    fn confirmations(&self) -> u32;
    /// Confirmations of a deposit (`txid:vout`) in the followed chain now; `None` when
    /// the deposit is not in it.
    fn deposit_confirmations(&self, reference: &str) -> Option<u32>;
    /// Deposits to `user`'s addresses seen but not credited yet.
    fn pending_deposits(&self, user: kura_units::UserId) -> Vec<PendingDeposit>;
}

/// The node's solvency epochs, as the `/kura/v1/solvency` endpoints read them. The JSON
/// forms are defined by the implementation (the `kura` binary's `solvency` module);
/// errors are internal (a damaged file) and answered as HTTP 500. Calls may block (file
/// reads; a proof may rebuild a tree): the handlers run them on a blocking thread.
pub trait Solvency: Send + Sync + 'static {
    /// The report of `epoch`, or of the newest epoch when `None`; `Ok(None)` when there
    /// is no such epoch (or none at all).
    fn report(&self, epoch: Option<u64>) -> Result<Option<serde_json::Value>, String>;
    /// A short entry per published epoch, oldest first.
    fn epochs(&self) -> Result<Vec<serde_json::Value>, String>;
    /// `user`'s own inclusion proofs in `epoch` (the newest when `None`), one per asset;
    /// `Ok(None)` when there is no such epoch.
    fn proofs(
        &self,
        user: kura_units::UserId,
        epoch: Option<u64>,
    ) -> Result<Option<serde_json::Value>, String>;
}
