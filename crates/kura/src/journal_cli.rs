//! `kura journal verify | dump | head`: offline inspection of a data directory.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kura_engine::{codec, Ctx, Engine, Limits};
use kura_journal::{list_snapshots, load_snapshot, read_records, verify_with, StdFs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Check every record's checksum, the whole hash chain, and every snapshot against a
    /// replay from genesis. Prints the head; exits non-zero naming the fault's location.
    Verify(DataArg),
    /// Print records, one per line.
    Dump(DumpArgs),
    /// Print the head: sequence number and chain hash (the value to publish).
    Head(DataArg),
}

#[derive(Debug, Args)]
pub struct DataArg {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// First sequence number to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last sequence number to print.
    #[arg(long)]
    to: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

pub fn run(cmd: &JournalCommand) -> Result<()> {
    match cmd {
        JournalCommand::Verify(a) => verify(a),
        JournalCommand::Dump(a) => dump(a),
        JournalCommand::Head(a) => head(a),
    }
}

fn head(a: &DataArg) -> Result<()> {
    let report = verify_with(StdFs, &a.data, &mut |_| {})
        .with_context(|| format!("reading the journal in {}", a.data.display()))?;
    print_head(report.head.seq, &report.head.chain_hash, a.json);
    Ok(())
}

fn print_head(seq: u64, chain_hash: &[u8; 32], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"seq": seq, "chain_hash": hex::encode(chain_hash)})
        );
    } else {
        println!("seq {seq}\nchain_hash {}", hex::encode(chain_hash));
    }
}

fn verify(a: &DataArg) -> Result<()> {
    // 1. Checksums and the hash chain, with a progress bar over bytes.
    let progress = bar(0, "checksums");
    let report = verify_with(StdFs, &a.data, &mut |p| {
        progress.set_length(p.bytes_total);
        progress.set_position(p.bytes_done);
    })
    .with_context(|| format!("verifying the journal in {}", a.data.display()))?;
    progress.finish_and_clear();
    // 2. Replay from genesis; at every snapshot's seq the state must be the snapshot's.
    let mut snapshots = BTreeMap::new();
    for s in list_snapshots(&a.data)? {
        let snap =
            load_snapshot(&s.path).with_context(|| format!("snapshot {}", s.path.display()))?;
        snapshots.insert(snap.meta.seq, snap);
    }
    let mut engine = Engine::new(Limits::DEFAULT);
    let mut events = Vec::new();
    let replay = bar(report.head.seq, "replay");
    replay.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut checked = 0usize;
    if let Some(snap) = snapshots.get(&0) {
        bail!("snapshot {} claims seq 0", snap.path.display());
    }
    if report.head.seq > 0 {
        for record in read_records(&a.data, 1)? {
            let record = record?;
            let entry = codec::decode(&record.payload)
                .map_err(|e| anyhow!("record {}: cannot decode: {e}", record.seq))?;
            events.clear();
            let ctx = Ctx {
                seq: record.seq,
                timestamp_ms: entry.ctx_timestamp_ms,
            };
            let _ = engine.apply(&entry.command, ctx, &mut events);
            if let Some(snap) = snapshots.get(&record.seq) {
                if snap.meta.chain_hash != record.chain_hash {
                    bail!(
                        "snapshot {}: chain hash differs from the journal's at seq {}",
                        snap.path.display(),
                        record.seq
                    );
                }
                let mut bytes = Vec::new();
                engine.encode_state(&mut bytes);
                let live: [u8; 32] = Sha256::digest(&bytes).into();
                if live != snap.meta.state_hash || bytes != snap.state {
                    bail!(
                        "snapshot {}: state differs from the replay at seq {}",
                        snap.path.display(),
                        record.seq
                    );
                }
                checked += 1;
            }
            if record.seq % 4096 == 0 {
                replay.set_position(record.seq);
            }
        }
    }
    replay.finish_and_clear();
    if let Some((&seq, snap)) = snapshots.range(report.head.seq + 1..).next() {
        bail!(
            "snapshot {} is at seq {seq}, beyond the journal head {}",
            snap.path.display(),
            report.head.seq
        );
    }
    engine
        .check_invariants()
        .map_err(|e| anyhow!("replayed state breaks an invariant: {e}"))?;
    let state_hash = hex::encode(engine.state_hash());
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true, "seq": report.head.seq,
                "chain_hash": hex::encode(report.head.chain_hash),
                "records": report.head.seq, "snapshots_checked": checked,
                "state_hash": state_hash,
            })
        );
    } else {
        println!(
            "ok: {} records, {checked} snapshots match the replay",
            report.head.seq
        );
        print_head(report.head.seq, &report.head.chain_hash, false);
        println!("state_hash {state_hash}");
    }
    Ok(())
}

fn dump(a: &DumpArgs) -> Result<()> {
    let to = a.to.unwrap_or(u64::MAX);
    for record in read_records(&a.data, a.from.max(1))? {
        let record = record?;
        if record.seq > to {
            break;
        }
        let entry = codec::decode(&record.payload)
            .map_err(|e| anyhow!("record {}: cannot decode: {e}", record.seq))?;
        if a.json {
            println!(
                "{{\"seq\":{},\"chain_hash\":\"{}\",\"entry\":{}}}",
                record.seq,
                hex::encode(record.chain_hash),
                codec::to_json(&entry)
            );
        } else {
            println!(
                "{:>10} {} {}",
                record.seq,
                &hex::encode(record.chain_hash)[..16],
                codec::to_json(&entry)
            );
        }
    }
    Ok(())
}
