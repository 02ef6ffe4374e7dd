//! `usage ingest` workers between real NATS JetStream and real PostgreSQL.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Row};
use usage_runtime::sink::{NatsConfig, NatsSink, PostgresSink, Sink, SqlConfig};

/// A process of the test's: killed when dropped, so a failing test leaves none running.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A test's stream and tables, removed when dropped (after its processes, declared later).
struct Setup {
    nats: String,
    postgres: String,
    stream: String,
    subject_prefix: String,
    table_prefix: String,
}

async fn setup(name: &str) -> Option<Setup> {
    let (nats, postgres) = (tests::nats_url()?, tests::postgres_url()?);
    let tag = format!("{name}_{}", fastrand::u32(..));
    let setup = Setup {
        stream: format!("INGEST_{tag}"),
        subject_prefix: format!("ingest.{tag}"),
        table_prefix: format!("ingest_{tag}_"),
        nats,
        postgres,
    };
    // The stream (made by a producer's sink) and the tables (by the workers' migrations).
    NatsSink::connect_with(&setup.nats, setup.nats_config())
        .await
        .unwrap();
    PostgresSink::connect_with(&setup.postgres, setup.sql_config())
        .await
        .unwrap();
    Some(setup)
}

impl Setup {
    fn nats_config(&self) -> NatsConfig {
        NatsConfig::new()
            .stream(&self.stream)
            .subject_prefix(&self.subject_prefix)
    }

    fn sql_config(&self) -> SqlConfig {
        SqlConfig::new().table_prefix(&self.table_prefix).unwrap()
    }

    fn worker(&self, extra: &[&str]) -> Running {
        self.worker_logging(extra, Stdio::null())
    }

    /// `usage ingest` on this stream and these tables, as consumer `writers`.
    fn ingest(&self) -> Command {
        self.ingest_as("writers")
    }

    /// `usage ingest` on this stream and these tables, as consumer `consumer`.
    fn ingest_as(&self, consumer: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_usage"));
        command
            .args(["ingest", "--nats", &self.nats, "--stream", &self.stream])
            .args(["--consumer", consumer, "--database-url", &self.postgres])
            .args(["--table-prefix", &self.table_prefix]);
        command
    }

    fn worker_logging(&self, extra: &[&str], log: impl Into<Stdio>) -> Running {
        Running(
            self.ingest()
                .args(if extra.contains(&"--ack-wait") {
                    &[][..]
                } else {
                    &["--ack-wait", "3s"][..]
                })
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn producer(&self, service: &str, calls: u64) -> Running {
        Running(
            Command::new(env!("CARGO_BIN_EXE_usage-load"))
                .args(["--nats", &self.nats, "--stream", &self.stream])
                .args([
                    "--subject-prefix",
                    &self.subject_prefix,
                    "--service",
                    service,
                ])
                .args(["--calls", &calls.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Calls counted in the hourly rollups: a record written twice would count twice here.
    async fn rolled_up(&self) -> i64 {
        let mut db = PgConnection::connect(&self.postgres).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COALESCE(SUM(calls), 0)::BIGINT FROM {}usage_rollups_hourly",
            self.table_prefix
        )))
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0)
    }

    /// `(rows, distinct ids)` in the records table.
    async fn rows(&self) -> (i64, i64) {
        let mut db = PgConnection::connect(&self.postgres).await.unwrap();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM {}usage_records",
            self.table_prefix
        )))
        .fetch_one(&mut db)
        .await
        .unwrap();
        (row.get(0), row.get(1))
    }

    async fn wait_for_rows(&self, at_least: i64, within: Duration) -> (i64, i64) {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.rows().await;
            if rows.0 >= at_least {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "only {rows:?} of {at_least} rows"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `workers` workers are connected, migrated and pulling.
    async fn wait_for_pullers(&self, workers: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .consumer_info()
            .await
            .map_or(0, |info| info.num_waiting)
            < workers
        {
            assert!(Instant::now() < deadline, "the workers never pulled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Locks the records table, in a transaction left open on the returned connection: writes
    /// wait until it runs `COMMIT`.
    async fn lock_records(&self) -> PgConnection {
        let mut lock = PgConnection::connect(&self.postgres).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE {}usage_records IN ACCESS EXCLUSIVE MODE",
            self.table_prefix
        )))
        .execute(&mut lock)
        .await
        .unwrap();
        lock
    }

    /// Publishes `payload`, which is not a record, on the stream's subjects.
    async fn publish_not_a_record(&self, payload: &'static str) {
        let client = async_nats::connect(&self.nats).await.unwrap();
        async_nats::jetstream::new(client)
            .publish(format!("{}.intruder", self.subject_prefix), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The workers' consumer, once one of them has made it.
    async fn consumer_info(&self) -> Option<async_nats::jetstream::consumer::Info> {
        self.consumer_named("writers").await
    }

    /// The consumer `name`, once a worker has made it.
    async fn consumer_named(&self, name: &str) -> Option<async_nats::jetstream::consumer::Info> {
        let client = async_nats::connect(&self.nats).await.ok()?;
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            async_nats::jetstream::new(client)
                .get_stream(&self.stream)
                .await
                .ok()?
                .get_consumer(name)
                .await
                .ok()?;
        Some(consumer.cached_info().clone())
    }

    async fn clean(&self) {
        if let Ok(client) = async_nats::connect(&self.nats).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&self.stream)
                .await;
        }
        tests::drop_postgres_tables(&self.postgres, &self.table_prefix).await;
    }
}

impl Drop for Setup {
    /// On a runtime of its own (a test's runtime may be the one dropping it).
    fn drop(&mut self) {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(self.clean());
            });
        });
    }
}

