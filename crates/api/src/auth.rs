//! Binance-style signed requests, verified exactly as Binance does, with no I/O and no
//! clock: the caller passes the current time in milliseconds.
//!
//! # What is signed
//! The payload is the raw query string followed, with no separator, by the raw body,
//! each without its `signature=…` parameter (Binance `rest-api.md`: "the query string
//! concatenated without separator to the HTTP body"). The bytes are used as received,
//! never re-encoded. Removing the `signature` segment is the same as "everything before
//! `&signature=`" when it comes last, which is what CCXT sends.
//!
//! - HMAC keys: `signature = hex(HMAC-SHA256(secret, payload))`; hex in either case.
//! - Ed25519 keys: `signature = base64(Ed25519-sign(private key, payload))`,
//!   percent-encoded in the request (CCXT does this when its secret is a PEM private
//!   key). It is verified with the stored public key (`verify_strict`).
//! - Comparisons of MACs are constant time (`subtle`).
//!
//! # Time
//! `timestamp` (ms) is required; `recvWindow` defaults to [`DEFAULT_RECV_WINDOW_MS`]
//! and may be at most [`MAX_RECV_WINDOW_MS`] (-1131 above). A request is accepted iff
//! `timestamp < now + 1000` and `now - timestamp <= recvWindow`; otherwise -1021. A
//! timestamp check alone does not stop a replay inside the window: the order path
//! must also rely on `newClientOrderId` uniqueness (the engine enforces it among open
//! orders).
//!
//! # Order of checks ([`authenticate`])
//! API-key header format (-2014), parameter syntax (-11xx), key lookup (-2015),
//! signature (-1022), timestamp (-1021), then key state, IP allow-list and permission
//! (-2015). Permissions and the allow-list are checked after the signature so that an
//! unauthenticated caller who knows a key id learns nothing about its scopes.
//!
//! # Secrets
//! No HMAC secret is ever stored. Each is derived from the node's master key:
//!
//! ```text
//! secret_bytes = HMAC-SHA256(key = master_key, msg = "kura-api-key-v1" ‖ 0x00 ‖ key_id)
//! secret       = lower-case hex(secret_bytes)        (64 characters, shown to the user once)
//! ```
//!
//! The client uses the 64 ASCII characters of `secret` as its HMAC key, as with any
//! Binance secret. So the journal and the read model hold only key ids, scopes,
//! allow-lists and Ed25519 *public* keys; the master key lives only in the API
//! process's configuration. Consequences: rotating the master key (a new label
//! version, `v2`) invalidates every HMAC key at once; revoking one key is a state
//! change (`enabled = false`), never a secret deletion; a leak of the journal leaks no
//! credential. Ed25519 keys need no derivation: the user keeps the private key.

use crate::errors::ParamError;
use crate::params::{percent_decode, Params};
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use kura_units::UserId;
use sha2::Sha256;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Header carrying the API key id.
pub const API_KEY_HEADER: &str = "X-MBX-APIKEY";
/// `recvWindow` when the request sends none.
pub const DEFAULT_RECV_WINDOW_MS: u64 = 5_000;
/// Largest `recvWindow` accepted (CCXT sends 10000).
pub const MAX_RECV_WINDOW_MS: u64 = 60_000;
/// A timestamp this far (or further) ahead of the server clock is refused.
pub const MAX_AHEAD_MS: u64 = 1_000;
/// Length of an API key id (Binance's keys are 64 alphanumeric characters).
pub const API_KEY_LEN: usize = 64;
/// Domain-separation label of the HMAC secret derivation; bump to rotate every key.
pub const KEY_DERIVATION_LABEL: &[u8] = b"kura-api-key-v1";

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not authenticated. Mapped to Binance codes in
/// [`crate::errors::api_error`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API key header")]
    MissingApiKey,
    #[error("API key header malformed")]
    BadApiKeyFormat,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("API key disabled")]
    KeyDisabled,
    #[error("client IP not in the key's allow-list")]
    IpNotAllowed,
    #[error("API key lacks the permission")]
    PermissionDenied,
    #[error("bad signature")]
    BadSignature,
    #[error("timestamp ahead of server time")]
    TimestampAhead,
    #[error("timestamp outside recvWindow")]
    TimestampExpired,
    #[error("recvWindow too large")]
    RecvWindowTooLarge,
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// An API key id, as sent in [`API_KEY_HEADER`]: 64 ASCII letters and digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    /// Parse a header value (-2014 if absent or malformed).
    pub fn parse(header: Option<&[u8]>) -> Result<ApiKeyId, AuthError> {
        let raw = header.ok_or(AuthError::MissingApiKey)?;
        if raw.len() == API_KEY_LEN && raw.iter().all(u8::is_ascii_alphanumeric) {
            Ok(ApiKeyId(raw.iter().map(|&b| char::from(b)).collect()))
        } else {
            Err(AuthError::BadApiKeyFormat)
        }
    }

    /// A key id from 32 random bytes (the caller supplies the randomness).
    pub fn from_random(bytes: [u8; 32]) -> ApiKeyId {
        ApiKeyId(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The node's master key for HMAC secret derivation. Never printed.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The HMAC secret of `key_id` (see the module docs).
    pub fn derive_hmac_secret(&self, key_id: &ApiKeyId) -> HmacSecret {
        let mut mac = new_mac(&self.0);
        mac.update(KEY_DERIVATION_LABEL);
        mac.update(&[0]);
        mac.update(key_id.as_str().as_bytes());
        HmacSecret(hex::encode(mac.finalize().into_bytes()))
    }
}

/// A client's HMAC secret as the client holds it (its ASCII bytes are the HMAC key).
/// Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(String);

impl core::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSecret(..)")
    }
}

