//! One customer's user-data stream: `executionReport`, `outboundAccountPosition` and
//! `balanceUpdate`, derived from the feed's events of that customer only.
//!
//! Execution reports need each order's totals (executed quantity, cumulative quote,
//! original quantity, client id). The stream keeps them for the customer's open orders:
//! loaded from the read model when the stream starts (after the feed receiver exists,
//! so nothing is missed), then kept from the events. An event whose sequence number the
//! loaded row already covers is reported but not counted twice. An order the stream
//! does not know (a race with the load) is read from the read model when its event
//! arrives. Orders leave the map when they end, so it holds at most the customer's open
//! orders.
//!
//! Fees are in the quote asset (`N`), as on REST.

use super::conn::{Closing, Outbox};
use crate::auth::{self, ApiKeyId, KeyScheme, Permission};
use crate::backend::{Backend, BackendError};
use crate::errors::{api_error, ApiError, Failure, ParamError};
use crate::http::{budget_spent, decimal, side_name, signed_decimal, tif_name, MarketInfo};
use kura_engine::{CancelReason, Ctx, Event, EventKind, ExpireReason, Side};
use kura_store::{OrderRow, OrderType as RowType};
use kura_units::{Amount, AssetId, MarketId, OrderId, PriceTicks, QtyLots, Scale, UserId};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The one subscription a WS-API connection has.
pub(crate) const SUBSCRIPTION_ID: u64 = 0;

/// A WS-API error answer.
pub(crate) fn ws_api_error(id: &Value, status: u16, code: i32, msg: &str) -> Value {
    json!({ "id": id, "status": status, "error": { "code": code, "msg": msg } })
}

/// Check `userDataStream.subscribe.signature`'s parameters: the signature over the
/// other parameters sorted by name and joined raw (`apiKey=…&recvWindow=…&timestamp=…`),
/// the timestamp, and the key's state, address and read permission.
pub(crate) fn verify_subscription<B: Backend>(
    b: &B,
    params: &Value,
    ip: IpAddr,
) -> Result<UserId, ApiError> {
    let fail = |f: Failure| api_error(&f);
    let param_fail = |e: ParamError| api_error(&Failure::Param(e));
    let Some(params) = params.as_object() else {
        return Err(param_fail(ParamError::Missing {
            name: "apiKey".to_owned(),
        }));
    };
    let mut texts: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in params {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(v) => v.to_string(),
            _ => return Err(param_fail(ParamError::InvalidValue { name: name.clone() })),
        };
        texts.insert(name.as_str(), text);
    }
    let required = |name: &str| {
        texts.get(name).ok_or_else(|| {
            param_fail(ParamError::Missing {
                name: name.to_owned(),
            })
        })
    };
    let key_text = required("apiKey")?;
    let signature = required("signature")?;
    let timestamp = required("timestamp")?;
    let number = |name: &str, text: &str| {
        text.parse::<u64>().map_err(|_| {
            param_fail(ParamError::InvalidValue {
                name: name.to_owned(),
            })
        })
    };
    let timestamp = number("timestamp", timestamp)?;
    let recv_window = match texts.get("recvWindow") {
        Some(t) => Some(number("recvWindow", t)?),
        None => None,
    };
    let key_id = ApiKeyId::parse(Some(key_text.as_bytes())).map_err(|e| fail(Failure::Auth(e)))?;
    let record = b
        .api_key(&key_id)
        .ok_or_else(|| fail(Failure::Auth(auth::AuthError::UnknownApiKey)))?;
    let payload = texts
        .iter()
        .filter(|(name, _)| **name != "signature")
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let secret = match record.scheme {
        KeyScheme::Hmac => Some(b.master_key().derive_hmac_secret(&key_id)),
        KeyScheme::Ed25519 { .. } => None,
    };
    // The signature arrives as JSON text, not percent-encoded: escape what the
    // verifier would decode ('+' of base64, '%').
    let raw_signature = signature.replace('%', "%25").replace('+', "%2B");
    auth::verify_signature(
        &record.scheme,
        secret.as_ref(),
        payload.as_bytes(),
        raw_signature.as_bytes(),
    )
    .map_err(|e| fail(Failure::Auth(e)))?;
    auth::check_timestamp(timestamp, recv_window, b.now_ms())
        .map_err(|e| fail(Failure::Auth(e)))?;
    auth::check_access(&record, Permission::Read, ip).map_err(|e| fail(Failure::Auth(e)))?;
    Ok(record.user)
}

