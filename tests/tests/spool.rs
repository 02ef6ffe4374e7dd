//! The disk spool: records kept while the sink fails, replayed in order when it recovers and at
//! the next start, and at a shutdown that misses its deadline. Nothing lost, nothing doubled.
#![allow(missing_debug_implementations)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::{serial, Hung};
use usage_runtime::sink::{MemorySink, Sink};
use usage_runtime::{
    error::DbStep, error::FailureKind, spool::Fsync, track_usage, Error, HealthState, Tracker,
    UsageRecord,
};

#[track_usage(operation = "work", fields(n = n))]
fn work(n: u64) -> u64 {
    n
}

/// A sink that can be switched down (refusing connections) and up again.
#[derive(Debug, Clone, Default)]
struct Switch {
    down: Arc<AtomicBool>,
    attempts: Arc<AtomicU32>,
    records: MemorySink,
    /// Every record id received, duplicates included.
    received: Arc<Mutex<Vec<uuid::Uuid>>>,
    /// The size of every write received while up.
    sizes: Arc<Mutex<Vec<usize>>>,
    /// While set, a write received after the first one while up waits until it is cleared.
    hold: Arc<AtomicBool>,
}

impl Switch {
    /// A switch that starts down.
    fn down() -> Self {
        let switch = Switch::default();
        switch.down.store(true, Ordering::SeqCst);
        switch
    }
}

impl Sink for Switch {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Database {
                step: DbStep::Connect,
                target: "test://switch".into(),
                source: "connection refused".into(),
                kind: FailureKind::Transient,
            });
        }
        let earlier = {
            let mut sizes = self.sizes.lock().unwrap();
            sizes.push(batch.len());
            sizes.len() - 1
        };
        while earlier > 0 && self.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.received
            .lock()
            .unwrap()
            .extend(batch.iter().map(|r| r.id));
        self.records.write(batch).await
    }
}

fn tracker(sink: &Switch, dir: &std::path::Path) -> usage_runtime::TrackerBuilder {
    Tracker::builder()
        .sink(sink.clone())
        .max_retries(1)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .spool_dir(dir)
        .spool_fsync(Fsync::Always)
        .batch_size(50)
}

fn numbers(records: &[UsageRecord]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r.attributes["n"].as_u64().unwrap())
        .collect()
}

#[test]
fn an_outage_fills_the_spool_and_recovery_replays_it_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    let guard = tracker(&sink, dir.path()).install().unwrap();
    for n in 0..100 {
        work(n);
    }
    guard.flush_blocking().unwrap();
    sink.down.store(true, Ordering::SeqCst);
    for n in 100..400 {
        work(n);
    }
    let err = guard.flush_blocking().unwrap_err();
    assert!(err.to_string().contains("wait in the spool"), "{err}");
    let health = guard.health();
    assert_eq!(
        (health.written, health.spool_records, health.failed),
        (100, 300, 0)
    );
    assert_eq!(health.state, HealthState::Failing);
    assert!(health.spool_bytes > 0);

    sink.down.store(false, Ordering::SeqCst);
    for n in 400..450 {
        work(n);
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        (health.written, health.spool_records, health.spool_bytes),
        (450, 0, 0)
    );
    assert_eq!((health.spooled, health.replayed), (300, 300));
    let records = sink.records.records();
    assert_eq!(
        numbers(&records),
        (0..450).collect::<Vec<_>>(),
        "in order, once each"
    );
    let received = sink.received.lock().unwrap().clone();
    assert_eq!(received.len(), 450, "no record written twice");
    let segments = usage_runtime::spool::status(dir.path()).unwrap().segments;
    assert_eq!(segments, 0, "replayed segments are deleted");
}

