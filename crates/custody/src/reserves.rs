//! Proof of reserves as a BIP-127 transaction: a transaction that spends every coin being
//! proven, signed by their keys, which can never be valid on chain.
//!
//! # The transaction
//!
//! - **Input 0, the commitment input**, spends outpoint `C:0` where `C` is the 32 bytes
//!   `SHA-256("Proof-of-Reserves: " ‖ message)` (the message UTF-8 encoded) placed in the
//!   outpoint as they come out of the hash (the serialized outpoint starts with them; the
//!   usual reversed txid display shows them backwards). No transaction has that txid, so
//!   no block can ever hold this one. Its `scriptSig` and witness are empty.
//! - **Inputs 1…n** are the coins proven, each once, sorted by outpoint when built here,
//!   every signature `SIGHASH_ALL` (ECDSA `ALL`; Schnorr `DEFAULT` or `ALL`). Such a
//!   signature commits to input 0 and so to the message: it is valid in this transaction
//!   only, never in one that could be mined, and cannot be reused for another message.
//! - **One output** worth exactly the sum of the coins (input 0 counts as 0 sat), so no
//!   fee. BIP-127 leaves its script open; kura pays bare `OP_RETURN` (`6a`), which
//!   nobody can ever spend, and the signers refuse any other script.
//! - Version 2, lock time 0, every sequence `0xffffffff`.
//!
//! Where a signature hash needs every spent output (taproot), input 0 counts as 0 sat
//! paid to `OP_TRUE` (`51`), as BIP-127 tells wallets to assume.
//!
//! # The PSBT
//!
//! Input 0 carries BIP-127's `PSBT_IN_POR_COMMITMENT` (type `0x09`, no key data, the
//! message as UTF-8) and, for the signers' and finalizers' sake, that stand-in output as
//! its `witness_utxo`. Every coin input carries its `witness_utxo`, its descriptor's
//! scripts and key origins, and `PSBT_IN_SIGHASH_TYPE` = `ALL` (segwit v0).
//!
//! # Checking a proof
//!
//! [`verify_reserves`] takes the transaction, the outputs the coin inputs spend (from the
//! chain: the caller decides at which block) and the message, and returns the total only
//! if the commitment is right, every coin is given once, every input's script is
//! satisfied (Bitcoin Core's consensus code for segwit v0, miniscript's interpreter for
//! every input) and signed `SIGHASH_ALL` only, and the output is the exact sum.

use crate::psbt::{BuildError, Descriptors, SpendableCoin};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::opcodes::OP_TRUE;
use bitcoin::psbt::{raw, Psbt, PsbtSighashType};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::sighash::{EcdsaSighashType, Prevouts, TapSighashType};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, WitnessVersion,
};
use miniscript::interpreter::{Interpreter, KeySigPair, SatisfiedConstraint};
use miniscript::psbt::PsbtExt;
use std::collections::{BTreeMap, BTreeSet};

/// What the message is prefixed with before hashing (BIP-127).
pub const PREFIX: &str = "Proof-of-Reserves: ";

