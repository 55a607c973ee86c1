//! kura's read model: a SQLite database projected from engine events (DESIGN.md §2).
//!
//! The read model is disposable. The journal is the source of truth; this database can be
//! deleted and rebuilt by replaying the journal through the engine and feeding every
//! command's events to [`Store::apply_batch`].
//!
//! - One batch of commands is projected in one SQLite transaction, and `last_seq` (the
//!   journal sequence number of the last command applied) is written in that same
//!   transaction: after a crash the store is at a batch boundary, and the caller resumes
//!   by replaying every command after [`Store::last_seq`].
//! - Commands whose sequence number is at or below `last_seq` are skipped, so re-applying
//!   a batch is a no-op.
//! - Every amount is an INTEGER (ticks, lots, minor units) in STRICT tables; a value that
//!   does not fit in a signed 64-bit integer is refused with [`StoreError::OutOfRange`].
//! - Klines: every Binance interval from `1m` to `1M` (not `1s`) is maintained
//!   incrementally, one upsert per interval per trade, so every kline query is a direct
//!   range read of the primary key.
//! - Order statuses follow Binance: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED,
//!   EXPIRED_IN_MATCH (self-trade prevention).

#![forbid(unsafe_code)]

pub mod durability;
mod interval;
mod live;
mod project;
mod query;
mod schema;

pub use durability::{boot_id, marker_path, remove_database, WriterOpened};
pub use interval::Interval;
pub use live::LiveOrders;
pub use query::{
    BalanceRow, DepositRow, FillRow, Kline, OrderRow, OrderStatus, OrderType, OrdersQuery,
    TickerStats, TradeRow, TradesQuery, WithdrawalRow, WithdrawalStatus,
};
pub use schema::{PAGE_SIZE, SCHEMA_VERSION};

use kura_engine::{Ctx, Event};
use rusqlite::Connection;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("value {0} does not fit in a SQLite integer")]
    OutOfRange(u128),
    #[error("event of seq {event} given with the command of seq {command}")]
    SeqMismatch { command: u64, event: u64 },
    #[error("event about order {0}, which the store does not have (store out of sync)")]
    UnknownOrder(u64),
    #[error("event about withdrawal {0:?}, which the store does not have")]
    UnknownWithdrawal(String),
    #[error("event about withdrawal batch {0}, which the store does not have")]
    UnknownBatch(u64),
    #[error("database schema version {found} is newer than this build ({known})")]
    SchemaTooNew { found: u32, known: u32 },
    #[error("corrupt value in the store: {0}")]
    Corrupt(&'static str),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// One sequenced command's events, as the sequencer applied it. A rejected command is
/// given with no events, so that `last_seq` still moves past it.
#[derive(Clone, Copy, Debug)]
pub struct Applied<'a> {
    pub ctx: Ctx,
    pub events: &'a [Event],
}

impl<'a> Applied<'a> {
    pub fn new(ctx: Ctx, events: &'a [Event]) -> Applied<'a> {
        Applied { ctx, events }
    }
}

/// The SQLite read model. See the crate documentation.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    last_seq: Option<u64>,
    /// The writer's marker while it writes without `fsync` ([`Store::open_writer`]).
    unsynced: Option<std::path::PathBuf>,
}

impl Store {
    /// Open (or create) the database at `path`, in WAL mode with `synchronous=NORMAL`,
    /// and migrate its schema to [`SCHEMA_VERSION`]. Readers open it so; the one writer
    /// that projects into it uses [`Store::open_writer`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::from_connection(Connection::open(path)?)
    }

    /// A store in memory (tests, tools).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Store, StoreError> {
        schema::prepare(&mut conn)?;
        let last_seq: Option<i64> =
            conn.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })?;
        let last_seq = match last_seq {
            None => None,
            Some(v) => Some(u64::try_from(v).map_err(|_| StoreError::Corrupt("last_seq"))?),
        };
        Ok(Store {
            conn,
            last_seq,
            unsynced: None,
        })
    }

    /// The sequence number of the last command projected, `None` on an empty store.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Project a batch of commands in one transaction, and record the last sequence
    /// number in the same transaction. Commands at or below [`Store::last_seq`] (or at or
    /// below an earlier command of the same batch) are skipped. Returns how many commands
    /// were projected. On error nothing of the batch is kept.
    pub fn apply_batch(&mut self, batch: &[Applied<'_>]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut last = self.last_seq;
        let mut applied = 0;
        let mut candles = project::Candles::default();
        for a in batch {
            if last.is_some_and(|l| a.ctx.seq <= l) {
                continue;
            }
            for e in a.events {
                if e.seq != a.ctx.seq {
                    return Err(StoreError::SeqMismatch {
                        command: a.ctx.seq,
                        event: e.seq,
                    });
                }
                project::event(&tx, &mut candles, a.ctx, e)?;
            }
            last = Some(a.ctx.seq);
            applied += 1;
        }
        candles.flush(&tx)?;
        if applied > 0 {
            let v = last.map(project::int).transpose()?;
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'last_seq'", [v])?;
        }
        tx.commit()?;
        self.last_seq = last;
        tracing::trace!(applied, last_seq = ?last, "kura-store: batch projected");
        Ok(applied)
    }

    /// [`Store::apply_batch`] for one command.
    pub fn apply(&mut self, ctx: Ctx, events: &[Event]) -> Result<usize, StoreError> {
        self.apply_batch(&[Applied::new(ctx, events)])
    }

    /// The underlying connection, for ad-hoc read queries (exports, tools).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
