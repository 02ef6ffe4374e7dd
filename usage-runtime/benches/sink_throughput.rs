//! Records per second into each SQL database, in one run:
//! - `tracked`: end to end, `#[track_usage]` calls through the tracker (queue, worker, the real
//!   sink with its rollups) until every record is committed, the row count checked at the end;
//! - `batched`: the sink alone writing ready records in batches of the default size, over its
//!   default write connections, and again over one connection;
//! - `naive`: one autocommitted `INSERT` per record, as hand-written trackers did;
//! - `bulk`: the bulk-load bound for the same rows into the same table (PostgreSQL `COPY`; SQLite
//!   one prepared `INSERT` per row in one transaction, through rusqlite), with no rollups to
//!   maintain.
//!
//! ```sh
//! cargo bench -p usage-runtime --features postgres,mysql --bench sink_throughput
//! USAGE_BENCH_RECORDS=50000 cargo bench -p usage-runtime --features postgres,mysql --bench sink_throughput
//! ```
//!
//! Uses `USAGE_TEST_POSTGRES_URL` / `USAGE_TEST_MYSQL_URL` (defaults as in the tests) and skips a
//! database that does not answer. The naive run writes a tenth of the records (it is that slow);
//! rates are compared, not totals.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqlConfig, SqliteSink};
use usage_runtime::{tracker::DEFAULT_BATCH_SIZE, UsageRecord};

const PREFIX: &str = "bench_";
const NAIVE_PREFIX: &str = "bench_naive_";
const ONE_PREFIX: &str = "bench_one_";

/// Drops every table the bench's sinks make, so each run starts empty.
fn drop_tables() -> String {
    let tables: Vec<String> = [
        PREFIX,
        NAIVE_PREFIX,
        ONE_PREFIX,
        "bench_tracked_",
        "bench_bulk_",
    ]
    .iter()
    .flat_map(|prefix| common::SINK_TABLES.map(|table| format!("{prefix}{table}")))
    .collect();
    format!("DROP TABLE IF EXISTS {}", tables.join(", "))
}

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

#[usage_runtime::track_usage(operation = "bench.chat", tenant = tenant, user = "user_1", fields(model = "gpt-4o"))]
fn chat(tenant: &str, n: usize) -> Result<usize, String> {
    if n.is_multiple_of(10) {
        Err("rate limited".into())
    } else {
        Ok(n)
    }
}

fn records(count: usize) -> Vec<UsageRecord> {
    let sink = usage_runtime::sink::MemorySink::new();
    let guard = usage_runtime::Tracker::builder()
        .sink(sink.clone())
        .queue_capacity(count.max(DEFAULT_BATCH_SIZE))
        .install()
        .unwrap();
    for n in 0..count {
        let _ = chat(TENANTS[n % TENANTS.len()], n);
    }
    guard.flush_blocking().unwrap();
    drop(guard);
    sink.records()
}

fn batch_size() -> usize {
    common::env_number("USAGE_BENCH_BATCH", DEFAULT_BATCH_SIZE)
}

async fn batched(sink: &mut impl Sink, records: &[UsageRecord]) -> f64 {
    let started = Instant::now();
    for batch in records.chunks(batch_size()) {
        sink.write(batch).await.unwrap();
    }
    records.len() as f64 / started.elapsed().as_secs_f64()
}

/// Tracked calls per second, end to end: `count` calls through an installed tracker writing to
/// `sink`, until every record is committed. Callers wait for room rather than drop a record.
async fn tracked(sink: impl Sink, count: usize) -> f64 {
    let guard = usage_runtime::Tracker::builder()
        .sink(sink)
        .overflow(usage_runtime::tracker::Overflow::Block(
            std::time::Duration::from_secs(60),
        ))
        .install()
        .unwrap();
    let started = Instant::now();
    for n in 0..count {
        let _ = chat(TENANTS[n % TENANTS.len()], n);
    }
    guard.flush().await.unwrap();
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let health = guard.health();
    assert_eq!(health.written, count as u64, "{health:?}");
    guard.shutdown().await.unwrap();
    rate
}

/// The rows in `table`, to check that every record arrived once.
async fn rows<C: Connection>(connection: &mut C, table: &str) -> i64
where
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    for<'r> i64: sqlx::Decode<'r, C::Database> + sqlx::Type<C::Database>,
    usize: sqlx::ColumnIndex<<C::Database as sqlx::Database>::Row>,
{
    use sqlx::Row;
    sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut *connection)
        .await
        .unwrap()
        .get::<i64, _>(0)
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
            .bind(record.operation.to_string())
            .bind(record.function.to_string())
            .bind(record.service.to_string())
            .bind(record.instance.to_string())
            .bind(
                record
                    .started_at
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string(),
            )
            .bind(record.duration.as_micros() as i64)
            .bind(record.outcome.as_str().to_owned())
            .bind(record.error_message.clone())
            .bind(record.tenant_id.as_deref().map(str::to_owned))
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

