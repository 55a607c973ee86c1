//! The store fed by a real engine: orders, trades, klines, resume and idempotency.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, BTCJPY, T0};
use kura_engine::genesis::{BTC, JPY};
use kura_engine::{Command, Ctx, Event, EventKind, OrderRef, OrderType, Side, TimeInForce};
use kura_store::{
    Applied, Interval, OrderStatus, OrdersQuery, Store, StoreError, TradesQuery, WithdrawalStatus,
};
use kura_units::{Amount, ClientOrderId, OrderId, PriceTicks, QtyLots, TradeId, UserId};

fn order_id(events: &[Event]) -> OrderId {
    events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::OrderAccepted { order, .. } => Some(order),
            _ => None,
        })
        .expect("order accepted")
}

fn trades_of(events: &[Event]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Trade {
                trade, price, qty, ..
            } => Some((trade.0, price.get(), qty.get())),
            _ => None,
        })
        .collect()
}

/// Crossing orders, partial fills, a cancel, amends (keeping and losing priority), an
/// IOC that expires, a client order id.
fn trading_flow(h: &mut Harness) -> (UserId, UserId, UserId) {
    let (s1, s2, b) = (h.funded_user(), h.funded_user(), h.funded_user());
    let ask1 = order_id(
        &h.limit(s1, Side::Sell, 5_000_000, 100, TimeInForce::Gtc)
            .unwrap(),
    );
    let ask2 = order_id(
        &h.limit(s2, Side::Sell, 5_000_100, 50, TimeInForce::Gtc)
            .unwrap(),
    );
    // Takes all of ask1 and 20 of ask2.
    let ev = h
        .limit(b, Side::Buy, 5_000_100, 120, TimeInForce::Gtc)
        .unwrap();
    assert_eq!(trades_of(&ev).len(), 2);
    h.check();
    // ask2 partly filled, then cancelled.
    h.cancel(s2, ask2).unwrap();
    // A resting bid, reduced (keeps priority), then repriced through an ask.
    let bid = order_id(
        &h.limit(b, Side::Buy, 4_900_000, 40, TimeInForce::Gtc)
            .unwrap(),
    );
    h.ok(Command::AmendOrder {
        user: b,
        market: BTCJPY,
        order: OrderRef::Id(bid),
        price: None,
        remaining: Some(QtyLots::new(30)),
    });
    h.check();
    let ask3 = order_id(
        &h.limit(s1, Side::Sell, 4_950_000, 10, TimeInForce::Gtc)
            .unwrap(),
    );
    let ev = h.ok(Command::AmendOrder {
        user: b,
        market: BTCJPY,
        order: OrderRef::Id(bid),
        price: Some(PriceTicks::new(4_950_000)),
        remaining: None,
    });
    assert_eq!(trades_of(&ev).len(), 1);
    h.check();
    // An IOC sell that fills 20 of the bid and expires the rest.
    let ev = h
        .limit(s2, Side::Sell, 4_950_000, 50, TimeInForce::Ioc)
        .unwrap();
    assert_eq!(trades_of(&ev), vec![(4, 4_950_000, 20)]);
    // A client order id.
    h.ok(Command::PlaceOrder {
        user: s1,
        market: BTCJPY,
        side: Side::Sell,
        order: OrderType::Limit {
            price: PriceTicks::new(6_000_000),
            qty: QtyLots::new(10),
            tif: TimeInForce::Gtc,
            post_only: true,
        },
        client_id: Some(ClientOrderId::parse("my-order_1").unwrap()),
        stp: None,
    });
    h.check();
    let _ = (ask1, ask3);
    (s1, s2, b)
}

