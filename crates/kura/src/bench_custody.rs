//! `kura bench custody`: what following the chain costs.
//!
//! Four phases, each on its own:
//!
//! 1. **Address derivation**: `--addresses` receive addresses of a BIP-84 `wpkh(xpub/0/*)`
//!    descriptor, through [`kura_custody::derive`] (parses the descriptor text every
//!    time, as the custody task does for each new deposit address) and through
//!    [`WatchDescriptor::at`] on a descriptor parsed once. Addresses per second.
//! 2. **Reconciliation per block**: an engine with `--customers` customers, each with a
//!    BTC balance and a deposit address, and a [`Watcher`] holding `--utxos` confirmed
//!    coins of ours (most of them customers' deposits, credited through the planner; the
//!    rest hot-wallet coins that back the other balances). The blocks are synthesised
//!    (the watcher never checks proof of work) and the watched scripts are synthetic
//!    P2WPKH scripts, so a million addresses need no key derivation. Then `--blocks`
//!    blocks, each paying 4 new deposits to customers and confirming one withdrawal
//!    batch of 4 payments (requested and built beforehand, not timed), go through what
//!    the node's custody task does per block, in process: copy the books the planner
//!    needs out of the engine (the same selection as the node's: credited chain
//!    deposits, deposit addresses, batches), connect the block to the watcher,
//!    `plan_block`, and apply the plan's commands (credits, the batch's settlement,
//!    `Reconcile`) to the engine. Not included: the sequencer's journal fsync per
//!    command and fetching the block from the chain source (phase 4 has both).
//! 3. **PSBT**: a batch of `--batch-outputs` payments built with [`build_psbt`] from
//!    `--psbt-coins` hot-wallet coins (largest first, 10 sat/vB), then signed by the hot
//!    [`Signer`] with every policy check. The key file is created and opened (Argon2id)
//!    once, timed apart. Signing includes the velocity record's `fdatasync`; a bare
//!    write + `fdatasync` in the same directory is reported beside it.
//! 4. **Block-to-credit latency**: an in-process exchange with the built-in devnet as its
//!    chain (read through the devnet's JSON-RPC, as in production), 1 confirmation and
//!    the custody task polling every `--poll-ms`. A customer gets a deposit address; per
//!    sample the devnet's faucet pays it, one block is mined, and the time runs from
//!    `mine(1)` returning to the engine showing the credit (queried every 0.25 ms). It
//!    includes the wait for the task's next poll (0 to `--poll-ms`).
//!
//! Timings are wall clock on a machine that may be shared (`machine.loadavg_at_start`);
//! percentiles are nearest-rank over the samples, so with 50 samples p99 is the maximum.

use crate::bench_api::{loadavg, nanos, now_ms, progress};
use crate::bench_journal::TempDir;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kura::node::internal;
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::{Exchange, ServerConfig};
use kura_bench::latency::rate as per_sec;
use kura_chain::bitcoin::absolute::LockTime;
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::block::{Header, Version as BlockVersion};
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::transaction::Version;
use kura_chain::bitcoin::{
    Address, Amount as Sat, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, WPubkeyHash, Witness,
};
use kura_custody::{
    build_psbt, parse_descriptor, plan_block, ChangeTarget, Owner, Payment, PlanParams,
    SpendableCoin, Watcher,
};
use kura_engine::{
    genesis, Command, Ctx, Engine, Event, EventKind, Limits, Reject, WalletRole, WithdrawalPolicy,
};
use kura_signer::{keyfile, Authorization, KdfParams, Policy, Signer};
use kura_units::{Amount, AssetId, UserId};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

const BTC: AssetId = genesis::BTC;
/// The chain of the synthesised blocks and of the devnet.
const NET: Network = Network::Regtest;
/// New deposits and withdrawals in each timed block.
const DEPOSITS_PER_BLOCK: u32 = 4;
const WITHDRAWALS_PER_BLOCK: u32 = 4;
/// What each withdrawal asks for and what it pays out (the policy's fee is the rest).
const WITHDRAWAL_SAT: u64 = 50_000;
const WITHDRAWAL_FEE_SAT: u64 = 10_000;
/// The network fee of each timed block's withdrawal transaction.
const BATCH_NETWORK_FEE_SAT: u64 = 1_000;
/// Outputs per transaction, and transactions per block, of the set-up blocks.
const SETUP_OUTPUTS_PER_TX: usize = 1_000;
const SETUP_TXS_PER_BLOCK: usize = 10;
/// The PSBT phase's fee rate and payment amount.
const PSBT_FEE_RATE_SAT_VB: u64 = 10;
const PSBT_PAYMENT_SAT: u64 = 100_000;
/// Timestamps of the engine's commands (any fixed start works: nothing reads a clock).
const T0_MS: u64 = 1_700_000_000_000;
/// How often phase 4 asks the engine whether the credit arrived.
const CREDIT_CHECK: Duration = Duration::from_micros(250);
/// Longest wait for one credit or for the custody task to catch up.
const CREDIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Tags of the synthetic scripts, so no two roles share one.
const TAG_DEPOSIT: u64 = 1;
const TAG_HOT: u64 = 2;
const TAG_CHANGE: u64 = 3;
const TAG_FOREIGN: u64 = 4;
const TAG_OTHER: u64 = 5;

