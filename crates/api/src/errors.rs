//! Every failure the API can answer with, mapped to an HTTP status and Binance's
//! `{"code": -NNNN, "msg": "…"}` in exactly one function, [`api_error`].
//!
//! The codes and texts are Binance's (spot `errors.md`), because CCXT matches the
//! message text before the code: "Account has insufficient balance for requested
//! action." is what makes `InsufficientFunds`, "Unknown order sent." / "Order does not
//! exist." make `OrderNotFound`, a body containing `LOT_SIZE` or `PRICE_FILTER` makes
//! `InvalidOrder`.
//!
//! Status codes: 400 for request, filter and business errors; 401 for API-key errors
//! (-2014, -2015); 429 for rate limits; 418 for an address banned for ignoring them
//! (see [`crate::limits`]); 500 for internal errors.
//!
//! An engine [`Reject`] depends on what was being done: an unknown order is -2011
//! "Unknown order sent." when cancelling and -2013 "Order does not exist." when
//! querying. [`Op`] carries that.

use crate::auth::AuthError;
use kura_engine::Reject;
use kura_units::DecimalError;
use std::borrow::Cow;

/// What the request was doing when the engine refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /api/v3/order` (and `order/test`).
    NewOrder,
    /// `DELETE /api/v3/order`, `DELETE /api/v3/openOrders`.
    CancelOrder,
    /// `GET /api/v3/order` and other reads.
    Query,
    /// Wallet calls: withdraw, deposit history.
    Wallet,
    /// Operator calls (assets, markets, halts, fee tiers); not part of Binance's API.
    Admin,
}

/// A request or parameter problem found before the engine sees the command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("request too large")]
    TooLarge,
    #[error("too many parameters")]
    TooMany,
    #[error("duplicate parameter")]
    Duplicate,
    /// A malformed name, a broken escape, or a value outside `pattern`.
    #[error("illegal characters in {name:?}")]
    IllegalChars {
        name: Option<String>,
        pattern: Option<&'static str>,
    },
    #[error("mandatory parameter {name} missing")]
    Missing { name: String },
    #[error("parameter {name}: {error}")]
    BadDecimal { name: String, error: DecimalError },
    #[error("parameter {name} overflowed")]
    Overflow { name: String },
    /// A well-formed symbol that names no market.
    #[error("unknown symbol")]
    UnknownSymbol,
    #[error("invalid side")]
    InvalidSide,
    #[error("invalid order type")]
    InvalidOrderType,
    /// A Binance order type kura does not offer; the text is Binance's.
    #[error("{0}")]
    UnsupportedOrderType(&'static str),
    #[error("invalid time in force")]
    InvalidTimeInForce,
    /// A parameter whose value is not one kura accepts.
    #[error("invalid value for {name}")]
    InvalidValue { name: String },
    /// An unknown parameter was sent to an endpoint that checks for them.
    #[error("unknown parameter")]
    Unknown,
    /// A parameter this request must not carry (e.g. `price` on a MARKET order).
    #[error("parameter {name} sent when not required")]
    NotRequired { name: String },
    /// One of two parameters is mandatory and neither was sent.
    #[error("one of {a} or {b} is required")]
    EitherRequired { a: &'static str, b: &'static str },
    /// Optional parameters that may not be sent together.
    #[error("combination of optional parameters invalid")]
    BadCombination,
    /// A kline interval Binance does not define.
    #[error("invalid interval")]
    InvalidInterval,
}

/// A wallet request (`/sapi/v1/capital/*`) refused before the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// `coin` names no asset of the exchange.
    #[error("unknown coin")]
    UnknownCoin,
    /// The asset is not booked on a chain the node follows: no deposit addresses.
    #[error("coin not open for deposit")]
    DepositClosed,
    /// The asset is not booked on a chain the node follows: no chain withdrawals.
    #[error("coin not open for withdrawal")]
    WithdrawClosed,
    /// The destination is not an address of the chain's network; why, in words.
    #[error("illegal address: {0}")]
    IllegalAddress(String),
}

/// Longest reason quoted in an "Illegal address" message, in bytes.
const ADDRESS_REASON_MAX: usize = 160;

