//! Read queries, shaped for the Binance-compatible REST history endpoints.
//!
//! Paging follows Binance: with a `from_id` or `start_ms`, rows are returned in ascending
//! order from there; with neither, the most recent `limit` rows are returned, still in
//! ascending order.

use crate::project::int;
use crate::{Interval, Store, StoreError};
use kura_engine::{CancelReason, ExpireReason, Side};
use kura_units::{Amount, AssetId, MarketId, OrderId, PriceTicks, QtyLots, TradeId, UserId};
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    /// Expired by self-trade prevention.
    ExpiredInMatch,
}

impl OrderStatus {
    /// The status of an order cancelled for `reason`.
    pub const fn cancelled(reason: CancelReason) -> OrderStatus {
        match reason {
            CancelReason::ByUser | CancelReason::CancelAll => OrderStatus::Canceled,
            CancelReason::SelfTradePrevention => OrderStatus::ExpiredInMatch,
        }
    }

    /// The status of an order expired for `reason`.
    pub const fn expired(reason: ExpireReason) -> OrderStatus {
        match reason {
            ExpireReason::NoLiquidity | ExpireReason::FokUnfillable => OrderStatus::Expired,
            ExpireReason::SelfTradePrevention => OrderStatus::ExpiredInMatch,
        }
    }

    /// Binance's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::ExpiredInMatch => "EXPIRED_IN_MATCH",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "NEW" => OrderStatus::New,
            "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
            "FILLED" => OrderStatus::Filled,
            "CANCELED" => OrderStatus::Canceled,
            "EXPIRED" => OrderStatus::Expired,
            "EXPIRED_IN_MATCH" => OrderStatus::ExpiredInMatch,
            _ => return None,
        })
    }

    /// Still on the book.
    pub const fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderType {
    Limit,
    /// Post-only limit order.
    LimitMaker,
    Market,
}

impl OrderType {
    /// The type an accepted order is shown with.
    pub const fn of(is_market: bool, post_only: bool) -> OrderType {
        if is_market {
            OrderType::Market
        } else if post_only {
            OrderType::LimitMaker
        } else {
            OrderType::Limit
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "LIMIT",
            OrderType::LimitMaker => "LIMIT_MAKER",
            OrderType::Market => "MARKET",
        }
    }

