//! The worker: one dedicated thread per tracker, owning a small current-thread tokio runtime, so
//! it never depends on (or deadlocks) the application's runtime, whatever its flavour, or the lack
//! of one. It sleeps until a batch is waiting, the flush interval passes, or a request arrives;
//! then it drains the queue in batches, stamps ids and writes them to the sink.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::call::handoff::{HealthState, Shared};
use crate::call::raw::RawCall;
use crate::error::{Error, FailureKind};
use crate::pipeline::record::{Anchor, RecordContext};
use crate::record::UsageRecord;
use crate::sink::BoxedSink;
use crate::spool::Spool;

mod batch;
mod delivery;
mod maintenance;
mod spooling;

use batch::{count_usage, Maker, Prefetch, PREFETCH_SLICE, SPILL_AFTER, SPILL_CHECK};
use delivery::Delivery;
use maintenance::{CATALOG_RETRY, CATALOG_RETRY_MAX};

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

/// A request from the tracker handle to the worker.
pub(crate) enum Request {
    /// Write everything queued, then reply.
    Flush(Reply),
    /// Write everything queued until the shutdown deadline, reply, and stop.
    Shutdown(Reply),
}

/// Where the worker sends its answer, and how many records were unwritten (failed or dropped)
/// when the request was made: the answer is an error if that number grew.
pub(crate) struct Reply {
    unwritten_before: u64,
    to: ReplyTo,
}

pub(crate) enum ReplyTo {
    Async(tokio::sync::oneshot::Sender<Result<(), Error>>),
    Blocking(mpsc::SyncSender<Result<(), Error>>),
}

impl Reply {
    pub(crate) fn new(shared: &Shared, to: ReplyTo) -> Self {
        Reply {
            unwritten_before: shared.unwritten(),
            to,
        }
    }

    fn send(self, shared: &Shared) {
        // The workspace's tests check the identity at every reply, when no write is in flight.
        #[cfg(any(test, feature = "check-accounting"))]
        {
            let health = crate::pipeline::health::Health::of(shared);
            assert_eq!(
                health.unaccounted(),
                0,
                "the accounting identity does not hold: {health:?}"
            );
        }
        let spooled = shared.counters.spool_records.load(Ordering::Relaxed);
        let unwritten = shared.unwritten().saturating_sub(self.unwritten_before) + spooled;
        let result = if unwritten == 0 {
            Ok(())
        } else {
            let reason = shared
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .last_error
                .clone()
                .unwrap_or_else(|| "dropped".to_owned());
            let reason = if spooled > 0 {
                format!("{spooled} record(s) wait in the spool for the sink; last error: {reason}")
            } else {
                reason
            };
            Err(Error::NotWritten {
                count: unwritten,
                reason,
            })
        };
        // A waiter that gave up (dropped its receiver) needs no answer.
        match self.to {
            ReplyTo::Async(sender) => {
                let _ = sender.send(result);
            }
            ReplyTo::Blocking(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

/// What the builder hands the worker, checked already.
pub(crate) struct Config {
    /// The counters and status the hot path and `Health` read.
    pub(crate) shared: Arc<Shared>,
    pub(crate) sink: BoxedSink,
    /// What turns a finished call into a record (service, instance, pricing, id namespace).
    pub(crate) context: RecordContext,
    pub(crate) batch_size: usize,
    /// The longest a finished call waits before its batch is written.
    pub(crate) flush_interval: Duration,
    pub(crate) retry: Retry,
    /// A write that takes longer fails as a (transient) timeout.
    pub(crate) write_timeout: Duration,
    pub(crate) quarantine_file: Option<std::path::PathBuf>,
    pub(crate) spool: Option<Spool>,
    /// Move queued records to the spool while the sink fails (`Overflow::Spill`).
    pub(crate) spill: bool,
    /// Every record goes through the spool (`Durability::SpoolFirst`).
    pub(crate) spool_first: bool,
    /// Records older than this are deleted (the rollups stay).
    pub(crate) retention: Option<Duration>,
    pub(crate) inbox: mpsc::Receiver<Request>,
}

pub(crate) fn spawn(config: Config) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(&config.shared);
    let worker = Worker::new(config)?;
    thread::Builder::new()
        .name("usage-worker".into())
        .spawn(move || run_guarded(&shared, || worker.run()))
}

/// Runs the worker; a panic that escapes it (a bug: a sink's own panic is caught per write) is
/// shown in health as [`HealthState::Stopped`] and logged, rather than leaving a tracker that
/// says it is healthy while nothing is written.
fn run_guarded(shared: &Shared, run: impl FnOnce()) {
    let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) else {
        return;
    };
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(%message, "the usage worker stopped; records are no longer written");
    shared.worker_stopped.store(true, Ordering::Relaxed);
    let mut status = shared
        .status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    status.state = HealthState::Stopped;
    status.last_error = Some(format!("the worker stopped: {message}"));
}

struct Worker {
    config: Config,
    runtime: tokio::runtime::Runtime,
    /// Replays that failed in a row, and when the next may be tried (backing off while the sink
    /// stays down, so a busy service does not hammer a dead database).
    replay_failures: u32,
    next_replay: Instant,
    /// Records of the spool's oldest batch quarantined by a replay that did not settle the whole
    /// batch: the batch stays in the spool, and they are not sent (and quarantined) again.
    replay_quarantined: std::collections::HashSet<uuid::Uuid>,
    /// Of those, the records refused as older than the pruned horizon.
    replay_expired: std::collections::HashSet<uuid::Uuid>,
    /// Halvings of the catch-up size after replays cut by the write timeout (a database too
    /// slow for the largest writes); back to none once the spool is empty.
    catch_up_shrink: u32,
    /// The next batch of a drain, built while the current one's write is in flight.
    prefetch: Option<Prefetch>,
    /// Makes records between drains.
    maker: Maker,
    /// When the retention may next prune.
    next_prune: Instant,
    /// Records lost at the shutdown deadline that were already logged.
    lost_at_deadline: u64,
    /// Calls dropped on a full queue as of the last health update: a batch after new drops
    /// (during its write or before it, between batches) is degraded.
    drops_seen: u64,
}

impl Worker {
    fn new(config: Config) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Worker {
            config,
            runtime,
            replay_failures: 0,
            replay_quarantined: std::collections::HashSet::new(),
            replay_expired: std::collections::HashSet::new(),
            catch_up_shrink: 0,
            prefetch: None,
            maker: Maker::default(),
            next_replay: Instant::now(),
            next_prune: Instant::now(),
            lost_at_deadline: 0,
            drops_seen: 0,
        })
    }

