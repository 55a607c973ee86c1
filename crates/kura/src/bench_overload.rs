//! `kura bench overload`: does the exchange keep serving its honest customers while it is
//! flooded?
//!
//! One run, on one fresh exchange served in this process on `127.0.0.1` (the server of
//! `kura bench api`: journal with group commit and `fdatasync`, sequencer, engine, SQLite
//! read model, the axum router with its admission control and WebSocket limits):
//!
//! 1. **Capacity** (closed loop, `--capacity-connections`): each connection places a
//!    deep (resting) GTC limit order, cancels it as soon as it is acknowledged, and
//!    repeats. Capacity = requests answered 200 per second (places and cancels).
//! 2. **Baseline**: honest customers at a constant rate of `--honest-percent` of capacity
//!    (requests per second, half places, half cancels), open loop like wrk2: place `k` is
//!    due at `start + k / rate`, its latency runs from that planned time (coordinated
//!    omission shows); each acknowledged place is followed at once by the cancel of that
//!    order, whose latency runs from the place's answer.
//! 3. **Attack**: the same honest load continues while attackers offer
//!    `--attack-multiple` × capacity requests per second over raw HTTP/1.1 connections
//!    (pipelined `--pipeline` deep), each attacker address running one kind:
//!    unsigned orders (no API key: 401), badly signed orders (a real key, a wrong
//!    signature: 400 `-1022`), and maximum-size requests (bodies and query strings at
//!    and beyond the parser's limits, a header block beyond the HTTP server's limit,
//!    and `depth?limit=5000`, the largest answer). A WebSocket storm runs beside them:
//!    per storm address more connections than the per-address limit, each subscribing
//!    to every stream it can name, then asking for more than the subscription limit and
//!    sending faster than the message-rate limit; three in four never read.
//! 4. **Recovery**: the flood stops; the honest load continues until the p99 of the
//!    order acknowledgements planned in a sliding 1-second window (sliding by 100 ms,
//!    windows ending at or after the stop, evaluated once every order of the window is
//!    answered) is at most 1.5 × the baseline p99, or `--recovery-max-secs` pass.
//!    `recovery_ms` is the end of that window minus the moment the flood stopped (0 when
//!    the honest latency never left its band).
//! 5. **Fan-out**: `--subscribers` WebSocket connections subscribed to
//!    `btcjpy@depth@100ms` and `btcjpy@trade` while a maker and a taker trade at
//!    `--fanout-rate` orders per second; messages delivered per second, all subscribers
//!    together.
//!
//! # Addresses
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so every client socket is
//! bound to a source address of its own role: honest customers `127.1.0.x`, attackers
//! `127.2.0.x`, WebSocket storm `127.2.1.x`, fan-out subscribers `127.3.0.x`. The server
//! counts request weight per address, so the attackers exhaust their own budgets and are
//! refused (429, then 418 bans) while the honest addresses keep theirs. Admission limits
//! are Binance's defaults (request weight `--weight-limit` per address per minute, 6000)
//! except the order counts per API key, which are lifted: they are not what the attack
//! targets, and a handful of keys carries the honest load. Honest customers stay within
//! the per-address weight by spreading over as many addresses as it takes to use at most
//! half of each one's budget over a minute.
//!
//! # What is reported
//!
//! Honest order-ack and cancel-ack latency percentiles unloaded and under attack and
//! their ratio (the target is p99 under attack ≤ 2 × unloaded); honest places and
//! cancels sent and answered by status; attack requests sent and how they were answered,
//! per kind and in total (429, 418, 503, 401, 400, other 4xx, 5xx other than 503,
//! connections closed or reset before an answer, connections refused); the WebSocket
//! storm's upgrades, refusals and closes by code; this process's RSS before the attack,
//! after the recovery, and its peak; the recovery time; fan-out messages per second; and
//! whether the server still answered after the flood and stopped cleanly (drained,
//! fsynced, snapshotted). The process exits non-zero if the server fails to stop cleanly.
//!
//! Known limitations: client, attackers and server share this machine's cores and this
//! process (the RSS is the whole process's, clients included), so on a small machine
//! the attackers' own CPU use slows the server as much as their requests do; the attack
//! rate actually sent is reported beside the offered one.

