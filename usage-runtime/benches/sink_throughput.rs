//! Records per second through each SQL sink with the default batch size, against the naive
//! approach of hand-written trackers (one `INSERT` statement per record, autocommit), in one run.
//!
//! ```sh
//! cargo bench -p usage-runtime --features postgres,mysql --bench sink_throughput
//! USAGE_BENCH_RECORDS=50000 cargo bench -p usage-runtime --features postgres,mysql --bench sink_throughput
//! ```
//!
//! Uses `USAGE_TEST_POSTGRES_URL` / `USAGE_TEST_MYSQL_URL` (defaults as in the tests) and skips a
//! database that does not answer. The naive run writes a tenth of the records (it is that slow);
//! rates are compared, not totals.

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqlConfig, SqliteSink};
use usage_runtime::{UsageRecord, DEFAULT_BATCH_SIZE};

const PREFIX: &str = "bench_";
const NAIVE_PREFIX: &str = "bench_naive_";

fn records(count: usize) -> Vec<UsageRecord> {
    #[usage_runtime::track_usage(operation = "bench.chat", tenant = tenant, user = "user_1", fields(model = "gpt-4o"))]
    fn chat(tenant: &str, n: usize) -> Result<usize, String> {
        if n.is_multiple_of(10) {
            Err("rate limited".into())
        } else {
            Ok(n)
        }
    }
    let sink = usage_runtime::sink::MemorySink::new();
    let guard = usage_runtime::Tracker::builder()
        .sink(sink.clone())
        .queue_capacity(count.max(DEFAULT_BATCH_SIZE))
        .install()
        .unwrap();
    let tenants = ["acme", "globex", "initech", "umbrella"];
    for n in 0..count {
        let _ = chat(tenants[n % tenants.len()], n);
    }
    guard.flush_blocking().unwrap();
    drop(guard);
    sink.records()
}

fn batch_size() -> usize {
    std::env::var("USAGE_BENCH_BATCH")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_BATCH_SIZE)
}

async fn batched(sink: &mut impl Sink, records: &[UsageRecord]) -> f64 {
    let started = Instant::now();
    for batch in records.chunks(batch_size()) {
        sink.write(batch).await.unwrap();
    }
    records.len() as f64 / started.elapsed().as_secs_f64()
}

