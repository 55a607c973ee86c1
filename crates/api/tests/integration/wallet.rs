//! The wallet endpoints (`/sapi/v1/capital/deposit/*`, `/sapi/v1/capital/withdraw/*`)
//! through the router, over [`MemoryBackend`] following a fake chain: deposit addresses
//! assigned once, deposits pending and credited, withdrawals held, idempotent and
//! refused with Binance's codes, histories filtered and paged; every answer checked
//! against the OpenAPI document.

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kura_api::auth::{ApiKeyId, ApiKeyRecord, HmacSecret, IpNet, KeyScheme, Permissions};
use kura_api::backend::{Backend, Chain, PendingDeposit};
use kura_api::http::{router_with, RouterConfig};
use kura_api::limits::Limits;
use kura_api::memory::MemoryBackend;
use kura_api::openapi::document;
use kura_api::MasterKey;
use kura_engine::codec::{ip_to_bytes, Entry, Origin};
use kura_engine::genesis::{BTC, JPY};
use kura_engine::{Command, Outpoint, WalletRole, WithdrawalPolicy};
use kura_units::{Amount, UserId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const NOW: u64 = 1_700_000_000_000;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const DESCRIPTOR: &str = "wpkh(tpubDEPOSIT/0/*)#abcdefgh";
const ADDRESS: &str = "bcrt1qdestination0000000000000000000000";
/// Every test user starts with 10 BTC.
const START_BTC: u64 = 1_000_000_000;
/// The withdrawal policy of BTC in these tests.
const FEE: u64 = 10_000;
const MIN: u64 = 100_000;
const DAILY: u64 = 10_000_000_000;
const REVIEW_ABOVE: u64 = 200_000_000;

// ---- the fake chain ----------------------------------------------------------------

/// A chain that derives `bcrt1q<hash of the descriptor><index>` and accepts lower- or
/// upper-case `bcrt1q…` addresses of letters and digits (canonical: lower case).
#[derive(Debug, Default)]
struct FakeChain {
    pending: Mutex<Vec<(UserId, PendingDeposit)>>,
    confirmations: Mutex<BTreeMap<String, u32>>,
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn derived(descriptor: &str, index: u32) -> String {
    format!("bcrt1q{:08x}{index:04}", fnv(descriptor))
}

impl Chain for FakeChain {
    fn asset_symbol(&self) -> &str {
        "BTC"
    }
    fn address_at(&self, descriptor: &str, index: u32) -> Result<String, String> {
        Ok(derived(descriptor, index))
    }
    fn check_address(&self, address: &str) -> Result<String, String> {
        let lower = address.to_ascii_lowercase();
        let ok = lower.starts_with("bcrt1q")
            && (14..=90).contains(&lower.len())
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(lower)
        } else {
            Err("not a regtest SegWit address".to_owned())
        }
    }
    fn confirmations(&self) -> u32 {
        2
    }
    fn deposit_confirmations(&self, reference: &str) -> Option<u32> {
        self.confirmations.lock().unwrap().get(reference).copied()
    }
    fn pending_deposits(&self, user: UserId) -> Vec<PendingDeposit> {
        self.pending
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

impl FakeChain {
    fn add_pending(&self, user: UserId, reference: &str, amount: u64, confirmations: u32) {
        self.pending.lock().unwrap().push((
            user,
            PendingDeposit {
                reference: reference.to_owned(),
                amount: Amount::new(amount),
                confirmations,
                address: derived(DESCRIPTOR, user.0),
            },
        ));
    }
}

// ---- harness -----------------------------------------------------------------------

struct T {
    b: MemoryBackend,
    chain: Arc<FakeChain>,
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
    #[track_caller]
    fn err(&self, status: u16, code: i64, msg: &str) {
        assert_eq!(
            (self.status.as_u16(), &self.body),
            (status, &json!({ "code": code, "msg": msg })),
        );
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }
}

const READ_TRADE: Permissions = Permissions {
    read: true,
    trade: true,
    withdraw: false,
};
const ALL: Permissions = Permissions {
    read: true,
    trade: true,
    withdraw: true,
};

fn app_for(b: &MemoryBackend) -> Router {
    // A withdrawal weighs 900: room for many in one window.
    let config = RouterConfig {
        limits: Limits {
            request_weight_per_minute: 1_000_000,
            ..Limits::DEFAULT
        },
    };
    router_with(b.clone(), config).layer(MockConnectInfo(SocketAddr::new(
        IpAddr::V4(CLIENT_IP),
        40_000,
    )))
}

/// An exchange following the fake chain, with a BTC deposit wallet and policy.
fn setup() -> T {
    let chain = Arc::new(FakeChain::default());
    let b = MemoryBackend::new(MasterKey::from_bytes([5; 32]), NOW)
        .unwrap()
        .with_chain(chain.clone());
    b.run_ok(Command::RegisterWallet {
        asset: BTC,
        role: WalletRole::Deposit,
        descriptor: DESCRIPTOR.to_owned(),
    })
    .unwrap();
    b.run_ok(Command::SetWithdrawalPolicy {
        asset: BTC,
        policy: WithdrawalPolicy {
            fee: Amount::new(FEE),
            min_amount: Amount::new(MIN),
            daily_limit: Amount::new(DAILY),
            approval_above: Amount::new(REVIEW_ABOVE),
            address_delay_ms: 0,
            listed_only: false,
        },
    })
    .unwrap();
    bare(b, chain)
}

fn bare(b: MemoryBackend, chain: Arc<FakeChain>) -> T {
    let app = app_for(&b);
    T {
        b,
        chain,
        app,
        next_key: 1,
    }
}

impl T {
    /// A customer with 10 BTC and a key with `permissions`, allowed from the client's
    /// address only.
    fn user_with(&mut self, permissions: Permissions) -> User {
        let id = self.b.create_user().unwrap();
        self.b.deposit(id, BTC, START_BTC).unwrap();
        let number = self.next_key;
        self.next_key += 1;
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&number.to_be_bytes());
        let key = ApiKeyId::from_random(bytes);
        let secret = self.b.master_key().derive_hmac_secret(&key);
        self.b
            .add_key(ApiKeyRecord {
                id: key.clone(),
                number,
                user: id,
                scheme: KeyScheme::Hmac,
                permissions,
                ip_allow: vec![IpNet::parse(&CLIENT_IP.to_string()).unwrap()],
                enabled: true,
            })
            .unwrap();
        User {
            id,
            key,
            secret,
            number,
        }
    }

    fn user(&mut self) -> User {
        self.user_with(ALL)
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Resp { status, body }
    }

    /// `params` with CCXT's `timestamp` and `recvWindow`, as sent (raw), and its
    /// signature.
    fn sign(&self, u: &User, params: &str) -> (String, String) {
        let sep = if params.is_empty() { "" } else { "&" };
        let payload = format!(
            "{params}{sep}timestamp={}&recvWindow=10000",
            self.b.now_ms()
        );
        let signature = u.secret.sign(payload.as_bytes());
        (payload, signature)
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
        let r = self.send(req.unwrap()).await;
        check_documented(&method, path, &r);
        r
    }

    async fn get(&self, u: &User, path: &str, params: &str) -> Resp {
        let (payload, sig) = self.sign(u, params);
        self.signed_raw(u, Method::GET, path, &payload, &sig).await
    }

    async fn address(&self, u: &User, params: &str) -> Resp {
        self.get(u, "/sapi/v1/capital/deposit/address", params)
            .await
    }

    async fn deposits(&self, u: &User, params: &str) -> Resp {
        self.get(u, "/sapi/v1/capital/deposit/hisrec", params).await
    }

    async fn withdrawals(&self, u: &User, params: &str) -> Resp {
        self.get(u, "/sapi/v1/capital/withdraw/history", params)
            .await
    }

    /// `POST capital/withdraw/apply` with a raw (not percent-encoded) body, as CCXT
    /// sends it.
    async fn withdraw(&self, u: &User, params: &str) -> Resp {
        let (payload, sig) = self.sign(u, params);
        self.signed_raw(
            u,
            Method::POST,
            "/sapi/v1/capital/withdraw/apply",
            &payload,
            &sig,
        )
        .await
    }

    /// The (free, locked) BTC balance, from `/api/v3/account`.
    async fn btc(&self, u: &User) -> (String, String) {
        let r = self.get(u, "/api/v3/account", "").await;
        let b = r.ok()["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == "BTC")
            .unwrap()
            .clone();
        (
            b["free"].as_str().unwrap().to_owned(),
            b["locked"].as_str().unwrap().to_owned(),
        )
    }

    fn count(&self, name: &str) -> usize {
        self.b
            .entries()
            .unwrap()
            .iter()
            .filter(|e| e.command.name() == name)
            .count()
    }

    /// Credit a chain deposit as the custody layer would (an operator origin here).
    fn credit(&self, user: UserId, reference: &str, amount: u64) {
        let outcome = self
            .b
            .apply(Entry {
                ctx_timestamp_ms: 0,
                origin: Origin::Admin {
                    operator: "custody".to_owned(),
                    reason: "confirmed deposit".to_owned(),
                },
                command: Command::Deposit {
                    user,
                    asset: BTC,
                    amount: Amount::new(amount),
                    reference: reference.to_owned(),
                },
            })
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    }
}

fn txid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn ids(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---- deposit address ---------------------------------------------------------------

#[tokio::test]
async fn a_deposit_address_is_assigned_once_and_stays() {
    let mut t = setup();
    let u = t.user();
    let v = t.user_with(READ_TRADE);
    let first = t.address(&u, "coin=BTC").await;
    assert_eq!(
        first.ok(),
        &json!({"coin": "BTC", "address": derived(DESCRIPTOR, 0), "tag": "", "url": ""})
    );
    let again = t.address(&u, "coin=BTC&network=BTC").await;
    assert_eq!(again.ok(), first.ok());
    assert_eq!(t.count("assign_deposit_address"), 1);
    // The assignment carries the caller's key, address and user agent.
    let entry =
        t.b.entries()
            .unwrap()
            .into_iter()
            .find(|e| e.command.name() == "assign_deposit_address")
            .unwrap();
    assert_eq!(
        entry.origin,
        Origin::Api {
            key_id: u.number,
            ip: ip_to_bytes(IpAddr::V4(CLIENT_IP)),
            user_agent: "ccxt/4.5.90 python-requests".to_owned(),
        }
    );
    // A read-only key gets its own, the next index.
    let other = t.address(&v, "coin=BTC").await;
    assert_eq!(other.ok()["address"], derived(DESCRIPTOR, 1));
    assert_eq!(t.count("assign_deposit_address"), 2);
    // Assigned outside the API (e.g. by an operator): read, not assigned again.
    let w = t.user();
    t.b.run_ok(Command::AssignDepositAddress {
        user: w.id,
        asset: BTC,
    })
    .unwrap();
    let r = t.address(&w, "coin=BTC").await;
    assert_eq!(r.ok()["address"], derived(DESCRIPTOR, 2));
    assert_eq!(t.count("assign_deposit_address"), 3);
}

/// A backend where another request assigns the address between the handler's look-up
/// and its own assignment.
#[derive(Clone, Debug)]
struct Racy(MemoryBackend);

impl Backend for Racy {
    fn submit(
        &self,
        entry: Entry,
    ) -> impl std::future::Future<
        Output = Result<kura_api::backend::Outcome, kura_api::backend::BackendError>,
    > + Send {
        if let Command::AssignDepositAddress { user, asset } = entry.command {
            self.0
                .run_ok(Command::AssignDepositAddress { user, asset })
                .unwrap();
        }
        self.0.submit(entry)
    }
    fn query<R, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<R, kura_api::backend::BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&kura_engine::Engine) -> R + Send + 'static,
    {
        self.0.query(f)
    }
    fn read<R, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<R, kura_api::backend::BackendError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&kura_store::Store) -> R + Send + 'static,
    {
        self.0.read(f)
    }
    fn api_key(&self, id: &ApiKeyId) -> Option<ApiKeyRecord> {
        self.0.api_key(id)
    }
    fn master_key(&self) -> &MasterKey {
        self.0.master_key()
    }
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn chain(&self) -> Option<Arc<dyn Chain>> {
        self.0.chain()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<kura_api::feed::Published>> {
        self.0.subscribe()
    }
}

#[tokio::test]
async fn a_lost_assignment_race_answers_the_winners_address() {
    let mut t = setup();
    let u = t.user();
    t.app = router_with(Racy(t.b.clone()), RouterConfig::default()).layer(MockConnectInfo(
        SocketAddr::new(IpAddr::V4(CLIENT_IP), 40_000),
    ));
    let r = t.address(&u, "coin=BTC").await;
    assert_eq!(r.ok()["address"], derived(DESCRIPTOR, 0));
    // The winner's assignment and the handler's, refused as already assigned.
    assert_eq!(t.count("assign_deposit_address"), 2);
    // Assigned now: no further assignment.
    let again = t.address(&u, "coin=BTC").await;
    assert_eq!(again.ok()["address"], derived(DESCRIPTOR, 0));
    assert_eq!(t.count("assign_deposit_address"), 2);
}

#[tokio::test]
async fn deposit_address_refusals() {
    let mut t = setup();
    let u = t.user();
    t.address(&u, "coin=DOGE")
        .await
        .err(400, -4018, "We don't have this asset.");
    t.address(&u, "coin=JPY")
        .await
        .err(400, -4019, "Current asset is not open for deposit.");
    t.address(&u, "coin=BTC&network=ETH").await.err(
        400,
        -1130,
        "Data sent for parameter 'network' is not valid.",
    );
    t.address(&u, "").await.err(
        400,
        -1102,
        "Mandatory parameter 'coin' was not sent, was empty/null, or malformed.",
    );
    t.address(&u, "coin=btc").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'coin'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
    );
    assert_eq!(t.count("assign_deposit_address"), 0);

    // No chain followed: 400, not 500.
    let b = MemoryBackend::new(MasterKey::from_bytes([5; 32]), NOW).unwrap();
    let mut t = bare(b, Arc::new(FakeChain::default()));
    let u = t.user();
    t.address(&u, "coin=BTC")
        .await
        .err(400, -4019, "Current asset is not open for deposit.");

    // A chain, but no deposit wallet registered: the engine refuses the assignment.
    let chain = Arc::new(FakeChain::default());
    let b = MemoryBackend::new(MasterKey::from_bytes([5; 32]), NOW)
        .unwrap()
        .with_chain(chain.clone());
    let mut t = bare(b, chain);
    let u = t.user();
    t.address(&u, "coin=BTC").await.err(
        400,
        -4019,
        "Current asset is not open for deposit: no deposit wallet is registered for it.",
    );
}

// ---- deposit history ---------------------------------------------------------------

#[tokio::test]
async fn deposit_history_lists_pending_credited_and_reversed_deposits() {
    let mut t = setup();
    let u = t.user();
    let own = t.address(&u, "coin=BTC").await.ok()["address"].clone();
    let funded_ms = NOW;
    t.b.advance_ms(60_000);
    let credited_ms = t.b.now_ms();
    let confirmed = format!("{}:0", txid(0xaa));
    t.credit(u.id, &confirmed, 25_000_000);
    t.chain
        .confirmations
        .lock()
        .unwrap()
        .insert(confirmed.clone(), 3);
    t.b.advance_ms(60_000);
    let pending = format!("{}:1", txid(0xbb));
    t.chain.add_pending(u.id, &pending, 30_000_000, 0);

    let rows = t.deposits(&u, "coin=BTC").await;
    let rows = rows.ok().as_array().unwrap().clone();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0],
        json!({
            "id": pending,
            "amount": "0.30000000",
            "coin": "BTC",
            "network": "BTC",
            "status": 0,
            "address": derived(DESCRIPTOR, u.id.0),
            "addressTag": "",
            "txId": txid(0xbb),
            "insertTime": t.b.now_ms(),
            "transferType": 0,
            "confirmTimes": "0/2",
            "unlockConfirm": 2,
            "walletType": 0,
        })
    );
    assert_eq!(
        rows[1],
        json!({
            "id": confirmed,
            "amount": "0.25000000",
            "coin": "BTC",
            "network": "BTC",
            "status": 1,
            "address": own,
            "addressTag": "",
            "txId": txid(0xaa),
            "insertTime": credited_ms,
            "transferType": 0,
            "confirmTimes": "3/2",
            "unlockConfirm": 2,
            "walletType": 0,
        })
    );
    // The setup's deposit has a reference that is not an outpoint.
    assert_eq!(rows[2]["status"], 1);
    assert_eq!(rows[2]["address"], "");
    assert_eq!(rows[2]["txId"], rows[2]["id"]);
    assert_eq!(rows[2]["insertTime"], funded_ms);
    assert_eq!(rows[2]["confirmTimes"], "2/2");

    // Status filter.
    assert_eq!(
        ids(t.deposits(&u, "status=0").await.ok()),
        vec![pending.clone()]
    );
    assert_eq!(
        ids(t.deposits(&u, "status=1").await.ok()),
        vec![
            confirmed.clone(),
            rows[2]["id"].as_str().unwrap().to_owned()
        ]
    );
    // Another coin: neither the chain's pending deposits nor BTC rows.
    t.b.deposit(u.id, JPY, 5_000).unwrap();
    let jpy = t.deposits(&u, "coin=JPY").await;
    let jpy = jpy.ok().as_array().unwrap().clone();
    assert_eq!(jpy.len(), 1);
    assert_eq!(
        (&jpy[0]["coin"], &jpy[0]["amount"], &jpy[0]["network"]),
        (&json!("JPY"), &json!("5000"), &json!(""))
    );
    // Someone else sees none of it.
    let v = t.user();
    assert_eq!(
        t.deposits(&v, "coin=BTC")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Credited while the chain still lists it as pending: listed once, credited.
    t.credit(u.id, &pending, 30_000_000);
    let rows = t.deposits(&u, "coin=BTC").await;
    let rows = rows.ok().as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (&rows[0]["id"], &rows[0]["status"]),
        (&json!(pending), &json!(1))
    );
    // Unknown to the chain now: counted as fully confirmed.
    assert_eq!(rows[0]["confirmTimes"], "2/2");

    // A reorganisation takes the first one back.
    t.chain.confirmations.lock().unwrap().remove(&confirmed);
    t.b.run_ok(Command::ReverseDeposit {
        reference: confirmed.clone(),
        reason: "reorg".to_owned(),
    })
    .unwrap();
    let rows = t.deposits(&u, "status=7").await;
    let rows = rows.ok().as_array().unwrap().clone();
    assert_eq!(ids(&Value::Array(rows.clone())), vec![confirmed.clone()]);
    assert_eq!(rows[0]["confirmTimes"], "0/2");
}

