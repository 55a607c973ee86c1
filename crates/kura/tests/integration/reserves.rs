//! Proof of reserves against the real node on the devnet: hot, deposit and 2-of-3 cold
//! coins are proven under a message with `kura reserves prove` (hot and deposit coins
//! signed by the hot signer), two cold holders sign with `kura cold sign`, `kura cold
//! finalize` finishes it (and will not broadcast it), and `kura reserves verify` finds the
//! total equal to our coins, the chain refusing the transaction, a shortfall against
//! larger liabilities, and — once a proven coin is spent — a proof that no longer holds.

use crate::node_common;
use kura::server::custody::{ChainChoice, CustodyConfig, DEFAULT_WITHDRAWAL_POLICY};
use kura::server::payout::PayoutConfig;
use kura::server::{Exchange, ServerConfig};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::consensus::encode::deserialize_hex;
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::{Address, Amount, Network, Transaction};
use kura_engine::{Command, EventKind, WalletRole, WithdrawalPolicy};
use kura_units::AssetId;
use node_common::{devnet, query, submit, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const BTC: AssetId = AssetId(0);
const NET: Network = Network::Regtest;
const HOLDERS: [u8; 3] = [51, 52, 53];
const MESSAGE: &str = "por/v1 058049db24a02966a27441e3175422fa0e2e774f19aac9e13a5677c854d99036 604d63165f2c47c24fd6f7aacb447fb27136fdf049b260c132b3d5633a5c988a 1000000";

fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        confirmations: 1,
        poll: Duration::from_millis(20),
        payout: PayoutConfig {
            fee_rate_sat_vb: 2,
            batch_interval: Duration::ZERO,
            band: None,
        },
        withdrawal_policy: WithdrawalPolicy {
            address_delay_ms: 0,
            ..DEFAULT_WITHDRAWAL_POLICY
        },
        ..CustodyConfig::default()
    };
    c
}

fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master key")
}

fn cold_descriptor() -> String {
    let secp = Secp256k1::new();
    let path = DerivationPath::from_str("m/48'/1'/0'/2'").expect("path");
    let keys: Vec<String> = HOLDERS
        .iter()
        .map(|s| {
            let m = master(*s);
            let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &path).expect("derive"));
            format!("[{}/48'/1'/0'/2']{xpub}/0/*", m.fingerprint(&secp))
        })
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

fn mine(ex: &Exchange) {
    let d = devnet(ex);
    d.mine(1).expect("mine");
    let tip = d.tip().height;
    wait_for(ex, "the custody task to reach the tip", |ex| {
        ex.custody().is_some_and(|c| {
            let v = c.view();
            v.synced && v.watcher.tip().map(|(h, _)| h) == Some(tip)
        })
    });
}

