//! Market streams: stream names, the names one connection subscribed to, and what the
//! stream hub ([`super::streams`]) keeps and renders for every connection at once
//! (ticker and kline state, the event renderers).
//!
//! Trades and aggregate trades are sent as their batch arrives; depth diffs are merged
//! until their stream's flush. Partial books, book tickers, tickers and klines are
//! marked when a batch changes them and sent by the hub's flush (every 100 ms for
//! `@100ms` and book tickers, every second otherwise), with one engine query for all of
//! them.

use crate::backend::{Backend, BackendError};
use crate::feed::BookDiff;
use crate::http::{kline_json, ticker_json, trade_json, MarketInfo, DAY_MS};
use kura_engine::Side;
use kura_store::{Interval, Kline, TickerStats, TradeRow};
use kura_units::{Amount, MarketId, PriceTicks, QtyLots, TradeId};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Partial-book depths Binance offers.
const PARTIAL_LEVELS: [usize; 3] = [5, 10, 20];
/// A kline interval: one the read model keeps, or one second (built from trades only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Span {
    Second,
    Stored(Interval),
}

impl Span {
    fn parse(text: &str) -> Option<Span> {
        if text == "1s" {
            Some(Span::Second)
        } else {
            Interval::parse(text).map(Span::Stored)
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Span::Second => "1s",
            Span::Stored(i) => i.as_str(),
        }
    }

    pub(crate) fn open_time(self, time_ms: u64) -> u64 {
        match self {
            Span::Second => time_ms / 1_000 * 1_000,
            Span::Stored(i) => i.open_time(time_ms),
        }
    }

    pub(crate) fn close_time(self, open_ms: u64) -> u64 {
        match self {
            Span::Second => open_ms + 999,
            Span::Stored(i) => i.close_time(open_ms),
        }
    }
}

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Depth,
    Partial(usize),
    Trade,
    AggTrade,
    Kline(Span),
    MiniTicker,
    Ticker,
    BookTicker,
    AllMiniTickers,
}

/// A parsed stream name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamName {
    /// As the client wrote it (listed back and used as `stream` in combined events).
    pub(crate) text: String,
    /// Upper-case exchange symbol; `None` for `!miniTicker@arr`.
    pub(crate) symbol: Option<String>,
    pub(crate) kind: Kind,
    /// `@100ms`.
    pub(crate) fast: bool,
}

impl StreamName {
    /// Parse Binance's stream names (symbols in lower case).
    pub(crate) fn parse(text: &str) -> Option<StreamName> {
        let (symbol, kind, fast) = StreamName::classify(text)?;
        Some(StreamName {
            text: text.to_owned(),
            symbol: symbol.map(str::to_ascii_uppercase),
            kind,
            fast,
        })
    }

    /// Whether `text` is a stream name (what [`StreamName::parse`] checks, without
    /// allocating: a request naming a thousand streams is checked whole first).
    pub(crate) fn is_valid(text: &str) -> bool {
        StreamName::classify(text).is_some()
    }

    /// The lower-case symbol (`None` for `!miniTicker@arr`), kind and speed of a name.
    fn classify(text: &str) -> Option<(Option<&str>, Kind, bool)> {
        if text == "!miniTicker@arr" {
            return Some((None, Kind::AllMiniTickers, false));
        }
        let (symbol, rest) = text.split_once('@')?;
        let symbol_ok = !symbol.is_empty()
            && symbol.len() <= 20
            && symbol
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !symbol_ok {
            return None;
        }
        let (body, fast) = match rest.rsplit_once('@') {
            Some((body, "100ms")) => (body, true),
            Some((body, "1000ms")) => (body, false),
            Some(_) => return None,
            None => (rest, false),
        };
        let kind = match body {
            "depth" => Kind::Depth,
            "trade" => Kind::Trade,
            "aggTrade" => Kind::AggTrade,
            "miniTicker" => Kind::MiniTicker,
            "ticker" => Kind::Ticker,
            "bookTicker" => Kind::BookTicker,
            other => {
                if let Some(interval) = other.strip_prefix("kline_") {
                    Kind::Kline(Span::parse(interval)?)
                } else if let Some(n) = other.strip_prefix("depth") {
                    let levels: usize = n.parse().ok()?;
                    if !PARTIAL_LEVELS.contains(&levels) || n.starts_with('0') {
                        return None;
                    }
                    Kind::Partial(levels)
                } else {
                    return None;
                }
            }
        };
        // Only depth streams take an update speed.
        if rest.contains("ms") && !matches!(kind, Kind::Depth | Kind::Partial(_)) {
            return None;
        }
        Some((Some(symbol), kind, fast))
    }