#[derive(Debug, Args)]
pub struct CustodyArgs {
    /// Print one JSON object on stdout instead of pretty JSON.
    #[arg(long)]
    json: bool,
    /// Customers on the books, each with a BTC balance and a deposit address.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    customers: u32,
    /// Confirmed coins of ours the watcher holds.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    utxos: u32,
    /// Addresses derived in the derivation phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    addresses: u32,
    /// Payments of the withdrawal batch the PSBT phase builds and signs.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_outputs: u32,
    /// Blocks timed in the reconciliation phase.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    blocks: u32,
    /// Hot-wallet coins the PSBT phase selects from.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    psbt_coins: u32,
    /// Times the batch is built and signed (medians are reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    psbt_repeats: u32,
    /// Argon2id memory of the PSBT phase's key file, MiB (64 is what `kura serve` uses).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=4096))]
    kdf_memory_mib: u32,
    /// Deposits timed from block to credit on the devnet.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    credit_samples: u32,
    /// How often the node's custody task polls the devnet, milliseconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    poll_ms: u64,
    /// Where to create the temporary data directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

// ---- small helpers -----------------------------------------------------------------

/// SplitMix64: deterministic values from an index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A P2WPKH script nobody holds a key for, unique per (tag, i).
fn script(tag: u64, i: u64) -> ScriptBuf {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&mix(tag.wrapping_mul(0x1_0000_0001) ^ i).to_le_bytes());
    h[8..16].copy_from_slice(&i.to_le_bytes());
    h[16..].copy_from_slice(&(tag as u32).to_le_bytes());
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(h))
}

/// A transaction id nobody spent from, unique per (tag, i).
fn fake_txid(tag: u64, i: u64) -> Txid {
    let mut b = [0u8; 32];
    for (k, chunk) in b.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(mix(tag) ^ i ^ ((k as u64) << 56)).to_le_bytes());
    }
    Txid::from_byte_array(b)
}

/// `ns` in milliseconds, three decimals, for reporting only.
#[allow(clippy::float_arithmetic)]
fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

/// `ns` in microseconds, one decimal, for reporting only.
#[allow(clippy::float_arithmetic)]
fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Nearest-rank percentile `per_mille` / 1000 of sorted `v`.
fn pct(v: &[u64], per_mille: u64) -> u64 {
    let n = v.len() as u64;
    if n == 0 {
        return 0;
    }
    let rank = (n * per_mille).div_ceil(1_000).clamp(1, n);
    v.get(usize::try_from(rank - 1).unwrap_or(0))
        .copied()
        .unwrap_or(0)
}

/// p50, p99 and max of `samples` (nanoseconds), in milliseconds.
fn summary_ms(samples: &[u64]) -> Value {
    let mut v = samples.to_vec();
    v.sort_unstable();
    json!({
        "p50": ms(pct(&v, 500)),
        "p99": ms(pct(&v, 990)),
        "max": ms(v.last().copied().unwrap_or(0)),
    })
}

fn median(samples: &[u64]) -> u64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    pct(&v, 500)
}

/// What the figures were measured on.
fn machine(load_at_start: Option<String>) -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_owned())
    });
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": cpu_model,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "loadavg_at_start": load_at_start,
    })
}

/// `[fingerprint/path]xpub` of the master key from `seed` at `path`.
fn key_expr(seed: u8, network: Network, path: &str) -> Result<String> {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(network, &[seed; 32]).context("master key")?;
    let p = DerivationPath::from_str(path).context("derivation path")?;
    let account = master.derive_priv(&secp, &p).context("account key")?;
    let xpub = Xpub::from_priv(&secp, &account);
    let origin = path.trim_start_matches("m/");
    Ok(format!("[{}/{origin}]{xpub}", master.fingerprint(&secp)))
}

fn wpkh_descriptor(seed: u8, network: Network) -> Result<String> {
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let key = key_expr(seed, network, &format!("m/84'/{coin}'/0'"))?;
    let text = format!("wpkh({key}/0/*)");
    Ok(parse_descriptor(&text)
        .map_err(|e| anyhow!("{text}: {e}"))?
        .canonical())
}

// ---- 1. address derivation ---------------------------------------------------------

