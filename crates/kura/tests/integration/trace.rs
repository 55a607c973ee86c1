//! Incident drill for `kura trace`, the real binary against a node on the devnet: a thief
//! who copied the hot key file and its passphrase opens it outside kura, steals a hot
//! coin, splits and merges the coins over several hops (one payment lands on a
//! customer's deposit address, one spend is still in the mempool), and `kura trace` of
//! the theft finds every address that holds the coins now, labelled ours or foreign, with
//! amounts that add up to the stolen amount minus the fees; the depth limit stops the
//! trace and names the spender beyond it; the DOT and SVG files parse; bad starts are
//! clear errors.

use crate::node_common;
use argon2::{Algorithm, Argon2, Params, Version as ArgonVersion};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use kura::server::custody::{ChainChoice, CustodyConfig};
use kura::server::{Exchange, ServerConfig};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv};
use kura_chain::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use kura_chain::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use kura_chain::bitcoin::{
    absolute::LockTime, transaction::Version, Address, Amount, CompressedPublicKey, Network,
    OutPoint, PrivateKey, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use kura_chain::Devnet;
use kura_engine::{Command, WalletRole};
use kura_units::{AssetId, UserId};
use node_common::submit;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::str::FromStr;
use std::time::Duration;

const NET: Network = Network::Regtest;
const BTC: AssetId = AssetId(0);
const STOLEN: u64 = 100_000_000;

fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        poll: Duration::from_millis(20),
        ..CustodyConfig::default()
    };
    c
}

/// A customer with a deposit address.
fn customer(ex: &Exchange, name: &str) -> (UserId, Address) {
    let events = submit(
        ex,
        Command::RegisterUser {
            name: name.to_owned(),
        },
    );
    let user = events
        .iter()
        .find_map(|e| match e.kind {
            kura_engine::EventKind::UserCreated { user } => Some(user),
            _ => None,
        })
        .expect("created");
    submit(ex, Command::AssignDepositAddress { user, asset: BTC });
    let (descriptor, index) = ex
        .backend()
        .handle()
        .query_wait(move |e| {
            let (wallet, index) = e.deposit_address(user, BTC).expect("assigned");
            (e.wallets()[wallet as usize].descriptor.clone(), index)
        })
        .expect("query");
    let (_, address) = kura_custody::derive(&descriptor, index, NET).expect("derive");
    (user, address)
}

/// What a thief with a copy of `DIR/signer/hot.key` and its passphrase (`hot.pass`, kept
/// beside it when `KURA_SIGNER_PASSPHRASE` is unset) does: opens the file by its
/// documented format — Argon2id of the passphrase, XChaCha20-Poly1305 over the seed, the
/// header as associated data — without any of kura's code, and derives the hot wallet's
/// key at `index` (`m/84'/1'/1'/0/index`).
fn stolen_hot_key(dir: &Path, index: u32) -> PrivateKey {
    let signer = dir.join("signer");
    let file: Value =
        serde_json::from_slice(&std::fs::read(signer.join("hot.key")).expect("key file"))
            .expect("json");
    let passphrase = std::fs::read_to_string(signer.join("hot.pass")).expect("passphrase");
    let number = |v: &Value| u32::try_from(v.as_u64().expect("number")).expect("u32");
    let kdf = &file["kdf"];
    let (m, t, p) = (
        number(&kdf["memory_kib"]),
        number(&kdf["iterations"]),
        number(&kdf["parallelism"]),
    );
    let text = |k: &str| file[k].as_str().expect("text").to_owned();
    let salt = hex::decode(text("salt")).expect("salt");
    let mut key = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        ArgonVersion::V0x13,
        Params::new(m, t, p, Some(32)).expect("params"),
    )
    .hash_password_into(passphrase.trim().as_bytes(), &salt, &mut key)
    .expect("argon2");
    let aad = format!(
        "{}|{}|{}|argon2id|{m}|{t}|{p}|{}",
        text("magic"),
        file["version"],
        text("network"),
        text("salt")
    );
    let seed = XChaCha20Poly1305::new(Key::from_slice(&key))
        .decrypt(
            XNonce::from_slice(&hex::decode(text("nonce")).expect("nonce")),
            Payload {
                msg: &hex::decode(text("ciphertext")).expect("ciphertext"),
                aad: aad.as_bytes(),
            },
        )
        .expect("the passphrase opens the key file");
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(NET, &seed).expect("master");
    let path = DerivationPath::from_str(&format!("m/84'/1'/1'/0/{index}")).expect("path");
    master.derive_priv(&secp, &path).expect("derive").to_priv()
}

