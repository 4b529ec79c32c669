//! Sandbox tools for native agents: `Read`, `Write`, `Edit`, `Bash`, `Glob`, `Grep`, confined to
//! one activation's workspace.
//!
//! Confinement: every path is resolved against the workspace; an absolute path is accepted only
//! if it lies inside it, a `..` that climbs above it is refused, and every existing component is
//! checked with `symlink_metadata` so a symlink (or dangling symlink) pointing outside is
//! refused. Tool calls of one activation run one at a time, so a path cannot be swapped between
//! check and use by the agent's own commands.
//!
//! `Bash` honours `capabilities.shell` (`enabled`, `allowed_commands`, `blocked_patterns`,
//! `timeout_seconds`, plus built-in blocked patterns). Commands run under `/bin/sh -c` in their
//! own process group with a scrubbed environment (`PATH`, `HOME` = workspace, `LANG` only: no
//! provider keys, no Hub key); the whole group is killed on timeout, after the command ends
//! (background leftovers) and if the activation drops the call. Output of every tool is
//! truncated at [`OUTPUT_LIMIT`] bytes with a note saying so.
//!
//! Limits: path confinement applies to the file tools. `Bash` is confined by policy (working
//! directory, allow/block lists, scrubbed environment, time), not by a filesystem jail: a
//! permitted command can still read world-readable files elsewhere. The pod's security context
//! (non-root, read-only root filesystem, no secrets mounted where commands can read them) is
//! the outer boundary; keep `allowed_commands` short for agents that do not need more.

use super::{Tool, ToolOutput, ToolSet, ToolSpec};
use async_trait::async_trait;
use botburrow_shared::agent::Shell;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Maximum bytes of output any sandbox tool returns to the model (64 KiB).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// Maximum entries `Glob` lists.
pub const GLOB_LIMIT: usize = 1000;

/// `PATH` given to commands.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Patterns refused in every command, whatever the agent's policy (case-insensitive regexes).
pub const BUILTIN_BLOCKED: &[&str] = &[
    r"rm\s+-rf\s+/",
    r"rm\s+-rf\s+~",
    r"sudo\s+",
    r"chmod\s+777",
    r"curl.*\|\s*(ba)?sh",
    r"wget.*\|\s*(ba)?sh",
    r"eval\s*\(",
    r">\s*/etc/",
    r">\s*/var/",
];

/// Why a sandbox could not be set up or a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The path leaves the workspace (absolute, `..` or symlink).
    #[error("Path escapes workspace: {0}")]
    Escape(String),
    /// The path is malformed (empty, NUL byte).
    #[error("Invalid path: {0:?}")]
    InvalidPath(String),
    /// The workspace itself is unusable.
    #[error("workspace {path}: {message}")]
    Workspace {
        /// Workspace path.
        path: String,
        /// The I/O error.
        message: String,
    },
}

/// One activation's sandbox: the workspace root and the shell policy.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    /// The workspace path as the runner named it (may differ from `root` through symlinks).
    given_root: PathBuf,
    shell: Shell,
    blocked: Vec<Regex>,
}

fn case_insensitive(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .ok()
}

/// Compiled blocked-command patterns, shared by every activation of the process. Compiling a
/// case-insensitive regex costs far more than a whole zero-latency activation, so each pattern
/// (built-in or an agent's `blocked_patterns`) is compiled once; `Regex` clones share it. The
/// patterns come from agent definitions, a small set, so the cache stays small.
fn blocked_regex(pattern: &str) -> Option<Regex> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = match CACHE.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| {
            case_insensitive(pattern).or_else(|| case_insensitive(&regex::escape(pattern)))
        })
        .clone()
}

impl Sandbox {
    /// A sandbox over an existing workspace directory. Policy patterns that are not valid
    /// regexes are matched literally.
    pub fn new(workspace: &Path, shell: &Shell) -> Result<Arc<Self>, SandboxError> {
        let root = std::fs::canonicalize(workspace).map_err(|e| SandboxError::Workspace {
            path: workspace.display().to_string(),
            message: e.to_string(),
        })?;
        if !root.is_dir() {
            return Err(SandboxError::Workspace {
                path: root.display().to_string(),
                message: "not a directory".into(),
            });
        }
        let blocked: Vec<Regex> = BUILTIN_BLOCKED
            .iter()
            .copied()
            .chain(shell.blocked_patterns.iter().map(String::as_str))
            .filter_map(blocked_regex)
            .collect();
        Ok(Arc::new(Self {
            root,
            given_root: workspace.to_path_buf(),
            shell: shell.clone(),
            blocked,
        }))
    }

