//! Byte layouts of segment headers and records, and the pure codec for them.
//!
//! Everything here is a pure function over byte slices: no I/O, no allocation except where
//! an owned [`Record`] is asked for, and no panics on any input (every slice access is
//! bounds-checked by construction or goes through `get`). The layouts are described in the
//! crate documentation and in `docs/adr/0002-journal-format.md`.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use sha2::{Digest, Sha256};

/// Length of a chain hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// The chain hash "before" the first record.
pub const GENESIS_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KURAJSEG";

/// Version of the segment and record layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of a segment header: magic (8), version (4), first seq (8), previous chain hash
/// (32), CRC32C of the preceding 52 bytes (4).
pub const SEGMENT_HEADER_LEN: usize = 56;

/// Bytes of a record header: payload length (4), CRC32C (4), seq (8), chain hash (32).
pub const RECORD_HEADER_LEN: usize = 48;

/// Largest payload one record may carry. An engine command is a few hundred bytes; this
/// leaves room for batched administrative commands while bounding what a corrupt length
/// field can make a reader allocate or skip.
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;

/// Largest encoded record.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_PAYLOAD_LEN;

// Field offsets inside a segment header.
const SEG_VERSION: usize = 8;
const SEG_FIRST_SEQ: usize = 12;
const SEG_PREV_HASH: usize = 20;
const SEG_CRC: usize = 52;

// Field offsets inside a record header.
const REC_LEN: usize = 0;
const REC_CRC: usize = 4;
const REC_SEQ: usize = 8;
const REC_HASH: usize = 16;

const _: () = assert!(SEG_CRC + 4 == SEGMENT_HEADER_LEN);
const _: () = assert!(SEG_PREV_HASH + HASH_LEN == SEG_CRC);
const _: () = assert!(REC_HASH + HASH_LEN == RECORD_HEADER_LEN);
const _: () = assert!(MAX_PAYLOAD_LEN <= u32::MAX as usize);

/// The durable end of the journal: the last record's sequence number and chain hash.
/// `seq == 0` with the genesis hash means "no records".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    pub seq: u64,
    pub chain_hash: [u8; HASH_LEN],
}

impl Head {
    /// The head of an empty journal.
    pub const GENESIS: Head = Head {
        seq: 0,
        chain_hash: GENESIS_HASH,
    };
}

/// One journal record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub chain_hash: [u8; HASH_LEN],
    pub payload: Vec<u8>,
}

/// One journal record borrowed from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub chain_hash: [u8; HASH_LEN],
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    pub fn to_owned_record(&self) -> Record {
        Record {
            seq: self.seq,
            chain_hash: self.chain_hash,
            payload: self.payload.to_vec(),
        }
    }
}

/// Why a byte slice is not one well-formed record. Decoding checks framing and the CRC
/// only; sequence contiguity and the chain hash need context and are checked by readers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The slice ends before the record does (`needed` bytes in all would be required;
    /// for an impossible length this is the length the header declares).
    #[error("record incomplete: {available} bytes available, {needed} needed")]
    Incomplete { available: usize, needed: usize },
    /// The length field exceeds [`MAX_PAYLOAD_LEN`].
    #[error("record payload length {len} exceeds the maximum {MAX_PAYLOAD_LEN}")]
    TooLarge { len: u64 },
    /// The stored CRC does not match the bytes.
    #[error("record CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
}

/// The header at the start of each segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the first record this segment holds (or would hold).
    pub first_seq: u64,
    /// Chain hash of the record before `first_seq` (genesis hash for seq 1).
    pub prev_chain_hash: [u8; HASH_LEN],
}

/// Why a segment header is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("segment header incomplete: {available} of {SEGMENT_HEADER_LEN} bytes")]
    Incomplete { available: usize },
    #[error("segment header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("bad segment magic {found:02x?}")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported segment format version {found} (this build reads {FORMAT_VERSION})")]
    BadVersion { found: u32 },
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes of the chain hash's input before the payload: previous hash and seq.
const CHAIN_PREFIX_LEN: usize = HASH_LEN + 8;

/// Longest payload whose chain hash input, padded, fits in two SHA-256 blocks
/// (the message, the 0x80 byte and the 8-byte length in 128 bytes).
const SHORT_PAYLOAD_MAX: usize = 2 * 64 - 9 - CHAIN_PREFIX_LEN;

