//! The exchange server: node (journal + sequencer + engine), read model, HTTP API and
//! admin socket in one process.
//!
//! Start-up ([`Exchange::open`]): lock the data directory, load (or create) the master
//! key, open the read model, recover the engine from the journal while feeding the read
//! model every command it has not applied yet, load the API key table, start the
//! sequencer with an observer that updates the key table and hands each applied batch to
//! the projector thread, and on a fresh directory sequence the default assets and
//! markets. [`Exchange::serve`] then runs the HTTP API and the admin socket until the
//! shutdown signal; [`Exchange::stop`] drains, fsyncs, snapshots and stops.

pub mod admin;
pub mod backend;
pub mod ban_filter;
pub mod custody;
pub mod files;
pub mod lanes;
pub mod listener;
pub mod payout;

use crate::node::{self, AppliedCommand, Node, NodeConfig, Observer};
use anyhow::{anyhow, bail, Context, Result};
use backend::{key_record, key_table, BackendParts, KeyTable, NodeBackend};
use kura_api::feed::{Published, Publisher};
use kura_engine::{genesis, EventKind};
use kura_journal::Head;
use kura_store::{Applied, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The read model's file name inside the data directory.
pub const STORE_FILE: &str = "read-model.sqlite";

/// The default period of the server's audit checkpoints: one an hour.
pub const DEFAULT_AUDIT_EVERY_SECS: u64 = 3600;

/// Everything `kura serve` needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node: NodeConfig,
    pub listen: SocketAddr,
    /// How long a history read waits for the read model to catch up.
    pub read_wait: Duration,
    /// Batches waiting for the projector, at most (the sequencer waits beyond that).
    pub projector_queue: usize,
    /// The REST API's admission limits (request weights, order rates, bans).
    pub api: kura_api::http::RouterConfig,
    /// The chain source and the custody rules (deposits, reconciliation).
    pub custody: custody::CustodyConfig,
    /// Solvency epochs taken by the server itself (off by default).
    pub solvency: crate::solvency::Schedule,
    /// How often the server signs an audit checkpoint of its journal (`None`: never;
    /// `kura audit checkpoint` still can).
    pub audit_every: Option<Duration>,
    /// Serve strangers' connections on the guest lane, at a lower priority than
    /// customers' ([`lanes`]; on by default).
    pub guest_lane: bool,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            node: NodeConfig::new(data_dir),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            read_wait: Duration::from_secs(5),
            projector_queue: 1024,
            api: kura_api::http::RouterConfig::default(),
            custody: custody::CustodyConfig::default(),
            solvency: crate::solvency::Schedule::default(),
            audit_every: Some(Duration::from_secs(DEFAULT_AUDIT_EVERY_SECS)),
            guest_lane: true,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.node.data_dir
    }
}

/// A running exchange (without its HTTP listener).
#[derive(Debug)]
pub struct Exchange {
    config: ServerConfig,
    node: Node,
    backend: NodeBackend,
    projector: JoinHandle<Result<()>>,
    custody: Option<custody::Custody>,
    solvency: Option<crate::solvency::Scheduler>,
    audit: Option<crate::audit::Checkpointer>,
    _lock: files::DirLock,
}

fn projector(
    mut store: Store,
    rx: mpsc::Receiver<Batch>,
    applied: watch::Sender<u64>,
) -> Result<()> {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while batches.len() < 64 {
            match rx.try_recv() {
                Ok(more) => batches.push(more),
                Err(_) => break,
            }
        }
        let flat: Vec<Applied<'_>> = batches
            .iter()
            .flat_map(|b| b.iter())
            .map(|(ctx, events)| Applied::new(*ctx, events))
            .collect();
        if let Err(e) = store.apply_batch(&flat) {
            tracing::error!(error = %e, "the read model failed; history reads stop until `kura reindex`");
            return Err(anyhow!("read model: {e}"));
        }
        if let Some(last) = flat.last() {
            applied.send_replace(last.ctx.seq);
        }
    }
    store
        .close()
        .map_err(|e| anyhow!("closing the read model: {e}"))
}