/// BIP-127's PSBT input field: the commitment message.
pub const PSBT_IN_POR_COMMITMENT: u8 = 0x09;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservesError {
    #[error("nothing to prove: no coins")]
    NoCoins,
    #[error("the transaction has no inputs")]
    NoInputs,
    #[error(
        "wrong commitment: the first input spends {found}, but the message commits to {expected}"
    )]
    WrongCommitment { expected: OutPoint, found: OutPoint },
    #[error("the commitment input (input 0) carries a scriptSig or witness; it must be empty")]
    CommitmentInputSigned,
    #[error("{0} is spent twice")]
    DuplicateInput(OutPoint),
    #[error(
        "input {input} spends {outpoint}, whose output is not known (spent, or never existed)"
    )]
    MissingPrevout { input: usize, outpoint: OutPoint },
    #[error("input {input} ({outpoint}) is signed with signature hash type {sighash}, not ALL")]
    NotSighashAll {
        input: usize,
        outpoint: OutPoint,
        sighash: String,
    },
    #[error("input {input} ({outpoint}): bad signature or unsatisfied script: {why}")]
    BadSignature {
        input: usize,
        outpoint: OutPoint,
        why: String,
    },
    #[error("input {input} ({outpoint}) carries no signature, so it proves no key")]
    NoSignature { input: usize, outpoint: OutPoint },
    #[error("input {input} ({outpoint}): cannot read its script: {why}")]
    Unreadable {
        input: usize,
        outpoint: OutPoint,
        why: String,
    },
    #[error("a proof of reserves has exactly one output; this one has {0}")]
    OutputCount(usize),
    #[error("the output is {output_sat} sat, but the coins add up to {coins_sat} sat")]
    OutputNotTotal { output_sat: u64, coins_sat: u64 },
    #[error(
        "the output pays script {0}, not OP_RETURN: only an output nobody can spend is signed"
    )]
    OutputSpendable(String),
    #[error("amounts overflow (above 21 million BTC)")]
    Overflow,
    #[error("not a proof-of-reserves PSBT: its first input has no PSBT_IN_POR_COMMITMENT (0x09)")]
    NotReserves,
    #[error("the PSBT's commitment message is not UTF-8")]
    MessageNotText,
    #[error("the PSBT commits to message {psbt:?}, not {expected:?}")]
    MessageMismatch { psbt: String, expected: String },
    #[error("malformed PSBT: {0}")]
    Malformed(String),
    #[error("cannot build the PSBT: {0}")]
    Build(#[from] BuildError),
    #[error("cannot finalize: {0}")]
    Finalize(String),
}

/// The txid part of the commitment outpoint: `SHA-256("Proof-of-Reserves: " ‖ message)`.
pub fn commitment_txid(message: &str) -> Txid {
    let mut bytes = Vec::with_capacity(PREFIX.len() + message.len());
    bytes.extend_from_slice(PREFIX.as_bytes());
    bytes.extend_from_slice(message.as_bytes());
    Txid::from_byte_array(sha256::Hash::hash(&bytes).to_byte_array())
}

/// The outpoint input 0 spends: the commitment txid, index 0.
pub fn commitment_outpoint(message: &str) -> OutPoint {
    OutPoint::new(commitment_txid(message), 0)
}

/// What input 0 is taken to spend where a signature hash needs it: 0 sat to `OP_TRUE`.
pub fn commitment_prevout() -> TxOut {
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![OP_TRUE.to_u8()]),
    }
}

/// The script of the one output: bare `OP_RETURN`.
pub fn proof_output_script() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![OP_RETURN.to_u8()])
}

/// Check that `tx` can never be valid on chain because its first input spends the
/// commitment of `message` (an outpoint no transaction can create: making one would
/// take a transaction whose txid is that SHA-256 output). Ok means exactly that.
pub fn never_valid_on_chain(tx: &Transaction, message: &str) -> Result<(), ReservesError> {
    let first = tx.input.first().ok_or(ReservesError::NoInputs)?;
    let expected = commitment_outpoint(message);
    if first.previous_output != expected {
        return Err(ReservesError::WrongCommitment {
            expected,
            found: first.previous_output,
        });
    }
    Ok(())
}

/// An unsigned proof-of-reserves PSBT.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltReserves {
    pub psbt: Psbt,
    /// The sum of the coins: the output's value.
    pub total_sat: u64,
    /// The coins, in input order (input 1 onwards).
    pub coins: Vec<OutPoint>,
}