    /// The name as the client wrote it.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// The market streams one connection subscribed to (the hub does the sending).
#[derive(Debug)]
pub(crate) struct Subscriptions {
    names: BTreeSet<String>,
    limit: usize,
}

impl Subscriptions {
    pub(crate) fn new(limit: usize) -> Subscriptions {
        Subscriptions {
            names: BTreeSet::new(),
            limit,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Subscribed names, in order.
    pub(crate) fn list(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    /// Add `names` (repeats are no-ops); false, and nothing added, over the limit.
    pub(crate) fn add(&mut self, names: &[&str]) -> bool {
        let mut fresh: HashSet<&str> = HashSet::with_capacity(names.len().min(self.limit + 1));
        for n in names {
            if !self.names.contains(*n) && fresh.insert(n) {
                // Over the limit: no need to look further.
                if self.names.len() + fresh.len() > self.limit {
                    return false;
                }
            }
        }
        self.names.extend(fresh.into_iter().map(str::to_owned));
        true
    }

    pub(crate) fn remove(&mut self, names: &[String]) {
        for n in names {
            self.names.remove(n);
        }
    }

    /// Every name, leaving none.
    pub(crate) fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.names).into_iter().collect()
    }
}

/// A 24-hour ticker kept from the feed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TickerState {
    pub(crate) stats: TickerStats,
    /// Trades up to this id are already in `stats`.
    pub(crate) counted_upto: Option<TradeId>,
    pub(crate) seeded_ms: u64,
}

/// The open kline of one market and interval.
#[derive(Clone, Debug)]
pub(crate) struct KlineState {
    pub(crate) kline: Option<OpenKline>,
    pub(crate) counted_upto: Option<TradeId>,
}

#[derive(Clone, Debug)]
pub(crate) struct OpenKline {
    pub(crate) k: Kline,
    pub(crate) first_id: Option<TradeId>,
    pub(crate) last_id: Option<TradeId>,
    /// Sent with `x: true` already.
    pub(crate) closed_sent: bool,
}

/// A trade as the streams need it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TradeSeen {
    pub(crate) market: MarketId,
    pub(crate) trade: TradeId,
    pub(crate) price: PriceTicks,
    pub(crate) qty: QtyLots,
    pub(crate) quote_qty: Amount,
    pub(crate) taker_side: Side,
    pub(crate) time_ms: u64,
}

/// Count `t` into a ticker unless the ticker counted it already; true if counted.
pub(crate) fn count_ticker_once(state: &mut TickerState, t: &TradeSeen) -> bool {
    if state.counted_upto.is_some_and(|c| t.trade <= c) {
        return false;
    }
    count_ticker(&mut state.stats, t);
    state.counted_upto = Some(t.trade);
    true
}

/// Count `t` into a kline unless it counted it already; returns the previous kline if
/// the trade opened a new interval (to be sent closed).
pub(crate) fn count_kline_once(
    state: &mut KlineState,
    span: Span,
    t: &TradeSeen,
) -> (bool, Option<OpenKline>) {
    if state.counted_upto.is_some_and(|c| t.trade <= c) {
        return (false, None);
    }
    state.counted_upto = Some(t.trade);
    (true, count_kline(state, span, t))
}

