//! The journal's error type.
//!
//! Policy: an I/O failure is returned once as [`JournalError::Io`] (naming the operation and
//! path) and poisons the writer, after which every call returns [`JournalError::Poisoned`].
//! Damage found on disk is [`JournalError::Corrupt`], naming the file, the byte offset and,
//! where known, the sequence number; it is never repaired automatically except for the one
//! case the format can prove harmless (a torn tail, see the crate documentation).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An operating-system call failed.
    #[error("journal I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed; the writer accepts nothing more. Restart the process
    /// and let recovery read what is durable (retrying an fsync is unsafe: fsyncgate).
    #[error("journal is poisoned by an earlier failure ({cause}); restart to recover")]
    Poisoned { cause: String },
    /// The bytes on disk are not a valid journal (or snapshot) at this place.
    #[error("corrupt {} at byte offset {offset}{}: {what}", file.display(), SeqSuffix(*seq))]
    Corrupt {
        file: PathBuf,
        offset: u64,
        seq: Option<u64>,
        what: String,
    },
    /// A payload larger than [`crate::MAX_PAYLOAD_LEN`] was offered.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    /// The uncommitted batch already holds `max` bytes; commit before appending more.
    #[error("uncommitted batch is full ({pending_bytes} of at most {max} bytes); commit first")]
    BatchFull { pending_bytes: usize, max: usize },
    /// Another process (or another `Journal` in this one) holds the journal directory.
    #[error("journal directory is locked by another writer ({})", path.display())]
    Locked { path: PathBuf },
    /// A [`crate::JournalConfig`] value is out of range.
    #[error("invalid journal configuration: {0}")]
    Config(String),
    /// The record at an anchor's sequence number (a snapshot's) does not carry the
    /// anchor's chain hash: the snapshot and the journal are not of the same history.
    #[error(
        "the journal's chain hash at seq {seq} ({}, byte offset {offset}) is not the \
         snapshot's: they are not of the same history",
        file.display()
    )]
    AnchorMismatch {
        seq: u64,
        file: PathBuf,
        offset: u64,
    },
    /// An anchor (a snapshot) is beyond the end of the journal: records it covers, which
    /// were acknowledged, are missing.
    #[error(
        "the journal ends at seq {} ({}, byte offset {offset}) but the snapshot is at seq \
         {seq}: acknowledged records are missing from the journal",
        head.seq,
        file.display()
    )]
    AnchorBeyondHead {
        seq: u64,
        head: crate::Head,
        file: PathBuf,
        offset: u64,
    },
    /// The consumer of a recovery replay refused a record (it could not use it); the
    /// journal was left as it was.
    #[error("replay stopped at seq {seq} ({}, byte offset {offset}): {why}", file.display())]
    ReplayStopped {
        seq: u64,
        file: PathBuf,
        offset: u64,
        why: String,
    },
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        seq: Option<u64>,
        what: impl Into<String>,
    ) -> Self {
        JournalError::Corrupt {
            file: file.into(),
            offset,
            seq,
            what: what.into(),
        }
    }

    /// True for damage on disk (as opposed to I/O failures or misuse).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, JournalError::Corrupt { .. })
    }
}

struct SeqSuffix(Option<u64>);

impl fmt::Display for SeqSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(seq) => write!(f, " (seq {seq})"),
            None => Ok(()),
        }
    }
}
