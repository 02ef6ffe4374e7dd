//! PostgreSQL through sqlx: one `INSERT ... SELECT FROM UNNEST(...)` statement per batch, or per
//! part of a large batch written at once over the write connections (one round trip, a prepared
//! statement reused across batches), idempotent with
//! `ON CONFLICT (id) DO NOTHING`; native `uuid`, `timestamptz` and `jsonb` columns.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::sql::{self, Migration, SqlConfig, StepClock, VerifyReport};
use super::Sink;
use crate::error::{redact_url, DbStep, Error};
use crate::record::UsageRecord;
use std::collections::BTreeMap;

use crate::rollup::{
    compact_when, compacted, encode_latency, Cell, Parts, Rollup, RollupKey, RollupSums, Tier,
};

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
            r#" timestamptz NOT NULL,
    service             text        NOT NULL,
    operation           text        NOT NULL,
    tenant_id           text        NOT NULL,
    model               text        NOT NULL,
    outcome             text        NOT NULL,
    calls               bigint      NOT NULL,
    input_tokens        bigint      NOT NULL,
    output_tokens       bigint      NOT NULL,
    cached_input_tokens bigint      NOT NULL,
    cost_nano_usd       bigint      NOT NULL,
    duration_us         bigint      NOT NULL,
    latency             bytea       NOT NULL DEFAULT '\x',
    latency_base        bigint      NOT NULL DEFAULT 0,
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
    id                  uuid        PRIMARY KEY,
    operation           text        NOT NULL,
    function            text        NOT NULL,
    service             text        NOT NULL,
    instance            text        NOT NULL,
    started_at          timestamptz NOT NULL,
    duration_us         bigint      NOT NULL,
    outcome             text        NOT NULL
                        CHECK (outcome IN ('success', 'error', 'panic', 'cancelled')),
    error_type          text,
    error_message       text,
    tenant_id           text,
    user_id             uuid,
    session_id          uuid,
    model               text,
    input_tokens        bigint,
    output_tokens       bigint,
    cached_input_tokens bigint,
    cost_nano_usd       bigint,
    attributes          jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_started_at
    ON {prefix}usage_records (started_at);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_tenant_started_at
    ON {prefix}usage_records (tenant_id, started_at);
CREATE INDEX IF NOT EXISTS {prefix}usage_records_operation_started_at
    ON {prefix}usage_records (operation, started_at);
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
    service    text        NOT NULL,
    operation  text        NOT NULL,
    function   text        NOT NULL,
    file       text        NOT NULL,
    line       integer     NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
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
const ROLLUPS: i64 = 2;

/// The migration that adds the daily tier and moves the latency histograms into the rollup rows.
const DAILY: i64 = 4;

const COLUMNS: &str = "id, operation, function, service, instance, started_at, duration_us, \
    outcome, error_type, error_message, tenant_id, user_id, session_id, model, input_tokens, \
    output_tokens, cached_input_tokens, cost_nano_usd, attributes";

