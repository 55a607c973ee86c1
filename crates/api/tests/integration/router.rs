//! The REST router in process, over [`MemoryBackend`]: every endpoint's happy path and
//! its bad inputs, with Binance's exact code, message and HTTP status; balances after
//! fills checked to the minor unit against what the fills and fees imply.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kura_api::auth::{ApiKeyId, HmacSecret, Permissions};
use kura_api::backend::Backend;
use kura_api::memory::MemoryBackend;
use kura_api::{router, MasterKey};
use kura_engine::codec::{ip_to_bytes, Origin};
use kura_engine::genesis::{BTC, JPY, USD};
use kura_units::{MarketId, UserId};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tower::ServiceExt;

const NOW: u64 = 1_700_000_000_000;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const BTCJPY: MarketId = MarketId(0);
/// Every test user starts with 10 BTC, 100 000 000 JPY and 1 000 000.00 USD.
const START_BTC: u64 = 1_000_000_000;
const START_JPY: u64 = 100_000_000;
const START_USD: u64 = 100_000_000;

struct T {
    b: MemoryBackend,
    app: Router,
    next_key: u64,
}

#[derive(Clone)]
struct User {
    id: UserId,
    key: ApiKeyId,
    secret: HmacSecret,
    number: u64,
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    body: Value,
}

