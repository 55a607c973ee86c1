//! exchange-core's generated order flow as engine commands, shared by `kura bench core`
//! and `kura bench journal`.
//!
//! How the generator's commands map onto engine commands:
//! - users `1..=n` become engine users `0..n`, each funded generously in both assets so
//!   no order is refused for funds (a refusal would shift the predicted order ids;
//!   benchmarks count refusals and report them);
//! - GTC and IOC become limit orders; FOK-budget becomes a FOK limit order at the
//!   generator's band-edge price (kura has no "FOK within a total budget" order type);
//! - a move is an amend of the price (loses priority, may trade); a reduce is an amend
//!   of the remaining quantity (keeps priority), or a cancel when it removes everything —
//!   which needs the order's remaining quantity when it runs, so it stays [`Prepared::Reduce`];
//! - markets use self-trade prevention "none", like exchange-core.
//!
//! Engine order ids are predicted: the engine numbers accepted orders 1, 2, 3, … in
//! order, so the k-th placement gets id k when nothing before it was refused.

use kura_bench::workload::{GenCmd, GenKind, Workload};
use kura_engine::{
    genesis, Command, FeeTier, Limits, MarketSpec, OrderRef, OrderType, Stp, TimeInForce,
};
use kura_units::{Amount, MarketId, OrderId, PriceTicks, QtyLots, UserId};

/// Funds every bench user gets in each asset.
pub const BENCH_FUNDS: u64 = 1_000_000_000_000_000;

/// An engine command ready to run, or a reduce that needs the order's remaining
/// quantity at the time it runs.
pub enum Prepared {
    Ready(Command),
    Reduce {
        user: UserId,
        market: MarketId,
        order: OrderId,
        by: u64,
    },
}

pub fn bench_market(symbol: String) -> MarketSpec {
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

/// Engine limits wide enough for the workload.
pub fn limits(w: &Workload) -> Limits {
    Limits {
        users_max: w.users.max(1) + 1,
        open_orders_per_user_max: 1_000_000,
        markets_max: w.symbols + 2,
        ..Limits::DEFAULT
    }
}

/// The commands that create the workload's assets, markets and funded users.
pub fn setup(w: &Workload) -> Vec<Command> {
    let mut cmds: Vec<Command> = genesis::genesis().into_iter().take(2).collect();
    for s in 0..w.symbols {
        let symbol = if w.symbols == 1 {
            "BTCJPY".to_owned()
        } else {
            format!("BENCH{s}")
        };
        cmds.push(Command::AddMarket {
            spec: bench_market(symbol),
        });
    }
    for u in 0..w.users {
        cmds.push(Command::CreateUser);
        for asset in [genesis::BTC, genesis::JPY] {
            cmds.push(Command::Deposit {
                user: UserId(u),
                asset,
                amount: Amount::new(BENCH_FUNDS),
                reference: format!("bench-{u}-{}", asset.0),
            });
        }
    }
    cmds
}

/// Maps generator commands to engine commands, predicting engine order ids.
#[derive(Debug, Default)]
pub struct Mapper {
    /// Generator order id → engine order id.
    id_map: Vec<u64>,
    next_engine_id: u64,
}

impl Mapper {
    pub fn new() -> Mapper {
        Mapper {
            id_map: Vec::new(),
            next_engine_id: 1,
        }
    }

    fn engine_id(&self, gen_id: u64) -> OrderId {
        OrderId(self.id_map.get(gen_id as usize).copied().unwrap_or(0))
    }

    pub fn map(&mut self, sym: u32, c: GenCmd) -> Prepared {
        let market = MarketId(sym);
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
    }

    pub fn map_all(&mut self, cmds: &[(u32, GenCmd)]) -> Vec<Prepared> {
        cmds.iter().map(|&(sym, c)| self.map(sym, c)).collect()
    }
}

/// The workload's pre-fill and measured commands as ready engine commands, for runs
/// that submit commands without looking at the book (the journal benchmark). The
/// presets issue no reduce; a reduce found here is skipped and counted.
pub fn ready_commands(w: &Workload) -> (Vec<Command>, u64) {
    let mut mapper = Mapper::new();
    let mut skipped = 0;
    let cmds = w
        .prefill
        .iter()
        .chain(&w.commands)
        .filter_map(|&(sym, c)| match mapper.map(sym, c) {
            Prepared::Ready(cmd) => Some(cmd),
            Prepared::Reduce { .. } => {
                skipped += 1;
                None
            }
        })
        .collect();
    (cmds, skipped)
}