#[test]
fn orders_and_trades_match_the_engine() {
    let mut h = Harness::in_memory();
    let (s1, s2, b) = trading_flow(&mut h);
    h.check();

    // Statuses.
    let s = &h.store;
    let all_b = s
        .orders(
            b,
            BTCJPY,
            OrdersQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(all_b.len(), 2);
    assert_eq!(all_b[0].status, OrderStatus::Filled);
    assert_eq!(all_b[0].executed_qty, QtyLots::new(120));
    // 0.001 BTC at 5,000,000 JPY + 0.0002 BTC at 5,000,100 (1000.02, rounded down).
    assert_eq!(all_b[0].cum_quote, Amount::new(5_000 + 1_000));
    assert_eq!(
        all_b[1].status,
        OrderStatus::Filled,
        "amended bid filled by the IOC"
    );
    assert_eq!(all_b[1].orig_qty, QtyLots::new(30));
    assert_eq!(all_b[1].price, PriceTicks::new(4_950_000));
    let all_s2 = s
        .orders(
            s2,
            BTCJPY,
            OrdersQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(all_s2[0].status, OrderStatus::Canceled);
    assert_eq!(all_s2[0].executed_qty, QtyLots::new(20));
    assert_eq!(all_s2[1].status, OrderStatus::Expired);
    assert_eq!(all_s2[1].executed_qty, QtyLots::new(20));

    // Open orders and client ids.
    let open = s.open_orders(s1, None).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].client_order_id.as_deref(), Some("my-order_1"));
    assert_eq!(open[0].order_type, kura_store::OrderType::LimitMaker);
    let by_cid = s
        .order_by_client_id(BTCJPY, s1, "my-order_1")
        .unwrap()
        .unwrap();
    assert_eq!(by_cid, open[0]);
    assert!(s
        .order_by_client_id(BTCJPY, s2, "my-order_1")
        .unwrap()
        .is_none());
    assert!(s.open_orders(b, Some(BTCJPY)).unwrap().is_empty());

    // Public trades equal the Trade events.
    let mut from_events = Vec::new();
    for (ctx, events) in &h.log {
        for e in events {
            if let EventKind::Trade {
                trade,
                price,
                qty,
                quote_qty,
                maker_order,
                taker_order,
                taker_side,
                maker_fee,
                taker_fee,
                ..
            } = e.kind
            {
                from_events.push((
                    trade,
                    price,
                    qty,
                    quote_qty,
                    maker_order,
                    taker_order,
                    taker_side,
                    maker_fee,
                    taker_fee,
                    ctx.seq,
                ));
            }
        }
    }
    let trades = s.recent_trades(BTCJPY, 1000).unwrap();
    let from_store: Vec<_> = trades
        .iter()
        .map(|t| {
            (
                t.trade_id,
                t.price,
                t.qty,
                t.quote_qty,
                t.maker_order,
                t.taker_order,
                t.taker_side,
                t.maker_fee,
                t.taker_fee,
                t.seq,
            )
        })
        .collect();
    assert_eq!(from_store, from_events);
    assert_eq!(s.recent_trades(BTCJPY, 2).unwrap(), trades[2..].to_vec());
    assert_eq!(
        s.trades_from(BTCJPY, TradeId(2), 2).unwrap(),
        trades[1..3].to_vec()
    );

    // myTrades from each side.
    let mine = s
        .my_trades(
            b,
            BTCJPY,
            TradesQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine.iter().all(|f| f.is_buyer && f.user == b));
    assert_eq!(
        mine.iter().map(|f| f.is_maker).collect::<Vec<_>>(),
        vec![false, false, false, true]
    );
    let of_first = s
        .my_trades(
            b,
            BTCJPY,
            TradesQuery {
                order_id: Some(all_b[0].order_id),
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(of_first.len(), 2);
    let page = s
        .my_trades(
            b,
            BTCJPY,
            TradesQuery {
                from_id: Some(TradeId(3)),
                limit: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].trade_id, TradeId(3));
    let sold = s
        .my_trades(
            s1,
            BTCJPY,
            TradesQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(sold.iter().all(|f| !f.is_buyer));

    // Balances history ends at the engine's balances.
    for user in [s1, s2, b] {
        for asset in [BTC, JPY] {
            let hist = s.balance_history(user, asset, 1).unwrap();
            let bal = h.engine.ledger().balance(user, asset).unwrap();
            assert_eq!(hist[0].available, bal.available);
            assert_eq!(hist[0].held, bal.held);
        }
    }
    assert_eq!(s.market_by_symbol("BTCJPY").unwrap(), Some(BTCJPY));
}

#[test]
fn deposits_and_withdrawals() {
    let mut h = Harness::in_memory();
    let u = h.funded_user();
    for id in ["w1", "w2", "w3"] {
        h.ok(Command::RequestWithdrawal {
            user: u,
            asset: BTC,
            amount: Amount::new(1_000),
            id: id.into(),
        });
    }
    h.ok(Command::SettleWithdrawal { id: "w1".into() });
    h.ok(Command::CancelWithdrawal { id: "w2".into() });
    let deps = h.store.deposits(u, None, 10).unwrap();
    assert_eq!(deps.len(), 2);
    assert_eq!(
        h.store.deposits(u, Some(JPY), 10).unwrap()[0].amount,
        Amount::new(10_000_000_000)
    );
    let ws = h.store.withdrawals(u, Some(BTC), 10).unwrap();
    let st: Vec<_> = ws.iter().map(|w| (w.id.as_str(), w.status)).collect();
    assert_eq!(
        st,
        vec![
            ("w1", WithdrawalStatus::Settled),
            ("w2", WithdrawalStatus::Cancelled),
            ("w3", WithdrawalStatus::Pending)
        ]
    );
}

#[test]
fn reversed_deposit_shows_and_a_recredit_restores_it() {
    let mut h = Harness::in_memory();
    let u = h.funded_user();
    let dep = Command::Deposit {
        user: u,
        asset: BTC,
        amount: Amount::new(5_000),
        reference: "ab:1".into(),
    };
    h.ok(dep.clone());
    h.ok(Command::ReverseDeposit {
        reference: "ab:1".into(),
        reason: "reorg".into(),
    });
    let row = |h: &Harness| {
        h.store
            .deposits(u, Some(BTC), 10)
            .unwrap()
            .into_iter()
            .find(|d| d.reference == "ab:1")
            .expect("row")
    };
    assert!(row(&h).reversed);
    h.ok(dep);
    let again = row(&h);
    assert!(!again.reversed);
    assert_eq!(again.amount, Amount::new(5_000));
}

/// Every row of every table, as text, for comparing two stores.
fn dump(s: &Store) -> Vec<String> {
    let c = s.connection();
    let mut out = Vec::new();
    for table in [
        "meta",
        "assets",
        "markets",
        "users",
        "orders",
        "trades",
        "fills",
        "balances_history",
        "klines",
        "deposits",
        "withdrawals",
    ] {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = table.to_string();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push_str(&format!(" {v:?}"));
                }
                Ok(line)
            })
            .unwrap();
        for row in rows {
            out.push(row.unwrap());
        }
    }
    out
}

