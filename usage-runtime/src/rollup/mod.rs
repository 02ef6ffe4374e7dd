//! Rollups, maintained by the SQL sinks in the same transaction as the records they summarise,
//! from the records that transaction actually inserted (so a replayed or redelivered record never
//! counts twice).
//!
//! Two tiers hold the same figures: hourly rows (`usage_rollups_hourly`) and daily rows
//! (`usage_rollups_daily`, UTC days). A row is keyed by its hour or day, service, operation,
//! tenant, model and outcome (a missing tenant or model is `''` in the key) and holds calls,
//! token sums, cost, the sum of durations and the latency histogram in one column (`latency`, see
//! [`decode_latency`]). Reports read whole days from the daily tier and only the hours at the
//! edges of a range from the hourly one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::call::tokens::TokenKind;
use crate::record::UsageRecord;

mod histogram;

pub use histogram::{
    bucket_lower_bound, bucket_midpoint, decode_latency, encode_latency, latency_bucket,
    LatencyDecodeError,
};
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports)
)]
pub(crate) use histogram::{compact_when, compacted, Histogram, BUCKETS};

/// Which rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Hour,
    Day,
}

impl Tier {
    /// The key column holding the start of the hour or day.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Tier::Hour => "hour",
            Tier::Day => "day",
        }
    }

    /// The start of the hour or day (UTC) `at` falls in.
    pub(crate) fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let seconds = match self {
            Tier::Hour => 3600,
            Tier::Day => 86_400,
        };
        DateTime::from_timestamp(at.timestamp().div_euclid(seconds) * seconds, 0).unwrap_or(at)
    }
}

/// The key of a rollup row: its hour or day, then the grouping columns
/// ([`RollupKey::COLUMNS`]); a record without a tenant or model has `""` there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RollupKey {
    /// The start of the hour or day.
    pub(crate) start: DateTime<Utc>,
    pub(crate) service: String,
    pub(crate) operation: String,
    /// `""` for records without a tenant (a key column cannot be NULL everywhere).
    pub(crate) tenant_id: String,
    /// `""` for records without a model.
    pub(crate) model: String,
    /// [`Outcome::as_str`](crate::record::Outcome::as_str).
    pub(crate) outcome: &'static str,
}

impl RollupKey {
    /// The key's columns after the time, in field order: every table, upsert and read of the
    /// rollups names them from here.
    pub(crate) const COLUMNS: &'static str = "service, operation, tenant_id, model, outcome";
}

/// The sums of a rollup row, each saturating at `i64::MAX` (the largest BIGINT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RollupSums {
    pub(crate) calls: i64,
    /// Token counts in [`TokenKind::ALL`] order, a record without one adding nothing.
    pub(crate) tokens: [i64; TOKEN_KINDS],
    /// The priced records' costs; an unpriced record adds nothing (and is counted in
    /// `Health::unpriced`).
    pub(crate) cost_nano_usd: i64,
    /// Microseconds, so the mean is `duration_us / calls`.
    pub(crate) duration_us: i64,
}

const TOKEN_KINDS: usize = TokenKind::ALL.len();

/// How many sums a rollup row has: calls, each token kind, cost, duration.
pub(crate) const SUMS: usize = TOKEN_KINDS + 3;

impl RollupSums {
    /// The sums' columns, in the order of [`RollupSums::values`]: every upsert and read of the
    /// rollups names them from here (the tables' first shape has the first three kinds; the
    /// migration adds the others from `LATER_TOKEN_KINDS`).
    pub(crate) const COLUMNS: [&'static str; SUMS] = {
        let mut columns = [""; SUMS];
        columns[0] = "calls";
        let mut i = 0;
        while i < TOKEN_KINDS {
            columns[1 + i] = TokenKind::ALL[i].name();
            i += 1;
        }
        columns[SUMS - 2] = "cost_nano_usd";
        columns[SUMS - 1] = "duration_us";
        columns
    };

