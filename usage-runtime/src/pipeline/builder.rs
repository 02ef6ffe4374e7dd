//! Configuring the tracker: its settings, each default documented beside its setter, and
//! `install`, which checks them, opens the spool, starts the worker and makes the tracker the
//! process's.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use uuid::Uuid;

use super::pricing::Pricing;
use super::record::{shared_text, RecordContext};
use super::tracker::Tracker;
use super::worker::{self, Retry};
pub use crate::call::handoff::Overflow;
use crate::call::handoff::{Shared, GLOBAL, INSTALL};
use crate::error::Error;
use crate::sink::{BoxedSink, Sink};

/// Records per sink write (fewer when the queue holds fewer). Large enough for the PostgreSQL and
/// MySQL sinks to write a full batch over their default 4 connections at once, in parts of 1,024
/// records (`sink::DEFAULT_WRITE_CONNECTIONS`, `sink::MIN_PART_RECORDS`).
pub const DEFAULT_BATCH_SIZE: usize = 4096;
/// The least records per write while catching up (a spool replay, or more than two batches
/// waiting in the queue), whatever [`TrackerBuilder::batch_size`] says: a backlog drains at the
/// sink's best rate while live batches stay small.
pub const CATCH_UP_BATCH_SIZE: usize = 4 * DEFAULT_BATCH_SIZE;
/// How often the worker writes what has accumulated, when batches do not fill sooner.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Calls held in memory before new ones are dropped (and counted).
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// How long dropping the guard (or `shutdown`) may take to write what is left.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
pub use crate::call::dimension::{DEFAULT_ATTRIBUTES_LIMIT, DEFAULT_ID_NAMESPACE};

/// The longest any time setting may be (a year): each is added to the clock, and a sum near
/// `Duration::MAX` would overflow it.
pub const LONGEST_SETTING: Duration = Duration::from_secs(365 * 86_400);
pub use crate::call::guard::DEFAULT_ERROR_MESSAGE_LIMIT;
/// Attempts after the first for a batch whose write failed transiently.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// The first retry waits up to this long (full jitter); each further one up to twice as long.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A sink write taking longer than this fails as a timeout (and is retried).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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

impl Tracker {
    /// A builder with the `DEFAULT_*` settings and no sink; its
    /// [`install`](TrackerBuilder::install) starts the tracker.
    pub fn builder() -> TrackerBuilder {
        TrackerBuilder::new()
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
    attributes_limit: usize,
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
            .field("attributes_limit", &self.attributes_limit)
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
    pub(super) fn new() -> Self {
        TrackerBuilder {
            sink: None,
            service: None,
            instance: None,
            batch_size: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            error_message_limit: DEFAULT_ERROR_MESSAGE_LIMIT,
            attributes_limit: DEFAULT_ATTRIBUTES_LIMIT,
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
    /// at most the queue capacity. A backlog is written in larger writes
    /// ([`CATCH_UP_BATCH_SIZE`]).
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

    /// Bytes of JSON a record's `fields(...)` attributes may take, held at the call so neither
    /// the queue nor the spool keeps more: a string past it is cut and ends with `…`, another
    /// value is left out, and the record gets the attribute
    /// [`CUT_ATTRIBUTE`](crate::dimensions::CUT_ATTRIBUTE) naming the fields cut. Default
    /// [`DEFAULT_ATTRIBUTES_LIMIT`].
    pub fn attributes_limit(mut self, bytes: usize) -> Self {
        self.attributes_limit = bytes;
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
    /// [`Health::unpriced`](crate::Health::unpriced).
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
    /// level with their content. Either way they are counted in [`Health::quarantined`](crate::Health::quarantined).
    pub fn quarantine_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.quarantine_file = Some(path.into());
        self
    }

    /// Keeps records on disk in `dir` while the sink is failing (after retries), and at a
    /// shutdown that misses its deadline; they are replayed in order when the sink recovers, and
    /// at the next start. See [`Fsync`](crate::spool::Fsync) for what a crash can cost.
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
        // Times are added to `Instant::now()`: a setting near `Duration::MAX` would overflow and
        // stop the worker (or, with `Overflow::Block`, panic in the caller).
        let fsync = match self.spool.fsync {
            Some(crate::spool::Fsync::Interval(interval)) => Some(interval),
            _ => None,
        };
        let block = match self.overflow {
            Some(Overflow::Block(timeout)) => Some(timeout),
            _ => None,
        };
        let durations = [
            ("flush_interval", Some(self.flush_interval)),
            ("shutdown_timeout", Some(self.shutdown_timeout)),
            ("write_timeout", Some(self.write_timeout)),
            ("retry_backoff's base", Some(self.retry.base)),
            ("retry_backoff's max", Some(self.retry.max)),
            ("spool_fsync's Fsync::Interval", fsync),
            ("Overflow::Block's timeout", block),
        ];
        for (name, value) in durations {
            if let Some(value) = value.filter(|value| *value > LONGEST_SETTING) {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be at most {} days, not {value:?}",
                    LONGEST_SETTING.as_secs() / 86_400
                )));
            }
        }
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
    pub fn install(self) -> Result<Tracker, Error> {
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
        crate::call::guard::ERROR_MESSAGE_LIMIT.store(self.error_message_limit, Ordering::Relaxed);
        crate::call::dimension::ATTRIBUTES_LIMIT.store(self.attributes_limit, Ordering::Relaxed);
        let context = RecordContext {
            service: shared_text(self.service.unwrap_or_else(default_service)),
            instance: shared_text(self.instance.unwrap_or_else(default_instance)),
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
            .spool_recovered
            .store(recovery.records, Ordering::Relaxed);
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
        Ok(Tracker {
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

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;
