//! Commands: every way the exchange's state can change. Each is journaled before it is
//! applied, so each must carry every input it needs (no clock, no randomness inside).

use kura_book::{Side, Stp};
use kura_units::{
    Amount, AmountDelta, AssetId, ClientOrderId, MarketId, OrderId, PriceTicks, QtyLots, Scale,
    UserId,
};

/// The context the sequencer gives each command: its journal sequence number and the
/// time it was sequenced. The engine never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    pub seq: u64,
    pub timestamp_ms: u64,
}

/// Maker and taker fee rates of one fee tier, in parts per million of the notional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeTier {
    pub maker_ppm: u32,
    pub taker_ppm: u32,
}

/// Everything that defines a market. Validated by `AddMarket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketSpec {
    /// Binance-style symbol, e.g. "BTCJPY": 2–20 characters of A–Z and 0–9.
    pub symbol: String,
    pub base: AssetId,
    pub quote: AssetId,
    /// Price step, in quote minor units per one whole unit of the base asset.
    pub tick: Amount,
    /// Quantity step, in base minor units.
    pub lot: Amount,
    pub min_qty: QtyLots,
    pub max_qty: QtyLots,
    /// Smallest and largest notional (price × quantity) of an order, in quote minor units.
    pub min_notional: Amount,
    pub max_notional: Amount,
    /// Highest price accepted, in ticks (bounds every product below 2^128).
    pub max_price: PriceTicks,
    /// Fee tiers; a customer's tier indexes this list (tier 0 is the default).
    pub fees: Vec<FeeTier>,
    /// A market order trades at most this many basis points away from the best price
    /// on the other side when it arrives.
    pub collar_bps: u32,
    /// The self-trade prevention mode used when an order names none.
    pub default_stp: Stp,
}

/// How an order trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderType {
    /// A limit order. `post_only` is Binance's LIMIT_MAKER (GTC only).
    Limit {
        price: PriceTicks,
        qty: QtyLots,
        tif: kura_book::TimeInForce,
        post_only: bool,
    },
    /// A market order for a quantity of the base asset.
    MarketBase { qty: QtyLots },
    /// A market order for an amount of the quote asset (Binance's `quoteOrderQty`):
    /// a buy spends at most `quote` (fees on top), a sell sells until it receives it.
    MarketQuote { quote: Amount },
}

