use super::*;
use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::ecdsa;
use bitcoin::psbt::PsbtSighashType;
use sha2::Digest;
use std::str::FromStr;

const NET: Network = Network::Regtest;
const MESSAGE: &str = "por/v1 00 11 5";

fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master")
}

fn account(seed: u8, path: &str) -> String {
    let secp = Secp256k1::new();
    let m = master(seed);
    let p = DerivationPath::from_str(path).expect("path");
    let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &p).expect("derive"));
    format!(
        "[{}/{}]{xpub}",
        m.fingerprint(&secp),
        path.trim_start_matches("m/")
    )
}

fn hot() -> String {
    format!("wpkh({}/0/*)", account(1, "m/84'/1'/0'"))
}

fn cold() -> String {
    let keys: Vec<String> = [2u8, 3, 4]
        .iter()
        .map(|s| format!("{}/0/*", account(*s, "m/48'/1'/0'/2'")))
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

fn taproot() -> String {
    format!("tr({}/0/*)", account(5, "m/86'/1'/0'"))
}

fn coin(n: u8, value_sat: u64, descriptor: &str, index: u32) -> SpendableCoin {
    SpendableCoin {
        outpoint: OutPoint::new(Txid::from_byte_array([n; 32]), u32::from(n) % 3),
        value_sat,
        descriptor: descriptor.to_owned(),
        index,
    }
}

fn coins() -> Vec<SpendableCoin> {
    vec![
        coin(7, 150_000, &hot(), 0),
        coin(3, 2_500_000, &cold(), 4),
        coin(9, 40_000, &hot(), 3),
        coin(5, 77_777, &taproot(), 1),
    ]
}

fn prevouts(psbt: &Psbt) -> BTreeMap<OutPoint, TxOut> {
    psbt.unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .skip(1)
        .map(|(i, p)| (i.previous_output, p.witness_utxo.clone().expect("utxo")))
        .collect()
}

/// Every key this test holds signs what it can.
fn sign_all(psbt: &mut Psbt, seeds: &[u8]) {
    let secp = Secp256k1::new();
    for s in seeds {
        psbt.sign(&master(*s), &secp).expect("sign");
    }
}

/// Finalize without any of the checks `finalize_reserves` makes (to build bad proofs).
fn finalize_raw(mut psbt: Psbt) -> Transaction {
    let secp = Secp256k1::verification_only();
    for i in 1..psbt.inputs.len() {
        psbt.finalize_inp_mut(&secp, i).expect("finalize input");
    }
    psbt.extract_tx_unchecked_fee_rate()
}

fn proven() -> (Transaction, BTreeMap<OutPoint, TxOut>) {
    let built = build_reserves_psbt(&coins(), MESSAGE, NET).expect("build");
    let mut psbt = built.psbt;
    let map = prevouts(&psbt);
    sign_all(&mut psbt, &[1, 2, 4, 5]);
    let (tx, total) = finalize_reserves(&[psbt]).expect("finalize");
    assert_eq!(total, 150_000 + 2_500_000 + 40_000 + 77_777);
    (tx, map)
}

#[test]
fn the_commitment_is_sha256_of_the_prefixed_message_in_serialized_order() {
    // BIP-127's example message, hashed here by an independent SHA-256 and by Python's
    // hashlib (the constant).
    for (message, python) in [
        (
            "Some Message",
            "30896246cd560f641d84e2ddcd9ee0f8fd74e4547be75aa7d6464f75dd372dff",
        ),
        (
            MESSAGE,
            "328002a18a613b98d50a8e92b2930359a9641e9bea9e8b8c793bf9e2b13069e1",
        ),
    ] {
        let independent = sha2::Sha256::digest(format!("Proof-of-Reserves: {message}"));
        assert_eq!(hex(&independent), python);
        let serialized = bitcoin::consensus::encode::serialize(&commitment_outpoint(message));
        assert_eq!(hex(&serialized[..32]), python);
        assert_eq!(serialized[32..], [0, 0, 0, 0], "vout 0");
    }
    // In the built transaction: the first input's outpoint, right after the version and
    // the input count of the serialized unsigned transaction.
    let built = build_reserves_psbt(&coins(), "Some Message", NET).expect("build");
    let raw = bitcoin::consensus::encode::serialize(&built.psbt.unsigned_tx);
    assert_eq!(raw[4], 5, "commitment plus four coins");
    assert_eq!(
        hex(&raw[5..37]),
        "30896246cd560f641d84e2ddcd9ee0f8fd74e4547be75aa7d6464f75dd372dff"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn builds_the_bip127_layout() {
    let built = build_reserves_psbt(&coins(), MESSAGE, NET).expect("build");
    let tx = &built.psbt.unsigned_tx;
    assert_eq!(built.total_sat, 2_767_777);
    assert_eq!(tx.input.len(), 5);
    assert_eq!(tx.input[0].previous_output, commitment_outpoint(MESSAGE));
    // Coins sorted by outpoint, each once.
    let ops: Vec<OutPoint> = tx.input[1..].iter().map(|i| i.previous_output).collect();
    let mut sorted = ops.clone();
    sorted.sort();
    assert_eq!(ops, sorted);
    assert_eq!(ops, built.coins);
    assert_eq!(tx.output.len(), 1);
    assert_eq!(tx.output[0].value.to_sat(), 2_767_777);
    assert_eq!(tx.output[0].script_pubkey.as_bytes(), [0x6a]);
    assert_eq!(psbt_message(&built.psbt), Some(Ok(MESSAGE.to_owned())));
    assert!(is_reserves_psbt(&built.psbt));
    let shape = check_reserves_psbt(&built.psbt, MESSAGE).expect("shape");
    assert_eq!(shape.total_sat, 2_767_777);
    assert_eq!(shape.coins.len(), 4);
    // Deterministic: the same coins in another order give the same PSBT.
    let mut reversed = coins();
    reversed.reverse();
    assert_eq!(
        build_reserves_psbt(&reversed, MESSAGE, NET).expect("build"),
        built
    );
}

#[test]
fn a_signed_proof_verifies_and_can_never_be_valid_on_chain() {
    let (tx, map) = proven();
    assert_eq!(verify_reserves(&tx, &map, MESSAGE), Ok(2_767_777));
    assert_eq!(never_valid_on_chain(&tx, MESSAGE), Ok(()));
    assert!(tx.input[0].witness.is_empty() && tx.input[0].script_sig.is_empty());
    // An ordinary transaction spending the same coins is no proof.
    let mut ordinary = tx.clone();
    ordinary.input.remove(0);
    assert!(matches!(
        never_valid_on_chain(&ordinary, MESSAGE),
        Err(ReservesError::WrongCommitment { .. })
    ));
}

#[test]
fn a_wrong_message_fails() {
    let (tx, map) = proven();
    let err = verify_reserves(&tx, &map, "por/v1 00 11 6").expect_err("wrong message");
    assert_eq!(
        err,
        ReservesError::WrongCommitment {
            expected: commitment_outpoint("por/v1 00 11 6"),
            found: commitment_outpoint(MESSAGE),
        }
    );
    // Re-pointing input 0 at another message breaks every signature (ALL commits to it).
    let mut moved = tx.clone();
    moved.input[0].previous_output = commitment_outpoint("another message");
    assert!(matches!(
        verify_reserves(&moved, &map, "another message"),
        Err(ReservesError::BadSignature { input: 1, .. })
    ));
}

#[test]
fn a_tampered_signature_fails() {
    let (tx, map) = proven();
    // Every coin input, in turn: flip one bit inside its first signature.
    for input in 1..tx.input.len() {
        let mut bad = tx.clone();
        let mut stack: Vec<Vec<u8>> = bad.input[input].witness.to_vec();
        let sig = stack
            .iter_mut()
            .find(|e| e.len() >= 64)
            .expect("a signature");
        sig[10] ^= 0x01;
        bad.input[input].witness = bitcoin::Witness::from_slice(&stack);
        let err = verify_reserves(&bad, &map, MESSAGE).expect_err("tampered");
        assert!(
            matches!(err, ReservesError::BadSignature { input: i, .. } if i == input),
            "input {input}: {err}"
        );
    }
}

#[test]
fn a_missing_prevout_fails() {
    let (tx, mut map) = proven();
    let gone = tx.input[2].previous_output;
    map.remove(&gone);
    assert_eq!(
        verify_reserves(&tx, &map, MESSAGE),
        Err(ReservesError::MissingPrevout {
            input: 2,
            outpoint: gone
        })
    );
}

#[test]
fn a_wrong_amount_breaks_the_signature() {
    // Segwit signatures commit to the amount spent: a verifier told another value
    // rejects the proof rather than adding the wrong amount.
    let (tx, mut map) = proven();
    let op = tx.input[1].previous_output;
    if let Some(out) = map.get_mut(&op) {
        out.value = Amount::from_sat(out.value.to_sat() + 1);
    }
    assert!(matches!(
        verify_reserves(&tx, &map, MESSAGE),
        Err(ReservesError::BadSignature { input: 1, .. })
    ));
}

#[test]
fn signatures_other_than_all_fail() {
    for sighash in [
        EcdsaSighashType::AllPlusAnyoneCanPay,
        EcdsaSighashType::None,
        EcdsaSighashType::Single,
    ] {
        let coins = vec![coin(7, 150_000, &hot(), 0), coin(9, 40_000, &hot(), 3)];
        let mut psbt = build_reserves_psbt(&coins, MESSAGE, NET)
            .expect("build")
            .psbt;
        let map = prevouts(&psbt);
        psbt.inputs[2].sighash_type = Some(PsbtSighashType::from(sighash));
        // The PSBT asks for it: refused before any key signs.
        assert!(matches!(
            check_reserves_psbt(&psbt, MESSAGE),
            Err(ReservesError::NotSighashAll { input: 2, .. })
        ));
        sign_all(&mut psbt, &[1]);
        let sig: ecdsa::Signature = *psbt.inputs[2].partial_sigs.values().next().expect("signed");
        assert_eq!(sig.sighash_type, sighash);
        assert!(finalize_reserves(std::slice::from_ref(&psbt)).is_err());
        // A verifier given such a transaction refuses it, although the signature is valid.
        let tx = finalize_raw(psbt);
        assert_eq!(
            verify_reserves(&tx, &map, MESSAGE),
            Err(ReservesError::NotSighashAll {
                input: 2,
                outpoint: tx.input[2].previous_output,
                sighash: sighash.to_string(),
            })
        );
    }
}

#[test]
fn duplicates_overflow_and_output_mismatches_fail() {
    let c = coin(7, 150_000, &hot(), 0);
    assert_eq!(
        build_reserves_psbt(&[c.clone(), c.clone()], MESSAGE, NET),
        Err(ReservesError::DuplicateInput(c.outpoint))
    );
    assert_eq!(
        build_reserves_psbt(&[], MESSAGE, NET),
        Err(ReservesError::NoCoins)
    );
    let huge = [
        coin(1, Amount::MAX_MONEY.to_sat(), &hot(), 0),
        coin(2, 1, &hot(), 1),
    ];
    assert_eq!(
        build_reserves_psbt(&huge, MESSAGE, NET),
        Err(ReservesError::Overflow)
    );

    let (tx, map) = proven();
    let mut dup = tx.clone();
    dup.input.push(tx.input[1].clone());
    assert_eq!(
        verify_reserves(&dup, &map, MESSAGE),
        Err(ReservesError::DuplicateInput(tx.input[1].previous_output))
    );
    let mut commitment_twice = tx.clone();
    commitment_twice.input.push(tx.input[0].clone());
    assert_eq!(
        verify_reserves(&commitment_twice, &map, MESSAGE),
        Err(ReservesError::DuplicateInput(commitment_outpoint(MESSAGE)))
    );
    let mut inflated = map.clone();
    for out in inflated.values_mut() {
        out.value = Amount::from_sat(u64::MAX / 2);
    }
    assert_eq!(
        verify_reserves(&tx, &inflated, MESSAGE),
        Err(ReservesError::Overflow)
    );
    let mut signed_commitment = tx.clone();
    signed_commitment.input[0].witness = bitcoin::Witness::from_slice(&[[1u8]]);
    assert_eq!(
        verify_reserves(&signed_commitment, &map, MESSAGE),
        Err(ReservesError::CommitmentInputSigned)
    );

    // A proof signed over an output that is not the total: valid signatures, refused.
    let coins = vec![coin(7, 150_000, &hot(), 0)];
    let mut psbt = build_reserves_psbt(&coins, MESSAGE, NET)
        .expect("build")
        .psbt;
    let map = prevouts(&psbt);
    psbt.unsigned_tx.output[0].value = Amount::from_sat(150_001);
    assert_eq!(
        check_reserves_psbt(&psbt, MESSAGE),
        Err(ReservesError::OutputNotTotal {
            output_sat: 150_001,
            coins_sat: 150_000
        })
    );
    sign_all(&mut psbt, &[1]);
    let tx = finalize_raw(psbt);
    assert_eq!(
        verify_reserves(&tx, &map, MESSAGE),
        Err(ReservesError::OutputNotTotal {
            output_sat: 150_001,
            coins_sat: 150_000
        })
    );
}

#[test]
fn the_psbt_check_refuses_what_a_signer_must_not_sign() {
    let built = build_reserves_psbt(&coins(), MESSAGE, NET).expect("build");
    assert_eq!(
        check_reserves_psbt(&built.psbt, "another"),
        Err(ReservesError::MessageMismatch {
            psbt: MESSAGE.into(),
            expected: "another".into()
        })
    );
    // An output somebody could spend.
    let mut spendable = built.psbt.clone();
    spendable.unsigned_tx.output[0].script_pubkey = kura_script(&hot(), 9);
    assert!(matches!(
        check_reserves_psbt(&spendable, MESSAGE),
        Err(ReservesError::OutputSpendable(_))
    ));
    // The field says the message, but input 0 spends something else: an ordinary spend
    // dressed up as a proof.
    let mut real = built.psbt.clone();
    real.unsigned_tx.input[0].previous_output = OutPoint::new(Txid::from_byte_array([8; 32]), 0);
    assert!(matches!(
        check_reserves_psbt(&real, MESSAGE),
        Err(ReservesError::WrongCommitment { .. })
    ));
    // No commitment field at all.
    let mut plain = built.psbt.clone();
    plain.inputs[0].unknown.clear();
    assert!(!is_reserves_psbt(&plain));
    assert_eq!(
        check_reserves_psbt(&plain, MESSAGE),
        Err(ReservesError::NotReserves)
    );
    // A second output.
    let mut two = built.psbt.clone();
    two.unsigned_tx
        .output
        .push(two.unsigned_tx.output[0].clone());
    two.outputs.push(Default::default());
    assert_eq!(
        check_reserves_psbt(&two, MESSAGE),
        Err(ReservesError::OutputCount(2))
    );
    // A coin without its amount.
    let mut blind = built.psbt.clone();
    blind.inputs[3].witness_utxo = None;
    assert!(matches!(
        check_reserves_psbt(&blind, MESSAGE),
        Err(ReservesError::MissingPrevout { input: 3, .. })
    ));
}

fn kura_script(descriptor: &str, index: u32) -> ScriptBuf {
    crate::derive(descriptor, index, NET).expect("derive").0
}

#[test]
fn finalizing_needs_every_coin_signed_and_combines_copies() {
    let built = build_reserves_psbt(&coins(), MESSAGE, NET).expect("build");
    let mut hot_only = built.psbt.clone();
    sign_all(&mut hot_only, &[1, 5]);
    assert!(matches!(
        finalize_reserves(std::slice::from_ref(&hot_only)),
        Err(ReservesError::Finalize(_))
    ));
    // Two cold holders sign separate copies of the hot-signed PSBT.
    let mut a = hot_only.clone();
    sign_all(&mut a, &[2]);
    let mut b = hot_only.clone();
    sign_all(&mut b, &[3]);
    assert!(finalize_reserves(std::slice::from_ref(&a)).is_err());
    let (tx, total) = finalize_reserves(&[a, b]).expect("two of three");
    assert_eq!(total, 2_767_777);
    assert_eq!(
        verify_reserves(&tx, &prevouts(&built.psbt), MESSAGE),
        Ok(2_767_777)
    );
}
