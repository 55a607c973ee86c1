//! The stream hub: the one consumer of the event feed for every market stream of every
//! connection.
//!
//! Each stream's message is rendered (serialised to JSON) once per event or flush, and
//! the same bytes are queued on every subscriber's connection: per subscriber the work
//! is a `try_send` of a shared buffer into its bounded queue ([`Peer::push_text`]; a
//! full queue closes that connection as a slow consumer, nobody waits for it). A
//! combined-stream subscriber gets the payload wrapped `{"stream":…,"data":…}`, spliced
//! once per stream from the same rendering. The state behind the streams (24-hour
//! tickers and klines kept from the feed's trades, the last book ticker sent) is kept
//! here once per market, not per connection, and the books behind partial depths, book
//! tickers and tickers are read from the engine with one query per flush for all
//! connections.
//!
//! One task runs the hub ([`StreamsSlot::get`] starts it on the first connection). It
//! selects over:
//! - commands from connections ([`Streams`]): subscribe (the acknowledgement is queued
//!   by the hub before the first message of the stream, and the connection waits for
//!   the hub to have registered it), unsubscribe (acknowledged after the last message),
//!   leave;
//! - the feed: depth diffs, trades, aggregate trades and the trades that move tickers
//!   and klines. Depth diffs are merged per market until the flush their stream is
//!   updated at (`@depth@100ms` every 100 ms, `@depth` every second, as Binance): one
//!   message carries every level touched since the last one, at its latest quantity,
//!   with `U` the first update id merged and `u` the last, so a subscriber's messages
//!   stay contiguous (each `U` is the previous `u` + 1) while a busy book costs each
//!   subscriber ten messages a second, not one per batch;
//! - the flush timer (100 ms; every tenth tick is the 1000 ms flush);
//! - seeds: tickers and klines are seeded from the read model by tasks of their own
//!   (not on the hub's path); trades that arrive meanwhile are kept and counted into
//!   the seed when it lands (trades the seed already counted are skipped by trade id).
//!
//! A new subscriber gets a stream's messages from its next event on, as Binance sends
//! them: diffs and trades as they come; a partial book, book ticker, ticker, mini ticker
//! or kline at the first flush after the book or the market's trades changed it (and a
//! kline once more, closed, when its interval ends). Nothing is sent for subscribing
//! alone. A ticker or kline is only ever rendered from a state seeded from the read
//! model (the whole 24 hours, the whole interval) and kept from the feed since: a
//! stream whose seed is still being read sends once it has landed, and a trade seen
//! meanwhile, or one the seed had already counted, still counts as the event that makes
//! the stream send.
//!
//! If the hub itself falls a whole feed channel behind (`Lagged`), every market
//! subscriber is closed (1013, "lagged…"): their diffs would have a gap. When the feed
//! ends (the node stops), every connection is told the server is shutting down.

use super::conn::{Closing, Peer, CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN};
use super::market::{
    book_ticker, count_kline_once, count_ticker_once, depth_update, kline_event, mini_ticker,
    partial_book, read_books, read_kline, read_ticker, ticker_events, trade_events, BookTop, Kind,
    KlineState, OpenKline, Span, StreamName, TickerState, TradeSeen,
};
use crate::backend::{Backend, BackendError};
use crate::feed::{BookDiff, Published};
use crate::http::MarketInfo;
use axum::extract::ws::Utf8Bytes;
use kura_engine::EventKind;
use kura_units::{MarketId, PriceTicks, QtyLots};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Duration, Instant};

/// Commands waiting for the hub; a connection sending more waits (backpressure).
const COMMAND_QUEUE: usize = 1024;
/// Feed batches the hub handles in one go when they are waiting.
const ROUND_BATCHES_MAX: usize = 64;
/// The period of the flush timer (the fastest partial-book / book-ticker rate).
const FLUSH_PERIOD: Duration = Duration::from_millis(100);
/// Flush ticks per slow (1000 ms) flush.
const SLOW_EVERY_TICKS: u64 = 10;
/// A 24-hour ticker is rebuilt from the read model this often, so that trades leaving
/// the window drop out.
const TICKER_RESEED_MS: u64 = 60_000;
/// A subscription naming an unknown symbol re-reads the market list at most this often
/// (unless the feed showed a new market).
const MARKETS_REFRESH_MIN: Duration = Duration::from_secs(1);

/// What connections ask of the hub.
#[derive(Debug)]
enum Command {
    Subscribe {
        peer: Arc<Peer>,
        names: Vec<StreamName>,
        /// Queued before the streams' first message.
        ack: Option<Utf8Bytes>,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        peer: Arc<Peer>,
        names: Vec<String>,
        /// Queued after the streams' last message.
        ack: Utf8Bytes,
        done: oneshot::Sender<()>,
    },
    Leave {
        peer: u64,
        names: Vec<String>,
    },
}

/// A connection's handle on the hub.
#[derive(Clone, Debug)]
pub(crate) struct Streams {
    tx: mpsc::Sender<Command>,
    shutdown: watch::Receiver<bool>,
}

impl Streams {
    /// Subscribe `peer` to `names` (queueing `ack` first); returns once the hub has
    /// registered them, so a batch published after this returns reaches the peer.
    pub(crate) async fn subscribe(
        &self,
        peer: &Arc<Peer>,
        names: Vec<StreamName>,
        ack: Option<Utf8Bytes>,
    ) -> Result<(), Closing> {
        let (done, registered) = oneshot::channel();
        let command = Command::Subscribe {
            peer: Arc::clone(peer),
            names,
            ack,
            done,
        };
        self.ask(peer, command, registered).await
    }

    /// Unsubscribe `peer` from `names`, then queue `ack`.
    pub(crate) async fn unsubscribe(
        &self,
        peer: &Arc<Peer>,
        names: Vec<String>,
        ack: Utf8Bytes,
    ) -> Result<(), Closing> {
        let (done, removed) = oneshot::channel();
        let command = Command::Unsubscribe {
            peer: Arc::clone(peer),
            names,
            ack,
            done,
        };
        self.ask(peer, command, removed).await
    }

    async fn ask(
        &self,
        peer: &Peer,
        command: Command,
        answer: oneshot::Receiver<()>,
    ) -> Result<(), Closing> {
        if self.tx.send(command).await.is_err() || answer.await.is_err() {
            peer.close(CLOSE_TRY_AGAIN, "the exchange is unavailable");
            return Err(Closing);
        }
        if peer.is_closed() {
            Err(Closing)
        } else {
            Ok(())
        }
    }

    /// A closed connection's streams (if the queue is full, the hub's own sweep of
    /// closed peers removes them).
    pub(crate) fn leave(&self, peer: u64, names: Vec<String>) {
        let _ = self.tx.try_send(Command::Leave { peer, names });
    }