#[test]
fn reapply_is_a_no_op() {
    let mut h = Harness::in_memory();
    trading_flow(&mut h);
    let before = dump(&h.store);
    let last = h.store.last_seq();
    let batch: Vec<Applied<'_>> = h.log.iter().map(|(c, e)| Applied::new(*c, e)).collect();
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.apply_batch(&batch).unwrap(), h.log.len());
    assert_eq!(
        dump(&store),
        before,
        "one batch gives the same tables as one per command"
    );
    assert_eq!(store.apply_batch(&batch).unwrap(), 0);
    assert_eq!(store.apply_batch(&batch[3..7]).unwrap(), 0);
    assert_eq!(store.last_seq(), last);
    assert_eq!(dump(&store), before);
}

#[test]
fn reopen_and_resume_at_last_seq() {
    let mut h = Harness::in_memory();
    trading_flow(&mut h);
    let want = dump(&h.store);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.sqlite");
    let batch: Vec<Applied<'_>> = h.log.iter().map(|(c, e)| Applied::new(*c, e)).collect();
    let half = batch.len() / 2;
    {
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.last_seq(), None);
        // Batches of 5 commands, up to the middle.
        for chunk in batch[..half].chunks(5) {
            s.apply_batch(chunk).unwrap();
        }
        assert_eq!(s.last_seq(), Some(batch[half - 1].ctx.seq));
    }
    let mut s = Store::open(&path).unwrap();
    let resume = s.last_seq().unwrap();
    assert_eq!(resume, batch[half - 1].ctx.seq);
    let journal_mode: String = s
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal_mode, "wal");
    // The caller replays from a little before last_seq: the overlap is skipped.
    let from = half.saturating_sub(3);
    assert_eq!(s.apply_batch(&batch[from..]).unwrap(), batch.len() - half);
    assert_eq!(dump(&s), want);
}

#[test]
fn failed_batch_leaves_nothing() {
    let mut h = Harness::in_memory();
    let u = h.funded_user();
    let last = h.store.last_seq().unwrap();
    let before = dump(&h.store);
    let good = Ctx {
        seq: last + 1,
        timestamp_ms: T0,
    };
    let good_events = vec![Event {
        seq: last + 1,
        kind: EventKind::FeeTierSet { user: u, tier: 1 },
    }];
    let bad = Ctx {
        seq: last + 2,
        timestamp_ms: T0,
    };
    // An event about an order the store has never seen.
    let bad_events = vec![Event {
        seq: last + 2,
        kind: EventKind::OrderFilled {
            market: BTCJPY,
            order: OrderId(999),
            user: u,
        },
    }];
    let err = h
        .store
        .apply_batch(&[
            Applied::new(good, &good_events),
            Applied::new(bad, &bad_events),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownOrder(999)), "{err}");
    assert_eq!(h.store.last_seq(), Some(last));
    assert_eq!(dump(&h.store), before);
    // An event whose seq is not its command's.
    let err = h.store.apply(bad, &good_events).unwrap_err();
    assert!(matches!(err, StoreError::SeqMismatch { .. }), "{err}");
    assert_eq!(h.store.last_seq(), Some(last));
    // A rejected command (no events) still moves last_seq.
    assert_eq!(h.store.apply(good, &[]).unwrap(), 1);
    assert_eq!(h.store.last_seq(), Some(last + 1));
}