/// Open the read model for its one writer. One that a machine stop may have left torn
/// (written without `fsync`, see `kura_store::durability`) is deleted here, and the
/// caller rebuilds it from the journal.
fn open_read_model(path: &std::path::Path) -> Result<Store> {
    let (store, found) = Store::open_writer(path)
        .with_context(|| format!("opening the read model {}", path.display()))?;
    if let kura_store::WriterOpened::Discarded { boot } = found {
        tracing::warn!(
            read_model = %path.display(),
            written_under_boot = %boot,
            "the machine stopped while the read model had writes not yet on disk; it is \
             rebuilt from the journal"
        );
    }
    Ok(store)
}

/// Ended orders kept in memory for cancel answers (a cancel's handler reads its order
/// right after the answer; one that comes later reads the read model).
const LIVE_ENDED_MAX: usize = 16_384;

/// One applied batch, as the feed and the projector share it.
type Batch = Arc<Vec<(kura_engine::Ctx, Vec<kura_engine::Event>)>>;

/// Batches the feed holds for slow subscribers before they lag.
pub const FEED_CAPACITY: usize = 4096;

fn observer(
    keys: KeyTable,
    live: backend::Live,
    engine_seq: Arc<AtomicU64>,
    to_projector: mpsc::SyncSender<Batch>,
    mut publisher: Publisher,
    feed: broadcast::Sender<Arc<Published>>,
) -> Observer {
    Box::new(move |engine, batch| {
        // Market data and user events: published only now that the batch is durable.
        let books = publisher.book_diffs(engine, batch.iter().flat_map(|a| &a.events));
        // One shared copy of the batch for the feed and the projector.
        let batch: Batch = Arc::new(batch.into_iter().map(|a| (a.ctx, a.events)).collect());
        if let Ok(mut live) = live.lock() {
            for (ctx, events) in batch.iter() {
                live.apply(*ctx, events);
            }
        }
        if feed.receiver_count() > 0 {
            let commands = Arc::clone(&batch);
            let _ = feed.send(Arc::new(Published { commands, books }));
        }
        for e in batch.iter().flat_map(|(_, events)| events) {
            if let EventKind::ApiKeyCreated { key, .. } | EventKind::ApiKeyRevoked { key, .. } =
                &e.kind
            {
                if let Some(record) = engine.api_key(key).and_then(|k| key_record(key, k)) {
                    if let Ok(mut table) = keys.write() {
                        table.insert(record.id.clone(), record);
                    }
                }
            }
        }
        if let Some((last, _)) = batch.last() {
            engine_seq.store(last.seq, Ordering::Release);
        }
        // Blocks when the projector is a full queue behind (bounded memory); fails only
        // when it has stopped, which it has logged.
        let _ = to_projector.send(batch);
    })
}

