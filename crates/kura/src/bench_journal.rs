//! `kura bench journal`: what durability costs on this machine's disk.
//!
//! Everything goes through the real node ([`kura::node`]): the sequencer appends a batch
//! to the journal, makes it durable with one `fdatasync`, then applies each command to
//! the engine and acknowledges it. The commands are exchange-core's single-pair order
//! flow (the same stream `kura bench core` measures, mapped as `ec_stream` describes:
//! 1,000 pre-filled orders, then ~9 % GTC, 3 % IOC, 6 % cancel, 82 % move), after the
//! workload's markets and funded users. The setup is journaled but not measured. Each
//! measurement starts a fresh node in a fresh directory inside one temporary directory
//! (under `--dir`), which is removed at the end. Periodic snapshots are off, so they do
//! not disturb the figures.
//!
//! 0. The fsync floor: in the same temporary directory, a bare `write` of one 128-byte
//!    record followed by `fdatasync`, one at a time, for `--seconds`: the latency
//!    distribution of the two calls a journal commit makes, without the node. No ack can
//!    be faster than one of these, so `fsync_floor.latency_us.p99` above the ack p99
//!    target means the target cannot be met on this disk
//!    (`fsync_floor.ack_p99_target_reachable`), and each group-commit run reports its ack
//!    p99 as a multiple of the floor's (`ack_p99_over_fsync_floor_p99`).
//! 1. Group commit at offered rates. A numeric rate `r` is open loop: command `i` is due
//!    at `start + i / r`; the generator waits for that time (sleeping at least
//!    `--tick-us`, then sending every command that fell due: see `wait_until` for why)
//!    and submits it; how late each submission was is reported (`send_lateness_us`). Its
//!    ack latency runs from that planned time to its reply, so the tick and a slow fsync
//!    both delay every command behind them (no coordinated omission). A full queue
//!    refuses the command (`busy`) and it is not retried. `max` is closed loop: keep
//!    `--max-in-flight` commands submitted and unanswered (when the window is full, or a
//!    command was refused, the generator sleeps one tick); latency runs from the
//!    submission. Each run also reports where each batch's time went
//!    (`batch_stages`: queue wait of its oldest command, append + fdatasync, apply and
//!    answer; p50/p99/p99.9 as power-of-two microsecond bounds, from the node's own
//!    histograms).
//! 2. One fsync per command: a node with `batch_max = 1`, closed loop with
//!    `--baseline-in-flight` commands in flight (enough to keep the sequencer busy, so
//!    latency includes waiting behind the fsyncs of the commands ahead).
//!    `gain` = best durable rate of group commit / this one's.
//! 3. Replay: a journal of at least `--replay-records` records (the `max` run's, topped
//!    up closed loop; a dedicated node when no `max` run was asked for), with every
//!    snapshot deleted, recovered into a fresh engine exactly as a node starts: one pass
//!    over the journal, one thread reading and checking every record's CRC and chain
//!    hash, the other decoding and applying. The files were just written, so they are
//!    read from the page cache, not the disk.
//!
//! Durable rate = acknowledged commands / time from the start of the run to the last
//! ack, so commands still queued when the load stops count, and so does the time to
//! drain them. Latencies are exact percentiles over every ack, in microseconds. Rates are
//! per second, rounded down. `fsyncs_per_sec` and `mean_batch` come from the node's
//! commit and record counters over the run.

use crate::ec_stream;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kura::node::{
    internal, recover, Node, NodeConfig, NodeHandle, NodeStats, Reply, StageTimes, SubmitError,
};
use kura_bench::latency::rate as per_sec;
use kura_engine::{Command, EventKind, Limits};
use kura_journal::list_snapshots;
use kura_units::MarketId;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An offered rate: commands per second, or as fast as the node takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    PerSec(u64),
    Max,
}

impl FromStr for Rate {
    type Err = String;

