//! Events: what a command did. Every event carries the sequence number of its command,
//! so a consumer can tell exactly which journal record produced it.

use kura_book::{Side, TimeInForce};
use kura_units::{
    Amount, AmountDelta, AssetId, ClientOrderId, MarketId, OrderId, PriceTicks, QtyLots, TradeId,
    UserId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
}

/// Why an order left the book without filling completely, on its owner's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The owner cancelled it.
    ByUser,
    /// The owner cancelled every order in the market.
    CancelAll,
    /// A new order of the same owner expired it (self-trade prevention, expire maker).
    SelfTradePrevention,
}

/// Why an order ended with quantity left, without ever resting (or on amend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpireReason {
    /// IOC or market order: no more liquidity within its limit, collar or budget.
    NoLiquidity,
    /// Fill-or-kill that could not fill completely.
    FokUnfillable,
    /// Self-trade prevention expired the incoming order.
    SelfTradePrevention,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    AssetAdded {
        asset: AssetId,
        symbol: String,
    },
    MarketAdded {
        market: MarketId,
        symbol: String,
    },
    UserCreated {
        user: UserId,
    },
    UserNamed {
        user: UserId,
        name: String,
    },
    ApiKeyCreated {
        user: UserId,
        number: u64,
        key: String,
    },
    ApiKeyRevoked {
        user: UserId,
        number: u64,
        key: String,
    },
    FeeTierSet {
        user: UserId,
        tier: u8,
    },
    Deposited {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        reference: String,
    },
    WithdrawalRequested {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: String,
    },
    WithdrawalSettled {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: String,
    },
    WithdrawalCancelled {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: String,
    },
    Adjusted {
        user: UserId,
        asset: AssetId,
        delta: AmountDelta,
        reason: String,
    },
    /// A customer balance after the command (one per touched account, at the end).
    BalanceChanged {
        user: UserId,
        asset: AssetId,
        available: Amount,
        held: Amount,
    },
    OrderAccepted {
        market: MarketId,
        order: OrderId,
        user: UserId,
        side: Side,
        /// Limit price, or for a market order the collar bound it may trade up to.
        price: PriceTicks,
        /// Most base quantity it may trade (for a market order by quote: the budget's
        /// worth at the collar bound).
        qty: QtyLots,
        /// For a market order by quote amount, the budget in quote minor units.
        quote_budget: Option<Amount>,
        tif: TimeInForce,
        post_only: bool,
        is_market: bool,
        client_id: Option<ClientOrderId>,
        /// Amount held for it (quote for buys, base for sells).
        hold: Amount,
    },
    Trade {
        market: MarketId,
        trade: TradeId,
        price: PriceTicks,
        qty: QtyLots,
        /// Exact notional rounded down, in quote minor units.
        quote_qty: Amount,
        maker_order: OrderId,
        taker_order: OrderId,
        maker_user: UserId,
        taker_user: UserId,
        taker_side: Side,
        /// Fees charged for this fill, in the quote asset.
        maker_fee: Amount,
        taker_fee: Amount,
    },
    /// The order rests on the book with this quantity left.
    OrderRested {
        market: MarketId,
        order: OrderId,
        user: UserId,
        remaining: QtyLots,
    },
    OrderFilled {
        market: MarketId,
        order: OrderId,
        user: UserId,
    },
    OrderCancelled {
        market: MarketId,
        order: OrderId,
        user: UserId,
        remaining: QtyLots,
        reason: CancelReason,
    },
    OrderExpired {
        market: MarketId,
        order: OrderId,
        user: UserId,
        remaining: QtyLots,
        reason: ExpireReason,
    },
    OrderAmended {
        market: MarketId,
        order: OrderId,
        user: UserId,
        price: PriceTicks,
        remaining: QtyLots,
        kept_priority: bool,
    },
    MarketHalted {
        market: MarketId,
        reason: String,
    },
    MarketResumed {
        market: MarketId,
    },
    WithdrawalsHalted {
        asset: AssetId,
        reason: String,
    },
    WithdrawalsResumed {
        asset: AssetId,
    },
    WalletRegistered {
        wallet: u32,
        asset: AssetId,
        role: crate::WalletRole,
        descriptor: String,
    },
    DepositAddressAssigned {
        user: UserId,
        asset: AssetId,
        wallet: u32,
        index: u32,
    },
    /// A credited deposit was taken back; `deficit` of it could not be (already spent).
    DepositReversed {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        deficit: Amount,
        reference: String,
        reason: String,
    },
    /// A credit paid down a deficit left by a reversed deposit.
    DeficitRepaid {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        remaining: Amount,
    },
    Reconciled {
        asset: AssetId,
        height: u32,
        block_hash: [u8; 32],
        holdings: Amount,
        liabilities: u128,
    },
    WithdrawalPolicySet {
        asset: AssetId,
        policy: crate::WithdrawalPolicy,
    },
    WithdrawalAddressAdded {
        user: UserId,
        asset: AssetId,
        address: String,
        usable_from_ms: u64,
    },
    /// The chain details of a withdrawal just requested (follows `WithdrawalRequested`).
    WithdrawalRouted {
        id: String,
        address: String,
        fee: Amount,
        release_ms: u64,
        /// Held for an operator's approval.
        review: bool,
    },
    WithdrawalApproved {
        id: String,
    },
    WithdrawalBatchBuilt {
        batch: u64,
        asset: AssetId,
        withdrawals: Vec<String>,
        inputs: Vec<crate::Outpoint>,
        change: Option<(u32, u32)>,
        txid: [u8; 32],
        network_fee: Amount,
    },
    /// A transfer between our own wallets, tracked as batch `batch` (no withdrawals).
    TransferBuilt {
        batch: u64,
        asset: AssetId,
        inputs: Vec<crate::Outpoint>,
        to: (u32, u32),
        amount: Amount,
        change: Option<(u32, u32)>,
        txid: [u8; 32],
        network_fee: Amount,
    },
    WithdrawalBatchBumped {
        batch: u64,
        txid: [u8; 32],
        network_fee: Amount,
    },
    /// An operator abandoned transfer `batch` before it reached the network.
    TransferAbandoned {
        batch: u64,
    },
    /// Follows the `WithdrawalSettled` (paid) or `WithdrawalCancelled` of each member.
    WithdrawalBatchFinished {
        batch: u64,
        txid: [u8; 32],
        height: u32,
        network_fee: Amount,
        paid: bool,
    },
    /// A solvency epoch's roots were logged (the command's fields, unchanged).
    SolvencyRecorded {
        epoch: u64,
        roots: Vec<crate::SolvencyRoot>,
    },
}
