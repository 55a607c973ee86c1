//! `kura audit key | checkpoint | prove-inclusion | verify-consistency |
//! verify-checkpoint`: the signed Merkle audit log over the journal. Formats, files and
//! what each command checks are described in the `kura::audit` module.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kura::audit::{
    self, for_each_leaf, journal_head_extension, list_checkpoints, load_checkpoint, load_key,
    open_checkpoint, parse_verifier, read_leaves, read_note, record_leaf_hash, verified_leaves,
    AuditLock, RootBuilder,
};
use kura_engine::codec;
use kura_journal::{JournalReader, Progress, Record, StdFs};
use kura_proofs::tlog::{self, ConsistencyProofFile, InclusionProofFile};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the node's verifier key (`name+keyid+base64`), creating the signing key
    /// `DIR/audit/node.key` if needed; also written to `DIR/audit/node.pub`.
    Key(DataArg),
    /// Extend the Merkle log to the journal's end and sign a checkpoint of it, written to
    /// `DIR/audit/checkpoints/<size>.txt` and printed. Safe while a server runs.
    Checkpoint(CheckpointArgs),
    /// Print a record, its leaf hash and its inclusion proof against a checkpoint.
    ProveInclusion(ProveArgs),
    /// Prove and check that checkpoint OLD is a prefix of checkpoint NEW.
    VerifyConsistency(ConsistencyArgs),
    /// Check a checkpoint file's signature and that its root is the one of the local
    /// journal's records 1..size (all rehashed from genesis).
    VerifyCheckpoint(VerifyCheckpointArgs),
}

#[derive(Debug, Args)]
pub struct DataArg {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// Read the whole journal from genesis and recompute every cached leaf (by default
    /// only the records from the newest checkpoint on are read).
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The record's sequence number (leaf index + 1).
    seq: u64,
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// The size of the checkpoint to prove against (default: the newest).
    #[arg(long)]
    checkpoint: Option<u64>,
    /// Print the inclusion proof JSON (`InclusionProofFile` and the record).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConsistencyArgs {
    /// The older checkpoint's size.
    old: u64,
    /// The newer checkpoint's size.
    new: u64,
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// Print the consistency proof JSON (`ConsistencyProofFile`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyCheckpointArgs {
    /// The signed checkpoint file.
    file: PathBuf,
    /// The verifier key: a file holding it (such as `node.pub`) or the string itself.
    #[arg(long)]
    key: String,
    /// The data directory whose journal the checkpoint must match.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
}

pub fn run(cmd: &AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Key(a) => key(&a.data),
        AuditCommand::Checkpoint(a) => checkpoint(a),
        AuditCommand::ProveInclusion(a) => prove_inclusion(a),
        AuditCommand::VerifyConsistency(a) => verify_consistency(a),
        AuditCommand::VerifyCheckpoint(a) => verify_checkpoint(a),
    }
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("journal");
    bar
}

fn on_progress(bar: &ProgressBar) -> impl FnMut(Progress) + '_ {
    move |p: Progress| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    }
}

fn key(data: &Path) -> Result<()> {
    let lock = AuditLock::exclusive(data)?;
    let key = audit::load_or_create_key(data, &lock)?;
    println!("{}", key.verifier());
    Ok(())
}

fn checkpoint(a: &CheckpointArgs) -> Result<()> {
    let progress = bar();
    let out = audit::make_checkpoint(&a.data, a.full, &mut on_progress(&progress));
    progress.finish_and_clear();
    let out = out?;
    let cp = &out.signed.checkpoint;
    if out.written {
        eprintln!(
            "checkpoint of {} records written to {} ({} leaves cached before, {} rechecked \
             against the journal, {} new)",
            cp.size,
            out.signed.path.display(),
            out.cached,
            out.rechecked,
            out.appended
        );
    } else {
        eprintln!(
            "no record since the newest checkpoint ({} records, {}; {} leaves rechecked)",
            cp.size,
            out.signed.path.display(),
            out.rechecked
        );
    }
    print!("{}", out.signed.note);
    Ok(())
}

