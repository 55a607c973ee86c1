//! J4: damage in the middle of the journal (bit flips, misdirected writes, missing or
//! misplaced segments, a torn segment that is not the last) is always detected, never
//! truncated, and reported with file and offset.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_corrupt_at, config, dir, record_spans, segments, sim_journal};
use kura_journal::testing::{SimFs, Unsynced};
use kura_journal::{verify_with, Fs, Journal, JournalError, JOURNAL_SUBDIR, SEGMENT_HEADER_LEN};

const TARGET: u64 = 600;

/// A journal of at least three segments whose last segment holds at least four records.
fn base() -> (SimFs, Vec<PathBuf>) {
    let (fs, _) = sim_journal(TARGET, &[5, 20, 20, 15]);
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    loop {
        let segs = segments(&fs);
        let last = fs.file_bytes(segs.last().unwrap()).unwrap();
        if segs.len() >= 3 && record_spans(&last).len() >= 4 {
            drop(j);
            return (fs, segs);
        }
        common::write_batches(&mut j, &[1], None);
    }
}

/// Opens a copy of `base` with `damage` applied; asserts open and verify both fail with
/// Corrupt at `file`/`offset` and that nothing on disk changed.
fn expect_corrupt(base: &SimFs, damage: impl FnOnce(&SimFs), file: &Path, offset: u64) {
    let fs = base.crash(Unsynced::Lost);
    damage(&fs);
    let before: Vec<_> = fs.paths().iter().map(|p| fs.file_bytes(p)).collect();
    let err = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap_err();
    assert_corrupt_at(&err, file, offset);
    let err = verify_with(fs.clone(), dir(), &mut |_| {}).unwrap_err();
    assert_corrupt_at(&err, file, offset);
    let after: Vec<_> = fs.paths().iter().map(|p| fs.file_bytes(p)).collect();
    assert_eq!(before, after, "a failed open must not modify the journal");
}

fn flip_every_bit_of(base: &SimFs, seg: &Path, start: usize, len: usize, expect_offset: u64) {
    let bytes = base.file_bytes(seg).unwrap();
    for bit in 0..len * 8 {
        let mut b = bytes.clone();
        b[start + bit / 8] ^= 1 << (bit % 8);
        expect_corrupt(
            base,
            |fs| fs.set_file_bytes(seg, b).unwrap(),
            seg,
            expect_offset,
        );
    }
}

#[test]
fn bit_flip_in_a_middle_record_of_an_earlier_segment() {
    let (base, segs) = base();
    let seg = &segs[1];
    let spans = record_spans(&base.file_bytes(seg).unwrap());
    let (start, len) = spans[spans.len() / 2];
    flip_every_bit_of(&base, seg, start, len, start as u64);
}

#[test]
fn bit_flip_in_a_middle_record_of_the_last_segment() {
    // The last segment is where torn tails are forgiven: damage with intact records after
    // it must still be corruption.
    let (base, segs) = base();
    let seg = segs.last().unwrap();
    let spans = record_spans(&base.file_bytes(seg).unwrap());
    assert!(spans.len() >= 3);
    for &(start, len) in &spans[..spans.len() - 1] {
        flip_every_bit_of(&base, seg, start, len, start as u64);
    }
}

#[test]
fn bit_flip_in_segment_headers() {
    let (base, segs) = base();
    for seg in [&segs[0], &segs[1], segs.last().unwrap()] {
        flip_every_bit_of(&base, seg, 0, SEGMENT_HEADER_LEN, 0);
    }
}

#[test]
fn misdirected_write_is_caught_by_sequence_or_chain() {
    // Fixed-size payloads, so a copied record keeps the framing intact and only the
    // sequence and chain checks can tell.
    let base = SimFs::new();
    let (mut j, _) = Journal::open_with(base.clone(), dir(), config(TARGET)).unwrap();
    for i in 0..60u8 {
        j.append(&[i; 40]).unwrap();
        if i % 7 == 0 {
            j.commit().unwrap();
        }
    }
    j.commit().unwrap();
    drop(j);
    let segs = segments(&base);
    assert!(segs.len() >= 3);
    let seg = &segs[1];
    let bytes = base.file_bytes(seg).unwrap();
    let spans = record_spans(&bytes);
    let (a_start, len) = spans[1];
    let (b_start, _) = spans[spans.len() - 1];
    let mut b = bytes.clone();
    b.copy_within(b_start..b_start + len, a_start);
    expect_corrupt(
        &base,
        |fs| fs.set_file_bytes(seg, b).unwrap(),
        seg,
        a_start as u64,
    );

    // A record of segment 0 written over one of segment 2 (a stale, valid block).
    let seg0 = base.file_bytes(&segs[0]).unwrap();
    let seg2 = base.file_bytes(&segs[2]).unwrap();
    let (s0, _) = record_spans(&seg0)[2];
    let (s2, _) = record_spans(&seg2)[2];
    let mut b = seg2.clone();
    b[s2..s2 + len].copy_from_slice(&seg0[s0..s0 + len]);
    expect_corrupt(
        &base,
        |fs| fs.set_file_bytes(&segs[2], b).unwrap(),
        &segs[2],
        s2 as u64,
    );
}

