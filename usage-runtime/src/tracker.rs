//! The process-wide tracker: its builder, the queue the hot path pushes to, and the guard that
//! flushes on drop.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use crossbeam_utils::CachePadded;
use serde::Serialize;
use uuid::Uuid;

use crate::call::{RawCall, RecordContext};
use crate::error::Error;
use crate::pricing::Pricing;
use crate::queue::Queue;
use crate::sink::{BoxedSink, Sink};
use crate::worker::{self, Reply, ReplyTo, Request};

/// Records per sink write (fewer when the queue holds fewer). Large enough for the PostgreSQL and
/// MySQL sinks to write a full batch over their default 4 connections at once, in parts of 1,024
/// records (`sink::DEFAULT_WRITE_CONNECTIONS`, `sink::MIN_PART_RECORDS`).
pub const DEFAULT_BATCH_SIZE: usize = 4096;
/// How often the worker writes what has accumulated, when batches do not fill sooner.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Calls held in memory before new ones are dropped (and counted).
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// How long dropping the guard (or `shutdown`) may take to write what is left.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of error text kept per record.
pub const DEFAULT_ERROR_MESSAGE_LIMIT: usize = 1024;
/// Attempts after the first for a batch whose write failed transiently.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// The first retry waits up to this long (full jitter); each further one up to twice as long.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A sink write taking longer than this fails as a timeout (and is retried).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace in which non-UUID user and session ids are mapped to UUIDv5.
pub const DEFAULT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x8f0e_2c4b_6a1d_4e57_9b3c_d1f2_a0e4_c7b5);

/// The installed tracker, if any. Loaded once per finished call.
static GLOBAL: ArcSwapOption<Shared> = ArcSwapOption::const_empty();
/// Serialises `install` so two racing installs cannot both succeed.
static INSTALL: Mutex<()> = Mutex::new(());
/// Calls finished while no tracker was installed.
static WITHOUT_TRACKER: AtomicU64 = AtomicU64::new(0);

/// Entry point: `Tracker::builder()`.
#[derive(Debug)]
pub struct Tracker(());

impl Tracker {
    /// A builder with the `DEFAULT_*` settings and no sink.
    pub fn builder() -> TrackerBuilder {
        TrackerBuilder {
            sink: None,
            service: None,
            instance: None,
            batch_size: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            error_message_limit: DEFAULT_ERROR_MESSAGE_LIMIT,
            id_namespace: DEFAULT_ID_NAMESPACE,
            pricing: None,
            retry: Retry {
                max_retries: DEFAULT_MAX_RETRIES,
                base: DEFAULT_RETRY_BASE,
                max: DEFAULT_RETRY_MAX,
            },
            quarantine_file: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            retention: None,
            overflow: None,
            durability: Durability::Memory,
            spool: SpoolSettings::default(),
        }
    }
}

/// Where and how the disk spool keeps records: a spool only with a directory. The other
/// settings may come before or after it; without one they are a configuration error.
#[derive(Debug, Clone, Default)]
struct SpoolSettings {
    dir: Option<std::path::PathBuf>,
    max_bytes: Option<u64>,
    fsync: Option<crate::spool::Fsync>,
}

/// The largest a spool grows by default: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// How often spooled records are forced to disk by default.
pub const DEFAULT_SPOOL_FSYNC: crate::spool::Fsync =
    crate::spool::Fsync::Interval(Duration::from_millis(200));

/// What a finished call does when the in-memory queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the new record and count it (`dropped_queue_full`), with a rate-limited warning.
    /// The default: a handler never waits on the database.
    DropNewest,
    /// Wait, blocking the calling thread, up to this long for room; then drop and count. Opt-in:
    /// it makes handlers wait when the sink falls behind.
    Block(Duration),
    /// The default with a spool: while the sink is failing, the worker moves queued records to
    /// the spool as the queue fills, so it does not overflow; a call that still finds it full
    /// (the disk slower than the calls) is dropped and counted. Needs a spool.
    Spill,
}

/// When a record is safe from a crash of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Records stay in memory until written (or spooled after the sink fails). A crash loses
    /// the records in the queue and in the batch being written: up to `queue_capacity` plus a
    /// batch, and whatever the spool had not yet forced to disk.
    #[default]
    Memory,
    /// Every record is appended to the spool before it is written, and written from there. A
    /// crash loses only the records still in the in-memory queue (the worker moves them to the
    /// spool at each wake-up: a batch or a flush interval's worth) and, with
    /// `Fsync::Interval`, what that interval had not yet forced to disk. Costs one disk append
    /// per record. Needs a spool.
    SpoolFirst,
}

