//! The REST API as an OpenAPI 3.0 document, served at [`PATH`] (unsigned, weight 1).
//!
//! The document is data built here from one table, [`OPERATIONS`]: per operation its
//! method and path, security, weight, parameters (type, pattern, enum, required), the
//! success schema with Binance's field names, and the failures its handler can answer
//! with. Error responses are not written by hand: each operation's failures go through
//! the one error table ([`crate::errors::api_error`]) and the document lists, per HTTP
//! status, the Binance codes (as an `enum` on `code`) and messages that come out.
//!
//! Keeping it true (`crates/api/tests/integration/openapi.rs`): the document's (method, path) set
//! equals [`crate::http::ROUTES`], from which the router is built; every failure
//! class (each [`Reject`] for order operations, each [`AuthError`] for signed ones,
//! each parameter error for each documented parameter) is documented where it can
//! occur; and the router, probed in process with bad and good requests for every
//! operation, only answers statuses and codes the document lists. End to end,
//! Schemathesis fuzzes a running `kura serve` against the served document
//! (`crates/kura/tests/integration/e2e_schemathesis.rs`).
//!
//! Signed operations list `timestamp`, `recvWindow` and `signature` as parameters (in
//! the query for GET and DELETE, in the form body for POST) and require the
//! `X-MBX-APIKEY` header through the `ApiKey` security scheme; the signature is
//! HMAC-SHA256 (hex) or Ed25519 (base64) over the raw query string followed by the raw
//! body, without the `signature` parameter (see [`crate::auth`]).
//!
//! The wallet operations (`/sapi/v1/capital/deposit/*`, `/sapi/v1/capital/withdraw/*`)
//! list exactly the engine rejections their commands can meet, as the error table maps
//! wallet rejections ([`Op::Wallet`]), and the wallet failures found before the engine
//! ([`WalletError`]); a withdrawal needs the WITHDRAW access: a key with the `withdraw`
//! permission, used from an address on its IP allow-list.
//!
//! Known limitation: the 404 and 405 answers for unknown paths and methods are not
//! part of any operation.

use crate::auth::{AuthError, API_KEY_HEADER, MAX_RECV_WINDOW_MS};
use crate::errors::{api_error, Failure, Op, ParamError, WalletError};
use crate::http::wallet::{ID_LIST_PATTERN, WITHDRAW_ORDER_ID_PATTERN};
use crate::params::Params;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use kura_engine::Reject;
use kura_store::Interval;
use kura_units::DecimalError;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The legal ranges the document states (equivalent to the ones the server quotes in
/// its -1100 messages, with the hyphen last in each class so every regex dialect reads
/// it as a character).
const SYMBOL_REGEX: &str = "^[A-Z0-9_.-]{1,20}$";
const SYMBOLS_REGEX: &str = "^\\[(\"[A-Z0-9_.-]{1,20}\"(,\"[A-Z0-9_.-]{1,20}\")*)?\\]$";
const DECIMAL_REGEX: &str = "^[0-9]{1,20}(\\.[0-9]{1,20})?$";
const CLIENT_ORDER_ID_REGEX: &str = "^[a-zA-Z0-9_-]{1,36}$";
/// A decimal in a response: always a JSON string, possibly negative (price changes).
const DECIMAL_OUT_REGEX: &str = "^-?[0-9]+(\\.[0-9]+)?$";
/// A time in a wallet history (`applyTime`, `completeTime`): UTC, to the second.
const UTC_TIME_REGEX: &str = "^[0-9]{4,}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$";
/// A market of every fresh node (the genesis markets), used as the example symbol.
const EXAMPLE_SYMBOL: &str = "BTCJPY";

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key, no signature.
    Public,
    /// Signed, with a key allowed to read (Binance's USER_DATA).
    UserData,
    /// Signed, with a key allowed to trade (Binance's TRADE).
    Trade,
    /// Signed, with a key allowed to withdraw, which needs an IP allow-list.
    Withdraw,
}

/// What a parameter holds; decides its schema and the parameter errors it can cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Symbol,
    /// A JSON array of symbols (`["BTCJPY","BTCUSD"]`).
    Symbols,
    /// An unsigned integer (ids, times in ms).
    Integer,
    /// `limit`: 1 to the maximum; larger values are capped; 0 is refused.
    Limit {
        default: u32,
        max: u32,
    },
    Decimal,
    Side,
    OrderType,
    TimeInForce,
    RespType,
    SelfTradePrevention,
    Interval,
    Bool,
    ClientOrderId,
    /// An asset symbol (`coin`); one the exchange does not have is -4018.
    Coin,
    /// A chain network's name; one that is not the coin's is -1130.
    Network,
    /// A destination address, checked by the chain (-4033 with the reason).
    Address,
    /// A client's withdrawal id (`withdrawOrderId`).
    WithdrawOrderId,
    /// Withdrawal ids separated by commas.
    IdList,
    /// Free text the server accepts and ignores.
    Text,
    Timestamp,
    RecvWindow,
    Signature,
}

/// One request parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

const fn p(name: &'static str, kind: Kind, required: bool, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required,
        description,
    }
}

/// What an operation's handler reaches in the node: decides the 500/503 answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uses {
    /// Nothing that can fail (constants, the clock).
    Nothing,
    /// Engine queries and the read model.
    Node,
}

/// One operation of the API.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// Upper case, as in [`crate::http::ROUTES`].
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    pub weight: &'static str,
    /// Parameters besides `timestamp`, `recvWindow` and `signature` (added to every
    /// signed operation).
    pub params: &'static [Param],
    /// Whether the handler reads the query and body at all (an operation that does
    /// not ignores every parameter and cannot fail on one).
    pub reads_request: bool,
    pub uses: Uses,
    /// The engine rejections the operation answers with, as the error table maps
    /// them for this kind of operation.
    pub rejects: Option<Op>,
    /// Whether it places an order (the order-rate limit applies).
    pub places_order: bool,
    /// Failures particular to the operation (parameter combinations).
    pub extra: fn() -> Vec<Failure>,
    /// The success (200) body's schema.
    pub response: fn() -> Value,
}

const SYMBOL_ONE: Param = p(
    "symbol",
    Kind::Symbol,
    false,
    "One market; the answer is then one object. Not with `symbols`.",
);
const SYMBOLS: Param = p(
    "symbols",
    Kind::Symbols,
    false,
    "Several markets as a JSON array (`[\"BTCJPY\",\"BTCUSD\"]`); the answer is an array. Not with `symbol`.",
);
const SYMBOL: Param = p("symbol", Kind::Symbol, true, "The market, e.g. BTCJPY.");
const START_TIME: Param = p("startTime", Kind::Integer, false, "From this time (ms).");
const END_TIME: Param = p("endTime", Kind::Integer, false, "Up to this time (ms).");
const ROWS_LIMIT: Param = p(
    "limit",
    Kind::Limit {
        default: 500,
        max: 1000,
    },
    false,
    "Rows to return (default 500, at most 1000; larger values are capped).",
);
const ORDER_ID: Param = p("orderId", Kind::Integer, false, "The order's id.");
const ORIG_CLIENT_ORDER_ID: Param = p(
    "origClientOrderId",
    Kind::ClientOrderId,
    false,
    "The order's client order id (when `orderId` is not sent).",
);

