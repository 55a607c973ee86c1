//! Reading and validating segments: the one scanner behind recovery, replay and `verify`.
//!
//! The scanner walks the segment files in sequence order and checks, for each segment, the
//! header CRC, that the file name matches the header, that the header continues the
//! previous segment (first seq and previous chain hash), and for each record its CRC, that
//! its sequence number is the next one, and that its chain hash is
//! `SHA-256(previous chain hash ‖ seq ‖ payload)`.
//!
//! The only damage it does not report as an error is a *torn tail*: in the **last**
//! segment, a record that does not decode (incomplete, impossible length, CRC mismatch)
//! and after which no intact record can be found at any byte offset up to the end of the
//! file; or a last segment whose header is incomplete or invalid and that holds no byte
//! beyond the header. Such bytes were never acknowledged, because a commit is acknowledged
//! only after the sync that covers all of its bytes, and a segment receives records only
//! after its header, file and directory entry are durable. Everything else is
//! [`JournalError::Corrupt`].

use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::{
    chain_hash, decode_record_ref, decode_segment_header, peek_len, peek_seq, DecodeError, Head,
    Record, RecordRef, SegmentHeader, GENESIS_HASH, HASH_LEN, MAX_RECORD_LEN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::fs::{Fs, StdFs};

/// Name of the journal's subdirectory inside the data directory.
pub const JOURNAL_SUBDIR: &str = "journal";

/// Extension of segment files.
pub const SEGMENT_EXTENSION: &str = "seg";

/// Digits in a segment file name (enough for any `u64`).
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// How often (in records) `verify` reports progress within a segment.
pub const PROGRESS_EVERY_RECORDS: u64 = 1 << 16;

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!(
        "{first_seq:0width$}.{SEGMENT_EXTENSION}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Parses a segment file name; `None` if it is not exactly `<20 digits>.seg`.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A segment file found in the journal directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// The first sequence number, from the file name.
    pub first_seq: u64,
}

/// Lists the segment files of `journal_dir`, in sequence order. `Ok(None)` if the directory
/// does not exist. A file ending in `.seg` whose name is not a segment name is corruption
/// (someone put it there, or a name was damaged); other files are ignored.
pub(crate) fn list_segments<F: Fs>(
    fs: &F,
    journal_dir: &Path,
) -> Result<Option<Vec<SegmentFile>>, JournalError> {
    let names = match fs.list(journal_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("list", journal_dir, e)),
    };
    let mut segments = Vec::new();
    for name in names {
        let path = journal_dir.join(&name);
        if let Some(first_seq) = parse_segment_file_name(&name) {
            segments.push(SegmentFile { path, first_seq });
        } else if name.ends_with(&format!(".{SEGMENT_EXTENSION}")) {
            return Err(JournalError::corrupt(
                path,
                0,
                None,
                "file name ends in .seg but is not <20 digits>.seg",
            ));
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(Some(segments))
}

/// Bytes at the end of the journal that recovery drops (or a reader stops before) because
/// they are an unacknowledged, torn write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file holding the torn bytes.
    pub file: PathBuf,
    /// Offset of the first torn byte; the file is valid before it.
    pub offset: u64,
    /// Number of torn bytes (from `offset` to the end of the file).
    pub bytes: u64,
    /// True if the segment's own header is incomplete or invalid: the whole file is the
    /// remnant of a segment creation that did not finish, and recovery removes it.
    pub incomplete_segment: bool,
}

/// Progress of a scan, for progress bars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub records: u64,
}

/// Bytes read from a segment file at a time. Large enough that a read costs little per
/// record, small enough that the buffer stays in the CPU cache while its records are
/// checked (and that memory use does not grow with the segment size).
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Bytes read from the end of a segment at first when looking for its last record
/// (the search widens to one maximal record if the last record is longer).
const PROBE_WINDOW: usize = 64 * 1024;

/// One validated record located in the scanner's current segment buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scanned {
    pub seq: u64,
    pub chain_hash: [u8; HASH_LEN],
    /// Byte offset of the record in its segment file.
    pub offset: u64,
    pub payload_start: usize,
    pub payload_end: usize,
}

