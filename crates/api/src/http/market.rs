//! Public market data: ping, time, exchangeInfo, depth, trades, aggTrades, klines and
//! the tickers. Books, halts and last prices come from the engine; trades, klines and
//! 24-hour statistics from the read model.

use super::{
    all_markets, decimal, json, limit_param, market_info, select, selection, signed_decimal, Fail,
    HttpResult, MarketInfo, Req, Selection,
};
use crate::backend::Backend;
use crate::errors::ParamError;
use axum::extract::State;
use kura_engine::{Side, Stp};
use kura_store::{Interval, Kline, TickerStats, TradeRow};
use kura_units::{Amount, MarketId, PriceTicks, QtyLots, Scale, TradeId};
use serde_json::{json, Value};

/// Depth levels per side when `limit` is not sent, and the most accepted.
const DEPTH_LIMIT_DEFAULT: u32 = 100;
const DEPTH_LIMIT_MAX: u32 = 5_000;
/// Rows of trades, aggTrades and klines when `limit` is not sent, and the most.
const ROWS_LIMIT_DEFAULT: u32 = 500;
const ROWS_LIMIT_MAX: u32 = 1_000;
/// Most trades read to build `1s` klines in one request (the read model keeps no 1s
/// buckets). A window with more trades than this gives fewer klines than asked.
const SECOND_KLINE_TRADES_MAX: u32 = 50_000;
/// The rolling window of `ticker/24hr`.
pub(crate) const DAY_MS: u64 = 86_400_000;

pub(super) async fn ping() -> HttpResult {
    json(json!({}))
}

pub(super) async fn time<B: Backend>(State(b): State<B>) -> HttpResult {
    json(json!({ "serverTime": b.now_ms() }))
}

pub(crate) fn stp_name(stp: Stp) -> &'static str {
    match stp {
        Stp::None => "NONE",
        Stp::ExpireTaker => "EXPIRE_TAKER",
        Stp::ExpireMaker => "EXPIRE_MAKER",
        Stp::ExpireBoth => "EXPIRE_BOTH",
    }
}