impl Resp {
    /// Binance's error body, with its HTTP status.
    #[track_caller]
    fn err(&self, status: u16, code: i64, msg: &str) {
        assert_eq!(
            (self.status.as_u16(), &self.body),
            (status, &serde_json::json!({ "code": code, "msg": msg })),
        );
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn setup() -> T {
    let b = MemoryBackend::new(MasterKey::from_bytes([7; 32]), NOW).unwrap();
    let app = router(b.clone()).layer(MockConnectInfo(SocketAddr::new(
        IpAddr::V4(CLIENT_IP),
        40_000,
    )));
    T {
        b,
        app,
        next_key: 1,
    }
}

const ALL: Permissions = Permissions {
    read: true,
    trade: true,
    withdraw: false,
};

impl T {
    fn user(&mut self) -> User {
        self.user_with(ALL)
    }

    fn user_with(&mut self, permissions: Permissions) -> User {
        let id = self.b.create_user().unwrap();
        self.b.deposit(id, BTC, START_BTC).unwrap();
        self.b.deposit(id, JPY, START_JPY).unwrap();
        self.b.deposit(id, USD, START_USD).unwrap();
        let number = self.next_key;
        self.next_key += 1;
        let (key, secret) = self.b.add_hmac_key(id, number, permissions).unwrap();
        User {
            id,
            key,
            secret,
            number,
        }
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Resp { status, body }
    }

    async fn get(&self, uri: &str) -> Resp {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        self.send(req).await
    }

    /// A signed request as CCXT sends it: GET/DELETE with everything in the query,
    /// POST with everything in a form body.
    async fn signed(&self, u: &User, method: Method, path: &str, params: &str) -> Resp {
        let sep = if params.is_empty() { "" } else { "&" };
        let payload = format!(
            "{params}{sep}timestamp={}&recvWindow=10000",
            self.b.now_ms()
        );
        self.signed_raw(
            u,
            method,
            path,
            &payload,
            &u.secret.sign(payload.as_bytes()),
        )
        .await
    }

    async fn signed_raw(
        &self,
        u: &User,
        method: Method,
        path: &str,
        payload: &str,
        signature: &str,
    ) -> Resp {
        let signed = format!("{payload}&signature={signature}");
        let builder = Request::builder()
            .method(method.clone())
            .header("X-MBX-APIKEY", u.key.as_str())
            .header("User-Agent", "ccxt/4.5.90 python-requests");
        let req = if method == Method::POST {
            builder
                .uri(path)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(Body::from(signed))
        } else {
            builder.uri(format!("{path}?{signed}")).body(Body::empty())
        };
        self.send(req.unwrap()).await
    }

    async fn order(&self, u: &User, params: &str) -> Resp {
        self.signed(u, Method::POST, "/api/v3/order", params).await
    }

    /// The (free, locked) balance of one asset, from `/api/v3/account`.
    async fn balance(&self, u: &User, asset: &str) -> (String, String) {
        let r = self.signed(u, Method::GET, "/api/v3/account", "").await;
        let b = r.ok()["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == asset)
            .unwrap_or_else(|| panic!("no {asset} balance"))
            .clone();
        (s(&b["free"]).to_owned(), s(&b["locked"]).to_owned())
    }
}

// ---- public endpoints -------------------------------------------------------------

#[tokio::test]
async fn ping_time_and_status() {
    let t = setup();
    assert_eq!(t.get("/api/v3/ping").await.ok(), &serde_json::json!({}));
    assert_eq!(t.get("/api/v3/time").await.ok()["serverTime"], NOW);
    t.b.set_now_ms(NOW + 5);
    assert_eq!(t.get("/api/v3/time").await.ok()["serverTime"], NOW + 5);
    assert_eq!(
        t.get("/sapi/v1/system/status").await.ok(),
        &serde_json::json!({"status": 0, "msg": "normal"})
    );
}

#[tokio::test]
async fn exchange_info() {
    let t = setup();
    let r = t.get("/api/v3/exchangeInfo").await;
    let info = r.ok();
    assert_eq!(info["timezone"], "UTC");
    let limits = info["rateLimits"].as_array().unwrap();
    assert!(limits.iter().any(|l| l["rateLimitType"] == "REQUEST_WEIGHT"
        && l["limit"] == 6000
        && l["interval"] == "MINUTE"));
    assert!(limits
        .iter()
        .any(|l| l["rateLimitType"] == "ORDERS" && l["limit"] == 100 && l["intervalNum"] == 10));
    assert!(limits.iter().any(|l| l["rateLimitType"] == "RAW_REQUESTS"));
    let symbols = info["symbols"].as_array().unwrap();
    let names: Vec<&str> = symbols.iter().map(|x| s(&x["symbol"])).collect();
    assert_eq!(names, ["BTCJPY", "BTCUSD"]);
    let jpy = &symbols[0];
    assert_eq!(jpy["status"], "TRADING");
    assert_eq!(jpy["baseAsset"], "BTC");
    assert_eq!(jpy["quoteAsset"], "JPY");
    assert_eq!(jpy["baseAssetPrecision"], 8);
    assert_eq!(jpy["quotePrecision"], 0);
    assert_eq!(
        jpy["orderTypes"],
        serde_json::json!(["LIMIT", "LIMIT_MAKER", "MARKET"])
    );
    let filters = jpy["filters"].as_array().unwrap();
    let f = |ty: &str| filters.iter().find(|f| f["filterType"] == ty).unwrap();
    assert_eq!(f("PRICE_FILTER")["tickSize"], "1");
    assert_eq!(f("PRICE_FILTER")["minPrice"], "1");
    assert_eq!(f("PRICE_FILTER")["maxPrice"], "10000000000");
    assert_eq!(f("LOT_SIZE")["stepSize"], "0.00001000");
    assert_eq!(f("LOT_SIZE")["minQty"], "0.00001000");
    assert_eq!(f("LOT_SIZE")["maxQty"], "9000.00000000");
    assert_eq!(f("NOTIONAL")["minNotional"], "100");
    let usd = &symbols[1];
    let usd_filters = usd["filters"].as_array().unwrap();
    assert_eq!(usd_filters[0]["tickSize"], "0.01");
    assert_eq!(usd_filters[2]["minNotional"], "5.00");
    // No contract fields: CCXT would take the market for a derivative.
    for key in ["contractType", "deliveryDate", "underlying", "marginAsset"] {
        assert!(jpy.get(key).is_none(), "{key}");
    }

    let one = t.get("/api/v3/exchangeInfo?symbol=BTCUSD").await;
    assert_eq!(one.ok()["symbols"].as_array().unwrap().len(), 1);
    assert_eq!(one.body["symbols"][0]["symbol"], "BTCUSD");
    let list = t
        .get("/api/v3/exchangeInfo?symbols=%5B%22BTCUSD%22,%22BTCJPY%22%5D")
        .await;
    let names: Vec<&str> = list.ok()["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| s(&x["symbol"]))
        .collect();
    assert_eq!(names, ["BTCUSD", "BTCJPY"]);

    t.get("/api/v3/exchangeInfo?symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");
    t.get("/api/v3/exchangeInfo?symbols=%5B%22ETHBTC%22%5D")
        .await
        .err(400, -1121, "Invalid symbol.");
    t.get("/api/v3/exchangeInfo?symbols=BTCJPY").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.",
    );
    t.get("/api/v3/exchangeInfo?symbol=BTCJPY&symbols=%5B%22BTCJPY%22%5D")
        .await
        .err(400, -1128, "Combination of optional parameters invalid.");

    t.b.halt(BTCJPY).unwrap();
    let halted = t.get("/api/v3/exchangeInfo?symbol=BTCJPY").await;
    assert_eq!(halted.ok()["symbols"][0]["status"], "BREAK");
}

#[tokio::test]
async fn depth() {
    let mut t = setup();
    let u = t.user();
    let empty = t.get("/api/v3/depth?symbol=BTCJPY").await;
    let first_id = empty.ok()["lastUpdateId"].as_u64().unwrap();
    assert_eq!(empty.body["bids"], serde_json::json!([]));
    assert_eq!(empty.body["asks"], serde_json::json!([]));

    for (side, price, qty) in [
        ("BUY", "4900000", "0.01"),
        ("BUY", "4900000", "0.02"),
        ("BUY", "4800000", "0.5"),
        ("SELL", "5100000", "0.00123"),
    ] {
        t.order(
            &u,
            &format!(
                "symbol=BTCJPY&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}"
            ),
        )
        .await
        .ok();
    }
    let d = t.get("/api/v3/depth?symbol=BTCJPY").await;
    let d = d.ok();
    assert_eq!(d["lastUpdateId"].as_u64().unwrap(), first_id + 4);
    assert_eq!(
        d["bids"],
        serde_json::json!([["4900000", "0.03000000"], ["4800000", "0.50000000"]])
    );
    assert_eq!(d["asks"], serde_json::json!([["5100000", "0.00123000"]]));
    let top = t.get("/api/v3/depth?symbol=BTCJPY&limit=1").await;
    assert_eq!(
        top.ok()["bids"],
        serde_json::json!([["4900000", "0.03000000"]])
    );
    // Larger than the maximum is capped, not refused.
    t.get("/api/v3/depth?symbol=BTCJPY&limit=6000").await.ok();

    t.get("/api/v3/depth").await.err(
        400,
        -1102,
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
    );
    t.get("/api/v3/depth?symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");
    t.get("/api/v3/depth?symbol=btcjpy").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
    );
    t.get("/api/v3/depth?symbol=BTCJPY&limit=0").await.err(
        400,
        -1130,
        "Data sent for parameter 'limit' is not valid.",
    );
    t.get("/api/v3/depth?symbol=BTCJPY&limit=-1").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
    );
}

/// A maker sells, a taker buys at market: two trades at two prices, a second apart.
async fn two_trades(t: &mut T) -> (User, User) {
    let maker = t.user();
    let taker = t.user();
    for price in ["5000000", "5000100"] {
        t.order(
            &maker,
            &format!(
                "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}"
            ),
        )
        .await
        .ok();
    }
    t.order(&taker, "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01")
        .await
        .ok();
    t.b.advance_ms(1_000);
    t.order(&taker, "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.005")
        .await
        .ok();
    (maker, taker)
}

#[tokio::test]
async fn trades_and_agg_trades() {
    let mut t = setup();
    two_trades(&mut t).await;
    let r = t.get("/api/v3/trades?symbol=BTCJPY").await;
    let rows = r.ok().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["price"], "5000000");
    assert_eq!(rows[0]["qty"], "0.01000000");
    assert_eq!(rows[0]["quoteQty"], "50000");
    assert_eq!(rows[0]["time"], NOW);
    assert_eq!(rows[0]["isBuyerMaker"], false);
    assert_eq!(rows[1]["price"], "5000100");
    assert_eq!(rows[1]["qty"], "0.00500000");
    assert_eq!(rows[1]["quoteQty"], "25000");
    let id0 = rows[0]["id"].as_u64().unwrap();
    let id1 = rows[1]["id"].as_u64().unwrap();
    assert!(id1 > id0);
    let last = t.get("/api/v3/trades?symbol=BTCJPY&limit=1").await;
    assert_eq!(last.ok().as_array().unwrap().len(), 1);
    assert_eq!(last.body[0]["id"], id1);

    let agg = t.get("/api/v3/aggTrades?symbol=BTCJPY").await;
    let a = agg.ok().as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0],
        serde_json::json!({"a": id0, "p": "5000000", "q": "0.01000000", "f": id0, "l": id0,
            "T": NOW, "m": false, "M": true})
    );
    let from = t
        .get(&format!("/api/v3/aggTrades?symbol=BTCJPY&fromId={id1}"))
        .await;
    assert_eq!(from.ok().as_array().unwrap().len(), 1);
    assert_eq!(from.body[0]["a"], id1);
    // CCXT's `since`: startTime and endTime one hour later.
    let window = t
        .get(&format!(
            "/api/v3/aggTrades?symbol=BTCJPY&startTime={}&endTime={}",
            NOW + 1,
            NOW + 3_600_001
        ))
        .await;
    assert_eq!(window.ok().as_array().unwrap().len(), 1);
    assert_eq!(window.body[0]["T"], NOW + 1_000);
    t.get(&format!(
        "/api/v3/aggTrades?symbol=BTCJPY&fromId=1&startTime={NOW}"
    ))
    .await
    .err(400, -1128, "Combination of optional parameters invalid.");
    t.get("/api/v3/aggTrades?symbol=XXX")
        .await
        .err(400, -1121, "Invalid symbol.");
    t.get("/api/v3/trades").await.err(
        400,
        -1102,
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
    );
}

