//! The catalog and retention, as the CLI runs them.

use super::*;
use crate::sink::sql::core::prune;
use crate::sink::sql::reprice::reprice;

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
        let mut query = Query::new().group_by([GroupBy::Service, GroupBy::Operation]);
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

    /// Recomputes the cost and price id of the stored records `filter` matches at `pricing`
    /// (each priced by the entry in force when it started), and, unless `dry_run`, writes them:
    /// each changed record with its cost difference added to its hourly and daily rollup rows,
    /// a page at a time in one transaction, so the rollups stay equal to the records. A record
    /// whose model the table does not price is kept as it is. Calls `progress` with the
    /// records read so far and how many match. Hours already pruned keep the costs their rollups
    /// have.
    pub async fn reprice(
        &self,
        pricing: &crate::Pricing,
        filter: &RepriceFilter,
        dry_run: bool,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Repriced, Error> {
        if !self.later_kinds {
            return Err(Error::database(
                DbStep::Migrate,
                &self.target,
                "the records have no price ids yet: the schema predates them; run `usage migrate`",
            ));
        }
        let job = (pricing, filter, dry_run);
        on_pool!(self, |pool, Dialect, _kind| {
            let mut connection = self.acquire(pool).await?;
            reprice::<Dialect>(&mut connection, &self.config, job, &mut progress).await
        })
        .map_err(|error| Error::database(DbStep::Write, &self.target, error))
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
        let bounds = (before, chunk, None);
        on_pool!(self, |pool, Dialect, _kind| {
            let mut connection = self.acquire(pool).await?;
            prune::<Dialect>(&mut connection, &self.config, bounds, &mut progress).await
        })
        .map_err(|error| Error::database(DbStep::Write, &self.target, error))
    }
}