fn derive_phase(n: u32) -> Result<Value> {
    let text = wpkh_descriptor(0x5a, Network::Bitcoin)?;
    let bar = progress(u64::from(n) * 2, "derive");
    let start = Instant::now();
    let mut first_each = None;
    for i in 0..n {
        let (_, address) = kura_custody::derive(&text, i, Network::Bitcoin)
            .map_err(|e| anyhow!("deriving index {i}: {e}"))?;
        if i == 0 {
            first_each = Some(address);
        }
        if i % 64 == 63 {
            bar.inc(64);
        }
    }
    let each_ns = nanos(start.elapsed());
    bar.set_position(u64::from(n));
    let start = Instant::now();
    let parsed = parse_descriptor(&text).map_err(|e| anyhow!("{text}: {e}"))?;
    let mut first_once = None;
    for i in 0..n {
        let (_, address) = parsed
            .at(i, Network::Bitcoin)
            .map_err(|e| anyhow!("deriving index {i}: {e}"))?;
        if i == 0 {
            first_once = Some(address);
        }
        if i % 64 == 63 {
            bar.inc(64);
        }
    }
    let once_ns = nanos(start.elapsed());
    bar.finish_and_clear();
    if first_each.is_none() || first_each != first_once {
        bail!("the two derivation paths disagree on index 0");
    }
    let r = json!({
        "addresses": n,
        "descriptor": "wpkh([fingerprint/84'/0'/0']xpub/0/*), mainnet",
        "per_sec": per_sec(u64::from(n), each_ns),
        "us_per_address": us(each_ns / u64::from(n)),
        "parsed_once_per_sec": per_sec(u64::from(n), once_ns),
        "parsed_once_us_per_address": us(once_ns / u64::from(n)),
        "note": "per_sec: kura_custody::derive (parses the descriptor each time, as the custody \
                 task does); parsed_once: WatchDescriptor::at on a descriptor parsed once",
    });
    eprintln!(
        "  {} addresses/s ({} parsed once)",
        r["per_sec"], r["parsed_once_per_sec"]
    );
    Ok(r)
}

// ---- 2. reconciliation per block ---------------------------------------------------

/// The books as the node's custody task copies them on each pass.
fn copy_books(engine: &Engine) -> kura::server::custody::Snapshot {
    kura::server::custody::snapshot(engine, BTC, NET)
}

/// The engine with its sequence numbers, applying commands directly (no journal).
#[derive(Debug)]
struct DirectEngine {
    engine: Engine,
    seq: u64,
    events: Vec<Event>,
}

impl DirectEngine {
    fn new() -> DirectEngine {
        DirectEngine {
            engine: Engine::new(Limits::DEFAULT),
            seq: 0,
            events: Vec::new(),
        }
    }

    fn apply(&mut self, cmd: &Command) -> Result<(), Reject> {
        self.seq += 1;
        self.events.clear();
        let ctx = Ctx {
            seq: self.seq,
            timestamp_ms: T0_MS + self.seq,
        };
        self.engine.apply(cmd, ctx, &mut self.events)
    }

    fn must(&mut self, cmd: &Command) -> Result<()> {
        self.apply(cmd)
            .map_err(|r| anyhow!("the engine refused {}: {r}", cmd.name()))
    }
}

/// A block on top of `prev` with a coinbase first.
fn block(prev: BlockHash, height: u32, mut txs: Vec<Transaction>) -> Block {
    let coinbase = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(height.to_le_bytes().to_vec()),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Sat::from_sat(312_500_000),
            script_pubkey: script(TAG_OTHER, u64::from(height)),
        }],
    };
    txs.insert(0, coinbase);
    let mut b = Block {
        header: Header {
            version: BlockVersion::TWO,
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time: 1_700_000_000u32.saturating_add(height.saturating_mul(600)),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: height,
        },
        txdata: txs,
    };
    if let Some(root) = b.compute_merkle_root() {
        b.header.merkle_root = root;
    }
    b
}

/// A transaction from a coin that is not ours, paying `outputs`.
fn payment_tx(from: Txid, outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(from, 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: outputs,
    }
}

/// Opening balance of customer `i` (those without a deposit coin).
fn opening_sat(i: u64) -> u64 {
    100_000 + (i % 1_000) * 100
}

/// Value of deposit coin `k`.
fn deposit_coin_sat(k: u64) -> u64 {
    100_000 + (mix(k) % 1_000) * 100
}

#[derive(Debug, Default)]
struct BlockTimes {
    books_ns: Vec<u64>,
    connect_ns: Vec<u64>,
    plan_ns: Vec<u64>,
    apply_ns: Vec<u64>,
    reconcile_ns: Vec<u64>,
    total_ns: Vec<u64>,
}

