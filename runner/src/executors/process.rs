//! Child processes bounded by a deadline: each runs in its own process group with stdin closed,
//! its stdout/stderr captured under a size cap, and on deadline or cancellation the whole group gets
//! SIGTERM, then SIGKILL after a short grace. The group is always swept and the leader always
//! reaped, so no grandchild (an MCP server, a `sleep &`) outlives the activation.
//!
//! Reusable by anything that runs untrusted commands (CLI executors, the sandbox `Bash` tool).

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a bounded child process did not produce an exit status.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (missing, not executable, bad cwd).
    #[error("cannot start '{program}': {source}")]
    Spawn {
        /// Program as given to the command.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed; the group was killed.
    #[error("deadline reached; process group killed")]
    Timeout {
        /// Whatever was captured before the kill (useful for diagnostics).
        partial: Box<ProcessOutput>,
    },
    /// The cancellation token fired; the group was killed.
    #[error("cancelled; process group killed")]
    Cancelled {
        /// Whatever was captured before the kill.
        partial: Box<ProcessOutput>,
    },
    /// Waiting for the child failed.
    #[error("waiting for child failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// Limits for one bounded run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hard deadline; at this instant the group gets SIGTERM.
    pub deadline: Instant,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Bytes of stdout kept (the tail is kept: machine-readable results come last).
    pub stdout_cap: usize,
    /// Bytes of stderr kept (tail).
    pub stderr_cap: usize,
}

impl Limits {
    /// Defaults suited to CLI agents: 5 s grace, 8 MiB of stdout, 64 KiB of stderr.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            kill_grace: Duration::from_secs(5),
            stdout_cap: 8 << 20,
            stderr_cap: 64 << 10,
        }
    }
}

/// What a finished (or killed) child left behind.
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    /// Exit status of the group leader (`None` when killed before it could be read).
    pub status: Option<ExitStatus>,
    /// Captured stdout (tail, at most `stdout_cap` bytes).
    pub stdout: Vec<u8>,
    /// Captured stderr (tail, at most `stderr_cap` bytes).
    pub stderr: Vec<u8>,
    /// Whether stdout overflowed the cap (its head was dropped).
    pub stdout_truncated: bool,
    /// Whether stderr overflowed the cap.
    pub stderr_truncated: bool,
    /// The process group id the child ran in (equals its pid).
    pub pgid: i32,
}

/// Sends `signal` to every process of group `pgid`. A group that no longer exists is not an error.
pub fn kill_group(pgid: i32, signal: Signal) -> Result<(), nix::Error> {
    if pgid <= 1 {
        // Never signal group 0 (our own) or 1 (init): a programming error, not a child.
        return Err(nix::Error::EINVAL);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A capped tail buffer shared between a reader task and the caller.
#[derive(Default)]
struct Capture {
    buf: Vec<u8>,
    truncated: bool,
}

fn push_tail(c: &mut Capture, chunk: &[u8], cap: usize) {
    c.buf.extend_from_slice(chunk);
    if c.buf.len() > cap {
        let excess = c.buf.len() - cap;
        c.buf.drain(..excess);
        c.truncated = true;
    }
}

fn spawn_reader<R>(
    reader: Option<R>,
    cap: usize,
    stop: CancellationToken,
) -> (Arc<Mutex<Capture>>, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let capture = Arc::new(Mutex::new(Capture::default()));
    let sink = capture.clone();
    let handle = tokio::spawn(async move {
        let Some(mut reader) = reader else { return };
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = tokio::select! {
                r = reader.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = stop.cancelled() => break,
            };
            let mut c = match sink.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            push_tail(&mut c, &chunk[..n], cap);
        }
    });
    (capture, handle)
}

fn take(capture: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    let mut c = match capture.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    (std::mem::take(&mut c.buf), c.truncated)
}

/// Blocks (on a blocking thread) until `pid` has exited, without reaping it: while the leader is
/// an unreaped zombie its pid, and therefore the group id, cannot be reused, so signalling the
/// group afterwards can never hit an unrelated process.
fn wait_exit_unreaped(pid: i32) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        loop {
            match waitid(
                Id::Pid(Pid::from_raw(pid)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {
                Err(nix::Error::EINTR) => continue,
                _ => return,
            }
        }
    })
}

/// Kills the group with SIGKILL if the run is abandoned (its future dropped) before the group was
/// swept, so dropping an activation never leaks grandchildren (`kill_on_drop` covers only the
/// leader).
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = kill_group(self.pgid, Signal::SIGKILL);
        }
    }
}

enum Stop {
    Exited,
    Timeout,
    Cancelled,
}

