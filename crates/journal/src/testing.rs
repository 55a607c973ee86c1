//! An in-memory [`Fs`] that injects I/O faults and models power loss. Test-only (feature
//! `fault-injection`).
//!
//! Model:
//! - Each file (inode) has its current bytes and its *durable* bytes: those covered by the
//!   last successful `sync_data`/`sync_all` of that file.
//! - Each directory has its current entries and its *durable* entries: those as of the last
//!   successful `sync_dir` of that directory. A file created or renamed but not yet
//!   dir-synced is gone after a crash; a file removed but not dir-synced comes back.
//! - Directories themselves are durable once created (the journal syncs the parent
//!   anyway; modelling it would add nothing the tests check).
//! - [`SimFs::crash`] returns the disk as it would be after power loss now: every file
//!   reachable through durable entries, holding its durable bytes plus, per [`Unsynced`],
//!   nothing, a prefix, or zeros in place of the bytes appended since its last sync.
//! - A failed sync (injected with [`SimFs::fail_sync_after`]) makes nothing durable, and
//!   the bytes it should have written are *lost for good*: a later successful sync of the
//!   file does not write them (they read back as the old bytes or zeros after a crash).
//!   This is the Linux behaviour behind fsyncgate, so a writer that retried would be caught.
//! - With [`SimFs::set_capture`], the state just before every sync is recorded as a
//!   [`CrashPoint`], so a test can check recovery from a crash at each durability step.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{Fs, FsFile};

/// Linux `EIO`.
const EIO: i32 = 5;
/// Linux `ENOSPC`.
const ENOSPC: i32 = 28;

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the device is full.
    Enospc,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(EIO),
            Fault::Enospc => io::Error::from_raw_os_error(ENOSPC),
        }
    }
}

/// What happens to bytes written but not synced when the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced {
    /// They are lost; each file ends at its last synced length.
    Lost,
    /// The first `n` of them (per file) reached the disk: a torn write.
    KeepPrefix(usize),
    /// The file length reached the disk but the data did not: they read as zeros.
    Zeroed,
}

/// The disk as it was just before one sync call.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    /// The operation about to run, e.g. `sync_data /d/journal/000…1.seg`.
    pub label: String,
    /// The value of [`SimFs::set_marker`] at that moment.
    pub marker: u64,
    /// The whole file system state; call [`SimFs::crash`] on it.
    pub fs: SimFs,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges whose write-back failed: never written by a later sync.
    lost: Vec<(usize, usize)>,
}

#[derive(Clone, Debug, Default)]
struct State {
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    syncs: u64,
    writes: u64,
    fail_sync_at: Option<(u64, Fault)>,
    fail_write_at: Option<(u64, Fault)>,
    capture: bool,
    marker: u64,
    crash_points: Vec<CrashPoint>,
}

impl State {
    /// A copy of the file system without the test bookkeeping.
    fn image(&self) -> State {
        State {
            next_inode: self.next_inode,
            inodes: self.inodes.clone(),
            names: self.names.clone(),
            durable_names: self.durable_names.clone(),
            dirs: self.dirs.clone(),
            ..State::default()
        }
    }

    fn before_sync(&mut self, label: impl FnOnce() -> String) -> io::Result<()> {
        if self.capture {
            let fs = SimFs::from_state(self.image());
            self.crash_points.push(CrashPoint {
                label: label(),
                marker: self.marker,
                fs,
            });
        }
        self.syncs += 1;
        match self.fail_sync_at {
            Some((n, fault)) if n == self.syncs => Err(fault.error()),
            _ => Ok(()),
        }
    }