    /// `10000`, `10k`, `1m` or `max`.
    fn from_str(s: &str) -> Result<Rate, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Rate::Max);
        }
        let (digits, unit) = if let Some(d) = t.strip_suffix('k') {
            (d, 1_000)
        } else if let Some(d) = t.strip_suffix('m') {
            (d, 1_000_000)
        } else {
            (t.as_str(), 1)
        };
        let n: u64 = digits.replace('_', "").parse().map_err(|_| {
            format!("{s:?}: a rate is commands per second (10000, 10k, 1m) or `max`")
        })?;
        match n.checked_mul(unit) {
            Some(r) if r > 0 => Ok(Rate::PerSec(r)),
            _ => Err(format!("{s:?}: a rate must be positive and fit in 64 bits")),
        }
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?}: the duration must be positive")),
    }
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    /// Print one JSON object on stdout instead of pretty JSON.
    #[arg(long)]
    json: bool,
    /// Seconds of load per run (each offered rate, and the baseline).
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    seconds: Duration,
    /// Offered rates, commands per second (`10k`, `1m` allowed), or `max`.
    #[arg(long, value_delimiter = ',', default_value = "10k,100k,300k,1m,max")]
    rates: Vec<Rate>,
    /// Where to create the temporary data directory (default: the system temp dir).
    /// Put it on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records (at least) in the journal the replay measurement recovers.
    #[arg(long, default_value_t = 2_000_000)]
    replay_records: u64,
    /// Sequencer queue capacity: commands waiting, at most; more are refused as busy.
    #[arg(long, default_value_t = 1 << 20)]
    queue: usize,
    /// Commands per journal commit (one fsync), at most, in the group-commit runs.
    #[arg(long, default_value_t = 65_536)]
    batch_max: usize,
    /// Commands in flight in the `max` runs (and the replay fill).
    #[arg(long, default_value_t = 131_072)]
    max_in_flight: u64,
    /// Commands in flight in the one-fsync-per-command baseline.
    #[arg(long, default_value_t = 8)]
    baseline_in_flight: u64,
    /// Length of the generated order flow each run draws from (a run stops early if
    /// it runs out).
    #[arg(long, default_value_t = 4_000_000)]
    commands: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The generator's shortest sleep, microseconds: when the next command is not yet
    /// due it sleeps at least this long and then sends every command that fell due
    /// meanwhile (their latency still counts from their planned times). 0: sleep until
    /// 60 µs before each command and spin the rest.
    #[arg(long, default_value_t = 500)]
    tick_us: u64,
}

/// The order flow every run replays from its start: setup, then commands.
#[derive(Debug)]
struct Stream {
    setup: Vec<Command>,
    commands: Vec<Command>,
    limits: Limits,
}

/// Goals the figures are compared against.
const TARGET_DURABLE_PER_SEC: u64 = 1_000_000;
const TARGET_ACK_P99_MS: u64 = 5;
const TARGET_REPLAY_PER_SEC: u64 = 5_000_000;

/// Room reserved for the latencies of a closed-loop run, per second of load, so the
/// vector does not grow (and copy) while the sequencer records into it. Only the pages
/// touched are ever backed by memory.
const ACKS_PER_SEC_RESERVED: u64 = 8_000_000;

/// Latencies to reserve room for in a closed-loop run of `d`.
fn acks_room(d: Duration) -> u64 {
    ACKS_PER_SEC_RESERVED.saturating_mul(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)) / 1_000
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `n / d` rounded to two decimals, for reporting only.
#[allow(clippy::float_arithmetic)]
fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        return 0.0;
    }
    (n as f64 / d as f64 * 100.0).round() / 100.0
}

