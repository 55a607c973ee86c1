//! C2SP checkpoints (`c2sp.org/tlog-checkpoint`) in signed notes (`c2sp.org/signed-note`),
//! with Ed25519 signatures.
//!
//! A checkpoint is the text
//!
//! ```text
//! <origin>
//! <tree size in decimal>
//! <base64 of the 32-byte root hash>
//! [extension lines, each non-empty]
//! ```
//!
//! and a signed note is that text (ending in a newline), a blank line, then one or more
//! signature lines `— <key name> <base64(key id ‖ signature)>` (em dash U+2014, spaces,
//! newline). For Ed25519 the key id is the first 4 bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)` and the signature is over the
//! note text exactly (including its final newline).
//!
//! A verifier is configured with a verifier key string
//! `<key name>+<key id as 8 hex digits>+<base64(0x01 ‖ public key)>`
//! ([`NoteVerifier`]). Opening a note ignores signatures by other keys, fails if the
//! known key's signature does not verify, and fails if no signature is by the known key.
//! Base64 is the standard alphabet with padding (RFC 4648 §4).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::{sha256, Hash};

/// The signed-note signature type byte of Ed25519.
pub const ED25519_TYPE: u8 = 0x01;

/// The most signature lines [`open_note`] reads (the format asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// The longest note [`open_note`] reads, in bytes.
pub const MAX_NOTE_LEN: usize = 1 << 20;

/// Why a note or checkpoint could not be made, read or trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteError {
    /// The text does not follow the signed-note format.
    MalformedNote(&'static str),
    /// The text does not follow the checkpoint format.
    MalformedCheckpoint(&'static str),
    /// A key name is empty or has a space or a `+`.
    BadKeyName,
    /// A verifier key string is malformed, or its key id does not match its key.
    BadVerifierKey(&'static str),
    /// The note has no signature by the verifier's key.
    UnknownKey,
    /// The verifier's key signed the note, but the signature does not verify.
    BadSignature,
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoteError::MalformedNote(w) => write!(f, "malformed signed note: {w}"),
            NoteError::MalformedCheckpoint(w) => write!(f, "malformed checkpoint: {w}"),
            NoteError::BadKeyName => {
                write!(f, "key names must be non-empty, without spaces or '+'")
            }
            NoteError::BadVerifierKey(w) => write!(f, "bad verifier key: {w}"),
            NoteError::UnknownKey => write!(f, "the note has no signature by the known key"),
            NoteError::BadSignature => write!(f, "the signature by the known key does not verify"),
        }
    }
}

impl std::error::Error for NoteError {}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        Err(NoteError::BadKeyName)
    } else {
        Ok(())
    }
}

/// The signed-note key id of an Ed25519 key:
/// `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let h = sha256(&[name.as_bytes(), b"\n", &[ED25519_TYPE], key.as_bytes()]);
    [h[0], h[1], h[2], h[3]]
}

/// A trusted Ed25519 key with its name: what a client needs to open notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<NoteVerifier, NoteError> {
        check_key_name(name)?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        })
    }

    /// Parses `<name>+<8 hex digits>+<base64(0x01 ‖ public key)>`, checking that the id
    /// is the one the name and key give.
    pub fn parse(s: &str) -> Result<NoteVerifier, NoteError> {
        let mut parts = s.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(NoteError::BadVerifierKey("expected name+id+key")),
        };
        check_key_name(name)?;
        let mut id = [0u8; 4];
        if id_hex.len() != 8 || hex::decode_to_slice(id_hex, &mut id).is_err() {
            return Err(NoteError::BadVerifierKey("key id must be 8 hex digits"));
        }
        let raw = B64
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey("key is not base64"))?;
        let key_bytes: [u8; 32] = match raw.split_first() {
            Some((&ED25519_TYPE, rest)) => rest
                .try_into()
                .map_err(|_| NoteError::BadVerifierKey("Ed25519 keys are 32 bytes"))?,
            _ => return Err(NoteError::BadVerifierKey("not an Ed25519 (0x01) key")),
        };
        let key = VerifyingKey::from_bytes(&key_bytes)
            .map_err(|_| NoteError::BadVerifierKey("not a valid Ed25519 public key"))?;
        let v = NoteVerifier::new(name, key)?;
        if v.id != id {
            return Err(NoteError::BadVerifierKey("key id does not match the key"));
        }
        Ok(v)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Display for NoteVerifier {
    /// The verifier key string `<name>+<hex id>+<base64(0x01 ‖ key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(raw)
        )
    }
}

