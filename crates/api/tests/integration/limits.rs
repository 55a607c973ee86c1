//! Admission control through the router, over [`MemoryBackend`]: request weights and
//! the `X-MBX-USED-WEIGHT-1M` header per client address, 429 then 418 bans that double
//! for repeat offenders, cancels served over the limit, order counts per API key, window
//! resets on the backend's clock (never real time), and the bounded address table.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kura_api::auth::{ApiKeyId, HmacSecret, Permissions};
use kura_api::backend::Backend;
use kura_api::http::{router_with, RouterConfig};
use kura_api::limits::Limits;
use kura_api::memory::MemoryBackend;
use kura_api::MasterKey;
use kura_engine::genesis::{BTC, JPY};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tower::ServiceExt;

/// 20 s into a minute (so a weight window ends in 40 s) and on a 10-second boundary.
const NOW: u64 = 1_700_000_000_000;
const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const BUY: &str = "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000";

struct T {
    b: MemoryBackend,
    app: Router,
    next_key: u64,
}

struct User {
    key: ApiKeyId,
    secret: HmacSecret,
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    #[track_caller]
    fn header(&self, name: &str) -> u64 {
        let v = self
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers));
        v.to_str().unwrap().parse().unwrap()
    }

    /// `X-MBX-USED-WEIGHT-1M`.
    #[track_caller]
    fn used(&self) -> u64 {
        self.header("X-MBX-USED-WEIGHT-1M")
    }

    #[track_caller]
    fn retry_after(&self) -> u64 {
        self.header("Retry-After")
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }

    #[track_caller]
    fn err(&self, status: u16, code: i64, msg: &str) {
        assert_eq!(
            (self.status.as_u16(), &self.body),
            (status, &serde_json::json!({ "code": code, "msg": msg })),
        );
    }

    #[track_caller]
    fn weight_limited(&self, limit: u32) {
        self.err(
            429,
            -1003,
            &format!(
                "Too much request weight used; current limit is {limit} request weight per \
                 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the \
                 API."
            ),
        );
    }

    #[track_caller]
    fn banned_until(&self, until_ms: u64) {
        self.err(
            418,
            -1003,
            &format!(
                "Way too much request weight used; IP banned until {until_ms}. Please use \
                 WebSocket Streams for live updates to avoid bans."
            ),
        );
    }
}

fn setup(limits: Limits) -> T {
    let b = MemoryBackend::new(MasterKey::from_bytes([7; 32]), NOW).unwrap();
    let app = router_with(b.clone(), RouterConfig { limits });
    T {
        b,
        app,
        next_key: 1,
    }
}

/// Limits small enough to reach in a few requests.
fn small() -> Limits {
    Limits {
        request_weight_per_minute: 100,
        refusals_before_ban: 2,
        ..Limits::default()
    }
}

impl T {
    fn user(&mut self) -> User {
        let id = self.b.create_user().unwrap();
        self.b.deposit(id, BTC, 1_000_000_000).unwrap();
        self.b.deposit(id, JPY, 100_000_000).unwrap();
        let number = self.next_key;
        self.next_key += 1;
        let all = Permissions {
            read: true,
            trade: true,
            withdraw: false,
        };
        let (key, secret) = self.b.add_hmac_key(id, number, all).unwrap();
        User { key, secret }
    }

