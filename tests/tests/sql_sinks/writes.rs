//! What every SQL sink writes: tracked calls as rows, one row per record however often it is
//! written, awkward values intact, saturating rollup sums, the operation catalog, retention.

use usage_runtime::sink::Sink;
use usage_runtime::testing::Capture;
use usage_runtime::{Tracker, UsageRecord};
use uuid::Uuid;

use crate::backend::{Backend, Conn, Db};
use crate::{chat, serial};

/// The global tracker of `service`, writing to `db`.
async fn track(db: &Db, service: &str) -> Tracker {
    let builder = Tracker::builder().service(service);
    builder.sink(db.sink().await).install().unwrap()
}

conformance!(tracked_calls_become_rows: Sqlite, Postgres, MySql);
async fn tracked_calls_become_rows(backend: Backend) {
    let Some(db) = Db::fresh(backend, "rows").await else {
        return;
    };
    let _serial = serial();
    let guard = track(&db, "chat-api").await;
    for n in 0..1500u32 {
        let _ = chat("acme", "user_1", n % 5 == 0).await;
    }
    guard.flush().await.unwrap();
    assert_eq!(guard.health().written, 1500);
    guard.shutdown().await.unwrap();

    let mut conn = db.open().await;
    let records = db.table("usage_records");
    let counts: Vec<(String, i64)> = conn
        .rows(&format!(
            "SELECT outcome, COUNT(*) FROM {records} GROUP BY outcome ORDER BY outcome"
        ))
        .await;
    assert_eq!(
        counts,
        [("error".to_owned(), 300), ("success".to_owned(), 1200)]
    );

    type Columns = (String, String, String, String, String, i64, String, String);
    let (id, operation, function, service, started, duration, error_type, error_message): Columns =
        conn.row(&format!(
            "SELECT {}, operation, function, service, {}, {}, error_type, error_message \
             FROM {records} WHERE outcome = 'error' LIMIT 1",
            backend.text("id"),
            backend.micros("started_at"),
            backend.int("duration_us"),
        ))
        .await;
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(operation, "chat");
    assert_eq!(function, "sql_sinks::chat");
    assert_eq!(service, "chat-api");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&started).is_ok() && started.len() == 27,
        "{started}"
    );
    assert!(duration >= 0);
    assert_eq!(error_type, "alloc::string::String");
    assert_eq!(error_message, "model overloaded");

    type Dimensions = (String, String, Option<String>, String, String);
    let (tenant, user, session, model, attributes): Dimensions = conn
        .row(&format!(
            "SELECT tenant_id, {}, {}, {} AS model, {} FROM {records} \
             WHERE outcome = 'error' LIMIT 1",
            backend.text("user_id"),
            backend.text("session_id"),
            backend.json_text("attributes", "model"),
            backend.text("attributes"),
        ))
        .await;
    assert_eq!(tenant, "acme");
    assert_eq!(
        Uuid::parse_str(&user).unwrap(),
        Uuid::new_v5(&usage_runtime::tracker::DEFAULT_ID_NAMESPACE, b"user_1")
    );
    assert_eq!(session, None);
    assert_eq!(model, "gpt-4o");
    let attributes: serde_json::Value = serde_json::from_str(&attributes).unwrap();
    assert_eq!(attributes, serde_json::json!({"model": "gpt-4o"}));
}

/// 800 tracked calls written three times: all, all again, and ten of them once more.
pub(crate) async fn written_twice(backend: Backend) -> Option<(Db, Conn)> {
    let db = Db::fresh(backend, "twice").await?;
    let capture = Capture::new();
    capture
        .run_async(async {
            for n in 0..800u32 {
                let _ = chat("t", "u", n % 2 == 0).await;
            }
        })
        .await;
    let records = capture.records();
    let mut sink = db.sink().await;
    sink.write(&records).await.unwrap();
    sink.write(&records).await.unwrap();
    sink.write(&records[10..20]).await.unwrap();
    let conn = db.open().await;
    Some((db, conn))
}

conformance!(writing_a_batch_twice_leaves_one_row_per_record: Sqlite, Postgres, MySql);
async fn writing_a_batch_twice_leaves_one_row_per_record(backend: Backend) {
    let Some((db, mut conn)) = written_twice(backend).await else {
        return;
    };
    let (rows, distinct): (i64, i64) = conn
        .row(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM {}",
            db.table("usage_records")
        ))
        .await;
    assert_eq!((rows, distinct), (800, 800));
    // The rollups count each record once.
    let calls: i64 = db.rolled_calls(&mut conn).await;
    assert_eq!(calls, 800);
}

