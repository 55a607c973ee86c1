//! `kura export` and `kura export verify` against a real data directory: a customer with
//! API keys, a deposit address, deposits, a trade, a rejected order, a chain withdrawal
//! held for review and approved, batched and paid, and an operator's adjustment; another
//! customer who trades with them and a third who does not. The bundle verifies here and
//! with `tools/verify/export_verify.py`; every kind of tampering is found and named; an
//! export of one customer holds nothing of an unrelated one.

use kura::node::{internal, Node, NodeConfig};
use kura_engine::codec::{ip_to_bytes, Entry, Origin};
use kura_engine::{
    genesis, Command, EventKind, IpRange, KeyPermissions, KeyScheme, OrderRef, OrderType, Outpoint,
    Side, TimeInForce, WalletRole, WithdrawalPolicy,
};
use kura_units::{Amount, AmountDelta, MarketId, PriceTicks, QtyLots, UserId};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};

const DESCRIPTOR: &str = "wpkh([73c5da0a/84'/0'/0']xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V/0/*)";
/// BIP-84's first two addresses of that account: alice's and carol's deposit addresses.
const ALICE_ADDRESS: &str = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu";
const CAROL_ADDRESS: &str = "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g";
const DESTINATION: &str = "bc1qdestination0000000000000000000000000";
const ALICE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const BOB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const CAROL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const ALICE_UA: &str = "alice-client/1.0";
const CAROL_UA: &str = "carol-agent/9";

/// A txid as displayed (hex, bytes reversed) and in internal byte order.
fn txid(byte: u8) -> (String, [u8; 32]) {
    let mut internal = [byte; 32];
    internal[0] = 0x01;
    let display: Vec<u8> = internal.iter().rev().copied().collect();
    (hex::encode(display), internal)
}

fn key_id(prefix: &str) -> String {
    format!("{prefix:a<64}")
}

struct World {
    _dir: tempfile::TempDir,
    data: PathBuf,
    deposit_txid: String,
    batch_txid: String,
}

fn api(key: u64, ip: Ipv4Addr, ua: &str, command: Command) -> Entry {
    Entry {
        ctx_timestamp_ms: 0,
        origin: Origin::Api {
            key_id: key,
            ip: ip_to_bytes(IpAddr::V4(ip)),
            user_agent: ua.into(),
        },
        command,
    }
}

fn admin(reason: &str, command: Command) -> Entry {
    Entry {
        ctx_timestamp_ms: 0,
        origin: Origin::Admin {
            operator: "ops1".into(),
            reason: reason.into(),
        },
        command,
    }
}