/// `SHA-256(prev ‖ seq as u64 little endian ‖ payload)`.
///
/// Most commands are short: for them the padded message (one or two blocks) is built on
/// the stack and compressed directly, which avoids the streaming hasher's buffering (a
/// third of the cost at these sizes). Longer payloads use the streaming hasher. Both
/// give the same digest; the tests compare them for every length around the boundaries.
pub fn chain_hash(prev: &[u8; HASH_LEN], seq: u64, payload: &[u8]) -> [u8; HASH_LEN] {
    if payload.len() > SHORT_PAYLOAD_MAX {
        return chain_hash_streaming(prev, seq, payload);
    }
    let msg_len = CHAIN_PREFIX_LEN + payload.len();
    let mut blocks = [GenericArray::<u8, U64>::default(); 2];
    let [first, second] = &mut blocks;
    first[..HASH_LEN].copy_from_slice(prev);
    first[HASH_LEN..CHAIN_PREFIX_LEN].copy_from_slice(&seq.to_le_bytes());
    // The payload fills the first block, then runs into the second.
    let (head, tail) = payload.split_at(payload.len().min(64 - CHAIN_PREFIX_LEN));
    first[CHAIN_PREFIX_LEN..CHAIN_PREFIX_LEN + head.len()].copy_from_slice(head);
    second[..tail.len()].copy_from_slice(tail);
    let (n_blocks, bit_len) = (if msg_len + 9 <= 64 { 1 } else { 2 }, msg_len as u64 * 8);
    // `as u64` above cannot truncate: msg_len < 128.
    if msg_len < 64 {
        first[msg_len] = 0x80;
    } else {
        second[msg_len - 64] = 0x80;
    }
    let last = if n_blocks == 1 {
        &mut *first
    } else {
        &mut *second
    };
    last[56..].copy_from_slice(&bit_len.to_be_bytes());
    let mut state = SHA256_INIT;
    sha2::compress256(&mut state, &blocks[..n_blocks]);
    let mut out = [0u8; HASH_LEN];
    for (o, word) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// [`chain_hash`] through the streaming hasher (any payload length).
fn chain_hash_streaming(prev: &[u8; HASH_LEN], seq: u64, payload: &[u8]) -> [u8; HASH_LEN] {
    Sha256::new()
        .chain_update(prev)
        .chain_update(seq.to_le_bytes())
        .chain_update(payload)
        .finalize()
        .into()
}

/// Appends one encoded record to `out` and returns its chain hash.
///
/// The caller guarantees `payload.len() <= MAX_PAYLOAD_LEN` (checked in debug builds; the
/// writer checks it before calling).
pub fn encode_record(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; HASH_LEN],
    payload: &[u8],
) -> [u8; HASH_LEN] {
    debug_assert!(
        payload.len() <= MAX_PAYLOAD_LEN,
        "payload over MAX_PAYLOAD_LEN"
    );
    let hash = chain_hash(prev, seq, payload);
    let start = out.len();
    // `as u32` cannot truncate: MAX_PAYLOAD_LEN <= u32::MAX (asserted above).
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&hash);
    out.extend_from_slice(payload);
    let crc = record_crc(&out[start..]);
    out[start + REC_CRC..start + REC_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// CRC32C over the length field and everything after the CRC field of one encoded record.
fn record_crc(record: &[u8]) -> u32 {
    let len_field = record.get(REC_LEN..REC_LEN + 4).unwrap_or(&[]);
    let rest = record.get(REC_SEQ..).unwrap_or(&[]);
    crc32c::crc32c_append(crc32c::crc32c(len_field), rest)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn hash_at(bytes: &[u8], at: usize) -> Option<[u8; HASH_LEN]> {
    bytes.get(at..at.checked_add(HASH_LEN)?)?.try_into().ok()
}

/// The sequence number field of a record header starting at `bytes[0]`, unchecked by CRC.
/// Used only to decide which offsets are worth a full decode when searching for intact
/// records after a damaged one.
pub(crate) fn peek_seq(bytes: &[u8]) -> Option<u64> {
    u64_at(bytes, REC_SEQ)
}

/// The payload length field of a record header starting at `bytes[0]`, unchecked by CRC.
pub(crate) fn peek_len(bytes: &[u8]) -> Option<u32> {
    u32_at(bytes, REC_LEN)
}

/// Decodes the record at the start of `bytes`, borrowing its payload. Returns the record
/// and its encoded length. Never panics.
pub fn decode_record_ref(bytes: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    let Some(len) = u32_at(bytes, REC_LEN) else {
        return Err(DecodeError::Incomplete {
            available: bytes.len(),
            needed: RECORD_HEADER_LEN,
        });
    };
    let len = len as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::TooLarge { len: len as u64 });
    }
    let total = RECORD_HEADER_LEN + len;
    let Some(record) = bytes.get(..total) else {
        return Err(DecodeError::Incomplete {
            available: bytes.len(),
            needed: total,
        });
    };
    let stored = u32_at(record, REC_CRC).unwrap_or_default();
    let computed = record_crc(record);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let seq = u64_at(record, REC_SEQ).unwrap_or_default();
    let chain_hash = hash_at(record, REC_HASH).unwrap_or_default();
    let payload = record.get(RECORD_HEADER_LEN..).unwrap_or(&[]);
    Ok((
        RecordRef {
            seq,
            chain_hash,
            payload,
        },
        total,
    ))
}