/// What the stream knows of one of the customer's orders.
#[derive(Clone, Debug)]
struct OrderState {
    market: MarketId,
    side: Side,
    order_type: &'static str,
    tif: &'static str,
    /// Zero for market orders.
    price: PriceTicks,
    orig_qty: QtyLots,
    quote_budget: Option<Amount>,
    client_id: String,
    executed_lots: u128,
    cum_quote: u128,
    created_ms: u64,
    /// Loaded from the read model: events up to this sequence number are counted in
    /// the totals already. `None`: the stream saw the order accepted.
    counted_upto: Option<u64>,
}

impl OrderState {
    fn of_row(r: &OrderRow) -> OrderState {
        let is_market = r.order_type == RowType::Market;
        OrderState {
            market: r.market,
            side: r.side,
            order_type: r.order_type.as_str(),
            tif: if is_market {
                "GTC"
            } else {
                match r.time_in_force.as_str() {
                    "IOC" => "IOC",
                    "FOK" => "FOK",
                    _ => "GTC",
                }
            },
            price: if is_market { PriceTicks::ZERO } else { r.price },
            orig_qty: r.orig_qty,
            quote_budget: r.quote_budget,
            client_id: r.client_order_id.clone().unwrap_or_default(),
            executed_lots: u128::from(r.executed_qty.get()),
            cum_quote: u128::from(r.cum_quote.get()),
            created_ms: r.created_ms,
            counted_upto: Some(r.updated_seq),
        }
    }

    fn spent(&self) -> bool {
        self.quote_budget
            .is_some_and(|b| budget_spent(b, self.cum_quote, self.executed_lots))
    }
}

/// One customer's user-data stream.
#[derive(Debug)]
pub(crate) struct UserStream {
    user: UserId,
    /// WS-API: events wrapped in `{"subscriptionId":0,"event":…}`.
    wrapped: bool,
    assets: Vec<(String, Scale)>,
    markets: Vec<MarketInfo>,
    orders: BTreeMap<OrderId, OrderState>,
}

/// One fill of one of the customer's orders.
#[derive(Debug)]
struct FillSeen {
    trade: u64,
    price: PriceTicks,
    qty: QtyLots,
    quote_qty: Amount,
    fee: Amount,
    is_maker: bool,
}

impl UserStream {
    /// Start the stream of `user` (the caller subscribed to the feed already).
    pub(crate) async fn start<B: Backend>(
        b: &B,
        user: UserId,
        wrapped: bool,
    ) -> Result<UserStream, BackendError> {
        let (assets, markets) = b.query(catalogue).await?;
        let rows = b
            .read(move |s| s.open_orders(user, None))
            .await?
            .map_err(|e| BackendError::ReadModel(e.to_string()))?;
        let orders = rows
            .iter()
            .map(|r| (r.order_id, OrderState::of_row(r)))
            .collect();
        Ok(UserStream {
            user,
            wrapped,
            assets,
            markets,
            orders,
        })
    }

    pub(crate) fn user(&self) -> UserId {
        self.user
    }

    fn send(&self, out: &mut Outbox, event: Value) -> Result<(), Closing> {
        if self.wrapped {
            out.send(&json!({ "subscriptionId": SUBSCRIPTION_ID, "event": event }))
        } else {
            out.send(&event)
        }
    }

