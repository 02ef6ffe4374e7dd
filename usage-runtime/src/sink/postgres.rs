//! PostgreSQL through sqlx: one `INSERT ... SELECT FROM UNNEST(...)` statement per batch (one
//! round trip, a prepared statement reused across batches), idempotent with
//! `ON CONFLICT (id) DO NOTHING`; native `uuid`, `timestamptz` and `jsonb` columns.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::sql::{self, Migration, SqlConfig, StepClock, VerifyReport};
use super::Sink;
use crate::error::{redact_url, DbStep, Error};
use crate::record::UsageRecord;
use crate::rollup::{latency_bucket, Parts, Rollup, RollupKey, RollupSums};

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
        description: "hourly rollups (backfilled from the records)",
        sql: r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_rollups_hourly (
    hour                timestamptz NOT NULL,
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
    PRIMARY KEY (hour, service, operation, tenant_id, model, outcome)
);
CREATE TABLE IF NOT EXISTS {prefix}usage_rollup_latency (
    hour      timestamptz NOT NULL,
    service   text        NOT NULL,
    operation text        NOT NULL,
    tenant_id text        NOT NULL,
    model     text        NOT NULL,
    outcome   text        NOT NULL,
    bucket    integer     NOT NULL,
    calls     bigint      NOT NULL,
    PRIMARY KEY (hour, service, operation, tenant_id, model, outcome, bucket)
);
"#,
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
];