impl HmacSecret {
    /// A secret given as text (tests, or keys imported from elsewhere).
    pub fn from_text(text: &str) -> HmacSecret {
        HmacSecret(text.to_owned())
    }

    /// The text to show the user once, at key creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `hex(HMAC-SHA256(secret, payload))`, lower case: what a client sends.
    pub fn sign(&self, payload: &[u8]) -> String {
        hex::encode(self.mac(payload))
    }

    fn mac(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = new_mac(self.0.as_bytes());
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// How a key signs, as stored in the journal / read model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyScheme {
    /// Secret derived from the master key on demand.
    Hmac,
    /// The user's Ed25519 public key (32 bytes).
    Ed25519 { public: [u8; 32] },
}

/// Parse an Ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as a user
/// registers it, into the 32 bytes stored in [`KeyScheme::Ed25519`].
pub fn ed25519_public_key_from_pem(pem: &str) -> Option<[u8; 32]> {
    VerifyingKey::from_public_key_pem(pem)
        .ok()
        .map(|k| k.to_bytes())
}

/// What a key may do. Binance's USER_DATA is `read`; TRADE is `trade`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub read: bool,
    pub trade: bool,
    pub withdraw: bool,
}

/// The permission an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Trade,
    Withdraw,
}

/// An address or a CIDR block in a key's IP allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `"203.0.113.7"`, `"203.0.113.0/24"`, `"2001:db8::/32"`.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix.min(bits));
    net.checked_shr(shift).unwrap_or(0) == ip.checked_shr(shift).unwrap_or(0)
}

/// One API key, as the read model holds it. No secret in here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    /// The key's number, assigned when it was created; journal origins name it.
    pub number: u64,
    pub user: UserId,
    pub scheme: KeyScheme,
    pub permissions: Permissions,
    /// Empty means any address (not allowed for keys with `withdraw`).
    pub ip_allow: Vec<IpNet>,
    pub enabled: bool,
}

/// Whether `ip` may use a key with this allow-list (an empty list allows any).
pub fn ip_allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|n| n.contains(ip))
}

/// Key state, IP allow-list and permission. A withdraw-capable key must have a
/// non-empty allow-list, or it may not withdraw.
pub fn check_access(
    key: &ApiKeyRecord,
    required: Permission,
    client_ip: IpAddr,
) -> Result<(), AuthError> {
    if !key.enabled {
        return Err(AuthError::KeyDisabled);
    }
    if !ip_allowed(&key.ip_allow, client_ip) {
        return Err(AuthError::IpNotAllowed);
    }
    let p = key.permissions;
    let ok = match required {
        Permission::Read => p.read,
        Permission::Trade => p.trade,
        Permission::Withdraw => p.withdraw && !key.ip_allow.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied)
    }
}