/// The last segment that was opened with a valid header, and where its valid bytes end.
#[derive(Clone, Debug)]
pub(crate) struct ScannedSegment {
    pub path: PathBuf,
    pub valid_len: u64,
}

/// Validating walk over the segments. See the module documentation for what is checked.
///
/// A segment is read in chunks of [`READ_CHUNK`] bytes into one reused buffer; a record
/// that straddles two chunks is completed by the next read (the buffer grows to hold the
/// largest record if needed). Only when a record fails to decode in the last segment is
/// the rest of that file read whole, to search it for intact records.
#[derive(Debug)]
pub(crate) struct Scanner<F: Fs> {
    fs: F,
    segments: Vec<SegmentFile>,
    idx: usize,
    /// Bytes `[buf_start, buf_start + filled)` of the current segment.
    buf: Vec<u8>,
    filled: usize,
    buf_start: u64,
    /// Length of the current segment when it was opened (or where it turned out to end).
    seg_len: u64,
    chunk: usize,
    loaded: bool,
    /// Position of the next record in `buf`.
    pos: usize,
    /// When starting in a segment other than the first, its header is trusted as the start
    /// of the chain (earlier segments are not read, or were checked by [`check_covered`]).
    trust_next_header: bool,
    /// A record whose chain hash is known from outside (a snapshot): checked when reached.
    anchor: Option<Head>,
    expected_seq: u64,
    prev_hash: [u8; HASH_LEN],
    bytes_done: u64,
    bytes_total: u64,
    records: u64,
    torn: Option<TornTail>,
    last_segment: Option<ScannedSegment>,
    finished: bool,
}

