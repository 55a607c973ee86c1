//! Orders and fills: new order (and its test), query, cancel, cancel-all, open orders,
//! all orders, my trades.
//!
//! A new order's answer is built from the engine's events for its command (status,
//! fills with their trade ids, prices and fees); a cancel's from its events and the
//! order's row in the read model; history from the read model. An order id or client
//! order id that belongs to someone else is answered exactly like one that does not
//! exist (-2013 on query, -2011 on cancel).

use super::market::stp_name;
use super::{
    all_markets, authenticate, decimal, json, limit_param, market_info, Caller, Fail, HttpResult,
    MarketInfo, Req,
};
use crate::auth::Permission;
use crate::backend::Backend;
use crate::errors::{Failure, Op, ParamError};
use crate::params::{OrderKind, Params, RespType};
use axum::extract::State;
use kura_engine::codec::Entry;
use kura_engine::{
    CancelReason, Command, Event, EventKind, ExpireReason, OrderRef, OrderType, Reject, Side, Stp,
    TimeInForce,
};
use kura_store::{FillRow, OrderRow, OrderStatus, OrderType as RowType, OrdersQuery, TradesQuery};
use kura_units::{Amount, ClientOrderId, OrderId, PriceTicks, QtyLots, TradeId, UserId};
use serde_json::{json, Map, Value};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Rows of allOrders and myTrades when `limit` is not sent, and the most.
const HISTORY_LIMIT_DEFAULT: u32 = 500;
const HISTORY_LIMIT_MAX: u32 = 1_000;
/// Order parameters of Binance order types kura does not offer.
const UNSUPPORTED_ORDER_PARAMS: [&str; 4] =
    ["stopPrice", "icebergQty", "trailingDelta", "strategyId"];

pub(crate) fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub(crate) fn tif_name(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

/// A client order id for an order sent without one: 22 letters and digits, like
/// Binance's. Unique enough: a per-process random hash key over a counter.
fn generated_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let keys = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(22);
    for half in 0..2u64 {
        let mut h = keys.build_hasher();
        h.write_u64(n);
        h.write_u64(half);
        let mut v = h.finish();
        for _ in 0..11 {
            out.push(char::from(ALPHABET[(v % 62) as usize]));
            v /= 62;
        }
    }
    out
}

/// The market of a signed request's `symbol` (required).
async fn caller_market<B: Backend>(b: &B, params: &Params) -> Result<MarketInfo, Fail> {
    market_info(b, params.symbol("symbol")?).await
}

/// [`caller_market`] for a cancel: looked up on the priority lane, never shed.
async fn cancel_market<B: Backend>(b: &B, params: &Params) -> Result<MarketInfo, Fail> {
    let lookup = super::market_lookup(params.symbol("symbol")?);
    super::found_market(b.query_for_cancel(lookup).await?)
}

pub(super) fn fee_rates(m: &MarketInfo, tier: u8) -> (u32, u32) {
    let fees = &m.spec.fees;
    let i = usize::from(tier).min(fees.len().saturating_sub(1));
    fees.get(i).map_or((0, 0), |f| (f.maker_ppm, f.taker_ppm))
}

// ---- new order -------------------------------------------------------------------

/// A validated new-order request.
#[derive(Debug)]
struct NewOrder {
    market: MarketInfo,
    side: Side,
    kind: OrderKind,
    order: OrderType,
    client_id: ClientOrderId,
    resp: RespType,
    stp: Option<Stp>,
}

/// A price parameter in ticks: PRICE_FILTER unless a positive multiple of the tick.
fn price_param(m: &MarketInfo, params: &Params) -> Result<PriceTicks, Fail> {
    let minor = params.decimal("price", m.quote_scale)?;
    let tick = m.spec.tick.get();
    if minor == 0 || tick == 0 || minor % tick != 0 {
        return Err(reject(Reject::InvalidPrice, Op::NewOrder));
    }
    Ok(PriceTicks::new(minor / tick))
}

