//! The hot signer: signs a withdrawal only if it is exactly what the journal approved,
//! pays nobody else, and stays within the fee limits and the velocity caps.
//!
//! Nothing in the PSBT is trusted but the transaction itself, the amounts of the coins
//! it spends (`witness_utxo`, which a SegWit signature commits to) and the indexes its
//! key origins point at, which are only tried: every input and every unrequested output
//! must be re-derived from one of our descriptors. The PSBT that is signed is rebuilt
//! from our descriptors, so signature hash types, scripts or origins slipped into the
//! given PSBT are never used.

use crate::keyfile::HotKey;
use crate::ours::{input_hints, output_hints, show, BadDescriptor, Masters, Wallets};
use crate::policy::{Authorization, Policy};
use crate::reserves::ReservesSigned;
use crate::velocity::{Entry, VelocityError, VelocityLog, DAY_MS, HOUR_MS};
use bitcoin::bip32::Xpriv;
use bitcoin::psbt::{Psbt, SigningKeys};
use bitcoin::secp256k1::{All, Secp256k1};
use bitcoin::{Network, OutPoint, Transaction, Txid};
use miniscript::psbt::PsbtExt;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// A signed withdrawal, ready to broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub tx: Transaction,
    pub txid: Txid,
    pub fee_sat: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error(transparent)]
    Descriptor(#[from] BadDescriptor),
    #[error("extra key {index} is not for {hot}, the hot key's network")]
    KeyNetwork { index: usize, hot: Network },
    #[error("extra key {0} is not a master key (depth 0)")]
    NotMaster(usize),
    #[error(transparent)]
    Velocity(#[from] VelocityError),
}

/// Why the signer would not sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed PSBT: {0}")]
    Malformed(String),
    #[error("the transaction spends {0} twice")]
    DuplicateInput(OutPoint),
    #[error("the inputs are not the approved ones: not approved {unexpected:?}, approved but missing {missing:?}")]
    InputsMismatch {
        unexpected: Vec<OutPoint>,
        missing: Vec<OutPoint>,
    },
    #[error("input {0} has no witness_utxo, so its amount is unknown")]
    MissingWitnessUtxo(OutPoint),
    #[error("input {0} does not pay one of the descriptors this signer can spend")]
    InputNotOurs(OutPoint),
    #[error("the approved payment of {amount_sat} sat to {to} is not an output")]
    PaymentMissing { to: String, amount_sat: u64 },
    #[error("output {vout} pays {amount_sat} sat to {to}, which nobody approved and is not ours")]
    UnapprovedOutput {
        vout: usize,
        to: String,
        amount_sat: u64,
    },
    #[error("the outputs ({outputs_sat} sat) exceed the inputs ({inputs_sat} sat)")]
    OutputsExceedInputs { inputs_sat: u64, outputs_sat: u64 },
    #[error("fee {fee_sat} sat is above the limit of {max_sat} sat")]
    FeeTooHigh { fee_sat: u64, max_sat: u64 },
    #[error("fee rate of about {rate_sat_vb} sat/vB is above the limit of {max_sat_vb} sat/vB")]
    FeeRateTooHigh { rate_sat_vb: u64, max_sat_vb: u64 },
    #[error(
        "velocity: {outflow_sat} sat would leave within {window}, above the cap of {cap_sat} sat"
    )]
    VelocityCap {
        window: &'static str,
        outflow_sat: u64,
        cap_sat: u64,
    },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("signed, but the signature could not be recorded, so it is withheld: {0}")]
    Record(String),
    #[error("not a proof of reserves this key signs: {0}")]
    NotReserves(String),
}

/// The extra keys, erased when dropped.
pub(crate) struct Keys(pub(crate) Vec<Xpriv>);

impl Drop for Keys {
    fn drop(&mut self) {
        for k in &mut self.0 {
            k.private_key.non_secure_erase();
        }
    }
}

