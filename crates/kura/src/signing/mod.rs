//! Who signs for the hot and deposit wallets, and on whose word.
//!
//! The node can hold the hot key itself (the in-process signer, what `kura demo` does),
//! or leave it to a separate process, `kura signer serve`, which it reaches over a unix
//! socket. The separate signer holds the hot key and the deposit seed, keeps its own
//! velocity record, and for every request reads the journal itself ([`follow`]): it signs
//! a withdrawal batch only if the journal has that batch open with exactly this
//! transaction as its latest version, and only for the coins and payments the journal
//! gives. A process that can talk to the socket but cannot get a batch past the engine's
//! checks into the journal gets nothing signed, and the caps hold whatever it asks.
//!
//! - [`keys`]: the secret files in `DIR/signer/`.
//! - [`follow`]: the journal, followed read-only.
//! - [`service`]: `kura signer serve`.
//! - [`client`]: the node's side, and [`HotSigner`], the choice between the two.

pub mod client;
pub mod follow;
pub mod keys;
pub mod service;

use kura_chain::bitcoin::psbt::Psbt;
use kura_signer::{Authorization, SignedTx, Signer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default socket of a separate signer serving `data`.
pub fn default_socket(data: &Path) -> PathBuf {
    keys::signer_dir(data).join("signer.sock")
}

/// One request to `kura signer serve` (one JSON line; one JSON line answers it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The network and the public descriptors the signer can spend.
    Hello,
    /// Sign withdrawal batch `batch`'s latest journaled version, given as a base64
    /// PSBT. `cancel`: the version pays only our own wallets (the books refund the
    /// withdrawals when it confirms), so no payment is required — nor allowed.
    Sign {
        batch: u64,
        psbt: String,
        #[serde(default)]
        cancel: bool,
    },
    /// Sign the hot and deposit coins of a proof of reserves (BIP-127) for `message`.
    SignReserves { psbt: String, message: String },
}

/// The answer to [`Request::Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub network: String,
    pub hot_descriptor: String,
    pub deposit_descriptor: String,
    /// The last journal record the signer has applied.
    pub journal_seq: u64,
}

/// The answer to [`Request::Sign`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The signed transaction, hex.
    pub tx: String,
    pub txid: String,
    pub fee_sat: u64,
}

/// The answer to [`Request::SignReserves`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservesAnswer {
    /// The PSBT with the signer's signatures, base64.
    pub psbt: String,
    /// The coins it signed.
    pub signed: Vec<String>,
}

/// The hot signer the payout uses: the key in this process, or a separate signer.
#[derive(Debug)]
pub enum HotSigner {
    Local(Box<Signer>),
    Remote(client::Client),
}

impl HotSigner {
    /// Sign `psbt` as batch `auth.batch`. The in-process signer checks it against
    /// `auth`, computed by the caller from the books; a separate signer reads the books
    /// itself and only learns from `auth` whether this is a cancellation (no payments).
    pub fn sign(
        &mut self,
        psbt: &Psbt,
        auth: &Authorization,
        now_ms: u64,
    ) -> anyhow::Result<SignedTx> {
        match self {
            HotSigner::Local(signer) => signer
                .sign(psbt, auth, now_ms)
                .map_err(|refusal| anyhow::anyhow!("{refusal}")),
            HotSigner::Remote(client) => client.sign(auth.batch, psbt, auth.payments.is_empty()),
        }
    }

    /// Tell the in-process signer about wallets registered since it started (a
    /// separate signer reads them from the journal); how many were new.
    pub fn learn(&mut self, descriptors: &[String]) -> anyhow::Result<usize> {
        match self {
            HotSigner::Local(signer) => signer
                .learn(descriptors)
                .map_err(|e| anyhow::anyhow!("{e}")),
            HotSigner::Remote(_) => Ok(0),
        }
    }
}
