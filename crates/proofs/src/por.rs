//! por/v1: proof of liabilities as a Merkle sum tree.
//!
//! The exchange puts every customer's balance (in satoshis) into a leaf, pads the tree to
//! a fixed height with zero leaves that look like real ones, and publishes the root hash
//! and the root sum (the total it owes). Each customer receives an inclusion proof: their
//! own leaf data and the sibling (hash, sum) pairs on the way up. Recomputing the root
//! from it shows that their balance is counted in the published total. Every node hashes
//! **both** child sums, so the exchange cannot shrink the total by showing customers
//! made-up sibling sums (the attack on Maxwell's original tree), and sums are unsigned
//! and capped at the bitcoin supply, so negative or huge fake accounts cannot offset
//! real ones.
//!
//! # Exact bytes
//!
//! `H` = SHA-256, `‖` = concatenation, `u64be`/`u32be` = big-endian integers, ASCII tags
//! are literal bytes, amounts are satoshis, [`MAX_SAT`] = 2 100 000 000 000 000.
//!
//! | item | definition |
//! |---|---|
//! | epoch id | `H("por/v1/epoch" ‖ u64be(ledger_seq) ‖ u32be(block_height) ‖ block_hash)` (block hash in internal byte order) |
//! | per-user key `k_u` | `HMAC-SHA256(key = por_secret, msg = "por/v1/user-key" ‖ epoch_id ‖ u64be(account_id))` |
//! | user id | `H("por/v1/uid" ‖ epoch_id ‖ u64be(account_id) ‖ H(login_utf8) ‖ k_u)` |
//! | padding id | `H("por/v1/pad" ‖ epoch_id ‖ u64be(j) ‖ pad_secret)` for `j = 0, 1, …`, balance 0 |
//! | leaf | `hash = H(0x00 ‖ uid ‖ u64be(balance))`, `sum = balance` |
//! | node | `hash = H(0x01 ‖ L.hash ‖ u64be(L.sum) ‖ R.hash ‖ u64be(R.sum))`, `sum = L.sum + R.sum` (checked, ≤ `MAX_SAT`) |
//! | shape | complete binary tree of height `D`; all `2^D` slots filled (customers, then padding `j = 0 .. 2^D − n`), **sorted by uid** (bytewise ascending) |
//! | reserves message | `"por/v1 " ‖ hex(epoch_id) ‖ " " ‖ hex(root.hash) ‖ " " ‖ decimal(root.sum)` |
//!
//! Verification ([`verify`]): reject unless the proof has exactly `D` siblings and
//! `index < 2^D`; start from the customer's leaf; at level `i` (from the bottom), if bit
//! `i` of the index is 0 the current node is the left child (`node(cur, sib)`), else the
//! right one (`node(sib, cur)`); every sibling sum must be ≤ `MAX_SAT` and no sum may
//! overflow or exceed `MAX_SAT`. Accept iff the result equals the published
//! `(root.hash, root.sum)` and, where the reserves are known, `root.sum ≤ reserves`.
//! The customer must also check that the proof names their account id, login and
//! balance ([`InclusionProof::is_for`]).
//!
//! # Cost
//!
//! Building a tree of height `D` costs about `2^D` HMACs and `4 · 2^D` SHA-256 calls and
//! keeps every level in memory (`2^(D+1)` nodes of 40 bytes plus 80 bytes per slot while
//! building: about 170 MB at `D = 20`). Proofs are then `O(D)` lookups.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{hex32, sha256, Hash};

/// The bitcoin supply cap in satoshis; no balance or sum may exceed it.
pub const MAX_SAT: u64 = 2_100_000_000_000_000;

/// The largest tree height accepted by [`LiabilityTree::build`] and [`verify`].
pub const MAX_DEPTH: u32 = 32;

/// The format tag written in the JSON forms.
pub const VERSION: &str = "por/v1";

