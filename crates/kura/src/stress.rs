//! `kura debug stress-node`: a node that streams commands through the real sequencer
//! and prints every acknowledgement, for the crash test (kill -9 at random moments,
//! restart, check that every acknowledged command is in the journal exactly once and
//! that recovery gives the state of a full replay).
//!
//! Output, one line each, flushed at once:
//! - `recovered <seq> <state_hash>`: after recovery, before any new command;
//! - `ack <seq> <key>`: command `key` is durable at `seq` (printed after the ack).

use anyhow::{Context, Result};
use clap::Args;
use kura_engine::{genesis, Command};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use kura::drill::{command, USERS};
use kura::node::{internal, recover, Node, NodeConfig};

#[derive(Debug, Args)]
pub struct StressArgs {
    #[arg(long)]
    data: PathBuf,
    /// First key number; keys are unique across restarts when each run starts higher.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Stop after this many commands (default: run until killed).
    #[arg(long)]
    count: Option<u64>,
    /// Commands in flight at once (what makes group commit batch).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Snapshot every N commands.
    #[arg(long, default_value_t = 500)]
    snapshot_every: u64,
}

pub fn run(a: &StressArgs) -> Result<()> {
    let mut config = NodeConfig::new(&a.data);
    config.snapshot_every_commands = a.snapshot_every;
    config.snapshot_every = None;
    let (engine, journal, recovered) = recover(&config, |_| {})?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "recovered {} {}",
        recovered.head.seq,
        hex::encode(engine.state_hash())
    )?;
    out.flush()?;
    let (assets, users) = (engine.asset_count(), engine.user_count() as u32);
    let (node, handle) = Node::start_with(config, engine, journal, recovered)?;
    if assets == 0 {
        for c in genesis::genesis() {
            handle
                .submit_wait(internal(c))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    for _ in users..USERS {
        handle
            .submit_wait(internal(Command::CreateUser))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (tx, rx) = mpsc::channel::<(u64, String)>();
    let end = a.count.map_or(u64::MAX, |c| a.start.saturating_add(c));
    let mut in_flight = 0usize;
    let mut i = a.start;
    loop {
        while in_flight < a.in_flight && i < end {
            let (key, cmd) = command(i);
            let tx = tx.clone();
            handle.submit(
                internal(cmd),
                Box::new(move |r| {
                    let seq = r.map(|ack| ack.seq).unwrap_or(0);
                    let _ = tx.send((seq, key));
                }),
            );
            in_flight += 1;
            i += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (seq, key) = rx.recv().context("acknowledgements stopped")?;
        in_flight -= 1;
        if seq > 0 {
            writeln!(out, "ack {seq} {key}")?;
            out.flush()?;
        }
    }
    drop(handle);
    node.shutdown()?;
    Ok(())
}
