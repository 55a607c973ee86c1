//! The event feed behind the WebSocket streams: every applied batch, as published by
//! the node only after it is durable, with the order-book changes it made.
//!
//! Depth diffs follow Binance's "manage a local order book" contract: each market has
//! one update-id sequence, the engine's [`Engine::market_update_id`], which is also REST
//! `depth`'s `lastUpdateId`. A [`BookDiff`] covers `first_update_id ..= last_update_id`
//! (Binance `U`/`u`), and the first id of a market's diff is always the last id of its
//! previous diff plus one, so a client detects any gap. Every level the batch touched is
//! given with its absolute quantity after the batch (zero: the level is gone). A batch
//! that advanced a market's update id without changing a level (an IOC that found
//! nothing) still yields a diff, with no levels, to keep the ids contiguous.
//!
//! [`Publisher`] is pure: the engine state at the batch's end and the batch's events in,
//! a [`Published`] out. The node's observer runs it on the sequencer thread.

use kura_engine::{Ctx, Engine, Event, EventKind, Side};
use kura_units::{MarketId, OrderId, PriceTicks, QtyLots};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One market's book changes over one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookDiff {
    pub market: MarketId,
    /// Binance `U`: the previous diff's `last_update_id` + 1.
    pub first_update_id: u64,
    /// Binance `u`: the market's update id after the batch.
    pub last_update_id: u64,
    /// Touched bid levels, best (highest) first: (price, quantity now; zero = removed).
    pub bids: Vec<(PriceTicks, QtyLots)>,
    /// Touched ask levels, best (lowest) first.
    pub asks: Vec<(PriceTicks, QtyLots)>,
}

/// One durable, applied batch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Published {
    /// Every command of the batch in order, with its events (none if it was refused).
    /// Shared with the read-model projector: the batch is copied once, not per consumer.
    pub commands: Arc<Vec<(Ctx, Vec<Event>)>>,
    /// Book changes, one per market whose update id advanced, by market id.
    pub books: Vec<BookDiff>,
}

impl Published {
    /// Time of the batch (all its commands share the sequencer's stamp).
    pub fn timestamp_ms(&self) -> u64 {
        self.commands.last().map_or(0, |(ctx, _)| ctx.timestamp_ms)
    }
}

/// Turns applied batches into [`Published`] ones. Keeps where each resting order sits
/// (cancels and fills name only the order), and each market's last published update id.
#[derive(Clone, Debug, Default)]
pub struct Publisher {
    resting: HashMap<OrderId, (MarketId, Side, PriceTicks)>,
    published_ids: Vec<u64>,
}

impl Publisher {
    /// Start from the engine's current state (after recovery).
    pub fn new(engine: &Engine) -> Publisher {
        let mut p = Publisher::default();
        for m in 0..engine.market_count() {
            let market = MarketId(m as u32);
            if let Some(book) = engine.book(market) {
                for side in [Side::Buy, Side::Sell] {
                    book.for_each(side, |r| {
                        p.resting.insert(r.id, (market, side, r.price));
                    });
                }
            }
            p.published_ids
                .push(engine.market_update_id(market).unwrap_or(0));
        }
        p
    }

    /// The update id last published for `market` (REST `lastUpdateId` at that point).
    pub fn published_update_id(&self, market: MarketId) -> Option<u64> {
        self.published_ids.get(market.0 as usize).copied()
    }

    /// Publish one batch: `engine` is the state after it.
    pub fn publish(&mut self, engine: &Engine, commands: Vec<(Ctx, Vec<Event>)>) -> Published {
        let books = self.book_diffs(engine, commands.iter().flat_map(|(_, events)| events));
        Published {
            commands: Arc::new(commands),
            books,
        }
    }

