//! `kura trace TXID|TXID:VOUT --out DIR`: follow coins forward from a transaction or one
//! outpoint (one of our coins, or a theft) and write where they went as `trace.json`,
//! `trace.dot` and `trace.svg` (see [`kura::trace`] for the rules and the formats).
//!
//! The chain is read through Bitcoin Core's JSON-RPC: the devnet of the node in `--data`
//! (found as `kura devnet` finds it), or the node at `--rpc-url`. Our addresses are
//! labelled from the wallet registry in the node's journal (`--data`): every registered
//! BTC wallet, deposit addresses with the customer each was assigned to. The journal is
//! only read (newest snapshot, then the records after it), so this works beside a running
//! node as well as on a stopped one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kura::trace::{self, btc, Labels, Options, Start, Trace};
use kura_chain::bitcoin::Network;
use kura_chain::{RpcAuth, RpcSource};
use kura_engine::{codec, Engine, Limits};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Where to start: a transaction (TXID: all its outputs) or one coin (TXID:VOUT).
    pub start: String,
    /// Hops to follow after the start; spends further on are named, not followed.
    #[arg(long, default_value_t = trace::DEFAULT_DEPTH)]
    pub depth: u32,
    /// Directory to write trace.json, trace.dot and trace.svg to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// Which chain to read, and whose wallets are ours.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// The node's data directory: its wallet registry labels our addresses, and without
    /// --rpc-url its devnet is the chain read (`kura serve --chain devnet`, running).
    #[arg(long, env = "KURA_DATA")]
    pub data: Option<PathBuf>,
    /// Bitcoin Core's JSON-RPC URL (a node with txindex=1), with --rpc-cookie FILE or
    /// --rpc-user and --rpc-password.
    #[arg(long, env = "KURA_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Bitcoin Core's cookie file (`.cookie` in its data directory).
    #[arg(
        long,
        env = "KURA_RPC_COOKIE",
        requires = "rpc_url",
        conflicts_with = "rpc_user"
    )]
    pub rpc_cookie: Option<PathBuf>,
    /// Bitcoin Core's rpcuser (with --rpc-password).
    #[arg(long, env = "KURA_RPC_USER", requires_all = ["rpc_url", "rpc_password"])]
    pub rpc_user: Option<String>,
    /// Bitcoin Core's rpcpassword (better given in the environment).
    #[arg(long, env = "KURA_RPC_PASSWORD", requires = "rpc_user")]
    pub rpc_password: Option<String>,
}