/// Check the extra keys (master keys of the hot key's network), parse our descriptors
/// (the hot descriptor added if missing) and find those whose every key is held.
pub(crate) fn key_ring(
    hot: &HotKey,
    our_descriptors: Vec<String>,
    extra: &Keys,
    secp: &Secp256k1<All>,
) -> Result<(Wallets, BTreeSet<usize>), SignerError> {
    let network = hot.network();
    for (i, k) in extra.0.iter().enumerate() {
        if k.network != network.into() {
            return Err(SignerError::KeyNetwork {
                index: i,
                hot: network,
            });
        }
        if k.depth != 0 {
            return Err(SignerError::NotMaster(i));
        }
    }
    let mut texts = our_descriptors;
    let hot_text = hot.descriptor();
    let canonical = |t: &String| {
        Wallets::parse(std::slice::from_ref(t), network)
            .ok()
            .and_then(|w| w.canonical(0))
    };
    let hot_canonical = canonical(&hot_text);
    let present = hot_canonical.is_some() && texts.iter().any(|t| canonical(t) == hot_canonical);
    if !present {
        texts.push(hot_text);
    }
    let wallets = Wallets::parse(&texts, network)?;
    let mut keys: Vec<&Xpriv> = vec![hot.master()];
    keys.extend(extra.0.iter());
    let spendable = (0..wallets.len())
        .filter(|w| wallets.held_by(*w, &keys, secp))
        .collect();
    Ok((wallets, spendable))
}

