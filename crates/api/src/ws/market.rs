//! Market streams of one connection: stream names, subscriptions, and the events
//! derived from the feed.
//!
//! Depth diffs, trades and aggregate trades are sent as their batch arrives. Partial
//! books, book tickers, tickers and klines are marked when a batch changes them and sent
//! by [`MarketStreams::flush`] (every 100 ms for `@100ms` and book tickers, every
//! second otherwise), with one engine query for all of them.

use super::conn::{Closing, Outbox};
use crate::backend::{Backend, BackendError};
use crate::feed::{BookDiff, Published};
use crate::http::{kline_json, ticker_json, trade_json, MarketInfo, DAY_MS};
use kura_engine::{EventKind, Side};
use kura_store::{Interval, Kline, TickerStats, TradeRow};
use kura_units::{Amount, MarketId, PriceTicks, QtyLots, TradeId};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Flush ticks (100 ms each) per slow (1000 ms) flush.
const SLOW_EVERY_TICKS: u64 = 10;
/// A 24-hour ticker is rebuilt from the read model this often, so that trades leaving
/// the window drop out.
const TICKER_RESEED_MS: u64 = 60_000;
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

    fn name(self) -> &'static str {
        match self {
            Span::Second => "1s",
            Span::Stored(i) => i.as_str(),
        }
    }

    fn open_time(self, time_ms: u64) -> u64 {
        match self {
            Span::Second => time_ms / 1_000 * 1_000,
            Span::Stored(i) => i.open_time(time_ms),
        }
    }

    fn close_time(self, open_ms: u64) -> u64 {
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
    text: String,
    /// Upper-case exchange symbol; `None` for `!miniTicker@arr`.
    symbol: Option<String>,
    kind: Kind,
    /// `@100ms`.
    fast: bool,
}

