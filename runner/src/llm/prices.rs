//! USD prices per million tokens, so each activation's cost can be reported to the Hub and to
//! `botburrow_llm_cost_usd_total`. Built-in defaults cover common Anthropic and OpenAI models;
//! a YAML or JSON file (setting `LLM_PRICES_PATH`) adds or overrides entries:
//!
//! ```yaml
//! claude-sonnet-4: {input_per_mtok: 3.0, output_per_mtok: 15.0}
//! my-local-model:  {input_per_mtok: 0, output_per_mtok: 0}
//! ```
//!
//! Lookup: the exact model id, else the longest table key that prefixes it (so
//! `claude-sonnet-4-20250514` uses `claude-sonnet-4`), also after dropping an OpenRouter-style
//! `vendor/` prefix. Unknown models cost 0 and are logged once at debug.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Why a price file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The file could not be read.
    #[error("{path}: cannot read price table: {message}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The file is not a map of model -> prices.
    #[error("{path}: invalid price table: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Parser message.
        message: String,
    },
}

/// Prices of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
}

/// The price table used for every activation of a runner.
#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

const DEFAULTS: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-3-opus", 15.0, 75.0),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-3.5-turbo", 0.5, 1.5),
    ("o1", 15.0, 60.0),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
];

impl Default for PriceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> Self {
        Self {
            prices: DEFAULTS
                .iter()
                .map(|(m, i, o)| {
                    (
                        (*m).to_string(),
                        ModelPrice {
                            input_per_mtok: *i,
                            output_per_mtok: *o,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The built-in table with a file's entries on top; `None` gives the built-in table.
    pub fn load(path: Option<&Path>) -> Result<Self, PriceError> {
        let mut table = Self::builtin();
        if let Some(path) = path {
            let label = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| PriceError::Io {
                path: label.clone(),
                message: e.to_string(),
            })?;
            table.merge_text(&label, &text)?;
        }
        Ok(table)
    }

    /// Adds or overrides entries from YAML or JSON text (JSON is YAML).
    pub fn merge_text(&mut self, label: &str, text: &str) -> Result<(), PriceError> {
        let entries: HashMap<String, ModelPrice> =
            serde_norway::from_str(text).map_err(|e| PriceError::Invalid {
                path: label.to_string(),
                message: e.to_string(),
            })?;
        for (model, price) in entries {
            if !(price.input_per_mtok >= 0.0 && price.output_per_mtok >= 0.0) {
                return Err(PriceError::Invalid {
                    path: label.to_string(),
                    message: format!("{model}: prices must be non-negative numbers"),
                });
            }
            self.prices.insert(model, price);
        }
        Ok(())
    }

    /// Sets one model's price.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// The price of a model, if known.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        let lookup = |m: &str| -> Option<ModelPrice> {
            if let Some(p) = self.prices.get(m) {
                return Some(*p);
            }
            self.prices
                .iter()
                .filter(|(k, _)| m.starts_with(k.as_str()))
                .max_by_key(|(k, _)| k.len())
                .map(|(_, p)| *p)
        };
        lookup(model).or_else(|| model.split_once('/').and_then(|(_, rest)| lookup(rest)))
    }

    /// USD cost of a usage on a model (0 for unknown models).
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> f64 {
        match self.price(model) {
            Some(p) => {
                (input_tokens as f64 * p.input_per_mtok + output_tokens as f64 * p.output_per_mtok)
                    / 1_000_000.0
            }
            None => {
                tracing::debug!(model, "no price known for model; cost counted as 0");
                0.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_vendor_prefix_and_overrides() {
        let mut t = PriceTable::builtin();
        assert_eq!(
            t.price("gpt-4o-mini-2024-07-18").map(|p| p.input_per_mtok),
            Some(0.15)
        );
        assert_eq!(
            t.price("gpt-4o-2024-08-06").map(|p| p.input_per_mtok),
            Some(2.5)
        );
        assert_eq!(
            t.price("anthropic/claude-sonnet-4")
                .map(|p| p.output_per_mtok),
            Some(15.0)
        );
        assert!(t.price("llama3").is_none());
        assert_eq!(t.cost("llama3", 1000, 1000), 0.0);
        let c = t.cost("claude-sonnet-4-20250514", 1_000_000, 100_000);
        assert!((c - 4.5).abs() < 1e-9, "{c}");
        t.merge_text(
            "x.yaml",
            "llama3: {input_per_mtok: 1, output_per_mtok: 2}\n",
        )
        .expect("valid");
        assert!((t.cost("llama3:8b", 500_000, 500_000) - 1.5).abs() < 1e-9);
        t.merge_text(
            "x.json",
            r#"{"gpt-4o": {"input_per_mtok": 9, "output_per_mtok": 9}}"#,
        )
        .expect("json");
        assert_eq!(t.price("gpt-4o").map(|p| p.input_per_mtok), Some(9.0));
        let err = t
            .merge_text("bad.yaml", "gpt-4o: {input: 1}")
            .expect_err("must fail");
        assert!(
            err.to_string().starts_with("bad.yaml: invalid price table"),
            "{err}"
        );
        let err =
            PriceTable::load(Some(Path::new("/nonexistent/prices.yaml"))).expect_err("must fail");
        assert!(matches!(err, PriceError::Io { .. }));
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("prices.yaml");
        std::fs::write(&file, "claude-sonnet-4: {input_per_mtok: 1.5, output_per_mtok: 7.5}\nlocal: {input_per_mtok: 0, output_per_mtok: 0}\n")
            .expect("write");
        let loaded = PriceTable::load(Some(&file)).expect("loads");
        assert_eq!(
            loaded
                .price("claude-sonnet-4-20250514")
                .map(|p| p.output_per_mtok),
            Some(7.5)
        );
        assert_eq!(
            loaded.price("gpt-4o").map(|p| p.input_per_mtok),
            Some(2.5),
            "built-ins stay"
        );
        assert_eq!(loaded.price("local").map(|p| p.input_per_mtok), Some(0.0));
    }
}