impl Exchange {
    /// Recover and start everything but the listeners. `progress` sees replay counts.
    pub fn open(config: ServerConfig, progress: impl FnMut(u64)) -> Result<Exchange> {
        let dir = config.data_dir().to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let lock = files::DirLock::acquire(&dir)?;
        let master = files::load_or_create_master_key(&dir)?;
        let store_path = dir.join(STORE_FILE);
        let mut store = open_read_model(&store_path)?;
        let store_seq = store.last_seq().unwrap_or(0);

        let (engine, journal, recovered) =
            recover_into_store(&config.node, &mut store, store_seq, progress)?;
        let head = recovered.head;
        if store.last_seq().unwrap_or(0) > head.seq {
            bail!(
                "the read model {} is at seq {} but the journal ends at {}: it belongs to \
                 another journal; run `kura reindex --data {}`",
                store_path.display(),
                store.last_seq().unwrap_or(0),
                head.seq,
                dir.display()
            );
        }
        tracing::info!(
            head = head.seq,
            snapshot = ?recovered.snapshot_seq,
            replayed = recovered.replayed,
            read_model = store.last_seq().unwrap_or(0),
            "recovered"
        );
        let fresh = head.seq == 0 && engine.market_count() == 0;
        let keys = key_table(&engine);
        let publisher = Publisher::new(&engine);
        let feed = broadcast::channel(FEED_CAPACITY).0;
        let engine_seq = Arc::new(AtomicU64::new(head.seq));
        let live: backend::Live = Arc::new(Mutex::new(kura_store::LiveOrders::with_open(
            LIVE_ENDED_MAX,
            store
                .all_open_orders()
                .context("reading the open orders from the read model")?,
        )));
        let (applied_tx, applied_rx) = watch::channel(head.seq);
        let (proj_tx, proj_rx) = mpsc::sync_channel(config.projector_queue.max(1));
        let projector = std::thread::Builder::new()
            .name("kura-projector".into())
            .spawn(move || projector(store, proj_rx, applied_tx))
            .context("starting the projector thread")?;
        let (node, handle) = Node::start_observed(
            config.node.clone(),
            engine,
            journal,
            recovered,
            Some(observer(
                Arc::clone(&keys),
                Arc::clone(&live),
                Arc::clone(&engine_seq),
                proj_tx,
                publisher,
                feed.clone(),
            )),
        )?;
        if fresh {
            for command in genesis::genesis() {
                let ack = handle
                    .submit_wait(node::internal(command))
                    .map_err(|e| anyhow!("sequencing the default markets: {e}"))?;
                if let Err(r) = ack.result {
                    bail!("the default markets were refused: {r}");
                }
            }
            tracing::info!("fresh data directory: created BTC, JPY, USD and BTCJPY, BTCUSD");
        }
        let custody = custody::Custody::start(&dir, &config.custody, handle.clone())?;
        let view = custody.as_ref().map(|c| c.view_handle());
        let synced = Box::new(move || {
            view.as_ref().is_some_and(|v| {
                let v = v.lock().unwrap_or_else(|p| p.into_inner());
                v.synced && v.chain_tip.map(|t| t.height) == v.watcher.tip().map(|(h, _)| h)
            })
        });
        // An epoch proves the reserves with the coins the custody task watches.
        let coins = custody.as_ref().map(|c| {
            let view = c.view_handle();
            let handle = handle.clone();
            Box::new(move || admin::custody_coins_now(&handle, &view))
                as Box<dyn Fn() -> Result<serde_json::Value> + Send>
        });
        let solvency = crate::solvency::Scheduler::start(
            &dir,
            config.solvency,
            handle.clone(),
            synced,
            coins,
        )?;
        let audit = crate::audit::Checkpointer::start(&dir, config.audit_every)?;
        let backend = NodeBackend::new(BackendParts {
            handle,
            keys,
            master,
            engine_seq,
            store_seq: applied_rx,
            store_path,
            read_wait: config.read_wait,
            feed,
            chain: custody.as_ref().map(|c| c.chain_facts()),
            solvency: Some(Arc::new(crate::solvency::SolvencyStore::new(&dir))),
            live,
        });
        Ok(Exchange {
            config,
            node,
            backend,
            projector,
            custody,
            solvency,
            audit,
            _lock: lock,
        })
    }

