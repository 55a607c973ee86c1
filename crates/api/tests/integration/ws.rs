//! The WebSocket streams end to end: the router served on a loopback socket over
//! [`MemoryBackend`], driven by a real WebSocket client. Market streams (acks, depth
//! sync against REST, every stream's fields after a trade), the user-data stream (WS-API
//! signature, listen keys, isolation between customers) and the bounds (slow consumer,
//! lagged feed, subscription, message-rate and connection limits).

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use kura_api::auth::{ApiKeyId, HmacSecret, Permissions};
use kura_api::backend::Backend;
use kura_api::memory::MemoryBackend;
use kura_api::ws::{Hub, WsConfig};
use kura_api::MasterKey;
use kura_engine::genesis::{BTC, JPY};
use kura_engine::{Command, OrderRef, OrderType, Side, TimeInForce};
use kura_units::{ClientOrderId, MarketId, OrderId, PriceTicks, QtyLots, UserId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

const NOW: u64 = 1_700_000_000_000;
const BTCJPY: MarketId = MarketId(0);
const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: SocketAddr,
    b: MemoryBackend,
    /// The served router (its clones share the listen keys and connection counts).
    app: axum::Router,
    next_key: u64,
}

struct User {
    id: UserId,
    key: ApiKeyId,
    secret: HmacSecret,
}

const ALL: Permissions = Permissions {
    read: true,
    trade: true,
    withdraw: false,
};

/// The full router (REST and WebSocket) on 127.0.0.1:0.
async fn serve() -> Server {
    let b = MemoryBackend::new(MasterKey::from_bytes([7; 32]), NOW).unwrap();
    let app = kura_api::router(b.clone());
    let addr = spawn(app.clone()).await;
    Server {
        addr,
        b,
        app,
        next_key: 1,
    }
}

/// Only the WebSocket routes, over `hub` (small limits).
async fn serve_ws(config: WsConfig) -> (Server, Arc<Hub>) {
    let b = MemoryBackend::new(MasterKey::from_bytes([7; 32]), NOW).unwrap();
    let hub = Hub::new(config);
    let app = kura_api::ws::router(b.clone(), Arc::clone(&hub));
    let addr = spawn(app.clone()).await;
    (
        Server {
            addr,
            b,
            app,
            next_key: 1,
        },
        hub,
    )
}

