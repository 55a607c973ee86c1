//! Orders: place, cancel, cancel-all, amend; holds, fills, fees and rounding.
//!
//! Order of work in every command: validate everything (read only) → ask the book,
//! which itself checks before it changes anything → from then on nothing can fail:
//! hold, settle each fill, release what is no longer needed, emit events.
//! A ledger error after that point would be a bug and stops the process.

use crate::{
    CancelReason, Ctx, Engine, Event, EventKind, ExpireReason, FeeTier, Market, OrderData,
    OrderRef, OrderType, Reject, BPS, PPM,
};
use kura_book::{
    BookEvent, BookReject, Placed, Resting, Side, Slot, Stp, Taker, TakerEnd, TimeInForce,
};
use kura_ledger::{Account, SystemAccount};
use kura_units::{
    Amount, AssetId, ClientOrderId, MarketId, OrderId, PriceTicks, QtyLots, TradeId, UserId,
};

/// `ceil(n / d)`, on 64-bit operands when both fit (the common case: a 128-bit division
/// is several times slower).
#[inline]
fn div_ceil(n: u128, d: u128) -> u128 {
    if (n | d) >> 64 == 0 {
        u128::from((n as u64).div_ceil(d as u64))
    } else {
        n.div_ceil(d)
    }
}

/// `floor(n / d)`, on 64-bit operands when both fit.
#[inline]
fn div_floor(n: u128, d: u128) -> u128 {
    if (n | d) >> 64 == 0 {
        u128::from(n as u64 / d as u64)
    } else {
        n / d
    }
}

/// The exact-arithmetic constants of one market.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Math {
    tick: u128,
    lot: u128,
    /// 10^base_scale.
    s: u128,
    base: AssetId,
    quote: AssetId,
}

impl Math {
    pub(crate) fn of(m: &Market) -> Math {
        Math {
            tick: u128::from(m.spec.tick.get()),
            lot: u128::from(m.spec.lot.get()),
            s: m.base_factor,
            base: m.spec.base,
            quote: m.spec.quote,
        }
    }

    /// Notional numerator of `qty` at `price`, in quote-minor × base-minor units.
    #[inline]
    pub(crate) fn notional(self, price: PriceTicks, qty: QtyLots) -> u128 {
        u128::from(price.get()) * self.tick * u128::from(qty.get()) * self.lot
    }

    #[inline]
    fn base_amount(self, qty: QtyLots) -> u64 {
        // Fits: validate_spec bounds max_qty × lot below 2^64.
        (u128::from(qty.get()) * self.lot) as u64
    }

    pub(crate) fn hold_asset(self, side: Side) -> AssetId {
        match side {
            Side::Buy => self.quote,
            Side::Sell => self.base,
        }
    }

    /// What the rest of an order (`remaining` at `price`) can still cost, given what it
    /// has already traded: for a buy the extra notional and taker fee it could pay,
    /// both rounded up exactly as fills will round them; for a sell its quantity.
    pub(crate) fn required_hold(
        self,
        side: Side,
        d: &OrderData,
        price: PriceTicks,
        remaining: QtyLots,
    ) -> u128 {
        match side {
            Side::Sell => u128::from(remaining.get()) * self.lot,
            Side::Buy => {
                let rest = self.notional(price, remaining);
                let fee_div = self.s * PPM;
                if d.cum_notional == 0 && d.cum_fee == 0 {
                    // Nothing filled yet (most orders): the same formula, two divisions.
                    return div_ceil(rest, self.s)
                        + div_ceil(rest * u128::from(d.taker_ppm), fee_div);
                }
                div_ceil(d.cum_notional + rest, self.s) - div_ceil(d.cum_notional, self.s)
                    + div_ceil(d.cum_fee + rest * u128::from(d.taker_ppm), fee_div)
                    - div_ceil(d.cum_fee, fee_div)
            }
        }
    }
}

/// What an order will be, once validated.
struct Plan {
    limit: PriceTicks,
    qty: QtyLots,
    budget_tl: Option<u128>,
    quote_budget: Option<Amount>,
    tif: TimeInForce,
    post_only: bool,
    is_market: bool,
    hold: u64,
    /// A market order that arrives at an empty opposite side expires at once.
    no_liquidity: bool,
}

