//! kura's hot-wallet signer: an encrypted key, and a policy that signs only approved
//! withdrawals within velocity caps.
//!
//! - [`keyfile`]: the hot key, a random seed encrypted under a passphrase
//!   (Argon2id, XChaCha20-Poly1305), and the public descriptor to register for it.
//! - [`policy`]: fee limits and velocity caps, and what the journal approved.
//! - [`signer`]: the checks every signature of the hot key passes, and the record of
//!   outflow they are counted in ([`velocity`]).
//! - [`cold`]: the offline ceremony for the cold wallet: review, sign, combine.
//! - [`reserves`]: signing a proof of reserves (BIP-127), hot and cold.

pub mod cold;
pub mod keyfile;
mod ours;
pub mod policy;
pub mod reserves;
pub mod signer;
pub mod velocity;

pub use cold::{cold_sign, finalize, summarize, ColdError, Summary};
pub use keyfile::{create, open, HotKey, HotKeyInfo, KdfParams, KeyFileError};
pub use ours::BadDescriptor;
pub use policy::{Authorization, Policy};
pub use reserves::{cold_sign_reserves, ReservesSigned, ReservesSigner};
pub use signer::{Refusal, SignedTx, Signer, SignerError};
