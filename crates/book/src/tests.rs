use super::*;
use proptest::prelude::*;

fn taker(id: u64, owner: u32, side: Side, price: u64, qty: u64) -> Taker<u64> {
    Taker {
        id: OrderId(id),
        owner: UserId(owner),
        side,
        limit: PriceTicks::new(price),
        qty: QtyLots::new(qty),
        quote_budget: None,
        tif: TimeInForce::Gtc,
        post_only: false,
        stp: Stp::None,
        payload: id * 10,
    }
}

fn fills(events: &[BookEvent<u64>]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Fill {
                maker_id,
                price,
                qty,
                ..
            } => Some((maker_id.0, price.get(), qty.get())),
            BookEvent::MakerExpired { .. } => None,
        })
        .collect()
}

fn book() -> Book<u64> {
    Book::new(Limits::DEFAULT)
}

/// One line per command: what it is, and what must come out.
#[test]
fn price_time_priority_table() {
    let mut b = book();
    let mut ev = Vec::new();
    // Two asks at 101 (ids 1 then 2) and one at 100 (id 3).
    for (id, price) in [(1, 101), (2, 101), (3, 100)] {
        let p = b
            .place(&taker(id, 1, Side::Sell, price, 5), &mut ev)
            .unwrap();
        assert!(matches!(p.end, TakerEnd::Rested { .. }));
    }
    assert_eq!(b.best_ask(), Some((PriceTicks::new(100), QtyLots::new(5))));
    // A buy for 12 at 101 takes 100 first, then 101 in arrival order.
    let p = b.place(&taker(4, 2, Side::Buy, 101, 12), &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(3, 100, 5), (1, 101, 5), (2, 101, 2)]);
    assert_eq!(p.filled, QtyLots::new(12));
    assert_eq!(p.filled_tl, 5 * 100 + 7 * 101);
    assert_eq!(p.end, TakerEnd::Filled);
    assert_eq!(b.order(OrderId(2)).map(|o| o.remaining.get()), Some(3));
    // Level totals by price: 101 keeps id 2's 3 lots; 100 is gone; no bids.
    assert_eq!(
        b.level_quantity(Side::Sell, PriceTicks::new(101)),
        QtyLots::new(3)
    );
    assert_eq!(
        b.level_quantity(Side::Sell, PriceTicks::new(100)),
        QtyLots::new(0)
    );
    assert_eq!(
        b.level_quantity(Side::Buy, PriceTicks::new(101)),
        QtyLots::new(0)
    );
    b.check_invariants().unwrap();
}

#[test]
fn rejections_change_nothing() {
    let mut b = book();
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Sell, 100, 5), &mut ev).unwrap();
    let before = format!("{:?}", b.depth(Side::Sell, 10));

    let mut post = taker(2, 2, Side::Buy, 100, 1);
    post.post_only = true;
    assert_eq!(b.place(&post, &mut ev), Err(BookReject::PostOnlyWouldTake));

    let mut fok = taker(3, 2, Side::Buy, 100, 6);
    fok.tif = TimeInForce::Fok;
    assert_eq!(b.place(&fok, &mut ev), Err(BookReject::FokUnfillable));

    assert_eq!(
        b.place(&taker(1, 2, Side::Sell, 105, 1), &mut ev),
        Err(BookReject::DuplicateId)
    );
    assert_eq!(
        b.place(&taker(4, 2, Side::Buy, 100, 0), &mut ev),
        Err(BookReject::ZeroQuantity)
    );
    assert_eq!(b.cancel(OrderId(99)), Err(BookReject::UnknownOrder));
    assert!(ev.is_empty());
    assert_eq!(before, format!("{:?}", b.depth(Side::Sell, 10)));
    b.check_invariants().unwrap();

    // A post-only order that does not cross rests.
    let mut post = taker(5, 2, Side::Buy, 99, 1);
    post.post_only = true;
    assert!(matches!(
        b.place(&post, &mut ev).unwrap().end,
        TakerEnd::Rested { .. }
    ));
    // FOK that can fill does.
    let mut fok = taker(6, 2, Side::Buy, 100, 5);
    fok.tif = TimeInForce::Fok;
    assert_eq!(b.place(&fok, &mut ev).unwrap().end, TakerEnd::Filled);
}

