//! Solvency epochs against a running node (in process, serving its API and admin
//! socket) with the built-in devnet as its chain: customers' deposits are credited and
//! reconciled, `kura solvency prove` publishes an epoch whose roots are in the journal
//! (and in the signed audit log) at the seq the report names, every customer's proof
//! verifies with `kura solvency verify` and with `tools/verify/por_verify.py`, a report
//! whose root lowers, omits or duplicates a balance fails them, a credit the chain does
//! not back is reported as a shortfall, and the endpoints serve the public report and
//! each caller's own proofs only. A second node takes epochs on its own schedule.

use crate::node_common;
use kura::server::admin::{call, Envelope, Request};
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::ServerConfig;
use kura::solvency::{self, Schedule};
use kura_api::auth::HmacSecret;
use kura_chain::bitcoin::{Address, Amount, Network};
use kura_engine::{codec, Command, Engine, EventKind};
use kura_proofs::por::Epoch;
use kura_units::{AssetId, UserId};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BTC: AssetId = AssetId(0);
const DEPTH: &str = "8";

fn config(dir: &Path, schedule: Schedule) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        confirmations: 1,
        poll: Duration::from_millis(20),
        ..CustodyConfig::default()
    };
    c.solvency = schedule;
    c
}

type Running = node_common::Served;

fn start(dir: &Path, schedule: Schedule) -> Running {
    start_with(config(dir, schedule))
}

fn start_with(config: ServerConfig) -> Running {
    node_common::serve(config)
}

fn stop(r: Running) {
    node_common::shutdown(r);
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    node_common::wait_until(what, cond);
}

fn query<R: Send + 'static>(r: &Running, f: impl FnOnce(&Engine) -> R + Send + 'static) -> R {
    r.backend.handle().query_wait(f).expect("query")
}

fn submit(r: &Running, command: Command) -> Vec<kura_engine::Event> {
    node_common::submit_to(&r.backend, command)
}

/// A customer with a deposit address.
fn customer(r: &Running, name: &str) -> (UserId, Address) {
    let events = submit(
        r,
        Command::RegisterUser {
            name: name.to_owned(),
        },
    );
    let user = events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::UserCreated { user } => Some(user),
            _ => None,
        })
        .expect("created");
    submit(r, Command::AssignDepositAddress { user, asset: BTC });
    let (descriptor, index) = query(r, move |e| {
        let (wallet, index) = e.deposit_address(user, BTC).expect("assigned");
        (e.wallets()[wallet as usize].descriptor.clone(), index)
    });
    let (_, address) = kura_custody::derive(&descriptor, index, Network::Regtest).expect("derive");
    (user, address)
}

fn total(r: &Running, user: UserId, asset: AssetId) -> u64 {
    query(r, move |e| {
        e.ledger()
            .balance(user, asset)
            .map(|b| u64::try_from(b.total()).expect("u64"))
            .unwrap_or(0)
    })
}

/// Pays `sat` to `user`'s deposit address from the devnet's faucet, waits until the
/// custody task has seen it in the mempool, then mines it (see [`mine_and_reconcile`]).
fn deposit(r: &Running, user: UserId, address: &Address, sat: u64, owed_after: u64) {
    r.chain()
        .send(address, Amount::from_sat(sat))
        .expect("send");
    wait_for("the pending deposit", || {
        let v = r.custody_view().lock().expect("view");
        let seen = v.watcher.pending().any(|d| d.user == user);
        seen
    });
    mine_and_reconcile(r, u128::from(owed_after));
}

