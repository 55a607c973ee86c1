//! matchcore 0.4 behind [`BookUnderTest`].
//!
//! - Ids: matchcore names an order by the sequence number of the command that submitted
//!   it, and sequence numbers must be consecutive. The adapter keeps a counter and an
//!   `FxHashMap` from the workload's id to matchcore's; entries are removed on cancel,
//!   and on a move or reduce that ends the order. Makers that are filled completely are
//!   not looked up again, so their entries stay (bounded by the orders ever placed).
//! - Prices and quantities: `u64` newtypes, no conversion.
//! - Move: native amend of the price ([`Semantics::Native`]), which keeps the id and sends
//!   the order to the back of its new level, the same as kura's cancel + place; in
//!   [`Semantics::Common`] cancel + submit (new matchcore id, mapped).
//! - Reduce: native amend of the quantity, which keeps queue position ([`Semantics::Native`]);
//!   cancel + submit of the rest in [`Semantics::Common`].
//! - IOC: native. FOK-budget: matchcore's FOK has no budget, so the adapter walks the
//!   opposite levels first and, if the budget rule holds, submits an IOC capped at the
//!   worst level needed (0.1% of the single-pair commands take this path).
//! - **Bug worked around**: matchcore 0.4.0 matches a crossing limit order (submit, or an
//!   amend to a crossing price) with no price limit: `submit_crossable_order` and
//!   `amend_limit_order` call `match_order(.., None, ..)`, so a buy at 100 facing 2 lots at
//!   100 and 30 at 101 takes 21 lots, 19 of them at 101. When the liquidity within the
//!   limit is smaller than the order, the adapter first submits only what can trade within
//!   the limit, then the rest as a separate GTC order (a second matchcore id, mapped), or
//!   nothing more for an IOC. A move to such a price is cancel + that split submit. The
//!   check costs a best-price lookup per order, and a walk of the crossed levels only when
//!   the order crosses. (`crate::peers` has a test that shows the raw behaviour.)
//! - Allocation per call: matchcore builds an outcome per command; a match allocates its
//!   trade list (`Vec<Trade>`). Trades and volume are counted from that list.
//! - Thread safety: none (single-threaded by design).

use super::{BookUnderTest, Semantics, L2};
use crate::workload::{fok_buy_cap, fok_sell_floor, GenKind};
use kura_book::Side;
use matchcore::{
    AmendCmd, AmendPatch, CancelCmd, Command, CommandKind, CommandMeta, CommandOutcome,
    CommandReport, Level2, LimitOrder, LimitOrderPatch, NewOrder, OrderBook, OrderFlags, OrderId,
    OrderKind, Price, Quantity, QuantityPolicy, SequenceNumber, SubmitCmd, TimeInForce, Timestamp,
};
use rustc_hash::FxHashMap;

pub struct MatchcoreBook {
    book: OrderBook,
    seq: u64,
    ids: FxHashMap<u64, u64>,
    trades: u64,
    volume: u64,
    native: bool,
}

impl core::fmt::Debug for MatchcoreBook {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MatchcoreBook")
            .field("seq", &self.seq)
            .field("trades", &self.trades)
            .finish_non_exhaustive()
    }
}

fn side_of(s: Side) -> matchcore::Side {
    match s {
        Side::Buy => matchcore::Side::Buy,
        Side::Sell => matchcore::Side::Sell,
    }
}

fn side_from(s: matchcore::Side) -> Side {
    match s {
        matchcore::Side::Buy => Side::Buy,
        matchcore::Side::Sell => Side::Sell,
    }
}

impl MatchcoreBook {
    pub fn new(semantics: Semantics, capacity: usize) -> MatchcoreBook {
        let mut ids = FxHashMap::default();
        ids.reserve(capacity);
        MatchcoreBook {
            book: OrderBook::new("bench"),
            seq: 0,
            ids,
            trades: 0,
            volume: 0,
            native: semantics == Semantics::Native,
        }
    }