    fn run(mut self) {
        self.serve();
        // A sink's blocking task still running (a write to a disk that stopped answering) must
        // not hold up the end of the worker, and so the shutdown that waits for it.
        let Worker { runtime, .. } = self;
        runtime.shutdown_background();
    }

    fn serve(&mut self) {
        let interval = self.config.flush_interval;
        self.publish_spool();
        // When to record the operation catalog next, and the wait after that attempt fails (zero
        // before the first attempt); `None` once it is recorded.
        let mut catalog: Option<(Instant, Duration)> = Some((Instant::now(), Duration::ZERO));
        // What a previous process left in the spool is replayed at once.
        let mut next_write = if self.spool_waiting() {
            Instant::now()
        } else {
            Instant::now() + interval
        };
        loop {
            let now = Instant::now();
            let batch_waiting = self.config.shared.queue.len() >= self.config.batch_size;
            // Wake for the next write, or sooner when spooled records are due to be fsynced.
            let wake_at = match self.config.spool.as_ref().and_then(Spool::sync_due_at) {
                Some(sync) => next_write.min(sync),
                None => next_write,
            };
            if now < wake_at && !batch_waiting && !self.config.shared.take_wake() {
                thread::park_timeout(wake_at - now);
                self.config.shared.take_wake();
            }
            let mut flushes = Vec::new();
            let mut shutdown = None;
            while let Ok(request) = self.config.inbox.try_recv() {
                match request {
                    Request::Flush(reply) => flushes.push(reply),
                    Request::Shutdown(reply) => shutdown = Some(reply),
                }
            }
            let interval_due = Instant::now() >= next_write;
            let due = interval_due || self.config.shared.queue.len() >= self.config.batch_size;
            if let Some(spool) = &mut self.config.spool {
                if let Err(error) = spool.sync_if_due(false) {
                    tracing::error!(%error, "usage spool: fsync failed");
                }
            }
            if !(due || !flushes.is_empty() || shutdown.is_some()) {
                continue;
            }
            // Older records first: the spool, then the queue (straight to the sink once the spool
            // is empty, behind it in the spool while the sink still fails).
            let asked = !flushes.is_empty() || shutdown.is_some();
            self.replay(asked);
            // Woken by a full batch alone: write whole batches, the rest waits to fill.
            self.drain(!(interval_due || asked));
            if let Some((due, wait)) = catalog {
                // After the first drain, so a database that is down at start delays no record;
                // after a failure, again once writes succeed, with a growing wait, and not while
                // shutting down.
                let first = wait.is_zero();
                if Instant::now() >= due && (first || (shutdown.is_none() && self.healthy())) {
                    catalog = if self.register_operations() {
                        None
                    } else {
                        let wait = (wait * 2).clamp(CATALOG_RETRY, CATALOG_RETRY_MAX);
                        Some((Instant::now() + wait, wait))
                    };
                }
            }
            self.prune_if_due();
            if self.config.spool_first {
                // What the drain just made durable is written now, not at the next wake-up.
                self.replay(true);
            }
            next_write = Instant::now() + interval;
            for reply in flushes {
                reply.send(&self.config.shared);
            }
            if let Some(reply) = shutdown {
                if let Some(spool) = &mut self.config.spool {
                    if let Err(error) = spool.sync_if_due(true) {
                        tracing::error!(%error, "usage spool: final fsync failed");
                    }
                }
                reply.send(&self.config.shared);
                return;
            }
        }
    }