async fn spawn(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

impl Server {
    fn user(&mut self) -> User {
        let id = self.b.create_user().unwrap();
        self.b.deposit(id, BTC, 1_000_000_000).unwrap();
        self.b.deposit(id, JPY, 1_000_000_000).unwrap();
        let (key, secret) = self.b.add_hmac_key(id, self.next_key, ALL).unwrap();
        self.next_key += 1;
        User { id, key, secret }
    }

    async fn connect(&self, path: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", self.addr))
            .await
            .unwrap();
        ws
    }

    fn limit(
        &self,
        user: &User,
        side: Side,
        price: u64,
        lots: u64,
        client: Option<&str>,
    ) -> Vec<kura_engine::Event> {
        self.b
            .run(Command::PlaceOrder {
                user: user.id,
                market: BTCJPY,
                side,
                order: OrderType::Limit {
                    price: PriceTicks::new(price),
                    qty: QtyLots::new(lots),
                    tif: TimeInForce::Gtc,
                    post_only: false,
                },
                client_id: client.map(|c| ClientOrderId::parse(c).unwrap()),
                stp: None,
            })
            .unwrap()
            .result
            .unwrap_or_default()
    }

    /// A REST GET through the same router, in process.
    async fn rest(&self, uri: &str, key: Option<&ApiKeyId>) -> (StatusCode, Value) {
        let app = self.app.clone();
        let mut req = Request::get(uri);
        if let Some(k) = key {
            req = req.header("X-MBX-APIKEY", k.as_str());
        }
        self.send(app, req.body(Body::empty()).unwrap()).await
    }

    async fn send(&self, app: axum::Router, req: Request<Body>) -> (StatusCode, Value) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn signed_get(&self, u: &User, path: &str, params: &str) -> Value {
        let sep = if params.is_empty() { "" } else { "&" };
        let payload = format!(
            "{params}{sep}timestamp={}&recvWindow=10000",
            self.b.now_ms()
        );
        let sig = u.secret.sign(payload.as_bytes());
        let (status, body) = self
            .rest(&format!("{path}?{payload}&signature={sig}"), Some(&u.key))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON message (pings skipped); panics on close or after [`WAIT`].
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Read until the server closes; the close frame's code and reason, and how many
/// messages came before it.
async fn until_close(ws: &mut Ws) -> (Option<(CloseCode, String)>, usize) {
    let mut before = 0;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => {
                return (
                    frame.map(|f| (f.code, f.reason.as_str().to_owned())),
                    before,
                )
            }
            Some(Ok(_)) => before += 1,
            Some(Err(_)) | None => return (None, before),
        }
    }
}

/// Messages until one satisfies `pred` (which is returned).
async fn until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next(ws).await;
        if pred(&v) {
            return v;
        }
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// ---- market streams ----------------------------------------------------------------

#[tokio::test]
async fn subscribe_is_acknowledged_every_time_and_bad_requests_get_binance_errors() {
    let srv = serve().await;
    let mut ws = srv.connect("/ws/0").await;
    for id in [1, 2] {
        send(
            &mut ws,
            json!({"method":"SUBSCRIBE","params":["btcjpy@depth@100ms"],"id":id}),
        )
        .await;
        assert_eq!(next(&mut ws).await, json!({"result": null, "id": id}));
    }
    send(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":3})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"result": ["btcjpy@depth@100ms"], "id": 3})
    );
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcjpy@nonsense"],"id":4}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        json!({"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 4})
    );
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next(&mut ws).await["error"]["code"], 3);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the message rate
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcjpy@trade"],"id":"x"}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await["error"]["msg"],
        "Invalid request: request ID must be an unsigned integer"
    );
    send(&mut ws, json!({"method":"FROB","id":5})).await;
    let e = next(&mut ws).await;
    assert_eq!(
        (e["error"]["code"].as_i64(), e["id"].as_i64()),
        (Some(2), Some(5))
    );
    send(
        &mut ws,
        json!({"method":"UNSUBSCRIBE","params":["btcjpy@depth@100ms"],"id":6}),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({"result": null, "id": 6}));
    send(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":7})).await;
    assert_eq!(next(&mut ws).await, json!({"result": [], "id": 7}));
}

/// Apply `[[price, qty], …]` to one side of a local book (qty zero removes).
fn apply(side: &mut BTreeMap<String, String>, levels: &Value) {
    for l in levels.as_array().unwrap() {
        let (p, q) = (s(&l[0]).to_owned(), s(&l[1]).to_owned());
        if q.trim_end_matches('0').trim_end_matches('.') == "0" {
            side.remove(&p);
        } else {
            side.insert(p, q);
        }
    }
}

fn book_of(depth: &Value) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut bids, mut asks) = (BTreeMap::new(), BTreeMap::new());
    apply(&mut bids, &depth["bids"]);
    apply(&mut asks, &depth["asks"]);
    (bids, asks)
}

