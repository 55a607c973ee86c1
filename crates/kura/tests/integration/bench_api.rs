//! Smoke test of `kura bench api`: tiny settings, the JSON has every figure with sane
//! values, every request was answered 200, the engine agrees with the client, and the
//! temporary data directories are gone afterwards. No timing is asserted.

use serde_json::Value;
use std::process::Command;

fn number(v: &Value, path: &str) -> u64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a whole number: {at} in {v}"))
}

fn check_run(run: &Value) {
    for field in [
        "sent",
        "ok",
        "ok_per_sec",
        "orders_ok",
        "cancels_ok",
        "fsyncs",
        "fsyncs_per_sec",
        "connections_used",
    ] {
        assert!(number(run, field) > 0, "{field} is not positive in {run}");
    }
    assert_eq!(number(run, "failed"), 0, "{run}");
    assert_eq!(number(run, "transport_errors"), 0, "{run}");
    assert_eq!(number(run, "ok"), number(run, "sent"), "{run}");
    let p50 = number(run, "latency_us.p50");
    let p99 = number(run, "latency_us.p99");
    let p999 = number(run, "latency_us.p999");
    let max = number(run, "latency_us.max");
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{run}");
    assert!(
        run["mean_batch"].as_f64().is_some_and(|b| b >= 1.0),
        "{run}"
    );
}

#[test]
fn bench_api_reports_every_figure() {
    let parent = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["bench", "api", "--json", "--duration-secs", "0.5"])
        .args([
            "--warmup-secs",
            "0.2",
            "--rates",
            "400",
            "--connections",
            "4",
        ])
        .args(["--users", "2"])
        .arg("--dir")
        .arg(parent.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kura");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kura failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stderr}"));

    assert!(
        v["note"].as_str().is_some_and(|n| n.contains("share")),
        "{v}"
    );
    assert_eq!(number(&v, "failed_requests"), 0, "{v}");
    let open = v["open_loop"].as_array().expect("open_loop");
    assert_eq!(open.len(), 1, "{v}");
    check_run(&open[0]);
    assert_eq!(number(&open[0], "offered_rate"), 400);
    assert!(open[0]["send_lag_us"]["p99"].is_u64(), "{v}");
    check_run(&v["closed_loop"]);
    assert_eq!(number(&v, "closed_loop.connections"), 4);
    assert!(number(&v, "max_sustained_per_sec") > 0, "{v}");

    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2, "{v}");
    for c in checks {
        assert_eq!(c["matches"], true, "{c}");
        assert_eq!(
            number(c, "engine_update_id"),
            number(c, "orders_ok") + number(c, "cancels_ok"),
            "{c}"
        );
        assert!(number(c, "trades_in_read_model") > 0, "no trades: {c}");
    }

    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("list")
        .collect::<Result<_, _>>()
        .expect("entries");
    assert!(left.is_empty(), "temporary data left behind: {left:?}");
}