fn symbol_info(m: &MarketInfo) -> Value {
    let spec = &m.spec;
    let base_places = m.base_scale.places();
    let quote_places = m.quote_scale.places();
    let tick = u128::from(spec.tick.get());
    let lot = u128::from(spec.lot.get());
    json!({
        "symbol": m.symbol,
        "status": if m.halted { "BREAK" } else { "TRADING" },
        "baseAsset": m.base,
        "baseAssetPrecision": base_places,
        "quoteAsset": m.quote,
        "quotePrecision": quote_places,
        "quoteAssetPrecision": quote_places,
        "baseCommissionPrecision": base_places,
        "quoteCommissionPrecision": quote_places,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": false,
        "amendAllowed": false,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": m.quote_amount(tick),
                "maxPrice": m.price(spec.max_price),
                "tickSize": m.quote_amount(tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": m.qty(spec.min_qty),
                "maxQty": m.qty(spec.max_qty),
                "stepSize": decimal(lot, m.base_scale),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": m.quote_amount(u128::from(spec.min_notional.get())),
                "applyMinToMarket": true,
                "maxNotional": m.quote_amount(u128::from(spec.max_notional.get())),
                "applyMaxToMarket": false,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": stp_name(spec.default_stp),
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

pub(super) async fn exchange_info<B: Backend>(
    State(b): State<B>,
    axum::Extension(limits): axum::Extension<crate::limits::Limits>,
    req: Req,
) -> HttpResult {
    let params = req.params()?;
    let sel = selection(&params)?;
    let markets = select(all_markets(&b).await?, &sel)?;
    let symbols: Vec<Value> = markets.iter().map(symbol_info).collect();
    json(json!({
        "timezone": "UTC",
        "serverTime": b.now_ms(),
        // What admission enforces, from the same configuration.
        "rateLimits": limits.rate_limits_json(),
        "exchangeFilters": [],
        "symbols": symbols,
    }))
}

pub(super) async fn depth<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let symbol = params.symbol("symbol")?.to_owned();
    let limit = limit_param(&params, DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX)? as usize;
    // One closure: the levels and the update id are read at the same point.
    let answer = b
        .query(move |e| {
            let id = e.market_by_symbol(&symbol)?;
            let m = MarketInfo::of(e, id)?;
            let book = e.book(id)?;
            let levels = |side| -> Vec<Value> {
                book.depth(side, limit)
                    .into_iter()
                    .map(|(p, q)| json!([m.price(p), m.qty(q)]))
                    .collect()
            };
            Some(json!({
                "lastUpdateId": e.market_update_id(id)?,
                "bids": levels(Side::Buy),
                "asks": levels(Side::Sell),
            }))
        })
        .await?
        .ok_or(ParamError::UnknownSymbol)?;
    json(answer)
}

pub(crate) fn trade_json(m: &MarketInfo, t: &TradeRow) -> Value {
    json!({
        "id": t.trade_id.0,
        "price": m.price(t.price),
        "qty": m.qty(t.qty),
        "quoteQty": m.quote_amount(u128::from(t.quote_qty.get())),
        "time": t.time_ms,
        "isBuyerMaker": t.is_buyer_maker(),
        "isBestMatch": true,
    })
}

pub(super) async fn trades<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let m = market_info(&b, params.symbol("symbol")?).await?;
    let limit = limit_param(&params, ROWS_LIMIT_DEFAULT, ROWS_LIMIT_MAX)?;
    let id = m.id;
    let rows = b.read(move |s| s.recent_trades(id, limit)).await??;
    json(Value::Array(
        rows.iter().map(|t| trade_json(&m, t)).collect(),
    ))
}

pub(super) async fn agg_trades<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let m = market_info(&b, params.symbol("symbol")?).await?;
    let limit = limit_param(&params, ROWS_LIMIT_DEFAULT, ROWS_LIMIT_MAX)?;
    let from_id = params.u64_opt("fromId")?;
    let start = params.u64_opt("startTime")?;
    let end = params.u64_opt("endTime")?;
    if from_id.is_some() && (start.is_some() || end.is_some()) {
        return Err(ParamError::BadCombination.into());
    }
    let id = m.id;
    let rows = b
        .read(move |s| match from_id {
            Some(from) => s.trades_from(id, TradeId(from), limit),
            None => s.trades_between(id, start, end, limit),
        })
        .await??;
    // One aggregate per trade: its id is the trade's.
    let out = rows
        .iter()
        .map(|t| {
            json!({
                "a": t.trade_id.0,
                "p": m.price(t.price),
                "q": m.qty(t.qty),
                "f": t.trade_id.0,
                "l": t.trade_id.0,
                "T": t.time_ms,
                "m": t.is_buyer_maker(),
                "M": true,
            })
        })
        .collect();
    json(Value::Array(out))
}

/// A kline interval: one the read model keeps, or `1s`, built from trades.
#[derive(Clone, Copy, Debug)]
enum KlineInterval {
    Second,
    Stored(Interval),
}

pub(crate) fn kline_json(m: &MarketInfo, k: &Kline) -> Value {
    json!([
        k.open_time_ms,
        m.price(k.open),
        m.price(k.high),
        m.price(k.low),
        m.price(k.close),
        m.qty(k.base_volume),
        k.close_time_ms,
        m.quote_amount(u128::from(k.quote_volume.get())),
        k.trade_count,
        m.qty(k.taker_buy_base),
        m.quote_amount(u128::from(k.taker_buy_quote.get())),
        "0",
    ])
}

/// One-second klines from trades (ascending by trade id, hence by time).
fn second_klines(trades: &[TradeRow]) -> Vec<Kline> {
    let mut out: Vec<Kline> = Vec::new();
    for t in trades {
        let open_time_ms = t.time_ms / 1_000 * 1_000;
        let buy = t.taker_side == Side::Buy;
        let add_qty = |a: QtyLots, b: QtyLots| a.checked_add(b).unwrap_or(QtyLots::MAX);
        let add_amt = |a: Amount, b: Amount| a.checked_add(b).unwrap_or(Amount::MAX);
        match out.last_mut() {
            Some(k) if k.open_time_ms == open_time_ms => {
                k.high = k.high.max(t.price);
                k.low = k.low.min(t.price);
                k.close = t.price;
                k.base_volume = add_qty(k.base_volume, t.qty);
                k.quote_volume = add_amt(k.quote_volume, t.quote_qty);
                k.trade_count += 1;
                if buy {
                    k.taker_buy_base = add_qty(k.taker_buy_base, t.qty);
                    k.taker_buy_quote = add_amt(k.taker_buy_quote, t.quote_qty);
                }
            }
            _ => out.push(Kline {
                open_time_ms,
                close_time_ms: open_time_ms + 999,
                open: t.price,
                high: t.price,
                low: t.price,
                close: t.price,
                base_volume: t.qty,
                quote_volume: t.quote_qty,
                trade_count: 1,
                taker_buy_base: if buy { t.qty } else { QtyLots::ZERO },
                taker_buy_quote: if buy { t.quote_qty } else { Amount::ZERO },
            }),
        }
    }
    out
}

pub(super) async fn klines<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let m = market_info(&b, params.symbol("symbol")?).await?;
    let interval = match params.required("interval")? {
        "1s" => KlineInterval::Second,
        text => KlineInterval::Stored(Interval::parse(text).ok_or(ParamError::InvalidInterval)?),
    };
    let start = params.u64_opt("startTime")?;
    let end = params.u64_opt("endTime")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(ParamError::InvalidValue {
                name: "startTime".to_owned(),
            }
            .into());
        }
    }
    let limit = limit_param(&params, ROWS_LIMIT_DEFAULT, ROWS_LIMIT_MAX)?;
    let id = m.id;
    let rows = match interval {
        KlineInterval::Stored(i) => {
            b.read(move |s| s.klines(id, i, start, end, limit))
                .await??
        }
        KlineInterval::Second => {
            let from = start.map(|s| s / 1_000 * 1_000);
            let trades = b
                .read(move |s| s.trades_between(id, from, end, SECOND_KLINE_TRADES_MAX))
                .await??;
            let capped = trades.len() >= SECOND_KLINE_TRADES_MAX as usize;
            let mut ks = second_klines(&trades);
            let limit = limit as usize;
            if start.is_some() {
                // The last bucket may be cut short by the cap.
                if capped && ks.len() > 1 {
                    ks.pop();
                }
                ks.truncate(limit);
            } else {
                // The first bucket may be cut short by the cap.
                if capped && ks.len() > 1 {
                    ks.remove(0);
                }
                let skip = ks.len().saturating_sub(limit);
                ks.drain(..skip);
            }
            ks
        }
    };
    json(Value::Array(
        rows.iter().map(|k| kline_json(&m, k)).collect(),
    ))
}

