//! The hot signer: what it signs is valid on a devnet, and what it refuses.

use crate::common;

use bitcoin::Psbt;
use common::*;
use kura_custody::psbt::{
    build_psbt, bump_psbt, cancel_psbt, BuiltPsbt, ChangeTarget, Payment, SpendableCoin,
};
use kura_signer::velocity::HOUR_MS;
use kura_signer::{Authorization, Policy, Refusal, Signer, SignerError};

const T0: u64 = 1_700_000_000_000;

fn auth(batch: u64, built: &BuiltPsbt, payments: &[Payment]) -> Authorization {
    Authorization {
        batch,
        inputs: built.inputs.clone(),
        payments: payments.to_vec(),
    }
}

fn change(hot: &str, index: u32) -> ChangeTarget {
    ChangeTarget {
        descriptor: hot.to_string(),
        index,
    }
}

fn build(coins: &[SpendableCoin], payments: &[Payment], hot: &str, rate: u64) -> BuiltPsbt {
    build_psbt(coins, payments, &change(hot, 500), rate, NET).expect("build")
}

#[test]
fn signed_withdrawal_bump_and_confirmation_on_the_devnet() {
    let mut h = hot_signer(Policy::default());
    let devnet = devnet(h.dir.path());
    let coins = vec![
        fund(&devnet, &h.hot, 0, 70_000),
        fund(&devnet, &deposit_descriptor(), 3, 60_000),
    ];
    let payments = [foreign_payment(0, 100_000), foreign_payment(1, 5_000)];
    let built = build(&coins, &payments, &h.hot, 2);
    assert_eq!(built.inputs.len(), 2, "needs the hot and the deposit coin");
    let a = auth(1, &built, &payments);

    let signed = h.signer.sign(&built.psbt, &a, T0).expect("sign");
    assert_eq!(signed.txid, built.txid);
    assert_eq!(signed.fee_sat, built.fee_sat);
    assert_eq!(devnet.submit_tx(&signed.tx), Ok(signed.txid));
    assert_eq!(h.signer.outflow(T0), (105_000, 105_000));

    // A fee bump of the same batch replaces it and is not counted again.
    let bumped = bump_psbt(&built.psbt, &coins, &change(&h.hot, 500), 6, NET).expect("bump");
    let signed_bump = h.signer.sign(&bumped.psbt, &a, T0 + 1).expect("sign bump");
    assert_eq!(devnet.submit_tx(&signed_bump.tx), Ok(signed_bump.txid));
    assert_eq!(h.signer.outflow(T0 + 1), (105_000, 105_000));
    assert!(!devnet.mempool_txids().contains(&signed.txid), "replaced");

    devnet.mine(1).expect("mine");
    assert!(confirmed(&devnet, &signed_bump.txid));
    let paid = devnet.utxos_for(&payments[0].script_pubkey);
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].1.value.to_sat(), 100_000);
    let change_utxos = devnet.utxos_for(&script(&h.hot, 500));
    assert_eq!(change_utxos[0].1.value.to_sat(), bumped.change_sat);
}

#[test]
fn cancellation_is_signed_without_outflow_and_replaces() {
    let mut h = hot_signer(Policy::default());
    let devnet = devnet(h.dir.path());
    let coins = vec![fund(&devnet, &h.hot, 0, 90_000)];
    let payments = [foreign_payment(0, 50_000)];
    let built = build(&coins, &payments, &h.hot, 2);
    let signed = h
        .signer
        .sign(&built.psbt, &auth(7, &built, &payments), T0)
        .expect("sign");
    devnet.submit_tx(&signed.tx).expect("submit");
    let cancel = cancel_psbt(&built.psbt, &coins, &change(&h.hot, 501), 5, NET).expect("cancel");
    let cancel_auth = Authorization {
        batch: 7,
        inputs: cancel.inputs.clone(),
        payments: vec![],
    };
    let signed_cancel = h
        .signer
        .sign(&cancel.psbt, &cancel_auth, T0 + 5)
        .expect("sign");
    devnet.submit_tx(&signed_cancel.tx).expect("replacement");
    devnet.mine(1).expect("mine");
    assert!(confirmed(&devnet, &signed_cancel.txid));
    assert!(devnet.utxos_for(&payments[0].script_pubkey).is_empty());
    assert_eq!(h.signer.outflow(T0 + 5).0, 50_000);
}

