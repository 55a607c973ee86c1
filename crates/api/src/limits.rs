//! Admission control in front of the sequencer: Binance's request weights per client
//! address, order counts per API key, 429 then 418 bans, with cancels never shed.
//!
//! # What is counted
//!
//! - **Request weight per address**, in fixed 1-minute windows aligned to the clock
//!   (a window is `[now - now % 60 000, … + 60 000)` ms), limit
//!   [`REQUEST_WEIGHT_PER_MINUTE`] by default. Each endpoint has Binance's weight
//!   ([`request_weight`]: depth by `limit`, `ticker/24hr` by the number of symbols,
//!   anything unknown 1). Every response carries `X-MBX-USED-WEIGHT-1M: <used>`.
//!   `POST /sapi/v1/capital/withdraw/apply` weighs 900, the weight Binance counts
//!   against the account (UID); kura has no per-account budget and counts it against
//!   the address's, so an address makes at most 6 withdrawal requests a minute.
//! - **Orders per API key** (`POST /api/v3/order` only), in fixed 10-second and UTC-day
//!   windows, limits [`ORDERS_PER_10S`] and [`ORDERS_PER_DAY`]. An order is reserved
//!   before the handler runs and kept only if the answer is a success; an
//!   authentication failure or an engine rejection gives it back. Order answers carry
//!   `X-MBX-ORDER-COUNT-10S` and `X-MBX-ORDER-COUNT-1D`.
//!
//! `exchangeInfo.rateLimits` advertises the same constants ([`Limits::rate_limits_json`]
//! builds it; a router test keeps the two equal). `RAW_REQUESTS` is advertised, not
//! enforced: every request weighs at least 1, so the weight limit bounds it.
//!
//! # What is refused, and how
//!
//! - A request that would take the address over its weight gets HTTP 429, `-1003`
//!   "Too much request weight used; current limit is 6000 request weight per 1
//!   MINUTE. …" and `Retry-After: <seconds until the window ends>`. Refused requests
//!   do not add weight.
//! - An address that is refused more than [`Limits::refusals_before_ban`] times in one
//!   window is banned: HTTP 418, `-1003` "Way too much request weight used; IP banned
//!   until `<ms>`. …", `Retry-After: <seconds until the ban ends>`. Bans last
//!   [`Limits::ban_first_ms`] (2 minutes), doubling for each further ban while the
//!   address is remembered as an offender ([`Limits::offender_memory_ms`] after its last
//!   ban ended), capped at [`Limits::ban_max_ms`] (3 days). While banned, every request
//!   from the address is answered 418 here, without reaching the backend.
//! - **Forged and oversized requests ban sooner.** A request refused for its
//!   credentials (no API key, a malformed or unknown key, a bad signature) or for its
//!   size (413, 414) counts as a failure of its address; past
//!   [`Limits::failures_before_ban`] (10) in one window the address is banned on the
//!   spot, with the same ladder. WebSocket upgrades refused over the per-address
//!   limits (300 held at once, [`Limits::ws_connections_per_5m`] new ones per 5
//!   minutes) count the same way, and so does a WebSocket connection closed for
//!   breaking a rule (too many messages, a binary or oversized message, a send queue
//!   left full): Binance bans addresses that are disconnected again and again. An
//!   honest client's mistakes (a stale timestamp, an address off the key's allow-list,
//!   a missing parameter) do not count. The answer that bans, and every 418, carries
//!   `Connection: close`. Each new ban is published ([`Limiter::ban_feed`]): the
//!   server's kernel filter (`kura::server::ban_filter`) then drops the banned
//!   address's packets before a handshake, and its listener (`kura::server::listener`)
//!   resets at accept whatever gets past the filter, so a banned flood costs a few
//!   instructions per SYN, not a parse and a signature check per request. The same
//!   listener caps the connections an address holds at
//!   [`Limits::connections_per_address`] (512).
//! - An order over a key's 10-second or daily count gets HTTP 429, `-1015` "Too many
//!   new orders; current limit is 100 orders per 10 SECOND." with `Retry-After`.
//!
//! **Cancels are never shed.** `DELETE /api/v3/order` and `DELETE /api/v3/openOrders`
//! are never refused for weight or order-count reasons; they still add their weight
//! (so the header can exceed the limit) and they never count toward a ban. Only a ban
//! (an address that ignored its 429s) stops them.
//!
//! # Order of checks: before authentication
//!
//! The weight check runs before anything else, so an unsigned or badly signed flood
//! costs one table look-up per request once the address is over its limit, and one
//! signature check (the handler's) until then; a failed signature costs its weight
//! like any other request. The order count is keyed by the key record's number, looked
//! up from `X-MBX-APIKEY` without verifying the signature; a forged request with
//! someone else's key id holds one of their orders only until its (failing) answer.
//!
//! # Why fixed windows and not `governor`
//!
//! Binance counts weight in fixed, clock-aligned windows and reports the used weight
//! of the current window in a header; GCRA (`governor`) keeps a theoretical arrival
//! time, not a count, so neither the header nor "Retry-After = seconds until the window
//! resets" can be derived from it, and its clock is not the backend's. A counter per
//! window is a few integers, exact, and takes its time from [`Backend::now_ms`], so
//! tests move a settable clock instead of sleeping.
//!
//! # Memory
//!
//! The address table and the key table are each capped ([`Limits::ip_table_max`],
//! [`Limits::key_table_max`]). Each request first drops up to two idle entries
//! (window over, not banned, no longer remembered as an offender) from the
//! least-recently-seen end; a new entry at the cap evicts the least recently seen entry
//! whatever its state. So a flood of distinct addresses costs at most the cap (about
//! 150 bytes an entry: 65 536 entries ≈ 10 MB); the price at the cap is that an address
//! quiet for longer than it takes the flood to fill the table forgets its count, its
//! ban and its offences. IPv6 clients are counted per /64 (one customer's allocation),
//! so one host cannot mint a fresh identity per request; IPv4-mapped IPv6 addresses
//! count as their IPv4 address. Keys are counted only when the key exists, so the key
//! table holds at most the number of real keys.
//!
//! # Known limitations
//!
//! - The client address is the TCP peer (`ConnectInfo`), or, when the peer is one of
//!   [`Limits::trusted_proxies`], the last address of `X-Forwarded-For` that is not a
//!   trusted proxy ([`client_ip`]); admission puts it in the request's extensions
//!   ([`ClientIp`]) for the handlers, which journal it in the command's origin. The
//!   listener's accept-time checks see only the TCP peer, so they leave trusted proxies
//!   alone (no connection cap, never refused as banned).
//! - Weights are read from the query string: `computeCommissionRates=true` sent in a
//!   form body to `order/test` weighs 1, not 20.
//! - Binance's "unfilled order count" (orders that trade are given back) is not
//!   modelled: every accepted order counts.
//! - One mutex per table; the critical section is a hash look-up and a B-tree update,
//!   no I/O.

