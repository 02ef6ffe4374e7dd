//! Adding up rows into report rows: groups, sums and latency percentiles from the same
//! log-linear histogram whichever table the rows came from, and the plan of which ranges the
//! rollups answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::query::{GroupBy, Query, TimeBucket};
use super::{Fact, Group};
use crate::rollup::{bucket_midpoint, Tier};

/// Where a report was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// The rollups (daily rows for whole days, hourly rows for the rest).
    Rollups,
    /// The records.
    Records,
    /// The whole hours inside the range from the rollups, the partial hours at its edges
    /// (a `since` or `until` within an hour) from the records.
    RollupsAndRecords,
}

/// One group of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReportRow {
    /// The group: each dimension's name with its value, and `bucket` (RFC 3339) when bucketed.
    pub group: BTreeMap<String, String>,
    /// Calls.
    pub calls: u64,
    /// Calls with outcome `error`.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Input tokens, cache reads and writes and audio included (see
    /// [`TokenUsage`](crate::TokenUsage)).
    pub input_tokens: u64,
    /// Output tokens, reasoning and audio included.
    pub output_tokens: u64,
    /// Of the input tokens, those read from a prompt cache.
    pub cached_input_tokens: u64,
    /// Of the input tokens, those written to a prompt cache (every lifetime).
    pub cache_creation_input_tokens: u64,
    /// Of the cache-creation tokens, those written to the 1-hour cache.
    pub cache_creation_1h_input_tokens: u64,
    /// Of the output tokens, the reasoning ones.
    pub reasoning_tokens: u64,
    /// Of the input tokens, the audio ones.
    pub audio_input_tokens: u64,
    /// Of the output tokens, the audio ones.
    pub audio_output_tokens: u64,
    /// Cost in nano-USD (unpriced calls add nothing).
    pub cost_nano_usd: i64,
    /// Median latency, ms (from the histogram: within about 3%).
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Distinct operations called.
    pub distinct_operations: u64,
    /// Distinct users, when asked for.
    pub distinct_users: Option<u64>,
}

/// What a report answers: its rows, sorted by group, and where they came from (named apart from
/// [`UsageReport`](crate::UsageReport), what an LLM reply reports).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The rows.
    pub rows: Vec<ReportRow>,
    /// The rollups or the records.
    pub source: Source,
}

impl Query {
    pub(super) fn key(&self, fact: &Fact) -> BTreeMap<String, String> {
        let mut key = BTreeMap::new();
        for dimension in &self.group_by {
            let value = match dimension {
                GroupBy::Service => &fact.service,
                GroupBy::Operation => &fact.operation,
                GroupBy::Tenant => &fact.tenant,
                GroupBy::User => &fact.user,
                GroupBy::Model => &fact.model,
                GroupBy::Outcome => &fact.outcome,
            };
            key.insert(dimension.name().to_owned(), value.clone());
        }
        if let Some(bucket) = self.bucket {
            key.insert(
                "bucket".to_owned(),
                bucket
                    .start(fact.at)
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            );
        }
        key
    }
}

impl Group {
    /// Adds `other`'s calls, sums, histogram and distinct sets to this group's.
    pub(super) fn merge(&mut self, other: Group) {
        self.calls += other.calls;
        self.errors += other.errors;
        add_tokens(&mut self.tokens, &other.tokens);
        self.cost = self.cost.saturating_add(other.cost);
        for (bucket, calls) in other.histogram {
            self.count(bucket, calls);
        }
        self.operations.extend(other.operations);
        self.users.extend(other.users);
    }

    pub(super) fn count(&mut self, bucket: u32, calls: u64) {
        match self.histogram.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.histogram[at].1 = self.histogram[at].1.saturating_add(calls),
            Err(at) => self.histogram.insert(at, (bucket, calls)),
        }
    }
}

/// A histogram being added up for one group at a time: calls per bucket in a flat array, and
/// which buckets are in use (so moving it into the group's map touches only those).
pub(super) struct Scratch {
    pub(super) calls: Vec<u64>,
    pub(super) used: Vec<u32>,
}

impl Scratch {
    pub(super) fn new() -> Self {
        Scratch {
            calls: vec![0; crate::rollup::BUCKETS],
            used: Vec::new(),
        }
    }

    #[inline]
    pub(super) fn count(&mut self, bucket: u32, calls: u64) {
        // Decoding caps buckets at the last one, so the index is in range.
        let slot = &mut self.calls[bucket as usize];
        if *slot == 0 {
            self.used.push(bucket);
        }
        *slot = slot.saturating_add(calls);
    }