use crate::bench_api::{
    any_seconds, cpu_delta, cpu_ms_by_thread, funded_trader, histogram, loadavg, nanos, now_ms,
    pace, percentiles_us, positive_seconds, ratio, runtime, sign_form, us, Served, Side,
    DEEP_TICKS, LOTS_MIN, LOTS_PER_BTC, MID_JPY, SYMBOL,
};
use crate::bench_journal::{Counters, TempDir};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kura::node::NodeStats;
use kura::server::ServerConfig;
use kura_api::auth::HmacSecret;
use kura_api::limits::REQUEST_WEIGHT_PER_MINUTE;
use kura_api::params::{MAX_BODY_LEN, MAX_QUERY_LEN};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Source addresses by role (see the module documentation).
const HONEST_NET: u32 = 0x7F01_0000;
/// The capacity run's clients use 127.1.128.1 and up, apart from the honest load's.
const CAPACITY_FIRST_ADDRESS: usize = 0x8000;
const ATTACK_NET: u32 = 0x7F02_0000;
const STORM_NET: u32 = 0x7F02_0100;
const FANOUT_NET: u32 = 0x7F03_0000;
/// Fan-out subscribers per source address (the server allows 300).
const SUBSCRIBERS_PER_ADDRESS: usize = 250;
/// Recovery windows: 1 s wide, sliding by one slot.
const SLOT: Duration = Duration::from_millis(100);
const WINDOW_SLOTS: usize = 10;
/// Order acknowledgements a window needs before its p99 is trusted.
const WINDOW_MIN_SAMPLES: usize = 20;
/// Any single read or write of an attacker that takes longer is counted as a timeout.
const ATTACK_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an honest client waits for a new connection.
const HONEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an honest request may wait for its whole answer. A client whose address is
/// banned while its connection is half open (its SYN answered, the rest dropped by the
/// kernel filter) would otherwise wait for ever.
const HONEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an attacker waits for a connection before trying again (the kernel's first
/// SYN retransmission is after 1 s).
const ATTACK_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Kinds of maximum-size request the oversized attackers send in turn.
const OVERSIZED_VARIANTS: u64 = 6;
/// A status outside 100..=599 (kept in its own bucket).
const STATUS_SLOTS: usize = 600;

/// A rate (`5000`, `5k`).
fn rate(s: &str) -> Result<u64, String> {
    match std::str::FromStr::from_str(s) {
        Ok(crate::bench_journal::Rate::PerSec(r)) if r > 0 => Ok(r),
        Ok(_) => Err(format!("{s:?}: give a positive number per second")),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Args)]
pub struct OverloadArgs {
    /// Print one JSON object on stdout instead of pretty JSON.
    #[arg(long)]
    json: bool,
    /// Seconds of the closed-loop capacity run (after the warm-up).
    #[arg(long, default_value = "3", value_parser = positive_seconds)]
    capacity_secs: Duration,
    /// Connections of the capacity run.
    #[arg(long, default_value_t = 64)]
    capacity_connections: usize,
    /// Seconds of warm-up before the capacity run and before the baseline (not measured).
    #[arg(long, default_value = "1", value_parser = any_seconds)]
    warmup_secs: Duration,
    /// Seconds of honest load alone (the baseline).
    #[arg(long, default_value = "8", value_parser = positive_seconds)]
    baseline_secs: Duration,
    /// Seconds of flood.
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    attack_secs: Duration,
    /// Longest wait, after the flood, for the honest latency to return to its band.
    #[arg(long, default_value = "15", value_parser = positive_seconds)]
    recovery_max_secs: Duration,
    /// Seconds of the market-data fan-out measurement.
    #[arg(long, default_value = "5", value_parser = positive_seconds)]
    fanout_secs: Duration,
    /// Honest load, percent of the measured capacity (requests per second).
    #[arg(long, default_value_t = 50)]
    honest_percent: u64,
    /// Honest load in requests per second, instead of a share of the capacity.
    #[arg(long, value_parser = rate)]
    honest_rate: Option<u64>,
    /// Attack offered, as a multiple of the measured capacity.
    #[arg(long, default_value_t = 10)]
    attack_multiple: u64,
    /// Attack offered in requests per second, instead of a multiple of the capacity.
    #[arg(long, value_parser = rate)]
    attack_rate: Option<u64>,
    /// Attacker source addresses of the HTTP flood (kinds round-robin).
    #[arg(long, default_value_t = 24)]
    attack_addresses: u32,
    /// Connections per attacker address.
    #[arg(long, default_value_t = 2)]
    attack_connections: usize,
    /// Requests an attacker connection writes before reading their answers.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Source addresses of the WebSocket storm.
    #[arg(long, default_value_t = 2)]
    storm_addresses: u32,
    /// WebSocket connections each storm address keeps trying to hold open (the server
    /// allows 100 at once and 300 new per 5 minutes); three in four never read, the
    /// others flood.
    #[arg(long, default_value_t = 400)]
    storm_connections: usize,
    /// WebSocket subscribers of the fan-out measurement.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Orders per second (half makers, half takers) during the fan-out measurement.
    #[arg(long, default_value = "500", value_parser = rate)]
    fanout_rate: u64,
    /// Honest customers (one HMAC key each).
    #[arg(long, default_value_t = 8)]
    users: u32,
    /// Honest requests in flight, at most (a place due when all are busy waits, and its
    /// latency shows it).
    #[arg(long, default_value_t = 512)]
    honest_connections: usize,
    /// Request weight per address per minute (Binance's value by default).
    #[arg(long, default_value_t = REQUEST_WEIGHT_PER_MINUTE)]
    weight_limit: u32,
    /// Tokio worker threads of the server (default: one per CPU).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Seconds to wait, after the honest load stops, for its last answers.
    #[arg(long, default_value = "30", value_parser = positive_seconds)]
    drain_secs: Duration,
    /// Where to create the temporary data directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the attackers' threads at normal priority. By default they run under
    /// `SCHED_IDLE`, on CPU time the server and the honest clients leave: on one machine
    /// the attack's own generators would otherwise take a CPU from the server they
    /// attack, which attackers on other machines do not.
    #[arg(long)]
    attackers_at_normal_priority: bool,
    /// Also write every honest sample to this CSV file (planned time from the start of
    /// the honest load, phase, order-ack and cancel latency in µs), to see where in a
    /// phase its tail comes from.
    #[arg(long)]
    samples: Option<PathBuf>,
}

/// A one-thread runtime for attack traffic: under `SCHED_IDLE` (nice 9 where refused)
/// unless `normal`.
fn attack_runtime(name: &str, normal: bool) -> Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1).thread_name(name).enable_all();
    if !normal {
        builder.on_thread_start(|| kura_api::ws::run_thread_when_idle("an attacker thread"));
    }
    builder
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn addr(net: u32, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(net + 1 + u32::try_from(i).unwrap_or(0))
}

/// `VmRSS` and `VmHWM` of this process, KiB (0 where `/proc` is not there).
fn rss_kib() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn connect_from(local: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An attacker's connection attempt, given up after [`ATTACK_CONNECT_TIMEOUT`] with
/// `TimedOut` (its SYNs were dropped: the server's kernel filter holds its ban).
async fn attack_connect(
    connect: impl std::future::Future<Output = std::io::Result<TcpStream>>,
) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(ATTACK_CONNECT_TIMEOUT, connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

fn unanswered_connect(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
}

/// [`connect_from`] for a client that reconnects thousands of times a second from one
/// address (the WebSocket storm): its socket is closed abortively (`SO_LINGER` 0, a
/// reset), so it leaves no `TIME_WAIT` behind. Otherwise the ports of closed connections
/// pile up on the storm's two addresses and every `bind` searches through them in the
/// kernel, which took more of this process's CPU than the server it measures.
async fn connect_abortive_from(local: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

// ---- honest customers ------------------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One answered request: status (0: no answer) and body.
type Answer = (u16, Bytes);

/// The honest side: customers, and one HTTP client per source address.
#[derive(Debug)]
struct Honest {
    uri: hyper::Uri,
    traders: Vec<(String, HmacSecret)>,
    clients: Vec<HttpClient>,
}

impl Honest {
    fn new(
        rt: &Runtime,
        server: SocketAddr,
        traders: Vec<(String, HmacSecret)>,
        addresses: usize,
        first: usize,
    ) -> Result<Honest> {
        let _entered = rt.enter();
        let clients = (0..addresses.max(1))
            .map(|i| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                // A banned address's SYNs go unanswered: fail such a connection soon
                // rather than after the kernel's retries (a closed-loop capacity client
                // with a small weight limit gets itself banned).
                connector.set_connect_timeout(Some(HONEST_CONNECT_TIMEOUT));
                connector.set_local_address(Some(addr(HONEST_NET, first + i).into()));
                Client::builder(TokioExecutor::new()).build(connector)
            })
            .collect();
        Ok(Honest {
            uri: format!("http://{server}/api/v3/order")
                .parse()
                .context("the order endpoint's URI")?,
            traders,
            clients,
        })
    }

    fn signed(
        &self,
        who: usize,
        method: Method,
        mut form: String,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let (key, secret) = self
            .traders
            .get(who)
            .ok_or_else(|| anyhow!("no customer {who}"))?;
        sign_form(secret, &mut form);
        hyper::Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("X-MBX-APIKEY", key.as_str())
            .body(Full::new(Bytes::from(form)))
            .context("building a request")
    }

    /// A limit order of customer `who`: `price` in JPY, `tif` GTC or IOC.
    fn order(
        &self,
        who: usize,
        side: Side,
        price: u64,
        tif: &str,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let form = format!(
            "symbol={SYMBOL}&side={}&type=LIMIT&timeInForce={tif}&quantity={}.{:05}\
             &price={price}&newOrderRespType=ACK",
            side.name(),
            LOTS_MIN / LOTS_PER_BTC,
            LOTS_MIN % LOTS_PER_BTC,
        );
        self.signed(who, Method::POST, form)
    }

    /// Honest order `k`: a deep order, resting until its cancel.
    fn deep(&self, k: u64) -> Result<(usize, hyper::Request<Full<Bytes>>)> {
        let n = self.traders.len().max(1) as u64;
        let who = usize::try_from(k % n).unwrap_or(0);
        let offset = (k / 2) % 100;
        let (side, price) = if k.is_multiple_of(2) {
            (Side::Buy, MID_JPY - DEEP_TICKS - offset)
        } else {
            (Side::Sell, MID_JPY + DEEP_TICKS + offset)
        };
        Ok((who, self.order(who, side, price, "GTC")?))
    }

    async fn call(&self, from: usize, req: Result<hyper::Request<Full<Bytes>>>) -> Answer {
        let Ok(req) = req else {
            return (0, Bytes::new());
        };
        let client = &self.clients[from % self.clients.len()];
        let answer = async {
            let resp = client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?;
            Some((status, body.to_bytes()))
        };
        tokio::time::timeout(HONEST_REQUEST_TIMEOUT, answer)
            .await
            .ok()
            .flatten()
            .unwrap_or((0, Bytes::new()))
    }

    /// Place honest order `k` from address `from`, then cancel it once acknowledged.
    /// Returns the place's answer time and status, and the cancel's latency and status
    /// (`None`: no cancel, the place was not accepted).
    async fn place_and_cancel(&self, k: u64, from: usize) -> (Instant, u16, Option<(u64, u16)>) {
        let (who, req) = match self.deep(k) {
            Ok((who, req)) => (who, Ok(req)),
            Err(e) => (0, Err(e)),
        };
        let (status, body) = self.call(from, req).await;
        let placed = Instant::now();
        if status != 200 {
            return (placed, status, None);
        }
        let order_id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("orderId").and_then(Value::as_u64));
        let Some(order_id) = order_id else {
            return (placed, status, Some((0, 0)));
        };
        let cancel = self.signed(
            who,
            Method::DELETE,
            format!("symbol={SYMBOL}&orderId={order_id}"),
        );
        let (cancel_status, _) = self.call(from, cancel).await;
        let done = Instant::now();
        (placed, status, Some((nanos(done - placed), cancel_status)))
    }
}

/// One honest place (and its cancel), by the place's planned time.
#[derive(Clone, Copy, Debug)]
struct Sample {
    planned_ns: u64,
    place_ns: u64,
    place_status: u16,
    /// Latency and status of the cancel, if one was sent.
    cancel: Option<(u64, u16)>,
}

/// Everything the honest load recorded, with per-slot completion counts so that a
/// window is judged only once all its orders are answered.
#[derive(Debug, Default)]
struct Log {
    samples: Vec<Sample>,
    planned: Vec<u32>,
    answered: Vec<u32>,
}

impl Log {
    fn slot(planned_ns: u64) -> usize {
        usize::try_from(planned_ns / nanos(SLOT)).unwrap_or(usize::MAX)
    }

    fn planned(&mut self, planned_ns: u64) {
        let s = Log::slot(planned_ns);
        if self.planned.len() <= s {
            self.planned.resize(s + 1, 0);
        }
        self.planned[s] += 1;
    }

    fn record(&mut self, sample: Sample) {
        let s = Log::slot(sample.planned_ns);
        if self.answered.len() <= s {
            self.answered.resize(s + 1, 0);
        }
        self.answered[s] += 1;
        self.samples.push(sample);
    }

    /// The p99 of order acknowledgements planned in slots `[end - WINDOW_SLOTS, end)`,
    /// once every one of them is answered; `None` while some are outstanding.
    fn window_p99(&self, end: usize) -> Option<Option<u64>> {
        let first = end.checked_sub(WINDOW_SLOTS)?;
        for s in first..end {
            let planned = self.planned.get(s).copied().unwrap_or(0);
            let answered = self.answered.get(s).copied().unwrap_or(0);
            if answered < planned || self.planned.len() <= end {
                return None;
            }
        }
        let lo = nanos(SLOT) * first as u64;
        let hi = nanos(SLOT) * end as u64;
        let mut lat: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.planned_ns >= lo && s.planned_ns < hi)
            .map(|s| s.place_ns)
            .collect();
        if lat.len() < WINDOW_MIN_SAMPLES {
            return Some(None);
        }
        lat.sort_unstable();
        let i = (lat.len() * 99).div_ceil(100).saturating_sub(1);
        Some(lat.get(i).copied())
    }
}