#[tokio::test]
async fn deposit_history_time_filters_and_paging() {
    let mut t = setup();
    let u = t.user();
    let mut refs = Vec::new();
    let mut times = Vec::new();
    for i in 0..4u8 {
        t.b.advance_ms(1_000);
        times.push(t.b.now_ms());
        let r = format!("{}:{i}", txid(0x10 + i));
        t.credit(u.id, &r, 1_000_000 * u64::from(i + 1));
        refs.push(r);
    }
    let newest_first: Vec<String> = refs.iter().rev().cloned().collect();
    let all = ids(t
        .deposits(&u, &format!("startTime={}", times[0]))
        .await
        .ok());
    assert_eq!(all, newest_first);
    let window = format!("startTime={}&endTime={}", times[1], times[2]);
    assert_eq!(
        ids(t.deposits(&u, &window).await.ok()),
        vec![refs[2].clone(), refs[1].clone()]
    );
    let since = format!("startTime={}", times[0]);
    assert_eq!(
        ids(t.deposits(&u, &format!("{since}&limit=2")).await.ok()),
        newest_first[..2].to_vec()
    );
    assert_eq!(
        ids(t
            .deposits(&u, &format!("{since}&offset=1&limit=2"))
            .await
            .ok()),
        newest_first[1..3].to_vec()
    );
    assert!(ids(t.deposits(&u, &format!("{since}&offset=10")).await.ok()).is_empty());
    // A pending deposit is "now": outside a window that ended before now.
    t.b.advance_ms(1_000);
    t.chain
        .add_pending(u.id, &format!("{}:0", txid(0x99)), 5, 1);
    let before_now = format!("startTime={}&endTime={}", times[0], times[3]);
    assert_eq!(ids(t.deposits(&u, &before_now).await.ok()), newest_first);
    let with_now = format!("startTime={}", times[3]);
    assert_eq!(
        ids(t.deposits(&u, &with_now).await.ok()),
        vec![format!("{}:0", txid(0x99)), refs[3].clone()]
    );
    t.deposits(&u, "limit=0").await.err(
        400,
        -1130,
        "Data sent for parameter 'limit' is not valid.",
    );
    t.deposits(&u, "offset=x").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'offset'; legal range is '^[0-9]{1,20}$'.",
    );
    t.deposits(&u, "coin=NOPE")
        .await
        .err(400, -4018, "We don't have this asset.");
    // Larger limits are capped, as Binance does.
    assert_eq!(
        t.deposits(&u, "limit=5000")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[tokio::test]
async fn deposit_history_without_a_chain_lists_the_books() {
    let b = MemoryBackend::new(MasterKey::from_bytes([5; 32]), NOW).unwrap();
    let mut t = bare(b, Arc::new(FakeChain::default()));
    let u = t.user();
    let rows = t.deposits(&u, "").await;
    let rows = rows.ok().as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            &rows[0]["amount"],
            &rows[0]["status"],
            &rows[0]["confirmTimes"]
        ),
        (&json!("10.00000000"), &json!(1), &json!("1/1"))
    );
}