/// A backlog is written in large writes whatever the live batch size, and while it drains health
/// says catching up (writes succeed, records wait, since when), not failing.
#[test]
fn catching_up_writes_large_batches_and_health_says_so() {
    use usage_runtime::tracker::CATCH_UP_BATCH_SIZE;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::down();
    let guard = tracker(&sink, dir.path())
        .spool_fsync(Fsync::Never)
        .batch_size(500)
        .queue_capacity(1 << 16)
        .install()
        .unwrap();
    let total = CATCH_UP_BATCH_SIZE as u64 + 3000;
    let started = chrono::Utc::now();
    for n in 0..total {
        work(n);
    }
    let _ = guard.flush_blocking(); // the sink is down: everything goes to the spool
    assert_eq!(guard.health().spool_records, total, "{:?}", guard.health());
    sink.hold.store(true, Ordering::SeqCst);
    sink.down.store(false, Ordering::SeqCst);
    // The first replayed write goes through; the second waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = guard.health();
        if health.spool_records < total || std::time::Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        health.spool_records < total,
        "no replay within 20 s: {health:?}"
    );
    std::thread::sleep(Duration::from_millis(50)); // the write's settling
    let health = guard.health();
    assert_eq!(health.state, HealthState::CatchingUp, "{health:?}");
    assert_eq!(health.spool_records, total - CATCH_UP_BATCH_SIZE as u64);
    let oldest = health.spool_oldest_at.expect("the backlog's age is known");
    assert!(
        oldest >= started && oldest <= chrono::Utc::now(),
        "{oldest}"
    );
    assert_eq!(
        sink.sizes.lock().unwrap().first(),
        Some(&CATCH_UP_BATCH_SIZE),
        "the replay wrote large batches, not the live batch size"
    );
    sink.hold.store(false, Ordering::SeqCst);
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(health.state, HealthState::Healthy, "{health:?}");
    assert_eq!((health.written, health.spool_records), (total, 0));
    assert_eq!(health.spool_oldest_at, None);
}

/// A shutdown whose sink answers again writes the spool at once, within its deadline, however
/// long the replay's backoff after the failures.
#[test]
fn a_shutdown_after_recovery_does_not_sit_out_the_backoff() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::down();
    let guard = tracker(&sink, dir.path())
        .max_retries(0)
        .retry_backoff(Duration::from_secs(600), Duration::from_secs(600))
        .shutdown_timeout(Duration::from_secs(5))
        .install()
        .unwrap();
    for n in 0..2_000 {
        work(n);
    }
    // Failed writes, then a failed replay: the next one waits up to 10 minutes.
    let _ = guard.flush_blocking();
    let _ = guard.flush_blocking();
    assert_eq!(guard.health().spool_records, 2_000);
    sink.down.store(false, Ordering::SeqCst);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    runtime.block_on(guard.shutdown()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let written = numbers(&sink.records.records());
    assert_eq!(written.into_iter().collect::<HashSet<_>>().len(), 2_000);
}

#[test]
fn what_a_stopped_process_left_is_replayed_at_the_next_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let down = Switch::down();
    let guard = tracker(&down, dir.path()).install().unwrap();
    for n in 0..120 {
        work(n);
    }
    let _ = guard.flush_blocking();
    assert_eq!(guard.health().spool_records, 120);
    drop(guard);

    let up = Switch::default();
    let guard = tracker(&up, dir.path()).install().unwrap();
    for n in 120..130 {
        work(n);
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(health.replayed, 120);
    assert_eq!(health.spool_records, 0);
    let records = up.records.records();
    assert_eq!(numbers(&records), (0..130).collect::<Vec<_>>());
    let ids: HashSet<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 130);
}

#[test]
fn a_shutdown_that_misses_its_deadline_keeps_the_rest_in_the_spool() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let guard = Tracker::builder()
        .sink(Hung)
        .spool_dir(dir.path())
        .batch_size(10)
        .shutdown_timeout(Duration::from_millis(200))
        .install()
        .unwrap();
    for n in 0..75 {
        work(n);
    }
    let started = std::time::Instant::now();
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(5));

    let sink = Switch::default();
    let guard = tracker(&sink, dir.path()).install().unwrap();
    guard.flush_blocking().unwrap();
    let records = sink.records.records();
    assert_eq!(
        numbers(&records).len(),
        75,
        "every call written after the restart"
    );
    let distinct: HashSet<u64> = numbers(&records).into_iter().collect();
    assert_eq!(distinct.len(), 75);
}

