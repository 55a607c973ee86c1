//! The hot signer's secrets in `DIR/signer/`, created on first use: the hot key
//! (`hot.key`, encrypted; its passphrase from `KURA_SIGNER_PASSPHRASE` or else kept in
//! `hot.pass`) and the deposit wallet's seed (`deposit.seed`). Whoever opens them is the
//! signer: the node itself (the in-process signer) or `kura signer serve`.

use crate::server::files;
use anyhow::{anyhow, Context, Result};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::Network;
use std::path::Path;
use std::str::FromStr;

/// The directory of the signer's files in a data directory.
pub fn signer_dir(data: &Path) -> std::path::PathBuf {
    data.join("signer")
}

/// Create `DIR/signer/` (mode 0700) if needed and take its lock: one process at a time
/// holds the signer's secrets and appends to its velocity record, whether that is
/// `kura signer serve` or a node signing in process.
pub fn lock_signer_dir(data: &Path) -> Result<crate::server::files::DirLock> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = signer_dir(data);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    crate::server::files::DirLock::acquire(&dir)
}

/// The deposit wallet's account path (BIP-84 on a test network / mainnet).
fn account_path(network: Network) -> &'static str {
    if network == Network::Bitcoin {
        "m/84'/0'/0'"
    } else {
        "m/84'/1'/0'"
    }
}

/// What to do when a secret file is not there yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Create it (the signer's first start).
    Create,
    /// Refuse: a tool that only uses the keys of a node that has run.
    Refuse,
}

/// A 32-byte secret kept as hex (`server::files`), created or required per `missing`.
fn secret(path: &Path, what: &str, missing: Missing) -> Result<[u8; 32]> {
    if missing == Missing::Refuse && !path.exists() {
        anyhow::bail!(
            "{what} {} does not exist (is this the data directory of a node started with --chain?)",
            path.display()
        );
    }
    files::load_or_create_secret(path, what)
}

/// The deposit wallet's master key, from the seed kept in `DIR/signer/deposit.seed`
/// (only the public descriptor reaches the engine).
pub fn deposit_master(data: &Path, network: Network, missing: Missing) -> Result<Xpriv> {
    let seed = secret(
        &signer_dir(data).join("deposit.seed"),
        "the deposit wallet seed",
        missing,
    )?;
    Xpriv::new_master(network, &seed).context("deriving the deposit master key")
}

/// The hot key, `DIR/signer/hot.key`, encrypted with the passphrase in the environment
/// variable `KURA_SIGNER_PASSPHRASE`, or else with a random one kept beside it in
/// `DIR/signer/hot.pass` (mode 0600; fine for the demo and tests, not for production).
/// Created on first use with [`Missing::Create`].
pub fn hot_key(data: &Path, network: Network, missing: Missing) -> Result<kura_signer::HotKey> {
    let signer = signer_dir(data);
    let passphrase = match std::env::var("KURA_SIGNER_PASSPHRASE") {
        Ok(p) if !p.is_empty() => p.into_bytes(),
        _ => {
            let secret = secret(
                &signer.join("hot.pass"),
                "the hot key's passphrase (or set KURA_SIGNER_PASSPHRASE)",
                missing,
            )?;
            if missing == Missing::Create {
                tracing::warn!(
                    "the hot key's passphrase is kept beside it in {}; set KURA_SIGNER_PASSPHRASE in production",
                    signer.join("hot.pass").display()
                );
            }
            hex::encode(secret).into_bytes()
        }
    };
    let path = signer.join("hot.key");
    if missing == Missing::Create && !path.exists() {
        kura_signer::keyfile::create(&path, &passphrase, network)
            .map_err(|e| anyhow!("creating the hot key {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), "created the hot key");
    }
    let key = kura_signer::keyfile::open(&path, &passphrase)
        .map_err(|e| anyhow!("opening the hot key {}: {e}", path.display()))?;
    if key.network() != network {
        anyhow::bail!(
            "the hot key {} is for {}, not {network}",
            path.display(),
            key.network()
        );
    }
    Ok(key)
}

/// The deposit wallet's public descriptor (canonical text) for `master`.
pub fn deposit_descriptor_of(master: &Xpriv, network: Network) -> Result<String> {
    let secp = Secp256k1::new();
    let path = DerivationPath::from_str(account_path(network)).context("account path")?;
    let account = master
        .derive_priv(&secp, &path)
        .context("deriving the deposit account key")?;
    let xpub = Xpub::from_priv(&secp, &account);
    let origin = account_path(network).trim_start_matches("m/");
    let text = format!("wpkh([{}/{origin}]{xpub}/0/*)", master.fingerprint(&secp));
    let parsed = kura_custody::parse_descriptor(&text)
        .map_err(|e| anyhow!("the deposit descriptor is invalid: {e}"))?;
    Ok(parsed.canonical())
}

/// The hot wallet's public descriptor (canonical text).
pub fn hot_descriptor_of(hot: &kura_signer::HotKey) -> Result<String> {
    Ok(kura_custody::parse_descriptor(&hot.descriptor())
        .map_err(|e| anyhow!("the hot wallet descriptor is invalid: {e}"))?
        .canonical())
}
