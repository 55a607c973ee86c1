//! Rule tests as tables: one line per command with the outcome it must have. After every
//! line the global invariants are checked, and every rejection must leave the state hash
//! exactly as it was.

use crate::genesis::{self, BTC, JPY, USD};
use crate::*;
use kura_ledger::SystemAccount;
use kura_units::{Amount, AmountDelta, OrderId, QtyLots};

const BTCJPY: MarketId = MarketId(0);
const BTCUSD: MarketId = MarketId(1);

struct T {
    e: Engine,
    seq: u64,
}

impl T {
    fn new() -> T {
        T::with_limits(Limits::DEFAULT)
    }

    fn with_limits(limits: Limits) -> T {
        let mut t = T {
            e: Engine::new(limits),
            seq: 0,
        };
        for c in genesis::genesis() {
            t.ok(c);
        }
        t
    }

    /// Run a command; check invariants; a rejection must not change the state hash.
    fn run(&mut self, cmd: Command) -> Result<Vec<Event>, Reject> {
        self.seq += 1;
        let before = self.e.state_hash();
        let ctx = Ctx {
            seq: self.seq,
            timestamp_ms: 1_700_000_000_000 + self.seq,
        };
        let r = self.e.apply_owned(&cmd, ctx);
        if let Err(err) = &r {
            assert_eq!(
                before,
                self.e.state_hash(),
                "rejected {cmd:?} ({err:?}) changed the state"
            );
        } else if let Ok(events) = &r {
            assert!(events.iter().all(|e| e.seq == self.seq));
        }
        if let Err(msg) = self.e.check_invariants() {
            panic!("invariant broken after {cmd:?}: {msg}");
        }
        r
    }

    fn ok(&mut self, cmd: Command) -> Vec<Event> {
        match self.run(cmd.clone()) {
            Ok(ev) => ev,
            Err(e) => panic!("{cmd:?} was rejected: {e:?}"),
        }
    }

    fn user_with(&mut self, funds: &[(AssetId, u64)]) -> UserId {
        let ev = self.ok(Command::CreateUser);
        let user = match ev[0].kind {
            EventKind::UserCreated { user } => user,
            ref other => panic!("unexpected {other:?}"),
        };
        for &(asset, amount) in funds {
            let reference = format!("seed-{}-{}", user.0, asset.0);
            self.ok(Command::Deposit {
                user,
                asset,
                amount: Amount::new(amount),
                reference,
            });
        }
        user
    }

    fn bal(&self, user: UserId, asset: AssetId) -> (u64, u64) {
        let b = self.e.ledger().balance(user, asset).unwrap();
        (b.available.get(), b.held.get())
    }

    fn sys(&self, account: SystemAccount, asset: AssetId) -> i128 {
        self.e.ledger().system(account, asset).unwrap()
    }
}

fn limit(user: UserId, side: Side, price: u64, lots: u64) -> Command {
    limit_tif(user, side, price, lots, TimeInForce::Gtc, false)
}

fn limit_tif(
    user: UserId,
    side: Side,
    price: u64,
    lots: u64,
    tif: TimeInForce,
    post_only: bool,
) -> Command {
    Command::PlaceOrder {
        user,
        market: BTCJPY,
        side,
        order: OrderType::Limit {
            price: PriceTicks::new(price),
            qty: QtyLots::new(lots),
            tif,
            post_only,
        },
        client_id: None,
        stp: None,
    }
}

fn order_id(events: &[Event]) -> OrderId {
    events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::OrderAccepted { order, .. } => Some(order),
            _ => None,
        })
        .expect("an OrderAccepted event")
}

fn trades(events: &[Event]) -> Vec<(u64, u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Trade {
                price,
                qty,
                maker_fee,
                taker_fee,
                ..
            } => Some((price.get(), qty.get(), maker_fee.get(), taker_fee.get())),
            _ => None,
        })
        .collect()
}

fn has(events: &[Event], pred: impl Fn(&EventKind) -> bool) -> bool {
    events.iter().any(|e| pred(&e.kind))
}

const P: u64 = 15_000_000; // JPY per BTC

#[test]
fn reference_data_rules() {
    let mut t = T::new();
    let scale = Scale::new(2).unwrap();
    let table: Vec<(Command, Result<(), Reject>)> = vec![
        (
            Command::AddAsset {
                symbol: "BTC".into(),
                scale,
            },
            Err(Reject::AssetExists),
        ),
        (
            Command::AddAsset {
                symbol: "eur".into(),
                scale,
            },
            Err(Reject::InvalidSpec(
                "asset symbol must be 2-12 characters of A-Z and 0-9",
            )),
        ),
        (
            Command::AddAsset {
                symbol: "EUR".into(),
                scale,
            },
            Ok(()),
        ),
        (
            Command::AddMarket {
                spec: genesis::btc_jpy(),
            },
            Err(Reject::MarketExists),
        ),
        (
            Command::AddMarket {
                spec: MarketSpec {
                    symbol: "BTCXXX".into(),
                    quote: AssetId(42),
                    ..genesis::btc_jpy()
                },
            },
            Err(Reject::UnknownAsset),
        ),
        (
            Command::AddMarket {
                spec: MarketSpec {
                    symbol: "BTCEUR".into(),
                    quote: AssetId(3),
                    tick: Amount::ZERO,
                    ..genesis::btc_jpy()
                },
            },
            Err(Reject::InvalidSpec("tick and lot must be positive")),
        ),
        (
            Command::AddMarket {
                spec: MarketSpec {
                    symbol: "BTCEUR".into(),
                    quote: AssetId(3),
                    fees: vec![FeeTier {
                        maker_ppm: 2_000,
                        taker_ppm: 1_000,
                    }],
                    ..genesis::btc_jpy()
                },
            },
            Err(Reject::InvalidSpec(
                "fee rates must satisfy maker <= taker < 100%",
            )),
        ),
        (
            Command::AddMarket {
                spec: MarketSpec {
                    symbol: "BTCEUR".into(),
                    quote: AssetId(3),
                    max_price: PriceTicks::new(u64::MAX),
                    max_qty: QtyLots::new(u64::MAX / 1_000),
                    ..genesis::btc_jpy()
                },
            },
            Err(Reject::InvalidSpec("max_price x max_qty too large")),
        ),
        (
            Command::AddMarket {
                spec: MarketSpec {
                    symbol: "BTCEUR".into(),
                    quote: AssetId(3),
                    ..genesis::btc_jpy()
                },
            },
            Ok(()),
        ),
        (
            Command::SetFeeTier {
                user: UserId(0),
                tier: 0,
            },
            Err(Reject::UnknownUser),
        ),
    ];
    for (cmd, want) in table {
        assert_eq!(t.run(cmd.clone()).map(|_| ()), want, "{cmd:?}");
    }
    let u = t.user_with(&[]);
    assert_eq!(
        t.run(Command::SetFeeTier { user: u, tier: 16 }).map(|_| ()),
        Err(Reject::UnknownFeeTier)
    );
    t.ok(Command::SetFeeTier { user: u, tier: 2 });
    assert_eq!(t.e.market_by_symbol("BTCEUR"), Some(MarketId(2)));
}