/// How failed writes are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) max_retries: u32,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Retry {
    /// Exponential backoff with full jitter: a uniform wait in `[0, min(max, base × 2^(n-1))]`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Configures and installs the process-wide tracker.
pub struct TrackerBuilder {
    sink: Option<BoxedSink>,
    service: Option<String>,
    instance: Option<String>,
    batch_size: Option<usize>,
    flush_interval: Duration,
    queue_capacity: usize,
    shutdown_timeout: Duration,
    error_message_limit: usize,
    id_namespace: Uuid,
    pricing: Option<Pricing>,
    retry: Retry,
    quarantine_file: Option<std::path::PathBuf>,
    write_timeout: Duration,
    retention: Option<Duration>,
    overflow: Option<Overflow>,
    durability: Durability,
    spool: SpoolSettings,
}

impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("sink", &self.sink)
            .field("service", &self.service)
            .field("instance", &self.instance)
            .field("batch_size", &self.batch())
            .field("flush_interval", &self.flush_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("error_message_limit", &self.error_message_limit)
            .field("id_namespace", &self.id_namespace)
            .field("pricing", &self.pricing)
            .field("retry", &self.retry)
            .field("quarantine_file", &self.quarantine_file)
            .field("write_timeout", &self.write_timeout)
            .field("retention", &self.retention)
            .field("overflow", &self.overflow)
            .field("durability", &self.durability)
            .field("spool", &self.spool)
            .finish()
    }
}

