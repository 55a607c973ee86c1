//! `kura bench api`: signed orders per second through the REST API, on loopback, with
//! durability on.
//!
//! Each run starts a fresh exchange in its own directory (inside one temporary directory
//! under `--dir`, removed at the end): the real server ([`kura::server::Exchange`]:
//! journal with group commit and `fdatasync`, sequencer, engine, SQLite read model, the
//! axum router) listening on `127.0.0.1:0`, in this process, on its own tokio runtime.
//! `--users` customers are created through the admin channel's handler, each with one
//! HMAC key and funded with JPY and BTC. The load comes from hyper's client (HTTP/1.1,
//! keep-alive, `TCP_NODELAY`) on a second runtime; every request is signed
//! (HMAC-SHA256 of the form body) and answered only once its command is durable.
//!
//! The flow, on BTCJPY around 15,000,000 JPY, request `i` from customer `i % users`
//! (seeded, so every run sends the same requests):
//! - 70 % near orders: GTC limit, either side, within [`NEAR_TICKS`] of the mid, 0.0001
//!   to 0.002 BTC: they rest or cross (trades, partial fills, and self-trade
//!   prevention when a customer meets its own order);
//! - 15 % deep orders: GTC limit at least [`DEEP_TICKS`] from the mid, which no near
//!   order reaches, so they rest until cancelled;
//! - 15 % cancels (`DELETE /api/v3/order` by client order id) of that customer's oldest
//!   acknowledged deep order (a deep order instead when it has none), so every cancel
//!   finds its order and the book stays small.
//!
//! 1. Offered rates (open loop, like wrk2): request `i` is due at `start + i / rate`. A
//!    pacing thread sleeps until it is due and hands it to the client runtime, where it
//!    waits for one of at most `--open-connections` connections (FIFO) and is sent. Its
//!    latency runs from the planned time to the last byte of the answer, so a stall
//!    (an fsync's tail, a full connection pool, the pacing thread oversleeping) delays
//!    every request behind it and shows in their latencies: coordinated omission is not
//!    hidden. `send_lag_us` reports how late the pacing thread itself was.
//! 2. Maximum sustained throughput (closed loop): `--connections` connections, each
//!    sending its next request as soon as the previous one is answered; the latency of
//!    that run is from each actual send.
//!
//! Every run is preceded by `--warmup-secs` of the same load on the same exchange (not
//! measured: connections are opened and the code is warm). After each run the engine is
//! checked against what the client saw: the market's update id (one per effective
//! command) equals the orders and cancels answered 200, the largest order id answered
//! equals the orders answered 200, and the read model's trade count is reported. A
//! non-200 answer is counted by status (with a few sample bodies); the benchmark fails
//! if more than half of a run's requests fail, and warns (and reports) otherwise.
//!
//! Rates are per second, rounded down; `ok_per_sec` = requests answered 200 / time from
//! the start of the run to the last answer. Latencies come from an HdrHistogram (3
//! significant digits), in microseconds. `fsyncs_per_sec` and `mean_batch` come from
//! the node's commit and record counters over the measured run.
//!
//! Known limitation: client and server share the machine's cores (the output says how
//! many), so the figures are a lower bound for a server with cores of its own.

use crate::bench_journal::Rate;
use crate::bench_journal::TempDir;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use kura::node::NodeStats;
use kura::server::admin::{self, Envelope, Request as AdminRequest};
use kura::server::backend::NodeBackend;
use kura::server::{Exchange, ServerConfig};
use kura_api::auth::HmacSecret;
use kura_api::backend::Backend;
use kura_bench::latency::rate as per_sec;
use kura_units::MarketId;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

/// The market every request trades.
pub(crate) const SYMBOL: &str = "BTCJPY";
/// Mid price of the flow, JPY (BTCJPY's tick is 1 JPY).
pub(crate) const MID_JPY: u64 = 15_000_000;
/// Near orders are priced within this many ticks of the mid, either side.
const NEAR_TICKS: u64 = 3;
/// Deep orders are at least this many ticks from the mid (and at most 99 more).
pub(crate) const DEEP_TICKS: u64 = 1_000;
/// Order sizes in lots of 0.00001 BTC: 0.0001 to 0.002 BTC (notional ≥ 1,500 JPY).
pub(crate) const LOTS_MIN: u64 = 10;
const LOTS_MAX: u64 = 200;
/// Lots per BTC (BTCJPY's lot is 0.00001 BTC).
pub(crate) const LOTS_PER_BTC: u64 = 100_000;
/// Shares of the flow, per mille; the rest are cancels.
const NEAR_PER_MILLE: u64 = 700;
const DEEP_PER_MILLE: u64 = 150;
/// What each customer is credited before the load: far more than any run can trade.
const FUND_JPY: &str = "100000000000";
const FUND_BTC: &str = "1000";
/// The signed requests' `recvWindow`, milliseconds.
pub(crate) const RECV_WINDOW_MS: u64 = 60_000;
/// Latencies above one minute are recorded as one minute.
pub(crate) const MAX_TRACKED_NS: u64 = 60_000_000_000;
/// Sample bodies of failed requests kept per run.
const FAILURE_SAMPLES: usize = 5;