/// [`tests::awkward_records`] written once, with a connection to read them back.
/// Each caller names its own tables: tests run at once.
pub(crate) async fn awkward_written(
    backend: Backend,
    name: &str,
) -> Option<(Db, Conn, Vec<UsageRecord>)> {
    let db = Db::fresh(backend, name).await?;
    let records = tests::awkward_records();
    db.sink().await.write(&records).await.unwrap();
    let conn = db.open().await;
    Some((db, conn, records))
}

conformance!(awkward_values_round_trip_or_are_sanitised_as_documented: Sqlite, Postgres, MySql);
/// The attributes of the first of [`tests::awkward_records`], written and read back.
pub(crate) async fn awkward_attributes(backend: Backend) -> Option<serde_json::Value> {
    let (db, mut conn, records) = awkward_written(backend, "awkward_attrs").await?;
    let attributes: String = conn
        .scalar(&format!(
            "SELECT {} FROM {} WHERE id = '{}'",
            backend.text("attributes"),
            db.table("usage_records"),
            records[0].id
        ))
        .await;
    Some(serde_json::from_str(&attributes).unwrap())
}

/// What holds on every backend; what NUL bytes and the largest token counts become is each
/// backend's own (see `postgres`, `mysql`).
async fn awkward_values_round_trip_or_are_sanitised_as_documented(backend: Backend) {
    let Some((db, mut conn, records)) = awkward_written(backend, "awkward").await else {
        return;
    };
    let table = db.table("usage_records");
    let (operation, tenant, error_message, attributes, started): (
        String,
        String,
        String,
        String,
        String,
    ) = conn
        .row(&format!(
            "SELECT operation, tenant_id, error_message, {}, {} FROM {table} WHERE id = '{}'",
            backend.text("attributes"),
            backend.micros("started_at"),
            records[0].id
        ))
        .await;
    assert_eq!(operation, "chat 💬 — ünïcödé");
    assert_eq!(tenant, "テナント-🏢");
    assert_eq!(error_message, "é".repeat(512 * 1024), "1 MiB intact");
    let attributes: serde_json::Value = serde_json::from_str(&attributes).unwrap();
    assert_eq!(attributes["nested"]["emoji"], "🦀");
    assert_eq!(
        started,
        records[0]
            .started_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        "microseconds survive"
    );

    let (model, output, cost): (String, i64, i64) = conn
        .row(&format!(
            "SELECT model, {}, cost_nano_usd FROM {table} WHERE id = '{}'",
            backend.int("output_tokens"),
            records[1].id
        ))
        .await;
    assert_eq!(model, "模型-✨");
    assert_eq!(output, 0);
    assert_eq!(cost, i64::MAX);
}

conformance!(rollup_sums_saturate_instead_of_failing: Sqlite, Postgres, MySql);
async fn rollup_sums_saturate_instead_of_failing(backend: Backend) {
    let Some(db) = Db::fresh(backend, "sat").await else {
        return;
    };
    let mut sink = db.sink().await;
    let records = tests::overflowing_pair();
    sink.write(&records[..1]).await.unwrap();
    sink.write(&records[1..]).await.unwrap();
    let (calls, input, cost): (i64, i64, i64) = db
        .open()
        .await
        .row(&format!(
            "SELECT calls, input_tokens, cost_nano_usd FROM {} WHERE operation = 'huge'",
            db.table("usage_rollups_hourly")
        ))
        .await;
    assert_eq!((calls, input, cost), (2, i64::MAX, i64::MAX));
}

conformance!(the_operation_catalog_is_recorded_at_start: Sqlite, Postgres, MySql);
async fn the_operation_catalog_is_recorded_at_start(backend: Backend) {
    let Some(db) = Db::fresh(backend, "catalog").await else {
        return;
    };
    let _serial = serial();
    let guard = track(&db, "catalog-test").await;
    guard.flush().await.unwrap();
    guard.shutdown().await.unwrap();
    let mut conn = db.open().await;
    let operations = db.table("usage_operations");
    let query = format!(
        "SELECT function, file, {}, {}, {} FROM {operations} \
         WHERE service = 'catalog-test' AND operation = 'chat'",
        backend.int("line"),
        backend.micros("first_seen"),
        backend.micros("last_seen"),
    );
    let (function, file, line, first, last): (String, String, i64, String, String) =
        conn.row(&query).await;
    assert_eq!(function, "sql_sinks::chat");
    assert!(file.ends_with("sql_sinks/main.rs"), "{file}");
    assert!(include_str!("main.rs")
        .lines()
        .nth(line as usize - 1)
        .unwrap()
        .contains("fn chat("));
    assert_eq!(first, last);
    // Never called in this test, yet listed: the catalog is every annotated fn.
    let never: i64 = conn
        .scalar(&format!(
            "SELECT COUNT(*) FROM {operations} WHERE operation = 'complete'"
        ))
        .await;
    assert_eq!(never, 1);

    // A restart keeps first_seen and moves last_seen.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let guard = track(&db, "catalog-test").await;
    guard.shutdown().await.unwrap();
    let (_, _, _, first_again, last_again): (String, String, i64, String, String) =
        conn.row(&query).await;
    assert_eq!(first_again, first);
    assert!(last_again > last, "{last_again} <= {last}");
}

