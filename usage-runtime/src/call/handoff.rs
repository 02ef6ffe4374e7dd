//! Where the hot path hands its calls: the installed tracker's queue, with the state the worker
//! shares with the hot path (counters, health state, the shutdown deadline). Defined here, in the
//! call layer, so the pipeline depends on the call and never the other way round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use crossbeam_utils::CachePadded;
use serde::Serialize;

use super::queue::Queue;
use super::raw::RawCall;

/// The installed tracker, if any. Loaded once per finished call.
pub(crate) static GLOBAL: ArcSwapOption<Shared> = ArcSwapOption::const_empty();
/// Serialises `install` so two racing installs cannot both succeed.
pub(crate) static INSTALL: Mutex<()> = Mutex::new(());
/// Calls finished while no tracker was installed.
pub(crate) static WITHOUT_TRACKER: AtomicU64 = AtomicU64::new(0);

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

/// State shared by the hot path, the worker and the guard.
pub(crate) struct Shared {
    pub(crate) queue: Queue<RawCall>,
    overflow: Overflow,
    wake_threshold: usize,
    /// A thread looks at its ring's length once per this many of its pushes: the length reads
    /// the worker's end of the ring, a cache line the worker keeps writing while it drains.
    check_every: u32,
    wake_pending: AtomicBool,
    /// Set when the worker thread ended on a panic (`HealthState::Stopped`).
    pub(crate) worker_stopped: AtomicBool,
    pub(crate) worker: OnceLock<Thread>,
    /// On cache lines of their own: the worker counts on them all the time, and would otherwise
    /// take from every calling core the line it reads the queue from on each push.
    pub(crate) counters: CachePadded<Counters>,
    pub(crate) status: Mutex<Status>,
    /// The shutdown deadline, once shutdown has begun; a write in progress gives up at it.
    pub(crate) shutdown_deadline: tokio::sync::watch::Sender<Option<Instant>>,
}

/// Each counter is the [`Health`](crate::Health) field of the same name, documented there.
#[derive(Default)]
pub(crate) struct Counters {
    // Where each record ends (the accounting identity, `Health::unaccounted`).
    pub(crate) taken: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_at_shutdown: AtomicU64,
    pub(crate) outcome_unknown: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    // What happened to records on the way, each also counted above.
    pub(crate) unpriced: AtomicU64,
    pub(crate) saturated: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) pruned: AtomicU64,
    // The spool.
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) spool_records: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spool_torn: AtomicU64,
    pub(crate) spool_recovered: AtomicU64,
    pub(crate) spool_corrupt: AtomicU64,
    pub(crate) spool_lost: AtomicU64,
    pub(crate) spool_skipped: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Status {
    pub(crate) last_write_at: Option<DateTime<Utc>>,
    /// When the oldest record waiting in the spool started, once known (`None` when it is empty).
    pub(crate) spool_oldest_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) state: HealthState,
}

/// The tracker's state, from its last writes: set after each batch, the worst that applies
/// first (failing, then catching up, then degraded, then healthy); stopped is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// The last batch was written on the first attempt, and nothing was dropped since.
    #[default]
    Healthy,
    /// Records are being written, but the last batch needed retries, or records were quarantined
    /// in it, or calls were dropped on a full queue since the batch before it (during its write
    /// or between the two).
    Degraded,
    /// Writes succeed, and records set aside while they failed are being written, oldest first:
    /// [`Health::spool_records`](crate::Health::spool_records) wait, the oldest from
    /// [`Health::spool_oldest_at`](crate::Health::spool_oldest_at). Healthy (or degraded) again
    /// once the spool is empty; failing if a write fails.
    CatchingUp,
    /// Writes are failing (being retried, or given up on), or records missed the shutdown
    /// deadline. The next batch written moves it to catching up (while the spool holds
    /// records), degraded or healthy.
    Failing,
    /// The worker thread stopped (it panicked): nothing is written any more, calls fill the
    /// queue and are then dropped and counted, and `flush` answers `WorkerStopped`. Only a new
    /// tracker recovers; `last_error` says why it stopped.
    Stopped,
}

impl Shared {
    pub(crate) fn new(capacity: usize, batch_size: usize, overflow: Overflow) -> Self {
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
            worker_stopped: AtomicBool::new(false),
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
        // A stopped worker never makes room: waiting would only hold the caller up.
        if let (Overflow::Block(timeout), false) =
            (self.overflow, self.worker_stopped.load(Ordering::Relaxed))
        {
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
            // Perhaps stored, but not known to be: a flush cannot say they were written.
            + counters.outcome_unknown.load(Ordering::Relaxed)
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

/// Tracked calls that finished while no tracker was installed (their records are lost), plus any
/// that arrived at a tracker after its final drain. Reported once through `tracing::warn!`.
pub fn calls_without_tracker() -> u64 {
    WITHOUT_TRACKER.load(Ordering::Relaxed)
}