fn parse_seconds(s: &str, zero_ok: bool) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(v) {
        Ok(d) if zero_ok || !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?}: the duration must be positive")),
    }
}

pub(crate) fn positive_seconds(s: &str) -> Result<Duration, String> {
    parse_seconds(s, false)
}

pub(crate) fn any_seconds(s: &str) -> Result<Duration, String> {
    parse_seconds(s, true)
}

/// An offered rate: `1000`, `5k`, `1m`.
fn offered_rate(s: &str) -> Result<u64, String> {
    match Rate::from_str(s)? {
        Rate::PerSec(r) => Ok(r),
        Rate::Max => Err("`max` is the closed-loop run: see --connections".to_owned()),
    }
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Print one JSON object on stdout instead of pretty JSON.
    #[arg(long)]
    json: bool,
    /// Seconds of measured load per run (each offered rate, and the closed loop).
    #[arg(long, default_value = "5", value_parser = positive_seconds)]
    duration_secs: Duration,
    /// Seconds of the same load before each measured run (not measured; 0: none).
    #[arg(long, default_value = "1", value_parser = any_seconds)]
    warmup_secs: Duration,
    /// Offered rates of the open-loop runs, requests per second (`5k` allowed).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,8000", value_parser = offered_rate)]
    rates: Vec<u64>,
    /// Connections of the closed-loop (maximum throughput) run; 0 skips it.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections the open-loop runs may use at most (a request due when all are busy
    /// waits for one, and its latency shows it).
    #[arg(long, default_value_t = 256)]
    open_connections: usize,
    /// Customers (each with one HMAC key) the requests are spread over.
    #[arg(long, default_value_t = 8)]
    users: u32,
    /// Tokio worker threads of the server.
    #[arg(long)]
    server_threads: Option<usize>,
    /// Tokio worker threads of the client.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Seconds to wait, after the load stops, for the last answers.
    #[arg(long, default_value = "60", value_parser = positive_seconds)]
    drain_secs: Duration,
    /// Where to create the temporary data directories (default: the system temp dir).
    /// Put it on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `n / d` rounded to two decimals, for reporting only.
#[allow(clippy::float_arithmetic)]
pub(crate) fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        return 0.0;
    }
    (n as f64 / d as f64 * 100.0).round() / 100.0
}

/// SplitMix64: the flow's randomness, a pure function of the seed and request index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_NS, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time of this process's live threads by thread name, milliseconds (empty where
/// `/proc` is not there). Threads that exit between two readings are not counted.
pub(crate) fn cpu_ms_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command name: state, ppid, ..., utime (14th), stime (15th).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        *out.entry(comm.trim().to_owned()).or_default() += ticks * 1_000 / USER_HZ;
    }
    out
}

/// `after - before`, per thread name, dropping names that used nothing.
pub(crate) fn cpu_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, ms)| {
            (
                name.clone(),
                ms.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, ms)| *ms > 0)
        .collect()
}

/// The system's load averages when the benchmark started (other work on the machine
/// shows here).
pub(crate) fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

// ---- the flow ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Buy,
    Sell,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// One request of the flow.
#[derive(Debug)]
enum Action {
    Order {
        side: Side,
        price_jpy: u64,
        lots: u64,
        /// Set on deep orders, which are cancelled later by this id.
        deep_id: Option<String>,
    },
    Cancel {
        client_id: String,
    },
}

/// A customer of the flow.
#[derive(Debug)]
struct Trader {
    key: String,
    secret: HmacSecret,
    /// Client order ids of this customer's deep orders answered 200 and not yet
    /// cancelled, oldest first.
    deep_open: Mutex<VecDeque<String>>,
    deep_count: AtomicU64,
}