/// A quantity parameter in lots: LOT_SIZE unless a positive multiple of the step.
fn qty_param(m: &MarketInfo, params: &Params) -> Result<QtyLots, Fail> {
    let minor = params.decimal("quantity", m.base_scale)?;
    let lot = m.spec.lot.get();
    if minor == 0 || lot == 0 || minor % lot != 0 {
        return Err(reject(Reject::InvalidQuantity, Op::NewOrder));
    }
    Ok(QtyLots::new(minor / lot))
}

fn reject(reject: Reject, op: Op) -> Fail {
    Failure::Reject { reject, op }.into()
}

fn not_required(name: &str) -> Fail {
    ParamError::NotRequired {
        name: name.to_owned(),
    }
    .into()
}

async fn parse_new_order<B: Backend>(b: &B, params: &Params) -> Result<NewOrder, Fail> {
    let symbol = params.symbol("symbol")?;
    let side = params.side()?;
    let kind = params.order_type()?;
    let market = market_info(b, symbol).await?;
    let tif = params.time_in_force()?;
    for name in UNSUPPORTED_ORDER_PARAMS {
        if params.optional(name).is_some() {
            return Err(not_required(name));
        }
    }
    let has = |name| params.optional(name).is_some();
    let order = match kind {
        OrderKind::Limit | OrderKind::LimitMaker => {
            let tif = match (kind, tif) {
                (OrderKind::Limit, Some(t)) => t,
                (OrderKind::Limit, None) => {
                    return Err(ParamError::Missing {
                        name: "timeInForce".to_owned(),
                    }
                    .into())
                }
                (_, Some(_)) => return Err(not_required("timeInForce")),
                (_, None) => TimeInForce::Gtc,
            };
            if has("quoteOrderQty") {
                return Err(not_required("quoteOrderQty"));
            }
            // Binance checks presence before values.
            params.required("quantity")?;
            params.required("price")?;
            OrderType::Limit {
                qty: qty_param(&market, params)?,
                price: price_param(&market, params)?,
                tif,
                post_only: kind == OrderKind::LimitMaker,
            }
        }
        OrderKind::Market => {
            if tif.is_some() {
                return Err(not_required("timeInForce"));
            }
            if has("price") {
                return Err(not_required("price"));
            }
            match (has("quantity"), has("quoteOrderQty")) {
                (true, true) => return Err(ParamError::BadCombination.into()),
                (false, false) => {
                    return Err(ParamError::EitherRequired {
                        a: "quantity",
                        b: "quoteOrderQty",
                    }
                    .into())
                }
                (true, false) => OrderType::MarketBase {
                    qty: qty_param(&market, params)?,
                },
                (false, true) => OrderType::MarketQuote {
                    quote: Amount::new(params.decimal("quoteOrderQty", market.quote_scale)?),
                },
            }
        }
    };
    let client_text = match params.client_order_id("newClientOrderId")? {
        Some(text) => text.to_owned(),
        None => generated_client_id(),
    };
    let client_id = ClientOrderId::parse(&client_text).map_err(|_| ParamError::IllegalChars {
        name: Some("newClientOrderId".to_owned()),
        pattern: Some(crate::params::CLIENT_ORDER_ID_PATTERN),
    })?;
    // Binance: MARKET and LIMIT answer FULL by default, other types ACK.
    let resp = params.new_order_resp_type()?.unwrap_or(match kind {
        OrderKind::Limit | OrderKind::Market => RespType::Full,
        OrderKind::LimitMaker => RespType::Ack,
    });
    let stp = params.self_trade_prevention()?;
    Ok(NewOrder {
        market,
        side,
        kind,
        order,
        client_id,
        resp,
        stp,
    })
}