    #[inline]
    fn exec(&mut self, kind: CommandKind) -> CommandOutcome {
        let cmd = Command {
            meta: CommandMeta {
                sequence_number: SequenceNumber(self.seq),
                timestamp: Timestamp(0),
            },
            kind,
        };
        self.seq += 1;
        self.book.execute(&cmd)
    }

    /// Count the target order's trades; returns the lots it traded.
    #[inline]
    fn count(&mut self, outcome: &CommandOutcome) -> u64 {
        let effects = match outcome {
            CommandOutcome::Applied(CommandReport::Submit(e) | CommandReport::Amend(e)) => e,
            _ => return 0,
        };
        match effects.target_order().match_result() {
            Some(m) => {
                let filled = m.executed_quantity().0;
                self.trades += m.trades().len() as u64;
                self.volume += filled;
                filled
            }
            None => 0,
        }
    }

    /// Lots that can trade now at prices within `limit`, up to `qty`.
    fn within_limit(&self, side: Side, limit: u64, qty: u64) -> u64 {
        let book = self.book.limit();
        let mut got = 0u64;
        let mut take = |(_, l): (&Price, &usize)| {
            got = got.saturating_add(book.levels()[*l].total_quantity().0);
            got < qty
        };
        match side {
            Side::Buy => {
                for level in book.asks().iter() {
                    if level.0 .0 > limit || !take(level) {
                        break;
                    }
                }
            }
            Side::Sell => {
                for level in book.bids().iter().rev() {
                    if level.0 .0 < limit || !take(level) {
                        break;
                    }
                }
            }
        }
        got.min(qty)
    }

    /// Whether an order at `limit` would trade against the best opposite level.
    #[inline]
    fn crosses(&self, side: Side, limit: u64) -> bool {
        self.book.has_crossable_order(side_of(side), Price(limit))
    }

    /// Submit a limit order, working around matchcore's unlimited crossing match (see the
    /// module documentation); maps `id` if a part rests.
    #[inline]
    fn submit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: TimeInForce) -> u64 {
        if self.crosses(side, price) {
            let now = self.within_limit(side, price, qty);
            if now < qty {
                let filled = self.submit_raw(id, side, price, now, TimeInForce::Ioc);
                if tif == TimeInForce::Gtc {
                    self.submit_raw(id, side, price, qty - filled, TimeInForce::Gtc);
                }
                return filled;
            }
        }
        self.submit_raw(id, side, price, qty, tif)
    }

    /// Submit as is; maps `id` if it rests.
    fn submit_raw(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: TimeInForce) -> u64 {
        let mc_id = self.seq;
        let outcome = self.exec(CommandKind::Submit(SubmitCmd {
            order: NewOrder::Limit(LimitOrder::new(
                Price(price),
                QuantityPolicy::Standard {
                    quantity: Quantity(qty),
                },
                OrderFlags::new(side_of(side), false, tif),
            )),
        }));
        let filled = self.count(&outcome);
        if tif == TimeInForce::Gtc && filled < qty {
            self.ids.insert(id, mc_id);
        }
        filled
    }

    /// (side, price, remaining) of a resting order.
    fn resting(&self, mc_id: u64) -> Option<(Side, u64, u64)> {
        self.book.limit().orders().get(&OrderId(mc_id)).map(|o| {
            (
                side_from(o.flags().side()),
                o.price().0,
                o.total_quantity().0,
            )
        })
    }

    fn cancel_mc(&mut self, mc_id: u64) -> bool {
        matches!(
            self.exec(CommandKind::Cancel(CancelCmd {
                order_id: OrderId(mc_id),
                order_kind: OrderKind::Limit,
            })),
            CommandOutcome::Applied(_)
        )
    }

    fn levels(&self, side: matchcore::Side) -> Vec<(u64, u64)> {
        let limit = self.book.limit();
        let level = |(p, l): (&Price, &usize)| (p.0, limit.levels()[*l].total_quantity().0);
        match side {
            matchcore::Side::Buy => limit.bids().iter().rev().map(level).collect(),
            matchcore::Side::Sell => limit.asks().iter().map(level).collect(),
        }
    }
}

