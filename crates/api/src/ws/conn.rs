//! One WebSocket connection: a reader loop that owns the session state and a writer
//! task behind a bounded queue.
//!
//! Everything sent to the client goes through the connection's [`Peer`]: a bounded
//! channel to the writer task, shared by the connection's own task (answers, user-data
//! events) and the stream hub ([`super::streams`], market events rendered once for
//! every subscriber). Queueing is a `try_send` of a message whose bytes may be shared
//! with other connections; when the queue is full the client is too slow, and the
//! connection is closed with a reason instead of buffering more, whoever was sending.
//! Closing asks the writer (over a one-shot channel that it watches even while a write
//! is stuck) to send the close frame, waiting at most [`CLOSE_WAIT`], and to drop the
//! socket; it also wakes the reader loop, which then ends.
//!
//! The reader loop selects over the client's messages, the ping timer, the peer being
//! closed, the server shutting down and, only while a user-data stream runs, the event
//! feed. Market-only connections hold no feed receiver: the hub is the one consumer of
//! the feed for them.

use super::market::{StreamName, Subscriptions};
use super::streams::Streams;
use super::user::UserStream;
use super::{ConnectionSlot, Hub};
use crate::backend::Backend;
use crate::feed::Published;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use kura_units::UserId;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::time::{Duration, Instant};

/// How long the writer tries to deliver the close frame to a client that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Messages the writer hands to the socket before flushing it (one write for a burst).
const WRITE_BATCH: usize = 256;
/// A busy connection's socket is flushed at most this often: what arrives meanwhile goes
/// out in the same write. A connection that was quiet for this long is written at once.
const FLUSH_INTERVAL: Duration = Duration::from_millis(5);

/// Close codes (RFC 6455).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
pub(crate) const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
pub(crate) const CLOSE_TRY_AGAIN: u16 = 1013;

/// What a connection serves.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Market streams; `streams` subscribed from the URL.
    Market {
        combined: bool,
        streams: Vec<String>,
    },
    /// One customer's user-data stream, through a listen key; events unwrapped.
    ListenKey { key: String, user: UserId },
    /// The WS-API (user-data subscription by signature).
    WsApi { ip: IpAddr },
}

/// The connection is closing; stop processing.
#[derive(Debug)]
pub(crate) struct Closing;

/// The sending side of one connection, shared by its own task and the stream hub.
#[derive(Debug)]
pub(crate) struct Peer {
    id: u64,
    tx: mpsc::Sender<Message>,
    kill: Mutex<Option<oneshot::Sender<CloseFrame>>>,
    /// Set once, by whoever closes first.
    closed: AtomicBool,
    /// Wakes the connection's reader loop when someone else closed it.
    closed_wake: Notify,
    /// Market events wrapped `{"stream":…,"data":…}` (`/stream`, `SET_PROPERTY`).
    combined: AtomicBool,
    /// Closed for breaking a rule (an offence of its address).
    broke_rule: AtomicBool,
    limit: usize,
}

static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

