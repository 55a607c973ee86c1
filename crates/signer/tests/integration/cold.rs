//! The cold ceremony: a 2-of-3 refill of the hot wallet, signed in separate copies.

use crate::common;

use bitcoin::Psbt;
use common::*;
use kura_custody::psbt::{build_psbt, describe_output, ChangeTarget, Payment};
use kura_signer::{cold_sign, finalize, summarize, ColdError, Refusal};

/// The hot wallet of these tests: an ordinary wpkh wallet of seed 1.
fn hot() -> String {
    format!("wpkh({}/0/*)", key_expr(1, "m/84'/1'/1'"))
}

fn wallets() -> Vec<String> {
    vec![hot(), deposit_descriptor(), cold_descriptor()]
}

fn refill(coins: &[kura_custody::psbt::SpendableCoin], extra: Option<Payment>) -> Psbt {
    let mut payments = vec![Payment {
        script_pubkey: script(&hot(), 40),
        amount_sat: 150_000,
    }];
    payments.extend(extra);
    let cold_change = ChangeTarget {
        descriptor: cold_descriptor(),
        index: 90,
    };
    let mut built = build_psbt(coins, &payments, &cold_change, 2, NET).expect("build");
    let target = ChangeTarget {
        descriptor: hot(),
        index: 40,
    };
    describe_output(&mut built.psbt, 0, &target, NET).expect("describe");
    built.psbt
}

#[test]
fn two_of_three_refill_is_accepted_by_the_devnet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devnet = devnet(dir.path());
    let coins = vec![
        fund(&devnet, &cold_descriptor(), 0, 120_000),
        fund(&devnet, &cold_descriptor(), 1, 100_000),
    ];
    let psbt = refill(&coins, None);

    let summary = summarize(&psbt, &wallets(), NET).expect("summary");
    assert!(summary.all_outputs_ours());
    assert_eq!(summary.inputs.len(), 2);
    assert!(summary
        .inputs
        .iter()
        .all(|i| i.ours.as_ref().is_some_and(|o| o.wallet == 2)));
    assert_eq!(
        summary.outputs[0]
            .ours
            .as_ref()
            .map(|o| (o.wallet, o.index)),
        Some((0, 40))
    );
    assert_eq!(
        summary.outputs[1]
            .ours
            .as_ref()
            .map(|o| (o.wallet, o.index)),
        Some((2, 90))
    );
    let out_total: u64 = summary.outputs.iter().map(|o| o.amount_sat).sum();
    assert_eq!(summary.fee_sat, Some(220_000 - out_total));
    let text = summary.to_string();
    assert!(
        text.contains("ours: wallet #0 index 40") && text.contains("fee: "),
        "{text}"
    );

    // Keys 1 and 3 sign their own copies; one copy alone does not finalize.
    let mut first = psbt.clone();
    let mut third = psbt.clone();
    assert_eq!(
        cold_sign(&mut first, &master(COLD_SEEDS[0]), &wallets(), NET),
        Ok(2)
    );
    assert!(matches!(
        finalize(std::slice::from_ref(&first)),
        Err(ColdError::Finalize(_))
    ));
    assert_eq!(
        cold_sign(&mut third, &master(COLD_SEEDS[2]), &wallets(), NET),
        Ok(2)
    );
    let tx = finalize(&[first, third]).expect("finalize");
    let txid = devnet.submit_tx(&tx).expect("accepted");
    devnet.mine(1).expect("mine");
    assert!(confirmed(&devnet, &txid));
    let received = devnet.utxos_for(&script(&hot(), 40));
    assert_eq!(received[0].1.value.to_sat(), 150_000);

    // A key that is not one of the cold keys adds nothing.
    let mut other = psbt.clone();
    assert!(matches!(
        cold_sign(&mut other, &master(42), &wallets(), NET),
        Err(Refusal::Sign(_))
    ));
}

#[test]
fn refuses_an_output_that_is_not_ours() {
    let coins = vec![fake_coin(1, 500_000, &cold_descriptor(), 0)];
    let mut psbt = refill(&coins, Some(foreign_payment(3, 20_000)));
    let summary = summarize(&psbt, &wallets(), NET).expect("summary");
    assert!(!summary.all_outputs_ours());
    assert!(summary.to_string().contains("NOT OURS"));
    let before = psbt.clone();
    let refusal =
        cold_sign(&mut psbt, &master(COLD_SEEDS[1]), &wallets(), NET).expect_err("foreign output");
    assert!(
        matches!(
            refusal,
            Refusal::UnapprovedOutput {
                vout: 1,
                amount_sat: 20_000,
                ..
            }
        ),
        "{refusal}"
    );
    assert!(psbt.inputs.iter().all(|i| i.partial_sigs.is_empty()));
    assert_eq!(psbt.unsigned_tx, before.unsigned_tx);

    // A signature hash type other than ALL is refused.
    let mut none = refill(&coins, None);
    none.inputs[0].sighash_type = Some(bitcoin::sighash::EcdsaSighashType::None.into());
    assert!(matches!(
        cold_sign(&mut none, &master(COLD_SEEDS[1]), &wallets(), NET),
        Err(Refusal::Malformed(_))
    ));
}
