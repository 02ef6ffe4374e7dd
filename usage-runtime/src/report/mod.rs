//! Reports: calls, errors, tokens, cost and latency percentiles, filtered and grouped, read from
//! the hourly rollups when the question allows it and from the records otherwise, with the same
//! answer either way (percentiles come from the same log-linear histogram in both).
//!
//! ```no_run
//! # async fn demo() -> Result<(), usage_runtime::Error> {
//! use usage_runtime::report::{Dimension, Query, Reader, TimeBucket};
//!
//! let reader = Reader::connect("sqlite://usage.db").await?;
//! let month = Query::new()
//!     .since("2026-11-01T00:00:00Z".parse().unwrap())
//!     .group_by([Dimension::Tenant, Dimension::Operation])
//!     .bucket(TimeBucket::Month);
//! for row in reader.report(&month).await?.rows {
//!     println!("{:?}: {} calls, {} nano-USD, p95 {} ms", row.group, row.calls, row.cost_nano_usd, row.p95_ms);
//! }
//! // A tenant's own view can never see another tenant's rows.
//! let acme = reader.for_tenant("acme").report(&Query::new()).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Serialize;

use crate::error::{redact_url, DbStep, Error};
use crate::record::Outcome;
use crate::rollup::{bucket_midpoint, decode_latency, latency_bucket, LatencyDecodeError, Tier};
use crate::sink::{Backend, SqlConfig};

/// What rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dimension {
    /// The service name.
    Service,
    /// The operation.
    Operation,
    /// The tenant (`""` when the call had none).
    Tenant,
    /// The user (only from the records, not the rollups).
    User,
    /// The model (`""` when the call had none).
    Model,
    /// The outcome.
    Outcome,
}

impl Dimension {
    /// The name used in [`ReportRow::group`].
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Service => "service",
            Dimension::Operation => "operation",
            Dimension::Tenant => "tenant",
            Dimension::User => "user",
            Dimension::Model => "model",
            Dimension::Outcome => "outcome",
        }
    }
}

impl FromStr for Dimension {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            Dimension::Service,
            Dimension::Operation,
            Dimension::Tenant,
            Dimension::User,
            Dimension::Model,
            Dimension::Outcome,
        ]
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            format!("unknown dimension `{name}`; expected service, operation, tenant, user, model or outcome")
        })
    }
}

/// Time buckets for grouping (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBucket {
    /// Whole hours.
    Hour,
    /// Whole days.
    Day,
    /// Calendar months.
    Month,
}

impl TimeBucket {
    fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let (y, m, d, h) = (at.year(), at.month(), at.day(), at.hour());
        let (d, h) = match self {
            TimeBucket::Hour => (d, h),
            TimeBucket::Day => (d, 0),
            TimeBucket::Month => (1, 0),
        };
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap_or(at)
    }
}

/// What to report: filters and grouping. Everything is optional; the default is one row for
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    service: Option<String>,
    tenant: Option<String>,
    operation: Option<String>,
    user: Option<uuid::Uuid>,
    model: Option<String>,
    outcome: Option<Outcome>,
    group_by: Vec<Dimension>,
    bucket: Option<TimeBucket>,
    distinct_users: bool,
}

impl Query {
    /// Everything.
    pub fn new() -> Self {
        Self::default()
    }
    /// Calls started at or after `at`.
    pub fn since(mut self, at: DateTime<Utc>) -> Self {
        self.since = Some(at);
        self
    }
    /// Calls started before `at`.
    pub fn until(mut self, at: DateTime<Utc>) -> Self {
        self.until = Some(at);
        self
    }
    /// One service.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }
    /// One tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
    /// One operation.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }
    /// One user (read from the records).
    pub fn user(mut self, user: uuid::Uuid) -> Self {
        self.user = Some(user);
        self
    }
    /// One model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// One outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
    /// Groups by these dimensions, in this order.
    pub fn group_by(mut self, dimensions: impl IntoIterator<Item = Dimension>) -> Self {
        self.group_by = dimensions.into_iter().collect();
        self
    }
    /// Groups by time bucket too.
    pub fn bucket(mut self, bucket: TimeBucket) -> Self {
        self.bucket = Some(bucket);
        self
    }
    /// Counts distinct users per group (read from the records).
    pub fn distinct_users(mut self) -> Self {
        self.distinct_users = true;
        self
    }

