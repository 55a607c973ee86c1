//! Withdrawal transactions as unsigned PSBTs (BIP-174), ready for a signer.
//!
//! Everything here is deterministic: the same coins, payments, change target and fee
//! rate give the same PSBT, byte for byte.
//!
//! - Coins are chosen largest first (ties by outpoint) until the payments and the fee
//!   are covered.
//! - The fee is the rate times an upper bound of the signed virtual size, computed from
//!   each input descriptor's largest satisfaction (miniscript), so the signed
//!   transaction never pays less than the rate asked for.
//! - Outputs are the payments in the order given, then the change, if it is at least
//!   [`DUST_SAT`]; smaller change is left to the fee.
//! - Version 2, lock time 0, every input signals replaceability (BIP-125), so a stuck
//!   withdrawal can be bumped ([`bump_psbt`]) or cancelled ([`cancel_psbt`]).
//! - Every input carries its `witness_utxo` and the key origins of its descriptor; the
//!   change output carries its key origins, so a signer can check it is ours.

use bitcoin::absolute::LockTime;
use bitcoin::psbt::Psbt;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Network, NetworkKind, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
};
use miniscript::descriptor::{DefiniteDescriptorKey, Descriptor, DescriptorPublicKey};
use miniscript::psbt::PsbtExt;
use miniscript::ForEachKey;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// No output is made below this many satoshis: Bitcoin Core's dust limit for the
/// largest standard output (P2PKH), so above the limit of every output kind.
pub const DUST_SAT: u64 = 546;

/// One of our confirmed coins, with the registered descriptor and index that pay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendableCoin {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    /// The registered public descriptor's text.
    pub descriptor: String,
    pub index: u32,
}

/// An amount to pay to a script.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Payment {
    pub script_pubkey: ScriptBuf,
    pub amount_sat: u64,
}

/// Where change goes: one of our descriptors at a fresh index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeTarget {
    pub descriptor: String,
    pub index: u32,
}

/// An unsigned transaction and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPsbt {
    pub psbt: Psbt,
    /// The coins spent, in input order.
    pub inputs: Vec<OutPoint>,
    pub fee_sat: u64,
    /// The value of the output to our own descriptor (change, or everything in a
    /// cancellation); 0 when there is no such output.
    pub change_sat: u64,
    /// The txid the signed transaction will have (SegWit: signatures do not change it).
    pub txid: Txid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("nothing to pay: a withdrawal needs at least one payment")]
    NoPayments,
    #[error("payment {index} of {amount_sat} sat is below the dust limit of {DUST_SAT} sat")]
    DustPayment { index: usize, amount_sat: u64 },
    #[error("insufficient funds: needs {needed_sat} sat (payments and fee), {available_sat} sat available")]
    InsufficientFunds { needed_sat: u64, available_sat: u64 },
    #[error("the fee rate must be at least 1 sat/vB")]
    ZeroFeeRate,
    #[error("descriptor {descriptor:?} at index {index}: {why}")]
    Descriptor {
        descriptor: String,
        index: u32,
        why: String,
    },
    #[error("coin {0} is given twice")]
    DuplicateCoin(OutPoint),
    #[error("the transaction spends {0}, which is not among the coins given")]
    UnknownInput(OutPoint),
    #[error("the transaction has no output to the change target, so it has no change to reduce")]
    NoChange,
    #[error("the change of {change_sat} sat cannot absorb a fee increase of {increase_sat} sat")]
    ChangeTooSmall { change_sat: u64, increase_sat: u64 },
    #[error("the outputs ({outputs_sat} sat) exceed the coins spent ({inputs_sat} sat)")]
    OutputsExceedInputs { inputs_sat: u64, outputs_sat: u64 },
    #[error("amounts overflow")]
    Overflow,
    #[error("cannot fill the PSBT: {0}")]
    Psbt(String),
}

