//! Independent validation: tests/e2e/xval.py checks, with Python libraries that share
//! no code with kura (embit, python-bitcointx), the deposit addresses kura derives,
//! the withdrawal PSBTs it builds and the witnesses of what it signs.
//!
//! The interpreter is the pinned environment from `scripts/e2e-venv`
//! (`KURA_E2E_PYTHON` overrides it); without it the test fails, never skips.

use crate::common;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{OutPoint, ScriptBuf, Transaction};
use common::*;
use kura_chain::Devnet;
use kura_custody::psbt::{build_psbt, describe_output, ChangeTarget, Payment, SpendableCoin};
use kura_signer::{cold_sign, finalize, Authorization, Policy};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How many addresses of each descriptor are compared, from index 0.
const ADDRESSES: u32 = 8;
const T0: u64 = 1_700_000_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The venv python; a missing interpreter fails the test with the fix.
fn python() -> PathBuf {
    let path = std::env::var_os("KURA_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/e2e-venv/bin/python"));
    assert!(
        path.exists(),
        "the independent validation needs the pinned Python environment, and {} does not \
         exist: run scripts/e2e-venv (it creates target/e2e-venv with embit, \
         python-bitcointx and coincurve from PyPI and prints the python path; \
         KURA_E2E_PYTHON may point elsewhere)",
        path.display()
    );
    path
}

