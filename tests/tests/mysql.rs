//! The MySQL / MariaDB sink against the real server (`USAGE_TEST_MYSQL_URL`). Each test uses its own
//! table prefix, so tests run in parallel.
#![allow(missing_debug_implementations)]
// `serial()` holds a std lock for a whole test, each on its own runtime: nothing else awaits it.
#![allow(clippy::await_holding_lock)]

use std::sync::{Mutex, MutexGuard};

use sqlx::{Connection, MySqlConnection, Row};
use tests::{awkward_records, mysql_url, with_database, with_user};
use usage_runtime::sink::{MySqlSink, Sink, SqlConfig};
use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, DbStep, Error, Tracker};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh prefix: the test's tables are dropped first, so reruns start clean.
async fn fresh(url: &str, prefix: &str) -> SqlConfig {
    tests::drop_mysql_tables(url, prefix).await;
    SqlConfig::new().table_prefix(prefix).unwrap()
}

#[track_usage(operation = "chat", tenant = org, user = "user_7", fields(model = "gpt-4o"))]
async fn chat(org: &str, fail: bool) -> Result<u32, String> {
    if fail {
        Err("overloaded".into())
    } else {
        Ok(1)
    }
}

#[tokio::test]
async fn tracked_calls_become_rows_with_native_types() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    let config = fresh(&url, "my_rows_").await;
    let sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let guard = Tracker::builder()
        .service("pg-test")
        .sink(sink)
        .install()
        .unwrap();
    for n in 0..1500u32 {
        let _ = chat("acme", n % 5 == 0).await;
    }
    guard.shutdown().await.unwrap();

    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let (rows, errors): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(SUM(outcome = 'error') AS SIGNED) FROM my_rows_usage_records",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((rows, errors), (1500, 300));
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
         FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = 'my_rows_usage_records' \
         AND column_name IN ('id', 'started_at', 'input_tokens', 'user_id') ORDER BY column_name",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            ("id".into(), "char(36)".into()),
            ("input_tokens".into(), "bigint(20) unsigned".into()),
            ("started_at".into(), "datetime(6)".into()),
            ("user_id".into(), "char(36)".into()),
        ]
    );
    // The primary key compares ids byte by byte (they are always lowercase), not through a
    // case-insensitive collation.
    let collation: String = sqlx::query_scalar(
        "SELECT CAST(collation_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = 'my_rows_usage_records' \
         AND column_name = 'id'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(collation, "ascii_bin");
    let row = sqlx::query(
        "SELECT tenant_id, JSON_UNQUOTE(JSON_EXTRACT(attributes, '$.model')) AS model, \
         error_message, service FROM my_rows_usage_records WHERE outcome = 'error' LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("tenant_id"), "acme");
    assert_eq!(row.get::<String, _>("model"), "gpt-4o");
    assert_eq!(row.get::<String, _>("error_message"), "overloaded");
    assert_eq!(row.get::<String, _>("service"), "pg-test");
}

#[tokio::test]
async fn writing_a_batch_twice_leaves_one_row_per_record() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_twice_").await;
    let capture = Capture::new();
    capture
        .run_async(async {
            for n in 0..800 {
                let _ = chat("t", n % 2 == 0).await;
            }
        })
        .await;
    let records = capture.records();
    let mut sink = MySqlSink::connect_with(&url, config).await.unwrap();
    sink.write(&records).await.unwrap();
    sink.write(&records).await.unwrap();
    sink.write(&records[10..20]).await.unwrap();
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT id) FROM my_twice_usage_records")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (800, 800));
    // Each row counts the writes that found it stored: the second write's, and the third's for
    // ten of them. The rollups count each record once.
    let replays: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT replays, COUNT(*) FROM my_twice_usage_records GROUP BY replays ORDER BY replays",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(replays, [(1, 790), (2, 10)]);
    let calls: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(calls) AS SIGNED) FROM my_twice_usage_rollups_hourly")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(calls, 800);
}

