//! The worker: one dedicated thread per tracker, owning a small current-thread tokio runtime, so
//! it never depends on (or deadlocks) the application's runtime, whatever its flavour, or the lack
//! of one. It sleeps until a batch is waiting, the flush interval passes, or a request arrives;
//! then it drains the queue in batches, stamps ids and writes them to the sink.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::call::{Anchor, RecordContext};
use crate::error::Error;
use crate::record::UsageRecord;
use crate::sink::BoxedSink;
use crate::tracker::Shared;

/// A request from the guard to the worker.
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
        let unwritten = shared.unwritten().saturating_sub(self.unwritten_before);
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
    pub(crate) inbox: mpsc::Receiver<Request>,
}

pub(crate) fn spawn(config: Config) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::Builder::new()
        .name("usage-worker".into())
        .spawn(move || Worker { config, runtime }.run())
}

struct Worker {
    config: Config,
    runtime: tokio::runtime::Runtime,
}

impl Worker {
    fn run(mut self) {
        let interval = self.config.flush_interval;
        let mut next_write = Instant::now() + interval;
        loop {
            let now = Instant::now();
            let batch_waiting = self.config.shared.queue.len() >= self.config.batch_size;
            if now < next_write && !batch_waiting && !self.config.shared.take_wake() {
                thread::park_timeout(next_write - now);
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
            let due = Instant::now() >= next_write
                || self.config.shared.queue.len() >= self.config.batch_size;
            if !(due || !flushes.is_empty() || shutdown.is_some()) {
                continue;
            }
            self.drain();
            next_write = Instant::now() + interval;
            for reply in flushes {
                reply.send(&self.config.shared);
            }
            if let Some(reply) = shutdown {
                reply.send(&self.config.shared);
                return;
            }
        }
    }

    /// Writes, in batches, the records queued when the drain starts (not those arriving during
    /// it, so a flush under steady load still ends). Once the shutdown deadline has passed, what
    /// is left is counted as dropped and logged.
    fn drain(&mut self) {
        let shared = Arc::clone(&self.config.shared);
        let counters = &shared.counters;
        let anchor = Anchor::now();
        let mut left = shared.queue.len();
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(self.config.batch_size);
        loop {
            let deadline = *shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                self.drop_rest_at_deadline();
                return;
            }
            while batch.len() < self.config.batch_size && left > 0 {
                let Some(call) = shared.queue.pop() else {
                    break;
                };
                left -= 1;
                counters.taken.fetch_add(1, Ordering::Relaxed);
                let record = call.into_record(&self.config.context, &anchor);
                self.count_usage(&record);
                batch.push(record);
            }
            if batch.is_empty() {
                return;
            }
            let count = batch.len() as u64;
            match self.write(&batch) {
                Ok(()) => {
                    counters.written.fetch_add(count, Ordering::Relaxed);
                    self.status(|status| status.last_write_at = Some(Utc::now()));
                }
                Err(error) => {
                    counters.failed.fetch_add(count, Ordering::Relaxed);
                    let reason = error.to_string();
                    tracing::warn!(records = count, error = %reason, "usage batch write failed");
                    self.status(|status| status.last_error = Some(reason));
                }
            }
            batch.clear();
        }
    }

    /// Writes one batch; gives up when the shutdown deadline passes, even if shutdown began
    /// while the write was in progress. A sink that panics fails the batch, not the worker.
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let mut deadline = self.config.shared.shutdown_deadline.subscribe();
        let sink = &mut self.config.sink;
        let runtime = &self.runtime;
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let write = sink.write_dyn(batch);
            runtime.block_on(async move {
                tokio::select! {
                    biased;
                    result = write => result,
                    waited = until_deadline(&mut deadline) => Err(Error::Timeout(waited)),
                }
            })
        }));
        written.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            Err(Error::SinkPanicked(message))
        })
    }

    fn drop_rest_at_deadline(&mut self) {
        let mut left = 0u64;
        while self.config.shared.queue.pop().is_some() {
            left += 1;
        }
        if left > 0 {
            let counters = &self.config.shared.counters;
            counters.taken.fetch_add(left, Ordering::Relaxed);
            counters
                .dropped_at_shutdown
                .fetch_add(left, Ordering::Relaxed);
            tracing::error!(
                records = left,
                "usage shutdown deadline passed: records were not written"
            );
            let reason = format!("{left} record(s) missed the shutdown deadline");
            self.status(|status| status.last_error = Some(reason));
        }
    }

    fn count_usage(&self, record: &UsageRecord) {
        let counters = &self.config.shared.counters;
        if record.has_tokens() && record.cost_nano_usd.is_none() {
            counters.unpriced.fetch_add(1, Ordering::Relaxed);
        }
        if record
            .attributes
            .contains_key(crate::call::SATURATED_ATTRIBUTE)
        {
            counters.saturated.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn status(&self, update: impl FnOnce(&mut crate::tracker::Status)) {
        let mut status = self
            .config
            .shared
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        update(&mut status);
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