    /// Writes, in batches, the records queued when the drain starts (not those arriving during
    /// it, so a flush under steady load still ends); with `whole_batches_only`, only as many as
    /// fill whole batches. Once the shutdown deadline has passed, what is left is counted as
    /// dropped and logged.
    fn drain(&mut self, whole_batches_only: bool) {
        let shared = Arc::clone(&self.config.shared);
        let left = shared.queue.waiting();
        let mut budget: usize = left.iter().sum();
        if whole_batches_only {
            budget -= budget % self.config.batch_size;
        }
        // A backlog (more than two batches waiting) is written in large writes.
        let size = if budget > 2 * self.config.batch_size {
            self.catch_up_size().min(budget)
        } else {
            self.config.batch_size
        };
        let mut next = Prefetch {
            anchor: Anchor::now(),
            left,
            budget,
            size,
            batch: self.maker.batch(size),
            filled: false,
            maker: std::mem::take(&mut self.maker),
        };
        loop {
            let deadline = *shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                if !next.batch.is_empty() {
                    self.spool_or_fail(&next.batch, "the shutdown deadline passed", 0);
                }
                self.drop_rest_at_deadline();
                break;
            }
            next.fill(&shared, &self.config.context, usize::MAX);
            let batch = std::mem::take(&mut next.batch);
            if batch.is_empty() {
                break;
            }
            if self.config.spool_first || self.spool_waiting() {
                // Durable first, or older records wait in the spool: keep the order.
                self.spool_or_fail(
                    &batch,
                    "the sink is failing; older records wait in the spool",
                    0,
                );
            } else {
                let mut outcome = Delivery::default();
                // The next batch is made while this one's first write is in flight.
                next.batch = next.maker.batch(next.size);
                next.filled = false;
                self.prefetch = Some(next);
                self.deliver(&batch, &mut outcome);
                next = self.prefetch.take().expect("the prefetch is handed back");
                self.count(&outcome);
                let unsettled = std::mem::take(&mut outcome.unsettled);
                outcome.failed = unsettled.len() as u64;
                if !unsettled.is_empty() {
                    let reason = outcome.last_error.clone().unwrap_or_default();
                    self.spool_or_fail(&unsettled, &reason, outcome.in_doubt);
                }
                self.settle(&outcome);
            }
            next.maker.recycle(batch);
        }
        self.maker = next.maker;
    }

    /// Whether the last writes went through without trouble.
    fn healthy(&self) -> bool {
        self.status(|status| status.state == HealthState::Healthy)
    }

    /// Sleeps, waking early if the shutdown deadline passes. With `Overflow::Spill`, the wait is
    /// spent moving queued records to the spool whenever the queue passes half full.
    fn sleep(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            if self.config.spill {
                self.spill();
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let slice = (until - now).min(Duration::from_millis(2));
            let mut deadline = self.config.shared.shutdown_deadline.subscribe();
            let passed = self.runtime.block_on(async move {
                tokio::select! {
                    _ = tokio::time::sleep(slice) => false,
                    _ = until_deadline(&mut deadline) => true,
                }
            });
            if passed {
                return;
            }
        }
    }

    fn set_state(&self, state: HealthState, error: Option<&str>) {
        let previous = self.status(|status| {
            if let Some(error) = error {
                status.last_error = Some(error.to_owned());
            }
            std::mem::replace(&mut status.state, state)
        });
        if previous == state {
            return;
        }
        match state {
            HealthState::Healthy => tracing::info!(from = ?previous, "usage tracker is healthy"),
            HealthState::Degraded => tracing::warn!(from = ?previous, "usage tracker is degraded"),
            HealthState::CatchingUp => {
                tracing::info!(from = ?previous, "usage tracker is writing its spool")
            }
            HealthState::Failing => {
                tracing::error!(from = ?previous, error = error.unwrap_or(""), "usage tracker is failing")
            }
            // Set only when the worker ends (`run_guarded`).
            HealthState::Stopped => {}
        }
    }

    fn status<T>(&self, update: impl FnOnce(&mut crate::call::handoff::Status) -> T) -> T {
        let mut status = self
            .config
            .shared
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        update(&mut status)
    }
}