/// Everything that can fail a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Reject {
        reject: Reject,
        op: Op,
    },
    Auth(AuthError),
    Param(ParamError),
    Wallet(WalletError),
    /// Request-weight limit exceeded (HTTP 429, -1003).
    TooManyRequests,
    /// Order-rate limit exceeded (HTTP 429, -1015).
    TooManyOrders,
    /// The request weight of the client's address is over `limit` per `interval`
    /// (e.g. "1 MINUTE"): HTTP 429, -1003 with Binance's text naming the limit.
    WeightLimit {
        limit: u32,
        interval: &'static str,
    },
    /// The client's address kept sending after 429s and is banned until `until_ms`
    /// (ms since the epoch): HTTP 418, -1003.
    Banned {
        until_ms: u64,
    },
    /// The API key placed `limit` orders per `interval` (e.g. "10 SECOND") already:
    /// HTTP 429, -1015 with Binance's text naming the limit.
    OrderLimit {
        limit: u32,
        interval: &'static str,
    },
    /// A bug or an unavailable dependency (HTTP 500, -1000). Details go to the log only.
    Internal,
    /// The node shed the request: its command queue is full (HTTP 503, -1008).
    Busy,
    /// The node has stopped or its read model is unavailable (HTTP 500, -1001).
    Unavailable,
    /// No solvency epoch has been published yet (HTTP 400, -1130).
    NoSolvencyReport,
    /// No such endpoint (HTTP 404).
    NotFound,
    /// The endpoint exists, not with this method (HTTP 405).
    MethodNotAllowed,
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Failure {
        Failure::Auth(e)
    }
}

impl From<ParamError> for Failure {
    fn from(e: ParamError) -> Failure {
        Failure::Param(e)
    }
}

impl From<WalletError> for Failure {
    fn from(e: WalletError) -> Failure {
        Failure::Wallet(e)
    }
}

/// An error response: HTTP status plus Binance's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: i32,
    pub msg: Cow<'static, str>,
}

impl ApiError {
    const fn new(status: u16, code: i32, msg: &'static str) -> ApiError {
        ApiError {
            status,
            code,
            msg: Cow::Borrowed(msg),
        }
    }

    fn owned(status: u16, code: i32, msg: String) -> ApiError {
        ApiError {
            status,
            code,
            msg: Cow::Owned(msg),
        }
    }

    /// The body Binance sends: `{"code":-2010,"msg":"…"}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.msg.len() + 24);
        out.push_str("{\"code\":");
        out.push_str(&self.code.to_string());
        out.push_str(",\"msg\":");
        push_json_string(&mut out, &self.msg);
        out.push('}');
        out
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.msg)
    }
}

impl std::error::Error for ApiError {}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

// Binance's texts, named once.
const MSG_INSUFFICIENT: &str = "Account has insufficient balance for requested action.";
const MSG_UNKNOWN_ORDER: &str = "Unknown order sent.";
const MSG_NO_SUCH_ORDER: &str = "Order does not exist.";
const MSG_DUPLICATE_ORDER: &str = "Duplicate order sent.";
const MSG_MARKET_CLOSED: &str = "Market is closed.";
const MSG_WOULD_TAKE: &str = "Order would immediately match and take.";
const MSG_INVALID_SYMBOL: &str = "Invalid symbol.";
const MSG_BAD_KEY: &str = "Invalid API-key, IP, or permissions for action.";
const MSG_KEY_FORMAT: &str = "API-key format invalid.";
const MSG_INVALID_DATA: &str = "Invalid data sent for a parameter.";
const MSG_DISABLED: &str = "This action is disabled on this account.";
const MSG_UNSUPPORTED: &str = "This operation is not supported.";
const FILTER_PRICE: &str = "Filter failure: PRICE_FILTER";
const FILTER_LOT: &str = "Filter failure: LOT_SIZE";
const FILTER_NOTIONAL: &str = "Filter failure: NOTIONAL";
const FILTER_MAX_ORDERS: &str = "Filter failure: MAX_NUM_ORDERS";
const FILTER_EXCHANGE_MAX_ORDERS: &str = "Filter failure: EXCHANGE_MAX_NUM_ORDERS";