    /// Becomes true when the server shuts down (the feed ended).
    pub(crate) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Where the hub of one router lives: started by the first connection, and again if it
/// ended (a runtime that went away).
#[derive(Debug, Default)]
pub(crate) struct StreamsSlot {
    running: Mutex<Option<Streams>>,
}

impl StreamsSlot {
    /// The running hub over `backend`, started on `rt` if need be.
    pub(crate) fn get<B: Backend>(&self, backend: &B, rt: &tokio::runtime::Handle) -> Streams {
        let mut slot = match self.running.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(streams) = slot.as_ref().filter(|s| !s.tx.is_closed()) {
            return streams.clone();
        }
        let streams = start(backend.clone(), rt);
        *slot = Some(streams.clone());
        streams
    }
}

/// Start a hub over `backend`'s feed, on `rt`.
fn start<B: Backend>(backend: B, rt: &tokio::runtime::Handle) -> Streams {
    // The feed first: every batch published from here on reaches the hub.
    let feed = backend.subscribe();
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (seeds_tx, seeds) = mpsc::unbounded_channel();
    let hub = Fanout::new(backend, seeds_tx);
    rt.spawn(hub.run(commands, feed, seeds, shutdown_tx));
    Streams { tx, shutdown }
}

/// One stream name and its subscribers.
#[derive(Debug)]
struct Topic {
    name: StreamName,
    /// `{"stream":"<name>","data":` — a combined message is this, the payload, `}`.
    prefix: String,
    members: HashMap<u64, Arc<Peer>>,
}

impl Topic {
    fn new(name: StreamName) -> Topic {
        let quoted = serde_json::to_string(name.text()).unwrap_or_else(|_| "\"\"".to_owned());
        Topic {
            prefix: format!("{{\"stream\":{quoted},\"data\":"),
            name,
            members: HashMap::new(),
        }
    }

    fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    fn join(&mut self, peer: &Arc<Peer>) {
        self.members
            .entry(peer.id())
            .or_insert_with(|| Arc::clone(peer));
    }

    fn leave(&mut self, peer: u64) {
        self.members.remove(&peer);
    }

    /// Forget members whose connection closed.
    fn sweep(&mut self) {
        let gone: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, peer)| peer.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.leave(id);
        }
    }

    /// Queue `raw` (one rendering, shared) on every member; a member whose queue is
    /// full is closed (slow consumer) and dropped.
    fn deliver(&mut self, raw: &Utf8Bytes, counters: &mut Counters) {
        let mut combined: Option<Utf8Bytes> = None;
        let mut gone = Vec::new();
        for (id, peer) in &self.members {
            let text = if peer.combined() {
                combined
                    .get_or_insert_with(|| {
                        counters.wraps += 1;
                        wrap(&self.prefix, raw)
                    })
                    .clone()
            } else {
                raw.clone()
            };
            if peer.push_text(text).is_err() {
                gone.push(*id);
                continue;
            }
            counters.queued += 1;
        }
        for id in gone {
            self.leave(id);
        }
    }
}

/// A combined-stream message: `prefix`, the payload, `}`.
fn wrap(prefix: &str, raw: &Utf8Bytes) -> Utf8Bytes {
    let mut text = String::with_capacity(prefix.len() + raw.as_str().len() + 1);
    text.push_str(prefix);
    text.push_str(raw.as_str());
    text.push('}');
    Utf8Bytes::from(text)
}

/// What the hub did (the tests read these).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    /// Payloads serialised.
    renders: u64,
    /// Combined wrappers spliced.
    wraps: u64,
    /// Messages queued on connections.
    queued: u64,
}

/// What a seed is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SeedKey {
    Ticker(MarketId),
    Kline(MarketId, Span),
}

impl SeedKey {
    fn market(self) -> MarketId {
        match self {
            SeedKey::Ticker(m) | SeedKey::Kline(m, _) => m,
        }
    }
}

#[derive(Debug)]
enum Seed {
    Ticker(TickerState),
    Kline(KlineState),
}

/// A seed read from the read model.
#[derive(Debug)]
struct Seeded {
    key: SeedKey,
    /// The hub's generation when asked (a lagged hub forgets older seeds).
    generation: u64,
    result: Result<Seed, BackendError>,
}

/// The hub's state.
#[derive(Debug)]
struct Fanout<B> {
    b: B,
    markets: Vec<MarketInfo>,
    markets_read: Option<Instant>,
    /// The feed added a market since the list was read.
    markets_stale: bool,
    /// Per market, its streams by name.
    topics: BTreeMap<MarketId, BTreeMap<String, Topic>>,
    /// `!miniTicker@arr`.
    all_minis: Option<Topic>,
    tickers: BTreeMap<MarketId, TickerState>,
    klines: BTreeMap<(MarketId, Span), KlineState>,
    /// Seeds asked for, with the trades seen since.
    pending: BTreeMap<SeedKey, Vec<TradeSeen>>,
    seeds_tx: mpsc::UnboundedSender<Seeded>,
    generation: u64,
    /// Markets whose book changed since the last fast / slow flush.
    book_fast: BTreeSet<MarketId>,
    book_slow: BTreeSet<MarketId>,
    /// Markets whose ticker changed since the last slow flush.
    traded: BTreeSet<MarketId>,
    klines_dirty: BTreeSet<(MarketId, Span)>,
    book_tickers_sent: BTreeMap<MarketId, [String; 4]>,
    /// Depth diffs merged since the last fast (`@depth@100ms`) / slow (`@depth`) flush.
    diffs_fast: BTreeMap<MarketId, MergedDiff>,
    diffs_slow: BTreeMap<MarketId, MergedDiff>,
    ticks: u64,
    counters: Counters,
}

/// Consecutive depth diffs of one market, merged: the update ids they span and every
/// level they touched at its latest quantity (zero: removed).
#[derive(Clone, Debug)]
struct MergedDiff {
    first_update_id: u64,
    last_update_id: u64,
    bids: BTreeMap<PriceTicks, QtyLots>,
    asks: BTreeMap<PriceTicks, QtyLots>,
    /// Time of the last batch merged.
    at: u64,
}

impl MergedDiff {
    fn new(d: &BookDiff, at: u64) -> MergedDiff {
        let mut merged = MergedDiff {
            first_update_id: d.first_update_id,
            last_update_id: d.last_update_id,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            at,
        };
        merged.add(d, at);
        merged
    }

    fn add(&mut self, d: &BookDiff, at: u64) {
        self.last_update_id = d.last_update_id;
        self.bids.extend(d.bids.iter().copied());
        self.asks.extend(d.asks.iter().copied());
        self.at = at;
    }

    /// As one diff: bids best (highest) first, asks best (lowest) first.
    fn diff(&self, market: MarketId) -> BookDiff {
        BookDiff {
            market,
            first_update_id: self.first_update_id,
            last_update_id: self.last_update_id,
            bids: self.bids.iter().rev().map(|(p, q)| (*p, *q)).collect(),
            asks: self.asks.iter().map(|(p, q)| (*p, *q)).collect(),
        }
    }
}

/// Merge `d` into the pending diff of its market.
fn merge_diff(pending: &mut BTreeMap<MarketId, MergedDiff>, d: &BookDiff, at: u64) {
    match pending.get_mut(&d.market) {
        Some(m) => m.add(d, at),
        None => {
            pending.insert(d.market, MergedDiff::new(d, at));
        }
    }
}

