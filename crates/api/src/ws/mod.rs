//! Binance's WebSocket streams over the event feed ([`crate::feed`]).
//!
//! # Endpoints
//!
//! | path | what |
//! |---|---|
//! | `/ws`, `/ws/<name>` | raw market streams: `<name>` a stream name (subscribed at once), a listen key (that customer's user-data stream, events unwrapped), or anything else (ignored: CCXT opens `/ws/0`, `/ws/1`, …) |
//! | `/stream?streams=a/b` | the same streams, each event wrapped `{"stream":…,"data":…}` |
//! | `/ws-api/v3` | the WS-API method `userDataStream.subscribe.signature` (also `userDataStream.unsubscribe`, `ping`, `time`); user events wrapped `{"subscriptionId":0,"event":…}` |
//! | `POST/PUT/DELETE /api/v3/userDataStream` | listen keys (`X-MBX-APIKEY`, not signed) |
//!
//! Market connections take `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`,
//! `SET_PROPERTY` / `GET_PROPERTY` (`combined`). Every `SUBSCRIBE` is acknowledged with
//! `{"result":null,"id":…}`, repeats too; a bad request gets
//! `{"error":{"code":…,"msg":…},"id":…}`.
//!
//! Streams (symbols in lower case): `<sym>@depth`, `<sym>@depth@100ms` (diffs),
//! `<sym>@depth5|10|20[@100ms]` (partial books), `<sym>@trade`, `<sym>@aggTrade`,
//! `<sym>@kline_<interval>`, `<sym>@miniTicker`, `<sym>@ticker`, `<sym>@bookTicker`,
//! `!miniTicker@arr`. Decimals are printed by the REST renderers
//! ([`crate::http`]), so both APIs agree to the digit.
//!
//! # Where events come from
//! Only from the feed, which the node publishes for durable commands. Depth diffs are
//! the feed's [`crate::feed::BookDiff`]s merged per update speed (every 100 ms for
//! `@depth@100ms`, every second for `@depth`): each message holds every level touched
//! since the previous one at its latest quantity, with `U` the first update id merged
//! and `u` the last. Update ids are the market's, shared with REST `depth`'s
//! `lastUpdateId`, so a client applying them to a REST snapshot stays in sync, and
//! `U == previous u + 1` always holds on a connection. Partial books, book tickers and full tickers (which carry the
//! best bid and ask) are read from the engine when the feed says the market changed,
//! at most once per 100 ms (`@100ms`, book tickers) or per second. Klines and 24-hour
//! tickers are seeded from the read model when first subscribed and then kept from the
//! feed's trades (trades the seed already counted are skipped by trade id). As on
//! Binance, subscribing sends nothing but the acknowledgement: a stream's first message
//! is the one its next event causes, and a ticker's or kline's shows the seeded state
//! (the whole 24 hours, the whole interval), not only the trades since subscribing.
//!
//! # One rendering for every subscriber
//! One task, the stream hub (`streams`), consumes the feed for all market streams: it
//! keeps the streams' state once per market, renders each stream's message once per
//! event or flush, and queues the same bytes on every subscriber's connection (a
//! combined subscriber gets them wrapped, spliced once per stream). A connection's own
//! task only answers its client and, for user-data streams (per customer), reads the
//! feed itself.
//!
//! # Bounds ([`WsConfig`], Binance's figures by default)
//! - Every connection has one send queue of [`WsConfig::send_queue_max`] messages.
//!   When it is full the client is not reading fast enough: the connection is closed
//!   (code 1008, reason "slow consumer…") instead of buffering, whether the hub or the
//!   connection was sending. A feed receiver that fell a whole channel behind
//!   (`Lagged`) closes what it served (1013), since events were missed: a user-data
//!   connection's own receiver closes that connection, the hub's every market
//!   subscriber.
//! - Connections per client address and in total; streams per connection; incoming
//!   message size and rate (over the rate: closed, 1008).
//! - A ping every [`WsConfig::ping_interval`]; a client silent for
//!   [`WsConfig::pong_timeout`] is dropped.
//! - Listen keys: one per customer, expiring [`WsConfig::listen_key_ttl_ms`] after the
//!   last `POST`/`PUT`.
//!
//! Known limitations: a 24-hour ticker drops trades that leave its window only when it
//! re-seeds from the read model, once a minute; klines are sent when a trade changes them (and once more, closed,
//! when their interval ends), not every 2 s.