use crate::auth::{ApiKeyId, API_KEY_HEADER};
use crate::backend::Backend;
use crate::errors::Failure;
use crate::http::{Fail, Offence};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// `REQUEST_WEIGHT` per address per minute (Binance's spot value).
pub const REQUEST_WEIGHT_PER_MINUTE: u32 = 6_000;
/// `ORDERS` per API key per 10 seconds.
pub const ORDERS_PER_10S: u32 = 100;
/// `ORDERS` per API key per UTC day.
pub const ORDERS_PER_DAY: u32 = 200_000;
/// `RAW_REQUESTS` per 5 minutes: advertised only (see the module documentation).
pub const RAW_REQUESTS_PER_5M: u32 = 61_000;
/// The first ban of an address: 2 minutes.
pub const BAN_FIRST_MS: u64 = 2 * 60 * 1_000;
/// The longest ban: 3 days.
pub const BAN_MAX_MS: u64 = 3 * 24 * 60 * 60 * 1_000;
/// How long after its last ban ended an address still counts as a repeat offender.
pub const OFFENDER_MEMORY_MS: u64 = 24 * 60 * 60 * 1_000;
/// 429s an address may receive in one window before the next refusal bans it.
pub const REFUSALS_BEFORE_BAN: u32 = 10;
/// Failed authentications (no key, a malformed or unknown key, a bad signature) and
/// oversized requests an address may send in one window before it is banned. A client
/// with a wrong secret learns it from the first answer; every forged request before the
/// ban is work the server does for an attacker.
pub const FAILURES_BEFORE_BAN: u32 = 10;
/// Connections one address may hold open at once (above the WebSocket limit per
/// address, so that limit answers first with its 429).
pub const CONNECTIONS_PER_ADDRESS: u32 = 512;
/// How long an address counts as a customer's after a correctly signed request from it:
/// one hour.
pub const CUSTOMER_MEMORY_MS: u64 = 60 * 60 * 1_000;
/// Binance: new WebSocket connections one address may open per 5 minutes. More are
/// refused with 429, and each refusal counts toward a ban like a forged request.
pub const WS_CONNECTIONS_PER_5M: u32 = 300;
/// New bans buffered for a slow follower of the ban feed (one that lags loses the
/// oldest; bans are rare).
const BAN_FEED_CAPACITY: usize = 256;
/// Entries in the address table (about 10 MB at the cap).
pub const IP_TABLE_MAX: usize = 65_536;
/// Entries in the API-key table.
pub const KEY_TABLE_MAX: usize = 65_536;

const MINUTE_MS: u64 = 60_000;
const FIVE_MINUTES_MS: u64 = 5 * MINUTE_MS;
const TEN_SECONDS_MS: u64 = 10_000;
const DAY_MS: u64 = 24 * 60 * 60 * 1_000;
/// Idle entries dropped per request, at most: more than one, so idle entries leave the
/// table faster than new ones can arrive.
const EVICT_IDLE_PER_REQUEST: usize = 2;

const _: () = assert!(ORDERS_PER_10S <= ORDERS_PER_DAY);
const _: () = assert!(BAN_FIRST_MS <= BAN_MAX_MS);
// A ban outlasts the window it was earned in, so it cannot end with the refusals of
// that window still counted.
const _: () = assert!(BAN_FIRST_MS >= MINUTE_MS);

/// The headers this module writes.
pub const USED_WEIGHT_HEADER: &str = "x-mbx-used-weight-1m";
pub const ORDER_COUNT_10S_HEADER: &str = "x-mbx-order-count-10s";
pub const ORDER_COUNT_1D_HEADER: &str = "x-mbx-order-count-1d";

/// Admission limits. [`Limits::default`] is Binance's spot values, which
/// `exchangeInfo` advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request weight per address per 1-minute window (default 6000).
    pub request_weight_per_minute: u32,
    /// Orders per API key per 10-second window (default 100).
    pub orders_per_10s: u32,
    /// Orders per API key per UTC day (default 200 000).
    pub orders_per_day: u32,
    /// 429s an address may receive in one window; the next refusal is a ban (default
    /// 10, room for the requests a client had in flight when the first 429 came).
    pub refusals_before_ban: u32,
    /// Length of a first ban (default 2 minutes).
    pub ban_first_ms: u64,
    /// Longest ban; each repeat doubles the previous one up to this (default 3 days).
    pub ban_max_ms: u64,
    /// A ban within this long of the end of the previous one doubles (default 1 day).
    pub offender_memory_ms: u64,
    /// Failed authentications and oversized requests an address may send in one
    /// window; the next one bans it (default 10: a client with a wrong secret learns
    /// from the first answer; a flood of forgeries is cut off after a handful).
    pub failures_before_ban: u32,
    /// Connections one address may hold open; more are closed as soon as they are
    /// accepted (default 512).
    pub connections_per_address: u32,
    /// New WebSocket connections one address may open per 5-minute window (default
    /// 300, Binance's). Refusals count toward a ban as forged requests do.
    pub ws_connections_per_5m: u32,
    /// How long after its last correctly signed request an address counts as a
    /// customer's (default one hour): the server serves a customer's new connections
    /// ahead of strangers' when it is short of CPU.
    pub customer_memory_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (default none): a request
    /// whose peer is one of them is counted, banned and journaled under the address
    /// the header gives, read from the right past any further trusted proxy. From any
    /// other peer the header is ignored, so a client cannot choose its own address.
    pub trusted_proxies: Vec<IpAddr>,
    /// Address table capacity (default 65 536; at least 1).
    pub ip_table_max: usize,
    /// API-key table capacity (default 65 536; at least 1).
    pub key_table_max: usize,
}

impl Limits {
    /// Binance's spot values.
    pub const DEFAULT: Limits = Limits {
        request_weight_per_minute: REQUEST_WEIGHT_PER_MINUTE,
        orders_per_10s: ORDERS_PER_10S,
        orders_per_day: ORDERS_PER_DAY,
        refusals_before_ban: REFUSALS_BEFORE_BAN,
        ban_first_ms: BAN_FIRST_MS,
        ban_max_ms: BAN_MAX_MS,
        offender_memory_ms: OFFENDER_MEMORY_MS,
        failures_before_ban: FAILURES_BEFORE_BAN,
        connections_per_address: CONNECTIONS_PER_ADDRESS,
        ws_connections_per_5m: WS_CONNECTIONS_PER_5M,
        customer_memory_ms: CUSTOMER_MEMORY_MS,
        trusted_proxies: Vec::new(),
        ip_table_max: IP_TABLE_MAX,
        key_table_max: KEY_TABLE_MAX,
    };

    /// `exchangeInfo.rateLimits` for these limits.
    pub fn rate_limits_json(&self) -> serde_json::Value {
        serde_json::json!([
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.request_weight_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": self.orders_per_day},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": RAW_REQUESTS_PER_5M},
        ])
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

// ---- weights -----------------------------------------------------------------------

/// What admission treats specially.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `DELETE /api/v3/order`, `DELETE /api/v3/openOrders`: never shed.
    Cancel,
    /// `POST /api/v3/order`: counts toward the key's orders.
    NewOrder,
    Other,
}

impl RequestKind {
    pub fn of(method: &Method, path: &str) -> RequestKind {
        match (method, path) {
            (&Method::DELETE, "/api/v3/order" | "/api/v3/openOrders") => RequestKind::Cancel,
            (&Method::POST, "/api/v3/order") => RequestKind::NewOrder,
            _ => RequestKind::Other,
        }
    }
}

/// The raw (undecoded) value of the first `name=` in a query string.
fn raw_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Binance's weight of `GET /api/v3/depth` for a `limit` (default 100).
fn depth_weight(limit: Option<&str>) -> u32 {
    match limit.and_then(|v| v.parse::<u64>().ok()).unwrap_or(100) {
        0..=100 => 5,
        101..=500 => 25,
        501..=1_000 => 50,
        _ => 250,
    }
}