/// Build an unsigned withdrawal paying `payments` from `coins` (see the module
/// documentation for the rules).
pub fn build_psbt(
    coins: &[SpendableCoin],
    payments: &[Payment],
    change: &ChangeTarget,
    fee_rate_sat_vb: u64,
    network: Network,
) -> Result<BuiltPsbt, BuildError> {
    check_payments(payments)?;
    if fee_rate_sat_vb == 0 {
        return Err(BuildError::ZeroFeeRate);
    }
    let mut cache = Descriptors::new(network);
    let mut seen = BTreeSet::new();
    for c in coins {
        if !seen.insert(c.outpoint) {
            return Err(BuildError::DuplicateCoin(c.outpoint));
        }
    }
    let mut sorted: Vec<&SpendableCoin> = coins.iter().collect();
    sorted.sort_by(|a, b| {
        b.value_sat
            .cmp(&a.value_sat)
            .then(a.outpoint.cmp(&b.outpoint))
    });
    let change_desc = cache.definite(&change.descriptor, change.index)?;
    let change_script = change_desc.script_pubkey();
    let pay_total = sum(payments.iter().map(|p| p.amount_sat))?;
    let outputs: Vec<TxOut> = payments
        .iter()
        .map(|p| TxOut {
            value: Amount::from_sat(p.amount_sat),
            script_pubkey: p.script_pubkey.clone(),
        })
        .collect();

    let mut selected: Vec<Input> = Vec::new();
    let mut total: u64 = 0;
    for coin in sorted {
        selected.push(cache.input(coin)?);
        total = total
            .checked_add(coin.value_sat)
            .ok_or(BuildError::Overflow)?;
        let fee_bare = fee_for(&selected, &outputs, fee_rate_sat_vb)?;
        if total < pay_total.saturating_add(fee_bare) {
            continue;
        }
        let mut with_change = outputs.clone();
        with_change.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: change_script.clone(),
        });
        let fee_change = fee_for(&selected, &with_change, fee_rate_sat_vb)?;
        let change_sat = total
            .checked_sub(pay_total)
            .and_then(|r| r.checked_sub(fee_change))
            .unwrap_or(0);
        if change_sat >= DUST_SAT {
            let vout = with_change.len() - 1;
            with_change[vout].value = Amount::from_sat(change_sat);
            return finish(
                &selected,
                with_change,
                Some((vout, &change_desc)),
                change_sat,
            );
        }
        return finish(&selected, outputs, None, 0);
    }
    let all: Vec<Input> = coins
        .iter()
        .map(|c| cache.input(c))
        .collect::<Result<_, _>>()?;
    let fee_all = fee_for(&all, &outputs, fee_rate_sat_vb)?;
    Err(BuildError::InsufficientFunds {
        needed_sat: pay_total.saturating_add(fee_all),
        available_sat: total,
    })
}

/// Build again, exactly, a withdrawal whose shape is on record: these inputs in this
/// order, these payments in this order, then the change (if any) to `change`, with a
/// fee of `fee_sat` — the layout [`build_psbt`] and [`bump_psbt`] produce. A node that
/// stopped after journaling a batch but before keeping its signed transaction rebuilds
/// it from the books with this; the caller checks the txid against the record before
/// anything is signed.
pub fn rebuild_psbt(
    inputs: &[SpendableCoin],
    payments: &[Payment],
    change: Option<&ChangeTarget>,
    fee_sat: u64,
    network: Network,
) -> Result<BuiltPsbt, BuildError> {
    check_payments(payments)?;
    let mut cache = Descriptors::new(network);
    let mut seen = BTreeSet::new();
    let mut selected = Vec::with_capacity(inputs.len());
    for c in inputs {
        if !seen.insert(c.outpoint) {
            return Err(BuildError::DuplicateCoin(c.outpoint));
        }
        selected.push(cache.input(c)?);
    }
    let in_total = sum(inputs.iter().map(|c| c.value_sat))?;
    let pay_total = sum(payments.iter().map(|p| p.amount_sat))?;
    let rest = in_total
        .checked_sub(pay_total)
        .and_then(|r| r.checked_sub(fee_sat))
        .ok_or(BuildError::InsufficientFunds {
            needed_sat: pay_total.saturating_add(fee_sat),
            available_sat: in_total,
        })?;
    let mut outputs: Vec<TxOut> = payments
        .iter()
        .map(|p| TxOut {
            value: Amount::from_sat(p.amount_sat),
            script_pubkey: p.script_pubkey.clone(),
        })
        .collect();
    match change {
        Some(change) if rest >= DUST_SAT => {
            let desc = cache.definite(&change.descriptor, change.index)?;
            outputs.push(TxOut {
                value: Amount::from_sat(rest),
                script_pubkey: desc.script_pubkey(),
            });
            let vout = outputs.len() - 1;
            finish(&selected, outputs, Some((vout, &desc)), rest)
        }
        None if rest == 0 => finish(&selected, outputs, None, 0),
        _ => Err(BuildError::Psbt(format!(
            "the recorded fee of {fee_sat} sat leaves {rest} sat, which does not match the \
             recorded change ({})",
            if change.is_some() { "some" } else { "none" }
        ))),
    }
}

