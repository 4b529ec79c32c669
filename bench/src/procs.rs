//! Child processes of the benchmark: where the fleet's binaries are, how one is started with its
//! output drained to a log file, how its `listening on` line is read, and what it costs
//! (`/proc/<pid>/status` VmRSS/VmHWM and `/proc/<pid>/stat` utime+stime).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Why a process could not be found, started or read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// A fleet binary is not where it should be.
    #[error(
        "binary {0} not found; build the fleet first (cargo build [--release] -p botburrow-devhub -p botburrow-coordinator -p botburrow-runner -p botburrow-testkit --bins)"
    )]
    Missing(PathBuf),
    /// The OS refused to start it.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// Which process.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited or went silent before printing `listening on http://...`.
    #[error("{0} did not print its `listening on` line")]
    NoListenLine(String),
    /// A log file could not be created.
    #[error("log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Paths of the fleet's binaries, all from one build profile directory.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `botburrow-devhub`.
    pub devhub: PathBuf,
    /// `botburrow-coordinator`.
    pub coordinator: PathBuf,
    /// `botburrow-runner`.
    pub runner: PathBuf,
    /// `botburrow-mock-llm`.
    pub mock_llm: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (e.g. `target/release`); every one must exist.
    pub fn in_dir(dir: &Path) -> Result<Self, ProcError> {
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ProcError::Missing(p))
            }
        };
        Ok(Self {
            devhub: find("botburrow-devhub")?,
            coordinator: find("botburrow-coordinator")?,
            runner: find("botburrow-runner")?,
            mock_llm: find("botburrow-mock-llm")?,
        })
    }

    /// The binaries next to the running executable: its own directory (a `cargo run` binary in
    /// `target/<profile>`) or its parent (a test executable in `target/<profile>/deps`).
    pub fn next_to_current_exe() -> Result<Self, ProcError> {
        let exe = std::env::current_exe()
            .map_err(|_| ProcError::Missing(PathBuf::from("<current executable>")))?;
        let mut last = ProcError::Missing(exe.clone());
        for dir in exe.ancestors().skip(1).take(2) {
            match Self::in_dir(dir) {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// What a process has cost so far, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Resident set now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, which the kernel ABI fixes at 100.
const USER_HZ: f64 = 100.0;

/// Reads a live process's usage; `None` once it is gone.
pub fn usage_of(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after `)`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Usage {
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        cpu_seconds: (utime + stime) / USER_HZ,
    })
}

/// A started child process, killed when dropped.
pub struct Proc {
    /// Human name (`runner-1`), also the log file stem.
    pub name: String,
    child: Child,
    pid: u32,
    last_usage: Usage,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Copies a child's output, line by line, into `log`; sends the first `listening on` line.
fn drain<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    log: std::sync::Arc<tokio::sync::Mutex<tokio::fs::File>>,
    listen: Option<tokio::sync::oneshot::Sender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut listen = listen;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("listening on ")
                && let Some(tx) = listen.take() {
                    let _ = tx.send(rest.trim().to_string());
                }
            let mut f = log.lock().await;
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
    });
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `<log_dir>/<name>.log`. With
    /// `wait_listen`, waits (up to 20 s) for its `listening on URL` line and returns the URL.
    pub async fn spawn(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        wait_listen: bool,
    ) -> Result<(Self, Option<String>), ProcError> {
        let path = log_dir.join(format!("{name}.log"));
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|source| ProcError::Log {
                path: path.clone(),
                source,
            })?;
        let log = std::sync::Arc::new(tokio::sync::Mutex::new(file));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
            name: name.to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone(), wait_listen.then_some(tx));
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log, None);
        }
        let url = if wait_listen {
            match tokio::time::timeout(Duration::from_secs(20), rx).await {
                Ok(Ok(url)) => Some(url),
                _ => return Err(ProcError::NoListenLine(name.to_string())),
            }
        } else {
            None
        };
        Ok((
            Self {
                name: name.to_string(),
                child,
                pid,
                last_usage: Usage::default(),
            },
            url,
        ))
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Current usage, remembered so that a killed process still reports its last reading.
    pub fn usage(&mut self) -> Usage {
        if let Some(u) = usage_of(self.pid) {
            self.last_usage = u;
        }
        self.last_usage
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (a crash), then reaps it. Usage is sampled first.
    pub async fn kill(&mut self) {
        self.usage();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub async fn terminate(&mut self, grace: Duration) {
        self.usage();
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok()
            && tokio::time::timeout(grace, self.child.wait()).await.is_ok()
        {
            return;
        }
        self.kill().await;
    }
}