#[test]
fn deposits_withdrawals_adjustments() {
    let mut t = T::new();
    let u = t.user_with(&[]);
    let dep = |reference: &str, amount: u64| Command::Deposit {
        user: u,
        asset: BTC,
        amount: Amount::new(amount),
        reference: reference.into(),
    };
    let wd = |id: &str, amount: u64| Command::RequestWithdrawal {
        user: u,
        asset: BTC,
        amount: Amount::new(amount),
        id: id.into(),
    };
    // (command, outcome, BTC (available, held) after it)
    type Line = (Command, Result<(), Reject>, (u64, u64));
    let table: Vec<Line> = vec![
        (dep("tx1:0", 100_000), Ok(()), (100_000, 0)),
        (
            dep("tx1:0", 100_000),
            Err(Reject::DuplicateDeposit),
            (100_000, 0),
        ),
        (dep("tx1:1", 0), Err(Reject::ZeroAmount), (100_000, 0)),
        (dep("", 5), Err(Reject::InvalidReference), (100_000, 0)),
        (
            Command::Deposit {
                user: UserId(99),
                asset: BTC,
                amount: Amount::new(1),
                reference: "x".into(),
            },
            Err(Reject::UnknownUser),
            (100_000, 0),
        ),
        (
            Command::Deposit {
                user: u,
                asset: AssetId(9),
                amount: Amount::new(1),
                reference: "x".into(),
            },
            Err(Reject::UnknownAsset),
            (100_000, 0),
        ),
        (wd("w1", 30_000), Ok(()), (70_000, 30_000)),
        (
            wd("w1", 1),
            Err(Reject::DuplicateWithdrawal),
            (70_000, 30_000),
        ),
        (
            wd("w2", 70_001),
            Err(Reject::InsufficientFunds),
            (70_000, 30_000),
        ),
        (
            Command::HaltWithdrawals {
                asset: BTC,
                reason: "reconciliation shortfall".into(),
            },
            Ok(()),
            (70_000, 30_000),
        ),
        (
            Command::HaltWithdrawals {
                asset: BTC,
                reason: "again".into(),
            },
            Err(Reject::HaltStateUnchanged),
            (70_000, 30_000),
        ),
        (
            wd("w2", 10),
            Err(Reject::WithdrawalsHalted),
            (70_000, 30_000),
        ),
        // Settling what already left is allowed during a halt.
        (
            Command::SettleWithdrawal { id: "w1".into() },
            Ok(()),
            (70_000, 0),
        ),
        (
            Command::SettleWithdrawal { id: "w1".into() },
            Err(Reject::WithdrawalNotPending),
            (70_000, 0),
        ),
        (
            Command::ResumeWithdrawals { asset: BTC },
            Ok(()),
            (70_000, 0),
        ),
        (wd("w2", 20_000), Ok(()), (50_000, 20_000)),
        (
            Command::CancelWithdrawal { id: "w2".into() },
            Ok(()),
            (70_000, 0),
        ),
        (
            Command::CancelWithdrawal { id: "nope".into() },
            Err(Reject::UnknownWithdrawal),
            (70_000, 0),
        ),
        (
            Command::Adjust {
                user: u,
                asset: BTC,
                delta: AmountDelta::credit(Amount::new(5)),
                reason: "".into(),
            },
            Err(Reject::InvalidReason),
            (70_000, 0),
        ),
        (
            Command::Adjust {
                user: u,
                asset: BTC,
                delta: AmountDelta::debit(Amount::new(70_001)),
                reason: "chargeback".into(),
            },
            Err(Reject::InsufficientFunds),
            (70_000, 0),
        ),
        (
            Command::Adjust {
                user: u,
                asset: BTC,
                delta: AmountDelta::debit(Amount::new(1_000)),
                reason: "chargeback".into(),
            },
            Ok(()),
            (69_000, 0),
        ),
    ];
    for (cmd, want, balance) in table {
        assert_eq!(t.run(cmd.clone()).map(|_| ()), want, "{cmd:?}");
        assert_eq!(t.bal(u, BTC), balance, "balance after {cmd:?}");
    }
    // The world gave 100,000 and took 30,000 back: custody is -70,000.
    assert_eq!(t.sys(SystemAccount::Custody, BTC), -70_000);
    assert_eq!(t.sys(SystemAccount::Adjustments, BTC), 1_000);
    assert_eq!(
        t.e.withdrawal("w1").map(|w| w.state),
        Some(WithdrawalState::Settled)
    );
}