/// Why a tree could not be built or a proof did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PorError {
    /// The same account id appears twice in the input.
    DuplicateAccount(u64),
    /// A balance is above [`MAX_SAT`].
    BalanceTooLarge { account_id: u64, balance: u64 },
    /// Adding two sums overflowed 64 bits.
    SumOverflow,
    /// A sum is above [`MAX_SAT`].
    SumExceedsSupply,
    /// More accounts than the `2^depth` slots of the tree.
    TooManyAccounts { accounts: usize, slots: u64 },
    /// The height is above [`MAX_DEPTH`].
    DepthTooLarge(u32),
    /// Two slots got the same user id (a SHA-256 collision; never expected).
    DuplicateUid,
    /// The proof does not have exactly `depth` siblings.
    WrongSiblingCount { expected: u32, got: usize },
    /// The proof's index is not below `2^depth`.
    IndexOutOfRange { index: u64, depth: u32 },
    /// A sibling's sum is above [`MAX_SAT`] (level 0 is the bottom).
    SiblingSumTooLarge { level: usize },
    /// The recomputed root differs from the published one.
    RootMismatch,
    /// The published root sum is larger than the reserves shown for the same epoch.
    ReservesShort { liabilities: u64, reserves: u64 },
    /// A JSON form is inconsistent (wrong version, or a derived field that does not match).
    BadFormat(&'static str),
}

impl fmt::Display for PorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PorError::DuplicateAccount(id) => write!(f, "account {id} appears twice"),
            PorError::BalanceTooLarge {
                account_id,
                balance,
            } => write!(
                f,
                "account {account_id}: balance {balance} is above the supply cap"
            ),
            PorError::SumOverflow => write!(f, "a sum overflows 64 bits"),
            PorError::SumExceedsSupply => write!(f, "a sum is above the supply cap"),
            PorError::TooManyAccounts { accounts, slots } => {
                write!(f, "{accounts} accounts do not fit in {slots} slots")
            }
            PorError::DepthTooLarge(d) => write!(f, "depth {d} is above {MAX_DEPTH}"),
            PorError::DuplicateUid => write!(f, "two slots share a user id"),
            PorError::WrongSiblingCount { expected, got } => {
                write!(f, "expected {expected} siblings, got {got}")
            }
            PorError::IndexOutOfRange { index, depth } => {
                write!(f, "index {index} is outside a tree of depth {depth}")
            }
            PorError::SiblingSumTooLarge { level } => {
                write!(f, "sibling sum at level {level} is above the supply cap")
            }
            PorError::RootMismatch => write!(f, "the proof does not lead to the published root"),
            PorError::ReservesShort {
                liabilities,
                reserves,
            } => write!(f, "liabilities {liabilities} exceed reserves {reserves}"),
            PorError::BadFormat(what) => write!(f, "malformed por/v1 data: {what}"),
        }
    }
}

impl std::error::Error for PorError {}

/// The moment a proof of liabilities is taken: a ledger sequence number and the chain tip
/// the reserves are proved at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub ledger_seq: u64,
    pub block_height: u32,
    /// Block hash in internal byte order (as hashed, not the reversed display order).
    #[serde(with = "hex32")]
    pub block_hash: Hash,
}

impl Epoch {
    /// `H("por/v1/epoch" ‖ u64be(ledger_seq) ‖ u32be(block_height) ‖ block_hash)`.
    pub fn epoch_id(&self) -> Hash {
        sha256(&[
            b"por/v1/epoch",
            &self.ledger_seq.to_be_bytes(),
            &self.block_height.to_be_bytes(),
            &self.block_hash,
        ])
    }
}

/// A node of the sum tree (or a leaf): its hash and the sum of the balances below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumNode {
    #[serde(with = "hex32")]
    pub hash: Hash,
    pub sum: u64,
}

