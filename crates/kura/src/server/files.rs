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
        // A `flock` belongs to the open file, and a child being spawned by any thread
        // of this process holds a copy of every descriptor until its `exec` closes
        // them (close-on-exec). A lock released just now can therefore look held for
        // that moment: ask again for a short while before calling it another process's.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => bail!(
                    "{} is in use by another kura process (stop it first)",
                    dir.display()
                ),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            }
        }
    }
}

/// How long a held lock is asked for again before it is reported as another process's.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_within_the_patience_is_taken_and_one_held_on_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A second open file holding the lock stands for a spawned child's copy of the
        // descriptor: it lets go shortly after the first owner closed its own.
        let first = DirLock::acquire(dir.path()).expect("first");
        let copy = File::open(dir.path().join(LOCK_FILE)).expect("open");
        drop(first);
        copy.try_lock().expect("the copy takes the free lock");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(copy);
        });
        let started = std::time::Instant::now();
        let second = DirLock::acquire(dir.path()).expect("taken once the copy is closed");
        assert!(started.elapsed() < LOCK_PATIENCE);
        releaser.join().expect("releaser");

        let started = std::time::Instant::now();
        let refused = DirLock::acquire(dir.path()).expect_err("held by a running server");
        assert!(started.elapsed() >= LOCK_PATIENCE);
        assert!(
            format!("{refused:#}").contains("in use by another kura process"),
            "{refused:#}"
        );
        drop(second);
        DirLock::acquire(dir.path()).expect("free again");
    }
}
