//! Reports (with any SQL sink's feature): calls, errors, tokens, cost and latency percentiles, filtered and grouped, read from
//! the hourly rollups when the question allows it and from the records otherwise, with the same
//! answer either way (percentiles come from the same log-linear histogram in both).
//!
//! ```no_run
//! # async fn demo() -> Result<(), usage_runtime::Error> {
//! use usage_runtime::report::{GroupBy, Query, Reader, TimeBucket};
//!
//! let reader = Reader::connect("sqlite://usage.db").await?;
//! let month = Query::new()
//!     .since("2026-11-01T00:00:00Z".parse().unwrap())
//!     .group_by([GroupBy::Tenant, GroupBy::Operation])
//!     .bucket(TimeBucket::Month);
//! for row in reader.report(&month).await?.rows {
//!     println!("{:?}: {} calls, {} nano-USD, p95 {} ms", row.group, row.calls, row.cost_nano_usd, row.p95_ms);
//! }
//! // A tenant's own view can never see another tenant's rows.
//! let acme = reader.for_tenant("acme").report(&Query::new()).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{redact_url, DbStep, Error};
use crate::record::Outcome;
use crate::rollup::{decode_latency, latency_bucket, LatencyDecodeError, Tier};
use crate::sink::Backend as Kind;
use crate::sink::{Backend, SqlConfig};

mod admin;
mod aggregate;
mod query;
mod read;

pub use crate::sink::sql::reprice::{RepriceFilter, RepriceRow, Repriced};
pub use admin::OperationRow;
use aggregate::{add, finish, parse_sum, parse_time, plan, Scratch};
pub use aggregate::{ReportRow, Source, Summary};
pub use query::{hour_start, GroupBy, Query, TimeBucket};

// The rows the read side adds up, shared by `aggregate` and `read` (their fields private to
// this module and its children).

/// One call (or one rollup row standing for `calls` calls) as the aggregation sees it.
struct Fact {
    at: DateTime<Utc>,
    service: String,
    operation: String,
    tenant: String,
    user: String,
    model: String,
    outcome: String,
    calls: u64,
    /// In [`TokenKind::ALL`](crate::TokenKind::ALL) order.
    tokens: [u64; 8],
    cost: i64,
}

#[derive(Default)]
struct Group {
    calls: u64,
    errors: u64,
    /// In [`TokenKind::ALL`](crate::TokenKind::ALL) order.
    tokens: [u64; 8],
    cost: i64,
    /// Calls per latency bucket, by bucket (sparse: groups can be many).
    histogram: Vec<(u32, u64)>,
    operations: BTreeSet<String>,
    users: BTreeSet<String>,
}

/// A report's groups, by their dimensions' values (and bucket).
type Grouped = BTreeMap<BTreeMap<String, String>, Group>;

/// Groups being summed from rollup rows, found by their values without allocating per row.
#[derive(Default)]
struct Groups {
    index: std::collections::HashMap<String, usize>,
    rows: Vec<(Vec<String>, Group)>,
}

/// `$body` with `$pool` bound to `$reader`'s pool, `$dialect` to its SQL dialect (a type) and
/// `$kind` to its backend.
macro_rules! on_pool {
    ($reader:expr, |$pool:ident, $dialect:ident, $kind:ident| $body:expr) => {
        match &$reader.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite($pool) => on_pool!(@arm $dialect = crate::sink::sql::sqlite::Sqlite3, $kind = Kind::Sqlite, $body),
            #[cfg(feature = "postgres")]
            Pool::Postgres($pool) => on_pool!(@arm $dialect = crate::sink::sql::postgres::Postgres, $kind = Kind::Postgres, $body),
            #[cfg(feature = "mysql")]
            Pool::MySql($pool) => on_pool!(@arm $dialect = crate::sink::sql::mysql::MySql8, $kind = Kind::MySql, $body),
        }
    };
    (@arm $dialect:ident = $ty:ty, $kind:ident = $backend:expr, $body:expr) => {{
        #[allow(dead_code)]
        type $dialect = $ty;
        let $kind = $backend;
        $body
    }};
}

use on_pool;