/// The market's filters, checked the way the engine checks them, without the book
/// (`order/test`). A market order's notional against the book is the engine's to check.
fn check_filters(m: &MarketInfo, order: &OrderType) -> Result<(), Reject> {
    let spec = &m.spec;
    if m.halted {
        return Err(Reject::MarketHalted);
    }
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
    let scale = u128::from(m.base_scale.factor());
    let check_notional = |numerator: u128| {
        if numerator < u128::from(spec.min_notional.get()) * scale {
            Err(Reject::NotionalBelowMinimum)
        } else if numerator > u128::from(spec.max_notional.get()) * scale {
            Err(Reject::NotionalAboveMaximum)
        } else {
            Ok(())
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
            check_notional(
                u128::from(price.get())
                    * u128::from(spec.tick.get())
                    * u128::from(qty.get())
                    * u128::from(spec.lot.get()),
            )
        }
        OrderType::MarketBase { qty } => check_qty(qty),
        OrderType::MarketQuote { quote } => {
            if quote.is_zero() {
                return Err(Reject::InvalidQuantity);
            }
            check_notional(u128::from(quote.get()) * scale)
        }
    }
}

/// What the events of one PlaceOrder say about its order.
#[derive(Debug, Default)]
struct Placed {
    order: Option<OrderId>,
    price: PriceTicks,
    qty: QtyLots,
    quote_budget: Option<Amount>,
    tif: Option<TimeInForce>,
    is_market: bool,
    executed: u128,
    cum_quote: u128,
    status: Option<&'static str>,
    rested: bool,
    fills: Vec<Fill>,
}

#[derive(Debug)]
struct Fill {
    trade: TradeId,
    price: PriceTicks,
    qty: QtyLots,
    fee: Amount,
}

fn placed(events: &[Event]) -> Placed {
    let mut p = Placed::default();
    for e in events {
        match &e.kind {
            EventKind::OrderAccepted {
                order,
                price,
                qty,
                quote_budget,
                tif,
                is_market,
                ..
            } if p.order.is_none() => {
                p.order = Some(*order);
                p.price = *price;
                p.qty = *qty;
                p.quote_budget = *quote_budget;
                p.tif = Some(*tif);
                p.is_market = *is_market;
            }
            EventKind::Trade {
                trade,
                price,
                qty,
                quote_qty,
                maker_order,
                taker_order,
                maker_fee,
                taker_fee,
                ..
            } if p
                .order
                .is_some_and(|o| o == *taker_order || o == *maker_order) =>
            {
                let fee = if p.order == Some(*taker_order) {
                    *taker_fee
                } else {
                    *maker_fee
                };
                p.executed += u128::from(qty.get());
                p.cum_quote += u128::from(quote_qty.get());
                p.fills.push(Fill {
                    trade: *trade,
                    price: *price,
                    qty: *qty,
                    fee,
                });
            }
            EventKind::OrderRested { order, .. } if p.order == Some(*order) => {
                p.rested = true;
            }
            EventKind::OrderFilled { order, .. } if p.order == Some(*order) => {
                p.status = Some("FILLED");
            }
            EventKind::OrderExpired { order, reason, .. } if p.order == Some(*order) => {
                p.status = Some(match reason {
                    ExpireReason::SelfTradePrevention => "EXPIRED_IN_MATCH",
                    ExpireReason::NoLiquidity | ExpireReason::FokUnfillable => "EXPIRED",
                });
            }
            EventKind::OrderCancelled { order, reason, .. } if p.order == Some(*order) => {
                p.status = Some(match reason {
                    CancelReason::SelfTradePrevention => "EXPIRED_IN_MATCH",
                    CancelReason::ByUser | CancelReason::CancelAll => "CANCELED",
                });
            }
            _ => {}
        }
    }
    if p.status == Some("EXPIRED") {
        if let Some(budget) = p.quote_budget {
            if budget_spent(budget, p.cum_quote, p.executed) {
                p.status = Some("FILLED");
            }
        }
    }
    if p.status.is_none() {
        p.status = Some(if p.rested && p.executed > 0 {
            "PARTIALLY_FILLED"
        } else if p.rested {
            "NEW"
        } else if p.executed > 0 {
            "FILLED"
        } else {
            "EXPIRED"
        });
    }
    p
}