#[tokio::test]
async fn depth_diffs_applied_to_the_rest_snapshot_reproduce_the_rest_book() {
    let mut srv = serve().await;
    let users: Vec<User> = (0..3).map(|_| srv.user()).collect();
    // Some book before the snapshot.
    for i in 0..5 {
        srv.limit(&users[0], Side::Buy, 14_990_000 - i * 10_000, 3, None);
        srv.limit(&users[1], Side::Sell, 15_010_000 + i * 10_000, 3, None);
    }
    let mut ws = srv.connect("/ws/0").await;
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcjpy@depth@100ms"],"id":1}),
    )
    .await;
    assert_eq!(next(&mut ws).await["id"], 1);
    let (_, snapshot) = srv
        .rest("/api/v3/depth?symbol=BTCJPY&limit=5000", None)
        .await;
    let nonce = snapshot["lastUpdateId"].as_u64().unwrap();
    let (mut bids, mut asks) = book_of(&snapshot);

    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut trades = 0;
    for _ in 0..400 {
        let u = &users[(rnd() % 3) as usize];
        let side = if rnd() % 2 == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 14_950_000 + (rnd() % 10) * 10_000;
        if rnd() % 5 == 0 {
            srv.b
                .run(Command::CancelOrder {
                    user: u.id,
                    market: BTCJPY,
                    order: OrderRef::Id(OrderId(1 + rnd() % 300)),
                })
                .unwrap();
        } else {
            let events = srv.limit(u, side, price, 1 + rnd() % 9, None);
            trades += events
                .iter()
                .filter(|e| matches!(e.kind, kura_engine::EventKind::Trade { .. }))
                .count();
        }
    }
    assert!(trades > 20, "the orders traded ({trades})");
    let (_, rest) = srv
        .rest("/api/v3/depth?symbol=BTCJPY&limit=5000", None)
        .await;
    let target = rest["lastUpdateId"].as_u64().unwrap();
    assert!(target > nonce);

    // Binance's recipe: drop u <= nonce; the first applied has U <= nonce+1 <= u; then
    // every U is the previous u + 1.
    let mut prev_u: Option<u64> = None;
    loop {
        let d = next(&mut ws).await;
        assert_eq!(d["e"], "depthUpdate");
        assert_eq!(d["s"], "BTCJPY");
        assert!(d["E"].as_u64().is_some());
        let (first, last) = (d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap());
        assert!(first <= last);
        if let Some(p) = prev_u {
            assert_eq!(first, p + 1, "no gap between diffs");
        }
        prev_u = Some(last);
        if last <= nonce {
            continue;
        }
        assert!(first <= nonce + 1 || prev_u.is_some());
        apply(&mut bids, &d["b"]);
        apply(&mut asks, &d["a"]);
        if last == target {
            break;
        }
        assert!(last < target);
    }
    assert_eq!(
        (bids, asks),
        book_of(&rest),
        "the local book is REST's book"
    );
}

