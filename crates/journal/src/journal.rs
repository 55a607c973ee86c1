//! The writer: recovery at open, group commit, segment rolling, poisoning.
//!
//! Invariants:
//! - `durable` is the head of the last successful [`Journal::commit`]; every record up to it
//!   is on disk and covered by a completed sync (file data, and the directory entry of
//!   every segment holding them).
//! - `pending` is `durable` extended by the `pending_count` records encoded in `buf`.
//! - One commit writes into exactly one segment and syncs it once. A new segment is
//!   started *between commits*, when the current one has reached the size target; so a
//!   segment exceeds the target by less than one batch, a failed commit leaves none of
//!   its records covered by a completed sync, and a segment never exists while the one
//!   before it has an unsynced tail.
//! - A segment receives records only after its header has been written, the file synced
//!   and its directory synced.
//! - After any write or sync error the journal is poisoned and does nothing else.
//! - The steady-state append path does not allocate: `buf` is cleared, never shrunk.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::{
    encode_record, encode_segment_header, Head, RecordRef, SegmentHeader, HASH_LEN,
    MAX_PAYLOAD_LEN, MAX_RECORD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::{Fs, FsFile, StdFs};
use crate::read::{segment_file_name, Scanner, JOURNAL_SUBDIR};

/// Default size after which the writer starts a new segment.
pub const DEFAULT_SEGMENT_TARGET_BYTES: u64 = 64 * 1024 * 1024;

/// Largest allowed segment target. Readers hold one segment in memory at a time.
pub const MAX_SEGMENT_TARGET_BYTES: u64 = 1024 * 1024 * 1024;

/// Default limit on the bytes buffered between two commits. A segment exceeds its target
/// by less than one batch.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Name of the lock file inside the journal directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

const _: () = assert!(DEFAULT_MAX_BATCH_BYTES >= MAX_RECORD_LEN);
const _: () = assert!(DEFAULT_SEGMENT_TARGET_BYTES <= MAX_SEGMENT_TARGET_BYTES);

/// Tunables of the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A new segment is started before the next commit once the current one holds at
    /// least this many bytes. Segments therefore exceed it by less than one batch
    /// (at most `max_batch_bytes`).
    pub segment_target_bytes: u64,
    /// [`Journal::append`] refuses to buffer more than this many encoded bytes between
    /// commits (at least [`MAX_RECORD_LEN`]).
    pub max_batch_bytes: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_target_bytes: DEFAULT_SEGMENT_TARGET_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