#[test]
fn a_full_spool_counts_what_it_cannot_keep() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::down();
    let guard = tracker(&sink, dir.path())
        .spool_max_bytes(100_000)
        .install()
        .unwrap();
    for n in 0..500 {
        work(n);
    }
    assert!(guard.flush_blocking().is_err());
    let health = guard.health();
    assert!(health.spool_records > 0 && health.failed > 0, "{health:?}");
    assert_eq!(health.spool_records + health.failed, 500, "{health:?}");
    assert!(health.spool_bytes <= 100_000);
}

#[test]
fn spool_settings_apply_whether_set_before_or_after_the_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::down();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .max_retries(1)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .batch_size(50)
        .spool_max_bytes(100_000)
        .spool_fsync(Fsync::Always)
        .spool_dir(dir.path())
        .install()
        .unwrap();
    for n in 0..500 {
        work(n);
    }
    assert!(guard.flush_blocking().is_err());
    let health = guard.health();
    assert!(health.failed > 0, "the cap set first applies: {health:?}");
    assert_eq!(health.spool_records + health.failed, 500, "{health:?}");
    assert!(health.spool_bytes <= 100_000);
    drop(guard);

    // Without a directory they are a configuration error, not silently dropped.
    for builder in [
        Tracker::builder()
            .sink(MemorySink::new())
            .spool_max_bytes(1 << 20),
        Tracker::builder()
            .sink(MemorySink::new())
            .spool_fsync(Fsync::Always),
    ] {
        let err = builder.install().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(why) if why.contains("needs a spool: set spool_dir")),
            "{err:?}"
        );
    }
}

/// Every write waits until the sink is opened (a database that stopped answering).
#[derive(Debug, Clone, Default)]
struct Stuck {
    open: Arc<AtomicBool>,
    records: MemorySink,
}

impl Sink for Stuck {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.records.write(batch).await
    }
}

#[test]
fn while_a_write_hangs_the_worker_spills_the_queue_instead_of_dropping() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Stuck::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(dir.path())
        .spool_fsync(Fsync::Never)
        .batch_size(10)
        .queue_capacity(2000)
        .write_timeout(Duration::from_secs(60))
        .install()
        .unwrap();
    // The first write hangs. The worker leaves the queue alone for the first second of a write
    // (a busy database is not a stuck one), so the calls come slowly enough that the queue
    // holds that second's worth (about 400 here), then 2,000 more in about a second: with
    // spilling from half full, about 400 ms of slack before one would be dropped.
    for n in 0..400 {
        work(n);
        std::thread::sleep(Duration::from_micros(2_500));
    }
    for n in 400..2400 {
        work(n);
        std::thread::sleep(Duration::from_micros(400));
    }
    let health = guard.health();
    assert_eq!(health.dropped, 0, "{health:?}");
    assert!(
        health.spooled >= 2400 - 2000 - 10,
        "the queue went to the spool while the write hung: {health:?}"
    );
    sink.open.store(true, Ordering::SeqCst);
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        (health.written, health.dropped, health.spool_records),
        (2400, 0, 0),
        "{health:?}"
    );
    let written = numbers(&sink.records.records());
    assert_eq!(written.len(), 2400);
    assert_eq!(written.into_iter().collect::<HashSet<_>>().len(), 2400);
}

/// Takes 100 ms per write: busy, not stuck.
#[derive(Debug, Clone, Default)]
struct Busy {
    records: MemorySink,
}

impl Sink for Busy {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.records.write(batch).await
    }
}

#[test]
fn a_busy_write_leaves_the_queue_in_memory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Busy::default();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(dir.path())
        .batch_size(20)
        .queue_capacity(100)
        .install()
        .unwrap();
    // Calls come faster than the writes go: the queue passes half full during writes.
    for n in 0..300 {
        work(n);
        std::thread::sleep(Duration::from_millis(1));
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        health.spooled, 0,
        "a write under a second is not stuck: {health:?}"
    );
    assert_eq!(health.written + health.dropped, 300, "{health:?}");
    assert_ne!(health.state, HealthState::Failing, "{health:?}");
}