#[test]
fn refuses_an_output_nobody_approved() {
    let mut h = hot_signer(Policy::default());
    let coins = vec![fake_coin(1, 200_000, &h.hot, 0)];
    let approved = [foreign_payment(0, 50_000)];
    let extra = [foreign_payment(0, 50_000), foreign_payment(9, 30_000)];
    let built = build(&coins, &extra, &h.hot, 2);
    let refusal = h
        .signer
        .sign(&built.psbt, &auth(1, &built, &approved), T0)
        .expect_err("extra output");
    assert!(
        matches!(
            refusal,
            Refusal::UnapprovedOutput {
                vout: 1,
                amount_sat: 30_000,
                ..
            }
        ),
        "{refusal}"
    );
    assert!(refusal.to_string().contains("bcrt1"), "{refusal}");

    // Change redirected to a foreign script, still claiming our key origin.
    let honest = build(&coins, &approved, &h.hot, 2);
    let mut psbt: Psbt = honest.psbt.clone();
    let last = psbt.unsigned_tx.output.len() - 1;
    assert!(!psbt.outputs[last].bip32_derivation.is_empty());
    psbt.unsigned_tx.output[last].script_pubkey = script(&foreign_descriptor(), 500);
    let refusal = h
        .signer
        .sign(&psbt, &auth(1, &honest, &approved), T0)
        .expect_err("redirected change");
    assert!(
        matches!(refusal, Refusal::UnapprovedOutput { .. }),
        "{refusal}"
    );
    assert!(h.signer.outflow(T0).0 == 0, "nothing recorded");
}

#[test]
fn refuses_a_changed_amount() {
    let mut h = hot_signer(Policy::default());
    let coins = vec![fake_coin(1, 200_000, &h.hot, 0)];
    let approved = [foreign_payment(0, 50_000)];
    let larger = [foreign_payment(0, 60_000)];
    let built = build(&coins, &larger, &h.hot, 2);
    let refusal = h
        .signer
        .sign(&built.psbt, &auth(1, &built, &approved), T0)
        .expect_err("changed amount");
    assert!(
        matches!(
            refusal,
            Refusal::PaymentMissing {
                amount_sat: 50_000,
                ..
            }
        ),
        "{refusal}"
    );
}

#[test]
fn refuses_inputs_that_are_not_ours_or_not_approved() {
    let mut h = hot_signer(Policy::default());
    let ours = fake_coin(1, 100_000, &h.hot, 0);
    let theirs = fake_coin(2, 100_000, &foreign_descriptor(), 0);
    let payments = [foreign_payment(0, 150_000)];
    let built = build(&[ours.clone(), theirs.clone()], &payments, &h.hot, 2);
    let refusal = h
        .signer
        .sign(&built.psbt, &auth(1, &built, &payments), T0)
        .expect_err("foreign input");
    assert_eq!(refusal, Refusal::InputNotOurs(theirs.outpoint));

    // The foreign input claiming our key origin is still not ours.
    let mut psbt = built.psbt.clone();
    let our_i = built
        .inputs
        .iter()
        .position(|o| *o == ours.outpoint)
        .expect("ours");
    let their_i = 1 - our_i;
    psbt.inputs[their_i].bip32_derivation = psbt.inputs[our_i].bip32_derivation.clone();
    let refusal = h
        .signer
        .sign(&psbt, &auth(1, &built, &payments), T0)
        .expect_err("forged origin");
    assert_eq!(refusal, Refusal::InputNotOurs(theirs.outpoint));

    // Cold coins are ours, but the hot signer cannot spend them.
    let cold = fake_coin(3, 200_000, &cold_descriptor(), 0);
    let built = build(std::slice::from_ref(&cold), &payments, &h.hot, 2);
    assert_eq!(
        h.signer.sign(&built.psbt, &auth(1, &built, &payments), T0),
        Err(Refusal::InputNotOurs(cold.outpoint))
    );

    // An input the journal did not approve.
    let a = fake_coin(4, 100_000, &h.hot, 1);
    let b = fake_coin(5, 100_000, &h.hot, 2);
    let built = build(&[a.clone(), b.clone()], &payments, &h.hot, 2);
    let mut partial = auth(1, &built, &payments);
    partial.inputs.retain(|o| *o == a.outpoint);
    assert_eq!(
        h.signer.sign(&built.psbt, &partial, T0),
        Err(Refusal::InputsMismatch {
            unexpected: vec![b.outpoint],
            missing: vec![],
        })
    );
}