fn market_of(markets: &[MarketInfo], id: MarketId) -> Option<&MarketInfo> {
    markets.iter().find(|m| m.market_id() == id)
}

fn render(counters: &mut Counters, value: &Value) -> Utf8Bytes {
    counters.renders += 1;
    Utf8Bytes::from(value.to_string())
}

impl<B: Backend> Fanout<B> {
    fn new(b: B, seeds_tx: mpsc::UnboundedSender<Seeded>) -> Fanout<B> {
        Fanout {
            b,
            markets: Vec::new(),
            markets_read: None,
            markets_stale: false,
            topics: BTreeMap::new(),
            all_minis: None,
            tickers: BTreeMap::new(),
            klines: BTreeMap::new(),
            pending: BTreeMap::new(),
            seeds_tx,
            generation: 0,
            book_fast: BTreeSet::new(),
            book_slow: BTreeSet::new(),
            traded: BTreeSet::new(),
            klines_dirty: BTreeSet::new(),
            book_tickers_sent: BTreeMap::new(),
            diffs_fast: BTreeMap::new(),
            diffs_slow: BTreeMap::new(),
            ticks: 0,
            counters: Counters::default(),
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut feed: tokio::sync::broadcast::Receiver<Arc<Published>>,
        mut seeds: mpsc::UnboundedReceiver<Seeded>,
        shutdown: watch::Sender<bool>,
    ) {
        let mut flush = tokio::time::interval(FLUSH_PERIOD);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                batch = feed.recv() => match batch {
                    Ok(batch) => {
                        self.on_batch(&batch);
                        // What is published already, in the same round: a connection's
                        // writer then wakes once for all of it.
                        for _ in 1..ROUND_BATCHES_MAX {
                            match feed.try_recv() {
                                Ok(batch) => self.on_batch(&batch),
                                Err(TryRecvError::Lagged(n)) => {
                                    self.on_lagged(n);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => self.on_lagged(n),
                    Err(RecvError::Closed) => {
                        self.close_all(CLOSE_GOING_AWAY, "the server is shutting down");
                        let _ = shutdown.send(true);
                        break;
                    }
                },
                Some(seeded) = seeds.recv() => self.on_seeded(seeded),
                _ = flush.tick() => self.flush().await,
            }
        }
    }

    // ---- subscriptions -----------------------------------------------------------

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                peer,
                names,
                ack,
                done,
            } => {
                self.subscribe(&peer, names, ack).await;
                let _ = done.send(());
            }
            Command::Unsubscribe {
                peer,
                names,
                ack,
                done,
            } => {
                self.unsubscribe(peer.id(), &names);
                let _ = peer.push_text(ack);
                let _ = done.send(());
            }
            Command::Leave { peer, names } => self.unsubscribe(peer, &names),
        }
    }

    fn market_by_symbol(&self, symbol: &str) -> Option<MarketId> {
        self.markets
            .iter()
            .find(|m| m.symbol_name() == symbol)
            .map(MarketInfo::market_id)
    }

    async fn subscribe(
        &mut self,
        peer: &Arc<Peer>,
        names: Vec<StreamName>,
        ack: Option<Utf8Bytes>,
    ) {
        let unknown = names.iter().any(|n| {
            n.symbol
                .as_deref()
                .is_some_and(|s| self.market_by_symbol(s).is_none())
        });
        let may_refresh = self.markets_stale
            || self
                .markets_read
                .is_none_or(|at| at.elapsed() >= MARKETS_REFRESH_MIN);
        if self.markets_read.is_none() || (unknown && may_refresh) {
            match self.b.query(MarketInfo::every).await {
                Ok(markets) => {
                    self.markets = markets;
                    self.markets_read = Some(Instant::now());
                    self.markets_stale = false;
                }
                Err(_) => {
                    peer.close(CLOSE_TRY_AGAIN, "the exchange is unavailable");
                    return;
                }
            }
        }
        if let Some(ack) = ack {
            if peer.push_text(ack).is_err() {
                return;
            }
        }
        let now = self.b.now_ms();
        for name in names {
            let market = name
                .symbol
                .as_deref()
                .and_then(|s| self.market_by_symbol(s));
            match (name.kind, market) {
                (Kind::AllMiniTickers, _) => {
                    let ids: Vec<MarketId> =
                        self.markets.iter().map(MarketInfo::market_id).collect();
                    for m in ids {
                        self.want_ticker(m, now);
                    }
                    self.all_minis
                        .get_or_insert_with(|| Topic::new(name))
                        .join(peer);
                    continue;
                }
                // No such market: listed, never sent.
                (_, None) => continue,
                (Kind::Ticker | Kind::MiniTicker, Some(m)) => self.want_ticker(m, now),
                (Kind::Kline(span), Some(m)) if !self.klines.contains_key(&(m, span)) => {
                    self.seed(SeedKey::Kline(m, span));
                }
                _ => {}
            }
            if let Some(m) = market {
                self.topics
                    .entry(m)
                    .or_default()
                    .entry(name.text().to_owned())
                    .or_insert_with(|| Topic::new(name))
                    .join(peer);
            }
        }
    }

    fn unsubscribe(&mut self, peer: u64, names: &[String]) {
        for name in names {
            if self
                .all_minis
                .as_ref()
                .is_some_and(|t| t.name.text() == name)
            {
                if let Some(t) = self.all_minis.as_mut() {
                    t.leave(peer);
                }
                continue;
            }
            for topics in self.topics.values_mut() {
                if let Some(t) = topics.get_mut(name.as_str()) {
                    t.leave(peer);
                }
            }
        }
        self.drop_empty_topics();
    }

    fn drop_empty_topics(&mut self) {
        for topics in self.topics.values_mut() {
            topics.retain(|_, t| t.has_members());
        }
        self.topics.retain(|_, topics| !topics.is_empty());
        if self.all_minis.as_ref().is_some_and(|t| !t.has_members()) {
            self.all_minis = None;
        }
    }

    /// Forget closed connections everywhere.
    fn sweep(&mut self) {
        for topics in self.topics.values_mut() {
            for t in topics.values_mut() {
                t.sweep();
            }
        }
        if let Some(t) = self.all_minis.as_mut() {
            t.sweep();
        }
        self.drop_empty_topics();
    }

    fn every_topic(&mut self) -> impl Iterator<Item = &mut Topic> {
        self.topics
            .values_mut()
            .flat_map(|t| t.values_mut())
            .chain(self.all_minis.as_mut())
    }

    fn close_all(&mut self, code: u16, reason: &str) {
        for t in self.every_topic() {
            for peer in t.members.values() {
                peer.close(code, reason);
            }
        }
        self.topics.clear();
        self.all_minis = None;
    }

