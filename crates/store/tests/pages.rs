//! Page size: a new read model uses small pages; one created with another size keeps it.

#![allow(clippy::unwrap_used)]

use kura_store::{Store, PAGE_SIZE};

fn page_size(s: &Store) -> u32 {
    s.connection()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_read_model_uses_small_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.sqlite");
    let store = Store::open(&fresh).unwrap();
    assert_eq!(page_size(&store), PAGE_SIZE);
    drop(store);
    assert_eq!(page_size(&Store::open(&fresh).unwrap()), PAGE_SIZE);

    // A read model made before (4 KiB pages, WAL): opened, migrated, used as it is.
    let old = dir.path().join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&old).unwrap();
        c.pragma_update(None, "page_size", 4096).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    }
    let store = Store::open(&old).unwrap();
    assert_eq!(page_size(&store), 4096);
    assert_eq!(store.last_seq(), None);
}