/// One of the thief's own keys.
fn thief_key(seed: u8) -> PrivateKey {
    PrivateKey::new(SecretKey::from_slice(&[seed; 32]).expect("key"), NET)
}

fn p2wpkh(key: &PrivateKey) -> ScriptBuf {
    let public = CompressedPublicKey::from_private_key(&Secp256k1::new(), key).expect("public");
    ScriptBuf::new_p2wpkh(&public.wpubkey_hash())
}

fn address(script: &ScriptBuf) -> String {
    Address::from_script(script, NET)
        .expect("address")
        .to_string()
}

/// Spends `coins` (outpoint, value, key) to `outputs`, signed, and submits it.
fn pay(
    devnet: &Devnet,
    coins: &[(OutPoint, u64, &PrivateKey)],
    outputs: &[(u64, ScriptBuf)],
) -> Transaction {
    let secp = Secp256k1::new();
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: coins
            .iter()
            .map(|(o, _, _)| TxIn {
                previous_output: *o,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(v, s)| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: s.clone(),
            })
            .collect(),
    };
    let mut witnesses = Vec::new();
    {
        let mut cache = SighashCache::new(&tx);
        for (i, (_, value, key)) in coins.iter().enumerate() {
            let sighash = cache
                .p2wpkh_signature_hash(
                    i,
                    &p2wpkh(key),
                    Amount::from_sat(*value),
                    EcdsaSighashType::All,
                )
                .expect("sighash");
            let sig = kura_chain::bitcoin::ecdsa::Signature {
                signature: secp.sign_ecdsa(&Message::from(sighash), &key.inner),
                sighash_type: EcdsaSighashType::All,
            };
            let public = CompressedPublicKey::from_private_key(&secp, key).expect("public");
            witnesses.push(Witness::p2wpkh(&sig, &public.0));
        }
    }
    for (input, w) in tx.input.iter_mut().zip(witnesses) {
        input.witness = w;
    }
    devnet.submit_tx(&tx).expect("the devnet accepts it");
    tx
}

