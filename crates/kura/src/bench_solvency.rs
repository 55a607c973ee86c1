//! `kura bench solvency`: what proofs of solvency and the audit log cost at scale.
//!
//! Two phases, in process, on synthetic data:
//!
//! 1. **Liabilities tree** (`kura_proofs::por`): `--customers` accounts with
//!    pseudo-random balances in a por/v1 tree of height `--depth` (default 20: 1,048,576
//!    slots, so a million customers fit). Reported: the build time (per-user keys,
//!    user ids, padding, sorting, every level), the size of one inclusion proof as the
//!    customer downloads it (JSON bytes, and the `D × 40` bytes of its siblings), and the
//!    time to verify one proof (median and p99 over `--proofs` customers picked at
//!    random; the customer's own check: path, root and `is_for`).
//! 2. **Audit log** (`kura_proofs::tlog::MerkleLog`): `--records` synthetic leaf hashes
//!    (default 100,000,000; they stand for the journal's records, which need not exist
//!    to time the tree) appended to the in-memory log (64 bytes per leaf: 6.4 GB at
//!    100M). Reported: the append time; the checkpoint root computed by streaming every
//!    leaf from scratch (what `kura audit checkpoint --full` and `verify-checkpoint` do,
//!    `O(log n)` memory) and from the built log (`root_at`, what a running checkpoint
//!    costs once the leaves are cached); and inclusion proofs: time to make one
//!    (median, p99 over `--proofs` random leaves), the longest one's size, and the time
//!    to verify one.
//!
//! 3. **Forensic export** (`kura::export`): a fresh data directory gets a journal of
//!    `--export-records` commands (deposits and orders of eight customers, streamed
//!    through the real sequencer with group commit, as `kura debug stress-node` does);
//!    then one customer's bundle is exported exactly as `kura export --account` makes
//!    it: a signed checkpoint over the whole journal, a replay of every record, the
//!    customer's records and tables, an inclusion proof per exported record.
//!    `export_records_per_s` is journal records scanned per second of the whole export
//!    (signing included); `export.*` gives the parts. `--export-records 0` skips it.
//!
//! Timings are wall clock on a machine that may be shared (`machine.loadavg_at_start`).

use crate::bench_api::{loadavg, nanos, progress};
use anyhow::{anyhow, Result};
use clap::Args;
use kura_proofs::por::{self, Epoch, LiabilityTree, MAX_SAT};
use kura_proofs::tlog::{self, MerkleLog};
use kura_proofs::Hash;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct SolvencyArgs {
    /// Print one JSON object on stdout instead of pretty JSON.
    #[arg(long)]
    json: bool,
    /// Customers in the liabilities tree.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    customers: u64,
    /// Height of the liabilities tree.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=32))]
    depth: u32,
    /// Records (leaves) of the audit log.
    #[arg(long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    /// Journal records behind the export phase (0: skip it).
    #[arg(long, default_value_t = 200_000)]
    export_records: u64,
    /// Proofs made and verified per phase.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    proofs: u32,
}

/// A small fast generator (SplitMix64) for synthetic data: no cryptographic quality
/// needed, and the same run every time.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hash(&mut self) -> Hash {
        let mut h = [0u8; 32];
        for chunk in h.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

/// Milliseconds with three decimals, for reporting only.
#[allow(clippy::float_arithmetic)]
fn ms(d: Duration) -> f64 {
    let v = d.as_secs_f64() * 1_000.0;
    (v * 1_000.0).round() / 1_000.0
}

/// Median and p99 (nearest rank) of `samples`, in microseconds.
fn percentiles_us(mut samples: Vec<u64>) -> Value {
    samples.sort_unstable();
    let at = |p: usize| -> Value {
        if samples.is_empty() {
            return Value::Null;
        }
        let rank = (samples.len() * p).div_ceil(100).max(1) - 1;
        let ns = samples[rank.min(samples.len() - 1)];
        #[allow(clippy::float_arithmetic)]
        let us = (ns as f64 / 1_000.0 * 100.0).round() / 100.0;
        json!(us)
    };
    json!({ "p50": at(50), "p99": at(99), "samples": samples.len() })
}