#[tokio::test]
async fn awkward_values_round_trip_or_are_sanitised_as_documented() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_awkward_").await;
    let records = awkward_records();
    let mut sink = MySqlSink::connect_with(&url, config).await.unwrap();
    sink.write(&records).await.unwrap();

    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let row = sqlx::query(
        "SELECT operation, tenant_id, error_message, CAST(attributes AS CHAR) AS attributes, \
         DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS started \
         FROM my_awkward_usage_records WHERE id = ?",
    )
    .bind(records[0].id.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("operation"), "chat 💬 — ünïcödé");
    assert_eq!(row.get::<String, _>("tenant_id"), "テナント-🏢");
    assert_eq!(
        row.get::<String, _>("error_message"),
        "é".repeat(512 * 1024),
        "1 MiB intact"
    );
    let attributes: serde_json::Value =
        serde_json::from_str(&row.get::<String, _>("attributes")).unwrap();
    assert_eq!(
        attributes["note"], "zero\u{0}byte",
        "MySQL keeps NUL as it is"
    );
    assert_eq!(attributes["nested"]["deep"][1], "\u{0}");
    assert_eq!(attributes["nested"]["emoji"], "🦀");
    assert_eq!(
        row.get::<String, _>("started"),
        records[0]
            .started_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        "microseconds survive"
    );

    let row = sqlx::query(
        "SELECT model, input_tokens, output_tokens, cached_input_tokens, cost_nano_usd \
         FROM my_awkward_usage_records WHERE id = ?",
    )
    .bind(records[1].id.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("model"), "模型-✨");
    assert_eq!(
        row.get::<u64, _>("input_tokens"),
        u64::MAX,
        "the full u64 range"
    );
    assert_eq!(row.get::<u64, _>("output_tokens"), 0);
    assert_eq!(row.get::<u64, _>("cached_input_tokens"), u64::MAX - 1);
    assert_eq!(row.get::<i64, _>("cost_nano_usd"), i64::MAX);
}

#[tokio::test]
async fn verify_walks_every_step() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_verify_").await;
    let sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let report = sink.verify().await.unwrap();
    let steps: Vec<DbStep> = report.steps.iter().map(|(step, _)| *step).collect();
    assert_eq!(
        steps,
        [
            DbStep::Resolve,
            DbStep::Authenticate,
            DbStep::Migrate,
            DbStep::Write,
            DbStep::Read
        ]
    );
    assert!(!report.server_version.is_empty());
    assert!(
        report.target.starts_with("mysql://root@"),
        "{}",
        report.target
    );
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM my_verify_usage_records")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(left, 0, "the probe record is deleted");
}