/// A kline as of now, from the read model (no kline if the interval has no trade yet).
pub(crate) async fn read_kline<B: Backend>(
    b: &B,
    m: MarketId,
    span: Span,
) -> Result<KlineState, BackendError> {
    let now = b.now_ms();
    let open = span.open_time(now);
    let seeded = b
        .read(move |s| {
            let last = s.recent_trades(m, 1)?.first().map(|t| t.trade_id);
            let (kline, first) = match span {
                Span::Stored(i) => {
                    let k = s.klines(m, i, Some(open), None, 1)?.into_iter().next();
                    let first = match &k {
                        Some(_) => s
                            .trades_between(m, Some(open), None, 1)?
                            .first()
                            .map(|t| t.trade_id),
                        None => None,
                    };
                    (k.filter(|k| k.open_time_ms == open), first)
                }
                Span::Second => (None, None),
            };
            Ok::<_, kura_store::StoreError>((kline, first, last))
        })
        .await?
        .map_err(|e| BackendError::ReadModel(e.to_string()))?;
    let (kline, first_id, last) = seeded;
    Ok(KlineState {
        kline: kline.map(|k| OpenKline {
            k,
            first_id,
            last_id: last,
            closed_sent: false,
        }),
        counted_upto: last,
    })
}

/// Binance's `trade` and `aggTrade` events of one trade.
pub(crate) fn trade_events(m: &MarketInfo, t: &TradeSeen, at: u64) -> (Value, Value) {
    let row = trade_row(t);
    let rest = trade_json(m, &row);
    let field = |k: &str| rest.get(k).cloned().unwrap_or(Value::Null);
    let trade = json!({
        "e": "trade", "E": at, "s": m.symbol_name(), "t": t.trade.0,
        "p": field("price"), "q": field("qty"), "T": t.time_ms,
        "m": field("isBuyerMaker"), "M": true,
    });
    let agg = json!({
        "e": "aggTrade", "E": at, "s": m.symbol_name(), "a": t.trade.0,
        "p": field("price"), "q": field("qty"), "f": t.trade.0, "l": t.trade.0,
        "T": t.time_ms, "m": field("isBuyerMaker"), "M": true,
    });
    (trade, agg)
}

/// A partial book (`@depth<levels>`).
pub(crate) fn partial_book(info: &MarketInfo, book: &BookTop, levels: usize) -> Value {
    let side = |levels_of: &[(PriceTicks, QtyLots)]| -> Vec<Value> {
        levels_of
            .iter()
            .take(levels)
            .map(|(p, q)| json!([info.price_text(*p), info.qty_text(*q)]))
            .collect()
    };
    json!({
        "lastUpdateId": book.update_id,
        "bids": side(&book.bids),
        "asks": side(&book.asks),
    })
}

/// The best bid and ask as text (what decides whether a book ticker changed), and the
/// `bookTicker` event.
pub(crate) fn book_ticker(info: &MarketInfo, book: &BookTop) -> ([String; 4], Value) {
    let level = |l: Option<&(PriceTicks, QtyLots)>| {
        let (p, q) = l.copied().unwrap_or((PriceTicks::ZERO, QtyLots::ZERO));
        (info.price_text(p), info.qty_text(q))
    };
    let (bp, bq) = level(book.bids.first());
    let (ap, aq) = level(book.asks.first());
    let data = json!({
        "u": book.update_id, "s": info.symbol_name(),
        "b": bp, "B": bq, "a": ap, "A": aq,
    });
    ([bp, bq, ap, aq], data)
}

/// The `24hrTicker` and `24hrMiniTicker` events of a market (best bid and ask from
/// `top`, if read).
pub(crate) fn ticker_events(
    info: &MarketInfo,
    top: Option<&BookTop>,
    stats: &TickerStats,
    now: u64,
) -> (Value, Value) {
    let rest = ticker_json(
        info,
        top.and_then(|t| t.bids.first().copied()),
        top.and_then(|t| t.asks.first().copied()),
        stats,
        now,
    );
    (ticker_event(&rest, now), mini_ticker_event(&rest, now))
}

/// One market's entry of `!miniTicker@arr`.
pub(crate) fn mini_ticker(info: &MarketInfo, stats: &TickerStats, now: u64) -> Value {
    mini_ticker_event(&ticker_json(info, None, None, stats, now), now)
}

/// The best levels of one market and its update id, read together.
#[derive(Debug)]
pub(crate) struct BookTop {
    pub(crate) update_id: u64,
    pub(crate) bids: Vec<(PriceTicks, QtyLots)>,
    pub(crate) asks: Vec<(PriceTicks, QtyLots)>,
}

