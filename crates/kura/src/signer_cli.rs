//! `kura signer serve`: the hot key in a process of its own (see `kura::signing`).

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use kura::signing::{self, service};
use kura_chain::bitcoin::Network;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    /// Hold the hot key and the deposit seed of a node's data directory and sign, on a
    /// unix socket, only what that node's journal approved, within this process's own
    /// fee limits and velocity caps. Start the node with `--signer-socket` to use it.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's data directory (its journal is read; the secrets and the velocity
    /// record are kept in its `signer/`).
    #[arg(long, env = "KURA_DATA")]
    data: PathBuf,
    /// The socket to listen on (default: DATA/signer/signer.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The Bitcoin network of the keys: bitcoin, testnet, signet or regtest (the devnet).
    #[arg(long, default_value = "regtest")]
    network: String,
    /// The most one transaction may pay in fees, in satoshis.
    #[arg(long, default_value_t = kura_signer::Policy::default().max_fee_sat)]
    max_fee_sat: u64,
    /// The highest fee rate signed, in sat/vB.
    #[arg(long, default_value_t = kura_signer::Policy::default().max_fee_rate_sat_vb)]
    max_fee_rate: u64,
    /// The most that may leave our wallets within any hour, in satoshis.
    #[arg(long, default_value_t = kura_signer::Policy::default().hourly_cap_sat)]
    hourly_cap_sat: u64,
    /// The most that may leave our wallets within any 24 hours, in satoshis.
    #[arg(long, default_value_t = kura_signer::Policy::default().daily_cap_sat)]
    daily_cap_sat: u64,
}

pub fn run(command: &SignerCommand) -> Result<()> {
    match command {
        SignerCommand::Serve(args) => serve(args),
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    let network =
        Network::from_str(&args.network).map_err(|e| anyhow!("--network {}: {e}", args.network))?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| signing::default_socket(&args.data));
    let config = service::ServiceConfig {
        data: args.data.clone(),
        socket: socket.clone(),
        network,
        policy: kura_signer::Policy {
            max_fee_sat: args.max_fee_sat,
            max_fee_rate_sat_vb: args.max_fee_rate,
            hourly_cap_sat: args.hourly_cap_sat,
            daily_cap_sat: args.daily_cap_sat,
        },
    };
    let mut signer = service::Service::open(&config)?;
    let listener = service::bind(&socket)?;
    let hello = signer.hello();
    println!("kura signer: listening on {}", socket.display());
    println!("  network:            {}", hello.network);
    println!("  hot wallet:         {}", hello.hot_descriptor);
    println!("  deposit wallet:     {}", hello.deposit_descriptor);
    println!("  journal read up to: record {}", hello.journal_seq);
    println!(
        "  start the node with: kura serve --data {} --signer-socket {}",
        args.data.display(),
        socket.display()
    );
    service::serve(&mut signer, &listener)
}