impl TrackerBuilder {
    /// Where records are written. Required.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// The service name stored on every record. Default: the executable's file name.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// The instance name stored on every record. Default: the host name.
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Records per sink write. Default [`DEFAULT_BATCH_SIZE`], or half the queue capacity if that
    /// is smaller (so calls find room while a full batch waits for the worker); at least 1 and
    /// at most the queue capacity.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = Some(records);
        self
    }

    /// The batch size in effect.
    fn batch(&self) -> usize {
        self.batch_size
            .unwrap_or_else(|| DEFAULT_BATCH_SIZE.min((self.queue_capacity / 2).max(1)))
    }

    /// The longest a finished call waits before it is written. Default
    /// [`DEFAULT_FLUSH_INTERVAL`]; must be above zero.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Calls held in memory before new ones are dropped and counted. Default
    /// [`DEFAULT_QUEUE_CAPACITY`].
    pub fn queue_capacity(mut self, calls: usize) -> Self {
        self.queue_capacity = calls;
        self
    }

    /// How long dropping the guard or `shutdown()` may spend writing what is left. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Bytes of error text kept per record; longer text is cut on a character boundary and ends
    /// with `…`. Default [`DEFAULT_ERROR_MESSAGE_LIMIT`].
    pub fn error_message_limit(mut self, bytes: usize) -> Self {
        self.error_message_limit = bytes;
        self
    }

    /// The namespace in which non-UUID user and session ids become UUIDv5. Default
    /// [`DEFAULT_ID_NAMESPACE`]; keep it stable, or the same user gets a new id.
    pub fn id_namespace(mut self, namespace: Uuid) -> Self {
        self.id_namespace = namespace;
        self
    }

    /// Prices per model, from which each record's `cost_nano_usd` is computed exactly. Records
    /// with tokens but no price keep `cost_nano_usd = None` and are counted in
    /// [`Health::unpriced`].
    pub fn pricing(mut self, pricing: Pricing) -> Self {
        self.pricing = Some(pricing);
        self
    }

    /// How many times a batch whose write failed transiently (a refused connection, a timeout, a
    /// deadlock) is tried again before its records count as failed. Default
    /// [`DEFAULT_MAX_RETRIES`].
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The backoff between retries: exponential from `base`, capped at `max`, with full jitter.
    /// Defaults [`DEFAULT_RETRY_BASE`] and [`DEFAULT_RETRY_MAX`].
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry.base = base;
        self.retry.max = max;
        self
    }

    /// How long one sink write may take before it fails as a timeout and is retried (a
    /// half-open connection can otherwise hang a write for minutes). Default
    /// [`DEFAULT_WRITE_TIMEOUT`].
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Deletes records of calls older than `age` (at start, then hourly), keeping the rollups,
    /// so reports over old months still answer. Detailed records are personal data: keep them
    /// only as long as needed. Default: kept forever.
    pub fn retention(mut self, age: Duration) -> Self {
        self.retention = Some(age);
        self
    }

    /// Where records the database rejects (after the batch is split to find them) are appended,
    /// one JSON object per line with the database's reason. Without it they are logged at error
    /// level with their content. Either way they are counted in [`Health::quarantined`].
    pub fn quarantine_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.quarantine_file = Some(path.into());
        self
    }

    /// Keeps records on disk in `dir` while the sink is failing (after retries), and at a
    /// shutdown that misses its deadline; they are replayed in order when the sink recovers, and
    /// at the next start. See [`Fsync`](crate::Fsync) for what a crash can cost.
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool.dir = Some(dir.into());
        self
    }

    /// The most the spool may hold on disk; records that would pass it count as failed. Default
    /// [`DEFAULT_SPOOL_MAX_BYTES`]. Needs [`spool_dir`](Self::spool_dir), before or after this;
    /// without it, [`install`](Self::install) fails with [`Error::InvalidConfig`].
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool.max_bytes = Some(bytes);
        self
    }

    /// When spooled records are forced to disk. Default [`DEFAULT_SPOOL_FSYNC`]. Needs
    /// [`spool_dir`](Self::spool_dir), before or after this; without it,
    /// [`install`](Self::install) fails with [`Error::InvalidConfig`].
    pub fn spool_fsync(mut self, fsync: crate::spool::Fsync) -> Self {
        self.spool.fsync = Some(fsync);
        self
    }

    /// What a finished call does when the queue is full. Default [`Overflow::Spill`] with a
    /// spool, [`Overflow::DropNewest`] without.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// When records are safe from a crash. Default [`Durability::Memory`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    fn check(&self) -> Result<(), Error> {
        if self.batch() == 0 {
            return Err(Error::InvalidConfig("batch_size must be at least 1".into()));
        }
        if self.queue_capacity < self.batch() {
            return Err(Error::InvalidConfig(format!(
                "queue_capacity ({}) must be at least batch_size ({})",
                self.queue_capacity,
                self.batch()
            )));
        }
        if self.flush_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "flush_interval must be above zero".into(),
            ));
        }
        if self.retention.is_some_and(|age| age.is_zero()) {
            return Err(Error::InvalidConfig("retention must be above zero".into()));
        }
        if self.write_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "write_timeout must be above zero".into(),
            ));
        }
        if self.spool.dir.is_none() {
            if self.spool.max_bytes.is_some() {
                return Err(Error::InvalidConfig(
                    "spool_max_bytes needs a spool: set spool_dir".into(),
                ));
            }
            if self.spool.fsync.is_some() {
                return Err(Error::InvalidConfig(
                    "spool_fsync needs a spool: set spool_dir".into(),
                ));
            }
            if self.overflow == Some(Overflow::Spill) {
                return Err(Error::InvalidConfig(
                    "Overflow::Spill needs a spool: set spool_dir".into(),
                ));
            }
            if self.durability == Durability::SpoolFirst {
                return Err(Error::InvalidConfig(
                    "Durability::SpoolFirst needs a spool: set spool_dir".into(),
                ));
            }
        }
        Ok(())
    }

    /// Starts the worker and makes this the process-wide tracker.
    ///
    /// Fails with [`Error::AlreadyInstalled`] while another tracker is installed; once that one is
    /// shut down (or its guard dropped), a new one may be installed.
    pub fn install(self) -> Result<TrackerGuard, Error> {
        self.check()?;
        let batch_size = self.batch();
        let sink = self.sink.ok_or(Error::NoSink)?;
        let _install = INSTALL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if GLOBAL.load().is_some() {
            return Err(Error::AlreadyInstalled);
        }
        // Calibrate the clock now rather than on the first tracked call.
        let _ = quanta::Instant::now();
        crate::guard::ERROR_MESSAGE_LIMIT.store(self.error_message_limit, Ordering::Relaxed);
        let context = RecordContext {
            service: crate::call::shared_text(self.service.unwrap_or_else(default_service)),
            instance: crate::call::shared_text(self.instance.unwrap_or_else(default_instance)),
            namespace: self.id_namespace,
            pricing: self.pricing.map(Arc::new),
        };
        let (spool, recovery) = match &self.spool.dir {
            Some(dir) => {
                let (spool, recovery) = crate::spool::Spool::open(
                    dir,
                    self.spool.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
                    self.spool.fsync.unwrap_or(DEFAULT_SPOOL_FSYNC),
                )
                .map_err(|error| Error::Spool {
                    dir: dir.display().to_string(),
                    source: error,
                })?;
                if recovery.records > 0 {
                    tracing::info!(
                        records = recovery.records,
                        dir = %dir.display(),
                        "usage spool holds records from an earlier run: replaying them"
                    );
                }
                (Some(spool), recovery)
            }
            None => (None, crate::spool::Recovery::default()),
        };
        let overflow = self.overflow.unwrap_or(if spool.is_some() {
            Overflow::Spill
        } else {
            Overflow::DropNewest
        });
        let shared = Arc::new(Shared::new(self.queue_capacity, batch_size, overflow));
        shared
            .counters
            .spool_torn
            .store(recovery.torn, Ordering::Relaxed);
        shared
            .counters
            .spool_corrupt
            .store(recovery.corrupt, Ordering::Relaxed);
        let (requests, inbox) = mpsc::channel();
        let worker = worker::spawn(worker::Config {
            shared: Arc::clone(&shared),
            sink,
            context,
            batch_size,
            flush_interval: self.flush_interval,
            retry: self.retry,
            write_timeout: self.write_timeout,
            quarantine_file: self.quarantine_file,
            spill: overflow == Overflow::Spill,
            spool_first: self.durability == Durability::SpoolFirst,
            retention: self.retention,
            spool,
            inbox,
        })
        .map_err(Error::WorkerSpawn)?;
        let _ = shared.worker.set(worker.thread().clone());
        GLOBAL.store(Some(Arc::clone(&shared)));
        Ok(TrackerGuard {
            shared,
            requests,
            worker: Some(worker),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

fn default_service() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown_service".to_owned())
}

fn default_instance() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// State shared by the hot path, the worker and the guard.
pub(crate) struct Shared {
    pub(crate) queue: Queue<RawCall>,
    overflow: Overflow,
    wake_threshold: usize,
    /// A thread looks at its ring's length once per this many of its pushes: the length reads
    /// the worker's end of the ring, a cache line the worker keeps writing while it drains.
    check_every: u32,
    wake_pending: AtomicBool,
    worker: OnceLock<Thread>,
    /// On cache lines of their own: the worker counts on them all the time, and would otherwise
    /// take from every calling core the line it reads the queue from on each push.
    pub(crate) counters: CachePadded<Counters>,
    pub(crate) status: Mutex<Status>,
    /// The shutdown deadline, once shutdown has begun; a write in progress gives up at it.
    pub(crate) shutdown_deadline: tokio::sync::watch::Sender<Option<Instant>>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) taken: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_at_shutdown: AtomicU64,
    pub(crate) unpriced: AtomicU64,
    pub(crate) saturated: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) pruned: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) spool_records: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spool_torn: AtomicU64,
    pub(crate) spool_corrupt: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Status {
    pub(crate) last_write_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) state: HealthState,
}

