//! A naive order book, written to be obviously correct rather than fast: one vector of
//! resting orders, each stamped with its arrival number; the best maker is found by a
//! linear scan (best price, then earliest arrival). Tests run the same random input
//! through it and through [`crate::Book`] and require identical events and books.

use crate::{
    BookEvent, BookReject, ExpireReason, Placed, Resting, Side, Stp, Taker, TakerEnd, TimeInForce,
};
use kura_units::{OrderId, PriceTicks, QtyLots};

#[derive(Clone, Debug)]
struct Entry<T> {
    resting: Resting<T>,
    arrival: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ReferenceBook<T> {
    orders: Vec<Entry<T>>,
    arrivals: u64,
}

impl<T: Copy> ReferenceBook<T> {
    pub fn new() -> ReferenceBook<T> {
        ReferenceBook {
            orders: Vec::new(),
            arrivals: 0,
        }
    }

    fn best(&self, side: Side) -> Option<usize> {
        let better = |a: &Entry<T>, b: &Entry<T>| {
            let (pa, pb) = (a.resting.price, b.resting.price);
            let price_better = match side {
                Side::Buy => pa > pb,
                Side::Sell => pa < pb,
            };
            price_better || (pa == pb && a.arrival < b.arrival)
        };
        let mut best: Option<usize> = None;
        for (i, e) in self.orders.iter().enumerate() {
            if e.resting.side != side {
                continue;
            }
            if best.is_none_or(|b| better(e, &self.orders[b])) {
                best = Some(i);
            }
        }
        best
    }

    fn crosses(side: Side, limit: PriceTicks, maker_price: PriceTicks) -> bool {
        match side {
            Side::Buy => maker_price <= limit,
            Side::Sell => maker_price >= limit,
        }
    }

    pub fn place(
        &mut self,
        taker: &Taker<T>,
        events: &mut Vec<BookEvent<T>>,
    ) -> Result<Placed, BookReject> {
        if taker.qty.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        let opposite = taker.side.opposite();
        if taker.post_only {
            if let Some(b) = self.best(opposite) {
                if Self::crosses(taker.side, taker.limit, self.orders[b].resting.price) {
                    return Err(BookReject::PostOnlyWouldTake);
                }
            }
        }
        if self.orders.iter().any(|e| e.resting.id == taker.id)
            && taker.tif == TimeInForce::Gtc
            && taker.quote_budget.is_none()
        {
            return Err(BookReject::DuplicateId);
        }
        if taker.tif == TimeInForce::Fok {
            // Simulate on a copy: the simplest possible definition of "fillable".
            let mut copy = self.clone();
            let mut scratch = Vec::new();
            let mut ioc = *taker;
            ioc.tif = TimeInForce::Ioc;
            let placed = copy.match_and_rest(&ioc, &mut scratch);
            if placed.end != TakerEnd::Filled {
                return Err(BookReject::FokUnfillable);
            }
        }
        Ok(self.match_and_rest(taker, events))
    }

