//! The embedded default: SQLite through sqlx, in WAL mode, one transaction per batch, multi-row
//! `INSERT ... ON CONFLICT(id) DO NOTHING` statements.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, QueryBuilder, Row, Sqlite};

use super::sql::{self, Migration, SqlConfig, StepClock, VerifyReport};
use super::Sink;
use crate::error::{redact_url, DbStep, Error};
use crate::record::UsageRecord;
use std::collections::BTreeMap;

use crate::rollup::{
    compact_when, compacted, encode_latency, Cell, Parts, Rollup, RollupKey, Tier,
};

/// Rows per `INSERT` statement: 19 bound values each stays far below SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 500;

/// A rollup table (`$table`, its hour or day in the `$time` column): both tiers have one shape.
macro_rules! rollup_table {
    ($table:literal, $time:literal) => {
        concat!(
            r#"
CREATE TABLE IF NOT EXISTS {prefix}"#,
            $table,
            r#" (
    "#,
            $time,
            r#" TEXT    NOT NULL,
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
    PRIMARY KEY ("#,
            $time,
            r#", service, operation, tenant_id, model, outcome)
)"#
        )
    };
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "usage_records",
        sql: r#"
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
    },
    Migration {
        version: 2,
        description: "model, token counts and cost",
        sql: r#"
ALTER TABLE {prefix}usage_records ADD COLUMN model TEXT;
ALTER TABLE {prefix}usage_records ADD COLUMN input_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN output_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN cached_input_tokens INTEGER;
ALTER TABLE {prefix}usage_records ADD COLUMN cost_nano_usd INTEGER;
CREATE INDEX IF NOT EXISTS {prefix}usage_records_model_started_at ON {prefix}usage_records (model, started_at);
"#,
    },
    Migration {
        version: ROLLUPS,
        description: "hourly and daily rollups (backfilled from the records)",
        sql: concat!(
            rollup_table!("usage_rollups_hourly", "hour"),
            ";",
            rollup_table!("usage_rollups_daily", "day")
        ),
    },
    Migration {
        version: 4,
        description: "operation catalog",
        sql: r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_operations (
    service    TEXT    NOT NULL,
    operation  TEXT    NOT NULL,
    function   TEXT    NOT NULL,
    file       TEXT    NOT NULL,
    line       INTEGER NOT NULL,
    first_seen TEXT    NOT NULL,
    last_seen  TEXT    NOT NULL,
    PRIMARY KEY (service, operation, function)
);
"#,
    },
    Migration {
        version: DAILY,
        description: "daily rollups; latency histograms inside the rollup rows",
        // Databases created before this version: done by `upgrade_rollups` (a no-op on a
        // database whose rollups were created in the current shape).
        sql: "",
    },
];

/// The migration that creates the rollups, after which existing records are rolled up.
const ROLLUPS: i64 = 3;

/// The migration that adds the daily tier and moves the latency histograms into the rollup rows.
const DAILY: i64 = 5;

/// Writes records to a SQLite database file, creating the file and the schema.
///
/// `started_at` is stored as RFC 3339 text in UTC with microseconds (`2026-11-22T23:26:23.123456Z`,
/// which sorts in time order), ids as hyphenated UUID text, `attributes` as JSON text. Token
/// counts above `i64::MAX` (SQLite's largest integer) are stored as `i64::MAX`.
pub struct SqliteSink {
    options: SqliteConnectOptions,
    config: SqlConfig,
    target: String,
    pool: Option<SqlitePool>,
}

impl fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSink")
            .field("database", &self.target)
            .field("table", &self.config.records_table())
            .finish_non_exhaustive()
    }
}