/// Whether a market order by quote amount spent its budget: what is left would not buy
/// one more lot at its average price. The engine ends such an order as expired (it
/// stops when the budget runs out); Binance reports it FILLED.
pub(crate) fn budget_spent(budget: Amount, cum_quote: u128, executed_lots: u128) -> bool {
    executed_lots > 0
        && u128::from(budget.get()).saturating_sub(cum_quote) * executed_lots < cum_quote
}

fn kind_name(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Limit => "LIMIT",
        OrderKind::LimitMaker => "LIMIT_MAKER",
        OrderKind::Market => "MARKET",
    }
}

fn new_order_json(req: &NewOrder, p: &Placed, order: OrderId, now_ms: u64) -> Value {
    let m = &req.market;
    let mut out = Map::new();
    out.insert("symbol".into(), json!(m.symbol));
    out.insert("orderId".into(), json!(order.0));
    out.insert("orderListId".into(), json!(-1));
    out.insert("clientOrderId".into(), json!(req.client_id.as_str()));
    out.insert("transactTime".into(), json!(now_ms));
    if req.resp == RespType::Ack {
        return Value::Object(out);
    }
    let price = if p.is_market {
        PriceTicks::ZERO
    } else {
        p.price
    };
    // A market order by quote amount has no quantity of its own: report what it did.
    let orig_qty = if p.quote_budget.is_some() {
        m.base_amount_lots(p.executed)
    } else {
        m.qty(p.qty)
    };
    let stp = req.stp.unwrap_or(m.spec.default_stp);
    out.insert("price".into(), json!(m.price(price)));
    out.insert("origQty".into(), json!(orig_qty));
    out.insert("executedQty".into(), json!(m.base_amount_lots(p.executed)));
    out.insert(
        "origQuoteOrderQty".into(),
        json!(m.quote_amount(u128::from(p.quote_budget.map_or(0, |a| a.get())))),
    );
    out.insert(
        "cummulativeQuoteQty".into(),
        json!(m.quote_amount(p.cum_quote)),
    );
    out.insert("status".into(), json!(p.status.unwrap_or("NEW")));
    out.insert(
        "timeInForce".into(),
        json!(if p.is_market {
            "GTC"
        } else {
            tif_name(p.tif.unwrap_or(TimeInForce::Gtc))
        }),
    );
    out.insert("type".into(), json!(kind_name(req.kind)));
    out.insert("side".into(), json!(side_name(req.side)));
    out.insert("workingTime".into(), json!(now_ms));
    out.insert("selfTradePreventionMode".into(), json!(stp_name(stp)));
    if req.resp == RespType::Full {
        let fills: Vec<Value> = p
            .fills
            .iter()
            .map(|f| {
                json!({
                    "price": m.price(f.price),
                    "qty": m.qty(f.qty),
                    "commission": m.quote_amount(u128::from(f.fee.get())),
                    "commissionAsset": m.quote,
                    "tradeId": f.trade.0,
                })
            })
            .collect();
        out.insert("fills".into(), Value::Array(fills));
    }
    Value::Object(out)
}

impl MarketInfo {
    /// A number of lots (possibly a sum wider than 64 bits) as a base-asset decimal.
    fn base_amount_lots(&self, lots: u128) -> String {
        decimal(lots * u128::from(self.spec.lot.get()), self.base_scale)
    }
}

pub(super) async fn new_order<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Trade).await?;
    let order = parse_new_order(&b, &caller.params).await?;
    let outcome = b
        .submit(Entry {
            ctx_timestamp_ms: b.now_ms(),
            origin: caller.origin.clone(),
            command: Command::PlaceOrder {
                user: caller.user,
                market: order.market.id,
                side: order.side,
                order: order.order,
                client_id: Some(order.client_id),
                stp: order.stp,
            },
        })
        .await?;
    let transact_ms = outcome.timestamp_ms;
    let events = outcome.result.map_err(|reject| {
        Fail::from(Failure::Reject {
            reject,
            op: Op::NewOrder,
        })
    })?;
    let p = placed(&events);
    let id = p.order.ok_or(Failure::Internal)?;
    json(new_order_json(&order, &p, id, transact_ms))
}

