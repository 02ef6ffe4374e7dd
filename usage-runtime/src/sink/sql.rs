//! What the SQL sinks share: table names from a validated prefix, startup verification reports,
//! the sanitising of values a database would reject, and the description of a database that
//! errors print (never with a password).

use std::fmt;
use std::time::Duration;

use crate::error::{DbStep, Error, Failure, FailureKind};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::record::UsageRecord;

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
    write_connections: usize,
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

    /// The connections a batch is written over (see [`write_connections`](Self::write_connections)).
    pub fn connections(&self) -> usize {
        self.write_connections
    }

    /// The table of records.
    pub fn records_table(&self) -> String {
        format!("{}usage_records", self.table_prefix)
    }

    /// The hourly rollups.
    pub fn rollups_table(&self) -> String {
        format!("{}usage_rollups_hourly", self.table_prefix)
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

/// One schema change, applied once and recorded in the migrations table. `{prefix}` in the SQL
/// stands for the validated table prefix.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

impl Migration {
    pub(crate) fn sql_for(&self, config: &SqlConfig) -> String {
        Self::text(self.sql, config)
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

/// `scheme://user@host:port/database`: what errors and `Debug` show of a database.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn describe(scheme: &str, user: &str, host: &str, port: u16, database: &str) -> String {
    if user.is_empty() {
        format!("{scheme}://{host}:{port}/{database}")
    } else {
        format!("{scheme}://{user}@{host}:{port}/{database}")
    }
}

/// Resolves `host` before connecting, so a bad host name is its own named failure.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn resolve(host: &str, port: u16, target: &str) -> Result<(), Error> {
    if host.starts_with('/') {
        return Ok(()); // a Unix socket path
    }
    match tokio::net::lookup_host((host, port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::database(
            DbStep::Resolve,
            target,
            format!("`{host}` has no address"),
        )),
        Err(error) => Err(Error::database(DbStep::Resolve, target, error)),
    }
}

/// A batch as the parts written at once over `connections` connections: consecutive records in
/// parts of nearly equal length, one per [`MIN_PART_RECORDS`] the batch holds (at most
/// `connections`). A record repeated in a split batch is written
/// once (its first occurrence), so two parts never insert the same id and wait on each other.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct Split<'a> {
    records: std::borrow::Cow<'a, [UsageRecord]>,
    part: usize,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl<'a> Split<'a> {
    pub(crate) fn new(batch: &'a [UsageRecord], connections: usize) -> Self {
        if connections <= 1 || batch.len() < 2 * MIN_PART_RECORDS {
            return Split {
                records: std::borrow::Cow::Borrowed(batch),
                part: batch.len().max(1),
            };
        }
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let records = if batch.iter().all(|record| seen.insert(record.id)) {
            std::borrow::Cow::Borrowed(batch)
        } else {
            seen.clear();
            std::borrow::Cow::Owned(
                batch
                    .iter()
                    .filter(|record| seen.insert(record.id))
                    .cloned()
                    .collect(),
            )
        };
        let parts = (records.len() / MIN_PART_RECORDS).clamp(1, connections);
        let part = records.len().div_ceil(parts).max(1);
        Split { records, part }
    }

    pub(crate) fn parts(&self) -> std::slice::Chunks<'_, UsageRecord> {
        self.records.chunks(self.part)
    }

    /// The write's result from each part's, in part order: `Ok` when every part committed; the
    /// first failed part's error when none did; else [`Error::PartlyWritten`] naming the records
    /// committed, so the worker goes on with the rest alone and counts each record once.
    pub(crate) fn settle(&self, results: Vec<Result<(), Error>>) -> Result<(), Error> {
        let mut written = Vec::new();
        let mut failed = None;
        for (part, result) in self.parts().zip(results) {
            match result {
                Ok(()) => written.extend(part.iter().map(|record| record.id)),
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            None => Ok(()),
            Some(error) if written.is_empty() => Err(error),
            Some(error) => Err(Error::PartlyWritten {
                written: crate::error::RecordIds(written),
                source: Box::new(error),
            }),
        }
    }
}

/// How long connecting may take before it is a named timeout.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a connection attempt with [`CONNECT_TIMEOUT`].
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn with_connect_timeout<T>(
    target: &str,
    attempt: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::database(
            DbStep::Connect,
            target,
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Replaces NUL characters (which PostgreSQL rejects in `text` and `jsonb`) by U+FFFD.
#[cfg(feature = "postgres")]
pub(crate) fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A record's attributes with [`json_without_nul`] applied, borrowed when they hold no NUL.
#[cfg(feature = "postgres")]
pub(crate) fn attributes_without_nul(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> std::borrow::Cow<'_, serde_json::Map<String, serde_json::Value>> {
    fn has_nul(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    if attributes
        .iter()
        .any(|(key, value)| key.contains('\0') || has_nul(value))
    {
        std::borrow::Cow::Owned(map_without_nul(attributes))
    } else {
        std::borrow::Cow::Borrowed(attributes)
    }
}

/// [`without_nul`] applied to every string (and key) inside a JSON value.
#[cfg(feature = "postgres")]
pub(crate) fn json_without_nul(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(without_nul(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(json_without_nul).collect()),
        Value::Object(map) => Value::Object(map_without_nul(map)),
        other => other.clone(),
    }
}

/// [`json_without_nul`] of an object's keys and values.
#[cfg(feature = "postgres")]
fn map_without_nul(
    map: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    map.iter()
        .map(|(key, value)| (without_nul(key).into_owned(), json_without_nul(value)))
        .collect()
}

/// A count as a signed 64-bit integer (PostgreSQL `bigint`, SQLite `INTEGER`), held at
/// `i64::MAX`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Failure for sqlx::Error {
    fn kind(&self) -> FailureKind {
        match self {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => FailureKind::Transient,
            sqlx::Error::Encode(_) => FailureKind::Rejected,
            sqlx::Error::Database(db) => database_failure(db.as_ref()),
            _ => FailureKind::Other,
        }
    }

    fn boxed(self) -> crate::error::BoxError {
        self.into()
    }
}

/// Sorts a database's own error codes: PostgreSQL SQLSTATEs, MySQL error numbers, SQLite result
/// codes.
fn database_failure(db: &(dyn sqlx::error::DatabaseError + 'static)) -> FailureKind {
    let code = db.code().unwrap_or_default();
    #[cfg(feature = "mysql")]
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match mysql.number() {
            // gone away, lost connection, lock wait timeout, deadlock, too many connections,
            // server shutdown, read-only (failover)
            2006 | 2013 | 1205 | 1213 | 1040 | 1053 | 1290 | 1836 => FailureKind::Transient,
            // data too long, incorrect value, out of range, truncated, bad date, null in not-null,
            // invalid JSON, foreign key, check constraint (MySQL, MariaDB), incorrect string
            // (encoding) ... and a statement or value too large for the server (packet, row size)
            1406 | 1366 | 1264 | 1265 | 1292 | 1048 | 3140 | 1452 | 3819 | 4025 | 1300 | 1153
            | 1301 | 1118 => FailureKind::Rejected,
            _ => FailureKind::Other,
        };
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary result code: the low byte of the extended code.
        let primary = code.parse::<u32>().map_or(0, |code| code & 0xff);
        return match primary {
            5 | 6 | 10 | 13 | 15 => FailureKind::Transient, // busy, locked, I/O, full, protocol
            18 | 19 | 20 | 25 => FailureKind::Rejected,     // too big, constraint, mismatch, range
            _ => FailureKind::Other,
        };
    }
    match code.get(..2) {
        // connection exception, insufficient resources, operator intervention, system error
        Some("08") | Some("53") | Some("57") | Some("58") => FailureKind::Transient,
        // serialization failure, deadlock; lock not available
        Some("40") => FailureKind::Transient,
        _ if code == "55P03" => FailureKind::Transient,
        // data exception, integrity constraint violation, program limit (a value too large for
        // an index row)
        Some("22") | Some("23") | Some("54") => FailureKind::Rejected,
        _ => FailureKind::Other,
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
        assert_eq!(SqlConfig::new().connections(), DEFAULT_WRITE_CONNECTIONS);
        assert_eq!(
            SqlConfig::new().write_connections(1).unwrap().connections(),
            1
        );
        for bad in [0, 65] {
            let error = SqlConfig::new().write_connections(bad).unwrap_err();
            assert!(error.to_string().contains("write_connections"), "{error}");
        }
    }

    /// `count` records with distinct ids: all a split looks at.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn records(count: usize) -> Vec<UsageRecord> {
        (0..count).map(|_| crate::sink::probe_record()).collect()
    }

    #[test]
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn batches_split_into_nearly_equal_parts() {
        let lengths = |count: usize, connections: usize| -> Vec<usize> {
            let batch = records(count);
            let split = Split::new(&batch, connections);
            let parts: Vec<&[UsageRecord]> = split.parts().collect();
            // The parts are the batch, in order.
            let ids: Vec<uuid::Uuid> = parts.iter().flat_map(|p| p.iter().map(|r| r.id)).collect();
            assert_eq!(ids, batch.iter().map(|r| r.id).collect::<Vec<_>>());
            parts.iter().map(|part| part.len()).collect()
        };
        assert_eq!(lengths(0, 4), Vec::<usize>::new());
        assert_eq!(lengths(5, 4), vec![5]);
        assert_eq!(
            lengths(2 * MIN_PART_RECORDS - 1, 4),
            vec![2 * MIN_PART_RECORDS - 1]
        );
        assert_eq!(lengths(2 * MIN_PART_RECORDS, 4), vec![MIN_PART_RECORDS; 2]);
        assert_eq!(lengths(4096, 4), vec![1024; 4]);
        assert_eq!(lengths(4097, 4), vec![1025, 1025, 1025, 1022]);
        assert_eq!(lengths(10_000, 4), vec![2500; 4]);
        assert_eq!(lengths(10_000, 1), vec![10_000]);
    }

    #[test]
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn a_split_batch_writes_a_repeated_record_once() {
        let mut batch = records(3000);
        batch[2500] = batch[10].clone();
        batch[2999] = batch[10].clone();
        let split = Split::new(&batch, 4);
        let parts: Vec<&[UsageRecord]> = split.parts().collect();
        // 2,998 distinct records: two parts (the count is taken after the repeats are gone).
        assert_eq!(parts.len(), 2);
        let ids: Vec<uuid::Uuid> = parts.iter().flat_map(|p| p.iter().map(|r| r.id)).collect();
        assert_eq!(ids.len(), 2998);
        assert_eq!(ids.iter().filter(|id| **id == batch[10].id).count(), 1);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // Unsplit, a batch goes as it is: the sink counts a repeat once by itself.
        let small = &batch[..MIN_PART_RECORDS];
        assert_eq!(
            Split::new(small, 4).parts().next().unwrap().len(),
            small.len()
        );
    }

    #[test]
    #[cfg(feature = "postgres")]
    fn nul_is_replaced_everywhere() {
        assert_eq!(without_nul("a\0b"), "a\u{FFFD}b");
        let clean = serde_json::json!({"k": ["x", {"y": "z"}], "n": 1});
        let clean = clean.as_object().unwrap();
        assert!(matches!(
            attributes_without_nul(clean),
            std::borrow::Cow::Borrowed(_)
        ));
        for dirty in [
            serde_json::json!({"k\0": 1}),
            serde_json::json!({"k": ["x", {"y": "\0"}]}),
        ] {
            let sanitized = attributes_without_nul(dirty.as_object().unwrap()).into_owned();
            assert_eq!(
                serde_json::Value::Object(sanitized),
                json_without_nul(&dirty)
            );
            assert!(!serde_json::to_string(&json_without_nul(&dirty))
                .unwrap()
                .contains("\\u0000"));
        }
        let json = serde_json::json!({"k\0": ["x\0", {"y": "\0"}], "n": 1});
        assert_eq!(
            json_without_nul(&json),
            serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}", {"y": "\u{FFFD}"}], "n": 1})
        );
    }
}

/// The SQL dialect (each variant exists whatever features are on, to keep the SQL in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// Deletes up to `chunk` records of calls started before the bound time (`?`).
pub(crate) fn prune_statement(dialect: Dialect, table: &str, chunk: u64) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE started_at < ? LIMIT {chunk})"
        ),
        Dialect::Postgres => format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE started_at < CAST($1 AS timestamptz) LIMIT {chunk})"
        ),
        Dialect::MySql => {
            format!("DELETE FROM {table} WHERE started_at < CAST(? AS DATETIME(6)) LIMIT {chunk}")
        }
    }
}