impl SqliteSink {
    /// Opens (creating if missing) the database at `url`, e.g. `sqlite://usage.db` or
    /// `sqlite:///var/lib/app/usage.db`, and brings its schema up to date.
    ///
    /// The connection used for writing is opened later by the tracker's worker, on its own
    /// runtime, so the sink does not depend on the runtime this is called from.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, SqlConfig::new()).await
    }

    /// [`connect`](Self::connect) with a table prefix.
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let target = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| Error::InvalidUrl {
                url: target.clone(),
                reason: error.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let sink = SqliteSink {
            options,
            config,
            target,
            pool: None,
        };
        let mut connection = sink.open().await?;
        migrate(&mut connection, &sink.config, &sink.target).await?;
        let _ = connection.close().await;
        Ok(sink)
    }

    /// The database, as given (with any password redacted).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn open(&self) -> Result<SqliteConnection, Error> {
        SqliteConnection::connect_with(&self.options)
            .await
            .map_err(|error| Error::database(DbStep::Connect, &self.target, error))
    }

    async fn pool(&mut self) -> Result<SqlitePool, Error> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        // One writer: SQLite serialises writes anyway. Kept open so `sqlite::memory:` keeps its
        // data, and migrated again so a fresh in-memory database has its schema.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(self.options.clone())
            .await
            .map_err(|error| Error::database(DbStep::Connect, &self.target, error))?;
        let mut connection = pool
            .acquire()
            .await
            .map_err(|error| Error::database(DbStep::Connect, &self.target, error))?;
        migrate(&mut connection, &self.config, &self.target).await?;
        drop(connection);
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// Startup verification: opens the database, migrates, writes a probe record, reads it back
    /// and deletes it. Each failure names its step.
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let mut clock = StepClock::new();
        let mut connection = self.open().await?;
        clock.done(DbStep::Connect);
        let fail = |step| move |error: sqlx::Error| Error::database(step, &self.target, error);
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut connection)
            .await
            .map_err(fail(DbStep::Read))?;
        migrate(&mut connection, &self.config, &self.target).await?;
        clock.done(DbStep::Migrate);
        let probe = super::probe_record();
        let table = self.config.records_table();
        let mut tx = connection.begin().await.map_err(fail(DbStep::Write))?;
        insert_rows(&mut tx, &table, std::slice::from_ref(&probe))
            .await
            .map_err(fail(DbStep::Write))?;
        tx.commit().await.map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Write);
        let id = probe.id.hyphenated().to_string();
        let read: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT operation FROM {table} WHERE id = ?"
        )))
        .bind(&id)
        .fetch_optional(&mut connection)
        .await
        .map_err(fail(DbStep::Read))?;
        if read.as_deref() != Some(probe.operation.as_ref()) {
            return Err(Error::database(
                DbStep::Read,
                &self.target,
                "the probe record written was not read back",
            ));
        }
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id = ?")))
            .bind(&id)
            .execute(&mut connection)
            .await
            .map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Read);
        let _ = connection.close().await;
        Ok(clock.report(&self.target, format!("SQLite {version}")))
    }
}

async fn migrate(
    connection: &mut SqliteConnection,
    config: &SqlConfig,
    target: &str,
) -> Result<(), Error> {
    let fail = |error: sqlx::Error| Error::database(DbStep::Migrate, target, error);
    let migrations = config.migrations_table();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {migrations} (
            version     INTEGER NOT NULL PRIMARY KEY,
            description TEXT    NOT NULL,
            applied_at  TEXT    NOT NULL
        )"
    )))
    .execute(&mut *connection)
    .await
    .map_err(fail)?;
    for migration in MIGRATIONS {
        // IMMEDIATE takes the write lock first (waiting out the busy timeout), so two processes
        // starting together apply each migration once.
        let mut tx = connection
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let applied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {migrations} WHERE version = ?"
        )))
        .bind(migration.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        if applied.is_some() {
            continue;
        }
        if !migration.sql.is_empty() {
            sqlx::raw_sql(AssertSqlSafe(migration.sql_for(config)))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        if migration.version == ROLLUPS {
            backfill(&mut tx, config).await.map_err(fail)?;
        }
        if migration.version == DAILY {
            upgrade_rollups(&mut tx, config).await.map_err(fail)?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {migrations} (version, description, applied_at)
             VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )))
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
    }
    Ok(())
}

