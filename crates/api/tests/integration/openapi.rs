//! The OpenAPI document ([`kura_api::openapi`]) against the code, so it cannot drift:
//!
//! - its operations are exactly the router's routes ([`kura_api::http::ROUTES`]);
//! - every failure class the error table maps is documented where it can occur: each
//!   authentication failure on every signed operation, each engine rejection on the
//!   order operations, the limits' 429/418 everywhere, each parameter's errors (from
//!   the parameter's documented type) on the operations that take it;
//! - the router itself, probed in process with good and bad requests for every
//!   operation, answers only documented statuses, documented codes for each status,
//!   and success bodies that match the documented schema.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kura_api::auth::{ApiKeyId, HmacSecret, Permissions};
use kura_api::backend::Backend;
use kura_api::errors::{api_error, Failure, Op};
use kura_api::http::ROUTES;
use kura_api::memory::MemoryBackend;
use kura_api::openapi::{auth_failures, document, PATH};
use kura_api::{router, MasterKey};
use kura_engine::genesis::{BTC, JPY, USD};
use kura_engine::Reject;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tower::ServiceExt;

const NOW: u64 = 1_700_000_000_000;
/// More than a rate-limit window: the probe moves the clock by this before each
/// request, so no probe is refused for weight.
const WINDOW_MS: u64 = 61_000;

/// (METHOD, path) of every documented operation.
fn documented() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in document()["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

fn operation(method: &str, path: &str) -> &'static Value {
    &document()["paths"][path][method.to_ascii_lowercase()]
}

fn signed(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|s| !s.is_empty())
}

/// The documented parameters of an operation: (name, required, schema).
fn params(op: &Value) -> Vec<(String, bool, Value)> {
    if let Some(list) = op["parameters"].as_array() {
        return list
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["required"].as_bool().unwrap_or(false),
                    p["schema"].clone(),
                )
            })
            .collect();
    }
    let schema = &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| (k.clone(), required.contains(&k.as_str()), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the document lists `(status, code)` for the operation.
fn documents(op: &Value, status: u16, code: i32) -> bool {
    op["responses"][status.to_string()]["content"]["application/json"]["schema"]["properties"]
        ["code"]["enum"]
        .as_array()
        .is_some_and(|codes| codes.iter().any(|c| c.as_i64() == Some(i64::from(code))))
}

#[track_caller]
fn assert_documented(method: &str, path: &str, failure: &Failure) {
    let e = api_error(failure);
    assert!(
        documents(operation(method, path), e.status, e.code),
        "{method} {path} can answer {} {} ({}), which the document does not list",
        e.status,
        e.code,
        e.msg
    );
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.as_str().to_owned(), (*p).to_owned()))
        .collect();
    let route_set: BTreeSet<(String, String)> = routes.iter().cloned().collect();
    assert_eq!(route_set.len(), routes.len(), "ROUTES has no duplicates");
    let docs = documented();
    let undocumented: Vec<_> = route_set.difference(&docs).collect();
    let unrouted: Vec<_> = docs.difference(&route_set).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes without an operation in the document: {undocumented:?}; operations in \
         the document the router does not serve: {unrouted:?}"
    );
    assert_eq!(document()["openapi"], "3.0.3");
    assert!(route_set.contains(&("GET".to_owned(), PATH.to_owned())));
}

