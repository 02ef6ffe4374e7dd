//! What only the SQLite sink does: database files and their folders, WAL, in-memory databases,
//! the upgrade of a first release's schema, a table dropped under the tracker, a corrupt
//! histogram.

use sqlx::{Connection, SqliteConnection};
use usage_runtime::sink::{Sink, SqliteSink};
use usage_runtime::testing::Capture;
use usage_runtime::{error::DbStep, Error, Tracker};

use crate::{chat, complete, serial};

fn database(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("usage.db").display())
}

async fn open(url: &str) -> SqliteConnection {
    SqliteConnection::connect(url).await.unwrap()
}

/// The versions of the migrations applied.
async fn migrations(db: &mut SqliteConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM usage_schema_migrations")
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn wal_mode_and_recorded_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let url = database(&dir);
    SqliteSink::connect(&url).await.unwrap();
    // Connecting again applies nothing twice.
    SqliteSink::connect(&url).await.unwrap();
    let mut db = open(&url).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(migrations(&mut db).await, [1, 2, 3, 4, 5, 6, 7]);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records' \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "usage_records_model_started_at",
            "usage_records_operation_started_at",
            "usage_records_started_at",
            "usage_records_tenant_started_at"
        ]
    );
}

#[tokio::test]
async fn in_memory_databases_work() {
    let capture = Capture::new();
    capture.run_async(chat("t", "u", false)).await.unwrap();
    let mut sink = SqliteSink::connect("sqlite::memory:").await.unwrap();
    sink.write(&capture.records()).await.unwrap();
}

#[tokio::test]
async fn a_bad_url_is_a_named_error() {
    let err = SqliteSink::connect("sqlite://usage.db?mode=sideways")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("mode=sideways"), "{err}");
}

