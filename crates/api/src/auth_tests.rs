use super::*;
use crate::errors::{api_error, Failure};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// Binance's documented example (rest-api.md, "SIGNED Endpoint Examples").
const DOC_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const DOC_QUERY: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
const DOC_SIG: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
/// The same order split between query and body (no separator between the two).
const DOC_MIXED_QUERY: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC";
const DOC_MIXED_BODY: &str = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
const DOC_MIXED_SIG: &str = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";
const DOC_NOW: u64 = 1_499_827_319_559;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

fn code(e: AuthError) -> i32 {
    api_error(&Failure::Auth(e)).code
}

fn hmac_record(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::parse(Some(id.as_bytes())).expect("key id"),
        number: 3,
        user: UserId(7),
        scheme: KeyScheme::Hmac,
        permissions: Permissions {
            read: true,
            trade: true,
            withdraw: false,
        },
        ip_allow: Vec::new(),
        enabled: true,
    }
}

fn verify_doc(query: &str, body: &str) -> Result<(), AuthError> {
    let (payload, sig) = split_signature(query.as_bytes(), body.as_bytes())?;
    let secret = HmacSecret::from_text(DOC_SECRET);
    verify_signature(&KeyScheme::Hmac, Some(&secret), &payload, sig)
}

#[test]
fn binance_documented_hmac_vectors() {
    let secret = HmacSecret::from_text(DOC_SECRET);
    assert_eq!(secret.sign(DOC_QUERY.as_bytes()), DOC_SIG);
    let mixed = format!("{DOC_MIXED_QUERY}{DOC_MIXED_BODY}");
    assert_eq!(secret.sign(mixed.as_bytes()), DOC_MIXED_SIG);

    // All in the query, all in the body, split between the two.
    let signed = format!("{DOC_QUERY}&signature={DOC_SIG}");
    assert_eq!(verify_doc(&signed, ""), Ok(()));
    assert_eq!(verify_doc("", &signed), Ok(()));
    let body = format!("{DOC_MIXED_BODY}&signature={DOC_MIXED_SIG}");
    assert_eq!(verify_doc(DOC_MIXED_QUERY, &body), Ok(()));
    // HMAC signatures are not case-sensitive at Binance.
    let upper = format!("{DOC_QUERY}&signature={}", DOC_SIG.to_uppercase());
    assert_eq!(verify_doc(&upper, ""), Ok(()));
}

#[test]
fn tampering_is_rejected_with_1022() {
    let cases: Vec<(String, String)> = vec![
        // A changed parameter value.
        (
            format!(
                "{}&signature={DOC_SIG}",
                DOC_QUERY.replace("price=0.1", "price=0.2")
            ),
            String::new(),
        ),
        // A changed timestamp.
        (
            format!(
                "{}&signature={DOC_SIG}",
                DOC_QUERY.replace("1499827319559", "1499827319560")
            ),
            String::new(),
        ),
        // Re-encoded but equivalent: the signature is over the raw bytes.
        (
            format!(
                "{}&signature={DOC_SIG}",
                DOC_QUERY.replace("LTCBTC", "LTC%42TC")
            ),
            String::new(),
        ),
        // The query-only signature used for the split request (payload differs by '&').
        (
            DOC_MIXED_QUERY.to_owned(),
            format!("{DOC_MIXED_BODY}&signature={DOC_SIG}"),
        ),
        // A body appended to a query-signed request.
        (
            format!("{DOC_QUERY}&signature={DOC_SIG}"),
            "quantity=100".to_owned(),
        ),
        // The signature of another request.
        (
            format!("{DOC_QUERY}&signature={DOC_MIXED_SIG}"),
            String::new(),
        ),
    ];
    for (query, body) in cases {
        let e = verify_doc(&query, &body).expect_err("tampered");
        assert_eq!(e, AuthError::BadSignature, "{query} | {body}");
        assert_eq!(code(e), -1022);
    }
    for bad in ["zz", "", "c8db", &DOC_SIG[..63], &format!("{DOC_SIG}00")] {
        let q = format!("{DOC_QUERY}&signature={bad}");
        let e = verify_doc(&q, "").expect_err("bad signature text");
        assert!(matches!(code(e), -1022 | -1102), "{bad}");
    }
}

