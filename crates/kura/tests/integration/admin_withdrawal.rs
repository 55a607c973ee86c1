//! `kura admin withdrawal list|approve|reject` against a running node (in process,
//! serving its admin socket, following no chain so nothing is batched): a withdrawal
//! above the review threshold is listed, approved once, and a second approval or an
//! unknown id fails with a clear message; a rejected one returns the customer's funds.
//! The journal records who acted and why.

use crate::node_common;
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::ServerConfig;
use kura_engine::{Command, Engine, WithdrawalPolicy, WithdrawalState};
use kura_units::{Amount, AssetId, UserId};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

const BTC: AssetId = AssetId(0);
const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.custody = CustodyConfig {
        chain: ChainChoice::None,
        ..CustodyConfig::default()
    };
    c
}

type Running = node_common::Served;

fn start(dir: &Path) -> Running {
    node_common::serve(config(dir))
}

fn stop(r: Running) {
    node_common::shutdown(r);
}

fn query<R: Send + 'static>(r: &Running, f: impl FnOnce(&Engine) -> R + Send + 'static) -> R {
    r.backend.handle().query_wait(f).expect("query")
}

fn submit(r: &Running, command: Command) {
    node_common::submit_to(&r.backend, command);
}

fn kura(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KURA_DATA")
        .env_remove("KURA_OPERATOR")
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

/// Run `kura args`, expect exit code 1, and return its stderr.
fn fails(args: &[&str]) -> String {
    let out = kura(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kura {args:?} should fail:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("utf-8")
}

/// `withdrawal list --json` for `state`, with `--data` after the subcommand.
fn list(data: &str, state: &str) -> Vec<Value> {
    let text = ok(&[
        "admin",
        "withdrawal",
        "list",
        "--data",
        data,
        "--state",
        state,
        "--json",
    ]);
    assert_eq!(text.lines().count(), 1, "one JSON array: {text}");
    match serde_json::from_str(&text).expect("JSON") {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().filter_map(|r| r["id"].as_str()).collect()
}

fn state(r: &Running, id: &str) -> Option<WithdrawalState> {
    let id = id.to_owned();
    query(r, move |e| e.withdrawal(&id).map(|w| w.state))
}

fn available(r: &Running, user: UserId) -> u64 {
    query(r, move |e| {
        e.ledger()
            .balance(user, BTC)
            .map(|b| b.available.get())
            .expect("balance")
    })
}

#[test]
fn review_list_approve_and_reject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let data = dir.path().to_str().expect("utf-8 path");
    ok(&["admin", "--data", data, "user", "create", "bob"]);
    ok(&[
        "admin", "--data", data, "credit", "bob", "BTC", "1", "--ref", "t-1", "--reason", "test",
    ]);
    let bob = query(&node, |e| e.user_by_name("bob")).expect("bob exists");
    submit(
        &node,
        Command::SetWithdrawalPolicy {
            asset: BTC,
            policy: WithdrawalPolicy {
                fee: Amount::new(1_000),
                min_amount: Amount::new(10_000),
                daily_limit: Amount::new(100_000_000),
                approval_above: Amount::new(1_000_000),
                address_delay_ms: 0,
                listed_only: false,
            },
        },
    );
    let request = |id: &str, amount: u64| Command::RequestChainWithdrawal {
        user: bob,
        asset: BTC,
        amount: Amount::new(amount),
        id: id.to_owned(),
        address: ADDRESS.to_owned(),
    };
    // Above the threshold: held for review. Below it: approved at once.
    submit(&node, request("wd-big", 10_000_000));
    submit(&node, request("wd-small", 50_000));
    assert_eq!(state(&node, "wd-big"), Some(WithdrawalState::Review));
    assert_eq!(state(&node, "wd-small"), Some(WithdrawalState::Approved));

    // The default list is what waits for review, with every field.
    let rows = list(data, "review");
    assert_eq!(ids(&rows), ["wd-big"]);
    let w = &rows[0];
    assert_eq!(w["user"], "bob");
    assert_eq!(w["user_id"], bob.0);
    assert_eq!(w["asset"], "BTC");
    assert_eq!(w["amount"], "0.10000000");
    assert_eq!(w["fee"], "0.00001000");
    assert_eq!(w["address"], ADDRESS);
    assert_eq!(w["state"], "review");
    assert_eq!(w["batch"], Value::Null);
    let requested = w["requested_ms"].as_u64().expect("requested_ms");
    assert!(requested > 0, "{w}");
    // No address delay: releasable from the request on.
    assert_eq!(w["release_ms"].as_u64(), Some(requested));
    assert_eq!(w["requested"].as_str().map(str::len), Some(19), "{w}");
    assert_eq!(w["release"], w["requested"]);

    let text = ok(&["admin", "--data", data, "withdrawal", "list"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("wd-big "))
        .unwrap_or_else(|| panic!("wd-big not in\n{text}"));
    let customer = format!("bob (#{})", bob.0);
    for field in [
        &customer,
        "BTC",
        "0.10000000",
        "0.00001000",
        ADDRESS,
        "review",
    ] {
        assert!(line.contains(field), "{field:?} not in {line:?}");
    }
    assert!(!text.contains("wd-small"), "{text}");
    assert_eq!(ids(&list(data, "approved")), ["wd-small"]);
    assert_eq!(ids(&list(data, "all")), ["wd-big", "wd-small"]);
    let bad = fails(&[
        "admin",
        "--data",
        data,
        "withdrawal",
        "list",
        "--state",
        "x",
    ]);
    assert!(bad.contains("unknown withdrawal state \"x\""), "{bad}");

    // Approve: out of review, into the approved list.
    let answer = ok(&[
        "admin",
        "--data",
        data,
        "--operator",
        "ops-1",
        "withdrawal",
        "approve",
        "wd-big",
        "--reason",
        "called the customer",
        "--json",
    ]);
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["approved"], "wd-big");
    assert_eq!(answer["state"], "approved");
    assert_eq!(state(&node, "wd-big"), Some(WithdrawalState::Approved));
    assert!(list(data, "review").is_empty());
    assert_eq!(ids(&list(data, "approved")), ["wd-big", "wd-small"]);
    let empty = ok(&["admin", "--data", data, "withdrawal", "list"]);
    assert_eq!(
        empty.trim(),
        "no withdrawals in state review (--state all lists every one)"
    );

    // Approving again, or an unknown id: a clear error and exit code 1.
    let again = fails(&["admin", "--data", data, "withdrawal", "approve", "wd-big"]);
    assert!(
        again.contains("withdrawal \"wd-big\" is approved, not waiting for review"),
        "{again}"
    );
    let unknown = fails(&["admin", "--data", data, "withdrawal", "approve", "wd-none"]);
    assert!(
        unknown.contains("no withdrawal with id \"wd-none\""),
        "{unknown}"
    );
    assert_eq!(state(&node, "wd-none"), None);

    // Reject: the withdrawal is cancelled and its amount is available again.
    submit(&node, request("wd-review-2", 2_000_000));
    let before = available(&node, bob);
    let no_reason = fails(&[
        "admin",
        "--data",
        data,
        "withdrawal",
        "reject",
        "wd-review-2",
        "--reason",
        " ",
    ]);
    assert!(no_reason.contains("a reason is required"), "{no_reason}");
    assert_eq!(state(&node, "wd-review-2"), Some(WithdrawalState::Review));
    let answer = ok(&[
        "admin",
        "--data",
        data,
        "withdrawal",
        "reject",
        "wd-review-2",
        "--reason",
        "destination on a deny list",
        "--json",
    ]);
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["rejected"], "wd-review-2");
    assert_eq!(answer["state"], "cancelled");
    assert_eq!(available(&node, bob), before + 2_000_000);
    assert_eq!(ids(&list(data, "cancelled")), ["wd-review-2"]);
    // Only a withdrawal in review can be rejected.
    let approved = fails(&[
        "admin",
        "--data",
        data,
        "withdrawal",
        "reject",
        "wd-small",
        "--reason",
        "r",
    ]);
    assert!(
        approved.contains("withdrawal \"wd-small\" is approved, not waiting for review"),
        "{approved}"
    );
    assert_eq!(state(&node, "wd-small"), Some(WithdrawalState::Approved));
    stop(node);

    // The journal records who approved and why.
    let dump = ok(&["journal", "dump", "--data", data, "--json"]);
    let approval: Value = dump
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r.to_string().contains("approve_withdrawal"))
        .unwrap_or_else(|| panic!("no approval in the journal:\n{dump}"));
    let text = approval.to_string();
    for expected in [
        "\"admin\"",
        "\"ops-1\"",
        "\"called the customer\"",
        "\"wd-big\"",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
}
