//! The Binance-compatible REST API over HTTP: [`router`] builds an axum router over any
//! [`Backend`]. Handlers parse with [`crate::params`], authenticate with
//! [`crate::auth::authenticate`], answer errors through the one table
//! ([`crate::errors::api_error`]) and never touch the sequencer, journal or SQLite
//! except through the backend.
//!
//! Every decimal goes out as a JSON string at its asset's scale (prices and quote
//! amounts at the quote asset's, quantities at the base asset's); ids and times are
//! JSON integers (ms since the epoch). Fees are charged in the quote asset.
//!
//! Consistency: the answer to a new order or a cancel is built from the engine's events
//! for that command; balances come from the engine ([`Backend::query`]) so they agree
//! with every answered command; history (orders, fills, trades, klines) comes from the
//! read model ([`Backend::read`]), which has caught up with every answered command.
//!
//! # Endpoints and the request weight each counts (see [`crate::limits`])
//!
//! | method | path | security | weight |
//! |---|---|---|---|
//! | GET | `/api/v3/ping` | none | 1 |
//! | GET | `/api/v3/time` | none | 1 |
//! | GET | `/api/v3/exchangeInfo` | none | 20 |
//! | GET | `/api/v3/depth` | none | 5 (limit ≤ 100), 25 (≤ 500), 50 (≤ 1000), 250 (≤ 5000) |
//! | GET | `/api/v3/trades` | none | 25 |
//! | GET | `/api/v3/aggTrades` | none | 4 |
//! | GET | `/api/v3/klines` | none | 2 |
//! | GET | `/api/v3/ticker/24hr` | none | 2 (one symbol, or 1–20 symbols); 40 (21–100); 80 (more, or all) |
//! | GET | `/api/v3/ticker/price` | none | 2 (one symbol), 4 (several or all) |
//! | GET | `/api/v3/ticker/bookTicker` | none | 2 (one symbol), 4 (several or all) |
//! | POST | `/api/v3/order` | TRADE | 1 (and 1 order) |
//! | POST | `/api/v3/order/test` | TRADE | 1 (20 with `computeCommissionRates`) |
//! | GET | `/api/v3/order` | USER_DATA | 4 |
//! | DELETE | `/api/v3/order` | TRADE | 1 |
//! | GET | `/api/v3/openOrders` | USER_DATA | 6 with a symbol, 80 without |
//! | DELETE | `/api/v3/openOrders` | TRADE | 1 |
//! | GET | `/api/v3/allOrders` | USER_DATA | 20 |
//! | GET | `/api/v3/myTrades` | USER_DATA | 20 (5 with `orderId`) |
//! | GET | `/api/v3/account` | USER_DATA | 20 |
//! | GET | `/sapi/v1/capital/config/getall` | USER_DATA | 10 |
//! | GET | `/sapi/v1/capital/deposit/address` | USER_DATA | 10 |
//! | GET | `/sapi/v1/capital/deposit/hisrec` | USER_DATA | 1 |
//! | POST | `/sapi/v1/capital/withdraw/apply` | WITHDRAW | 900 (Binance counts it per UID; kura counts it against the address's request weight) |
//! | GET | `/sapi/v1/capital/withdraw/history` | USER_DATA | 10 (Binance documents 18000 per IP; kura counts 10) |
//! | GET | `/sapi/v1/system/status` | none | 1 |
//! | GET | `/fapi/v1/exchangeInfo`, `/dapi/v1/exchangeInfo` | none | 1 (empty stubs) |
//! | GET | `/sapi/v1/margin/allPairs`, `/sapi/v1/margin/isolated/allPairs` | USER_DATA | 1 (always `[]`) |
//! | GET | `/kura/v1/solvency` | none | 2 (kura's proof-of-solvency reports: `solvency`) |
//! | GET | `/kura/v1/solvency/proof` | USER_DATA | 20 (the caller's own inclusion proofs) |
//! | GET | `/openapi.json` | none | 1 (this API as an OpenAPI 3 document: [`crate::openapi`]) |
//!
//! The wallet calls (`capital/deposit/*`, `capital/withdraw/*`) are in [`wallet`]'s
//! documentation: deposit addresses and withdrawals need the chain the node follows
//! ([`Backend::chain`]); WITHDRAW is a key with the `withdraw` permission and an IP
//! allow-list.
//!
//! Anything else is 404 (a known path with another method, 405) with a JSON error body.
//!
//! Client address: axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`). Every command carries
//! `Origin::Api { key_id, ip, user_agent }` (user agent cut to 256 bytes).
//!
//! Admission ([`crate::limits`], installed by [`router_with`]): request weight per
//! address and order counts per key, with `X-MBX-USED-WEIGHT-1M` on every response,
//! 429/418 with `Retry-After` over the limits; cancels are never shed.
//!
//! Known limitations: no order lists (OCO), amend, or cancel-replace endpoints;
//! `aggTrades` gives one aggregate per trade; `selfTradePreventionMode` of an order is
//! not in the read model, so history rows omit it.

