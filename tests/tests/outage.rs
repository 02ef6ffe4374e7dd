//! Fault test: a database outage in the middle of a load. A TCP proxy between the tracker and
//! the real database cuts every connection for a few seconds; afterwards every call is in the
//! database exactly once, and the health state went failing and came back.
#![allow(clippy::await_holding_lock)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tests::{mysql_url, postgres_url, serial, upstream, Proxy};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink};
use usage_runtime::{track_usage, HealthState, Tracker};

#[track_usage(operation = "outage.call", tenant = "acme")]
fn call(n: u64) -> u64 {
    n
}

const CALLS: u64 = 100_000;

/// Runs the load with an outage in the middle; returns the health states seen.
fn load_with_outage(guard: &Tracker, proxy: &Proxy) -> Vec<HealthState> {
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let started = Instant::now();
            for n in 0..CALLS {
                call(n);
                // About 6 s of load: 100 calls every ~6 ms.
                if n % 100 == 99 {
                    let due = Duration::from_micros(60 * (n + 1));
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut states = vec![guard.health().state];
    let started = Instant::now();
    let mut cut = false;
    let mut restored = false;
    while !done.load(Ordering::SeqCst) || started.elapsed() < Duration::from_secs(5) {
        if !cut && started.elapsed() > Duration::from_millis(1500) {
            proxy.cut();
            cut = true;
        }
        if cut && !restored && started.elapsed() > Duration::from_millis(4500) {
            proxy.restore();
            restored = true;
        }
        let state = guard.health().state;
        if states.last() != Some(&state) {
            states.push(state);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    load.join().unwrap();
    states
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Installs a tracker over `sink`, runs the load with an outage, and checks the health states.
fn survive_outage<S: Sink>(sink: S, proxy: &Proxy) {
    let spool = tempfile::tempdir().unwrap();
    let guard = Tracker::builder()
        .sink(sink)
        .spool_dir(spool.path())
        .max_retries(2)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(60))
        .install()
        .unwrap();
    let states = load_with_outage(&guard, proxy);
    guard.flush_blocking().unwrap();
    // One clean batch after the replay: healthy again.
    call(CALLS);
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert!(
        states.contains(&HealthState::Failing),
        "never failing: {states:?}"
    );
    assert_eq!(health.state, HealthState::Healthy, "{health:?}");
    assert!(
        health.spooled > 0,
        "the outage went through the spool: {health:?}"
    );
    assert_eq!(
        health.dropped + health.failed + health.quarantined,
        0,
        "{health:?}"
    );
    assert_eq!(health.spool_records, 0);
    runtime().block_on(guard.shutdown()).unwrap();
}

#[test]
fn postgres_outage_loses_and_doubles_nothing() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial();
    let proxy = Proxy::start(&upstream(&url));
    let runtime = runtime();
    let mut db = runtime.block_on(sqlx::PgConnection::connect(&url)).unwrap();
    let config = runtime.block_on(tests::fresh_postgres(&url, "pg_outage_"));
    let sink = runtime
        .block_on(PostgresSink::connect_with(&proxy.url(&url), config))
        .unwrap();
    survive_outage(sink, &proxy);
    let (rows, distinct): (i64, i64) = runtime
        .block_on(
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT id) FROM pg_outage_usage_records")
                .fetch_one(&mut db),
        )
        .unwrap();
    assert_eq!((rows, distinct), (CALLS as i64 + 1, CALLS as i64 + 1));
}

#[test]
fn mysql_outage_loses_and_doubles_nothing() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    let proxy = Proxy::start(&upstream(&url));
    let runtime = runtime();
    let mut db = runtime
        .block_on(sqlx::MySqlConnection::connect(&url))
        .unwrap();
    let config = runtime.block_on(tests::fresh_mysql(&url, "my_outage_"));
    let sink = runtime
        .block_on(MySqlSink::connect_with(&proxy.url(&url), config))
        .unwrap();
    survive_outage(sink, &proxy);
    let (rows, distinct): (i64, i64) = runtime
        .block_on(
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT id) FROM my_outage_usage_records")
                .fetch_one(&mut db),
        )
        .unwrap();
    assert_eq!((rows, distinct), (CALLS as i64 + 1, CALLS as i64 + 1));
}
