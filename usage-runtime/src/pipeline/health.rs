//! The tracker's health: a snapshot of its counters and state, for a health endpoint.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::call::handoff::{calls_without_tracker, HealthState};
use crate::call::handoff::{Shared, GLOBAL};

/// The installed tracker's health, or `None` when none is installed: for a health endpoint that
/// has no handle on the [`Tracker`](crate::Tracker).
pub fn health() -> Option<Health> {
    GLOBAL.load().as_deref().map(Health::of)
}

/// A snapshot of the tracker's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Healthy, degraded or failing, from the last writes.
    pub state: HealthState,
    /// Calls waiting in memory.
    pub queue_depth: usize,
    /// Calls taken into the queue.
    pub accepted: u64,
    /// Records written by the sink.
    pub written: u64,
    /// Records whose write failed.
    pub failed: u64,
    /// Records dropped, for any cause (the sum of the two counters below).
    pub dropped: u64,
    /// Calls dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records still unwritten when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
    /// Records whose last write was cut in flight (by the write timeout or the shutdown
    /// deadline) and that could not be kept in a spool: the database may have stored them, so
    /// they are not counted as failed or dropped. With a spool they are kept there instead (and
    /// counted in `spooled`): the replay's idempotent write settles them.
    pub outcome_unknown: u64,
    /// Write attempts repeated after a transient failure.
    pub retries: u64,
    /// Records the database rejected, set aside with the reason (never retried).
    pub quarantined: u64,
    /// Of `quarantined`, records refused because they started before the hour the database's
    /// records were pruned up to ([`Error::Expired`](crate::Error::Expired)): written again,
    /// they could count twice in the rollups.
    pub expired: u64,
    /// Records deleted by the retention (in all).
    pub pruned: u64,
    /// Records put in the disk spool because the sink was failing (in all).
    pub spooled: u64,
    /// Records written from the spool (in all, including those a previous run left).
    pub replayed: u64,
    /// Records waiting in the spool now.
    pub spool_records: u64,
    /// When the oldest record waiting in the spool started (`None` when the spool is empty, or
    /// before a spool left by an earlier process is first read): how far behind the writes are
    /// while [`HealthState::CatchingUp`].
    pub spool_oldest_at: Option<DateTime<Utc>>,
    /// Bytes the spool takes on disk now.
    pub spool_bytes: u64,
    /// Records found in the spool when it was opened (left by an earlier process).
    pub spool_recovered: u64,
    /// Torn segment tails truncated when the spool was opened.
    pub spool_torn_tails: u64,
    /// Corrupt frames skipped when the spool was opened.
    pub spool_corrupt_frames: u64,
    /// Spool segments skipped because their file vanished (deleted by a cleaner or an operator)
    /// or could not be read after retries (in all; at open they are left for the next start).
    pub spool_segments_skipped: u64,
    /// Records of spool segments that vanished or could not be read at replay (in all).
    pub spool_lost: u64,
    /// Records with token counts but no price for their model (their cost is unknown, not zero).
    pub unpriced: u64,
    /// Records whose token counts overflowed and were held at `u64::MAX`.
    pub token_counts_saturated: u64,
    /// When the sink last wrote a batch.
    pub last_write_at: Option<DateTime<Utc>>,
    /// The last write error, without secrets.
    pub last_error: Option<String>,
}

impl Health {
    /// The accounting identity: every call, and every record an earlier process left in the
    /// spool, is written, quarantined, waiting (in the queue or the spool), or counted under one
    /// cause of loss:
    ///
    /// ```text
    /// accepted + dropped_queue_full + spool_recovered    (every call; what an earlier run left)
    ///   = written + quarantined + queue_depth + spool_records                      (kept)
    ///   + dropped_queue_full + dropped_at_shutdown + failed + outcome_unknown + spool_lost
    /// ```
    ///
    /// Answers the left side less the right: zero whenever no write is in flight (after a
    /// `flush` or `shutdown`, say). Anything else is a record the tracker lost track of.
    pub fn unaccounted(&self) -> i128 {
        let sources = self.accepted + self.dropped_queue_full + self.spool_recovered;
        let ends = [
            self.dropped_queue_full,
            self.written,
            self.quarantined,
            self.queue_depth as u64,
            self.spool_records,
            self.failed,
            self.dropped_at_shutdown,
            self.outcome_unknown,
            self.spool_lost,
        ];
        i128::from(sources) - ends.iter().map(|&n| i128::from(n)).sum::<i128>()
    }

    /// A snapshot of `shared`.
    pub(crate) fn of(shared: &Shared) -> Health {
        let counters = &shared.counters;
        let taken = counters.taken.load(Ordering::Relaxed);
        let queue_depth = shared.queue.len();
        let status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        Health {
            queue_depth,
            accepted: taken + queue_depth as u64,
            written: counters.written.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            dropped: counters.dropped_queue_full.load(Ordering::Relaxed)
                + counters.dropped_at_shutdown.load(Ordering::Relaxed),
            dropped_queue_full: counters.dropped_queue_full.load(Ordering::Relaxed),
            dropped_at_shutdown: counters.dropped_at_shutdown.load(Ordering::Relaxed),
            outcome_unknown: counters.outcome_unknown.load(Ordering::Relaxed),
            state: status.state,
            retries: counters.retries.load(Ordering::Relaxed),
            quarantined: counters.quarantined.load(Ordering::Relaxed),
            expired: counters.expired.load(Ordering::Relaxed),
            pruned: counters.pruned.load(Ordering::Relaxed),
            spooled: counters.spooled.load(Ordering::Relaxed),
            replayed: counters.replayed.load(Ordering::Relaxed),
            spool_records: counters.spool_records.load(Ordering::Relaxed),
            spool_oldest_at: status.spool_oldest_at,
            spool_bytes: counters.spool_bytes.load(Ordering::Relaxed),
            spool_recovered: counters.spool_recovered.load(Ordering::Relaxed),
            spool_torn_tails: counters.spool_torn.load(Ordering::Relaxed),
            spool_corrupt_frames: counters.spool_corrupt.load(Ordering::Relaxed),
            spool_segments_skipped: counters.spool_skipped.load(Ordering::Relaxed),
            spool_lost: counters.spool_lost.load(Ordering::Relaxed),
            unpriced: counters.unpriced.load(Ordering::Relaxed),
            token_counts_saturated: counters.saturated.load(Ordering::Relaxed),
            last_write_at: status.last_write_at,
            last_error: status.last_error.clone(),
        }
    }
}