#[tokio::test]
async fn a_skipped_update_id_is_detectable_by_the_client() {
    // Dropping one diff from the sequence breaks the U == previous u + 1 rule, which
    // is what a client checks. One order per 100 ms flush: one message each.
    let mut srv = serve().await;
    let (a, b) = (srv.user(), srv.user());
    let mut ws = srv.connect("/ws/btcjpy@depth@100ms").await;
    send(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":1})).await;
    assert_eq!(next(&mut ws).await["result"], json!(["btcjpy@depth@100ms"]));
    let mut ids = Vec::new();
    for i in 0..4 {
        if i < 3 {
            srv.limit(&a, Side::Buy, 14_000_000 + i, 1, None);
        } else {
            srv.limit(&b, Side::Sell, 14_000_000, 1, None);
        }
        let d = next(&mut ws).await;
        ids.push((d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap()));
    }
    assert!(ids.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{ids:?}");
    let skipped: Vec<_> = [ids[0], ids[2], ids[3]].to_vec();
    assert!(
        skipped.windows(2).any(|w| w[1].0 != w[0].1 + 1),
        "a missing diff shows as a gap"
    );
}

#[tokio::test]
async fn trade_kline_ticker_and_book_streams_after_a_trade() {
    let mut srv = serve().await;
    let (maker, taker) = (srv.user(), srv.user());
    srv.limit(&maker, Side::Buy, 14_990_000, 7, None);
    let streams = [
        "btcjpy@trade",
        "btcjpy@aggTrade",
        "btcjpy@kline_1m",
        "btcjpy@miniTicker",
        "btcjpy@ticker",
        "btcjpy@bookTicker",
        "btcjpy@depth5@100ms",
        "!miniTicker@arr",
    ];
    let mut ws = srv
        .connect(&format!("/stream?streams={}", streams.join("/")))
        .await;
    // Subscribed from the URL: wait until the subscription is live.
    send(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":1})).await;
    until(&mut ws, |v| v["id"] == 1).await;
    srv.limit(&maker, Side::Sell, 15_010_000, 4, None);
    let events = srv.limit(&taker, Side::Sell, 14_990_000, 3, None);
    let trade_id = events
        .iter()
        .find_map(|e| match e.kind {
            kura_engine::EventKind::Trade { trade, .. } => Some(trade.0),
            _ => None,
        })
        .expect("a trade");

    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while seen.len() < streams.len() && tokio::time::Instant::now() < deadline {
        let v = next(&mut ws).await;
        let stream = s(&v["stream"]).to_owned();
        let data = v["data"].clone();
        // Keep the first message that shows the trade.
        let shows_trade = match stream.as_str() {
            "btcjpy@bookTicker" => data["B"] == "0.00004000",
            "btcjpy@depth5@100ms" => data["bids"][0] == json!(["14990000", "0.00004000"]),
            "btcjpy@kline_1m" => data["k"]["n"] == 1,
            "!miniTicker@arr" => data
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t["c"] == "14990000")),
            "btcjpy@miniTicker" | "btcjpy@ticker" => data["c"] == "14990000",
            _ => true,
        };
        if shows_trade {
            seen.entry(stream).or_insert(data);
        }
    }
    assert_eq!(
        seen.len(),
        streams.len(),
        "every stream spoke: {:?}",
        seen.keys()
    );

    let t = &seen["btcjpy@trade"];
    assert_eq!(
        (&t["e"], &t["s"], &t["t"], &t["p"], &t["q"], &t["m"], &t["M"]),
        (
            &json!("trade"),
            &json!("BTCJPY"),
            &json!(trade_id),
            &json!("14990000"),
            &json!("0.00003000"),
            &json!(true),
            &json!(true)
        )
    );
    assert_eq!(t["T"], NOW);
    let a = &seen["btcjpy@aggTrade"];
    assert_eq!(
        (&a["e"], &a["a"], &a["f"], &a["l"]),
        (
            &json!("aggTrade"),
            &json!(trade_id),
            &json!(trade_id),
            &json!(trade_id)
        )
    );
    assert_eq!(
        (&a["p"], &a["q"], &a["m"]),
        (&json!("14990000"), &json!("0.00003000"), &json!(true))
    );

    let k = &seen["btcjpy@kline_1m"]["k"];
    let open = NOW / 60_000 * 60_000;
    assert_eq!(
        (&k["t"], &k["T"], &k["s"], &k["i"]),
        (
            &json!(open),
            &json!(open + 59_999),
            &json!("BTCJPY"),
            &json!("1m")
        )
    );
    assert_eq!(
        (&k["f"], &k["L"], &k["n"], &k["x"]),
        (&json!(trade_id), &json!(trade_id), &json!(1), &json!(false))
    );
    for f in ["o", "c", "h", "l"] {
        assert_eq!(k[f], "14990000", "{f}");
    }
    assert_eq!(
        (&k["v"], &k["q"], &k["V"], &k["Q"]),
        (
            &json!("0.00003000"),
            &json!("449"),
            &json!("0.00000000"),
            &json!("0")
        )
    );

    let m = &seen["btcjpy@miniTicker"];
    assert_eq!(
        (&m["e"], &m["s"], &m["o"], &m["h"], &m["l"], &m["v"], &m["q"]),
        (
            &json!("24hrMiniTicker"),
            &json!("BTCJPY"),
            &json!("14990000"),
            &json!("14990000"),
            &json!("14990000"),
            &json!("0.00003000"),
            &json!("449")
        )
    );
    let full = &seen["btcjpy@ticker"];
    assert_eq!(full["e"], "24hrTicker");
    // The ticker is REST's ticker/24hr under Binance's short names.
    let (_, rest) = srv.rest("/api/v3/ticker/24hr?symbol=BTCJPY", None).await;
    for (short, long) in [
        ("p", "priceChange"),
        ("P", "priceChangePercent"),
        ("w", "weightedAvgPrice"),
        ("c", "lastPrice"),
        ("Q", "lastQty"),
        ("b", "bidPrice"),
        ("B", "bidQty"),
        ("a", "askPrice"),
        ("A", "askQty"),
        ("o", "openPrice"),
        ("h", "highPrice"),
        ("l", "lowPrice"),
        ("v", "volume"),
        ("q", "quoteVolume"),
        ("F", "firstId"),
        ("L", "lastId"),
        ("n", "count"),
    ] {
        assert_eq!(full[short], rest[long], "{short} = {long}");
    }
    let arr = &seen["!miniTicker@arr"];
    assert!(arr.as_array().unwrap().iter().any(|t| t["s"] == "BTCJPY"));

    let bt = &seen["btcjpy@bookTicker"];
    assert_eq!(
        (&bt["s"], &bt["b"], &bt["B"], &bt["a"], &bt["A"]),
        (
            &json!("BTCJPY"),
            &json!("14990000"),
            &json!("0.00004000"),
            &json!("15010000"),
            &json!("0.00004000")
        )
    );
    assert!(bt["u"].as_u64().is_some());
    let d5 = &seen["btcjpy@depth5@100ms"];
    let (_, depth) = srv.rest("/api/v3/depth?symbol=BTCJPY&limit=5", None).await;
    assert_eq!((&d5["bids"], &d5["asks"]), (&depth["bids"], &depth["asks"]));
    assert!(d5["lastUpdateId"].as_u64().is_some());
}

// ---- user data ---------------------------------------------------------------------

/// `userDataStream.subscribe.signature` params signed as CCXT signs them.
fn subscribe_request(u: &User, now: u64, good: bool) -> Value {
    let payload = format!("apiKey={}&recvWindow=10000&timestamp={now}", u.key.as_str());
    let mut sig = u.secret.sign(payload.as_bytes());
    if !good {
        sig = sig.replace('a', "b").replace('1', "2");
    }
    json!({"id": "1", "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": u.key.as_str(), "recvWindow": 10000, "timestamp": now, "signature": sig}})
}

