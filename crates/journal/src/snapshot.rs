//! Snapshots: opaque engine state at a sequence number, written atomically.
//!
//! File `DIR/snapshots/<seq, 20 digits>.snap`, little endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `KURASNAP` |
//! | 8 | 4 | format version (1) |
//! | 12 | 8 | seq: the last journal record the state includes |
//! | 20 | 32 | chain hash of that record (genesis hash for seq 0) |
//! | 52 | 32 | state hash, as computed by the engine |
//! | 84 | 8 | state length in bytes |
//! | 92 | 32 | SHA-256 over bytes 0..92 and the state |
//! | 124 | n | state |
//!
//! Writing: `<name>.snap.tmp` is created, written, `fsync`ed, renamed to `<name>.snap`, and
//! the directory is `fsync`ed; only then does [`write_snapshot`] return. A crash at any
//! point leaves either no new `.snap` or a complete one (a stale `.tmp` may remain; it is
//! ignored and replaced by the next write).
//!
//! Loading: a damaged snapshot is never skipped silently. [`load_snapshot`] fails with
//! [`JournalError::Corrupt`] naming the file. [`load_newest_valid_snapshot`] returns the
//! newest snapshot that is valid *and* the list of newer ones that were not, so the caller
//! decides whether starting from an older snapshot (and replaying more journal) is
//! acceptable or whether to stop. Since the journal from genesis is the source of truth,
//! falling back is always safe for correctness; it costs replay time and deserves an alert.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::JournalError;
use crate::format::{Head, GENESIS_HASH, HASH_LEN};
use crate::fs::{Fs, FsFile, StdFs};
use crate::read::read_one;

/// Name of the snapshot subdirectory inside the data directory.
pub const SNAPSHOT_SUBDIR: &str = "snapshots";
/// Extension of snapshot files.
pub const SNAPSHOT_EXTENSION: &str = "snap";
/// Suffix of a snapshot being written.
pub const SNAPSHOT_TMP_SUFFIX: &str = ".tmp";
/// Magic bytes at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KURASNAP";
/// Snapshot format version written by this crate.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes before the state.
pub const SNAPSHOT_HEADER_LEN: usize = 124;
/// Largest state a snapshot may hold (it is loaded into memory whole).
pub const MAX_SNAPSHOT_STATE_LEN: u64 = 4 * 1024 * 1024 * 1024;

const OFF_VERSION: usize = 8;
const OFF_SEQ: usize = 12;
const OFF_CHAIN: usize = 20;
const OFF_STATE_HASH: usize = 52;
const OFF_LEN: usize = 84;
const OFF_CHECKSUM: usize = 92;
const _: () = assert!(OFF_CHECKSUM + HASH_LEN == SNAPSHOT_HEADER_LEN);

/// What a snapshot is a snapshot of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last journal record applied to the state (0: the empty state).
    pub seq: u64,
    /// That record's chain hash.
    pub chain_hash: [u8; HASH_LEN],
    /// The engine's hash of the state, checked by the engine after loading.
    pub state_hash: [u8; HASH_LEN],
}

/// A loaded, checksum-verified snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    pub state: Vec<u8>,
}

/// A snapshot file found in the directory (not yet read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub seq: u64,
    pub path: PathBuf,
}

/// A snapshot file that failed validation.
#[derive(Debug)]
pub struct CorruptSnapshot {
    pub path: PathBuf,
    pub error: JournalError,
}

/// Result of [`load_newest_valid_snapshot`].
#[derive(Debug, Default)]
pub struct NewestSnapshot {
    /// The snapshot with the highest seq that is valid, if any.
    pub snapshot: Option<Snapshot>,
    /// Every snapshot newer than it that failed validation, newest first. Non-empty means
    /// damage on disk: log it, alert, and decide whether to fall back.
    pub corrupt: Vec<CorruptSnapshot>,
}

/// How a snapshot relates to the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotCheck {
    /// The journal's record at the snapshot's seq has the snapshot's chain hash.
    Matches,
    /// The journal holds that seq with a different chain hash: the snapshot belongs to
    /// another history (or one of them is damaged).
    ChainHashMismatch { journal_chain_hash: [u8; HASH_LEN] },
    /// The journal ends before the snapshot's seq: journal records are missing (for
    /// example a lost last segment). Never start from such a state.
    BeyondJournalHead { head: Head },
}

/// The file name of the snapshot at `seq`.
pub fn snapshot_file_name(seq: u64) -> String {
    format!("{seq:020}.{SNAPSHOT_EXTENSION}")
}

fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SNAPSHOT_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn encode_header(meta: &SnapshotMeta, state: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut h = [0u8; SNAPSHOT_HEADER_LEN];
    h[..OFF_VERSION].copy_from_slice(&SNAPSHOT_MAGIC);
    h[OFF_VERSION..OFF_SEQ].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    h[OFF_SEQ..OFF_CHAIN].copy_from_slice(&meta.seq.to_le_bytes());
    h[OFF_CHAIN..OFF_STATE_HASH].copy_from_slice(&meta.chain_hash);
    h[OFF_STATE_HASH..OFF_LEN].copy_from_slice(&meta.state_hash);
    h[OFF_LEN..OFF_CHECKSUM].copy_from_slice(&(state.len() as u64).to_le_bytes());
    let checksum = checksum(&h[..OFF_CHECKSUM], state);
    h[OFF_CHECKSUM..].copy_from_slice(&checksum);
    h
}