    /// The canonical workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Adds the sandbox tools to a set: the file tools always, `Bash` only if the shell is enabled.
    pub fn add_to(self: &Arc<Self>, set: &mut ToolSet) {
        set.add(Arc::new(ReadTool(self.clone())));
        set.add(Arc::new(WriteTool(self.clone())));
        set.add(Arc::new(EditTool(self.clone())));
        set.add(Arc::new(GlobTool(self.clone())));
        set.add(Arc::new(GrepTool(self.clone())));
        if self.shell.enabled {
            set.add(Arc::new(BashTool(self.clone())));
        }
    }

    /// Maps a tool's path argument to a real path inside the workspace, or refuses it.
    pub fn resolve(&self, input: &str) -> Result<PathBuf, SandboxError> {
        if input.is_empty() || input.contains('\0') {
            return Err(SandboxError::InvalidPath(input.to_string()));
        }
        let given = Path::new(input);
        let relative: PathBuf = if given.is_absolute() {
            match given
                .strip_prefix(&self.root)
                .or_else(|_| given.strip_prefix(&self.given_root))
            {
                Ok(rest) => rest.to_path_buf(),
                Err(_) => return Err(SandboxError::Escape(input.to_string())),
            }
        } else {
            given.to_path_buf()
        };
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in relative.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(SandboxError::Escape(input.to_string()));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(SandboxError::Escape(input.to_string()));
                }
            }
        }
        let mut current = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Err(_) => {
                    // Does not exist: the rest are plain names created inside `current`'s parent.
                    for rest in &parts[i + 1..] {
                        current.push(rest);
                    }
                    return Ok(current);
                }
                Ok(meta) if meta.file_type().is_symlink() => {
                    let real = std::fs::canonicalize(&current)
                        .map_err(|_| SandboxError::Escape(input.to_string()))?;
                    if !real.starts_with(&self.root) {
                        return Err(SandboxError::Escape(input.to_string()));
                    }
                    current = real;
                }
                Ok(_) => {}
            }
        }
        Ok(current)
    }

    fn display(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    }

    /// Checks a command against `capabilities.shell`; `Err` says why it is refused.
    pub fn check_command(&self, command: &str) -> Result<(), String> {
        if !self.shell.enabled {
            return Err(
                "Shell access is disabled for this agent (capabilities.shell.enabled is false)"
                    .into(),
            );
        }
        if command.trim().is_empty() {
            return Err("Empty command".into());
        }
        if let Some(re) = self.blocked.iter().find(|re| re.is_match(command)) {
            return Err(format!(
                "Command blocked by policy (pattern {:?})",
                re.as_str()
            ));
        }
        if !self.shell.allowed_commands.is_empty() {
            // With an allow-list, nested commands could smuggle anything in, so they are refused.
            for nested in ["$(", "`", "<(", ">("] {
                if command.contains(nested) {
                    return Err(format!(
                        "Command substitution ({nested}) is not allowed with an allowed_commands list"
                    ));
                }
            }
            let normalized = command.replace("&&", "\n").replace("||", "\n");
            for segment in normalized.split(['\n', ';', '|', '&']) {
                let Some(first) = segment.split_whitespace().next() else {
                    continue;
                };
                if !self.shell.allowed_commands.iter().any(|a| a == first) {
                    return Err(format!(
                        "Command '{first}' is not in allowed_commands ({})",
                        self.shell.allowed_commands.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs a command under the policy (see the module docs).
    pub async fn run_command(&self, command: &str) -> ToolOutput {
        if let Err(why) = self.check_command(command) {
            tracing::info!(reason = %why, "sandbox_command_refused");
            return ToolOutput::error(why);
        }
        let timeout = Duration::from_secs(self.shell.timeout_seconds.max(1));
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("HOME", &self.root)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return ToolOutput::error(format!("Could not start the command: {e}")),
        };
        let Some(pid) = child.id() else {
            return ToolOutput::error("The command exited before it could be tracked");
        };
        let mut group = GroupGuard {
            pgid: pid as i32,
            armed: true,
        };
        let out = child
            .stdout
            .take()
            .map(|s| tokio::spawn(read_capped(s, OUTPUT_LIMIT)));
        let err = child
            .stderr
            .take()
            .map(|s| tokio::spawn(read_capped(s, OUTPUT_LIMIT)));
        // Wait for the leader to exit WITHOUT reaping it: while it is an unreaped zombie its
        // pid (= the group id) cannot be reused, so killing the group afterwards can only hit
        // our own leftovers, never an unrelated process group.
        let exited = tokio::task::spawn_blocking(move || wait_exit_no_reap(pid as i32));
        let timed_out = tokio::select! {
            _ = exited => false,
            _ = tokio::time::sleep(timeout) => true,
        };
        // Kill the whole group either way: on timeout, and to end background leftovers.
        group.kill();
        group.disarm();
        let waited = child.wait().await;
        let status = if timed_out { None } else { Some(waited) };
        let collect = |task: Option<tokio::task::JoinHandle<(Vec<u8>, bool)>>| async move {
            match task {
                // A process that left the group could hold the pipe open; do not wait forever.
                Some(t) => match tokio::time::timeout(Duration::from_secs(2), t).await {
                    Ok(Ok(v)) => v,
                    _ => (Vec::new(), false),
                },
                None => (Vec::new(), false),
            }
        };
        let (stdout, t1) = collect(out).await;
        let (stderr, t2) = collect(err).await;
        let mut text = String::from_utf8_lossy(&stdout).into_owned();
        if !stderr.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("[stderr]\n");
            text.push_str(&String::from_utf8_lossy(&stderr));
        }
        let (mut text, t3) = truncate(text, OUTPUT_LIMIT);
        if t1 || t2 || t3 {
            text.push_str(&format!("\n[output truncated at {OUTPUT_LIMIT} bytes]"));
        }
        match status {
            None => {
                tracing::warn!(timeout_s = timeout.as_secs(), "sandbox_command_timeout");
                ToolOutput::error(format!(
                    "Command timed out after {} seconds; its process group was killed.\n{text}",
                    timeout.as_secs()
                ))
            }
            Some(Err(e)) => ToolOutput::error(format!("Could not wait for the command: {e}")),
            Some(Ok(s)) if s.success() => ToolOutput::ok(if text.is_empty() {
                "(no output)".to_string()
            } else {
                text
            }),
            Some(Ok(s)) => {
                let code = s
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "killed by a signal".into());
                ToolOutput::error(format!("{text}\n[exit code {code}]"))
            }
        }
    }
}

/// Kills a process group when dropped (the activation was cancelled mid-command) or on demand.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    /// Called once the leader is about to be reaped: its pid may be reused afterwards.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // Reached with `armed` only when the call was abandoned before we reaped the leader,
        // so the group id is still ours.
        if self.armed {
            self.kill();
        }
    }
}

