//! The standalone Python verifiers in `tools/verify/` accept what this crate produces and
//! reject tampered copies. The interpreter is `$KURA_E2E_PYTHON` if set, else `python3`;
//! if it cannot be run these tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use ed25519_dalek::SigningKey;
use kura_proofs::checkpoint::{self, Checkpoint, NoteVerifier};
use kura_proofs::por::{Epoch, InclusionProof, LiabilityTree, Report};
use kura_proofs::tlog::{ConsistencyProofFile, InclusionProofFile, MerkleLog};

fn python() -> String {
    std::env::var("KURA_E2E_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/verify")
        .join(name)
}

/// Runs a verifier script; returns (exit code, stdout + stderr).
fn run(name: &str, args: &[&Path]) -> (i32, String) {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (set KURA_E2E_PYTHON): {e}", python()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write_json<T: serde::Serialize>(dir: &Path, name: &str, v: &T) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).expect("write");
    p
}

fn epoch() -> Epoch {
    Epoch {
        ledger_seq: 123_456,
        block_height: 870_001,
        block_hash: [0xab; 32],
    }
}

fn accounts() -> Vec<(u64, String, u64)> {
    (0..50u64)
        .map(|i| {
            (
                1000 + i * 7,
                format!("user{i}"),
                (i * 7_919_993) % 300_000_000,
            )
        })
        .collect()
}

fn build(accts: &[(u64, String, u64)]) -> LiabilityTree {
    let refs: Vec<(u64, &str, u64)> = accts.iter().map(|(i, l, b)| (*i, l.as_str(), *b)).collect();
    LiabilityTree::build(&epoch(), b"por secret", b"pad secret", 7, &refs).expect("builds")
}

#[test]
fn por_verify_accepts_our_proofs_and_rejects_tampered_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (code, out) = run("por_verify.py", &[Path::new("--vectors")]);
    assert_eq!(code, 0, "{out}");

    let accts = accounts();
    let tree = build(&accts);
    let report = tree.report(&epoch(), Some(tree.root().sum + 1));
    let report_path = write_json(d, "report.json", &report);
    for (id, login, balance) in accts.iter().step_by(17) {
        let proof = tree.proof(*id).expect("in tree");
        let p = write_json(d, "proof.json", &proof);
        let (code, out) = run("por_verify.py", &[&p, &report_path]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("account {id} ({login}), balance {balance} sat")),
            "{out}"
        );
        let bal = balance.to_string();
        let (code, out) = run(
            "por_verify.py",
            &[&p, &report_path, Path::new("--balance"), Path::new(&bal)],
        );
        assert_eq!(code, 0, "{out}");
        let more = (balance + 1).to_string();
        let (code, out) = run(
            "por_verify.py",
            &[&p, &report_path, Path::new("--balance"), Path::new(&more)],
        );
        assert_eq!(code, 1, "{out}");
    }

    let good = tree.proof(accts[3].0).expect("in tree");
    let mut tampered: Vec<(&str, InclusionProof)> = Vec::new();
    let mut p = good.clone();
    p.balance += 1;
    tampered.push(("balance", p));
    let mut p = good.clone();
    p.siblings[2].sum += 1;
    tampered.push(("sibling sum", p));
    let mut p = good.clone();
    p.siblings[6].hash[0] ^= 1;
    tampered.push(("sibling hash", p));
    let mut p = good.clone();
    p.index ^= 4;
    tampered.push(("index", p));
    let mut p = good.clone();
    p.siblings.push(p.siblings[0]);
    tampered.push(("extra sibling", p));
    let mut p = good.clone();
    p.login.push('!');
    tampered.push(("login", p));
    let mut p = good.clone();
    p.siblings[0].sum = u64::MAX;
    tampered.push(("huge sibling", p));
    for (what, p) in tampered {
        let path = write_json(d, "bad.json", &p);
        let (code, out) = run("por_verify.py", &[&path, &report_path]);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains("REJECTED"), "{what}: {out}");
    }

    // A report from a tree that leaves the customer out.
    let mut cheating = accts.clone();
    cheating.remove(3);
    let cheat_report: Report = build(&cheating).report(&epoch(), None);
    let cheat_path = write_json(d, "cheat.json", &cheat_report);
    let good_path = write_json(d, "good.json", &good);
    let (code, out) = run("por_verify.py", &[&good_path, &cheat_path]);
    assert_eq!(code, 1, "{out}");
    // Reserves below the total.
    let short = write_json(
        d,
        "short.json",
        &tree.report(&epoch(), Some(tree.root().sum - 1)),
    );
    let (code, out) = run("por_verify.py", &[&good_path, &short]);
    assert_eq!(code, 1, "{out}");
    // A report whose epoch id was edited, and a file that is not JSON.
    let text = std::fs::read_to_string(&report_path).expect("read");
    let eid = hex::encode(tree.epoch_id());
    let edited = d.join("edited.json");
    std::fs::write(&edited, text.replace(&eid[..8], "00000000")).expect("write");
    let (code, out) = run("por_verify.py", &[&good_path, &edited]);
    assert_eq!(code, 2, "{out}");
    let junk = d.join("junk.json");
    std::fs::write(&junk, "{not json").expect("write");
    let (code, out) = run("por_verify.py", &[&junk, &report_path]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn tlog_verify_accepts_our_proofs_and_rejects_tampered_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (code, out) = run("tlog_verify.py", &[Path::new("--self-test")]);
    assert_eq!(code, 0, "{out}");
    let incl = Path::new("inclusion");
    let cons = Path::new("consistency");

    let mut log = MerkleLog::new();
    for i in 0..100u32 {
        log.append_data(format!("record {i}").as_bytes());
    }
    for &(index, size) in &[
        (0u64, 1u64),
        (5, 6),
        (63, 64),
        (64, 65),
        (37, 100),
        (99, 100),
    ] {
        let f = InclusionProofFile {
            leaf_index: index,
            tree_size: size,
            leaf_hash: log.leaf(index).expect("leaf"),
            root_hash: log.root_at(size).expect("size"),
            path: log.inclusion_proof(index, size).expect("proof"),
        };
        let p = write_json(d, "incl.json", &f);
        let (code, out) = run("tlog_verify.py", &[incl, &p]);
        assert_eq!(code, 0, "({index}, {size}) {out}");
        let mut bad = f.clone();
        bad.leaf_hash[3] ^= 1;
        let p = write_json(d, "bad.json", &bad);
        let (code, out) = run("tlog_verify.py", &[incl, &p]);
        assert_eq!(code, 1, "({index}, {size}) {out}");
        if !f.path.is_empty() {
            let mut bad = f.clone();
            bad.path.pop();
            let p = write_json(d, "bad.json", &bad);
            assert_eq!(run("tlog_verify.py", &[incl, &p]).0, 1);
        }
    }
    for &(old, new) in &[
        (0u64, 10u64),
        (1, 100),
        (7, 8),
        (32, 100),
        (63, 64),
        (100, 100),
    ] {
        let f = ConsistencyProofFile {
            old_size: old,
            new_size: new,
            old_root: log.root_at(old).expect("size"),
            new_root: log.root_at(new).expect("size"),
            proof: log.consistency_proof(old, new).expect("proof"),
        };
        let p = write_json(d, "cons.json", &f);
        let (code, out) = run("tlog_verify.py", &[cons, &p]);
        assert_eq!(code, 0, "({old}, {new}) {out}");
        let mut bad = f.clone();
        bad.old_root[0] ^= 1;
        let p = write_json(d, "bad.json", &bad);
        let (code, out) = run("tlog_verify.py", &[cons, &p]);
        assert_eq!(code, 1, "({old}, {new}) {out}");
    }
}

