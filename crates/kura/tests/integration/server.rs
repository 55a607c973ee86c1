//! The server in process: admin actions are journaled with who and why, keys work the
//! moment they are acknowledged, the read model catches up after a restart and after
//! `reindex`, and the data directory is locked while a server runs.

use kura::server::admin::{call, Envelope, Request};
use kura::server::{reindex, Exchange, ServerConfig};
use kura_api::auth::HmacSecret;
use kura_engine::codec::{decode, Origin};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    backend: kura::server::backend::NodeBackend,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Exchange>,
}

fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c
}

async fn start(dir: &Path) -> Running {
    let exchange = Exchange::open(config(dir), |_| {}).expect("open");
    let backend = exchange.backend().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        exchange
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        exchange
    });
    // Ready when server.json names our address.
    let file = dir.join("server.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if text.contains(&addr.to_string()) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server.json never appeared"
        );
        tokio::task::yield_now().await;
    }
    Running {
        addr,
        backend,
        stop,
        task,
    }
}

async fn stop(r: Running) -> u64 {
    drop(r.backend);
    r.stop.send(()).expect("signal");
    let exchange = r.task.await.expect("join");
    tokio::task::spawn_blocking(move || exchange.stop().expect("stop").seq)
        .await
        .expect("join")
}

async fn admin(dir: &Path, operator: &str, request: Request) -> anyhow::Result<Value> {
    let dir: PathBuf = dir.to_path_buf();
    let env = Envelope {
        operator: operator.into(),
        request,
    };
    tokio::task::spawn_blocking(move || call(&dir, &env))
        .await
        .expect("join")
}

/// One HTTP/1.1 request; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let key_header = key.map_or(String::new(), |k| format!("X-MBX-APIKEY: {k}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{key_header}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text[9..12].parse().expect("status");
    let (head, body) = text.split_once("\r\n\r\n").expect("head/body");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

async fn account(addr: SocketAddr, key: &str, secret: &str) -> (u16, Value) {
    let query = format!("timestamp={}&recvWindow=10000", now_ms());
    let sig = HmacSecret::from_text(secret).sign(query.as_bytes());
    http(
        addr,
        "GET",
        &format!("/api/v3/account?{query}&signature={sig}"),
        Some(key),
    )
    .await
}