#[tokio::test]
async fn an_unopenable_file_fails_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/usage.db", dir.path().display());
    let err = SqliteSink::connect(&url).await.unwrap_err();
    match &err {
        Error::Database { step, target, .. } => {
            assert_eq!(*step, DbStep::Connect);
            assert!(target.ends_with("missing/dir/usage.db"), "{target}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("connect failed for sqlite://"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_write_is_counted_and_named() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let url = database(&dir);
    let guard = Tracker::builder()
        .sink(SqliteSink::connect(&url).await.unwrap())
        .install()
        .unwrap();
    chat("t", "u", false).await.unwrap();
    guard.flush().await.unwrap();
    // The table disappears under the running tracker.
    let mut db = open(&url).await;
    sqlx::query("DROP TABLE usage_records")
        .execute(&mut db)
        .await
        .unwrap();
    for _ in 0..3 {
        chat("t", "u", false).await.unwrap();
    }
    let err = guard.flush().await.unwrap_err();
    match &err {
        Error::NotWritten { count, reason } => {
            assert_eq!(*count, 3);
            assert!(reason.contains("write failed"), "{reason}");
            assert!(reason.contains("usage_records"), "{reason}");
        }
        other => panic!("expected NotWritten, got {other:?}"),
    }
    let health = guard.health();
    assert_eq!((health.written, health.failed), (1, 3));
    assert!(health.last_error.unwrap().contains("no such table"));
    // Every later failure is counted too, never silently skipped.
    chat("t", "u", false).await.unwrap();
    assert!(guard.flush().await.is_err());
    assert_eq!(guard.health().failed, 4);
}

/// The schema the first release created (migration 1 only), with one row in it.
async fn first_release_database(url: &str) {
    let mut db = open(&format!("{url}?mode=rwc")).await;
    sqlx::raw_sql(
        "CREATE TABLE usage_schema_migrations (
             version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL,
             applied_at TEXT NOT NULL);
         INSERT INTO usage_schema_migrations VALUES (1, 'usage_records', '2026-01-01T00:00:00Z');
         CREATE TABLE usage_records (
             id TEXT NOT NULL PRIMARY KEY, operation TEXT NOT NULL, function TEXT NOT NULL,
             service TEXT NOT NULL, instance TEXT NOT NULL, started_at TEXT NOT NULL,
             duration_us INTEGER NOT NULL,
             outcome TEXT NOT NULL CHECK (outcome IN ('success', 'error', 'panic', 'cancelled')),
             error_type TEXT, error_message TEXT, tenant_id TEXT, user_id TEXT, session_id TEXT,
             attributes TEXT NOT NULL DEFAULT '{}');
         INSERT INTO usage_records (id, operation, function, service, instance, started_at,
             duration_us, outcome, attributes)
         VALUES ('01900000-0000-7000-8000-000000000001', 'old', 'app::old', 'svc', 'host',
             '2026-01-01T00:00:00.000000Z', 12, 'success', '{}');",
    )
    .execute(&mut db)
    .await
    .unwrap();
}

/// operation, model, input, output, cached input, cost
type TokenRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

#[tokio::test]
async fn a_first_release_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = database(&dir);
    first_release_database(&url).await;
    let mut sink = SqliteSink::connect(&url).await.unwrap();

    let pricing = usage_runtime::Pricing::from_toml(
        "[models.\"gpt-4o\"]\ninput = \"2.50\"\noutput = \"10.00\"\n",
    )
    .unwrap();
    let capture = Capture::new().with_pricing(pricing);
    capture.run(|| {
        complete(1000);
        complete(u64::MAX);
    });
    sink.write(&capture.records()).await.unwrap();

    let mut db = open(&url).await;
    assert_eq!(migrations(&mut db).await, [1, 2, 3, 4, 5, 6, 7]);
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT operation, model, input_tokens, output_tokens, cached_input_tokens, \
             cost_nano_usd FROM usage_records ORDER BY started_at, input_tokens",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        rows[0],
        ("old".into(), None, None, None, None, None),
        "old rows keep NULLs"
    );
    assert_eq!(
        rows[1],
        (
            "complete".into(),
            Some("gpt-4o".into()),
            Some(1000),
            Some(1000),
            Some(0),
            Some(12_500_000)
        )
    );
    assert_eq!(
        rows[2].2,
        Some(i64::MAX),
        "the largest count is held at SQLite's maximum"
    );
}

#[tokio::test]
async fn a_corrupt_histogram_fails_reports_over_its_key_but_not_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = database(&dir);
    let mut records = tests::random_records(400, 61);
    for record in &mut records {
        record.started_at = records_hour();
        record.operation = "corrupt".into();
        record.tenant_id = Some("acme".into());
        record.model = None;
        record.outcome = usage_runtime::Outcome::Success;
    }
    let mut sink = SqliteSink::connect(&url).await.unwrap();
    sink.write(&records[..200]).await.unwrap();
    let mut db = open(&url).await;
    // An unfinished varint, as a torn or hand-edited value would leave.
    sqlx::query("UPDATE usage_rollups_daily SET latency = x'80', latency_base = 0")
        .execute(&mut db)
        .await
        .unwrap();
    // Writes go on: the histogram cannot be rewritten, so it is kept and stops being read back.
    sink.write(&records[200..]).await.unwrap();
    let (length, base): (i64, i64) =
        sqlx::query_as("SELECT length(latency), latency_base FROM usage_rollups_daily")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(length > 1);
    assert_eq!(
        base, length,
        "kept as it is, and no longer due for a rewrite"
    );
    let calls: i64 = sqlx::query_scalar("SELECT calls FROM usage_rollups_daily")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(calls, 400);
    // A report over the day names the problem instead of giving wrong percentiles.
    let reader = usage_runtime::report::Reader::connect(&url).await.unwrap();
    let error = reader
        .report(&usage_runtime::report::Query::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("histogram"), "{error}");
}

/// The start of yesterday's noon hour.
fn records_hour() -> chrono::DateTime<chrono::Utc> {
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    yesterday
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}