    /// The hub missed batches: its subscribers' diffs have a gap, and the kept state
    /// may have missed trades. Close them all and start afresh.
    fn on_lagged(&mut self, n: u64) {
        let reason = format!("lagged: {n} event batches were missed; reconnect and resynchronise");
        tracing::warn!(%reason, "ws: the stream hub fell behind the feed");
        self.close_all(CLOSE_TRY_AGAIN, &reason);
        self.tickers.clear();
        self.klines.clear();
        self.pending.clear();
        self.generation += 1;
        self.book_fast.clear();
        self.book_slow.clear();
        self.traded.clear();
        self.klines_dirty.clear();
        self.book_tickers_sent.clear();
        self.diffs_fast.clear();
        self.diffs_slow.clear();
    }

    // ---- seeds -------------------------------------------------------------------

    /// Whether a stream with subscribers shows `m`'s 24-hour ticker.
    fn ticker_watched(&self, m: MarketId) -> bool {
        self.all_minis.as_ref().is_some_and(Topic::has_members)
            || self.topics.get(&m).is_some_and(|ts| {
                ts.values().any(|t| {
                    matches!(t.name.kind, Kind::Ticker | Kind::MiniTicker) && t.has_members()
                })
            })
    }

    /// A ticker for `m` is wanted: seed it if there is none or it is due a re-seed. A
    /// stale ticker nobody watches is dropped first: trades may have left its window
    /// since it was seeded, so nothing is rendered from it until the new seed lands.
    fn want_ticker(&mut self, m: MarketId, now: u64) {
        let stale = self
            .tickers
            .get(&m)
            .is_none_or(|t| now.saturating_sub(t.seeded_ms) >= TICKER_RESEED_MS);
        if stale {
            if !self.ticker_watched(m) {
                self.tickers.remove(&m);
            }
            self.seed(SeedKey::Ticker(m));
        }
    }

    /// Read a seed from the read model off the hub's path (once at a time per key).
    fn seed(&mut self, key: SeedKey) {
        if self.pending.contains_key(&key) {
            return;
        }
        self.pending.insert(key, Vec::new());
        let (b, tx, generation) = (self.b.clone(), self.seeds_tx.clone(), self.generation);
        tokio::spawn(async move {
            let result = match key {
                SeedKey::Ticker(m) => read_ticker(&b, m).await.map(Seed::Ticker),
                SeedKey::Kline(m, span) => read_kline(&b, m, span).await.map(Seed::Kline),
            };
            let _ = tx.send(Seeded {
                key,
                generation,
                result,
            });
        });
    }

    fn on_seeded(&mut self, seeded: Seeded) {
        if seeded.generation != self.generation {
            return;
        }
        let Some(trades) = self.pending.remove(&seeded.key) else {
            return;
        };
        let at = self.b.now_ms();
        // A trade seen while the seed was read is an event of the streams (whether the
        // seed counted it or not): they send the seeded state at their next flush. A
        // seed alone is not an event, unless a re-seed changed what the streams show.
        match (seeded.key, seeded.result) {
            (SeedKey::Ticker(m), Ok(Seed::Ticker(mut state))) => {
                for t in &trades {
                    count_ticker_once(&mut state, t);
                }
                let changed = self
                    .tickers
                    .get(&m)
                    .is_some_and(|before| before.stats != state.stats);
                self.tickers.insert(m, state);
                if changed || !trades.is_empty() {
                    self.traded.insert(m);
                }
            }
            (SeedKey::Kline(m, span), Ok(Seed::Kline(mut state))) => {
                let mut closed = Vec::new();
                for t in &trades {
                    if let (_, Some(old)) = count_kline_once(&mut state, span, t) {
                        closed.push(old);
                    }
                }
                self.klines.insert((m, span), state);
                if !trades.is_empty() {
                    self.klines_dirty.insert((m, span));
                }
                for old in closed {
                    self.send_kline(m, span, &old, true, at);
                }
            }
            (key, result) => {
                if let Err(e) = &result {
                    tracing::warn!(?key, error = %e, "ws: a stream seed failed");
                }
                // A re-seed that failed keeps the state it would have replaced; with
                // none, the streams that needed it cannot start.
                let had = match key {
                    SeedKey::Ticker(m) => self.tickers.contains_key(&m),
                    SeedKey::Kline(m, span) => self.klines.contains_key(&(m, span)),
                };
                if !had {
                    self.close_dependents(key);
                }
            }
        }
    }

    /// Close the subscribers of the streams a failed seed was for.
    fn close_dependents(&mut self, key: SeedKey) {
        let m = key.market();
        let needs = |kind: Kind| match key {
            SeedKey::Ticker(_) => matches!(kind, Kind::Ticker | Kind::MiniTicker),
            SeedKey::Kline(_, span) => kind == Kind::Kline(span),
        };
        let reason = "the exchange is unavailable";
        if let Some(topics) = self.topics.get_mut(&m) {
            for t in topics.values_mut().filter(|t| needs(t.name.kind)) {
                for peer in t.members.values() {
                    peer.close(CLOSE_TRY_AGAIN, reason);
                }
                t.members.clear();
            }
        }
        if matches!(key, SeedKey::Ticker(_)) {
            if let Some(t) = self.all_minis.take() {
                for peer in t.members.values() {
                    peer.close(CLOSE_TRY_AGAIN, reason);
                }
            }
        }
        self.drop_empty_topics();
    }

    // ---- the feed ----------------------------------------------------------------

    /// Everything one batch changes: diffs and trades are sent now, the rest marked.
    fn on_batch(&mut self, batch: &Published) {
        let at = batch.timestamp_ms();
        for diff in &batch.books {
            let Some(topics) = self.topics.get_mut(&diff.market) else {
                continue;
            };
            // A change is an event only for the book streams subscribed when it came.
            if topics
                .values()
                .any(|t| matches!(t.name.kind, Kind::Partial(_) | Kind::BookTicker))
            {
                self.book_fast.insert(diff.market);
                self.book_slow.insert(diff.market);
            }
            let depth = |fast: bool| {
                topics
                    .values()
                    .any(|t| t.name.kind == Kind::Depth && t.name.fast == fast && t.has_members())
            };
            if depth(true) {
                merge_diff(&mut self.diffs_fast, diff, at);
            }
            if depth(false) {
                merge_diff(&mut self.diffs_slow, diff, at);
            }
        }
        for (ctx, events) in batch.commands.iter() {
            for e in events {
                match &e.kind {
                    EventKind::Trade {
                        market,
                        trade,
                        price,
                        qty,
                        quote_qty,
                        taker_side,
                        ..
                    } => {
                        let t = TradeSeen {
                            market: *market,
                            trade: *trade,
                            price: *price,
                            qty: *qty,
                            quote_qty: *quote_qty,
                            taker_side: *taker_side,
                            time_ms: ctx.timestamp_ms,
                        };
                        self.on_trade(&t, at);
                    }
                    EventKind::MarketAdded { .. } => self.markets_stale = true,
                    _ => {}
                }
            }
        }
    }