// ---- withdraw ----------------------------------------------------------------------

#[tokio::test]
async fn withdraw_needs_the_withdraw_permission_and_an_allow_list() {
    let mut t = setup();
    let reader = t.user_with(READ_TRADE);
    let denied = "Invalid API-key, IP, or permissions for action.";
    let body = format!("coin=BTC&address={ADDRESS}&amount=0.01");
    t.withdraw(&reader, &body).await.err(401, -2015, denied);
    // The withdraw permission without an IP allow-list is not enough.
    let id = t.b.create_user().unwrap();
    t.b.deposit(id, BTC, START_BTC).unwrap();
    let (key, secret) = t.b.add_hmac_key(id, 77, ALL).unwrap();
    let open = User {
        id,
        key,
        secret,
        number: 77,
    };
    t.withdraw(&open, &body).await.err(401, -2015, denied);
    assert_eq!(t.count("request_chain_withdrawal"), 0);
    assert_eq!(t.btc(&reader).await.1, "0.00000000");
}

#[tokio::test]
async fn a_withdrawal_holds_the_amount_and_is_listed() {
    let mut t = setup();
    let u = t.user();
    // Raw, as CCXT sends it: the values are signed and sent without percent-encoding.
    let upper = ADDRESS.to_ascii_uppercase();
    let body =
        format!("coin=BTC&address={upper}&network=BTC&amount=0.5&name=my cold/wallet:1&walletType=0&transactionFeeFlag=false");
    let r = t.withdraw(&u, &body).await;
    let id = r.ok()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.ok(), &json!({ "id": id }));
    assert!(id.starts_with('s') && id.len() == 25, "{id}");
    assert_eq!(
        t.btc(&u).await,
        ("9.50000000".to_owned(), "0.50000000".to_owned())
    );
    // Booked with the canonical address and the caller's origin.
    let entry =
        t.b.entries()
            .unwrap()
            .into_iter()
            .find(|e| e.command.name() == "request_chain_withdrawal")
            .unwrap();
    assert_eq!(
        entry.command,
        Command::RequestChainWithdrawal {
            user: u.id,
            asset: BTC,
            amount: Amount::new(50_000_000),
            id: id.clone(),
            address: ADDRESS.to_owned(),
        }
    );
    assert_eq!(
        entry.origin,
        Origin::Api {
            key_id: u.number,
            ip: ip_to_bytes(IpAddr::V4(CLIENT_IP)),
            user_agent: "ccxt/4.5.90 python-requests".to_owned(),
        }
    );
    let rows = t.withdrawals(&u, "coin=BTC").await;
    assert_eq!(
        rows.ok(),
        &json!([{
            "id": id,
            "amount": "0.50000000",
            "transactionFee": "0.00010000",
            "coin": "BTC",
            "status": 4,
            "address": ADDRESS,
            "addressTag": "",
            "txId": "",
            "applyTime": "2023-11-14 22:13:20",
            "network": "BTC",
            "transferType": 0,
            "withdrawOrderId": "",
            "info": "",
            "confirmNo": 0,
            "walletType": 0,
            "txKey": "",
        }])
    );
}

