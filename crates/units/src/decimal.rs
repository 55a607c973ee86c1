//! Exact decimal text ↔ minor units, used only at the API edge.
//!
//! Grammar accepted: `DIGITS [ "." DIGITS ]`, at most 40 characters. No sign, no
//! exponent, no spaces. Fraction digits beyond the scale are accepted only when they are
//! zeros ("1.50000000" at scale 2 is 150); anything else would lose precision and is an
//! error, never a rounding.

use crate::Scale;

/// Longest decimal text accepted (a `u64` has 20 digits; padding zeros are allowed).
pub const MAX_DECIMAL_LEN: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecimalError {
    Empty,
    TooLong,
    /// A character that is not a digit or a single '.'.
    BadCharacter,
    /// More significant fraction digits than the asset's scale.
    TooPrecise,
    /// The value does not fit in 64 bits of minor units.
    Overflow,
}

impl core::fmt::Display for DecimalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecimalError::Empty => "empty number",
            DecimalError::TooLong => "number too long",
            DecimalError::BadCharacter => "not a plain decimal number",
            DecimalError::TooPrecise => "more decimal places than allowed",
            DecimalError::Overflow => "number too large",
        })
    }
}

impl std::error::Error for DecimalError {}

/// Parse `text` as a decimal number of whole units into minor units at `scale`.
pub fn parse_decimal(text: &str, scale: Scale) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if text.len() > MAX_DECIMAL_LEN {
        return Err(DecimalError::TooLong);
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) {
        return Err(DecimalError::BadCharacter);
    }
    let frac = match frac_part {
        Some(f) if !all_digits(f) => return Err(DecimalError::BadCharacter),
        Some(f) => f.as_bytes(),
        None => &[][..],
    };
    let places = usize::from(scale.places());
    if frac.len() > places && frac[places..].iter().any(|&b| b != b'0') {
        return Err(DecimalError::TooPrecise);
    }
    let mut value: u64 = 0;
    let push = |value: u64, digit: u8| {
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .ok_or(DecimalError::Overflow)
    };
    for &b in int_part.as_bytes() {
        value = push(value, b)?;
    }
    for i in 0..places {
        value = push(value, frac.get(i).copied().unwrap_or(b'0'))?;
    }
    Ok(value)
}

/// Format minor units at `scale` as a decimal with exactly `scale` fraction digits
/// (Binance's style: "0.00100000").
pub fn format_decimal(minor: u64, scale: Scale) -> String {
    let places = usize::from(scale.places());
    if places == 0 {
        return minor.to_string();
    }
    let factor = scale.factor();
    format!(
        "{}.{:0width$}",
        minor / factor,
        minor % factor,
        width = places
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(p: u8) -> Scale {
        Scale::new(p).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&str, u8, Result<u64, DecimalError>)] = &[
            ("0", 8, Ok(0)),
            ("1", 8, Ok(100_000_000)),
            ("0.00000001", 8, Ok(1)),
            ("0.000000010", 8, Ok(1)),
            ("0.000000011", 8, Err(DecimalError::TooPrecise)),
            ("15000000", 0, Ok(15_000_000)),
            ("15000000.00000000", 0, Ok(15_000_000)),
            ("15000000.5", 0, Err(DecimalError::TooPrecise)),
            ("123.45", 2, Ok(12_345)),
            ("", 2, Err(DecimalError::Empty)),
            ("-1", 2, Err(DecimalError::BadCharacter)),
            ("+1", 2, Err(DecimalError::BadCharacter)),
            ("1e5", 2, Err(DecimalError::BadCharacter)),
            (".5", 2, Err(DecimalError::BadCharacter)),
            ("5.", 2, Err(DecimalError::BadCharacter)),
            ("1.2.3", 2, Err(DecimalError::BadCharacter)),
            (" 1", 2, Err(DecimalError::BadCharacter)),
            ("NaN", 2, Err(DecimalError::BadCharacter)),
            ("18446744073709551615", 0, Ok(u64::MAX)),
            ("18446744073709551616", 0, Err(DecimalError::Overflow)),
            ("184467440737095516.16", 2, Err(DecimalError::Overflow)),
            (
                "00000000000000000000000000000000000000001",
                0,
                Err(DecimalError::TooLong),
            ),
        ];
        for (text, places, want) in cases {
            assert_eq!(parse_decimal(text, s(*places)), *want, "parsing {text:?}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_decimal(100_000, s(8)), "0.00100000");
        assert_eq!(format_decimal(15_000_000, s(0)), "15000000");
        assert_eq!(format_decimal(12_345, s(2)), "123.45");
        assert_eq!(format_decimal(u64::MAX, s(18)), "18.446744073709551615");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(v in any::<u64>(), places in 0u8..=18) {
            let scale = s(places);
            prop_assert_eq!(parse_decimal(&format_decimal(v, scale), scale), Ok(v));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,48}", places in 0u8..=18) {
            let _ = parse_decimal(&text, s(places));
        }
    }
}
