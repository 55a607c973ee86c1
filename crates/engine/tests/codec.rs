//! Tests of the journal payload codec: round trips over every command and enum value,
//! canonical bytes, no panics on any input, golden bytes per command, typed errors with
//! offsets, and JSON escaping.

use kura_engine::codec::{
    self, decode, encode, escape_into, ip_from_bytes, ip_to_bytes, to_json, try_encode, CodecError,
    Entry, Origin, ADDRESS_MAX, CLIENT_ID_MAX, CODEC_VERSION, DESCRIPTOR_MAX, FEE_TIERS_MAX,
    IDENTITY_TEXT_MAX, IP_RANGES_MAX, OPERATOR_NAME_MAX, REASON_MAX, REFERENCE_MAX, SYMBOL_MAX,
    USER_AGENT_MAX,
};
use kura_engine::{
    Command, FeeTier, IpRange, KeyPermissions, KeyScheme, MarketSpec, OrderRef, OrderType,
    Outpoint, Side, SolvencyRoot, Stp, TimeInForce, WalletRole, WithdrawalPolicy,
};
use kura_units::{
    Amount, AmountDelta, AssetId, ClientOrderId, ClientOrderIdError, MarketId, OrderId, PriceTicks,
    QtyLots, Scale, UserId,
};
use proptest::prelude::*;

// ---- helpers ---------------------------------------------------------------------

fn enc(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    encode(entry, &mut out);
    out
}

/// Hex with any whitespace ignored, so goldens can be written field by field.
fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pairs = digits.chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "odd number of hex digits");
    pairs
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(s, 16).expect("hex digit")
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cid(s: &str) -> ClientOrderId {
    ClientOrderId::parse(s).expect("valid client order id")
}

fn entry(ts: u64, origin: Origin, command: Command) -> Entry {
    Entry {
        ctx_timestamp_ms: ts,
        origin,
        command,
    }
}

fn ops(name: &str) -> Origin {
    Origin::Operator {
        name: name.to_owned(),
    }
}

/// A header (version, tag, timestamp, internal origin) followed by `rest`.
fn internal(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![CODEC_VERSION, tag];
    b.extend_from_slice(&0u64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(rest);
    b
}

fn str_field(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u16).to_le_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

// ---- strategies ------------------------------------------------------------------

/// Any Unicode text of at most `max` bytes (quotes, controls and multi-byte characters
/// included), plus the exact maximum.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(any::<char>(), 0..=max).prop_map(move |chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > max {
                    break;
                }
                s.push(c);
            }
            s
        }),
        1 => Just("x".repeat(max)),
        1 => Just(String::new()),
    ]
}

fn client_id() -> impl Strategy<Value = ClientOrderId> {
    "[A-Za-z0-9_-]{1,36}".prop_map(|s| cid(&s))
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok)
    ]
}

fn stp() -> impl Strategy<Value = Stp> {
    prop_oneof![
        Just(Stp::None),
        Just(Stp::ExpireTaker),
        Just(Stp::ExpireMaker),
        Just(Stp::ExpireBoth)
    ]
}

fn order_ref() -> impl Strategy<Value = OrderRef> {
    prop_oneof![
        any::<u64>().prop_map(|i| OrderRef::Id(OrderId(i))),
        client_id().prop_map(OrderRef::Client),
    ]
}

fn order_type() -> impl Strategy<Value = OrderType> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), tif(), any::<bool>()).prop_map(
            |(price, qty, tif, post_only)| OrderType::Limit {
                price: PriceTicks::new(price),
                qty: QtyLots::new(qty),
                tif,
                post_only,
            }
        ),
        any::<u64>().prop_map(|q| OrderType::MarketBase {
            qty: QtyLots::new(q)
        }),
        any::<u64>().prop_map(|q| OrderType::MarketQuote {
            quote: Amount::new(q)
        }),
    ]
}

fn delta() -> impl Strategy<Value = AmountDelta> {
    prop_oneof![
        any::<u64>().prop_map(|a| AmountDelta::credit(Amount::new(a))),
        any::<u64>().prop_map(|a| AmountDelta::debit(Amount::new(a))),
        Just(AmountDelta::debit(Amount::MAX)),
        Just(AmountDelta::credit(Amount::MAX)),
    ]
}

fn spec() -> impl Strategy<Value = MarketSpec> {
    (
        text(SYMBOL_MAX),
        any::<u16>(),
        any::<u16>(),
        [any::<u64>(); 7],
        prop::collection::vec(
            (any::<u32>(), any::<u32>()).prop_map(|(maker_ppm, taker_ppm)| FeeTier {
                maker_ppm,
                taker_ppm,
            }),
            0..=FEE_TIERS_MAX,
        ),
        any::<u32>(),
        stp(),
    )
        .prop_map(
            |(symbol, base, quote, n, fees, collar_bps, default_stp)| MarketSpec {
                symbol,
                base: AssetId(base),
                quote: AssetId(quote),
                tick: Amount::new(n[0]),
                lot: Amount::new(n[1]),
                min_qty: QtyLots::new(n[2]),
                max_qty: QtyLots::new(n[3]),
                min_notional: Amount::new(n[4]),
                max_notional: Amount::new(n[5]),
                max_price: PriceTicks::new(n[6]),
                fees,
                collar_bps,
                default_stp,
            },
        )
}