/// The hot signer (see the module documentation).
pub struct Signer {
    hot: HotKey,
    extra: Keys,
    network: Network,
    wallets: Wallets,
    /// Positions in `wallets` whose every key this signer holds.
    spendable: BTreeSet<usize>,
    policy: Policy,
    log: VelocityLog,
    secp: Secp256k1<All>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("hot", &self.hot)
            .field("extra_keys", &self.extra.0.len())
            .field("wallets", &self.wallets.texts)
            .field("spendable", &self.spendable)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Signer {
    /// A signer with the hot key, our registered descriptors (the hot descriptor is
    /// added if missing), extra master keys (say, the deposit wallet's), the policy and
    /// the velocity record at `velocity_path` (created if missing). It can spend the
    /// descriptors whose every key it holds.
    pub fn new(
        hot: HotKey,
        our_descriptors: Vec<String>,
        extra_keys: Vec<Xpriv>,
        policy: Policy,
        velocity_path: &Path,
    ) -> Result<Signer, SignerError> {
        let extra = Keys(extra_keys);
        let secp = Secp256k1::new();
        let (wallets, spendable) = key_ring(&hot, our_descriptors, &extra, &secp)?;
        let network = hot.network();
        let log = VelocityLog::open(velocity_path)?;
        Ok(Signer {
            hot,
            extra,
            network,
            wallets,
            spendable,
            policy,
            log,
            secp,
        })
    }

    /// Learn descriptors registered since the signer started (a cold wallet added by an
    /// operator, say): each one not known yet is parsed, checked like those given to
    /// [`Signer::new`] and added; it becomes spendable only if this signer holds every
    /// key. Returns how many were added. On an invalid descriptor nothing is added.
    pub fn learn(&mut self, descriptors: &[String]) -> Result<usize, SignerError> {
        let known: BTreeSet<String> = (0..self.wallets.len())
            .filter_map(|w| self.wallets.canonical(w))
            .collect();
        let fresh = Wallets::parse(descriptors, self.network)?;
        let new: Vec<String> = (0..fresh.len())
            .filter(|w| fresh.canonical(*w).is_none_or(|c| !known.contains(&c)))
            .filter_map(|w| fresh.texts.get(w).cloned())
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let mut texts = self.wallets.texts.clone();
        texts.extend(new.iter().cloned());
        let wallets = Wallets::parse(&texts, self.network)?;
        let mut keys: Vec<&Xpriv> = vec![self.hot.master()];
        keys.extend(self.extra.0.iter());
        let spendable = (0..wallets.len())
            .filter(|w| wallets.held_by(*w, &keys, &self.secp))
            .collect();
        self.wallets = wallets;
        self.spendable = spendable;
        Ok(new.len())
    }

    /// The descriptors this signer can spend.
    pub fn spendable_descriptors(&self) -> Vec<&str> {
        self.spendable
            .iter()
            .filter_map(|w| self.wallets.texts.get(*w).map(String::as_str))
            .collect()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Outflow recorded within the last hour and the last 24 hours before `now_ms`.
    pub fn outflow(&self, now_ms: u64) -> (u64, u64) {
        (
            self.log.outflow_within(now_ms, HOUR_MS),
            self.log.outflow_within(now_ms, DAY_MS),
        )
    }

    /// Sign `psbt` if it is exactly what `auth` approved and within the policy; record
    /// the outflow (flushed to disk) before returning the transaction.
    pub fn sign(
        &mut self,
        psbt: &Psbt,
        auth: &Authorization,
        now_ms: u64,
    ) -> Result<SignedTx, Refusal> {
        let tx = &psbt.unsigned_tx;
        if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
            return Err(Refusal::Malformed(
                "the PSBT's input or output maps do not match its transaction".into(),
            ));
        }
        if tx.input.is_empty() || tx.output.is_empty() {
            return Err(Refusal::Malformed("no inputs or no outputs".into()));
        }

        // (a) exactly the approved inputs.
        let mut spent = BTreeSet::new();
        for txin in &tx.input {
            if !spent.insert(txin.previous_output) {
                return Err(Refusal::DuplicateInput(txin.previous_output));
            }
        }
        let approved: BTreeSet<OutPoint> = auth.inputs.iter().copied().collect();
        if spent != approved {
            return Err(Refusal::InputsMismatch {
                unexpected: spent.difference(&approved).copied().collect(),
                missing: approved.difference(&spent).copied().collect(),
            });
        }

        // (b) every input is ours, re-derived.
        let mut clean =
            Psbt::from_unsigned_tx(tx.clone()).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let mut in_total = 0u64;
        for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
            let op = txin.previous_output;
            let utxo = input
                .witness_utxo
                .as_ref()
                .ok_or(Refusal::MissingWitnessUtxo(op))?;
            let found = self
                .wallets
                .find(&utxo.script_pubkey, &input_hints(input), |w| {
                    self.spendable.contains(&w)
                })
                .ok_or(Refusal::InputNotOurs(op))?;
            in_total = in_total
                .checked_add(utxo.value.to_sat())
                .ok_or_else(|| Refusal::Malformed("input amounts overflow".into()))?;
            clean.inputs[i].witness_utxo = Some(utxo.clone());
            clean
                .update_input_with_descriptor(i, &found.definite)
                .map_err(|e| Refusal::Malformed(format!("input {op}: {e}")))?;
        }

        // (c) the approved payments, once each; every other output ours.
        let mut matched = vec![false; tx.output.len()];
        let mut outflow = 0u64;
        for p in &auth.payments {
            let vout = tx
                .output
                .iter()
                .enumerate()
                .position(|(v, o)| {
                    !matched[v]
                        && o.script_pubkey == p.script_pubkey
                        && o.value.to_sat() == p.amount_sat
                })
                .ok_or_else(|| Refusal::PaymentMissing {
                    to: show(&p.script_pubkey, self.network),
                    amount_sat: p.amount_sat,
                })?;
            matched[vout] = true;
            let internal = self
                .wallets
                .find(&p.script_pubkey, &output_hints(&psbt.outputs[vout]), |_| {
                    true
                })
                .is_some();
            if !internal {
                outflow = outflow.saturating_add(p.amount_sat);
            }
        }
        let mut out_total = 0u64;
        for (vout, o) in tx.output.iter().enumerate() {
            out_total = out_total
                .checked_add(o.value.to_sat())
                .ok_or_else(|| Refusal::Malformed("output amounts overflow".into()))?;
            if matched[vout] {
                continue;
            }
            let found = self
                .wallets
                .find(&o.script_pubkey, &output_hints(&psbt.outputs[vout]), |_| {
                    true
                })
                .ok_or_else(|| Refusal::UnapprovedOutput {
                    vout,
                    to: show(&o.script_pubkey, self.network),
                    amount_sat: o.value.to_sat(),
                })?;
            clean
                .update_output_with_descriptor(vout, &found.definite)
                .map_err(|e| Refusal::Malformed(format!("output {vout}: {e}")))?;
        }

        // (d) the fee.
        let fee_sat = in_total
            .checked_sub(out_total)
            .ok_or(Refusal::OutputsExceedInputs {
                inputs_sat: in_total,
                outputs_sat: out_total,
            })?;
        if fee_sat > self.policy.max_fee_sat {
            return Err(Refusal::FeeTooHigh {
                fee_sat,
                max_sat: self.policy.max_fee_sat,
            });
        }

        // (e) velocity: what this batch adds beyond what it already counted.
        let added = outflow.saturating_sub(self.log.counted_for(auth.batch));
        if added > 0 {
            for (window, span, cap) in [
                ("an hour", HOUR_MS, self.policy.hourly_cap_sat),
                ("24 hours", DAY_MS, self.policy.daily_cap_sat),
            ] {
                let total = self.log.outflow_within(now_ms, span).saturating_add(added);
                if total > cap {
                    return Err(Refusal::VelocityCap {
                        window,
                        outflow_sat: total,
                        cap_sat: cap,
                    });
                }
            }
        }

        let signed = self.sign_clean(clean)?;
        // The fee rate on the signed size, compared without division.
        let vsize = signed.vsize() as u64;
        if fee_sat > self.policy.max_fee_rate_sat_vb.saturating_mul(vsize) {
            return Err(Refusal::FeeRateTooHigh {
                rate_sat_vb: fee_sat.div_ceil(vsize.max(1)),
                max_sat_vb: self.policy.max_fee_rate_sat_vb,
            });
        }
        self.log
            .append(Entry {
                time_ms: now_ms,
                batch: auth.batch,
                amount_sat: added,
            })
            .map_err(|e| Refusal::Record(e.to_string()))?;
        let txid = signed.compute_txid();
        Ok(SignedTx {
            tx: signed,
            txid,
            fee_sat,
        })
    }

