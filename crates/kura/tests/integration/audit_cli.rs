//! `kura audit …` against real data directories: checkpoints, inclusion proofs checked
//! here and by `tools/verify/tlog_verify.py`, consistency after more records, tampering,
//! foreign keys, key file permissions, and checkpoints taken while a node is appending.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

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

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Streams `count` more commands into the journal of `dir` through the real sequencer.
fn stream(dir: &Path, start: u64, count: u64) {
    let out = kura(
        &[
            "debug",
            "stress-node",
            "--start",
            &start.to_string(),
            "--count",
            &count.to_string(),
            "--snapshot-every",
            "100",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn populated(count: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    stream(dir.path(), 0, count);
    dir
}

fn head_seq(dir: &Path) -> u64 {
    let h: serde_json::Value =
        serde_json::from_str(&ok(kura(&["journal", "head", "--json"], dir))).expect("json");
    h["seq"].as_u64().expect("seq")
}

/// Runs `kura audit checkpoint` and returns (size, note).
fn checkpoint(dir: &Path) -> (u64, String) {
    let note = ok(kura(&["audit", "checkpoint"], dir));
    let size = note
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no size line in {note}"));
    (size, note)
}

fn audit_path(dir: &Path, rest: &str) -> PathBuf {
    dir.join("audit").join(rest)
}

fn checkpoint_file(dir: &Path, size: u64) -> PathBuf {
    audit_path(dir, &format!("checkpoints/{size}.txt"))
}

fn node_pub(dir: &Path) -> String {
    audit_path(dir, "node.pub").display().to_string()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tools/verify/tlog_verify.py` with `$KURA_E2E_PYTHON` (default `python3`);
/// a missing interpreter fails the test.
fn python_verify(args: &[&str]) -> Output {
    let python = std::env::var("KURA_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(&python)
        .arg(repo_root().join("tools/verify/tlog_verify.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (set KURA_E2E_PYTHON): {e}"))
}

fn prove_json(dir: &Path, seq: u64, size: Option<u64>) -> serde_json::Value {
    let seq = seq.to_string();
    let size_s = size.map(|s| s.to_string());
    let mut args = vec!["audit", "prove-inclusion", &seq, "--json"];
    if let Some(s) = &size_s {
        args.extend(["--checkpoint", s]);
    }
    serde_json::from_str(&ok(kura(&args, dir))).expect("proof json")
}

fn flip_byte(path: &Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(path).expect("read");
    let mut bytes = original.clone();
    bytes[at] ^= 0x01;
    std::fs::write(path, &bytes).expect("write");
    original
}

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn checkpoint_and_inclusion_proofs_verify_here_and_with_the_python_verifier() {
    let dir = populated(150);
    let data = dir.path();
    let head = head_seq(data);
    let (size, note) = checkpoint(data);
    assert_eq!(size, head, "the checkpoint covers the whole journal");
    assert_eq!(
        std::fs::read_to_string(checkpoint_file(data, size)).expect("file"),
        note
    );
    let key = ok(kura(&["audit", "key"], data));
    let key = key.trim();
    assert!(key.starts_with("kura.local/"), "{key}");
    assert_eq!(
        note.lines().next(),
        key.split('+').next(),
        "origin = key name"
    );
    assert!(note.contains(&format!(
        "\n\u{2014} {} ",
        key.split('+').next().unwrap_or("")
    )));
    assert_eq!(
        std::fs::read_to_string(audit_path(data, "node.pub"))
            .expect("node.pub")
            .trim(),
        key
    );
    let mode = std::fs::metadata(audit_path(data, "node.key"))
        .expect("node.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(audit_path(data, "leaves"))
            .expect("leaves")
            .len(),
        32 * size
    );

    let work = tempfile::tempdir().expect("temp dir");
    let note_file = work.path().join("checkpoint.txt");
    std::fs::write(&note_file, &note).expect("write note");
    for seq in [1, 2, size / 2, size - 1, size] {
        let proof = prove_json(data, seq, None);
        assert_eq!(proof["leaf_index"].as_u64(), Some(seq - 1));
        assert_eq!(proof["tree_size"].as_u64(), Some(size));
        // The record is the one `kura journal dump --json` shows, plus its payload.
        let s = seq.to_string();
        let dump: serde_json::Value = serde_json::from_str(&ok(kura(
            &["journal", "dump", "--json", "--from", &s, "--to", &s],
            data,
        )))
        .expect("dump json");
        let rec = &proof["record"];
        assert_eq!(rec["seq"], dump["seq"]);
        assert_eq!(rec["chain_hash"], dump["chain_hash"]);
        assert_eq!(rec["entry"], dump["entry"]);
        // The leaf is SHA-256(0x00 ‖ u64be(seq) ‖ payload).
        let payload = hex::decode(rec["payload"].as_str().expect("payload")).expect("hex");
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(seq.to_be_bytes());
        h.update(&payload);
        assert_eq!(
            proof["leaf_hash"].as_str(),
            Some(hex::encode(h.finalize()).as_str())
        );
        let proof_file = work.path().join(format!("proof-{seq}.json"));
        std::fs::write(&proof_file, proof.to_string()).expect("write proof");
        let py = python_verify(&["inclusion", proof_file.to_str().expect("path")]);
        assert_eq!(
            py.status.code(),
            Some(0),
            "{}{}",
            text(&py.stdout),
            text(&py.stderr)
        );
        assert!(text(&py.stdout).contains("hashes to the leaf"));
        let py = python_verify(&[
            "checkpoint",
            note_file.to_str().expect("path"),
            key,
            proof_file.to_str().expect("path"),
        ]);
        assert_eq!(
            py.status.code(),
            Some(0),
            "{}{}",
            text(&py.stdout),
            text(&py.stderr)
        );
    }
    // A proof whose record was edited is rejected by the standalone verifier.
    let mut proof = prove_json(data, 3, None);
    let payload = proof["record"]["payload"]
        .as_str()
        .expect("payload")
        .to_owned();
    let flipped = format!(
        "{}{}",
        if payload.starts_with('0') { "1" } else { "0" },
        &payload[1..]
    );
    proof["record"]["payload"] = flipped.into();
    let bad = work.path().join("bad.json");
    std::fs::write(&bad, proof.to_string()).expect("write");
    let py = python_verify(&["inclusion", bad.to_str().expect("path")]);
    assert_eq!(py.status.code(), Some(1), "{}", text(&py.stdout));

    let text_form = ok(kura(&["audit", "prove-inclusion", "2"], data));
    assert!(text_form.contains("leaf_hash "), "{text_form}");
    let dump2 = ok(kura(
        &["journal", "dump", "--json", "--from", "2", "--to", "2"],
        data,
    ));
    assert_eq!(
        text_form.lines().next(),
        Some(format!("record {}", dump2.trim()).as_str()),
        "the record line is the dump line"
    );
    assert!(text_form.contains(&note), "{text_form}");
    let out = ok(kura(
        &[
            "audit",
            "verify-checkpoint",
            note_file.to_str().expect("path"),
            "--key",
            &node_pub(data),
        ],
        data,
    ));
    assert!(out.contains("cached leaves agree"), "{out}");
    // Seq 0 and seqs past the checkpoint are refused.
    for seq in ["0", &(size + 1).to_string()] {
        let out = kura(&["audit", "prove-inclusion", seq], data);
        assert!(!out.status.success(), "seq {seq} must be refused");
    }
}

#[test]
fn a_later_checkpoint_is_consistent_with_an_earlier_one() {
    let dir = populated(100);
    let data = dir.path();
    let (old, old_note) = checkpoint(data);
    // Nothing new: the same checkpoint, not a new file.
    let again = kura(&["audit", "checkpoint"], data);
    assert_eq!(ok(again), old_note);
    stream(data, 10_000, 60);
    let out = kura(&["audit", "checkpoint"], data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let (new, new_note) = checkpoint(data);
    assert!(new > old, "{new} > {old}");
    assert_eq!(new, head_seq(data));
    assert!(
        stderr.contains(&format!("{old} leaves cached before, 1 rechecked")),
        "only the newest checkpoint's record is reread: {stderr}"
    );
    assert_eq!(
        std::fs::metadata(audit_path(data, "leaves"))
            .expect("leaves")
            .len(),
        32 * new
    );

    let (o, n) = (old.to_string(), new.to_string());
    let out = ok(kura(&["audit", "verify-consistency", &o, &n], data));
    assert!(out.starts_with("ok:"), "{out}");
    let json = ok(kura(
        &["audit", "verify-consistency", &o, &n, "--json"],
        data,
    ));
    let work = tempfile::tempdir().expect("temp dir");
    let proof_file = work.path().join("consistency.json");
    std::fs::write(&proof_file, &json).expect("write");
    let note_file = work.path().join("new.txt");
    std::fs::write(&note_file, &new_note).expect("write");
    let key = std::fs::read_to_string(audit_path(data, "node.pub")).expect("node.pub");
    let py = python_verify(&["consistency", proof_file.to_str().expect("path")]);
    assert_eq!(
        py.status.code(),
        Some(0),
        "{}{}",
        text(&py.stdout),
        text(&py.stderr)
    );
    let py = python_verify(&[
        "checkpoint",
        note_file.to_str().expect("path"),
        key.trim(),
        proof_file.to_str().expect("path"),
    ]);
    assert_eq!(
        py.status.code(),
        Some(0),
        "{}{}",
        text(&py.stdout),
        text(&py.stderr)
    );
    // Both checkpoints still verify against the journal, and old records can be proved
    // against the old checkpoint.
    for size in [old, new] {
        let f = checkpoint_file(data, size);
        ok(kura(
            &[
                "audit",
                "verify-checkpoint",
                f.to_str().expect("path"),
                "--key",
                &node_pub(data),
            ],
            data,
        ));
    }
    let proof = prove_json(data, old, Some(old));
    assert_eq!(proof["tree_size"].as_u64(), Some(old));
    // OLD > NEW and sizes without a checkpoint are errors.
    assert!(!kura(&["audit", "verify-consistency", &n, &o], data)
        .status
        .success());
    let missing = (new + 1).to_string();
    assert!(!kura(&["audit", "verify-consistency", &o, &missing], data)
        .status
        .success());
}

#[test]
fn a_damaged_journal_record_fails_verify_checkpoint() {
    let dir = populated(50);
    let data = dir.path();
    let (size, _) = checkpoint(data);
    let seg = data.join("journal").join("00000000000000000001.seg");
    // Segment header (56 bytes), record header (48 bytes), then record 1's payload.
    flip_byte(&seg, 56 + 48 + 2);
    let f = checkpoint_file(data, size);
    let out = kura(
        &[
            "audit",
            "verify-checkpoint",
            f.to_str().expect("path"),
            "--key",
            &node_pub(data),
        ],
        data,
    );
    assert!(!out.status.success(), "a damaged record must fail");
    assert!(
        text(&out.stderr).contains("00000000000000000001.seg"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_journal_rewritten_with_a_valid_chain_is_detected() {
    let dir = populated(50);
    let data = dir.path();
    let (size, _) = checkpoint(data);
    // Another history of the same length: valid CRCs and chain, other records.
    let other = populated(50);
    assert_eq!(head_seq(other.path()), size);
    for sub in ["journal", "snapshots"] {
        let to = data.join(sub);
        std::fs::remove_dir_all(&to).expect("remove");
        copy_dir(&other.path().join(sub), &to);
    }
    ok(kura(&["journal", "verify"], data));
    let f = checkpoint_file(data, size);
    let out = kura(
        &[
            "audit",
            "verify-checkpoint",
            f.to_str().expect("path"),
            "--key",
            &node_pub(data),
        ],
        data,
    );
    assert!(!out.status.success(), "a rewritten journal must fail");
    assert!(
        text(&out.stderr).contains("chain hash"),
        "{}",
        text(&out.stderr)
    );
    let out = kura(&["audit", "checkpoint"], data);
    assert!(
        !out.status.success(),
        "no checkpoint over a rewritten journal"
    );
    let out = kura(&["audit", "checkpoint", "--full"], data);
    assert!(
        !out.status.success(),
        "no checkpoint over a rewritten journal"
    );
    let out = kura(&["audit", "prove-inclusion", "5"], data);
    assert!(!out.status.success(), "no proof for a rewritten record");
    assert!(
        text(&out.stderr).contains("differs from leaf 4"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_edited_leaves_file_is_detected() {
    let dir = populated(50);
    let data = dir.path();
    let (size, _) = checkpoint(data);
    let leaves = audit_path(data, "leaves");
    let original = flip_byte(&leaves, 32 * 7 + 5);
    let f = checkpoint_file(data, size);
    let f = f.to_str().expect("path");
    let runs: [&[&str]; 3] = [
        &["audit", "checkpoint"],
        &["audit", "prove-inclusion", "3"],
        &["audit", "verify-checkpoint", f, "--key", &node_pub(data)],
    ];
    for args in runs {
        let out = kura(args, data);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            text(&out.stderr).contains("leaves"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A truncated leaves file (not a whole number of hashes) is refused too.
    std::fs::write(&leaves, &original[..original.len() - 3]).expect("write");
    assert!(!kura(&["audit", "checkpoint"], data).status.success());
    // Restored, all is well; a deleted cache is rebuilt from the journal.
    std::fs::write(&leaves, &original).expect("write");
    ok(kura(&["audit", "prove-inclusion", "3"], data));
    std::fs::remove_file(&leaves).expect("remove");
    let (again, _) = checkpoint(data);
    assert_eq!(again, size);
    assert_eq!(std::fs::read(&leaves).expect("leaves"), original);
}

#[test]
fn an_edited_checkpoint_file_is_detected() {
    let dir = populated(50);
    let data = dir.path();
    let (size, note) = checkpoint(data);
    let f = checkpoint_file(data, size);
    // Change one character of the root line (keeping valid base64).
    let mut lines: Vec<String> = note.lines().map(str::to_owned).collect();
    let root = lines[2].clone();
    let first = if root.starts_with('A') { "B" } else { "A" };
    lines[2] = format!("{first}{}", &root[1..]);
    std::fs::write(&f, lines.join("\n") + "\n").expect("write");
    let fs = f.to_str().expect("path");
    let out = kura(
        &["audit", "verify-checkpoint", fs, "--key", &node_pub(data)],
        data,
    );
    assert!(!out.status.success(), "an edited checkpoint must fail");
    assert!(
        text(&out.stderr).contains("signature"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        &["audit", "prove-inclusion", "3"][..],
        &["audit", "checkpoint"][..],
    ] {
        let out = kura(args, data);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            text(&out.stderr).contains("does not verify"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let dir = populated(50);
    let data = dir.path();
    let (size, _) = checkpoint(data);
    // Another data directory with a copy of the same journal, hence its own key.
    let other = tempfile::tempdir().expect("temp dir");
    copy_dir(&data.join("journal"), &other.path().join("journal"));
    let (other_size, other_note) = checkpoint(other.path());
    assert_eq!(other_size, size);
    let foreign = checkpoint_file(other.path(), size);
    let foreign = foreign.to_str().expect("path");
    // With the other key it verifies against this journal: same records, same root.
    ok(kura(
        &[
            "audit",
            "verify-checkpoint",
            foreign,
            "--key",
            &node_pub(other.path()),
        ],
        data,
    ));
    // With this node's key it is refused.
    let out = kura(
        &[
            "audit",
            "verify-checkpoint",
            foreign,
            "--key",
            &node_pub(data),
        ],
        data,
    );
    assert!(!out.status.success(), "a foreign signature must be refused");
    assert!(
        text(&out.stderr).contains("no signature by the known key"),
        "{}",
        text(&out.stderr)
    );
    // Put in place of this node's checkpoint, it is refused too.
    std::fs::write(checkpoint_file(data, size), &other_note).expect("write");
    let out = kura(&["audit", "prove-inclusion", "2"], data);
    assert!(
        !out.status.success(),
        "a foreign checkpoint must be refused"
    );
    assert!(
        text(&out.stderr).contains("does not verify"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = populated(10);
    let data = dir.path();
    let key = ok(kura(&["audit", "key"], data));
    let key_file = audit_path(data, "node.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for args in [&["audit", "key"][..], &["audit", "checkpoint"][..]] {
        let out = kura(args, data);
        assert!(!out.status.success(), "{args:?} must refuse a 0644 key");
        assert!(
            text(&out.stderr).contains("chmod 600"),
            "{}",
            text(&out.stderr)
        );
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(ok(kura(&["audit", "key"], data)), key, "the same key again");
    checkpoint(data);
}

/// Checkpoints taken while a node appends to the journal cover a valid prefix, verify
/// against the journal afterwards and are consistent with each other.
#[test]
fn checkpoints_while_a_node_is_appending() {
    let dir = populated(20);
    let data = dir.path();
    let mut node = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["debug", "stress-node", "--start", "100000", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    // Wait until the node acknowledges commands, then checkpoint while it keeps going.
    let mut acks = 0;
    while acks < 200 {
        let line = lines.next().expect("node output").expect("line");
        if line.starts_with("ack ") {
            acks += 1;
        }
    }
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let (size, _) = checkpoint(data);
        sizes.push(size);
        // Wait for a record beyond this checkpoint to be acknowledged (durable).
        loop {
            let line = lines.next().expect("node output").expect("line");
            let seq = line
                .strip_prefix("ack ")
                .and_then(|r| r.split(' ').next())
                .and_then(|s| s.parse::<u64>().ok());
            if seq.is_some_and(|s| s > size) {
                break;
            }
        }
    }
    node.kill().expect("kill node");
    node.wait().expect("wait");
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    for &size in &sizes {
        let f = checkpoint_file(data, size);
        ok(kura(
            &[
                "audit",
                "verify-checkpoint",
                f.to_str().expect("path"),
                "--key",
                &node_pub(data),
            ],
            data,
        ));
    }
    let (a, b) = (sizes[0].to_string(), sizes[2].to_string());
    ok(kura(&["audit", "verify-consistency", &a, &b], data));
}
