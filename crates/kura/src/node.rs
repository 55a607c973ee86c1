//! The node: the sequencer, which owns the engine and the journal.
//!
//! Life of a command: a caller [`NodeHandle::submit`]s an [`Entry`] into a bounded queue. The
//! sequencer's journal stage takes a batch (everything queued, up to
//! [`NodeConfig::batch_max`]), stamps each with the time, encodes and appends it to the
//! journal, and makes the batch durable with one `fdatasync`; only then does it hand the
//! batch to the apply stage, on its own thread, which applies each command to the engine
//! and completes each caller's reply while the journal stage writes the next batch (see
//! `docs/adr/0009-two-stage-sequencer.md`). Nothing — reply, event, read-model write —
//! leaves before the command is durable. A failed write or fsync stops the node; it is
//! never retried.
//!
//! Snapshots: every `snapshot_every_commands` commands or `snapshot_every` time, the
//! apply stage encodes the engine state into a buffer (a copy, on its own thread: fast and
//! bounded by the state size) and hands the bytes to a snapshot thread, which hashes,
//! writes, fsyncs and renames them. The sequencer does not wait for the disk; if the
//! previous snapshot is still being written, this one is skipped. See
//! `docs/adr/0003-sequencer-and-snapshots.md`.
//!
//! Recovery ([`recover`]): load the newest snapshot (checked against its own checksum
//! and state hash), then read the journal once: one thread validates the records from
//! the snapshot's segment on (CRC, sequence, chain hash, the snapshot's chain hash at its
//! sequence number, the seams of the older segments; a torn final record is truncated and
//! logged) and decodes those after the snapshot, while this thread applies them. Any
//! inconsistency stops start-up with a message naming what and where. See
//! `docs/adr/0006-startup-verification.md`.

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use kura_engine::codec::{self, Entry};
use kura_engine::{Command, Ctx, Engine, Event, Limits, Reject};
use kura_journal::{
    list_snapshots, load_newest_valid_snapshot, load_snapshot, write_snapshot, Fs, Head, Journal,
    JournalConfig, JournalError, SnapshotMeta,
};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Configuration of a node's durability and batching.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Commands waiting for the sequencer, at most; a full queue refuses new commands.
    pub queue_capacity: usize,
    /// Cancels (and market halts) waiting, at most, in their own lane: a queue full of
    /// new orders never refuses a cancel, and the sequencer takes cancels first.
    pub priority_capacity: usize,
    /// Commands per journal commit, at most.
    pub batch_max: usize,
    /// Take a snapshot after this many commands (0: never by count).
    pub snapshot_every_commands: u64,
    /// Take a snapshot after this much time with new commands (None: never by time).
    pub snapshot_every: Option<Duration>,
    pub limits: Limits,
    pub journal: JournalConfig,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            queue_capacity: 65_536,
            priority_capacity: 65_536,
            batch_max: 4_096,
            snapshot_every_commands: 1_000_000,
            snapshot_every: Some(Duration::from_secs(600)),
            limits: Limits::DEFAULT,
            journal: JournalConfig::default(),
        }
    }
}

/// What the caller hears back: the command's sequence number and its outcome. Sent only
/// after the command is durable.
#[derive(Debug)]
pub struct Ack {
    pub seq: u64,
    /// The time the sequencer stamped on the command (its `Ctx::timestamp_ms`).
    pub timestamp_ms: u64,
    pub result: Result<Vec<Event>, Reject>,
}

/// Why a command got no [`Ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full (load shedding): the command was not taken.
    Busy,
    /// The node has stopped (shutdown, or a durability failure).
    Stopped(String),
    /// The command cannot be journaled (a text or list over the journal format's
    /// limits); it was not sequenced.
    Invalid(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Busy => f.write_str("the sequencer queue is full"),
            SubmitError::Stopped(why) => write!(f, "the node has stopped: {why}"),
            SubmitError::Invalid(why) => write!(f, "the command cannot be journaled: {why}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// The reply channel of one command.
pub type Reply = Box<dyn FnOnce(Result<Ack, SubmitError>) + Send>;

/// A read of the live engine state, run on the sequencer thread between batches. It is
/// ordered with commands: it sees every command answered before it was queued. Keep it
/// short: the sequencer waits for it. Dropped unrun if the node stops.
pub type Query = Box<dyn FnOnce(&Engine) + Send>;

/// One sequenced command as the sequencer applied it: its context and its events
/// (empty when the engine refused it).
#[derive(Clone, Debug)]
pub struct AppliedCommand {
    pub ctx: Ctx,
    pub events: Vec<Event>,
}

/// Sees every applied batch, in order, on the sequencer thread, after the batch is
/// durable and applied and before any of its callers hears back (so that, for example,
/// an API key is usable the moment its creation is acknowledged). Keep it short: hand
/// the batch to another thread. It also gets the engine state as of the batch's end.
pub type Observer = Box<dyn FnMut(&Engine, Vec<AppliedCommand>) + Send>;

// Commands travel through the queue by value (boxing them would cost an allocation per
// command on the hot path); the small variants are rare.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Command(Request),
    Query(Query),
    /// Finish what was queued before this, then stop (see [`Node::stop`]).
    Stop,
}

struct Request {
    entry: Entry,
    reply: Option<Reply>,
    queued: Instant,
}

impl Request {
    fn answer(&mut self, r: Result<Ack, SubmitError>) {
        if let Some(reply) = self.reply.take() {
            reply(r);
        }
    }
}

/// Every request is answered exactly once: one dropped unanswered (the node stopped
/// with it still queued) answers that the node stopped.
impl Drop for Request {
    fn drop(&mut self) {
        self.answer(Err(SubmitError::Stopped(
            "the node stopped before this command was journaled".into(),
        )));
    }
}

/// What recovery found and did, for logs and `kura journal` output.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub head: Head,
    pub snapshot_seq: Option<u64>,
    pub replayed: u64,
    pub truncated_bytes: u64,
    pub replay_secs: f64,
}

