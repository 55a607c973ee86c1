//! An RFC 6962 / RFC 9162 Merkle log: the tree of Certificate Transparency and of C2SP
//! transparency logs.
//!
//! - leaf hash `SHA-256(0x00 ‖ data)`, node hash `SHA-256(0x01 ‖ left ‖ right)`;
//! - the Merkle tree hash of `n` leaves splits them at `k`, the largest power of two
//!   smaller than `n`: `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))`; the empty tree's hash
//!   is `SHA-256("")` ([`EMPTY_ROOT`]);
//! - an inclusion proof (RFC 9162 §2.1.3) shows that a leaf is at an index of the tree of
//!   a given size; a consistency proof (§2.1.4) shows that the tree of an older size is a
//!   prefix of the tree of a newer size, so a log that published both roots cannot have
//!   rewritten its history in between. Both have `O(log n)` hashes.
//!
//! [`MerkleLog`] is the append-only structure; the free functions [`root`],
//! [`inclusion_proof`] and [`consistency_proof`] work on a slice of leaf hashes, and
//! [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162's verification
//! algorithms step by step.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{hex32, hex32_vec, sha256, Hash};

/// The root of the empty tree, `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// Why a Merkle log proof did not verify, or could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlogError {
    /// The leaf index is not below the tree size.
    IndexOutOfRange { index: u64, size: u64 },
    /// The older size is larger than the newer one.
    OldLargerThanNew { old_size: u64, new_size: u64 },
    /// The proof has too many or too few hashes for the sizes given.
    WrongProofLength,
    /// The recomputed root differs from the expected one.
    RootMismatch,
}

impl fmt::Display for TlogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlogError::IndexOutOfRange { index, size } => {
                write!(f, "leaf index {index} is outside a tree of size {size}")
            }
            TlogError::OldLargerThanNew { old_size, new_size } => {
                write!(f, "old size {old_size} is larger than new size {new_size}")
            }
            TlogError::WrongProofLength => write!(f, "the proof has the wrong number of hashes"),
            TlogError::RootMismatch => write!(f, "the proof does not lead to the expected root"),
        }
    }
}

impl std::error::Error for TlogError {}

/// The largest power of two strictly smaller than `n` (for `n ≥ 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle log over leaf hashes.
///
/// It keeps, for every level `k`, the hash of every *complete* aligned subtree of `2^k`
/// leaves (level 0 holds the leaf hashes): about `2n` hashes in all, 64 bytes per leaf
/// (64 MB for a million leaves). Then:
///
/// - [`MerkleLog::append`] is amortised `O(1)` (at most `log n` node hashes, one on
///   average);
/// - the hash of any subtree that RFC 9162's recursion visits is `O(log n)`: it is a
///   chain of at most `log n` complete subtrees, each a lookup;
/// - the root of any prefix size is `O(log n)`; an inclusion or consistency proof for any
///   sizes is `O(log² n)` lookups and hashes.
#[derive(Clone, Default)]
pub struct MerkleLog {
    levels: Vec<Vec<Hash>>,
}

impl fmt::Debug for MerkleLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleLog")
            .field("size", &self.size())
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> MerkleLog {
        MerkleLog::default()
    }

    /// A log holding `leaf_hashes` in order.
    pub fn from_leaf_hashes(leaf_hashes: &[Hash]) -> MerkleLog {
        let mut log = MerkleLog::new();
        for h in leaf_hashes {
            log.append(*h);
        }
        log
    }

    /// Appends a leaf hash and returns its index.
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size();
        let mut h = leaf_hash;
        let mut k = 0;
        loop {
            if self.levels.len() == k {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[k];
            level.push(h);
            let len = level.len();
            if len % 2 == 1 {
                break;
            }
            h = node_hash(&level[len - 2], &level[len - 1]);
            k += 1;
        }
        index
    }

    /// Appends `leaf_hash(data)` and returns its index.
    pub fn append_data(&mut self, data: &[u8]) -> u64 {
        self.append(leaf_hash(data))
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.complete(0, index)
    }

    /// The root of the whole log.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or(EMPTY_ROOT)
    }

    /// The root of the log's first `size` leaves, or `None` if `size` is past the end.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        if size == 0 {
            return Some(EMPTY_ROOT);
        }
        self.subtree(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves
    /// (RFC 9162 §2.1.3.1), bottom first; `None` unless `index < size ≤ self.size()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out)?;
        Some(out)
    }

    /// The consistency proof between the trees of `old_size` and `new_size` leaves
    /// (RFC 9162 §2.1.4.1); empty when `old_size` is 0 or equals `new_size`; `None`
    /// unless `old_size ≤ new_size ≤ self.size()`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size > new_size || new_size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.subproof(old_size, 0, new_size, true, &mut out)?;
        }
        Some(out)
    }

    /// The hash of the complete aligned subtree `index` of level `k`.
    fn complete(&self, k: u32, index: u64) -> Option<Hash> {
        let level = self.levels.get(k as usize)?;
        level.get(usize::try_from(index).ok()?).copied()
    }

    /// `MTH(D[start : start + n])`, for `n ≥ 1` and a range inside the log.
    fn subtree(&self, start: u64, n: u64) -> Option<Hash> {
        if n.is_power_of_two() && start.is_multiple_of(n) {
            return self.complete(n.trailing_zeros(), start / n);
        }
        if n < 2 {
            return None;
        }
        let k = split(n);
        let left = self.subtree(start, k)?;
        let right = self.subtree(start + k, n - k)?;
        Some(node_hash(&left, &right))
    }

    /// `PATH(m, D[start : start + n])`, appended bottom first.
    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Option<()> {
        if n <= 1 {
            return Some(());
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out)?;
            out.push(self.subtree(start + k, n - k)?);
        } else {
            self.path(m - k, start + k, n - k, out)?;
            out.push(self.subtree(start, k)?);
        }
        Some(())
    }

    /// `SUBPROOF(m, D[start : start + n], b)`.
    fn subproof(&self, m: u64, start: u64, n: u64, b: bool, out: &mut Vec<Hash>) -> Option<()> {
        if m == n {
            if !b {
                out.push(self.subtree(start, n)?);
            }
            return Some(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, b, out)?;
            out.push(self.subtree(start + k, n - k)?);
        } else {
            self.subproof(m - k, start + k, n - k, false, out)?;
            out.push(self.subtree(start, k)?);
        }
        Some(())
    }
}