/// The p99 order acknowledgement (µs) of each whole or partial second of
/// `[from_ns, to_ns)`: where in a phase its tail comes from.
fn p99_by_second(log: &Log, from_ns: u64, to_ns: u64) -> Vec<u64> {
    const SECOND: u64 = 1_000_000_000;
    let mut seconds: Vec<Vec<u64>> =
        vec![
            Vec::new();
            usize::try_from(to_ns.saturating_sub(from_ns).div_ceil(SECOND)).unwrap_or(0)
        ];
    for s in &log.samples {
        if s.planned_ns >= from_ns && s.planned_ns < to_ns {
            let i = usize::try_from((s.planned_ns - from_ns) / SECOND).unwrap_or(usize::MAX);
            if let Some(v) = seconds.get_mut(i) {
                v.push(s.place_ns);
            }
        }
    }
    seconds
        .into_iter()
        .map(|mut v| {
            v.sort_unstable();
            let i = (v.len() * 99).div_ceil(100).saturating_sub(1);
            v.get(i).map_or(0, |ns| ns / 1_000)
        })
        .collect()
}

/// Every honest sample as CSV, with its phase (`attack`: planned in
/// `[attack_from, attack_to)`).
fn write_samples(
    path: &std::path::Path,
    log: &Log,
    attack_from: u64,
    attack_to: u64,
) -> Result<()> {
    let mut out = String::from("planned_us,phase,order_ack_us,cancel_ack_us\n");
    for s in &log.samples {
        let phase = match s.planned_ns {
            t if t < attack_from => "before",
            t if t < attack_to => "attack",
            _ => "after",
        };
        let cancel = s
            .cancel
            .map_or(String::new(), |(ns, _)| (ns / 1_000).to_string());
        out.push_str(&format!(
            "{},{phase},{},{cancel}\n",
            s.planned_ns / 1_000,
            s.place_ns / 1_000
        ));
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Honest figures of the orders planned in `[from_ns, to_ns)`.
fn phase(log: &Log, from_ns: u64, to_ns: u64) -> Result<(Value, u64, u64)> {
    let mut place = histogram()?;
    let mut cancel = histogram()?;
    let mut place_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut cancel_status: BTreeMap<String, u64> = BTreeMap::new();
    let (mut places, mut cancels, mut cancels_ok) = (0u64, 0u64, 0u64);
    for s in log
        .samples
        .iter()
        .filter(|s| s.planned_ns >= from_ns && s.planned_ns < to_ns)
    {
        places += 1;
        place.saturating_record(s.place_ns.max(1));
        *place_status.entry(s.place_status.to_string()).or_default() += 1;
        if let Some((ns, status)) = s.cancel {
            cancels += 1;
            cancel.saturating_record(ns.max(1));
            *cancel_status.entry(status.to_string()).or_default() += 1;
            if status == 200 {
                cancels_ok += 1;
            }
        }
    }
    let p99 = place.value_at_quantile(0.99);
    let p999 = place.value_at_quantile(0.999);
    Ok((
        json!({
            "seconds": ratio(to_ns.saturating_sub(from_ns), 1_000_000_000),
            "order_ack_p99_us_by_second": p99_by_second(log, from_ns, to_ns),
            "places": places,
            "places_by_status": place_status,
            "cancels_sent": cancels,
            "cancels_ok": cancels_ok,
            "cancels_by_status": cancel_status,
            "order_ack_us": percentiles_us(&place),
            "cancel_ack_us": percentiles_us(&cancel),
        }),
        p99,
        p999,
    ))
}

/// Closed loop: `connections` connections, each placing and cancelling, for `secs`.
/// Returns (requests answered 200 per second, requests failed, latency of places).
fn capacity(
    honest: &Arc<Honest>,
    rt: &Runtime,
    connections: usize,
    secs: Duration,
    first: &AtomicU64,
) -> Result<(u64, u64, Histogram<u64>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(histogram()?));
    let start = Instant::now();
    let end = start + secs;
    let base = first.fetch_add(1 << 40, Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(base));
    let tasks: Vec<JoinHandle<()>> = (0..connections.max(1))
        .map(|c| {
            let (honest, ok, failed, lat, next) = (
                Arc::clone(honest),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&lat),
                Arc::clone(&next),
            );
            rt.spawn(async move {
                while Instant::now() < end {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let (placed, status, cancel) = honest.place_and_cancel(k, c).await;
                    lock(&lat).saturating_record(nanos(placed - sent).max(1));
                    for s in std::iter::once(status).chain(cancel.map(|(_, s)| s)) {
                        if s == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = start.elapsed();
    let latency = std::mem::replace(&mut *lock(&lat), histogram()?);
    Ok((
        kura_bench::latency::rate(ok.load(Ordering::Relaxed), nanos(elapsed)),
        failed.load(Ordering::Relaxed),
        latency,
    ))
}

// ---- attackers ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unsigned,
    BadSignature,
    Oversized,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Unsigned, Kind::BadSignature, Kind::Oversized];

    fn name(self) -> &'static str {
        match self {
            Kind::Unsigned => "unsigned",
            Kind::BadSignature => "bad_signature",
            Kind::Oversized => "oversized",
        }
    }

    /// Share of the attack rate, per mille (large requests are bandwidth, not count).
    fn per_mille(self) -> u64 {
        match self {
            Kind::Unsigned | Kind::BadSignature => 490,
            Kind::Oversized => 20,
        }
    }
}

/// What one kind of attack sent and how it was answered.
#[derive(Debug)]
struct AttackStats {
    sent: AtomicU64,
    by_status: Vec<AtomicU64>,
    /// Requests written whose connection closed (or was reset) before their answer.
    unanswered: AtomicU64,
    /// Connections the attacker could not open.
    connect_errors: AtomicU64,
    /// Connection attempts never answered (SYNs dropped by the server's kernel filter).
    connects_unanswered: AtomicU64,
    /// Connections the server closed (after answering, or not).
    closed_by_server: AtomicU64,
    timeouts: AtomicU64,
}

impl AttackStats {
    fn new() -> AttackStats {
        AttackStats {
            sent: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            unanswered: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            connects_unanswered: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        }
    }

    fn answered(&self, status: u16) {
        let i = usize::from(status).min(STATUS_SLOTS - 1);
        self.by_status[i].fetch_add(1, Ordering::Relaxed);
    }

    fn statuses(&self) -> BTreeMap<u16, u64> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(s, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (u16::try_from(s).unwrap_or(0), n))
            })
            .collect()
    }
}

