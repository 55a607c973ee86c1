//! The encrypted hot key file.

use bitcoin::Network;
use kura_signer::keyfile::{self, KdfParams, KeyFileError};

const PASS: &[u8] = b"correct horse battery staple";

#[test]
fn create_and_open_give_the_same_public_descriptor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hot.key");
    let info = keyfile::create(&path, PASS, Network::Regtest).expect("create");
    let key = keyfile::open(&path, PASS).expect("open");
    assert_eq!(key.descriptor(), info.descriptor);
    assert_eq!(key.fingerprint(), info.fingerprint);
    let fp = info.fingerprint.to_string();
    assert!(
        info.descriptor
            .starts_with(&format!("wpkh([{fp}/84'/1'/1']tpub")),
        "{}",
        info.descriptor
    );
    assert!(info.descriptor.contains("/0/*)#"));
    let parsed = kura_custody::parse_descriptor(&info.descriptor).expect("registrable");
    assert!(parsed.is_ranged());
    // No secret in Debug, nor in the file.
    let debug = format!("{key:?}");
    assert!(
        !debug.contains("tprv") && debug.contains("redacted"),
        "{debug}"
    );
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(!text.contains("tprv") && text.contains("\"magic\":\"kura-hot-key\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Two keys are different keys.
    let other =
        keyfile::create(&dir.path().join("other.key"), PASS, Network::Regtest).expect("create");
    assert_ne!(other.fingerprint, info.fingerprint);
    // Nothing but the key files is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn mainnet_uses_coin_type_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        ..KdfParams::default()
    };
    let info =
        keyfile::create_with(&dir.path().join("k"), PASS, Network::Bitcoin, fast).expect("create");
    assert!(
        info.descriptor.contains("/84'/0'/1']xpub"),
        "{}",
        info.descriptor
    );
}

#[test]
fn refuses_to_overwrite_and_empty_passphrases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hot.key");
    assert!(matches!(
        keyfile::create(&path, b"", Network::Regtest),
        Err(KeyFileError::EmptyPassphrase)
    ));
    assert!(!path.exists());
    std::fs::write(&path, b"precious").expect("write");
    assert!(matches!(
        keyfile::create(&path, PASS, Network::Regtest),
        Err(KeyFileError::Exists(_))
    ));
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
}

#[test]
fn wrong_passphrase_and_damaged_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hot.key");
    keyfile::create(&path, PASS, Network::Regtest).expect("create");
    let err = keyfile::open(&path, b"wrong").expect_err("wrong passphrase");
    assert!(matches!(err, KeyFileError::WrongPassphrase(_)));
    assert!(err.to_string().contains("wrong passphrase"));

    let good = std::fs::read_to_string(&path).expect("read");
    let value: serde_json::Value = serde_json::from_str(&good).expect("json");
    let with = |field: &str, v: serde_json::Value| {
        let mut changed = value.clone();
        changed[field] = v;
        changed.to_string()
    };
    let ciphertext = value["ciphertext"].as_str().expect("hex").to_string();
    let flipped = format!(
        "{}{}",
        if ciphertext.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &ciphertext[1..]
    );
    let mut big_kdf = value["kdf"].clone();
    big_kdf["memory_kib"] = serde_json::json!(u32::MAX);
    let cases: Vec<(&str, String, bool)> = vec![
        ("empty", String::new(), false),
        ("garbage", "\u{0}\u{1}not json".into(), false),
        ("truncated", good[..good.len() / 2].to_string(), false),
        ("magic", with("magic", "other".into()), false),
        ("hex", with("salt", "zz".into()), false),
        ("short nonce", with("nonce", "00".into()), false),
        ("kdf bound", with("kdf", big_kdf), false),
        ("network", with("network", "moon".into()), false),
        // Authenticated: a flipped ciphertext bit or a changed header does not open.
        ("ciphertext", with("ciphertext", flipped.into()), true),
        ("header", with("network", "testnet".into()), true),
    ];
    for (name, text, authenticated) in cases {
        std::fs::write(&path, &text).expect("write");
        match keyfile::open(&path, PASS) {
            Err(KeyFileError::Corrupt { .. }) if !authenticated => {}
            Err(KeyFileError::WrongPassphrase(_)) if authenticated => {}
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
    let mut future = value.clone();
    future["version"] = serde_json::json!(2);
    std::fs::write(&path, future.to_string()).expect("write");
    assert!(matches!(
        keyfile::open(&path, PASS),
        Err(KeyFileError::UnsupportedVersion { version: 2, .. })
    ));
    assert!(matches!(
        keyfile::open(&dir.path().join("missing"), PASS),
        Err(KeyFileError::Io { .. })
    ));
}