/// Blocks until process `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn wait_exit_no_reap(pid: i32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    loop {
        match waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// Cuts text to at most `limit` bytes on a char boundary.
pub(crate) fn truncate(mut text: String, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    (text, true)
}

fn args<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, ToolOutput> {
    serde_json::from_value(v).map_err(|e| ToolOutput::error(format!("Invalid arguments: {e}")))
}

fn schema(props: serde_json::Value, required: &[&str]) -> serde_json::Value {
    json!({"type": "object", "properties": props, "required": required})
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ToolOutput> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolOutput::error(format!("Tool task failed: {e}")))
}

macro_rules! try_out {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(out) => return out,
        }
    };
}

struct ReadTool(Arc<Sandbox>);
struct WriteTool(Arc<Sandbox>);
struct EditTool(Arc<Sandbox>);
struct BashTool(Arc<Sandbox>);
struct GlobTool(Arc<Sandbox>);
struct GrepTool(Arc<Sandbox>);

#[derive(Deserialize)]
struct PathArgs {
    file_path: String,
}

#[async_trait]
impl Tool for ReadTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "Read".into(),
            description: format!("Read a text file in the workspace (first {OUTPUT_LIMIT} bytes)."),
            input_schema: schema(
                json!({"file_path": {"type": "string", "description": "path relative to the workspace"}}),
                &["file_path"],
            ),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: PathArgs = try_out!(args(a));
        let path = match self.0.resolve(&a.file_path) {
            Ok(p) => p,
            Err(e) => return ToolOutput::error(e.to_string()),
        };
        let shown = a.file_path.clone();
        try_out!(
            blocking(move || {
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(_) => return ToolOutput::error(format!("File not found: {shown}")),
                };
                if !meta.is_file() {
                    return ToolOutput::error(format!("Not a file: {shown}"));
                }
                let mut f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
                };
                let mut buf = Vec::new();
                use std::io::Read;
                if let Err(e) = (&mut f).take(OUTPUT_LIMIT as u64 + 1).read_to_end(&mut buf) {
                    return ToolOutput::error(format!("Cannot read {shown}: {e}"));
                }
                let (mut text, cut) =
                    truncate(String::from_utf8_lossy(&buf).into_owned(), OUTPUT_LIMIT);
                if cut || buf.len() > OUTPUT_LIMIT {
                    text.push_str(&format!(
                        "\n[file truncated at {OUTPUT_LIMIT} bytes of {}]",
                        meta.len()
                    ));
                }
                ToolOutput::ok(text)
            })
            .await
        )
    }
}

