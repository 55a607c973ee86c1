//! The writer's durability: unsynced writes under a marker of the boot; a database an
//! earlier boot left unsynced is discarded; a clean close leaves it whole and unmarked.

#![allow(clippy::unwrap_used)]

use kura_engine::Ctx;
use kura_store::{marker_path, Store, WriterOpened};
use std::path::Path;

fn synchronous(s: &Store) -> i64 {
    s.connection()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap()
}

/// Project `n` commands (rejected ones: no events) after the store's last.
fn advance(s: &mut Store, n: u64) {
    let from = s.last_seq().unwrap_or(0);
    for seq in from + 1..=from + n {
        s.apply(
            Ctx {
                seq,
                timestamp_ms: 1_700_000_000_000 + seq,
            },
            &[],
        )
        .unwrap();
    }
}

fn marker(db: &Path) -> Option<String> {
    std::fs::read_to_string(marker_path(db)).ok()
}

#[test]
fn a_writer_left_unsynced_is_kept_on_its_boot_and_discarded_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rm.sqlite");

    let (mut s, found) = Store::open_writer_on_boot(&db, Some("boot-a")).unwrap();
    assert_eq!(found, WriterOpened::Kept);
    assert_eq!(synchronous(&s), 0, "the writer does not fsync");
    assert_eq!(marker(&db).as_deref(), Some("boot-a"));
    advance(&mut s, 5);
    // The process dies without closing: the marker stays.
    drop(s);
    assert_eq!(marker(&db).as_deref(), Some("boot-a"));

    // Same boot: the operating system held every page; the database is kept.
    let (mut s, found) = Store::open_writer_on_boot(&db, Some("boot-a")).unwrap();
    assert_eq!(found, WriterOpened::Kept);
    assert_eq!(s.last_seq(), Some(5));
    advance(&mut s, 2);
    drop(s);

    // Another boot: the machine stopped with pages maybe in memory only; discarded.
    let (s, found) = Store::open_writer_on_boot(&db, Some("boot-b")).unwrap();
    assert_eq!(
        found,
        WriterOpened::Discarded {
            boot: "boot-a".into()
        }
    );
    assert_eq!(
        s.last_seq(),
        None,
        "an empty store, to rebuild from the journal"
    );
    assert_eq!(marker(&db).as_deref(), Some("boot-b"));
}

#[test]
fn a_closed_writer_leaves_a_whole_database_that_survives_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rm.sqlite");
    let (mut s, _) = Store::open_writer_on_boot(&db, Some("boot-a")).unwrap();
    advance(&mut s, 300);
    // A reader, as the server's pool keeps them, does not stop the close.
    let reader = Store::open(&db).unwrap();
    assert_eq!(reader.last_seq(), Some(300));
    s.close().unwrap();
    assert_eq!(marker(&db), None, "the marker goes with a clean close");
    let wal = dir.path().join("rm.sqlite-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "every page was checkpointed into the database"
    );
    drop(reader);

    let (s, found) = Store::open_writer_on_boot(&db, Some("boot-b")).unwrap();
    assert_eq!(found, WriterOpened::Kept);
    assert_eq!(s.last_seq(), Some(300));
}

#[test]
fn without_a_boot_identity_the_writer_syncs_at_checkpoints_and_leaves_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rm.sqlite");
    let (mut s, found) = Store::open_writer_on_boot(&db, None).unwrap();
    assert_eq!(found, WriterOpened::Kept);
    assert_eq!(synchronous(&s), 1, "NORMAL");
    advance(&mut s, 3);
    assert_eq!(marker(&db), None);
    s.close().unwrap();
    assert_eq!(Store::open(&db).unwrap().last_seq(), Some(3));
}

#[test]
fn remove_database_takes_every_file_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rm.sqlite");
    let (mut s, _) = Store::open_writer_on_boot(&db, Some("boot-a")).unwrap();
    advance(&mut s, 3);
    drop(s);
    kura_store::remove_database(&db).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // And nothing to remove is not an error.
    kura_store::remove_database(&db).unwrap();
}
