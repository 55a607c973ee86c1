//! The signed Merkle audit log over the journal (`kura audit …`).
//!
//! The journal's hash chain makes local edits detectable, but proving that one record is
//! in it, or that today's journal extends last month's, takes the whole journal. So the
//! journal is also the sequence of leaves of an RFC 9162 Merkle tree (`kura-proofs`'
//! `tlog`), and the node signs the tree's size and root as C2SP checkpoints
//! (`kura-proofs`' `checkpoint`, Ed25519). An auditor holding a checkpoint can then be
//! shown, with `O(log n)` hashes, that a record is in the log (inclusion proof) and that a
//! later checkpoint extends it (consistency proof).
//!
//! # Leaves
//!
//! Leaf `i` (0-based) is the journal record with sequence number `i + 1` (the journal
//! starts at seq 1 and has no gaps). Its **leaf data** is
//!
//! ```text
//! u64be(seq) ‖ payload
//! ```
//!
//! 8 bytes of the sequence number, big endian, followed by the record's payload exactly
//! as journaled (the engine codec's bytes of the command with its timestamp and origin:
//! API key id, source address and user agent, or operator). The leaf hash is RFC 9162's
//! `SHA-256(0x00 ‖ leaf data)`. `kura audit prove-inclusion --json` prints the payload in
//! hex next to the decoded record, so anyone can recompute the leaf (`tools/verify/
//! tlog_verify.py` does). The journal's chain hash is not part of the leaf: the tree
//! already commits to the order and content of every record.
//!
//! # Checkpoints and the key
//!
//! Checkpoints follow `c2sp.org/tlog-checkpoint`:
//!
//! ```text
//! kura.local/<16 hex digits>            origin = the key's name
//! <size>                                number of records covered (1..=size)
//! <base64 root>                         RFC 9162 root of their leaves
//! kura-journal-head <size> <64 hex>     the journal's chain hash at record <size>
//! <blank line>
//! — kura.local/<16 hex digits> <base64(key id ‖ Ed25519 signature)>
//! ```
//!
//! The extension line ties the signed root to the journal head that `kura journal head`
//! prints and that may be published separately. The origin and key name are
//! `kura.local/` followed by the first 8 bytes, in hex, of SHA-256 of the node's Ed25519
//! public key: stable for as long as the data directory keeps its key, and different for
//! every key.
//!
//! # Files
//!
//! ```text
//! DIR/audit/LOCK                  flock: exclusive while writing, shared while reading
//! DIR/audit/node.key              the Ed25519 seed, 64 hex digits; mode 0600, created at
//!                                 first use; refused if group or others have any access
//! DIR/audit/node.pub              the verifier key string `<name>+<key id>+<base64 key>`
//! DIR/audit/leaves                the leaf hashes, 32 bytes each, leaf i at offset 32·i;
//!                                 append-only
//! DIR/audit/checkpoints/<size>.txt  one signed checkpoint per size
//! ```
//!
//! # What a checkpoint run checks
//!
//! `kura audit checkpoint` does not rehash the records the leaves file already covers.
//! Instead:
//!
//! - the leaves file's length must be a whole number of hashes, no more than the
//!   journal's records;
//! - the newest signed checkpoint not beyond the leaves file (its signature checked with
//!   the node key) must have the root of the cached leaves of its size: an edited leaves
//!   file is found here;
//! - the journal is read from the segment holding that checkpoint's size on (every
//!   record's CRC and chain hash checked from that segment's header); the record at that
//!   size must have the chain hash the checkpoint's `kura-journal-head` line recorded, so
//!   a journal rewritten with a valid chain before it is found; every record from it to
//!   the end of the leaves file is rehashed and compared with the cache; the records after
//!   it are hashed and appended;
//! - the newest checkpoint overall must be a prefix of the new tree.
//!
//! A record edited *without* fixing the chain, in a segment before the one read, is not
//! seen by this run (it breaks that record's CRC and chain, which `kura journal verify`,
//! `kura audit checkpoint --full` and `kura audit verify-checkpoint` find: they read the
//! whole journal from genesis and rehash every leaf).
//!
//! # Reading while a server runs
//!
//! The journal reader takes no lock and never writes. It sees a prefix of what the
//! writer has written: a record or segment header being written at that moment looks like
//! a torn tail and is left for the next checkpoint. What it sees may not yet be durable
//! (the writer's `fdatasync` may not have returned), so before signing, the segment
//! holding the last covered record is synced (`fdatasync` through a read-only handle;
//! earlier segments were synced before the next one was created). A checkpoint therefore
//! never covers bytes a power loss could take back. One case remains: if the writer's own
//! sync failed, the page cache may still hold records that never reach the disk, and a
//! sync through another handle may not report that error; the writer then stops, and the
//! next recovery shows a journal shorter than the checkpoint, which the next checkpoint run
//! reports.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::SigningKey;
use kura_journal::{parse_segment_file_name, JournalReader, Progress, StdFs, JOURNAL_SUBDIR};
use kura_proofs::checkpoint::{self, Checkpoint, NoteVerifier, MAX_NOTE_LEN};
use kura_proofs::tlog::{node_hash, EMPTY_ROOT};
use kura_proofs::Hash;
use sha2::{Digest, Sha256};