fn report(name: &str, tracked: f64, batched: f64, naive: f64, bulk: Option<f64>) {
    println!(
        "{name:<10} tracked {tracked:>8.0}/s  batched {batched:>8.0}/s  naive {naive:>7.0}/s  \
         tracked/naive {:>5.1}x  batched/naive {:>5.1}x",
        tracked / naive,
        batched / naive
    );
    if let Some(bulk) = bulk {
        println!(
            "{:<10} bulk bound {bulk:>8.0}/s  tracked/bulk {:>5.2}  batched/bulk {:>5.2}",
            "",
            tracked / bulk,
            batched / bulk
        );
    }
}

/// The sink alone with every batch in one transaction on one connection, against the default.
fn one_connection(rate: f64, one: f64) {
    println!(
        "{:<10} batched over 1 connection {one:>8.0}/s  default/1 connection {:>5.2}x",
        "",
        rate / one
    );
}

/// A text field for PostgreSQL's `COPY ... FROM STDIN` text format.
fn copy_text(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(text) => {
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// The bulk-load bound on PostgreSQL: `COPY` of the same rows, in chunks of 10,000 rows.
async fn postgres_copy(
    connection: &mut sqlx::PgConnection,
    table: &str,
    records: &[UsageRecord],
) -> f64 {
    let started = Instant::now();
    for chunk in records.chunks(10_000) {
        let mut data = String::with_capacity(chunk.len() * 400);
        for record in chunk {
            let fields = [
                Some(record.id.to_string()),
                Some(record.operation.to_string()),
                Some(record.function.to_string()),
                Some(record.service.to_string()),
                Some(record.instance.to_string()),
                Some(record.started_at.to_rfc3339()),
                Some(record.duration.as_micros().to_string()),
                Some(record.outcome.as_str().to_owned()),
                record.error_type.clone(),
                record.error_message.clone(),
                record.tenant_id.as_deref().map(str::to_owned),
                record.user_id.map(|id| id.to_string()),
                record.session_id.map(|id| id.to_string()),
                Some(serde_json::Value::Object(record.attributes.clone()).to_string()),
                record.model.as_deref().map(str::to_owned),
                record.input_tokens.map(|n| n.to_string()),
                record.output_tokens.map(|n| n.to_string()),
                record.cached_input_tokens.map(|n| n.to_string()),
                record.cost_nano_usd.map(|n| n.to_string()),
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    data.push('\t');
                }
                copy_text(&mut data, field.as_deref());
            }
            data.push('\n');
        }
        let mut copy = connection
            .copy_in_raw(&format!(
                "COPY {table} (id, operation, function, service, instance, started_at, \
                 duration_us, outcome, error_type, error_message, tenant_id, user_id, session_id, \
                 attributes, model, input_tokens, output_tokens, cached_input_tokens, \
                 cost_nano_usd) FROM STDIN"
            ))
            .await
            .unwrap();
        copy.send(data.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
    records.len() as f64 / started.elapsed().as_secs_f64()
}

/// The bulk-load bound on SQLite: one prepared `INSERT` per row, all in one transaction.
/// The bulk-load bound: one prepared `INSERT` per row in one transaction, through SQLite's C API
/// directly (rusqlite, the same bundled SQLite and pragmas as the sink). sqlx would add a round
/// trip to its SQLite thread per statement and measure that instead.
fn sqlite_one_transaction(path: &std::path::Path, records: &[UsageRecord]) -> f64 {
    let mut connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    let started = Instant::now();
    let tx = connection.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO usage_records (id, operation, function, service, instance, \
                 started_at, duration_us, outcome, error_type, error_message, tenant_id, user_id, \
                 session_id, attributes, model, input_tokens, output_tokens, \
                 cached_input_tokens, cost_nano_usd) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .unwrap();
        for record in records {
            insert
                .execute(rusqlite::params![
                    record.id.to_string(),
                    record.operation,
                    record.function,
                    record.service,
                    record.instance,
                    record
                        .started_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    record.duration.as_micros() as i64,
                    record.outcome.as_str(),
                    record.error_type,
                    record.error_message,
                    record.tenant_id,
                    record.user_id.map(|id| id.to_string()),
                    record.session_id.map(|id| id.to_string()),
                    serde_json::to_string(&record.attributes).unwrap(),
                    record.model,
                    record.input_tokens.map(|n| n as i64),
                    record.output_tokens.map(|n| n as i64),
                    record.cached_input_tokens.map(|n| n as i64),
                    record.cost_nano_usd,
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    records.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = common::env_number("USAGE_BENCH_RECORDS", 200_000);
    if !common::benching() {
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
    let tracked_url = format!("sqlite://{}", dir.join("tracked.db").display());
    let tracked_rate = tracked(SqliteSink::connect(&tracked_url).await.unwrap(), all.len()).await;
    let mut check = sqlx::SqliteConnection::connect(&tracked_url).await.unwrap();
    assert_eq!(rows(&mut check, "usage_records").await, all.len() as i64);
    let bulk_url = format!("sqlite://{}", dir.join("bulk.db").display());
    SqliteSink::connect(&bulk_url).await.unwrap();
    let bulk_rate = sqlite_one_transaction(&dir.join("bulk.db"), all);
    let mut bulk = sqlx::SqliteConnection::connect(&bulk_url).await.unwrap();
    assert_eq!(rows(&mut bulk, "usage_records").await, all.len() as i64);
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
    report("SQLite", tracked_rate, rate, naive_rate, Some(bulk_rate));
    std::fs::remove_dir_all(&dir).ok();
}

async fn postgres(all: &[UsageRecord], few: &[UsageRecord]) {
    let url = std::env::var("USAGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let connect = async |url: &str, config| PostgresSink::connect_with(url, config).await.unwrap();
    let bulk = async |connection: &mut sqlx::PgConnection| {
        connect(&url, prefixed("bench_bulk_")).await;
        let bulk_rate = postgres_copy(connection, "bench_bulk_usage_records", all).await;
        assert_eq!(
            rows(connection, "bench_bulk_usage_records").await,
            all.len() as i64
        );
        Some(bulk_rate)
    };
    server(
        "PostgreSQL",
        &url,
        all,
        few,
        connect,
        bulk,
        "VALUES ($1::uuid, $2, $3, $4, $5, $6::timestamptz, $7, $8, $9, $10, $11::uuid, \
         $12::jsonb)",
    )
    .await;
}

async fn mysql(all: &[UsageRecord], few: &[UsageRecord]) {
    let url = std::env::var("USAGE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    server(
        "MySQL",
        &url,
        all,
        few,
        async |url: &str, config| MySqlSink::connect_with(url, config).await.unwrap(),
        async |_: &mut sqlx::MySqlConnection| None,
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .await;
}

fn prefixed(prefix: &str) -> SqlConfig {
    SqlConfig::new().table_prefix(prefix).unwrap()
}

/// The runs on the database server at `url` with `all` records (`few` for the naive writer):
/// `connect` makes its sink (and so its tables), `bulk` measures its bulk-load bound if it has
/// one, and `values` is the naive `INSERT`'s `VALUES` clause in its placeholders.
async fn server<S: Sink, C: Connection>(
    name: &str,
    url: &str,
    all: &[UsageRecord],
    few: &[UsageRecord],
    connect: impl AsyncFn(&str, SqlConfig) -> S,
    bulk: impl AsyncFnOnce(&mut C) -> Option<f64>,
    values: &str,
) where
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    for<'r> i64: sqlx::Decode<'r, C::Database> + sqlx::Type<C::Database>,
    usize: sqlx::ColumnIndex<<C::Database as sqlx::Database>::Row>,
    for<'q> String: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
    for<'q> i64: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
    for<'q> Option<String>: sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
{
    if !reachable(url) {
        println!("{name} skipped: nothing answers at {url}");
        return;
    }
    let mut connection = C::connect(url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(drop_tables()))
        .execute(&mut connection)
        .await
        .unwrap();
    let tracked_sink = connect(url, prefixed("bench_tracked_")).await;
    let tracked_rate = tracked(tracked_sink, all.len()).await;
    assert_eq!(
        rows(&mut connection, "bench_tracked_usage_records").await,
        all.len() as i64
    );
    let bulk_rate = bulk(&mut connection).await;
    // The naive writer gets the very same table (columns and indexes) to write into.
    connect(url, prefixed(NAIVE_PREFIX)).await;
    let rate = batched(&mut connect(url, prefixed(PREFIX)).await, all).await;
    let one = prefixed(ONE_PREFIX).write_connections(1).unwrap();
    let one_rate = batched(&mut connect(url, one).await, all).await;
    let naive_rate = naive(
        &mut connection,
        &format!(
            "INSERT INTO bench_naive_usage_records (id, operation, function, service, instance, \
             started_at, duration_us, outcome, error_message, tenant_id, user_id, attributes) \
             {values}"
        ),
        few,
    )
    .await;
    report(name, tracked_rate, rate, naive_rate, bulk_rate);
    one_connection(rate, one_rate);
}