/// A benchmark's temporary data directory; removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A fresh directory `kura-bench-<label>-<pid>-<time>` under `parent`.
    pub(crate) fn new(parent: &Path, label: &str) -> Result<TempDir> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("kura-bench-{label}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

#[derive(Debug, Default)]
struct Acks {
    /// Ack latency of each durable command, nanoseconds.
    latency_ns: Vec<u64>,
    /// When the last ack arrived.
    last: Option<Instant>,
    /// Durable commands the engine refused (a refusal is journaled and acknowledged too).
    refused: u64,
    /// Trades among the acknowledged commands' events.
    trades: u64,
}

/// What the replies of one run record. Replies run on the sequencer thread (and, for a
/// refused submission, at once on the generator's), so they only take an uncontended
/// lock and push.
#[derive(Debug, Default)]
struct Recorder {
    acks: Mutex<Acks>,
    /// Replies of any kind so far (durable, busy or stopped).
    answered: AtomicU64,
    busy: AtomicU64,
    stopped: AtomicU64,
    /// Commands the node could not journal (the drill's never are).
    invalid: AtomicU64,
}

impl Recorder {
    fn with_capacity(n: u64) -> Arc<Recorder> {
        let rec = Recorder::default();
        rec.lock()
            .latency_ns
            .reserve(usize::try_from(n).unwrap_or(0));
        Arc::new(rec)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reply of a command sent (or due) at `sent`.
    fn reply(self: &Arc<Self>, sent: Instant) -> Reply {
        let rec = Arc::clone(self);
        Box::new(move |r| {
            match r {
                Ok(ack) => {
                    let now = Instant::now();
                    let mut a = rec.lock();
                    a.latency_ns
                        .push(nanos(now.saturating_duration_since(sent)));
                    a.last = Some(now);
                    match &ack.result {
                        Ok(events) => {
                            a.trades += events
                                .iter()
                                .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
                                .count() as u64;
                        }
                        Err(_) => a.refused += 1,
                    }
                }
                Err(SubmitError::Busy) => {
                    rec.busy.fetch_add(1, Ordering::Relaxed);
                }
                Err(SubmitError::Stopped(_)) => {
                    rec.stopped.fetch_add(1, Ordering::Relaxed);
                }
                Err(SubmitError::Invalid(_)) => {
                    rec.invalid.fetch_add(1, Ordering::Relaxed);
                }
            }
            rec.answered.fetch_add(1, Ordering::Release);
        })
    }

    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::Relaxed) > 0 {
            bail!("the node stopped during the run (see the log above)");
        }
        let invalid = self.invalid.load(Ordering::Relaxed);
        if invalid > 0 {
            bail!("the node could not journal {invalid} of the benchmark's commands");
        }
        Ok(())
    }

    /// Wait (without spinning) until `n` replies have arrived.
    fn wait_answered(&self, n: u64) -> Result<()> {
        while self.answered.load(Ordering::Acquire) < n {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.check_running()
    }
}

/// The node's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counters {
    commits: u64,
    records: u64,
    /// Per-batch stage histograms: queue wait, commit (append + fdatasync), apply.
    stages: [[u64; 40]; 3],
}

impl Counters {
    pub(crate) fn of(stats: &NodeStats) -> Counters {
        Counters {
            commits: stats.commits.load(Ordering::Relaxed),
            records: stats.records.load(Ordering::Relaxed),
            stages: [
                stats.queue_wait.counts(),
                stats.commit_time.counts(),
                stats.apply_time.counts(),
            ],
        }
    }

    /// Where each batch's time went between `before` and `self`: p50/p99/p99.9 and the
    /// slowest of each stage, as the upper bound of a power-of-two microsecond bucket,
    /// and how many batches spent 16 ms or more in it.
    pub(crate) fn stages_json(&self, before: &Counters) -> Value {
        let stage = |i: usize| {
            let (now, then) = (&self.stages[i], &before.stages[i]);
            let q = |pm| StageTimes::percentile_us(now, then, pm);
            json!({
                "p50": q(500_000),
                "p99": q(990_000),
                "p999": q(999_000),
                "max": StageTimes::max_us(now, then),
                "batches_16ms_or_more": StageTimes::at_least(now, then, 16_384),
            })
        };
        json!({
            "queue_wait_us": stage(0),
            "commit_us": stage(1),
            "apply_us": stage(2),
        })
    }
}

