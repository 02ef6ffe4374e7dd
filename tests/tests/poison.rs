//! Records a real database rejects are isolated from their batch and quarantined with the
//! database's reason; the rest of the batch is written.
#![allow(clippy::await_holding_lock)]

use sqlx::Connection;
use tests::{mysql_url, postgres_url, quarantined, serial};
use usage_runtime::sink::{MySqlSink, PostgresSink, SqlConfig};
use usage_runtime::{track_usage, Error, Tracker};

#[track_usage(operation = "fine", tenant = tenant)]
fn fine(tenant: &str) {}

// Longer than MySQL's VARCHAR(255) `operation`, so strict mode rejects it.
#[track_usage(
    operation = "an-operation-name-far-too-long-for-its-column-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-01234567",
    tenant = "acme"
)]
fn too_long() {}

#[tokio::test]
async fn mysql_rejects_an_over_long_value_and_the_rest_is_written() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    tests::drop_mysql_tables(&url, "my_poison_").await;
    let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let config = SqlConfig::new().table_prefix("my_poison_").unwrap();
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
    let err = guard.flush().await.unwrap_err();
    assert!(matches!(err, Error::NotWritten { count: 4, .. }), "{err:?}");
    let health = guard.health();
    assert_eq!(
        (health.written, health.quarantined, health.failed),
        (196, 4, 0)
    );
    guard.shutdown().await.ok();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM my_poison_usage_records")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 196);
    let lines = quarantined(&quarantine);
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("too long"),
        "{}",
        lines[0]
    );
    assert!(lines[0]["record"]["operation"].as_str().unwrap().len() > 255);
}

#[tokio::test]
async fn postgres_rejects_a_constraint_violation_and_the_rest_is_written() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial();
    tests::drop_postgres_tables(&url, "pg_poison_").await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let config = SqlConfig::new().table_prefix("pg_poison_").unwrap();
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
    let err = guard.flush().await.unwrap_err();
    assert!(matches!(err, Error::NotWritten { count: 3, .. }), "{err:?}");
    let health = guard.health();
    assert_eq!(
        (health.written, health.quarantined, health.failed),
        (297, 3, 0)
    );
    guard.shutdown().await.ok();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_poison_usage_records")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 297);
    let lines = quarantined(&quarantine);
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no_banned_tenant"),
        "{}",
        lines[0]
    );
}