/// Stops a worker the way an orchestrator does, and returns whether it exited cleanly.
fn terminate(mut child: Running) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_halfway_loses_and_duplicates_nothing() {
    let Some(setup) = setup("kill").await else {
        return;
    };
    let mut first = setup.worker(&[]);
    let second = setup.worker(&[]);
    let producers = [setup.producer("one", 50_000), setup.producer("two", 50_000)];
    setup.wait_for_rows(30_000, Duration::from_secs(120)).await;
    first.kill().unwrap(); // SIGKILL: its batch in hand is neither finished nor acknowledged
    first.wait().unwrap();
    // Mid-stream, the other worker is stopped as an orchestrator would: it finishes its batch,
    // acknowledges it and exits 0; a third takes over the backlog.
    setup.wait_for_rows(50_000, Duration::from_secs(120)).await;
    assert!(
        terminate(second),
        "SIGTERM: the worker finishes its batch and exits 0"
    );
    let third = setup.worker(&[]);
    for mut producer in producers {
        assert!(producer.wait().unwrap().success(), "a producer failed");
    }
    let (rows, distinct) = setup.wait_for_rows(100_000, Duration::from_secs(120)).await;
    // Redeliveries of the killed worker's batch must not add rows.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        setup.rows().await,
        (100_000, 100_000),
        "was {rows}/{distinct}"
    );
    assert_eq!(setup.rolled_up().await, 100_000, "each record counted once");
    assert!(terminate(third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_record_is_quarantined_and_acknowledged() {
    let Some(setup) = setup("poison").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    setup.publish_not_a_record("definitely not a record").await;
    let mut sink = NatsSink::connect_with(&setup.nats, setup.nats_config())
        .await
        .unwrap();
    sink.write(&tests::random_records(10, 9)).await.unwrap();

    let worker = setup.worker(&["--quarantine", quarantine.to_str().unwrap()]);
    setup.wait_for_rows(10, Duration::from_secs(60)).await;
    // Acknowledged, so never handed out again: nothing pending or awaiting an ack.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = setup.consumer_info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(terminate(worker));
    let lines = std::fs::read_to_string(&quarantine).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    let line: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(line["payload"], "definitely not a record");
    assert!(
        line["reason"].as_str().unwrap().contains("expected"),
        "{line}"
    );
    assert_eq!(setup.rows().await, (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_explicit_acks_is_refused_by_name() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let Some(setup) = setup("ackpolicy").await else {
        return;
    };
    let context = async_nats::jetstream::new(async_nats::connect(&setup.nats).await.unwrap());
    context
        .get_stream(&setup.stream)
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("writers".into()),
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut worker = Running(
        setup
            .ingest()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It must stop at once; a worker that started ingesting is killed and fails the test.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("`usage ingest` ran on a consumer without explicit acks");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`writers`") && stderr.contains("explicit-ack"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_past_the_ack_wait_keeps_its_messages() {
    let Some(setup) = setup("held").await else {
        return;
    };
    // The records table is locked: the first worker's write waits on it for more than twice
    // the ack wait (3 s). It must keep telling NATS it is working, or the stream hands the same
    // messages to the second worker meanwhile.
    let first = setup.worker(&[]);
    let second = setup.worker(&[]);
    setup.wait_for_pullers(2).await;
    let mut lock = setup.lock_records().await;
    let mut producer = setup.producer("held", 200);
    assert!(producer.wait().unwrap().success());
    tokio::time::sleep(Duration::from_secs(8)).await;
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    setup.wait_for_rows(200, Duration::from_secs(60)).await;
    // Each delivery, redeliveries included, takes a consumer sequence number.
    let info = setup.consumer_info().await.unwrap();
    assert_eq!(
        info.delivered.consumer_sequence, 200,
        "delivered once each: {info:?}"
    );
    assert_eq!(setup.rolled_up().await, 200);
    assert!(terminate(first));
    assert!(terminate(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_attempt_past_its_timeout_is_tried_again_and_lands_once() {
    let Some(setup) = setup("timeout").await else {
        return;
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let worker = setup.worker_logging(&["--write-timeout", "1s"], log.reopen().unwrap());
    setup.wait_for_pullers(1).await;
    // The table stays locked for several attempts: each is given up after a second.
    let mut lock = setup.lock_records().await;
    let mut producer = setup.producer("timeout", 50);
    assert!(producer.wait().unwrap().success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    assert_eq!(
        setup.wait_for_rows(50, Duration::from_secs(60)).await,
        (50, 50)
    );
    assert_eq!(setup.rolled_up().await, 50);
    assert!(terminate(worker));
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        log.contains("retrying") && log.contains("timed out"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_while_its_write_fails_hands_its_batch_back_at_once() {
    let Some(setup) = setup("handback").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let quarantine = quarantine.to_str().unwrap();
    // One message that is not a record, then 50 records, all waiting before a worker pulls, so
    // that they come in one batch.
    setup.publish_not_a_record("not a record").await;
    let mut producer = setup.producer("handback", 50);
    assert!(producer.wait().unwrap().success());
    let mut lock = setup.lock_records().await;
    // A minute's ack wait: a batch that is not handed back stays this worker's for that long.
    let log = tempfile::NamedTempFile::new().unwrap();
    let worker = setup.worker_logging(
        &[
            "--write-timeout",
            "1s",
            "--ack-wait",
            "60s",
            "--quarantine",
            quarantine,
        ],
        log.reopen().unwrap(),
    );
    // The worker holds the batch and its writes time out against the locked table.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("retrying")
    {
        assert!(Instant::now() < deadline, "the worker never tried to write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(setup.consumer_info().await.unwrap().num_ack_pending, 51);
    assert!(terminate(worker), "SIGTERM: the worker exits 0");
    // Handed back: the next worker gets the records at once, not when the minute's ack wait
    // ends; the message already set aside is not handed back (nor set aside twice).
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    let next = setup.worker(&["--quarantine", quarantine]);
    assert_eq!(
        setup.wait_for_rows(50, Duration::from_secs(20)).await,
        (50, 50)
    );
    assert_eq!(setup.rolled_up().await, 50);
    assert!(terminate(next));
    let info = setup.consumer_info().await.unwrap();
    assert_eq!(
        info.delivered.consumer_sequence, 101,
        "the records delivered twice, the other message once: {info:?}"
    );
    let lines = std::fs::read_to_string(quarantine).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

/// A new consumer reads a stream from its start, after the records were pruned: the pruned ones
/// are refused and quarantined, never added to the rollups again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_after_a_prune_counts_each_record_once() {
    let Some(setup) = setup("pruned").await else {
        return;
    };
    let base = usage_runtime::report::hour_start(chrono::Utc::now() - chrono::Duration::days(3));
    let mut records = tests::random_records(20, 31);
    for (n, record) in records.iter_mut().enumerate() {
        record.started_at = base
            + chrono::Duration::hours(n as i64 / 5)
            + chrono::Duration::minutes(10 * (n as i64 % 5));
    }
    let mut sink = NatsSink::connect_with(&setup.nats, setup.nats_config())
        .await
        .unwrap();
    sink.write(&records).await.unwrap();
    let worker = setup.worker(&[]);
    setup.wait_for_rows(20, Duration::from_secs(60)).await;
    assert!(terminate(worker));
    let mut db = PostgresSink::connect_with(&setup.postgres, setup.sql_config())
        .await
        .unwrap();
    assert_eq!(
        db.prune(base + chrono::Duration::hours(2)).await.unwrap(),
        10
    );

    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let late = Running(
        setup
            .ingest_as("latecomer")
            .args(["--ack-wait", "3s"])
            .args(["--quarantine", quarantine.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = setup.consumer_named("latecomer").await;
        if info.is_some_and(|info| {
            info.delivered.stream_sequence >= 20
                && info.num_pending == 0
                && info.num_ack_pending == 0
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new consumer never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(terminate(late));
    assert_eq!(setup.rolled_up().await, 20, "each record counted once");
    assert_eq!(setup.rows().await, (10, 10));
    let quarantined = tests::quarantined(&quarantine);
    assert_eq!(quarantined.len(), 10, "{quarantined:?}");
    assert!(quarantined.iter().all(|line| line["reason"]
        .as_str()
        .unwrap()
        .contains("where the records were pruned")));
}
