//! The exchange's state machine: every customer balance and every order book, changed
//! only by [`Engine::apply`].
//!
//! `apply(&mut engine, &Command, Ctx { seq, timestamp_ms }, &mut events)` is synchronous
//! and pure: no I/O, no clock, no randomness, no floating point, no observable hash-map
//! iteration order. The same commands give the same events and the same
//! [`Engine::state_hash`] on every machine.
//!
//! Rules every command obeys:
//! - A rejected command ([`Reject`]) changes nothing: every check runs before the first
//!   mutation. Tests compare the state hash before and after each rejection.
//! - Money only moves through [`kura_ledger::Ledger::transfer`], so per asset the sum of
//!   all accounts is zero after every command.
//! - Placing an order holds its worst case: for a buy, the notional at its limit price
//!   (rounded up) plus the taker fee on it (rounded up); for a sell, its quantity. Each
//!   fill settles from the hold; after each fill the hold is lowered to what the rest
//!   of the order can still need, and the excess returns to available.
//! - Rounding never favours a customer. Per order the engine accumulates the exact
//!   notional (price × quantity in quote-minor × base-minor units) and the exact fee
//!   numerator; a buyer has paid `ceil(notional / 10^base_scale)` so far, a seller has
//!   received `floor(...)`, fees so far are `ceil(...)`. The differences go to the
//!   rounding account. A seller's fee is capped at its proceeds (dust fills).
//! - Idempotency keys come from outside: a deposit reference is credited once, a
//!   withdrawal id is used once, a client order id is unique among a customer's open
//!   orders in a market.
//!
//! Invariants checked by [`Engine::check_invariants`] (DESIGN.md §5, 1–5): ledger sums to
//! zero per asset; balances non-negative (by type); held = open-order holds + pending
//! withdrawals per customer and asset; no book crossed, price-time order intact.
//!
//! Known limitations: `CancelAll` scans the market's book (O(resting orders)); negative
//! maker fees (rebates) are not supported; a market's base asset has at most 12 decimals.

#![forbid(unsafe_code)]

pub mod codec;
mod command;
pub mod custody;
mod event;
mod funds;
pub mod genesis;
mod hash;
pub mod identity;
mod reject;
pub mod solvency;
mod trading;
pub mod withdraw;

pub use command::{Command, Ctx, FeeTier, MarketSpec, OrderRef, OrderType};
pub use custody::{DepositRecord, Reconciliation, Wallet, WalletRole};
pub use event::{CancelReason, Event, EventKind, ExpireReason};
pub use hash::STATE_ENCODING_VERSION;
pub use identity::{ApiKey, IpRange, KeyPermissions, KeyScheme};
pub use kura_book::{Side, Stp, TimeInForce};
pub use reject::Reject;
pub use solvency::SolvencyRoot;
pub use withdraw::{
    BatchState, BatchVersion, Outpoint, Transfer, WithdrawalBatch, WithdrawalPolicy,
};

use kura_book::Book;
use kura_ledger::Ledger;
use kura_units::{AssetId, ClientOrderId, MarketId, PriceTicks, Scale, UserId};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

/// Every limit of the engine, in one place. Each is enforced with a typed rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub users_max: u32,
    pub assets_max: u16,
    pub markets_max: u32,
    /// Open orders of one customer across all markets.
    pub open_orders_per_user_max: u32,
    pub fee_tiers_max: usize,
    pub reference_len_max: usize,
    pub reason_len_max: usize,
    /// Live (not revoked) API keys of one customer.
    pub api_keys_per_user_max: u32,
    /// Per book: resting orders, price levels, orders at one price.
    pub book: kura_book::Limits,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        users_max: 50_000_000,
        assets_max: 256,
        markets_max: 100_000,
        open_orders_per_user_max: 10_000,
        fee_tiers_max: 16,
        reference_len_max: 128,
        reason_len_max: 256,
        api_keys_per_user_max: 30,
        book: kura_book::Limits::DEFAULT,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Largest base-asset scale a market accepts: keeps `10^scale × 10^6` within `u64`.
pub const MARKET_BASE_SCALE_MAX: u8 = 12;
/// Fee rates are parts per million.
pub const PPM: u128 = 1_000_000;
/// Basis points in one.
pub const BPS: u128 = 10_000;

