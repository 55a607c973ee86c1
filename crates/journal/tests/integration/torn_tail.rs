//! J3: a torn last record — truncated or garbled at every byte offset — is dropped,
//! reported, and the journal continues correctly after it.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;

use common::{assert_records, config, dir, read_all, record_spans, segments, sim_journal};
use kura_journal::testing::{SimFs, Unsynced};
use kura_journal::{read_records, Journal, Recovery, StdFs, JOURNAL_SUBDIR};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// After recovery: head is `expected_head`, one more record appends and chains, and a
/// reopen reads back exactly `payloads` plus the new record.
fn check_recovery_and_continue<F: kura_journal::Fs>(
    fs: F,
    data: &Path,
    payloads: &[Vec<u8>],
    mut journal: Journal<F>,
    rec: &Recovery,
) {
    assert_eq!(rec.head.seq, payloads.len() as u64);
    assert_eq!(journal.head(), rec.head);
    let next = b"after recovery".to_vec();
    assert_eq!(journal.append(&next).unwrap(), rec.head.seq + 1);
    journal.commit().unwrap();
    drop(journal);
    let mut expected = payloads.to_vec();
    expected.push(next);
    let records = read_all(fs, data).unwrap();
    assert_records(&records, &expected);
}

#[test]
fn truncated_last_record_at_every_offset_real_fs() {
    let template = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(template.path(), config(400)).unwrap();
    let payloads = common::write_batches(&mut j, &[3, 10, 10], None);
    drop(j);
    let jdir = template.path().join(JOURNAL_SUBDIR);
    let mut segs: Vec<_> = std::fs::read_dir(&jdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let (r_start, r_len) = *record_spans(&bytes).last().unwrap();
    assert!(r_start > kura_journal::SEGMENT_HEADER_LEN, "R is not alone");

    for cut in 0..r_len {
        let case = tempfile::tempdir().unwrap();
        copy_dir(&jdir, &case.path().join(JOURNAL_SUBDIR));
        let seg = case
            .path()
            .join(JOURNAL_SUBDIR)
            .join(last.file_name().unwrap());
        std::fs::write(&seg, &bytes[..r_start + cut]).unwrap();

        let (j, rec) = Journal::open(case.path(), config(400)).unwrap();
        if cut == 0 {
            assert_eq!(rec.truncated_bytes, 0, "a clean end is not a tear");
        } else {
            assert_eq!(rec.truncated_bytes, cut as u64);
            assert_eq!(rec.truncated_at, Some((seg.clone(), r_start as u64)));
            assert!(!rec.removed_incomplete_segment);
        }
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), r_start as u64);
        check_recovery_and_continue(StdFs, case.path(), &payloads[..payloads.len() - 1], j, &rec);
    }
}

/// Builds a SimFs journal; returns it, the payloads, the last segment and R's span.
fn sim_with_last_record() -> (SimFs, Vec<Vec<u8>>, std::path::PathBuf, usize, usize) {
    let (fs, payloads) = sim_journal(400, &[3, 10, 10]);
    let last = segments(&fs).last().unwrap().clone();
    let bytes = fs.file_bytes(&last).unwrap();
    let (start, len) = *record_spans(&bytes).last().unwrap();
    (fs, payloads, last, start, len)
}

#[test]
fn garbled_last_record_at_every_offset() {
    let (base, payloads, last, r_start, r_len) = sim_with_last_record();
    let bytes = base.file_bytes(&last).unwrap();
    let before = &payloads[..payloads.len() - 1];
    for at in 0..r_len {
        for variant in 0..3 {
            let fs = base.crash(Unsynced::Lost);
            let mut b = bytes.clone();
            match variant {
                // One byte changed.
                0 => b[r_start + at] ^= 0xA5,
                // Torn with garbage: the rest of R from `at` on is junk.
                1 => {
                    for (k, x) in b[r_start + at..].iter_mut().enumerate() {
                        *x = (k as u8).wrapping_mul(151).wrapping_add(at as u8) | 1;
                    }
                }
                // Torn with zeros (file size made it to disk, data did not).
                _ => b[r_start + at..].fill(0),
            }
            if b == bytes {
                continue;
            }
            fs.set_file_bytes(&last, b).unwrap();
            let (j, rec) = Journal::open_with(fs.clone(), dir(), config(400))
                .unwrap_or_else(|e| panic!("offset {at} variant {variant}: {e}"));
            assert_eq!(rec.truncated_bytes, r_len as u64, "offset {at}");
            assert_eq!(rec.truncated_at, Some((last.clone(), r_start as u64)));
            check_recovery_and_continue(fs, dir(), before, j, &rec);
        }
    }
}

