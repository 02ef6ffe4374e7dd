//! MySQL and MariaDB through sqlx: multi-row `INSERT` statements sized under the server's
//! `max_allowed_packet`, a batch (or each part of a large one, written at once over the write
//! connections) in one transaction, idempotent with
//! `ON DUPLICATE KEY UPDATE replays = replays + 1` (a stored record keeps its values and counts
//! the replay; not `INSERT IGNORE`, which would turn rejected values into silent truncation).

use std::fmt;
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection, MySql, QueryBuilder, Row};

use super::sql::{self, Migration, SqlConfig, StepClock, VerifyReport};
use super::Sink;
use crate::error::{redact_url, DbStep, Error};
use crate::record::UsageRecord;
use std::collections::BTreeMap;

use crate::rollup::{
    compact_when, compacted, encode_latency, Cell, Parts, Rollup, RollupKey, Tier,
};

/// A rollup table (`$table`, its hour or day in the `$time` column): both tiers have one shape.
macro_rules! rollup_table {
    ($table:literal, $time:literal) => {
        concat!(
            r#"
CREATE TABLE IF NOT EXISTS {prefix}"#,
            $table,
            r#" (
    rollup_key          BINARY(16)      NOT NULL PRIMARY KEY,
    "#,
            $time,
            r#" DATETIME        NOT NULL,
    service             VARCHAR(255)    NOT NULL,
    operation           VARCHAR(255)    NOT NULL,
    tenant_id           VARCHAR(255)    NOT NULL,
    model               VARCHAR(255)    NOT NULL,
    outcome             VARCHAR(16)     NOT NULL,
    calls               BIGINT          NOT NULL,
    input_tokens        BIGINT          NOT NULL,
    output_tokens       BIGINT          NOT NULL,
    cached_input_tokens BIGINT          NOT NULL,
    cost_nano_usd       BIGINT          NOT NULL,
    duration_us         BIGINT          NOT NULL,
    latency             MEDIUMBLOB      NULL,
    latency_base        BIGINT          NOT NULL DEFAULT 0,
    KEY {prefix}usage_rollups_"#,
            $time,
            r#" ("#,
            $time,
            r#")
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"#
        )
    };
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "usage_records",
        sql: r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_records (
    id                  CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    operation           VARCHAR(255)  NOT NULL,
    function            VARCHAR(1024) NOT NULL,
    service             VARCHAR(255)  NOT NULL,
    instance            VARCHAR(255)  NOT NULL,
    started_at          DATETIME(6)   NOT NULL,
    duration_us         BIGINT UNSIGNED NOT NULL,
    outcome             VARCHAR(16)   NOT NULL,
    error_type          VARCHAR(1024) NULL,
    error_message       MEDIUMTEXT    NULL,
    tenant_id           VARCHAR(255)  NULL,
    user_id             CHAR(36) CHARACTER SET ascii NULL,
    session_id          CHAR(36) CHARACTER SET ascii NULL,
    model               VARCHAR(255)  NULL,
    input_tokens        BIGINT UNSIGNED NULL,
    output_tokens       BIGINT UNSIGNED NULL,
    cached_input_tokens BIGINT UNSIGNED NULL,
    cost_nano_usd       BIGINT        NULL,
    attributes          JSON          NOT NULL,
    KEY {prefix}usage_records_started_at (started_at),
    KEY {prefix}usage_records_tenant_started_at (tenant_id, started_at),
    KEY {prefix}usage_records_operation_started_at (operation, started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
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
        version: 3,
        description: "operation catalog",
        sql: r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_operations (
    operation_key BINARY(16)    NOT NULL PRIMARY KEY,
    service       VARCHAR(255)  NOT NULL,
    operation     VARCHAR(255)  NOT NULL,
    function      VARCHAR(1024) NOT NULL,
    file          VARCHAR(1024) NOT NULL,
    line          INT           NOT NULL,
    first_seen    DATETIME(6)   NOT NULL,
    last_seen     DATETIME(6)   NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
"#,
    },
    Migration {
        version: DAILY,
        description: "daily rollups; latency histograms inside the rollup rows",
        // Databases created before this version: done by `upgrade_rollups` (a no-op on a
        // database whose rollups were created in the current shape).
        sql: "",
    },
    Migration {
        version: 5,
        description: "write ids on records",
        // Which write inserted a row, so a batch can tell its new records from replayed ones
        // without a locking read (whose gap locks deadlock concurrent writers).
        sql: "ALTER TABLE {prefix}usage_records ADD COLUMN write_id BINARY(16) NULL",
    },
    Migration {
        version: 6,
        description: "replay counts on records",
        // How many later writes found the record already stored. Each one changes the row, so
        // the server counts it twice in the statement's affected rows and a write learns how many
        // of its rows were replays without reading them back.
        sql: "ALTER TABLE {prefix}usage_records ADD COLUMN replays BIGINT NOT NULL DEFAULT 0",
    },
];

/// The migration that creates the rollups, after which existing records are rolled up.
const ROLLUPS: i64 = 2;

/// The migration that adds the daily tier and moves the latency histograms into the rollup rows.
const DAILY: i64 = 4;

/// The rollup key as 16 bytes: MySQL cannot index the six key columns together (too long for an
/// InnoDB key), so rows are keyed by a UUIDv5 of them, each field length-prefixed so that no two
/// keys share a text (a tenant ending in the next field's text stays apart). Rows written before
/// the prefixes (by an earlier version) keep their keys; reports group by the key columns, so a
/// key split over an old and a new row still adds up.
fn rollup_key(key: &RollupKey) -> [u8; 16] {
    let mut text = key.start.timestamp().to_string();
    for field in [
        key.service.as_str(),
        key.operation.as_str(),
        key.tenant_id.as_str(),
        key.model.as_str(),
        key.outcome,
    ] {
        text.push_str(&format!("|{}:{field}", field.len()));
    }
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).as_bytes()
}

/// `ON DUPLICATE KEY UPDATE` adding each sum, held at the largest BIGINT.
fn saturating_sums() -> String {
    let sums: Vec<String> = [
        "calls",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cost_nano_usd",
        "duration_us",
    ]
    .iter()
    .map(|c| format!("{c} = LEAST(CAST({c} AS DECIMAL(21)) + VALUES({c}), 9223372036854775807)"))
    .collect();
    format!(" ON DUPLICATE KEY UPDATE {}", sums.join(", "))
}

/// Adds `rollup` to the rollup tables, in the caller's transaction.
async fn add_rollup(
    connection: &mut MySqlConnection,
    config: &SqlConfig,
    rollup: &Rollup,
) -> Result<(), sqlx::Error> {
    for (tier, rows) in rollup.tiers() {
        add_tier(connection, config, tier, rows).await?;
    }
    Ok(())
}

/// Adds the rows of one tier in one upsert per chunk: sums added, the histogram appended (a
/// concatenation is a sum); histograms grown well past their last canonical size
/// ([`compact_when`]) are then read (the upsert holds their rows' locks, and every row it touched
/// changed, so the transaction reads its own write) and rewritten in canonical form.
async fn add_tier(
    connection: &mut MySqlConnection,
    config: &SqlConfig,
    tier: Tier,
    rows: &BTreeMap<RollupKey, Cell>,
) -> Result<(), sqlx::Error> {
    let table = tier.table(config);
    let time = tier.column();
    let rows: Vec<_> = rows
        .iter()
        .map(|(key, cell)| (rollup_key(key), key, cell))
        .collect();
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        let mut upsert: QueryBuilder<MySql> = QueryBuilder::new(format!(
            "INSERT INTO {table} (rollup_key, {time}, service, operation, tenant_id, model, \
             outcome, calls, input_tokens, output_tokens, cached_input_tokens, cost_nano_usd, \
             duration_us, latency, latency_base) "
        ));
        upsert.push_values(chunk, |mut row, (id, key, cell)| {
            let sums = &cell.sums;
            let latency = encode_latency(cell.latency.iter().map(|(b, c)| (*b, *c)));
            let base = latency.len() as i64;
            row.push_bind(id.to_vec())
                .push_bind(key.start.format("%Y-%m-%d %H:00:00").to_string())
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
        // Sums saturate at the largest BIGINT instead of failing the batch.
        upsert.push(saturating_sums());
        upsert.push(", latency = CONCAT(COALESCE(latency, ''), VALUES(latency))");
        upsert.build().execute(&mut *connection).await?;
        let mut select: QueryBuilder<MySql> = QueryBuilder::new(format!(
            "SELECT rollup_key, latency FROM {table} WHERE {} AND rollup_key IN (",
            compact_when("LENGTH(latency)")
        ));
        let mut ids = select.separated(", ");
        for (id, _, _) in chunk {
            ids.push_bind(id.to_vec());
        }
        // Not a locking read: the upsert holds these rows and what this transaction reads of them
        // is its own write (a locking read may scan, and lock, rows beyond them).
        select.push(")");
        let long = select.build().fetch_all(&mut *connection).await?;
        for row in &long {
            let id: Vec<u8> = row.get(0);
            let stored: Vec<u8> = row.get(1);
            let compact = compacted(&stored, &table);
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET latency_base = ?, latency = ? WHERE rollup_key = ?"
            )))
            .bind(compact.len() as i64)
            .bind(compact)
            .bind(id)
            .execute(&mut *connection)
            .await?;
        }
    }
    Ok(())
}

