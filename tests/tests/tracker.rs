//! The process-wide tracker: install, batching, flushing and shutdown from every runtime flavour
//! and from plain `main`, overflow accounting and calls with no tracker. Tests here install the
//! global tracker, so they take turns through `serial()`.
#![allow(missing_debug_implementations)]
// `serial()` holds a std lock for a whole test, each on its own runtime: nothing else awaits it.
#![allow(clippy::await_holding_lock)]

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::serial;
use usage_runtime::sink::{MemorySink, Sink};
use usage_runtime::{track_usage, Error, Outcome, Tracker, UsageRecord};

#[track_usage(operation = "work", tenant = "t")]
fn work(n: u64) -> Result<u64, String> {
    if n % 10 == 9 {
        Err(format!("bad {n}"))
    } else {
        Ok(n)
    }
}

#[track_usage(operation = "async_work")]
async fn async_work(n: u64) -> u64 {
    tokio::task::yield_now().await;
    n
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn plain_main_install_use_flush_and_drop() {
    let _serial = serial();
    let sink = MemorySink::new();
    let guard = Tracker::builder()
        .service("plain")
        .instance("host-1")
        .sink(sink.clone())
        .install()
        .unwrap();
    for n in 0..1000 {
        let _ = work(n);
    }
    guard.flush_blocking().unwrap();
    let records = sink.records();
    assert_eq!(records.len(), 1000);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.outcome == Outcome::Error)
            .count(),
        100
    );
    assert!(records
        .iter()
        .all(|r| r.service == "plain" && r.instance == "host-1"));
    let health = guard.health();
    assert_eq!(
        (
            health.accepted,
            health.written,
            health.failed,
            health.dropped
        ),
        (1000, 1000, 0, 0)
    );
    assert!(health.last_write_at.is_some());

    for n in 0..10 {
        let _ = work(n);
    }
    drop(guard); // flushes
    assert_eq!(sink.records().len(), 1010);
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_runtime_flush_and_drop_inside() {
    let _serial = serial();
    let sink = MemorySink::new();
    let guard = Tracker::builder().sink(sink.clone()).install().unwrap();
    for n in 0..500 {
        async_work(n).await;
    }
    guard.flush().await.unwrap();
    assert_eq!(sink.records().len(), 500);
    for n in 0..7 {
        async_work(n).await;
    }
    // Dropping inside the only runtime thread must not deadlock: the worker has its own thread.
    drop(guard);
    assert_eq!(sink.records().len(), 507);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime_tasks_flush_and_shutdown() {
    let _serial = serial();
    let sink = MemorySink::new();
    let guard = Tracker::builder().sink(sink.clone()).install().unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            tokio::spawn(async move {
                for n in 0..250 {
                    async_work(task * 1000 + n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    guard.flush().await.unwrap();
    assert_eq!(sink.records().len(), 2000);
    async_work(1).await;
    guard.shutdown().await.unwrap();
    let records = sink.records();
    assert_eq!(records.len(), 2001);
    let mut ids: Vec<_> = records.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2001, "ids are unique");
}

#[test]
fn guard_dropped_inside_a_multi_thread_runtime() {
    let _serial = serial();
    let sink = MemorySink::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let guard = Tracker::builder().sink(sink.clone()).install().unwrap();
        async_work(1).await;
        drop(guard);
    });
    assert_eq!(sink.records().len(), 1);
}

#[test]
fn a_second_install_is_an_error_until_the_first_is_shut_down() {
    let _serial = serial();
    let first = Tracker::builder()
        .sink(MemorySink::new())
        .install()
        .unwrap();
    let second = Tracker::builder().sink(MemorySink::new()).install();
    assert!(matches!(second, Err(Error::AlreadyInstalled)), "{second:?}");
    drop(first);
    let third = Tracker::builder().sink(MemorySink::new()).install();
    assert!(third.is_ok(), "{third:?}");
}

#[test]
fn calls_without_a_tracker_are_counted_not_panics() {
    let _serial = serial();
    let before = usage_runtime::tracker::calls_without_tracker();
    for n in 0..5 {
        assert_eq!(work(n), Ok(n));
    }
    assert_eq!(usage_runtime::tracker::calls_without_tracker() - before, 5);
}

/// One thread's calls follow the tracker as it is shut down and another installed: none reaches
/// a tracker that is gone, each the one installed when it finished.
#[test]
fn a_thread_follows_the_installed_tracker() {
    let _serial = serial();
    let first = MemorySink::new();
    let guard = Tracker::builder().sink(first.clone()).install().unwrap();
    assert_eq!(work(1), Ok(1));
    guard.flush_blocking().unwrap();
    drop(guard);
    let before = usage_runtime::tracker::calls_without_tracker();
    assert_eq!(work(2), Ok(2));
    assert_eq!(usage_runtime::tracker::calls_without_tracker() - before, 1);
    let second = MemorySink::new();
    let guard = Tracker::builder().sink(second.clone()).install().unwrap();
    assert_eq!(work(3), Ok(3));
    guard.flush_blocking().unwrap();
    drop(guard);
    assert_eq!(first.records().len(), 1);
    assert_eq!(second.records().len(), 1);
    assert_eq!(usage_runtime::tracker::calls_without_tracker() - before, 1);
}

/// Records the size of every batch it is given.
#[derive(Debug, Clone, Default)]
struct BatchSizes {
    sizes: Arc<Mutex<Vec<usize>>>,
    records: MemorySink,
}

impl Sink for BatchSizes {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.sizes.lock().unwrap().push(batch.len());
        self.records.write(batch).await
    }
}

#[test]
fn batches_fill_by_size_without_waiting_for_the_interval() {
    let _serial = serial();
    let sink = BatchSizes::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .batch_size(10)
        .flush_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    for n in 0..25 {
        let _ = work(n);
    }
    // Two full batches are due long before the hour-long interval.
    eventually("two batches", || sink.records.records().len() >= 20);
    guard.flush_blocking().unwrap();
    assert_eq!(sink.records.records().len(), 25);
    let sizes = sink.sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&size| size <= 10), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 25);
}

