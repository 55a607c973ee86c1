//! Signing a proof of reserves: a BIP-127 transaction (see `kura_custody::reserves`)
//! whose first input spends the commitment of a message, so it can never be valid on
//! chain, and whose other inputs are our coins, each signed `SIGHASH_ALL`.
//!
//! A key signs one only after `kura_custody::reserves::check_reserves_psbt` accepted it
//! for exactly the message given (the hot signer) or the message the PSBT carries and the
//! holder is shown (a cold key): the commitment input, no signature hash type but ALL,
//! one `OP_RETURN` output worth exactly the coins. Every coin must re-derive from one of
//! our descriptors; the inputs a key signs are refilled from our descriptors first, so
//! no script, key origin or signature hash type slipped into the PSBT is used. Anything
//! else is refused with nothing signed.

use crate::keyfile::HotKey;
use crate::ours::{input_hints, Masters, Wallets};
use crate::signer::{key_ring, Keys, Refusal, SignerError};
use bitcoin::bip32::Xpriv;
use bitcoin::psbt::{Psbt, SigningKeys};
use bitcoin::secp256k1::{All, Secp256k1};
use bitcoin::{Network, OutPoint};
use kura_custody::reserves::{check_reserves_psbt, psbt_message, ReservesError, ReservesShape};
use miniscript::psbt::PsbtExt;
use std::collections::BTreeSet;
use std::fmt;

/// A proof-of-reserves PSBT after one signer's turn.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservesSigned {
    pub psbt: Psbt,
    pub message: String,
    pub total_sat: u64,
    /// The coins this signer signed.
    pub signed: Vec<OutPoint>,
    /// The coins left to other keys (the cold wallet's holders).
    pub others: Vec<OutPoint>,
}

impl ReservesSigned {
    /// Whether this signer signed every coin, so the PSBT can be finalized at once.
    pub fn complete(&self) -> bool {
        self.others.is_empty()
    }
}

fn not_reserves(e: ReservesError) -> Refusal {
    Refusal::NotReserves(e.to_string())
}

/// The hot key and the deposit wallet's key, for signing proofs of reserves only: unlike
/// [`crate::Signer`] it keeps no velocity record (a proof moves nothing), so it can run
/// beside a running node's signer.
pub struct ReservesSigner {
    hot: HotKey,
    extra: Keys,
    wallets: Wallets,
    spendable: BTreeSet<usize>,
    secp: Secp256k1<All>,
}

impl fmt::Debug for ReservesSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReservesSigner")
            .field("hot", &self.hot)
            .field("extra_keys", &self.extra.0.len())
            .field("wallets", &self.wallets.texts)
            .field("spendable", &self.spendable)
            .finish()
    }
}

impl ReservesSigner {
    /// The same keys and descriptors as [`crate::Signer::new`] takes.
    pub fn new(
        hot: HotKey,
        our_descriptors: Vec<String>,
        extra_keys: Vec<Xpriv>,
    ) -> Result<ReservesSigner, SignerError> {
        let extra = Keys(extra_keys);
        let secp = Secp256k1::new();
        let (wallets, spendable) = key_ring(&hot, our_descriptors, &extra, &secp)?;
        Ok(ReservesSigner {
            hot,
            extra,
            wallets,
            spendable,
            secp,
        })
    }

    /// The descriptors whose coins this signer signs.
    pub fn spendable_descriptors(&self) -> Vec<&str> {
        self.spendable
            .iter()
            .filter_map(|w| self.wallets.texts.get(*w).map(String::as_str))
            .collect()
    }

    /// See [`crate::Signer::sign_reserves`].
    pub fn sign_reserves(&self, psbt: &Psbt, message: &str) -> Result<ReservesSigned, Refusal> {
        let mut keys: Vec<&Xpriv> = vec![self.hot.master()];
        keys.extend(self.extra.0.iter());
        sign_with(
            &keys,
            &self.wallets,
            &self.spendable,
            &self.secp,
            psbt,
            message,
        )
    }
}