/// Replace `original` (BIP-125) with a higher fee: the same inputs, exactly; the same
/// payments; the change (the output paying `change`) reduced by the fee increase.
///
/// `coins` must hold every coin `original` spends (it may hold more; they are not
/// added). The new fee is the larger of `new_fee_rate_sat_vb` times the estimated size
/// and the old fee plus 1 sat/vB (the least a node accepts as a replacement). Change
/// that would fall below [`DUST_SAT`] is dropped into the fee; change that cannot cover
/// the increase is an error ([`BuildError::ChangeTooSmall`]), never a new input.
pub fn bump_psbt(
    original: &Psbt,
    coins: &[SpendableCoin],
    change: &ChangeTarget,
    new_fee_rate_sat_vb: u64,
    network: Network,
) -> Result<BuiltPsbt, BuildError> {
    if new_fee_rate_sat_vb == 0 {
        return Err(BuildError::ZeroFeeRate);
    }
    let mut cache = Descriptors::new(network);
    let (inputs, in_total) = same_inputs(original, coins, &mut cache)?;
    let change_desc = cache.definite(&change.descriptor, change.index)?;
    let change_script = change_desc.script_pubkey();
    let outs = &original.unsigned_tx.output;
    let change_vout = outs
        .iter()
        .position(|o| o.script_pubkey == change_script)
        .ok_or(BuildError::NoChange)?;
    let old_fee = old_fee(outs, in_total)?;
    let old_change = outs[change_vout].value.to_sat();
    let mut outputs: Vec<TxOut> = outs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != change_vout)
        .map(|(_, o)| o.clone())
        .collect();
    outputs.push(TxOut {
        value: Amount::from_sat(old_change),
        script_pubkey: change_script,
    });
    let new_fee = replacement_fee(&inputs, &outputs, new_fee_rate_sat_vb, old_fee)?;
    let increase = new_fee - old_fee;
    if old_change < increase {
        return Err(BuildError::ChangeTooSmall {
            change_sat: old_change,
            increase_sat: increase,
        });
    }
    let new_change = old_change - increase;
    let vout = outputs.len() - 1;
    if new_change < DUST_SAT {
        outputs.pop();
        return finish(&inputs, outputs, None, 0);
    }
    outputs[vout].value = Amount::from_sat(new_change);
    finish(&inputs, outputs, Some((vout, &change_desc)), new_change)
}

/// Replace `original` with a transaction that spends exactly the same inputs and pays
/// everything, less a higher fee, to our own descriptor `to`: once it confirms, none of
/// the original payments can.
///
/// The fee is the larger of `fee_rate_sat_vb` times the estimated size and the old fee
/// plus 1 sat/vB. `coins` must hold every coin `original` spends.
pub fn cancel_psbt(
    original: &Psbt,
    coins: &[SpendableCoin],
    to: &ChangeTarget,
    fee_rate_sat_vb: u64,
    network: Network,
) -> Result<BuiltPsbt, BuildError> {
    if fee_rate_sat_vb == 0 {
        return Err(BuildError::ZeroFeeRate);
    }
    let mut cache = Descriptors::new(network);
    let (inputs, in_total) = same_inputs(original, coins, &mut cache)?;
    let old_fee = old_fee(&original.unsigned_tx.output, in_total)?;
    let to_desc = cache.definite(&to.descriptor, to.index)?;
    let outputs = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: to_desc.script_pubkey(),
    }];
    let fee = replacement_fee(&inputs, &outputs, fee_rate_sat_vb, old_fee)?;
    let back = in_total.saturating_sub(fee);
    if back < DUST_SAT {
        return Err(BuildError::InsufficientFunds {
            needed_sat: fee.saturating_add(DUST_SAT),
            available_sat: in_total,
        });
    }
    let mut outputs = outputs;
    outputs[0].value = Amount::from_sat(back);
    finish(&inputs, outputs, Some((0, &to_desc)), back)
}

