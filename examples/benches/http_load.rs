//! Requests per second through the axum example with tracking on and off, in one run.
//!
//! ```sh
//! cargo bench -p examples --bench http_load
//! USAGE_BENCH_SECONDS=10 cargo bench -p examples --bench http_load
//! ```
//!
//! Two loads, each with tracking off and on (SQLite sink), alternating, three rounds each; the
//! median round is reported:
//! - a chat model that answers in 20 ms (as a fast hosted model would; real ones take longer),
//!   256 keep-alive connections;
//! - a model that answers at once, 16 connections: the server does nothing but HTTP and
//!   tracking, the worst case for tracking's share.
//!
//! The load generator, the server and the database share this machine's cores.

#[allow(dead_code, unreachable_pub)]
#[path = "../axum_chat.rs"]
mod axum_chat;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Round {
    requests_per_second: f64,
    written: u64,
    dropped: u64,
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
        "  without tracking  {:>9.0} requests/s",
        off.requests_per_second
    );
    println!(
        "  with tracking     {:>9.0} requests/s   ({} records written, {} dropped)",
        on.requests_per_second, on.written, on.dropped
    );
    println!(
        "  ratio             {:>9.3}   (cost {:.1} %)",
        on.requests_per_second / off.requests_per_second,
        (1.0 - on.requests_per_second / off.requests_per_second) * 100.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let seconds = env("USAGE_BENCH_SECONDS", 5);
    compare(
        "model answering in 20 ms",
        Duration::from_millis(20),
        256,
        seconds,
    )
    .await;
    compare("model answering at once", Duration::ZERO, 16, seconds).await;
}
