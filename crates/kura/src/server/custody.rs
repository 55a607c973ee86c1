//! The custody task: follows a chain source block by block with `kura-custody`'s
//! watcher and submits what its plan says through the sequencer, like any other command
//! (credits after N confirmations, reversals after a reorganisation, a withdrawal halt on
//! an unapproved spend of our coins, one reconciliation per block).
//!
//! The chain source is Bitcoin Core over JSON-RPC, or the built-in devnet. With the
//! devnet the node also serves the devnet's JSON-RPC on loopback and the task reads the
//! chain through it with the same client as for Bitcoin Core, so tests exercise the
//! production code path.
//!
//! Start-up: the watcher is rebuilt from the chain (from `start_height`); the commands it
//! plans again for blocks already processed are refused by the engine as duplicates, and
//! spends and reconciliations at or below the last reconciled height are not submitted
//! again (an operator who resumed withdrawals after an incident is not overruled by a
//! restart).

use crate::node::{self, NodeHandle};
use crate::signing;
use anyhow::{anyhow, Context, Result};
use kura_chain::bitcoin::bip32::Xpriv;
use kura_chain::bitcoin::{BlockHash, Network, ScriptBuf};
use kura_chain::{
    BlockRef, ChainSource, Devnet, DevnetOptions, DevnetRpcServer, MinerHandle, RpcAuth, RpcSource,
};
use kura_custody::{plan_block, BatchFacts, Books, Owner, PlanParams, SpendReport, Watcher};
use kura_engine::codec::{Entry, Origin};
use kura_engine::{Command, Engine, Reject, WalletRole};
use kura_units::{AssetId, UserId};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the chain comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainChoice {
    /// No chain: deposits only by operator credit.
    None,
    /// The built-in devnet in `DIR/devnet`, mining a block every `block_interval` if set.
    Devnet { block_interval: Option<Duration> },
    /// Bitcoin Core's JSON-RPC.
    Bitcoind {
        url: String,
        cookie: Option<PathBuf>,
        user: Option<String>,
        password: Option<String>,
        network: Network,
    },
}

/// The custody task's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyConfig {
    pub chain: ChainChoice,
    /// Confirmations before a deposit is credited (1 = in the tip block).
    pub confirmations: u32,
    /// Deposits below this many satoshis are never credited.
    pub dust_sat: u64,
    /// How often the chain source is asked for a new tip.
    pub poll: Duration,
    /// First block that can hold our coins (the wallets' birthday).
    pub start_height: u32,
    /// The batcher that pays chain withdrawals.
    pub payout: super::payout::PayoutConfig,
    /// The withdrawal rules journaled for BTC at start (when they differ from the books').
    pub withdrawal_policy: kura_engine::WithdrawalPolicy,
    /// The hot signer's own limits (for the in-process signer; a separate one has its
    /// own).
    pub signer_policy: kura_signer::Policy,
    /// A separate signer (`kura signer serve`) at this socket, instead of the hot key
    /// in this process.
    pub signer_socket: Option<PathBuf>,
}

/// The default withdrawal rules: a 0.0001 BTC fee, 0.0002 BTC minimum, 2 BTC a day,
/// review above 1 BTC, new addresses payable after 24 hours.
pub const DEFAULT_WITHDRAWAL_POLICY: kura_engine::WithdrawalPolicy =
    kura_engine::WithdrawalPolicy {
        fee: kura_units::Amount::new(10_000),
        min_amount: kura_units::Amount::new(20_000),
        daily_limit: kura_units::Amount::new(200_000_000),
        approval_above: kura_units::Amount::new(100_000_000),
        address_delay_ms: 24 * 3_600_000,
        listed_only: false,
    };

impl Default for CustodyConfig {
    fn default() -> Self {
        CustodyConfig {
            chain: ChainChoice::None,
            confirmations: 3,
            dust_sat: 546,
            poll: Duration::from_millis(500),
            start_height: 0,
            payout: super::payout::PayoutConfig::default(),
            withdrawal_policy: DEFAULT_WITHDRAWAL_POLICY,
            signer_policy: kura_signer::Policy::default(),
            signer_socket: None,
        }
    }
}

/// What the task knows, for status displays and the API.
#[derive(Debug)]
pub struct CustodyView {
    pub watcher: Watcher,
    pub network: Network,
    pub params: PlanParams,
    /// The chain source's tip when last asked.
    pub chain_tip: Option<BlockRef>,
    /// Whether the watcher has followed every block up to that tip.
    pub synced: bool,
    /// The last error talking to the chain source or the node, if the last pass failed.
    pub last_error: Option<String>,
    /// Blocks processed since start.
    pub blocks: u64,
    /// Passes of the task since start (each: follow the chain, then pay or rebalance).
    pub passes: u64,
    /// The address text of every watched deposit address, by (wallet, index).
    pub addresses: std::collections::HashMap<(u32, u32), String>,
    /// The separate signer's socket, when the hot key is not in this process.
    pub signer_socket: Option<PathBuf>,
}

