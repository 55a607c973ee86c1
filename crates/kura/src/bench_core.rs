//! `kura bench core`: the exchange-core workloads through the full engine (holds,
//! matching, fees, rounding, events) and, in the same run, the order book alone against
//! peer crates.
//!
//! The generator's commands become engine commands as `ec_stream` describes.
//!
//! Throughput is closed loop over pre-built commands. Latency is open loop: command i is
//! due at start + i / rate and its latency is measured from that planned time.

use crate::ec_stream::{self, Mapper, Prepared};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kura_bench::latency;
use kura_bench::workload::{self, GenCmd, Workload};
use kura_engine::{Command, Ctx, Engine, Event, EventKind, OrderRef};
use kura_units::{MarketId, QtyLots};
use serde_json::json;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadName {
    /// 1 market, 1,000 resting orders, ~1,000 users; 9 % GTC, 3 % IOC, 6 % cancel, 82 % move.
    ExchangeCoreSinglePair,
    /// 10,000 markets, 1,000,000 resting orders, 3.3M accounts.
    ExchangeCoreMedium,
}

#[derive(Debug, Args)]
pub struct CoreArgs {
    #[arg(long, value_enum, default_value = "exchange-core-single-pair")]
    workload: WorkloadName,
    /// Measured commands (exchange-core's benchmark uses 3,000,000).
    #[arg(long, default_value_t = 3_000_000)]
    commands: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Offered rate of the open-loop latency run, commands per second.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Skip the open-loop latency run (for profiling the throughput run alone).
    #[arg(long)]
    no_latency: bool,
    /// Closed-loop repetitions of the throughput run; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

struct Driver {
    engine: Engine,
    mapper: Mapper,
    seq: u64,
    events: Vec<Event>,
    rejected: u64,
    trades: u64,
    event_count: u64,
}

impl Driver {
    fn new(w: &Workload) -> Result<Driver> {
        let mut d = Driver {
            engine: Engine::new(ec_stream::limits(w)),
            mapper: Mapper::new(),
            seq: 0,
            events: Vec::with_capacity(64),
            rejected: 0,
            trades: 0,
            event_count: 0,
        };
        let setup = ec_stream::setup(w);
        let bar = progress(setup.len() as u64, "setup");
        for (i, c) in setup.iter().enumerate() {
            d.must(c)?;
            if i % 4096 == 0 {
                bar.set_position(i as u64);
            }
        }
        bar.finish_and_clear();
        Ok(d)
    }

    fn ctx(&mut self) -> Ctx {
        self.seq += 1;
        Ctx {
            seq: self.seq,
            timestamp_ms: self.seq,
        }
    }

    fn must(&mut self, cmd: &Command) -> Result<()> {
        let ctx = self.ctx();
        self.events.clear();
        self.engine
            .apply(cmd, ctx, &mut self.events)
            .map_err(|r| anyhow::anyhow!("setup command {} refused: {r}", cmd.name()))
    }

    /// Turn generator commands into engine commands, predicting engine order ids.
    fn prepare(&mut self, cmds: &[(u32, GenCmd)]) -> Vec<Prepared> {
        self.mapper.map_all(cmds)
    }