conformance!(a_retention_on_the_tracker_prunes_old_records_and_keeps_the_rollups: Sqlite, Postgres, MySql);
async fn a_retention_on_the_tracker_prunes_old_records_and_keeps_the_rollups(backend: Backend) {
    let Some(db) = Db::fresh(backend, "retention").await else {
        return;
    };
    let _serial = serial();
    let mut records = tests::random_records(400, 61);
    for record in records.iter_mut().step_by(2) {
        record.started_at -= chrono::Duration::days(40);
    }
    db.sink().await.write(&records).await.unwrap();
    let guard = Tracker::builder()
        .sink(db.sink().await)
        .retention(std::time::Duration::from_secs(30 * 86_400))
        .install()
        .unwrap();
    guard.flush().await.unwrap();
    assert_eq!(guard.health().pruned, 200);
    guard.shutdown().await.unwrap();
    let mut conn = db.open().await;
    let left: i64 = db.records(&mut conn).await;
    assert_eq!(left, 200);
    let rolled: i64 = db.rolled_calls(&mut conn).await;
    assert_eq!(rolled, 400, "the rollups keep the pruned hours");
}

conformance!(a_report_over_pruned_hours_does_not_depend_on_where_its_range_starts: Sqlite, Postgres, MySql);
async fn a_report_over_pruned_hours_does_not_depend_on_where_its_range_starts(backend: Backend) {
    use usage_runtime::report::{Query, Reader, Source};
    let Some(db) = Db::fresh(backend, "pruned_report").await else {
        return;
    };
    let (base, records) = four_hours(67);
    let mut sink = db.sink().await;
    sink.write(&records).await.unwrap();
    // The first two hours' records go; their rollups stay.
    let hour = chrono::Duration::hours(1);
    assert_eq!(sink.prune(base + hour * 2).await.unwrap(), 10);
    let reader = Reader::connect_with(&db.url, db.config()).await.unwrap();
    // Calls in all, and where they were read from, for `since` and `until` from `base`.
    let answer = async |since: chrono::Duration, until: Option<chrono::Duration>| {
        let mut query = Query::new().since(base + since);
        if let Some(until) = until {
            query = query.until(base + until);
        }
        let summary = reader.report(&query).await.unwrap();
        let calls: u64 = summary.rows.iter().map(|row| row.calls).sum();
        (calls, summary.source)
    };
    let minutes = chrono::Duration::minutes;
    assert_eq!(answer(hour, None).await, (15, Source::Rollups));
    // Half an hour earlier: the pruned half hour adds nothing, the whole hours are all there.
    assert_eq!(
        answer(minutes(30), None).await,
        (15, Source::RollupsAndRecords)
    );
    // Partial hours at both edges, from the records: 1:25 to 3:15 is the pruned 1:30 and 1:40
    // (gone), hour 2 whole (five, from the rollups), then 3:00 and 3:10.
    assert_eq!(
        answer(hour + minutes(25), Some(hour * 3 + minutes(15))).await,
        (7, Source::RollupsAndRecords)
    );
    // Within one hour there is no whole hour: the records answer alone.
    assert_eq!(
        answer(hour * 2 + minutes(5), Some(hour * 2 + minutes(35))).await,
        (3, Source::Records)
    );
}

/// Twenty records, five an hour (at minutes 0 to 40) over four hours from three days ago, and
/// the first hour.
fn four_hours(seed: u64) -> (chrono::DateTime<chrono::Utc>, Vec<UsageRecord>) {
    let base = usage_runtime::report::hour_start(chrono::Utc::now() - chrono::Duration::days(3));
    let mut records = tests::random_records(20, seed);
    for (n, record) in records.iter_mut().enumerate() {
        record.started_at = base
            + chrono::Duration::hours(n as i64 / 5)
            + chrono::Duration::minutes(10 * (n as i64 % 5));
    }
    (base, records)
}