fn step_of(error: &Error) -> DbStep {
    match error {
        Error::Database { step, .. } => *step,
        other => panic!("expected a database error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_host_fails_at_resolve() {
    let Some(_) = mysql_url() else { return };
    let err = MySqlSink::connect("mysql://app:secret@no-such-host.invalid:3306/db")
        .await
        .unwrap_err();
    assert_eq!(step_of(&err), DbStep::Resolve);
    let text = err.to_string();
    assert!(
        text.contains("no-such-host.invalid:3306/db") && text.contains("app@"),
        "{text}"
    );
    assert!(!text.contains("secret") && !format!("{err:?}").contains("secret"));
}

#[tokio::test]
async fn a_wrong_port_fails_at_connect() {
    let Some(_) = mysql_url() else { return };
    let err = MySqlSink::connect("mysql://root:secret@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert_eq!(step_of(&err), DbStep::Connect);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!err.to_string().contains("secret"));
}

#[tokio::test]
async fn a_missing_database_fails_at_connect_and_names_it() {
    let Some(url) = mysql_url() else { return };
    let err = MySqlSink::connect(&with_database(&url, "no_such_database_here"))
        .await
        .unwrap_err();
    assert_eq!(step_of(&err), DbStep::Connect);
    assert!(err.to_string().contains("no_such_database_here"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_fails_at_authenticate_and_never_shows() {
    let Some(url) = mysql_url() else { return };
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE USER IF NOT EXISTS 'usage_pw_test'@'%' IDENTIFIED BY 'right-one'; \
         CREATE USER IF NOT EXISTS 'usage_pw_test'@'localhost' IDENTIFIED BY 'right-one'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let wrong = with_user(&url, "usage_pw_test", Some("hunter2-wrong"));
    let err = MySqlSink::connect(&wrong).await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Authenticate, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("usage_pw_test"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn a_user_without_insert_permission_fails_at_write() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_readonly_").await;
    MySqlSink::connect_with(&url, config.clone()).await.unwrap();
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    for host in ["%", "localhost"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE USER IF NOT EXISTS 'usage_readonly'@'{host}'; \
             GRANT SELECT ON test.my_readonly_usage_records TO 'usage_readonly'@'{host}'; \
             GRANT SELECT ON test.my_readonly_usage_schema_migrations \
                 TO 'usage_readonly'@'{host}'"
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let readonly = MySqlSink::connect_with(&with_user(&url, "usage_readonly", None), config)
        .await
        .unwrap();
    let err = readonly.verify().await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Write, "{err}");
    assert!(err.to_string().contains("denied"), "{err}");
}

#[tokio::test]
async fn a_table_with_other_columns_fails_at_migrate() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_mismatch_").await;
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE my_mismatch_usage_records (id CHAR(36) PRIMARY KEY, note TEXT)")
        .execute(&mut db)
        .await
        .unwrap();
    let err = MySqlSink::connect_with(&url, config).await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Migrate, "{err}");
    assert!(err.to_string().contains("started_at"), "{err}");
}

#[tokio::test]
async fn bad_urls_and_prefixes_are_named_errors() {
    let err = MySqlSink::connect("mysql://app:s3cret@host:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    assert!(matches!(
        SqlConfig::new().table_prefix("x; DROP TABLE y"),
        Err(Error::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_debug_").await;
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    for host in ["%", "localhost"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE USER IF NOT EXISTS 'usage_pw_debug'@'{host}' IDENTIFIED BY 'topsecret'; \
             GRANT ALL ON test.* TO 'usage_pw_debug'@'{host}'"
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let with_password = with_user(&url, "usage_pw_debug", Some("topsecret"));
    let sink = MySqlSink::connect_with(&with_password, config)
        .await
        .unwrap();
    let shown = format!("{sink:?}");
    assert!(
        shown.contains("usage_pw_debug@127.0.0.1:3306/test"),
        "{shown}"
    );
    assert!(!shown.contains("topsecret"), "{shown}");
}

/// (hour, operation, tenant, model, outcome) -> (calls, input, output, cost, duration).
type Sums = tests::RollupSums;

async fn sums(db: &mut MySqlConnection, query: &str) -> Sums {
    sqlx::query(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
                (r.get(5), r.get(6), r.get(7), r.get(8), r.get(9)),
            )
        })
        .collect()
}

#[tokio::test]
async fn rollups_equal_the_raw_records_under_duplicates_and_replays() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_rollup_").await;
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let records = tests::random_records(5000, 9);
    let mut sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(13);
    let mut at = 0;
    while at < 3000 {
        let end = (at + rng.usize(1..400)).min(3000);
        sink.write(&records[at..end]).await.unwrap();
        if rng.bool() {
            sink.write(&records[at..end]).await.unwrap();
        }
        if at > 0 && rng.u8(..4) == 0 {
            let from = rng.usize(..at);
            sink.write(&records[from..end]).await.unwrap();
        }
        at = end;
    }
    // A record repeated within one batch (a broker's redelivery) counts once.
    let repeated: Vec<_> = records[..20]
        .iter()
        .chain(&records[..20])
        .cloned()
        .collect();
    sink.write(&repeated).await.unwrap();
    // One batch written over the sink's connections in 4 parts: records already present, new
    // ones, and repeats that fall in other parts than their first occurrence.
    let split: Vec<_> = records[1000..]
        .iter()
        .chain(&records[3000..3100])
        .chain(&records[..10])
        .cloned()
        .collect();
    assert!(split.len() >= 4 * usage_runtime::sink::MIN_PART_RECORDS);
    sink.write(&split).await.unwrap();
    assert_rollups_equal_records(&mut db, "my_rollup_", 5000).await;
}

/// A part of a split batch that fails fails the write; the parts that committed stay, and
/// writing the whole batch again (as the worker does) completes it: every record once, rollups
/// exact.
#[tokio::test]
async fn a_failed_part_fails_the_write_and_the_retry_completes_it() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_part_").await;
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let mut sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let mut records = tests::random_records(4096, 21);
    records[3500].operation = "refused".into(); // in the last of 4 parts
    sqlx::raw_sql(
        "ALTER TABLE my_part_usage_records ADD CONSTRAINT refused CHECK (operation <> 'refused')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    match sink.write(&records).await.unwrap_err() {
        Error::PartlyWritten { written, source } => {
            let first: Vec<_> = records[..3 * 1024].iter().map(|r| r.id).collect();
            assert_eq!(written.0, first, "the first three parts, named");
            assert_eq!(step_of(&source), DbStep::Write);
            assert_eq!(source.failure_kind(), usage_runtime::FailureKind::Rejected);
        }
        other => panic!("expected a partly written batch, got {other}"),
    }
    assert_eq!(
        distinct_ids(&mut db, "my_part_usage_records").await,
        3 * 1024,
        "the other parts committed"
    );
    sqlx::raw_sql("ALTER TABLE my_part_usage_records DROP CONSTRAINT refused")
        .execute(&mut db)
        .await
        .unwrap();
    sink.write(&records).await.unwrap();
    assert_eq!(distinct_ids(&mut db, "my_part_usage_records").await, 4096);
    assert_rollups_equal_records(&mut db, "my_part_", 4096).await;
}

/// Through the tracker: a part that fails (with an error that is not retried) while the others
/// commit leaves every record counted once, in `written` (exactly the rows in the database) or
/// in `failed`, never a committed record counted as failed.
#[tokio::test]
async fn a_partly_written_batch_is_counted_record_by_record() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    let config = fresh(&url, "my_partly_").await;
    let sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER my_partly_refuse BEFORE INSERT ON my_partly_usage_records \
           FOR EACH ROW BEGIN IF NEW.operation = 'refused' THEN \
           SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let guard = Tracker::builder()
        .sink(sink)
        .batch_size(4096)
        .install()
        .unwrap();
    tests::calls_with_one_refused();
    let error = guard.flush().await.unwrap_err();
    assert!(
        matches!(error, Error::NotWritten { count: 1024, .. }),
        "{error}"
    );
    let health = guard.health();
    guard.shutdown().await.unwrap();
    let rows = distinct_ids(&mut db, "my_partly_usage_records").await;
    assert_eq!(rows, 3072, "the first three parts committed");
    assert_eq!((health.written, health.failed), (3072, 1024), "{health:?}");
    let rolled: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(calls) AS SIGNED) FROM my_partly_usage_rollups_hourly")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(rolled, 3072);
}

async fn distinct_ids(db: &mut MySqlConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(DISTINCT id) FROM {table}"
    )))
    .fetch_one(db)
    .await
    .unwrap()
}

