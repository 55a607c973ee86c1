//! End to end with a real client: the `kura` binary (`kura serve` on a fresh data
//! directory, customers, keys and credits through `kura admin`) driven by unmodified
//! CCXT, the pinned `ccxt==4.5.90` from PyPI, through `tests/e2e/ccxt_suite.py`.
//!
//! The Python environment is provisioned by `scripts/e2e-venv` (which
//! `scripts/test-all` runs first) at `target/e2e-venv`; `KURA_E2E_PYTHON` overrides
//! the interpreter. Without it these tests fail, never skip: a green run must mean
//! CCXT really traded against the binary.
//!
//! Waiting is always for a condition with a deadline (server.json naming the child's
//! pid, the "listening on" line, the child's exit), never a fixed sleep.

#![cfg(unix)]

use crate::e2e_common;

use e2e_common::*;

/// What each customer is credited: enough for the suite's orders and an order larger
/// than the balance.
const CREDITS: [(&str, &str); 3] = [("BTC", "2"), ("JPY", "50000000"), ("USD", "100000")];
const CUSTOMERS: [&str; 2] = ["customer1", "customer2"];

/// A decimal string without trailing zeros ("2.00000000" and "2" are the same amount).
fn normal(amount: &str) -> String {
    if amount.contains('.') {
        amount
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        amount.to_string()
    }
}

/// Total (free + locked) per asset from `kura admin balances NAME --json`, as
/// (units, fraction digits) pairs so they add without floats.
fn admin_totals(data: &Path, name: &str) -> Vec<(String, String)> {
    let v = admin_json(data, &["balances", name, "--json"]);
    let rows = v
        .as_array()
        .unwrap_or_else(|| panic!("balances --json is a list: {v}"));
    let mut out: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            let field = |k: &str| {
                row[k]
                    .as_str()
                    .unwrap_or_else(|| panic!("balance row field {k:?} is a string: {row}"))
                    .to_string()
            };
            let total = add_decimal(&field("free"), &field("locked"));
            (field("asset"), normal(&total))
        })
        .collect();
    out.sort();
    out
}

