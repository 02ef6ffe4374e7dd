//! What each database does its own way, as one trait. Everything the three share (connecting,
//! verification, the migration runner, writing in parts, backfill, the rollup upgrade, prune) is
//! written once in [`core`](super::core) against it; each database's file keeps only its SQL.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::connect::Endpoint;
use super::{Migration, SqlConfig};
use crate::call::catalog::Operation;
use crate::error::DbStep;
use crate::record::UsageRecord;
use crate::rollup::{Cell, Rollup, RollupKey, Tier};

/// A database's connection.
pub(crate) type Conn<D> = <<D as Dialect>::Db as sqlx::Database>::Connection;

/// What a database's URL parses into.
pub(crate) type Options<D> = <Conn<D> as sqlx::Connection>::Options;

/// A value bound to a statement the core runs on every database.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    #[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
    Bytes(&'a [u8]),
}

/// The rows of one rollup tier.
pub(crate) type TierRows<'a> = (Tier, &'a BTreeMap<RollupKey, Cell>);

/// How migrators in several processes keep out of each other's way.
#[allow(dead_code)] // each database uses one
pub(crate) enum MigrationLock {
    /// Each migration in its own transaction, begun by this statement (SQLite's
    /// `BEGIN IMMEDIATE` takes the write lock first, waiting out the busy timeout).
    EachStep(&'static str),
    /// All migrations in one transaction that first runs this statement, the migrations table's
    /// name bound (PostgreSQL's transaction-scoped advisory lock).
    OneTransaction(&'static str),
    /// A named lock held around them, since DDL is not transactional (MySQL). `get` answers 1
    /// when it got the lock.
    Named {
        get: &'static str,
        release: &'static str,
    },
}

/// One database's SQL. Implemented by the three unit types in `sqlite.rs`, `postgres.rs` and
/// `mysql.rs`.
#[allow(async_fn_in_trait)] // crate-private; the worker's runtime is current-thread
pub(crate) trait Dialect: Sized + Send + Sync + 'static {
    type Db: sqlx::Database;
    /// What the write pool learns of the server once (MySQL: the bytes one statement may carry).
    type Limits: Copy + Send + Sync + 'static;

    /// The public sink's name, for `Debug`.
    const SINK: &'static str;
    /// The database's own SQL migrations.
    const MIGRATIONS: &'static [Migration];
    /// The version of each of [`SHARED_CHANGES`](super::SHARED_CHANGES) here: with
    /// [`MIGRATIONS`](Self::MIGRATIONS), the versions from 1 without a gap.
    const SHARED_VERSIONS: [i64; 5];
    /// A rollup table: `{prefix}{table}` its name, `{time}` its hour or day column.
    const ROLLUP_TABLE: &'static str;
    /// The operation catalog's table (`{prefix}` the table prefix).
    const CATALOG_TABLE: &'static str;
    const LOCK: MigrationLock;
    /// A statement answering the server's version.
    const VERSION: &'static str;
    /// A statement answering how many tables named by its one parameter exist.
    const TABLE_EXISTS: &'static str;
    /// The pruned horizon's table (`{prefix}`: the table prefix): `name` text key,
    /// `pruned_before` a time.
    const HORIZON_TABLE: &'static str;
    /// What makes a `SELECT` take a shared lock on the rows it reads (none where a write
    /// transaction already excludes every other writer, see [`Dialect::BEGIN_WRITE`]).
    const SHARE_LOCK: &'static str = "";
    /// The statement beginning a write transaction, when not the driver's plain `BEGIN`.
    const BEGIN_WRITE: Option<&'static str> = None;
    /// Where DDL is not transactional (and migrations run in no transaction): the statements,
    /// `{hourly}` and `{daily}` standing for the tables, that empty what the rollup upgrade
    /// fills, run in the upgrade's own transaction before it, so an interrupted one is redone.
    const UPGRADE_RESET: Option<&'static str> = None;

    fn options(url: &str) -> Result<Options<Self>, sqlx::Error>;
    /// The server: what errors and `Debug` show (else the URL without its password), and the
    /// host resolved before connecting. `None` for a file.
    fn endpoint(options: &Options<Self>) -> Option<Endpoint<'_>> {
        let _ = options;
        None
    }
    /// Which step a failure to connect belongs to (a refused login is `authenticate`).
    fn connect_step(error: &sqlx::Error) -> DbStep {
        let _ = error;
        DbStep::Connect
    }
    /// The version as the verification report shows it.
    fn server_version(version: String) -> String {
        version
    }
    /// The worker's pool.
    fn pool_options(config: &SqlConfig) -> sqlx::pool::PoolOptions<Self::Db>;
    /// Connections one batch is written over at once.
    fn writers(config: &SqlConfig) -> usize {
        config.write_connections
    }
    /// Whether the pool's connection is migrated too (an in-memory database is new per pool).
    const MIGRATE_POOL: bool = false;
    /// Sets up a connection opened outside the pool (the pool's own do it in `pool_options`).
    async fn session(connection: &mut Conn<Self>) -> Result<(), sqlx::Error> {
        let _ = connection;
        Ok(())
    }
    async fn limits(connection: &mut Conn<Self>) -> Result<Self::Limits, sqlx::Error>;

