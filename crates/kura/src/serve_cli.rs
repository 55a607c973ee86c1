//! `kura serve`, `kura config example` and `kura reindex`.
//!
//! Every option has a default, can be set in the config file, and can be overridden by
//! a flag or an environment variable (flag > environment > file > default).

use anyhow::{Context, Result};
use clap::Args;
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::{self, Exchange, ServerConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The documented defaults, as `kura config example` prints them.
pub const EXAMPLE: &str = r#"# kura configuration file (TOML). Every option is optional: shown here with its
# default. Each one can also be set by a flag (--name-with-dashes) or an environment
# variable (KURA_NAME_IN_CAPITALS); flags win over the environment, which wins over
# this file.

# Where the journal, snapshots, read model, master key and admin socket live.
data = "kura-data"

# Where the REST API listens. Keep it on loopback unless a TLS proxy sits in front.
listen = "127.0.0.1:8080"

# Commands waiting for the sequencer, at most; beyond that new requests get 503.
queue_capacity = 65536

# Commands made durable by one fsync, at most.
batch_max = 4096

# Take a snapshot after this many commands (0: never by count) ...
snapshot_every_commands = 1000000

# ... or after this many seconds with new commands (0: never by time).
snapshot_every_secs = 600

# How long a history read (orders, trades) waits for the read model to catch up
# with the commands answered before it, in milliseconds.
read_wait_ms = 5000

# Admission control (Binance's values): request weight per client address per
# minute, and new orders per API key per 10 seconds and per day. Beyond them: 429
# with Retry-After, then 418 bans that grow for repeat offenders. Cancels are never
# refused for these reasons.
request_weight_per_minute = 6000
orders_per_10s = 100
orders_per_day = 200000

# Reverse proxies (nginx, a load balancer) whose X-Forwarded-For is believed: requests
# through them are counted, banned and journaled under the client address the header
# gives. From any other peer the header is ignored. None by default.
trusted_proxies = []

# Where the chain comes from: "none" (deposits only by operator credit), "devnet"
# (the built-in regtest chain in DATA/devnet, its JSON-RPC on loopback for
# `kura devnet`), or "bitcoind" (Bitcoin Core's JSON-RPC, wallet disabled).
chain = "none"

# devnet: mine a block every this many seconds (0: only on `kura devnet mine`).
block_interval_secs = 0

# bitcoind: the node's JSON-RPC URL and credentials (a cookie file, or a user and
# password), and its network (bitcoin, testnet, signet, regtest).
# rpc_url = "http://127.0.0.1:8332"
# rpc_cookie = "/var/lib/bitcoind/.cookie"
# rpc_user = "kura"
# rpc_password = "..."
network = "bitcoin"

# Confirmations before a deposit is credited; deposits below the dust threshold
# (satoshis) are never credited; the first block that can hold our coins.
confirmations = 3
dust_sat = 546
chain_start_height = 0

# Withdrawals: a new destination address is paid only after this delay (seconds);
# approved withdrawals are gathered into one transaction this often, at this fee rate.
withdrawal_address_delay_secs = 86400
withdrawal_batch_secs = 60
withdrawal_fee_rate_sat_vb = 2

# The hot float band, in basis points of what customers are owed in BTC: above high
# water the surplus is swept to the newest cold wallet (`kura admin wallet register`),
# down to the middle of the band; below low water a refill PSBT from cold storage is
# written to DATA/custody/refills/ for the offline ceremony (`kura cold sign`). Moves
# smaller than transfer_min_sat are skipped. high water 10000 and low water 0 turn
# the band off.
hot_low_water_bps = 200
hot_high_water_bps = 500
transfer_min_sat = 10000

# Proofs of solvency (`kura solvency`): take an epoch (one liabilities tree per asset
# at the last reconciled block, roots journaled, report in DATA/solvency/epochs) when
# the newest reconciled block is this many blocks past the last epoch's, and/or when
# this many minutes have passed and a newer block was reconciled (0: off); trees of
# this height (2^height customer slots).
solvency_every_blocks = 0
solvency_every_minutes = 0
solvency_depth = 20

# The hot signer: by default the node holds the hot key itself (DATA/signer/). Point
# this at the socket of `kura signer serve --data DATA`, run as its own process
# (ideally as another user), to keep the key out of the node: that signer reads the
# journal itself and signs only the batches it finds there, within its own caps.
# signer_socket = "/var/lib/kura/signer/signer.sock"

# The signed audit log (`kura audit`): sign a checkpoint of the journal this often, in
# seconds, when it has grown since the last one (0: only by hand).
audit_checkpoint_every_secs = 3600
"#;

/// Options of `kura serve` (and the server part of `kura demo`).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Data directory.
    #[arg(long, env = "KURA_DATA")]
    pub data: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, env = "KURA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A TOML config file (`kura config example` prints one).
    #[arg(long, env = "KURA_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "KURA_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    #[arg(long, env = "KURA_BATCH_MAX")]
    pub batch_max: Option<usize>,
    #[arg(long, env = "KURA_SNAPSHOT_EVERY_COMMANDS")]
    pub snapshot_every_commands: Option<u64>,
    #[arg(long, env = "KURA_SNAPSHOT_EVERY_SECS")]
    pub snapshot_every_secs: Option<u64>,
    #[arg(long, env = "KURA_READ_WAIT_MS")]
    pub read_wait_ms: Option<u64>,
    #[arg(long, env = "KURA_REQUEST_WEIGHT_PER_MINUTE")]
    pub request_weight_per_minute: Option<u32>,
    #[arg(long, env = "KURA_ORDERS_PER_10S")]
    pub orders_per_10s: Option<u32>,
    /// A reverse proxy whose X-Forwarded-For is believed (repeat, or separate by commas).
    #[arg(
        long = "trusted-proxy",
        env = "KURA_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    #[arg(long, env = "KURA_ORDERS_PER_DAY")]
    pub orders_per_day: Option<u32>,
    /// none, devnet or bitcoind.
    #[arg(long, env = "KURA_CHAIN")]
    pub chain: Option<String>,
    #[arg(long, env = "KURA_BLOCK_INTERVAL_SECS")]
    pub block_interval_secs: Option<u64>,
    #[arg(long, env = "KURA_RPC_URL")]
    pub rpc_url: Option<String>,
    #[arg(long, env = "KURA_RPC_COOKIE")]
    pub rpc_cookie: Option<PathBuf>,
    #[arg(long, env = "KURA_RPC_USER")]
    pub rpc_user: Option<String>,
    #[arg(long, env = "KURA_RPC_PASSWORD")]
    pub rpc_password: Option<String>,
    /// bitcoin, testnet, signet or regtest (with --chain bitcoind).
    #[arg(long, env = "KURA_NETWORK")]
    pub network: Option<String>,
    #[arg(long, env = "KURA_CONFIRMATIONS")]
    pub confirmations: Option<u32>,
    #[arg(long, env = "KURA_DUST_SAT")]
    pub dust_sat: Option<u64>,
    #[arg(long, env = "KURA_CHAIN_START_HEIGHT")]
    pub chain_start_height: Option<u32>,
    /// Seconds before a new withdrawal destination may be paid.
    #[arg(long, env = "KURA_WITHDRAWAL_ADDRESS_DELAY_SECS")]
    pub withdrawal_address_delay_secs: Option<u64>,
    /// Seconds between withdrawal batches.
    #[arg(long, env = "KURA_WITHDRAWAL_BATCH_SECS")]
    pub withdrawal_batch_secs: Option<u64>,
    /// Fee rate of withdrawal transactions, in sat/vB.
    #[arg(long, env = "KURA_WITHDRAWAL_FEE_RATE_SAT_VB")]
    pub withdrawal_fee_rate_sat_vb: Option<u64>,
    /// Below this share of BTC liabilities (basis points), prepare a refill from cold.
    #[arg(long, env = "KURA_HOT_LOW_WATER_BPS")]
    pub hot_low_water_bps: Option<u32>,
    /// Above this share of BTC liabilities (basis points), sweep to cold storage.
    #[arg(long, env = "KURA_HOT_HIGH_WATER_BPS")]
    pub hot_high_water_bps: Option<u32>,
    /// Smallest sweep or refill, in satoshis.
    #[arg(long, env = "KURA_TRANSFER_MIN_SAT")]
    pub transfer_min_sat: Option<u64>,
    /// Take a solvency epoch every this many reconciled blocks (0: not by blocks).
    #[arg(long, env = "KURA_SOLVENCY_EVERY_BLOCKS")]
    pub solvency_every_blocks: Option<u32>,
    /// Take a solvency epoch every this many minutes, when a newer block was reconciled
    /// (0: not by time).
    #[arg(long, env = "KURA_SOLVENCY_EVERY_MINUTES")]
    pub solvency_every_minutes: Option<u64>,
    /// Height of the solvency trees.
    #[arg(long, env = "KURA_SOLVENCY_DEPTH")]
    pub solvency_depth: Option<u32>,
    /// Sign an audit checkpoint of the journal this often, in seconds, when it has grown
    /// (0: only by hand with `kura audit checkpoint`; default 3600).
    #[arg(long, env = "KURA_AUDIT_CHECKPOINT_EVERY_SECS")]
    pub audit_checkpoint_every_secs: Option<u64>,
    /// Sign withdrawals with a separate `kura signer serve` at this socket instead of a
    /// hot key held by this process.
    #[arg(long, env = "KURA_SIGNER_SOCKET")]
    pub signer_socket: Option<PathBuf>,
}