impl Trader {
    fn deep_open(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.deep_open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The client side of one exchange: its address, customers and connection pool.
#[derive(Debug)]
struct Flow {
    uri: hyper::Uri,
    traders: Vec<Trader>,
    client: HttpClient,
    seed: u64,
    /// Index of the next request (runs on one exchange continue the sequence).
    next: AtomicU64,
}

impl Flow {
    /// The request with index `i`: decided here, when it is about to be sent, so that a
    /// cancel takes the oldest deep order answered by then.
    fn action(&self, i: u64) -> (usize, Action) {
        let n = self.traders.len().max(1);
        let who = usize::try_from(i % n as u64).unwrap_or(0);
        let r = mix(self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i);
        let side = if r & 1 == 0 { Side::Buy } else { Side::Sell };
        let lots = LOTS_MIN + (r >> 8) % (LOTS_MAX - LOTS_MIN + 1);
        let offset = (r >> 24) % 100;
        let kind = (r >> 40) % 1_000;
        let trader = &self.traders[who];
        let deep = |trader: &Trader| {
            let price_jpy = match side {
                Side::Buy => MID_JPY - DEEP_TICKS - offset,
                Side::Sell => MID_JPY + DEEP_TICKS + offset,
            };
            let k = trader.deep_count.fetch_add(1, Ordering::Relaxed);
            Action::Order {
                side,
                price_jpy,
                lots,
                deep_id: Some(format!("bench-u{who}-d{k}")),
            }
        };
        let action = if kind < NEAR_PER_MILLE {
            let price_jpy = MID_JPY - NEAR_TICKS + offset % (2 * NEAR_TICKS + 1);
            Action::Order {
                side,
                price_jpy,
                lots,
                deep_id: None,
            }
        } else if kind < NEAR_PER_MILLE + DEEP_PER_MILLE {
            deep(trader)
        } else {
            let oldest = trader.deep_open().pop_front();
            match oldest {
                Some(client_id) => Action::Cancel { client_id },
                None => deep(trader),
            }
        };
        (who, action)
    }

    fn request(&self, who: usize, action: &Action) -> Result<hyper::Request<Full<Bytes>>> {
        let trader = &self.traders[who];
        let (method, mut form) = match action {
            Action::Order {
                side,
                price_jpy,
                lots,
                deep_id,
            } => {
                let mut form = format!(
                    "symbol={SYMBOL}&side={}&type=LIMIT&timeInForce=GTC&quantity={}.{:05}\
                     &price={price_jpy}&newOrderRespType=ACK",
                    side.name(),
                    lots / LOTS_PER_BTC,
                    lots % LOTS_PER_BTC,
                );
                if let Some(id) = deep_id {
                    form.push_str("&newClientOrderId=");
                    form.push_str(id);
                }
                (Method::POST, form)
            }
            Action::Cancel { client_id } => (
                Method::DELETE,
                format!("symbol={SYMBOL}&origClientOrderId={client_id}"),
            ),
        };
        sign_form(&trader.secret, &mut form);
        hyper::Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("X-MBX-APIKEY", trader.key.as_str())
            .body(Full::new(Bytes::from(form)))
            .context("building a request")
    }

    /// Send request `i` and record its answer; its latency runs from `since`, or from
    /// the moment it is sent when `since` is `None`.
    async fn send(&self, i: u64, since: Option<Instant>, tally: &Tally) {
        let (who, action) = self.action(i);
        let sent = Instant::now();
        let since = since.unwrap_or(sent);
        tally.in_flight_started();
        let answer = match self.request(who, &action) {
            Ok(req) => match self.client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let port = resp
                        .extensions()
                        .get::<HttpInfo>()
                        .map(|h| h.local_addr().port());
                    match resp.into_body().collect().await {
                        Ok(body) => Ok((status, body.to_bytes(), port)),
                        Err(e) => Err(format!("reading an answer: {e}")),
                    }
                }
                Err(e) => Err(format!("sending: {e:?}")),
            },
            Err(e) => Err(format!("{e:#}")),
        };
        let done = Instant::now();
        tally.in_flight_finished();
        let mut t = tally.lock();
        t.record(nanos(done.saturating_duration_since(since)), done);
        match answer {
            Ok((status, body, port)) => {
                if let Some(p) = port {
                    t.ports.insert(p);
                }
                if status == StatusCode::OK {
                    match action {
                        Action::Order { deep_id, .. } => {
                            let order_id = serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|v| v.get("orderId").and_then(Value::as_u64));
                            t.orders_ok += 1;
                            t.max_order_id = t.max_order_id.max(order_id.unwrap_or(0));
                            if let Some(id) = deep_id {
                                t.deep_ok += 1;
                                drop(t);
                                self.traders[who].deep_open().push_back(id);
                            }
                        }
                        Action::Cancel { .. } => t.cancels_ok += 1,
                    }
                } else {
                    *t.failed_by_status.entry(status.as_u16()).or_default() += 1;
                    if t.samples.len() < FAILURE_SAMPLES {
                        let text: String =
                            String::from_utf8_lossy(&body).chars().take(300).collect();
                        t.samples.push(format!("{status}: {text}"));
                    }
                }
            }
            Err(why) => {
                t.transport_errors += 1;
                if t.samples.len() < FAILURE_SAMPLES {
                    t.samples.push(why);
                }
            }
        }
    }
}

/// Append `timestamp`, `recvWindow` and the HMAC-SHA256 `signature` of everything
/// before it to a form body.
pub(crate) fn sign_form(secret: &HmacSecret, form: &mut String) {
    form.push_str(&format!(
        "&timestamp={}&recvWindow={RECV_WINDOW_MS}",
        now_ms()
    ));
    let signature = secret.sign(form.as_bytes());
    form.push_str("&signature=");
    form.push_str(&signature);
}

