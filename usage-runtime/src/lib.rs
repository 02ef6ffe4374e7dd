#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]

// The folders follow the data flow (see ARCHITECTURE.md): the call on the caller's thread, the
// pipeline that makes and delivers records, the spool, the sinks, and the read side.
pub mod budget;
mod call;
pub mod error;
mod pipeline;
pub mod record;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod report;
// Without a SQL sink, nothing maintains rollups; the public histogram functions remain.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub mod rollup;
pub mod sink;
pub mod spool;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tower")]
pub mod tower;

pub use call::providers;
pub use error::Error;
pub use pipeline::builder::TrackerBuilder;
pub use pipeline::health::{health, Health, HealthState};
pub use pipeline::pricing::Pricing;
pub use pipeline::tracker::Tracker;
pub use record::{Outcome, UsageRecord};
pub use sink::Sink;
pub use tokens::{record_tokens, record_usage, set_model, TokenKind, TokenUsage, UsageReport};

/// The tracker's settings and their defaults (each documented beside its setter on
/// [`TrackerBuilder`]), and its counters.
pub mod tracker {
    pub use crate::pipeline::builder::{
        Durability, Overflow, TrackerBuilder, CATCH_UP_BATCH_SIZE, DEFAULT_ATTRIBUTES_LIMIT,
        DEFAULT_BATCH_SIZE, DEFAULT_ERROR_MESSAGE_LIMIT, DEFAULT_FLUSH_INTERVAL,
        DEFAULT_ID_NAMESPACE, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY, DEFAULT_RETRY_BASE,
        DEFAULT_RETRY_MAX, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SPOOL_FSYNC, DEFAULT_SPOOL_MAX_BYTES,
        DEFAULT_WRITE_TIMEOUT, LONGEST_SETTING,
    };
    pub use crate::pipeline::health::{calls_without_tracker, health, Health, HealthState};
    pub use crate::pipeline::tracker::Tracker;
}

/// Token usage: what an LLM reply reports ([`UsageReport`], [`TokenUsage`]) and what a body
/// records itself ([`record_tokens`], [`set_model`]).
pub mod tokens {
    pub use crate::call::tokens::{
        record_cached_input_tokens, record_token_count, record_tokens, record_usage, set_model,
        ModelName, TokenCount, TokenKind, TokenUsage, UsageReport,
    };
    pub use crate::pipeline::record::SATURATED_ATTRIBUTE;
}

pub use pipeline::pricing;

/// What `tenant = ...`, `user = ...` and `session = ...` accept.
pub mod dimensions {
    pub use crate::call::dimension::{
        IdInput, IdValue, TenantValue, CUT_ATTRIBUTE, DEFAULT_ATTRIBUTES_LIMIT,
        DEFAULT_ID_NAMESPACE,
    };
}

/// How a call's outcome is decided: `ok_if`, `error_if`, or the return type's
/// [`Classify`](crate::call::classify::Classify)
/// (`Result` is an error when `Err`).
pub mod classify {
    pub use crate::call::classify::{Classification, Classify};
}

/// Every `#[track_usage]` operation linked into this program, called or not.
pub mod catalog {
    pub use crate::call::catalog::{operations, Operation};
}

/// Tracks every call of a fn, or of every method of an impl block.
///
/// Each call is timed from entry to return (for `async fn` and fns returning a future: from the
/// future's first poll to its completion), classified (`Success`, `Error`, `Panic`, `Cancelled`)
/// and handed to the installed [`Tracker`] as a [`UsageRecord`].
///
/// | argument | meaning |
/// |---|---|
/// | `operation = "chat"` | the operation name; default: the fn's name |
/// | `tenant = expr` | the tenant: anything string-like ([`TenantValue`](dimensions::TenantValue)) |
/// | `user = expr`, `session = expr` | a [`Uuid`](uuid::Uuid), a string or an `Option` ([`IdValue`](dimensions::IdValue)); non-UUID strings map to UUIDv5 |
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

/// Derives [`UsageReport`] from `#[usage(...)]` field attributes: each token kind by its
/// [`TokenUsage`] field's name (`input_tokens`, `output_tokens`, `cached_input_tokens` or
/// `cache_read_input_tokens`, `cache_creation_input_tokens`, `cache_creation_1h_input_tokens`,
/// `reasoning_tokens`, `audio_input_tokens`, `audio_output_tokens`), `model`, and `flatten` for a
/// nested value that
/// implements `UsageReport` (an `Option` of one reports nothing when `None`). Fields of the same
/// kind are added; one field may carry several kinds. On an enum, each variant reports its own
/// marked fields. `#[usage(crate = path)]` on the type names a renamed runtime crate.
///
/// ```
/// use usage_runtime::UsageReport;
///
/// // Anthropic reports cache reads apart from `input_tokens`: count them in both.
/// #[derive(UsageReport)]
/// struct Message {
///     #[usage(model)]
///     model: String,
///     #[usage(flatten)]
///     usage: AnthropicUsage,
/// }
///
/// #[derive(UsageReport)]
/// struct AnthropicUsage {
///     #[usage(input_tokens)]
///     input_tokens: u32,
///     #[usage(input_tokens, cached_input_tokens)]
///     cache_read_input_tokens: Option<u32>,
///     #[usage(output_tokens)]
///     output_tokens: u32,
/// }
///
/// let message = Message {
///     model: "claude-3-5-haiku-20241022".into(),
///     usage: AnthropicUsage { input_tokens: 100, cache_read_input_tokens: Some(900), output_tokens: 20 },
/// };
/// let usage = message.usage();
/// assert_eq!(usage.input_tokens, Some(1000));
/// assert_eq!(usage.cached_input_tokens, Some(900));
/// ```
pub use usage_macros::UsageReport;

/// Items used by the code `#[track_usage]` generates. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::call::catalog::{Operation, Registration};
    pub use crate::call::classify::{
        error_if, ok_if, test, type_name_of_val, Probe, ViaClassify, ViaDefault, ViaResult,
    };
    pub use crate::call::dimension::{field, fields, id, model, tenant, Dimensions};
    pub use crate::call::guard::{call, CallGuard, Guarded};
    pub use crate::call::stream::TrackedStream;
    pub use crate::call::tokens::{
        add_field_count, set_field_model, TokenKind, TokensProbe, UsageReport, ViaNoReport,
        ViaReport, ViaTokensAll, ViaTokensOk,
    };
    pub use crate::{
        __usage_operation as operation, __usage_report as report,
        __usage_return_edge as return_edge, __usage_verdict as verdict,
    };
    pub use inventory;
}