pub(crate) fn read_books(
    e: &kura_engine::Engine,
    markets: &BTreeSet<MarketId>,
) -> BTreeMap<MarketId, BookTop> {
    let deepest = PARTIAL_LEVELS[PARTIAL_LEVELS.len() - 1];
    markets
        .iter()
        .filter_map(|m| {
            let book = e.book(*m)?;
            Some((
                *m,
                BookTop {
                    update_id: e.market_update_id(*m)?,
                    bids: book.depth(Side::Buy, deepest),
                    asks: book.depth(Side::Sell, deepest),
                },
            ))
        })
        .collect()
}

pub(crate) async fn read_ticker<B: Backend>(
    b: &B,
    m: MarketId,
) -> Result<TickerState, BackendError> {
    let now = b.now_ms();
    let from = now.saturating_sub(DAY_MS);
    let (stats, last) = b
        .read(move |s| {
            let stats = s.ticker_stats(m, from, now)?;
            let last = s.recent_trades(m, 1)?.first().map(|t| t.trade_id);
            Ok::<_, kura_store::StoreError>((stats, last))
        })
        .await?
        .map_err(|e| BackendError::ReadModel(e.to_string()))?;
    Ok(TickerState {
        stats,
        counted_upto: last,
        seeded_ms: now,
    })
}

fn trade_row(t: &TradeSeen) -> TradeRow {
    TradeRow {
        trade_id: t.trade,
        market: t.market,
        price: t.price,
        qty: t.qty,
        quote_qty: t.quote_qty,
        maker_order: kura_units::OrderId(0),
        taker_order: kura_units::OrderId(0),
        maker_user: kura_units::UserId(0),
        taker_user: kura_units::UserId(0),
        taker_side: t.taker_side,
        maker_fee: Amount::ZERO,
        taker_fee: Amount::ZERO,
        seq: 0,
        time_ms: t.time_ms,
    }
}

fn add_qty(a: QtyLots, b: QtyLots) -> QtyLots {
    a.checked_add(b).unwrap_or(QtyLots::MAX)
}

fn add_amount(a: Amount, b: Amount) -> Amount {
    a.checked_add(b).unwrap_or(Amount::MAX)
}

fn count_ticker(s: &mut TickerStats, t: &TradeSeen) {
    s.count += 1;
    s.open.get_or_insert(t.price);
    s.high = Some(s.high.map_or(t.price, |h| h.max(t.price)));
    s.low = Some(s.low.map_or(t.price, |l| l.min(t.price)));
    s.base_volume = add_qty(s.base_volume, t.qty);
    s.quote_volume = add_amount(s.quote_volume, t.quote_qty);
    s.first_id.get_or_insert(t.trade);
    s.last_id = Some(t.trade);
    s.last = Some((t.price, t.qty));
}

/// Count a trade into the open kline; returns the previous kline if the trade opened a
/// new interval and the previous one was not yet sent closed.
fn count_kline(state: &mut KlineState, span: Span, t: &TradeSeen) -> Option<OpenKline> {
    let open_ms = span.open_time(t.time_ms);
    let buy = t.taker_side == Side::Buy;
    if let Some(open) = state.kline.as_mut() {
        if open.k.open_time_ms == open_ms {
            let k = &mut open.k;
            k.high = k.high.max(t.price);
            k.low = k.low.min(t.price);
            k.close = t.price;
            k.base_volume = add_qty(k.base_volume, t.qty);
            k.quote_volume = add_amount(k.quote_volume, t.quote_qty);
            k.trade_count += 1;
            if buy {
                k.taker_buy_base = add_qty(k.taker_buy_base, t.qty);
                k.taker_buy_quote = add_amount(k.taker_buy_quote, t.quote_qty);
            }
            open.first_id.get_or_insert(t.trade);
            open.last_id = Some(t.trade);
            return None;
        }
    }
    let previous = state.kline.take().filter(|k| !k.closed_sent);
    state.kline = Some(OpenKline {
        k: Kline {
            open_time_ms: open_ms,
            close_time_ms: span.close_time(open_ms),
            open: t.price,
            high: t.price,
            low: t.price,
            close: t.price,
            base_volume: t.qty,
            quote_volume: t.quote_qty,
            trade_count: 1,
            taker_buy_base: if buy { t.qty } else { QtyLots::ZERO },
            taker_buy_quote: if buy { t.quote_qty } else { Amount::ZERO },
        },
        first_id: Some(t.trade),
        last_id: Some(t.trade),
        closed_sent: false,
    });
    previous
}