/// The running custody task (and the devnet, when it is the chain source).
#[derive(Debug)]
pub struct Custody {
    view: Arc<Mutex<CustodyView>>,
    control: crossbeam_channel::Sender<Control>,
    thread: Option<JoinHandle<()>>,
    devnet: Option<DevnetParts>,
    /// `DIR/signer/`'s lock while this node signs in process (so that no `kura signer
    /// serve` opens the same secrets and velocity record at once).
    _signer_lock: Option<super::files::DirLock>,
}

#[derive(Debug)]
struct DevnetParts {
    devnet: Devnet,
    rpc: Option<DevnetRpcServer>,
    miner: Option<MinerHandle>,
}

/// Requests to the custody thread.
enum Control {
    Stop,
    /// Replace an open batch's transaction with one paying a higher fee rate.
    Bump {
        batch: u64,
        fee_rate_sat_vb: u64,
        /// Who asked: journaled with the replacement.
        origin: Origin,
        reply: crossbeam_channel::Sender<Result<kura_chain::bitcoin::Txid>>,
    },
    /// Double-spend an open batch's coins back to our hot wallet at a higher fee rate.
    Cancel {
        batch: u64,
        fee_rate_sat_vb: u64,
        /// Who asked: journaled with the replacement.
        origin: Origin,
        reply: crossbeam_channel::Sender<Result<kura_chain::bitcoin::Txid>>,
    },
    /// Close a refill that never reached the network and unlock its cold coins.
    Abandon {
        batch: u64,
        origin: Origin,
        reply: crossbeam_channel::Sender<Result<kura_chain::bitcoin::Txid>>,
    },
}

/// Operator actions on open batches, sent to the custody task (cloneable, for the
/// admin socket).
#[derive(Clone, Debug)]
pub struct CustodyControl {
    control: crossbeam_channel::Sender<Control>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Stop => "Stop",
            Control::Bump { .. } => "Bump",
            Control::Cancel { .. } => "Cancel",
            Control::Abandon { .. } => "Abandon",
        })
    }
}

impl CustodyControl {
    fn ask(
        &self,
        make: impl FnOnce(crossbeam_channel::Sender<Result<kura_chain::bitcoin::Txid>>) -> Control,
    ) -> Result<kura_chain::bitcoin::Txid> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.control
            .send(make(reply))
            .map_err(|_| anyhow!("the custody task has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the custody task stopped before answering"))?
    }

    /// Replace open batch `batch`'s transaction with one paying `fee_rate_sat_vb` (same
    /// coins, same payments, less change); the new txid.
    pub fn bump(&self, batch: u64, fee_rate_sat_vb: u64) -> Result<kura_chain::bitcoin::Txid> {
        self.bump_as(batch, fee_rate_sat_vb, Origin::Internal)
    }

    /// [`CustodyControl::bump`] on behalf of `origin` (an operator and their reason),
    /// which the journal records with the new version.
    pub fn bump_as(
        &self,
        batch: u64,
        fee_rate_sat_vb: u64,
        origin: Origin,
    ) -> Result<kura_chain::bitcoin::Txid> {
        self.ask(|reply| Control::Bump {
            batch,
            fee_rate_sat_vb,
            origin,
            reply,
        })
    }

    /// Cancel open batch `batch`: a transaction spending the same coins back to our hot
    /// wallet, at `fee_rate_sat_vb` (at least 1 sat/vB above the last version). Its
    /// withdrawals are refunded only when that transaction confirms; if a paying
    /// version confirms instead, they are settled. The cancelling txid.
    pub fn cancel(&self, batch: u64, fee_rate_sat_vb: u64) -> Result<kura_chain::bitcoin::Txid> {
        self.cancel_as(batch, fee_rate_sat_vb, Origin::Internal)
    }

    /// [`CustodyControl::cancel`] on behalf of `origin`, journaled with the cancellation.
    pub fn cancel_as(
        &self,
        batch: u64,
        fee_rate_sat_vb: u64,
        origin: Origin,
    ) -> Result<kura_chain::bitcoin::Txid> {
        self.ask(|reply| Control::Cancel {
            batch,
            fee_rate_sat_vb,
            origin,
            reply,
        })
    }
}

impl CustodyControl {
    /// Abandon open refill `batch` on behalf of `origin`: refused unless it is a refill
    /// from cold storage none of whose versions is in the mempool or the chain. Its cold
    /// coins are unlocked (the next refill may spend them); should it confirm after all,
    /// the spend is unexplained and withdrawals halt. The abandoned version's txid.
    pub fn abandon_as(&self, batch: u64, origin: Origin) -> Result<kura_chain::bitcoin::Txid> {
        self.ask(|reply| Control::Abandon {
            batch,
            origin,
            reply,
        })
    }
}

/// BTC, the only asset with a chain.
fn btc(engine: &Engine) -> Option<AssetId> {
    engine.asset_by_symbol("BTC")
}