#[tokio::test]
async fn klines() {
    let mut t = setup();
    two_trades(&mut t).await;
    let r = t
        .get("/api/v3/klines?symbol=BTCJPY&interval=1m&limit=500")
        .await;
    let rows = r.ok().as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let open_time = NOW / 60_000 * 60_000;
    assert_eq!(
        rows[0],
        serde_json::json!([
            open_time,
            "5000000",
            "5000100",
            "5000000",
            "5000100",
            "0.01500000",
            open_time + 59_999,
            "75000",
            2,
            "0.01500000",
            "75000",
            "0"
        ])
    );
    // 1s klines are built from trades: one per second with trades.
    let r = t.get("/api/v3/klines?symbol=BTCJPY&interval=1s").await;
    let rows = r.ok().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], NOW);
    assert_eq!(rows[0][6], NOW + 999);
    assert_eq!(rows[0][1], "5000000");
    assert_eq!(rows[1][0], NOW + 1_000);
    assert_eq!(rows[1][5], "0.00500000");
    assert_eq!(rows[1][8], 1);
    let limited = t
        .get("/api/v3/klines?symbol=BTCJPY&interval=1s&limit=1")
        .await;
    assert_eq!(limited.ok().as_array().unwrap().len(), 1);
    assert_eq!(limited.body[0][0], NOW + 1_000, "the most recent");
    let from = t
        .get(&format!(
            "/api/v3/klines?symbol=BTCJPY&interval=1s&startTime={}&limit=1",
            NOW + 1
        ))
        .await;
    assert_eq!(from.ok()[0][0], NOW, "a start inside a bucket includes it");
    // Every Binance interval is accepted.
    for i in [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
        "1w", "1M",
    ] {
        let r = t
            .get(&format!("/api/v3/klines?symbol=BTCJPY&interval={i}"))
            .await;
        assert_eq!(
            r.ok().as_array().unwrap().len(),
            if i == "1s" { 2 } else { 1 },
            "{i}"
        );
    }
    t.get("/api/v3/klines?symbol=BTCJPY&interval=2m")
        .await
        .err(400, -1120, "Invalid interval.");
    t.get("/api/v3/klines?symbol=BTCJPY").await.err(
        400,
        -1102,
        "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
    );
    t.get("/api/v3/klines?symbol=NOPE&interval=1m")
        .await
        .err(400, -1121, "Invalid symbol.");
}

#[tokio::test]
async fn tickers() {
    let mut t = setup();
    let u = t.user();
    // An old trade (more than a day ago) at 4 000 000, then today's two trades.
    t.order(
        &u,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .ok();
    let v = t.user();
    t.order(&v, "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01")
        .await
        .ok();
    t.b.advance_ms(2 * 86_400_000);
    two_trades(&mut t).await;
    // A resting bid for the book fields.
    t.order(
        &u,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.2&price=4900000",
    )
    .await
    .ok();

    let r = t.get("/api/v3/ticker/24hr?symbol=BTCJPY").await;
    let x = r.ok();
    assert!(x.is_object());
    assert!(
        x.get("time").is_none(),
        "a `time` key marks contract tickers"
    );
    assert_eq!(x["symbol"], "BTCJPY");
    assert_eq!(x["openPrice"], "5000000");
    assert_eq!(x["highPrice"], "5000100");
    assert_eq!(x["lowPrice"], "5000000");
    assert_eq!(x["lastPrice"], "5000100");
    assert_eq!(x["lastQty"], "0.00500000");
    assert_eq!(x["prevClosePrice"], "4000000");
    assert_eq!(x["priceChange"], "100");
    assert_eq!(x["priceChangePercent"], "0.002");
    assert_eq!(x["volume"], "0.01500000");
    assert_eq!(x["quoteVolume"], "75000");
    // 75 000 JPY / 0.015 BTC.
    assert_eq!(x["weightedAvgPrice"], "5000000");
    assert_eq!(x["count"], 2);
    assert_eq!(x["bidPrice"], "4900000");
    assert_eq!(x["bidQty"], "0.20000000");
    assert_eq!(x["askPrice"], "5000100");
    assert_eq!(x["askQty"], "0.00500000");
    assert_eq!(x["closeTime"], t.b.now_ms());

    let all = t.get("/api/v3/ticker/24hr").await;
    let all = all.ok().as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["symbol"], "BTCUSD");
    assert_eq!(all[1]["count"], 0);
    assert_eq!(all[1]["lastPrice"], "0.00");
    assert_eq!(all[1]["firstId"], -1);
    let list = t
        .get("/api/v3/ticker/24hr?symbols=%5B%22BTCJPY%22%5D")
        .await;
    assert_eq!(list.ok().as_array().unwrap().len(), 1);
    t.get("/api/v3/ticker/24hr?symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");

    let p = t.get("/api/v3/ticker/price?symbol=BTCJPY").await;
    assert_eq!(
        p.ok(),
        &serde_json::json!({"symbol": "BTCJPY", "price": "5000100"})
    );
    let ps = t.get("/api/v3/ticker/price").await;
    assert_eq!(ps.ok().as_array().unwrap().len(), 2);
    t.get("/api/v3/ticker/price?symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");

    let bt = t.get("/api/v3/ticker/bookTicker?symbol=BTCJPY").await;
    assert_eq!(
        bt.ok(),
        &serde_json::json!({"symbol": "BTCJPY", "bidPrice": "4900000", "bidQty": "0.20000000",
            "askPrice": "5000100", "askQty": "0.00500000"})
    );
    let usd = t.get("/api/v3/ticker/bookTicker?symbol=BTCUSD").await;
    assert_eq!(usd.ok()["bidPrice"], "0.00");
    t.get("/api/v3/ticker/bookTicker?symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");
}

// ---- orders -----------------------------------------------------------------------