mod account;
mod market;
mod solvency;
mod stubs;
mod trading;
pub mod wallet;

use crate::auth::{self, ApiKeyId, Permission, SignedRequest, API_KEY_HEADER};
use crate::backend::{Backend, BackendError};
use crate::errors::{api_error, ApiError, Failure, ParamError};
use crate::params::{Params, MAX_BODY_LEN};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use kura_engine::codec::{ip_to_bytes, Origin, USER_AGENT_MAX};
use kura_engine::{Engine, MarketSpec};
use kura_units::{MarketId, PriceTicks, QtyLots, Scale, UserId};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How [`router_with`] is configured; the default is Binance's limits.
#[derive(Clone, Debug, Default)]
pub struct RouterConfig {
    /// Request-weight and order-rate limits.
    pub limits: crate::limits::Limits,
}

/// Build the REST router over `backend`, with the default [`RouterConfig`].
pub fn router<B: Backend>(backend: B) -> Router {
    router_with(backend, RouterConfig::default())
}

/// Build the REST router over `backend`; every request passes admission
/// ([`crate::limits`]) first.
pub fn router_with<B: Backend>(backend: B, config: RouterConfig) -> Router {
    let limiter = std::sync::Arc::new(crate::limits::Limiter::new(config.limits.clone()));
    router_with_limiter(backend, config, limiter)
}

/// [`router_with`], counting in `limiter` (which the server's listener also consults,
/// to refuse a banned address's connections at once). `limiter` should have been made
/// from `config.limits`.
pub fn router_with_limiter<B: Backend>(
    backend: B,
    config: RouterConfig,
    limiter: std::sync::Arc<crate::limits::Limiter>,
) -> Router {
    let advertised = axum::Extension(config.limits.clone());
    let hub = crate::ws::Hub::under_admission(crate::ws::WsConfig::default(), limiter.clone());
    let gate = crate::limits::Gate::new(backend.clone(), limiter);
    ROUTES
        .iter()
        .fold(Router::new(), |r, (method, path)| {
            r.route(path, endpoint::<B>(method, path))
        })
        .merge(crate::ws::routes_with(backend.clone(), hub))
        .fallback(stubs::not_found)
        .method_not_allowed_fallback(stubs::method_not_allowed)
        .layer(advertised)
        .with_state(backend)
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::limits::admit::<B>,
        ))
}

/// Every REST route the router serves, as (method, path). [`router_with`] registers
/// exactly these, each through `endpoint`, and the OpenAPI document served at
/// [`crate::openapi::PATH`] is tested against this list in both directions.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/api/v3/ping"),
    (Method::GET, "/api/v3/time"),
    (Method::GET, "/api/v3/exchangeInfo"),
    (Method::GET, "/api/v3/depth"),
    (Method::GET, "/api/v3/trades"),
    (Method::GET, "/api/v3/aggTrades"),
    (Method::GET, "/api/v3/klines"),
    (Method::GET, "/api/v3/ticker/24hr"),
    (Method::GET, "/api/v3/ticker/price"),
    (Method::GET, "/api/v3/ticker/bookTicker"),
    (Method::POST, "/api/v3/order"),
    (Method::GET, "/api/v3/order"),
    (Method::DELETE, "/api/v3/order"),
    (Method::POST, "/api/v3/order/test"),
    (Method::GET, "/api/v3/openOrders"),
    (Method::DELETE, "/api/v3/openOrders"),
    (Method::GET, "/api/v3/allOrders"),
    (Method::GET, "/api/v3/myTrades"),
    (Method::GET, "/api/v3/account"),
    (Method::GET, "/sapi/v1/capital/config/getall"),
    (Method::GET, "/sapi/v1/capital/deposit/address"),
    (Method::GET, "/sapi/v1/capital/deposit/hisrec"),
    (Method::POST, "/sapi/v1/capital/withdraw/apply"),
    (Method::GET, "/sapi/v1/capital/withdraw/history"),
    (Method::GET, "/sapi/v1/system/status"),
    (Method::GET, "/fapi/v1/exchangeInfo"),
    (Method::GET, "/dapi/v1/exchangeInfo"),
    (Method::GET, "/sapi/v1/margin/allPairs"),
    (Method::GET, "/sapi/v1/margin/isolated/allPairs"),
    (Method::GET, "/kura/v1/solvency"),
    (Method::GET, "/kura/v1/solvency/proof"),
    (Method::GET, crate::openapi::PATH),
];