/// The number of entries in a raw `symbols=["A","B"]` value (commas, plain or
/// percent-encoded, plus one).
fn symbol_count(raw: &str) -> usize {
    let plain = raw.matches(',').count();
    let encoded = raw
        .as_bytes()
        .windows(3)
        .filter(|w| w.eq_ignore_ascii_case(b"%2C"))
        .count();
    plain + encoded + 1
}

/// Binance's request weight of a request (see the table in [`crate::http`]); anything
/// not listed weighs 1.
pub fn request_weight(method: &Method, path: &str, query: &str) -> u32 {
    let has = |name| raw_param(query, name).is_some_and(|v| !v.is_empty());
    match (method, path) {
        (&Method::GET, "/api/v3/exchangeInfo") => 20,
        (&Method::GET, "/api/v3/depth") => depth_weight(raw_param(query, "limit")),
        (&Method::GET, "/api/v3/trades" | "/api/v3/historicalTrades") => 25,
        (&Method::GET, "/api/v3/aggTrades") => 4,
        (&Method::GET, "/api/v3/klines" | "/api/v3/uiKlines" | "/api/v3/avgPrice") => 2,
        (&Method::GET, "/api/v3/ticker/24hr") if has("symbol") => 2,
        (&Method::GET, "/api/v3/ticker/24hr") => {
            match raw_param(query, "symbols").map(symbol_count) {
                Some(1..=20) => 2,
                Some(21..=100) => 40,
                _ => 80,
            }
        }
        (&Method::GET, "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker") if has("symbol") => 2,
        (&Method::GET, "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker") => 4,
        (&Method::POST, "/api/v3/order/test")
            if raw_param(query, "computeCommissionRates") == Some("true") =>
        {
            20
        }
        (&Method::GET, "/api/v3/order") => 4,
        (&Method::GET, "/api/v3/openOrders") if has("symbol") => 6,
        (&Method::GET, "/api/v3/openOrders") => 80,
        (&Method::GET, "/api/v3/allOrders" | "/api/v3/account") => 20,
        (&Method::GET, "/api/v3/myTrades") if has("orderId") => 5,
        (&Method::GET, "/api/v3/myTrades") => 20,
        (&Method::GET, "/sapi/v1/capital/config/getall") => 10,
        (&Method::GET, "/sapi/v1/capital/deposit/address") => 10,
        (&Method::GET, "/sapi/v1/capital/deposit/hisrec") => 1,
        // Binance counts 900 against the account (UID); kura has no per-account
        // budget and counts it against the address's.
        (&Method::POST, "/sapi/v1/capital/withdraw/apply") => 900,
        // Binance documents 18000 per IP; kura counts 10.
        (&Method::GET, "/sapi/v1/capital/withdraw/history") => 10,
        // kura's proofs of solvency: a proof may rebuild a tree.
        (&Method::GET, "/kura/v1/solvency") => 2,
        (&Method::GET, "/kura/v1/solvency/proof") => 20,
        _ => 1,
    }
}

/// The identity an address is counted under: IPv6 per /64, IPv4-mapped IPv6 as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

// ---- pure parts: windows, bans, the bounded table ------------------------------------

/// A count in one fixed, clock-aligned window of `len_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Window {
    start_ms: u64,
    count: u64,
}

impl Window {
    /// Move to the window holding `now_ms` (a new window counts from zero). Returns
    /// whether it moved.
    fn roll(&mut self, now_ms: u64, len_ms: u64) -> bool {
        let start = now_ms - now_ms % len_ms;
        if start == self.start_ms {
            return false;
        }
        *self = Window {
            start_ms: start,
            count: 0,
        };
        true
    }

    /// The count as seen at `now_ms` (zero once the window is over).
    fn count_at(&self, now_ms: u64, len_ms: u64) -> u64 {
        if now_ms - now_ms % len_ms == self.start_ms {
            self.count
        } else {
            0
        }
    }
}

/// Whole seconds from `now_ms` until `end_ms`, rounded up, at least 1.
fn seconds_until(now_ms: u64, end_ms: u64) -> u64 {
    end_ms.saturating_sub(now_ms).div_ceil(1_000).max(1)
}

/// Seconds until the window of `len_ms` holding `now_ms` ends.
fn window_retry_after(now_ms: u64, len_ms: u64) -> u64 {
    seconds_until(now_ms, now_ms - now_ms % len_ms + len_ms)
}

/// The length of ban number `earlier + 1`: `first`, doubled per earlier ban, at most
/// `max`.
fn ban_ms(first: u64, max: u64, earlier: u32) -> u64 {
    let mut ms = first.min(max);
    for _ in 0..earlier {
        if ms >= max {
            break;
        }
        ms = ms.saturating_mul(2).min(max);
    }
    ms
}

/// A map with a capacity, ordered by last use so idle entries can be dropped from the
/// least-recently-used end and a full table evicts its least recently used entry.
#[derive(Debug)]
struct Table<K, V> {
    slots: HashMap<K, Slot<V>>,
    /// Use stamp → key; the first entry is the least recently used.
    recency: BTreeMap<u64, K>,
    next_stamp: u64,
    max: usize,
    /// Entries evicted because the table was full (not because they were idle).
    evicted_at_cap: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    stamp: u64,
}

impl<K: Hash + Eq + Copy, V> Table<K, V> {
    fn new(max: usize) -> Table<K, V> {
        Table {
            slots: HashMap::new(),
            recency: BTreeMap::new(),
            next_stamp: 0,
            max: max.max(1),
            evicted_at_cap: 0,
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn remove_lru(&mut self) -> Option<K> {
        let (_, key) = self.recency.pop_first()?;
        self.slots.remove(&key);
        Some(key)
    }

    /// Drop up to `n` entries from the least-recently-used end while they are idle.
    fn evict_idle(&mut self, n: usize, idle: impl Fn(&V) -> bool) {
        for _ in 0..n {
            let Some((_, key)) = self.recency.first_key_value() else {
                return;
            };
            match self.slots.get(key) {
                Some(slot) if idle(&slot.value) => {
                    self.remove_lru();
                }
                _ => return,
            }
        }
    }

    /// The entry for `key`, marked most recently used; a new one is made with `new`,
    /// evicting the least recently used entry if the table is full.
    fn touch(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(old) = self.slots.get(&key).map(|s| s.stamp) {
            self.recency.remove(&old);
        } else {
            while self.slots.len() >= self.max {
                if self.remove_lru().is_none() {
                    break;
                }
                self.evicted_at_cap += 1;
            }
        }
        self.recency.insert(stamp, key);
        let slot = self.slots.entry(key).or_insert_with(|| Slot {
            value: new(),
            stamp,
        });
        slot.stamp = stamp;
        &mut slot.value
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slots.get_mut(key).map(|s| &mut s.value)
    }
}

/// One address.
#[derive(Clone, Copy, Debug, Default)]
struct IpState {
    weight: Window,
    /// 429s answered in the current weight window.
    refusals: u32,
    /// Failed authentications and oversized requests in the current weight window.
    failures: u32,
    banned_until_ms: u64,
    /// New WebSocket connections in the current 5-minute window.
    ws_connections: Window,
    /// Bans that still count for doubling.
    bans: u32,
    /// Until when the address counts as a customer's (a correctly signed request came
    /// from it less than [`Limits::customer_memory_ms`] before).
    customer_until_ms: u64,
}

impl IpState {
    fn roll(&mut self, now_ms: u64) {
        if self.weight.roll(now_ms, MINUTE_MS) {
            self.refusals = 0;
            self.failures = 0;
        }
    }

    fn idle(&self, now_ms: u64, limits: &Limits) -> bool {
        self.weight.count_at(now_ms, MINUTE_MS) == 0
            && self.ws_connections.count_at(now_ms, FIVE_MINUTES_MS) == 0
            && now_ms >= self.banned_until_ms
            && now_ms >= self.customer_until_ms
            && !self.remembered(now_ms, limits)
    }

    /// Ban the address from `now_ms`, longer for a repeat offender; the ban's end.
    fn ban(&mut self, now_ms: u64, limits: &Limits) -> u64 {
        if !self.remembered(now_ms, limits) {
            self.bans = 0;
        }
        let until_ms =
            now_ms.saturating_add(ban_ms(limits.ban_first_ms, limits.ban_max_ms, self.bans));
        self.bans = self.bans.saturating_add(1);
        self.banned_until_ms = until_ms;
        self.refusals = 0;
        self.failures = 0;
        until_ms
    }

    /// Whether a ban now would be a repeat offence: an earlier ban ended less than
    /// `offender_memory_ms` ago.
    fn remembered(&self, now_ms: u64, limits: &Limits) -> bool {
        let forgiven_ms = self
            .banned_until_ms
            .saturating_add(limits.offender_memory_ms);
        self.bans > 0 && now_ms < forgiven_ms
    }
}

/// One API key.
#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    ten_seconds: Window,
    day: Window,
}

impl KeyState {
    fn idle(&self, now_ms: u64) -> bool {
        self.day.count_at(now_ms, DAY_MS) == 0
    }

