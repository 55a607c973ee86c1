//! The hot key on disk: a random 32-byte seed, encrypted under a passphrase.
//!
//! The file is one JSON object:
//!
//! ```text
//! {"magic":"kura-hot-key","version":1,"network":"regtest",
//!  "kdf":{"algorithm":"argon2id","memory_kib":65536,"iterations":3,"parallelism":1},
//!  "salt":"<16 bytes hex>","nonce":"<24 bytes hex>","ciphertext":"<48 bytes hex>"}
//! ```
//!
//! The key is Argon2id(passphrase, salt) and the seed is sealed with
//! XChaCha20-Poly1305; everything but the ciphertext (magic, version, network, KDF
//! parameters, salt) is bound to it as associated data, so a file whose header was
//! changed does not open. The seed is the BIP-32 master seed; the hot wallet is the
//! BIP-84 account `m/84'/coin'/1'` (coin 0 on mainnet, 1 elsewhere), receiving and
//! change on `/0/*`.

use argon2::{Algorithm, Argon2, Params, Version};
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpriv, Xpub};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::Network;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

const MAGIC: &str = "kura-hot-key";
const VERSION: u32 = 1;
const SEED_LEN: usize = 32;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_FILE_LEN: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    #[error("{0} already exists; refusing to overwrite a key file")]
    Exists(PathBuf),
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path} is not a valid kura key file: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: key file version {version} is not supported (this build reads {VERSION})")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{0}: wrong passphrase, or the key file was altered")]
    WrongPassphrase(PathBuf),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Argon2id cost parameters, stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub algorithm: KdfAlgorithm,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlgorithm {
    Argon2id,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, single lane).
    fn default() -> Self {
        KdfParams {
            algorithm: KdfAlgorithm::Argon2id,
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Bounds checked when a file is opened, so a crafted file cannot ask for
    /// unbounded memory or time, nor for parameters too weak to mean anything.
    fn check(&self) -> Result<(), String> {
        if !(8 * 1024..=4 * 1024 * 1024).contains(&self.memory_kib) {
            return Err(format!(
                "KDF memory {} KiB is outside 8 MiB..4 GiB",
                self.memory_kib
            ));
        }
        if !(1..=64).contains(&self.iterations) {
            return Err(format!("KDF iterations {} outside 1..64", self.iterations));
        }
        if !(1..=16).contains(&self.parallelism) {
            return Err(format!(
                "KDF parallelism {} outside 1..16",
                self.parallelism
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, key.as_mut())
            .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
        Ok(key)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    magic: String,
    version: u32,
    network: String,
    kdf: KdfParams,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// The associated data: every field but the ciphertext, in a fixed form.
fn header(network: &str, kdf: &KdfParams, salt: &[u8]) -> Vec<u8> {
    format!(
        "{MAGIC}|{VERSION}|{network}|argon2id|{}|{}|{}|{}",
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        salt.to_lower_hex_string()
    )
    .into_bytes()
}

/// What a new key file holds, in public terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKeyInfo {
    pub path: PathBuf,
    pub network: Network,
    pub fingerprint: Fingerprint,
    /// The public descriptor to register as the hot wallet.
    pub descriptor: String,
}

/// Create a new key file at `path` with the default KDF parameters.
pub fn create(
    path: &Path,
    passphrase: &[u8],
    network: Network,
) -> Result<HotKeyInfo, KeyFileError> {
    create_with(path, passphrase, network, KdfParams::default())
}

/// [`create`] with explicit KDF parameters (within the bounds [`open`] accepts).
pub fn create_with(
    path: &Path,
    passphrase: &[u8],
    network: Network,
    kdf: KdfParams,
) -> Result<HotKeyInfo, KeyFileError> {
    if passphrase.is_empty() {
        return Err(KeyFileError::EmptyPassphrase);
    }
    kdf.check().map_err(KeyFileError::Kdf)?;
    if path.symlink_metadata().is_ok() {
        return Err(KeyFileError::Exists(path.to_path_buf()));
    }
    let mut rng = rand::rngs::OsRng;
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    rng.fill_bytes(seed.as_mut());
    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);

    let key = HotKey::from_seed(seed.as_ref(), network)?;
    let network_text = network.to_string();
    let aead_key = kdf.derive(passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&aead_key[..]));
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: seed.as_ref(),
                aad: &header(&network_text, &kdf, &salt),
            },
        )
        .map_err(|_| KeyFileError::Kdf("encryption failed".into()))?;
    let file = FileV1 {
        magic: MAGIC.into(),
        version: VERSION,
        network: network_text,
        kdf,
        salt: salt.to_lower_hex_string(),
        nonce: nonce.to_lower_hex_string(),
        ciphertext: ciphertext.to_lower_hex_string(),
    };
    let mut text = serde_json::to_vec(&file).map_err(|e| KeyFileError::Io {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    text.push(b'\n');
    write_new(path, &text)?;
    Ok(HotKeyInfo {
        path: path.to_path_buf(),
        network,
        fingerprint: key.fingerprint(),
        descriptor: key.descriptor(),
    })
}

/// Write `bytes` to a new file at `path`, mode 0600: to a temporary file beside it,
/// flushed, then linked into place, which fails if `path` appeared meanwhile.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |why: std::io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| KeyFileError::Io {
            path: path.to_path_buf(),
            why: "not a file path".into(),
        })?;
    let mut tag = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut tag);
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", tag.to_lower_hex_string()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyFileError::Exists(path.to_path_buf()))
        }
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Open the key file at `path`.
pub fn open(path: &Path, passphrase: &[u8]) -> Result<HotKey, KeyFileError> {
    let corrupt = |why: String| KeyFileError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let io = |why: std::io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_LEN {
        return Err(corrupt(format!("{len} bytes is too large")));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let file: FileV1 = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.magic != MAGIC {
        return Err(corrupt(format!("magic {:?} is not {MAGIC:?}", file.magic)));
    }
    if file.version != VERSION {
        return Err(KeyFileError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: file.version,
        });
    }
    let network = Network::from_str(&file.network)
        .map_err(|_| corrupt(format!("unknown network {:?}", file.network)))?;
    file.kdf.check().map_err(corrupt)?;
    let fixed = |name: &str, text: &str, len: usize| -> Result<Vec<u8>, KeyFileError> {
        let v = Vec::<u8>::from_hex(text).map_err(|e| corrupt(format!("{name}: {e}")))?;
        if v.len() != len {
            return Err(corrupt(format!("{name} is {} bytes, not {len}", v.len())));
        }
        Ok(v)
    };
    let salt = fixed("salt", &file.salt, SALT_LEN)?;
    let nonce = fixed("nonce", &file.nonce, NONCE_LEN)?;
    let ciphertext = fixed("ciphertext", &file.ciphertext, SEED_LEN + TAG_LEN)?;
    let aead_key = file.kdf.derive(passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&aead_key[..]));
    let seed = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &header(&file.network, &file.kdf, &salt),
                },
            )
            .map_err(|_| KeyFileError::WrongPassphrase(path.to_path_buf()))?,
    );
    HotKey::from_seed(&seed, network)
}

