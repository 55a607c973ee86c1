//! Projection of one engine event into the tables.

use crate::{Interval, StoreError};
use kura_engine::{Ctx, Event, EventKind, Side, TimeInForce};
use rusqlite::{params, Connection};

/// A `u64` as a SQLite integer, or [`StoreError::OutOfRange`].
pub(crate) fn int(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(u128::from(v)))
}

pub(crate) fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub(crate) fn tif_str(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

/// Update one order row; an order the store does not know means it is out of sync.
fn update_order(
    conn: &Connection,
    sql: &str,
    order: u64,
    ctx: Ctx,
    extra: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let id = int(order)?;
    let seq = int(ctx.seq)?;
    let ms = int(ctx.timestamp_ms)?;
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&id, &seq, &ms];
    all.extend_from_slice(extra);
    let n = stmt.execute(all.as_slice())?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::UnknownOrder(order))
    }
}

fn set_stage(
    conn: &Connection,
    id: &str,
    stage: &str,
    seq: i64,
    ms: i64,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE withdrawals SET stage = ?2, updated_seq = ?3, updated_ms = ?4
             WHERE withdrawal_id = ?1",
        )?
        .execute(params![id, stage, seq, ms])?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::UnknownWithdrawal(id.to_owned()))
    }
}

fn batch_update(
    conn: &Connection,
    batch: u64,
    sql: &str,
    values: impl rusqlite::Params,
) -> Result<(), StoreError> {
    if conn.prepare_cached(sql)?.execute(values)? == 1 {
        Ok(())
    } else {
        Err(StoreError::UnknownBatch(batch))
    }
}

