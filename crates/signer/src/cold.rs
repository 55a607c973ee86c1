//! The offline ceremony for the cold wallet: each key holder reviews a refill PSBT
//! ([`summarize`]), signs a copy of it ([`cold_sign`]), and the copies are combined and
//! finalized ([`finalize`]) into the transaction to broadcast.
//!
//! A cold key only moves coins between our own wallets: [`cold_sign`] refuses a PSBT
//! with any output that does not re-derive from one of our descriptors.

use crate::ours::{input_hints, output_hints, show, BadDescriptor, Masters, Wallets};
use crate::signer::Refusal;
use bitcoin::bip32::Xpriv;
use bitcoin::psbt::{Psbt, SigningKeys};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::sighash::{EcdsaSighashType, TapSighashType};
use bitcoin::{Network, OutPoint, Transaction, Txid};
use miniscript::psbt::PsbtExt;
use std::collections::BTreeSet;
use std::fmt;

/// Which of our descriptors, and which index, a script is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OursAt {
    /// Position in the descriptor list given.
    pub wallet: usize,
    pub descriptor: String,
    pub index: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLine {
    pub outpoint: OutPoint,
    /// From `witness_utxo`; `None` when the PSBT does not say.
    pub value_sat: Option<u64>,
    pub ours: Option<OursAt>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    pub vout: usize,
    pub address: String,
    pub amount_sat: u64,
    pub ours: Option<OursAt>,
}

/// What a PSBT does, for a person to check before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub txid: Txid,
    pub inputs: Vec<InputLine>,
    pub outputs: Vec<OutputLine>,
    /// `None` when an input amount is unknown or the outputs exceed the inputs.
    pub fee_sat: Option<u64>,
}

impl Summary {
    /// Whether every output pays one of our descriptors.
    pub fn all_outputs_ours(&self) -> bool {
        self.outputs.iter().all(|o| o.ours.is_some())
    }
}