/// Build the proof-of-reserves PSBT for `coins` and `message` (see the module
/// documentation for the layout).
pub fn build_reserves_psbt(
    coins: &[SpendableCoin],
    message: &str,
    network: Network,
) -> Result<BuiltReserves, ReservesError> {
    if coins.is_empty() {
        return Err(ReservesError::NoCoins);
    }
    let commitment = commitment_outpoint(message);
    let mut seen = BTreeSet::from([commitment]);
    for c in coins {
        if !seen.insert(c.outpoint) {
            return Err(ReservesError::DuplicateInput(c.outpoint));
        }
    }
    let mut sorted: Vec<&SpendableCoin> = coins.iter().collect();
    sorted.sort_by_key(|c| c.outpoint);
    let mut cache = Descriptors::new(network);
    let inputs = sorted
        .iter()
        .map(|c| cache.input(c))
        .collect::<Result<Vec<_>, _>>()?;
    let total_sat = checked_total(inputs.iter().map(|i| i.value_sat))?;
    let txin = |previous_output| TxIn {
        previous_output,
        sequence: Sequence::MAX,
        ..TxIn::default()
    };
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: std::iter::once(txin(commitment))
            .chain(inputs.iter().map(|i| txin(i.outpoint)))
            .collect(),
        output: vec![TxOut {
            value: Amount::from_sat(total_sat),
            script_pubkey: proof_output_script(),
        }],
    };
    let mut psbt =
        Psbt::from_unsigned_tx(tx).map_err(|e| ReservesError::Malformed(e.to_string()))?;
    psbt.inputs[0].witness_utxo = Some(commitment_prevout());
    psbt.inputs[0]
        .unknown
        .insert(por_key(), message.as_bytes().to_vec());
    for (n, input) in inputs.iter().enumerate() {
        let i = n + 1;
        let script_pubkey = input.descriptor.script_pubkey();
        let taproot = script_pubkey.witness_version() == Some(WitnessVersion::V1);
        psbt.inputs[i].witness_utxo = Some(TxOut {
            value: Amount::from_sat(input.value_sat),
            script_pubkey,
        });
        if !taproot {
            psbt.inputs[i].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
        }
        psbt.update_input_with_descriptor(i, &input.descriptor)
            .map_err(|e| ReservesError::Malformed(format!("input {i}: {e}")))?;
    }
    Ok(BuiltReserves {
        psbt,
        total_sat,
        coins: inputs.iter().map(|i| i.outpoint).collect(),
    })
}

fn por_key() -> raw::Key {
    raw::Key {
        type_value: PSBT_IN_POR_COMMITMENT,
        key: Vec::new(),
    }
}

/// The message in the PSBT's commitment field (input 0), if it has one.
pub fn psbt_message(psbt: &Psbt) -> Option<Result<String, ReservesError>> {
    let value = psbt.inputs.first()?.unknown.get(&por_key())?;
    Some(String::from_utf8(value.clone()).map_err(|_| ReservesError::MessageNotText))
}

/// Whether `psbt` says it is a proof of reserves (its first input carries the
/// commitment field). Says nothing about whether it is a valid one.
pub fn is_reserves_psbt(psbt: &Psbt) -> bool {
    psbt_message(psbt).is_some()
}

/// What a proof-of-reserves PSBT does, once [`check_reserves_psbt`] accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservesShape {
    pub message: String,
    pub total_sat: u64,
    /// Input index, coin and the output it spends (from `witness_utxo`).
    pub coins: Vec<(usize, OutPoint, TxOut)>,
}

fn checked_total(mut values: impl Iterator<Item = u64>) -> Result<u64, ReservesError> {
    let total = values.try_fold(0u64, |acc, v| {
        acc.checked_add(v).ok_or(ReservesError::Overflow)
    })?;
    if total > Amount::MAX_MONEY.to_sat() {
        return Err(ReservesError::Overflow);
    }
    Ok(total)
}

