//! Order books under test, behind one trait, and a same-run comparison.
//!
//! [`BookUnderTest`] is the smallest interface every engine here can serve: place a limit
//! order (GTC, IOC or FOK-budget), cancel, move to a new price, reduce, and read trade
//! counts and the L2 book. Fees, balances and users are out of scope: this is the book
//! alone. kura-book is always built ([`kura::KuraBook`]); with the `peers` feature also
//! matchcore, lobster and orderbook-rs (each adapter's module says how it maps ids,
//! prices, move, reduce, IOC and FOK-budget, and what it allocates).
//!
//! [`book_only`] runs one workload through every built engine in the same process:
//! pre-fill (not measured), then the measured commands back to back, best of `repeats`,
//! each engine in its [`Semantics::Native`] form. Then it runs the workload once more on
//! every engine in [`Semantics::Common`] form and compares trades, traded volume and the
//! final L2 book (every level, every symbol) with kura's.
//!
//! Semantics compared ([`COMPARED`]): GTC limit orders, IOC at a limit price, FOK-budget
//! (emulated by a depth walk + IOC where an engine lacks it), cancel, move = cancel +
//! place at the back of the new level (native on matchcore and orderbook-rs, emulated on
//! lobster; kura's own move is cancel + place), reduce = cancel + place of the rest (so
//! that lobster, which has no reduce, can take part). Self-trades are allowed everywhere.

mod kura;
#[cfg(feature = "peers")]
mod lobster_peer;
#[cfg(feature = "peers")]
mod matchcore_peer;
#[cfg(feature = "peers")]
mod orderbook_rs_peer;

pub use kura::KuraBook;
#[cfg(feature = "peers")]
pub use lobster_peer::LobsterBook;
#[cfg(feature = "peers")]
pub use matchcore_peer::MatchcoreBook;
#[cfg(feature = "peers")]
pub use orderbook_rs_peer::OrderbookRsBook;

use crate::latency::closed_loop;
use crate::workload::{GenCmd, GenKind, Workload};
use kura_book::Side;
use std::collections::BTreeMap;

/// One price level: (price in ticks, total quantity in lots).
pub type Level = (u64, u64);
/// Both sides of a book, best level first: (bids, asks).
pub type L2 = (Vec<Level>, Vec<Level>);

/// One order book, as the comparison drives it. Prices are ticks, quantities lots.
pub trait BookUnderTest {
    fn name(&self) -> &'static str;
    /// Place an order; returns the lots it traded as taker.
    fn place_limit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: GenKind) -> u64;
    /// Remove a resting order; false if it was not resting.
    fn cancel(&mut self, id: u64) -> bool;
    /// Move a resting order to `new_price` (back of that level); returns lots traded.
    fn move_price(&mut self, id: u64, new_price: u64) -> u64;
    /// Lower a resting order by `by` lots (`by >= remaining` removes it); false if it was
    /// not resting.
    fn reduce(&mut self, id: u64, by: u64) -> bool;
    /// Maker fills so far.
    fn trades(&self) -> u64;
    /// Lots traded so far.
    fn volume(&self) -> u64;
    /// Up to `levels` levels per side, best first, as (price, total quantity):
    /// (bids, asks).
    fn l2(&self, levels: usize) -> L2;
}

/// Which form of move and reduce an adapter uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Semantics {
    /// The engine's own amend where it has one (fastest; reduce keeps queue position on
    /// kura, matchcore and orderbook-rs, not on lobster).
    Native,
    /// Move and reduce as cancel + place on every engine, so all engines do the same.
    Common,
}

/// What [`book_only`]'s agreement check compares.
pub const COMPARED: &str =
    "GTC limit, IOC at a limit, FOK-budget (depth walk + IOC where not native), \
cancel, move = cancel + place at the back of the new level, reduce = cancel + place of the rest; \
self-trades allowed; compared: maker-fill count, traded lots, full L2 book of every symbol";