/// Adds the histogram columns to an hourly rollup table made by an earlier version (DDL is not
/// transactional in MySQL, so whether they are there is read first).
async fn add_latency_columns(
    connection: &mut MySqlConnection,
    hourly: &str,
) -> Result<(), sqlx::Error> {
    let present: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'latency'",
    )
    .bind(hourly)
    .fetch_one(&mut *connection)
    .await?;
    if present == 0 {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {hourly} ADD COLUMN latency MEDIUMBLOB NULL, \
             ADD COLUMN latency_base BIGINT NOT NULL DEFAULT 0"
        )))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Brings rollups made before the daily tier into the current shape: each hour's histogram
/// (one row per bucket in the legacy table) into its row's `latency`, the daily rows from the
/// hourly ones, then the legacy table dropped. Nothing to do when the rollups were created in
/// the current shape. DDL is not transactional in MySQL, so the converted histograms and the
/// daily rows are emptied first: an interrupted upgrade is simply redone.
async fn upgrade_rollups(
    connection: &mut MySqlConnection,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let legacy = config.legacy_latency_table();
    let hourly = config.rollups_table();
    let daily = config.daily_rollups_table();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&legacy)
    .fetch_one(&mut *connection)
    .await?;
    if tables == 0 {
        return Ok(());
    }
    add_latency_columns(connection, &hourly).await?;
    sqlx::raw_sql(AssertSqlSafe(Migration::text(
        rollup_table!("usage_rollups_daily", "day"),
        config,
    )))
    .execute(&mut *connection)
    .await?;
    let mut tx = connection.begin().await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "UPDATE {hourly} SET latency = NULL; DELETE FROM {daily}"
    )))
    .execute(&mut *tx)
    .await?;
    // The histograms, a chunk of rollup rows at a time (sums zero: they are in the rows already).
    let mut after: Vec<u8> = Vec::new();
    loop {
        let keys: Vec<Vec<u8>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT rollup_key FROM {hourly} WHERE rollup_key > ? ORDER BY rollup_key LIMIT 1000"
        )))
        .bind(&after)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DATE_FORMAT(hour, '%Y-%m-%dT%H:%i:%sZ'), service, operation, tenant_id, \
             model, outcome, bucket, calls FROM {legacy} \
             WHERE rollup_key > ? AND rollup_key <= ?"
        )))
        .bind(&after)
        .bind(&last)
        .fetch_all(&mut *tx)
        .await?;
        after = last;
        let mut rollup = Rollup::default();
        for row in &rows {
            let cell = Cell::bucket(row.get::<i32, _>(6).into(), row.get(7));
            rollup.add_cell(Tier::Hour, stored_key(row)?, &cell);
        }
        add_tier(&mut tx, config, Tier::Hour, &rollup.hours).await?;
    }
    // The daily rows, from the hourly ones.
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DATE_FORMAT(hour, '%Y-%m-%dT%H:%i:%sZ'), service, operation, tenant_id, \
             model, outcome, calls, input_tokens, output_tokens, cached_input_tokens, \
             cost_nano_usd, duration_us, latency, rollup_key FROM {hourly} \
             WHERE rollup_key > ? ORDER BY rollup_key LIMIT 1000"
        )))
        .bind(&after)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(13);
        let mut rollup = Rollup::default();
        for row in &rows {
            let latency: Option<Vec<u8>> = row.get(12);
            let cell = Cell::stored(|i| row.get(6 + i), latency.as_deref().unwrap_or_default())
                .map_err(|error| sqlx::Error::Decode(error.into()))?;
            rollup.add_cell(Tier::Day, stored_key(row)?, &cell);
        }
        add_tier(&mut tx, config, Tier::Day, &rollup.days).await?;
    }
    tx.commit().await?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {legacy}")))
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The key of a stored rollup row (its first six columns, the time as RFC 3339 text).
fn stored_key(row: &sqlx::mysql::MySqlRow) -> Result<RollupKey, sqlx::Error> {
    let start: String = row.get(0);
    let outcome: String = row.get(5);
    Ok(RollupKey {
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
    })
}