pub(crate) fn event(
    conn: &Connection,
    candles: &mut Candles,
    ctx: Ctx,
    e: &Event,
) -> Result<(), StoreError> {
    let seq = int(ctx.seq)?;
    let ms = int(ctx.timestamp_ms)?;
    match &e.kind {
        EventKind::AssetAdded { asset, symbol } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO assets (asset_id, symbol, seq) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![asset.0, symbol, seq])?;
        }
        EventKind::MarketAdded { market, symbol } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO markets (market_id, symbol, seq) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![market.0, symbol, seq])?;
        }
        EventKind::MarketHalted { market, reason } => {
            conn.prepare_cached("UPDATE markets SET halted = ?2 WHERE market_id = ?1")?
                .execute(params![market.0, reason])?;
        }
        EventKind::MarketResumed { market } => {
            conn.prepare_cached("UPDATE markets SET halted = NULL WHERE market_id = ?1")?
                .execute(params![market.0])?;
        }
        EventKind::UserCreated { user } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO users (user_id, fee_tier, created_ms) VALUES (?1, 0, ?2)",
            )?
            .execute(params![user.0, ms])?;
        }
        EventKind::FeeTierSet { user, tier } => {
            conn.prepare_cached("UPDATE users SET fee_tier = ?2 WHERE user_id = ?1")?
                .execute(params![user.0, tier])?;
        }
        EventKind::Deposited {
            user,
            asset,
            amount,
            reference,
        } => {
            // A reference reversed by a reorganisation may be credited again.
            conn.prepare_cached(
                "INSERT INTO deposits (reference, user_id, asset_id, amount, seq, time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (reference) DO UPDATE SET status = 'CREDITED', deficit = 0,
                     updated_seq = excluded.seq",
            )?
            .execute(params![
                reference,
                user.0,
                asset.0,
                int(amount.get())?,
                seq,
                ms
            ])?;
        }
        EventKind::WithdrawalRequested {
            user,
            asset,
            amount,
            id,
        } => {
            conn.prepare_cached(
                "INSERT INTO withdrawals (withdrawal_id, user_id, asset_id, amount, status,
                     requested_seq, requested_ms, updated_seq, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5, ?6, ?5, ?6)",
            )?
            .execute(params![id, user.0, asset.0, int(amount.get())?, seq, ms])?;
        }
        EventKind::WithdrawalSettled { id, .. } | EventKind::WithdrawalCancelled { id, .. } => {
            let status = if matches!(e.kind, EventKind::WithdrawalSettled { .. }) {
                "SETTLED"
            } else {
                "CANCELLED"
            };
            let n = conn
                .prepare_cached(
                    "UPDATE withdrawals SET status = ?2, updated_seq = ?3, updated_ms = ?4
                     WHERE withdrawal_id = ?1",
                )?
                .execute(params![id, status, seq, ms])?;
            if n != 1 {
                return Err(StoreError::UnknownWithdrawal(id.clone()));
            }
        }
        EventKind::DepositReversed {
            reference, deficit, ..
        } => {
            let n = conn
                .prepare_cached(
                    "UPDATE deposits SET status = 'REVERSED', updated_seq = ?2, deficit = ?3
                     WHERE reference = ?1",
                )?
                .execute(params![reference, seq, int(deficit.get())?])?;
            if n != 1 {
                return Err(StoreError::Corrupt("reversed deposit was never credited"));
            }
        }
        EventKind::DepositAddressAssigned {
            user,
            asset,
            wallet,
            index,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO deposit_addresses (user_id, asset_id, wallet_id, idx, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![user.0, asset.0, wallet, index, seq])?;
        }
        // The registry, deficits, reconciliations and policies are engine state
        // (queried live); balances move through BalanceChanged.
        EventKind::WalletRegistered { .. }
        | EventKind::DeficitRepaid { .. }
        | EventKind::Reconciled { .. }
        | EventKind::WithdrawalPolicySet { .. } => {}
        // Solvency roots live in the journal (and the audit log) and in the epoch files.
        EventKind::SolvencyRecorded { .. } => {}
        EventKind::WithdrawalAddressAdded {
            user,
            asset,
            address,
            usable_from_ms,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO withdrawal_addresses
                     (user_id, asset_id, address, usable_from_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                user.0,
                asset.0,
                address,
                int(*usable_from_ms)?,
                seq
            ])?;
        }
        EventKind::WithdrawalRouted {
            id,
            address,
            fee,
            release_ms,
            review,
        } => {
            let stage = if *review { "REVIEW" } else { "APPROVED" };
            let n = conn
                .prepare_cached(
                    "UPDATE withdrawals SET address = ?2, fee = ?3, stage = ?4, release_ms = ?5
                     WHERE withdrawal_id = ?1",
                )?
                .execute(params![
                    id,
                    address,
                    int(fee.get())?,
                    stage,
                    int(*release_ms)?
                ])?;
            if n != 1 {
                return Err(StoreError::UnknownWithdrawal(id.clone()));
            }
        }
        EventKind::WithdrawalApproved { id } => {
            set_stage(conn, id, "APPROVED", seq, ms)?;
        }
        // A transfer between our own wallets is a batch without withdrawals.
        EventKind::TransferBuilt {
            batch,
            asset,
            txid,
            network_fee,
            ..
        } => {
            insert_batch(conn, *batch, *asset, txid, *network_fee, seq, ms)?;
        }
        EventKind::WithdrawalBatchBuilt {
            batch,
            asset,
            withdrawals,
            txid,
            network_fee,
            ..
        } => {
            let txid = insert_batch(conn, *batch, *asset, txid, *network_fee, seq, ms)?;
            for id in withdrawals {
                let n = conn
                    .prepare_cached(
                        "UPDATE withdrawals SET stage = 'BATCHED', batch_id = ?2, txid = ?3,
                             updated_seq = ?4, updated_ms = ?5
                         WHERE withdrawal_id = ?1",
                    )?
                    .execute(params![id, int(*batch)?, txid, seq, ms])?;
                if n != 1 {
                    return Err(StoreError::UnknownWithdrawal(id.clone()));
                }
            }
        }
        EventKind::WithdrawalBatchBumped {
            batch,
            txid,
            network_fee,
        } => {
            let txid = kura_engine::codec::txid_text(txid);
            batch_update(
                conn,
                *batch,
                "UPDATE withdrawal_batches SET txid = ?2, network_fee = ?3,
                     versions = versions + 1, updated_seq = ?4 WHERE batch_id = ?1",
                params![int(*batch)?, txid, int(network_fee.get())?, seq],
            )?;
            conn.prepare_cached("UPDATE withdrawals SET txid = ?2 WHERE batch_id = ?1")?
                .execute(params![int(*batch)?, txid])?;
        }
        EventKind::WithdrawalBatchFinished {
            batch,
            txid,
            height,
            network_fee,
            paid,
        } => {
            let txid = kura_engine::codec::txid_text(txid);
            let state = if *paid { "CONFIRMED" } else { "CANCELLED" };
            batch_update(
                conn,
                *batch,
                "UPDATE withdrawal_batches SET txid = ?2, network_fee = ?3, state = ?4,
                     height = ?5, updated_seq = ?6 WHERE batch_id = ?1",
                params![
                    int(*batch)?,
                    txid,
                    int(network_fee.get())?,
                    state,
                    height,
                    seq
                ],
            )?;
            conn.prepare_cached(
                "UPDATE withdrawals SET txid = ?2, height = ?3, stage = ?4 WHERE batch_id = ?1",
            )?
            .execute(params![int(*batch)?, txid, height, state])?;
        }
        EventKind::TransferAbandoned { batch } => batch_update(
            conn,
            *batch,
            "UPDATE withdrawal_batches SET state = 'ABANDONED', updated_seq = ?2
                 WHERE batch_id = ?1",
            params![int(*batch)?, seq],
        )?,
        // Operator adjustments show in balances_history through BalanceChanged.
        EventKind::Adjusted { .. } => {}
        EventKind::BalanceChanged {
            user,
            asset,
            available,
            held,
        } => {
            conn.prepare_cached(
                "INSERT INTO balances_history (user_id, asset_id, available, held, seq, time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                user.0,
                asset.0,
                int(available.get())?,
                int(held.get())?,
                seq,
                ms
            ])?;
        }
        EventKind::OrderAccepted {
            market,
            order,
            user,
            side,
            price,
            qty,
            quote_budget,
            tif,
            post_only,
            is_market,
            client_id,
            hold: _,
        } => {
            let ty = crate::OrderType::of(*is_market, *post_only).as_str();
            let budget = quote_budget.map(|b| int(b.get())).transpose()?;
            conn.prepare_cached(
                "INSERT INTO orders (order_id, market_id, user_id, side, type, tif, post_only,
                     price, orig_qty, quote_budget, executed_qty, cum_quote, status,
                     client_order_id, created_seq, created_ms, updated_seq, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 0, 'NEW', ?11,
                     ?12, ?13, ?12, ?13)",
            )?
            .execute(params![
                int(order.0)?,
                market.0,
                user.0,
                side_str(*side),
                ty,
                tif_str(*tif),
                post_only,
                int(price.get())?,
                int(qty.get())?,
                budget,
                client_id.as_ref().map(|c| c.as_str()),
                seq,
                ms
            ])?;
        }
        EventKind::Trade {
            market,
            trade,
            price,
            qty,
            quote_qty,
            maker_order,
            taker_order,
            maker_user,
            taker_user,
            taker_side,
            maker_fee,
            taker_fee,
        } => {
            let (tid, p, q, qq) = (
                int(trade.0)?,
                int(price.get())?,
                int(qty.get())?,
                int(quote_qty.get())?,
            );
            let (mo, to) = (int(maker_order.0)?, int(taker_order.0)?);
            let (mf, tf) = (int(maker_fee.get())?, int(taker_fee.get())?);
            conn.prepare_cached(
                "INSERT INTO trades (trade_id, market_id, price, qty, quote_qty, maker_order_id,
                     taker_order_id, maker_user_id, taker_user_id, taker_side, maker_fee,
                     taker_fee, seq, time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                tid,
                market.0,
                p,
                q,
                qq,
                mo,
                to,
                maker_user.0,
                taker_user.0,
                side_str(*taker_side),
                mf,
                tf,
                seq,
                ms
            ])?;
            let taker_buys = *taker_side == Side::Buy;
            let mut fill = conn.prepare_cached(
                "INSERT INTO fills (trade_id, is_maker, order_id, user_id, market_id, is_buyer,
                     price, qty, quote_qty, fee, seq, time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            fill.execute(params![
                tid,
                true,
                mo,
                maker_user.0,
                market.0,
                !taker_buys,
                p,
                q,
                qq,
                mf,
                seq,
                ms
            ])?;
            fill.execute(params![
                tid,
                false,
                to,
                taker_user.0,
                market.0,
                taker_buys,
                p,
                q,
                qq,
                tf,
                seq,
                ms
            ])?;
            let sql = "UPDATE orders SET executed_qty = executed_qty + ?4,
                           cum_quote = cum_quote + ?5, status = 'PARTIALLY_FILLED',
                           updated_seq = ?2, updated_ms = ?3
                       WHERE order_id = ?1";
            update_order(conn, sql, maker_order.0, ctx, &[&q, &qq])?;
            update_order(conn, sql, taker_order.0, ctx, &[&q, &qq])?;
            candles.add(market.0, ctx.timestamp_ms, p, q, qq, taker_buys)?;
        }
        EventKind::OrderRested { order, .. } => {
            update_order(
                conn,
                "UPDATE orders SET status = CASE WHEN executed_qty = 0 THEN 'NEW'
                       ELSE 'PARTIALLY_FILLED' END, updated_seq = ?2, updated_ms = ?3
                 WHERE order_id = ?1",
                order.0,
                ctx,
                &[],
            )?;
        }
        EventKind::OrderFilled { order, .. } => {
            set_status(conn, order.0, ctx, "FILLED")?;
        }
        EventKind::OrderCancelled { order, reason, .. } => {
            let status = crate::OrderStatus::cancelled(*reason).as_str();
            set_status(conn, order.0, ctx, status)?;
        }
        EventKind::OrderExpired { order, reason, .. } => {
            let status = crate::OrderStatus::expired(*reason).as_str();
            set_status(conn, order.0, ctx, status)?;
        }
        EventKind::OrderAmended {
            order,
            price,
            remaining,
            ..
        } => {
            let (p, r) = (int(price.get())?, int(remaining.get())?);
            update_order(
                conn,
                "UPDATE orders SET price = ?4, orig_qty = executed_qty + ?5,
                     updated_seq = ?2, updated_ms = ?3
                 WHERE order_id = ?1",
                order.0,
                ctx,
                &[&p, &r],
            )?;
        }
        // Halts of withdrawals, names and API keys have no table in the read model: the
        // engine's state answers for them.
        EventKind::WithdrawalsHalted { .. }
        | EventKind::WithdrawalsResumed { .. }
        | EventKind::UserNamed { .. }
        | EventKind::ApiKeyCreated { .. }
        | EventKind::ApiKeyRevoked { .. } => {}
    }
    Ok(())
}

