//! Reports on SQLite, PostgreSQL and MySQL: the rollups and the records give the same answer
//! (duplicates and replays included), a tenant's reader sees only its own rows.

use chrono::Timelike;
use sqlx::Connection;
use tests::{mysql_url, postgres_url, random_records};
use usage_runtime::report::{GroupBy, Query, Reader, Source, TimeBucket};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqliteSink};
use usage_runtime::{Outcome, UsageRecord};

/// Writes `records` in random batches, with redeliveries and replays.
async fn write_messily(sink: &mut impl Sink, records: &[UsageRecord]) {
    let mut rng = fastrand::Rng::with_seed(21);
    let mut at = 0;
    while at < records.len() {
        let end = (at + rng.usize(1..300)).min(records.len());
        write(sink, &records[at..end]).await;
        if rng.bool() {
            write(sink, &records[at..end]).await;
        }
        if at > 0 && rng.u8(..5) == 0 {
            write(sink, &records[rng.usize(..at)..end]).await;
        }
        at = end;
    }
}

/// 3,000 records over five days (from `seed`), written messily through `sink`, which is closed.
async fn written_messily(mut sink: impl Sink, seed: u64) -> Vec<UsageRecord> {
    let records = records_over_days(3000, seed);
    write_messily(&mut sink, &records).await;
    records
}

