//! Keeps `docs/troubleshooting.md` honest, without building or running anything:
//!
//! - every `botburrow_<name>` in it is either a metric the fleet registers (`register("<name>", ...)`
//!   in `shared/src`, `coordinator/src`, `runner/src`, `devhub/src` or `cli/src`), written the way
//!   Prometheus exports it (a counter only as `<name>_total`; a histogram as itself or with
//!   `_bucket`, `_sum`, `_count`), or a crate name (for `LOG_LEVEL` directives such as
//!   `info,botburrow_runner=debug`);
//! - every `botburrow ...` command in a code span or code block uses real subcommands of this CLI
//!   (read from the clap `Subcommand` enums in `cli/src`) and real `--flags`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where metrics may be registered.
const SOURCE_DIRS: [&str; 5] = ["shared/src", "coordinator/src", "runner/src", "devhub/src", "cli/src"];

/// Crates whose names may appear in `LOG_LEVEL` directives.
const CRATE_DIRS: [&str; 5] = ["shared", "coordinator", "runner", "devhub", "cli"];

/// The clap `Subcommand` enum reached by the words typed so far (`""` = `botburrow` itself).
const SUBCOMMAND_ENUMS: [(&str, &str); 6] = [
    ("", "Command"),
    ("agents", "AgentsCommand"),
    ("queue", "QueueCommand"),
    ("activation", "ActivationCommand"),
    ("queue backoff", "BackoffAction"),
    ("queue dlq", "DlqAction"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn doc() -> String {
    read(&root().join("docs/troubleshooting.md"))
}

fn collect_rs(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("directory entry").path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = read(&path);
            out.push((path, text));
        }
    }
}

/// Every `.rs` file under `dirs` (relative to the workspace root), with its text.
fn sources(dirs: &[&str]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for dir in dirs {
        collect_rs(&root().join(dir), &mut out);
    }
    assert!(!out.is_empty(), "no Rust sources under {dirs:?}");
    out
}

// ------------------------------------------------------------------------------------------ metrics

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The kind of the metric registered as `name`, or `None` if no source registers it. A
/// registration is `<registry>.register("<name>", "<help>", m.<field>.clone())`; the kind comes
/// from the declaration `pub <field>: <type>` in the same file.
fn registered_kind(files: &[(PathBuf, String)], name: &str) -> Option<Kind> {
    let literal = format!("\"{name}\"");
    for (path, text) in files {
        let mut from = 0;
        while let Some(pos) = text[from..].find(&literal) {
            let at = from + pos;
            from = at + literal.len();
            if !text[..at].trim_end().ends_with("register(") {
                continue;
            }
            let rest = &text[from..];
            let Some(clone) = rest.find(".clone()") else {
                continue;
            };
            let args = &rest[..clone];
            if args.contains(");") {
                continue;
            }
            let mut field: Vec<char> =
                args.chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            field.reverse();
            let field: String = field.into_iter().collect();
            let decl = format!("pub {field}:");
            let Some(d) = text.find(&decl) else {
                panic!("{}: `{name}` is registered from `{field}`, but `{decl}` is not declared there", path.display());
            };
            let line = text[d..].lines().next().unwrap_or_default();
            let kind = if line.contains("Histogram") {
                Kind::Histogram
            } else if line.contains("Counter") {
                Kind::Counter
            } else if line.contains("Gauge") {
                Kind::Gauge
            } else {
                panic!("{}: cannot tell the metric kind of `{name}` from `{line}`", path.display());
            };
            return Some(kind);
        }
    }
    None
}

/// Lib, bin and package names of the fleet's crates, as they appear in tracing targets.
fn crate_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in CRATE_DIRS {
        for line in read(&root().join(dir).join("Cargo.toml")).lines() {
            if let Some(rest) = line.trim().strip_prefix("name")
                && let Some(value) = rest.trim_start().strip_prefix('=')
            {
                names.insert(value.trim().trim_matches('"').replace('-', "_"));
            }
        }
    }
    assert!(names.contains("botburrow_runner"), "crate names not found: {names:?}");
    names
}

/// Every `botburrow_[a-z_]+` in `text` that does not continue a longer identifier.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "botburrow_";
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let at = from + pos;
        from = at + PREFIX.len();
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let tail: String = text[from..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        if !tail.is_empty() {
            out.insert(format!("{PREFIX}{tail}"));
        }
    }
    out
}