fn limit(user: u32, side: Side, price: u64, lots: u64) -> Command {
    Command::PlaceOrder {
        user: UserId(user),
        market: MarketId(0),
        side,
        order: OrderType::Limit {
            price: PriceTicks::new(price),
            qty: QtyLots::new(lots),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    }
}

/// Builds the data directory through the real sequencer.
fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_path_buf();
    let mut config = NodeConfig::new(&data);
    config.snapshot_every = None;
    let (node, h) = Node::start(config).expect("start node");
    let submit = |e: Entry| {
        let ack = h.submit_wait(e).expect("ack");
        ack.result.ok()
    };
    let must = |e: Entry| {
        let name = e.command.name();
        submit(e).unwrap_or_else(|| panic!("{name} was refused"))
    };
    for c in genesis::genesis() {
        must(internal(c));
    }
    must(internal(Command::RegisterWallet {
        asset: genesis::BTC,
        role: WalletRole::Deposit,
        descriptor: DESCRIPTOR.into(),
    }));
    must(admin(
        "withdrawal rules",
        Command::SetWithdrawalPolicy {
            asset: genesis::BTC,
            policy: WithdrawalPolicy {
                fee: Amount::new(10_000),
                min_amount: Amount::new(20_000),
                daily_limit: Amount::new(200_000_000),
                approval_above: Amount::new(10_000_000),
                address_delay_ms: 0,
                listed_only: false,
            },
        },
    ));
    let mut keys = Vec::new();
    for (user, name, range) in [
        (0u32, "alice", (Ipv4Addr::new(10, 0, 0, 0), 8u8)),
        (1, "bob", (Ipv4Addr::new(198, 51, 100, 0), 24)),
        (2, "carol", (Ipv4Addr::new(192, 0, 2, 0), 24)),
    ] {
        must(admin(
            "onboarding",
            Command::RegisterUser { name: name.into() },
        ));
        let events = must(admin(
            "customer asked for a key",
            Command::CreateApiKey {
                user: UserId(user),
                key: key_id(name),
                scheme: KeyScheme::Hmac,
                permissions: KeyPermissions {
                    read: true,
                    trade: true,
                    withdraw: true,
                },
                ip_allow: vec![IpRange {
                    addr: ip_to_bytes(IpAddr::V4(range.0)),
                    prefix: 96 + range.1,
                }],
                label: format!("{name}-bot"),
            },
        ));
        let number = events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::ApiKeyCreated { number, .. } => Some(number),
                _ => None,
            })
            .expect("key number");
        keys.push(number);
    }
    let (alice, bob, carol) = (keys[0], keys[1], keys[2]);
    let (deposit_txid, deposit_internal) = txid(0xd1);
    let (batch_txid, batch_internal) = txid(0xb7);
    // Deposit addresses: alice index 0, carol index 1.
    must(api(
        alice,
        ALICE_IP,
        ALICE_UA,
        Command::AssignDepositAddress {
            user: UserId(0),
            asset: genesis::BTC,
        },
    ));
    must(api(
        carol,
        CAROL_IP,
        CAROL_UA,
        Command::AssignDepositAddress {
            user: UserId(2),
            asset: genesis::BTC,
        },
    ));
    must(internal(Command::Deposit {
        user: UserId(0),
        asset: genesis::BTC,
        amount: Amount::new(100_000_000),
        reference: format!("{deposit_txid}:0"),
    }));
    must(internal(Command::Deposit {
        user: UserId(2),
        asset: genesis::BTC,
        amount: Amount::new(50_000_000),
        reference: format!("{}:1", txid(0xc3).0),
    }));
    must(internal(Command::Reconcile {
        asset: genesis::BTC,
        height: 101,
        block_hash: [1; 32],
        holdings: Amount::new(150_000_000),
    }));
    for (user, reference) in [(1u32, "bank-bob-1"), (2, "bank-carol-1")] {
        must(admin(
            "bank transfer received",
            Command::Deposit {
                user: UserId(user),
                asset: genesis::JPY,
                amount: Amount::new(10_000_000),
                reference: reference.into(),
            },
        ));
    }
    // Trading: alice sells 0.1 BTC at 5,000,000 JPY; bob buys it.
    must(api(
        alice,
        ALICE_IP,
        ALICE_UA,
        limit(0, Side::Sell, 5_000_000, 10_000),
    ));
    let trade = must(api(
        bob,
        BOB_IP,
        "bob-cli",
        limit(1, Side::Buy, 5_000_000, 10_000),
    ));
    assert!(
        trade
            .iter()
            .any(|e| matches!(e.kind, EventKind::Trade { .. })),
        "alice and bob trade"
    );
    // Carol rests a buy far below: no trade with alice.
    must(api(
        carol,
        CAROL_IP,
        CAROL_UA,
        limit(2, Side::Buy, 4_000_000, 1_000),
    ));
    // A refused order and a cancelled one.
    assert!(
        submit(api(
            alice,
            ALICE_IP,
            ALICE_UA,
            limit(0, Side::Sell, 6_000_000, 900_000)
        ))
        .is_none(),
        "an order beyond alice's balance is refused"
    );
    let rested = must(api(
        alice,
        ALICE_IP,
        ALICE_UA,
        limit(0, Side::Sell, 7_000_000, 1_000),
    ));
    let order = rested
        .iter()
        .find_map(|e| match e.kind {
            EventKind::OrderAccepted { order, .. } => Some(order),
            _ => None,
        })
        .expect("order id");
    must(api(
        alice,
        ALICE_IP,
        ALICE_UA,
        Command::CancelOrder {
            user: UserId(0),
            market: MarketId(0),
            order: OrderRef::Id(order),
        },
    ));
    // A chain withdrawal: held for review, approved, batched spending the deposit, paid.
    must(api(
        alice,
        ALICE_IP,
        ALICE_UA,
        Command::RequestChainWithdrawal {
            user: UserId(0),
            asset: genesis::BTC,
            amount: Amount::new(20_000_000),
            id: "w-alice-1".into(),
            address: DESTINATION.into(),
        },
    ));
    must(admin(
        "checked with the customer by phone",
        Command::ApproveWithdrawal {
            id: "w-alice-1".into(),
        },
    ));
    must(internal(Command::BuildWithdrawalBatch {
        asset: genesis::BTC,
        withdrawals: vec!["w-alice-1".into()],
        inputs: vec![Outpoint {
            txid: deposit_internal,
            vout: 0,
        }],
        change: None,
        network_fee: Amount::new(1_500),
        txid: batch_internal,
    }));
    must(internal(Command::FinishWithdrawalBatch {
        batch: 0,
        txid: batch_internal,
        height: 105,
        network_fee: Amount::new(1_500),
        paid: true,
    }));
    must(admin(
        "goodwill credit",
        Command::Adjust {
            user: UserId(0),
            asset: genesis::BTC,
            delta: AmountDelta::credit(Amount::new(100_000)),
            reason: "goodwill credit".into(),
        },
    ));
    // Carol cancels everything: her own business.
    must(api(
        carol,
        CAROL_IP,
        CAROL_UA,
        Command::CancelAll {
            user: UserId(2),
            market: MarketId(0),
        },
    ));
    drop(h);
    node.stop().expect("stop node");
    World {
        _dir: dir,
        data,
        deposit_txid,
        batch_txid,
    }
}