    /// Whether the rollups can answer: no user, and time limits on whole hours.
    fn rollups_answer(&self) -> bool {
        let whole_hour = |at: &Option<DateTime<Utc>>| {
            at.is_none_or(|at| {
                at.timestamp().rem_euclid(3600) == 0 && at.timestamp_subsec_nanos() == 0
            })
        };
        self.user.is_none()
            && !self.distinct_users
            && !self.group_by.contains(&Dimension::User)
            && whole_hour(&self.since)
            && whole_hour(&self.until)
    }
}

/// The start of the hour `at` falls in: a time limit the rollups can answer for.
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    crate::rollup::hour_of(at)
}

/// Where a report was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The hourly rollups.
    Rollups,
    /// The records.
    Records,
}

/// One group of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReportRow {
    /// The group: each dimension's name with its value, and `bucket` (RFC 3339) when bucketed.
    pub group: BTreeMap<String, String>,
    /// Calls.
    pub calls: u64,
    /// Calls with outcome `error`.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_input_tokens: u64,
    /// Cost in nano-USD (unpriced calls add nothing).
    pub cost_nano_usd: i64,
    /// Median latency, ms (from the histogram: within about 3%).
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Distinct operations called.
    pub distinct_operations: u64,
    /// Distinct users, when asked for.
    pub distinct_users: Option<u64>,
}

/// A report's rows, sorted by group, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The rows.
    pub rows: Vec<ReportRow>,
    /// The rollups or the records.
    pub source: Source,
}

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
    input: u64,
    output: u64,
    cached: u64,
    cost: i64,
}

#[derive(Default)]
struct Group {
    calls: u64,
    errors: u64,
    input: u64,
    output: u64,
    cached: u64,
    cost: i64,
    /// Calls per latency bucket, by bucket (sparse: groups can be many).
    histogram: Vec<(u32, u64)>,
    operations: BTreeSet<String>,
    users: BTreeSet<String>,
}

impl Query {
    fn key(&self, fact: &Fact) -> BTreeMap<String, String> {
        let mut key = BTreeMap::new();
        for dimension in &self.group_by {
            let value = match dimension {
                Dimension::Service => &fact.service,
                Dimension::Operation => &fact.operation,
                Dimension::Tenant => &fact.tenant,
                Dimension::User => &fact.user,
                Dimension::Model => &fact.model,
                Dimension::Outcome => &fact.outcome,
            };
            key.insert(dimension.name().to_owned(), value.clone());
        }
        if let Some(bucket) = self.bucket {
            key.insert(
                "bucket".to_owned(),
                bucket
                    .start(fact.at)
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            );
        }
        key
    }
}

impl Group {
    fn count(&mut self, bucket: u32, calls: u64) {
        match self.histogram.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.histogram[at].1 = self.histogram[at].1.saturating_add(calls),
            Err(at) => self.histogram.insert(at, (bucket, calls)),
        }
    }
}

/// A histogram being added up for one group at a time: calls per bucket in a flat array, and
/// which buckets are in use (so moving it into the group's map touches only those).
struct Scratch {
    calls: Vec<u64>,
    used: Vec<u32>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            calls: vec![0; crate::rollup::BUCKETS],
            used: Vec::new(),
        }
    }

    #[inline]
    fn count(&mut self, bucket: u32, calls: u64) {
        // Decoding caps buckets at the last one, so the index is in range.
        let slot = &mut self.calls[bucket as usize];
        if *slot == 0 {
            self.used.push(bucket);
        }
        *slot = slot.saturating_add(calls);
    }

    /// Moves what was counted into `group` (a merge of two sorted lists).
    fn flush(&mut self, group: &mut Group) {
        self.used.sort_unstable();
        self.used.dedup();
        let extra = self.used.len();
        let counted = self
            .used
            .drain(..)
            .map(|bucket| (bucket, std::mem::take(&mut self.calls[bucket as usize])));
        if group.histogram.is_empty() {
            group.histogram.extend(counted);
            return;
        }
        let held = std::mem::take(&mut group.histogram);
        let mut merged = Vec::with_capacity(held.len() + extra);
        let mut held = held.into_iter().peekable();
        for (bucket, calls) in counted {
            while let Some(&(b, c)) = held.peek() {
                if b >= bucket {
                    break;
                }
                merged.push((b, c));
                held.next();
            }
            match held.peek() {
                Some(&(b, c)) if b == bucket => {
                    merged.push((b, c.saturating_add(calls)));
                    held.next();
                }
                _ => merged.push((bucket, calls)),
            }
        }
        merged.extend(held);
        group.histogram = merged;
    }
}