/// Counters of a running node, readable from any thread.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Journal commits (each one `fdatasync`).
    pub commits: AtomicU64,
    /// Commands made durable.
    pub records: AtomicU64,
    /// Snapshots handed to the writer.
    pub snapshots: AtomicU64,
    /// Commands carried to the next batch because the journal's batch was full.
    pub carried_over: AtomicU64,
    /// How long the oldest command of each batch waited in the queue before the
    /// sequencer took it.
    pub queue_wait: StageTimes,
    /// Append and `fdatasync` of each batch.
    pub commit_time: StageTimes,
    /// Applying each batch to the engine and answering its callers.
    pub apply_time: StageTimes,
}

/// A histogram of durations in power-of-two microsecond buckets, written with one
/// relaxed atomic add: cheap enough to keep on the sequencer's path, precise enough
/// (within a factor of two) to tell a disk's tail from a scheduling stall.
#[derive(Debug)]
pub struct StageTimes {
    /// Bucket `i` counts durations `d` with `2^(i-1) <= d_us < 2^i` (bucket 0: under 1 µs).
    buckets: [AtomicU64; STAGE_BUCKETS],
}

const STAGE_BUCKETS: usize = 40;

impl Default for StageTimes {
    fn default() -> StageTimes {
        StageTimes {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl StageTimes {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[i.min(STAGE_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, bucket by bucket.
    pub fn counts(&self) -> [u64; STAGE_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// The upper bound, in microseconds, of the highest bucket with a sample among the
    /// counts `now - before` (0 when there is none): the slowest, within a factor of two.
    pub fn max_us(now: &[u64; STAGE_BUCKETS], before: &[u64; STAGE_BUCKETS]) -> u64 {
        (0..STAGE_BUCKETS)
            .rev()
            .find(|&i| now[i] > before[i])
            .map_or(0, |i| 1u64 << i)
    }

    /// How many of the samples `now - before` took at least `us` microseconds (counted
    /// from the bucket holding `us`, so within a factor of two of it).
    pub fn at_least(now: &[u64; STAGE_BUCKETS], before: &[u64; STAGE_BUCKETS], us: u64) -> u64 {
        let from = (u64::BITS - us.leading_zeros()) as usize;
        (from.min(STAGE_BUCKETS - 1)..STAGE_BUCKETS)
            .map(|i| now[i].saturating_sub(before[i]))
            .sum()
    }

    /// The upper bound, in microseconds, of the bucket holding the `per_million`-th
    /// sample of the counts `now - before` (0 when there is none).
    pub fn percentile_us(
        now: &[u64; STAGE_BUCKETS],
        before: &[u64; STAGE_BUCKETS],
        per_million: u64,
    ) -> u64 {
        let diff: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total: u64 = diff.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = (u128::from(total) * u128::from(per_million)).div_ceil(1_000_000);
        let mut seen = 0u128;
        for (i, n) in diff.iter().enumerate() {
            seen += u128::from(*n);
            if seen >= rank.max(1) {
                return 1u64 << i;
            }
        }
        1u64 << (STAGE_BUCKETS - 1)
    }
}

/// A running node. Dropping the last [`NodeHandle`] and calling [`Node::shutdown`]
/// drains the queue, takes a final snapshot and stops.
pub struct Node {
    tx: Option<Lanes>,
    thread: Option<JoinHandle<Result<Head>>>,
    pub recovered: Recovered,
    pub stats: Arc<NodeStats>,
}

/// A cheap, cloneable way to submit commands to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Lanes,
}

/// The two queues into the sequencer.
#[derive(Clone)]
struct Lanes {
    normal: Sender<Msg>,
    /// Cancels and halts: never shed because new orders filled the normal lane.
    priority: Sender<Msg>,
    closing: Arc<Closing>,
}

/// How a stopped sequencer makes sure every request is answered. A request queued after
/// the sequencer's last look at the queues would otherwise wait there, unanswered, for
/// as long as any handle lives (the queues stay open while a sender does). So the
/// sequencer sets `closed` before its last drain, and a caller whose send succeeded
/// checks `closed` afterwards and, if it is set, drains the queues itself: whichever of
/// the two comes last sees the request.
struct Closing {
    closed: AtomicBool,
    /// Set when the apply stage panicked: the journal stage takes nothing more.
    apply_failed: AtomicBool,
    normal: Receiver<Msg>,
    priority: Receiver<Msg>,
}

impl Closing {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Mark the sequencer stopped, then answer everything queued.
    fn close(&self, why: &str) {
        self.closed.store(true, Ordering::SeqCst);
        self.drain(why);
    }

    /// Answer everything queued "stopped" (queries are dropped unrun, which their
    /// callers see as a stopped node).
    fn drain(&self, why: &str) {
        while let Some(msg) = try_next_msg(&self.normal, &self.priority) {
            if let Msg::Command(mut r) = msg {
                r.answer(Err(SubmitError::Stopped(why.to_owned())));
            }
        }
    }
}

/// Whether a command takes the priority lane: cancelling and halting reduce risk, so
/// they must get through while new orders are being shed.
pub fn is_priority(command: &Command) -> bool {
    matches!(
        command,
        Command::CancelOrder { .. } | Command::CancelAll { .. } | Command::HaltMarket { .. }
    )
}

/// The next message, priority lane first; blocks. `None` once both lanes are closed.
fn next_msg(normal: &Receiver<Msg>, priority: &Receiver<Msg>) -> Option<Msg> {
    if let Ok(m) = priority.try_recv() {
        return Some(m);
    }
    crossbeam_channel::select_biased! {
        recv(priority) -> m => m.ok().or_else(|| normal.recv().ok()),
        recv(normal) -> m => m.ok().or_else(|| priority.recv().ok()),
    }
}

/// The next queued message without waiting, priority lane first.
fn try_next_msg(normal: &Receiver<Msg>, priority: &Receiver<Msg>) -> Option<Msg> {
    priority.try_recv().or_else(|_| normal.try_recv()).ok()
}

impl NodeHandle {
    /// Queue a command; `reply` is called once, after it is durable and applied (or
    /// with an error). Never blocks: a full queue answers [`SubmitError::Busy`] at once.
    pub fn submit(&self, entry: Entry, reply: Reply) {
        let mut request = Request {
            entry,
            reply: Some(reply),
            queued: Instant::now(),
        };
        if self.tx.closing.is_closed() {
            request.answer(Err(SubmitError::Stopped("the node has stopped".into())));
            return;
        }
        let lane = if is_priority(&request.entry.command) {
            &self.tx.priority
        } else {
            &self.tx.normal
        };
        match lane.try_send(Msg::Command(request)) {
            Ok(()) => {
                if self.tx.closing.is_closed() {
                    self.tx.closing.drain("the node has stopped");
                }
            }
            Err(TrySendError::Full(Msg::Command(mut r))) => r.answer(Err(SubmitError::Busy)),
            Err(TrySendError::Disconnected(Msg::Command(mut r))) => {
                r.answer(Err(SubmitError::Stopped("the node has stopped".into())))
            }
            // Only commands are sent above; the request answers itself when dropped.
            Err(_) => {}
        }
    }

    /// Queue a read of the live engine state (see [`Query`]). Never blocks.
    pub fn query(&self, query: Query) -> Result<(), SubmitError> {
        self.send_query(&self.tx.normal, query)
    }

    /// [`NodeHandle::query`] on the priority lane: for the lookups a cancel needs, so
    /// that a full normal lane (new orders being shed) never sheds a cancel.
    pub fn query_priority(&self, query: Query) -> Result<(), SubmitError> {
        self.send_query(&self.tx.priority, query)
    }

    fn send_query(&self, lane: &Sender<Msg>, query: Query) -> Result<(), SubmitError> {
        let stopped = || Err(SubmitError::Stopped("the node has stopped".into()));
        if self.tx.closing.is_closed() {
            return stopped();
        }
        match lane.try_send(Msg::Query(query)) {
            Ok(()) if self.tx.closing.is_closed() => {
                self.tx.closing.drain("the node has stopped");
                stopped()
            }
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                Err(SubmitError::Stopped("the node has stopped".into()))
            }
        }
    }

    /// Run `f` on the engine and wait for its result (for tests, the CLI and tools).
    pub fn query_wait<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.query(Box::new(move |engine| {
            let _ = tx.send(f(engine));
        }))?;
        rx.recv()
            .map_err(|_| SubmitError::Stopped("the node stopped before the query ran".into()))
    }

    /// Submit and wait for the acknowledgement (for tests, the CLI and tools).
    pub fn submit_wait(&self, entry: Entry) -> Result<Ack, SubmitError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            entry,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(SubmitError::Stopped("reply dropped".into())))
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("recovered", &self.recovered)
            .finish()
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeHandle")
    }
}

/// Rebuild the engine from the data directory: newest snapshot + journal tail.
/// `progress` is called with (records replayed, records total if known).
pub fn recover(
    config: &NodeConfig,
    progress: impl FnMut(u64),
) -> Result<(Engine, Journal, Recovered)> {
    recover_observed(config, progress, None, |_, _| {})
}

/// [`recover`], for a consumer that must see the events of every command after
/// `observe_after` (a read model that has applied everything up to that sequence
/// number): recovery starts from a snapshot at or before it (or from genesis) and
/// `observe` is called with each replayed command after it, in order (with no events
/// for a command the engine refused).
pub fn recover_observed(
    config: &NodeConfig,
    mut progress: impl FnMut(u64),
    observe_after: Option<u64>,
    mut observe: impl FnMut(Ctx, &[Event]),
) -> Result<(Engine, Journal, Recovered)> {
    let started = Instant::now();
    let dir = &config.data_dir;
    let mut newest = load_newest_valid_snapshot(dir)
        .with_context(|| format!("reading snapshots in {}", dir.display()))?;
    if let Some(limit) = observe_after {
        if newest.snapshot.as_ref().is_some_and(|s| s.meta.seq > limit) {
            // The observer needs events from before the newest snapshot: start from the
            // newest snapshot at or before `limit`, or from genesis.
            newest.snapshot = None;
            for file in list_snapshots(dir)?.into_iter().rev() {
                if file.seq <= limit {
                    newest.snapshot =
                        Some(load_snapshot(&file.path).with_context(|| {
                            format!("reading snapshot {}", file.path.display())
                        })?);
                    break;
                }
            }
        }
    }
    if let Some(bad) = newest.corrupt.first() {
        bail!(
            "snapshot {} is corrupt ({}); move it aside to start from an older snapshot",
            bad.path.display(),
            bad.error
        );
    }
    let snapshot = newest.snapshot;
    let anchor = snapshot.as_ref().map_or(Head::GENESIS, |s| Head {
        seq: s.meta.seq,
        chain_hash: s.meta.chain_hash,
    });
    let from = anchor.seq;

    // One pass over the journal, on two threads: the reader checks every record it
    // reads (CRC, sequence, chain hash, and the snapshot's chain hash at its seq) and
    // hands those after the snapshot over in batches; this thread builds the engine from
    // the snapshot meanwhile, then decodes (unless the reader already did) and applies
    // them in order.
    let (opened, engine, replayed) = std::thread::scope(|scope| -> Result<_> {
        let (tx, rx) = crossbeam_channel::bounded::<ReplayBatch>(REPLAY_QUEUE_BATCHES);
        let (recycle_tx, recycle_rx) =
            crossbeam_channel::bounded::<ReplayBatch>(REPLAY_QUEUE_BATCHES + 2);
        let journal_config = config.journal.clone();
        let reader = std::thread::Builder::new()
            .name("kura-replay-read".into())
            .spawn_scoped(scope, move || {
                read_for_replay(dir, journal_config, anchor, &tx, &recycle_rx)
            })
            .context("starting the replay reader thread")?;
        // On any failure here, stop the reader (its next hand-over fails) and wait for it.
        let stop = |rx: Receiver<ReplayBatch>, reader: std::thread::ScopedJoinHandle<'_, _>, e| {
            drop(rx);
            let _ = reader.join();
            Err(e)
        };
        let engine = match &snapshot {
            None => Ok(Engine::new(config.limits)),
            Some(snap) => engine_from_snapshot(snap, config.limits),
        };
        let mut engine = match engine {
            Ok(engine) => engine,
            Err(e) => return stop(rx, reader, e),
        };
        let mut replayed = 0u64;
        let mut events = Vec::new();
        let mut apply = |ctx: Ctx, command: &Command| {
            events.clear();
            let _ = engine.apply(command, ctx, &mut events);
            if observe_after.is_some_and(|after| ctx.seq > after) {
                observe(ctx, &events);
            }
            replayed += 1;
            if replayed.is_multiple_of(65_536) {
                progress(replayed);
            }
        };
        while let Ok(mut batch) = rx.recv() {
            if batch.decoded.len() == batch.records.len() {
                for (ctx, command) in &batch.decoded {
                    apply(*ctx, command);
                }
            } else {
                for i in 0..batch.records.len() {
                    match batch.decode(i) {
                        Ok((ctx, entry)) => apply(ctx, &entry.command),
                        Err((seq, e)) => {
                            let e = anyhow!(
                                "journal record {seq} cannot be decoded: {e}; stopping \
                                 rather than skipping it"
                            );
                            return stop(rx, reader, e);
                        }
                    }
                }
            }
            batch.clear();
            let _ = recycle_tx.try_send(batch);
        }
        let opened = reader
            .join()
            .map_err(|_| anyhow!("the replay reader thread panicked"))?;
        Ok((opened, engine, replayed))
    })?;
    let (journal, recovery) = opened.map_err(|e| match (&snapshot, &e) {
        (
            Some(snap),
            JournalError::AnchorMismatch { .. } | JournalError::AnchorBeyondHead { .. },
        ) => anyhow!(e).context(format!(
            "snapshot {} (seq {}) does not match the journal",
            snap.path.display(),
            snap.meta.seq
        )),
        _ => anyhow!(e).context(format!("recovering the journal in {}", dir.display())),
    })?;
    if recovery.truncated_bytes > 0 {
        tracing::warn!(
            bytes = recovery.truncated_bytes,
            at = ?recovery.truncated_at,
            "dropped a torn final journal record (it was never acknowledged)"
        );
    }
    let head = journal.head();
    if replayed != head.seq.saturating_sub(from) {
        // Every record after the snapshot is handed over exactly once; anything else is a
        // bug, and the state must not be trusted.
        bail!(
            "replayed {replayed} records after seq {from} but the journal ends at seq {}",
            head.seq
        );
    }
    progress(replayed);
    let recovered = Recovered {
        head,
        snapshot_seq: (from > 0).then_some(from),
        replayed,
        truncated_bytes: recovery.truncated_bytes,
        replay_secs: started.elapsed().as_secs_f64(),
    };
    Ok((engine, journal, recovered))
}

