//! `kura reserves prove | verify`: proof of reserves (BIP-127) of a running node, and its
//! check against the chain. The files and the transaction are described in
//! `kura::reserves` and `kura_custody::reserves`.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kura::reserves;
use kura_chain::{RpcAuth, RpcEndpoint, RpcSource};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ReservesCommand {
    /// Build the proof over every confirmed coin of every registered wallet of the running
    /// node in --data, sign the hot and deposit coins with the hot signer, and write the
    /// PSBT (for the cold holders' `kura cold sign`), the descriptor list, a summary
    /// (reserves.json) and, when no cold coin is left to sign, the finished transaction.
    Prove(ProveArgs),
    /// Check a finished proof against the chain: the commitment to the message, every
    /// coin unspent at the tip, every signature valid and SIGHASH_ALL, the sum; print
    /// the total, and with --liabilities whether it covers them (a shortfall fails).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The message the proof commits to (for an epoch of the proof of liabilities:
    /// its reserves_message, "por/v1 EPOCH_ID ROOT_HASH ROOT_SUM").
    #[arg(long, conflicts_with = "message_file")]
    message: Option<String>,
    /// A file holding the message (UTF-8; one trailing newline is not part of it).
    #[arg(long)]
    message_file: Option<PathBuf>,
}

impl MessageArgs {
    fn read(&self) -> Result<String> {
        reserves::read_message(self.message.as_deref(), self.message_file.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// Data directory of the running node (`kura serve --chain devnet|bitcoind`).
    #[arg(long, env = "KURA_DATA", default_value = "kura-data")]
    data: PathBuf,
    #[command(flatten)]
    message: MessageArgs,
    /// Directory to write the proof's files into (created; existing files are never
    /// overwritten).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The finished proof: a raw transaction in hex (reserves.tx, or what
    /// `kura cold finalize --out` wrote).
    #[arg(long)]
    tx: PathBuf,
    #[command(flatten)]
    message: MessageArgs,
    /// Data directory of a running `kura serve --chain devnet` node (its devnet is the
    /// chain checked against).
    #[arg(long, conflicts_with = "rpc_url")]
    data: Option<PathBuf>,
    /// Bitcoin Core's JSON-RPC URL (with --rpc-cookie, or --rpc-user and --rpc-password).
    #[arg(long)]
    rpc_url: Option<String>,
    /// Bitcoin Core's cookie file.
    #[arg(long, requires = "rpc_url")]
    rpc_cookie: Option<PathBuf>,
    /// Bitcoin Core's RPC user.
    #[arg(long, requires = "rpc_url")]
    rpc_user: Option<String>,
    /// Bitcoin Core's RPC password.
    #[arg(long, env = "KURA_RPC_PASSWORD", hide_env_values = true)]
    rpc_password: Option<String>,
    /// What the reserves must cover, in satoshis (the proof of liabilities' root sum):
    /// a shortfall is reported and fails the check.
    #[arg(long, value_name = "SATS")]
    liabilities: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &ReservesCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        ReservesCommand::Prove(args) => prove(args, &mut out),
        ReservesCommand::Verify(args) => verify(args, &mut out),
    }
}

/// Satoshis as BTC with eight decimals.
fn btc(sat: u64) -> String {
    format!("{}.{:08} BTC", sat / 100_000_000, sat % 100_000_000)
}

fn prove(args: &ProveArgs, out: &mut dyn Write) -> Result<()> {
    let message = args.message.read()?;
    let proved = reserves::prove(&args.data, &message, &args.out)?;
    let hot = proved.coins.len() - proved.offline();
    writeln!(out, "proof of reserves for message {:?}", proved.message)?;
    writeln!(
        out,
        "  commitment  SHA-256(\"Proof-of-Reserves: \" + message) = {} (vout 0): can never be valid on chain",
        reserves::commitment_hex(&proved.message)
    )?;
    writeln!(
        out,
        "  coins at    block {} {}",
        proved.height, proved.block_hash
    )?;
    writeln!(
        out,
        "  coins       {} ({} signed by the hot signer, {} for the cold holders)",
        proved.coins.len(),
        hot,
        proved.offline()
    )?;
    writeln!(
        out,
        "  total       {} ({} sat)",
        btc(proved.total_sat),
        proved.total_sat
    )?;
    if let Some(l) = proved.liabilities_sat {
        let l = u64::try_from(l).unwrap_or(u64::MAX);
        writeln!(out, "  books owe   {} ({l} sat)", btc(l))?;
    }
    writeln!(out, "wrote {}", proved.psbt_path.display())?;
    writeln!(out, "wrote {}", proved.descriptors_path.display())?;
    writeln!(out, "wrote {}", proved.proof_path.display())?;
    match &proved.tx_path {
        Some(path) => {
            writeln!(
                out,
                "wrote {} (finished: every coin was the hot signer's)",
                path.display()
            )?;
        }
        None => {
            writeln!(
                out,
                "next: two cold holders each run `kura cold sign --psbt {} --key KEY --descriptors {} --network {}`,",
                proved.psbt_path.display(),
                proved.descriptors_path.display(),
                cli_network(proved.network)
            )?;
            writeln!(
                out,
                "      then `kura cold finalize --psbt COPY1 --psbt COPY2 --out {}`",
                args.out.join(reserves::TX_FILE).display()
            )?;
        }
    }
    Ok(())
}

fn cli_network(n: kura_chain::bitcoin::Network) -> &'static str {
    use kura_chain::bitcoin::Network;
    match n {
        Network::Bitcoin => "bitcoin",
        Network::Testnet => "testnet",
        Network::Signet => "signet",
        _ => "regtest",
    }
}

