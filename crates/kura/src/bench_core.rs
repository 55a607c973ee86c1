//! `kura bench core`: the exchange-core workloads through the full engine (holds,
//! matching, fees, rounding, events) and, in the same run, the order book alone against
//! peer crates.
//!
//! How the generator's commands map onto engine commands:
//! - users `1..=n` become engine users `0..n`, each funded generously in both assets so
//!   no order is refused for funds (a refusal would shift the order ids; the run counts
//!   refusals and reports them);
//! - GTC and IOC become limit orders; FOK-budget becomes a FOK limit order at the
//!   generator's band-edge price (kura has no "FOK within a total budget" order type, so
//!   those orders may fill where the generator's own model did not, or the reverse;
//!   cancels and moves of orders that are then gone are refused as unknown and counted);
//! - a move is an amend of the price (loses priority, may trade); a reduce is an amend
//!   of the remaining quantity (keeps priority), or a cancel when it removes everything;
//! - markets use self-trade prevention "none", like exchange-core.
//!
//! Throughput is closed loop over pre-built commands. Latency is open loop: command i is
//! due at start + i / rate and its latency is measured from that planned time.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kura_bench::latency;
use kura_bench::workload::{self, GenCmd, GenKind, Workload};
use kura_engine::{
    genesis, Command, Ctx, Engine, Event, EventKind, FeeTier, Limits, MarketSpec, OrderRef,
    OrderType, Stp, TimeInForce,
};
use kura_units::{Amount, MarketId, OrderId, PriceTicks, QtyLots, UserId};
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

/// An engine command ready to run, or a reduce that needs the order's remaining
/// quantity at the time it runs.
enum Prepared {
    Ready(Command),
    Reduce {
        user: UserId,
        market: MarketId,
        order: OrderId,
        by: u64,
    },
}

/// Funds every bench user gets in each asset.
const BENCH_FUNDS: u64 = 1_000_000_000_000_000;

fn bench_market(symbol: String) -> MarketSpec {
    MarketSpec {
        symbol,
        tick: Amount::new(1),
        lot: Amount::new(100_000),
        min_qty: QtyLots::new(1),
        max_qty: QtyLots::new(1_000_000_000),
        min_notional: Amount::ZERO,
        max_notional: Amount::new(u64::MAX / 2),
        max_price: PriceTicks::new(1_000_000_000_000),
        fees: vec![FeeTier {
            maker_ppm: 1_000,
            taker_ppm: 2_000,
        }],
        collar_bps: 500,
        default_stp: Stp::None,
        ..genesis::btc_jpy()
    }
}

struct Driver {
    engine: Engine,
    markets: Vec<MarketId>,
    /// Generator order id → engine order id, predicted from the order of placements.
    id_map: Vec<u64>,
    next_engine_id: u64,
    seq: u64,
    events: Vec<Event>,
    rejected: u64,
    trades: u64,
    event_count: u64,
}

impl Driver {
    fn new(w: &Workload) -> Result<Driver> {
        let limits = Limits {
            users_max: w.users.max(1) + 1,
            open_orders_per_user_max: 1_000_000,
            markets_max: w.symbols + 2,
            ..Limits::DEFAULT
        };
        let mut d = Driver {
            engine: Engine::new(limits),
            markets: Vec::new(),
            id_map: Vec::new(),
            next_engine_id: 1,
            seq: 0,
            events: Vec::with_capacity(64),
            rejected: 0,
            trades: 0,
            event_count: 0,
        };
        for c in genesis::genesis().into_iter().take(2) {
            d.must(&c)?;
        }
        for s in 0..w.symbols {
            let symbol = if w.symbols == 1 {
                "BTCJPY".to_owned()
            } else {
                format!("BENCH{s}")
            };
            d.must(&Command::AddMarket {
                spec: bench_market(symbol),
            })?;
            d.markets.push(MarketId(s));
        }
        let bar = progress(u64::from(w.users), "users");
        for u in 0..w.users {
            d.must(&Command::CreateUser)?;
            for asset in [genesis::BTC, genesis::JPY] {
                d.must(&Command::Deposit {
                    user: UserId(u),
                    asset,
                    amount: Amount::new(BENCH_FUNDS),
                    reference: format!("bench-{u}-{}", asset.0),
                })?;
            }
            bar.inc(1);
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

    fn engine_id(&self, gen_id: u64) -> OrderId {
        OrderId(self.id_map.get(gen_id as usize).copied().unwrap_or(0))
    }

    /// Turn generator commands into engine commands, predicting engine order ids.
    fn prepare(&mut self, cmds: &[(u32, GenCmd)]) -> Vec<Prepared> {
        cmds.iter()
            .map(|&(sym, c)| {
                let market = self.markets[sym as usize];
                let user = UserId(c.uid().saturating_sub(1));
                match c {
                    GenCmd::Place {
                        id,
                        side,
                        price,
                        qty,
                        kind,
                        ..
                    } => {
                        let slot = id as usize;
                        if self.id_map.len() <= slot {
                            self.id_map.resize(slot + 1, 0);
                        }
                        self.id_map[slot] = self.next_engine_id;
                        self.next_engine_id += 1;
                        let tif = match kind {
                            GenKind::Gtc => TimeInForce::Gtc,
                            GenKind::Ioc => TimeInForce::Ioc,
                            GenKind::FokBudget { .. } => TimeInForce::Fok,
                        };
                        Prepared::Ready(Command::PlaceOrder {
                            user,
                            market,
                            side,
                            order: OrderType::Limit {
                                price: PriceTicks::new(price),
                                qty: QtyLots::new(qty),
                                tif,
                                post_only: false,
                            },
                            client_id: None,
                            stp: None,
                        })
                    }
                    GenCmd::Cancel { id, .. } => Prepared::Ready(Command::CancelOrder {
                        user,
                        market,
                        order: OrderRef::Id(self.engine_id(id)),
                    }),
                    GenCmd::Move { id, price, .. } => Prepared::Ready(Command::AmendOrder {
                        user,
                        market,
                        order: OrderRef::Id(self.engine_id(id)),
                        price: Some(PriceTicks::new(price)),
                        remaining: None,
                    }),
                    GenCmd::Reduce { id, by, .. } => Prepared::Reduce {
                        user,
                        market,
                        order: self.engine_id(id),
                        by,
                    },
                }
            })
            .collect()
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
