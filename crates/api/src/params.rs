//! Request parameters: a raw query string and a raw `application/x-www-form-urlencoded`
//! body, parsed into one set of named values, with typed getters that fail with
//! Binance's error codes.
//!
//! Rules (each one a typed [`ParamError`]):
//! - Input sizes are bounded: [`MAX_QUERY_LEN`], [`MAX_BODY_LEN`], [`MAX_PARAMS`],
//!   [`MAX_NAME_LEN`], [`MAX_VALUE_LEN`].
//! - A name is raw `[A-Za-z0-9_]`, never percent-encoded. This keeps the signature
//!   split in [`crate::auth`] (which works on raw bytes) and the parsed view in
//!   agreement: no encoded `sig%6Eature` can hide from one of them.
//! - A value is percent-decoded (`%XX`, and `+` as a space, as forms do) and must be
//!   UTF-8 without control characters; a broken escape is -1100.
//! - A name sent twice is -1101 "Duplicate values for a parameter detected.", also when
//!   once in the query and once in the body. (Binance lets the query win in that case;
//!   we refuse the ambiguity instead.)
//! - Empty segments (`a=1&&b=2`) are skipped; `name` without `=` is an empty value. An
//!   empty value counts as "not sent" for the required getters (-1102), as at Binance.

use crate::errors::ParamError;
use kura_engine::{Side, Stp, TimeInForce};
use kura_units::{parse_decimal, Scale};

/// Longest raw query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Longest raw form body accepted, in bytes.
pub const MAX_BODY_LEN: usize = 16 * 1024;
/// Most parameters in one request (query and body together).
pub const MAX_PARAMS: usize = 64;
/// Longest parameter name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest decoded parameter value, in bytes.
pub const MAX_VALUE_LEN: usize = 4 * 1024;

/// Binance's legal range for a symbol, quoted in its -1100 message.
pub const SYMBOL_PATTERN: &str = "^[A-Z0-9-_.]{1,20}$";
/// Binance's legal range for a decimal, quoted in its -1100 message.
pub const DECIMAL_PATTERN: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";
/// Legal range of an unsigned integer parameter.
pub const INTEGER_PATTERN: &str = "^[0-9]{1,20}$";
/// Legal range of a client order id (`newClientOrderId`, `origClientOrderId`).
pub const CLIENT_ORDER_ID_PATTERN: &str = "^[a-zA-Z0-9-_]{1,36}$";