    /// Moves what was counted into `group` (a merge of two sorted lists).
    pub(super) fn flush(&mut self, group: &mut Group) {
        self.used.sort_unstable();
        self.used.dedup();
        let extra = self.used.len();
        let counted = self
            .used
            .drain(..)
            .map(|bucket| (bucket, std::mem::take(&mut self.calls[bucket as usize])));
        if group.histogram.is_empty() {
            group.histogram.extend(counted);
            return;
        }
        let held = std::mem::take(&mut group.histogram);
        let mut merged = Vec::with_capacity(held.len() + extra);
        let mut held = held.into_iter().peekable();
        for (bucket, calls) in counted {
            while let Some(&(b, c)) = held.peek() {
                if b >= bucket {
                    break;
                }
                merged.push((b, c));
                held.next();
            }
            match held.peek() {
                Some(&(b, c)) if b == bucket => {
                    merged.push((b, c.saturating_add(calls)));
                    held.next();
                }
                _ => merged.push((bucket, calls)),
            }
        }
        merged.extend(held);
        group.histogram = merged;
    }
}

pub(super) fn percentile(histogram: &[(u32, u64)], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (bucket, count) in histogram {
        seen = seen.saturating_add(*count);
        if seen >= rank {
            return bucket_midpoint(*bucket) as f64 / 1000.0;
        }
    }
    0.0
}

/// Adds each token count of `other` to `sums`, saturating.
pub(super) fn add_tokens(sums: &mut [u64; 8], other: &[u64; 8]) {
    for (sum, count) in sums.iter_mut().zip(other) {
        *sum = sum.saturating_add(*count);
    }
}

pub(super) fn finish(
    query: &Query,
    groups: BTreeMap<BTreeMap<String, String>, Group>,
    source: Source,
) -> Summary {
    let rows = groups
        .into_iter()
        .map(|(group, g)| {
            // Held at the largest count a database column stores, whichever source answers.
            let [input, output, cached, creation, creation_1h, reasoning, audio_in, audio_out] =
                g.tokens.map(|count| count.min(i64::MAX as u64));
            ReportRow {
                group,
                calls: g.calls,
                errors: g.errors,
                error_rate: if g.calls == 0 {
                    0.0
                } else {
                    g.errors as f64 / g.calls as f64
                },
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: cached,
                cache_creation_input_tokens: creation,
                cache_creation_1h_input_tokens: creation_1h,
                reasoning_tokens: reasoning,
                audio_input_tokens: audio_in,
                audio_output_tokens: audio_out,
                cost_nano_usd: g.cost,
                p50_ms: percentile(&g.histogram, g.calls, 0.50),
                p95_ms: percentile(&g.histogram, g.calls, 0.95),
                p99_ms: percentile(&g.histogram, g.calls, 0.99),
                distinct_operations: g.operations.len() as u64,
                distinct_users: query.distinct_users.then_some(g.users.len() as u64),
            }
        })
        .collect();
    Summary { rows, source }
}

/// A rollup sum as the database returns it: a number, or `high:low` halves (SQLite).
pub(super) fn parse_sum(text: &str) -> Option<i128> {
    match text.split_once(':') {
        Some((high, low)) => Some((high.parse::<i128>().ok()? << 32) + low.parse::<i128>().ok()?),
        None => text.split('.').next()?.parse().ok(),
    }
}

/// A time range: since, until.
pub(super) type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Which rollup tier answers which part of the query's range: hour buckets from the hourly rows;
/// otherwise whole UTC days from the daily rows and only the hours at either edge of the range
/// from the hourly ones.
pub(super) fn plan(query: &Query) -> Vec<(Tier, Range)> {
    let (since, until) = (query.since, query.until);
    if query.bucket == Some(TimeBucket::Hour) {
        return vec![(Tier::Hour, (since, until))];
    }
    let day = |at: DateTime<Utc>| Tier::Day.start(at);
    let first_day = since.map(|at| {
        if day(at) == at {
            at
        } else {
            day(at) + chrono::Duration::days(1)
        }
    });
    let last_day = until.map(day);
    if let (Some(first), Some(last)) = (first_day, last_day) {
        if first >= last {
            return vec![(Tier::Hour, (since, until))];
        }
    }
    let mut parts = vec![(Tier::Day, (first_day, last_day))];
    if let (Some(since), Some(first)) = (since, first_day) {
        if since < first {
            parts.push((Tier::Hour, (Some(since), Some(first))));
        }
    }
    if let (Some(until), Some(last)) = (until, last_day) {
        if last < until {
            parts.push((Tier::Hour, (Some(last), Some(until))));
        }
    }
    parts
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc))
}

pub(super) fn add(
    query: &Query,
    groups: &mut BTreeMap<BTreeMap<String, String>, Group>,
    fact: &Fact,
    bucket: Option<u32>,
) {
    let group = groups.entry(query.key(fact)).or_default();
    group.calls += fact.calls;
    if fact.outcome == "error" {
        group.errors += fact.calls;
    }
    add_tokens(&mut group.tokens, &fact.tokens);
    group.cost = group.cost.saturating_add(fact.cost);
    group.operations.insert(fact.operation.clone());
    if !fact.user.is_empty() {
        group.users.insert(fact.user.clone());
    }
    if let Some(bucket) = bucket {
        group.count(bucket, fact.calls);
    }
}