fn checksum(header: &[u8], state: &[u8]) -> [u8; HASH_LEN] {
    Sha256::new()
        .chain_update(header)
        .chain_update(state)
        .finalize()
        .into()
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

/// Validates a snapshot file's bytes. `path` is for error messages; `name_seq` is the seq
/// from the file name, if known.
fn decode_snapshot(
    path: &Path,
    name_seq: Option<u64>,
    bytes: Vec<u8>,
) -> Result<Snapshot, JournalError> {
    let corrupt = |offset: usize, what: String| {
        JournalError::corrupt(path, offset as u64, name_seq, format!("snapshot: {what}"))
    };
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(corrupt(
            bytes.len(),
            format!(
                "file has {} bytes, shorter than the {SNAPSHOT_HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    if field::<8>(&bytes, 0) != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "bad magic".into()));
    }
    let version = u32::from_le_bytes(field(&bytes, OFF_VERSION));
    if version != SNAPSHOT_VERSION {
        return Err(corrupt(
            OFF_VERSION,
            format!("unsupported version {version} (this build reads {SNAPSHOT_VERSION})"),
        ));
    }
    let state_len = u64::from_le_bytes(field(&bytes, OFF_LEN));
    let actual = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
    if state_len != actual {
        return Err(corrupt(
            OFF_LEN,
            format!("header declares {state_len} state bytes but the file holds {actual}"),
        ));
    }
    let (header, state) = bytes.split_at(SNAPSHOT_HEADER_LEN);
    let stored: [u8; HASH_LEN] = field(header, OFF_CHECKSUM);
    if checksum(header.get(..OFF_CHECKSUM).unwrap_or(&[]), state) != stored {
        return Err(corrupt(
            OFF_CHECKSUM,
            "checksum mismatch: header or state bytes are damaged".into(),
        ));
    }
    let meta = SnapshotMeta {
        seq: u64::from_le_bytes(field(header, OFF_SEQ)),
        chain_hash: field(header, OFF_CHAIN),
        state_hash: field(header, OFF_STATE_HASH),
    };
    if let Some(n) = name_seq {
        if n != meta.seq {
            return Err(corrupt(
                OFF_SEQ,
                format!("header says seq {} but the file name says {n}", meta.seq),
            ));
        }
    }
    let mut state_bytes = bytes;
    state_bytes.drain(..SNAPSHOT_HEADER_LEN);
    Ok(Snapshot {
        path: path.to_path_buf(),
        meta,
        state: state_bytes,
    })
}

/// Writes a snapshot of `state` under `dir/snapshots/` atomically and durably (see the
/// module documentation) and returns its path. An existing snapshot at the same seq is
/// replaced. On failure a partial temporary file may remain; it is never read.
pub fn write_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    state: &[u8],
) -> Result<PathBuf, JournalError> {
    write_snapshot_with(&StdFs, dir, meta, state)
}

/// [`write_snapshot`] through `fs`.
pub fn write_snapshot_with<F: Fs>(
    fs: &F,
    dir: &Path,
    meta: &SnapshotMeta,
    state: &[u8],
) -> Result<PathBuf, JournalError> {
    if state.len() as u64 > MAX_SNAPSHOT_STATE_LEN {
        return Err(JournalError::PayloadTooLarge {
            len: state.len(),
            max: usize::try_from(MAX_SNAPSHOT_STATE_LEN).unwrap_or(usize::MAX),
        });
    }
    let snap_dir = dir.join(SNAPSHOT_SUBDIR);
    match fs.list(&snap_dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs.create_dir_all(&snap_dir)
                .map_err(|e| JournalError::io("create_dir_all", &snap_dir, e))?;
            fs.sync_dir(dir)
                .map_err(|e| JournalError::io("sync_dir", dir, e))?;
        }
        Err(e) => return Err(JournalError::io("list", &snap_dir, e)),
    }
    let name = snapshot_file_name(meta.seq);
    let path = snap_dir.join(&name);
    let tmp = snap_dir.join(format!("{name}{SNAPSHOT_TMP_SUFFIX}"));
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(JournalError::io("remove_file", &tmp, e)),
    }
    let header = encode_header(meta, state);
    let mut file = fs
        .create_new(&tmp)
        .map_err(|e| JournalError::io("create", &tmp, e))?;
    file.write_all(&header)
        .map_err(|e| JournalError::io("write", &tmp, e))?;
    file.write_all(state)
        .map_err(|e| JournalError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| JournalError::io("sync_all", &tmp, e))?;
    drop(file);
    fs.rename(&tmp, &path)
        .map_err(|e| JournalError::io("rename", &tmp, e))?;
    fs.sync_dir(&snap_dir)
        .map_err(|e| JournalError::io("sync_dir", &snap_dir, e))?;
    tracing::info!(file = %path.display(), seq = meta.seq, bytes = state.len(), "snapshot written");
    Ok(path)
}

