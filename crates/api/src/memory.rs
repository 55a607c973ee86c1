//! [`MemoryBackend`]: the [`Backend`] the router tests run against. One engine and one
//! in-memory read model behind a mutex; every command is applied and projected before
//! `submit` answers, so reads always see every answered command (the trait's
//! consistency rules hold trivially). The clock is set by the test, and so is the chain
//! the wallet endpoints see ([`MemoryBackend::set_chain`]; none by default), and the
//! solvency store the `/kura/v1/solvency` endpoints read ([`MemoryBackend::set_solvency`];
//! none by default).
//!
//! Not a node: nothing is journaled, and a poisoned mutex answers
//! [`BackendError::Stopped`] instead of recovering.

use crate::auth::{ApiKeyId, ApiKeyRecord, HmacSecret, KeyScheme, MasterKey, Permissions};
use crate::backend::{Backend, BackendError, Chain, Outcome, Solvency};
use crate::feed::{Published, Publisher};
use kura_engine::codec::{Entry, Origin};
use kura_engine::{genesis, Command, Ctx, Engine, EventKind, Limits, Reject};
use kura_store::{OrderRow, Store};
use kura_units::{Amount, AssetId, MarketId, OrderId, UserId};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Ended orders the memory keeps for cancel answers, as the node does.
const LIVE_ENDED_MAX: usize = 1024;

/// Engine, read model, key map and clock in memory. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    keys: Mutex<BTreeMap<ApiKeyId, ApiKeyRecord>>,
    master: MasterKey,
    now_ms: AtomicU64,
    busy: AtomicBool,
    /// Reads of the read model fail while set (cancels are answered from `live`).
    read_model_down: AtomicBool,
    feed: tokio::sync::broadcast::Sender<Arc<Published>>,
    chain: ChainSlot,
    solvency: SolvencySlot,
}

/// The solvency store [`Backend::solvency`] answers, if any.
#[derive(Default)]
struct SolvencySlot(RwLock<Option<Arc<dyn Solvency>>>);

impl std::fmt::Debug for SolvencySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().map(|c| c.is_some()).unwrap_or(false);
        f.debug_struct("SolvencySlot").field("set", &set).finish()
    }
}

/// The chain [`Backend::chain`] answers, if any.
#[derive(Default)]
struct ChainSlot(RwLock<Option<Arc<dyn Chain>>>);

impl std::fmt::Debug for ChainSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().map(|c| c.is_some()).unwrap_or(false);
        f.debug_struct("ChainSlot").field("set", &set).finish()
    }
}

#[derive(Debug)]
struct State {
    engine: Engine,
    store: Store,
    live: kura_store::LiveOrders,
    seq: u64,
    /// Every entry submitted, as sequenced (timestamp overwritten).
    entries: Vec<Entry>,
    publisher: Publisher,
}

fn stopped<T>(_: T) -> BackendError {
    BackendError::Stopped("state mutex poisoned".to_owned())
}