/// Reads the one record `seq`.
fn read_record(data: &Path, seq: u64) -> Result<Record> {
    let mut reader = JournalReader::open_with(StdFs, data, seq)
        .with_context(|| format!("reading the journal in {}", data.display()))?;
    match reader.next() {
        Some(Ok(r)) if r.seq == seq => Ok(r),
        Some(Err(e)) => Err(e).with_context(|| format!("reading record {seq}")),
        Some(Ok(_)) | None => bail!("the journal has no record {seq}"),
    }
}

/// The record as `kura journal dump --json` prints it, plus its payload in hex (the
/// bytes the leaf is computed from). `entry` is null if the payload does not decode.
fn record_json(r: &Record) -> Result<serde_json::Value> {
    let entry = match codec::decode(&r.payload) {
        Ok(e) => serde_json::from_str(&codec::to_json(&e))
            .with_context(|| format!("record {}: rendering as JSON", r.seq))?,
        Err(_) => serde_json::Value::Null,
    };
    Ok(serde_json::json!({
        "seq": r.seq,
        "chain_hash": hex::encode(r.chain_hash),
        "entry": entry,
        "payload": hex::encode(&r.payload),
    }))
}

fn prove_inclusion(a: &ProveArgs) -> Result<()> {
    let _lock = AuditLock::shared(&a.data)?;
    let key = load_key(&a.data)?;
    let size = match a.checkpoint {
        Some(s) => s,
        None => *list_checkpoints(&a.data)?.last().ok_or_else(|| {
            anyhow!("no checkpoint yet: run `kura audit checkpoint --data DIR` first")
        })?,
    };
    let cp = load_checkpoint(&a.data, size, &key)?;
    if a.seq == 0 || a.seq > size {
        bail!(
            "record {} is not covered by the checkpoint of size {size} (records 1..={size})",
            a.seq
        );
    }
    let leaves = verified_leaves(&a.data, &cp)?;
    let record = read_record(&a.data, a.seq)?;
    let index = a.seq - 1;
    let leaf = record_leaf_hash(record.seq, &record.payload);
    let cached = leaves
        .get(usize::try_from(index).map_err(|_| anyhow!("seq too large"))?)
        .copied();
    if cached != Some(leaf) {
        bail!(
            "journal record {} differs from leaf {index} of the signed log: the journal was \
             changed after the checkpoint",
            a.seq
        );
    }
    let path = tlog::inclusion_proof(&leaves, index)
        .ok_or_else(|| anyhow!("no inclusion proof for leaf {index} in a tree of {size}"))?;
    let proof = InclusionProofFile {
        leaf_index: index,
        tree_size: size,
        leaf_hash: leaf,
        root_hash: cp.checkpoint.root,
        path,
    };
    proof
        .verify()
        .map_err(|e| anyhow!("the proof made does not verify: {e}"))?;
    let rec = record_json(&record)?;
    if a.json {
        let mut v = serde_json::to_value(&proof)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("record".into(), rec);
        }
        println!("{v}");
    } else {
        // The record line exactly as `kura journal dump --json` prints it.
        println!(
            "record {{\"seq\":{},\"chain_hash\":\"{}\",\"entry\":{}}}",
            record.seq,
            hex::encode(record.chain_hash),
            codec::decode(&record.payload)
                .map(|e| codec::to_json(&e))
                .unwrap_or_else(|_| "null".into())
        );
        println!("payload {}", hex::encode(&record.payload));
        println!("leaf_index {index}");
        println!("leaf_hash {}", hex::encode(leaf));
        println!("tree_size {size}");
        println!("root_hash {}", hex::encode(cp.checkpoint.root));
        for (i, h) in proof.path.iter().enumerate() {
            println!("path[{i}] {}", hex::encode(h));
        }
        println!("checkpoint {}:", cp.path.display());
        print!("{}", cp.note);
    }
    Ok(())
}