fn command() -> impl Strategy<Value = Command> {
    let user = any::<u32>().prop_map(UserId);
    let asset = any::<u16>().prop_map(AssetId);
    let market = any::<u32>().prop_map(MarketId);
    let amount = any::<u64>().prop_map(Amount::new);
    prop_oneof![
        (text(SYMBOL_MAX), 0u8..=kura_units::MAX_SCALE).prop_map(|(symbol, places)| {
            Command::AddAsset {
                symbol,
                scale: Scale::new(places).expect("in range"),
            }
        }),
        spec().prop_map(|spec| Command::AddMarket { spec }),
        Just(Command::CreateUser),
        (user.clone(), any::<u8>()).prop_map(|(user, tier)| Command::SetFeeTier { user, tier }),
        (
            user.clone(),
            asset.clone(),
            amount.clone(),
            text(REFERENCE_MAX)
        )
            .prop_map(|(user, asset, amount, reference)| Command::Deposit {
                user,
                asset,
                amount,
                reference
            }),
        (user.clone(), asset.clone(), amount, text(REFERENCE_MAX)).prop_map(
            |(user, asset, amount, id)| Command::RequestWithdrawal {
                user,
                asset,
                amount,
                id
            }
        ),
        text(REFERENCE_MAX).prop_map(|id| Command::SettleWithdrawal { id }),
        text(REFERENCE_MAX).prop_map(|id| Command::CancelWithdrawal { id }),
        text(REFERENCE_MAX).prop_map(|id| Command::RejectWithdrawal { id }),
        any::<u64>().prop_map(|batch| Command::AbandonTransfer { batch }),
        (user.clone(), asset.clone(), delta(), text(REASON_MAX)).prop_map(
            |(user, asset, delta, reason)| Command::Adjust {
                user,
                asset,
                delta,
                reason
            }
        ),
        (
            user.clone(),
            market.clone(),
            side(),
            order_type(),
            prop::option::of(client_id()),
            prop::option::of(stp())
        )
            .prop_map(|(user, market, side, order, client_id, stp)| {
                Command::PlaceOrder {
                    user,
                    market,
                    side,
                    order,
                    client_id,
                    stp,
                }
            }),
        (user.clone(), market.clone(), order_ref()).prop_map(|(user, market, order)| {
            Command::CancelOrder {
                user,
                market,
                order,
            }
        }),
        (user.clone(), market.clone())
            .prop_map(|(user, market)| Command::CancelAll { user, market }),
        (
            user,
            market.clone(),
            order_ref(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(user, market, order, price, remaining)| {
                Command::AmendOrder {
                    user,
                    market,
                    order,
                    price: price.map(PriceTicks::new),
                    remaining: remaining.map(QtyLots::new),
                }
            }),
        (market.clone(), text(REASON_MAX))
            .prop_map(|(market, reason)| Command::HaltMarket { market, reason }),
        market.prop_map(|market| Command::ResumeMarket { market }),
        (asset.clone(), text(REASON_MAX))
            .prop_map(|(asset, reason)| Command::HaltWithdrawals { asset, reason }),
        asset.prop_map(|asset| Command::ResumeWithdrawals { asset }),
        text(IDENTITY_TEXT_MAX).prop_map(|name| Command::RegisterUser { name }),
        (
            any::<u32>().prop_map(UserId),
            text(IDENTITY_TEXT_MAX),
            prop::option::of(any::<[u8; 32]>()),
            0u8..8,
            prop::collection::vec((any::<[u8; 16]>(), 0u8..=128), 0..=IP_RANGES_MAX),
            text(IDENTITY_TEXT_MAX),
        )
            .prop_map(|(user, key, public, bits, ranges, label)| {
                Command::CreateApiKey {
                    user,
                    key,
                    scheme: public.map_or(KeyScheme::Hmac, KeyScheme::Ed25519),
                    permissions: KeyPermissions::from_bits(bits).expect("3 bits"),
                    ip_allow: ranges
                        .into_iter()
                        .map(|(addr, prefix)| IpRange { addr, prefix })
                        .collect(),
                    label,
                }
            }),
        text(IDENTITY_TEXT_MAX).prop_map(|key| Command::RevokeApiKey { key }),
        (
            any::<u16>().prop_map(AssetId),
            prop::sample::select(WalletRole::ALL.to_vec()),
            text(DESCRIPTOR_MAX)
        )
            .prop_map(|(asset, role, descriptor)| Command::RegisterWallet {
                asset,
                role,
                descriptor
            }),
        (
            any::<u32>().prop_map(UserId),
            any::<u16>().prop_map(AssetId)
        )
            .prop_map(|(user, asset)| Command::AssignDepositAddress { user, asset }),
        (text(REFERENCE_MAX), text(REASON_MAX))
            .prop_map(|(reference, reason)| Command::ReverseDeposit { reference, reason }),
        (
            any::<u16>().prop_map(AssetId),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<u64>().prop_map(Amount::new)
        )
            .prop_map(|(asset, height, block_hash, holdings)| Command::Reconcile {
                asset,
                height,
                block_hash,
                holdings
            }),
        (any::<u16>(), [any::<u64>(); 5], any::<bool>()).prop_map(|(asset, n, listed_only)| {
            Command::SetWithdrawalPolicy {
                asset: AssetId(asset),
                policy: WithdrawalPolicy {
                    fee: Amount::new(n[0]),
                    min_amount: Amount::new(n[1]),
                    daily_limit: Amount::new(n[2]),
                    approval_above: Amount::new(n[3]),
                    address_delay_ms: n[4],
                    listed_only,
                },
            }
        }),
        (any::<u32>(), any::<u16>(), text(ADDRESS_MAX)).prop_map(|(user, asset, address)| {
            Command::AddWithdrawalAddress {
                user: UserId(user),
                asset: AssetId(asset),
                address,
            }
        }),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u64>(),
            text(REFERENCE_MAX),
            text(ADDRESS_MAX)
        )
            .prop_map(|(user, asset, amount, id, address)| {
                Command::RequestChainWithdrawal {
                    user: UserId(user),
                    asset: AssetId(asset),
                    amount: Amount::new(amount),
                    id,
                    address,
                }
            }),
        text(REFERENCE_MAX).prop_map(|id| Command::ApproveWithdrawal { id }),
        (
            any::<u16>(),
            prop::collection::vec(text(REFERENCE_MAX), 0..4),
            prop::collection::vec(
                (any::<[u8; 32]>(), any::<u32>()).prop_map(|(txid, vout)| Outpoint { txid, vout }),
                0..4
            ),
            prop::option::of((any::<u32>(), any::<u32>())),
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(asset, withdrawals, inputs, change, fee, txid)| {
                Command::BuildWithdrawalBatch {
                    asset: AssetId(asset),
                    withdrawals,
                    inputs,
                    change,
                    network_fee: Amount::new(fee),
                    txid,
                }
            }),
        (
            any::<u16>(),
            prop::collection::vec(
                (any::<[u8; 32]>(), any::<u32>()).prop_map(|(txid, vout)| Outpoint { txid, vout }),
                0..4
            ),
            (any::<u32>(), any::<u32>()),
            any::<u64>(),
            prop::option::of((any::<u32>(), any::<u32>())),
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(asset, inputs, to, amount, change, fee, txid)| {
                Command::BuildTransfer {
                    asset: AssetId(asset),
                    inputs,
                    to,
                    amount: Amount::new(amount),
                    change,
                    network_fee: Amount::new(fee),
                    txid,
                }
            }),
        (any::<u64>(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(batch, txid, fee)| {
            Command::BumpWithdrawalBatch {
                batch,
                txid,
                network_fee: Amount::new(fee),
            }
        }),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(batch, txid, height, fee, paid)| {
                Command::FinishWithdrawalBatch {
                    batch,
                    txid,
                    height,
                    network_fee: Amount::new(fee),
                    paid,
                }
            }),
        (
            any::<u64>(),
            prop::collection::vec(
                (
                    any::<u16>(),
                    any::<u64>(),
                    any::<[u8; 32]>(),
                    any::<u8>(),
                    any::<[u8; 32]>(),
                    any::<u64>(),
                    prop::option::of(any::<u64>())
                )
                    .prop_map(
                        |(asset, ledger_seq, epoch_id, depth, root_hash, root_sum, reserves)| {
                            SolvencyRoot {
                                asset: AssetId(asset),
                                ledger_seq,
                                epoch_id,
                                depth,
                                root_hash,
                                root_sum,
                                reserves,
                            }
                        }
                    ),
                0..4
            )
        )
            .prop_map(|(epoch, roots)| Command::RecordSolvency { epoch, roots }),
    ]
}

fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![
        Just(Origin::Internal),
        text(OPERATOR_NAME_MAX).prop_map(|name| Origin::Operator { name }),
        (text(OPERATOR_NAME_MAX), text(REASON_MAX))
            .prop_map(|(operator, reason)| Origin::Admin { operator, reason }),
        (any::<u64>(), any::<[u8; 16]>(), text(USER_AGENT_MAX)).prop_map(
            |(key_id, ip, user_agent)| Origin::Api {
                key_id,
                ip,
                user_agent
            }
        ),
    ]
}

fn any_entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), origin(), command()).prop_map(|(ts, origin, command)| entry(ts, origin, command))
}

// ---- properties ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn round_trip_is_identity_and_bytes_are_deterministic(e in any_entry()) {
        let bytes = enc(&e);
        prop_assert_eq!(bytes[0], CODEC_VERSION);
        prop_assert_eq!(decode(&bytes), Ok(e.clone()));
        // Equal entries (a clone) encode to identical bytes.
        prop_assert_eq!(&enc(&e.clone()), &bytes);
        // try_encode agrees with encode and appends after existing bytes.
        let mut out = vec![0xAA];
        prop_assert_eq!(try_encode(&e, &mut out), Ok(()));
        prop_assert_eq!(&out[1..], &bytes[..]);
        prop_assert_eq!(out[0], 0xAA);
    }

    #[test]
    fn every_strict_prefix_is_truncated_and_a_trailing_byte_is_refused(
        e in any_entry(),
        extra in any::<u8>(),
    ) {
        let bytes = enc(&e);
        for len in 0..bytes.len() {
            match decode(&bytes[..len]) {
                Err(CodecError::Truncated { offset, .. }) => prop_assert!(offset <= len),
                other => prop_assert!(false, "prefix {} of {}: {:?}", len, bytes.len(), other),
            }
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(
            decode(&longer),
            Err(CodecError::TrailingBytes { offset: bytes.len(), count: 1 })
        );
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(e) = decode(&bytes) {
            // Canonical: whatever decodes re-encodes to the same bytes.
            prop_assert_eq!(enc(&e), bytes);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tag in 0u8..20,
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![CODEC_VERSION, tag];
        bytes.extend_from_slice(&rest);
        if let Ok(e) = decode(&bytes) {
            prop_assert_eq!(enc(&e), bytes);
        }
    }

    #[test]
    fn damaged_encodings_never_panic_and_stay_canonical(
        e in any_entry(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = enc(&e);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        match decode(&bytes) {
            Ok(d) => prop_assert_eq!(enc(&d), bytes),
            Err(err) => {
                prop_assert!(err.offset() <= bytes.len());
                prop_assert!(err.to_string().starts_with("byte "));
            }
        }
    }

    #[test]
    fn json_is_one_line_and_balanced(e in any_entry()) {
        let j = to_json(&e);
        prop_assert!(!j.contains('\n'));
        prop_assert!(j.starts_with("{\"timestamp_ms\":"), "{}", j);
        prop_assert!(j.ends_with('}'), "{}", j);
        prop_assert!(j.chars().all(|c| u32::from(c) >= 0x20));
        prop_assert!(json_structure_ok(&j), "{}", j);
    }
}

/// A small structural check of JSON: strings are closed and only use valid escapes,
/// brackets balance outside strings.
fn json_structure_ok(j: &str) -> bool {
    let mut depth: Vec<char> = Vec::new();
    let mut chars = j.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return false,
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {}
                        Some('u') => {
                            for _ in 0..4 {
                                if !chars.next().is_some_and(|h| h.is_ascii_hexdigit()) {
                                    return false;
                                }
                            }
                        }
                        _ => return false,
                    },
                    Some(c) if u32::from(c) < 0x20 => return false,
                    Some(_) => {}
                }
            },
            '{' | '[' => depth.push(c),
            '}' | ']' => {
                let open = if c == '}' { '{' } else { '[' };
                if depth.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth.is_empty()
}

// ---- golden bytes ----------------------------------------------------------------