pub(super) async fn test_order<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Trade).await?;
    let order = parse_new_order(&b, &caller.params).await?;
    check_filters(&order.market, &order.order).map_err(|r| reject(r, Op::NewOrder))?;
    let compute = match caller.params.optional("computeCommissionRates") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ParamError::InvalidValue {
                name: "computeCommissionRates".to_owned(),
            }
            .into())
        }
    };
    if !compute {
        return json(json!({}));
    }
    let user = caller.user;
    let tier = b.read(move |s| s.fee_tier(user)).await??.unwrap_or(0);
    let (maker, taker) = fee_rates(&order.market, tier);
    json(json!({
        "standardCommissionForOrder": { "maker": ppm_rate(maker), "taker": ppm_rate(taker) },
        "specialCommissionForOrder": { "maker": ppm_rate(0), "taker": ppm_rate(0) },
        "taxCommissionForOrder": { "maker": ppm_rate(0), "taker": ppm_rate(0) },
        "discount": {
            "enabledForAccount": false,
            "enabledForSymbol": false,
            "discountAsset": "BNB",
            "discount": ppm_rate(0),
        },
    }))
}

/// A rate in parts per million as Binance's 8-decimal fraction (`0.00100000`).
pub(super) fn ppm_rate(ppm: u32) -> String {
    match kura_units::Scale::new(8) {
        Some(s) => decimal(u128::from(ppm) * 100, s),
        None => unreachable!("scale 8 is below the maximum"),
    }
}

// ---- one order: query and cancel -------------------------------------------------

/// `orderId` or `origClientOrderId` (one is mandatory; `orderId` wins when both).
fn order_ref(params: &Params) -> Result<OrderRef, Fail> {
    if let Some(id) = params.u64_opt("orderId")? {
        return Ok(OrderRef::Id(OrderId(id)));
    }
    match params.client_order_id("origClientOrderId")? {
        Some(text) => ClientOrderId::parse(text)
            .map(OrderRef::Client)
            .map_err(|_| {
                ParamError::IllegalChars {
                    name: Some("origClientOrderId".to_owned()),
                    pattern: Some(crate::params::CLIENT_ORDER_ID_PATTERN),
                }
                .into()
            }),
        None => Err(ParamError::EitherRequired {
            a: "origClientOrderId",
            b: "orderId",
        }
        .into()),
    }
}

/// A row of the read model as Binance's order object (query, open orders, all orders).
fn order_json(m: &MarketInfo, r: &OrderRow) -> Value {
    let is_market = r.order_type == RowType::Market;
    let price = if is_market { PriceTicks::ZERO } else { r.price };
    let orig_qty = if r.quote_budget.is_some() {
        r.executed_qty
    } else {
        r.orig_qty
    };
    let status = match r.quote_budget {
        Some(budget)
            if r.status == OrderStatus::Expired
                && budget_spent(
                    budget,
                    u128::from(r.cum_quote.get()),
                    u128::from(r.executed_qty.get()),
                ) =>
        {
            OrderStatus::Filled
        }
        _ => r.status,
    };
    json!({
        "symbol": m.symbol,
        "orderId": r.order_id.0,
        "orderListId": -1,
        "clientOrderId": r.client_order_id.as_deref().unwrap_or(""),
        "price": m.price(price),
        "origQty": m.qty(orig_qty),
        "executedQty": m.qty(r.executed_qty),
        "cummulativeQuoteQty": m.quote_amount(u128::from(r.cum_quote.get())),
        "status": status.as_str(),
        "timeInForce": if is_market { "GTC" } else { r.time_in_force.as_str() },
        "type": r.order_type.as_str(),
        "side": side_name(r.side),
        "stopPrice": m.price(PriceTicks::ZERO),
        "icebergQty": m.qty(QtyLots::ZERO),
        "time": r.created_ms,
        "updateTime": r.updated_ms,
        "isWorking": status.is_open(),
        "workingTime": r.created_ms,
        "origQuoteOrderQty": m.quote_amount(u128::from(r.quote_budget.map_or(0, |a| a.get()))),
    })
}

