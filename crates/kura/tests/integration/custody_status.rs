//! `kura custody status` against a running node (in process, serving its admin socket):
//! with the devnet as its chain, after a deposit is credited; and with no chain at all.

use crate::node_common;
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::ServerConfig;
use kura_chain::bitcoin::{Amount, Network};
use kura_engine::{Command, Engine, EventKind};
use kura_units::{AssetId, UserId};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const BTC: AssetId = AssetId(0);

fn config(dir: &Path, chain: ChainChoice) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.custody = CustodyConfig {
        chain,
        confirmations: 3,
        poll: Duration::from_millis(20),
        ..CustodyConfig::default()
    };
    c
}

type Running = node_common::Served;

fn start(dir: &Path, chain: ChainChoice) -> Running {
    node_common::serve(config(dir, chain))
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

fn available(r: &Running, user: UserId) -> Option<u64> {
    query(r, move |e| {
        e.ledger()
            .balance(user, BTC)
            .ok()
            .map(|b| b.available.get())
    })
}

fn submit(r: &Running, command: Command) -> Vec<kura_engine::Event> {
    node_common::submit_to(&r.backend, command)
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

fn status_json(dir: &Path) -> Value {
    let data = dir.to_str().expect("utf-8 path");
    let text = ok(&["custody", "status", "--data", data, "--json"]);
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).expect("JSON")
}

fn status_text(dir: &Path) -> String {
    let data = dir.to_str().expect("utf-8 path");
    ok(&["custody", "status", "--data", data])
}

#[test]
fn status_of_a_devnet_node_after_a_deposit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(
        dir.path(),
        ChainChoice::Devnet {
            block_interval: None,
        },
    );
    let devnet = node.devnet.clone().expect("devnet");

    // A customer's deposit address, paid from the faucet and confirmed three times.
    let user = submit(
        &node,
        Command::RegisterUser {
            name: "alice".into(),
        },
    )
    .iter()
    .find_map(|e| match e.kind {
        EventKind::UserCreated { user } => Some(user),
        _ => None,
    })
    .expect("created");
    submit(&node, Command::AssignDepositAddress { user, asset: BTC });
    let (descriptor, index) = query(&node, move |e| {
        let (wallet, index) = e.deposit_address(user, BTC).expect("assigned");
        (e.wallets()[wallet as usize].descriptor.clone(), index)
    });
    let (_, address) = kura_custody::derive(&descriptor, index, Network::Regtest).expect("derive");
    devnet
        .send(&address, Amount::from_sat(100_000))
        .expect("faucet");
    // Seen in the mempool: the custody task watches the address.
    wait_for("the unconfirmed deposit in the status", || {
        let s = status_json(dir.path());
        s["chain"]["unconfirmed_deposits"] == 1 && s["chain"]["unconfirmed_deposits_sat"] == 100_000
    });
    let text = status_text(dir.path());
    assert!(
        text.contains("unconfirmed  1 deposit(s), 0.00100000 BTC (credited at 3 confirmations)"),
        "{text}"
    );
    devnet.mine(3).expect("mine");
    let tip = devnet.tip();
    wait_for("the credit and the reconciliation at the tip", || {
        available(&node, user) == Some(100_000)
            && query(&node, |e| e.last_reconciliation(BTC).map(|r| r.height)) == Some(tip.height)
    });

    let s = status_json(dir.path());
    let chain = &s["chain"];
    assert_eq!(chain["source"], "devnet");
    assert_eq!(chain["network"], "regtest");
    assert_eq!(chain["tip_height"], tip.height);
    assert_eq!(chain["tip_hash"], tip.hash.to_string());
    assert_eq!(chain["followed_height"], tip.height);
    assert_eq!(chain["followed_hash"], tip.hash.to_string());
    assert_eq!(chain["synced"], true);
    assert_eq!(chain["last_error"], Value::Null);
    assert_eq!(chain["confirmations_required"], 3);
    assert_eq!(chain["unconfirmed_deposits"], 0);

    // The deposit and hot wallets, registered at start; the coin is the deposit wallet's.
    let registered = query(&node, |e| e.wallets().to_vec());
    let wallets = s["wallets"].as_array().expect("wallets");
    assert_eq!(wallets.len(), 2, "{wallets:?}");
    assert_eq!(wallets[0]["id"], 0);
    assert_eq!(wallets[0]["role"], "deposit");
    assert_eq!(wallets[0]["descriptor"], registered[0].descriptor);
    assert_eq!(wallets[0]["descriptor"], descriptor);
    assert_eq!(wallets[0]["next_index"], 1);
    assert_eq!(wallets[0]["coins"], 1);
    assert_eq!(wallets[0]["confirmed_sat"], 100_000);
    assert_eq!(wallets[1]["id"], 1);
    assert_eq!(wallets[1]["role"], "hot");
    assert_eq!(wallets[1]["descriptor"], registered[1].descriptor);
    assert_eq!(wallets[1]["coins"], 0);
    assert_eq!(wallets[1]["confirmed_sat"], 0);
    let descriptors: Vec<&str> = s["descriptors"]
        .as_array()
        .expect("descriptors")
        .iter()
        .map(|d| d.as_str().expect("text"))
        .collect();
    assert_eq!(
        descriptors,
        [
            registered[0].descriptor.as_str(),
            registered[1].descriptor.as_str()
        ]
    );
    for d in &descriptors {
        kura_custody::parse_descriptor(d).expect("a registered descriptor");
    }

    let h = &s["holdings"];
    assert_eq!(h["total_sat"], 100_000);
    assert_eq!(h["deposit_sat"], 100_000);
    assert_eq!(h["hot_sat"], 0);
    assert_eq!(h["cold_sat"], 0);
    assert_eq!(s["liabilities_sat"], 100_000);

    let r = &s["reconciliation"];
    assert_eq!(r["height"], tip.height);
    assert_eq!(r["block_hash"], tip.hash.to_string());
    assert_eq!(r["holdings_sat"], 100_000);
    assert_eq!(r["liabilities_sat"], 100_000);
    assert_eq!(r["status"], "ok");
    assert_eq!(r["shortfall_sat"], 0);

    assert_eq!(s["withdrawals_halted"], Value::Null);
    assert_eq!(s["batches"], serde_json::json!([]));
    assert_eq!(s["withdrawals"]["review"], 0);

    let text = status_text(dir.path());
    for expected in [
        "chain        devnet (regtest)".to_owned(),
        format!("followed     {} {} (synced)", tip.height, tip.hash),
        "last error   none".into(),
        "  #0 deposit  next index 1  1 coin(s)  0.00100000 BTC".into(),
        "  #1 hot      next index 0  0 coin(s)  0.00000000 BTC".into(),
        format!("     {descriptor}"),
        "holdings     0.00100000 BTC (deposit 0.00100000 BTC, hot 0.00000000 BTC, cold 0.00000000 BTC".into(),
        "liabilities  0.00100000 BTC".into(),
        format!(
            "reconciled   at height {} ({}): holdings 0.00100000 BTC, liabilities 0.00100000 BTC: ok",
            tip.height, tip.hash
        ),
        "withdrawals  not halted".into(),
        "batches      none open".into(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in\n{text}");
    }
    stop(node);
}

#[test]
fn status_without_a_chain_shows_the_books() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), ChainChoice::None);
    let data = dir.path().to_str().expect("utf-8 path");
    ok(&["admin", "--data", data, "user", "create", "bob"]);
    ok(&[
        "admin", "--data", data, "credit", "bob", "BTC", "0.5", "--ref", "t-1", "--reason", "test",
    ]);

    let s = status_json(dir.path());
    assert_eq!(s["asset"], "BTC");
    assert_eq!(s["chain"], Value::Null);
    assert_eq!(s["holdings"], Value::Null);
    assert_eq!(s["wallets"], serde_json::json!([]));
    assert_eq!(s["descriptors"], serde_json::json!([]));
    assert_eq!(s["liabilities_sat"], 50_000_000);
    assert_eq!(s["reconciliation"], Value::Null);
    assert_eq!(s["withdrawals_halted"], Value::Null);

    let text = status_text(dir.path());
    assert!(text.contains("chain        no chain"), "{text}");
    assert!(text.contains("holdings     unknown (no chain)"), "{text}");
    assert!(text.contains("liabilities  0.50000000 BTC"), "{text}");
    assert!(text.contains("reconciled   never"), "{text}");
    stop(node);

    // A stopped node: a clear error, not a panic.
    let out = kura(&["custody", "status", "--data", data]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is `kura serve --data"), "{stderr}");
}