/// `started_at` as stored: RFC 3339, UTC, microseconds.
fn timestamp_text(at: chrono::DateTime<chrono::Utc>) -> String {
    // The same text as `%Y-%m-%dT%H:%M:%S%.6fZ`, without parsing a format string per record.
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `attributes` as JSON text, without copying the map first.
fn attributes_text(attributes: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(attributes).unwrap_or_else(|_| String::from("{}"))
}

/// The statement inserting `rows`, skipping ids already present.
fn insert_statement(table: &str, rows: &[UsageRecord]) -> QueryBuilder<Sqlite> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "INSERT INTO {table} (id, operation, function, service, instance, started_at, \
         duration_us, outcome, error_type, error_message, tenant_id, user_id, session_id, \
         attributes, model, input_tokens, output_tokens, cached_input_tokens, cost_nano_usd) "
    ));
    insert.push_values(rows, |mut row, record| {
        // Text is bound by reference (sqlx copies it once, into its arguments), and the
        // attributes are serialised from the map without cloning it first.
        row.push_bind(record.id.hyphenated().to_string())
            .push_bind(record.operation.as_ref())
            .push_bind(record.function.as_ref())
            .push_bind(record.service.as_ref())
            .push_bind(record.instance.as_ref())
            .push_bind(timestamp_text(record.started_at))
            .push_bind(i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX))
            .push_bind(record.outcome.as_str())
            .push_bind(record.error_type.as_deref())
            .push_bind(record.error_message.as_deref())
            .push_bind(record.tenant_id.as_deref())
            .push_bind(record.user_id.map(|id| id.hyphenated().to_string()))
            .push_bind(record.session_id.map(|id| id.hyphenated().to_string()))
            .push_bind(attributes_text(&record.attributes))
            .push_bind(record.model.as_deref())
            .push_bind(record.input_tokens.map(sql::clamp))
            .push_bind(record.output_tokens.map(sql::clamp))
            .push_bind(record.cached_input_tokens.map(sql::clamp))
            .push_bind(record.cost_nano_usd);
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

/// Adds `rollup` to the rollup tables (in the caller's transaction).
async fn add_rollup(
    connection: &mut SqliteConnection,
    config: &SqlConfig,
    rollup: &Rollup,
) -> Result<(), sqlx::Error> {
    for (tier, rows) in rollup.tiers() {
        add_tier(connection, config, tier, rows).await?;
    }
    Ok(())
}

/// Adds the rows of one tier in one upsert per chunk: sums added, the histogram appended (a
/// concatenation is a sum); a histogram grown well past its last canonical size
/// ([`compact_when`]) is then rewritten in canonical form (the transaction holds the write lock,
/// so nothing changes it in between).
async fn add_tier(
    connection: &mut SqliteConnection,
    config: &SqlConfig,
    tier: Tier,
    rows: &BTreeMap<RollupKey, Cell>,
) -> Result<(), sqlx::Error> {
    let table = tier.table(config);
    let time = tier.column();
    let rows: Vec<_> = rows.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} ({time}, service, operation, tenant_id, model, outcome, calls, \
             input_tokens, output_tokens, cached_input_tokens, cost_nano_usd, duration_us, \
             latency, latency_base) "
        ));
        upsert.push_values(chunk, |mut row, (key, cell)| {
            let sums = &cell.sums;
            let latency = encode_latency(cell.latency.iter().map(|(b, c)| (*b, *c)));
            let base = latency.len() as i64;
            row.push_bind(hour_text(key.start))
                .push_bind(key.service.as_str())
                .push_bind(key.operation.as_str())
                .push_bind(key.tenant_id.as_str())
                .push_bind(key.model.as_str())
                .push_bind(key.outcome)
                .push_bind(sums.calls)
                .push_bind(sums.input_tokens)
                .push_bind(sums.output_tokens)
                .push_bind(sums.cached_input_tokens)
                .push_bind(sums.cost_nano_usd)
                .push_bind(sums.duration_us)
                .push_bind(latency)
                .push_bind(base);
        });
        upsert.push(format!(
            // Sums saturate at the largest integer (SQLite turns an overflowing sum into a
            // float, which MIN then caps).
            " ON CONFLICT ({time}, service, operation, tenant_id, model, outcome) DO UPDATE SET \
             calls = MIN(calls + excluded.calls, 9223372036854775807), \
             input_tokens = MIN(input_tokens + excluded.input_tokens, 9223372036854775807), \
             output_tokens = MIN(output_tokens + excluded.output_tokens, 9223372036854775807), \
             cached_input_tokens = \
                 MIN(cached_input_tokens + excluded.cached_input_tokens, 9223372036854775807), \
             cost_nano_usd = MIN(cost_nano_usd + excluded.cost_nano_usd, 9223372036854775807), \
             duration_us = MIN(duration_us + excluded.duration_us, 9223372036854775807), \
             latency = CAST(latency || excluded.latency AS BLOB) \
             RETURNING CASE WHEN {} THEN rowid END",
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
            let compact = compacted(&stored, &table);
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET latency_base = ?, latency = ? WHERE rowid = ?"
            )))
            .bind(compact.len() as i64)
            .bind(compact)
            .bind(rowid)
            .execute(&mut *connection)
            .await?;
        }
    }
    Ok(())
}