impl FromStr for NoteVerifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        NoteVerifier::parse(s)
    }
}

fn check_note_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < ' ' && c != '\n') {
        Err(NoteError::MalformedNote("control character"))
    } else {
        Ok(())
    }
}

/// Signs `text` (which must end in a newline and have no control characters other than
/// newlines) with `key` under `name`; returns the signed note.
pub fn sign_note(text: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    check_key_name(name)?;
    check_note_chars(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text must end with a newline"));
    }
    let sig = key.sign(text.as_bytes());
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key_id(name, &key.verifying_key()));
    blob.extend_from_slice(&sig.to_bytes());
    Ok(format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob)))
}

/// Opens a signed note: returns its text if it carries a valid signature by `verifier`'s
/// key. Signatures by other keys are ignored; a failing signature by the known key, or
/// none at all, rejects the note.
pub fn open_note(note: &str, verifier: &NoteVerifier) -> Result<String, NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::MalformedNote("too long"));
    }
    check_note_chars(note)?;
    let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote(
        "no blank line before the signatures",
    ))?;
    let text = &note[..split + 1];
    let sigs = note[split + 2..]
        .strip_suffix('\n')
        .ok_or(NoteError::MalformedNote("must end with a newline"))?;
    let mut verified = false;
    for (n, line) in sigs.split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(NoteError::MalformedNote("too many signatures"));
        }
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(NoteError::MalformedNote(
                "signature line must start with an em dash",
            ))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
            "signature line needs a name and a signature",
        ))?;
        check_key_name(name).map_err(|_| NoteError::MalformedNote("bad key name"))?;
        let blob = B64
            .decode(b64)
            .map_err(|_| NoteError::MalformedNote("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(NoteError::MalformedNote("signature too short"));
        }
        let (id, sig) = blob.split_at(4);
        if name != verifier.name || id != verifier.id {
            continue;
        }
        let sig = Signature::from_slice(sig).map_err(|_| NoteError::BadSignature)?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature)?;
        verified = true;
    }
    if verified {
        Ok(text.to_owned())
    } else {
        Err(NoteError::UnknownKey)
    }
}

/// A transparency log checkpoint: the log's origin, its size and its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name, e.g. `example.com/kura/audit`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 9162 root hash of the first `size` leaves.
    pub root: Hash,
    /// Optional extra lines, each non-empty.
    pub extensions: Vec<String>,
}

fn check_line(line: &str, what: &'static str) -> Result<(), NoteError> {
    if line.is_empty() || line.chars().any(|c| c.is_control()) {
        Err(NoteError::MalformedCheckpoint(what))
    } else {
        Ok(())
    }
}

impl Checkpoint {
    /// The checkpoint's note text.
    pub fn to_text(&self) -> Result<String, NoteError> {
        check_line(&self.origin, "origin must be one non-empty line")?;
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            check_line(e, "extensions must be non-empty lines")?;
            s.push_str(e);
            s.push('\n');
        }
        Ok(s)
    }

    /// Parses a checkpoint's note text (already taken out of its signed note).
    pub fn from_text(text: &str) -> Result<Checkpoint, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint("must end with a newline"))?;
        let mut lines = body.split('\n');
        let (origin, size, root) = match (lines.next(), lines.next(), lines.next()) {
            (Some(o), Some(s), Some(r)) => (o, s, r),
            _ => {
                return Err(NoteError::MalformedCheckpoint(
                    "needs origin, size and root",
                ))
            }
        };
        check_line(origin, "empty origin")?;
        let canonical = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = match size.parse() {
            Ok(n) if canonical => n,
            _ => {
                return Err(NoteError::MalformedCheckpoint(
                    "size is not a decimal number",
                ))
            }
        };
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "root is not 32 bytes of base64",
            ))?;
        let mut extensions = Vec::new();
        for e in lines {
            check_line(e, "empty extension line")?;
            extensions.push(e.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Signs `checkpoint` with `key` under `name`; returns the signed note. Fails only if the
/// checkpoint or the name cannot be written in the format.
pub fn sign(checkpoint: &Checkpoint, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    sign_note(&checkpoint.to_text()?, name, key)
}

/// Opens a signed checkpoint with `verifier` (see [`open_note`]) and parses it.
pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, NoteError> {
    Checkpoint::from_text(&open_note(note, verifier)?)
}