/// The tracker's state, from its last writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// The last batch was written on the first attempt, and nothing was dropped since.
    #[default]
    Healthy,
    /// Records are being written, but the last batch needed retries, or records were dropped or
    /// quarantined since.
    Degraded,
    /// Writes are failing (being retried, or given up on).
    Failing,
}

impl Shared {
    fn new(capacity: usize, batch_size: usize, overflow: Overflow) -> Self {
        let queue = Queue::new(capacity);
        Shared {
            // Each thread sees only its own ring's length; wake when a share of a batch waits in it.
            wake_threshold: batch_size.div_ceil(queue.shard_count()).max(1),
            check_every: u32::try_from(batch_size.div_ceil(queue.shard_count()) / 32)
                .unwrap_or(u32::MAX)
                .clamp(1, 64),
            queue,
            overflow,
            wake_pending: AtomicBool::new(false),
            worker: OnceLock::new(),
            counters: CachePadded::new(Counters::default()),
            status: Mutex::new(Status::default()),
            shutdown_deadline: tokio::sync::watch::Sender::new(None),
        }
    }

    #[inline]
    fn push(&self, call: RawCall) {
        thread_local! {
            /// Pushes until this thread next looks at its ring's length.
            static UNTIL_CHECK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let (ring, own) = match self.queue.push(call) {
            Ok(pushed) => pushed,
            Err(call) => {
                self.full(call);
                return;
            }
        };
        // A push that went to another ring (its own was full) always looks.
        let check = !own
            || UNTIL_CHECK
                .try_with(|left| match left.get() {
                    0 => {
                        left.set(self.check_every - 1);
                        true
                    }
                    n => {
                        left.set(n - 1);
                        false
                    }
                })
                .unwrap_or(true);
        // Wake the worker once a batch is waiting, not per record.
        if check
            && !self.wake_pending.load(Ordering::Relaxed)
            && self.queue.ring_len(ring) >= self.wake_threshold
            && !self.wake_pending.swap(true, Ordering::AcqRel)
        {
            self.wake_worker();
        }
    }

    /// The queue is full: wait for room if the policy says so, else drop and count.
    #[cold]
    fn full(&self, mut call: RawCall) {
        // Whatever the policy, a full queue needs the worker now.
        self.wake_worker();
        if let Overflow::Block(timeout) = self.overflow {
            let deadline = Instant::now() + timeout;
            let mut pause = Duration::from_micros(20);
            loop {
                match self.queue.push(call) {
                    Ok(_) => return,
                    Err(back) => call = back,
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
        }
        self.dropped_full(call);
    }

    #[cold]
    fn dropped_full(&self, call: RawCall) {
        let dropped = self
            .counters
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(
                dropped,
                operation = call.op.name(),
                "usage queue is full: dropping new records (raise queue_capacity or check the sink)"
            );
        }
    }

    /// Records failed, dropped or quarantined so far.
    pub(crate) fn unwritten(&self) -> u64 {
        let counters = &self.counters;
        counters.failed.load(Ordering::Relaxed)
            + counters.quarantined.load(Ordering::Relaxed)
            + counters.dropped_queue_full.load(Ordering::Relaxed)
            + counters.dropped_at_shutdown.load(Ordering::Relaxed)
    }

    pub(crate) fn wake_worker(&self) {
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    /// Clears the wake flag; the worker calls this when it wakes.
    pub(crate) fn take_wake(&self) -> bool {
        self.wake_pending.swap(false, Ordering::AcqRel)
    }

    fn health(&self) -> Health {
        let counters = &self.counters;
        let taken = counters.taken.load(Ordering::Relaxed);
        let queue_depth = self.queue.len();
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        Health {
            queue_depth,
            accepted: taken + queue_depth as u64,
            written: counters.written.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            dropped: counters.dropped_queue_full.load(Ordering::Relaxed)
                + counters.dropped_at_shutdown.load(Ordering::Relaxed),
            dropped_queue_full: counters.dropped_queue_full.load(Ordering::Relaxed),
            dropped_at_shutdown: counters.dropped_at_shutdown.load(Ordering::Relaxed),
            state: status.state,
            retries: counters.retries.load(Ordering::Relaxed),
            quarantined: counters.quarantined.load(Ordering::Relaxed),
            pruned: counters.pruned.load(Ordering::Relaxed),
            spooled: counters.spooled.load(Ordering::Relaxed),
            replayed: counters.replayed.load(Ordering::Relaxed),
            spool_records: counters.spool_records.load(Ordering::Relaxed),
            spool_bytes: counters.spool_bytes.load(Ordering::Relaxed),
            spool_torn_tails: counters.spool_torn.load(Ordering::Relaxed),
            spool_corrupt_frames: counters.spool_corrupt.load(Ordering::Relaxed),
            unpriced: counters.unpriced.load(Ordering::Relaxed),
            token_counts_saturated: counters.saturated.load(Ordering::Relaxed),
            last_write_at: status.last_write_at,
            last_error: status.last_error.clone(),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Calls pushed after the worker's final drain (a race with shutdown) end here: counted and
        // reported, never silently gone.
        let left = self.queue.len() as u64;
        if left > 0 {
            WITHOUT_TRACKER.fetch_add(left, Ordering::Relaxed);
            tracing::error!(
                records = left,
                "usage records arrived after the tracker shut down and were not written"
            );
        }
    }
}

/// Hands a finished call to the installed tracker.
#[inline]
pub(crate) fn submit(call: RawCall) {
    thread_local! {
        /// This thread's view of the installed tracker: one atomic read tells it is current.
        static CURRENT: std::cell::RefCell<
            arc_swap::Cache<&'static ArcSwapOption<Shared>, Option<Arc<Shared>>>,
        > = std::cell::RefCell::new(arc_swap::Cache::new(&GLOBAL));
    }
    let mut call = Some(call);
    let _ = CURRENT.try_with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            if let Some(call) = call.take() {
                match current.load().as_deref() {
                    Some(shared) => shared.push(call),
                    None => without_tracker(call),
                }
            }
        }
    });
    // A thread whose thread-locals are being torn down: the shared view.
    if let Some(call) = call {
        match GLOBAL.load().as_deref() {
            Some(shared) => shared.push(call),
            None => without_tracker(call),
        }
    }
}

#[cold]
fn without_tracker(call: RawCall) {
    if WITHOUT_TRACKER.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(
            operation = call.op.name(),
            "a tracked call finished with no usage tracker installed; its record is lost \
             (install one with usage_runtime::Tracker::builder()...install()). \
             Further losses are counted in usage_runtime::calls_without_tracker()"
        );
    }
}

