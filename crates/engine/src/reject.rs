//! Business rejections: a command that breaks a rule changes nothing and returns one of
//! these. They are values, never panics and never integers; the API maps them to
//! Binance's error codes in exactly one place.

/// Why a command was refused. The state is exactly as before the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    UnknownUser,
    UnknownAsset,
    UnknownMarket,
    UnknownOrder,
    UnknownWithdrawal,
    /// Not enough available balance for the hold, withdrawal or debit.
    InsufficientFunds,
    /// A credit would exceed the largest representable amount.
    AmountOverflow,
    ZeroAmount,
    /// Symbol, scale, tick, lot, fee or limit of a new asset or market is invalid.
    InvalidSpec(&'static str),
    AssetExists,
    MarketExists,
    /// The price is zero, above the market's maximum, or (for amends) not allowed.
    InvalidPrice,
    /// The quantity is zero or not allowed.
    InvalidQuantity,
    QuantityBelowMinimum,
    QuantityAboveMaximum,
    NotionalBelowMinimum,
    NotionalAboveMaximum,
    /// Post-only (LIMIT_MAKER) would have traded at once.
    PostOnlyWouldTake,
    /// Post-only needs GTC; budget (quote) orders cannot be FOK.
    InvalidTimeInForce,
    DuplicateClientOrderId,
    DuplicateDeposit,
    DuplicateWithdrawal,
    /// The withdrawal is already settled or cancelled.
    WithdrawalNotPending,
    MarketHalted,
    WithdrawalsHalted,
    /// Halting something already halted, or resuming something running.
    HaltStateUnchanged,
    /// A reason is required and was empty or too long.
    InvalidReason,
    /// A deposit reference or withdrawal id is empty or too long.
    InvalidReference,
    UnknownFeeTier,
    TooManyUsers,
    TooManyAssets,
    TooManyMarkets,
    TooManyOpenOrders,
    BookFull,
    TooManyPriceLevels,
    PriceLevelFull,
    /// A customer name is empty, too long or has characters outside `A–Z a–z 0–9 . _ -`.
    InvalidName,
    NameTaken,
    /// A key id, label or IP range list is malformed.
    InvalidApiKey,
    ApiKeyExists,
    UnknownApiKey,
    ApiKeyRevoked,
    /// A key with the withdraw permission needs an IP allow-list.
    WithdrawNeedsIpAllowList,
    TooManyApiKeys,
    /// A wallet descriptor is empty, too long or not printable ASCII.
    InvalidDescriptor,
    WalletExists,
    /// No deposit wallet is registered for the asset.
    NoDepositWallet,
    DepositAddressAssigned,
    UnknownDeposit,
    /// The deposit was already reversed.
    DepositReversed,
    /// A reconciliation for an older block than the last one.
    StaleReconciliation,
    /// The customer owes the exchange after a reversed deposit.
    WithdrawalsFrozen,
    /// Withdrawal rules are not set for the asset.
    NoWithdrawalPolicy,
    /// A withdrawal policy whose minimum does not exceed its fee, or whose daily limit
    /// is below its minimum.
    InvalidPolicy,
    /// A destination address is empty, too long or not alphanumeric.
    InvalidAddress,
    AddressListed,
    /// The destination is not on the customer's list and the policy allows only listed ones.
    AddressNotAllowed,
    /// Below the policy's minimum, or not more than the fee.
    AmountBelowMinimum,
    DailyLimitExceeded,
    WithdrawalNotInReview,
    /// A batch is empty, too large, mixes assets, names a withdrawal not ready to be
    /// paid, spends a coin another open batch spends, or names the wrong change index;
    /// or a bump does not raise the fee.
    InvalidBatch,
    UnknownBatch,
    BatchNotOpen,
    /// The withdrawal is in a batch: only the chain can settle or cancel it now.
    WithdrawalBatched,
}