impl JournalConfig {
    fn validate(&self) -> Result<(), JournalError> {
        if self.segment_target_bytes == 0 || self.segment_target_bytes > MAX_SEGMENT_TARGET_BYTES {
            return Err(JournalError::Config(format!(
                "segment_target_bytes {} not in 1..={MAX_SEGMENT_TARGET_BYTES}",
                self.segment_target_bytes
            )));
        }
        if self.max_batch_bytes < MAX_RECORD_LEN {
            return Err(JournalError::Config(format!(
                "max_batch_bytes {} is below one maximal record ({MAX_RECORD_LEN})",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }
}

/// What [`Journal::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The durable head after recovery.
    pub head: Head,
    /// True if the journal directory did not exist and was created.
    pub created: bool,
    /// Segment files read (including one removed as incomplete); with an anchor, those
    /// from the segment holding the anchor on.
    pub segments: usize,
    /// Records validated (with an anchor, from the first record of the segment holding
    /// the anchor on).
    pub records: u64,
    /// Bytes of torn, unacknowledged tail removed (0 if none).
    pub truncated_bytes: u64,
    /// Where the removed tail started: the segment file and byte offset.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// True if the removed tail was a whole segment file whose creation never finished.
    pub removed_incomplete_segment: bool,
}

struct OpenSegment<W> {
    file: W,
    path: PathBuf,
    len: u64,
}

/// The journal writer. See the crate documentation for the format and guarantees.
///
/// Dropping a `Journal` discards uncommitted records (they were never acknowledged).
pub struct Journal<F: Fs = StdFs> {
    fs: F,
    dir: PathBuf,
    journal_dir: PathBuf,
    config: JournalConfig,
    durable: Head,
    pending: Head,
    /// Encoded, uncommitted records. Reused across commits (cleared, never shrunk).
    buf: Vec<u8>,
    /// Number of records in `buf`.
    pending_count: usize,
    current: Option<OpenSegment<F::File>>,
    poisoned: Option<String>,
    _lock: F::Lock,
}

impl<F: Fs> fmt::Debug for Journal<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("durable", &self.durable)
            .field("pending", &self.pending)
            .field("current", &self.current.as_ref().map(|c| (&c.path, c.len)))
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Journal<StdFs> {
    /// Opens (creating if needed) the journal under `dir/journal/` on the real file system,
    /// recovering it: see [`Journal::open_with`].
    pub fn open(dir: &Path, config: JournalConfig) -> Result<(Self, Recovery), JournalError> {
        Journal::open_with(StdFs, dir, config)
    }

    /// [`Journal::open_replay_with`] on the real file system.
    pub fn open_replay(
        dir: &Path,
        config: JournalConfig,
        anchor: Head,
        sink: &mut dyn FnMut(RecordRef<'_>) -> Result<(), String>,
    ) -> Result<(Self, Recovery), JournalError> {
        Journal::open_replay_with(StdFs, dir, config, anchor, sink)
    }
}

impl<F: Fs> Journal<F> {
    /// Opens the journal under `dir/journal/` through `fs`.
    ///
    /// Takes an exclusive lock, validates every segment and record, removes a torn tail
    /// (the only repair it makes, logged and reported in [`Recovery`]), and makes what it
    /// found durable (syncs the last segment and the directory) so nothing read during
    /// recovery can vanish later. Any other damage is returned as
    /// [`JournalError::Corrupt`] and nothing is changed.
    pub fn open_with(
        fs: F,
        dir: &Path,
        config: JournalConfig,
    ) -> Result<(Self, Recovery), JournalError> {
        Journal::open_replay_with(fs, dir, config, Head::GENESIS, &mut |_| Ok(()))
    }

    /// Opens the journal for recovery from `anchor` (the newest verified snapshot's seq
    /// and chain hash, or [`Head::GENESIS`]) and hands every record after it to `sink`,
    /// in order, during the same pass that validates them: start-up reads the journal
    /// once.
    ///
    /// What is read and checked:
    /// - from the segment holding `anchor.seq` on (from genesis when that is the first
    ///   segment), everything [`Journal::open_with`] checks, and that the record at
    ///   `anchor.seq` carries `anchor.chain_hash` ([`JournalError::AnchorMismatch`]);
    /// - the segments before it, which the snapshot covers, are not re-hashed: their
    ///   headers are checked, and at every seam between two segments, that the last
    ///   record of one (found from the end of the file) is the record the next one's
    ///   header continues from. A missing, extra, swapped, renamed or truncated segment
    ///   stops the open; damage inside their records is found by [`crate::verify`].
    ///   See `docs/adr/0006-startup-verification.md`.
    ///
    /// `sink` gets only records that passed every check up to them. It can refuse one
    /// (`Err(why)`), which stops the open with [`JournalError::ReplayStopped`] and changes
    /// nothing on disk. If the open fails, records already handed over must be discarded
    /// with whatever was built from them. A journal that ends before `anchor.seq` (after
    /// its torn tail, if any) is [`JournalError::AnchorBeyondHead`] and is not modified:
    /// the snapshot proves records were acknowledged that the journal no longer holds.
    pub fn open_replay_with(
        fs: F,
        dir: &Path,
        config: JournalConfig,
        anchor: Head,
        sink: &mut dyn FnMut(RecordRef<'_>) -> Result<(), String>,
    ) -> Result<(Self, Recovery), JournalError> {
        config.validate()?;
        let journal_dir = dir.join(JOURNAL_SUBDIR);
        let created = match fs.list(&journal_dir) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if anchor.seq > 0 {
                    // A snapshot without its journal: refuse before creating anything.
                    return Err(JournalError::AnchorBeyondHead {
                        seq: anchor.seq,
                        head: Head::GENESIS,
                        file: journal_dir,
                        offset: 0,
                    });
                }
                fs.create_dir_all(&journal_dir)
                    .map_err(|e| JournalError::io("create_dir_all", &journal_dir, e))?;
                fs.sync_dir(dir)
                    .map_err(|e| JournalError::io("sync_dir", dir, e))?;
                // `dir` itself may just have been created too.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs.sync_dir(parent)
                        .map_err(|e| JournalError::io("sync_dir", parent, e))?;
                }
                true
            }
            Err(e) => return Err(JournalError::io("list", &journal_dir, e)),
        };
        let lock_path = journal_dir.join(LOCK_FILE_NAME);
        let lock = fs.try_lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                JournalError::Locked {
                    path: lock_path.clone(),
                }
            } else {
                JournalError::io("lock", &lock_path, e)
            }
        })?;