/// The decrypted hot key. Its `Debug` shows only public facts.
pub struct HotKey {
    master: Xpriv,
    network: Network,
}

impl fmt::Debug for HotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKey")
            .field("fingerprint", &self.fingerprint())
            .field("network", &self.network)
            .field("master", &"<redacted>")
            .finish()
    }
}

impl Drop for HotKey {
    fn drop(&mut self) {
        self.master.private_key.non_secure_erase();
    }
}

impl HotKey {
    fn from_seed(seed: &[u8], network: Network) -> Result<HotKey, KeyFileError> {
        let master = Xpriv::new_master(network, seed)
            .map_err(|e| KeyFileError::Kdf(format!("seed is not a valid master key: {e}")))?;
        Ok(HotKey { master, network })
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// The master key's fingerprint, the origin of every key the descriptor names.
    pub fn fingerprint(&self) -> Fingerprint {
        self.master.fingerprint(&Secp256k1::signing_only())
    }

    /// The hot wallet's account path, `m/84'/coin'/1'`.
    pub fn account_path(&self) -> DerivationPath {
        let coin = if self.network == Network::Bitcoin {
            0
        } else {
            1
        };
        DerivationPath::from(vec![
            ChildNumber::Hardened { index: 84 },
            ChildNumber::Hardened { index: coin },
            ChildNumber::Hardened { index: 1 },
        ])
    }

    /// The public descriptor of the hot wallet, with its checksum:
    /// `wpkh([fingerprint/84'/coin'/1']xpub/0/*)`.
    pub fn descriptor(&self) -> String {
        let secp = Secp256k1::new();
        let path = self.account_path();
        let text = match self.master.derive_priv(&secp, &path) {
            Ok(account) => {
                let xpub = Xpub::from_priv(&secp, &account);
                let origin = path.to_string();
                let origin = origin.trim_start_matches('m').trim_start_matches('/');
                format!("wpkh([{}/{origin}]{xpub}/0/*)", self.fingerprint())
            }
            // Hardened derivation from a valid master key cannot fail.
            Err(_) => String::new(),
        };
        match miniscript::Descriptor::<miniscript::DescriptorPublicKey>::from_str(&text) {
            Ok(d) => d.to_string(),
            Err(_) => text,
        }
    }

    pub(crate) fn master(&self) -> &Xpriv {
        &self.master
    }
}