#[tokio::test]
async fn a_replayed_request_is_the_same_withdrawal() {
    let mut t = setup();
    let u = t.user();
    let (payload, sig) = t.sign(&u, &format!("coin=BTC&address={ADDRESS}&amount=1.25"));
    let path = "/sapi/v1/capital/withdraw/apply";
    let first = t.signed_raw(&u, Method::POST, path, &payload, &sig).await;
    let id = first.ok()["id"].clone();
    t.b.advance_ms(2_000);
    let replay = t.signed_raw(&u, Method::POST, path, &payload, &sig).await;
    assert_eq!(replay.ok()["id"], id);
    // Upper-case hex is the same signature, and the same withdrawal.
    let upper = t
        .signed_raw(&u, Method::POST, path, &payload, &sig.to_ascii_uppercase())
        .await;
    assert_eq!(upper.ok()["id"], id);
    assert_eq!(ids(t.withdrawals(&u, "").await.ok()).len(), 1);
    assert_eq!(
        t.btc(&u).await,
        ("8.75000000".to_owned(), "1.25000000".to_owned())
    );
    // The same parameters signed anew are a new withdrawal.
    t.b.advance_ms(1);
    let again = t
        .withdraw(&u, &format!("coin=BTC&address={ADDRESS}&amount=1.25"))
        .await;
    assert_ne!(again.ok()["id"], id);
    assert_eq!(t.btc(&u).await.1, "2.50000000");
}