mod conn;
mod market;
mod streams;
mod user;

use crate::auth::{self, ApiKeyId, Permission, API_KEY_HEADER};
use crate::backend::Backend;
use crate::errors::{api_error, Failure, ParamError};
use crate::params::Params;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kura_units::UserId;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};

/// Binance: at most 1024 streams per connection.
pub const SUBSCRIPTIONS_MAX: usize = 1024;
/// Messages queued for one connection before it counts as a slow consumer.
pub const SEND_QUEUE_MAX: usize = 1024;
/// Binance: 5 incoming messages per second per connection.
pub const MESSAGES_PER_SECOND: u32 = 5;
/// Connections one address may hold open at once. Binance allows 300 new connections
/// per address per 5 minutes ([`crate::limits::WS_CONNECTIONS_PER_5M`]); a trading
/// client holds a few, and every connection a storm holds is one the fan-out feeds
/// until its address is banned.
pub const CONNECTIONS_PER_IP_MAX: usize = 100;
/// Open WebSocket connections of the whole server.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Largest incoming message (a SUBSCRIBE of 1024 long stream names fits).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Initial read buffer of a connection. The WebSocket library's default (128 KiB) is
/// allocated and zero-filled by a connection's first read, so a storm of idle
/// connections at [`CONNECTIONS_MAX`] would hold 1.25 GiB of read buffers; at 4 KiB it
/// is 40 MiB. A larger message (up to [`MESSAGE_BYTES_MAX`]) grows the buffer as it
/// arrives.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes of a connection's messages gathered before they are written to its socket (a
/// flush writes them anyway). The library's default, 128 KiB, is what a connection
/// whose client stopped reading holds beside its socket's buffers; at 16 KiB a storm of
/// such connections at [`CONNECTIONS_MAX`] holds 160 MiB, and a buffer stays under the
/// allocator's size for expensive frees.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Binance pings every 20 s and drops a connection silent for a minute.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
pub const PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Worker threads of the WebSocket runtime (see [`WsConfig::runtime_threads`]).
pub const RUNTIME_THREADS: usize = 1;
/// The WebSocket runtime's thread priority where `SCHED_IDLE` is refused, on the crate
/// `thread-priority`'s 0–99 scale, which it maps to Linux nice values from 19 (0) to
/// -20 (99): 25 is nice 9.
pub const RUNTIME_PRIORITY: u8 = 25;
/// Binance: a listen key expires 60 minutes after its last keepalive.
pub const LISTEN_KEY_TTL_MS: u64 = 60 * 60 * 1000;
/// Characters of a listen key (Binance's are 60; ours 64, like an API key id).
pub const LISTEN_KEY_LEN: usize = 64;

const _: () = assert!(SEND_QUEUE_MAX >= SUBSCRIPTIONS_MAX / 4, "room for a burst");
const _: () = assert!(PONG_TIMEOUT.as_secs() >= 2 * PING_INTERVAL.as_secs());