    pub fn parse(s: &str) -> Option<OrderType> {
        Some(match s {
            "LIMIT" => OrderType::Limit,
            "LIMIT_MAKER" => OrderType::LimitMaker,
            "MARKET" => OrderType::Market,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WithdrawalStatus {
    Pending,
    Settled,
    Cancelled,
}

/// One order as the API reports it (Binance `allOrders` / `openOrders` / `order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: OrderId,
    pub market: MarketId,
    pub user: UserId,
    pub side: Side,
    pub order_type: OrderType,
    /// `GTC`, `IOC` or `FOK`.
    pub time_in_force: String,
    pub post_only: bool,
    /// Limit price; for a market order the collar bound it could trade up to.
    pub price: PriceTicks,
    /// Executed + remaining (after amends).
    pub orig_qty: QtyLots,
    pub quote_budget: Option<Amount>,
    pub executed_qty: QtyLots,
    /// Σ quote_qty of its trades (Binance `cummulativeQuoteQty`).
    pub cum_quote: Amount,
    pub status: OrderStatus,
    pub client_order_id: Option<String>,
    pub created_seq: u64,
    pub created_ms: u64,
    pub updated_seq: u64,
    pub updated_ms: u64,
}

/// One public trade (Binance `trades`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRow {
    pub trade_id: TradeId,
    pub market: MarketId,
    pub price: PriceTicks,
    pub qty: QtyLots,
    pub quote_qty: Amount,
    pub maker_order: OrderId,
    pub taker_order: OrderId,
    pub maker_user: UserId,
    pub taker_user: UserId,
    pub taker_side: Side,
    pub maker_fee: Amount,
    pub taker_fee: Amount,
    pub seq: u64,
    pub time_ms: u64,
}

impl TradeRow {
    /// Binance `isBuyerMaker`.
    pub fn is_buyer_maker(&self) -> bool {
        self.taker_side == Side::Sell
    }
}

/// One trade from one customer's side (Binance `myTrades`). Fees are in the quote asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillRow {
    pub trade_id: TradeId,
    pub order_id: OrderId,
    pub user: UserId,
    pub market: MarketId,
    pub is_maker: bool,
    pub is_buyer: bool,
    pub price: PriceTicks,
    pub qty: QtyLots,
    pub quote_qty: Amount,
    pub fee: Amount,
    pub seq: u64,
    pub time_ms: u64,
}

/// One kline (Binance `klines`). Prices in ticks, base volume in lots, quote volume in
/// quote minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kline {
    pub open_time_ms: u64,
    pub close_time_ms: u64,
    pub open: PriceTicks,
    pub high: PriceTicks,
    pub low: PriceTicks,
    pub close: PriceTicks,
    pub base_volume: QtyLots,
    pub quote_volume: Amount,
    pub trade_count: u64,
    pub taker_buy_base: QtyLots,
    pub taker_buy_quote: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceRow {
    pub user: UserId,
    pub asset: AssetId,
    pub available: Amount,
    pub held: Amount,
    pub seq: u64,
    pub time_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRow {
    pub reference: String,
    pub user: UserId,
    pub asset: AssetId,
    pub amount: Amount,
    pub seq: u64,
    pub time_ms: u64,
    /// Taken back after a chain reorganisation removed it.
    pub reversed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub id: String,
    pub user: UserId,
    pub asset: AssetId,
    pub amount: Amount,
    pub status: WithdrawalStatus,
    pub requested_ms: u64,
    pub updated_ms: u64,
    /// Chain destination; empty for an off-chain withdrawal.
    pub address: String,
    pub fee: Amount,
    /// Where it is in the custody pipeline: `OFF_CHAIN`, `REVIEW`, `APPROVED`,
    /// `BATCHED`, `CONFIRMED` or `CANCELLED`.
    pub stage: String,
    /// The transaction that pays it (the latest version until one confirms).
    pub txid: Option<String>,
    /// The height of the block that confirmed it.
    pub height: Option<u32>,
}

/// Trade statistics of one market over a time window (Binance `ticker/24hr`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickerStats {
    /// Trades inside the window.
    pub count: u64,
    /// Price of the first trade inside the window.
    pub open: Option<PriceTicks>,
    pub high: Option<PriceTicks>,
    pub low: Option<PriceTicks>,
    /// Σ qty inside the window.
    pub base_volume: QtyLots,
    /// Σ quote_qty inside the window, in quote minor units.
    pub quote_volume: Amount,
    pub first_id: Option<TradeId>,
    pub last_id: Option<TradeId>,
    /// The last trade at or before the window's end (inside the window or not).
    pub last: Option<(PriceTicks, QtyLots)>,
    /// The last trade before the window's start.
    pub prev_close: Option<PriceTicks>,
}

/// Filters of `allOrders`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrdersQuery {
    /// Orders with an id at or above this one, ascending.
    pub from_id: Option<OrderId>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: u32,
}

/// Filters of `myTrades`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TradesQuery {
    /// Only the fills of this order.
    pub order_id: Option<OrderId>,
    /// Trades with an id at or above this one, ascending.
    pub from_id: Option<TradeId>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: u32,
}

fn u(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, row_type(), e.into()))
}

fn row_type() -> rusqlite::types::Type {
    rusqlite::types::Type::Integer
}

fn bad(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unexpected {what}").into(),
    )
}

fn side(row: &Row<'_>, i: usize) -> rusqlite::Result<Side> {
    let s: String = row.get(i)?;
    match s.as_str() {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(bad(i, "side")),
    }
}

const ORDER_COLS: &str = "order_id, market_id, user_id, side, type, tif, post_only, price,
    orig_qty, quote_budget, executed_qty, cum_quote, status, client_order_id, created_seq,
    created_ms, updated_seq, updated_ms";

fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    let ty: String = r.get(4)?;
    let status: String = r.get(12)?;
    let budget: Option<i64> = r.get(9)?;
    Ok(OrderRow {
        order_id: OrderId(u(r, 0)?),
        market: MarketId(r.get(1)?),
        user: UserId(r.get(2)?),
        side: side(r, 3)?,
        order_type: OrderType::parse(&ty).ok_or_else(|| bad(4, "order type"))?,
        time_in_force: r.get(5)?,
        post_only: r.get(6)?,
        price: PriceTicks::new(u(r, 7)?),
        orig_qty: QtyLots::new(u(r, 8)?),
        quote_budget: budget
            .map(|b| u64::try_from(b).map(Amount::new))
            .transpose()
            .map_err(|_| bad(9, "budget"))?,
        executed_qty: QtyLots::new(u(r, 10)?),
        cum_quote: Amount::new(u(r, 11)?),
        status: OrderStatus::parse(&status).ok_or_else(|| bad(12, "status"))?,
        client_order_id: r.get(13)?,
        created_seq: u(r, 14)?,
        created_ms: u(r, 15)?,
        updated_seq: u(r, 16)?,
        updated_ms: u(r, 17)?,
    })
}

