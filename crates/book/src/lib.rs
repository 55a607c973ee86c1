//! One market's order book and its price-time matching. No balances, no fees, no I/O.
//!
//! Layout: every resting order is a node in one slab (`Vec<Node<T>>`, reused through a
//! free list, addressed by a `u32` slot). The orders at one price form an intrusive
//! doubly linked FIFO list hanging off a `Level` (also slab-allocated). Each side keeps
//! an ordered map from price to level; an id index maps order ids to slots. So:
//! cancel is O(1) plus, when a level empties, one ordered-map removal; adding at an
//! existing price is O(log levels) for the lookup and O(1) for the append; the best
//! level of each side is cached. In the steady state nothing is allocated per order.
//!
//! `T` is the caller's per-order payload (the engine keeps holds and fee accumulators
//! there); the book copies it around and never looks inside.
//!
//! Invariants (checked by [`Book::check_invariants`] in tests and simulation):
//! - the book is never crossed after an operation: best bid < best ask;
//! - within a level, orders are in arrival order (price-time priority);
//! - a level's `total` and `count` equal the sum and number of its orders;
//! - every resting order is in the id index and every index entry points at it;
//! - every resting quantity is positive.
//!
//! Price and quantity are integers of ticks and lots; a quote budget is counted in
//! tick·lot units (price_ticks × qty_lots), which converts to quote minor units exactly
//! through the market's tick and lot sizes (the engine does that conversion).
//!
//! Known limitations: one book is single-threaded; limits are per book (see [`Limits`]).

#![forbid(unsafe_code)]

mod price_index;
mod reference;

use price_index::PriceIndex;

pub use reference::ReferenceBook;

use kura_units::{OrderId, PriceTicks, QtyLots, UserId};
use rustc_hash::FxHashMap;

/// Slot of a resting order in the book's slab.
pub type Slot = u32;
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    /// Good till cancelled: the rest of the order rests on the book.
    Gtc,
    /// Immediate or cancel: what cannot fill at once expires.
    Ioc,
    /// Fill or kill: the whole order fills at once, or nothing happens.
    Fok,
}

/// Self-trade prevention, with Binance's names. The taker's mode applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Stp {
    /// Self trades are allowed.
    None,
    /// The incoming order expires when it would trade with its owner's resting order.
    ExpireTaker,
    /// The resting order of the same owner expires; the incoming order goes on.
    #[default]
    ExpireMaker,
    /// Both expire.
    ExpireBoth,
}

/// Capacity limits of one book; every one is enforced with a typed rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub orders_max: u32,
    pub levels_max: u32,
    pub orders_per_level_max: u32,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        orders_max: 4_000_000,
        levels_max: 1_000_000,
        orders_per_level_max: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// An incoming order.
#[derive(Clone, Copy, Debug)]
pub struct Taker<T> {
    pub id: OrderId,
    pub owner: UserId,
    pub side: Side,
    /// The worst price the order accepts (for a market order: the collar bound).
    pub limit: PriceTicks,
    /// The most base quantity it may trade.
    pub qty: QtyLots,
    /// The most it may trade in tick·lot units (Σ price × qty), for orders by quote amount.
    /// An order with a budget never rests: what it cannot fill expires.
    pub quote_budget: Option<u128>,
    pub tif: TimeInForce,
    pub post_only: bool,
    pub stp: Stp,
    pub payload: T,
}

/// What happened to resting orders while a taker matched, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookEvent<T> {
    /// The taker traded `qty` at `price` against a resting order.
    Fill {
        maker_id: OrderId,
        maker_owner: UserId,
        /// The maker's payload as it was before this fill.
        maker_payload: T,
        /// Where the maker still rests, if it was not filled completely.
        maker_slot: Option<Slot>,
        maker_remaining: QtyLots,
        price: PriceTicks,
        qty: QtyLots,
    },
    /// A resting order expired by self-trade prevention.
    MakerExpired {
        id: OrderId,
        owner: UserId,
        payload: T,
        remaining: QtyLots,
    },
}

/// Why an incoming order ended without resting or filling completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpireReason {
    /// IOC (or market) with quantity left: no more liquidity within its limit or budget.
    NoLiquidity,
    /// Self-trade prevention expired the taker.
    SelfTrade,
}