    fn match_and_rest(&mut self, taker: &Taker<T>, events: &mut Vec<BookEvent<T>>) -> Placed {
        let mut remaining = taker.qty.get();
        let mut filled = 0u64;
        let mut filled_tl = 0u128;
        let mut expired = None;
        while remaining > 0 {
            let Some(b) = self.best(taker.side.opposite()) else {
                break;
            };
            let maker = self.orders[b].resting;
            if !Self::crosses(taker.side, taker.limit, maker.price) {
                break;
            }
            if taker.stp != Stp::None && maker.owner == taker.owner {
                if matches!(taker.stp, Stp::ExpireMaker | Stp::ExpireBoth) {
                    self.orders.remove(b);
                    events.push(BookEvent::MakerExpired {
                        id: maker.id,
                        owner: maker.owner,
                        payload: maker.payload,
                        remaining: maker.remaining,
                    });
                }
                if matches!(taker.stp, Stp::ExpireTaker | Stp::ExpireBoth) {
                    expired = Some(ExpireReason::SelfTrade);
                    break;
                }
                continue;
            }
            let price = maker.price.get();
            let mut qty = remaining.min(maker.remaining.get());
            if let Some(budget) = taker.quote_budget {
                let afford = (budget - filled_tl) / u128::from(price.max(1));
                qty = qty.min(u64::try_from(afford).unwrap_or(u64::MAX));
                if qty == 0 {
                    break;
                }
            }
            remaining -= qty;
            filled += qty;
            filled_tl += u128::from(qty) * u128::from(price);
            let maker_remaining = maker.remaining.get() - qty;
            if maker_remaining == 0 {
                self.orders.remove(b);
            } else {
                self.orders[b].resting.remaining = QtyLots::new(maker_remaining);
            }
            events.push(BookEvent::Fill {
                maker_id: maker.id,
                maker_owner: maker.owner,
                maker_payload: maker.payload,
                maker_slot: None,
                maker_remaining: QtyLots::new(maker_remaining),
                price: maker.price,
                qty: QtyLots::new(qty),
            });
        }
        let end = if remaining == 0 {
            TakerEnd::Filled
        } else if let Some(reason) = expired {
            TakerEnd::Expired {
                remaining: QtyLots::new(remaining),
                reason,
            }
        } else if taker.tif == TimeInForce::Gtc && taker.quote_budget.is_none() {
            self.arrivals += 1;
            self.orders.push(Entry {
                resting: Resting {
                    id: taker.id,
                    owner: taker.owner,
                    side: taker.side,
                    price: taker.limit,
                    remaining: QtyLots::new(remaining),
                    post_only: taker.post_only,
                    stp: taker.stp,
                    payload: taker.payload,
                },
                arrival: self.arrivals,
            });
            TakerEnd::Rested {
                slot: 0,
                remaining: QtyLots::new(remaining),
            }
        } else {
            TakerEnd::Expired {
                remaining: QtyLots::new(remaining),
                reason: ExpireReason::NoLiquidity,
            }
        };
        Placed {
            filled: QtyLots::new(filled),
            filled_tl,
            end,
        }
    }

    pub fn cancel(&mut self, id: OrderId) -> Result<Resting<T>, BookReject> {
        let i = self
            .orders
            .iter()
            .position(|e| e.resting.id == id)
            .ok_or(BookReject::UnknownOrder)?;
        Ok(self.orders.remove(i).resting)
    }

    /// Cancel and place again at a new price and quantity with the same id (loses
    /// priority); a post-only order that would cross is refused before anything changes.
    pub fn replace(
        &mut self,
        id: OrderId,
        price: PriceTicks,
        qty: QtyLots,
        events: &mut Vec<BookEvent<T>>,
    ) -> Result<Placed, BookReject> {
        let r = self
            .orders
            .iter()
            .find(|e| e.resting.id == id)
            .map(|e| e.resting)
            .ok_or(BookReject::UnknownOrder)?;
        if qty.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        if r.post_only {
            if let Some(b) = self.best(r.side.opposite()) {
                if Self::crosses(r.side, price, self.orders[b].resting.price) {
                    return Err(BookReject::PostOnlyWouldTake);
                }
            }
        }
        self.cancel(id)?;
        let taker = Taker {
            id,
            owner: r.owner,
            side: r.side,
            limit: price,
            qty,
            quote_budget: None,
            tif: TimeInForce::Gtc,
            post_only: r.post_only,
            stp: r.stp,
            payload: r.payload,
        };
        Ok(self.match_and_rest(&taker, events))
    }

    pub fn reduce(&mut self, id: OrderId, new_remaining: QtyLots) -> Result<(), BookReject> {
        let e = self
            .orders
            .iter_mut()
            .find(|e| e.resting.id == id)
            .ok_or(BookReject::UnknownOrder)?;
        if new_remaining.is_zero() || new_remaining > e.resting.remaining {
            return Err(BookReject::ZeroQuantity);
        }
        e.resting.remaining = new_remaining;
        Ok(())
    }

    /// Resting orders of one side in priority order.
    pub fn orders(&self, side: Side) -> Vec<Resting<T>> {
        let mut v: Vec<&Entry<T>> = self
            .orders
            .iter()
            .filter(|e| e.resting.side == side)
            .collect();
        v.sort_by(|a, b| {
            let by_price = match side {
                Side::Buy => b.resting.price.cmp(&a.resting.price),
                Side::Sell => a.resting.price.cmp(&b.resting.price),
            };
            by_price.then(a.arrival.cmp(&b.arrival))
        });
        v.into_iter().map(|e| e.resting).collect()
    }
}
