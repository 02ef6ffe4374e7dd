//! Reading: the SQL each database answers a report with, from the rollups or the records.

use super::aggregate::add_tokens;
use super::aggregate::Range;
use super::*;
use crate::rollup::RollupSums;
use crate::TokenKind;

/// How many token kinds a row carries.
const TOKENS: usize = TokenKind::ALL.len();

impl Reader {
    /// The report from the rollups, grouped by the database: only one row per group (and per
    /// latency bucket) comes back.
    pub(super) async fn read_rollups(&self, query: &Query) -> Result<Summary, Error> {
        let groups = self.rollup_groups(query).await?;
        Ok(finish(query, groups, Source::Rollups))
    }

    /// The report with the whole hours inside `whole` from the rollups and the partial hours
    /// at the range's edges from the records.
    pub(super) async fn read_mixed(
        &self,
        query: &Query,
        (since, until): Range,
    ) -> Result<Summary, Error> {
        let within = |since, until| Query {
            since,
            until,
            ..query.clone()
        };
        let mut groups = self.rollup_groups(&within(since, until)).await?;
        let mut edges = Vec::new();
        if query.since < since {
            edges.push(within(query.since, since));
        }
        if until < query.until {
            edges.push(within(until, query.until));
        }
        for edge in edges {
            for (key, group) in self.record_groups(&edge).await? {
                groups.entry(key).or_default().merge(group);
            }
        }
        Ok(finish(query, groups, Source::RollupsAndRecords))
    }

    /// The groups of `query` (on whole hours) from the rollups.
    async fn rollup_groups(&self, query: &Query) -> Result<Grouped, Error> {
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
        Ok(groups
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
            .collect())
    }

    /// Adds the rows of one rollup tier within the query's range to `groups`. The database adds
    /// up each rollup key's rows (per time bucket) and concatenates their histograms (which sums
    /// them, see [`encode_latency`](crate::rollup::encode_latency)), so what crosses the wire is
    /// one row per key however many hours or days the range holds.
    pub(super) async fn read_tier(
        &self,
        query: &Query,
        tier: Tier,
        groups: &mut Groups,
    ) -> Result<(), Error> {
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
        // Every sum but the duration (the histogram has the latency), in `RollupSums` order.
        let sums = RollupSums::COLUMNS[..RollupSums::COLUMNS.len() - 1]
            .iter()
            .map(|column| sum(self.column(column)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {bucket_select}{key_columns}, {sums}, {histograms} FROM {}\
             {filters} GROUP BY {key_columns}{bucket_group}{exact}",
            self.config.tier_table(tier)
        );
        // Where each grouping value is in a row.
        let first = usize::from(bucket.is_some());
        let mut positions: Vec<usize> = query
            .group_by
            .iter()
            .map(|dimension| {
                first
                    + match dimension {
                        GroupBy::Service => 0,
                        GroupBy::Operation => 1,
                        GroupBy::Tenant => 2,
                        GroupBy::Model => 3,
                        GroupBy::Outcome => 4,
                        GroupBy::User => unreachable!("the rollups do not answer for users"),
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
                    let mut tokens = [0; TOKENS];
                    for (i, sum) in tokens.iter_mut().enumerate() {
                        *sum = count(1 + i)?;
                    }
                    add_tokens(&mut group.tokens, &tokens);
                    let cost = number(1 + TOKENS)?
                        .clamp(i128::from(i64::MIN), i128::from(i64::MAX))
                        as i64;
                    group.cost = group.cost.saturating_add(cost);
                    if !group.operations.contains(operation) {
                        group.operations.insert(operation.to_owned());
                    }
                    let latency: Option<&[u8]> =
                        row.try_get(sums_at + 2 + TOKENS).map_err(self.fail())?;
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
        on_pool!(self, |pool, _Dialect, kind| read!(
            pool,
            kind == Kind::Postgres
        ))
    }

    pub(super) async fn read_records(&self, query: &Query) -> Result<Summary, Error> {
        let groups = self.record_groups(query).await?;
        Ok(finish(query, groups, Source::Records))
    }

    /// The groups of `query` from the records.
    async fn record_groups(&self, query: &Query) -> Result<Grouped, Error> {
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
        let tokens = TokenKind::ALL
            .map(|kind| cast(self.column(kind.name())))
            .join(", ");
        let sql = format!(
            "SELECT {time}, service, operation, COALESCE(tenant_id, ''), {user}, COALESCE(model, ''), \
             outcome, {}, {tokens}, {} FROM {}{filters}",
            cast("duration_us"),
            cast("cost_nano_usd"),
            self.config.records_table()
        );
        let mut groups = Grouped::new();
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
                tokens: std::array::from_fn(|i| number(8 + i)),
                cost: row[8 + TOKENS].parse().unwrap_or(0),
            };
            add(query, &mut groups, &f, Some(latency_bucket(number(7))));
            Ok(())
        })
        .await?;
        Ok(groups)
    }

    /// Runs `sql` (with `?` placeholders bound to `values`) and reads every column as text.
    pub(super) async fn text_rows(
        &self,
        sql: &str,
        values: &[String],
    ) -> Result<Vec<Vec<String>>, Error> {
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
    pub(super) async fn each_row(
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
        on_pool!(self, |pool, _Dialect, kind| stream!(
            pool,
            kind == Kind::Postgres
        ))
    }
}
