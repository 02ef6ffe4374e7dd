//! Work besides delivery: recording the operation catalog, pruning past the retention.

use super::*;

/// How often records past the retention are deleted.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// When a prune that deleted records (and may have stopped early) goes on.
pub(super) const PRUNE_AGAIN: Duration = Duration::from_secs(10);
/// The longest the worker waits for one prune call.
pub(super) const PRUNE_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed attempt to record the operation catalog, the first wait before the next; it
/// doubles after each failure, up to [`CATALOG_RETRY_MAX`].
pub(super) const CATALOG_RETRY: Duration = Duration::from_secs(1);
pub(super) const CATALOG_RETRY_MAX: Duration = Duration::from_secs(600);

impl Worker {
    /// Hands the operation catalog to the sink; whether it was recorded. A failure is logged,
    /// not fatal: the worker tries again later.
    pub(super) fn register_operations(&mut self) -> bool {
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

    /// With a retention set, deletes the records older than it, at the first drain and then
    /// hourly, while the sink is healthy.
    pub(super) fn prune_if_due(&mut self) {
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
}