/// The installed tracker's health, or `None` when none is installed: for a health endpoint that
/// has no handle on the [`TrackerGuard`].
pub fn health() -> Option<Health> {
    GLOBAL.load().as_deref().map(Shared::health)
}

/// Tracked calls that finished while no tracker was installed (their records are lost), plus any
/// that arrived at a tracker after its final drain. Reported once through `tracing::warn!`.
pub fn calls_without_tracker() -> u64 {
    WITHOUT_TRACKER.load(Ordering::Relaxed)
}

/// A snapshot of the tracker's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Healthy, degraded or failing, from the last writes.
    pub state: HealthState,
    /// Calls waiting in memory.
    pub queue_depth: usize,
    /// Calls taken into the queue.
    pub accepted: u64,
    /// Records written by the sink.
    pub written: u64,
    /// Records whose write failed.
    pub failed: u64,
    /// Records dropped, for any cause (the sum of the two counters below).
    pub dropped: u64,
    /// Calls dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records still unwritten when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
    /// Write attempts repeated after a transient failure.
    pub retries: u64,
    /// Records the database rejected, set aside with the reason (never retried).
    pub quarantined: u64,
    /// Records deleted by the retention (in all).
    pub pruned: u64,
    /// Records put in the disk spool because the sink was failing (in all).
    pub spooled: u64,
    /// Records written from the spool (in all, including those a previous run left).
    pub replayed: u64,
    /// Records waiting in the spool now.
    pub spool_records: u64,
    /// Bytes the spool takes on disk now.
    pub spool_bytes: u64,
    /// Torn segment tails truncated when the spool was opened.
    pub spool_torn_tails: u64,
    /// Corrupt frames skipped when the spool was opened.
    pub spool_corrupt_frames: u64,
    /// Records with token counts but no price for their model (their cost is unknown, not zero).
    pub unpriced: u64,
    /// Records whose token counts overflowed and were held at `u64::MAX`.
    pub token_counts_saturated: u64,
    /// When the sink last wrote a batch.
    pub last_write_at: Option<DateTime<Utc>>,
    /// The last write error, without secrets.
    pub last_error: Option<String>,
}