    async fn send(&self, ip: Ipv4Addr, req: Request<Body>) -> Resp {
        let app = self
            .app
            .clone()
            .layer(MockConnectInfo(SocketAddr::new(IpAddr::V4(ip), 40_000)));
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, ip: Ipv4Addr, uri: &str) -> Resp {
        self.send(ip, Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// Signed as CCXT signs: GET/DELETE in the query, POST in a form body.
    async fn signed(&self, ip: Ipv4Addr, u: &User, method: Method, path: &str, p: &str) -> Resp {
        let sep = if p.is_empty() { "" } else { "&" };
        let payload = format!("{p}{sep}timestamp={}&recvWindow=10000", self.b.now_ms());
        let signature = u.secret.sign(payload.as_bytes());
        self.signed_raw(ip, u, method, path, &payload, &signature)
            .await
    }

    async fn signed_raw(
        &self,
        ip: Ipv4Addr,
        u: &User,
        method: Method,
        path: &str,
        payload: &str,
        signature: &str,
    ) -> Resp {
        let signed = format!("{payload}&signature={signature}");
        let builder = Request::builder()
            .method(method.clone())
            .header("X-MBX-APIKEY", u.key.as_str());
        let req = if method == Method::POST {
            builder
                .uri(path)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(Body::from(signed))
        } else {
            builder.uri(format!("{path}?{signed}")).body(Body::empty())
        };
        self.send(ip, req.unwrap()).await
    }

    async fn order(&self, ip: Ipv4Addr, u: &User, params: &str) -> Resp {
        self.signed(ip, u, Method::POST, "/api/v3/order", params)
            .await
    }

    /// Pings from `ip` until its used weight reaches `weight` exactly.
    async fn spend_to(&self, ip: Ipv4Addr, weight: u64) {
        loop {
            let r = self.get(ip, "/api/v3/ping").await;
            r.ok();
            if r.used() == weight {
                return;
            }
            assert!(r.used() < weight);
        }
    }

    fn sequenced(&self) -> usize {
        self.b.entries().unwrap().len()
    }
}

#[tokio::test]
async fn the_used_weight_header_counts_up_by_each_endpoints_weight() {
    let mut t = setup(Limits::default());
    let u = t.user();
    let steps: &[(&str, u64)] = &[
        ("/api/v3/ping", 1),
        ("/api/v3/time", 1),
        ("/api/v3/exchangeInfo", 20),
        ("/api/v3/depth?symbol=BTCJPY", 5),
        ("/api/v3/depth?symbol=BTCJPY&limit=500", 25),
        ("/api/v3/depth?symbol=BTCJPY&limit=1000", 50),
        ("/api/v3/depth?symbol=BTCJPY&limit=5000", 250),
        ("/api/v3/trades?symbol=BTCJPY", 25),
        ("/api/v3/aggTrades?symbol=BTCJPY", 4),
        ("/api/v3/klines?symbol=BTCJPY&interval=1m", 2),
        ("/api/v3/ticker/24hr?symbol=BTCJPY", 2),
        ("/api/v3/ticker/24hr", 80),
        ("/api/v3/ticker/price", 4),
        ("/api/v3/ticker/bookTicker?symbol=BTCJPY", 2),
        ("/no/such/path", 1),
    ];
    let mut used = 0;
    for (uri, weight) in steps {
        used += weight;
        let r = t.get(A, uri).await;
        assert_eq!(r.used(), used, "{uri}");
    }
    let signed: &[(Method, &str, &str, u64)] = &[
        (Method::GET, "/api/v3/account", "", 20),
        (Method::GET, "/api/v3/openOrders", "symbol=BTCJPY", 6),
        (Method::GET, "/api/v3/openOrders", "", 80),
        (Method::GET, "/api/v3/allOrders", "symbol=BTCJPY", 20),
        (Method::GET, "/api/v3/myTrades", "symbol=BTCJPY", 20),
        (Method::POST, "/api/v3/order", BUY, 1),
    ];
    for (method, path, params, weight) in signed {
        used += weight;
        let r = t.signed(A, &u, method.clone(), path, params).await;
        r.ok();
        assert_eq!(r.used(), used, "{method} {path}");
    }
    // A failed signature costs its weight too.
    used += 20;
    let r = t
        .signed_raw(A, &u, Method::GET, "/api/v3/account", "timestamp=1", "00")
        .await;
    r.err(400, -1022, "Signature for this request is not valid.");
    assert_eq!(r.used(), used);
    // Counted per address.
    assert_eq!(t.get(B, "/api/v3/ping").await.used(), 1);
    assert_eq!(t.get(A, "/api/v3/ping").await.used(), used + 1);
}

#[tokio::test]
async fn the_6001st_unit_of_weight_is_429_then_continuing_is_a_418_ban() {
    let mut t = setup(Limits::default());
    let u = t.user();
    for i in 1..=24 {
        let r = t.get(A, "/api/v3/depth?symbol=BTCJPY&limit=5000").await;
        r.ok();
        assert_eq!(r.used(), 250 * i);
    }
    let r = t.get(A, "/api/v3/ping").await;
    r.weight_limited(6000);
    assert_eq!((r.used(), r.retry_after()), (6000, 40));
    // Another address is still served.
    let r = t.get(B, "/api/v3/ping").await;
    r.ok();
    assert_eq!(r.used(), 1);
    // Refusals do not add weight; the default tolerates ten 429s in a window.
    for _ in 1..10 {
        let r = t.get(A, "/api/v3/time").await;
        r.weight_limited(6000);
        assert_eq!(r.used(), 6000);
    }
    t.b.advance_ms(1_000);
    let until_ms = NOW + 1_000 + 120_000;
    let r = t.get(A, "/api/v3/ping").await;
    r.banned_until(until_ms);
    assert_eq!(r.retry_after(), 120);
    // While banned nothing reaches the backend: not an order, not a cancel.
    let before = t.sequenced();
    t.b.advance_ms(60_000);
    let r = t.order(A, &u, BUY).await;
    r.banned_until(until_ms);
    assert_eq!((r.retry_after(), r.used()), (60, 0));
    t.signed(A, &u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await
        .banned_until(until_ms);
    assert_eq!(t.sequenced(), before);
    t.get(B, "/api/v3/ping").await.ok();
    // The ban ends.
    t.b.set_now_ms(until_ms);
    let r = t.order(A, &u, BUY).await;
    r.ok();
    assert_eq!(t.sequenced(), before + 1);
}

#[tokio::test]
async fn a_repeat_offender_is_banned_twice_as_long_each_time() {
    let t = setup(small());
    for expected_s in [120, 240, 480, 960] {
        t.spend_to(A, 100).await;
        t.get(A, "/api/v3/ping").await.weight_limited(100);
        t.get(A, "/api/v3/ping").await.weight_limited(100);
        let r = t.get(A, "/api/v3/ping").await;
        let until_ms = t.b.now_ms() + expected_s * 1_000;
        r.banned_until(until_ms);
        assert_eq!(r.retry_after(), expected_s);
        t.b.advance_ms(expected_s * 1_000 - 1);
        t.get(A, "/api/v3/ping").await.banned_until(until_ms);
        t.b.advance_ms(1);
    }
    // A day after its last ban ended, the address starts again at 2 minutes.
    t.b.advance_ms(24 * 60 * 60 * 1_000);
    t.spend_to(A, 100).await;
    for _ in 0..2 {
        t.get(A, "/api/v3/ping").await.weight_limited(100);
    }
    assert_eq!(t.get(A, "/api/v3/ping").await.retry_after(), 120);
}

#[tokio::test]
async fn cancels_are_never_shed_for_weight() {
    let mut t = setup(small());
    let u = t.user();
    let first = t.order(A, &u, BUY).await.ok()["orderId"].as_u64().unwrap();
    t.order(A, &u, BUY).await.ok();
    t.spend_to(A, 100).await;
    t.signed(A, &u, Method::GET, "/api/v3/openOrders", "symbol=BTCJPY")
        .await
        .weight_limited(100);
    t.order(A, &u, BUY).await.weight_limited(100);
    // Cancels pass, and still count (the header goes past the limit).
    let r = t
        .signed(
            A,
            &u,
            Method::DELETE,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={first}"),
        )
        .await;
    assert_eq!(r.ok()["status"], "CANCELED");
    assert_eq!(r.used(), 101);
    let r = t
        .signed(A, &u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    assert_eq!(r.ok().as_array().unwrap().len(), 1);
    assert_eq!(r.used(), 102);
    // Many cancels never lead to a ban: none of them is refused.
    for _ in 0..10 {
        let r = t
            .signed(A, &u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
            .await;
        assert_ne!(r.status.as_u16(), 429);
        assert_ne!(r.status.as_u16(), 418);
    }
}

#[tokio::test]
async fn an_unsigned_flood_is_refused_before_authentication() {
    let mut t = setup(small());
    let u = t.user();
    let before = t.sequenced();
    let mut refused = 0;
    for _ in 0..200 {
        let req = Request::post("/api/v3/order")
            .header("X-MBX-APIKEY", u.key.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(BUY))
            .unwrap();
        let r = t.send(A, req).await;
        match r.status.as_u16() {
            400 => assert_eq!(r.body["code"], -1102, "{}", r.body),
            429 | 418 => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    // 100 cost their weight and failed authentication; then 2 × 429 and a ban.
    assert_eq!(refused, 100);
    assert_eq!(t.sequenced(), before);
    // The key's owner, from another address, still trades: the unsigned requests held
    // none of its orders.
    let r = t.order(B, &u, BUY).await;
    r.ok();
    assert_eq!(r.header("X-MBX-ORDER-COUNT-10S"), 1);
}

#[tokio::test]
async fn order_counts_per_key_give_1015() {
    let mut t = setup(Limits {
        orders_per_10s: 3,
        orders_per_day: 5,
        ..Limits::default()
    });
    let u = t.user();
    let v = t.user();
    for i in 1..=3 {
        let r = t.order(A, &u, BUY).await;
        r.ok();
        assert_eq!(r.header("X-MBX-ORDER-COUNT-10S"), i);
        assert_eq!(r.header("X-MBX-ORDER-COUNT-1D"), i);
    }
    let before = t.sequenced();
    let r = t.order(A, &u, BUY).await;
    r.err(
        429,
        -1015,
        "Too many new orders; current limit is 3 orders per 10 SECOND.",
    );
    assert_eq!(r.retry_after(), 10);
    assert_eq!(r.header("X-MBX-ORDER-COUNT-10S"), 3);
    assert_eq!(t.sequenced(), before);
    // Per key, not per address.
    let r = t.order(A, &v, BUY).await;
    r.ok();
    assert_eq!(r.header("X-MBX-ORDER-COUNT-10S"), 1);
    // Queries and cancels do not count as orders.
    t.signed(A, &u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await
        .ok();
    // The next 10-second window.
    t.b.advance_ms(10_000);
    let r = t.order(A, &u, BUY).await;
    r.ok();
    assert_eq!(
        (
            r.header("X-MBX-ORDER-COUNT-10S"),
            r.header("X-MBX-ORDER-COUNT-1D")
        ),
        (1, 4)
    );
    // Failed orders are given back: a bad signature, an engine rejection.
    let r = t
        .signed_raw(A, &u, Method::POST, "/api/v3/order", BUY, "00")
        .await;
    r.err(400, -1022, "Signature for this request is not valid.");
    assert_eq!(r.header("X-MBX-ORDER-COUNT-1D"), 4);
    let r = t
        .order(
            A,
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1000&price=4000000",
        )
        .await;
    r.err(
        400,
        -2010,
        "Account has insufficient balance for requested action.",
    );
    assert_eq!(r.header("X-MBX-ORDER-COUNT-1D"), 4);
    t.order(A, &u, BUY).await.ok();
    t.b.advance_ms(10_000);
    let r = t.order(A, &u, BUY).await;
    r.err(
        429,
        -1015,
        "Too many new orders; current limit is 5 orders per 1 DAY.",
    );
    // NOW is 22:13:20 UTC: the day ends 6400 s later, less the 20 s advanced.
    assert_eq!(r.retry_after(), 6_400 - 20);
}

#[tokio::test]
async fn the_weight_window_resets_on_the_backend_clock() {
    let t = setup(small());
    t.spend_to(A, 100).await;
    let r = t.get(A, "/api/v3/exchangeInfo").await;
    r.weight_limited(100);
    assert_eq!(r.retry_after(), 40);
    t.b.advance_ms(39_999);
    let r = t.get(A, "/api/v3/ping").await;
    r.weight_limited(100);
    assert_eq!(r.retry_after(), 1);
    t.b.advance_ms(1);
    let r = t.get(A, "/api/v3/exchangeInfo").await;
    r.ok();
    assert_eq!(r.used(), 20);
}

#[tokio::test]
async fn the_address_table_is_bounded() {
    let t = setup(Limits {
        ip_table_max: 2,
        ..small()
    });
    assert_eq!(t.get(A, "/api/v3/exchangeInfo").await.used(), 20);
    assert_eq!(t.get(A, "/api/v3/exchangeInfo").await.used(), 40);
    t.get(B, "/api/v3/ping").await.ok();
    // A third address evicts the least recently seen (A), which starts again.
    t.get(C, "/api/v3/ping").await.ok();
    assert_eq!(t.get(A, "/api/v3/exchangeInfo").await.used(), 20);
    // B was evicted by A; C is still counted.
    assert_eq!(t.get(C, "/api/v3/ping").await.used(), 2);
    assert_eq!(t.get(B, "/api/v3/ping").await.used(), 1);
}

#[tokio::test]
async fn exchange_info_advertises_the_limits_enforced() {
    let t = setup(Limits::default());
    let r = t.get(A, "/api/v3/exchangeInfo").await;
    assert_eq!(r.ok()["rateLimits"], Limits::default().rate_limits_json());
    // A configured server advertises its own values, not Binance's.
    let custom = Limits {
        request_weight_per_minute: 1234,
        orders_per_10s: 7,
        ..Limits::default()
    };
    let t = setup(custom.clone());
    let r = t.get(A, "/api/v3/exchangeInfo").await;
    let advertised = &r.ok()["rateLimits"];
    assert_eq!(advertised, &custom.rate_limits_json());
    assert_eq!(advertised[0]["limit"], 1234);
    assert_eq!(advertised[1]["limit"], 7);
}

#[tokio::test]
async fn forged_requests_ban_their_address_after_a_handful() {
    let mut t = setup(Limits {
        failures_before_ban: 5,
        ..Limits::default()
    });
    let u = t.user();
    let closes = |r: &Resp| r.headers.get("connection").is_some_and(|v| v == "close");
    // Bad signatures from A: five are answered -1022; the sixth bans A and its answer
    // closes the connection.
    let payload = format!("{BUY}&timestamp={NOW}&recvWindow=10000");
    for i in 0..6 {
        let r = t
            .signed_raw(
                A,
                &u,
                Method::POST,
                "/api/v3/order",
                &payload,
                &"0".repeat(64),
            )
            .await;
        assert_eq!((r.status.as_u16(), &r.body["code"]), (400, &(-1022).into()));
        assert_eq!(closes(&r), i == 5, "request {i}: {:?}", r.headers);
    }
    let r = t.get(A, "/api/v3/ping").await;
    r.banned_until(NOW + kura_api::limits::BAN_FIRST_MS);
    assert!(closes(&r));
    // No API key at all, from C: the same.
    for _ in 0..6 {
        let req = Request::post("/api/v3/order")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(payload.clone()))
            .unwrap();
        assert_eq!(t.send(C, req).await.status, StatusCode::UNAUTHORIZED);
    }
    t.get(C, "/api/v3/ping")
        .await
        .banned_until(NOW + kura_api::limits::BAN_FIRST_MS);
    // Requests over the size limits, from D: a body over 16 KiB and a query over 8 KiB
    // are answered -1101, and count the same.
    let d = Ipv4Addr::new(198, 51, 100, 4);
    for i in 0..6 {
        let req = if i % 2 == 0 {
            Request::post("/api/v3/order")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("pad={}", "a".repeat(20 << 10))))
                .unwrap()
        } else {
            Request::get(format!(
                "/api/v3/depth?symbol=BTCJPY&pad={}",
                "a".repeat(9 << 10)
            ))
            .body(Body::empty())
            .unwrap()
        };
        let r = t.send(d, req).await;
        assert_eq!((r.status.as_u16(), &r.body["code"]), (400, &(-1101).into()));
    }
    t.get(d, "/api/v3/ping")
        .await
        .banned_until(NOW + kura_api::limits::BAN_FIRST_MS);
    // An honest client's mistakes do not ban: B's stale timestamps, ten times over.
    let stale = format!("{BUY}&timestamp={}&recvWindow=5000", NOW - 60_000);
    let signature = u.secret.sign(stale.as_bytes());
    for _ in 0..10 {
        let r = t
            .signed_raw(B, &u, Method::POST, "/api/v3/order", &stale, &signature)
            .await;
        assert_eq!((r.status.as_u16(), &r.body["code"]), (400, &(-1021).into()));
    }
    t.get(B, "/api/v3/ping").await.ok();
    // And the key's owner, from B, still trades.
    t.order(B, &u, BUY).await.ok();
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client_and_nobody_elses_is() {
    let proxy = A;
    let mut t = setup(Limits {
        trusted_proxies: vec![IpAddr::V4(proxy)],
        ..small()
    });
    let u = t.user();
    let through = |client: &str, path: &str| {
        Request::get(path)
            .header("X-Forwarded-For", client)
            .body(Body::empty())
            .unwrap()
    };
    // Through the proxy, each client has its own budget: C spends its 100 …
    loop {
        let r = t
            .send(proxy, through("203.0.113.9, 198.51.100.3", "/api/v3/ping"))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        r.ok();
    }
    // … while another client behind the same proxy, and the proxy's own address, still
    // have all of theirs.
    assert_eq!(
        t.send(proxy, through("198.51.100.7", "/api/v3/ping"))
            .await
            .used(),
        1
    );
    assert_eq!(t.get(proxy, "/api/v3/ping").await.used(), 1);
    // C's budget is C's wherever it comes from; a header from an untrusted peer is
    // ignored: B is counted as B, not as the address it claims.
    t.get(C, "/api/v3/ping").await.weight_limited(100);
    let r = t.send(B, through("198.51.100.8", "/api/v3/ping")).await;
    assert_eq!(r.used(), 1);
    assert_eq!(t.get(B, "/api/v3/ping").await.used(), 2);
    // The order journaled through the proxy carries the client's address.
    let payload = format!("{BUY}&timestamp={NOW}&recvWindow=10000");
    let signature = u.secret.sign(payload.as_bytes());
    let req = Request::post("/api/v3/order")
        .header("X-MBX-APIKEY", u.key.as_str())
        .header("X-Forwarded-For", "198.51.100.9")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("{payload}&signature={signature}")))
        .unwrap();
    t.send(proxy, req).await.ok();
    let origin = t.b.entries().unwrap().last().unwrap().origin.clone();
    match origin {
        kura_engine::codec::Origin::Api { ip, .. } => assert_eq!(
            ip,
            kura_engine::codec::ip_to_bytes(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)))
        ),
        other => panic!("{other:?}"),
    }
}

/// On the guest lane, the answer to a correctly signed request asks the client to
/// reconnect (its next connection takes the customers' lane); no other answer does, and
/// nothing on the customers' lane does.
#[tokio::test]
async fn a_correctly_signed_request_on_the_guest_lane_is_answered_connection_close() {
    use kura_api::limits::Lane;
    let mut t = setup(Limits::default());
    let u = t.user();
    let signed = |signature: Option<&str>, lane: Option<Lane>| {
        let payload = format!("timestamp={NOW}&recvWindow=10000");
        let signature = signature.map_or_else(|| u.secret.sign(payload.as_bytes()), str::to_owned);
        let mut req = Request::get(format!("/api/v3/account?{payload}&signature={signature}"))
            .header("X-MBX-APIKEY", u.key.as_str())
            .body(Body::empty())
            .unwrap();
        if let Some(lane) = lane {
            req.extensions_mut().insert(lane);
        }
        req
    };
    let closes = |r: &Resp| {
        r.headers
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    };
    let r = t.send(A, signed(None, Some(Lane::Guest))).await;
    r.ok();
    assert!(closes(&r), "{:?}", r.headers);
    let r = t.send(A, signed(None, Some(Lane::Customer))).await;
    r.ok();
    assert!(!closes(&r), "{:?}", r.headers);
    let r = t.send(A, signed(None, None)).await;
    assert!(!closes(&r), "a server with one lane: {:?}", r.headers);
    // A bad signature on the guest lane: refused, and the connection stays.
    let bad = "0".repeat(64);
    let r = t.send(B, signed(Some(&bad), Some(Lane::Guest))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(!closes(&r), "{:?}", r.headers);
    // A public request on the guest lane is answered as any other.
    let mut req = Request::get("/api/v3/time").body(Body::empty()).unwrap();
    req.extensions_mut().insert(Lane::Guest);
    let r = t.send(C, req).await;
    r.ok();
    assert!(!closes(&r), "{:?}", r.headers);
}