fn percentile(histogram: &[(u32, u64)], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (bucket, count) in histogram {
        seen = seen.saturating_add(*count);
        if seen >= rank {
            return bucket_midpoint(*bucket) as f64 / 1000.0;
        }
    }
    0.0
}

fn finish(
    query: &Query,
    groups: BTreeMap<BTreeMap<String, String>, Group>,
    source: Source,
) -> Report {
    let rows = groups
        .into_iter()
        .map(|(group, g)| ReportRow {
            group,
            calls: g.calls,
            errors: g.errors,
            error_rate: if g.calls == 0 {
                0.0
            } else {
                g.errors as f64 / g.calls as f64
            },
            // Held at the largest count a database column stores, whichever source answers.
            input_tokens: g.input.min(i64::MAX as u64),
            output_tokens: g.output.min(i64::MAX as u64),
            cached_input_tokens: g.cached.min(i64::MAX as u64),
            cost_nano_usd: g.cost,
            p50_ms: percentile(&g.histogram, g.calls, 0.50),
            p95_ms: percentile(&g.histogram, g.calls, 0.95),
            p99_ms: percentile(&g.histogram, g.calls, 0.99),
            distinct_operations: g.operations.len() as u64,
            distinct_users: query.distinct_users.then_some(g.users.len() as u64),
        })
        .collect();
    Report { rows, source }
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
    pub async fn report(&self, query: &Query) -> Result<Report, Error> {
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
                Pool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .acquire_timeout(std::time::Duration::from_secs(10))
                        .connect_with(options)
                        .await
                        .map_err(fail)?,
                )
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(fail)?,
            ),
            #[cfg(feature = "mysql")]
            Backend::MySql => Pool::MySql(
                sqlx::mysql::MySqlPoolOptions::new()
                    .acquire_timeout(std::time::Duration::from_secs(10))
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
        Ok(Reader {
            pool,
            config,
            target,
        })
    }

    /// A reader that only ever returns `tenant`'s rows.
    pub fn for_tenant(&self, tenant: impl Into<String>) -> TenantReader<'_> {
        TenantReader {
            reader: self,
            tenant: tenant.into(),
        }
    }

    /// The report for `query`: from the rollups when they can answer it, else from the records.
    pub async fn report(&self, query: &Query) -> Result<Report, Error> {
        if query.rollups_answer() {
            self.read_rollups(query).await
        } else {
            self.read_records(query).await
        }
    }

    /// The report computed from the records, whatever the query (for checks and benchmarks).
    pub async fn report_from_records(&self, query: &Query) -> Result<Report, Error> {
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
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Kind::Sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Kind::Postgres,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => Kind::MySql,
        }
    }

    /// The report from the rollups, grouped by the database: only one row per group (and per
    /// latency bucket) comes back.
    async fn read_rollups(&self, query: &Query) -> Result<Report, Error> {
        let mut groups = Groups::default();
        for (tier, (since, until)) in plan(query) {
            let mut part = query.clone();
            part.since = since;
            part.until = until;
            self.read_tier(&part, tier, &mut groups).await?;
        }
        let mut names: Vec<&'static str> = query.group_by.iter().map(|d| d.name()).collect();
        if query.bucket.is_some() {
            names.push("bucket");
        }
        let groups = groups
            .rows
            .into_iter()
            .map(|(values, group)| {
                let key = names
                    .iter()
                    .zip(values)
                    .map(|(name, value)| ((*name).to_owned(), value))
                    .collect();
                (key, group)
            })
            .collect();
        Ok(finish(query, groups, Source::Rollups))
    }

    /// Adds the rows of one rollup tier within the query's range to `groups`. The database adds
    /// up each rollup key's rows (per time bucket) and concatenates their histograms (which sums
    /// them, see [`encode_latency`](crate::rollup::encode_latency)), so what crosses the wire is
    /// one row per key however many hours or days the range holds.
    async fn read_tier(&self, query: &Query, tier: Tier, groups: &mut Groups) -> Result<(), Error> {
        use futures_util::TryStreamExt;
        use sqlx::Row;
        use std::fmt::Write;
        let kind = self.kind();
        let time = tier.column();
        let bucket = query.bucket.map(|bucket| match (kind, bucket) {
            (Kind::Sqlite, TimeBucket::Hour) => time.to_owned(),
            (Kind::Sqlite, TimeBucket::Day) => format!("substr({time}, 1, 10) || 'T00:00:00Z'"),
            (Kind::Sqlite, TimeBucket::Month) => format!("substr({time}, 1, 7) || '-01T00:00:00Z'"),
            (Kind::Postgres, bucket) => format!(
                "to_char(date_trunc('{}', {time} AT TIME ZONE 'UTC'), \
                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                match bucket {
                    TimeBucket::Hour => "hour",
                    TimeBucket::Day => "day",
                    TimeBucket::Month => "month",
                }
            ),
            (Kind::MySql, TimeBucket::Hour) => format!("DATE_FORMAT({time}, '%Y-%m-%dT%H:00:00Z')"),
            (Kind::MySql, TimeBucket::Day) => format!("DATE_FORMAT({time}, '%Y-%m-%dT00:00:00Z')"),
            (Kind::MySql, TimeBucket::Month) => {
                format!("DATE_FORMAT({time}, '%Y-%m-01T00:00:00Z')")
            }
        });
        // Sums as text: exact whatever their size (SQLite's SUM fails past i64, so it adds the
        // high and low halves apart, `high:low`).
        let sum = |column: &str| {
            match kind {
            Kind::Sqlite => format!(
                "CAST(SUM({column} >> 32) AS TEXT) || ':' || CAST(SUM({column} & 4294967295) AS TEXT)"
            ),
            Kind::Postgres => format!("SUM({column})::text"),
            Kind::MySql => format!("CAST(SUM({column}) AS CHAR)"),
        }
        };
        let histograms = match kind {
            Kind::Sqlite => "CAST(group_concat(latency, '') AS BLOB)",
            Kind::Postgres => "string_agg(latency, ''::bytea)",
            Kind::MySql => "GROUP_CONCAT(latency SEPARATOR '')",
        };
        let key_columns = "service, operation, tenant_id, model, outcome";
        let (bucket_select, bucket_group) = match &bucket {
            Some(expression) => (format!("{expression}, "), format!(", {expression}")),
            None => (String::new(), String::new()),
        };
        let (filters, values) = self.filters(query, time, true, kind);
        // MySQL's collations ignore trailing spaces: grouping by the lengths too keeps `acme`
        // and `acme ` apart, as the records path does.
        let exact = match kind {
            Kind::MySql => ", LENGTH(service), LENGTH(operation), LENGTH(tenant_id), LENGTH(model)",
            _ => "",
        };
        let sql = format!(
            "SELECT {bucket_select}{key_columns}, {}, {}, {}, {}, {}, {histograms} FROM {}\
             {filters} GROUP BY {key_columns}{bucket_group}{exact}",
            sum("calls"),
            sum("input_tokens"),
            sum("output_tokens"),
            sum("cached_input_tokens"),
            sum("cost_nano_usd"),
            tier.table(&self.config)
        );
        // Where each grouping value is in a row.
        let first = usize::from(bucket.is_some());
        let mut positions: Vec<usize> = query
            .group_by
            .iter()
            .map(|dimension| {
                first
                    + match dimension {
                        Dimension::Service => 0,
                        Dimension::Operation => 1,
                        Dimension::Tenant => 2,
                        Dimension::Model => 3,
                        Dimension::Outcome => 4,
                        Dimension::User => unreachable!("the rollups do not answer for users"),
                    }
            })
            .collect();
        if bucket.is_some() {
            positions.push(0);
        }
        let sums_at = first + 5;
        let decode = |error: LatencyDecodeError| {
            Error::database(DbStep::Read, &self.target, error.to_string())
        };
        let bad_sum = |text: &str| {
            Error::database(
                DbStep::Read,
                &self.target,
                format!("a rollup sum `{text}` is not a number"),
            )
        };
        let mut key = String::new();
        // One flat histogram adds up the rows of the group at hand, merged into the group's
        // (sparse) histogram when the next row belongs to another.
        let mut scratch = Scratch::new();
        let mut current: Option<usize> = None;
        macro_rules! read {
            ($pool:expr, $dollar:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe(placeholders(&sql, $dollar)));
                for value in &values {
                    q = q.bind(value.as_str());
                }
                let mut rows = q.fetch($pool);
                while let Some(row) = rows.try_next().await.map_err(self.fail())? {
                    // The group's values, length-prefixed so no two groups share a key.
                    key.clear();
                    for &i in &positions {
                        let value: &str = row.try_get(i).map_err(self.fail())?;
                        let _ = write!(key, "{}:", value.len());
                        key.push_str(value);
                    }
                    let index = match groups.index.get(key.as_str()) {
                        Some(&index) => index,
                        None => {
                            let values = positions
                                .iter()
                                .map(|&i| row.try_get::<String, _>(i))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(self.fail())?;
                            groups.index.insert(key.clone(), groups.rows.len());
                            groups.rows.push((values, Group::default()));
                            groups.rows.len() - 1
                        }
                    };
                    if current != Some(index) {
                        if let Some(previous) = current {
                            scratch.flush(&mut groups.rows[previous].1);
                        }
                        current = Some(index);
                    }
                    let group = &mut groups.rows[index].1;
                    let operation: &str = row.try_get(first + 1).map_err(self.fail())?;
                    let outcome: &str = row.try_get(first + 4).map_err(self.fail())?;
                    let number = |i: usize| -> Result<i128, Error> {
                        let text: Option<&str> = row.try_get(sums_at + i).map_err(self.fail())?;
                        let text = text.unwrap_or("0");
                        parse_sum(text).ok_or_else(|| bad_sum(text))
                    };
                    let count =
                        |i: usize| number(i).map(|n| n.clamp(0, i128::from(u64::MAX)) as u64);
                    let calls = count(0)?;
                    group.calls = group.calls.saturating_add(calls);
                    if outcome == Outcome::Error.as_str() {
                        group.errors = group.errors.saturating_add(calls);
                    }
                    group.input = group.input.saturating_add(count(1)?);
                    group.output = group.output.saturating_add(count(2)?);
                    group.cached = group.cached.saturating_add(count(3)?);
                    let cost = number(4)?.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                    group.cost = group.cost.saturating_add(cost);
                    if !group.operations.contains(operation) {
                        group.operations.insert(operation.to_owned());
                    }
                    let latency: Option<&[u8]> = row.try_get(sums_at + 5).map_err(self.fail())?;
                    let mut held = 0u64;
                    decode_latency(latency.unwrap_or_default(), |bucket, n| {
                        scratch.count(bucket, n);
                        held = held.saturating_add(n);
                    })
                    .map_err(decode)?;
                    // Every call is in its row's histogram: anything else is a histogram cut
                    // short on its way (MySQL cuts GROUP_CONCAT at `max_allowed_packet`).
                    if held != calls && calls < i64::MAX as u64 {
                        return Err(Error::database(
                            DbStep::Read,
                            &self.target,
                            format!(
                                "the latency histograms of `{operation}` hold {held} calls for \
                                 {calls} (on MySQL, raise max_allowed_packet or report over a \
                                 shorter range)"
                            ),
                        ));
                    }
                }
                if let Some(last) = current {
                    scratch.flush(&mut groups.rows[last].1);
                }
                Ok(())
            }};
        }
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => read!(pool, false),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => read!(pool, true),
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => read!(pool, false),
        }
    }

    async fn read_records(&self, query: &Query) -> Result<Report, Error> {
        let kind = self.kind();
        let (time, user, text) = match kind {
            Kind::Sqlite => (
                "started_at".to_owned(),
                "COALESCE(user_id, '')".to_owned(),
                "CAST(%s AS TEXT)",
            ),
            Kind::Postgres => (
                "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                    .to_owned(),
                "COALESCE(user_id::text, '')".to_owned(),
                "%s::text",
            ),
            Kind::MySql => (
                "DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%s.%fZ')".to_owned(),
                "COALESCE(user_id, '')".to_owned(),
                "CAST(%s AS CHAR)",
            ),
        };
        let cast = |column: &str| text.replace("%s", &format!("COALESCE({column}, 0)"));
        let (filters, values) = self.filters(query, "started_at", false, kind);
        let sql = format!(
            "SELECT {time}, service, operation, COALESCE(tenant_id, ''), {user}, COALESCE(model, ''), \
             outcome, {}, {}, {}, {}, {} FROM {}{filters}",
            cast("duration_us"),
            cast("input_tokens"),
            cast("output_tokens"),
            cast("cached_input_tokens"),
            cast("cost_nano_usd"),
            self.config.records_table()
        );
        let mut groups: BTreeMap<BTreeMap<String, String>, Group> = BTreeMap::new();
        self.each_row(&sql, &values, |row| {
            // Capped as the rollups cap them (MySQL keeps counts above i64::MAX).
            let number = |i: usize| row[i].parse::<u64>().unwrap_or(0).min(i64::MAX as u64);
            let f = Fact {
                at: parse_time(&row[0])
                    .map_err(|e| Error::database(DbStep::Read, &self.target, e.to_string()))?,
                service: row[1].clone(),
                operation: row[2].clone(),
                tenant: row[3].clone(),
                user: row[4].clone(),
                model: row[5].clone(),
                outcome: row[6].clone(),
                calls: 1,
                input: number(8),
                output: number(9),
                cached: number(10),
                cost: row[11].parse().unwrap_or(0),
            };
            add(query, &mut groups, &f, Some(latency_bucket(number(7))));
            Ok(())
        })
        .await?;
        Ok(finish(query, groups, Source::Records))
    }

    /// Runs `sql` (with `?` placeholders bound to `values`) and reads every column as text.
    async fn text_rows(&self, sql: &str, values: &[String]) -> Result<Vec<Vec<String>>, Error> {
        let mut rows = Vec::new();
        self.each_row(sql, values, |row| {
            rows.push(row.to_vec());
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Streams the rows of `sql` (every column read as text) through `each`, one at a time, so a
    /// report over millions of records runs in constant memory.
    async fn each_row(
        &self,
        sql: &str,
        values: &[String],
        mut each: impl FnMut(&[String]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        use futures_util::TryStreamExt;
        use sqlx::Row;
        macro_rules! stream {
            ($pool:expr, $dollar:expr) => {{
                let sql = placeholders(sql, $dollar);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for value in values {
                    q = q.bind(value.clone());
                }
                let mut rows = q.fetch($pool);
                let mut texts = Vec::new();
                while let Some(row) = rows.try_next().await.map_err(self.fail())? {
                    texts.clear();
                    for i in 0..row.len() {
                        let text = row
                            .try_get::<Option<String>, _>(i)
                            .map_err(self.fail())?
                            .unwrap_or_default();
                        texts.push(text);
                    }
                    each(&texts)?;
                }
                Ok(())
            }};
        }
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => stream!(pool, false),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => stream!(pool, true),
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => stream!(pool, false),
        }
    }
}

/// One operation of the catalog with its calls in a time range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OperationRow {
    /// The service that registered it.
    pub service: String,
    /// The operation name.
    pub operation: String,
    /// The annotated fn.
    pub function: String,
    /// Its source file.
    pub file: String,
    /// Its line.
    pub line: i64,
    /// When a tracker first registered it (RFC 3339).
    pub first_seen: String,
    /// When a tracker last registered it (RFC 3339).
    pub last_seen: String,
    /// Calls in the range: 0 marks an operation annotated but silent.
    pub calls: u64,
}

impl Reader {
    /// The operation catalog (every annotated fn the trackers registered) with each operation's
    /// calls since `since` (all time when `None`), sorted by service and operation.
    pub async fn operations(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<OperationRow>, Error> {
        let kind = self.kind();
        let time = |column: &str| match kind {
            Kind::Sqlite => column.to_owned(),
            Kind::Postgres => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
            Kind::MySql => format!("DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
        };
        let line = match kind {
            Kind::Postgres => "line::text",
            Kind::MySql => "CAST(line AS CHAR)",
            Kind::Sqlite => "CAST(line AS TEXT)",
        };
        let sql = format!(
            "SELECT service, operation, function, file, {line}, {}, {} FROM {} \
             ORDER BY service, operation, function",
            time("first_seen"),
            time("last_seen"),
            self.config.operations_table()
        );
        let catalog = self.text_rows(&sql, &[]).await?;
        let mut query = Query::new().group_by([Dimension::Service, Dimension::Operation]);
        if let Some(since) = since {
            // Whole hours, so the rollups answer.
            query = query.since(TimeBucket::Hour.start(since));
        }
        let calls: BTreeMap<(String, String), u64> = self
            .report(&query)
            .await?
            .rows
            .into_iter()
            .map(|row| {
                (
                    (row.group["service"].clone(), row.group["operation"].clone()),
                    row.calls,
                )
            })
            .collect();
        Ok(catalog
            .into_iter()
            .map(|row| OperationRow {
                calls: calls
                    .get(&(row[0].clone(), row[1].clone()))
                    .copied()
                    .unwrap_or(0),
                service: row[0].clone(),
                operation: row[1].clone(),
                function: row[2].clone(),
                file: row[3].clone(),
                line: row[4].parse().unwrap_or(0),
                first_seen: row[5].clone(),
                last_seen: row[6].clone(),
            })
            .collect())
    }

    /// Deletes the records of calls started before the hour `before` falls in, `chunk` rows at a time (calling
    /// `progress` with the running total), keeping the rollups: reports over those hours still
    /// answer from them. Returns how many records were deleted.
    pub async fn prune(
        &self,
        before: DateTime<Utc>,
        chunk: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        macro_rules! prune {
            ($pool:expr, $dialect:ty) => {{
                let mut connection = $pool
                    .acquire()
                    .await
                    .map_err(|error| Error::database(DbStep::Connect, &self.target, error))?;
                crate::sink::sql::core::prune::<$dialect>(
                    &mut connection,
                    &self.config,
                    before,
                    chunk,
                    None,
                    &mut progress,
                )
                .await
            }};
        }
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => prune!(pool, crate::sink::sql::sqlite::Sqlite3),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => prune!(pool, crate::sink::sql::postgres::Postgres),
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => prune!(pool, crate::sink::sql::mysql::MySql8),
        }
        .map_err(|error| Error::database(DbStep::Write, &self.target, error))
    }
}

use crate::sink::Backend as Kind;

/// A rollup sum as the database returns it: a number, or `high:low` halves (SQLite).
fn parse_sum(text: &str) -> Option<i128> {
    match text.split_once(':') {
        Some((high, low)) => Some((high.parse::<i128>().ok()? << 32) + low.parse::<i128>().ok()?),
        None => text.split('.').next()?.parse().ok(),
    }
}

/// Groups being summed from rollup rows, found by their values without allocating per row.
#[derive(Default)]
struct Groups {
    index: std::collections::HashMap<String, usize>,
    rows: Vec<(Vec<String>, Group)>,
}

/// A time range: since, until.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Which rollup tier answers which part of the query's range: hour buckets from the hourly rows;
/// otherwise whole UTC days from the daily rows and only the hours at either edge of the range
/// from the hourly ones.
fn plan(query: &Query) -> Vec<(Tier, Range)> {
    let (since, until) = (query.since, query.until);
    if query.bucket == Some(TimeBucket::Hour) {
        return vec![(Tier::Hour, (since, until))];
    }
    let day = |at: DateTime<Utc>| Tier::Day.start(at);
    let first_day = since.map(|at| {
        if day(at) == at {
            at
        } else {
            day(at) + chrono::Duration::days(1)
        }
    });
    let last_day = until.map(day);
    if let (Some(first), Some(last)) = (first_day, last_day) {
        if first >= last {
            return vec![(Tier::Hour, (since, until))];
        }
    }
    let mut parts = vec![(Tier::Day, (first_day, last_day))];
    if let (Some(since), Some(first)) = (since, first_day) {
        if since < first {
            parts.push((Tier::Hour, (Some(since), Some(first))));
        }
    }
    if let (Some(until), Some(last)) = (until, last_day) {
        if last < until {
            parts.push((Tier::Hour, (Some(last), Some(until))));
        }
    }
    parts
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc))
}

fn add(
    query: &Query,
    groups: &mut BTreeMap<BTreeMap<String, String>, Group>,
    fact: &Fact,
    bucket: Option<u32>,
) {
    let group = groups.entry(query.key(fact)).or_default();
    group.calls += fact.calls;
    if fact.outcome == "error" {
        group.errors += fact.calls;
    }
    group.input = group.input.saturating_add(fact.input);
    group.output = group.output.saturating_add(fact.output);
    group.cached = group.cached.saturating_add(fact.cached);
    group.cost = group.cost.saturating_add(fact.cost);
    group.operations.insert(fact.operation.clone());
    if !fact.user.is_empty() {
        group.users.insert(fact.user.clone());
    }
    if let Some(bucket) = bucket {
        group.count(bucket, fact.calls);
    }
}