fn submit_events(
    handle: &NodeHandle,
    command: Command,
) -> Result<std::result::Result<Vec<kura_engine::Event>, Reject>> {
    let ack = handle
        .submit_wait(node::internal(command))
        .map_err(|e| anyhow!("submitting a custody command: {e}"))?;
    Ok(ack.result)
}

fn submit(handle: &NodeHandle, command: Command) -> Result<std::result::Result<(), Reject>> {
    let ack = handle
        .submit_wait(node::internal(command))
        .map_err(|e| anyhow!("submitting a custody command: {e}"))?;
    Ok(ack.result.map(|_| ()))
}

/// Who signs for the hot and deposit wallets: their keys opened in this process, or
/// the separate signer that holds them.
enum SignerKeys {
    Local {
        hot: Box<kura_signer::HotKey>,
        deposit: Xpriv,
        lock: super::files::DirLock,
    },
    Remote(signing::client::Client),
}

/// The hot and deposit wallets' descriptors, and who signs for them.
struct Descriptors {
    hot_descriptor: String,
    deposit_descriptor: String,
    keys: SignerKeys,
}

impl SignerKeys {
    fn open(dir: &Path, socket: Option<&Path>, network: Network) -> Result<Descriptors> {
        match socket {
            None => {
                let lock = signing::keys::lock_signer_dir(dir)?;
                let hot = signing::keys::hot_key(dir, network, signing::keys::Missing::Create)?;
                let deposit =
                    signing::keys::deposit_master(dir, network, signing::keys::Missing::Create)?;
                Ok(Descriptors {
                    hot_descriptor: signing::keys::hot_descriptor_of(&hot)?,
                    deposit_descriptor: signing::keys::deposit_descriptor_of(&deposit, network)?,
                    keys: SignerKeys::Local {
                        hot: Box::new(hot),
                        deposit,
                        lock,
                    },
                })
            }
            Some(socket) => {
                let client = signing::client::Client::new(socket);
                let hello = client.wait_hello(Duration::from_secs(30))?;
                if hello.network != network.to_string() {
                    anyhow::bail!(
                        "the signer at {} signs for {}, but the chain is {network}",
                        socket.display(),
                        hello.network
                    );
                }
                tracing::info!(socket = %socket.display(), journal_seq = hello.journal_seq, "using the separate signer");
                Ok(Descriptors {
                    hot_descriptor: hello.hot_descriptor,
                    deposit_descriptor: hello.deposit_descriptor,
                    keys: SignerKeys::Remote(client),
                })
            }
        }
    }
}

impl Descriptors {
    /// The payout's signer: the in-process one (over `ours`, with `policy` and the
    /// velocity record in `DIR/signer/`), or the client of the separate one.
    fn signer(
        self,
        ours: Vec<String>,
        policy: kura_signer::Policy,
        dir: &Path,
    ) -> Result<(signing::HotSigner, Option<super::files::DirLock>)> {
        Ok(match self.keys {
            SignerKeys::Local { hot, deposit, lock } => (
                signing::HotSigner::Local(Box::new(
                    kura_signer::Signer::new(
                        *hot,
                        ours,
                        vec![deposit],
                        policy,
                        &signing::keys::signer_dir(dir).join("velocity.log"),
                    )
                    .map_err(|e| anyhow!("starting the signer: {e}"))?,
                )),
                Some(lock),
            ),
            SignerKeys::Remote(client) => (signing::HotSigner::Remote(client), None),
        })
    }
}