#[test]
fn tlog_verify_checks_checkpoint_signatures_or_says_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut log = MerkleLog::new();
    for i in 0..20u32 {
        log.append_data(&i.to_be_bytes());
    }
    let sk = SigningKey::from_bytes(&[7; 32]);
    let name = "example.com/kura/audit";
    let vkey = NoteVerifier::new(name, sk.verifying_key())
        .expect("name")
        .to_string();
    let cp = Checkpoint {
        origin: name.to_owned(),
        size: 20,
        root: log.root(),
        extensions: vec![],
    };
    let note = checkpoint::sign(&cp, name, &sk).expect("signs");
    let note_path = d.join("checkpoint.txt");
    std::fs::write(&note_path, &note).expect("write");
    let f = InclusionProofFile {
        leaf_index: 11,
        tree_size: 20,
        leaf_hash: log.leaf(11).expect("leaf"),
        root_hash: log.root(),
        path: log.inclusion_proof(11, 20).expect("proof"),
    };
    let incl = write_json(d, "incl.json", &f);
    let key = Path::new(&vkey);
    let cmd = Path::new("checkpoint");

    let has_crypto = Command::new(python())
        .args(["-c", "import cryptography"])
        .status()
        .expect("python runs")
        .success();
    let (code, out) = run("tlog_verify.py", &[cmd, &note_path, key, &incl]);
    if !has_crypto {
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("NOTHING WAS VERIFIED"), "{out}");
        eprintln!("python has no `cryptography`: checked only that the tool says so");
        return;
    }
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("size 20"), "{out}");

    let tampered = d.join("tampered.txt");
    std::fs::write(&tampered, note.replacen("\n20\n", "\n21\n", 1)).expect("write");
    let (code, out) = run("tlog_verify.py", &[cmd, &tampered, key]);
    assert_eq!(code, 1, "{out}");
    let other = NoteVerifier::new(name, SigningKey::from_bytes(&[8; 32]).verifying_key())
        .expect("name")
        .to_string();
    let (code, out) = run("tlog_verify.py", &[cmd, &note_path, Path::new(&other)]);
    assert_eq!(code, 1, "{out}");
    // A proof against another size is not accepted under this checkpoint.
    let mut g = f.clone();
    g.tree_size = 19;
    g.root_hash = log.root_at(19).expect("size");
    g.path = log.inclusion_proof(11, 19).expect("proof");
    let other_incl = write_json(d, "incl19.json", &g);
    let (code, out) = run("tlog_verify.py", &[cmd, &note_path, key, &other_incl]);
    assert_eq!(code, 1, "{out}");
}
