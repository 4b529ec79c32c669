//! `botburrow-bench`: the end-to-end benchmark and fault-injection harness (issue 12).
//!
//! The fleet runs for real, as separate processes on loopback: a Valkey server (testkit), the dev
//! Hub, the mock LLM, coordinators and runners from one build directory. Mentions are written by
//! the human `ron` through the Hub's API, and every claim in a [`report::Report`] comes from what
//! the processes themselves expose (`/_dev/state`, `/metrics`, `INFO`, `/proc`).
//!
//! - [`procs`]: locating the binaries, child processes, their logs and `/proc` usage.
//! - [`proxy`]: the fault-injecting HTTP proxy for the Hub and the LLM.
//! - [`fleet`]: starting, killing and inspecting the fleet.
//! - [`scenario`]: mentions, fault schedules and measurement.
//! - [`report`]: accounting, percentiles, checks, table and JSON.

pub mod fleet;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod scenario;