/// The config file: the same names as the flags, with underscores.
#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub queue_capacity: Option<usize>,
    pub batch_max: Option<usize>,
    pub snapshot_every_commands: Option<u64>,
    pub snapshot_every_secs: Option<u64>,
    pub read_wait_ms: Option<u64>,
    pub request_weight_per_minute: Option<u32>,
    pub orders_per_10s: Option<u32>,
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    pub orders_per_day: Option<u32>,
    pub chain: Option<String>,
    pub block_interval_secs: Option<u64>,
    pub rpc_url: Option<String>,
    pub rpc_cookie: Option<PathBuf>,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    pub network: Option<String>,
    pub confirmations: Option<u32>,
    pub dust_sat: Option<u64>,
    pub chain_start_height: Option<u32>,
    pub withdrawal_address_delay_secs: Option<u64>,
    pub withdrawal_batch_secs: Option<u64>,
    pub withdrawal_fee_rate_sat_vb: Option<u64>,
    pub hot_low_water_bps: Option<u32>,
    pub hot_high_water_bps: Option<u32>,
    pub transfer_min_sat: Option<u64>,
    pub solvency_every_blocks: Option<u32>,
    pub solvency_every_minutes: Option<u64>,
    pub solvency_depth: Option<u32>,
    pub audit_checkpoint_every_secs: Option<u64>,
    pub signer_socket: Option<PathBuf>,
}