pub(crate) fn depth_update(m: &MarketInfo, d: &BookDiff, at: u64) -> Value {
    let levels = |side: &[(PriceTicks, QtyLots)]| -> Vec<Value> {
        side.iter()
            .map(|(p, q)| json!([m.price_text(*p), m.qty_text(*q)]))
            .collect()
    };
    json!({
        "e": "depthUpdate",
        "E": at,
        "s": m.symbol_name(),
        "U": d.first_update_id,
        "u": d.last_update_id,
        "b": levels(&d.bids),
        "a": levels(&d.asks),
    })
}

pub(crate) fn kline_event(
    m: &MarketInfo,
    span: Span,
    k: &OpenKline,
    closed: bool,
    at: u64,
) -> Value {
    let row = kline_json(m, &k.k);
    let at_i = |i: usize| row.get(i).cloned().unwrap_or(Value::Null);
    let id = |t: Option<TradeId>| t.map_or(-1, |t| i128::from(t.0));
    json!({
        "e": "kline",
        "E": at,
        "s": m.symbol_name(),
        "k": {
            "t": k.k.open_time_ms,
            "T": k.k.close_time_ms,
            "s": m.symbol_name(),
            "i": span.name(),
            "f": id(k.first_id),
            "L": id(k.last_id),
            "o": at_i(1),
            "c": at_i(4),
            "h": at_i(2),
            "l": at_i(3),
            "v": at_i(5),
            "n": k.k.trade_count,
            "x": closed,
            "q": at_i(7),
            "V": at_i(9),
            "Q": at_i(10),
            "B": "0",
        },
    })
}

/// Binance's short names for the REST ticker's fields.
const TICKER_FIELDS: [(&str, &str); 20] = [
    ("p", "priceChange"),
    ("P", "priceChangePercent"),
    ("w", "weightedAvgPrice"),
    ("x", "prevClosePrice"),
    ("c", "lastPrice"),
    ("Q", "lastQty"),
    ("b", "bidPrice"),
    ("B", "bidQty"),
    ("a", "askPrice"),
    ("A", "askQty"),
    ("o", "openPrice"),
    ("h", "highPrice"),
    ("l", "lowPrice"),
    ("v", "volume"),
    ("q", "quoteVolume"),
    ("O", "openTime"),
    ("C", "closeTime"),
    ("F", "firstId"),
    ("L", "lastId"),
    ("n", "count"),
];
const MINI_TICKER_FIELDS: [&str; 6] = ["c", "o", "h", "l", "v", "q"];