        let mut scanner = Scanner::anchored(fs.clone(), &journal_dir, anchor)?;
        while let Some(s) = scanner.advance()? {
            if s.seq > anchor.seq {
                sink(scanner.record_ref(&s)).map_err(|why| JournalError::ReplayStopped {
                    seq: s.seq,
                    file: scanner.current_path(),
                    offset: s.offset,
                    why,
                })?;
            }
        }
        let head = scanner.head();
        if head.seq < anchor.seq {
            let (file, offset) = match scanner.last_segment() {
                Some(last) => (last.path.clone(), last.valid_len),
                None => (journal_dir.clone(), 0),
            };
            return Err(JournalError::AnchorBeyondHead {
                seq: anchor.seq,
                head,
                file,
                offset,
            });
        }
        let mut recovery = Recovery {
            head,
            created,
            segments: scanner.segment_count(),
            records: scanner.progress().records,
            truncated_bytes: 0,
            truncated_at: None,
            removed_incomplete_segment: false,
        };

        let mut current: Option<OpenSegment<F::File>> = None;
        if let Some(torn) = scanner.torn_tail() {
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                incomplete_segment = torn.incomplete_segment,
                head_seq = head.seq,
                "journal recovery: removing a torn, never-acknowledged tail"
            );
            recovery.truncated_bytes = torn.bytes;
            recovery.truncated_at = Some((torn.file.clone(), torn.offset));
            recovery.removed_incomplete_segment = torn.incomplete_segment;
            if torn.incomplete_segment {
                fs.remove_file(&torn.file)
                    .map_err(|e| JournalError::io("remove_file", &torn.file, e))?;
            } else {
                let mut file = fs
                    .open_append(&torn.file)
                    .map_err(|e| JournalError::io("open", &torn.file, e))?;
                file.set_len(torn.offset)
                    .map_err(|e| JournalError::io("truncate", &torn.file, e))?;
                current = Some(OpenSegment {
                    file,
                    path: torn.file.clone(),
                    len: torn.offset,
                });
            }
        }
        if current.is_none() {
            if let Some(last) = scanner.last_segment() {
                let file = fs
                    .open_append(&last.path)
                    .map_err(|e| JournalError::io("open", &last.path, e))?;
                current = Some(OpenSegment {
                    file,
                    path: last.path.clone(),
                    len: last.valid_len,
                });
            }
        }
        // Make what recovery accepted durable before anyone acts on it: after a process
        // crash (not a power loss) the last segment's tail may still be only in the page
        // cache, and a segment's directory entry may not have been synced yet.
        if let Some(seg) = current.as_mut() {
            seg.file
                .sync_all()
                .map_err(|e| JournalError::io("sync_all", &seg.path, e))?;
        }
        fs.sync_dir(&journal_dir)
            .map_err(|e| JournalError::io("sync_dir", &journal_dir, e))?;

        tracing::info!(
            dir = %dir.display(),
            head_seq = head.seq,
            segments = recovery.segments,
            created,
            "journal opened"
        );
        let journal = Journal {
            fs,
            dir: dir.to_path_buf(),
            journal_dir,
            config,
            durable: head,
            pending: head,
            buf: Vec::new(),
            pending_count: 0,
            current,
            poisoned: None,
            _lock: lock,
        };
        Ok((journal, recovery))
    }

    /// Buffers one record and returns its sequence number. Nothing is written until
    /// [`Journal::commit`]; the record is not durable (and must not be acknowledged)
    /// before that returns `Ok`.
    ///
    /// Refusals that leave the journal usable: [`JournalError::PayloadTooLarge`],
    /// [`JournalError::BatchFull`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        self.check_poisoned()?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let record_len = RECORD_HEADER_LEN + payload.len();
        if self.buf.len() + record_len > self.config.max_batch_bytes {
            return Err(JournalError::BatchFull {
                pending_bytes: self.buf.len(),
                max: self.config.max_batch_bytes,
            });
        }
        let seq = self
            .pending
            .seq
            .checked_add(1)
            .ok_or_else(|| JournalError::Config("sequence number space exhausted".into()))?;
        let hash = encode_record(&mut self.buf, seq, &self.pending.chain_hash, payload);
        self.pending_count += 1;
        self.pending = Head {
            seq,
            chain_hash: hash,
        };
        Ok(seq)
    }

    /// Writes all buffered records and makes them durable with one `fdatasync` (when a new
    /// segment is started first, its header costs one `fsync` of the file and one of the
    /// directory). Returns the new durable head.
    ///
    /// On any error the journal is poisoned: this call returns the error, every later call
    /// returns [`JournalError::Poisoned`], and the buffered records must be treated as
    /// not written. Never retried (fsyncgate).
    pub fn commit(&mut self) -> Result<Head, JournalError> {
        self.check_poisoned()?;
        if self.pending_count == 0 {
            return Ok(self.durable);
        }
        match self.write_pending() {
            Ok(()) => {
                self.durable = self.pending;
                self.buf.clear();
                self.pending_count = 0;
                Ok(self.durable)
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; journal poisoned");
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Writes the whole batch into one segment (starting a new one first if the current
    /// one has reached the target) and syncs it once. Keeping a commit inside one segment
    /// means a failed commit leaves none of its records behind a completed sync, and a
    /// segment never exists on disk while the one before it has an unsynced tail.
    fn write_pending(&mut self) -> Result<(), JournalError> {
        let target = self.config.segment_target_bytes;
        if self.current.as_ref().is_none_or(|c| c.len >= target) {
            // Close the full segment (its last commit synced it) before creating the next.
            self.current = None;
            self.current =
                Some(self.create_segment(self.durable.seq + 1, self.durable.chain_hash)?);
        }
        let Some(seg) = self.current.as_mut() else {
            // Unreachable: a segment was just ensured above.
            return Err(JournalError::Poisoned {
                cause: "internal: no current segment".into(),
            });
        };
        seg.file
            .write_all(&self.buf)
            .map_err(|e| JournalError::io("write", &seg.path, e))?;
        seg.len += self.buf.len() as u64;
        seg.file
            .sync_data()
            .map_err(|e| JournalError::io("sync_data", &seg.path, e))?;
        Ok(())
    }

    /// Creates a segment whose first record will be `first_seq`: header written, file
    /// synced, directory synced, before any record goes into it.
    fn create_segment(
        &self,
        first_seq: u64,
        prev_chain_hash: [u8; HASH_LEN],
    ) -> Result<OpenSegment<F::File>, JournalError> {
        let path = self.journal_dir.join(segment_file_name(first_seq));
        let header = encode_segment_header(&SegmentHeader {
            first_seq,
            prev_chain_hash,
        });
        let mut file = self
            .fs
            .create_new(&path)
            .map_err(|e| JournalError::io("create", &path, e))?;
        file.write_all(&header)
            .map_err(|e| JournalError::io("write", &path, e))?;
        file.sync_all()
            .map_err(|e| JournalError::io("sync_all", &path, e))?;
        self.fs
            .sync_dir(&self.journal_dir)
            .map_err(|e| JournalError::io("sync_dir", &self.journal_dir, e))?;
        tracing::debug!(file = %path.display(), first_seq, "journal segment created");
        Ok(OpenSegment {
            file,
            path,
            len: SEGMENT_HEADER_LEN as u64,
        })
    }

    fn check_poisoned(&self) -> Result<(), JournalError> {
        match &self.poisoned {
            Some(cause) => Err(JournalError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The durable head: the last record of the last successful commit.
    pub fn head(&self) -> Head {
        self.durable
    }

    /// The head including buffered, uncommitted records.
    pub fn pending_head(&self) -> Head {
        self.pending
    }

    /// Number of buffered, uncommitted records.
    pub fn pending_records(&self) -> usize {
        self.pending_count
    }

    /// Encoded bytes buffered for the next commit.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// True after a write or sync failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The data directory (holding `journal/` and `snapshots/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_can_move_to_the_sequencer_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Journal<StdFs>>();
    }

    #[test]
    fn config_limits() {
        assert!(JournalConfig::default().validate().is_ok());
        let too_big = JournalConfig {
            segment_target_bytes: MAX_SEGMENT_TARGET_BYTES + 1,
            ..JournalConfig::default()
        };
        assert!(too_big.validate().is_err());
        let small_batch = JournalConfig {
            max_batch_bytes: MAX_RECORD_LEN - 1,
            ..JournalConfig::default()
        };
        assert!(small_batch.validate().is_err());
    }
}