    /// The book changes of one batch, given its events in order; `engine` is the state
    /// after it. (What [`Publisher::publish`] does without keeping the events.)
    pub fn book_diffs<'a>(
        &mut self,
        engine: &Engine,
        events: impl Iterator<Item = &'a Event>,
    ) -> Vec<BookDiff> {
        let mut touched: BTreeSet<(u32, bool, u64)> = BTreeSet::new();
        let mut accepted: HashMap<OrderId, (MarketId, Side, PriceTicks)> = HashMap::new();
        let mut touch = |market: MarketId, side: Side, price: PriceTicks| {
            touched.insert((market.0, side == Side::Buy, price.get()));
        };
        for e in events {
            match &e.kind {
                EventKind::OrderAccepted {
                    market,
                    order,
                    side,
                    price,
                    ..
                } => {
                    accepted.insert(*order, (*market, *side, *price));
                }
                EventKind::OrderRested { order, .. } => {
                    if let Some(&(market, side, price)) = accepted.get(order) {
                        self.resting.insert(*order, (market, side, price));
                        touch(market, side, price);
                    }
                }
                EventKind::Trade {
                    market,
                    price,
                    taker_side,
                    ..
                } => {
                    let maker_side = match taker_side {
                        Side::Buy => Side::Sell,
                        Side::Sell => Side::Buy,
                    };
                    touch(*market, maker_side, *price);
                }
                EventKind::OrderFilled { order, .. }
                | EventKind::OrderCancelled { order, .. }
                | EventKind::OrderExpired { order, .. } => {
                    if let Some((market, side, price)) = self.resting.remove(order) {
                        touch(market, side, price);
                    }
                }
                EventKind::OrderAmended { order, price, .. } => {
                    if let Some(entry) = self.resting.get_mut(order) {
                        touch(entry.0, entry.1, entry.2);
                        entry.2 = *price;
                        touch(entry.0, entry.1, *price);
                    }
                }
                _ => {}
            }
        }
        while self.published_ids.len() < engine.market_count() {
            self.published_ids.push(0);
        }
        let mut books = Vec::new();
        for (m, published) in self.published_ids.iter_mut().enumerate() {
            let market = MarketId(m as u32);
            let now = engine.market_update_id(market).unwrap_or(*published);
            if now <= *published {
                continue;
            }
            let mut diff = BookDiff {
                market,
                first_update_id: *published + 1,
                last_update_id: now,
                bids: Vec::new(),
                asks: Vec::new(),
            };
            if let Some(book) = engine.book(market) {
                for &(_, is_bid, price) in
                    touched.range((m as u32, false, 0)..=(m as u32, true, u64::MAX))
                {
                    let side = if is_bid { Side::Buy } else { Side::Sell };
                    let level = (
                        PriceTicks::new(price),
                        book.level_quantity(side, PriceTicks::new(price)),
                    );
                    if is_bid {
                        diff.bids.push(level);
                    } else {
                        diff.asks.push(level);
                    }
                }
            }
            diff.bids.reverse(); // highest first
            *published = now;
            books.push(diff);
        }
        books
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_engine::{genesis, Command, Limits, OrderRef, OrderType, TimeInForce};
    use kura_units::{Amount, UserId};

    struct World {
        engine: Engine,
        publisher: Publisher,
        seq: u64,
        /// The client's local book, kept only from published diffs.
        local: HashMap<(u32, bool, u64), u64>,
        last_u: Vec<u64>,
    }

    impl World {
        fn new() -> World {
            let mut engine = Engine::new(Limits::DEFAULT);
            let mut seq = 0;
            for c in genesis::genesis() {
                seq += 1;
                engine
                    .apply_owned(
                        &c,
                        Ctx {
                            seq,
                            timestamp_ms: seq,
                        },
                    )
                    .expect("genesis");
            }
            for u in 0..3u32 {
                for c in [
                    Command::CreateUser,
                    Command::Deposit {
                        user: UserId(u),
                        asset: genesis::BTC,
                        amount: Amount::new(10_000_000_000),
                        reference: format!("b{u}"),
                    },
                    Command::Deposit {
                        user: UserId(u),
                        asset: genesis::JPY,
                        amount: Amount::new(10_000_000_000_000),
                        reference: format!("j{u}"),
                    },
                ] {
                    seq += 1;
                    engine
                        .apply_owned(
                            &c,
                            Ctx {
                                seq,
                                timestamp_ms: seq,
                            },
                        )
                        .expect("setup");
                }
            }
            let publisher = Publisher::new(&engine);
            let last_u = (0..engine.market_count())
                .map(|m| engine.market_update_id(MarketId(m as u32)).unwrap_or(0))
                .collect();
            World {
                engine,
                publisher,
                seq,
                local: HashMap::new(),
                last_u,
            }
        }

        /// Apply a batch, publish it, and apply the diffs to the local book the way a
        /// Binance client does (checking U == previous u + 1).
        fn batch(&mut self, cmds: Vec<Command>) -> usize {
            let mut trades = 0;
            let mut applied = Vec::new();
            for c in cmds {
                self.seq += 1;
                let ctx = Ctx {
                    seq: self.seq,
                    timestamp_ms: self.seq,
                };
                let events = self.engine.apply_owned(&c, ctx).unwrap_or_default();
                trades += events
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
                    .count();
                applied.push((ctx, events));
            }
            let p = self.publisher.publish(&self.engine, applied);
            for d in &p.books {
                let m = d.market.0 as usize;
                assert_eq!(d.first_update_id, self.last_u[m] + 1, "contiguous ids");
                assert!(d.last_update_id >= d.first_update_id);
                self.last_u[m] = d.last_update_id;
                for (is_bid, levels) in [(true, &d.bids), (false, &d.asks)] {
                    for (p, q) in levels {
                        if q.get() == 0 {
                            self.local.remove(&(d.market.0, is_bid, p.get()));
                        } else {
                            self.local.insert((d.market.0, is_bid, p.get()), q.get());
                        }
                    }
                }
            }
            // The local book equals the engine's, level for level, in every market.
            for m in 0..self.engine.market_count() as u32 {
                let book = self.engine.book(MarketId(m)).expect("book");
                for (side, is_bid) in [(Side::Buy, true), (Side::Sell, false)] {
                    let real: Vec<(u64, u64)> = book
                        .depth(side, usize::MAX)
                        .into_iter()
                        .map(|(p, q)| (p.get(), q.get()))
                        .collect();
                    let mut local: Vec<(u64, u64)> = self
                        .local
                        .iter()
                        .filter(|((mm, b, _), _)| *mm == m && *b == is_bid)
                        .map(|((_, _, p), q)| (*p, *q))
                        .collect();
                    local.sort_unstable();
                    if is_bid {
                        local.reverse();
                    }
                    assert_eq!(local, real, "market {m} side {side:?}");
                }
                assert_eq!(
                    Some(self.last_u[m as usize]),
                    self.engine.market_update_id(MarketId(m))
                );
            }
            trades
        }
    }

    fn limit(user: u32, side: Side, price: u64, lots: u64, tif: TimeInForce) -> Command {
        Command::PlaceOrder {
            user: UserId(user),
            market: MarketId(0),
            side,
            order: OrderType::Limit {
                price: PriceTicks::new(price),
                qty: QtyLots::new(lots),
                tif,
                post_only: false,
            },
            client_id: None,
            stp: None,
        }
    }

    #[test]
    fn diffs_rebuild_the_book_exactly_with_contiguous_ids() {
        let mut w = World::new();
        let gtc = TimeInForce::Gtc;
        w.batch(vec![
            limit(0, Side::Buy, 15_000_000, 5, gtc),
            limit(0, Side::Buy, 14_990_000, 5, gtc),
            limit(1, Side::Sell, 15_010_000, 5, gtc),
        ]);
        // A partial fill, a full fill across levels, an IOC that finds nothing.
        assert_eq!(w.batch(vec![limit(2, Side::Sell, 15_000_000, 3, gtc)]), 1);
        w.batch(vec![
            limit(2, Side::Sell, 14_990_000, 7, gtc),
            limit(2, Side::Buy, 14_000_000, 1, TimeInForce::Ioc),
        ]);
        // Cancel, amend to a new price, amend down in place, cancel-all.
        w.batch(vec![Command::CancelOrder {
            user: UserId(1),
            market: MarketId(0),
            order: OrderRef::Id(OrderId(3)),
        }]);
        w.batch(vec![
            limit(0, Side::Buy, 14_980_000, 4, gtc),
            limit(1, Side::Sell, 15_050_000, 9, gtc),
        ]);
        let ids: Vec<u64> = {
            let book = w.engine.book(MarketId(0)).expect("book");
            let mut v = Vec::new();
            book.for_each(Side::Buy, |r| v.push(r.id.0));
            book.for_each(Side::Sell, |r| v.push(r.id.0));
            v
        };
        assert!(ids.len() >= 2);
        w.batch(vec![Command::AmendOrder {
            user: UserId(1),
            market: MarketId(0),
            order: OrderRef::Id(OrderId(*ids.last().expect("ask"))),
            price: Some(PriceTicks::new(15_040_000)),
            remaining: None,
        }]);
        w.batch(vec![Command::AmendOrder {
            user: UserId(1),
            market: MarketId(0),
            order: OrderRef::Id(OrderId(*ids.last().expect("ask"))),
            price: None,
            remaining: Some(QtyLots::new(2)),
        }]);
        // A refused command changes no id; a batch with nothing for the book publishes
        // no diff.
        w.batch(vec![limit(9, Side::Buy, 15_000_000, 1, gtc)]);
        w.batch(vec![Command::CancelAll {
            user: UserId(0),
            market: MarketId(0),
        }]);
        assert!(
            w.local.keys().all(|(_, is_bid, _)| !is_bid),
            "all bids gone"
        );
    }

    #[test]
    fn seeded_random_batches_keep_the_local_book_in_sync() {
        let mut w = World::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut trades = 0;
        for _ in 0..300 {
            let n = 1 + next() % 6;
            let mut cmds = Vec::new();
            for _ in 0..n {
                let user = (next() % 3) as u32;
                let side = if next() % 2 == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let price = 14_950_000 + (next() % 10) * 10_000;
                let r = next() % 10;
                cmds.push(if r < 6 {
                    limit(user, side, price, 1 + next() % 9, TimeInForce::Gtc)
                } else if r < 7 {
                    limit(user, side, price, 1 + next() % 9, TimeInForce::Ioc)
                } else if r < 9 {
                    Command::CancelOrder {
                        user: UserId(user),
                        market: MarketId(0),
                        order: OrderRef::Id(OrderId(1 + next() % 200)),
                    }
                } else {
                    Command::CancelAll {
                        user: UserId(user),
                        market: MarketId(0),
                    }
                });
            }
            trades += w.batch(cmds);
        }
        assert!(trades > 50, "the workload must trade ({trades} trades)");
        assert!(
            w.local.len() > 3,
            "and leave a book ({} levels)",
            w.local.len()
        );
    }
}
