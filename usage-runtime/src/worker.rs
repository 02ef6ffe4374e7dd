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

/// Where the worker sends its answer: an async or a blocking waiter.
pub(crate) enum Reply {
    Async(tokio::sync::oneshot::Sender<Result<(), Error>>),
    Blocking(mpsc::SyncSender<Result<(), Error>>),
}

impl Reply {
    fn send(self, result: Result<(), Error>) {
        // A waiter that gave up (dropped its receiver) needs no answer.
        match self {
            Reply::Async(sender) => {
                let _ = sender.send(result);
            }
            Reply::Blocking(sender) => {
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
        .spawn(move || {
            Worker {
                config,
                runtime,
                since_shutdown: Drained::default(),
            }
            .run()
        })
}

struct Worker {
    config: Config,
    runtime: tokio::runtime::Runtime,
    /// Failures from the moment shutdown began, including a write already in progress then:
    /// what the shutdown reply reports.
    since_shutdown: Drained,
}

/// What one drain achieved.
#[derive(Default)]
struct Drained {
    failed: u64,
    last_error: Option<String>,
}

impl Drained {
    fn add(&mut self, count: u64, reason: &str) {
        self.failed += count;
        self.last_error = Some(reason.to_owned());
    }

    fn into_result(self) -> Result<(), Error> {
        match self.last_error {
            None => Ok(()),
            Some(reason) => Err(Error::NotWritten {
                count: self.failed,
                reason,
            }),
        }
    }
}

impl Worker {
    fn run(mut self) {
        let interval = self.config.flush_interval;
        let mut next_write = Instant::now() + interval;
        loop {
            let now = Instant::now();
            if now < next_write && !self.config.shared.take_wake() {
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
            let drained = self.drain();
            next_write = Instant::now() + interval;
            let failure = drained.last_error.clone();
            let failed = drained.failed;
            for reply in flushes {
                reply.send(match &failure {
                    None => Ok(()),
                    Some(reason) => Err(Error::NotWritten {
                        count: failed,
                        reason: reason.clone(),
                    }),
                });
            }
            if let Some(reply) = shutdown {
                reply.send(std::mem::take(&mut self.since_shutdown).into_result());
                return;
            }
        }
    }

    /// Writes everything queued, in batches. Once the shutdown deadline has passed, what is left
    /// is counted as dropped and logged.
    fn drain(&mut self) -> Drained {
        let mut drained = Drained::default();
        let anchor = Anchor::now();
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(self.config.batch_size);
        loop {
            let deadline = *self.config.shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                self.drop_rest_at_deadline(&mut drained);
                return drained;
            }
            while batch.len() < self.config.batch_size {
                match self.config.shared.queue.pop() {
                    Some(call) => batch.push(call.into_record(&self.config.context, &anchor)),
                    None => break,
                }
            }
            if batch.is_empty() {
                return drained;
            }
            let count = batch.len() as u64;
            let shared = Arc::clone(&self.config.shared);
            let counters = &shared.counters;
            counters.taken.fetch_add(count, Ordering::Relaxed);
            match self.write(&batch) {
                Ok(()) => {
                    counters.written.fetch_add(count, Ordering::Relaxed);
                    self.status(|status| status.last_write_at = Some(Utc::now()));
                }
                Err(error) => {
                    counters.failed.fetch_add(count, Ordering::Relaxed);
                    let reason = error.to_string();
                    tracing::warn!(records = count, error = %reason, "usage batch write failed");
                    self.status(|status| status.last_error = Some(reason.clone()));
                    if self.config.shared.shutdown_deadline.borrow().is_some() {
                        self.since_shutdown.add(count, &reason);
                    }
                    drained.add(count, &reason);
                }
            }
            batch.clear();
        }
    }

    /// Writes one batch; gives up when the shutdown deadline passes, even if shutdown began
    /// while the write was in progress.
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let mut deadline = self.config.shared.shutdown_deadline.subscribe();
        let write = self.config.sink.write_dyn(batch);
        self.runtime.block_on(async move {
            tokio::select! {
                biased;
                result = write => result,
                waited = until_deadline(&mut deadline) => Err(Error::Timeout(waited)),
            }
        })
    }

    fn drop_rest_at_deadline(&mut self, drained: &mut Drained) {
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
            self.since_shutdown.add(left, &reason);
            drained.add(left, &reason);
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