/// The groups Binance's clients see: refusals, load shedding, authentication and
/// parameter errors, anything else.
fn grouped(statuses: &BTreeMap<u16, u64>) -> Value {
    let mut g: BTreeMap<&str, u64> = [
        "200",
        "429",
        "418",
        "503",
        "401",
        "400",
        "other_4xx",
        "5xx_not_503",
        "other",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for (&s, &n) in statuses {
        let k = match s {
            200 => "200",
            429 => "429",
            418 => "418",
            503 => "503",
            401 => "401",
            400 => "400",
            402..=499 => "other_4xx",
            500..=599 => "5xx_not_503",
            _ => "other",
        };
        *g.entry(k).or_default() += n;
    }
    json!(g)
}

/// The attackers' requests.
#[derive(Debug)]
struct Forge {
    host: String,
    /// A real key id of an attacker's own account (badly signed requests use it).
    key: String,
    /// The maximum-size requests, built once: the generators share the server's CPUs,
    /// and rebuilding megabytes per request would take CPU time from the server that
    /// attackers on other machines do not.
    oversized: Vec<Bytes>,
}

impl Forge {
    fn new(host: String, key: String) -> Forge {
        let mut forge = Forge {
            host,
            key,
            oversized: Vec::new(),
        };
        forge.oversized = (0..OVERSIZED_VARIANTS)
            .map(|i| Bytes::from(forge.build_oversized(i)))
            .collect();
        forge
    }

    fn order_form() -> String {
        format!(
            "symbol={SYMBOL}&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00100\
             &price={MID_JPY}&timestamp={}",
            now_ms()
        )
    }

    fn post(&self, path_and_query: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST {path_and_query} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{extra_headers}\
             Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn unsigned(&self) -> Vec<u8> {
        self.post("/api/v3/order", "", Self::order_form().as_bytes())
    }

    fn bad_signature(&self) -> Vec<u8> {
        let body = format!("{}&signature={}", Self::order_form(), "0".repeat(64));
        self.post(
            "/api/v3/order",
            &format!("X-MBX-APIKEY: {}\r\n", self.key),
            body.as_bytes(),
        )
    }

    /// The `i`-th maximum-size request (the variants in turn).
    fn oversized(&self, i: u64) -> Bytes {
        let n = self.oversized.len().max(1) as u64;
        let i = usize::try_from(i % n).unwrap_or(0);
        self.oversized.get(i).cloned().unwrap_or_default()
    }

    /// Maximum-size request variant `i`.
    fn build_oversized(&self, i: u64) -> Vec<u8> {
        let key = format!("X-MBX-APIKEY: {}\r\n", self.key);
        let pad = |n: usize| format!("pad={}", "a".repeat(n.saturating_sub(4)));
        match i {
            // A body exactly at the limit, and one byte beyond.
            0 => self.post("/api/v3/order", &key, pad(MAX_BODY_LEN).as_bytes()),
            1 => self.post("/api/v3/order", &key, pad(MAX_BODY_LEN + 1).as_bytes()),
            // A 1 MiB body.
            2 => self.post("/api/v3/order", &key, pad(1 << 20).as_bytes()),
            // A query string beyond the limit (64 KiB).
            3 => self.post(
                &format!("/api/v3/order?{}", pad((MAX_QUERY_LEN + 1).max(64 << 10))),
                &key,
                b"",
            ),
            // A header block beyond the HTTP server's limit (256 KiB).
            4 => self.post(
                "/api/v3/order",
                &format!("{key}X-Pad: {}\r\n", "a".repeat(256 << 10)),
                b"",
            ),
            // The largest answer: the whole book, weight 250.
            _ => format!(
                "GET /api/v3/depth?symbol={SYMBOL}&limit=5000 HTTP/1.1\r\nHost: {}\r\n\r\n",
                self.host
            )
            .into_bytes(),
        }
    }
}

/// Read one HTTP/1.1 answer: its status (`None`: the connection ended first).
async fn read_answer<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    line: &mut String,
) -> std::io::Result<Option<u16>> {
    line.clear();
    if r.read_line(line).await? == 0 {
        return Ok(None);
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            if r.read_line(line).await? == 0 {
                return Ok(None);
            }
            let size =
                u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            tokio::io::copy(&mut (&mut *r).take(size + 2), &mut tokio::io::sink()).await?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        let copied = tokio::io::copy(&mut (&mut *r).take(n), &mut tokio::io::sink()).await?;
        if copied < n {
            return Ok(None);
        }
    }
    Ok(Some(status))
}

/// One attacker connection after another from `local`, at `interval` per request
/// (closed loop at `depth` requests in flight when the server is slower), until aborted.
async fn attacker(
    kind: Kind,
    local: Ipv4Addr,
    server: SocketAddr,
    forge: Arc<Forge>,
    interval: Duration,
    depth: usize,
    stats: Arc<AttackStats>,
) {
    let start = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut line = String::new();
    let depth = if kind == Kind::Oversized {
        1
    } else {
        depth.max(1)
    };
    loop {
        let stream = match attack_connect(connect_from(local, server)).await {
            Ok(s) => s,
            Err(e) if unanswered_connect(&e) => {
                stats.connects_unanswered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::with_capacity(16 << 10, rd);
        loop {
            let due = start + interval.saturating_mul(u32::try_from(sent).unwrap_or(u32::MAX));
            tokio::time::sleep_until(due).await;
            let batch = match kind {
                Kind::Oversized => forge.oversized(sent),
                Kind::Unsigned | Kind::BadSignature => {
                    let mut batch = Vec::new();
                    for _ in 0..depth {
                        batch.extend(if kind == Kind::Unsigned {
                            forge.unsigned()
                        } else {
                            forge.bad_signature()
                        });
                    }
                    Bytes::from(batch)
                }
            };
            let n = depth as u64;
            sent += n;
            stats.sent.fetch_add(n, Ordering::Relaxed);
            // Write and read at once: a server that answers before reading a whole
            // oversized request (and then closes) must not deadlock the writer.
            let write = async {
                let r = tokio::time::timeout(ATTACK_IO_TIMEOUT, wr.write_all(&batch)).await;
                matches!(r, Ok(Ok(())))
            };
            let read = async {
                let mut answered = 0u64;
                while answered < n {
                    match tokio::time::timeout(ATTACK_IO_TIMEOUT, read_answer(&mut rd, &mut line))
                        .await
                    {
                        Ok(Ok(Some(status))) => {
                            stats.answered(status);
                            answered += 1;
                        }
                        Ok(Ok(None)) | Ok(Err(_)) => break,
                        Err(_) => {
                            stats.timeouts.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                answered
            };
            let (_, answered) = tokio::join!(write, read);
            if answered < n {
                stats.unanswered.fetch_add(n - answered, Ordering::Relaxed);
                stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// The WebSocket storm's outcomes.
#[derive(Debug, Default)]
struct StormStats {
    attempts: u64,
    upgraded: u64,
    refused_by_status: BTreeMap<u16, u64>,
    connect_errors: u64,
    /// Connection attempts never answered (SYNs dropped by the server's kernel filter).
    connects_unanswered: u64,
    /// Upgraded connections the server closed, by close code.
    closed_by_code: BTreeMap<u16, u64>,
    /// Upgraded connections that ended without a close frame.
    ended_without_close: u64,
    /// Error answers to SUBSCRIBE requests (over the subscription limit).
    subscribe_errors: u64,
    /// Upgraded connections that never read (held open until the server closes them or
    /// the storm stops).
    never_reading: u64,
}

/// Stream names a storm connection subscribes to from its URL: every stream of both
/// markets.
fn every_stream() -> String {
    let mut names = Vec::new();
    for sym in ["btcjpy", "btcusd"] {
        for s in [
            "depth",
            "depth@100ms",
            "depth5",
            "depth10@100ms",
            "depth20",
            "trade",
            "aggTrade",
            "miniTicker",
            "ticker",
            "bookTicker",
            "kline_1m",
            "kline_5m",
            "kline_1h",
            "kline_1d",
        ] {
            names.push(format!("{sym}@{s}"));
        }
    }
    names.push("!miniTicker@arr".to_owned());
    names.join("/")
}

/// What every storm connection sends, built once (the generators share the server's
/// CPUs): its URL, naming every stream, and a SUBSCRIBE to more streams than allowed.
struct StormScript {
    url: String,
    subscribe: Utf8Bytes,
}

impl StormScript {
    fn new(server: SocketAddr) -> StormScript {
        let too_many: Vec<String> = (0..1_100).map(|i| format!("x{i}jpy@trade")).collect();
        StormScript {
            url: format!("ws://{server}/stream?streams={}", every_stream()),
            subscribe: json!({"method": "SUBSCRIBE", "params": too_many, "id": 1})
                .to_string()
                .into(),
        }
    }
}

/// One storm connection after another from `local`: upgrade, ask for more streams than
/// allowed, then either send faster than the message-rate limit (`flood`) or never
/// read. Runs until aborted.
async fn storm(
    local: Ipv4Addr,
    server: SocketAddr,
    flood: bool,
    script: Arc<StormScript>,
    stats: Arc<Mutex<StormStats>>,
) {
    let StormScript { url, subscribe } = &*script;
    loop {
        lock(&stats).attempts += 1;
        let stream = match attack_connect(connect_abortive_from(local, server)).await {
            Ok(s) => s,
            Err(e) if unanswered_connect(&e) => {
                lock(&stats).connects_unanswered += 1;
                continue;
            }
            Err(_) => {
                lock(&stats).connect_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut ws = match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                *lock(&stats)
                    .refused_by_status
                    .entry(resp.status().as_u16())
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(_) => {
                lock(&stats).connect_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        lock(&stats).upgraded += 1;
        if ws.send(Message::text(subscribe.clone())).await.is_err() {
            lock(&stats).ended_without_close += 1;
            continue;
        }
        if !flood {
            // Never read: the server's send queue for this connection fills up.
            lock(&stats).never_reading += 1;
            std::future::pending::<()>().await;
        }
        let mut code = None;
        let mut sent = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Close(frame))) => {
                        code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    Some(Ok(Message::Text(t))) => {
                        if t.as_str().contains("\"error\"") {
                            lock(&stats).subscribe_errors += 1;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                _ = tick.tick(), if sent < 50 => {
                    sent += 1;
                    let ping = json!({"method": "LIST_SUBSCRIPTIONS", "id": sent + 1});
                    if ws.send(Message::text(ping.to_string())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let mut s = lock(&stats);
        match code {
            Some(code) => *s.closed_by_code.entry(code).or_default() += 1,
            None => s.ended_without_close += 1,
        }
    }
}

// ---- fan-out -------------------------------------------------------------------------

/// One fan-out subscriber: count the messages it receives until aborted.
async fn subscriber(
    local: Ipv4Addr,
    server: SocketAddr,
    messages: Arc<AtomicU64>,
    trades: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    ready: Arc<AtomicU64>,
) {
    let url = format!("ws://{server}/stream?streams=btcjpy@depth@100ms/btcjpy@trade");
    let Ok(stream) = connect_from(local, server).await else {
        closed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Ok((mut ws, _)) = tokio_tungstenite::client_async(url.as_str(), stream).await else {
        closed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ready.fetch_add(1, Ordering::Relaxed);
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Text(t)) => {
                messages.fetch_add(1, Ordering::Relaxed);
                if t.as_str().contains("@trade") {
                    trades.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    closed.fetch_add(1, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
fn fanout(
    a: &OverloadArgs,
    honest: &Arc<Honest>,
    server: SocketAddr,
    honest_rt: &Runtime,
    other_rt: &Runtime,
    maker: usize,
    taker: usize,
) -> Result<Value> {
    let messages = Arc::new(AtomicU64::new(0));
    let trades = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let subs: Vec<JoinHandle<()>> = (0..a.subscribers)
        .map(|i| {
            other_rt.spawn(subscriber(
                addr(FANOUT_NET, i / SUBSCRIBERS_PER_ADDRESS),
                server,
                Arc::clone(&messages),
                Arc::clone(&trades),
                Arc::clone(&closed),
                Arc::clone(&ready),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.load(Ordering::Relaxed) + closed.load(Ordering::Relaxed) < a.subscribers as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} fan-out subscribers connected within 10 s",
                ready.load(Ordering::Relaxed),
                a.subscribers
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let connected = ready.load(Ordering::Relaxed);
    let n = a
        .fanout_rate
        .saturating_mul(nanos(a.fanout_secs))
        .checked_div(1_000_000_000)
        .unwrap_or(0)
        .max(2);
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let m0 = messages.load(Ordering::Relaxed);
    let t0 = trades.load(Ordering::Relaxed);
    let paced = pace(a.fanout_rate, n, None, |k, _| {
        let (honest, statuses) = (Arc::clone(honest), Arc::clone(&statuses));
        honest_rt.spawn(async move {
            // Makers rest a sell at the mid; takers buy it (IOC) from the other customer.
            let req = if k.is_multiple_of(2) {
                honest.order(maker, Side::Sell, MID_JPY, "GTC")
            } else {
                honest.order(taker, Side::Buy, MID_JPY, "IOC")
            };
            let (status, _) = honest.call(usize::try_from(k).unwrap_or(0), req).await;
            *lock(&statuses).entry(status).or_default() += 1;
        });
        ControlFlow::Continue(())
    })?;
    // Let the last orders' messages arrive.
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = paced.start.elapsed();
    let delivered = messages.load(Ordering::Relaxed) - m0;
    let traded = trades.load(Ordering::Relaxed) - t0;
    for s in &subs {
        s.abort();
    }
    other_rt.block_on(async {
        for s in subs {
            let _ = s.await;
        }
    });
    let orders: BTreeMap<String, u64> = lock(&statuses)
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    Ok(json!({
        "subscribers": a.subscribers,
        "connected": connected,
        "streams": ["btcjpy@depth@100ms", "btcjpy@trade"],
        "orders_offered_per_sec": a.fanout_rate,
        "orders_by_status": orders,
        "seconds": ratio(nanos(elapsed), 1_000_000_000),
        "messages": delivered,
        "messages_per_sec": kura_bench::latency::rate(delivered, nanos(elapsed)),
        "per_subscriber_per_sec": kura_bench::latency::rate(
            delivered / connected.max(1),
            nanos(elapsed)
        ),
        "trade_messages": traded,
        "closed_early": closed.load(Ordering::Relaxed).saturating_sub(a.subscribers as u64 - connected),
    }))
}

// ---- the run ---------------------------------------------------------------------------

fn http_attack_json(stats: &[(Kind, Arc<AttackStats>)], elapsed: Duration) -> Value {
    let mut kinds = serde_json::Map::new();
    let mut total: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut sent, mut unanswered, mut connect_errors, mut closed, mut timeouts) = (0, 0, 0, 0, 0);
    let mut connects_unanswered = 0;
    for (kind, s) in stats {
        let statuses = s.statuses();
        for (st, n) in &statuses {
            *total.entry(*st).or_default() += n;
        }
        let k_sent = s.sent.load(Ordering::Relaxed);
        let k_unanswered = s.unanswered.load(Ordering::Relaxed);
        let k_connect = s.connect_errors.load(Ordering::Relaxed);
        let k_closed = s.closed_by_server.load(Ordering::Relaxed);
        let k_timeouts = s.timeouts.load(Ordering::Relaxed);
        let k_silent = s.connects_unanswered.load(Ordering::Relaxed);
        connects_unanswered += k_silent;
        sent += k_sent;
        unanswered += k_unanswered;
        connect_errors += k_connect;
        closed += k_closed;
        timeouts += k_timeouts;
        kinds.insert(
            kind.name().to_owned(),
            json!({
                "sent": k_sent,
                "answered_by_status": statuses.iter().map(|(s, n)| (s.to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
                "answered": grouped(&statuses),
                "unanswered_connection_closed": k_unanswered,
                "connections_closed_by_server": k_closed,
                "connection_refusals": k_connect,
                "connects_unanswered": k_silent,
                "timeouts": k_timeouts,
            }),
        );
    }
    json!({
        "sent": sent,
        "sent_per_sec": kura_bench::latency::rate(sent, nanos(elapsed)),
        "answered": grouped(&total),
        "unanswered_connection_closed": unanswered,
        "connections_closed_by_server": closed,
        "connection_refusals": connect_errors,
        "connects_unanswered": connects_unanswered,
        "timeouts": timeouts,
        "by_kind": kinds,
    })
}

fn storm_json(s: &StormStats) -> Value {
    let by = |m: &BTreeMap<u16, u64>| {
        m.iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "attempts": s.attempts,
        "upgraded": s.upgraded,
        "refused_by_status": by(&s.refused_by_status),
        "connection_refusals": s.connect_errors,
        "connects_unanswered": s.connects_unanswered,
        "closed_by_server_by_code": by(&s.closed_by_code),
        "ended_without_close_frame": s.ended_without_close,
        "subscribe_errors": s.subscribe_errors,
        "never_reading_connections": s.never_reading,
    })
}

/// The server's stage histograms and every thread's CPU time at one moment.
struct Mark {
    journal: Counters,
    cpu_ms: BTreeMap<String, u64>,
}

impl Mark {
    fn now(stats: &NodeStats) -> Mark {
        Mark {
            journal: Counters::of(stats),
            cpu_ms: cpu_ms_by_thread(),
        }
    }

    /// What the server did from `before` to this mark: where its batches' time went
    /// (queue wait, append and `fdatasync`, apply) and the CPU time of each thread of
    /// this process (the generators' too), by name.
    fn since(&self, before: &Mark) -> Value {
        json!({
            "batch_stages": self.journal.stages_json(&before.journal),
            "cpu_ms_by_thread": cpu_delta(&before.cpu_ms, &self.cpu_ms),
        })
    }
}

/// A GET from an honest address; the status (0: no answer).
fn ping(honest: &Honest, rt: &Runtime, server: SocketAddr) -> u16 {
    let Ok(req) = hyper::Request::get(format!("http://{server}/api/v3/ping"))
        .body(Full::new(Bytes::new()))
        .context("ping")
    else {
        return 0;
    };
    rt.block_on(honest.call(0, Ok(req))).0
}

pub fn run(a: &OverloadArgs) -> Result<()> {
    let started = Instant::now();
    let load_at_start = loadavg();
    if a.users < 2 {
        bail!("--users must be at least 2 (the fan-out needs a maker and a taker)");
    }
    if a.weight_limit < 120 {
        bail!("--weight-limit must be at least 120");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_threads = a.server_threads.unwrap_or(cpus);
    let server_rt = runtime(server_threads, "kura-http")?;
    let honest_rt = runtime(1, "bench-honest")?;
    let attack_rt = attack_runtime("bench-attack", a.attackers_at_normal_priority)?;
    let storm_rt = attack_runtime("bench-storm", a.attackers_at_normal_priority)?;
    let fanout_rt = runtime(1, "bench-fanout")?;
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir::new(&parent, "overload")?;
    let dir = tmp.0.join("exchange");
    eprintln!("data directory {}", dir.display());

    let mut config = ServerConfig::new(&dir);
    let limits = &mut config.api.limits;
    limits.request_weight_per_minute = a.weight_limit;
    limits.orders_per_10s = u32::MAX;
    limits.orders_per_day = u32::MAX;
    let advertised = config.api.limits.clone();
    let served = Served::start(config, Ipv4Addr::LOCALHOST, &server_rt)?;
    let server = served.addr;
    let (traders, attacker_key) = server_rt.block_on(async {
        let mut traders = Vec::new();
        for u in 0..a.users {
            traders.push(funded_trader(&served.backend, &format!("honest-{u}")).await?);
        }
        let (key, _) = funded_trader(&served.backend, "attacker").await?;
        anyhow::Ok((traders, key))
    })?;

    // Honest addresses: enough that none uses more than half its weight in a minute.
    let next = AtomicU64::new(0);
    let per_address_per_sec = u64::from(a.weight_limit) / 120;
    let capacity_addresses = a.capacity_connections.max(1);
    let cap_honest = Arc::new(Honest::new(
        &honest_rt,
        server,
        traders.clone(),
        capacity_addresses,
        // Their own addresses: the capacity run spends their weight budgets, which must
        // not count against the honest load's.
        CAPACITY_FIRST_ADDRESS,
    )?);

    // 1. Capacity.
    eprintln!(
        "capacity: closed loop, {} connections, place then cancel, {:?} (after {:?} of warm-up) ...",
        a.capacity_connections, a.capacity_secs, a.warmup_secs
    );
    if !a.warmup_secs.is_zero() {
        capacity(
            &cap_honest,
            &honest_rt,
            a.capacity_connections,
            a.warmup_secs,
            &next,
        )?;
    }
    let (cap, cap_failed, cap_latency) = capacity(
        &cap_honest,
        &honest_rt,
        a.capacity_connections,
        a.capacity_secs,
        &next,
    )?;
    drop(cap_honest);
    if cap == 0 {
        bail!("the capacity run had no successful request ({cap_failed} failed)");
    }
    eprintln!("  {cap} requests/s ({cap_failed} failed)");
    let honest_rate = a.honest_rate.unwrap_or(cap * a.honest_percent / 100).max(2);
    let places_per_sec = (honest_rate / 2).max(1);
    let attack_rate = a
        .attack_rate
        .unwrap_or(cap.saturating_mul(a.attack_multiple))
        .max(1);
    let honest_addresses = usize::try_from(honest_rate.div_ceil(per_address_per_sec.max(1)))
        .unwrap_or(1)
        .max(1);
    let honest = Arc::new(Honest::new(
        &honest_rt,
        server,
        traders,
        honest_addresses,
        0,
    )?);

    // 2–4. Honest load throughout; the flood in the middle.
    eprintln!(
        "honest load: {places_per_sec} places/s (+ their cancels) from {honest_addresses} \
         addresses; {:?} warm-up, {:?} baseline, then {:?} of attack at {attack_rate} \
         requests/s offered ...",
        a.warmup_secs, a.baseline_secs, a.attack_secs
    );
    let log = Arc::new(Mutex::new(Log::default()));
    let stop_honest = Arc::new(AtomicBool::new(false));
    let pool = Arc::new(Semaphore::new(a.honest_connections.max(1)));
    // Planned times are kept relative to this moment.
    let origin = Instant::now();
    let pacer = {
        let (honest, log, stop, pool) = (
            Arc::clone(&honest),
            Arc::clone(&log),
            Arc::clone(&stop_honest),
            Arc::clone(&pool),
        );
        let handle = honest_rt.handle().clone();
        let first = next.fetch_add(1 << 40, Ordering::Relaxed);
        std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                pace(places_per_sec, u64::MAX, None, |k, planned| {
                    if stop.load(Ordering::Relaxed) {
                        return ControlFlow::Break(());
                    }
                    let planned_ns = nanos(planned.saturating_duration_since(origin));
                    lock(&log).planned(planned_ns);
                    let (honest, log, pool) =
                        (Arc::clone(&honest), Arc::clone(&log), Arc::clone(&pool));
                    handle.spawn(async move {
                        let _permit = pool.acquire().await;
                        let from = usize::try_from(k).unwrap_or(0);
                        let (placed, status, cancel) =
                            honest.place_and_cancel(first + k, from).await;
                        lock(&log).record(Sample {
                            planned_ns,
                            place_ns: nanos(placed.saturating_duration_since(planned)),
                            place_status: status,
                            cancel,
                        });
                    });
                    ControlFlow::Continue(())
                })
                .map(|p| (p.start, p.lag))
            })
            .context("starting the pacing thread")?
    };
    std::thread::sleep(a.warmup_secs);
    let at_baseline = Mark::now(&served.stats);
    std::thread::sleep(a.baseline_secs);
    let (rss_before, _) = rss_kib();

    // 3. The flood.
    let forge = Arc::new(Forge::new(server.to_string(), attacker_key));
    let connections_per_kind: BTreeMap<&str, u64> = Kind::ALL
        .iter()
        .map(|k| {
            let addresses = (0..a.attack_addresses)
                .filter(|i| Kind::ALL[*i as usize % 3] == *k)
                .count() as u64;
            (k.name(), addresses * a.attack_connections.max(1) as u64)
        })
        .collect();
    let kind_stats: Vec<(Kind, Arc<AttackStats>)> = Kind::ALL
        .iter()
        .map(|k| (*k, Arc::new(AttackStats::new())))
        .collect();
    let storm_stats = Arc::new(Mutex::new(StormStats::default()));
    let at_attack = Mark::now(&served.stats);
    let attack_start = Instant::now();
    let mut attackers: Vec<JoinHandle<()>> = Vec::new();
    for i in 0..a.attack_addresses {
        let kind = Kind::ALL[i as usize % 3];
        let conns = connections_per_kind
            .get(kind.name())
            .copied()
            .unwrap_or(1)
            .max(1);
        let kind_rate = (attack_rate * kind.per_mille() / 1_000).max(1);
        // Each connection's share of its kind's rate.
        let interval = Duration::from_nanos((1_000_000_000 * conns / kind_rate).max(1));
        let stats = kind_stats
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| Arc::clone(s))
            .ok_or_else(|| anyhow!("no stats for {kind:?}"))?;
        for _ in 0..a.attack_connections.max(1) {
            attackers.push(attack_rt.spawn(attacker(
                kind,
                addr(ATTACK_NET, i as usize),
                server,
                Arc::clone(&forge),
                interval,
                a.pipeline,
                Arc::clone(&stats),
            )));
        }
    }
    let mut storms: Vec<JoinHandle<()>> = Vec::new();
    let script = Arc::new(StormScript::new(server));
    for i in 0..a.storm_addresses {
        for c in 0..a.storm_connections {
            storms.push(storm_rt.spawn(storm(
                addr(STORM_NET, i as usize),
                server,
                c.is_multiple_of(4),
                Arc::clone(&script),
                Arc::clone(&storm_stats),
            )));
        }
    }
    std::thread::sleep(a.attack_secs);
    for t in attackers.iter().chain(&storms) {
        t.abort();
    }
    let attack_stop = Instant::now();
    let at_attack_stop = Mark::now(&served.stats);
    let attack_elapsed = attack_stop - attack_start;
    attack_rt.block_on(async {
        for t in attackers {
            let _ = t.await;
        }
    });
    storm_rt.block_on(async {
        for t in storms {
            let _ = t.await;
        }
    });
    eprintln!("  the flood stopped; waiting for the honest latency to return to its band ...");

    // 4. Recovery.
    let base_from = nanos(a.warmup_secs);
    let attack_from = nanos(attack_start.saturating_duration_since(origin));
    let attack_to = nanos(attack_stop.saturating_duration_since(origin));
    let (baseline_json, base_p99, base_p999) = phase(&lock(&log), base_from, attack_from)?;
    let band = base_p99.saturating_mul(3) / 2;
    let deadline = attack_stop + a.recovery_max_secs;
    let stop_slot = Log::slot(attack_to.saturating_add(nanos(SLOT) - 1));
    let mut next_end = stop_slot;
    let mut recovered: Option<(u64, u64)> = None;
    'wait: while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        loop {
            let judged = lock(&log).window_p99(next_end);
            match judged {
                None => break,
                Some(Some(p99)) if p99 <= band => {
                    let end_ns = nanos(SLOT) * next_end as u64;
                    recovered = Some((end_ns.saturating_sub(attack_to) / 1_000_000, p99));
                    break 'wait;
                }
                Some(_) => next_end += 1,
            }
        }
    }
    let recovery_end = Instant::now();
    let at_recovery_end = Mark::now(&served.stats);
    stop_honest.store(true, Ordering::Relaxed);
    let (_, lag) = pacer
        .join()
        .map_err(|_| anyhow!("the pacing thread panicked"))??;
    let drain_deadline = Instant::now() + a.drain_secs;
    loop {
        let (answered, planned) = {
            let log = lock(&log);
            let planned: u64 = log.planned.iter().map(|&n| u64::from(n)).sum();
            (log.samples.len() as u64, planned)
        };
        if answered >= planned {
            break;
        }
        if Instant::now() > drain_deadline {
            bail!(
                "honest requests still unanswered {:?} after the load stopped",
                a.drain_secs
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let answers_after_flood = ping(&honest, &honest_rt, server);
    let (rss_after, rss_peak) = rss_kib();
    match recovered {
        Some((ms, _)) => eprintln!("  recovered {ms} ms after the flood stopped"),
        None => eprintln!(
            "  NOT recovered within {:?} after the flood stopped",
            a.recovery_max_secs
        ),
    }

    let log = lock(&log);
    if let Some(path) = &a.samples {
        write_samples(path, &log, attack_from, attack_to)?;
    }
    let (attack_json, attack_p99, attack_p999) = phase(&log, attack_from, attack_to)?;
    let end_ns = nanos(recovery_end.saturating_duration_since(origin));
    let (recovery_json, _, _) = phase(&log, attack_to, end_ns.saturating_add(1))?;
    let (all_json, _, _) = phase(&log, 0, end_ns.saturating_add(1))?;
    let answered_total = log.samples.len() as u64;
    let planned_total: u64 = log.planned.iter().map(|&n| u64::from(n)).sum();
    drop(log);
    let storm = storm_json(&lock(&storm_stats));
    let attack_http = http_attack_json(&kind_stats, attack_elapsed);

    // 5. Fan-out.
    eprintln!(
        "fan-out: {} subscribers, {} orders/s for {:?} ...",
        a.subscribers, a.fanout_rate, a.fanout_secs
    );
    let fanout_json = fanout(a, &honest, server, &honest_rt, &fanout_rt, 0, 1)?;
    eprintln!("  {} messages/s delivered", fanout_json["messages_per_sec"]);

    drop(honest);
    honest_rt.block_on(tokio::task::yield_now());
    let backend_stats = json!({
        "commits": served.stats.commits.load(Ordering::Relaxed),
        "records": served.stats.records.load(Ordering::Relaxed),
    });
    let stopped = served.stop(&server_rt);
    let exited_cleanly = stopped.is_ok();

    let out = json!({
        "benchmark": "overload",
        "note": format!(
            "client, attackers and server share this machine's {cpus} CPUs in one process \
             (server: {server_threads} tokio workers, the sequencer with the journal's \
             fsync, the read-model projector; honest client: 1 worker and the pacing \
             thread; HTTP attackers: 1 worker; WebSocket storm: 1 worker; the attackers' \
             workers under {}). RSS is the whole process's.",
            if a.attackers_at_normal_priority { "normal priority" } else { "SCHED_IDLE" }
        ),
        "attackers_priority": if a.attackers_at_normal_priority { "normal" } else { "SCHED_IDLE" },
        "cpus": cpus,
        "loadavg_at_start": load_at_start,
        "disk": tmp.0.display().to_string(),
        "limits": {
            "request_weight_per_minute": advertised.request_weight_per_minute,
            "refusals_before_ban": advertised.refusals_before_ban,
            "ban_first_ms": advertised.ban_first_ms,
            "orders_per_key": "lifted",
            "ws": format!(
                "defaults ({} connections held and {} new per 5 minutes per address, {} \
                 streams, {} messages/s)",
                kura_api::ws::CONNECTIONS_PER_IP_MAX,
                advertised.ws_connections_per_5m,
                kura_api::ws::SUBSCRIPTIONS_MAX,
                kura_api::ws::MESSAGES_PER_SECOND
            ),
        },
        "capacity": {
            "connections": a.capacity_connections,
            "seconds": a.capacity_secs.as_secs_f64(),
            "requests_per_sec": cap,
            "failed": cap_failed,
            "order_ack_us": percentiles_us(&cap_latency),
        },
        "honest": {
            "requests_per_sec": honest_rate,
            "places_per_sec": places_per_sec,
            "addresses": honest_addresses,
            "latency_from": "planned send time (places); the place's answer (cancels)",
            "unloaded": baseline_json,
            "under_attack": attack_json,
            "after_attack": recovery_json,
            "whole_run": all_json,
            "p99_ratio": ratio(attack_p99, base_p99),
            "p999_ratio": ratio(attack_p999, base_p999),
            "p99_target_ratio": 2,
            "p99_target_met": attack_p99 <= base_p99.saturating_mul(2),
            "places_planned": planned_total,
            "places_answered": answered_total,
            "send_lag_us": {
                "p50": us(lag.value_at_quantile(0.5)),
                "p99": us(lag.value_at_quantile(0.99)),
                "max": us(lag.max()),
            },
        },
        "attack": {
            "offered_per_sec": attack_rate,
            "seconds": ratio(nanos(attack_elapsed), 1_000_000_000),
            "http_addresses": a.attack_addresses,
            "connections_per_address": a.attack_connections,
            "pipeline": a.pipeline,
            "http": attack_http,
            "ws_storm": storm,
            "ws_storm_addresses": a.storm_addresses,
            "ws_storm_connections_per_address": a.storm_connections,
        },
        "rss_kib": {
            "before_attack": rss_before,
            "after_recovery": rss_after,
            "peak": rss_peak,
        },
        "recovery": {
            "baseline_p99_us": us(base_p99),
            "band_us": us(band),
            "window": "1 s of planned order times, sliding by 100 ms",
            "recovered": recovered.is_some(),
            "recovery_ms": recovered.map(|(ms, _)| ms),
            "window_p99_us": recovered.map(|(_, p)| us(p)),
            "deadline_ms": a.recovery_max_secs.as_millis(),
        },
        "fanout": fanout_json,
        "server": {
            "by_phase": {
                "unloaded": at_attack.since(&at_baseline),
                "under_attack": at_attack_stop.since(&at_attack),
                "after_attack": at_recovery_end.since(&at_attack_stop),
            },
            "answers_after_flood": answers_after_flood,
            "exited_cleanly": exited_cleanly,
            "journal": backend_stats,
        },
        "elapsed_s": started.elapsed().as_secs(),
    });
    drop(tmp);
    stopped.context("the server did not stop cleanly")?;
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
