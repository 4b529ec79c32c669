//! `botburrow-test-mcp-server`: a small, real stdio MCP server (rmcp) for the MCP manager's tests.
//!
//! Tools: `echo {text}`, `env {}` (its own environment as sorted `K=V` lines), `crash {}` (exits
//! the process in the middle of the call), `sleep {ms}`, `fail {message}` (an `isError` result),
//! `spawn {}` (starts a `sleep` grandchild and returns its pid, to prove process-group kills),
//! `pid {}` (its own pid). `--tool NAME` (repeatable) adds echo-like tools with other names, so a
//! test can impersonate a built-in server's read and write tools.
//! Startup faults for negative tests: `--exit-at-start` (message on stderr, exit 3) and
//! `--hang-at-start` (never answers `initialize`; with `TEST_MCP_PID_FILE` it also starts a
//! grandchild and writes both pids there).

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use std::sync::Arc;

#[derive(Clone)]
struct TestServer {
    extra: Arc<Vec<String>>,
}

fn schema(v: Value) -> Arc<Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn text_arg(args: &Option<Map<String, Value>>, key: &str) -> Option<String> {
    args.as_ref()
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl TestServer {
    fn tools(&self) -> Vec<Tool> {
        let text = schema(
            json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}),
        );
        let empty = schema(json!({"type":"object","properties":{}}));
        let mut tools = vec![
            Tool::new("echo", "Echo the given text back", text.clone()),
            Tool::new(
                "env",
                "Return this server's environment as sorted KEY=VALUE lines",
                empty.clone(),
            ),
            Tool::new(
                "crash",
                "Exit the server process in the middle of this call",
                empty.clone(),
            ),
            Tool::new(
                "sleep",
                "Sleep for ms milliseconds, then answer",
                schema(
                    json!({"type":"object","properties":{"ms":{"type":"integer"}},"required":["ms"]}),
                ),
            ),
            Tool::new(
                "fail",
                "Answer with an isError result carrying the message",
                schema(json!({"type":"object","properties":{"message":{"type":"string"}}})),
            ),
            Tool::new(
                "spawn",
                "Start a long sleep grandchild and return its pid",
                empty.clone(),
            ),
            Tool::new("pid", "Return this server's pid", empty),
        ];
        for name in self.extra.iter() {
            tools.push(Tool::new(
                name.clone(),
                format!("Test tool {name}: echoes its arguments"),
                text.clone(),
            ));
        }
        tools
    }
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            rmcp::model::Implementation::new("botburrow-test-mcp-server", "1.0"),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments;
        let result = match request.name.as_ref() {
            "echo" => CallToolResult::success(vec![ContentBlock::text(
                text_arg(&args, "text").unwrap_or_default(),
            )]),
            "env" => {
                let mut vars: Vec<String> =
                    std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                vars.sort();
                CallToolResult::success(vec![ContentBlock::text(vars.join("\n"))])
            }
            "crash" => {
                eprintln!("test server: crashing on request");
                std::process::exit(3);
            }
            "sleep" => {
                let ms = args
                    .as_ref()
                    .and_then(|a| a.get("ms"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                CallToolResult::success(vec![ContentBlock::text(format!("slept {ms}ms"))])
            }
            "fail" => CallToolResult::error(vec![
                ContentBlock::text("failure part 1"),
                ContentBlock::text(text_arg(&args, "message").unwrap_or_else(|| "failed".into())),
            ]),
            "spawn" => match std::process::Command::new("sleep").arg("1000").spawn() {
                Ok(child) => {
                    CallToolResult::success(vec![ContentBlock::text(child.id().to_string())])
                }
                Err(e) => {
                    CallToolResult::error(vec![ContentBlock::text(format!("spawn failed: {e}"))])
                }
            },
            "pid" => {
                CallToolResult::success(vec![ContentBlock::text(std::process::id().to_string())])
            }
            name if self.extra.iter().any(|t| t == name) => {
                CallToolResult::success(vec![ContentBlock::text(format!(
                    "{name}: {}",
                    Value::Object(args.unwrap_or_default())
                ))])
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut extra = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tool" => extra.extend(args.next()),
            "--exit-at-start" => {
                eprintln!("test server: refusing to start (--exit-at-start)");
                std::process::exit(3);
            }
            "--hang-at-start" => {
                // With TEST_MCP_PID_FILE set, start a grandchild and record "<own pid> <grandchild
                // pid>" so a test can check that a cancelled start kills the whole group.
                if let Ok(file) = std::env::var("TEST_MCP_PID_FILE") {
                    let grandchild = std::process::Command::new("sleep").arg("1000").spawn()?;
                    let tmp = format!("{file}.tmp");
                    std::fs::write(&tmp, format!("{} {}", std::process::id(), grandchild.id()))?;
                    std::fs::rename(&tmp, &file)?;
                }
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
            }
            other => eprintln!("test server: ignoring argument {other}"),
        }
    }
    eprintln!("test server: ready on stdio");
    let service = TestServer {
        extra: Arc::new(extra),
    }
    .serve(rmcp::transport::stdio())
    .await?;
    service.waiting().await?;
    Ok(())
}