    /// The `n`th placeholder (from 1).
    fn param(n: usize) -> String {
        let _ = n;
        "?".into()
    }
    /// The `n`th placeholder, bound as a hyphenated id and compared with an id column.
    fn id_param(n: usize) -> String {
        Self::param(n)
    }
    /// The `n`th placeholder, bound as [`time_text`](Self::time_text) and compared with a time
    /// column.
    fn time_param(n: usize) -> String {
        Self::param(n)
    }
    /// A time as it is bound for [`time_param`](Self::time_param).
    fn time_text(at: DateTime<Utc>) -> String;
    /// A column as text, for the core's rows (all text, whatever the database): `{column}`
    /// stands for the column.
    const AS_TEXT: &'static str;
    /// A time column as RFC 3339 text in UTC (`{column}` the column).
    const TIME_AS_TEXT: &'static str;
    /// A binary column as hexadecimal text (`{column}` the column).
    const HEX: &'static str;
    /// Creates the migrations table (`{table}` its name).
    const MIGRATIONS_TABLE: &'static str;
    /// A statement answering the column names of the table its one parameter names.
    const COLUMNS_OF: &'static str;
    /// A record's token count column.
    const COUNT_TYPE: &'static str;
    /// A rollup sum column, added to rows that exist already.
    const SUM_TYPE: &'static str;
    /// A short text column (a record's `price_id`).
    const LABEL_TYPE: &'static str;
    /// The column names of `table`, lower-case ([`COLUMNS_OF`](Self::COLUMNS_OF)).
    async fn columns(connection: &mut Conn<Self>, table: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = Self::rows(connection, Self::COLUMNS_OF.into(), &[Arg::Text(table)]).await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.first()?.as_deref().map(str::to_ascii_lowercase))
            .collect())
    }
    /// [`AS_TEXT`](Self::AS_TEXT) of `column`.
    fn as_text(column: &str) -> String {
        Self::AS_TEXT.replace("{column}", column)
    }
    /// [`TIME_AS_TEXT`](Self::TIME_AS_TEXT) of `column`.
    fn time_as_text(column: &str) -> String {
        Self::TIME_AS_TEXT.replace("{column}", column)
    }
    /// [`HEX`](Self::HEX) of `column`.
    fn hex(column: &str) -> String {
        Self::HEX.replace("{column}", column)
    }
    /// Deletes up to `chunk` records of calls started before the bound time.
    fn prune_statement(table: &str, chunk: u64) -> String;

    /// Inserts `records` (in the caller's transaction), skipping ids already stored; answers the
    /// ids it inserted.
    async fn insert(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
        limits: Self::Limits,
        records: &[UsageRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error>;
    /// Adds `rollup` to both rollup tables, in the caller's transaction. A database implements
    /// this or [`add_tier`](Self::add_tier), each defined by the other.
    async fn add_rollup(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
        rollup: &Rollup,
    ) -> Result<(), sqlx::Error> {
        for (tier, rows) in rollup.tiers() {
            Self::add_tier(connection, config, (tier, rows)).await?;
        }
        Ok(())
    }
    /// Adds the rows of one tier, in the caller's transaction: sums added, each histogram
    /// appended (a concatenation is a sum), a histogram grown well past its last canonical size
    /// rewritten in canonical form.
    async fn add_tier(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
        tier_rows: TierRows<'_>,
    ) -> Result<(), sqlx::Error> {
        let (tier, rows) = tier_rows;
        let mut rollup = Rollup::default();
        *rollup.tier_mut(tier) = rows.clone();
        Self::add_rollup(connection, config, &rollup).await
    }
    /// Rewrites in canonical form the histogram `stored` of the row of `table` whose `key` column
    /// is `id`, grown well past its last canonical size by appends (the caller's transaction
    /// holds the row).
    #[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
    async fn rewrite_compacted(
        connection: &mut Conn<Self>,
        table: &str,
        (key, id): (&str, Arg<'_>),
        stored: &[u8],
    ) -> Result<(), sqlx::Error> {
        let compact = crate::rollup::compacted(stored, table);
        let sql = format!(
            "UPDATE {table} SET latency_base = {}, latency = {} WHERE {key} = {}",
            Self::param(1),
            Self::param(2),
            Self::param(3)
        );
        let args = [Arg::Int(compact.len() as i64), Arg::Bytes(&compact), id];
        Self::execute(connection, sql, &args).await.map(|_| ())
    }
    /// Records the operation catalog of `service`.
    async fn register(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
        catalog: (&str, &[&'static Operation]),
    ) -> Result<(), sqlx::Error>;
    /// Runs before the records are rolled up at the rollups' migration.
    async fn before_backfill(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error> {
        let _ = (connection, config);
        Ok(())
    }
    /// Gives an hourly rollup table made before the daily tier its histogram columns (the daily
    /// table exists by then).
    async fn before_upgrade(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error>;
    /// Checks the records table after migrating (`CREATE TABLE IF NOT EXISTS` accepts any table
    /// of that name); answers what is wrong.
    async fn check_schema(
        connection: &mut Conn<Self>,
        config: &SqlConfig,
    ) -> Result<Option<String>, sqlx::Error> {
        let table = config.records_table();
        let present = Self::columns(connection, &table).await?;
        let missing: Vec<&str> = super::RECORD_COLUMNS
            .split(", ")
            .filter(|column| !present.iter().any(|p| p == column))
            .collect();
        Ok((!missing.is_empty()).then(|| {
            format!(
                "table `{table}` exists without the columns {}",
                missing.join(", ")
            )
        }))
    }

    /// Runs `sql` with `args`; answers the rows it affected.
    async fn execute(
        connection: &mut Conn<Self>,
        sql: String,
        args: &[Arg<'_>],
    ) -> Result<u64, sqlx::Error>;
    /// Runs `sql` with `args`; answers its rows, each column as text.
    async fn rows(
        connection: &mut Conn<Self>,
        sql: String,
        args: &[Arg<'_>],
    ) -> Result<Vec<Vec<Option<String>>>, sqlx::Error>;
    /// Runs `sql` (which may hold several statements) without parameters.
    async fn raw(connection: &mut Conn<Self>, sql: String) -> Result<(), sqlx::Error>;
}

/// The first column of the first row, if any.
pub(crate) fn first(rows: &[Vec<Option<String>>]) -> Option<&str> {
    rows.first()?.first()?.as_deref()
}

/// [`Dialect::execute`], [`Dialect::rows`] and [`Dialect::raw`], the same text for every
/// database (sqlx's generic bounds are not implied, so each is written against a concrete one).
macro_rules! statements {
    () => {
        async fn execute(
            connection: &mut crate::sink::sql::dialect::Conn<Self>,
            sql: String,
            args: &[crate::sink::sql::dialect::Arg<'_>],
        ) -> Result<u64, sqlx::Error> {
            Ok(crate::sink::sql::dialect::bound!(sql, args)
                .execute(connection)
                .await?
                .rows_affected())
        }

        async fn rows(
            connection: &mut crate::sink::sql::dialect::Conn<Self>,
            sql: String,
            args: &[crate::sink::sql::dialect::Arg<'_>],
        ) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
            use sqlx::Row as _;
            crate::sink::sql::dialect::bound!(sql, args)
                .fetch_all(connection)
                .await?
                .iter()
                .map(|row| (0..row.len()).map(|column| row.try_get(column)).collect())
                .collect()
        }

        async fn raw(
            connection: &mut crate::sink::sql::dialect::Conn<Self>,
            sql: String,
        ) -> Result<(), sqlx::Error> {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(connection)
                .await
                .map(|_| ())
        }
    };
}

/// `sql` with `args` bound in order.
macro_rules! bound {
    ($sql:expr, $args:expr) => {{
        let mut query = sqlx::query(sqlx::AssertSqlSafe($sql));
        for arg in $args {
            query = match *arg {
                crate::sink::sql::dialect::Arg::Int(value) => query.bind(value),
                crate::sink::sql::dialect::Arg::Text(value) => query.bind(value),
                crate::sink::sql::dialect::Arg::Bytes(value) => query.bind(value),
            };
        }
        query
    }};
}

/// Binds a record's columns, in [`RECORD_COLUMNS`](super::RECORD_COLUMNS) order, to one row of a
/// multi-row `VALUES`: `started` and `duration` as the database stores them, each token count
/// passed through `count`. Text is bound by reference (sqlx copies it once, into its arguments),
/// and the attributes are serialised from the map without cloning it first.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
macro_rules! push_record {
    ($row:expr, $record:expr, started: $started:expr, duration: $duration:expr, count: $count:expr) => {
        $row.push_bind($record.id.hyphenated().to_string())
            .push_bind($record.operation.as_ref())
            .push_bind($record.function.as_ref())
            .push_bind($record.service.as_ref())
            .push_bind($record.instance.as_ref())
            .push_bind($started)
            .push_bind($duration)
            .push_bind($record.outcome.as_str())
            .push_bind($record.error_type.as_deref())
            .push_bind($record.error_message.as_deref())
            .push_bind($record.tenant_id.as_deref())
            .push_bind($record.user_id.map(|id| id.hyphenated().to_string()))
            .push_bind($record.session_id.map(|id| id.hyphenated().to_string()))
            .push_bind($record.model.as_deref())
            .push_bind($record.input_tokens.map($count))
            .push_bind($record.output_tokens.map($count))
            .push_bind($record.cached_input_tokens.map($count))
            .push_bind($record.cache_creation_input_tokens.map($count))
            .push_bind($record.cache_creation_1h_input_tokens.map($count))
            .push_bind($record.reasoning_tokens.map($count))
            .push_bind($record.audio_input_tokens.map($count))
            .push_bind($record.audio_output_tokens.map($count))
            .push_bind($record.cost_nano_usd)
            .push_bind($record.price_id.as_deref())
            .push_bind(crate::sink::sql::values::attributes_json(
                &$record.attributes,
            ))
    };
}

/// Binds a rollup row (`start` as the database stores it, then the key, the sums, the encoded
/// histogram and its length) to one row of a multi-row `VALUES`.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
macro_rules! push_rollup {
    ($row:expr, start: $start:expr, $key:expr, $cell:expr) => {{
        let latency = crate::rollup::encode_latency($cell.latency.iter().map(|(b, c)| (*b, *c)));
        let base = latency.len() as i64;
        $row.push_bind($start)
            .push_bind($key.service.as_str())
            .push_bind($key.operation.as_str())
            .push_bind($key.tenant_id.as_str())
            .push_bind($key.model.as_str())
            .push_bind($key.outcome);
        for sum in $cell.sums.values() {
            $row.push_bind(sum);
        }
        $row.push_bind(latency).push_bind(base)
    }};
}

pub(crate) use {bound, statements};
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) use {push_record, push_rollup};