impl Peer {
    /// A peer over `tx` (a channel of `limit` messages) and the writer's kill switch.
    pub(crate) fn new(
        tx: mpsc::Sender<Message>,
        kill: oneshot::Sender<CloseFrame>,
        limit: usize,
    ) -> Peer {
        Peer {
            id: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
            tx,
            kill: Mutex::new(Some(kill)),
            closed: AtomicBool::new(false),
            closed_wake: Notify::new(),
            combined: AtomicBool::new(false),
            broke_rule: AtomicBool::new(false),
            limit,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn combined(&self) -> bool {
        self.combined.load(Ordering::Relaxed)
    }

    pub(crate) fn set_combined(&self, combined: bool) {
        self.combined.store(combined, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queue one text message (its bytes possibly shared with other connections); a
    /// full queue closes the connection (slow consumer).
    pub(crate) fn push_text(&self, text: Utf8Bytes) -> Result<(), Closing> {
        self.push(Message::Text(text))
    }

    fn push(&self, message: Message) -> Result<(), Closing> {
        if self.is_closed() {
            return Err(Closing);
        }
        match self.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let reason = format!(
                    "slow consumer: more than {} messages waiting to be sent",
                    self.limit
                );
                tracing::debug!(%reason, "ws: closing");
                self.close_for_breaking_a_rule(CLOSE_POLICY, &reason);
                Err(Closing)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.close(CLOSE_NORMAL, "");
                Err(Closing)
            }
        }
    }

    /// [`Peer::close`], for breaking one of the connection rules: an offence of the
    /// address (if this close is the first).
    pub(crate) fn close_for_breaking_a_rule(&self, code: u16, reason: &str) {
        if !self.is_closed() {
            self.broke_rule.store(true, Ordering::Relaxed);
        }
        self.close(code, reason);
    }

    /// Whether the connection was closed for breaking a rule.
    fn broke_rule(&self) -> bool {
        self.broke_rule.load(Ordering::Relaxed)
    }

    /// Close the connection with `code` and `reason` (the first close wins).
    pub(crate) fn close(&self, code: u16, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let kill = self.kill.lock().ok().and_then(|mut k| k.take());
        if let Some(kill) = kill {
            let _ = kill.send(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            });
        }
        self.closed_wake.notify_waiters();
    }

    /// Wait until the connection is closed (by anyone).
    async fn closed(&self) {
        loop {
            let woken = self.closed_wake.notified();
            if self.is_closed() {
                return;
            }
            woken.await;
        }
    }
}

/// The connection's own sending side (answers, user-data events).
#[derive(Debug)]
pub(crate) struct Outbox {
    peer: Arc<Peer>,
}

impl Outbox {
    /// Queue one JSON message; a full queue closes the connection (slow consumer).
    pub(crate) fn send(&mut self, value: &Value) -> Result<(), Closing> {
        self.peer.push_text(Utf8Bytes::from(value.to_string()))
    }

    fn send_message(&mut self, message: Message) -> Result<(), Closing> {
        self.peer.push(message)
    }

    /// Close the connection with `code` and `reason` (once).
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.peer.close(code, reason);
    }

    /// Close the connection for breaking a rule (see [`Peer::close_for_breaking_a_rule`]).
    fn close_for_breaking_a_rule(&mut self, code: u16, reason: &str) {
        self.peer.close_for_breaking_a_rule(code, reason);
    }
}

/// Send queued messages until the queue ends or a close is asked for. A burst of
/// queued messages is written with one flush, and a busy connection is flushed at most
/// every [`FLUSH_INTERVAL`] (one system call for many messages, not one each).
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    mut kill: oneshot::Receiver<CloseFrame>,
    slot: ConnectionSlot,
) {
    let mut flushed: Option<Instant> = None;
    let close_frame = loop {
        tokio::select! {
            biased;
            frame = &mut kill => break frame.ok(),
            message = rx.recv() => {
                let Some(message) = message else { break None };
                if let Some(due) = flushed.map(|at| at + FLUSH_INTERVAL) {
                    if due > Instant::now() {
                        tokio::select! {
                            biased;
                            frame = &mut kill => break frame.ok(),
                            () = tokio::time::sleep_until(due) => {}
                        }
                    }
                }
                let write = async {
                    sink.feed(message).await?;
                    for _ in 1..WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(more) => sink.feed(more).await?,
                            Err(_) => break,
                        }
                    }
                    sink.flush().await
                };
                tokio::select! {
                    biased;
                    frame = &mut kill => break frame.ok(),
                    sent = write => if sent.is_err() { break None },
                }
                flushed = Some(Instant::now());
            }
        }
    };
    if let Some(frame) = close_frame {
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
    }
    drop(sink);
    drop(slot);
}

/// The state of one connection.
#[derive(Debug)]
pub(crate) struct Session<B> {
    backend: B,
    hub: Arc<Hub>,
    streams: Streams,
    peer: Arc<Peer>,
    /// The market streams this connection subscribed to (the hub sends them).
    subs: Subscriptions,
    user: Option<UserStream>,
    /// The event feed, held only while a user-data stream runs.
    feed: Option<broadcast::Receiver<Arc<Published>>>,
    mode_ws_api: Option<IpAddr>,
    listen_key: Option<String>,
}

