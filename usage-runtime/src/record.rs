//! The record of one tracked call.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One tracked call, as the sinks store it.
///
/// Records are made by the tracker from the calls of `#[track_usage]` fns; `id` is a UUIDv7
/// assigned once, before the first write attempt, and is the idempotency key of every sink.
///
/// Text that repeats on every call (the operation, fn, service, instance, an interned tenant or
/// model) is borrowed from `'static` data rather than copied per record; other text, and every
/// field of a record read back (from the spool, a stream), is owned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageRecord {
    /// UUIDv7, unique per call; the primary key in every database.
    pub id: Uuid,
    /// The operation name: `operation = "..."`, else the fn's name.
    pub operation: Cow<'static, str>,
    /// `module::path::fn_name` of the annotated fn (`module::Type::method` inside an annotated
    /// impl block).
    pub function: Cow<'static, str>,
    /// The service name from [`TrackerBuilder::service`](crate::TrackerBuilder::service).
    pub service: Cow<'static, str>,
    /// The instance (host) name from [`TrackerBuilder::instance`](crate::TrackerBuilder::instance).
    pub instance: Cow<'static, str>,
    /// Wall-clock start of the call, in UTC, with microsecond precision.
    pub started_at: DateTime<Utc>,
    /// How long the call ran, from a monotonic clock (stored in microseconds).
    #[serde(rename = "duration_us", with = "duration_us")]
    pub duration: Duration,
    /// How the call ended.
    pub outcome: Outcome,
    /// The error's type name, when the outcome is [`Outcome::Error`].
    pub error_type: Option<String>,
    /// The error's alternate `Display` text (`{:#}`), truncated to the configured limit.
    pub error_message: Option<String>,
    /// The tenant (organisation) the call was made for.
    pub tenant_id: Option<Cow<'static, str>>,
    /// The user; a non-UUID id is mapped to a UUIDv5 in the tracker's namespace.
    pub user_id: Option<Uuid>,
    /// The session; a non-UUID id is mapped to a UUIDv5 in the tracker's namespace.
    pub session_id: Option<Uuid>,
    /// The model that served the call: set in the body (`set_model`), else reported by the
    /// result (`UsageReport`), else `model = ...` in the attribute.
    pub model: Option<Cow<'static, str>>,
    /// Input tokens: all of them, cache reads and writes and audio included (the OpenTelemetry
    /// GenAI conventions' inclusive rule; see [`TokenUsage`](crate::TokenUsage)).
    pub input_tokens: Option<u64>,
    /// Output tokens: all of them, reasoning and audio included.
    pub output_tokens: Option<u64>,
    /// How many of the input tokens were read from a prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// How many of the input tokens were written to a prompt cache, every lifetime together.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// How many of the cache-creation tokens went to the 1-hour cache (the rest: 5-minute).
    #[serde(default)]
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// How many of the output tokens were reasoning.
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
    /// How many of the input tokens were audio.
    #[serde(default)]
    pub audio_input_tokens: Option<u64>,
    /// How many of the output tokens were audio.
    #[serde(default)]
    pub audio_output_tokens: Option<u64>,
    /// The exact cost in nano-USD (10⁻⁹ USD) from the tracker's [`Pricing`](crate::Pricing);
    /// `None` when the model has no price (never a made-up zero).
    pub cost_nano_usd: Option<i64>,
    /// Which price entry made `cost_nano_usd` ([`PriceEntry::id`](crate::pricing::PriceEntry::id):
    /// the model pattern, the entry's start date and a hash of its rates), so a later change of
    /// prices never silently rewrites what a stored cost meant. `None` when unpriced.
    #[serde(default)]
    pub price_id: Option<Cow<'static, str>>,
    /// Extra attributes declared with `fields(key = expr, ...)`; `token_counts_saturated: true`
    /// when a token count overflowed, or did not fit in 64 bits, and was held at `u64::MAX`.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// How a tracked call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call returned a value classified as success.
    Success,
    /// The call returned an error (`Err`, or a value its [`Classify`](crate::classify::Classify) impl or
    /// `error_if` / `ok_if` calls an error).
    Error,
    /// The call panicked; the panic went on unwinding after the record was made.
    Panic,
    /// The call's future was dropped before it completed.
    Cancelled,
}

impl UsageRecord {
    /// A record with the required fields given and every optional one empty: no error, tenant,
    /// ids, model, tokens, cost or attributes.
    pub(crate) fn of_call(
        id: Uuid,
        (operation, function): (Cow<'static, str>, Cow<'static, str>),
        (service, instance): (Cow<'static, str>, Cow<'static, str>),
        started_at: DateTime<Utc>,
        duration: Duration,
        outcome: Outcome,
    ) -> Self {
        UsageRecord {
            id,
            operation,
            function,
            service,
            instance,
            started_at,
            duration,
            outcome,
            error_type: None,
            error_message: None,
            tenant_id: None,
            user_id: None,
            session_id: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            cached_input_tokens: None,
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: None,
            audio_input_tokens: None,
            audio_output_tokens: None,
            cost_nano_usd: None,
            price_id: None,
            attributes: serde_json::Map::new(),
        }
    }

    /// Whether the record carries any token count.
    pub fn has_tokens(&self) -> bool {
        self.token_counts().iter().any(Option::is_some)
    }

    /// Every token count, in [`TokenKind::ALL`](crate::TokenKind::ALL) order.
    pub fn token_counts(&self) -> [Option<u64>; 8] {
        crate::call::tokens::token_fields!(counts_of, self)
    }

    /// Sets every token count from `usage` (its model aside).
    pub(crate) fn set_token_counts(&mut self, usage: &crate::TokenUsage<'_>) {
        crate::call::tokens::token_fields!(copy_counts, self, usage);
    }

    /// The token counts (and model) as a [`TokenUsage`](crate::TokenUsage), as pricing reads them.
    pub fn token_usage(&self) -> crate::TokenUsage<'_> {
        crate::TokenUsage::from_counts(self.token_counts(), self.model.as_deref())
    }
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Panic,
        Outcome::Cancelled,
    ];

    /// The lower-case name stored in databases: `success`, `error`, `panic`, `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `success`, `error`, `panic`, `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome `{0}`; expected success, error, panic or cancelled")]
pub struct ParseOutcomeError(String);

impl FromStr for Outcome {
    type Err = ParseOutcomeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
            .ok_or_else(|| ParseOutcomeError(text.to_owned()))
    }
}

mod duration_us {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{outcome}\"")
            );
        }
        assert!("failure".parse::<Outcome>().is_err());
    }
}
