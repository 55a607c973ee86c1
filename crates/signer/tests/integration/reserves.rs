//! Proofs of reserves: the hot signer and two cold holders sign one for real devnet coins,
//! it verifies and the devnet refuses it; anything that is not a proof for the message
//! given is refused with nothing signed.

use crate::common;

use bitcoin::psbt::PsbtSighashType;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{Amount, OutPoint, TxOut};
use common::*;
use kura_custody::psbt::{build_psbt, ChangeTarget};
use kura_custody::reserves::{build_reserves_psbt, finalize_reserves, verify_reserves};
use kura_signer::{
    cold_sign_reserves, keyfile, Authorization, Policy, Refusal, ReservesSigner, Signer,
};
use std::collections::BTreeMap;

const MESSAGE: &str = "por/v1 ab cd 12345";

fn refused(r: Result<impl std::fmt::Debug, Refusal>) -> Refusal {
    r.expect_err("refused")
}

#[test]
fn hot_and_cold_sign_a_proof_the_devnet_refuses_and_verify_accepts() {
    let h = hot_signer(Policy::default());
    let devnet = devnet(h.dir.path());
    let coins = vec![
        fund(&devnet, &h.hot, 0, 70_000),
        fund(&devnet, &deposit_descriptor(), 3, 60_000),
        fund(&devnet, &cold_descriptor(), 1, 500_000),
    ];
    let built = build_reserves_psbt(&coins, MESSAGE, NET).expect("build");
    assert_eq!(built.total_sat, 630_000);

    let hot = h.signer.sign_reserves(&built.psbt, MESSAGE).expect("hot");
    assert_eq!(hot.signed.len(), 2, "the hot and the deposit coin");
    assert_eq!(hot.others, vec![coins[2].outpoint]);
    assert!(!hot.complete());
    assert!(finalize_reserves(std::slice::from_ref(&hot.psbt)).is_err());

    // Two of the three cold holders sign copies of the hot-signed PSBT.
    let mut copies = Vec::new();
    for seed in &COLD_SEEDS[1..] {
        let mut copy = hot.psbt.clone();
        let (added, shape) =
            cold_sign_reserves(&mut copy, &master(*seed), &all_ours(&h), NET).expect("cold sign");
        assert_eq!(added, 1);
        assert_eq!(shape.message, MESSAGE);
        assert_eq!(shape.total_sat, 630_000);
        copies.push(copy);
    }
    let (tx, total) = finalize_reserves(&copies).expect("finalize");
    assert_eq!(total, 630_000);

    // Checked against the devnet's coins, the sum is ours.
    let prevouts: BTreeMap<OutPoint, TxOut> = coins
        .iter()
        .map(|c| {
            let (_, out, _, _) = devnet
                .utxos_for(&script(&c.descriptor, c.index))
                .into_iter()
                .find(|(o, _, _, _)| *o == c.outpoint)
                .expect("unspent on the devnet");
            (c.outpoint, out)
        })
        .collect();
    assert_eq!(verify_reserves(&tx, &prevouts, MESSAGE), Ok(630_000));

    // The chain never takes it: its first input does not exist.
    let reject = devnet.test_accept(&tx).expect_err("test accept");
    assert_eq!(reject.code, -25, "{}", reject.reason);
    assert!(devnet.submit_tx(&tx).is_err());
    assert!(devnet.mempool_txids().is_empty());
}

fn all_ours(h: &Hot) -> Vec<String> {
    let mut all = ours();
    all.push(h.hot.clone());
    all
}

#[test]
fn a_proof_of_only_hot_coins_is_complete_after_the_hot_signer() {
    let h = hot_signer(Policy::default());
    let coins = vec![
        fake_coin(1, 10_000, &h.hot, 0),
        fake_coin(2, 20_000, &deposit_descriptor(), 9),
    ];
    let built = build_reserves_psbt(&coins, MESSAGE, NET).expect("build");
    // The offline signer (no velocity record, so it runs beside a node) signs the same.
    let key = keyfile::open(&h.key_path(), PASS).expect("key");
    let offline = ReservesSigner::new(key, ours(), vec![master(DEPOSIT_SEED)]).expect("signer");
    let signed = offline.sign_reserves(&built.psbt, MESSAGE).expect("sign");
    assert!(signed.complete());
    let (tx, total) = finalize_reserves(&[signed.psbt]).expect("finalize");
    assert_eq!(total, 30_000);
    let prevouts = built
        .psbt
        .inputs
        .iter()
        .zip(&built.psbt.unsigned_tx.input)
        .skip(1)
        .map(|(p, i)| (i.previous_output, p.witness_utxo.clone().expect("utxo")))
        .collect();
    assert_eq!(verify_reserves(&tx, &prevouts, MESSAGE), Ok(30_000));
    // A proof moves nothing: no outflow recorded.
    assert_eq!(h.signer.outflow(u64::MAX / 2), (0, 0));
}

