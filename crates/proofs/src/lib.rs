//! kura's proofs: what the exchange publishes so that customers, auditors and the police
//! can check it without trusting it.
//!
//! Three parts, all pure (no I/O, no clock, no randomness; the caller supplies secrets):
//!
//! - [`por`]: **por/v1 proof of liabilities**, a Merkle sum tree in which every node commits
//!   to both child sums, with per-epoch salted leaves, padding to a fixed height and
//!   slots sorted by a pseudo-random user id. Each customer gets an inclusion proof and
//!   checks it against the published root. The byte format is fixed by the project's
//!   custody research note (§2.4) and reproduced in the module documentation.
//! - [`tlog`]: an **RFC 6962 / RFC 9162 Merkle log** (the tree of Certificate
//!   Transparency): root, inclusion proofs and consistency proofs, and [`tlog::MerkleLog`],
//!   an append-only structure that answers for any prefix of millions of leaves.
//! - [`checkpoint`]: **C2SP checkpoints** (`tlog-checkpoint`) in **signed notes**
//!   (`signed-note`, Ed25519): how a log's size and root are published and signed, and
//!   the verifier key strings (`name+hexid+base64key`) used to check them.
//!
//! Standalone verifiers in Python (standard library only) live in `tools/verify/` at the
//! repository root; the JSON forms they read are defined here ([`por::InclusionProof`],
//! [`por::Report`], [`tlog::InclusionProofFile`], [`tlog::ConsistencyProofFile`]) and
//! described in this crate's `README.md`.

pub mod checkpoint;
pub mod por;
pub mod tlog;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Serde helper: a 32-byte hash as 64 lowercase hex digits.
pub(crate) mod hex32 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn parse(s: &str) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(out)
    }
}

/// Serde helper: a list of 32-byte hashes as hex strings.
pub(crate) mod hex32_vec {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                super::hex32::parse(s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
            })
            .collect()
    }
}