#[tokio::test]
async fn ws_api_user_stream_reports_orders_fills_and_balances_of_its_customer_only() {
    let mut srv = serve().await;
    let (alice, bob, carol) = (srv.user(), srv.user(), srv.user());
    let now = srv.b.now_ms();

    let mut bad = srv.connect("/ws-api/v3").await;
    send(&mut bad, subscribe_request(&alice, now, false)).await;
    let e = next(&mut bad).await;
    assert_eq!(
        (&e["id"], &e["status"], &e["error"]["code"]),
        (&json!("1"), &json!(400), &json!(-1022))
    );
    assert!(e["error"]["msg"].is_string());

    let mut ws = srv.connect("/ws-api/v3").await;
    send(&mut ws, subscribe_request(&alice, now, true)).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"id": "1", "status": 200, "result": {"subscriptionId": 0}})
    );
    let mut other = srv.connect("/ws-api/v3").await;
    send(&mut other, subscribe_request(&carol, now, true)).await;
    assert_eq!(next(&mut other).await["status"], 200);

    // Carol's own order (not Alice's business).
    srv.limit(&carol, Side::Buy, 14_000_000, 2, Some("carol-1"));
    // Alice rests 5 lots; Bob takes 3 of them, then Alice's remaining 2.
    let placed = srv.limit(&alice, Side::Sell, 15_000_000, 5, Some("alice-1"));
    let alice_order = placed
        .iter()
        .find_map(|e| match e.kind {
            kura_engine::EventKind::OrderAccepted { order, .. } => Some(order.0),
            _ => None,
        })
        .unwrap();
    let mut events = Vec::new();
    let wrapped = |v: Value| {
        assert_eq!(v["subscriptionId"], 0, "{v}");
        v["event"].clone()
    };
    let new = wrapped(next(&mut ws).await);
    assert_eq!(
        (&new["e"], &new["x"], &new["X"], &new["c"], &new["S"], &new["o"], &new["f"]),
        (
            &json!("executionReport"),
            &json!("NEW"),
            &json!("NEW"),
            &json!("alice-1"),
            &json!("SELL"),
            &json!("LIMIT"),
            &json!("GTC")
        )
    );
    assert_eq!(
        (&new["i"], &new["q"], &new["p"], &new["z"], &new["l"], &new["t"], &new["N"]),
        (
            &json!(alice_order),
            &json!("0.00005000"),
            &json!("15000000"),
            &json!("0.00000000"),
            &json!("0.00000000"),
            &json!(-1),
            &Value::Null
        )
    );
    let pos = wrapped(next(&mut ws).await);
    assert_eq!(pos["e"], "outboundAccountPosition");

    srv.limit(&bob, Side::Buy, 15_000_000, 3, Some("bob-1"));
    srv.limit(&bob, Side::Buy, 15_000_000, 2, Some("bob-2"));
    for _ in 0..4 {
        events.push(wrapped(next(&mut ws).await));
    }
    let fills: Vec<&Value> = events
        .iter()
        .filter(|e| e["e"] == "executionReport")
        .collect();
    assert_eq!(fills.len(), 2);
    assert_eq!(
        (
            &fills[0]["x"],
            &fills[0]["X"],
            &fills[0]["l"],
            &fills[0]["z"],
            &fills[0]["L"],
            &fills[0]["m"]
        ),
        (
            &json!("TRADE"),
            &json!("PARTIALLY_FILLED"),
            &json!("0.00003000"),
            &json!("0.00003000"),
            &json!("15000000"),
            &json!(true)
        )
    );
    assert_eq!(
        (
            &fills[1]["x"],
            &fills[1]["X"],
            &fills[1]["l"],
            &fills[1]["z"],
            &fills[1]["Z"]
        ),
        (
            &json!("TRADE"),
            &json!("FILLED"),
            &json!("0.00002000"),
            &json!("0.00005000"),
            &json!("750")
        )
    );
    // Fees and trade ids as REST myTrades has them.
    let mine = srv
        .signed_get(&alice, "/api/v3/myTrades", "symbol=BTCJPY")
        .await;
    for (fill, row) in fills.iter().zip(mine.as_array().unwrap()) {
        assert_eq!(
            (&fill["t"], &fill["n"], &fill["N"], &fill["Y"]),
            (
                &row["id"],
                &row["commission"],
                &row["commissionAsset"],
                &row["quoteQty"]
            )
        );
        assert_eq!(fill["i"], alice_order);
    }
    // The balances after the last fill are REST /account's.
    let position = events
        .iter()
        .rev()
        .find(|e| e["e"] == "outboundAccountPosition")
        .unwrap();
    let account = srv.signed_get(&alice, "/api/v3/account", "").await;
    for b in position["B"].as_array().unwrap() {
        let row = account["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["asset"] == b["a"])
            .unwrap();
        assert_eq!(
            (&b["f"], &b["l"]),
            (&row["free"], &row["locked"]),
            "{}",
            b["a"]
        );
    }
    assert_eq!(position["B"].as_array().unwrap().len(), 2);

    // Nothing of Bob's or Carol's reached Alice; Carol saw only her own.
    srv.b.deposit(bob.id, JPY, 5).unwrap();
    srv.b.deposit(alice.id, JPY, 7).unwrap();
    let up = wrapped(until(&mut ws, |v| v["event"]["e"] == "balanceUpdate").await);
    assert_eq!((&up["a"], &up["d"]), (&json!("JPY"), &json!("7")));
    for e in &events {
        if e["e"] == "executionReport" {
            assert_eq!(e["i"], alice_order);
        }
    }
    let c = next(&mut other).await["event"].clone();
    assert_eq!(
        (&c["e"], &c["c"]),
        (&json!("executionReport"), &json!("carol-1"))
    );
    let c = next(&mut other).await["event"].clone();
    assert_eq!(c["e"], "outboundAccountPosition");
    srv.b.deposit(carol.id, JPY, 9).unwrap();
    let c = next(&mut other).await["event"].clone();
    assert_eq!((&c["e"], &c["d"]), (&json!("balanceUpdate"), &json!("9")));
}

