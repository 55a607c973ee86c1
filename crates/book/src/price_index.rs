//! Price → level index of one book side.
//!
//! Small sides live in an ordered map. Once a side holds [`LADDER_MIN_LEVELS`] levels it
//! also gets a *ladder*: a dense array of [`LADDER_WIDTH`] slots, one per tick, centred
//! on the price that triggered it, with a bitmap of the occupied slots so that finding
//! the next occupied price skips 64 empty ticks per word. Prices inside the ladder's window are found, added
//! and removed by indexing the array (no tree walk, no allocation); prices outside it
//! stay in the ordered map (the overflow). The best price after the best level is removed
//! is found by scanning the ladder from the removed price outwards (nothing better can be
//! there), compared with the overflow's best.
//!
//! Invariant: every price is in exactly one of the ladder (when inside its window) or the
//! overflow (when outside it, or when there is no ladder).
//!
//! Known limitation: the window moves only when it is empty (every level left it); a
//! market that drifts while keeping some levels inside the old window keeps its new
//! levels in the overflow, where they cost a tree walk again.

use crate::{Side, NIL};
use std::collections::BTreeMap;

/// Ticks covered by a ladder.
pub(crate) const LADDER_WIDTH: u64 = 1 << 12;
/// Levels a side must hold before it gets a ladder (small books stay small in memory).
/// Low in this crate's tests so the book's reference comparison runs on ladders.
pub(crate) const LADDER_MIN_LEVELS: usize = if cfg!(test) { 4 } else { 64 };

#[derive(Clone, Debug)]
pub(crate) struct PriceIndex {
    side: Side,
    ladder: Vec<u32>,
    /// Bit `i` set ⟺ `ladder[i]` holds a level.
    bits: Vec<u64>,
    base: u64,
    in_ladder: usize,
    overflow: BTreeMap<u64, u32>,
}

impl PriceIndex {
    pub(crate) fn new(side: Side) -> PriceIndex {
        PriceIndex {
            side,
            ladder: Vec::new(),
            bits: Vec::new(),
            base: 0,
            in_ladder: 0,
            overflow: BTreeMap::new(),
        }
    }

    #[inline]
    fn slot(&self, price: u64) -> Option<usize> {
        if self.ladder.is_empty() || price < self.base {
            return None;
        }
        let offset = price - self.base;
        (offset < LADDER_WIDTH).then_some(offset as usize)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_ladder + self.overflow.len()
    }