    /// The sums in [`RollupSums::COLUMNS`] order.
    pub(crate) fn values(&self) -> [i64; SUMS] {
        let mut values = [0; SUMS];
        values[0] = self.calls;
        values[1..=TOKEN_KINDS].copy_from_slice(&self.tokens);
        values[SUMS - 2] = self.cost_nano_usd;
        values[SUMS - 1] = self.duration_us;
        values
    }

    /// The sums from their values in [`RollupSums::COLUMNS`] order.
    pub(crate) fn from_values(sum: impl Fn(usize) -> i64) -> RollupSums {
        RollupSums {
            calls: sum(0),
            tokens: std::array::from_fn(|i| sum(1 + i)),
            cost_nano_usd: sum(SUMS - 2),
            duration_us: sum(SUMS - 1),
        }
    }

    fn add(&mut self, other: &RollupSums) {
        let (mine, theirs) = (self.values(), other.values());
        *self = RollupSums::from_values(|i| mine[i].saturating_add(theirs[i]));
    }
}

/// What a set of records adds to one rollup row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) sums: RollupSums,
    pub(crate) latency: Histogram,
}

impl Cell {
    /// What a stored rollup row holds: its sums (`sum(i)` is [`RollupSums::COLUMNS`]`[i]`) and
    /// its histogram column, which may have been appended to.
    pub(crate) fn stored(
        sum: impl Fn(usize) -> i64,
        latency: &[u8],
    ) -> Result<Cell, LatencyDecodeError> {
        let mut cell = Cell {
            sums: RollupSums::from_values(sum),
            latency: Histogram::new(),
        };
        decode_latency(latency, |bucket, calls| {
            let slot = cell.latency.entry(bucket).or_default();
            *slot = slot.saturating_add(calls);
        })?;
        Ok(cell)
    }

    /// One row of the legacy histogram table: `calls` in `bucket`, no sums (those are in the
    /// hourly row already).
    pub(crate) fn bucket(bucket: i64, calls: i64) -> Cell {
        let mut cell = Cell::default();
        cell.latency
            .insert(u32::try_from(bucket).unwrap_or(0), calls.max(0) as u64);
        cell
    }

    /// Adds one record given by its parts: one call, its sums, its latency bucket.
    pub(crate) fn add_parts(&mut self, parts: &Parts<'_>) {
        let add = |sum: &mut i64, value: Option<u64>| {
            *sum = sum.saturating_add(value.map_or(0, clamp));
        };
        let sums = &mut self.sums;
        sums.calls = sums.calls.saturating_add(1);
        for (sum, count) in sums.tokens.iter_mut().zip(parts.tokens) {
            add(sum, count);
        }
        sums.cost_nano_usd = sums
            .cost_nano_usd
            .saturating_add(parts.cost_nano_usd.unwrap_or(0));
        sums.duration_us = sums.duration_us.saturating_add(clamp(parts.duration_us));
        let slot = self
            .latency
            .entry(latency_bucket(parts.duration_us))
            .or_default();
        *slot = slot.saturating_add(1);
    }

    pub(crate) fn add(&mut self, other: &Cell) {
        self.sums.add(&other.sums);
        for (bucket, calls) in &other.latency {
            let slot = self.latency.entry(*bucket).or_default();
            *slot = slot.saturating_add(*calls);
        }
    }
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
    /// In [`TokenKind::ALL`] order.
    pub(crate) tokens: [Option<u64>; TOKEN_KINDS],
    pub(crate) cost_nano_usd: Option<i64>,
}

impl<'a> Parts<'a> {
    /// The parts of a record.
    pub(crate) fn of(record: &'a UsageRecord) -> Self {
        Parts {
            started_at: record.started_at,
            service: &record.service,
            operation: &record.operation,
            tenant_id: record.tenant_id.as_deref(),
            model: record.model.as_deref(),
            outcome: record.outcome,
            duration_us: u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
            tokens: record.token_counts(),
            cost_nano_usd: record.cost_nano_usd,
        }
    }
}

/// What a set of newly inserted records adds to the rollups: the hourly and the daily rows.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pub(crate) hours: BTreeMap<RollupKey, Cell>,
    pub(crate) days: BTreeMap<RollupKey, Cell>,
}

