//! The OpenAPI document against the real binary: Schemathesis (the pinned
//! `schemathesis` from PyPI, in the same environment as CCXT) reads `/openapi.json`
//! from a running `kura serve` and sends generated requests to every operation, valid
//! and invalid, signed by `tests/e2e/schemathesis_hooks.py` with a real key. Any 5xx,
//! any status the document does not list for the operation, any other content type,
//! or any body that does not match the documented schema (error codes included: each
//! status's `code` is an `enum`) fails the test.
//!
//! The Python environment is `scripts/e2e-venv`'s (`target/e2e-venv`, or
//! `KURA_E2E_PYTHON`); without it this test fails, never skips. Only loopback is
//! reached. The run is bounded ([`MAX_EXAMPLES`] per operation, a fixed seed, no
//! shrinking) and its report is written to the temporary directory.

#![cfg(unix)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh node may take to write server.json.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two looks at a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Generated test cases per operation and phase: enough to reach every parameter's
/// invalid forms, few enough for about a minute on two cores.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed, so a failure reproduces.
const SEED: &str = "20261123";
/// The checks run on every response.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";
/// The customer the generated requests are signed for, and what it is credited so
/// that generated orders can rest and trade.
const CUSTOMER: &str = "fuzz1";
const CREDITS: [(&str, &str); 3] = [("BTC", "10"), ("JPY", "100000000"), ("USD", "1000000")];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The venv python; a missing interpreter fails the test with the fix.
fn python() -> PathBuf {
    let path = std::env::var_os("KURA_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/e2e-venv/bin/python"));
    assert!(
        path.exists(),
        "the Schemathesis end-to-end test needs the pinned Python environment, and {} does \
         not exist: run scripts/e2e-venv (it creates target/e2e-venv with ccxt and \
         schemathesis and prints the python path; KURA_E2E_PYTHON may point elsewhere)",
        path.display()
    );
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read(path).map(|b| text(&b)).unwrap_or_default()
}

/// One `kura serve` process; dropping it kills the process if it still runs.
#[derive(Debug)]
struct Server {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    rest: String,
}

impl Server {
    /// Start `kura serve --data DATA --listen 127.0.0.1:0` and wait until server.json
    /// names this child's pid and stdout says where it listens.
    fn start(data: &Path, logs: &Path) -> Server {
        let stdout = logs.join("serve.stdout");
        let stderr = logs.join("serve.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_kura"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout log"))
            .stderr(File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("spawn kura serve");
        let mut server = Server {
            child,
            stdout,
            stderr,
            rest: String::new(),
        };
        server.rest = server.wait_ready(&data.join("server.json"));
        server
    }

    fn logs(&self) -> String {
        format!(
            "--- kura serve stdout ---\n{}\n--- kura serve stderr ---\n{}",
            read_or_empty(&self.stdout),
            read_or_empty(&self.stderr)
        )
    }

    fn wait_ready(&mut self, server_json: &Path) -> String {
        let pid = u64::from(self.child.id());
        let deadline = Instant::now() + READY_TIMEOUT;
        let rest = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "kura serve exited before it was ready ({status})\n{}",
                    self.logs()
                );
            }
            if let Ok(bytes) = std::fs::read(server_json) {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("server.json is not JSON ({e}): {}", text(&bytes)));
                if v["pid"].as_u64() == Some(pid) {
                    let rest = v["rest"]
                        .as_str()
                        .expect("server.json names rest")
                        .to_owned();
                    assert!(
                        rest.starts_with("http://127.0.0.1:"),
                        "the REST address is loopback: {v}"
                    );
                    break rest;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kura serve did not write server.json with pid {pid} within {READY_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        let line = format!("listening on {rest}");
        while !read_or_empty(&self.stdout)
            .lines()
            .any(|l| l.trim() == line)
        {
            assert!(
                Instant::now() < deadline,
                "kura serve never printed {line:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        rest
    }

    /// SIGTERM; the graceful stop must end with exit status 0.
    fn terminate(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "kura serve did not exit within {STOP_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        assert_eq!(
            status.code(),
            Some(0),
            "kura serve stops with exit 0 on SIGTERM after the fuzzing\n{}",
            self.logs()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kura admin --data DATA ARGS…`, which must succeed.
fn admin(data: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run kura admin");
    assert!(
        out.status.success(),
        "kura admin {} failed ({})\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The customer, credited, and its HMAC key and secret.
fn provision(data: &Path) -> (String, String) {
    admin(data, &["user", "create", CUSTOMER]);
    for (asset, amount) in CREDITS {
        let reference = format!("fuzz-credit-{asset}");
        admin(
            data,
            &[
                "credit",
                CUSTOMER,
                asset,
                amount,
                "--ref",
                &reference,
                "--reason",
                "schemathesis funding",
            ],
        );
    }
    let out = admin(
        data,
        &["key", "create", CUSTOMER, "--perm", "read,trade", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("key create --json printed no JSON ({e})"));
    let field = |name: &str| {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("key create names {name}: {v}"))
            .to_owned()
    };
    (field("key"), field("secret"))
}

#[test]
fn the_served_openapi_document_holds_under_schemathesis() {
    let python = python();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start(&data, dir.path());
    let (key, secret) = provision(&data);
    let hooks = workspace().join("tests/e2e/schemathesis_hooks.py");
    let report = dir.path().join("schemathesis-report.json");
    let server_errors = dir.path().join("server-errors.ndjson");
    let schema = format!("{}/openapi.json", server.rest);
    let started = Instant::now();
    let out = Command::new(&python)
        .args(["-m", "schemathesis.cli", "run", &schema])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--phases", "examples,coverage,fuzzing"])
        .arg("--no-shrink")
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .arg("--continue-on-failure")
        .args(["--report", "json"])
        .arg("--report-json-path")
        .arg(&report)
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("KURA_E2E_SERVER_ERRORS", &server_errors)
        .env("KURA_E2E_KEY", &key)
        .env("KURA_E2E_SECRET", &secret)
        .env("NO_COLOR", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    println!("{}", text(&out.stdout));
    eprintln!("{}", text(&out.stderr));
    let context = || {
        format!(
            "schemathesis ({}; after {:?}): the failures above name the operation, the \
             check, the request (as curl) and the response\n{}",
            out.status,
            started.elapsed(),
            server.logs()
        )
    };
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}); {}", context())),
    )
    .unwrap_or_else(|e| panic!("the report is not JSON ({e}); {}", context()));
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    let tested = report["operations"]["tested"].as_u64().unwrap_or(0);
    assert!(
        errors == 0 && tested > 0,
        "schemathesis tested {tested} operations with {errors} errors; {}",
        context()
    );
    // No failure is tolerated: every response conforms and no request gets a 5xx.
    let kinds: Vec<&str> = report["failures"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["type"].as_str()).collect())
        .unwrap_or_default();
    let fives = std::fs::read_to_string(&server_errors).unwrap_or_default();
    assert!(
        kinds.is_empty() && fives.trim().is_empty() && out.status.success(),
        "schemathesis found responses that break the document: failure kinds {kinds:?}, \
         5xx answers: {fives}; {}",
        context()
    );
    server.terminate();
}