    /// Sign the inputs of a proof of reserves for `message` that this signer can spend
    /// (hot and deposit coins), after checking it is exactly one (see
    /// [`crate::reserves`]). Nothing leaves our wallets, so no cap is consulted and
    /// nothing is recorded.
    pub fn sign_reserves(&self, psbt: &Psbt, message: &str) -> Result<ReservesSigned, Refusal> {
        let mut keys: Vec<&Xpriv> = vec![self.hot.master()];
        keys.extend(self.extra.0.iter());
        crate::reserves::sign_with(
            &keys,
            &self.wallets,
            &self.spendable,
            &self.secp,
            psbt,
            message,
        )
    }

    fn sign_clean(&self, mut psbt: Psbt) -> Result<Transaction, Refusal> {
        let mut keys: Vec<&Xpriv> = vec![self.hot.master()];
        keys.extend(self.extra.0.iter());
        let signed = psbt
            .sign(&Masters(keys), &self.secp)
            .map_err(|(_, errors)| Refusal::Sign(format!("{errors:?}")))?;
        let has_sig = |i: &usize| match signed.get(i) {
            Some(SigningKeys::Ecdsa(v)) => !v.is_empty(),
            Some(SigningKeys::Schnorr(v)) => !v.is_empty(),
            None => false,
        };
        if let Some(i) = (0..psbt.inputs.len()).find(|i| !has_sig(i)) {
            return Err(Refusal::Sign(format!("input {i} got no signature")));
        }
        psbt.finalize_mut(&self.secp).map_err(|errors| {
            Refusal::Sign(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        psbt.extract(&self.secp)
            .map_err(|e| Refusal::Sign(e.to_string()))
    }
}