#[test]
fn every_failure_class_is_documented_where_it_can_occur() {
    let ids: BTreeSet<&str> = documented()
        .iter()
        .map(|(m, p)| operation(m, p)["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), documented().len(), "operation ids are unique");
    for (method, path) in documented() {
        let op = operation(&method, &path);
        assert!(op["responses"]["200"].is_object(), "{method} {path}: 200");
        // Admission runs before every handler.
        for f in [
            Failure::WeightLimit {
                limit: 6000,
                interval: "1 MINUTE",
            },
            Failure::Banned { until_ms: 1 },
        ] {
            assert_documented(&method, &path, &f);
        }
        if signed(op) {
            for e in auth_failures() {
                assert_documented(&method, &path, &Failure::Auth(e));
            }
        }
        let ps = params(op);
        if !ps.is_empty() {
            // Any request's parameters: a broken escape, a duplicate, too many.
            assert!(
                documents(op, 400, -1100) && documents(op, 400, -1101),
                "{path}"
            );
        }
        for (name, required, schema) in ps {
            let why = format!("{method} {path} parameter {name}");
            if required {
                assert!(documents(op, 400, -1102), "{why}: -1102");
            }
            match schema["type"].as_str() {
                Some("integer") => {
                    assert!(
                        documents(op, 400, -1100) && documents(op, 400, -1108),
                        "{why}"
                    )
                }
                Some("string") if schema["enum"].is_array() => assert!(
                    [-1100, -1115, -1116, -1117, -1120, -1130, -2010]
                        .iter()
                        .any(|c| documents(op, 400, *c)),
                    "{why}"
                ),
                _ => {}
            }
            if name == "symbol" || name == "symbols" {
                assert!(documents(op, 400, -1121), "{why}: -1121");
            }
            if schema["pattern"]
                .as_str()
                .is_some_and(|p| p.contains("\\."))
            {
                assert!(documents(op, 400, -1111), "{why}: -1111 (too precise)");
            }
        }
    }
    let order_ops = [
        ("POST", "/api/v3/order", Op::NewOrder),
        ("POST", "/api/v3/order/test", Op::NewOrder),
        ("DELETE", "/api/v3/order", Op::CancelOrder),
        ("DELETE", "/api/v3/openOrders", Op::CancelOrder),
    ];
    for (method, path, op) in order_ops {
        for reject in every_reject() {
            assert_documented(method, path, &Failure::Reject { reject, op });
        }
        assert_documented(method, path, &Failure::Busy);
    }
    assert_documented(
        "GET",
        "/api/v3/order",
        &Failure::Reject {
            reject: Reject::UnknownOrder,
            op: Op::Query,
        },
    );
    assert_documented("POST", "/api/v3/order", &Failure::TooManyOrders);
}

/// The engine rejections an order or a cancel can meet.
fn every_reject() -> Vec<Reject> {
    vec![
        Reject::UnknownUser,
        Reject::UnknownMarket,
        Reject::UnknownOrder,
        Reject::InsufficientFunds,
        Reject::AmountOverflow,
        Reject::ZeroAmount,
        Reject::InvalidPrice,
        Reject::InvalidQuantity,
        Reject::QuantityBelowMinimum,
        Reject::QuantityAboveMaximum,
        Reject::NotionalBelowMinimum,
        Reject::NotionalAboveMaximum,
        Reject::PostOnlyWouldTake,
        Reject::InvalidTimeInForce,
        Reject::DuplicateClientOrderId,
        Reject::MarketHalted,
        Reject::TooManyOpenOrders,
        Reject::BookFull,
        Reject::TooManyPriceLevels,
        Reject::PriceLevelFull,
        Reject::TooManyUsers,
    ]
}

// ---- the router, probed ------------------------------------------------------------

struct Probe {
    b: MemoryBackend,
    app: axum::Router,
    key: ApiKeyId,
    secret: HmacSecret,
    sent: std::sync::atomic::AtomicUsize,
}

fn probe() -> Probe {
    let b = MemoryBackend::new(MasterKey::from_bytes([9; 32]), NOW).unwrap();
    let user = b.create_user().unwrap();
    for (asset, amount) in [(BTC, 1_000_000_000), (JPY, 100_000_000), (USD, 100_000_000)] {
        b.deposit(user, asset, amount).unwrap();
    }
    let all = Permissions {
        read: true,
        trade: true,
        withdraw: false,
    };
    let (key, secret) = b.add_hmac_key(user, 1, all).unwrap();
    let app = router(b.clone()).layer(MockConnectInfo(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        40_000,
    )));
    Probe {
        b,
        app,
        key,
        secret,
        sent: std::sync::atomic::AtomicUsize::new(0),
    }
}

/// How a signed probe is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signing {
    Good,
    NoKey,
    BadSignature,
    Expired,
    WideWindow,
}

impl Probe {
    /// Send `pairs` to the operation, signed as `signing` when it is signed; check the
    /// answer against the document.
    async fn check(&self, method: &str, path: &str, pairs: &[(String, String)], signing: Signing) {
        self.b.advance_ms(WINDOW_MS);
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let op = operation(method, path);
        let mut raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut req = Request::builder().method(method);
        if signed(op) {
            let now = self.b.now_ms();
            let ts = if signing == Signing::Expired {
                now - 60_000
            } else {
                now
            };
            raw.push(format!("timestamp={ts}"));
            let window = if signing == Signing::WideWindow {
                70_000
            } else {
                10_000
            };
            raw.push(format!("recvWindow={window}"));
            let payload = raw.join("&");
            let sig = if signing == Signing::BadSignature {
                "00".repeat(32)
            } else {
                self.secret.sign(payload.as_bytes())
            };
            raw.push(format!("signature={sig}"));
            if signing != Signing::NoKey {
                req = req.header("X-MBX-APIKEY", self.key.as_str());
            }
        }
        let text = raw.join("&");
        let req = if method == "POST" {
            req.uri(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(text.clone()))
        } else if text.is_empty() {
            req.uri(path).body(Body::empty())
        } else {
            req.uri(format!("{path}?{text}")).body(Body::empty())
        }
        .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}?{text}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let why = format!("{method} {path} [{text}] ({signing:?}) answered {status} {body}");
        let response = &op["responses"][status.as_str()];
        assert!(response.is_object(), "{why}: status not documented");
        let schema = &response["content"]["application/json"]["schema"];
        if let Err(at) = conforms(&body, schema) {
            panic!("{why}: does not match the documented schema at {at}");
        }
        if status != StatusCode::OK {
            let code = i32::try_from(body["code"].as_i64().unwrap()).unwrap();
            assert!(documents(op, status.as_u16(), code), "{why}");
        }
    }
}