const NEW_ORDER_PARAMS: &[Param] = &[
    SYMBOL,
    p("side", Kind::Side, true, "BUY or SELL."),
    p(
        "type",
        Kind::OrderType,
        true,
        "LIMIT, MARKET or LIMIT_MAKER (post-only). Binance's stop and take-profit types are refused with -2010.",
    ),
    p(
        "timeInForce",
        Kind::TimeInForce,
        false,
        "Required for LIMIT; not sent for MARKET and LIMIT_MAKER.",
    ),
    p(
        "quantity",
        Kind::Decimal,
        false,
        "Base quantity, a multiple of LOT_SIZE's stepSize. LIMIT and LIMIT_MAKER need it; MARKET needs it or `quoteOrderQty`.",
    ),
    p(
        "quoteOrderQty",
        Kind::Decimal,
        false,
        "MARKET only: spend (BUY) or receive (SELL) this much of the quote asset.",
    ),
    p(
        "price",
        Kind::Decimal,
        false,
        "LIMIT and LIMIT_MAKER: a multiple of PRICE_FILTER's tickSize.",
    ),
    p(
        "newClientOrderId",
        Kind::ClientOrderId,
        false,
        "The order's client order id, unique among the account's open orders; generated when not sent.",
    ),
    p(
        "newOrderRespType",
        Kind::RespType,
        false,
        "ACK, RESULT or FULL (default FULL for LIMIT and MARKET, ACK for LIMIT_MAKER).",
    ),
    p(
        "selfTradePreventionMode",
        Kind::SelfTradePrevention,
        false,
        "What happens when the order would trade with the same account's order (default: the market's).",
    ),
];

const TEST_ORDER_PARAMS: &[Param] = &[
    SYMBOL,
    p("side", Kind::Side, true, "BUY or SELL."),
    p("type", Kind::OrderType, true, "As for a new order."),
    p(
        "timeInForce",
        Kind::TimeInForce,
        false,
        "As for a new order.",
    ),
    p("quantity", Kind::Decimal, false, "As for a new order."),
    p("quoteOrderQty", Kind::Decimal, false, "As for a new order."),
    p("price", Kind::Decimal, false, "As for a new order."),
    p(
        "newClientOrderId",
        Kind::ClientOrderId,
        false,
        "As for a new order.",
    ),
    p(
        "newOrderRespType",
        Kind::RespType,
        false,
        "As for a new order.",
    ),
    p(
        "selfTradePreventionMode",
        Kind::SelfTradePrevention,
        false,
        "As for a new order.",
    ),
    p(
        "computeCommissionRates",
        Kind::Bool,
        false,
        "true: answer the commission rates that would apply (default false: answer `{}`).",
    ),
];

fn none() -> Vec<Failure> {
    Vec::new()
}

fn bad_combination() -> Vec<Failure> {
    vec![ParamError::BadCombination.into()]
}

fn klines_extra() -> Vec<Failure> {
    vec![ParamError::InvalidValue {
        name: "startTime".to_owned(),
    }
    .into()]
}

fn order_ref_extra() -> Vec<Failure> {
    vec![ParamError::EitherRequired {
        a: "origClientOrderId",
        b: "orderId",
    }
    .into()]
}

fn query_order_extra() -> Vec<Failure> {
    let mut out = order_ref_extra();
    out.push(Failure::Reject {
        reject: Reject::UnknownOrder,
        op: Op::Query,
    });
    out
}

fn new_order_extra() -> Vec<Failure> {
    let mut out: Vec<Failure> = [
        "timeInForce",
        "quoteOrderQty",
        "price",
        "stopPrice",
        "icebergQty",
        "trailingDelta",
        "strategyId",
    ]
    .iter()
    .map(|name| {
        ParamError::NotRequired {
            name: (*name).to_owned(),
        }
        .into()
    })
    .collect();
    out.push(ParamError::BadCombination.into());
    out.push(
        ParamError::EitherRequired {
            a: "quantity",
            b: "quoteOrderQty",
        }
        .into(),
    );
    for name in ["timeInForce", "quantity", "price"] {
        out.push(
            ParamError::Missing {
                name: name.to_owned(),
            }
            .into(),
        );
    }
    out
}

fn deposit_address_extra() -> Vec<Failure> {
    vec![
        WalletError::DepositClosed.into(),
        wallet_reject(Reject::NoDepositWallet),
        wallet_reject(Reject::UnknownUser),
    ]
}

fn withdraw_extra() -> Vec<Failure> {
    let mut out: Vec<Failure> = vec![
        WalletError::WithdrawClosed.into(),
        ParamError::InvalidValue {
            name: "withdrawOrderId".to_owned(),
        }
        .into(),
    ];
    out.extend(
        [
            Reject::UnknownUser,
            Reject::InvalidReference,
            Reject::InvalidAddress,
            Reject::NoWithdrawalPolicy,
            Reject::DuplicateWithdrawal,
            Reject::WithdrawalsFrozen,
            Reject::WithdrawalsHalted,
            Reject::AmountBelowMinimum,
            Reject::DailyLimitExceeded,
            Reject::AddressNotAllowed,
            Reject::InsufficientFunds,
        ]
        .into_iter()
        .map(wallet_reject),
    );
    out
}

fn wallet_reject(reject: Reject) -> Failure {
    Failure::Reject {
        reject,
        op: Op::Wallet,
    }
}

const COIN: Param = p("coin", Kind::Coin, true, "The asset, e.g. BTC.");
const COIN_OPT: Param = p("coin", Kind::Coin, false, "Only this asset.");
const NETWORK: Param = p(
    "network",
    Kind::Network,
    false,
    "The chain network; when sent it must be the coin's (a coin's network has its name, e.g. BTC).",
);
const OFFSET: Param = p(
    "offset",
    Kind::Integer,
    false,
    "Rows to skip, after the filters (default 0).",
);
const WALLET_LIMIT: Param = p(
    "limit",
    Kind::Limit {
        default: 1000,
        max: 1000,
    },
    false,
    "Rows to return (default 1000, at most 1000; larger values are capped).",
);
const WITHDRAW_ORDER_ID: Param = p(
    "withdrawOrderId",
    Kind::WithdrawOrderId,
    false,
    "The client's id of the withdrawal.",
);

const EPOCH: Param = p(
    "epoch",
    Kind::Integer,
    false,
    "A published epoch's number (default: the newest).",
);

fn epoch_extra() -> Vec<Failure> {
    vec![ParamError::InvalidValue {
        name: "epoch".to_owned(),
    }
    .into()]
}

fn solvency_proof_extra() -> Vec<Failure> {
    let mut out = epoch_extra();
    out.push(Failure::NoSolvencyReport);
    out
}