#[test]
fn a_trade_settles_to_the_unit() {
    let mut t = T::new();
    let buyer = t.user_with(&[(JPY, 10_000)]);
    let seller = t.user_with(&[(BTC, 100_000)]);
    // Buy 10 lots (0.0001 BTC) at 15,000,000: notional 1,500 JPY, taker fee 1.5 → 2.
    let ev = t.ok(limit(buyer, Side::Buy, P, 10));
    assert!(has(&ev, |k| matches!(k, EventKind::OrderRested { .. })));
    assert_eq!(t.bal(buyer, JPY), (10_000 - 1_502, 1_502));
    // The seller takes it: the buyer is the maker (fee 1.5 → 2), the seller pays 2.
    let ev = t.ok(limit(seller, Side::Sell, P, 10));
    assert_eq!(trades(&ev), vec![(P, 10, 2, 2)]);
    assert_eq!(t.bal(buyer, JPY), (10_000 - 1_502, 0));
    assert_eq!(t.bal(buyer, BTC), (10_000, 0));
    assert_eq!(t.bal(seller, BTC), (90_000, 0));
    assert_eq!(t.bal(seller, JPY), (1_498, 0));
    assert_eq!(t.sys(SystemAccount::FeeIncome, JPY), 4);
    assert_eq!(t.sys(SystemAccount::Rounding, JPY), 0);
    assert_eq!(t.e.open_orders(buyer), Some(0));
    assert_eq!(t.e.last_price(BTCJPY), Some(PriceTicks::new(P)));
    // One BalanceChanged per touched account, after the trade.
    let changes = ev
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BalanceChanged { .. }))
        .count();
    assert_eq!(changes, 4);
}

#[test]
fn taker_buying_below_its_limit_gets_the_excess_back() {
    let mut t = T::new();
    let buyer = t.user_with(&[(JPY, 1_000_000)]);
    let seller = t.user_with(&[(BTC, 100_000)]);
    t.ok(limit(seller, Side::Sell, P, 10));
    // Limit 16,000,000 but the ask is 15,000,000: pays 1,500 + 2, not 1,600 + 2.
    let ev = t.ok(limit(buyer, Side::Buy, 16_000_000, 10));
    assert_eq!(trades(&ev), vec![(P, 10, 2, 2)]);
    assert_eq!(t.bal(buyer, JPY), (1_000_000 - 1_502, 0));
}

