//! End to end for the WebSocket streams with a real client: the `kura` binary
//! (`kura serve` on a fresh data directory, customers, keys and credits through
//! `kura admin`) watched by unmodified CCXT Pro, the pinned `ccxt==4.5.90` from PyPI
//! (`ccxt.pro.binance`), through `tests/e2e/ccxt_pro_suite.py`: order-book sync
//! across many updates, trades, klines, tickers, and the user-data stream (balance,
//! orders, own trades) over the WS-API.
//!
//! The Python environment is provisioned by `scripts/e2e-venv` at `target/e2e-venv`;
//! `KURA_E2E_PYTHON` overrides the interpreter. Without it this test fails, never
//! skips. Waiting is always for a condition with a deadline, never a fixed sleep; the
//! suite itself bounds every wait and the whole run is bounded by [`SUITE_TIMEOUT`].

#![cfg(unix)]

use crate::e2e_common;

use e2e_common::*;

/// What each customer is credited.
const CREDITS: [(&str, &str); 3] = [("BTC", "2"), ("JPY", "50000000"), ("USD", "100000")];
const CUSTOMERS: [&str; 2] = ["customer1", "customer2"];
/// The whole suite; each of its waits has its own, shorter deadline.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// An HMAC key from `kura admin key create`.
#[derive(Debug)]
struct Key {
    key: String,
    secret: String,
}

/// The two customers, credited, with one HMAC key each.
fn provision(data: &Path) -> Vec<Key> {
    CUSTOMERS
        .iter()
        .map(|name| {
            admin(data, &["user", "create", name]);
            for (asset, amount) in CREDITS {
                let reference = format!("e2e-pro-credit-{name}-{asset}");
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
            let v = admin_json(
                data,
                &["key", "create", name, "--perm", "read,trade", "--json"],
            );
            assert_eq!(v["user"], *name, "key create names its user: {v}");
            Key {
                key: v["key"].as_str().expect("key").to_string(),
                secret: v["secret"].as_str().expect("secret").to_string(),
            }
        })
        .collect()
}

/// Run the CCXT Pro suite with a deadline; its output is printed (shown by the test
/// harness on failure) and its exit status must be 0.
fn run_suite(server: &Server, keys: &[Key], dir: &Path) {
    let suite = workspace().join("tests/e2e/ccxt_pro_suite.py");
    let out_path = dir.join("suite.stdout");
    let err_path = dir.join("suite.stderr");
    let mut child = Command::new(python())
        .arg(&suite)
        .arg("--server-json")
        .arg(server.data.join("server.json"))
        .env("KURA_E2E_A_KEY", &keys[0].key)
        .env("KURA_E2E_A_SECRET", &keys[0].secret)
        .env("KURA_E2E_B_KEY", &keys[1].key)
        .env("KURA_E2E_B_SECRET", &keys[1].secret)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("suite stdout log"))
        .stderr(File::create(&err_path).expect("suite stderr log"))
        .spawn()
        .expect("run the CCXT Pro suite");
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let (stdout, stderr) = (read_or_empty(&out_path), read_or_empty(&err_path));
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!(
            "the CCXT Pro suite ({}) did not finish within {SUITE_TIMEOUT:?}\n{stdout}\n{stderr}\n{}",
            suite.display(),
            server.logs()
        )
    });
    assert!(
        status.success(),
        "the CCXT Pro suite ({}) failed with {status}: the FAIL line above says which check, \
         what was expected and what came back, and the last frames each client received\n\
         {stderr}\n{}",
        suite.display(),
        server.logs()
    );
}

#[test]
fn ccxt_pro_watches_the_real_binary() {
    python();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start(&data, dir.path(), 1);
    let keys = provision(&data);
    run_suite(&server, &keys, dir.path());
    server.terminate();
}
