//! What the tracker does when writes fail: retries, rejected records split out and quarantined,
//! overflow policies and the health state. Every record ends written, quarantined, failed or
//! dropped, and is counted.
#![allow(missing_debug_implementations)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::{serial, Hung};
use usage_runtime::sink::{MemorySink, Sink};
use usage_runtime::{
    error::DbStep, error::FailureKind, track_usage, tracker::Overflow, Error, HealthState, Tracker,
    UsageRecord,
};

#[track_usage(operation = "work", tenant = tenant)]
fn work(tenant: &str) -> u32 {
    tenant.len() as u32
}

fn failure(kind: FailureKind, message: &str) -> Error {
    Error::Database {
        step: DbStep::Write,
        target: "test://sink".into(),
        source: message.to_owned().into(),
        kind,
    }
}

/// Fails its first `failures` writes with `kind`, then writes.
#[derive(Debug, Clone)]
struct Flaky {
    failures: Arc<AtomicU32>,
    kind: FailureKind,
    attempts: Arc<AtomicU32>,
    records: MemorySink,
}

impl Flaky {
    fn new(failures: u32, kind: FailureKind) -> Self {
        Flaky {
            failures: Arc::new(AtomicU32::new(failures)),
            kind,
            attempts: Arc::new(AtomicU32::new(0)),
            records: MemorySink::new(),
        }
    }
}

impl Sink for Flaky {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(failure(self.kind, "connection reset by peer"));
        }
        self.records.write(batch).await
    }
}

fn fast_retries() -> usage_runtime::TrackerBuilder {
    Tracker::builder().retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[test]
fn transient_failures_are_retried_until_written() {
    let _serial = serial();
    let sink = Flaky::new(3, FailureKind::Transient);
    let guard = fast_retries().sink(sink.clone()).install().unwrap();
    for _ in 0..10 {
        work("acme");
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(sink.records.records().len(), 10);
    assert_eq!((health.written, health.failed, health.retries), (10, 0, 3));
    assert_eq!(
        health.state,
        HealthState::Degraded,
        "written, but only after retries"
    );
    // The next clean batch makes it healthy again.
    work("acme");
    guard.flush_blocking().unwrap();
    assert_eq!(guard.health().state, HealthState::Healthy);
}

#[test]
fn retries_stop_at_the_limit_and_the_records_count_as_failed() {
    let _serial = serial();
    let sink = Flaky::new(100, FailureKind::Transient);
    let guard = fast_retries()
        .max_retries(2)
        .sink(sink.clone())
        .install()
        .unwrap();
    for _ in 0..4 {
        work("acme");
    }
    let err = guard.flush_blocking().unwrap_err();
    assert!(matches!(err, Error::NotWritten { count: 4, .. }), "{err:?}");
    assert_eq!(
        sink.attempts.load(Ordering::SeqCst),
        3,
        "one try and two retries"
    );
    let health = guard.health();
    assert_eq!((health.failed, health.retries), (4, 2));
    assert_eq!(health.state, HealthState::Failing);
    assert!(health.last_error.unwrap().contains("connection reset"));
}

#[test]
fn other_failures_are_not_retried() {
    let _serial = serial();
    let sink = Flaky::new(1, FailureKind::Other);
    let guard = fast_retries().sink(sink.clone()).install().unwrap();
    work("acme");
    assert!(guard.flush_blocking().is_err());
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(guard.health().retries, 0);
}

/// Rejects any batch holding a record whose tenant is "poison", as a database rejects a value.
#[derive(Debug, Clone, Default)]
struct Picky {
    writes: Arc<AtomicU32>,
    records: MemorySink,
}

impl Sink for Picky {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if batch
            .iter()
            .any(|r| r.tenant_id.as_deref() == Some("poison"))
        {
            return Err(failure(
                FailureKind::Rejected,
                "value too long for column tenant_id",
            ));
        }
        self.records.write(batch).await
    }
}

#[test]
fn rejected_records_are_split_out_and_quarantined_with_the_reason() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let sink = Picky::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .batch_size(64)
        .quarantine_file(&quarantine)
        .install()
        .unwrap();
    for n in 0..64 {
        work(if n == 17 || n == 40 { "poison" } else { "fine" });
    }
    let err = guard.flush_blocking().unwrap_err();
    assert!(matches!(err, Error::NotWritten { count: 2, .. }), "{err:?}");
    let health = guard.health();
    assert_eq!(
        (health.written, health.quarantined, health.failed),
        (62, 2, 0)
    );
    assert_eq!(health.state, HealthState::Degraded);
    assert_eq!(sink.records.records().len(), 62);
    let lines = tests::quarantined(&quarantine);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["record"]["tenant_id"], "poison");
        assert!(line["reason"].as_str().unwrap().contains("value too long"));
    }
    // Splitting, not one write per record: far fewer than 64 attempts.
    assert!(
        sink.writes.load(Ordering::SeqCst) < 30,
        "{}",
        sink.writes.load(Ordering::SeqCst)
    );
}