    fn counts(&self, now_ms: u64) -> OrderCounts {
        OrderCounts {
            ten_seconds: self.ten_seconds.count_at(now_ms, TEN_SECONDS_MS),
            day: self.day.count_at(now_ms, DAY_MS),
        }
    }
}

/// What the weight check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDecision {
    /// Served; `used` includes this request.
    Admit { used: u64 },
    /// HTTP 429: over the limit; the window ends in `retry_after_s`.
    Refuse { used: u64, retry_after_s: u64 },
    /// HTTP 418: banned (now or earlier) until `until_ms`.
    Banned {
        used: u64,
        until_ms: u64,
        retry_after_s: u64,
    },
}

/// A key's order counts in its current windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderCounts {
    pub ten_seconds: u64,
    pub day: u64,
}

/// An order counted before the handler ran; given back with [`Limiter::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    key: u64,
    ten_seconds_start_ms: u64,
    day_start_ms: u64,
    /// The counts with this order.
    pub counts: OrderCounts,
}

/// What the order check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderDecision {
    Admit(Reservation),
    /// HTTP 429 -1015: `limit` per `interval` reached; it resets in `retry_after_s`.
    Refuse {
        counts: OrderCounts,
        limit: u32,
        interval: &'static str,
        retry_after_s: u64,
    },
}

/// The counters: one table of addresses, one of API keys. Time is always passed in.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    ips: Mutex<Table<IpAddr, IpState>>,
    keys: Mutex<Table<u64, KeyState>>,
    /// Each new ban's address (its table key), for whoever must act on it at once:
    /// WebSocket connections of a banned address close.
    bans: tokio::sync::broadcast::Sender<IpAddr>,
}

