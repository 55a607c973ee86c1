//! The binary encoding of journal records: what the bytes of one record's payload mean.
//!
//! Every command is written to the journal before the engine applies it. The journal
//! stores each record's payload as opaque bytes (with its own sequence number, length,
//! checksum and hash chain around it); this module defines those bytes. One payload is
//! one [`Entry`]: the time the sequencer gave the command ([`Ctx::timestamp_ms`]; the
//! sequence number is the journal record's own), who issued it ([`Origin`]), and the
//! [`Command`] itself.
//!
//! [`encode`] writes an entry, [`decode`] reads one back and never panics: every way
//! bytes can be wrong is a [`CodecError`] naming the byte offset (from the start of the
//! payload) and the field where reading stopped. [`to_json`] renders an entry as one
//! JSON object for `kura journal dump`.
//!
//! # Layout, version 1
//!
//! General rules:
//!
//! - Integers are fixed width, little-endian: `u8`, `u16`, `u32`, `u64`, `i128`.
//! - A string is a `u16` byte length followed by that many bytes of UTF-8. Each string
//!   has a maximum length (below); a longer length is an error, as is invalid UTF-8.
//! - A list is a `u16` element count followed by the elements, each with a maximum count.
//! - An `Option<T>` is one byte, `0` = absent or `1` = present followed by `T`.
//! - A `bool` is one byte, `0` = false or `1` = true.
//! - An enum is a one-byte tag (tables below), followed by that variant's fields.
//! - Any other byte value where a tag, option or bool is expected is an error.
//! - Nothing follows the last field: trailing bytes are an error.
//!
//! The encoding is canonical: an entry has exactly one encoding, and every payload that
//! decodes is byte for byte the encoding of the entry it decodes to.
//!
//! A payload is:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | codec version, `u8`, currently [`CODEC_VERSION`] = 1 |
//! | 1 | 1 | command tag, `u8` (table below) |
//! | 2 | 8 | `ctx_timestamp_ms`, `u64`, milliseconds since the Unix epoch |
//! | 10 | … | origin (below) |
//! | … | … | the command's fields, in the order listed below |
//!
//! Origin (who issued the command), a tag byte then its fields:
//!
//! | tag | variant | fields |
//! |----:|---------|--------|
//! | 0 | `Internal` (the exchange itself, e.g. bootstrap) | none |
//! | 1 | `Operator` | `name`: string ≤ [`OPERATOR_NAME_MAX`] = 64 |
//! | 2 | `Api` | `key_id`: `u64`; `ip`: 16 bytes, an IPv6 address in network order (IPv4 as `::ffff:a.b.c.d`); `user_agent`: string ≤ [`USER_AGENT_MAX`] = 256 |
//! | 3 | `Admin` (an operator action with its reason) | `operator`: string ≤ [`OPERATOR_NAME_MAX`] = 64; `reason`: string ≤ [`REASON_MAX`] = 256 |
//!
//! Commands. A tag is never reused: a removed command keeps its number retired, a new
//! command takes the next unused number. Tag 0 is never a command.
//!
//! | tag | command | fields, in order |
//! |----:|---------|------------------|
//! | 1 | `AddAsset` | `symbol`: string ≤ 20; `scale`: `u8` ≤ 18 ([`kura_units::MAX_SCALE`]) |
//! | 2 | `AddMarket` | `spec`: market spec (below) |
//! | 3 | `CreateUser` | none |
//! | 4 | `SetFeeTier` | `user`: `u32`; `tier`: `u8` |
//! | 5 | `Deposit` | `user`: `u32`; `asset`: `u16`; `amount`: `u64`; `reference`: string ≤ 128 |
//! | 6 | `RequestWithdrawal` | `user`: `u32`; `asset`: `u16`; `amount`: `u64`; `id`: string ≤ 128 |
//! | 7 | `SettleWithdrawal` | `id`: string ≤ 128 |
//! | 8 | `CancelWithdrawal` | `id`: string ≤ 128 |
//! | 9 | `Adjust` | `user`: `u32`; `asset`: `u16`; `delta`: `i128`, magnitude ≤ `u64::MAX`; `reason`: string ≤ 256 |
//! | 10 | `PlaceOrder` | `user`: `u32`; `market`: `u32`; `side`: side; `order`: order type; `client_id`: `Option<client order id>`; `stp`: `Option<stp>` |
//! | 11 | `CancelOrder` | `user`: `u32`; `market`: `u32`; `order`: order ref |
//! | 12 | `CancelAll` | `user`: `u32`; `market`: `u32` |
//! | 13 | `AmendOrder` | `user`: `u32`; `market`: `u32`; `order`: order ref; `price`: `Option<u64>` (ticks); `remaining`: `Option<u64>` (lots) |
//! | 14 | `HaltMarket` | `market`: `u32`; `reason`: string ≤ 256 |
//! | 15 | `ResumeMarket` | `market`: `u32` |
//! | 16 | `HaltWithdrawals` | `asset`: `u16`; `reason`: string ≤ 256 |
//! | 17 | `ResumeWithdrawals` | `asset`: `u16` |
//! | 18 | `RegisterUser` | `name`: string ≤ 64 |
//! | 19 | `CreateApiKey` | `user`: `u32`; `key`: string ≤ 64; `scheme`: `u8` 0 = HMAC, 1 = Ed25519 followed by its 32-byte public key; `permissions`: `u8` bits (1 read, 2 trade, 4 withdraw); `ip_allow`: list ≤ 16 of (16-byte IPv6 address, `u8` prefix ≤ 128); `label`: string ≤ 64 |
//! | 20 | `RevokeApiKey` | `key`: string ≤ 64 |
//! | 21 | `RegisterWallet` | `asset`: `u16`; `role`: `u8` (0 deposit, 1 hot, 2 cold, 3 retired); `descriptor`: string ≤ 1024 |
//! | 22 | `AssignDepositAddress` | `user`: `u32`; `asset`: `u16` |
//! | 23 | `ReverseDeposit` | `reference`: string ≤ 128; `reason`: string ≤ 256 |
//! | 24 | `Reconcile` | `asset`: `u16`; `height`: `u32`; `block_hash`: 32 bytes (internal byte order); `holdings`: `u64` |
//! | 25 | `SetWithdrawalPolicy` | `asset`: `u16`; `fee`, `min_amount`, `daily_limit`, `approval_above`: `u64` each; `address_delay_ms`: `u64`; `listed_only`: bool |
//! | 26 | `AddWithdrawalAddress` | `user`: `u32`; `asset`: `u16`; `address`: string ≤ 100 |
//! | 27 | `RequestChainWithdrawal` | `user`: `u32`; `asset`: `u16`; `amount`: `u64`; `id`: string ≤ 128; `address`: string ≤ 100 |
//! | 28 | `ApproveWithdrawal` | `id`: string ≤ 128 |
//! | 29 | `BuildWithdrawalBatch` | `asset`: `u16`; `withdrawals`: list ≤ 1000 of string ≤ 128; `inputs`: list ≤ 1000 of (32-byte txid, internal order; `vout`: `u32`); `change`: `Option<(wallet u32, index u32)>`; `network_fee`: `u64`; `txid`: 32 bytes |
//! | 30 | `BumpWithdrawalBatch` | `batch`: `u64`; `txid`: 32 bytes; `network_fee`: `u64` |
//! | 31 | `FinishWithdrawalBatch` | `batch`: `u64`; `txid`: 32 bytes; `height`: `u32`; `network_fee`: `u64`; `paid`: bool |
//! | 32 | `RecordSolvency` | `epoch`: `u64`; `roots`: list ≤ [`SOLVENCY_ROOTS_MAX`] = 256 of (`asset`: `u16`; `ledger_seq`: `u64`; `epoch_id`: 32 bytes; `depth`: `u8`; `root_hash`: 32 bytes; `root_sum`: `u64`; `reserves`: `Option<u64>`) |
//! | 33 | `BuildTransfer` | `asset`: `u16`; `inputs`: list ≤ 1000 of (32-byte txid, internal order; `vout`: `u32`); `to`: (wallet `u32`, index `u32`); `amount`: `u64`; `change`: `Option<(wallet u32, index u32)>`; `network_fee`: `u64`; `txid`: 32 bytes |
//! | 34 | `RejectWithdrawal` | `id`: string ≤ 128 |
//! | 35 | `AbandonTransfer` | `batch`: `u64` |
//!
//! Ids are their integers (`UserId` `u32`, `AssetId` `u16`, `MarketId` `u32`, `OrderId`
//! `u64`); amounts are minor units, prices ticks, quantities lots, each a `u64`.
//!
//! Market spec (`AddMarket`): `symbol`: string ≤ 20; `base`: `u16`; `quote`: `u16`;
//! `tick`: `u64`; `lot`: `u64`; `min_qty`: `u64`; `max_qty`: `u64`; `min_notional`:
//! `u64`; `max_notional`: `u64`; `max_price`: `u64`; `fees`: list ≤ [`FEE_TIERS_MAX`] = 16
//! of (`maker_ppm`: `u32`, `taker_ppm`: `u32`); `collar_bps`: `u32`; `default_stp`: stp.
//!
//! A client order id is a string of 1–36 characters of `A–Z a–z 0–9 - _`.
//!
//! | enum | tags |
//! |------|------|
//! | side | 0 buy, 1 sell |
//! | order type | 0 limit: `price` `u64`, `qty` `u64`, `tif` time in force, `post_only` bool; 1 market base: `qty` `u64`; 2 market quote: `quote` `u64` |
//! | time in force | 0 GTC, 1 IOC, 2 FOK |
//! | stp | 0 none, 1 expire taker, 2 expire maker, 3 expire both |
//! | order ref | 0 order id: `u64`; 1 client order id |
//!
//! Example: a deposit of 150,000 minor units of asset 1 to user 7 with reference "ab",
//! at timestamp 1,000 ms, issued by the exchange itself:
//!
//! ```text
//! 01                  version 1
//! 05                  command tag 5 = Deposit
//! e803000000000000    timestamp_ms 1000
//! 00                  origin tag 0 = Internal
//! 07000000            user 7
//! 0100                asset 1
//! f049020000000000    amount 150000
//! 0200 6162           reference: length 2, "ab"
//! ```
//!
//! # Limits
//!
//! The string and list limits are the engine's default limits (a longer value would be
//! rejected by the engine anyway), so they are part of the format: raising one is a new
//! [`CODEC_VERSION`]. [`encode`] cannot fail; given an entry over a limit it still writes
//! it, with the true length, so that [`decode`] refuses it with
//! [`CodecError::TooLong`]. Callers that take entries from outside use [`try_encode`],
//! which refuses such an entry before anything is written.
//!
//! Changing the layout in any way means a new [`CODEC_VERSION`]; a decoder that knows
//! several versions dispatches on the first byte.

