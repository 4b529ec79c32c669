//! Grants from agent files, and the permission policy store reloading from a real directory
//! (plain rewrites and Kubernetes ConfigMap `..data` symlink swaps).

use botburrow_shared::agent::AgentConfig;
use botburrow_shared::grants::{Grants, HubAction};
use botburrow_shared::policy::PolicyStore;
use botburrow_testkit::eventually;
use std::path::Path;
use std::time::Duration;

#[test]
fn an_unknown_grant_shape_is_a_config_error_naming_file_and_grant() {
    let yaml = "capabilities:\n  grants: [hub:read, \"github\", fs:write]\n";
    let cfg =
        AgentConfig::parse("agents/x/config.yaml", yaml, "x", String::new()).expect("valid YAML");
    let err =
        Grants::from_agent("agents/x/config.yaml", &cfg).expect_err("bare service is not a grant");
    let text = err.to_string();
    assert!(
        text.starts_with("agents/x/config.yaml: capabilities.grants: invalid grant 'github': "),
        "{text}"
    );

    let cfg = AgentConfig::parse(
        "agents/y/config.yaml",
        "capabilities: {grants: [\"hub:admin\"]}",
        "y",
        String::new(),
    )
    .expect("valid YAML");
    let err = Grants::from_agent("agents/y/config.yaml", &cfg).expect_err("hub has no admin scope");
    assert!(
        err.to_string().contains("invalid grant 'hub:admin'"),
        "{err}"
    );

    let cfg = AgentConfig::parse(
        "f",
        "capabilities: {grants: [\"hub:write\", \"fs:read\"]}",
        "z",
        String::new(),
    )
    .expect("ok");
    let g = Grants::from_agent("f", &cfg).expect("valid grants");
    assert!(g.allows_hub(HubAction::Read) && g.allows_hub(HubAction::Write));
    assert!(g.allows("filesystem", "read"));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy");
}

fn effective(store: &PolicyStore, agent: &str, declared: &[&str]) -> Vec<String> {
    store
        .effective(agent, &Grants::parse("t", declared).expect("valid"))
        .to_strings()
}

#[tokio::test]
async fn a_configmap_symlink_swap_reloads_the_policy_without_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    // The layout the kubelet gives a mounted ConfigMap.
    std::fs::create_dir(root.join("..2026_11_25_v1")).expect("mkdir");
    write(
        &root.join("..2026_11_25_v1/permissions.yaml"),
        "default:\n  allowed: [\"hub:*\", \"github:*\"]\n",
    );
    std::os::unix::fs::symlink("..2026_11_25_v1", root.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/permissions.yaml", root.join("permissions.yaml"))
        .expect("link");

    let store = PolicyStore::open(&root.join("permissions.yaml")).expect("opens");
    let declared = ["github:read", "hub:write"];
    assert_eq!(
        effective(&store, "a", &declared),
        vec!["github:read", "hub:write"]
    );

    // New ConfigMap version: a new directory, a temporary link, renamed over `..data`.
    std::fs::create_dir(root.join("..2026_11_25_v2")).expect("mkdir");
    write(
        &root.join("..2026_11_25_v2/permissions.yaml"),
        "default:\n  allowed: [\"hub:*\", \"github:*\"]\n  denied: [\"github:*\"]\n",
    );
    std::os::unix::fs::symlink("..2026_11_25_v2", root.join("..data_tmp")).expect("link");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(root.join("..2026_11_25_v1")).expect("cleanup old version");

    let reloaded = eventually(Duration::from_secs(10), || async {
        effective(&store, "a", &declared) == vec!["hub:write"]
    })
    .await;
    assert!(
        reloaded,
        "policy not reloaded: {:?}",
        effective(&store, "a", &declared)
    );
}

#[tokio::test]
async fn a_rewritten_file_reloads_and_a_broken_one_keeps_the_last_good_policy() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("permissions.yaml");
    write(&path, "agents:\n  a: {allowed: [\"github:*\"]}\n");
    let store = PolicyStore::open(&path).expect("opens");
    let mut watcher = store.clone();
    assert_eq!(
        effective(&store, "a", &["github:*", "hub:read"]),
        vec!["github:*"]
    );
    assert_eq!(
        effective(&store, "b", &["github:*", "hub:read"]),
        vec!["github:*", "hub:read"]
    );

    write(
        &path,
        "agents:\n  a: {allowed: [\"github:*\"], denied: [\"github:write\"]}\n",
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            effective(&store, "a", &["github:*"]) == vec!["github:read"]
        })
        .await,
        "rewrite not picked up"
    );
    assert!(watcher.changed().await, "clones are notified of reloads");

    write(&path, "agents: [this is: not valid");
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.last_error().is_some()
        })
        .await,
        "the broken file was never looked at"
    );
    assert!(
        store
            .last_error()
            .unwrap_or_default()
            .contains("permissions.yaml"),
        "{:?}",
        store.last_error()
    );
    // A broken file never replaces the last good policy.
    assert_eq!(effective(&store, "a", &["github:*"]), vec!["github:read"]);
    write(&path, "agents:\n  a: {denied: [\"github:*\"]}\n");
    assert!(
        eventually(Duration::from_secs(10), || async {
            effective(&store, "a", &["github:*", "hub:read"]) == vec!["hub:read"]
        })
        .await,
        "a fixed file is loaded again"
    );
    assert_eq!(store.last_error(), None);
}

#[test]
fn opening_a_missing_or_invalid_policy_fails_with_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nope.yaml");
    let err = PolicyStore::open(&missing).err().expect("missing file");
    assert!(err.to_string().contains("nope.yaml: cannot read"), "{err}");
    let bad = dir.path().join("bad.yaml");
    write(&bad, "default: {denied: 7}");
    let err = PolicyStore::open(&bad).err().expect("bad file");
    assert!(
        err.to_string().contains("bad.yaml: default.denied"),
        "{err}"
    );
    let none = PolicyStore::from_setting(None).expect("no policy");
    assert_eq!(
        effective(&none, "x", &["aws:s3:read:b"]),
        vec!["aws:s3:read:b"]
    );
}
