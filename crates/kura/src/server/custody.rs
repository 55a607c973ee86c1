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

use super::files;
use crate::node::{self, NodeHandle};
use anyhow::{anyhow, Context, Result};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::{BlockHash, Network, ScriptBuf};
use kura_chain::{
    BlockRef, ChainSource, Devnet, DevnetOptions, DevnetRpcServer, MinerHandle, RpcAuth, RpcSource,
};
use kura_custody::{plan_block, Books, Owner, PlanParams, SpendReport, Watcher};
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
}

impl Default for CustodyConfig {
    fn default() -> Self {
        CustodyConfig {
            chain: ChainChoice::None,
            confirmations: 3,
            dust_sat: 546,
            poll: Duration::from_millis(500),
            start_height: 0,
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
}

/// The running custody task (and the devnet, when it is the chain source).
#[derive(Debug)]
pub struct Custody {
    view: Arc<Mutex<CustodyView>>,
    stop: crossbeam_channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
    devnet: Option<DevnetParts>,
}

#[derive(Debug)]
struct DevnetParts {
    devnet: Devnet,
    rpc: Option<DevnetRpcServer>,
    miner: Option<MinerHandle>,
}

/// BTC, the only asset with a chain.
fn btc(engine: &Engine) -> Option<AssetId> {
    engine.asset_by_symbol("BTC")
}

/// The deposit wallet's account path (BIP-84 on a test network / mainnet).
fn account_path(network: Network) -> &'static str {
    if network == Network::Bitcoin {
        "m/84'/0'/0'"
    } else {
        "m/84'/1'/0'"
    }
}

/// The deposit wallet's descriptor, from the seed kept in `DIR/signer/deposit.seed`
/// (the signer's directory; only the public descriptor reaches the engine).
fn deposit_descriptor(dir: &Path, network: Network) -> Result<String> {
    let seed = files::load_or_create_secret(
        &dir.join("signer").join("deposit.seed"),
        "the deposit wallet seed",
    )?;
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(network, &seed).context("deriving the deposit master key")?;
    let path = DerivationPath::from_str(account_path(network)).context("account path")?;
    let account = master
        .derive_priv(&secp, &path)
        .context("deriving the deposit account key")?;
    let xpub = Xpub::from_priv(&secp, &account);
    let origin = account_path(network).trim_start_matches("m/");
    let text = format!("wpkh([{}/{origin}]{xpub}/0/*)", master.fingerprint(&secp));
    let parsed = kura_custody::parse_descriptor(&text)
        .map_err(|e| anyhow!("the deposit descriptor is invalid: {e}"))?;
    Ok(parsed.canonical())
}

fn submit(handle: &NodeHandle, command: Command) -> Result<std::result::Result<(), Reject>> {
    let ack = handle
        .submit_wait(node::internal(command))
        .map_err(|e| anyhow!("submitting a custody command: {e}"))?;
    Ok(ack.result.map(|_| ()))
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
        let descriptor = deposit_descriptor(dir, network)?;
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
        }));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let task = Task {
            source,
            handle,
            view: Arc::clone(&view),
            watched: HashSet::new(),
        };
        let poll = config.poll;
        let thread = std::thread::Builder::new()
            .name("kura-custody".into())
            .spawn(move || task.run(poll, stopped))
            .context("starting the custody thread")?;
        Ok(Some(Custody {
            view,
            stop,
            thread: Some(thread),
            devnet,
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

    /// The devnet, when it is the chain source.
    pub fn devnet(&self) -> Option<&Devnet> {
        self.devnet.as_ref().map(|d| &d.devnet)
    }

    /// Stop the task (and the devnet's miner and RPC server).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.try_send(());
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
struct Snapshot {
    credited: BTreeSet<String>,
    halted: bool,
    last_reconciled: Option<u32>,
    /// (user, wallet, index, descriptor) of every BTC deposit address.
    addresses: Vec<(UserId, u32, u32, String)>,
}

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
    fn approved_spend(&self, _spend: &SpendReport) -> bool {
        // No withdrawal or sweep flow signs anything yet: every spend of our coins is
        // unapproved.
        false
    }
}

fn snapshot(engine: &Engine, asset: AssetId) -> Snapshot {
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
        last_reconciled: engine.last_reconciliation(asset).map(|r| r.height),
        addresses,
    }
}

struct Task {
    source: Box<dyn ChainSource + Send>,
    handle: NodeHandle,
    view: Arc<Mutex<CustodyView>>,
    /// (wallet, index) already given to the watcher.
    watched: HashSet<(u32, u32)>,
}

impl Task {
    fn view(&self) -> MutexGuard<'_, CustodyView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(mut self, poll: Duration, stopped: crossbeam_channel::Receiver<()>) {
        loop {
            match self.pass() {
                Ok(()) => self.view().last_error = None,
                Err(e) => {
                    tracing::warn!(error = %e, "custody pass failed; retrying");
                    self.view().last_error = Some(format!("{e:#}"));
                }
            }
            match stopped.recv_timeout(poll) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
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
            .query_wait(move |e| snapshot(e, asset))
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
        Ok(())
    }

    fn watch_new(&mut self, books: &Snapshot, network: Network) -> Result<()> {
        for (user, wallet, index, descriptor) in &books.addresses {
            if self.watched.contains(&(*wallet, *index)) {
                continue;
            }
            let (script, _): (ScriptBuf, _) = kura_custody::derive(descriptor, *index, network)
                .map_err(|e| anyhow!("deriving deposit address {wallet}/{index}: {e}"))?;
            self.view().watcher.watch(
                script,
                Owner {
                    wallet: *wallet,
                    index: *index,
                    user: Some(*user),
                },
            );
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