/// One fixed entry per command (and per order type and order reference), with its bytes
/// written out by hand from the layout in the module documentation. A failure here means
/// the format changed: that needs a new `CODEC_VERSION`, not a new golden.
fn goldens() -> Vec<(Entry, &'static str)> {
    let api = Origin::Api {
        key_id: 0x0102_0304_0506_0708,
        ip: ip_to_bytes("203.0.113.9".parse().expect("ip")),
        user_agent: "kura/1".to_owned(),
    };
    let api_v6 = Origin::Api {
        key_id: 9,
        ip: ip_to_bytes("::1".parse().expect("ip")),
        user_agent: String::new(),
    };
    vec![
        (
            entry(
                1,
                Origin::Internal,
                Command::AddAsset {
                    symbol: "BTC".into(),
                    scale: Scale::new(8).expect("scale"),
                },
            ),
            "01 01 0100000000000000 00  0300 425443  08",
        ),
        (
            entry(
                2,
                ops("ops"),
                Command::AddMarket {
                    spec: MarketSpec {
                        symbol: "BTCJPY".into(),
                        base: AssetId(0),
                        quote: AssetId(1),
                        tick: Amount::new(1),
                        lot: Amount::new(1000),
                        min_qty: QtyLots::new(1),
                        max_qty: QtyLots::new(1_000_000),
                        min_notional: Amount::new(100),
                        max_notional: Amount::new(1_000_000_000_000),
                        max_price: PriceTicks::new(1_000_000_000),
                        fees: vec![
                            FeeTier {
                                maker_ppm: 1000,
                                taker_ppm: 2000,
                            },
                            FeeTier {
                                maker_ppm: 500,
                                taker_ppm: 1500,
                            },
                        ],
                        collar_bps: 500,
                        default_stp: Stp::ExpireMaker,
                    },
                },
            ),
            "01 02 0200000000000000 01 0300 6f7073
             0600 4254434a5059  0000 0100
             0100000000000000 e803000000000000
             0100000000000000 40420f0000000000
             6400000000000000 0010a5d4e8000000
             00ca9a3b00000000
             0200 e8030000 d0070000 f4010000 dc050000
             f4010000 02",
        ),
        (
            entry(u64::MAX, api.clone(), Command::CreateUser),
            "01 03 ffffffffffffffff
             02 0807060504030201 00000000000000000000ffffcb007109 0600 6b7572612f31",
        ),
        (
            entry(
                4,
                Origin::Internal,
                Command::SetFeeTier {
                    user: UserId(7),
                    tier: 3,
                },
            ),
            "01 04 0400000000000000 00  07000000 03",
        ),
        (
            entry(
                1000,
                Origin::Internal,
                Command::Deposit {
                    user: UserId(7),
                    asset: AssetId(1),
                    amount: Amount::new(150_000),
                    reference: "ab".into(),
                },
            ),
            // The example in the module documentation.
            "01 05 e803000000000000 00  07000000 0100 f049020000000000 0200 6162",
        ),
        (
            entry(
                6,
                Origin::Internal,
                Command::RequestWithdrawal {
                    user: UserId(2),
                    asset: AssetId(0),
                    amount: Amount::new(5000),
                    id: "w-1".into(),
                },
            ),
            "01 06 0600000000000000 00  02000000 0000 8813000000000000 0300 772d31",
        ),
        (
            entry(
                7,
                ops("ops-1"),
                Command::SettleWithdrawal { id: "w-1".into() },
            ),
            "01 07 0700000000000000 01 0500 6f70732d31  0300 772d31",
        ),
        (
            entry(
                8,
                Origin::Internal,
                Command::CancelWithdrawal { id: "w-2".into() },
            ),
            "01 08 0800000000000000 00  0300 772d32",
        ),
        (
            entry(
                9,
                ops("ops"),
                Command::Adjust {
                    user: UserId(1),
                    asset: AssetId(2),
                    delta: AmountDelta::debit(Amount::new(300)),
                    reason: "fix".into(),
                },
            ),
            "01 09 0900000000000000 01 0300 6f7073
             01000000 0200 d4feffffffffffffffffffffffffffff 0300 666978",
        ),
        (
            entry(
                10,
                api_v6.clone(),
                Command::PlaceOrder {
                    user: UserId(3),
                    market: MarketId(0),
                    side: Side::Sell,
                    order: OrderType::Limit {
                        price: PriceTicks::new(15_000_000),
                        qty: QtyLots::new(25),
                        tif: TimeInForce::Ioc,
                        post_only: true,
                    },
                    client_id: Some(cid("c-1")),
                    stp: Some(Stp::ExpireBoth),
                },
            ),
            "01 0a 0a00000000000000
             02 0900000000000000 00000000000000000000000000000001 0000
             03000000 00000000 01
             00 c0e1e40000000000 1900000000000000 01 01
             01 0300 632d31
             01 03",
        ),
        (
            entry(
                10,
                Origin::Internal,
                Command::PlaceOrder {
                    user: UserId(3),
                    market: MarketId(0),
                    side: Side::Buy,
                    order: OrderType::MarketBase {
                        qty: QtyLots::new(5),
                    },
                    client_id: None,
                    stp: None,
                },
            ),
            "01 0a 0a00000000000000 00  03000000 00000000 00  01 0500000000000000  00  00",
        ),
        (
            entry(
                10,
                Origin::Internal,
                Command::PlaceOrder {
                    user: UserId(3),
                    market: MarketId(0),
                    side: Side::Buy,
                    order: OrderType::MarketQuote {
                        quote: Amount::new(1000),
                    },
                    client_id: None,
                    stp: Some(Stp::None),
                },
            ),
            "01 0a 0a00000000000000 00  03000000 00000000 00  02 e803000000000000  00  01 00",
        ),
        (
            entry(
                11,
                Origin::Internal,
                Command::CancelOrder {
                    user: UserId(3),
                    market: MarketId(1),
                    order: OrderRef::Id(OrderId(42)),
                },
            ),
            "01 0b 0b00000000000000 00  03000000 01000000 00 2a00000000000000",
        ),
        (
            entry(
                11,
                Origin::Internal,
                Command::CancelOrder {
                    user: UserId(3),
                    market: MarketId(1),
                    order: OrderRef::Client(cid("c-1")),
                },
            ),
            "01 0b 0b00000000000000 00  03000000 01000000 01 0300 632d31",
        ),
        (
            entry(
                12,
                Origin::Internal,
                Command::CancelAll {
                    user: UserId(3),
                    market: MarketId(1),
                },
            ),
            "01 0c 0c00000000000000 00  03000000 01000000",
        ),
        (
            entry(
                13,
                Origin::Internal,
                Command::AmendOrder {
                    user: UserId(3),
                    market: MarketId(0),
                    order: OrderRef::Client(cid("c-1")),
                    price: Some(PriceTicks::new(14_999_000)),
                    remaining: None,
                },
            ),
            "01 0d 0d00000000000000 00  03000000 00000000 01 0300 632d31  01 d8dde40000000000  00",
        ),
        (
            entry(
                14,
                ops("ops"),
                Command::HaltMarket {
                    market: MarketId(1),
                    reason: "maintenance".into(),
                },
            ),
            "01 0e 0e00000000000000 01 0300 6f7073  01000000 0b00 6d61696e74656e616e6365",
        ),
        (
            entry(
                15,
                Origin::Internal,
                Command::ResumeMarket {
                    market: MarketId(1),
                },
            ),
            "01 0f 0f00000000000000 00  01000000",
        ),
        (
            entry(
                16,
                Origin::Internal,
                Command::HaltWithdrawals {
                    asset: AssetId(0),
                    reason: "node down".into(),
                },
            ),
            "01 10 1000000000000000 00  0000 0900 6e6f646520646f776e",
        ),
        (
            entry(
                17,
                Origin::Internal,
                Command::ResumeWithdrawals { asset: AssetId(0) },
            ),
            "01 11 1100000000000000 00  0000",
        ),
        (
            entry(18, Origin::Internal, Command::RegisterUser { name: "ann".into() }),
            "01 12 1200000000000000 00  0300 616e6e",
        ),
        (
            entry(
                19,
                Origin::Internal,
                Command::CreateApiKey {
                    user: UserId(2),
                    key: "k".into(),
                    scheme: KeyScheme::Ed25519([7; 32]),
                    permissions: KeyPermissions {
                        read: true,
                        trade: false,
                        withdraw: true,
                    },
                    ip_allow: vec![IpRange {
                        addr: [1; 16],
                        prefix: 120,
                    }],
                    label: "bot".into(),
                },
            ),
            "01 13 1300000000000000 00  02000000 0100 6b              01 0707070707070707070707070707070707070707070707070707070707070707              05 0100 01010101010101010101010101010101 78 0300 626f74",
        ),
        (
            entry(20, Origin::Internal, Command::RevokeApiKey { key: "k".into() }),
            "01 14 1400000000000000 00  0100 6b",
        ),
        (
            entry(
                21,
                Origin::Internal,
                Command::RegisterWallet {
                    asset: AssetId(1),
                    role: WalletRole::Cold,
                    descriptor: "wpkh(x)".into(),
                },
            ),
            "01 15 1500000000000000 00  0100 02 0700 77706b68287829",
        ),
        (
            entry(
                22,
                Origin::Internal,
                Command::AssignDepositAddress {
                    user: UserId(3),
                    asset: AssetId(1),
                },
            ),
            "01 16 1600000000000000 00  03000000 0100",
        ),
        (
            entry(
                23,
                Origin::Internal,
                Command::ReverseDeposit {
                    reference: "t:0".into(),
                    reason: "reorg".into(),
                },
            ),
            "01 17 1700000000000000 00  0300 743a30 0500 72656f7267",
        ),
        (
            entry(
                24,
                Origin::Internal,
                Command::Reconcile {
                    asset: AssetId(1),
                    height: 0x0102,
                    block_hash: [0xab; 32],
                    holdings: Amount::new(5),
                },
            ),
            "01 18 1800000000000000 00  0100 02010000 abababababababababababababababababababababababababababababababab 0500000000000000",
        ),
        (
            entry(
                25,
                Origin::Internal,
                Command::SetWithdrawalPolicy {
                    asset: AssetId(1),
                    policy: WithdrawalPolicy {
                        fee: Amount::new(1),
                        min_amount: Amount::new(2),
                        daily_limit: Amount::new(3),
                        approval_above: Amount::new(4),
                        address_delay_ms: 5,
                        listed_only: true,
                    },
                },
            ),
            "01 19 1900000000000000 00  0100 0100000000000000 0200000000000000 0300000000000000 0400000000000000 0500000000000000 01",
        ),
        (
            entry(
                26,
                Origin::Internal,
                Command::AddWithdrawalAddress {
                    user: UserId(3),
                    asset: AssetId(1),
                    address: "bc1q".into(),
                },
            ),
            "01 1a 1a00000000000000 00  03000000 0100 0400 62633171",
        ),
        (
            entry(
                27,
                Origin::Internal,
                Command::RequestChainWithdrawal {
                    user: UserId(3),
                    asset: AssetId(1),
                    amount: Amount::new(9),
                    id: "w".into(),
                    address: "bc".into(),
                },
            ),
            "01 1b 1b00000000000000 00  03000000 0100 0900000000000000 0100 77 0200 6263",
        ),
        (
            entry(28, Origin::Internal, Command::ApproveWithdrawal { id: "w".into() }),
            "01 1c 1c00000000000000 00  0100 77",
        ),
        (
            entry(
                29,
                Origin::Internal,
                Command::BuildWithdrawalBatch {
                    asset: AssetId(1),
                    withdrawals: vec!["w".into()],
                    inputs: vec![Outpoint {
                        txid: [0xcd; 32],
                        vout: 2,
                    }],
                    change: Some((1, 7)),
                    network_fee: Amount::new(300),
                    txid: [0xef; 32],
                },
            ),
            "01 1d 1d00000000000000 00  0100 0100 0100 77 0100 cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd 02000000 01 01000000 07000000 2c01000000000000 efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef",
        ),
        (
            entry(
                30,
                Origin::Internal,
                Command::BumpWithdrawalBatch {
                    batch: 4,
                    txid: [0x11; 32],
                    network_fee: Amount::new(600),
                },
            ),
            "01 1e 1e00000000000000 00  0400000000000000 1111111111111111111111111111111111111111111111111111111111111111 5802000000000000",
        ),
        (
            entry(
                31,
                Origin::Internal,
                Command::FinishWithdrawalBatch {
                    batch: 4,
                    txid: [0x11; 32],
                    height: 9,
                    network_fee: Amount::new(600),
                    paid: true,
                },
            ),
            "01 1f 1f00000000000000 00  0400000000000000 1111111111111111111111111111111111111111111111111111111111111111 09000000 5802000000000000 01",
        ),
        (
            entry(
                33,
                Origin::Internal,
                Command::BuildTransfer {
                    asset: AssetId(1),
                    inputs: vec![Outpoint {
                        txid: [0xcd; 32],
                        vout: 2,
                    }],
                    to: (3, 4),
                    amount: Amount::new(5_000),
                    change: Some((1, 7)),
                    network_fee: Amount::new(300),
                    txid: [0xef; 32],
                },
            ),
            "01 21 2100000000000000 00  0100 0100 cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd 02000000 03000000 04000000 8813000000000000 01 01000000 07000000 2c01000000000000 efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef",
        ),
        (
            entry(
                32,
                Origin::Internal,
                Command::RecordSolvency {
                    epoch: 7,
                    roots: vec![
                        SolvencyRoot {
                            asset: AssetId(0),
                            ledger_seq: 5,
                            epoch_id: [0xaa; 32],
                            depth: 20,
                            root_hash: [0xbb; 32],
                            root_sum: 1000,
                            reserves: Some(2000),
                        },
                        SolvencyRoot {
                            asset: AssetId(1),
                            ledger_seq: 5,
                            epoch_id: [0xcc; 32],
                            depth: 8,
                            root_hash: [0xdd; 32],
                            root_sum: 0,
                            reserves: None,
                        },
                    ],
                },
            ),
            "01 20 2000000000000000 00  0700000000000000 0200 \
             0000 0500000000000000 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 14 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb e803000000000000 01 d007000000000000 \
             0100 0500000000000000 cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc 08 dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd 0000000000000000 00",
        ),
        (
            entry(
                34,
                Origin::Internal,
                Command::RejectWithdrawal { id: "w-3".into() },
            ),
            "01 22 2200000000000000 00  0300 772d33",
        ),
        (
            entry(35, Origin::Internal, Command::AbandonTransfer { batch: 5 }),
            "01 23 2300000000000000 00  0500000000000000",
        ),
    ]
}

