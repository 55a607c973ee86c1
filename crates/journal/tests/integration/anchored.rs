//! Recovery from an anchor (a snapshot's seq and chain hash) in one pass:
//! `Journal::open_replay_with` hands over exactly the records after the anchor, checks the
//! anchor against the journal, checks the seams of the segments it does not re-read, and
//! keeps every other guarantee of `Journal::open_with` (torn tail truncated, anything else
//! refused with file and offset, nothing modified on refusal).

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::PathBuf;

use common::{assert_corrupt_at, config, dir, read_all, record_spans, segments, sim_journal};
use kura_journal::testing::{SimFs, Unsynced};
use kura_journal::{
    verify_with, Fs, Head, Journal, JournalError, Record, JOURNAL_SUBDIR, SEGMENT_HEADER_LEN,
};

const TARGET: u64 = 600;

/// A journal of at least four segments; returns the records too.
fn base() -> (SimFs, Vec<PathBuf>, Vec<Record>) {
    let (fs, _) = sim_journal(TARGET, &[5, 20, 20, 15, 9, 30, 3]);
    let segs = segments(&fs);
    assert!(segs.len() >= 4, "{segs:?}");
    let records = read_all(fs.clone(), dir()).unwrap();
    (fs, segs, records)
}

fn anchor_at(records: &[Record], seq: u64) -> Head {
    match seq {
        0 => Head::GENESIS,
        s => Head {
            seq: s,
            chain_hash: records[s as usize - 1].chain_hash,
        },
    }
}

/// Opens with `anchor`, collecting what the sink gets.
fn replay(fs: &SimFs, anchor: Head) -> Result<(Vec<Record>, kura_journal::Recovery), JournalError> {
    let mut got = Vec::new();
    let (journal, recovery) =
        Journal::open_replay_with(fs.clone(), dir(), config(TARGET), anchor, &mut |r| {
            got.push(r.to_owned_record());
            Ok(())
        })?;
    assert_eq!(journal.head(), recovery.head);
    Ok((got, recovery))
}

fn disk(fs: &SimFs) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fs.paths()
        .into_iter()
        .map(|p| (p.clone(), fs.file_bytes(&p)))
        .collect()
}

#[test]
fn every_anchor_hands_over_exactly_the_records_after_it() {
    let (base, _, records) = base();
    let head = records.len() as u64;
    for seq in 0..=head {
        let fs = base.crash(Unsynced::Lost);
        let (got, recovery) = replay(&fs, anchor_at(&records, seq)).unwrap();
        assert_eq!(got, records[seq as usize..], "anchor {seq}");
        assert_eq!(recovery.head, anchor_at(&records, head));
        assert_eq!(recovery.truncated_bytes, 0);
    }
}

#[test]
fn a_wrong_chain_hash_at_the_anchor_stops_the_open_and_changes_nothing() {
    let (base, segs, records) = base();
    for seq in [1, 5, 6, 30, records.len() as u64] {
        let fs = base.crash(Unsynced::Lost);
        let before = disk(&fs);
        let mut anchor = anchor_at(&records, seq);
        anchor.chain_hash[7] ^= 1;
        let err = replay(&fs, anchor).unwrap_err();
        let JournalError::AnchorMismatch {
            seq: s,
            file,
            offset,
        } = &err
        else {
            panic!("anchor {seq}: {err}");
        };
        assert_eq!(*s, seq);
        assert!(segs.contains(file), "{err}");
        assert!(*offset >= SEGMENT_HEADER_LEN as u64, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("seq {seq}")), "{msg}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert_eq!(disk(&fs), before, "anchor {seq}");
    }
    // A seq-0 anchor must be the genesis hash.
    let fs = base.crash(Unsynced::Lost);
    let bad = Head {
        seq: 0,
        chain_hash: [1; 32],
    };
    assert!(matches!(
        replay(&fs, bad).unwrap_err(),
        JournalError::AnchorMismatch { seq: 0, .. }
    ));
}