pub fn parse_file(text: &str) -> Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Flags and environment over the file over the defaults.
pub fn resolve(args: &ServeArgs) -> Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => parse_file(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading the config file {}", path.display()))?,
        )
        .with_context(|| format!("in the config file {}", path.display()))?,
        None => FileConfig::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data.clone())
        .unwrap_or_else(|| PathBuf::from("kura-data"));
    let mut config = ServerConfig::new(data);
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    if let Some(v) = args.queue_capacity.or(file.queue_capacity) {
        config.node.queue_capacity = v.max(1);
    }
    if let Some(v) = args.batch_max.or(file.batch_max) {
        config.node.batch_max = v.max(1);
    }
    if let Some(v) = args
        .snapshot_every_commands
        .or(file.snapshot_every_commands)
    {
        config.node.snapshot_every_commands = v;
    }
    if let Some(v) = args.snapshot_every_secs.or(file.snapshot_every_secs) {
        config.node.snapshot_every = (v > 0).then(|| Duration::from_secs(v));
    }
    if let Some(v) = args.read_wait_ms.or(file.read_wait_ms) {
        config.read_wait = Duration::from_millis(v);
    }
    let limits = &mut config.api.limits;
    if let Some(v) = args
        .request_weight_per_minute
        .or(file.request_weight_per_minute)
    {
        limits.request_weight_per_minute = v.max(1);
    }
    if let Some(v) = args.orders_per_10s.or(file.orders_per_10s) {
        limits.orders_per_10s = v.max(1);
    }
    if let Some(v) = args.orders_per_day.or(file.orders_per_day) {
        limits.orders_per_day = v.max(1);
    }
    if !args.trusted_proxies.is_empty() {
        limits.trusted_proxies = args.trusted_proxies.clone();
    } else if let Some(v) = &file.trusted_proxies {
        limits.trusted_proxies = v.clone();
    }
    if let Some(v) = args.solvency_every_blocks.or(file.solvency_every_blocks) {
        config.solvency.every_blocks = v;
    }
    if let Some(v) = args.solvency_every_minutes.or(file.solvency_every_minutes) {
        config.solvency.every = (v > 0).then(|| Duration::from_secs(v.saturating_mul(60)));
    }
    if let Some(v) = args.solvency_depth.or(file.solvency_depth) {
        if v > kura_proofs::por::MAX_DEPTH {
            anyhow::bail!(
                "solvency_depth {v} is above {}",
                kura_proofs::por::MAX_DEPTH
            );
        }
        config.solvency.depth = v;
    }
    if let Some(v) = args
        .audit_checkpoint_every_secs
        .or(file.audit_checkpoint_every_secs)
    {
        config.audit_every = (v > 0).then(|| Duration::from_secs(v));
    }
    config.custody = custody_config(args, file)?;
    Ok(config)
}