/// Check that `psbt` is a proof of reserves for exactly `message`, as kura builds them,
/// before any key signs it: the commitment field says `message` and input 0 spends its
/// commitment, unsigned; every coin once, with its `witness_utxo`, asking for no
/// signature hash type but ALL; one output, `OP_RETURN`, worth exactly the coins.
pub fn check_reserves_psbt(psbt: &Psbt, message: &str) -> Result<ReservesShape, ReservesError> {
    let tx = &psbt.unsigned_tx;
    if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
        return Err(ReservesError::Malformed(
            "the PSBT's input or output maps do not match its transaction".into(),
        ));
    }
    let in_psbt = psbt_message(psbt).ok_or(ReservesError::NotReserves)??;
    if in_psbt != message {
        return Err(ReservesError::MessageMismatch {
            psbt: in_psbt,
            expected: message.to_owned(),
        });
    }
    never_valid_on_chain(tx, message)?;
    let first = &psbt.inputs[0];
    let signed = !first.partial_sigs.is_empty()
        || first.final_script_sig.is_some()
        || first.final_script_witness.is_some()
        || first.tap_key_sig.is_some()
        || !first.tap_script_sigs.is_empty()
        || !tx.input[0].script_sig.is_empty()
        || !tx.input[0].witness.is_empty();
    if signed {
        return Err(ReservesError::CommitmentInputSigned);
    }
    if first.non_witness_utxo.is_some()
        || first
            .witness_utxo
            .as_ref()
            .is_some_and(|u| *u != commitment_prevout())
    {
        return Err(ReservesError::Malformed(
            "the commitment input claims to spend a real output".into(),
        ));
    }
    if tx.input.len() < 2 {
        return Err(ReservesError::NoCoins);
    }
    let mut seen = BTreeSet::new();
    for txin in &tx.input {
        if !seen.insert(txin.previous_output) {
            return Err(ReservesError::DuplicateInput(txin.previous_output));
        }
    }
    let mut coins = Vec::with_capacity(tx.input.len() - 1);
    for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate().skip(1) {
        let outpoint = txin.previous_output;
        let utxo = input
            .witness_utxo
            .clone()
            .ok_or(ReservesError::MissingPrevout { input: i, outpoint })?;
        if let Some(t) = input.sighash_type {
            let all = t.ecdsa_hash_ty().is_ok_and(|e| e == EcdsaSighashType::All)
                || t.taproot_hash_ty()
                    .is_ok_and(|s| matches!(s, TapSighashType::All | TapSighashType::Default));
            if !all {
                return Err(ReservesError::NotSighashAll {
                    input: i,
                    outpoint,
                    sighash: t.to_string(),
                });
            }
        }
        coins.push((i, outpoint, utxo));
    }
    let total_sat = checked_total(coins.iter().map(|(_, _, u)| u.value.to_sat()))?;
    let [output] = tx.output.as_slice() else {
        return Err(ReservesError::OutputCount(tx.output.len()));
    };
    if output.script_pubkey != proof_output_script() {
        return Err(ReservesError::OutputSpendable(
            output.script_pubkey.to_hex_string(),
        ));
    }
    if output.value.to_sat() != total_sat {
        return Err(ReservesError::OutputNotTotal {
            output_sat: output.value.to_sat(),
            coins_sat: total_sat,
        });
    }
    Ok(ReservesShape {
        message: message.to_owned(),
        total_sat,
        coins,
    })
}

/// Combine signed copies of one proof-of-reserves PSBT, finalize every coin input
/// (miniscript), extract the transaction and verify it against the PSBT's own amounts.
/// Returns the transaction and its total. Input 0 stays empty.
pub fn finalize_reserves(psbts: &[Psbt]) -> Result<(Transaction, u64), ReservesError> {
    let (first, rest) = psbts
        .split_first()
        .ok_or_else(|| ReservesError::Finalize("no PSBTs".into()))?;
    let mut psbt = first.clone();
    for other in rest {
        psbt.combine(other.clone())
            .map_err(|e| ReservesError::Finalize(format!("cannot combine the copies: {e}")))?;
    }
    let message = psbt_message(&psbt).ok_or(ReservesError::NotReserves)??;
    let shape = check_reserves_psbt(&psbt, &message)?;
    let secp = Secp256k1::verification_only();
    let mut failed = Vec::new();
    for (i, outpoint, _) in &shape.coins {
        if let Err(e) = psbt.finalize_inp_mut(&secp, *i) {
            failed.push(format!("input {i} ({outpoint}): {e}"));
        }
    }
    if !failed.is_empty() {
        return Err(ReservesError::Finalize(format!(
            "not enough signatures? {}",
            failed.join("; ")
        )));
    }
    let prevouts: BTreeMap<OutPoint, TxOut> = shape
        .coins
        .iter()
        .map(|(_, o, u)| (*o, u.clone()))
        .collect();
    let tx = psbt.extract_tx_unchecked_fee_rate();
    let total = verify_reserves(&tx, &prevouts, &message)?;
    Ok((tx, total))
}