#[test]
fn the_interval_writes_partial_batches() {
    let _serial = serial();
    let sink = MemorySink::new();
    let _guard = Tracker::builder()
        .sink(sink.clone())
        .batch_size(1000)
        .flush_interval(Duration::from_millis(20))
        .install()
        .unwrap();
    for n in 0..5 {
        let _ = work(n);
    }
    eventually("the interval flush", || sink.records().len() == 5);
}

/// Blocks its first write until released, to hold the worker busy.
#[derive(Debug, Clone)]
struct Stalled {
    entered: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    release: Arc<tokio::sync::Semaphore>,
    records: MemorySink,
}

impl Stalled {
    fn new() -> (Self, mpsc::Receiver<()>) {
        let (entered, first_write) = mpsc::channel();
        let sink = Stalled {
            entered: Arc::new(Mutex::new(Some(entered))),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
            records: MemorySink::new(),
        };
        (sink, first_write)
    }
}

impl Sink for Stalled {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            entered.send(()).unwrap();
        }
        let permit = self.release.acquire().await.unwrap();
        permit.forget();
        self.release.add_permits(1);
        self.records.write(batch).await
    }
}

#[test]
fn a_full_queue_drops_new_calls_and_counts_every_one() {
    let _serial = serial();
    let (sink, first_write) = Stalled::new();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .batch_size(10)
        .queue_capacity(10)
        .install()
        .unwrap();
    for n in 0..10 {
        let _ = work(n);
    }
    // The worker took those 10 and is stuck writing them.
    first_write.recv_timeout(Duration::from_secs(10)).unwrap();
    for n in 0..100 {
        let _ = work(n);
    }
    let health = guard.health();
    assert_eq!(health.queue_depth, 10);
    assert_eq!(health.dropped_queue_full, 90);
    sink.release.add_permits(1);
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(sink.records.records().len(), 20);
    assert_eq!(
        (health.accepted, health.written, health.dropped),
        (20, 20, 90)
    );
    assert_eq!(
        health.written + health.dropped,
        110,
        "every call accounted for"
    );
}