/// Rolls up the records already in the table. DDL is not transactional in MySQL, so the rollups
/// are emptied first: an interrupted backfill is simply redone.
async fn backfill(connection: &mut MySqlConnection, config: &SqlConfig) -> Result<(), sqlx::Error> {
    // An earlier version's rollups, left half-made by an interrupted migration: their tables
    // exist in the earlier shape. Brought to the current one; the records refill them below.
    let hourly = config.rollups_table();
    add_latency_columns(connection, &hourly).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {}",
        config.legacy_latency_table()
    )))
    .execute(&mut *connection)
    .await?;
    for table in [config.rollups_table(), config.daily_rollups_table()] {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *connection)
            .await?;
    }
    let mut after = String::new();
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%s.%fZ'), service, operation, \
             tenant_id, model, outcome, duration_us, input_tokens, output_tokens, \
             cached_input_tokens, cost_nano_usd \
             FROM {} WHERE id > ? ORDER BY id LIMIT 10000",
            config.records_table()
        )))
        .bind(&after)
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
                duration_us: row.get(7),
                input_tokens: row.get(8),
                output_tokens: row.get(9),
                cached_input_tokens: row.get(10),
                cost_nano_usd: row.get(11),
            });
        }
        add_rollup(connection, config, &rollup).await?;
    }
}