/// Batches written again after a transient failure.
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes a batch, trying again after a transient failure as the tracker's worker does (MySQL
/// answers concurrent writers with the odd deadlock, which rolls the whole batch back).
async fn write(sink: &mut impl Sink, batch: &[UsageRecord]) {
    for attempt in 1.. {
        match sink.write(batch).await {
            Ok(()) => return,
            Err(error)
                if error.failure_kind() == usage_runtime::error::FailureKind::Transient
                    && attempt < 50 =>
            {
                RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(5..50))).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

fn queries(records: &[UsageRecord]) -> Vec<Query> {
    let first = records.iter().map(|r| r.started_at).min().unwrap();
    let since = first
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap()
        + chrono::Duration::hours(5);
    vec![
        Query::new(),
        Query::new()
            .group_by([GroupBy::Tenant, GroupBy::Operation])
            .bucket(TimeBucket::Month),
        Query::new()
            .group_by([GroupBy::Model, GroupBy::Outcome])
            .bucket(TimeBucket::Day),
        Query::new()
            .group_by([GroupBy::Operation])
            .bucket(TimeBucket::Hour),
        Query::new()
            .since(since)
            .until(since + chrono::Duration::hours(10))
            .group_by([GroupBy::Tenant]),
        Query::new()
            .tenant("acme")
            .model("gpt-4o")
            .group_by([GroupBy::Outcome]),
        Query::new()
            .outcome(Outcome::Error)
            .group_by([GroupBy::Service]),
        // Ranges that take whole days from the daily rows and their edges from the hourly ones.
        Query::new()
            .since(since)
            .until(since + chrono::Duration::hours(61))
            .group_by([GroupBy::Tenant, GroupBy::Operation]),
        Query::new()
            .since(since + chrono::Duration::hours(7))
            .group_by([GroupBy::Operation])
            .bucket(TimeBucket::Day),
        Query::new()
            .until(since + chrono::Duration::hours(50))
            .group_by([GroupBy::Outcome])
            .bucket(TimeBucket::Month),
        Query::new()
            .since(day(since) + chrono::Duration::days(1))
            .until(day(since) + chrono::Duration::days(3))
            .group_by([GroupBy::Model]),
        Query::new()
            .since(day(since) + chrono::Duration::hours(25))
            .until(day(since) + chrono::Duration::hours(47)),
    ]
}

/// The start of the UTC day `at` falls in.
fn day(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    at.with_hour(0).unwrap()
}

/// `count` random records spread over five days (so ranges cover whole days and parts of days).
fn records_over_days(count: usize, seed: u64) -> Vec<UsageRecord> {
    let mut records = random_records(count, seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let base = chrono::Utc::now() - chrono::Duration::days(6);
    for (i, record) in records.iter_mut().enumerate() {
        record.started_at = base + chrono::Duration::microseconds(rng.i64(0..5 * 86_400_000_000));
        // Keys that differ only by a trailing space or by where a separator falls, and
        // refunds (negative costs).
        match i % 50 {
            0 => record.tenant_id = Some("globex ".into()),
            1 => (record.tenant_id, record.model) = (Some("t\u{1f}gpt-4o".into()), None),
            2 => (record.tenant_id, record.model) = (Some("t".into()), Some("gpt-4o\u{1f}".into())),
            3 => record.cost_nano_usd = Some(-rng.i64(0..1_000_000_000_000)),
            _ => {}
        }
    }
    records
}

async fn check(reader: &Reader, records: &[UsageRecord]) {
    for query in queries(records) {
        let rolled = reader.report(&query).await.unwrap();
        assert_eq!(rolled.source, Source::Rollups, "{query:?}");
        let raw = reader.report_from_records(&query).await.unwrap();
        assert_eq!(raw.source, Source::Records);
        assert_eq!(rolled.rows, raw.rows, "{query:?}");
        assert!(!rolled.rows.is_empty(), "{query:?}");
    }
    let all = reader.report(&Query::new()).await.unwrap();
    assert_eq!(all.rows[0].calls, records.len() as u64);
    let errors = records
        .iter()
        .filter(|r| r.outcome == Outcome::Error)
        .count();
    assert_eq!(all.rows[0].errors, errors as u64);
    let cost: i64 = records.iter().filter_map(|r| r.cost_nano_usd).sum();
    assert_eq!(all.rows[0].cost_nano_usd, cost);
    // Percentiles are within the histogram's 3%.
    let mut durations: Vec<u64> = records
        .iter()
        .map(|r| r.duration.as_micros() as u64)
        .collect();
    durations.sort();
    let p95 = durations[(durations.len() * 95).div_ceil(100) - 1] as f64 / 1000.0;
    let got = all.rows[0].p95_ms;
    assert!(
        (got - p95).abs() <= p95 * 0.04 + 0.001,
        "p95 {got} vs {p95}"
    );

    // A tenant's reader sees only its own rows, whatever the query asks.
    let acme = reader
        .for_tenant("acme")
        .report(&Query::new().tenant("globex").group_by([GroupBy::Tenant]))
        .await
        .unwrap();
    assert_eq!(acme.rows.len(), 1);
    assert_eq!(acme.rows[0].group["tenant"], "acme");
    let acme_calls = records
        .iter()
        .filter(|r| r.tenant_id.as_deref() == Some("acme"))
        .count();
    assert_eq!(acme.rows[0].calls, acme_calls as u64);

    // No tenant is not a tenant; a look-alike tenant sees nothing.
    assert!(reader.for_tenant("").report(&Query::new()).await.is_err());
    let lookalike = reader
        .for_tenant("acme ")
        .report(&Query::new())
        .await
        .unwrap();
    assert!(lookalike.rows.is_empty(), "{:?}", lookalike.rows);
    let lookalike = reader
        .for_tenant("acme ")
        .report(&Query::new().distinct_users())
        .await
        .unwrap();
    assert!(lookalike.rows.is_empty(), "{:?}", lookalike.rows);

    // Distinct users need the records.
    let users = reader
        .report(&Query::new().distinct_users().group_by([GroupBy::Tenant]))
        .await
        .unwrap();
    assert_eq!(users.source, Source::Records);
    for row in &users.rows {
        let tenant = &row.group["tenant"];
        let expected: std::collections::HashSet<_> = records
            .iter()
            .filter(|r| r.tenant_id.as_deref().unwrap_or("") == tenant)
            .filter_map(|r| r.user_id)
            .collect();
        assert_eq!(row.distinct_users, Some(expected.len() as u64), "{tenant}");
    }
}

#[tokio::test]
async fn sqlite_reports_agree_and_stay_in_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let url = tests::sqlite_url(dir.path());
    let records = written_messily(SqliteSink::connect(&url).await.unwrap(), 31).await;
    check(&Reader::connect(&url).await.unwrap(), &records).await;
}

#[tokio::test]
async fn postgres_reports_agree_and_stay_in_their_tenant() {
    let Some(url) = postgres_url() else { return };
    let prefix = "pg_report_";
    let config = tests::fresh_postgres(&url, prefix).await;
    let records = written_messily(
        PostgresSink::connect_with(&url, config.clone())
            .await
            .unwrap(),
        37,
    )
    .await;
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
}

#[tokio::test]
async fn mysql_reports_agree_and_stay_in_their_tenant() {
    let Some(url) = mysql_url() else { return };
    let prefix = "my_report_";
    let config = tests::fresh_mysql(&url, prefix).await;
    let records = written_messily(
        MySqlSink::connect_with(&url, config.clone()).await.unwrap(),
        41,
    )
    .await;
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
}

/// Each record's id and latency bucket, as the legacy histograms were keyed.
fn buckets(records: &[UsageRecord]) -> Vec<(String, i64)> {
    records
        .iter()
        .map(|r| {
            let bucket = usage_runtime::rollup::latency_bucket(r.duration.as_micros() as u64);
            (r.id.hyphenated().to_string(), i64::from(bucket))
        })
        .collect()
}

#[tokio::test]
async fn sqlite_rollups_from_before_the_daily_tier_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let url = tests::sqlite_url(dir.path());
    let records = written_messily(SqliteSink::connect(&url).await.unwrap(), 43).await;
    // Back to the earlier shape: hourly rows without histograms, the histograms one row per
    // bucket, no daily rows, the migration not applied.
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "DROP TABLE usage_rollups_daily;
         ALTER TABLE usage_rollups_hourly DROP COLUMN latency;
         ALTER TABLE usage_rollups_hourly DROP COLUMN latency_base;
         DELETE FROM usage_schema_migrations WHERE version = 5;
         CREATE TABLE usage_rollup_latency (
             hour TEXT NOT NULL, service TEXT NOT NULL, operation TEXT NOT NULL,
             tenant_id TEXT NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL,
             bucket INTEGER NOT NULL, calls INTEGER NOT NULL,
             PRIMARY KEY (hour, service, operation, tenant_id, model, outcome, bucket));
         CREATE TABLE buckets (id TEXT PRIMARY KEY, bucket INTEGER NOT NULL);",
    )
    .execute(&mut db)
    .await
    .unwrap();
    for (id, bucket) in buckets(&records) {
        sqlx::query("INSERT INTO buckets VALUES (?, ?)")
            .bind(id)
            .bind(bucket)
            .execute(&mut db)
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "INSERT INTO usage_rollup_latency
         SELECT substr(started_at, 1, 13) || ':00:00Z', service, operation,
                COALESCE(tenant_id, ''), COALESCE(model, ''), outcome, bucket, COUNT(*)
         FROM usage_records JOIN buckets USING (id) GROUP BY 1, 2, 3, 4, 5, 6, 7;
         DROP TABLE buckets;",
    )
    .execute(&mut db)
    .await
    .unwrap();

    SqliteSink::connect(&url).await.unwrap();
    let legacy: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'usage_rollup_latency'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        legacy, 0,
        "the legacy histograms are dropped once folded in"
    );
    check(&Reader::connect(&url).await.unwrap(), &records).await;
}