/// Wait for `planned`. With a `tick`, sleep at least that long (commands that fall due
/// meanwhile go out together on waking); without, sleep until [`SLEEP_MARGIN`] before
/// it and spin the rest.
///
/// Why a tick: on the 2-vCPU VM these figures come from, a generator that keeps a core
/// busy (spinning, or waking every 100 µs) while the node makes thousands of fsyncs a
/// second gets the whole machine frozen by its host for 10–20 ms every 100 ms (seen
/// with `perf sched`: no guest event at all on either CPU for the whole gap; reproduced
/// with a bare C spinner next to a Python `fdatasync` loop). Every command due during a
/// freeze is late by up to 20 ms, which set the ack p99 of every rate. Sleeping 500 µs
/// at a time keeps the generator's CPU low enough that the freezes stop; the tick's own
/// cost (up to 0.5 ms late) is charged to the node, since latency runs from the
/// planned time.
fn wait_until(planned: Instant, tick: Duration) {
    let now = Instant::now();
    if planned <= now {
        return;
    }
    if !tick.is_zero() {
        std::thread::sleep((planned - now).max(tick));
        return;
    }
    if planned > now + SLEEP_MARGIN {
        std::thread::sleep(planned - now - SLEEP_MARGIN);
    }
    while Instant::now() < planned {
        std::hint::spin_loop();
    }
}

/// How long before a planned time the generator stops sleeping and spins.
const SLEEP_MARGIN: Duration = Duration::from_micros(60);

/// The value at quantile `per_million` / 10^6 (nearest rank) of sorted nanoseconds,
/// in microseconds.
fn nth_us(sorted_ns: &[u64], per_million: u64) -> u64 {
    let n = sorted_ns.len() as u64;
    if n == 0 {
        return 0;
    }
    let rank = (n * per_million).div_ceil(1_000_000).clamp(1, n);
    let i = usize::try_from(rank - 1).unwrap_or(0);
    sorted_ns.get(i).copied().unwrap_or(0) / 1_000
}

/// The figures of one run.
#[derive(Debug)]
struct RunReport {
    offered: Rate,
    in_flight: Option<u64>,
    /// Commands handed to `submit` (refused ones included).
    submitted: u64,
    /// Rate at which the generator actually submitted.
    sent_per_sec: u64,
    durable: u64,
    busy: u64,
    refused: u64,
    trades: u64,
    elapsed_ns: u64,
    /// Sorted ack latencies, nanoseconds.
    latency_ns: Vec<u64>,
    commits: u64,
    records: u64,
    /// Per-batch stage percentiles (see [`Counters::stages_json`]).
    stages: Value,
    /// Sorted lateness of each submission behind its planned time (open loop only),
    /// nanoseconds.
    lateness_ns: Vec<u64>,
}

impl RunReport {
    fn durable_per_sec(&self) -> u64 {
        per_sec(self.durable, self.elapsed_ns)
    }

    /// The latency at quantile `per_million` / 10^6 (nearest rank), microseconds.
    fn percentile_us(&self, per_million: u64) -> u64 {
        nth_us(&self.latency_ns, per_million)
    }

    fn to_json(&self) -> Value {
        json!({
            "offered_rate": match self.offered {
                Rate::PerSec(r) => json!(r),
                Rate::Max => json!("max"),
            },
            "in_flight": self.in_flight,
            "submitted": self.submitted,
            "sent_per_sec": self.sent_per_sec,
            "durable": self.durable,
            "durable_per_sec": self.durable_per_sec(),
            "elapsed_ms": self.elapsed_ns / 1_000_000,
            "ack_latency_us": {
                "p50": self.percentile_us(500_000),
                "p99": self.percentile_us(990_000),
                "p999": self.percentile_us(999_000),
                "max": self.latency_ns.last().copied().unwrap_or(0) / 1_000,
            },
            "send_lateness_us": {
                "p50": nth_us(&self.lateness_ns, 500_000),
                "p99": nth_us(&self.lateness_ns, 990_000),
                "p999": nth_us(&self.lateness_ns, 999_000),
            },
            "batch_stages": self.stages,
            "fsyncs": self.commits,
            "fsyncs_per_sec": per_sec(self.commits, self.elapsed_ns),
            "mean_batch": ratio(self.records, self.commits),
            "busy": self.busy,
            "refused_by_engine": self.refused,
            "trades": self.trades,
        })
    }

