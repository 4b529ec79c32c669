//! MCP for the runner: the per-activation [`manager::McpManager`] (rmcp client over stdio child
//! processes), the [`builtin`] server table with its grant and read/write tool scopes, and the
//! Hub MCP server that ships as the `botburrow-hub-mcp` binary.

pub mod builtin;
pub mod hub_server;
pub mod manager;

pub use manager::{
    LaunchSpec, McpActivation, McpError, McpManager, McpMetrics, McpOptions, McpTool,
    ToolCredentials,
};