    #[inline]
    fn run_one(&mut self, p: &Prepared) {
        let ctx = self.ctx();
        self.events.clear();
        let result = match p {
            Prepared::Ready(cmd) => self.engine.apply(cmd, ctx, &mut self.events),
            Prepared::Reduce {
                user,
                market,
                order,
                by,
            } => {
                let remaining = self
                    .engine
                    .book(*market)
                    .and_then(|b| b.order(*order))
                    .map_or(0, |o| o.remaining.get());
                let cmd = if *by >= remaining {
                    Command::CancelOrder {
                        user: *user,
                        market: *market,
                        order: OrderRef::Id(*order),
                    }
                } else {
                    Command::AmendOrder {
                        user: *user,
                        market: *market,
                        order: OrderRef::Id(*order),
                        price: None,
                        remaining: Some(QtyLots::new(remaining - by)),
                    }
                };
                self.engine.apply(&cmd, ctx, &mut self.events)
            }
        };
        if result.is_err() {
            self.rejected += 1;
        }
        self.event_count += self.events.len() as u64;
        self.trades += self
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
            .count() as u64;
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Build a driver with the workload's users, markets and pre-filled orders.
fn prefilled(w: &Workload) -> Result<(Driver, Vec<Prepared>)> {
    let mut d = Driver::new(w)?;
    let prefill = d.prepare(&w.prefill);
    let bar = progress(prefill.len() as u64, "prefill");
    for (i, p) in prefill.iter().enumerate() {
        d.run_one(p);
        if i % 4096 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    if d.rejected > 0 {
        bail!("{} prefill commands were refused", d.rejected);
    }
    let measured = d.prepare(&w.commands);
    d.rejected = 0;
    d.trades = 0;
    d.event_count = 0;
    Ok((d, measured))
}

pub fn run(args: &CoreArgs) -> Result<()> {
    let started = Instant::now();
    eprintln!("generating workload {:?} ...", args.workload);
    let w = match args.workload {
        WorkloadName::ExchangeCoreSinglePair => {
            workload::exchange_core_single_pair(args.seed, args.commands)
        }
        WorkloadName::ExchangeCoreMedium => {
            workload::exchange_core_medium(args.seed, args.commands)
        }
    };
    let mix = workload::Mix::of(&w.commands);
    eprintln!("{}: {mix}", w.name);

    // Throughput, closed loop, best of `repeats` (each on a fresh pre-filled engine).
    let mut best: Option<(u64, Driver)> = None;
    for r in 0..args.repeats.max(1) {
        let (mut d, cmds) = prefilled(&w)?;
        eprintln!("throughput run {}/{} ...", r + 1, args.repeats.max(1));
        let report = latency::closed_loop(cmds.len(), |i| d.run_one(&cmds[i]));
        eprintln!("  {} commands/s", report.ops_per_sec);
        if best
            .as_ref()
            .is_none_or(|(ops, _)| report.ops_per_sec > *ops)
        {
            best = Some((report.ops_per_sec, d));
        }
    }
    let (ops_per_sec, d) = best.context("at least one run")?;
    d.engine
        .check_invariants()
        .map_err(|e| anyhow::anyhow!("invariant broken after the benchmark: {e}"))?;
    let state_hash = hex::encode(d.engine.state_hash());
    let resting: usize = (0..d.engine.market_count())
        .filter_map(|m| d.engine.book(MarketId(m as u32)))
        .map(|b| b.len())
        .sum();
    let book_bytes: usize = (0..d.engine.market_count())
        .filter_map(|m| d.engine.book(MarketId(m as u32)))
        .map(|b| b.memory_bytes())
        .sum();

    // Latency, open loop at the offered rate.
    let lat = if args.no_latency {
        None
    } else {
        let (mut l, cmds) = prefilled(&w)?;
        eprintln!("latency run at {} commands/s offered ...", args.rate);
        let lat = latency::open_loop(cmds.len(), args.rate, |i| l.run_one(&cmds[i]));
        if hex::encode(l.engine.state_hash()) != state_hash {
            bail!("the latency run ended in a different state than the throughput run");
        }
        Some(lat)
    };
    // The same open loop around an empty command, in the same run: the latency floor of
    // this machine (scheduler, timer and hypervisor stalls), to read the engine's tail
    // against.
    let floor = (!args.no_latency).then(|| {
        eprintln!(
            "latency floor (empty command) at {} commands/s ...",
            args.rate
        );
        latency::open_loop(w.commands.len(), args.rate, |i| {
            std::hint::black_box(i);
        })
    });
    let floor_json = floor.as_ref().map(|f| {
        json!({
            "p50": f.p50_ns, "p90": f.p90_ns, "p99": f.p99_ns,
            "p999": f.p999_ns, "p9999": f.p9999_ns, "max": f.max_ns,
        })
    });
    let latency_json = lat.as_ref().map(|lat| {
        json!({
            "p50": lat.p50_ns, "p90": lat.p90_ns, "p99": lat.p99_ns,
            "p999": lat.p999_ns, "p9999": lat.p9999_ns, "max": lat.max_ns,
        })
    });

    // The book alone, against the peer crates, on the same order flow.
    eprintln!("book-only comparison ...");
    let book_only = kura_bench::peers::book_only(&w, args.repeats.max(1));

    let out = json!({
        "workload": w.name,
        "commands": w.commands.len(),
        "mix": mix,
        "engine": {
            "ops_per_sec": ops_per_sec,
            "latency_ns": latency_json,
            "latency_floor_ns": floor_json,
            "offered_rate": args.rate,
            "achieved_rate": lat.as_ref().map(|l| l.achieved_rate),
            "refused": d.rejected,
            "trades": d.trades,
            "events": d.event_count,
        },
        "book_only": book_only,
        "bytes_per_resting_order": book_bytes.checked_div(resting).unwrap_or(0),
        "resting_orders": resting,
        "invariants_checked": true,
        "state_hash": state_hash,
        "elapsed_s": started.elapsed().as_secs(),
    });
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