fn kura(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .output()
        .expect("run kura")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn export(w: &World, selector: &[&str], out: &Path) -> Output {
    let mut args = vec!["export", "--data", w.data.to_str().expect("utf-8")];
    args.extend_from_slice(selector);
    args.extend(["--out", out.to_str().expect("utf-8")]);
    let o = kura(&args);
    assert!(o.status.success(), "export failed: {}", text(&o));
    o
}

fn node_key(w: &World) -> String {
    std::fs::read_to_string(w.data.join("audit/node.pub"))
        .expect("node.pub")
        .trim()
        .to_owned()
}

fn verify(bundle: &Path, key: Option<&str>) -> Output {
    let mut args = vec!["export", "verify", bundle.to_str().expect("utf-8")];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    kura(&args)
}

fn python_verify(bundle: &Path, key: &str) -> Output {
    let python = std::env::var("KURA_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/verify/export_verify.py");
    Process::new(&python)
        .arg(script)
        .arg(bundle)
        .args(["--key", key])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (set KURA_E2E_PYTHON): {e}"))
}

fn read(bundle: &Path, name: &str) -> String {
    std::fs::read_to_string(bundle.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The rows of a CSV file as maps column → cell.
fn csv_rows(bundle: &Path, name: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(bundle.join(name)).expect("csv");
    let header = r.headers().expect("header").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            header
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

const FILES: [&str; 17] = [
    "records.jsonl",
    "identity.csv",
    "identity.jsonl",
    "access.csv",
    "access.jsonl",
    "orders.csv",
    "orders.jsonl",
    "trades.csv",
    "trades.jsonl",
    "balances.csv",
    "balances.jsonl",
    "deposits.csv",
    "deposits.jsonl",
    "withdrawals.csv",
    "withdrawals.jsonl",
    "admin.csv",
    "admin.jsonl",
];

#[test]
fn account_export_holds_the_customer_and_verifies_here_and_in_python() {
    let w = world();
    let out = tempfile::tempdir().expect("temp dir");
    let bundle = out.path().join("alice");
    let o = export(&w, &["--account", "alice"], &bundle);
    assert!(text(&o).contains("user(s) [0]"), "{}", text(&o));
    let key = node_key(&w);

    let v = verify(&bundle, Some(&key));
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        text(&v).starts_with("ok: checkpoint of kura.local/"),
        "{}",
        text(&v)
    );
    assert!(!text(&v).contains("recommended"), "{}", text(&v));
    // Without a key of one's own it still passes, and says what that is worth.
    let v = verify(&bundle, None);
    assert!(v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("--key 'NAME+KEYID+KEY': that is the recommended way"));
    let p = python_verify(&bundle, &key);
    assert!(p.status.success(), "{}", text(&p));
    assert!(
        String::from_utf8_lossy(&p.stdout).starts_with("OK: "),
        "{}",
        text(&p)
    );

    // Identity: created by an operator, named, a key with its permissions and allow-list.
    let identity = csv_rows(&bundle, "identity.csv");
    assert!(identity.iter().all(|r| r["user"] == "0"), "{identity:?}");
    let named = identity
        .iter()
        .find(|r| r["event"] == "user_named")
        .expect("named");
    assert_eq!(named["name"], "alice");
    let k = identity
        .iter()
        .find(|r| r["event"] == "api_key_created")
        .expect("key");
    assert_eq!(k["key_id"], key_id("alice"));
    assert_eq!(k["permissions"], "read+trade+withdraw");
    assert_eq!(k["ip_allow"], "10.0.0.0/8");
    assert_eq!(k["label"], "alice-bot");

    // Access: every API command of alice with key, IP and user agent, refusals included.
    let access = csv_rows(&bundle, "access.csv");
    assert_eq!(access.len(), 6, "{access:?}");
    for r in &access {
        assert_eq!(
            (
                r["user"].as_str(),
                r["ip"].as_str(),
                r["user_agent"].as_str()
            ),
            ("0", "203.0.113.7", ALICE_UA)
        );
        assert_eq!(r["key_id"], key_id("alice"));
    }
    assert_eq!(
        access
            .iter()
            .filter(|r| r["outcome"] == "rejected: insufficient balance")
            .count(),
        1
    );

    // Trades: both sides of the one trade.
    let trades = csv_rows(&bundle, "trades.csv");
    assert_eq!(trades.len(), 1, "{trades:?}");
    let t = &trades[0];
    assert_eq!(
        (t["maker_user"].as_str(), t["taker_user"].as_str()),
        ("0", "1")
    );
    assert_eq!(
        (t["price"].as_str(), t["quantity"].as_str()),
        ("5000000", "0.10000000")
    );
    assert_eq!(t["maker_fee"], "500", "0.1 % of 500,000 JPY");

    // Orders: accepted, filled, rested, cancelled; nothing of bob's or carol's.
    let orders = csv_rows(&bundle, "orders.csv");
    assert!(orders.iter().all(|r| r["user"] == "0"), "{orders:?}");
    let events: Vec<&str> = orders.iter().map(|r| r["event"].as_str()).collect();
    assert_eq!(
        events,
        [
            "accepted",
            "rested",
            "filled",
            "accepted",
            "rested",
            "cancelled"
        ]
    );

    // Deposits: the address given out, the credit with its address and chain tip.
    let deposits = csv_rows(&bundle, "deposits.csv");
    let assigned = &deposits[0];
    assert_eq!(
        (assigned["event"].as_str(), assigned["address"].as_str()),
        ("deposit_address_assigned", ALICE_ADDRESS)
    );
    let credit = deposits
        .iter()
        .find(|r| r["event"] == "deposited" && r["asset"] == "BTC")
        .expect("credit");
    assert_eq!(credit["txid"], w.deposit_txid);
    assert_eq!(credit["vout"], "0");
    assert_eq!(credit["amount"], "1.00000000");
    assert_eq!(credit["address"], ALICE_ADDRESS);
    assert_eq!(credit["tip_height"], "101");

    // Withdrawals: requested, routed to review, approved, batched spending the deposit,
    // settled, and the batch's confirmation at its height.
    let wd = csv_rows(&bundle, "withdrawals.csv");
    let states: Vec<(&str, &str)> = wd
        .iter()
        .map(|r| (r["event"].as_str(), r["state"].as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("requested", "requested"),
            ("routed", "review"),
            ("approved", "approved"),
            ("batched", "batched"),
            ("settled", "settled"),
            ("batch_confirmed", "paid"),
        ]
    );
    assert_eq!(wd[0]["destination"], DESTINATION);
    assert_eq!(wd[3]["inputs"], format!("{}:0", w.deposit_txid));
    assert_eq!(wd[3]["txid"], w.batch_txid);
    assert_eq!(wd[5]["height"], "105");

    // Balances: each change with before and after, chained per asset.
    let balances = csv_rows(&bundle, "balances.csv");
    assert!(balances.iter().all(|r| r["user"] == "0"));
    let btc: Vec<_> = balances.iter().filter(|r| r["asset"] == "BTC").collect();
    assert_eq!(btc[0]["available_before"], "0.00000000");
    assert_eq!(btc[0]["available_after"], "1.00000000");
    assert_eq!(btc[0]["cause"], "deposit");
    for pair in btc.windows(2) {
        assert_eq!(pair[0]["available_after"], pair[1]["available_before"]);
        assert_eq!(pair[0]["held_after"], pair[1]["held_before"]);
    }
    let goodwill = btc.last().expect("last change");
    assert_eq!(
        (goodwill["cause"].as_str(), goodwill["change"].as_str()),
        ("adjust", "0.00100000")
    );

    // Admin: the operator's actions on alice, with reasons.
    let admin_rows = csv_rows(&bundle, "admin.csv");
    let reasons: Vec<&str> = admin_rows.iter().map(|r| r["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        [
            "onboarding",
            "customer asked for a key",
            "checked with the customer by phone",
            "goodwill credit"
        ]
    );
    assert!(admin_rows
        .iter()
        .all(|r| r["operator"] == "ops1" && r["user"] == "0"));

    // The JSON lines hold the same rows as the CSV.
    let first_access: serde_json::Value =
        serde_json::from_str(read(&bundle, "access.jsonl").lines().next().expect("line"))
            .expect("json");
    assert_eq!(first_access["seq"], access[0]["seq"].as_str());
    assert_eq!(first_access["user_agent"], ALICE_UA);

    // Nothing of carol, who never dealt with alice, in any file.
    for name in FILES.iter().chain(&["manifest.json"]) {
        let body = read(&bundle, name);
        for needle in [
            "carol",
            CAROL_UA,
            "192.0.2.99",
            CAROL_ADDRESS,
            &key_id("carol"),
            &hex::encode(CAROL_UA),
        ] {
            assert!(!body.contains(needle), "{name} mentions {needle:?}");
        }
    }
    // And no row about anyone but alice, except the counterparty named on her trade.
    for name in [
        "identity",
        "access",
        "orders",
        "balances",
        "deposits",
        "withdrawals",
    ] {
        for r in csv_rows(&bundle, &format!("{name}.csv")) {
            assert_eq!(r["user"], "0", "{name}: {r:?}");
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&bundle, "manifest.json")).expect("manifest");
    assert_eq!(manifest["subjects"]["users"], serde_json::json!([0]));
    assert_eq!(manifest["verifier_key"], key.as_str());
    assert_eq!(manifest["chain_tip_height"]["BTC"], 101);

    // A time range: after the last command only identity (and market) records remain.
    let later = tempfile::tempdir().expect("temp dir");
    let late = later.path().join("b");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 1;
    export(
        &w,
        &["--account", "0", "--from", &now_ms.to_string()],
        &late,
    );
    assert!(verify(&late, Some(&key)).status.success());
    assert!(csv_rows(&late, "access.csv").is_empty());
    assert!(csv_rows(&late, "balances.csv").is_empty());
    assert_eq!(csv_rows(&late, "identity.csv").len(), 3);
}

/// Copies a bundle, applies `edit` to the copy, and returns (kura verify, python verify).
fn tampered(
    bundle: &Path,
    key: &str,
    edit: impl FnOnce(&Path),
) -> (tempfile::TempDir, Output, Output) {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("b");
    std::fs::create_dir(&copy).expect("mkdir");
    for e in std::fs::read_dir(bundle).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), copy.join(e.file_name())).expect("copy");
    }
    edit(&copy);
    let k = verify(&copy, Some(key));
    let p = python_verify(&copy, key);
    (dir, k, p)
}

