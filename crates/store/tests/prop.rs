//! Random order flows through a real engine: per order, the store's executed quantity and
//! cumulative quote equal the sums over its fills, and everything else agrees with the
//! events and the engine's books.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, BTCJPY};
use kura_engine::{Command, EventKind, OrderRef, Side, TimeInForce};
use kura_units::{OrderId, PriceTicks, QtyLots};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Place {
        user: usize,
        buy: bool,
        price: u64,
        qty: u64,
        tif: u8,
    },
    Cancel {
        user: usize,
        nth: usize,
    },
    Amend {
        user: usize,
        nth: usize,
        price: Option<u64>,
        qty: Option<u64>,
    },
    CancelAll {
        user: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<bool>(), 0..6u64, 2..40u64, 0..3u8).prop_map(
            |(user, buy, p, qty, tif)| Op::Place { user, buy, price: 5_000_000 + p * 1_000, qty, tif }
        ),
        2 => (0..3usize, 0..4usize).prop_map(|(user, nth)| Op::Cancel { user, nth }),
        2 => (0..3usize, 0..4usize, proptest::option::of(0..6u64), proptest::option::of(2..40u64))
            .prop_map(|(user, nth, p, qty)| Op::Amend {
                user,
                nth,
                price: p.map(|p| 5_000_000 + p * 1_000),
                qty,
            }),
        1 => (0..3usize).prop_map(|user| Op::CancelAll { user }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn executed_qty_is_the_sum_of_fills(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::in_memory();
        let users: Vec<_> = (0..3).map(|_| h.funded_user()).collect();
        for (i, op) in ops.iter().enumerate() {
            h.time_ms += 7_919 * (i as u64 % 13);
            match *op {
                Op::Place { user, buy, price, qty, tif } => {
                    let side = if buy { Side::Buy } else { Side::Sell };
                    let tif = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][tif as usize];
                    let _ = h.limit(users[user], side, price, qty, tif);
                }
                Op::Cancel { user, nth } => {
                    let open = h.store.open_orders(users[user], Some(BTCJPY)).unwrap();
                    if let Some(o) = open.get(nth) {
                        h.cancel(users[user], o.order_id).unwrap();
                    }
                }
                Op::Amend { user, nth, price, qty } => {
                    let open = h.store.open_orders(users[user], Some(BTCJPY)).unwrap();
                    if let Some(o) = open.get(nth) {
                        let _ = h.run(Command::AmendOrder {
                            user: users[user],
                            market: BTCJPY,
                            order: OrderRef::Id(o.order_id),
                            price: price.map(PriceTicks::new),
                            remaining: qty.map(QtyLots::new),
                        });
                    }
                }
                Op::CancelAll { user } => {
                    let _ = h.run(Command::CancelAll { user: users[user], market: BTCJPY });
                }
            }
        }
        h.check();
        // Per order: executed = Σ fill qty, cum quote = Σ fill quote, from the store alone.
        let c = h.store.connection();
        let mut stmt = c.prepare(
            "SELECT o.order_id, o.executed_qty, o.cum_quote,
                    coalesce(sum(f.qty), 0), coalesce(sum(f.quote_qty), 0), count(f.trade_id)
             FROM orders o LEFT JOIN fills f ON f.order_id = o.order_id
             GROUP BY o.order_id",
        ).unwrap();
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, i64>(5)?))
        }).unwrap();
        for row in rows {
            let (id, executed, cum, fill_qty, fill_quote, _) = row.unwrap();
            prop_assert_eq!(executed, fill_qty, "order {}", id);
            prop_assert_eq!(cum, fill_quote, "order {}", id);
            // And the API query gives the same fills.
            let order = h.store.order(BTCJPY, OrderId(id as u64)).unwrap().unwrap();
            let mine = h.store.my_trades(order.user, BTCJPY, kura_store::TradesQuery {
                order_id: Some(order.order_id), limit: 1000, ..Default::default()
            }).unwrap();
            prop_assert_eq!(mine.iter().map(|f| f.qty.get()).sum::<u64>(), order.executed_qty.get());
        }
        // Trade count: two fills per trade; klines count every trade once per interval.
        let trades = h.log.iter().flat_map(|(_, e)| e).filter(|e| matches!(e.kind, EventKind::Trade { .. })).count();
        let fills: i64 = c.query_row("SELECT count(*) FROM fills", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(fills as usize, 2 * trades);
        let klined: i64 = c.query_row(
            "SELECT coalesce(sum(trade_count), 0) FROM klines WHERE interval = '1m'", [], |r| r.get(0),
        ).unwrap();
        prop_assert_eq!(klined as usize, trades);
        // The in-memory fold equals the table: from the start, and from a model's open
        // orders halfway through; it forgets ended orders beyond its bound.
        let ids: Vec<u64> = c
            .prepare("SELECT order_id FROM orders").unwrap()
            .query_map([], |r| r.get::<_, i64>(0)).unwrap()
            .map(|r| r.unwrap() as u64)
            .collect();
        let half = h.log.len() / 2;
        let mut early = kura_store::Store::open_in_memory().unwrap();
        let applied: Vec<kura_store::Applied<'_>> =
            h.log[..half].iter().map(|(ctx, ev)| kura_store::Applied::new(*ctx, ev)).collect();
        early.apply_batch(&applied).unwrap();
        let mut full = kura_store::LiveOrders::new(usize::MAX);
        let mut seeded = kura_store::LiveOrders::with_open(usize::MAX, early.all_open_orders().unwrap());
        let mut short = kura_store::LiveOrders::new(3);
        for (i, (ctx, events)) in h.log.iter().enumerate() {
            full.apply(*ctx, events);
            short.apply(*ctx, events);
            if i >= half {
                seeded.apply(*ctx, events);
            }
        }
        let mut open = 0;
        let mut ended_remembered = 0;
        for &id in &ids {
            let row = h.store.order(BTCJPY, OrderId(id)).unwrap().unwrap();
            prop_assert_eq!(full.get(BTCJPY, OrderId(id)), Some(&row), "order {}", id);
            if row.status.is_open() {
                open += 1;
                prop_assert_eq!(seeded.get(BTCJPY, OrderId(id)), Some(&row), "order {}", id);
            } else if let Some(seen) = seeded.get(BTCJPY, OrderId(id)) {
                prop_assert_eq!(seen, &row, "order {}", id);
            }
            if let Some(seen) = short.get(BTCJPY, OrderId(id)) {
                prop_assert_eq!(seen, &row, "order {}", id);
                if !row.status.is_open() {
                    ended_remembered += 1;
                }
            }
            prop_assert_eq!(full.get(kura_units::MarketId(u32::MAX), OrderId(id)), None);
        }
        prop_assert_eq!(full.open_count(), open);
        prop_assert_eq!(seeded.open_count(), open);
        prop_assert_eq!(ended_remembered, (ids.len() - open).min(3));
        // Batching changes nothing: the same commands projected one by one, three at a
        // time, or all at once give the same candles (and the same everything else).
        let dump = |s: &kura_store::Store| -> Vec<Vec<i64>> {
            let mut stmt = s.connection().prepare(
                "SELECT market_id, length(interval), open_time_ms, open, high, low, close,
                        base_volume, quote_volume, trade_count, taker_buy_base, taker_buy_quote
                 FROM klines ORDER BY market_id, interval, open_time_ms",
            ).unwrap();
            let rows = stmt.query_map([], |r| (0..12).map(|i| r.get::<_, i64>(i)).collect()).unwrap();
            rows.map(Result::unwrap).collect()
        };
        let reference = dump(&h.store);
        prop_assert_eq!(reference.len() as i64 > 0, trades > 0);
        for chunk in [3usize, usize::MAX] {
            let mut other = kura_store::Store::open_in_memory().unwrap();
            for part in h.log.chunks(chunk.min(h.log.len()).max(1)) {
                let applied: Vec<kura_store::Applied<'_>> =
                    part.iter().map(|(ctx, ev)| kura_store::Applied::new(*ctx, ev)).collect();
                other.apply_batch(&applied).unwrap();
            }
            prop_assert_eq!(&dump(&other), &reference, "chunks of {}", chunk);
        }
    }
}
