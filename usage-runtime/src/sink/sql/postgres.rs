//! PostgreSQL: one `INSERT ... SELECT FROM UNNEST(...)` statement per batch, or per part of a
//! large batch written at once over the write connections (one round trip, a prepared statement
//! reused across batches), idempotent with `ON CONFLICT (id) DO NOTHING`; native `uuid`,
//! `timestamptz` and `jsonb` columns.

use std::collections::HashSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::connect::Endpoint;
use super::dialect::{statements, Dialect, MigrationLock, Options};
use super::values::{attributes_without_nul, clamp, without_nul};
use super::{rollup_columns, rollup_sums, sql_sink, Migration, SqlConfig, RECORD_COLUMNS};
use crate::call::catalog::Operation;
use crate::error::DbStep;
use crate::record::UsageRecord;
use crate::rollup::{compact_when, compacted, encode_latency, Rollup, RollupKey, RollupSums, Tier};

/// A rollup table (`{table}`, its hour or day in the `{time}` column): both tiers have one
/// shape.
const ROLLUP_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS {prefix}{table} (
    {time} timestamptz NOT NULL,
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
    PRIMARY KEY ({time}, service, operation, tenant_id, model, outcome)
)"#;

const MIGRATIONS: &[Migration] = &[Migration::sql(
    1,
    "usage_records",
    r#"
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
)];

sql_sink!(
    /// Writes records to PostgreSQL (feature `postgres`).
    ///
    /// Values are stored as given, except: NUL characters (which PostgreSQL rejects in `text`
    /// and `jsonb`) become U+FFFD, and token counts above `i64::MAX` are stored as `i64::MAX`.
    PostgresSink,
    Postgres,
    "postgres://user:password@host:5432/database"
);