/// A poisoned table is still a table of counters: keep using it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            ips: Mutex::new(Table::new(limits.ip_table_max)),
            keys: Mutex::new(Table::new(limits.key_table_max)),
            limits,
            bans: tokio::sync::broadcast::channel(BAN_FEED_CAPACITY).0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The feed of new bans: each banned address (IPv6 by /64) as it is banned.
    pub fn ban_feed(&self) -> tokio::sync::broadcast::Sender<IpAddr> {
        self.bans.clone()
    }

    /// Count `weight` for `ip` at `now_ms`. A cancel (`never_shed`) is always admitted
    /// unless the address is banned.
    pub fn check_weight(
        &self,
        ip: IpAddr,
        weight: u32,
        never_shed: bool,
        now_ms: u64,
    ) -> WeightDecision {
        let limits = &self.limits;
        let mut ips = lock(&self.ips);
        ips.evict_idle(EVICT_IDLE_PER_REQUEST, |s| s.idle(now_ms, limits));
        let state = ips.touch(client_key(ip), IpState::default);
        state.roll(now_ms);
        let used = state.weight.count;
        if now_ms < state.banned_until_ms {
            return WeightDecision::Banned {
                used,
                until_ms: state.banned_until_ms,
                retry_after_s: seconds_until(now_ms, state.banned_until_ms),
            };
        }
        let after = used.saturating_add(u64::from(weight));
        if never_shed || after <= u64::from(limits.request_weight_per_minute) {
            state.weight.count = after;
            return WeightDecision::Admit { used: after };
        }
        state.refusals = state.refusals.saturating_add(1);
        if state.refusals <= limits.refusals_before_ban {
            return WeightDecision::Refuse {
                used,
                retry_after_s: window_retry_after(now_ms, MINUTE_MS),
            };
        }
        // Kept sending after its 429s: ban, longer for a repeat offender.
        let until_ms = state.ban(now_ms, limits);
        let _ = self.bans.send(client_key(ip));
        WeightDecision::Banned {
            used,
            until_ms,
            retry_after_s: seconds_until(now_ms, until_ms),
        }
    }

    /// Count a failed authentication or an oversized request from `ip` at `now_ms`;
    /// past [`Limits::failures_before_ban`] in one window the address is banned, and
    /// the end of its ban is returned.
    pub fn count_failure(&self, ip: IpAddr, now_ms: u64) -> Option<u64> {
        let limits = &self.limits;
        let mut ips = lock(&self.ips);
        let state = ips.touch(client_key(ip), IpState::default);
        state.roll(now_ms);
        if now_ms < state.banned_until_ms {
            return Some(state.banned_until_ms);
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures <= limits.failures_before_ban {
            return None;
        }
        let until_ms = state.ban(now_ms, limits);
        let _ = self.bans.send(client_key(ip));
        Some(until_ms)
    }

    /// Count a new WebSocket connection from `ip` at `now_ms`: false when the address
    /// has opened [`Limits::ws_connections_per_5m`] already in this 5-minute window
    /// (the caller refuses it, and counts the refusal with
    /// [`Limiter::count_failure`]).
    pub fn count_ws_connection(&self, ip: IpAddr, now_ms: u64) -> bool {
        let limits = &self.limits;
        let mut ips = lock(&self.ips);
        ips.evict_idle(EVICT_IDLE_PER_REQUEST, |s| s.idle(now_ms, limits));
        let state = ips.touch(client_key(ip), IpState::default);
        state.ws_connections.roll(now_ms, FIVE_MINUTES_MS);
        if state.ws_connections.count >= u64::from(limits.ws_connections_per_5m) {
            return false;
        }
        state.ws_connections.count += 1;
        true
    }

    /// Record a correctly signed request from `ip` at `now_ms`: the address counts as a
    /// customer's for [`Limits::customer_memory_ms`].
    pub fn vouch(&self, ip: IpAddr, now_ms: u64) {
        let until_ms = now_ms.saturating_add(self.limits.customer_memory_ms);
        let mut ips = lock(&self.ips);
        let state = ips.touch(client_key(ip), IpState::default);
        state.customer_until_ms = state.customer_until_ms.max(until_ms);
    }

    /// Whether `ip` counts as a customer's at `now_ms` ([`Limiter::vouch`]), and is not
    /// banned.
    pub fn is_customer(&self, ip: IpAddr, now_ms: u64) -> bool {
        lock(&self.ips)
            .get_mut(&client_key(ip))
            .is_some_and(|s| now_ms < s.customer_until_ms && now_ms >= s.banned_until_ms)
    }

    /// Whether `ip` is banned at `now_ms` (for refusing its connections at once).
    pub fn banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.ban_end(ip, now_ms).is_some()
    }

    /// When the ban `ip` is under at `now_ms` ends, if it is banned.
    pub fn ban_end(&self, ip: IpAddr, now_ms: u64) -> Option<u64> {
        lock(&self.ips)
            .get_mut(&client_key(ip))
            .map(|s| s.banned_until_ms)
            .filter(|until| now_ms < *until)
    }

    /// Every address (its table key) banned at `now_ms`, with the end of its ban. Walks
    /// the whole table: for a follower of [`Limiter::ban_feed`] that fell behind.
    pub fn bans_in_force(&self, now_ms: u64) -> Vec<(IpAddr, u64)> {
        lock(&self.ips)
            .slots
            .iter()
            .filter(|(_, s)| now_ms < s.value.banned_until_ms)
            .map(|(ip, s)| (*ip, s.value.banned_until_ms))
            .collect()
    }

    /// Count one new order for the key numbered `key` at `now_ms`, unless a window is
    /// full. Cancels never come here.
    pub fn reserve_order(&self, key: u64, now_ms: u64) -> OrderDecision {
        let limits = &self.limits;
        let mut keys = lock(&self.keys);
        keys.evict_idle(EVICT_IDLE_PER_REQUEST, |s| s.idle(now_ms));
        let state = keys.touch(key, KeyState::default);
        state.ten_seconds.roll(now_ms, TEN_SECONDS_MS);
        state.day.roll(now_ms, DAY_MS);
        let counts = state.counts(now_ms);
        if counts.ten_seconds >= u64::from(limits.orders_per_10s) {
            return OrderDecision::Refuse {
                counts,
                limit: limits.orders_per_10s,
                interval: "10 SECOND",
                retry_after_s: window_retry_after(now_ms, TEN_SECONDS_MS),
            };
        }
        if counts.day >= u64::from(limits.orders_per_day) {
            return OrderDecision::Refuse {
                counts,
                limit: limits.orders_per_day,
                interval: "1 DAY",
                retry_after_s: window_retry_after(now_ms, DAY_MS),
            };
        }
        state.ten_seconds.count += 1;
        state.day.count += 1;
        OrderDecision::Admit(Reservation {
            key,
            ten_seconds_start_ms: state.ten_seconds.start_ms,
            day_start_ms: state.day.start_ms,
            counts: state.counts(now_ms),
        })
    }

    /// Give back a reserved order (its request failed) in the windows it was counted
    /// in, if they are still current; returns the key's counts at `now_ms`.
    pub fn release(&self, r: &Reservation, now_ms: u64) -> OrderCounts {
        let mut keys = lock(&self.keys);
        let Some(state) = keys.get_mut(&r.key) else {
            return OrderCounts::default();
        };
        if state.ten_seconds.start_ms == r.ten_seconds_start_ms {
            state.ten_seconds.count = state.ten_seconds.count.saturating_sub(1);
        }
        if state.day.start_ms == r.day_start_ms {
            state.day.count = state.day.count.saturating_sub(1);
        }
        state.counts(now_ms)
    }

    /// Entries in the address table.
    pub fn ip_entries(&self) -> usize {
        lock(&self.ips).len()
    }

    /// Entries in the key table.
    pub fn key_entries(&self) -> usize {
        lock(&self.keys).len()
    }

    /// Address entries evicted because the table was full.
    pub fn ip_evictions_at_cap(&self) -> u64 {
        lock(&self.ips).evicted_at_cap
    }
}

// ---- the axum layer ------------------------------------------------------------------

/// The middleware's state: the backend (for its clock and key records) and the
/// counters.
#[derive(Clone)]
pub(crate) struct Gate<B> {
    backend: B,
    limiter: Arc<Limiter>,
}

impl<B> Gate<B> {
    pub(crate) fn new(backend: B, limiter: Arc<Limiter>) -> Gate<B> {
        Gate { backend, limiter }
    }
}

fn header_u64(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn refuse(failure: Failure, retry_after_s: u64) -> Response {
    let mut response = Fail::from(failure).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, header_u64(retry_after_s));
    response
}

fn set_order_counts(response: &mut Response, counts: OrderCounts) {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(ORDER_COUNT_10S_HEADER),
        header_u64(counts.ten_seconds),
    );
    headers.insert(
        HeaderName::from_static(ORDER_COUNT_1D_HEADER),
        header_u64(counts.day),
    );
}

/// The client's address as admission decided it (see [`client_ip`]), for handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Which of the server's lanes a connection is served on, when the server has two (a
/// request extension the server sets per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The server's own runtime: connections from customers' addresses
    /// ([`Limiter::is_customer`]) and trusted proxies.
    Customer,
    /// A runtime at a lower priority: every other connection. A correctly signed
    /// request on it is answered with `Connection: close`, so that the customer's next
    /// connection is served on [`Lane::Customer`].
    Guest,
}

/// Set by authentication when a request's signature is correct (a request extension
/// admission installs, and reads once the handler has answered).
#[derive(Clone, Debug, Default)]
pub(crate) struct Vouch(Arc<std::sync::atomic::AtomicBool>);