/// Exact sum of two non-negative decimal strings.
fn add_decimal(a: &str, b: &str) -> String {
    let split = |s: &str| -> (String, String) {
        match s.split_once('.') {
            Some((i, f)) => (i.to_string(), f.to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let ((ai, af), (bi, bf)) = (split(a), split(b));
    let scale = af.len().max(bf.len());
    let pad = |i: &str, f: &str| -> u128 {
        let digits = format!("{i}{f:0<scale$}");
        digits
            .parse()
            .unwrap_or_else(|e| panic!("decimal {i}.{f}: {e}"))
    };
    let sum = pad(&ai, &af) + pad(&bi, &bf);
    if scale == 0 {
        return sum.to_string();
    }
    let digits = format!("{sum:0>width$}", width = scale + 1);
    let (i, f) = digits.split_at(digits.len() - scale);
    format!("{i}.{f}")
}

/// An HMAC or Ed25519 key from `kura admin key create`.
#[derive(Debug)]
struct Key {
    key: String,
    secret: String,
}

fn create_key(data: &Path, name: &str, ed25519: bool) -> Key {
    let mut args = vec!["key", "create", name, "--perm", "read,trade"];
    if ed25519 {
        args.push("--ed25519");
    }
    args.push("--json");
    let v = admin_json(data, &args);
    assert_eq!(v["user"], name, "key create names its user: {v}");
    let key = v["key"].as_str().expect("key").to_string();
    let secret = v["secret"].as_str().expect("secret").to_string();
    if ed25519 {
        // Its form (what CCXT accepts) is checked by the suite, after everything else.
        assert!(
            secret.contains("PRIVATE KEY"),
            "an Ed25519 secret is a PEM private key: {secret}"
        );
    }
    Key { key, secret }
}

/// The two customers, credited, with one HMAC key each.
fn provision(data: &Path) -> (Key, Key) {
    for name in CUSTOMERS {
        admin(data, &["user", "create", name]);
        for (asset, amount) in CREDITS {
            let reference = format!("e2e-credit-{name}-{asset}");
            admin(
                data,
                &[
                    "credit",
                    name,
                    asset,
                    amount,
                    "--ref",
                    &reference,
                    "--reason",
                    "end-to-end test funding",
                ],
            );
        }
    }
    // Credits are idempotent on their reference: a repeat changes nothing.
    let _ = Command::new(env!("CARGO_BIN_EXE_kura"))
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args([
            "credit",
            "customer1",
            "BTC",
            "2",
            "--ref",
            "e2e-credit-customer1-BTC",
            "--reason",
            "end-to-end test funding",
        ])
        .output()
        .expect("run kura admin credit");
    let mut want: Vec<(String, String)> = CREDITS
        .iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect();
    want.sort();
    for name in CUSTOMERS {
        let got: Vec<(String, String)> = admin_totals(data, name)
            .into_iter()
            .filter(|(asset, total)| total != "0" || want.iter().any(|(a, _)| a == asset))
            .collect();
        assert_eq!(
            got, want,
            "{name}'s balances are the credits, once each (credit is idempotent on --ref)"
        );
    }
    (
        create_key(data, "customer1", false),
        create_key(data, "customer2", false),
    )
}

/// Run the CCXT suite in `mode`; its output is printed (shown by the test harness on
/// failure) and its exit status must be 0.
fn run_suite(server: &Server, keys: &(Key, Key), ed25519: Option<&Key>, dir: &Path, mode: &str) {
    let credits = CREDITS
        .iter()
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let suite = workspace().join("tests/e2e/ccxt_suite.py");
    let mut command = Command::new(python());
    if let Some(ed) = ed25519 {
        let pem = dir.join("customer1-ed25519.pem");
        std::fs::write(&pem, &ed.secret).expect("write the Ed25519 key");
        command
            .env("KURA_E2E_ED_KEY", &ed.key)
            .env("KURA_E2E_ED_SECRET_FILE", &pem);
    }
    let out = command
        .arg(&suite)
        .args(["--mode", mode])
        .arg("--server-json")
        .arg(server.data.join("server.json"))
        .env("KURA_E2E_A_KEY", &keys.0.key)
        .env("KURA_E2E_A_SECRET", &keys.0.secret)
        .env("KURA_E2E_B_KEY", &keys.1.key)
        .env("KURA_E2E_B_SECRET", &keys.1.secret)
        .env("KURA_E2E_CREDITS", credits)
        .env("KURA_E2E_STATE", dir.join("state.json"))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the CCXT suite");
    println!("{}", text(&out.stdout));
    eprintln!("{}", text(&out.stderr));
    assert!(
        out.status.success(),
        "the CCXT suite ({} --mode {mode}) failed with {}: the FAIL line above says which \
         check, what was expected and what came back\n{}\n{}",
        suite.display(),
        out.status,
        text(&out.stderr),
        server.logs()
    );
}

/// BTC only moves between customers (fees are charged in the quote asset), so after
/// any trading the customers' BTC still adds up to what they were credited.
fn assert_btc_conserved(data: &Path) {
    let mut total = "0".to_string();
    for name in CUSTOMERS {
        for (asset, amount) in admin_totals(data, name) {
            if asset == "BTC" {
                total = add_decimal(&total, &amount);
            }
        }
    }
    assert_eq!(
        normal(&total),
        "4",
        "the customers' BTC (kura admin balances) adds up to the 2 + 2 BTC credited"
    );
}

#[test]
fn ccxt_trades_against_the_real_binary() {
    python();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start(&data, dir.path(), 1);
    let keys = provision(&data);
    let ed25519 = create_key(&data, "customer1", true);
    run_suite(&server, &keys, Some(&ed25519), dir.path(), "full");
    assert_btc_conserved(&data);
    server.terminate();
    let verify = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["journal", "verify", "--data"])
        .arg(&data)
        .output()
        .expect("run kura journal verify");
    assert!(
        verify.status.success(),
        "the journal verifies after the run: {}",
        text(&verify.stderr)
    );
}

#[test]
fn open_orders_balances_and_history_survive_kill_9() {
    python();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Server::start(&data, dir.path(), 1);
    let keys = provision(&data);
    run_suite(&first, &keys, None, dir.path(), "seed");
    let first_pid = first.info.pid;
    first.kill_9();

    let second = Server::start(&data, dir.path(), 2);
    assert_ne!(
        second.info.pid, first_pid,
        "a new process serves the directory"
    );
    run_suite(&second, &keys, None, dir.path(), "verify");
    assert_btc_conserved(&data);
    second.terminate();
}
