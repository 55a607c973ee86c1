//! The file-system operations the journal uses, behind a trait so tests can inject faults.
//!
//! [`StdFs`] is the real implementation on `std::fs`. The in-memory implementation that
//! fails chosen syncs and models power loss lives in [`crate::testing`] (feature
//! `fault-injection`).
//!
//! The trait is deliberately small and names the durability primitives explicitly
//! (`sync_data`, `sync_all`, `sync_dir`): every durability decision of the journal is a
//! call on this trait, so a test can stop or fail the program at each one.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

/// An open file, written by appending.
pub trait FsFile: Debug + Send {
    /// Appends all of `buf` (the file is opened in append mode).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes the written bytes (and the size) durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`: makes the bytes and all metadata durable.
    fn sync_all(&mut self) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes. Not durable until a sync.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The file-system operations the journal and snapshots need.
pub trait Fs: Clone + Debug + Send + 'static {
    type File: FsFile;
    /// Held while a process owns a journal directory; dropping it releases the lock.
    type Lock: Debug + Send;

    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new file for appending; fails with `AlreadyExists` if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads bytes of the file `path` from byte `offset` on into `buf`: as many as fit or
    /// are left. Returns how many; fewer than `buf.len()` only at the end of the file.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The length of a file in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Names of the regular files directly inside `dir`; `NotFound` if `dir` is missing.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically renames `from` to `to`, replacing `to`. Not durable until `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Not durable until `sync_dir`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `fsync` on a directory: makes the entries created, renamed or removed in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive, non-blocking lock on the file `path` (created if missing).
    /// Fails with `WouldBlock` if another owner holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Self::Lock>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// An open `std::fs::File` in append mode.
#[derive(Debug)]
pub struct StdFile(std::fs::File);

impl FsFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.0, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// A held `flock(LOCK_EX)` on a lock file; released when dropped (the file closes).
#[derive(Debug)]
pub struct StdLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl StdLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Fs for StdFs {
    type File = StdFile;
    type Lock = StdLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<StdFile> {
        std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map(StdFile)
    }
    fn open_append(&self, path: &Path) -> io::Result<StdFile> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(StdFile)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut file = std::fs::File::open(path)?;
        read_full_at(&mut file, offset, buf)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        std::fs::metadata(path).map(|m| m.len())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // Non-UTF-8 names cannot be ours; they are skipped like any foreign file.
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn try_lock(&self, path: &Path) -> io::Result<StdLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        #[cfg(unix)]
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(io::Error::from)?;
        Ok(StdLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

/// Fills `buf` from `file` at `offset` until it is full or the file ends.
#[cfg(unix)]
fn read_full_at(file: &mut std::fs::File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        let at = offset.saturating_add(done as u64);
        match file.read_at(rest, at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Fills `buf` from `file` at `offset` until it is full or the file ends.
#[cfg(not(unix))]
fn read_full_at(file: &mut std::fs::File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