/// The migration that creates the rollups, after which existing records are rolled up.
const ROLLUPS: i64 = 2;

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
    /// The insert and its rollups in one statement.
    write: String,
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
        let write = write_statement(&config);
        Ok(PostgresSink {
            options,
            config,
            target,
            insert,
            write,
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
            .max_connections(1)
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

/// One statement per batch: insert the records, and from the rows actually inserted (so a
/// replayed record counts once) add to the hourly rollups and latency histograms. Sums saturate
/// at the largest `bigint` rather than fail. Latency buckets come from the client (`$20`, `$21`),
/// computed with the same function the backfill and reports use.
fn write_statement(config: &SqlConfig) -> String {
    let records = config.records_table();
    let rollups = config.rollups_table();
    let latency = config.latency_table();
    let key = "hour, service, operation, tenant_id, model, outcome";
    let saturating = |column: &str| {
        format!(
            "{column} = LEAST({rollups}.{column}::numeric + EXCLUDED.{column}, \
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
    let capped = |expression: &str| format!("LEAST({expression}, 9223372036854775807)::int8");
    format!(
        "WITH ins AS ( \
           INSERT INTO {records} ({COLUMNS}) \
           SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                       $6::timestamptz[], $7::int8[], $8::text[], $9::text[], $10::text[], \
                       $11::text[], $12::uuid[], $13::uuid[], $14::text[], $15::int8[], \
                       $16::int8[], $17::int8[], $18::int8[], $19::jsonb[]) \
           ON CONFLICT (id) DO NOTHING \
           RETURNING id, date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                     AS hour, service, operation, COALESCE(tenant_id, '') AS tenant_id, \
                     COALESCE(model, '') AS model, outcome, duration_us, input_tokens, \
                     output_tokens, cached_input_tokens, cost_nano_usd \
         ), rolled AS ( \
           INSERT INTO {rollups} ({key}, calls, input_tokens, output_tokens, \
                                  cached_input_tokens, cost_nano_usd, duration_us) \
           SELECT {key}, count(*), {}, {}, {}, {}, {} FROM ins GROUP BY {key} \
           ON CONFLICT ({key}) DO UPDATE SET {sums} \
         ) \
         INSERT INTO {latency} ({key}, bucket, calls) \
         SELECT ins.hour, ins.service, ins.operation, ins.tenant_id, ins.model, ins.outcome, \
                b.bucket, count(*) \
         FROM ins JOIN UNNEST($20::uuid[], $21::int4[]) AS b(id, bucket) USING (id) \
         GROUP BY ins.hour, ins.service, ins.operation, ins.tenant_id, ins.model, ins.outcome, \
                  b.bucket \
         ON CONFLICT ({key}, bucket) DO UPDATE \
         SET calls = {latency}.calls + EXCLUDED.calls",
        capped("COALESCE(sum(input_tokens), 0)"),
        capped("COALESCE(sum(output_tokens), 0)"),
        capped("COALESCE(sum(cached_input_tokens), 0)"),
        capped("COALESCE(sum(cost_nano_usd), 0)"),
        capped("sum(duration_us)"),
    )
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
        sqlx::raw_sql(AssertSqlSafe(migration.sql_for(config)))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        if migration.version == ROLLUPS {
            backfill(&mut tx, config).await.map_err(fail)?;
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

/// Writes `batch` and its rollups with the [`write_statement`].
async fn write_with_rollups(
    connection: &mut PgConnection,
    statement: &str,
    batch: &[UsageRecord],
) -> Result<(), sqlx::Error> {
    // Each id once: a record repeated within the batch is inserted and counted once.
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let (ids, buckets): (Vec<uuid::Uuid>, Vec<i32>) = batch
        .iter()
        .filter(|record| seen.insert(record.id))
        .map(|record| {
            let micros = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
            (record.id, latency_bucket(micros) as i32)
        })
        .unzip();
    bind_records(statement, batch)
        .bind(ids)
        .bind(buckets)
        .execute(connection)
        .await
        .map(|_| ())
}

/// A statement over the 19 record columns as arrays (`$1` to `$19`), bound with native types.
fn bind_records(
    statement: &str,
    batch: &[UsageRecord],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn column<T>(batch: &[UsageRecord], f: impl Fn(&UsageRecord) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    let text = |text: &str| sql::without_nul(text).into_owned();
    let opt_text =
        |text: &Option<String>| text.as_deref().map(|t| sql::without_nul(t).into_owned());
    let count = |count: Option<u64>| count.map(sql::clamp);
    sqlx::query(AssertSqlSafe(statement.to_owned()))
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
        .bind(column(batch, |r| opt_text(&r.error_type)))
        .bind(column(batch, |r| opt_text(&r.error_message)))
        .bind(column(batch, |r| opt_text(&r.tenant_id)))
        .bind(column(batch, |r| r.user_id))
        .bind(column(batch, |r| r.session_id))
        .bind(column(batch, |r| opt_text(&r.model)))
        .bind(column(batch, |r| count(r.input_tokens)))
        .bind(column(batch, |r| count(r.output_tokens)))
        .bind(column(batch, |r| count(r.cached_input_tokens)))
        .bind(column(batch, |r| r.cost_nano_usd))
        .bind(column(batch, |r| {
            sql::json_without_nul(&serde_json::Value::Object(r.attributes.clone()))
        }))
}

/// Adds `rollup` to the rollup tables, in the caller's transaction.
async fn add_rollup(
    connection: &mut PgConnection,
    config: &SqlConfig,
    rollup: &Rollup,
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = rollup.rows.iter().collect();
    let keys = |f: &dyn Fn(&RollupKey) -> String| -> Vec<String> {
        rows.iter().map(|(key, _)| f(key)).collect()
    };
    let sums = |f: &dyn Fn(&RollupSums) -> i64| -> Vec<i64> {
        rows.iter().map(|(_, sums)| f(sums)).collect()
    };
    let table = config.rollups_table();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (hour, service, operation, tenant_id, model, outcome, calls, \
         input_tokens, output_tokens, cached_input_tokens, cost_nano_usd, duration_us) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], \
                              $11::int8[], $12::int8[]) \
         ON CONFLICT (hour, service, operation, tenant_id, model, outcome) DO UPDATE SET \
         calls = {table}.calls + EXCLUDED.calls, \
         input_tokens = {table}.input_tokens + EXCLUDED.input_tokens, \
         output_tokens = {table}.output_tokens + EXCLUDED.output_tokens, \
         cached_input_tokens = {table}.cached_input_tokens + EXCLUDED.cached_input_tokens, \
         cost_nano_usd = {table}.cost_nano_usd + EXCLUDED.cost_nano_usd, \
         duration_us = {table}.duration_us + EXCLUDED.duration_us"
    )))
    .bind(rows.iter().map(|(key, _)| key.hour).collect::<Vec<_>>())
    .bind(keys(&|k| sql::without_nul(&k.service).into_owned()))
    .bind(keys(&|k| sql::without_nul(&k.operation).into_owned()))
    .bind(keys(&|k| sql::without_nul(&k.tenant_id).into_owned()))
    .bind(keys(&|k| sql::without_nul(&k.model).into_owned()))
    .bind(keys(&|k| k.outcome.to_owned()))
    .bind(sums(&|s| s.calls))
    .bind(sums(&|s| s.input_tokens))
    .bind(sums(&|s| s.output_tokens))
    .bind(sums(&|s| s.cached_input_tokens))
    .bind(sums(&|s| s.cost_nano_usd))
    .bind(sums(&|s| s.duration_us))
    .execute(&mut *connection)
    .await?;
    let latency: Vec<_> = rollup.latency.iter().collect();
    let table = config.latency_table();
    let part = |f: &dyn Fn(&RollupKey) -> String| -> Vec<String> {
        latency.iter().map(|((key, _), _)| f(key)).collect()
    };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (hour, service, operation, tenant_id, model, outcome, bucket, calls) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::int4[], $8::int8[]) \
         ON CONFLICT (hour, service, operation, tenant_id, model, outcome, bucket) \
         DO UPDATE SET calls = {table}.calls + EXCLUDED.calls"
    )))
    .bind(
        latency
            .iter()
            .map(|((key, _), _)| key.hour)
            .collect::<Vec<_>>(),
    )
    .bind(part(&|k| sql::without_nul(&k.service).into_owned()))
    .bind(part(&|k| sql::without_nul(&k.operation).into_owned()))
    .bind(part(&|k| sql::without_nul(&k.tenant_id).into_owned()))
    .bind(part(&|k| sql::without_nul(&k.model).into_owned()))
    .bind(part(&|k| k.outcome.to_owned()))
    .bind(
        latency
            .iter()
            .map(|((_, bucket), _)| *bucket as i32)
            .collect::<Vec<_>>(),
    )
    .bind(latency.iter().map(|(_, calls)| **calls).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
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
        add_rollup(connection, config, &rollup).await?;
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
        let mut connection = pool
            .acquire()
            .await
            .map_err(|error| Error::database(connect_step(&error), &self.target, error))?;
        // One statement, so one transaction: the records and their rollups commit together.
        write_with_rollups(&mut connection, &self.write, batch)
            .await
            .map_err(|error| Error::database(DbStep::Write, &self.target, error))
    }
}