/// What the engine keeps per resting order, inside the book node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderData {
    /// Amount still held for this order (quote for buys, base for sells).
    pub hold: u64,
    /// Σ price × qty of its fills, in quote-minor × base-minor units (exact).
    pub cum_notional: u128,
    /// Σ notional × fee rate of its fills, in quote-minor × base-minor × ppm units.
    pub cum_fee: u128,
    /// Fee rates fixed when the order was placed.
    pub maker_ppm: u32,
    pub taker_ppm: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Asset {
    pub(crate) symbol: String,
    pub(crate) scale: Scale,
    pub(crate) withdrawals_halted: Option<String>,
    pub(crate) reconciliation: Option<custody::Reconciliation>,
    pub(crate) withdrawal_policy: Option<withdraw::WithdrawalPolicy>,
}

#[derive(Clone, Debug)]
pub(crate) struct Market {
    pub(crate) spec: MarketSpec,
    /// `10^base_scale`: quote minor units = notional numerator / this.
    pub(crate) base_factor: u128,
    pub(crate) book: Book<OrderData>,
    pub(crate) halted: Option<String>,
    pub(crate) last_price: Option<PriceTicks>,
    /// Counts the commands that took effect on this book (place, cancel, amend,
    /// cancel-all): Binance's `lastUpdateId`, one contiguous sequence per market.
    pub(crate) update_id: u64,
    /// (owner, client order id) → order id, for open orders that have one. Lookup only.
    pub(crate) client_ids: FxHashMap<(u32, ClientOrderId), u64>,
    /// The reverse, to drop the entry when the order ends. Lookup only.
    pub(crate) order_client_ids: FxHashMap<u64, ClientOrderId>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) fee_tier: u8,
    pub(crate) open_orders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WithdrawalState {
    /// Off-chain (bank or operator): held until an operator settles or cancels it.
    Pending,
    Settled,
    Cancelled,
    /// Chain: waiting for an operator's approval (above the policy's threshold).
    Review,
    /// Chain: approved, waiting for its release time and the next batch.
    Approved,
    /// Chain: in a batch being paid.
    Batched,
}