/// One autocommitted `INSERT` per record, as the hand-written trackers did.
async fn naive<C: Connection>(connection: &mut C, statement: &str, records: &[UsageRecord]) -> f64
where
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    for<'q> String: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
    for<'q> i64: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
    for<'q> Option<String>: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
{
    let started = Instant::now();
    for record in records {
        sqlx::query(AssertSqlSafe(statement.to_owned()))
            .bind(record.id.to_string())
            .bind(record.operation.clone())
            .bind(record.function.clone())
            .bind(record.service.clone())
            .bind(record.instance.clone())
            .bind(
                record
                    .started_at
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string(),
            )
            .bind(record.duration.as_micros() as i64)
            .bind(record.outcome.as_str().to_owned())
            .bind(record.error_message.clone())
            .bind(record.tenant_id.clone())
            .bind(record.user_id.map(|id| id.to_string()))
            .bind(serde_json::Value::Object(record.attributes.clone()).to_string())
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    records.len() as f64 / started.elapsed().as_secs_f64()
}

/// `USAGE_BENCH_ONLY=postgres` (or `sqlite`, `mysql`) runs one database.
fn selected(name: &str) -> bool {
    std::env::var("USAGE_BENCH_ONLY").map_or(true, |only| only.eq_ignore_ascii_case(name))
}

fn reachable(url: &str) -> bool {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = authority.split('/').next().unwrap_or(authority);
    std::net::TcpStream::connect(host_port).is_ok()
}

fn report(name: &str, batched: f64, naive: f64) {
    println!(
        "{name:<10} batched {batched:>10.0} records/s   one INSERT per record {naive:>8.0} records/s   ratio {:>6.1}x",
        batched / naive
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = std::env::var("USAGE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run only on bench.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let all = records(count);
    let few = &all[..count / 10];
    println!(
        "{count} records, batches of {}; naive on {} records",
        batch_size(),
        few.len()
    );

    if selected("sqlite") {
        sqlite(&all, few).await;
    }
    if selected("postgres") {
        postgres(&all, few).await;
    }
    if selected("mysql") {
        mysql(&all, few).await;
    }
}

async fn sqlite(all: &[UsageRecord], few: &[UsageRecord]) {
    let dir = std::env::temp_dir().join(format!("usage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let mut sqlite = SqliteSink::connect(&url).await.unwrap();
    let rate = batched(&mut sqlite, all).await;
    let naive_url = format!("sqlite://{}", dir.join("naive.db").display());
    SqliteSink::connect(&naive_url).await.unwrap();
    let mut connection = sqlx::SqliteConnection::connect(&naive_url).await.unwrap();
    sqlx::raw_sql("PRAGMA synchronous = NORMAL")
        .execute(&mut connection)
        .await
        .unwrap();
    let naive_rate = naive(
        &mut connection,
        "INSERT INTO usage_records (id, operation, function, service, instance, started_at, \
         duration_us, outcome, error_message, tenant_id, user_id, attributes) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        few,
    )
    .await;
    report("SQLite", rate, naive_rate);
    std::fs::remove_dir_all(&dir).ok();
}

async fn postgres(all: &[UsageRecord], few: &[UsageRecord]) {
    let pg = std::env::var("USAGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if reachable(&pg) {
        let mut connection = sqlx::PgConnection::connect(&pg).await.unwrap();
        sqlx::raw_sql(
            "DROP TABLE IF EXISTS bench_usage_records, bench_usage_schema_migrations,
               bench_naive_usage_records, bench_naive_usage_schema_migrations",
        )
        .execute(&mut connection)
        .await
        .unwrap();
        // The naive writer gets the very same table (columns and indexes) to write into.
        let naive_config = SqlConfig::new().table_prefix(NAIVE_PREFIX).unwrap();
        PostgresSink::connect_with(&pg, naive_config).await.unwrap();
        let config = SqlConfig::new().table_prefix(PREFIX).unwrap();
        let mut sink = PostgresSink::connect_with(&pg, config).await.unwrap();
        let rate = batched(&mut sink, all).await;
        let naive_rate = naive(
            &mut connection,
            "INSERT INTO bench_naive_usage_records (id, operation, function, service, instance, \
             started_at, duration_us, outcome, error_message, tenant_id, user_id, attributes) \
             VALUES ($1::uuid, $2, $3, $4, $5, $6::timestamptz, $7, $8, $9, $10, $11::uuid, \
             $12::jsonb)",
            few,
        )
        .await;
        report("PostgreSQL", rate, naive_rate);
    } else {
        println!("PostgreSQL skipped: nothing answers at {pg}");
    }
}

async fn mysql(all: &[UsageRecord], few: &[UsageRecord]) {
    let my = std::env::var("USAGE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    if reachable(&my) {
        let mut connection = sqlx::MySqlConnection::connect(&my).await.unwrap();
        sqlx::raw_sql(
            "DROP TABLE IF EXISTS bench_usage_records, bench_usage_schema_migrations,
               bench_naive_usage_records, bench_naive_usage_schema_migrations",
        )
        .execute(&mut connection)
        .await
        .unwrap();
        let naive_config = SqlConfig::new().table_prefix(NAIVE_PREFIX).unwrap();
        MySqlSink::connect_with(&my, naive_config).await.unwrap();
        let config = SqlConfig::new().table_prefix(PREFIX).unwrap();
        let mut sink = MySqlSink::connect_with(&my, config).await.unwrap();
        let rate = batched(&mut sink, all).await;
        let naive_rate = naive(
            &mut connection,
            "INSERT INTO bench_naive_usage_records (id, operation, function, service, instance, \
             started_at, duration_us, outcome, error_message, tenant_id, user_id, attributes) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            few,
        )
        .await;
        report("MySQL", rate, naive_rate);
    } else {
        println!("MySQL skipped: nothing answers at {my}");
    }
}