fn custody_config(args: &ServeArgs, file: FileConfig) -> Result<CustodyConfig> {
    let mut c = CustodyConfig::default();
    if let Some(v) = args.confirmations.or(file.confirmations) {
        c.confirmations = v.max(1);
    }
    if let Some(v) = args.dust_sat.or(file.dust_sat) {
        c.dust_sat = v;
    }
    if let Some(v) = args.chain_start_height.or(file.chain_start_height) {
        c.start_height = v;
    }
    if let Some(v) = args
        .withdrawal_address_delay_secs
        .or(file.withdrawal_address_delay_secs)
    {
        c.withdrawal_policy.address_delay_ms = v.saturating_mul(1000);
    }
    if let Some(v) = args.withdrawal_batch_secs.or(file.withdrawal_batch_secs) {
        c.payout.batch_interval = Duration::from_secs(v);
    }
    if let Some(v) = args
        .withdrawal_fee_rate_sat_vb
        .or(file.withdrawal_fee_rate_sat_vb)
    {
        c.payout.fee_rate_sat_vb = v.max(1);
    }
    let mut band = c.payout.band.unwrap_or_default();
    if let Some(v) = args.hot_low_water_bps.or(file.hot_low_water_bps) {
        band.low_bps = v;
    }
    if let Some(v) = args.hot_high_water_bps.or(file.hot_high_water_bps) {
        band.high_bps = v;
    }
    if let Some(v) = args.transfer_min_sat.or(file.transfer_min_sat) {
        band.min_move_sat = v;
    }
    band.check().with_context(|| {
        format!(
            "hot_low_water_bps {} and hot_high_water_bps {}",
            band.low_bps, band.high_bps
        )
    })?;
    c.signer_socket = args.signer_socket.clone().or(file.signer_socket);
    // Low water 0 with high water 100 % is the documented way to turn the band off.
    c.payout.band = (band.low_bps > 0 || band.high_bps < 10_000).then_some(band);
    let chain = args
        .chain
        .clone()
        .or(file.chain)
        .unwrap_or_else(|| "none".into());
    c.chain = match chain.as_str() {
        "none" => ChainChoice::None,
        "devnet" => {
            let secs = args
                .block_interval_secs
                .or(file.block_interval_secs)
                .unwrap_or(0);
            ChainChoice::Devnet {
                block_interval: (secs > 0).then(|| Duration::from_secs(secs)),
            }
        }
        "bitcoind" => {
            let network = args
                .network
                .clone()
                .or(file.network)
                .unwrap_or_else(|| "bitcoin".into());
            ChainChoice::Bitcoind {
                url: args
                    .rpc_url
                    .clone()
                    .or(file.rpc_url)
                    .context("--chain bitcoind needs --rpc-url")?,
                cookie: args.rpc_cookie.clone().or(file.rpc_cookie),
                user: args.rpc_user.clone().or(file.rpc_user),
                password: args.rpc_password.clone().or(file.rpc_password),
                network: network
                    .parse()
                    .map_err(|_| anyhow::anyhow!("unknown network {network:?}"))?,
            }
        }
        other => anyhow::bail!("unknown chain {other:?}: use none, devnet or bitcoind"),
    };
    Ok(c)
}