impl WithdrawalState {
    /// Whether the amount is still held (the withdrawal has not ended).
    pub fn is_open(self) -> bool {
        !matches!(self, WithdrawalState::Settled | WithdrawalState::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            WithdrawalState::Pending => "pending",
            WithdrawalState::Settled => "settled",
            WithdrawalState::Cancelled => "cancelled",
            WithdrawalState::Review => "review",
            WithdrawalState::Approved => "approved",
            WithdrawalState::Batched => "batched",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub user: UserId,
    pub asset: AssetId,
    /// What the customer's balance gives up (the fee included).
    pub amount: kura_units::Amount,
    pub state: WithdrawalState,
    /// The destination of a chain withdrawal; empty for an off-chain one.
    pub address: String,
    /// The exchange's fee, out of `amount`: the destination receives the rest.
    pub fee: kura_units::Amount,
    pub requested_ms: u64,
    /// Not batched before this time (a new destination's delay).
    pub release_ms: u64,
    pub batch: Option<u64>,
}

/// The whole exchange state. See the module documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    limits: Limits,
    pub(crate) assets: Vec<Asset>,
    pub(crate) markets: Vec<Market>,
    /// Market symbol → id. Derived from `markets` (not encoded), for O(log n) lookups.
    pub(crate) market_ids: BTreeMap<String, MarketId>,
    pub(crate) ledger: Ledger,
    pub(crate) users: Vec<User>,
    /// Every deposit ever credited, by reference.
    pub(crate) deposits: BTreeMap<String, custody::DepositRecord>,
    /// (user, asset) → what the customer owes after a reversed deposit (never zero).
    pub(crate) deficits: BTreeMap<(u32, u16), kura_units::Amount>,
    /// The wallet registry, append-only; the index is the wallet id.
    pub(crate) wallets: Vec<custody::Wallet>,
    /// (user, asset) → (wallet, derivation index) of the customer's deposit address.
    pub(crate) deposit_addresses: BTreeMap<(u32, u16), (u32, u32)>,
    /// Every withdrawal ever requested, by id.
    pub(crate) withdrawals: BTreeMap<String, Withdrawal>,
    /// (user, asset, requested_ms, id) of every chain withdrawal. Derived (not encoded).
    pub(crate) withdrawals_by_user: std::collections::BTreeSet<(u32, u16, u64, String)>,
    /// (user, asset, address) → time from which the address may be paid.
    pub(crate) withdrawal_addresses: BTreeMap<(u32, u16, String), u64>,
    /// Every withdrawal batch ever built; the index is its id.
    pub(crate) withdrawal_batches: Vec<withdraw::WithdrawalBatch>,
    /// Coins spent by open batches → batch. Derived (not encoded).
    pub(crate) locked_inputs: BTreeMap<withdraw::Outpoint, u64>,
    /// Ids of approved chain withdrawals not yet in a batch. Derived (not encoded).
    pub(crate) approved_withdrawals: std::collections::BTreeSet<String>,
    /// Ids of open batches. Derived (not encoded).
    pub(crate) open_batches: std::collections::BTreeSet<u64>,
    pub(crate) next_order_id: u64,
    pub(crate) next_trade_id: u64,
    /// Customer name → id, and back.
    pub(crate) users_by_name: BTreeMap<String, UserId>,
    pub(crate) user_names: BTreeMap<u32, String>,
    /// Every API key ever created, by key id.
    pub(crate) api_keys: BTreeMap<String, identity::ApiKey>,
    pub(crate) next_key_number: u64,
    // Scratch buffers, not state: reused so that a command allocates nothing.
    pub(crate) book_events: Vec<kura_book::BookEvent<OrderData>>,
    pub(crate) touched: Vec<(UserId, AssetId)>,
}

/// The result of one command: its events, or why it was refused.
pub type Outcome = Result<Vec<Event>, Reject>;

impl Engine {
    pub fn new(limits: Limits) -> Engine {
        Engine {
            limits,
            assets: Vec::new(),
            markets: Vec::new(),
            market_ids: BTreeMap::new(),
            ledger: Ledger::new(),
            users: Vec::new(),
            deposits: BTreeMap::new(),
            deficits: BTreeMap::new(),
            wallets: Vec::new(),
            deposit_addresses: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
            withdrawals_by_user: std::collections::BTreeSet::new(),
            withdrawal_addresses: BTreeMap::new(),
            withdrawal_batches: Vec::new(),
            locked_inputs: BTreeMap::new(),
            approved_withdrawals: std::collections::BTreeSet::new(),
            open_batches: std::collections::BTreeSet::new(),
            next_order_id: 1,
            next_trade_id: 1,
            users_by_name: BTreeMap::new(),
            user_names: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            next_key_number: 1,
            book_events: Vec::new(),
            touched: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Apply one command. On success its events are appended to `out`; on rejection
    /// nothing changed and `out` is as it was.
    pub fn apply(&mut self, cmd: &Command, ctx: Ctx, out: &mut Vec<Event>) -> Result<(), Reject> {
        let start = out.len();
        self.touched.clear();
        let result = self.dispatch(cmd, ctx, out);
        match result {
            Ok(()) => {
                if let Some(market) = cmd.book_market() {
                    if let Some(m) = self.markets.get_mut(market.0 as usize) {
                        m.update_id += 1;
                    }
                }
                self.emit_balances(ctx, out);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// [`Engine::apply`] with a fresh event list.
    pub fn apply_owned(&mut self, cmd: &Command, ctx: Ctx) -> Outcome {
        let mut out = Vec::new();
        self.apply(cmd, ctx, &mut out).map(|()| out)
    }

    fn dispatch(&mut self, cmd: &Command, ctx: Ctx, out: &mut Vec<Event>) -> Result<(), Reject> {
        match cmd {
            Command::PlaceOrder {
                user,
                market,
                side,
                order,
                client_id,
                stp,
            } => self.place_order(ctx, out, *user, *market, *side, order, *client_id, *stp),
            Command::CancelOrder {
                user,
                market,
                order,
            } => self.cancel_order(ctx, out, *user, *market, *order),
            Command::AmendOrder {
                user,
                market,
                order,
                price,
                remaining,
            } => self.amend_order(ctx, out, *user, *market, *order, *price, *remaining),
            Command::CancelAll { user, market } => self.cancel_all(ctx, out, *user, *market),
            Command::AddAsset { symbol, scale } => self.add_asset(ctx, out, symbol, *scale),
            Command::AddMarket { spec } => self.add_market(ctx, out, spec),
            Command::CreateUser => self.create_user(ctx, out),
            Command::RegisterUser { name } => self.register_user(ctx, out, name),
            Command::CreateApiKey {
                user,
                key,
                scheme,
                permissions,
                ip_allow,
                label,
            } => self.create_api_key(ctx, out, *user, key, *scheme, *permissions, ip_allow, label),
            Command::RevokeApiKey { key } => self.revoke_api_key(ctx, out, key),
            Command::SetFeeTier { user, tier } => self.set_fee_tier(ctx, out, *user, *tier),
            Command::Deposit {
                user,
                asset,
                amount,
                reference,
            } => self.deposit(ctx, out, *user, *asset, *amount, reference),
            Command::RequestWithdrawal {
                user,
                asset,
                amount,
                id,
            } => self.request_withdrawal(ctx, out, *user, *asset, *amount, id),
            Command::SettleWithdrawal { id } => self.finish_withdrawal(ctx, out, id, true),
            Command::CancelWithdrawal { id } => self.finish_withdrawal(ctx, out, id, false),
            Command::RejectWithdrawal { id } => {
                match self.withdrawals.get(id.as_str()).map(|w| w.state) {
                    Some(WithdrawalState::Review) => self.finish_withdrawal(ctx, out, id, false),
                    Some(_) => Err(Reject::WithdrawalNotInReview),
                    None => Err(Reject::UnknownWithdrawal),
                }
            }
            Command::Adjust {
                user,
                asset,
                delta,
                reason,
            } => self.adjust(ctx, out, *user, *asset, *delta, reason),
            Command::HaltMarket { market, reason } => {
                self.set_market_halt(ctx, out, *market, Some(reason))
            }
            Command::ResumeMarket { market } => self.set_market_halt(ctx, out, *market, None),
            Command::HaltWithdrawals { asset, reason } => {
                self.set_withdrawal_halt(ctx, out, *asset, Some(reason))
            }
            Command::ResumeWithdrawals { asset } => {
                self.set_withdrawal_halt(ctx, out, *asset, None)
            }
            Command::RegisterWallet {
                asset,
                role,
                descriptor,
            } => self.register_wallet(ctx, out, *asset, *role, descriptor),
            Command::AssignDepositAddress { user, asset } => {
                self.assign_deposit_address(ctx, out, *user, *asset)
            }
            Command::ReverseDeposit { reference, reason } => {
                self.reverse_deposit(ctx, out, reference, reason)
            }
            Command::Reconcile {
                asset,
                height,
                block_hash,
                holdings,
            } => self.reconcile(ctx, out, *asset, *height, *block_hash, *holdings),
            Command::SetWithdrawalPolicy { asset, policy } => {
                self.set_withdrawal_policy(ctx, out, *asset, *policy)
            }
            Command::AddWithdrawalAddress {
                user,
                asset,
                address,
            } => self.add_withdrawal_address(ctx, out, *user, *asset, address),
            Command::RequestChainWithdrawal {
                user,
                asset,
                amount,
                id,
                address,
            } => self.request_chain_withdrawal(ctx, out, *user, *asset, *amount, id, address),
            Command::ApproveWithdrawal { id } => self.approve_withdrawal(ctx, out, id),
            Command::BuildWithdrawalBatch {
                asset,
                withdrawals,
                inputs,
                change,
                network_fee,
                txid,
            } => self.build_withdrawal_batch(
                ctx,
                out,
                *asset,
                withdrawals,
                inputs,
                *change,
                *network_fee,
                *txid,
            ),
            Command::BumpWithdrawalBatch {
                batch,
                txid,
                network_fee,
            } => self.bump_withdrawal_batch(ctx, out, *batch, *txid, *network_fee),
            Command::AbandonTransfer { batch } => self.abandon_transfer(ctx, out, *batch),
            Command::FinishWithdrawalBatch {
                batch,
                txid,
                height,
                network_fee,
                paid,
            } => {
                self.finish_withdrawal_batch(ctx, out, *batch, *txid, *height, *network_fee, *paid)
            }
            Command::BuildTransfer {
                asset,
                inputs,
                to,
                amount,
                change,
                network_fee,
                txid,
            } => self.build_transfer(
                ctx,
                out,
                *asset,
                inputs,
                *to,
                *amount,
                *change,
                *network_fee,
                *txid,
            ),
            Command::RecordSolvency { epoch, roots } => {
                self.record_solvency(ctx, out, *epoch, roots)
            }
        }
    }

    /// One `BalanceChanged` per customer account the command touched, after the fact.
    fn emit_balances(&mut self, ctx: Ctx, out: &mut Vec<Event>) {
        for &(user, asset) in &self.touched {
            if let Ok(b) = self.ledger.balance(user, asset) {
                out.push(Event {
                    seq: ctx.seq,
                    kind: EventKind::BalanceChanged {
                        user,
                        asset,
                        available: b.available,
                        held: b.held,
                    },
                });
            }
        }
    }

    #[inline]
    pub(crate) fn touch(&mut self, user: UserId, asset: AssetId) {
        if !self.touched.contains(&(user, asset)) {
            self.touched.push((user, asset));
        }
    }

    // ---- read access -------------------------------------------------------------

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn asset_count(&self) -> usize {
        self.assets.len()
    }

    pub fn market_count(&self) -> usize {
        self.markets.len()
    }

    pub fn asset_symbol(&self, asset: AssetId) -> Option<&str> {
        self.assets
            .get(usize::from(asset.0))
            .map(|a| a.symbol.as_str())
    }

    pub fn asset_scale(&self, asset: AssetId) -> Option<Scale> {
        self.assets.get(usize::from(asset.0)).map(|a| a.scale)
    }

    pub fn asset_by_symbol(&self, symbol: &str) -> Option<AssetId> {
        self.assets
            .iter()
            .position(|a| a.symbol == symbol)
            .map(|i| AssetId(i as u16))
    }

    pub fn withdrawals_halted(&self, asset: AssetId) -> Option<&str> {
        self.assets
            .get(usize::from(asset.0))
            .and_then(|a| a.withdrawals_halted.as_deref())
    }

    pub fn market_spec(&self, market: MarketId) -> Option<&MarketSpec> {
        self.markets.get(market.0 as usize).map(|m| &m.spec)
    }

    pub fn market_by_symbol(&self, symbol: &str) -> Option<MarketId> {
        self.market_ids.get(symbol).copied()
    }

    pub fn market_halted(&self, market: MarketId) -> Option<&str> {
        self.markets
            .get(market.0 as usize)
            .and_then(|m| m.halted.as_deref())
    }

    pub fn book(&self, market: MarketId) -> Option<&Book<OrderData>> {
        self.markets.get(market.0 as usize).map(|m| &m.book)
    }

    pub fn last_price(&self, market: MarketId) -> Option<PriceTicks> {
        self.markets
            .get(market.0 as usize)
            .and_then(|m| m.last_price)
    }

    /// Binance's `lastUpdateId` of the market's book: how many commands took effect on
    /// it. Contiguous: each such command adds exactly one.
    pub fn market_update_id(&self, market: MarketId) -> Option<u64> {
        self.markets.get(market.0 as usize).map(|m| m.update_id)
    }

    pub fn open_orders(&self, user: UserId) -> Option<u32> {
        self.users.get(user.0 as usize).map(|u| u.open_orders)
    }

    pub fn withdrawal(&self, id: &str) -> Option<&Withdrawal> {
        self.withdrawals.get(id)
    }

    /// Whether `reference` is credited now (known and not reversed).
    pub fn deposit_seen(&self, reference: &str) -> bool {
        self.deposits.get(reference).is_some_and(|d| !d.reversed)
    }

    // ---- lookups shared by the command modules -----------------------------------

    pub(crate) fn check_user(&self, user: UserId) -> Result<(), Reject> {
        if (user.0 as usize) < self.users.len() {
            Ok(())
        } else {
            Err(Reject::UnknownUser)
        }
    }

    pub(crate) fn check_asset(&self, asset: AssetId) -> Result<(), Reject> {
        if usize::from(asset.0) < self.assets.len() {
            Ok(())
        } else {
            Err(Reject::UnknownAsset)
        }
    }

    pub(crate) fn check_reason(&self, reason: &str) -> Result<(), Reject> {
        if reason.trim().is_empty() || reason.len() > self.limits.reason_len_max {
            Err(Reject::InvalidReason)
        } else {
            Ok(())
        }
    }

    pub(crate) fn check_reference(&self, reference: &str) -> Result<(), Reject> {
        if reference.is_empty() || reference.len() > self.limits.reference_len_max {
            Err(Reject::InvalidReference)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
