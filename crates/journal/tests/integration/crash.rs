//! J6 (and a power-loss version of J1/J2): crash just before every sync of a run that
//! commits, rolls segments and writes snapshots. After each simulated power loss, new
//! files are either absent or complete and valid, recovery succeeds, and every
//! acknowledged record is present.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_records, config, dir, payload, read_all, write_batches};
use kura_journal::testing::{CrashPoint, SimFs, Unsynced};
use kura_journal::{
    load_newest_valid_snapshot_with, write_snapshot_with, Fs, Journal, SnapshotMeta,
    JOURNAL_SUBDIR, SEGMENT_HEADER_LEN, SNAPSHOT_SUBDIR,
};

const TARGET: u64 = 250;

fn state_for(seq: u64) -> Vec<u8> {
    format!("state after {seq}")
        .into_bytes()
        .repeat(seq as usize % 5 + 1)
}

/// Commits batches, rolling segments, with a snapshot after some commits. Returns the
/// captured crash points and the fs.
fn scenario() -> (SimFs, Vec<CrashPoint>) {
    let fs = SimFs::new();
    fs.set_capture(true);
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    for (i, n) in [2usize, 5, 1, 7, 3, 4].into_iter().enumerate() {
        write_batches(&mut j, &[n], Some(&fs));
        if i % 2 == 1 {
            let head = j.head();
            let meta = SnapshotMeta {
                seq: head.seq,
                chain_hash: head.chain_hash,
                state_hash: [i as u8; 32],
            };
            write_snapshot_with(&fs, dir(), &meta, &state_for(head.seq)).unwrap();
        }
    }
    drop(j);
    let points = fs.take_crash_points();
    (fs, points)
}

fn check_image(img: SimFs, acked: u64, label: &str) {
    // Segment files present after the crash are complete: a whole, valid header at least.
    // (Recovery would remove an incomplete one; here none may even appear.)
    let jdir = dir().join(JOURNAL_SUBDIR);
    for p in img.paths() {
        if p.parent() == Some(jdir.as_path()) && p.extension().is_some_and(|e| e == "seg") {
            let bytes = img.file_bytes(&p).unwrap();
            assert!(
                kura_journal::decode_segment_header(&bytes).is_ok(),
                "{label}: {} present but its header is not durable",
                p.display()
            );
        }
    }
    // Snapshots present are valid and never reported corrupt.
    let newest = load_newest_valid_snapshot_with(&img, dir()).unwrap();
    assert!(newest.corrupt.is_empty(), "{label}: {:?}", newest.corrupt);
    if let Some(s) = &newest.snapshot {
        assert_eq!(s.state, state_for(s.meta.seq), "{label}");
    }
    let (j, rec) = Journal::open_with(img.clone(), dir(), config(TARGET))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        rec.head.seq >= acked,
        "{label}: head {} lost acknowledged records up to {acked}",
        rec.head.seq
    );
    drop(j);
    let records = read_all(img.clone(), dir()).unwrap();
    let payloads: Vec<_> = (1..=records.len() as u64).map(payload).collect();
    assert_records(&records, &payloads);
    if let Some(s) = &newest.snapshot {
        assert!(
            s.meta.seq <= rec.head.seq,
            "{label}: snapshot beyond journal"
        );
        assert_eq!(
            kura_journal::check_snapshot_with(img, dir(), &s.meta).unwrap(),
            kura_journal::SnapshotCheck::Matches,
            "{label}"
        );
    }
}

#[test]
fn power_loss_before_every_sync() {
    let (fs, points) = scenario();
    assert!(points.len() > 15, "{} crash points", points.len());
    for (i, point) in points.iter().enumerate() {
        for unsynced in [
            Unsynced::Lost,
            Unsynced::Zeroed,
            Unsynced::KeepPrefix(1),
            Unsynced::KeepPrefix(SEGMENT_HEADER_LEN / 2),
            Unsynced::KeepPrefix(60),
            Unsynced::KeepPrefix(usize::MAX),
        ] {
            let label = format!("point {i} ({}) {unsynced:?}", point.label);
            check_image(point.fs.crash(unsynced), point.marker, &label);
        }
    }
    check_image(fs.crash(Unsynced::Lost), 22, "end");
}

#[test]
fn crash_points_cover_each_step_of_segment_and_snapshot_creation() {
    let (_, points) = scenario();
    let has = |prefix: &str, suffix: &str| {
        points
            .iter()
            .any(|p| p.label.starts_with(prefix) && p.label.ends_with(suffix))
    };
    // New segment: before its file sync, before the directory sync, and after both
    // (before the first record sync in it).
    assert!(has("sync_all", ".seg"));
    assert!(has("sync_dir", JOURNAL_SUBDIR));
    assert!(has("sync_data", ".seg"));
    // Snapshot: before the temporary file's sync, before the directory sync.
    assert!(has("sync_all", ".snap.tmp"));
    assert!(has("sync_dir", SNAPSHOT_SUBDIR));
}