/// The single table: every failure to its HTTP status, Binance code and message.
pub fn api_error(failure: &Failure) -> ApiError {
    match failure {
        Failure::Reject { reject, op } => reject_error(*reject, *op),
        Failure::Auth(e) => auth_error(e),
        Failure::Param(e) => param_error(e),
        Failure::Wallet(e) => wallet_error(e),
        Failure::TooManyRequests => ApiError::new(429, -1003, "Too many requests queued."),
        Failure::TooManyOrders => ApiError::new(429, -1015, "Too many new orders."),
        Failure::WeightLimit { limit, interval } => ApiError::owned(
            429,
            -1003,
            format!(
                "Too much request weight used; current limit is {limit} request weight per \
                 {interval}. Please use WebSocket Streams for live updates to avoid polling \
                 the API."
            ),
        ),
        Failure::Banned { until_ms } => ApiError::owned(
            418,
            -1003,
            format!(
                "Way too much request weight used; IP banned until {until_ms}. Please use \
                 WebSocket Streams for live updates to avoid bans."
            ),
        ),
        Failure::OrderLimit { limit, interval } => ApiError::owned(
            429,
            -1015,
            format!("Too many new orders; current limit is {limit} orders per {interval}."),
        ),
        Failure::Internal => ApiError::new(
            500,
            -1000,
            "An unknown error occurred while processing the request.",
        ),
        Failure::Busy => ApiError::new(
            503,
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        ),
        Failure::Unavailable => ApiError::new(
            500,
            -1001,
            "Internal error; unable to process your request. Please try again.",
        ),
        Failure::NoSolvencyReport => ApiError::new(
            400,
            -1130,
            "No solvency report has been published yet.",
        ),
        Failure::NotFound => ApiError::new(404, -1020, MSG_UNSUPPORTED),
        Failure::MethodNotAllowed => ApiError::new(405, -1020, MSG_UNSUPPORTED),
    }
}