/// The caller's order by reference, from the read model (`None` if it does not exist
/// or is someone else's).
async fn find_order<B: Backend>(
    b: &B,
    m: &MarketInfo,
    user: UserId,
    order: OrderRef,
) -> Result<Option<OrderRow>, Fail> {
    let market = m.id;
    let row = b
        .read(move |s| match order {
            OrderRef::Id(id) => s.order(market, id),
            OrderRef::Client(cid) => s.order_by_client_id(market, user, cid.as_str()),
        })
        .await??;
    Ok(row.filter(|r| r.user == user))
}

pub(super) async fn query_order<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let m = caller_market(&b, &caller.params).await?;
    let order = order_ref(&caller.params)?;
    let row = find_order(&b, &m, caller.user, order)
        .await?
        .ok_or_else(|| reject(Reject::UnknownOrder, Op::Query))?;
    json(order_json(&m, &row))
}

/// A cancelled order as Binance's cancel answer.
fn cancel_json(m: &MarketInfo, r: &OrderRow, cancel_id: &str, now_ms: u64) -> Value {
    let mut v = order_json(m, r);
    if let Value::Object(map) = &mut v {
        for key in [
            "stopPrice",
            "icebergQty",
            "time",
            "updateTime",
            "isWorking",
            "workingTime",
        ] {
            map.remove(key);
        }
        map.insert(
            "origClientOrderId".into(),
            json!(r.client_order_id.as_deref().unwrap_or("")),
        );
        map.insert("clientOrderId".into(), json!(cancel_id));
        map.insert("transactTime".into(), json!(now_ms));
    }
    v
}

/// Orders cancelled by one command's events, in event order.
fn cancelled(events: &[Event]) -> Vec<OrderId> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::OrderCancelled { order, .. } => Some(order),
            _ => None,
        })
        .collect()
}

/// The rows of orders a command just cancelled: from the backend's memory when it keeps
/// them, else from the caught-up read model.
async fn rows_of<B: Backend>(
    b: &B,
    m: &MarketInfo,
    ids: Vec<OrderId>,
) -> Result<Vec<OrderRow>, Fail> {
    let market = m.id;
    if let Some(rows) = b.live_orders(market, &ids) {
        return Ok(rows);
    }
    let rows = b
        .read(move |s| {
            ids.into_iter()
                .map(|id| s.order(market, id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    // Every order a command just cancelled is in the caught-up read model.
    rows.into_iter()
        .map(|r| r.ok_or_else(|| Fail::from(Failure::Internal)))
        .collect()
}

fn cancel_client_id(params: &Params) -> Result<String, Fail> {
    Ok(match params.client_order_id("newClientOrderId")? {
        Some(text) => text.to_owned(),
        None => generated_client_id(),
    })
}

pub(super) async fn cancel_order<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Trade).await?;
    let m = cancel_market(&b, &caller.params).await?;
    let order = order_ref(&caller.params)?;
    let cancel_id = cancel_client_id(&caller.params)?;
    let (events, transact_ms) = submit_cancel(
        &b,
        &caller,
        Command::CancelOrder {
            user: caller.user,
            market: m.id,
            order,
        },
    )
    .await?;
    let ids = cancelled(&events);
    let rows = rows_of(&b, &m, ids).await?;
    let row = rows.first().ok_or(Failure::Internal)?;
    json(cancel_json(&m, row, &cancel_id, transact_ms))
}

async fn submit_cancel<B: Backend>(
    b: &B,
    caller: &Caller,
    command: Command,
) -> Result<(Vec<Event>, u64), Fail> {
    let outcome = b
        .submit(Entry {
            ctx_timestamp_ms: b.now_ms(),
            origin: caller.origin.clone(),
            command,
        })
        .await?;
    let at = outcome.timestamp_ms;
    let events = outcome.result.map_err(|reject| {
        Fail::from(Failure::Reject {
            reject,
            op: Op::CancelOrder,
        })
    })?;
    Ok((events, at))
}

pub(super) async fn cancel_open_orders<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Trade).await?;
    let m = cancel_market(&b, &caller.params).await?;
    let (events, now) = submit_cancel(
        &b,
        &caller,
        Command::CancelAll {
            user: caller.user,
            market: m.id,
        },
    )
    .await?;
    let rows = rows_of(&b, &m, cancelled(&events)).await?;
    let out = rows
        .iter()
        .map(|r| {
            let own = r.client_order_id.as_deref().unwrap_or("");
            cancel_json(&m, r, own, now)
        })
        .collect();
    json(Value::Array(out))
}

