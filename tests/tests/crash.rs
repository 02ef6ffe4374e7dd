//! Fault test: a process killed with SIGKILL in the middle of a load, with
//! `Durability::SpoolFirst`. A second run with the same spool replays what the first left; every
//! record the first process acknowledged to the spool ends in the database exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tests::postgres_url;
use usage_runtime::sink::{PostgresSink, SqlConfig};
use usage_runtime::{spool::Fsync, track_usage, tracker::Durability, Tracker};

const PREFIX: &str = "pg_crash_";
const CHILD: &str = "USAGE_CRASH_CHILD_SPOOL";

#[track_usage(operation = "crash.call")]
fn call(n: u64) -> u64 {
    n
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sink(url: &str) -> PostgresSink {
    let config = SqlConfig::new().table_prefix(PREFIX).unwrap();
    runtime()
        .block_on(PostgresSink::connect_with(url, config))
        .unwrap()
}

/// The child's side: calls forever, printing how many records the spool has acknowledged
/// (appended and forced to disk), until it is killed.
#[test]
fn crash_child() {
    let Ok(spool) = std::env::var(CHILD) else {
        return; // only runs when the parent starts it
    };
    let url = postgres_url().expect("the parent checked the database");
    let guard = Tracker::builder()
        .sink(sink(&url))
        .spool_dir(spool)
        .spool_fsync(Fsync::Always)
        .durability(Durability::SpoolFirst)
        .batch_size(100)
        .flush_interval(Duration::from_millis(5))
        .install()
        .unwrap();
    for n in 0.. {
        call(n);
        if n % 100 == 0 {
            println!("spooled {}", guard.health().spooled);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
fn sigkill_loses_nothing_the_spool_acknowledged() {
    let Some(url) = postgres_url() else { return };
    let runtime = runtime();
    let mut db = runtime.block_on(sqlx::PgConnection::connect(&url)).unwrap();
    runtime.block_on(tests::drop_postgres_tables(&url, "pg_crash_"));
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, spool.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = 0u64;
    let started = Instant::now();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(count) = line.strip_prefix("spooled ") {
            acknowledged = count.parse().unwrap();
        }
        if acknowledged >= 20_000 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    // SIGKILL: no destructor, no flush, no shutdown.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acknowledged >= 20_000,
        "the child acknowledged only {acknowledged}"
    );

    let guard = Tracker::builder()
        .sink(sink(&url))
        .spool_dir(spool.path())
        .install()
        .unwrap();
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(health.spool_records, 0, "{health:?}");
    drop(guard);
    let (rows, distinct): (i64, i64) = runtime
        .block_on(
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT id) FROM pg_crash_usage_records")
                .fetch_one(&mut db),
        )
        .unwrap();
    assert_eq!(rows, distinct, "no record twice");
    assert!(
        rows as u64 >= acknowledged,
        "{rows} rows, but the spool acknowledged {acknowledged}"
    );
}
