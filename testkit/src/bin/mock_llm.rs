//! `botburrow-mock-llm`: the strict mock LLM server as a process, for benchmarks and manual runs.
//! Prints `listening on http://HOST:PORT` as its first stdout line, then answers every request
//! in echo mode (a final answer at once, usage filled in) after `--latency-ms`.

use botburrow_testkit::mock_llm::{Flavor, MockLlmConfig, serve};
use clap::Parser;
use std::io::Write;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "botburrow-mock-llm",
    about = "Strict mock Anthropic / OpenAI-compatible LLM server"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Which API to imitate: openai or anthropic.
    #[arg(long, default_value = "openai")]
    flavor: Flavor,
    /// The only API key accepted (default: any non-empty key).
    #[arg(long, env = "MOCK_LLM_API_KEY")]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let base = match args.flavor {
        Flavor::Anthropic => format!("http://{addr}"),
        Flavor::OpenAi => format!("http://{addr}/v1"),
    };
    {
        // Whoever started us may stop reading after the first line; a closed stdout must not
        // stop the server, so write errors are ignored.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = writeln!(out, "api_base {base}");
        let _ = out.flush();
    }
    let config = MockLlmConfig {
        flavor: args.flavor,
        api_key: args.api_key,
        latency: Duration::from_millis(args.latency_ms),
    };
    serve(listener, config).await?;
    Ok(())
}
