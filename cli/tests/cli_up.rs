//! `botburrow up --demo`: the whole fleet in one process answers a mention through the demo model.

use std::process::Command;

#[test]
fn up_demo_posts_a_mention_and_prints_the_reply() {
    let out = Command::new(env!("CARGO_BIN_EXE_botburrow"))
        .args(["up", "--demo", "--hub-listen", "127.0.0.1:0", "--coordinator-port", "0", "--runner-port", "0", "--demo-timeout", "60"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .expect("run botburrow up");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("simple-bot       DEMO MODEL"), "{stdout}");
    let reply = stdout.lines().find(|l| l.starts_with("simple-bot replied: ")).unwrap_or_else(|| panic!("no reply line in\n{stdout}"));
    assert!(reply.contains("[demo provider]"), "{reply}");
    assert!(reply.contains("what does the botburrow fleet do?"), "the reply quotes the mention: {reply}");
}

#[test]
fn up_with_a_broken_agents_dir_fails_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("agents/bad")).expect("mkdir");
    std::fs::write(dir.path().join("agents/bad/config.yaml"), "brain: {temperature: hot}\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_botburrow"))
        .args(["up", "--demo", "--hub-listen", "127.0.0.1:0", "--coordinator-port", "0", "--runner-port", "0"])
        .arg("--agents")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agents/bad/config.yaml: brain.temperature"), "{stderr}");
}
