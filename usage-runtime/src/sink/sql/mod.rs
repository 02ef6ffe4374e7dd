//! The SQL sinks: one core ([`core`]) behind a [`Dialect`](dialect::Dialect) per database
//! (`sqlite.rs`, `postgres.rs`, `mysql.rs`, each holding only its own SQL), the settings they
//! share, the choice of a database from its URL, and verification reports.

use std::fmt;
use std::time::Duration;

use crate::error::{DbStep, Error};

mod backend;
mod connect;
pub(crate) mod core;
pub(crate) mod dialect;
mod failure;
mod horizon;
mod migrate;
mod public;
pub(crate) mod reprice;
mod split;
pub(crate) mod values;

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

pub use backend::{AnySqlSink, Backend};

/// The records table's columns, in the order every insert binds them.
pub(crate) const RECORD_COLUMNS: &str = "id, operation, function, service, instance, started_at, \
    duration_us, outcome, error_type, error_message, tenant_id, user_id, session_id, model, \
    input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, \
    cache_creation_1h_input_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens, \
    cost_nano_usd, price_id, attributes";

/// The changes every database makes, in order, each at the version its dialect's
/// `SHARED_VERSIONS` gives (between its own SQL migrations).
pub(crate) const SHARED_CHANGES: [Change; 5] = [
    Change::Rollups,
    Change::Catalog,
    Change::Daily,
    Change::Horizon,
    Change::TokenKinds,
];

/// The token kinds the first schema did not have, added by [`Change::TokenKinds`].
pub(crate) const LATER_TOKEN_KINDS: [crate::TokenKind; 5] = [
    crate::TokenKind::CacheCreation,
    crate::TokenKind::CacheCreation1h,
    crate::TokenKind::Reasoning,
    crate::TokenKind::AudioInput,
    crate::TokenKind::AudioOutput,
];
pub(crate) use public::sql_sink;

/// A rollup upsert's columns after its time column, in the order `push_rollup!` binds them.
pub(crate) fn rollup_columns() -> String {
    format!(
        "{}, {}, latency, latency_base",
        crate::rollup::RollupKey::COLUMNS,
        crate::rollup::RollupSums::COLUMNS.join(", ")
    )
}

/// `column = sum` for every rollup sum, `sum` the dialect's saturating addition of the stored
/// and the new value.
pub(crate) fn rollup_sums(sum: impl Fn(&str) -> String) -> String {
    crate::rollup::RollupSums::COLUMNS
        .map(|column| format!("{column} = {}", sum(column)))
        .join(", ")
}

/// Connections a PostgreSQL or MySQL sink writes one large batch over at once (see
/// [`SqlConfig::write_connections`]).
pub const DEFAULT_WRITE_CONNECTIONS: usize = 4;

/// A batch is split into one part per this many records it holds (at most
/// [`SqlConfig::write_connections`] parts), so a part holds about this many or more. Smaller
/// transactions cost more in commits than writing them at once gains: measured on PostgreSQL,
/// 128 records per transaction on 4 connections wrote 45k records/s, 512 on one 62k/s, 1,024 on
/// 4 128k/s.
pub const MIN_PART_RECORDS: usize = 1024;

/// Settings shared by the SQL sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlConfig {
    table_prefix: String,
    pub(crate) write_connections: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            table_prefix: String::new(),
            write_connections: DEFAULT_WRITE_CONNECTIONS,
        }
    }
}

impl SqlConfig {
    /// The default: tables `usage_records` and `usage_schema_migrations`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefixes every table the sink creates (`app_` gives `app_usage_records`). The prefix must
    /// be an identifier: ASCII letters, digits and `_`, not starting with a digit, at most 32
    /// characters.
    pub fn table_prefix(mut self, prefix: &str) -> Result<Self, Error> {
        let valid = prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !prefix.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "table prefix `{}` is not an identifier (ASCII letters, digits and `_`, not \
                 starting with a digit, at most 32 characters)",
                prefix.escape_debug()
            )));
        }
        self.table_prefix = prefix.to_owned();
        Ok(self)
    }

    /// How many connections a PostgreSQL or MySQL sink writes one batch over at once. Default
    /// [`DEFAULT_WRITE_CONNECTIONS`]; `1` writes every batch in one transaction.
    ///
    /// A batch of at least twice [`MIN_PART_RECORDS`] is split into consecutive parts of nearly
    /// equal length, one per [`MIN_PART_RECORDS`] it holds (at most `connections`). Each part is
    /// written with its rollups in its own transaction on its own connection, so the database
    /// works on one part while the sink sends the next. A failed part fails the write with
    /// [`Error::PartlyWritten`](crate::Error::PartlyWritten) naming the records the other parts
    /// committed; the worker counts those as written and goes on with the rest alone.
    ///
    /// At least 1, at most 64. SQLite has one writer and ignores this.
    pub fn write_connections(mut self, connections: usize) -> Result<Self, Error> {
        if !(1..=64).contains(&connections) {
            return Err(Error::InvalidConfig(format!(
                "write_connections must be between 1 and 64, not {connections}"
            )));
        }
        self.write_connections = connections;
        Ok(self)
    }

    /// The table of records.
    pub fn records_table(&self) -> String {
        format!("{}usage_records", self.table_prefix)
    }

    /// The hourly rollups.
    pub fn rollups_table(&self) -> String {
        format!("{}usage_rollups_hourly", self.table_prefix)
    }

    /// The rollups of `tier`.
    pub(crate) fn tier_table(&self, tier: crate::rollup::Tier) -> String {
        match tier {
            crate::rollup::Tier::Hour => self.rollups_table(),
            crate::rollup::Tier::Day => self.daily_rollups_table(),
        }
    }

    /// The daily rollups.
    pub fn daily_rollups_table(&self) -> String {
        format!("{}usage_rollups_daily", self.table_prefix)
    }

    /// The latency histograms of earlier versions (one row per bucket), folded into the rollup
    /// rows and dropped by the migration that adds the daily rollups.
    pub(crate) fn legacy_latency_table(&self) -> String {
        format!("{}usage_rollup_latency", self.table_prefix)
    }

    /// The pruned horizon: the hour before which the records were deleted (the rollups kept).
    pub fn pruned_table(&self) -> String {
        format!("{}usage_pruned", self.table_prefix)
    }

    /// The operation catalog.
    pub fn operations_table(&self) -> String {
        format!("{}usage_operations", self.table_prefix)
    }

    /// The table recording applied migrations.
    pub fn migrations_table(&self) -> String {
        format!("{}usage_schema_migrations", self.table_prefix)
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.table_prefix
    }
}