fn map_book_reject(e: BookReject) -> Reject {
    match e {
        BookReject::PostOnlyWouldTake => Reject::PostOnlyWouldTake,
        BookReject::BookFull => Reject::BookFull,
        BookReject::TooManyLevels => Reject::TooManyPriceLevels,
        BookReject::LevelFull => Reject::PriceLevelFull,
        BookReject::ZeroQuantity => Reject::InvalidQuantity,
        BookReject::UnknownOrder => Reject::UnknownOrder,
        // Order ids come from the engine's counter and are never reused; FOK is handled
        // by the caller. Either reaching here is a bug.
        BookReject::DuplicateId | BookReject::FokUnfillable => {
            panic!("book refused an engine-assigned order: {e:?}")
        }
    }
}

fn fits_u64(v: u128) -> Result<u64, Reject> {
    u64::try_from(v).map_err(|_| Reject::AmountOverflow)
}

fn push(out: &mut Vec<Event>, ctx: Ctx, kind: EventKind) {
    out.push(Event { seq: ctx.seq, kind });
}

fn plan_order(m: &Market, side: Side, order: &OrderType, rates: FeeTier) -> Result<Plan, Reject> {
    let spec = &m.spec;
    let math = Math::of(m);
    let s = math.s;
    let check_qty = |qty: QtyLots| {
        if qty.is_zero() {
            Err(Reject::InvalidQuantity)
        } else if qty < spec.min_qty {
            Err(Reject::QuantityBelowMinimum)
        } else if qty > spec.max_qty {
            Err(Reject::QuantityAboveMaximum)
        } else {
            Ok(())
        }
    };
    let check_notional = |num: u128, check_max: bool| {
        if num < u128::from(spec.min_notional.get()) * s {
            Err(Reject::NotionalBelowMinimum)
        } else if check_max && num > u128::from(spec.max_notional.get()) * s {
            Err(Reject::NotionalAboveMaximum)
        } else {
            Ok(())
        }
    };
    let fresh = OrderData {
        taker_ppm: rates.taker_ppm,
        ..OrderData::default()
    };
    // The best price on the other side, for market orders' collar and notional check.
    let opposite_best = match side {
        Side::Buy => m.book.best_ask(),
        Side::Sell => m.book.best_bid(),
    }
    .map(|(p, _)| p);
    let collar = |best: PriceTicks| -> PriceTicks {
        let b = u128::from(best.get());
        let c = u128::from(spec.collar_bps);
        match side {
            Side::Buy => {
                let up = b * (BPS + c) / BPS;
                PriceTicks::new(up.min(u128::from(spec.max_price.get())) as u64)
            }
            Side::Sell => PriceTicks::new((b * (BPS - c)).div_ceil(BPS).max(1) as u64),
        }
    };
    match *order {
        OrderType::Limit {
            price,
            qty,
            tif,
            post_only,
        } => {
            if price.is_zero() || price > spec.max_price {
                return Err(Reject::InvalidPrice);
            }
            check_qty(qty)?;
            if post_only && tif != TimeInForce::Gtc {
                return Err(Reject::InvalidTimeInForce);
            }
            check_notional(math.notional(price, qty), true)?;
            let hold = fits_u64(math.required_hold(side, &fresh, price, qty))?;
            Ok(Plan {
                limit: price,
                qty,
                budget_tl: None,
                quote_budget: None,
                tif,
                post_only,
                is_market: false,
                hold,
                no_liquidity: false,
            })
        }
        OrderType::MarketBase { qty } => {
            check_qty(qty)?;
            let Some(best) = opposite_best else {
                return Ok(Plan {
                    limit: PriceTicks::ZERO,
                    qty,
                    budget_tl: None,
                    quote_budget: None,
                    tif: TimeInForce::Ioc,
                    post_only: false,
                    is_market: true,
                    hold: 0,
                    no_liquidity: true,
                });
            };
            check_notional(math.notional(best, qty), false)?;
            let limit = collar(best);
            let hold = fits_u64(math.required_hold(side, &fresh, limit, qty))?;
            Ok(Plan {
                limit,
                qty,
                budget_tl: None,
                quote_budget: None,
                tif: TimeInForce::Ioc,
                post_only: false,
                is_market: true,
                hold,
                no_liquidity: false,
            })
        }
        OrderType::MarketQuote { quote } => {
            if quote.is_zero() {
                return Err(Reject::InvalidQuantity);
            }
            check_notional(u128::from(quote.get()) * s, true)?;
            // Σ price_ticks × qty_lots ≤ budget_tl ⟺ notional ≤ quote × 10^base_scale.
            let budget_tl = u128::from(quote.get()) * s / (math.tick * math.lot);
            let Some(best) = opposite_best else {
                return Ok(Plan {
                    limit: PriceTicks::ZERO,
                    qty: spec.max_qty,
                    budget_tl: Some(budget_tl),
                    quote_budget: Some(quote),
                    tif: TimeInForce::Ioc,
                    post_only: false,
                    is_market: true,
                    hold: 0,
                    no_liquidity: true,
                });
            };
            let limit = collar(best);
            let (qty, hold) = match side {
                Side::Buy => {
                    let fee = (u128::from(quote.get()) * u128::from(rates.taker_ppm)).div_ceil(PPM);
                    (spec.max_qty, fits_u64(u128::from(quote.get()) + fee)?)
                }
                Side::Sell => {
                    let most = budget_tl / u128::from(limit.get().max(1));
                    let qty = QtyLots::new(most.min(u128::from(spec.max_qty.get())) as u64);
                    if qty.is_zero() {
                        return Err(Reject::NotionalBelowMinimum);
                    }
                    (qty, math.base_amount(qty))
                }
            };
            Ok(Plan {
                limit,
                qty,
                budget_tl: Some(budget_tl),
                quote_budget: Some(quote),
                tif: TimeInForce::Ioc,
                post_only: false,
                is_market: true,
                hold,
                no_liquidity: false,
            })
        }
    }
}

