//! C2SP signed notes and checkpoints.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use kura_proofs::checkpoint::{
    key_id, open, open_note, sign, sign_note, Checkpoint, NoteError, NoteVerifier,
};
use kura_proofs::tlog::MerkleLog;
use proptest::prelude::*;

// The example key and note of the Go signed-note implementation
// (golang.org/x/mod/sumdb/note), an independent implementation of the same format.
const GO_SIGNER_KEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VERIFIER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_NOTE_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn go_signing_key() -> SigningKey {
    let raw = B64.decode(GO_SIGNER_KEY_B64).expect("base64");
    assert_eq!(raw[0], 0x01);
    let seed: [u8; 32] = raw[1..].try_into().expect("32 bytes");
    SigningKey::from_bytes(&seed)
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn checkpoint() -> Checkpoint {
    let mut log = MerkleLog::new();
    for i in 0..10u32 {
        log.append_data(&i.to_be_bytes());
    }
    Checkpoint {
        origin: "example.com/kura/audit".into(),
        size: log.size(),
        root: log.root(),
        extensions: vec![],
    }
}

#[test]
fn interoperates_with_the_go_example() {
    let v = NoteVerifier::parse(GO_VERIFIER_KEY).expect("verifier key parses");
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(hex::encode(v.key_id()), "c74f20a3");
    assert_eq!(v.to_string(), GO_VERIFIER_KEY);
    let sk = go_signing_key();
    assert_eq!(sk.verifying_key(), *v.key());
    assert_eq!(key_id("PeterNeumann", v.key()), v.key_id());

    // Ed25519 is deterministic: signing the same text gives the Go example byte for byte.
    let note = sign_note(GO_TEXT, "PeterNeumann", &sk).expect("signs");
    assert_eq!(note, format!("{GO_TEXT}\n{GO_NOTE_SIG}"));
    assert_eq!(open_note(&note, &v).expect("opens"), GO_TEXT);

    // Another key's signature is ignored; ours still has to be there.
    let other = NoteVerifier::new("EnochRoot", key(9).verifying_key()).expect("name");
    assert_eq!(open_note(&note, &other), Err(NoteError::UnknownKey));
    let extra = sign_note(GO_TEXT, "EnochRoot", &key(9)).expect("signs");
    let extra_line = extra.rsplit_once("\n\n").expect("blank line").1;
    let both = format!("{GO_TEXT}\n{GO_NOTE_SIG}{extra_line}");
    assert_eq!(open_note(&both, &v).expect("opens"), GO_TEXT);
    assert_eq!(open_note(&both, &other).expect("opens"), GO_TEXT);
}

#[test]
fn checkpoint_round_trip() {
    let sk = key(1);
    let v = NoteVerifier::new("example.com/kura/audit", sk.verifying_key()).expect("name");
    let again = NoteVerifier::parse(&v.to_string()).expect("parses its own string");
    assert_eq!(again, v);

    let mut cp = checkpoint();
    let note = sign(&cp, "example.com/kura/audit", &sk).expect("signs");
    let body = note.split("\n\n").next().expect("body");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "example.com/kura/audit");
    assert_eq!(lines[1], "10");
    assert_eq!(lines[2], B64.encode(cp.root));
    assert!(note.contains("\n\n\u{2014} example.com/kura/audit "));
    assert_eq!(open(&note, &v), Ok(cp.clone()));

    cp.extensions = vec!["Timestamp: 1700000000".into(), "por/v1 abc".into()];
    let note = sign(&cp, "example.com/kura/audit", &sk).expect("signs");
    assert_eq!(open(&note, &v), Ok(cp.clone()));

    let empty = Checkpoint {
        size: 0,
        root: kura_proofs::tlog::EMPTY_ROOT,
        extensions: vec![],
        ..cp
    };
    let note = sign(&empty, "example.com/kura/audit", &sk).expect("signs");
    assert_eq!(open(&note, &v), Ok(empty));
}

#[test]
fn tampering_is_rejected() {
    let sk = key(1);
    let v = NoteVerifier::new("log", sk.verifying_key()).expect("name");
    let note = sign(&checkpoint(), "log", &sk).expect("signs");
    assert!(open(&note, &v).is_ok());

    // Size changed.
    let bad = note.replacen("\n10\n", "\n11\n", 1);
    assert_eq!(open(&bad, &v), Err(NoteError::BadSignature));
    // Origin changed.
    let bad = note.replacen("example.com", "example.org", 1);
    assert_eq!(open(&bad, &v), Err(NoteError::BadSignature));
    // An extension line added.
    let (body, sigs) = note.rsplit_once("\n\n").expect("split");
    let bad = format!("{body}\nextra\n\n{sigs}");
    assert_eq!(open(&bad, &v), Err(NoteError::BadSignature));

    // Every bit of the signature.
    let (_, line) = sigs.split_once("log ").expect("sig");
    let blob = B64.decode(line.trim_end()).expect("b64");
    assert_eq!(blob.len(), 68);
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x10;
        let bad = format!("{body}\n\n\u{2014} log {}\n", B64.encode(&b));
        let r = open(&bad, &v);
        if i < 4 {
            // A changed key id makes it another key's signature.
            assert_eq!(r, Err(NoteError::UnknownKey));
        } else {
            assert_eq!(r, Err(NoteError::BadSignature));
        }
    }

    // Signed by another key under the same name.
    let forged = sign(&checkpoint(), "log", &key(2)).expect("signs");
    assert_eq!(open(&forged, &v), Err(NoteError::UnknownKey));
    // Our key's signature copied under another name.
    let renamed = note.replace("\u{2014} log ", "\u{2014} lag ");
    assert_eq!(open(&renamed, &v), Err(NoteError::UnknownKey));
    // Truncated signature by the known key.
    let short = B64.encode(&blob[..40]);
    let bad = format!("{body}\n\n\u{2014} log {short}\n");
    assert_eq!(open(&bad, &v), Err(NoteError::BadSignature));
}