/// The audit log's subdirectory of the data directory.
pub const AUDIT_SUBDIR: &str = "audit";
/// The node's Ed25519 seed.
pub const KEY_FILE: &str = "node.key";
/// The node's verifier key string.
pub const PUB_FILE: &str = "node.pub";
/// The cached leaf hashes.
pub const LEAVES_FILE: &str = "leaves";
/// The signed checkpoints, one file per size.
pub const CHECKPOINTS_SUBDIR: &str = "checkpoints";
/// The audit directory's lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The checkpoint extension line naming the journal head the checkpoint covers.
pub const JOURNAL_HEAD_EXTENSION: &str = "kura-journal-head";
/// The prefix of the log's origin and key name.
pub const ORIGIN_PREFIX: &str = "kura.local/";

const HASH_LEN: usize = 32;

/// The leaf data of the journal record `seq` with `payload`: `u64be(seq) ‖ payload`.
pub fn leaf_data(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The leaf hash of the journal record `seq` with `payload`:
/// `SHA-256(0x00 ‖ u64be(seq) ‖ payload)`, without copying the payload.
pub fn record_leaf_hash(seq: u64, payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(seq.to_be_bytes());
    h.update(payload);
    h.finalize().into()
}

/// The RFC 9162 root of a sequence of leaf hashes, computed as they arrive with
/// `O(log n)` memory: the stack holds the roots of the perfect subtrees the leaves so far
/// split into, largest first.
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl RootBuilder {
    pub fn new() -> RootBuilder {
        RootBuilder::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves pushed so far: the perfect subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The RFC 9162 root of `leaves`.
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut b = RootBuilder::new();
    for l in leaves {
        b.push(*l);
    }
    b.root()
}

fn audit_dir(data: &Path) -> PathBuf {
    data.join(AUDIT_SUBDIR)
}

/// The file of the checkpoint of `size` records.
pub fn checkpoint_path(data: &Path, size: u64) -> PathBuf {
    audit_dir(data)
        .join(CHECKPOINTS_SUBDIR)
        .join(format!("{size}.txt"))
}

/// The lock on `DIR/audit`, released when dropped.
#[derive(Debug)]
pub struct AuditLock {
    _file: File,
}

impl AuditLock {
    /// Waits for the exclusive lock (one writer of the audit files at a time), creating
    /// the audit directory if needed.
    pub fn exclusive(data: &Path) -> Result<AuditLock> {
        let dir = ensure_audit_dir(data)?;
        let file = open_lock(&dir)?;
        file.lock()
            .with_context(|| format!("locking {}", dir.join(LOCK_FILE).display()))?;
        Ok(AuditLock { _file: file })
    }

    /// Waits for a shared lock (readers), so that no leaves file is read half-appended.
    pub fn shared(data: &Path) -> Result<AuditLock> {
        let dir = audit_dir(data);
        if !dir.is_dir() {
            bail!(
                "{} does not exist: run `kura audit checkpoint --data {}` first",
                dir.display(),
                data.display()
            );
        }
        let file = open_lock(&dir)?;
        file.lock_shared()
            .with_context(|| format!("locking {}", dir.join(LOCK_FILE).display()))?;
        Ok(AuditLock { _file: file })
    }
}

fn open_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn ensure_audit_dir(data: &Path) -> Result<PathBuf> {
    if !data.is_dir() {
        bail!("data directory {} does not exist", data.display());
    }
    let dir = audit_dir(data);
    for d in [dir.clone(), dir.join(CHECKPOINTS_SUBDIR)] {
        if !d.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("creating {}", d.display()))?;
            if let Some(parent) = d.parent() {
                sync_dir(parent)?;
            }
        }
    }
    Ok(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Writes `bytes` to `path` through a temporary file, a sync and a rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// Reads a small file whole, refusing more than `max` bytes.
fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(out)
}

/// The node's audit signing key and its verifier.
pub struct NodeKey {
    signing: SigningKey,
    verifier: NoteVerifier,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("verifier", &self.verifier.to_string())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    fn from_seed(seed: [u8; 32]) -> Result<NodeKey> {
        let signing = SigningKey::from_bytes(&seed);
        let public = signing.verifying_key();
        let digest = Sha256::digest(public.as_bytes());
        let name = format!("{ORIGIN_PREFIX}{}", hex::encode(&digest[..8]));
        let verifier =
            NoteVerifier::new(&name, public).map_err(|e| anyhow!("audit key name: {e}"))?;
        Ok(NodeKey { signing, verifier })
    }

    /// The key name, which is also the log's origin.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Signs `cp` (whose origin must be this key's name).
    pub fn sign(&self, cp: &Checkpoint) -> Result<String> {
        checkpoint::sign(cp, self.name(), &self.signing)
            .map_err(|e| anyhow!("signing the checkpoint: {e}"))
    }
}

/// Loads `DIR/audit/node.key`, creating it (mode 0600) if it does not exist, and writes
/// `DIR/audit/node.pub`. The caller holds the exclusive [`AuditLock`].
pub fn load_or_create_key(data: &Path, _lock: &AuditLock) -> Result<NodeKey> {
    let dir = ensure_audit_dir(data)?;
    let path = dir.join(KEY_FILE);
    let key = read_key(&path)?;
    let pub_path = dir.join(PUB_FILE);
    let line = format!("{}\n", key.verifier);
    if std::fs::read(&pub_path).ok().as_deref() != Some(line.as_bytes()) {
        write_atomic(&pub_path, line.as_bytes(), 0o644)?;
    }
    Ok(key)
}

/// Loads `DIR/audit/node.key`, which must exist.
pub fn load_key(data: &Path) -> Result<NodeKey> {
    let path = audit_dir(data).join(KEY_FILE);
    if !path.exists() {
        bail!(
            "{} does not exist: run `kura audit checkpoint --data {}` first",
            path.display(),
            data.display()
        );
    }
    read_key(&path)
}

/// The key in `path`, created on first use (mode 0600, refused when group or others
/// may read it): the same rules as the node's master key.
fn read_key(path: &Path) -> Result<NodeKey> {
    let seed = crate::server::files::load_or_create_secret(path, "the audit log signing key")?;
    NodeKey::from_seed(seed)
}

/// Parses a verifier key given as a string or as the path of a file holding it (such as
/// `node.pub`).
pub fn parse_verifier(arg: &str) -> Result<NoteVerifier> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        let bytes = read_limited(path, 4096)?;
        String::from_utf8(bytes).map_err(|_| anyhow!("{} is not text", path.display()))?
    } else {
        arg.to_owned()
    };
    NoteVerifier::parse(text.trim()).map_err(|e| anyhow!("verifier key {arg}: {e}"))
}