#[tokio::test]
async fn postgres_rollups_from_before_the_daily_tier_are_upgraded() {
    let Some(url) = postgres_url() else { return };
    let prefix = "pg_upgrade_";
    let config = tests::fresh_postgres(&url, prefix).await;
    let records = written_messily(
        PostgresSink::connect_with(&url, config.clone())
            .await
            .unwrap(),
        47,
    )
    .await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "DROP TABLE {p}usage_rollups_daily;
         ALTER TABLE {p}usage_rollups_hourly DROP COLUMN latency, DROP COLUMN latency_base;
         DELETE FROM {p}usage_schema_migrations WHERE version = 4;
         CREATE TABLE {p}usage_rollup_latency (
             hour timestamptz NOT NULL, service text NOT NULL, operation text NOT NULL,
             tenant_id text NOT NULL, model text NOT NULL, outcome text NOT NULL,
             bucket integer NOT NULL, calls bigint NOT NULL,
             PRIMARY KEY (hour, service, operation, tenant_id, model, outcome, bucket));"
            .replace("{p}", prefix),
    ))
    .execute(&mut db)
    .await
    .unwrap();
    let (ids, buckets): (Vec<String>, Vec<i64>) = buckets(&records).into_iter().unzip();
    sqlx::query(sqlx::AssertSqlSafe(
        "INSERT INTO {p}usage_rollup_latency
         SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', service,
                operation, COALESCE(tenant_id, ''), COALESCE(model, ''), outcome, b.bucket,
                COUNT(*)
         FROM {p}usage_records r JOIN UNNEST($1::uuid[], $2::int4[]) AS b(id, bucket)
              ON r.id = b.id
         GROUP BY 1, 2, 3, 4, 5, 6, 7"
            .replace("{p}", prefix),
    ))
    .bind(
        ids.iter()
            .map(|id| id.parse::<uuid::Uuid>().unwrap())
            .collect::<Vec<_>>(),
    )
    .bind(buckets.iter().map(|b| *b as i32).collect::<Vec<_>>())
    .execute(&mut db)
    .await
    .unwrap();

    PostgresSink::connect_with(&url, config.clone())
        .await
        .unwrap();
    let legacy: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{prefix}usage_rollup_latency"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(!legacy, "the legacy histograms are dropped once folded in");
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
    tests::drop_postgres_tables(&url, prefix).await;
}