impl<F: Fs> Scanner<F> {
    /// A scanner starting at the segment that holds `from_seq` (from genesis if that is the
    /// first segment, or `from_seq <= 1`). A missing journal directory reads as empty.
    pub(crate) fn new(fs: F, journal_dir: &Path, from_seq: u64) -> Result<Self, JournalError> {
        let mut segments = list_segments(&fs, journal_dir)?.unwrap_or_default();
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from_seq)
            .unwrap_or(0);
        segments.drain(..start);
        Scanner::over(fs, segments, start > 0, None)
    }

    /// A scanner for recovery from `anchor`, a (seq, chain hash) known to be a point of
    /// the journal (a verified snapshot's). It reads records from the segment holding
    /// `anchor.seq` on (all of them, from genesis, when that is the first segment or the
    /// anchor is seq 0), and fails with [`JournalError::AnchorMismatch`] if the record at
    /// `anchor.seq` does not carry the anchor's chain hash. The segments before it are not
    /// read in full: [`check_covered`] checks their headers and the seam between each two.
    pub(crate) fn anchored(fs: F, journal_dir: &Path, anchor: Head) -> Result<Self, JournalError> {
        if anchor.seq == 0 && anchor.chain_hash != GENESIS_HASH {
            return Err(JournalError::AnchorMismatch {
                seq: 0,
                file: journal_dir.to_path_buf(),
                offset: 0,
            });
        }
        let mut segments = list_segments(&fs, journal_dir)?.unwrap_or_default();
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= anchor.seq)
            .unwrap_or(0);
        if let Some(covered) = segments.get(..=start).filter(|c| c.len() > 1) {
            check_covered(&fs, covered)?;
        }
        segments.drain(..start);
        Scanner::over(fs, segments, start > 0, Some(anchor))
    }

    fn over(
        fs: F,
        segments: Vec<SegmentFile>,
        trust_next_header: bool,
        anchor: Option<Head>,
    ) -> Result<Self, JournalError> {
        let mut bytes_total = 0u64;
        for s in &segments {
            let len = fs
                .len(&s.path)
                .map_err(|e| JournalError::io("stat", &s.path, e))?;
            bytes_total = bytes_total.saturating_add(len);
        }
        Ok(Scanner {
            fs,
            segments,
            idx: 0,
            buf: Vec::new(),
            filled: 0,
            buf_start: 0,
            seg_len: 0,
            chunk: READ_CHUNK,
            loaded: false,
            pos: 0,
            trust_next_header,
            anchor,
            expected_seq: 1,
            prev_hash: GENESIS_HASH,
            bytes_done: 0,
            bytes_total,
            records: 0,
            torn: None,
            last_segment: None,
            finished: false,
        })
    }

    /// Reads segments `chunk` bytes at a time (tests use tiny chunks to make every record
    /// straddle reads).
    #[cfg(test)]
    pub(crate) fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    pub(crate) fn record_ref(&self, s: &Scanned) -> RecordRef<'_> {
        RecordRef {
            seq: s.seq,
            chain_hash: s.chain_hash,
            payload: self.buf.get(s.payload_start..s.payload_end).unwrap_or(&[]),
        }
    }

    /// The head after the last record returned so far.
    pub(crate) fn head(&self) -> Head {
        Head {
            seq: self.expected_seq.saturating_sub(1),
            chain_hash: self.prev_hash,
        }
    }

    pub(crate) fn progress(&self) -> Progress {
        let within = if self.loaded {
            self.buf_start.saturating_add(self.pos as u64)
        } else {
            0
        };
        Progress {
            bytes_done: self.bytes_done.saturating_add(within),
            bytes_total: self.bytes_total,
            records: self.records,
        }
    }

    pub(crate) fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    pub(crate) fn last_segment(&self) -> Option<&ScannedSegment> {
        self.last_segment.as_ref()
    }

    /// Number of segments completely scanned so far.
    pub(crate) fn segments_done(&self) -> usize {
        self.idx
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The next validated record, `Ok(None)` at the end (after a torn tail, if any), or the
    /// first corruption found. After an error or the end it keeps returning `Ok(None)`.
    pub(crate) fn advance(&mut self) -> Result<Option<Scanned>, JournalError> {
        if self.finished {
            return Ok(None);
        }
        let result = self.advance_inner();
        if !matches!(result, Ok(Some(_))) {
            self.finished = true;
        }
        result
    }

    pub(crate) fn current_path(&self) -> PathBuf {
        self.segments
            .get(self.idx)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn is_last(&self) -> bool {
        self.idx + 1 == self.segments.len()
    }

    /// Makes at least `need` bytes available from `pos` on, reading more of the segment,
    /// or as many as the segment has left. Returns the bytes available.
    fn fill(&mut self, need: usize) -> Result<usize, JournalError> {
        let avail = self.filled - self.pos;
        let buf_end = self.buf_start.saturating_add(self.filled as u64);
        if avail >= need || buf_end >= self.seg_len {
            return Ok(avail);
        }
        // Move what is left to the front, then read up to a chunk (or `need`) after it.
        self.buf.copy_within(self.pos..self.filled, 0);
        self.buf_start = self.buf_start.saturating_add(self.pos as u64);
        self.filled = avail;
        self.pos = 0;
        let left_in_file = usize::try_from(self.seg_len - buf_end).unwrap_or(usize::MAX);
        let want = need.max(self.chunk).min(avail.saturating_add(left_in_file));
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let path = self.current_path();
        let target = self.buf.get_mut(avail..want).unwrap_or(&mut []);
        let n = self
            .fs
            .read_at(&path, buf_end, target)
            .map_err(|e| JournalError::io("read", &path, e))?;
        self.filled = avail + n;
        if n < want - avail {
            // The file is shorter than when it was opened: it ends here.
            self.seg_len = buf_end.saturating_add(n as u64);
        }
        Ok(self.filled)
    }

    fn advance_inner(&mut self) -> Result<Option<Scanned>, JournalError> {
        loop {
            if !self.loaded && (self.idx >= self.segments.len() || !self.load_segment()?) {
                return Ok(None);
            }
            let at_file = self.buf_start.saturating_add(self.pos as u64);
            if at_file >= self.seg_len {
                self.bytes_done = self.bytes_done.saturating_add(self.seg_len);
                self.idx += 1;
                self.loaded = false;
                continue;
            }
            let mut avail = self.fill(RECORD_HEADER_LEN)?;
            let mut decoded = decode_record_ref(self.buf.get(self.pos..self.filled).unwrap_or(&[]))
                .map(|(rec, n)| (rec.seq, rec.chain_hash, n));
            if let Err(DecodeError::Incomplete { needed, .. }) = decoded {
                if needed > avail {
                    avail = self.fill(needed)?;
                    decoded = decode_record_ref(self.buf.get(self.pos..self.filled).unwrap_or(&[]))
                        .map(|(rec, n)| (rec.seq, rec.chain_hash, n));
                }
            }
            let _ = avail;
            let at = self.pos;
            match decoded {
                Ok((seq, stored_hash, n)) => {
                    if seq != self.expected_seq {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at_file,
                            Some(self.expected_seq),
                            format!(
                                "record carries seq {seq} where seq {} must follow \
                                 (misplaced or duplicated record)",
                                self.expected_seq
                            ),
                        ));
                    }
                    let payload = self.buf.get(at + RECORD_HEADER_LEN..at + n).unwrap_or(&[]);
                    if chain_hash(&self.prev_hash, seq, payload) != stored_hash {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at_file,
                            Some(seq),
                            "chain hash mismatch: the record does not continue the chain \
                             of the record before it",
                        ));
                    }
                    if self
                        .anchor
                        .is_some_and(|a| a.seq == seq && a.chain_hash != stored_hash)
                    {
                        return Err(JournalError::AnchorMismatch {
                            seq,
                            file: self.current_path(),
                            offset: at_file,
                        });
                    }
                    let scanned = Scanned {
                        seq,
                        chain_hash: stored_hash,
                        offset: at_file,
                        payload_start: at + RECORD_HEADER_LEN,
                        payload_end: at + n,
                    };
                    self.pos = at + n;
                    self.prev_hash = stored_hash;
                    self.expected_seq = self.expected_seq.checked_add(1).ok_or_else(|| {
                        JournalError::corrupt(
                            self.current_path(),
                            at_file,
                            Some(seq),
                            "sequence number space exhausted",
                        )
                    })?;
                    self.records += 1;
                    if let Some(last) = self.last_segment.as_mut() {
                        last.valid_len = at_file.saturating_add(n as u64);
                    }
                    return Ok(Some(scanned));
                }
                Err(e) => return self.damage(e, at_file),
            }
        }
    }

    /// A record at `at_file` of the current segment does not decode: a torn tail (recorded;
    /// the scan ends with `Ok(None)`) or corruption.
    fn damage(&mut self, e: DecodeError, at_file: u64) -> Result<Option<Scanned>, JournalError> {
        if !self.is_last() {
            return Err(JournalError::corrupt(
                self.current_path(),
                at_file,
                Some(self.expected_seq),
                format!(
                    "{e}; a later segment exists, so this is not a torn tail \
                     and acknowledged records may be damaged"
                ),
            ));
        }
        // Everything from the bad record to the end of the file, searched for intact records.
        let path = self.current_path();
        let rest_len = usize::try_from(self.seg_len.saturating_sub(at_file)).unwrap_or(0);
        let mut rest = vec![0u8; rest_len];
        let n = self
            .fs
            .read_at(&path, at_file, &mut rest)
            .map_err(|e| JournalError::io("read", &path, e))?;
        rest.truncate(n);
        if let Some((off, seq)) = find_intact_record(&rest, 1) {
            return Err(JournalError::corrupt(
                path,
                at_file,
                Some(self.expected_seq),
                format!(
                    "{e}; an intact record (seq {seq}) follows at offset {}, \
                     so this is damage in the middle of the journal, not a torn tail",
                    at_file.saturating_add(off as u64)
                ),
            ));
        }
        self.torn = Some(TornTail {
            file: path,
            offset: at_file,
            bytes: n as u64,
            incomplete_segment: false,
        });
        Ok(None)
    }

    /// Opens segment `idx` and checks its header. `Ok(false)` if it is the incomplete
    /// last segment (recorded as a torn tail).
    fn load_segment(&mut self) -> Result<bool, JournalError> {
        let Some(seg) = self.segments.get(self.idx).cloned() else {
            return Ok(false);
        };
        self.seg_len = self
            .fs
            .len(&seg.path)
            .map_err(|e| JournalError::io("stat", &seg.path, e))?;
        self.buf_start = 0;
        self.filled = 0;
        self.pos = 0;
        if !self.trust_next_header && seg.first_seq != self.expected_seq {
            return Err(self.continuity_error(&seg, seg.first_seq, "file name"));
        }
        let avail = self.fill(SEGMENT_HEADER_LEN)?;
        let header = match decode_segment_header(self.buf.get(..avail).unwrap_or(&[])) {
            Ok(h) => h,
            Err(e) => {
                if self.is_last() && self.seg_len <= SEGMENT_HEADER_LEN as u64 {
                    self.torn = Some(TornTail {
                        file: seg.path,
                        offset: 0,
                        bytes: self.seg_len,
                        incomplete_segment: true,
                    });
                    return Ok(false);
                }
                return Err(JournalError::corrupt(
                    seg.path,
                    0,
                    Some(seg.first_seq),
                    format!("bad segment header: {e}"),
                ));
            }
        };
        if header.first_seq != seg.first_seq {
            return Err(JournalError::corrupt(
                seg.path,
                0,
                Some(seg.first_seq),
                format!(
                    "segment header says first seq {} but the file name says {}",
                    header.first_seq, seg.first_seq
                ),
            ));
        }
        if self.trust_next_header {
            self.trust_next_header = false;
            self.expected_seq = header.first_seq;
            self.prev_hash = header.prev_chain_hash;
        } else if header.prev_chain_hash != self.prev_hash {
            return Err(JournalError::corrupt(
                seg.path,
                0,
                Some(seg.first_seq),
                "segment header's previous chain hash does not match the last record before \
                 it (segment replaced or chain broken)",
            ));
        }
        self.pos = SEGMENT_HEADER_LEN;
        self.loaded = true;
        self.last_segment = Some(ScannedSegment {
            path: seg.path,
            valid_len: SEGMENT_HEADER_LEN as u64,
        });
        Ok(true)
    }

    fn continuity_error(&self, seg: &SegmentFile, found: u64, source: &str) -> JournalError {
        continuity_error(seg, self.expected_seq, found, source)
    }
}

