//! Withdrawal PSBTs: selection, fees against really signed sizes, replacements.

use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Network, OutPoint, Sequence, Txid};
use kura_custody::psbt::{
    build_psbt, bump_psbt, cancel_psbt, describe_output, rebuild_psbt, BuildError, ChangeTarget,
    Payment, SpendableCoin, DUST_SAT,
};
use miniscript::psbt::PsbtExt;
use std::str::FromStr;

const NET: Network = Network::Regtest;

fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master")
}

/// `[fp/path]tpub` for `seed` at `path`.
fn key_expr(seed: u8, path: &str) -> String {
    let secp = Secp256k1::new();
    let m = master(seed);
    let path = DerivationPath::from_str(path).expect("path");
    let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &path).expect("derive"));
    let origin = path.to_string();
    let origin = origin.trim_start_matches('m').trim_start_matches('/');
    format!("[{}/{origin}]{xpub}", m.fingerprint(&secp))
}

fn wpkh(seed: u8) -> String {
    format!("wpkh({}/0/*)", key_expr(seed, "m/84'/1'/1'"))
}

fn multisig() -> String {
    let keys: Vec<String> = [7u8, 8, 9]
        .iter()
        .map(|s| format!("{}/0/*", key_expr(*s, "m/48'/1'/0'/2'")))
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

fn outpoint(n: u8, vout: u32) -> OutPoint {
    OutPoint::new(Txid::from_byte_array([n; 32]), vout)
}

fn coin(n: u8, value_sat: u64, descriptor: &str, index: u32) -> SpendableCoin {
    SpendableCoin {
        outpoint: outpoint(n, 0),
        value_sat,
        descriptor: descriptor.to_string(),
        index,
    }
}

fn pay(amount_sat: u64) -> Payment {
    // A foreign P2WPKH.
    let (script, _) = kura_custody::derive(&wpkh(99), 3, NET).expect("derive");
    Payment {
        script_pubkey: script,
        amount_sat,
    }
}

fn change(descriptor: &str) -> ChangeTarget {
    ChangeTarget {
        descriptor: descriptor.to_string(),
        index: 1000,
    }
}

/// Sign with the given master keys, finalize, and return the real vsize.
fn signed_vsize(psbt: &bitcoin::Psbt, keys: &[u8]) -> u64 {
    let secp = Secp256k1::new();
    let mut psbt = psbt.clone();
    for k in keys {
        // Errors for inputs a key cannot sign are expected; each key signs what it can.
        let _ = psbt.sign(&master(*k), &secp);
    }
    psbt.finalize_mut(&secp).expect("finalize");
    let tx = psbt.extract(&secp).expect("extract");
    tx.vsize() as u64
}

#[test]
fn same_inputs_give_the_same_bytes_whatever_the_coin_order() {
    let hot = wpkh(1);
    let coins = vec![
        coin(1, 50_000, &hot, 0),
        coin(2, 80_000, &hot, 1),
        coin(3, 80_000, &hot, 2),
        coin(4, 20_000, &hot, 3),
    ];
    let mut reversed = coins.clone();
    reversed.reverse();
    let a = build_psbt(&coins, &[pay(100_000)], &change(&hot), 3, NET).expect("a");
    let b = build_psbt(&reversed, &[pay(100_000)], &change(&hot), 3, NET).expect("b");
    assert_eq!(a.psbt.serialize(), b.psbt.serialize());
    assert_eq!(a.txid, b.txid);
    // Largest first, ties by outpoint: the two 80k coins, outpoint 2 before 3.
    assert_eq!(a.inputs, vec![outpoint(2, 0), outpoint(3, 0)]);
    assert_eq!(a.txid, a.psbt.unsigned_tx.compute_txid());
}

#[test]
fn transaction_shape_and_psbt_fields() {
    let hot = wpkh(1);
    let coins = vec![coin(1, 300_000, &hot, 4), coin(2, 200_000, &hot, 5)];
    let built =
        build_psbt(&coins, &[pay(350_000), pay(10_000)], &change(&hot), 2, NET).expect("build");
    let tx = &built.psbt.unsigned_tx;
    assert_eq!(tx.version.0, 2);
    assert_eq!(tx.lock_time.to_consensus_u32(), 0);
    assert!(tx.input.iter().all(|i| i.sequence == Sequence(0xFFFF_FFFD)));
    // Payments in order, then change.
    assert_eq!(tx.output.len(), 3);
    assert_eq!(tx.output[0].value.to_sat(), 350_000);
    assert_eq!(tx.output[1].value.to_sat(), 10_000);
    let (change_script, _) = kura_custody::derive(&hot, 1000, NET).expect("derive");
    assert_eq!(tx.output[2].script_pubkey, change_script);
    assert_eq!(tx.output[2].value.to_sat(), built.change_sat);
    assert_eq!(
        built.fee_sat + built.change_sat + 360_000,
        500_000,
        "everything accounted for"
    );
    for input in &built.psbt.inputs {
        assert!(input.witness_utxo.is_some());
        assert_eq!(input.bip32_derivation.len(), 1);
    }
    assert_eq!(built.psbt.outputs[2].bip32_derivation.len(), 1);
    assert!(built.psbt.outputs[0].bip32_derivation.is_empty());
}

#[test]
fn fee_estimate_bounds_the_signed_size() {
    let hot = wpkh(1);
    let cold = multisig();
    for n in 1..=4u8 {
        let coins: Vec<SpendableCoin> = (0..n)
            .map(|i| coin(i + 1, 10_000 + u64::from(i), &hot, u32::from(i)))
            .collect();
        let built =
            build_psbt(&coins, &[pay(n as u64 * 8_000)], &change(&hot), 5, NET).expect("build");
        assert!(built.change_sat > 0);
        assert_eq!(built.fee_sat % 5, 0);
        let estimate = built.fee_sat / 5;
        let real = signed_vsize(&built.psbt, &[1]);
        assert!(real <= estimate, "real {real} > estimate {estimate}");
        assert!(
            estimate - real <= u64::from(n),
            "estimate {estimate} far above real {real}"
        );
    }
    // A 2-of-3 multisig input, signed by two keys.
    let coins = vec![coin(9, 100_000, &cold, 7)];
    let built = build_psbt(&coins, &[pay(50_000)], &change(&cold), 1, NET).expect("build");
    let estimate = built.fee_sat;
    let real = signed_vsize(&built.psbt, &[7, 9]);
    assert!(
        real <= estimate && estimate - real <= 2,
        "{real} vs {estimate}"
    );
}

#[test]
fn dust_change_goes_to_the_fee() {
    let hot = wpkh(1);
    let coins = vec![coin(1, 100_000, &hot, 0)];
    let with_change = build_psbt(&coins, &[pay(90_000)], &change(&hot), 1, NET).expect("build");
    assert_eq!(with_change.psbt.unsigned_tx.output.len(), 2);
    // Pay almost everything: the remainder is below dust.
    let fee_no_change = with_change.fee_sat - 31;
    let amount = 100_000 - fee_no_change - DUST_SAT + 100;
    let built = build_psbt(&coins, &[pay(amount)], &change(&hot), 1, NET).expect("build");
    assert_eq!(built.psbt.unsigned_tx.output.len(), 1);
    assert_eq!(built.change_sat, 0);
    assert_eq!(built.fee_sat, 100_000 - amount);
    assert!(built.fee_sat < fee_no_change + DUST_SAT + 31);
}

#[test]
fn refusals_say_why() {
    let hot = wpkh(1);
    let coins = vec![coin(1, 10_000, &hot, 0), coin(2, 5_000, &hot, 1)];
    match build_psbt(&coins, &[pay(20_000)], &change(&hot), 2, NET) {
        Err(BuildError::InsufficientFunds {
            needed_sat,
            available_sat,
        }) => {
            assert_eq!(available_sat, 15_000);
            assert!(needed_sat > 20_000);
            let text = BuildError::InsufficientFunds {
                needed_sat,
                available_sat,
            }
            .to_string();
            assert!(text.contains(&needed_sat.to_string()) && text.contains("15000"));
        }
        other => panic!("expected insufficient funds, got {other:?}"),
    }
    assert_eq!(
        build_psbt(&coins, &[], &change(&hot), 2, NET),
        Err(BuildError::NoPayments)
    );
    assert!(matches!(
        build_psbt(&coins, &[pay(5_000), pay(100)], &change(&hot), 2, NET),
        Err(BuildError::DustPayment { index: 1, .. })
    ));
    assert_eq!(
        build_psbt(&coins, &[pay(5_000)], &change(&hot), 0, NET),
        Err(BuildError::ZeroFeeRate)
    );
    let legacy = hot.replace("wpkh(", "pkh(");
    assert!(matches!(
        build_psbt(&coins, &[pay(5_000)], &change(&legacy), 2, NET),
        Err(BuildError::Descriptor { .. })
    ));
    // Test-network keys on mainnet.
    assert!(matches!(
        build_psbt(&coins, &[pay(5_000)], &change(&hot), 2, Network::Bitcoin),
        Err(BuildError::Descriptor { .. })
    ));
    let twice = vec![coins[0].clone(), coins[0].clone()];
    assert_eq!(
        build_psbt(&twice, &[pay(5_000)], &change(&hot), 2, NET),
        Err(BuildError::DuplicateCoin(outpoint(1, 0)))
    );
}

#[test]
fn bump_keeps_inputs_and_payments_and_takes_from_change() {
    let hot = wpkh(1);
    let coins = vec![
        coin(1, 60_000, &hot, 0),
        coin(2, 50_000, &hot, 1),
        coin(3, 40_000, &hot, 2),
    ];
    let payments = [pay(70_000), pay(20_000)];
    let original = build_psbt(&coins, &payments, &change(&hot), 2, NET).expect("build");
    let bumped = bump_psbt(&original.psbt, &coins, &change(&hot), 10, NET).expect("bump");
    assert_eq!(bumped.inputs, original.inputs);
    let (old, new) = (&original.psbt.unsigned_tx, &bumped.psbt.unsigned_tx);
    assert_eq!(old.input, new.input);
    assert_eq!(new.output[..2], old.output[..2]);
    assert!(bumped.fee_sat > original.fee_sat);
    assert_eq!(
        original.change_sat - bumped.change_sat,
        bumped.fee_sat - original.fee_sat
    );
    assert_eq!(bumped.fee_sat, 10 * (original.fee_sat / 2));
    // The bumped one, really signed, still pays at least the new rate.
    assert!(bumped.fee_sat >= 10 * signed_vsize(&bumped.psbt, &[1]));
    // A bump of the same rate still pays more than the original (replacement rules).
    let same = bump_psbt(&original.psbt, &coins, &change(&hot), 2, NET).expect("bump");
    assert!(same.fee_sat > original.fee_sat);
    // The change cannot pay for a rate this high, and no input is added.
    assert!(matches!(
        bump_psbt(&original.psbt, &coins, &change(&hot), 1_000, NET),
        Err(BuildError::ChangeTooSmall { .. })
    ));
    // The coins must include every input.
    assert_eq!(
        bump_psbt(&original.psbt, &coins[1..], &change(&hot), 10, NET),
        Err(BuildError::UnknownInput(outpoint(1, 0)))
    );
    let elsewhere = ChangeTarget {
        descriptor: hot.clone(),
        index: 5,
    };
    assert_eq!(
        bump_psbt(&original.psbt, &coins, &elsewhere, 10, NET),
        Err(BuildError::NoChange)
    );
}

#[test]
fn cancel_spends_the_same_inputs_back_to_us() {
    let hot = wpkh(1);
    let coins = vec![coin(1, 60_000, &hot, 0), coin(2, 50_000, &hot, 1)];
    let original = build_psbt(&coins, &[pay(90_000)], &change(&hot), 2, NET).expect("build");
    let back = ChangeTarget {
        descriptor: hot.clone(),
        index: 2000,
    };
    let cancel = cancel_psbt(&original.psbt, &coins, &back, 4, NET).expect("cancel");
    assert_eq!(cancel.inputs, original.inputs);
    let out = &cancel.psbt.unsigned_tx.output;
    assert_eq!(out.len(), 1);
    let (script, _) = kura_custody::derive(&hot, 2000, NET).expect("derive");
    assert_eq!(out[0].script_pubkey, script);
    assert_eq!(cancel.change_sat + cancel.fee_sat, 110_000);
    assert!(cancel.fee_sat > original.fee_sat);
    assert_eq!(cancel.psbt.outputs[0].bip32_derivation.len(), 1);
}

#[test]
fn describe_output_marks_a_payment_to_ourselves() {
    let hot = wpkh(1);
    let cold = multisig();
    let (hot_script, _) = kura_custody::derive(&hot, 12, NET).expect("derive");
    let refill = Payment {
        script_pubkey: hot_script,
        amount_sat: 40_000,
    };
    let coins = vec![coin(1, 100_000, &cold, 0)];
    let mut built = build_psbt(&coins, &[refill], &change(&cold), 1, NET).expect("build");
    assert!(built.psbt.outputs[0].bip32_derivation.is_empty());
    let target = ChangeTarget {
        descriptor: hot.clone(),
        index: 12,
    };
    describe_output(&mut built.psbt, 0, &target, NET).expect("describe");
    assert_eq!(built.psbt.outputs[0].bip32_derivation.len(), 1);
    let wrong = ChangeTarget {
        descriptor: hot,
        index: 13,
    };
    assert!(matches!(
        describe_output(&mut built.psbt, 0, &wrong, NET),
        Err(BuildError::Psbt(_))
    ));
}

/// What a node rebuilds from the books after stopping between journaling a batch and
/// keeping its signed transaction: the very same PSBT (same txid, same fields), for an
/// original, a bump and a batch without change; anything that does not add up is
/// refused, never adjusted.
#[test]
fn a_recorded_batch_is_rebuilt_exactly() {
    let hot = wpkh(1);
    let coins = vec![
        coin(1, 60_000, &hot, 0),
        coin(2, 50_000, &hot, 1),
        coin(3, 40_000, &hot, 2),
    ];
    let payments = [pay(70_000), pay(20_000)];
    let original = build_psbt(&coins, &payments, &change(&hot), 2, NET).expect("build");
    let bumped = bump_psbt(&original.psbt, &coins, &change(&hot), 10, NET).expect("bump");
    // The inputs in their recorded order, as the books keep them.
    let recorded = |built: &kura_custody::psbt::BuiltPsbt| -> Vec<SpendableCoin> {
        built
            .inputs
            .iter()
            .map(|o| {
                coins
                    .iter()
                    .find(|c| c.outpoint == *o)
                    .expect("ours")
                    .clone()
            })
            .collect()
    };
    for built in [&original, &bumped] {
        let again = rebuild_psbt(
            &recorded(built),
            &payments,
            Some(&change(&hot)),
            built.fee_sat,
            NET,
        )
        .expect("rebuild");
        assert_eq!(again.txid, built.txid);
        assert_eq!(again.psbt, built.psbt);
        assert_eq!(
            (again.fee_sat, again.change_sat),
            (built.fee_sat, built.change_sat)
        );
    }
    // Without change: the fee is whatever the inputs leave.
    let single = vec![coin(1, 100_000, &hot, 0)];
    let fee_no_change = build_psbt(&single, &[pay(90_000)], &change(&hot), 1, NET)
        .expect("build")
        .fee_sat
        - 31;
    let amount = 100_000 - fee_no_change - DUST_SAT + 100;
    let no_change = build_psbt(&single, &[pay(amount)], &change(&hot), 1, NET).expect("build");
    assert_eq!(no_change.change_sat, 0);
    let again =
        rebuild_psbt(&single, &[pay(amount)], None, no_change.fee_sat, NET).expect("rebuild");
    assert_eq!(again.txid, no_change.txid);
    // A different fee, a missing change or a fee larger than the coins: refused.
    let inputs = recorded(&original);
    let wrong_fee = rebuild_psbt(
        &inputs,
        &payments,
        Some(&change(&hot)),
        original.fee_sat + 1,
        NET,
    )
    .expect("a valid transaction, but another one");
    assert_ne!(wrong_fee.txid, original.txid);
    assert!(matches!(
        rebuild_psbt(&inputs, &payments, None, original.fee_sat, NET),
        Err(BuildError::Psbt(_))
    ));
    assert!(matches!(
        rebuild_psbt(&inputs, &payments, Some(&change(&hot)), 1_000_000, NET),
        Err(BuildError::InsufficientFunds { .. })
    ));
    let twice = [inputs[0].clone(), inputs[0].clone()];
    assert!(matches!(
        rebuild_psbt(&twice, &payments, Some(&change(&hot)), 10, NET),
        Err(BuildError::DuplicateCoin(_))
    ));
}
