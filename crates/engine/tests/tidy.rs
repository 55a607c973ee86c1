//! Style rules that keep the pure crates pure, checked as a test.
//!
//! The pure crates (units, book, ledger, engine) must be deterministic and free of I/O:
//! no clock, no randomness, no floating point, no std hash maps (whose iteration order
//! is random per process), no files, sockets or threads. `FxHashMap` (fixed hashing) is
//! allowed for lookups; code that encodes state sorts before it iterates one.

use std::path::{Path, PathBuf};

const PURE_CRATES: &[&str] = &["units", "book", "ledger", "engine"];

/// (pattern, why it is forbidden)
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "std::time",
        "the core never reads a clock: time comes in Ctx",
    ),
    ("Instant::", "the core never reads a clock"),
    ("SystemTime", "the core never reads a clock"),
    ("rand::", "randomness is passed in, never drawn"),
    ("thread_rng", "randomness is passed in, never drawn"),
    ("f32", "no floating point near money"),
    ("f64", "no floating point near money"),
    (
        "std::collections::HashMap",
        "random iteration order; use BTreeMap or FxHashMap",
    ),
    (
        "std::collections::HashSet",
        "random iteration order; use BTreeSet",
    ),
    ("std::fs", "no I/O in the core"),
    ("std::net", "no I/O in the core"),
    ("std::thread", "the core is single-threaded"),
    ("tokio", "the core never awaits"),
    ("unsafe ", "no unsafe code in the core"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn pure_crates_stay_pure() {
    let crates_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for c in PURE_CRATES {
        rust_files(&crates_dir.join(c).join("src"), &mut files);
    }
    assert!(
        files.len() >= 10,
        "found only {} files to check",
        files.len()
    );
    let mut findings = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (pattern, why) in FORBIDDEN {
                if code.contains(pattern) {
                    findings.push(format!("{}:{}: `{pattern}`: {why}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