fn free(account: &Value, asset: &str) -> String {
    account["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .find(|b| b["asset"] == asset)
        .map(|b| b["free"].as_str().expect("free").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_are_journaled_keys_work_at_once_and_state_survives_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let r = start(d).await;

    // A second server on the same directory is refused while this one runs.
    let second = Exchange::open(config(d), |_| {}).expect_err("locked");
    assert!(format!("{second:#}").contains("in use"), "{second:#}");

    admin(d, "ops-1", Request::UserCreate { name: "ann".into() })
        .await
        .expect("user");
    let dup = admin(d, "ops-1", Request::UserCreate { name: "ann".into() }).await;
    assert!(format!("{:#}", dup.expect_err("dup")).contains("name already taken"));
    let key = admin(
        d,
        "ops-1",
        Request::KeyCreate {
            user: "ann".into(),
            perms: vec!["read".into(), "trade".into()],
            ed25519_public: None,
            ip_allow: vec![],
            label: "bot".into(),
        },
    )
    .await
    .expect("key");
    let (k, secret) = (
        key["key"].as_str().expect("key").to_owned(),
        key["secret"].as_str().expect("secret").to_owned(),
    );
    // A withdraw key without an IP allow-list is refused.
    let wd = admin(
        d,
        "ops-1",
        Request::KeyCreate {
            user: "ann".into(),
            perms: vec!["withdraw".into()],
            ed25519_public: None,
            ip_allow: vec![],
            label: String::new(),
        },
    )
    .await;
    assert!(format!("{:#}", wd.expect_err("refused")).contains("IP allow-list"));

    // The key works at once.
    let (status, acct) = account(r.addr, &k, &secret).await;
    assert_eq!(status, 200, "{acct}");
    assert_eq!(free(&acct, "JPY"), "0");

    let credit = |reference: &str| Request::Credit {
        user: "ann".into(),
        asset: "JPY".into(),
        amount: "2500000".into(),
        reference: reference.into(),
        reason: "bank transfer 77".into(),
    };
    admin(d, "ops-2", credit("bank-77")).await.expect("credit");
    let again = admin(d, "ops-2", credit("bank-77")).await;
    assert!(format!("{:#}", again.expect_err("once")).contains("already credited"));
    admin(
        d,
        "ops-2",
        Request::Debit {
            user: "ann".into(),
            asset: "JPY".into(),
            amount: "500000".into(),
            reason: "fee correction".into(),
        },
    )
    .await
    .expect("debit");
    let bad = admin(
        d,
        "ops-2",
        Request::Credit {
            user: "ann".into(),
            asset: "JPY".into(),
            amount: "1.5".into(),
            reference: "bank-78".into(),
            reason: "x".into(),
        },
    )
    .await;
    assert!(bad.is_err(), "JPY has no decimals");
    admin(
        d,
        "ops-3",
        Request::Halt {
            symbol: "BTCJPY".into(),
            reason: "incident 12".into(),
        },
    )
    .await
    .expect("halt");
    let info = http(r.addr, "GET", "/api/v3/exchangeInfo?symbol=BTCJPY", None).await;
    assert_eq!(info.1["symbols"][0]["status"], "BREAK", "{}", info.1);
    admin(
        d,
        "ops-3",
        Request::Resume {
            symbol: "BTCJPY".into(),
            reason: "incident 12 closed".into(),
        },
    )
    .await
    .expect("resume");
    let balances = admin(
        d,
        "ops-3",
        Request::Balances {
            user: Some("ann".into()),
        },
    )
    .await
    .expect("balances");
    let jpy = balances
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["asset"] == "JPY")
        .expect("JPY row")
        .clone();
    assert_eq!(jpy["free"], "2000000");

    // Revoked: refused at once.
    admin(
        d,
        "ops-1",
        Request::KeyRevoke {
            key: k.clone(),
            reason: "rotated".into(),
        },
    )
    .await
    .expect("revoke");
    let (status, body) = account(r.addr, &k, &secret).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(-2015)),
        "{body}"
    );

    let head = stop(r).await;
    assert!(
        !d.join("server.json").exists(),
        "server.json removed at shutdown"
    );

    // The journal says who did what and why, and holds no secret.
    let mut seen = Vec::new();
    for record in kura_journal::read_records(d, 1).expect("journal") {
        let record = record.expect("record");
        assert!(
            !record
                .payload
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "a secret reached the journal"
        );
        let entry = decode(&record.payload).expect("decode");
        if let Origin::Admin { operator, reason } = entry.origin {
            seen.push((operator, reason, entry.command.name()));
        }
    }
    assert!(seen.contains(&("ops-2".into(), "bank transfer 77".into(), "deposit")));
    assert!(seen.contains(&("ops-2".into(), "fee correction".into(), "adjust")));
    assert!(seen.contains(&("ops-3".into(), "incident 12".into(), "halt_market")));
    assert!(seen.contains(&("ops-1".into(), "rotated".into(), "revoke_api_key")));
    assert!(seen.iter().any(|s| s.2 == "create_api_key"));

    // Restart: state and the read model come back; the revoked key stays revoked.
    let r = start(d).await;
    let (status, _) = account(r.addr, &k, &secret).await;
    assert_eq!(status, 401);
    assert_ann_holds_her_deposit(d).await;
    let head2 = stop(r).await;
    assert_eq!(head2, head, "a restart with no commands adds none");

    // A deleted read model is rebuilt by reindex, up to the head.
    let cfg = config(d);
    let reached = tokio::task::spawn_blocking(move || reindex(&cfg.node, |_| {}))
        .await
        .expect("join")
        .expect("reindex");
    assert_eq!(reached, head);
    let db = d.join(kura::server::STORE_FILE);
    let marker = kura_store::marker_path(&db);
    assert!(!marker.exists(), "reindex closes the read model cleanly");
    let store = kura_store::Store::open(&db).expect("store");
    assert_eq!(store.last_seq(), Some(head));

    // The read model is written without fsync. Kill-like stop: a marker of this boot is
    // left; the next start keeps the database (the OS held every page).
    store
        .connection()
        .execute_batch("CREATE TABLE planted (x INTEGER)")
        .expect("plant");
    drop(store);
    if cfg!(target_os = "linux") {
        let boot = kura_store::boot_id().expect("Linux names its boot");
        std::fs::write(&marker, &boot).expect("marker");
        let r = start(d).await;
        assert_eq!(stop(r).await, head);
        assert!(!marker.exists(), "a clean stop removes the marker");
        assert!(planted(&db), "kept on the same boot");

        // A marker of another boot: the machine stopped with pages maybe only in
        // memory. The read model is deleted and rebuilt from the journal at start.
        std::fs::write(&marker, "another-boot").expect("marker");
        let r = start(d).await;
        assert_ann_holds_her_deposit(d).await;
        assert_eq!(stop(r).await, head);
        assert!(!planted(&db), "rebuilt, not kept");
        let store = kura_store::Store::open(&db).expect("store");
        assert_eq!(store.last_seq(), Some(head), "rebuilt up to the head");
    }
}

