//! The `botburrow-mock-llm` binary: announces its address, answers in echo mode with usage,
//! honours `--latency-ms` and `--flavor`, and still rejects bad auth.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Kill, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_botburrow-mock-llm"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mock");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("announce line")
        .to_string();
    (Kill(child), addr)
}

#[tokio::test]
async fn openai_flavor_echoes_with_latency_and_usage() {
    let (_child, base) = spawn(&[
        "--flavor",
        "openai",
        "--latency-ms",
        "150",
        "--api-key",
        "k1",
    ]);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("k1")
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: ping");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0);
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn anthropic_flavor_requires_max_tokens() {
    let (_child, base) = spawn(&["--flavor", "anthropic"]);
    let http = reqwest::Client::new();
    let send = |body: serde_json::Value| {
        http.post(format!("{base}/v1/messages"))
            .header("x-api-key", "any")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let r =
        send(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .expect("send");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_tokens")
    );
    let r = send(serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["content"][0]["text"], "echo: hi");
    assert_eq!(body["stop_reason"], "end_turn");
}