fn verify_consistency(a: &ConsistencyArgs) -> Result<()> {
    if a.old > a.new {
        bail!("OLD ({}) must not be larger than NEW ({})", a.old, a.new);
    }
    let _lock = AuditLock::shared(&a.data)?;
    let key = load_key(&a.data)?;
    let old = load_checkpoint(&a.data, a.old, &key)?;
    let new = load_checkpoint(&a.data, a.new, &key)?;
    let leaves = verified_leaves(&a.data, &new)?;
    let proof = tlog::consistency_proof(&leaves, a.old)
        .ok_or_else(|| anyhow!("no consistency proof from {} to {}", a.old, a.new))?;
    let file = ConsistencyProofFile {
        old_size: a.old,
        new_size: a.new,
        old_root: old.checkpoint.root,
        new_root: new.checkpoint.root,
        proof,
    };
    file.verify().map_err(|e| {
        anyhow!(
            "checkpoint {} is NOT a prefix of checkpoint {}: {e}",
            old.path.display(),
            new.path.display()
        )
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&file)?);
    } else {
        println!(
            "ok: the log of size {} (root {}) is a prefix of the log of size {} (root {}); \
             both checkpoints signed by {}; proof of {} hashes",
            a.old,
            hex::encode(old.checkpoint.root),
            a.new,
            hex::encode(new.checkpoint.root),
            key.name(),
            file.proof.len()
        );
        for (i, h) in file.proof.iter().enumerate() {
            println!("proof[{i}] {}", hex::encode(h));
        }
    }
    Ok(())
}

fn verify_checkpoint(a: &VerifyCheckpointArgs) -> Result<()> {
    let note = read_note(&a.file)?;
    let verifier = parse_verifier(&a.key)?;
    let cp = open_checkpoint(&note, &verifier)
        .with_context(|| format!("{} is not a valid checkpoint", a.file.display()))?;
    let size = cp.size;
    let expected_chain = journal_head_extension(&cp)?;
    let mut builder = RootBuilder::new();
    let progress = bar();
    let head = for_each_leaf(
        &a.data,
        1,
        Some(size),
        &mut on_progress(&progress),
        &mut |seq, chain, leaf| {
            builder.push(leaf);
            if seq == size && expected_chain.is_some_and(|c| c != *chain) {
                bail!(
                    "the journal's chain hash at seq {seq} is not the one the checkpoint \
                     records"
                );
            }
            Ok(())
        },
    );
    progress.finish_and_clear();
    let head = head?;
    if builder.size() < size {
        bail!(
            "the journal ends at seq {} but the checkpoint covers {size} records",
            head.seq
        );
    }
    if builder.root() != cp.root {
        bail!(
            "the checkpoint's root {} is not the root of the journal's records 1..={size} ({})",
            hex::encode(cp.root),
            hex::encode(builder.root())
        );
    }
    let cache = if a.data.join(audit::AUDIT_SUBDIR).is_dir() {
        let _lock = AuditLock::shared(&a.data)?;
        let leaves = read_leaves(&a.data)?;
        match leaves.get(..usize::try_from(size).unwrap_or(usize::MAX)) {
            Some(prefix) if audit::root_of(prefix) != cp.root => bail!(
                "the cached leaves in {} do not give the checkpoint's root (the leaves file \
                 was damaged or edited)",
                a.data.join(audit::AUDIT_SUBDIR).display()
            ),
            Some(_) => "the cached leaves agree",
            None => "the cached leaves do not cover it",
        }
    } else {
        "no cached leaves"
    };
    println!(
        "ok: checkpoint of {} with {size} records, root {}: signature by {} valid; the \
         journal's records 1..={size} give this root; {cache}",
        cp.origin,
        hex::encode(cp.root),
        verifier.name()
    );
    Ok(())
}