#[test]
fn klines_across_minute_boundaries() {
    let mut h = Harness::in_memory();
    let (s, b) = (h.funded_user(), h.funded_user());
    let minute = T0 / 60_000 * 60_000;
    // (time, price, qty, taker side)
    let fills = [
        (minute + 5_000, 5_000_000, 10, Side::Buy),
        (minute + 20_000, 5_100_000, 4, Side::Sell),
        (minute + 59_999, 4_900_000, 6, Side::Buy),
        (minute + 60_000, 5_050_000, 8, Side::Sell),
        (minute + 61_000, 5_020_000, 2, Side::Buy),
        (minute + 3 * 60_000 + 1, 5_200_000, 3, Side::Buy),
    ];
    let mut quotes = Vec::new();
    for &(t, p, q, taker) in &fills {
        h.time_ms = t;
        let (maker_user, taker_user) = (s, b);
        let maker_side = match taker {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        h.limit(maker_user, maker_side, p, q, TimeInForce::Gtc)
            .unwrap();
        let ev = h.limit(taker_user, taker, p, q, TimeInForce::Gtc).unwrap();
        let quote: u64 = ev
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Trade { quote_qty, .. } => Some(quote_qty.get()),
                _ => None,
            })
            .sum();
        assert_eq!(quote, p * q / 100_000);
        quotes.push(quote);
    }
    let k = h
        .store
        .klines(BTCJPY, Interval::M1, None, None, 500)
        .unwrap();
    assert_eq!(k.len(), 3, "minutes without trades have no kline");
    assert_eq!(k[0].open_time_ms, minute);
    assert_eq!(k[0].close_time_ms, minute + 59_999);
    assert_eq!(
        (
            k[0].open.get(),
            k[0].high.get(),
            k[0].low.get(),
            k[0].close.get()
        ),
        (5_000_000, 5_100_000, 4_900_000, 4_900_000)
    );
    assert_eq!(k[0].base_volume, QtyLots::new(20));
    assert_eq!(k[0].quote_volume.get(), quotes[0] + quotes[1] + quotes[2]);
    assert_eq!(k[0].trade_count, 3);
    assert_eq!(k[0].taker_buy_base, QtyLots::new(16));
    assert_eq!(k[0].taker_buy_quote.get(), quotes[0] + quotes[2]);
    assert_eq!(k[1].open_time_ms, minute + 60_000);
    assert_eq!(
        (
            k[1].open.get(),
            k[1].high.get(),
            k[1].low.get(),
            k[1].close.get()
        ),
        (5_050_000, 5_050_000, 5_020_000, 5_020_000)
    );
    assert_eq!(k[1].base_volume, QtyLots::new(10));
    assert_eq!(k[2].open_time_ms, minute + 180_000);

    // Paging: start inside a bucket includes it; limit without start gives the latest.
    let from = h
        .store
        .klines(BTCJPY, Interval::M1, Some(minute + 30_000), None, 2)
        .unwrap();
    assert_eq!(from, k[..2].to_vec());
    assert_eq!(
        h.store.klines(BTCJPY, Interval::M1, None, None, 1).unwrap(),
        k[2..].to_vec()
    );
    let to = h
        .store
        .klines(BTCJPY, Interval::M1, Some(0), Some(minute + 60_000), 10)
        .unwrap();
    assert_eq!(to, k[..2].to_vec());

    // Every coarser interval aggregates the same trades per its own buckets.
    let total_quote: u64 = quotes.iter().sum();
    for interval in Interval::ALL {
        let rows = h.store.klines(BTCJPY, interval, None, None, 1000).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.trade_count).sum::<u64>(),
            fills.len() as u64
        );
        assert_eq!(rows.iter().map(|r| r.base_volume.get()).sum::<u64>(), 33);
        assert_eq!(
            rows.iter().map(|r| r.quote_volume.get()).sum::<u64>(),
            total_quote
        );
        for r in &rows {
            let inside: Vec<_> = fills
                .iter()
                .filter(|f| interval.open_time(f.0) == r.open_time_ms)
                .collect();
            assert!(!inside.is_empty());
            assert_eq!(r.open.get(), inside[0].1);
            assert_eq!(r.close.get(), inside[inside.len() - 1].1);
            assert_eq!(r.high.get(), inside.iter().map(|f| f.1).max().unwrap());
            assert_eq!(r.low.get(), inside.iter().map(|f| f.1).min().unwrap());
        }
    }
}

#[test]
fn schema_version_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sqlite");
    drop(Store::open(&path).unwrap());
    let s = Store::open(&path).unwrap();
    let v: i64 = s
        .connection()
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, i64::from(kura_store::SCHEMA_VERSION));
    drop(s);
    // A database from a newer build is refused.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(c);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}