/// Brings rollups made before the daily tier into the current shape: each hour's histogram
/// (one row per bucket in the legacy table) into its row's `latency`, the daily rows from the
/// hourly ones, then the legacy table dropped. Nothing to do when the rollups were created in
/// the current shape.
async fn upgrade_rollups(
    connection: &mut SqliteConnection,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let legacy = config.legacy_latency_table();
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(&legacy)
            .fetch_one(&mut *connection)
            .await?;
    if exists == 0 {
        return Ok(());
    }
    let hourly = config.rollups_table();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {hourly} ADD COLUMN latency BLOB NOT NULL DEFAULT x''; \
         ALTER TABLE {hourly} ADD COLUMN latency_base INTEGER NOT NULL DEFAULT 0;{}",
        Migration::text(rollup_table!("usage_rollups_daily", "day"), config)
    )))
    .execute(&mut *connection)
    .await?;
    // The histograms, a chunk of hours at a time (sums zero: they are in the rows already).
    let mut after = String::new();
    loop {
        let hours: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT hour FROM {legacy} WHERE hour > ? ORDER BY hour LIMIT 24"
        )))
        .bind(&after)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = hours.last() else { break };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT hour, service, operation, tenant_id, model, outcome, bucket, calls \
             FROM {legacy} WHERE hour > ? AND hour <= ?"
        )))
        .bind(&after)
        .bind(last)
        .fetch_all(&mut *connection)
        .await?;
        after = last.clone();
        let mut rollup = Rollup::default();
        for row in &rows {
            let cell = Cell::bucket(row.get(6), row.get(7));
            rollup.add_cell(Tier::Hour, stored_key(row)?, &cell);
        }
        add_tier(connection, config, Tier::Hour, &rollup.hours).await?;
    }
    // The daily rows, from the hourly ones.
    let mut after = String::new();
    loop {
        let days: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT substr(hour, 1, 10) FROM {hourly} WHERE substr(hour, 1, 10) > ? \
             ORDER BY 1 LIMIT 7"
        )))
        .bind(&after)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = days.last() else { break };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT hour, service, operation, tenant_id, model, outcome, calls, input_tokens, \
             output_tokens, cached_input_tokens, cost_nano_usd, duration_us, latency \
             FROM {hourly} WHERE substr(hour, 1, 10) > ? AND substr(hour, 1, 10) <= ?"
        )))
        .bind(&after)
        .bind(last)
        .fetch_all(&mut *connection)
        .await?;
        after = last.clone();
        let mut rollup = Rollup::default();
        for row in &rows {
            let cell = Cell::stored(|i| row.get(6 + i), row.get::<&[u8], _>(12))
                .map_err(|error| sqlx::Error::Decode(error.into()))?;
            rollup.add_cell(Tier::Day, stored_key(row)?, &cell);
        }
        add_tier(connection, config, Tier::Day, &rollup.days).await?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {legacy}")))
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The key of a stored rollup row (its first six columns).
fn stored_key(row: &sqlx::sqlite::SqliteRow) -> Result<RollupKey, sqlx::Error> {
    let start: String = row.get(0);
    let outcome: String = row.get(5);
    let key = RollupKey {
        start: chrono::DateTime::parse_from_rfc3339(&start)
            .map(|at| at.with_timezone(&chrono::Utc))
            .map_err(|error| sqlx::Error::Decode(error.into()))?,
        service: row.get(1),
        operation: row.get(2),
        tenant_id: row.get(3),
        model: row.get(4),
        outcome: outcome
            .parse::<crate::record::Outcome>()
            .map_err(|error| sqlx::Error::Decode(error.into()))?
            .as_str(),
    };
    Ok(key)
}

