//! The devnet's faucet: one P2WPKH key whose seed lives in the devnet directory (mode 0600).
//! It receives the coinbase rewards of blocks mined without an explicit address and pays
//! from its mature confirmed outputs, with change back to itself.

use std::io::Write;
use std::path::Path;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Witness,
};

use super::consensus::Coin;
use super::DevnetError;

/// Feerate the faucet pays, sat per virtual byte.
pub(crate) const FAUCET_SAT_PER_VB: u64 = 2;

#[derive(Debug)]
pub(crate) struct Faucet {
    secp: Secp256k1<All>,
    key: SecretKey,
    pubkey: CompressedPublicKey,
    pub(crate) address: Address,
    pub(crate) script: ScriptBuf,
}

impl Faucet {
    /// Loads the seed from `path`, creating a random one (mode 0600) if there is none.
    pub(crate) fn load_or_create(path: &Path) -> Result<Faucet, DevnetError> {
        let io = |e: std::io::Error| DevnetError::Io(format!("{}: {e}", path.display()));
        let seed: [u8; 32] = match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut seed = [0u8; 32];
                let t = text.trim();
                if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DevnetError::Corrupt(format!(
                        "{}: expected 64 hexadecimal digits",
                        path.display()
                    )));
                }
                for (i, b) in seed.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| {
                        DevnetError::Corrupt(format!("{}: not hexadecimal", path.display()))
                    })?;
                }
                seed
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
                let mut f = create_private(path).map_err(io)?;
                f.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                seed
            }
            Err(e) => return Err(io(e)),
        };
        // The key is derived from the seed so that any seed gives a valid key.
        let mut material = b"kura devnet faucet key".to_vec();
        material.extend_from_slice(&seed);
        let mut digest = sha256::Hash::hash(&material).to_byte_array();
        let key = loop {
            match SecretKey::from_slice(&digest) {
                Ok(k) => break k,
                Err(_) => digest = sha256::Hash::hash(&digest).to_byte_array(),
            }
        };
        let secp = Secp256k1::new();
        let pubkey = CompressedPublicKey(key.public_key(&secp));
        let address = Address::p2wpkh(&pubkey, Network::Regtest);
        let script = address.script_pubkey();
        Ok(Faucet {
            secp,
            key,
            pubkey,
            address,
            script,
        })
    }

    /// Builds and signs a payment of `amount` to `to` from `coins` (the faucet's spendable
    /// outputs, oldest first). `lock_height` is the current height (anti fee sniping).
    pub(crate) fn build_payment(
        &self,
        coins: &[(OutPoint, Coin)],
        to: &ScriptBuf,
        amount: Amount,
        lock_height: u32,
    ) -> Result<Transaction, DevnetError> {
        if amount == Amount::ZERO {
            return Err(DevnetError::Invalid("amount must be positive".into()));
        }
        // Virtual size: 11 overhead, 68 per P2WPKH input, 31/43 per output (rounded up).
        let out_vsize = |spk: &ScriptBuf| 9 + spk.len() as u64;
        let mut selected: Vec<&(OutPoint, Coin)> = Vec::new();
        let mut total = Amount::ZERO;
        let mut fee = Amount::ZERO;
        let mut change = Amount::ZERO;
        let mut enough = false;
        for c in coins {
            selected.push(c);
            total += c.1.output.value;
            let vsize = 11 + 68 * selected.len() as u64 + out_vsize(to) + out_vsize(&self.script);
            fee = Amount::from_sat(vsize * FAUCET_SAT_PER_VB);
            if let Some(rest) = total.checked_sub(amount).and_then(|r| r.checked_sub(fee)) {
                change = rest;
                enough = true;
                break;
            }
        }
        if !enough {
            return Err(DevnetError::InsufficientFunds {
                needed: amount + fee,
                available: total,
            });
        }
        let mut outputs = vec![TxOut {
            value: amount,
            script_pubkey: to.clone(),
        }];
        // Change below the dust threshold goes to the fee.
        if change >= Amount::from_sat(294) {
            outputs.push(TxOut {
                value: change,
                script_pubkey: self.script.clone(),
            });
        }
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::from_height(lock_height)
                .unwrap_or(absolute::LockTime::ZERO),
            input: selected
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        self.sign(
            &mut tx,
            &selected
                .iter()
                .map(|c| c.1.output.value)
                .collect::<Vec<_>>(),
        )?;
        Ok(tx)
    }

    /// Signs every input of `tx` (all spending faucet outputs of the given values).
    pub(crate) fn sign(&self, tx: &mut Transaction, values: &[Amount]) -> Result<(), DevnetError> {
        let mut witnesses = Vec::with_capacity(tx.input.len());
        {
            let mut cache = SighashCache::new(&*tx);
            for (i, value) in values.iter().enumerate() {
                let sighash = cache
                    .p2wpkh_signature_hash(i, &self.script, *value, EcdsaSighashType::All)
                    .map_err(|e| DevnetError::Invalid(format!("sighash: {e}")))?;
                let msg = Message::from(sighash);
                let sig = bitcoin::ecdsa::Signature {
                    signature: self.secp.sign_ecdsa(&msg, &self.key),
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&sig, &self.pubkey.0));
            }
        }
        for (input, w) in tx.input.iter_mut().zip(witnesses) {
            input.witness = w;
        }
        Ok(())
    }
}

/// Creates a file only the owner can read and write.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}