    fn on_trade(&mut self, t: &TradeSeen, at: u64) {
        if let Some(topics) = self.topics.get_mut(&t.market) {
            let wanted = |kind: Kind| matches!(kind, Kind::Trade | Kind::AggTrade);
            if topics.values().any(|x| wanted(x.name.kind)) {
                if let Some(m) = market_of(&self.markets, t.market) {
                    let (trade, agg) = trade_events(m, t, at);
                    let (mut trade_raw, mut agg_raw) = (None, None);
                    for x in topics.values_mut() {
                        let raw = match x.name.kind {
                            Kind::Trade => {
                                trade_raw.get_or_insert_with(|| render(&mut self.counters, &trade))
                            }
                            Kind::AggTrade => {
                                agg_raw.get_or_insert_with(|| render(&mut self.counters, &agg))
                            }
                            _ => continue,
                        };
                        x.deliver(raw, &mut self.counters);
                    }
                }
            }
        }
        for (key, trades) in self.pending.iter_mut() {
            if key.market() == t.market {
                trades.push(*t);
            }
        }
        // Every trade is counted into the kept state; it is an event for the streams
        // subscribed when it came, even if the state counted it already (a seed read
        // after the trade).
        let ticker_watched = self.ticker_watched(t.market);
        if let Some(state) = self.tickers.get_mut(&t.market) {
            count_ticker_once(state, t);
            if ticker_watched {
                self.traded.insert(t.market);
            }
        }
        let spans: Vec<Span> = self
            .klines
            .range((t.market, Span::Second)..)
            .take_while(|((m, _), _)| *m == t.market)
            .map(|((_, s), _)| *s)
            .collect();
        for span in spans {
            let Some(state) = self.klines.get_mut(&(t.market, span)) else {
                continue;
            };
            let (_, closed) = count_kline_once(state, span, t);
            if let Some(old) = closed {
                self.send_kline(t.market, span, &old, true, at);
            }
            let watched = self.topics.get(&t.market).is_some_and(|ts| {
                ts.values()
                    .any(|x| x.name.kind == Kind::Kline(span) && x.has_members())
            });
            if watched {
                self.klines_dirty.insert((t.market, span));
            }
        }
    }

    fn send_kline(&mut self, market: MarketId, span: Span, k: &OpenKline, closed: bool, at: u64) {
        let Some(topics) = self.topics.get_mut(&market) else {
            return;
        };
        let Some(m) = market_of(&self.markets, market) else {
            return;
        };
        for t in topics
            .values_mut()
            .filter(|t| t.name.kind == Kind::Kline(span))
        {
            let raw = render(&mut self.counters, &kline_event(m, span, k, closed, at));
            t.deliver(&raw, &mut self.counters);
        }
    }

    // ---- flushes -----------------------------------------------------------------

    /// Send the merged depth diffs of one update speed to its depth streams.
    fn flush_diffs(&mut self, fast: bool) {
        let pending = std::mem::take(if fast {
            &mut self.diffs_fast
        } else {
            &mut self.diffs_slow
        });
        for (market, merged) in pending {
            let (Some(topics), Some(m)) = (
                self.topics.get_mut(&market),
                market_of(&self.markets, market),
            ) else {
                continue;
            };
            let mut raw = None;
            for t in topics
                .values_mut()
                .filter(|t| t.name.kind == Kind::Depth && t.name.fast == fast)
            {
                let raw = raw.get_or_insert_with(|| {
                    render(
                        &mut self.counters,
                        &depth_update(m, &merged.diff(market), merged.at),
                    )
                });
                t.deliver(raw, &mut self.counters);
            }
        }
    }

    /// Send what the timer is due for.
    async fn flush(&mut self) {
        self.ticks += 1;
        let slow = self.ticks.is_multiple_of(SLOW_EVERY_TICKS);
        let now = self.b.now_ms();
        self.flush_diffs(true);
        if slow {
            self.flush_diffs(false);
        }
        if slow {
            self.sweep();
            self.reseed_tickers(now);
        }
        // Which markets need the engine's book: partial books and book tickers whose
        // book changed, and tickers (best bid and ask) of markets that traded.
        let mut needed: BTreeSet<MarketId> = BTreeSet::new();
        for (m, topics) in &self.topics {
            let book_changed_fast = self.book_fast.contains(m);
            let book_changed_slow = slow && self.book_slow.contains(m);
            let ticker_due = slow && self.tickers.contains_key(m) && self.traded.contains(m);
            for t in topics.values().filter(|t| t.has_members()) {
                let due = match t.name.kind {
                    Kind::Partial(_) if t.name.fast => book_changed_fast,
                    Kind::Partial(_) => book_changed_slow,
                    Kind::BookTicker => book_changed_fast,
                    Kind::Ticker | Kind::MiniTicker => ticker_due,
                    _ => false,
                };
                if due {
                    needed.insert(*m);
                    break;
                }
            }
        }
        let books = if needed.is_empty() {
            BTreeMap::new()
        } else {
            match self.b.query(move |e| read_books(e, &needed)).await {
                Ok(books) => books,
                // The engine is busy: try again at the next tick, marks kept.
                Err(_) => return,
            }
        };
        self.flush_books(&books, slow);
        self.book_fast.clear();
        if slow {
            self.book_slow.clear();
            self.flush_tickers(&books, now);
            self.flush_klines(now);
        }
    }