/// The handler of one entry of [`ROUTES`].
///
/// # Panics
/// On a (method, path) with no handler: a route added to [`ROUTES`] without one here
/// is a bug, and building the router (every router test, every server start) stops at
/// it.
fn endpoint<B: Backend>(method: &Method, path: &str) -> MethodRouter<B> {
    match (method.as_str(), path) {
        ("GET", "/api/v3/ping") => get(market::ping),
        ("GET", "/api/v3/time") => get(market::time::<B>),
        ("GET", "/api/v3/exchangeInfo") => get(market::exchange_info::<B>),
        ("GET", "/api/v3/depth") => get(market::depth::<B>),
        ("GET", "/api/v3/trades") => get(market::trades::<B>),
        ("GET", "/api/v3/aggTrades") => get(market::agg_trades::<B>),
        ("GET", "/api/v3/klines") => get(market::klines::<B>),
        ("GET", "/api/v3/ticker/24hr") => get(market::ticker_24hr::<B>),
        ("GET", "/api/v3/ticker/price") => get(market::ticker_price::<B>),
        ("GET", "/api/v3/ticker/bookTicker") => get(market::book_ticker::<B>),
        ("POST", "/api/v3/order") => post(trading::new_order::<B>),
        ("GET", "/api/v3/order") => get(trading::query_order::<B>),
        ("DELETE", "/api/v3/order") => delete(trading::cancel_order::<B>),
        ("POST", "/api/v3/order/test") => post(trading::test_order::<B>),
        ("GET", "/api/v3/openOrders") => get(trading::open_orders::<B>),
        ("DELETE", "/api/v3/openOrders") => delete(trading::cancel_open_orders::<B>),
        ("GET", "/api/v3/allOrders") => get(trading::all_orders::<B>),
        ("GET", "/api/v3/myTrades") => get(trading::my_trades::<B>),
        ("GET", "/api/v3/account") => get(account::account::<B>),
        ("GET", "/sapi/v1/capital/config/getall") => get(account::capital_config::<B>),
        ("GET", "/sapi/v1/capital/deposit/address") => get(wallet::deposit_address::<B>),
        ("GET", "/sapi/v1/capital/deposit/hisrec") => get(wallet::deposit_history::<B>),
        ("POST", "/sapi/v1/capital/withdraw/apply") => post(wallet::withdraw::<B>),
        ("GET", "/sapi/v1/capital/withdraw/history") => get(wallet::withdraw_history::<B>),
        ("GET", "/sapi/v1/system/status") => get(account::system_status),
        ("GET", "/fapi/v1/exchangeInfo" | "/dapi/v1/exchangeInfo") => {
            get(stubs::futures_exchange_info::<B>)
        }
        ("GET", "/sapi/v1/margin/allPairs" | "/sapi/v1/margin/isolated/allPairs") => {
            get(stubs::margin_pairs::<B>)
        }
        ("GET", "/kura/v1/solvency") => get(solvency::report::<B>),
        ("GET", "/kura/v1/solvency/proof") => get(solvency::proof::<B>),
        ("GET", crate::openapi::PATH) => get(crate::openapi::serve),
        _ => panic!("http::ROUTES lists {method} {path}, which has no handler in http::endpoint"),
    }
}

// ---- WebSocket streams (crate::ws) ----------------------------------------------
// `router_with` merges `crate::ws::routes` (`/ws`, `/ws/{name}`, `/stream`,
// `/ws-api/v3`, `/api/v3/userDataStream`); these renderers are shared with the streams
// so that both APIs print the same JSON.