/// The next batch of the feed, if the connection holds one (otherwise never).
async fn next_batch(
    feed: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, RecvError> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

/// Wait for the server to shut down (or the hub to be gone).
async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// Serve one upgraded connection until it closes.
pub(crate) async fn run<B: Backend>(
    socket: WebSocket,
    backend: B,
    hub: Arc<Hub>,
    streams: Streams,
    mode: Mode,
    slot: ConnectionSlot,
) {
    let config = hub.config().clone();
    let address = crate::limits::client_key(slot.ip);
    let (sink, mut incoming) = socket.split();
    let (tx, rx) = mpsc::channel(config.send_queue_max.max(1));
    let (kill_tx, kill_rx) = oneshot::channel();
    tokio::spawn(write_loop(sink, rx, kill_rx, slot));
    let peer = Arc::new(Peer::new(tx, kill_tx, config.send_queue_max));
    hub.register(address, &peer);
    let mut out = Outbox {
        peer: Arc::clone(&peer),
    };
    let mut shutdown = streams.shutdown();
    let mut session = Session {
        backend: backend.clone(),
        hub: Arc::clone(&hub),
        streams,
        peer: Arc::clone(&peer),
        subs: Subscriptions::new(config.subscriptions_max),
        user: None,
        feed: None,
        mode_ws_api: None,
        listen_key: None,
    };
    let started = match mode {
        Mode::Market { combined, streams } => {
            peer.set_combined(combined);
            session.subscribe_initial(&streams).await
        }
        Mode::ListenKey { key, user } => {
            session.listen_key = Some(key);
            session.start_user(user, false).await
        }
        Mode::WsApi { ip } => {
            session.mode_ws_api = Some(ip);
            Ok(())
        }
    };
    if started.is_err() {
        out.close(CLOSE_TRY_AGAIN, "the exchange is unavailable");
        session.leave();
        hub.unregister(address, peer.id());
        return;
    }

    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut last_heard = Instant::now();
    let mut bucket = TokenBucket::new(config.messages_per_second.max(1), Instant::now());

    loop {
        let step: Result<(), Closing> = tokio::select! {
            message = incoming.next() => {
                match message {
                    None => break,
                    Some(Err(e)) => {
                        // Oversized frames end here too.
                        let reason = e.to_string();
                        if reason.contains("too long") || reason.contains("Space limit") {
                            out.close_for_breaking_a_rule(CLOSE_TOO_BIG, "message too big");
                        }
                        break;
                    }
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        match message {
                            Message::Text(text) => {
                                if bucket.take(Instant::now()) {
                                    session.on_text(text.as_str(), &mut out).await
                                } else {
                                    out.close_for_breaking_a_rule(CLOSE_POLICY, &format!(
                                        "too many messages: at most {} per second",
                                        config.messages_per_second
                                    ));
                                    Err(Closing)
                                }
                            }
                            Message::Binary(_) => {
                                out.close_for_breaking_a_rule(
                                    CLOSE_POLICY,
                                    "binary messages are not accepted",
                                );
                                Err(Closing)
                            }
                            Message::Ping(_) => {
                                if bucket.take(Instant::now()) {
                                    Ok(()) // the socket answers pings itself
                                } else {
                                    out.close_for_breaking_a_rule(CLOSE_POLICY, "too many pings");
                                    Err(Closing)
                                }
                            }
                            Message::Pong(_) => Ok(()),
                            Message::Close(_) => break,
                        }
                    }
                }
            }
            batch = next_batch(&mut session.feed) => match batch {
                Ok(batch) => session.on_batch(&batch, &mut out).await,
                Err(RecvError::Lagged(n)) => {
                    out.close(CLOSE_TRY_AGAIN, &format!(
                        "lagged: {n} event batches were missed; reconnect and resynchronise"
                    ));
                    Err(Closing)
                }
                Err(RecvError::Closed) => {
                    out.close(CLOSE_GOING_AWAY, "the server is shutting down");
                    Err(Closing)
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > config.pong_timeout {
                    out.close(CLOSE_POLICY, "no pong received in time");
                    Err(Closing)
                } else {
                    session.on_ping_tick(&mut out).and_then(|()| {
                        out.send_message(Message::Ping(axum::body::Bytes::new()))
                    })
                }
            }
            // Closed by the hub (slow consumer, lagged hub, a ban of the address) or by
            // the writer.
            _ = peer.closed() => Err(Closing),
            () = shut_down(&mut shutdown) => {
                out.close(CLOSE_GOING_AWAY, "the server is shutting down");
                Err(Closing)
            }
        };
        if step.is_err() {
            break;
        }
    }
    out.close(CLOSE_NORMAL, "");
    hub.unregister(address, peer.id());
    if peer.broke_rule() {
        hub.offence(address, backend.now_ms());
    }
    session.leave();
}

/// Incoming-message budget: `rate` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    rate: u32,
    /// Tokens in thousandths.
    milli_tokens: u64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            milli_tokens: u64::from(rate) * 1000,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed_ms =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        let cap = u64::from(self.rate) * 1000;
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed_ms.saturating_mul(u64::from(self.rate)))
            .min(cap);
        self.at = now;
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