#[tokio::test]
async fn limit_order_rests_and_holds_funds() {
    let mut t = setup();
    let u = t.user();
    let r = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&newClientOrderId=x-TKT5PX2F5ee26b9919ef38ddc2a20d&newOrderRespType=FULL&type=LIMIT&quantity=0.01234&price=4000000&timeInForce=GTC",
        )
        .await;
    let o = r.ok();
    assert_eq!(o["symbol"], "BTCJPY");
    assert_eq!(o["clientOrderId"], "x-TKT5PX2F5ee26b9919ef38ddc2a20d");
    assert_eq!(o["orderListId"], -1);
    assert_eq!(o["transactTime"], NOW);
    assert_eq!(o["price"], "4000000");
    assert_eq!(o["origQty"], "0.01234000");
    assert_eq!(o["executedQty"], "0.00000000");
    assert_eq!(o["cummulativeQuoteQty"], "0");
    assert_eq!(o["status"], "NEW");
    assert_eq!(o["timeInForce"], "GTC");
    assert_eq!(o["type"], "LIMIT");
    assert_eq!(o["side"], "BUY");
    assert_eq!(o["selfTradePreventionMode"], "EXPIRE_MAKER");
    assert_eq!(o["fills"], serde_json::json!([]));
    assert!(o.get("code").is_none());
    // Held: the notional (49 360 JPY) plus the taker fee on it (0.1 %, 49.36 → 50).
    assert_eq!(
        t.balance(&u, "JPY").await,
        ((START_JPY - 49_410).to_string(), "49410".to_owned())
    );

    // The entry carries the API origin: key number, client address, user agent.
    let entries = t.b.entries().unwrap();
    assert_eq!(
        entries.last().unwrap().origin,
        Origin::Api {
            key_id: u.number,
            ip: ip_to_bytes(IpAddr::V4(CLIENT_IP)),
            user_agent: "ccxt/4.5.90 python-requests".to_owned(),
        }
    );

    // ACK and RESULT answers.
    let ack = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=4000000&newOrderRespType=ACK",
        )
        .await;
    let mut keys: Vec<&String> = ack.ok().as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clientOrderId",
            "orderId",
            "orderListId",
            "symbol",
            "transactTime"
        ]
    );
    assert_eq!(s(&ack.body["clientOrderId"]).len(), 22, "generated");
    let result = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=4000000&newOrderRespType=RESULT",
        )
        .await;
    assert_eq!(result.ok()["status"], "NEW");
    assert!(result.body.get("fills").is_none());
    // LIMIT_MAKER answers ACK by default, as Binance.
    let maker = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=4000000",
        )
        .await;
    assert!(maker.ok().get("status").is_none());
    let maker = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=4000000&newOrderRespType=RESULT",
        )
        .await;
    assert_eq!(maker.ok()["type"], "LIMIT_MAKER");
    assert_eq!(maker.body["status"], "NEW");
}

#[tokio::test]
async fn market_order_fills_and_balances_follow_the_fees() {
    let mut t = setup();
    let maker = t.user();
    let taker = t.user();
    t.order(
        &maker,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=5000000",
    )
    .await
    .ok();
    let r = t
        .order(&taker, "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01")
        .await;
    let o = r.ok();
    assert_eq!(o["status"], "FILLED");
    assert_eq!(o["type"], "MARKET");
    assert_eq!(o["price"], "0");
    assert_eq!(o["origQty"], "0.01000000");
    assert_eq!(o["executedQty"], "0.01000000");
    assert_eq!(o["cummulativeQuoteQty"], "50000");
    let fills = o["fills"].as_array().unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0]["price"], "5000000");
    assert_eq!(fills[0]["qty"], "0.01000000");
    // 0.1 % of 50 000 JPY, in the quote asset.
    assert_eq!(fills[0]["commission"], "50");
    assert_eq!(fills[0]["commissionAsset"], "JPY");
    let trade_id = fills[0]["tradeId"].as_u64().unwrap();
    let public = t.get("/api/v3/trades?symbol=BTCJPY").await;
    assert_eq!(public.ok()[0]["id"], trade_id);

    assert_eq!(
        t.balance(&taker, "JPY").await,
        ((START_JPY - 50_000 - 50).to_string(), "0".to_owned())
    );
    assert_eq!(
        t.balance(&taker, "BTC").await,
        ("10.01000000".to_owned(), "0.00000000".to_owned())
    );
    assert_eq!(
        t.balance(&maker, "JPY").await,
        ((START_JPY + 50_000 - 50).to_string(), "0".to_owned())
    );
    assert_eq!(
        t.balance(&maker, "BTC").await,
        ("9.99000000".to_owned(), "0.00000000".to_owned())
    );
}

/// A notional that is not a whole yen: the buyer pays it rounded up, the seller gets
/// it rounded down, each fee is rounded up (the engine's rule, never in a customer's
/// favour), and the fill reports the rounded-down notional.
#[tokio::test]
async fn rounding_of_fractional_notionals() {
    let mut t = setup();
    let seller = t.user();
    let buyer = t.user();
    t.order(
        &seller,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.00123&price=4999999",
    )
    .await
    .ok();
    let r = t
        .order(
            &buyer,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.00123&price=5000000",
        )
        .await;
    let o = r.ok();
    assert_eq!(o["status"], "FILLED");
    assert_eq!(o["timeInForce"], "IOC");
    // Exact notional: 4 999 999 × 0.00123 = 6 149.99877 JPY; fee 6.14999877 JPY.
    let (exact_num, exact_den) = (4_999_999u64 * 123, 100_000u64);
    let floor = exact_num / exact_den;
    let ceil = exact_num.div_ceil(exact_den);
    let fee = (exact_num * 1_000).div_ceil(exact_den * 1_000_000);
    assert_eq!((floor, ceil, fee), (6_149, 6_150, 7));
    assert_eq!(o["cummulativeQuoteQty"], floor.to_string());
    assert_eq!(o["fills"][0]["commission"], fee.to_string());
    assert_eq!(
        t.balance(&buyer, "JPY").await.0,
        (START_JPY - ceil - fee).to_string()
    );
    assert_eq!(
        t.balance(&seller, "JPY").await.0,
        (START_JPY + floor - fee).to_string()
    );
    assert_eq!(t.balance(&buyer, "BTC").await.0, "10.00123000");
    assert_eq!(t.balance(&seller, "BTC").await.0, "9.99877000");
    // myTrades from both sides.
    let mine = t
        .signed(&buyer, Method::GET, "/api/v3/myTrades", "symbol=BTCJPY")
        .await;
    let row = &mine.ok()[0];
    assert_eq!(row["isBuyer"], true);
    assert_eq!(row["isMaker"], false);
    assert_eq!(row["price"], "4999999");
    assert_eq!(row["qty"], "0.00123000");
    assert_eq!(row["quoteQty"], "6149");
    assert_eq!(row["commission"], "7");
    assert_eq!(row["commissionAsset"], "JPY");
    assert_eq!(row["orderId"], o["orderId"]);
    let theirs = t
        .signed(&seller, Method::GET, "/api/v3/myTrades", "symbol=BTCJPY")
        .await;
    assert_eq!(theirs.ok()[0]["isBuyer"], false);
    assert_eq!(theirs.body[0]["isMaker"], true);
}

