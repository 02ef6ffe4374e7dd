//! Fault test: shutting down while the database is unreachable, with no runtime, inside a
//! current-thread runtime and inside a multi-thread runtime. Each returns within the deadline and
//! the records wait in the spool for the next start.
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use tests::{postgres_url, serial, upstream, Proxy};
use usage_runtime::sink::{MemorySink, PostgresSink, SqlConfig};
use usage_runtime::{track_usage, Tracker};

#[track_usage(operation = "shutdown.call")]
fn call(n: u64) -> u64 {
    n
}

const CALLS: u64 = 1000;
const DEADLINE: Duration = Duration::from_secs(1);

/// A tracker writing through a proxy that is already cut.
fn tracker_with_database_down(url: &str, spool: &std::path::Path) -> (Tracker, Proxy) {
    let proxy = Proxy::start(&upstream(url));
    let config = SqlConfig::new().table_prefix("pg_shutdown_").unwrap();
    let sink = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(PostgresSink::connect_with(&proxy.url(url), config))
        .unwrap();
    proxy.cut();
    let guard = Tracker::builder()
        .sink(sink)
        .spool_dir(spool)
        .max_retries(1)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .shutdown_timeout(DEADLINE)
        .install()
        .unwrap();
    for n in 0..CALLS {
        call(n);
    }
    (guard, proxy)
}

/// The next start (with a sink that works) finds every call in the spool.
fn assert_all_spooled(spool: &std::path::Path) {
    let sink = MemorySink::new();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(spool)
        .install()
        .unwrap();
    guard.flush_blocking().unwrap();
    assert_eq!(guard.health().replayed, CALLS);
    assert_eq!(sink.records().len() as u64, CALLS);
}

fn assert_bounded(started: Instant) {
    let took = started.elapsed();
    assert!(
        took < DEADLINE + Duration::from_secs(3),
        "shutdown took {took:?}"
    );
}

/// Shuts down with `shut_down` a tracker whose database is down: it returns within the deadline
/// and the next start finds every call in the spool. Returns what `shut_down` did.
fn shut_down_with_database_down<R>(url: &str, shut_down: impl FnOnce(Tracker) -> R) -> R {
    let _serial = serial();
    let spool = tempfile::tempdir().unwrap();
    let (guard, _proxy) = tracker_with_database_down(url, spool.path());
    let started = Instant::now();
    let result = shut_down(guard);
    assert_bounded(started);
    assert_all_spooled(spool.path());
    result
}

#[test]
fn no_runtime() {
    let Some(url) = postgres_url() else { return };
    shut_down_with_database_down(&url, drop);
}

#[test]
fn current_thread_runtime() {
    let Some(url) = postgres_url() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = shut_down_with_database_down(&url, |guard| runtime.block_on(guard.shutdown()));
    let err = result.unwrap_err();
    assert!(err.to_string().contains("spool"), "{err}");
}

#[test]
fn multi_thread_runtime() {
    let Some(url) = postgres_url() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    shut_down_with_database_down(&url, |guard| runtime.block_on(async move { drop(guard) }));
}