/// How an incoming order ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakerEnd {
    Filled,
    Rested {
        slot: Slot,
        remaining: QtyLots,
    },
    Expired {
        remaining: QtyLots,
        reason: ExpireReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub filled: QtyLots,
    /// Σ price × qty of the fills, in tick·lot units.
    pub filled_tl: u128,
    pub end: TakerEnd,
}

/// Why the book refused an order; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookReject {
    /// A post-only order would have taken liquidity.
    PostOnlyWouldTake,
    /// A fill-or-kill order cannot fill completely now.
    FokUnfillable,
    /// The order id is already resting.
    DuplicateId,
    BookFull,
    TooManyLevels,
    LevelFull,
    ZeroQuantity,
    UnknownOrder,
}

#[derive(Clone, Copy, Debug)]
struct Node<T> {
    id: u64,
    owner: u32,
    remaining: u64,
    prev: u32,
    next: u32,
    level: u32,
    side: Side,
    stp: Stp,
    post_only: bool,
    payload: T,
}

/// Where the level an order will rest at is, when already looked up.
#[derive(Clone, Copy, Debug)]
enum LevelHint {
    Unknown,
    Absent,
    At(u32),
}

#[derive(Clone, Copy, Debug)]
struct Level {
    price: u64,
    total: u64,
    count: u32,
    head: u32,
    tail: u32,
}

/// A resting order as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resting<T> {
    pub id: OrderId,
    pub owner: UserId,
    pub side: Side,
    pub price: PriceTicks,
    pub remaining: QtyLots,
    pub post_only: bool,
    pub stp: Stp,
    pub payload: T,
}

/// One market's order book. See the module documentation.
#[derive(Clone, Debug)]
pub struct Book<T: Copy> {
    nodes: Vec<Node<T>>,
    free_node: u32,
    levels: Vec<Level>,
    free_level: u32,
    bids: PriceIndex,
    asks: PriceIndex,
    best_bid: u32,
    best_ask: u32,
    index: FxHashMap<u64, u32>,
    resting: u32,
    level_count: u32,
    limits: Limits,
}

impl<T: Copy> Book<T> {
    pub fn new(limits: Limits) -> Book<T> {
        Book {
            nodes: Vec::new(),
            free_node: NIL,
            levels: Vec::new(),
            free_level: NIL,
            bids: PriceIndex::new(Side::Buy),
            asks: PriceIndex::new(Side::Sell),
            best_bid: NIL,
            best_ask: NIL,
            index: FxHashMap::default(),
            resting: 0,
            level_count: 0,
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.resting as usize
    }

    pub fn is_empty(&self) -> bool {
        self.resting == 0
    }

    /// Number of price levels on both sides.
    pub fn level_count(&self) -> usize {
        self.level_count as usize
    }

    /// Bytes of slab memory per resting order (node size), for capacity planning.
    pub const fn node_bytes() -> usize {
        core::mem::size_of::<Node<T>>()
    }

    /// Memory the book holds, estimated from its containers' capacities: the order slab,
    /// the level slab, the id index (key, value and one control byte per bucket) and the
    /// two price maps (key and value per level, ignoring B-tree node overhead).
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node<T>>()
            + self.levels.capacity() * core::mem::size_of::<Level>()
            + self.index.capacity() * (core::mem::size_of::<(u64, u32)>() + 1)
            + self.bids.memory_bytes()
            + self.asks.memory_bytes()
    }

    pub fn best_bid(&self) -> Option<(PriceTicks, QtyLots)> {
        self.level_summary(self.best_bid)
    }

    pub fn best_ask(&self) -> Option<(PriceTicks, QtyLots)> {
        self.level_summary(self.best_ask)
    }

    fn level_summary(&self, level: u32) -> Option<(PriceTicks, QtyLots)> {
        (level != NIL).then(|| {
            let l = &self.levels[level as usize];
            (PriceTicks::new(l.price), QtyLots::new(l.total))
        })
    }

    /// Total quantity resting at `price` on `side` (zero when there is no such level).
    pub fn level_quantity(&self, side: Side, price: PriceTicks) -> QtyLots {
        self.side_index(side)
            .get(price.get())
            .map_or(QtyLots::new(0), |l| {
                QtyLots::new(self.levels[l as usize].total)
            })
    }

