//! Load benchmark for the dev Hub: keep-alive GET throughput and long-poll wake latency.
//!
//! `cargo run --release -p botburrow-devhub --example load -- [--seconds 5] [--connections 64]`
//!
//! The Hub runs in this process on its own 2-worker runtime (as on a 2-core pod); the load
//! generator uses raw HTTP/1.1 keep-alive connections on another runtime so that client overhead
//! stays small. Both share the machine's cores, so the numbers are a lower bound for the server.

use anyhow::{Context, bail};
use botburrow_devhub::{DevHubConfig, Seed, start};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "bench-admin";
const SERVICE: &str = "bench-service";
const AGENT: &str = "botburrow_agent_dev_simple-bot";

struct Args {
    seconds: u64,
    connections: usize,
    pollers: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 5,
        connections: 64,
        pollers: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse()?,
            "--connections" => a.connections = value.parse()?,
            "--pollers" => a.pollers = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let token = CancellationToken::new();
    let hub = server_rt.block_on(start(
        DevHubConfig {
            listen: "127.0.0.1:0".parse()?,
            admin_key: Some(ADMIN.into()),
            service_key: Some(SERVICE.into()),
            seed: Some(Seed::default_dev()),
            dev: true,
        },
        token.clone(),
    ))?;
    let addr = hub.addr();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    client_rt.block_on(async move {
        let http = reqwest::Client::new();
        let url = format!("http://{addr}");
        let post: serde_json::Value = http
            .post(format!("{url}/api/v1/posts"))
            .bearer_auth(SERVICE)
            .json(&serde_json::json!({"agent_id": "ron", "title": "bench", "content": "a post to read", "community": "m/general"}))
            .send()
            .await?
            .json()
            .await?;
        let post_id = post["id"].as_str().context("post id")?.to_owned();

        println!("machine: {} logical CPUs; server runtime 2 workers; client runtime 2 workers", num_cpus());
        println!("keep-alive connections: {}, {} s per endpoint", args.connections, args.seconds);
        for (name, path, key) in [
            ("GET /health", "/health".to_owned(), None),
            ("GET /api/v1/posts/{id} (agent key)", format!("/api/v1/posts/{post_id}"), Some(AGENT)),
            ("GET /api/v1/notifications?agent_id&unread (service key)", "/api/v1/notifications?agent_id=simple-bot&unread=true".to_owned(), Some(SERVICE)),
        ] {
            let (rps, errors) = throughput(addr, &path, key, args.connections, Duration::from_secs(args.seconds)).await?;
            println!("{name}: {rps:.0} req/s ({errors} non-200)");
        }

        let mut worst = Vec::new();
        for round in 0..5 {
            let lat = poll_wake(&http, &url, args.pollers).await?;
            println!(
                "round {round}: {} pollers woke; p50 {:.1} ms, max {:.1} ms after the insert",
                lat.len(),
                ms(lat[lat.len() / 2]),
                ms(lat[lat.len() - 1])
            );
            worst.push(lat[lat.len() - 1]);
        }
        worst.sort();
        println!("long-poll wake, worst of 5 rounds: {:.1} ms", ms(worst[worst.len() - 1]));
        anyhow::Ok(())
    })?;
    token.cancel();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `connections` raw keep-alive connections each sending GETs back to back for `dur`.
async fn throughput(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    connections: usize,
    dur: Duration,
) -> anyhow::Result<(f64, u64)> {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request =
        Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").into_bytes());
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + dur;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (request, done, errors) = (request.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(16 * 1024);
            while Instant::now() < deadline {
                stream.write_all(&request).await?;
                let status = read_response(&mut stream, &mut buf).await?;
                if status == 200 {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        done.load(Ordering::Relaxed) as f64 / secs,
        errors.load(Ordering::Relaxed),
    ))
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end])?;
    let status: u16 = head.get(9..12).context("status line")?.parse()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .context("content-length")?;
    while buf.len() < header_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// Starts `n` long-polls, waits until the Hub holds all of them, inserts one mention and returns
/// each poller's wake latency (sorted). Marks the mention read afterwards.
async fn poll_wake(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(format!("{url}/api/v1/notifications/poll?timeout=30"))
                .bearer_auth(SERVICE)
                .send()
                .await?;
            let at = Instant::now();
            let v: serde_json::Value = r.json().await?;
            anyhow::ensure!(
                v["agents"].as_array().is_some_and(|a| !a.is_empty()),
                "poll woke empty: {v}"
            );
            anyhow::Ok(at)
        }));
    }
    let wait_until = Instant::now() + Duration::from_secs(10);
    loop {
        let st: serde_json::Value = http
            .get(format!("{url}/_dev/state"))
            .header("X-Admin-Key", ADMIN)
            .send()
            .await?
            .json()
            .await?;
        if st["active_pollers"].as_u64() == Some(n as u64) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < wait_until,
            "pollers never all became active"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let inserted = Instant::now();
    let n_json: serde_json::Value = http
        .post(format!("{url}/_dev/notifications"))
        .header("X-Admin-Key", ADMIN)
        .json(&serde_json::json!({"agent_id": "simple-bot", "type": "mention", "content": "wake"}))
        .send()
        .await?
        .json()
        .await?;
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await??.saturating_duration_since(inserted));
    }
    lat.sort();
    http.post(format!("{url}/api/v1/notifications/read"))
        .bearer_auth(SERVICE)
        .json(&serde_json::json!({"notification_ids": [n_json["id"]]}))
        .send()
        .await?;
    Ok(lat)
}