#[tokio::test]
async fn withdraw_order_id_is_the_idempotency_key() {
    let mut t = setup();
    let u = t.user();
    let v = t.user();
    let body = format!("coin=BTC&address={ADDRESS}&amount=0.2&withdrawOrderId=bot-42_a");
    let first = t.withdraw(&u, &body).await;
    let id = format!("u{}-bot-42_a", u.id.0);
    assert_eq!(first.ok(), &json!({ "id": id }));
    t.b.advance_ms(5);
    assert_eq!(t.withdraw(&u, &body).await.ok(), &json!({ "id": id }));
    assert_eq!(t.btc(&u).await.1, "0.20000000");
    // The same client id with another amount or address is refused.
    let invalid = "Data sent for parameter 'withdrawOrderId' is not valid.";
    t.withdraw(
        &u,
        &format!("coin=BTC&address={ADDRESS}&amount=0.3&withdrawOrderId=bot-42_a"),
    )
    .await
    .err(400, -1130, invalid);
    t.withdraw(
        &u,
        "coin=BTC&address=bcrt1qelsewhere000000000&amount=0.2&withdrawOrderId=bot-42_a",
    )
    .await
    .err(400, -1130, invalid);
    // Another customer's identical client id is their own withdrawal.
    let theirs = t.withdraw(&v, &body).await;
    assert_eq!(
        theirs.ok(),
        &json!({ "id": format!("u{}-bot-42_a", v.id.0) })
    );
    assert_eq!(t.btc(&u).await.1, "0.20000000");
    assert_eq!(t.btc(&v).await.1, "0.20000000");
    // Listed with its client id, and found by it.
    let other = t
        .withdraw(&u, &format!("coin=BTC&address={ADDRESS}&amount=0.4"))
        .await;
    let other_id = other.ok()["id"].as_str().unwrap().to_owned();
    let rows = t.withdrawals(&u, "withdrawOrderId=bot-42_a").await;
    let rows = rows.ok().as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0]["id"], &rows[0]["withdrawOrderId"]),
        (&json!(id), &json!("bot-42_a"))
    );
    assert_eq!(
        ids(t.withdrawals(&u, "").await.ok()),
        vec![other_id.clone(), id.clone()]
    );
    assert_eq!(
        ids(t
            .withdrawals(&u, &format!("idList={other_id},nope"))
            .await
            .ok()),
        vec![other_id]
    );
    t.withdraw(
        &u,
        &format!("coin=BTC&address={ADDRESS}&amount=0.2&withdrawOrderId={}", "x".repeat(65)),
    )
    .await
    .err(
        400,
        -1100,
        "Illegal characters found in parameter 'withdrawOrderId'; legal range is '^[A-Za-z0-9_-]{1,64}$'.",
    );
}

