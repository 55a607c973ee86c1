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
    chain_hash, decode_record_ref, decode_segment_header, peek_seq, Head, Record, RecordRef,
    GENESIS_HASH, HASH_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
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

/// One validated record located in the scanner's current segment buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scanned {
    pub seq: u64,
    pub chain_hash: [u8; HASH_LEN],
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
#[derive(Debug)]
pub(crate) struct Scanner<F: Fs> {
    fs: F,
    segments: Vec<SegmentFile>,
    idx: usize,
    bytes: Vec<u8>,
    loaded: bool,
    pos: usize,
    /// When starting in a segment other than the first, its header is trusted as the start
    /// of the chain (earlier segments are not read).
    trust_next_header: bool,
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
            bytes: Vec::new(),
            loaded: false,
            pos: 0,
            trust_next_header: start > 0,
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

    pub(crate) fn record_ref(&self, s: &Scanned) -> RecordRef<'_> {
        RecordRef {
            seq: s.seq,
            chain_hash: s.chain_hash,
            payload: self
                .bytes
                .get(s.payload_start..s.payload_end)
                .unwrap_or(&[]),
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
        let within = if self.loaded { self.pos as u64 } else { 0 };
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

    fn current_path(&self) -> PathBuf {
        self.segments
            .get(self.idx)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn is_last(&self) -> bool {
        self.idx + 1 == self.segments.len()
    }

    fn advance_inner(&mut self) -> Result<Option<Scanned>, JournalError> {
        loop {
            if !self.loaded && (self.idx >= self.segments.len() || !self.load_segment()?) {
                return Ok(None);
            }
            if self.pos >= self.bytes.len() {
                self.bytes_done = self.bytes_done.saturating_add(self.bytes.len() as u64);
                self.idx += 1;
                self.loaded = false;
                continue;
            }
            let at = self.pos;
            let rest = self.bytes.get(at..).unwrap_or(&[]);
            match decode_record_ref(rest) {
                Ok((rec, n)) => {
                    if rec.seq != self.expected_seq {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at as u64,
                            Some(self.expected_seq),
                            format!(
                                "record carries seq {} where seq {} must follow \
                                 (misplaced or duplicated record)",
                                rec.seq, self.expected_seq
                            ),
                        ));
                    }
                    let expected_hash = chain_hash(&self.prev_hash, rec.seq, rec.payload);
                    if expected_hash != rec.chain_hash {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at as u64,
                            Some(rec.seq),
                            "chain hash mismatch: the record does not continue the chain \
                             of the record before it",
                        ));
                    }
                    let scanned = Scanned {
                        seq: rec.seq,
                        chain_hash: rec.chain_hash,
                        payload_start: at + RECORD_HEADER_LEN,
                        payload_end: at + n,
                    };
                    self.pos = at + n;
                    self.prev_hash = rec.chain_hash;
                    self.expected_seq = self.expected_seq.checked_add(1).ok_or_else(|| {
                        JournalError::corrupt(
                            self.current_path(),
                            at as u64,
                            Some(rec.seq),
                            "sequence number space exhausted",
                        )
                    })?;
                    self.records += 1;
                    if let Some(last) = self.last_segment.as_mut() {
                        last.valid_len = self.pos as u64;
                    }
                    return Ok(Some(scanned));
                }
                Err(e) => {
                    if !self.is_last() {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at as u64,
                            Some(self.expected_seq),
                            format!(
                                "{e}; a later segment exists, so this is not a torn tail \
                                 and acknowledged records may be damaged"
                            ),
                        ));
                    }
                    if let Some((off, seq)) = find_intact_record(&self.bytes, at + 1) {
                        return Err(JournalError::corrupt(
                            self.current_path(),
                            at as u64,
                            Some(self.expected_seq),
                            format!(
                                "{e}; an intact record (seq {seq}) follows at offset {off}, \
                                 so this is damage in the middle of the journal, not a torn tail"
                            ),
                        ));
                    }
                    self.torn = Some(TornTail {
                        file: self.current_path(),
                        offset: at as u64,
                        bytes: (self.bytes.len() - at) as u64,
                        incomplete_segment: false,
                    });
                    return Ok(None);
                }
            }
        }
    }

    /// Reads and checks the header of segment `idx`. `Ok(false)` if it is the incomplete
    /// last segment (recorded as a torn tail).
    fn load_segment(&mut self) -> Result<bool, JournalError> {
        let Some(seg) = self.segments.get(self.idx).cloned() else {
            return Ok(false);
        };
        let bytes = self
            .fs
            .read(&seg.path)
            .map_err(|e| JournalError::io("read", &seg.path, e))?;
        if !self.trust_next_header && seg.first_seq != self.expected_seq {
            return Err(self.continuity_error(&seg, seg.first_seq, "file name"));
        }
        let header = match decode_segment_header(&bytes) {
            Ok(h) => h,
            Err(e) => {
                if self.is_last() && bytes.len() <= SEGMENT_HEADER_LEN {
                    self.torn = Some(TornTail {
                        file: seg.path,
                        offset: 0,
                        bytes: bytes.len() as u64,
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
        self.bytes = bytes;
        self.pos = SEGMENT_HEADER_LEN;
        self.loaded = true;
        self.last_segment = Some(ScannedSegment {
            path: seg.path,
            valid_len: SEGMENT_HEADER_LEN as u64,
        });
        Ok(true)
    }

    fn continuity_error(&self, seg: &SegmentFile, found: u64, source: &str) -> JournalError {
        let what = if found > self.expected_seq {
            format!(
                "sequence gap: the journal continues at seq {} but this segment's {source} \
                 starts at seq {found} (missing segment?)",
                self.expected_seq
            )
        } else {
            format!(
                "segment's {source} starts at seq {found} but the journal already reached \
                 seq {} (overlapping or out-of-order segment)",
                self.expected_seq.saturating_sub(1)
            )
        };
        JournalError::corrupt(seg.path.clone(), 0, Some(self.expected_seq), what)
    }
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