impl Custody {
    /// Start the chain source and the task. Registers the deposit wallet on first start.
    pub fn start(
        dir: &Path,
        config: &CustodyConfig,
        handle: NodeHandle,
    ) -> Result<Option<Custody>> {
        let (source, network, devnet): (Box<dyn ChainSource + Send>, Network, Option<DevnetParts>) =
            match &config.chain {
                ChainChoice::None => return Ok(None),
                ChainChoice::Devnet { block_interval } => {
                    let devnet =
                        Devnet::open_with(&dir.join("devnet"), DevnetOptions { premine: 101 })
                            .context("opening the devnet")?;
                    let rpc = DevnetRpcServer::start(devnet.clone(), 0)
                        .context("starting the devnet's JSON-RPC server")?;
                    let source = RpcSource::for_endpoint(rpc.endpoint())
                        .map_err(|e| anyhow!("connecting to the devnet's JSON-RPC: {e}"))?;
                    let miner = block_interval.map(|i| devnet.start_miner(i));
                    (
                        Box::new(source),
                        Network::Regtest,
                        Some(DevnetParts {
                            devnet,
                            rpc: Some(rpc),
                            miner,
                        }),
                    )
                }
                ChainChoice::Bitcoind {
                    url,
                    cookie,
                    user,
                    password,
                    network,
                } => {
                    let auth = match (cookie, user, password) {
                        (Some(c), _, _) => RpcAuth::CookieFile(c.clone()),
                        (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
                        _ => anyhow::bail!(
                            "bitcoind needs --rpc-cookie FILE or --rpc-user and --rpc-password"
                        ),
                    };
                    let source = RpcSource::new(url, auth)
                        .map_err(|e| anyhow!("connecting to bitcoind at {url}: {e}"))?;
                    (Box::new(source), *network, None)
                }
            };
        let keys = SignerKeys::open(dir, config.signer_socket.as_deref(), network)?;
        let descriptor = keys.deposit_descriptor.clone();
        let asset = handle
            .query_wait(btc)
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("the exchange has no BTC asset"))?;
        let registered = handle
            .query_wait(move |e| {
                e.wallets()
                    .iter()
                    .any(|w| w.asset == asset && w.role == WalletRole::Deposit)
            })
            .map_err(|e| anyhow!("{e}"))?;
        if !registered {
            submit(
                &handle,
                Command::RegisterWallet {
                    asset,
                    role: WalletRole::Deposit,
                    descriptor: descriptor.clone(),
                },
            )?
            .map_err(|r| anyhow!("registering the deposit wallet: {r}"))?;
            tracing::info!(%descriptor, "registered the deposit wallet");
        }
        let hot_descriptor = keys.hot_descriptor.clone();
        let (hot_registered, policy) = {
            let d = hot_descriptor.clone();
            handle
                .query_wait(move |e| {
                    (
                        e.wallets().iter().any(|w| w.descriptor == d),
                        e.withdrawal_policy(asset),
                    )
                })
                .map_err(|e| anyhow!("{e}"))?
        };
        if !hot_registered {
            submit(
                &handle,
                Command::RegisterWallet {
                    asset,
                    role: WalletRole::Hot,
                    descriptor: hot_descriptor.clone(),
                },
            )?
            .map_err(|r| anyhow!("registering the hot wallet: {r}"))?;
            tracing::info!(descriptor = %hot_descriptor, "registered the hot wallet");
        }
        if policy != Some(config.withdrawal_policy) {
            submit(
                &handle,
                Command::SetWithdrawalPolicy {
                    asset,
                    policy: config.withdrawal_policy,
                },
            )?
            .map_err(|r| anyhow!("setting the withdrawal policy: {r}"))?;
        }
        let ours = handle
            .query_wait(move |e| {
                e.wallets()
                    .iter()
                    .filter(|w| w.asset == asset)
                    .map(|w| w.descriptor.clone())
                    .collect::<Vec<_>>()
            })
            .map_err(|e| anyhow!("{e}"))?;
        let (signer, signer_lock) = keys.signer(ours, config.signer_policy, dir)?;
        let payout = super::payout::Payout::new(signer, config.payout, network, asset, dir)?;
        let params = PlanParams {
            asset,
            confirmations: config.confirmations.max(1),
            dust_sat: config.dust_sat,
        };
        let view = Arc::new(Mutex::new(CustodyView {
            watcher: Watcher::new(config.start_height),
            network,
            params,
            chain_tip: None,
            synced: false,
            last_error: None,
            blocks: 0,
            passes: 0,
            addresses: std::collections::HashMap::new(),
            signer_socket: config.signer_socket.clone(),
        }));
        let (control, requests) = crossbeam_channel::bounded::<Control>(16);
        let task = Task {
            source,
            handle,
            view: Arc::clone(&view),
            watched: HashSet::new(),
            payout,
        };
        let poll = config.poll;
        let thread = std::thread::Builder::new()
            .name("kura-custody".into())
            .spawn(move || task.run(poll, requests))
            .context("starting the custody thread")?;
        Ok(Some(Custody {
            view,
            control,
            thread: Some(thread),
            devnet,
            _signer_lock: signer_lock,
        }))
    }

    /// The task's view (watcher, tip, last error).
    pub fn view(&self) -> MutexGuard<'_, CustodyView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A shared handle on the view, for readers on other threads.
    pub fn view_handle(&self) -> Arc<Mutex<CustodyView>> {
        Arc::clone(&self.view)
    }

    /// What the wallet endpoints need to know of the chain, answered from the view.
    pub fn chain_facts(&self) -> Arc<dyn kura_api::backend::Chain> {
        Arc::new(ChainFacts {
            view: Arc::clone(&self.view),
        })
    }

    /// The devnet, when it is the chain source.
    pub fn devnet(&self) -> Option<&Devnet> {
        self.devnet.as_ref().map(|d| &d.devnet)
    }

    /// Operator actions on open batches (bump, cancel).
    pub fn control(&self) -> CustodyControl {
        CustodyControl {
            control: self.control.clone(),
        }
    }

    /// Replace open withdrawal batch `batch`'s transaction with one paying
    /// `fee_rate_sat_vb` (same coins, same payments, less change); the new txid.
    pub fn bump(&self, batch: u64, fee_rate_sat_vb: u64) -> Result<kura_chain::bitcoin::Txid> {
        self.control().bump(batch, fee_rate_sat_vb)
    }

    /// Cancel open withdrawal batch `batch` by a double-spend to our hot wallet; see
    /// [`CustodyControl::cancel`].
    pub fn cancel(&self, batch: u64, fee_rate_sat_vb: u64) -> Result<kura_chain::bitcoin::Txid> {
        self.control().cancel(batch, fee_rate_sat_vb)
    }

