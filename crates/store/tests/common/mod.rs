//! A real engine driven by commands, with every command's events projected into a store.

#![allow(dead_code)]

use kura_engine::genesis::{self, BTC, JPY};
use kura_engine::{Command, Ctx, Engine, Event, EventKind, Limits, OrderType, Reject, Side};
use kura_engine::{OrderRef, TimeInForce};
use kura_store::{OrderStatus, Store};
use kura_units::{Amount, MarketId, OrderId, PriceTicks, QtyLots, UserId};
use std::collections::BTreeMap;

pub const BTCJPY: MarketId = MarketId(0);
pub const T0: u64 = 1_700_000_000_000;

/// What the events say about one order, independently of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub executed: u64,
    pub cum_quote: u64,
    pub orig_qty: u64,
    pub status: Option<OrderStatus>,
}

pub struct Harness {
    pub engine: Engine,
    pub store: Store,
    pub seq: u64,
    pub time_ms: u64,
    /// Every command's context and events (rejections with none).
    pub log: Vec<(Ctx, Vec<Event>)>,
}

impl Harness {
    pub fn new(store: Store) -> Harness {
        let mut h = Harness {
            engine: Engine::new(Limits::DEFAULT),
            store,
            seq: 0,
            time_ms: T0,
            log: Vec::new(),
        };
        for c in genesis::genesis() {
            h.ok(c);
        }
        h
    }

    pub fn in_memory() -> Harness {
        Harness::new(Store::open_in_memory().expect("open store"))
    }

    /// Run one command through the engine (at the current time), project its events.
    pub fn run(&mut self, cmd: Command) -> Result<Vec<Event>, Reject> {
        self.seq += 1;
        let ctx = Ctx {
            seq: self.seq,
            timestamp_ms: self.time_ms,
        };
        let r = self.engine.apply_owned(&cmd, ctx);
        let events = r.clone().unwrap_or_default();
        assert_eq!(self.store.apply(ctx, &events).expect("project"), 1);
        assert_eq!(self.store.last_seq(), Some(self.seq));
        self.log.push((ctx, events));
        r
    }

    pub fn ok(&mut self, cmd: Command) -> Vec<Event> {
        match self.run(cmd.clone()) {
            Ok(e) => e,
            Err(r) => panic!("{cmd:?} rejected: {r:?}"),
        }
    }

    /// A new customer with 10 BTC and 10^10 JPY.
    pub fn funded_user(&mut self) -> UserId {
        let ev = self.ok(Command::CreateUser);
        let user = ev
            .iter()
            .find_map(|e| match e.kind {
                EventKind::UserCreated { user } => Some(user),
                _ => None,
            })
            .expect("user created");
        for (asset, amount) in [(BTC, 1_000_000_000), (JPY, 10_000_000_000)] {
            self.ok(Command::Deposit {
                user,
                asset,
                amount: Amount::new(amount),
                reference: format!("dep-{}-{}", user.0, asset.0),
            });
        }
        user
    }

    pub fn limit(
        &mut self,
        user: UserId,
        side: Side,
        price: u64,
        qty: u64,
        tif: TimeInForce,
    ) -> Result<Vec<Event>, Reject> {
        self.run(Command::PlaceOrder {
            user,
            market: BTCJPY,
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

    pub fn cancel(&mut self, user: UserId, order: OrderId) -> Result<Vec<Event>, Reject> {
        self.run(Command::CancelOrder {
            user,
            market: BTCJPY,
            order: OrderRef::Id(order),
        })
    }

    /// Per order, what the events of the whole log say.
    pub fn expected(&self) -> BTreeMap<u64, Expected> {
        let mut m: BTreeMap<u64, Expected> = BTreeMap::new();
        for (_, events) in &self.log {
            for e in events {
                match &e.kind {
                    EventKind::OrderAccepted { order, qty, .. } => {
                        let x = m.entry(order.0).or_default();
                        x.orig_qty = qty.get();
                        x.status = Some(OrderStatus::New);
                    }
                    EventKind::Trade {
                        qty,
                        quote_qty,
                        maker_order,
                        taker_order,
                        ..
                    } => {
                        for o in [maker_order, taker_order] {
                            let x = m.entry(o.0).or_default();
                            x.executed += qty.get();
                            x.cum_quote += quote_qty.get();
                            x.status = Some(OrderStatus::PartiallyFilled);
                        }
                    }
                    EventKind::OrderRested { order, .. } => {
                        let x = m.entry(order.0).or_default();
                        x.status = Some(if x.executed == 0 {
                            OrderStatus::New
                        } else {
                            OrderStatus::PartiallyFilled
                        });
                    }
                    EventKind::OrderFilled { order, .. } => {
                        m.entry(order.0).or_default().status = Some(OrderStatus::Filled);
                    }
                    EventKind::OrderCancelled { order, reason, .. } => {
                        m.entry(order.0).or_default().status = Some(match reason {
                            kura_engine::CancelReason::SelfTradePrevention => {
                                OrderStatus::ExpiredInMatch
                            }
                            _ => OrderStatus::Canceled,
                        });
                    }
                    EventKind::OrderExpired { order, reason, .. } => {
                        m.entry(order.0).or_default().status = Some(match reason {
                            kura_engine::ExpireReason::SelfTradePrevention => {
                                OrderStatus::ExpiredInMatch
                            }
                            _ => OrderStatus::Expired,
                        });
                    }
                    EventKind::OrderAmended {
                        order, remaining, ..
                    } => {
                        let x = m.entry(order.0).or_default();
                        x.orig_qty = x.executed + remaining.get();
                    }
                    _ => {}
                }
            }
        }
        m
    }

    /// The store agrees with the events and with the engine's books.
    pub fn check(&self) {
        for (id, x) in self.expected() {
            let row = self
                .store
                .order(BTCJPY, OrderId(id))
                .expect("query")
                .unwrap_or_else(|| panic!("order {id} missing"));
            assert_eq!(row.executed_qty.get(), x.executed, "order {id} executed");
            assert_eq!(row.cum_quote.get(), x.cum_quote, "order {id} cum quote");
            assert_eq!(row.orig_qty.get(), x.orig_qty, "order {id} orig qty");
            assert_eq!(Some(row.status), x.status, "order {id} status");
            // The engine's book: an order rests iff the store says it is open, with
            // remaining = orig − executed.
            let resting = self.engine.book(BTCJPY).expect("market").order(OrderId(id));
            match resting {
                Some(r) => {
                    assert!(
                        row.status.is_open(),
                        "order {id} rests but is {:?}",
                        row.status
                    );
                    assert_eq!(r.remaining.get(), x.orig_qty - x.executed, "order {id}");
                    assert_eq!(r.price, row.price, "order {id} price");
                }
                None => assert!(!row.status.is_open(), "order {id} is open in the store"),
            }
        }
    }
}