#[tokio::test]
async fn listen_key_flow() {
    let mut srv = serve().await;
    let u = srv.user();
    let app = || srv.app.clone();
    let call = |method: &str, query: &str, key: Option<&ApiKeyId>| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v3/userDataStream{query}"));
        if let Some(k) = key {
            req = req.header("X-MBX-APIKEY", k.as_str());
        }
        req.body(Body::empty()).unwrap()
    };
    let (status, body) = srv.send(app(), call("POST", "", None)).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!(-2014))
    );
    let (status, body) = srv.send(app(), call("POST", "", Some(&u.key))).await;
    assert_eq!(status, StatusCode::OK);
    let key = s(&body["listenKey"]).to_owned();
    assert_eq!(key.len(), 64);
    let (_, again) = srv.send(app(), call("POST", "", Some(&u.key))).await;
    assert_eq!(again["listenKey"], key.as_str(), "one key per customer");

    let mut ws = srv.connect(&format!("/ws/{key}")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.b.deposit(u.id, BTC, 12_345).unwrap();
    let up = next(&mut ws).await;
    assert_eq!(
        (&up["e"], &up["a"], &up["d"]),
        (&json!("balanceUpdate"), &json!("BTC"), &json!("0.00012345"))
    );
    let pos = next(&mut ws).await;
    assert_eq!(pos["e"], "outboundAccountPosition");
    assert_eq!(pos["B"][0]["f"], "10.00012345");

    let q = format!("?listenKey={key}");
    let (status, body) = srv.send(app(), call("PUT", &q, Some(&u.key))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = srv.send(app(), call("DELETE", &q, Some(&u.key))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = srv.send(app(), call("PUT", &q, Some(&u.key))).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!(-1125))
    );
}