/// Writes records to PostgreSQL.
///
/// Values are stored as given, except: NUL characters (which PostgreSQL rejects in `text` and
/// `jsonb`) become U+FFFD, and token counts above `i64::MAX` are stored as `i64::MAX`.
pub struct PostgresSink {
    options: PgConnectOptions,
    config: SqlConfig,
    target: String,
    insert: String,
    pool: Option<PgPool>,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("database", &self.target)
            .field("table", &self.config.records_table())
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// Connects to `url` (`postgres://user:password@host:5432/database`) and brings the schema up
    /// to date. The worker opens its own connection later, on its own runtime.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, SqlConfig::new()).await
    }

    /// [`connect`](Self::connect) with a table prefix.
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let sink = Self::new(url, config)?;
        let mut connection = sink.open().await?;
        migrate(&mut connection, &sink.config, &sink.target).await?;
        let _ = connection.close().await;
        Ok(sink)
    }

    fn new(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(url).map_err(|error| Error::InvalidUrl {
            url: redact_url(url),
            reason: error.to_string(),
        })?;
        let target = sql::describe(
            "postgres",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
        );
        let insert = format!(
            "INSERT INTO {table} ({COLUMNS}) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::timestamptz[], $7::int8[], $8::text[], $9::text[], $10::text[], \
                         $11::text[], $12::uuid[], $13::uuid[], $14::text[], $15::int8[], \
                         $16::int8[], $17::int8[], $18::int8[], $19::jsonb[]) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
            table = config.records_table(),
        );
        Ok(PostgresSink {
            options,
            config,
            target,
            insert,
            pool: None,
        })
    }

    /// The database, as `postgres://user@host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Resolves the host, connects and logs in, each step a named error.
    async fn open(&self) -> Result<PgConnection, Error> {
        sql::resolve(
            self.options.get_host(),
            self.options.get_port(),
            &self.target,
        )
        .await?;
        sql::with_connect_timeout(&self.target, async {
            PgConnection::connect_with(&self.options)
                .await
                .map_err(|error| Error::database(connect_step(&error), &self.target, error))
        })
        .await
    }

    async fn pool(&mut self) -> Result<PgPool, Error> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        sql::resolve(
            self.options.get_host(),
            self.options.get_port(),
            &self.target,
        )
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(self.config.connections() as u32)
            .acquire_timeout(sql::CONNECT_TIMEOUT)
            .connect_with(self.options.clone())
            .await
            .map_err(|error| Error::database(connect_step(&error), &self.target, error))?;
        self.pool = Some(pool.clone());
        Ok(pool)
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
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut connection)
            .await
            .map_err(fail(DbStep::Read))?;
        migrate(&mut connection, &self.config, &self.target).await?;
        clock.done(DbStep::Migrate);
        let probe = super::probe_record();
        insert(&mut connection, &self.insert, std::slice::from_ref(&probe))
            .await
            .map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Write);
        let table = self.config.records_table();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT operation FROM {table} WHERE id = $1::uuid"
        )))
        .bind(probe.id.hyphenated().to_string())
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
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id = $1::uuid"
        )))
        .bind(probe.id.hyphenated().to_string())
        .execute(&mut connection)
        .await
        .map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Read);
        let _ = connection.close().await;
        Ok(clock.report(&self.target, version))
    }
}

/// Login failures (SQLSTATE class 28) are `authenticate`; everything else on the way in is
/// `connect` (a refused port, a missing database).
fn connect_step(error: &sqlx::Error) -> DbStep {
    match error {
        sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("28")) => {
            DbStep::Authenticate
        }
        _ => DbStep::Connect,
    }
}

async fn migrate(
    connection: &mut PgConnection,
    config: &SqlConfig,
    target: &str,
) -> Result<(), Error> {
    let fail = |error: sqlx::Error| Error::database(DbStep::Migrate, target, error);
    let migrations = config.migrations_table();
    let mut tx = connection.begin().await.map_err(fail)?;
    // One migrator at a time, across processes.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(&migrations)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    // Checked first, so a user who may not create tables can still run an up-to-date schema.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&migrations)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
    if !exists {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {migrations} (
                 version     bigint      PRIMARY KEY,
                 description text        NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )"
        )))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    }
    for migration in MIGRATIONS {
        let applied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {migrations} WHERE version = $1"
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
            "INSERT INTO {migrations} (version, description) VALUES ($1, $2)"
        )))
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)
}

/// The batch as 19 column arrays, bound to the UNNEST statement with native types; returns the
/// ids it inserted (not those already present).
async fn insert(
    connection: &mut PgConnection,
    statement: &str,
    batch: &[UsageRecord],
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    bind_records(statement, batch)
        .fetch_all(connection)
        .await
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
}

/// Writes `batch` and, from the records actually inserted (so a replayed record counts once),
/// its rollups, in one transaction.
async fn write_with_rollups(
    connection: &mut PgConnection,
    config: &SqlConfig,
    statement: &str,
    batch: &[UsageRecord],
) -> Result<(), sqlx::Error> {
    let mut tx = connection.begin().await?;
    let mut inserted: std::collections::HashSet<uuid::Uuid> = insert(&mut tx, statement, batch)
        .await?
        .into_iter()
        .collect();
    // `remove`: a record repeated within the batch counts once too.
    let rollup = Rollup::of(batch.iter().filter(|record| inserted.remove(&record.id)));
    if !rollup.is_empty() {
        add_rollup(&mut tx, config, rollup).await?;
    }
    tx.commit().await
}

