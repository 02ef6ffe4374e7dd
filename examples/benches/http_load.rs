//! Requests per second through the axum example with tracking on and off, in one run.
//!
//! ```sh
//! cargo bench -p examples --bench http_load
//! USAGE_BENCH_SECONDS=10 cargo bench -p examples --bench http_load
//! ```
//!
//! Two loads, each with tracking off and on (SQLite sink), alternating, three rounds each; the
//! median round is reported:
//! - a chat model that answers in 200 ms (a fast hosted model) and in 20 ms, 256 keep-alive
//!   connections each;
//! - a model that answers at once, 16 connections: the server does nothing but HTTP and
//!   tracking, the worst case for tracking's share.
//!
//! The load generator, the server and the database share this machine's cores; each round also
//! reports the process's CPU time per request, so the difference is what tracking costs in CPU
//! whether or not the CPU is the bottleneck.

#[allow(dead_code, unreachable_pub)]
#[path = "../axum_chat.rs"]
mod axum_chat;
#[path = "../../usage-runtime/benches/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Round {
    requests_per_second: f64,
    /// CPU time of the whole process (server, tracker, database and load generator) per request.
    cpu_us_per_request: f64,
    written: u64,
    dropped: u64,
}

/// User plus system CPU time this process has used, in seconds (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; here, after the name, 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// One round against a fresh server: `connections` clients send `POST /v1/chat` back to back.
async fn round(tracking: bool, model_latency: Duration, connections: u64, seconds: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let mut config = axum_chat::Config::new(url);
    config.tracking = tracking;
    config.model_latency = model_latency;
    let app = axum_chat::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app.router).await });

    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..connections)
        .map(|n| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let body = format!(r#"{{"model":"gpt-4o","prompt":"question number {n}"}}"#);
                while Instant::now() < deadline {
                    let response = client
                        .post(format!("http://{address}/v1/chat"))
                        .bearer_auth("key-acme")
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let requests = done.load(Ordering::Relaxed);
    let requests_per_second = requests as f64 / started.elapsed().as_secs_f64();
    let cpu_us_per_request = (cpu_seconds() - cpu_before) * 1e6 / requests as f64;
    server.abort();
    let (mut written, mut dropped) = (0, 0);
    if let Some(tracker) = app.tracker {
        tracker.flush().await.unwrap();
        let health = tracker.health();
        tracker.shutdown().await.unwrap();
        (written, dropped) = (health.written, health.dropped);
        // Each request makes two records: the layer's and the chat handler's.
        assert_eq!(
            written + dropped,
            2 * requests,
            "every record accounted for"
        );
    }
    Round {
        requests_per_second,
        cpu_us_per_request,
        written,
        dropped,
    }
}

async fn compare(label: &str, model_latency: Duration, connections: u64, seconds: u64) {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        off.push(round(false, model_latency, connections, seconds).await);
        on.push(round(true, model_latency, connections, seconds).await);
    }
    let median = |rounds: &mut Vec<Round>| {
        rounds.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
        rounds.swap_remove(1)
    };
    let (off, on) = (median(&mut off), median(&mut on));
    println!("{label} ({connections} connections, {seconds} s rounds, median of 3):");
    println!(
        "  without tracking  {:>9.0} requests/s   {:>6.1} µs CPU per request",
        off.requests_per_second, off.cpu_us_per_request
    );
    println!(
        "  with tracking     {:>9.0} requests/s   {:>6.1} µs CPU per request   ({} records \
         written, {} dropped)",
        on.requests_per_second, on.cpu_us_per_request, on.written, on.dropped
    );
    println!(
        "  ratio             {:>9.3}   (cost {:.1} %)",
        on.requests_per_second / off.requests_per_second,
        (1.0 - on.requests_per_second / off.requests_per_second) * 100.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !common::benching() {
        return;
    }
    let seconds = common::env_number("USAGE_BENCH_SECONDS", 5);
    for (label, model_latency, connections) in [
        ("model answering in 200 ms", Duration::from_millis(200), 256),
        ("model answering in 20 ms", Duration::from_millis(20), 256),
        ("model answering at once", Duration::ZERO, 16),
    ] {
        compare(label, model_latency, connections, seconds).await;
    }
}