/// Runs `cmd` in a new process group with stdin closed and stdout/stderr captured, bounded by
/// `limits.deadline` and `cancel`. The caller sets program, args, env and cwd; this sets the
/// process group, stdio and kill-on-drop. Returns the leader's status once it and every other
/// member of its group are gone.
pub async fn run_bounded(
    mut cmd: tokio::process::Command,
    limits: Limits,
    cancel: &CancellationToken,
) -> Result<ProcessOutput, ProcessError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let empty = |pgid| ProcessOutput {
        status: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        pgid,
    };
    if cancel.is_cancelled() {
        return Err(ProcessError::Cancelled {
            partial: Box::new(empty(0)),
        });
    }
    if Instant::now() >= limits.deadline {
        return Err(ProcessError::Timeout {
            partial: Box::new(empty(0)),
        });
    }
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        // Already reaped (cannot happen before we wait); report what we can.
        let status = child.wait().await.map_err(ProcessError::Wait)?;
        return Ok(ProcessOutput {
            status: Some(status),
            ..empty(0)
        });
    };
    let mut guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    let stop_reading = CancellationToken::new();
    let (out_cap, out_task) =
        spawn_reader(child.stdout.take(), limits.stdout_cap, stop_reading.clone());
    let (err_cap, err_task) =
        spawn_reader(child.stderr.take(), limits.stderr_cap, stop_reading.clone());

    let mut exited = wait_exit_unreaped(pid);
    let stop = tokio::select! {
        _ = &mut exited => Stop::Exited,
        _ = tokio::time::sleep_until(limits.deadline) => Stop::Timeout,
        _ = cancel.cancelled() => Stop::Cancelled,
    };
    if !matches!(stop, Stop::Exited) {
        tracing::debug!(pgid = pid, "process_group_terminating");
        let _ = kill_group(pid, Signal::SIGTERM);
        let leader_gone = tokio::time::timeout(limits.kill_grace, &mut exited)
            .await
            .is_ok();
        if !leader_gone {
            let _ = kill_group(pid, Signal::SIGKILL);
            let _ = (&mut exited).await;
        }
    }
    // The leader is an unreaped zombie now: sweep any member it left behind, then reap it.
    let _ = kill_group(pid, Signal::SIGKILL);
    guard.armed = false;
    let status = child.wait().await.map_err(ProcessError::Wait)?;

    // Every member of the group is dead, so the pipes reach EOF unless something escaped the
    // group (setsid) while holding them; do not wait for such a process.
    let drain = async {
        let _ = out_task.await;
        let _ = err_task.await;
    };
    tokio::pin!(drain);
    if tokio::time::timeout(Duration::from_secs(2), &mut drain)
        .await
        .is_err()
    {
        stop_reading.cancel();
        drain.await;
    }
    let (stdout, stdout_truncated) = take(&out_cap);
    let (stderr, stderr_truncated) = take(&err_cap);
    let output = ProcessOutput {
        status: Some(status),
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        pgid: pid,
    };
    match stop {
        Stop::Exited => Ok(output),
        Stop::Timeout => Err(ProcessError::Timeout {
            partial: Box::new(output),
        }),
        Stop::Cancelled => Err(ProcessError::Cancelled {
            partial: Box::new(output),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn captures_output_and_status() {
        let limits = Limits::until(Instant::now() + Duration::from_secs(20));
        let out = run_bounded(
            sh("echo out; echo err >&2; exit 3"),
            limits,
            &CancellationToken::new(),
        )
        .await
        .expect("runs");
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.stdout_truncated);
    }

    #[tokio::test]
    async fn keeps_the_tail_when_over_the_cap() {
        let mut limits = Limits::until(Instant::now() + Duration::from_secs(20));
        limits.stdout_cap = 10;
        let out = run_bounded(
            sh("printf 'aaaaaaaaaaaaaaaaaaaaLAST'"),
            limits,
            &CancellationToken::new(),
        )
        .await
        .expect("runs");
        assert!(out.stdout_truncated);
        assert_eq!(out.stdout, b"aaaaaaLAST");
    }

    #[tokio::test]
    async fn a_straggler_left_by_a_finished_leader_is_swept() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("bg.pid");
        let script = format!("sleep 300 & echo $! > {}; exit 0", pidfile.display());
        let limits = Limits::until(Instant::now() + Duration::from_secs(20));
        let out = run_bounded(sh(&script), limits, &CancellationToken::new())
            .await
            .expect("runs");
        assert_eq!(out.status.and_then(|s| s.code()), Some(0));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        // The straggler was SIGKILLed; it may linger as a zombie until init reaps it.
        let gone = botburrow_testkit::eventually(Duration::from_secs(10), || async move {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
                    .unwrap_or(false),
            }
        })
        .await;
        assert!(gone, "background child {pid} still running");
    }

    #[tokio::test]
    async fn cancellation_kills_a_running_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("leader.pid");
        let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
        let cancel = CancellationToken::new();
        let limits = Limits::until(Instant::now() + Duration::from_secs(60));
        let c2 = cancel.clone();
        let run = tokio::spawn(async move { run_bounded(sh(&script), limits, &c2).await });
        let started = botburrow_testkit::eventually(Duration::from_secs(10), || {
            let p = pidfile.clone();
            async move {
                std::fs::read_to_string(p)
                    .map(|s| s.ends_with('\n'))
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(started, "child never started");
        cancel.cancel();
        match run.await.expect("join") {
            Err(ProcessError::Cancelled { partial }) => {
                assert!(
                    partial.status.is_some_and(|s| !s.success()),
                    "leader was killed by a signal"
                );
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("bg.pid");
        let script = format!(
            "sleep 300 & echo $! > {}.tmp; mv {0}.tmp {0}; wait",
            pidfile.display()
        );
        let limits = Limits::until(Instant::now() + Duration::from_secs(60));
        let cancel = CancellationToken::new();
        // Boxed so that `drop` really drops the future (a pinned stack reference would not).
        let mut run = Box::pin(run_bounded(sh(&script), limits, &cancel));
        let p = pidfile.clone();
        let started = tokio::select! {
            _ = &mut run => false,
            ok = botburrow_testkit::eventually(Duration::from_secs(10), || {
                let p = p.clone();
                async move { p.exists() }
            }) => ok,
        };
        assert!(started, "child never started");
        drop(run);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        let gone = botburrow_testkit::eventually(Duration::from_secs(10), || async move {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
                    .unwrap_or(false),
            }
        })
        .await;
        assert!(gone, "grandchild {pid} survived the dropped run");
    }

    #[test]
    fn refuses_to_signal_our_own_group_or_init() {
        assert_eq!(kill_group(0, Signal::SIGTERM), Err(nix::Error::EINVAL));
        assert_eq!(kill_group(1, Signal::SIGTERM), Err(nix::Error::EINVAL));
    }
}
