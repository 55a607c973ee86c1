//! The queries behind `aggTrades` by time, `ticker/24hr` and the account's fee tier.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, BTCJPY, T0};
use kura_engine::{Command, Side, TimeInForce};
use kura_store::TickerStats;
use kura_units::{Amount, MarketId, PriceTicks, QtyLots, TradeId, UserId};

/// Three trades: 100 lots at 5 000 000 (T0), 50 at 5 000 100 (T0 + 1 s), 20 at
/// 4 999 000 (T0 + 2 s).
fn three_trades(h: &mut Harness) {
    let (s, b) = (h.funded_user(), h.funded_user());
    for (i, (price, qty)) in [(5_000_000, 100), (5_000_100, 50), (4_999_000, 20)]
        .into_iter()
        .enumerate()
    {
        h.time_ms = T0 + 1_000 * i as u64;
        h.limit(s, Side::Sell, price, qty, TimeInForce::Gtc)
            .unwrap();
        h.limit(b, Side::Buy, price, qty, TimeInForce::Ioc).unwrap();
    }
}

#[test]
fn trades_between_bounds_and_limits() {
    let mut h = Harness::in_memory();
    three_trades(&mut h);
    let ids = |rows: Vec<kura_store::TradeRow>| -> Vec<u64> {
        rows.iter().map(|t| t.trade_id.0).collect()
    };
    let all = h.store.trades_between(BTCJPY, None, None, 10).unwrap();
    assert_eq!(ids(all.clone()), [1, 2, 3]);
    assert_eq!(all[1].time_ms, T0 + 1_000);
    // Without a start: the most recent, ascending.
    assert_eq!(
        ids(h.store.trades_between(BTCJPY, None, None, 2).unwrap()),
        [2, 3]
    );
    // With a start: the first from there.
    assert_eq!(
        ids(h
            .store
            .trades_between(BTCJPY, Some(T0 + 1), None, 1)
            .unwrap()),
        [2]
    );
    // Both bounds inclusive.
    assert_eq!(
        ids(h
            .store
            .trades_between(BTCJPY, Some(T0 + 1_000), Some(T0 + 2_000), 10)
            .unwrap()),
        [2, 3]
    );
    assert_eq!(
        ids(h
            .store
            .trades_between(BTCJPY, None, Some(T0 + 999), 10)
            .unwrap()),
        [1]
    );
    assert!(h
        .store
        .trades_between(MarketId(1), None, None, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn ticker_statistics() {
    let mut h = Harness::in_memory();
    three_trades(&mut h);
    // The window holds the last two trades; the first is the previous close.
    let s = h.store.ticker_stats(BTCJPY, T0 + 1, T0 + 5_000).unwrap();
    assert_eq!(
        s,
        TickerStats {
            count: 2,
            open: Some(PriceTicks::new(5_000_100)),
            high: Some(PriceTicks::new(5_000_100)),
            low: Some(PriceTicks::new(4_999_000)),
            base_volume: QtyLots::new(70),
            // 5 000 100 × 0.0005 + 4 999 000 × 0.0002 = 2 500.05 + 999.8, each floored.
            quote_volume: Amount::new(2_500 + 999),
            first_id: Some(TradeId(2)),
            last_id: Some(TradeId(3)),
            last: Some((PriceTicks::new(4_999_000), QtyLots::new(20))),
            prev_close: Some(PriceTicks::new(5_000_000)),
        }
    );
    // A window before any trade: nothing, no last price.
    assert_eq!(
        h.store.ticker_stats(BTCJPY, 0, T0 - 1).unwrap(),
        TickerStats::default()
    );
    // A window after every trade: no trade inside, the last price still known.
    let after = h
        .store
        .ticker_stats(BTCJPY, T0 + 10_000, T0 + 20_000)
        .unwrap();
    assert_eq!(after.count, 0);
    assert_eq!(after.open, None);
    assert_eq!(after.base_volume, QtyLots::ZERO);
    assert_eq!(
        after.last,
        Some((PriceTicks::new(4_999_000), QtyLots::new(20)))
    );
    assert_eq!(after.prev_close, Some(PriceTicks::new(4_999_000)));
}

#[test]
fn fee_tier_of_a_customer() {
    let mut h = Harness::in_memory();
    let u = h.funded_user();
    assert_eq!(h.store.fee_tier(u).unwrap(), Some(0));
    h.ok(Command::SetFeeTier { user: u, tier: 2 });
    assert_eq!(h.store.fee_tier(u).unwrap(), Some(2));
    assert_eq!(h.store.fee_tier(UserId(999)).unwrap(), None);
}