#[derive(Deserialize)]
struct WriteArgs {
    file_path: String,
    content: String,
}

#[async_trait]
impl Tool for WriteTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "Write".into(),
            description:
                "Create or overwrite a file in the workspace (parent directories are created)."
                    .into(),
            input_schema: schema(
                json!({"file_path": {"type": "string"}, "content": {"type": "string"}}),
                &["file_path", "content"],
            ),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: WriteArgs = try_out!(args(a));
        let path = match self.0.resolve(&a.file_path) {
            Ok(p) => p,
            Err(e) => return ToolOutput::error(e.to_string()),
        };
        let shown = self.0.display(&path);
        try_out!(
            blocking(move || {
                if path.is_dir() {
                    return ToolOutput::error(format!("Not a file: {shown}"));
                }
                if let Some(parent) = path.parent()
                    && let Err(e) = std::fs::create_dir_all(parent)
                {
                    return ToolOutput::error(format!("Cannot create {}: {e}", parent.display()));
                }
                match std::fs::write(&path, a.content.as_bytes()) {
                    Ok(()) => {
                        ToolOutput::ok(format!("File written: {shown} ({} bytes)", a.content.len()))
                    }
                    Err(e) => ToolOutput::error(format!("Cannot write {shown}: {e}")),
                }
            })
            .await
        )
    }
}

#[derive(Deserialize)]
struct EditArgs {
    file_path: String,
    old_text: String,
    new_text: String,
    #[serde(default)]
    replace_all: bool,
}

#[async_trait]
impl Tool for EditTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "Edit".into(),
            description: "Replace old_text with new_text in a workspace file. old_text must occur exactly once unless replace_all is true.".into(),
            input_schema: schema(
                json!({"file_path": {"type": "string"}, "old_text": {"type": "string"}, "new_text": {"type": "string"},
                       "replace_all": {"type": "boolean"}}),
                &["file_path", "old_text", "new_text"],
            ),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: EditArgs = try_out!(args(a));
        let path = match self.0.resolve(&a.file_path) {
            Ok(p) => p,
            Err(e) => return ToolOutput::error(e.to_string()),
        };
        let shown = self.0.display(&path);
        try_out!(
            blocking(move || {
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(_) => return ToolOutput::error(format!("File not found: {shown}")),
                };
                if a.old_text.is_empty() {
                    return ToolOutput::error("old_text must not be empty");
                }
                let count = text.matches(&a.old_text).count();
                let preview: String = a.old_text.chars().take(50).collect();
                let edited = match count {
                    0 => return ToolOutput::error(format!("Text not found in file: {preview}...")),
                    1 => text.replacen(&a.old_text, &a.new_text, 1),
                    n if a.replace_all => {
                        let _ = n;
                        text.replace(&a.old_text, &a.new_text)
                    }
                    n => {
                        return ToolOutput::error(format!(
                            "old_text occurs {n} times in {shown}; add context to make it unique or set replace_all"
                        ));
                    }
                };
                match std::fs::write(&path, edited) {
                    Ok(()) => ToolOutput::ok(format!("File edited: {shown} ({count} replacement(s))")),
                    Err(e) => ToolOutput::error(format!("Cannot write {shown}: {e}")),
                }
            })
            .await
        )
    }
}

#[derive(Deserialize)]
struct BashArgs {
    command: String,
}

