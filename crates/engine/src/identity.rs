//! Customers' names and API keys, as journaled state.
//!
//! A key is known by its public id (64 ASCII letters and digits, what a client sends in
//! `X-MBX-APIKEY`) and its number (assigned here, in creation order; journal origins name
//! it). No secret is ever part of a command or of the state: an HMAC key's secret is
//! derived outside the engine from a node master key, an Ed25519 key's private half
//! never reaches the exchange (only its 32-byte public key is here).
//!
//! Rules: names are unique, 1–64 of `A–Z a–z 0–9 . _ -`; a key with the withdraw
//! permission must name at least one allowed IP range; a revoked key stays in the state
//! (the audit trail names it) and can never be re-enabled; at most
//! [`crate::Limits::api_keys_per_user_max`] live keys per customer.

use crate::{Ctx, Engine, Event, EventKind, Reject};
use kura_units::UserId;

/// Length of a key id.
pub const API_KEY_ID_LEN: usize = 64;
/// Longest customer name.
pub const USER_NAME_MAX: usize = 64;
/// Longest key label.
pub const KEY_LABEL_MAX: usize = 64;
/// Most IP ranges on one key.
pub const KEY_IP_RANGES_MAX: usize = 16;

/// How a key's requests are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// HMAC-SHA256; the secret is derived from the node master key and the key id.
    Hmac,
    /// Ed25519; the customer holds the private key, this is the public key.
    Ed25519([u8; 32]),
}

/// What a key may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPermissions {
    pub read: bool,
    pub trade: bool,
    pub withdraw: bool,
}

impl KeyPermissions {
    pub fn bits(self) -> u8 {
        u8::from(self.read) | (u8::from(self.trade) << 1) | (u8::from(self.withdraw) << 2)
    }

    /// `None` for bits outside the three permissions.
    pub fn from_bits(bits: u8) -> Option<KeyPermissions> {
        (bits & !0b111 == 0).then_some(KeyPermissions {
            read: bits & 1 != 0,
            trade: bits & 2 != 0,
            withdraw: bits & 4 != 0,
        })
    }
}

/// An allowed source address range: an IPv6 address (IPv4 as `::ffff:a.b.c.d`) and a
/// prefix length over those 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    pub addr: [u8; 16],
    pub prefix: u8,
}

/// One API key as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub number: u64,
    pub user: UserId,
    pub scheme: KeyScheme,
    pub permissions: KeyPermissions,
    pub ip_allow: Vec<IpRange>,
    pub label: String,
    pub revoked: bool,
}

fn name_ok(name: &str) -> bool {
    (1..=USER_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `key` has the shape of a key id.
pub fn key_id_ok(key: &str) -> bool {
    key.len() == API_KEY_ID_LEN && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Engine {
    pub(crate) fn register_user(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        name: &str,
    ) -> Result<(), Reject> {
        if !name_ok(name) {
            return Err(Reject::InvalidName);
        }
        if self.users_by_name.contains_key(name) {
            return Err(Reject::NameTaken);
        }
        self.create_user(ctx, out)?;
        let user = UserId((self.users.len() - 1) as u32);
        self.users_by_name.insert(name.to_owned(), user);
        self.user_names.insert(user.0, name.to_owned());
        out.push(Event {
            seq: ctx.seq,
            kind: EventKind::UserNamed {
                user,
                name: name.to_owned(),
            },
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_api_key(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        key: &str,
        scheme: KeyScheme,
        permissions: KeyPermissions,
        ip_allow: &[IpRange],
        label: &str,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        if !key_id_ok(key) {
            return Err(Reject::InvalidApiKey);
        }
        if self.api_keys.contains_key(key) {
            return Err(Reject::ApiKeyExists);
        }
        if label.len() > KEY_LABEL_MAX
            || ip_allow.len() > KEY_IP_RANGES_MAX
            || ip_allow.iter().any(|r| r.prefix > 128)
        {
            return Err(Reject::InvalidApiKey);
        }
        if permissions.withdraw && ip_allow.is_empty() {
            return Err(Reject::WithdrawNeedsIpAllowList);
        }
        let live = self
            .api_keys
            .values()
            .filter(|k| k.user == user && !k.revoked)
            .count();
        if live >= self.limits().api_keys_per_user_max as usize {
            return Err(Reject::TooManyApiKeys);
        }
        let number = self.next_key_number;
        self.next_key_number += 1;
        self.api_keys.insert(
            key.to_owned(),
            ApiKey {
                number,
                user,
                scheme,
                permissions,
                ip_allow: ip_allow.to_vec(),
                label: label.to_owned(),
                revoked: false,
            },
        );
        out.push(Event {
            seq: ctx.seq,
            kind: EventKind::ApiKeyCreated {
                user,
                number,
                key: key.to_owned(),
            },
        });
        Ok(())
    }

    pub(crate) fn revoke_api_key(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        key: &str,
    ) -> Result<(), Reject> {
        let record = self.api_keys.get_mut(key).ok_or(Reject::UnknownApiKey)?;
        if record.revoked {
            return Err(Reject::ApiKeyRevoked);
        }
        record.revoked = true;
        out.push(Event {
            seq: ctx.seq,
            kind: EventKind::ApiKeyRevoked {
                user: record.user,
                number: record.number,
                key: key.to_owned(),
            },
        });
        Ok(())
    }

    // ---- read access -------------------------------------------------------------

    pub fn user_by_name(&self, name: &str) -> Option<UserId> {
        self.users_by_name.get(name).copied()
    }

    pub fn user_name(&self, user: UserId) -> Option<&str> {
        self.user_names.get(&user.0).map(String::as_str)
    }

    pub fn api_key(&self, key: &str) -> Option<&ApiKey> {
        self.api_keys.get(key)
    }

    /// Every key ever created (revoked ones included), by key id.
    pub fn api_keys(&self) -> impl Iterator<Item = (&str, &ApiKey)> {
        self.api_keys.iter().map(|(k, v)| (k.as_str(), v))
    }
}