fn set_status(conn: &Connection, order: u64, ctx: Ctx, status: &str) -> Result<(), StoreError> {
    update_order(
        conn,
        "UPDATE orders SET status = ?4, updated_seq = ?2, updated_ms = ?3 WHERE order_id = ?1",
        order,
        ctx,
        &[&status],
    )
}

/// Fold one trade into the kline of every interval.
/// One candle's trades within one batch, before they are merged into the table.
#[derive(Clone, Copy, Debug)]
struct Candle {
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    base: i64,
    quote: i64,
    trades: i64,
    taker_buy_base: i64,
    taker_buy_quote: i64,
}

/// Candles touched by a batch: every trade updates one candle per interval, but the
/// table is written once per candle per batch (15 intervals × trades would otherwise
/// dominate the projector's cost).
#[derive(Debug, Default)]
pub(crate) struct Candles {
    open: std::collections::BTreeMap<(u32, &'static str, i64), Candle>,
}

impl Candles {
    fn add(
        &mut self,
        market: u32,
        time_ms: u64,
        price: i64,
        qty: i64,
        quote: i64,
        taker_buys: bool,
    ) -> Result<(), StoreError> {
        let (tb, tq) = if taker_buys { (qty, quote) } else { (0, 0) };
        for interval in Interval::ALL {
            let open = int(interval.open_time(time_ms))?;
            self.open
                .entry((market, interval.as_str(), open))
                .and_modify(|c| {
                    c.high = c.high.max(price);
                    c.low = c.low.min(price);
                    c.close = price;
                    c.base += qty;
                    c.quote += quote;
                    c.trades += 1;
                    c.taker_buy_base += tb;
                    c.taker_buy_quote += tq;
                })
                .or_insert(Candle {
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    base: qty,
                    quote,
                    trades: 1,
                    taker_buy_base: tb,
                    taker_buy_quote: tq,
                });
        }
        Ok(())
    }