/// A segment that does not start where the journal before it ends.
fn continuity_error(
    seg: &SegmentFile,
    expected_seq: u64,
    found: u64,
    source: &str,
) -> JournalError {
    let what = if found > expected_seq {
        format!(
            "sequence gap: the journal continues at seq {expected_seq} but this segment's \
             {source} starts at seq {found} (missing segment?)"
        )
    } else {
        format!(
            "segment's {source} starts at seq {found} but the journal already reached \
             seq {} (overlapping or out-of-order segment)",
            expected_seq.saturating_sub(1)
        )
    };
    JournalError::corrupt(seg.path.clone(), 0, Some(expected_seq), what)
}

/// Reads and checks the header of `seg` (not the last segment: an incomplete header is
/// corruption here).
fn read_header<F: Fs>(fs: &F, seg: &SegmentFile) -> Result<SegmentHeader, JournalError> {
    let mut bytes = [0u8; SEGMENT_HEADER_LEN];
    let n = fs
        .read_at(&seg.path, 0, &mut bytes)
        .map_err(|e| JournalError::io("read", &seg.path, e))?;
    let header = decode_segment_header(bytes.get(..n).unwrap_or(&[])).map_err(|e| {
        JournalError::corrupt(
            seg.path.clone(),
            0,
            Some(seg.first_seq),
            format!("bad segment header: {e}"),
        )
    })?;
    if header.first_seq != seg.first_seq {
        return Err(JournalError::corrupt(
            seg.path.clone(),
            0,
            Some(seg.first_seq),
            format!(
                "segment header says first seq {} but the file name says {}",
                header.first_seq, seg.first_seq
            ),
        ));
    }
    Ok(header)
}