/// The limits of the WebSocket endpoints; the default is the constants above.
#[derive(Clone, Debug)]
pub struct WsConfig {
    pub send_queue_max: usize,
    pub subscriptions_max: usize,
    pub connections_per_ip_max: usize,
    pub connections_max: usize,
    pub message_bytes_max: usize,
    /// Initial read buffer per connection ([`READ_BUFFER_BYTES`]).
    pub read_buffer_bytes: usize,
    /// Write buffer per connection ([`WRITE_BUFFER_BYTES`]).
    pub write_buffer_bytes: usize,
    pub messages_per_second: u32,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub listen_key_ttl_ms: u64,
    /// Worker threads of the runtime that WebSocket connections and the stream hub run
    /// on, apart from the HTTP server's runtime when that one is multi-threaded (on a
    /// current-thread runtime, a test's or a tool's, they share it). However many
    /// subscribers a storm brings, their work then takes at most these threads' share of
    /// the machine and never queues ahead of REST requests on the server's workers.
    /// 0: share the server's runtime. There is one such runtime per process, sized by
    /// the first connection that needs it.
    pub runtime_threads: usize,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            send_queue_max: SEND_QUEUE_MAX,
            subscriptions_max: SUBSCRIPTIONS_MAX,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX,
            connections_max: CONNECTIONS_MAX,
            message_bytes_max: MESSAGE_BYTES_MAX,
            read_buffer_bytes: READ_BUFFER_BYTES,
            write_buffer_bytes: WRITE_BUFFER_BYTES,
            messages_per_second: MESSAGES_PER_SECOND,
            ping_interval: PING_INTERVAL,
            pong_timeout: PONG_TIMEOUT,
            listen_key_ttl_ms: LISTEN_KEY_TTL_MS,
            runtime_threads: RUNTIME_THREADS,
        }
    }
}

/// What the WebSocket endpoints share: the limits, the open connections per address,
/// and the listen keys.
#[derive(Debug)]
pub struct Hub {
    config: WsConfig,
    connections: Mutex<Connections>,
    listen_keys: Mutex<BTreeMap<String, ListenKey>>,
    /// Admission: its new bans close a banned address's connections, it counts each
    /// address's new connections, and a connection closed for breaking a rule counts
    /// as an offence toward its address's ban.
    limiter: Option<Arc<crate::limits::Limiter>>,
    /// Whether the task that closes banned addresses' connections was started.
    following_bans: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// The running connections by address (admission's key), for closing an address's
    /// connections when it is banned.
    peers: HashMap<IpAddr, HashMap<u64, std::sync::Weak<conn::Peer>>>,
}

#[derive(Clone, Debug)]
struct ListenKey {
    user: UserId,
    expires_ms: u64,
}

impl Hub {
    pub fn new(config: WsConfig) -> Arc<Hub> {
        Hub::with_limiter(config, None)
    }

    /// A hub under admission (`limiter`): its connections close as soon as their
    /// address is banned ([`crate::limits::Limiter::ban_feed`]); an address opens at
    /// most [`crate::limits::Limits::ws_connections_per_5m`] connections per window;
    /// and a connection closed for breaking a rule (too many messages, a binary or
    /// oversized message, a full send queue) counts toward its address's ban, as
    /// Binance bans addresses that are disconnected again and again.
    pub fn under_admission(config: WsConfig, limiter: Arc<crate::limits::Limiter>) -> Arc<Hub> {
        Hub::with_limiter(config, Some(limiter))
    }

    fn with_limiter(config: WsConfig, limiter: Option<Arc<crate::limits::Limiter>>) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            connections: Mutex::new(Connections::default()),
            listen_keys: Mutex::new(BTreeMap::new()),
            limiter,
            following_bans: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Count `peer` among the running connections of `address` (admission's key), so
    /// that a ban of the address closes it. The first registration starts, on the
    /// caller's runtime, the one task that follows admission's bans: a ban wakes that
    /// task, not every connection.
    pub(crate) fn register(self: &Arc<Hub>, address: IpAddr, peer: &Arc<conn::Peer>) {
        if let Ok(mut c) = self.connections.lock() {
            c.peers
                .entry(address)
                .or_default()
                .insert(peer.id(), Arc::downgrade(peer));
        }
        let Some(limiter) = &self.limiter else {
            return;
        };
        if !self
            .following_bans
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tokio::spawn(close_banned(
                Arc::downgrade(self),
                limiter.ban_feed().subscribe(),
            ));
        }
    }