impl Engine {
    fn market(&self, market: MarketId) -> Result<&Market, Reject> {
        self.markets
            .get(market.0 as usize)
            .ok_or(Reject::UnknownMarket)
    }

    /// The market `user` wants to trade in, if both exist and the market is not halted.
    fn trading_market(&self, user: UserId, market: MarketId) -> Result<&Market, Reject> {
        self.check_user(user)?;
        let m = self.market(market)?;
        if m.halted.is_some() {
            return Err(Reject::MarketHalted);
        }
        Ok(m)
    }

    fn rates(&self, m: &Market, user: UserId) -> FeeTier {
        let tier = usize::from(self.users[user.0 as usize].fee_tier);
        m.spec.fees[tier.min(m.spec.fees.len() - 1)]
    }

    /// Move `amount` between two accounts; the caller has proven it cannot fail.
    #[inline]
    fn must_transfer(&mut self, from: Account, to: Account, asset: AssetId, amount: u64) {
        if amount == 0 {
            return;
        }
        if let Err(e) = self.ledger.transfer(from, to, asset, Amount::new(amount)) {
            panic!("ledger refused a proven transfer {from:?} -> {to:?} of {amount} (asset {asset:?}): {e:?}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn place_order(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        market: MarketId,
        side: Side,
        order: &OrderType,
        client_id: Option<ClientOrderId>,
        stp: Option<Stp>,
    ) -> Result<(), Reject> {
        let m = self.trading_market(user, market)?;
        if let Some(cid) = client_id {
            if m.client_ids.contains_key(&(user.0, cid)) {
                return Err(Reject::DuplicateClientOrderId);
            }
        }
        let rates = self.rates(m, user);
        let plan = plan_order(m, side, order, rates)?;
        let may_rest = plan.tif == TimeInForce::Gtc && plan.budget_tl.is_none();
        if may_rest
            && self.users[user.0 as usize].open_orders >= self.limits().open_orders_per_user_max
        {
            return Err(Reject::TooManyOpenOrders);
        }
        let math = Math::of(m);
        let hold_asset = math.hold_asset(side);
        let available = self
            .ledger
            .balance(user, hold_asset)
            .map_err(|_| Reject::UnknownUser)?
            .available;
        if available.get() < plan.hold {
            return Err(Reject::InsufficientFunds);
        }
        let id = OrderId(self.next_order_id);
        let td = OrderData {
            hold: plan.hold,
            cum_notional: 0,
            cum_fee: 0,
            maker_ppm: rates.maker_ppm,
            taker_ppm: rates.taker_ppm,
        };
        let taker = Taker {
            id,
            owner: user,
            side,
            limit: plan.limit,
            qty: plan.qty,
            quote_budget: plan.budget_tl,
            tif: plan.tif,
            post_only: plan.post_only,
            stp: stp.unwrap_or(m.spec.default_stp),
            payload: td,
        };
        let mut events = std::mem::take(&mut self.book_events);
        events.clear();
        let placed = if plan.no_liquidity {
            Err(ExpireReason::NoLiquidity)
        } else {
            match self.markets[market.0 as usize]
                .book
                .place(&taker, &mut events)
            {
                Ok(p) => Ok(p),
                Err(BookReject::FokUnfillable) => Err(ExpireReason::FokUnfillable),
                Err(e) => {
                    self.book_events = events;
                    return Err(map_book_reject(e));
                }
            }
        };
        // ---- committed: nothing below can be refused ----
        self.next_order_id += 1;
        push(
            out,
            ctx,
            EventKind::OrderAccepted {
                market,
                order: id,
                user,
                side,
                price: plan.limit,
                qty: plan.qty,
                quote_budget: plan.quote_budget,
                tif: plan.tif,
                post_only: plan.post_only,
                is_market: plan.is_market,
                client_id,
                hold: Amount::new(plan.hold),
            },
        );
        self.touch(user, hold_asset);
        self.must_transfer(
            Account::Available(user),
            Account::Held(user),
            hold_asset,
            plan.hold,
        );
        match placed {
            Err(reason) => {
                self.must_transfer(
                    Account::Held(user),
                    Account::Available(user),
                    hold_asset,
                    plan.hold,
                );
                push(
                    out,
                    ctx,
                    EventKind::OrderExpired {
                        market,
                        order: id,
                        user,
                        remaining: plan.qty,
                        reason,
                    },
                );
            }
            Ok(p) => {
                let mut td = td;
                self.settle_book_events(ctx, out, market, user, side, id, &mut td, &events);
                self.finish_taker(
                    ctx, out, market, user, side, id, td, p, client_id, false, plan.hold,
                );
            }
        }
        self.book_events = events;
        Ok(())
    }

    /// Settle every fill and maker expiry the book reported for one incoming order.
    #[allow(clippy::too_many_arguments)]
    fn settle_book_events(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        market: MarketId,
        taker_user: UserId,
        taker_side: Side,
        taker_id: OrderId,
        td: &mut OrderData,
        events: &[BookEvent<OrderData>],
    ) {
        let math = Math::of(&self.markets[market.0 as usize]);
        let maker_side = taker_side.opposite();
        for ev in events {
            match *ev {
                BookEvent::Fill {
                    maker_id,
                    maker_owner,
                    maker_payload,
                    maker_slot,
                    maker_remaining,
                    price,
                    qty,
                } => {
                    let mut md = maker_payload;
                    let (maker_fee, taker_fee, quote_qty) = self.settle_fill(
                        math,
                        taker_user,
                        taker_side,
                        td,
                        maker_owner,
                        &mut md,
                        price,
                        qty,
                    );
                    let trade = TradeId(self.next_trade_id);
                    self.next_trade_id += 1;
                    self.markets[market.0 as usize].last_price = Some(price);
                    push(
                        out,
                        ctx,
                        EventKind::Trade {
                            market,
                            trade,
                            price,
                            qty,
                            quote_qty: Amount::new(quote_qty),
                            maker_order: maker_id,
                            taker_order: taker_id,
                            maker_user: maker_owner,
                            taker_user,
                            taker_side,
                            maker_fee: Amount::new(maker_fee),
                            taker_fee: Amount::new(taker_fee),
                        },
                    );
                    match maker_slot {
                        Some(slot) => {
                            self.rehold(
                                math,
                                maker_owner,
                                maker_side,
                                &mut md,
                                price,
                                maker_remaining,
                            );
                            if let Some(p) = self.markets[market.0 as usize].book.payload_mut(slot)
                            {
                                *p = md;
                            }
                        }
                        None => {
                            self.release(math, maker_owner, maker_side, &mut md);
                            self.order_ended(market, maker_owner, maker_id);
                            push(
                                out,
                                ctx,
                                EventKind::OrderFilled {
                                    market,
                                    order: maker_id,
                                    user: maker_owner,
                                },
                            );
                        }
                    }
                }
                BookEvent::MakerExpired {
                    id,
                    owner,
                    payload,
                    remaining,
                } => {
                    let mut md = payload;
                    self.release(math, owner, maker_side, &mut md);
                    self.order_ended(market, owner, id);
                    push(
                        out,
                        ctx,
                        EventKind::OrderCancelled {
                            market,
                            order: id,
                            user: owner,
                            remaining,
                            reason: CancelReason::SelfTradePrevention,
                        },
                    );
                }
            }
        }
    }

    /// Move the money of one fill. Returns (maker fee, taker fee, quote quantity).
    #[allow(clippy::too_many_arguments)]
    fn settle_fill(
        &mut self,
        math: Math,
        taker_user: UserId,
        taker_side: Side,
        td: &mut OrderData,
        maker_user: UserId,
        md: &mut OrderData,
        price: PriceTicks,
        qty: QtyLots,
    ) -> (u64, u64, u64) {
        let num = math.notional(price, qty);
        let fee_div = math.s * PPM;
        let (buyer, bd, seller, sd, buyer_is_taker) = match taker_side {
            Side::Buy => (taker_user, &mut *td, maker_user, &mut *md, true),
            Side::Sell => (maker_user, &mut *md, taker_user, &mut *td, false),
        };
        let (b_rate, s_rate) = if buyer_is_taker {
            (bd.taker_ppm, sd.maker_ppm)
        } else {
            (bd.maker_ppm, sd.taker_ppm)
        };
        // Buyer: pays ceil of its cumulative notional and fee.
        let paid_before = div_ceil(bd.cum_notional, math.s);
        let bfee_before = div_ceil(bd.cum_fee, fee_div);
        bd.cum_notional += num;
        bd.cum_fee += num * u128::from(b_rate);
        let pay = div_ceil(bd.cum_notional, math.s) - paid_before;
        let buyer_fee = div_ceil(bd.cum_fee, fee_div) - bfee_before;
        // Seller: receives floor of its cumulative notional, less fees capped at proceeds.
        let gross_before = div_floor(sd.cum_notional, math.s);
        let sfee_before = div_ceil(sd.cum_fee, fee_div).min(gross_before);
        sd.cum_notional += num;
        sd.cum_fee += num * u128::from(s_rate);
        let gross_after = div_floor(sd.cum_notional, math.s);
        let sfee_after = div_ceil(sd.cum_fee, fee_div).min(gross_after);
        let seller_fee = sfee_after - sfee_before;
        let receive = (gross_after - gross_before) - seller_fee;
        // Amounts are bounded by the holds (u64), so these narrowings cannot truncate.
        let (pay, buyer_fee, seller_fee, receive) = (
            pay as u64,
            buyer_fee as u64,
            seller_fee as u64,
            receive as u64,
        );
        let base_amt = math.base_amount(qty);
        bd.hold = bd
            .hold
            .checked_sub(pay + buyer_fee)
            .expect("buyer hold covers every fill (required_hold bound)");
        sd.hold = sd
            .hold
            .checked_sub(base_amt)
            .expect("seller hold covers every fill (required_hold bound)");
        let rounding = Account::System(SystemAccount::Rounding);
        self.must_transfer(
            Account::Held(seller),
            Account::Available(buyer),
            math.base,
            base_amt,
        );
        self.must_transfer(Account::Held(buyer), rounding, math.quote, pay + buyer_fee);
        self.must_transfer(rounding, Account::Available(seller), math.quote, receive);
        self.must_transfer(
            rounding,
            Account::System(SystemAccount::FeeIncome),
            math.quote,
            buyer_fee + seller_fee,
        );
        self.touch(buyer, math.base);
        self.touch(buyer, math.quote);
        self.touch(seller, math.base);
        self.touch(seller, math.quote);
        let (maker_fee, taker_fee) = if buyer_is_taker {
            (seller_fee, buyer_fee)
        } else {
            (buyer_fee, seller_fee)
        };
        (maker_fee, taker_fee, div_floor(num, math.s) as u64)
    }

    /// Lower an order's hold to what its rest can still need; release the excess.
    fn rehold(
        &mut self,
        math: Math,
        user: UserId,
        side: Side,
        d: &mut OrderData,
        price: PriceTicks,
        remaining: QtyLots,
    ) {
        let need = math.required_hold(side, d, price, remaining);
        let need = u64::try_from(need).expect("required hold never grows past the hold");
        let excess = d
            .hold
            .checked_sub(need)
            .expect("required hold never grows past the hold");
        let asset = math.hold_asset(side);
        self.must_transfer(Account::Held(user), Account::Available(user), asset, excess);
        d.hold = need;
        if excess > 0 {
            self.touch(user, asset);
        }
    }

    /// Release all of an order's hold.
    fn release(&mut self, math: Math, user: UserId, side: Side, d: &mut OrderData) {
        let asset = math.hold_asset(side);
        self.must_transfer(Account::Held(user), Account::Available(user), asset, d.hold);
        self.touch(user, asset);
        d.hold = 0;
    }

    /// Bookkeeping when a resting order leaves the book.
    fn order_ended(&mut self, market: MarketId, user: UserId, order: OrderId) {
        let u = &mut self.users[user.0 as usize];
        u.open_orders = u
            .open_orders
            .checked_sub(1)
            .expect("open order count matches resting orders");
        let m = &mut self.markets[market.0 as usize];
        if let Some(cid) = m.order_client_ids.remove(&order.0) {
            m.client_ids.remove(&(user.0, cid));
        }
    }

    /// What happens to the incoming order after matching. `was_open`: it was already a
    /// resting order (an amend), so it is already counted and indexed.
    #[allow(clippy::too_many_arguments)]
    fn finish_taker(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        market: MarketId,
        user: UserId,
        side: Side,
        id: OrderId,
        mut td: OrderData,
        placed: Placed,
        client_id: Option<ClientOrderId>,
        was_open: bool,
        unfilled_need: u64,
    ) {
        let math = Math::of(&self.markets[market.0 as usize]);
        match placed.end {
            TakerEnd::Rested { slot, remaining } => {
                if placed.filled.is_zero() {
                    // Nothing traded: the need is what the caller computed for the whole
                    // order at this price, with the same accumulators.
                    let excess = td
                        .hold
                        .checked_sub(unfilled_need)
                        .expect("hold covers the order's need");
                    let asset = math.hold_asset(side);
                    self.must_transfer(
                        Account::Held(user),
                        Account::Available(user),
                        asset,
                        excess,
                    );
                    if excess > 0 {
                        self.touch(user, asset);
                    }
                    td.hold = unfilled_need;
                } else {
                    let price = self.markets[market.0 as usize]
                        .book
                        .get(slot)
                        .map(|r| r.price)
                        .expect("a rested order is in the book");
                    self.rehold(math, user, side, &mut td, price, remaining);
                }
                let m = &mut self.markets[market.0 as usize];
                if let Some(p) = m.book.payload_mut(slot) {
                    *p = td;
                }
                if !was_open {
                    if let Some(cid) = client_id {
                        m.client_ids.insert((user.0, cid), id.0);
                        m.order_client_ids.insert(id.0, cid);
                    }
                    self.users[user.0 as usize].open_orders += 1;
                }
                push(
                    out,
                    ctx,
                    EventKind::OrderRested {
                        market,
                        order: id,
                        user,
                        remaining,
                    },
                );
            }
            TakerEnd::Filled => {
                self.release(math, user, side, &mut td);
                if was_open {
                    self.order_ended(market, user, id);
                }
                push(
                    out,
                    ctx,
                    EventKind::OrderFilled {
                        market,
                        order: id,
                        user,
                    },
                );
            }
            TakerEnd::Expired { remaining, reason } => {
                self.release(math, user, side, &mut td);
                if was_open {
                    self.order_ended(market, user, id);
                }
                let reason = match reason {
                    kura_book::ExpireReason::NoLiquidity => ExpireReason::NoLiquidity,
                    kura_book::ExpireReason::SelfTrade => ExpireReason::SelfTradePrevention,
                };
                push(
                    out,
                    ctx,
                    EventKind::OrderExpired {
                        market,
                        order: id,
                        user,
                        remaining,
                        reason,
                    },
                );
            }
        }
    }

    /// `user`'s resting order named by `order` in `market`: its slot and contents.
    fn resolve(
        &self,
        m: &Market,
        user: UserId,
        order: OrderRef,
    ) -> Result<(Slot, Resting<OrderData>), Reject> {
        let id = match order {
            OrderRef::Id(id) => id,
            OrderRef::Client(cid) => m
                .client_ids
                .get(&(user.0, cid))
                .map(|&id| OrderId(id))
                .ok_or(Reject::UnknownOrder)?,
        };
        match m.book.find(id) {
            Some((slot, r)) if r.owner == user => Ok((slot, r)),
            _ => Err(Reject::UnknownOrder),
        }
    }

    pub(crate) fn cancel_order(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        market: MarketId,
        order: OrderRef,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        let (slot, _) = self.resolve(self.market(market)?, user, order)?;
        self.cancel_resting(ctx, out, market, user, slot, CancelReason::ByUser);
        Ok(())
    }

    /// Remove one resting order of `user` that is known to exist.
    fn cancel_resting(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        market: MarketId,
        user: UserId,
        slot: Slot,
        reason: CancelReason,
    ) {
        let m = &mut self.markets[market.0 as usize];
        let math = Math::of(m);
        let resting = m.book.cancel_at(slot).expect("resolved order is resting");
        let id = resting.id;
        let mut d = resting.payload;
        self.release(math, user, resting.side, &mut d);
        self.order_ended(market, user, id);
        push(
            out,
            ctx,
            EventKind::OrderCancelled {
                market,
                order: id,
                user,
                remaining: resting.remaining,
                reason,
            },
        );
    }

    pub(crate) fn cancel_all(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        market: MarketId,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        let m = self.market(market)?;
        let mut ids = Vec::new();
        for side in [Side::Buy, Side::Sell] {
            m.book.for_each(side, |r| {
                if r.owner == user {
                    ids.push(r.id);
                }
            });
        }
        for id in ids {
            let slot = self.markets[market.0 as usize]
                .book
                .slot_of(id)
                .expect("an order just listed is resting");
            self.cancel_resting(ctx, out, market, user, slot, CancelReason::CancelAll);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn amend_order(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        market: MarketId,
        order: OrderRef,
        price: Option<PriceTicks>,
        remaining: Option<QtyLots>,
    ) -> Result<(), Reject> {
        let m = self.trading_market(user, market)?;
        let (slot, resting) = self.resolve(m, user, order)?;
        let id = resting.id;
        let new_price = price.unwrap_or(resting.price);
        let new_rem = remaining.unwrap_or(resting.remaining);
        if new_price.is_zero() || new_price > m.spec.max_price {
            return Err(Reject::InvalidPrice);
        }
        if new_rem.is_zero() {
            return Err(Reject::InvalidQuantity);
        }
        if new_rem > m.spec.max_qty {
            return Err(Reject::QuantityAboveMaximum);
        }
        let math = Math::of(m);
        if math.notional(new_price, new_rem) > u128::from(m.spec.max_notional.get()) * math.s {
            return Err(Reject::NotionalAboveMaximum);
        }
        let side = resting.side;
        let mut d = resting.payload;
        let amended = |kept_priority| Event {
            seq: ctx.seq,
            kind: EventKind::OrderAmended {
                market,
                order: id,
                user,
                price: new_price,
                remaining: new_rem,
                kept_priority,
            },
        };
        if new_price == resting.price && new_rem <= resting.remaining {
            // Keeps its place in the queue.
            let m = &mut self.markets[market.0 as usize];
            m.book.reduce_at(slot, new_rem).map_err(map_book_reject)?;
            self.rehold(math, user, side, &mut d, new_price, new_rem);
            if let Some(p) = self.markets[market.0 as usize].book.payload_mut(slot) {
                *p = d;
            }
            out.push(amended(true));
            return Ok(());
        }
        let need = fits_u64(math.required_hold(side, &d, new_price, new_rem))?;
        let extra = need.saturating_sub(d.hold);
        let asset = math.hold_asset(side);
        let available = self
            .ledger
            .balance(user, asset)
            .map_err(|_| Reject::UnknownUser)?
            .available;
        if available.get() < extra {
            return Err(Reject::InsufficientFunds);
        }
        let mut events = std::mem::take(&mut self.book_events);
        events.clear();
        let placed = match self.markets[market.0 as usize].book.replace_at(
            slot,
            new_price,
            new_rem,
            &mut events,
        ) {
            Ok(p) => p,
            Err(e) => {
                self.book_events = events;
                return Err(map_book_reject(e));
            }
        };
        // ---- committed ----
        self.must_transfer(Account::Available(user), Account::Held(user), asset, extra);
        d.hold += extra;
        self.touch(user, asset);
        out.push(amended(false));
        self.settle_book_events(ctx, out, market, user, side, id, &mut d, &events);
        self.finish_taker(
            ctx, out, market, user, side, id, d, placed, None, true, need,
        );
        self.book_events = events;
        Ok(())
    }
}