fn ticker_event(rest: &Value, at: u64) -> Value {
    let mut out = Map::new();
    out.insert("e".into(), json!("24hrTicker"));
    out.insert("E".into(), json!(at));
    out.insert(
        "s".into(),
        rest.get("symbol").cloned().unwrap_or(Value::Null),
    );
    for (short, long) in TICKER_FIELDS {
        out.insert(short.into(), rest.get(long).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn mini_ticker_event(rest: &Value, at: u64) -> Value {
    let mut out = Map::new();
    out.insert("e".into(), json!("24hrMiniTicker"));
    out.insert("E".into(), json!(at));
    out.insert(
        "s".into(),
        rest.get("symbol").cloned().unwrap_or(Value::Null),
    );
    for (short, long) in TICKER_FIELDS {
        if MINI_TICKER_FIELDS.contains(&short) {
            out.insert(short.into(), rest.get(long).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        let p = |s: &str| StreamName::parse(s).map(|n| (n.symbol, n.kind, n.fast));
        let btc = || Some("BTCJPY".to_owned());
        assert_eq!(p("btcjpy@depth"), Some((btc(), Kind::Depth, false)));
        assert_eq!(p("btcjpy@depth@100ms"), Some((btc(), Kind::Depth, true)));
        assert_eq!(p("btcjpy@depth@1000ms"), Some((btc(), Kind::Depth, false)));
        assert_eq!(p("btcjpy@depth5"), Some((btc(), Kind::Partial(5), false)));
        assert_eq!(
            p("btcjpy@depth20@100ms"),
            Some((btc(), Kind::Partial(20), true))
        );
        assert_eq!(p("btcjpy@trade"), Some((btc(), Kind::Trade, false)));
        assert_eq!(p("btcjpy@aggTrade"), Some((btc(), Kind::AggTrade, false)));
        assert_eq!(
            p("btcjpy@kline_1m"),
            Some((btc(), Kind::Kline(Span::Stored(Interval::M1)), false))
        );
        assert_eq!(
            p("btcjpy@kline_1s"),
            Some((btc(), Kind::Kline(Span::Second), false))
        );
        assert_eq!(
            p("btcjpy@miniTicker"),
            Some((btc(), Kind::MiniTicker, false))
        );
        assert_eq!(p("btcjpy@ticker"), Some((btc(), Kind::Ticker, false)));
        assert_eq!(
            p("btcjpy@bookTicker"),
            Some((btc(), Kind::BookTicker, false))
        );
        assert_eq!(
            p("!miniTicker@arr"),
            Some((None, Kind::AllMiniTickers, false))
        );
        for bad in [
            "",
            "0",
            "btcjpy",
            "BTCJPY@trade",
            "btcjpy@depth7",
            "btcjpy@depth05",
            "btcjpy@kline_2m",
            "btcjpy@trade@100ms",
            "btcjpy@depth@50ms",
            "@trade",
            "btcjpy@",
            "btcjpy@ticker@arr",
            "btc jpy@trade",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn subscriptions_count_distinct_new_names_against_the_limit() {
        for t in ["btcjpy@depth@100ms", "!miniTicker@arr", "x1jpy@trade"] {
            assert!(StreamName::is_valid(t), "{t}");
        }
        for t in ["btcjpy@depth7", "BTCJPY@trade", "btcjpy@trade@100ms"] {
            assert!(!StreamName::is_valid(t), "{t}");
        }
        let mut s = Subscriptions::new(3);
        assert!(
            s.add(&["a@trade", "b@trade", "a@trade"]),
            "a repeat counts once"
        );
        assert!(s.add(&["a@trade", "c@trade"]), "only c is new: 3 of 3");
        assert!(!s.add(&["d@trade"]), "a fourth");
        assert_eq!(s.list(), ["a@trade", "b@trade", "c@trade"]);
        s.remove(&["b@trade".to_owned()]);
        let many: Vec<String> = (0..1_100).map(|i| format!("x{i}jpy@trade")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(!s.add(&many), "nothing of an oversized request is added");
        assert!(s.add(&["d@trade"]));
        assert_eq!(s.take().len(), 3);
        assert!(s.list().is_empty());
    }

    #[test]
    fn klines_roll_over_and_return_the_previous_one() {
        let t = |id: u64, time_ms: u64, price: u64| TradeSeen {
            market: MarketId(0),
            trade: TradeId(id),
            price: PriceTicks::new(price),
            qty: QtyLots::new(2),
            quote_qty: Amount::new(price * 2),
            taker_side: Side::Buy,
            time_ms,
        };
        let span = Span::Stored(Interval::M1);
        let mut s = KlineState {
            kline: None,
            counted_upto: None,
        };
        assert!(count_kline(&mut s, span, &t(1, 60_000, 10)).is_none());
        assert!(count_kline(&mut s, span, &t(2, 61_000, 12)).is_none());
        let k = s.kline.as_ref().map(|k| k.k.clone()).expect("open kline");
        assert_eq!(
            (k.open.get(), k.high.get(), k.close.get(), k.trade_count),
            (10, 12, 12, 2)
        );
        let prev = count_kline(&mut s, span, &t(3, 120_500, 11)).expect("rolled over");
        assert_eq!(prev.last_id, Some(TradeId(2)));
        let now = s.kline.as_ref().expect("new kline");
        assert_eq!(
            (now.k.open_time_ms, now.k.close_time_ms),
            (120_000, 179_999)
        );
        assert_eq!(now.first_id, Some(TradeId(3)));
    }
}