/// Every operation the router serves, in the order of [`crate::http::ROUTES`].
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "GET",
        path: "/api/v3/ping",
        operation_id: "ping",
        summary: "Test connectivity.",
        tag: "Market",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: empty_object,
    },
    Operation {
        method: "GET",
        path: "/api/v3/time",
        operation_id: "time",
        summary: "The server's time.",
        tag: "Market",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: server_time,
    },
    Operation {
        method: "GET",
        path: "/api/v3/exchangeInfo",
        operation_id: "exchangeInfo",
        summary: "Markets, their filters and the rate limits.",
        tag: "Market",
        access: Access::Public,
        weight: "20",
        params: &[SYMBOL_ONE, SYMBOLS],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: exchange_info,
    },
    Operation {
        method: "GET",
        path: "/api/v3/depth",
        operation_id: "depth",
        summary: "The order book.",
        tag: "Market",
        access: Access::Public,
        weight: "5 (limit ≤ 100), 25 (≤ 500), 50 (≤ 1000), 250 (more)",
        params: &[
            SYMBOL,
            p(
                "limit",
                Kind::Limit {
                    default: 100,
                    max: 5000,
                },
                false,
                "Levels per side (default 100, at most 5000; larger values are capped).",
            ),
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: depth,
    },
    Operation {
        method: "GET",
        path: "/api/v3/trades",
        operation_id: "trades",
        summary: "Recent trades.",
        tag: "Market",
        access: Access::Public,
        weight: "25",
        params: &[SYMBOL, ROWS_LIMIT],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: trades,
    },
    Operation {
        method: "GET",
        path: "/api/v3/aggTrades",
        operation_id: "aggTrades",
        summary: "Aggregate trades (one per trade).",
        tag: "Market",
        access: Access::Public,
        weight: "4",
        params: &[
            SYMBOL,
            p(
                "fromId",
                Kind::Integer,
                false,
                "From this trade id. Not with `startTime`/`endTime`.",
            ),
            START_TIME,
            END_TIME,
            ROWS_LIMIT,
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: agg_trades,
    },
    Operation {
        method: "GET",
        path: "/api/v3/klines",
        operation_id: "klines",
        summary: "Candlesticks.",
        tag: "Market",
        access: Access::Public,
        weight: "2",
        params: &[
            SYMBOL,
            p("interval", Kind::Interval, true, "The candle interval."),
            p(
                "startTime",
                Kind::Integer,
                false,
                "From this time (ms); not after `endTime`.",
            ),
            END_TIME,
            ROWS_LIMIT,
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: klines_extra,
        response: klines,
    },
    Operation {
        method: "GET",
        path: "/api/v3/ticker/24hr",
        operation_id: "ticker24hr",
        summary: "24-hour rolling statistics.",
        tag: "Market",
        access: Access::Public,
        weight: "2 (one symbol, or 1–20 symbols); 40 (21–100); 80 (more, or all)",
        params: &[SYMBOL_ONE, SYMBOLS],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: ticker_24hr,
    },
    Operation {
        method: "GET",
        path: "/api/v3/ticker/price",
        operation_id: "tickerPrice",
        summary: "Last price.",
        tag: "Market",
        access: Access::Public,
        weight: "2 (one symbol), 4 (several or all)",
        params: &[SYMBOL_ONE, SYMBOLS],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: ticker_price,
    },
    Operation {
        method: "GET",
        path: "/api/v3/ticker/bookTicker",
        operation_id: "bookTicker",
        summary: "Best bid and ask.",
        tag: "Market",
        access: Access::Public,
        weight: "2 (one symbol), 4 (several or all)",
        params: &[SYMBOL_ONE, SYMBOLS],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: book_ticker,
    },
    Operation {
        method: "POST",
        path: "/api/v3/order",
        operation_id: "newOrder",
        summary: "Place an order.",
        tag: "Trading",
        access: Access::Trade,
        weight: "1 (and 1 order)",
        params: NEW_ORDER_PARAMS,
        reads_request: true,
        uses: Uses::Node,
        rejects: Some(Op::NewOrder),
        places_order: true,
        extra: new_order_extra,
        response: new_order,
    },
    Operation {
        method: "GET",
        path: "/api/v3/order",
        operation_id: "queryOrder",
        summary: "One of the account's orders.",
        tag: "Trading",
        access: Access::UserData,
        weight: "4",
        params: &[SYMBOL, ORDER_ID, ORIG_CLIENT_ORDER_ID],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: query_order_extra,
        response: order,
    },
    Operation {
        method: "DELETE",
        path: "/api/v3/order",
        operation_id: "cancelOrder",
        summary: "Cancel an open order.",
        tag: "Trading",
        access: Access::Trade,
        weight: "1",
        params: &[
            SYMBOL,
            ORDER_ID,
            ORIG_CLIENT_ORDER_ID,
            p(
                "newClientOrderId",
                Kind::ClientOrderId,
                false,
                "The cancel's own client order id (answered as `clientOrderId`).",
            ),
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: Some(Op::CancelOrder),
        places_order: false,
        extra: order_ref_extra,
        response: cancelled_order,
    },
    Operation {
        method: "POST",
        path: "/api/v3/order/test",
        operation_id: "testOrder",
        summary: "Check an order without placing it.",
        tag: "Trading",
        access: Access::Trade,
        weight: "1 (20 with computeCommissionRates)",
        params: TEST_ORDER_PARAMS,
        reads_request: true,
        uses: Uses::Node,
        rejects: Some(Op::NewOrder),
        places_order: false,
        extra: new_order_extra,
        response: test_order,
    },
    Operation {
        method: "GET",
        path: "/api/v3/openOrders",
        operation_id: "openOrders",
        summary: "The account's open orders.",
        tag: "Trading",
        access: Access::UserData,
        weight: "6 with a symbol, 80 without",
        params: &[p(
            "symbol",
            Kind::Symbol,
            false,
            "One market (default: every market).",
        )],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: orders,
    },
    Operation {
        method: "DELETE",
        path: "/api/v3/openOrders",
        operation_id: "cancelOpenOrders",
        summary: "Cancel every open order of the account in one market.",
        tag: "Trading",
        access: Access::Trade,
        weight: "1",
        params: &[SYMBOL],
        reads_request: true,
        uses: Uses::Node,
        rejects: Some(Op::CancelOrder),
        places_order: false,
        extra: none,
        response: cancelled_orders,
    },
    Operation {
        method: "GET",
        path: "/api/v3/allOrders",
        operation_id: "allOrders",
        summary: "The account's orders in one market, open or not.",
        tag: "Trading",
        access: Access::UserData,
        weight: "20",
        params: &[
            SYMBOL,
            p("orderId", Kind::Integer, false, "From this order id."),
            START_TIME,
            END_TIME,
            ROWS_LIMIT,
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: orders,
    },
    Operation {
        method: "GET",
        path: "/api/v3/myTrades",
        operation_id: "myTrades",
        summary: "The account's fills in one market.",
        tag: "Trading",
        access: Access::UserData,
        weight: "20 (5 with orderId)",
        params: &[
            SYMBOL,
            p("orderId", Kind::Integer, false, "Only this order's fills."),
            p(
                "fromId",
                Kind::Integer,
                false,
                "From this trade id. Not with `startTime`/`endTime`.",
            ),
            START_TIME,
            END_TIME,
            ROWS_LIMIT,
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: bad_combination,
        response: my_trades,
    },
    Operation {
        method: "GET",
        path: "/api/v3/account",
        operation_id: "account",
        summary: "Balances and commission rates.",
        tag: "Account",
        access: Access::UserData,
        weight: "20",
        params: &[p(
            "omitZeroBalances",
            Kind::Bool,
            false,
            "true: leave out assets with nothing free or locked.",
        )],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: account,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/capital/config/getall",
        operation_id: "capitalConfig",
        summary: "Every asset, the account's balance of it, and its networks.",
        tag: "Account",
        access: Access::UserData,
        weight: "10",
        params: &[],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: capital_config,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/capital/deposit/address",
        operation_id: "depositAddress",
        summary: "The account's deposit address for a coin: assigned on the first call, the same on every later one.",
        tag: "Wallet",
        access: Access::UserData,
        weight: "10",
        params: &[COIN, NETWORK],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: deposit_address_extra,
        response: deposit_address,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/capital/deposit/hisrec",
        operation_id: "depositHistory",
        summary: "The account's deposits, newest first: seen on chain and not credited yet (status 0), credited (1), taken back by a chain reorganisation (7).",
        tag: "Wallet",
        access: Access::UserData,
        weight: "1",
        params: &[
            COIN_OPT,
            p(
                "status",
                Kind::Integer,
                false,
                "Only deposits in this status: 0 pending, 1 credited, 7 reversed.",
            ),
            p(
                "startTime",
                Kind::Integer,
                false,
                "From this time (ms; credit time, or now for a pending deposit). Default: no bound (Binance: 90 days ago).",
            ),
            p(
                "endTime",
                Kind::Integer,
                false,
                "Up to this time (ms). Default: no bound.",
            ),
            OFFSET,
            WALLET_LIMIT,
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: deposit_history,
    },
    Operation {
        method: "POST",
        path: "/sapi/v1/capital/withdraw/apply",
        operation_id: "withdraw",
        summary: "Withdraw to a chain address: the amount (the fee included) is held at once. Idempotent per `withdrawOrderId`, or per signed request without one.",
        tag: "Wallet",
        access: Access::Withdraw,
        weight: "900 (Binance counts it against the account; kura against the address's request weight)",
        params: &[
            COIN,
            p(
                "address",
                Kind::Address,
                true,
                "The destination, an address of the coin's network (SegWit).",
            ),
            p(
                "amount",
                Kind::Decimal,
                true,
                "What leaves the balance, the withdrawal fee included, at most the asset's decimals.",
            ),
            NETWORK,
            p(
                "withdrawOrderId",
                Kind::WithdrawOrderId,
                false,
                "The client's id of the withdrawal: a request repeating it answers the same withdrawal when coin, amount and address agree (-1130 when they do not).",
            ),
            p("addressTag", Kind::Text, false, "Accepted and ignored (no memos on this network)."),
            p("name", Kind::Text, false, "Accepted and ignored."),
            p("walletType", Kind::Text, false, "Accepted and ignored (one spot wallet)."),
            p("transactionFeeFlag", Kind::Text, false, "Accepted and ignored (the fee is always in `amount`)."),
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: withdraw_extra,
        response: withdraw,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/capital/withdraw/history",
        operation_id: "withdrawHistory",
        summary: "The account's withdrawals, newest first.",
        tag: "Wallet",
        access: Access::UserData,
        weight: "10 (Binance documents 18000 per IP; kura counts 10)",
        params: &[
            COIN_OPT,
            WITHDRAW_ORDER_ID,
            p(
                "status",
                Kind::Integer,
                false,
                "Only withdrawals in this status: 1 cancelled, 2 awaiting approval, 4 processing, 6 completed.",
            ),
            OFFSET,
            WALLET_LIMIT,
            p(
                "startTime",
                Kind::Integer,
                false,
                "From this request time (ms). Default: no bound (Binance: 90 days ago).",
            ),
            p(
                "endTime",
                Kind::Integer,
                false,
                "Up to this request time (ms). Default: no bound.",
            ),
            p(
                "idList",
                Kind::IdList,
                false,
                "Only these withdrawal ids, separated by commas (at most 1000).",
            ),
        ],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: withdraw_history,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/system/status",
        operation_id: "systemStatus",
        summary: "Whether the exchange is in normal operation.",
        tag: "Account",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: system_status,
    },
    Operation {
        method: "GET",
        path: "/fapi/v1/exchangeInfo",
        operation_id: "futuresExchangeInfo",
        summary: "No USD-M futures markets (a stub for clients that ask).",
        tag: "Stubs",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: empty_exchange_info,
    },
    Operation {
        method: "GET",
        path: "/dapi/v1/exchangeInfo",
        operation_id: "deliveryExchangeInfo",
        summary: "No COIN-M futures markets (a stub for clients that ask).",
        tag: "Stubs",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: empty_exchange_info,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/margin/allPairs",
        operation_id: "marginPairs",
        summary: "No cross-margin pairs (a stub for clients that ask).",
        tag: "Stubs",
        access: Access::UserData,
        weight: "1",
        params: &[],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: empty_array,
    },
    Operation {
        method: "GET",
        path: "/sapi/v1/margin/isolated/allPairs",
        operation_id: "isolatedMarginPairs",
        summary: "No isolated-margin pairs (a stub for clients that ask).",
        tag: "Stubs",
        access: Access::UserData,
        weight: "1",
        params: &[],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: none,
        response: empty_array,
    },
    Operation {
        method: "GET",
        path: "/kura/v1/solvency",
        operation_id: "solvency",
        summary: "kura's proof of solvency: the newest published report (or epoch `epoch`'s) and the list of published epochs. Each report gives, per asset, the por/v1 liabilities root and total, the reserves reconciled at the cut's block and the journal record that logged the roots.",
        tag: "Solvency",
        access: Access::Public,
        weight: "2",
        params: &[EPOCH],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: epoch_extra,
        response: solvency_report,
    },
    Operation {
        method: "GET",
        path: "/kura/v1/solvency/proof",
        operation_id: "solvencyProof",
        summary: "The caller's own por/v1 inclusion proofs, one per asset, in the newest published epoch (or epoch `epoch`). Check them with `kura solvency verify` or `tools/verify/por_verify.py` against the published report.",
        tag: "Solvency",
        access: Access::UserData,
        weight: "20",
        params: &[EPOCH],
        reads_request: true,
        uses: Uses::Node,
        rejects: None,
        places_order: false,
        extra: solvency_proof_extra,
        response: solvency_proof,
    },
    Operation {
        method: "GET",
        path: PATH,
        operation_id: "openapi",
        summary: "This document.",
        tag: "Meta",
        access: Access::Public,
        weight: "1",
        params: &[],
        reads_request: false,
        uses: Uses::Nothing,
        rejects: None,
        places_order: false,
        extra: none,
        response: any_object,
    },
];

// ---- failures ----------------------------------------------------------------------

/// Every engine rejection (the engine keeps [`Reject::ALL`] next to an exhaustive match).
fn all_rejects() -> Vec<Reject> {
    Reject::ALL.to_vec()
}

/// Every authentication failure of a signed request. The match stops compiling when a
/// variant is added.
pub fn auth_failures() -> Vec<AuthError> {
    let all = vec![
        AuthError::MissingApiKey,
        AuthError::BadApiKeyFormat,
        AuthError::UnknownApiKey,
        AuthError::KeyDisabled,
        AuthError::IpNotAllowed,
        AuthError::PermissionDenied,
        AuthError::BadSignature,
        AuthError::TimestampAhead,
        AuthError::TimestampExpired,
        AuthError::RecvWindowTooLarge,
        AuthError::Param(ParamError::Missing {
            name: "signature".to_owned(),
        }),
        AuthError::Param(ParamError::Duplicate),
    ];
    for e in &all {
        match e {
            AuthError::MissingApiKey
            | AuthError::BadApiKeyFormat
            | AuthError::UnknownApiKey
            | AuthError::KeyDisabled
            | AuthError::IpNotAllowed
            | AuthError::PermissionDenied
            | AuthError::BadSignature
            | AuthError::TimestampAhead
            | AuthError::TimestampExpired
            | AuthError::RecvWindowTooLarge
            | AuthError::Param(_) => {}
        }
    }
    all
}

/// The failures of reading any request's parameters at all.
fn request_failures() -> Vec<Failure> {
    vec![
        ParamError::TooLarge.into(),
        ParamError::TooMany.into(),
        ParamError::Duplicate.into(),
        ParamError::IllegalChars {
            name: None,
            pattern: None,
        }
        .into(),
    ]
}

/// The failures one parameter can cause.
pub fn param_failures(param: &Param) -> Vec<Failure> {
    let name = param.name.to_owned();
    let illegal = |pattern: Option<&'static str>| ParamError::IllegalChars {
        name: Some(name.clone()),
        pattern,
    };
    let invalid = || ParamError::InvalidValue { name: name.clone() };
    // A broken escape or a control character in any value.
    let mut out: Vec<ParamError> = vec![illegal(None)];
    if param.required {
        out.push(ParamError::Missing { name: name.clone() });
    }
    let integer = |out: &mut Vec<ParamError>| {
        out.push(illegal(Some(crate::params::INTEGER_PATTERN)));
        out.push(ParamError::Overflow { name: name.clone() });
    };
    match param.kind {
        Kind::Symbol => {
            out.push(illegal(Some(crate::params::SYMBOL_PATTERN)));
            out.push(ParamError::UnknownSymbol);
        }
        Kind::Symbols => {
            out.push(illegal(Some(crate::http::SYMBOLS_PATTERN)));
            out.push(ParamError::UnknownSymbol);
            out.push(ParamError::BadCombination);
        }
        Kind::Integer | Kind::Timestamp | Kind::RecvWindow => integer(&mut out),
        Kind::Limit { .. } => {
            integer(&mut out);
            out.push(invalid());
        }
        Kind::Decimal => {
            for error in [
                DecimalError::Empty,
                DecimalError::TooLong,
                DecimalError::BadCharacter,
                DecimalError::TooPrecise,
                DecimalError::Overflow,
            ] {
                out.push(ParamError::BadDecimal {
                    name: name.clone(),
                    error,
                });
            }
        }
        Kind::Side => out.push(ParamError::InvalidSide),
        Kind::OrderType => {
            out.push(ParamError::InvalidOrderType);
            for kind in [
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ] {
                let raw = format!("type={kind}");
                if let Err(e) = Params::parse(raw.as_bytes(), b"").and_then(|ps| ps.order_type()) {
                    out.push(e);
                }
            }
        }
        Kind::TimeInForce => out.push(ParamError::InvalidTimeInForce),
        Kind::RespType | Kind::SelfTradePrevention | Kind::Bool => out.push(invalid()),
        Kind::Interval => out.push(ParamError::InvalidInterval),
        Kind::ClientOrderId => out.push(illegal(Some(crate::params::CLIENT_ORDER_ID_PATTERN))),
        Kind::Coin => {
            out.push(illegal(Some(crate::params::SYMBOL_PATTERN)));
            return out
                .into_iter()
                .map(Failure::from)
                .chain([WalletError::UnknownCoin.into()])
                .collect();
        }
        Kind::Network => {
            out.push(illegal(Some(crate::params::SYMBOL_PATTERN)));
            out.push(invalid());
        }
        Kind::Address => {
            return out
                .into_iter()
                .map(Failure::from)
                .chain([
                    WalletError::IllegalAddress("<why the chain refuses it>".to_owned()).into(),
                ])
                .collect();
        }
        Kind::WithdrawOrderId => out.push(illegal(Some(WITHDRAW_ORDER_ID_PATTERN))),
        Kind::IdList => out.push(illegal(Some(ID_LIST_PATTERN))),
        Kind::Text | Kind::Signature => {}
    }
    out.into_iter().map(Failure::from).collect()
}

/// The parameters every signed operation takes besides its own.
const SIGNING_PARAMS: [Param; 3] = [
    p(
        "timestamp",
        Kind::Timestamp,
        true,
        "The client's time (ms). Refused when 1000 ms or more ahead of the server, or older than `recvWindow`.",
    ),
    p(
        "recvWindow",
        Kind::RecvWindow,
        false,
        "How long after `timestamp` the request is still good (ms; default 5000, at most 60000).",
    ),
    p(
        "signature",
        Kind::Signature,
        true,
        "HMAC-SHA256 (hex) of the raw query string followed by the raw body, without this parameter; or, for an Ed25519 key, its signature in base64 (percent-encoded).",
    ),
];

impl Operation {
    /// Every parameter, the signing ones included.
    pub fn all_params(&self) -> Vec<Param> {
        let mut out = self.params.to_vec();
        if self.access != Access::Public {
            out.extend(SIGNING_PARAMS);
        }
        out
    }

    /// Every failure this operation can answer with.
    pub fn failures(&self) -> Vec<Failure> {
        // Admission runs before every handler.
        let mut out = vec![
            Failure::TooManyRequests,
            Failure::WeightLimit {
                limit: 6000,
                interval: "1 MINUTE",
            },
            Failure::Banned { until_ms: 0 },
        ];
        if self.places_order {
            out.push(Failure::TooManyOrders);
            out.push(Failure::OrderLimit {
                limit: 100,
                interval: "10 SECOND",
            });
        }
        if self.reads_request {
            out.extend(request_failures());
            for param in self.all_params() {
                out.extend(param_failures(&param));
            }
        }
        if self.access != Access::Public {
            out.extend(auth_failures().into_iter().map(Failure::Auth));
        }
        if self.uses == Uses::Node {
            out.extend([Failure::Internal, Failure::Unavailable, Failure::Busy]);
        }
        if let Some(op) = self.rejects {
            out.extend(
                all_rejects()
                    .into_iter()
                    .map(|reject| Failure::Reject { reject, op }),
            );
        }
        out.extend((self.extra)());
        out
    }

    /// The error answers of this operation: status → code → messages.
    pub fn errors(&self) -> BTreeMap<u16, BTreeMap<i32, BTreeSet<String>>> {
        let mut out: BTreeMap<u16, BTreeMap<i32, BTreeSet<String>>> = BTreeMap::new();
        for failure in self.failures() {
            let e = api_error(&failure);
            out.entry(e.status)
                .or_default()
                .entry(e.code)
                .or_default()
                .insert(e.msg.into_owned());
        }
        out
    }
}

// ---- schemas -----------------------------------------------------------------------

fn string() -> Value {
    json!({ "type": "string" })
}

fn uint() -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": 0 })
}

/// An id or a time (ms) in a request: Binance's LONG, non-negative.
fn id_or_time() -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn dec() -> Value {
    json!({ "type": "string", "pattern": DECIMAL_OUT_REGEX })
}

fn enumeration(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// An object whose listed properties are all always present.
fn object(fields: &[(&str, Value)]) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let required: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    json!({ "type": "object", "required": required, "properties": props })
}

const SIDES: &[&str] = &["BUY", "SELL"];
const ORDER_TYPES: &[&str] = &["LIMIT", "MARKET", "LIMIT_MAKER"];
const TIFS: &[&str] = &["GTC", "IOC", "FOK"];
const STATUSES: &[&str] = &[
    "NEW",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELED",
    "EXPIRED",
    "EXPIRED_IN_MATCH",
];
const STP_MODES: &[&str] = &["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"];

fn empty_object() -> Value {
    json!({ "type": "object", "maxProperties": 0 })
}

fn any_object() -> Value {
    json!({ "type": "object" })
}

fn empty_array() -> Value {
    json!({ "type": "array", "maxItems": 0 })
}

fn server_time() -> Value {
    object(&[("serverTime", uint())])
}

fn rate_limit() -> Value {
    object(&[
        (
            "rateLimitType",
            enumeration(&["REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS"]),
        ),
        ("interval", enumeration(&["SECOND", "MINUTE", "DAY"])),
        ("intervalNum", uint()),
        ("limit", uint()),
    ])
}

fn symbol_info() -> Value {
    let filter = json!({
        "type": "object",
        "required": ["filterType"],
        "properties": {
            "filterType": enumeration(&["PRICE_FILTER", "LOT_SIZE", "NOTIONAL"]),
            "minPrice": dec(), "maxPrice": dec(), "tickSize": dec(),
            "minQty": dec(), "maxQty": dec(), "stepSize": dec(),
            "minNotional": dec(), "maxNotional": dec(),
            "applyMinToMarket": boolean(), "applyMaxToMarket": boolean(),
            "avgPriceMins": uint(),
        },
    });
    object(&[
        ("symbol", string()),
        ("status", enumeration(&["TRADING", "BREAK"])),
        ("baseAsset", string()),
        ("baseAssetPrecision", uint()),
        ("quoteAsset", string()),
        ("quotePrecision", uint()),
        ("quoteAssetPrecision", uint()),
        ("baseCommissionPrecision", uint()),
        ("quoteCommissionPrecision", uint()),
        ("orderTypes", array(enumeration(ORDER_TYPES))),
        ("icebergAllowed", boolean()),
        ("ocoAllowed", boolean()),
        ("otoAllowed", boolean()),
        ("quoteOrderQtyMarketAllowed", boolean()),
        ("allowTrailingStop", boolean()),
        ("cancelReplaceAllowed", boolean()),
        ("amendAllowed", boolean()),
        ("isSpotTradingAllowed", boolean()),
        ("isMarginTradingAllowed", boolean()),
        ("filters", array(filter)),
        ("permissions", array(string())),
        ("permissionSets", array(array(string()))),
        ("defaultSelfTradePreventionMode", enumeration(STP_MODES)),
        (
            "allowedSelfTradePreventionModes",
            array(enumeration(STP_MODES)),
        ),
    ])
}

fn exchange_info() -> Value {
    object(&[
        ("timezone", enumeration(&["UTC"])),
        ("serverTime", uint()),
        ("rateLimits", array(rate_limit())),
        ("exchangeFilters", array(any_object())),
        ("symbols", array(symbol_info())),
    ])
}

fn empty_exchange_info() -> Value {
    object(&[
        ("timezone", enumeration(&["UTC"])),
        ("serverTime", uint()),
        ("rateLimits", empty_array()),
        ("exchangeFilters", empty_array()),
        ("symbols", empty_array()),
    ])
}

fn depth() -> Value {
    let level = json!({ "type": "array", "items": dec(), "minItems": 2, "maxItems": 2 });
    object(&[
        ("lastUpdateId", uint()),
        ("bids", array(level.clone())),
        ("asks", array(level)),
    ])
}

fn trades() -> Value {
    array(object(&[
        ("id", uint()),
        ("price", dec()),
        ("qty", dec()),
        ("quoteQty", dec()),
        ("time", uint()),
        ("isBuyerMaker", boolean()),
        ("isBestMatch", boolean()),
    ]))
}

fn agg_trades() -> Value {
    array(object(&[
        ("a", uint()),
        ("p", dec()),
        ("q", dec()),
        ("f", uint()),
        ("l", uint()),
        ("T", uint()),
        ("m", boolean()),
        ("M", boolean()),
    ]))
}

fn klines() -> Value {
    let row = json!({
        "type": "array",
        "description": "[openTime, open, high, low, close, volume, closeTime, quoteVolume, trades, takerBuyBaseVolume, takerBuyQuoteVolume, \"0\"]",
        "items": { "anyOf": [uint(), dec()] },
        "minItems": 12,
        "maxItems": 12,
    });
    array(row)
}

fn one_or_many(item: Value) -> Value {
    json!({ "oneOf": [item.clone(), array(item)] })
}

fn ticker_24hr() -> Value {
    one_or_many(object(&[
        ("symbol", string()),
        ("priceChange", dec()),
        ("priceChangePercent", dec()),
        ("weightedAvgPrice", dec()),
        ("prevClosePrice", dec()),
        ("lastPrice", dec()),
        ("lastQty", dec()),
        ("bidPrice", dec()),
        ("bidQty", dec()),
        ("askPrice", dec()),
        ("askQty", dec()),
        ("openPrice", dec()),
        ("highPrice", dec()),
        ("lowPrice", dec()),
        ("volume", dec()),
        ("quoteVolume", dec()),
        ("openTime", uint()),
        ("closeTime", uint()),
        (
            "firstId",
            json!({ "type": "integer", "format": "int64", "minimum": -1 }),
        ),
        (
            "lastId",
            json!({ "type": "integer", "format": "int64", "minimum": -1 }),
        ),
        ("count", uint()),
    ]))
}

fn ticker_price() -> Value {
    one_or_many(object(&[("symbol", string()), ("price", dec())]))
}

fn book_ticker() -> Value {
    one_or_many(object(&[
        ("symbol", string()),
        ("bidPrice", dec()),
        ("bidQty", dec()),
        ("askPrice", dec()),
        ("askQty", dec()),
    ]))
}

fn order_list_id() -> Value {
    json!({ "type": "integer", "enum": [-1] })
}

fn new_order() -> Value {
    let fill = object(&[
        ("price", dec()),
        ("qty", dec()),
        ("commission", dec()),
        ("commissionAsset", string()),
        ("tradeId", uint()),
    ]);
    json!({
        "type": "object",
        "description": "ACK: the first five fields; RESULT adds the order's state; FULL adds `fills`.",
        "required": ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime"],
        "properties": {
            "symbol": string(),
            "orderId": uint(),
            "orderListId": order_list_id(),
            "clientOrderId": string(),
            "transactTime": uint(),
            "price": dec(),
            "origQty": dec(),
            "executedQty": dec(),
            "origQuoteOrderQty": dec(),
            "cummulativeQuoteQty": dec(),
            "status": enumeration(STATUSES),
            "timeInForce": enumeration(TIFS),
            "type": enumeration(ORDER_TYPES),
            "side": enumeration(SIDES),
            "workingTime": uint(),
            "selfTradePreventionMode": enumeration(STP_MODES),
            "fills": array(fill),
        },
    })
}

fn rates() -> Value {
    object(&[("maker", dec()), ("taker", dec())])
}

fn test_order() -> Value {
    let commission = object(&[
        ("standardCommissionForOrder", rates()),
        ("specialCommissionForOrder", rates()),
        ("taxCommissionForOrder", rates()),
        (
            "discount",
            object(&[
                ("enabledForAccount", boolean()),
                ("enabledForSymbol", boolean()),
                ("discountAsset", string()),
                ("discount", dec()),
            ]),
        ),
    ]);
    json!({
        "description": "`{}`, or with computeCommissionRates=true the rates that would apply.",
        "oneOf": [empty_object(), commission],
    })
}

fn order_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("symbol", string()),
        ("orderId", uint()),
        ("orderListId", order_list_id()),
        ("clientOrderId", string()),
        ("price", dec()),
        ("origQty", dec()),
        ("executedQty", dec()),
        ("cummulativeQuoteQty", dec()),
        ("status", enumeration(STATUSES)),
        ("timeInForce", enumeration(TIFS)),
        ("type", enumeration(ORDER_TYPES)),
        ("side", enumeration(SIDES)),
        ("origQuoteOrderQty", dec()),
    ]
}

fn order() -> Value {
    let mut fields = order_fields();
    fields.extend([
        ("stopPrice", dec()),
        ("icebergQty", dec()),
        ("time", uint()),
        ("updateTime", uint()),
        ("isWorking", boolean()),
        ("workingTime", uint()),
    ]);
    object(&fields)
}

fn orders() -> Value {
    array(order())
}

fn cancelled_order() -> Value {
    let mut fields = order_fields();
    fields.extend([("origClientOrderId", string()), ("transactTime", uint())]);
    object(&fields)
}

fn cancelled_orders() -> Value {
    array(cancelled_order())
}

fn my_trades() -> Value {
    array(object(&[
        ("symbol", string()),
        ("id", uint()),
        ("orderId", uint()),
        ("orderListId", order_list_id()),
        ("price", dec()),
        ("qty", dec()),
        ("quoteQty", dec()),
        ("commission", dec()),
        ("commissionAsset", string()),
        ("time", uint()),
        ("isBuyer", boolean()),
        ("isMaker", boolean()),
        ("isBestMatch", boolean()),
    ]))
}

fn account() -> Value {
    object(&[
        ("makerCommission", uint()),
        ("takerCommission", uint()),
        ("buyerCommission", uint()),
        ("sellerCommission", uint()),
        (
            "commissionRates",
            object(&[
                ("maker", dec()),
                ("taker", dec()),
                ("buyer", dec()),
                ("seller", dec()),
            ]),
        ),
        ("canTrade", boolean()),
        ("canWithdraw", boolean()),
        ("canDeposit", boolean()),
        ("brokered", boolean()),
        ("requireSelfTradePrevention", boolean()),
        ("preventSor", boolean()),
        ("updateTime", uint()),
        ("accountType", enumeration(&["SPOT"])),
        (
            "balances",
            array(object(&[
                ("asset", string()),
                ("free", dec()),
                ("locked", dec()),
            ])),
        ),
        ("permissions", array(string())),
        ("uid", uint()),
    ])
}

fn capital_config() -> Value {
    let network = object(&[
        ("network", string()),
        ("coin", string()),
        ("name", string()),
        ("isDefault", boolean()),
        ("depositEnable", boolean()),
        ("withdrawEnable", boolean()),
        ("depositDesc", string()),
        ("withdrawDesc", string()),
        ("specialTips", string()),
        ("withdrawFee", dec()),
        ("withdrawMin", dec()),
        ("withdrawMax", dec()),
        ("withdrawIntegerMultiple", dec()),
        ("minConfirm", uint()),
        ("unLockConfirm", uint()),
        ("sameAddress", boolean()),
        ("busy", boolean()),
        ("resetAddressStatus", boolean()),
        ("addressRegex", string()),
        ("memoRegex", string()),
    ]);
    array(object(&[
        ("coin", string()),
        ("name", string()),
        ("free", dec()),
        ("locked", dec()),
        ("freeze", dec()),
        ("withdrawing", dec()),
        ("ipoing", dec()),
        ("ipoable", dec()),
        ("storage", dec()),
        ("isLegalMoney", boolean()),
        ("trading", boolean()),
        ("depositAllEnable", boolean()),
        ("withdrawAllEnable", boolean()),
        ("networkList", array(network)),
    ]))
}

fn deposit_address() -> Value {
    object(&[
        ("coin", string()),
        ("address", string()),
        ("tag", enumeration(&[""])),
        ("url", string()),
    ])
}

fn deposit_history() -> Value {
    array(object(&[
        ("id", string()),
        ("amount", dec()),
        ("coin", string()),
        ("network", string()),
        ("status", json!({ "type": "integer", "enum": [0, 1, 7] })),
        ("address", string()),
        ("addressTag", enumeration(&[""])),
        ("txId", string()),
        ("insertTime", uint()),
        ("transferType", json!({ "type": "integer", "enum": [0] })),
        (
            "confirmTimes",
            json!({ "type": "string", "pattern": "^[0-9]+/[0-9]+$" }),
        ),
        ("unlockConfirm", uint()),
        ("walletType", json!({ "type": "integer", "enum": [0] })),
    ]))
}

fn withdraw() -> Value {
    object(&[("id", string())])
}

fn withdraw_history() -> Value {
    let mut row = object(&[
        ("id", string()),
        ("amount", dec()),
        ("transactionFee", dec()),
        ("coin", string()),
        ("status", json!({ "type": "integer", "enum": [1, 2, 4, 6] })),
        ("address", string()),
        ("addressTag", enumeration(&[""])),
        ("txId", string()),
        (
            "applyTime",
            json!({ "type": "string", "pattern": UTC_TIME_REGEX }),
        ),
        ("network", string()),
        ("transferType", json!({ "type": "integer", "enum": [0] })),
        ("withdrawOrderId", string()),
        ("info", string()),
        ("confirmNo", uint()),
        ("walletType", json!({ "type": "integer", "enum": [0] })),
        ("txKey", string()),
    ]);
    // Only completed withdrawals (status 6) carry `completeTime`.
    if let Some(props) = row["properties"].as_object_mut() {
        props.insert(
            "completeTime".to_owned(),
            json!({ "type": "string", "pattern": UTC_TIME_REGEX }),
        );
    }
    array(row)
}

/// A solvency report (`kura-solvency/v1`); fields that may be null are left untyped.
fn solvency_report_object() -> Value {
    let asset = object(&[
        ("asset", string()),
        ("scale", uint()),
        ("customers", uint()),
        ("depth", uint()),
        ("ledger_seq", uint()),
        ("block_height", uint()),
        ("block_hash", string()),
        ("time_ms", uint()),
        ("por", any_object()),
        (
            "liabilities",
            object(&[("root_hash", string()), ("sum", uint()), ("amount", dec())]),
        ),
        (
            "status",
            enumeration(&["covered", "shortfall", "no on-chain reserves"]),
        ),
    ]);
    object(&[
        ("format", enumeration(&["kura-solvency/v1"])),
        ("epoch", uint()),
        ("created_ms", uint()),
        (
            "record",
            object(&[("seq", uint()), ("timestamp_ms", uint())]),
        ),
        ("assets", array(asset)),
    ])
}

fn solvency_report() -> Value {
    let epoch = object(&[
        ("epoch", uint()),
        ("record_seq", uint()),
        ("created_ms", uint()),
        ("assets", array(any_object())),
    ]);
    let mut out = object(&[("epochs", array(epoch))]);
    // `report` is absent while no epoch is published.
    if let Some(props) = out["properties"].as_object_mut() {
        props.insert("report".to_owned(), solvency_report_object());
    }
    out
}

fn solvency_proof() -> Value {
    object(&[
        ("format", enumeration(&["kura-solvency-proof/v1"])),
        ("epoch", uint()),
        ("record_seq", uint()),
        ("account_id", uint()),
        (
            "proofs",
            array(object(&[("asset", string()), ("proof", any_object())])),
        ),
    ])
}

fn system_status() -> Value {
    object(&[
        ("status", json!({ "type": "integer", "enum": [0, 1] })),
        ("msg", string()),
    ])
}

/// A parameter's schema.
fn param_schema(param: &Param) -> Value {
    match param.kind {
        Kind::Symbol => {
            json!({ "type": "string", "pattern": SYMBOL_REGEX, "example": EXAMPLE_SYMBOL })
        }
        Kind::Symbols => json!({
            "type": "string",
            "pattern": SYMBOLS_REGEX,
            "example": format!("[\"{EXAMPLE_SYMBOL}\"]"),
        }),
        Kind::Integer | Kind::Timestamp => id_or_time(),
        Kind::Limit { default, max } => json!({
            "type": "integer",
            "format": "int32",
            "minimum": 1,
            "maximum": max,
            "default": default,
        }),
        Kind::Decimal => json!({ "type": "string", "pattern": DECIMAL_REGEX }),
        Kind::Side => enumeration(SIDES),
        Kind::OrderType => enumeration(ORDER_TYPES),
        Kind::TimeInForce => enumeration(TIFS),
        Kind::RespType => enumeration(&["ACK", "RESULT", "FULL"]),
        Kind::SelfTradePrevention => enumeration(STP_MODES),
        Kind::Interval => {
            let mut names = vec!["1s"];
            names.extend(Interval::ALL.iter().map(|i| i.as_str()));
            json!({ "type": "string", "enum": names, "example": "1m" })
        }
        Kind::Bool => json!({ "type": "string", "enum": ["true", "false"], "default": "false" }),
        Kind::ClientOrderId => json!({ "type": "string", "pattern": CLIENT_ORDER_ID_REGEX }),
        Kind::Coin | Kind::Network => {
            json!({ "type": "string", "pattern": SYMBOL_REGEX, "example": "BTC" })
        }
        Kind::Address => json!({ "type": "string", "minLength": 1 }),
        Kind::WithdrawOrderId => json!({ "type": "string", "pattern": WITHDRAW_ORDER_ID_PATTERN }),
        Kind::IdList => json!({ "type": "string", "pattern": ID_LIST_PATTERN }),
        Kind::Text => json!({ "type": "string" }),
        Kind::RecvWindow => json!({
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "maximum": MAX_RECV_WINDOW_MS,
            "default": crate::auth::DEFAULT_RECV_WINDOW_MS,
        }),
        Kind::Signature => json!({ "type": "string", "minLength": 1 }),
    }
}

// ---- the document ------------------------------------------------------------------

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "A parameter, filter or business rule refused the request.",
        401 => "The API key is missing, malformed, unknown, disabled, not allowed from this address, or lacks the permission.",
        418 => "The client's address is banned for sending after 429s (`Retry-After` says for how long).",
        429 => "A request-weight or order-rate limit was reached (`Retry-After` says when to retry).",
        500 => "An internal error; the request may or may not have taken effect.",
        503 => "The node is overloaded and shed the request; it did not take effect.",
        _ => "An error.",
    }
}

fn error_response(status: u16, codes: &BTreeMap<i32, BTreeSet<String>>) -> Value {
    let mut text = String::from(status_text(status));
    text.push_str("\n\n| code | msg |\n|---|---|");
    for (code, msgs) in codes {
        for msg in msgs {
            text.push_str(&format!("\n| {code} | {} |", msg.replace('|', "\\|")));
        }
    }
    let enum_codes: Vec<i32> = codes.keys().copied().collect();
    json!({
        "description": text,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["code", "msg"],
                    "properties": {
                        "code": { "type": "integer", "enum": enum_codes },
                        "msg": string(),
                    },
                },
            },
        },
    })
}