conformance!(a_pruned_record_written_again_is_refused_and_counted_once: Sqlite, Postgres, MySql);
async fn a_pruned_record_written_again_is_refused_and_counted_once(backend: Backend) {
    let Some(db) = Db::fresh(backend, "pruned_again").await else {
        return;
    };
    let _serial = serial();
    let (base, records) = four_hours(71);
    let mut sink = db.sink().await;
    sink.write(&records).await.unwrap();
    assert_eq!(
        sink.prune(base + chrono::Duration::hours(2)).await.unwrap(),
        10
    );
    let mut conn = db.open().await;
    assert_eq!(db.rolled_calls(&mut conn).await, 20);
    // The whole batch again (a replayed spool, a stream read from its start) and a new record:
    // the pruned ten are refused, the ten kept are replays, the new one is written.
    let mut again = records.clone();
    let mut new = tests::random_records(1, 72).remove(0);
    new.started_at = base + chrono::Duration::hours(3);
    again.push(new.clone());
    let error = sink.write(&again).await.unwrap_err();
    match &error {
        usage_runtime::Error::Expired { refused, horizon } => {
            let mut refused = refused.0.clone();
            refused.sort();
            let mut pruned: Vec<Uuid> = records[..10].iter().map(|r| r.id).collect();
            pruned.sort();
            assert_eq!(refused, pruned);
            assert_eq!(*horizon, base + chrono::Duration::hours(2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.failure_kind(),
        usage_runtime::error::FailureKind::Rejected
    );
    assert_eq!(db.rolled_calls(&mut conn).await, 21, "each id counts once");
    assert_eq!(db.records(&mut conn).await, 11);

    // Through the tracker, once the records are pruned up to the next hour: a call now is
    // refused, quarantined with the reason and counted; the next batch goes on.
    let next_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(sink.prune(next_hour).await.unwrap(), 11);
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let guard = Tracker::builder()
        .sink(db.sink().await)
        .quarantine_file(&quarantine)
        .install()
        .unwrap();
    chat("acme", "user_1", false).await.unwrap();
    let flushed = guard.flush().await;
    assert!(
        matches!(
            flushed,
            Err(usage_runtime::Error::NotWritten { count: 1, .. })
        ),
        "a refused record is not written: {flushed:?}"
    );
    let health = guard.health();
    assert_eq!(
        (health.written, health.expired, health.quarantined),
        (0, 1, 1),
        "{health:?}"
    );
    assert_eq!(health.state, usage_runtime::HealthState::Degraded);
    guard.shutdown().await.unwrap();
    let lines = tests::quarantined(&quarantine);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["record"]["operation"], "chat");
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(reason.contains("where the records were pruned"), "{reason}");
    assert_eq!(db.rolled_calls(&mut conn).await, 21);
}

conformance!(a_database_pruned_before_the_horizon_existed_starts_from_its_oldest_record: Sqlite, Postgres, MySql);
async fn a_database_pruned_before_the_horizon_existed_starts_from_its_oldest_record(
    backend: Backend,
) {
    let Some(db) = Db::fresh(backend, "old_prune").await else {
        return;
    };
    let (_, records) = four_hours(73);
    let mut sink = db.sink().await;
    sink.write(&records).await.unwrap();
    // As an earlier version pruned: the records go, no horizon is kept.
    let mut conn = db.open().await;
    let (table, migrations, pruned) = (
        db.table("usage_records"),
        db.table("usage_schema_migrations"),
        db.table("usage_pruned"),
    );
    let cutoff = records[10].started_at;
    let ids: Vec<String> = records[..10]
        .iter()
        .map(|r| format!("'{}'", r.id))
        .collect();
    conn.execute(&format!(
        "DELETE FROM {table} WHERE id IN ({})",
        ids.join(", ")
    ))
    .await;
    conn.execute(&format!("DROP TABLE {pruned}")).await;
    conn.execute(&format!(
        "DELETE FROM {migrations} WHERE description = 'the pruned horizon'"
    ))
    .await;
    drop(sink);
    // The upgrade finds rollup hours older than the oldest record: pruned up to its hour.
    let mut sink = db.sink().await;
    match sink.write(&records[..1]).await {
        Err(usage_runtime::Error::Expired { horizon, .. }) => assert_eq!(horizon, cutoff),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.rolled_calls(&mut conn).await, 20);
}

conformance!(a_prune_before_the_horizon_is_migrated_is_refused_by_name: Sqlite, Postgres, MySql);
async fn a_prune_before_the_horizon_is_migrated_is_refused_by_name(backend: Backend) {
    let Some(db) = Db::fresh(backend, "unmigrated_prune").await else {
        return;
    };
    let (_, records) = four_hours(75);
    db.sink().await.write(&records).await.unwrap();
    let mut conn = db.open().await;
    conn.execute(&format!("DROP TABLE {}", db.table("usage_pruned")))
        .await;
    let reader = usage_runtime::report::Reader::connect_with(&db.url, db.config())
        .await
        .unwrap();
    let error = reader
        .prune(chrono::Utc::now(), 1000, |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("run `usage migrate`"), "{error}");
    assert_eq!(db.records(&mut conn).await, 20, "nothing deleted");
}
