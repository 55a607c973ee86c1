//! The `orders` table's fold kept in memory for the orders that matter right now.
//!
//! [`LiveOrders`] follows the same events as the read model and keeps, as
//! [`OrderRow`]s equal to what the `orders` table will hold:
//!
//! - every open order;
//! - the last orders that ended (filled, cancelled, expired), up to a bound.
//!
//! The server updates it as each batch is applied, before the batch's commands are
//! answered, so a cancel is answered from it without waiting for the read model (whose
//! commits can then be spaced out). The property tests in `tests/prop.rs` hold it equal
//! to the `orders` table.

use crate::project::tif_str;
use crate::{OrderRow, OrderStatus, OrderType};
use kura_engine::{Ctx, Event, EventKind};
use kura_units::{Amount, MarketId, OrderId, QtyLots};
use std::collections::{HashMap, VecDeque};

/// Open orders and the most recently ended ones. See the module documentation.
#[derive(Debug)]
pub struct LiveOrders {
    open: HashMap<u64, OrderRow>,
    ended: HashMap<u64, OrderRow>,
    /// Ended order ids, oldest first; the oldest is forgotten beyond `ended_max`.
    ended_order: VecDeque<u64>,
    ended_max: usize,
}

impl LiveOrders {
    /// Empty, remembering up to `ended_max` ended orders.
    pub fn new(ended_max: usize) -> LiveOrders {
        LiveOrders {
            open: HashMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            ended_max,
        }
    }

    /// Start from the open orders of a caught-up read model ([`crate::Store::all_open_orders`]).
    pub fn with_open(ended_max: usize, open: Vec<OrderRow>) -> LiveOrders {
        let mut live = LiveOrders::new(ended_max);
        live.open = open.into_iter().map(|r| (r.order_id.0, r)).collect();
        live
    }

    /// The order as the read model shows it once caught up to the last applied batch,
    /// if it is open or among the remembered ended ones.
    pub fn get(&self, market: MarketId, order: OrderId) -> Option<&OrderRow> {
        self.open
            .get(&order.0)
            .or_else(|| self.ended.get(&order.0))
            .filter(|r| r.market == market)
    }

    /// [`LiveOrders::get`] for each of `ids`, in order; `None` if any is not in memory.
    pub fn rows(&self, market: MarketId, ids: &[OrderId]) -> Option<Vec<OrderRow>> {
        ids.iter()
            .map(|&id| self.get(market, id).cloned())
            .collect()
    }

    /// How many orders are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Fold one command's events, as [`crate::Store::apply`] does into `orders`.
    pub fn apply(&mut self, ctx: Ctx, events: &[Event]) {
        for e in events {
            self.event(ctx, &e.kind);
        }
    }

    fn touch(&mut self, order: OrderId, ctx: Ctx) -> Option<&mut OrderRow> {
        let row = self.open.get_mut(&order.0)?;
        row.updated_seq = ctx.seq;
        row.updated_ms = ctx.timestamp_ms;
        Some(row)
    }

    fn end(&mut self, order: OrderId, ctx: Ctx, status: OrderStatus) {
        let Some(mut row) = self.open.remove(&order.0) else {
            return;
        };
        row.status = status;
        row.updated_seq = ctx.seq;
        row.updated_ms = ctx.timestamp_ms;
        self.ended.insert(order.0, row);
        self.ended_order.push_back(order.0);
        while self.ended_order.len() > self.ended_max {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    fn event(&mut self, ctx: Ctx, kind: &EventKind) {
        match kind {
            EventKind::OrderAccepted {
                market,
                order,
                user,
                side,
                price,
                qty,
                quote_budget,
                tif,
                post_only,
                is_market,
                client_id,
                hold: _,
            } => {
                let row = OrderRow {
                    order_id: *order,
                    market: *market,
                    user: *user,
                    side: *side,
                    order_type: OrderType::of(*is_market, *post_only),
                    time_in_force: tif_str(*tif).to_owned(),
                    post_only: *post_only,
                    price: *price,
                    orig_qty: *qty,
                    quote_budget: *quote_budget,
                    executed_qty: QtyLots::ZERO,
                    cum_quote: Amount::ZERO,
                    status: OrderStatus::New,
                    client_order_id: client_id.as_ref().map(|c| c.as_str().to_owned()),
                    created_seq: ctx.seq,
                    created_ms: ctx.timestamp_ms,
                    updated_seq: ctx.seq,
                    updated_ms: ctx.timestamp_ms,
                };
                self.open.insert(order.0, row);
            }
            EventKind::Trade {
                qty,
                quote_qty,
                maker_order,
                taker_order,
                ..
            } => {
                for order in [*maker_order, *taker_order] {
                    if let Some(row) = self.touch(order, ctx) {
                        row.executed_qty =
                            QtyLots::new(row.executed_qty.get().saturating_add(qty.get()));
                        row.cum_quote =
                            Amount::new(row.cum_quote.get().saturating_add(quote_qty.get()));
                        row.status = OrderStatus::PartiallyFilled;
                    }
                }
            }
            EventKind::OrderRested { order, .. } => {
                if let Some(row) = self.touch(*order, ctx) {
                    row.status = if row.executed_qty.get() == 0 {
                        OrderStatus::New
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                }
            }
            EventKind::OrderAmended {
                order,
                price,
                remaining,
                ..
            } => {
                if let Some(row) = self.touch(*order, ctx) {
                    row.price = *price;
                    row.orig_qty =
                        QtyLots::new(row.executed_qty.get().saturating_add(remaining.get()));
                }
            }
            EventKind::OrderFilled { order, .. } => self.end(*order, ctx, OrderStatus::Filled),
            EventKind::OrderCancelled { order, reason, .. } => {
                self.end(*order, ctx, OrderStatus::cancelled(*reason));
            }
            EventKind::OrderExpired { order, reason, .. } => {
                self.end(*order, ctx, OrderStatus::expired(*reason));
            }
            _ => {}
        }
    }
}