#[test]
fn malformed_notes_and_keys_are_rejected() {
    let sk = key(1);
    let v = NoteVerifier::new("log", sk.verifying_key()).expect("name");
    let good = sign(&checkpoint(), "log", &sk).expect("signs");
    for bad in [
        "",
        "\n",
        "\n\n",
        "no signature\n",
        &good[..good.len() - 1],
        &good.replace('\u{2014}', "-"),
        &good.replace("\n\n", "\n"),
        &format!("{good}\n"),
        &good.replace("log ", "log"),
        &good.replace('\n', "\r\n"),
        &format!("a\tb\n{}", &good),
    ] {
        assert!(open(bad, &v).is_err(), "{bad:?}");
    }

    // Bodies that are signed correctly but are not checkpoints.
    for body in [
        "origin\n10\n",
        "\n10\nAAAA\n",
        "origin\n010\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n+1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n1\nAAAA\n",
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\next\n",
    ] {
        let note = sign_note(body, "log", &sk).expect("note signs");
        assert!(
            matches!(open(&note, &v), Err(NoteError::MalformedCheckpoint(_))),
            "{body:?}"
        );
    }
    let ok = "origin\n18446744073709551615\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n";
    let note = sign_note(ok, "log", &sk).expect("signs");
    assert_eq!(open(&note, &v).map(|c| c.size), Ok(u64::MAX));

    // Things that cannot be signed.
    assert_eq!(
        sign_note("no newline", "log", &sk),
        Err(NoteError::MalformedNote("text must end with a newline"))
    );
    assert_eq!(sign_note("x\n", "a b", &sk), Err(NoteError::BadKeyName));
    assert_eq!(sign_note("x\n", "a+b", &sk), Err(NoteError::BadKeyName));
    assert_eq!(sign_note("x\n", "", &sk), Err(NoteError::BadKeyName));
    let mut cp = checkpoint();
    cp.origin = "two\nlines".into();
    assert!(sign(&cp, "log", &sk).is_err());
    let mut cp = checkpoint();
    cp.extensions = vec![String::new()];
    assert!(sign(&cp, "log", &sk).is_err());

    // Verifier key strings.
    let s = v.to_string();
    assert!(NoteVerifier::parse(&s).is_ok());
    let (name, rest) = s.split_once('+').expect("plus");
    let (id, k) = rest.split_once('+').expect("plus");
    for bad in [
        String::new(),
        format!("{name}+{id}"),
        format!("{name}+00000000+{k}"),
        format!("other+{id}+{k}"),
        format!("{name}+{}+{k}", &id[..7]),
        format!("{name}+{id}+{}", &k[1..]),
        format!("+{id}+{k}"),
        format!("{name}+{id}+{}", B64.encode([2u8; 33])),
        format!("{name}+{id}+{}", B64.encode([1u8; 32])),
    ] {
        assert!(NoteVerifier::parse(&bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_notes_never_panic(s in "\\PC{0,300}", tail in "[A-Za-z0-9+/=]{0,100}") {
        let v = NoteVerifier::new("log", key(1).verifying_key()).expect("name");
        prop_assert!(open(&s, &v).is_err());
        let note = format!("{s}\n\n\u{2014} log {tail}\n");
        prop_assert!(open(&note, &v).is_err());
        let _ = NoteVerifier::parse(&s);
        let _ = Checkpoint::from_text(&s);
    }

    #[test]
    fn any_valid_checkpoint_round_trips(
        origin in "[a-z0-9./-]{1,40}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        extensions in proptest::collection::vec("[ -~]{1,30}", 0..4),
        seed in any::<[u8; 32]>(),
    ) {
        let sk = SigningKey::from_bytes(&seed);
        let v = NoteVerifier::new(&origin, sk.verifying_key()).expect("name");
        let cp = Checkpoint { origin: origin.clone(), size, root, extensions };
        let note = sign(&cp, &origin, &sk).expect("signs");
        prop_assert_eq!(open(&note, &v), Ok(cp));
        // One flipped body byte is always caught.
        let body_len = note.find("\n\n").expect("blank line");
        let mut bytes = note.clone().into_bytes();
        let i = body_len / 2;
        bytes[i] ^= 0x01;
        if let Ok(bad) = String::from_utf8(bytes) {
            prop_assert!(open(&bad, &v).is_err());
        }
    }
}