#[test]
fn rounding_never_favours_the_customer() {
    let mut t = T::new();
    // A market whose lot is 1 satoshi: notionals are fractions of a yen.
    t.ok(Command::AddMarket {
        spec: MarketSpec {
            symbol: "BTCJPYS".into(),
            lot: Amount::new(1),
            min_notional: Amount::ZERO,
            fees: vec![FeeTier {
                maker_ppm: 0,
                taker_ppm: 0,
            }],
            ..genesis::btc_jpy()
        },
    });
    let m = MarketId(2);
    let buyer = t.user_with(&[(JPY, 1_000)]);
    let seller = t.user_with(&[(BTC, 1_000)]);
    let place = |user, side, lots| Command::PlaceOrder {
        user,
        market: m,
        side,
        order: OrderType::Limit {
            price: PriceTicks::new(15_000_001),
            qty: QtyLots::new(lots),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    };
    // 7 sats at 15,000,001 JPY/BTC = 1.05000007 JPY: the hold is 2.
    t.ok(place(buyer, Side::Buy, 7));
    assert_eq!(t.bal(buyer, JPY), (998, 2));
    // Filled one satoshi at a time: each fill is 0.15 JPY.
    for _ in 0..7 {
        t.ok(place(seller, Side::Sell, 1));
    }
    // The buyer paid ceil(1.05000007) = 2 in total, not 7 × ceil(0.15) = 7;
    // the seller received floor(1.05000007) = 1; the 1 left is the rounding account's.
    assert_eq!(t.bal(buyer, JPY), (998, 0));
    assert_eq!(t.bal(seller, JPY), (0, 0));
    // Seven separate sell orders each got floor(0.15) = 0.
    assert_eq!(t.sys(SystemAccount::Rounding, JPY), 2);
    assert_eq!(t.bal(buyer, BTC), (7, 0));
}

#[test]
fn order_rejections_table() {
    let mut t = T::with_limits(Limits {
        open_orders_per_user_max: 2,
        ..Limits::DEFAULT
    });
    let u = t.user_with(&[(JPY, 100_000), (BTC, 1_000_000)]);
    let other = t.user_with(&[(BTC, 1_000_000)]);
    t.ok(limit(other, Side::Sell, P, 5));
    let cid = ClientOrderId::parse("my-order-1").unwrap();
    let with_cid = |c: Command| match c {
        Command::PlaceOrder {
            user,
            market,
            side,
            order,
            stp,
            ..
        } => Command::PlaceOrder {
            user,
            market,
            side,
            order,
            client_id: Some(cid),
            stp,
        },
        other => other,
    };
    let table: Vec<(Command, Result<(), Reject>)> = vec![
        (limit(u, Side::Buy, 0, 1), Err(Reject::InvalidPrice)),
        (
            limit(u, Side::Buy, 10_000_000_001, 1),
            Err(Reject::InvalidPrice),
        ),
        (limit(u, Side::Buy, P, 0), Err(Reject::InvalidQuantity)),
        (
            limit(u, Side::Buy, P, 900_000_001),
            Err(Reject::QuantityAboveMaximum),
        ),
        // 1 lot at 9,000 JPY/BTC is 0.09 JPY, below the 100 JPY minimum.
        (
            limit(u, Side::Buy, 9_000, 1),
            Err(Reject::NotionalBelowMinimum),
        ),
        (
            limit(u, Side::Buy, 10_000_000_000, 900_000_000),
            Err(Reject::NotionalAboveMaximum),
        ),
        (
            limit(u, Side::Buy, P, 1_000),
            Err(Reject::InsufficientFunds),
        ),
        (
            limit_tif(u, Side::Buy, P, 1, TimeInForce::Gtc, true),
            Err(Reject::PostOnlyWouldTake),
        ),
        (
            limit_tif(u, Side::Buy, P - 1, 1, TimeInForce::Ioc, true),
            Err(Reject::InvalidTimeInForce),
        ),
        (with_cid(limit(u, Side::Buy, P - 10, 1)), Ok(())),
        (
            with_cid(limit(u, Side::Buy, P - 10, 1)),
            Err(Reject::DuplicateClientOrderId),
        ),
        (limit(u, Side::Buy, P - 10, 1), Ok(())),
        (
            limit(u, Side::Buy, P - 10, 1),
            Err(Reject::TooManyOpenOrders),
        ),
        // An IOC cannot rest, so the open-order limit does not apply to it.
        (
            limit_tif(u, Side::Buy, P, 1, TimeInForce::Ioc, false),
            Ok(()),
        ),
        (
            Command::PlaceOrder {
                user: u,
                market: MarketId(7),
                side: Side::Buy,
                order: OrderType::MarketBase {
                    qty: QtyLots::new(1),
                },
                client_id: None,
                stp: None,
            },
            Err(Reject::UnknownMarket),
        ),
        (limit(UserId(77), Side::Buy, P, 1), Err(Reject::UnknownUser)),
        (
            Command::CancelOrder {
                user: u,
                market: BTCJPY,
                order: OrderRef::Id(OrderId(1)),
            },
            Err(Reject::UnknownOrder),
        ),
    ];
    for (cmd, want) in table {
        assert_eq!(t.run(cmd.clone()).map(|_| ()), want, "{cmd:?}");
    }
}

#[test]
fn time_in_force_and_market_orders() {
    let mut t = T::new();
    let maker = t.user_with(&[(BTC, 1_000_000), (JPY, 10_000_000)]);
    let u = t.user_with(&[(JPY, 10_000_000), (BTC, 1_000_000)]);
    t.ok(limit(maker, Side::Sell, P, 5));
    t.ok(limit(maker, Side::Sell, P + 100, 5));
    // FOK for 11 lots cannot fill: accepted, then expired; nothing traded.
    let ev = t.ok(limit_tif(
        u,
        Side::Buy,
        P + 100,
        11,
        TimeInForce::Fok,
        false,
    ));
    assert!(trades(&ev).is_empty());
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderExpired {
            reason: ExpireReason::FokUnfillable,
            ..
        }
    )));
    // IOC for 7 at P: fills 5, the rest expires.
    // 5 lots at P is 750 JPY; 0.1 % of it is 0.75, charged as 1 to each side.
    let ev = t.ok(limit_tif(u, Side::Buy, P, 7, TimeInForce::Ioc, false));
    assert_eq!(trades(&ev), vec![(P, 5, 1, 1)]);
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderExpired {
            reason: ExpireReason::NoLiquidity,
            remaining,
            ..
        } if remaining.get() == 2
    )));
    // A market buy for 3 lots at the remaining ask.
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Buy,
        order: OrderType::MarketBase {
            qty: QtyLots::new(3),
        },
        client_id: None,
        stp: None,
    });
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(trades(&ev)[0].1, 3);
    // A market buy by quote amount: spend at most 1,000 JPY at P+100 → 0.00006 BTC
    // (6 lots cost 900.006 JPY), only 2 lots are left.
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Buy,
        order: OrderType::MarketQuote {
            quote: Amount::new(1_000),
        },
        client_id: None,
        stp: None,
    });
    assert_eq!(trades(&ev).iter().map(|t| t.1).sum::<u64>(), 2);
    // The book's ask side is empty now: a market buy expires with nothing.
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Buy,
        order: OrderType::MarketBase {
            qty: QtyLots::new(3),
        },
        client_id: None,
        stp: None,
    });
    assert!(trades(&ev).is_empty());
    assert!(has(&ev, |k| matches!(k, EventKind::OrderExpired { .. })));
    // Collar: bids at P and far below; a market sell stops 5 % below the best bid.
    t.ok(limit(maker, Side::Buy, P, 1));
    t.ok(limit(maker, Side::Buy, P / 2, 2));
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Sell,
        order: OrderType::MarketBase {
            qty: QtyLots::new(2),
        },
        client_id: None,
        stp: None,
    });
    assert_eq!(trades(&ev), vec![(P, 1, 1, 1)]);
    // A market sell by quote: receive up to 2,000 JPY selling into P/2 (1 lot = 75 JPY):
    // only 2 lots are bid, so it sells 2 and expires.
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Sell,
        order: OrderType::MarketQuote {
            quote: Amount::new(2_000),
        },
        client_id: None,
        stp: Some(Stp::None),
    });
    assert_eq!(trades(&ev).iter().map(|t| t.1).sum::<u64>(), 2);
}