/// Decodes the record at the start of `bytes` into an owned [`Record`] and returns it with
/// its encoded length. A pure, total function: it never panics, whatever the input, so it
/// is a fuzzing target. It checks framing and the CRC, not the chain (which needs the
/// previous record).
pub fn decode_record(bytes: &[u8]) -> Result<(Record, usize), DecodeError> {
    decode_record_ref(bytes).map(|(r, n)| (r.to_owned_record(), n))
}

/// Encodes a segment header.
pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[..SEG_VERSION].copy_from_slice(&SEGMENT_MAGIC);
    out[SEG_VERSION..SEG_FIRST_SEQ].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[SEG_FIRST_SEQ..SEG_PREV_HASH].copy_from_slice(&header.first_seq.to_le_bytes());
    out[SEG_PREV_HASH..SEG_CRC].copy_from_slice(&header.prev_chain_hash);
    let crc = crc32c::crc32c(&out[..SEG_CRC]);
    out[SEG_CRC..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the segment header at the start of `bytes`. Never panics.
///
/// The CRC is checked first, so a damaged magic or version reports as a CRC mismatch
/// unless the CRC happens to match (a file of another format or version).
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Incomplete {
            available: bytes.len(),
        });
    };
    let stored = u32_at(h, SEG_CRC).unwrap_or_default();
    let computed = crc32c::crc32c(h.get(..SEG_CRC).unwrap_or(&[]));
    if stored != computed {
        return Err(HeaderError::BadCrc { stored, computed });
    }
    let magic: [u8; 8] = h
        .get(..SEG_VERSION)
        .and_then(|m| m.try_into().ok())
        .unwrap_or_default();
    if magic != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic { found: magic });
    }
    let version = u32_at(h, SEG_VERSION).unwrap_or_default();
    if version != FORMAT_VERSION {
        return Err(HeaderError::BadVersion { found: version });
    }
    Ok(SegmentHeader {
        first_seq: u64_at(h, SEG_FIRST_SEQ).unwrap_or_default(),
        prev_chain_hash: hash_at(h, SEG_PREV_HASH).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut buf = Vec::new();
        let h1 = encode_record(&mut buf, 1, &GENESIS_HASH, b"hello");
        let first_len = buf.len();
        let h2 = encode_record(&mut buf, 2, &h1, b"");
        let (r1, n1) = decode_record(&buf).unwrap();
        assert_eq!(n1, first_len);
        assert_eq!(r1.seq, 1);
        assert_eq!(r1.chain_hash, h1);
        assert_eq!(r1.payload, b"hello");
        let (r2, n2) = decode_record(&buf[n1..]).unwrap();
        assert_eq!(n2, RECORD_HEADER_LEN);
        assert_eq!(r2.chain_hash, h2);
        assert!(r2.payload.is_empty());
    }

    #[test]
    fn chain_hash_matches_definition() {
        let mut input = Vec::new();
        input.extend_from_slice(&[7u8; 32]);
        input.extend_from_slice(&9u64.to_le_bytes());
        input.extend_from_slice(b"abc");
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(chain_hash(&[7u8; 32], 9, b"abc"), expected);
    }

    #[test]
    fn short_path_matches_sha256_at_every_length() {
        // Around one block, two blocks and the switch to the streaming hasher.
        for len in 0..=SHORT_PAYLOAD_MAX + 70 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let prev = [len as u8; 32];
            let seq = 0x0102_0304_0506_0708u64.wrapping_mul(len as u64 + 1);
            let mut input = Vec::new();
            input.extend_from_slice(&prev);
            input.extend_from_slice(&seq.to_le_bytes());
            input.extend_from_slice(&payload);
            let expected: [u8; 32] = Sha256::digest(&input).into();
            assert_eq!(chain_hash(&prev, seq, &payload), expected, "length {len}");
            assert_eq!(chain_hash_streaming(&prev, seq, &payload), expected);
        }
    }

    #[test]
    fn every_record_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, &[3; 32], b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&b).is_err(), "flip of bit {bit} undetected");
        }
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            first_seq: 77,
            prev_chain_hash: [5; 32],
        };
        let bytes = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&bytes), Ok(h));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_segment_header(&b).is_err(), "flip of bit {bit}");
        }
        assert!(matches!(
            decode_segment_header(&bytes[..10]),
            Err(HeaderError::Incomplete { available: 10 })
        ));
    }

    #[test]
    fn impossible_length_is_rejected_without_reading() {
        let mut b = vec![0u8; RECORD_HEADER_LEN];
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_record(&b),
            Err(DecodeError::TooLarge {
                len: u64::from(u32::MAX)
            })
        );
    }
}