#[test]
fn while_retrying_the_worker_spills_the_queue_instead_of_dropping() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::down();
    let guard = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(dir.path())
        .batch_size(10)
        .queue_capacity(400)
        .max_retries(20)
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(50))
        .install()
        .unwrap();
    for n in 0..1000 {
        work(n);
        std::thread::sleep(Duration::from_micros(100));
    }
    let health = guard.health();
    assert_eq!(health.dropped, 0, "{health:?}");
    // 1,000 calls into a 400-call queue with the sink down and nothing dropped: everything the
    // queue could not hold went to the spool. (How much more did depends on when the worker last
    // looked: it spills down to a quarter once the queue passes half full.)
    assert!(
        health.spooled >= 1000 - 400,
        "the queue went to the spool: {health:?}"
    );
    sink.down.store(false, Ordering::SeqCst);
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        (health.written, health.dropped, health.spool_records),
        (1000, 0, 0)
    );
    let mut seen = numbers(&sink.records.records());
    seen.sort();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[test]
fn spool_first_puts_every_record_on_disk_before_writing_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    let guard = tracker(&sink, dir.path())
        .durability(usage_runtime::tracker::Durability::SpoolFirst)
        .install()
        .unwrap();
    for n in 0..300 {
        work(n);
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        (health.spooled, health.replayed, health.written),
        (300, 300, 300)
    );
    assert_eq!(health.spool_records, 0);
    assert_eq!(
        numbers(&sink.records.records()),
        (0..300).collect::<Vec<_>>()
    );
}

#[test]
fn spill_and_spool_first_need_a_spool() {
    let _serial = serial();
    let err = Tracker::builder()
        .sink(MemorySink::new())
        .overflow(usage_runtime::tracker::Overflow::Spill)
        .install()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("spool_dir")),
        "{err}"
    );
    let err = Tracker::builder()
        .sink(MemorySink::new())
        .durability(usage_runtime::tracker::Durability::SpoolFirst)
        .install()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("spool_dir")),
        "{err}"
    );
}

#[test]
fn a_damaged_spool_is_recovered_and_counted_at_install() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let down = Switch::down();
    let guard = tracker(&down, dir.path()).install().unwrap();
    for n in 0..40 {
        work(n);
    }
    let _ = guard.flush_blocking();
    drop(guard);
    // Damage: cut the newest segment's tail, add junk and an empty segment.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap().clone();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    std::fs::write(
        dir.path().join("spool-00000000000000000900.seg"),
        b"junk junk junk",
    )
    .unwrap();
    std::fs::write(dir.path().join("spool-00000000000000000901.seg"), b"").unwrap();

    let up = Switch::default();
    let guard = tracker(&up, dir.path()).install().unwrap();
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(health.spool_torn_tails, 1);
    assert_eq!(health.spool_corrupt_frames, 1);
    assert_eq!(health.replayed, 39, "all but the torn record");
    assert_eq!(up.records.records().len(), 39);
    // It keeps running.
    work(1000);
    guard.flush_blocking().unwrap();
    assert_eq!(up.records.records().len(), 40);
}

/// A sink that rejects any batch holding call 7 (or call `also_reject`, when not 0) and, while
/// `flaky`, fails any batch holding call 30 as a transient error; while `down`, refuses every
/// batch. The first batch of several holding call `hang_on` (when not 0) hangs.
#[derive(Debug, Clone, Default)]
struct Picky {
    down: Arc<AtomicBool>,
    flaky: Arc<AtomicBool>,
    also_reject: Arc<AtomicU64>,
    hang_on: Arc<AtomicU64>,
    records: MemorySink,
}