/// Holds every write until released.
#[derive(Debug, Clone)]
struct Gate {
    open: Arc<tokio::sync::Semaphore>,
    records: MemorySink,
}

impl Gate {
    /// A gate not yet opened.
    fn closed() -> Self {
        Gate {
            open: Arc::new(tokio::sync::Semaphore::new(0)),
            records: MemorySink::new(),
        }
    }

    /// A tracker writing batches of 4 through the gate from a queue of `capacity` calls, a call
    /// waiting up to `wait` for room.
    fn blocking_tracker(&self, capacity: usize, wait: Duration) -> usage_runtime::TrackerBuilder {
        Tracker::builder()
            .sink(self.clone())
            .batch_size(4)
            .queue_capacity(capacity)
            .overflow(Overflow::Block(wait))
    }
}

impl Sink for Gate {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.open.acquire().await.unwrap().forget();
        self.open.add_permits(1);
        self.records.write(batch).await
    }
}

#[test]
fn overflow_block_waits_for_room_instead_of_dropping() {
    let _serial = serial();
    let sink = Gate::closed();
    let guard = sink
        .blocking_tracker(8, Duration::from_secs(10))
        .install()
        .unwrap();
    let opener = {
        let open = Arc::clone(&sink.open);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            open.add_permits(1);
        })
    };
    for _ in 0..100 {
        work("acme");
    }
    opener.join().unwrap();
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!((health.written, health.dropped), (100, 0));
}

#[test]
fn overflow_block_gives_up_after_its_timeout_and_counts_the_drop() {
    let _serial = serial();
    let sink = Gate::closed();
    let guard = sink
        .blocking_tracker(4, Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(10))
        .install()
        .unwrap();
    for _ in 0..20 {
        work("acme");
    }
    sink.open.add_permits(1);
    guard.flush_blocking().ok();
    let health = guard.health();
    assert!(health.dropped_queue_full > 0);
    assert_eq!(
        health.written + health.dropped_queue_full,
        20,
        "every call written or counted as dropped: {health:?}"
    );
    assert_ne!(health.state, HealthState::Failing);
}

#[test]
fn a_hung_write_times_out_and_is_retried() {
    let _serial = serial();
    let guard = Tracker::builder()
        .sink(Hung)
        .write_timeout(Duration::from_millis(50))
        .max_retries(2)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .install()
        .unwrap();
    work("acme");
    let started = std::time::Instant::now();
    let err = guard.flush_blocking().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::NotWritten { count: 1, .. }), "{err:?}");
    let health = guard.health();
    // Cut in flight: perhaps stored, so of unknown outcome rather than failed.
    assert_eq!(
        (health.retries, health.failed, health.outcome_unknown),
        (2, 0, 1)
    );
    assert!(health.last_error.unwrap().contains("timed out"));
}

/// Stores each batch, then never answers: a write the database committed whose reply is lost.
#[derive(Debug, Clone, Default)]
struct CommitsThenHangs {
    records: MemorySink,
}

impl Sink for CommitsThenHangs {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.records.write(batch).await?;
        std::future::pending().await
    }
}

/// A write cut in flight may have committed: its records are of unknown outcome, not failed
/// (health must not report a loss that did not happen), and a flush still cannot say they were
/// written.
#[test]
fn a_write_cut_in_flight_is_of_unknown_outcome_not_failed() {
    let _serial = serial();
    let sink = CommitsThenHangs::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .write_timeout(Duration::from_millis(50))
        .max_retries(0)
        .install()
        .unwrap();
    for _ in 0..3 {
        work("acme");
    }
    let err = guard.flush_blocking().unwrap_err();
    assert!(matches!(err, Error::NotWritten { count: 3, .. }), "{err:?}");
    let health = guard.health();
    assert_eq!(
        (
            health.written,
            health.failed,
            health.dropped,
            health.outcome_unknown
        ),
        (0, 0, 0, 3),
        "{health:?}"
    );
    assert_eq!(sink.records.records().len(), 3, "the database has them");
}