/// The installed tracker. Dropping it flushes what is queued, bounded by the shutdown timeout,
/// and uninstalls the tracker.
pub struct TrackerGuard {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    worker: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for TrackerGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerGuard")
            .field("health", &self.health())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl TrackerGuard {
    /// Writes every call finished before this point; returns once they are written (or failed).
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.send(Request::Flush(Reply::new(
            &self.shared,
            ReplyTo::Async(reply),
        )))?;
        done.await.map_err(|_| Error::WorkerStopped)?
    }

    /// [`flush`](Self::flush) for synchronous code; blocks this thread (never the worker), so it
    /// is safe inside any runtime.
    pub fn flush_blocking(&self) -> Result<(), Error> {
        let (reply, done) = mpsc::sync_channel(1);
        self.send(Request::Flush(Reply::new(
            &self.shared,
            ReplyTo::Blocking(reply),
        )))?;
        done.recv().map_err(|_| Error::WorkerStopped)?
    }

    /// Uninstalls the tracker and writes what is left, within the shutdown timeout. Records still
    /// unwritten at the deadline are counted in `dropped_at_shutdown` and logged.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.begin_shutdown(ReplyTo::Async(reply))?;
        let result = done.await.map_err(|_| Error::WorkerStopped)?;
        self.join();
        result
    }

    /// The tracker's counters and last error.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    fn send(&self, request: Request) -> Result<(), Error> {
        self.requests
            .send(request)
            .map_err(|_| Error::WorkerStopped)?;
        self.shared.wake_worker();
        Ok(())
    }

    fn begin_shutdown(&mut self, reply: ReplyTo) -> Result<(), Error> {
        uninstall(&self.shared);
        // A shutdown already under way (a `shutdown()` future dropped early) keeps its deadline.
        let deadline = Instant::now() + self.shutdown_timeout;
        self.shared.shutdown_deadline.send_if_modified(|current| {
            let unset = current.is_none();
            current.get_or_insert(deadline);
            unset
        });
        self.send(Request::Shutdown(Reply::new(&self.shared, reply)))
    }

    fn join(&mut self) {
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the usage worker panicked during shutdown");
            }
        }
    }
}