    fn summary(&self) -> String {
        format!(
            "{} durable/s, ack p50 {} µs p99 {} µs max {} µs, {} fsyncs/s, mean batch {}, busy {}; \
             p99 by stage (µs, ≤): send late {}, queue {}, commit {}, apply {}",
            self.durable_per_sec(),
            self.percentile_us(500_000),
            self.percentile_us(990_000),
            self.latency_ns.last().copied().unwrap_or(0) / 1_000,
            per_sec(self.commits, self.elapsed_ns),
            ratio(self.records, self.commits),
            self.busy,
            nth_us(&self.lateness_ns, 990_000),
            self.stages["queue_wait_us"]["p99"],
            self.stages["commit_us"]["p99"],
            self.stages["apply_us"]["p99"],
        )
    }
}

/// A node under load and the index of the next command of the stream.
#[derive(Debug)]
struct Running {
    node: Node,
    handle: NodeHandle,
    stream: Arc<Stream>,
    next_key: u64,
    /// The generator's shortest sleep (see [`wait_until`]).
    tick: Duration,
}

fn node_config(dir: &Path, a: &JournalArgs, batch_max: usize, limits: Limits) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.queue_capacity = a.queue.max(1);
    config.batch_max = batch_max.max(1);
    config.snapshot_every_commands = 0;
    config.snapshot_every = None;
    config.limits = limits;
    config
}

impl Running {
    /// A fresh node in `dir` (created here), with the stream's setup journaled.
    fn start(
        dir: &Path,
        a: &JournalArgs,
        batch_max: usize,
        stream: &Arc<Stream>,
    ) -> Result<Running> {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (node, handle) = Node::start(node_config(dir, a, batch_max, stream.limits))?;
        // Submitted all at once (so they share fsyncs), then every answer checked.
        let (tx, rx) = std::sync::mpsc::channel();
        for c in &stream.setup {
            let tx = tx.clone();
            let name = c.name();
            handle.submit(
                internal(c.clone()),
                Box::new(move |r| {
                    let _ = tx.send(match r {
                        Ok(ack) => ack
                            .result
                            .map(|_| ())
                            .map_err(|why| format!("setup command {name} refused: {why}")),
                        Err(e) => Err(format!("setting up the node: {e}")),
                    });
                }),
            );
        }
        drop(tx);
        for r in rx {
            r.map_err(|why| anyhow!(why))?;
        }
        Ok(Running {
            node,
            handle,
            stream: Arc::clone(stream),
            next_key: 0,
            tick: Duration::from_micros(a.tick_us),
        })
    }