/// Which order a cancel or amend is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add an asset with its number of decimal places. Symbol: 2–12 of A–Z, 0–9.
    AddAsset {
        symbol: String,
        scale: Scale,
    },
    AddMarket {
        spec: MarketSpec,
    },
    /// Create a customer; the engine assigns the next id.
    CreateUser,
    /// Create a customer with a unique name (see [`crate::identity`]).
    RegisterUser {
        name: String,
    },
    /// Register an API key for `user`. `key` is the public key id; no secret is here.
    CreateApiKey {
        user: UserId,
        key: String,
        scheme: crate::KeyScheme,
        permissions: crate::KeyPermissions,
        ip_allow: Vec<crate::IpRange>,
        label: String,
    },
    /// Revoke an API key for good.
    RevokeApiKey {
        key: String,
    },
    SetFeeTier {
        user: UserId,
        tier: u8,
    },
    /// Credit a deposit, exactly once per external `reference` (`txid:vout`, bank ref).
    Deposit {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        reference: String,
    },
    /// Hold `amount` for a withdrawal identified by `id` (idempotency key from outside).
    RequestWithdrawal {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: String,
    },
    /// The withdrawal was paid on chain or by bank: the held amount leaves the books.
    SettleWithdrawal {
        id: String,
    },
    /// The withdrawal will not be paid: the held amount returns to available.
    CancelWithdrawal {
        id: String,
    },
    /// An operator rejects a withdrawal held for review: like `CancelWithdrawal`, but
    /// only while it is still in review (an approval that got in first wins, so two
    /// operators acting at once cannot cancel an approved withdrawal by accident).
    RejectWithdrawal {
        id: String,
    },
    /// An operator abandons a refill from cold storage that never reached the network
    /// (its offline ceremony did not take place): the batch is closed and its coins
    /// unlocked. Should its transaction confirm after all, the spend is
    /// one no open batch explains, and withdrawals halt.
    AbandonTransfer {
        batch: u64,
    },
    /// An operator's correction, with a mandatory reason.
    Adjust {
        user: UserId,
        asset: AssetId,
        delta: AmountDelta,
        reason: String,
    },
    PlaceOrder {
        user: UserId,
        market: MarketId,
        side: Side,
        order: OrderType,
        client_id: Option<ClientOrderId>,
        stp: Option<Stp>,
    },
    CancelOrder {
        user: UserId,
        market: MarketId,
        order: OrderRef,
    },
    /// Cancel every open order of `user` in `market`.
    CancelAll {
        user: UserId,
        market: MarketId,
    },
    /// Change a resting order. A lower remaining quantity at the same price keeps its
    /// place in the queue; a new price or a larger quantity loses it (and may trade).
    AmendOrder {
        user: UserId,
        market: MarketId,
        order: OrderRef,
        price: Option<PriceTicks>,
        remaining: Option<QtyLots>,
    },
    HaltMarket {
        market: MarketId,
        reason: String,
    },
    ResumeMarket {
        market: MarketId,
    },
    HaltWithdrawals {
        asset: AssetId,
        reason: String,
    },
    ResumeWithdrawals {
        asset: AssetId,
    },
    /// Add a wallet (an output descriptor) to the registry, for good.
    RegisterWallet {
        asset: AssetId,
        role: crate::WalletRole,
        descriptor: String,
    },
    /// Give the customer the next address of the newest deposit wallet of `asset`.
    AssignDepositAddress {
        user: UserId,
        asset: AssetId,
    },
    /// A chain reorganisation removed a credited deposit: take it back.
    ReverseDeposit {
        reference: String,
        reason: String,
    },
    /// The chain holds `holdings` of `asset` in our wallets at block `height`.
    Reconcile {
        asset: AssetId,
        height: u32,
        block_hash: [u8; 32],
        holdings: Amount,
    },
    /// Set the withdrawal rules of `asset` (required before chain withdrawals).
    SetWithdrawalPolicy {
        asset: AssetId,
        policy: crate::WithdrawalPolicy,
    },
    /// Put a destination on a customer's list (payable after the policy's delay).
    AddWithdrawalAddress {
        user: UserId,
        asset: AssetId,
        address: String,
    },
    /// A customer's withdrawal to a chain address: `amount` (fee included) is held
    /// under the idempotency key `id`.
    RequestChainWithdrawal {
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: String,
        address: String,
    },
    /// An operator approves a withdrawal held for review.
    ApproveWithdrawal {
        id: String,
    },
    /// Withdrawals to pay with one transaction spending `inputs`, recorded before it
    /// is signed or broadcast.
    BuildWithdrawalBatch {
        asset: AssetId,
        withdrawals: Vec<String>,
        inputs: Vec<crate::Outpoint>,
        /// The change output's (wallet, index): the wallet's next index.
        change: Option<(u32, u32)>,
        network_fee: Amount,
        txid: [u8; 32],
    },
    /// A fee bump of an open batch: same inputs, same payments, a higher fee.
    BumpWithdrawalBatch {
        batch: u64,
        txid: [u8; 32],
        network_fee: Amount,
    },
    /// A transaction spending the batch's inputs confirmed: it paid every withdrawal
    /// (`paid`), or it returned the coins to our wallets (a cancel).
    FinishWithdrawalBatch {
        batch: u64,
        txid: [u8; 32],
        height: u32,
        network_fee: Amount,
        paid: bool,
    },
    /// Move coins between our own wallets (a sweep from the hot wallet to cold storage,
    /// or a refill of the hot wallet from it): one transaction spending `inputs` and
    /// paying `amount` to `to` = (wallet, index), the wallet's next index. Recorded
    /// before it is signed, and tracked as a batch without withdrawals: it locks its
    /// coins and is finished by `FinishWithdrawalBatch` when a spend of them confirms.
    BuildTransfer {
        asset: AssetId,
        inputs: Vec<crate::Outpoint>,
        to: (u32, u32),
        amount: Amount,
        /// The change output's (wallet, index): the wallet's next index; another
        /// wallet than `to`'s.
        change: Option<(u32, u32)>,
        network_fee: Amount,
        txid: [u8; 32],
    },
    /// The roots of solvency epoch `epoch`, one per asset, logged before any customer
    /// is handed a proof against them (see [`crate::solvency`]).
    RecordSolvency {
        epoch: u64,
        roots: Vec<crate::SolvencyRoot>,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AddAsset { .. } => "add_asset",
            Command::AddMarket { .. } => "add_market",
            Command::CreateUser => "create_user",
            Command::RegisterUser { .. } => "register_user",
            Command::CreateApiKey { .. } => "create_api_key",
            Command::RevokeApiKey { .. } => "revoke_api_key",
            Command::SetFeeTier { .. } => "set_fee_tier",
            Command::Deposit { .. } => "deposit",
            Command::RequestWithdrawal { .. } => "request_withdrawal",
            Command::SettleWithdrawal { .. } => "settle_withdrawal",
            Command::CancelWithdrawal { .. } => "cancel_withdrawal",
            Command::RejectWithdrawal { .. } => "reject_withdrawal",
            Command::AbandonTransfer { .. } => "abandon_transfer",
            Command::Adjust { .. } => "adjust",
            Command::RegisterWallet { .. } => "register_wallet",
            Command::AssignDepositAddress { .. } => "assign_deposit_address",
            Command::ReverseDeposit { .. } => "reverse_deposit",
            Command::Reconcile { .. } => "reconcile",
            Command::PlaceOrder { .. } => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::CancelAll { .. } => "cancel_all",
            Command::AmendOrder { .. } => "amend_order",
            Command::HaltMarket { .. } => "halt_market",
            Command::ResumeMarket { .. } => "resume_market",
            Command::HaltWithdrawals { .. } => "halt_withdrawals",
            Command::ResumeWithdrawals { .. } => "resume_withdrawals",
            Command::SetWithdrawalPolicy { .. } => "set_withdrawal_policy",
            Command::AddWithdrawalAddress { .. } => "add_withdrawal_address",
            Command::RequestChainWithdrawal { .. } => "request_chain_withdrawal",
            Command::ApproveWithdrawal { .. } => "approve_withdrawal",
            Command::BuildWithdrawalBatch { .. } => "build_withdrawal_batch",
            Command::BumpWithdrawalBatch { .. } => "bump_withdrawal_batch",
            Command::FinishWithdrawalBatch { .. } => "finish_withdrawal_batch",
            Command::BuildTransfer { .. } => "build_transfer",
            Command::RecordSolvency { .. } => "record_solvency",
        }
    }
}

impl Command {
    /// The market whose book this command acts on, if it is a trading command.
    pub fn book_market(&self) -> Option<MarketId> {
        match self {
            Command::PlaceOrder { market, .. }
            | Command::CancelOrder { market, .. }
            | Command::CancelAll { market, .. }
            | Command::AmendOrder { market, .. } => Some(*market),
            _ => None,
        }
    }
}
