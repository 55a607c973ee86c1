//! Stubs that let an unmodified CCXT `binance` load its markets against kura (research
//! §1.3): the futures exchange infos (empty) and the margin pair lists (empty), plus
//! the JSON answers for unknown paths and methods.

use super::{authenticate, json, Fail, HttpResult, Req};
use crate::auth::Permission;
use crate::backend::Backend;
use crate::errors::Failure;
use axum::extract::State;
use serde_json::json;

/// `/fapi/v1/exchangeInfo` and `/dapi/v1/exchangeInfo`: no futures markets.
pub(super) async fn futures_exchange_info<B: Backend>(State(b): State<B>) -> HttpResult {
    json(json!({
        "timezone": "UTC",
        "serverTime": b.now_ms(),
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [],
    }))
}

/// `/sapi/v1/margin/allPairs` and `/sapi/v1/margin/isolated/allPairs` (signed): no
/// margin trading.
pub(super) async fn margin_pairs<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    authenticate(&b, &req, Permission::Read).await?;
    json(json!([]))
}

pub(super) async fn not_found() -> Fail {
    Failure::NotFound.into()
}

pub(super) async fn method_not_allowed() -> Fail {
    Failure::MethodNotAllowed.into()
}
