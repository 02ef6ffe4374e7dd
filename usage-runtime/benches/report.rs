//! A monthly report per tenant and operation over many records, from the hourly rollups and
//! from the records themselves, in one run (SQLite, the default database).
//!
//! ```sh
//! cargo bench -p usage-runtime --bench report                  # 10,000,000 records
//! USAGE_BENCH_RECORDS=1000000 cargo bench -p usage-runtime --bench report
//! # keep the database, and reuse it when it is already there:
//! USAGE_BENCH_DB=/tmp/report.db cargo bench -p usage-runtime --bench report
//! # only the rollups side (to iterate on it):
//! USAGE_BENCH_DB=/tmp/report.db USAGE_BENCH_ROLLUPS_ONLY=1 cargo bench -p usage-runtime --bench report
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use usage_runtime::report::{GroupBy, Query, Reader, TimeBucket};
use usage_runtime::sink::{MemorySink, Sink, SqliteSink};
use usage_runtime::{track_usage, Outcome, Tracker, UsageRecord};

#[track_usage(operation = "bench.report", tenant = "t")]
fn template() {}

/// One real record to copy from (records cannot be built outside the runtime crate).
fn template_record() -> UsageRecord {
    let sink = MemorySink::new();
    let guard = Tracker::builder().sink(sink.clone()).install().unwrap();
    template();
    guard.flush_blocking().unwrap();
    drop(guard);
    sink.records().remove(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !common::benching() {
        return;
    }
    let count: u64 = common::env_number("USAGE_BENCH_RECORDS", 10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("USAGE_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("report.db"));
    let reuse = path.exists();
    let url = format!("sqlite://{}", path.display());
    let mut sink = SqliteSink::connect(&url).await.unwrap();
    let template = template_record();
    let month = if reuse {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let first: String = sqlx::query_scalar("SELECT MIN(started_at) FROM usage_records")
            .fetch_one(&mut db)
            .await
            .unwrap();
        println!("reusing {}", path.display());
        first.parse().unwrap()
    } else {
        chrono::Utc::now() - chrono::Duration::days(30)
    };
    let mut rng = fastrand::Rng::with_seed(1);
    let started = Instant::now();
    let mut written = if reuse { count } else { 0 };
    // Calls arrive in time order, spread evenly over the 30 days, as a tracker writes them.
    let step = (30 * 86_400_000_000i64) / count as i64;
    while written < count {
        let batch: Vec<UsageRecord> = (0..5_000.min(count - written))
            .map(|i| {
                let mut record = template.clone();
                record.id = uuid::Uuid::now_v7();
                record.started_at =
                    month + chrono::Duration::microseconds((written + i) as i64 * step);
                record.tenant_id = Some(format!("tenant-{}", rng.u8(..20)).into());
                record.operation = format!("op-{}", rng.u8(..10)).into();
                // Mostly 50 to 500 ms, with a slow tail.
                let micros = if rng.u8(..20) == 0 {
                    rng.u64(500_000..5_000_000)
                } else {
                    rng.u64(50_000..500_000)
                };
                record.duration = Duration::from_micros(micros);
                record.outcome = if rng.u8(..20) == 0 {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                record.input_tokens = Some(rng.u64(0..4000));
                record.output_tokens = Some(rng.u64(0..1000));
                record.cost_nano_usd = Some(rng.i64(0..50_000));
                record
            })
            .collect();
        sink.write(&batch).await.unwrap();
        written += batch.len() as u64;
    }
    println!(
        "{count} records over 30 days written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let reader = Reader::connect(&url).await.unwrap();
    let query = Query::new()
        .since(usage_runtime::report::hour_start(month))
        .group_by([GroupBy::Tenant, GroupBy::Operation])
        .bucket(TimeBucket::Month);
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let report = reader.report(&query).await.unwrap();
        best = best.min(started.elapsed());
        rows = report.rows.len();
    }
    if std::env::var_os("USAGE_BENCH_ROLLUPS_ONLY").is_some() {
        println!(
            "from the rollups: {:.1} ms (best of 5, {rows} rows)",
            best.as_secs_f64() * 1000.0
        );
        return;
    }
    let started = Instant::now();
    let raw = reader.report_from_records(&query).await.unwrap();
    let raw_time = started.elapsed();
    let from_rollups = reader.report(&query).await.unwrap();
    assert_eq!(from_rollups.rows, raw.rows, "the same answer either way");
    println!("monthly report per tenant and operation ({rows} rows):");
    println!(
        "  from the rollups  {:>10.1} ms (best of 5)",
        best.as_secs_f64() * 1000.0
    );
    println!(
        "  from the records  {:>10.1} ms",
        raw_time.as_secs_f64() * 1000.0
    );
    println!(
        "  ratio             {:>10.1}x",
        raw_time.as_secs_f64() / best.as_secs_f64()
    );
}