/// Fill the key origins of output `vout` from one of our descriptors, after checking
/// that the output pays it. Use it for a payment to ourselves (a refill of the hot
/// wallet from cold storage), so a signer can see that the output is ours.
pub fn describe_output(
    psbt: &mut Psbt,
    vout: usize,
    target: &ChangeTarget,
    network: Network,
) -> Result<(), BuildError> {
    let desc = Descriptors::new(network).definite(&target.descriptor, target.index)?;
    psbt.update_output_with_descriptor(vout, &desc)
        .map_err(|e| BuildError::Psbt(format!("output {vout}: {e}")))
}

fn check_payments(payments: &[Payment]) -> Result<(), BuildError> {
    if payments.is_empty() {
        return Err(BuildError::NoPayments);
    }
    for (index, p) in payments.iter().enumerate() {
        if p.amount_sat < DUST_SAT {
            return Err(BuildError::DustPayment {
                index,
                amount_sat: p.amount_sat,
            });
        }
    }
    Ok(())
}

fn sum(mut values: impl Iterator<Item = u64>) -> Result<u64, BuildError> {
    values.try_fold(0u64, |acc, v| {
        acc.checked_add(v).ok_or(BuildError::Overflow)
    })
}

fn old_fee(outputs: &[TxOut], in_total: u64) -> Result<u64, BuildError> {
    let out_total = sum(outputs.iter().map(|o| o.value.to_sat()))?;
    in_total
        .checked_sub(out_total)
        .ok_or(BuildError::OutputsExceedInputs {
            inputs_sat: in_total,
            outputs_sat: out_total,
        })
}

/// The original's inputs, in order, resolved from `coins`.
fn same_inputs(
    original: &Psbt,
    coins: &[SpendableCoin],
    cache: &mut Descriptors,
) -> Result<(Vec<Input>, u64), BuildError> {
    let by_outpoint: BTreeMap<OutPoint, &SpendableCoin> =
        coins.iter().map(|c| (c.outpoint, c)).collect();
    let mut inputs = Vec::new();
    let mut total = 0u64;
    for txin in &original.unsigned_tx.input {
        let coin = by_outpoint
            .get(&txin.previous_output)
            .ok_or(BuildError::UnknownInput(txin.previous_output))?;
        inputs.push(cache.input(coin)?);
        total = total
            .checked_add(coin.value_sat)
            .ok_or(BuildError::Overflow)?;
    }
    Ok((inputs, total))
}

/// The fee of a replacement: the rate asked for, and at least 1 sat/vB more than the
/// transaction it replaces paid in total (BIP-125 rule 4).
fn replacement_fee(
    inputs: &[Input],
    outputs: &[TxOut],
    rate: u64,
    old_fee: u64,
) -> Result<u64, BuildError> {
    let vsize = estimate_vsize(inputs, outputs);
    let at_rate = rate.checked_mul(vsize).ok_or(BuildError::Overflow)?;
    let at_least = old_fee.checked_add(vsize).ok_or(BuildError::Overflow)?;
    Ok(at_rate.max(at_least))
}

/// A coin resolved to its definite descriptor.
pub(crate) struct Input {
    pub(crate) outpoint: OutPoint,
    pub(crate) value_sat: u64,
    pub(crate) descriptor: Descriptor<DefiniteDescriptorKey>,
    /// Witness bytes added by the largest satisfaction (without the stack count).
    satisfaction_weight: u64,
}

/// Descriptors parsed once per call, checked against the network.
pub(crate) struct Descriptors {
    network: NetworkKind,
    parsed: BTreeMap<String, Descriptor<DescriptorPublicKey>>,
}

impl Descriptors {
    pub(crate) fn new(network: Network) -> Descriptors {
        Descriptors {
            network: network.into(),
            parsed: BTreeMap::new(),
        }
    }