/// A statement over the 19 record columns as arrays (`$1` to `$19`), bound with native types.
/// Text and attributes are borrowed from the records unless a NUL has to be replaced.
fn bind_records<'a>(
    statement: &'a str,
    batch: &'a [UsageRecord],
) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn column<'a, T>(batch: &'a [UsageRecord], f: impl Fn(&'a UsageRecord) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    let text = |text: &'a str| sql::without_nul(text);
    let opt_text = |text: Option<&'a str>| text.map(sql::without_nul);
    let count = |count: Option<u64>| count.map(sql::clamp);
    sqlx::query(AssertSqlSafe(statement))
        .bind(column(batch, |r| r.id))
        .bind(column(batch, |r| text(&r.operation)))
        .bind(column(batch, |r| text(&r.function)))
        .bind(column(batch, |r| text(&r.service)))
        .bind(column(batch, |r| text(&r.instance)))
        .bind(column(batch, |r| r.started_at))
        .bind(column(batch, |r| {
            sql::clamp(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX))
        }))
        .bind(column(batch, |r| r.outcome.as_str()))
        .bind(column(batch, |r| opt_text(r.error_type.as_deref())))
        .bind(column(batch, |r| opt_text(r.error_message.as_deref())))
        .bind(column(batch, |r| opt_text(r.tenant_id.as_deref())))
        .bind(column(batch, |r| r.user_id))
        .bind(column(batch, |r| r.session_id))
        .bind(column(batch, |r| opt_text(r.model.as_deref())))
        .bind(column(batch, |r| count(r.input_tokens)))
        .bind(column(batch, |r| count(r.output_tokens)))
        .bind(column(batch, |r| count(r.cached_input_tokens)))
        .bind(column(batch, |r| r.cost_nano_usd))
        .bind(column(batch, |r| {
            sqlx::types::Json(sql::attributes_without_nul(&r.attributes))
        }))
}

/// Adds `rollup` to both rollup tables in one statement (in the caller's transaction): sums
/// added, each histogram appended (a concatenation is a sum). Rows whose histogram grew well past
/// its last canonical size ([`compact_when`]) come back with it and are rewritten in canonical
/// form, in one more statement, while the transaction still holds their lock.
async fn add_rollup(
    connection: &mut PgConnection,
    config: &SqlConfig,
    rollup: Rollup,
) -> Result<(), sqlx::Error> {
    // Keys as stored (NUL replaced); keys that become equal are added together.
    let rollup = rollup.map_text(|text| sql::without_nul(text).into_owned());
    let key = "service, operation, tenant_id, model, outcome";
    let upsert = |tier: Tier, first: usize| {
        let table = tier.table(config);
        let time = tier.column();
        let saturating = |column: &str| {
            format!(
                "{column} = LEAST({table}.{column}::numeric + EXCLUDED.{column}, \
                 9223372036854775807)::int8"
            )
        };
        let sums = [
            "calls",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cost_nano_usd",
            "duration_us",
        ]
        .map(saturating)
        .join(", ");
        let p: Vec<String> = (first..first + 14).map(|n| format!("${n}")).collect();
        format!(
            "INSERT INTO {table} ({time}, {key}, calls, input_tokens, output_tokens, \
             cached_input_tokens, cost_nano_usd, duration_us, latency, latency_base) \
             SELECT * FROM UNNEST({}::timestamptz[], {}::text[], {}::text[], {}::text[], \
                                  {}::text[], {}::text[], {}::int8[], {}::int8[], {}::int8[], \
                                  {}::int8[], {}::int8[], {}::int8[], {}::bytea[], {}::int8[]) \
             ON CONFLICT ({time}, {key}) DO UPDATE SET {sums}, \
             latency = {table}.latency || EXCLUDED.latency \
             RETURNING {time} AS start, {key}, \
                       CASE WHEN {} THEN latency END AS long",
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6],
            p[7],
            p[8],
            p[9],
            p[10],
            p[11],
            p[12],
            p[13],
            compact_when("length(latency)")
        )
    };
    let statement = format!(
        "WITH hours AS ({}), days AS ({}) \
         SELECT 'hour', start, {key}, long FROM hours WHERE long IS NOT NULL \
         UNION ALL SELECT 'day', start, {key}, long FROM days WHERE long IS NOT NULL",
        upsert(Tier::Hour, 1),
        upsert(Tier::Day, 15)
    );
    let mut query = sqlx::query(AssertSqlSafe(statement));
    for (_, rows) in rollup.tiers() {
        let keys =
            |f: &dyn Fn(&RollupKey) -> String| -> Vec<String> { rows.keys().map(f).collect() };
        let sums = |f: &dyn Fn(&RollupSums) -> i64| -> Vec<i64> {
            rows.values().map(|cell| f(&cell.sums)).collect()
        };
        let latencies: Vec<Vec<u8>> = rows
            .values()
            .map(|cell| encode_latency(cell.latency.iter().map(|(b, c)| (*b, *c))))
            .collect();
        let bases: Vec<i64> = latencies.iter().map(|l| l.len() as i64).collect();
        query = query
            .bind(rows.keys().map(|key| key.start).collect::<Vec<_>>())
            .bind(keys(&|k| k.service.clone()))
            .bind(keys(&|k| k.operation.clone()))
            .bind(keys(&|k| k.tenant_id.clone()))
            .bind(keys(&|k| k.model.clone()))
            .bind(keys(&|k| k.outcome.to_owned()))
            .bind(sums(&|s| s.calls))
            .bind(sums(&|s| s.input_tokens))
            .bind(sums(&|s| s.output_tokens))
            .bind(sums(&|s| s.cached_input_tokens))
            .bind(sums(&|s| s.cost_nano_usd))
            .bind(sums(&|s| s.duration_us))
            .bind(latencies)
            .bind(bases);
    }
    // The rows to rewrite came back with their histograms (locked by the upsert).
    let long = query.fetch_all(&mut *connection).await?;
    for tier in [Tier::Hour, Tier::Day] {
        let mut keys: Vec<StoredKey> = Vec::new();
        let mut compact: Vec<Vec<u8>> = Vec::new();
        let table = tier.table(config);
        for row in &long {
            if (row.get::<&str, _>(0) == "hour") != (tier == Tier::Hour) {
                continue;
            }
            keys.push((
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
            ));
            compact.push(compacted(row.get::<&[u8], _>(7), &table));
        }
        if keys.is_empty() {
            continue;
        }
        let time = tier.column();
        let column = |f: fn(&StoredKey) -> String| keys.iter().map(f).collect::<Vec<_>>();
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} AS t SET latency = u.latency, latency_base = length(u.latency) \
             FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::bytea[]) \
                  AS u(start, service, operation, tenant_id, model, outcome, latency) \
             WHERE t.{time} = u.start AND t.service = u.service AND t.operation = u.operation \
               AND t.tenant_id = u.tenant_id AND t.model = u.model AND t.outcome = u.outcome"
        )))
        .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(column(|k| k.1.clone()))
        .bind(column(|k| k.2.clone()))
        .bind(column(|k| k.3.clone()))
        .bind(column(|k| k.4.clone()))
        .bind(column(|k| k.5.clone()))
        .bind(compact)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The six key columns of a rollup row.