/// HMAC-SHA256 with the key already absorbed, so that one key can authenticate a million
/// messages at the cost of two compressions each (RFC 2104).
#[derive(Clone)]
struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    fn new(key: &[u8]) -> HmacKey {
        let mut k0 = [0u8; 64];
        if key.len() > 64 {
            k0[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k0[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(k0.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(k0.map(|b| b ^ 0x5c));
        HmacKey { inner, outer }
    }

    fn mac(&self, parts: &[&[u8]]) -> Hash {
        let mut inner = self.inner.clone();
        for p in parts {
            inner.update(p);
        }
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

fn user_key_with(key: &HmacKey, epoch_id: &Hash, account_id: u64) -> Hash {
    key.mac(&[b"por/v1/user-key", epoch_id, &account_id.to_be_bytes()])
}

/// The per-user key `k_u = HMAC-SHA256(por_secret, "por/v1/user-key" ‖ epoch_id ‖ u64be(account_id))`,
/// shown to the user in their proof.
pub fn user_key(por_secret: &[u8], epoch_id: &Hash, account_id: u64) -> Hash {
    user_key_with(&HmacKey::new(por_secret), epoch_id, account_id)
}

/// The user id `H("por/v1/uid" ‖ epoch_id ‖ u64be(account_id) ‖ H(login) ‖ k_u)`.
pub fn user_id(epoch_id: &Hash, account_id: u64, login: &str, user_key: &Hash) -> Hash {
    let login_hash = sha256(&[login.as_bytes()]);
    sha256(&[
        b"por/v1/uid",
        epoch_id,
        &account_id.to_be_bytes(),
        &login_hash,
        user_key,
    ])
}

/// The id of padding slot `j`: `H("por/v1/pad" ‖ epoch_id ‖ u64be(j) ‖ pad_secret)`.
pub fn pad_id(epoch_id: &Hash, j: u64, pad_secret: &[u8]) -> Hash {
    sha256(&[b"por/v1/pad", epoch_id, &j.to_be_bytes(), pad_secret])
}

/// A leaf: `hash = H(0x00 ‖ uid ‖ u64be(balance))`, `sum = balance`. The range of the
/// balance is checked by the builder and the verifier, not here.
pub fn leaf(uid: &Hash, balance: u64) -> SumNode {
    SumNode {
        hash: sha256(&[&[0x00], uid, &balance.to_be_bytes()]),
        sum: balance,
    }
}

/// An inner node: `hash = H(0x01 ‖ L.hash ‖ u64be(L.sum) ‖ R.hash ‖ u64be(R.sum))`,
/// `sum = L.sum + R.sum`, which must neither overflow nor exceed [`MAX_SAT`].
pub fn node(left: &SumNode, right: &SumNode) -> Result<SumNode, PorError> {
    let sum = left
        .sum
        .checked_add(right.sum)
        .ok_or(PorError::SumOverflow)?;
    if sum > MAX_SAT {
        return Err(PorError::SumExceedsSupply);
    }
    Ok(SumNode {
        hash: sha256(&[
            &[0x01],
            &left.hash,
            &left.sum.to_be_bytes(),
            &right.hash,
            &right.sum.to_be_bytes(),
        ]),
        sum,
    })
}

/// The message the BIP-127 proof of reserves commits to:
/// `"por/v1 " ‖ hex(epoch_id) ‖ " " ‖ hex(root.hash) ‖ " " ‖ root.sum`.
pub fn reserves_message(epoch_id: &Hash, root: &SumNode) -> String {
    format!(
        "{VERSION} {} {} {}",
        hex::encode(epoch_id),
        hex::encode(root.hash),
        root.sum
    )
}

/// One customer's entry in a built tree.
#[derive(Clone, Debug)]
struct Entry {
    account_id: u64,
    login: String,
    user_key: Hash,
    balance: u64,
    index: u64,
}

/// A built por/v1 tree: every level kept, so proofs are lookups.
#[derive(Clone)]
pub struct LiabilityTree {
    epoch_id: Hash,
    depth: u32,
    /// `levels[0]` are the `2^depth` leaves in slot order, `levels[depth]` is `[root]`.
    levels: Vec<Vec<SumNode>>,
    /// Customers, sorted by account id.
    entries: Vec<Entry>,
}

impl fmt::Debug for LiabilityTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiabilityTree")
            .field("epoch_id", &hex::encode(self.epoch_id))
            .field("depth", &self.depth)
            .field("accounts", &self.entries.len())
            .field("root", &self.root())
            .finish()
    }
}

impl LiabilityTree {
    /// Builds the tree for `epoch` of height `depth` over `accounts`, given as
    /// `(account_id, login, balance in satoshis)`.
    ///
    /// Rejects duplicate account ids, a balance above [`MAX_SAT`], a total that overflows
    /// or is above [`MAX_SAT`], more accounts than `2^depth` and a depth above
    /// [`MAX_DEPTH`]. `por_secret` keys the per-user keys; `pad_secret` makes padding
    /// leaves unpredictable. Both must stay private to the exchange.
    pub fn build(
        epoch: &Epoch,
        por_secret: &[u8],
        pad_secret: &[u8],
        depth: u32,
        accounts: &[(u64, &str, u64)],
    ) -> Result<LiabilityTree, PorError> {
        if depth > MAX_DEPTH {
            return Err(PorError::DepthTooLarge(depth));
        }
        let slots: u64 = 1 << depth;
        if accounts.len() as u64 > slots {
            return Err(PorError::TooManyAccounts {
                accounts: accounts.len(),
                slots,
            });
        }
        let mut total: u64 = 0;
        for &(account_id, _, balance) in accounts {
            if balance > MAX_SAT {
                return Err(PorError::BalanceTooLarge {
                    account_id,
                    balance,
                });
            }
            total = total.checked_add(balance).ok_or(PorError::SumOverflow)?;
        }
        if total > MAX_SAT {
            return Err(PorError::SumExceedsSupply);
        }
        let mut ids: Vec<u64> = accounts.iter().map(|a| a.0).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(PorError::DuplicateAccount(w[0]));
        }

        let epoch_id = epoch.epoch_id();
        let key = HmacKey::new(por_secret);
        // (uid, leaf, position in `accounts` or usize::MAX for padding)
        let mut slots_vec: Vec<(Hash, SumNode, usize)> = Vec::with_capacity(slots as usize);
        let mut user_keys = Vec::with_capacity(accounts.len());
        for (pos, &(account_id, login, balance)) in accounts.iter().enumerate() {
            let k = user_key_with(&key, &epoch_id, account_id);
            let uid = user_id(&epoch_id, account_id, login, &k);
            slots_vec.push((uid, leaf(&uid, balance), pos));
            user_keys.push(k);
        }
        for j in 0..slots - accounts.len() as u64 {
            let uid = pad_id(&epoch_id, j, pad_secret);
            slots_vec.push((uid, leaf(&uid, 0), usize::MAX));
        }
        slots_vec.sort_unstable_by_key(|a| a.0);
        if slots_vec.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(PorError::DuplicateUid);
        }

        let mut entries = Vec::with_capacity(accounts.len());
        for (index, (_, _, pos)) in slots_vec.iter().enumerate() {
            if let (Some(&(account_id, login, balance)), Some(k)) =
                (accounts.get(*pos), user_keys.get(*pos))
            {
                entries.push(Entry {
                    account_id,
                    login: login.to_owned(),
                    user_key: *k,
                    balance,
                    index: index as u64,
                });
            }
        }
        entries.sort_unstable_by_key(|e| e.account_id);

        let mut levels = Vec::with_capacity(depth as usize + 1);
        levels.push(slots_vec.into_iter().map(|s| s.1).collect::<Vec<_>>());
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|pair| node(&pair[0], &pair[1]))
                .collect::<Result<Vec<_>, _>>()?;
            levels.push(above);
        }
        Ok(LiabilityTree {
            epoch_id,
            depth,
            levels,
            entries,
        })
    }

    /// The epoch id the tree was built for.
    pub fn epoch_id(&self) -> Hash {
        self.epoch_id
    }

    /// The tree's height `D`.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The number of customer accounts in the tree (padding excluded).
    pub fn accounts(&self) -> usize {
        self.entries.len()
    }

    /// The root: the hash to publish and the total liabilities.
    pub fn root(&self) -> SumNode {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(SumNode {
                hash: [0; 32],
                sum: 0,
            })
    }

    /// The leaf in slot `index`, if there is one.
    pub fn leaf_at(&self, index: u64) -> Option<SumNode> {
        self.levels
            .first()
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// The inclusion proof of `account_id`, or `None` if it is not in the tree.
    pub fn proof(&self, account_id: u64) -> Option<InclusionProof> {
        let pos = self
            .entries
            .binary_search_by_key(&account_id, |e| e.account_id)
            .ok()?;
        let e = self.entries.get(pos)?;
        Some(InclusionProof {
            account_id: e.account_id,
            login: e.login.clone(),
            user_key: e.user_key,
            balance: e.balance,
            index: e.index,
            siblings: self.path(e.index)?,
        })
    }

    /// The siblings, bottom first, of slot `index` (any slot, padding included).
    pub fn path(&self, index: u64) -> Option<Vec<SumNode>> {
        let mut siblings = Vec::with_capacity(self.depth as usize);
        let mut i = index;
        for level in self.levels.iter().take(self.depth as usize) {
            siblings.push(*level.get(usize::try_from(i ^ 1).ok()?)?);
            i >>= 1;
        }
        if i == 0 {
            Some(siblings)
        } else {
            None
        }
    }

    /// The public report of this tree; `reserves_sat` is the amount the proof of reserves
    /// for the same epoch shows, if known.
    pub fn report(&self, epoch: &Epoch, reserves_sat: Option<u64>) -> Report {
        Report {
            epoch: *epoch,
            depth: self.depth,
            root: self.root(),
            reserves_sat,
        }
    }
}