    /// Partial books and book tickers.
    fn flush_books(&mut self, books: &BTreeMap<MarketId, BookTop>, slow: bool) {
        for (m, topics) in self.topics.iter_mut() {
            let (Some(book), Some(info)) = (books.get(m), market_of(&self.markets, *m)) else {
                continue;
            };
            let changed_fast = self.book_fast.contains(m);
            let changed_slow = slow && self.book_slow.contains(m);
            let mut partials: BTreeMap<usize, Utf8Bytes> = BTreeMap::new();
            for t in topics.values_mut() {
                match t.name.kind {
                    Kind::Partial(levels) => {
                        let changed = if t.name.fast {
                            changed_fast
                        } else {
                            changed_slow
                        };
                        if !changed {
                            continue;
                        }
                        let raw = partials.entry(levels).or_insert_with(|| {
                            render(&mut self.counters, &partial_book(info, book, levels))
                        });
                        t.deliver(raw, &mut self.counters);
                    }
                    Kind::BookTicker => {
                        // Sent when the best bid or ask changed, not for deeper levels.
                        let (top, data) = book_ticker(info, book);
                        if !changed_fast || self.book_tickers_sent.get(m) == Some(&top) {
                            continue;
                        }
                        let raw = render(&mut self.counters, &data);
                        t.deliver(&raw, &mut self.counters);
                        self.book_tickers_sent.insert(*m, top);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Tickers, mini tickers and `!miniTicker@arr` (slow flushes).
    fn flush_tickers(&mut self, books: &BTreeMap<MarketId, BookTop>, now: u64) {
        for (m, topics) in self.topics.iter_mut() {
            let (Some(info), Some(state)) = (market_of(&self.markets, *m), self.tickers.get(m))
            else {
                continue;
            };
            let traded = self.traded.contains(m);
            let mut rendered: Option<(Utf8Bytes, Utf8Bytes)> = None;
            for t in topics.values_mut() {
                let full = match t.name.kind {
                    Kind::Ticker => true,
                    Kind::MiniTicker => false,
                    _ => continue,
                };
                if !traded {
                    continue;
                }
                let (full_raw, mini_raw) = rendered.get_or_insert_with(|| {
                    let (f, mini) = ticker_events(info, books.get(m), &state.stats, now);
                    (
                        render(&mut self.counters, &f),
                        render(&mut self.counters, &mini),
                    )
                });
                let raw = if full { &*full_raw } else { &*mini_raw };
                t.deliver(raw, &mut self.counters);
            }
        }
        // `!miniTicker@arr`: the markets that changed, as Binance sends it.
        if let Some(t) = self.all_minis.as_mut().filter(|t| t.has_members()) {
            let changed: Vec<Value> = self
                .traded
                .iter()
                .filter_map(|m| {
                    let info = market_of(&self.markets, *m)?;
                    let state = self.tickers.get(m)?;
                    Some(mini_ticker(info, &state.stats, now))
                })
                .collect();
            if !changed.is_empty() {
                let raw = render(&mut self.counters, &Value::Array(changed));
                t.deliver(&raw, &mut self.counters);
            }
        }
        self.traded.clear();
    }

    /// Klines: the changed ones, and those whose interval ended (sent closed once).
    fn flush_klines(&mut self, now: u64) {
        let keys: Vec<(MarketId, Span)> = self.klines.keys().copied().collect();
        for key in keys {
            let (m, span) = key;
            let dirty = self.klines_dirty.remove(&key);
            let Some(open) = self.klines.get(&key).and_then(|s| s.kline.clone()) else {
                continue;
            };
            let ended = now > open.k.close_time_ms;
            if ended && !open.closed_sent {
                self.send_kline(m, span, &open, true, now);
                if let Some(state) = self.klines.get_mut(&key) {
                    state.kline = None;
                }
            } else if dirty && !ended {
                self.send_kline(m, span, &open, false, now);
            }
        }
        self.klines_dirty.clear();
    }

    /// Re-seed the 24-hour tickers somebody watches, now and then, so that old trades
    /// leave the window.
    fn reseed_tickers(&mut self, now: u64) {
        let stale: Vec<MarketId> = self
            .tickers
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.seeded_ms) >= TICKER_RESEED_MS)
            .map(|(m, _)| *m)
            .filter(|m| self.ticker_watched(*m))
            .collect();
        for m in stale {
            self.seed(SeedKey::Ticker(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::MasterKey;
    use axum::extract::ws::{CloseFrame, Message};
    use kura_engine::genesis::{BTC, JPY};
    use kura_engine::{Command as EngineCommand, OrderType, Side, TimeInForce};
    use kura_units::{PriceTicks, QtyLots, UserId};
    use tokio::sync::broadcast;

    const NOW: u64 = 1_700_000_000_000;

    struct Client {
        peer: Arc<Peer>,
        rx: mpsc::Receiver<Message>,
        kill: oneshot::Receiver<CloseFrame>,
    }

    fn client(limit: usize, combined: bool) -> Client {
        let (tx, rx) = mpsc::channel(limit);
        let (kill_tx, kill) = oneshot::channel();
        let peer = Arc::new(Peer::new(tx, kill_tx, limit));
        peer.set_combined(combined);
        Client { peer, rx, kill }
    }

    fn names(texts: &[&str]) -> Vec<StreamName> {
        texts
            .iter()
            .map(|t| StreamName::parse(t).expect("a stream name"))
            .collect()
    }

    /// Texts queued on a client so far.
    fn drained(c: &mut Client) -> Vec<Utf8Bytes> {
        let mut out = Vec::new();
        while let Ok(m) = c.rx.try_recv() {
            match m {
                Message::Text(t) => out.push(t),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    struct World {
        b: MemoryBackend,
        feed: broadcast::Receiver<Arc<Published>>,
        hub: Fanout<MemoryBackend>,
        seeds: mpsc::UnboundedReceiver<Seeded>,
        users: (UserId, UserId),
    }

    fn world() -> World {
        let b = MemoryBackend::new(MasterKey::from_bytes([7; 32]), NOW).expect("backend");
        let mut users = Vec::new();
        for _ in 0..2 {
            let u = b.create_user().expect("user");
            b.deposit(u, BTC, 1_000_000_000).expect("btc");
            b.deposit(u, JPY, 1_000_000_000_000).expect("jpy");
            users.push(u);
        }
        let feed = b.subscribe();
        let (seeds_tx, seeds) = mpsc::unbounded_channel();
        World {
            hub: Fanout::new(b.clone(), seeds_tx),
            feed,
            b,
            seeds,
            users: (users[0], users[1]),
        }
    }

    impl World {
        fn limit(&self, user: UserId, side: Side, price: u64) {
            self.limit_qty(user, side, price, 1);
        }

        fn limit_qty(&self, user: UserId, side: Side, price: u64, qty: u64) {
            self.b
                .run_ok(EngineCommand::PlaceOrder {
                    user,
                    market: MarketId(0),
                    side,
                    order: OrderType::Limit {
                        price: PriceTicks::new(price),
                        qty: QtyLots::new(qty),
                        tif: TimeInForce::Gtc,
                        post_only: false,
                    },
                    client_id: None,
                    stp: None,
                })
                .expect("an order");
        }

        /// One trade (a resting sell and the buy that takes it), fed to the hub.
        fn trade(&mut self) {
            let (maker, taker) = self.users;
            self.limit(maker, Side::Sell, 15_000_000);
            self.limit(taker, Side::Buy, 15_000_000);
            self.pump();
        }

        fn pump(&mut self) {
            while let Ok(batch) = self.feed.try_recv() {
                self.hub.on_batch(&batch);
            }
        }

        /// One trade of `qty` lots at `price`, not yet fed to the hub.
        fn trade_unfed(&self, price: u64, qty: u64) {
            let (maker, taker) = self.users;
            self.limit_qty(maker, Side::Sell, price, qty);
            self.limit_qty(taker, Side::Buy, price, qty);
        }

        /// One trade of `qty` lots at `price`, fed to the hub.
        fn trade_at(&mut self, price: u64, qty: u64) {
            self.trade_unfed(price, qty);
            self.pump();
        }

        /// Hand the hub every seed it asked for (read when this awaits).
        async fn land_seeds(&mut self) {
            while !self.hub.pending.is_empty() {
                let seeded = self.seeds.recv().await.expect("a seed");
                self.hub.on_seeded(seeded);
            }
        }

        /// Flush ticks up to and including the next slow flush.
        async fn slow_flush(&mut self) {
            loop {
                self.hub.flush().await;
                if self.hub.ticks.is_multiple_of(SLOW_EVERY_TICKS) {
                    break;
                }
            }
        }

        fn price(&self, ticks: u64) -> Value {
            let info = market_of(&self.hub.markets, MarketId(0)).expect("BTCJPY");
            Value::String(info.price_text(PriceTicks::new(ticks)))
        }
    }

    /// A combined client's messages so far, by stream (`data` of each, in order).
    fn by_stream(c: &mut Client) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for text in drained(c) {
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            let stream = v["stream"].as_str().expect("a combined message").to_owned();
            out.entry(stream).or_default().push(v["data"].clone());
        }
        out
    }

    const STATE_STREAMS: [&str; 7] = [
        "btcjpy@ticker",
        "btcjpy@miniTicker",
        "btcjpy@kline_1m",
        "btcjpy@depth5",
        "btcjpy@depth10@100ms",
        "btcjpy@bookTicker",
        "!miniTicker@arr",
    ];

    #[tokio::test]
    async fn a_subscriber_first_hears_of_a_stream_at_its_next_event_with_the_whole_state() {
        let mut w = world();
        // Before anyone subscribed: the 24 hours and the minute hold this trade.
        w.trade_at(14_000_000, 2);
        let mut first = client(64, true);
        w.hub
            .subscribe(&first.peer, names(&STATE_STREAMS), None)
            .await;
        w.land_seeds().await;
        w.slow_flush().await;
        // A client that takes the first message of a stream for the news (CCXT's
        // watch_ticker) must not be handed the state from before the next event.
        assert_eq!(
            by_stream(&mut first),
            BTreeMap::new(),
            "nothing is sent for subscribing alone"
        );

        // A later subscriber of the same streams: nothing either.
        let mut second = client(64, true);
        w.hub
            .subscribe(&second.peer, names(&STATE_STREAMS), None)
            .await;
        w.land_seeds().await;
        w.slow_flush().await;
        assert!(by_stream(&mut second).is_empty());
        assert!(by_stream(&mut first).is_empty());

        // The next event: a trade, and a bid left resting.
        w.trade_at(15_000_000, 1);
        let (maker, _) = w.users;
        w.limit(maker, Side::Buy, 13_000_000);
        w.pump();
        w.slow_flush().await;
        let got = by_stream(&mut first);
        assert_eq!(got, by_stream(&mut second), "both get the same");
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        let mut want = STATE_STREAMS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "every stream spoke");
        let one = |name: &str| -> &Value {
            let msgs = &got[name];
            assert_eq!(msgs.len(), 1, "{name}: {msgs:?}");
            &msgs[0]
        };
        let (p13, p14, p15) = (
            w.price(13_000_000),
            w.price(14_000_000),
            w.price(15_000_000),
        );
        // The tickers and the kline hold the trade from before the subscription too.
        let t = one("btcjpy@ticker");
        assert_eq!(
            (&t["e"], &t["n"], &t["o"], &t["h"], &t["l"], &t["c"], &t["b"]),
            (
                &json_str("24hrTicker"),
                &Value::from(2),
                &p14,
                &p15,
                &p14,
                &p15,
                &p13
            )
        );
        let m = one("btcjpy@miniTicker");
        assert_eq!(
            (&m["e"], &m["o"], &m["c"]),
            (&json_str("24hrMiniTicker"), &p14, &p15)
        );
        let k = &one("btcjpy@kline_1m")["k"];
        assert_eq!(
            (&k["n"], &k["o"], &k["c"], &k["x"]),
            (&Value::from(2), &p14, &p15, &Value::Bool(false))
        );
        let arr = one("!miniTicker@arr");
        assert_eq!(
            (&arr[0]["s"], &arr[0]["o"], &arr[0]["c"]),
            (&json_str("BTCJPY"), &p14, &p15)
        );
        for depth in ["btcjpy@depth5", "btcjpy@depth10@100ms"] {
            assert_eq!(one(depth)["bids"][0][0], p13, "{depth}");
        }
        assert_eq!(one("btcjpy@bookTicker")["b"], p13);
    }

    #[tokio::test]
    async fn a_trade_its_seed_counted_already_still_makes_the_streams_send_it_once() {
        let mut w = world();
        let mut c = client(64, true);
        w.hub
            .subscribe(&c.peer, names(&["btcjpy@ticker", "btcjpy@kline_1m"]), None)
            .await;
        // The trade reaches the read model before the seeds are read, and the hub
        // after they landed: the seeds count it, the feed's copy is skipped by id.
        w.trade_unfed(15_000_000, 1);
        w.land_seeds().await;
        w.slow_flush().await;
        assert!(by_stream(&mut c).is_empty(), "the trade is not fed yet");
        w.pump();
        w.slow_flush().await;
        let got = by_stream(&mut c);
        let ticker = got.get("btcjpy@ticker").expect("the ticker sent the trade");
        assert_eq!(ticker.len(), 1);
        assert_eq!(
            (&ticker[0]["n"], &ticker[0]["c"]),
            (&Value::from(1), &w.price(15_000_000)),
            "counted once"
        );
        let kline = got
            .get("btcjpy@kline_1m")
            .expect("the kline sent the trade");
        assert_eq!(kline.len(), 1);
        assert_eq!(kline[0]["k"]["n"], 1, "counted once");
    }

    #[tokio::test]
    async fn a_stale_ticker_nobody_watched_is_not_sent_before_its_new_seed() {
        let mut w = world();
        w.trade_at(14_000_000, 1);
        let first = client(64, true);
        w.hub
            .subscribe(&first.peer, names(&["btcjpy@ticker"]), None)
            .await;
        w.land_seeds().await;
        w.hub
            .unsubscribe(first.peer.id(), &["btcjpy@ticker".to_owned()]);
        // A day later the old trade has left the 24 hours.
        w.b.advance_ms(crate::http::DAY_MS + 1_000);
        let mut c = client(64, true);
        w.hub
            .subscribe(&c.peer, names(&["btcjpy@ticker"]), None)
            .await;
        // A trade before the new seed is read: nothing to send yet.
        w.trade_at(15_000_000, 1);
        w.slow_flush().await;
        assert!(by_stream(&mut c).is_empty(), "not from the stale state");
        w.land_seeds().await;
        w.slow_flush().await;
        let got = by_stream(&mut c);
        let ticker = got.get("btcjpy@ticker").expect("sent once seeded");
        assert_eq!(ticker.len(), 1);
        assert_eq!(
            (&ticker[0]["n"], &ticker[0]["o"], &ticker[0]["c"]),
            (&Value::from(1), &w.price(15_000_000), &w.price(15_000_000)),
            "only the trade inside the 24 hours"
        );
    }

    #[tokio::test]
    async fn one_rendering_is_shared_by_every_subscriber() {
        let mut w = world();
        let streams = ["btcjpy@depth@100ms", "btcjpy@trade"];
        let mut raw: Vec<Client> = (0..40).map(|_| client(64, false)).collect();
        let mut combined: Vec<Client> = (0..20).map(|_| client(64, true)).collect();
        for c in raw.iter().chain(&combined) {
            w.hub.subscribe(&c.peer, names(&streams), None).await;
        }
        assert_eq!(w.hub.counters, Counters::default());
        w.trade();
        // Two batches: the resting sell (one diff), the buy (one diff, one trade). The
        // trade is sent at once; the two diffs are merged until the 100 ms flush.
        assert_eq!(w.hub.counters.renders, 1);
        w.hub.flush().await;
        let c = w.hub.counters;
        assert_eq!(c.renders, 2, "one rendering per event, not per subscriber");
        assert_eq!(c.wraps, 2, "one combined wrapper per event and stream");
        assert_eq!(c.queued, 60 * 2);

        let texts: Vec<Vec<Utf8Bytes>> = raw.iter_mut().map(drained).collect();
        assert!(texts.iter().all(|t| t.len() == 2));
        for i in 0..2 {
            let first = &texts[0][i];
            for t in &texts {
                assert_eq!(
                    t[i].as_str().as_ptr(),
                    first.as_str().as_ptr(),
                    "the same bytes, not a copy"
                );
            }
        }
        let wrapped: Vec<Vec<Utf8Bytes>> = combined.iter_mut().map(drained).collect();
        for i in 0..2 {
            let first = &wrapped[0][i];
            assert!(wrapped
                .iter()
                .all(|t| t[i].as_str().as_ptr() == first.as_str().as_ptr()));
            let v: Value = serde_json::from_str(first.as_str()).expect("json");
            let data: Value = serde_json::from_str(texts[0][i].as_str()).expect("json");
            assert_eq!(v["data"], data, "the wrapper carries the raw payload");
            let stream = v["stream"].as_str().expect("a stream name");
            let expected = if data["e"] == "depthUpdate" {
                streams[0]
            } else {
                streams[1]
            };
            assert_eq!(stream, expected);
            assert!(first.as_str().starts_with("{\"stream\":"));
        }
        let trade: Value = serde_json::from_str(texts[0][0].as_str()).expect("json");
        assert_eq!(
            (&trade["e"], &trade["s"]),
            (&json_str("trade"), &json_str("BTCJPY"))
        );
        // The merged diff spans both batches' update ids; the sell rested and was
        // taken, so its level is there at zero.
        let diff: Value = serde_json::from_str(texts[0][1].as_str()).expect("json");
        assert_eq!(diff["e"], "depthUpdate");
        let (first, last) = (
            diff["U"].as_u64().expect("U"),
            diff["u"].as_u64().expect("u"),
        );
        assert_eq!(last, first + 1, "two updates merged: {diff}");
        assert_eq!(
            diff["a"],
            serde_json::json!([[w.price(15_000_000), "0.00000000"]])
        );
    }

    #[tokio::test]
    async fn merged_diffs_stay_contiguous_and_each_speed_flushes_on_its_own_clock() {
        let mut w = world();
        let mut fast = client(256, false);
        let mut slow = client(256, false);
        w.hub
            .subscribe(&fast.peer, names(&["btcjpy@depth@100ms"]), None)
            .await;
        w.hub
            .subscribe(&slow.peer, names(&["btcjpy@depth"]), None)
            .await;
        let diffs = |c: &mut Client| -> Vec<Value> {
            drained(c)
                .iter()
                .map(|t| serde_json::from_str(t.as_str()).expect("json"))
                .filter(|v: &Value| v["e"] == "depthUpdate")
                .collect()
        };
        let mut fast_seen = Vec::new();
        for round in 0..12u64 {
            for i in 0..3 {
                w.limit(w.users.0, Side::Sell, 16_000_000 + round * 10 + i);
            }
            w.pump();
            w.hub.flush().await;
            let got = diffs(&mut fast);
            assert_eq!(got.len(), 1, "one message per 100 ms flush, round {round}");
            fast_seen.extend(got);
        }
        // The fast stream: every update once, contiguous, three levels per message.
        for pair in fast_seen.windows(2) {
            assert_eq!(pair[1]["U"].as_u64(), pair[0]["u"].as_u64().map(|u| u + 1));
        }
        assert!(fast_seen
            .iter()
            .all(|d| d["a"].as_array().map(Vec::len) == Some(3)));
        // The slow stream: flushed at the tenth tick only, the same ids merged.
        let slow_seen = diffs(&mut slow);
        assert_eq!(slow_seen.len(), 1, "{slow_seen:?}");
        assert_eq!(slow_seen[0]["U"], fast_seen[0]["U"]);
        assert_eq!(slow_seen[0]["u"], fast_seen[9]["u"]);
        assert_eq!(slow_seen[0]["a"].as_array().map(Vec::len), Some(30));
    }

    fn json_str(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    #[tokio::test]
    async fn a_slow_consumer_is_closed_and_dropped_while_the_others_get_everything() {
        let mut w = world();
        let mut slow = client(2, false);
        let mut fine = client(64, false);
        for c in [&slow, &fine] {
            w.hub
                .subscribe(&c.peer, names(&["btcjpy@trade"]), None)
                .await;
        }
        for _ in 0..3 {
            w.trade();
        }
        assert!(slow.peer.is_closed());
        let frame = slow.kill.try_recv().expect("a close frame for the writer");
        assert_eq!(frame.code, super::super::conn::CLOSE_POLICY);
        assert!(
            frame.reason.as_str().starts_with("slow consumer"),
            "{}",
            frame.reason.as_str()
        );
        assert_eq!(drained(&mut slow).len(), 2, "never more than its queue");
        assert_eq!(drained(&mut fine).len(), 3);
        assert!(!fine.peer.is_closed());
        let members: usize = w
            .hub
            .topics
            .values()
            .flat_map(|t| t.values())
            .map(|t| t.members.len())
            .sum();
        assert_eq!(members, 1, "the slow consumer is no longer a subscriber");
        assert!(fine.kill.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_acknowledgement_comes_first_and_nothing_after_unsubscribing() {
        let mut w = world();
        let mut c = client(64, false);
        let ack = Utf8Bytes::from_static("{\"id\":1,\"result\":null}");
        w.hub
            .subscribe(&c.peer, names(&["btcjpy@trade"]), Some(ack.clone()))
            .await;
        w.trade();
        let got = drained(&mut c);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ack);
        w.hub.unsubscribe(c.peer.id(), &["btcjpy@trade".to_owned()]);
        assert!(w.hub.topics.is_empty(), "an empty topic is forgotten");
        w.trade();
        assert!(drained(&mut c).is_empty());
        // Nobody subscribed: nothing rendered for the last trade.
        assert_eq!(w.hub.counters.renders, 1);
    }

    #[tokio::test]
    async fn a_lagged_hub_closes_its_subscribers_with_a_reason() {
        let mut w = world();
        let mut c = client(64, false);
        w.hub
            .subscribe(&c.peer, names(&["btcjpy@depth"]), None)
            .await;
        w.hub.on_lagged(7);
        assert!(c.peer.is_closed());
        let frame = c.kill.try_recv().expect("a close frame");
        assert_eq!(frame.code, CLOSE_TRY_AGAIN);
        assert!(frame.reason.as_str().starts_with("lagged: 7"));
        assert!(w.hub.topics.is_empty());
        w.trade();
        assert!(drained(&mut c).is_empty());
    }
}