#[test]
fn signature_segment_handling() {
    assert_eq!(
        split_signature(b"a=1&signature=x&b=2", b""),
        Ok((b"a=1&b=2".to_vec(), &b"x"[..]))
    );
    assert_eq!(
        split_signature(b"a=1&&signature=x", b""),
        Ok((b"a=1&".to_vec(), &b"x"[..])),
        "equals everything before &signature="
    );
    assert_eq!(
        split_signature(b"a=1", b"b=2&signature=x"),
        Ok((b"a=1b=2".to_vec(), &b"x"[..]))
    );
    let missing = split_signature(b"a=1", b"").expect_err("missing");
    assert_eq!(code(missing), -1102);
    let empty = split_signature(b"a=1&signature=", b"").expect_err("empty");
    assert_eq!(code(empty), -1102);
    let dup = split_signature(b"signature=a", b"signature=b").expect_err("dup");
    assert_eq!(code(dup), -1101);
}

#[test]
fn timestamp_and_recv_window_edges() {
    let now = 1_700_000_000_000u64;
    let cases: &[(u64, Option<u64>, Result<(), AuthError>)] = &[
        (now, None, Ok(())),
        (now - 5_000, None, Ok(())),
        (now - 5_001, None, Err(AuthError::TimestampExpired)),
        (now + 999, None, Ok(())),
        (now + 1_000, None, Err(AuthError::TimestampAhead)),
        (now - 10_000, Some(10_000), Ok(())),
        (now - 10_001, Some(10_000), Err(AuthError::TimestampExpired)),
        (now - 60_000, Some(60_000), Ok(())),
        (now, Some(60_001), Err(AuthError::RecvWindowTooLarge)),
        (now, Some(0), Ok(())),
        (now - 1, Some(0), Err(AuthError::TimestampExpired)),
        (0, None, Err(AuthError::TimestampExpired)),
        (u64::MAX, None, Err(AuthError::TimestampAhead)),
    ];
    for (ts, window, want) in cases {
        assert_eq!(
            check_timestamp(*ts, *window, now),
            *want,
            "ts {ts} window {window:?}"
        );
    }
    assert_eq!(check_timestamp(0, None, 0), Ok(()));
    assert_eq!(check_timestamp(u64::MAX - 1, None, u64::MAX), Ok(()));
    assert_eq!(code(AuthError::TimestampExpired), -1021);
    assert_eq!(code(AuthError::TimestampAhead), -1021);
}

#[test]
fn authenticate_full_flow_with_documented_vector() {
    let key = hmac_record(DOC_KEY);
    // The documented secret is not derived from a master key, so verify it by hand
    // through the same steps: `authenticate` derives; see `derived_secret_flow`.
    let signed = format!("{DOC_QUERY}&signature={DOC_SIG}");
    let req = SignedRequest {
        api_key: Some(DOC_KEY.as_bytes()),
        raw_query: signed.as_bytes(),
        raw_body: b"",
        client_ip: IP,
    };
    let master = MasterKey::from_bytes([1; 32]);
    let e = authenticate(&req, |_| Some(&key), &master, Permission::Trade, DOC_NOW)
        .expect_err("documented secret is not the derived one");
    assert_eq!(e, AuthError::BadSignature);
}

fn derived_request(
    master: &MasterKey,
    key_id: &ApiKeyId,
    query: &str,
    body: &str,
    sig_in_body: bool,
) -> (String, String) {
    let secret = master.derive_hmac_secret(key_id);
    let sig = secret.sign(format!("{query}{body}").as_bytes());
    if sig_in_body {
        (query.to_owned(), format!("{body}&signature={sig}"))
    } else {
        (format!("{query}&signature={sig}"), body.to_owned())
    }
}