fn reject_error(reject: Reject, op: Op) -> ApiError {
    use Reject as R;
    // -2011 for cancels, -2010 for new orders; other operations use -2010's texts too.
    let order_code = if op == Op::CancelOrder { -2011 } else { -2010 };
    match reject {
        R::UnknownUser => ApiError::new(401, -2015, MSG_BAD_KEY),
        R::UnknownMarket => ApiError::new(400, -1121, MSG_INVALID_SYMBOL),
        R::UnknownOrder => match op {
            Op::CancelOrder => ApiError::new(400, -2011, MSG_UNKNOWN_ORDER),
            Op::Query => ApiError::new(400, -2013, MSG_NO_SUCH_ORDER),
            _ => ApiError::new(400, -2010, MSG_UNKNOWN_ORDER),
        },
        R::UnknownWithdrawal => ApiError::new(400, -2013, MSG_NO_SUCH_ORDER),
        R::InsufficientFunds if op == Op::Wallet => {
            ApiError::new(400, -4026, "You have insufficient balance.")
        }
        R::InsufficientFunds => ApiError::new(400, -2010, MSG_INSUFFICIENT),
        R::WithdrawalsHalted | R::WithdrawalsFrozen | R::NoWithdrawalPolicy if op == Op::Wallet => {
            ApiError::new(400, -4019, "Current asset is not open for withdrawal.")
        }
        R::NoWithdrawalPolicy => {
            ApiError::new(400, -4019, "Current asset is not open for withdrawal.")
        }
        R::NoDepositWallet if op == Op::Wallet => ApiError::new(
            400,
            -4019,
            "Current asset is not open for deposit: no deposit wallet is registered for it.",
        ),
        R::InvalidAddress => ApiError::new(400, -4033, "Illegal address."),
        R::AddressNotAllowed => {
            ApiError::new(400, -4007, "Withdrawal address is not on the allow-list.")
        }
        R::AmountBelowMinimum => ApiError::new(
            400,
            -4022,
            "Not less than the minimum withdrawal amount, and more than the fee.",
        ),
        R::DailyLimitExceeded => ApiError::new(
            400,
            -4023,
            "Within 24 hours, the withdrawal exceeds the maximum amount.",
        ),
        R::InvalidPrice => ApiError::new(400, -1013, FILTER_PRICE),
        R::ZeroAmount | R::InvalidQuantity | R::QuantityBelowMinimum | R::QuantityAboveMaximum => {
            ApiError::new(400, -1013, FILTER_LOT)
        }
        R::NotionalBelowMinimum | R::NotionalAboveMaximum => {
            ApiError::new(400, -1013, FILTER_NOTIONAL)
        }
        R::TooManyOpenOrders => ApiError::new(400, -1013, FILTER_MAX_ORDERS),
        R::BookFull | R::TooManyPriceLevels | R::PriceLevelFull => {
            ApiError::new(400, -1013, FILTER_EXCHANGE_MAX_ORDERS)
        }
        R::PostOnlyWouldTake => ApiError::new(400, -2010, MSG_WOULD_TAKE),
        R::InvalidTimeInForce => ApiError::new(400, -1115, "Invalid timeInForce."),
        R::DuplicateClientOrderId => ApiError::new(400, -2010, MSG_DUPLICATE_ORDER),
        R::MarketHalted => ApiError::new(400, order_code, MSG_MARKET_CLOSED),
        R::WithdrawalsHalted | R::WithdrawalsFrozen => ApiError::new(400, -2010, MSG_DISABLED),
        R::AmountOverflow => ApiError::new(400, -1130, MSG_INVALID_DATA),
        // Wallet and operator rejections have no Binance spot equivalent: generic
        // "invalid data", or "not supported" where the request cannot succeed as sent.
        R::UnknownAsset
        | R::DuplicateDeposit
        | R::DuplicateWithdrawal
        | R::WithdrawalNotPending
        | R::InvalidSpec(_)
        | R::AssetExists
        | R::MarketExists
        | R::HaltStateUnchanged
        | R::InvalidReason
        | R::InvalidReference
        | R::UnknownFeeTier
        | R::InvalidName
        | R::NameTaken
        | R::InvalidApiKey
        | R::ApiKeyExists
        | R::WithdrawNeedsIpAllowList
        | R::InvalidDescriptor
        | R::WalletExists
        | R::NoDepositWallet
        | R::DepositAddressAssigned
        | R::UnknownDeposit
        | R::DepositReversed
        | R::StaleReconciliation
        | R::InvalidPolicy
        | R::AddressListed
        | R::WithdrawalNotInReview
        | R::InvalidBatch
        | R::UnknownBatch
        | R::BatchNotOpen
        | R::WithdrawalBatched => ApiError::new(400, -1130, MSG_INVALID_DATA),
        R::UnknownApiKey | R::ApiKeyRevoked => ApiError::new(401, -2015, MSG_BAD_KEY),
        R::TooManyUsers | R::TooManyAssets | R::TooManyMarkets | R::TooManyApiKeys => {
            ApiError::new(400, -1020, MSG_UNSUPPORTED)
        }
    }
}

fn wallet_error(e: &WalletError) -> ApiError {
    match e {
        WalletError::UnknownCoin => ApiError::new(400, -4018, "We don't have this asset."),
        WalletError::DepositClosed => {
            ApiError::new(400, -4019, "Current asset is not open for deposit.")
        }
        WalletError::WithdrawClosed => {
            ApiError::new(400, -4019, "Current asset is not open for withdrawal.")
        }
        WalletError::IllegalAddress(reason) => {
            let mut end = reason.len().min(ADDRESS_REASON_MAX);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            ApiError::owned(400, -4033, format!("Illegal address: {}", &reason[..end]))
        }
    }
}

fn auth_error(e: &AuthError) -> ApiError {
    use AuthError as A;
    match e {
        A::MissingApiKey | A::BadApiKeyFormat => ApiError::new(401, -2014, MSG_KEY_FORMAT),
        A::UnknownApiKey | A::KeyDisabled | A::IpNotAllowed | A::PermissionDenied => {
            ApiError::new(401, -2015, MSG_BAD_KEY)
        }
        A::BadSignature => ApiError::new(400, -1022, "Signature for this request is not valid."),
        A::TimestampAhead => ApiError::new(
            400,
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        ),
        A::TimestampExpired => ApiError::new(
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ),
        A::RecvWindowTooLarge => ApiError::new(400, -1131, "recvWindow must be less than 60000"),
        A::Param(p) => param_error(p),
    }
}

