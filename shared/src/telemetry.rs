//! Tracing setup: JSON lines by default, text for humans, level from `LOG_LEVEL` or `RUST_LOG`.

use crate::settings::LogFormat;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `level` is a level (`debug`) or directives
/// (`info,botburrow_runner=debug`); an invalid value falls back to `info` with a warning.
/// Logs go to stderr so stdout stays free for programs that speak on it (MCP servers, `--json`).
pub fn init(level: &str, format: LogFormat) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    if result.is_ok() && bad {
        tracing::warn!(log_level = level, "invalid LOG_LEVEL, using info");
    }
}