const TRADE_COLS: &str = "trade_id, market_id, price, qty, quote_qty, maker_order_id,
    taker_order_id, maker_user_id, taker_user_id, taker_side, maker_fee, taker_fee, seq, time_ms";

fn trade_row(r: &Row<'_>) -> rusqlite::Result<TradeRow> {
    Ok(TradeRow {
        trade_id: TradeId(u(r, 0)?),
        market: MarketId(r.get(1)?),
        price: PriceTicks::new(u(r, 2)?),
        qty: QtyLots::new(u(r, 3)?),
        quote_qty: Amount::new(u(r, 4)?),
        maker_order: OrderId(u(r, 5)?),
        taker_order: OrderId(u(r, 6)?),
        maker_user: UserId(r.get(7)?),
        taker_user: UserId(r.get(8)?),
        taker_side: side(r, 9)?,
        maker_fee: Amount::new(u(r, 10)?),
        taker_fee: Amount::new(u(r, 11)?),
        seq: u(r, 12)?,
        time_ms: u(r, 13)?,
    })
}

const FILL_COLS: &str = "trade_id, order_id, user_id, market_id, is_maker, is_buyer, price, qty,
    quote_qty, fee, seq, time_ms";

fn fill_row(r: &Row<'_>) -> rusqlite::Result<FillRow> {
    Ok(FillRow {
        trade_id: TradeId(u(r, 0)?),
        order_id: OrderId(u(r, 1)?),
        user: UserId(r.get(2)?),
        market: MarketId(r.get(3)?),
        is_maker: r.get(4)?,
        is_buyer: r.get(5)?,
        price: PriceTicks::new(u(r, 6)?),
        qty: QtyLots::new(u(r, 7)?),
        quote_qty: Amount::new(u(r, 8)?),
        fee: Amount::new(u(r, 9)?),
        seq: u(r, 10)?,
        time_ms: u(r, 11)?,
    })
}

/// An optional `u64` bound as a SQL value (NULL when absent).
fn opt(v: Option<u64>) -> Result<Value, StoreError> {
    Ok(match v {
        Some(v) => Value::Integer(int(v)?),
        None => Value::Null,
    })
}

fn limit(l: u32) -> i64 {
    i64::from(l.max(1))
}