impl Reject {
    /// One of every variant (`InvalidSpec` with a placeholder text), for tables and
    /// exhaustive tests.
    pub const ALL: [Reject; 64] = [
        Reject::UnknownUser,
        Reject::UnknownAsset,
        Reject::UnknownMarket,
        Reject::UnknownOrder,
        Reject::UnknownWithdrawal,
        Reject::InsufficientFunds,
        Reject::AmountOverflow,
        Reject::ZeroAmount,
        Reject::InvalidSpec("invalid spec"),
        Reject::AssetExists,
        Reject::MarketExists,
        Reject::InvalidPrice,
        Reject::InvalidQuantity,
        Reject::QuantityBelowMinimum,
        Reject::QuantityAboveMaximum,
        Reject::NotionalBelowMinimum,
        Reject::NotionalAboveMaximum,
        Reject::PostOnlyWouldTake,
        Reject::InvalidTimeInForce,
        Reject::DuplicateClientOrderId,
        Reject::DuplicateDeposit,
        Reject::DuplicateWithdrawal,
        Reject::WithdrawalNotPending,
        Reject::MarketHalted,
        Reject::WithdrawalsHalted,
        Reject::HaltStateUnchanged,
        Reject::InvalidReason,
        Reject::InvalidReference,
        Reject::UnknownFeeTier,
        Reject::TooManyUsers,
        Reject::TooManyAssets,
        Reject::TooManyMarkets,
        Reject::TooManyOpenOrders,
        Reject::BookFull,
        Reject::TooManyPriceLevels,
        Reject::PriceLevelFull,
        Reject::InvalidName,
        Reject::NameTaken,
        Reject::InvalidApiKey,
        Reject::ApiKeyExists,
        Reject::UnknownApiKey,
        Reject::ApiKeyRevoked,
        Reject::WithdrawNeedsIpAllowList,
        Reject::TooManyApiKeys,
        Reject::InvalidDescriptor,
        Reject::WalletExists,
        Reject::NoDepositWallet,
        Reject::DepositAddressAssigned,
        Reject::UnknownDeposit,
        Reject::DepositReversed,
        Reject::StaleReconciliation,
        Reject::WithdrawalsFrozen,
        Reject::NoWithdrawalPolicy,
        Reject::InvalidPolicy,
        Reject::InvalidAddress,
        Reject::AddressListed,
        Reject::AddressNotAllowed,
        Reject::AmountBelowMinimum,
        Reject::DailyLimitExceeded,
        Reject::WithdrawalNotInReview,
        Reject::InvalidBatch,
        Reject::UnknownBatch,
        Reject::BatchNotOpen,
        Reject::WithdrawalBatched,
    ];

    /// Adding a variant breaks this exhaustive match: add it here and to [`Reject::ALL`].
    #[allow(dead_code)]
    fn listed_in_all(self) {
        match self {
            Reject::UnknownUser
            | Reject::UnknownAsset
            | Reject::UnknownMarket
            | Reject::UnknownOrder
            | Reject::UnknownWithdrawal
            | Reject::InsufficientFunds
            | Reject::AmountOverflow
            | Reject::ZeroAmount
            | Reject::InvalidSpec(_)
            | Reject::AssetExists
            | Reject::MarketExists
            | Reject::InvalidPrice
            | Reject::InvalidQuantity
            | Reject::QuantityBelowMinimum
            | Reject::QuantityAboveMaximum
            | Reject::NotionalBelowMinimum
            | Reject::NotionalAboveMaximum
            | Reject::PostOnlyWouldTake
            | Reject::InvalidTimeInForce
            | Reject::DuplicateClientOrderId
            | Reject::DuplicateDeposit
            | Reject::DuplicateWithdrawal
            | Reject::WithdrawalNotPending
            | Reject::MarketHalted
            | Reject::WithdrawalsHalted
            | Reject::HaltStateUnchanged
            | Reject::InvalidReason
            | Reject::InvalidReference
            | Reject::UnknownFeeTier
            | Reject::TooManyUsers
            | Reject::TooManyAssets
            | Reject::TooManyMarkets
            | Reject::TooManyOpenOrders
            | Reject::BookFull
            | Reject::TooManyPriceLevels
            | Reject::PriceLevelFull
            | Reject::InvalidName
            | Reject::NameTaken
            | Reject::InvalidApiKey
            | Reject::ApiKeyExists
            | Reject::UnknownApiKey
            | Reject::ApiKeyRevoked
            | Reject::WithdrawNeedsIpAllowList
            | Reject::TooManyApiKeys
            | Reject::InvalidDescriptor
            | Reject::WalletExists
            | Reject::NoDepositWallet
            | Reject::DepositAddressAssigned
            | Reject::UnknownDeposit
            | Reject::DepositReversed
            | Reject::StaleReconciliation
            | Reject::WithdrawalsFrozen
            | Reject::NoWithdrawalPolicy
            | Reject::InvalidPolicy
            | Reject::InvalidAddress
            | Reject::AddressListed
            | Reject::AddressNotAllowed
            | Reject::AmountBelowMinimum
            | Reject::DailyLimitExceeded
            | Reject::WithdrawalNotInReview
            | Reject::InvalidBatch
            | Reject::UnknownBatch
            | Reject::BatchNotOpen
            | Reject::WithdrawalBatched => {}
        }
    }
}