    /// Up to `n` levels of one side, best first, as (price, total quantity).
    pub fn depth(&self, side: Side, n: usize) -> Vec<(PriceTicks, QtyLots)> {
        self.side_index(side)
            .iter_best_first()
            .take(n)
            .map(|(p, l)| {
                (
                    PriceTicks::new(p),
                    QtyLots::new(self.levels[l as usize].total),
                )
            })
            .collect()
    }

    fn side_index(&self, side: Side) -> &PriceIndex {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_index_mut(&mut self, side: Side) -> &mut PriceIndex {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    pub fn slot_of(&self, id: OrderId) -> Option<Slot> {
        self.index.get(&id.0).copied()
    }

    pub fn get(&self, slot: Slot) -> Option<Resting<T>> {
        let node = self.nodes.get(slot as usize)?;
        if node.level == NIL {
            return None;
        }
        Some(self.resting_of(node))
    }

    pub fn order(&self, id: OrderId) -> Option<Resting<T>> {
        self.slot_of(id).and_then(|s| self.get(s))
    }

    /// The slot and the order with this id, with one index lookup.
    pub fn find(&self, id: OrderId) -> Option<(Slot, Resting<T>)> {
        let slot = self.slot_of(id)?;
        self.get(slot).map(|r| (slot, r))
    }

    fn resting_of(&self, node: &Node<T>) -> Resting<T> {
        Resting {
            id: OrderId(node.id),
            owner: UserId(node.owner),
            side: node.side,
            price: PriceTicks::new(self.levels[node.level as usize].price),
            remaining: QtyLots::new(node.remaining),
            post_only: node.post_only,
            stp: node.stp,
            payload: node.payload,
        }
    }

    /// The payload of a resting order, for the caller to update.
    pub fn payload_mut(&mut self, slot: Slot) -> Option<&mut T> {
        match self.nodes.get_mut(slot as usize) {
            Some(node) if node.level != NIL => Some(&mut node.payload),
            _ => None,
        }
    }

    /// Every resting order of one side in priority order (best price first, then time).
    pub fn for_each(&self, side: Side, mut f: impl FnMut(&Resting<T>)) {
        let mut visit = |level: u32| {
            let mut cur = self.levels[level as usize].head;
            while cur != NIL {
                let node = &self.nodes[cur as usize];
                f(&self.resting_of(node));
                cur = node.next;
            }
        };
        for (_, l) in self.side_index(side).iter_best_first() {
            visit(l);
        }
    }

    /// Whether an order at `limit` on `side` would trade against the best opposite level.
    fn crosses(&self, side: Side, limit: u64) -> bool {
        match side {
            Side::Buy => self.best_ask != NIL && self.levels[self.best_ask as usize].price <= limit,
            Side::Sell => {
                self.best_bid != NIL && self.levels[self.best_bid as usize].price >= limit
            }
        }
    }

    /// Match an incoming order and rest what is left if it is GTC. Nothing changes when
    /// it is refused. Events for resting orders are appended to `events`.
    pub fn place(
        &mut self,
        taker: &Taker<T>,
        events: &mut Vec<BookEvent<T>>,
    ) -> Result<Placed, BookReject> {
        if taker.qty.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        if taker.post_only && self.crosses(taker.side, taker.limit.get()) {
            return Err(BookReject::PostOnlyWouldTake);
        }
        let hint = if taker.tif == TimeInForce::Gtc && taker.quote_budget.is_none() {
            self.check_room(taker.id, taker.side, taker.limit.get())?
        } else {
            LevelHint::Unknown
        };
        if taker.tif == TimeInForce::Fok && !self.fok_fillable(taker) {
            return Err(BookReject::FokUnfillable);
        }
        Ok(self.match_and_rest(taker, events, hint))
    }

    /// Whether an order may rest at `price`; on success, where its level is (matching
    /// only ever changes the other side, so the answer still holds after matching).
    fn check_room(&self, id: OrderId, side: Side, price: u64) -> Result<LevelHint, BookReject> {
        if self.index.contains_key(&id.0) {
            return Err(BookReject::DuplicateId);
        }
        if self.resting >= self.limits.orders_max {
            return Err(BookReject::BookFull);
        }
        match self.side_index(side).get(price) {
            Some(l) if self.levels[l as usize].count >= self.limits.orders_per_level_max => {
                Err(BookReject::LevelFull)
            }
            Some(l) => Ok(LevelHint::At(l)),
            None if self.level_count >= self.limits.levels_max => Err(BookReject::TooManyLevels),
            None => Ok(LevelHint::Absent),
        }
    }

    /// Walks the opposite side exactly as matching would, without changing anything.
    fn fok_fillable(&self, taker: &Taker<T>) -> bool {
        let mut need = taker.qty.get();
        let mut budget = taker.quote_budget;
        let mut done = false;
        let mut visit = |level: &Level| -> bool {
            if done {
                return false;
            }
            let crosses = match taker.side {
                Side::Buy => level.price <= taker.limit.get(),
                Side::Sell => level.price >= taker.limit.get(),
            };
            if !crosses {
                done = true;
                return false;
            }
            let mut cur = level.head;
            while cur != NIL {
                let node = &self.nodes[cur as usize];
                if taker.stp != Stp::None && node.owner == taker.owner.0 {
                    if taker.stp != Stp::ExpireMaker {
                        done = true;
                        return false;
                    }
                } else {
                    let mut q = need.min(node.remaining);
                    if let Some(b) = budget.as_mut() {
                        let afford = *b / u128::from(level.price.max(1));
                        q = q.min(u64::try_from(afford).unwrap_or(u64::MAX));
                        *b -= u128::from(q) * u128::from(level.price);
                        if q < need.min(node.remaining) {
                            need -= q;
                            done = true;
                            return false;
                        }
                    }
                    need -= q;
                    if need == 0 {
                        done = true;
                        return true;
                    }
                }
                cur = node.next;
            }
            true
        };
        for (_, l) in self.side_index(taker.side.opposite()).iter_best_first() {
            if !visit(&self.levels[l as usize]) {
                break;
            }
        }
        need == 0
    }

    fn match_and_rest(
        &mut self,
        taker: &Taker<T>,
        events: &mut Vec<BookEvent<T>>,
        hint: LevelHint,
    ) -> Placed {
        let mut remaining = taker.qty.get();
        let mut filled: u64 = 0;
        let mut filled_tl: u128 = 0;
        let mut expired = None;
        let maker_side = taker.side.opposite();
        while remaining > 0 {
            let level_idx = match maker_side {
                Side::Buy => self.best_bid,
                Side::Sell => self.best_ask,
            };
            if level_idx == NIL {
                break;
            }
            let level = self.levels[level_idx as usize];
            let crosses = match taker.side {
                Side::Buy => level.price <= taker.limit.get(),
                Side::Sell => level.price >= taker.limit.get(),
            };
            if !crosses {
                break;
            }
            let maker_slot = level.head;
            let maker = self.nodes[maker_slot as usize];
            if taker.stp != Stp::None && maker.owner == taker.owner.0 {
                if matches!(taker.stp, Stp::ExpireMaker | Stp::ExpireBoth) {
                    self.unlink(maker_slot);
                    events.push(BookEvent::MakerExpired {
                        id: OrderId(maker.id),
                        owner: UserId(maker.owner),
                        payload: maker.payload,
                        remaining: QtyLots::new(maker.remaining),
                    });
                }
                if matches!(taker.stp, Stp::ExpireTaker | Stp::ExpireBoth) {
                    expired = Some(ExpireReason::SelfTrade);
                    break;
                }
                continue;
            }
            let mut qty = remaining.min(maker.remaining);
            if let Some(budget) = taker.quote_budget {
                let left = budget - filled_tl;
                let afford = left / u128::from(level.price.max(1));
                qty = qty.min(u64::try_from(afford).unwrap_or(u64::MAX));
                if qty == 0 {
                    break;
                }
            }
            remaining -= qty;
            filled += qty;
            filled_tl += u128::from(qty) * u128::from(level.price);
            let maker_remaining = maker.remaining - qty;
            let still_resting = if maker_remaining == 0 {
                self.unlink(maker_slot);
                None
            } else {
                self.nodes[maker_slot as usize].remaining = maker_remaining;
                self.levels[level_idx as usize].total -= qty;
                Some(maker_slot)
            };
            events.push(BookEvent::Fill {
                maker_id: OrderId(maker.id),
                maker_owner: UserId(maker.owner),
                maker_payload: maker.payload,
                maker_slot: still_resting,
                maker_remaining: QtyLots::new(maker_remaining),
                price: PriceTicks::new(level.price),
                qty: QtyLots::new(qty),
            });
        }
        let end = if remaining == 0 {
            TakerEnd::Filled
        } else if let Some(reason) = expired {
            TakerEnd::Expired {
                remaining: QtyLots::new(remaining),
                reason,
            }
        } else if taker.tif == TimeInForce::Gtc && taker.quote_budget.is_none() {
            let slot = self.insert(taker, remaining, hint);
            TakerEnd::Rested {
                slot,
                remaining: QtyLots::new(remaining),
            }
        } else {
            TakerEnd::Expired {
                remaining: QtyLots::new(remaining),
                reason: ExpireReason::NoLiquidity,
            }
        };
        Placed {
            filled: QtyLots::new(filled),
            filled_tl,
            end,
        }
    }

    /// Append a new resting order at the tail of its price level. Room was checked.
    fn insert(&mut self, taker: &Taker<T>, remaining: u64, hint: LevelHint) -> Slot {
        let price = taker.limit.get();
        let level = match hint {
            LevelHint::At(l) => l,
            LevelHint::Absent => self.new_level(taker.side, price),
            LevelHint::Unknown => self.level_for(taker.side, price),
        };
        let node = Node {
            id: taker.id.0,
            owner: taker.owner.0,
            remaining,
            prev: self.levels[level as usize].tail,
            next: NIL,
            level,
            side: taker.side,
            stp: taker.stp,
            post_only: taker.post_only,
            payload: taker.payload,
        };
        let slot = if self.free_node != NIL {
            let slot = self.free_node;
            self.free_node = self.nodes[slot as usize].next;
            self.nodes[slot as usize] = node;
            slot
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        let l = &mut self.levels[level as usize];
        if l.tail == NIL {
            l.head = slot;
        } else {
            let tail = l.tail;
            self.nodes[tail as usize].next = slot;
        }
        let l = &mut self.levels[level as usize];
        l.tail = slot;
        l.total += remaining;
        l.count += 1;
        self.index.insert(taker.id.0, slot);
        self.resting += 1;
        slot
    }

    /// The level at `price` on `side`, created (and the best cache updated) if missing.
    fn level_for(&mut self, side: Side, price: u64) -> u32 {
        if let Some(l) = self.side_index(side).get(price) {
            return l;
        }
        self.new_level(side, price)
    }

    /// Create the level at `price` on `side`, known to be missing.
    fn new_level(&mut self, side: Side, price: u64) -> u32 {
        let level = Level {
            price,
            total: 0,
            count: 0,
            head: NIL,
            tail: NIL,
        };
        let idx = if self.free_level != NIL {
            let idx = self.free_level;
            self.free_level = self.levels[idx as usize].head;
            self.levels[idx as usize] = level;
            idx
        } else {
            self.levels.push(level);
            (self.levels.len() - 1) as u32
        };
        self.side_index_mut(side).insert(price, idx);
        self.level_count += 1;
        match side {
            Side::Buy => {
                if self.best_bid == NIL || self.levels[self.best_bid as usize].price < price {
                    self.best_bid = idx;
                }
            }
            Side::Sell => {
                if self.best_ask == NIL || self.levels[self.best_ask as usize].price > price {
                    self.best_ask = idx;
                }
            }
        }
        idx
    }

    /// Remove a resting order from its level, the index and the slab.
    fn unlink(&mut self, slot: Slot) -> Node<T> {
        let node = self.unlink_keep_index(slot);
        self.index.remove(&node.id);
        node
    }

    /// Remove a resting order from its level and the slab, leaving its id index entry
    /// for the caller to overwrite or remove (saves a hash removal when it re-rests).
    fn unlink_keep_index(&mut self, slot: Slot) -> Node<T> {
        let node = self.nodes[slot as usize];
        debug_assert!(node.level != NIL, "unlink of a free slot");
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        let level_idx = node.level;
        let l = &mut self.levels[level_idx as usize];
        if l.head == slot {
            l.head = node.next;
        }
        if l.tail == slot {
            l.tail = node.prev;
        }
        l.total -= node.remaining;
        l.count -= 1;
        let emptied = l.count == 0;
        let price = l.price;
        if emptied {
            self.remove_level(node.side, price, level_idx);
        }
        let free = &mut self.nodes[slot as usize];
        free.level = NIL;
        free.next = self.free_node;
        self.free_node = slot;
        self.resting -= 1;
        node
    }

    fn remove_level(&mut self, side: Side, price: u64, level_idx: u32) {
        self.side_index_mut(side).remove(price);
        match side {
            Side::Buy => {
                if self.best_bid == level_idx {
                    self.best_bid = self.bids.best_from(price).map_or(NIL, |(_, l)| l);
                }
            }
            Side::Sell => {
                if self.best_ask == level_idx {
                    self.best_ask = self.asks.best_from(price).map_or(NIL, |(_, l)| l);
                }
            }
        }
        self.levels[level_idx as usize].head = self.free_level;
        self.free_level = level_idx;
        self.level_count -= 1;
    }

    /// Move a resting order to a new price and/or quantity. It loses its place in the
    /// queue and is matched again as an incoming GTC order (it may trade). Checked
    /// first: nothing changes when it is refused.
    pub fn replace(
        &mut self,
        id: OrderId,
        price: PriceTicks,
        qty: QtyLots,
        events: &mut Vec<BookEvent<T>>,
    ) -> Result<Placed, BookReject> {
        let slot = self.slot_of(id).ok_or(BookReject::UnknownOrder)?;
        self.replace_at(slot, price, qty, events)
    }

    /// [`Book::replace`] for an order whose slot the caller already found.
    pub fn replace_at(
        &mut self,
        slot: Slot,
        price: PriceTicks,
        qty: QtyLots,
        events: &mut Vec<BookEvent<T>>,
    ) -> Result<Placed, BookReject> {
        let node = match self.nodes.get(slot as usize) {
            Some(n) if n.level != NIL => *n,
            _ => return Err(BookReject::UnknownOrder),
        };
        let id = OrderId(node.id);
        if qty.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        if node.post_only && self.crosses(node.side, price.get()) {
            return Err(BookReject::PostOnlyWouldTake);
        }
        // Room at the new price; the order's own removal frees its current place.
        let own_level = &self.levels[node.level as usize];
        let found = self.side_index(node.side).get(price.get());
        match found {
            Some(l)
                if l != node.level
                    && self.levels[l as usize].count >= self.limits.orders_per_level_max =>
            {
                return Err(BookReject::LevelFull)
            }
            None if self.level_count >= self.limits.levels_max && own_level.count > 1 => {
                return Err(BookReject::TooManyLevels)
            }
            _ => {}
        }
        // Unlinking empties the order's own level when it was alone there.
        let hint = match found {
            Some(l) if l == node.level && own_level.count == 1 => LevelHint::Absent,
            Some(l) => LevelHint::At(l),
            None => LevelHint::Absent,
        };
        let taker = Taker {
            id,
            owner: UserId(node.owner),
            side: node.side,
            limit: price,
            qty,
            quote_budget: None,
            tif: TimeInForce::Gtc,
            post_only: node.post_only,
            stp: node.stp,
            payload: node.payload,
        };
        self.unlink_keep_index(slot);
        let placed = self.match_and_rest(&taker, events, hint);
        if !matches!(placed.end, TakerEnd::Rested { .. }) {
            self.index.remove(&id.0);
        }
        Ok(placed)
    }

    /// Put an order back at the tail of its price level without matching: for
    /// rebuilding a book from a snapshot, in priority order. Refused if it would cross
    /// the book or break a limit.
    pub fn restore(&mut self, order: &Resting<T>) -> Result<Slot, BookReject> {
        if order.remaining.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        if order.price.is_zero() || self.crosses(order.side, order.price.get()) {
            return Err(BookReject::PostOnlyWouldTake);
        }
        let hint = self.check_room(order.id, order.side, order.price.get())?;
        let taker = Taker {
            id: order.id,
            owner: order.owner,
            side: order.side,
            limit: order.price,
            qty: order.remaining,
            quote_budget: None,
            tif: TimeInForce::Gtc,
            post_only: order.post_only,
            stp: order.stp,
            payload: order.payload,
        };
        Ok(self.insert(&taker, order.remaining.get(), hint))
    }

    /// Remove a resting order by id.
    pub fn cancel(&mut self, id: OrderId) -> Result<Resting<T>, BookReject> {
        let slot = self.slot_of(id).ok_or(BookReject::UnknownOrder)?;
        self.cancel_at(slot)
    }

    /// [`Book::cancel`] for an order whose slot the caller already found.
    pub fn cancel_at(&mut self, slot: Slot) -> Result<Resting<T>, BookReject> {
        match self.nodes.get(slot as usize) {
            Some(n) if n.level != NIL => {
                let resting = self.resting_of(n);
                self.unlink(slot);
                Ok(resting)
            }
            _ => Err(BookReject::UnknownOrder),
        }
    }

    /// Lower a resting order's remaining quantity, keeping its place in the queue.
    /// `new_remaining` must be positive and below the current remaining quantity.
    pub fn reduce(&mut self, id: OrderId, new_remaining: QtyLots) -> Result<(), BookReject> {
        let slot = self.slot_of(id).ok_or(BookReject::UnknownOrder)?;
        self.reduce_at(slot, new_remaining)
    }

    /// [`Book::reduce`] for an order whose slot the caller already found.
    pub fn reduce_at(&mut self, slot: Slot, new_remaining: QtyLots) -> Result<(), BookReject> {
        let node = match self.nodes.get_mut(slot as usize) {
            Some(n) if n.level != NIL => n,
            _ => return Err(BookReject::UnknownOrder),
        };
        if new_remaining.is_zero() {
            return Err(BookReject::ZeroQuantity);
        }
        let cut = node
            .remaining
            .checked_sub(new_remaining.get())
            .ok_or(BookReject::ZeroQuantity)?;
        node.remaining = new_remaining.get();
        let level = node.level;
        self.levels[level as usize].total -= cut;
        Ok(())
    }

    /// Check every invariant of the module documentation; returns the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let (Some((bid, _)), Some((ask, _))) = (self.best_bid(), self.best_ask()) {
            if bid >= ask {
                return Err(format!("book crossed: best bid {bid} >= best ask {ask}"));
            }
        }
        let want_bid = self.bids.best().map(|(p, _)| p);
        let want_ask = self.asks.best().map(|(p, _)| p);
        if self.best_bid().map(|b| b.0.get()) != want_bid
            || self.best_ask().map(|a| a.0.get()) != want_ask
        {
            return Err("best level cache disagrees with the price map".into());
        }
        let mut seen = 0u32;
        for (side, index) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            let mut last: Option<u64> = None;
            for (price, l) in index.iter_best_first() {
                let in_order = match side {
                    Side::Buy => last.is_none_or(|p| price < p),
                    Side::Sell => last.is_none_or(|p| price > p),
                };
                if !in_order {
                    return Err(format!("levels out of price order at {price}"));
                }
                last = Some(price);
                let level = &self.levels[l as usize];
                if level.price != price {
                    return Err(format!("level at {price} records price {}", level.price));
                }
                let (mut total, mut count, mut cur, mut prev) = (0u64, 0u32, level.head, NIL);
                while cur != NIL {
                    let node = &self.nodes[cur as usize];
                    if node.level != l || node.side != side || node.prev != prev {
                        return Err(format!("order {} is mislinked at {price}", node.id));
                    }
                    if node.remaining == 0 {
                        return Err(format!("order {} rests with zero quantity", node.id));
                    }
                    if self.index.get(&node.id) != Some(&cur) {
                        return Err(format!("order {} missing from the id index", node.id));
                    }
                    total += node.remaining;
                    count += 1;
                    prev = cur;
                    cur = node.next;
                }
                if level.tail != prev || total != level.total || count != level.count {
                    return Err(format!(
                        "level {price}: totals or tail disagree with orders"
                    ));
                }
                if count == 0 {
                    return Err(format!("empty level {price} kept"));
                }
                seen += count;
            }
        }
        if seen != self.resting || self.index.len() != self.resting as usize {
            return Err("resting count disagrees with levels or index".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