impl Store {
    /// One order by id, if it is in `market`.
    pub fn order(&self, market: MarketId, order: OrderId) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!("SELECT {ORDER_COLS} FROM orders WHERE order_id = ?1 AND market_id = ?2");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![int(order.0)?, market.0], order_row)
            .optional()?)
    }

    /// The newest order of `user` in `market` with this client order id (client ids are
    /// unique only among open orders, so an old closed order may share it).
    pub fn order_by_client_id(
        &self,
        market: MarketId,
        user: UserId,
        client_id: &str,
    ) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders
             WHERE market_id = ?1 AND user_id = ?2 AND client_order_id = ?3
             ORDER BY order_id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![market.0, user.0, client_id], order_row)
            .optional()?)
    }

    /// Every order of `user` in `market` (Binance `allOrders`), by ascending id.
    pub fn orders(
        &self,
        user: UserId,
        market: MarketId,
        q: OrdersQuery,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let ascending = q.from_id.is_some() || q.start_ms.is_some();
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders
             WHERE user_id = ?1 AND market_id = ?2
               AND (?3 IS NULL OR order_id >= ?3)
               AND (?4 IS NULL OR created_ms >= ?4)
               AND (?5 IS NULL OR created_ms <= ?5)
             ORDER BY order_id {} LIMIT ?6",
            if ascending { "ASC" } else { "DESC" }
        );
        let mut rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![
                    user.0,
                    market.0,
                    opt(q.from_id.map(|o| o.0))?,
                    opt(q.start_ms)?,
                    opt(q.end_ms)?,
                    limit(q.limit)
                ],
                order_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        if !ascending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Open orders of `user`, in one market or all, by ascending id.
    pub fn open_orders(
        &self,
        user: UserId,
        market: Option<MarketId>,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders
             WHERE user_id = ?1 AND (?2 IS NULL OR market_id = ?2)
               AND status IN ('NEW', 'PARTIALLY_FILLED')
             ORDER BY order_id"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![user.0, market.map(|m| m.0)], order_row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Every open order of every customer, by order id (to seed [`crate::LiveOrders`]).
    pub fn all_open_orders(&self) -> Result<Vec<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders
             WHERE status IN ('NEW', 'PARTIALLY_FILLED')
             ORDER BY order_id"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map([], order_row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Trades of `user` in `market` from its side (Binance `myTrades`), ascending.
    pub fn my_trades(
        &self,
        user: UserId,
        market: MarketId,
        q: TradesQuery,
    ) -> Result<Vec<FillRow>, StoreError> {
        let ascending = q.from_id.is_some() || q.start_ms.is_some();
        let sql = format!(
            "SELECT {FILL_COLS} FROM fills
             WHERE user_id = ?1 AND market_id = ?2
               AND (?3 IS NULL OR order_id = ?3)
               AND (?4 IS NULL OR trade_id >= ?4)
               AND (?5 IS NULL OR time_ms >= ?5)
               AND (?6 IS NULL OR time_ms <= ?6)
             ORDER BY trade_id {dir}, is_maker {dir} LIMIT ?7",
            dir = if ascending { "ASC" } else { "DESC" }
        );
        let mut rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![
                    user.0,
                    market.0,
                    opt(q.order_id.map(|o| o.0))?,
                    opt(q.from_id.map(|t| t.0))?,
                    opt(q.start_ms)?,
                    opt(q.end_ms)?,
                    limit(q.limit)
                ],
                fill_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        if !ascending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// The most recent `limit` trades of `market`, ascending (Binance `trades`).
    pub fn recent_trades(
        &self,
        market: MarketId,
        limit_: u32,
    ) -> Result<Vec<TradeRow>, StoreError> {
        let sql = format!(
            "SELECT {TRADE_COLS} FROM trades WHERE market_id = ?1
             ORDER BY trade_id DESC LIMIT ?2"
        );
        let mut rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![market.0, limit(limit_)], trade_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Trades of `market` with an id at or above `from_id`, ascending (Binance
    /// `historicalTrades`).
    pub fn trades_from(
        &self,
        market: MarketId,
        from_id: TradeId,
        limit_: u32,
    ) -> Result<Vec<TradeRow>, StoreError> {
        let sql = format!(
            "SELECT {TRADE_COLS} FROM trades WHERE market_id = ?1 AND trade_id >= ?2
             ORDER BY trade_id ASC LIMIT ?3"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![market.0, int(from_id.0)?, limit(limit_)], trade_row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Klines of `market` (Binance `klines`), ascending by open time. `start_ms`/`end_ms`
    /// bound the open time; without `start_ms` the most recent `limit` are returned.
    /// Buckets without trades are absent (as on Binance).
    pub fn klines(
        &self,
        market: MarketId,
        interval: Interval,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit_: u32,
    ) -> Result<Vec<Kline>, StoreError> {
        let ascending = start_ms.is_some();
        let sql = format!(
            "SELECT open_time_ms, open, high, low, close, base_volume, quote_volume,
                    trade_count, taker_buy_base, taker_buy_quote
             FROM klines
             WHERE market_id = ?1 AND interval = ?2
               AND (?3 IS NULL OR open_time_ms >= ?3)
               AND (?4 IS NULL OR open_time_ms <= ?4)
             ORDER BY open_time_ms {} LIMIT ?5",
            if ascending { "ASC" } else { "DESC" }
        );
        // A start inside a bucket includes that bucket, as Binance does.
        let start = start_ms.map(|s| interval.open_time(s));
        let mut rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![
                    market.0,
                    interval.as_str(),
                    opt(start)?,
                    opt(end_ms)?,
                    limit(limit_)
                ],
                |r| {
                    let open_time_ms = u(r, 0)?;
                    Ok(Kline {
                        open_time_ms,
                        close_time_ms: interval.close_time(open_time_ms),
                        open: PriceTicks::new(u(r, 1)?),
                        high: PriceTicks::new(u(r, 2)?),
                        low: PriceTicks::new(u(r, 3)?),
                        close: PriceTicks::new(u(r, 4)?),
                        base_volume: QtyLots::new(u(r, 5)?),
                        quote_volume: Amount::new(u(r, 6)?),
                        trade_count: u(r, 7)?,
                        taker_buy_base: QtyLots::new(u(r, 8)?),
                        taker_buy_quote: Amount::new(u(r, 9)?),
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        if !ascending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// The last `limit` balance changes of one account, ascending by seq.
    pub fn balance_history(
        &self,
        user: UserId,
        asset: AssetId,
        limit_: u32,
    ) -> Result<Vec<BalanceRow>, StoreError> {
        let mut rows = self
            .conn
            .prepare_cached(
                "SELECT user_id, asset_id, available, held, seq, time_ms FROM balances_history
                 WHERE user_id = ?1 AND asset_id = ?2 ORDER BY seq DESC, id DESC LIMIT ?3",
            )?
            .query_map(params![user.0, asset.0, limit(limit_)], |r| {
                Ok(BalanceRow {
                    user: UserId(r.get(0)?),
                    asset: AssetId(r.get(1)?),
                    available: Amount::new(u(r, 2)?),
                    held: Amount::new(u(r, 3)?),
                    seq: u(r, 4)?,
                    time_ms: u(r, 5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Deposits of `user` (optionally of one asset), ascending by time.
    pub fn deposits(
        &self,
        user: UserId,
        asset: Option<AssetId>,
        limit_: u32,
    ) -> Result<Vec<DepositRow>, StoreError> {
        self.deposits_between(user, asset, None, None, limit_)
    }

    /// Deposits of `user` credited with `start_ms <= time_ms <= end_ms` (each bound
    /// optional), ascending by time; at most `limit_`, the newest ones.
    pub fn deposits_between(
        &self,
        user: UserId,
        asset: Option<AssetId>,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit_: u32,
    ) -> Result<Vec<DepositRow>, StoreError> {
        let mut rows = self
            .conn
            .prepare_cached(
                "SELECT reference, user_id, asset_id, amount, seq, time_ms, status = 'REVERSED'
                 FROM deposits WHERE user_id = ?1 AND (?2 IS NULL OR asset_id = ?2)
                     AND (?3 IS NULL OR time_ms >= ?3) AND (?4 IS NULL OR time_ms <= ?4)
                 ORDER BY seq DESC LIMIT ?5",
            )?
            .query_map(
                params![
                    user.0,
                    asset.map(|a| a.0),
                    opt(start_ms)?,
                    opt(end_ms)?,
                    limit(limit_)
                ],
                |r| {
                    Ok(DepositRow {
                        reference: r.get(0)?,
                        user: UserId(r.get(1)?),
                        asset: AssetId(r.get(2)?),
                        amount: Amount::new(u(r, 3)?),
                        seq: u(r, 4)?,
                        time_ms: u(r, 5)?,
                        reversed: r.get(6)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Withdrawals of `user` (optionally of one asset), ascending by request time.
    pub fn withdrawals(
        &self,
        user: UserId,
        asset: Option<AssetId>,
        limit_: u32,
    ) -> Result<Vec<WithdrawalRow>, StoreError> {
        self.withdrawals_between(user, asset, None, None, limit_)
    }

    /// Withdrawals of `user` requested with `start_ms <= requested_ms <= end_ms` (each
    /// bound optional), ascending by request time; at most `limit_`, the newest ones.
    pub fn withdrawals_between(
        &self,
        user: UserId,
        asset: Option<AssetId>,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit_: u32,
    ) -> Result<Vec<WithdrawalRow>, StoreError> {
        let mut rows = self
            .conn
            .prepare_cached(
                "SELECT withdrawal_id, user_id, asset_id, amount, status, requested_ms, updated_ms,
                     address, fee, stage, txid, height
                 FROM withdrawals WHERE user_id = ?1 AND (?2 IS NULL OR asset_id = ?2)
                     AND (?3 IS NULL OR requested_ms >= ?3) AND (?4 IS NULL OR requested_ms <= ?4)
                 ORDER BY requested_seq DESC LIMIT ?5",
            )?
            .query_map(
                params![
                    user.0,
                    asset.map(|a| a.0),
                    opt(start_ms)?,
                    opt(end_ms)?,
                    limit(limit_)
                ],
                |r| {
                    let status: String = r.get(4)?;
                    Ok(WithdrawalRow {
                        id: r.get(0)?,
                        user: UserId(r.get(1)?),
                        asset: AssetId(r.get(2)?),
                        amount: Amount::new(u(r, 3)?),
                        status: match status.as_str() {
                            "PENDING" => WithdrawalStatus::Pending,
                            "SETTLED" => WithdrawalStatus::Settled,
                            "CANCELLED" => WithdrawalStatus::Cancelled,
                            _ => return Err(bad(4, "withdrawal status")),
                        },
                        requested_ms: u(r, 5)?,
                        updated_ms: u(r, 6)?,
                        address: r.get(7)?,
                        fee: Amount::new(u(r, 8)?),
                        stage: r.get(9)?,
                        txid: r.get(10)?,
                        height: r.get(11)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Trades of `market` with `start_ms <= time_ms <= end_ms` (each bound optional),
    /// ascending by id. With a start, the first `limit` from there; without, the most
    /// recent `limit` (Binance `aggTrades` by time).
    pub fn trades_between(
        &self,
        market: MarketId,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit_: u32,
    ) -> Result<Vec<TradeRow>, StoreError> {
        let ascending = start_ms.is_some();
        let sql = format!(
            "SELECT {TRADE_COLS} FROM trades
             WHERE market_id = ?1
               AND (?2 IS NULL OR time_ms >= ?2)
               AND (?3 IS NULL OR time_ms <= ?3)
             ORDER BY trade_id {} LIMIT ?4",
            if ascending { "ASC" } else { "DESC" }
        );
        let mut rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![market.0, opt(start_ms)?, opt(end_ms)?, limit(limit_)],
                trade_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        if !ascending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Statistics of the trades of `market` with `from_ms <= time_ms <= to_ms`.
    pub fn ticker_stats(
        &self,
        market: MarketId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<TickerStats, StoreError> {
        let (from, to) = (int(from_ms)?, int(to_ms)?);
        let mut stats = self
            .conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(qty), 0), coalesce(sum(quote_qty), 0),
                    max(price), min(price), min(trade_id), max(trade_id)
             FROM trades WHERE market_id = ?1 AND time_ms >= ?2 AND time_ms <= ?3",
            )?
            .query_row(params![market.0, from, to], |r| {
                let max: Option<i64> = r.get(3)?;
                let min: Option<i64> = r.get(4)?;
                let first: Option<i64> = r.get(5)?;
                let last: Option<i64> = r.get(6)?;
                let nat = |v: Option<i64>, i: usize| {
                    v.map(|v| u64::try_from(v).map_err(|_| bad(i, "negative value")))
                        .transpose()
                };
                Ok(TickerStats {
                    count: u(r, 0)?,
                    base_volume: QtyLots::new(u(r, 1)?),
                    quote_volume: Amount::new(u(r, 2)?),
                    high: nat(max, 3)?.map(PriceTicks::new),
                    low: nat(min, 4)?.map(PriceTicks::new),
                    first_id: nat(first, 5)?.map(TradeId),
                    last_id: nat(last, 6)?.map(TradeId),
                    ..TickerStats::default()
                })
            })?;
        if let Some(first) = stats.first_id {
            stats.open = Some(
                self.conn
                    .prepare_cached("SELECT price FROM trades WHERE trade_id = ?1")?
                    .query_row([int(first.0)?], |r| u(r, 0).map(PriceTicks::new))?,
            );
        }
        stats.last = self
            .conn
            .prepare_cached(
                "SELECT price, qty FROM trades WHERE market_id = ?1 AND time_ms <= ?2
                 ORDER BY trade_id DESC LIMIT 1",
            )?
            .query_row(params![market.0, to], |r| {
                Ok((PriceTicks::new(u(r, 0)?), QtyLots::new(u(r, 1)?)))
            })
            .optional()?;
        stats.prev_close = self
            .conn
            .prepare_cached(
                "SELECT price FROM trades WHERE market_id = ?1 AND time_ms < ?2
                 ORDER BY trade_id DESC LIMIT 1",
            )?
            .query_row(params![market.0, from], |r| u(r, 0).map(PriceTicks::new))
            .optional()?;
        Ok(stats)
    }

    /// A customer's fee tier, if the customer exists.
    pub fn fee_tier(&self, user: UserId) -> Result<Option<u8>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT fee_tier FROM users WHERE user_id = ?1")?
            .query_row([user.0], |r| r.get(0))
            .optional()?)
    }

    /// A market's id by its symbol.
    pub fn market_by_symbol(&self, symbol: &str) -> Result<Option<MarketId>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT market_id FROM markets WHERE symbol = ?1")?
            .query_row([symbol], |r| r.get(0).map(MarketId))
            .optional()?)
    }
}
