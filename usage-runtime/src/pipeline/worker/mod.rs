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

pub(crate) struct Config {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sink: BoxedSink,
    pub(crate) context: RecordContext,
    pub(crate) batch_size: usize,
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::Builder::new()
        .name("usage-worker".into())
        .spawn(move || {
            Worker {
                config,
                runtime,
                replay_failures: 0,
                replay_quarantined: std::collections::HashSet::new(),
                prefetch: None,
                maker: Maker::default(),
                next_replay: Instant::now(),
                next_prune: Instant::now(),
                lost_at_deadline: 0,
            }
            .run()
        })
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
    /// The next batch of a drain, built while the current one's write is in flight.
    prefetch: Option<Prefetch>,
    /// Makes records between drains.
    maker: Maker,
    /// When the retention may next prune.
    next_prune: Instant,
    /// Records lost at the shutdown deadline that were already logged.
    lost_at_deadline: u64,
}

/// How often records past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// When a prune that deleted records (and may have stopped early) goes on.
const PRUNE_AGAIN: Duration = Duration::from_secs(10);
/// The longest the worker waits for one prune call.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed attempt to record the operation catalog, the first wait before the next; it
/// doubles after each failure, up to [`CATALOG_RETRY_MAX`].
const CATALOG_RETRY: Duration = Duration::from_secs(1);
const CATALOG_RETRY_MAX: Duration = Duration::from_secs(600);

