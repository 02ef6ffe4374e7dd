//! The embedded default: SQLite, in WAL mode, one transaction per batch, multi-row
//! `INSERT ... ON CONFLICT(id) DO NOTHING` statements.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::dialect::{
    push_record, push_rollup, statements, Arg, Dialect, MigrationLock, Options, TierRows,
};
use super::values::clamp;
use super::{rollup_columns, rollup_sums, sql_sink, Migration, SqlConfig, RECORD_COLUMNS};
use crate::call::catalog::Operation;
use crate::record::UsageRecord;
use crate::rollup::{compact_when, RollupKey};

/// Rows per `INSERT` statement: 25 bound values each stays far below SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 500;

/// A rollup table (`{table}`, its hour or day in the `{time}` column): both tiers have one
/// shape.
const ROLLUP_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS {prefix}{table} (
    {time} TEXT    NOT NULL,
    service             TEXT    NOT NULL,
    operation           TEXT    NOT NULL,
    tenant_id           TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    outcome             TEXT    NOT NULL,
    calls               INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cost_nano_usd       INTEGER NOT NULL,
    duration_us         INTEGER NOT NULL,
    latency             BLOB    NOT NULL DEFAULT x'',
    latency_base        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY ({time}, service, operation, tenant_id, model, outcome)
)"#;

