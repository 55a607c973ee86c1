//! Round trips on the real file system, reader and writer API behaviour.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_records, config, payload, write_batches};
use kura_journal::{
    read_records, verify, verify_with, Head, Journal, JournalConfig, JournalError, StdFs,
    JOURNAL_SUBDIR, MAX_PAYLOAD_LEN, MAX_RECORD_LEN,
};

#[test]
fn round_trip_across_segments_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut j, rec) = Journal::open(&dir, config(512)).unwrap();
    assert!(rec.created);
    assert_eq!(rec.head, Head::GENESIS);
    assert_eq!(j.head(), Head::GENESIS);
    assert_eq!(
        j.commit().unwrap(),
        Head::GENESIS,
        "empty commit is a no-op"
    );

    let mut payloads = write_batches(&mut j, &[1, 7, 30, 2, 10, 10, 10, 10, 10], None);
    let head = j.head();
    assert_eq!(head.seq, 90);
    drop(j);

    let (mut j, rec) = Journal::open(&dir, config(512)).unwrap();
    assert!(!rec.created);
    assert_eq!(rec.head, head);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(rec.truncated_at, None);
    assert!(rec.segments > 3, "small target makes several segments");
    payloads.extend(write_batches(&mut j, &[5, 40], None));
    let head = j.head();
    drop(j);

    let records: Vec<_> = read_records(&dir, 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_records(&records, &payloads);
    assert_eq!(records.last().unwrap().chain_hash, head.chain_hash);
    assert_eq!(verify(&dir).unwrap(), head);

    // Every segment except the last reached the target before the next was started.
    let mut names: Vec<_> = std::fs::read_dir(dir.join(JOURNAL_SUBDIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    names.sort();
    for p in &names[..names.len() - 1] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len >= 512, "{} is {len}", p.display());
    }
}

#[test]
fn reader_from_any_seq_and_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), config(300)).unwrap();
    let payloads = write_batches(&mut j, &[60], None);
    drop(j);
    for from in [0u64, 1, 2, 17, 33, 59, 60] {
        let records: Vec<_> = read_records(tmp.path(), from)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let first = from.max(1);
        assert_eq!(records.len() as u64, 61 - first, "from {from}");
        assert_eq!(records[0].seq, first);
        for r in &records {
            assert_eq!(r.payload, payloads[r.seq as usize - 1]);
        }
    }
    assert_eq!(read_records(tmp.path(), 61).unwrap().count(), 0);

    let mut reader = read_records(tmp.path(), 1).unwrap();
    let total = reader.progress().bytes_total;
    assert!(total > 0);
    let mut n = 0;
    while let Some(r) = reader.next_ref() {
        assert_eq!(r.unwrap().seq, n + 1);
        n += 1;
    }
    assert_eq!(n, 60);
    assert_eq!(reader.progress().bytes_done, total);
    assert_eq!(reader.head().seq, 60);

    let mut calls = Vec::new();
    let report = verify_with(StdFs, tmp.path(), &mut |p| calls.push(p)).unwrap();
    assert_eq!(report.records, 60);
    assert_eq!(report.torn_tail, None);
    let last = calls.last().unwrap();
    assert_eq!(last.bytes_done, last.bytes_total);
    assert!(calls.len() >= report.segments, "progress per segment");
    assert!(calls.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
}

#[test]
fn limits_refuse_without_poisoning() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        max_batch_bytes: MAX_RECORD_LEN,
        ..JournalConfig::default()
    };
    let (mut j, _) = Journal::open(tmp.path(), cfg).unwrap();
    let big = vec![7u8; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        j.append(&big),
        Err(JournalError::PayloadTooLarge { .. })
    ));
    assert_eq!(j.append(&big[..MAX_PAYLOAD_LEN]).unwrap(), 1);
    assert!(matches!(
        j.append(b"x"),
        Err(JournalError::BatchFull { .. })
    ));
    assert_eq!(j.commit().unwrap().seq, 1);
    assert_eq!(j.append(b"x").unwrap(), 2);
    assert_eq!(j.commit().unwrap().seq, 2);
    assert!(!j.is_poisoned());

    let bad = JournalConfig {
        segment_target_bytes: 0,
        ..JournalConfig::default()
    };
    assert!(matches!(
        Journal::open(tmp.path(), bad),
        Err(JournalError::Config(_))
    ));
}

#[test]
fn second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(tmp.path(), JournalConfig::default()).unwrap();
    let err = Journal::open(tmp.path(), JournalConfig::default()).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    drop(j);
    Journal::open(tmp.path(), JournalConfig::default()).unwrap();
}

#[test]
fn uncommitted_records_are_not_durable_and_head_tracks_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), JournalConfig::default()).unwrap();
    j.append(&payload(1)).unwrap();
    let h1 = j.commit().unwrap();
    j.append(&payload(2)).unwrap();
    assert_eq!(j.head(), h1);
    assert_eq!(j.pending_head().seq, 2);
    assert_eq!(j.pending_records(), 1);
    drop(j);
    let (j, rec) = Journal::open(tmp.path(), JournalConfig::default()).unwrap();
    assert_eq!(rec.head, h1);
    assert_eq!(j.head(), h1);
}

#[test]
fn reading_a_missing_journal_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_records(tmp.path(), 1),
        Err(JournalError::Io { .. })
    ));
    assert!(verify(tmp.path()).is_err());
}