/// This test binary's `tracing` output, kept to be read back.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

#[test]
fn every_record_cut_off_by_the_shutdown_deadline_is_counted_and_named_once() {
    let _serial = serial();
    let logs = logs();
    // No spool: the batch in flight, the batch made meanwhile and the queue are all lost at the
    // deadline; the error and the health report name the same total.
    let guard = Tracker::builder()
        .sink(Hung)
        .batch_size(100)
        .write_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_millis(300))
        .install()
        .unwrap();
    for _ in 0..1_000 {
        work("acme");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime.block_on(guard.shutdown()).unwrap_err();
    let (missed, unknown) = match err {
        Error::NotWritten { count, reason } => {
            assert_eq!(count, 1_000);
            // The write in flight (a batch or more: a backlog is written in large writes) may
            // have been stored: of unknown outcome, not missed.
            let number = |text: &str| -> u64 {
                reason
                    .split("; ")
                    .find(|part| part.contains(text))
                    .map_or(0, |part| part.split(' ').next().unwrap().parse().unwrap())
            };
            let (missed, unknown) = (
                number("missed the shutdown deadline"),
                number("were being written when the shutdown deadline passed (outcome unknown"),
            );
            assert_eq!(missed + unknown, 1_000, "{reason}");
            assert!(unknown >= 100, "{reason}");
            (missed, unknown)
        }
        other => panic!("{other:?}"),
    };
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("shutdown deadline passed"))
        .collect();
    assert_eq!(lines.len(), 1, "one error log for the loss: {lines:#?}");
    assert!(
        lines[0].contains(&format!("records={missed} outcome_unknown={unknown}")),
        "{}",
        lines[0]
    );
}

/// Writes; fails to record the operation catalog its first `failures` times.
#[derive(Debug, Clone)]
struct CatalogDown {
    failures: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
    recorded: Arc<Mutex<Vec<String>>>,
}

impl Sink for CatalogDown {
    async fn write(&mut self, _batch: &[UsageRecord]) -> Result<(), Error> {
        Ok(())
    }

    async fn register(
        &mut self,
        _service: &str,
        operations: &[&'static usage_runtime::catalog::Operation],
    ) -> Result<(), Error> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(failure(FailureKind::Transient, "connection refused"));
        }
        *self.recorded.lock().unwrap() = operations.iter().map(|op| op.name().into()).collect();
        Ok(())
    }
}

#[test]
fn an_operation_catalog_not_recorded_at_start_is_recorded_once_writes_succeed() {
    let _serial = serial();
    let sink = CatalogDown {
        failures: Arc::new(AtomicU32::new(2)),
        attempts: Arc::new(AtomicU32::new(0)),
        recorded: Arc::default(),
    };
    let guard = Tracker::builder()
        .sink(sink.clone())
        .flush_interval(Duration::from_millis(50))
        .install()
        .unwrap();
    work("acme");
    guard.flush_blocking().unwrap();
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 1);
    assert!(sink.recorded.lock().unwrap().is_empty());
    // Tried again (after 1 s, then 2 s) while writes succeed, until recorded.
    tests::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            work("acme");
            !sink.recorded.lock().unwrap().is_empty()
        },
        || {
            let attempts = sink.attempts.load(Ordering::SeqCst);
            format!("the catalog was never recorded: {attempts} attempts")
        },
    );
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
    assert!(sink
        .recorded
        .lock()
        .unwrap()
        .iter()
        .any(|name| name == "work"));
    // Once recorded, not again.
    std::thread::sleep(Duration::from_millis(300));
    guard.flush_blocking().unwrap();
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
}

#[test]
fn a_queue_no_larger_than_a_batch_still_wakes_the_worker() {
    let _serial = serial();
    // Callers look at their ring's length only now and then; with no room beyond one batch, the
    // push that fills the queue must still wake the worker (not wait for the flush interval).
    let sink = MemorySink::new();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .batch_size(4096)
        .queue_capacity(4096)
        .flush_interval(Duration::from_secs(60))
        .install()
        .unwrap();
    for _ in 0..8192 {
        work("acme");
    }
    tests::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || guard.health().written > 0,
        || format!("the worker was never woken: {:?}", guard.health()),
    );
    guard.flush_blocking().ok();
    let health = guard.health();
    assert_eq!(health.written + health.dropped, 8192, "{health:?}");
}