use crate::{
    Command, Ctx, FeeTier, IpRange, KeyPermissions, KeyScheme, Limits, MarketSpec, OrderRef,
    OrderType, WalletRole,
};
use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv6Addr};
use kura_book::{Side, Stp, TimeInForce};
use kura_units::{
    Amount, AmountDelta, AssetId, ClientOrderId, ClientOrderIdError, MarketId, OrderId, PriceTicks,
    QtyLots, Scale, UserId,
};

/// Version of the payload layout, the first byte of every payload.
pub const CODEC_VERSION: u8 = 1;

/// Longest operator name, in bytes.
pub const OPERATOR_NAME_MAX: usize = 64;
/// Longest API user agent, in bytes.
pub const USER_AGENT_MAX: usize = 256;
/// Longest asset or market symbol, in bytes (the engine allows 12 for assets, 20 for
/// markets).
pub const SYMBOL_MAX: usize = 20;
/// Longest deposit reference or withdrawal id, in bytes.
pub const REFERENCE_MAX: usize = 128;
/// Longest wallet descriptor.
pub const DESCRIPTOR_MAX: usize = crate::custody::DESCRIPTOR_MAX;
/// Longest reason of an adjustment or a halt, in bytes.
pub const REASON_MAX: usize = 256;
/// Most fee tiers in one market spec.
pub const FEE_TIERS_MAX: usize = 16;
/// Longest client order id, in bytes (what `ClientOrderId::parse` accepts).
pub const CLIENT_ID_MAX: usize = 36;
/// Longest customer name, API key id or key label.
pub const IDENTITY_TEXT_MAX: usize = 64;
/// Most IP ranges on one API key.
pub const IP_RANGES_MAX: usize = 16;
/// Longest withdrawal destination address.
pub const ADDRESS_MAX: usize = crate::withdraw::ADDRESS_MAX;
/// Most withdrawals, and most inputs, in one batch.
pub const BATCH_MAX: usize = crate::withdraw::BATCH_MAX;
/// Most roots in one solvency record.
pub const SOLVENCY_ROOTS_MAX: usize = crate::solvency::SOLVENCY_ROOTS_MAX;

const _: () = assert!(REFERENCE_MAX == Limits::DEFAULT.reference_len_max);
const _: () = assert!(REASON_MAX == Limits::DEFAULT.reason_len_max);
const _: () = assert!(FEE_TIERS_MAX == Limits::DEFAULT.fee_tiers_max);
const _: () = assert!(USER_AGENT_MAX <= u16::MAX as usize);
const _: () = assert!(REASON_MAX <= u16::MAX as usize);

// Command tags. Never reuse a number (see the module documentation).
const TAG_ADD_ASSET: u8 = 1;
const TAG_ADD_MARKET: u8 = 2;
const TAG_CREATE_USER: u8 = 3;
const TAG_SET_FEE_TIER: u8 = 4;
const TAG_DEPOSIT: u8 = 5;
const TAG_REQUEST_WITHDRAWAL: u8 = 6;
const TAG_SETTLE_WITHDRAWAL: u8 = 7;
const TAG_CANCEL_WITHDRAWAL: u8 = 8;
const TAG_ADJUST: u8 = 9;
const TAG_PLACE_ORDER: u8 = 10;
const TAG_CANCEL_ORDER: u8 = 11;
const TAG_CANCEL_ALL: u8 = 12;
const TAG_AMEND_ORDER: u8 = 13;
const TAG_HALT_MARKET: u8 = 14;
const TAG_RESUME_MARKET: u8 = 15;
const TAG_HALT_WITHDRAWALS: u8 = 16;
const TAG_RESUME_WITHDRAWALS: u8 = 17;
const TAG_REGISTER_USER: u8 = 18;
const TAG_CREATE_API_KEY: u8 = 19;
const TAG_REVOKE_API_KEY: u8 = 20;
const TAG_REGISTER_WALLET: u8 = 21;
const TAG_ASSIGN_DEPOSIT_ADDRESS: u8 = 22;
const TAG_REVERSE_DEPOSIT: u8 = 23;
const TAG_RECONCILE: u8 = 24;
const TAG_SET_WITHDRAWAL_POLICY: u8 = 25;
const TAG_ADD_WITHDRAWAL_ADDRESS: u8 = 26;
const TAG_REQUEST_CHAIN_WITHDRAWAL: u8 = 27;
const TAG_APPROVE_WITHDRAWAL: u8 = 28;
const TAG_BUILD_WITHDRAWAL_BATCH: u8 = 29;
const TAG_BUMP_WITHDRAWAL_BATCH: u8 = 30;
const TAG_FINISH_WITHDRAWAL_BATCH: u8 = 31;
const TAG_RECORD_SOLVENCY: u8 = 32;
const TAG_BUILD_TRANSFER: u8 = 33;
const TAG_REJECT_WITHDRAWAL: u8 = 34;
const TAG_ABANDON_TRANSFER: u8 = 35;

const ORIGIN_INTERNAL: u8 = 0;
const ORIGIN_OPERATOR: u8 = 1;
const ORIGIN_API: u8 = 2;
const ORIGIN_ADMIN: u8 = 3;

/// One journal record's payload: a command with when and from whom it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The sequencer's timestamp for the command ([`Ctx::timestamp_ms`]).
    pub ctx_timestamp_ms: u64,
    pub origin: Origin,
    pub command: Command,
}

impl Entry {
    /// The engine context of this entry, given the journal record's sequence number.
    pub fn ctx(&self, seq: u64) -> Ctx {
        Ctx {
            seq,
            timestamp_ms: self.ctx_timestamp_ms,
        }
    }
}

/// Who issued a command, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The exchange itself (bootstrap, scheduled expiry, recovery).
    Internal,
    /// An operator through the admin tooling.
    Operator {
        /// At most [`OPERATOR_NAME_MAX`] bytes.
        name: String,
    },
    /// An operator's action through the admin tooling, with the reason they gave.
    Admin {
        /// At most [`OPERATOR_NAME_MAX`] bytes.
        operator: String,
        /// At most [`REASON_MAX`] bytes.
        reason: String,
    },
    /// A customer request through the API.
    Api {
        key_id: u64,
        /// The client's address as 16 bytes of IPv6; IPv4 is mapped (`::ffff:a.b.c.d`),
        /// see [`ip_to_bytes`].
        ip: [u8; 16],
        /// At most [`USER_AGENT_MAX`] bytes.
        user_agent: String,
    },
}

