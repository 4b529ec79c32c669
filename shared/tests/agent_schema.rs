//! Every example agent validates against the JSON Schema and loads into the Rust model, and the
//! schema rejects what the model rejects.

use botburrow_shared::agent::AgentConfig;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("agent-definitions-schema/agent-config.schema.json"))
        .expect("schema file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&value).expect("schema compiles")
}

#[test]
fn every_example_validates_and_loads() {
    let root = repo().join("agent-definitions-schema/examples");
    let validator = schema();
    let ids = AgentConfig::list(&root).expect("examples dir");
    assert!(ids.len() >= 3, "expected at least three examples, found {ids:?}");
    for id in ids {
        let yaml = std::fs::read_to_string(root.join("agents").join(&id).join("config.yaml")).expect("read");
        let value: serde_json::Value = serde_norway::from_str(&yaml).expect("yaml");
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{id}: schema errors: {errors:?}");
        let cfg = AgentConfig::load(&root, &id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(cfg.name, id);
        assert!(!cfg.system_prompt.is_empty(), "{id} has a system prompt");
    }
}

#[test]
fn schema_and_model_agree_on_wrong_types() {
    let validator = schema();
    for (yaml, field) in [
        ("brain: {temperature: hot}", "brain.temperature"),
        ("behavior: {respond_to_mentions: maybe}", "behavior.respond_to_mentions"),
        ("capabilities: {grants: [3]}", "capabilities.grants[0]"),
        ("cache_ttl: soon", "cache_ttl"),
    ] {
        let value: serde_json::Value = serde_norway::from_str(yaml).expect("yaml");
        assert!(!validator.is_valid(&value), "schema accepted {yaml}");
        let err = AgentConfig::parse("agents/x/config.yaml", yaml, "x", String::new()).expect_err(yaml);
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(err.to_string().starts_with("agents/x/config.yaml: "), "{err}");
    }
}