#[test]
fn self_trade_prevention_in_the_engine() {
    let mut t = T::new();
    let u = t.user_with(&[(BTC, 1_000_000), (JPY, 10_000_000)]);
    let v = t.user_with(&[(BTC, 1_000_000)]);
    let own = order_id(&t.ok(limit(u, Side::Sell, P, 5)));
    t.ok(limit(v, Side::Sell, P, 5));
    // Default mode (expire maker): u's own ask is cancelled, v's fills.
    let ev = t.ok(limit(u, Side::Buy, P, 5));
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderCancelled { order, reason: CancelReason::SelfTradePrevention, .. } if *order == own
    )));
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(t.e.open_orders(u), Some(0));
    // Expire taker: the incoming order expires, the resting one stays.
    t.ok(limit(u, Side::Sell, P, 5));
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Buy,
        order: OrderType::Limit {
            price: PriceTicks::new(P),
            qty: QtyLots::new(5),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: Some(Stp::ExpireTaker),
    });
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderExpired {
            reason: ExpireReason::SelfTradePrevention,
            ..
        }
    )));
    assert_eq!(t.e.open_orders(u), Some(1));
}

#[test]
fn cancels_halts_and_amends() {
    let mut t = T::new();
    let u = t.user_with(&[(JPY, 1_000_000), (BTC, 1_000_000)]);
    let v = t.user_with(&[(JPY, 1_000_000), (BTC, 1_000_000)]);
    let cid = ClientOrderId::parse("c-1").unwrap();
    let ev = t.ok(Command::PlaceOrder {
        user: u,
        market: BTCJPY,
        side: Side::Buy,
        order: OrderType::Limit {
            price: PriceTicks::new(P - 100),
            qty: QtyLots::new(10),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: Some(cid),
        stp: None,
    });
    let a = order_id(&ev);
    let b = order_id(&t.ok(limit(v, Side::Buy, P - 100, 10)));
    // Someone else's order is unknown to you.
    assert_eq!(
        t.run(Command::CancelOrder {
            user: v,
            market: BTCJPY,
            order: OrderRef::Id(a),
        })
        .map(|_| ()),
        Err(Reject::UnknownOrder)
    );
    // Halt: new orders and amends refused, cancels accepted, balances visible.
    t.ok(Command::HaltMarket {
        market: BTCJPY,
        reason: "incident 42".into(),
    });
    assert_eq!(
        t.run(limit(v, Side::Sell, P, 1)).map(|_| ()),
        Err(Reject::MarketHalted)
    );
    assert_eq!(
        t.run(Command::AmendOrder {
            user: u,
            market: BTCJPY,
            order: OrderRef::Id(a),
            price: None,
            remaining: Some(QtyLots::new(5)),
        })
        .map(|_| ()),
        Err(Reject::MarketHalted)
    );
    assert_eq!(t.e.market_halted(BTCJPY), Some("incident 42"));
    // The other market is not halted.
    t.ok(Command::PlaceOrder {
        user: v,
        market: BTCUSD,
        side: Side::Sell,
        order: OrderType::Limit {
            price: PriceTicks::new(10_000_000),
            qty: QtyLots::new(10),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    });
    t.ok(Command::ResumeMarket { market: BTCJPY });
    // Amend a down to 4 lots: it keeps priority ahead of b.
    let ev = t.ok(Command::AmendOrder {
        user: u,
        market: BTCJPY,
        order: OrderRef::Client(cid),
        price: None,
        remaining: Some(QtyLots::new(4)),
    });
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderAmended {
            kept_priority: true,
            ..
        }
    )));
    let ev = t.ok(limit(v, Side::Sell, P - 100, 4));
    assert!(ev
        .iter()
        .any(|e| matches!(e.kind, EventKind::Trade { maker_order, .. } if maker_order == a)));
    // b now; move b's price up: it loses priority but there is nobody else; then a new
    // order at the same price queues behind it.
    t.ok(limit(u, Side::Buy, P - 50, 1));
    let ev = t.ok(Command::AmendOrder {
        user: v,
        market: BTCJPY,
        order: OrderRef::Id(b),
        price: Some(PriceTicks::new(P - 50)),
        remaining: None,
    });
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderAmended {
            kept_priority: false,
            ..
        }
    )));
    let ev = t.ok(limit(v, Side::Sell, P - 50, 1));
    assert!(
        !ev.iter()
            .any(|e| matches!(e.kind, EventKind::Trade { maker_order, .. } if maker_order == b)),
        "b moved behind u's order"
    );
    // An amend that needs more funds than available is refused.
    let poor = t.user_with(&[(JPY, 2_000)]);
    let p = order_id(&t.ok(limit(poor, Side::Buy, P - 1_000, 1)));
    assert_eq!(
        t.run(Command::AmendOrder {
            user: poor,
            market: BTCJPY,
            order: OrderRef::Id(p),
            price: None,
            remaining: Some(QtyLots::new(100)),
        })
        .map(|_| ()),
        Err(Reject::InsufficientFunds)
    );
    // Cancel by client id (a is gone, fully filled), cancel-all.
    assert_eq!(
        t.run(Command::CancelOrder {
            user: u,
            market: BTCJPY,
            order: OrderRef::Client(cid),
        })
        .map(|_| ()),
        Err(Reject::UnknownOrder)
    );
    t.ok(limit(u, Side::Buy, P - 2_000, 1));
    t.ok(limit(u, Side::Sell, P + 2_000, 1));
    let ev = t.ok(Command::CancelAll {
        user: u,
        market: BTCJPY,
    });
    assert!(has(&ev, |k| matches!(
        k,
        EventKind::OrderCancelled {
            reason: CancelReason::CancelAll,
            ..
        }
    )));
    assert_eq!(t.e.open_orders(u), Some(0));
    assert_eq!(t.bal(u, JPY).1, 0);
    assert_eq!(t.bal(u, BTC).1, 0);
}

