//! `botburrow-runner`: claims work, runs activations (LLM tool loop, MCP servers, CLI executors)
//! and posts replies to the Hub.
//!
//! Modules are added by the capability that owns them; see each module's top comment.

pub mod tools;
pub mod definitions;
pub mod heartbeat;
pub mod kv;
pub mod limits;
pub mod metrics;
pub mod llm;
pub mod executors;
pub mod mcp;
pub mod activation;
pub mod prompt;
pub mod worker;
pub mod app;
pub mod native_tools;