    /// The customer's events of one batch.
    pub(crate) async fn on_batch<B: Backend>(
        &mut self,
        b: &B,
        batch: &crate::feed::Published,
        out: &mut Outbox,
    ) -> Result<(), Closing> {
        for (ctx, events) in batch.commands.iter() {
            if !events.iter().any(|e| concerns(e, self.user)) {
                continue;
            }
            if self.refresh_catalogue(b, events).await.is_err()
                || self.load_unknown_orders(b, events).await.is_err()
            {
                out.close(1013, "the exchange is unavailable");
                return Err(Closing);
            }
            self.on_command(*ctx, events, out)?;
        }
        Ok(())
    }

    /// Assets or markets added after the stream started.
    async fn refresh_catalogue<B: Backend>(
        &mut self,
        b: &B,
        events: &[Event],
    ) -> Result<(), BackendError> {
        let asset_count = self.assets.len();
        let market_count = self.markets.len();
        let stale = events.iter().any(|e| match &e.kind {
            EventKind::BalanceChanged { asset, .. }
            | EventKind::Deposited { asset, .. }
            | EventKind::Adjusted { asset, .. } => usize::from(asset.0) >= asset_count,
            EventKind::OrderAccepted { market, .. } | EventKind::Trade { market, .. } => {
                market.0 as usize >= market_count
            }
            _ => false,
        });
        if stale {
            (self.assets, self.markets) = b.query(catalogue).await?;
        }
        Ok(())
    }