fn replay_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replaying the journal: {pos} commands")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kura-api")
        .build()
        .context("starting the async runtime")
}

/// Open the exchange with a replay progress bar.
pub fn open(config: ServerConfig) -> Result<Exchange> {
    let bar = replay_bar();
    let exchange = Exchange::open(config, |n| bar.set_position(n));
    bar.finish_and_clear();
    exchange
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let config = resolve(args)?;
    let listen = config.listen;
    let exchange = open(config)?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        exchange.serve(listener, server::shutdown_signal()).await
    })?;
    let head = exchange.stop()?;
    eprintln!("kura stopped cleanly at seq {}", head.seq);
    Ok(())
}

/// `kura reindex --data DIR`.
pub fn reindex(data: &Path) -> Result<()> {
    let config = kura::node::NodeConfig::new(data);
    let bar = replay_bar();
    let seq = server::reindex(&config, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!("read model rebuilt from the journal up to seq {seq}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_to_the_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kura.toml");
        std::fs::write(&path, EXAMPLE).expect("write");
        let from_file = resolve(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect("the example resolves");
        let defaults = ServerConfig::new("kura-data");
        assert_eq!(from_file.listen, defaults.listen);
        assert_eq!(from_file.node.queue_capacity, defaults.node.queue_capacity);
        assert_eq!(from_file.node.batch_max, defaults.node.batch_max);
        assert_eq!(
            from_file.node.snapshot_every_commands,
            defaults.node.snapshot_every_commands
        );
        assert_eq!(from_file.node.snapshot_every, defaults.node.snapshot_every);
        assert_eq!(from_file.read_wait, defaults.read_wait);
        assert_eq!(from_file.node.data_dir, defaults.node.data_dir);
        // Every option of the file is set in the example.
        let file = parse_file(EXAMPLE).expect("parses");
        assert!(file.data.is_some() && file.listen.is_some() && file.read_wait_ms.is_some());
        assert!(file.queue_capacity.is_some() && file.batch_max.is_some());
        assert!(file.snapshot_every_commands.is_some() && file.snapshot_every_secs.is_some());
        assert!(file.request_weight_per_minute.is_some() && file.orders_per_10s.is_some());
        assert!(file.orders_per_day.is_some() && file.trusted_proxies.is_some());
        assert!(file.solvency_every_blocks.is_some() && file.solvency_every_minutes.is_some());
        assert_eq!(from_file.solvency, defaults.solvency);
        assert!(file.audit_checkpoint_every_secs.is_some());
        assert_eq!(from_file.audit_every, defaults.audit_every);
        let (a, b) = (from_file.api.limits, defaults.api.limits);
        assert_eq!(a.request_weight_per_minute, b.request_weight_per_minute);
        assert_eq!(
            (a.orders_per_10s, a.orders_per_day),
            (b.orders_per_10s, b.orders_per_day)
        );
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kura.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nbatch_max = 7\n").expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            batch_max: Some(9),
            ..ServeArgs::default()
        };
        let config = resolve(&args).expect("resolve");
        assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(config.node.batch_max, 9);
        std::fs::write(&path, "listne = \"127.0.0.1:9000\"\n").expect("write");
        let err = resolve(&args).expect_err("typo refused");
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
    }
}
