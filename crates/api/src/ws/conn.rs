//! One WebSocket connection: a reader loop that owns the session state and a writer
//! task behind a bounded queue.
//!
//! The reader loop selects over the client's messages, the event feed, the ping timer
//! and the flush timer (partial books, tickers). Everything it sends goes through
//! [`Outbox`], a bounded channel to the writer: when the channel is full the client is
//! too slow, and the connection is closed with a reason instead of buffering more.
//! Closing asks the writer (over a one-shot channel that it watches even while a
//! write is stuck) to send the close frame, waiting at most [`CLOSE_WAIT`], and to drop
//! the socket.

use super::market::{MarketStreams, StreamName};
use super::user::UserStream;
use super::{ConnectionSlot, Hub};
use crate::backend::Backend;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use kura_units::UserId;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

/// How long the writer tries to deliver the close frame to a client that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// The period of the flush timer (the fastest partial-book / book-ticker rate).
const FLUSH_PERIOD: Duration = Duration::from_millis(100);

/// Close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TRY_AGAIN: u16 = 1013;

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

/// The sending side: a bounded queue to the writer task.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Message>,
    kill: Option<oneshot::Sender<CloseFrame>>,
    limit: usize,
}

impl Outbox {
    /// Queue one JSON message; a full queue closes the connection (slow consumer).
    pub(crate) fn send(&mut self, value: &Value) -> Result<(), Closing> {
        self.send_message(Message::Text(Utf8Bytes::from(value.to_string())))
    }

    fn send_message(&mut self, message: Message) -> Result<(), Closing> {
        if self.kill.is_none() {
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
                self.close(CLOSE_POLICY, &reason);
                Err(Closing)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.kill = None;
                Err(Closing)
            }
        }
    }

    /// Close the connection with `code` and `reason` (once).
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            });
        }
    }
}

/// Send queued messages until the queue ends or a close is asked for.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    mut kill: oneshot::Receiver<CloseFrame>,
    slot: ConnectionSlot,
) {
    let close_frame = loop {
        tokio::select! {
            biased;
            frame = &mut kill => break frame.ok(),
            message = rx.recv() => {
                let Some(message) = message else { break None };
                tokio::select! {
                    biased;
                    frame = &mut kill => break frame.ok(),
                    sent = sink.send(message) => if sent.is_err() { break None },
                }
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
    pub(crate) backend: B,
    pub(crate) hub: Arc<Hub>,
    pub(crate) markets: MarketStreams,
    pub(crate) user: Option<UserStream>,
    mode_ws_api: Option<IpAddr>,
    listen_key: Option<String>,
}

/// Serve one upgraded connection until it closes.
pub(crate) async fn run<B: Backend>(
    socket: WebSocket,
    backend: B,
    hub: Arc<Hub>,
    mode: Mode,
    slot: ConnectionSlot,
) {
    let config = hub.config().clone();
    // The feed first: every batch published from here on reaches this connection.
    let mut feed = backend.subscribe();
    let (sink, mut incoming) = socket.split();
    let (tx, rx) = mpsc::channel(config.send_queue_max.max(1));
    let (kill_tx, kill_rx) = oneshot::channel();
    tokio::spawn(write_loop(sink, rx, kill_rx, slot));
    let mut out = Outbox {
        tx,
        kill: Some(kill_tx),
        limit: config.send_queue_max,
    };
    let mut session = Session {
        backend: backend.clone(),
        hub: Arc::clone(&hub),
        markets: MarketStreams::new(false, config.subscriptions_max),
        user: None,
        mode_ws_api: None,
        listen_key: None,
    };
    let started = match mode {
        Mode::Market { combined, streams } => {
            session.markets.combined = combined;
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
        return;
    }

    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut flush = tokio::time::interval(FLUSH_PERIOD);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
                            out.close(CLOSE_TOO_BIG, "message too big");
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
                                    out.close(CLOSE_POLICY, &format!(
                                        "too many messages: at most {} per second",
                                        config.messages_per_second
                                    ));
                                    Err(Closing)
                                }
                            }
                            Message::Binary(_) => {
                                out.close(CLOSE_POLICY, "binary messages are not accepted");
                                Err(Closing)
                            }
                            Message::Ping(_) => {
                                if bucket.take(Instant::now()) {
                                    Ok(()) // the socket answers pings itself
                                } else {
                                    out.close(CLOSE_POLICY, "too many pings");
                                    Err(Closing)
                                }
                            }
                            Message::Pong(_) => Ok(()),
                            Message::Close(_) => break,
                        }
                    }
                }
            }
            batch = feed.recv() => match batch {
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
            _ = flush.tick() => session.flush(&mut out).await,
        };
        if step.is_err() {
            break;
        }
    }
    out.close(CLOSE_NORMAL, "");
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
        self.markets
            .subscribe(&self.backend, names)
            .await
            .map(drop)
            .map_err(|_| Closing)
    }

    async fn start_user(&mut self, user: UserId, wrapped: bool) -> Result<(), Closing> {
        let stream = UserStream::start(&self.backend, user, wrapped)
            .await
            .map_err(|_| Closing)?;
        self.user = Some(stream);
        Ok(())
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
                let mut names = Vec::with_capacity(list.len());
                for p in list {
                    match p.as_str().and_then(StreamName::parse) {
                        Some(n) => names.push(n),
                        None => {
                            return out.send(&market_error(
                                2,
                                "Invalid request: invalid stream",
                                &id,
                            ))
                        }
                    }
                }
                if method == "UNSUBSCRIBE" {
                    self.markets.unsubscribe(&names);
                    return out.send(&json!({ "result": null, "id": id }));
                }
                match self.markets.subscribe(&self.backend, names).await {
                    Ok(true) => out.send(&json!({ "result": null, "id": id })),
                    Ok(false) => out.send(&market_error(
                        2,
                        &format!(
                            "Invalid request: too many subscriptions (at most {} per connection)",
                            self.markets.limit()
                        ),
                        &id,
                    )),
                    Err(_) => {
                        out.close(CLOSE_TRY_AGAIN, "the exchange is unavailable");
                        Err(Closing)
                    }
                }
            }
            "LIST_SUBSCRIPTIONS" => out.send(&json!({ "result": self.markets.list(), "id": id })),
            "SET_PROPERTY" => {
                let pair = params.and_then(Value::as_array);
                match pair.map(|p| (p.first().and_then(Value::as_str), p.get(1))) {
                    Some((Some("combined"), Some(Value::Bool(b)))) => {
                        self.markets.combined = *b;
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
                    out.send(&json!({ "result": self.markets.combined, "id": id }))
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
        self.markets.on_batch(batch, out)?;
        if let Some(user) = self.user.as_mut() {
            user.on_batch(&self.backend, batch, out).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, out: &mut Outbox) -> Result<(), Closing> {
        self.markets.flush(&self.backend, out).await
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
