//! The question a report answers: filters, grouping, time buckets.

use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Serialize;

use crate::record::Outcome;

/// What rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupBy {
    /// The service name.
    Service,
    /// The operation.
    Operation,
    /// The tenant (`""` when the call had none).
    Tenant,
    /// The user (only from the records, not the rollups).
    User,
    /// The model (`""` when the call had none).
    Model,
    /// The outcome.
    Outcome,
}

impl GroupBy {
    /// The name used in [`ReportRow::group`](super::ReportRow::group).
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Service => "service",
            GroupBy::Operation => "operation",
            GroupBy::Tenant => "tenant",
            GroupBy::User => "user",
            GroupBy::Model => "model",
            GroupBy::Outcome => "outcome",
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            GroupBy::Service,
            GroupBy::Operation,
            GroupBy::Tenant,
            GroupBy::User,
            GroupBy::Model,
            GroupBy::Outcome,
        ]
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            format!("unknown dimension `{name}`; expected service, operation, tenant, user, model or outcome")
        })
    }
}

/// Time buckets for grouping (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBucket {
    /// Whole hours.
    Hour,
    /// Whole days.
    Day,
    /// Calendar months.
    Month,
}

impl TimeBucket {
    pub(super) fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let (y, m, d, h) = (at.year(), at.month(), at.day(), at.hour());
        let (d, h) = match self {
            TimeBucket::Hour => (d, h),
            TimeBucket::Day => (d, 0),
            TimeBucket::Month => (1, 0),
        };
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap_or(at)
    }
}

/// What to report: filters and grouping. Everything is optional; the default is one row for
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub(super) since: Option<DateTime<Utc>>,
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) service: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) operation: Option<String>,
    pub(super) user: Option<uuid::Uuid>,
    pub(super) model: Option<String>,
    pub(super) outcome: Option<Outcome>,
    pub(super) group_by: Vec<GroupBy>,
    pub(super) bucket: Option<TimeBucket>,
    pub(super) distinct_users: bool,
}

impl Query {
    /// Everything.
    pub fn new() -> Self {
        Self::default()
    }
    /// Calls started at or after `at`.
    pub fn since(mut self, at: DateTime<Utc>) -> Self {
        self.since = Some(at);
        self
    }
    /// Calls started before `at`.
    pub fn until(mut self, at: DateTime<Utc>) -> Self {
        self.until = Some(at);
        self
    }
    /// One service.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }
    /// One tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
    /// One operation.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }
    /// One user (read from the records).
    pub fn user(mut self, user: uuid::Uuid) -> Self {
        self.user = Some(user);
        self
    }
    /// One model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// One outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
    /// Groups by these dimensions, in this order.
    pub fn group_by(mut self, dimensions: impl IntoIterator<Item = GroupBy>) -> Self {
        self.group_by = dimensions.into_iter().collect();
        self
    }
    /// Groups by time bucket too.
    pub fn bucket(mut self, bucket: TimeBucket) -> Self {
        self.bucket = Some(bucket);
        self
    }
    /// Counts distinct users per group (read from the records).
    pub fn distinct_users(mut self) -> Self {
        self.distinct_users = true;
        self
    }

    /// Whether the rollups can answer: no user, and time limits on whole hours.
    pub(super) fn rollups_answer(&self) -> bool {
        let whole_hour = |at: &Option<DateTime<Utc>>| at.is_none_or(|at| hour_start(at) == at);
        self.without_users() && whole_hour(&self.since) && whole_hour(&self.until)
    }

    /// Whether the query names no user (the rollups keep none).
    fn without_users(&self) -> bool {
        self.user.is_none() && !self.distinct_users && !self.group_by.contains(&GroupBy::User)
    }

    /// For a query the rollups answer but for a `since` or `until` within an hour: the whole
    /// hours inside its range (answered from the rollups; the partial hours at the edges from
    /// the records). `None` when the rollups answer it all, or it names a user, or its range
    /// holds no whole hour.
    pub(super) fn whole_hours(&self) -> Option<super::aggregate::Range> {
        if !self.without_users() || self.rollups_answer() {
            return None;
        }
        let since = self.since.map(|at| {
            let start = hour_start(at);
            if start == at {
                at
            } else {
                start + chrono::Duration::hours(1)
            }
        });
        let until = self.until.map(hour_start);
        match (since, until) {
            (Some(since), Some(until)) if since >= until => None,
            range => Some(range),
        }
    }
}

/// The start of the hour `at` falls in: a time limit the rollups can answer for.
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    crate::rollup::hour_of(at)
}