fn reconcile_phase(a: &CustodyArgs) -> Result<Value> {
    let n = u64::from(a.customers);
    let u = u64::from(a.utxos);
    let blocks = u64::from(a.blocks);
    if n < u64::from(WITHDRAWALS_PER_BLOCK) * blocks {
        bail!(
            "--customers must be at least {WITHDRAWALS_PER_BLOCK} × --blocks (each timed block \
             pays {WITHDRAWALS_PER_BLOCK} withdrawals of customers who have not withdrawn yet)"
        );
    }
    // Hot coins: one spent per timed block, and about 1 % of the coins.
    let hot = (u / 100).max(blocks + 1);
    if u <= hot {
        bail!(
            "--utxos must be more than {hot} (1 % of them, and at least --blocks + 1, are \
             hot-wallet coins)"
        );
    }
    let deposit_coins = u - hot;
    let setup_started = Instant::now();

    let mut b = DirectEngine::new();
    for cmd in genesis::genesis() {
        b.must(&cmd)?;
    }
    let deposit_descriptor = wpkh_descriptor(21, NET)?;
    let hot_descriptor = wpkh_descriptor(22, NET)?;
    for (role, descriptor) in [
        (WalletRole::Deposit, &deposit_descriptor),
        (WalletRole::Hot, &hot_descriptor),
    ] {
        b.must(&Command::RegisterWallet {
            asset: BTC,
            role,
            descriptor: descriptor.clone(),
        })?;
    }
    let (deposit_wallet, hot_wallet) = (0u32, 1u32);
    b.must(&Command::SetWithdrawalPolicy {
        asset: BTC,
        policy: WithdrawalPolicy {
            fee: Amount::new(WITHDRAWAL_FEE_SAT),
            min_amount: Amount::new(2 * WITHDRAWAL_FEE_SAT),
            daily_limit: Amount::new(2_100_000_000_000_000),
            approval_above: Amount::new(2_100_000_000_000_000),
            address_delay_ms: 0,
            listed_only: false,
        },
    })?;

    // Which customer each deposit coin pays.
    let owner_of = |k: u64| -> u64 {
        if deposit_coins <= n {
            k * n / deposit_coins
        } else {
            k % n
        }
    };
    let mut has_coin = vec![false; usize::try_from(n)?];
    for k in 0..deposit_coins {
        if let Some(h) = has_coin.get_mut(usize::try_from(owner_of(k))?) {
            *h = true;
        }
    }

    let bar = progress(n, "customers");
    let mut opening_total = 0u64;
    for i in 0..n {
        let user = UserId(u32::try_from(i)?);
        b.must(&Command::CreateUser)?;
        b.must(&Command::AssignDepositAddress { user, asset: BTC })?;
        if !has_coin[usize::try_from(i)?] {
            let amount = opening_sat(i);
            opening_total += amount;
            b.must(&Command::Deposit {
                user,
                asset: BTC,
                amount: Amount::new(amount),
                reference: format!("opening-{i}"),
            })?;
        }
        if i % 4096 == 4095 {
            bar.inc(4096);
        }
    }
    bar.finish_and_clear();

    // The watcher: every customer's deposit address and the hot wallet's addresses.
    let bar = progress(n, "watch");
    let mut watcher = Watcher::new(1);
    for i in 0..n {
        watcher.watch(
            script(TAG_DEPOSIT, i),
            Owner {
                wallet: deposit_wallet,
                index: u32::try_from(i)?,
                user: Some(UserId(u32::try_from(i)?)),
            },
        );
        if i % 4096 == 4095 {
            bar.inc(4096);
        }
    }
    bar.finish_and_clear();
    for j in 0..hot {
        watcher.watch(
            script(TAG_HOT, j),
            Owner {
                wallet: hot_wallet,
                index: u32::try_from(j)?,
                user: None,
            },
        );
    }
    for j in 0..blocks {
        watcher.watch(
            script(TAG_CHANGE, j),
            Owner {
                wallet: hot_wallet,
                index: u32::try_from(j)?,
                user: None,
            },
        );
    }

    // The coins, in set-up blocks: the deposits, then the hot coins, which back the
    // opening balances with 0.1 BTC to spare each.
    let hot_sat = opening_total / hot + 10_000_000;
    let mut outputs: Vec<TxOut> = (0..deposit_coins)
        .map(|k| TxOut {
            value: Sat::from_sat(deposit_coin_sat(k)),
            script_pubkey: script(TAG_DEPOSIT, owner_of(k)),
        })
        .chain((0..hot).map(|j| TxOut {
            value: Sat::from_sat(hot_sat),
            script_pubkey: script(TAG_HOT, j),
        }))
        .collect();
    let mut hot_coins: Vec<OutPoint> = Vec::new();
    let mut setup_blocks = 0u64;
    let mut connect_setup_ns = 0u64;
    let bar = progress(u, "coins");
    let mut next = 0u64;
    while !outputs.is_empty() {
        let mut txs = Vec::new();
        while txs.len() < SETUP_TXS_PER_BLOCK && !outputs.is_empty() {
            let take = outputs.len().min(SETUP_OUTPUTS_PER_TX);
            let rest = outputs.split_off(take);
            let tx = payment_tx(
                fake_txid(TAG_OTHER, next),
                std::mem::replace(&mut outputs, rest),
            );
            let txid = tx.compute_txid();
            let first = next;
            next += tx.output.len() as u64;
            for (vout, _) in tx.output.iter().enumerate() {
                if first + vout as u64 >= deposit_coins {
                    hot_coins.push(OutPoint::new(txid, u32::try_from(vout)?));
                }
            }
            txs.push(tx);
        }
        let height = watcher.next_height();
        let prev = watcher.tip().map_or(BlockHash::all_zeros(), |(_, h)| h);
        let blk = block(prev, height, txs);
        let t = Instant::now();
        watcher
            .connect(height, &blk)
            .map_err(|e| anyhow!("connecting set-up block {height}: {e}"))?;
        connect_setup_ns += nanos(t.elapsed());
        setup_blocks += 1;
        bar.set_position(next);
    }
    bar.finish_and_clear();
    if watcher.coins().count() as u64 != u {
        bail!(
            "the watcher holds {} coins, not {u}",
            watcher.coins().count()
        );
    }

    // Catch up: the planner credits every deposit coin, then reconciles.
    let params = PlanParams {
        asset: BTC,
        confirmations: 1,
        dust_sat: 546,
    };
    let books = copy_books(&b.engine);
    let plan = plan_block(&watcher, &books, params, &[], true);
    let mut refused = 0u64;
    for cmd in &plan.commands {
        if b.apply(cmd).is_err() {
            refused += 1;
        }
    }
    if refused > 0 {
        bail!("the engine refused {refused} of the catch-up plan's commands");
    }
    let setup_s = setup_started.elapsed().as_secs();
    eprintln!(
        "  set up in {setup_s} s: {n} customers, {deposit_coins} deposit coins, {hot} hot coins"
    );

    // The timed blocks.
    let mut times = BlockTimes::default();
    let mut short_blocks = 0u64;
    let mut credited = 0u64;
    let mut settled = 0u64;
    let mut liabilities = 0u128;
    let mut holdings = 0u64;
    let bar = progress(blocks, "blocks");
    for blk_no in 0..blocks {
        // Not timed: the withdrawals and their batch, as the payout would build them.
        let mut ids = Vec::new();
        let mut pay_outputs = Vec::new();
        for k in 0..u64::from(WITHDRAWALS_PER_BLOCK) {
            let seq_no = blk_no * u64::from(WITHDRAWALS_PER_BLOCK) + k;
            let user = UserId(u32::try_from(seq_no % n)?);
            let to = script(TAG_FOREIGN, seq_no);
            let address = Address::from_script(&to, NET)
                .map_err(|e| anyhow!("withdrawal address: {e}"))?
                .to_string();
            let id = format!("w-{seq_no}");
            b.must(&Command::RequestChainWithdrawal {
                user,
                asset: BTC,
                amount: Amount::new(WITHDRAWAL_SAT),
                id: id.clone(),
                address,
            })?;
            ids.push(id);
            pay_outputs.push(TxOut {
                value: Sat::from_sat(WITHDRAWAL_SAT - WITHDRAWAL_FEE_SAT),
                script_pubkey: to,
            });
        }
        let coin = *hot_coins
            .get(usize::try_from(blk_no)?)
            .ok_or_else(|| anyhow!("out of hot coins"))?;
        let paid: u64 = pay_outputs.iter().map(|o| o.value.to_sat()).sum();
        let change_sat = hot_sat
            .checked_sub(paid + BATCH_NETWORK_FEE_SAT)
            .ok_or_else(|| anyhow!("a hot coin of {hot_sat} sat cannot pay a batch"))?;
        pay_outputs.push(TxOut {
            value: Sat::from_sat(change_sat),
            script_pubkey: script(TAG_CHANGE, blk_no),
        });
        let batch_tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: coin,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: pay_outputs,
        };
        let change_index = b
            .engine
            .wallets()
            .get(hot_wallet as usize)
            .map(|w| w.next_index)
            .ok_or_else(|| anyhow!("no hot wallet"))?;
        b.must(&Command::BuildWithdrawalBatch {
            asset: BTC,
            withdrawals: ids,
            inputs: vec![kura_engine::Outpoint {
                txid: coin.txid.to_byte_array(),
                vout: coin.vout,
            }],
            change: Some((hot_wallet, change_index)),
            network_fee: Amount::new(BATCH_NETWORK_FEE_SAT),
            txid: batch_tx.compute_txid().to_byte_array(),
        })?;
        let deposits = payment_tx(
            fake_txid(TAG_FOREIGN, blk_no),
            (0..u64::from(DEPOSITS_PER_BLOCK))
                .map(|k| TxOut {
                    value: Sat::from_sat(100_000 + k * 1_000),
                    script_pubkey: script(TAG_DEPOSIT, mix(blk_no * 16 + k) % n),
                })
                .collect(),
        );
        let height = watcher.next_height();
        let prev = watcher.tip().map_or(BlockHash::all_zeros(), |(_, h)| h);
        let blk = block(prev, height, vec![batch_tx, deposits]);

        // Timed: what the custody task does for one block.
        let t0 = Instant::now();
        let books = copy_books(&b.engine);
        let t1 = Instant::now();
        let spends = watcher
            .connect(height, &blk)
            .map_err(|e| anyhow!("connecting block {height}: {e}"))?;
        let t2 = Instant::now();
        let plan = plan_block(&watcher, &books, params, &spends, true);
        let t3 = Instant::now();
        let mut reconcile_ns = 0u64;
        let mut refused = Vec::new();
        for cmd in &plan.commands {
            let tc = Instant::now();
            let r = b.apply(cmd);
            if matches!(cmd, Command::Reconcile { .. }) {
                reconcile_ns = nanos(tc.elapsed());
            }
            match r {
                Ok(()) => {
                    for e in &b.events {
                        match &e.kind {
                            EventKind::Reconciled {
                                holdings: h,
                                liabilities: l,
                                ..
                            } => {
                                holdings = h.get();
                                liabilities = *l;
                                if u128::from(h.get()) < *l {
                                    short_blocks += 1;
                                }
                            }
                            EventKind::Deposited { .. } => credited += 1,
                            EventKind::WithdrawalSettled { .. } => settled += 1,
                            _ => {}
                        }
                    }
                }
                Err(r) => refused.push(format!("{}: {r}", cmd.name())),
            }
        }
        let t4 = Instant::now();
        if !refused.is_empty() {
            bail!("block {height}: the engine refused {refused:?}");
        }
        let expected = DEPOSITS_PER_BLOCK as usize + 2;
        if plan.commands.len() != expected {
            bail!(
                "block {height}: the plan has {} commands, not {expected} (4 credits, the \
                 batch's settlement, the reconciliation): {:?}",
                plan.commands.len(),
                plan.commands.iter().map(Command::name).collect::<Vec<_>>()
            );
        }
        times.books_ns.push(nanos(t1 - t0));
        times.connect_ns.push(nanos(t2 - t1));
        times.plan_ns.push(nanos(t3 - t2));
        times.apply_ns.push(nanos(t4 - t3));
        times.reconcile_ns.push(reconcile_ns);
        times.total_ns.push(nanos(t4 - t0));
        bar.inc(1);
    }
    bar.finish_and_clear();
    b.engine
        .check_invariants()
        .map_err(|e| anyhow!("invariant broken after the blocks: {e}"))?;

    let mut total = times.total_ns.clone();
    total.sort_unstable();
    let mut rec = times.reconcile_ns.clone();
    rec.sort_unstable();
    let books_sizes = copy_books(&b.engine);
    let r = json!({
        "customers": n,
        "utxos": u,
        "deposit_coins": deposit_coins,
        "hot_coins": hot,
        "deposit_addresses": books_sizes.address_count(),
        "credited_chain_deposits": books_sizes.credited_count(),
        "blocks": blocks,
        "per_block": {
            "new_deposits": DEPOSITS_PER_BLOCK,
            "withdrawals_settled": WITHDRAWALS_PER_BLOCK,
            "batches_confirmed": 1,
        },
        "ms_per_block_p50": ms(pct(&total, 500)),
        "ms_per_block_p99": ms(pct(&total, 990)),
        "ms_per_block_max": ms(total.last().copied().unwrap_or(0)),
        "books_copy_ms": summary_ms(&times.books_ns),
        "watcher_connect_ms": summary_ms(&times.connect_ns),
        "plan_ms": summary_ms(&times.plan_ns),
        "engine_apply_ms": summary_ms(&times.apply_ns),
        "engine_reconcile_us": {
            "p50": us(pct(&rec, 500)),
            "p99": us(pct(&rec, 990)),
        },
        "setup": {
            "seconds": setup_s,
            "blocks": setup_blocks,
            "watcher_connect_coins_per_sec": per_sec(u, connect_setup_ns),
        },
        "deposits_credited": credited,
        "withdrawals_settled": settled,
        "short_blocks": short_blocks,
        "last_holdings_sat": holdings,
        "last_liabilities_sat": liabilities.to_string(),
        "invariants_checked": true,
        "note": "in process, no journal: per block the node's copy of the books (credited chain \
                 deposits, deposit addresses, batches: O(deposit records + addresses)), \
                 Watcher::connect, plan_block (O(confirmed deposits)), and the engine applying \
                 the plan; the engine's Reconcile is O(1) (liabilities are a running total). \
                 Scripts are synthetic P2WPKH; blocks are synthesised.",
    });
    eprintln!(
        "  {} ms per block p50, {} ms p99 (books {} ms, connect {} ms, plan {} ms, apply {} ms at p50)",
        r["ms_per_block_p50"],
        r["ms_per_block_p99"],
        r["books_copy_ms"]["p50"],
        r["watcher_connect_ms"]["p50"],
        r["plan_ms"]["p50"],
        r["engine_apply_ms"]["p50"],
    );
    Ok(r)
}

