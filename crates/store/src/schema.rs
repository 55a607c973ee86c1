//! The schema and its migrations. Every table is STRICT, so SQLite refuses (rather than
//! silently converting to REAL) any value that is not an integer where one is declared,
//! including an integer sum that overflows 64 bits.
//!
//! Units: prices in ticks, quantities in lots, amounts in the asset's minor units, times in
//! milliseconds since the epoch (the sequencer's `Ctx.timestamp_ms`), `seq` the journal
//! sequence number of the command that produced the row.

use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension};

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER
) STRICT;
INSERT INTO meta (key, value) VALUES ('last_seq', NULL);

CREATE TABLE assets (
    asset_id INTEGER PRIMARY KEY,
    symbol   TEXT NOT NULL,
    seq      INTEGER NOT NULL
) STRICT;

CREATE TABLE markets (
    market_id INTEGER PRIMARY KEY,
    symbol    TEXT NOT NULL UNIQUE,
    halted    TEXT,
    seq       INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    user_id    INTEGER PRIMARY KEY,
    fee_tier   INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) STRICT;

-- One row per order ever accepted. Binance's order statuses.
CREATE TABLE orders (
    order_id        INTEGER PRIMARY KEY,
    market_id       INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    type            TEXT NOT NULL CHECK (type IN ('LIMIT', 'LIMIT_MAKER', 'MARKET')),
    tif             TEXT NOT NULL CHECK (tif IN ('GTC', 'IOC', 'FOK')),
    post_only       INTEGER NOT NULL,
    price           INTEGER NOT NULL,          -- ticks; for a market order its collar bound
    orig_qty        INTEGER NOT NULL,          -- lots; executed + remaining after an amend
    quote_budget    INTEGER,                   -- quote minor units (market order by quote)
    executed_qty    INTEGER NOT NULL DEFAULT 0,-- lots
    cum_quote       INTEGER NOT NULL DEFAULT 0,-- quote minor units, Σ trade quote_qty
    status          TEXT NOT NULL CHECK (status IN ('NEW', 'PARTIALLY_FILLED', 'FILLED',
                        'CANCELED', 'EXPIRED', 'EXPIRED_IN_MATCH')),
    client_order_id TEXT,
    created_seq     INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX orders_by_user ON orders (user_id, market_id, order_id);
CREATE INDEX orders_by_user_time ON orders (user_id, market_id, created_ms);
CREATE INDEX orders_by_client ON orders (market_id, user_id, client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE INDEX orders_open ON orders (user_id, market_id, order_id)
    WHERE status IN ('NEW', 'PARTIALLY_FILLED');

-- Public trades (Binance /trades, /historicalTrades, /aggTrades with one fill each).
CREATE TABLE trades (
    trade_id       INTEGER PRIMARY KEY,
    market_id      INTEGER NOT NULL,
    price          INTEGER NOT NULL,
    qty            INTEGER NOT NULL,
    quote_qty      INTEGER NOT NULL,
    maker_order_id INTEGER NOT NULL,
    taker_order_id INTEGER NOT NULL,
    maker_user_id  INTEGER NOT NULL,
    taker_user_id  INTEGER NOT NULL,
    taker_side     TEXT NOT NULL CHECK (taker_side IN ('BUY', 'SELL')),
    maker_fee      INTEGER NOT NULL,           -- quote minor units
    taker_fee      INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    time_ms        INTEGER NOT NULL
) STRICT;
CREATE INDEX trades_by_market ON trades (market_id, trade_id);
CREATE INDEX trades_by_market_time ON trades (market_id, time_ms);

-- Each trade from each side's point of view (Binance /myTrades): two rows per trade.
CREATE TABLE fills (
    trade_id  INTEGER NOT NULL,
    is_maker  INTEGER NOT NULL,
    order_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    market_id INTEGER NOT NULL,
    is_buyer  INTEGER NOT NULL,
    price     INTEGER NOT NULL,
    qty       INTEGER NOT NULL,
    quote_qty INTEGER NOT NULL,
    fee       INTEGER NOT NULL,                -- quote minor units
    seq       INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL,
    PRIMARY KEY (trade_id, is_maker)
) STRICT, WITHOUT ROWID;
CREATE INDEX fills_by_user ON fills (user_id, market_id, trade_id);
CREATE INDEX fills_by_user_time ON fills (user_id, market_id, time_ms);
CREATE INDEX fills_by_order ON fills (order_id, trade_id);

CREATE TABLE balances_history (
    id        INTEGER PRIMARY KEY,
    user_id   INTEGER NOT NULL,
    asset_id  INTEGER NOT NULL,
    available INTEGER NOT NULL,
    held      INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX balances_history_by_user ON balances_history (user_id, asset_id, seq);

-- Every interval maintained incrementally; open/high/low/close in ticks, base volume in
-- lots, quote volume in quote minor units.
CREATE TABLE klines (
    market_id       INTEGER NOT NULL,
    interval        TEXT NOT NULL,
    open_time_ms    INTEGER NOT NULL,
    open            INTEGER NOT NULL,
    high            INTEGER NOT NULL,
    low             INTEGER NOT NULL,
    close           INTEGER NOT NULL,
    base_volume     INTEGER NOT NULL,
    quote_volume    INTEGER NOT NULL,
    trade_count     INTEGER NOT NULL,
    taker_buy_base  INTEGER NOT NULL,
    taker_buy_quote INTEGER NOT NULL,
    PRIMARY KEY (market_id, interval, open_time_ms)
) STRICT, WITHOUT ROWID;

CREATE TABLE deposits (
    reference TEXT PRIMARY KEY,
    user_id   INTEGER NOT NULL,
    asset_id  INTEGER NOT NULL,
    amount    INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX deposits_by_user ON deposits (user_id, asset_id, time_ms);

CREATE TABLE withdrawals (
    withdrawal_id TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL,
    asset_id      INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('PENDING', 'SETTLED', 'CANCELLED')),
    requested_seq INTEGER NOT NULL,
    requested_ms  INTEGER NOT NULL,
    updated_seq   INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, asset_id, requested_ms);
"#;

/// Custody: a deposit can be reversed by a chain reorganisation (and credited again if
/// its transaction confirms again); customers' deposit addresses.
const V2: &str = r#"
ALTER TABLE deposits ADD COLUMN status TEXT NOT NULL DEFAULT 'CREDITED'
    CHECK (status IN ('CREDITED', 'REVERSED'));
ALTER TABLE deposits ADD COLUMN updated_seq INTEGER;
ALTER TABLE deposits ADD COLUMN deficit INTEGER NOT NULL DEFAULT 0;

CREATE TABLE deposit_addresses (
    user_id   INTEGER NOT NULL,
    asset_id  INTEGER NOT NULL,
    wallet_id INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (user_id, asset_id)
) STRICT;
"#;

/// Chain withdrawals: destination, fee, stage in the custody pipeline, the batch and
/// the transaction that paid it; batches; customers' destination lists.
const V3: &str = r#"
ALTER TABLE withdrawals ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE withdrawals ADD COLUMN fee INTEGER NOT NULL DEFAULT 0;
ALTER TABLE withdrawals ADD COLUMN stage TEXT NOT NULL DEFAULT 'OFF_CHAIN'
    CHECK (stage IN ('OFF_CHAIN', 'REVIEW', 'APPROVED', 'BATCHED', 'CONFIRMED', 'CANCELLED'));
ALTER TABLE withdrawals ADD COLUMN release_ms INTEGER;
ALTER TABLE withdrawals ADD COLUMN batch_id INTEGER;
ALTER TABLE withdrawals ADD COLUMN txid TEXT;
ALTER TABLE withdrawals ADD COLUMN height INTEGER;
CREATE INDEX withdrawals_by_batch ON withdrawals (batch_id);

CREATE TABLE withdrawal_batches (
    batch_id    INTEGER PRIMARY KEY,
    asset_id    INTEGER NOT NULL,
    txid        TEXT NOT NULL,
    network_fee INTEGER NOT NULL,
    versions    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('OPEN', 'CONFIRMED', 'CANCELLED')),
    height      INTEGER,
    built_seq   INTEGER NOT NULL,
    built_ms    INTEGER NOT NULL,
    updated_seq INTEGER NOT NULL
) STRICT;

CREATE TABLE withdrawal_addresses (
    user_id        INTEGER NOT NULL,
    asset_id       INTEGER NOT NULL,
    address        TEXT NOT NULL,
    usable_from_ms INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    PRIMARY KEY (user_id, asset_id, address)
) STRICT;
"#;

/// A transfer an operator abandoned (`AbandonTransfer`) is a fourth batch state. SQLite
/// cannot change a CHECK constraint in place, so the table is copied.
const V4: &str = r#"
CREATE TABLE withdrawal_batches_v4 (
    batch_id    INTEGER PRIMARY KEY,
    asset_id    INTEGER NOT NULL,
    txid        TEXT NOT NULL,
    network_fee INTEGER NOT NULL,
    versions    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('OPEN', 'CONFIRMED', 'CANCELLED', 'ABANDONED')),
    height      INTEGER,
    built_seq   INTEGER NOT NULL,
    built_ms    INTEGER NOT NULL,
    updated_seq INTEGER NOT NULL
) STRICT;
INSERT INTO withdrawal_batches_v4 SELECT * FROM withdrawal_batches;
DROP TABLE withdrawal_batches;
ALTER TABLE withdrawal_batches_v4 RENAME TO withdrawal_batches;
"#;

/// The page size of a new read model, in bytes.
pub const PAGE_SIZE: u32 = 1024;

/// Set the pragmas and bring the schema up to [`SCHEMA_VERSION`].
pub(crate) fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    // WAL, and fsync only at checkpoints: the journal is the source of truth and the
    // read model can be rebuilt from it, so a lost tail after a power cut is acceptable.
    // The one writer goes further and does not fsync at all (`durability`,
    // `Store::open_writer`).
    //
    // Small pages for a new database (an existing one keeps its size until `kura
    // reindex` rebuilds it): each commit writes every page it touches to the WAL, and a
    // commit touches a leaf of each index for a few rows. With 4 KiB pages the read model
    // wrote about 147 MB/s under the overload benchmark's honest load, many times the
    // journal's bytes, on the disk whose fsyncs acknowledge orders; with 1 KiB pages about
    // 82 MB/s (BENCHMARKS.md, 2026-11-25). SQLite's default checkpoint (every 1000
    // pages, now 1 MiB) is kept: 4096 and 16384 pages gave higher order p99s, and stalls.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;

    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT;",
    )?;
    let found: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    let found = found.unwrap_or(0);
    let found = u32::try_from(found).map_err(|_| StoreError::Corrupt("schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![i as i64 + 1],
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "kura-store: schema migrated");
    }
    Ok(())
}