fn parameter_object(param: &Param) -> Value {
    json!({
        "name": param.name,
        "in": "query",
        "required": param.required,
        "description": param.description,
        "schema": param_schema(param),
    })
}

fn form_body(params: &[Param]) -> Value {
    let props: Map<String, Value> = params
        .iter()
        .map(|p| {
            let mut s = param_schema(p);
            if let Value::Object(map) = &mut s {
                map.insert("description".to_owned(), json!(p.description));
            }
            (p.name.to_owned(), s)
        })
        .collect();
    let required: Vec<&str> = params
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name)
        .collect();
    json!({
        "required": true,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": { "type": "object", "required": required, "properties": props },
            },
        },
    })
}

fn operation_object(op: &Operation) -> Value {
    let mut o = Map::new();
    o.insert("operationId".to_owned(), json!(op.operation_id));
    o.insert("summary".to_owned(), json!(op.summary));
    o.insert("tags".to_owned(), json!([op.tag]));
    let security = match op.access {
        Access::Public => "none",
        Access::UserData => "USER_DATA (signed; a key with the `read` permission)",
        Access::Trade => "TRADE (signed; a key with the `trade` permission)",
        Access::Withdraw => {
            "WITHDRAW (signed; a key with the `withdraw` permission, used from an address on its IP allow-list)"
        }
    };
    o.insert(
        "description".to_owned(),
        json!(format!(
            "Security: {security}. Request weight: {}.",
            op.weight
        )),
    );
    o.insert("x-weight".to_owned(), json!(op.weight));
    let params = op.all_params();
    if op.method == "POST" {
        o.insert("requestBody".to_owned(), form_body(&params));
    } else if !params.is_empty() {
        o.insert(
            "parameters".to_owned(),
            Value::Array(params.iter().map(parameter_object).collect()),
        );
    }
    o.insert(
        "security".to_owned(),
        match op.access {
            Access::Public => json!([]),
            Access::UserData | Access::Trade | Access::Withdraw => json!([{ "ApiKey": [] }]),
        },
    );
    let mut responses = Map::new();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": "Success.",
            "content": { "application/json": { "schema": (op.response)() } },
        }),
    );
    for (status, codes) in op.errors() {
        responses.insert(status.to_string(), error_response(status, &codes));
    }
    o.insert("responses".to_owned(), Value::Object(responses));
    Value::Object(o)
}

