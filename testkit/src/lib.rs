//! Test harness shared by every crate's integration tests.
//!
//! - [`Valkey`]: a real `valkey-server` (or `redis-server`) on 127.0.0.1 and an ephemeral port,
//!   killed when dropped, restartable for fault tests.
//! - [`eventually`]: a bounded poll with a deadline, for conditions on real I/O (never a bare sleep).
//!
//! No helper here talks to anything but loopback.

pub mod mock_llm;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds the server binary: `$BOTBURROW_VALKEY_BIN`, else `valkey-server`, else `redis-server`.
pub fn valkey_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BOTBURROW_VALKEY_BIN") {
        return Some(PathBuf::from(p));
    }
    for name in ["valkey-server", "redis-server"] {
        if let Some(path) = find_on_path(name) {
            return Some(path);
        }
    }
    None
}

/// Looks a program up on `PATH` (and `/usr/bin`, `/usr/sbin`, where Debian puts servers).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound then released; callers retry on the rare race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running Valkey server owned by a test.
pub struct Valkey {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    aof: bool,
}

impl Valkey {
    /// Starts a throwaway server with persistence off.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server with AOF on (for restart tests that must keep data).
    pub fn start_with_aof() -> Self {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Self {
        let mut dir = tempfile::tempdir().expect("tempdir for valkey");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut v = Valkey { child: None, port, dir, aof };
            match v.spawn() {
                Ok(()) => return v,
                Err(e) => {
                    last_err = e;
                    dir = v.take_dir();
                }
            }
        }
        panic!("could not start valkey-server/redis-server: {last_err}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        // Move the dir out by swapping in a fresh one; the old Valkey is dropped afterwards.
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = valkey_binary().ok_or("neither valkey-server nor redis-server is installed (run .ci/run or apt-get install valkey-server)")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--bind").arg("127.0.0.1")
            .arg("--port").arg(self.port.to_string())
            .arg("--save").arg("")
            .arg("--dir").arg(self.dir.path())
            .arg("--daemonize").arg("no")
            .arg("--protected-mode").arg("no")
            .arg("--loglevel").arg("warning")
            .arg("--appendonly").arg(if self.aof { "yes" } else { "no" })
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.arg("--appendfsync").arg("always");
        }
        let child = cmd.spawn().map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("server exited early with {status}"));
                }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err("server did not answer PING within 10s".into())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends a raw `PING` and expects `+PONG`.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).map(|r| r.starts_with("+PONG")).unwrap_or(false)
    }

    /// Sends one command in RESP and returns the raw reply text (for quick assertions in tests).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        s.write_all(req.as_bytes())?;
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Kills the server (SIGKILL), simulating a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts it again on the same port and directory (AOF data survives if enabled).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("valkey restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Valkey {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` until it returns true or `within` elapses; returns whether it became true.
/// Use with a generous deadline: it returns as soon as the condition holds.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