/// Run one generated command.
#[inline]
pub fn apply<B: BookUnderTest + ?Sized>(book: &mut B, cmd: &GenCmd) {
    match *cmd {
        GenCmd::Place {
            id,
            side,
            price,
            qty,
            kind,
            ..
        } => {
            book.place_limit(id, side, price, qty, kind);
        }
        GenCmd::Cancel { id, .. } => {
            book.cancel(id);
        }
        GenCmd::Move { id, price, .. } => {
            book.move_price(id, price);
        }
        GenCmd::Reduce { id, by, .. } => {
            book.reduce(id, by);
        }
    }
}

/// The observable end state of a run: trades and volume of the measured commands, and
/// every symbol's full L2 book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub trades: u64,
    pub volume: u64,
    /// Per symbol: (bids, asks), best first.
    pub books: Vec<L2>,
}

impl Outcome {
    /// The first difference from `other`, in words; `None` if they agree.
    pub fn first_difference(&self, other: &Outcome) -> Option<String> {
        if self.trades != other.trades {
            return Some(format!("trades {} vs {}", self.trades, other.trades));
        }
        if self.volume != other.volume {
            return Some(format!("volume {} vs {}", self.volume, other.volume));
        }
        for (s, (a, b)) in self.books.iter().zip(&other.books).enumerate() {
            for (what, x, y) in [("bid", &a.0, &b.0), ("ask", &a.1, &b.1)] {
                if x != y {
                    let i = x
                        .iter()
                        .zip(y)
                        .position(|(p, q)| p != q)
                        .unwrap_or(x.len().min(y.len()));
                    return Some(format!(
                        "symbol {s} {what} level {i}: {:?} vs {:?} ({} vs {} levels)",
                        x.get(i),
                        y.get(i),
                        x.len(),
                        y.len()
                    ));
                }
            }
        }
        None
    }
}

/// One engine's results in [`book_only`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EngineResult {
    /// Measured commands per second of each native run.
    pub runs_ops_per_sec: Vec<u64>,
    pub best_ops_per_sec: u64,
    /// Commands per second of the common-semantics run (not best-of).
    pub common_ops_per_sec: u64,
    /// Maker fills and lots traded by the measured commands, native and common runs.
    pub trades_native: u64,
    pub volume_native: u64,
    pub trades_common: u64,
    pub volume_common: u64,
    /// Price levels resting at the end (both sides, all symbols), common run.
    pub levels_common: u64,
    #[serde(skip)]
    pub native: Option<Outcome>,
    #[serde(skip)]
    pub common: Option<Outcome>,
}

/// The result of [`book_only`]. As JSON: one `"engine": ops_per_sec` entry per engine
/// built, then `agree`, `peers_built` and details.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BookOnlyReport {
    /// Best measured commands per second per engine (kura, matchcore, lobster,
    /// orderbook-rs).
    #[serde(flatten)]
    pub ops_per_sec: BTreeMap<&'static str, u64>,
    /// Per peer: same trades, volume and final L2 books as kura under [`COMPARED`].
    pub agree: BTreeMap<&'static str, bool>,
    /// Per peer: the first difference from kura, for peers that do not agree.
    pub first_difference: BTreeMap<&'static str, String>,
    /// Per peer: whether the native runs also ended the same as kura's native run
    /// (lobster reduces by cancel + place, so it may not).
    pub agree_native: BTreeMap<&'static str, bool>,
    /// Whether the crate was built with the `peers` feature.
    pub peers_built: bool,
    pub compared: &'static str,
    pub workload: String,
    pub symbols: u32,
    pub prefill_commands: usize,
    pub measured_commands: usize,
    pub repeats: usize,
    pub engines: BTreeMap<&'static str, EngineResult>,
}

impl BookOnlyReport {
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(s) => s,
            Err(e) => format!("{{\"error\": \"{e}\"}}"),
        }
    }
}

/// Orders to pre-size per symbol: twice the symbol's pre-fill orders.
fn capacity_hints(w: &Workload) -> Vec<usize> {
    let mut per = vec![0usize; w.symbols as usize];
    for (s, _) in &w.prefill {
        per[*s as usize] += 2;
    }
    per
}

fn outcome<B: BookUnderTest>(books: &[B], base: &[(u64, u64)]) -> Outcome {
    let trades: u64 =
        books.iter().map(|b| b.trades()).sum::<u64>() - base.iter().map(|x| x.0).sum::<u64>();
    let volume: u64 =
        books.iter().map(|b| b.volume()).sum::<u64>() - base.iter().map(|x| x.1).sum::<u64>();
    Outcome {
        trades,
        volume,
        books: books.iter().map(|b| b.l2(usize::MAX)).collect(),
    }
}