/// Resolves when the shutdown deadline passes, with how long it waited from when it was set.
async fn until_deadline(deadline: &mut tokio::sync::watch::Receiver<Option<Instant>>) -> Duration {
    loop {
        let current = *deadline.borrow_and_update();
        if let Some(at) = current {
            let waited = at.saturating_duration_since(Instant::now());
            tokio::time::sleep_until(at.into()).await;
            return waited;
        }
        if deadline.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Config, Delivery, Retry, Worker};
    use crate::call::handoff::{HealthState, Overflow, Shared};
    use crate::pipeline::health::Health;
    use crate::pipeline::record::RecordContext;

    fn worker(shared: &Arc<Shared>) -> Worker {
        let (_requests, inbox) = std::sync::mpsc::channel();
        Worker::new(Config {
            shared: Arc::clone(shared),
            sink: Box::new(crate::sink::MemorySink::new()),
            context: RecordContext {
                service: "test".into(),
                instance: "test".into(),
                namespace: crate::call::dimension::DEFAULT_ID_NAMESPACE,
                pricing: None,
            },
            batch_size: 64,
            flush_interval: Duration::from_secs(1),
            retry: Retry {
                max_retries: 0,
                base: Duration::ZERO,
                max: Duration::ZERO,
            },
            write_timeout: Duration::from_secs(1),
            quarantine_file: None,
            spool: None,
            spill: false,
            spool_first: false,
            retention: None,
            inbox,
        })
        .unwrap()
    }

    #[test]
    fn calls_dropped_between_batches_make_the_next_batch_degraded() {
        let shared = Arc::new(Shared::new(64, 64, Overflow::DropNewest));
        let mut worker = worker(&shared);
        worker.settle(&Delivery::default());
        assert_eq!(Health::of(&shared).state, HealthState::Healthy);
        // Calls dropped on a full queue while no batch was being written.
        shared
            .counters
            .dropped_queue_full
            .fetch_add(5, Ordering::Relaxed);
        worker.settle(&Delivery::default());
        assert_eq!(Health::of(&shared).state, HealthState::Degraded);
        // A batch with no drops since is healthy again (the counter keeps the drops).
        worker.settle(&Delivery::default());
        assert_eq!(Health::of(&shared).state, HealthState::Healthy);
        assert_eq!(Health::of(&shared).dropped_queue_full, 5);
    }

    #[test]
    fn a_worker_that_panics_shows_as_stopped_with_the_reason() {
        let shared = Shared::new(64, 64, Overflow::DropNewest);
        assert_eq!(Health::of(&shared).state, HealthState::Healthy);
        super::run_guarded(&shared, || panic!("overflow when adding a duration"));
        let health = Health::of(&shared);
        assert_eq!(health.state, HealthState::Stopped);
        let error = health.last_error.unwrap();
        assert!(error.contains("overflow when adding a duration"), "{error}");
        assert!(shared.worker_stopped.load(Ordering::Relaxed));
        // A worker that ends without a panic leaves the state as it was.
        let shared = Shared::new(64, 64, Overflow::DropNewest);
        super::run_guarded(&shared, || {});
        assert_eq!(Health::of(&shared).state, HealthState::Healthy);
    }
}