    /// Forget a connection of `address` that ended.
    pub(crate) fn unregister(&self, address: IpAddr, peer: u64) {
        if let Ok(mut c) = self.connections.lock() {
            if let Some(peers) = c.peers.get_mut(&address) {
                peers.remove(&peer);
                if peers.is_empty() {
                    c.peers.remove(&address);
                }
            }
        }
    }

    /// Close the running connections of `address`, banned.
    fn close_address(&self, address: IpAddr) {
        let peers = match self.connections.lock() {
            Ok(mut c) => c.peers.remove(&address).unwrap_or_default(),
            Err(_) => return,
        };
        for peer in peers.values().filter_map(std::sync::Weak::upgrade) {
            peer.close(conn::CLOSE_POLICY, "this address is banned");
        }
    }

    /// The addresses with running connections.
    fn addresses(&self) -> Vec<IpAddr> {
        self.connections
            .lock()
            .map(|c| c.peers.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Count a new connection from `ip` against its address's window (always allowed
    /// without admission).
    fn count_new_connection(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.limiter
            .as_ref()
            .is_none_or(|l| l.count_ws_connection(ip, now_ms))
    }

    /// A connection from `ip` was closed for breaking a rule: one offence toward a ban.
    pub(crate) fn offence(&self, ip: IpAddr, now_ms: u64) {
        if let Some(until_ms) = self
            .limiter
            .as_ref()
            .and_then(|l| l.count_failure(ip, now_ms))
        {
            tracing::debug!(%ip, until_ms, "ws: address banned for repeated disconnections");
        }
    }

    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// Open WebSocket connections (a connection counts until its socket is dropped).
    pub fn open_connections(&self) -> usize {
        self.connections.lock().map_or(0, |c| c.total)
    }

    /// Count a new connection from `ip`, if the limits allow it.
    fn admit(self: &Arc<Hub>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut c = self.connections.lock().ok()?;
        let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= self.config.connections_max || mine >= self.config.connections_per_ip_max {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, mine + 1);
        Some(ConnectionSlot {
            hub: Arc::clone(self),
            ip,
        })
    }

    /// The customer of a live listen key.
    fn listen_key_user(&self, key: &str, now_ms: u64) -> Option<UserId> {
        let keys = self.listen_keys.lock().ok()?;
        keys.get(key)
            .filter(|k| k.expires_ms > now_ms)
            .map(|k| k.user)
    }

    /// The customer's listen key, created if they have none, its expiry pushed back.
    fn create_listen_key(&self, user: UserId, now_ms: u64) -> Option<String> {
        let mut keys = self.listen_keys.lock().ok()?;
        keys.retain(|_, k| k.expires_ms > now_ms);
        let expires_ms = now_ms.saturating_add(self.config.listen_key_ttl_ms);
        if let Some((text, k)) = keys.iter_mut().find(|(_, k)| k.user == user) {
            k.expires_ms = expires_ms;
            return Some(text.clone());
        }
        let text = random_listen_key();
        keys.insert(text.clone(), ListenKey { user, expires_ms });
        Some(text)
    }

    /// Push back the expiry of `user`'s key `key` (false: no such live key).
    fn keep_alive(&self, user: UserId, key: &str, now_ms: u64) -> bool {
        let Ok(mut keys) = self.listen_keys.lock() else {
            return false;
        };
        match keys.get_mut(key) {
            Some(k) if k.user == user && k.expires_ms > now_ms => {
                k.expires_ms = now_ms.saturating_add(self.config.listen_key_ttl_ms);
                true
            }
            _ => false,
        }
    }

    /// Remove `user`'s key `key` (false: no such key).
    fn close_listen_key(&self, user: UserId, key: &str) -> bool {
        let Ok(mut keys) = self.listen_keys.lock() else {
            return false;
        };
        if keys.get(key).is_some_and(|k| k.user == user) {
            keys.remove(key);
            true
        } else {
            false
        }
    }
}

fn random_listen_key() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    (0..LISTEN_KEY_LEN)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Close the connections of each address admission bans, for as long as the hub lives.
async fn close_banned(
    hub: std::sync::Weak<Hub>,
    mut bans: tokio::sync::broadcast::Receiver<IpAddr>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let banned = bans.recv().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match banned {
            Ok(address) => hub.close_address(address),
            // Bans were missed: look each address with connections up.
            Err(RecvError::Lagged(_)) => {
                if let Some(limiter) = &hub.limiter {
                    let now = wall_clock_ms();
                    for address in hub.addresses() {
                        if limiter.banned(address, now) {
                            hub.close_address(address);
                        }
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    hub: Arc<Hub>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.hub.connections.lock() {
            c.total = c.total.saturating_sub(1);
            let left = c
                .per_ip
                .get(&self.ip)
                .copied()
                .unwrap_or(1)
                .saturating_sub(1);
            if left == 0 {
                c.per_ip.remove(&self.ip);
            } else {
                c.per_ip.insert(self.ip, left);
            }
        }
    }
}

/// The state of the WebSocket routes.
#[derive(Debug)]
pub(crate) struct WsState<B> {
    backend: B,
    hub: Arc<Hub>,
    /// The stream hub of these routes (started by the first connection).
    streams: Arc<streams::StreamsSlot>,
}

impl<B: Clone> Clone for WsState<B> {
    fn clone(&self) -> Self {
        WsState {
            backend: self.backend.clone(),
            hub: Arc::clone(&self.hub),
            streams: Arc::clone(&self.streams),
        }
    }
}

/// The WebSocket and listen-key routes with the default [`WsConfig`], to merge into
/// the REST router ([`crate::http::router_with`] does).
pub fn routes<B: Backend, S: Clone + Send + Sync + 'static>(backend: B) -> Router<S> {
    routes_with(backend, Hub::new(WsConfig::default()))
}

/// The WebSocket and listen-key routes over `hub`.
pub fn routes_with<B: Backend, S: Clone + Send + Sync + 'static>(
    backend: B,
    hub: Arc<Hub>,
) -> Router<S> {
    Router::new()
        .route("/ws", get(market_root::<B>))
        .route("/ws/{name}", get(market_named::<B>))
        .route("/stream", get(combined::<B>))
        .route("/ws-api/v3", get(ws_api::<B>))
        .route(
            "/api/v3/userDataStream",
            post(listen_key_create::<B>)
                .put(listen_key_keep_alive::<B>)
                .delete(listen_key_close::<B>),
        )
        .with_state(WsState {
            backend,
            hub,
            streams: Arc::default(),
        })
}

/// Only the WebSocket and listen-key routes, as a router of their own (tests of the
/// limits serve this with a small [`WsConfig`]).
pub fn router<B: Backend>(backend: B, hub: Arc<Hub>) -> Router {
    routes_with(backend, hub)
}

/// The client's address: admission's ([`crate::limits::ClientIp`], which believes a
/// trusted proxy's `X-Forwarded-For`), else the TCP peer (unspecified when the server
/// was not started with `into_make_service_with_connect_info`).
#[derive(Debug)]
struct PeerIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PeerIp, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<crate::limits::ClientIp>() {
            return Ok(PeerIp(c.0));
        }
        Ok(PeerIp(
            match ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await {
                Ok(ConnectInfo(addr)) => addr.ip(),
                Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        ))
    }
}

/// An HTTP error answer in Binance's format.
fn fail(failure: Failure) -> Response {
    let e = api_error(&failure);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;charset=UTF-8",
        )],
        e.to_json(),
    )
        .into_response()
}