/// Verify a finalized proof of reserves for `message`. `prevouts` must hold the output
/// each coin input spends (the caller takes them from the chain, at the block it wants
/// the coins unspent at). Returns the total proven, in satoshis.
pub fn verify_reserves(
    tx: &Transaction,
    prevouts: &BTreeMap<OutPoint, TxOut>,
    message: &str,
) -> Result<u64, ReservesError> {
    never_valid_on_chain(tx, message)?;
    if !tx.input[0].script_sig.is_empty() || !tx.input[0].witness.is_empty() {
        return Err(ReservesError::CommitmentInputSigned);
    }
    if tx.input.len() < 2 {
        return Err(ReservesError::NoCoins);
    }
    let mut seen = BTreeSet::new();
    for txin in &tx.input {
        if !seen.insert(txin.previous_output) {
            return Err(ReservesError::DuplicateInput(txin.previous_output));
        }
    }
    let mut spent = Vec::with_capacity(tx.input.len());
    spent.push(commitment_prevout());
    for (i, txin) in tx.input.iter().enumerate().skip(1) {
        let outpoint = txin.previous_output;
        let out = prevouts
            .get(&outpoint)
            .ok_or(ReservesError::MissingPrevout { input: i, outpoint })?;
        spent.push(out.clone());
    }
    let total = checked_total(spent.iter().skip(1).map(|o| o.value.to_sat()))?;
    let serialized = bitcoin::consensus::encode::serialize(tx);
    let secp = Secp256k1::verification_only();
    for i in 1..tx.input.len() {
        check_input(tx, i, &spent, &serialized, &secp)?;
    }
    let [output] = tx.output.as_slice() else {
        return Err(ReservesError::OutputCount(tx.output.len()));
    };
    if output.value.to_sat() != total {
        return Err(ReservesError::OutputNotTotal {
            output_sat: output.value.to_sat(),
            coins_sat: total,
        });
    }
    Ok(total)
}

/// Input `i` of `tx` is satisfied and every signature in it is valid and `SIGHASH_ALL`.
fn check_input(
    tx: &Transaction,
    i: usize,
    spent: &[TxOut],
    serialized: &[u8],
    secp: &Secp256k1<bitcoin::secp256k1::VerifyOnly>,
) -> Result<(), ReservesError> {
    let txin = &tx.input[i];
    let outpoint = txin.previous_output;
    let prev = &spent[i];
    let interpreter = Interpreter::from_txdata(
        &prev.script_pubkey,
        &txin.script_sig,
        &txin.witness,
        txin.sequence,
        tx.lock_time,
    )
    .map_err(|e| ReservesError::Unreadable {
        input: i,
        outpoint,
        why: e.to_string(),
    })?;
    let prevouts = Prevouts::All(spent);
    let mut signatures = 0usize;
    for constraint in interpreter.iter(secp, tx, i, &prevouts) {
        let constraint = constraint.map_err(|e| ReservesError::BadSignature {
            input: i,
            outpoint,
            why: e.to_string(),
        })?;
        let key_sig = match constraint {
            SatisfiedConstraint::PublicKey { key_sig }
            | SatisfiedConstraint::PublicKeyHash { key_sig, .. } => key_sig,
            _ => continue,
        };
        let (all, sighash) = match key_sig {
            KeySigPair::Ecdsa(_, sig) => (
                sig.sighash_type == EcdsaSighashType::All,
                sig.sighash_type.to_string(),
            ),
            KeySigPair::Schnorr(_, sig) => (
                matches!(
                    sig.sighash_type,
                    TapSighashType::All | TapSighashType::Default
                ),
                sig.sighash_type.to_string(),
            ),
        };
        if !all {
            return Err(ReservesError::NotSighashAll {
                input: i,
                outpoint,
                sighash,
            });
        }
        signatures += 1;
    }
    if signatures == 0 {
        return Err(ReservesError::NoSignature { input: i, outpoint });
    }
    // Bitcoin Core's own script check, where the linked consensus library has the rules
    // (everything but witness version 1 and later).
    let core_knows = match prev.script_pubkey.witness_version() {
        Some(v) => v == WitnessVersion::V0,
        None => true,
    };
    if core_knows {
        bitcoin::consensus::verify_script(&prev.script_pubkey, i, prev.value, serialized).map_err(
            |e| ReservesError::BadSignature {
                input: i,
                outpoint,
                why: format!("Bitcoin Core's script check: {e}"),
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