const COLUMNS: &str = "id, operation, function, service, instance, started_at, duration_us, \
    outcome, error_type, error_message, tenant_id, user_id, session_id, model, input_tokens, \
    output_tokens, cached_input_tokens, cost_nano_usd, attributes";

/// At most this many rows per statement (19 placeholders each, far below MySQL's 65,535).
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// Writes records to MySQL or MariaDB.
///
/// Columns: `CHAR(36)` ids, `DATETIME(6)` UTC times, `BIGINT UNSIGNED` counts (the full `u64`
/// range), `MEDIUMTEXT` error messages (up to 16 MiB), `JSON` attributes, `utf8mb4` text. Limits
/// the database enforces (255 characters for `operation`, `tenant_id`, `model`, ...) are errors,
/// never silent truncation.
pub struct MySqlSink {
    options: MySqlConnectOptions,
    config: SqlConfig,
    target: String,
    pool: Option<(MySqlPool, usize)>,
}

impl fmt::Debug for MySqlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlSink")
            .field("database", &self.target)
            .field("table", &self.config.records_table())
            .finish_non_exhaustive()
    }
}

impl MySqlSink {
    /// Connects to `url` (`mysql://user:password@host:3306/database`) and brings the schema up to
    /// date. The worker opens its own connection later, on its own runtime.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, SqlConfig::new()).await
    }

    /// [`connect`](Self::connect) with a table prefix.
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let options = MySqlConnectOptions::from_str(url).map_err(|error| Error::InvalidUrl {
            url: redact_url(url),
            reason: error.to_string(),
        })?;
        let target = sql::describe(
            "mysql",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(""),
        );
        let sink = MySqlSink {
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

    /// The database, as `mysql://user@host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn open(&self) -> Result<MySqlConnection, Error> {
        sql::resolve(
            self.options.get_host(),
            self.options.get_port(),
            &self.target,
        )
        .await?;
        sql::with_connect_timeout(&self.target, async {
            let mut connection = MySqlConnection::connect_with(&self.options)
                .await
                .map_err(|error| Error::database(connect_step(&error), &self.target, error))?;
            strict(&mut connection)
                .await
                .map_err(|error| Error::database(DbStep::Connect, &self.target, error))?;
            Ok(connection)
        })
        .await
    }

    /// The worker's pool, and the bytes one statement may carry (half of `max_allowed_packet`).
    async fn pool(&mut self) -> Result<(MySqlPool, usize), Error> {
        if let Some((pool, budget)) = &self.pool {
            return Ok((pool.clone(), *budget));
        }
        sql::resolve(
            self.options.get_host(),
            self.options.get_port(),
            &self.target,
        )
        .await?;
        let pool = MySqlPoolOptions::new()
            .max_connections(self.config.connections() as u32)
            .acquire_timeout(sql::CONNECT_TIMEOUT)
            .after_connect(|connection, _| Box::pin(strict(connection)))
            .connect_with(self.options.clone())
            .await
            .map_err(|error| Error::database(connect_step(&error), &self.target, error))?;
        let packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
            .fetch_one(&pool)
            .await
            .map_err(|error| Error::database(DbStep::Read, &self.target, error))?;
        let budget = usize::try_from(packet / 2)
            .unwrap_or(usize::MAX)
            .max(64 * 1024);
        self.pool = Some((pool.clone(), budget));
        Ok((pool, budget))
    }

    /// Startup verification: resolves, connects, logs in, migrates, writes a probe record, reads
    /// it back and deletes it. Each failure names its step and the database, never the password.
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let mut clock = StepClock::new();
        sql::resolve(
            self.options.get_host(),
            self.options.get_port(),
            &self.target,
        )
        .await?;
        clock.done(DbStep::Resolve);
        let mut connection = self.open().await?;
        clock.done(DbStep::Authenticate);
        let fail = |step| move |error: sqlx::Error| Error::database(step, &self.target, error);
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut connection)
            .await
            .map_err(fail(DbStep::Read))?;
        migrate(&mut connection, &self.config, &self.target).await?;
        clock.done(DbStep::Migrate);
        let probe = super::probe_record();
        let table = self.config.records_table();
        let mut tx = connection.begin().await.map_err(fail(DbStep::Write))?;
        insert_rows(
            &mut tx,
            &table,
            std::slice::from_ref(&probe),
            uuid::Uuid::now_v7(),
        )
        .await
        .map_err(fail(DbStep::Write))?;
        tx.commit().await.map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Write);
        let id = probe.id.hyphenated().to_string();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT operation FROM {table} WHERE id = ?"
        )))
        .bind(&id)
        .fetch_optional(&mut connection)
        .await
        .map_err(fail(DbStep::Read))?;
        match row {
            Some(row) if row.get::<String, _>(0) == probe.operation => {}
            _ => {
                return Err(Error::database(
                    DbStep::Read,
                    &self.target,
                    "the probe record written was not read back",
                ))
            }
        }
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id = ?")))
            .bind(&id)
            .execute(&mut connection)
            .await
            .map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Read);
        let _ = connection.close().await;
        Ok(clock.report(&self.target, version))
    }
}