    /// Merge every touched candle into the table (an existing candle keeps its open).
    pub(crate) fn flush(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.open.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(
            "INSERT INTO klines (market_id, interval, open_time_ms, open, high, low, close,
                 base_volume, quote_volume, trade_count, taker_buy_base, taker_buy_quote)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (market_id, interval, open_time_ms) DO UPDATE SET
                 high = max(high, excluded.high),
                 low = min(low, excluded.low),
                 close = excluded.close,
                 base_volume = base_volume + excluded.base_volume,
                 quote_volume = quote_volume + excluded.quote_volume,
                 trade_count = trade_count + excluded.trade_count,
                 taker_buy_base = taker_buy_base + excluded.taker_buy_base,
                 taker_buy_quote = taker_buy_quote + excluded.taker_buy_quote",
        )?;
        for ((market, interval, open_time), c) in std::mem::take(&mut self.open) {
            stmt.execute(params![
                market,
                interval,
                open_time,
                c.open,
                c.high,
                c.low,
                c.close,
                c.base,
                c.quote,
                c.trades,
                c.taker_buy_base,
                c.taker_buy_quote
            ])?;
        }
        Ok(())
    }
}

/// A new open batch row (withdrawals or a transfer); its txid as text.
fn insert_batch(
    conn: &Connection,
    batch: u64,
    asset: kura_units::AssetId,
    txid: &[u8; 32],
    network_fee: kura_units::Amount,
    seq: i64,
    ms: i64,
) -> Result<String, StoreError> {
    let txid = kura_engine::codec::txid_text(txid);
    conn.prepare_cached(
        "INSERT INTO withdrawal_batches (batch_id, asset_id, txid, network_fee, versions,
             state, built_seq, built_ms, updated_seq)
         VALUES (?1, ?2, ?3, ?4, 1, 'OPEN', ?5, ?6, ?5)",
    )?
    .execute(params![
        int(batch)?,
        asset.0,
        txid,
        int(network_fee.get())?,
        seq,
        ms
    ])?;
    Ok(txid)
}
