//! Delivering a batch: writes with retries and a timeout, partial writes counted record by
//! record, rejected records isolated and quarantined, and the counters settled.

use super::*;

impl Worker {
    /// Counts what a delivery settled: written and quarantined records.
    pub(super) fn count(&self, outcome: &Delivery) {
        let counters = &self.config.shared.counters;
        counters
            .written
            .fetch_add(outcome.written, Ordering::Relaxed);
        counters
            .quarantined
            .fetch_add(outcome.quarantined, Ordering::Relaxed);
        counters
            .expired
            .fetch_add(outcome.expired, Ordering::Relaxed);
    }

    /// Writes `batch`: transient failures are retried with backoff; a rejection splits the batch
    /// in halves until the rejected records are alone, and those are quarantined; what still
    /// fails is handed back in `outcome.unsettled` (for the spool, or to be counted as failed).
    pub(super) fn deliver(&mut self, batch: &[UsageRecord], outcome: &mut Delivery) {
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
                if rest.len() == batch.len() {
                    // Nothing of this batch committed after all: its failure is the source's.
                    self.deliver_failed(batch, *source, outcome);
                    return;
                }
                outcome.written += count - rest.len() as u64;
                if !rest.is_empty() {
                    self.deliver(&rest, outcome);
                }
            }
            Err(error) => self.deliver_failed(batch, error, outcome),
        }
    }

    /// Settles `batch` after its write failed with `error`: refused records are quarantined, a
    /// rejection is split until the rejected records are alone, anything else is unsettled.
    fn deliver_failed(&mut self, batch: &[UsageRecord], error: Error, outcome: &mut Delivery) {
        let count = batch.len() as u64;
        match error {
            Error::Expired { refused, horizon } => {
                // Refused for good (started before the pruned horizon); the rest was written.
                let refused: std::collections::HashSet<uuid::Uuid> =
                    refused.0.into_iter().collect();
                let mut set_aside = 0;
                for record in batch.iter().filter(|record| refused.contains(&record.id)) {
                    let reason = Error::Expired {
                        refused: crate::error::RecordIds(vec![record.id]),
                        horizon,
                    };
                    self.quarantine(record, &reason);
                    outcome.quarantined_ids.push(record.id);
                    outcome.expired_ids.push(record.id);
                    set_aside += 1;
                }
                outcome.quarantined += set_aside;
                outcome.expired += set_aside;
                outcome.written += count - set_aside;
            }
            error if error.failure_kind() == FailureKind::Rejected && batch.len() > 1 => {
                let (first, second) = batch.split_at(batch.len() / 2);
                self.deliver(first, outcome);
                self.deliver(second, outcome);
            }
            error if error.failure_kind() == FailureKind::Rejected => {
                self.quarantine(&batch[0], &error);
                outcome.quarantined += 1;
                outcome.quarantined_ids.push(batch[0].id);
            }
            error => {
                let reason = error.to_string();
                tracing::warn!(records = count, error = %reason, "usage batch write failed");
                if matches!(error, Error::Timeout(_)) {
                    // Cut in flight: the database may have committed it.
                    outcome.in_doubt += count;
                }
                outcome.unsettled.extend_from_slice(batch);
                outcome.last_error = Some(reason);
            }
        }
    }

    /// One write, tried again after transient failures (with backoff and full jitter) up to the
    /// retry limit, and never past the shutdown deadline.
    pub(super) fn write_retrying(
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

    /// Appends a rejected record, with the reason, to the quarantine file (or the error log).
    pub(super) fn quarantine(&mut self, record: &UsageRecord, error: &Error) {
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
    pub(super) fn settle(&mut self, outcome: &Delivery) {
        let dropped = self
            .config
            .shared
            .counters
            .dropped_queue_full
            .load(Ordering::Relaxed);
        let dropped_since = dropped > std::mem::replace(&mut self.drops_seen, dropped);
        let state = if outcome.failed > 0 || !outcome.unsettled.is_empty() {
            HealthState::Failing
        } else if self.spool_waiting() {
            // This write went through; what the spool holds is written next.
            HealthState::CatchingUp
        } else if outcome.retried || outcome.quarantined > 0 || dropped_since {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        };
        if outcome.written > 0 {
            self.status(|status| status.last_write_at = Some(Utc::now()));
        }
        self.set_state(state, outcome.last_error.as_deref());
    }

    /// Writes one batch; gives up when the shutdown deadline passes, even if shutdown began
    /// while the write was in progress. A sink that panics fails the batch, not the worker.
    /// While the write is in flight, the next batch is made (in a drain) and, with
    /// `Overflow::Spill`, once the write has taken [`SPILL_AFTER`] the queue is moved to the
    /// spool when it passes half full, so a write that hangs until its timeout drops nothing
    /// (a write that is merely busy leaves the queue alone).
    pub(super) fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
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

    pub(super) fn write_with(
        &mut self,
        sink: &mut BoxedSink,
        batch: &[UsageRecord],
    ) -> Result<(), Error> {
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
}

/// A sink's panic as an error, with its message.
pub(super) fn sink_panicked(panic: Box<dyn std::any::Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    Error::SinkPanicked(message)
}

/// What happened to the records of one batch.
#[derive(Default)]
pub(super) struct Delivery {
    pub(super) written: u64,
    pub(super) quarantined: u64,
    /// Of `quarantined`, records refused as older than the pruned horizon.
    pub(super) expired: u64,
    /// The ids quarantined.
    pub(super) quarantined_ids: Vec<uuid::Uuid>,
    /// Of those, the ids refused as older than the pruned horizon.
    pub(super) expired_ids: Vec<uuid::Uuid>,
    /// Records neither written nor quarantined.
    pub(super) unsettled: Vec<UsageRecord>,
    /// How many records were unsettled (once `unsettled` is handed on).
    pub(super) failed: u64,
    /// How many of the unsettled records' last write was cut in flight (a timeout, the
    /// shutdown deadline): they may be stored.
    pub(super) in_doubt: u64,
    pub(super) retried: bool,
    /// Replaying from the spool: one attempt per batch, the next drain tries again.
    pub(super) single_attempt: bool,
    pub(super) last_error: Option<String>,
}
