//! Smoke test of `kura bench solvency`: tiny sizes, the JSON has every field with sane
//! values (proof sizes exact for the sizes given). No timing is asserted beyond
//! percentiles being ordered.

use serde_json::Value;
use std::process::Command;

#[test]
fn bench_solvency_reports_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["bench", "solvency", "--json"])
        .args(["--customers", "300", "--depth", "9"])
        .args(["--records", "5000", "--proofs", "20"])
        .args(["--export-records", "3000"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running kura");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kura failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stderr}"));
    assert_eq!(v["benchmark"], "solvency", "{v}");
    let e = &v["export"];
    // Genesis, eight customers and the 3,000 commands: every record is scanned, and the
    // customer's share (one in eight of the commands, at least) is exported.
    let journal = e["journal_records"].as_u64().expect("journal records");
    assert!(journal > 3000, "{v}");
    assert_eq!(e["records_scanned"], journal, "{v}");
    let exported = e["records_exported"].as_u64().expect("exported");
    assert!((3000 / 8..journal).contains(&exported), "{v}");
    assert!(e["bytes_written"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert!(
        v["export_records_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{v}"
    );

    let t = &v["liabilities_tree"];
    assert_eq!(t["customers"], 300, "{v}");
    assert_eq!(t["slots"], 512, "{v}");
    assert_eq!(t["proof_bytes_siblings"], 9 * 40, "{v}");
    assert!(
        t["proof_bytes_json"].as_u64().is_some_and(|b| b > 9 * 40),
        "{v}"
    );
    assert!(t["build_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{v}");
    for key in ["proof_make_us", "proof_verify_us"] {
        assert_eq!(t[key]["samples"], 20, "{v}");
        assert!(t[key]["p50"].as_f64() <= t[key]["p99"].as_f64(), "{v}");
    }

    let l = &v["audit_log"];
    assert_eq!(l["records"], 5000, "{v}");
    // ceil(log2(5000)) = 13 hashes at most (fewer for leaves of the last, smaller
    // subtrees).
    let hashes = l["inclusion_proof_hashes"].as_u64().expect("hashes");
    assert!((1..=13).contains(&hashes), "{v}");
    assert_eq!(l["inclusion_proof_bytes"], hashes * 32, "{v}");
    for key in ["inclusion_proof_make_us", "inclusion_proof_verify_us"] {
        assert_eq!(l[key]["samples"], 20, "{v}");
        assert!(l[key]["p50"].as_f64() <= l[key]["p99"].as_f64(), "{v}");
    }
}