fn chain_for(args: &VerifyArgs) -> Result<RpcSource> {
    if let Some(url) = &args.rpc_url {
        let auth = match (&args.rpc_cookie, &args.rpc_user, &args.rpc_password) {
            (Some(c), _, _) => RpcAuth::CookieFile(c.clone()),
            (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
            _ => bail!("--rpc-url needs --rpc-cookie FILE, or --rpc-user and --rpc-password"),
        };
        return RpcSource::new(url, auth).map_err(|e| anyhow!("connecting to {url}: {e}"));
    }
    let Some(data) = &args.data else {
        bail!("give the chain to check against: --data DIR (a node running the devnet) or --rpc-url URL");
    };
    devnet_of(data)
}

fn devnet_of(data: &Path) -> Result<RpcSource> {
    let path = RpcEndpoint::file_in(&data.join("devnet"));
    if !path.exists() {
        bail!(
            "no running devnet found: {} does not exist (is `kura serve --chain devnet --data {}` running?)",
            path.display(),
            data.display()
        );
    }
    let endpoint = RpcEndpoint::read(&path)
        .map_err(|e| anyhow!("reading the devnet's endpoint {}: {e}", path.display()))?;
    RpcSource::for_endpoint(&endpoint)
        .map_err(|e| anyhow!("connecting to the devnet at {}: {e}", endpoint.url))
}

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<()> {
    let message = args.message.read()?;
    let tx = reserves::read_tx(&args.tx)?;
    let chain = chain_for(args)?;
    let checked = reserves::verify_on_chain(&tx, &message, &chain)?;
    let shortfall = args
        .liabilities
        .map(|l| l.saturating_sub(checked.total_sat));
    if args.json {
        let value = serde_json::json!({
            "verified": true,
            "message": message,
            "txid": tx.compute_txid().to_string(),
            "total_sat": checked.total_sat,
            "coins": checked.coins.iter().map(|c| serde_json::json!({
                "outpoint": c.outpoint.to_string(),
                "value_sat": c.value_sat,
                "confirmations": c.confirmations,
            })).collect::<Vec<_>>(),
            "tip": {"height": checked.tip_height, "hash": checked.tip_hash.to_string()},
            "chain_refusal": checked.chain_refusal,
            "liabilities_sat": args.liabilities,
            "covered": shortfall.map(|s| s == 0),
            "shortfall_sat": shortfall,
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "proof of reserves verified")?;
        writeln!(out, "  message      {message:?}")?;
        writeln!(
            out,
            "  coins        {}, every one unspent at block {} {}; every signature valid and SIGHASH_ALL",
            checked.coins.len(),
            checked.tip_height,
            checked.tip_hash
        )?;
        writeln!(
            out,
            "  total        {} ({} sat)",
            btc(checked.total_sat),
            checked.total_sat
        )?;
        match &checked.chain_refusal {
            Some(reason) => writeln!(
                out,
                "  chain        refuses the transaction ({reason}): it can never be mined"
            )?,
            None => writeln!(
                out,
                "  chain        did not answer testmempoolaccept; the commitment input alone keeps it off chain"
            )?,
        }
        if let (Some(l), Some(s)) = (args.liabilities, shortfall) {
            if s == 0 {
                writeln!(
                    out,
                    "  liabilities  {} ({l} sat): covered, surplus {}",
                    btc(l),
                    btc(checked.total_sat - l)
                )?;
            } else {
                writeln!(
                    out,
                    "  liabilities  {} ({l} sat): SHORTFALL of {} ({s} sat)",
                    btc(l),
                    btc(s)
                )?;
            }
        }
    }
    out.flush()?;
    if let Some(s) = shortfall.filter(|s| *s > 0) {
        bail!(
            "the reserves ({} sat) are short of the liabilities by {s} sat",
            checked.total_sat
        );
    }
    Ok(())
}