/// One schema change, applied once and recorded in the migrations table.
#[derive(Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) change: Change,
}

/// What a migration does. The changes every database makes are named, so the core applies them
/// (and rolls up what they need) the same way everywhere from the dialect's table shapes.
#[derive(Clone, Copy)]
pub(crate) enum Change {
    /// Statements of the database's own; `{prefix}` stands for the validated table prefix.
    Sql {
        description: &'static str,
        sql: &'static str,
    },
    /// The hourly and daily rollup tables; the records already stored are rolled up.
    Rollups,
    /// The operation catalog.
    Catalog,
    /// The daily tier and the latency histograms inside the rollup rows, for rollups made before
    /// them (nothing to do on rollups created in the current shape).
    Daily,
    /// The pruned horizon (see `horizon.rs`).
    Horizon,
    /// The token kinds after the first three (cache creation, reasoning, audio) in the records
    /// and both rollup tiers, and the records' `price_id`.
    TokenKinds,
}

impl Migration {
    pub(crate) const fn new(version: i64, change: Change) -> Self {
        Migration { version, change }
    }

    pub(crate) const fn sql(version: i64, description: &'static str, sql: &'static str) -> Self {
        Migration::new(version, Change::Sql { description, sql })
    }

    pub(crate) fn description(&self) -> &'static str {
        match self.change {
            Change::Sql { description, .. } => description,
            Change::Rollups => "hourly and daily rollups (backfilled from the records)",
            Change::Catalog => "operation catalog",
            Change::Daily => "daily rollups; latency histograms inside the rollup rows",
            Change::Horizon => "the pruned horizon",
            Change::TokenKinds => "cache creation, reasoning and audio tokens; price ids",
        }
    }

    /// `sql` with `{prefix}` replaced.
    pub(crate) fn text(sql: &str, config: &SqlConfig) -> String {
        sql.replace("{prefix}", config.prefix())
    }
}

/// What a successful [`verify`](crate::sink::PostgresSink::verify) did, step by step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The database, without the password.
    pub target: String,
    /// The server's version string.
    pub server_version: String,
    /// Each step that passed, with how long it took.
    pub steps: Vec<(DbStep, Duration)>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({})", self.target, self.server_version)?;
        for (step, took) in &self.steps {
            writeln!(f, "  ok  {step:<12} {took:?}")?;
        }
        Ok(())
    }
}

/// Times the steps of a verification.
pub(crate) struct StepClock {
    started: std::time::Instant,
    steps: Vec<(DbStep, Duration)>,
}

impl StepClock {
    pub(crate) fn new() -> Self {
        StepClock {
            started: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    pub(crate) fn done(&mut self, step: DbStep) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.started));
        self.started = now;
    }

    pub(crate) fn report(self, target: &str, server_version: String) -> VerifyReport {
        VerifyReport {
            target: target.to_owned(),
            server_version,
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_identifiers() {
        assert_eq!(SqlConfig::new().records_table(), "usage_records");
        let config = SqlConfig::new().table_prefix("app_1_").unwrap();
        assert_eq!(config.records_table(), "app_1_usage_records");
        assert_eq!(config.migrations_table(), "app_1_usage_schema_migrations");
        for bad in ["1x", "a-b", "a b", "x;drop table t", "ä", &"x".repeat(33)] {
            assert!(SqlConfig::new().table_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_connections_are_bounded() {
        assert_eq!(
            SqlConfig::new().write_connections,
            DEFAULT_WRITE_CONNECTIONS
        );
        assert_eq!(
            SqlConfig::new()
                .write_connections(1)
                .unwrap()
                .write_connections,
            1
        );
        for bad in [0, 65] {
            let error = SqlConfig::new().write_connections(bad).unwrap_err();
            assert!(error.to_string().contains("write_connections"), "{error}");
        }
    }
}
