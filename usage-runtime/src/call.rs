//! A finished call as it travels from the hot path to the worker, and its conversion into a
//! [`UsageRecord`] (id, wall-clock time, resolved ids) off the hot path.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::Operation;
use crate::dimension::Dimensions;
use crate::record::{Outcome, UsageRecord};

/// What the hot path hands over: static metadata by reference, two clock readings' worth of
/// timing, and boxed extras only when the call has them.
#[derive(Debug)]
pub(crate) struct RawCall {
    pub(crate) op: &'static Operation,
    pub(crate) start: quanta::Instant,
    pub(crate) duration: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<Box<ErrorDetails>>,
    pub(crate) dims: Option<Box<Dimensions>>,
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
}

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

impl RawCall {
    /// Stamps the id (UUIDv7) and completes the record.
    pub(crate) fn into_record(self, ctx: &RecordContext, anchor: &Anchor) -> UsageRecord {
        let (error_type, error_message) = match self.error {
            Some(details) => (Some(details.error_type), details.message),
            None => (None, None),
        };
        let dims = self.dims.map(|dims| *dims).unwrap_or_default();
        UsageRecord {
            id: Uuid::now_v7(),
            operation: self.op.name().to_owned(),
            function: self.op.function().to_owned(),
            service: ctx.service.to_string(),
            instance: ctx.instance.to_string(),
            started_at: anchor.wall_time_of(self.start),
            duration: self.duration,
            outcome: self.outcome,
            error_type,
            error_message,
            tenant_id: dims.tenant,
            user_id: dims.user.map(|id| id.resolve(&ctx.namespace)),
            session_id: dims.session.map(|id| id.resolve(&ctx.namespace)),
            attributes: dims
                .fields
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        }
    }
}
