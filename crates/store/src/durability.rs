//! The writer's durability: the read model is written without `fsync`.
//!
//! The journal is the source of truth and the read model is rebuilt from it, so the read
//! model's writer does not force its pages to disk (`synchronous=OFF`): each commit and
//! each checkpoint only hands pages to the operating system, which writes them back when
//! it likes and writes a page rewritten many times (a busy index leaf, the reused WAL)
//! once. Under the overload benchmark's honest load this took the disk's writes from
//! about 80 MB/s to about 14 MB/s, most of it the journal's own (ADR 0020).
//!
//! A process that dies loses nothing the operating system was given. A machine that
//! stops (power cut, kernel crash) may lose any of those pages, and SQLite's file can be
//! left corrupt. So the writer records, before its first unsynced write, the identity of
//! the running boot in a marker beside the database (`<database>.unsynced`), and
//! removes it after a clean close has forced everything to disk:
//!
//! - no marker: the last writer closed cleanly; the database is whole;
//! - a marker of this boot: the last writer died but the machine did not; the operating
//!   system still holds every page it was given; the database is whole;
//! - a marker of another boot: the machine stopped while pages may have been in memory
//!   only; the database is deleted, and the caller rebuilds it from the journal.
//!
//! Where the boot cannot be identified (not Linux), the writer syncs at checkpoints
//! (`synchronous=NORMAL`) as before and leaves no marker.

use crate::{Store, StoreError};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How [`Store::open_writer`] found the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriterOpened {
    /// The database (new, or as the last writer left it) was kept.
    Kept,
    /// The machine stopped while the database had writes not yet on disk (the marker
    /// names the boot it was written under): it was deleted. The store is empty and
    /// must be rebuilt from the journal.
    Discarded { boot: String },
}

/// The running kernel's boot identity, where the system gives one (Linux).
pub fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The suffix of the marker's name (after the database's).
const MARKER_SUFFIX: &str = ".unsynced";

/// `db`'s path with `suffix` appended to its file name.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The marker beside `db`.
pub fn marker_path(db: &Path) -> PathBuf {
    beside(db, MARKER_SUFFIX)
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}", path.display()), e)
}

/// Force the directory holding `path` to disk (a created or removed name).
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing the directory", parent, e))
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path, e)),
    }
}

/// Delete the database at `db` with its WAL, shared-memory and marker files (none of
/// which need exist). No connection may be open on it.
pub fn remove_database(db: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm", MARKER_SUFFIX] {
        remove_if_present(&beside(db, suffix))?;
    }
    Ok(())
}

/// Decide on the database at `db` under `boot` (see the module documentation), then
/// write `boot` in the marker and force it to disk. Returns what was found.
pub(crate) fn claim(db: &Path, boot: &str) -> Result<WriterOpened, StoreError> {
    let marker = marker_path(db);
    let found = match fs::read_to_string(&marker) {
        Ok(found) if found.trim() != boot => {
            remove_database(db)?;
            WriterOpened::Discarded {
                boot: found.trim().to_owned(),
            }
        }
        Ok(_) => WriterOpened::Kept,
        Err(e) if e.kind() == io::ErrorKind::NotFound => WriterOpened::Kept,
        Err(e) => return Err(io_error("reading", &marker, e)),
    };
    let mut file = File::create(&marker).map_err(|e| io_error("creating", &marker, e))?;
    file.write_all(boot.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", &marker, e))?;
    sync_parent(&marker)?;
    Ok(found)
}

impl Store {
    /// Open (or create) the database at `path` for the one writer that projects into it:
    /// without `fsync`, under a marker of the running boot (see [`crate::durability`]).
    /// A database an earlier boot left unsynced is deleted first
    /// ([`WriterOpened::Discarded`]); rebuild it from the journal. Close it with
    /// [`Store::close`].
    pub fn open_writer(path: impl AsRef<Path>) -> Result<(Store, WriterOpened), StoreError> {
        Store::open_writer_on_boot(path, boot_id().as_deref())
    }

    /// [`Store::open_writer`] under the boot identity `boot`; with `None`, the writer
    /// syncs at checkpoints and leaves no marker.
    pub fn open_writer_on_boot(
        path: impl AsRef<Path>,
        boot: Option<&str>,
    ) -> Result<(Store, WriterOpened), StoreError> {
        let path = path.as_ref();
        let Some(boot) = boot else {
            return Ok((Store::open(path)?, WriterOpened::Kept));
        };
        let found = claim(path, boot)?;
        let mut store = Store::open(path)?;
        store.conn.pragma_update(None, "synchronous", "OFF")?;
        store.unsynced = Some(marker_path(path));
        Ok((store, found))
    }

    /// Close the writer: force every page to disk (a full checkpoint, synced, that
    /// empties the WAL), then remove the marker. If a reader holds the WAL, the marker
    /// stays: the database is kept on this boot and rebuilt after a machine stop.
    pub fn close(mut self) -> Result<(), StoreError> {
        let Some(marker) = self.unsynced.take() else {
            return Ok(());
        };
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let (busy, log, done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 || log != done {
            tracing::warn!(
                busy,
                wal_frames = log,
                checkpointed = done,
                "kura-store: the read model's last checkpoint was incomplete; it stays marked unsynced"
            );
            return Ok(());
        }
        remove_if_present(&marker)?;
        sync_parent(&marker)
    }
}