// ---- bounds ------------------------------------------------------------------------

#[tokio::test]
async fn a_consumer_that_never_reads_is_disconnected_with_a_reason() {
    let (mut srv, hub) = serve_ws(WsConfig {
        send_queue_max: 8,
        ..WsConfig::default()
    })
    .await;
    let (a, b) = (srv.user(), srv.user());
    let mut ws = srv.connect("/ws/btcjpy@trade").await;
    send(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":1})).await;
    assert_eq!(next(&mut ws).await["id"], 1);
    assert_eq!(hub.open_connections(), 1);
    // 300 trades in one burst; the client reads nothing meanwhile.
    for _ in 0..300 {
        srv.limit(&a, Side::Buy, 15_000_000, 1, None);
        srv.limit(&b, Side::Sell, 15_000_000, 1, None);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.open_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server dropped the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (close, before) = until_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("slow consumer"), "{reason}");
    assert!(
        before <= 8 + 1,
        "no more than the queue was kept ({before} messages)"
    );
}

#[tokio::test]
async fn a_connection_that_lags_the_feed_is_closed_with_a_reason() {
    let (mut srv, hub) = serve_ws(WsConfig::default()).await;
    let u = srv.user();
    let mut ws = srv.connect("/ws/0").await;
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcjpy@trade"],"id":1}),
    )
    .await;
    assert_eq!(next(&mut ws).await["id"], 1);
    // More batches than the feed channel holds, without letting the connection run.
    for _ in 0..5_000 {
        srv.b.deposit(u.id, JPY, 1).unwrap();
    }
    let (close, _) = until_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Again);
    assert!(reason.starts_with("lagged"), "{reason}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.open_connections(), 0);
}

#[tokio::test]
async fn subscription_message_rate_and_connection_limits() {
    let (srv, hub) = serve_ws(WsConfig {
        subscriptions_max: 3,
        connections_per_ip_max: 2,
        ..WsConfig::default()
    })
    .await;
    let mut ws = srv.connect("/ws").await;
    send(&mut ws, json!({"method":"SUBSCRIBE","params":["btcjpy@trade","btcjpy@depth","btcusd@trade"],"id":1})).await;
    assert_eq!(next(&mut ws).await, json!({"result": null, "id": 1}));
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcjpy@trade"],"id":2}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        json!({"result": null, "id": 2}),
        "a repeat adds nothing"
    );
    send(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcusd@depth"],"id":3}),
    )
    .await;
    let e = next(&mut ws).await;
    assert_eq!((&e["error"]["code"], &e["id"]), (&json!(2), &json!(3)));
    assert!(s(&e["error"]["msg"]).contains("too many subscriptions"));

    // A third connection from the same address is refused; the second is fine.
    let mut second = srv.connect("/ws").await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", srv.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Over five messages a second: closed.
    for id in 10..20 {
        send(&mut second, json!({"method":"LIST_SUBSCRIPTIONS","id":id})).await;
    }
    let (close, _) = until_close(&mut second).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("too many messages"), "{reason}");
    // An oversized message ends the connection.
    let huge = "x".repeat(kura_api::ws::MESSAGE_BYTES_MAX + 1);
    let _ = ws.send(Message::text(huge)).await;
    let _ = until_close(&mut ws).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.open_connections() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