/// 429, counted toward the address's ban (a storm of upgrades over the limit ends in
/// its connections being reset at accept).
fn too_many_connections() -> Response {
    let mut response = fail(Failure::TooManyRequests);
    response.extensions_mut().insert(crate::http::Offence);
    response
}

/// Upgrade to a connection running `mode`, if the connection limits allow it.
fn upgrade<B: Backend>(
    st: WsState<B>,
    ip: IpAddr,
    ws: WebSocketUpgrade,
    mode: conn::Mode,
) -> Response {
    let Some(rt) = ws_runtime(&st.hub.config) else {
        return fail(Failure::Internal);
    };
    if !st.hub.count_new_connection(ip, st.backend.now_ms()) {
        return too_many_connections();
    }
    let Some(slot) = st.hub.admit(ip) else {
        return too_many_connections();
    };
    let streams = st.streams.get(&st.backend, &rt);
    configure(ws, &st.hub.config).on_upgrade(move |socket| async move {
        // The connection runs on the WebSocket runtime from here on.
        rt.spawn(conn::run(socket, st.backend, st.hub, streams, mode, slot));
    })
}

/// Where WebSocket tasks run: the runtime of their own ([`WsConfig::runtime_threads`])
/// when the caller's is multi-threaded, otherwise the caller's. `None` outside a
/// runtime.
fn ws_runtime(config: &WsConfig) -> Option<tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let current = tokio::runtime::Handle::try_current().ok()?;
    if config.runtime_threads == 0
        || current.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Some(current);
    }
    let threads = config.runtime_threads;
    let own = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("kura-ws")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "ws: no runtime of its own; sharing"))
            .ok()
    });
    Some(own.as_ref().map_or(current, |rt| rt.handle().clone()))
}