/// ann's balances, read through the admin socket, show the deposit made before.
async fn assert_ann_holds_her_deposit(d: &Path) {
    let balances = admin(
        d,
        "ops-3",
        Request::Balances {
            user: Some("ann".into()),
        },
    )
    .await
    .expect("balances");
    assert!(balances.to_string().contains("\"2000000\""), "{balances}");
}

fn planted(db: &Path) -> bool {
    let store = kura_store::Store::open(db).expect("store");
    store
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'planted'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("query")
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_publishes_durable_batches_whose_update_ids_match_rest_depth() {
    use kura_api::backend::Backend;
    use kura_engine::codec::Entry;
    use kura_engine::{Command, OrderType, Side, TimeInForce};
    use kura_units::{MarketId, PriceTicks, QtyLots, UserId};
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let r = start(d).await;
    admin(d, "ops", Request::UserCreate { name: "bo".into() })
        .await
        .expect("user");
    admin(
        d,
        "ops",
        Request::Credit {
            user: "bo".into(),
            asset: "JPY".into(),
            amount: "100000000".into(),
            reference: "seed".into(),
            reason: "test".into(),
        },
    )
    .await
    .expect("credit");
    let mut feed = r.backend.subscribe();
    let (_, before) = http(r.addr, "GET", "/api/v3/depth?symbol=BTCJPY", None).await;
    let before_id = before["lastUpdateId"].as_u64().expect("id");
    let outcome = r
        .backend
        .submit(Entry {
            ctx_timestamp_ms: 0,
            origin: kura_engine::codec::Origin::Internal,
            command: Command::PlaceOrder {
                user: UserId(0),
                market: MarketId(0),
                side: Side::Buy,
                order: OrderType::Limit {
                    price: PriceTicks::new(15_000_000),
                    qty: QtyLots::new(7),
                    tif: TimeInForce::Gtc,
                    post_only: false,
                },
                client_id: None,
                stp: None,
            },
        })
        .await
        .expect("durable");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    // The batch that carried the order, with its book change.
    let published = loop {
        let p = feed.recv().await.expect("feed");
        if p.commands.iter().any(|(ctx, _)| ctx.seq == outcome.seq) {
            break p;
        }
    };
    let diff = published
        .books
        .iter()
        .find(|b| b.market == MarketId(0))
        .expect("a BTCJPY diff");
    assert_eq!(diff.first_update_id, before_id + 1);
    assert_eq!(
        diff.bids,
        vec![(PriceTicks::new(15_000_000), QtyLots::new(7))]
    );
    let (_, after) = http(r.addr, "GET", "/api/v3/depth?symbol=BTCJPY", None).await;
    assert_eq!(after["lastUpdateId"].as_u64(), Some(diff.last_update_id));
    assert_eq!(after["bids"][0][0], "15000000");
    drop(feed);
    stop(r).await;
}