impl BookUnderTest for MatchcoreBook {
    fn name(&self) -> &'static str {
        "matchcore"
    }

    #[inline]
    fn place_limit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: GenKind) -> u64 {
        match tif {
            GenKind::Gtc => self.submit(id, side, price, qty, TimeInForce::Gtc),
            GenKind::Ioc => self.submit(id, side, price, qty, TimeInForce::Ioc),
            GenKind::FokBudget { budget_tl } => {
                let limit = match side {
                    Side::Buy => fok_buy_cap(self.levels(matchcore::Side::Sell), qty, budget_tl),
                    Side::Sell => fok_sell_floor(self.levels(matchcore::Side::Buy), qty, budget_tl),
                };
                match limit {
                    Some(limit) => self.submit(id, side, limit, qty, TimeInForce::Ioc),
                    None => 0,
                }
            }
        }
    }

    #[inline]
    fn cancel(&mut self, id: u64) -> bool {
        match self.ids.remove(&id) {
            Some(mc_id) => self.cancel_mc(mc_id),
            None => false,
        }
    }

    #[inline]
    fn move_price(&mut self, id: u64, new_price: u64) -> u64 {
        let Some(&mc_id) = self.ids.get(&id) else {
            return 0;
        };
        let resting = self.resting(mc_id);
        let split = match resting {
            Some((side, _, remaining)) => {
                self.crosses(side, new_price)
                    && self.within_limit(side, new_price, remaining) < remaining
            }
            None => return 0,
        };
        if self.native && !split {
            let outcome = self.exec(CommandKind::Amend(AmendCmd {
                order_id: OrderId(mc_id),
                patch: AmendPatch::Limit(LimitOrderPatch::new().with_price(Price(new_price))),
            }));
            let filled = self.count(&outcome);
            if filled > 0 && !self.book.limit().orders().contains_key(&OrderId(mc_id)) {
                self.ids.remove(&id);
            }
            filled
        } else {
            let Some((side, _, remaining)) = resting else {
                return 0;
            };
            self.ids.remove(&id);
            self.cancel_mc(mc_id);
            self.submit(id, side, new_price, remaining, TimeInForce::Gtc)
        }
    }

    #[inline]
    fn reduce(&mut self, id: u64, by: u64) -> bool {
        let Some(&mc_id) = self.ids.get(&id) else {
            return false;
        };
        let Some((side, price, remaining)) = self.resting(mc_id) else {
            return false;
        };
        if by >= remaining {
            self.ids.remove(&id);
            return self.cancel_mc(mc_id);
        }
        if self.native {
            let patch = LimitOrderPatch::new().with_quantity_policy(QuantityPolicy::Standard {
                quantity: Quantity(remaining - by),
            });
            matches!(
                self.exec(CommandKind::Amend(AmendCmd {
                    order_id: OrderId(mc_id),
                    patch: AmendPatch::Limit(patch),
                })),
                CommandOutcome::Applied(_)
            )
        } else {
            self.ids.remove(&id);
            self.cancel_mc(mc_id);
            self.submit(id, side, price, remaining - by, TimeInForce::Gtc);
            true
        }
    }

    fn trades(&self) -> u64 {
        self.trades
    }

    fn volume(&self) -> u64 {
        self.volume
    }

    fn l2(&self, levels: usize) -> L2 {
        let l2 = Level2::from(&self.book);
        let side = |v: &Vec<(Price, Quantity)>| {
            v.iter()
                .take(levels)
                .map(|(p, q)| (p.0, q.0))
                .collect::<Vec<_>>()
        };
        (side(l2.bid_levels()), side(l2.ask_levels()))
    }
}