#[tokio::test]
async fn market_order_by_quote_amount() {
    let mut t = setup();
    let maker = t.user();
    let taker = t.user();
    t.order(
        &maker,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=5000000",
    )
    .await
    .ok();
    let r = t
        .order(
            &taker,
            "symbol=BTCJPY&side=BUY&type=MARKET&quoteOrderQty=300000",
        )
        .await;
    let o = r.ok();
    assert_eq!(o["status"], "FILLED");
    assert_eq!(o["origQuoteOrderQty"], "300000");
    // 300 000 JPY buys 0.06 BTC at 5 000 000.
    assert_eq!(o["executedQty"], "0.06000000");
    assert_eq!(o["origQty"], "0.06000000");
    assert_eq!(o["cummulativeQuoteQty"], "300000");
    assert_eq!(o["fills"][0]["commission"], "300");
    assert_eq!(
        t.balance(&taker, "JPY").await,
        ((START_JPY - 300_000 - 300).to_string(), "0".to_owned())
    );
    assert_eq!(t.balance(&taker, "BTC").await.0, "10.06000000");
    // The history agrees.
    let id = o["orderId"].as_u64().unwrap();
    let q = t
        .signed(
            &taker,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    assert_eq!(q.ok()["status"], "FILLED");
    assert_eq!(q.body["executedQty"], "0.06000000");
    assert_eq!(q.body["price"], "0");
    assert_eq!(q.body["type"], "MARKET");

    // A budget larger than the book: it buys what there is and expires.
    let r = t
        .order(
            &taker,
            "symbol=BTCJPY&side=BUY&type=MARKET&quoteOrderQty=10000000",
        )
        .await;
    assert_eq!(r.ok()["status"], "EXPIRED");
    assert_eq!(r.body["executedQty"], "0.94000000");
}

#[tokio::test]
async fn market_order_without_liquidity_expires() {
    let mut t = setup();
    let u = t.user();
    let r = t
        .order(&u, "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01")
        .await;
    assert_eq!(r.ok()["status"], "EXPIRED");
    assert_eq!(r.body["executedQty"], "0.00000000");
    assert_eq!(r.body["fills"], serde_json::json!([]));
}

#[tokio::test]
async fn order_rejections() {
    let mut t = setup();
    let u = t.user();
    let other = t.user();
    t.order(
        &other,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=5000000",
    )
    .await
    .ok();
    let cases: &[(&str, u16, i64, &str)] = &[
        // Business rules.
        ("symbol=BTCJPY&side=BUY&type=LIMIT_MAKER&quantity=0.01&price=5000000", 400, -2010,
            "Order would immediately match and take."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100&price=5000000", 400, -2010,
            "Account has insufficient balance for requested action."),
        ("symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=11&price=6000000", 400, -2010,
            "Account has insufficient balance for requested action."),
        // Filters.
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000011&price=5000000", 400, -1013,
            "Filter failure: LOT_SIZE"),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0&price=5000000", 400, -1013,
            "Filter failure: LOT_SIZE"),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=9001&price=1", 400, -1013,
            "Filter failure: LOT_SIZE"),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=0", 400, -1013,
            "Filter failure: PRICE_FILTER"),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=10000000001", 400, -1013,
            "Filter failure: PRICE_FILTER"),
        ("symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000.005", 400, -1111,
            "Parameter 'price' has too much precision."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=100", 400, -1013,
            "Filter failure: NOTIONAL"),
        ("symbol=BTCJPY&side=BUY&type=MARKET&quoteOrderQty=99", 400, -1013,
            "Filter failure: NOTIONAL"),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000000001&price=5000000", 400, -1111,
            "Parameter 'quantity' has too much precision."),
        // Parameters.
        ("symbol=BTCJPY&side=BUY&type=LIMIT&quantity=0.01&price=4000000", 400, -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&price=4000000", 400, -1102,
            "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01", 400, -1102,
            "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        ("side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000", 400, -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ("symbol=BTCJPY&side=BUY&type=MARKET", 400, -1102,
            "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"),
        ("symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01&quoteOrderQty=100", 400, -1128,
            "Combination of optional parameters invalid."),
        ("symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01&price=5000000", 400, -1106,
            "Parameter 'price' sent when not required."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT_MAKER&timeInForce=GTC&quantity=0.01&price=4000000", 400, -1106,
            "Parameter 'timeInForce' sent when not required."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000&stopPrice=1", 400, -1106,
            "Parameter 'stopPrice' sent when not required."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=abc&price=4000000", 400, -1100,
            "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=-1&price=4000000", 400, -1100,
            "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTD&quantity=0.01&price=4000000", 400, -1115,
            "Invalid timeInForce."),
        ("symbol=BTCJPY&side=HOLD&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000", 400, -1117,
            "Invalid side."),
        ("symbol=BTCJPY&side=BUY&type=OCO&quantity=0.01&price=4000000", 400, -1116,
            "Invalid orderType."),
        ("symbol=BTCJPY&side=BUY&type=STOP_LOSS_LIMIT&quantity=0.01&price=4000000", 400, -2010,
            "Stop loss limit orders are not supported for this symbol."),
        ("symbol=ETHBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000", 400, -1121,
            "Invalid symbol."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000&newClientOrderId=has%20space", 400, -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[a-zA-Z0-9-_]{1,36}$'."),
        ("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000&selfTradePreventionMode=DECREMENT", 400, -1130,
            "Data sent for parameter 'selfTradePreventionMode' is not valid."),
    ];
    let before = t.b.entries().unwrap().len();
    for (params, status, code, msg) in cases {
        let r = t.order(&u, params).await;
        assert_eq!(
            (r.status.as_u16(), &r.body),
            (*status, &serde_json::json!({"code": code, "msg": msg})),
            "{params}"
        );
    }
    // Parameter errors and the step/precision checks never reach the engine; the
    // business rules and the filters the engine owns (min/max quantity, price and
    // notional) do, and change nothing: three business rejections, four filters.
    assert_eq!(t.b.entries().unwrap().len(), before + 3 + 4);
    assert_eq!(
        t.balance(&u, "JPY").await,
        (START_JPY.to_string(), "0".to_owned())
    );

    // A duplicate client order id among open orders.
    let p = "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000&newClientOrderId=dup-1";
    t.order(&u, p).await.ok();
    t.order(&u, p)
        .await
        .err(400, -2010, "Duplicate order sent.");

    // A halted market.
    t.b.halt(BTCJPY).unwrap();
    t.order(
        &u,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .err(400, -2010, "Market is closed.");
}