/// What one customer receives: their own leaf data and the path to the root.
///
/// JSON form (see the crate's `README.md`):
/// `{"version":"por/v1","account_id":1,"login":"alice","user_key":HEX,"balance":150000000,
/// "index":2,"siblings":[{"hash":HEX,"sum":0}, …]}`, siblings listed from the bottom up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProofJson", into = "ProofJson")]
pub struct InclusionProof {
    pub account_id: u64,
    pub login: String,
    /// `k_u`, which lets the customer recompute their user id.
    pub user_key: Hash,
    pub balance: u64,
    /// The leaf's slot, `0 .. 2^D`; bit `i` tells on which side the path runs at level `i`.
    pub index: u64,
    /// `(hash, sum)` of the sibling at each level, bottom first; exactly `D` of them.
    pub siblings: Vec<SumNode>,
}

impl InclusionProof {
    /// Whether the proof is about this customer and this balance. A valid proof for
    /// somebody else, or for a smaller balance, proves nothing to this customer.
    pub fn is_for(&self, account_id: u64, login: &str, balance: u64) -> bool {
        self.account_id == account_id && self.login == login && self.balance == balance
    }

    /// The leaf this proof starts from.
    pub fn leaf(&self, epoch_id: &Hash) -> SumNode {
        let uid = user_id(epoch_id, self.account_id, &self.login, &self.user_key);
        leaf(&uid, self.balance)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct ProofJson {
    version: String,
    account_id: u64,
    login: String,
    #[serde(with = "hex32")]
    user_key: Hash,
    balance: u64,
    index: u64,
    siblings: Vec<SumNode>,
}

impl TryFrom<ProofJson> for InclusionProof {
    type Error = PorError;
    fn try_from(j: ProofJson) -> Result<Self, PorError> {
        if j.version != VERSION {
            return Err(PorError::BadFormat("version is not por/v1"));
        }
        Ok(InclusionProof {
            account_id: j.account_id,
            login: j.login,
            user_key: j.user_key,
            balance: j.balance,
            index: j.index,
            siblings: j.siblings,
        })
    }
}

impl From<InclusionProof> for ProofJson {
    fn from(p: InclusionProof) -> Self {
        ProofJson {
            version: VERSION.to_owned(),
            account_id: p.account_id,
            login: p.login,
            user_key: p.user_key,
            balance: p.balance,
            index: p.index,
            siblings: p.siblings,
        }
    }
}

/// Checks `proof` against the published `(epoch_id, depth, root)` by the rules of the
/// module documentation. This checks the path only; the customer must also check
/// [`InclusionProof::is_for`] and, through [`Report::check`], the reserves.
pub fn verify(
    proof: &InclusionProof,
    epoch_id: &Hash,
    depth: u32,
    root: &SumNode,
) -> Result<(), PorError> {
    if depth > MAX_DEPTH {
        return Err(PorError::DepthTooLarge(depth));
    }
    if proof.siblings.len() != depth as usize {
        return Err(PorError::WrongSiblingCount {
            expected: depth,
            got: proof.siblings.len(),
        });
    }
    if proof.index >= 1u64 << depth {
        return Err(PorError::IndexOutOfRange {
            index: proof.index,
            depth,
        });
    }
    if proof.balance > MAX_SAT {
        return Err(PorError::BalanceTooLarge {
            account_id: proof.account_id,
            balance: proof.balance,
        });
    }
    if root.sum > MAX_SAT {
        return Err(PorError::SumExceedsSupply);
    }
    let mut cur = proof.leaf(epoch_id);
    for (level, sib) in proof.siblings.iter().enumerate() {
        if sib.sum > MAX_SAT {
            return Err(PorError::SiblingSumTooLarge { level });
        }
        cur = if (proof.index >> level) & 1 == 0 {
            node(&cur, sib)?
        } else {
            node(sib, &cur)?
        };
    }
    if cur == *root {
        Ok(())
    } else {
        Err(PorError::RootMismatch)
    }
}

/// What the exchange publishes (signed, and logged in its audit log before any proof is
/// handed out) for one epoch.
///
/// JSON form: `{"version":"por/v1","epoch":{"ledger_seq":…,"block_height":…,"block_hash":HEX},
/// "epoch_id":HEX,"depth":D,"root":{"hash":HEX,"sum":…},"reserves_message":"por/v1 …",
/// "reserves_sat":…}`; `epoch_id` and `reserves_message` are derived and checked on
/// reading, `reserves_sat` may be `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReportJson", into = "ReportJson")]
pub struct Report {
    pub epoch: Epoch,
    pub depth: u32,
    pub root: SumNode,
    /// The reserves the BIP-127 proof for the same epoch shows, in satoshis, if known.
    /// This crate does not verify that proof; it only compares the amounts.
    pub reserves_sat: Option<u64>,
}

impl Report {
    /// The epoch id of [`Report::epoch`].
    pub fn epoch_id(&self) -> Hash {
        self.epoch.epoch_id()
    }

    /// The message the proof of reserves must commit to.
    pub fn reserves_message(&self) -> String {
        reserves_message(&self.epoch_id(), &self.root)
    }

    /// Checks `proof` against this report: [`verify`], then `root.sum ≤ reserves_sat`
    /// where the reserves are given.
    pub fn check(&self, proof: &InclusionProof) -> Result<(), PorError> {
        verify(proof, &self.epoch_id(), self.depth, &self.root)?;
        match self.reserves_sat {
            Some(reserves) if self.root.sum > reserves => Err(PorError::ReservesShort {
                liabilities: self.root.sum,
                reserves,
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct ReportJson {
    version: String,
    epoch: Epoch,
    #[serde(with = "hex32")]
    epoch_id: Hash,
    depth: u32,
    root: SumNode,
    reserves_message: String,
    #[serde(default)]
    reserves_sat: Option<u64>,
}

impl TryFrom<ReportJson> for Report {
    type Error = PorError;
    fn try_from(j: ReportJson) -> Result<Self, PorError> {
        if j.version != VERSION {
            return Err(PorError::BadFormat("version is not por/v1"));
        }
        let r = Report {
            epoch: j.epoch,
            depth: j.depth,
            root: j.root,
            reserves_sat: j.reserves_sat,
        };
        if r.epoch_id() != j.epoch_id {
            return Err(PorError::BadFormat("epoch_id does not match the epoch"));
        }
        if r.reserves_message() != j.reserves_message {
            return Err(PorError::BadFormat("reserves_message does not match"));
        }
        Ok(r)
    }
}

impl From<Report> for ReportJson {
    fn from(r: Report) -> Self {
        ReportJson {
            version: VERSION.to_owned(),
            epoch: r.epoch,
            epoch_id: r.epoch_id(),
            depth: r.depth,
            root: r.root,
            reserves_message: r.reserves_message(),
            reserves_sat: r.reserves_sat,
        }
    }
}