    /// Wait a little in the closed loop: one tick (see [`wait_until`]), or a yield.
    fn pause(&self) {
        if self.tick.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.tick);
        }
    }

    /// The stream's next command, if any is left.
    fn next_command(&self) -> Option<Command> {
        self.stream.commands.get(self.next_key as usize).cloned()
    }

    fn stop(self) -> Result<()> {
        drop(self.handle);
        self.node.shutdown()?;
        Ok(())
    }

    fn report(
        &self,
        rec: &Recorder,
        offered: Rate,
        in_flight: Option<u64>,
        (submitted, sent_ns): (u64, u64),
        start: Instant,
        before: Counters,
    ) -> RunReport {
        let after = Counters::of(&self.node.stats);
        let mut acks = std::mem::take(&mut *rec.lock());
        acks.latency_ns.sort_unstable();
        let end = acks.last.unwrap_or(start);
        RunReport {
            offered,
            in_flight,
            submitted,
            sent_per_sec: per_sec(submitted, sent_ns),
            durable: acks.latency_ns.len() as u64,
            busy: rec.busy.load(Ordering::Relaxed),
            refused: acks.refused,
            trades: acks.trades,
            elapsed_ns: nanos(end.saturating_duration_since(start)),
            latency_ns: acks.latency_ns,
            commits: after.commits - before.commits,
            records: after.records - before.records,
            stages: after.stages_json(&before),
            lateness_ns: Vec::new(),
        }
    }

    /// Open loop: command `i` due at `start + i / rate`, for `duration`.
    fn open_loop(&mut self, rate: u64, duration: Duration) -> Result<RunReport> {
        let n = u64::try_from(u128::from(rate) * duration.as_nanos() / 1_000_000_000)
            .unwrap_or(u64::MAX)
            .max(1);
        let rec = Recorder::with_capacity(n);
        let before = Counters::of(&self.node.stats);
        let start = Instant::now();
        let mut last_sent = start;
        let mut n_sent = 0;
        let mut lateness = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..n {
            let Some(cmd) = self.next_command() else {
                break;
            };
            self.next_key += 1;
            n_sent += 1;
            let entry = internal(cmd);
            let offset = u128::from(i) * 1_000_000_000 / u128::from(rate);
            let planned = start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
            wait_until(planned, self.tick);
            lateness.push(nanos(Instant::now().saturating_duration_since(planned)));
            self.handle.submit(entry, rec.reply(planned));
            last_sent = Instant::now();
            rec.check_running()?;
        }
        let sent_ns = nanos(last_sent - start);
        rec.wait_answered(n_sent)?;
        let mut report = self.report(
            &rec,
            Rate::PerSec(rate),
            None,
            (n_sent, sent_ns),
            start,
            before,
        );
        lateness.sort_unstable();
        report.lateness_ns = lateness;
        Ok(report)
    }

    /// Closed loop: keep `window` commands in flight, until `duration` has passed or
    /// `limit` commands were taken (whichever comes first; at least one is given).
    fn closed_loop(
        &mut self,
        window: u64,
        duration: Option<Duration>,
        limit: Option<u64>,
        reserve: u64,
    ) -> Result<RunReport> {
        let window = window.max(1);
        let rec = Recorder::with_capacity(reserve);
        let before = Counters::of(&self.node.stats);
        let start = Instant::now();
        let end = duration.map(|d| start + d);
        let mut submitted = 0u64;
        let mut taken = 0u64;
        let mut last_sent = start;
        loop {
            if limit.is_some_and(|l| taken >= l) {
                break;
            }
            let now = Instant::now();
            if end.is_some_and(|e| now >= e) {
                break;
            }
            if submitted - rec.answered.load(Ordering::Acquire) >= window {
                self.pause();
                continue;
            }
            let Some(cmd) = self.next_command() else {
                break;
            };
            let busy_before = rec.busy.load(Ordering::Relaxed);
            let sent = Instant::now();
            self.handle.submit(internal(cmd), rec.reply(sent));
            submitted += 1;
            last_sent = sent;
            rec.check_running()?;
            if rec.busy.load(Ordering::Relaxed) == busy_before {
                taken += 1;
                self.next_key += 1;
            } else {
                // Refused: the same command again after a pause.
                self.pause();
            }
        }
        let sent_ns = nanos(last_sent - start);
        rec.wait_answered(submitted)?;
        Ok(self.report(
            &rec,
            Rate::Max,
            Some(window),
            (submitted, sent_ns),
            start,
            before,
        ))
    }
}

/// Bytes of the journal's segment files.
fn journal_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let journal = dir.join("journal");
    for f in
        std::fs::read_dir(&journal).with_context(|| format!("listing {}", journal.display()))?
    {
        let f = f?;
        if f.path().extension().is_some_and(|e| e == "seg") {
            total += f.metadata()?.len();
        }
    }
    Ok(total)
}

/// Bytes of each write in the fsync floor measurement: about one small command record.
const FLOOR_RECORD_BYTES: usize = 128;

