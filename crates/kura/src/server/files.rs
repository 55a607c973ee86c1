//! Files the server keeps in its data directory besides the journal and snapshots:
//!
//! - `lock`: held (advisory `flock`) while a server runs, so two servers never share a
//!   journal.
//! - `master.key`: 64 hex digits, mode 0600, created at the first start. HMAC API
//!   secrets are derived from it; losing it invalidates every HMAC key, leaking it
//!   exposes them. The server refuses to start if group or others can read it.
//! - `server.json`: where a running server listens (`rest`, `ws`, `admin`, `pid`),
//!   written atomically once listening and removed at shutdown.

use anyhow::{bail, Context, Result};
use kura_api::auth::MasterKey;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const LOCK_FILE: &str = "lock";
pub const MASTER_KEY_FILE: &str = "master.key";
pub const SERVER_FILE: &str = "server.json";

/// The data directory's lock, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by another kura process (stop it first)",
                dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

pub fn load_or_create_master_key(dir: &Path) -> Result<MasterKey> {
    let bytes = load_or_create_secret(&dir.join(MASTER_KEY_FILE), "the node master key")?;
    Ok(MasterKey::from_bytes(bytes))
}

/// A 32-byte secret kept as hex in `path` (mode 0600, created with fresh random bytes
/// on first use, written to a temporary file, fsynced and renamed); refused when group
/// or others may read it.
pub fn load_or_create_secret(path: &Path, what: &str) -> Result<[u8; 32]> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent directory", path.display()))?;
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let bytes: [u8; 32] = rand::random();
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(hex::encode(bytes).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        tracing::info!(file = %path.display(), "created {what}");
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
    Ok(bytes)
}

pub fn write_server_json(dir: &Path, addr: SocketAddr) -> Result<()> {
    let value = serde_json::json!({
        "rest": format!("http://{addr}"),
        "ws": format!("ws://{addr}"),
        "admin": format!("unix:{}", super::admin::socket_path(dir).display()),
        "pid": std::process::id(),
    });
    let tmp = dir.join(format!("{SERVER_FILE}.tmp"));
    std::fs::write(&tmp, format!("{value}\n"))?;
    std::fs::rename(&tmp, dir.join(SERVER_FILE))?;
    Ok(())
}

pub fn remove_server_json(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(SERVER_FILE));
}
