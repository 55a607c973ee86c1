//! Money and identifiers for kura.
//!
//! Every quantity of money in kura is an unsigned integer of an asset's *minor units*
//! (BTC: satoshi, JPY: yen, USD: cent). The integer sits inside a sealed newtype whose
//! arithmetic is checked: an overflow is a value (`None` / an error), never a wrap.
//! Order books speak in *ticks* (price steps) and *lots* (quantity steps); a market's
//! spec converts between ticks/lots and minor units exactly.
//!
//! Decimal text ("0.015", "15000000") is parsed and printed here, at the edge, and
//! nowhere else. No floating point type appears in this crate.
//!
//! Invariants:
//! - `Amount`, `PriceTicks`, `QtyLots` can never hold a negative value (they are unsigned).
//! - `Scale` is at most [`MAX_SCALE`], so `10^scale` always fits in a `u64`.
//! - Decimal parsing rejects anything that would lose precision, never rounds.

#![forbid(unsafe_code)]

mod decimal;
mod ids;

pub use decimal::{format_decimal, parse_decimal, DecimalError};
pub use ids::{AssetId, ClientOrderId, ClientOrderIdError, MarketId, OrderId, TradeId, UserId};

/// The largest number of decimal places an asset may have.
pub const MAX_SCALE: u8 = 18;

/// Number of decimal places of an asset's minor unit (BTC 8, JPY 0, USD 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scale(u8);

impl Scale {
    /// A scale of `places` decimal places; `None` above [`MAX_SCALE`].
    pub const fn new(places: u8) -> Option<Scale> {
        if places <= MAX_SCALE {
            Some(Scale(places))
        } else {
            None
        }
    }
    pub const fn places(self) -> u8 {
        self.0
    }
    /// `10^places`, the number of minor units in one whole unit.
    pub const fn factor(self) -> u64 {
        10u64.pow(self.0 as u32)
    }
}

macro_rules! sealed_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            pub const ZERO: $name = $name(0);
            pub const MAX: $name = $name(u64::MAX);
            #[inline]
            pub const fn new(value: u64) -> $name {
                $name(value)
            }
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
            #[inline]
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
            #[inline]
            #[must_use]
            pub const fn checked_add(self, rhs: $name) -> Option<$name> {
                match self.0.checked_add(rhs.0) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }
            #[inline]
            #[must_use]
            pub const fn checked_sub(self, rhs: $name) -> Option<$name> {
                match self.0.checked_sub(rhs.0) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }
            #[inline]
            #[must_use]
            pub const fn checked_mul(self, rhs: u64) -> Option<$name> {
                match self.0.checked_mul(rhs) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }
            #[inline]
            #[must_use]
            pub fn min(self, rhs: $name) -> $name {
                $name(self.0.min(rhs.0))
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

sealed_u64!(
    /// An amount of one asset in its minor units (satoshi, yen, cent). Never negative.
    Amount
);
sealed_u64!(
    /// A price as a whole number of a market's ticks.
    PriceTicks
);
sealed_u64!(
    /// A quantity of a market's base asset as a whole number of its lots.
    QtyLots
);

/// A signed change of an amount, for admin adjustments. `i128` so that any two
/// `Amount`s' difference fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AmountDelta(i128);

impl AmountDelta {
    pub const fn credit(amount: Amount) -> AmountDelta {
        AmountDelta(amount.0 as i128)
    }
    pub const fn debit(amount: Amount) -> AmountDelta {
        AmountDelta(-(amount.0 as i128))
    }
    pub const fn get(self) -> i128 {
        self.0
    }
    /// The magnitude, as an amount; `None` when it does not fit a `u64`.
    pub fn magnitude(self) -> Option<Amount> {
        u64::try_from(self.0.unsigned_abs()).ok().map(Amount)
    }
    pub const fn is_credit(self) -> bool {
        self.0 > 0
    }
}

/// Parts per million, for fee rates: 1,000 ppm = 0.1 %.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppm(u32);

impl Ppm {
    pub const ONE: u32 = 1_000_000;
    /// A rate below 100 %; `None` otherwise.
    pub const fn new(ppm: u32) -> Option<Ppm> {
        if ppm < Ppm::ONE {
            Some(Ppm(ppm))
        } else {
            None
        }
    }
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Integer division rounding up, for amounts a customer pays.
#[inline]
pub const fn div_ceil_u128(numerator: u128, denominator: u128) -> u128 {
    numerator.div_ceil(denominator)
}

/// Narrow a `u128` to an `Amount`, `None` if it does not fit.
#[inline]
pub fn amount_from_u128(v: u128) -> Option<Amount> {
    u64::try_from(v).ok().map(Amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_never_wraps() {
        assert_eq!(Amount::MAX.checked_add(Amount::new(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::new(1)), None);
        assert_eq!(Amount::new(2).checked_mul(u64::MAX), None);
        assert_eq!(
            Amount::new(2).checked_add(Amount::new(3)),
            Some(Amount::new(5))
        );
    }

    #[test]
    fn scale_is_bounded() {
        assert!(Scale::new(19).is_none());
        assert_eq!(Scale::new(8).map(Scale::factor), Some(100_000_000));
        assert_eq!(Scale::new(18).map(Scale::factor), Some(10u64.pow(18)));
    }

    #[test]
    fn ppm_rejects_full_rate() {
        assert!(Ppm::new(1_000_000).is_none());
        assert_eq!(Ppm::new(999_999).map(Ppm::get), Some(999_999));
    }

    #[test]
    fn delta_magnitude() {
        assert_eq!(
            AmountDelta::debit(Amount::new(7)).magnitude(),
            Some(Amount::new(7))
        );
        assert!(!AmountDelta::debit(Amount::new(7)).is_credit());
    }
}