fn rewrite(path: &Path, f: impl FnOnce(String) -> String) {
    let s = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, f(s)).expect("write");
}

/// Updates the manifest's hash and row count of `name` to the file as it is now.
fn rehash(bundle: &Path, name: &str) {
    use sha2::Digest;
    let bytes = std::fs::read(bundle.join(name)).expect("read");
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let path = bundle.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    for f in m["files"].as_array_mut().expect("files") {
        if f["name"] == name {
            f["sha256"] = sha.clone().into();
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&m).expect("json")).expect("write");
}

#[test]
fn every_kind_of_tampering_is_found_and_named() {
    let w = world();
    let out = tempfile::tempdir().expect("temp dir");
    let bundle = out.path().join("alice");
    export(&w, &["--account", "alice"], &bundle);
    let key = node_key(&w);

    // One byte changed in each file, in its last row.
    for name in FILES.iter().chain(&["manifest.json"]) {
        let (_d, k, p) = tampered(&bundle, &key, |b| {
            let path = b.join(name);
            let mut bytes = std::fs::read(&path).expect("read");
            // A digit in the last line (before the final newline), changed to another digit.
            let at = bytes[..bytes.len() - 2]
                .iter()
                .rposition(u8::is_ascii_digit)
                .expect("a digit");
            bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
            std::fs::write(&path, bytes).expect("write");
        });
        assert!(!k.status.success(), "{name}: kura verify passed");
        assert!(text(&k).contains(name), "{name}: {}", text(&k));
        assert!(!p.status.success(), "{name}: python verify passed");
    }

    // A cell changed consistently in the CSV and the JSON lines, hashes updated: the
    // rows are re-derived from the records.
    let (_d, k, _p) = tampered(&bundle, &key, |b| {
        for name in ["trades.csv", "trades.jsonl"] {
            rewrite(&b.join(name), |s| s.replace("5000000", "4000000"));
            rehash(b, name);
        }
    });
    assert!(!k.status.success());
    assert!(
        text(&k)
            .contains("was changed: column `price` is \"4000000\", the records give \"5000000\"")
            && text(&k).contains("trades.csv: row 1 (seq "),
        "{}",
        text(&k)
    );

    // A row removed (and the manifest made to agree).
    let (_d, k, p) = tampered(&bundle, &key, |b| {
        rewrite(&b.join("orders.csv"), |s| {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.remove(2);
            lines.join("\n") + "\n"
        });
        rehash(b, "orders.csv");
    });
    assert!(!k.status.success());
    assert!(
        text(&k).contains("orders.csv: row 2 was removed"),
        "{}",
        text(&k)
    );
    assert!(
        text(&p).contains("orders.csv: 5 rows, the manifest says 6"),
        "{}",
        text(&p)
    );

    // Two rows swapped.
    let (_d, k, p) = tampered(&bundle, &key, |b| {
        rewrite(&b.join("balances.jsonl"), |s| {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.swap(0, 1);
            lines.join("\n") + "\n"
        });
        rehash(b, "balances.jsonl");
    });
    assert!(!k.status.success());
    assert!(
        text(&k).contains("balances.jsonl: rows 1 and 2 are out of order"),
        "{}",
        text(&k)
    );
    assert!(text(&p).contains("balances.jsonl row 2"), "{}", text(&p));

    // A record's payload changed (its leaf hash recomputed to match).
    let (_d, k, p) = tampered(&bundle, &key, |b| {
        rewrite(&b.join("records.jsonl"), |s| {
            let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
            let last = lines.len() - 1;
            let mut rec: serde_json::Value = serde_json::from_str(&lines[last]).expect("json");
            let seq = rec["seq"].as_u64().expect("seq");
            let mut payload = hex::decode(rec["payload"].as_str().expect("hex")).expect("hex");
            let n = payload.len();
            payload[n - 1] ^= 1;
            rec["leaf_hash"] = hex::encode(kura::audit::record_leaf_hash(seq, &payload)).into();
            rec["payload"] = hex::encode(&payload).into();
            lines[last] = serde_json::to_string(&rec).expect("json");
            lines.join("\n") + "\n"
        });
        rehash(b, "records.jsonl");
    });
    assert!(!k.status.success());
    assert!(
        text(&k).contains("records.jsonl: line")
            && text(&k).contains("inclusion proof does not lead to the checkpoint's root"),
        "{}",
        text(&k)
    );
    assert!(
        text(&p).contains("REJECTED: records.jsonl line"),
        "{}",
        text(&p)
    );

    // The checkpoint replaced by one of another log, with that log's key.
    let other = world();
    let o = tempfile::tempdir().expect("temp dir");
    export(&other, &["--account", "bob"], &o.path().join("x"));
    let foreign: serde_json::Value =
        serde_json::from_str(&read(&o.path().join("x"), "manifest.json")).expect("json");
    let swap_checkpoint = |b: &Path, with_key: bool| {
        let path = b.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        m["checkpoint"] = foreign["checkpoint"].clone();
        if with_key {
            m["verifier_key"] = foreign["verifier_key"].clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&m).expect("json")).expect("write");
    };
    let (_d, k, p) = tampered(&bundle, &key, |b| swap_checkpoint(b, false));
    assert!(!k.status.success());
    assert!(
        text(&k).contains("manifest.json: the checkpoint is not signed by kura.local/"),
        "{}",
        text(&k)
    );
    assert!(!p.status.success(), "{}", text(&p));
    // Even checked with the key the forged bundle carries, the records do not lead to
    // the other log's root.
    let (d, _k, _p) = tampered(&bundle, &key, |b| swap_checkpoint(b, true));
    let k = verify(&d.path().join("b"), None);
    assert!(!k.status.success());
    assert!(
        text(&k).contains("inclusion proof does not lead to the checkpoint's root"),
        "{}",
        text(&k)
    );
}

