//! The record of what the signer let out: one line per signature,
//! `time_ms batch amount_sat`, appended and flushed to disk before the signed
//! transaction is handed back.
//!
//! `amount_sat` is what that signature added to the batch's outflow (0 for a fee bump
//! or a cancellation of a batch already counted). A last line without its newline is
//! a write torn by a crash before it was flushed, so before the signature was handed
//! back: it is dropped when the file is opened. Any other malformed line is an error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One hour and one day, in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Debug, thiserror::Error)]
pub enum VelocityError {
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path} line {line}: {text:?} is not `time_ms batch amount_sat`")]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub time_ms: u64,
    pub batch: u64,
    pub amount_sat: u64,
}

#[derive(Debug)]
pub struct VelocityLog {
    path: PathBuf,
    file: File,
    /// Bytes of complete lines in the file.
    len: u64,
    entries: Vec<Entry>,
}

fn parse_line(raw: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut fields = text.split(' ').map(|f| f.parse::<u64>().ok());
    let entry = Entry {
        time_ms: fields.next()??,
        batch: fields.next()??,
        amount_sat: fields.next()??,
    };
    fields.next().is_none().then_some(entry)
}

impl VelocityLog {
    /// Open the record at `path`, creating it if missing.
    pub fn open(path: &Path) -> Result<VelocityLog, VelocityError> {
        let io = |e: std::io::Error| VelocityError::Io {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        // One signer per record: a second one would not see the first one's outflow.
        file.try_lock().map_err(|e| VelocityError::Io {
            path: path.to_path_buf(),
            why: format!("in use by another signer: {e}"),
        })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let complete = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(last) => last + 1,
            None => 0,
        };
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let body = &bytes[..complete];
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let mut entries = Vec::new();
        if !body.is_empty() {
            for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
                entries.push(parse_line(raw).ok_or_else(|| VelocityError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: String::from_utf8_lossy(raw).into_owned(),
                })?);
            }
        }
        Ok(VelocityLog {
            path: path.to_path_buf(),
            file,
            len: complete as u64,
            entries,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The outflow recorded within `window_ms` before `now_ms` (and any recorded later).
    pub fn outflow_within(&self, now_ms: u64, window_ms: u64) -> u64 {
        let since = now_ms.saturating_sub(window_ms);
        self.entries
            .iter()
            .filter(|e| e.time_ms > since)
            .fold(0u64, |acc, e| acc.saturating_add(e.amount_sat))
    }

    /// The outflow already counted for `batch`, at any time.
    pub fn counted_for(&self, batch: u64) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.batch == batch)
            .fold(0u64, |acc, e| acc.saturating_add(e.amount_sat))
    }

    /// Append an entry and flush it to disk.
    pub fn append(&mut self, entry: Entry) -> Result<(), VelocityError> {
        let line = format!("{} {} {}\n", entry.time_ms, entry.batch, entry.amount_sat);
        let io = |e: std::io::Error| VelocityError::Io {
            path: self.path.clone(),
            why: e.to_string(),
        };
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial line for the next append to run into.
            let _ = self.file.set_len(self.len);
            return Err(io(e));
        }
        self.len += line.len() as u64;
        self.entries.push(entry);
        Ok(())
    }
}
