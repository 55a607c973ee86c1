//! kura's Binance-compatible API. The foundations are pure (no sockets, no clock, no
//! files); [`http`] is the axum router that feeds raw request bytes to them and talks to
//! the node through [`backend::Backend`].
//!
//! - [`auth`]: signed-request verification (HMAC-SHA256 hex and Ed25519 base64 over
//!   the raw query ‖ body), `timestamp`/`recvWindow`, key permissions and IP
//!   allow-lists, and the derivation of HMAC secrets from a node master key.
//! - [`errors`]: the one table from every failure (engine [`kura_engine::Reject`], auth,
//!   parameters) to an HTTP status and Binance's `{"code":…,"msg":…}`.
//! - [`params`]: query/form parsing with size limits and duplicate rejection, and
//!   typed getters (symbols, exact decimals, Binance enums) that fail with Binance's
//!   codes.
//! - [`http`]: [`router`], every REST endpoint (see its module documentation).
//! - [`ws`]: the WebSocket market streams, the user-data stream (WS-API
//!   `userDataStream.subscribe.signature` and listen keys), all bounded.
//! - `memory` (feature `testing`): `MemoryBackend`, an in-memory [`backend::Backend`]
//!   for router tests.

#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod errors;
pub mod feed;
pub mod http;
pub mod limits;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod openapi;
pub mod params;
pub mod ws;

pub use auth::{authenticate, ApiKeyId, ApiKeyRecord, AuthError, MasterKey, Permission};
pub use errors::{api_error, ApiError, Failure, Op, ParamError};
pub use http::router;
pub use params::Params;
