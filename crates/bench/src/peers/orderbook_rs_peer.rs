//! orderbook-rs 0.15 behind [`BookUnderTest`].
//!
//! - Ids: caller-chosen `Id::Sequential(u64)`; the workload's id is used as is (a
//!   cancel frees it, so a move by cancel + add re-uses it).
//! - Prices: orderbook-rs prices are `u128`; the adapter widens the `u64` ticks.
//! - Move: native `UpdatePrice` ([`Semantics::Native`]), which orderbook-rs implements as
//!   cancel + re-add with the same id (back of the new level, the same as kura); in
//!   [`Semantics::Common`] an explicit cancel + add.
//! - Reduce: native `UpdateQuantity`, which keeps a reduced order in place
//!   ([`Semantics::Native`]); cancel + add of the rest in [`Semantics::Common`].
//! - IOC: native (an IOC that does not fill completely returns an error; its fills still
//!   reach the trade listener). FOK-budget: the book's FOK has no budget, so the adapter
//!   walks the opposite levels first and, if the budget rule holds, sends an IOC capped
//!   at the worst level needed.
//! - Trades and volume are counted by a trade listener (`Arc<dyn Fn>`, atomics), because
//!   an IOC remainder error carries no fills in its return value.
//! - Overhead it pays by design: a concurrent book (lock-free skip list of levels,
//!   `DashMap` order index, `Arc`-shared orders, a submit gate, kill-switch and risk
//!   checks) even from one thread; a `TradeResult` with an owned symbol `String` per
//!   match; a wall-clock read per order (its default clock). Default features only
//!   (no journal, no special orders).

use super::{BookUnderTest, Semantics, L2};
use crate::workload::{fok_buy_cap, fok_sell_floor, GenKind};
use kura_book::Side;
use orderbook_rs::{Id, OrderBook, TimeInForce, TradeListener, TradeResult};
use pricelevel::{OrderUpdate, Price, Quantity};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct Counters {
    trades: AtomicU64,
    volume: AtomicU64,
}

pub struct OrderbookRsBook {
    book: OrderBook<()>,
    counters: Arc<Counters>,
    native: bool,
}

impl core::fmt::Debug for OrderbookRsBook {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OrderbookRsBook")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn side_of(s: Side) -> orderbook_rs::Side {
    match s {
        Side::Buy => orderbook_rs::Side::Buy,
        Side::Sell => orderbook_rs::Side::Sell,
    }
}

fn side_from(s: orderbook_rs::Side) -> Side {
    match s {
        orderbook_rs::Side::Buy => Side::Buy,
        orderbook_rs::Side::Sell => Side::Sell,
    }
}

impl OrderbookRsBook {
    pub fn new(semantics: Semantics) -> OrderbookRsBook {
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let listener: TradeListener = Arc::new(move |tr: &TradeResult| {
            let trades = tr.match_result.trades().as_vec();
            let volume: u64 = trades.iter().map(|t| t.quantity().as_u64()).sum();
            c.trades.fetch_add(trades.len() as u64, Ordering::Relaxed);
            c.volume.fetch_add(volume, Ordering::Relaxed);
        });
        OrderbookRsBook {
            book: OrderBook::with_trade_listener("bench", listener),
            counters,
            native: semantics == Semantics::Native,
        }
    }

    #[inline]
    fn volume_now(&self) -> u64 {
        self.counters.volume.load(Ordering::Relaxed)
    }

    #[inline]
    fn add(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: TimeInForce) -> u64 {
        let before = self.volume_now();
        // An IOC remainder comes back as an error; the fills went to the listener.
        let _ = self.book.add_limit_order(
            Id::Sequential(id),
            u128::from(price),
            qty,
            side_of(side),
            tif,
            None,
        );
        self.volume_now() - before
    }

    /// (side, price, remaining) of a resting order.
    fn resting(&self, id: u64) -> Option<(Side, u64, u64)> {
        self.book.get_order(Id::Sequential(id)).map(|o| {
            (
                side_from(o.side()),
                o.price().as_u128() as u64,
                o.visible_quantity().as_u64() + o.hidden_quantity().as_u64(),
            )
        })
    }

    fn levels(&self, side: orderbook_rs::Side) -> Vec<(u64, u64)> {
        self.book
            .levels_with_cumulative_depth(side)
            .filter_map(Result::ok)
            .map(|l| (l.price as u64, l.quantity))
            .collect()
    }
}

impl BookUnderTest for OrderbookRsBook {
    fn name(&self) -> &'static str {
        "orderbook-rs"
    }

    #[inline]
    fn place_limit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: GenKind) -> u64 {
        match tif {
            GenKind::Gtc => self.add(id, side, price, qty, TimeInForce::Gtc),
            GenKind::Ioc => self.add(id, side, price, qty, TimeInForce::Ioc),
            GenKind::FokBudget { budget_tl } => {
                let limit = match side {
                    Side::Buy => fok_buy_cap(self.levels(orderbook_rs::Side::Sell), qty, budget_tl),
                    Side::Sell => {
                        fok_sell_floor(self.levels(orderbook_rs::Side::Buy), qty, budget_tl)
                    }
                };
                match limit {
                    Some(limit) => self.add(id, side, limit, qty, TimeInForce::Ioc),
                    None => 0,
                }
            }
        }
    }

    #[inline]
    fn cancel(&mut self, id: u64) -> bool {
        matches!(self.book.cancel_order(Id::Sequential(id)), Ok(Some(_)))
    }

    #[inline]
    fn move_price(&mut self, id: u64, new_price: u64) -> u64 {
        if self.native {
            let before = self.volume_now();
            let _ = self.book.update_order(OrderUpdate::UpdatePrice {
                order_id: Id::Sequential(id),
                new_price: Price::new(u128::from(new_price)),
            });
            self.volume_now() - before
        } else {
            let Some((side, _, remaining)) = self.resting(id) else {
                return 0;
            };
            self.cancel(id);
            self.add(id, side, new_price, remaining, TimeInForce::Gtc)
        }
    }

    #[inline]
    fn reduce(&mut self, id: u64, by: u64) -> bool {
        let Some((side, price, remaining)) = self.resting(id) else {
            return false;
        };
        if by >= remaining {
            return self.cancel(id);
        }
        if self.native {
            self.book
                .update_order(OrderUpdate::UpdateQuantity {
                    order_id: Id::Sequential(id),
                    new_quantity: Quantity::new(remaining - by),
                })
                .is_ok()
        } else {
            self.cancel(id);
            self.add(id, side, price, remaining - by, TimeInForce::Gtc);
            true
        }
    }

    fn trades(&self) -> u64 {
        self.counters.trades.load(Ordering::Relaxed)
    }

    fn volume(&self) -> u64 {
        self.volume_now()
    }

    fn l2(&self, levels: usize) -> L2 {
        let mut bids = self.levels(orderbook_rs::Side::Buy);
        let mut asks = self.levels(orderbook_rs::Side::Sell);
        bids.truncate(levels);
        asks.truncate(levels);
        (bids, asks)
    }
}