impl MemoryBackend {
    /// An exchange with the default assets and markets ([`genesis::genesis`]), its
    /// clock at `now_ms`.
    pub fn new(master: MasterKey, now_ms: u64) -> Result<MemoryBackend, BackendError> {
        let store = Store::open_in_memory().map_err(|e| BackendError::ReadModel(e.to_string()))?;
        let backend = MemoryBackend {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    engine: Engine::new(Limits::DEFAULT),
                    store,
                    live: kura_store::LiveOrders::new(LIVE_ENDED_MAX),
                    seq: 0,
                    entries: Vec::new(),
                    publisher: Publisher::default(),
                }),
                keys: Mutex::new(BTreeMap::new()),
                master,
                now_ms: AtomicU64::new(now_ms),
                busy: AtomicBool::new(false),
                read_model_down: AtomicBool::new(false),
                feed: tokio::sync::broadcast::channel(4096).0,
                chain: ChainSlot::default(),
                solvency: SolvencySlot::default(),
            }),
        };
        for command in genesis::genesis() {
            if let Err(reject) = backend.run(command)?.result {
                return Err(BackendError::Invalid(format!("genesis rejected: {reject}")));
            }
        }
        Ok(backend)
    }

    /// Make every [`Backend::read`] fail as a stalled or broken read model would (or
    /// work again).
    pub fn set_read_model_down(&self, down: bool) {
        self.inner.read_model_down.store(down, Ordering::SeqCst);
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, BackendError> {
        self.inner.state.lock().map_err(stopped)
    }

    /// Sequence, apply and project one entry (its timestamp becomes the clock's).
    pub fn apply(&self, mut entry: Entry) -> Result<Outcome, BackendError> {
        if self.inner.busy.load(Ordering::SeqCst) {
            return Err(BackendError::Busy);
        }
        entry.ctx_timestamp_ms = self.now_ms();
        let mut state = self.state()?;
        state.seq += 1;
        let ctx = Ctx {
            seq: state.seq,
            timestamp_ms: entry.ctx_timestamp_ms,
        };
        let result = state.engine.apply_owned(&entry.command, ctx);
        let events = result.as_deref().unwrap_or_default();
        state
            .store
            .apply(ctx, events)
            .map_err(|e| BackendError::ReadModel(e.to_string()))?;
        state.live.apply(ctx, events);
        state.entries.push(entry);
        // Publish as the node does: one batch per command here.
        let published = {
            let State {
                engine, publisher, ..
            } = &mut *state;
            publisher.publish(engine, vec![(ctx, events.to_vec())])
        };
        let _ = self.inner.feed.send(Arc::new(published));
        Ok(Outcome {
            seq: ctx.seq,
            timestamp_ms: ctx.timestamp_ms,
            result,
        })
    }

    /// [`MemoryBackend::apply`] of a command from [`Origin::Internal`].
    pub fn run(&self, command: Command) -> Result<Outcome, BackendError> {
        self.apply(Entry {
            ctx_timestamp_ms: 0,
            origin: Origin::Internal,
            command,
        })
    }

    /// A command that must succeed (test setup); its rejection is an error.
    pub fn run_ok(&self, command: Command) -> Result<Vec<kura_engine::Event>, BackendError> {
        self.run(command)?
            .result
            .map_err(|r: Reject| BackendError::Invalid(format!("rejected: {r}")))
    }

    /// A new customer.
    pub fn create_user(&self) -> Result<UserId, BackendError> {
        self.run_ok(Command::CreateUser)?
            .iter()
            .find_map(|e| match e.kind {
                EventKind::UserCreated { user } => Some(user),
                _ => None,
            })
            .ok_or_else(|| BackendError::Invalid("no user created".to_owned()))
    }

    /// Credit `amount` minor units of `asset` to `user` (a fresh deposit reference).
    pub fn deposit(&self, user: UserId, asset: AssetId, amount: u64) -> Result<(), BackendError> {
        let reference = format!("memory-deposit-{}", self.state()?.seq + 1);
        self.run_ok(Command::Deposit {
            user,
            asset,
            amount: Amount::new(amount),
            reference,
        })
        .map(drop)
    }

    /// Halt a market (operator action).
    pub fn halt(&self, market: MarketId) -> Result<(), BackendError> {
        self.run_ok(Command::HaltMarket {
            market,
            reason: "maintenance".to_owned(),
        })
        .map(drop)
    }

    /// Register an API key record (what the node's key table would hold).
    pub fn add_key(&self, record: ApiKeyRecord) -> Result<(), BackendError> {
        self.inner
            .keys
            .lock()
            .map_err(stopped)?
            .insert(record.id.clone(), record);
        Ok(())
    }

    /// A new HMAC key for `user` with `permissions`, numbered `number`; returns the key
    /// id and the secret a client signs with.
    pub fn add_hmac_key(
        &self,
        user: UserId,
        number: u64,
        permissions: Permissions,
    ) -> Result<(ApiKeyId, HmacSecret), BackendError> {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&number.to_be_bytes());
        bytes[8..12].copy_from_slice(&user.0.to_be_bytes());
        let id = ApiKeyId::from_random(bytes);
        let secret = self.inner.master.derive_hmac_secret(&id);
        self.add_key(ApiKeyRecord {
            id: id.clone(),
            number,
            user,
            scheme: KeyScheme::Hmac,
            permissions,
            ip_allow: Vec::new(),
            enabled: true,
        })?;
        Ok((id, secret))
    }

    /// Follow `chain` (or, with `None`, no chain): what [`Backend::chain`] answers.
    pub fn set_chain(&self, chain: Option<Arc<dyn Chain>>) {
        // A poisoned lock only held an `Option<Arc>`: take it over.
        let mut slot = self
            .inner
            .chain
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = chain;
    }

    /// Serve `store` (or, with `None`, nothing) at the solvency endpoints.
    pub fn set_solvency(&self, store: Option<Arc<dyn Solvency>>) {
        let mut slot = self
            .inner
            .solvency
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *slot = store;
    }

    /// [`MemoryBackend::set_chain`] with `chain`, for building a backend in one expression.
    pub fn with_chain(self, chain: Arc<dyn Chain>) -> MemoryBackend {
        self.set_chain(Some(chain));
        self
    }

    /// Set the clock.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.inner.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Move the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.inner.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// While set, `submit` answers [`BackendError::Busy`] (load shedding).
    pub fn set_busy(&self, busy: bool) {
        self.inner.busy.store(busy, Ordering::SeqCst);
    }

    /// Every entry sequenced so far, genesis included.
    pub fn entries(&self) -> Result<Vec<Entry>, BackendError> {
        Ok(self.state()?.entries.clone())
    }

    /// Run `f` on the engine, synchronously.
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine) -> R) -> Result<R, BackendError> {
        Ok(f(&self.state()?.engine))
    }

    /// Run `f` on the read model, synchronously.
    pub fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> Result<R, BackendError> {
        Ok(f(&self.state()?.store))
    }
}

impl Backend for MemoryBackend {
    fn submit(&self, entry: Entry) -> impl Future<Output = Result<Outcome, BackendError>> + Send {
        let result = self.apply(entry);
        async move { result }
    }

    fn query<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        let result = self.with_engine(f);
        async move { result }
    }

    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> R + Send + 'static,
    {
        let result = if self.inner.read_model_down.load(Ordering::SeqCst) {
            Err(BackendError::ReadModel(
                "the read model is down (test)".into(),
            ))
        } else {
            self.with_store(f)
        };
        async move { result }
    }

    fn live_orders(&self, market: MarketId, ids: &[OrderId]) -> Option<Vec<OrderRow>> {
        self.state().ok()?.live.rows(market, ids)
    }

    fn api_key(&self, id: &ApiKeyId) -> Option<ApiKeyRecord> {
        self.inner.keys.lock().ok()?.get(id).cloned()
    }

    fn master_key(&self) -> &MasterKey {
        &self.inner.master
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms.load(Ordering::SeqCst)
    }

    fn solvency(&self) -> Option<Arc<dyn Solvency>> {
        self.inner.solvency.0.read().ok()?.clone()
    }

    fn chain(&self) -> Option<Arc<dyn Chain>> {
        self.inner.chain.0.read().ok()?.clone()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Published>> {
        self.inner.feed.subscribe()
    }
}
