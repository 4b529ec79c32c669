//! The Kubernetes packaging agrees with [`SETTINGS`]: the kustomize ConfigMap, the Secret template,
//! the per-container env of the base Deployments and the Helm chart's `config` values together hand
//! every setting to the binary that reads it, put secrets only in the Secret, and carry no key that
//! no binary reads. (scripts/test.d/k8s.sh checks the rendered output the same way; this test reads
//! the sources with the real table, so a new setting fails here first.)

use botburrow_shared::settings::{
    PROVIDER_KEY_VARS, Reader, SETTINGS, SettingSpec, TOOL_CREDENTIAL_VARS,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML document of a file, as JSON values.
fn docs(rel: &str) -> Vec<Value> {
    let path = repo().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("parse {}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn string_keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn spec(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

fn configmap_keys() -> BTreeSet<String> {
    let cm = docs("k8s/base/configmap.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    assert_eq!(cm["metadata"]["name"], "botburrow-agents-config");
    string_keys(&cm["data"])
}

fn secret_keys() -> BTreeSet<String> {
    let secret = docs("k8s/base/secret.template.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Secret")
        .expect("a Secret");
    assert_eq!(secret["metadata"]["name"], "botburrow-agents-secrets");
    string_keys(&secret["stringData"])
}

/// Env names a container sets itself, per base Deployment container (`coordinator` or `runner`).
fn container_env(file: &str, container: &str) -> BTreeMap<String, Value> {
    let deployment = docs(file)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    let c = containers
        .into_iter()
        .find(|c| c["name"] == container)
        .expect("the fleet container");
    c["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e["name"].as_str().expect("env name").to_string(), e))
        .collect()
}

#[test]
fn configmap_keys_are_non_secret_settings() {
    let keys = configmap_keys();
    assert!(!keys.is_empty());
    for key in &keys {
        let s = spec(key).unwrap_or_else(|| {
            panic!("ConfigMap key {key} is read by no binary (not in SETTINGS)")
        });
        assert!(
            !s.secret,
            "ConfigMap key {key} is a secret: it belongs in botburrow-agents-secrets"
        );
    }
}

#[test]
fn secret_template_holds_exactly_the_secrets() {
    let keys = secret_keys();
    for s in SETTINGS.iter().filter(|s| s.secret) {
        assert!(
            keys.contains(s.name),
            "secret setting {} is missing from the Secret template",
            s.name
        );
    }
    for key in &keys {
        match spec(key) {
            Some(s) => assert!(
                s.secret,
                "{key} is not a secret: it belongs in the ConfigMap"
            ),
            None => assert!(
                PROVIDER_KEY_VARS.contains(&key.as_str())
                    || TOOL_CREDENTIAL_VARS.contains(&key.as_str()),
                "Secret template key {key} is read by no binary"
            ),
        }
    }
    for var in PROVIDER_KEY_VARS.iter().chain(TOOL_CREDENTIAL_VARS) {
        assert!(
            keys.contains(*var),
            "credential {var} is missing from the Secret template"
        );
    }
}

#[test]
fn every_setting_reaches_the_binary_that_reads_it() {
    let cm = configmap_keys();
    let secrets = secret_keys();
    let pods: [(&str, &str, Reader, bool); 4] = [
        (
            "k8s/base/coordinator.yaml",
            "coordinator",
            Reader::Coordinator,
            false,
        ),
        (
            "k8s/base/runner-notification.yaml",
            "runner",
            Reader::Runner,
            true,
        ),
        (
            "k8s/base/runner-exploration.yaml",
            "runner",
            Reader::Runner,
            true,
        ),
        (
            "k8s/base/runner-hybrid.yaml",
            "runner",
            Reader::Runner,
            true,
        ),
    ];
    for (file, container, reader, whole_secret) in pods {
        let env = container_env(file, container);
        for (name, e) in &env {
            let s = spec(name).unwrap_or_else(|| panic!("{file}: env {name} is read by no binary"));
            assert!(
                !(s.secret && e.get("value").is_some()),
                "{file}: secret {name} is set as a plain value"
            );
            if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert!(
                    secrets.contains(key),
                    "{file}: {name} reads Secret key {key} the template lacks"
                );
            }
        }
        for s in SETTINGS
            .iter()
            .filter(|s| s.reader == Reader::Both || s.reader == reader)
        {
            let names: Vec<&str> = std::iter::once(s.name)
                .chain(s.aliases.iter().copied())
                .collect();
            let provided = names.iter().any(|n| {
                cm.contains(*n) || env.contains_key(*n) || (whole_secret && secrets.contains(*n))
            });
            assert!(
                provided,
                "{file}: setting {} ({:?}) is not provided to the {container}",
                s.name, s.reader
            );
        }
    }
}

#[test]
fn runner_pools_set_their_own_mode_and_the_git_sync_link() {
    for mode in ["notification", "exploration", "hybrid"] {
        let env = container_env(&format!("k8s/base/runner-{mode}.yaml"), "runner");
        assert_eq!(env["RUNNER_MODE"]["value"], mode);
        assert_eq!(
            env["AGENT_DEFINITIONS_PATH"]["value"],
            "/configs/agent-definitions"
        );
        assert_eq!(
            env["RUNNER_ID"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
    }
}

#[test]
fn chart_config_values_match_the_kustomize_configmap() {
    let values = docs("charts/botburrow-agents/values.yaml")
        .into_iter()
        .next()
        .expect("values.yaml");
    let cm = docs("k8s/base/configmap.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let chart: BTreeMap<String, String> = values["config"]
        .as_object()
        .expect("config map")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let kustomize: BTreeMap<String, String> = cm["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
        .collect();
    assert_eq!(
        chart, kustomize,
        "charts/botburrow-agents/values.yaml config and k8s/base/configmap.yaml disagree"
    );
}