/// A good value for a parameter, by name.
fn good(name: &str) -> Option<&'static str> {
    Some(match name {
        "symbol" => "BTCJPY",
        "interval" => "1m",
        "side" => "BUY",
        "type" => "LIMIT",
        "timeInForce" => "GTC",
        "quantity" => "0.01",
        "price" => "5000000",
        "orderId" => "1",
        _ => return None,
    })
}

const BAD_VALUES: &[&str] = &[
    "",
    "x",
    "-1",
    "0",
    "1",
    "5001",
    "99999999999999999999999",
    "9223372036854775807",
    "1.5",
    "0.000000000000000000001",
    "%zz",
    "BTCUSD",
    "NOPE",
    "%5B%22BTCJPY%22%5D",
    "%5B%22BTCJPY%22%2C%22NOPE%22%5D",
    "%5B",
    "LIMIT",
    "MARKET",
    "LIMIT_MAKER",
    "STOP_LOSS",
    "GTC",
    "IOC",
    "SELL",
    "true",
    "1s",
    "1M",
    "FULL",
    "ACK",
    "EXPIRE_BOTH",
    "a%20b",
];

#[tokio::test]
async fn the_router_answers_only_what_the_document_lists() {
    let p = probe();
    for (method, path) in documented() {
        let op = operation(&method, &path);
        let ps: Vec<(String, bool, Value)> = params(op)
            .into_iter()
            .filter(|(n, _, _)| !["timestamp", "recvWindow", "signature"].contains(&n.as_str()))
            .collect();
        let base: Vec<(String, String)> = ps
            .iter()
            .filter(|(_, required, _)| *required)
            .filter_map(|(n, _, _)| good(n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        p.check(&method, &path, &base, Signing::Good).await;
        p.check(&method, &path, &[], Signing::Good).await;
        if signed(op) {
            for s in [
                Signing::NoKey,
                Signing::BadSignature,
                Signing::Expired,
                Signing::WideWindow,
            ] {
                p.check(&method, &path, &base, s).await;
            }
        }
        let mut dup = base.clone();
        dup.push(("symbol".to_owned(), "BTCJPY".to_owned()));
        dup.push(("symbol".to_owned(), "BTCJPY".to_owned()));
        p.check(&method, &path, &dup, Signing::Good).await;
        for (name, _, _) in &ps {
            for value in BAD_VALUES {
                let mut pairs: Vec<(String, String)> =
                    base.iter().filter(|(n, _)| n != name).cloned().collect();
                pairs.push((name.clone(), (*value).to_owned()));
                p.check(&method, &path, &pairs, Signing::Good).await;
            }
        }
        p.b.set_busy(true);
        p.check(&method, &path, &base, Signing::Good).await;
        p.b.set_busy(false);
    }
    let sent = p.sent.into_inner();
    assert!(sent > 2_000, "the probe sent {sent} requests");
}

/// Whether `v` matches `schema` (the JSON Schema subset the document uses, patterns
/// aside); `Err` names the first place that does not.
fn conforms(v: &Value, schema: &Value) -> Result<(), String> {
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let matching = options.iter().filter(|s| conforms(v, s).is_ok()).count();
        let ok = if schema["oneOf"].is_array() {
            matching == 1
        } else {
            matching >= 1
        };
        return if ok {
            Ok(())
        } else {
            Err(format!("{v}: {matching} alternatives match"))
        };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            return Err(format!("{v} not in {schema}"));
        }
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("unknown type {other}")),
    };
    if !type_ok {
        return Err(format!("{v} is not {}", schema["type"]));
    }
    if let Some(min) = schema["minimum"].as_i64() {
        if v.as_i64().is_some_and(|n| n < min) {
            return Err(format!("{v} < {min}"));
        }
    }
    if let Value::Object(map) = v {
        if let Some(max) = schema["maxProperties"].as_u64() {
            if map.len() as u64 > max {
                return Err(format!("more than {max} properties"));
            }
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("");
            if !map.contains_key(name) {
                return Err(format!("missing {name}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, s) in props {
                if let Some(x) = map.get(k) {
                    conforms(x, s).map_err(|e| format!("{k}.{e}"))?;
                }
            }
        }
    }
    if let Value::Array(items) = v {
        let n = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| n < m)
            || schema["maxItems"].as_u64().is_some_and(|m| n > m)
        {
            return Err(format!("{n} items"));
        }
        for (i, x) in items.iter().enumerate() {
            conforms(x, &schema["items"]).map_err(|e| format!("[{i}].{e}"))?;
        }
    }
    Ok(())
}