fn check_metric(files: &[(PathBuf, String)], crates: &BTreeSet<String>, token: &str) -> Result<(), String> {
    if crates.contains(token) {
        return Ok(());
    }
    match registered_kind(files, token) {
        Some(Kind::Counter) => {
            return Err(format!("`{token}` is a counter: Prometheus exports it as `{token}_total`"));
        }
        Some(Kind::Gauge | Kind::Histogram) => return Ok(()),
        None => {}
    }
    let series = [("_total", Kind::Counter), ("_bucket", Kind::Histogram), ("_sum", Kind::Histogram), ("_count", Kind::Histogram)];
    for (suffix, wanted) in series {
        if let Some(base) = token.strip_suffix(suffix) {
            return match registered_kind(files, base) {
                Some(kind) if kind == wanted => Ok(()),
                Some(kind) => Err(format!("`{token}`: `{base}` is a {kind:?}, which exports no `{suffix}` series")),
                None => Err(format!("`{token}`: no metric `{base}` is registered in {SOURCE_DIRS:?}")),
            };
        }
    }
    Err(format!("`{token}` is neither a metric registered in {SOURCE_DIRS:?} nor a crate name"))
}

#[test]
fn every_metric_name_in_the_doc_is_registered() {
    let files = sources(&SOURCE_DIRS);
    let crates = crate_names();
    let tokens = metric_tokens(&doc());
    assert!(tokens.len() >= 15, "expected the doc to name many metrics, found {tokens:?}");
    let errors: Vec<String> = tokens.iter().filter_map(|t| check_metric(&files, &crates, t).err()).collect();
    assert!(errors.is_empty(), "docs/troubleshooting.md:\n{}", errors.join("\n"));
}

#[test]
fn the_metric_check_rejects_made_up_and_misspelt_names() {
    let files = sources(&SOURCE_DIRS);
    let crates = crate_names();
    for good in ["botburrow_activations_total", "botburrow_queue_depth", "botburrow_activation_duration_seconds_bucket", "botburrow_runner"] {
        assert_eq!(check_metric(&files, &crates, good), Ok(()), "{good}");
    }
    for bad in [
        "botburrow_activations",
        "botburrow_queue_depth_total",
        "botburrow_queue_length",
        "botburrow_queue_",
        "botburrow_coordinator_is_leader_bucket",
        "botburrow_made_up_total",
    ] {
        assert!(check_metric(&files, &crates, bad).is_err(), "{bad} should be rejected");
    }
}

// ----------------------------------------------------------------------------------------- commands

/// clap's name for a variant: `FooBar` -> `foo-bar`.
fn kebab(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The subcommand names of `pub enum <name> { ... }` in `cli_src`.
fn enum_variants(cli_src: &str, name: &str) -> BTreeSet<String> {
    let header = format!("pub enum {name} {{");
    let start = cli_src.find(&header).unwrap_or_else(|| panic!("no `{header}` in cli/src")) + header.len();
    let mut depth = 1i32;
    let mut variants = BTreeSet::new();
    for line in cli_src[start..].lines() {
        let code = line.trim();
        if code.starts_with("//") {
            continue;
        }
        if depth == 1 && code.starts_with(|c: char| c.is_ascii_uppercase()) {
            let ident: String = code.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            variants.insert(kebab(&ident));
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        if depth <= 0 {
            break;
        }
    }
    assert!(!variants.is_empty(), "no variants found in `{header}`");
    variants
}

/// What the CLI accepts, read from its sources.
struct CliSpec {
    /// Words typed so far -> subcommands allowed next.
    levels: Vec<(String, BTreeSet<String>)>,
    /// All of `cli/src`, for flag lookups.
    text: String,
}

impl CliSpec {
    fn load() -> Self {
        let text: String = sources(&["cli/src"]).into_iter().map(|(_, t)| t).collect::<Vec<_>>().join("\n");
        let levels = SUBCOMMAND_ENUMS.iter().map(|(path, name)| ((*path).to_string(), enum_variants(&text, name))).collect();
        Self { levels, text }
    }

    fn subcommands(&self, path: &str) -> Option<&BTreeSet<String>> {
        self.levels.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// `--foo-bar` is a clap argument if some field `foo_bar:` is declared in `cli/src`.
    fn has_flag(&self, flag: &str) -> bool {
        flag == "help" || flag == "version" || self.text.contains(&format!(" {}:", flag.replace('-', "_")))
    }
}

/// Code in the doc: each line of a fenced block, and each inline code span (spans never cross a
/// paragraph, so they are read per paragraph).
fn code_segments(doc: &str) -> Vec<String> {
    fn flush(paragraph: &mut Vec<&str>, out: &mut Vec<String>) {
        let text = paragraph.join(" ");
        out.extend(text.split('`').skip(1).step_by(2).map(str::to_string));
        paragraph.clear();
    }
    let mut out = Vec::new();
    let mut fenced = false;
    let mut paragraph: Vec<&str> = Vec::new();
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            flush(&mut paragraph, &mut out);
            fenced = !fenced;
        } else if fenced {
            out.push(line.to_string());
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut out);
        } else {
            paragraph.push(line);
        }
    }
    flush(&mut paragraph, &mut out);
    out
}