type StoredKey = (
    chrono::DateTime<chrono::Utc>,
    String,
    String,
    String,
    String,
    String,
);

/// Adds the rows of one tier (the other left empty).
async fn add_tier(
    connection: &mut PgConnection,
    config: &SqlConfig,
    tier: Tier,
    rows: &BTreeMap<RollupKey, Cell>,
) -> Result<(), sqlx::Error> {
    let mut rollup = Rollup::default();
    match tier {
        Tier::Hour => rollup.hours = rows.clone(),
        Tier::Day => rollup.days = rows.clone(),
    }
    add_rollup(connection, config, rollup).await
}

/// Brings rollups made before the daily tier into the current shape: each hour's histogram
/// (one row per bucket in the legacy table) into its row's `latency`, the daily rows from the
/// hourly ones, then the legacy table dropped. Nothing to do when the rollups were created in
/// the current shape.
async fn upgrade_rollups(
    connection: &mut PgConnection,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let legacy = config.legacy_latency_table();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&legacy)
        .fetch_one(&mut *connection)
        .await?;
    if !exists {
        return Ok(());
    }
    let hourly = config.rollups_table();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {hourly} ADD COLUMN latency bytea NOT NULL DEFAULT '\\x', \
         ADD COLUMN latency_base bigint NOT NULL DEFAULT 0;{}",
        Migration::text(rollup_table!("usage_rollups_daily", "day"), config)
    )))
    .execute(&mut *connection)
    .await?;
    // The histograms, a day of hours at a time (sums zero: they are in the rows already).
    let mut after: Option<chrono::DateTime<chrono::Utc>> = None;
    loop {
        let hours: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT hour FROM {legacy} WHERE ($1::timestamptz IS NULL OR hour > $1) \
             ORDER BY hour LIMIT 24"
        )))
        .bind(after)
        .fetch_all(&mut *connection)
        .await?;
        let Some(&last) = hours.last() else { break };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT hour, service, operation, tenant_id, model, outcome, bucket, calls \
             FROM {legacy} WHERE ($1::timestamptz IS NULL OR hour > $1) AND hour <= $2"
        )))
        .bind(after)
        .bind(last)
        .fetch_all(&mut *connection)
        .await?;
        after = Some(last);
        let mut rollup = Rollup::default();
        for row in &rows {
            let cell = Cell::bucket(row.get::<i32, _>(6).into(), row.get(7));
            rollup.add_cell(Tier::Hour, stored_key(row)?, &cell);
        }
        add_tier(connection, config, Tier::Hour, &rollup.hours).await?;
    }
    // The daily rows, from the hourly ones, a week at a time.
    let mut after: Option<chrono::DateTime<chrono::Utc>> = None;
    loop {
        let last: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT max(hour) FROM (SELECT DISTINCT hour FROM {hourly} \
             WHERE ($1::timestamptz IS NULL OR hour > $1) ORDER BY hour LIMIT 168) AS week"
            )))
            .bind(after)
            .fetch_one(&mut *connection)
            .await?;
        let Some(last) = last else { break };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT hour, service, operation, tenant_id, model, outcome, calls, input_tokens, \
             output_tokens, cached_input_tokens, cost_nano_usd, duration_us, latency \
             FROM {hourly} WHERE ($1::timestamptz IS NULL OR hour > $1) AND hour <= $2"
        )))
        .bind(after)
        .bind(last)
        .fetch_all(&mut *connection)
        .await?;
        after = Some(last);
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
fn stored_key(row: &sqlx::postgres::PgRow) -> Result<RollupKey, sqlx::Error> {
    let outcome: String = row.get(5);
    Ok(RollupKey {
        start: row.get(0),
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

/// Rolls up the records already in the table (when the rollups are created), in chunks.
async fn backfill(connection: &mut PgConnection, config: &SqlConfig) -> Result<(), sqlx::Error> {
    let mut after = uuid::Uuid::nil();
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, started_at, service, operation, tenant_id, model, outcome, duration_us, \
             input_tokens, output_tokens, cached_input_tokens, cost_nano_usd \
             FROM {} WHERE id > $1 ORDER BY id LIMIT 10000",
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
            let outcome: String = row.get(6);
            let count = |column: usize| row.get::<Option<i64>, _>(column).map(|n| n.max(0) as u64);
            rollup.add_parts(Parts {
                started_at: row.get(1),
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
        add_rollup(connection, config, rollup).await?;
    }
}

impl Sink for PostgresSink {
    async fn prune(&mut self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, Error> {
        let pool = self.pool().await?;
        sql::prune_in_chunks!(self, &pool, sql::Dialect::Postgres, before)
    }

    async fn register(
        &mut self,
        service: &str,
        operations: &[&'static crate::catalog::Operation],
    ) -> Result<(), Error> {
        let pool = self.pool().await?;
        let table = self.config.operations_table();
        let column = |f: fn(&crate::catalog::Operation) -> &'static str| -> Vec<String> {
            operations
                .iter()
                .map(|op| sql::without_nul(f(op)).into_owned())
                .collect()
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (service, operation, function, file, line, first_seen, last_seen) \
             SELECT $1, operation, function, file, line, now(), now() \
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int4[]) \
                  AS t(operation, function, file, line) \
             ON CONFLICT (service, operation, function) DO UPDATE SET \
             file = EXCLUDED.file, line = EXCLUDED.line, last_seen = EXCLUDED.last_seen"
        )))
        .bind(sql::without_nul(service).into_owned())
        .bind(column(|op| op.name()))
        .bind(column(|op| op.function()))
        .bind(column(|op| op.file()))
        .bind(
            operations
                .iter()
                .map(|op| op.line() as i32)
                .collect::<Vec<_>>(),
        )
        .execute(&pool)
        .await
        .map(|_| ())
        .map_err(|error| Error::database(DbStep::Write, &self.target, error))
    }

    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let pool = self.pool().await?;
        // Each part and its rollups commit together, the parts at once on their own connections.
        // A failed part does not cancel the others: each runs to its end, and the write says
        // which records committed (`Split::settle`). Only the worker's write timeout or shutdown
        // deadline drops the whole write; it then counts the batch as not written.
        let split = sql::Split::new(batch, self.config.connections());
        let written = futures_util::future::join_all(split.parts().map(|part| async {
            let mut connection = pool
                .acquire()
                .await
                .map_err(|error| Error::database(connect_step(&error), &self.target, error))?;
            write_with_rollups(&mut connection, &self.config, &self.insert, part)
                .await
                .map_err(|error| Error::database(DbStep::Write, &self.target, error))
        }))
        .await;
        split.settle(written)
    }
}