/// A signed checkpoint as read from a file, already verified.
#[derive(Clone, Debug)]
pub struct SignedCheckpoint {
    pub path: PathBuf,
    pub note: String,
    pub checkpoint: Checkpoint,
}

impl SignedCheckpoint {
    /// The journal chain hash of the `kura-journal-head` line, which must name the
    /// checkpoint's size.
    pub fn journal_head(&self) -> Result<Option<Hash>> {
        journal_head_extension(&self.checkpoint)
    }
}

/// The `kura-journal-head <size> <hex>` line of `cp`, if any; an error if it is malformed
/// or names another size.
pub fn journal_head_extension(cp: &Checkpoint) -> Result<Option<Hash>> {
    let prefix = format!("{JOURNAL_HEAD_EXTENSION} ");
    let Some(rest) = cp.extensions.iter().find_map(|e| e.strip_prefix(&prefix)) else {
        return Ok(None);
    };
    let (seq, hash) = rest
        .split_once(' ')
        .ok_or_else(|| anyhow!("malformed {JOURNAL_HEAD_EXTENSION} line"))?;
    if seq != cp.size.to_string() {
        bail!(
            "the {JOURNAL_HEAD_EXTENSION} line names seq {seq}, not the checkpoint's size {}",
            cp.size
        );
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(hash, &mut h)
        .map_err(|_| anyhow!("malformed chain hash in the {JOURNAL_HEAD_EXTENSION} line"))?;
    Ok(Some(h))
}

/// Opens a signed checkpoint `note` with `verifier`: signature by the key, origin equal
/// to the key's name.
pub fn open_checkpoint(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint> {
    let cp = checkpoint::open(note, verifier).map_err(|e| anyhow!("{e}"))?;
    if cp.origin != verifier.name() {
        bail!(
            "the checkpoint's origin {:?} is not the log of key {}",
            cp.origin,
            verifier.name()
        );
    }
    Ok(cp)
}

/// Reads a checkpoint note from a file, refusing files larger than a note can be.
pub fn read_note(path: &Path) -> Result<String> {
    let bytes = read_limited(path, MAX_NOTE_LEN)?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}

/// Loads and verifies the checkpoint file of `size` records.
pub fn load_checkpoint(data: &Path, size: u64, key: &NodeKey) -> Result<SignedCheckpoint> {
    let path = checkpoint_path(data, size);
    let note = read_note(&path)?;
    let cp = open_checkpoint(&note, key.verifier())
        .with_context(|| format!("checkpoint {} does not verify", path.display()))?;
    if cp.size != size {
        bail!(
            "checkpoint {} is for size {}, not the size its name says",
            path.display(),
            cp.size
        );
    }
    Ok(SignedCheckpoint {
        path,
        note,
        checkpoint: cp,
    })
}

/// The sizes of the checkpoint files, ascending. Other files are ignored.
pub fn list_checkpoints(data: &Path) -> Result<Vec<u64>> {
    let dir = audit_dir(data).join(CHECKPOINTS_SUBDIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut sizes = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".txt")) else {
            continue;
        };
        if !stem.is_empty()
            && stem.bytes().all(|b| b.is_ascii_digit())
            && (stem == "0" || !stem.starts_with('0'))
        {
            if let Ok(n) = stem.parse::<u64>() {
                sizes.push(n);
            }
        }
    }
    sizes.sort_unstable();
    Ok(sizes)
}