fn uninstall(shared: &Arc<Shared>) {
    let _install = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let current = GLOBAL.load();
    if current
        .as_ref()
        .is_some_and(|installed| Arc::ptr_eq(installed, shared))
    {
        GLOBAL.store(None);
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.worker.is_none() {
            return;
        }
        let (reply, done) = mpsc::sync_channel(1);
        if self.begin_shutdown(ReplyTo::Blocking(reply)).is_err() {
            self.join();
            return;
        }
        // The worker honours the deadline itself; the margin covers its last reply.
        match done.recv_timeout(self.shutdown_timeout + Duration::from_secs(1)) {
            Ok(Ok(())) => self.join(),
            Ok(Err(error)) => {
                tracing::error!(%error, "usage tracker shut down with unwritten records");
                self.join();
            }
            Err(_) => tracing::error!(
                timeout = ?self.shutdown_timeout,
                "usage worker did not finish within the shutdown timeout; detaching it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_capped_and_jittered() {
        let retry = Retry {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..=10 {
            let ceiling =
                (Duration::from_millis(100) * (1 << (attempt - 1))).min(Duration::from_secs(1));
            let delays: Vec<Duration> = (0..200).map(|_| retry.delay(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter spreads the waits over the whole range.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn defaults_are_pinned() {
        let builder = Tracker::builder();
        assert_eq!(builder.batch(), 4096);
        // A smaller queue keeps half its room free of the default batch.
        assert_eq!(Tracker::builder().queue_capacity(1000).batch(), 500);
        assert_eq!(Tracker::builder().queue_capacity(8192).batch(), 4096);
        assert_eq!(Tracker::builder().queue_capacity(1).batch(), 1);
        assert_eq!(
            Tracker::builder().queue_capacity(10).batch_size(7).batch(),
            7
        );
        assert_eq!(builder.flush_interval, Duration::from_secs(1));
        assert_eq!(builder.queue_capacity, 65_536);
        assert_eq!(builder.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(builder.error_message_limit, 1024);
        assert_eq!(builder.id_namespace, DEFAULT_ID_NAMESPACE);
        assert_eq!(builder.retry.max_retries, 5);
        assert_eq!(builder.retry.base, Duration::from_millis(100));
        assert_eq!(builder.retry.max, Duration::from_secs(10));
        assert_eq!(
            builder.overflow, None,
            "Spill with a spool, DropNewest without"
        );
        assert_eq!(builder.durability, Durability::Memory);
        assert!(builder.check().is_ok());
    }

    #[test]
    fn invalid_settings_are_named() {
        let sink = crate::sink::MemorySink::new();
        let err = Tracker::builder()
            .sink(sink.clone())
            .batch_size(0)
            .install()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(ref m) if m.contains("batch_size")),
            "{err}"
        );
        let err = Tracker::builder()
            .sink(sink.clone())
            .batch_size(100)
            .queue_capacity(10)
            .install()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(ref m) if m.contains("queue_capacity")),
            "{err}"
        );
        let err = Tracker::builder()
            .sink(sink)
            .flush_interval(Duration::ZERO)
            .install()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(matches!(
            Tracker::builder().install().unwrap_err(),
            Error::NoSink
        ));
    }
}