/// Pre-fill, then time the measured commands; returns (commands per second, outcome).
fn run_once<B: BookUnderTest>(
    w: &Workload,
    make: &impl Fn(Semantics, usize) -> B,
    semantics: Semantics,
    hints: &[usize],
) -> (u64, Outcome) {
    let mut books: Vec<B> = hints.iter().map(|&h| make(semantics, h)).collect();
    for (s, c) in &w.prefill {
        apply(&mut books[*s as usize], c);
    }
    let base: Vec<(u64, u64)> = books.iter().map(|b| (b.trades(), b.volume())).collect();
    let cmds = &w.commands;
    let t = closed_loop(cmds.len(), |i| {
        let (s, c) = &cmds[i];
        apply(&mut books[*s as usize], c);
    });
    let out = outcome(&books, &base);
    (t.ops_per_sec, out)
}

/// Run one engine: `repeats` native runs (best kept), then one common run.
pub fn run_engine<B: BookUnderTest>(
    w: &Workload,
    repeats: usize,
    make: impl Fn(Semantics, usize) -> B,
) -> EngineResult {
    let hints = capacity_hints(w);
    let mut runs = Vec::new();
    let mut native = None;
    for _ in 0..repeats.max(1) {
        let (ops, out) = run_once(w, &make, Semantics::Native, &hints);
        runs.push(ops);
        native = Some(out);
    }
    let (common_ops, common) = run_once(w, &make, Semantics::Common, &hints);
    let native = native.unwrap_or_else(|| common.clone());
    EngineResult {
        best_ops_per_sec: runs.iter().copied().max().unwrap_or(0),
        runs_ops_per_sec: runs,
        common_ops_per_sec: common_ops,
        trades_native: native.trades,
        volume_native: native.volume,
        trades_common: common.trades,
        volume_common: common.volume,
        levels_common: common
            .books
            .iter()
            .map(|(b, a)| (b.len() + a.len()) as u64)
            .sum(),
        native: Some(native),
        common: Some(common),
    }
}

/// Run `workload` through every engine built (see the module documentation).
pub fn book_only(workload: &Workload, repeats: usize) -> BookOnlyReport {
    let mut engines: BTreeMap<&'static str, EngineResult> = BTreeMap::new();
    engines.insert(
        "kura",
        run_engine(workload, repeats, |s, _| KuraBook::new(s)),
    );
    #[cfg(feature = "peers")]
    {
        engines.insert(
            "matchcore",
            run_engine(workload, repeats, MatchcoreBook::new),
        );
        engines.insert("lobster", run_engine(workload, repeats, LobsterBook::new));
        engines.insert(
            "orderbook-rs",
            run_engine(workload, repeats, |s, _| OrderbookRsBook::new(s)),
        );
    }
    let mut agree = BTreeMap::new();
    let mut agree_native = BTreeMap::new();
    let mut first_difference = BTreeMap::new();
    if let Some(kura) = engines.get("kura") {
        for (name, e) in engines.iter().filter(|(n, _)| **n != "kura") {
            let diff = match (&kura.common, &e.common) {
                (Some(k), Some(p)) => k.first_difference(p),
                _ => Some("no outcome".into()),
            };
            agree.insert(*name, diff.is_none());
            if let Some(d) = diff {
                first_difference.insert(*name, format!("kura vs {name}: {d}"));
            }
            let same_native = matches!((&kura.native, &e.native), (Some(k), Some(p)) if k == p);
            agree_native.insert(*name, same_native);
        }
    }
    BookOnlyReport {
        ops_per_sec: engines
            .iter()
            .map(|(n, e)| (*n, e.best_ops_per_sec))
            .collect(),
        agree,
        first_difference,
        agree_native,
        peers_built: cfg!(feature = "peers"),
        compared: COMPARED,
        workload: workload.name.clone(),
        symbols: workload.symbols,
        prefill_commands: workload.prefill.len(),
        measured_commands: workload.commands.len(),
        repeats,
        engines,
    }
}

#[cfg(test)]
mod tests;
