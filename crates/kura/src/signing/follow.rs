//! The books as the journal has them, followed read-only: a separate signer process
//! rebuilds the engine from the journal (from the newest snapshot) and applies what was
//! appended since before each decision, so what it signs is checked against the
//! journaled state, never against what the process asking for a signature claims.

use anyhow::{anyhow, bail, Context, Result};
use kura_engine::{codec, Engine, Limits};
use kura_journal::{JournalReader, StdFs};
use std::path::{Path, PathBuf};

/// An engine kept level with the journal of a data directory.
#[derive(Debug)]
pub struct Follower {
    data: PathBuf,
    engine: Engine,
    /// The last record applied (0: none) and its chain hash.
    seq: u64,
    hash: [u8; 32],
}

impl Follower {
    /// The books of `data` as of now (empty if the node has not written a journal yet).
    pub fn open(data: &Path) -> Result<Follower> {
        let mut follower = Follower {
            data: data.to_path_buf(),
            engine: Engine::new(Limits::DEFAULT),
            seq: 0,
            hash: [0; 32],
        };
        if journal_exists(data) {
            let (engine, seq) = crate::solvency::replay(data, u64::MAX, None, |_, _, _| Ok(()))?;
            follower.engine = engine;
            follower.seq = seq;
            if seq > 0 {
                let mut reader = JournalReader::open_with(StdFs, data, seq)
                    .with_context(|| format!("reading the journal in {}", data.display()))?;
                let record = reader
                    .next()
                    .ok_or_else(|| anyhow!("journal record {seq} vanished"))?
                    .with_context(|| format!("reading journal record {seq}"))?;
                follower.hash = record.chain_hash;
            }
        }
        Ok(follower)
    }

    /// Apply what was appended since the last call; returns how many records. The
    /// record last applied must still be there with the same chain hash: a journal
    /// rewritten under a running signer stops it.
    pub fn catch_up(&mut self) -> Result<u64> {
        if !journal_exists(&self.data) {
            return Ok(0);
        }
        let mut reader = JournalReader::open_with(StdFs, &self.data, self.seq.max(1))
            .with_context(|| format!("reading the journal in {}", self.data.display()))?;
        if self.seq > 0 {
            let record = reader
                .next()
                .ok_or_else(|| anyhow!("the journal no longer has record {}", self.seq))?
                .with_context(|| format!("reading journal record {}", self.seq))?;
            if record.seq != self.seq || record.chain_hash != self.hash {
                bail!(
                    "journal record {} is not the one this signer applied: the journal was rewritten",
                    self.seq
                );
            }
        }
        let mut applied = 0;
        let mut events = Vec::new();
        for record in reader {
            let record =
                record.with_context(|| format!("reading journal record {}", self.seq + 1))?;
            let entry = codec::decode(&record.payload)
                .map_err(|e| anyhow!("journal record {} cannot be decoded: {e}", record.seq))?;
            events.clear();
            let _ = self
                .engine
                .apply(&entry.command, entry.ctx(record.seq), &mut events);
            self.seq = record.seq;
            self.hash = record.chain_hash;
            applied += 1;
        }
        Ok(applied)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The last journal record applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

fn journal_exists(data: &Path) -> bool {
    data.join(kura_journal::JOURNAL_SUBDIR).is_dir()
}