pub(crate) use market::{kline_json, ticker_json, trade_json, DAY_MS};
pub(crate) use trading::{budget_spent, side_name, tif_name};

// ---- errors ----------------------------------------------------------------------

/// An error answer: HTTP status and Binance's `{"code":…,"msg":…}`, and whether it
/// refuses a forged or anonymous request (which admission counts toward a ban).
#[derive(Debug)]
pub(crate) struct Fail(ApiError, bool);

/// Marks a response that refused a request admission counts toward its address's ban
/// ([`crate::limits`]): one refused for its credentials (no API key, a malformed or
/// unknown one, a bad signature), one over the size limits (a query over 8 KiB, a body
/// over 16 KiB, too many parameters: no client of this API sends those), or a
/// WebSocket connection over the per-address limits. A disabled key, an address off
/// the allow-list, a stale timestamp or a missing parameter are an honest client's
/// mistakes and are not marked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offence;

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(CONTENT_TYPE, "application/json;charset=UTF-8")],
            self.0.to_json(),
        )
            .into_response();
        if self.1 {
            response.extensions_mut().insert(Offence);
        }
        response
    }
}

impl From<Failure> for Fail {
    fn from(f: Failure) -> Fail {
        let forged = matches!(
            f,
            Failure::Auth(
                auth::AuthError::MissingApiKey
                    | auth::AuthError::BadApiKeyFormat
                    | auth::AuthError::UnknownApiKey
                    | auth::AuthError::BadSignature
            ) | Failure::Param(ParamError::TooLarge | ParamError::TooMany)
        );
        Fail(api_error(&f), forged)
    }
}

impl From<ParamError> for Fail {
    fn from(e: ParamError) -> Fail {
        Failure::Param(e).into()
    }
}

impl From<crate::errors::WalletError> for Fail {
    fn from(e: crate::errors::WalletError) -> Fail {
        Failure::Wallet(e).into()
    }
}

impl From<auth::AuthError> for Fail {
    fn from(e: auth::AuthError) -> Fail {
        Failure::Auth(e).into()
    }
}

impl From<BackendError> for Fail {
    fn from(e: BackendError) -> Fail {
        let failure = match &e {
            BackendError::Busy => Failure::Busy,
            BackendError::Stopped(_) | BackendError::ReadModel(_) => {
                tracing::error!(error = %e, "api: backend unavailable");
                Failure::Unavailable
            }
            BackendError::Invalid(_) => {
                tracing::error!(error = %e, "api: command refused by the journal");
                Failure::Internal
            }
        };
        failure.into()
    }
}

impl From<kura_store::StoreError> for Fail {
    fn from(e: kura_store::StoreError) -> Fail {
        tracing::error!(error = %e, "api: read model query failed");
        Failure::Unavailable.into()
    }
}

pub(crate) type HttpResult = Result<Response, Fail>;

/// A JSON success answer.
pub(crate) fn json(value: serde_json::Value) -> HttpResult {
    Ok(axum::Json(value).into_response())
}

// ---- the request as handlers see it ----------------------------------------------