/// Where this is supported (Linux), the WebSocket runtime's threads run under
/// `SCHED_IDLE` (nice 9, from [`RUNTIME_PRIORITY`], where that is refused): when the
/// machine is busy, order entry, cancels and the journal come before market data, so a
/// storm of subscribers can slow the streams but not the REST API. On an idle machine it
/// changes nothing.
fn lower_priority() {
    run_thread_when_idle("ws: the runtime");
}

/// Run the calling thread under `SCHED_IDLE`: only on CPU time no thread of normal
/// priority wants, and preempted as soon as one wakes, rather than after a slice as a
/// niced thread is. Where the policy is refused, nice 9 ([`lower_thread_priority`]).
pub fn run_thread_when_idle(what: &str) {
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(error = ?e, "{what}: no SCHED_IDLE; nice 9 instead");
        lower_thread_priority(RUNTIME_PRIORITY, what);
    }
}

/// Set the calling thread's priority to `priority` on the crate `thread-priority`'s
/// 0–99 scale (25 is nice 9 on Linux), under the normal scheduling policy whatever the
/// thread inherited from the one that started it (a guest-lane thread runs under
/// `SCHED_IDLE`). Where that fails, the thread keeps its priority and `what` is logged
/// at debug level.
pub fn lower_thread_priority(priority: u8, what: &str) {
    let outcome = thread_priority::ThreadPriorityValue::try_from(priority)
        .map_err(|e| e.to_owned())
        .and_then(|p| {
            set_thread_priority_and_policy(
                thread_native_id(),
                thread_priority::ThreadPriority::Crossplatform(p),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
            )
            .map_err(|e| format!("{e:?}"))
        });
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "{what} keeps the server's priority");
    }
}

/// The socket limits of [`WsConfig`]: message and frame size, initial read buffer,
/// write buffer.
fn configure(ws: WebSocketUpgrade, config: &WsConfig) -> WebSocketUpgrade {
    let max = config.message_bytes_max;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(config.read_buffer_bytes.max(1))
        .write_buffer_size(config.write_buffer_bytes)
}

async fn market_root<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(
        st,
        ip,
        ws,
        conn::Mode::Market {
            combined: false,
            streams: Vec::new(),
        },
    )
}