/// The disk's own latency floor for a durable append: in a fresh file in `dir`, one
/// `write` of a small record followed by one `fdatasync`, repeated one at a time for
/// `duration`. This is what a group commit costs at the least (the journal's commit is
/// the same two calls), so an ack p99 below this floor's p99 is impossible on this disk.
fn fsync_floor(dir: &Path, duration: Duration) -> Result<Value> {
    use std::io::Write;
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("floor.dat");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let record = [0x5au8; FLOOR_RECORD_BYTES];
    let mut latency_ns = Vec::new();
    let start = Instant::now();
    while latency_ns.is_empty() || start.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&record)
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync of {}", path.display()))?;
        latency_ns.push(nanos(t.elapsed()));
    }
    let elapsed_ns = nanos(start.elapsed());
    drop(file);
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    latency_ns.sort_unstable();
    let samples = latency_ns.len() as u64;
    let pct = |per_million: u64| -> u64 {
        let rank = (samples * per_million)
            .div_ceil(1_000_000)
            .clamp(1, samples);
        let i = usize::try_from(rank - 1).unwrap_or(0);
        latency_ns.get(i).copied().unwrap_or(0) / 1_000
    };
    let p99 = pct(990_000);
    Ok(json!({
        "what": "write of one small record + fdatasync, one at a time, in the data directory",
        "record_bytes": FLOOR_RECORD_BYTES,
        "samples": samples,
        "syncs_per_sec": per_sec(samples, elapsed_ns),
        "latency_us": {
            "p50": pct(500_000),
            "p99": p99,
            "p999": pct(999_000),
            "max": latency_ns.last().copied().unwrap_or(0) / 1_000,
        },
        // Fewer than 1,000 samples: p99.9 is the maximum of too few to mean much.
        "p999_meaningful": samples >= 1_000,
        "ack_p99_target_reachable": p99 <= TARGET_ACK_P99_MS * 1_000,
    }))
}

/// Delete every snapshot in `dir`, then recover from the journal alone and time it.
fn replay(dir: &Path, a: &JournalArgs, limits: Limits) -> Result<Value> {
    for snap in list_snapshots(dir)? {
        std::fs::remove_file(&snap.path)
            .with_context(|| format!("removing {}", snap.path.display()))?;
    }
    let bytes = journal_bytes(dir)?;
    let config = node_config(dir, a, a.batch_max, limits);
    let started = Instant::now();
    let (engine, journal, recovered) = recover(&config, |_| {})?;
    let elapsed_ns = nanos(started.elapsed());
    if let Some(seq) = recovered.snapshot_seq {
        bail!("replay started from a snapshot at seq {seq}; it must replay the whole journal");
    }
    if recovered.replayed != recovered.head.seq {
        bail!(
            "replayed {} records of {}",
            recovered.replayed,
            recovered.head.seq
        );
    }
    let users = engine.user_count();
    let resting: usize = (0..engine.market_count())
        .filter_map(|m| engine.book(MarketId(m as u32)))
        .map(|b| b.len())
        .sum();
    drop((engine, journal));
    let records = recovered.replayed;
    Ok(json!({
        "records": records,
        "bytes": bytes,
        "bytes_per_record": bytes.checked_div(records).unwrap_or(0),
        "elapsed_ms": elapsed_ns / 1_000_000,
        "per_sec": per_sec(records, elapsed_ns),
        "mb_per_sec": per_sec(bytes, elapsed_ns) / 1_000_000,
        "users": users,
        "resting_orders": resting,
        "page_cache": "warm: the journal was just written",
    }))
}