#[test]
fn refuses_fees_above_the_limits() {
    let policy = Policy {
        max_fee_sat: 5_000,
        max_fee_rate_sat_vb: 20,
        ..Policy::default()
    };
    let mut h = hot_signer(policy);
    let coins = vec![fake_coin(1, 200_000, &h.hot, 0)];
    let payments = [foreign_payment(0, 50_000)];
    let costly = build(&coins, &payments, &h.hot, 100);
    assert!(costly.fee_sat > 5_000);
    assert_eq!(
        h.signer
            .sign(&costly.psbt, &auth(1, &costly, &payments), T0),
        Err(Refusal::FeeTooHigh {
            fee_sat: costly.fee_sat,
            max_sat: 5_000
        })
    );
    let steep = build(&coins, &payments, &h.hot, 30);
    assert!(steep.fee_sat <= 5_000);
    let refusal = h
        .signer
        .sign(&steep.psbt, &auth(1, &steep, &payments), T0)
        .expect_err("rate");
    assert!(
        matches!(refusal, Refusal::FeeRateTooHigh { max_sat_vb: 20, .. }),
        "{refusal}"
    );
    let fine = build(&coins, &payments, &h.hot, 10);
    h.signer
        .sign(&fine.psbt, &auth(1, &fine, &payments), T0)
        .expect("within limits");
}

#[test]
fn velocity_caps_count_each_batch_once() {
    let policy = Policy {
        hourly_cap_sat: 150_000,
        daily_cap_sat: 250_000,
        ..Policy::default()
    };
    let mut h = hot_signer(policy);
    let c1 = fake_coin(1, 500_000, &h.hot, 0);
    let c2 = fake_coin(2, 500_000, &h.hot, 1);
    let p1 = [foreign_payment(0, 100_000)];
    let b1 = build(std::slice::from_ref(&c1), &p1, &h.hot, 2);
    h.signer
        .sign(&b1.psbt, &auth(1, &b1, &p1), T0)
        .expect("first");

    // A second batch in the same hour would pass the hourly cap.
    let p2 = [foreign_payment(1, 100_000)];
    let b2 = build(std::slice::from_ref(&c2), &p2, &h.hot, 2);
    let refusal = h
        .signer
        .sign(&b2.psbt, &auth(2, &b2, &p2), T0 + 10)
        .expect_err("hourly cap");
    assert_eq!(
        refusal,
        Refusal::VelocityCap {
            window: "an hour",
            outflow_sat: 200_000,
            cap_sat: 150_000
        }
    );

    // A bump of batch 1 is not counted again.
    let bumped = bump_psbt(
        &b1.psbt,
        std::slice::from_ref(&c1),
        &change(&h.hot, 500),
        8,
        NET,
    )
    .expect("bump");
    h.signer
        .sign(&bumped.psbt, &auth(1, &bumped, &p1), T0 + 20)
        .expect("bump within caps");
    assert_eq!(h.signer.outflow(T0 + 20), (100_000, 100_000));

    // An hour later the hourly window has room; the daily one fills up next.
    let later = T0 + HOUR_MS + 1;
    h.signer
        .sign(&b2.psbt, &auth(2, &b2, &p2), later)
        .expect("next hour");
    let c3 = fake_coin(3, 500_000, &h.hot, 2);
    let p3 = [foreign_payment(2, 100_000)];
    let b3 = build(std::slice::from_ref(&c3), &p3, &h.hot, 2);
    let refusal = h
        .signer
        .sign(&b3.psbt, &auth(3, &b3, &p3), later + 2 * HOUR_MS)
        .expect_err("daily cap");
    assert!(
        matches!(
            refusal,
            Refusal::VelocityCap {
                window: "24 hours",
                outflow_sat: 300_000,
                ..
            }
        ),
        "{refusal}"
    );

    // Payments to our own wallets (a sweep to cold) are not outflow.
    let to_cold = [Payment {
        script_pubkey: script(&cold_descriptor(), 4),
        amount_sat: 300_000,
    }];
    let mut sweep = build(std::slice::from_ref(&c3), &to_cold, &h.hot, 2);
    let cold_target = change(&cold_descriptor(), 4);
    kura_custody::psbt::describe_output(&mut sweep.psbt, 0, &cold_target, NET).expect("describe");
    h.signer
        .sign(&sweep.psbt, &auth(4, &sweep, &to_cold), later + 2 * HOUR_MS)
        .expect("internal sweep");
}

