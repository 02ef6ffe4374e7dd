//! The installed tracker: the handle that flushes, shuts down and reports health, and uninstalls
//! the tracker when dropped.

use std::fmt;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::health::Health;
use super::worker::{Reply, ReplyTo, Request};
use crate::call::handoff::{Shared, GLOBAL, INSTALL};
use crate::error::Error;

/// The installed tracker, as [`TrackerBuilder::install`](crate::TrackerBuilder::install) returns it. Dropping it flushes what is
/// queued, bounded by the shutdown timeout, and uninstalls the tracker.
pub struct Tracker {
    pub(super) shared: Arc<Shared>,
    pub(super) requests: mpsc::Sender<Request>,
    pub(super) worker: Option<JoinHandle<()>>,
    pub(super) shutdown_timeout: Duration,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("health", &self.health())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl Tracker {
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
        Health::of(&self.shared)
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

impl Drop for Tracker {
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