fn tree_phase(a: &SolvencyArgs) -> Result<Value> {
    let slots = 1u64 << a.depth;
    if a.customers > slots {
        return Err(anyhow!(
            "{} customers do not fit a tree of height {} ({slots} slots)",
            a.customers,
            a.depth
        ));
    }
    let mut mix = Mix(1);
    let per_customer_max = MAX_SAT / a.customers;
    let logins: Vec<String> = (0..a.customers).map(|i| format!("customer{i}")).collect();
    let accounts: Vec<(u64, &str, u64)> = logins
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                i as u64,
                l.as_str(),
                mix.next() % per_customer_max.min(10_000_000_000),
            )
        })
        .collect();
    let epoch = Epoch {
        ledger_seq: 1_000_000,
        block_height: 900_000,
        block_hash: mix.hash(),
    };
    let bar = progress(1, "tree");
    let started = Instant::now();
    let tree = LiabilityTree::build(&epoch, &mix.hash(), &mix.hash(), a.depth, &accounts)
        .map_err(|e| anyhow!("building the tree: {e}"))?;
    let build = started.elapsed();
    bar.finish_and_clear();
    let root = tree.root();
    let report = tree.report(&epoch, Some(root.sum));
    let epoch_id = epoch.epoch_id();

    let bar = progress(u64::from(a.proofs), "por proofs");
    let mut make = Vec::new();
    let mut check = Vec::new();
    let mut json_bytes = 0usize;
    for _ in 0..a.proofs {
        let (id, login, balance) = accounts[(mix.next() % a.customers) as usize];
        let t = Instant::now();
        let proof = tree
            .proof(id)
            .ok_or_else(|| anyhow!("no proof for account {id}"))?;
        make.push(nanos(t.elapsed()));
        json_bytes = serde_json::to_vec(&proof)?.len();
        let t = Instant::now();
        por::verify(&proof, &epoch_id, a.depth, &root).map_err(|e| anyhow!("account {id}: {e}"))?;
        report
            .check(&proof)
            .map_err(|e| anyhow!("account {id}: {e}"))?;
        if !proof.is_for(id, login, balance) {
            return Err(anyhow!("account {id}: the proof is not about it"));
        }
        check.push(nanos(t.elapsed()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(json!({
        "customers": a.customers,
        "depth": a.depth,
        "slots": slots,
        "build_ms": ms(build),
        "root_sum": root.sum,
        "proof_bytes_json": json_bytes,
        "proof_bytes_siblings": a.depth * 40,
        "proof_make_us": percentiles_us(make),
        "proof_verify_us": percentiles_us(check),
    }))
}

fn log_phase(a: &SolvencyArgs) -> Result<Value> {
    let n = a.records;
    let mut mix = Mix(2);
    let bar = progress(n, "log append");
    let started = Instant::now();
    let mut log = MerkleLog::new();
    for i in 0..n {
        log.append(mix.hash());
        if i % 1_000_000 == 0 {
            bar.set_position(i);
        }
    }
    let append = started.elapsed();
    bar.finish_and_clear();

    // The checkpoint root from scratch: every leaf streamed through a stack of perfect
    // subtree roots (the leaves regenerated: same sequence).
    let bar = progress(n, "root stream");
    let mut mix = Mix(2);
    let started = Instant::now();
    let mut stack: Vec<(u32, Hash)> = Vec::with_capacity(64);
    for i in 0..n {
        let mut node = (0u32, mix.hash());
        while let Some(&(level, left)) = stack.last() {
            if level != node.0 {
                break;
            }
            stack.pop();
            node = (level + 1, tlog::node_hash(&left, &node.1));
        }
        stack.push(node);
        if i % 1_000_000 == 0 {
            bar.set_position(i);
        }
    }
    let mut it = stack.iter().rev();
    let mut streamed = it.next().map_or(tlog::EMPTY_ROOT, |s| s.1);
    for (_, left) in it {
        streamed = tlog::node_hash(left, &streamed);
    }
    let stream = started.elapsed();
    bar.finish_and_clear();

    let started = Instant::now();
    let root = log
        .root_at(n)
        .ok_or_else(|| anyhow!("no root at size {n}"))?;
    let root_cached = started.elapsed();
    if root != streamed {
        return Err(anyhow!("the streamed root differs from the log's"));
    }

    let bar = progress(u64::from(a.proofs), "log proofs");
    let mut make = Vec::new();
    let mut check = Vec::new();
    let mut hashes = 0usize;
    for _ in 0..a.proofs {
        let index = mix.next() % n;
        let t = Instant::now();
        let path = log
            .inclusion_proof(index, n)
            .ok_or_else(|| anyhow!("no proof for leaf {index}"))?;
        make.push(nanos(t.elapsed()));
        hashes = hashes.max(path.len());
        let leaf = log.leaf(index).ok_or_else(|| anyhow!("no leaf {index}"))?;
        let t = Instant::now();
        tlog::verify_inclusion(&leaf, index, n, &path, &root)
            .map_err(|e| anyhow!("leaf {index}: {e:?}"))?;
        check.push(nanos(t.elapsed()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(json!({
        "records": n,
        "memory_bytes_approx": n * 64,
        "append_ms": ms(append),
        "checkpoint_root_streamed_ms": ms(stream),
        "checkpoint_root_cached_us": root_cached.as_micros() as u64,
        "inclusion_proof_hashes": hashes,
        "inclusion_proof_bytes": hashes * 32,
        "inclusion_proof_make_us": percentiles_us(make),
        "inclusion_proof_verify_us": percentiles_us(check),
    }))
}

/// Streams `n` commands through a node in `data` (genesis, eight customers, then
/// `kura::drill::command`s), 256 in flight.
fn write_journal(data: &std::path::Path, n: u64) -> Result<()> {
    use kura::node::{internal, Node, NodeConfig};
    use kura_engine::{genesis, Command};
    let mut config = NodeConfig::new(data);
    config.snapshot_every = None;
    config.snapshot_every_commands = 0;
    let (node, handle) = Node::start(config)?;
    let wait = |c: Command| {
        handle
            .submit_wait(internal(c))
            .map_err(|e| anyhow!("{e}"))
            .and_then(|ack| ack.result.map_err(|r| anyhow!("refused: {r}")))
    };
    for c in genesis::genesis() {
        wait(c)?;
    }
    for _ in 0..kura::drill::USERS {
        wait(Command::CreateUser)?;
    }
    let bar = progress(n, "journal");
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let mut in_flight = 0usize;
    let mut i = 0u64;
    while i < n || in_flight > 0 {
        while in_flight < 256 && i < n {
            let tx = tx.clone();
            handle.submit(
                internal(kura::drill::command(i).1),
                Box::new(move |r| {
                    let _ = tx.send(r.is_ok());
                }),
            );
            in_flight += 1;
            i += 1;
        }
        if !rx
            .recv()
            .map_err(|_| anyhow!("the node stopped acknowledging"))?
        {
            return Err(anyhow!("the node failed a command"));
        }
        in_flight -= 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(handle);
    node.shutdown()?;
    Ok(())
}

fn export_phase(a: &SolvencyArgs) -> Result<Value> {
    use kura::export::{export, ExportOptions, Selector};
    let tmp = crate::bench_journal::TempDir::new(&std::env::temp_dir(), "export")?;
    let data = tmp.0.join("data");
    let started = Instant::now();
    write_journal(&data, a.export_records)?;
    let journal_s = started.elapsed();
    let options = ExportOptions {
        data: data.clone(),
        selector: Selector::Account("0".into()),
        from_ms: None,
        to_ms: None,
        out: tmp.0.join("bundle"),
        checkpoint: None,
        network: None,
    };
    let bar = progress(0, "export");
    let stats = export(&options, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    })?;
    bar.finish_and_clear();
    #[allow(clippy::float_arithmetic)]
    let rate = (stats.records_scanned as f64 / stats.elapsed.as_secs_f64().max(1e-9)).round();
    Ok(json!({
        "records_per_s": rate,
        "journal_records": stats.checkpoint_size,
        "records_scanned": stats.records_scanned,
        "records_exported": stats.records_exported,
        "rows_written": stats.rows_written,
        "bytes_written": stats.bytes_written,
        "export_ms": ms(stats.elapsed),
        "journal_write_ms": ms(journal_s),
    }))
}

pub fn run(a: &SolvencyArgs) -> Result<()> {
    let load_at_start = loadavg();
    let started = Instant::now();
    eprintln!(
        "liabilities tree: {} customers, height {} ...",
        a.customers, a.depth
    );
    let tree = tree_phase(a)?;
    eprintln!("audit log: {} records ...", a.records);
    let log = log_phase(a)?;
    let export = if a.export_records > 0 {
        eprintln!(
            "forensic export: one customer of a {}-record journal ...",
            a.export_records
        );
        export_phase(a)?
    } else {
        Value::Null
    };
    let out = json!({
        "benchmark": "solvency",
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "loadavg_at_start": load_at_start,
        },
        "liabilities_tree": tree,
        "audit_log": log,
        "export_records_per_s": export["records_per_s"],
        "export": export,
        "elapsed_s": started.elapsed().as_secs(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
