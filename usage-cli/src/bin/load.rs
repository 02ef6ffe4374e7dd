//! `usage-load`: makes `--calls` tracked calls whose records a `NatsSink` publishes, waits until
//! every one is acknowledged by the stream, and prints how many and how fast. The producer of the
//! scale-out tests and benchmark.

use std::time::{Duration, Instant};

use clap::Parser;
use usage_runtime::sink::{NatsConfig, NatsSink};
use usage_runtime::{track_usage, tracker::Overflow, Tracker};

#[derive(Debug, Parser)]
#[command(
    name = "usage-load",
    about = "Publish synthetic tracked calls to NATS JetStream"
)]
struct Args {
    #[arg(long)]
    nats: String,
    #[arg(long, default_value = "USAGE")]
    stream: String,
    #[arg(long, default_value = "usage.records")]
    subject_prefix: String,
    #[arg(long, default_value_t = 100_000)]
    calls: u64,
    #[arg(long, default_value = "load")]
    service: String,
}

#[track_usage(operation = "load.chat", tenant = tenant, fields(n = n))]
fn chat(tenant: &str, n: u64) -> Result<u64, String> {
    if n.is_multiple_of(20) {
        Err("rate limited".into())
    } else {
        Ok(n)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = NatsConfig::new()
        .stream(args.stream)
        .subject_prefix(args.subject_prefix);
    let sink = NatsSink::connect_with(&args.nats, config).await?;
    let tracker = Tracker::builder()
        .service(args.service)
        .sink(sink)
        .batch_size(1000)
        .overflow(Overflow::Block(Duration::from_secs(60)))
        .install()?;
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let started = Instant::now();
    for n in 0..args.calls {
        let _ = chat(tenants[(n % 4) as usize], n);
    }
    tracker.flush().await?;
    let health = tracker.health();
    tracker.shutdown().await?;
    println!(
        "published {} records in {:.2} s ({:.0}/s), {} dropped",
        health.written,
        started.elapsed().as_secs_f64(),
        health.written as f64 / started.elapsed().as_secs_f64(),
        health.dropped
    );
    if health.written != args.calls {
        return Err(format!("only {} of {} published", health.written, args.calls).into());
    }
    Ok(())
}