/// Never finishes a write.
#[derive(Debug)]
struct Hung;

impl Sink for Hung {
    async fn write(&mut self, _batch: &[UsageRecord]) -> Result<(), Error> {
        std::future::pending().await
    }
}

fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(limit)
        .expect("did not return within the limit")
}

#[test]
fn shutdown_is_bounded_even_when_a_write_hangs() {
    let _serial = serial();
    let guard = Tracker::builder()
        .sink(Hung)
        .batch_size(5)
        .shutdown_timeout(Duration::from_millis(200))
        .install()
        .unwrap();
    for n in 0..12 {
        let _ = work(n);
    }
    let result = within(Duration::from_secs(10), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(guard.shutdown())
    });
    match result {
        Err(Error::NotWritten { count, .. }) => assert_eq!(count, 12),
        other => panic!("expected NotWritten, got {other:?}"),
    }
    // The tracker is uninstalled: a new one can be installed.
    let again = Tracker::builder().sink(MemorySink::new()).install();
    assert!(again.is_ok());
}

#[test]
fn dropping_the_guard_is_bounded_even_when_a_write_hangs() {
    let _serial = serial();
    let guard = Tracker::builder()
        .sink(Hung)
        .shutdown_timeout(Duration::from_millis(100))
        .install()
        .unwrap();
    let _ = work(1);
    within(Duration::from_secs(10), move || drop(guard));
}

#[test]
fn health_serializes_without_secrets() {
    let _serial = serial();
    let guard = Tracker::builder()
        .sink(MemorySink::new())
        .install()
        .unwrap();
    let _ = work(1);
    guard.flush_blocking().unwrap();
    let json = serde_json::to_value(guard.health()).unwrap();
    for key in [
        "queue_depth",
        "accepted",
        "written",
        "failed",
        "dropped",
        "last_write_at",
        "last_error",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["written"], 1);
    let debug = format!("{guard:?}");
    assert!(debug.contains("written: 1"), "{debug}");
}

fn _assert_send_future<F: Future + Send>(_: F) {}

#[test]
fn tracked_futures_stay_send() {
    _assert_send_future(async_work(1));
}

/// Panics on any batch holding the record of call number 1 (a sink bug tied to one record).
#[derive(Debug, Clone, Default)]
struct PanicsOnOne {
    records: MemorySink,
}

impl Sink for PanicsOnOne {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        if batch
            .iter()
            .any(|r| r.error_message.as_deref() == Some("bad 9"))
        {
            panic!("sink bug");
        }
        self.records.write(batch).await
    }
}

#[test]
fn a_panicking_sink_fails_only_the_record_it_chokes_on() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("quarantine.jsonl");
    let sink = PanicsOnOne::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .quarantine_file(&quarantine)
        .install()
        .unwrap();
    for n in 0..20 {
        let _ = work(n);
    }
    match guard.flush_blocking() {
        Err(Error::NotWritten { count, .. }) => assert_eq!(count, 1),
        other => panic!("expected NotWritten, got {other:?}"),
    }
    let health = guard.health();
    assert_eq!(
        (health.written, health.quarantined, health.failed),
        (19, 1, 0)
    );
    let line = std::fs::read_to_string(&quarantine).unwrap();
    assert!(line.contains("sink bug"), "{line}");
    // The worker is alive.
    let _ = work(1);
    guard.flush_blocking().unwrap();
    assert_eq!(sink.records.records().len(), 20);
}
