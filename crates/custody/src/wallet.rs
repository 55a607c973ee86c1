//! Output descriptors and the addresses derived from them.
//!
//! kura only ever pays to, and watches, SegWit outputs (P2WPKH, P2WSH, P2TR): a third
//! party cannot change the txid of a transaction spending them (BIP-141), so a
//! withdrawal can always be recognised on chain. Descriptors of any other kind are
//! refused when they are registered.

use bitcoin::{Address, Network, ScriptBuf};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey, DescriptorType};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("not a valid output descriptor: {0}")]
    Parse(String),
    #[error("kura only uses SegWit outputs (wpkh, wsh, tr); this descriptor is {0}")]
    NotSegwit(String),
    #[error("a descriptor with private keys must not reach the exchange; give only public keys")]
    HasSecrets,
    #[error("cannot derive index {index}: {why}")]
    Derive { index: u32, why: String },
}

/// A parsed, checked descriptor of public keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchDescriptor {
    descriptor: Descriptor<DescriptorPublicKey>,
}

impl WatchDescriptor {
    /// Whether it describes many addresses (a `*` step) or one.
    pub fn is_ranged(&self) -> bool {
        self.descriptor.has_wildcard()
    }

    /// The canonical text, with its checksum: what the registry stores.
    pub fn canonical(&self) -> String {
        self.descriptor.to_string()
    }

    /// The output script and address of `index` (ignored for a single-address descriptor).
    pub fn at(
        &self,
        index: u32,
        network: Network,
    ) -> Result<(ScriptBuf, Address), DescriptorError> {
        let derive_err = |why: String| DescriptorError::Derive { index, why };
        let definite = self
            .descriptor
            .at_derivation_index(index)
            .map_err(|e| derive_err(e.to_string()))?;
        let address = definite
            .address(network)
            .map_err(|e| derive_err(e.to_string()))?;
        Ok((definite.script_pubkey(), address))
    }
}

/// Parse a descriptor of public keys and check it is SegWit. A descriptor carrying a
/// private key is refused with [`DescriptorError::HasSecrets`], never parsed into one.
pub fn parse_descriptor(text: &str) -> Result<WatchDescriptor, DescriptorError> {
    let descriptor = match Descriptor::<DescriptorPublicKey>::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            // Tell a descriptor with secrets apart from a malformed one; the parsed
            // secrets are dropped at once.
            let secp = bitcoin::secp256k1::Secp256k1::new();
            if matches!(Descriptor::parse_descriptor(&secp, text), Ok((_, keys)) if !keys.is_empty())
            {
                return Err(DescriptorError::HasSecrets);
            }
            return Err(DescriptorError::Parse(e.to_string()));
        }
    };
    descriptor
        .sanity_check()
        .map_err(|e| DescriptorError::Parse(e.to_string()))?;
    match descriptor.desc_type() {
        DescriptorType::Wpkh
        | DescriptorType::Wsh
        | DescriptorType::WshSortedMulti
        | DescriptorType::Tr => Ok(WatchDescriptor { descriptor }),
        other => Err(DescriptorError::NotSegwit(format!("{other:?}"))),
    }
}

/// Parse `text` and derive `index`: the script and address a customer pays to.
pub fn derive(
    text: &str,
    index: u32,
    network: Network,
) -> Result<(ScriptBuf, Address), DescriptorError> {
    parse_descriptor(text)?.at(index, network)
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP-84's test vector account (mnemonic "abandon … about"), mainnet.
    const ZPUB_ACCOUNT: &str = "xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V";

    #[test]
    fn derives_bip84_vectors() {
        let text = format!("wpkh([73c5da0a/84'/0'/0']{ZPUB_ACCOUNT}/0/*)");
        let d = parse_descriptor(&text).expect("descriptor");
        assert!(d.is_ranged());
        let (_, first) = d.at(0, Network::Bitcoin).expect("derive");
        assert_eq!(
            first.to_string(),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        let (_, second) = d.at(1, Network::Bitcoin).expect("derive");
        assert_eq!(
            second.to_string(),
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
        // The canonical form carries a checksum and parses back to the same thing.
        let again = parse_descriptor(&d.canonical()).expect("canonical");
        assert_eq!(again, d);
    }

    #[test]
    fn refuses_legacy_and_secrets_and_garbage() {
        let pkh = format!("pkh([73c5da0a/44'/0'/0']{ZPUB_ACCOUNT}/0/*)");
        assert!(matches!(
            parse_descriptor(&pkh),
            Err(DescriptorError::NotSegwit(_))
        ));
        let sh = format!("sh(wpkh({ZPUB_ACCOUNT}/0/*))");
        assert!(matches!(
            parse_descriptor(&sh),
            Err(DescriptorError::NotSegwit(_))
        ));
        // BIP-32 test vector 1 master private key.
        let xprv = "wpkh(xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi/0/*)";
        assert_eq!(parse_descriptor(xprv), Err(DescriptorError::HasSecrets));
        for bad in ["", "wpkh(", "wpkh(nothex)", "raw(zz)", "\u{0}"] {
            assert!(matches!(
                parse_descriptor(bad),
                Err(DescriptorError::Parse(_))
            ));
        }
    }
}