#[test]
fn ioc_expires_the_rest() {
    let mut b = book();
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Buy, 100, 3), &mut ev).unwrap();
    let mut ioc = taker(2, 2, Side::Sell, 100, 5);
    ioc.tif = TimeInForce::Ioc;
    let p = b.place(&ioc, &mut ev).unwrap();
    assert_eq!(
        p.end,
        TakerEnd::Expired {
            remaining: QtyLots::new(2),
            reason: ExpireReason::NoLiquidity
        }
    );
    assert!(b.is_empty());
}

#[test]
fn self_trade_prevention_modes() {
    for (mode, want_fills, want_expired_makers, taker_expired) in [
        (Stp::None, vec![(1, 100, 2), (2, 100, 2)], 0, false),
        (Stp::ExpireTaker, vec![], 0, true),
        (Stp::ExpireMaker, vec![(2, 100, 2)], 1, false),
        (Stp::ExpireBoth, vec![], 1, true),
    ] {
        let mut b = book();
        let mut ev = Vec::new();
        b.place(&taker(1, 7, Side::Sell, 100, 2), &mut ev).unwrap();
        b.place(&taker(2, 8, Side::Sell, 100, 2), &mut ev).unwrap();
        let mut t = taker(3, 7, Side::Buy, 100, 4);
        t.tif = TimeInForce::Ioc;
        t.stp = mode;
        let p = b.place(&t, &mut ev).unwrap();
        assert_eq!(fills(&ev), want_fills, "{mode:?}");
        let expired = ev
            .iter()
            .filter(|e| matches!(e, BookEvent::MakerExpired { .. }))
            .count();
        assert_eq!(expired, want_expired_makers, "{mode:?}");
        assert_eq!(
            matches!(
                p.end,
                TakerEnd::Expired {
                    reason: ExpireReason::SelfTrade,
                    ..
                }
            ),
            taker_expired,
            "{mode:?}"
        );
        b.check_invariants().unwrap();
    }
}

#[test]
fn quote_budget_limits_the_fill() {
    let mut b = book();
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Sell, 100, 3), &mut ev).unwrap();
    b.place(&taker(2, 1, Side::Sell, 200, 10), &mut ev).unwrap();
    let mut t = taker(3, 2, Side::Buy, 1_000, u64::MAX);
    t.tif = TimeInForce::Ioc;
    t.quote_budget = Some(3 * 100 + 2 * 200 + 150);
    let p = b.place(&t, &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(1, 100, 3), (2, 200, 2)]);
    assert_eq!(p.filled_tl, 700);
    assert!(matches!(p.end, TakerEnd::Expired { .. }));
}

#[test]
fn reduce_keeps_priority_and_cancel_frees_levels() {
    let mut b = book();
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Sell, 100, 5), &mut ev).unwrap();
    b.place(&taker(2, 1, Side::Sell, 100, 5), &mut ev).unwrap();
    b.reduce(OrderId(1), QtyLots::new(1)).unwrap();
    assert_eq!(
        b.reduce(OrderId(1), QtyLots::new(2)),
        Err(BookReject::ZeroQuantity)
    );
    b.place(&taker(3, 2, Side::Buy, 100, 2), &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(1, 100, 1), (2, 100, 1)]);
    b.cancel(OrderId(2)).unwrap();
    assert_eq!(b.level_count(), 0);
    assert!(b.is_empty());
    b.check_invariants().unwrap();
}

