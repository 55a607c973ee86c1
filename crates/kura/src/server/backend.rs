//! [`NodeBackend`]: the HTTP layer's view of the real node (see
//! `kura_api::backend::Backend` for the consistency rules it keeps).
//!
//! - Commands go through the sequencer queue and are answered once durable.
//! - Queries run on the sequencer thread between batches, in order with commands.
//! - Reads of the read model wait until the projector has applied every command the
//!   sequencer had applied when the read began, then run on a blocking thread with a
//!   pooled read-only SQLite connection.
//! - The key table is updated by the node's observer before any command of the batch is
//!   answered, so a key is usable (or revoked) the moment its command is acknowledged.

use crate::node::{NodeHandle, SubmitError};
use kura_api::auth::{ApiKeyId, ApiKeyRecord, IpNet, KeyScheme, MasterKey, Permissions};
use kura_api::backend::{Backend, BackendError, Outcome};
use kura_api::feed::Published;
use kura_engine::codec::{ip_from_bytes, Entry};
use kura_engine::{ApiKey, Engine, IpRange};
use kura_store::{OrderRow, Store};
use kura_units::{MarketId, OrderId};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot, watch};

/// Every API key by id, as the engine holds them (revoked ones disabled).
pub type KeyTable = Arc<RwLock<HashMap<ApiKeyId, ApiKeyRecord>>>;

/// The engine's key, as the API's authentication reads it. `None` for a key id that is
/// not a valid header value (the engine never accepts one).
pub fn key_record(id: &str, key: &ApiKey) -> Option<ApiKeyRecord> {
    let id = ApiKeyId::parse(Some(id.as_bytes())).ok()?;
    Some(ApiKeyRecord {
        id,
        number: key.number,
        user: key.user,
        scheme: match key.scheme {
            kura_engine::KeyScheme::Hmac => KeyScheme::Hmac,
            kura_engine::KeyScheme::Ed25519(public) => KeyScheme::Ed25519 { public },
        },
        permissions: Permissions {
            read: key.permissions.read,
            trade: key.permissions.trade,
            withdraw: key.permissions.withdraw,
        },
        ip_allow: key.ip_allow.iter().filter_map(ip_net).collect(),
        enabled: !key.revoked,
    })
}

/// An engine IP range (128-bit prefix over IPv6, IPv4 mapped) as an allow-list entry.
pub fn ip_net(range: &IpRange) -> Option<IpNet> {
    match ip_from_bytes(range.addr) {
        IpAddr::V4(v4) if range.prefix >= 96 => {
            IpNet::parse(&format!("{v4}/{}", range.prefix - 96))
        }
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => IpNet::parse(&format!("{v6}/{}", range.prefix)),
    }
}

/// `"10.0.0.0/8"`, `"203.0.113.7"`, `"2001:db8::/32"` as an engine IP range.
pub fn parse_ip_range(text: &str) -> Option<IpRange> {
    IpNet::parse(text)?;
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let (max, offset) = if addr.is_ipv4() {
        (32u8, 96u8)
    } else {
        (128, 0)
    };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok()?,
    };
    (prefix <= max).then(|| IpRange {
        addr: kura_engine::codec::ip_to_bytes(addr),
        prefix: prefix + offset,
    })
}

/// Load every key of the engine into a fresh table.
pub fn key_table(engine: &Engine) -> KeyTable {
    let map = engine
        .api_keys()
        .filter_map(|(id, key)| key_record(id, key).map(|r| (r.id.clone(), r)))
        .collect();
    Arc::new(RwLock::new(map))
}

/// The node, as the HTTP layer sees it.
#[derive(Clone, Debug)]
pub struct NodeBackend {
    inner: Arc<Inner>,
}

/// Read-model connections kept open, and reads running at once.
const READERS_MAX: usize = 8;

struct Inner {
    handle: NodeHandle,
    keys: KeyTable,
    master: MasterKey,
    /// The last sequence number the sequencer applied (set by the observer).
    engine_seq: Arc<AtomicU64>,
    /// The last sequence number the read model applied.
    store_seq: watch::Receiver<u64>,
    store_path: PathBuf,
    readers: Mutex<Vec<Store>>,
    /// One permit per read-model connection: at most [`READERS_MAX`] reads run at once,
    /// each on a pooled connection. A burst of reads waits for a connection instead of
    /// opening (and preparing, and closing) one per read, work that grows with the
    /// burst just when the machine is busiest.
    reading: Arc<tokio::sync::Semaphore>,
    read_wait: Duration,
    feed: broadcast::Sender<Arc<Published>>,
    chain: Option<Arc<dyn kura_api::backend::Chain>>,
    solvency: Option<Arc<dyn kura_api::backend::Solvency>>,
    live: Live,
}

/// Open and recently ended orders in memory, updated by the observer before answers.
pub type Live = Arc<Mutex<kura_store::LiveOrders>>;

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBackend")
            .field("engine_seq", &self.engine_seq.load(Ordering::Relaxed))
            .field("store_seq", &*self.store_seq.borrow())
            .finish_non_exhaustive()
    }
}

