//! The worker's side of the spool: records set aside while the sink fails, replayed in order
//! when it answers, spilled from the queue before it overflows, and kept at the shutdown deadline.

use super::*;
use crate::pipeline::builder::CATCH_UP_BATCH_SIZE;

impl Worker {
    pub(super) fn spool_waiting(&self) -> bool {
        self.config
            .spool
            .as_ref()
            .is_some_and(|spool| !spool.is_empty())
    }

    /// Records the sink could not take: into the spool when there is one with room (where an
    /// idempotent replay settles them), else counted: the `in_doubt` whose write was cut in
    /// flight as of unknown outcome, the rest as failed (or dropped at the shutdown deadline).
    pub(super) fn spool_or_fail(&mut self, records: &[UsageRecord], reason: &str, in_doubt: u64) {
        let size = self.config.batch_size.max(1);
        if self.config.spool.is_some() && records.len() > size {
            // A large write's records are kept a batch at a time: a nearly full spool keeps what
            // fits (an append is whole or refused).
            let mut doubt = in_doubt;
            for chunk in records.chunks(size) {
                let part = doubt.min(chunk.len() as u64);
                doubt -= part;
                self.spool_or_fail(chunk, reason, part);
            }
            return;
        }
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
                let oldest = records.iter().map(|record| record.started_at).min();
                self.status(|status| status.spool_oldest_at = status.spool_oldest_at.or(oldest));
                self.publish_spool();
            }
            Err(why) => {
                let unknown = in_doubt.min(count);
                counters
                    .outcome_unknown
                    .fetch_add(unknown, Ordering::Relaxed);
                let deadline = *self.config.shared.shutdown_deadline.borrow();
                if self.config.spool.is_none()
                    && deadline.is_some_and(|deadline| Instant::now() >= deadline)
                {
                    counters
                        .dropped_at_shutdown
                        .fetch_add(count - unknown, Ordering::Relaxed);
                } else {
                    counters
                        .failed
                        .fetch_add(count - unknown, Ordering::Relaxed);
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
    /// once every record in it is written or quarantined; until then it is handed back.
    pub(super) fn replay(&mut self, asked: bool) {
        if !asked && Instant::now() < self.next_replay {
            return;
        }
        let shared = Arc::clone(&self.config.shared);
        while self.spool_waiting() {
            let deadline = *shared.shutdown_deadline.borrow();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return;
            }
            let size = self.catch_up_size();
            let batch = match self.config.spool.as_mut().expect("spool").take(size) {
                Ok(batch) if batch.is_empty() => return, // the spool recounted itself
                Ok(batch) => {
                    let oldest = batch.iter().map(|record| record.started_at).min();
                    self.status(|status| status.spool_oldest_at = oldest);
                    batch
                }
                Err(error) => {
                    // Tried again after a backoff: a passing error must not use up the tries
                    // that skip a segment within moments.
                    tracing::error!(%error, "usage spool: cannot read the oldest segment");
                    self.replay_failures += 1;
                    self.next_replay =
                        Instant::now() + self.config.retry.delay(self.replay_failures);
                    return;
                }
            };
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
                outcome.expired += settled
                    .iter()
                    .filter(|record| self.replay_expired.contains(&record.id))
                    .count() as u64;
                if !pending.is_empty() {
                    self.deliver(&pending, &mut outcome);
                }
            }
            if !outcome.unsettled.is_empty() {
                self.replay_quarantined
                    .extend(std::mem::take(&mut outcome.quarantined_ids));
                self.replay_expired
                    .extend(std::mem::take(&mut outcome.expired_ids));
                if outcome.in_doubt > 0 {
                    // Cut by the write timeout: smaller writes next (never below the live size).
                    self.catch_up_shrink = (self.catch_up_shrink + 1).min(16);
                }
                self.replay_failures += 1;
                self.next_replay = Instant::now() + self.config.retry.delay(self.replay_failures);
                self.config.spool.as_mut().expect("spool").restore(batch);
                self.settle(&outcome);
                return;
            }
            self.replay_failures = 0;
            // Only this batch's: a smaller take after a timeout may leave some of the records
            // an earlier attempt quarantined for the next batch.
            for record in &batch {
                self.replay_quarantined.remove(&record.id);
                self.replay_expired.remove(&record.id);
            }
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
            self.settle(&outcome);
        }
        // Caught up: the next outage starts from the largest writes again.
        self.catch_up_shrink = 0;
    }

    /// Records per write while catching up (a spool replay, a backlog in the queue): large
    /// writes, whatever the live batch size, so a backlog drains at the sink's best rate.
    pub(super) fn catch_up_size(&self) -> usize {
        self.config
            .batch_size
            .max(CATCH_UP_BATCH_SIZE >> self.catch_up_shrink)
    }

    /// Publishes the spool's size to the health report.
    pub(super) fn publish_spool(&self) {
        if let Some(spool) = &self.config.spool {
            if spool.is_empty() {
                self.status(|status| status.spool_oldest_at = None);
            }
            let counters = &self.config.shared.counters;
            counters
                .spool_records
                .store(spool.records(), Ordering::Relaxed);
            counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            counters.spool_lost.store(spool.lost(), Ordering::Relaxed);
            counters
                .spool_skipped
                .store(spool.skipped(), Ordering::Relaxed);
        }
    }

    /// Moves queued records to the spool while the queue is more than half full.
    pub(super) fn spill(&mut self) {
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
                    0,
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
                0,
            );
            moved.clear();
        }
    }

    pub(super) fn drop_rest_at_deadline(&mut self) {
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
                self.spool_or_fail(chunk, "the shutdown deadline passed", 0);
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
        let unknown = counters.outcome_unknown.load(Ordering::Relaxed);
        if lost + unknown > self.lost_at_deadline {
            self.lost_at_deadline = lost + unknown;
            tracing::error!(
                records = lost,
                outcome_unknown = unknown,
                "usage shutdown deadline passed: records were not written"
            );
            let mut parts = Vec::new();
            if lost > 0 {
                parts.push(format!("{lost} record(s) missed the shutdown deadline"));
            }
            if unknown > 0 {
                parts.push(format!(
                    "{unknown} record(s) were being written when the shutdown deadline passed \
                     (outcome unknown: the database may have stored them)"
                ));
            }
            let reason = parts.join("; ");
            self.set_state(HealthState::Failing, Some(&reason));
        }
    }
}