fn ours_text(ours: &Option<OursAt>) -> String {
    match ours {
        Some(o) => format!("ours: wallet #{} index {}", o.wallet, o.index),
        None => "NOT OURS".into(),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "transaction {}", self.txid)?;
        writeln!(f, "inputs:")?;
        for i in &self.inputs {
            let value = match i.value_sat {
                Some(v) => format!("{v} sat"),
                None => "amount unknown".into(),
            };
            writeln!(f, "  {}  {value}  {}", i.outpoint, ours_text(&i.ours))?;
        }
        writeln!(f, "outputs:")?;
        for o in &self.outputs {
            writeln!(
                f,
                "  #{} {}  {} sat  {}",
                o.vout,
                o.address,
                o.amount_sat,
                ours_text(&o.ours)
            )?;
        }
        match self.fee_sat {
            Some(fee) => writeln!(f, "fee: {fee} sat"),
            None => writeln!(f, "fee: unknown"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ColdError {
    #[error("no PSBTs to finalize")]
    Empty,
    #[error("the PSBTs cannot be combined (not the same transaction?): {0}")]
    Combine(String),
    #[error("cannot finalize (not enough signatures?): {0}")]
    Finalize(String),
    #[error("the finalized transaction does not verify: {0}")]
    Extract(String),
}

/// Describe `psbt` against our descriptors.
pub fn summarize(
    psbt: &Psbt,
    our_descriptors: &[String],
    network: Network,
) -> Result<Summary, BadDescriptor> {
    let wallets = Wallets::parse(our_descriptors, network)?;
    let at = |found: Option<crate::ours::Found>| {
        found.map(|f| OursAt {
            wallet: f.wallet,
            descriptor: wallets.texts.get(f.wallet).cloned().unwrap_or_default(),
            index: f.index,
        })
    };
    let tx = &psbt.unsigned_tx;
    let mut inputs = Vec::new();
    for (i, txin) in tx.input.iter().enumerate() {
        let utxo = psbt.inputs.get(i).and_then(|p| p.witness_utxo.as_ref());
        let ours = match (utxo, psbt.inputs.get(i)) {
            (Some(u), Some(p)) => at(wallets.find(&u.script_pubkey, &input_hints(p), |_| true)),
            _ => None,
        };
        inputs.push(InputLine {
            outpoint: txin.previous_output,
            value_sat: utxo.map(|u| u.value.to_sat()),
            ours,
        });
    }
    let mut outputs = Vec::new();
    for (vout, o) in tx.output.iter().enumerate() {
        let ours = psbt
            .outputs
            .get(vout)
            .and_then(|p| wallets.find(&o.script_pubkey, &output_hints(p), |_| true));
        outputs.push(OutputLine {
            vout,
            address: show(&o.script_pubkey, network),
            amount_sat: o.value.to_sat(),
            ours: at(ours),
        });
    }
    let in_total = inputs
        .iter()
        .try_fold(0u64, |acc, i| acc.checked_add(i.value_sat?));
    let out_total = outputs
        .iter()
        .try_fold(0u64, |acc, o| acc.checked_add(o.amount_sat));
    let fee_sat = match (in_total, out_total) {
        (Some(i), Some(o)) => i.checked_sub(o),
        _ => None,
    };
    Ok(Summary {
        txid: tx.compute_txid(),
        inputs,
        outputs,
        fee_sat,
    })
}

/// Sign every input of `psbt` that `xprv` (a master key) has a key for, after checking
/// that every input and every output belongs to one of our descriptors. The inputs'
/// scripts and key origins are refilled from our descriptors first, and any signature
/// hash type other than ALL is refused. Returns the number of signatures added.
pub fn cold_sign(
    psbt: &mut Psbt,
    xprv: &Xpriv,
    our_descriptors: &[String],
    network: Network,
) -> Result<usize, Refusal> {
    let wallets =
        Wallets::parse(our_descriptors, network).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let tx = psbt.unsigned_tx.clone();
    if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
        return Err(Refusal::Malformed(
            "the PSBT's input or output maps do not match its transaction".into(),
        ));
    }
    let mut in_total = 0u64;
    let mut spent = BTreeSet::new();
    for (i, txin) in tx.input.iter().enumerate() {
        let op = txin.previous_output;
        if !spent.insert(op) {
            return Err(Refusal::DuplicateInput(op));
        }
        let input = &psbt.inputs[i];
        if let Some(t) = input.sighash_type {
            let all = t.ecdsa_hash_ty().is_ok_and(|e| e == EcdsaSighashType::All)
                || t.taproot_hash_ty()
                    .is_ok_and(|s| matches!(s, TapSighashType::All | TapSighashType::Default));
            if !all {
                return Err(Refusal::Malformed(format!(
                    "input {op} asks for signature hash type {t}; only ALL is signed"
                )));
            }
        }
        let utxo = input
            .witness_utxo
            .clone()
            .ok_or(Refusal::MissingWitnessUtxo(op))?;
        let found = wallets
            .find(&utxo.script_pubkey, &input_hints(input), |_| true)
            .ok_or(Refusal::InputNotOurs(op))?;
        in_total = in_total
            .checked_add(utxo.value.to_sat())
            .ok_or_else(|| Refusal::Malformed("input amounts overflow".into()))?;
        let input = &mut psbt.inputs[i];
        input.bip32_derivation.clear();
        input.tap_key_origins.clear();
        input.witness_script = None;
        input.redeem_script = None;
        psbt.update_input_with_descriptor(i, &found.definite)
            .map_err(|e| Refusal::Malformed(format!("input {op}: {e}")))?;
    }
    let mut out_total = 0u64;
    for (vout, o) in tx.output.iter().enumerate() {
        out_total = out_total
            .checked_add(o.value.to_sat())
            .ok_or_else(|| Refusal::Malformed("output amounts overflow".into()))?;
        if wallets
            .find(&o.script_pubkey, &output_hints(&psbt.outputs[vout]), |_| {
                true
            })
            .is_none()
        {
            return Err(Refusal::UnapprovedOutput {
                vout,
                to: show(&o.script_pubkey, network),
                amount_sat: o.value.to_sat(),
            });
        }
    }
    if out_total > in_total {
        return Err(Refusal::OutputsExceedInputs {
            inputs_sat: in_total,
            outputs_sat: out_total,
        });
    }
    let secp = Secp256k1::new();
    let used = psbt
        .sign(&Masters(vec![xprv]), &secp)
        .map_err(|(_, errors)| Refusal::Sign(format!("{errors:?}")))?;
    let added: usize = used
        .values()
        .map(|k| match k {
            SigningKeys::Ecdsa(v) => v.len(),
            SigningKeys::Schnorr(v) => v.len(),
        })
        .sum();
    if added == 0 {
        return Err(Refusal::Sign(
            "this key holds none of the keys the inputs need".into(),
        ));
    }
    Ok(added)
}

/// Combine signed copies of one PSBT, finalize it with miniscript and extract the
/// transaction (checking every signature).
pub fn finalize(psbts: &[Psbt]) -> Result<Transaction, ColdError> {
    let (first, rest) = psbts.split_first().ok_or(ColdError::Empty)?;
    let mut psbt = first.clone();
    for other in rest {
        psbt.combine(other.clone())
            .map_err(|e| ColdError::Combine(e.to_string()))?;
    }
    let secp = Secp256k1::verification_only();
    psbt.finalize_mut(&secp).map_err(|errors| {
        ColdError::Finalize(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    psbt.extract(&secp)
        .map_err(|e| ColdError::Extract(e.to_string()))
}