#[async_trait]
impl Tool for BashTool {
    fn spec(&self) -> ToolSpec {
        let s = &self.0.shell;
        let allowed = if s.allowed_commands.is_empty() {
            String::new()
        } else {
            format!(" Allowed commands: {}.", s.allowed_commands.join(", "))
        };
        ToolSpec {
            name: "Bash".into(),
            description: format!(
                "Run a shell command in the workspace (timeout {} s, output capped at {OUTPUT_LIMIT} bytes).{allowed}",
                s.timeout_seconds
            ),
            input_schema: schema(json!({"command": {"type": "string"}}), &["command"]),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: BashArgs = try_out!(args(a));
        self.0.run_command(&a.command).await
    }
}

#[derive(Deserialize)]
struct GlobArgs {
    pattern: String,
}

#[async_trait]
impl Tool for GlobTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "Glob".into(),
            description: format!(
                "List workspace files matching a glob such as src/**/*.rs (at most {GLOB_LIMIT})."
            ),
            input_schema: schema(json!({"pattern": {"type": "string"}}), &["pattern"]),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: GlobArgs = try_out!(args(a));
        if Path::new(&a.pattern).is_absolute() || a.pattern.split('/').any(|c| c == "..") {
            return ToolOutput::error(SandboxError::Escape(a.pattern).to_string());
        }
        let matcher = match globset::GlobBuilder::new(&a.pattern)
            .literal_separator(true)
            .build()
        {
            Ok(g) => g.compile_matcher(),
            Err(e) => return ToolOutput::error(format!("Invalid glob: {e}")),
        };
        let root = self.0.root.clone();
        try_out!(
            blocking(move || {
                let mut found: Vec<String> = walkdir::WalkDir::new(&root)
                    .follow_links(false)
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter_map(|e| e.path().strip_prefix(&root).ok().map(Path::to_path_buf))
                    .filter(|rel| !rel.as_os_str().is_empty() && matcher.is_match(rel))
                    .map(|rel| rel.display().to_string())
                    .collect();
                if found.is_empty() {
                    return ToolOutput::ok("No files found matching pattern.");
                }
                found.sort();
                let total = found.len();
                found.truncate(GLOB_LIMIT);
                let mut text = found.join("\n");
                if total > GLOB_LIMIT {
                    text.push_str(&format!("\n[{} more not shown]", total - GLOB_LIMIT));
                }
                ToolOutput::ok(truncate(text, OUTPUT_LIMIT).0)
            })
            .await
        )
    }
}

#[derive(Deserialize)]
struct GrepArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

#[async_trait]
impl Tool for GrepTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "Grep".into(),
            description: "Search workspace files for a regular expression; prints path:line:text."
                .into(),
            input_schema: schema(
                json!({"pattern": {"type": "string"}, "path": {"type": "string", "description": "file or directory, default ."}}),
                &["pattern"],
            ),
        }
    }
    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: GrepArgs = try_out!(args(a));
        let re = match Regex::new(&a.pattern) {
            Ok(r) => r,
            Err(e) => return ToolOutput::error(format!("Invalid pattern: {e}")),
        };
        let start = match self.0.resolve(a.path.as_deref().unwrap_or(".")) {
            Ok(p) => p,
            Err(e) => return ToolOutput::error(e.to_string()),
        };
        let root = self.0.root.clone();
        try_out!(
            blocking(move || {
                let mut out = String::new();
                let mut truncated = false;
                'files: for entry in walkdir::WalkDir::new(&start)
                    .follow_links(false)
                    .sort_by_file_name()
                {
                    let Ok(entry) = entry else { continue };
                    if !entry.file_type().is_file()
                        || entry.metadata().map(|m| m.len() > 4 << 20).unwrap_or(true)
                    {
                        continue;
                    }
                    let Ok(bytes) = std::fs::read(entry.path()) else {
                        continue;
                    };
                    if bytes.contains(&0) {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&bytes);
                    let rel = entry
                        .path()
                        .strip_prefix(&root)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    for (n, line) in text.lines().enumerate() {
                        if re.is_match(line) {
                            let line: String = line.chars().take(500).collect();
                            out.push_str(&format!("{rel}:{}:{line}\n", n + 1));
                            if out.len() > OUTPUT_LIMIT {
                                truncated = true;
                                break 'files;
                            }
                        }
                    }
                }
                if out.is_empty() {
                    return ToolOutput::ok("No matches found.");
                }
                let (mut text, _) = truncate(out, OUTPUT_LIMIT);
                if truncated {
                    text.push_str(&format!("\n[output truncated at {OUTPUT_LIMIT} bytes]"));
                }
                ToolOutput::ok(text)
            })
            .await
        )
    }
}