impl Reject {
    /// A readable sentence, for logs and API error messages.
    pub fn message(self) -> &'static str {
        match self {
            Reject::UnknownUser => "unknown user",
            Reject::UnknownAsset => "unknown asset",
            Reject::UnknownMarket => "unknown market",
            Reject::UnknownOrder => "unknown order",
            Reject::UnknownWithdrawal => "unknown withdrawal",
            Reject::InsufficientFunds => "insufficient balance",
            Reject::AmountOverflow => "amount too large",
            Reject::ZeroAmount => "amount must be positive",
            Reject::InvalidSpec(why) => why,
            Reject::AssetExists => "asset already exists",
            Reject::MarketExists => "market already exists",
            Reject::InvalidPrice => "invalid price",
            Reject::InvalidQuantity => "invalid quantity",
            Reject::QuantityBelowMinimum => "quantity below the market minimum",
            Reject::QuantityAboveMaximum => "quantity above the market maximum",
            Reject::NotionalBelowMinimum => "notional below the market minimum",
            Reject::NotionalAboveMaximum => "notional above the market maximum",
            Reject::PostOnlyWouldTake => "order would immediately match and take",
            Reject::InvalidTimeInForce => "time in force not allowed for this order",
            Reject::DuplicateClientOrderId => "duplicate client order id among open orders",
            Reject::DuplicateDeposit => "deposit reference already credited",
            Reject::DuplicateWithdrawal => "withdrawal id already used",
            Reject::WithdrawalNotPending => "withdrawal is not pending",
            Reject::MarketHalted => "market is halted",
            Reject::WithdrawalsHalted => "withdrawals of this asset are halted",
            Reject::HaltStateUnchanged => "already in that halt state",
            Reject::InvalidReason => "a reason of 1 to 256 bytes is required",
            Reject::InvalidReference => "reference must be 1 to 128 bytes",
            Reject::UnknownFeeTier => "unknown fee tier",
            Reject::TooManyUsers => "user limit reached",
            Reject::TooManyAssets => "asset limit reached",
            Reject::TooManyMarkets => "market limit reached",
            Reject::TooManyOpenOrders => "too many open orders",
            Reject::BookFull => "order book is full",
            Reject::TooManyPriceLevels => "too many price levels in the book",
            Reject::PriceLevelFull => "too many orders at this price",
            Reject::InvalidName => "a name is 1 to 64 of A-Z a-z 0-9 . _ -",
            Reject::NameTaken => "name already taken",
            Reject::InvalidApiKey => "malformed API key id, label or IP allow-list",
            Reject::ApiKeyExists => "API key already exists",
            Reject::UnknownApiKey => "unknown API key",
            Reject::ApiKeyRevoked => "API key already revoked",
            Reject::WithdrawNeedsIpAllowList => "a withdraw key needs an IP allow-list",
            Reject::TooManyApiKeys => "API key limit reached for this customer",
            Reject::InvalidDescriptor => "a wallet descriptor is 1 to 1024 printable ASCII bytes",
            Reject::WalletExists => "wallet already registered",
            Reject::NoDepositWallet => "no deposit wallet for this asset",
            Reject::DepositAddressAssigned => "deposit address already assigned",
            Reject::UnknownDeposit => "unknown deposit",
            Reject::DepositReversed => "deposit already reversed",
            Reject::StaleReconciliation => "reconciliation older than the last one",
            Reject::WithdrawalsFrozen => {
                "withdrawals frozen: a reversed deposit left a balance owed"
            }
            Reject::NoWithdrawalPolicy => "withdrawals of this asset are not configured",
            Reject::InvalidPolicy => {
                "withdrawal policy: the minimum must exceed the fee and the daily limit the minimum"
            }
            Reject::InvalidAddress => "address must be 1 to 100 letters and digits",
            Reject::AddressListed => "address already on the list",
            Reject::AddressNotAllowed => "address is not on the withdrawal allow-list",
            Reject::AmountBelowMinimum => "amount below the withdrawal minimum",
            Reject::DailyLimitExceeded => "daily withdrawal limit exceeded",
            Reject::WithdrawalNotInReview => "withdrawal is not waiting for approval",
            Reject::InvalidBatch => "invalid withdrawal batch",
            Reject::UnknownBatch => "unknown withdrawal batch",
            Reject::BatchNotOpen => "withdrawal batch already finished",
            Reject::WithdrawalBatched => "withdrawal is being paid on chain",
        }
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Reject {}