const MIGRATIONS: &[Migration] = &[
    Migration::sql(
        1,
        "usage_records",
        r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_records (
    id            TEXT    NOT NULL PRIMARY KEY,
    operation     TEXT    NOT NULL,
    function      TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    instance      TEXT    NOT NULL,
    started_at    TEXT    NOT NULL,
    duration_us   INTEGER NOT NULL,
    outcome       TEXT    NOT NULL
                  CHECK (outcome IN ('success', 'error', 'panic', 'cancelled')),
    error_type    TEXT,
    error_message TEXT,
    tenant_id     TEXT,
    user_id       TEXT,
    session_id    TEXT,
    attributes    TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_started_at ON {prefix}usage_records (started_at);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_tenant_started_at
    ON {prefix}usage_records (tenant_id, started_at);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_operation_started_at
    ON {prefix}usage_records (operation, started_at);
"#,
    ),
    Migration::sql(
        2,
        "model, token counts and cost",
        r#"
ALTER TABLE {prefix}usage_records ADD COLUMN model TEXT;
ALTER TABLE {prefix}usage_records ADD COLUMN input_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN output_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN cached_input_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN cost_nano_usd INTEGER;
CREATE INDEX IF NOT EXISTS {prefix}usage_records_model_started_at ON {prefix}usage_records (model, started_at);
"#,
    ),
];

sql_sink!(
    /// Writes records to a SQLite database file, creating the file and the schema (feature
    /// `sqlite`, on by default).
    ///
    /// `started_at` is stored as RFC 3339 text in UTC with microseconds
    /// (`2026-11-22T23:26:23.123456Z`, which sorts in time order), ids as hyphenated UUID text,
    /// `attributes` as JSON text. Token counts above `i64::MAX` (SQLite's largest integer) are
    /// stored as `i64::MAX`.
    SqliteSink,
    Sqlite3,
    "sqlite://usage.db"
);

/// SQLite's SQL.
#[derive(Debug)]
pub(crate) struct Sqlite3;

impl Dialect for Sqlite3 {
    type Db = Sqlite;
    type Limits = ();

    const SINK: &'static str = "SqliteSink";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    const SHARED_VERSIONS: [i64; 5] = [3, 4, 5, 6, 7];
    const ROLLUP_TABLE: &'static str = ROLLUP_TABLE;
    const LOCK: MigrationLock = MigrationLock::EachStep("BEGIN IMMEDIATE");
    const VERSION: &'static str = "SELECT 'SQLite ' || sqlite_version()";
    // The write lock from the start: the horizon read first cannot go stale before the insert
    // (a deferred transaction would fail with SQLITE_BUSY_SNAPSHOT if a prune committed
    // between them), and no other writer runs until the commit.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const HORIZON_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {prefix}usage_pruned (\
         name TEXT NOT NULL PRIMARY KEY, pruned_before TEXT NOT NULL)";
    const TABLE_EXISTS: &'static str =
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?";
    const MIGRATE_POOL: bool = true;
    const CATALOG_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {prefix}usage_operations (\
     service TEXT NOT NULL, operation TEXT NOT NULL, function TEXT NOT NULL, file TEXT NOT NULL, \
     line INTEGER NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, \
     PRIMARY KEY (service, operation, function))";
    const AS_TEXT: &'static str = "CAST({column} AS TEXT)";
    // Stored as RFC 3339 text already.
    const TIME_AS_TEXT: &'static str = "{column}";
    const HEX: &'static str = "hex({column})";
    const COLUMNS_OF: &'static str = "SELECT name FROM pragma_table_info(?)";
    const COUNT_TYPE: &'static str = "INTEGER";
    const SUM_TYPE: &'static str = "INTEGER NOT NULL DEFAULT 0";
    const LABEL_TYPE: &'static str = "TEXT";
    const MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {table} (\
         version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)";

    fn options(url: &str) -> Result<Options<Self>, sqlx::Error> {
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5)))
    }

    /// One writer: SQLite serialises writes anyway. Kept open so `sqlite::memory:` keeps its
    /// data (and migrated, so a fresh in-memory database has its schema).
    fn pool_options(_: &SqlConfig) -> SqlitePoolOptions {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    }

    fn writers(_: &SqlConfig) -> usize {
        1
    }

    async fn limits(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    fn time_text(at: DateTime<Utc>) -> String {
        timestamp_text(at)
    }

    fn prune_statement(table: &str, chunk: u64) -> String {
        format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE started_at < ? LIMIT {chunk})"
        )
    }

    /// First without `RETURNING`: a statement that inserted all its rows or none of them says
    /// which by its count. Records with a statement in between (part of it written before) are
    /// rolled back to a savepoint and written again, asking for the ids this time.
    async fn insert(
        connection: &mut SqliteConnection,
        config: &SqlConfig,
        (): (),
        records: &[UsageRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        let table = config.records_table();
        let mut savepoint = connection.begin().await?;
        let mut fresh = HashSet::with_capacity(records.len());
        for rows in records.chunks(ROWS_PER_STATEMENT) {
            match insert_rows(&mut savepoint, &table, rows).await? {
                0 => {}
                n if n == rows.len() as u64 => fresh.extend(rows.iter().map(|record| record.id)),
                _ => {
                    savepoint.rollback().await?;
                    let mut inserted = HashSet::with_capacity(records.len());
                    for rows in records.chunks(ROWS_PER_STATEMENT) {
                        for id in insert_rows_returning(connection, &table, rows).await? {
                            inserted.insert(
                                Uuid::parse_str(&id)
                                    .map_err(|error| sqlx::Error::Decode(error.into()))?,
                            );
                        }
                    }
                    return Ok(inserted);
                }
            }
        }
        savepoint.commit().await?;
        Ok(fresh)
    }

    async fn before_upgrade(
        connection: &mut SqliteConnection,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error> {
        let hourly = config.rollups_table();
        Self::raw(
            connection,
            format!(
                "ALTER TABLE {hourly} ADD COLUMN latency BLOB NOT NULL DEFAULT x''; \
             ALTER TABLE {hourly} ADD COLUMN latency_base INTEGER NOT NULL DEFAULT 0"
            ),
        )
        .await
    }

    /// Adds the rows of one tier in one upsert per chunk: sums added, the histogram appended (a
    /// concatenation is a sum); a histogram grown well past its last canonical size
    /// ([`compact_when`]) is then rewritten in canonical form (the transaction holds the write lock,
    /// so nothing changes it in between).
    async fn add_tier(
        connection: &mut SqliteConnection,
        config: &SqlConfig,
        (tier, rows): TierRows<'_>,
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<_> = rows.iter().collect();
        let (table, time) = (config.tier_table(tier), tier.column());
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {table} ({time}, {}) ",
                rollup_columns()
            ));
            upsert.push_values(chunk, |mut row, (key, cell)| {
                push_rollup!(row, start: hour_text(key.start), key, cell);
            });
            // Sums saturate at the largest integer (SQLite turns an overflowing sum into a float,
            // which MIN then caps).
            let sums = rollup_sums(|c| format!("MIN({c} + excluded.{c}, 9223372036854775807)"));
            upsert.push(format!(
                " ON CONFLICT ({time}, {}) DO UPDATE SET {sums}, \
                 latency = CAST(latency || excluded.latency AS BLOB) \
                 RETURNING CASE WHEN {} THEN rowid END",
                RollupKey::COLUMNS,
                compact_when("length(latency)")
            ));
            let long: Vec<Option<i64>> = upsert
                .build_query_scalar()
                .fetch_all(&mut *connection)
                .await?;
            for rowid in long.into_iter().flatten() {
                let stored: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT latency FROM {table} WHERE rowid = ?"
                )))
                .bind(rowid)
                .fetch_one(&mut *connection)
                .await?;
                Self::rewrite_compacted(connection, &table, ("rowid", Arg::Int(rowid)), &stored)
                    .await?;
            }
        }
        Ok(())
    }

    async fn register(
        connection: &mut SqliteConnection,
        config: &SqlConfig,
        (service, operations): (&str, &[&'static Operation]),
    ) -> Result<(), sqlx::Error> {
        let mut tx = connection.begin().await?;
        let now = Self::time_text(chrono::Utc::now());
        for chunk in operations.chunks(ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} (service, operation, function, file, line, first_seen, \
                 last_seen) ",
                config.operations_table()
            ));
            upsert.push_values(chunk, |mut row, op| {
                row.push_bind(service.to_owned())
                    .push_bind(op.name())
                    .push_bind(op.function())
                    .push_bind(op.file())
                    .push_bind(i64::from(op.line()))
                    .push_bind(now.clone())
                    .push_bind(now.clone());
            });
            upsert.push(
                " ON CONFLICT (service, operation, function) DO UPDATE SET \
                 file = excluded.file, line = excluded.line, last_seen = excluded.last_seen",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    statements!();
}

/// `started_at` as stored: RFC 3339, UTC, microseconds.
fn timestamp_text(at: chrono::DateTime<chrono::Utc>) -> String {
    // The same text as `%Y-%m-%dT%H:%M:%S%.6fZ`, without parsing a format string per record.
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The statement inserting `rows`, skipping ids already present.
fn insert_statement(table: &str, rows: &[UsageRecord]) -> QueryBuilder<Sqlite> {
    let mut insert: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("INSERT INTO {table} ({RECORD_COLUMNS}) "));
    insert.push_values(rows, |mut row, record| {
        let started = timestamp_text(record.started_at);
        let duration = i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX);
        push_record!(row, record, started: started, duration: duration, count: clamp);
    });
    insert.push(" ON CONFLICT (id) DO NOTHING");
    insert
}

