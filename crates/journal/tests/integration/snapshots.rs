//! Snapshots: round trip, listing, damage detection (J4 for snapshots), fallback policy,
//! and the check against the journal.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;

use common::{dir, sim_journal};
use kura_journal::testing::{SimFs, Unsynced};
use kura_journal::{
    check_snapshot, check_snapshot_with, list_snapshots, load_newest_valid_snapshot,
    load_newest_valid_snapshot_with, load_snapshot, load_snapshot_with, verify, write_snapshot,
    write_snapshot_with, Head, Journal, JournalConfig, JournalError, SnapshotCheck, SnapshotMeta,
    SNAPSHOT_HEADER_LEN,
};

fn meta(head: Head, tag: u8) -> SnapshotMeta {
    SnapshotMeta {
        seq: head.seq,
        chain_hash: head.chain_hash,
        state_hash: [tag; 32],
    }
}

#[test]
fn round_trip_and_check_on_real_fs() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(list_snapshots(tmp.path()).unwrap().is_empty());
    assert!(load_newest_valid_snapshot(tmp.path())
        .unwrap()
        .snapshot
        .is_none());

    let (mut j, _) = Journal::open(tmp.path(), JournalConfig::default()).unwrap();
    let genesis = meta(Head::GENESIS, 0);
    write_snapshot(tmp.path(), &genesis, b"").unwrap();
    common::write_batches(&mut j, &[10], None);
    let h10 = j.head();
    let p10 = write_snapshot(tmp.path(), &meta(h10, 1), b"state at 10").unwrap();
    common::write_batches(&mut j, &[5], None);
    let h15 = j.head();
    write_snapshot(tmp.path(), &meta(h15, 2), &vec![7u8; 100_000]).unwrap();
    drop(j);

    let listed = list_snapshots(tmp.path()).unwrap();
    assert_eq!(
        listed.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [0, 10, 15]
    );
    let s = load_snapshot(&p10).unwrap();
    assert_eq!(s.meta, meta(h10, 1));
    assert_eq!(s.state, b"state at 10");
    let newest = load_newest_valid_snapshot(tmp.path()).unwrap();
    assert!(newest.corrupt.is_empty());
    let newest = newest.snapshot.unwrap();
    assert_eq!(newest.meta, meta(h15, 2));
    assert_eq!(newest.state.len(), 100_000);

    for m in [genesis, meta(h10, 1), meta(h15, 2)] {
        assert_eq!(
            check_snapshot(tmp.path(), &m).unwrap(),
            SnapshotCheck::Matches
        );
    }
    let wrong = SnapshotMeta {
        chain_hash: h15.chain_hash,
        ..meta(h10, 1)
    };
    assert_eq!(
        check_snapshot(tmp.path(), &wrong).unwrap(),
        SnapshotCheck::ChainHashMismatch {
            journal_chain_hash: h10.chain_hash
        }
    );
    let ahead = SnapshotMeta {
        seq: 99,
        ..meta(h15, 3)
    };
    assert_eq!(
        check_snapshot(tmp.path(), &ahead).unwrap(),
        SnapshotCheck::BeyondJournalHead { head: h15 }
    );
    assert_eq!(verify(tmp.path()).unwrap(), h15);
}

/// A SimFs journal with snapshots at seq 0, 5 and 12; returns the newest snapshot's path.
fn sim_with_snapshots() -> (SimFs, std::path::PathBuf) {
    let (fs, _) = sim_journal(10_000, &[5, 7]);
    let records = common::read_all(fs.clone(), dir()).unwrap();
    let head_at = |seq: u64| Head {
        seq,
        chain_hash: records[seq as usize - 1].chain_hash,
    };
    write_snapshot_with(&fs, dir(), &meta(Head::GENESIS, 0), b"zero").unwrap();
    write_snapshot_with(&fs, dir(), &meta(head_at(5), 5), b"five").unwrap();
    let p = write_snapshot_with(&fs, dir(), &meta(head_at(12), 12), b"twelve: some state").unwrap();
    (fs, p)
}

