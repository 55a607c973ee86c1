//! Keys, descriptors, coins and a devnet for the signer's tests.
#![allow(dead_code)]

use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Txid};
use kura_chain::{Devnet, DevnetOptions};
use kura_custody::psbt::{Payment, SpendableCoin};
use kura_signer::{keyfile, Policy, Signer};
use std::path::Path;
use std::str::FromStr;
use tempfile::TempDir;

pub const NET: Network = Network::Regtest;
pub const PASS: &[u8] = b"correct horse battery staple";
/// The deposit wallet's master seed byte (its key is given to the signer as extra).
pub const DEPOSIT_SEED: u8 = 21;
/// The cold wallet's three master seed bytes.
pub const COLD_SEEDS: [u8; 3] = [7, 8, 9];

pub fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master")
}

/// `[fingerprint/path]tpub` for the master of `seed` at `path`.
pub fn key_expr(seed: u8, path: &str) -> String {
    let secp = Secp256k1::new();
    let m = master(seed);
    let path = DerivationPath::from_str(path).expect("path");
    let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &path).expect("derive"));
    let origin = path.to_string();
    let origin = origin.trim_start_matches('m').trim_start_matches('/');
    format!("[{}/{origin}]{xpub}", m.fingerprint(&secp))
}

pub fn deposit_descriptor() -> String {
    format!("wpkh({}/0/*)", key_expr(DEPOSIT_SEED, "m/84'/1'/0'"))
}

/// 2-of-3 on BIP-48 P2WSH paths.
pub fn cold_descriptor() -> String {
    let keys: Vec<String> = COLD_SEEDS
        .iter()
        .map(|s| format!("{}/0/*", key_expr(*s, "m/48'/1'/0'/2'")))
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

/// A wallet that is not ours.
pub fn foreign_descriptor() -> String {
    format!("wpkh({}/0/*)", key_expr(99, "m/84'/1'/0'"))
}

pub fn script(descriptor: &str, index: u32) -> ScriptBuf {
    kura_custody::derive(descriptor, index, NET)
        .expect("derive")
        .0
}

pub fn foreign_payment(index: u32, amount_sat: u64) -> Payment {
    Payment {
        script_pubkey: script(&foreign_descriptor(), index),
        amount_sat,
    }
}

/// A coin that exists only in a PSBT (the signer never looks at a chain).
pub fn fake_coin(n: u8, value_sat: u64, descriptor: &str, index: u32) -> SpendableCoin {
    SpendableCoin {
        outpoint: OutPoint::new(Txid::from_byte_array([n; 32]), 1),
        value_sat,
        descriptor: descriptor.to_string(),
        index,
    }
}

pub struct Hot {
    pub dir: TempDir,
    pub hot: String,
    pub signer: Signer,
}

impl Hot {
    pub fn velocity_path(&self) -> std::path::PathBuf {
        self.dir.path().join("velocity")
    }
    pub fn key_path(&self) -> std::path::PathBuf {
        self.dir.path().join("hot.key")
    }
}

/// Our registered wallets besides the hot one.
pub fn ours() -> Vec<String> {
    vec![deposit_descriptor(), cold_descriptor()]
}

pub fn open_signer(dir: &Path, policy: Policy) -> Signer {
    let key = keyfile::open(&dir.join("hot.key"), PASS).expect("open key");
    Signer::new(
        key,
        ours(),
        vec![master(DEPOSIT_SEED)],
        policy,
        &dir.join("velocity"),
    )
    .expect("signer")
}

/// A new hot key in a temporary directory, and a signer for it.
pub fn hot_signer(policy: Policy) -> Hot {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = keyfile::create(&dir.path().join("hot.key"), PASS, NET).expect("create");
    let signer = open_signer(dir.path(), policy);
    Hot {
        hot: info.descriptor,
        signer,
        dir,
    }
}

pub fn devnet(dir: &Path) -> Devnet {
    Devnet::open_with(&dir.join("devnet"), DevnetOptions { premine: 110 }).expect("devnet")
}

/// Pay `value_sat` to `descriptor` at `index` from the faucet and confirm it.
pub fn fund(devnet: &Devnet, descriptor: &str, index: u32, value_sat: u64) -> SpendableCoin {
    let (script, address) = kura_custody::derive(descriptor, index, NET).expect("derive");
    let txid = devnet
        .send(&address, Amount::from_sat(value_sat))
        .expect("send");
    devnet.mine(1).expect("mine");
    let (tx, _) = devnet.tx(&txid).expect("funding tx");
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == script)
        .expect("funded output");
    SpendableCoin {
        outpoint: OutPoint::new(txid, vout as u32),
        value_sat,
        descriptor: descriptor.to_string(),
        index,
    }
}

pub fn confirmed(devnet: &Devnet, txid: &Txid) -> bool {
    matches!(
        devnet.tx(txid),
        Some((_, kura_chain::TxStatus::Confirmed(_)))
    )
}