impl Sink for Picky {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let holds = |n: u64| batch.iter().any(|r| r.attributes["n"] == n);
        let fail = |kind| {
            Err(Error::Database {
                step: DbStep::Write,
                target: "test://picky".into(),
                source: "refused".into(),
                kind,
            })
        };
        if self.down.load(Ordering::SeqCst) {
            return fail(FailureKind::Transient);
        }
        let also = self.also_reject.load(Ordering::SeqCst);
        if holds(7) || (also != 0 && holds(also)) {
            return fail(FailureKind::Rejected);
        }
        let hang = self.hang_on.load(Ordering::SeqCst);
        if hang != 0 && batch.len() > 1 && holds(hang) {
            self.hang_on.store(0, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.flaky.load(Ordering::SeqCst) && holds(30) {
            return fail(FailureKind::Transient);
        }
        self.records.write(batch).await
    }
}

/// A `Picky` sink that starts down, its quarantine file in `dir`, and a tracker writing to it
/// with a spool in `dir`.
fn picky_while_down(
    dir: &std::path::Path,
) -> (Picky, std::path::PathBuf, usage_runtime::TrackerBuilder) {
    let quarantine = dir.join("quarantine.jsonl");
    let sink = Picky::default();
    sink.down.store(true, Ordering::SeqCst);
    let builder = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(dir.join("spool"))
        .quarantine_file(&quarantine);
    (sink, quarantine, builder)
}

/// A replayed batch whose rejected record is quarantined while another of its records keeps
/// failing stays in the spool; the rejected record is quarantined once, not at every replay.
#[test]
fn a_record_quarantined_during_an_unsettled_replay_is_quarantined_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (sink, quarantine, builder) = picky_while_down(dir.path());
    let guard = builder
        .max_retries(1)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .spool_fsync(Fsync::Always)
        .batch_size(50)
        .install()
        .unwrap();
    for n in 0..50 {
        work(n);
    }
    assert!(guard.flush_blocking().is_err(), "the sink is down");
    assert_eq!(guard.health().spool_records, 50);
    sink.down.store(false, Ordering::SeqCst);
    sink.flaky.store(true, Ordering::SeqCst);
    let lines = || {
        std::fs::read_to_string(&quarantine)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for _ in 0..3 {
        assert!(guard.flush_blocking().is_err(), "call 30 keeps failing");
        assert_eq!(lines(), 1, "call 7 quarantined once");
        assert_eq!(
            guard.health().spool_records,
            50,
            "the batch stays in the spool"
        );
    }
    sink.flaky.store(false, Ordering::SeqCst);
    // The batch leaves the spool; its quarantined record is counted now, once.
    let error = guard.flush_blocking().unwrap_err();
    assert!(
        matches!(error, Error::NotWritten { count: 1, .. }),
        "{error}"
    );
    let health = guard.health();
    assert_eq!(lines(), 1);
    assert_eq!(
        (health.written, health.quarantined, health.spool_records),
        (49, 1, 0)
    );
    let mut written = numbers(&sink.records.records());
    written.sort_unstable();
    written.dedup();
    assert_eq!(written, (0..50).filter(|n| *n != 7).collect::<Vec<_>>());
}

/// A replay cut by the write timeout makes the next catch-up write smaller, so the batch that
/// quarantined a record is taken back in two: the record is still not sent (and quarantined)
/// again.
#[test]
fn a_smaller_catch_up_after_a_timeout_quarantines_each_record_once() {
    use usage_runtime::tracker::CATCH_UP_BATCH_SIZE;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (sink, quarantine, builder) = picky_while_down(dir.path());
    let guard = builder
        .max_retries(0)
        .write_timeout(Duration::from_millis(300))
        .spool_fsync(Fsync::Never)
        .batch_size(500)
        .queue_capacity(1 << 16)
        .install()
        .unwrap();
    let total = CATCH_UP_BATCH_SIZE as u64;
    for n in 0..total {
        work(n);
    }
    let _ = guard.flush_blocking();
    assert_eq!(guard.health().spool_records, total);
    // The first replay: call 100's half hangs (cut by the timeout), call `late` in the other
    // half is quarantined; the batch goes back to the spool, to be taken in halves.
    let late = total - 100;
    sink.also_reject.store(late, Ordering::SeqCst);
    sink.hang_on.store(100, Ordering::SeqCst);
    sink.down.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let _ = guard.flush_blocking();
        if guard.health().spool_records == 0 {
            break;
        }
    }
    let health = guard.health();
    assert_eq!(
        (health.spool_records, health.quarantined, health.written),
        (0, 2, total - 2),
        "{health:?}"
    );
    let mut quarantined: Vec<u64> = tests::quarantined(&quarantine)
        .iter()
        .map(|line| line["record"]["attributes"]["n"].as_u64().unwrap())
        .collect();
    quarantined.sort_unstable();
    assert_eq!(quarantined, [7, late], "each quarantined once");
}