/// Records per hand-over from the replay reader to the applying thread.
const REPLAY_BATCH: usize = 4_096;

/// Batches the replay reader may run ahead of the applying thread.
const REPLAY_QUEUE_BATCHES: usize = 4;

/// Validated journal records on their way from the replay reader to the engine: the
/// payloads back to back, and, when the reader had time to spare, their decoded entries.
#[derive(Debug, Default)]
struct ReplayBatch {
    /// The payloads, back to back.
    bytes: Vec<u8>,
    /// Per record: its seq and where its payload ends in `bytes`.
    records: Vec<(u64, usize)>,
    /// Every record decoded (by the reader), or empty.
    decoded: Vec<(Ctx, Command)>,
}

impl ReplayBatch {
    fn with_capacity(records: usize) -> ReplayBatch {
        ReplayBatch {
            bytes: Vec::with_capacity(records * 64),
            records: Vec::with_capacity(records),
            decoded: Vec::new(),
        }
    }

    fn push(&mut self, seq: u64, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.records.push((seq, self.bytes.len()));
    }

    /// Record `i`'s context and entry, or its seq and why it does not decode.
    fn decode(&self, i: usize) -> Result<(Ctx, codec::Entry), (u64, codec::CodecError)> {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.records.get(p))
            .map_or(0, |r| r.1);
        let (seq, end) = self.records.get(i).copied().unwrap_or((0, start));
        let payload = self.bytes.get(start..end).unwrap_or(&[]);
        let entry = codec::decode(payload).map_err(|e| (seq, e))?;
        let ctx = Ctx {
            seq,
            timestamp_ms: entry.ctx_timestamp_ms,
        };
        Ok((ctx, entry))
    }

    /// Decodes every record into `decoded`; leaves it empty if any does not decode (the
    /// applying thread then finds and reports it).
    fn decode_all(&mut self) {
        self.decoded.clear();
        for i in 0..self.records.len() {
            match self.decode(i) {
                Ok((ctx, entry)) => self.decoded.push((ctx, entry.command)),
                Err(_) => {
                    self.decoded.clear();
                    return;
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.decoded.clear();
    }
}

/// The replay reader: opens the journal from `anchor` (one validating pass) and hands
/// each record after it over in batches. When the applying thread is behind (the queue
/// is full), the reader decodes the batch itself before waiting, so the two threads
/// share the decoding in whatever proportion keeps both busy. Empty batches come back
/// through `recycle`, so the steady state allocates nothing.
fn read_for_replay(
    dir: &Path,
    config: JournalConfig,
    anchor: Head,
    tx: &Sender<ReplayBatch>,
    recycle: &Receiver<ReplayBatch>,
) -> Result<(Journal, kura_journal::Recovery), JournalError> {
    let abandoned = || "the replay was abandoned".to_owned();
    let mut batch = ReplayBatch::with_capacity(REPLAY_BATCH);
    let opened = Journal::open_replay(dir, config, anchor, &mut |record| {
        batch.push(record.seq, record.payload);
        if batch.len() >= REPLAY_BATCH {
            let next = recycle
                .try_recv()
                .unwrap_or_else(|_| ReplayBatch::with_capacity(REPLAY_BATCH));
            match tx.try_send(std::mem::replace(&mut batch, next)) {
                Ok(()) => {}
                Err(TrySendError::Full(mut full)) => {
                    full.decode_all();
                    tx.send(full).map_err(|_| abandoned())?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(abandoned()),
            }
        }
        Ok(())
    });
    if opened.is_ok() && batch.len() > 0 {
        // The applying thread waits for this (it stops only when `tx` is dropped).
        let _ = tx.send(batch);
    }
    opened
}

/// The engine a snapshot holds, after checking the state against the snapshot's state
/// hash. (The snapshot's own checksum was checked when it was loaded; its chain hash is
/// checked against the journal by the replay reader.) Public for read-only tools that
/// rebuild the books beside a running node.
pub fn engine_from_snapshot(snap: &kura_journal::Snapshot, limits: Limits) -> Result<Engine> {
    let state_hash: [u8; 32] = Sha256::digest(&snap.state).into();
    if state_hash != snap.meta.state_hash {
        bail!(
            "snapshot {} (seq {}): state hash does not match its contents",
            snap.path.display(),
            snap.meta.seq
        );
    }
    Engine::decode_state(&snap.state, limits).map_err(|why| {
        anyhow!(
            "snapshot {} (seq {}): {why}",
            snap.path.display(),
            snap.meta.seq
        )
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct SnapshotJob {
    meta: (u64, [u8; 32]),
    state: Vec<u8>,
}

fn write_snapshot_job(dir: &Path, job: &SnapshotJob) -> Result<()> {
    let meta = SnapshotMeta {
        seq: job.meta.0,
        chain_hash: job.meta.1,
        state_hash: Sha256::digest(&job.state).into(),
    };
    write_snapshot(dir, &meta, &job.state)
        .with_context(|| format!("writing the snapshot at seq {}", meta.seq))?;
    tracing::info!(seq = meta.seq, bytes = job.state.len(), "snapshot written");
    Ok(())
}

impl Node {
    /// Recover from the data directory and start the sequencer.
    pub fn start(config: NodeConfig) -> Result<(Node, NodeHandle)> {
        let (engine, journal, recovered) = recover(&config, |_| {})?;
        Node::start_with(config, engine, journal, recovered)
    }

    /// Start the sequencer over an already recovered engine and journal.
    pub fn start_with<F: Fs + Send + 'static>(
        config: NodeConfig,
        engine: Engine,
        journal: Journal<F>,
        recovered: Recovered,
    ) -> Result<(Node, NodeHandle)> {
        Node::start_observed(config, engine, journal, recovered, None)
    }

    /// [`Node::start_with`], with an [`Observer`] of every applied batch.
    pub fn start_observed<F: Fs + Send + 'static>(
        config: NodeConfig,
        engine: Engine,
        journal: Journal<F>,
        recovered: Recovered,
        observer: Option<Observer>,
    ) -> Result<(Node, NodeHandle)> {
        let (normal, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let (priority, prio_rx) = crossbeam_channel::bounded(config.priority_capacity.max(1));
        let closing = Arc::new(Closing {
            closed: AtomicBool::new(false),
            apply_failed: AtomicBool::new(false),
            normal: rx.clone(),
            priority: prio_rx.clone(),
        });
        let tx = Lanes {
            normal,
            priority,
            closing: Arc::clone(&closing),
        };
        let stats = Arc::new(NodeStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("kura-sequencer".into())
            .spawn(move || {
                sequencer(
                    config,
                    engine,
                    journal,
                    (rx, prio_rx),
                    &closing,
                    observer,
                    &thread_stats,
                )
            })
            .context("starting the sequencer thread")?;
        let handle = NodeHandle { tx: tx.clone() };
        Ok((
            Node {
                tx: Some(tx),
                thread: Some(thread),
                recovered,
                stats,
            },
            handle,
        ))
    }

    /// Stop now, even while [`NodeHandle`]s are alive: everything queued before this
    /// call is sequenced and answered, anything submitted after it is answered with
    /// [`SubmitError::Stopped`]; then the final snapshot is written.
    pub fn stop(mut self) -> Result<Head> {
        if let Some(tx) = self.tx.take() {
            // A blocking send: a full queue is drained by the sequencer meanwhile.
            // (Unless the sequencer has already stopped: then nobody drains the queue.)
            let mut stop = Msg::Stop;
            loop {
                match tx.normal.send_timeout(stop, Duration::from_millis(10)) {
                    Err(SendTimeoutError::Timeout(m)) if !tx.closing.is_closed() => stop = m,
                    _ => break,
                }
            }
        }
        self.shutdown()
    }

    /// Stop taking commands, finish the queued ones, take a final snapshot, stop.
    /// Every [`NodeHandle`] must be dropped first, or this waits for them.
    pub fn shutdown(mut self) -> Result<Head> {
        drop(self.tx.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the sequencer thread panicked"))?,
            None => bail!("already shut down"),
        }
    }
}

/// A durable batch on its way from the journal stage to the apply stage: the requests
/// (already journaled and synced, in sequence order), the head after them, and the
/// queries that were taken with them (they run after the batch is applied).
struct Durable {
    requests: Vec<Request>,
    head: Head,
    queries: Vec<Query>,
}

/// Durable batches the journal stage may run ahead of the apply stage. One is being
/// applied while the next is being written and synced; more would only add latency.
pub const HANDOVER_BATCHES: usize = 2;

/// The sequencer, in two stages on two threads (ADR 0009). The journal stage (this
/// thread) takes a batch from the queues, stamps, encodes, appends and syncs it, and
/// hands it over; the apply stage applies each command in order, shows the batch to the
/// observer, answers each caller, runs the queries and takes snapshots. A batch is
/// handed over only after its `fdatasync` returned, so nothing is applied, answered or
/// observed before it is durable; the journal stage meanwhile writes the next batch.
fn sequencer<F: Fs>(
    config: NodeConfig,
    engine: Engine,
    mut journal: Journal<F>,
    (rx, prio_rx): (Receiver<Msg>, Receiver<Msg>),
    closing: &Closing,
    observer: Option<Observer>,
    stats: &NodeStats,
) -> Result<Head> {
    let dir = config.data_dir.clone();
    let (durable_tx, durable_rx) = crossbeam_channel::bounded::<Durable>(HANDOVER_BATCHES);
    // Emptied request vectors come back, so the steady state allocates no batch.
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<Request>>(HANDOVER_BATCHES + 2);
    let (failure, engine, snapshots) = std::thread::scope(|scope| -> Result<_> {
        let apply_config = &config;
        let applier = std::thread::Builder::new()
            .name("kura-apply".into())
            .spawn_scoped(scope, move || {
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    apply_stage(
                        apply_config,
                        engine,
                        &durable_rx,
                        &recycle_tx,
                        observer,
                        stats,
                    )
                }));
                applied.unwrap_or_else(|_| {
                    // The apply stage panicked (a query, or a bug): tell the journal
                    // stage to take nothing more, and answer "stopped" to every batch it
                    // hands over until it has stopped, so that no caller waits forever.
                    closing.apply_failed.store(true, Ordering::SeqCst);
                    for stranded in &durable_rx {
                        drop(stranded);
                    }
                    Err(anyhow!("the apply stage panicked; node stopped"))
                })
            })
            .context("starting the apply thread")?;
        let failure = journal_stage(
            &config,
            &mut journal,
            (&rx, &prio_rx),
            closing,
            &durable_tx,
            &recycle_rx,
            stats,
        );
        // The apply stage finishes every batch handed over (they are durable) and stops.
        drop(durable_tx);
        let applied = applier
            .join()
            .map_err(|_| anyhow!("the apply thread panicked"))?;
        let (engine, snapshots) = applied?;
        Ok((failure, engine, snapshots))
    })?;
    drop(rx);
    drop(prio_rx);
    if let Some(why) = failure {
        bail!(why);
    }
    let since_snapshot = snapshots?;
    // Final snapshot at shutdown, written synchronously.
    let head = journal.head();
    if since_snapshot > 0 && head.seq > 0 {
        let mut state = Vec::new();
        engine.encode_state(&mut state);
        write_snapshot_job(
            &dir,
            &SnapshotJob {
                meta: (head.seq, head.chain_hash),
                state,
            },
        )?;
    }
    Ok(head)
}

/// The journal stage: batches from the queues, appended and synced, handed to the apply
/// stage. Returns why it stopped on a failure (every request it held was answered
/// "stopped"), or `None` after a clean stop.
fn journal_stage<F: Fs>(
    config: &NodeConfig,
    journal: &mut Journal<F>,
    (rx, prio_rx): (&Receiver<Msg>, &Receiver<Msg>),
    closing: &Closing,
    durable_tx: &Sender<Durable>,
    recycle_rx: &Receiver<Vec<Request>>,
    stats: &NodeStats,
) -> Option<String> {
    let mut batch: Vec<Request> = Vec::new();
    let mut buf = Vec::with_capacity(256);
    let mut last_ms = 0u64;
    let mut failure: Option<String> = None;
    // Requests taken from the queue but left for the next batch (the journal's batch
    // byte limit was reached), oldest first.
    let mut backlog: VecDeque<Request> = VecDeque::new();
    // Queries taken with this batch: they run after it is applied.
    let mut queries: Vec<Query> = Vec::new();
    let mut stopping = false;
    loop {
        if stopping && backlog.is_empty() {
            break;
        }
        if backlog.is_empty() {
            match next_msg(rx, prio_rx) {
                Some(Msg::Command(r)) => backlog.push_back(r),
                Some(Msg::Query(q)) => queries.push(q),
                Some(Msg::Stop) => stopping = true,
                None => break,
            }
        }
        while batch.len() < config.batch_max {
            if let Some(r) = backlog.pop_front() {
                batch.push(r);
                continue;
            }
            if stopping {
                break;
            }
            match try_next_msg(rx, prio_rx) {
                Some(Msg::Command(r)) => batch.push(r),
                Some(Msg::Query(q)) => queries.push(q),
                Some(Msg::Stop) => stopping = true,
                None => break,
            }
        }
        if closing.apply_failed.load(Ordering::SeqCst) {
            let why = "the apply stage stopped; node stopped".to_owned();
            tracing::error!("{why}");
            for mut r in batch.drain(..) {
                r.answer(Err(SubmitError::Stopped(why.clone())));
            }
            failure = Some(why);
            break;
        }
        let taken = Instant::now();
        if let Some(oldest) = batch.iter().map(|r| r.queued).min() {
            stats
                .queue_wait
                .record(taken.saturating_duration_since(oldest));
        }
        // Stamp, encode, append. A command the journal format cannot hold is refused
        // here, before it gets a sequence number.
        let now = now_ms().max(last_ms);
        last_ms = now;
        let mut appended = Ok(());
        let mut kept = 0;
        let mut full_at = None;
        for i in 0..batch.len() {
            batch[i].entry.ctx_timestamp_ms = now;
            buf.clear();
            if let Err(e) = codec::try_encode(&batch[i].entry, &mut buf) {
                batch[i].answer(Err(SubmitError::Invalid(e.to_string())));
                continue;
            }
            match journal.append(&buf) {
                Ok(_) => {}
                Err(JournalError::BatchFull { .. }) if kept > 0 => {
                    // This one and the rest go in the next batch.
                    full_at = Some(i);
                    break;
                }
                Err(e) => {
                    appended = Err(e);
                    break;
                }
            }
            batch.swap(kept, i);
            kept += 1;
        }
        if let Some(i) = full_at {
            stats
                .carried_over
                .fetch_add((batch.len() - i) as u64, Ordering::Relaxed);
            for r in batch.drain(i..).rev() {
                backlog.push_front(r);
            }
        }
        if appended.is_ok() {
            batch.truncate(kept); // drops the refused (already answered) requests
        }
        // One fsync for the whole batch. Failure stops the node; nothing is acked.
        let committing = Instant::now();
        let committed = appended.and_then(|()| journal.commit());
        if !batch.is_empty() {
            stats.commit_time.record(committing.elapsed());
        }
        let head = match committed {
            Ok(head) => head,
            Err(e) => {
                let why = format!("journal failure, node stopped: {e}");
                tracing::error!("{why}");
                for mut r in batch.drain(..) {
                    r.answer(Err(SubmitError::Stopped(why.clone())));
                }
                failure = Some(why);
                break;
            }
        };
        if batch.is_empty() && queries.is_empty() {
            continue;
        }
        stats
            .commits
            .fetch_add(u64::from(!batch.is_empty()), Ordering::Relaxed);
        stats
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let next = recycle_rx.try_recv().unwrap_or_default();
        let handoff = Durable {
            requests: std::mem::replace(&mut batch, next),
            head,
            queries: std::mem::take(&mut queries),
        };
        if durable_tx.send(handoff).is_err() {
            // The apply stage is gone (it panicked): its requests are answered
            // "stopped" as they drop.
            let why = "the apply thread stopped; node stopped".to_owned();
            tracing::error!("{why}");
            failure = Some(why);
            break;
        }
    }
    // Whatever is still queued, or queued from now on, is answered "stopped".
    let why = failure.as_deref().unwrap_or("the node has stopped");
    for mut r in backlog.drain(..) {
        r.answer(Err(SubmitError::Stopped(why.to_owned())));
    }
    closing.close(why);
    failure
}

/// The apply stage: every durable batch applied in order, observed, answered; queries
/// run after their batch; snapshots handed to the snapshot thread. Returns the engine
/// and the snapshot thread's result with the commands applied since the last snapshot.
fn apply_stage(
    config: &NodeConfig,
    mut engine: Engine,
    durable_rx: &Receiver<Durable>,
    recycle_tx: &Sender<Vec<Request>>,
    mut observer: Option<Observer>,
    stats: &NodeStats,
) -> Result<(Engine, Result<u64>)> {
    // The snapshot writer: one job at a time; a busy writer means "skip this one".
    let (snap_tx, snap_rx) = mpsc::sync_channel::<SnapshotJob>(1);
    let snap_dir = config.data_dir.clone();
    let snapshotter = std::thread::Builder::new()
        .name("kura-snapshot".into())
        .spawn(move || -> Result<()> {
            for job in snap_rx {
                write_snapshot_job(&snap_dir, &job)?;
            }
            Ok(())
        })
        .context("starting the snapshot thread")?;
    let mut events = Vec::with_capacity(64);
    let mut since_snapshot = 0u64;
    let mut last_snapshot_at = Instant::now();
    for Durable {
        requests: mut batch,
        head,
        queries,
    } in durable_rx
    {
        let applying = Instant::now();
        let first_seq = head.seq + 1 - batch.len() as u64;
        if let Some(observe) = observer.as_mut() {
            // Apply all, show the batch to the observer, then answer.
            let mut results = Vec::with_capacity(batch.len());
            let mut applied = Vec::with_capacity(batch.len());
            for (i, r) in batch.iter().enumerate() {
                let ctx = Ctx {
                    seq: first_seq + i as u64,
                    timestamp_ms: r.entry.ctx_timestamp_ms,
                };
                events.clear();
                let result = engine
                    .apply(&r.entry.command, ctx, &mut events)
                    .map(|()| std::mem::take(&mut events));
                applied.push(AppliedCommand {
                    ctx,
                    events: result.as_ref().map_or_else(|_| Vec::new(), Clone::clone),
                });
                results.push(result);
            }
            if !applied.is_empty() {
                observe(&engine, applied);
            }
            for (i, (mut r, result)) in batch.drain(..).zip(results).enumerate() {
                let seq = first_seq + i as u64;
                r.answer(Ok(Ack {
                    seq,
                    timestamp_ms: r.entry.ctx_timestamp_ms,
                    result,
                }));
            }
        } else {
            for (i, mut r) in batch.drain(..).enumerate() {
                let seq = first_seq + i as u64;
                let ctx = Ctx {
                    seq,
                    timestamp_ms: r.entry.ctx_timestamp_ms,
                };
                events.clear();
                let result = engine
                    .apply(&r.entry.command, ctx, &mut events)
                    .map(|()| std::mem::take(&mut events));
                r.answer(Ok(Ack {
                    seq,
                    timestamp_ms: r.entry.ctx_timestamp_ms,
                    result,
                }));
            }
        }
        let _ = recycle_tx.try_send(batch);
        let applied = head.seq + 1 - first_seq;
        if applied > 0 {
            stats.apply_time.record(applying.elapsed());
        }
        for q in queries {
            q(&engine);
        }
        since_snapshot += applied;
        let due_by_count =
            config.snapshot_every_commands > 0 && since_snapshot >= config.snapshot_every_commands;
        let due_by_time = since_snapshot > 0
            && config
                .snapshot_every
                .is_some_and(|t| last_snapshot_at.elapsed() >= t);
        if due_by_count || due_by_time {
            let mut state = Vec::new();
            engine.encode_state(&mut state);
            let job = SnapshotJob {
                meta: (head.seq, head.chain_hash),
                state,
            };
            if snap_tx.try_send(job).is_ok() {
                stats.snapshots.fetch_add(1, Ordering::Relaxed);
                since_snapshot = 0;
                last_snapshot_at = Instant::now();
            }
        }
    }
    drop(snap_tx);
    let snapshots = snapshotter
        .join()
        .map_err(|_| anyhow!("the snapshot thread panicked"))?;
    Ok((engine, snapshots.map(|()| since_snapshot)))
}

/// An internal entry (no API origin) for a command.
pub fn internal(command: Command) -> Entry {
    Entry {
        ctx_timestamp_ms: 0,
        origin: codec::Origin::Internal,
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::StageTimes;
    use std::time::Duration;

    #[test]
    fn stage_times_bound_each_percentile_by_a_power_of_two() {
        let t = StageTimes::default();
        let before = t.counts();
        for _ in 0..98 {
            t.record(Duration::from_micros(3)); // bucket [2, 4) µs
        }
        t.record(Duration::from_micros(700)); // [512, 1024)
        t.record(Duration::from_millis(20)); // [16384, 32768)
        let now = t.counts();
        assert_eq!(StageTimes::percentile_us(&now, &before, 500_000), 4);
        assert_eq!(StageTimes::percentile_us(&now, &before, 980_000), 4);
        assert_eq!(StageTimes::percentile_us(&now, &before, 990_000), 1024);
        assert_eq!(StageTimes::percentile_us(&now, &before, 1_000_000), 32768);
        // Only what was recorded after `before` counts.
        assert_eq!(StageTimes::percentile_us(&now, &now, 500_000), 0);
        t.record(Duration::ZERO);
        assert_eq!(StageTimes::percentile_us(&t.counts(), &now, 500_000), 1);
    }
}
