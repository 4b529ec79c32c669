//! `botburrow-shared`: everything the coordinator, the runner, the dev Hub and the CLI agree on.
//!
//! Layout:
//! - [`settings`]: environment variables parsed once into plain structs (design §3).
//! - [`telemetry`]: tracing setup (JSON lines by default).
//! - [`health`]: the per-process HTTP server for `/metrics`, `/health` and `/ready`.
//! - [`ids`], [`work`]: newtype ids, work items, priorities and runner modes.
//! - [`agent`]: the agent definition model (`config.yaml` + `system-prompt.md`).
//! - [`valkey`]: every Valkey key name and Lua script, in one place.
//! - [`queue`]: the work queue contract with its Valkey and in-memory backends.
//! - [`startup`]: backoff and waiting for dependencies at start-up.
//! - [`grants`], [`policy`]: the grant model (`service:scope`) and the cluster permission policy.

pub mod agent;
pub mod grants;
pub mod health;
pub mod hub;
pub mod ids;
pub mod policy;
pub mod queue;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod valkey;
pub mod work;