impl StreamName {
    /// Parse Binance's stream names (symbols in lower case).
    pub(crate) fn parse(text: &str) -> Option<StreamName> {
        if text == "!miniTicker@arr" {
            return Some(StreamName {
                text: text.to_owned(),
                symbol: None,
                kind: Kind::AllMiniTickers,
                fast: false,
            });
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
        Some(StreamName {
            text: text.to_owned(),
            symbol: Some(symbol.to_ascii_uppercase()),
            kind,
            fast,
        })
    }
}

/// One subscription, resolved to its market (`None`: no such market; never sends).
#[derive(Clone, Debug)]
struct Sub {
    name: StreamName,
    market: Option<MarketId>,
}

/// A 24-hour ticker kept from the feed.
#[derive(Clone, Debug, Default)]
struct TickerState {
    stats: TickerStats,
    /// Trades up to this id are already in `stats`.
    counted_upto: Option<TradeId>,
    seeded_ms: u64,
}

/// The open kline of one market and interval.
#[derive(Clone, Debug)]
struct KlineState {
    kline: Option<OpenKline>,
    counted_upto: Option<TradeId>,
}

#[derive(Clone, Debug)]
struct OpenKline {
    k: Kline,
    first_id: Option<TradeId>,
    last_id: Option<TradeId>,
    /// Sent with `x: true` already.
    closed_sent: bool,
}

/// The market streams of one connection.
#[derive(Debug)]
pub(crate) struct MarketStreams {
    pub(crate) combined: bool,
    limit: usize,
    subs: BTreeMap<String, Sub>,
    markets: Vec<MarketInfo>,
    tickers: BTreeMap<MarketId, TickerState>,
    klines: BTreeMap<(MarketId, Span), KlineState>,
    /// Markets whose book changed since the last fast / slow flush.
    book_fast: BTreeSet<MarketId>,
    book_slow: BTreeSet<MarketId>,
    /// Markets that traded since the last slow flush.
    traded: BTreeSet<MarketId>,
    klines_dirty: BTreeSet<(MarketId, Span)>,
    book_tickers_sent: BTreeMap<MarketId, Value>,
    ticks: u64,
}

/// A trade as the streams need it.
#[derive(Clone, Copy, Debug)]
struct TradeSeen {
    market: MarketId,
    trade: TradeId,
    price: PriceTicks,
    qty: QtyLots,
    quote_qty: Amount,
    taker_side: Side,
    time_ms: u64,
}

impl MarketStreams {
    pub(crate) fn new(combined: bool, limit: usize) -> MarketStreams {
        MarketStreams {
            combined,
            limit,
            subs: BTreeMap::new(),
            markets: Vec::new(),
            tickers: BTreeMap::new(),
            klines: BTreeMap::new(),
            book_fast: BTreeSet::new(),
            book_slow: BTreeSet::new(),
            traded: BTreeSet::new(),
            klines_dirty: BTreeSet::new(),
            book_tickers_sent: BTreeMap::new(),
            ticks: 0,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Subscribed names, in order.
    pub(crate) fn list(&self) -> Vec<String> {
        self.subs.keys().cloned().collect()
    }

    fn market(&self, id: MarketId) -> Option<&MarketInfo> {
        self.markets.iter().find(|m| m.market_id() == id)
    }

    fn market_by_symbol(&self, symbol: &str) -> Option<MarketId> {
        self.markets
            .iter()
            .find(|m| m.symbol_name() == symbol)
            .map(MarketInfo::market_id)
    }

    /// Add subscriptions (repeats are no-ops). `Ok(false)`: over the limit, nothing
    /// added.
    pub(crate) async fn subscribe<B: Backend>(
        &mut self,
        b: &B,
        names: Vec<StreamName>,
    ) -> Result<bool, BackendError> {
        let fresh: BTreeSet<&str> = names
            .iter()
            .map(|n| n.text.as_str())
            .filter(|t| !self.subs.contains_key(*t))
            .collect();
        if self.subs.len() + fresh.len() > self.limit {
            return Ok(false);
        }
        let unknown = names.iter().any(|n| {
            n.symbol
                .as_deref()
                .is_some_and(|s| self.market_by_symbol(s).is_none())
        });
        if self.markets.is_empty() || unknown {
            self.markets = b.query(MarketInfo::every).await?;
        }
        for name in names {
            let market = name
                .symbol
                .as_deref()
                .and_then(|s| self.market_by_symbol(s));
            match (name.kind, market) {
                (Kind::Partial(_) | Kind::BookTicker, Some(m)) => {
                    self.book_fast.insert(m);
                    self.book_slow.insert(m);
                    self.book_tickers_sent.remove(&m);
                }
                (Kind::Ticker | Kind::MiniTicker, Some(m)) => {
                    self.seed_ticker(b, m).await?;
                    self.traded.insert(m);
                }
                (Kind::AllMiniTickers, _) => {
                    let ids: Vec<MarketId> =
                        self.markets.iter().map(MarketInfo::market_id).collect();
                    for m in ids {
                        self.seed_ticker(b, m).await?;
                        self.traded.insert(m);
                    }
                }
                (Kind::Kline(span), Some(m)) => {
                    self.seed_kline(b, m, span).await?;
                    self.klines_dirty.insert((m, span));
                }
                _ => {}
            }
            self.subs.insert(name.text.clone(), Sub { name, market });
        }
        Ok(true)
    }

    pub(crate) fn unsubscribe(&mut self, names: &[StreamName]) {
        for n in names {
            self.subs.remove(&n.text);
        }
    }

    async fn seed_ticker<B: Backend>(&mut self, b: &B, m: MarketId) -> Result<(), BackendError> {
        if self.tickers.contains_key(&m) {
            return Ok(());
        }
        let state = read_ticker(b, m).await?;
        self.tickers.insert(m, state);
        Ok(())
    }

    async fn seed_kline<B: Backend>(
        &mut self,
        b: &B,
        m: MarketId,
        span: Span,
    ) -> Result<(), BackendError> {
        if self.klines.contains_key(&(m, span)) {
            return Ok(());
        }
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
        self.klines.insert(
            (m, span),
            KlineState {
                kline: kline.map(|k| OpenKline {
                    k,
                    first_id,
                    last_id: last,
                    closed_sent: false,
                }),
                counted_upto: last,
            },
        );
        Ok(())
    }

    fn wants(&self, market: MarketId, pred: impl Fn(Kind) -> bool) -> bool {
        self.subs
            .values()
            .any(|s| s.market == Some(market) && pred(s.name.kind))
    }

    /// Send `data` on every subscription of `market` of a kind `pred` accepts.
    fn emit(
        &self,
        out: &mut Outbox,
        market: Option<MarketId>,
        pred: impl Fn(&StreamName) -> bool,
        data: &Value,
    ) -> Result<(), Closing> {
        for sub in self.subs.values() {
            if sub.market == market && pred(&sub.name) {
                if self.combined {
                    out.send(&json!({ "stream": sub.name.text, "data": data }))?;
                } else {
                    out.send(data)?;
                }
            }
        }
        Ok(())
    }

    /// Everything one batch changes: diffs and trades are sent now, the rest marked.
    pub(crate) fn on_batch(&mut self, batch: &Published, out: &mut Outbox) -> Result<(), Closing> {
        if self.subs.is_empty() && self.tickers.is_empty() && self.klines.is_empty() {
            return Ok(());
        }
        let at = batch.timestamp_ms();
        for diff in &batch.books {
            self.book_fast.insert(diff.market);
            self.book_slow.insert(diff.market);
            if self.wants(diff.market, |k| k == Kind::Depth) {
                if let Some(m) = self.market(diff.market) {
                    let data = depth_update(m, diff, at);
                    self.emit(out, Some(diff.market), |n| n.kind == Kind::Depth, &data)?;
                }
            }
        }
        for (ctx, events) in batch.commands.iter() {
            for e in events {
                if let EventKind::Trade {
                    market,
                    trade,
                    price,
                    qty,
                    quote_qty,
                    taker_side,
                    ..
                } = &e.kind
                {
                    let t = TradeSeen {
                        market: *market,
                        trade: *trade,
                        price: *price,
                        qty: *qty,
                        quote_qty: *quote_qty,
                        taker_side: *taker_side,
                        time_ms: ctx.timestamp_ms,
                    };
                    self.on_trade(&t, at, out)?;
                }
            }
        }
        Ok(())
    }

    fn on_trade(&mut self, t: &TradeSeen, at: u64, out: &mut Outbox) -> Result<(), Closing> {
        if self.wants(t.market, |k| matches!(k, Kind::Trade | Kind::AggTrade)) {
            if let Some(m) = self.market(t.market) {
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
                self.emit(out, Some(t.market), |n| n.kind == Kind::Trade, &trade)?;
                self.emit(out, Some(t.market), |n| n.kind == Kind::AggTrade, &agg)?;
            }
        }
        if let Some(state) = self.tickers.get_mut(&t.market) {
            if state.counted_upto.is_none_or(|c| t.trade > c) {
                count_ticker(&mut state.stats, t);
                state.counted_upto = Some(t.trade);
                self.traded.insert(t.market);
            }
        }
        let spans: Vec<Span> = self
            .klines
            .keys()
            .filter(|(m, _)| *m == t.market)
            .map(|(_, s)| *s)
            .collect();
        for span in spans {
            let closed = {
                let Some(state) = self.klines.get_mut(&(t.market, span)) else {
                    continue;
                };
                if state.counted_upto.is_some_and(|c| t.trade <= c) {
                    continue;
                }
                state.counted_upto = Some(t.trade);
                count_kline(state, span, t)
            };
            if let Some(old) = closed {
                self.send_kline(out, t.market, span, &old, true, at)?;
            }
            self.klines_dirty.insert((t.market, span));
        }
        Ok(())
    }

    fn send_kline(
        &self,
        out: &mut Outbox,
        market: MarketId,
        span: Span,
        k: &OpenKline,
        closed: bool,
        at: u64,
    ) -> Result<(), Closing> {
        let Some(m) = self.market(market) else {
            return Ok(());
        };
        let data = kline_event(m, span, k, closed, at);
        self.emit(out, Some(market), |n| n.kind == Kind::Kline(span), &data)
    }

    /// Send what the timer is due for.
    pub(crate) async fn flush<B: Backend>(
        &mut self,
        b: &B,
        out: &mut Outbox,
    ) -> Result<(), Closing> {
        self.ticks += 1;
        let slow = self.ticks.is_multiple_of(SLOW_EVERY_TICKS);
        if self.subs.is_empty() {
            return Ok(());
        }
        let now = b.now_ms();
        // Which markets need the engine's book: partial books and book tickers that
        // changed, and tickers (best bid and ask) that traded.
        let mut partial: Vec<(String, MarketId, usize)> = Vec::new();
        let mut book_tickers: BTreeSet<MarketId> = BTreeSet::new();
        let mut tickers: BTreeSet<MarketId> = BTreeSet::new();
        for sub in self.subs.values() {
            let Some(m) = sub.market else { continue };
            match sub.name.kind {
                Kind::Partial(levels) => {
                    let due = if sub.name.fast {
                        self.book_fast.contains(&m)
                    } else {
                        slow && self.book_slow.contains(&m)
                    };
                    if due {
                        partial.push((sub.name.text.clone(), m, levels));
                    }
                }
                Kind::BookTicker if self.book_fast.contains(&m) => {
                    book_tickers.insert(m);
                }
                Kind::Ticker | Kind::MiniTicker if slow && self.traded.contains(&m) => {
                    tickers.insert(m);
                }
                _ => {}
            }
        }
        let all_minis = slow
            && self
                .subs
                .values()
                .any(|s| s.name.kind == Kind::AllMiniTickers);
        self.book_fast.clear();
        if slow {
            self.book_slow.clear();
        }
        let needed: BTreeSet<MarketId> = partial
            .iter()
            .map(|(_, m, _)| *m)
            .chain(book_tickers.iter().copied())
            .chain(tickers.iter().copied())
            .collect();
        let books = if needed.is_empty() {
            BTreeMap::new()
        } else {
            match b.query(move |e| read_books(e, &needed)).await {
                Ok(books) => books,
                Err(_) => {
                    out.close(1013, "the exchange is unavailable");
                    return Err(Closing);
                }
            }
        };
        for (name, m, levels) in &partial {
            let (Some(book), Some(info)) = (books.get(m), self.market(*m)) else {
                continue;
            };
            let side = |levels_of: &[(PriceTicks, QtyLots)]| -> Vec<Value> {
                levels_of
                    .iter()
                    .take(*levels)
                    .map(|(p, q)| json!([info.price_text(*p), info.qty_text(*q)]))
                    .collect()
            };
            let data = json!({
                "lastUpdateId": book.update_id,
                "bids": side(&book.bids),
                "asks": side(&book.asks),
            });
            self.emit(out, Some(*m), |n| &n.text == name, &data)?;
        }
        for m in &book_tickers {
            let (Some(book), Some(info)) = (books.get(m), self.market(*m)) else {
                continue;
            };
            let level = |l: Option<&(PriceTicks, QtyLots)>| {
                let (p, q) = l.copied().unwrap_or((PriceTicks::ZERO, QtyLots::ZERO));
                (info.price_text(p), info.qty_text(q))
            };
            let (bp, bq) = level(book.bids.first());
            let (ap, aq) = level(book.asks.first());
            let top = json!([bp, bq, ap, aq]);
            if self.book_tickers_sent.get(m) == Some(&top) {
                continue;
            }
            let data = json!({
                "u": book.update_id, "s": info.symbol_name(),
                "b": bp, "B": bq, "a": ap, "A": aq,
            });
            self.emit(out, Some(*m), |n| n.kind == Kind::BookTicker, &data)?;
            self.book_tickers_sent.insert(*m, top);
        }
        if slow {
            self.flush_slow(b, out, &books, &tickers, all_minis, now)
                .await?;
        }
        Ok(())
    }

    async fn flush_slow<B: Backend>(
        &mut self,
        b: &B,
        out: &mut Outbox,
        books: &BTreeMap<MarketId, BookTop>,
        tickers: &BTreeSet<MarketId>,
        all_minis: bool,
        now: u64,
    ) -> Result<(), Closing> {
        // Re-seed 24-hour tickers now and then, so old trades leave the window.
        let stale: Vec<MarketId> = self
            .tickers
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.seeded_ms) >= TICKER_RESEED_MS)
            .map(|(m, _)| *m)
            .collect();
        for m in stale {
            match read_ticker(b, m).await {
                Ok(state) => {
                    self.tickers.insert(m, state);
                }
                Err(_) => {
                    out.close(1013, "the exchange is unavailable");
                    return Err(Closing);
                }
            }
        }
        for m in tickers {
            let (Some(info), Some(state)) = (self.market(*m), self.tickers.get(m)) else {
                continue;
            };
            let top = books.get(m);
            let rest = ticker_json(
                info,
                top.and_then(|t| t.bids.first().copied()),
                top.and_then(|t| t.asks.first().copied()),
                &state.stats,
                now,
            );
            let full = ticker_event(&rest, now);
            let mini = mini_ticker_event(&rest, now);
            self.emit(out, Some(*m), |n| n.kind == Kind::Ticker, &full)?;
            self.emit(out, Some(*m), |n| n.kind == Kind::MiniTicker, &mini)?;
        }
        if all_minis {
            let minis: Vec<Value> = self
                .traded
                .iter()
                .filter_map(|m| {
                    let info = self.market(*m)?;
                    let state = self.tickers.get(m)?;
                    Some(mini_ticker_event(
                        &ticker_json(info, None, None, &state.stats, now),
                        now,
                    ))
                })
                .collect();
            if !minis.is_empty() {
                self.emit(
                    out,
                    None,
                    |n| n.kind == Kind::AllMiniTickers,
                    &Value::Array(minis),
                )?;
            }
        }
        self.traded.clear();
        // Klines: the changed ones, and those whose interval ended (sent closed once).
        let keys: Vec<(MarketId, Span)> = self.klines.keys().copied().collect();
        for key in keys {
            let (m, span) = key;
            let dirty = self.klines_dirty.remove(&key);
            let Some(open) = self.klines.get(&key).and_then(|s| s.kline.clone()) else {
                continue;
            };
            let ended = now > open.k.close_time_ms;
            if ended && !open.closed_sent {
                self.send_kline(out, m, span, &open, true, now)?;
                if let Some(state) = self.klines.get_mut(&key) {
                    state.kline = None;
                }
            } else if dirty && !ended {
                self.send_kline(out, m, span, &open, false, now)?;
            }
        }
        Ok(())
    }
}

/// The best levels of one market and its update id, read together.
#[derive(Debug)]
struct BookTop {
    update_id: u64,
    bids: Vec<(PriceTicks, QtyLots)>,
    asks: Vec<(PriceTicks, QtyLots)>,
}

fn read_books(
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

async fn read_ticker<B: Backend>(b: &B, m: MarketId) -> Result<TickerState, BackendError> {
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

fn depth_update(m: &MarketInfo, d: &BookDiff, at: u64) -> Value {
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

fn kline_event(m: &MarketInfo, span: Span, k: &OpenKline, closed: bool, at: u64) -> Value {
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
