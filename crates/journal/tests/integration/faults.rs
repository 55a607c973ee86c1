//! J5: a failed sync or write poisons the journal; nothing after it is accepted; the disk
//! afterwards holds exactly the records of the commits that succeeded.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_records, config, dir, payload, read_all};
use kura_journal::testing::{Fault, SimFs, Unsynced};
use kura_journal::{Journal, JournalError};

const TARGET: u64 = 300;
/// Commit sizes of the scenario: enough records to roll several segments, so faults hit
/// record syncs, segment-creation syncs and directory syncs.
const BATCHES: [usize; 8] = [1, 3, 8, 2, 9, 1, 6, 4];

/// Runs the scenario until the first failure; returns the acknowledged payloads, whether
/// a failure happened, and the fs.
fn run(arm: impl FnOnce(&SimFs)) -> (SimFs, Vec<Vec<u8>>, bool) {
    let fs = SimFs::new();
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    arm(&fs);
    let mut acked = Vec::new();
    for &n in &BATCHES {
        let mut batch = Vec::new();
        for _ in 0..n {
            let p = payload(j.pending_head().seq + 1);
            j.append(&p).unwrap();
            batch.push(p);
        }
        match j.commit() {
            Ok(head) => {
                acked.extend(batch);
                assert_eq!(head.seq, acked.len() as u64);
            }
            Err(e) => {
                assert!(matches!(e, JournalError::Io { .. }), "{e}");
                assert!(j.is_poisoned());
                // Nothing is accepted after the failure, and the failure is not retried.
                let syncs = fs.sync_count();
                assert!(matches!(
                    j.append(b"more"),
                    Err(JournalError::Poisoned { .. })
                ));
                assert!(matches!(j.commit(), Err(JournalError::Poisoned { .. })));
                assert_eq!(j.head().seq, acked.len() as u64);
                assert_eq!(
                    fs.sync_count(),
                    syncs,
                    "a poisoned journal must not sync again"
                );
                return (fs, acked, true);
            }
        }
    }
    (fs, acked, false)
}

fn check_durable_view(fs: &SimFs, acked: &[Vec<u8>], label: &str) {
    // Power loss: exactly the acknowledged records survive.
    let lost = fs.crash(Unsynced::Lost);
    let (_, rec) = Journal::open_with(lost.clone(), dir(), config(TARGET))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(rec.head.seq, acked.len() as u64, "{label}");
    assert_records(&read_all(lost, dir()).unwrap(), acked);

    // Torn or zeroed unsynced bytes: at least the acknowledged records, and whatever else
    // is recovered is complete records in order.
    for unsynced in [Unsynced::KeepPrefix(50), Unsynced::Zeroed] {
        let img = fs.crash(unsynced);
        let (_, rec) = Journal::open_with(img.clone(), dir(), config(TARGET))
            .unwrap_or_else(|e| panic!("{label} {unsynced:?}: {e}"));
        assert!(rec.head.seq >= acked.len() as u64, "{label}");
        let records = read_all(img, dir()).unwrap();
        let all: Vec<_> = (1..=records.len() as u64).map(payload).collect();
        assert_records(&records, &all);
    }

    // Process restart without power loss (the page cache survives): recovery succeeds and
    // keeps every acknowledged record.
    let (_, rec) = Journal::open_with(fs.clone(), dir(), config(TARGET))
        .unwrap_or_else(|e| panic!("{label} restart: {e}"));
    assert!(rec.head.seq >= acked.len() as u64, "{label}");
}

#[test]
fn every_sync_failure_poisons_and_keeps_exactly_the_acknowledged_records() {
    let armed_at = std::cell::Cell::new(0);
    let (clean, all, failed) = run(|fs| armed_at.set(fs.sync_count()));
    assert!(!failed);
    // Syncs made by open itself are not counted: arming happens after it.
    let total_syncs = clean.sync_count() - armed_at.get();
    assert!(
        total_syncs > BATCHES.len() as u64 + 3,
        "scenario rolls segments"
    );
    check_durable_view(&clean, &all, "no fault");
    for fault in [Fault::Eio, Fault::Enospc] {
        for n in 1..=total_syncs {
            let (fs, acked, failed) = run(|fs| fs.fail_sync_after(n, fault));
            assert!(failed, "sync {n} must fail the scenario");
            check_durable_view(&fs, &acked, &format!("{fault:?} at sync {n}"));
        }
    }
}

#[test]
fn every_write_failure_poisons_and_keeps_exactly_the_acknowledged_records() {
    let armed_at = std::cell::Cell::new(0);
    let (clean, _, _) = run(|fs| armed_at.set(fs.write_count()));
    let total_writes = clean.write_count() - armed_at.get();
    for n in 1..=total_writes {
        let (fs, acked, failed) = run(|fs| fs.fail_write_after(n, Fault::Enospc));
        assert!(failed, "write {n}");
        check_durable_view(&fs, &acked, &format!("ENOSPC at write {n}"));
    }
}

#[test]
fn error_names_the_operation_and_errno() {
    let (_, _, failed) = run(|fs| fs.fail_sync_after(1, Fault::Eio));
    assert!(failed);
    let fs = SimFs::new();
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    j.append(b"x").unwrap();
    fs.fail_sync_after(1, Fault::Enospc);
    let err = j.commit().unwrap_err();
    let JournalError::Io { op, source, .. } = &err else {
        panic!("{err}");
    };
    assert!(op.starts_with("sync"), "{err}");
    assert_eq!(source.raw_os_error(), Some(28));
    let poisoned = j.append(b"y").unwrap_err();
    assert!(poisoned.to_string().contains("poisoned"), "{poisoned}");
}

#[test]
fn failure_while_opening_is_an_error_not_a_half_open_journal() {
    let (fs, _) = common::sim_journal(TARGET, &[4, 4]);
    // Open syncs the last segment and the directory; fail each.
    for n in 1..=2 {
        let img = fs.crash(Unsynced::Lost);
        img.fail_sync_after(n, Fault::Eio);
        let err = Journal::open_with(img.clone(), dir(), config(TARGET)).unwrap_err();
        assert!(matches!(err, JournalError::Io { .. }), "{err}");
        // The lock was released: a later open works.
        let (j, rec) = Journal::open_with(img, dir(), config(TARGET)).unwrap();
        assert_eq!(rec.head.seq, 8);
        drop(j);
    }
}