    fn definite(
        &mut self,
        text: &str,
        index: u32,
    ) -> Result<Descriptor<DefiniteDescriptorKey>, BuildError> {
        let err = |why: String| BuildError::Descriptor {
            descriptor: text.to_string(),
            index,
            why,
        };
        if !self.parsed.contains_key(text) {
            // The registry's checks first: SegWit only, no secrets.
            crate::wallet::parse_descriptor(text).map_err(|e| err(e.to_string()))?;
            let d = Descriptor::<DescriptorPublicKey>::from_str(text)
                .map_err(|e| err(e.to_string()))?;
            let network = self.network;
            let wrong_network = d.for_any_key(|k| match k {
                DescriptorPublicKey::XPub(x) => x.xkey.network != network,
                DescriptorPublicKey::MultiXPub(x) => x.xkey.network != network,
                DescriptorPublicKey::Single(_) => false,
            });
            if wrong_network {
                return Err(err(format!("its extended keys are not for {network:?}")));
            }
            self.parsed.insert(text.to_string(), d);
        }
        let Some(d) = self.parsed.get(text) else {
            return Err(err("not parsed".into()));
        };
        d.at_derivation_index(index).map_err(|e| err(e.to_string()))
    }

    pub(crate) fn input(&mut self, coin: &SpendableCoin) -> Result<Input, BuildError> {
        let descriptor = self.definite(&coin.descriptor, coin.index)?;
        let satisfaction_weight = descriptor
            .max_weight_to_satisfy()
            .map_err(|e| BuildError::Descriptor {
                descriptor: coin.descriptor.clone(),
                index: coin.index,
                why: e.to_string(),
            })?
            .to_wu();
        Ok(Input {
            outpoint: coin.outpoint,
            value_sat: coin.value_sat,
            descriptor,
            satisfaction_weight,
        })
    }
}

fn unsigned_tx(inputs: &[Input], outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.outpoint,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            })
            .collect(),
        output: outputs,
    }
}

/// An upper bound of the signed transaction's virtual size.
fn estimate_vsize(inputs: &[Input], outputs: &[TxOut]) -> u64 {
    let tx = unsigned_tx(inputs, outputs.to_vec());
    // Without witnesses `weight()` is four times the stripped size; signing adds the
    // SegWit marker and flag, and per input a stack count and the satisfaction.
    let witness: u64 = inputs.iter().map(|i| 1 + i.satisfaction_weight).sum();
    let weight = tx.weight().to_wu() + 2 + witness;
    weight.div_ceil(4)
}

fn fee_for(inputs: &[Input], outputs: &[TxOut], rate: u64) -> Result<u64, BuildError> {
    rate.checked_mul(estimate_vsize(inputs, outputs))
        .ok_or(BuildError::Overflow)
}

fn finish(
    inputs: &[Input],
    outputs: Vec<TxOut>,
    change: Option<(usize, &Descriptor<DefiniteDescriptorKey>)>,
    change_sat: u64,
) -> Result<BuiltPsbt, BuildError> {
    let in_total = sum(inputs.iter().map(|i| i.value_sat))?;
    let fee_sat = old_fee(&outputs, in_total)?;
    let tx = unsigned_tx(inputs, outputs);
    let txid = tx.compute_txid();
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| BuildError::Psbt(e.to_string()))?;
    for (i, input) in inputs.iter().enumerate() {
        psbt.inputs[i].witness_utxo = Some(TxOut {
            value: Amount::from_sat(input.value_sat),
            script_pubkey: input.descriptor.script_pubkey(),
        });
        psbt.update_input_with_descriptor(i, &input.descriptor)
            .map_err(|e| BuildError::Psbt(format!("input {i}: {e}")))?;
    }
    if let Some((vout, desc)) = change {
        psbt.update_output_with_descriptor(vout, desc)
            .map_err(|e| BuildError::Psbt(format!("output {vout}: {e}")))?;
    }
    Ok(BuiltPsbt {
        psbt,
        inputs: inputs.iter().map(|i| i.outpoint).collect(),
        fee_sat,
        change_sat,
        txid,
    })
}