#[test]
fn address_and_txid_select_what_they_touch() {
    let w = world();
    let out = tempfile::tempdir().expect("temp dir");
    let key = {
        let b = out.path().join("by-address");
        let o = export(&w, &["--address", ALICE_ADDRESS], &b);
        assert!(text(&o).contains("user(s) [0]"), "{}", text(&o));
        let key = node_key(&w);
        assert!(verify(&b, Some(&key)).status.success());
        assert_eq!(csv_rows(&b, "access.csv").len(), 6);
        key
    };

    // The withdrawal destination: that withdrawal and its owner's identity only.
    let b = out.path().join("by-destination");
    export(&w, &["--address", DESTINATION], &b);
    let v = verify(&b, Some(&key));
    assert!(v.status.success(), "{}", text(&v));
    let wd = csv_rows(&b, "withdrawals.csv");
    assert_eq!(wd.len(), 6);
    assert!(wd.iter().all(|r| r["withdrawal_id"] == "w-alice-1"));
    assert!(csv_rows(&b, "trades.csv").is_empty());
    assert!(csv_rows(&b, "orders.csv").is_empty());

    // The deposit's txid: its credit, and the batch that spent its output.
    let b = out.path().join("by-txid");
    export(&w, &["--txid", &w.deposit_txid], &b);
    assert!(verify(&b, Some(&key)).status.success());
    let p = python_verify(&b, &key);
    assert!(p.status.success(), "{}", text(&p));
    let deposits = csv_rows(&b, "deposits.csv");
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    assert_eq!(deposits[0]["reference"], format!("{}:0", w.deposit_txid));
    assert!(csv_rows(&b, "withdrawals.csv")
        .iter()
        .any(|r| r["event"] == "batched" && r["txid"] == w.batch_txid));
    assert!(csv_rows(&b, "trades.csv").is_empty());
    // The balance change of that credit, not alice's other ones.
    let balances = csv_rows(&b, "balances.csv");
    assert!(balances.iter().any(|r| r["cause"] == "deposit"));
    assert!(
        balances.iter().all(|r| r["cause"] != "place_order"),
        "{balances:?}"
    );

    // The batch's txid.
    let b = out.path().join("by-batch");
    export(&w, &["--txid", &w.batch_txid], &b);
    assert!(verify(&b, Some(&key)).status.success());
    assert_eq!(csv_rows(&b, "withdrawals.csv").len(), 6);

    // Nothing matches: a clear error.
    let o = kura(&[
        "export",
        "--data",
        w.data.to_str().expect("utf-8"),
        "--txid",
        &"ee".repeat(32),
        "--out",
        out.path().join("none").to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nothing in the journal"), "{}", text(&o));
}