impl ChainArgs {
    /// The chain source and its network.
    pub fn connect(&self) -> Result<(RpcSource, Network)> {
        let Some(url) = &self.rpc_url else {
            let Some(data) = &self.data else {
                bail!("give --data DIR (a node running the devnet) or --rpc-url URL");
            };
            return Ok((crate::devnet_cli::connect(data)?, Network::Regtest));
        };
        let auth = match (&self.rpc_cookie, &self.rpc_user, &self.rpc_password) {
            (Some(c), _, _) => RpcAuth::CookieFile(c.clone()),
            (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
            _ => bail!("--rpc-url needs --rpc-cookie FILE, or --rpc-user and --rpc-password"),
        };
        let rpc = RpcSource::new(url, auth).map_err(|e| anyhow!("connecting to {url}: {e}"))?;
        let info: serde_json::Value = rpc
            .call("getblockchaininfo", &[])
            .map_err(|e| anyhow!("asking {url} which chain it follows: {e}"))?;
        let chain = info["chain"].as_str().unwrap_or_default();
        let network = Network::from_core_arg(chain)
            .map_err(|_| anyhow!("{url} follows an unknown chain {chain:?}"))?;
        Ok((rpc, network))
    }
}

pub fn run(args: &TraceArgs) -> Result<()> {
    let start: Start = args.start.parse()?;
    let (source, network) = args.chain.connect()?;
    let labels = match &args.chain.data {
        Some(data) => our_labels(data, network)?,
        None => {
            eprintln!("no --data: no address is labelled as ours");
            Labels::new()
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("reading blocks [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let options = Options {
        depth: args.depth,
        network,
    };
    let result = trace::trace(&source, start, &options, &labels, &mut |height, tip| {
        bar.set_length(u64::from(tip));
        bar.set_position(u64::from(height));
    });
    bar.finish_and_clear();
    let t = result?;
    let written = write_files(&t, &args.out)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print_summary(&t, &mut out)?;
    writeln!(out, "wrote {}", written.join(", "))?;
    Ok(())
}

/// Writes the three files; returns their paths.
fn write_files(t: &Trace, dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_string_pretty(t).context("encoding the trace")?;
    json.push('\n');
    let mut written = Vec::new();
    for (name, body) in [
        ("trace.json", json),
        ("trace.dot", trace::render::dot(t)),
        ("trace.svg", trace::render::svg(t)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn print_summary(t: &Trace, out: &mut dyn Write) -> Result<()> {
    let totals = &t.totals;
    let at = |h: Option<u32>| h.map_or("in the mempool".to_owned(), |h| format!("in block {h}"));
    let first = t.hops.first().map(|h| at(h.height)).unwrap_or_default();
    writeln!(
        out,
        "trace of {} ({first}) to tip {} {}, depth limit {}",
        t.start, t.tip.height, t.tip.hash, t.depth_limit
    )?;
    writeln!(
        out,
        "{} transaction(s) over {} hop(s): {} BTC traced, {} BTC paid in fees",
        totals.transactions,
        totals.max_hop,
        btc(totals.start_sat),
        btc(totals.fees_sat)
    )?;
    writeln!(
        out,
        "where the coins are now: {} BTC in {} address(es) ({} BTC unconfirmed)",
        btc(totals.unspent_sat),
        t.holdings.len(),
        btc(totals.unspent_unconfirmed_sat)
    )?;
    for h in &t.holdings {
        let owner = h
            .owner
            .as_ref()
            .map_or("foreign".to_owned(), ToString::to_string);
        let confirmed = if h.coins.iter().all(|c| c.height.is_some()) {
            "confirmed"
        } else {
            "unconfirmed"
        };
        writeln!(
            out,
            "  {} BTC  {}  {owner}  {} coin(s), {confirmed}",
            btc(h.traced_sat),
            h.address,
            h.coins.len()
        )?;
    }
    if !t.beyond_depth.is_empty() {
        writeln!(
            out,
            "beyond the depth limit: {} BTC in {} output(s); follow one with `kura trace TXID:VOUT`",
            btc(totals.beyond_depth_sat),
            t.beyond_depth.len()
        )?;
        for b in &t.beyond_depth {
            writeln!(
                out,
                "  {} BTC  {}  spent by {} {}",
                btc(b.traced_sat),
                b.outpoint,
                b.spent_by,
                at(b.spent_height)
            )?;
        }
    }
    if totals.unspendable_sat > 0 {
        writeln!(
            out,
            "burnt in unspendable outputs: {} BTC",
            btc(totals.unspendable_sat)
        )?;
    }
    if !totals.shares_known {
        writeln!(
            out,
            "note: some hops also spend coins whose value is unknown (is txindex=1 set?): \
             their outputs are counted in full, an upper bound"
        )?;
    }
    Ok(())
}

/// Labels for every BTC wallet in the node's registry.
fn our_labels(data: &Path, network: Network) -> Result<Labels> {
    let engine = books(data).with_context(|| {
        format!(
            "reading the wallet registry of the node in {}",
            data.display()
        )
    })?;
    let mut labels = Labels::new();
    let Some(asset) = engine.asset_by_symbol("BTC") else {
        return Ok(labels);
    };
    let mut users: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
    for ((user, a), (wallet, index)) in engine.deposit_addresses() {
        if a == asset {
            users.entry(wallet).or_default().insert(index, user.0);
        }
    }
    let none = BTreeMap::new();
    for (id, w) in engine.wallets().iter().enumerate() {
        if w.asset != asset {
            continue;
        }
        let id = u32::try_from(id).context("wallet id")?;
        labels
            .add_wallet(
                id,
                w.role.name(),
                &w.descriptor,
                w.next_index,
                users.get(&id).unwrap_or(&none),
                network,
            )
            .with_context(|| format!("deriving the addresses of wallet #{id} {}", w.descriptor))?;
    }
    Ok(labels)
}

/// The engine as of the journal's last record, rebuilt without opening the journal for
/// writing: the newest valid snapshot, checked against the journal's chain hash at its
/// sequence number, then every record after it.
fn books(data: &Path) -> Result<Engine> {
    let newest = kura_journal::load_newest_valid_snapshot(data).context("reading snapshots")?;
    let (mut engine, from, anchor) = match &newest.snapshot {
        Some(s) => (
            kura::node::engine_from_snapshot(s, Limits::DEFAULT)?,
            s.meta.seq,
            Some(s.meta.chain_hash),
        ),
        None => (Engine::new(Limits::DEFAULT), 0, None),
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} reading the journal: {pos} records")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut events = Vec::new();
    for record in kura_journal::read_records(data, from.max(1)).context("opening the journal")? {
        let record = record.context("reading the journal")?;
        if record.seq == from {
            if Some(record.chain_hash) != anchor {
                bail!("the snapshot at seq {from} does not match the journal");
            }
            continue;
        }
        let entry = codec::decode(&record.payload)
            .map_err(|e| anyhow!("journal record {}: cannot decode: {e}", record.seq))?;
        events.clear();
        // A refused command changes nothing, as when the node applied it.
        let _ = engine.apply(&entry.command, entry.ctx(record.seq), &mut events);
        if record.seq % 65_536 == 0 {
            bar.set_position(record.seq);
        }
    }
    bar.finish_and_clear();
    Ok(engine)
}
