//! Identifiers. Dense integers where the engine assigns them (users, orders, trades,
//! markets, assets); an inline, validated string for client order ids.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            #[inline]
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id!(
    /// An asset (BTC, JPY, USD), by the order it was added.
    AssetId(u16)
);
id!(
    /// A market (BTC/JPY), by the order it was added.
    MarketId(u32)
);
id!(
    /// A customer, by the order it was created.
    UserId(u32)
);
id!(
    /// An order, unique across all markets for the life of the exchange.
    OrderId(u64)
);
id!(
    /// A trade, unique across all markets for the life of the exchange.
    TradeId(u64)
);

/// Longest client order id (Binance: `^[a-zA-Z0-9-_]{1,36}$`).
pub const CLIENT_ORDER_ID_MAX: usize = 36;

/// A client order id: 1–36 characters of `[A-Za-z0-9_-]`, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; CLIENT_ORDER_ID_MAX],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientOrderIdError {
    Empty,
    TooLong,
    BadCharacter,
}

impl core::fmt::Display for ClientOrderIdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ClientOrderIdError::Empty => "client order id is empty",
            ClientOrderIdError::TooLong => "client order id is longer than 36 characters",
            ClientOrderIdError::BadCharacter => {
                "client order id may contain only letters, digits, '-' and '_'"
            }
        })
    }
}

impl std::error::Error for ClientOrderIdError {}

impl ClientOrderId {
    pub fn parse(text: &str) -> Result<ClientOrderId, ClientOrderIdError> {
        let raw = text.as_bytes();
        if raw.is_empty() {
            return Err(ClientOrderIdError::Empty);
        }
        if raw.len() > CLIENT_ORDER_ID_MAX {
            return Err(ClientOrderIdError::TooLong);
        }
        if !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(ClientOrderIdError::BadCharacter);
        }
        let mut bytes = [0u8; CLIENT_ORDER_ID_MAX];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(ClientOrderId {
            len: raw.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `parse`), so this cannot fail.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ClientOrderId({:?})", self.as_str())
    }
}

impl core::fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids() {
        assert_eq!(
            ClientOrderId::parse("abc-DEF_09").map(|c| c.as_str().to_owned()),
            Ok("abc-DEF_09".to_owned())
        );
        assert_eq!(ClientOrderId::parse(""), Err(ClientOrderIdError::Empty));
        assert_eq!(
            ClientOrderId::parse(&"a".repeat(37)),
            Err(ClientOrderIdError::TooLong)
        );
        assert!(ClientOrderId::parse(&"a".repeat(36)).is_ok());
        assert_eq!(
            ClientOrderId::parse("a b"),
            Err(ClientOrderIdError::BadCharacter)
        );
        assert_eq!(
            ClientOrderId::parse("é"),
            Err(ClientOrderIdError::BadCharacter)
        );
    }
}