#[test]
fn golden_bytes_per_command() {
    for (e, expected) in goldens() {
        let bytes = enc(&e);
        assert_eq!(
            hex(&bytes),
            hex(&unhex(expected)),
            "encoding of {} changed",
            e.command.name()
        );
        assert_eq!(decode(&bytes), Ok(e));
    }
}

#[test]
fn goldens_cover_every_command_with_a_distinct_tag() {
    let mut seen = std::collections::BTreeMap::new();
    for (e, _) in goldens() {
        let tag = enc(&e)[1];
        if let Some(prev) = seen.insert(tag, e.command.name()) {
            assert_eq!(prev, e.command.name(), "tag {tag} used twice");
        }
    }
    // Tags 1..=35 in order.
    let names: Vec<&str> = seen.values().copied().collect();
    assert_eq!(
        names,
        [
            "add_asset",
            "add_market",
            "create_user",
            "set_fee_tier",
            "deposit",
            "request_withdrawal",
            "settle_withdrawal",
            "cancel_withdrawal",
            "adjust",
            "place_order",
            "cancel_order",
            "cancel_all",
            "amend_order",
            "halt_market",
            "resume_market",
            "halt_withdrawals",
            "resume_withdrawals",
            "register_user",
            "create_api_key",
            "revoke_api_key",
            "register_wallet",
            "assign_deposit_address",
            "reverse_deposit",
            "reconcile",
            "set_withdrawal_policy",
            "add_withdrawal_address",
            "request_chain_withdrawal",
            "approve_withdrawal",
            "build_withdrawal_batch",
            "bump_withdrawal_batch",
            "finish_withdrawal_batch",
            "record_solvency",
            "build_transfer",
            "reject_withdrawal",
            "abandon_transfer",
        ]
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<u8>>(),
        (1..=35).collect::<Vec<u8>>()
    );
}