pub fn run(a: &JournalArgs) -> Result<()> {
    let started = Instant::now();
    if a.rates.is_empty() {
        bail!("give at least one rate");
    }
    eprintln!(
        "generating {} commands of exchange-core's single-pair flow ...",
        a.commands
    );
    let w = kura_bench::workload::exchange_core_single_pair(a.seed, a.commands);
    let (commands, skipped) = ec_stream::ready_commands(&w);
    if skipped > 0 {
        bail!("the workload has {skipped} reduce commands, which this benchmark cannot map");
    }
    let stream = Arc::new(Stream {
        setup: ec_stream::setup(&w),
        commands,
        limits: ec_stream::limits(&w),
    });
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir::new(&parent, "journal")?;
    eprintln!("data directory: {}", tmp.0.display());

    // 0. The disk's floor: a bare durable append, on the same file system.
    eprintln!(
        "fsync floor: write + fdatasync of {FLOOR_RECORD_BYTES} bytes for {:?} ...",
        a.seconds
    );
    let floor = fsync_floor(&tmp.0.join("fsync-floor"), a.seconds)?;
    eprintln!(
        "  p50 {} µs p99 {} µs p99.9 {} µs over {} syncs",
        floor["latency_us"]["p50"],
        floor["latency_us"]["p99"],
        floor["latency_us"]["p999"],
        floor["samples"]
    );
    let floor_p99_us = floor["latency_us"]["p99"].as_u64().unwrap_or(0);

    // 1. Group commit at each offered rate, each on a fresh node.
    let mut group = Vec::new();
    let mut replay_dir: Option<PathBuf> = None;
    for (k, &rate) in a.rates.iter().enumerate() {
        let dir = tmp.0.join(format!("group-{k}"));
        let mut node = Running::start(&dir, a, a.batch_max, &stream)?;
        let report = match rate {
            Rate::PerSec(r) => {
                eprintln!(
                    "group commit, {r} commands/s offered for {:?} ...",
                    a.seconds
                );
                node.open_loop(r, a.seconds)?
            }
            Rate::Max => {
                eprintln!(
                    "group commit, max ({} in flight) for {:?} ...",
                    a.max_in_flight, a.seconds
                );
                node.closed_loop(a.max_in_flight, Some(a.seconds), None, acks_room(a.seconds))?
            }
        };
        eprintln!("  {}", report.summary());
        let keep = rate == Rate::Max && replay_dir.is_none();
        if keep {
            fill(&mut node, a)?;
        }
        node.stop()?;
        if keep {
            replay_dir = Some(dir);
        } else {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        group.push(report);
    }

    // 2. One fsync per command.
    eprintln!(
        "one fsync per command ({} in flight) for {:?} ...",
        a.baseline_in_flight, a.seconds
    );
    let dir = tmp.0.join("baseline");
    let mut node = Running::start(&dir, a, 1, &stream)?;
    let baseline = node.closed_loop(
        a.baseline_in_flight,
        Some(a.seconds),
        None,
        acks_room(a.seconds),
    )?;
    node.stop()?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!("  {}", baseline.summary());
    let best = group
        .iter()
        .map(RunReport::durable_per_sec)
        .max()
        .unwrap_or(0);

    // 3. Replay.
    let replay_dir = match replay_dir {
        Some(d) => d,
        None => {
            let dir = tmp.0.join("replay");
            let mut node = Running::start(&dir, a, a.batch_max, &stream)?;
            fill(&mut node, a)?;
            node.stop()?;
            dir
        }
    };
    eprintln!("replaying the journal in {} ...", replay_dir.display());
    let replay = replay(&replay_dir, a, stream.limits)?;
    eprintln!(
        "  {} records in {} ms: {} records/s",
        replay["records"], replay["elapsed_ms"], replay["per_sec"]
    );

    let out = json!({
        "disk": tmp.0.display().to_string(),
        "seconds_per_run": a.seconds.as_secs_f64(),
        "config": {
            "queue_capacity": a.queue,
            "batch_max": a.batch_max,
            "max_in_flight": a.max_in_flight,
            "tick_us": a.tick_us,
            "snapshots": false,
        },
        "fsync_floor": floor,
        "group_commit": group
            .iter()
            .map(|r| {
                let mut v = r.to_json();
                // How many times the disk's own p99 the ack p99 is (1.0: all disk).
                v["ack_p99_over_fsync_floor_p99"] =
                    json!(ratio(r.percentile_us(990_000), floor_p99_us));
                v
            })
            .collect::<Vec<_>>(),
        "one_fsync_per_command": baseline.to_json(),
        "gain": ratio(best, baseline.durable_per_sec()),
        "replay": replay,
        "targets": {
            "durable_per_sec": TARGET_DURABLE_PER_SEC,
            "ack_p99_ms": TARGET_ACK_P99_MS,
            "replay_per_sec": TARGET_REPLAY_PER_SEC,
        },
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

/// Top the node's journal up to `--replay-records` records, closed loop.
fn fill(node: &mut Running, a: &JournalArgs) -> Result<()> {
    let have = node.node.stats.records.load(Ordering::Relaxed);
    let missing = a.replay_records.saturating_sub(have);
    if missing > 0 {
        eprintln!("filling the journal with {missing} more records for the replay ...");
        node.closed_loop(a.max_in_flight, None, Some(missing), 0)?;
    }
    Ok(())
}