/// The parameters of one request, in the order received (query first, then body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parse a raw query string (without `?`) and a raw form body.
    pub fn parse(raw_query: &[u8], raw_body: &[u8]) -> Result<Params, ParamError> {
        if raw_query.len() > MAX_QUERY_LEN || raw_body.len() > MAX_BODY_LEN {
            return Err(ParamError::TooLarge);
        }
        let mut params = Params::default();
        for raw in [raw_query, raw_body] {
            for segment in raw.split(|&b| b == b'&') {
                if segment.is_empty() {
                    continue;
                }
                let (name, value) = match segment.iter().position(|&b| b == b'=') {
                    Some(i) => (&segment[..i], &segment[i + 1..]),
                    None => (segment, &[][..]),
                };
                let name = parse_name(name)?;
                let value = percent_decode(value).ok_or_else(|| ParamError::IllegalChars {
                    name: Some(name.clone()),
                    pattern: None,
                })?;
                if params.pairs.iter().any(|(n, _)| *n == name) {
                    return Err(ParamError::Duplicate);
                }
                if params.pairs.len() == MAX_PARAMS {
                    return Err(ParamError::TooMany);
                }
                params.pairs.push((name, value));
            }
        }
        Ok(params)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Names in the order received.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(n, _)| n.as_str())
    }

    /// The decoded value of `name`, if sent (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` if sent and not empty.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The value of `name`; -1102 if it was not sent or is empty.
    pub fn required(&self, name: &str) -> Result<&str, ParamError> {
        self.optional(name).ok_or_else(|| ParamError::Missing {
            name: name.to_owned(),
        })
    }

    /// `symbol` (or another symbol-valued parameter), checked against
    /// [`SYMBOL_PATTERN`]. Whether the market exists is the caller's lookup (-1121).
    pub fn symbol(&self, name: &str) -> Result<&str, ParamError> {
        let v = self.required(name)?;
        let ok = v.len() <= 20
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(v)
        } else {
            Err(ParamError::IllegalChars {
                name: Some(name.to_owned()),
                pattern: Some(SYMBOL_PATTERN),
            })
        }
    }

    /// A required decimal at `scale`, in minor units (exact; never rounds).
    pub fn decimal(&self, name: &str, scale: Scale) -> Result<u64, ParamError> {
        let v = self.required(name)?;
        parse_decimal(v, scale).map_err(|error| ParamError::BadDecimal {
            name: name.to_owned(),
            error,
        })
    }

    /// An optional decimal at `scale`.
    pub fn decimal_opt(&self, name: &str, scale: Scale) -> Result<Option<u64>, ParamError> {
        match self.optional(name) {
            None => Ok(None),
            Some(_) => self.decimal(name, scale).map(Some),
        }
    }

    /// A required unsigned integer (timestamps, ids, limits).
    pub fn u64(&self, name: &str) -> Result<u64, ParamError> {
        let v = self.required(name)?;
        parse_u64(v).map_err(|overflow| {
            if overflow {
                ParamError::Overflow {
                    name: name.to_owned(),
                }
            } else {
                ParamError::IllegalChars {
                    name: Some(name.to_owned()),
                    pattern: Some(INTEGER_PATTERN),
                }
            }
        })
    }

    /// An optional unsigned integer.
    pub fn u64_opt(&self, name: &str) -> Result<Option<u64>, ParamError> {
        match self.optional(name) {
            None => Ok(None),
            Some(_) => self.u64(name).map(Some),
        }
    }

    /// An optional client order id, checked against [`CLIENT_ORDER_ID_PATTERN`].
    pub fn client_order_id(&self, name: &str) -> Result<Option<&str>, ParamError> {
        let Some(v) = self.optional(name) else {
            return Ok(None);
        };
        let ok = v.len() <= 36
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Some(v))
        } else {
            Err(ParamError::IllegalChars {
                name: Some(name.to_owned()),
                pattern: Some(CLIENT_ORDER_ID_PATTERN),
            })
        }
    }

    /// `side`: BUY or SELL (-1117 otherwise).
    pub fn side(&self) -> Result<Side, ParamError> {
        match self.required("side")? {
            "BUY" => Ok(Side::Buy),
            "SELL" => Ok(Side::Sell),
            _ => Err(ParamError::InvalidSide),
        }
    }

    /// `type`: LIMIT, MARKET or LIMIT_MAKER. Binance's stop and take-profit types are
    /// known but unsupported (-2010 with Binance's "not supported" text); anything
    /// else is -1116.
    pub fn order_type(&self) -> Result<OrderKind, ParamError> {
        match self.required("type")? {
            "LIMIT" => Ok(OrderKind::Limit),
            "MARKET" => Ok(OrderKind::Market),
            "LIMIT_MAKER" => Ok(OrderKind::LimitMaker),
            "STOP_LOSS" => Err(ParamError::UnsupportedOrderType(
                "Stop loss orders are not supported for this symbol.",
            )),
            "STOP_LOSS_LIMIT" => Err(ParamError::UnsupportedOrderType(
                "Stop loss limit orders are not supported for this symbol.",
            )),
            "TAKE_PROFIT" => Err(ParamError::UnsupportedOrderType(
                "Take profit orders are not supported for this symbol.",
            )),
            "TAKE_PROFIT_LIMIT" => Err(ParamError::UnsupportedOrderType(
                "Take profit limit orders are not supported for this symbol.",
            )),
            _ => Err(ParamError::InvalidOrderType),
        }
    }

    /// `timeInForce` if sent: GTC, IOC or FOK (-1115 otherwise).
    pub fn time_in_force(&self) -> Result<Option<TimeInForce>, ParamError> {
        match self.optional("timeInForce") {
            None => Ok(None),
            Some("GTC") => Ok(Some(TimeInForce::Gtc)),
            Some("IOC") => Ok(Some(TimeInForce::Ioc)),
            Some("FOK") => Ok(Some(TimeInForce::Fok)),
            Some(_) => Err(ParamError::InvalidTimeInForce),
        }
    }

    /// `newOrderRespType` if sent: ACK, RESULT or FULL (-1130 otherwise).
    pub fn new_order_resp_type(&self) -> Result<Option<RespType>, ParamError> {
        match self.optional("newOrderRespType") {
            None => Ok(None),
            Some("ACK") => Ok(Some(RespType::Ack)),
            Some("RESULT") => Ok(Some(RespType::Result)),
            Some("FULL") => Ok(Some(RespType::Full)),
            Some(_) => Err(ParamError::InvalidValue {
                name: "newOrderRespType".to_owned(),
            }),
        }
    }

    /// `selfTradePreventionMode` if sent: NONE, EXPIRE_TAKER, EXPIRE_MAKER or
    /// EXPIRE_BOTH. Binance's DECREMENT and TRANSFER are not supported (-1130).
    pub fn self_trade_prevention(&self) -> Result<Option<Stp>, ParamError> {
        match self.optional("selfTradePreventionMode") {
            None => Ok(None),
            Some("NONE") => Ok(Some(Stp::None)),
            Some("EXPIRE_TAKER") => Ok(Some(Stp::ExpireTaker)),
            Some("EXPIRE_MAKER") => Ok(Some(Stp::ExpireMaker)),
            Some("EXPIRE_BOTH") => Ok(Some(Stp::ExpireBoth)),
            Some(_) => Err(ParamError::InvalidValue {
                name: "selfTradePreventionMode".to_owned(),
            }),
        }
    }
}