/// Strict mode for the session, whatever the server's default: a value too long for its column
/// is an error (and the record is quarantined), never silently truncated.
async fn strict(connection: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "SET SESSION sql_mode = \
         CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')",
    )
    .execute(connection)
    .await
    .map(|_| ())
}

/// Access denied (1045) and its relatives are `authenticate`; everything else on the way in is
/// `connect` (a refused port, an unknown database).
fn connect_step(error: &sqlx::Error) -> DbStep {
    match error {
        sqlx::Error::Database(db)
            if matches!(
                db.code().as_deref(),
                Some("28000") | Some("1045") | Some("1698")
            ) =>
        {
            DbStep::Authenticate
        }
        _ => DbStep::Connect,
    }
}

async fn migrate(
    connection: &mut MySqlConnection,
    config: &SqlConfig,
    target: &str,
) -> Result<(), Error> {
    let fail = |error: sqlx::Error| Error::database(DbStep::Migrate, target, error);
    let migrations = config.migrations_table();
    // DDL is not transactional in MySQL: a named lock keeps migrators one at a time.
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
        .bind(&migrations)
        .fetch_one(&mut *connection)
        .await
        .map_err(fail)?;
    if locked != Some(1) {
        return Err(Error::database(
            DbStep::Migrate,
            target,
            "another process held the migration lock for 30 s",
        ));
    }
    let result = async {
        // Checked first, so a user who may not create tables can still run an up-to-date schema.
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(&migrations)
        .fetch_one(&mut *connection)
        .await?;
        if exists == 0 {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE {migrations} (
                     version     BIGINT       NOT NULL PRIMARY KEY,
                     description VARCHAR(255) NOT NULL,
                     applied_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                 ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
            )))
            .execute(&mut *connection)
            .await?;
        }
        for migration in MIGRATIONS {
            let applied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT version FROM {migrations} WHERE version = ?"
            )))
            .bind(migration.version)
            .fetch_optional(&mut *connection)
            .await?;
            if applied.is_some() {
                continue;
            }
            if !migration.sql.is_empty() {
                sqlx::raw_sql(AssertSqlSafe(migration.sql_for(config)))
                    .execute(&mut *connection)
                    .await?;
            }
            if migration.version == ROLLUPS {
                backfill(&mut *connection, config).await?;
            }
            if migration.version == DAILY {
                upgrade_rollups(&mut *connection, config).await?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {migrations} (version, description) VALUES (?, ?)"
            )))
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *connection)
            .await?;
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&migrations)
        .execute(&mut *connection)
        .await;
    result.map_err(fail)?;
    // `CREATE TABLE IF NOT EXISTS` accepts any table of that name: check its columns.
    let table = config.records_table();
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&table)
    .fetch_all(&mut *connection)
    .await
    .map_err(fail)?;
    let missing: Vec<&str> = COLUMNS
        .split(", ")
        .map(str::trim)
        .filter(|column| !present.iter().any(|p| p.eq_ignore_ascii_case(column)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::database(
            DbStep::Migrate,
            target,
            format!(
                "table `{table}` exists without the columns {}",
                missing.join(", ")
            ),
        ))
    }
}

