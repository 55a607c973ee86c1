//! `kura solvency prove | list | proof | verify`: proofs of liabilities for every
//! customer, tied to the last reconciled block and logged in the journal. Formats and
//! files are described in the `kura::solvency` module.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kura::server::admin::{self, Envelope, Request, SolvencyRootJson};
use kura::solvency::{self, ProveOptions, Recorded, SolvencyStore};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Subcommand)]
pub enum SolvencyCommand {
    /// Take an epoch: cut at the last reconciled block, build one por/v1 tree per asset,
    /// journal the roots through the running node, write `DIR/solvency/epochs/<n>/`.
    Prove(ProveArgs),
    /// The published epochs.
    List(ListArgs),
    /// One customer's inclusion proofs (JSON), as `GET /kura/v1/solvency/proof` serves
    /// them.
    Proof(ProofArgs),
    /// Check a proof file against a published report (exit status 0 verified, 1 not).
    Verify(VerifyArgs),
    /// Attach an epoch's finished proof of reserves once the cold wallet's holders have
    /// signed its PSBT (`kura cold sign`, `kura cold finalize --out FILE`): checked
    /// against the epoch's message and coins, then served with the report.
    AttachReserves(AttachArgs),
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// The epoch.
    #[arg(long)]
    epoch: u64,
    /// The finished transaction (hex), as `kura cold finalize --out` wrote it.
    #[arg(long)]
    tx: PathBuf,
    /// The asset whose reserves it proves.
    #[arg(long, default_value = "BTC")]
    asset: String,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The node's data directory (a running `kura serve` journals the roots).
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// Height of every tree (2^D customer slots).
    #[arg(long, default_value_t = solvency::DEFAULT_DEPTH)]
    depth: u32,
    /// Who is acting, for the journal (default: the login name).
    #[arg(long, env = "KURA_OPERATOR")]
    operator: Option<String>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Publish the liabilities only: no BIP-127 proof of reserves (the reconciled
    /// holdings are stated instead).
    #[arg(long)]
    no_reserves: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// The node's data directory.
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// The customer's account id.
    #[arg(long)]
    account: u64,
    /// The epoch (default: the newest).
    #[arg(long)]
    epoch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The proof: what `GET /kura/v1/solvency/proof` or `kura solvency proof` gave, or one
    /// por/v1 inclusion proof.
    #[arg(long)]
    proof: PathBuf,
    /// The published report (`report.json`, or the `report` of `GET /kura/v1/solvency`),
    /// or one por/v1 report.
    #[arg(long)]
    report: PathBuf,
    /// The balance you expect, in the asset's smallest unit (satoshis for BTC).
    #[arg(long)]
    balance: Option<u64>,
    /// Only this asset's proof.
    #[arg(long)]
    asset: Option<String>,
}

pub fn run(cmd: &SolvencyCommand) -> Result<()> {
    match cmd {
        SolvencyCommand::Prove(a) => prove(a),
        SolvencyCommand::List(a) => list(a),
        SolvencyCommand::Proof(a) => proof(a),
        SolvencyCommand::AttachReserves(a) => attach(a),
        SolvencyCommand::Verify(a) => {
            if verify(a)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Journals the roots through the node's admin socket.
fn record_through_admin(
    data: &Path,
    operator: String,
) -> impl FnOnce(u64, Vec<kura_engine::SolvencyRoot>) -> Result<Recorded> + '_ {
    move |epoch, roots| {
        let answer = admin::call(
            data,
            &Envelope {
                operator,
                request: Request::SolvencyRecord {
                    epoch,
                    roots: roots.iter().map(SolvencyRootJson::from_root).collect(),
                },
            },
        )?;
        Ok(Recorded {
            seq: answer["seq"]
                .as_u64()
                .ok_or_else(|| anyhow!("the node answered without a seq: {answer}"))?,
            timestamp_ms: answer["timestamp_ms"].as_u64().unwrap_or(0),
        })
    }
}

fn prove(a: &ProveArgs) -> Result<()> {
    if !admin::socket_path(&a.data).exists() {
        bail!(
            "no running node for {}: `kura solvency prove` journals the roots through \
             `kura serve --data {}`",
            a.data.display(),
            a.data.display()
        );
    }
    let operator = a
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let coins = || kura::reserves::coins_via_admin(&a.data);
    let outcome = solvency::take_epoch(
        &a.data,
        ProveOptions { depth: a.depth },
        now_ms(),
        (!a.no_reserves).then_some(&coins as solvency::CoinSource<'_>),
        record_through_admin(&a.data, operator),
        |msg| spinner.set_message(msg.to_owned()),
    );
    spinner.finish_and_clear();
    let outcome = outcome?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        print!("{}", outcome.summary);
        println!("\nwritten to {}", outcome.dir.display());
    }
    Ok(())
}

fn attach(a: &AttachArgs) -> Result<()> {
    let tx = kura::reserves::read_tx(&a.tx)?;
    let done = solvency::attach_reserves(&a.data, a.epoch, &a.asset, &tx)?;
    println!(
        "epoch {}: the proof of reserves of {} is finished: {} coins, {} sat, every \
         signature valid; written to {}",
        a.epoch,
        a.asset,
        done.coins,
        done.total_sat,
        done.path.display()
    );
    Ok(())
}

fn list(a: &ListArgs) -> Result<()> {
    let store = SolvencyStore::new(&a.data);
    let epochs = store.listing()?;
    if a.json {
        println!("{}", Value::Array(epochs));
        return Ok(());
    }
    if epochs.is_empty() {
        println!("no epoch published yet (`kura solvency prove`)");
    }
    for e in &epochs {
        let assets: Vec<String> = e["assets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{} owed {} reserves {} ({})",
                    x["asset"].as_str().unwrap_or("?"),
                    x["liabilities"].as_str().unwrap_or("?"),
                    x["reserves"].as_str().unwrap_or("-"),
                    x["status"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        println!(
            "epoch {} logged at seq {}: {}",
            e["epoch"],
            e["record_seq"],
            assets.join("; ")
        );
    }
    Ok(())
}

fn proof(a: &ProofArgs) -> Result<()> {
    let store = SolvencyStore::new(&a.data);
    let proofs = store
        .proofs(a.account, a.epoch)?
        .ok_or_else(|| match a.epoch {
            Some(n) => anyhow!("no published epoch {n}"),
            None => anyhow!("no epoch published yet"),
        })?;
    println!("{}", serde_json::to_string_pretty(&proofs)?);
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// Prints what was checked; `Ok(false)` when the proof does not show what it must.
fn verify(a: &VerifyArgs) -> Result<bool> {
    let proof = read_json(&a.proof)?;
    let mut report = read_json(&a.report)?;
    // The public endpoint's answer wraps the report.
    if report.get("report").is_some() && report.get("format").is_none() {
        report = report["report"].clone();
    }
    let checked = match solvency::verify_files(&proof, &report, a.asset.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            println!("REJECTED: {e:#}");
            return Ok(false);
        }
    };
    if a.balance.is_some() && checked.len() != 1 {
        println!("REJECTED: --balance needs exactly one proof: name the asset with --asset");
        return Ok(false);
    }
    let mut ok = true;
    for c in &checked {
        let asset = c.asset.as_deref().unwrap_or("the asset");
        println!(
            "OK: {asset}: account {} ({}), balance {}, is included in total liabilities of {}",
            c.account_id, c.login, c.balance, c.liabilities
        );
        if let Some(expected) = a.balance {
            if expected != c.balance {
                println!(
                    "REJECTED: {asset}: the proof shows balance {}, not {expected}",
                    c.balance
                );
                ok = false;
            }
        }
        match c.reserves {
            Some(r) if c.short => {
                println!(
                    "SHORTFALL: {asset}: liabilities {} exceed the stated reserves {r} by {}",
                    c.liabilities,
                    c.liabilities - r
                );
                ok = false;
            }
            Some(r) => println!(
                "  {asset}: liabilities <= stated reserves {r} (check the report's \
                 reserves_proof.transaction with `kura reserves verify --tx FILE --message \
                 \"{}\"`)",
                c.message
            ),
            None => println!("  {asset}: the report states no reserves"),
        }
    }
    if ok {
        println!(
            "also check that the account id and login are yours and that the report is the \
             one the exchange published (and logged in its audit log at the record's seq)"
        );
    }
    Ok(ok)
}