// ---- typed errors ----------------------------------------------------------------

#[test]
fn header_errors() {
    assert_eq!(
        decode(&[]),
        Err(CodecError::Truncated {
            offset: 0,
            field: "version",
            needed: 1,
            available: 0
        })
    );
    assert_eq!(
        decode(&[2, 3]),
        Err(CodecError::UnsupportedVersion {
            offset: 0,
            version: 2
        })
    );
    assert_eq!(
        decode(&[0]),
        Err(CodecError::UnsupportedVersion {
            offset: 0,
            version: 0
        })
    );
    for tag in [0u8, 200, 255] {
        assert_eq!(
            decode(&internal(tag, &[])),
            Err(CodecError::UnknownCommand { offset: 1, tag })
        );
    }
    assert_eq!(
        decode(&[1, 3, 0, 0]),
        Err(CodecError::Truncated {
            offset: 2,
            field: "timestamp_ms",
            needed: 8,
            available: 2
        })
    );
    let mut bad_origin = internal(3, &[]);
    bad_origin[10] = 4;
    assert_eq!(
        decode(&bad_origin),
        Err(CodecError::BadTag {
            offset: 10,
            field: "origin",
            tag: 4
        })
    );
    assert_eq!(
        decode(&internal(15, &[1, 0, 0, 0, 9])),
        Err(CodecError::TrailingBytes {
            offset: 15,
            count: 1
        })
    );
}

#[test]
fn string_errors() {
    // Deposit: user (4) asset (2) amount (8) from offset 11; reference length at 25.
    let fixed = [0u8; 14];
    let deposit = |reference: &[u8]| {
        let mut rest = fixed.to_vec();
        rest.extend_from_slice(&str_field(reference));
        internal(5, &rest)
    };
    assert_eq!(
        decode(&deposit(b"ab\xffc")),
        Err(CodecError::InvalidUtf8 {
            offset: 29,
            field: "deposit.reference"
        })
    );
    assert_eq!(
        decode(&deposit(&[b'r'; REFERENCE_MAX + 1])),
        Err(CodecError::TooLong {
            offset: 25,
            field: "deposit.reference",
            len: REFERENCE_MAX + 1,
            max: REFERENCE_MAX
        })
    );
    assert!(decode(&deposit(&[b'r'; REFERENCE_MAX])).is_ok());
    // A length that claims more bytes than there are.
    let mut short = internal(5, &fixed);
    short.extend_from_slice(&[10, 0, b'a']);
    assert_eq!(
        decode(&short),
        Err(CodecError::Truncated {
            offset: 27,
            field: "deposit.reference",
            needed: 10,
            available: 1
        })
    );
    // Operator name over its limit, in the origin.
    let mut op = vec![CODEC_VERSION, 3];
    op.extend_from_slice(&0u64.to_le_bytes());
    op.push(1);
    op.extend_from_slice(&str_field(&[b'o'; OPERATOR_NAME_MAX + 1]));
    assert_eq!(
        decode(&op),
        Err(CodecError::TooLong {
            offset: 11,
            field: "origin.name",
            len: OPERATOR_NAME_MAX + 1,
            max: OPERATOR_NAME_MAX
        })
    );
}

#[test]
fn value_errors() {
    // AddAsset with scale 19.
    let mut rest = str_field(b"BTC");
    rest.push(19);
    assert_eq!(
        decode(&internal(1, &rest)),
        Err(CodecError::InvalidScale {
            offset: 16,
            places: 19
        })
    );
    // Adjust with a delta whose magnitude is over u64::MAX, in both directions.
    for value in [1i128 << 64, -(1i128 << 64), i128::MIN, i128::MAX] {
        let mut rest = vec![0u8; 6];
        rest.extend_from_slice(&value.to_le_bytes());
        rest.extend_from_slice(&str_field(b"r"));
        assert_eq!(
            decode(&internal(9, &rest)),
            Err(CodecError::DeltaOutOfRange { offset: 17, value })
        );
    }
    // Too many fee tiers: AddMarket's count field after symbol "AB" and 7×u64 + 2×u16.
    let mut spec = str_field(b"AB");
    spec.extend_from_slice(&[0u8; 4 + 56]);
    let count_at = 11 + spec.len();
    spec.extend_from_slice(&((FEE_TIERS_MAX + 1) as u16).to_le_bytes());
    assert_eq!(
        decode(&internal(2, &spec)),
        Err(CodecError::TooLong {
            offset: count_at,
            field: "add_market.fees",
            len: FEE_TIERS_MAX + 1,
            max: FEE_TIERS_MAX
        })
    );
}