/// Reads the cached leaf hashes. A missing file is an empty cache.
pub fn read_leaves(data: &Path) -> Result<Vec<Hash>> {
    let path = audit_dir(data).join(LEAVES_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if bytes.len() % HASH_LEN != 0 {
        bail!(
            "{} is {} bytes long, not a whole number of 32-byte hashes (damaged or \
             edited; delete it and run `kura audit checkpoint --full` to rebuild it from \
             the journal)",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// Appends `new` to the leaves file, which must hold exactly `old_len` hashes, and syncs.
fn append_leaves(data: &Path, old_len: usize, new: &[Hash]) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let dir = audit_dir(data);
    let path = dir.join(LEAVES_FILE);
    let created = !path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len != (old_len * HASH_LEN) as u64 {
        bail!(
            "{} changed while it was being extended ({} bytes, expected {})",
            path.display(),
            len,
            old_len * HASH_LEN
        );
    }
    let mut bytes = Vec::with_capacity(new.len() * HASH_LEN);
    for h in new {
        bytes.extend_from_slice(h);
    }
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("appending to {}", path.display()))?;
    if created {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Syncs the journal segment holding record `seq` (through a read-only handle), so that
/// the records read from it are on disk before they are signed.
fn sync_segment_holding(data: &Path, seq: u64) -> Result<()> {
    let dir = data.join(JOURNAL_SUBDIR);
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        if first <= seq && best.as_ref().is_none_or(|(b, _)| first > *b) {
            best = Some((first, entry.path()));
        }
    }
    let (_, path) = best.ok_or_else(|| anyhow!("no journal segment holds record {seq}"))?;
    File::open(&path)
        .and_then(|f| f.sync_data())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Calls `f` for every record from `from_seq` to `to_seq` (inclusive; `None`: to the end)
/// with its seq, chain hash and leaf hash; returns the journal head after the last record
/// read.
pub fn for_each_leaf(
    data: &Path,
    from_seq: u64,
    to_seq: Option<u64>,
    progress: &mut dyn FnMut(Progress),
    f: &mut dyn FnMut(u64, &Hash, Hash) -> Result<()>,
) -> Result<kura_journal::Head> {
    let mut reader = JournalReader::open_with(StdFs, data, from_seq)
        .with_context(|| format!("reading the journal in {}", data.display()))?;
    let mut last = None;
    while let Some(r) = reader.next_ref() {
        let r = r.with_context(|| format!("reading the journal in {}", data.display()))?;
        if to_seq.is_some_and(|t| r.seq > t) {
            break;
        }
        let (seq, chain) = (r.seq, r.chain_hash);
        f(seq, &chain, record_leaf_hash(seq, r.payload))?;
        last = Some(kura_journal::Head {
            seq,
            chain_hash: chain,
        });
        if seq % 4096 == 0 {
            progress(reader.progress());
        }
    }
    let mut p = reader.progress();
    p.bytes_done = p.bytes_total;
    progress(p);
    Ok(last.unwrap_or_else(|| reader.head()))
}

/// What [`make_checkpoint`] did.
#[derive(Clone, Debug)]
pub struct CheckpointOutcome {
    pub signed: SignedCheckpoint,
    /// True if a new checkpoint file was written (false: the journal has no record beyond
    /// the newest checkpoint, which is returned).
    pub written: bool,
    /// Leaves hashed for the first time.
    pub appended: u64,
    /// Cached leaves recomputed from the journal and found equal.
    pub rechecked: u64,
    /// The cached leaves before this run.
    pub cached: u64,
}

/// Extends the leaves file to the end of the journal and signs a checkpoint of it. With
/// `full`, the whole journal is read from genesis and every cached leaf recomputed;
/// otherwise see the module documentation for what is checked.
pub fn make_checkpoint(
    data: &Path,
    full: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckpointOutcome> {
    let lock = AuditLock::exclusive(data)?;
    let key = load_or_create_key(data, &lock)?;
    let mut leaves = read_leaves(data)?;
    let cached = leaves.len() as u64;
    let sizes = list_checkpoints(data)?;
    let newest = match sizes.last() {
        Some(&s) => Some(load_checkpoint(data, s, &key)?),
        None => None,
    };
    // The newest checkpoint the cache covers anchors it.
    let anchor = match sizes.iter().rev().find(|&&s| s <= cached) {
        Some(&s) if Some(s) == newest.as_ref().map(|n| n.checkpoint.size) => newest.clone(),
        Some(&s) => Some(load_checkpoint(data, s, &key)?),
        None => None,
    };
    let mut anchor_chain = None;
    if let Some(a) = &anchor {
        let size = a.checkpoint.size;
        let cached_root = root_of(leaves.get(..size as usize).unwrap_or(&[]));
        if cached_root != a.checkpoint.root {
            bail!(
                "{}: the cached leaf hashes do not give the root signed in {} (the leaves \
                 file was damaged or edited; delete it and run `kura audit checkpoint --full`)",
                audit_dir(data).join(LEAVES_FILE).display(),
                a.path.display()
            );
        }
        anchor_chain =
            Some(a.journal_head()?.ok_or_else(|| {
                anyhow!("{} has no {JOURNAL_HEAD_EXTENSION} line", a.path.display())
            })?);
    }
    let anchor_size = anchor.as_ref().map_or(0, |a| a.checkpoint.size);
    let from = if full { 1 } else { anchor_size.max(1) };
    let mut rechecked = 0u64;
    let mut new = Vec::new();
    let head = for_each_leaf(data, from, None, progress, &mut |seq, chain, leaf| {
        if seq == anchor_size && anchor_chain.is_some_and(|c| c != *chain) {
            bail!(
                "the journal's chain hash at seq {seq} is not the one checkpoint {seq} \
                 recorded: the journal was rewritten or replaced"
            );
        }
        let index = usize::try_from(seq - 1).map_err(|_| anyhow!("seq {seq} too large"))?;
        match leaves.get(index) {
            Some(cached) if *cached == leaf => rechecked += 1,
            Some(_) => bail!(
                "journal record {seq} differs from the one hashed into the audit log \
                 (leaf {index}): the journal or the leaves file was changed"
            ),
            None => new.push(leaf),
        }
        Ok(())
    })?;
    if head.seq < cached {
        bail!(
            "the journal ends at seq {} but the audit log already covers {cached} records: \
             journal records were lost or the journal was replaced",
            head.seq
        );
    }
    if let Some(n) = &newest {
        if head.seq < n.checkpoint.size {
            bail!(
                "the journal ends at seq {} but {} covers {} records: journal records were \
                 lost or the journal was replaced",
                head.seq,
                n.path.display(),
                n.checkpoint.size
            );
        }
    }
    let appended = new.len() as u64;
    let old_len = leaves.len();
    leaves.extend_from_slice(&new);
    let size = leaves.len() as u64;
    if size != head.seq {
        bail!(
            "the journal head is seq {} but {size} leaves were found (records missing from \
             the start of the read)",
            head.seq
        );
    }
    if size == 0 {
        bail!("the journal has no records yet: nothing to checkpoint");
    }
    // Roots of the newest checkpoint's size (which must be a prefix) and of the new size.
    let mut builder = RootBuilder::new();
    let newest_size = newest.as_ref().map(|n| n.checkpoint.size);
    for l in &leaves {
        builder.push(*l);
        if Some(builder.size()) == newest_size {
            if let Some(n) = &newest {
                if builder.root() != n.checkpoint.root {
                    bail!(
                        "{} is not a prefix of the log built from the journal (the journal \
                         was rewritten, or the checkpoint was signed over other records)",
                        n.path.display()
                    );
                }
            }
        }
    }
    let root = builder.root();
    if !new.is_empty() {
        // The records must be on disk before their leaves are cached or signed.
        sync_segment_holding(data, size)?;
        append_leaves(data, old_len, &new)?;
    }
    if let Some(n) = newest.filter(|n| n.checkpoint.size == size) {
        return Ok(CheckpointOutcome {
            signed: n,
            written: false,
            appended,
            rechecked,
            cached,
        });
    }
    let cp = Checkpoint {
        origin: key.name().to_owned(),
        size,
        root,
        extensions: vec![format!(
            "{JOURNAL_HEAD_EXTENSION} {size} {}",
            hex::encode(head.chain_hash)
        )],
    };
    let note = key.sign(&cp)?;
    let path = checkpoint_path(data, size);
    write_atomic(&path, note.as_bytes(), 0o644)?;
    Ok(CheckpointOutcome {
        signed: SignedCheckpoint {
            path,
            note,
            checkpoint: cp,
        },
        written: true,
        appended,
        rechecked,
        cached,
    })
}

/// The cached leaves of the first `size` records, checked against the signed
/// checkpoint `cp` of that size. Fails if the cache is shorter or gives another root.
pub fn verified_leaves(data: &Path, cp: &SignedCheckpoint) -> Result<Vec<Hash>> {
    let mut leaves = read_leaves(data)?;
    let size = cp.checkpoint.size;
    let n = usize::try_from(size).map_err(|_| anyhow!("size {size} too large"))?;
    if leaves.len() < n {
        bail!(
            "the leaves file covers {} records, fewer than checkpoint {} ({size}): it was \
             truncated or deleted; run `kura audit checkpoint --full`",
            leaves.len(),
            cp.path.display()
        );
    }
    leaves.truncate(n);
    if root_of(&leaves) != cp.checkpoint.root {
        bail!(
            "the cached leaf hashes do not give the root signed in {} (the leaves file was \
             damaged or edited)",
            cp.path.display()
        );
    }
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proofs::tlog;

    #[test]
    fn leaf_hash_is_rfc9162_of_the_leaf_data() {
        for (seq, payload) in [(1u64, &b""[..]), (2, b"abc"), (u64::MAX, &[0u8; 300][..])] {
            assert_eq!(
                record_leaf_hash(seq, payload),
                tlog::leaf_hash(&leaf_data(seq, payload))
            );
        }
        assert_eq!(
            &leaf_data(0x0102, b"x")[..],
            &[0, 0, 0, 0, 0, 0, 1, 2, b'x']
        );
    }

    #[test]
    fn streaming_root_matches_the_merkle_log() {
        let leaves: Vec<Hash> = (0u64..70)
            .map(|i| record_leaf_hash(i + 1, &i.to_le_bytes()))
            .collect();
        let mut b = RootBuilder::new();
        assert_eq!(b.root(), EMPTY_ROOT);
        for n in 0..leaves.len() {
            b.push(leaves[n]);
            assert_eq!(b.root(), tlog::root(&leaves[..=n]), "size {}", n + 1);
        }
    }

    #[test]
    fn journal_head_extension_must_name_the_size() {
        let mut cp = Checkpoint {
            origin: "kura.local/x".into(),
            size: 5,
            root: [0; 32],
            extensions: vec![format!("{JOURNAL_HEAD_EXTENSION} 5 {}", "ab".repeat(32))],
        };
        assert_eq!(journal_head_extension(&cp).ok().flatten(), Some([0xab; 32]));
        cp.extensions = vec![format!("{JOURNAL_HEAD_EXTENSION} 4 {}", "ab".repeat(32))];
        assert!(journal_head_extension(&cp).is_err());
        cp.extensions = vec![format!("{JOURNAL_HEAD_EXTENSION} 5 zz")];
        assert!(journal_head_extension(&cp).is_err());
        cp.extensions.clear();
        assert_eq!(journal_head_extension(&cp).ok(), Some(None));
    }
}

/// Signs checkpoints on a timer inside `kura serve` (`audit_checkpoint_every_secs`): every
/// period, the log is extended to the journal's end and a checkpoint is signed when the
/// journal has grown since the newest one (what `kura audit checkpoint` does by hand).
/// Published checkpoints are what make a later rewrite of the journal detectable, so
/// they should not depend on an operator remembering to take them.
#[derive(Debug)]
pub struct Checkpointer(crate::ticker::Ticker);

impl Checkpointer {
    /// Starts the thread, or nothing when `every` is `None`.
    pub fn start(data: &Path, every: Option<std::time::Duration>) -> Result<Option<Checkpointer>> {
        let Some(every) = every else {
            return Ok(None);
        };
        let data = data.to_path_buf();
        let ticker =
            crate::ticker::Ticker::start("kura-audit", every, move || {
                match make_checkpoint(&data, false, &mut |_| {}) {
                    Ok(out) if out.written => tracing::info!(
                        size = out.signed.checkpoint.size,
                        path = %out.signed.path.display(),
                        "audit checkpoint signed"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        "audit: signing a checkpoint failed"
                    ),
                }
            })?;
        Ok(Some(Checkpointer(ticker)))
    }

    /// Stops the thread (a checkpoint being signed is finished first).
    pub fn stop(self) {
        self.0.stop();
    }
}