#[test]
fn every_bit_flip_in_a_snapshot_is_detected() {
    let (base, path) = sim_with_snapshots();
    let bytes = base.file_bytes(&path).unwrap();
    assert!(bytes.len() > SNAPSHOT_HEADER_LEN);
    for bit in 0..bytes.len() * 8 {
        let fs = base.crash(Unsynced::Lost);
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        fs.set_file_bytes(&path, b).unwrap();
        let err = load_snapshot_with(&fs, &path).unwrap_err();
        assert_snapshot_corrupt(&err, &path);
        // The newest valid one is the older snapshot, and the damaged one is reported.
        let newest = load_newest_valid_snapshot_with(&fs, dir()).unwrap();
        assert_eq!(newest.snapshot.unwrap().meta.seq, 5, "bit {bit}");
        assert_eq!(newest.corrupt.len(), 1);
        assert_eq!(newest.corrupt[0].path, path);
    }
}

fn assert_snapshot_corrupt(err: &JournalError, path: &Path) {
    let JournalError::Corrupt { file, .. } = err else {
        panic!("expected Corrupt, got {err}");
    };
    assert_eq!(file, path);
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
}

#[test]
fn truncated_or_mislabelled_snapshots_are_detected() {
    let (base, path) = sim_with_snapshots();
    let bytes = base.file_bytes(&path).unwrap();
    for cut in [
        0,
        1,
        SNAPSHOT_HEADER_LEN - 1,
        SNAPSHOT_HEADER_LEN,
        bytes.len() - 1,
    ] {
        let fs = base.crash(Unsynced::Lost);
        fs.set_file_bytes(&path, bytes[..cut].to_vec()).unwrap();
        assert_snapshot_corrupt(&load_snapshot_with(&fs, &path).unwrap_err(), &path);
    }
    // Extra bytes appended.
    let fs = base.crash(Unsynced::Lost);
    let mut longer = bytes.clone();
    longer.push(0);
    fs.set_file_bytes(&path, longer).unwrap();
    assert_snapshot_corrupt(&load_snapshot_with(&fs, &path).unwrap_err(), &path);
    // A valid snapshot under another seq's name.
    let fs = base.crash(Unsynced::Lost);
    let other = path.with_file_name(kura_journal::snapshot_file_name(13));
    kura_journal::Fs::rename(&fs, &path, &other).unwrap();
    assert_snapshot_corrupt(&load_snapshot_with(&fs, &other).unwrap_err(), &other);
    // Every snapshot damaged: no snapshot, all reported, newest first.
    let fs = base.crash(Unsynced::Lost);
    for s in kura_journal::list_snapshots_with(&fs, dir()).unwrap() {
        fs.set_file_bytes(&s.path, b"junk".to_vec()).unwrap();
    }
    let newest = load_newest_valid_snapshot_with(&fs, dir()).unwrap();
    assert!(newest.snapshot.is_none());
    assert_eq!(newest.corrupt.len(), 3);
    assert_eq!(newest.corrupt[0].path, path);
}

#[test]
fn snapshot_from_another_history_does_not_match() {
    let (fs, _) = sim_with_snapshots();
    // Another history: same sequence numbers, different commands.
    let other = SimFs::new();
    let (mut j, _) = Journal::open_with(other.clone(), dir(), JournalConfig::default()).unwrap();
    for i in 0..6u8 {
        j.append(&[i, 0xEE]).unwrap();
    }
    j.commit().unwrap();
    drop(j);
    let foreign = common::read_all(other, dir()).unwrap()[4].chain_hash;
    let m = SnapshotMeta {
        seq: 5,
        chain_hash: foreign,
        state_hash: [0; 32],
    };
    assert!(matches!(
        check_snapshot_with(fs, dir(), &m).unwrap(),
        SnapshotCheck::ChainHashMismatch { .. }
    ));
}