#[test]
fn foreign_record_with_the_right_seq_breaks_the_chain() {
    let (base, segs) = base();
    let seg = &segs[1];
    let bytes = base.file_bytes(seg).unwrap();
    let spans = record_spans(&bytes);
    let (start, len) = spans[spans.len() / 2];
    let (victim, _) = kura_journal::decode_record(&bytes[start..]).unwrap();
    // Re-encode the same seq and payload on a different previous hash: valid CRC and seq.
    let mut forged = Vec::new();
    kura_journal::encode_record(&mut forged, victim.seq, &[9; 32], &victim.payload);
    assert_eq!(forged.len(), len);
    let mut b = bytes.clone();
    b[start..start + len].copy_from_slice(&forged);
    let fs = base.crash(Unsynced::Lost);
    fs.set_file_bytes(seg, b).unwrap();
    let err = Journal::open_with(fs, dir(), config(TARGET)).unwrap_err();
    assert_corrupt_at(&err, seg, start as u64);
    assert!(err.to_string().contains("chain hash"), "{err}");
    assert!(
        err.to_string().contains(&format!("seq {}", victim.seq)),
        "{err}"
    );
}

#[test]
fn missing_or_misplaced_segments() {
    let (base, segs) = base();
    // A middle segment deleted: the next one does not continue the sequence.
    expect_corrupt(
        &base,
        |fs| fs.remove_durably(&segs[1]).unwrap(),
        &segs[2],
        0,
    );
    // The first segment deleted.
    expect_corrupt(
        &base,
        |fs| fs.remove_durably(&segs[0]).unwrap(),
        &segs[1],
        0,
    );
    // A segment renamed: its name no longer matches its header.
    let renamed = dir()
        .join(JOURNAL_SUBDIR)
        .join(kura_journal::segment_file_name(1_000_000));
    expect_corrupt(
        &base,
        |fs| {
            fs.rename(&segs[1], &renamed).unwrap();
        },
        &segs[2],
        0,
    );
    // Two segments swapped by content.
    expect_corrupt(
        &base,
        |fs| {
            let a = fs.file_bytes(&segs[1]).unwrap();
            let b = fs.file_bytes(&segs[2]).unwrap();
            fs.set_file_bytes(&segs[1], b).unwrap();
            fs.set_file_bytes(&segs[2], a).unwrap();
        },
        &segs[1],
        0,
    );
    // A stray file that looks like a segment.
    let stray = dir().join(JOURNAL_SUBDIR).join("12.seg");
    let fs = base.crash(Unsynced::Lost);
    {
        use kura_journal::FsFile;
        fs.create_new(&stray).unwrap().write_all(b"x").unwrap();
    }
    let err = Journal::open_with(fs, dir(), config(TARGET)).unwrap_err();
    assert_corrupt_at(&err, &stray, 0);
}

#[test]
fn torn_tail_in_an_earlier_segment_is_corruption() {
    let (base, segs) = base();
    let seg = &segs[1];
    let bytes = base.file_bytes(seg).unwrap();
    let (start, len) = *record_spans(&bytes).last().unwrap();
    for cut in [1, len / 2, len - 1] {
        let mut b = bytes.clone();
        b.truncate(start + cut);
        expect_corrupt(
            &base,
            |fs| fs.set_file_bytes(seg, b).unwrap(),
            seg,
            start as u64,
        );
    }
    // An earlier segment with its header torn off.
    expect_corrupt(
        &base,
        |fs| fs.set_file_bytes(&segs[1], bytes[..10].to_vec()).unwrap(),
        &segs[1],
        0,
    );
}

#[test]
fn zeroed_record_with_data_after_it_is_corruption() {
    let (base, segs) = base();
    let seg = segs.last().unwrap();
    let bytes = base.file_bytes(seg).unwrap();
    let spans = record_spans(&bytes);
    let (start, len) = spans[spans.len() - 2];
    let mut b = bytes.clone();
    b[start..start + len].fill(0);
    expect_corrupt(
        &base,
        |fs| fs.set_file_bytes(seg, b).unwrap(),
        seg,
        start as u64,
    );
}

#[test]
fn corrupt_error_names_file_offset_and_seq() {
    let (base, segs) = base();
    let seg = &segs[1];
    let bytes = base.file_bytes(seg).unwrap();
    let (start, _) = record_spans(&bytes)[2];
    let seq = kura_journal::decode_record(&bytes[start..]).unwrap().0.seq;
    let mut b = bytes.clone();
    b[start + 20] ^= 1;
    let fs = base.crash(Unsynced::Lost);
    fs.set_file_bytes(seg, b).unwrap();
    let err = Journal::open_with(fs, dir(), config(TARGET)).unwrap_err();
    let JournalError::Corrupt { seq: Some(s), .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*s, seq);
    let msg = err.to_string();
    assert!(msg.contains(&format!("(seq {seq})")), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
}