// ---- what a run records ------------------------------------------------------------

#[derive(Debug)]
struct Counts {
    /// Latency of every answered request (any status), nanoseconds.
    latency: Histogram<u64>,
    answered: u64,
    last_done: Option<Instant>,
    orders_ok: u64,
    deep_ok: u64,
    cancels_ok: u64,
    max_order_id: u64,
    failed_by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    samples: Vec<String>,
    /// Client ports of the connections that carried an answer.
    ports: BTreeSet<u16>,
}

impl Counts {
    fn new() -> Result<Counts> {
        Ok(Counts {
            latency: histogram()?,
            answered: 0,
            last_done: None,
            orders_ok: 0,
            deep_ok: 0,
            cancels_ok: 0,
            max_order_id: 0,
            failed_by_status: BTreeMap::new(),
            transport_errors: 0,
            samples: Vec::new(),
            ports: BTreeSet::new(),
        })
    }

    fn record(&mut self, latency_ns: u64, done: Instant) {
        self.latency.saturating_record(latency_ns.max(1));
        self.answered += 1;
        self.last_done = Some(done);
    }

    fn failed(&self) -> u64 {
        self.failed_by_status.values().sum()
    }
}

#[derive(Debug)]
struct Tally {
    counts: Mutex<Counts>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Tally {
    fn new() -> Result<Arc<Tally>> {
        Ok(Arc::new(Tally {
            counts: Mutex::new(Counts::new()?),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answered(&self) -> u64 {
        self.lock().answered
    }

    fn in_flight_started(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    fn in_flight_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The node's counters at one moment.
#[derive(Clone, Debug)]
struct Counters {
    commits: u64,
    records: u64,
    cpu_ms: BTreeMap<String, u64>,
}

impl Counters {
    fn of(stats: &NodeStats) -> Counters {
        Counters {
            commits: stats.commits.load(Ordering::Relaxed),
            records: stats.records.load(Ordering::Relaxed),
            cpu_ms: cpu_ms_by_thread(),
        }
    }
}

/// How a run offered its load.
#[derive(Clone, Copy, Debug)]
enum Load {
    Open { rate: u64 },
    Closed { connections: usize },
}

/// The figures of one measured run.
#[derive(Debug)]
struct RunReport {
    load: Load,
    sent: u64,
    sent_per_sec: u64,
    counts: Counts,
    /// How late the pacing thread handed each request over (open loop only).
    send_lag: Option<Histogram<u64>>,
    max_in_flight: u64,
    elapsed_ns: u64,
    commits: u64,
    records: u64,
    /// CPU time of this process's threads during the run, by thread name.
    cpu_ms: BTreeMap<String, u64>,
}

pub(crate) fn us(ns: u64) -> u64 {
    ns / 1_000
}

pub(crate) fn percentiles_us(h: &Histogram<u64>) -> Value {
    json!({
        "p50": us(h.value_at_quantile(0.5)),
        "p90": us(h.value_at_quantile(0.9)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": us(h.mean() as u64),
    })
}

impl RunReport {
    fn ok(&self) -> u64 {
        self.counts.orders_ok + self.counts.cancels_ok
    }

    fn ok_per_sec(&self) -> u64 {
        per_sec(self.ok(), self.elapsed_ns)
    }

    fn failed(&self) -> u64 {
        self.counts.failed() + self.counts.transport_errors
    }

    fn to_json(&self) -> Value {
        let c = &self.counts;
        let mut v = json!({
            "sent": self.sent,
            "sent_per_sec": self.sent_per_sec,
            "ok": self.ok(),
            "ok_per_sec": self.ok_per_sec(),
            "orders_ok": c.orders_ok,
            "deep_orders_ok": c.deep_ok,
            "cancels_ok": c.cancels_ok,
            "failed": self.counts.failed(),
            "failed_by_status": c.failed_by_status.iter()
                .map(|(s, n)| (s.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
            "transport_errors": c.transport_errors,
            "failure_samples": c.samples,
            "elapsed_ms": self.elapsed_ns / 1_000_000,
            "latency_us": percentiles_us(&c.latency),
            "max_in_flight": self.max_in_flight,
            "connections_used": c.ports.len(),
            "fsyncs": self.commits,
            "fsyncs_per_sec": per_sec(self.commits, self.elapsed_ns),
            "mean_batch": ratio(self.records, self.commits),
            "cpu_ms_by_thread": self.cpu_ms,
        });
        match self.load {
            Load::Open { rate } => {
                v["offered_rate"] = json!(rate);
                v["latency_from"] = json!("planned send time");
                if let Some(lag) = &self.send_lag {
                    v["send_lag_us"] = json!({
                        "p50": us(lag.value_at_quantile(0.5)),
                        "p99": us(lag.value_at_quantile(0.99)),
                        "max": us(lag.max()),
                    });
                }
            }
            Load::Closed { connections } => {
                v["connections"] = json!(connections);
                v["latency_from"] = json!("actual send time");
            }
        }
        v
    }

    fn summary(&self) -> String {
        let h = &self.counts.latency;
        format!(
            "{} ok/s, latency p50 {} µs p99 {} µs p99.9 {} µs max {} µs, {} fsyncs/s, \
             mean batch {}, failed {}",
            self.ok_per_sec(),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            per_sec(self.commits, self.elapsed_ns),
            ratio(self.records, self.commits),
            self.failed(),
        )
    }
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

// ---- one exchange under load --------------------------------------------------------

/// A fresh exchange serving HTTP on a loopback address, in this process, on the server
/// runtime.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) backend: NodeBackend,
    pub(crate) stats: Arc<NodeStats>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Exchange, Result<()>)>,
}

impl Served {
    /// Open the exchange of `config` (its `listen` address is replaced by `ip`, port 0)
    /// and serve HTTP and the admin socket on `server_rt` until [`Served::stop`].
    pub(crate) fn start(
        mut config: ServerConfig,
        ip: std::net::Ipv4Addr,
        server_rt: &Runtime,
    ) -> Result<Served> {
        config.listen = SocketAddr::from((ip, 0));
        let exchange = Exchange::open(config, |_| {})?;
        let backend = exchange.backend().clone();
        let stats = exchange.stats();
        let std_listener = std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("binding {ip}:0"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _entered = server_rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = server_rt.spawn(async move {
            let served = exchange
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
            (exchange, served)
        });
        Ok(Served {
            backend,
            stats,
            addr,
            stop,
            task,
        })
    }

    /// Stop serving (in-flight requests finish; clients must have closed their
    /// keep-alive connections), then drain, fsync and snapshot the node. An error from
    /// the HTTP server or the node is returned.
    pub(crate) fn stop(self, server_rt: &Runtime) -> Result<()> {
        let Served { stop, task, .. } = self;
        let _ = stop.send(());
        let (exchange, served) = server_rt
            .block_on(task)
            .map_err(|e| anyhow!("the server task: {e}"))?;
        served?;
        exchange.stop()?;
        Ok(())
    }
}

/// A customer named `name` with one HMAC key (read and trade) and far more JPY and BTC
/// than any run can trade, made through the admin channel's handler. Returns the key id
/// and its secret.
pub(crate) async fn funded_trader(
    backend: &NodeBackend,
    name: &str,
) -> Result<(String, HmacSecret)> {
    admin_call(
        backend,
        AdminRequest::UserCreate {
            name: name.to_owned(),
        },
    )
    .await?;
    let key = admin_call(
        backend,
        AdminRequest::KeyCreate {
            user: name.to_owned(),
            perms: vec!["read".into(), "trade".into()],
            ed25519_public: None,
            ip_allow: Vec::new(),
            label: "bench".into(),
        },
    )
    .await?;
    for (asset, amount) in [("JPY", FUND_JPY), ("BTC", FUND_BTC)] {
        admin_call(
            backend,
            AdminRequest::Credit {
                user: name.to_owned(),
                asset: asset.into(),
                amount: amount.into(),
                reference: format!("{name}-{asset}"),
                reason: "benchmark funding".into(),
            },
        )
        .await?;
    }
    let text = |field: &str| {
        key.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("key_create answered without {field}: {key}"))
    };
    Ok((text("key")?, HmacSecret::from_text(&text("secret")?)))
}

/// The open-loop (wrk2-style) pacer: item `k` is due at `start + k / rate`; sleep until
/// it is due, then hand it over with its planned time (latencies are measured from
/// that time, so a late hand-over shows in them). Stops after `n` items or when `hand`
/// breaks.
pub(crate) fn pace(
    rate: u64,
    n: u64,
    bar: Option<&ProgressBar>,
    mut hand: impl FnMut(u64, Instant) -> std::ops::ControlFlow<()>,
) -> Result<Paced> {
    let mut lag = histogram()?;
    let start = Instant::now();
    let mut last_sent = start;
    for k in 0..n {
        let offset = u128::from(k) * 1_000_000_000 / u128::from(rate.max(1));
        let planned = start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
        let now = Instant::now();
        if planned > now {
            std::thread::sleep(planned - now);
        }
        let handed = Instant::now();
        lag.saturating_record(nanos(handed.saturating_duration_since(planned)).max(1));
        if hand(k, planned).is_break() {
            break;
        }
        last_sent = handed;
        if let Some(bar) = bar {
            if k % 512 == 0 {
                bar.set_position(k);
            }
        }
    }
    Ok(Paced {
        start,
        last_sent,
        lag,
    })
}

/// What [`pace`] did.
#[derive(Debug)]
pub(crate) struct Paced {
    pub(crate) start: Instant,
    pub(crate) last_sent: Instant,
    /// How late each hand-over was.
    pub(crate) lag: Histogram<u64>,
}

/// A fresh exchange serving HTTP on loopback, and the client set up against it.
#[derive(Debug)]
struct Bench {
    backend: NodeBackend,
    stats: Arc<NodeStats>,
    served: Served,
    flow: Arc<Flow>,
    /// Requests sent on this exchange so far, all runs (warm-up included) together.
    totals: Totals,
}

#[derive(Debug, Default)]
struct Totals {
    orders_ok: u64,
    cancels_ok: u64,
    max_order_id: u64,
    transport_errors: u64,
}

impl Totals {
    fn add(&mut self, c: &Counts) {
        self.orders_ok += c.orders_ok;
        self.cancels_ok += c.cancels_ok;
        self.max_order_id = self.max_order_id.max(c.max_order_id);
        self.transport_errors += c.transport_errors;
    }
}

fn admin_call(
    backend: &NodeBackend,
    request: AdminRequest,
) -> impl std::future::Future<Output = Result<Value>> + '_ {
    admin::handle(
        backend,
        Envelope {
            operator: "bench".to_owned(),
            request,
        },
    )
}

impl Bench {
    fn start(dir: &Path, server_rt: &Runtime, client_rt: &Runtime, a: &ApiArgs) -> Result<Bench> {
        let mut config = ServerConfig::new(dir);
        // One client address and a few keys send everything: admission limits (which
        // would rightly ban such a client) are lifted so the run measures the order path.
        let limits = &mut config.api.limits;
        limits.request_weight_per_minute = u32::MAX;
        limits.orders_per_10s = u32::MAX;
        limits.orders_per_day = u32::MAX;
        let served = Served::start(config, std::net::Ipv4Addr::LOCALHOST, server_rt)?;
        let backend = served.backend.clone();
        let stats = Arc::clone(&served.stats);
        let addr = served.addr;

        // Customers, keys and funds, through the admin channel's handler.
        let traders = server_rt.block_on(async {
            let mut traders = Vec::new();
            for u in 0..a.users {
                let (key, secret) = funded_trader(&backend, &format!("bench-{u}")).await?;
                traders.push(Trader {
                    key,
                    secret,
                    deep_open: Mutex::new(VecDeque::new()),
                    deep_count: AtomicU64::new(0),
                });
            }
            anyhow::Ok(traders)
        })?;

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = {
            let _entered = client_rt.enter();
            Client::builder(TokioExecutor::new()).build(connector)
        };
        let uri: hyper::Uri = format!("http://{addr}/api/v3/order")
            .parse()
            .context("the order endpoint's URI")?;
        Ok(Bench {
            backend,
            stats,
            served,
            flow: Arc::new(Flow {
                uri,
                traders,
                client,
                seed: a.seed,
                next: AtomicU64::new(0),
            }),
            totals: Totals::default(),
        })
    }

    /// Open loop at `rate` for `duration`, at most `connections` requests in flight.
    fn open_loop(
        &mut self,
        client_rt: &Runtime,
        rate: u64,
        duration: Duration,
        connections: usize,
        drain: Duration,
        label: &str,
    ) -> Result<RunReport> {
        let n = u64::try_from(u128::from(rate) * duration.as_nanos() / 1_000_000_000)
            .unwrap_or(u64::MAX)
            .max(1);
        let tally = Tally::new()?;
        let pool = Arc::new(Semaphore::new(connections.max(1)));
        let before = Counters::of(&self.stats);
        let bar = progress(n, label);
        let first = self.flow.next.fetch_add(n, Ordering::Relaxed);
        let Paced {
            start,
            last_sent,
            lag,
            ..
        } = pace(rate, n, Some(&bar), |k, planned| {
            let (flow, tally, pool) = (
                Arc::clone(&self.flow),
                Arc::clone(&tally),
                Arc::clone(&pool),
            );
            client_rt.spawn(async move {
                // FIFO: requests take connections in the order they were due.
                let Ok(_permit) = pool.acquire().await else {
                    return;
                };
                flow.send(first + k, Some(planned), &tally).await;
            });
            std::ops::ControlFlow::Continue(())
        })?;
        bar.finish_and_clear();
        let sent_ns = nanos(last_sent - start);
        wait_answered(&tally, n, drain)?;
        self.report(
            Load::Open { rate },
            &tally,
            n,
            sent_ns,
            start,
            before,
            Some(lag),
        )
    }

    /// Closed loop: `connections` requests in flight for `duration`.
    fn closed_loop(
        &mut self,
        client_rt: &Runtime,
        connections: usize,
        duration: Duration,
        drain: Duration,
        label: &str,
    ) -> Result<RunReport> {
        let tally = Tally::new()?;
        let sent = Arc::new(AtomicU64::new(0));
        let before = Counters::of(&self.stats);
        let start = Instant::now();
        let end = start + duration;
        for _ in 0..connections.max(1) {
            let (flow, tally, sent) = (
                Arc::clone(&self.flow),
                Arc::clone(&tally),
                Arc::clone(&sent),
            );
            client_rt.spawn(async move {
                while Instant::now() < end {
                    let i = flow.next.fetch_add(1, Ordering::Relaxed);
                    sent.fetch_add(1, Ordering::Relaxed);
                    flow.send(i, None, &tally).await;
                }
            });
        }
        let bar = progress(nanos(duration) / 1_000_000, label);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            bar.set_position(nanos(start.elapsed()) / 1_000_000);
        }
        bar.finish_and_clear();
        let sent_ns = nanos(duration);
        // Every connection finishes the request it had in flight at the end.
        let deadline = Instant::now() + drain;
        loop {
            let n = sent.load(Ordering::Relaxed);
            if tally.answered() >= n && tally.in_flight.load(Ordering::Relaxed) == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} requests still unanswered {drain:?} after the load stopped",
                    n.saturating_sub(tally.answered())
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = sent.load(Ordering::Relaxed);
        self.report(
            Load::Closed { connections },
            &tally,
            n,
            sent_ns,
            start,
            before,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        load: Load,
        tally: &Tally,
        sent: u64,
        sent_ns: u64,
        start: Instant,
        before: Counters,
        send_lag: Option<Histogram<u64>>,
    ) -> Result<RunReport> {
        let after = Counters::of(&self.stats);
        let counts = std::mem::replace(&mut *tally.lock(), Counts::new()?);
        self.totals.add(&counts);
        let end = counts.last_done.unwrap_or(start);
        Ok(RunReport {
            load,
            sent,
            sent_per_sec: per_sec(sent, sent_ns),
            elapsed_ns: nanos(end.saturating_duration_since(start)),
            counts,
            send_lag,
            max_in_flight: tally.max_in_flight.load(Ordering::Relaxed),
            commits: after.commits - before.commits,
            records: after.records - before.records,
            cpu_ms: cpu_delta(&before.cpu_ms, &after.cpu_ms),
        })
    }

    /// Compare the engine and the read model with what the client was answered.
    fn check(&self, server_rt: &Runtime) -> Result<Value> {
        let backend = &self.backend;
        let (market, update_id, resting) = server_rt
            .block_on(backend.query(|e| {
                let m = e.market_by_symbol(SYMBOL)?;
                Some((m, e.market_update_id(m)?, e.book(m)?.len()))
            }))?
            .ok_or_else(|| anyhow!("the exchange has no {SYMBOL} market"))?;
        let market: MarketId = market;
        let trades = server_rt
            .block_on(backend.read(move |s| s.ticker_stats(market, 0, i64::MAX as u64)))??
            .count;
        let t = &self.totals;
        let expected = t.orders_ok + t.cancels_ok;
        let exact = t.transport_errors == 0;
        if exact && update_id != expected {
            bail!(
                "the engine took {update_id} commands on {SYMBOL} but the client was answered \
                 200 for {} orders and {} cancels",
                t.orders_ok,
                t.cancels_ok
            );
        }
        if exact && t.max_order_id != t.orders_ok {
            bail!(
                "the largest order id answered is {} but {} orders were answered 200",
                t.max_order_id,
                t.orders_ok
            );
        }
        Ok(json!({
            "orders_ok": t.orders_ok,
            "cancels_ok": t.cancels_ok,
            "engine_update_id": update_id,
            "largest_order_id": t.max_order_id,
            "matches": update_id == expected && t.max_order_id == t.orders_ok,
            "resting_orders": resting,
            "trades_in_read_model": trades,
        }))
    }

    fn stop(self, server_rt: &Runtime) -> Result<()> {
        let Bench { served, flow, .. } = self;
        // Close the client's keep-alive connections first: the server waits for them.
        drop(flow);
        served.stop(server_rt)
    }
}

/// Wait (without spinning) until `n` answers have arrived, at most `drain`.
fn wait_answered(tally: &Tally, n: u64, drain: Duration) -> Result<()> {
    let deadline = Instant::now() + drain;
    loop {
        let answered = tally.answered();
        if answered >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {n} requests still unanswered {drain:?} after the load stopped",
                n - answered
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Fail if most of a run's requests failed; warn if any did.
fn judge(what: &str, r: &RunReport) -> Result<()> {
    let failed = r.failed();
    if failed == 0 {
        return Ok(());
    }
    let samples = r.counts.samples.join("\n  ");
    if failed.saturating_mul(2) > r.sent {
        bail!(
            "{what}: {failed} of {} requests failed ({:?} by status, {} transport errors):\n  {samples}",
            r.sent,
            r.counts.failed_by_status,
            r.counts.transport_errors
        );
    }
    eprintln!(
        "WARNING {what}: {failed} of {} requests failed ({:?} by status, {} transport errors):\n  {samples}",
        r.sent, r.counts.failed_by_status, r.counts.transport_errors
    );
    Ok(())
}

pub(crate) fn runtime(threads: usize, name: &str) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

/// One measured run (after its warm-up) on a fresh exchange in `dir`.
fn measure(
    a: &ApiArgs,
    dir: &Path,
    server_rt: &Runtime,
    client_rt: &Runtime,
    load: Load,
) -> Result<(RunReport, Value)> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bench = Bench::start(dir, server_rt, client_rt, a)?;
    let report = match load {
        Load::Open { rate } => {
            if !a.warmup_secs.is_zero() {
                let w = bench.open_loop(
                    client_rt,
                    rate,
                    a.warmup_secs,
                    a.open_connections,
                    a.drain_secs,
                    "warm-up",
                )?;
                judge("warm-up", &w)?;
            }
            bench.open_loop(
                client_rt,
                rate,
                a.duration_secs,
                a.open_connections,
                a.drain_secs,
                &format!("{rate}/s"),
            )?
        }
        Load::Closed { connections } => {
            if !a.warmup_secs.is_zero() {
                let w = bench.closed_loop(
                    client_rt,
                    connections,
                    a.warmup_secs,
                    a.drain_secs,
                    "warm-up",
                )?;
                judge("warm-up", &w)?;
            }
            bench.closed_loop(client_rt, connections, a.duration_secs, a.drain_secs, "max")?
        }
    };
    let check = bench.check(server_rt)?;
    bench.stop(server_rt)?;
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok((report, check))
}

pub fn run(a: &ApiArgs) -> Result<()> {
    let started = Instant::now();
    let load_at_start = loadavg();
    if a.rates.is_empty() && a.connections == 0 {
        bail!("nothing to run: give --rates or a positive --connections");
    }
    if a.users == 0 {
        bail!("--users must be positive");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_threads = a.server_threads.unwrap_or(cpus);
    let server_rt = runtime(server_threads, "kura-http")?;
    let client_rt = runtime(a.client_threads, "bench-client")?;
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir::new(&parent, "api")?;
    eprintln!("data directories under {}", tmp.0.display());

    let mut open = Vec::new();
    let mut checks = Vec::new();
    for (k, &rate) in a.rates.iter().enumerate() {
        eprintln!(
            "open loop, {rate} requests/s offered for {:?} (after {:?} of warm-up) ...",
            a.duration_secs, a.warmup_secs
        );
        let dir = tmp.0.join(format!("rate-{k}"));
        let (report, check) = measure(a, &dir, &server_rt, &client_rt, Load::Open { rate })?;
        eprintln!("  {}", report.summary());
        judge(&format!("{rate}/s"), &report)?;
        open.push(report);
        checks.push(check);
    }
    let closed = if a.connections > 0 {
        eprintln!(
            "closed loop, {} connections for {:?} (after {:?} of warm-up) ...",
            a.connections, a.duration_secs, a.warmup_secs
        );
        let dir = tmp.0.join("max");
        let (report, check) = measure(
            a,
            &dir,
            &server_rt,
            &client_rt,
            Load::Closed {
                connections: a.connections,
            },
        )?;
        eprintln!("  {}", report.summary());
        judge("closed loop", &report)?;
        checks.push(check);
        Some(report)
    } else {
        None
    };
    let failed: u64 = open
        .iter()
        .chain(closed.as_ref())
        .map(RunReport::failed)
        .sum();

    let out = json!({
        "benchmark": "api",
        "note": format!(
            "client and server share this machine's {cpus} CPUs in one process: the server \
             ({server_threads} tokio workers, the sequencer with the journal's fsync, the \
             read-model projector) and the client ({} tokio worker(s) and the pacing thread). \
             Figures are a lower bound for a server with cores of its own. Admission \
             limits (request weight, order rate) are lifted: one address sends everything.",
            a.client_threads
        ),
        "cpus": cpus,
        "loadavg_at_start": load_at_start,
        "disk": tmp.0.display().to_string(),
        "endpoint": "POST /api/v3/order (newOrderRespType=ACK), DELETE /api/v3/order; HTTP/1.1 keep-alive on loopback, HMAC-SHA256 signed",
        "durability": "every command journaled and fdatasync'ed (group commit) before it is answered",
        "flow": {
            "symbol": SYMBOL,
            "users": a.users,
            "near_orders_per_mille": NEAR_PER_MILLE,
            "deep_orders_per_mille": DEEP_PER_MILLE,
            "cancels_per_mille": 1_000 - NEAR_PER_MILLE - DEEP_PER_MILLE,
            "near_ticks": NEAR_TICKS,
            "seed": a.seed,
        },
        "duration_s": a.duration_secs.as_secs_f64(),
        "warmup_s": a.warmup_secs.as_secs_f64(),
        "open_loop": open.iter().map(RunReport::to_json).collect::<Vec<_>>(),
        "closed_loop": closed.as_ref().map(RunReport::to_json),
        "max_sustained_per_sec": closed.as_ref().map(RunReport::ok_per_sec),
        "failed_requests": failed,
        "checks": checks,
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
