//! The devnet's append-only block file.
//!
//! Layout: the 8-byte magic `KURADEV1`, then records `[kind u8][len u32 LE][payload]
//! [checksum: first 4 bytes of double-SHA256 over kind and payload]`. Kind 1 is a connected
//! block (consensus encoding), kind 2 the disconnection of the tip (its 32-byte hash). Each
//! append is fsynced before the devnet reports the change. At start every record is
//! replayed through full validation; a damaged or incomplete final record (a crash during
//! its write, never reported) is cut off, damage anywhere else is an error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{Block, BlockHash};

use super::DevnetError;

const MAGIC: &[u8; 8] = b"KURADEV1";
const KIND_BLOCK: u8 = 1;
const KIND_DISCONNECT: u8 = 2;
/// Larger than any valid block's serialization.
const MAX_PAYLOAD: u32 = 8_000_000;

/// One change to the active chain.
#[derive(Debug)]
pub(crate) enum Record {
    Block(Block),
    Disconnect(BlockHash),
}

#[derive(Debug)]
pub(crate) struct BlockFile {
    file: File,
    path: PathBuf,
}

fn checksum(kind: u8, payload: &[u8]) -> [u8; 4] {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(kind);
    data.extend_from_slice(payload);
    let h = sha256d::Hash::hash(&data);
    let b = h.to_byte_array();
    [b[0], b[1], b[2], b[3]]
}

impl BlockFile {
    /// Opens (or creates) the block file and reads its records.
    pub(crate) fn open(path: &Path) -> Result<(BlockFile, Vec<Record>), DevnetError> {
        let io = |e: std::io::Error| DevnetError::Io(format!("{}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        if data.is_empty() {
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
            return Ok((
                BlockFile {
                    file,
                    path: path.to_path_buf(),
                },
                Vec::new(),
            ));
        }
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(DevnetError::Corrupt(format!(
                "{}: not a kura devnet block file",
                path.display()
            )));
        }
        let mut records = Vec::new();
        let mut pos = MAGIC.len();
        while pos < data.len() {
            match parse_record(&data[pos..]) {
                Ok((rec, used)) => {
                    records.push(rec);
                    pos += used;
                }
                Err(Damage::Incomplete) => {
                    tracing::warn!(
                        file = %path.display(),
                        offset = pos,
                        "devnet block file ends in an incomplete record; cutting it off"
                    );
                    truncate(&mut file, pos as u64).map_err(io)?;
                    break;
                }
                Err(Damage::Bad(what, len)) => {
                    if pos + len >= data.len() {
                        tracing::warn!(
                            file = %path.display(),
                            offset = pos,
                            "devnet block file's final record is damaged ({what}); cutting it off"
                        );
                        truncate(&mut file, pos as u64).map_err(io)?;
                        break;
                    }
                    return Err(DevnetError::Corrupt(format!(
                        "{}: damaged record at byte {pos}: {what}",
                        path.display()
                    )));
                }
            }
        }
        Ok((
            BlockFile {
                file,
                path: path.to_path_buf(),
            },
            records,
        ))
    }

    /// Appends a record and fsyncs it.
    pub(crate) fn append(&mut self, rec: &Record) -> Result<(), DevnetError> {
        let (kind, payload) = match rec {
            Record::Block(b) => (KIND_BLOCK, serialize(b)),
            Record::Disconnect(h) => (KIND_DISCONNECT, h.to_byte_array().to_vec()),
        };
        let len =
            u32::try_from(payload.len()).map_err(|_| DevnetError::Io("record too large".into()))?;
        let mut buf = Vec::with_capacity(payload.len() + 9);
        buf.push(kind);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(&checksum(kind, &payload));
        let io = |e: std::io::Error| DevnetError::Io(format!("{}: {e}", self.path.display()));
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

fn truncate(file: &mut File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.seek(SeekFrom::End(0))?;
    file.sync_all()
}

enum Damage {
    Incomplete,
    /// What is wrong, and how many bytes the record claimed.
    Bad(&'static str, usize),
}

fn parse_record(data: &[u8]) -> Result<(Record, usize), Damage> {
    if data.len() < 5 {
        return Err(Damage::Incomplete);
    }
    let kind = data[0];
    let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    if len > MAX_PAYLOAD {
        return Err(Damage::Bad("record length out of range", data.len()));
    }
    let len = len as usize;
    let total = 5 + len + 4;
    if data.len() < total {
        return Err(Damage::Incomplete);
    }
    let payload = &data[5..5 + len];
    if data[5 + len..total] != checksum(kind, payload) {
        return Err(Damage::Bad("checksum mismatch", total));
    }
    let rec = match kind {
        KIND_BLOCK => Record::Block(
            deserialize(payload).map_err(|_| Damage::Bad("undecodable block", total))?,
        ),
        KIND_DISCONNECT => Record::Disconnect(
            BlockHash::from_slice(payload).map_err(|_| Damage::Bad("bad block hash", total))?,
        ),
        _ => return Err(Damage::Bad("unknown record kind", total)),
    };
    Ok((rec, total))
}
