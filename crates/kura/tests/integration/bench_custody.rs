//! Smoke test of `kura bench custody`: tiny sizes, the JSON has every field with sane
//! values, and the temporary data directory is gone afterwards. No timing is asserted
//! beyond rates being positive and percentiles ordered.

use serde_json::Value;
use std::process::Command;

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |at, key| &at[key])
}

fn number(v: &Value, path: &str) -> f64 {
    at(v, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = number(v, path);
    assert!(x > 0.0, "{path} is not positive: {x} in {v}");
    x
}

fn ordered(v: &Value, low: &str, high: &str) {
    let (l, h) = (number(v, low), number(v, high));
    assert!(l <= h, "{low} ({l}) > {high} ({h}) in {v}");
}

#[test]
fn bench_custody_reports_every_figure() {
    let parent = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["bench", "custody", "--json"])
        .args([
            "--customers",
            "1000",
            "--utxos",
            "500",
            "--addresses",
            "100",
        ])
        .args(["--batch-outputs", "10"])
        .arg("--dir")
        .arg(parent.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running kura");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kura failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stderr}"));

    assert_eq!(v["benchmark"].as_str(), Some("custody"), "{v}");
    positive(&v, "machine.cpus");

    assert_eq!(v["derive"]["addresses"].as_u64(), Some(100), "{v}");
    positive(&v, "derive.per_sec");
    positive(&v, "derive.parsed_once_per_sec");

    let r = &v["reconcile"];
    assert_eq!(r["customers"].as_u64(), Some(1000), "{r}");
    assert_eq!(r["utxos"].as_u64(), Some(500), "{r}");
    assert_eq!(r["blocks"].as_u64(), Some(50), "{r}");
    assert_eq!(r["deposit_addresses"].as_u64(), Some(1000), "{r}");
    positive(r, "ms_per_block_p50");
    ordered(r, "ms_per_block_p50", "ms_per_block_p99");
    ordered(r, "ms_per_block_p99", "ms_per_block_max");
    for part in [
        "books_copy_ms",
        "watcher_connect_ms",
        "plan_ms",
        "engine_apply_ms",
    ] {
        ordered(r, &format!("{part}.p50"), &format!("{part}.p99"));
        ordered(r, &format!("{part}.p99"), &format!("{part}.max"));
    }
    ordered(r, "engine_reconcile_us.p50", "engine_reconcile_us.p99");
    positive(r, "setup.watcher_connect_coins_per_sec");
    // Every timed block credits 4 deposits and settles 4 withdrawals, and stays covered.
    assert_eq!(r["deposits_credited"].as_u64(), Some(200), "{r}");
    assert_eq!(r["withdrawals_settled"].as_u64(), Some(200), "{r}");
    assert_eq!(r["short_blocks"].as_u64(), Some(0), "{r}");
    assert_eq!(r["invariants_checked"].as_bool(), Some(true), "{r}");

    let p = &v["psbt"];
    assert_eq!(p["outputs"].as_u64(), Some(10), "{p}");
    positive(p, "inputs");
    positive(p, "build_ms");
    positive(p, "sign_ms");
    positive(p, "key_open_ms");
    positive(p, "key_create_ms");
    let vsize = positive(p, "vsize");
    let fee = positive(p, "fee_sat");
    // The fee covers the rate asked for on the signed size.
    assert!(fee >= 10.0 * vsize, "{p}");

    let c = &v["credit_latency"];
    assert_eq!(c["confirmations"].as_u64(), Some(1), "{c}");
    assert_eq!(c["samples"].as_u64(), Some(20), "{c}");
    positive(c, "poll_ms");
    positive(c, "p50_ms");
    ordered(c, "min_ms", "p50_ms");
    ordered(c, "p50_ms", "p99_ms");
    ordered(c, "p99_ms", "max_ms");

    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("listing the parent dir")
        .collect();
    assert!(
        left.is_empty(),
        "the data directory was not removed: {left:?}"
    );
}