/// Binance order types kura supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    Limit,
    Market,
    /// Post-only limit.
    LimitMaker,
}

/// Binance's `newOrderRespType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

fn parse_name(raw: &[u8]) -> Result<String, ParamError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_NAME_LEN
        && raw.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        // All ASCII, so this cannot fail.
        Ok(raw.iter().map(|&b| char::from(b)).collect())
    } else {
        Err(ParamError::IllegalChars {
            name: None,
            pattern: None,
        })
    }
}

/// Percent-decode a form value; `None` on a broken escape, invalid UTF-8, a control
/// character, or a value longer than [`MAX_VALUE_LEN`] once decoded.
pub(crate) fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hi = hex_digit(*raw.get(i + 1)?)?;
                let lo = hex_digit(*raw.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
        if out.len() > MAX_VALUE_LEN {
            return None;
        }
    }
    let s = String::from_utf8(out).ok()?;
    if s.chars().any(char::is_control) {
        return None;
    }
    Some(s)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Plain decimal digits into a `u64`; `Err(true)` on overflow, `Err(false)` on any
/// other character (signs, spaces, exponents, empty).
/// A non-negative integer as Binance's LONG: at most `i64::MAX` (ids and times are
/// stored as signed 64-bit integers); `Err(true)` for an overflow, `Err(false)` for a
/// malformed value.
fn parse_u64(text: &str) -> Result<u64, bool> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(text.len() > 20 && text.bytes().all(|b| b.is_ascii_digit()));
    }
    let v = text.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(true)
    })?;
    if v > i64::MAX as u64 {
        return Err(true);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{api_error, Failure};
    use kura_units::DecimalError;
    use proptest::prelude::*;

    fn p(q: &str) -> Params {
        Params::parse(q.as_bytes(), b"").expect("parses")
    }

    #[test]
    fn integers_are_binance_longs() {
        assert_eq!(p("t=9223372036854775807").u64("t"), Ok(i64::MAX as u64));
        for big in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            let e = p(&format!("t={big}")).u64("t").expect_err("overflow");
            assert_eq!(e, ParamError::Overflow { name: "t".into() }, "{big}");
            let api = api_error(&Failure::Param(e));
            assert_eq!((api.status, api.code), (400, -1108));
        }
    }

    fn code(e: ParamError) -> (i32, String) {
        let a = api_error(&Failure::Param(e));
        (a.code, a.msg.into_owned())
    }

    #[test]
    fn parses_ccxt_order_body() {
        let body = "timestamp=1700000000000&symbol=BTCUSDT&side=BUY&newClientOrderId=x-TKT5PX2F5ee26b9919ef38ddc2a20d&newOrderRespType=FULL&type=LIMIT&quantity=0.01234&price=25000.12&timeInForce=GTC&recvWindow=10000&signature=abc";
        let ps = Params::parse(b"", body.as_bytes()).expect("parses");
        let btc = Scale::new(8).expect("scale");
        let usd = Scale::new(2).expect("scale");
        assert_eq!(ps.len(), 11);
        assert_eq!(ps.symbol("symbol"), Ok("BTCUSDT"));
        assert_eq!(ps.side(), Ok(Side::Buy));
        assert_eq!(ps.order_type(), Ok(OrderKind::Limit));
        assert_eq!(ps.time_in_force(), Ok(Some(TimeInForce::Gtc)));
        assert_eq!(ps.new_order_resp_type(), Ok(Some(RespType::Full)));
        assert_eq!(ps.decimal("quantity", btc), Ok(1_234_000));
        assert_eq!(ps.decimal("price", usd), Ok(2_500_012));
        assert_eq!(ps.u64("timestamp"), Ok(1_700_000_000_000));
        assert_eq!(
            ps.client_order_id("newClientOrderId"),
            Ok(Some("x-TKT5PX2F5ee26b9919ef38ddc2a20d"))
        );
        assert_eq!(ps.self_trade_prevention(), Ok(None));
    }

    #[test]
    fn percent_decoding() {
        let ps = p("symbols=%5B%22BTCUSDT%22%5D&a=x+y&b=%20&c&d=");
        assert_eq!(ps.get("symbols"), Some("[\"BTCUSDT\"]"));
        assert_eq!(ps.get("a"), Some("x y"));
        assert_eq!(ps.get("b"), Some(" "));
        assert_eq!(ps.get("c"), Some(""));
        assert_eq!(ps.optional("d"), None);
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%4"), None);
        assert_eq!(percent_decode(b"%ff"), None, "not UTF-8");
        assert_eq!(percent_decode(b"%0A"), None, "control character");
        assert_eq!(percent_decode("é".as_bytes()).as_deref(), Some("é"));
    }

    #[test]
    fn structural_errors() {
        let cases: &[(&[u8], &[u8], i32, &str)] = &[
            (
                b"a=1&a=2",
                b"",
                -1101,
                "Duplicate values for a parameter detected.",
            ),
            (
                b"a=1",
                b"a=1",
                -1101,
                "Duplicate values for a parameter detected.",
            ),
            (
                b"sig%6Eature=x",
                b"",
                -1100,
                "Illegal characters found in a parameter.",
            ),
            (
                b"=1",
                b"",
                -1100,
                "Illegal characters found in a parameter.",
            ),
            (
                b"a=%G0",
                b"",
                -1100,
                "Illegal characters found in parameter 'a'.",
            ),
        ];
        for (q, body, want_code, want_msg) in cases {
            let e = Params::parse(q, body).expect_err("must fail");
            assert_eq!(code(e), (*want_code, (*want_msg).to_owned()), "{q:?}");
        }
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(
            Params::parse(many.as_bytes(), b""),
            Err(ParamError::TooMany)
        );
        let long = vec![b'a'; MAX_QUERY_LEN + 1];
        assert_eq!(Params::parse(&long, b""), Err(ParamError::TooLarge));
        let long_value = format!("a={}", "x".repeat(MAX_VALUE_LEN + 1));
        assert!(Params::parse(long_value.as_bytes(), b"").is_err());
    }

    #[test]
    fn getter_errors_have_binance_codes() {
        let btc = Scale::new(8).expect("scale");
        let ps = p("symbol=btcusdt&side=buy&type=OCO&timeInForce=GTX&quantity=1.000000001&price=1e5&big=184467440737095516160&n=-1&stp=DECREMENT&resp=X&cid=has%20space");
        let cases: Vec<(Result<(), ParamError>, i32, &str)> = vec![
            (ps.required("missing").map(drop), -1102, "Mandatory parameter 'missing' was not sent, was empty/null, or malformed."),
            (ps.symbol("symbol").map(drop), -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."),
            (ps.side().map(drop), -1117, "Invalid side."),
            (ps.order_type().map(drop), -1116, "Invalid orderType."),
            (ps.time_in_force().map(drop), -1115, "Invalid timeInForce."),
            (ps.decimal("quantity", btc).map(drop), -1111, "Parameter 'quantity' has too much precision."),
            (ps.decimal("price", btc).map(drop), -1100, "Illegal characters found in parameter 'price'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
            (ps.u64("big").map(drop), -1108, "Parameter 'big' overflowed."),
            (ps.u64("n").map(drop), -1100, "Illegal characters found in parameter 'n'; legal range is '^[0-9]{1,20}$'."),
            (ps.client_order_id("cid").map(drop), -1100, "Illegal characters found in parameter 'cid'; legal range is '^[a-zA-Z0-9-_]{1,36}$'."),
        ];
        for (i, (got, want_code, want_msg)) in cases.into_iter().enumerate() {
            let e = got.expect_err("must fail");
            assert_eq!(code(e), (want_code, want_msg.to_owned()), "case {i}");
        }
        let ps = p("type=STOP_LOSS_LIMIT&selfTradePreventionMode=DECREMENT&newOrderRespType=X");
        assert_eq!(
            code(ps.order_type().expect_err("unsupported")),
            (
                -2010,
                "Stop loss limit orders are not supported for this symbol.".to_owned()
            )
        );
        assert_eq!(
            code(ps.self_trade_prevention().expect_err("unsupported")),
            (
                -1130,
                "Data sent for parameter 'selfTradePreventionMode' is not valid.".to_owned()
            )
        );
        assert_eq!(
            ps.new_order_resp_type(),
            Err(ParamError::InvalidValue {
                name: "newOrderRespType".to_owned()
            })
        );
        assert_eq!(
            p("q=99999999999999999999").decimal("q", btc),
            Err(ParamError::BadDecimal {
                name: "q".to_owned(),
                error: DecimalError::Overflow
            })
        );
    }

    #[test]
    fn enums_accept_every_supported_value() {
        let ps = p("side=SELL&type=LIMIT_MAKER&timeInForce=FOK&newOrderRespType=ACK&selfTradePreventionMode=EXPIRE_BOTH");
        assert_eq!(ps.side(), Ok(Side::Sell));
        assert_eq!(ps.order_type(), Ok(OrderKind::LimitMaker));
        assert_eq!(ps.time_in_force(), Ok(Some(TimeInForce::Fok)));
        assert_eq!(ps.new_order_resp_type(), Ok(Some(RespType::Ack)));
        assert_eq!(ps.self_trade_prevention(), Ok(Some(Stp::ExpireBoth)));
        assert_eq!(p("type=MARKET").order_type(), Ok(OrderKind::Market));
        assert_eq!(p("n=9223372036854775807").u64("n"), Ok(i64::MAX as u64));
        assert!(matches!(
            p("n=18446744073709551616").u64("n"),
            Err(ParamError::Overflow { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            q in proptest::collection::vec(any::<u8>(), 0..600),
            b in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(ps) = Params::parse(&q, &b) {
                let scale = Scale::new(8).expect("scale");
                for name in ps.names().map(str::to_owned).collect::<Vec<_>>() {
                    let _ = ps.symbol(&name);
                    let _ = ps.decimal(&name, scale);
                    let _ = ps.u64(&name);
                    let _ = ps.client_order_id(&name);
                }
                let _ = (ps.side(), ps.order_type(), ps.time_in_force());
                let _ = (ps.new_order_resp_type(), ps.self_trade_prevention());
            }
        }

        #[test]
        fn form_like_input_never_panics(q in "[a-z=&%+0-9A-F]{0,200}") {
            if let Ok(ps) = Params::parse(q.as_bytes(), b"") {
                prop_assert!(ps.len() <= MAX_PARAMS);
            }
        }

        #[test]
        fn encoded_values_round_trip(v in "\\PC{0,40}") {
            let mut enc = String::new();
            for b in v.bytes() {
                enc.push_str(&format!("%{b:02X}"));
            }
            let ps = Params::parse(format!("k={enc}").as_bytes(), b"").expect("parses");
            prop_assert_eq!(ps.get("k"), Some(v.as_str()));
        }
    }
}
