//! Catch-up after an outage against the sink's own end-to-end rate, on PostgreSQL, in one run,
//! with the live batch size at 500 and at the default:
//! - `live`: `#[track_usage]` calls through the tracker until every record is committed;
//! - `catch-up`: the same calls made while the database refuses writes (they go to the spool),
//!   then the database answers and the time is taken until the spool is written.
//!
//! ```sh
//! cargo bench -p usage-runtime --features postgres --bench catch_up
//! USAGE_BENCH_RECORDS=200000 cargo bench -p usage-runtime --features postgres --bench catch_up
//! ```
//!
//! Uses `USAGE_TEST_POSTGRES_URL` (default as in the tests); says so and stops when it does not
//! answer. Each run writes fresh tables.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection};
use usage_runtime::sink::{PostgresSink, Sink, SqlConfig};
use usage_runtime::tracker::DEFAULT_BATCH_SIZE;
use usage_runtime::{Error, Tracker, UsageRecord};

const PREFIX: &str = "bench_catch_up_";

#[usage_runtime::track_usage(operation = "bench.chat", tenant = tenant, fields(n = n))]
fn chat(tenant: &str, n: usize) -> usize {
    n
}

/// The database, or a write timing out while `down` is set (an outage seen from the client).
#[derive(Debug)]
struct Outage {
    down: Arc<AtomicBool>,
    sink: PostgresSink,
}

impl Sink for Outage {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Timeout(Duration::from_secs(30)));
        }
        self.sink.write(batch).await
    }
}

async fn fresh_sink(url: &str) -> PostgresSink {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let tables = common::SINK_TABLES.map(|table| format!("{PREFIX}{table}"));
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {}",
        tables.join(", ")
    )))
    .execute(&mut db)
    .await
    .unwrap();
    let config = SqlConfig::new().table_prefix(PREFIX).unwrap();
    PostgresSink::connect_with(url, config).await.unwrap()
}

/// Records per second: live, then caught up after an outage.
async fn run(url: &str, batch_size: usize, count: usize) -> (f64, f64) {
    let live = {
        let down = Arc::new(AtomicBool::new(false));
        let sink = fresh_sink(url).await;
        let guard = Tracker::builder()
            .sink(Outage { down, sink })
            .batch_size(batch_size)
            .queue_capacity(count.next_power_of_two())
            .install()
            .unwrap();
        let started = Instant::now();
        for n in 0..count {
            chat("acme", n);
        }
        guard.flush().await.unwrap();
        let rate = count as f64 / started.elapsed().as_secs_f64();
        assert_eq!(guard.health().written, count as u64);
        guard.shutdown().await.unwrap();
        rate
    };
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let sink = fresh_sink(url).await;
    let guard = Tracker::builder()
        .sink(Outage {
            down: Arc::clone(&down),
            sink,
        })
        .batch_size(batch_size)
        .queue_capacity(count.next_power_of_two())
        .max_retries(0)
        .spool_dir(dir.path())
        .spool_fsync(usage_runtime::spool::Fsync::Never)
        .install()
        .unwrap();
    for n in 0..count {
        chat("acme", n);
    }
    let _ = guard.flush().await; // the database is down: into the spool
    assert_eq!(guard.health().spool_records, count as u64);
    down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    guard.flush().await.unwrap();
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let health = guard.health();
    assert_eq!((health.written, health.spool_records), (count as u64, 0));
    guard.shutdown().await.unwrap();
    (live, rate)
}

#[tokio::main]
async fn main() {
    if !common::benching() {
        return;
    }
    let url = std::env::var("USAGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if sqlx::PgConnection::connect(&url).await.is_err() {
        eprintln!("PostgreSQL does not answer at {url}: nothing measured");
        return;
    }
    let count: usize = common::env_number("USAGE_BENCH_RECORDS", 100_000);
    println!("{count} records on PostgreSQL; records/s");
    println!("| live batch size | live | catch-up | catch-up / live | catch-up / live (default) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    for batch_size in [500, DEFAULT_BATCH_SIZE] {
        rows.push((batch_size, run(&url, batch_size, count).await));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let default_live = rows.last().map(|(_, (live, _))| *live).unwrap();
    for (batch_size, (live, catch_up)) in rows {
        println!(
            "| {batch_size} | {live:.0} | {catch_up:.0} | {:.2} | {:.2} |",
            catch_up / live,
            catch_up / default_live
        );
    }
}
