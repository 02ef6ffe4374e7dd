//! The rollups equal the raw records however batches repeat, and a split batch that fails in part
//! is counted record by record and completed by its retry.

use std::collections::BTreeMap;

use tests::{by_day, RollupSums as Sums};
use usage_runtime::sink::Sink;
use usage_runtime::{error::DbStep, error::FailureKind, Error, Tracker, UsageRecord};

use crate::backend::{Backend, Conn, Db};
use crate::{serial, step_of};

/// A row of rollup sums: the key of [`Sums`], then its figures.
type SumsRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
);

async fn sums(conn: &mut Conn, sql: &str) -> Sums {
    let rows: Vec<SumsRow> = conn.rows(sql).await;
    rows.into_iter()
        .map(|r| ((r.0, r.1, r.2, r.3, r.4, r.5), (r.6, r.7, r.8, r.9, r.10)))
        .collect()
}

/// The rollup rows of `table` with their time as text (`time` of it, see [`Backend::hour`]).
async fn rollup_sums(db: &Db, conn: &mut Conn, table: &str, time: &str) -> Sums {
    let sql = format!(
        "SELECT {time}, service, operation, tenant_id, model, outcome, calls, input_tokens, \
         output_tokens, cost_nano_usd, duration_us FROM {}",
        db.table(table)
    );
    sums(conn, &sql).await
}