    pub fn backend(&self) -> &NodeBackend {
        &self.backend
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The custody task, when the node follows a chain.
    pub fn custody(&self) -> Option<&custody::Custody> {
        self.custody.as_ref()
    }

    /// The node's counters (journal commits and records), readable from any thread.
    pub fn stats(&self) -> Arc<node::NodeStats> {
        Arc::clone(&self.node.stats)
    }

    /// Serve HTTP on `listener` and the admin socket until `shutdown` resolves; then stop
    /// taking requests and let in-flight ones finish. Writes `server.json` once listening
    /// and removes it on the way out.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        let dir = self.config.data_dir().to_path_buf();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Both listeners are bound before server.json says where they are.
        let admin_path = admin::socket_path(&dir);
        let admin_listener = admin::bind(&admin_path)?;
        let admin = tokio::spawn(admin::serve_with_chain(
            admin_listener,
            admin_path,
            self.backend.clone(),
            admin::ChainContext::new(
                &self.config.custody.chain,
                self.custody.as_ref().map(|c| c.view_handle()),
            )
            .with_control(self.custody.as_ref().map(|c| c.control())),
            wait_true(stop_rx.clone()),
        ));
        files::write_server_json(&dir, addr)?;
        let limiter = std::sync::Arc::new(kura_api::limits::Limiter::new(
            self.config.api.limits.clone(),
        ));
        let router = kura_api::http::router_with_limiter(
            self.backend.clone(),
            self.config.api.clone(),
            std::sync::Arc::clone(&limiter),
        );
        // Banned addresses and addresses over their connection cap are refused at
        // accept; customers' connections are served ahead of strangers'.
        let listener = listener::GuardedListener::new(listener, limiter, payout::now_ms);
        let http = lanes::serve(listener, router, self.config.guest_lane, wait_true(stop_rx));
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        http.await;
        signal.abort();
        let admin_result = admin.await;
        files::remove_server_json(&dir);
        admin_result.map_err(|e| anyhow!("admin socket task: {e}"))??;
        Ok(())
    }

    /// Finish what is queued, write the final snapshot, let the projector catch up.
    pub fn stop(self) -> Result<Head> {
        let Exchange {
            node,
            backend,
            projector,
            custody,
            solvency,
            audit,
            ..
        } = self;
        if let Some(a) = audit {
            a.stop();
        }
        // The custody task and the solvency scheduler submit commands: stop them before
        // the node.
        if let Some(s) = solvency {
            s.stop();
        }
        if let Some(c) = custody {
            c.stop();
        }
        drop(backend);
        let head = node.stop()?;
        match projector.join() {
            Ok(r) => r?,
            Err(_) => bail!("the projector thread panicked"),
        }
        Ok(head)
    }
}

/// Recover the engine, feeding `store` the events of every command after `store_seq`.
fn recover_into_store(
    config: &NodeConfig,
    store: &mut Store,
    store_seq: u64,
    progress: impl FnMut(u64),
) -> Result<(kura_engine::Engine, kura_journal::Journal, node::Recovered)> {
    let mut pending: Vec<AppliedCommand> = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    let flush = |store: &mut Store, pending: &mut Vec<AppliedCommand>| {
        let flat: Vec<Applied<'_>> = pending
            .iter()
            .map(|a| Applied::new(a.ctx, &a.events))
            .collect();
        let r = store.apply_batch(&flat).map(|_| ());
        pending.clear();
        r
    };
    let recovered = node::recover_observed(config, progress, Some(store_seq), |ctx, events| {
        if failed.is_some() {
            return;
        }
        pending.push(AppliedCommand {
            ctx,
            events: events.to_vec(),
        });
        if pending.len() >= 4096 {
            if let Err(e) = flush(store, &mut pending) {
                failed = Some(e.into());
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e.context("catching up the read model; `kura reindex` rebuilds it"));
    }
    flush(store, &mut pending).context("catching up the read model")?;
    Ok(recovered)
}

/// Rebuild the read model from the journal (`kura reindex`). Refuses while a server
/// holds the data directory. Returns the sequence number it reached.
pub fn reindex(config: &NodeConfig, progress: impl FnMut(u64)) -> Result<u64> {
    let dir = &config.data_dir;
    let _lock = files::DirLock::acquire(dir)?;
    let store_path = dir.join(STORE_FILE);
    kura_store::remove_database(&store_path)
        .with_context(|| format!("removing the read model {}", store_path.display()))?;
    let mut store = open_read_model(&store_path)?;
    let (_engine, _journal, recovered) = recover_into_store(config, &mut store, 0, progress)?;
    store
        .close()
        .with_context(|| format!("closing the read model {}", store_path.display()))?;
    Ok(recovered.head.seq)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining requests, then the final snapshot");
}