impl Vouch {
    pub(crate) fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The client of a request from `peer` with these headers: `peer` itself, unless it is
/// a trusted proxy; then the rightmost address of `X-Forwarded-For` (all of its
/// headers, in order) that is not a trusted proxy, or the leftmost if all are. A
/// malformed entry ends the walk at the last good address (the proxy, if none).
pub fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| in_list(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Whether `ip` is one of the trusted proxies (the listener leaves them alone).
pub fn is_trusted_proxy(ip: IpAddr, limits: &Limits) -> bool {
    in_list(ip, &limits.trusted_proxies)
}

/// Whether `ip` counts as one of `list` (compared as admission keys them).
fn in_list(ip: IpAddr, list: &[IpAddr]) -> bool {
    list.iter().any(|t| client_key(*t) == client_key(ip))
}

/// Admission for every request of the router (installed by
/// [`crate::http::router_with`]).
pub(crate) async fn admit<B: Backend>(
    State(gate): State<Gate<B>>,
    request: Request,
    next: Next,
) -> Response {
    let now_ms = gate.backend.now_ms();
    let (mut parts, body) = request.into_parts();
    let peer = match ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, &()).await {
        Ok(ConnectInfo(addr)) => addr.ip(),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let ip = client_ip(peer, &parts.headers, &gate.limiter.limits().trusted_proxies);
    parts.extensions.insert(ClientIp(ip));
    let vouch = Vouch::default();
    parts.extensions.insert(vouch.clone());
    let lane = parts.extensions.get::<Lane>().copied();
    let path = parts.uri.path();
    let kind = RequestKind::of(&parts.method, path);
    let weight = request_weight(&parts.method, path, parts.uri.query().unwrap_or(""));
    let limiter = &gate.limiter;
    let limits = limiter.limits();

    let used = match limiter.check_weight(ip, weight, kind == RequestKind::Cancel, now_ms) {
        WeightDecision::Admit { used } => used,
        WeightDecision::Refuse {
            used,
            retry_after_s,
        } => {
            let failure = Failure::WeightLimit {
                limit: limits.request_weight_per_minute,
                interval: "1 MINUTE",
            };
            return with_used_weight(refuse(failure, retry_after_s), used);
        }
        WeightDecision::Banned {
            used,
            until_ms,
            retry_after_s,
        } => {
            tracing::debug!(%ip, until_ms, "api: request from a banned address");
            return closing(with_used_weight(
                refuse(Failure::Banned { until_ms }, retry_after_s),
                used,
            ));
        }
    };

    // Orders count per key, for keys that exist; the handler authenticates.
    let key = if kind == RequestKind::NewOrder {
        ApiKeyId::parse(parts.headers.get(API_KEY_HEADER).map(|v| v.as_bytes()))
            .ok()
            .and_then(|id| gate.backend.api_key(&id))
            .map(|record| record.number)
    } else {
        None
    };
    let reservation = match key.map(|k| limiter.reserve_order(k, now_ms)) {
        None => None,
        Some(OrderDecision::Admit(r)) => Some(r),
        Some(OrderDecision::Refuse {
            counts,
            limit,
            interval,
            retry_after_s,
        }) => {
            let mut response = refuse(Failure::OrderLimit { limit, interval }, retry_after_s);
            set_order_counts(&mut response, counts);
            return with_used_weight(response, used);
        }
    };

    let mut response = next.run(Request::from_parts(parts, body)).await;
    let failed = response.extensions().get::<Offence>().is_some()
        || matches!(response.status().as_u16(), 413 | 414 | 431);
    if failed {
        if let Some(until_ms) = limiter.count_failure(ip, gate.backend.now_ms()) {
            tracing::debug!(%ip, until_ms, "api: address banned for forged or oversized requests");
            response = closing(response);
        }
    }
    if vouch.is_set() {
        limiter.vouch(ip, gate.backend.now_ms());
        // A customer on the guest lane: its next connection takes the customers' lane.
        if lane == Some(Lane::Guest) && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response = closing(response);
        }
    }
    if let Some(r) = reservation {
        let counts = if response.status().is_success() {
            r.counts
        } else {
            limiter.release(&r, gate.backend.now_ms())
        };
        set_order_counts(&mut response, counts);
    }
    with_used_weight(response, used)
}

/// Ask the client to close the connection after this answer (a banned address must
/// come back through accept, where its connections are refused).
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

fn with_used_weight(mut response: Response, used: u64) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(USED_WEIGHT_HEADER),
        header_u64(used),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_040_000; // the start of a minute
    const ONE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
        let (proxy, inner, client) = (ip(1), ip(2), ip(9));
        let trusted = [proxy, inner];
        let headers = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let forged = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
        // Two trusted hops, and an address the client wrote itself further left.
        let h = headers(&["203.0.113.66, 198.51.100.9", "198.51.100.2"]);
        assert_eq!(client_ip(proxy, &h, &trusted), client);
        // From an untrusted peer the header means nothing.
        assert_eq!(client_ip(client, &h, &trusted), client);
        assert_eq!(
            client_ip(forged, &headers(&["198.51.100.1"]), &trusted),
            forged
        );
        // No header, or nothing parseable: the proxy itself.
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy);
        assert_eq!(client_ip(proxy, &headers(&["unknown"]), &trusted), proxy);
        // Only trusted hops: the leftmost.
        assert_eq!(
            client_ip(proxy, &headers(&["198.51.100.2"]), &trusted),
            inner
        );
    }

    #[test]
    fn weights_follow_binance() {
        let cases: &[(Method, &str, &str, u32)] = &[
            (Method::GET, "/api/v3/ping", "", 1),
            (Method::GET, "/api/v3/time", "", 1),
            (Method::GET, "/api/v3/exchangeInfo", "", 20),
            (Method::GET, "/api/v3/depth", "symbol=BTCJPY", 5),
            (Method::GET, "/api/v3/depth", "symbol=BTCJPY&limit=100", 5),
            (Method::GET, "/api/v3/depth", "symbol=BTCJPY&limit=101", 25),
            (Method::GET, "/api/v3/depth", "limit=500&symbol=BTCJPY", 25),
            (Method::GET, "/api/v3/depth", "symbol=BTCJPY&limit=1000", 50),
            (
                Method::GET,
                "/api/v3/depth",
                "symbol=BTCJPY&limit=5000",
                250,
            ),
            (
                Method::GET,
                "/api/v3/depth",
                "symbol=BTCJPY&limit=99999",
                250,
            ),
            (Method::GET, "/api/v3/depth", "symbol=BTCJPY&limit=x", 5),
            (Method::GET, "/api/v3/trades", "symbol=BTCJPY", 25),
            (Method::GET, "/api/v3/aggTrades", "symbol=BTCJPY", 4),
            (
                Method::GET,
                "/api/v3/klines",
                "symbol=BTCJPY&interval=1m",
                2,
            ),
            (Method::GET, "/api/v3/ticker/24hr", "symbol=BTCJPY", 2),
            (Method::GET, "/api/v3/ticker/24hr", "", 80),
            (
                Method::GET,
                "/api/v3/ticker/24hr",
                "symbols=%5B%22BTCJPY%22%2C%22BTCUSD%22%5D",
                2,
            ),
            (Method::GET, "/api/v3/ticker/price", "symbol=BTCJPY", 2),
            (Method::GET, "/api/v3/ticker/price", "", 4),
            (Method::GET, "/api/v3/ticker/bookTicker", "", 4),
            (Method::POST, "/api/v3/order", "", 1),
            (Method::POST, "/api/v3/order/test", "", 1),
            (
                Method::POST,
                "/api/v3/order/test",
                "computeCommissionRates=true",
                20,
            ),
            (Method::GET, "/api/v3/order", "symbol=BTCJPY&orderId=1", 4),
            (Method::DELETE, "/api/v3/order", "symbol=BTCJPY", 1),
            (Method::GET, "/api/v3/openOrders", "symbol=BTCJPY", 6),
            (Method::GET, "/api/v3/openOrders", "timestamp=1", 80),
            (Method::DELETE, "/api/v3/openOrders", "symbol=BTCJPY", 1),
            (Method::GET, "/api/v3/allOrders", "symbol=BTCJPY", 20),
            (Method::GET, "/api/v3/myTrades", "symbol=BTCJPY", 20),
            (
                Method::GET,
                "/api/v3/myTrades",
                "symbol=BTCJPY&orderId=7",
                5,
            ),
            (Method::GET, "/api/v3/account", "", 20),
            (Method::GET, "/sapi/v1/capital/config/getall", "", 10),
            (
                Method::GET,
                "/sapi/v1/capital/deposit/address",
                "coin=BTC",
                10,
            ),
            (Method::GET, "/sapi/v1/capital/deposit/hisrec", "", 1),
            (Method::POST, "/sapi/v1/capital/withdraw/apply", "", 900),
            (Method::GET, "/sapi/v1/capital/withdraw/history", "", 10),
            (Method::GET, "/sapi/v1/capital/withdraw/apply", "", 1),
            (Method::GET, "/sapi/v1/system/status", "", 1),
            (Method::GET, "/no/such/path", "", 1),
            (Method::PUT, "/api/v3/account", "", 1),
        ];
        for (method, path, query, weight) in cases {
            assert_eq!(
                request_weight(method, path, query),
                *weight,
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn ticker_weight_by_symbol_count() {
        let list = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("%22S{i}%22")).collect();
            format!("symbols=%5B{}%5D", names.join(","))
        };
        for (n, weight) in [(1, 2), (20, 2), (21, 40), (100, 40), (101, 80), (500, 80)] {
            assert_eq!(
                request_weight(&Method::GET, "/api/v3/ticker/24hr", &list(n)),
                weight,
                "{n} symbols"
            );
        }
        assert_eq!(symbol_count("[\"A\",\"B\",\"C\"]"), 3);
        assert_eq!(symbol_count("%5B%22A%22%2c%22B%22%5D"), 2);
    }

    #[test]
    fn kinds() {
        assert_eq!(
            RequestKind::of(&Method::DELETE, "/api/v3/order"),
            RequestKind::Cancel
        );
        assert_eq!(
            RequestKind::of(&Method::DELETE, "/api/v3/openOrders"),
            RequestKind::Cancel
        );
        assert_eq!(
            RequestKind::of(&Method::POST, "/api/v3/order"),
            RequestKind::NewOrder
        );
        assert_eq!(
            RequestKind::of(&Method::POST, "/api/v3/order/test"),
            RequestKind::Other
        );
        assert_eq!(
            RequestKind::of(&Method::GET, "/api/v3/order"),
            RequestKind::Other
        );
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::V4(ONE));
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap_or(IpAddr::V4(ONE));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::V4(ONE));
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap_or(IpAddr::V4(ONE));
        assert_eq!(client_key(mapped), IpAddr::V4(ONE));
        assert_eq!(client_key(IpAddr::V4(ONE)), IpAddr::V4(ONE));
    }

    #[test]
    fn windows_are_clock_aligned() {
        let mut w = Window::default();
        assert!(w.roll(T0 + 5_000, MINUTE_MS));
        w.count = 7;
        assert!(!w.roll(T0 + 59_999, MINUTE_MS));
        assert_eq!(w.count_at(T0 + 59_999, MINUTE_MS), 7);
        assert_eq!(w.count_at(T0 + 60_000, MINUTE_MS), 0);
        assert!(w.roll(T0 + 60_000, MINUTE_MS));
        assert_eq!((w.start_ms, w.count), (T0 + 60_000, 0));
        assert_eq!(window_retry_after(T0, MINUTE_MS), 60);
        assert_eq!(window_retry_after(T0 + 20_000, MINUTE_MS), 40);
        assert_eq!(window_retry_after(T0 + 59_001, MINUTE_MS), 1);
        assert_eq!(window_retry_after(T0 + 59_999, MINUTE_MS), 1);
        assert_eq!(seconds_until(10, 5), 1);
    }

    #[test]
    fn bans_double_up_to_three_days() {
        let lengths: Vec<u64> = (0..14)
            .map(|n| ban_ms(BAN_FIRST_MS, BAN_MAX_MS, n) / MINUTE_MS)
            .collect();
        assert_eq!(
            lengths,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4320, 4320]
        );
        assert_eq!(ban_ms(BAN_FIRST_MS, BAN_MAX_MS, u32::MAX), BAN_MAX_MS);
        assert_eq!(ban_ms(u64::MAX / 2 + 1, u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn a_signed_request_makes_its_address_a_customers_for_an_hour_unless_banned() {
        let l = Limiter::new(Limits::default());
        let v6 = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 7));
        let v6_neighbour = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 8));
        assert!(!l.is_customer(ip(1), T0));
        l.vouch(ip(1), T0);
        l.vouch(v6, T0);
        assert!(l.is_customer(ip(1), T0));
        assert!(!l.is_customer(ip(2), T0), "only the address that signed");
        assert!(l.is_customer(v6_neighbour, T0), "an IPv6 /64 is one client");
        assert!(l.is_customer(ip(1), T0 + CUSTOMER_MEMORY_MS - 1));
        assert!(!l.is_customer(ip(1), T0 + CUSTOMER_MEMORY_MS));
        // A customer's address is remembered while idle.
        let state = IpState {
            customer_until_ms: T0 + CUSTOMER_MEMORY_MS,
            ..IpState::default()
        };
        assert!(!state.idle(T0 + 10 * MINUTE_MS, l.limits()));
        assert!(state.idle(T0 + CUSTOMER_MEMORY_MS, l.limits()));
        // A banned address is no customer's while its ban lasts.
        l.vouch(ip(3), T0);
        for _ in 0..=FAILURES_BEFORE_BAN {
            l.count_failure(ip(3), T0);
        }
        assert!(l.banned(ip(3), T0));
        assert!(!l.is_customer(ip(3), T0 + 1));
        assert!(l.is_customer(ip(3), T0 + BAN_FIRST_MS));
    }

    #[test]
    fn table_evicts_idle_entries_and_the_least_recently_used_at_the_cap() {
        let mut t: Table<u32, u64> = Table::new(3);
        *t.touch(1, || 0) = 10;
        *t.touch(2, || 0) = 20;
        *t.touch(3, || 0) = 30;
        // 1 is used again: 2 is now the least recently used.
        assert_eq!(*t.touch(1, || 0), 10);
        *t.touch(4, || 0) = 40;
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted_at_cap, 1);
        assert!(t.get_mut(&2).is_none());
        assert_eq!(t.get_mut(&1).copied(), Some(10));
        // Idle eviction stops at the first busy entry from the old end (3, then 1).
        t.evict_idle(5, |v| *v == 30);
        assert_eq!(t.len(), 2);
        t.evict_idle(5, |v| *v == 40);
        assert_eq!(t.len(), 2, "1 is busy and in front");
        t.evict_idle(5, |_| true);
        assert_eq!(t.len(), 0);
        assert!(t.recency.is_empty());
        let mut one: Table<u32, u64> = Table::new(0);
        one.touch(1, || 1);
        one.touch(2, || 2);
        assert_eq!(one.len(), 1, "a capacity of 0 acts as 1");
    }

    fn small() -> Limits {
        Limits {
            request_weight_per_minute: 10,
            orders_per_10s: 2,
            orders_per_day: 3,
            refusals_before_ban: 2,
            ..Limits::DEFAULT
        }
    }

    #[test]
    fn new_websocket_connections_are_counted_per_five_minutes() {
        let l = Limiter::new(Limits {
            ws_connections_per_5m: 3,
            ..small()
        });
        let start = T0 - T0 % FIVE_MINUTES_MS;
        for i in 0..3 {
            assert!(l.count_ws_connection(ip(1), start + i), "connection {i}");
        }
        assert!(!l.count_ws_connection(ip(1), start + 10));
        assert!(!l.count_ws_connection(ip(1), start + FIVE_MINUTES_MS - 1));
        // Another address has its own count. An address that only opens WebSocket
        // connections is remembered while its window lasts (it is not idle).
        assert!(l.count_ws_connection(ip(2), start + 10));
        let state = lock(&l.ips).get_mut(&ip(2)).copied().expect("remembered");
        assert!(!state.idle(start + 20, l.limits()));
        assert!(state.idle(start + FIVE_MINUTES_MS, l.limits()));
        // The next window starts again.
        assert!(l.count_ws_connection(ip(1), start + FIVE_MINUTES_MS));
    }

    #[test]
    fn bans_in_force_and_their_ends() {
        let l = Limiter::new(Limits {
            failures_before_ban: 0,
            ..small()
        });
        assert_eq!(l.ban_end(ip(1), T0), None);
        let until = l.count_failure(ip(1), T0).expect("banned at once");
        assert_eq!(l.ban_end(ip(1), T0 + 1), Some(until));
        assert_eq!(l.ban_end(ip(1), until), None, "over when it ends");
        assert_eq!(l.bans_in_force(T0 + 1), vec![(ip(1), until)]);
        assert!(l.bans_in_force(until).is_empty());
        // An IPv6 client is banned, and listed, by its /64.
        let v6: IpAddr = "2001:db8:7:8::1".parse().expect("ip");
        let end6 = l.count_failure(v6, T0).expect("banned");
        let listed: Vec<_> = l.bans_in_force(T0 + 1).into_iter().map(|b| b.0).collect();
        assert!(listed.contains(&client_key(v6)), "{listed:?}");
        assert_eq!(
            l.ban_end("2001:db8:7:8::ffff".parse().expect("ip"), T0 + 1),
            Some(end6)
        );
    }

    #[test]
    fn weight_then_refusals_then_a_ban() {
        let l = Limiter::new(small());
        let a = ip(1);
        assert_eq!(
            l.check_weight(a, 6, false, T0),
            WeightDecision::Admit { used: 6 }
        );
        assert_eq!(
            l.check_weight(a, 4, false, T0),
            WeightDecision::Admit { used: 10 }
        );
        let refused = WeightDecision::Refuse {
            used: 10,
            retry_after_s: 50,
        };
        assert_eq!(l.check_weight(a, 1, false, T0 + 10_000), refused);
        // A cancel passes and still counts.
        assert_eq!(
            l.check_weight(a, 1, true, T0 + 10_000),
            WeightDecision::Admit { used: 11 }
        );
        assert_eq!(
            l.check_weight(ip(2), 1, false, T0 + 10_000),
            WeightDecision::Admit { used: 1 }
        );
        assert!(matches!(
            l.check_weight(a, 1, false, T0 + 10_000),
            WeightDecision::Refuse { .. }
        ));
        let until_ms = T0 + 10_000 + BAN_FIRST_MS;
        assert_eq!(
            l.check_weight(a, 1, false, T0 + 10_000),
            WeightDecision::Banned {
                used: 11,
                until_ms,
                retry_after_s: 120
            }
        );
        // Banned: even cancels, even in a later window.
        assert_eq!(
            l.check_weight(a, 1, true, T0 + 70_000),
            WeightDecision::Banned {
                used: 0,
                until_ms,
                retry_after_s: 60
            }
        );
        assert_eq!(
            l.check_weight(a, 1, false, until_ms),
            WeightDecision::Admit { used: 1 }
        );
    }

    fn ban(l: &Limiter, a: IpAddr, now_ms: u64) -> u64 {
        let limit = l.limits().request_weight_per_minute;
        let _ = l.check_weight(a, limit, false, now_ms);
        loop {
            if let WeightDecision::Banned { until_ms, .. } = l.check_weight(a, 1, false, now_ms) {
                return until_ms - now_ms;
            }
        }
    }

    #[test]
    fn repeat_offenders_are_banned_longer_and_forgiven_later() {
        let l = Limiter::new(small());
        let a = ip(1);
        let mut now = T0;
        for expected in [2, 4, 8] {
            let length = ban(&l, a, now);
            assert_eq!(length, expected * MINUTE_MS);
            now += length;
        }
        // A day after the last ban ended, the slate is clean.
        now += OFFENDER_MEMORY_MS;
        assert_eq!(ban(&l, a, now), BAN_FIRST_MS);
    }

    #[test]
    fn order_counts_reserve_refuse_and_release() {
        let l = Limiter::new(small());
        let first = match l.reserve_order(7, T0) {
            OrderDecision::Admit(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            first.counts,
            OrderCounts {
                ten_seconds: 1,
                day: 1
            }
        );
        assert!(matches!(l.reserve_order(7, T0), OrderDecision::Admit(_)));
        assert_eq!(
            l.reserve_order(7, T0 + 1_000),
            OrderDecision::Refuse {
                counts: OrderCounts {
                    ten_seconds: 2,
                    day: 2
                },
                limit: 2,
                interval: "10 SECOND",
                retry_after_s: 9,
            }
        );
        // Another key is not affected.
        assert!(matches!(l.reserve_order(8, T0), OrderDecision::Admit(_)));
        // A failed order is given back.
        assert_eq!(
            l.release(&first, T0 + 1_000),
            OrderCounts {
                ten_seconds: 1,
                day: 1
            }
        );
        assert!(matches!(
            l.reserve_order(7, T0 + 1_000),
            OrderDecision::Admit(_)
        ));
        // Next 10 s: one more fits the day (3), then the day limit bites.
        let third = match l.reserve_order(7, T0 + 10_000) {
            OrderDecision::Admit(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            third.counts,
            OrderCounts {
                ten_seconds: 1,
                day: 3
            }
        );
        match l.reserve_order(7, T0 + 10_001) {
            OrderDecision::Refuse {
                limit: 3,
                interval: "1 DAY",
                counts:
                    OrderCounts {
                        ten_seconds: 1,
                        day: 3,
                    },
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        // A release after its 10-second window ended gives back only the day's count.
        assert_eq!(
            l.release(&first, T0 + 10_002),
            OrderCounts {
                ten_seconds: 1,
                day: 2
            }
        );
    }

    #[test]
    fn idle_addresses_leave_the_table() {
        let l = Limiter::new(Limits {
            ip_table_max: 1_000,
            ..small()
        });
        for i in 0..100u8 {
            let _ = l.check_weight(ip(i), 1, false, T0);
        }
        assert_eq!(l.ip_entries(), 100);
        // A minute later each request drops two idle entries.
        for i in 0..50u8 {
            let _ = l.check_weight(ip(200), 1, false, T0 + MINUTE_MS + u64::from(i));
        }
        assert_eq!(l.ip_entries(), 1);
        assert_eq!(l.ip_evictions_at_cap(), 0);
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_cap() {
        let l = Limiter::new(Limits {
            ip_table_max: 64,
            ..small()
        });
        for i in 0..10_000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check_weight(a, 1, false, T0);
            assert!(l.ip_entries() <= 64);
        }
        assert_eq!(l.ip_evictions_at_cap(), 10_000 - 64);
    }

    #[test]
    fn defaults_match_what_exchange_info_advertises() {
        let json = Limits::default().rate_limits_json();
        assert_eq!(json[0]["limit"], 6000);
        assert_eq!(json[1]["limit"], 100);
        assert_eq!(json[2]["limit"], 200_000);
        assert_eq!(json[3]["limit"], 61_000);
    }
}