conformance!(rollups_equal_the_raw_records_under_duplicates_and_replays: Sqlite, Postgres, MySql);
async fn rollups_equal_the_raw_records_under_duplicates_and_replays(backend: Backend) {
    let Some(db) = Db::fresh(backend, "rollup").await else {
        return;
    };
    let records = tests::random_records(5000, 3);
    let mut sink = db.sink().await;
    let mut rng = fastrand::Rng::with_seed(5);
    // Batches of random sizes, each written once, some twice, some overlapping earlier ones.
    let mut at = 0;
    while at < 3000 {
        let end = (at + rng.usize(1..400)).min(3000);
        if at > 0 && rng.u8(..4) == 0 {
            // A replay of old records that carries new ones: a statement inserts some of its rows.
            sink.write(&records[rng.usize(..at)..end]).await.unwrap();
        } else {
            sink.write(&records[at..end]).await.unwrap();
        }
        if rng.bool() {
            sink.write(&records[at..end]).await.unwrap(); // a redelivery
        }
        if at > 0 && rng.u8(..4) == 0 {
            let from = rng.usize(..at);
            sink.write(&records[from..end]).await.unwrap(); // a replay spanning old batches
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
    // New records repeated within one statement and across two (SQLite's statements hold 500).
    let extra = tests::random_records(700, 8);
    let mut repeated_new = extra.clone();
    repeated_new.insert(10, extra[5].clone());
    repeated_new.push(extra[0].clone());
    sink.write(&repeated_new).await.unwrap();
    // One batch written over a server's connections in 4 parts: records already present, new
    // ones, and repeats that fall in other parts than their first occurrence.
    let split: Vec<_> = records[1000..]
        .iter()
        .chain(&records[3000..3100])
        .chain(&records[..10])
        .cloned()
        .collect();
    assert!(split.len() >= 4 * usage_runtime::sink::MIN_PART_RECORDS);
    sink.write(&split).await.unwrap();

    let mut conn = db.open().await;
    let rows: i64 = db.records(&mut conn).await;
    assert_eq!(rows, 5700);
    let all: Vec<_> = records.iter().chain(&extra).collect();
    assert_rollups_equal_records(&db, &mut conn, &all).await;
}

/// The hourly rollups equal the records grouped by hour, the daily ones their sums by day, and
/// the latency histograms of both hold each row's calls and exactly the records' buckets.
async fn assert_rollups_equal_records(db: &Db, conn: &mut Conn, records: &[&UsageRecord]) {
    let backend = db.backend;
    let rolled = rollup_sums(db, conn, "usage_rollups_hourly", &backend.hour("hour")).await;
    let int = |expr: &str| backend.int(expr);
    let raw = format!(
        "SELECT {}, service, operation, COALESCE(tenant_id, ''), COALESCE(model, ''), outcome, \
         COUNT(*), {}, {}, {}, {} FROM {} GROUP BY 1, 2, 3, 4, 5, 6",
        backend.hour("started_at"),
        int("COALESCE(SUM(input_tokens), 0)"),
        int("COALESCE(SUM(output_tokens), 0)"),
        int("COALESCE(SUM(cost_nano_usd), 0)"),
        int("SUM(duration_us)"),
        db.table("usage_records"),
    );
    assert!(rolled.len() > 100, "the records spread over many keys");
    assert_eq!(rolled, sums(conn, &raw).await);
    // The daily rows hold each day's figures exactly.
    let daily = rollup_sums(db, conn, "usage_rollups_daily", &backend.day("day")).await;
    assert_eq!(daily, by_day(&rolled));

    for (table, time, width) in [
        ("usage_rollups_hourly", backend.hour("hour"), 13),
        ("usage_rollups_daily", backend.day("day"), 10),
    ] {
        let rows: Vec<(String, String, i64, Vec<u8>)> = conn
            .rows(&format!(
                "SELECT {time}, operation, calls, latency FROM {}",
                db.table(table)
            ))
            .await;
        let mut histogram = BTreeMap::new();
        for (start, operation, calls, latency) in &rows {
            // Each row's histogram holds its calls.
            assert_eq!(tests::histogram_calls(latency), *calls as u64, "{table}");
            usage_runtime::rollup::decode_latency(latency, |bucket, calls| {
                *histogram
                    .entry((start[..width].to_owned(), operation.clone(), bucket))
                    .or_insert(0u64) += calls;
            })
            .unwrap();
        }
        let total: i64 = rows.iter().map(|(_, _, calls, _)| calls).sum();
        assert_eq!(total, records.len() as i64, "{table}");
        // The histograms of both tiers hold exactly the raw durations' buckets.
        let mut expected = BTreeMap::new();
        for record in records {
            let start = record.started_at.format("%Y-%m-%dT%H").to_string();
            let bucket = usage_runtime::rollup::latency_bucket(record.duration.as_micros() as u64);
            *expected
                .entry((
                    start[..width].to_owned(),
                    record.operation.to_string(),
                    bucket,
                ))
                .or_insert(0u64) += 1;
        }
        assert_eq!(histogram, expected, "{table}");
    }
}

conformance!(a_failed_part_fails_the_write_and_the_retry_completes_it: Postgres, MySql);
/// A part of a split batch that fails fails the write; the parts that committed stay, and
/// writing the whole batch again (as the worker does) completes it: every record once, rollups
/// exact.
async fn a_failed_part_fails_the_write_and_the_retry_completes_it(backend: Backend) {
    let Some(db) = Db::fresh(backend, "part").await else {
        return;
    };
    let mut conn = db.open().await;
    let mut sink = db.sink().await;
    let mut records = tests::random_records(4096, 21);
    records[3500].operation = "refused".into(); // in the last of 4 parts
    let table = db.table("usage_records");
    conn.execute(&format!(
        "ALTER TABLE {table} ADD CONSTRAINT refused CHECK (operation <> 'refused')"
    ))
    .await;
    match sink.write(&records).await.unwrap_err() {
        Error::PartlyWritten { written, source } => {
            let first: Vec<_> = records[..3 * 1024].iter().map(|r| r.id).collect();
            assert_eq!(written.0, first, "the first three parts, named");
            assert_eq!(step_of(&source), DbStep::Write);
            assert_eq!(source.failure_kind(), FailureKind::Rejected);
        }
        other => panic!("expected a partly written batch, got {other}"),
    }
    assert_eq!(
        conn.distinct_ids(&table).await,
        3 * 1024,
        "the other parts committed"
    );
    conn.execute(&format!("ALTER TABLE {table} DROP CONSTRAINT refused"))
        .await;
    sink.write(&records).await.unwrap();
    assert_eq!(conn.distinct_ids(&table).await, 4096);
    let all: Vec<_> = records.iter().collect();
    assert_rollups_equal_records(&db, &mut conn, &all).await;
}

conformance!(a_partly_written_batch_is_counted_record_by_record: Postgres, MySql);
/// Through the tracker: a part that fails (with an error that is not retried) while the others
/// commit leaves every record counted once, in `written` (exactly the rows in the database) or
/// in `failed`, never a committed record counted as failed.
async fn a_partly_written_batch_is_counted_record_by_record(backend: Backend) {
    let Some(db) = Db::fresh(backend, "partly").await else {
        return;
    };
    let _serial = serial();
    let sink = db.sink().await;
    let mut conn = db.open().await;
    let (table, refuse) = (db.table("usage_records"), db.table("refuse"));
    conn.execute(&match backend {
        Backend::Postgres => format!(
            "CREATE OR REPLACE FUNCTION {refuse}() RETURNS trigger AS $$ BEGIN \
               IF NEW.operation = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT ON {table} \
               FOR EACH ROW EXECUTE FUNCTION {refuse}()"
        ),
        _ => format!(
            "CREATE TRIGGER {refuse} BEFORE INSERT ON {table} \
               FOR EACH ROW BEGIN IF NEW.operation = 'refused' THEN \
               SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END"
        ),
    })
    .await;
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
    let rows = conn.distinct_ids(&table).await;
    assert_eq!(rows, 3072, "the first three parts committed");
    assert_eq!((health.written, health.failed), (3072, 1024), "{health:?}");
    let rolled: i64 = db.rolled_calls(&mut conn).await;
    assert_eq!(rolled, 3072);
}