/// Mines a block and waits until it is reconciled with the books' liabilities `owed`.
fn mine_and_reconcile(r: &Running, owed: u128) {
    r.chain().mine(1).expect("mine");
    let tip = r.chain().tip().height;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rec = query(r, |e| e.last_reconciliation(BTC));
        if rec.is_some_and(|rec| rec.height == tip && rec.liabilities == owed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for block {tip} reconciled with {owed} owed: {rec:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kura(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KURA_DATA")
        .output()
        .expect("run kura")
}

fn ok(args: &[&str]) -> String {
    let out = kura(args);
    assert!(
        out.status.success(),
        "kura {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn python() -> String {
    std::env::var("KURA_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn por_verify(args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/verify/por_verify.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (set KURA_E2E_PYTHON): {e}", python()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// One HTTP/1.1 GET; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let key_header = key.map_or(String::new(), |k| format!("X-MBX-APIKEY: {k}\r\n"));
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{key_header}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text[9..12].parse().expect("status");
    let (head, body) = text.split_once("\r\n\r\n").expect("head/body");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn signed_proof(r: &Running, key: &str, secret: &str, extra: &str) -> (u16, Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let query = format!("{extra}timestamp={now}&recvWindow=10000");
    let sig = HmacSecret::from_text(secret).sign(query.as_bytes());
    r.runtime.block_on(http_get(
        r.addr,
        &format!("/kura/v1/solvency/proof?{query}&signature={sig}"),
        Some(key),
    ))
}

fn api_key(dir: &Path, user: &str) -> (String, String) {
    let v = call(
        dir,
        &Envelope {
            operator: "test".into(),
            request: Request::KeyCreate {
                user: user.into(),
                perms: vec!["read".into()],
                ed25519_public: None,
                ip_allow: vec![],
                label: String::new(),
            },
        },
    )
    .expect("key");
    (
        v["key"].as_str().expect("key").to_owned(),
        v["secret"].as_str().expect("secret").to_owned(),
    )
}

fn asset<'a>(report: &'a Value, symbol: &str) -> &'a Value {
    report["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .find(|a| a["asset"] == symbol)
        .unwrap_or_else(|| panic!("no {symbol} in {report}"))
}

/// The report with asset BTC's por/v1 report replaced by one of a tree built from
/// `accounts` with the epoch's own secrets (what a cheating exchange could publish).
fn cheat(data: &Path, report: &Value, accounts: &[solvency::Account]) -> Value {
    let n = report["epoch"].as_u64().expect("epoch");
    let btc = asset(report, "BTC");
    let epoch: Epoch = serde_json::from_value(btc["por"]["epoch"].clone()).expect("epoch");
    let secret = solvency::load_secret(data).expect("secret");
    let tree = solvency::build_tree(&secret, n, "BTC", &epoch, 8, accounts).expect("tree");
    let mut out = report.clone();
    for a in out["assets"].as_array_mut().expect("assets") {
        if a["asset"] == "BTC" {
            a["por"] = serde_json::to_value(tree.report(&epoch, Some(u64::MAX / 4))).expect("por");
        }
    }
    out
}

#[test]
fn epochs_are_proven_logged_verified_and_served_to_their_own_customers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let work = tmp.path();
    let data = s(&dir);
    // Without a running node there is nothing to journal the roots through.
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = kura(&["solvency", "prove", "--data", data, "--depth", DEPTH]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no running node"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = start(&dir, Schedule::default());

    // Four customers: three deposit on chain, dave does not; carol also holds JPY.
    let names = ["alice", "bob", "carol", "dave"];
    let mut users = Vec::new();
    for name in names {
        users.push(customer(&r, name));
    }
    let jpy = query(&r, |e| e.asset_by_symbol("JPY")).expect("JPY");
    submit(
        &r,
        Command::Deposit {
            user: users[2].0,
            asset: jpy,
            amount: kura_units::Amount::new(1_000_000),
            reference: "bank-1".into(),
        },
    );
    let deposits = [150_000_000u64, 25_000_000, 7_000];
    let mut owed = 0u64;
    for ((user, address), sat) in users.iter().zip(deposits) {
        // One payment per block: the faucet spends one mature coinbase at a time.
        owed += sat;
        deposit(&r, *user, address, sat, owed);
    }
    for ((user, _), sat) in users.iter().zip(deposits) {
        assert_eq!(total(&r, *user, BTC), sat);
    }

    // Epoch 1.
    let report: Value = serde_json::from_str(&ok(&[
        "solvency", "prove", "--data", data, "--depth", DEPTH, "--json",
    ]))
    .expect("report json");
    assert_eq!(report["epoch"], 1);
    let btc = asset(&report, "BTC");
    assert_eq!(btc["liabilities"]["sum"], owed);
    assert_eq!(btc["customers"], 4);
    assert_eq!(btc["status"], "covered");
    assert!(btc["reserves"]["sum"].as_u64().expect("reserves") >= owed);
    // A hot-only node: the BIP-127 proof is finished at once and states the reserves.
    let proof = &btc["reserves_proof"];
    assert_eq!(proof["complete"], true, "{proof}");
    assert_eq!(btc["reserves"]["source"], "bip127");
    assert_eq!(proof["total_sat"], btc["reserves"]["sum"]);
    assert_eq!(proof["message"], btc["por"]["reserves_message"]);
    assert_eq!(proof["offline_coins"], 0);
    let proof_tx = work.join("epoch-1.tx");
    std::fs::write(&proof_tx, proof["transaction"].as_str().expect("tx")).expect("write");
    let verified: Value = serde_json::from_str(&ok(&[
        "reserves",
        "verify",
        "--tx",
        s(&proof_tx),
        "--message",
        proof["message"].as_str().expect("message"),
        "--data",
        data,
        "--liabilities",
        &owed.to_string(),
        "--json",
    ]))
    .expect("verify json");
    assert_eq!(verified["total_sat"], proof["total_sat"]);
    assert_eq!(verified["covered"], true);
    let jpy = asset(&report, "JPY");
    assert!(jpy["reserves"].is_null());
    assert_eq!(jpy["status"], "no on-chain reserves");
    assert_eq!(jpy["liabilities"]["sum"], 1_000_000);
    assert_eq!(jpy["ledger_seq"], btc["ledger_seq"]);
    let epoch_dir = dir.join("solvency/epochs/1");
    let report_path = epoch_dir.join("report.json");
    assert!(report_path.is_file() && epoch_dir.join("summary.txt").is_file());

    // The roots are in the journal at the seq the report names, after the cut.
    let record_seq = report["record"]["seq"].as_u64().expect("record seq");
    assert!(record_seq > btc["ledger_seq"].as_u64().expect("cut"));
    let record = kura_journal::read_records(&dir, record_seq)
        .expect("journal")
        .next()
        .expect("record")
        .expect("valid");
    assert_eq!(record.seq, record_seq);
    let entry = codec::decode(&record.payload).expect("decode");
    let Command::RecordSolvency { epoch, roots } = entry.command else {
        panic!("record {record_seq} is {:?}", entry.command);
    };
    assert_eq!(epoch, 1);
    let root = roots.iter().find(|x| x.asset == BTC).expect("BTC root");
    assert_eq!(
        hex::encode(root.root_hash),
        btc["liabilities"]["root_hash"].as_str().expect("hash")
    );
    assert_eq!(root.root_sum, owed);
    assert_eq!(root.reserves, btc["reserves"]["sum"].as_u64());
    assert_eq!(
        hex::encode(root.epoch_id),
        btc["por"]["epoch_id"].as_str().expect("epoch id")
    );
    // ... and so in the signed audit log.
    ok(&["audit", "checkpoint", "--data", data]);
    let included: Value = serde_json::from_str(&ok(&[
        "audit",
        "prove-inclusion",
        &record_seq.to_string(),
        "--data",
        data,
        "--json",
    ]))
    .expect("inclusion json");
    assert_eq!(
        included["record"]["entry"]["command"]["type"],
        "record_solvency"
    );

    // Every customer's proof verifies with both verifiers.
    for (i, (user, _)) in users.iter().enumerate() {
        let proofs: Value = serde_json::from_str(&ok(&[
            "solvency",
            "proof",
            "--data",
            data,
            "--account",
            &user.0.to_string(),
        ]))
        .expect("proof json");
        assert_eq!(proofs["login"], names[i]);
        let path = write(work, &format!("proof-{i}.json"), &proofs);
        let expected = deposits.get(i).copied().unwrap_or(0).to_string();
        let out = ok(&[
            "solvency",
            "verify",
            "--proof",
            s(&path),
            "--report",
            s(&report_path),
            "--asset",
            "BTC",
            "--balance",
            &expected,
        ]);
        assert!(out.contains(&format!("balance {expected}")), "{out}");
        ok(&[
            "solvency",
            "verify",
            "--proof",
            s(&path),
            "--report",
            s(&report_path),
        ]);
        let (code, out) = por_verify(&[
            s(&path),
            s(&report_path),
            "--asset",
            "BTC",
            "--balance",
            &expected,
        ]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = por_verify(&[s(&path), s(&report_path)]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("JPY: account"), "{out}");
    }

    // Reports whose root lowers, omits or duplicates a balance: bob's proof fails.
    let honest = solvency::read_balances(&epoch_dir.join("balances-BTC.tsv")).expect("balances");
    let bob = users[1].0 .0 as u64;
    let bob_proof: Value = serde_json::from_str(&ok(&[
        "solvency",
        "proof",
        "--data",
        data,
        "--account",
        &bob.to_string(),
    ]))
    .expect("json");
    let bob_path = write(work, "bob.json", &bob_proof);
    let lowered: Vec<_> = honest
        .iter()
        .map(|a| solvency::Account {
            balance: if a.id == bob {
                a.balance - 1
            } else {
                a.balance
            },
            ..a.clone()
        })
        .collect();
    let omitted: Vec<_> = honest.iter().filter(|a| a.id != bob).cloned().collect();
    let mut duplicated = honest.clone();
    let twin = honest.iter().find(|a| a.id == bob).expect("bob").clone();
    duplicated.push(solvency::Account { id: 99, ..twin });
    for (what, accounts) in [
        ("lowered", lowered),
        ("omitted", omitted),
        ("duplicated", duplicated),
    ] {
        let bad = write(
            work,
            &format!("{what}.json"),
            &cheat(&dir, &report, &accounts),
        );
        let out = kura(&[
            "solvency",
            "verify",
            "--proof",
            s(&bob_path),
            "--report",
            s(&bad),
            "--asset",
            "BTC",
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("REJECTED"),
            "{what}"
        );
        let (code, out) = por_verify(&[s(&bob_path), s(&bad), "--asset", "BTC"]);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains("REJECTED"), "{what}: {out}");
    }
    // The honest tree rebuilt the same way gives the published root.
    let same = cheat(&dir, &report, &honest);
    assert_eq!(
        asset(&same, "BTC")["por"]["root"],
        asset(&report, "BTC")["por"]["root"]
    );

    // A credit the chain does not back: the next epoch states the shortfall.
    submit(
        &r,
        Command::Deposit {
            user: users[3].0,
            asset: BTC,
            amount: kura_units::Amount::new(5_000_000_000),
            reference: "unbacked".into(),
        },
    );
    let owed2 = owed + 5_000_000_000;
    mine_and_reconcile(&r, u128::from(owed2));
    let text = ok(&["solvency", "prove", "--data", data, "--depth", DEPTH]);
    assert!(text.contains("SHORTFALL"), "{text}");
    let report2: Value = serde_json::from_slice(
        &std::fs::read(dir.join("solvency/epochs/2/report.json")).expect("read"),
    )
    .expect("json");
    let btc2 = asset(&report2, "BTC");
    assert_eq!(btc2["status"], "shortfall");
    let reserves2 = btc2["reserves"]["sum"].as_u64().expect("reserves");
    assert_eq!(btc2["shortfall"]["sum"], owed2 - reserves2);
    let report2_path = dir.join("solvency/epochs/2/report.json");

    // The endpoints: public report and list, each caller's own proofs only.
    let (status, public) = r
        .runtime
        .block_on(http_get(r.addr, "/kura/v1/solvency", None));
    assert_eq!(status, 200, "{public}");
    assert_eq!(public["report"]["epoch"], 2);
    assert_eq!(public["epochs"].as_array().expect("epochs").len(), 2);
    let (status, one) = r
        .runtime
        .block_on(http_get(r.addr, "/kura/v1/solvency?epoch=1", None));
    assert_eq!(status, 200);
    assert_eq!(one["report"], report);
    let (status, err) = r
        .runtime
        .block_on(http_get(r.addr, "/kura/v1/solvency?epoch=9", None));
    assert_eq!((status, err["code"].as_i64()), (400, Some(-1130)), "{err}");

    let (alice_key, alice_secret) = api_key(&dir, "alice");
    let (bob_key, bob_secret) = api_key(&dir, "bob");
    let (status, mine) = signed_proof(&r, &alice_key, &alice_secret, "epoch=1&");
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["account_id"], users[0].0 .0);
    assert_eq!(mine["login"], "alice");
    let path = write(work, "alice-api.json", &mine);
    let (code, out) = por_verify(&[
        s(&path),
        s(&report_path),
        "--asset",
        "BTC",
        "--balance",
        "150000000",
    ]);
    assert_eq!(code, 0, "{out}");
    // Against epoch 2's report, alice's balance is included but the total is short.
    let (status, latest) = signed_proof(&r, &alice_key, &alice_secret, "");
    assert_eq!((status, &latest["epoch"]), (200, &Value::from(2)));
    let path = write(work, "alice-latest.json", &latest);
    let (code, out) = por_verify(&[s(&path), s(&report2_path), "--asset", "BTC"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("OK: BTC: account") && out.contains("SHORTFALL"),
        "{out}"
    );
    let (status, theirs) = signed_proof(&r, &bob_key, &bob_secret, "");
    assert_eq!(status, 200);
    assert_eq!(theirs["account_id"], users[1].0 .0);
    assert_ne!(theirs["proofs"], latest["proofs"]);
    let (status, err) = r
        .runtime
        .block_on(http_get(r.addr, "/kura/v1/solvency/proof", None));
    assert!((400..500).contains(&status), "{status} {err}");
    assert!(err["code"].as_i64().is_some_and(|c| c < 0), "{err}");
    let (status, err) = signed_proof(&r, &alice_key, &bob_secret, "");
    assert!((400..500).contains(&status), "{status} {err}");
    let (status, err) = signed_proof(&r, &alice_key, &alice_secret, "epoch=7&");
    assert_eq!((status, err["code"].as_i64()), (400, Some(-1130)), "{err}");

    stop(r);
}

#[test]
fn a_node_takes_epochs_on_its_own_schedule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let schedule = Schedule {
        every_blocks: 2,
        every: None,
        depth: 6,
        poll: Duration::from_millis(20),
        first_after: Duration::ZERO,
    };
    // Audit checkpoints on a timer too: the epochs' records get signed without anyone
    // running `kura audit checkpoint`.
    let mut c = config(&dir, schedule);
    c.audit_every = Some(Duration::from_millis(50));
    let r = start_with(c);
    let (user, address) = customer(&r, "erin");
    deposit(&r, user, &address, 40_000, 40_000);
    assert_eq!(total(&r, user, BTC), 40_000);
    let store = solvency::SolvencyStore::new(&dir);
    wait_for("the first scheduled epoch", || {
        store.epochs().is_ok_and(|e| e == vec![1])
    });
    let (_, first) = store.report(Some(1)).expect("read").expect("epoch 1");
    let h1 = asset(&first, "BTC")["block_height"]
        .as_u64()
        .expect("height");
    while u64::from(r.chain().tip().height) < h1 + 2 {
        mine_and_reconcile(&r, 40_000);
    }
    wait_for("the second scheduled epoch", || {
        store.epochs().is_ok_and(|e| e == vec![1, 2])
    });
    let (_, report) = store.report(Some(2)).expect("read").expect("epoch 2");
    let h2 = asset(&report, "BTC")["block_height"]
        .as_u64()
        .expect("height");
    assert!(h2 >= h1 + 2, "epoch 2 at block {h2}, epoch 1 at {h1}");
    assert_eq!(asset(&report, "BTC")["liabilities"]["sum"], 40_000);
    // The node proved its reserves for the epoch by itself.
    let proof = &asset(&report, "BTC")["reserves_proof"];
    assert_eq!(proof["complete"], true, "{proof}");
    assert_eq!(proof["total_sat"], asset(&report, "BTC")["reserves"]["sum"]);
    let proofs = store
        .proofs(u64::from(user.0), None)
        .expect("proofs")
        .expect("epoch");
    let checked = solvency::verify_files(&proofs, &report, Some("BTC")).expect("verifies");
    assert_eq!(checked[0].balance, 40_000);
    // A signed checkpoint soon covers epoch 2's record, and proves it is in the log.
    let record_seq = report["record"]["seq"].as_u64().expect("record seq");
    wait_for("a checkpoint covering epoch 2", || {
        kura::audit::list_checkpoints(&dir)
            .is_ok_and(|sizes| sizes.last().is_some_and(|&n| n >= record_seq))
    });
    let included: Value = serde_json::from_str(&ok(&[
        "audit",
        "prove-inclusion",
        &record_seq.to_string(),
        "--data",
        s(&dir),
        "--json",
    ]))
    .expect("inclusion json");
    assert_eq!(
        included["record"]["entry"]["command"]["type"],
        "record_solvency"
    );
    stop(r);
}