    fn inode_mut(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// The simulated file system. Clones share state (like handles to one disk).
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub fn new() -> Self {
        SimFs::default()
    }

    fn from_state(state: State) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the `n`th sync call from now (1 = the next one) fail with `fault`. Sync calls
    /// are `sync_data`, `sync_all` and `sync_dir`.
    pub fn fail_sync_after(&self, n: u64, fault: Fault) {
        let mut s = self.lock();
        s.fail_sync_at = Some((s.syncs + n, fault));
    }

    /// Makes the `n`th file write from now fail with `fault` (nothing is written).
    pub fn fail_write_after(&self, n: u64, fault: Fault) {
        let mut s = self.lock();
        s.fail_write_at = Some((s.writes + n, fault));
    }

    /// Sync calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Write calls so far.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// Records a [`CrashPoint`] before every sync while on.
    pub fn set_capture(&self, on: bool) {
        self.lock().capture = on;
    }

    /// A number the test sets (e.g. commits acknowledged so far), stored in crash points.
    pub fn set_marker(&self, marker: u64) {
        self.lock().marker = marker;
    }

    /// The crash points recorded so far (and forgets them).
    pub fn take_crash_points(&self) -> Vec<CrashPoint> {
        std::mem::take(&mut self.lock().crash_points)
    }

    /// The disk after a power loss now: a new, independent file system (no faults armed).
    pub fn crash(&self, unsynced: Unsynced) -> SimFs {
        let s = self.lock();
        let mut after = State {
            dirs: s.dirs.clone(),
            names: s.durable_names.clone(),
            durable_names: s.durable_names.clone(),
            next_inode: s.next_inode,
            ..State::default()
        };
        for id in s.durable_names.values() {
            let Some(inode) = s.inodes.get(id) else {
                continue;
            };
            let mut bytes = inode.durable.clone();
            let extends = inode.data.len() > bytes.len() && inode.data.starts_with(&bytes);
            if extends {
                let tail = inode.data.get(bytes.len()..).unwrap_or(&[]);
                match unsynced {
                    Unsynced::Lost => {}
                    Unsynced::KeepPrefix(n) => {
                        bytes.extend_from_slice(tail.get(..n.min(tail.len())).unwrap_or(&[]))
                    }
                    Unsynced::Zeroed => bytes.resize(inode.data.len(), 0),
                }
            }
            after.inodes.insert(
                *id,
                Inode {
                    data: bytes.clone(),
                    durable: bytes,
                    lost: Vec::new(),
                },
            );
        }
        SimFs::from_state(after)
    }

    /// The current (not necessarily durable) bytes of a file.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let id = s.names.get(path)?;
        s.inodes.get(id).map(|i| i.data.clone())
    }

    /// Replaces a file's bytes, current and durable (damage "on the platter").
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let mut s = self.lock();
        let id = s.lookup(path)?;
        let inode = s.inode_mut(id)?;
        inode.durable = bytes.clone();
        inode.data = bytes;
        Ok(())
    }

    /// Removes a file durably (as an operator or a failing disk might).
    pub fn remove_durably(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.names
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.durable_names.remove(path);
        Ok(())
    }

    /// All current file paths, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: u64,
    path: PathBuf,
}

impl SimFile {
    fn sync(&mut self, op: &str) -> io::Result<()> {
        let mut s = self.fs.lock();
        let path = &self.path;
        let result = s.before_sync(|| format!("{op} {}", path.display()));
        let inode = s.inode_mut(self.inode)?;
        match result {
            Ok(()) => {
                let old = std::mem::take(&mut inode.durable);
                let mut durable = inode.data.clone();
                for &(start, end) in &inode.lost {
                    for i in start..end.min(durable.len()) {
                        if let Some(b) = durable.get_mut(i) {
                            *b = old.get(i).copied().unwrap_or(0);
                        }
                    }
                }
                inode.durable = durable;
                Ok(())
            }
            Err(e) => {
                // Write-back failed: the pages are marked clean and their data is gone.
                let start = inode
                    .durable
                    .iter()
                    .zip(&inode.data)
                    .take_while(|(a, b)| a == b)
                    .count();
                if start < inode.data.len() {
                    inode.lost.push((start, inode.data.len()));
                }
                Err(e)
            }
        }
    }
}