// ---- requests --------------------------------------------------------------------

/// Binance's error answer on a market connection.
pub(crate) fn market_error(code: i64, msg: &str, id: &Value) -> Value {
    json!({ "error": { "code": code, "msg": msg }, "id": id })
}

impl<B: Backend> Session<B> {
    async fn subscribe_initial(&mut self, streams: &[String]) -> Result<(), Closing> {
        let names: Vec<StreamName> = streams
            .iter()
            .filter_map(|s| StreamName::parse(s))
            .collect();
        let texts: Vec<&str> = names.iter().map(StreamName::text).collect();
        // Over the limit (only a caller that skipped the URL check): nothing subscribed.
        if !self.subs.add(&texts) {
            return Ok(());
        }
        self.streams.subscribe(&self.peer, names, None).await
    }

    async fn start_user(&mut self, user: UserId, wrapped: bool) -> Result<(), Closing> {
        // The feed first: every batch published from here on reaches this connection.
        self.feed = Some(self.backend.subscribe());
        let stream = UserStream::start(&self.backend, user, wrapped)
            .await
            .map_err(|_| Closing)?;
        self.user = Some(stream);
        Ok(())
    }

    /// Tell the hub this connection's streams are gone (it also finds closed peers by
    /// itself).
    fn leave(&mut self) {
        let names = self.subs.take();
        if !names.is_empty() {
            self.streams.leave(self.peer.id(), names);
        }
    }