// ---- 3. PSBT build and sign --------------------------------------------------------

/// A bare write of a small record and `fdatasync` in `dir`, median of a few, ns.
fn fsync_ns(dir: &Path) -> Result<u64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut samples = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        f.write_all(&[0x5a; 32])
            .and_then(|()| f.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        samples.push(nanos(t.elapsed()));
    }
    Ok(median(&samples))
}

fn psbt_phase(a: &CustodyArgs, dir: &Path) -> Result<Value> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pass = b"kura bench custody passphrase";
    let kdf = KdfParams {
        memory_kib: a.kdf_memory_mib * 1024,
        ..KdfParams::default()
    };
    let key_path = dir.join("hot.key");
    let t = Instant::now();
    let info = keyfile::create_with(&key_path, pass, NET, kdf)
        .map_err(|e| anyhow!("creating the key file: {e}"))?;
    let create_ns = nanos(t.elapsed());
    let t = Instant::now();
    let hot = keyfile::open(&key_path, pass).map_err(|e| anyhow!("opening the key file: {e}"))?;
    let open_ns = nanos(t.elapsed());
    let descriptor = info.descriptor.clone();
    let policy = Policy {
        max_fee_sat: 10_000_000,
        max_fee_rate_sat_vb: 1_000,
        hourly_cap_sat: u64::MAX / 4,
        daily_cap_sat: u64::MAX / 4,
    };
    let mut signer = Signer::new(
        hot,
        vec![descriptor.clone()],
        Vec::new(),
        policy,
        &dir.join("velocity.log"),
    )
    .map_err(|e| anyhow!("starting the signer: {e}"))?;

    let coins: Vec<SpendableCoin> = (0..a.psbt_coins)
        .map(|i| SpendableCoin {
            outpoint: OutPoint::new(fake_txid(TAG_HOT, u64::from(i)), i % 3),
            value_sat: 20_000 + (mix(u64::from(i)) % 1_000) * 1_000,
            descriptor: descriptor.clone(),
            index: i,
        })
        .collect();
    let payments: Vec<Payment> = (0..a.batch_outputs)
        .map(|i| Payment {
            script_pubkey: script(TAG_FOREIGN, 1_000_000 + u64::from(i)),
            amount_sat: PSBT_PAYMENT_SAT,
        })
        .collect();
    let change = ChangeTarget {
        descriptor: descriptor.clone(),
        index: a.psbt_coins,
    };
    let bar = progress(u64::from(a.psbt_repeats) * 2, "psbt");
    let mut build = Vec::new();
    let mut built = None;
    for _ in 0..a.psbt_repeats {
        let t = Instant::now();
        let p = build_psbt(&coins, &payments, &change, PSBT_FEE_RATE_SAT_VB, NET)
            .map_err(|e| anyhow!("building the batch: {e}"))?;
        build.push(nanos(t.elapsed()));
        built = Some(p);
        bar.inc(1);
    }
    let built = built.ok_or_else(|| anyhow!("no PSBT was built"))?;
    let auth = Authorization {
        batch: 1,
        inputs: built.inputs.clone(),
        payments: payments.clone(),
    };
    let mut sign = Vec::new();
    let mut signed = None;
    for _ in 0..a.psbt_repeats {
        let t = Instant::now();
        let s = signer
            .sign(&built.psbt, &auth, now_ms())
            .map_err(|e| anyhow!("the signer refused the batch: {e}"))?;
        sign.push(nanos(t.elapsed()));
        signed = Some(s);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let signed = signed.ok_or_else(|| anyhow!("nothing was signed"))?;
    if signed.txid != built.txid {
        bail!("the signed transaction's txid differs from the PSBT's");
    }
    let vsize = signed.tx.vsize() as u64;
    let fsync = fsync_ns(dir)?;
    let r = json!({
        "outputs": a.batch_outputs,
        "payment_sat": PSBT_PAYMENT_SAT,
        "coins_available": a.psbt_coins,
        "inputs": built.inputs.len(),
        "change_sat": built.change_sat,
        "build_ms": ms(median(&build)),
        "sign_ms": ms(median(&sign)),
        "repeats": a.psbt_repeats,
        "velocity_fsync_ms": ms(fsync),
        "key_create_ms": ms(create_ns),
        "key_open_ms": ms(open_ns),
        "kdf": format!("argon2id, {} MiB, {} passes, {} lane", a.kdf_memory_mib, kdf.iterations, kdf.parallelism),
        "vsize": vsize,
        "fee_sat": built.fee_sat,
        "fee_rate_sat_vb": PSBT_FEE_RATE_SAT_VB,
        "paid_rate_sat_vb": crate::bench_api::ratio(built.fee_sat, vsize),
        "note": "build: coin selection (largest first), size estimate and PSBT with key origins; \
                 sign: the hot signer's checks (inputs re-derived, payments matched, fee, \
                 velocity), ECDSA signatures, finalize, and the velocity record's write + \
                 fdatasync (velocity_fsync_ms is a bare one in the same directory); medians",
    });
    eprintln!(
        "  {} outputs from {} inputs: build {} ms, sign {} ms, {} vB, key open {} ms",
        a.batch_outputs,
        built.inputs.len(),
        r["build_ms"],
        r["sign_ms"],
        vsize,
        r["key_open_ms"]
    );
    Ok(r)
}

