//! Custody end to end with a real client: `kura serve --chain devnet` driven by
//! unmodified CCXT (`tests/e2e/ccxt_custody.py`) and by `kura devnet` commands —
//! deposit, confirmations, credit, a trade, a withdrawal paid on chain and settled once.

#![cfg(unix)]

use crate::e2e_common;

use e2e_common::*;

/// A regtest P2WPKH address of a key nobody at the exchange holds (a fixed test key).
const OUTSIDE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn key(data: &Path, name: &str, perms: &str, ip: Option<&str>) -> (String, String) {
    let mut args = vec!["key", "create", name, "--perm", perms];
    if let Some(ip) = ip {
        args.extend(["--allow-ip", ip]);
    }
    args.push("--json");
    let v = admin_json(data, &args);
    (
        v["key"].as_str().expect("key").to_string(),
        v["secret"].as_str().expect("secret").to_string(),
    )
}

#[test]
fn ccxt_deposits_trades_and_withdraws_on_the_devnet() {
    let py = python();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        dir.path(),
        1,
        &[
            "--chain",
            "devnet",
            "--confirmations",
            "2",
            "--withdrawal-address-delay-secs",
            "0",
            "--withdrawal-batch-secs",
            "0",
        ],
    );
    admin(&data, &["user", "create", "depositor"]);
    admin(&data, &["user", "create", "buyer"]);
    admin(
        &data,
        &[
            "credit",
            "buyer",
            "JPY",
            "5000000",
            "--ref",
            "e2e-custody-buyer-jpy",
            "--reason",
            "end-to-end test funding",
        ],
    );
    // A key that may withdraw needs an IP allow-list.
    let refused = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["admin", "--data"])
        .arg(&data)
        .args(["key", "create", "depositor", "--perm", "read,withdraw"])
        .output()
        .expect("run kura admin");
    assert!(
        !refused.status.success(),
        "a withdraw key without --allow-ip is refused"
    );
    let a = key(&data, "depositor", "read,trade,withdraw", Some("127.0.0.1"));
    let b = key(&data, "buyer", "read,trade", None);
    let out = Command::new(py)
        .arg(workspace().join("tests/e2e/ccxt_custody.py"))
        .env("KURA_E2E_SERVER_JSON", data.join("server.json"))
        .env("KURA_E2E_DATA", &data)
        .env("KURA_E2E_KURA", env!("CARGO_BIN_EXE_kura"))
        .env("KURA_E2E_A_KEY", &a.0)
        .env("KURA_E2E_A_SECRET", &a.1)
        .env("KURA_E2E_B_KEY", &b.0)
        .env("KURA_E2E_B_SECRET", &b.1)
        .env("KURA_E2E_OUTSIDE", OUTSIDE)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the custody suite");
    println!("{}", text(&out.stdout));
    eprintln!("{}", text(&out.stderr));
    assert!(
        out.status.success(),
        "the CCXT custody suite failed ({}): the FAIL line above says which check\n{}",
        out.status,
        server.logs()
    );
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