fn run_xval(input: &Path) -> Output {
    let out = Command::new(python())
        .arg(workspace().join("tests/e2e/xval.py"))
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/e2e/xval.py");
    println!(
        "--- xval.py {} ({}) ---\n{}{}",
        input.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hex(script: &ScriptBuf) -> String {
    script.to_hex_string()
}

fn canonical(descriptor: &str) -> String {
    kura_custody::parse_descriptor(descriptor)
        .expect("descriptor")
        .canonical()
}

/// The first [`ADDRESSES`] addresses and scripts kura derives for `descriptor`.
fn derived(name: &str, descriptor: &str) -> Value {
    let addresses: Vec<Value> = (0..ADDRESSES)
        .map(|index| {
            let (script, address) = kura_custody::derive(descriptor, index, NET).expect("derive");
            json!({"index": index, "address": address.to_string(), "script_pubkey": hex(&script)})
        })
        .collect();
    json!({"name": name, "descriptor": descriptor, "addresses": addresses})
}

/// `coin` as the PSBT should show it: which of `wallets` pays it, at which index.
fn coin_json(coin: &SpendableCoin, wallets: &[(&str, &str)]) -> Value {
    let name = wallets
        .iter()
        .find(|(_, d)| *d == coin.descriptor)
        .map(|(n, _)| *n)
        .expect("a named wallet");
    json!({
        "txid": coin.outpoint.txid.to_string(),
        "vout": coin.outpoint.vout,
        "value_sat": coin.value_sat,
        "script_pubkey": hex(&script(&coin.descriptor, coin.index)),
        "wallet": name,
        "index": coin.index,
    })
}

/// A signed transaction and, per input, the output it spends as the devnet has it.
fn signed_json(name: &str, devnet: &Devnet, tx: &Transaction, fee_sat: u64, rate: u64) -> Value {
    let prevouts: Vec<Value> = tx
        .input
        .iter()
        .map(|txin| {
            let OutPoint { txid, vout } = txin.previous_output;
            let (funding, _) = devnet.tx(&txid).expect("funding transaction");
            let out = &funding.output[vout as usize];
            json!({
                "txid": txid.to_string(),
                "vout": vout,
                "script_pubkey": hex(&out.script_pubkey),
                "amount_sat": out.value.to_sat(),
            })
        })
        .collect();
    json!({
        "name": name,
        "hex": serialize_hex(tx),
        "txid": tx.compute_txid().to_string(),
        "fee_sat": fee_sat,
        "fee_rate_sat_vb": rate,
        "prevouts": prevouts,
    })
}

#[test]
fn embit_and_python_bitcointx_agree_with_kura() {
    let mut h = hot_signer(Policy::default());
    let hot = h.hot.clone();
    let deposit = canonical(&deposit_descriptor());
    let cold = canonical(&cold_descriptor());
    assert!(hot.contains('#') && deposit.contains('#') && cold.contains('#'));
    let wallets = [
        ("hot", hot.as_str()),
        ("deposit", deposit.as_str()),
        ("cold", cold.as_str()),
    ];
    let descriptors: Vec<Value> = wallets.iter().map(|(n, d)| derived(n, d)).collect();

    // (b) An unsigned withdrawal spending one coin of each wallet, change to hot 500.
    let rate = 3;
    let coins = vec![
        fake_coin(1, 40_000, &hot, 2),
        fake_coin(2, 50_000, &deposit, 4),
        fake_coin(3, 80_000, &cold, 1),
    ];
    let payments = [foreign_payment(0, 120_000), foreign_payment(1, 30_000)];
    let change = ChangeTarget {
        descriptor: hot.clone(),
        index: 500,
    };
    let built = build_psbt(&coins, &payments, &change, rate, NET).expect("build");
    assert_eq!(built.inputs.len(), 3, "needs every coin");
    assert!(built.change_sat > 0, "has change");
    let mut outputs: Vec<Value> = payments
        .iter()
        .map(|p| json!({"script_pubkey": hex(&p.script_pubkey), "amount_sat": p.amount_sat}))
        .collect();
    outputs.push(json!({
        "script_pubkey": hex(&script(&hot, 500)),
        "amount_sat": built.change_sat,
        "wallet": "hot",
        "index": 500,
    }));
    let inputs: Vec<Value> = built
        .inputs
        .iter()
        .map(|o| {
            let coin = coins.iter().find(|c| c.outpoint == *o).expect("a coin");
            coin_json(coin, &wallets)
        })
        .collect();
    let psbt = json!({
        "base64": built.psbt.to_string(),
        "txid": built.txid.to_string(),
        "fee_sat": built.fee_sat,
        "fee_rate_sat_vb": rate,
        "inputs": inputs,
        "outputs": outputs,
    });

    // (c) A withdrawal signed by the hot signer and accepted by a devnet.
    let devnet = devnet(h.dir.path());
    let funded = vec![
        fund(&devnet, &hot, 0, 70_000),
        fund(&devnet, &deposit, 3, 60_000),
    ];
    let paid = [foreign_payment(2, 100_000), foreign_payment(3, 5_000)];
    let withdrawal = build_psbt(&funded, &paid, &change, 2, NET).expect("build");
    assert_eq!(withdrawal.inputs.len(), 2);
    let approved = Authorization {
        batch: 1,
        inputs: withdrawal.inputs.clone(),
        payments: paid.to_vec(),
    };
    let signed = h
        .signer
        .sign(&withdrawal.psbt, &approved, T0)
        .expect("sign");
    assert_eq!(devnet.submit_tx(&signed.tx), Ok(signed.txid));

    // And a 2-of-3 refill of the hot wallet from cold, signed by cold keys 1 and 3.
    let cold_coins = vec![fund(&devnet, &cold, 0, 120_000)];
    let refill_pay = [Payment {
        script_pubkey: script(&hot, 40),
        amount_sat: 100_000,
    }];
    let cold_change = ChangeTarget {
        descriptor: cold.clone(),
        index: 90,
    };
    let mut refill = build_psbt(&cold_coins, &refill_pay, &cold_change, 2, NET).expect("build");
    let to_hot = ChangeTarget {
        descriptor: hot.clone(),
        index: 40,
    };
    describe_output(&mut refill.psbt, 0, &to_hot, NET).expect("describe");
    let ours: Vec<String> = wallets.iter().map(|(_, d)| d.to_string()).collect();
    let mut first = refill.psbt.clone();
    let mut third = refill.psbt.clone();
    assert_eq!(
        cold_sign(&mut first, &master(COLD_SEEDS[0]), &ours, NET),
        Ok(1)
    );
    assert_eq!(
        cold_sign(&mut third, &master(COLD_SEEDS[2]), &ours, NET),
        Ok(1)
    );
    let refill_tx = finalize(&[first, third]).expect("finalize");
    assert_eq!(devnet.submit_tx(&refill_tx), Ok(refill.txid));

    let signed_txs = vec![
        signed_json("hot withdrawal", &devnet, &signed.tx, signed.fee_sat, 2),
        signed_json("cold 2-of-3 refill", &devnet, &refill_tx, refill.fee_sat, 2),
    ];
    let input_counts = [signed.tx.input.len(), refill_tx.input.len()];
    let doc = json!({
        "network": "regtest",
        "descriptors": descriptors,
        "psbt": psbt,
        "signed": signed_txs,
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("xval.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let out = run_xval(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "xval.py failed: {}", out.status);
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL")), "{stdout}");
    // Every check named below ran (an early exit 0 would miss them).
    for (name, _) in &wallets {
        let line = format!("ok embit derives {ADDRESSES} {name} addresses");
        assert!(stdout.contains(&line), "missing {line:?}");
    }
    for i in 0..built.inputs.len() {
        let line = format!("ok embit psbt input {i} ");
        assert!(stdout.contains(&line), "missing {line:?}");
    }
    for (t, n) in input_counts.iter().enumerate() {
        for i in 0..*n {
            let line = format!("ok bitcointx tx {t} input {i} witness verifies");
            assert!(stdout.contains(&line), "missing {line:?}");
        }
        let line = format!("ok bitcointx tx {t} rejects a changed amount");
        assert!(stdout.contains(&line), "missing {line:?}");
    }
    assert!(
        stdout.contains("xval: ") && stdout.contains(" passed, 0 failed"),
        "{stdout}"
    );

    // The script fails when kura's side disagrees: one address swapped for the next.
    let mut wrong = doc.clone();
    let addrs = &mut wrong["descriptors"][1]["addresses"];
    let next = addrs[2]["address"].clone();
    addrs[1]["address"] = next;
    let wrong_path = dir.path().join("wrong-address.json");
    std::fs::write(&wrong_path, serde_json::to_vec(&wrong).expect("json")).expect("write");
    let out = run_xval(&wrong_path);
    assert!(!out.status.success(), "a wrong address passed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL embit derives"), "{stdout}");

    // And when a witness does not match: the signed withdrawal with a changed output.
    let mut tampered = signed.tx.clone();
    tampered.output[0].value -= bitcoin::Amount::from_sat(1);
    let mut wrong = doc;
    wrong["signed"] = json!([signed_json(
        "tampered withdrawal",
        &devnet,
        &tampered,
        signed.fee_sat + 1,
        2
    )]);
    let wrong_path = dir.path().join("tampered-tx.json");
    std::fs::write(&wrong_path, serde_json::to_vec(&wrong).expect("json")).expect("write");
    let out = run_xval(&wrong_path);
    assert!(!out.status.success(), "a tampered transaction passed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL bitcointx tx 0 input 0 witness verifies"),
        "{stdout}"
    );
}