fn kura(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KURA_DATA")
        .env_remove("KURA_RPC_URL")
        .env_remove("KURA_RPC_COOKIE")
        .env_remove("KURA_RPC_USER")
        .env_remove("KURA_RPC_PASSWORD")
        .output()
        .expect("run kura")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `kura trace START --data DIR --out OUT …`; returns stdout and trace.json.
fn trace(dir: &Path, out: &Path, start: &str, extra: &[&str]) -> (String, Value) {
    let mut args = vec![
        "trace",
        start,
        "--data",
        dir.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let run = kura(&args);
    assert!(
        run.status.success(),
        "kura {args:?} failed:\n{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(out.join("trace.json")).expect("trace.json"))
        .expect("trace.json is JSON");
    (text(&run.stdout), json)
}

fn fails(args: &[&str], expected: &str) {
    let run = kura(args);
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// Held coins by address: (address, traced sat, role of the owner, confirmed).
fn holdings(t: &Value) -> Vec<(String, u64, Option<String>, bool)> {
    let mut v: Vec<_> = t["holdings"]
        .as_array()
        .expect("holdings")
        .iter()
        .map(|h| {
            (
                h["address"].as_str().expect("address").to_owned(),
                h["traced_sat"].as_u64().expect("sat"),
                h["owner"]["role"].as_str().map(str::to_owned),
                h["coins"]
                    .as_array()
                    .expect("coins")
                    .iter()
                    .all(|c| !c["height"].is_null()),
            )
        })
        .collect();
    v.sort();
    v
}

fn hops(t: &Value) -> Vec<(String, u64)> {
    t["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["txid"].as_str().expect("txid").to_owned(),
                h["hop"].as_u64().expect("hop"),
            )
        })
        .collect()
}

fn id(tx: &Transaction) -> String {
    tx.compute_txid().to_string()
}

#[test]
fn a_hot_wallet_theft_is_traced_to_every_address_holding_the_coins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    let (alice, alice_address) = customer(&ex, "alice");

    // One hot coin of 1 BTC.
    let hot_descriptor = ex
        .backend()
        .handle()
        .query_wait(|e| {
            e.wallets()
                .iter()
                .find(|w| w.role == WalletRole::Hot)
                .map(|w| w.descriptor.clone())
        })
        .expect("query")
        .expect("a hot wallet");
    let (hot_script, hot_address) = kura_custody::derive(&hot_descriptor, 0, NET).expect("derive");
    let funding = devnet
        .send(&hot_address, Amount::from_sat(STOLEN))
        .expect("send");
    devnet.mine(1).expect("mine");
    let (funding_tx, _) = devnet.tx(&funding).expect("funding");
    let vout = funding_tx
        .output
        .iter()
        .position(|o| o.script_pubkey == hot_script)
        .expect("the hot output") as u32;

    // The theft, with the hot key taken outside kura.
    let hot_key = stolen_hot_key(dir.path(), 0);
    assert_eq!(p2wpkh(&hot_key), hot_script, "the thief holds the hot key");
    let k: Vec<PrivateKey> = (51..=57).map(thief_key).collect();
    let theft = pay(
        &devnet,
        &[(OutPoint::new(funding, vout), STOLEN, &hot_key)],
        &[(60_000_000, p2wpkh(&k[0])), (39_998_000, p2wpkh(&k[1]))],
    );
    devnet.mine(1).expect("mine");
    let split = pay(
        &devnet,
        &[(OutPoint::new(theft.compute_txid(), 0), 60_000_000, &k[0])],
        &[(25_000_000, p2wpkh(&k[2])), (34_998_000, p2wpkh(&k[3]))],
    );
    devnet.mine(1).expect("mine");
    let merge = pay(
        &devnet,
        &[
            (OutPoint::new(theft.compute_txid(), 1), 39_998_000, &k[1]),
            (OutPoint::new(split.compute_txid(), 0), 25_000_000, &k[2]),
        ],
        &[(64_996_000, p2wpkh(&k[4]))],
    );
    devnet.mine(1).expect("mine");
    // Part of it is deposited at the exchange, to alice's address.
    let cashout = pay(
        &devnet,
        &[(OutPoint::new(merge.compute_txid(), 0), 64_996_000, &k[4])],
        &[
            (20_000_000, alice_address.script_pubkey()),
            (44_994_000, p2wpkh(&k[5])),
        ],
    );
    devnet.mine(2).expect("mine");
    // Still in the mempool.
    let pending = pay(
        &devnet,
        &[(OutPoint::new(split.compute_txid(), 1), 34_998_000, &k[3])],
        &[(34_997_000, p2wpkh(&k[6]))],
    );
    let fees = 4 * 2_000 + 1_000;

    let out = dir.path().join("trace-full");
    let (stdout, t) = trace(dir.path(), &out, &id(&theft), &[]);
    assert_eq!(t["format"], "kura-trace/1");
    assert_eq!(
        hops(&t),
        vec![
            (id(&theft), 0),
            (id(&split), 1),
            (id(&merge), 2),
            (id(&cashout), 3),
            (id(&pending), 2),
        ]
    );
    let mut expected = vec![
        (
            alice_address.to_string(),
            20_000_000,
            Some("deposit".into()),
            true,
        ),
        (address(&p2wpkh(&k[5])), 44_994_000, None, true),
        (address(&p2wpkh(&k[6])), 34_997_000, None, false),
    ];
    expected.sort();
    assert_eq!(holdings(&t), expected);
    let held: u64 = holdings(&t).iter().map(|h| h.1).sum();
    assert_eq!(held, STOLEN - fees, "every stolen satoshi but the fees");
    let totals = &t["totals"];
    assert_eq!(totals["start_sat"], STOLEN);
    assert_eq!(totals["fees_sat"], fees);
    assert_eq!(totals["unspent_sat"], STOLEN - fees);
    assert_eq!(totals["unspent_unconfirmed_sat"], 34_997_000);
    assert_eq!(totals["balanced"], true);
    // Labels: the stolen coin was hot #?/0, alice's address is hers.
    let stolen_input = &t["hops"][0]["inputs"][0];
    assert_eq!(stolen_input["owner"]["role"], "hot");
    assert_eq!(stolen_input["owner"]["index"], 0);
    assert_eq!(stolen_input["value_sat"], STOLEN);
    let alice_holding = t["holdings"]
        .as_array()
        .expect("holdings")
        .iter()
        .find(|h| h["address"] == alice_address.to_string().as_str())
        .expect("alice's address");
    assert_eq!(alice_holding["owner"]["user"], alice.0);
    assert_eq!(t["hops"][4]["height"], Value::Null, "the mempool spend");
    assert!(
        stdout.contains("where the coins are now: 0.99991000 BTC in 3 address(es)"),
        "{stdout}"
    );
    assert!(stdout.contains("ours: deposit"), "{stdout}");

    // The pictures.
    let svg = std::fs::read_to_string(out.join("trace.svg")).expect("svg");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let count = |class: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    };
    assert_eq!(count("hop"), 5);
    assert_eq!(count("output unspent"), 3);
    assert!(svg.contains("0.20000000") && svg.contains(&id(&cashout)[..8]));
    let dot = std::fs::read_to_string(out.join("trace.dot")).expect("dot");
    let mut parser = layout::gv::DotParser::new(&dot);
    assert!(parser.process().is_ok(), "the DOT parses:\n{dot}");
    for (txid, _) in hops(&t) {
        assert!(dot.contains(&format!("\"tx_{txid}\"")), "{txid} in the DOT");
    }

    // Two hops deep: the cash-out is beyond the limit, and named.
    let out = dir.path().join("trace-2");
    let (stdout, t) = trace(dir.path(), &out, &id(&theft), &["--depth", "2"]);
    assert_eq!(
        hops(&t),
        vec![
            (id(&theft), 0),
            (id(&split), 1),
            (id(&merge), 2),
            (id(&pending), 2),
        ]
    );
    let beyond = t["beyond_depth"].as_array().expect("beyond");
    assert_eq!(beyond.len(), 1);
    assert_eq!(beyond[0]["outpoint"], format!("{}:0", id(&merge)).as_str());
    assert_eq!(beyond[0]["spent_by"], id(&cashout).as_str());
    assert_eq!(t["totals"]["beyond_depth_sat"], 64_996_000);
    assert_eq!(t["totals"]["balanced"], true);
    assert_eq!(
        holdings(&t),
        vec![(address(&p2wpkh(&k[6])), 34_997_000, None, false)]
    );
    assert!(stdout.contains("beyond the depth limit"), "{stdout}");

    // One coin: the theft's second output, merged with coins from elsewhere.
    let out = dir.path().join("trace-coin");
    let (_, t) = trace(dir.path(), &out, &format!("{}:1", id(&theft)), &[]);
    assert_eq!(
        hops(&t),
        vec![(id(&theft), 0), (id(&merge), 1), (id(&cashout), 2)]
    );
    assert_eq!(t["hops"][1]["mixed"], true);
    assert_eq!(t["totals"]["start_sat"], 39_998_000);
    assert_eq!(t["totals"]["balanced"], true);

    // Bad starts are clear errors.
    let data = dir.path().to_str().expect("utf-8");
    let bad_out = dir.path().join("bad");
    let bad_out = bad_out.to_str().expect("utf-8");
    fails(
        &["trace", "zz", "--data", data, "--out", bad_out],
        "is neither a txid",
    );
    let unknown = Txid::from_str(&"ab".repeat(32)).expect("txid");
    fails(
        &[
            "trace",
            &unknown.to_string(),
            "--data",
            data,
            "--out",
            bad_out,
        ],
        "no transaction",
    );
    fails(
        &[
            "trace",
            &format!("{unknown}:0"),
            "--data",
            data,
            "--out",
            bad_out,
        ],
        "no transaction",
    );
    fails(
        &[
            "trace",
            &format!("{}:7", id(&theft)),
            "--data",
            data,
            "--out",
            bad_out,
        ],
        "has 2 output(s): there is no output 7",
    );
    fails(&["trace", &id(&theft), "--out", bad_out], "give --data DIR");
    assert!(!Path::new(bad_out).exists(), "nothing written on an error");
    drop(devnet);
    ex.stop().expect("stop");
}