/// What [`NodeBackend::new`] needs.
pub struct BackendParts {
    pub handle: NodeHandle,
    pub keys: KeyTable,
    pub master: MasterKey,
    pub engine_seq: Arc<AtomicU64>,
    pub store_seq: watch::Receiver<u64>,
    pub store_path: PathBuf,
    pub read_wait: Duration,
    /// Where the observer publishes every applied batch.
    pub feed: broadcast::Sender<Arc<Published>>,
    /// The custody layer's facts for the wallet endpoints, when the node follows a chain.
    pub chain: Option<Arc<dyn kura_api::backend::Chain>>,
    /// The published solvency epochs (`DIR/solvency`).
    pub solvency: Option<Arc<dyn kura_api::backend::Solvency>>,
    /// Orders in memory (cancel answers).
    pub live: Live,
}

impl std::fmt::Debug for BackendParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendParts")
            .field("store_path", &self.store_path)
            .field("read_wait", &self.read_wait)
            .field("chain", &self.chain.is_some())
            .finish_non_exhaustive()
    }
}

fn submit_error(e: SubmitError) -> BackendError {
    match e {
        SubmitError::Busy => BackendError::Busy,
        SubmitError::Stopped(why) => BackendError::Stopped(why),
        SubmitError::Invalid(why) => BackendError::Invalid(why),
    }
}

fn gone<T>(_: T) -> BackendError {
    BackendError::Stopped("the node stopped before answering".into())
}

impl NodeBackend {
    pub fn new(parts: BackendParts) -> NodeBackend {
        NodeBackend {
            inner: Arc::new(Inner {
                handle: parts.handle,
                keys: parts.keys,
                master: parts.master,
                engine_seq: parts.engine_seq,
                store_seq: parts.store_seq,
                store_path: parts.store_path,
                readers: Mutex::new(Vec::new()),
                reading: Arc::new(tokio::sync::Semaphore::new(READERS_MAX)),
                read_wait: parts.read_wait,
                feed: parts.feed,
                chain: parts.chain,
                solvency: parts.solvency,
                live: parts.live,
            }),
        }
    }

    pub fn handle(&self) -> &NodeHandle {
        &self.inner.handle
    }

    fn reader(&self) -> Result<Store, BackendError> {
        let pooled = self.inner.readers.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(store) => Ok(store),
            None => Store::open(&self.inner.store_path)
                .map_err(|e| BackendError::ReadModel(e.to_string())),
        }
    }

    fn give_back(&self, store: Store) {
        if let Ok(mut pool) = self.inner.readers.lock() {
            if pool.len() < READERS_MAX {
                pool.push(store);
            }
        }
    }
}

impl Backend for NodeBackend {
    fn solvency(&self) -> Option<Arc<dyn kura_api::backend::Solvency>> {
        self.inner.solvency.clone()
    }

    fn chain(&self) -> Option<Arc<dyn kura_api::backend::Chain>> {
        self.inner.chain.clone()
    }

    fn submit(&self, entry: Entry) -> impl Future<Output = Result<Outcome, BackendError>> + Send {
        let (tx, rx) = oneshot::channel();
        self.inner.handle.submit(
            entry,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        async move {
            let ack = rx.await.map_err(gone)?.map_err(submit_error)?;
            Ok(Outcome {
                seq: ack.seq,
                timestamp_ms: ack.timestamp_ms,
                result: ack.result,
            })
        }
    }

    fn query<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = self.inner.handle.query(Box::new(move |engine| {
            let _ = tx.send(f(engine));
        }));
        async move {
            queued.map_err(submit_error)?;
            rx.await.map_err(gone)
        }
    }

    fn query_for_cancel<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = self.inner.handle.query_priority(Box::new(move |engine| {
            let _ = tx.send(f(engine));
        }));
        async move {
            queued.map_err(submit_error)?;
            rx.await.map_err(gone)
        }
    }

    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R, BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> R + Send + 'static,
    {
        let this = self.clone();
        let target = self.inner.engine_seq.load(Ordering::Acquire);
        let mut seen = self.inner.store_seq.clone();
        async move {
            let caught_up = tokio::time::timeout(this.inner.read_wait, async {
                seen.wait_for(|applied| *applied >= target)
                    .await
                    .map(|_| ())
            })
            .await;
            match caught_up {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(BackendError::ReadModel("the projector stopped".into())),
                Err(_) => {
                    return Err(BackendError::ReadModel(format!(
                        "the read model did not reach seq {target} within {:?}",
                        this.inner.read_wait
                    )))
                }
            }
            let permit = Arc::clone(&this.inner.reading)
                .acquire_owned()
                .await
                .map_err(|e| BackendError::ReadModel(e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let store = this.reader()?;
                let r = f(&store);
                this.give_back(store);
                drop(permit);
                Ok(r)
            })
            .await
            .map_err(|e| BackendError::ReadModel(e.to_string()))?
        }
    }

    fn live_orders(&self, market: MarketId, ids: &[OrderId]) -> Option<Vec<OrderRow>> {
        self.inner.live.lock().ok()?.rows(market, ids)
    }

    fn api_key(&self, id: &ApiKeyId) -> Option<ApiKeyRecord> {
        self.inner.keys.read().ok()?.get(id).cloned()
    }

    fn master_key(&self) -> &MasterKey {
        &self.inner.master
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.inner.feed.subscribe()
    }

    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