/// PlaceOrder for user 0, market 0 with the given side byte, order type bytes, and tail.
fn place(side: u8, order: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut rest = vec![0u8; 8];
    rest.push(side);
    rest.extend_from_slice(order);
    rest.extend_from_slice(tail);
    internal(10, &rest)
}

#[test]
fn enum_and_option_tag_errors() {
    let market_base = [1u8, 5, 0, 0, 0, 0, 0, 0, 0];
    assert!(decode(&place(0, &market_base, &[0, 0])).is_ok());
    let bad =
        |field: &'static str, offset: usize, tag: u8| CodecError::BadTag { offset, field, tag };
    assert_eq!(
        decode(&place(2, &market_base, &[0, 0])),
        Err(bad("place_order.side", 19, 2))
    );
    assert_eq!(
        decode(&place(0, &[3], &[])),
        Err(bad("place_order.order", 20, 3))
    );
    assert_eq!(
        decode(&place(0, &market_base, &[2, 0])),
        Err(bad("place_order.client_id", 29, 2))
    );
    assert_eq!(
        decode(&place(0, &market_base, &[0, 7])),
        Err(bad("place_order.stp", 30, 7))
    );
    assert_eq!(
        decode(&place(0, &market_base, &[0, 1, 4])),
        Err(bad("place_order.stp", 31, 4))
    );
    let mut limit = vec![0u8];
    limit.extend_from_slice(&[0u8; 16]);
    let mut bad_tif = limit.clone();
    bad_tif.extend_from_slice(&[3, 0]);
    assert_eq!(
        decode(&place(0, &bad_tif, &[0, 0])),
        Err(bad("place_order.tif", 37, 3))
    );
    let mut bad_post_only = limit;
    bad_post_only.extend_from_slice(&[0, 2]);
    assert_eq!(
        decode(&place(0, &bad_post_only, &[0, 0])),
        Err(bad("place_order.post_only", 38, 2))
    );
    // CancelOrder with order reference tag 2.
    assert_eq!(
        decode(&internal(11, &[0, 0, 0, 0, 0, 0, 0, 0, 2])),
        Err(bad("cancel_order.order", 19, 2))
    );
    // AmendOrder with a price option byte of 5.
    let mut amend = vec![0u8; 8];
    amend.push(0);
    amend.extend_from_slice(&[0u8; 8]);
    amend.push(5);
    assert_eq!(
        decode(&internal(13, &amend)),
        Err(bad("amend_order.price", 28, 5))
    );
}

#[test]
fn invalid_client_order_ids() {
    let market_base = [1u8, 5, 0, 0, 0, 0, 0, 0, 0];
    let with_cid = |text: &[u8]| {
        let mut tail = vec![1];
        tail.extend_from_slice(&str_field(text));
        tail.push(0);
        place(0, &market_base, &tail)
    };
    assert!(decode(&with_cid(&[b'a'; CLIENT_ID_MAX])).is_ok());
    assert_eq!(
        decode(&with_cid(b"a b")),
        Err(CodecError::InvalidClientOrderId {
            offset: 30,
            error: ClientOrderIdError::BadCharacter
        })
    );
    assert_eq!(
        decode(&with_cid(b"")),
        Err(CodecError::InvalidClientOrderId {
            offset: 30,
            error: ClientOrderIdError::Empty
        })
    );
    assert_eq!(
        decode(&with_cid(&[b'a'; CLIENT_ID_MAX + 1])),
        Err(CodecError::TooLong {
            offset: 30,
            field: "place_order.client_id",
            len: CLIENT_ID_MAX + 1,
            max: CLIENT_ID_MAX
        })
    );
    // Valid UTF-8 but not an id character.
    assert!(matches!(
        decode(&with_cid("é".as_bytes())),
        Err(CodecError::InvalidClientOrderId { .. })
    ));
}