/// The arguments of each `botburrow` invocation in a code segment: `botburrow` at the start of a
/// command (first word, after `--` as in `kubectl exec ... --`, after a shell operator, or as
/// `cargo run -p botburrow -- ...`), up to the end of that command.
fn invocations(segment: &str) -> Vec<Vec<String>> {
    let tokens: Vec<&str> = segment.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if *token != "botburrow" {
            continue;
        }
        let prev = if i == 0 { None } else { Some(tokens[i - 1]) };
        let start = match prev {
            None | Some("--" | "&&" | "||" | ";" | "|" | "$") => i + 1,
            Some("-p") if tokens.get(i + 1) == Some(&"--") => i + 2,
            _ => continue,
        };
        let args: Vec<String> = tokens[start.min(tokens.len())..]
            .iter()
            .take_while(|a| !a.starts_with(|c: char| "|&;><#".contains(c)))
            .map(|a| (*a).to_string())
            .collect();
        out.push(args);
    }
    out
}

fn is_word(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_lowercase()) && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Problems with one invocation: unknown subcommands (at every level the CLI has one) and flags.
/// Positional arguments and placeholders (`ID`, `DIR`, paths, `…`) end the subcommand chain.
fn check_invocation(cli: &CliSpec, args: &[String]) -> Vec<String> {
    let shown = format!("`botburrow {}`", args.join(" "));
    let mut errors = Vec::new();
    let mut path = String::new();
    let mut expecting = true;
    for arg in args {
        if let Some(flag) = arg.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or_default();
            if !name.is_empty() && !cli.has_flag(name) {
                errors.push(format!("{shown}: no flag `--{name}` in cli/src"));
            }
            continue;
        }
        let Some(allowed) = cli.subcommands(&path).filter(|_| expecting) else {
            expecting = false;
            continue;
        };
        let alternatives: Vec<&str> = arg.split('|').collect();
        if !alternatives.iter().all(|w| is_word(w)) {
            expecting = false;
            continue;
        }
        for w in &alternatives {
            if !allowed.contains(*w) {
                let level = if path.is_empty() { "botburrow".to_string() } else { format!("botburrow {path}") };
                errors.push(format!("{shown}: `{w}` is not a subcommand of `{level}` (known: {allowed:?})"));
            }
        }
        if alternatives.len() == 1 {
            path = if path.is_empty() { arg.clone() } else { format!("{path} {arg}") };
        } else {
            expecting = false;
        }
    }
    errors
}

#[test]
fn every_botburrow_command_in_the_doc_exists() {
    let cli = CliSpec::load();
    let calls: Vec<Vec<String>> = code_segments(&doc()).iter().flat_map(|s| invocations(s)).collect();
    let first_words: BTreeSet<&str> = calls.iter().filter_map(|a| a.first()).map(String::as_str).collect();
    for expected in ["doctor", "queue", "activation", "agents"] {
        assert!(first_words.contains(expected), "the doc shows no `botburrow {expected}` (found {first_words:?})");
    }
    let errors: Vec<String> = calls.iter().flat_map(|a| check_invocation(&cli, a)).collect();
    assert!(errors.is_empty(), "docs/troubleshooting.md:\n{}", errors.join("\n"));
}

#[test]
fn the_command_check_rejects_made_up_commands() {
    let cli = CliSpec::load();
    let check = |line: &str| -> Vec<String> { invocations(line).iter().flat_map(|a| check_invocation(&cli, a)).collect() };
    for good in [
        "botburrow up --demo",
        "kubectl -n botburrow-agents exec deploy/runner-hybrid -c runner -- botburrow queue dlq retry ID",
        "botburrow queue backoff clear AGENT",
        "botburrow queue stats|peek|backoff|dlq",
        "botburrow agents validate DIR --policy permissions.yaml",
        "botburrow doctor --check-hub | tee out",
        "cargo run --release -p botburrow -- up",
        "helm install botburrow charts/botburrow-agents",
    ] {
        assert!(check(good).is_empty(), "{good}: {:?}", check(good));
    }
    for bad in [
        "botburrow queues stats",
        "botburrow queue drain",
        "botburrow queue dlq replay ID",
        "botburrow activation kill ID",
        "botburrow doctor --check-everything",
        "kubectl exec valkey-0 -- botburrow reset",
    ] {
        assert!(!check(bad).is_empty(), "{bad} should be rejected");
    }
    assert_eq!(code_segments("a `botburrow queue stats` b\n\n```sh\nbotburrow doctor\n```\n").len(), 2);
}