/// The Merkle tree hash of `leaf_hashes` (already leaf-hashed), in `O(n)`.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    MerkleLog::from_leaf_hashes(leaf_hashes).root()
}

/// The inclusion proof of leaf `index` in the tree of all of `leaf_hashes`.
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Option<Vec<Hash>> {
    MerkleLog::from_leaf_hashes(leaf_hashes).inclusion_proof(index, leaf_hashes.len() as u64)
}

/// The consistency proof from the tree of the first `old_size` of `leaf_hashes` to the
/// tree of all of them.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Option<Vec<Hash>> {
    MerkleLog::from_leaf_hashes(leaf_hashes).consistency_proof(old_size, leaf_hashes.len() as u64)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TlogError> {
    if index >= size {
        return Err(TlogError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(TlogError::WrongProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(TlogError::WrongProofLength);
    }
    if r == *root {
        Ok(())
    } else {
        Err(TlogError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the
/// tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Equal sizes need
/// an empty proof and equal roots; an old size of 0 needs an empty proof and
/// [`EMPTY_ROOT`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), TlogError> {
    if old_size > new_size {
        return Err(TlogError::OldLargerThanNew { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(TlogError::WrongProofLength);
        }
        let expected_old = if old_size == 0 { &EMPTY_ROOT } else { new_root };
        return if old_root == expected_old {
            Ok(())
        } else {
            Err(TlogError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(TlogError::WrongProofLength);
    }
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (first, rest) = match path.split_first() {
        Some(x) => x,
        None => return Err(TlogError::WrongProofLength),
    };
    let mut fr = **first;
    let mut sr = **first;
    for c in rest {
        if s_n == 0 {
            return Err(TlogError::WrongProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(TlogError::WrongProofLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(TlogError::RootMismatch)
    }
}

/// The JSON form of an inclusion proof, as read by `tools/verify/tlog_verify.py`:
/// `{"leaf_index":…,"tree_size":…,"leaf_hash":HEX,"root_hash":HEX,"path":[HEX,…]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProofFile {
    pub leaf_index: u64,
    pub tree_size: u64,
    #[serde(with = "hex32")]
    pub leaf_hash: Hash,
    #[serde(with = "hex32")]
    pub root_hash: Hash,
    #[serde(with = "hex32_vec")]
    pub path: Vec<Hash>,
}

impl InclusionProofFile {
    /// [`verify_inclusion`] on the file's fields.
    pub fn verify(&self) -> Result<(), TlogError> {
        verify_inclusion(
            &self.leaf_hash,
            self.leaf_index,
            self.tree_size,
            &self.path,
            &self.root_hash,
        )
    }
}

/// The JSON form of a consistency proof, as read by `tools/verify/tlog_verify.py`:
/// `{"old_size":…,"new_size":…,"old_root":HEX,"new_root":HEX,"proof":[HEX,…]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProofFile {
    pub old_size: u64,
    pub new_size: u64,
    #[serde(with = "hex32")]
    pub old_root: Hash,
    #[serde(with = "hex32")]
    pub new_root: Hash,
    #[serde(with = "hex32_vec")]
    pub proof: Vec<Hash>,
}

impl ConsistencyProofFile {
    /// [`verify_consistency`] on the file's fields.
    pub fn verify(&self) -> Result<(), TlogError> {
        verify_consistency(
            self.old_size,
            self.new_size,
            &self.proof,
            &self.old_root,
            &self.new_root,
        )
    }
}