/// The last record of a segment that is not the last one: it must end exactly at the
/// end of the file (every commit into it was completed and synced before the next
/// segment was created). Returns its seq, chain hash and offset. Only the end of the file
/// is read: the record is found by trying each offset, nearest the end first, whose
/// length field makes the record end at the end of the file, until one passes its CRC.
fn last_record<F: Fs>(
    fs: &F,
    seg: &SegmentFile,
) -> Result<(u64, [u8; HASH_LEN], u64), JournalError> {
    let len = fs
        .len(&seg.path)
        .map_err(|e| JournalError::io("stat", &seg.path, e))?;
    let body = len.saturating_sub(SEGMENT_HEADER_LEN as u64);
    for window in [PROBE_WINDOW, MAX_RECORD_LEN] {
        let w = usize::try_from(body).unwrap_or(usize::MAX).min(window);
        let start = len - w as u64;
        let mut bytes = vec![0u8; w];
        let n = fs
            .read_at(&seg.path, start, &mut bytes)
            .map_err(|e| JournalError::io("read", &seg.path, e))?;
        bytes.truncate(n);
        let Some(last_start) = n.checked_sub(RECORD_HEADER_LEN) else {
            break;
        };
        for p in (0..=last_start).rev() {
            let Some(rest) = bytes.get(p..) else { continue };
            if peek_len(rest).is_some_and(|l| RECORD_HEADER_LEN + l as usize == rest.len()) {
                if let Ok((rec, _)) = decode_record_ref(rest) {
                    return Ok((rec.seq, rec.chain_hash, start + p as u64));
                }
            }
        }
        if w as u64 == body {
            break;
        }
    }
    Err(JournalError::corrupt(
        seg.path.clone(),
        len,
        None,
        "the segment does not end with a whole record, and a later segment exists: \
         its end is damaged",
    ))
}

