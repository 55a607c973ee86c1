//! lobster 0.7 behind [`BookUnderTest`].
//!
//! - Ids: caller-chosen `u128`; the workload's id is used as is (also after a cancel, so a
//!   move re-uses the id).
//! - Prices and quantities: `u64`, no conversion.
//! - lobster has only limit, market and cancel, and no way to look an order up. The adapter
//!   therefore mirrors each resting order's side, price and remaining quantity in an
//!   `FxHashMap`, updated from lobster's fill list; that bookkeeping is counted in
//!   lobster's time.
//! - Move: cancel + place (same id), in both [`Semantics`]; the order goes to the back of
//!   its new level, as in every other engine here.
//! - Reduce: cancel + place of the rest (loses queue position) in both semantics, so in
//!   [`Semantics::Native`] lobster is expected to differ from the engines that reduce in
//!   place.
//! - IOC: a limit order, then a cancel of whatever rested (lobster's market order has no
//!   price limit). FOK-budget: the adapter walks lobster's depth first and, if the budget
//!   rule holds, sends that IOC capped at the worst level needed.
//! - Allocation per call: every execution returns an event with a fill `Vec`; stats
//!   tracking is off (it would clone each event). lobster keeps emptied price levels in
//!   its maps, so its scans grow with the number of prices ever used.
//! - Thread safety: none.

use super::{BookUnderTest, Semantics, L2};
use crate::workload::{fok_buy_cap, fok_sell_floor, GenKind};
use kura_book::Side;
use lobster::{OrderBook, OrderEvent, OrderType};
use rustc_hash::FxHashMap;

pub struct LobsterBook {
    ob: OrderBook,
    /// id → (side, price, remaining) of every resting order.
    orders: FxHashMap<u64, (Side, u64, u64)>,
    trades: u64,
    volume: u64,
}

impl core::fmt::Debug for LobsterBook {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LobsterBook")
            .field("resting", &self.orders.len())
            .field("trades", &self.trades)
            .finish_non_exhaustive()
    }
}

fn side_of(s: Side) -> lobster::Side {
    match s {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

impl LobsterBook {
    /// `capacity` orders are pre-allocated in lobster's arena.
    pub fn new(_semantics: Semantics, capacity: usize) -> LobsterBook {
        let mut orders = FxHashMap::default();
        orders.reserve(capacity);
        LobsterBook {
            ob: OrderBook::new(capacity.max(16), 10, false),
            orders,
            trades: 0,
            volume: 0,
        }
    }

    /// Execute a limit order; returns lots filled and mirrors the fills.
    #[inline]
    fn limit(&mut self, id: u64, side: Side, price: u64, qty: u64) -> u64 {
        let ev = self.ob.execute(OrderType::Limit {
            id: u128::from(id),
            side: side_of(side),
            qty,
            price,
        });
        let filled = match ev {
            OrderEvent::Filled {
                filled_qty, fills, ..
            }
            | OrderEvent::PartiallyFilled {
                filled_qty, fills, ..
            } => {
                self.trades += fills.len() as u64;
                self.volume += filled_qty;
                for f in &fills {
                    let maker = f.order_2 as u64;
                    if f.total_fill {
                        self.orders.remove(&maker);
                    } else if let Some(o) = self.orders.get_mut(&maker) {
                        o.2 -= f.qty;
                    }
                }
                filled_qty
            }
            _ => 0,
        };
        if filled < qty {
            self.orders.insert(id, (side, price, qty - filled));
        }
        filled
    }

    fn depth(&self, side: Side) -> Vec<(u64, u64)> {
        // lobster returns every level whatever depth is asked (and pre-sizes by it).
        let d = self.ob.depth(0);
        match side {
            Side::Buy => d.bids.iter().rev().map(|l| (l.price, l.qty)).collect(),
            Side::Sell => d.asks.iter().map(|l| (l.price, l.qty)).collect(),
        }
    }

    fn ioc(&mut self, id: u64, side: Side, price: u64, qty: u64) -> u64 {
        let filled = self.limit(id, side, price, qty);
        if filled < qty {
            self.cancel(id);
        }
        filled
    }
}

impl BookUnderTest for LobsterBook {
    fn name(&self) -> &'static str {
        "lobster"
    }

    #[inline]
    fn place_limit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: GenKind) -> u64 {
        match tif {
            GenKind::Gtc => self.limit(id, side, price, qty),
            GenKind::Ioc => self.ioc(id, side, price, qty),
            GenKind::FokBudget { budget_tl } => {
                let limit = match side {
                    Side::Buy => fok_buy_cap(self.depth(Side::Sell), qty, budget_tl),
                    Side::Sell => fok_sell_floor(self.depth(Side::Buy), qty, budget_tl),
                };
                match limit {
                    Some(limit) => self.ioc(id, side, limit, qty),
                    None => 0,
                }
            }
        }
    }

    #[inline]
    fn cancel(&mut self, id: u64) -> bool {
        if self.orders.remove(&id).is_none() {
            return false;
        }
        self.ob.execute(OrderType::Cancel { id: u128::from(id) });
        true
    }

    #[inline]
    fn move_price(&mut self, id: u64, new_price: u64) -> u64 {
        let Some(&(side, _, remaining)) = self.orders.get(&id) else {
            return 0;
        };
        self.cancel(id);
        self.limit(id, side, new_price, remaining)
    }

    #[inline]
    fn reduce(&mut self, id: u64, by: u64) -> bool {
        let Some(&(side, price, remaining)) = self.orders.get(&id) else {
            return false;
        };
        self.cancel(id);
        if by < remaining {
            self.limit(id, side, price, remaining - by);
        }
        true
    }

    fn trades(&self) -> u64 {
        self.trades
    }

    fn volume(&self) -> u64 {
        self.volume
    }

    fn l2(&self, levels: usize) -> L2 {
        let mut bids = self.depth(Side::Buy);
        let mut asks = self.depth(Side::Sell);
        bids.truncate(levels);
        asks.truncate(levels);
        (bids, asks)
    }
}
