//! Making a [`UsageRecord`] from a finished call, off the hot path: the id, the wall-clock
//! start from the monotonic one, resolved ids, tokens and cost.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

use super::pricing::Pricing;
use crate::call::intern::Interner;
use crate::call::raw::{Extras, RawCall};
use crate::call::tokens::{recycle, Tally, TokenUsage};
use crate::record::UsageRecord;

/// What every record of one tracker shares.
#[derive(Debug, Clone)]
pub(crate) struct RecordContext {
    pub(crate) service: Cow<'static, str>,
    pub(crate) instance: Cow<'static, str>,
    pub(crate) namespace: Uuid,
    pub(crate) pricing: Option<Arc<Pricing>>,
}

/// `text` as `'static` text, so records borrow it: interned (a process names few services and
/// instances), or owned once more than [`MAX_SHARED_TEXTS`] distinct texts have been seen.
pub(crate) fn shared_text(text: String) -> Cow<'static, str> {
    static TEXTS: Interner<()> = Interner::new(MAX_SHARED_TEXTS);
    match TEXTS.get(&text, |_| ()) {
        Ok((interned, ())) => Cow::Borrowed(interned),
        Err(_) => Cow::Owned(text),
    }
}

/// The most service and instance names interned per process.
const MAX_SHARED_TEXTS: usize = 64;

/// The attribute set on a record whose token counts saturated at `u64::MAX` (a sum overflowed, or
/// a count did not fit in 64 bits).
pub const SATURATED_ATTRIBUTE: &str = "token_counts_saturated";

/// A wall-clock reading paired with a monotonic one, taken once per batch, so a call's wall-clock
/// start is derived from its monotonic start without reading the wall clock on the hot path, and
/// the batch's ids are stamped without reading it per record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    wall: DateTime<Utc>,
    /// `wall` in nanoseconds since the Unix epoch.
    wall_nanos: i64,
    mono: quanta::Instant,
    /// The UTC day of `wall`, and its midnight in nanoseconds since the epoch: a start on the
    /// same day (nearly all) is made from it without a calendar computation.
    day: chrono::NaiveDate,
    day_start_nanos: i64,
}

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

impl Anchor {
    pub(crate) fn now() -> Self {
        Self::at(Utc::now(), quanta::Instant::now())
    }

    pub(crate) fn at(wall: DateTime<Utc>, mono: quanta::Instant) -> Self {
        // Past 2262 nanoseconds overflow an i64: every start then takes the general path.
        let wall_nanos = wall.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let day = wall.date_naive();
        let day_start_nanos = wall_nanos
            - i64::from(wall.num_seconds_from_midnight()) * 1_000_000_000
            - i64::from(wall.nanosecond());
        Anchor {
            wall,
            wall_nanos,
            mono,
            day,
            day_start_nanos,
        }
    }

    /// The wall-clock time of `instant`, to the microsecond.
    fn wall_time_of(&self, instant: quanta::Instant) -> DateTime<Utc> {
        let ago = self.mono.saturating_duration_since(instant);
        let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
        let nanos = self.wall_nanos.saturating_sub(ago);
        let micros = nanos.div_euclid(1_000);
        let into_day = micros
            .saturating_mul(1_000)
            .saturating_sub(self.day_start_nanos);
        if self.wall_nanos != i64::MAX && (0..NANOS_PER_DAY).contains(&into_day) {
            let secs = (into_day / 1_000_000_000) as u32;
            let subsec = (into_day % 1_000_000_000) as u32;
            if let Some(time) = chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, subsec)
            {
                return self.day.and_time(time).and_utc();
            }
        }
        let wall = self
            .wall
            .checked_sub_signed(chrono::Duration::nanoseconds(ago))
            .unwrap_or(self.wall);
        DateTime::from_timestamp_micros(wall.timestamp_micros()).unwrap_or(wall)
    }

    /// The anchor's wall-clock time in milliseconds since the Unix epoch.
    pub(crate) fn unix_millis(&self) -> u64 {
        u64::try_from(self.wall.timestamp_millis()).unwrap_or(0)
    }
}

impl RawCall {
    /// Stamps the id (UUIDv7) and completes the record.
    pub(crate) fn into_record(self, ctx: &RecordContext, anchor: &Anchor) -> UsageRecord {
        self.into_record_with_id(ctx, anchor, Uuid::now_v7())
    }

    /// Completes the record with `id`. Text that repeats on every call is borrowed, not copied.
    pub(crate) fn into_record_with_id(
        self,
        ctx: &RecordContext,
        anchor: &Anchor,
        id: Uuid,
    ) -> UsageRecord {
        let started_at = anchor.wall_time_of(self.start);
        let mut record = UsageRecord::of_call(
            id,
            (
                Cow::Borrowed(self.op.name()),
                Cow::Borrowed(self.op.function()),
            ),
            (ctx.service.clone(), ctx.instance.clone()),
            started_at,
            self.end.saturating_duration_since(self.start),
            self.outcome,
        );
        record.tenant_id = self.tenant.map(Cow::Borrowed);
        if self.extras.is_some() || self.tokens.is_some() {
            complete(&mut record, self.extras, self.tokens, ctx);
        }
        record
    }
}