/// Inserts `rows`, skipping ids already present; returns how many it inserted.
async fn insert_rows(
    connection: &mut SqliteConnection,
    table: &str,
    rows: &[UsageRecord],
) -> Result<u64, sqlx::Error> {
    let done = insert_statement(table, rows)
        .build()
        .execute(connection)
        .await?;
    Ok(done.rows_affected())
}

/// Inserts `rows`, skipping ids already present; returns the ids it inserted. `RETURNING`
/// hands the rows from sqlx's SQLite thread to the caller's a few at a time, a wait each time
/// that [`insert_rows`] does not pay.
async fn insert_rows_returning(
    connection: &mut SqliteConnection,
    table: &str,
    rows: &[UsageRecord],
) -> Result<Vec<String>, sqlx::Error> {
    let mut insert = insert_statement(table, rows);
    insert.push(" RETURNING id");
    let inserted = insert.build().fetch_all(connection).await?;
    Ok(inserted.iter().map(|row| row.get::<String, _>(0)).collect())
}

/// An hour as stored in the rollups: RFC 3339, UTC, whole seconds.
pub(crate) fn hour_text(hour: chrono::DateTime<chrono::Utc>) -> String {
    hour.format("%Y-%m-%dT%H:00:00Z").to_string()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use crate::sink::Sink as _;

    #[tokio::test]
    async fn a_prune_stops_within_its_budget_and_goes_on_when_called_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("prune.db").display());
        let mut sink = super::SqliteSink::connect(&url).await.unwrap();
        let old = Utc::now() - chrono::Duration::days(40);
        let records: Vec<_> = (0..25_000)
            .map(|_| {
                let mut record = crate::sink::probe_record();
                record.id = uuid::Uuid::now_v7();
                record.started_at = old;
                record
            })
            .collect();
        for batch in records.chunks(4096) {
            sink.write(batch).await.unwrap();
        }
        // The unit-test budget is zero: one statement per call.
        let before = Utc::now() - chrono::Duration::days(30);
        let mut calls = Vec::new();
        loop {
            let deleted = sink.prune(before).await.unwrap();
            calls.push(deleted);
            if deleted == 0 {
                break;
            }
        }
        assert_eq!(calls, [10_000, 10_000, 5_000, 0]);
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        for micros in [
            0,
            1,
            999_999,
            1_763_862_000_123_456,
            253_402_300_799_999_999,
        ] {
            let at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
            assert_eq!(
                super::timestamp_text(at),
                at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
    }
}