    async fn on_text(&mut self, text: &str, out: &mut Outbox) -> Result<(), Closing> {
        if let Some(ip) = self.mode_ws_api {
            return self.on_ws_api(text, ip, out).await;
        }
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return out.send(&market_error(
                3,
                "Invalid JSON: expected value",
                &Value::Null,
            ));
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_null() || id.is_u64()) {
            return out.send(&market_error(
                2,
                "Invalid request: request ID must be an unsigned integer",
                &Value::Null,
            ));
        }
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            return out.send(&market_error(
                2,
                "Invalid request: missing field method",
                &id,
            ));
        };
        let params = request.get("params");
        match method {
            "SUBSCRIBE" | "UNSUBSCRIBE" => {
                let Some(list) = params.and_then(Value::as_array) else {
                    return out.send(&market_error(
                        2,
                        "Invalid request: missing field params",
                        &id,
                    ));
                };
                // Checked whole before anything is allocated per name.
                let mut texts: Vec<&str> = Vec::with_capacity(list.len());
                for p in list {
                    match p.as_str().filter(|t| StreamName::is_valid(t)) {
                        Some(t) => texts.push(t),
                        None => {
                            return out.send(&market_error(
                                2,
                                "Invalid request: invalid stream",
                                &id,
                            ))
                        }
                    }
                }
                // The hub queues the acknowledgement: nothing of a stream comes before
                // its SUBSCRIBE's answer, nothing after its UNSUBSCRIBE's.
                let ack = Utf8Bytes::from(json!({ "result": null, "id": id }).to_string());
                if method == "UNSUBSCRIBE" {
                    let names: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
                    self.subs.remove(&names);
                    return self.streams.unsubscribe(&self.peer, names, ack).await;
                }
                if !self.subs.add(&texts) {
                    return out.send(&market_error(
                        2,
                        &format!(
                            "Invalid request: too many subscriptions (at most {} per connection)",
                            self.subs.limit()
                        ),
                        &id,
                    ));
                }
                let names: Vec<StreamName> =
                    texts.iter().filter_map(|t| StreamName::parse(t)).collect();
                self.streams.subscribe(&self.peer, names, Some(ack)).await
            }
            "LIST_SUBSCRIPTIONS" => out.send(&json!({ "result": self.subs.list(), "id": id })),
            "SET_PROPERTY" => {
                let pair = params.and_then(Value::as_array);
                match pair.map(|p| (p.first().and_then(Value::as_str), p.get(1))) {
                    Some((Some("combined"), Some(Value::Bool(b)))) => {
                        self.peer.set_combined(*b);
                        out.send(&json!({ "result": null, "id": id }))
                    }
                    Some((Some("combined"), _)) => out.send(&market_error(
                        1,
                        "Invalid value type: expected Boolean",
                        &id,
                    )),
                    _ => out.send(&market_error(0, "Unknown property", &id)),
                }
            }
            "GET_PROPERTY" => {
                let name = params
                    .and_then(Value::as_array)
                    .and_then(|p| p.first())
                    .and_then(Value::as_str);
                if name == Some("combined") {
                    out.send(&json!({ "result": self.peer.combined(), "id": id }))
                } else {
                    out.send(&market_error(0, "Unknown property", &id))
                }
            }
            other => out.send(&market_error(
                2,
                &format!(
                    "Invalid request: unknown variant {other}, expected one of SUBSCRIBE, \
                     UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"
                ),
                &id,
            )),
        }
    }

    async fn on_ws_api(&mut self, text: &str, ip: IpAddr, out: &mut Outbox) -> Result<(), Closing> {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return out.send(&super::user::ws_api_error(
                &Value::Null,
                400,
                -1100,
                "Malformed request: not a JSON object.",
            ));
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        match method {
            "userDataStream.subscribe.signature" => {
                match super::user::verify_subscription(&self.backend, &params, ip) {
                    Ok(user) => {
                        if self.user.as_ref().is_some_and(|u| u.user() != user) {
                            return out.send(&super::user::ws_api_error(
                                &id,
                                400,
                                -1022,
                                "Signature for this request is not valid.",
                            ));
                        }
                        if self.user.is_none() && self.start_user(user, true).await.is_err() {
                            out.close(CLOSE_TRY_AGAIN, "the exchange is unavailable");
                            return Err(Closing);
                        }
                        out.send(&json!({
                            "id": id,
                            "status": 200,
                            "result": { "subscriptionId": super::user::SUBSCRIPTION_ID },
                        }))
                    }
                    Err(e) => out.send(&super::user::ws_api_error(&id, e.status, e.code, &e.msg)),
                }
            }
            "userDataStream.unsubscribe" => {
                self.user = None;
                self.feed = None;
                out.send(&json!({ "id": id, "status": 200, "result": {} }))
            }
            "ping" => out.send(&json!({ "id": id, "status": 200, "result": {} })),
            "time" => out.send(&json!({
                "id": id,
                "status": 200,
                "result": { "serverTime": self.backend.now_ms() },
            })),
            _ => out.send(&super::user::ws_api_error(
                &id,
                400,
                -1100,
                "Illegal characters found in parameter 'method'; legal range is \
                 'userDataStream.subscribe.signature', 'userDataStream.unsubscribe', 'ping', 'time'.",
            )),
        }
    }

    async fn on_batch(
        &mut self,
        batch: &crate::feed::Published,
        out: &mut Outbox,
    ) -> Result<(), Closing> {
        if let Some(user) = self.user.as_mut() {
            user.on_batch(&self.backend, batch, out).await?;
        }
        Ok(())
    }

    /// Every ping: a listen-key connection whose key expired is told so and closed.
    fn on_ping_tick(&mut self, out: &mut Outbox) -> Result<(), Closing> {
        let Some(key) = self.listen_key.as_deref() else {
            return Ok(());
        };
        let now = self.backend.now_ms();
        if self.hub.listen_key_user(key, now).is_some() {
            return Ok(());
        }
        out.send(&json!({ "e": "listenKeyExpired", "E": now, "listenKey": key }))?;
        out.close(CLOSE_NORMAL, "listen key expired");
        Err(Closing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_rate_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, t0);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(200)));
        assert!(!b.take(t0 + Duration::from_millis(200)));
        assert!((0..5).all(|_| b.take(t0 + Duration::from_secs(10))));
        assert!(!b.take(t0 + Duration::from_secs(10)));
    }
}