impl FsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.writes += 1;
        if let Some((n, fault)) = s.fail_write_at {
            if n == s.writes {
                return Err(fault.error());
            }
        }
        s.inode_mut(self.inode)?.data.extend_from_slice(buf);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.sync("sync_data")
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync("sync_all")
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.fs.lock().inode_mut(self.inode)?.data.resize(len, 0);
        Ok(())
    }
}

/// A held [`SimFs`] lock; released on drop.
#[derive(Debug)]
pub struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.path);
    }
}

impl Fs for SimFs {
    type File = SimFile;
    type Lock = SimLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                s.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }
    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut s = self.lock();
        if s.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if !path.parent().is_some_and(|p| s.dirs.contains(p)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        s.next_inode += 1;
        let id = s.next_inode;
        s.inodes.insert(id, Inode::default());
        s.names.insert(path.to_path_buf(), id);
        Ok(SimFile {
            fs: self.clone(),
            inode: id,
            path: path.to_path_buf(),
        })
    }
    fn open_append(&self, path: &Path) -> io::Result<SimFile> {
        let id = self.lock().lookup(path)?;
        Ok(SimFile {
            fs: self.clone(),
            inode: id,
            path: path.to_path_buf(),
        })
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let id = s.lookup(path)?;
        s.inodes
            .get(&id)
            .map(|i| i.data.clone())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.lock();
        let id = s.lookup(path)?;
        let data = &s
            .inodes
            .get(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
            .data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let rest = data.get(start..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        let s = self.lock();
        let id = s.lookup(path)?;
        s.inodes
            .get(&id)
            .map(|i| i.data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let id = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.before_sync(|| format!("sync_dir {}", dir.display()))?;
        if !s.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names.extend(current);
        Ok(())
    }
    fn try_lock(&self, path: &Path) -> io::Result<SimLock> {
        let mut s = self.lock();
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_files_and_bytes_vanish_on_crash() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let a = d.join("a");
        let mut f = fs.create_new(&a).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_all().unwrap();
        // Data durable but the entry is not.
        assert!(fs.crash(Unsynced::Lost).file_bytes(&a).is_none());
        fs.sync_dir(d).unwrap();
        f.write_all(b" world").unwrap();
        assert_eq!(
            fs.crash(Unsynced::Lost).file_bytes(&a).unwrap(),
            b"hello".to_vec()
        );
        assert_eq!(
            fs.crash(Unsynced::KeepPrefix(3)).file_bytes(&a).unwrap(),
            b"hello wo".to_vec()
        );
        assert_eq!(
            fs.crash(Unsynced::Zeroed).file_bytes(&a).unwrap(),
            b"hello\0\0\0\0\0\0".to_vec()
        );
    }

    #[test]
    fn failed_sync_loses_the_data_for_good() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let a = d.join("a");
        let mut f = fs.create_new(&a).unwrap();
        f.write_all(b"one").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(d).unwrap();
        f.write_all(b"two").unwrap();
        fs.fail_sync_after(1, Fault::Eio);
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
        // A retry "succeeds" but the bytes written before the failure never reach the disk.
        f.sync_data().unwrap();
        assert_eq!(
            fs.crash(Unsynced::Lost).file_bytes(&a).unwrap(),
            b"one\0\0\0".to_vec()
        );
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let mut f = fs.create_new(&d.join("t")).unwrap();
        f.write_all(b"x").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(d).unwrap();
        fs.rename(&d.join("t"), &d.join("f")).unwrap();
        let lost = fs.crash(Unsynced::Lost);
        assert!(lost.file_bytes(&d.join("t")).is_some());
        assert!(lost.file_bytes(&d.join("f")).is_none());
        fs.sync_dir(d).unwrap();
        let kept = fs.crash(Unsynced::Lost);
        assert!(kept.file_bytes(&d.join("t")).is_none());
        assert_eq!(kept.file_bytes(&d.join("f")).unwrap(), b"x".to_vec());
    }
}