/// A reader's pool: connecting may take up to 10 s before it is an error.
fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new().acquire_timeout(std::time::Duration::from_secs(10))
}

enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// Reads reports from a database written by one of the SQL sinks.
pub struct Reader {
    pool: Pool,
    config: SqlConfig,
    target: String,
    /// Whether the records have the token kinds a later schema added: a reader of a database
    /// its trackers have not migrated yet reads those kinds as zero.
    later_kinds: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("database", &self.target)
            .finish_non_exhaustive()
    }
}

/// A reader limited to one tenant: every report it gives is filtered to that tenant, whatever
/// the query says.
#[derive(Debug)]
pub struct TenantReader<'a> {
    reader: &'a Reader,
    tenant: String,
}

impl TenantReader<'_> {
    /// The report for this tenant only.
    pub async fn report(&self, query: &Query) -> Result<Summary, Error> {
        if self.tenant.is_empty() {
            // `''` stands for "no tenant": it would show every untenanted call.
            return Err(Error::InvalidConfig(
                "a tenant reader needs a non-empty tenant".into(),
            ));
        }
        let mut query = query.clone();
        query.tenant = Some(self.tenant.clone());
        self.reader.report(&query).await
    }
}

/// Placeholders as each backend writes them.
fn placeholders(sql: &str, dollar: bool) -> String {
    if !dollar {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Reader {
    /// Whether the records table has every column [`Change::TokenKinds`] adds.
    ///
    /// [`Change::TokenKinds`]: crate::sink::sql::Change::TokenKinds
    async fn has_later_kinds(&self) -> Result<bool, Error> {
        use crate::sink::sql::dialect::Dialect as _;
        let table = self.config.records_table();
        let rows = on_pool!(self, |pool, Dialect, _kind| {
            let mut connection = self.acquire(pool).await?;
            Dialect::columns(&mut connection, &table).await
        })
        .map_err(|error| Error::database(DbStep::Read, &self.target, error))?;
        let present = |name: &str| rows.iter().any(|column| column == name);
        Ok(crate::sink::sql::LATER_TOKEN_KINDS
            .iter()
            .all(|kind| present(kind.name()))
            && present("price_id"))
    }

    /// A connection of `pool`, or the error naming the connect step.
    async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<sqlx::pool::PoolConnection<DB>, Error> {
        pool.acquire()
            .await
            .map_err(|error| Error::database(DbStep::Connect, &self.target, error))
    }

    /// `column` as a report reads it: `0` for a token kind the database's schema does not have
    /// yet.
    fn column<'a>(&self, column: &'a str) -> &'a str {
        let later = crate::sink::sql::LATER_TOKEN_KINDS
            .iter()
            .any(|kind| kind.name() == column);
        if later && !self.later_kinds {
            "0"
        } else {
            column
        }
    }

    /// Connects to the database at `url` (`sqlite://`, `postgres://` or `mysql://`).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, SqlConfig::new()).await
    }

    /// [`connect`](Self::connect) with the table prefix the sink used.
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let target = redact_url(url);
        let fail = |error: sqlx::Error| Error::database(DbStep::Connect, &target, error);
        let pool = match Backend::of_url(url)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let options = url
                    .parse::<sqlx::sqlite::SqliteConnectOptions>()
                    .map_err(|error| Error::InvalidUrl {
                        url: target.clone(),
                        reason: error.to_string(),
                    })?
                    // Rows come from SQLite's thread through a channel: a deep one lets that
                    // thread run ahead instead of waking the reader every 50 rows.
                    .row_buffer_size(4096)
                    // Rollup reports group in temporary b-trees: in memory, not temp files.
                    .pragma("temp_store", "memory");
                Pool::Sqlite(pool_options().connect_with(options).await.map_err(fail)?)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => Pool::Postgres(pool_options().connect(url).await.map_err(fail)?),
            #[cfg(feature = "mysql")]
            Backend::MySql => Pool::MySql(
                pool_options()
                    // Rollup histograms are added up with GROUP_CONCAT, whose result is cut at
                    // 1 KiB (MySQL) or 1 MiB (MariaDB) unless raised.
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            sqlx::query("SET SESSION group_concat_max_len = 1073741824")
                                .execute(connection)
                                .await
                                .map(|_| ())
                        })
                    })
                    .connect(url)
                    .await
                    .map_err(fail)?,
            ),
            #[allow(unreachable_patterns)] // a backend whose feature is off is refused above
            _ => unreachable!("Backend::of_url answers only compiled-in backends"),
        };
        let mut reader = Reader {
            pool,
            config,
            target,
            later_kinds: true,
        };
        reader.later_kinds = reader.has_later_kinds().await?;
        Ok(reader)
    }

    /// A reader that only ever returns `tenant`'s rows.
    pub fn for_tenant(&self, tenant: impl Into<String>) -> TenantReader<'_> {
        TenantReader {
            reader: self,
            tenant: tenant.into(),
        }
    }

    /// The report for `query`: from the rollups when they can answer it, else from the records.
    ///
    /// A `since` or `until` within an hour is exact to the microsecond: the whole hours inside
    /// the range come from the rollups and only the partial hours at its edges from the records
    /// ([`Source::RollupsAndRecords`]), so the report does not depend on where the range starts
    /// and loses nothing the retention pruned but those edge hours' records.
    pub async fn report(&self, query: &Query) -> Result<Summary, Error> {
        if query.rollups_answer() {
            self.read_rollups(query).await
        } else if let Some(whole) = query.whole_hours() {
            self.read_mixed(query, whole).await
        } else {
            self.read_records(query).await
        }
    }

    /// The report computed from the records, whatever the query (for checks and benchmarks).
    pub async fn report_from_records(&self, query: &Query) -> Result<Summary, Error> {
        self.read_records(query).await
    }

    fn fail(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |error| Error::database(DbStep::Read, &self.target, error)
    }

    /// Filters as SQL (with `?` placeholders) and their values, over a table whose time column
    /// is `time` and whose missing tenant/model are `missing` (`''` in rollups, NULL in records).
    fn filters(
        &self,
        query: &Query,
        time: &str,
        rollup: bool,
        kind: Kind,
    ) -> (String, Vec<String>) {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut values = Vec::new();
        let cast = match kind {
            Kind::Sqlite => "?",
            Kind::Postgres => "CAST(? AS timestamptz)",
            Kind::MySql => "CAST(? AS DATETIME(6))",
        };
        let text = |at: DateTime<Utc>| match (kind, rollup) {
            (Kind::Sqlite, true) => at.format("%Y-%m-%dT%H:00:00Z").to_string(),
            (Kind::Sqlite, false) => at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            (Kind::MySql, _) => at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            (Kind::Postgres, _) => at.to_rfc3339(),
        };
        if let Some(since) = query.since {
            sql.push_str(&format!(" AND {time} >= {cast}"));
            values.push(text(since));
        }
        if let Some(until) = query.until {
            sql.push_str(&format!(" AND {time} < {cast}"));
            values.push(text(until));
        }
        // Exact matches: byte for byte on MySQL (its collations ignore trailing spaces, which
        // would let `acme ` see `acme`'s rows), and a missing tenant or model is `''` in both the
        // rollups and the records.
        let mut equal = |column: &str, value: &Option<String>| {
            if let Some(value) = value {
                let column = if !rollup && (column == "tenant_id" || column == "model") {
                    format!("COALESCE({column}, '')")
                } else {
                    column.to_owned()
                };
                match kind {
                    Kind::MySql => sql.push_str(&format!(" AND BINARY {column} = BINARY ?")),
                    _ => sql.push_str(&format!(" AND {column} = ?")),
                }
                values.push(value.clone());
            }
        };
        equal("service", &query.service);
        equal("tenant_id", &query.tenant);
        equal("operation", &query.operation);
        equal("model", &query.model);
        equal("outcome", &query.outcome.map(|o| o.as_str().to_owned()));
        if let Some(user) = query.user {
            let column = match kind {
                Kind::Postgres => "user_id::text",
                _ => "user_id",
            };
            sql.push_str(&format!(" AND {column} = ?"));
            values.push(user.hyphenated().to_string());
        }
        (sql, values)
    }

    fn kind(&self) -> Kind {
        on_pool!(self, |_pool, _Dialect, kind| kind)
    }
}