#[tokio::test]
async fn withdraw_refusals() {
    let mut t = setup();
    let u = t.user();
    let w = |amount: &str| format!("coin=BTC&address={ADDRESS}&amount={amount}");
    t.withdraw(&u, &w("0.000000001")).await.err(
        400,
        -1111,
        "Parameter 'amount' has too much precision.",
    );
    t.withdraw(&u, "coin=BTC&address=tb1qnotregtest000000&amount=0.1")
        .await
        .err(400, -4033, "Illegal address: not a regtest SegWit address");
    t.withdraw(&u, &w("10.00000001"))
        .await
        .err(400, -4026, "You have insufficient balance.");
    t.withdraw(&u, &w("0.0001")).await.err(
        400,
        -4022,
        "Not less than the minimum withdrawal amount, and more than the fee.",
    );
    t.withdraw(&u, &format!("coin=DOGE&address={ADDRESS}&amount=1"))
        .await
        .err(400, -4018, "We don't have this asset.");
    t.withdraw(&u, &format!("coin=JPY&address={ADDRESS}&amount=1"))
        .await
        .err(400, -4019, "Current asset is not open for withdrawal.");
    t.withdraw(&u, &format!("{}&network=LN", w("0.1")))
        .await
        .err(
            400,
            -1130,
            "Data sent for parameter 'network' is not valid.",
        );
    t.withdraw(&u, "coin=BTC&amount=0.1").await.err(
        400,
        -1102,
        "Mandatory parameter 'address' was not sent, was empty/null, or malformed.",
    );
    t.withdraw(&u, &format!("coin=BTC&address={ADDRESS}"))
        .await
        .err(
            400,
            -1102,
            "Mandatory parameter 'amount' was not sent, was empty/null, or malformed.",
        );
    t.b.run_ok(Command::HaltWithdrawals {
        asset: BTC,
        reason: "maintenance".to_owned(),
    })
    .unwrap();
    t.withdraw(&u, &w("0.1"))
        .await
        .err(400, -4019, "Current asset is not open for withdrawal.");
    assert_eq!(
        t.btc(&u).await,
        ("10.00000000".to_owned(), "0.00000000".to_owned())
    );
    assert!(ids(t.withdrawals(&u, "").await.ok()).is_empty());

    // No chain followed: 400, not 500.
    let b = MemoryBackend::new(MasterKey::from_bytes([5; 32]), NOW).unwrap();
    let mut t = bare(b, Arc::new(FakeChain::default()));
    let u = t.user();
    t.withdraw(&u, &w("0.1"))
        .await
        .err(400, -4019, "Current asset is not open for withdrawal.");
}

