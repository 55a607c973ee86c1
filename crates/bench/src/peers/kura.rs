//! kura-book behind [`BookUnderTest`].
//!
//! - Ids: native (`OrderId(u64)`), no mapping.
//! - Prices and quantities: native `u64` ticks and lots.
//! - Move: cancel + place with the same id, which is kura's own move (the engine does the
//!   same), so it is identical in both [`Semantics`].
//! - Reduce: in place, keeping the order's queue position ([`Semantics::Native`]), or
//!   cancel + place of the rest ([`Semantics::Common`]).
//! - IOC: native. FOK-budget: native for buys (quote budget + FOK); a sell checks the bids
//!   first (kura has no minimum-proceeds order) by walking them without allocating.
//! - Allocation per call: none in the steady state; one event buffer is reused. Trades and
//!   volume are counted from the book's fill events.
//! - Thread safety: none (plain `&mut`), no atomics.

use super::{BookUnderTest, Semantics, L2};
use crate::workload::{kura_exec, GenCmd, GenKind};
use kura_book::{Book, BookEvent, Limits, Side};

/// kura's order book with `()` payloads.
#[derive(Debug)]
pub struct KuraBook {
    book: Book<()>,
    events: Vec<BookEvent<()>>,
    trades: u64,
    volume: u64,
    reduce_in_place: bool,
}

impl KuraBook {
    pub fn new(semantics: Semantics) -> KuraBook {
        KuraBook {
            book: Book::new(Limits::DEFAULT),
            events: Vec::with_capacity(256),
            trades: 0,
            volume: 0,
            reduce_in_place: semantics == Semantics::Native,
        }
    }

    pub fn book(&self) -> &Book<()> {
        &self.book
    }

    #[inline]
    fn run(&mut self, cmd: &GenCmd) -> u64 {
        let exec = kura_exec(&mut self.book, &mut self.events, cmd, self.reduce_in_place);
        for ev in &self.events {
            if let BookEvent::Fill { qty, .. } = ev {
                self.trades += 1;
                self.volume += qty.get();
            }
        }
        exec.filled
    }
}

impl BookUnderTest for KuraBook {
    fn name(&self) -> &'static str {
        "kura"
    }

    #[inline]
    fn place_limit(&mut self, id: u64, side: Side, price: u64, qty: u64, tif: GenKind) -> u64 {
        self.run(&GenCmd::Place {
            uid: 1,
            id,
            side,
            price,
            qty,
            kind: tif,
        })
    }

    #[inline]
    fn cancel(&mut self, id: u64) -> bool {
        self.book.cancel(kura_units::OrderId(id)).is_ok()
    }

    #[inline]
    fn move_price(&mut self, id: u64, new_price: u64) -> u64 {
        self.run(&GenCmd::Move {
            uid: 1,
            id,
            price: new_price,
        })
    }

    #[inline]
    fn reduce(&mut self, id: u64, by: u64) -> bool {
        if self.book.slot_of(kura_units::OrderId(id)).is_none() {
            return false;
        }
        self.run(&GenCmd::Reduce { uid: 1, id, by });
        true
    }

    fn trades(&self) -> u64 {
        self.trades
    }

    fn volume(&self) -> u64 {
        self.volume
    }

    fn l2(&self, levels: usize) -> L2 {
        let side = |s| {
            self.book
                .depth(s, levels)
                .into_iter()
                .map(|(p, q)| (p.get(), q.get()))
                .collect()
        };
        (side(Side::Buy), side(Side::Sell))
    }
}