#[tokio::test]
async fn test_order_validates_without_submitting() {
    let mut t = setup();
    let u = t.user();
    let before = t.b.entries().unwrap().len();
    let ok = t
        .signed(
            &u,
            Method::POST,
            "/api/v3/order/test",
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
        )
        .await;
    assert_eq!(ok.ok(), &serde_json::json!({}));
    let rates = t
        .signed(
            &u,
            Method::POST,
            "/api/v3/order/test",
            "symbol=BTCJPY&side=BUY&type=MARKET&quantity=0.01&computeCommissionRates=true",
        )
        .await;
    assert_eq!(
        rates.ok()["standardCommissionForOrder"],
        serde_json::json!({"maker": "0.00100000", "taker": "0.00100000"})
    );
    t.signed(
        &u,
        Method::POST,
        "/api/v3/order/test",
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=100",
    )
    .await
    .err(400, -1013, "Filter failure: NOTIONAL");
    t.signed(
        &u,
        Method::POST,
        "/api/v3/order/test",
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=9001&price=1",
    )
    .await
    .err(400, -1013, "Filter failure: LOT_SIZE");
    t.signed(
        &u,
        Method::POST,
        "/api/v3/order/test",
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01",
    )
    .await
    .err(
        400,
        -1102,
        "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
    );
    assert_eq!(t.b.entries().unwrap().len(), before, "nothing submitted");
    let open = t
        .signed(&u, Method::GET, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    assert_eq!(open.ok(), &serde_json::json!([]));
}

// ---- authentication ---------------------------------------------------------------

#[tokio::test]
async fn authentication_failures() {
    let mut t = setup();
    let u = t.user();
    // Expired: 10 001 ms old with recvWindow 10 000.
    let old = format!("symbol=BTCJPY&timestamp={}&recvWindow=10000", NOW - 10_001);
    t.signed_raw(
        &u,
        Method::GET,
        "/api/v3/openOrders",
        &old,
        &u.secret.sign(old.as_bytes()),
    )
    .await
    .err(
        400,
        -1021,
        "Timestamp for this request is outside of the recvWindow.",
    );
    let ahead = format!("symbol=BTCJPY&timestamp={}", NOW + 1_000);
    t.signed_raw(
        &u,
        Method::GET,
        "/api/v3/openOrders",
        &ahead,
        &u.secret.sign(ahead.as_bytes()),
    )
    .await
    .err(
        400,
        -1021,
        "Timestamp for this request was 1000ms ahead of the server's time.",
    );
    // Signed with someone else's secret, and a tampered payload.
    let other = t.user();
    let payload = format!("timestamp={NOW}");
    t.signed_raw(
        &u,
        Method::GET,
        "/api/v3/account",
        &payload,
        &other.secret.sign(payload.as_bytes()),
    )
    .await
    .err(400, -1022, "Signature for this request is not valid.");
    let signed_for = format!("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1000&timestamp={NOW}");
    let sent = signed_for.replace("price=1000", "price=2000");
    t.signed_raw(
        &u,
        Method::POST,
        "/api/v3/order",
        &sent,
        &u.secret.sign(signed_for.as_bytes()),
    )
    .await
    .err(400, -1022, "Signature for this request is not valid.");
    // Missing signature.
    let req = Request::get(format!("/api/v3/account?timestamp={NOW}"))
        .header("X-MBX-APIKEY", u.key.as_str())
        .body(Body::empty())
        .unwrap();
    t.send(req).await.err(
        400,
        -1102,
        "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
    );
    // Missing, malformed and unknown keys.
    let req = Request::get(format!("/api/v3/account?timestamp={NOW}&signature=00"))
        .body(Body::empty())
        .unwrap();
    t.send(req).await.err(401, -2014, "API-key format invalid.");
    let req = Request::get(format!("/api/v3/account?timestamp={NOW}&signature=00"))
        .header("X-MBX-APIKEY", "short")
        .body(Body::empty())
        .unwrap();
    t.send(req).await.err(401, -2014, "API-key format invalid.");
    let stranger = User {
        key: ApiKeyId::from_random([9; 32]),
        ..u.clone()
    };
    t.signed(&stranger, Method::GET, "/api/v3/account", "")
        .await
        .err(
            401,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        );
    // A read-only key cannot trade.
    let reader = t.user_with(Permissions {
        read: true,
        trade: false,
        withdraw: false,
    });
    t.signed(&reader, Method::GET, "/api/v3/account", "")
        .await
        .ok();
    t.order(
        &reader,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .err(
        401,
        -2015,
        "Invalid API-key, IP, or permissions for action.",
    );
    // Signed endpoints stay signed: the stubs too.
    t.get("/sapi/v1/margin/allPairs")
        .await
        .err(401, -2014, "API-key format invalid.");
}

// ---- query and cancel -------------------------------------------------------------

#[tokio::test]
async fn query_and_cancel_orders() {
    let mut t = setup();
    let u = t.user();
    let thief = t.user();
    let placed = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.02&price=4000000&newClientOrderId=mine-1",
        )
        .await;
    let id = placed.ok()["orderId"].as_u64().unwrap();

    let by_id = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    let o = by_id.ok();
    assert_eq!(o["orderId"], id);
    assert_eq!(o["clientOrderId"], "mine-1");
    assert_eq!(o["status"], "NEW");
    assert_eq!(o["price"], "4000000");
    assert_eq!(o["origQty"], "0.02000000");
    assert_eq!(o["isWorking"], true);
    assert_eq!(o["time"], NOW);
    let by_client = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            "symbol=BTCJPY&origClientOrderId=mine-1",
        )
        .await;
    assert_eq!(by_client.ok()["orderId"], id);

    // Someone else's order does not exist for them, by id or by client id.
    t.signed(
        &thief,
        Method::GET,
        "/api/v3/order",
        &format!("symbol=BTCJPY&orderId={id}"),
    )
    .await
    .err(400, -2013, "Order does not exist.");
    t.signed(
        &thief,
        Method::GET,
        "/api/v3/order",
        "symbol=BTCJPY&origClientOrderId=mine-1",
    )
    .await
    .err(400, -2013, "Order does not exist.");
    t.signed(
        &thief,
        Method::DELETE,
        "/api/v3/order",
        &format!("symbol=BTCJPY&orderId={id}"),
    )
    .await
    .err(400, -2011, "Unknown order sent.");
    t.signed(
        &thief,
        Method::DELETE,
        "/api/v3/order",
        "symbol=BTCJPY&origClientOrderId=mine-1",
    )
    .await
    .err(400, -2011, "Unknown order sent.");
    // The wrong market, a missing id, an unknown id.
    t.signed(
        &u,
        Method::GET,
        "/api/v3/order",
        &format!("symbol=BTCUSD&orderId={id}"),
    )
    .await
    .err(400, -2013, "Order does not exist.");
    t.signed(&u, Method::GET, "/api/v3/order", "symbol=BTCJPY")
        .await
        .err(
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        );
    t.signed(
        &u,
        Method::GET,
        "/api/v3/order",
        "symbol=BTCJPY&orderId=999999",
    )
    .await
    .err(400, -2013, "Order does not exist.");
    t.signed(&u, Method::GET, "/api/v3/order", &format!("orderId={id}"))
        .await
        .err(
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );

    // Cancel: the answer, and the hold is released.
    let held = t.balance(&u, "JPY").await;
    assert_ne!(held.1, "0");
    let c = t
        .signed(
            &u,
            Method::DELETE,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}&newClientOrderId=cancel-1"),
        )
        .await;
    let c = c.ok();
    assert_eq!(c["status"], "CANCELED");
    assert_eq!(c["orderId"], id);
    assert_eq!(c["origClientOrderId"], "mine-1");
    assert_eq!(c["clientOrderId"], "cancel-1");
    assert_eq!(c["origQty"], "0.02000000");
    assert_eq!(c["executedQty"], "0.00000000");
    assert_eq!(
        t.balance(&u, "JPY").await,
        (START_JPY.to_string(), "0".to_owned())
    );
    let after = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    assert_eq!(after.ok()["status"], "CANCELED");
    assert_eq!(after.body["isWorking"], false);
    // Cancelling again: unknown.
    t.signed(
        &u,
        Method::DELETE,
        "/api/v3/order",
        &format!("symbol=BTCJPY&orderId={id}"),
    )
    .await
    .err(400, -2011, "Unknown order sent.");
    // By client order id.
    t.order(
        &u,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.02&price=6000000&newClientOrderId=mine-2",
    )
    .await
    .ok();
    let c = t
        .signed(
            &u,
            Method::DELETE,
            "/api/v3/order",
            "symbol=BTCJPY&origClientOrderId=mine-2",
        )
        .await;
    assert_eq!(c.ok()["status"], "CANCELED");
    assert_eq!(c.body["side"], "SELL");
    assert_eq!(
        t.balance(&u, "BTC").await,
        ("10.00000000".to_owned(), "0.00000000".to_owned())
    );
}