#[tokio::test]
async fn withdrawal_history_follows_review_batch_and_confirmation() {
    let mut t = setup();
    let u = t.user();
    let big = t
        .withdraw(
            &u,
            &format!("coin=BTC&address={ADDRESS}&amount=3&withdrawOrderId=big"),
        )
        .await;
    let big_id = big.ok()["id"].as_str().unwrap().to_owned();
    t.b.advance_ms(1_000);
    let small = t
        .withdraw(
            &u,
            &format!("coin=BTC&address={ADDRESS}&amount=0.1&withdrawOrderId=small"),
        )
        .await;
    let small_id = small.ok()["id"].as_str().unwrap().to_owned();
    let status = |rows: &Value, id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    let rows = t.withdrawals(&u, "").await.ok().clone();
    assert_eq!(ids(&rows), vec![small_id.clone(), big_id.clone()]);
    assert_eq!(status(&rows, &big_id), 2);
    assert_eq!(status(&rows, &small_id), 4);
    assert_eq!(
        ids(t.withdrawals(&u, "status=2").await.ok()),
        vec![big_id.clone()]
    );
    assert_eq!(
        ids(t.withdrawals(&u, "limit=1").await.ok()),
        vec![small_id.clone()]
    );
    assert_eq!(
        ids(t.withdrawals(&u, "offset=1").await.ok()),
        vec![big_id.clone()]
    );
    assert_eq!(
        ids(t.withdrawals(&u, &format!("endTime={}", NOW)).await.ok()),
        vec![big_id.clone()]
    );
    assert_eq!(
        ids(t
            .withdrawals(&u, &format!("startTime={}", NOW + 1))
            .await
            .ok()),
        vec![small_id.clone()]
    );
    assert!(ids(t.withdrawals(&u, "coin=JPY").await.ok()).is_empty());

    // Approved, batched and paid in a block.
    t.b.run_ok(Command::ApproveWithdrawal { id: big_id.clone() })
        .unwrap();
    assert_eq!(status(t.withdrawals(&u, "").await.ok(), &big_id), 4);
    let paid = [0x5a; 32];
    t.b.advance_ms(60_000);
    t.b.run_ok(Command::BuildWithdrawalBatch {
        asset: BTC,
        withdrawals: vec![big_id.clone()],
        inputs: vec![Outpoint {
            txid: [0x11; 32],
            vout: 0,
        }],
        change: None,
        network_fee: Amount::new(0),
        txid: paid,
    })
    .unwrap();
    let rows = t
        .withdrawals(&u, &format!("idList={big_id}"))
        .await
        .ok()
        .clone();
    assert_eq!(rows[0]["status"], 4);
    assert_eq!(rows[0]["txId"], "5a".repeat(32));
    t.b.advance_ms(600_000);
    let done_ms = t.b.now_ms();
    t.b.run_ok(Command::FinishWithdrawalBatch {
        batch: 0,
        txid: paid,
        height: 120,
        network_fee: Amount::new(0),
        paid: true,
    })
    .unwrap();
    let rows = t.withdrawals(&u, "status=6").await.ok().clone();
    assert_eq!(ids(&rows), vec![big_id.clone()]);
    let row = &rows[0];
    assert_eq!(row["amount"], "3.00000000");
    assert_eq!(row["transactionFee"], "0.00010000");
    assert_eq!(row["withdrawOrderId"], "big");
    assert_eq!(row["confirmNo"], 1);
    assert_eq!(row["applyTime"], "2023-11-14 22:13:20");
    assert_eq!(row["completeTime"], kura_time_text(done_ms));
    // The pending one has no completeTime.
    let pending = t.withdrawals(&u, "status=4").await.ok().clone();
    assert_eq!(ids(&pending), vec![small_id]);
    assert!(pending[0].get("completeTime").is_none());
    assert_eq!(
        t.btc(&u).await,
        ("6.90000000".to_owned(), "0.10000000".to_owned())
    );
    t.withdrawals(&u, "idList=a,,b").await.err(
        400,
        -1100,
        "Illegal characters found in parameter 'idList'; legal range is '^[^,]{1,128}(,[^,]{1,128}){0,999}$'.",
    );
}