/// The three crash moments of one segment creation, checked explicitly: the new segment
/// is absent, absent, then present with a valid header; recovery keeps every commit.
#[test]
fn new_segment_crash_steps_explicitly() {
    let fs = SimFs::new();
    let (mut j, _) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    let first = write_batches(&mut j, &[4], None);
    // Fill the first segment past the target.
    let mut acked = first;
    // Fill the current segment up to the target, so the next record starts a new one.
    let last_segment_len = |fs: &SimFs| {
        let last = common::segments(fs).pop().unwrap();
        fs.file_bytes(&last).unwrap().len() as u64
    };
    while last_segment_len(&fs) < TARGET {
        acked.extend(write_batches(&mut j, &[1], None));
    }
    let next = dir()
        .join(JOURNAL_SUBDIR)
        .join(kura_journal::segment_file_name(acked.len() as u64 + 1));
    fs.set_capture(true);
    j.append(&payload(acked.len() as u64 + 1)).unwrap();
    j.commit().unwrap();
    let points = fs.take_crash_points();
    let labels: Vec<_> = points.iter().map(|p| p.label.as_str()).collect();
    // sync_data of the full segment (it was synced at its last commit, so it is clean and
    // skipped), sync_all of the new one, sync_dir, sync_data of the new record.
    let step = |prefix: &str| {
        points
            .iter()
            .find(|p| p.label.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {labels:?}"))
    };
    let before_file_sync = step("sync_all").fs.crash(Unsynced::Lost);
    let before_dir_sync = step("sync_dir").fs.crash(Unsynced::Lost);
    let after_dir_sync = step("sync_data").fs.crash(Unsynced::Lost);
    assert!(before_file_sync.file_bytes(&next).is_none());
    assert!(before_dir_sync.file_bytes(&next).is_none());
    assert_eq!(
        after_dir_sync.file_bytes(&next).unwrap().len(),
        SEGMENT_HEADER_LEN
    );
    for img in [before_file_sync, before_dir_sync, after_dir_sync] {
        let (_, rec) = Journal::open_with(img.clone(), dir(), config(TARGET)).unwrap();
        assert_eq!(rec.head.seq, acked.len() as u64);
        assert_records(&read_all(img, dir()).unwrap(), &acked);
    }
}

/// The three crash moments of one snapshot write: no snapshot, no snapshot, complete one.
#[test]
fn snapshot_crash_steps_explicitly() {
    let fs = SimFs::new();
    let meta = SnapshotMeta {
        seq: 0,
        chain_hash: [0; 32],
        state_hash: [1; 32],
    };
    write_snapshot_with(&fs, dir(), &meta, b"old").unwrap();
    let meta2 = SnapshotMeta { seq: 5, ..meta };
    fs.set_capture(true);
    write_snapshot_with(&fs, dir(), &meta2, b"new state").unwrap();
    let points = fs.take_crash_points();
    assert_eq!(points.len(), 2, "file sync and dir sync");
    let images = [
        points[0].fs.crash(Unsynced::KeepPrefix(usize::MAX)),
        points[1].fs.crash(Unsynced::KeepPrefix(usize::MAX)),
        fs.crash(Unsynced::Lost),
    ];
    let expect = [b"old".as_slice(), b"old", b"new state"];
    for (img, want) in images.iter().zip(expect) {
        let newest = load_newest_valid_snapshot_with(img, dir()).unwrap();
        assert!(newest.corrupt.is_empty());
        assert_eq!(newest.snapshot.unwrap().state, want);
    }
    // A stale temporary file (a file system may persist the name without a dir sync) is
    // ignored by readers and replaced by the next write.
    let img = fs.crash(Unsynced::Lost);
    let tmp = dir()
        .join(SNAPSHOT_SUBDIR)
        .join(format!("{}.tmp", kura_journal::snapshot_file_name(9)));
    {
        use kura_journal::FsFile;
        img.create_new(&tmp).unwrap().write_all(b"junk").unwrap();
    }
    let listed = kura_journal::list_snapshots_with(&img, dir()).unwrap();
    assert_eq!(listed.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 5]);
    let meta9 = SnapshotMeta { seq: 9, ..meta };
    write_snapshot_with(&img, dir(), &meta9, b"again").unwrap();
    assert!(img.file_bytes(&tmp).is_none());
    let newest = load_newest_valid_snapshot_with(&img, dir()).unwrap();
    assert_eq!(newest.snapshot.unwrap().state, b"again");
}

/// A process crash (not a power loss) can leave complete records and a new segment in the
/// page cache only. Recovery accepts them, so it must make them durable before anyone
/// acts on them: a power loss right after recovery must not take them away.
#[test]
fn recovery_makes_what_it_read_durable() {
    use kura_journal::FsFile;
    let (fs, mut payloads) = common::sim_journal(TARGET, &[3, 4]);
    let head = kura_journal::verify_with(fs.clone(), dir(), &mut |_| {})
        .unwrap()
        .head;
    // A new segment with one record, written but neither file- nor dir-synced.
    let seq = head.seq + 1;
    let path = dir()
        .join(JOURNAL_SUBDIR)
        .join(kura_journal::segment_file_name(seq));
    let mut f = fs.create_new(&path).unwrap();
    f.write_all(&kura_journal::encode_segment_header(
        &kura_journal::SegmentHeader {
            first_seq: seq,
            prev_chain_hash: head.chain_hash,
        },
    ))
    .unwrap();
    let mut rec = Vec::new();
    kura_journal::encode_record(&mut rec, seq, &head.chain_hash, &payload(seq));
    f.write_all(&rec).unwrap();
    drop(f);
    payloads.push(payload(seq));
    assert!(fs.crash(Unsynced::Lost).file_bytes(&path).is_none());

    let (j, recovery) = Journal::open_with(fs.clone(), dir(), config(TARGET)).unwrap();
    assert_eq!(recovery.head.seq, seq);
    drop(j);
    let after_power_loss = fs.crash(Unsynced::Lost);
    let (_, recovery) =
        Journal::open_with(after_power_loss.clone(), dir(), config(TARGET)).unwrap();
    assert_eq!(recovery.head.seq, seq, "recovered records vanished");
    assert_records(&read_all(after_power_loss, dir()).unwrap(), &payloads);
}