async fn market_named<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(user) = st.hub.listen_key_user(&name, st.backend.now_ms()) {
        let mode = conn::Mode::ListenKey { key: name, user };
        return upgrade(st, ip, ws, mode);
    }
    // `/ws/<stream>` subscribes a stream; anything else (CCXT's `/ws/0`) is ignored.
    let streams = if market::StreamName::parse(&name).is_some() {
        vec![name]
    } else {
        Vec::new()
    };
    upgrade(
        st,
        ip,
        ws,
        conn::Mode::Market {
            combined: false,
            streams,
        },
    )
}

async fn combined<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let streams: Vec<String> = query
        .get("streams")
        .map(|s| {
            s.split('/')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if streams.len() > st.hub.config.subscriptions_max
        || streams
            .iter()
            .any(|n| market::StreamName::parse(n).is_none())
    {
        return fail(Failure::Param(ParamError::InvalidValue {
            name: "streams".to_owned(),
        }));
    }
    upgrade(
        st,
        ip,
        ws,
        conn::Mode::Market {
            combined: true,
            streams,
        },
    )
}

async fn ws_api<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(st, ip, ws, conn::Mode::WsApi { ip })
}

// ---- listen keys -----------------------------------------------------------------

/// The customer of the `X-MBX-APIKEY` header (a live key allowed from `ip`).
fn key_user<B: Backend>(b: &B, headers: &HeaderMap, ip: IpAddr) -> Result<UserId, Failure> {
    let id = ApiKeyId::parse(headers.get(API_KEY_HEADER).map(|v| v.as_bytes()))
        .map_err(Failure::Auth)?;
    let record = b
        .api_key(&id)
        .ok_or(Failure::Auth(auth::AuthError::UnknownApiKey))?;
    auth::check_access(&record, Permission::Read, ip).map_err(Failure::Auth)?;
    Ok(record.user)
}

/// `listenKey` from the query or the form body.
fn listen_key_param(query: Option<&str>, body: &[u8]) -> Result<String, Failure> {
    let params = Params::parse(query.unwrap_or("").as_bytes(), body).map_err(Failure::Param)?;
    params
        .required("listenKey")
        .map(str::to_owned)
        .map_err(Failure::Param)
}

fn listen_key_missing() -> Response {
    let body = serde_json::json!({"code": -1125, "msg": "This listenKey does not exist."});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn listen_key_create<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
) -> Response {
    let user = match key_user(&st.backend, &headers, ip) {
        Ok(u) => u,
        Err(f) => return fail(f),
    };
    match st.hub.create_listen_key(user, st.backend.now_ms()) {
        Some(key) => axum::Json(serde_json::json!({ "listenKey": key })).into_response(),
        None => fail(Failure::Internal),
    }
}

async fn listen_key_keep_alive<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let user = match key_user(&st.backend, &headers, ip) {
        Ok(u) => u,
        Err(f) => return fail(f),
    };
    let key = match listen_key_param(uri.query(), &body) {
        Ok(k) => k,
        Err(f) => return fail(f),
    };
    if st.hub.keep_alive(user, &key, st.backend.now_ms()) {
        axum::Json(serde_json::json!({})).into_response()
    } else {
        listen_key_missing()
    }
}