/// An IP address as the 16 bytes [`Origin::Api`] stores: IPv6 as is, IPv4 mapped into
/// IPv6 (`::ffff:a.b.c.d`).
pub fn ip_to_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address [`ip_to_bytes`] stored: an IPv4-mapped address comes back as IPv4.
pub fn ip_from_bytes(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// Why a payload could not be decoded (or an entry could not be encoded). Every variant
/// carries the byte offset, from the start of the payload, where the problem was found,
/// and most name the field being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The first byte is not a codec version this build reads.
    UnsupportedVersion { offset: usize, version: u8 },
    /// The command tag is not a known command.
    UnknownCommand { offset: usize, tag: u8 },
    /// A tag, option or bool byte has a value outside its table.
    BadTag {
        offset: usize,
        field: &'static str,
        tag: u8,
    },
    /// The payload ends inside a field.
    Truncated {
        offset: usize,
        field: &'static str,
        needed: usize,
        available: usize,
    },
    /// Bytes remain after the last field.
    TrailingBytes { offset: usize, count: usize },
    /// A string is not valid UTF-8; `offset` is the first invalid byte.
    InvalidUtf8 { offset: usize, field: &'static str },
    /// A string or list is longer than its maximum; `offset` is its length field.
    TooLong {
        offset: usize,
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// An asset scale above [`kura_units::MAX_SCALE`].
    InvalidScale { offset: usize, places: u8 },
    /// A client order id that is not 1–36 characters of `A–Z a–z 0–9 - _`.
    InvalidClientOrderId {
        offset: usize,
        error: ClientOrderIdError,
    },
    /// An adjustment whose magnitude does not fit a `u64` amount.
    DeltaOutOfRange { offset: usize, value: i128 },
}

impl CodecError {
    /// The byte offset where the problem was found.
    pub fn offset(&self) -> usize {
        match *self {
            CodecError::UnsupportedVersion { offset, .. }
            | CodecError::UnknownCommand { offset, .. }
            | CodecError::BadTag { offset, .. }
            | CodecError::Truncated { offset, .. }
            | CodecError::TrailingBytes { offset, .. }
            | CodecError::InvalidUtf8 { offset, .. }
            | CodecError::TooLong { offset, .. }
            | CodecError::InvalidScale { offset, .. }
            | CodecError::InvalidClientOrderId { offset, .. }
            | CodecError::DeltaOutOfRange { offset, .. } => offset,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CodecError::UnsupportedVersion { offset, version } => write!(
                f,
                "byte {offset}: unsupported codec version {version} (this build reads version {CODEC_VERSION})"
            ),
            CodecError::UnknownCommand { offset, tag } => {
                write!(f, "byte {offset}: unknown command tag {tag}")
            }
            CodecError::BadTag { offset, field, tag } => {
                write!(f, "byte {offset}: invalid value {tag} for {field}")
            }
            CodecError::Truncated {
                offset,
                field,
                needed,
                available,
            } => write!(
                f,
                "byte {offset}: payload ends inside {field} (needed {needed} bytes, {available} left)"
            ),
            CodecError::TrailingBytes { offset, count } => write!(
                f,
                "byte {offset}: {count} unexpected bytes after the end of the entry"
            ),
            CodecError::InvalidUtf8 { offset, field } => {
                write!(f, "byte {offset}: {field} is not valid UTF-8")
            }
            CodecError::TooLong {
                offset,
                field,
                len,
                max,
            } => write!(
                f,
                "byte {offset}: {field} has length {len}, more than the maximum {max}"
            ),
            CodecError::InvalidScale { offset, places } => write!(
                f,
                "byte {offset}: asset scale {places} is above the maximum {}",
                kura_units::MAX_SCALE
            ),
            CodecError::InvalidClientOrderId { offset, error } => {
                write!(f, "byte {offset}: invalid client order id: {error}")
            }
            CodecError::DeltaOutOfRange { offset, value } => write!(
                f,
                "byte {offset}: adjustment {value} is larger in magnitude than any amount"
            ),
        }
    }
}

impl std::error::Error for CodecError {}

// ---- encoding --------------------------------------------------------------------

/// Appends to `out`, remembering the first limit an entry exceeds.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    error: Option<CodecError>,
}

impl Writer<'_> {
    fn offset(&self) -> usize {
        self.out.len() - self.start
    }
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn i128(&mut self, v: i128) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// A length or count, noting it when it is over `max`. A length that does not even
    /// fit a `u16` is written as `u16::MAX`, still over every maximum.
    fn len(&mut self, len: usize, max: usize, field: &'static str) -> usize {
        if len > max && self.error.is_none() {
            self.error = Some(CodecError::TooLong {
                offset: self.offset(),
                field,
                len,
                max,
            });
        }
        let written = u16::try_from(len).unwrap_or(u16::MAX);
        self.u16(written);
        usize::from(written)
    }
    fn str(&mut self, s: &str, max: usize, field: &'static str) {
        let n = self.len(s.len(), max, field);
        self.out
            .extend_from_slice(s.as_bytes().get(..n).unwrap_or(s.as_bytes()));
    }
    fn side(&mut self, side: Side) {
        self.u8(match side {
            Side::Buy => 0,
            Side::Sell => 1,
        });
    }
    fn tif(&mut self, tif: TimeInForce) {
        self.u8(match tif {
            TimeInForce::Gtc => 0,
            TimeInForce::Ioc => 1,
            TimeInForce::Fok => 2,
        });
    }
    fn stp(&mut self, stp: Stp) {
        self.u8(match stp {
            Stp::None => 0,
            Stp::ExpireTaker => 1,
            Stp::ExpireMaker => 2,
            Stp::ExpireBoth => 3,
        });
    }
    fn client_id(&mut self, id: &ClientOrderId) {
        // Always 1–36 bytes by construction.
        let bytes = id.as_bytes();
        let n = self.len(bytes.len(), CLIENT_ID_MAX, "client order id");
        self.out.extend_from_slice(bytes.get(..n).unwrap_or(bytes));
    }
    fn order_ref(&mut self, order: &OrderRef) {
        match order {
            OrderRef::Id(id) => {
                self.u8(0);
                self.u64(id.0);
            }
            OrderRef::Client(cid) => {
                self.u8(1);
                self.client_id(cid);
            }
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }

    fn origin(&mut self, origin: &Origin) {
        match origin {
            Origin::Internal => self.u8(ORIGIN_INTERNAL),
            Origin::Operator { name } => {
                self.u8(ORIGIN_OPERATOR);
                self.str(name, OPERATOR_NAME_MAX, "origin.name");
            }
            Origin::Admin { operator, reason } => {
                self.u8(ORIGIN_ADMIN);
                self.str(operator, OPERATOR_NAME_MAX, "origin.operator");
                self.str(reason, REASON_MAX, "origin.reason");
            }
            Origin::Api {
                key_id,
                ip,
                user_agent,
            } => {
                self.u8(ORIGIN_API);
                self.u64(*key_id);
                self.out.extend_from_slice(ip);
                self.str(user_agent, USER_AGENT_MAX, "origin.user_agent");
            }
        }
    }

    fn spec(&mut self, spec: &MarketSpec) {
        self.str(&spec.symbol, SYMBOL_MAX, "add_market.symbol");
        self.u16(spec.base.0);
        self.u16(spec.quote.0);
        self.u64(spec.tick.get());
        self.u64(spec.lot.get());
        self.u64(spec.min_qty.get());
        self.u64(spec.max_qty.get());
        self.u64(spec.min_notional.get());
        self.u64(spec.max_notional.get());
        self.u64(spec.max_price.get());
        let n = self.len(spec.fees.len(), FEE_TIERS_MAX, "add_market.fees");
        for tier in spec.fees.iter().take(n) {
            self.u32(tier.maker_ppm);
            self.u32(tier.taker_ppm);
        }
        self.u32(spec.collar_bps);
        self.stp(spec.default_stp);
    }

    fn entry(&mut self, entry: &Entry) {
        let cmd = &entry.command;
        self.u8(CODEC_VERSION);
        self.u8(command_tag(cmd));
        self.u64(entry.ctx_timestamp_ms);
        self.origin(&entry.origin);
        match cmd {
            Command::AddAsset { symbol, scale } => {
                self.str(symbol, SYMBOL_MAX, "add_asset.symbol");
                self.u8(scale.places());
            }
            Command::AddMarket { spec } => self.spec(spec),
            Command::CreateUser => {}
            Command::SetFeeTier { user, tier } => {
                self.u32(user.0);
                self.u8(*tier);
            }
            Command::Deposit {
                user,
                asset,
                amount,
                reference,
            } => {
                self.u32(user.0);
                self.u16(asset.0);
                self.u64(amount.get());
                self.str(reference, REFERENCE_MAX, "deposit.reference");
            }
            Command::RequestWithdrawal {
                user,
                asset,
                amount,
                id,
            } => {
                self.u32(user.0);
                self.u16(asset.0);
                self.u64(amount.get());
                self.str(id, REFERENCE_MAX, "request_withdrawal.id");
            }
            Command::SettleWithdrawal { id } => {
                self.str(id, REFERENCE_MAX, "settle_withdrawal.id");
            }
            Command::CancelWithdrawal { id } => {
                self.str(id, REFERENCE_MAX, "cancel_withdrawal.id");
            }
            Command::RejectWithdrawal { id } => {
                self.str(id, REFERENCE_MAX, "reject_withdrawal.id");
            }
            Command::AbandonTransfer { batch } => self.u64(*batch),
            Command::Adjust {
                user,
                asset,
                delta,
                reason,
            } => {
                self.u32(user.0);
                self.u16(asset.0);
                self.i128(delta.get());
                self.str(reason, REASON_MAX, "adjust.reason");
            }
            Command::PlaceOrder {
                user,
                market,
                side,
                order,
                client_id,
                stp,
            } => {
                self.u32(user.0);
                self.u32(market.0);
                self.side(*side);
                match *order {
                    OrderType::Limit {
                        price,
                        qty,
                        tif,
                        post_only,
                    } => {
                        self.u8(0);
                        self.u64(price.get());
                        self.u64(qty.get());
                        self.tif(tif);
                        self.bool(post_only);
                    }
                    OrderType::MarketBase { qty } => {
                        self.u8(1);
                        self.u64(qty.get());
                    }
                    OrderType::MarketQuote { quote } => {
                        self.u8(2);
                        self.u64(quote.get());
                    }
                }
                match client_id {
                    None => self.u8(0),
                    Some(cid) => {
                        self.u8(1);
                        self.client_id(cid);
                    }
                }
                match stp {
                    None => self.u8(0),
                    Some(stp) => {
                        self.u8(1);
                        self.stp(*stp);
                    }
                }
            }
            Command::CancelOrder {
                user,
                market,
                order,
            } => {
                self.u32(user.0);
                self.u32(market.0);
                self.order_ref(order);
            }
            Command::CancelAll { user, market } => {
                self.u32(user.0);
                self.u32(market.0);
            }
            Command::AmendOrder {
                user,
                market,
                order,
                price,
                remaining,
            } => {
                self.u32(user.0);
                self.u32(market.0);
                self.order_ref(order);
                self.opt_u64(price.map(PriceTicks::get));
                self.opt_u64(remaining.map(QtyLots::get));
            }
            Command::HaltMarket { market, reason } => {
                self.u32(market.0);
                self.str(reason, REASON_MAX, "halt_market.reason");
            }
            Command::ResumeMarket { market } => self.u32(market.0),
            Command::HaltWithdrawals { asset, reason } => {
                self.u16(asset.0);
                self.str(reason, REASON_MAX, "halt_withdrawals.reason");
            }
            Command::ResumeWithdrawals { asset } => self.u16(asset.0),
            Command::RegisterUser { name } => {
                self.str(name, IDENTITY_TEXT_MAX, "register_user.name");
            }
            Command::CreateApiKey {
                user,
                key,
                scheme,
                permissions,
                ip_allow,
                label,
            } => {
                self.u32(user.0);
                self.str(key, IDENTITY_TEXT_MAX, "create_api_key.key");
                match scheme {
                    KeyScheme::Hmac => self.u8(0),
                    KeyScheme::Ed25519(public) => {
                        self.u8(1);
                        self.out.extend_from_slice(public);
                    }
                }
                self.u8(permissions.bits());
                let n = self.len(ip_allow.len(), IP_RANGES_MAX, "create_api_key.ip_allow");
                for r in ip_allow.iter().take(n) {
                    self.out.extend_from_slice(&r.addr);
                    self.u8(r.prefix);
                }
                self.str(label, IDENTITY_TEXT_MAX, "create_api_key.label");
            }
            Command::RevokeApiKey { key } => {
                self.str(key, IDENTITY_TEXT_MAX, "revoke_api_key.key");
            }
            Command::RegisterWallet {
                asset,
                role,
                descriptor,
            } => {
                self.u16(asset.0);
                self.u8(role.code());
                self.str(descriptor, DESCRIPTOR_MAX, "register_wallet.descriptor");
            }
            Command::AssignDepositAddress { user, asset } => {
                self.u32(user.0);
                self.u16(asset.0);
            }
            Command::ReverseDeposit { reference, reason } => {
                self.str(reference, REFERENCE_MAX, "reverse_deposit.reference");
                self.str(reason, REASON_MAX, "reverse_deposit.reason");
            }
            Command::Reconcile {
                asset,
                height,
                block_hash,
                holdings,
            } => {
                self.u16(asset.0);
                self.u32(*height);
                self.out.extend_from_slice(block_hash);
                self.u64(holdings.get());
            }
            Command::SetWithdrawalPolicy { asset, policy } => {
                self.u16(asset.0);
                self.u64(policy.fee.get());
                self.u64(policy.min_amount.get());
                self.u64(policy.daily_limit.get());
                self.u64(policy.approval_above.get());
                self.u64(policy.address_delay_ms);
                self.bool(policy.listed_only);
            }
            Command::AddWithdrawalAddress {
                user,
                asset,
                address,
            } => {
                self.u32(user.0);
                self.u16(asset.0);
                self.str(address, ADDRESS_MAX, "add_withdrawal_address.address");
            }
            Command::RequestChainWithdrawal {
                user,
                asset,
                amount,
                id,
                address,
            } => {
                self.u32(user.0);
                self.u16(asset.0);
                self.u64(amount.get());
                self.str(id, REFERENCE_MAX, "request_chain_withdrawal.id");
                self.str(address, ADDRESS_MAX, "request_chain_withdrawal.address");
            }
            Command::ApproveWithdrawal { id } => {
                self.str(id, REFERENCE_MAX, "approve_withdrawal.id");
            }
            Command::BuildWithdrawalBatch {
                asset,
                withdrawals,
                inputs,
                change,
                network_fee,
                txid,
            } => {
                self.u16(asset.0);
                let n = self.len(
                    withdrawals.len(),
                    BATCH_MAX,
                    "build_withdrawal_batch.withdrawals",
                );
                for id in withdrawals.iter().take(n) {
                    self.str(id, REFERENCE_MAX, "build_withdrawal_batch.withdrawal");
                }
                let n = self.len(inputs.len(), BATCH_MAX, "build_withdrawal_batch.inputs");
                for input in inputs.iter().take(n) {
                    self.out.extend_from_slice(&input.txid);
                    self.u32(input.vout);
                }
                match change {
                    None => self.u8(0),
                    Some((wallet, index)) => {
                        self.u8(1);
                        self.u32(*wallet);
                        self.u32(*index);
                    }
                }
                self.u64(network_fee.get());
                self.out.extend_from_slice(txid);
            }
            Command::BumpWithdrawalBatch {
                batch,
                txid,
                network_fee,
            } => {
                self.u64(*batch);
                self.out.extend_from_slice(txid);
                self.u64(network_fee.get());
            }
            Command::FinishWithdrawalBatch {
                batch,
                txid,
                height,
                network_fee,
                paid,
            } => {
                self.u64(*batch);
                self.out.extend_from_slice(txid);
                self.u32(*height);
                self.u64(network_fee.get());
                self.bool(*paid);
            }
            Command::BuildTransfer {
                asset,
                inputs,
                to,
                amount,
                change,
                network_fee,
                txid,
            } => {
                self.u16(asset.0);
                let n = self.len(inputs.len(), BATCH_MAX, "build_transfer.inputs");
                for input in inputs.iter().take(n) {
                    self.out.extend_from_slice(&input.txid);
                    self.u32(input.vout);
                }
                self.u32(to.0);
                self.u32(to.1);
                self.u64(amount.get());
                match change {
                    None => self.u8(0),
                    Some((wallet, index)) => {
                        self.u8(1);
                        self.u32(*wallet);
                        self.u32(*index);
                    }
                }
                self.u64(network_fee.get());
                self.out.extend_from_slice(txid);
            }
            Command::RecordSolvency { epoch, roots } => {
                self.u64(*epoch);
                let n = self.len(roots.len(), SOLVENCY_ROOTS_MAX, "record_solvency.roots");
                for r in roots.iter().take(n) {
                    self.u16(r.asset.0);
                    self.u64(r.ledger_seq);
                    self.out.extend_from_slice(&r.epoch_id);
                    self.u8(r.depth);
                    self.out.extend_from_slice(&r.root_hash);
                    self.u64(r.root_sum);
                    match r.reserves {
                        None => self.u8(0),
                        Some(v) => {
                            self.u8(1);
                            self.u64(v);
                        }
                    }
                }
            }
        }
    }
}

/// The stable tag of a command (see the table in the module documentation).
fn command_tag(cmd: &Command) -> u8 {
    match cmd {
        Command::AddAsset { .. } => TAG_ADD_ASSET,
        Command::AddMarket { .. } => TAG_ADD_MARKET,
        Command::CreateUser => TAG_CREATE_USER,
        Command::SetFeeTier { .. } => TAG_SET_FEE_TIER,
        Command::Deposit { .. } => TAG_DEPOSIT,
        Command::RequestWithdrawal { .. } => TAG_REQUEST_WITHDRAWAL,
        Command::SettleWithdrawal { .. } => TAG_SETTLE_WITHDRAWAL,
        Command::CancelWithdrawal { .. } => TAG_CANCEL_WITHDRAWAL,
        Command::RejectWithdrawal { .. } => TAG_REJECT_WITHDRAWAL,
        Command::AbandonTransfer { .. } => TAG_ABANDON_TRANSFER,
        Command::Adjust { .. } => TAG_ADJUST,
        Command::PlaceOrder { .. } => TAG_PLACE_ORDER,
        Command::CancelOrder { .. } => TAG_CANCEL_ORDER,
        Command::CancelAll { .. } => TAG_CANCEL_ALL,
        Command::AmendOrder { .. } => TAG_AMEND_ORDER,
        Command::HaltMarket { .. } => TAG_HALT_MARKET,
        Command::ResumeMarket { .. } => TAG_RESUME_MARKET,
        Command::HaltWithdrawals { .. } => TAG_HALT_WITHDRAWALS,
        Command::ResumeWithdrawals { .. } => TAG_RESUME_WITHDRAWALS,
        Command::RegisterUser { .. } => TAG_REGISTER_USER,
        Command::CreateApiKey { .. } => TAG_CREATE_API_KEY,
        Command::RevokeApiKey { .. } => TAG_REVOKE_API_KEY,
        Command::RegisterWallet { .. } => TAG_REGISTER_WALLET,
        Command::AssignDepositAddress { .. } => TAG_ASSIGN_DEPOSIT_ADDRESS,
        Command::ReverseDeposit { .. } => TAG_REVERSE_DEPOSIT,
        Command::Reconcile { .. } => TAG_RECONCILE,
        Command::SetWithdrawalPolicy { .. } => TAG_SET_WITHDRAWAL_POLICY,
        Command::AddWithdrawalAddress { .. } => TAG_ADD_WITHDRAWAL_ADDRESS,
        Command::RequestChainWithdrawal { .. } => TAG_REQUEST_CHAIN_WITHDRAWAL,
        Command::ApproveWithdrawal { .. } => TAG_APPROVE_WITHDRAWAL,
        Command::BuildWithdrawalBatch { .. } => TAG_BUILD_WITHDRAWAL_BATCH,
        Command::BumpWithdrawalBatch { .. } => TAG_BUMP_WITHDRAWAL_BATCH,
        Command::FinishWithdrawalBatch { .. } => TAG_FINISH_WITHDRAWAL_BATCH,
        Command::BuildTransfer { .. } => TAG_BUILD_TRANSFER,
        Command::RecordSolvency { .. } => TAG_RECORD_SOLVENCY,
    }
}

/// Append the encoding of `entry` to `out`. Allocates nothing besides growing `out`.
///
/// An entry with a string or list over its limit is still written (with its true
/// length, or `u16::MAX` when that does not fit), so [`decode`] refuses it; use
/// [`try_encode`] to refuse it here instead.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let start = out.len();
    Writer {
        out,
        start,
        error: None,
    }
    .entry(entry);
}