/// Best bid and ask of each market, from the engine.
type Top = (
    MarketInfo,
    Option<(PriceTicks, QtyLots)>,
    Option<(PriceTicks, QtyLots)>,
);

async fn tops<B: Backend>(b: &B, sel: &Selection) -> Result<Vec<Top>, Fail> {
    let markets = select(all_markets(b).await?, sel)?;
    Ok(b.query(move |e| {
        markets
            .into_iter()
            .map(|m| {
                let book = e.book(m.id);
                let bid = book.and_then(|bk| bk.best_bid());
                let ask = book.and_then(|bk| bk.best_ask());
                (m, bid, ask)
            })
            .collect()
    })
    .await?)
}

/// `{…}` for one symbol (`symbol=`), `[…]` otherwise.
fn one_or_many(sel: &Selection, mut rows: Vec<Value>) -> HttpResult {
    match sel {
        Selection::One(_) => json(rows.pop().unwrap_or(Value::Null)),
        _ => json(Value::Array(rows)),
    }
}

fn level(m: &MarketInfo, l: Option<(PriceTicks, QtyLots)>) -> (String, String) {
    let (p, q) = l.unwrap_or((PriceTicks::ZERO, QtyLots::ZERO));
    (m.price(p), m.qty(q))
}

/// Binance's `priceChangePercent`: 100 × (last − open) / open, three decimals,
/// truncated toward zero.
fn change_percent(open: u128, last: u128) -> String {
    let scale = match Scale::new(3) {
        Some(s) => s,
        None => unreachable!("scale 3 is below the maximum"),
    };
    if open == 0 {
        return decimal(0, scale);
    }
    let (neg, diff) = if last >= open {
        (false, last - open)
    } else {
        (true, open - last)
    };
    signed_decimal(neg, diff * 100_000 / open, scale)
}

