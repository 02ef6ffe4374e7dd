//! A finished call as it travels from the hot path to the worker, and its conversion into a
//! [`UsageRecord`] (id, wall-clock time, resolved ids) off the hot path.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::Operation;
use crate::dimension::Dimensions;
use crate::pricing::Pricing;
use crate::record::{Outcome, UsageRecord};
use crate::tokens::{Tally, TokenUsage};

/// What the hot path hands over: static metadata by reference, two clock readings' worth of
/// timing, an interned tenant, and one box of extras only when the call has any: 64 bytes.
#[derive(Debug)]
pub(crate) struct RawCall {
    pub(crate) op: &'static Operation,
    pub(crate) start: quanta::Instant,
    pub(crate) duration: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) tenant: Option<&'static str>,
    pub(crate) extras: Option<Box<Extras>>,
}

/// The rarer parts of a call: an error, declared dimensions, token usage.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub(crate) error: Option<Box<ErrorDetails>>,
    pub(crate) dims: Option<Box<Dimensions>>,
    pub(crate) tokens: Option<Box<Tally>>,
}

impl Extras {
    /// `None` when there is nothing to carry.
    pub(crate) fn of(
        error: Option<Box<ErrorDetails>>,
        dims: Option<Box<Dimensions>>,
        tokens: Option<Box<Tally>>,
    ) -> Option<Box<Extras>> {
        if error.is_none() && dims.is_none() && tokens.is_none() {
            return None;
        }
        Some(Box::new(Extras {
            error,
            dims,
            tokens,
        }))
    }
}

#[derive(Debug)]
pub(crate) struct ErrorDetails {
    pub(crate) error_type: String,
    pub(crate) message: Option<String>,
}

/// What every record of one tracker shares.
#[derive(Debug, Clone)]
pub(crate) struct RecordContext {
    pub(crate) service: Arc<str>,
    pub(crate) instance: Arc<str>,
    pub(crate) namespace: Uuid,
    pub(crate) pricing: Option<Arc<Pricing>>,
}

/// The attribute set on a record whose token counts saturated at `u64::MAX`.
pub const SATURATED_ATTRIBUTE: &str = "token_counts_saturated";

/// A wall-clock reading paired with a monotonic one, taken once per batch, so a call's wall-clock
/// start is derived from its monotonic start without reading the wall clock on the hot path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    wall: DateTime<Utc>,
    mono: quanta::Instant,
}

impl Anchor {
    pub(crate) fn now() -> Self {
        Anchor {
            wall: Utc::now(),
            mono: quanta::Instant::now(),
        }
    }

    fn wall_time_of(&self, instant: quanta::Instant) -> DateTime<Utc> {
        let ago = self.mono.saturating_duration_since(instant);
        let ago = chrono::Duration::from_std(ago).unwrap_or(chrono::Duration::zero());
        let wall = self.wall - ago;
        DateTime::from_timestamp_micros(wall.timestamp_micros()).unwrap_or(wall)
    }
}

const _: () = assert!(
    std::mem::size_of::<RawCall>() <= 64,
    "a queue slot per cache line"
);

impl RawCall {
    /// Stamps the id (UUIDv7) and completes the record.
    pub(crate) fn into_record(self, ctx: &RecordContext, anchor: &Anchor) -> UsageRecord {
        self.into_record_reusing(ctx, anchor, Uuid::now_v7(), None)
    }