#[tokio::test]
async fn open_orders_cancel_all_and_history() {
    let mut t = setup();
    let u = t.user();
    let other = t.user();
    for price in ["4000000", "4100000"] {
        t.order(
            &u,
            &format!(
                "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}"
            ),
        )
        .await
        .ok();
    }
    t.order(
        &u,
        "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000.50",
    )
    .await
    .ok();
    t.order(
        &other,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .ok();

    let jpy = t
        .signed(&u, Method::GET, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    assert_eq!(jpy.ok().as_array().unwrap().len(), 2);
    let all = t.signed(&u, Method::GET, "/api/v3/openOrders", "").await;
    let all = all.ok().as_array().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["symbol"], "BTCUSD");
    assert_eq!(all[2]["price"], "30000.50");
    t.signed(&u, Method::GET, "/api/v3/openOrders", "symbol=ETHBTC")
        .await
        .err(400, -1121, "Invalid symbol.");

    let cancelled = t
        .signed(&u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    let rows = cancelled.ok().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["status"] == "CANCELED"));
    let again = t
        .signed(&u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    assert_eq!(again.ok(), &serde_json::json!([]));
    t.signed(&u, Method::DELETE, "/api/v3/openOrders", "")
        .await
        .err(
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    // The other customer's order is untouched.
    let theirs = t
        .signed(&other, Method::GET, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    assert_eq!(theirs.ok().as_array().unwrap().len(), 1);
    // USD order still open.
    let left = t.signed(&u, Method::GET, "/api/v3/openOrders", "").await;
    assert_eq!(left.ok().as_array().unwrap().len(), 1);

    // A fill for the history: a third customer sells into the other's bid.
    let third = t.user();
    let sold = t
        .order(
            &third,
            "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=3900000",
        )
        .await;
    assert_eq!(sold.ok()["status"], "FILLED");
    let sell_id = sold.body["orderId"].as_u64().unwrap();
    let hist = t
        .signed(&u, Method::GET, "/api/v3/allOrders", "symbol=BTCJPY")
        .await;
    let statuses: Vec<&str> = hist
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["status"]))
        .collect();
    assert_eq!(statuses, ["CANCELED", "CANCELED"]);
    let theirs = t
        .signed(&other, Method::GET, "/api/v3/allOrders", "symbol=BTCJPY")
        .await;
    let rows = theirs.ok().as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "FILLED");
    assert_eq!(rows[0]["side"], "BUY");
    assert_eq!(rows[0]["executedQty"], "0.01000000");
    assert_eq!(rows[0]["cummulativeQuoteQty"], "40000");
    let limited = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/allOrders",
            "symbol=BTCJPY&limit=1",
        )
        .await;
    assert_eq!(limited.ok().as_array().unwrap().len(), 1, "limit");
    t.signed(&u, Method::GET, "/api/v3/allOrders", "")
        .await
        .err(
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );

    // myTrades: own fills only; by order id.
    let mine = t
        .signed(&other, Method::GET, "/api/v3/myTrades", "symbol=BTCJPY")
        .await;
    let fills = mine.ok().as_array().unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0]["isBuyer"], true);
    assert_eq!(fills[0]["isMaker"], true);
    assert_eq!(fills[0]["price"], "4000000");
    assert_eq!(fills[0]["commission"], "40");
    let by_order = t
        .signed(
            &third,
            Method::GET,
            "/api/v3/myTrades",
            &format!("symbol=BTCJPY&orderId={sell_id}"),
        )
        .await;
    let by_order = by_order.ok().as_array().unwrap();
    assert_eq!(by_order.len(), 1);
    assert_eq!(by_order[0]["isBuyer"], false);
    assert_eq!(by_order[0]["isMaker"], false);
    let none = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/myTrades",
            &format!("symbol=BTCJPY&orderId={sell_id}"),
        )
        .await;
    assert_eq!(none.ok(), &serde_json::json!([]), "not the caller's order");
    t.signed(&u, Method::GET, "/api/v3/myTrades", "symbol=NOPE")
        .await
        .err(400, -1121, "Invalid symbol.");
}

// ---- account and wallet -----------------------------------------------------------

#[tokio::test]
async fn account_and_coins() {
    let mut t = setup();
    let u = t.user();
    let fresh_id = t.b.create_user().unwrap();
    t.b.deposit(fresh_id, BTC, 5).unwrap();
    let (key, secret) = t.b.add_hmac_key(fresh_id, 99, ALL).unwrap();
    let fresh = User {
        id: fresh_id,
        key,
        secret,
        number: 99,
    };

    let r = t.signed(&u, Method::GET, "/api/v3/account", "").await;
    let a = r.ok();
    assert_eq!(a["makerCommission"], 10);
    assert_eq!(a["takerCommission"], 10);
    assert_eq!(a["commissionRates"]["maker"], "0.00100000");
    assert_eq!(a["accountType"], "SPOT");
    assert_eq!(a["canTrade"], true);
    assert_eq!(a["uid"], u.id.0);
    assert_eq!(
        a["balances"],
        serde_json::json!([
            {"asset": "BTC", "free": "10.00000000", "locked": "0.00000000"},
            {"asset": "JPY", "free": "100000000", "locked": "0"},
            {"asset": "USD", "free": "1000000.00", "locked": "0.00"},
        ])
    );
    let f = t
        .signed(
            &fresh,
            Method::GET,
            "/api/v3/account",
            "omitZeroBalances=true",
        )
        .await;
    assert_eq!(
        f.ok()["balances"],
        serde_json::json!([{"asset": "BTC", "free": "0.00000005", "locked": "0.00000000"}])
    );
    let all = t
        .signed(
            &fresh,
            Method::GET,
            "/api/v3/account",
            "omitZeroBalances=false",
        )
        .await;
    assert_eq!(all.ok()["balances"].as_array().unwrap().len(), 3);
    t.signed(
        &fresh,
        Method::GET,
        "/api/v3/account",
        "omitZeroBalances=yes",
    )
    .await
    .err(
        400,
        -1130,
        "Data sent for parameter 'omitZeroBalances' is not valid.",
    );

    // Fee tier 2 (0.00 % / 0.05 %).
    t.b.run_ok(kura_engine::Command::SetFeeTier {
        user: u.id,
        tier: 2,
    })
    .unwrap();
    let r = t.signed(&u, Method::GET, "/api/v3/account", "").await;
    assert_eq!(r.ok()["makerCommission"], 0);
    assert_eq!(r.body["takerCommission"], 5);
    assert_eq!(r.body["commissionRates"]["taker"], "0.00050000");

    let coins = t
        .signed(&u, Method::GET, "/sapi/v1/capital/config/getall", "")
        .await;
    let coins = coins.ok().as_array().unwrap();
    let names: Vec<&str> = coins.iter().map(|c| s(&c["coin"])).collect();
    assert_eq!(names, ["BTC", "JPY", "USD"]);
    assert_eq!(coins[0]["isLegalMoney"], false);
    assert_eq!(coins[1]["isLegalMoney"], true);
    assert_eq!(coins[2]["isLegalMoney"], true);
    assert_eq!(coins[0]["free"], "10.00000000");
    let net = &coins[0]["networkList"][0];
    assert_eq!(net["network"], "BTC");
    assert_eq!(net["isDefault"], true);
    assert_eq!(net["withdrawIntegerMultiple"], "0.00000001");
    assert_eq!(coins[1]["networkList"], serde_json::json!([]));
    let req = Request::get("/sapi/v1/capital/config/getall")
        .body(Body::empty())
        .unwrap();
    t.send(req).await.err(401, -2014, "API-key format invalid.");
}

