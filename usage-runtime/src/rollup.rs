//! Hourly rollups, maintained by the SQL sinks in the same transaction as the records they
//! summarise, from the records that transaction actually inserted (so a replayed or redelivered
//! record never counts twice).
//!
//! A rollup row is keyed by hour, service, operation, tenant, model and outcome (a missing tenant
//! or model is `''` in the key) and holds calls, token sums, cost and the sum of durations; the
//! latency histogram sits beside it, one row per non-empty bucket.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::record::UsageRecord;

/// Mantissa bits of the log-linear latency buckets: each bucket spans at most 1/32 of its lower
/// bound, so a percentile read from the histogram is within about 3% of the true value.
const MANTISSA_BITS: u32 = 5;
const LINEAR: u64 = 1 << MANTISSA_BITS;

/// The histogram bucket of a duration in microseconds: exact below 32 µs, then 32 buckets per
/// power of two.
pub fn latency_bucket(duration_us: u64) -> u32 {
    if duration_us < LINEAR {
        return duration_us as u32;
    }
    let exponent = 63 - duration_us.leading_zeros(); // >= MANTISSA_BITS
    let shift = exponent - MANTISSA_BITS;
    let mantissa = (duration_us >> shift) & (LINEAR - 1);
    (LINEAR as u32) + shift * (LINEAR as u32) + mantissa as u32
}

/// The smallest duration (µs) in `bucket` (`u64::MAX` past the last bucket).
pub fn bucket_lower_bound(bucket: u32) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < LINEAR {
        return bucket;
    }
    let shift = (bucket - LINEAR) / LINEAR;
    let mantissa = (bucket - LINEAR) % LINEAR;
    u64::try_from(u128::from(LINEAR + mantissa) << shift).unwrap_or(u64::MAX)
}

/// A representative duration (µs) for `bucket`: the middle of its range.
pub fn bucket_midpoint(bucket: u32) -> u64 {
    let low = bucket_lower_bound(bucket);
    let high = bucket_lower_bound(bucket + 1);
    low + (high - low) / 2
}

/// The key of a rollup row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RollupKey {
    pub(crate) hour: DateTime<Utc>,
    pub(crate) service: String,
    pub(crate) operation: String,
    pub(crate) tenant_id: String,
    pub(crate) model: String,
    pub(crate) outcome: &'static str,
}

/// The sums of a rollup row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RollupSums {
    pub(crate) calls: i64,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) cached_input_tokens: i64,
    pub(crate) cost_nano_usd: i64,
    pub(crate) duration_us: i64,
}

/// The fields of a record a rollup needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) service: &'a str,
    pub(crate) operation: &'a str,
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    pub(crate) outcome: crate::record::Outcome,
    pub(crate) duration_us: u64,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) cached_input_tokens: Option<u64>,
    pub(crate) cost_nano_usd: Option<i64>,
}

/// What a set of newly inserted records adds to the rollups.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pub(crate) rows: BTreeMap<RollupKey, RollupSums>,
    pub(crate) latency: BTreeMap<(RollupKey, u32), i64>,
}

/// The start of the hour `at` falls in (UTC): the one truncation every rollup, report and prune
/// uses.
pub(crate) fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let hour = at.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(hour, 0).unwrap_or(at)
}

/// A count as a signed 64-bit integer, held at `i64::MAX` (as the sinks store counts).
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Rollup {
    /// Adds up `records` (the ones just inserted).
    pub(crate) fn of<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> Rollup {
        let mut rollup = Rollup::default();
        for record in records {
            rollup.add(record);
        }
        rollup
    }

    /// Adds one record.
    pub(crate) fn add(&mut self, record: &UsageRecord) {
        self.add_parts(Parts {
            started_at: record.started_at,
            service: &record.service,
            operation: &record.operation,
            tenant_id: record.tenant_id.as_deref(),
            model: record.model.as_deref(),
            outcome: record.outcome,
            duration_us: u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cached_input_tokens: record.cached_input_tokens,
            cost_nano_usd: record.cost_nano_usd,
        });
    }

    /// Adds one record given by its parts (as read back from a table, for a backfill).
    pub(crate) fn add_parts(&mut self, parts: Parts<'_>) {
        let key = RollupKey {
            hour: hour_of(parts.started_at),
            service: parts.service.to_owned(),
            operation: parts.operation.to_owned(),
            tenant_id: parts.tenant_id.unwrap_or_default().to_owned(),
            model: parts.model.unwrap_or_default().to_owned(),
            outcome: parts.outcome.as_str(),
        };
        *self
            .latency
            .entry((key.clone(), latency_bucket(parts.duration_us)))
            .or_default() += 1;
        let sums = self.rows.entry(key).or_default();
        sums.calls += 1;
        let add = |sum: &mut i64, value: Option<u64>| {
            *sum = sum.saturating_add(value.map_or(0, clamp));
        };
        add(&mut sums.input_tokens, parts.input_tokens);
        add(&mut sums.output_tokens, parts.output_tokens);
        add(&mut sums.cached_input_tokens, parts.cached_input_tokens);
        sums.cost_nano_usd = sums
            .cost_nano_usd
            .saturating_add(parts.cost_nano_usd.unwrap_or(0));
        sums.duration_us = sums.duration_us.saturating_add(clamp(parts.duration_us));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut previous = 0;
        for d in (0..5_000_000u64).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let bucket = latency_bucket(d);
            assert!(bucket >= previous, "{d}");
            previous = bucket;
            let low = bucket_lower_bound(bucket);
            assert!(low <= d, "{d} below its bucket's bound {low}");
            if bucket + 1 < latency_bucket(u64::MAX) {
                let high = bucket_lower_bound(bucket + 1);
                assert!(d < high, "{d} not below the next bound {high}");
                assert!((high - low) * 32 <= low.max(32), "bucket {bucket} too wide");
            }
        }
        assert_eq!(latency_bucket(31), 31);
        assert_eq!(latency_bucket(32), 32);
        assert_eq!(bucket_lower_bound(latency_bucket(1_000_000)), 999_424);
    }
}