    /// Orders this command touches that the stream does not know: read them.
    async fn load_unknown_orders<B: Backend>(
        &mut self,
        b: &B,
        events: &[Event],
    ) -> Result<(), BackendError> {
        let user = self.user;
        let mut accepted = BTreeSet::new();
        let mut unknown: BTreeSet<(MarketId, OrderId)> = BTreeSet::new();
        for e in events {
            let (market, order) = match &e.kind {
                EventKind::OrderAccepted { order, .. } => {
                    accepted.insert(*order);
                    continue;
                }
                EventKind::Trade {
                    market,
                    maker_order,
                    maker_user,
                    ..
                } if *maker_user == user => (*market, *maker_order),
                EventKind::OrderCancelled {
                    market,
                    order,
                    user: u,
                    ..
                }
                | EventKind::OrderExpired {
                    market,
                    order,
                    user: u,
                    ..
                }
                | EventKind::OrderAmended {
                    market,
                    order,
                    user: u,
                    ..
                } if *u == user => (*market, *order),
                _ => continue,
            };
            if !accepted.contains(&order) && !self.orders.contains_key(&order) {
                unknown.insert((market, order));
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let rows = b
            .read(move |s| {
                unknown
                    .into_iter()
                    .map(|(m, o)| s.order(m, o))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .map_err(|e| BackendError::ReadModel(e.to_string()))?;
        for r in rows.into_iter().flatten().filter(|r| r.user == user) {
            self.orders.insert(r.order_id, OrderState::of_row(&r));
        }
        Ok(())
    }

    fn market(&self, id: MarketId) -> Option<&MarketInfo> {
        self.markets.iter().find(|m| m.market_id() == id)
    }

    fn on_command(&mut self, ctx: Ctx, events: &[Event], out: &mut Outbox) -> Result<(), Closing> {
        let user = self.user;
        let at = ctx.timestamp_ms;
        // Which orders end filled in this command, and the index of each order's last
        // fill, so that a fill's report carries the order's final status.
        let mut filled: BTreeSet<OrderId> = BTreeSet::new();
        let mut last_fill: BTreeMap<OrderId, usize> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            match &e.kind {
                EventKind::OrderFilled { order, .. } => {
                    filled.insert(*order);
                }
                EventKind::Trade {
                    maker_order,
                    taker_order,
                    ..
                } => {
                    last_fill.insert(*maker_order, i);
                    last_fill.insert(*taker_order, i);
                }
                _ => {}
            }
        }
        let mut balances: Vec<Value> = Vec::new();
        let mut ended: Vec<OrderId> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match &e.kind {
                EventKind::Deposited {
                    user: u,
                    asset,
                    amount,
                    ..
                }
                | EventKind::WithdrawalCancelled {
                    user: u,
                    asset,
                    amount,
                    ..
                } if *u == user => {
                    let d = self.amount_text(*asset, false, u128::from(amount.get()));
                    self.balance_update(out, *asset, d, at)?;
                }
                EventKind::WithdrawalRequested {
                    user: u,
                    asset,
                    amount,
                    ..
                } if *u == user => {
                    let d = self.amount_text(*asset, true, u128::from(amount.get()));
                    self.balance_update(out, *asset, d, at)?;
                }
                EventKind::Adjusted {
                    user: u,
                    asset,
                    delta,
                    ..
                } if *u == user => {
                    let d =
                        self.amount_text(*asset, !delta.is_credit(), delta.get().unsigned_abs());
                    self.balance_update(out, *asset, d, at)?;
                }
                EventKind::BalanceChanged {
                    user: u,
                    asset,
                    available,
                    held,
                } if *u == user => {
                    if let Some((symbol, scale)) = self.assets.get(usize::from(asset.0)) {
                        balances.push(json!({
                            "a": symbol,
                            "f": decimal(u128::from(available.get()), *scale),
                            "l": decimal(u128::from(held.get()), *scale),
                        }));
                    }
                }
                EventKind::OrderAccepted {
                    market,
                    order,
                    user: u,
                    side,
                    price,
                    qty,
                    quote_budget,
                    tif,
                    post_only,
                    is_market,
                    client_id,
                    ..
                } if *u == user => {
                    let state = OrderState {
                        market: *market,
                        side: *side,
                        order_type: if *is_market {
                            "MARKET"
                        } else if *post_only {
                            "LIMIT_MAKER"
                        } else {
                            "LIMIT"
                        },
                        tif: if *is_market { "GTC" } else { tif_name(*tif) },
                        price: if *is_market { PriceTicks::ZERO } else { *price },
                        orig_qty: *qty,
                        quote_budget: *quote_budget,
                        client_id: client_id
                            .as_ref()
                            .map(|c| c.as_str().to_owned())
                            .unwrap_or_default(),
                        executed_lots: 0,
                        cum_quote: 0,
                        created_ms: at,
                        counted_upto: None,
                    };
                    let report = self.report(&state, *order, at, "NEW", "NEW", None);
                    self.orders.insert(*order, state);
                    self.send(out, report)?;
                }
                EventKind::Trade {
                    trade,
                    price,
                    qty,
                    quote_qty,
                    maker_order,
                    taker_order,
                    maker_user,
                    taker_user,
                    maker_fee,
                    taker_fee,
                    ..
                } => {
                    for (is_maker, order, u, fee) in [
                        (true, *maker_order, *maker_user, *maker_fee),
                        (false, *taker_order, *taker_user, *taker_fee),
                    ] {
                        if u != user {
                            continue;
                        }
                        let Some(state) = self.orders.get_mut(&order) else {
                            continue;
                        };
                        if state.counted_upto.is_none_or(|c| e.seq > c) {
                            state.executed_lots += u128::from(qty.get());
                            state.cum_quote += u128::from(quote_qty.get());
                        }
                        let last = last_fill.get(&order) == Some(&i);
                        let done = u128::from(state.orig_qty.get()) <= state.executed_lots
                            && state.quote_budget.is_none();
                        let status = if (last && (filled.contains(&order) || state.spent())) || done
                        {
                            "FILLED"
                        } else {
                            "PARTIALLY_FILLED"
                        };
                        let fill = FillSeen {
                            trade: trade.0,
                            price: *price,
                            qty: *qty,
                            quote_qty: *quote_qty,
                            fee,
                            is_maker,
                        };
                        let state = state.clone();
                        let report = self.report(&state, order, at, "TRADE", status, Some(&fill));
                        self.send(out, report)?;
                    }
                }
                EventKind::OrderCancelled {
                    order,
                    user: u,
                    reason,
                    ..
                } if *u == user => {
                    let (x, status) = match reason {
                        CancelReason::SelfTradePrevention => {
                            ("TRADE_PREVENTION", "EXPIRED_IN_MATCH")
                        }
                        CancelReason::ByUser | CancelReason::CancelAll => ("CANCELED", "CANCELED"),
                    };
                    if let Some(state) = self.orders.get(order).cloned() {
                        let mut report = self.report(&state, *order, at, x, status, None);
                        if let Value::Object(map) = &mut report {
                            map.insert("C".into(), json!(state.client_id));
                        }
                        self.send(out, report)?;
                    }
                    ended.push(*order);
                }
                EventKind::OrderExpired {
                    order,
                    user: u,
                    reason,
                    ..
                } if *u == user => {
                    if let Some(state) = self.orders.get(order).cloned() {
                        // A market order by quote amount that spent its budget ended
                        // FILLED (its last fill said so).
                        if !state.spent() {
                            let (x, status) = match reason {
                                ExpireReason::SelfTradePrevention => {
                                    ("TRADE_PREVENTION", "EXPIRED_IN_MATCH")
                                }
                                ExpireReason::NoLiquidity | ExpireReason::FokUnfillable => {
                                    ("EXPIRED", "EXPIRED")
                                }
                            };
                            let report = self.report(&state, *order, at, x, status, None);
                            self.send(out, report)?;
                        }
                    }
                    ended.push(*order);
                }
                EventKind::OrderFilled { order, user: u, .. } if *u == user => {
                    ended.push(*order);
                }
                EventKind::OrderAmended {
                    order,
                    user: u,
                    price,
                    remaining,
                    ..
                } if *u == user => {
                    if let Some(state) = self.orders.get_mut(order) {
                        state.price = *price;
                        let orig = state
                            .executed_lots
                            .saturating_add(u128::from(remaining.get()));
                        state.orig_qty = QtyLots::new(u64::try_from(orig).unwrap_or(u64::MAX));
                        let status = if state.executed_lots > 0 {
                            "PARTIALLY_FILLED"
                        } else {
                            "NEW"
                        };
                        let state = state.clone();
                        let report = self.report(&state, *order, at, "REPLACED", status, None);
                        self.send(out, report)?;
                    }
                }
                _ => {}
            }
        }
        for order in ended {
            self.orders.remove(&order);
        }
        if !balances.is_empty() {
            let event = json!({
                "e": "outboundAccountPosition",
                "E": at,
                "u": at,
                "B": balances,
            });
            self.send(out, event)?;
        }
        Ok(())
    }

    fn amount_text(&self, asset: AssetId, negative: bool, magnitude: u128) -> String {
        match self.assets.get(usize::from(asset.0)) {
            Some((_, scale)) => signed_decimal(negative, magnitude, *scale),
            None => "0".to_owned(),
        }
    }

    fn balance_update(
        &self,
        out: &mut Outbox,
        asset: AssetId,
        delta: String,
        at: u64,
    ) -> Result<(), Closing> {
        let symbol = self
            .assets
            .get(usize::from(asset.0))
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        self.send(
            out,
            json!({ "e": "balanceUpdate", "E": at, "a": symbol, "d": delta, "T": at }),
        )
    }

    /// Binance's `executionReport` for `order` after an event.
    fn report(
        &self,
        o: &OrderState,
        order: OrderId,
        at: u64,
        execution: &str,
        status: &str,
        fill: Option<&FillSeen>,
    ) -> Value {
        let Some(m) = self.market(o.market) else {
            return json!({ "e": "executionReport", "E": at, "i": order.0 });
        };
        let zero_qty = m.qty_text(QtyLots::ZERO);
        let zero_price = m.price_text(PriceTicks::ZERO);
        let zero_quote = m.quote_text(0);
        let working = matches!(status, "NEW" | "PARTIALLY_FILLED");
        let mut r = Map::new();
        let mut put = |k: &str, v: Value| {
            r.insert(k.to_owned(), v);
        };
        put("e", json!("executionReport"));
        put("E", json!(at));
        put("s", json!(m.symbol_name()));
        put("c", json!(o.client_id));
        put("S", json!(side_name(o.side)));
        put("o", json!(o.order_type));
        put("f", json!(o.tif));
        put(
            "q",
            json!(if o.quote_budget.is_some() {
                zero_qty.clone()
            } else {
                m.qty_text(o.orig_qty)
            }),
        );
        put("p", json!(m.price_text(o.price)));
        put("P", json!(zero_price));
        put("F", json!(zero_qty.clone()));
        put("g", json!(-1));
        put("C", json!(""));
        put("x", json!(execution));
        put("X", json!(status));
        put("r", json!("NONE"));
        put("i", json!(order.0));
        put("z", json!(m.lots_text(o.executed_lots)));
        put("T", json!(at));
        put("I", json!(at));
        put("w", json!(working));
        put("M", json!(true));
        put("O", json!(o.created_ms));
        put("Z", json!(m.quote_text(o.cum_quote)));
        put(
            "Q",
            json!(m.quote_text(u128::from(o.quote_budget.map_or(0, |a| a.get())))),
        );
        put("W", json!(o.created_ms));
        put("V", json!("NONE"));
        match fill {
            Some(f) => {
                put("l", json!(m.qty_text(f.qty)));
                put("L", json!(m.price_text(f.price)));
                put("n", json!(m.quote_text(u128::from(f.fee.get()))));
                put("N", json!(m.quote_asset()));
                put("t", json!(f.trade));
                put("m", json!(f.is_maker));
                put("Y", json!(m.quote_text(u128::from(f.quote_qty.get()))));
            }
            None => {
                put("l", json!(zero_qty));
                put("L", json!(zero_price));
                put("n", json!(zero_quote.clone()));
                put("N", Value::Null);
                put("t", json!(-1));
                put("m", json!(false));
                put("Y", json!(zero_quote));
            }
        }
        Value::Object(r)
    }
}

/// The scale of an asset the engine does not name (never happens for a live id).
const ZERO_SCALE: Scale = match Scale::new(0) {
    Some(s) => s,
    None => unreachable!(),
};

/// Asset symbols and scales by id, and every market.
fn catalogue(e: &kura_engine::Engine) -> (Vec<(String, Scale)>, Vec<MarketInfo>) {
    let assets = (0..e.asset_count())
        .filter_map(|i| u16::try_from(i).ok())
        .map(|i| {
            let a = AssetId(i);
            (
                e.asset_symbol(a).unwrap_or_default().to_owned(),
                e.asset_scale(a).unwrap_or(ZERO_SCALE),
            )
        })
        .collect();
    (assets, MarketInfo::every(e))
}

/// Whether an event is about `user`.
fn concerns(e: &Event, user: UserId) -> bool {
    match &e.kind {
        EventKind::Deposited { user: u, .. }
        | EventKind::WithdrawalRequested { user: u, .. }
        | EventKind::WithdrawalCancelled { user: u, .. }
        | EventKind::Adjusted { user: u, .. }
        | EventKind::BalanceChanged { user: u, .. }
        | EventKind::OrderAccepted { user: u, .. }
        | EventKind::OrderRested { user: u, .. }
        | EventKind::OrderFilled { user: u, .. }
        | EventKind::OrderCancelled { user: u, .. }
        | EventKind::OrderExpired { user: u, .. }
        | EventKind::OrderAmended { user: u, .. } => *u == user,
        EventKind::Trade {
            maker_user,
            taker_user,
            ..
        } => *maker_user == user || *taker_user == user,
        _ => false,
    }
}
