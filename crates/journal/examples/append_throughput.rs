//! Measures journal write throughput: 40-byte payloads, one commit (one fdatasync) per
//! batch of records.
//!
//! ```text
//! cargo run --release -p kura-journal --example append_throughput -- [DIR] [RECORDS] [BATCH]
//! ```
//!
//! DIR defaults to a temporary directory (use a directory on the disk you care about;
//! `/dev/shm` shows the CPU cost alone, without fsync).

use std::path::PathBuf;
use std::time::Instant;

use kura_journal::{Journal, JournalConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf())
        .join(format!("kura-journal-bench-{}", std::process::id()));
    let records: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let batch: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000)
        .max(1);

    let (mut journal, _) = Journal::open(&dir, JournalConfig::default())?;
    let mut payload = [0u8; 40];

    // Appends with a commit (one fdatasync) after every batch.
    let start = Instant::now();
    let mut encoded = 0u64;
    while encoded < records {
        for _ in 0..batch {
            payload[..8].copy_from_slice(&encoded.to_le_bytes());
            journal.append(&payload)?;
            encoded += 1;
        }
        journal.commit()?;
    }
    let total = start.elapsed();
    let micros = total.as_micros().max(1) as u64;
    println!(
        "{records} records of 40 bytes, {batch} per commit, into {}:",
        dir.display()
    );
    println!(
        "  {} records/s, {} commits/s, {} µs per commit",
        records * 1_000_000 / micros,
        records / batch * 1_000_000 / micros,
        micros * batch / records.max(1)
    );

    // Append cost alone (encoding, hashing, buffering), timed apart from the commits.
    let mut append_nanos = 0u128;
    let rounds = 200u64;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            journal.append(&payload)?;
        }
        append_nanos += t.elapsed().as_nanos();
        journal.commit()?;
    }
    let per_append = append_nanos / u128::from(rounds * batch).max(1);
    println!(
        "  append alone: {per_append} ns per record ({} records/s)",
        1_000_000_000 / per_append.max(1)
    );
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
