//! Where records go. A sink writes one batch at a time and must be idempotent on the record id:
//! a batch written twice leaves one copy of each record.
//!
//! | sink | feature |
//! |---|---|
//! | [`MemorySink`], [`JsonLinesSink`] | always |
//! | `SqliteSink` | `sqlite` (default) |
//! | `PostgresSink` | `postgres` |
//! | `MySqlSink` | `mysql` |
//! | `AnySqlSink`, `Backend`, `SqlConfig` | any of the three |
//! | `NatsSink` | `nats` |

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::call::catalog::Operation;
use crate::error::Error;
use crate::record::UsageRecord;

mod jsonl;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod sql;

pub use jsonl::JsonLinesSink;
pub use memory::MemorySink;
/// For `usage ingest`: the NATS URL as it may be shown, and its connection without secrets in it.
#[cfg(feature = "nats")]
#[doc(hidden)]
pub use nats::{
    connect_options as nats_connect_options, shown as nats_shown,
    without_credentials as nats_without_credentials,
};
#[cfg(feature = "nats")]
pub use nats::{NatsConfig, NatsSink};
#[cfg(feature = "mysql")]
pub use sql::mysql::MySqlSink;
#[cfg(feature = "postgres")]
pub use sql::postgres::PostgresSink;
#[cfg(feature = "sqlite")]
pub use sql::sqlite::SqliteSink;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::{
    AnySqlSink, Backend, SqlConfig, VerifyReport, DEFAULT_WRITE_CONNECTIONS, MIN_PART_RECORDS,
};

/// A destination for records. The worker calls [`write`](Sink::write) from its own thread and
/// runtime, one batch at a time.
pub trait Sink: fmt::Debug + Send + 'static {
    /// Writes `batch`. Must be idempotent on [`UsageRecord::id`]: writing a record already
    /// written is not an error and leaves one copy.
    fn write(&mut self, batch: &[UsageRecord]) -> impl Future<Output = Result<(), Error>>;

    /// Records the operation catalog of this program (every `#[track_usage]` fn linked in, called
    /// or not) for `service`, when the tracker starts (and again later if this fails). The SQL
    /// sinks keep it in `usage_operations` with when each operation was first and last seen; the
    /// default does nothing.
    fn register(
        &mut self,
        service: &str,
        operations: &[&'static Operation],
    ) -> impl Future<Output = Result<(), Error>> {
        let _ = (service, operations);
        async { Ok(()) }
    }

    /// Deletes the records of calls started before `before`, keeping the rollups, and returns
    /// how many it deleted; called by the tracker when a retention is set. It may stop early
    /// (the SQL sinks stop after about a second) so as not to hold up writes: while it returns
    /// more than zero, the tracker calls it again soon. The default keeps everything.
    fn prune(&mut self, before: DateTime<Utc>) -> impl Future<Output = Result<u64, Error>> {
        let _ = before;
        async { Ok(0) }
    }
}

pub(crate) type BoxedSink = Box<dyn DynSink>;

type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;
type PruneFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, Error>> + 'a>>;

/// The object-safe form of [`Sink`] the worker holds.
pub(crate) trait DynSink: fmt::Debug + Send {
    fn write_dyn<'a>(&'a mut self, batch: &'a [UsageRecord]) -> WriteFuture<'a>;
    fn register_dyn<'a>(
        &'a mut self,
        service: &'a str,
        operations: &'a [&'static Operation],
    ) -> WriteFuture<'a>;
    fn prune_dyn(&mut self, before: DateTime<Utc>) -> PruneFuture<'_>;
}

impl<S: Sink> DynSink for S {
    fn write_dyn<'a>(&'a mut self, batch: &'a [UsageRecord]) -> WriteFuture<'a> {
        Box::pin(self.write(batch))
    }

    fn register_dyn<'a>(
        &'a mut self,
        service: &'a str,
        operations: &'a [&'static Operation],
    ) -> WriteFuture<'a> {
        Box::pin(self.register(service, operations))
    }

    fn prune_dyn(&mut self, before: DateTime<Utc>) -> PruneFuture<'_> {
        Box::pin(self.prune(before))
    }
}

/// The record `verify()` writes, reads back and deletes.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn probe_record() -> UsageRecord {
    use chrono::{SubsecRound, Utc};

    UsageRecord::of_call(
        uuid::Uuid::now_v7(),
        ("usage.verify".into(), "usage_runtime::sink::verify".into()),
        (
            "usage-verify".into(),
            gethostname::gethostname()
                .to_string_lossy()
                .into_owned()
                .into(),
        ),
        Utc::now().trunc_subsecs(6),
        std::time::Duration::ZERO,
        crate::record::Outcome::Success,
    )
}