/// An hour as stored in the rollups: RFC 3339, UTC, whole seconds.
pub(crate) fn hour_text(hour: chrono::DateTime<chrono::Utc>) -> String {
    hour.format("%Y-%m-%dT%H:00:00Z").to_string()
}

/// Rolls up the records already in the table (when the rollups are created), in chunks.
async fn backfill(
    connection: &mut SqliteConnection,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT rowid, started_at, service, operation, tenant_id, model, outcome, duration_us, \
             input_tokens, output_tokens, cached_input_tokens, cost_nano_usd \
             FROM {} WHERE rowid > ? ORDER BY rowid LIMIT 10000",
            config.records_table()
        )))
        .bind(after)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let mut rollup = Rollup::default();
        for row in &rows {
            let started: String = row.get(1);
            let outcome: String = row.get(6);
            let count = |column: usize| row.get::<Option<i64>, _>(column).map(|n| n.max(0) as u64);
            rollup.add_parts(Parts {
                started_at: chrono::DateTime::parse_from_rfc3339(&started)
                    .map(|at| at.with_timezone(&chrono::Utc))
                    .map_err(|error| sqlx::Error::Decode(error.into()))?,
                service: row.get(2),
                operation: row.get(3),
                tenant_id: row.get(4),
                model: row.get(5),
                outcome: outcome
                    .parse()
                    .map_err(|error: crate::record::ParseOutcomeError| {
                        sqlx::Error::Decode(error.into())
                    })?,
                duration_us: row.get::<i64, _>(7).max(0) as u64,
                input_tokens: count(8),
                output_tokens: count(9),
                cached_input_tokens: count(10),
                cost_nano_usd: row.get(11),
            });
        }
        add_rollup(connection, config, &rollup).await?;
    }
}

impl Sink for SqliteSink {
    async fn prune(&mut self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, Error> {
        let pool = self.pool().await?;
        sql::prune_in_chunks!(self, &pool, sql::Dialect::Sqlite, before)
    }

    async fn register(
        &mut self,
        service: &str,
        operations: &[&'static crate::catalog::Operation],
    ) -> Result<(), Error> {
        let pool = self.pool().await?;
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let fail = |error: sqlx::Error| Error::database(DbStep::Write, &self.target, error);
        let mut tx = pool.begin().await.map_err(fail)?;
        for chunk in operations.chunks(ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} (service, operation, function, file, line, first_seen, \
                 last_seen) ",
                self.config.operations_table()
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
            upsert.build().execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }

    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let pool = self.pool().await?;
        let table = self.config.records_table();
        let fail = |error: sqlx::Error| Error::database(DbStep::Write, &self.target, error);
        // Only what this transaction inserted is rolled up: a replayed record counts once.
        // First without `RETURNING`: a statement that inserted all its rows or none of them
        // says which by its count. A batch with a statement in between (part of it written
        // before) is rolled back and written again, asking for the ids this time.
        let mut tx = pool.begin().await.map_err(fail)?;
        let mut fresh = Vec::with_capacity(batch.len());
        let mut mixed = false;
        for rows in batch.chunks(ROWS_PER_STATEMENT) {
            match insert_rows(&mut tx, &table, rows).await.map_err(fail)? {
                0 => {}
                n if n == rows.len() as u64 => fresh.extend(rows),
                _ => {
                    mixed = true;
                    break;
                }
            }
        }
        if mixed {
            fresh.clear();
            tx.rollback().await.map_err(fail)?;
            tx = pool.begin().await.map_err(fail)?;
            let mut inserted = std::collections::HashSet::new();
            for rows in batch.chunks(ROWS_PER_STATEMENT) {
                inserted.extend(
                    insert_rows_returning(&mut tx, &table, rows)
                        .await
                        .map_err(fail)?,
                );
            }
            // `remove`: a record repeated within the batch counts once too.
            fresh.extend(
                batch
                    .iter()
                    .filter(|record| inserted.remove(&record.id.hyphenated().to_string())),
            );
        }
        let rollup = Rollup::of(fresh);
        if !rollup.is_empty() {
            add_rollup(&mut tx, &self.config, &rollup)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }
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
