//! The `kura` binary: command-line interface and wiring.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod admin_cli;
mod audit_cli;
mod bench_api;
mod bench_core;
mod bench_custody;
mod bench_journal;
mod bench_overload;
mod bench_solvency;
mod cold_cli;
mod custody_cli;
mod demo;
mod devnet_cli;
mod ec_stream;
mod export_cli;
mod journal_cli;
mod reserves_cli;
mod serve_cli;
mod signer_cli;
mod solvency_cli;
mod stress;
mod trace_cli;

/// kura: a self-hostable Bitcoin spot exchange.
#[derive(Debug, Parser)]
#[command(name = "kura", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the exchange: journal, sequencer, read model, REST API, admin socket.
    Serve(serve_cli::ServeArgs),
    /// Run a demo exchange with live markets and print a ready API key and a CCXT snippet.
    Demo(demo::DemoArgs),
    /// Operator actions against a running server (customers, keys, credits, halts,
    /// withdrawals held for review).
    Admin(admin_cli::AdminArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Rebuild the read model (SQLite) from the journal. The server must be stopped.
    Reindex {
        #[arg(long, env = "KURA_DATA", default_value = "kura-data")]
        data: std::path::PathBuf,
    },
    /// Benchmarks: each prints one JSON object on stdout (with --json) and progress on
    /// stderr.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect a node's journal offline: verify, dump, head.
    #[command(subcommand)]
    Journal(journal_cli::JournalCommand),
    /// Drive the built-in devnet of a running node (`kura serve --chain devnet`).
    #[command(subcommand_required = true)]
    Devnet {
        /// The node's data directory.
        #[arg(long, env = "KURA_DATA")]
        data: std::path::PathBuf,
        #[command(subcommand)]
        command: devnet_cli::DevnetCommand,
    },
    /// The signed Merkle audit log over the journal: key, checkpoints, inclusion and
    /// consistency proofs.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
    /// Forensic export of one customer, address or transaction, proven against a signed
    /// checkpoint of the audit log; `kura export verify DIR` checks a bundle.
    Export(export_cli::ExportArgs),
    /// The custody layer of a running node: chain, wallets, holdings, reconciliation.
    #[command(subcommand)]
    Custody(custody_cli::CustodyCommand),
    /// The cold wallet's ceremony: review and sign a refill PSBT offline with one key,
    /// then combine the signed copies, finalize and broadcast.
    #[command(subcommand)]
    Cold(cold_cli::ColdCommand),
    /// Proof of reserves (BIP-127): prove every coin of a running node under a message,
    /// and verify a finished proof against the chain.
    #[command(subcommand)]
    Reserves(reserves_cli::ReservesCommand),
    /// Follow coins forward from a transaction or an outpoint, hop by hop, to where they
    /// are now: writes trace.json, trace.dot and trace.svg, our addresses labelled.
    Trace(trace_cli::TraceArgs),
    /// Proofs of solvency: take an epoch (liabilities trees at the last reconciled
    /// block, roots journaled), list epochs, export and verify a customer's proofs.
    #[command(subcommand)]
    Solvency(solvency_cli::SolvencyCommand),
    /// The hot signer as a process of its own, apart from the node.
    #[command(subcommand)]
    Signer(signer_cli::SignerCommand),
    /// Tools for tests and incident drills.
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a config file with every option, its default and what it does.
    Example,
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Stream commands through the real sequencer and print each acknowledgement.
    StressNode(stress::StressArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The matching core: the full engine (holds, matching, fees, events) and, in the
    /// same run, the order book alone against peer crates.
    Core(bench_core::CoreArgs),
    /// Durability on this machine's disk: group commit at offered rates (durable
    /// commands/s, ack latency, fsyncs), one fsync per command, and journal replay speed.
    Journal(bench_journal::JournalArgs),
    /// The REST API: signed orders through HTTP on loopback with durability on, at offered
    /// rates and closed loop.
    Api(bench_api::ApiArgs),
    /// Staying up under attack: honest latency and cancels while attackers flood the API
    /// at ten times its capacity, recovery time, WebSocket fan-out.
    Overload(bench_overload::OverloadArgs),
    /// Custody: address derivation, reconciliation per block with many customers and
    /// coins, PSBT build and sign, and block-to-credit latency on the devnet.
    Custody(bench_custody::CustodyArgs),
    /// Proofs of solvency at scale: a liabilities tree for a million customers (build,
    /// proof size, verification) and the audit log at 100M records (checkpoint root,
    /// inclusion proof).
    Solvency(bench_solvency::SolvencyArgs),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one screen, no backtrace: these are expected
            // failures (a damaged journal, a bad argument), not bugs.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve_cli::run(&args),
        Commands::Demo(args) => demo::run(&args),
        Commands::Admin(args) => admin_cli::run(&args),
        Commands::Config(ConfigCommand::Example) => {
            print!("{}", serve_cli::EXAMPLE);
            Ok(())
        }
        Commands::Reindex { data } => serve_cli::reindex(&data),
        Commands::Bench(BenchCommand::Core(args)) => bench_core::run(&args),
        Commands::Bench(BenchCommand::Journal(args)) => bench_journal::run(&args),
        Commands::Bench(BenchCommand::Api(args)) => bench_api::run(&args),
        Commands::Bench(BenchCommand::Overload(args)) => bench_overload::run(&args),
        Commands::Bench(BenchCommand::Custody(args)) => bench_custody::run(&args),
        Commands::Bench(BenchCommand::Solvency(args)) => bench_solvency::run(&args),
        Commands::Journal(cmd) => journal_cli::run(&cmd),
        Commands::Devnet { data, command } => devnet_cli::run(&command, &data),
        Commands::Audit(cmd) => audit_cli::run(&cmd),
        Commands::Export(args) => export_cli::run(&args),
        Commands::Custody(cmd) => custody_cli::run(&cmd),
        Commands::Cold(cmd) => cold_cli::run(&cmd),
        Commands::Reserves(cmd) => reserves_cli::run(&cmd),
        Commands::Trace(args) => trace_cli::run(&args),
        Commands::Solvency(cmd) => solvency_cli::run(&cmd),
        Commands::Signer(cmd) => signer_cli::run(&cmd),
        Commands::Debug(DebugCommand::StressNode(args)) => stress::run(&args),
    }
}
