//! `kura export` and `kura export verify`: the forensic export of one customer, address
//! or transaction, and its verification. The bundle format is described in the
//! `kura::export` module.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kura::export::{self, ExportOptions, ExportProgress, Phase, Selector};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    command: Option<ExportCommand>,
    /// The node's data directory (read offline; safe while a server runs).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A customer, by name or (all digits) by id.
    #[arg(long, group = "selector")]
    account: Option<String>,
    /// A deposit address (exports its customer) or a withdrawal destination (exports
    /// the withdrawals to it).
    #[arg(long, group = "selector")]
    address: Option<String>,
    /// A transaction id: the deposits from its outputs and the withdrawal batches it
    /// pays or spends.
    #[arg(long, group = "selector")]
    txid: Option<String>,
    /// First record time included: RFC 3339 or unix milliseconds.
    #[arg(long)]
    from: Option<String>,
    /// Last record time included: RFC 3339 or unix milliseconds.
    #[arg(long)]
    to: Option<String>,
    /// The bundle's directory (created; must be new or empty).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prove against the existing checkpoint of this size (default: sign a new one
    /// covering the whole journal).
    #[arg(long)]
    checkpoint: Option<u64>,
    /// Network of the deposit addresses shown (bitcoin, testnet, signet, regtest).
    #[arg(long)]
    network: Option<String>,
    /// Print the export's statistics as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// Check a bundle: the checkpoint's signature, every record's inclusion proof, every
    /// file's SHA-256 and row count, and every row re-derived from the records. Exits
    /// non-zero naming each file, row and column that differs.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The bundle's directory.
    dir: PathBuf,
    /// The operator's verifier key (`NAME+KEYID+KEY`, or a file holding it), obtained
    /// independently of the bundle. Without it the bundle's own key is used, which shows
    /// only that the bundle is self-consistent.
    #[arg(long)]
    key: Option<String>,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    if let Some(ExportCommand::Verify(v)) = &a.command {
        return verify(v);
    }
    let data = a
        .data
        .clone()
        .ok_or_else(|| anyhow!("--data DIR is required"))?;
    let out = a
        .out
        .clone()
        .ok_or_else(|| anyhow!("--out OUTDIR is required"))?;
    let selector = match (&a.account, &a.address, &a.txid) {
        (Some(x), None, None) => Selector::Account(x.clone()),
        (None, Some(x), None) => Selector::Address(x.clone()),
        (None, None, Some(x)) => Selector::Txid(x.clone()),
        _ => bail!("give one of --account, --address or --txid"),
    };
    let opts = ExportOptions {
        data,
        selector,
        from_ms: a.from.as_deref().map(export::parse_time).transpose()?,
        to_ms: a.to.as_deref().map(export::parse_time).transpose()?,
        out,
        checkpoint: a.checkpoint,
        network: a
            .network
            .as_deref()
            .map(export::parse_network)
            .transpose()?,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut phase = None;
    let stats = export::export(&opts, &mut |p: ExportProgress| {
        if phase != Some(p.phase) {
            phase = Some(p.phase);
            bar.reset();
            bar.set_message(match p.phase {
                Phase::Checkpoint => "checkpoint",
                Phase::Resolve => "resolve",
                Phase::Scan => "records",
            });
        }
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    let stats = stats?;
    let secs = stats.elapsed.as_millis().max(1);
    let rate = u128::from(stats.records_scanned) * 1000 / secs;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "records_scanned": stats.records_scanned,
                "records_exported": stats.records_exported,
                "rows_written": stats.rows_written,
                "bytes_written": stats.bytes_written,
                "checkpoint_size": stats.checkpoint_size,
                "elapsed_ms": stats.elapsed.as_millis(),
                "records_per_sec": rate,
                "users": stats.users,
            })
        );
    } else {
        println!(
            "exported {} records and {} rows about user(s) {:?} to {} (journal records \
             1..={} proven against a signed checkpoint; {} records scanned in {} ms, {} \
             records/s)",
            stats.records_exported,
            stats.rows_written,
            stats.users,
            opts.out.display(),
            stats.checkpoint_size,
            stats.records_scanned,
            stats.elapsed.as_millis(),
            rate
        );
    }
    Ok(())
}

fn verify(v: &VerifyArgs) -> Result<()> {
    let report = export::verify(&v.dir, v.key.as_deref())?;
    if !report.ok() {
        for f in &report.failures {
            println!("FAILED: {f}");
        }
        bail!(
            "the bundle in {} does not verify ({} problem(s))",
            v.dir.display(),
            report.failures.len()
        );
    }
    println!(
        "ok: checkpoint of {} ({} records) signed by {}; {} records proven included; {} \
         files match their SHA-256 and row counts; {} rows re-derived from the records",
        report.origin,
        report.checkpoint_size,
        report.key,
        report.records,
        report.files,
        report.rows
    );
    if !report.key_supplied {
        println!(
            "note: the signature was checked with the key the bundle carries, which anyone \
             could have replaced along with the checkpoint. Obtain the operator's verifier \
             key independently (published, or from `kura audit key`) and pass it with \
             --key 'NAME+KEYID+KEY': that is the recommended way."
        );
    }
    Ok(())
}