/// The hourly rollups under `prefix` equal the records grouped by hour, the daily ones their
/// sums by day, and every row's histogram holds its calls, `total` in all.
async fn assert_rollups_equal_records(db: &mut MySqlConnection, prefix: &str, total: i64) {
    let rolled = sums(
        &mut *db,
        &format!(
            "SELECT DATE_FORMAT(hour, '%Y-%m-%dT%H:00:00Z'), operation, tenant_id, model, \
             outcome, calls, input_tokens, output_tokens, cost_nano_usd, duration_us \
             FROM {prefix}usage_rollups_hourly"
        ),
    )
    .await;
    let raw = sums(
        &mut *db,
        &format!(
            "SELECT DATE_FORMAT(started_at, '%Y-%m-%dT%H:00:00Z'), operation, \
             COALESCE(tenant_id, ''), COALESCE(model, ''), outcome, COUNT(*), \
             CAST(COALESCE(SUM(input_tokens), 0) AS SIGNED), \
             CAST(COALESCE(SUM(output_tokens), 0) AS SIGNED), \
             CAST(COALESCE(SUM(cost_nano_usd), 0) AS SIGNED), CAST(SUM(duration_us) AS SIGNED) \
             FROM {prefix}usage_records GROUP BY 1, 2, 3, 4, 5"
        ),
    )
    .await;
    assert!(rolled.len() > 100, "{}", rolled.len());
    assert_eq!(rolled, raw);
    let daily = sums(
        &mut *db,
        &format!(
            "SELECT DATE_FORMAT(day, '%Y-%m-%dT00:00:00Z'), operation, tenant_id, model, \
             outcome, calls, input_tokens, output_tokens, cost_nano_usd, duration_us \
             FROM {prefix}usage_rollups_daily"
        ),
    )
    .await;
    assert_eq!(daily, tests::by_day(&rolled));
    // Each row's histogram holds its calls.
    for table in ["usage_rollups_hourly", "usage_rollups_daily"] {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT calls, latency FROM {prefix}{table}"
        )))
        .fetch_all(&mut *db)
        .await
        .unwrap();
        for (calls, latency) in &rows {
            assert_eq!(tests::histogram_calls(latency), *calls as u64, "{table}");
        }
        assert_eq!(rows.iter().map(|(calls, _)| calls).sum::<i64>(), total);
    }
}

#[tokio::test]
async fn rollup_sums_saturate_instead_of_failing() {
    let Some(url) = mysql_url() else { return };
    let config = fresh(&url, "my_sat_").await;
    let mut sink = MySqlSink::connect_with(&url, config).await.unwrap();
    let records = tests::overflowing_pair();
    sink.write(&records[..1]).await.unwrap();
    sink.write(&records[1..]).await.unwrap();
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let (calls, input, cost): (i64, i64, i64) = sqlx::query_as(
        "SELECT calls, input_tokens, cost_nano_usd FROM my_sat_usage_rollups_hourly \
         WHERE operation = 'huge'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((calls, input, cost), (2, i64::MAX, i64::MAX));
}

#[tokio::test]
async fn the_operation_catalog_is_recorded_at_start() {
    let Some(url) = mysql_url() else { return };
    let _serial = serial();
    let config = fresh(&url, "my_catalog_").await;
    let guard = Tracker::builder()
        .service("catalog-test")
        .sink(MySqlSink::connect_with(&url, config).await.unwrap())
        .install()
        .unwrap();
    guard.shutdown().await.unwrap();
    let mut db = MySqlConnection::connect(&url).await.unwrap();
    let (function, line): (String, i32) = sqlx::query_as(
        "SELECT function, line FROM my_catalog_usage_operations \
         WHERE service = 'catalog-test' AND operation = 'chat'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(function, "mysql::chat");
    assert!(include_str!("mysql.rs")
        .lines()
        .nth(line as usize - 1)
        .unwrap()
        .contains("fn chat("));
}