#[test]
fn limits_are_enforced() {
    let mut b: Book<u64> = Book::new(Limits {
        orders_max: 3,
        levels_max: 2,
        orders_per_level_max: 2,
    });
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Sell, 100, 1), &mut ev).unwrap();
    b.place(&taker(2, 1, Side::Sell, 100, 1), &mut ev).unwrap();
    assert_eq!(
        b.place(&taker(3, 1, Side::Sell, 100, 1), &mut ev),
        Err(BookReject::LevelFull)
    );
    b.place(&taker(4, 1, Side::Sell, 101, 1), &mut ev).unwrap();
    assert_eq!(
        b.place(&taker(5, 1, Side::Sell, 102, 1), &mut ev),
        Err(BookReject::BookFull)
    );
    b.cancel(OrderId(4)).unwrap();
    b.place(&taker(6, 1, Side::Sell, 101, 1), &mut ev).unwrap();
    assert_eq!(
        b.place(&taker(7, 1, Side::Sell, 102, 1), &mut ev),
        Err(BookReject::BookFull)
    );
}

#[test]
fn replace_moves_and_may_trade() {
    let mut b = book();
    let mut ev = Vec::new();
    b.place(&taker(1, 1, Side::Sell, 101, 5), &mut ev).unwrap();
    b.place(&taker(2, 2, Side::Buy, 99, 5), &mut ev).unwrap();
    b.place(&taker(3, 3, Side::Buy, 99, 5), &mut ev).unwrap();
    // Moving order 2 to 101 crosses: it takes 5 from order 1.
    let p = b
        .replace(OrderId(2), PriceTicks::new(101), QtyLots::new(7), &mut ev)
        .unwrap();
    assert_eq!(fills(&ev), vec![(1, 101, 5)]);
    assert!(matches!(p.end, TakerEnd::Rested { remaining, .. } if remaining == QtyLots::new(2)));
    assert_eq!(b.best_bid(), Some((PriceTicks::new(101), QtyLots::new(2))));
    // A post-only order cannot be moved across the book.
    let mut post = taker(4, 4, Side::Sell, 105, 1);
    post.post_only = true;
    b.place(&post, &mut ev).unwrap();
    assert_eq!(
        b.replace(OrderId(4), PriceTicks::new(100), QtyLots::new(1), &mut ev),
        Err(BookReject::PostOnlyWouldTake)
    );
    assert_eq!(
        b.replace(OrderId(42), PriceTicks::new(100), QtyLots::new(1), &mut ev),
        Err(BookReject::UnknownOrder)
    );
    b.check_invariants().unwrap();
}

/// Random operations for the reference comparison.
#[derive(Clone, Debug)]
enum Op {
    Place {
        owner: u32,
        buy: bool,
        price: u64,
        qty: u64,
        tif: u8,
        post_only: bool,
        stp: u8,
        budget: Option<u128>,
    },
    Cancel(u64),
    Reduce(u64, u64),
    Move(u64, u64),
    Replace(u64, u64, u64),
}

/// Prices: mostly a narrow band (many orders per level, frequent crossing), some far
/// outside the price ladder's window (so levels live in both of the index's stores).
fn price() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 95u64..106,
        1 => 80_000u64..80_004,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..4, any::<bool>(), price(), 1u64..20, 0u8..3, prop::bool::weighted(0.1), 0u8..4,
              prop::option::weighted(0.1, 1u128..5_000))
            .prop_map(|(owner, buy, price, qty, tif, post_only, stp, budget)| Op::Place {
                owner, buy, price, qty, tif, post_only, stp, budget
            }),
        2 => (0u64..60).prop_map(Op::Cancel),
        1 => (0u64..60, 1u64..20).prop_map(|(i, q)| Op::Reduce(i, q)),
        2 => (0u64..60, price()).prop_map(|(i, p)| Op::Move(i, p)),
        3 => (0u64..60, price(), 0u64..20).prop_map(|(i, p, q)| Op::Replace(i, p, q)),
    ]
}

fn snapshot(b: &Book<u64>, side: Side) -> Vec<Resting<u64>> {
    let mut v = Vec::new();
    b.for_each(side, |r| v.push(*r));
    v
}