/// What every handler reads from a request: raw query and body (signatures are over
/// the raw bytes), the API key header, the client address and user agent.
#[derive(Debug)]
pub(crate) struct Req {
    query: Vec<u8>,
    body: Vec<u8>,
    api_key: Option<Vec<u8>>,
    ip: IpAddr,
    user_agent: String,
    /// Told when the request's signature is correct (absent without admission).
    vouch: Option<crate::limits::Vouch>,
}

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = Fail;

    async fn from_request(req: Request, state: &S) -> Result<Req, Fail> {
        let (mut parts, body) = req.into_parts();
        let ip = match parts.extensions.get::<crate::limits::ClientIp>() {
            Some(c) => c.0,
            None => match ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state).await {
                Ok(ConnectInfo(addr)) => addr.ip(),
                Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        };
        let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
        let api_key = parts
            .headers
            .get(API_KEY_HEADER)
            .map(|v| v.as_bytes().to_vec());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .map(|v| truncate_utf8(&String::from_utf8_lossy(v.as_bytes()), USER_AGENT_MAX))
            .unwrap_or_default();
        let vouch = parts.extensions.get::<crate::limits::Vouch>().cloned();
        let body = axum::body::to_bytes(body, MAX_BODY_LEN)
            .await
            .map_err(|_| Fail::from(ParamError::TooLarge))?
            .to_vec();
        Ok(Req {
            query,
            body,
            api_key,
            ip,
            user_agent,
            vouch,
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Req {
    /// Parameters of an unsigned endpoint.
    fn params(&self) -> Result<Params, Fail> {
        Ok(Params::parse(&self.query, &self.body)?)
    }
}

/// An authenticated caller.
#[derive(Debug)]
pub(crate) struct Caller {
    user: UserId,
    params: Params,
    origin: Origin,
}

/// Every check of a signed endpoint needing `permission`.
async fn authenticate<B: Backend>(
    backend: &B,
    req: &Req,
    permission: Permission,
) -> Result<Caller, Fail> {
    let record = ApiKeyId::parse(req.api_key.as_deref())
        .ok()
        .and_then(|id| backend.api_key(&id));
    let signed = SignedRequest {
        api_key: req.api_key.as_deref(),
        raw_query: &req.query,
        raw_body: &req.body,
        client_ip: req.ip,
    };
    let authenticated = auth::authenticate(
        &signed,
        |_| record.as_ref(),
        backend.master_key(),
        permission,
        backend.now_ms(),
    )?;
    if let Some(v) = &req.vouch {
        v.set();
    }
    // `authenticate` succeeded, so it found the record.
    let key_id = record.map(|r| r.number).ok_or(Failure::Internal)?;
    Ok(Caller {
        user: authenticated.user,
        params: authenticated.params,
        origin: Origin::Api {
            key_id,
            ip: ip_to_bytes(req.ip),
            user_agent: req.user_agent.clone(),
        },
    })
}

// ---- markets and decimals --------------------------------------------------------

/// One market with what formatting and parsing need, copied out of the engine.
#[derive(Clone, Debug)]
pub(crate) struct MarketInfo {
    id: MarketId,
    symbol: String,
    base: String,
    quote: String,
    base_scale: Scale,
    quote_scale: Scale,
    spec: MarketSpec,
    halted: bool,
}

impl MarketInfo {
    fn of(engine: &Engine, id: MarketId) -> Option<MarketInfo> {
        let spec = engine.market_spec(id)?;
        Some(MarketInfo {
            id,
            symbol: spec.symbol.clone(),
            base: engine.asset_symbol(spec.base)?.to_owned(),
            quote: engine.asset_symbol(spec.quote)?.to_owned(),
            base_scale: engine.asset_scale(spec.base)?,
            quote_scale: engine.asset_scale(spec.quote)?,
            spec: spec.clone(),
            halted: engine.market_halted(id).is_some(),
        })
    }

    /// Every market, by id.
    fn all(engine: &Engine) -> Vec<MarketInfo> {
        (0..engine.market_count())
            .filter_map(|i| u32::try_from(i).ok())
            .filter_map(|i| MarketInfo::of(engine, MarketId(i)))
            .collect()
    }

    /// A price in ticks as a decimal of the quote asset.
    fn price(&self, p: PriceTicks) -> String {
        decimal(
            u128::from(p.get()) * u128::from(self.spec.tick.get()),
            self.quote_scale,
        )
    }

    /// A quantity in lots as a decimal of the base asset.
    fn qty(&self, q: QtyLots) -> String {
        decimal(
            u128::from(q.get()) * u128::from(self.spec.lot.get()),
            self.base_scale,
        )
    }

    /// Quote minor units as a decimal.
    fn quote_amount(&self, a: u128) -> String {
        decimal(a, self.quote_scale)
    }
}

/// The market named by a symbol (-1121 if none).
async fn market_info<B: Backend>(backend: &B, symbol: &str) -> Result<MarketInfo, Fail> {
    found_market(backend.query(market_lookup(symbol)).await?)
}

/// The engine query that finds the market named `symbol`.
fn market_lookup(symbol: &str) -> impl FnOnce(&Engine) -> Option<MarketInfo> + Send + 'static {
    let symbol = symbol.to_owned();
    move |e| {
        e.market_by_symbol(&symbol)
            .and_then(|id| MarketInfo::of(e, id))
    }
}

/// A looked-up market, or "invalid symbol".
fn found_market(found: Option<MarketInfo>) -> Result<MarketInfo, Fail> {
    found.ok_or_else(|| ParamError::UnknownSymbol.into())
}

/// Every market.
async fn all_markets<B: Backend>(backend: &B) -> Result<Vec<MarketInfo>, Fail> {
    Ok(backend.query(MarketInfo::all).await?)
}

/// `minor` at `scale` as a decimal with exactly `scale` fraction digits.
pub(crate) fn decimal(minor: u128, scale: Scale) -> String {
    let places = usize::from(scale.places());
    if places == 0 {
        return minor.to_string();
    }
    let factor = u128::from(scale.factor());
    format!(
        "{}.{:0width$}",
        minor / factor,
        minor % factor,
        width = places
    )
}

/// A signed decimal (`-12.50`): `magnitude` with a sign.
pub(crate) fn signed_decimal(negative: bool, magnitude: u128, scale: Scale) -> String {
    let text = decimal(magnitude, scale);
    if negative && magnitude != 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// `limit`: default when absent, at most `max` (larger values are capped, as Binance
/// does); zero is refused.
fn limit_param(params: &Params, default: u32, max: u32) -> Result<u32, Fail> {
    match params.u64_opt("limit")? {
        None => Ok(default),
        Some(0) => Err(ParamError::InvalidValue {
            name: "limit".to_owned(),
        }
        .into()),
        Some(n) => Ok(u32::try_from(n).unwrap_or(max).min(max)),
    }
}

/// Binance's legal range for the `symbols` parameter, quoted in its -1100 message.
pub const SYMBOLS_PATTERN: &str =
    "^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$";

/// Which markets a market-data request is about.
#[derive(Debug)]
enum Selection {
    One(String),
    Many(Vec<String>),
    All,
}

fn selection(params: &Params) -> Result<Selection, Fail> {
    match (params.optional("symbol"), params.optional("symbols")) {
        (Some(_), Some(_)) => Err(ParamError::BadCombination.into()),
        (Some(_), None) => Ok(Selection::One(params.symbol("symbol")?.to_owned())),
        (None, Some(text)) => {
            let bad = || ParamError::IllegalChars {
                name: Some("symbols".to_owned()),
                pattern: Some(SYMBOLS_PATTERN),
            };
            let list: Vec<String> = serde_json::from_str(text).map_err(|_| bad())?;
            let ok = list.iter().all(|s| {
                !s.is_empty()
                    && s.len() <= 20
                    && s.bytes().all(|b| {
                        b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b)
                    })
            });
            if !ok {
                return Err(bad().into());
            }
            Ok(Selection::Many(list))
        }
        (None, None) => Ok(Selection::All),
    }
}

/// The markets a selection names, in the order named (-1121 for an unknown one).
fn select(markets: Vec<MarketInfo>, sel: &Selection) -> Result<Vec<MarketInfo>, Fail> {
    let find = |s: &str| {
        markets
            .iter()
            .find(|m| m.symbol == s)
            .cloned()
            .ok_or_else(|| Fail::from(ParamError::UnknownSymbol))
    };
    match sel {
        Selection::All => Ok(markets.clone()),
        Selection::One(s) => Ok(vec![find(s)?]),
        Selection::Many(list) => list.iter().map(|s| find(s)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        let s = |p| Scale::new(p).expect("scale");
        assert_eq!(decimal(0, s(8)), "0.00000000");
        assert_eq!(decimal(123_456_789, s(8)), "1.23456789");
        assert_eq!(decimal(15_000_000, s(0)), "15000000");
        assert_eq!(decimal(5, s(2)), "0.05");
        assert_eq!(
            decimal(u128::from(u64::MAX) * 10, s(2)),
            "1844674407370955161.50"
        );
        assert_eq!(signed_decimal(true, 250, s(2)), "-2.50");
        assert_eq!(signed_decimal(true, 0, s(2)), "0.00");
    }

    #[test]
    fn user_agent_is_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = truncate_utf8(&long, 256);
        assert_eq!(cut.len(), 256);
        let odd = format!("a{long}");
        assert_eq!(truncate_utf8(&odd, 256).len(), 255);
        assert_eq!(truncate_utf8("ccxt/4.5.90", 256), "ccxt/4.5.90");
    }
}