/// Append the encoding of `entry` to `out`, or, when a string or list is over its limit
/// (the only way an entry can fail to encode), leave `out` as it was and say which
/// ([`CodecError::TooLong`], with the offset its length field would have had).
pub fn try_encode(entry: &Entry, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    let mut w = Writer {
        out,
        start,
        error: None,
    };
    w.entry(entry);
    match w.error {
        None => Ok(()),
        Some(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

// ---- decoding --------------------------------------------------------------------

/// Reads a payload; every failure names the offset. Never indexes out of bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Res<T> = Result<T, CodecError>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Res<&'a [u8]> {
        let truncated = CodecError::Truncated {
            offset: self.pos,
            field,
            needed: n,
            available: self.bytes.len().saturating_sub(self.pos),
        };
        let end = self.pos.checked_add(n).ok_or(truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Res<[u8; N]> {
        let at = self.pos;
        let s = self.take(N, field)?;
        <[u8; N]>::try_from(s).map_err(|_| CodecError::Truncated {
            offset: at,
            field,
            needed: N,
            available: s.len(),
        })
    }
    fn u8(&mut self, field: &'static str) -> Res<u8> {
        let [b] = self.arr::<1>(field)?;
        Ok(b)
    }
    fn u16(&mut self, field: &'static str) -> Res<u16> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Res<u32> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Res<u64> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
    fn i128(&mut self, field: &'static str) -> Res<i128> {
        Ok(i128::from_le_bytes(self.arr(field)?))
    }
    /// A tag byte that must be below `count`.
    fn tag(&mut self, count: u8, field: &'static str) -> Res<u8> {
        let at = self.pos;
        let tag = self.u8(field)?;
        if tag < count {
            Ok(tag)
        } else {
            Err(CodecError::BadTag {
                offset: at,
                field,
                tag,
            })
        }
    }
    fn bool(&mut self, field: &'static str) -> Res<bool> {
        Ok(self.tag(2, field)? == 1)
    }
    fn present(&mut self, field: &'static str) -> Res<bool> {
        self.bool(field)
    }
    fn len(&mut self, max: usize, field: &'static str) -> Res<usize> {
        let at = self.pos;
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(CodecError::TooLong {
                offset: at,
                field,
                len,
                max,
            });
        }
        Ok(len)
    }
    fn str(&mut self, max: usize, field: &'static str) -> Res<&'a str> {
        let len = self.len(max, field)?;
        let at = self.pos;
        let raw = self.take(len, field)?;
        core::str::from_utf8(raw).map_err(|e| CodecError::InvalidUtf8 {
            offset: at.saturating_add(e.valid_up_to()),
            field,
        })
    }
    fn string(&mut self, max: usize, field: &'static str) -> Res<String> {
        self.str(max, field).map(str::to_owned)
    }
    fn amount(&mut self, field: &'static str) -> Res<Amount> {
        self.u64(field).map(Amount::new)
    }
    fn user(&mut self, field: &'static str) -> Res<UserId> {
        self.u32(field).map(UserId)
    }
    fn asset(&mut self, field: &'static str) -> Res<AssetId> {
        self.u16(field).map(AssetId)
    }
    fn market(&mut self, field: &'static str) -> Res<MarketId> {
        self.u32(field).map(MarketId)
    }
    fn side(&mut self, field: &'static str) -> Res<Side> {
        Ok(match self.tag(2, field)? {
            0 => Side::Buy,
            _ => Side::Sell,
        })
    }
    fn tif(&mut self, field: &'static str) -> Res<TimeInForce> {
        Ok(match self.tag(3, field)? {
            0 => TimeInForce::Gtc,
            1 => TimeInForce::Ioc,
            _ => TimeInForce::Fok,
        })
    }
    fn stp(&mut self, field: &'static str) -> Res<Stp> {
        Ok(match self.tag(4, field)? {
            0 => Stp::None,
            1 => Stp::ExpireTaker,
            2 => Stp::ExpireMaker,
            _ => Stp::ExpireBoth,
        })
    }
    fn client_id(&mut self, field: &'static str) -> Res<ClientOrderId> {
        let at = self.pos;
        let text = self.str(CLIENT_ID_MAX, field)?;
        ClientOrderId::parse(text)
            .map_err(|error| CodecError::InvalidClientOrderId { offset: at, error })
    }
    fn order_ref(&mut self, field: &'static str) -> Res<OrderRef> {
        Ok(match self.tag(2, field)? {
            0 => OrderRef::Id(OrderId(self.u64(field)?)),
            _ => OrderRef::Client(self.client_id(field)?),
        })
    }
    fn opt_u64(&mut self, field: &'static str) -> Res<Option<u64>> {
        Ok(if self.present(field)? {
            Some(self.u64(field)?)
        } else {
            None
        })
    }

    fn origin(&mut self) -> Res<Origin> {
        Ok(match self.tag(4, "origin")? {
            ORIGIN_INTERNAL => Origin::Internal,
            ORIGIN_OPERATOR => Origin::Operator {
                name: self.string(OPERATOR_NAME_MAX, "origin.name")?,
            },
            ORIGIN_ADMIN => Origin::Admin {
                operator: self.string(OPERATOR_NAME_MAX, "origin.operator")?,
                reason: self.string(REASON_MAX, "origin.reason")?,
            },
            _ => Origin::Api {
                key_id: self.u64("origin.key_id")?,
                ip: self.arr("origin.ip")?,
                user_agent: self.string(USER_AGENT_MAX, "origin.user_agent")?,
            },
        })
    }

    fn spec(&mut self) -> Res<MarketSpec> {
        let symbol = self.string(SYMBOL_MAX, "add_market.symbol")?;
        let base = self.asset("add_market.base")?;
        let quote = self.asset("add_market.quote")?;
        let tick = self.amount("add_market.tick")?;
        let lot = self.amount("add_market.lot")?;
        let min_qty = QtyLots::new(self.u64("add_market.min_qty")?);
        let max_qty = QtyLots::new(self.u64("add_market.max_qty")?);
        let min_notional = self.amount("add_market.min_notional")?;
        let max_notional = self.amount("add_market.max_notional")?;
        let max_price = PriceTicks::new(self.u64("add_market.max_price")?);
        let n = self.len(FEE_TIERS_MAX, "add_market.fees")?;
        let mut fees = Vec::with_capacity(n);
        for _ in 0..n {
            fees.push(FeeTier {
                maker_ppm: self.u32("add_market.fees.maker_ppm")?,
                taker_ppm: self.u32("add_market.fees.taker_ppm")?,
            });
        }
        let collar_bps = self.u32("add_market.collar_bps")?;
        let default_stp = self.stp("add_market.default_stp")?;
        Ok(MarketSpec {
            symbol,
            base,
            quote,
            tick,
            lot,
            min_qty,
            max_qty,
            min_notional,
            max_notional,
            max_price,
            fees,
            collar_bps,
            default_stp,
        })
    }

    fn order_type(&mut self) -> Res<OrderType> {
        Ok(match self.tag(3, "place_order.order")? {
            0 => OrderType::Limit {
                price: PriceTicks::new(self.u64("place_order.price")?),
                qty: QtyLots::new(self.u64("place_order.qty")?),
                tif: self.tif("place_order.tif")?,
                post_only: self.bool("place_order.post_only")?,
            },
            1 => OrderType::MarketBase {
                qty: QtyLots::new(self.u64("place_order.qty")?),
            },
            _ => OrderType::MarketQuote {
                quote: self.amount("place_order.quote")?,
            },
        })
    }

    fn command(&mut self, tag: u8, tag_offset: usize) -> Res<Command> {
        Ok(match tag {
            TAG_ADD_ASSET => {
                let symbol = self.string(SYMBOL_MAX, "add_asset.symbol")?;
                let at = self.pos;
                let places = self.u8("add_asset.scale")?;
                let scale =
                    Scale::new(places).ok_or(CodecError::InvalidScale { offset: at, places })?;
                Command::AddAsset { symbol, scale }
            }
            TAG_ADD_MARKET => Command::AddMarket { spec: self.spec()? },
            TAG_CREATE_USER => Command::CreateUser,
            TAG_SET_FEE_TIER => Command::SetFeeTier {
                user: self.user("set_fee_tier.user")?,
                tier: self.u8("set_fee_tier.tier")?,
            },
            TAG_DEPOSIT => Command::Deposit {
                user: self.user("deposit.user")?,
                asset: self.asset("deposit.asset")?,
                amount: self.amount("deposit.amount")?,
                reference: self.string(REFERENCE_MAX, "deposit.reference")?,
            },
            TAG_REQUEST_WITHDRAWAL => Command::RequestWithdrawal {
                user: self.user("request_withdrawal.user")?,
                asset: self.asset("request_withdrawal.asset")?,
                amount: self.amount("request_withdrawal.amount")?,
                id: self.string(REFERENCE_MAX, "request_withdrawal.id")?,
            },
            TAG_SETTLE_WITHDRAWAL => Command::SettleWithdrawal {
                id: self.string(REFERENCE_MAX, "settle_withdrawal.id")?,
            },
            TAG_CANCEL_WITHDRAWAL => Command::CancelWithdrawal {
                id: self.string(REFERENCE_MAX, "cancel_withdrawal.id")?,
            },
            TAG_REJECT_WITHDRAWAL => Command::RejectWithdrawal {
                id: self.string(REFERENCE_MAX, "reject_withdrawal.id")?,
            },
            TAG_ABANDON_TRANSFER => Command::AbandonTransfer {
                batch: self.u64("abandon_transfer.batch")?,
            },
            TAG_ADJUST => {
                let user = self.user("adjust.user")?;
                let asset = self.asset("adjust.asset")?;
                let at = self.pos;
                let value = self.i128("adjust.delta")?;
                let magnitude = u64::try_from(value.unsigned_abs())
                    .map_err(|_| CodecError::DeltaOutOfRange { offset: at, value })?;
                let delta = if value < 0 {
                    AmountDelta::debit(Amount::new(magnitude))
                } else {
                    AmountDelta::credit(Amount::new(magnitude))
                };
                Command::Adjust {
                    user,
                    asset,
                    delta,
                    reason: self.string(REASON_MAX, "adjust.reason")?,
                }
            }
            TAG_PLACE_ORDER => Command::PlaceOrder {
                user: self.user("place_order.user")?,
                market: self.market("place_order.market")?,
                side: self.side("place_order.side")?,
                order: self.order_type()?,
                client_id: if self.present("place_order.client_id")? {
                    Some(self.client_id("place_order.client_id")?)
                } else {
                    None
                },
                stp: if self.present("place_order.stp")? {
                    Some(self.stp("place_order.stp")?)
                } else {
                    None
                },
            },
            TAG_CANCEL_ORDER => Command::CancelOrder {
                user: self.user("cancel_order.user")?,
                market: self.market("cancel_order.market")?,
                order: self.order_ref("cancel_order.order")?,
            },
            TAG_CANCEL_ALL => Command::CancelAll {
                user: self.user("cancel_all.user")?,
                market: self.market("cancel_all.market")?,
            },
            TAG_AMEND_ORDER => Command::AmendOrder {
                user: self.user("amend_order.user")?,
                market: self.market("amend_order.market")?,
                order: self.order_ref("amend_order.order")?,
                price: self.opt_u64("amend_order.price")?.map(PriceTicks::new),
                remaining: self.opt_u64("amend_order.remaining")?.map(QtyLots::new),
            },
            TAG_HALT_MARKET => Command::HaltMarket {
                market: self.market("halt_market.market")?,
                reason: self.string(REASON_MAX, "halt_market.reason")?,
            },
            TAG_RESUME_MARKET => Command::ResumeMarket {
                market: self.market("resume_market.market")?,
            },
            TAG_HALT_WITHDRAWALS => Command::HaltWithdrawals {
                asset: self.asset("halt_withdrawals.asset")?,
                reason: self.string(REASON_MAX, "halt_withdrawals.reason")?,
            },
            TAG_RESUME_WITHDRAWALS => Command::ResumeWithdrawals {
                asset: self.asset("resume_withdrawals.asset")?,
            },
            TAG_REGISTER_USER => Command::RegisterUser {
                name: self.string(IDENTITY_TEXT_MAX, "register_user.name")?,
            },
            TAG_CREATE_API_KEY => {
                let user = self.user("create_api_key.user")?;
                let key = self.string(IDENTITY_TEXT_MAX, "create_api_key.key")?;
                let scheme = match self.tag(2, "create_api_key.scheme")? {
                    0 => KeyScheme::Hmac,
                    _ => KeyScheme::Ed25519(self.arr("create_api_key.public_key")?),
                };
                let at = self.pos;
                let bits = self.u8("create_api_key.permissions")?;
                let permissions = KeyPermissions::from_bits(bits).ok_or(CodecError::BadTag {
                    offset: at,
                    field: "create_api_key.permissions",
                    tag: bits,
                })?;
                let n = self.len(IP_RANGES_MAX, "create_api_key.ip_allow")?;
                let mut ip_allow = Vec::with_capacity(n);
                for _ in 0..n {
                    let addr = self.arr("create_api_key.ip_allow.addr")?;
                    let at = self.pos;
                    let prefix = self.u8("create_api_key.ip_allow.prefix")?;
                    if prefix > 128 {
                        return Err(CodecError::BadTag {
                            offset: at,
                            field: "create_api_key.ip_allow.prefix",
                            tag: prefix,
                        });
                    }
                    ip_allow.push(IpRange { addr, prefix });
                }
                Command::CreateApiKey {
                    user,
                    key,
                    scheme,
                    permissions,
                    ip_allow,
                    label: self.string(IDENTITY_TEXT_MAX, "create_api_key.label")?,
                }
            }
            TAG_REVOKE_API_KEY => Command::RevokeApiKey {
                key: self.string(IDENTITY_TEXT_MAX, "revoke_api_key.key")?,
            },
            TAG_REGISTER_WALLET => {
                let asset = self.asset("register_wallet.asset")?;
                let at = self.pos;
                let code = self.u8("register_wallet.role")?;
                let role = WalletRole::from_code(code).ok_or(CodecError::BadTag {
                    offset: at,
                    field: "register_wallet.role",
                    tag: code,
                })?;
                Command::RegisterWallet {
                    asset,
                    role,
                    descriptor: self.string(DESCRIPTOR_MAX, "register_wallet.descriptor")?,
                }
            }
            TAG_ASSIGN_DEPOSIT_ADDRESS => Command::AssignDepositAddress {
                user: self.user("assign_deposit_address.user")?,
                asset: self.asset("assign_deposit_address.asset")?,
            },
            TAG_REVERSE_DEPOSIT => Command::ReverseDeposit {
                reference: self.string(REFERENCE_MAX, "reverse_deposit.reference")?,
                reason: self.string(REASON_MAX, "reverse_deposit.reason")?,
            },
            TAG_RECONCILE => Command::Reconcile {
                asset: self.asset("reconcile.asset")?,
                height: self.u32("reconcile.height")?,
                block_hash: self.arr("reconcile.block_hash")?,
                holdings: self.amount("reconcile.holdings")?,
            },
            TAG_SET_WITHDRAWAL_POLICY => Command::SetWithdrawalPolicy {
                asset: self.asset("set_withdrawal_policy.asset")?,
                policy: crate::WithdrawalPolicy {
                    fee: self.amount("set_withdrawal_policy.fee")?,
                    min_amount: self.amount("set_withdrawal_policy.min_amount")?,
                    daily_limit: self.amount("set_withdrawal_policy.daily_limit")?,
                    approval_above: self.amount("set_withdrawal_policy.approval_above")?,
                    address_delay_ms: self.u64("set_withdrawal_policy.address_delay_ms")?,
                    listed_only: self.bool("set_withdrawal_policy.listed_only")?,
                },
            },
            TAG_ADD_WITHDRAWAL_ADDRESS => Command::AddWithdrawalAddress {
                user: self.user("add_withdrawal_address.user")?,
                asset: self.asset("add_withdrawal_address.asset")?,
                address: self.string(ADDRESS_MAX, "add_withdrawal_address.address")?,
            },
            TAG_REQUEST_CHAIN_WITHDRAWAL => Command::RequestChainWithdrawal {
                user: self.user("request_chain_withdrawal.user")?,
                asset: self.asset("request_chain_withdrawal.asset")?,
                amount: self.amount("request_chain_withdrawal.amount")?,
                id: self.string(REFERENCE_MAX, "request_chain_withdrawal.id")?,
                address: self.string(ADDRESS_MAX, "request_chain_withdrawal.address")?,
            },
            TAG_APPROVE_WITHDRAWAL => Command::ApproveWithdrawal {
                id: self.string(REFERENCE_MAX, "approve_withdrawal.id")?,
            },
            TAG_BUILD_WITHDRAWAL_BATCH => {
                let asset = self.asset("build_withdrawal_batch.asset")?;
                let n = self.len(BATCH_MAX, "build_withdrawal_batch.withdrawals")?;
                let mut withdrawals = Vec::with_capacity(n);
                for _ in 0..n {
                    withdrawals
                        .push(self.string(REFERENCE_MAX, "build_withdrawal_batch.withdrawal")?);
                }
                let n = self.len(BATCH_MAX, "build_withdrawal_batch.inputs")?;
                let mut inputs = Vec::with_capacity(n);
                for _ in 0..n {
                    inputs.push(crate::Outpoint {
                        txid: self.arr("build_withdrawal_batch.input.txid")?,
                        vout: self.u32("build_withdrawal_batch.input.vout")?,
                    });
                }
                let change = if self.present("build_withdrawal_batch.change")? {
                    Some((
                        self.u32("build_withdrawal_batch.change.wallet")?,
                        self.u32("build_withdrawal_batch.change.index")?,
                    ))
                } else {
                    None
                };
                Command::BuildWithdrawalBatch {
                    asset,
                    withdrawals,
                    inputs,
                    change,
                    network_fee: self.amount("build_withdrawal_batch.network_fee")?,
                    txid: self.arr("build_withdrawal_batch.txid")?,
                }
            }
            TAG_BUMP_WITHDRAWAL_BATCH => Command::BumpWithdrawalBatch {
                batch: self.u64("bump_withdrawal_batch.batch")?,
                txid: self.arr("bump_withdrawal_batch.txid")?,
                network_fee: self.amount("bump_withdrawal_batch.network_fee")?,
            },
            TAG_FINISH_WITHDRAWAL_BATCH => Command::FinishWithdrawalBatch {
                batch: self.u64("finish_withdrawal_batch.batch")?,
                txid: self.arr("finish_withdrawal_batch.txid")?,
                height: self.u32("finish_withdrawal_batch.height")?,
                network_fee: self.amount("finish_withdrawal_batch.network_fee")?,
                paid: self.bool("finish_withdrawal_batch.paid")?,
            },
            TAG_BUILD_TRANSFER => {
                let asset = self.asset("build_transfer.asset")?;
                let n = self.len(BATCH_MAX, "build_transfer.inputs")?;
                let mut inputs = Vec::with_capacity(n);
                for _ in 0..n {
                    inputs.push(crate::Outpoint {
                        txid: self.arr("build_transfer.input.txid")?,
                        vout: self.u32("build_transfer.input.vout")?,
                    });
                }
                let to = (
                    self.u32("build_transfer.to.wallet")?,
                    self.u32("build_transfer.to.index")?,
                );
                let amount = self.amount("build_transfer.amount")?;
                let change = if self.present("build_transfer.change")? {
                    Some((
                        self.u32("build_transfer.change.wallet")?,
                        self.u32("build_transfer.change.index")?,
                    ))
                } else {
                    None
                };
                Command::BuildTransfer {
                    asset,
                    inputs,
                    to,
                    amount,
                    change,
                    network_fee: self.amount("build_transfer.network_fee")?,
                    txid: self.arr("build_transfer.txid")?,
                }
            }
            TAG_RECORD_SOLVENCY => {
                let epoch = self.u64("record_solvency.epoch")?;
                let n = self.len(SOLVENCY_ROOTS_MAX, "record_solvency.roots")?;
                let mut roots = Vec::with_capacity(n);
                for _ in 0..n {
                    roots.push(crate::SolvencyRoot {
                        asset: self.asset("record_solvency.root.asset")?,
                        ledger_seq: self.u64("record_solvency.root.ledger_seq")?,
                        epoch_id: self.arr("record_solvency.root.epoch_id")?,
                        depth: self.u8("record_solvency.root.depth")?,
                        root_hash: self.arr("record_solvency.root.root_hash")?,
                        root_sum: self.u64("record_solvency.root.root_sum")?,
                        reserves: if self.present("record_solvency.root.reserves")? {
                            Some(self.u64("record_solvency.root.reserves")?)
                        } else {
                            None
                        },
                    });
                }
                Command::RecordSolvency { epoch, roots }
            }
            _ => {
                return Err(CodecError::UnknownCommand {
                    offset: tag_offset,
                    tag,
                })
            }
        })
    }
}

/// Read one payload. Never panics: any bytes that are not exactly the encoding of an
/// [`Entry`] give a [`CodecError`] with the offset where reading stopped.
pub fn decode(bytes: &[u8]) -> Result<Entry, CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8("version")?;
    if version != CODEC_VERSION {
        return Err(CodecError::UnsupportedVersion { offset: 0, version });
    }
    let tag_offset = r.pos;
    let tag = r.u8("command tag")?;
    if !(TAG_ADD_ASSET..=TAG_ABANDON_TRANSFER).contains(&tag) {
        // Refuse an unknown command before reading what follows it.
        return Err(CodecError::UnknownCommand {
            offset: tag_offset,
            tag,
        });
    }
    let ctx_timestamp_ms = r.u64("timestamp_ms")?;
    let origin = r.origin()?;
    let command = r.command(tag, tag_offset)?;
    if r.pos < bytes.len() {
        return Err(CodecError::TrailingBytes {
            offset: r.pos,
            count: bytes.len() - r.pos,
        });
    }
    Ok(Entry {
        ctx_timestamp_ms,
        origin,
        command,
    })
}

// ---- JSON ------------------------------------------------------------------------

/// One entry as one line of JSON (no newline), for `kura journal dump`.
///
/// Field names are the Rust names in snake case; commands and enum values are their
/// snake-case names (`"type": "place_order"`, `"side": "buy"`); ids, amounts, ticks and
/// lots are JSON integers (exact, but above 2^53 a reader that parses numbers as
/// doubles loses precision); an absent option is `null`; the IP address is text
/// (IPv4-mapped addresses as IPv4).
pub fn to_json(entry: &Entry) -> String {
    let mut out = String::with_capacity(256);
    write_json(entry, &mut out);
    out
}

/// [`to_json`], appending to `out` (to reuse one buffer across entries).
pub fn write_json(entry: &Entry, out: &mut String) {
    let mut j = Json { out, first: true };
    j.open();
    j.num("timestamp_ms", entry.ctx_timestamp_ms);
    j.key("origin");
    j.open();
    match &entry.origin {
        Origin::Internal => j.str("type", "internal"),
        Origin::Operator { name } => {
            j.str("type", "operator");
            j.str("name", name);
        }
        Origin::Admin { operator, reason } => {
            j.str("type", "admin");
            j.str("operator", operator);
            j.str("reason", reason);
        }
        Origin::Api {
            key_id,
            ip,
            user_agent,
        } => {
            j.str("type", "api");
            j.num("key_id", key_id);
            j.key("ip");
            j.out.push('"');
            let _ = write!(j.out, "{}", ip_from_bytes(*ip));
            j.out.push('"');
            j.str("user_agent", user_agent);
        }
    }
    j.close();
    j.key("command");
    j.open();
    let cmd = &entry.command;
    j.str("type", cmd.name());
    match cmd {
        Command::AddAsset { symbol, scale } => {
            j.str("symbol", symbol);
            j.num("scale", scale.places());
        }
        Command::AddMarket { spec } => {
            j.key("spec");
            j.open();
            j.str("symbol", &spec.symbol);
            j.num("base", spec.base);
            j.num("quote", spec.quote);
            j.num("tick", spec.tick);
            j.num("lot", spec.lot);
            j.num("min_qty", spec.min_qty);
            j.num("max_qty", spec.max_qty);
            j.num("min_notional", spec.min_notional);
            j.num("max_notional", spec.max_notional);
            j.num("max_price", spec.max_price);
            j.key("fees");
            j.out.push('[');
            for (i, tier) in spec.fees.iter().enumerate() {
                if i > 0 {
                    j.out.push(',');
                }
                j.open();
                j.num("maker_ppm", tier.maker_ppm);
                j.num("taker_ppm", tier.taker_ppm);
                j.close();
            }
            j.out.push(']');
            j.num("collar_bps", spec.collar_bps);
            j.str("default_stp", stp_name(spec.default_stp));
            j.close();
        }
        Command::CreateUser => {}
        Command::SetFeeTier { user, tier } => {
            j.num("user", user);
            j.num("tier", tier);
        }
        Command::Deposit {
            user,
            asset,
            amount,
            reference,
        } => {
            j.num("user", user);
            j.num("asset", asset);
            j.num("amount", amount);
            j.str("reference", reference);
        }
        Command::RequestWithdrawal {
            user,
            asset,
            amount,
            id,
        } => {
            j.num("user", user);
            j.num("asset", asset);
            j.num("amount", amount);
            j.str("id", id);
        }
        Command::SettleWithdrawal { id }
        | Command::CancelWithdrawal { id }
        | Command::RejectWithdrawal { id } => j.str("id", id),
        Command::AbandonTransfer { batch } => j.num("batch", batch),
        Command::Adjust {
            user,
            asset,
            delta,
            reason,
        } => {
            j.num("user", user);
            j.num("asset", asset);
            j.num("delta", delta.get());
            j.str("reason", reason);
        }
        Command::PlaceOrder {
            user,
            market,
            side,
            order,
            client_id,
            stp,
        } => {
            j.num("user", user);
            j.num("market", market);
            j.str("side", side_name(*side));
            j.key("order");
            j.open();
            match *order {
                OrderType::Limit {
                    price,
                    qty,
                    tif,
                    post_only,
                } => {
                    j.str("type", "limit");
                    j.num("price", price);
                    j.num("qty", qty);
                    j.str("tif", tif_name(tif));
                    j.num("post_only", post_only);
                }
                OrderType::MarketBase { qty } => {
                    j.str("type", "market_base");
                    j.num("qty", qty);
                }
                OrderType::MarketQuote { quote } => {
                    j.str("type", "market_quote");
                    j.num("quote", quote);
                }
            }
            j.close();
            match client_id {
                Some(cid) => j.str("client_id", cid.as_str()),
                None => j.null("client_id"),
            }
            match stp {
                Some(stp) => j.str("stp", stp_name(*stp)),
                None => j.null("stp"),
            }
        }
        Command::CancelOrder {
            user,
            market,
            order,
        } => {
            j.num("user", user);
            j.num("market", market);
            j.order_ref(order);
        }
        Command::CancelAll { user, market } => {
            j.num("user", user);
            j.num("market", market);
        }
        Command::AmendOrder {
            user,
            market,
            order,
            price,
            remaining,
        } => {
            j.num("user", user);
            j.num("market", market);
            j.order_ref(order);
            match price {
                Some(p) => j.num("price", p),
                None => j.null("price"),
            }
            match remaining {
                Some(q) => j.num("remaining", q),
                None => j.null("remaining"),
            }
        }
        Command::HaltMarket { market, reason } => {
            j.num("market", market);
            j.str("reason", reason);
        }
        Command::ResumeMarket { market } => j.num("market", market),
        Command::HaltWithdrawals { asset, reason } => {
            j.num("asset", asset);
            j.str("reason", reason);
        }
        Command::ResumeWithdrawals { asset } => j.num("asset", asset),
        Command::RegisterUser { name } => j.str("name", name),
        Command::CreateApiKey {
            user,
            key,
            scheme,
            permissions,
            ip_allow,
            label,
        } => {
            j.num("user", user);
            j.str("key", key);
            match scheme {
                KeyScheme::Hmac => j.str("scheme", "hmac"),
                KeyScheme::Ed25519(public) => {
                    j.str("scheme", "ed25519");
                    j.str("public_key", &hex_lower(public));
                }
            }
            j.num("read", permissions.read);
            j.num("trade", permissions.trade);
            j.num("withdraw", permissions.withdraw);
            let ranges: Vec<String> = ip_allow
                .iter()
                .map(|r| format!("{}/{}", ip_from_bytes(r.addr), r.prefix))
                .collect();
            j.str("ip_allow", &ranges.join(","));
            j.str("label", label);
        }
        Command::RevokeApiKey { key } => j.str("key", key),
        Command::RegisterWallet {
            asset,
            role,
            descriptor,
        } => {
            j.num("asset", asset);
            j.str("role", role.name());
            j.str("descriptor", descriptor);
        }
        Command::AssignDepositAddress { user, asset } => {
            j.num("user", user);
            j.num("asset", asset);
        }
        Command::ReverseDeposit { reference, reason } => {
            j.str("reference", reference);
            j.str("reason", reason);
        }
        Command::Reconcile {
            asset,
            height,
            block_hash,
            holdings,
        } => {
            j.num("asset", asset);
            j.num("height", height);
            j.str("block_hash", &hex_lower(block_hash));
            j.num("holdings", holdings);
        }
        Command::SetWithdrawalPolicy { asset, policy } => {
            j.num("asset", asset);
            j.num("fee", policy.fee);
            j.num("min_amount", policy.min_amount);
            j.num("daily_limit", policy.daily_limit);
            j.num("approval_above", policy.approval_above);
            j.num("address_delay_ms", policy.address_delay_ms);
            j.num("listed_only", policy.listed_only);
        }
        Command::AddWithdrawalAddress {
            user,
            asset,
            address,
        } => {
            j.num("user", user);
            j.num("asset", asset);
            j.str("address", address);
        }
        Command::RequestChainWithdrawal {
            user,
            asset,
            amount,
            id,
            address,
        } => {
            j.num("user", user);
            j.num("asset", asset);
            j.num("amount", amount);
            j.str("id", id);
            j.str("address", address);
        }
        Command::ApproveWithdrawal { id } => j.str("id", id),
        Command::BuildWithdrawalBatch {
            asset,
            withdrawals,
            inputs,
            change,
            network_fee,
            txid,
        } => {
            j.num("asset", asset);
            j.str("withdrawals", &withdrawals.join(","));
            let coins: Vec<String> = inputs.iter().map(outpoint_text).collect();
            j.str("inputs", &coins.join(","));
            match change {
                Some((wallet, index)) => j.str("change", &format!("{wallet}/{index}")),
                None => j.null("change"),
            }
            j.num("network_fee", network_fee);
            j.str("txid", &txid_text(txid));
        }
        Command::BumpWithdrawalBatch {
            batch,
            txid,
            network_fee,
        } => {
            j.num("batch", batch);
            j.str("txid", &txid_text(txid));
            j.num("network_fee", network_fee);
        }
        Command::FinishWithdrawalBatch {
            batch,
            txid,
            height,
            network_fee,
            paid,
        } => {
            j.num("batch", batch);
            j.str("txid", &txid_text(txid));
            j.num("height", height);
            j.num("network_fee", network_fee);
            j.num("paid", paid);
        }
        Command::BuildTransfer {
            asset,
            inputs,
            to,
            amount,
            change,
            network_fee,
            txid,
        } => {
            j.num("asset", asset);
            let coins: Vec<String> = inputs.iter().map(outpoint_text).collect();
            j.str("inputs", &coins.join(","));
            j.str("to", &format!("{}/{}", to.0, to.1));
            j.num("amount", amount);
            match change {
                Some((wallet, index)) => j.str("change", &format!("{wallet}/{index}")),
                None => j.null("change"),
            }
            j.num("network_fee", network_fee);
            j.str("txid", &txid_text(txid));
        }
        Command::RecordSolvency { epoch, roots } => {
            j.num("epoch", epoch);
            j.key("roots");
            j.out.push('[');
            for (i, r) in roots.iter().enumerate() {
                if i > 0 {
                    j.out.push(',');
                }
                j.open();
                j.num("asset", r.asset);
                j.num("ledger_seq", r.ledger_seq);
                j.str("epoch_id", &hex_lower(&r.epoch_id));
                j.num("depth", r.depth);
                j.str("root_hash", &hex_lower(&r.root_hash));
                j.num("root_sum", r.root_sum);
                match r.reserves {
                    Some(v) => j.num("reserves", v),
                    None => j.null("reserves"),
                }
                j.close();
            }
            j.out.push(']');
        }
    }
    j.close();
    j.close();
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

fn tif_name(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
    }
}

fn stp_name(stp: Stp) -> &'static str {
    match stp {
        Stp::None => "none",
        Stp::ExpireTaker => "expire_taker",
        Stp::ExpireMaker => "expire_maker",
        Stp::ExpireBoth => "expire_both",
    }
}

/// A minimal JSON object writer: keys are fixed ASCII names, values are escaped.
struct Json<'a> {
    out: &'a mut String,
    /// No member written yet in the innermost open object.
    first: bool,
}

impl Json<'_> {
    fn open(&mut self) {
        self.out.push('{');
        self.first = true;
    }
    fn close(&mut self) {
        self.out.push('}');
        self.first = false;
    }
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape_into(key, self.out);
        self.out.push(':');
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        escape_into(value, self.out);
    }
    /// Integers and booleans, whose `Display` is already valid JSON.
    fn num(&mut self, key: &str, value: impl fmt::Display) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }
    fn order_ref(&mut self, order: &OrderRef) {
        self.key("order");
        self.open();
        match order {
            OrderRef::Id(id) => self.num("id", id),
            OrderRef::Client(cid) => self.str("client_id", cid.as_str()),
        }
        self.close();
    }
}

/// `s` as a JSON string literal: quotes, backslashes and every control character are
/// escaped (as are U+2028 and U+2029, so the output is also safe inside JavaScript).
pub fn escape_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A txid as Bitcoin displays it: the internal bytes reversed, in hex.
pub fn txid_text(txid: &[u8; 32]) -> String {
    let mut reversed = *txid;
    reversed.reverse();
    hex_lower(&reversed)
}

/// `txid:vout`, as Bitcoin displays an outpoint.
pub fn outpoint_text(o: &crate::Outpoint) -> String {
    format!("{}:{}", txid_text(&o.txid), o.vout)
}

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