fn param_error(e: &ParamError) -> ApiError {
    use ParamError as P;
    match e {
        P::TooLarge | P::TooMany => {
            ApiError::new(400, -1101, "Too many parameters sent for this endpoint.")
        }
        P::Duplicate => ApiError::new(400, -1101, "Duplicate values for a parameter detected."),
        P::IllegalChars { name, pattern } => illegal(name.as_deref(), *pattern),
        P::Missing { name } => ApiError::owned(
            400,
            -1102,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        ),
        P::BadDecimal { name, error } => match error {
            DecimalError::TooPrecise => ApiError::owned(
                400,
                -1111,
                format!("Parameter '{name}' has too much precision."),
            ),
            DecimalError::Overflow => {
                ApiError::owned(400, -1108, format!("Parameter '{name}' overflowed."))
            }
            DecimalError::Empty | DecimalError::TooLong | DecimalError::BadCharacter => {
                illegal(Some(name), Some(crate::params::DECIMAL_PATTERN))
            }
        },
        P::Overflow { name } => {
            ApiError::owned(400, -1108, format!("Parameter '{name}' overflowed."))
        }
        P::UnknownSymbol => ApiError::new(400, -1121, MSG_INVALID_SYMBOL),
        P::InvalidSide => ApiError::new(400, -1117, "Invalid side."),
        P::InvalidOrderType => ApiError::new(400, -1116, "Invalid orderType."),
        P::UnsupportedOrderType(msg) => ApiError::new(400, -2010, msg),
        P::InvalidTimeInForce => ApiError::new(400, -1115, "Invalid timeInForce."),
        P::InvalidValue { name } => ApiError::owned(
            400,
            -1130,
            format!("Data sent for parameter '{name}' is not valid."),
        ),
        P::Unknown => ApiError::new(400, -1103, "An unknown parameter was sent."),
        P::NotRequired { name } => ApiError::owned(
            400,
            -1106,
            format!("Parameter '{name}' sent when not required."),
        ),
        P::EitherRequired { a, b } => ApiError::owned(
            400,
            -1102,
            format!("Param '{a}' or '{b}' must be sent, but both were empty/null!"),
        ),
        P::BadCombination => {
            ApiError::new(400, -1128, "Combination of optional parameters invalid.")
        }
        P::InvalidInterval => ApiError::new(400, -1120, "Invalid interval."),
    }
}