/// Check `psbt` is a proof of reserves for `message` whose every coin is ours, refill
/// the inputs `keys` can sign from our descriptors and sign them.
pub(crate) fn sign_with(
    keys: &[&Xpriv],
    wallets: &Wallets,
    spendable: &BTreeSet<usize>,
    secp: &Secp256k1<All>,
    psbt: &Psbt,
    message: &str,
) -> Result<ReservesSigned, Refusal> {
    let shape = check_reserves_psbt(psbt, message).map_err(not_reserves)?;
    let mut clean = psbt.clone();
    let mut signed = Vec::new();
    let mut others = Vec::new();
    for (i, outpoint, utxo) in &shape.coins {
        let input = &psbt.inputs[*i];
        let hints = input_hints(input);
        if let Some(found) = wallets.find(&utxo.script_pubkey, &hints, |w| spendable.contains(&w)) {
            let input = &mut clean.inputs[*i];
            input.partial_sigs.clear();
            input.tap_key_sig = None;
            input.tap_script_sigs.clear();
            input.bip32_derivation.clear();
            input.tap_key_origins.clear();
            input.witness_script = None;
            input.redeem_script = None;
            input.sighash_type = None;
            clean
                .update_input_with_descriptor(*i, &found.definite)
                .map_err(|e| Refusal::Malformed(format!("input {outpoint}: {e}")))?;
            signed.push((*i, *outpoint));
        } else if wallets
            .find(&utxo.script_pubkey, &hints, |_| true)
            .is_some()
        {
            others.push(*outpoint);
        } else {
            return Err(Refusal::InputNotOurs(*outpoint));
        }
    }
    if signed.is_empty() {
        return Err(Refusal::Sign(
            "no coin of the proof belongs to a wallet this signer holds".into(),
        ));
    }
    let used = clean
        .sign(&Masters(keys.to_vec()), secp)
        .map_err(|(_, errors)| Refusal::Sign(format!("{errors:?}")))?;
    for (i, outpoint) in &signed {
        let has = match used.get(i) {
            Some(SigningKeys::Ecdsa(v)) => !v.is_empty(),
            Some(SigningKeys::Schnorr(v)) => !v.is_empty(),
            None => false,
        };
        if !has {
            return Err(Refusal::Sign(format!("input {outpoint} got no signature")));
        }
    }
    Ok(ReservesSigned {
        psbt: clean,
        message: shape.message,
        total_sat: shape.total_sat,
        signed: signed.into_iter().map(|(_, o)| o).collect(),
        others,
    })
}

/// A cold key's turn on a proof of reserves: the PSBT's own commitment message is
/// checked against its first input (the caller shows it to the holder), every coin must
/// be ours, and every coin input is refilled from our descriptors before `xprv` (a
/// master key) adds its signatures. Returns the number of signatures added and what the
/// proof says.
pub fn cold_sign_reserves(
    psbt: &mut Psbt,
    xprv: &Xpriv,
    our_descriptors: &[String],
    network: Network,
) -> Result<(usize, ReservesShape), Refusal> {
    let wallets =
        Wallets::parse(our_descriptors, network).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let message = psbt_message(psbt)
        .ok_or_else(|| not_reserves(ReservesError::NotReserves))?
        .map_err(not_reserves)?;
    let shape = check_reserves_psbt(psbt, &message).map_err(not_reserves)?;
    for (i, outpoint, utxo) in &shape.coins {
        let found = wallets
            .find(&utxo.script_pubkey, &input_hints(&psbt.inputs[*i]), |_| {
                true
            })
            .ok_or(Refusal::InputNotOurs(*outpoint))?;
        let input = &mut psbt.inputs[*i];
        input.bip32_derivation.clear();
        input.tap_key_origins.clear();
        input.witness_script = None;
        input.redeem_script = None;
        input.sighash_type = None;
        psbt.update_input_with_descriptor(*i, &found.definite)
            .map_err(|e| Refusal::Malformed(format!("input {outpoint}: {e}")))?;
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
            "this key holds none of the keys the coins need".into(),
        ));
    }
    Ok((added, shape))
}