    /// Stop the task (and the devnet's miner and RPC server).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.control.try_send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut d) = self.devnet.take() {
            drop(d.miner.take());
            if let Some(rpc) = d.rpc.take() {
                rpc.stop();
            }
        }
    }
}

impl Drop for Custody {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The books as the planner needs them, copied out of the engine, and kept up to date
/// with what the task itself submits.
#[derive(Debug, Default)]
pub struct Snapshot {
    credited: BTreeSet<String>,
    halted: bool,
    last_reconciled: Option<u32>,
    /// (user, wallet, index, descriptor) of every BTC deposit address.
    addresses: Vec<(UserId, u32, u32, String)>,
    /// Our own wallets other than deposit wallets (hot, cold, retired): id,
    /// descriptor, next unused index.
    own: Vec<(u32, String, u32)>,
    /// Every coin of a batch still open or finished recently, with the batch's facts.
    batches: std::collections::BTreeMap<kura_chain::bitcoin::OutPoint, BatchFacts>,
}

/// How many blocks back a finished batch is still recognised (a reorganisation deeper
/// than this that confirms it again would be judged anew).
const FINISHED_BATCH_WINDOW: u32 = 144;

/// Finished batches kept in the planner's view, newest first.
const RECENT_BATCHES: u64 = 256;

/// Addresses of our own wallets (hot, cold, retired) watched beyond the next unused
/// index.
const HOT_LOOKAHEAD: u32 = 20;

impl Books for Snapshot {
    fn credited(&self, reference: &str) -> bool {
        self.credited.contains(reference)
    }
    fn credited_chain_deposits(&self) -> Vec<String> {
        self.credited.iter().cloned().collect()
    }
    fn withdrawals_halted(&self) -> bool {
        self.halted
    }
    fn batch_of(&self, coin: &kura_chain::bitcoin::OutPoint) -> Option<BatchFacts> {
        self.batches.get(coin).cloned()
    }
}

impl Snapshot {
    /// Credited chain deposits in the copy.
    pub fn credited_count(&self) -> usize {
        self.credited.len()
    }
    /// Deposit addresses in the copy.
    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }
}

/// Copy what the planner needs out of the engine (what each custody pass does; public
/// so that `kura bench custody` times this very function).
pub fn snapshot(engine: &Engine, asset: AssetId, network: Network) -> Snapshot {
    use kura_chain::bitcoin::hashes::Hash as _;
    use kura_chain::bitcoin::{OutPoint, Txid};
    let last_reconciled = engine.last_reconciliation(asset).map(|r| r.height);
    let horizon = last_reconciled.map_or(0, |h| h.saturating_sub(FINISHED_BATCH_WINDOW));
    let mut batches = std::collections::BTreeMap::new();
    // Open batches, and the most recent ones (a finished batch matters only while a
    // reorganisation could confirm it again): O(open + RECENT_BATCHES), not O(history).
    let all = engine.withdrawal_batches().len() as u64;
    let ids: BTreeSet<u64> = engine
        .open_withdrawal_batches()
        .chain(all.saturating_sub(RECENT_BATCHES)..all)
        .collect();
    for id in ids {
        let Some(b) = engine.withdrawal_batch(id) else {
            continue;
        };
        let (open, finished_by) = match b.state {
            kura_engine::BatchState::Open => (true, None),
            kura_engine::BatchState::Confirmed { txid, height }
            | kura_engine::BatchState::Cancelled { txid, height } => {
                if height < horizon {
                    continue;
                }
                (false, Some(Txid::from_byte_array(txid)))
            }
            // Abandoned before it reached the network: a spend of its coins is one no
            // batch explains.
            kura_engine::BatchState::Abandoned => continue,
        };
        if b.asset != asset {
            continue;
        }
        let payments = super::payout::batch_payments(engine, b, network)
            .map(|p| super::payout::payment_scripts(&p))
            .unwrap_or_default();
        let facts = BatchFacts {
            id,
            open,
            payments,
            finished_by,
        };
        for input in &b.inputs {
            batches.insert(
                OutPoint::new(Txid::from_byte_array(input.txid), input.vout),
                facts.clone(),
            );
        }
    }
    let own = engine
        .wallets()
        .iter()
        .enumerate()
        .filter(|(_, w)| w.asset == asset && w.role != WalletRole::Deposit)
        .map(|(i, w)| (i as u32, w.descriptor.clone(), w.next_index))
        .collect();
    let credited = engine
        .deposit_records()
        .filter(|(r, d)| {
            d.asset == asset && !d.reversed && r.parse::<kura_chain::bitcoin::OutPoint>().is_ok()
        })
        .map(|(r, _)| r.to_owned())
        .collect();
    let wallets = engine.wallets();
    let addresses = engine
        .deposit_addresses()
        .filter(|((_, a), _)| *a == asset)
        .filter_map(|((user, _), (wallet, index))| {
            let w = wallets.get(wallet as usize)?;
            Some((user, wallet, index, w.descriptor.clone()))
        })
        .collect();
    Snapshot {
        credited,
        halted: engine.withdrawals_halted(asset).is_some(),
        last_reconciled,
        addresses,
        own,
        batches,
    }
}