/// A time as each dialect compares it with `started_at` (text on SQLite).
pub(crate) fn time_text(dialect: Dialect, at: chrono::DateTime<chrono::Utc>) -> String {
    match dialect {
        Dialect::Sqlite => at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Dialect::MySql => at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        Dialect::Postgres => at.to_rfc3339(),
    }
}

/// Records deleted per statement when pruning.
pub(crate) const PRUNE_CHUNK: u64 = 10_000;

/// How long one `prune` goes on before it returns what it deleted (the tracker calls again soon
/// while there is more): the tracker's worker waits for it, so a large backlog must not hold
/// up writes. Unit tests stop after each statement.
pub(crate) const PRUNE_BUDGET: std::time::Duration = if cfg!(test) {
    std::time::Duration::ZERO
} else {
    std::time::Duration::from_secs(1)
};

/// A sink's `prune`: deletes, `PRUNE_CHUNK` at a time, the records of calls started before the
/// hour `$before` falls in (whole hours, as everywhere), for about [`PRUNE_BUDGET`]. A macro
/// because each sink has its own pool type; `$sink` has `config` and `target`.
macro_rules! prune_in_chunks {
    ($sink:expr, $pool:expr, $dialect:expr, $before:expr) => {{
        let before = crate::rollup::hour_of($before);
        let statement =
            sql::prune_statement($dialect, &$sink.config.records_table(), sql::PRUNE_CHUNK);
        let cutoff = sql::time_text($dialect, before);
        let mut total = 0u64;
        let started = std::time::Instant::now();
        loop {
            let deleted = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .bind(&cutoff)
                .execute($pool)
                .await
                .map_err(|error| Error::database(DbStep::Write, &$sink.target, error))?
                .rows_affected();
            total += deleted;
            if deleted == 0 || started.elapsed() >= sql::PRUNE_BUDGET {
                break Ok(total);
            }
        }
    }};
}

pub(crate) use prune_in_chunks;