#[test]
fn post_only_amend_cannot_cross() {
    let mut t = T::new();
    let u = t.user_with(&[(JPY, 10_000_000)]);
    let v = t.user_with(&[(BTC, 1_000_000)]);
    t.ok(limit(v, Side::Sell, P, 5));
    let o = order_id(&t.ok(limit_tif(u, Side::Buy, P - 10, 5, TimeInForce::Gtc, true)));
    assert_eq!(
        t.run(Command::AmendOrder {
            user: u,
            market: BTCJPY,
            order: OrderRef::Id(o),
            price: Some(PriceTicks::new(P)),
            remaining: None,
        })
        .map(|_| ()),
        Err(Reject::PostOnlyWouldTake)
    );
}

#[test]
fn limits_on_books_are_typed_rejections() {
    let mut t = T::with_limits(Limits {
        book: kura_book::Limits {
            orders_max: 2,
            levels_max: 10,
            orders_per_level_max: 10,
        },
        ..Limits::DEFAULT
    });
    let u = t.user_with(&[(JPY, 10_000_000)]);
    t.ok(limit(u, Side::Buy, P - 1, 1));
    t.ok(limit(u, Side::Buy, P - 2, 1));
    assert_eq!(
        t.run(limit(u, Side::Buy, P - 3, 1)).map(|_| ()),
        Err(Reject::BookFull)
    );
}

#[test]
fn users_limit() {
    let mut t = T::with_limits(Limits {
        users_max: 1,
        ..Limits::DEFAULT
    });
    t.ok(Command::CreateUser);
    assert_eq!(
        t.run(Command::CreateUser).map(|_| ()),
        Err(Reject::TooManyUsers)
    );
}

#[test]
fn usd_market_uses_cents() {
    let mut t = T::new();
    let buyer = t.user_with(&[(USD, 1_000_000)]);
    let seller = t.user_with(&[(BTC, 1_000_000)]);
    // 0.001 BTC (100 lots) at 100,000.00 USD = 100.00 USD = 10,000 cents; fee 10 cents.
    let place = |user, side| Command::PlaceOrder {
        user,
        market: BTCUSD,
        side,
        order: OrderType::Limit {
            price: PriceTicks::new(10_000_000),
            qty: QtyLots::new(100),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    };
    t.ok(place(buyer, Side::Buy));
    assert_eq!(t.bal(buyer, USD), (1_000_000 - 10_010, 10_010));
    let ev = t.ok(place(seller, Side::Sell));
    assert_eq!(trades(&ev), vec![(10_000_000, 100, 10, 10)]);
    assert_eq!(t.bal(seller, USD), (9_990, 0));
    assert_eq!(t.bal(buyer, BTC), (100_000, 0));
}

#[test]
fn book_update_id_counts_effective_commands_per_market() {
    let mut t = T::new();
    let buyer = t.user_with(&[(JPY, 10_000_000)]);
    assert_eq!(t.e.market_update_id(BTCJPY), Some(0));
    t.ok(limit(buyer, Side::Buy, 1_000_000, 10));
    t.ok(limit(buyer, Side::Buy, 1_000_001, 10));
    assert_eq!(t.e.market_update_id(BTCJPY), Some(2));
    // A rejected command does not count; another market's commands do not either.
    let refused = t.run(limit(buyer, Side::Buy, 1_000_000, 10_000_000));
    assert_eq!(refused, Err(Reject::InsufficientFunds));
    assert_eq!(t.e.market_update_id(BTCJPY), Some(2));
    assert_eq!(t.e.market_update_id(BTCUSD), Some(0));
    t.ok(Command::CancelAll {
        user: buyer,
        market: BTCJPY,
    });
    assert_eq!(t.e.market_update_id(BTCJPY), Some(3));
    assert_eq!(t.e.market_update_id(MarketId(9)), None);
    // It is state: a snapshot carries it.
    let mut bytes = Vec::new();
    t.e.encode_state(&mut bytes);
    let back = Engine::decode_state(&bytes, Limits::DEFAULT).expect("decode");
    assert_eq!(back.market_update_id(BTCJPY), Some(3));
}

fn key_id(c: char) -> String {
    std::iter::repeat_n(c, crate::identity::API_KEY_ID_LEN).collect()
}

fn new_key(user: UserId, key: &str, withdraw: bool, ip_allow: Vec<IpRange>) -> Command {
    Command::CreateApiKey {
        user,
        key: key.into(),
        scheme: KeyScheme::Hmac,
        permissions: KeyPermissions {
            read: true,
            trade: true,
            withdraw,
        },
        ip_allow,
        label: "bot".into(),
    }
}

#[test]
fn names_and_api_keys_are_journaled_state() {
    let mut t = T::new();
    let ev = t.ok(Command::RegisterUser { name: "ann".into() });
    let ann = match ev[0].kind {
        EventKind::UserCreated { user } => user,
        ref other => panic!("unexpected {other:?}"),
    };
    assert!(
        matches!(&ev[1].kind, EventKind::UserNamed { user, name } if *user == ann && name == "ann")
    );
    assert_eq!(t.e.user_by_name("ann"), Some(ann));
    assert_eq!(t.e.user_name(ann), Some("ann"));
    for (name, why) in [
        ("ann", Reject::NameTaken),
        ("", Reject::InvalidName),
        ("has space", Reject::InvalidName),
        (&*"x".repeat(65), Reject::InvalidName),
    ] {
        assert_eq!(t.run(Command::RegisterUser { name: name.into() }), Err(why));
    }

    let k1 = key_id('a');
    let ev = t.ok(new_key(ann, &k1, false, vec![]));
    assert!(matches!(&ev[0].kind, EventKind::ApiKeyCreated { number: 1, key, .. } if *key == k1));
    let lan = IpRange {
        addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0],
        prefix: 104,
    };
    for (cmd, why) in [
        (new_key(ann, &k1, false, vec![]), Reject::ApiKeyExists),
        (new_key(ann, "short", false, vec![]), Reject::InvalidApiKey),
        (
            new_key(ann, &key_id('-'), false, vec![]),
            Reject::InvalidApiKey,
        ),
        (
            new_key(ann, &key_id('b'), true, vec![]),
            Reject::WithdrawNeedsIpAllowList,
        ),
        (
            new_key(UserId(99), &key_id('b'), false, vec![]),
            Reject::UnknownUser,
        ),
        (
            new_key(
                ann,
                &key_id('b'),
                false,
                vec![IpRange { prefix: 129, ..lan }],
            ),
            Reject::InvalidApiKey,
        ),
    ] {
        assert_eq!(t.run(cmd), Err(why));
    }
    let ev = t.ok(new_key(ann, &key_id('b'), true, vec![lan]));
    assert!(matches!(
        &ev[0].kind,
        EventKind::ApiKeyCreated { number: 2, .. }
    ));
    let k2 = t.e.api_key(&key_id('b')).expect("key b").clone();
    assert_eq!((k2.number, k2.user, k2.revoked), (2, ann, false));
    assert!(k2.permissions.withdraw);

    let revoke = Command::RevokeApiKey { key: k1.clone() };
    t.ok(revoke.clone());
    assert!(t.e.api_key(&k1).expect("kept").revoked);
    assert_eq!(t.run(revoke), Err(Reject::ApiKeyRevoked));
    assert_eq!(
        t.run(Command::RevokeApiKey { key: key_id('z') }),
        Err(Reject::UnknownApiKey)
    );

    // Snapshot round trip keeps names, keys, revocations and the next key number.
    let mut bytes = Vec::new();
    t.e.encode_state(&mut bytes);
    let back = Engine::decode_state(&bytes, Limits::DEFAULT).expect("decode");
    assert_eq!(back.state_hash(), t.e.state_hash());
    assert_eq!(back.user_by_name("ann"), Some(ann));
    assert_eq!(back.api_key(&key_id('b')), Some(&k2));
    assert_eq!(back.api_keys().count(), 2);
}