fn illegal(name: Option<&str>, pattern: Option<&'static str>) -> ApiError {
    match (name, pattern) {
        (Some(n), Some(p)) => ApiError::owned(
            400,
            -1100,
            format!("Illegal characters found in parameter '{n}'; legal range is '{p}'."),
        ),
        (Some(n), None) => ApiError::owned(
            400,
            -1100,
            format!("Illegal characters found in parameter '{n}'."),
        ),
        (None, _) => ApiError::new(400, -1100, "Illegal characters found in a parameter."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Reject` variant. The exhaustive match below stops compiling when a
    /// variant is added, so the table above must be extended with it.
    fn all_rejects() -> Vec<Reject> {
        Reject::ALL.to_vec()
    }

    const OPS: [Op; 5] = [
        Op::NewOrder,
        Op::CancelOrder,
        Op::Query,
        Op::Wallet,
        Op::Admin,
    ];

    #[test]
    fn every_reject_maps_to_a_binance_error() {
        let rejects = all_rejects();
        assert_eq!(rejects.len(), 64);
        for reject in rejects {
            for op in OPS {
                let e = api_error(&Failure::Reject { reject, op });
                assert!(e.code < 0, "{reject:?}");
                assert!(matches!(e.status, 400 | 401), "{reject:?}");
                assert!(!e.msg.is_empty() && e.msg.len() < 200, "{reject:?}");
                // Binance's texts, never the engine's lower-case sentences.
                assert!(
                    e.msg.starts_with(|c: char| c.is_ascii_uppercase()),
                    "{reject:?}: {}",
                    e.msg
                );
            }
        }
    }

    #[test]
    fn reject_table_vectors() {
        let cases: &[(Reject, Op, u16, i32, &str)] = &[
            (
                Reject::InsufficientFunds,
                Op::NewOrder,
                400,
                -2010,
                "Account has insufficient balance for requested action.",
            ),
            (
                Reject::PostOnlyWouldTake,
                Op::NewOrder,
                400,
                -2010,
                "Order would immediately match and take.",
            ),
            (
                Reject::DuplicateClientOrderId,
                Op::NewOrder,
                400,
                -2010,
                "Duplicate order sent.",
            ),
            (
                Reject::UnknownOrder,
                Op::CancelOrder,
                400,
                -2011,
                "Unknown order sent.",
            ),
            (
                Reject::UnknownOrder,
                Op::Query,
                400,
                -2013,
                "Order does not exist.",
            ),
            (
                Reject::UnknownMarket,
                Op::NewOrder,
                400,
                -1121,
                "Invalid symbol.",
            ),
            (
                Reject::InvalidPrice,
                Op::NewOrder,
                400,
                -1013,
                "Filter failure: PRICE_FILTER",
            ),
            (
                Reject::QuantityBelowMinimum,
                Op::NewOrder,
                400,
                -1013,
                "Filter failure: LOT_SIZE",
            ),
            (
                Reject::NotionalBelowMinimum,
                Op::NewOrder,
                400,
                -1013,
                "Filter failure: NOTIONAL",
            ),
            (
                Reject::TooManyOpenOrders,
                Op::NewOrder,
                400,
                -1013,
                "Filter failure: MAX_NUM_ORDERS",
            ),
            (
                Reject::BookFull,
                Op::NewOrder,
                400,
                -1013,
                "Filter failure: EXCHANGE_MAX_NUM_ORDERS",
            ),
            (
                Reject::MarketHalted,
                Op::NewOrder,
                400,
                -2010,
                "Market is closed.",
            ),
            (
                Reject::MarketHalted,
                Op::CancelOrder,
                400,
                -2011,
                "Market is closed.",
            ),
            (
                Reject::UnknownUser,
                Op::Query,
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
        ];
        for (reject, op, status, code, msg) in cases {
            let e = api_error(&Failure::Reject {
                reject: *reject,
                op: *op,
            });
            assert_eq!(
                (e.status, e.code, e.msg.as_ref()),
                (*status, *code, *msg),
                "{reject:?} {op:?}"
            );
        }
    }

    #[test]
    fn auth_table_vectors() {
        let cases: &[(AuthError, u16, i32, &str)] = &[
            (
                AuthError::MissingApiKey,
                401,
                -2014,
                "API-key format invalid.",
            ),
            (
                AuthError::BadApiKeyFormat,
                401,
                -2014,
                "API-key format invalid.",
            ),
            (
                AuthError::UnknownApiKey,
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
            (
                AuthError::KeyDisabled,
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
            (
                AuthError::IpNotAllowed,
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
            (
                AuthError::PermissionDenied,
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
            (
                AuthError::BadSignature,
                400,
                -1022,
                "Signature for this request is not valid.",
            ),
            (
                AuthError::TimestampExpired,
                400,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ),
            (
                AuthError::TimestampAhead,
                400,
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ),
            (
                AuthError::RecvWindowTooLarge,
                400,
                -1131,
                "recvWindow must be less than 60000",
            ),
            (
                AuthError::Param(ParamError::Missing {
                    name: "signature".to_owned(),
                }),
                400,
                -1102,
                "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
            ),
        ];
        for (e, status, code, msg) in cases {
            let a = api_error(&Failure::Auth(e.clone()));
            assert_eq!(
                (a.status, a.code, a.msg.as_ref()),
                (*status, *code, *msg),
                "{e:?}"
            );
        }
    }

    #[test]
    fn other_failures() {
        let e = api_error(&Failure::TooManyRequests);
        assert_eq!((e.status, e.code), (429, -1003));
        let e = api_error(&Failure::TooManyOrders);
        assert_eq!((e.status, e.code), (429, -1015));
        let e = api_error(&Failure::WeightLimit {
            limit: 6000,
            interval: "1 MINUTE",
        });
        assert_eq!(
            (e.status, e.code, e.msg.as_ref()),
            (
                429,
                -1003,
                "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. \
                 Please use WebSocket Streams for live updates to avoid polling the API."
            )
        );
        let e = api_error(&Failure::Banned {
            until_ms: 1_700_000_120_000,
        });
        assert_eq!(
            (e.status, e.code, e.msg.as_ref()),
            (
                418,
                -1003,
                "Way too much request weight used; IP banned until 1700000120000. \
                 Please use WebSocket Streams for live updates to avoid bans."
            )
        );
        let e = api_error(&Failure::OrderLimit {
            limit: 100,
            interval: "10 SECOND",
        });
        assert_eq!(
            (e.status, e.code, e.msg.as_ref()),
            (
                429,
                -1015,
                "Too many new orders; current limit is 100 orders per 10 SECOND."
            )
        );
        let e = api_error(&Failure::Internal);
        assert_eq!((e.status, e.code), (500, -1000));
        let e = api_error(&Failure::Busy);
        assert_eq!(
            (e.status, e.code, e.msg.as_ref()),
            (
                503,
                -1008,
                "Server is currently overloaded with other requests. Please try again in a few minutes."
            )
        );
        let e = api_error(&Failure::Unavailable);
        assert_eq!((e.status, e.code), (500, -1001));
        let e = api_error(&Failure::NotFound);
        assert_eq!((e.status, e.code), (404, -1020));
        let e = api_error(&Failure::Param(ParamError::NotRequired {
            name: "price".to_owned(),
        }));
        assert_eq!(
            (e.code, e.msg.as_ref()),
            (-1106, "Parameter 'price' sent when not required.")
        );
        let e = api_error(&Failure::Param(ParamError::EitherRequired {
            a: "quantity",
            b: "quoteOrderQty",
        }));
        assert_eq!(
            (e.code, e.msg.as_ref()),
            (
                -1102,
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
            )
        );
        let e = api_error(&Failure::Param(ParamError::UnknownSymbol));
        assert_eq!(
            (e.status, e.code, e.msg.as_ref()),
            (400, -1121, "Invalid symbol.")
        );
        let e = api_error(&Failure::Param(ParamError::Unknown));
        assert_eq!(e.code, -1103);
    }

    #[test]
    fn wallet_table_vectors() {
        let cases: &[(Failure, u16, i32, &str)] = &[
            (
                WalletError::UnknownCoin.into(),
                400,
                -4018,
                "We don't have this asset.",
            ),
            (
                WalletError::DepositClosed.into(),
                400,
                -4019,
                "Current asset is not open for deposit.",
            ),
            (
                WalletError::WithdrawClosed.into(),
                400,
                -4019,
                "Current asset is not open for withdrawal.",
            ),
            (
                WalletError::IllegalAddress("not a regtest address".to_owned()).into(),
                400,
                -4033,
                "Illegal address: not a regtest address",
            ),
            (
                Failure::Reject {
                    reject: Reject::NoDepositWallet,
                    op: Op::Wallet,
                },
                400,
                -4019,
                "Current asset is not open for deposit: no deposit wallet is registered for it.",
            ),
            (
                Failure::Reject {
                    reject: Reject::InsufficientFunds,
                    op: Op::Wallet,
                },
                400,
                -4026,
                "You have insufficient balance.",
            ),
        ];
        for (failure, status, code, msg) in cases {
            let e = api_error(failure);
            assert_eq!(
                (e.status, e.code, e.msg.as_ref()),
                (*status, *code, *msg),
                "{failure:?}"
            );
        }
        // A long reason is cut (on a character boundary), never echoed whole.
        let long = "é".repeat(200);
        let e = api_error(&WalletError::IllegalAddress(long).into());
        assert!(e.msg.len() <= "Illegal address: ".len() + ADDRESS_REASON_MAX);
        assert!(e.msg.ends_with('é'));
    }

    #[test]
    fn json_body() {
        let e = api_error(&Failure::Reject {
            reject: Reject::InsufficientFunds,
            op: Op::NewOrder,
        });
        assert_eq!(
            e.to_json(),
            r#"{"code":-2010,"msg":"Account has insufficient balance for requested action."}"#
        );
        let e = api_error(&Failure::Param(ParamError::IllegalChars {
            name: Some("price".to_owned()),
            pattern: Some(crate::params::DECIMAL_PATTERN),
        }));
        assert_eq!(
            e.to_json(),
            r#"{"code":-1100,"msg":"Illegal characters found in parameter 'price'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."}"#
        );
        let weird = ApiError::owned(400, -1, "a\"b\\c\n\u{1}".to_owned());
        assert_eq!(weird.to_json(), r#"{"code":-1,"msg":"a\"b\\c\n\u0001"}"#);
    }
}