fn build() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for op in OPERATIONS {
        paths
            .entry(op.path)
            .or_default()
            .insert(op.method.to_ascii_lowercase(), operation_object(op));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kura REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "kura's Binance-compatible spot REST API (v3 paths, plus the `sapi` wallet calls and the stubs clients ask for). Decimals are JSON strings at the asset's scale; ids and times (ms since the epoch) are JSON integers. Errors are `{\"code\": <negative Binance code>, \"msg\": <Binance's text>}`; each operation lists the codes it can answer with, per HTTP status.",
        },
        "tags": [
            { "name": "Market", "description": "Public market data." },
            { "name": "Trading", "description": "Orders and fills (signed)." },
            { "name": "Account", "description": "Balances, assets and status." },
            { "name": "Wallet", "description": "Deposit addresses, deposits and chain withdrawals (signed)." },
            { "name": "Stubs", "description": "Empty answers for clients that probe futures and margin." },
            { "name": "Solvency", "description": "kura's proofs of solvency: published reports and each customer's own inclusion proofs." },
            { "name": "Meta", "description": "This document." },
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": "The API key id. A signed request also carries `timestamp`, optionally `recvWindow`, and last `signature`: HMAC-SHA256 in hex of the raw query string followed by the raw form body (without the `signature` parameter), keyed with the key's secret; or, for an Ed25519 key, the base64 Ed25519 signature of the same bytes, percent-encoded.",
                },
            },
        },
    })
}

/// The document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| document().to_string());
    ([(CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}
