//! The pipeline: the builder that installs a tracker, the handle it returns, its health, and the
//! worker thread that turns queued calls into records (ids, times, cost) and delivers them to
//! the sink, with retries, the spool, quarantine and maintenance.

pub(crate) mod builder;
pub(crate) mod health;
pub mod pricing;
pub(crate) mod record;
pub(crate) mod tracker;
pub(crate) mod worker;
