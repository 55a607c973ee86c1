//! Property tests: any payloads and commit points round-trip exactly; the decoder and
//! recovery never panic on arbitrary bytes.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_records, config, dir, read_all};
use kura_journal::testing::{SimFs, Unsynced};
use kura_journal::{
    decode_record, decode_segment_header, encode_record, encode_segment_header, Fs, FsFile,
    Journal, SegmentHeader, GENESIS_HASH, JOURNAL_SUBDIR,
};
use proptest::prelude::*;

fn payloads() -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
    prop::collection::vec(
        (
            prop_oneof![
                3 => prop::collection::vec(any::<u8>(), 0..64),
                1 => prop::collection::vec(any::<u8>(), 0..2000),
                1 => Just(Vec::new()),
            ],
            any::<bool>(),
        ),
        0..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_payloads_and_commit_points_round_trip(
        items in payloads(),
        target in 1u64..3000,
        reopen_every in 1usize..50,
    ) {
        let fs = SimFs::new();
        let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(target)).unwrap();
        let mut written = Vec::new();
        for (i, (p, commit)) in items.iter().enumerate() {
            prop_assert_eq!(j.append(p).unwrap(), written.len() as u64 + 1);
            written.push(p.clone());
            if *commit {
                prop_assert_eq!(j.commit().unwrap().seq, written.len() as u64);
            }
            if i % reopen_every == reopen_every - 1 {
                j.commit().unwrap();
                drop(j);
                // Reopen from what a power loss would leave: everything committed is there.
                let (j2, rec) =
                    Journal::open_with(fs.crash(Unsynced::Lost), dir(), config(target)).unwrap();
                prop_assert_eq!(rec.head.seq, written.len() as u64);
                drop(j2);
                j = Journal::open_with(fs.clone(), dir(), config(target)).unwrap().0;
            }
        }
        let head = j.commit().unwrap();
        drop(j);
        let durable = fs.crash(Unsynced::Lost);
        let (_, rec) = Journal::open_with(durable.clone(), dir(), config(target)).unwrap();
        prop_assert_eq!(rec.head, head);
        prop_assert_eq!(rec.truncated_bytes, 0);
        assert_records(&read_all(durable.clone(), dir()).unwrap(), &written);
        // Reading from any starting point gives the suffix.
        if !written.is_empty() {
            let from = written.len() as u64 / 2 + 1;
            let tail: Vec<_> = kura_journal::JournalReader::open_with(durable, dir(), from)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(tail.len() as u64, written.len() as u64 - from + 1);
            prop_assert_eq!(tail[0].seq, from);
        }
    }

    /// One damaged byte anywhere in the journal: recovery succeeds only if it is in the
    /// very last record (indistinguishable from a torn write, dropped); anywhere else the
    /// journal refuses to open.
    #[test]
    fn a_single_damaged_byte_is_dropped_only_in_the_last_record(
        items in payloads(),
        target in 1u64..1500,
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        prop_assume!(!items.is_empty());
        let fs = SimFs::new();
        let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(target)).unwrap();
        let mut written = Vec::new();
        for (p, commit) in &items {
            j.append(p).unwrap();
            written.push(p.clone());
            if *commit {
                j.commit().unwrap();
            }
        }
        j.commit().unwrap();
        drop(j);
        let segs = common::segments(&fs);
        let seg_idx = which.index(segs.len());
        let seg = &segs[seg_idx];
        let mut bytes = fs.file_bytes(seg).unwrap();
        let pos = at.index(bytes.len());
        bytes[pos] ^= xor;
        let last_record_start = common::record_spans(&fs.file_bytes(seg).unwrap())
            .last()
            .map_or(usize::MAX, |s| s.0);
        fs.set_file_bytes(seg, bytes).unwrap();
        let in_last_record = seg_idx == segs.len() - 1 && pos >= last_record_start;
        match Journal::open_with(fs.clone(), dir(), config(target)) {
            Ok((_, rec)) => {
                prop_assert!(in_last_record, "damage at {} {pos} accepted", seg.display());
                prop_assert_eq!(rec.head.seq, written.len() as u64 - 1);
                assert_records(&read_all(fs, dir()).unwrap(), &written[..written.len() - 1]);
            }
            Err(e) => {
                prop_assert!(!in_last_record, "torn last record refused: {}", e);
                prop_assert!(e.is_corrupt(), "{}", e);
            }
        }
    }

    #[test]
    fn decode_record_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_record(&bytes);
        let _ = decode_segment_header(&bytes);
    }

    #[test]
    fn decode_record_never_panics_on_damaged_records(
        payload in prop::collection::vec(any::<u8>(), 0..100),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, &GENESIS_HASH, &payload);
        let (r, n) = decode_record(&buf).unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(r.payload, payload);
        for (at, x) in damage {
            let i = at.index(buf.len());
            buf[i] ^= x;
        }
        let len = cut.index(buf.len() + 1);
        if let Ok((_, n)) = decode_record(&buf[..len]) {
            prop_assert!(n <= len);
        }
    }

    /// Recovery over arbitrary segment contents returns a result (usually Corrupt) and
    /// never panics.
    #[test]
    fn recovery_never_panics_on_arbitrary_segments(
        tail in prop::collection::vec(any::<u8>(), 0..400),
        with_header in any::<bool>(),
        records in 0usize..4,
    ) {
        let fs = SimFs::new();
        let jdir = dir().join(JOURNAL_SUBDIR);
        fs.create_dir_all(&jdir).unwrap();
        let mut bytes = Vec::new();
        if with_header {
            bytes.extend_from_slice(&encode_segment_header(&SegmentHeader {
                first_seq: 1,
                prev_chain_hash: GENESIS_HASH,
            }));
        }
        let mut prev = GENESIS_HASH;
        for seq in 1..=records as u64 {
            prev = encode_record(&mut bytes, seq, &prev, &[seq as u8; 5]);
        }
        bytes.extend_from_slice(&tail);
        let path = jdir.join(kura_journal::segment_file_name(1));
        fs.create_new(&path).unwrap().write_all(&bytes).unwrap();
        let _ = kura_journal::verify_with(fs.clone(), dir(), &mut |_| {});
        if let Ok((_, rec)) = Journal::open_with(fs.clone(), dir(), config(1000)) {
            prop_assert!(rec.head.seq <= records as u64 + tail.len() as u64 / 48);
            // Whatever recovery accepted reads back cleanly.
            prop_assert!(read_all(fs, dir()).is_ok());
        }
    }
}