#[test]
fn the_hot_signer_refuses_anything_but_a_proof_for_the_message() {
    let h = hot_signer(Policy::default());
    let coins = vec![fake_coin(1, 10_000, &h.hot, 0)];
    let built = build_reserves_psbt(&coins, MESSAGE, NET).expect("build");

    // Another message than the one asked for.
    assert!(matches!(
        refused(h.signer.sign_reserves(&built.psbt, "another message")),
        Refusal::NotReserves(_)
    ));
    // An ordinary withdrawal.
    let withdrawal = build_psbt(
        &coins,
        &[foreign_payment(0, 5_000)],
        &ChangeTarget {
            descriptor: h.hot.clone(),
            index: 9,
        },
        2,
        NET,
    )
    .expect("withdrawal");
    assert!(matches!(
        refused(h.signer.sign_reserves(&withdrawal.psbt, MESSAGE)),
        Refusal::NotReserves(_)
    ));
    // A proof whose output pays somebody.
    let mut paying = built.psbt.clone();
    paying.unsigned_tx.output[0].script_pubkey = foreign_payment(0, 1).script_pubkey;
    assert!(matches!(
        refused(h.signer.sign_reserves(&paying, MESSAGE)),
        Refusal::NotReserves(_)
    ));
    // The commitment field says the message but input 0 spends a real coin.
    let mut disguised = built.psbt.clone();
    disguised.unsigned_tx.input[0].previous_output = fake_coin(7, 1, &h.hot, 1).outpoint;
    assert!(matches!(
        refused(h.signer.sign_reserves(&disguised, MESSAGE)),
        Refusal::NotReserves(_)
    ));
    // A signature hash type that would not commit to the commitment input.
    let mut anyone = built.psbt.clone();
    anyone.inputs[1].sighash_type =
        Some(PsbtSighashType::from(EcdsaSighashType::AllPlusAnyoneCanPay));
    assert!(matches!(
        refused(h.signer.sign_reserves(&anyone, MESSAGE)),
        Refusal::NotReserves(_)
    ));
    // A coin that is not ours.
    let with_foreign = build_reserves_psbt(
        &[
            coins[0].clone(),
            fake_coin(3, 5_000, &foreign_descriptor(), 0),
        ],
        MESSAGE,
        NET,
    )
    .expect("build");
    assert!(matches!(
        refused(h.signer.sign_reserves(&with_foreign.psbt, MESSAGE)),
        Refusal::InputNotOurs(_)
    ));
    // Only cold coins: nothing for the hot key to sign.
    let cold_only =
        build_reserves_psbt(&[fake_coin(4, 9_000, &cold_descriptor(), 0)], MESSAGE, NET)
            .expect("build");
    assert!(matches!(
        refused(h.signer.sign_reserves(&cold_only.psbt, MESSAGE)),
        Refusal::Sign(_)
    ));
    // And the ordinary signing path does not take a proof either: its inputs are not
    // the approved ones.
    let mut signer: Signer = h.signer;
    let auth = Authorization {
        batch: 1,
        inputs: vec![coins[0].outpoint],
        payments: vec![],
    };
    assert!(signer.sign(&built.psbt, &auth, 1).is_err());
}

#[test]
fn a_cold_holder_refuses_what_is_not_a_proof_of_our_coins() {
    let h = hot_signer(Policy::default());
    let coins = vec![fake_coin(4, 9_000, &cold_descriptor(), 0)];
    let built = build_reserves_psbt(&coins, MESSAGE, NET).expect("build");
    let holder = master(COLD_SEEDS[0]);
    let mut paying = built.psbt.clone();
    paying.unsigned_tx.output[0].script_pubkey = foreign_payment(0, 1).script_pubkey;
    assert!(matches!(
        refused(cold_sign_reserves(&mut paying, &holder, &all_ours(&h), NET)),
        Refusal::NotReserves(_)
    ));
    let mut inflated = built.psbt.clone();
    inflated.unsigned_tx.output[0].value = Amount::from_sat(9_001);
    assert!(matches!(
        refused(cold_sign_reserves(
            &mut inflated,
            &holder,
            &all_ours(&h),
            NET
        )),
        Refusal::NotReserves(_)
    ));
    let mut plain = built.psbt.clone();
    plain.inputs[0].unknown.clear();
    assert!(matches!(
        refused(cold_sign_reserves(&mut plain, &holder, &all_ours(&h), NET)),
        Refusal::NotReserves(_)
    ));
    // A key that holds none of the coins' keys.
    let mut copy = built.psbt.clone();
    assert!(matches!(
        refused(cold_sign_reserves(
            &mut copy,
            &master(99),
            &all_ours(&h),
            NET
        )),
        Refusal::Sign(_)
    ));
    // Without the cold wallet among our descriptors, its coin is not ours.
    let mut unknown = built.psbt.clone();
    assert!(matches!(
        refused(cold_sign_reserves(
            &mut unknown,
            &holder,
            &[deposit_descriptor()],
            NET
        )),
        Refusal::InputNotOurs(_)
    ));
}