/// `YYYY-MM-DD HH:MM:SS` of a test clock value: NOW is 2023-11-14 22:13:20 UTC, and
/// the tests move at most hours from it.
fn kura_time_text(ms: u64) -> String {
    let s = (ms - NOW) / 1_000 + 22 * 3_600 + 13 * 60 + 20;
    assert!(s < 86_400, "the test stays on 2023-11-14");
    format!(
        "2023-11-14 {:02}:{:02}:{:02}",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

// ---- the document ------------------------------------------------------------------

/// Every wallet operation, probed with bad values of each parameter: only documented
/// statuses and codes.
#[tokio::test]
async fn wallet_answers_are_documented() {
    let mut t = setup();
    let u = t.user();
    let ops: &[(Method, &str, &str)] = &[
        (Method::GET, "/sapi/v1/capital/deposit/address", "coin=BTC"),
        (Method::GET, "/sapi/v1/capital/deposit/hisrec", ""),
        (
            Method::POST,
            "/sapi/v1/capital/withdraw/apply",
            "coin=BTC&address=bcrt1qprobe00000000000000&amount=0.01",
        ),
        (Method::GET, "/sapi/v1/capital/withdraw/history", ""),
    ];
    let bad = [
        "",
        "x",
        "-1",
        "0",
        "1",
        "1.5",
        "0.000000001",
        "%zz",
        "BTC",
        "JPY",
        "NOPE",
        "LN",
        "a,b",
        ",",
        "99999999999999999999999",
        "bcrt1qprobe00000000000000",
    ];
    let mut sent = 0;
    for (method, path, base) in ops {
        let op = operation(method, path);
        let names: Vec<String> = params(op)
            .into_iter()
            .filter(|n| !["timestamp", "recvWindow", "signature"].contains(&n.as_str()))
            .collect();
        for name in &names {
            for value in bad {
                let pairs: Vec<String> = base
                    .split('&')
                    .filter(|kv| !kv.is_empty() && !kv.starts_with(&format!("{name}=")))
                    .map(str::to_owned)
                    .chain([format!("{name}={value}")])
                    .collect();
                let (payload, sig) = t.sign(&u, &pairs.join("&"));
                t.signed_raw(&u, method.clone(), path, &payload, &sig).await;
                sent += 1;
            }
        }
        t.b.set_busy(true);
        let (payload, sig) = t.sign(&u, base);
        let r = t.signed_raw(&u, method.clone(), path, &payload, &sig).await;
        t.b.set_busy(false);
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {r:?}"
        );
    }
    assert!(sent > 300, "{sent}");
}

fn operation(method: &Method, path: &str) -> &'static Value {
    let op = &document()["paths"][path][method.as_str().to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

fn params(op: &Value) -> Vec<String> {
    if let Some(list) = op["parameters"].as_array() {
        return list
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
    }
    op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
        .as_object()
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

/// The answer's status is documented for the operation; an error's code is listed
/// under it; a success matches the documented schema.
#[track_caller]
fn check_documented(method: &Method, path: &str, r: &Resp) {
    let doc = &document()["paths"][path][method.as_str().to_ascii_lowercase()];
    if !doc.is_object() {
        return;
    }
    let response = &doc["responses"][r.status.as_str()];
    assert!(
        response.is_object(),
        "{method} {path}: status {} not documented ({})",
        r.status,
        r.body
    );
    let schema = &response["content"]["application/json"]["schema"];
    if let Err(at) = conforms(&r.body, schema) {
        panic!(
            "{method} {path}: {} does not match the schema at {at}",
            r.body
        );
    }
    if r.status != StatusCode::OK {
        let code = r.body["code"].as_i64().unwrap();
        let listed = schema["properties"]["code"]["enum"]
            .as_array()
            .is_some_and(|codes| codes.iter().any(|c| c.as_i64() == Some(code)));
        assert!(
            listed,
            "{method} {path}: {} {} not documented",
            r.status, r.body
        );
    }
}

/// Whether `v` matches `schema` (the subset the document uses: types, enums, required
/// properties, patterns of a few known shapes).
fn conforms(v: &Value, schema: &Value) -> Result<(), String> {
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return if options.iter().any(|s| conforms(v, s).is_ok()) {
            Ok(())
        } else {
            Err(format!("{v}: no alternative matches"))
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
    if let (Some(pattern), Some(text)) = (schema["pattern"].as_str(), v.as_str()) {
        if !simple_pattern(pattern, text) {
            return Err(format!("{text:?} does not match {pattern}"));
        }
    }
    if let Value::Object(map) = v {
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
            // Wallet answers carry exactly the documented fields.
            if let Some(extra) = map.keys().find(|k| !props.contains_key(*k)) {
                return Err(format!("undocumented field {extra}"));
            }
        }
    }
    if let Value::Array(items) = v {
        for (i, x) in items.iter().enumerate() {
            conforms(x, &schema["items"]).map_err(|e| format!("[{i}].{e}"))?;
        }
    }
    Ok(())
}

/// The response patterns the wallet schemas use, checked by hand (no regex crate).
fn simple_pattern(pattern: &str, text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match pattern {
        "^-?[0-9]+(\\.[0-9]+)?$" => {
            let t = text.strip_prefix('-').unwrap_or(text);
            match t.split_once('.') {
                Some((a, b)) => digits(a) && digits(b),
                None => digits(t),
            }
        }
        "^[0-9]+/[0-9]+$" => text
            .split_once('/')
            .is_some_and(|(a, b)| digits(a) && digits(b)),
        "^[0-9]{4,}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$" => {
            let Some((date, time)) = text.split_once(' ') else {
                return false;
            };
            let d: Vec<&str> = date.split('-').collect();
            let c: Vec<&str> = time.split(':').collect();
            d.len() == 3
                && d[0].len() >= 4
                && d[1..].iter().all(|p| p.len() == 2)
                && c.len() == 3
                && c.iter().all(|p| p.len() == 2)
                && d.iter().chain(c.iter()).all(|p| digits(p))
        }
        // Request-side or error patterns are not checked here.
        _ => true,
    }
}