/// PostgreSQL's SQL.
#[derive(Debug)]
pub(crate) struct Postgres;

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Limits = ();

    const SINK: &'static str = "PostgresSink";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    const SHARED_VERSIONS: [i64; 5] = [2, 3, 4, 5, 6];
    const ROLLUP_TABLE: &'static str = ROLLUP_TABLE;
    const CATALOG_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {prefix}usage_operations (\
     service text NOT NULL, operation text NOT NULL, function text NOT NULL, file text NOT NULL, \
     line integer NOT NULL, first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, \
     PRIMARY KEY (service, operation, function))";
    const LOCK: MigrationLock =
        MigrationLock::OneTransaction("SELECT pg_advisory_xact_lock(hashtext($1))");
    const VERSION: &'static str = "SELECT version()";
    const TABLE_EXISTS: &'static str = "SELECT CAST(to_regclass($1) AS text)";
    const HORIZON_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {prefix}usage_pruned (\
         name text PRIMARY KEY, pruned_before timestamptz NOT NULL)";
    // Conflicts with the prune's UPDATE (`FOR KEY SHARE` would not).
    const SHARE_LOCK: &'static str = " FOR SHARE";
    const AS_TEXT: &'static str = "CAST({column} AS text)";
    const TIME_AS_TEXT: &'static str =
        "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
    const HEX: &'static str = "encode({column}, 'hex')";
    // The table the search path finds, as `TABLE_EXISTS` does.
    const COLUMNS_OF: &'static str = "SELECT CAST(attname AS text) FROM pg_attribute \
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped";
    const COUNT_TYPE: &'static str = "bigint";
    const SUM_TYPE: &'static str = "bigint NOT NULL DEFAULT 0";
    const LABEL_TYPE: &'static str = "text";
    const MIGRATIONS_TABLE: &'static str = "CREATE TABLE {table} (version bigint PRIMARY KEY, \
         description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

    fn options(url: &str) -> Result<Options<Self>, sqlx::Error> {
        PgConnectOptions::from_str(url)
    }

    /// PostgreSQL's database defaults to the user's name.
    fn endpoint(options: &Options<Self>) -> Option<Endpoint<'_>> {
        let (user, server) = (
            options.get_username(),
            (options.get_host(), options.get_port()),
        );
        let database = options.get_database().unwrap_or(user);
        Some(Endpoint::new("postgres", user, server, database))
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

    fn pool_options(config: &SqlConfig) -> PgPoolOptions {
        PgPoolOptions::new().max_connections(config.write_connections as u32)
    }

    async fn limits(_: &mut PgConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn id_param(n: usize) -> String {
        format!("${n}::uuid")
    }

    fn time_param(n: usize) -> String {
        format!("CAST(${n} AS timestamptz)")
    }

    fn time_text(at: DateTime<Utc>) -> String {
        at.to_rfc3339()
    }

    fn prune_statement(table: &str, chunk: u64) -> String {
        format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE started_at < CAST($1 AS timestamptz) LIMIT {chunk})"
        )
    }

    /// The batch as 25 column arrays bound to one UNNEST statement, with native types.
    async fn insert(
        connection: &mut PgConnection,
        config: &SqlConfig,
        (): (),
        records: &[UsageRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        let statement = format!(
            "INSERT INTO {table} ({RECORD_COLUMNS}) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::timestamptz[], $7::int8[], $8::text[], $9::text[], $10::text[], \
                         $11::text[], $12::uuid[], $13::uuid[], $14::text[], $15::int8[], \
                         $16::int8[], $17::int8[], $18::int8[], $19::int8[], $20::int8[], \
                         $21::int8[], $22::int8[], $23::int8[], $24::text[], $25::jsonb[]) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
            table = config.records_table(),
        );
        bind_records(&statement, records)
            .fetch_all(connection)
            .await
            .map(|rows| rows.iter().map(|row| row.get(0)).collect())
    }

    /// Both tiers in one statement.
    async fn add_rollup(
        connection: &mut PgConnection,
        config: &SqlConfig,
        rollup: &Rollup,
    ) -> Result<(), sqlx::Error> {
        add_rollup(connection, config, rollup).await
    }

    async fn register(
        connection: &mut PgConnection,
        config: &SqlConfig,
        (service, operations): (&str, &[&'static Operation]),
    ) -> Result<(), sqlx::Error> {
        let table = config.operations_table();
        let column = |f: fn(&Operation) -> &'static str| -> Vec<String> {
            operations
                .iter()
                .map(|op| without_nul(f(op)).into_owned())
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
        .bind(without_nul(service).into_owned())
        .bind(column(|op| op.name()))
        .bind(column(|op| op.function()))
        .bind(column(|op| op.file()))
        .bind(
            operations
                .iter()
                .map(|op| op.line() as i32)
                .collect::<Vec<_>>(),
        )
        .execute(connection)
        .await
        .map(|_| ())
    }

    async fn before_upgrade(
        connection: &mut PgConnection,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error> {
        Self::raw(
            connection,
            format!(
                "ALTER TABLE {} ADD COLUMN latency bytea NOT NULL DEFAULT '\\x', \
             ADD COLUMN latency_base bigint NOT NULL DEFAULT 0",
                config.rollups_table(),
            ),
        )
        .await
    }

    statements!();
}

/// A statement over the 25 record columns as arrays (`$1` to `$25`), bound with native types.
/// Text and attributes are borrowed from the records unless a NUL has to be replaced.
fn bind_records<'a>(
    statement: &'a str,
    batch: &'a [UsageRecord],
) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn column<'a, T>(batch: &'a [UsageRecord], f: impl Fn(&'a UsageRecord) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    let text = |text: &'a str| without_nul(text);
    let opt_text = |text: Option<&'a str>| text.map(without_nul);
    let count = |count: Option<u64>| count.map(clamp);
    sqlx::query(AssertSqlSafe(statement))
        .bind(column(batch, |r| r.id))
        .bind(column(batch, |r| text(&r.operation)))
        .bind(column(batch, |r| text(&r.function)))
        .bind(column(batch, |r| text(&r.service)))
        .bind(column(batch, |r| text(&r.instance)))
        .bind(column(batch, |r| r.started_at))
        .bind(column(batch, |r| {
            clamp(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX))
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
        .bind(column(batch, |r| count(r.cache_creation_input_tokens)))
        .bind(column(batch, |r| count(r.cache_creation_1h_input_tokens)))
        .bind(column(batch, |r| count(r.reasoning_tokens)))
        .bind(column(batch, |r| count(r.audio_input_tokens)))
        .bind(column(batch, |r| count(r.audio_output_tokens)))
        .bind(column(batch, |r| r.cost_nano_usd))
        .bind(column(batch, |r| opt_text(r.price_id.as_deref())))
        .bind(column(batch, |r| {
            sqlx::types::Json(attributes_without_nul(&r.attributes))
        }))
}

/// Adds `rollup` to both rollup tables in one statement (in the caller's transaction): sums
/// added, each histogram appended (a concatenation is a sum). Rows whose histogram grew well past
/// its last canonical size ([`compact_when`]) come back with it and are rewritten in canonical
/// form, in one more statement, while the transaction still holds their lock.
async fn add_rollup(
    connection: &mut PgConnection,
    config: &SqlConfig,
    rollup: &Rollup,
) -> Result<(), sqlx::Error> {
    // Keys as stored (NUL replaced); keys that become equal are added together.
    let rollup = rollup.map_text(|text| without_nul(text).into_owned());
    let key = RollupKey::COLUMNS;
    let upsert = |tier: Tier, first: usize| {
        let table = config.tier_table(tier);
        let time = tier.column();
        let sums = rollup_sums(|c| {
            format!("LEAST({table}.{c}::numeric + EXCLUDED.{c}, 9223372036854775807)::int8")
        });
        // The time, the key's texts, the sums, the histogram and its length, as arrays.
        let types = std::iter::once("timestamptz")
            .chain(key.split(", ").map(|_| "text"))
            .chain(RollupSums::COLUMNS.map(|_| "int8"))
            .chain(["bytea", "int8"]);
        let arrays: Vec<String> = types
            .zip(first..)
            .map(|(ty, n)| format!("${n}::{ty}[]"))
            .collect();
        format!(
            "INSERT INTO {table} ({time}, {columns}) \
             SELECT * FROM UNNEST({arrays}) \
             ON CONFLICT ({time}, {key}) DO UPDATE SET {sums}, \
             latency = {table}.latency || EXCLUDED.latency \
             RETURNING {time} AS start, {key}, \
                       CASE WHEN {long} THEN latency END AS long",
            columns = rollup_columns(),
            arrays = arrays.join(", "),
            long = compact_when("length(latency)")
        )
    };
    let statement = format!(
        "WITH hours AS ({}), days AS ({}) \
         SELECT 'hour', start, {key}, long FROM hours WHERE long IS NOT NULL \
         UNION ALL SELECT 'day', start, {key}, long FROM days WHERE long IS NOT NULL",
        upsert(Tier::Hour, 1),
        upsert(Tier::Day, 1 + BINDS_PER_TIER)
    );
    let mut query = sqlx::query(AssertSqlSafe(statement));
    for (_, rows) in rollup.tiers() {
        let keys =
            |f: &dyn Fn(&RollupKey) -> String| -> Vec<String> { rows.keys().map(f).collect() };
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
            .bind(keys(&|k| k.outcome.to_owned()));
        for sum in 0..RollupSums::COLUMNS.len() {
            query = query.bind(
                rows.values()
                    .map(|cell| cell.sums.values()[sum])
                    .collect::<Vec<i64>>(),
            );
        }
        query = query.bind(latencies).bind(bases);
    }
    // The rows to rewrite came back with their histograms (locked by the upsert).
    let long = query.fetch_all(&mut *connection).await?;
    for tier in [Tier::Hour, Tier::Day] {
        let mut keys: Vec<StoredKey> = Vec::new();
        let mut compact: Vec<Vec<u8>> = Vec::new();
        let table = config.tier_table(tier);
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

/// Arrays bound per rollup tier: the time, five key texts, the sums, the histogram and its
/// length.
const BINDS_PER_TIER: usize = 1 + 5 + RollupSums::COLUMNS.len() + 2;

/// The six key columns of a rollup row.
type StoredKey = (
    chrono::DateTime<chrono::Utc>,
    String,
    String,
    String,
    String,
    String,
);

#[cfg(test)]
mod tests {
    use crate::error::Error;

    /// libpq's `key = value` form is refused with a named error that never shows the password,
    /// whatever spacing or quoting holds it.
    #[tokio::test]
    async fn a_key_value_connection_string_is_refused_without_its_password() {
        for conninfo in [
            "host=db user=app password = hunter2",
            "host=db user=app password='hunter 2'",
            "host=db password =  'it\\'s hunter2' dbname=usage",
        ] {
            let error = super::PostgresSink::connect(conninfo).await.unwrap_err();
            assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(!shown.contains("hunter"), "{conninfo}: {shown}");
            }
        }
    }
}