#[test]
fn live_keys_per_customer_are_limited() {
    let mut t = T::with_limits(Limits {
        api_keys_per_user_max: 2,
        ..Limits::DEFAULT
    });
    let ann = t.user_with(&[]);
    t.ok(new_key(ann, &key_id('a'), false, vec![]));
    t.ok(new_key(ann, &key_id('b'), false, vec![]));
    assert_eq!(
        t.run(new_key(ann, &key_id('c'), false, vec![])),
        Err(Reject::TooManyApiKeys)
    );
    // A revoked key no longer counts.
    t.ok(Command::RevokeApiKey { key: key_id('a') });
    t.ok(new_key(ann, &key_id('c'), false, vec![]));
}

// ---- custody: wallets, deposit addresses, reversals, reconciliation -----------------

fn balance(t: &T, user: UserId, asset: AssetId) -> (u64, u64) {
    let b = t.e.ledger().balance(user, asset).expect("balance");
    (b.available.get(), b.held.get())
}

#[test]
fn wallet_registry_and_deposit_addresses() {
    let mut t = T::new();
    let (a, b) = (t.user_with(&[]), t.user_with(&[]));
    let assign = |user| Command::AssignDepositAddress { user, asset: BTC };
    assert_eq!(t.run(assign(a)), Err(Reject::NoDepositWallet));
    let register = |role, d: &str| Command::RegisterWallet {
        asset: BTC,
        role,
        descriptor: d.into(),
    };
    assert_eq!(
        t.run(register(WalletRole::Deposit, "")),
        Err(Reject::InvalidDescriptor)
    );
    assert_eq!(
        t.run(register(WalletRole::Deposit, "wpkh(a b)")),
        Err(Reject::InvalidDescriptor)
    );
    t.ok(register(WalletRole::Cold, "wsh(cold)"));
    assert_eq!(t.run(assign(a)), Err(Reject::NoDepositWallet));
    t.ok(register(WalletRole::Deposit, "wpkh(d1)"));
    assert_eq!(
        t.run(register(WalletRole::Hot, "wpkh(d1)")),
        Err(Reject::WalletExists)
    );
    t.ok(assign(a));
    t.ok(assign(b));
    assert_eq!(t.run(assign(a)), Err(Reject::DepositAddressAssigned));
    assert_eq!(t.e.deposit_address(a, BTC), Some((1, 0)));
    assert_eq!(t.e.deposit_address(b, BTC), Some((1, 1)));
    // A newer deposit wallet takes over for new customers; old addresses stay.
    t.ok(register(WalletRole::Deposit, "wpkh(d2)"));
    let c = t.user_with(&[]);
    t.ok(assign(c));
    assert_eq!(t.e.deposit_address(c, BTC), Some((2, 0)));
    assert_eq!(t.e.deposit_address(a, BTC), Some((1, 0)));
    assert_eq!(t.e.wallets().len(), 3);
    // The registry and the assignments survive a snapshot.
    let mut bytes = Vec::new();
    t.e.encode_state(&mut bytes);
    let back = Engine::decode_state(&bytes, Limits::DEFAULT).expect("decode");
    assert_eq!(back.state_hash(), t.e.state_hash());
    assert_eq!(back.deposit_address(c, BTC), Some((2, 0)));
}