#[test]
fn errors_display_their_offset_and_field() {
    let cases = [
        (
            CodecError::Truncated {
                offset: 27,
                field: "deposit.reference",
                needed: 10,
                available: 1,
            },
            "byte 27: payload ends inside deposit.reference (needed 10 bytes, 1 left)",
        ),
        (
            CodecError::UnsupportedVersion {
                offset: 0,
                version: 9,
            },
            "byte 0: unsupported codec version 9 (this build reads version 1)",
        ),
        (
            CodecError::UnknownCommand { offset: 1, tag: 99 },
            "byte 1: unknown command tag 99",
        ),
        (
            CodecError::InvalidScale {
                offset: 16,
                places: 19,
            },
            "byte 16: asset scale 19 is above the maximum 18",
        ),
        (
            CodecError::InvalidClientOrderId {
                offset: 30,
                error: ClientOrderIdError::TooLong,
            },
            "byte 30: invalid client order id: client order id is longer than 36 characters",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
    let e: Box<dyn std::error::Error> = Box::new(CodecError::TrailingBytes {
        offset: 3,
        count: 2,
    });
    assert_eq!(
        e.to_string(),
        "byte 3: 2 unexpected bytes after the end of the entry"
    );
}

// ---- limits on the encoding side ---------------------------------------------------

#[test]
fn over_limit_entries_are_refused_by_try_encode_and_by_decode() {
    let over = [
        (
            entry(
                0,
                Origin::Internal,
                Command::Adjust {
                    user: UserId(0),
                    asset: AssetId(0),
                    delta: AmountDelta::credit(Amount::new(1)),
                    reason: "r".repeat(REASON_MAX + 1),
                },
            ),
            "adjust.reason",
            REASON_MAX + 1,
            33,
        ),
        (
            entry(
                0,
                Origin::Api {
                    key_id: 1,
                    ip: [0; 16],
                    // Longer than a u16 can say: written as u16::MAX.
                    user_agent: "u".repeat(70_000),
                },
                Command::CreateUser,
            ),
            "origin.user_agent",
            70_000,
            35,
        ),
        (
            entry(
                0,
                ops("ops"),
                Command::AddMarket {
                    spec: MarketSpec {
                        symbol: "AB".into(),
                        base: AssetId(0),
                        quote: AssetId(1),
                        tick: Amount::new(1),
                        lot: Amount::new(1),
                        min_qty: QtyLots::new(1),
                        max_qty: QtyLots::new(1),
                        min_notional: Amount::new(1),
                        max_notional: Amount::new(1),
                        max_price: PriceTicks::new(1),
                        fees: vec![
                            FeeTier {
                                maker_ppm: 0,
                                taker_ppm: 0
                            };
                            FEE_TIERS_MAX + 1
                        ],
                        collar_bps: 0,
                        default_stp: Stp::None,
                    },
                },
            ),
            "add_market.fees",
            FEE_TIERS_MAX + 1,
            16 + 4 + 4 + 56,
        ),
    ];
    for (e, field, len, offset) in over {
        let mut out = vec![7u8];
        let err = try_encode(&e, &mut out).expect_err("over the limit");
        assert_eq!(out, [7u8], "try_encode left bytes behind");
        match err {
            CodecError::TooLong {
                offset: o,
                field: f,
                len: l,
                ..
            } => {
                assert_eq!((o, f, l), (offset, field, len));
            }
            other => panic!("{other:?}"),
        }
        // encode still writes something, and decode refuses it at the same place.
        let bytes = enc(&e);
        match decode(&bytes) {
            Err(CodecError::TooLong {
                offset: o,
                field: f,
                ..
            }) => assert_eq!((o, f), (offset, field)),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn limits_match_the_engine_defaults() {
    let limits = kura_engine::Limits::DEFAULT;
    assert_eq!(REFERENCE_MAX, limits.reference_len_max);
    assert_eq!(REASON_MAX, limits.reason_len_max);
    assert_eq!(FEE_TIERS_MAX, limits.fee_tiers_max);
    assert!(ClientOrderId::parse(&"a".repeat(CLIENT_ID_MAX)).is_ok());
    assert!(ClientOrderId::parse(&"a".repeat(CLIENT_ID_MAX + 1)).is_err());
    assert_eq!(
        (SYMBOL_MAX, OPERATOR_NAME_MAX, USER_AGENT_MAX),
        (20, 64, 256)
    );
}

// ---- IP addresses ----------------------------------------------------------------

#[test]
fn ip_addresses_round_trip() {
    for text in [
        "203.0.113.9",
        "0.0.0.0",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::",
    ] {
        let ip: std::net::IpAddr = text.parse().expect("ip");
        assert_eq!(ip_from_bytes(ip_to_bytes(ip)), ip, "{text}");
    }
    assert_eq!(
        ip_to_bytes("1.2.3.4".parse().expect("ip")),
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]
    );
}

// ---- JSON ------------------------------------------------------------------------

#[test]
fn json_golden() {
    let g = goldens();
    let json = |i: usize| to_json(&g[i].0);
    assert_eq!(
        json(1),
        r#"{"timestamp_ms":2,"origin":{"type":"operator","name":"ops"},"command":{"type":"add_market","spec":{"symbol":"BTCJPY","base":0,"quote":1,"tick":1,"lot":1000,"min_qty":1,"max_qty":1000000,"min_notional":100,"max_notional":1000000000000,"max_price":1000000000,"fees":[{"maker_ppm":1000,"taker_ppm":2000},{"maker_ppm":500,"taker_ppm":1500}],"collar_bps":500,"default_stp":"expire_maker"}}}"#
    );
    assert_eq!(
        json(2),
        r#"{"timestamp_ms":18446744073709551615,"origin":{"type":"api","key_id":72623859790382856,"ip":"203.0.113.9","user_agent":"kura/1"},"command":{"type":"create_user"}}"#
    );
    assert_eq!(
        json(4),
        r#"{"timestamp_ms":1000,"origin":{"type":"internal"},"command":{"type":"deposit","user":7,"asset":1,"amount":150000,"reference":"ab"}}"#
    );
    assert_eq!(
        json(8),
        r#"{"timestamp_ms":9,"origin":{"type":"operator","name":"ops"},"command":{"type":"adjust","user":1,"asset":2,"delta":-300,"reason":"fix"}}"#
    );
    assert_eq!(
        json(9),
        r#"{"timestamp_ms":10,"origin":{"type":"api","key_id":9,"ip":"::1","user_agent":""},"command":{"type":"place_order","user":3,"market":0,"side":"sell","order":{"type":"limit","price":15000000,"qty":25,"tif":"ioc","post_only":true},"client_id":"c-1","stp":"expire_both"}}"#
    );
    assert_eq!(
        json(10),
        r#"{"timestamp_ms":10,"origin":{"type":"internal"},"command":{"type":"place_order","user":3,"market":0,"side":"buy","order":{"type":"market_base","qty":5},"client_id":null,"stp":null}}"#
    );
    assert_eq!(
        json(12),
        r#"{"timestamp_ms":11,"origin":{"type":"internal"},"command":{"type":"cancel_order","user":3,"market":1,"order":{"id":42}}}"#
    );
    assert_eq!(
        json(15),
        r#"{"timestamp_ms":13,"origin":{"type":"internal"},"command":{"type":"amend_order","user":3,"market":0,"order":{"client_id":"c-1"},"price":14999000,"remaining":null}}"#
    );
}

#[test]
fn json_escapes_quotes_backslashes_and_controls() {
    let mut s = String::new();
    escape_into(
        "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}k\u{2028}é/€😀",
        &mut s,
    );
    assert_eq!(
        s,
        r#""a\"b\\c\nd\re\tf\bg\fh\u0000i\u001fj\u007fk\u2028é/€😀""#
    );
    let e = entry(
        0,
        ops("op\"s"),
        Command::HaltMarket {
            market: MarketId(0),
            reason: "line1\nline2 \\ \"quoted\" \u{1}".into(),
        },
    );
    assert_eq!(
        to_json(&e),
        r#"{"timestamp_ms":0,"origin":{"type":"operator","name":"op\"s"},"command":{"type":"halt_market","market":0,"reason":"line1\nline2 \\ \"quoted\" \u0001"}}"#
    );
    // The whole module is reachable by path as well.
    assert_eq!(codec::CODEC_VERSION, 1);
}
