//! The built-in MCP servers (`github`, `brave`, `filesystem`, `postgres`, `hub`): how each is
//! started, which grant lets it start, which credentials its grants unlock, and whether each of
//! its tools reads or writes.
//!
//! | server | command | starts when the agent holds | credentials handed over |
//! |---|---|---|---|
//! | `github` | `npx -y @modelcontextprotocol/server-github` | any `github:` grant | `GITHUB_PERSONAL_ACCESS_TOKEN` <- `GITHUB_PAT` |
//! | `brave` | `npx -y @modelcontextprotocol/server-brave-search` | `brave:search` | `BRAVE_API_KEY` |
//! | `filesystem` | `npx -y @modelcontextprotocol/server-filesystem <workspace>` | any `filesystem:`/`fs:` grant | none |
//! | `postgres` | `npx -y @modelcontextprotocol/server-postgres <url>` | any `postgres:` grant | `DATABASE_URL` = the granted database's URL: `DATABASE_URL_<DB>`, else `DATABASE_URL` only if its path names `<db>` (`postgres:*`: `DATABASE_URL`) |
//! | `hub` | `botburrow-hub-mcp` (next to the runner binary, else on `PATH`) | `hub:read` (or write, or `*`) | `HUB_URL`, `HUB_API_KEY`, `HUB_AGENT_ID`, `HUB_GRANTS` |
//!
//! The fleet's `HUB_API_KEY` goes to the built-in `hub` server only, never to a custom server,
//! whatever its grant. The postgres server's tools are checked against the grants on the one
//! database it connects to.
//!
//! Tools a built-in server offers are classified read or write by [`tool_access`]; a tool this
//! table does not know counts as write, so a server upgrade can never hand a read-only agent a
//! new write tool. Custom servers name their grant and per-tool scopes in their config entry.

use botburrow_shared::grants::{Access, Grants};
use std::path::{Path, PathBuf};

/// The built-in server names, in the order documented.
pub const BUILTIN_SERVERS: &[&str] = &["github", "brave", "filesystem", "postgres", "hub"];

/// The name of the Hub MCP server binary.
pub const HUB_MCP_BIN: &str = "botburrow-hub-mcp";

/// Whether `name` is a built-in server.
pub fn is_builtin(name: &str) -> bool {
    BUILTIN_SERVERS.contains(&name)
}

/// The grant service that governs a built-in server.
pub fn service_of(server: &str) -> &str {
    server
}

/// The default program and arguments of a built-in server (before the per-server trailing
/// argument: the workspace for `filesystem`, the database URL for `postgres`).
pub fn default_command(server: &str) -> Option<(PathBuf, Vec<String>)> {
    let npx = |pkg: &str| {
        Some((
            PathBuf::from("npx"),
            vec!["-y".to_string(), pkg.to_string()],
        ))
    };
    match server {
        "github" => npx("@modelcontextprotocol/server-github"),
        "brave" => npx("@modelcontextprotocol/server-brave-search"),
        "filesystem" => npx("@modelcontextprotocol/server-filesystem"),
        "postgres" => npx("@modelcontextprotocol/server-postgres"),
        "hub" => Some((hub_mcp_binary(), Vec::new())),
        _ => None,
    }
}

/// Finds `botburrow-hub-mcp`: next to the current executable first (and one level up, where
/// cargo puts binaries relative to test executables in `target/*/deps`), else by name on `PATH`.
pub fn hub_mcp_binary() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(HUB_MCP_BIN);
            if candidate.is_file() {
                return candidate;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    PathBuf::from(HUB_MCP_BIN)
}

/// Whether the (effective) grants let a built-in server start at all.
pub fn may_start(server: &str, grants: &Grants) -> bool {
    match server {
        "github" | "filesystem" | "postgres" => grants.has_service(server),
        "brave" => grants.allows("brave", "search"),
        "hub" => grants.allows("hub", "read"),
        _ => false,
    }
}

/// The grant an operator should add, for the "not started" log line.
pub fn required_grant(server: &str) -> &'static str {
    match server {
        "github" => "github:read",
        "brave" => "brave:search",
        "filesystem" => "fs:read",
        "postgres" => "postgres:<db>:read",
        "hub" => "hub:read",
        _ => "<name>:*",
    }
}

const GITHUB_READ: &[&str] = &[
    "search_repositories",
    "get_file_contents",
    "list_commits",
    "list_issues",
    "search_code",
    "search_issues",
    "search_users",
    "get_issue",
    "get_pull_request",
    "list_pull_requests",
    "get_pull_request_files",
    "get_pull_request_status",
    "get_pull_request_comments",
    "get_pull_request_reviews",
];

const FILESYSTEM_READ: &[&str] = &[
    "read_file",
    "read_text_file",
    "read_media_file",
    "read_multiple_files",
    "list_directory",
    "list_directory_with_sizes",
    "directory_tree",
    "search_files",
    "get_file_info",
    "list_allowed_directories",
];

const HUB_READ: &[&str] = &["hub_search", "hub_get_thread", "hub_get_notifications"];

/// Whether a tool of a built-in server reads or writes. Unknown tools count as write.
pub fn tool_access(server: &str, tool: &str) -> Access {
    let reads: &[&str] = match server {
        "github" => GITHUB_READ,
        "filesystem" => FILESYSTEM_READ,
        "postgres" => &["query"],
        "brave" => &["brave_web_search", "brave_local_search"],
        "hub" => HUB_READ,
        _ => &[],
    };
    if reads.contains(&tool) {
        Access::Read
    } else {
        Access::Write
    }
}

/// Whether the grants allow calling `tool` of built-in `server`.
pub fn tool_allowed(server: &str, tool: &str, grants: &Grants) -> bool {
    let access = tool_access(server, tool);
    match server {
        "brave" => access == Access::Read && grants.allows("brave", "search"),
        "postgres" => grants.iter().any(|g| {
            g.service() == "postgres" && {
                let scope = g.scope();
                scope == "*"
                    || scope.ends_with(":*")
                    || scope.ends_with(":write")
                    || (access == Access::Read && scope.ends_with(":read"))
            }
        }),
        _ => grants.allows(server, access.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(list: &[&str]) -> Grants {
        Grants::parse("t", list).expect("valid")
    }

    #[test]
    fn read_grant_sees_only_read_tools() {
        let read = g(&["github:read"]);
        assert!(may_start("github", &read));
        assert!(tool_allowed("github", "get_file_contents", &read));
        assert!(!tool_allowed("github", "create_issue", &read));
        assert!(!tool_allowed("github", "some_new_tool", &read));
        let all = g(&["github:*"]);
        assert!(tool_allowed("github", "create_issue", &all));
    }

    #[test]
    fn start_gates_follow_grants_and_aliases() {
        assert!(may_start("filesystem", &g(&["fs:write"])));
        assert!(may_start("filesystem", &g(&["filesystem:read"])));
        assert!(tool_allowed("filesystem", "read_file", &g(&["fs:write"])));
        assert!(!tool_allowed("filesystem", "write_file", &g(&["fs:read"])));
        assert!(may_start("hub", &g(&["hub:write"])));
        assert!(!may_start("hub", &g(&["github:*"])));
        assert!(!may_start("brave", &g(&["hub:*"])));
        assert!(may_start("postgres", &g(&["postgres:sales:read"])));
        assert!(tool_allowed(
            "postgres",
            "query",
            &g(&["postgres:sales:read"])
        ));
        assert!(!tool_allowed(
            "postgres",
            "drop_everything",
            &g(&["postgres:sales:read"])
        ));
    }
}
