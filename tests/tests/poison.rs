//! Records a real database rejects are isolated from their batch and quarantined with the
//! database's reason; the rest of the batch is written.
#![allow(clippy::await_holding_lock)]

use sqlx::Connection;
use tests::{mysql_url, postgres_url, quarantined, serial};
use usage_runtime::sink::{MySqlSink, PostgresSink};
use usage_runtime::{track_usage, Error, Tracker};

#[track_usage(operation = "fine", tenant = tenant)]
fn fine(tenant: &str) {}

// Longer than MySQL's VARCHAR(255) `operation`, so strict mode rejects it.
#[track_usage(
    operation = "an-operation-name-far-too-long-for-its-column-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-01234567",
    tenant = "acme"
)]
fn too_long() {}

/// Flushes and shuts `guard` down: its `rejected` records fail the flush and are quarantined with
/// a reason containing `reason`, the `written` others are the `rows` in the database. Returns
/// the first quarantined line.
async fn rest_written(
    guard: Tracker,
    quarantine: &std::path::Path,
    (written, rejected): (u64, u64),
    rows: impl AsyncFnOnce() -> i64,
    reason: &str,
) -> serde_json::Value {
    let err = guard.flush().await.unwrap_err();
    assert!(
        matches!(err, Error::NotWritten { count, .. } if count == rejected),
        "{err:?}"
    );
    let health = guard.health();
    assert_eq!(
        (health.written, health.quarantined, health.failed),
        (written, rejected, 0)
    );
    guard.shutdown().await.ok();
    assert_eq!(rows().await, written as i64);
    let mut lines = quarantined(quarantine);
    assert_eq!(lines.len() as u64, rejected);
    assert!(
        lines[0]["reason"].as_str().unwrap().contains(reason),
        "{}",
        lines[0]
    );
    lines.remove(0)
}

/// A quarantine file in a directory of its own, removed with the directory.
fn quarantine_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quarantine.jsonl");
    (dir, path)
}

#[tokio::test]
async fn mysql_rejects_an_over_long_value_and_the_rest_is_written() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    let config = tests::fresh_mysql(&url, "my_poison_").await;
    let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let (_dir, quarantine) = quarantine_file();
    let guard = Tracker::builder()
        .sink(MySqlSink::connect_with(&url, config).await.unwrap())
        .quarantine_file(&quarantine)
        .install()
        .unwrap();
    for n in 0..200 {
        if n % 50 == 7 {
            too_long();
        } else {
            fine("acme");
        }
    }
    let rows = async || {
        sqlx::query_scalar("SELECT COUNT(*) FROM my_poison_usage_records")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let first = rest_written(guard, &quarantine, (196, 4), rows, "too long").await;
    assert!(first["record"]["operation"].as_str().unwrap().len() > 255);
}

#[tokio::test]
async fn postgres_rejects_a_constraint_violation_and_the_rest_is_written() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial();
    let config = tests::fresh_postgres(&url, "pg_poison_").await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let (_dir, quarantine) = quarantine_file();
    let sink = PostgresSink::connect_with(&url, config).await.unwrap();
    sqlx::raw_sql(
        "ALTER TABLE pg_poison_usage_records \
         ADD CONSTRAINT no_banned_tenant CHECK (tenant_id <> 'banned')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let guard = Tracker::builder()
        .sink(sink)
        .quarantine_file(&quarantine)
        .install()
        .unwrap();
    for n in 0..300 {
        fine(if n % 100 == 3 { "banned" } else { "acme" });
    }
    let rows = async || {
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_poison_usage_records")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    rest_written(guard, &quarantine, (297, 3), rows, "no_banned_tenant").await;
}