    /// Completes the record with `id`, writing its text into the strings of `spare` (a record
    /// already written) instead of allocating new ones.
    pub(crate) fn into_record_reusing(
        self,
        ctx: &RecordContext,
        anchor: &Anchor,
        id: Uuid,
        spare: Option<UsageRecord>,
    ) -> UsageRecord {
        let (operation, function, service, instance, tenant_text) = match spare {
            Some(spare) => (
                spare.operation,
                spare.function,
                spare.service,
                spare.instance,
                spare.tenant_id,
            ),
            None => Default::default(),
        };
        let extras = self.extras.map(|extras| *extras).unwrap_or_default();
        let (error_type, error_message) = match extras.error {
            Some(details) => (Some(details.error_type), details.message),
            None => (None, None),
        };
        let dims = extras.dims.map(|dims| *dims).unwrap_or_default();
        let usage: Tally = extras.tokens.map(|tally| *tally).unwrap_or_default();
        let saturated = usage.saturated;
        // A model from the body or the result (the one that served the call) beats `model = ...`.
        let usage = TokenUsage {
            model: usage.model.or(dims.model.map(Into::into)),
            ..usage
        };
        let cost_nano_usd = ctx
            .pricing
            .as_deref()
            .and_then(|pricing| pricing.cost_nano_usd(&usage));
        let mut attributes: serde_json::Map<String, serde_json::Value> = dims
            .fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        if saturated {
            attributes.insert(SATURATED_ATTRIBUTE.to_owned(), true.into());
        }
        UsageRecord {
            id,
            operation: refill(operation, self.op.name()),
            function: refill(function, self.op.function()),
            service: refill(service, &ctx.service),
            instance: refill(instance, &ctx.instance),
            started_at: anchor.wall_time_of(self.start),
            duration: self.duration,
            outcome: self.outcome,
            error_type,
            error_message,
            tenant_id: match self.tenant {
                Some(tenant) => Some(refill(tenant_text.unwrap_or_default(), tenant)),
                None => dims.tenant.map(Cow::into_owned),
            },
            user_id: dims.user.map(|id| id.resolve(&ctx.namespace)),
            session_id: dims.session.map(|id| id.resolve(&ctx.namespace)),
            model: usage.model.map(|model| model.into_owned()),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cost_nano_usd,
            attributes,
        }
    }
}

/// `text` in `slot`'s buffer (allocating only when it is too small).
fn refill(mut slot: String, text: &str) -> String {
    slot.clear();
    slot.push_str(text);
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    static CHAT: Operation = Operation::new("chat", "app::chat", "src/app.rs", 1, true);
    static LONG: Operation = Operation::new(
        "an operation named at much greater length",
        "app::handlers::an_operation_named_at_much_greater_length",
        "src/app.rs",
        2,
        true,
    );

    fn context(service: &str, instance: &str) -> RecordContext {
        RecordContext {
            service: service.into(),
            instance: instance.into(),
            namespace: Uuid::nil(),
            pricing: None,
        }
    }

    fn call(
        op: &'static Operation,
        start: quanta::Instant,
        tenant: Option<&'static str>,
    ) -> RawCall {
        RawCall {
            op,
            start,
            duration: Duration::from_micros(1500),
            outcome: Outcome::Success,
            tenant,
            extras: None,
        }
    }

    #[test]
    fn a_record_made_over_a_spare_one_keeps_none_of_its_text() {
        let anchor = Anchor::now();
        let start = quanta::Instant::now();
        let spare = call(&LONG, start, Some("a tenant with a long name"))
            .into_record(&context("billing-service-eu", "host-7/pid-99"), &anchor);
        let ctx = context("chat", "a");
        let fresh = call(&CHAT, start, Some("acme")).into_record(&ctx, &anchor);
        let id = Uuid::now_v7();
        let reused = call(&CHAT, start, Some("acme")).into_record_reusing(
            &ctx,
            &anchor,
            id,
            Some(spare.clone()),
        );
        assert_eq!(reused.id, id);
        assert_eq!(
            UsageRecord {
                id: fresh.id,
                ..reused
            },
            fresh
        );
        // No tenant on the call: none on the record, whatever the spare had.
        let untenanted =
            call(&CHAT, start, None).into_record_reusing(&ctx, &anchor, id, Some(spare));
        assert_eq!(untenanted.tenant_id, None);
        assert_eq!(untenanted.operation, "chat");
    }
}