#[test]
fn derived_secret_flow() {
    let master = MasterKey::from_bytes([42; 32]);
    let key_id = ApiKeyId::from_random([9; 32]);
    let mut key = hmac_record(key_id.as_str());
    let now = 1_700_000_000_000u64;
    let body = format!("timestamp={now}&symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=25000&timeInForce=GTC&recvWindow=10000");
    let (q, b) = derived_request(&master, &key_id, "", &body, true);
    let run = |key: &ApiKeyRecord, perm, now, ip| {
        let req = SignedRequest {
            api_key: Some(key_id.as_str().as_bytes()),
            raw_query: q.as_bytes(),
            raw_body: b.as_bytes(),
            client_ip: ip,
        };
        authenticate(
            &req,
            |id| (id == &key.id).then_some(key),
            &master,
            perm,
            now,
        )
    };
    let ok = run(&key, Permission::Trade, now + 9_000, IP).expect("valid");
    assert_eq!(ok.user, UserId(7));
    assert_eq!(ok.params.get("symbol"), Some("BTCUSDT"));
    // recvWindow=10000 was signed: 10001 ms later is too late.
    assert_eq!(
        run(&key, Permission::Trade, now + 10_001, IP),
        Err(AuthError::TimestampExpired)
    );
    assert_eq!(
        run(&key, Permission::Trade, now - 1_000, IP),
        Err(AuthError::TimestampAhead)
    );
    assert_eq!(
        run(&key, Permission::Withdraw, now, IP),
        Err(AuthError::PermissionDenied)
    );
    key.ip_allow = vec![IpNet::parse("198.51.100.0/24").expect("net")];
    assert_eq!(
        run(&key, Permission::Trade, now, IP),
        Err(AuthError::IpNotAllowed)
    );
    key.ip_allow.push(IpNet::parse("203.0.113.7").expect("net"));
    assert!(run(&key, Permission::Trade, now, IP).is_ok());
    key.permissions.withdraw = true;
    assert!(run(&key, Permission::Withdraw, now, IP).is_ok());
    key.enabled = false;
    assert_eq!(
        run(&key, Permission::Trade, now, IP),
        Err(AuthError::KeyDisabled)
    );
    // Another master key derives another secret.
    let other = MasterKey::from_bytes([43; 32]);
    assert_ne!(
        other.derive_hmac_secret(&key_id),
        master.derive_hmac_secret(&key_id)
    );
    assert_eq!(master.derive_hmac_secret(&key_id).expose().len(), 64);
    assert_eq!(format!("{master:?}"), "MasterKey(..)");
    assert_eq!(
        format!("{:?}", master.derive_hmac_secret(&key_id)),
        "HmacSecret(..)"
    );
}

#[test]
fn derivation_is_fixed() {
    // Pinned so a change to the derivation (which would invalidate every issued key)
    // cannot go unnoticed. Independent computation: HMAC-SHA256 with key 32 x 0x2a
    // over "kura-api-key-v1" 0x00 followed by 64 x '0'.
    let master = MasterKey::from_bytes([42; 32]);
    let key_id = ApiKeyId::from_random([0; 32]);
    let mut mac = new_mac(&[42; 32]);
    mac.update(b"kura-api-key-v1\0");
    mac.update(&[b'0'; 64]);
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(master.derive_hmac_secret(&key_id).expose(), want);
    assert_eq!(master.derive_hmac_secret(&key_id).expose(), DERIVED_VECTOR);
}

/// Computed independently (Python `hmac`).
const DERIVED_VECTOR: &str = "59cdfa195add9536931e2d7fbc14f434e1d98c06b6f81352f9c7f78b5c481de2";

#[test]
fn api_key_header_errors() {
    let master = MasterKey::from_bytes([1; 32]);
    let key = hmac_record(DOC_KEY);
    let cases: &[(Option<&[u8]>, AuthError, i32)] = &[
        (None, AuthError::MissingApiKey, -2014),
        (Some(b"short"), AuthError::BadApiKeyFormat, -2014),
        (Some(&[b'a'; 65]), AuthError::BadApiKeyFormat, -2014),
        (Some(&[b'-'; 64]), AuthError::BadApiKeyFormat, -2014),
        (Some(&[b'b'; 64]), AuthError::UnknownApiKey, -2015),
    ];
    for (header, want, want_code) in cases {
        let req = SignedRequest {
            api_key: *header,
            raw_query: b"timestamp=1&signature=00",
            raw_body: b"",
            client_ip: IP,
        };
        let e = authenticate(
            &req,
            |id| (id == &key.id).then_some(&key),
            &master,
            Permission::Read,
            1,
        )
        .expect_err("must fail");
        assert_eq!(&e, want);
        assert_eq!(code(e), *want_code);
    }
}