// ---- 4. block-to-credit latency on the devnet ---------------------------------------

fn wait_until(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CREDIT_TIMEOUT {
            bail!("timed out after {CREDIT_TIMEOUT:?} waiting for {what}");
        }
        std::thread::sleep(CREDIT_CHECK);
    }
}

fn credit_phase(a: &CustodyArgs, dir: &Path) -> Result<Value> {
    let mut config = ServerConfig::new(dir);
    config.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        confirmations: 1,
        poll: Duration::from_millis(a.poll_ms),
        ..CustodyConfig::default()
    };
    let t = Instant::now();
    let ex = Exchange::open(config, |_| {}).context("starting the exchange")?;
    let open_ns = nanos(t.elapsed());
    let result = measure_credits(a, &ex);
    let stopped = ex.stop();
    let mut r = result?;
    stopped.context("stopping the exchange")?;
    r["exchange_open_ms"] = json!(ms(open_ns));
    Ok(r)
}

fn measure_credits(a: &CustodyArgs, ex: &Exchange) -> Result<Value> {
    let started = Instant::now();
    let custody = ex
        .custody()
        .ok_or_else(|| anyhow!("the exchange has no custody task"))?;
    let devnet = custody
        .devnet()
        .ok_or_else(|| anyhow!("the exchange has no devnet"))?
        .clone();
    let handle = ex.backend().handle().clone();
    let caught_up = || -> Result<bool> {
        let tip = devnet.tip().height;
        let watched = {
            let v = custody.view();
            if let Some(e) = &v.last_error {
                tracing::debug!(error = %e, "custody");
            }
            v.synced && v.watcher.tip().map(|(h, _)| h) == Some(tip)
        };
        let reconciled = handle
            .query_wait(|e| e.last_reconciliation(BTC).map(|r| r.height))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(watched && reconciled == Some(tip))
    };
    wait_until("the custody task to follow the devnet", caught_up)?;
    let start_ms = ms(nanos(started.elapsed()));

    let name = "bench-depositor";
    let ack = handle
        .submit_wait(internal(Command::RegisterUser {
            name: name.to_owned(),
        }))
        .map_err(|e| anyhow!("registering the customer: {e}"))?;
    let events = ack
        .result
        .map_err(|r| anyhow!("registering the customer: {r}"))?;
    let user = events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::UserCreated { user } => Some(user),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no customer was created"))?;
    let address_text = custody.deposit_address(&handle, name)?;
    let address = Address::from_str(&address_text)
        .map_err(|e| anyhow!("the deposit address {address_text}: {e}"))?
        .require_network(NET)
        .map_err(|e| anyhow!("the deposit address {address_text}: {e}"))?;
    let available = |h: &kura::node::NodeHandle| -> Result<u64> {
        h.query_wait(move |e| {
            e.ledger()
                .balance(user, BTC)
                .map(|b| b.available.get())
                .unwrap_or(0)
        })
        .map_err(|e| anyhow!("{e}"))
    };
    // The task must watch the new address before the first payment confirms.
    wait_until("the custody task to watch the deposit address", || {
        Ok(custody
            .view()
            .addresses
            .values()
            .any(|a| *a == address_text))
    })?;

    let bar = progress(u64::from(a.credit_samples), "credits");
    let mut latency = Vec::new();
    let mut expected = available(&handle)?;
    let poll_us = a.poll_ms.saturating_mul(1_000);
    for k in 0..a.credit_samples {
        // Start at a pseudo-random point of the task's poll cycle: the wait for the last
        // block ended just as a pass finished, which would line every sample up with it.
        let phase_us = poll_us + mix(u64::from(k)) % poll_us;
        std::thread::sleep(Duration::from_micros(phase_us));
        let amount = 100_000 + u64::from(k) * 1_000;
        devnet
            .send(&address, Sat::from_sat(amount))
            .map_err(|e| anyhow!("paying the deposit address: {e}"))?;
        expected += amount;
        devnet.mine(1).map_err(|e| anyhow!("mining: {e}"))?;
        let t0 = Instant::now();
        wait_until("the credit", || Ok(available(&handle)? >= expected))?;
        latency.push(nanos(t0.elapsed()));
        // Let the task finish the block (its reconciliation) before the next sample.
        wait_until("the custody task to reconcile the block", caught_up)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut sorted = latency.clone();
    sorted.sort_unstable();
    let r = json!({
        "confirmations": 1,
        "poll_ms": a.poll_ms,
        "p50_ms": ms(pct(&sorted, 500)),
        "p99_ms": ms(pct(&sorted, 990)),
        "min_ms": ms(sorted.first().copied().unwrap_or(0)),
        "max_ms": ms(sorted.last().copied().unwrap_or(0)),
        "samples": sorted.len(),
        "devnet_sync_ms": start_ms,
        "what": "devnet.mine(1) returning → the customer's available balance shows the deposit \
                 (engine queried every 0.25 ms), each sample started at a pseudo-random point of \
                 the task's poll cycle. Includes waiting for the custody task's next poll \
                 (0 to poll_ms), fetching the block over the devnet's JSON-RPC, planning, \
                 and the Deposit command's journal fdatasync.",
    });
    eprintln!(
        "  block to credit p50 {} ms, p99 {} ms over {} samples (poll every {} ms)",
        r["p50_ms"], r["p99_ms"], r["samples"], a.poll_ms
    );
    Ok(r)
}

// ---- the run -----------------------------------------------------------------------

pub fn run(a: &CustodyArgs) -> Result<()> {
    let started = Instant::now();
    let load_at_start = loadavg();
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir::new(&parent, "custody")?;

    eprintln!("address derivation: {} addresses ...", a.addresses);
    let derive = derive_phase(a.addresses)?;

    eprintln!(
        "reconciliation: {} customers, {} coins, {} timed blocks ...",
        a.customers, a.utxos, a.blocks
    );
    let reconcile = reconcile_phase(a)?;

    eprintln!(
        "PSBT: {} outputs from {} coins, {} repeats ...",
        a.batch_outputs, a.psbt_coins, a.psbt_repeats
    );
    let psbt = psbt_phase(a, &tmp.0.join("signer"))?;

    eprintln!(
        "block-to-credit latency on the devnet: {} samples ...",
        a.credit_samples
    );
    let credit = credit_phase(a, &tmp.0.join("exchange"))?;

    let out = json!({
        "benchmark": "custody",
        "machine": machine(load_at_start),
        "derive": derive,
        "reconcile": reconcile,
        "psbt": psbt,
        "credit_latency": credit,
        "elapsed_s": started.elapsed().as_secs(),
    });
    drop(tmp);
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
