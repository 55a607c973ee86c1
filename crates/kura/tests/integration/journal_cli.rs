//! `kura journal verify | dump | head` against a real data directory, healthy and
//! damaged.

use std::path::Path;
use std::process::{Command, Output};

fn kura(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run kura")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A data directory with a few hundred journaled commands and some snapshots.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = kura(
        &[
            "debug",
            "stress-node",
            "--count",
            "300",
            "--snapshot-every",
            "100",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

#[test]
fn verify_head_and_dump_agree_on_a_healthy_journal() {
    let dir = populated();
    let verify = kura(&["journal", "verify", "--json"], dir.path());
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let v: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert_eq!(v["ok"], true);
    let seq = v["seq"].as_u64().expect("seq");
    assert!(seq >= 300, "head {seq}");
    assert!(v["snapshots_checked"].as_u64().expect("count") >= 2);

    let head = kura(&["journal", "head", "--json"], dir.path());
    assert!(head.status.success());
    let h: serde_json::Value = serde_json::from_slice(&head.stdout).expect("json");
    assert_eq!(h["seq"], v["seq"]);
    assert_eq!(h["chain_hash"], v["chain_hash"]);

    let dump = kura(
        &["journal", "dump", "--json", "--from", "5", "--to", "7"],
        dir.path(),
    );
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let lines: Vec<serde_json::Value> = text(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(
        lines.iter().map(|l| l["seq"].as_u64()).collect::<Vec<_>>(),
        vec![Some(5), Some(6), Some(7)]
    );
    assert!(lines[0]["entry"]["command"].is_object() || lines[0]["entry"].is_object());
}

#[test]
fn verify_names_the_file_and_offset_of_damage() {
    let dir = populated();
    let seg_dir = dir.path().join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&seg_dir)
        .expect("journal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let seg = segments.first().expect("a segment").clone();
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");

    let out = kura(&["journal", "verify"], dir.path());
    assert!(!out.status.success(), "damage must fail verification");
    let err = text(&out.stderr);
    let name = seg.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(err.contains(name), "error names the file: {err}");
    assert!(err.contains("offset"), "error names the offset: {err}");
}

#[test]
fn a_snapshot_that_differs_from_the_replay_is_reported() {
    let dir = populated();
    let snap_dir = dir.path().join("snapshots");
    let mut snaps: Vec<_> = std::fs::read_dir(&snap_dir)
        .expect("snapshots dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    snaps.sort();
    // Replace one snapshot by another one's file: valid on its own, wrong for its seq.
    let (a, b) = (snaps[0].clone(), snaps[1].clone());
    std::fs::copy(&b, &a).expect("copy");
    let out = kura(&["journal", "verify"], dir.path());
    assert!(!out.status.success(), "a mislabelled snapshot must fail");
    assert!(
        text(&out.stderr).contains("snapshot"),
        "{}",
        text(&out.stderr)
    );
}