// ---- stubs, unknown paths, overload ------------------------------------------------

#[tokio::test]
async fn stubs_and_unknown_paths() {
    let mut t = setup();
    let u = t.user();
    for path in ["/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"] {
        let r = t.get(path).await;
        assert_eq!(
            r.ok(),
            &serde_json::json!({"timezone": "UTC", "serverTime": NOW, "rateLimits": [],
                "exchangeFilters": [], "symbols": []})
        );
    }
    for path in [
        "/sapi/v1/margin/allPairs",
        "/sapi/v1/margin/isolated/allPairs",
    ] {
        let r = t.signed(&u, Method::GET, path, "").await;
        assert_eq!(r.ok(), &serde_json::json!([]));
    }
    t.get("/api/v3/nothing")
        .await
        .err(404, -1020, "This operation is not supported.");
    t.get("/")
        .await
        .err(404, -1020, "This operation is not supported.");
    let req = Request::put("/api/v3/order").body(Body::empty()).unwrap();
    t.send(req)
        .await
        .err(405, -1020, "This operation is not supported.");
}

#[tokio::test]
async fn cancels_are_answered_from_memory_while_the_read_model_is_down() {
    let mut t = setup();
    let u = t.user();
    let seller = t.user();
    let placed = t
        .order(
            &u,
            "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.03&price=4000000&newClientOrderId=part",
        )
        .await;
    let id = placed.ok()["orderId"].as_u64().unwrap();
    for (price, cid) in [("3900000", "a"), ("3800000", "b")] {
        t.order(
            &u,
            &format!("symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}&newClientOrderId={cid}"),
        )
        .await
        .ok();
    }
    // A third of the first order fills.
    t.order(
        &seller,
        "symbol=BTCJPY&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .ok();
    let before = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    assert_eq!(before.ok()["status"], "PARTIALLY_FILLED");

    t.b.set_read_model_down(true);
    let down = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    assert!(down.status.is_server_error(), "{down:?}");
    let c = t
        .signed(
            &u,
            Method::DELETE,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}&newClientOrderId=stop"),
        )
        .await;
    let c = c.ok().clone();
    assert_eq!(c["status"], "CANCELED");
    assert_eq!(c["origClientOrderId"], "part");
    assert_eq!(c["clientOrderId"], "stop");
    assert_eq!(c["origQty"], "0.03000000");
    assert_eq!(c["executedQty"], "0.01000000");
    assert_eq!(c["cummulativeQuoteQty"], "40000");
    let by_client = t
        .signed(
            &u,
            Method::DELETE,
            "/api/v3/order",
            "symbol=BTCJPY&origClientOrderId=a",
        )
        .await;
    assert_eq!(by_client.ok()["price"], "3900000");
    let all = t
        .signed(&u, Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY")
        .await;
    let all = all.ok().as_array().unwrap().clone();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["origClientOrderId"], "b");

    // Back up: the read model shows what the cancel answered.
    t.b.set_read_model_down(false);
    let after = t
        .signed(
            &u,
            Method::GET,
            "/api/v3/order",
            &format!("symbol=BTCJPY&orderId={id}"),
        )
        .await;
    let after = after.ok();
    for key in [
        "symbol",
        "orderId",
        "price",
        "origQty",
        "executedQty",
        "cummulativeQuoteQty",
        "status",
        "timeInForce",
        "type",
        "side",
        "origQuoteOrderQty",
    ] {
        assert_eq!(after[key], c[key], "{key}");
    }
}

#[tokio::test]
async fn overload_is_503() {
    let mut t = setup();
    let u = t.user();
    t.b.set_busy(true);
    t.order(
        &u,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .err(
        503,
        -1008,
        "Server is currently overloaded with other requests. Please try again in a few minutes.",
    );
    // Reads are still served.
    t.signed(&u, Method::GET, "/api/v3/account", "").await.ok();
    t.b.set_busy(false);
    t.order(
        &u,
        "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=4000000",
    )
    .await
    .ok();
}

#[tokio::test]
async fn garbage_never_panics() {
    let mut t = setup();
    let u = t.user();
    let paths = [
        "/api/v3/depth?symbol=%ZZ",
        "/api/v3/depth?symbol=BTCJPY&symbol=BTCJPY",
        "/api/v3/klines?symbol=BTCJPY&interval=1m&startTime=99999999999999999999",
        "/api/v3/klines?symbol=BTCJPY&interval=1m&startTime=5&endTime=1",
        "/api/v3/ticker/24hr?symbols=%5B",
        "/api/v3/ticker/24hr?symbols=%5B1%5D",
        "/api/v3/exchangeInfo?symbols=%5B%22%22%5D",
    ];
    for p in paths {
        let r = t.get(p).await;
        assert_eq!(r.status.as_u16() / 100, 4, "{p}: {}", r.body);
        assert!(r.body["code"].as_i64().unwrap() < 0, "{p}");
    }
    // A huge limit is capped, not refused.
    t.get("/api/v3/aggTrades?symbol=BTCJPY&limit=99999999999")
        .await
        .ok();
    let r = t
        .order(&u, "symbol=BTCJPY&side=BUY&type=LIMIT&timeInForce=GTC&quantity=99999999999999999999&price=1")
        .await;
    r.err(400, -1108, "Parameter 'quantity' overflowed.");
}