/// Adds the error, dimensions and token usage to `record`.
fn complete(
    record: &mut UsageRecord,
    extras: Option<Box<Extras>>,
    tokens: Option<Box<Tally>>,
    ctx: &RecordContext,
) {
    let Extras { error, dims } = extras.map(|extras| *extras).unwrap_or_default();
    if let Some(details) = error {
        record.error_type = Some(details.error_type);
        record.error_message = details.message;
    }
    let dims = dims.map(|dims| *dims).unwrap_or_default();
    let usage: Tally = tokens.map(recycle).unwrap_or_default();
    let saturated = usage.saturated;
    // A model from the body or the result (the one that served the call) beats `model = ...`.
    let usage = TokenUsage {
        model: usage.model.or(dims.model),
        ..usage
    };
    if let Some(cost) = ctx
        .pricing
        .as_deref()
        .and_then(|pricing| pricing.cost(&usage, record.started_at))
    {
        record.cost_nano_usd = Some(cost.nano_usd);
        // Interned: a tracker's few entries repeat on every record.
        record.price_id = Some(crate::call::intern::intern_model(cost.price_id));
    }
    if !dims.fields.is_empty() {
        record.attributes = dims
            .fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
    }
    if saturated {
        record
            .attributes
            .insert(SATURATED_ATTRIBUTE.to_owned(), true.into());
    }
    if record.tenant_id.is_none() {
        record.tenant_id = dims.tenant;
    }
    record.user_id = dims.user.map(|id| id.resolve(&ctx.namespace));
    record.session_id = dims.session.map(|id| id.resolve(&ctx.namespace));
    record.set_token_counts(&usage);
    record.model = usage.model;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::call::catalog::Operation;
    use crate::record::Outcome;

    static CHAT: Operation = Operation::new("chat", "app::chat", "src/app.rs", 1, true);

    fn context(service: &'static str, instance: &'static str) -> RecordContext {
        RecordContext {
            service: service.into(),
            instance: instance.into(),
            namespace: Uuid::nil(),
            pricing: None,
        }
    }

    fn call(start: quanta::Instant, tenant: Option<&'static str>) -> RawCall {
        RawCall {
            op: &CHAT,
            start,
            end: start + Duration::from_micros(1500),
            outcome: Outcome::Success,
            tenant,
            tokens: None,
            extras: None,
        }
    }

    #[test]
    fn a_record_borrows_the_text_every_call_repeats() {
        let start = quanta::Instant::now();
        let ctx = context("chat-service", "host-7");
        let record = call(start, Some("acme")).into_record(&ctx, &Anchor::now());
        assert!(matches!(record.operation, Cow::Borrowed("chat")));
        assert!(matches!(record.function, Cow::Borrowed("app::chat")));
        assert!(matches!(record.service, Cow::Borrowed("chat-service")));
        assert!(matches!(record.instance, Cow::Borrowed("host-7")));
        assert!(matches!(record.tenant_id, Some(Cow::Borrowed("acme"))));
        assert_eq!(
            call(start, None)
                .into_record(&ctx, &Anchor::now())
                .tenant_id,
            None
        );
    }

    #[test]
    fn a_start_is_placed_on_the_wall_clock_to_the_microsecond_across_midnight_too() {
        // Two days on from now, so that starts up to a day before it stay after boot.
        let mono = quanta::Instant::now() + Duration::from_secs(2 * 86_400);
        let wall: DateTime<Utc> = "2026-11-23T00:00:00.002500300Z".parse().unwrap();
        let anchor = Anchor::at(wall, mono);
        let started = |ago_nanos: u64| {
            anchor
                .wall_time_of(mono - Duration::from_nanos(ago_nanos))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        // The same day (made from the anchor's day), truncated to the microsecond.
        assert_eq!(started(0), "2026-11-23T00:00:00.002500Z");
        assert_eq!(started(1_000), "2026-11-23T00:00:00.002499Z");
        assert_eq!(started(2_500_300), "2026-11-23T00:00:00Z");
        // The day before (the general path), truncated the same way.
        assert_eq!(started(2_500_301), "2026-11-22T23:59:59.999999Z");
        assert_eq!(started(86_400_000_000_000), "2026-11-22T00:00:00.002500Z");
        // A start after the anchor (a reading taken after it) is placed at the anchor.
        assert_eq!(
            anchor.wall_time_of(mono + Duration::from_millis(5)),
            anchor.wall_time_of(mono)
        );
    }
}
