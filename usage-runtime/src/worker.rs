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
    /// Write everything queued until `deadline`, reply, and stop.
    Shutdown { deadline: Instant, reply: Reply },
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
        .spawn(move || Worker { config, runtime }.run())
}

struct Worker {
    config: Config,
    runtime: tokio::runtime::Runtime,
}

/// What one drain achieved.
#[derive(Default)]
struct Drained {
    failed: u64,
    last_error: Option<String>,
}

impl Drained {
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
                    Request::Shutdown { deadline, reply } => shutdown = Some((deadline, reply)),
                }
            }
            let due = Instant::now() >= next_write
                || self.config.shared.queue.len() >= self.config.batch_size;
            if !(due || !flushes.is_empty() || shutdown.is_some()) {
                continue;
            }
            let deadline = shutdown.as_ref().map(|(deadline, _)| *deadline);
            let drained = self.drain(deadline);
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
            if let Some((_, reply)) = shutdown {
                reply.send(drained.into_result());
                return;
            }
        }
    }

    /// Writes everything queued, in batches. With a deadline (shutdown), what is left when it
    /// passes is counted as dropped and logged.
    fn drain(&mut self, deadline: Option<Instant>) -> Drained {
        let mut drained = Drained::default();
        let anchor = Anchor::now();
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(self.config.batch_size);
        loop {
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
            match self.write(&batch, deadline) {
                Ok(()) => {
                    counters.written.fetch_add(count, Ordering::Relaxed);
                    self.status(|status| status.last_write_at = Some(Utc::now()));
                }
                Err(error) => {
                    counters.failed.fetch_add(count, Ordering::Relaxed);
                    let reason = error.to_string();
                    tracing::warn!(records = count, error = %reason, "usage batch write failed");
                    self.status(|status| status.last_error = Some(reason.clone()));
                    drained.failed += count;
                    drained.last_error = Some(reason);
                }
            }
            batch.clear();
        }
    }

    fn write(&mut self, batch: &[UsageRecord], deadline: Option<Instant>) -> Result<(), Error> {
        let write = self.config.sink.write_dyn(batch);
        self.runtime.block_on(async move {
            match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(left, write)
                        .await
                        .map_err(|_| Error::Timeout(left))?
                }
                None => write.await,
            }
        })
    }

    fn drop_rest_at_deadline(&self, drained: &mut Drained) {
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
            drained.failed += left;
            drained.last_error = Some(format!("{left} record(s) missed the shutdown deadline"));
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