/// Percent-encode as JavaScript's encodeURIComponent (what CCXT applies to the
/// Ed25519 base64 signature).
fn encode_uri_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn ed25519_pem_round_trip() {
    // The user's PEM private key (what CCXT gets as `secret`) and the public key PEM
    // the user registers with kura.
    let signing = SigningKey::from_bytes(&[5; 32]);
    let private_pem = signing.to_pkcs8_pem(LineEnding::LF).expect("pem");
    assert!(private_pem.contains("PRIVATE KEY"));
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let public = ed25519_public_key_from_pem(&public_pem).expect("public key");
    assert_eq!(ed25519_public_key_from_pem("not a pem"), None);

    let master = MasterKey::from_bytes([1; 32]);
    let key_id = ApiKeyId::from_random([3; 32]);
    let key = ApiKeyRecord {
        scheme: KeyScheme::Ed25519 { public },
        ..hmac_record(key_id.as_str())
    };

    // Client side, as CCXT: parse the PEM, sign the query, base64, URI-encode.
    let client = SigningKey::from_pkcs8_pem(&private_pem).expect("parse pem");
    let now = 1_700_000_000_000u64;
    let query = format!("timestamp={now}&symbol=BTCUSDT&recvWindow=10000");
    let sig = client.sign(query.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
    let signed = format!("{query}&signature={}", encode_uri_component(&b64));

    let run = |raw_query: &str, now: u64| {
        let req = SignedRequest {
            api_key: Some(key_id.as_str().as_bytes()),
            raw_query: raw_query.as_bytes(),
            raw_body: b"",
            client_ip: IP,
        };
        authenticate(&req, |_| Some(&key), &master, Permission::Read, now)
    };
    assert!(run(&signed, now).is_ok());
    // Base64 sent without percent-encoding: its '+' would decode to a space, so it
    // verifies only when the text has none (CCXT always encodes).
    let raw = format!("{query}&signature={b64}");
    assert_eq!(run(&raw, now).is_ok(), !b64.contains('+'));
    // Tampering with the query or the timestamp fails.
    let tampered = signed.replace("BTCUSDT", "ETHUSDT");
    assert_eq!(run(&tampered, now), Err(AuthError::BadSignature));
    let later = signed.replace(&now.to_string(), &(now + 1).to_string());
    assert_eq!(run(&later, now), Err(AuthError::BadSignature));
    assert_eq!(run(&signed, now + 10_001), Err(AuthError::TimestampExpired));
    // An HMAC signature against an Ed25519 key fails.
    let hmac_sig = master.derive_hmac_secret(&key_id).sign(query.as_bytes());
    assert_eq!(
        run(&format!("{query}&signature={hmac_sig}"), now),
        Err(AuthError::BadSignature)
    );
    // Another key's signature fails.
    let other = SigningKey::from_bytes(&[6; 32]).sign(query.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(other.to_bytes());
    assert_eq!(
        run(
            &format!("{query}&signature={}", encode_uri_component(&b64)),
            now
        ),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn ip_nets() {
    let net = IpNet::parse("10.1.0.0/16").expect("net");
    assert!(net.contains("10.1.255.3".parse().expect("ip")));
    assert!(!net.contains("10.2.0.1".parse().expect("ip")));
    // IPv4-mapped IPv6 addresses match IPv4 entries.
    assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
    let any4 = IpNet::parse("0.0.0.0/0").expect("net");
    assert!(any4.contains("1.2.3.4".parse().expect("ip")));
    assert!(!any4.contains("2001:db8::1".parse().expect("ip")));
    let v6 = IpNet::parse("2001:db8::/32").expect("net");
    assert!(v6.contains("2001:db8:ffff::1".parse().expect("ip")));
    assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
    for bad in ["10.0.0.0/33", "10.0.0.0/", "x", "::/129", "1.2.3.4/+1"] {
        assert_eq!(IpNet::parse(bad), None, "{bad}");
    }
    assert!(ip_allowed(&[], IP));
}

proptest! {
    #[test]
    fn arbitrary_requests_never_panic(
        q in proptest::collection::vec(any::<u8>(), 0..300),
        b in proptest::collection::vec(any::<u8>(), 0..300),
        now in any::<u64>(),
    ) {
        let key = hmac_record(DOC_KEY);
        let master = MasterKey::from_bytes([1; 32]);
        let req = SignedRequest {
            api_key: Some(DOC_KEY.as_bytes()),
            raw_query: &q,
            raw_body: &b,
            client_ip: IP,
        };
        let r = authenticate(&req, |_| Some(&key), &master, Permission::Read, now);
        prop_assert!(r.is_err());
        let _ = api_error(&Failure::Auth(r.expect_err("no valid signature")));
    }

    #[test]
    fn any_single_byte_change_breaks_the_signature(idx in 0usize..DOC_QUERY.len(), byte in any::<u8>()) {
        let mut q = DOC_QUERY.as_bytes().to_vec();
        prop_assume!(q[idx] != byte);
        q[idx] = byte;
        let secret = HmacSecret::from_text(DOC_SECRET);
        let sig = hex::decode(DOC_SIG).expect("hex");
        let r = verify_signature(&KeyScheme::Hmac, Some(&secret), &q, DOC_SIG.as_bytes());
        prop_assert_eq!(r, Err(AuthError::BadSignature));
        prop_assert_eq!(sig.len(), 32);
    }
}
