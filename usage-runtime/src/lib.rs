#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]

mod call;
mod catalog;
mod classify;
mod dimension;
mod error;
mod guard;
mod record;
pub mod sink;
#[cfg(feature = "testing")]
pub mod testing;
mod tracker;
mod worker;

pub use catalog::{operations, Operation};
pub use classify::{Classification, Classify};
pub use dimension::{IdInput, IdValue, TenantValue};
pub use error::{redact_url, BoxError, DbStep, Error};
pub use record::{Outcome, ParseOutcomeError, UsageRecord};
pub use tracker::{
    calls_without_tracker, Health, Tracker, TrackerBuilder, TrackerGuard, DEFAULT_BATCH_SIZE,
    DEFAULT_ERROR_MESSAGE_LIMIT, DEFAULT_FLUSH_INTERVAL, DEFAULT_ID_NAMESPACE,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_SHUTDOWN_TIMEOUT,
};

/// Tracks every call of a fn, or of every method of an impl block.
///
/// Each call is timed from entry to return (for `async fn` and fns returning a future: from the
/// future's first poll to its completion), classified (`Success`, `Error`, `Panic`, `Cancelled`)
/// and handed to the installed [`Tracker`] as a [`UsageRecord`].
///
/// | argument | meaning |
/// |---|---|
/// | `operation = "chat"` | the operation name; default: the fn's name |
/// | `tenant = expr` | the tenant: anything string-like ([`TenantValue`]) |
/// | `user = expr`, `session = expr` | a [`Uuid`](uuid::Uuid), a string or an `Option` ([`IdValue`]); non-UUID strings map to UUIDv5 |
/// | `fields(key = expr, ...)` | extra attributes, any `serde::Serialize` value |
/// | `error_message = false` | keep error text out of the record |
/// | `ok_if = f` / `error_if = f` | a fn or closure taking `&ReturnType`, returning `bool`, that decides the outcome |
/// | `crate = path` | the path to this crate, when it is renamed |
/// | `skip` | on a method inside an annotated impl block: leave it untracked |
///
/// Dimension expressions are evaluated by reference at entry and may use the arguments
/// (including `self` and names bound by destructuring); they never move them.
///
/// ```
/// use usage_runtime::track_usage;
///
/// struct Request { org: String, user: String }
///
/// #[track_usage(operation = "chat", tenant = req.org, user = req.user)]
/// async fn chat(req: Request) -> Result<String, std::io::Error> {
///     Ok(format!("hello {}", req.user))
/// }
/// ```
pub use usage_macros::track_usage;

/// Items used by the code `#[track_usage]` generates. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::catalog::{Operation, Registration};
    pub use crate::classify::{
        error_if, ok_if, test, type_name_of_val, Probe, ViaClassify, ViaDefault, ViaResult,
    };
    pub use crate::dimension::{field, fields, id, tenant, Dimensions};
    pub use crate::guard::{CallGuard, Guarded};
    pub use inventory;
}