/// The start of the hour `at` falls in (UTC): the one truncation every rollup, report and prune
/// uses.
pub(crate) fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    Tier::Hour.start(at)
}

/// A count as a signed 64-bit integer, held at `i64::MAX` (as the sinks store counts).
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Rollup {
    /// Adds up `records` (the ones just inserted). Records are first added up per hour under
    /// keys borrowed from them, so the owned key (and the daily row's) is made once per row, not
    /// once per record.
    pub(crate) fn of<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> Rollup {
        type Borrowed<'r> = (
            DateTime<Utc>,
            &'r str,
            &'r str,
            &'r str,
            &'r str,
            crate::record::Outcome,
        );
        let mut hours: std::collections::HashMap<Borrowed<'a>, Cell> =
            std::collections::HashMap::new();
        for record in records {
            let parts = Parts::of(record);
            let key = (
                hour_of(parts.started_at),
                parts.service,
                parts.operation,
                parts.tenant_id.unwrap_or_default(),
                parts.model.unwrap_or_default(),
                parts.outcome,
            );
            hours.entry(key).or_default().add_parts(&parts);
        }
        let mut rollup = Rollup::default();
        for ((start, service, operation, tenant_id, model, outcome), cell) in hours {
            let key = RollupKey {
                start,
                service: service.to_owned(),
                operation: operation.to_owned(),
                tenant_id: tenant_id.to_owned(),
                model: model.to_owned(),
                outcome: outcome.as_str(),
            };
            rollup.add_cell(Tier::Hour, key, &cell);
        }
        rollup
    }

    /// Adds one record given by its parts (as read back from a table, for a backfill).
    pub(crate) fn add_parts(&mut self, parts: Parts<'_>) {
        let mut cell = Cell::default();
        cell.add_parts(&parts);
        let key = RollupKey {
            start: parts.started_at,
            service: parts.service.to_owned(),
            operation: parts.operation.to_owned(),
            tenant_id: parts.tenant_id.unwrap_or_default().to_owned(),
            model: parts.model.unwrap_or_default().to_owned(),
            outcome: parts.outcome.as_str(),
        };
        self.add_cell(Tier::Hour, key, &cell);
    }

    /// Adds what an hourly row (or part of one) holds: to that hour and to its day. `key.start`
    /// may be any time in the hour.
    pub(crate) fn add_cell(&mut self, tier: Tier, mut key: RollupKey, cell: &Cell) {
        if tier == Tier::Hour {
            let mut day = key.clone();
            day.start = Tier::Day.start(key.start);
            self.days.entry(day).or_default().add(cell);
        }
        key.start = tier.start(key.start);
        let rows = match tier {
            Tier::Hour => &mut self.hours,
            Tier::Day => &mut self.days,
        };
        rows.entry(key).or_default().add(cell);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.days.is_empty()
    }

    /// The rows of each tier.
    pub(crate) fn tiers(&self) -> [(Tier, &BTreeMap<RollupKey, Cell>); 2] {
        [(Tier::Hour, &self.hours), (Tier::Day, &self.days)]
    }

    /// The rows of `tier`.
    pub(crate) fn tier_mut(&mut self, tier: Tier) -> &mut BTreeMap<RollupKey, Cell> {
        match tier {
            Tier::Hour => &mut self.hours,
            Tier::Day => &mut self.days,
        }
    }

    /// The same rollup with every key's text passed through `f` (rows whose keys become equal
    /// are added together).
    #[cfg(feature = "postgres")]
    pub(crate) fn map_text(&self, f: impl Fn(&str) -> String) -> Rollup {
        let mut mapped = Rollup::default();
        for (tier, rows) in self.tiers() {
            let target = match tier {
                Tier::Hour => &mut mapped.hours,
                Tier::Day => &mut mapped.days,
            };
            for (key, cell) in rows {
                let key = RollupKey {
                    start: key.start,
                    service: f(&key.service),
                    operation: f(&key.operation),
                    tenant_id: f(&key.tenant_id),
                    model: f(&key.model),
                    outcome: key.outcome,
                };
                target.entry(key).or_default().add(cell);
            }
        }
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::histogram::compact_latency;
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
        assert_eq!(latency_bucket(u64::MAX) as usize + 1, BUCKETS);
        assert_eq!(latency_bucket(31), 31);
        assert_eq!(latency_bucket(32), 32);
        assert_eq!(bucket_lower_bound(latency_bucket(1_000_000)), 999_424);
    }

    #[test]
    fn histograms_round_trip_and_merge() {
        let top = latency_bucket(u64::MAX);
        let histogram: Histogram = [(0, 1), (31, 5), (40, u64::MAX), (top, 2)].into();
        let bytes = encode_latency(histogram.clone());
        let mut decoded = Histogram::new();
        decode_latency(&bytes, |b, c| {
            decoded.insert(b, c);
        })
        .unwrap();
        assert_eq!(decoded, histogram);
        assert!(encode_latency([]).is_empty());

        let added: Histogram = [(31, 1), (35, 2)].into_iter().collect();
        let mut appended = bytes.clone();
        appended.extend(encode_latency(added.clone()));
        let compacted = compact_latency(&appended).unwrap();
        assert!(compacted.len() < appended.len());
        let mut sum = Histogram::new();
        decode_latency(&compacted, |b, c| {
            assert!(sum.insert(b, c).is_none(), "each bucket once");
        })
        .unwrap();
        let expected: Histogram = [(0, 1), (31, 6), (35, 2), (40, u64::MAX), (top, 2)].into();
        assert_eq!(sum, expected);

        // Concatenated encodings are their sum.
        let mut both = encode_latency(added.clone());
        both.extend(encode_latency(added.clone()));
        let mut twice = Histogram::new();
        decode_latency(&both, |b, c| *twice.entry(b).or_default() += c).unwrap();
        assert_eq!(twice, [(31, 2), (35, 4)].into_iter().collect());

        // Truncated or overlong input, or a bucket past the last, is an error, not a wrong
        // histogram.
        assert!(decode_latency(
            &encode_latency([(latency_bucket(u64::MAX) + 1, 1)]),
            |_, _| {}
        )
        .is_err());
        assert!(decode_latency(&bytes[..bytes.len() - 1], |_, _| {}).is_err());
        assert!(decode_latency(&[0xff; 11], |_, _| {}).is_err());
        assert!(compact_latency(&[0x80]).is_err());
    }

    #[test]
    fn records_land_in_their_hour_and_day() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut rollup = Rollup::default();
        for (started, micros) in [
            ("2026-11-22T23:59:59.999999Z", 1_000),
            ("2026-11-22T23:00:00Z", 2_000),
            ("2026-11-23T00:00:00Z", 3_000),
        ] {
            rollup.add_parts(Parts {
                started_at: at(started),
                service: "s",
                operation: "o",
                tenant_id: None,
                model: Some("m"),
                outcome: crate::record::Outcome::Success,
                duration_us: micros,
                tokens: [Some(u64::MAX), None, None, None, None, Some(7), None, None],
                cost_nano_usd: Some(-5),
            });
        }
        let starts = |rows: &BTreeMap<RollupKey, Cell>| -> Vec<(String, i64)> {
            rows.iter()
                .map(|(k, c)| (k.start.to_rfc3339(), c.sums.calls))
                .collect()
        };
        assert_eq!(
            starts(&rollup.hours),
            [
                ("2026-11-22T23:00:00+00:00".into(), 2),
                ("2026-11-23T00:00:00+00:00".into(), 1)
            ]
        );
        assert_eq!(
            starts(&rollup.days),
            [
                ("2026-11-22T00:00:00+00:00".into(), 2),
                ("2026-11-23T00:00:00+00:00".into(), 1)
            ]
        );
        let day = rollup.days.values().next().unwrap();
        assert_eq!(day.sums.tokens[0], i64::MAX, "saturates");
        assert_eq!(day.sums.tokens[5], 14, "reasoning tokens add up");
        assert_eq!(day.sums.cost_nano_usd, -10);
        assert_eq!(day.sums.duration_us, 3_000);
        assert_eq!(day.latency.values().sum::<u64>(), 2);
    }
}