/// Checks the segments before the one recovery starts in (`segments[..last]`, where the
/// last element is that segment) without reading them in full: each header (CRC, magic,
/// version, name), that the first starts the journal at seq 1 on the genesis hash, and
/// at each seam that the segment's last record is the one the next segment's header
/// continues from (seq and chain hash). A missing, extra, swapped, renamed or truncated
/// segment is found; damage inside a segment's records is not (`verify` reads them all).
pub(crate) fn check_covered<F: Fs>(fs: &F, segments: &[SegmentFile]) -> Result<(), JournalError> {
    let Some(first) = segments.first() else {
        return Ok(());
    };
    let header = read_header(fs, first)?;
    if header.first_seq != 1 {
        return Err(continuity_error(first, 1, header.first_seq, "file name"));
    }
    if header.prev_chain_hash != GENESIS_HASH {
        return Err(JournalError::corrupt(
            first.path.clone(),
            0,
            Some(1),
            "the first segment's previous chain hash is not the genesis hash",
        ));
    }
    for pair in segments.windows(2) {
        let [seg, next] = pair else { continue };
        let next_header = read_header(fs, next)?;
        let (seq, hash, offset) = last_record(fs, seg)?;
        if seq < seg.first_seq {
            return Err(JournalError::corrupt(
                seg.path.clone(),
                offset,
                Some(seq),
                format!(
                    "the segment's last record carries seq {seq}, before the segment's \
                     first seq {}",
                    seg.first_seq
                ),
            ));
        }
        let expected = seq.saturating_add(1);
        if next.first_seq != expected {
            return Err(continuity_error(
                next,
                expected,
                next.first_seq,
                "file name",
            ));
        }
        if next_header.prev_chain_hash != hash {
            return Err(JournalError::corrupt(
                next.path.clone(),
                0,
                Some(next.first_seq),
                "segment header's previous chain hash does not match the last record before \
                 it (segment replaced or chain broken)",
            ));
        }
    }
    Ok(())
}

/// Searches `bytes[from..]` for any offset at which a whole record decodes (valid framing
/// and CRC). Returns its offset and seq. Only offsets whose seq field is non-zero and small
/// enough to be a real sequence number are fully decoded, which keeps the search linear in
/// practice (zero-filled or random tails almost never qualify).
fn find_intact_record(bytes: &[u8], from: usize) -> Option<(usize, u64)> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    for p in from..=last_start {
        let rest = bytes.get(p..)?;
        match peek_seq(rest) {
            Some(seq) if seq != 0 && seq < (1 << 48) => {}
            _ => continue,
        }
        if let Ok((rec, _)) = decode_record_ref(rest) {
            return Some((p, rec.seq));
        }
    }
    None
}