struct Task {
    source: Box<dyn ChainSource + Send>,
    handle: NodeHandle,
    view: Arc<Mutex<CustodyView>>,
    /// (wallet, index) already given to the watcher.
    watched: HashSet<(u32, u32)>,
    payout: super::payout::Payout,
}

impl Task {
    fn view(&self) -> MutexGuard<'_, CustodyView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(mut self, poll: Duration, requests: crossbeam_channel::Receiver<Control>) {
        loop {
            let result = self.pass();
            let mut view = self.view();
            view.passes += 1;
            match result {
                Ok(()) => view.last_error = None,
                Err(e) => {
                    tracing::warn!(error = %e, "custody pass failed; retrying");
                    view.last_error = Some(format!("{e:#}"));
                }
            }
            drop(view);
            match requests.recv_timeout(poll) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Ok(Control::Bump {
                    batch,
                    fee_rate_sat_vb,
                    origin,
                    reply,
                }) => {
                    let _ = reply.send(self.replace(batch, fee_rate_sat_vb, false, origin));
                }
                Ok(Control::Cancel {
                    batch,
                    fee_rate_sat_vb,
                    origin,
                    reply,
                }) => {
                    let _ = reply.send(self.replace(batch, fee_rate_sat_vb, true, origin));
                }
                Ok(Control::Abandon {
                    batch,
                    origin,
                    reply,
                }) => {
                    let _ = reply.send(self.abandon(batch, origin));
                }
                Ok(Control::Stop) | Err(_) => return,
            }
        }
    }

    fn payout_books(&self) -> Result<super::payout::PayoutBooks> {
        let (asset, network) = {
            let v = self.view();
            (v.params.asset, v.network)
        };
        let now = super::payout::now_ms();
        self.handle
            .query_wait(move |e| super::payout::payout_books(e, asset, network, now))
            .map_err(|e| anyhow!("{e}"))
    }

    /// See [`CustodyControl::abandon_as`].
    fn abandon(&mut self, batch: u64, origin: Origin) -> Result<kura_chain::bitcoin::Txid> {
        use kura_chain::bitcoin::hashes::Hash as _;
        let books = self.payout_books()?;
        let open = books
            .open
            .get(&batch)
            .ok_or_else(|| anyhow!("batch {batch} is not open"))?;
        if !open.refill {
            anyhow::bail!(
                "batch {batch} is not a refill from cold storage: cancel it by a double-spend (kura admin batch cancel)"
            );
        }
        let versions = self
            .handle
            .query_wait(move |e| {
                e.withdrawal_batch(batch)
                    .map(|b| b.versions.iter().map(|v| v.txid).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .map_err(|e| anyhow!("{e}"))?;
        for txid in versions {
            let txid = kura_chain::bitcoin::Txid::from_byte_array(txid);
            let found = self
                .source
                .get_tx(&txid)
                .map_err(|e| anyhow!("looking for {txid}: {e}"))?;
            if let Some((_, status)) = found {
                anyhow::bail!(
                    "refill {batch}'s transaction {txid} is on the network ({status:?}): it may confirm, so it cannot be abandoned"
                );
            }
        }
        let ack = self
            .handle
            .submit_wait(Entry {
                ctx_timestamp_ms: 0,
                origin,
                command: Command::AbandonTransfer { batch },
            })
            .map_err(|e| anyhow!("submitting the abandonment: {e}"))?;
        ack.result
            .map_err(|r| anyhow!("the books refused to abandon batch {batch}: {r}"))?;
        tracing::warn!(batch, txid = %open.txid, "refill abandoned before it reached the network; its cold coins are unlocked");
        Ok(open.txid)
    }

    /// Replace open batch `batch`'s transaction at `fee_rate_sat_vb`: a fee bump (same
    /// payments), or with `cancel` a double-spend back to our hot wallet.
    fn replace(
        &mut self,
        batch: u64,
        fee_rate_sat_vb: u64,
        cancel: bool,
        origin: Origin,
    ) -> Result<kura_chain::bitcoin::Txid> {
        let books = self.payout_books()?;
        let coins = super::payout::coins_of(&self.view().watcher);
        let handle = self.handle.clone();
        let mut submit = |command: Command| {
            let ack = handle
                .submit_wait(Entry {
                    ctx_timestamp_ms: 0,
                    origin: origin.clone(),
                    command,
                })
                .map_err(|e| anyhow!("submitting a custody command: {e}"))?;
            Ok(ack.result)
        };
        let replace = if cancel {
            super::payout::Payout::cancel
        } else {
            super::payout::Payout::bump
        };
        replace(
            &mut self.payout,
            batch,
            fee_rate_sat_vb,
            &books,
            &coins,
            self.source.as_ref(),
            &mut submit,
        )
    }

    /// Pay what is ready (after the books have caught up with the chain).
    fn pay(&mut self) -> Result<()> {
        let books = self.payout_books()?;
        let coins = super::payout::coins_of(&self.view().watcher);
        let handle = self.handle.clone();
        let mut submit = |c: Command| submit_events(&handle, c);
        self.payout
            .pass(&books, &coins, self.source.as_ref(), &mut submit)
    }

    /// One pass: learn new addresses, step back over a reorganisation, follow new blocks
    /// (planning after each), refresh the mempool view.
    fn pass(&mut self) -> Result<()> {
        let (network, params) = {
            let v = self.view();
            (v.network, v.params)
        };
        let asset = params.asset;
        let mut books = self
            .handle
            .query_wait(move |e| snapshot(e, asset, network))
            .map_err(|e| anyhow!("{e}"))?;
        self.watch_new(&books, network)?;
        // Step back while our tip is not the source's block at that height.
        let mut reorged = false;
        loop {
            let Some((height, hash)) = self.view().watcher.tip() else {
                break;
            };
            if self.source.block_hash(height)? == Some(hash) {
                break;
            }
            self.view()
                .watcher
                .disconnect()
                .map_err(|e| anyhow!("stepping back over a reorganisation: {e}"))?;
            reorged = true;
            tracing::warn!(height, %hash, "block left the best chain");
        }
        let tip = self.source.tip()?;
        self.view().chain_tip = Some(tip);
        let next = self.view().watcher.next_height();
        for height in next..=tip.height {
            let hash: BlockHash = self.source.block_hash(height)?.ok_or_else(|| {
                anyhow!("the chain source has no block at {height} below its tip")
            })?;
            let block = self
                .source
                .block(&hash)?
                .ok_or_else(|| anyhow!("the chain source does not have block {hash}"))?;
            let spends = {
                let mut v = self.view();
                let spends = v
                    .watcher
                    .connect(height, &block)
                    .map_err(|e| anyhow!("following block {height}: {e}"))?;
                v.blocks += 1;
                v.synced = height == tip.height;
                spends
            };
            self.plan_and_submit(&mut books, params, &spends, height == tip.height)?;
        }
        if reorged && next > tip.height {
            // The chain got shorter or stayed as long: plan at the current tip anyway.
            self.view().synced = true;
            self.plan_and_submit(&mut books, params, &[], true)?;
        }
        if next > tip.height && !reorged {
            self.view().synced = true;
        }
        let mempool = self.source.mempool_txs()?;
        self.view().watcher.set_mempool(&mempool);
        if self.view().synced {
            self.pay()?;
        }
        Ok(())
    }

    fn watch_new(&mut self, books: &Snapshot, network: Network) -> Result<()> {
        for (wallet, descriptor, next) in &books.own {
            for index in 0..next.saturating_add(HOT_LOOKAHEAD) {
                if self.watched.contains(&(*wallet, index)) {
                    continue;
                }
                let (script, _) = kura_custody::derive(descriptor, index, network)
                    .map_err(|e| anyhow!("deriving address {wallet}/{index}: {e}"))?;
                self.view().watcher.watch(
                    script,
                    Owner {
                        wallet: *wallet,
                        index,
                        user: None,
                    },
                );
                self.watched.insert((*wallet, index));
            }
        }
        for (user, wallet, index, descriptor) in &books.addresses {
            if self.watched.contains(&(*wallet, *index)) {
                continue;
            }
            let (script, address): (ScriptBuf, _) =
                kura_custody::derive(descriptor, *index, network)
                    .map_err(|e| anyhow!("deriving deposit address {wallet}/{index}: {e}"))?;
            let mut v = self.view();
            v.watcher.watch(
                script,
                Owner {
                    wallet: *wallet,
                    index: *index,
                    user: Some(*user),
                },
            );
            v.addresses.insert((*wallet, *index), address.to_string());
            drop(v);
            self.watched.insert((*wallet, *index));
        }
        Ok(())
    }

    fn plan_and_submit(
        &mut self,
        books: &mut Snapshot,
        params: PlanParams,
        spends: &[SpendReport],
        synced: bool,
    ) -> Result<()> {
        let last = books.last_reconciled;
        // Spends at heights already reconciled were judged before (maybe resumed by an
        // operator since); a restart must not judge them again.
        let fresh: Vec<SpendReport> = spends
            .iter()
            .filter(|s| last.is_none_or(|l| s.height > l))
            .cloned()
            .collect();
        let plan = {
            let v = self.view();
            plan_block(&v.watcher, books, params, &fresh, synced)
        };
        for command in plan.commands {
            if let Command::Reconcile { height, .. } = &command {
                if last.is_some_and(|l| *height <= l) {
                    continue;
                }
            }
            let what = command.name();
            match submit(&self.handle, command.clone())? {
                Ok(()) => {
                    match &command {
                        Command::Deposit { reference, .. } => {
                            books.credited.insert(reference.clone());
                        }
                        Command::ReverseDeposit { reference, .. } => {
                            books.credited.remove(reference);
                        }
                        Command::HaltWithdrawals { reason, .. } => {
                            books.halted = true;
                            tracing::error!(%reason, "withdrawals halted");
                        }
                        Command::Reconcile { height, .. } => {
                            books.last_reconciled = Some(*height);
                        }
                        Command::FinishWithdrawalBatch {
                            batch, txid, paid, ..
                        } => {
                            use kura_chain::bitcoin::hashes::Hash as _;
                            let txid = kura_chain::bitcoin::Txid::from_byte_array(*txid);
                            for facts in books.batches.values_mut().filter(|f| f.id == *batch) {
                                facts.open = false;
                                facts.finished_by = Some(txid);
                            }
                            tracing::info!(batch, %txid, paid, "withdrawal batch finished on chain");
                        }
                        _ => {}
                    }
                    tracing::info!(command = what, "custody");
                }
                Err(reject) => tracing::debug!(command = what, %reject, "custody command refused"),
            }
        }
        Ok(())
    }
}

impl Custody {
    /// The BTC deposit address of customer `name`, assigning one on first use.
    pub fn deposit_address(&self, handle: &NodeHandle, name: &str) -> Result<String> {
        let (network, asset) = {
            let v = self.view();
            (v.network, v.params.asset)
        };
        let owned = name.to_owned();
        let user = handle
            .query_wait(move |e| e.user_by_name(&owned))
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("no customer named {name}"))?;
        let lookup = move |e: &Engine| {
            e.deposit_address(user, asset)
                .and_then(|(w, i)| Some((e.wallets().get(w as usize)?.descriptor.clone(), i)))
        };
        let found = match handle.query_wait(lookup).map_err(|e| anyhow!("{e}"))? {
            Some(found) => found,
            None => {
                match submit(handle, Command::AssignDepositAddress { user, asset })? {
                    Ok(()) | Err(Reject::DepositAddressAssigned) => {}
                    Err(r) => return Err(anyhow!("assigning a deposit address: {r}")),
                }
                handle
                    .query_wait(lookup)
                    .map_err(|e| anyhow!("{e}"))?
                    .ok_or_else(|| anyhow!("the deposit address was not assigned"))?
            }
        };
        let (_, address) = kura_custody::derive(&found.0, found.1, network)
            .map_err(|e| anyhow!("deriving the deposit address: {e}"))?;
        Ok(address.to_string())
    }
}

/// The custody view as the wallet endpoints see it.
struct ChainFacts {
    view: Arc<Mutex<CustodyView>>,
}

impl ChainFacts {
    fn view(&self) -> MutexGuard<'_, CustodyView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl kura_api::backend::Chain for ChainFacts {
    fn asset_symbol(&self) -> &str {
        "BTC"
    }

    fn address_at(&self, descriptor: &str, index: u32) -> std::result::Result<String, String> {
        let network = self.view().network;
        kura_custody::derive(descriptor, index, network)
            .map(|(_, address)| address.to_string())
            .map_err(|e| e.to_string())
    }

    fn check_address(&self, address: &str) -> std::result::Result<String, String> {
        check_withdrawal_address(address, self.view().network).map(|a| a.to_string())
    }

    fn confirmations(&self) -> u32 {
        self.view().params.confirmations
    }

    fn deposit_confirmations(&self, reference: &str) -> Option<u32> {
        let outpoint = reference.parse::<kura_chain::bitcoin::OutPoint>().ok()?;
        let v = self.view();
        let d = v.watcher.deposit(&outpoint)?;
        Some(v.watcher.confirmations(d.height))
    }

    fn pending_deposits(&self, user: UserId) -> Vec<kura_api::backend::PendingDeposit> {
        let v = self.view();
        let required = v.params.confirmations;
        let confirmed = v
            .watcher
            .deposits()
            .map(|d| (d, v.watcher.confirmations(d.height)))
            .filter(|(_, n)| *n < required);
        let unconfirmed = v.watcher.pending().map(|d| (d, 0));
        confirmed
            .chain(unconfirmed)
            .filter(|(d, _)| d.user == user && d.amount_sat >= v.params.dust_sat)
            .map(|(d, confirmations)| kura_api::backend::PendingDeposit {
                reference: d.reference(),
                amount: kura_units::Amount::new(d.amount_sat),
                confirmations,
                address: v
                    .addresses
                    .get(&(d.wallet, d.index))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// A withdrawal destination: an address of `network`, SegWit only (its spends' txids
/// cannot be changed by a third party, and kura never pays a legacy output).
pub fn check_withdrawal_address(
    text: &str,
    network: Network,
) -> std::result::Result<kura_chain::bitcoin::Address, String> {
    use kura_chain::bitcoin::{Address, AddressType};
    let unchecked = Address::from_str(text).map_err(|e| format!("not a Bitcoin address: {e}"))?;
    let address = unchecked
        .require_network(network)
        .map_err(|_| format!("not an address of the {network} network"))?;
    match address.address_type() {
        Some(AddressType::P2wpkh | AddressType::P2wsh | AddressType::P2tr) => Ok(address),
        _ => Err("kura pays only SegWit addresses (P2WPKH, P2WSH, P2TR)".into()),
    }
}
