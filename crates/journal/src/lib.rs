//! kura's command journal: durable, hash-chained, segmented, with snapshots.
//!
//! The journal is the single source of truth of the exchange. The sequencer appends each
//! command's encoded bytes (opaque here), commits a batch with one `fdatasync`, and only
//! then applies and acknowledges the commands. Replaying the journal from genesis (or from
//! a snapshot) rebuilds the whole state.
//!
//! # Layout on disk
//!
//! ```text
//! DIR/journal/LOCK                          flock(2) held by the one writer
//! DIR/journal/00000000000000000001.seg      records 1 ..
//! DIR/journal/00000000000000041877.seg      records 41877 ..
//! DIR/snapshots/00000000000000040000.snap   state after record 40000
//! ```
//!
//! A segment is named by the first sequence number it holds (20 digits, so names sort in
//! sequence order). It starts with a 56-byte header, then records back to back. All
//! integers are little endian.
//!
//! Segment header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `KURAJSEG` |
//! | 8 | 4 | format version (1) |
//! | 12 | 8 | first sequence number |
//! | 20 | 32 | chain hash of the record before the first one (zeros for seq 1) |
//! | 52 | 4 | CRC32C of bytes 0..52 |
//!
//! Record (48-byte header, then the payload):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `n` (at most [`MAX_PAYLOAD_LEN`]) |
//! | 4 | 4 | CRC32C of bytes 0..4 and 8..48+n (every byte of the record but the CRC) |
//! | 8 | 8 | sequence number: 1, 2, 3, … with no gaps across segments |
//! | 16 | 32 | chain hash = SHA-256(previous chain hash ‖ seq ‖ payload); genesis previous = zeros |
//! | 48 | n | payload |
//!
//! Why: the CRC catches torn and damaged bytes cheaply and locally; the chain hash makes
//! every record commit to the whole history before it (a record copied from elsewhere, a
//! reordering, or a replaced segment breaks it, and the head hash is a short anchor that
//! can be published and checked by outsiders); the segment header repeats the chain so a
//! missing or swapped segment is detected at its boundary. The CRC also covers the length
//! so that a damaged length cannot go unnoticed.
//!
//! # Durability protocol (writer)
//!
//! - [`Journal::append`] only encodes into a reused buffer. [`Journal::commit`] writes the
//!   batch and calls `fdatasync` once; the batch is durable (and may be acknowledged) only
//!   when `commit` returns `Ok`.
//! - A commit writes into one segment. When the current segment has reached the size
//!   target (configurable, default [`DEFAULT_SEGMENT_TARGET_BYTES`]), the next commit first
//!   creates a new segment: header written, file `fsync`ed, directory `fsync`ed, and only
//!   then are records written to it. So a segment that exists after a crash always follows
//!   a complete, synced one, and a failed commit leaves none of its records behind a
//!   completed sync. A segment exceeds the target by less than one batch.
//! - A failed write or sync poisons the journal: that call fails and every later call
//!   returns [`JournalError::Poisoned`]. A failed `fsync` is never retried, since Linux may
//!   already have dropped the data while marking it clean (fsyncgate). Restart and let
//!   recovery read what is really on disk.
//!
//! # Recovery (at open) and reading
//!
//! Every segment header and record is checked: CRCs, file name against header, first seq
//! and previous chain hash of each segment against the end of the one before, sequence
//! contiguity and every chain hash. Exactly one kind of damage is repaired: a **torn
//! tail**, i.e. in the last segment, a record that does not decode, after which no intact
//! record exists at any byte offset up to the end of the file (or a last segment whose
//! header is incomplete and which holds nothing else). Those bytes were never part of a
//! successful commit, so they were never acknowledged; recovery truncates them (or removes
//! the incomplete segment), logs a warning and reports it in [`Recovery`]. Anything else —
//! a bad record with an intact record after it, a damaged record in an earlier segment, a
//! sequence gap, a chain mismatch, a missing, extra or out-of-order segment, a bad header
//! with data after it — is [`JournalError::Corrupt`] naming the file, the byte offset and
//! the sequence number, and nothing is changed. The operator decides (restore from a
//! replica or backup); the journal never silently drops acknowledged records.
//!
//! # Known limitations
//!
//! - Damage to the very last record that makes it look torn (e.g. a flipped bit in its
//!   payload) cannot be told apart from a torn write using the file alone; recovery drops
//!   it. Likewise a lost *last* segment looks like a shorter journal. The defence is an
//!   external anchor: compare the recovered head with the newest snapshot
//!   ([`check_snapshot`] reports [`SnapshotCheck::BeyondJournalHead`]), a replica, or a
//!   published head hash.
//! - Readers hold one segment in memory at a time (segments are at most
//!   [`MAX_SEGMENT_TARGET_BYTES`] plus one batch).
//! - There is no segment pruning yet: the journal always starts at seq 1.
//! - Locking uses `flock(2)` on Unix; on other platforms there is no writer lock.
//!
//! # Testing
//!
//! All file-system access goes through the [`Fs`] trait. With the `fault-injection`
//! feature, `testing::SimFs` fails chosen syncs or writes and models power loss (only
//! synced bytes and dir-synced names survive), which the crash tests use.

mod error;
mod format;
mod fs;
mod journal;
mod read;
mod snapshot;
#[cfg(any(test, feature = "fault-injection"))]
pub mod testing;

pub use error::JournalError;
pub use format::{
    chain_hash, decode_record, decode_record_ref, decode_segment_header, encode_record,
    encode_segment_header, DecodeError, Head, HeaderError, Record, RecordRef, SegmentHeader,
    FORMAT_VERSION, GENESIS_HASH, HASH_LEN, MAX_PAYLOAD_LEN, MAX_RECORD_LEN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
pub use fs::{Fs, FsFile, StdFile, StdFs, StdLock};
pub use journal::{
    Journal, JournalConfig, Recovery, DEFAULT_MAX_BATCH_BYTES, DEFAULT_SEGMENT_TARGET_BYTES,
    LOCK_FILE_NAME, MAX_SEGMENT_TARGET_BYTES,
};
pub use read::{
    parse_segment_file_name, read_records, segment_file_name, verify, verify_with, JournalReader,
    Progress, TornTail, VerifyReport, JOURNAL_SUBDIR, PROGRESS_EVERY_RECORDS, SEGMENT_EXTENSION,
};
pub use snapshot::{
    check_snapshot, check_snapshot_with, list_snapshots, list_snapshots_with,
    load_newest_valid_snapshot, load_newest_valid_snapshot_with, load_snapshot, load_snapshot_with,
    snapshot_file_name, write_snapshot, write_snapshot_with, CorruptSnapshot, NewestSnapshot,
    Snapshot, SnapshotCheck, SnapshotFile, SnapshotMeta, MAX_SNAPSHOT_STATE_LEN,
    SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SNAPSHOT_SUBDIR, SNAPSHOT_VERSION,
};