#[tokio::test]
async fn mysql_rollups_from_before_the_daily_tier_are_upgraded() {
    let Some(url) = mysql_url() else { return };
    let prefix = "my_upgrade_";
    let config = tests::fresh_mysql(&url, prefix).await;
    let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let records = written_messily(
        MySqlSink::connect_with(&url, config.clone()).await.unwrap(),
        53,
    )
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "DROP TABLE {p}usage_rollups_daily;
         DROP TABLE IF EXISTS {p}buckets;
         ALTER TABLE {p}usage_rollups_hourly DROP COLUMN latency, DROP COLUMN latency_base;
         DELETE FROM {p}usage_schema_migrations WHERE version = 4;
         CREATE TABLE {p}usage_rollup_latency (
             rollup_key BINARY(16) NOT NULL, bucket INT NOT NULL, hour DATETIME NOT NULL,
             service VARCHAR(255) NOT NULL, operation VARCHAR(255) NOT NULL,
             tenant_id VARCHAR(255) NOT NULL, model VARCHAR(255) NOT NULL,
             outcome VARCHAR(16) NOT NULL, calls BIGINT NOT NULL,
             PRIMARY KEY (rollup_key, bucket)
         ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
         CREATE TABLE {p}buckets (id CHAR(36) CHARACTER SET ascii PRIMARY KEY, bucket INT NOT NULL);"
            .replace("{p}", prefix),
    ))
    .execute(&mut db)
    .await
    .unwrap();
    for (id, bucket) in buckets(&records) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {prefix}buckets VALUES (?, ?)"
        )))
        .bind(id)
        .bind(bucket)
        .execute(&mut db)
        .await
        .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "INSERT INTO {p}usage_rollup_latency
         SELECT h.rollup_key, b.bucket, h.hour, h.service, h.operation, h.tenant_id, h.model,
                h.outcome, COUNT(*)
         FROM {p}usage_records r JOIN {p}buckets b ON r.id = b.id
         JOIN {p}usage_rollups_hourly h
           ON h.hour = DATE_FORMAT(r.started_at, '%Y-%m-%d %H:00:00')
          AND BINARY h.service = BINARY r.service AND BINARY h.operation = BINARY r.operation
          AND BINARY h.tenant_id = BINARY COALESCE(r.tenant_id, '')
          AND BINARY h.model = BINARY COALESCE(r.model, '') AND h.outcome = r.outcome
         GROUP BY h.rollup_key, b.bucket, h.hour, h.service, h.operation, h.tenant_id, h.model,
                  h.outcome;
         DROP TABLE {p}buckets;"
            .replace("{p}", prefix),
    ))
    .execute(&mut db)
    .await
    .unwrap();

    MySqlSink::connect_with(&url, config.clone()).await.unwrap();
    let legacy: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(format!("{prefix}usage_rollup_latency"))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        legacy, 0,
        "the legacy histograms are dropped once folded in"
    );
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
}