// ---- lists -----------------------------------------------------------------------

pub(super) async fn open_orders<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let symbol_given = caller.params.optional("symbol").is_some();
    let markets = if symbol_given {
        vec![caller_market(&b, &caller.params).await?]
    } else {
        all_markets(&b).await?
    };
    let only = if symbol_given {
        markets.first().map(|m| m.id)
    } else {
        None
    };
    let user = caller.user;
    let rows = b.read(move |s| s.open_orders(user, only)).await??;
    let out = rows
        .iter()
        .filter_map(|r| {
            let m = markets.iter().find(|m| m.id == r.market)?;
            Some(order_json(m, r))
        })
        .collect();
    json(Value::Array(out))
}

pub(super) async fn all_orders<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let m = caller_market(&b, &caller.params).await?;
    let p = &caller.params;
    let q = OrdersQuery {
        from_id: p.u64_opt("orderId")?.map(OrderId),
        start_ms: p.u64_opt("startTime")?,
        end_ms: p.u64_opt("endTime")?,
        limit: limit_param(p, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?,
    };
    let (user, market) = (caller.user, m.id);
    let rows = b.read(move |s| s.orders(user, market, q)).await??;
    json(Value::Array(
        rows.iter().map(|r| order_json(&m, r)).collect(),
    ))
}

fn fill_json(m: &MarketInfo, f: &FillRow) -> Value {
    json!({
        "symbol": m.symbol,
        "id": f.trade_id.0,
        "orderId": f.order_id.0,
        "orderListId": -1,
        "price": m.price(f.price),
        "qty": m.qty(f.qty),
        "quoteQty": m.quote_amount(u128::from(f.quote_qty.get())),
        "commission": m.quote_amount(u128::from(f.fee.get())),
        "commissionAsset": m.quote,
        "time": f.time_ms,
        "isBuyer": f.is_buyer,
        "isMaker": f.is_maker,
        "isBestMatch": true,
    })
}

pub(super) async fn my_trades<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let m = caller_market(&b, &caller.params).await?;
    let p = &caller.params;
    let q = TradesQuery {
        order_id: p.u64_opt("orderId")?.map(OrderId),
        from_id: p.u64_opt("fromId")?.map(TradeId),
        start_ms: p.u64_opt("startTime")?,
        end_ms: p.u64_opt("endTime")?,
        limit: limit_param(p, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?,
    };
    if q.from_id.is_some() && (q.start_ms.is_some() || q.end_ms.is_some()) {
        return Err(ParamError::BadCombination.into());
    }
    let (user, market) = (caller.user, m.id);
    let rows = b.read(move |s| s.my_trades(user, market, q)).await??;
    json(Value::Array(
        rows.iter().map(|f| fill_json(&m, f)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generated_client_id();
        let b = generated_client_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 22);
            assert!(ClientOrderId::parse(&id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(ppm_rate(1_000), "0.00100000");
        assert_eq!(ppm_rate(0), "0.00000000");
        assert_eq!(ppm_rate(500), "0.00050000");
    }
}