/// Iterates validated records from a sequence number on. See [`read_records`].
///
/// If the journal ends in a torn tail the iteration ends before it (as recovery would
/// truncate it); [`JournalReader::torn_tail`] tells. A reader of a journal that a writer is
/// appending to may see records beyond the writer's durable head; stop at
/// [`crate::Journal::head`] if that matters.
#[derive(Debug)]
pub struct JournalReader<F: Fs = StdFs> {
    scanner: Scanner<F>,
    from_seq: u64,
}

impl<F: Fs> JournalReader<F> {
    /// Records with `seq >= from_seq` from the journal in `dir` (the data directory, which
    /// holds `journal/`), read through `fs`. Validation starts at the segment holding
    /// `from_seq`, whose header anchors the chain; use [`verify_with`] to check the whole
    /// chain from genesis.
    pub fn open_with(fs: F, dir: &Path, from_seq: u64) -> Result<Self, JournalError> {
        let journal_dir = dir.join(JOURNAL_SUBDIR);
        // A missing journal directory is an error here (the scanner would read it as empty).
        fs.list(&journal_dir)
            .map_err(|e| JournalError::io("list", &journal_dir, e))?;
        Ok(JournalReader {
            scanner: Scanner::new(fs, &journal_dir, from_seq)?,
            from_seq,
        })
    }

    /// The next record without copying its payload (for replay loops).
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>, JournalError>> {
        loop {
            match self.scanner.advance() {
                Ok(Some(s)) if s.seq < self.from_seq => continue,
                Ok(Some(s)) => return Some(Ok(self.scanner.record_ref(&s))),
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Bytes read so far and in all, for a progress bar.
    pub fn progress(&self) -> Progress {
        self.scanner.progress()
    }

    /// The torn tail the reader stopped before, once the iteration has ended.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.scanner.torn_tail()
    }

    /// The head after the last record read.
    pub fn head(&self) -> Head {
        self.scanner.head()
    }
}

impl<F: Fs> Iterator for JournalReader<F> {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|rec| rec.to_owned_record()))
    }
}

/// Records with `seq >= from_seq` from the journal under `dir`, validated as they are read.
pub fn read_records(dir: &Path, from_seq: u64) -> Result<JournalReader<StdFs>, JournalError> {
    JournalReader::open_with(StdFs, dir, from_seq)
}

/// What [`verify_with`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub head: Head,
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    /// A torn tail that recovery would remove (the journal was not opened since a crash).
    pub torn_tail: Option<TornTail>,
}

/// Checks every segment and record of the journal under `dir` from genesis and returns
/// the head. A torn tail is not an error (recovery would drop it; it was never
/// acknowledged) but is logged; any other damage is.
pub fn verify(dir: &Path) -> Result<Head, JournalError> {
    verify_with(StdFs, dir, &mut |_| {}).map(|r| r.head)
}