fn kura(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .env_remove("KURA_SIGNER_PASSPHRASE")
        .output()
        .expect("run kura")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = kura(args);
    assert!(
        out.status.success(),
        "kura {args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Fails; returns stdout and stderr.
fn fails(args: &[&str]) -> (String, String) {
    let out = kura(args);
    assert!(
        !out.status.success(),
        "kura {args:?} should fail\nstdout: {}",
        text(&out.stdout)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// `tools/verify/reserves_verify.py` with `$KURA_E2E_PYTHON` (default `python3`), which
/// checks signatures when python-bitcointx is there and otherwise says it did not
/// (`--no-signatures` makes that a success): exit status and stdout.
fn python(args: &[&str]) -> (i32, String) {
    let python = std::env::var("KURA_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/verify/reserves_verify.py");
    let out = Process::new(python)
        .arg(script)
        .args(args)
        .arg("--no-signatures")
        .output()
        .expect("run reserves_verify.py");
    let stdout = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn hot_deposit_and_cold_coins_are_proven_signed_offline_and_verified_against_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let ex = Arc::new(Exchange::open(config(data), |_| {}).expect("open"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let serving = Arc::clone(&ex);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    wait_for(&ex, "server.json", |_| data.join("server.json").exists());
    let d = devnet(&ex);
    // Four more mature coinbases for the faucet: one per payment below.
    d.mine(4).expect("mine");
    mine(&ex);

    // A customer's deposit, the hot float and two cold coins.
    let alice = submit(
        &ex,
        Command::RegisterUser {
            name: "alice".into(),
        },
    )
    .iter()
    .find_map(|e| match e.kind {
        EventKind::UserCreated { user } => Some(user),
        _ => None,
    })
    .expect("created");
    submit(
        &ex,
        Command::AssignDepositAddress {
            user: alice,
            asset: BTC,
        },
    );
    let cold = cold_descriptor();
    submit(
        &ex,
        Command::RegisterWallet {
            asset: BTC,
            role: WalletRole::Cold,
            descriptor: kura_custody::parse_descriptor(&cold)
                .expect("cold")
                .canonical(),
        },
    );
    let (deposit, hot) = query(&ex, move |e| {
        let (w, i) = e.deposit_address(alice, BTC).expect("assigned");
        let hot = e
            .wallets()
            .iter()
            .find(|w| w.role == WalletRole::Hot)
            .map(|w| w.descriptor.clone())
            .expect("hot wallet");
        ((e.wallets()[w as usize].descriptor.clone(), i), hot)
    });
    let pay = |descriptor: &str, index: u32, sat: u64| {
        let (_, address) = kura_custody::derive(descriptor, index, NET).expect("derive");
        d.send(&address, Amount::from_sat(sat)).expect("send");
    };
    pay(&deposit.0, deposit.1, 1_000_000);
    pay(&hot, 0, 300_000);
    pay(&cold, 0, 2_000_000);
    pay(&cold, 1, 500_000);
    mine(&ex);
    wait_for(&ex, "four coins", |ex| {
        ex.custody()
            .is_some_and(|c| c.view().watcher.coins().count() == 4)
    });
    wait_for(&ex, "the credit", |ex| {
        query(ex, move |e| {
            e.ledger()
                .balance(alice, BTC)
                .map(|b| b.available.get())
                .unwrap_or(0)
        }) == 1_000_000
    });

    // The library call `kura solvency prove` uses.
    let first = data.join("proof-lib");
    let proved = kura::reserves::prove(data, MESSAGE, &first).expect("prove");
    assert_eq!(proved.total_sat, 3_800_000);
    assert_eq!(proved.coins.len(), 4);
    assert_eq!(proved.offline(), 2, "the two cold coins");
    assert!(proved.tx.is_none() && proved.tx_path.is_none());
    assert_eq!(proved.liabilities_sat, Some(1_000_000));
    let roles: Vec<(&str, bool)> = proved
        .coins
        .iter()
        .map(|c| (c.role.as_str(), c.hot_signed))
        .collect();
    for (role, hot_signed) in &roles {
        assert_eq!(*hot_signed, *role != "cold", "{roles:?}");
    }

    // The command line, into another directory.
    let out = data.join("proof");
    let shown = ok(&[
        "reserves",
        "prove",
        "--data",
        p(data),
        "--message",
        MESSAGE,
        "--out",
        p(&out),
    ]);
    assert!(
        shown.contains("4 (2 signed by the hot signer, 2 for the cold holders)"),
        "{shown}"
    );
    assert!(shown.contains("0.03800000 BTC (3800000 sat)"), "{shown}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("reserves.json")).expect("reserves.json"),
    )
    .expect("json");
    assert_eq!(summary["format"], "kura-reserves/1");
    assert_eq!(summary["message"], MESSAGE);
    assert_eq!(summary["total_sat"], 3_800_000);
    assert_eq!(summary["transaction"], serde_json::Value::Null);
    assert!(!out.join("reserves.tx").exists());
    // Never overwritten.
    let (_, err) = fails(&[
        "reserves",
        "prove",
        "--data",
        p(data),
        "--message",
        MESSAGE,
        "--out",
        p(&out),
    ]);
    assert!(err.contains("never overwrites"), "{err}");

    // Two of the three cold holders sign offline.
    let psbt = out.join("reserves.psbt");
    let descriptors = out.join("descriptors.json");
    let mut copies: Vec<PathBuf> = Vec::new();
    for (n, seed) in HOLDERS.iter().skip(1).enumerate() {
        let key = data.join(format!("holder-{n}.key"));
        std::fs::write(&key, master(*seed).to_string()).expect("key");
        let copy = out.join(format!("reserves.signed-{n}.psbt"));
        let shown = ok(&[
            "cold",
            "sign",
            "--psbt",
            p(&psbt),
            "--key",
            p(&key),
            "--descriptors",
            p(&descriptors),
            "--network",
            "regtest",
            "--out",
            p(&copy),
        ]);
        assert!(
            shown.contains("PROOF OF RESERVES: it can never be valid on chain"),
            "{shown}"
        );
        assert!(shown.contains(&format!("message: {MESSAGE:?}")), "{shown}");
        assert!(shown.contains("total: 0.03800000 BTC"), "{shown}");
        assert!(
            shown.contains("added 2 signatures (SIGHASH_ALL)"),
            "{shown}"
        );
        assert!(!shown.contains("NOT FROM OUR WALLETS"), "{shown}");
        copies.push(copy);
    }

    // Finalized, never broadcast.
    let (_, err) = fails(&[
        "cold",
        "finalize",
        "--psbt",
        p(&copies[0]),
        "--psbt",
        p(&copies[1]),
        "--broadcast",
        "--data",
        p(data),
    ]);
    assert!(err.contains("can never be valid on chain"), "{err}");
    let one = fails(&["cold", "finalize", "--psbt", p(&copies[0])]);
    assert!(one.1.contains("not enough signatures"), "{}", one.1);
    let tx_path = out.join("reserves.tx");
    let shown = ok(&[
        "cold",
        "finalize",
        "--psbt",
        p(&copies[0]),
        "--psbt",
        p(&copies[1]),
        "--out",
        p(&tx_path),
    ]);
    assert!(
        shown.contains("total 0.03800000 BTC (3800000 sat) over 4 coin(s)"),
        "{shown}"
    );

    // Verified against the devnet: the total is our coins, the chain refuses it.
    let verified = ok(&[
        "reserves",
        "verify",
        "--tx",
        p(&tx_path),
        "--message",
        MESSAGE,
        "--data",
        p(data),
        "--liabilities",
        "1000000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(verified.trim()).expect("json");
    assert_eq!(v["total_sat"], 3_800_000);
    assert_eq!(v["coins"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["covered"], true);
    assert_eq!(v["shortfall_sat"], 0);
    assert_eq!(v["tip"]["height"], d.tip().height);
    let refusal = v["chain_refusal"].as_str().expect("refused");
    assert!(refusal.contains("missing"), "{refusal}");
    let tx: Transaction =
        deserialize_hex(std::fs::read_to_string(&tx_path).expect("tx").trim()).expect("hex");
    let reject = d.submit_tx(&tx).expect_err("the mempool refuses it");
    assert_eq!(reject.code, -25, "{}", reject.reason);

    // The standalone Python check agrees, against the devnet's RPC and from reserves.json.
    let endpoint =
        kura_chain::RpcEndpoint::read(&kura_chain::RpcEndpoint::file_in(&data.join("devnet")))
            .expect("devnet endpoint");
    let cookie = endpoint.cookie.clone();
    let rpc = [
        "--rpc-url",
        endpoint.url.as_str(),
        "--rpc-cookie",
        p(&cookie),
    ];
    let summary_path = out.join("reserves.json");
    let (code, stdout) = python(&[&[p(&tx_path), "--message", MESSAGE], &rpc[..]].concat());
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("total: 3800000 sat"), "{stdout}");
    assert!(stdout.contains("unspent at the node's tip"), "{stdout}");
    let (code, stdout) = python(&[
        p(&tx_path),
        "--message",
        MESSAGE,
        "--coins",
        p(&summary_path),
        "--liabilities",
        "1000000",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("covered (surplus 2800000 sat)"), "{stdout}");
    let (code, stdout) = python(&[
        p(&tx_path),
        "--message",
        "another",
        "--coins",
        p(&summary_path),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("wrong commitment"), "{stdout}");
    let (code, stdout) = python(&[
        p(&tx_path),
        "--message",
        MESSAGE,
        "--coins",
        p(&summary_path),
        "--liabilities",
        "5000000",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("SHORTFALL"), "{stdout}");

    // Liabilities above the reserves: a shortfall, and the check fails.
    let (stdout, err) = fails(&[
        "reserves",
        "verify",
        "--tx",
        p(&tx_path),
        "--message",
        MESSAGE,
        "--data",
        p(data),
        "--liabilities",
        "5000000",
    ]);
    assert!(
        stdout.contains("SHORTFALL of 0.01200000 BTC (1200000 sat)"),
        "{stdout}"
    );
    assert!(
        err.contains("short of the liabilities by 1200000 sat"),
        "{err}"
    );
    // Another message: not a proof for it.
    let (_, err) = fails(&[
        "reserves",
        "verify",
        "--tx",
        p(&tx_path),
        "--message",
        "por/v1 another epoch",
        "--data",
        p(data),
    ]);
    assert!(err.contains("wrong commitment"), "{err}");

    // A solvency epoch proves the same coins under its own message: the hot and deposit
    // coins signed at once, the cold ones waiting for the holders.
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "solvency",
        "prove",
        "--data",
        p(data),
        "--depth",
        "4",
        "--json",
    ]))
    .expect("report");
    let btc = report["assets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset"] == "BTC"))
        .expect("BTC")
        .clone();
    let proof = &btc["reserves_proof"];
    assert_eq!(proof["complete"], false, "{proof}");
    assert_eq!(proof["coins"], 4);
    assert_eq!(proof["offline_coins"], 2);
    assert_eq!(proof["total_sat"], 3_800_000);
    assert_eq!(proof["transaction"], serde_json::Value::Null);
    assert_eq!(proof["message"], btc["por"]["reserves_message"]);
    assert_eq!(btc["reserves"]["source"], "reconciliation");
    let epoch_message = proof["message"].as_str().expect("message").to_owned();
    let epoch_dir = data.join("solvency/epochs/1/reserves-BTC");
    let mut signed: Vec<PathBuf> = Vec::new();
    for (n, _) in HOLDERS.iter().skip(1).enumerate() {
        let copy = epoch_dir.join(format!("signed-{n}.psbt"));
        let shown = ok(&[
            "cold",
            "sign",
            "--psbt",
            p(&epoch_dir.join("reserves.psbt")),
            "--key",
            p(&data.join(format!("holder-{n}.key"))),
            "--descriptors",
            p(&epoch_dir.join("descriptors.json")),
            "--network",
            "regtest",
            "--out",
            p(&copy),
        ]);
        assert!(
            shown.contains(&format!("message: {epoch_message:?}")),
            "{shown}"
        );
        signed.push(copy);
    }
    let epoch_tx = data.join("epoch-1.tx");
    ok(&[
        "cold",
        "finalize",
        "--psbt",
        p(&signed[0]),
        "--psbt",
        p(&signed[1]),
        "--out",
        p(&epoch_tx),
    ]);
    // The earlier proof commits to another message: refused.
    let attach = |tx: &Path| {
        kura(&[
            "solvency",
            "attach-reserves",
            "--data",
            p(data),
            "--epoch",
            "1",
            "--tx",
            p(tx),
        ])
    };
    let wrong = attach(&tx_path);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("not epoch 1's proof of reserves"),
        "{}",
        text(&wrong.stderr)
    );
    let done = attach(&epoch_tx);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains("4 coins, 3800000 sat"),
        "{}",
        text(&done.stdout)
    );
    let again = attach(&epoch_tx);
    assert!(
        text(&again.stderr).contains("already finished"),
        "{}",
        text(&again.stderr)
    );
    // Served with the report from then on, and it holds against the chain.
    let (_, served) = kura::solvency::SolvencyStore::new(data)
        .report(Some(1))
        .expect("read")
        .expect("epoch 1");
    let served_proof = served["assets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset"] == "BTC"))
        .map(|x| x["reserves_proof"].clone())
        .expect("BTC");
    assert_eq!(served_proof["attached"], true);
    assert_eq!(
        served_proof["transaction"].as_str(),
        Some(std::fs::read_to_string(&epoch_tx).expect("tx").trim())
    );
    let verified = ok(&[
        "reserves",
        "verify",
        "--tx",
        p(&epoch_tx),
        "--message",
        &epoch_message,
        "--data",
        p(data),
        "--liabilities",
        btc["liabilities"]["sum"].to_string().as_str(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(verified.trim()).expect("json");
    assert_eq!(
        (v["total_sat"].as_u64(), v["covered"].as_bool()),
        (Some(3_800_000), Some(true))
    );

    // Alice withdraws: a proven coin is spent, and the proof no longer holds at the tip.
    submit(
        &ex,
        Command::RequestChainWithdrawal {
            user: alice,
            asset: BTC,
            amount: kura_units::Amount::new(200_000),
            id: "w1".into(),
            address: Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
                .expect("address")
                .assume_checked()
                .to_string(),
        },
    );
    wait_for(&ex, "the withdrawal in the mempool", |_| {
        !d.mempool_txids().is_empty()
    });
    mine(&ex);
    let (_, err) = fails(&[
        "reserves",
        "verify",
        "--tx",
        p(&tx_path),
        "--message",
        MESSAGE,
        "--data",
        p(data),
    ]);
    assert!(
        err.contains("which is not an unspent coin at block"),
        "{err}"
    );

    stop.send(()).expect("stop");
    runtime.block_on(server).expect("join").expect("served");
}
