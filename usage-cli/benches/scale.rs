//! Records per second end to end, producers -> NATS JetStream -> `usage ingest` workers ->
//! PostgreSQL, with one worker and with two, in one run.
//!
//! ```sh
//! cargo bench -p usage-cli --bench scale
//! USAGE_BENCH_RECORDS=50000 cargo bench -p usage-cli --bench scale
//! ```
//!
//! Two `usage-load` producers publish half the records each while the workers (one consumer)
//! write them (batches of the default size); the clock runs from the producers' start until
//! PostgreSQL has committed every record (the daily rollups' calls, committed with the records),
//! then the records are counted. Everything shares this machine: NATS, PostgreSQL, producers and workers.

#[path = "../../usage-runtime/benches/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Row};
use usage_runtime::sink::{NatsConfig, NatsSink, PostgresSink, SqlConfig};

async fn rows(postgres: &str, table: &str) -> i64 {
    let mut db = PgConnection::connect(postgres).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0)
}

async fn run(nats: &str, postgres: &str, workers: usize, records: u64) -> f64 {
    let tag = format!("w{workers}_{}", fastrand::u32(..));
    let stream = format!("SCALE_{tag}");
    let subjects = format!("scale.{tag}");
    let prefix = format!("scale_{tag}_");
    NatsSink::connect_with(
        nats,
        NatsConfig::new().stream(&stream).subject_prefix(&subjects),
    )
    .await
    .unwrap();
    PostgresSink::connect_with(postgres, SqlConfig::new().table_prefix(&prefix).unwrap())
        .await
        .unwrap();
    let spawn_worker = || -> Child {
        Command::new(env!("CARGO_BIN_EXE_usage"))
            .args([
                "ingest",
                "--nats",
                nats,
                "--stream",
                &stream,
                "--consumer",
                "bench",
            ])
            .args(["--database-url", postgres, "--table-prefix", &prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut running: Vec<Child> = (0..workers).map(|_| spawn_worker()).collect();
    let started = Instant::now();
    let producers: Vec<Child> = (0..2)
        .map(|n| {
            Command::new(env!("CARGO_BIN_EXE_usage-load"))
                .args([
                    "--nats",
                    nats,
                    "--stream",
                    &stream,
                    "--subject-prefix",
                    &subjects,
                ])
                .args(["--service", &format!("producer-{n}")])
                .args(["--calls", &(records / 2).to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // The daily rollups commit with their records and are a handful of rows: summing their calls
    // counts what is committed without scanning the records table every 50 ms.
    let mut db = PgConnection::connect(postgres).await.unwrap();
    let committed =
        format!("SELECT COALESCE(SUM(calls), 0)::int8 FROM {prefix}usage_rollups_daily");
    while sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(committed.clone()))
        .fetch_one(&mut db)
        .await
        .unwrap()
        < records as i64
    {
        assert!(started.elapsed() < Duration::from_secs(600), "stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = records as f64 / started.elapsed().as_secs_f64();
    let table = format!("{prefix}usage_records");
    assert_eq!(rows(postgres, &table).await, records as i64);
    for mut producer in producers {
        assert!(producer.wait().unwrap().success());
    }
    for worker in &mut running {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let context = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let _ = context.delete_stream(&stream).await;
    tests::drop_postgres_tables(postgres, &prefix).await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !common::benching() {
        return;
    }
    let records: u64 = common::env_number("USAGE_BENCH_RECORDS", 200_000);
    let nats =
        std::env::var("USAGE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let postgres = std::env::var("USAGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    println!("{records} records from 2 producers, end to end into PostgreSQL:");
    let one = run(&nats, &postgres, 1, records).await;
    println!("  1 worker   {one:>9.0} records/s");
    let two = run(&nats, &postgres, 2, records).await;
    println!(
        "  2 workers  {two:>9.0} records/s   ({:.2}x one worker)",
        two / one
    );
}