/// Twenty batches of 1,000 calls of one rollup key in one hour, each batch's durations spread over
/// the whole bucket range: every batch appends kilobytes to the same two histograms, which pass
/// the compaction threshold several times over.
fn one_key_many_buckets() -> Vec<Vec<UsageRecord>> {
    let mut records = random_records(20_000, 59);
    let mut rng = fastrand::Rng::with_seed(59);
    let hour = usage_runtime::report::hour_start(chrono::Utc::now() - chrono::Duration::days(1));
    for record in &mut records {
        record.started_at = hour + chrono::Duration::seconds(rng.i64(0..3600));
        let octave = rng.u32(5..45);
        record.duration =
            std::time::Duration::from_micros((1u64 << octave) + rng.u64(..1 << octave));
        record.tenant_id = Some("acme".into());
        record.operation = "wide".into();
        record.model = None;
        record.outcome = Outcome::Success;
    }
    records.chunks(1000).map(<[_]>::to_vec).collect()
}

/// The calls of `records` in each latency bucket.
fn histogram(records: &[UsageRecord]) -> std::collections::BTreeMap<u32, u64> {
    let mut histogram = std::collections::BTreeMap::new();
    for record in records {
        let bucket = usage_runtime::rollup::latency_bucket(record.duration.as_micros() as u64);
        *histogram.entry(bucket).or_insert(0) += 1;
    }
    histogram
}

/// Writes the batches, then checks both histograms of the key: exact against the records, and
/// compacted along the way (shorter than all the appends together).
async fn histograms_compact(
    sink: &mut impl Sink,
    reader: &Reader,
    stored: impl AsyncFnOnce() -> Vec<Vec<u8>>,
) {
    let batches = one_key_many_buckets();
    let (mut appended, mut largest) = (0, 0);
    for batch in &batches {
        sink.write(batch).await.unwrap();
        let append = usage_runtime::rollup::encode_latency(histogram(batch)).len();
        appended += append;
        largest = largest.max(append);
    }
    let records: Vec<UsageRecord> = batches.concat();
    let expected = histogram(&records);
    let canonical = usage_runtime::rollup::encode_latency(expected.clone()).len();
    let stored = stored().await;
    assert_eq!(stored.len(), 2, "one hourly and one daily row");
    for latency in stored {
        // Rewritten whenever it grew a quarter (+ 64 bytes) past its last canonical size.
        assert!(
            latency.len() < appended && latency.len() <= canonical * 5 / 4 + 64 + largest,
            "compacted: {} bytes stored, {appended} appended, {canonical} canonical",
            latency.len()
        );
        let mut histogram = std::collections::BTreeMap::new();
        usage_runtime::rollup::decode_latency(&latency, |bucket, calls| {
            *histogram.entry(bucket).or_insert(0u64) += calls;
        })
        .unwrap();
        assert_eq!(histogram, expected);
    }
    let query = Query::new().group_by([GroupBy::Operation]);
    let rolled = reader.report(&query).await.unwrap();
    assert_eq!(
        rolled.rows,
        reader.report_from_records(&query).await.unwrap().rows
    );
    assert_eq!(rolled.rows[0].calls, 20_000);
}