impl Worker {
    fn run(mut self) {
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
        let counters = &shared.counters;
        let left = shared.queue.waiting();
        let mut budget: usize = left.iter().sum();
        if whole_batches_only {
            budget -= budget % self.config.batch_size;
        }
        let mut next = Prefetch {
            anchor: Anchor::now(),
            left,
            budget,
            size: self.config.batch_size,
            batch: self.maker.batch(self.config.batch_size),
            filled: false,
            maker: std::mem::take(&mut self.maker),
        };
        loop {
            let deadline = *shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                if !next.batch.is_empty() {
                    self.spool_or_fail(&next.batch, "the shutdown deadline passed");
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
                );
            } else {
                let before = Tallies::read(counters);
                let mut outcome = Delivery::default();
                // The next batch is made while this one's first write is in flight.
                next.batch = next.maker.batch(self.config.batch_size);
                next.filled = false;
                self.prefetch = Some(next);
                self.deliver(&batch, &mut outcome);
                next = self.prefetch.take().expect("the prefetch is handed back");
                self.count(&outcome);
                let unsettled = std::mem::take(&mut outcome.unsettled);
                outcome.failed = unsettled.len() as u64;
                if !unsettled.is_empty() {
                    let reason = outcome.last_error.clone().unwrap_or_default();
                    self.spool_or_fail(&unsettled, &reason);
                }
                let after = Tallies::read(counters);
                self.settle(&outcome, before, after);
            }
            next.maker.recycle(batch);
        }
        self.maker = next.maker;
    }

    /// Hands the operation catalog to the sink; whether it was recorded. A failure is logged,
    /// not fatal: the worker tries again later.
    fn register_operations(&mut self) -> bool {
        // Five seconds at most, and never past the shutdown deadline.
        let mut limit = Duration::from_secs(5);
        if let Some(deadline) = *self.config.shared.shutdown_deadline.borrow() {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
        }
        if limit.is_zero() {
            return false;
        }
        let operations = crate::call::catalog::operations();
        let service = self.config.context.service.clone();
        let sink = &mut self.config.sink;
        // A shutdown that begins meanwhile cuts it short, so its drain goes first; one under way
        // already leaves it until the deadline.
        let mut deadline = self.config.shared.shutdown_deadline.subscribe();
        let shutting_down = deadline.borrow().is_some();
        let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.runtime.block_on(async {
                let register =
                    tokio::time::timeout(limit, sink.register_dyn(&service, &operations));
                let cut = async {
                    if shutting_down {
                        until_deadline(&mut deadline).await;
                    } else {
                        let _ = deadline.wait_for(Option::is_some).await;
                    }
                };
                tokio::select! {
                    registered = register => Some(registered),
                    () = cut => None,
                }
            })
        }));
        match registered {
            Ok(None) => tracing::debug!("usage operation catalog not recorded: shutting down"),
            Ok(Some(Ok(Ok(())))) => return true,
            Ok(Some(Ok(Err(error)))) => {
                tracing::warn!(%error, "usage operation catalog not recorded; will try again")
            }
            Ok(Some(Err(_))) => {
                tracing::warn!("usage operation catalog not recorded: timed out; will try again")
            }
            Err(_) => tracing::warn!(
                "usage operation catalog not recorded: the sink panicked; will try again"
            ),
        }
        false
    }

    /// Whether the last writes went through without trouble.
    fn healthy(&self) -> bool {
        self.status(|status| status.state == HealthState::Healthy)
    }

    /// With a retention set, deletes the records older than it, at the first drain and then
    /// hourly, while the sink is healthy.
    fn prune_if_due(&mut self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        if Instant::now() < self.next_prune
            || self.spool_waiting()
            || self.config.shared.shutdown_deadline.borrow().is_some()
        {
            // Maintenance, never worth delaying a shutdown.
            return;
        }
        self.next_prune = Instant::now() + PRUNE_EVERY;
        // Whole hours, as `usage prune` does: an hour is kept or pruned entirely.
        let age = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let before = Utc::now()
            .checked_sub_signed(age)
            .map(crate::rollup::hour_of)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let sink = &mut self.config.sink;
        // A shutdown that begins meanwhile cuts it short, so the drain goes first (what was
        // deleted stays deleted; the count is lost).
        let mut deadline = self.config.shared.shutdown_deadline.subscribe();
        let pruned = self.runtime.block_on(async {
            tokio::select! {
                pruned = tokio::time::timeout(PRUNE_TIMEOUT, sink.prune_dyn(before)) => Some(pruned),
                _ = deadline.wait_for(Option::is_some) => None,
            }
        });
        match pruned {
            None => tracing::debug!("usage retention: pruning cut short by the shutdown"),
            Some(Ok(Ok(deleted))) => {
                self.config
                    .shared
                    .counters
                    .pruned
                    .fetch_add(deleted, Ordering::Relaxed);
                if deleted > 0 {
                    tracing::info!(
                        deleted,
                        ?retention,
                        "usage records past the retention deleted"
                    );
                    // It may have stopped with more to delete: go on between writes.
                    self.next_prune = Instant::now() + PRUNE_AGAIN;
                }
            }
            Some(Ok(Err(error))) => tracing::warn!(%error, "usage retention: pruning failed"),
            Some(Err(_)) => tracing::warn!("usage retention: pruning timed out"),
        }
    }

    fn spool_waiting(&self) -> bool {
        self.config
            .spool
            .as_ref()
            .is_some_and(|spool| !spool.is_empty())
    }

    /// Counts what a delivery settled: written and quarantined records.
    fn count(&self, outcome: &Delivery) {
        let counters = &self.config.shared.counters;
        counters
            .written
            .fetch_add(outcome.written, Ordering::Relaxed);
        counters
            .quarantined
            .fetch_add(outcome.quarantined, Ordering::Relaxed);
    }

    /// Records the sink could not take: into the spool when there is one with room, else failed.
    fn spool_or_fail(&mut self, records: &[UsageRecord], reason: &str) {
        let count = records.len() as u64;
        let counters = &self.config.shared.counters;
        let appended = match &mut self.config.spool {
            Some(spool) => match spool.append(records) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(crate::spool::Full)) => Err("the spool is full".to_owned()),
                Err(error) => Err(format!("the spool could not be written: {error}")),
            },
            None => Err(reason.to_owned()),
        };
        match appended {
            Ok(()) => {
                counters.spooled.fetch_add(count, Ordering::Relaxed);
                self.publish_spool();
            }
            Err(why) => {
                let deadline = *self.config.shared.shutdown_deadline.borrow();
                if self.config.spool.is_none()
                    && deadline.is_some_and(|deadline| Instant::now() >= deadline)
                {
                    counters
                        .dropped_at_shutdown
                        .fetch_add(count, Ordering::Relaxed);
                } else {
                    counters.failed.fetch_add(count, Ordering::Relaxed);
                }
                if self.config.spool.is_some() {
                    tracing::error!(records = count, error = %why, last_error = %reason, "usage records lost");
                }
                self.set_state(HealthState::Failing, Some(&format!("{reason} ({why})")));
            }
        }
    }

    /// Writes what waits in the spool, oldest first, a batch at a time, until the spool is empty
    /// or the sink fails (then the rest waits for the next drain). A batch leaves the spool only
    /// once every record in it is written or quarantined.
    fn replay(&mut self, asked: bool) {
        if !asked && Instant::now() < self.next_replay {
            return;
        }
        let shared = Arc::clone(&self.config.shared);
        while self.spool_waiting() {
            let deadline = *shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return;
            }
            let batch = match self
                .config
                .spool
                .as_mut()
                .expect("spool")
                .peek(self.config.batch_size)
            {
                Ok(batch) if batch.is_empty() => return, // the spool recounted itself
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, "usage spool: cannot read the oldest segment");
                    return;
                }
            };
            let before = Tallies::read(&shared.counters);
            let mut outcome = Delivery {
                single_attempt: true,
                ..Delivery::default()
            };
            if self.replay_quarantined.is_empty() {
                self.deliver(&batch, &mut outcome);
            } else {
                // What an earlier attempt at this batch quarantined is settled: counted, not
                // sent (nor quarantined) again.
                let (settled, pending): (Vec<UsageRecord>, Vec<UsageRecord>) = batch
                    .iter()
                    .cloned()
                    .partition(|record| self.replay_quarantined.contains(&record.id));
                outcome.quarantined += settled.len() as u64;
                if !pending.is_empty() {
                    self.deliver(&pending, &mut outcome);
                }
            }
            if !outcome.unsettled.is_empty() {
                self.replay_quarantined
                    .extend(std::mem::take(&mut outcome.quarantined_ids));
                self.replay_failures += 1;
                self.next_replay = Instant::now() + self.config.retry.delay(self.replay_failures);
                let after = Tallies::read(&shared.counters);
                self.settle(&outcome, before, after);
                return;
            }
            self.replay_failures = 0;
            self.replay_quarantined.clear();
            self.count(&outcome);
            if let Err(error) = self
                .config
                .spool
                .as_mut()
                .expect("spool")
                .consume(batch.len())
            {
                tracing::error!(%error, "usage spool: cannot remove a replayed segment");
            }
            shared
                .counters
                .replayed
                .fetch_add(outcome.written, Ordering::Relaxed);
            self.publish_spool();
            let after = Tallies::read(&shared.counters);
            self.settle(&outcome, before, after);
        }
    }

    /// Publishes the spool's size to the health report.
    fn publish_spool(&self) {
        if let Some(spool) = &self.config.spool {
            let counters = &self.config.shared.counters;
            counters
                .spool_records
                .store(spool.records(), Ordering::Relaxed);
            counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        }
    }

    /// Writes `batch`: transient failures are retried with backoff; a rejection splits the batch
    /// in halves until the rejected records are alone, and those are quarantined; what still
    /// fails is handed back in `outcome.unsettled` (for the spool, or to be counted as failed).
    fn deliver(&mut self, batch: &[UsageRecord], outcome: &mut Delivery) {
        let count = batch.len() as u64;
        match self.write_retrying(batch, outcome) {
            Ok(()) => {
                outcome.written += count;
            }
            Err(Error::PartlyWritten { written, source }) => {
                // Some parts committed: those records are written; the rest goes on alone
                // (retried, split or handed back as any batch), so each is counted once.
                tracing::debug!(written = written.len(), error = %source, "usage batch partly written");
                let written: std::collections::HashSet<uuid::Uuid> =
                    written.0.into_iter().collect();
                let rest: Vec<UsageRecord> = batch
                    .iter()
                    .filter(|record| !written.contains(&record.id))
                    .cloned()
                    .collect();
                outcome.written += count - rest.len() as u64;
                if !rest.is_empty() {
                    self.deliver(&rest, outcome);
                }
            }
            Err(error) if error.failure_kind() == FailureKind::Rejected && batch.len() > 1 => {
                let (first, second) = batch.split_at(batch.len() / 2);
                self.deliver(first, outcome);
                self.deliver(second, outcome);
            }
            Err(error) if error.failure_kind() == FailureKind::Rejected => {
                self.quarantine(&batch[0], &error);
                outcome.quarantined += 1;
                outcome.quarantined_ids.push(batch[0].id);
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(records = count, error = %reason, "usage batch write failed");
                outcome.unsettled.extend_from_slice(batch);
                outcome.last_error = Some(reason);
            }
        }
    }

    /// One write, tried again after transient failures (with backoff and full jitter) up to the
    /// retry limit, and never past the shutdown deadline.
    fn write_retrying(
        &mut self,
        batch: &[UsageRecord],
        outcome: &mut Delivery,
    ) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            let error = match self.write(batch) {
                Ok(()) => return Ok(()),
                // What is left is a smaller batch: `deliver` goes on with it.
                Err(error @ Error::PartlyWritten { .. }) => return Err(error),
                Err(error) => error,
            };
            let deadline = *self.config.shared.shutdown_deadline.borrow();
            let past_deadline = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            if error.failure_kind() != FailureKind::Transient
                || attempt >= self.config.retry.max_retries
                || outcome.single_attempt
                || past_deadline
            {
                return Err(error);
            }
            attempt += 1;
            outcome.retried = true;
            self.config
                .shared
                .counters
                .retries
                .fetch_add(1, Ordering::Relaxed);
            self.set_state(HealthState::Failing, Some(&error.to_string()));
            let delay = self.config.retry.delay(attempt);
            tracing::debug!(attempt, ?delay, error = %error, "retrying usage batch write");
            self.sleep(delay);
        }
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

    /// Moves queued records to the spool while the queue is more than half full.
    fn spill(&mut self) {
        let shared = Arc::clone(&self.config.shared);
        let half = shared.queue.capacity() / 2;
        if shared.queue.len() <= half {
            return;
        }
        // A batch made during the write in flight is older than anything queued: spooled first.
        if let Some(next) = self.prefetch.as_mut() {
            next.filled = true;
            let older = std::mem::take(&mut next.batch);
            if !older.is_empty() {
                self.spool_or_fail(
                    &older,
                    "the sink is failing; the queue spilled to the spool",
                );
            }
        }
        let anchor = Anchor::now();
        let mut moved = Vec::with_capacity(self.config.batch_size);
        while shared.queue.len() > half / 2 {
            while moved.len() < self.config.batch_size {
                let Some(call) = shared.queue.pop() else {
                    break;
                };
                shared.counters.taken.fetch_add(1, Ordering::Relaxed);
                let record = call.into_record(&self.config.context, &anchor);
                count_usage(&shared, &record);
                moved.push(record);
            }
            if moved.is_empty() {
                break;
            }
            self.spool_or_fail(
                &moved,
                "the sink is failing; the queue spilled to the spool",
            );
            moved.clear();
        }
    }

    /// Appends a rejected record, with the reason, to the quarantine file (or the error log).
    fn quarantine(&mut self, record: &UsageRecord, error: &Error) {
        let reason = error.to_string();
        let entry = serde_json::json!({
            "quarantined_at": Utc::now(),
            "reason": reason,
            "record": record,
        });
        let written = self.config.quarantine_file.as_ref().map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| {
                    use std::io::Write;
                    writeln!(file, "{entry}")?;
                    file.sync_data()
                })
                .map_err(|io| (path.clone(), io))
        });
        match written {
            Some(Ok(())) => tracing::warn!(
                id = %record.id,
                reason = %reason,
                "usage record rejected by the database: quarantined"
            ),
            Some(Err((path, io))) => tracing::error!(
                id = %record.id,
                reason = %reason,
                file = %path.display(),
                io_error = %io,
                record = %entry,
                "usage record rejected by the database; the quarantine file failed, so here it is"
            ),
            None => tracing::error!(
                id = %record.id,
                reason = %reason,
                record = %entry,
                "usage record rejected by the database (no quarantine file configured)"
            ),
        }
    }

    /// Updates the health state after a batch, logging each transition.
    fn settle(&self, outcome: &Delivery, before: Tallies, after: Tallies) {
        let state = if outcome.failed > 0 || !outcome.unsettled.is_empty() || self.spool_waiting() {
            HealthState::Failing
        } else if outcome.retried || outcome.quarantined > 0 || after.dropped > before.dropped {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        };
        if outcome.written > 0 {
            self.status(|status| status.last_write_at = Some(Utc::now()));
        }
        self.set_state(state, outcome.last_error.as_deref());
    }

    fn set_state(&self, state: HealthState, error: Option<&str>) {
        let previous = {
            let mut status = self
                .config
                .shared
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(error) = error {
                status.last_error = Some(error.to_owned());
            }
            std::mem::replace(&mut status.state, state)
        };
        if previous == state {
            return;
        }
        match state {
            HealthState::Healthy => tracing::info!(from = ?previous, "usage tracker is healthy"),
            HealthState::Degraded => tracing::warn!(from = ?previous, "usage tracker is degraded"),
            HealthState::Failing => {
                tracing::error!(from = ?previous, error = error.unwrap_or(""), "usage tracker is failing")
            }
        }
    }

    /// Writes one batch; gives up when the shutdown deadline passes, even if shutdown began
    /// while the write was in progress. A sink that panics fails the batch, not the worker.
    /// While the write is in flight, the next batch is made (in a drain) and, with
    /// `Overflow::Spill`, once the write has taken [`SPILL_AFTER`] the queue is moved to the
    /// spool when it passes half full, so a write that hangs until its timeout drops nothing
    /// (a write that is merely busy leaves the queue alone).
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        // The sink is taken out for the write, so the worker can spill (which needs the rest of
        // it) while the write's future holds the sink.
        let mut sink = std::mem::replace(&mut self.config.sink, Box::new(Detached));
        let result = self.write_with(&mut sink, batch);
        self.config.sink = sink;
        return result;

        /// Stands in for the sink while it is out; never used.
        #[derive(Debug)]
        struct Detached;
        impl crate::sink::Sink for Detached {
            async fn write(&mut self, _batch: &[UsageRecord]) -> Result<(), Error> {
                unreachable!("the sink is restored before it is used again")
            }
            async fn register(
                &mut self,
                _service: &str,
                _operations: &[&'static crate::call::catalog::Operation],
            ) -> Result<(), Error> {
                unreachable!("the sink is restored before it is used again")
            }
            async fn prune(&mut self, _before: chrono::DateTime<Utc>) -> Result<u64, Error> {
                unreachable!("the sink is restored before it is used again")
            }
        }
    }

    fn write_with(&mut self, sink: &mut BoxedSink, batch: &[UsageRecord]) -> Result<(), Error> {
        use futures_util::FutureExt as _;
        let mut deadline = self.config.shared.shutdown_deadline.subscribe();
        let write_timeout = self.config.write_timeout;
        let started = Instant::now();
        // Only the sink's panics are the sink's: caught around its future, not around the
        // records made meanwhile.
        let write = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let sink = sink; // moved in whole, so the future may borrow it for the write
            sink.write_dyn(batch)
        })) {
            Ok(write) => std::panic::AssertUnwindSafe(write).catch_unwind(),
            Err(panic) => return Err(sink_panicked(panic)),
        };
        let mut write = Box::pin(async move {
            tokio::select! {
                biased;
                result = write => result.unwrap_or_else(|panic| Err(sink_panicked(panic))),
                waited = until_deadline(&mut deadline) => Err(Error::Timeout(waited)),
                () = tokio::time::sleep(write_timeout) => Err(Error::Timeout(write_timeout)),
            }
        });
        // Once per batch of a drain: a retry, a half of a split batch or the rest of a partly
        // written one does not build again.
        let mut making = self
            .prefetch
            .as_mut()
            .is_some_and(|next| !std::mem::replace(&mut next.filled, true));
        loop {
            if making {
                // The next batch's records are made a slice at a time, the write polled between
                // slices: each poll takes it as far as its round trips allow, so the database
                // works on it while the records are made.
                let polled = self.runtime.block_on(std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
                }));
                if let std::task::Poll::Ready(result) = polled {
                    return result;
                }
                let (shared, context) = (&self.config.shared, &self.config.context);
                making = self
                    .prefetch
                    .as_mut()
                    .is_some_and(|next| next.fill(shared, context, PREFETCH_SLICE));
            } else if !self.config.spill {
                return self.runtime.block_on(write);
            } else {
                let polled = self.runtime.block_on(async {
                    tokio::select! {
                        biased;
                        result = &mut write => Some(result),
                        () = tokio::time::sleep(SPILL_CHECK) => None,
                    }
                });
                if let Some(result) = polled {
                    return result;
                }
            }
            if self.config.spill && started.elapsed() >= SPILL_AFTER {
                self.spill();
            }
        }
    }

    fn drop_rest_at_deadline(&mut self) {
        if self.config.spool.is_some() {
            // Past the deadline, what is left goes to the spool for the next start.
            let shared = Arc::clone(&self.config.shared);
            let anchor = Anchor::now();
            let mut rest = Vec::new();
            while let Some(call) = shared.queue.pop() {
                shared.counters.taken.fetch_add(1, Ordering::Relaxed);
                rest.push(call.into_record(&self.config.context, &anchor));
            }
            for chunk in rest.chunks(self.config.batch_size.max(1)) {
                self.spool_or_fail(chunk, "the shutdown deadline passed");
            }
            if !rest.is_empty() {
                tracing::warn!(
                    records = rest.len(),
                    "usage shutdown deadline passed: records kept in the spool"
                );
            }
            return;
        }
        let mut left = 0u64;
        while self.config.shared.queue.pop().is_some() {
            left += 1;
        }
        let counters = &self.config.shared.counters;
        counters.taken.fetch_add(left, Ordering::Relaxed);
        // The total, not only the queue's: the batch whose write the deadline cut and the one
        // made meanwhile were counted as they were given up.
        let lost = counters
            .dropped_at_shutdown
            .fetch_add(left, Ordering::Relaxed)
            + left;
        // A drain that met the deadline may be followed by the shutdown's own: log once, unless
        // more were lost since.
        if lost > self.lost_at_deadline {
            self.lost_at_deadline = lost;
            tracing::error!(
                records = lost,
                "usage shutdown deadline passed: records were not written"
            );
            let reason = format!("{lost} record(s) missed the shutdown deadline");
            self.set_state(HealthState::Failing, Some(&reason));
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

/// A sink's panic as an error, with its message.
fn sink_panicked(panic: Box<dyn std::any::Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    Error::SinkPanicked(message)
}

/// Records made between two polls of a write in flight.
const PREFETCH_SLICE: usize = 256;

/// How often the worker looks at the queue while a write is in flight, to spill it to the spool
/// (with `Overflow::Spill`) before it fills.
const SPILL_CHECK: Duration = Duration::from_millis(10);
/// How long a write must be in flight before the worker spills the queue meanwhile: a write
/// that takes longer is stuck, not busy (4,096 records take tens of milliseconds).
const SPILL_AFTER: Duration = Duration::from_secs(1);

/// Counts what a record says of its usage: unpriced tokens, saturated counts.
fn count_usage(shared: &Shared, record: &UsageRecord) {
    let counters = &shared.counters;
    if record.has_tokens() && record.cost_nano_usd.is_none() {
        counters.unpriced.fetch_add(1, Ordering::Relaxed);
    }
    if record
        .attributes
        .contains_key(crate::pipeline::record::SATURATED_ATTRIBUTE)
    {
        counters.saturated.fetch_add(1, Ordering::Relaxed);
    }
}

/// A drain's next batch and what it may still take: the calls counted as waiting when the drain
/// started, up to `budget`.
struct Prefetch {
    anchor: Anchor,
    left: Vec<usize>,
    budget: usize,
    size: usize,
    batch: Vec<UsageRecord>,
    /// Made during a write already (or spilled): not again before the drain takes it back.
    filled: bool,
    maker: Maker,
}

/// Mints the worker's record ids: UUIDv7 with the batch anchor's millisecond and, below it, a
/// 74-bit counter (RFC 9562's monotonic counter in `rand_a` and `rand_b`) started at a random
/// value, its top bit clear, at each new millisecond and counted up per id. The ids it mints are
/// unique and increasing for the life of the worker, without a clock read or a random draw per id
/// (the shared context behind `Uuid::now_v7`, which the rare records made elsewhere use, takes a
/// lock, reads the clock and draws per id).
///
/// It also keeps the last handled batch's vector, emptied, for the next batch: its memory is
/// mapped and likely cached, where a fresh one (a megabyte and more) faults its pages in as the
/// records are moved into it.
#[derive(Default)]
struct Maker {
    millis: u64,
    counter: u128,
    /// Whether the counter was ever drawn (a clock at the epoch must not keep it at zero).
    seeded: bool,
    spare: Vec<UsageRecord>,
}

const COUNTER_BITS: u32 = 74;
const RAND_B_BITS: u32 = 62;

impl Maker {
    /// A batch anchored at `anchor` begins.
    fn start(&mut self, anchor: &Anchor) {
        let millis = anchor.unix_millis() & ((1 << 48) - 1);
        // The same millisecond, or a clock stepped back, continues the count.
        if millis > self.millis || !self.seeded {
            self.millis = millis.max(self.millis);
            self.reseed();
        }
    }

    /// An empty batch with room for `size` records.
    fn batch(&mut self, size: usize) -> Vec<UsageRecord> {
        let mut batch = std::mem::take(&mut self.spare);
        batch.reserve(size);
        batch
    }

    /// Keeps a handled batch's vector for the next batch.
    fn recycle(&mut self, mut batch: Vec<UsageRecord>) {
        batch.clear();
        if batch.capacity() > self.spare.capacity() {
            self.spare = batch;
        }
    }

    fn reseed(&mut self) {
        self.counter = uuid::Uuid::new_v4().as_u128() & ((1 << (COUNTER_BITS - 1)) - 1);
        self.seeded = true;
    }

    fn id(&mut self) -> uuid::Uuid {
        let (millis, counter) = (self.millis, self.counter);
        self.counter += 1;
        if self.counter >> COUNTER_BITS != 0 {
            // Spent (after 2^73 ids in one millisecond at the least): the next millisecond.
            self.millis += 1;
            self.reseed();
        }
        let value = (u128::from(millis) << 80)
            | (0x7 << 76)
            | ((counter >> RAND_B_BITS) << 64)
            | (0b10 << 62)
            | (counter & ((1 << RAND_B_BITS) - 1));
        uuid::Uuid::from_u128(value)
    }

    fn make(&mut self, call: RawCall, context: &RecordContext, anchor: &Anchor) -> UsageRecord {
        let id = self.id();
        call.into_record_with_id(context, anchor, id)
    }
}

impl Prefetch {
    /// Takes up to `most` calls into the batch, as records, while it has room and the budget
    /// lasts; whether there may be more to take.
    fn fill(&mut self, shared: &Shared, context: &RecordContext, most: usize) -> bool {
        if self.batch.is_empty() {
            // Each batch's times and ids are anchored when it starts.
            self.anchor = Anchor::now();
            self.maker.start(&self.anchor);
        }
        for _ in 0..most {
            if self.batch.len() >= self.size || self.budget == 0 {
                return false;
            }
            let Some(call) = shared.queue.pop_within(&mut self.left) else {
                return false;
            };
            self.budget -= 1;
            shared.counters.taken.fetch_add(1, Ordering::Relaxed);
            let record = self.maker.make(call, context, &self.anchor);
            count_usage(shared, &record);
            self.batch.push(record);
        }
        true
    }
}

/// What happened to the records of one batch.
#[derive(Default)]
struct Delivery {
    written: u64,
    quarantined: u64,
    /// The ids quarantined.
    quarantined_ids: Vec<uuid::Uuid>,
    /// Records neither written nor quarantined.
    unsettled: Vec<UsageRecord>,
    /// How many records were unsettled (once `unsettled` is handed on).
    failed: u64,
    retried: bool,
    /// Replaying from the spool: one attempt per batch, the next drain tries again.
    single_attempt: bool,
    last_error: Option<String>,
}

/// Counters compared around a batch.
#[derive(Clone, Copy)]
struct Tallies {
    dropped: u64,
}

impl Tallies {
    fn read(counters: &crate::call::handoff::Counters) -> Self {
        Tallies {
            dropped: counters.dropped_queue_full.load(Ordering::Relaxed),
        }
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
    use super::{Anchor, Maker, COUNTER_BITS};

    fn anchor(wall: &str) -> Anchor {
        Anchor::at(wall.parse().unwrap(), quanta::Instant::now())
    }

    fn millis_of(id: uuid::Uuid) -> u64 {
        let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
        seconds * 1_000 + u64::from(nanos) / 1_000_000
    }

    #[test]
    fn ids_are_version_7_at_the_batch_millisecond_and_always_increasing() {
        let mut maker = Maker::default();
        let first = anchor("2026-11-23T10:00:00.123456Z");
        let mut ids = Vec::new();
        maker.start(&first);
        ids.extend((0..5_000).map(|_| maker.id()));
        // Another batch in the same millisecond, then one after the clock stepped back: both
        // continue the count.
        maker.start(&first);
        ids.extend((0..10).map(|_| maker.id()));
        maker.start(&anchor("2026-11-23T09:59:59Z"));
        ids.extend((0..10).map(|_| maker.id()));
        let later = anchor("2026-11-23T10:00:01Z");
        maker.start(&later);
        let next = maker.id();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(millis_of(*id), first.unix_millis());
        }
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(millis_of(next), later.unix_millis());
        assert!(*ids.last().unwrap() < next);
    }

    #[test]
    fn a_clock_at_the_epoch_still_gets_random_ids() {
        let epoch = anchor("1970-01-01T00:00:00Z");
        let first: Vec<_> = (0..2)
            .map(|_| {
                let mut maker = Maker::default();
                maker.start(&epoch);
                maker.id()
            })
            .collect();
        assert_ne!(first[0], first[1], "two workers drew the same counter");
        assert_eq!(millis_of(first[0]), 0);
    }

    #[test]
    fn a_spent_counter_moves_to_the_next_millisecond() {
        let mut maker = Maker::default();
        let at = anchor("2026-11-23T10:00:00Z");
        maker.start(&at);
        maker.counter = (1 << COUNTER_BITS) - 2;
        let ids: Vec<_> = (0..3).map(|_| maker.id()).collect();
        assert_eq!(millis_of(ids[0]), at.unix_millis());
        assert_eq!(millis_of(ids[1]), at.unix_millis());
        assert_eq!(millis_of(ids[2]), at.unix_millis() + 1);
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        // The top bits of the counter are its first 12, in `rand_a`.
        assert_eq!(ids[1].as_u128() >> 64 & 0xfff, 0xfff);
    }
}