/// Roughly the bytes a row adds to a statement.
fn row_bytes(record: &UsageRecord) -> usize {
    let text = |s: Option<&str>| s.map_or(0, str::len);
    200 + record.operation.len()
        + record.function.len()
        + record.service.len()
        + record.instance.len()
        + text(record.error_type.as_deref())
        + text(record.error_message.as_deref())
        + text(record.tenant_id.as_deref())
        + text(record.model.as_deref())
        + serde_json::to_string(&record.attributes).map_or(0, |json| json.len())
}

/// Inserts `rows`, each carrying `write_id`; returns the affected rows: 1 per new row, 2 per row
/// already stored (its `replays` goes up).
async fn insert_rows(
    connection: &mut MySqlConnection,
    table: &str,
    rows: &[UsageRecord],
    write_id: uuid::Uuid,
) -> Result<u64, sqlx::Error> {
    let mut insert: QueryBuilder<MySql> =
        QueryBuilder::new(format!("INSERT INTO {table} ({COLUMNS}, write_id) "));
    insert.push_values(rows, |mut row, record| {
        // Text is bound by reference (sqlx copies it once, into its arguments), and the
        // attributes are serialised from the map without cloning it first.
        row.push_bind(record.id.hyphenated().to_string())
            .push_bind(record.operation.as_ref())
            .push_bind(record.function.as_ref())
            .push_bind(record.service.as_ref())
            .push_bind(record.instance.as_ref())
            .push_bind(
                record
                    .started_at
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string(),
            )
            .push_bind(u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX))
            .push_bind(record.outcome.as_str())
            .push_bind(record.error_type.as_deref())
            .push_bind(record.error_message.as_deref())
            .push_bind(record.tenant_id.as_deref())
            .push_bind(record.user_id.map(|id| id.hyphenated().to_string()))
            .push_bind(record.session_id.map(|id| id.hyphenated().to_string()))
            .push_bind(record.model.as_deref())
            .push_bind(record.input_tokens)
            .push_bind(record.output_tokens)
            .push_bind(record.cached_input_tokens)
            .push_bind(record.cost_nano_usd)
            .push_bind(
                serde_json::to_string(&record.attributes).unwrap_or_else(|_| String::from("{}")),
            )
            .push_bind(write_id.as_bytes().as_slice());
    });
    insert.push(" ON DUPLICATE KEY UPDATE replays = replays + 1");
    let done = insert.build().execute(connection).await?;
    Ok(done.rows_affected())
}