pub(crate) fn ticker_json(
    m: &MarketInfo,
    bid: Option<(PriceTicks, QtyLots)>,
    ask: Option<(PriceTicks, QtyLots)>,
    s: &TickerStats,
    now_ms: u64,
) -> Value {
    let tick = u128::from(m.spec.tick.get());
    let (last, last_qty) = s.last.unwrap_or((PriceTicks::ZERO, QtyLots::ZERO));
    // With no trade in the window, the window opened (and stayed) at the last price.
    let open = s.open.unwrap_or(last);
    let high = s.high.unwrap_or(last);
    let low = s.low.unwrap_or(last);
    let (open_q, last_q) = (u128::from(open.get()) * tick, u128::from(last.get()) * tick);
    let (neg, change) = if last_q >= open_q {
        (false, last_q - open_q)
    } else {
        (true, open_q - last_q)
    };
    // Σ quote / Σ base, in quote minor units per whole base unit, truncated.
    let base_minor = u128::from(s.base_volume.get()) * u128::from(m.spec.lot.get());
    let weighted = (u128::from(s.quote_volume.get()) * u128::from(m.base_scale.factor()))
        .checked_div(base_minor)
        .unwrap_or(0);
    let (bid_p, bid_q) = level(m, bid);
    let (ask_p, ask_q) = level(m, ask);
    json!({
        "symbol": m.symbol,
        "priceChange": signed_decimal(neg, change, m.quote_scale),
        "priceChangePercent": change_percent(open_q, last_q),
        "weightedAvgPrice": m.quote_amount(weighted),
        "prevClosePrice": m.price(s.prev_close.unwrap_or(PriceTicks::ZERO)),
        "lastPrice": m.price(last),
        "lastQty": m.qty(last_qty),
        "bidPrice": bid_p,
        "bidQty": bid_q,
        "askPrice": ask_p,
        "askQty": ask_q,
        "openPrice": m.price(open),
        "highPrice": m.price(high),
        "lowPrice": m.price(low),
        "volume": m.qty(s.base_volume),
        "quoteVolume": m.quote_amount(u128::from(s.quote_volume.get())),
        "openTime": now_ms.saturating_sub(DAY_MS),
        "closeTime": now_ms,
        "firstId": s.first_id.map_or(-1, |t| i128::from(t.0)),
        "lastId": s.last_id.map_or(-1, |t| i128::from(t.0)),
        "count": s.count,
    })
}

pub(super) async fn ticker_24hr<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let sel = selection(&params)?;
    let tops = tops(&b, &sel).await?;
    let now = b.now_ms();
    let ids: Vec<MarketId> = tops.iter().map(|(m, _, _)| m.id).collect();
    let from = now.saturating_sub(DAY_MS);
    let stats = b
        .read(move |s| {
            ids.into_iter()
                .map(|id| s.ticker_stats(id, from, now))
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    let rows = tops
        .iter()
        .zip(stats.iter())
        .map(|((m, bid, ask), s)| ticker_json(m, *bid, *ask, s, now))
        .collect();
    one_or_many(&sel, rows)
}

pub(super) async fn ticker_price<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let sel = selection(&params)?;
    let markets = select(all_markets(&b).await?, &sel)?;
    let rows = b
        .query(move |e| {
            markets
                .iter()
                .map(|m| {
                    let last = e.last_price(m.id).unwrap_or(PriceTicks::ZERO);
                    json!({ "symbol": m.symbol, "price": m.price(last) })
                })
                .collect()
        })
        .await?;
    one_or_many(&sel, rows)
}

pub(super) async fn book_ticker<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let sel = selection(&params)?;
    let rows = tops(&b, &sel)
        .await?
        .iter()
        .map(|(m, bid, ask)| {
            let (bid_p, bid_q) = level(m, *bid);
            let (ask_p, ask_q) = level(m, *ask);
            json!({
                "symbol": m.symbol,
                "bidPrice": bid_p,
                "bidQty": bid_q,
                "askPrice": ask_p,
                "askQty": ask_q,
            })
        })
        .collect();
    one_or_many(&sel, rows)
}

// ---- shared with the WebSocket streams (crate::ws) ---------------------------------

impl MarketInfo {
    /// Every market, by id.
    pub(crate) fn every(engine: &kura_engine::Engine) -> Vec<MarketInfo> {
        MarketInfo::all(engine)
    }

    pub(crate) fn market_id(&self) -> MarketId {
        self.id
    }

    /// The exchange symbol (`BTCJPY`).
    pub(crate) fn symbol_name(&self) -> &str {
        &self.symbol
    }

    /// The quote asset's symbol (fees are charged in it).
    pub(crate) fn quote_asset(&self) -> &str {
        &self.quote
    }

    /// A price as REST prints it.
    pub(crate) fn price_text(&self, p: PriceTicks) -> String {
        self.price(p)
    }

    /// A quantity as REST prints it.
    pub(crate) fn qty_text(&self, q: QtyLots) -> String {
        self.qty(q)
    }

    /// Quote minor units as REST prints them.
    pub(crate) fn quote_text(&self, minor: u128) -> String {
        self.quote_amount(minor)
    }

    /// A number of lots (a sum possibly wider than 64 bits) as a base-asset decimal.
    pub(crate) fn lots_text(&self, lots: u128) -> String {
        decimal(
            lots.saturating_mul(u128::from(self.spec.lot.get())),
            self.base_scale,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_change() {
        assert_eq!(change_percent(10_000, 10_050), "0.500");
        assert_eq!(change_percent(10_000, 9_949), "-0.510");
        assert_eq!(change_percent(0, 5), "0.000");
        assert_eq!(change_percent(3, 4), "33.333");
    }
}