#[test]
fn reversed_deposit_takes_back_what_is_there_and_records_the_rest() {
    let mut t = T::new();
    let u = t.user_with(&[]);
    let dep = |reference: &str, amount: u64| Command::Deposit {
        user: u,
        asset: BTC,
        amount: Amount::new(amount),
        reference: reference.into(),
    };
    let reverse = |reference: &str| Command::ReverseDeposit {
        reference: reference.into(),
        reason: "reorg removed the block".into(),
    };
    t.ok(dep("t1:0", 1_000));
    // Fully there: taken back, no deficit.
    t.ok(reverse("t1:0"));
    assert_eq!(balance(&t, u, BTC), (0, 0));
    assert_eq!(t.e.deficit(u, BTC), Amount::ZERO);
    assert!(!t.e.deposit_seen("t1:0"));
    assert_eq!(t.run(reverse("t1:0")), Err(Reject::DepositReversed));
    assert_eq!(t.run(reverse("nope:0")), Err(Reject::UnknownDeposit));
    // Confirmed again on the new branch: credited again, once.
    t.ok(dep("t1:0", 1_000));
    assert_eq!(t.run(dep("t1:0", 1_000)), Err(Reject::DuplicateDeposit));
    assert_eq!(balance(&t, u, BTC), (1_000, 0));
    // Partly spent (a pending withdrawal holds 700): 300 taken, 700 owed, frozen.
    t.ok(Command::RequestWithdrawal {
        user: u,
        asset: BTC,
        amount: Amount::new(700),
        id: "w1".into(),
    });
    let ev = t.ok(reverse("t1:0"));
    assert!(ev.iter().any(|e| matches!(
        e.kind,
        EventKind::DepositReversed { deficit, .. } if deficit == Amount::new(700)
    )));
    assert_eq!(balance(&t, u, BTC), (0, 700));
    assert_eq!(t.e.deficit(u, BTC), Amount::new(700));
    assert!(t.e.withdrawals_frozen(u));
    assert_eq!(
        t.e.ledger().system(SystemAccount::Receivable, BTC),
        Ok(-700)
    );
    t.ok(dep("t2:0", 100));
    assert_eq!(
        t.run(Command::RequestWithdrawal {
            user: u,
            asset: BTC,
            amount: Amount::new(1),
            id: "w2".into(),
        }),
        Err(Reject::WithdrawalsFrozen)
    );
    // The 100 credited went to the deficit.
    assert_eq!(balance(&t, u, BTC), (0, 700));
    assert_eq!(t.e.deficit(u, BTC), Amount::new(600));
    // A new deposit larger than the deficit repays it and unfreezes.
    t.ok(dep("t3:0", 1_000));
    assert_eq!(balance(&t, u, BTC), (400, 700));
    assert_eq!(t.e.deficit(u, BTC), Amount::ZERO);
    assert!(!t.e.withdrawals_frozen(u));
    assert_eq!(t.e.ledger().system(SystemAccount::Receivable, BTC), Ok(0));
    // A reversed reference credited again must carry the same facts.
    t.ok(reverse("t2:0"));
    assert_eq!(
        t.run(Command::Deposit {
            user: u,
            asset: BTC,
            amount: Amount::new(101),
            reference: "t2:0".into(),
        }),
        Err(Reject::DuplicateDeposit)
    );
}

#[test]
fn reconciliation_halts_withdrawals_on_a_shortfall() {
    let mut t = T::new();
    let u = t.user_with(&[(BTC, 5_000)]);
    let rec = |height: u32, holdings: u64| Command::Reconcile {
        asset: BTC,
        height,
        block_hash: [height as u8; 32],
        holdings: Amount::new(holdings),
    };
    // Enough coins: recorded, nothing halted.
    let ev = t.ok(rec(10, 5_000));
    assert!(ev.iter().any(|e| matches!(
        e.kind,
        EventKind::Reconciled {
            liabilities: 5_000,
            ..
        }
    )));
    assert_eq!(t.e.withdrawals_halted(BTC), None);
    assert_eq!(t.run(rec(9, 5_000)), Err(Reject::StaleReconciliation));
    // One satoshi short: withdrawals of BTC halt in the same command, with the reason.
    let ev = t.ok(rec(11, 4_999));
    assert!(ev
        .iter()
        .any(|e| matches!(e.kind, EventKind::WithdrawalsHalted { .. })));
    let why = t.e.withdrawals_halted(BTC).expect("halted");
    assert!(why.contains("4999") && why.contains("5000"), "{why}");
    assert_eq!(
        t.run(Command::RequestWithdrawal {
            user: u,
            asset: BTC,
            amount: Amount::new(1),
            id: "w".into(),
        }),
        Err(Reject::WithdrawalsHalted)
    );
    // Still short: recorded again, no second halt event; only an operator resumes.
    let ev = t.ok(rec(12, 4_999));
    assert!(!ev
        .iter()
        .any(|e| matches!(e.kind, EventKind::WithdrawalsHalted { .. })));
    assert_eq!(t.e.last_reconciliation(BTC).map(|r| r.height), Some(12));
    t.ok(rec(13, 6_000));
    assert!(t.e.withdrawals_halted(BTC).is_some());
    t.ok(Command::ResumeWithdrawals { asset: BTC });
    // Fee income counts as the exchange's, not a customer liability: a trade's fees
    // leave customer totals, so holdings equal to customer balances are enough.
    assert_eq!(
        u128::from(balance(&t, u, BTC).0),
        t.e.ledger().customer_total(BTC).expect("asset")
    );
}