async fn listen_key_close<B: Backend>(
    State(st): State<WsState<B>>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let user = match key_user(&st.backend, &headers, ip) {
        Ok(u) => u,
        Err(f) => return fail(f),
    };
    let key = match listen_key_param(uri.query(), &body) {
        Ok(k) => k,
        Err(f) => return fail(f),
    };
    if st.hub.close_listen_key(user, &key) {
        axum::Json(serde_json::json!({})).into_response()
    } else {
        listen_key_missing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    /// Echo the length of every text message, on a socket configured like the server's.
    async fn echo_lengths(ws: WebSocketUpgrade) -> Response {
        configure(ws, &WsConfig::default()).on_upgrade(|mut socket| async move {
            while let Some(Ok(m)) = socket.recv().await {
                if let axum::extract::ws::Message::Text(t) = m {
                    let reply = axum::extract::ws::Message::Text(t.len().to_string().into());
                    if socket.send(reply).await.is_err() {
                        break;
                    }
                }
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_server_the_streams_run_on_their_own_runtime() {
        let config = WsConfig::default();
        let rt = ws_runtime(&config).expect("a runtime");
        let name = rt
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("joined");
        assert_eq!(name.as_deref(), Some("kura-ws"));
        let shared = ws_runtime(&WsConfig {
            runtime_threads: 0,
            ..WsConfig::default()
        })
        .expect("a runtime");
        let name = shared
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("joined");
        assert_ne!(name.as_deref(), Some("kura-ws"));

        // A subscriber there gets its trades, rendered on the hub.
        let b = crate::memory::MemoryBackend::new(crate::MasterKey::from_bytes([7; 32]), 1)
            .expect("backend");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = router(b.clone(), Hub::new(config));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/btcjpy@trade"))
            .await
            .expect("connect");
        ws.send(ClientMessage::text(
            r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#,
        ))
        .await
        .expect("send");
        let listed = ws.next().await.expect("an answer").expect("a message");
        assert!(listed.into_text().expect("text").contains("btcjpy@trade"));
        let mut users = Vec::new();
        for _ in 0..2 {
            let u = b.create_user().expect("user");
            b.deposit(u, kura_engine::genesis::BTC, 1_000_000_000)
                .expect("btc");
            b.deposit(u, kura_engine::genesis::JPY, 1_000_000_000_000)
                .expect("jpy");
            users.push(u);
        }
        for (u, side) in [
            (users[0], kura_engine::Side::Sell),
            (users[1], kura_engine::Side::Buy),
        ] {
            b.run_ok(kura_engine::Command::PlaceOrder {
                user: u,
                market: kura_units::MarketId(0),
                side,
                order: kura_engine::OrderType::Limit {
                    price: kura_units::PriceTicks::new(15_000_000),
                    qty: kura_units::QtyLots::new(1),
                    tif: kura_engine::TimeInForce::Gtc,
                    post_only: false,
                },
                client_id: None,
                stp: None,
            })
            .expect("an order");
        }
        let trade = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a trade in time")
            .expect("open")
            .expect("a message");
        let v: serde_json::Value =
            serde_json::from_str(trade.into_text().expect("text").as_str()).expect("json");
        assert_eq!(
            (v["e"].as_str(), v["s"].as_str()),
            (Some("trade"), Some("BTCJPY"))
        );
    }

    #[test]
    fn idle_connections_hold_small_read_buffers() {
        // The bound the constant documents: every allowed connection's read buffer.
        let c = WsConfig::default();
        assert!(c.read_buffer_bytes <= 4 * 1024);
        assert!(c.read_buffer_bytes * c.connections_max <= 64 << 20);
        assert!(c.write_buffer_bytes * c.connections_max <= 160 << 20);
    }

    #[tokio::test]
    async fn the_largest_message_still_arrives_through_a_small_read_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = Router::new().route("/", get(echo_lengths));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .expect("connect");
        for len in [1, READ_BUFFER_BYTES + 1, MESSAGE_BYTES_MAX] {
            ws.send(ClientMessage::text("x".repeat(len)))
                .await
                .expect("send");
            let answer = ws.next().await.expect("an answer").expect("a message");
            assert_eq!(answer.into_text().expect("text").as_str(), len.to_string());
        }
        // One byte over the limit still ends the connection.
        let _ = ws
            .send(ClientMessage::text("x".repeat(MESSAGE_BYTES_MAX + 1)))
            .await;
        let end = ws.next().await;
        assert!(
            !matches!(end, Some(Ok(ClientMessage::Text(_)))),
            "an oversized message was answered: {end:?}"
        );
    }
}