/// The snapshot files under `dir/snapshots/`, oldest first. Temporary files and foreign
/// names are ignored; a missing directory means no snapshots.
pub fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>, JournalError> {
    list_snapshots_with(&StdFs, dir)
}

/// [`list_snapshots`] through `fs`.
pub fn list_snapshots_with<F: Fs>(fs: &F, dir: &Path) -> Result<Vec<SnapshotFile>, JournalError> {
    let snap_dir = dir.join(SNAPSHOT_SUBDIR);
    let names = match fs.list(&snap_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io("list", &snap_dir, e)),
    };
    let mut files: Vec<SnapshotFile> = names
        .iter()
        .filter_map(|name| {
            parse_snapshot_file_name(name).map(|seq| SnapshotFile {
                seq,
                path: snap_dir.join(name),
            })
        })
        .collect();
    files.sort_by_key(|f| f.seq);
    Ok(files)
}

/// Reads and validates one snapshot file.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, JournalError> {
    load_snapshot_with(&StdFs, path)
}

/// [`load_snapshot`] through `fs`.
pub fn load_snapshot_with<F: Fs>(fs: &F, path: &Path) -> Result<Snapshot, JournalError> {
    let len = fs
        .len(path)
        .map_err(|e| JournalError::io("stat", path, e))?;
    if len > MAX_SNAPSHOT_STATE_LEN + SNAPSHOT_HEADER_LEN as u64 {
        return Err(JournalError::corrupt(
            path,
            0,
            None,
            format!("snapshot file of {len} bytes exceeds the maximum"),
        ));
    }
    let bytes = fs
        .read(path)
        .map_err(|e| JournalError::io("read", path, e))?;
    let name_seq = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_snapshot_file_name);
    decode_snapshot(path, name_seq, bytes)
}

/// The newest valid snapshot under `dir`, plus every newer snapshot that failed validation
/// (see [`NewestSnapshot`]). I/O errors other than damage are returned as errors.
pub fn load_newest_valid_snapshot(dir: &Path) -> Result<NewestSnapshot, JournalError> {
    load_newest_valid_snapshot_with(&StdFs, dir)
}

/// [`load_newest_valid_snapshot`] through `fs`.
pub fn load_newest_valid_snapshot_with<F: Fs>(
    fs: &F,
    dir: &Path,
) -> Result<NewestSnapshot, JournalError> {
    let mut result = NewestSnapshot::default();
    for file in list_snapshots_with(fs, dir)?.into_iter().rev() {
        match load_snapshot_with(fs, &file.path) {
            Ok(snapshot) => {
                result.snapshot = Some(snapshot);
                break;
            }
            Err(error) if error.is_corrupt() => {
                tracing::error!(file = %file.path.display(), %error, "corrupt snapshot");
                result.corrupt.push(CorruptSnapshot {
                    path: file.path,
                    error,
                });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(result)
}

/// Whether the snapshot's `(seq, chain_hash)` is a point of the journal under `dir`.
/// Reads (and validates) the segment that holds `meta.seq`.
pub fn check_snapshot(dir: &Path, meta: &SnapshotMeta) -> Result<SnapshotCheck, JournalError> {
    check_snapshot_with(StdFs, dir, meta)
}

/// [`check_snapshot`] through `fs`.
pub fn check_snapshot_with<F: Fs>(
    fs: F,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<SnapshotCheck, JournalError> {
    if meta.seq == 0 {
        return Ok(if meta.chain_hash == GENESIS_HASH {
            SnapshotCheck::Matches
        } else {
            SnapshotCheck::ChainHashMismatch {
                journal_chain_hash: GENESIS_HASH,
            }
        });
    }
    match read_one(fs, dir, meta.seq)? {
        Ok(record) if record.chain_hash == meta.chain_hash => Ok(SnapshotCheck::Matches),
        Ok(record) => Ok(SnapshotCheck::ChainHashMismatch {
            journal_chain_hash: record.chain_hash,
        }),
        Err(head) => Ok(SnapshotCheck::BeyondJournalHead { head }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_round_trip() {
        let meta = SnapshotMeta {
            seq: 9,
            chain_hash: [1; 32],
            state_hash: [2; 32],
        };
        let state = b"engine state".to_vec();
        let mut bytes = encode_header(&meta, &state).to_vec();
        bytes.extend_from_slice(&state);
        let path = Path::new("x/00000000000000000009.snap");
        let snap = decode_snapshot(path, Some(9), bytes.clone()).unwrap();
        assert_eq!(snap.meta, meta);
        assert_eq!(snap.state, state);
        assert!(decode_snapshot(path, Some(8), bytes).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(snapshot_file_name(5), "00000000000000000005.snap");
        assert_eq!(
            parse_snapshot_file_name("00000000000000000005.snap"),
            Some(5)
        );
        assert_eq!(
            parse_snapshot_file_name("00000000000000000005.snap.tmp"),
            None
        );
        assert_eq!(parse_snapshot_file_name("5.snap"), None);
    }
}