impl Sink for MySqlSink {
    async fn prune(&mut self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, Error> {
        let (pool, _) = self.pool().await?;
        sql::prune_in_chunks!(self, &pool, sql::Dialect::MySql, before)
    }

    async fn register(
        &mut self,
        service: &str,
        operations: &[&'static crate::catalog::Operation],
    ) -> Result<(), Error> {
        let (pool, _) = self.pool().await?;
        let now = chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        let fail = |error: sqlx::Error| Error::database(DbStep::Write, &self.target, error);
        for chunk in operations.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "INSERT INTO {} (operation_key, service, operation, function, file, line, \
                 first_seen, last_seen) ",
                self.config.operations_table()
            ));
            upsert.push_values(chunk, |mut row, op| {
                let key = format!("{service}\u{1f}{}\u{1f}{}", op.name(), op.function());
                let key = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes());
                row.push_bind(key.as_bytes().to_vec())
                    .push_bind(service.to_owned())
                    .push_bind(op.name())
                    .push_bind(op.function())
                    .push_bind(op.file())
                    .push_bind(op.line())
                    .push_bind(now.clone())
                    .push_bind(now.clone());
            });
            upsert.push(
                " ON DUPLICATE KEY UPDATE file = VALUES(file), line = VALUES(line), \
                 last_seen = VALUES(last_seen)",
            );
            upsert.build().execute(&pool).await.map_err(fail)?;
        }
        Ok(())
    }

    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let (pool, budget) = self.pool().await?;
        // Each part and its rollups commit together, the parts at once on their own connections.
        // A failed part does not cancel the others: each runs to its end, and the write says
        // which records committed (`Split::settle`). Only the worker's write timeout or shutdown
        // deadline drops the whole write; it then counts the batch as not written.
        let split = sql::Split::new(batch, self.config.connections());
        let written = futures_util::future::join_all(split.parts().map(|part| async {
            write_part(&pool, budget, &self.config, part)
                .await
                .map_err(|error| Error::database(DbStep::Write, &self.target, error))
        }))
        .await;
        split.settle(written)
    }
}

/// Writes `batch` and, from the records it actually inserted, its rollups, in one transaction.
async fn write_part(
    pool: &MySqlPool,
    budget: usize,
    config: &SqlConfig,
    batch: &[UsageRecord],
) -> Result<(), sqlx::Error> {
    let table = config.records_table();
    let mut tx = pool.begin().await?;
    // No RETURNING in MySQL. A statement whose affected rows equal its rows inserted them all
    // (a row already stored counts 2: its `replays` changes), one with twice as many inserted
    // none. Only a statement with some of each is read back: each row this transaction inserts
    // carries its write id (a row already present keeps the one of the write that made it), so
    // only what it inserted is rolled up and a replayed record counts once. (Reading the present
    // ids with a locking read first took gap locks, which deadlocked concurrent writers'
    // inserts.)
    let write_id = uuid::Uuid::now_v7();
    let mut inserted = std::collections::HashSet::new();
    let mut mixed = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        // Grow the statement until the next row would pass the packet budget.
        let mut end = start;
        let mut bytes = 0;
        while end < batch.len() && end - start < MAX_ROWS_PER_STATEMENT {
            let next = row_bytes(&batch[end]);
            if end > start && bytes + next > budget {
                break;
            }
            bytes += next;
            end += 1;
        }
        let statement = &batch[start..end];
        let affected = insert_rows(&mut tx, &table, statement, write_id).await?;
        let rows = statement.len() as u64;
        match affected.checked_sub(rows) {
            Some(0) => inserted.extend(statement.iter().map(|record| record.id)),
            Some(replays) if replays == rows => {}
            _ => mixed.push(statement),
        }
        start = end;
    }
    for statement in mixed {
        let mut select: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT id FROM {table} WHERE write_id = "));
        select.push_bind(write_id.as_bytes().to_vec());
        select.push(" AND id IN (");
        let mut ids = select.separated(", ");
        for record in statement {
            ids.push_bind(record.id.hyphenated().to_string());
        }
        select.push(")");
        for row in select.build().fetch_all(&mut *tx).await? {
            let id: String = row.get(0);
            let id =
                uuid::Uuid::parse_str(&id).map_err(|error| sqlx::Error::Decode(error.into()))?;
            inserted.insert(id);
        }
    }
    // `remove`: a record repeated within the batch counts once too.
    let rollup = Rollup::of(batch.iter().filter(|record| inserted.remove(&record.id)));
    if !rollup.is_empty() {
        add_rollup(&mut tx, config, &rollup).await?;
    }
    tx.commit().await
}
