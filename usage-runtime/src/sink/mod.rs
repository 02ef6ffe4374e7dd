//! Where records go. A sink writes one batch at a time and must be idempotent on the record id:
//! a batch written twice leaves one copy of each record.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::error::Error;
use crate::record::UsageRecord;

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemorySink;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSink;

/// A destination for records. The worker calls [`write`](Sink::write) from its own thread and
/// runtime, one batch at a time.
pub trait Sink: fmt::Debug + Send + 'static {
    /// Writes `batch`. Must be idempotent on [`UsageRecord::id`]: writing a record already
    /// written is not an error and leaves one copy.
    fn write(&mut self, batch: &[UsageRecord]) -> impl Future<Output = Result<(), Error>>;
}

pub(crate) type BoxedSink = Box<dyn DynSink>;

type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

/// The object-safe form of [`Sink`] the worker holds.
pub(crate) trait DynSink: fmt::Debug + Send {
    fn write_dyn<'a>(&'a mut self, batch: &'a [UsageRecord]) -> WriteFuture<'a>;
}

impl<S: Sink> DynSink for S {
    fn write_dyn<'a>(&'a mut self, batch: &'a [UsageRecord]) -> WriteFuture<'a> {
        Box::pin(self.write(batch))
    }
}
