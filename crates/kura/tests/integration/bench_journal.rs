//! Smoke test of `kura bench journal`: tiny settings, the JSON has every field and the
//! temporary data directory is gone afterwards. No timing is asserted.

use serde_json::Value;
use std::process::Command;

fn positive(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    let x = at
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {at} in {v}"));
    assert!(x > 0.0, "{path} is not positive: {x} in {v}");
    x
}

fn check_run(run: &Value) {
    for field in [
        "submitted",
        "sent_per_sec",
        "durable",
        "durable_per_sec",
        "ack_latency_us.max",
        "fsyncs",
        "fsyncs_per_sec",
        "mean_batch",
    ] {
        positive(run, field);
    }
    for field in ["p50", "p99", "p999"] {
        assert!(
            run["ack_latency_us"][field].is_u64(),
            "ack_latency_us.{field} missing in {run}"
        );
    }
    assert!(run["busy"].is_u64(), "busy missing in {run}");
    assert!(
        run["refused_by_engine"].is_u64(),
        "refused missing in {run}"
    );
    // Where the batches' time went: every stage of a run that made something durable
    // has samples, so its p50 bound is at least 1 µs, and the bounds are ordered.
    for stage in ["queue_wait_us", "commit_us", "apply_us"] {
        let s = &run["batch_stages"][stage];
        let (p50, p99, p999) = (s["p50"].as_u64(), s["p99"].as_u64(), s["p999"].as_u64());
        assert!(p50.is_some_and(|p| p >= 1), "{stage} missing in {run}");
        assert!(p50 <= p99 && p99 <= p999, "{stage} out of order in {run}");
    }
    assert!(
        run["send_lateness_us"]["p99"].is_u64(),
        "send_lateness_us missing in {run}"
    );
    let lat = &run["ack_latency_us"];
    assert!(lat["p50"].as_u64() <= lat["p99"].as_u64());
    assert!(lat["p99"].as_u64() <= lat["p999"].as_u64());
    assert!(lat["p999"].as_u64() <= lat["max"].as_u64());
}

#[test]
fn bench_journal_reports_every_figure() {
    let parent = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["bench", "journal", "--json", "--seconds", "0.2"])
        .args(["--rates", "1000,max", "--replay-records", "20000"])
        .args(["--commands", "100000"])
        .args([
            "--queue",
            "65536",
            "--batch-max",
            "4096",
            "--max-in-flight",
            "8192",
        ])
        .arg("--dir")
        .arg(parent.path())
        .output()
        .expect("running kura");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kura failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stderr}"));

    assert!(v["disk"].is_string(), "{v}");
    let group = v["group_commit"].as_array().expect("group_commit array");
    assert_eq!(group.len(), 2, "{v}");
    assert_eq!(group[0]["offered_rate"].as_u64(), Some(1000), "{v}");
    assert_eq!(group[1]["offered_rate"].as_str(), Some("max"), "{v}");
    for run in group {
        check_run(run);
    }
    for run in group {
        positive(run, "ack_p99_over_fsync_floor_p99");
    }
    check_run(&v["one_fsync_per_command"]);
    // The disk's floor, measured in the same run.
    let floor = &v["fsync_floor"];
    let samples = positive(floor, "samples");
    positive(floor, "syncs_per_sec");
    positive(floor, "latency_us.max");
    let lat = &floor["latency_us"];
    assert!(lat["p50"].as_u64() <= lat["p99"].as_u64(), "{floor}");
    assert!(lat["p99"].as_u64() <= lat["p999"].as_u64(), "{floor}");
    assert!(lat["p999"].as_u64() <= lat["max"].as_u64(), "{floor}");
    assert_eq!(floor["p999_meaningful"].as_bool(), Some(samples >= 1_000.0));
    assert_eq!(
        floor["ack_p99_target_reachable"].as_bool(),
        lat["p99"].as_u64().map(|p| p <= 5_000),
        "{floor}"
    );
    positive(&v, "gain");
    let records = positive(&v, "replay.records");
    assert!(records >= 20_000.0, "{v}");
    positive(&v, "replay.per_sec");
    positive(&v, "replay.bytes");
    positive(&v, "targets.durable_per_sec");
    positive(&v, "targets.ack_p99_ms");
    positive(&v, "targets.replay_per_sec");

    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("listing the parent dir")
        .collect();
    assert!(
        left.is_empty(),
        "the data directory was not removed: {left:?}"
    );
}