/// [`verify`] through `fs`, calling `progress` after each segment and every
/// [`PROGRESS_EVERY_RECORDS`] records.
pub fn verify_with<F: Fs>(
    fs: F,
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifyReport, JournalError> {
    let journal_dir = dir.join(JOURNAL_SUBDIR);
    fs.list(&journal_dir)
        .map_err(|e| JournalError::io("list", &journal_dir, e))?;
    let mut scanner = Scanner::new(fs, &journal_dir, 0)?;
    let mut segments_done = 0;
    while let Some(s) = scanner.advance()? {
        if s.seq % PROGRESS_EVERY_RECORDS == 0 || scanner.segments_done() != segments_done {
            segments_done = scanner.segments_done();
            progress(scanner.progress());
        }
    }
    let mut done = scanner.progress();
    done.bytes_done = done.bytes_total;
    progress(done);
    if let Some(t) = scanner.torn_tail() {
        tracing::warn!(
            file = %t.file.display(),
            offset = t.offset,
            bytes = t.bytes,
            "journal ends in a torn (unacknowledged) tail; recovery will remove it"
        );
    }
    Ok(VerifyReport {
        head: scanner.head(),
        segments: scanner.segment_count(),
        records: scanner.progress().records,
        bytes: scanner.progress().bytes_total,
        torn_tail: scanner.torn_tail().cloned(),
    })
}

/// Reads the one record with sequence number `seq`, validating its segment up to it. If
/// the journal ends before `seq`, returns `None` and the head it ends at.
pub(crate) fn read_one<F: Fs>(
    fs: F,
    dir: &Path,
    seq: u64,
) -> Result<Result<Record, Head>, JournalError> {
    let mut reader = JournalReader::open_with(fs, dir, seq)?;
    match reader.next_ref() {
        Some(Ok(r)) if r.seq == seq => Ok(Ok(r.to_owned_record())),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) | None => Ok(Err(reader.head())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_file_name("00000000000000000001.seg"), Some(1));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000001.snap"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
    }

    /// Everything a scan yields: the records, then how it ended.
    fn scan_all(fs: &crate::testing::SimFs, chunk: usize) -> (Vec<Record>, String) {
        let jdir = Path::new("/d").join(JOURNAL_SUBDIR);
        let mut scanner = Scanner::new(fs.clone(), &jdir, 0)
            .unwrap()
            .with_chunk(chunk);
        let mut records = Vec::new();
        loop {
            match scanner.advance() {
                Ok(Some(s)) => records.push(scanner.record_ref(&s).to_owned_record()),
                Ok(None) => return (records, format!("end {:?}", scanner.torn_tail())),
                Err(e) => return (records, format!("error {e}")),
            }
        }
    }

    #[test]
    fn chunked_reads_give_the_same_records_and_verdicts_at_any_chunk_size() {
        use crate::testing::{SimFs, Unsynced};
        use crate::{Journal, JournalConfig};
        let base = SimFs::new();
        let config = JournalConfig {
            segment_target_bytes: 3_000,
            ..JournalConfig::default()
        };
        let (mut j, _) = Journal::open_with(base.clone(), Path::new("/d"), config).unwrap();
        for i in 0..60u64 {
            // Mostly small payloads, some longer than the smaller chunks and one of 5 kB.
            let len = match i {
                17 => 5_000,
                i if i % 9 == 0 => 300,
                i => (i * 13 % 70) as usize,
            };
            j.append(&vec![i as u8; len]).unwrap();
            if i % 4 == 3 {
                j.commit().unwrap();
            }
        }
        j.commit().unwrap();
        drop(j);
        let last = base
            .paths()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .max()
            .unwrap();
        let first = base
            .paths()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .min()
            .unwrap();
        let last_bytes = base.file_bytes(&last).unwrap();
        let first_bytes = base.file_bytes(&first).unwrap();
        let mut variants: Vec<(PathBuf, Vec<u8>)> = vec![(last.clone(), last_bytes.clone())];
        for cut in [1, 47, 48, 49, 100, 333] {
            let n = last_bytes.len().saturating_sub(cut);
            variants.push((last.clone(), last_bytes[..n].to_vec()));
        }
        for at in [60, 100, 140, 200] {
            for (path, bytes) in [(&last, &last_bytes), (&first, &first_bytes)] {
                if at < bytes.len() {
                    let mut b = bytes.clone();
                    b[at] ^= 0x08;
                    variants.push((path.clone(), b));
                }
            }
        }
        let mut longer = last_bytes.clone();
        longer.extend_from_slice(&[0; 500]);
        variants.push((last.clone(), longer));
        let mut whole = 0;
        for (path, bytes) in variants {
            let fs = base.crash(Unsynced::Lost);
            fs.set_file_bytes(&path, bytes).unwrap();
            let expected = scan_all(&fs, READ_CHUNK);
            whole += usize::from(expected.1 == "end None");
            for chunk in [1, 3, 48, 49, 100, 4_096] {
                assert_eq!(scan_all(&fs, chunk), expected, "chunk {chunk}");
            }
        }
        assert!(whole >= 1, "the undamaged journal scans to its end");
    }

    #[test]
    fn intact_record_search() {
        let mut buf = vec![0u8; 100];
        crate::format::encode_record(&mut buf, 3, &GENESIS_HASH, b"x");
        buf.extend_from_slice(&[0xAB; 10]);
        assert_eq!(find_intact_record(&buf, 0), Some((100, 3)));
        assert_eq!(find_intact_record(&buf, 101), None);
        assert_eq!(find_intact_record(&[], 0), None);
    }
}