    /// Bytes held by the index (ladder array and overflow entries).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.ladder.capacity() * core::mem::size_of::<u32>()
            + self.bits.capacity() * core::mem::size_of::<u64>()
            + self.overflow.len() * core::mem::size_of::<(u64, u32)>()
    }

    #[inline]
    pub(crate) fn get(&self, price: u64) -> Option<u32> {
        match self.slot(price) {
            Some(i) => {
                let l = self.ladder[i];
                (l != NIL).then_some(l)
            }
            None => self.overflow.get(&price).copied(),
        }
    }

    /// Add a price known to be absent.
    #[inline]
    pub(crate) fn insert(&mut self, price: u64, level: u32) {
        match self.slot(price) {
            Some(i) => {
                debug_assert_eq!(self.ladder[i], NIL, "price {price} already indexed");
                self.ladder[i] = level;
                self.bits[i >> 6] |= 1 << (i & 63);
                self.in_ladder += 1;
            }
            None => {
                self.overflow.insert(price, level);
                if self.ladder.is_empty() && self.overflow.len() >= LADDER_MIN_LEVELS {
                    self.build_ladder(price);
                } else if !self.ladder.is_empty() && self.in_ladder == 0 {
                    // The market moved away from an empty window: move the window.
                    self.build_ladder(price);
                }
            }
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, price: u64) -> Option<u32> {
        match self.slot(price) {
            Some(i) => {
                let l = std::mem::replace(&mut self.ladder[i], NIL);
                if l == NIL {
                    return None;
                }
                self.bits[i >> 6] &= !(1 << (i & 63));
                self.in_ladder -= 1;
                Some(l)
            }
            None => self.overflow.remove(&price),
        }
    }

    /// Centre an empty (or new) window on `center` and move the overflow's prices that
    /// fall inside it into the ladder.
    fn build_ladder(&mut self, center: u64) {
        debug_assert_eq!(self.in_ladder, 0, "the window moves only when empty");
        self.base = center.saturating_sub(LADDER_WIDTH / 2);
        if self.ladder.is_empty() {
            self.ladder = vec![NIL; LADDER_WIDTH as usize];
            self.bits = vec![0; (LADDER_WIDTH / 64) as usize];
        }
        let end = self.base.saturating_add(LADDER_WIDTH);
        let inside: Vec<(u64, u32)> = self
            .overflow
            .range(self.base..end)
            .map(|(&p, &l)| (p, l))
            .collect();
        for (p, l) in inside {
            self.overflow.remove(&p);
            let i = (p - self.base) as usize;
            self.ladder[i] = l;
            self.bits[i >> 6] |= 1 << (i & 63);
            self.in_ladder += 1;
        }
    }

    /// The first occupied slot at or after `i`.
    fn next_set(&self, i: usize) -> Option<usize> {
        let mut w = i >> 6;
        if w >= self.bits.len() {
            return None;
        }
        let mut word = self.bits[w] & (u64::MAX << (i & 63));
        loop {
            if word != 0 {
                return Some((w << 6) + word.trailing_zeros() as usize);
            }
            w += 1;
            word = *self.bits.get(w)?;
        }
    }

    /// The last occupied slot at or before `i`.
    fn prev_set(&self, i: usize) -> Option<usize> {
        let mut w = i >> 6;
        let keep = i & 63;
        let mask = if keep == 63 {
            u64::MAX
        } else {
            (1u64 << (keep + 1)) - 1
        };
        let mut word = *self.bits.get(w)? & mask;
        loop {
            if word != 0 {
                return Some((w << 6) + 63 - word.leading_zeros() as usize);
            }
            w = w.checked_sub(1)?;
            word = self.bits[w];
        }
    }

    /// The best price: highest for bids, lowest for asks.
    pub(crate) fn best(&self) -> Option<(u64, u32)> {
        let from = match self.side {
            Side::Buy => u64::MAX,
            Side::Sell => 0,
        };
        self.best_from(from)
    }

    /// The best price no better than `from` (the best just removed was at `from`, so
    /// nothing better exists): the ladder is scanned from there outwards.
    pub(crate) fn best_from(&self, from: u64) -> Option<(u64, u32)> {
        let in_ladder = if self.in_ladder == 0 {
            None
        } else {
            match self.side {
                Side::Sell => {
                    let start = from.saturating_sub(self.base).min(LADDER_WIDTH) as usize;
                    self.next_set(start)
                }
                Side::Buy => {
                    if from < self.base {
                        None
                    } else {
                        let top = (LADDER_WIDTH - 1) as usize;
                        self.prev_set(((from - self.base) as usize).min(top))
                    }
                }
            }
            .map(|i| (self.base + i as u64, self.ladder[i]))
        };
        let in_overflow = match self.side {
            Side::Sell => self.overflow.first_key_value(),
            Side::Buy => self.overflow.last_key_value(),
        }
        .map(|(&p, &l)| (p, l));
        match (in_ladder, in_overflow) {
            (Some(a), Some(b)) => Some(match self.side {
                Side::Sell => {
                    if a.0 <= b.0 {
                        a
                    } else {
                        b
                    }
                }
                Side::Buy => {
                    if a.0 >= b.0 {
                        a
                    } else {
                        b
                    }
                }
            }),
            (a, b) => a.or(b),
        }
    }

    /// Every (price, level), best first.
    pub(crate) fn iter_best_first(&self) -> Box<dyn Iterator<Item = (u64, u32)> + '_> {
        let end = self.base.saturating_add(LADDER_WIDTH);
        let base = self.base;
        let ascending = {
            let mut next = self.next_set(0);
            std::iter::from_fn(move || {
                let i = next?;
                next = self.next_set(i + 1);
                Some((base + i as u64, self.ladder[i]))
            })
        };
        let descending = {
            let mut next = self.prev_set((LADDER_WIDTH - 1) as usize);
            std::iter::from_fn(move || {
                let i = next?;
                next = i.checked_sub(1).and_then(|j| self.prev_set(j));
                Some((base + i as u64, self.ladder[i]))
            })
        };
        let copy = |(&p, &l): (&u64, &u32)| (p, l);
        if self.ladder.is_empty() {
            return match self.side {
                Side::Sell => Box::new(self.overflow.iter().map(copy)),
                Side::Buy => Box::new(self.overflow.iter().rev().map(copy)),
            };
        }
        match self.side {
            Side::Sell => Box::new(
                self.overflow
                    .range(..base)
                    .map(copy)
                    .chain(ascending)
                    .chain(self.overflow.range(end..).map(copy)),
            ),
            Side::Buy => Box::new(
                self.overflow
                    .range(end..)
                    .rev()
                    .map(copy)
                    .chain(descending)
                    .chain(self.overflow.range(..base).rev().map(copy)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index agrees with a plain ordered map for any sequence of inserts and
        /// removes, on both sides, with prices inside and outside the ladder's window.
        #[test]
        fn agrees_with_an_ordered_map(
            ops in prop::collection::vec((any::<bool>(), 0u64..200_000, any::<bool>()), 1..600),
            buy in any::<bool>(),
        ) {
            let side = if buy { Side::Buy } else { Side::Sell };
            let mut index = PriceIndex::new(side);
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            for (n, (insert, raw, near)) in ops.into_iter().enumerate() {
                // Most prices near 100,000 (inside a ladder), some far away.
                let price = if near { 100_000 + raw % 500 } else { raw };
                if insert {
                    if let std::collections::btree_map::Entry::Vacant(e) = model.entry(price) {
                        e.insert(n as u32);
                        index.insert(price, n as u32);
                    }
                } else {
                    let best_before = index.best();
                    prop_assert_eq!(index.remove(price), model.remove(&price));
                    if let Some((p, _)) = best_before {
                        if p == price {
                            let want = match side {
                                Side::Sell => model.first_key_value(),
                                Side::Buy => model.last_key_value(),
                            }.map(|(&p, &l)| (p, l));
                            prop_assert_eq!(index.best_from(price), want);
                        }
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.get(price), model.get(&price).copied());
                let want: Vec<(u64, u32)> = match side {
                    Side::Sell => model.iter().map(|(&p, &l)| (p, l)).collect(),
                    Side::Buy => model.iter().rev().map(|(&p, &l)| (p, l)).collect(),
                };
                prop_assert_eq!(index.best(), want.first().copied());
                if n % 50 == 0 {
                    prop_assert_eq!(index.iter_best_first().collect::<Vec<_>>(), want);
                }
            }
        }
    }
}
