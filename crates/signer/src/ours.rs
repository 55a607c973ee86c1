//! Our registered descriptors, and recognising the scripts they pay.
//!
//! A PSBT's key origins are taken only as a hint of which index to try: a script is
//! ours when deriving one of our descriptors at that index gives exactly that script.

use bitcoin::bip32::{ChildNumber, KeySource, Xpriv, Xpub};
use bitcoin::psbt::{self, GetKey, KeyRequest};
use bitcoin::secp256k1::{Secp256k1, Signing};
use bitcoin::{Address, Network, NetworkKind, PrivateKey, Script};
use miniscript::descriptor::{DefiniteDescriptorKey, Descriptor, DescriptorPublicKey};
use miniscript::ForEachKey;
use std::collections::BTreeSet;
use std::str::FromStr;

/// At most this many distinct indexes are tried per input or output.
const MAX_HINTS: usize = 8;

/// A registered descriptor that failed to parse or check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("descriptor {descriptor:?}: {why}")]
pub struct BadDescriptor {
    pub descriptor: String,
    pub why: String,
}

/// Where a script was found among our descriptors.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// Position in the list the descriptors were given in.
    pub wallet: usize,
    pub index: u32,
    pub definite: Descriptor<DefiniteDescriptorKey>,
}

#[derive(Debug, Clone)]
pub(crate) struct Wallets {
    pub texts: Vec<String>,
    list: Vec<Descriptor<DescriptorPublicKey>>,
}

impl Wallets {
    /// Parse and check (SegWit, public keys only, keys of `network`) each descriptor.
    pub fn parse(texts: &[String], network: Network) -> Result<Wallets, BadDescriptor> {
        let kind = NetworkKind::from(network);
        let mut list = Vec::new();
        for text in texts {
            let bad = |why: String| BadDescriptor {
                descriptor: text.clone(),
                why,
            };
            kura_custody::parse_descriptor(text).map_err(|e| bad(e.to_string()))?;
            let d = Descriptor::<DescriptorPublicKey>::from_str(text)
                .map_err(|e| bad(e.to_string()))?;
            let wrong = d.for_any_key(|k| match k {
                DescriptorPublicKey::XPub(x) => x.xkey.network != kind,
                DescriptorPublicKey::MultiXPub(x) => x.xkey.network != kind,
                DescriptorPublicKey::Single(_) => false,
            });
            if wrong {
                return Err(bad(format!("its extended keys are not for {network}")));
            }
            list.push(d);
        }
        Ok(Wallets {
            texts: texts.to_vec(),
            list,
        })
    }

    /// The canonical text (with checksum) of wallet `wallet`.
    pub fn canonical(&self, wallet: usize) -> Option<String> {
        self.list.get(wallet).map(|d| d.to_string())
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Find `script` among the wallets `among` accepts, at the hinted indexes.
    pub fn find(
        &self,
        script: &Script,
        hints: &BTreeSet<u32>,
        among: impl Fn(usize) -> bool,
    ) -> Option<Found> {
        for (wallet, d) in self.list.iter().enumerate() {
            if !among(wallet) {
                continue;
            }
            let indexes: Vec<u32> = if d.has_wildcard() {
                hints.iter().copied().collect()
            } else {
                vec![0]
            };
            for index in indexes {
                let Ok(definite) = d.at_derivation_index(index) else {
                    continue;
                };
                if definite.script_pubkey().as_script() == script {
                    return Some(Found {
                        wallet,
                        index,
                        definite,
                    });
                }
            }
        }
        None
    }

    /// Whether `keys` hold the private key of every key in wallet `wallet`.
    pub fn held_by<C: Signing>(&self, wallet: usize, keys: &[&Xpriv], secp: &Secp256k1<C>) -> bool {
        let Some(d) = self.list.get(wallet) else {
            return false;
        };
        d.for_each_key(|k| match k {
            DescriptorPublicKey::XPub(x) => keys.iter().any(|m| {
                let account = match &x.origin {
                    Some((fp, path)) if m.fingerprint(secp) == *fp => m.derive_priv(secp, path),
                    Some(_) => return false,
                    None => Ok(**m),
                };
                account.is_ok_and(|a| Xpub::from_priv(secp, &a) == x.xkey)
            }),
            _ => false,
        })
    }
}

fn last_normal(source: &KeySource) -> Option<u32> {
    match source.1.as_ref().last() {
        Some(ChildNumber::Normal { index }) => Some(*index),
        _ => None,
    }
}

fn collect<'a>(sources: impl Iterator<Item = &'a KeySource>) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    for s in sources {
        if set.len() >= MAX_HINTS {
            break;
        }
        if let Some(i) = last_normal(s) {
            set.insert(i);
        }
    }
    set
}

/// The indexes an input's key origins point at.
pub(crate) fn input_hints(input: &psbt::Input) -> BTreeSet<u32> {
    collect(
        input
            .bip32_derivation
            .values()
            .chain(input.tap_key_origins.values().map(|(_, s)| s)),
    )
}

/// The indexes an output's key origins point at.
pub(crate) fn output_hints(output: &psbt::Output) -> BTreeSet<u32> {
    collect(
        output
            .bip32_derivation
            .values()
            .chain(output.tap_key_origins.values().map(|(_, s)| s)),
    )
}

/// Master keys answering the key requests of `Psbt::sign`.
pub(crate) struct Masters<'a>(pub Vec<&'a Xpriv>);

impl GetKey for Masters<'_> {
    type Error = bitcoin::bip32::Error;

    fn get_key<C: Signing>(
        &self,
        request: KeyRequest,
        secp: &Secp256k1<C>,
    ) -> Result<Option<PrivateKey>, Self::Error> {
        let KeyRequest::Bip32((fingerprint, path)) = request else {
            return Ok(None);
        };
        for m in &self.0 {
            if m.fingerprint(secp) == fingerprint {
                return Ok(Some(m.derive_priv(secp, &path)?.to_priv()));
            }
        }
        Ok(None)
    }
}

/// An address for humans, or the script in hex when it has none.
pub(crate) fn show(script: &Script, network: Network) -> String {
    match Address::from_script(script, network) {
        Ok(a) => a.to_string(),
        Err(_) => format!("script {}", script.to_hex_string()),
    }
}