fn strip_slots(events: &[BookEvent<u64>]) -> Vec<BookEvent<u64>> {
    events
        .iter()
        .map(|e| match *e {
            BookEvent::Fill {
                maker_id,
                maker_owner,
                maker_payload,
                maker_remaining,
                price,
                qty,
                ..
            } => BookEvent::Fill {
                maker_id,
                maker_owner,
                maker_payload,
                maker_slot: None,
                maker_remaining,
                price,
                qty,
            },
            other => other,
        })
        .collect()
}

fn strip_end(p: Result<Placed, BookReject>) -> Result<Placed, BookReject> {
    p.map(|mut p| {
        if let TakerEnd::Rested { slot, .. } = &mut p.end {
            *slot = 0;
        }
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The fast book and the naive reference book agree on every event and every resting
    /// order, after every operation.
    #[test]
    fn fast_book_matches_reference(ops in prop::collection::vec(op(), 1..300)) {
        let mut fast = book();
        let mut slow: ReferenceBook<u64> = ReferenceBook::new();
        let (mut ev_fast, mut ev_slow) = (Vec::new(), Vec::new());
        for (i, op) in ops.iter().enumerate() {
            let id = i as u64;
            ev_fast.clear();
            ev_slow.clear();
            match *op {
                Op::Place { owner, buy, price, qty, tif, post_only, stp, budget } => {
                    let mut t = taker(id, owner, if buy { Side::Buy } else { Side::Sell }, price, qty);
                    t.tif = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][tif as usize];
                    t.post_only = post_only && t.tif == TimeInForce::Gtc;
                    t.stp = [Stp::None, Stp::ExpireTaker, Stp::ExpireMaker, Stp::ExpireBoth][stp as usize];
                    t.quote_budget = budget;
                    let a = strip_end(fast.place(&t, &mut ev_fast));
                    let b = strip_end(slow.place(&t, &mut ev_slow));
                    prop_assert_eq!(a, b);
                }
                Op::Cancel(target) => {
                    prop_assert_eq!(fast.cancel(OrderId(target)), slow.cancel(OrderId(target)));
                }
                Op::Reduce(target, q) => {
                    prop_assert_eq!(
                        fast.reduce(OrderId(target), QtyLots::new(q)),
                        slow.reduce(OrderId(target), QtyLots::new(q))
                    );
                }
                Op::Replace(target, price, qty) => {
                    let a = strip_end(fast.replace(OrderId(target), PriceTicks::new(price), QtyLots::new(qty), &mut ev_fast));
                    let b = strip_end(slow.replace(OrderId(target), PriceTicks::new(price), QtyLots::new(qty), &mut ev_slow));
                    prop_assert_eq!(a, b);
                }
                Op::Move(target, price) => {
                    // A price move: cancel, then place again with the same id (loses priority).
                    let a = fast.cancel(OrderId(target));
                    let b = slow.cancel(OrderId(target));
                    prop_assert_eq!(a, b);
                    if let Ok(r) = a {
                        let mut t = taker(target, r.owner.0, r.side, price, r.remaining.get());
                        t.payload = r.payload;
                        t.stp = r.stp;
                        t.post_only = r.post_only;
                        let a = strip_end(fast.place(&t, &mut ev_fast));
                        let b = strip_end(slow.place(&t, &mut ev_slow));
                        prop_assert_eq!(a, b);
                    }
                }
            }
            prop_assert_eq!(strip_slots(&ev_fast), strip_slots(&ev_slow));
            prop_assert_eq!(snapshot(&fast, Side::Buy), slow.orders(Side::Buy));
            prop_assert_eq!(snapshot(&fast, Side::Sell), slow.orders(Side::Sell));
            if let Err(e) = fast.check_invariants() {
                prop_assert!(false, "invariant broken after {:?}: {}", op, e);
            }
        }
    }
}