/// The signed payload (query then body, each without its `signature` segment) and the
/// raw, still percent-encoded signature value.
pub fn split_signature<'a>(
    raw_query: &'a [u8],
    raw_body: &'a [u8],
) -> Result<(Vec<u8>, &'a [u8]), AuthError> {
    let mut payload = Vec::with_capacity(raw_query.len() + raw_body.len());
    let mut signature = None;
    for raw in [raw_query, raw_body] {
        let mut first = true;
        for segment in raw.split(|&b| b == b'&') {
            if let Some(value) = segment.strip_prefix(b"signature=") {
                if signature.replace(value).is_some() {
                    return Err(ParamError::Duplicate.into());
                }
                continue;
            }
            if segment == b"signature" {
                return Err(missing_signature());
            }
            if !first {
                payload.push(b'&');
            }
            payload.extend_from_slice(segment);
            first = false;
        }
    }
    match signature {
        Some(s) if !s.is_empty() => Ok((payload, s)),
        _ => Err(missing_signature()),
    }
}

fn missing_signature() -> AuthError {
    ParamError::Missing {
        name: "signature".to_owned(),
    }
    .into()
}

/// Verify `raw_signature` (as found in the request) over `payload`.
/// For [`KeyScheme::Hmac`] the caller passes the derived secret.
pub fn verify_signature(
    scheme: &KeyScheme,
    hmac_secret: Option<&HmacSecret>,
    payload: &[u8],
    raw_signature: &[u8],
) -> Result<(), AuthError> {
    let text = percent_decode(raw_signature).ok_or(AuthError::BadSignature)?;
    match scheme {
        KeyScheme::Hmac => {
            let secret = hmac_secret.ok_or(AuthError::BadSignature)?;
            let mut got = [0u8; 32];
            hex::decode_to_slice(text.as_bytes(), &mut got).map_err(|_| AuthError::BadSignature)?;
            let want = secret.mac(payload);
            if bool::from(want.ct_eq(&got)) {
                Ok(())
            } else {
                Err(AuthError::BadSignature)
            }
        }
        KeyScheme::Ed25519 { public } => {
            let key = VerifyingKey::from_bytes(public).map_err(|_| AuthError::BadSignature)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| AuthError::BadSignature)?;
            let sig = Signature::from_slice(&bytes).map_err(|_| AuthError::BadSignature)?;
            key.verify_strict(payload, &sig)
                .map_err(|_| AuthError::BadSignature)
        }
    }
}

/// Binance's replay window. `recv_window_ms` is `None` when not sent.
pub fn check_timestamp(
    timestamp_ms: u64,
    recv_window_ms: Option<u64>,
    now_ms: u64,
) -> Result<(), AuthError> {
    let window = recv_window_ms.unwrap_or(DEFAULT_RECV_WINDOW_MS);
    if window > MAX_RECV_WINDOW_MS {
        return Err(AuthError::RecvWindowTooLarge);
    }
    if timestamp_ms >= now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(AuthError::TimestampAhead);
    }
    if now_ms.saturating_sub(timestamp_ms) > window {
        return Err(AuthError::TimestampExpired);
    }
    Ok(())
}

/// A request as received, reduced to what authentication reads.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// The [`API_KEY_HEADER`] value, if present.
    pub api_key: Option<&'a [u8]>,
    /// Raw query string, without `?`.
    pub raw_query: &'a [u8],
    /// Raw `application/x-www-form-urlencoded` body.
    pub raw_body: &'a [u8],
    pub client_ip: IpAddr,
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub key_id: ApiKeyId,
    pub user: UserId,
    /// All parameters, `signature`, `timestamp` and `recvWindow` included.
    pub params: Params,
}

/// Run every check of a signed endpoint needing `required`, in the documented order.
/// `lookup` finds a key record by id (the read model); `now_ms` is the server clock.
pub fn authenticate<'k>(
    req: &SignedRequest<'_>,
    lookup: impl FnOnce(&ApiKeyId) -> Option<&'k ApiKeyRecord>,
    master: &MasterKey,
    required: Permission,
    now_ms: u64,
) -> Result<Authenticated, AuthError> {
    let key_id = ApiKeyId::parse(req.api_key)?;
    let params = Params::parse(req.raw_query, req.raw_body)?;
    let key = lookup(&key_id).ok_or(AuthError::UnknownApiKey)?;
    let (payload, signature) = split_signature(req.raw_query, req.raw_body)?;
    let secret = match key.scheme {
        KeyScheme::Hmac => Some(master.derive_hmac_secret(&key_id)),
        KeyScheme::Ed25519 { .. } => None,
    };
    verify_signature(&key.scheme, secret.as_ref(), &payload, signature)?;
    let timestamp = params.u64("timestamp")?;
    let recv_window = params.u64_opt("recvWindow")?;
    check_timestamp(timestamp, recv_window, now_ms)?;
    check_access(key, required, req.client_ip)?;
    Ok(Authenticated {
        key_id,
        user: key.user,
        params,
    })
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