#[tokio::test]
async fn sqlite_histograms_are_compacted_and_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let url = tests::sqlite_url(dir.path());
    let mut sink = SqliteSink::connect(&url).await.unwrap();
    let reader = Reader::connect(&url).await.unwrap();
    histograms_compact(&mut sink, &reader, async || {
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(
            "SELECT latency FROM usage_rollups_hourly UNION ALL \
             SELECT latency FROM usage_rollups_daily",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn postgres_histograms_are_compacted_and_stay_exact() {
    let Some(url) = postgres_url() else { return };
    let prefix = "pg_compact_";
    let config = tests::fresh_postgres(&url, prefix).await;
    let mut sink = PostgresSink::connect_with(&url, config.clone())
        .await
        .unwrap();
    let reader = Reader::connect_with(&url, config).await.unwrap();
    histograms_compact(&mut sink, &reader, async || {
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT latency FROM {prefix}usage_rollups_hourly UNION ALL \
             SELECT latency FROM {prefix}usage_rollups_daily"
        )))
        .fetch_all(&mut db)
        .await
        .unwrap()
    })
    .await;
    tests::drop_postgres_tables(&url, prefix).await;
}

#[tokio::test]
async fn mysql_histograms_are_compacted_and_stay_exact() {
    let Some(url) = mysql_url() else { return };
    let prefix = "my_compact_";
    let config = tests::fresh_mysql(&url, prefix).await;
    let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let mut sink = MySqlSink::connect_with(&url, config.clone()).await.unwrap();
    let reader = Reader::connect_with(&url, config).await.unwrap();
    histograms_compact(&mut sink, &reader, async || {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT latency FROM {prefix}usage_rollups_hourly UNION ALL \
             SELECT latency FROM {prefix}usage_rollups_daily"
        )))
        .fetch_all(&mut db)
        .await
        .unwrap()
    })
    .await;
}

/// Four writers at once, each on its own thread with its own connection, their records
/// interleaved over the same rollup rows (with redeliveries and replays).
fn write_concurrently<S: Sink + 'static>(
    records: &[UsageRecord],
    connect: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = S>>>
        + Send
        + Clone
        + 'static,
) {
    let writers: Vec<_> = (0..4)
        .map(|part| {
            let mine: Vec<UsageRecord> = records
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 4 == part)
                .map(|(_, r)| r.clone())
                .collect();
            let connect = connect.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        let mut sink = connect().await;
                        write_messily(&mut sink, &mine).await;
                    })
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_keep_the_rollups_exact() {
    let records = records_over_days(4000, 67);
    // SQLite: one writer at a time, by its lock.
    let dir = tempfile::tempdir().unwrap();
    let url = tests::sqlite_url(dir.path());
    SqliteSink::connect(&url).await.unwrap();
    let sqlite = url.clone();
    tokio::task::block_in_place(|| {
        write_concurrently(&records, move || {
            let url = sqlite.clone();
            Box::pin(async move { SqliteSink::connect(&url).await.unwrap() })
        })
    });
    check(&Reader::connect(&url).await.unwrap(), &records).await;

    if let Some(url) = postgres_url() {
        let prefix = "pg_concurrent_";
        let config = tests::fresh_postgres(&url, prefix).await;
        PostgresSink::connect_with(&url, config.clone())
            .await
            .unwrap();
        let (u, c) = (url.clone(), config.clone());
        tokio::task::block_in_place(|| {
            write_concurrently(&records, move || {
                let (url, config) = (u.clone(), c.clone());
                Box::pin(async move { PostgresSink::connect_with(&url, config).await.unwrap() })
            })
        });
        check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
        tests::drop_postgres_tables(&url, prefix).await;
    }

    if let Some(url) = mysql_url() {
        let prefix = "my_concurrent_";
        let config = tests::fresh_mysql(&url, prefix).await;
        MySqlSink::connect_with(&url, config.clone()).await.unwrap();
        let (u, c) = (url.clone(), config.clone());
        tokio::task::block_in_place(|| {
            write_concurrently(&records, move || {
                let (url, config) = (u.clone(), c.clone());
                Box::pin(async move { MySqlSink::connect_with(&url, config).await.unwrap() })
            })
        });
        check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
    }
    eprintln!(
        "batches written again after a transient failure: {}",
        RETRIED.load(std::sync::atomic::Ordering::Relaxed)
    );
}
