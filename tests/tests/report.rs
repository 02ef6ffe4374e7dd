//! Reports on SQLite, PostgreSQL and MySQL: the rollups and the records give the same answer
//! (duplicates and replays included), a tenant's reader sees only its own rows.

use chrono::Timelike;
use sqlx::Connection;
use tests::{mysql_url, postgres_url, random_records};
use usage_runtime::report::{Dimension, Query, Reader, Source, TimeBucket};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqlConfig, SqliteSink};
use usage_runtime::{Outcome, UsageRecord};

/// Writes `records` in random batches, with redeliveries and replays.
async fn write_messily(sink: &mut impl Sink, records: &[UsageRecord]) {
    let mut rng = fastrand::Rng::with_seed(21);
    let mut at = 0;
    while at < records.len() {
        let end = (at + rng.usize(1..300)).min(records.len());
        sink.write(&records[at..end]).await.unwrap();
        if rng.bool() {
            sink.write(&records[at..end]).await.unwrap();
        }
        if at > 0 && rng.u8(..5) == 0 {
            sink.write(&records[rng.usize(..at)..end]).await.unwrap();
        }
        at = end;
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
            .group_by([Dimension::Tenant, Dimension::Operation])
            .bucket(TimeBucket::Month),
        Query::new()
            .group_by([Dimension::Model, Dimension::Outcome])
            .bucket(TimeBucket::Day),
        Query::new()
            .group_by([Dimension::Operation])
            .bucket(TimeBucket::Hour),
        Query::new()
            .since(since)
            .until(since + chrono::Duration::hours(10))
            .group_by([Dimension::Tenant]),
        Query::new()
            .tenant("acme")
            .model("gpt-4o")
            .group_by([Dimension::Outcome]),
        Query::new()
            .outcome(Outcome::Error)
            .group_by([Dimension::Service]),
    ]
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
        .report(&Query::new().tenant("globex").group_by([Dimension::Tenant]))
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
        .report(&Query::new().distinct_users().group_by([Dimension::Tenant]))
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
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let records = random_records(3000, 31);
    let mut sink = SqliteSink::connect(&url).await.unwrap();
    write_messily(&mut sink, &records).await;
    check(&Reader::connect(&url).await.unwrap(), &records).await;
}

#[tokio::test]
async fn postgres_reports_agree_and_stay_in_their_tenant() {
    let Some(url) = postgres_url() else { return };
    let prefix = "pg_report_";
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    for table in [
        "usage_records",
        "usage_schema_migrations",
        "usage_rollups_hourly",
        "usage_rollup_latency",
        "usage_operations",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {prefix}{table}"
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let config = SqlConfig::new().table_prefix(prefix).unwrap();
    let records = random_records(3000, 37);
    let mut sink = PostgresSink::connect_with(&url, config.clone())
        .await
        .unwrap();
    write_messily(&mut sink, &records).await;
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
}

#[tokio::test]
async fn mysql_reports_agree_and_stay_in_their_tenant() {
    let Some(url) = mysql_url() else { return };
    let prefix = "my_report_";
    let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
    for table in [
        "usage_records",
        "usage_schema_migrations",
        "usage_rollups_hourly",
        "usage_rollup_latency",
        "usage_operations",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {prefix}{table}"
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let config = SqlConfig::new().table_prefix(prefix).unwrap();
    let records = random_records(3000, 41);
    let mut sink = MySqlSink::connect_with(&url, config.clone()).await.unwrap();
    write_messily(&mut sink, &records).await;
    check(&Reader::connect_with(&url, config).await.unwrap(), &records).await;
}