#[test]
fn an_anchor_beyond_the_journal_stops_the_open_and_keeps_even_a_torn_tail() {
    let (base, segs, records) = base();
    let head = records.len() as u64;
    let beyond = Head {
        seq: head + 3,
        chain_hash: [4; 32],
    };
    let fs = base.crash(Unsynced::Lost);
    let err = replay(&fs, beyond).unwrap_err();
    let JournalError::AnchorBeyondHead {
        seq, head: h, file, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((*seq, h.seq), (head + 3, head));
    assert_eq!(file, segs.last().unwrap());

    // The journal lost its last records (a torn tail now ends it before the anchor):
    // refused, and the tail is not truncated.
    let fs = base.crash(Unsynced::Lost);
    let last = segs.last().unwrap();
    let bytes = fs.file_bytes(last).unwrap();
    let (start, len) = *record_spans(&bytes).last().unwrap();
    fs.set_file_bytes(last, bytes[..start + len / 2].to_vec())
        .unwrap();
    let before = disk(&fs);
    let err = replay(&fs, anchor_at(&records, head)).unwrap_err();
    assert!(
        matches!(err, JournalError::AnchorBeyondHead { seq, head: h, .. } if seq == head && h.seq == head - 1),
        "{err}"
    );
    assert_eq!(disk(&fs), before);

    // A snapshot without any journal directory: refused, nothing created.
    let empty = SimFs::new();
    let err = Journal::open_replay_with(
        empty.clone(),
        dir(),
        config(TARGET),
        anchor_at(&records, 2),
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(
        matches!(err, JournalError::AnchorBeyondHead { seq: 2, .. }),
        "{err}"
    );
    assert!(empty.paths().is_empty());
}

#[test]
fn a_torn_tail_after_the_anchor_is_truncated_and_reported() {
    let (base, segs, records) = base();
    let fs = base.crash(Unsynced::Lost);
    let last = segs.last().unwrap();
    let bytes = fs.file_bytes(last).unwrap();
    let (start, len) = *record_spans(&bytes).last().unwrap();
    fs.set_file_bytes(last, bytes[..start + len - 1].to_vec())
        .unwrap();
    let anchor = anchor_at(&records, 10);
    let (got, recovery) = replay(&fs, anchor).unwrap();
    assert_eq!(got, records[10..records.len() - 1]);
    assert_eq!(recovery.truncated_bytes, len as u64 - 1);
    assert_eq!(recovery.truncated_at, Some((last.clone(), start as u64)));
    assert_eq!(fs.file_bytes(last).unwrap().len(), start);
}

#[test]
fn a_refusing_sink_stops_the_open_and_changes_nothing() {
    let (base, segs, records) = base();
    let fs = base.crash(Unsynced::Lost);
    // A torn tail that a successful open would truncate.
    let last = segs.last().unwrap();
    let mut bytes = fs.file_bytes(last).unwrap();
    bytes.extend_from_slice(&[0xEE; 30]);
    fs.set_file_bytes(last, bytes).unwrap();
    let before = disk(&fs);
    let mut seen = 0;
    let err = Journal::open_replay_with(
        fs.clone(),
        dir(),
        config(TARGET),
        anchor_at(&records, 3),
        &mut |r| {
            seen += 1;
            if r.seq == 40 {
                Err("cannot use it".into())
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    let JournalError::ReplayStopped {
        seq, file, offset, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*seq, 40);
    assert_eq!(seen, 37);
    let rec = fs.file_bytes(file).unwrap();
    let (at, _) = kura_journal::decode_record(&rec[*offset as usize..]).unwrap();
    assert_eq!(at.seq, 40, "the error names where the record is");
    assert!(err.to_string().contains("cannot use it"), "{err}");
    assert_eq!(disk(&fs), before);
}

/// Expects the anchored open (anchor in the last segment) to fail with `Corrupt` at
/// `file`/`offset` after `damage`, changing nothing.
fn expect_corrupt(
    base: &SimFs,
    records: &[Record],
    damage: impl FnOnce(&SimFs),
    file: &std::path::Path,
    offset: u64,
) {
    let fs = base.crash(Unsynced::Lost);
    damage(&fs);
    let before = disk(&fs);
    let err = replay(&fs, anchor_at(records, records.len() as u64 - 1)).unwrap_err();
    assert_corrupt_at(&err, file, offset);
    assert_eq!(
        disk(&fs),
        before,
        "a failed open must not modify the journal"
    );
}

#[test]
fn segments_before_the_anchor_missing_swapped_renamed_or_cut_are_found() {
    let (base, segs, records) = base();
    // A middle segment deleted: the next one does not continue the sequence.
    expect_corrupt(
        &base,
        &records,
        |fs| fs.remove_durably(&segs[1]).unwrap(),
        &segs[2],
        0,
    );
    // The first segment deleted.
    expect_corrupt(
        &base,
        &records,
        |fs| fs.remove_durably(&segs[0]).unwrap(),
        &segs[1],
        0,
    );
    // Two segments swapped by content: the name no longer matches the header.
    expect_corrupt(
        &base,
        &records,
        |fs| {
            let a = fs.file_bytes(&segs[1]).unwrap();
            let b = fs.file_bytes(&segs[2]).unwrap();
            fs.set_file_bytes(&segs[1], b).unwrap();
            fs.set_file_bytes(&segs[2], a).unwrap();
        },
        &segs[1],
        0,
    );
    // A segment renamed to a later name: the seam before it no longer matches.
    let renamed = dir()
        .join(JOURNAL_SUBDIR)
        .join(kura_journal::segment_file_name(records.len() as u64 + 100));
    let fs = base.crash(Unsynced::Lost);
    fs.rename(&segs[1], &renamed).unwrap();
    let err = replay(&fs, anchor_at(&records, records.len() as u64 - 1)).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    // The end of an earlier segment cut off (its last record torn).
    let bytes = base.file_bytes(&segs[1]).unwrap();
    let len = bytes.len();
    expect_corrupt(
        &base,
        &records,
        |fs| {
            fs.set_file_bytes(&segs[1], bytes[..len - 3].to_vec())
                .unwrap()
        },
        &segs[1],
        len as u64 - 3,
    );
    // A whole record missing from the end of an earlier segment.
    let (start, _) = *record_spans(&bytes).last().unwrap();
    expect_corrupt(
        &base,
        &records,
        |fs| {
            fs.set_file_bytes(&segs[1], bytes[..start].to_vec())
                .unwrap()
        },
        &segs[2],
        0,
    );
    // Every bit of an earlier segment's header.
    for bit in 0..SEGMENT_HEADER_LEN * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        expect_corrupt(
            &base,
            &records,
            |fs| fs.set_file_bytes(&segs[1], b).unwrap(),
            &segs[1],
            0,
        );
    }
    // The last record of an earlier segment, every bit: the seam check fails.
    let (start, rec_len) = *record_spans(&bytes).last().unwrap();
    for bit in 0..rec_len * 8 {
        let mut b = bytes.clone();
        b[start + bit / 8] ^= 1 << (bit % 8);
        let fs = base.crash(Unsynced::Lost);
        fs.set_file_bytes(&segs[1], b).unwrap();
        let err = replay(&fs, anchor_at(&records, records.len() as u64 - 1)).unwrap_err();
        assert!(err.is_corrupt(), "bit {bit}: {err}");
    }
}

#[test]
fn damage_inside_a_segment_before_the_anchor_is_left_to_verify() {
    // The documented trade-off (docs/adr/0006-startup-verification.md): the records of
    // segments wholly covered by the snapshot are not re-hashed at start-up. A flipped
    // bit in the middle of one does not stop the node (the snapshot holds their effect);
    // `verify` finds it with file and offset.
    let (base, segs, records) = base();
    let fs = base.crash(Unsynced::Lost);
    let bytes = fs.file_bytes(&segs[1]).unwrap();
    let spans = record_spans(&bytes);
    let (start, _) = spans[spans.len() / 2];
    let mut b = bytes.clone();
    b[start + 50] ^= 0x10;
    fs.set_file_bytes(&segs[1], b).unwrap();
    let anchor = anchor_at(&records, records.len() as u64 - 1);
    let (got, _) = replay(&fs, anchor).unwrap();
    assert_eq!(got, records[records.len() - 1..]);
    let err = verify_with(fs.clone(), dir(), &mut |_| {}).unwrap_err();
    assert_corrupt_at(&err, &segs[1], start as u64);
    // From genesis (no snapshot), the same damage stops the open.
    let err = replay(&fs, Head::GENESIS).unwrap_err();
    assert_corrupt_at(&err, &segs[1], start as u64);
}

#[test]
fn damage_in_the_anchor_segment_or_after_it_is_found() {
    let (base, segs, records) = base();
    let last = segs.last().unwrap();
    let bytes = base.file_bytes(last).unwrap();
    let spans = record_spans(&bytes);
    // The anchor is the last record; the record damaged is before it, in the same
    // segment: still read and checked.
    let (start, _) = spans[0];
    let fs = base.crash(Unsynced::Lost);
    let mut b = bytes.clone();
    b[start + 49] ^= 1;
    fs.set_file_bytes(last, b).unwrap();
    let err = replay(&fs, anchor_at(&records, records.len() as u64)).unwrap_err();
    assert_corrupt_at(&err, last, start as u64);
}
