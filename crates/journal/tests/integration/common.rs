//! Helpers shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kura_journal::testing::SimFs;
use kura_journal::{
    Fs, Journal, JournalConfig, JournalError, JournalReader, Record, JOURNAL_SUBDIR,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use sha2::{Digest, Sha256};

/// The data directory used with [`SimFs`].
pub const DIR: &str = "/data";

pub fn dir() -> &'static Path {
    Path::new(DIR)
}

pub fn config(segment_target_bytes: u64) -> JournalConfig {
    JournalConfig {
        segment_target_bytes,
        ..JournalConfig::default()
    }
}

/// A deterministic payload of varied length (0..=63 bytes) for record `i`.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i.wrapping_mul(37) % 64) as usize;
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

/// Appends `payload(i)` for the next records, committing after each batch size in
/// `batches`. Returns all payloads written. Sets the SimFs marker to the number of
/// acknowledged records after each commit when `fs` is given.
pub fn write_batches<F: Fs>(
    journal: &mut Journal<F>,
    batches: &[usize],
    marker: Option<&SimFs>,
) -> Vec<Vec<u8>> {
    let mut written = Vec::new();
    for &n in batches {
        for _ in 0..n {
            let seq = journal.pending_head().seq + 1;
            let p = payload(seq);
            assert_eq!(journal.append(&p).unwrap(), seq);
            written.push(p);
        }
        let head = journal.commit().unwrap();
        if let Some(fs) = marker {
            fs.set_marker(head.seq);
        }
    }
    written
}

/// A fresh SimFs journal holding `batches` (committed), and the payloads.
pub fn sim_journal(segment_target: u64, batches: &[usize]) -> (SimFs, Vec<Vec<u8>>) {
    let fs = SimFs::new();
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(segment_target)).unwrap();
    let payloads = write_batches(&mut j, batches, None);
    drop(j);
    (fs, payloads)
}

pub fn read_all<F: Fs>(fs: F, dir: &Path) -> Result<Vec<Record>, JournalError> {
    JournalReader::open_with(fs, dir, 1)?.collect()
}

/// Checks the records against the payloads and recomputes every chain hash with SHA-256
/// directly (not through the crate).
pub fn assert_records(records: &[Record], payloads: &[Vec<u8>]) {
    assert_eq!(records.len(), payloads.len(), "record count");
    let mut prev = [0u8; 32];
    for (i, (r, p)) in records.iter().zip(payloads).enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "seq");
        assert_eq!(&r.payload, p, "payload of seq {}", r.seq);
        let mut h = Sha256::new();
        h.update(prev);
        h.update(r.seq.to_le_bytes());
        h.update(&r.payload);
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(r.chain_hash, expected, "chain hash of seq {}", r.seq);
        prev = expected;
    }
}

/// Segment paths of the SimFs journal, in order.
pub fn segments(fs: &SimFs) -> Vec<PathBuf> {
    let jdir = dir().join(JOURNAL_SUBDIR);
    fs.paths()
        .into_iter()
        .filter(|p| p.parent() == Some(jdir.as_path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

/// `(offset, length)` of every record in a valid segment's bytes.
pub fn record_spans(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < segment.len() {
        let len = u32::from_le_bytes(segment[pos..pos + 4].try_into().unwrap()) as usize;
        spans.push((pos, RECORD_HEADER_LEN + len));
        pos += RECORD_HEADER_LEN + len;
    }
    spans
}

/// Asserts `err` is `Corrupt` at `file` and `offset`, and that its message names both.
pub fn assert_corrupt_at(err: &JournalError, file: &Path, offset: u64) {
    match err {
        JournalError::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, file, "file in {err}");
            assert_eq!(*o, offset, "offset in {err}");
        }
        other => panic!(
            "expected Corrupt at {} {offset}, got {other}",
            file.display()
        ),
    }
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");
}