#[test]
fn velocity_record_survives_reopening() {
    let policy = Policy {
        hourly_cap_sat: 150_000,
        ..Policy::default()
    };
    let mut h = hot_signer(policy);
    let c1 = fake_coin(1, 500_000, &h.hot, 0);
    let p1 = [foreign_payment(0, 100_000)];
    let b1 = build(std::slice::from_ref(&c1), &p1, &h.hot, 2);
    h.signer
        .sign(&b1.psbt, &auth(1, &b1, &p1), T0)
        .expect("sign");
    let Hot { dir, hot, signer } = h;
    drop(signer);

    let mut reopened = open_signer(dir.path(), policy);
    assert_eq!(reopened.outflow(T0 + 1), (100_000, 100_000));
    let c2 = fake_coin(2, 500_000, &hot, 1);
    let p2 = [foreign_payment(1, 100_000)];
    let b2 = build(std::slice::from_ref(&c2), &p2, &hot, 2);
    assert!(matches!(
        reopened.sign(&b2.psbt, &auth(2, &b2, &p2), T0 + 2),
        Err(Refusal::VelocityCap { .. })
    ));
    drop(reopened);

    // A torn last line (a crash before the flush) is dropped; a bad line is an error.
    let path = dir.path().join("velocity");
    let mut text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text, format!("{T0} 1 100000\n"));
    text.push_str("17000000");
    std::fs::write(&path, &text).expect("write");
    let reopened = open_signer(dir.path(), policy);
    assert_eq!(reopened.outflow(T0 + 1).0, 100_000);
    drop(reopened);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("{T0} 1 100000\n")
    );
    std::fs::write(&path, format!("{T0} 1 100000\n{T0} x 5\n")).expect("write");
    let key = kura_signer::open(&dir.path().join("hot.key"), PASS).expect("key");
    match Signer::new(key, ours(), vec![], policy, &path) {
        Err(SignerError::Velocity(e)) => {
            let text = e.to_string();
            assert!(text.contains("line 2"), "{text}");
        }
        other => panic!("expected a bad line error, got {other:?}"),
    }
}

#[test]
fn a_second_signer_cannot_share_the_record() {
    let h = hot_signer(Policy::default());
    let key = kura_signer::open(&h.key_path(), PASS).expect("key");
    let second = Signer::new(key, ours(), vec![], Policy::default(), &h.velocity_path());
    assert!(matches!(second, Err(SignerError::Velocity(_))));
    assert_eq!(h.signer.spendable_descriptors().len(), 2, "hot and deposit");
}