#[test]
fn zero_filled_tail_after_last_record_is_a_tear() {
    let (base, payloads, last, _, _) = sim_with_last_record();
    for extra in [1usize, 7, 48, 100, 4096] {
        let fs = base.crash(Unsynced::Lost);
        let mut b = fs.file_bytes(&last).unwrap();
        let len = b.len();
        b.resize(len + extra, 0);
        fs.set_file_bytes(&last, b).unwrap();
        let (j, rec) = Journal::open_with(fs.clone(), dir(), config(400)).unwrap();
        assert_eq!(rec.truncated_bytes, extra as u64);
        assert_eq!(rec.truncated_at, Some((last.clone(), len as u64)));
        check_recovery_and_continue(fs, dir(), &payloads, j, &rec);
    }
}

#[test]
fn incomplete_new_segment_is_removed() {
    let (base, payloads, _, _, _) = sim_with_last_record();
    let next_seg = dir()
        .join(JOURNAL_SUBDIR)
        .join(kura_journal::segment_file_name(payloads.len() as u64 + 1));
    let header = kura_journal::encode_segment_header(&kura_journal::SegmentHeader {
        first_seq: payloads.len() as u64 + 1,
        prev_chain_hash: read_all(base.clone(), dir())
            .unwrap()
            .last()
            .unwrap()
            .chain_hash,
    });
    for cut in 0..header.len() {
        let fs = base.crash(Unsynced::Lost);
        // Create the file as a crash during segment creation could leave it.
        {
            use kura_journal::{Fs, FsFile};
            let mut f = fs.create_new(&next_seg).unwrap();
            f.write_all(&header[..cut]).unwrap();
        }
        let (j, rec) = Journal::open_with(fs.clone(), dir(), config(400)).unwrap();
        assert!(rec.removed_incomplete_segment, "cut {cut}");
        assert_eq!(rec.truncated_at, Some((next_seg.clone(), 0)));
        assert!(fs.file_bytes(&next_seg).is_none());
        check_recovery_and_continue(fs, dir(), &payloads, j, &rec);
    }
    // A complete header with no records is a valid (empty) segment, kept and used.
    let fs = base.crash(Unsynced::Lost);
    {
        use kura_journal::{Fs, FsFile};
        let mut f = fs.create_new(&next_seg).unwrap();
        f.write_all(&header).unwrap();
    }
    let (j, rec) = Journal::open_with(fs.clone(), dir(), config(400)).unwrap();
    assert_eq!(rec.truncated_bytes, 0);
    check_recovery_and_continue(fs.clone(), dir(), &payloads, j, &rec);
    assert!(fs.file_bytes(&next_seg).unwrap().len() > header.len());
}

#[test]
fn reader_stops_before_a_torn_tail_without_error() {
    let (fs, payloads, last, r_start, r_len) = sim_with_last_record();
    let mut b = fs.file_bytes(&last).unwrap();
    b.truncate(r_start + r_len / 2);
    fs.set_file_bytes(&last, b).unwrap();
    let mut reader = kura_journal::JournalReader::open_with(fs.clone(), dir(), 1).unwrap();
    let n = reader
        .by_ref()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .len();
    assert_eq!(n, payloads.len() - 1);
    let torn = reader.torn_tail().unwrap();
    assert_eq!(torn.offset, r_start as u64);
    let report = kura_journal::verify_with(fs, dir(), &mut |_| {}).unwrap();
    assert_eq!(report.head.seq, payloads.len() as u64 - 1);
    assert!(report.torn_tail.is_some());
    // The std reader on a missing path still errors rather than reading "nothing".
    assert!(read_records(Path::new("/nonexistent/kura"), 1).is_err());
}
