//! The harness the end-to-end tests share: the real `kura` binary started on a fresh
//! data directory (`kura serve --listen 127.0.0.1:0`), waited for through server.json
//! (never a fixed sleep), driven through `kura admin`, and the pinned Python
//! environment from `scripts/e2e-venv` (`KURA_E2E_PYTHON` overrides it; without it
//! the tests fail, never skip).

pub use std::fs::File;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, ExitStatus, Output, Stdio};
pub use std::time::{Duration, Instant};

/// How long a fresh or recovering node may take to write server.json.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM) may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two looks at a condition being waited for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The venv python; a missing interpreter fails the test with the fix.
pub fn python() -> PathBuf {
    let path = std::env::var_os("KURA_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/e2e-venv/bin/python"));
    assert!(
        path.exists(),
        "the CCXT end-to-end tests need the pinned Python environment, and {} does not \
         exist: run scripts/e2e-venv (it creates target/e2e-venv with ccxt==4.5.90 and \
         prints the python path; KURA_E2E_PYTHON may point elsewhere)",
        path.display()
    );
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn read_or_empty(path: &Path) -> String {
    std::fs::read(path).map(|b| text(&b)).unwrap_or_default()
}

/// What a ready server announced in server.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub rest: String,
    pub pid: u32,
}

/// One `kura serve` process. Dropping it kills the process if it still runs, so a
/// failing assertion never leaves a server behind.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub data: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub info: ServerInfo,
}

impl Server {
    /// Start `kura serve --data DATA --listen 127.0.0.1:0` and wait until it is ready:
    /// server.json names this child's pid and stdout says where it listens.
    pub fn start(data: &Path, logs: &Path, run: usize) -> Server {
        Server::start_with(data, logs, run, &[])
    }

    /// [`Server::start`] with more `kura serve` arguments.
    pub fn start_with(data: &Path, logs: &Path, run: usize, extra: &[&str]) -> Server {
        let stdout = logs.join(format!("serve-{run}.stdout"));
        let stderr = logs.join(format!("serve-{run}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_kura"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout log"))
            .stderr(File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("spawn kura serve");
        let mut server = Server {
            child,
            data: data.to_path_buf(),
            stdout,
            stderr,
            info: ServerInfo {
                rest: String::new(),
                pid: 0,
            },
        };
        server.info = server.wait_ready();
        server
    }

    pub fn logs(&self) -> String {
        format!(
            "--- kura serve stdout ---\n{}\n--- kura serve stderr ---\n{}",
            read_or_empty(&self.stdout),
            read_or_empty(&self.stderr)
        )
    }

    pub fn wait_ready(&mut self) -> ServerInfo {
        let path = self.data.join("server.json");
        let pid = self.child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        let info = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "kura serve exited before it was ready ({status})\n{}",
                    self.logs()
                );
            }
            // A server.json from an earlier run of the same directory names another
            // pid; it is written by rename, so it is never seen half-written.
            if let Ok(bytes) = std::fs::read(&path) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "server.json is not JSON ({e}); it must be written atomically: {}",
                        text(&bytes)
                    )
                });
                if v["pid"].as_u64() == Some(u64::from(pid)) {
                    let field = |name: &str| {
                        v[name]
                            .as_str()
                            .unwrap_or_else(|| panic!("server.json has no string {name:?}: {v}"))
                            .to_string()
                    };
                    let info = ServerInfo {
                        rest: field("rest"),
                        pid,
                    };
                    // The admin endpoint is loopback HTTP or a Unix socket; only the
                    // admin CLI talks to it.
                    let admin = field("admin");
                    assert!(
                        info.rest.starts_with("http://127.0.0.1:")
                            && field("ws").starts_with("ws://127.0.0.1:")
                            && (admin.starts_with("http://127.0.0.1:")
                                || admin.starts_with("unix:")),
                        "server.json addresses are loopback URLs: {v}"
                    );
                    break info;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kura serve did not write server.json with pid {pid} within {READY_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        let line = format!("listening on {}", info.rest);
        while !read_or_empty(&self.stdout)
            .lines()
            .any(|l| l.trim() == line)
        {
            assert!(
                Instant::now() < deadline,
                "kura serve wrote server.json but never printed {line:?} on stdout\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        info
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "kura serve (pid {}) did not exit within {timeout:?}\n{}",
                self.info.pid,
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGTERM, then the graceful stop must end with exit status 0.
    pub fn terminate(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        let status = self.wait_exit(STOP_TIMEOUT);
        assert!(
            status.code() == Some(0),
            "kura serve must stop gracefully with exit 0 on SIGTERM, got {status}\n{}",
            self.logs()
        );
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL kura serve");
        let status = self.wait_exit(STOP_TIMEOUT);
        assert!(status.code().is_none(), "killed by a signal: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kura admin --data DATA ARGS…`, which must succeed.
pub fn admin(data: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run kura admin");
    assert!(
        out.status.success(),
        "kura admin --data {} {} failed ({})\nstdout: {}\nstderr: {}",
        data.display(),
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

pub fn admin_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = admin(data, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kura admin {} printed no JSON ({e}): {}",
            args.join(" "),
            text(&out.stdout)
        )
    })
}
