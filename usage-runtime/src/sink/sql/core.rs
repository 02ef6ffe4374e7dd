//! The SQL sink, once for every database: connecting, verification, writing a batch in parts
//! with its rollups, the catalog and prune (the migrations are in `migrate.rs`). The SQL each database writes its own way comes
//! from its [`Dialect`].

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection as _;

use super::connect::{resolve, with_connect_timeout, CONNECT_TIMEOUT};
use super::dialect::{first, Arg, Conn, Dialect, Options};
use super::migrate::migrate;
use super::split::Split;
use super::{SqlConfig, StepClock, VerifyReport};
use crate::call::catalog::Operation;
use crate::error::{redact_url, DbStep, Error};
use crate::record::UsageRecord;
use crate::rollup::Rollup;
use uuid::Uuid;

/// Records deleted per statement when pruning.
pub(crate) const PRUNE_CHUNK: u64 = 10_000;

/// How long one `prune` goes on before it returns what it deleted (the tracker calls again soon
/// while there is more): the tracker's worker waits for it, so a large backlog must not hold
/// up writes. Unit tests stop after each statement.
pub(crate) const PRUNE_BUDGET: Duration = if cfg!(test) {
    Duration::ZERO
} else {
    Duration::from_secs(1)
};

/// A SQL sink over one database.
pub(crate) struct SqlSink<D: Dialect> {
    options: Options<D>,
    pub(crate) config: SqlConfig,
    pub(crate) target: String,
    pool: Option<(sqlx::Pool<D::Db>, D::Limits)>,
}

impl<D: Dialect> fmt::Debug for SqlSink<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(D::SINK)
            .field("database", &self.target)
            .field("table", &self.config.records_table())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlSink<D> {
    /// Parses `url` and brings the schema up to date. The worker opens its own connections
    /// later, on its own runtime.
    pub(crate) async fn connect(url: &str, config: SqlConfig) -> Result<Self, Error> {
        let options = D::options(url).map_err(|error| Error::InvalidUrl {
            url: redact_url(url),
            reason: error.to_string(),
        })?;
        let sink = SqlSink {
            target: D::endpoint(&options).map_or_else(|| redact_url(url), |at| at.describe()),
            options,
            config,
            pool: None,
        };
        let mut connection = sink.open().await?;
        migrate::<D>(&mut connection, &sink.config, &sink.target).await?;
        let _ = connection.close().await;
        Ok(sink)
    }

    async fn resolve(&self) -> Result<(), Error> {
        match D::endpoint(&self.options).map(|at| at.address()) {
            Some((host, port)) => resolve(&host, port, &self.target).await,
            None => Ok(()),
        }
    }

    /// Resolves the host, connects and logs in, each step a named error.
    async fn open(&self) -> Result<Conn<D>, Error> {
        self.resolve().await?;
        with_connect_timeout(&self.target, async {
            let fail =
                |error: sqlx::Error| Error::database(D::connect_step(&error), &self.target, error);
            let mut connection = Conn::<D>::connect_with(&self.options).await.map_err(fail)?;
            D::session(&mut connection)
                .await
                .map_err(|error| Error::database(DbStep::Connect, &self.target, error))?;
            Ok(connection)
        })
        .await
    }

    async fn pool(&mut self) -> Result<(sqlx::Pool<D::Db>, D::Limits), Error> {
        if let Some((pool, limits)) = &self.pool {
            return Ok((pool.clone(), *limits));
        }
        self.resolve().await?;
        let fail =
            |error: sqlx::Error| Error::database(D::connect_step(&error), &self.target, error);
        let pool = D::pool_options(&self.config)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(self.options.clone())
            .await
            .map_err(fail)?;
        let mut connection = pool.acquire().await.map_err(fail)?;
        if D::MIGRATE_POOL {
            migrate::<D>(&mut *connection, &self.config, &self.target).await?;
        }
        let limits = D::limits(&mut *connection)
            .await
            .map_err(|error| Error::database(DbStep::Read, &self.target, error))?;
        drop(connection);
        self.pool = Some((pool.clone(), limits));
        Ok((pool, limits))
    }

    /// Startup verification: resolves, connects, logs in, migrates, writes a probe record, reads
    /// it back and deletes it. Each failure names its step and the database, never the password.
    pub(crate) async fn verify(&self) -> Result<VerifyReport, Error> {
        let mut clock = StepClock::new();
        if D::endpoint(&self.options).is_some() {
            self.resolve().await?;
            clock.done(DbStep::Resolve);
        }
        let mut connection = self.open().await?;
        clock.done(match D::endpoint(&self.options) {
            Some(_) => DbStep::Authenticate,
            None => DbStep::Connect,
        });
        let fail = |step| move |error: sqlx::Error| Error::database(step, &self.target, error);
        let version = D::rows(&mut connection, D::VERSION.to_owned(), &[])
            .await
            .map_err(fail(DbStep::Read))?;
        let version = first(&version).unwrap_or_default().to_owned();
        migrate::<D>(&mut connection, &self.config, &self.target).await?;
        clock.done(DbStep::Migrate);
        let probe = super::super::probe_record();
        let mut tx = connection.begin().await.map_err(fail(DbStep::Write))?;
        let limits = D::limits(&mut *tx).await.map_err(fail(DbStep::Read))?;
        D::insert(&mut *tx, &self.config, limits, std::slice::from_ref(&probe))
            .await
            .map_err(fail(DbStep::Write))?;
        tx.commit().await.map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Write);
        let table = self.config.records_table();
        let id = probe.id.hyphenated().to_string();
        let read = D::rows(
            &mut connection,
            format!(
                "SELECT operation FROM {table} WHERE id = {}",
                D::id_param(1)
            ),
            &[Arg::Text(&id)],
        )
        .await
        .map_err(fail(DbStep::Read))?;
        if first(&read) != Some(probe.operation.as_ref()) {
            return Err(Error::database(
                DbStep::Read,
                &self.target,
                "the probe record written was not read back",
            ));
        }
        D::execute(
            &mut connection,
            format!("DELETE FROM {table} WHERE id = {}", D::id_param(1)),
            &[Arg::Text(&id)],
        )
        .await
        .map_err(fail(DbStep::Write))?;
        clock.done(DbStep::Read);
        let _ = connection.close().await;
        Ok(clock.report(&self.target, D::server_version(version)))
    }

    pub(crate) async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let (pool, limits) = self.pool().await?;
        // Each part and its rollups commit together, the parts at once on their own connections.
        // A failed part does not cancel the others: each runs to its end, and the write says
        // which records committed (`Split::settle`). Only the worker's write timeout or shutdown
        // deadline drops the whole write; its records' outcome is then unknown.
        let split = Split::new(batch, D::writers(&self.config));
        let results = futures_util::future::join_all(split.parts().map(|part| async {
            let mut connection = pool
                .acquire()
                .await
                .map_err(|error| Error::database(D::connect_step(&error), &self.target, error))?;
            write_part::<D>(&mut *connection, &self.config, limits, part)
                .await
                .map_err(|error| Error::database(DbStep::Write, &self.target, error))
        }))
        .await;
        let mut refused = Vec::new();
        let mut horizon = DateTime::UNIX_EPOCH;
        let results = results
            .into_iter()
            .map(|result| {
                result.map(|(ids, at)| {
                    refused.extend(ids);
                    horizon = horizon.max(at);
                })
            })
            .collect();
        match split.settle(results) {
            Ok(()) if refused.is_empty() => Ok(()),
            Ok(()) => Err(Error::Expired {
                refused: crate::error::RecordIds(refused),
                horizon,
            }),
            // The refused records of committed parts go on with the rest (refused again there).
            Err(Error::PartlyWritten {
                mut written,
                source,
            }) => {
                let refused: std::collections::HashSet<Uuid> = refused.into_iter().collect();
                written.0.retain(|id| !refused.contains(id));
                if written.is_empty() {
                    // Nothing new committed: the batch failed as its failed part did.
                    Err(*source)
                } else {
                    Err(Error::PartlyWritten { written, source })
                }
            }
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn register(
        &mut self,
        service: &str,
        operations: &[&'static Operation],
    ) -> Result<(), Error> {
        let (pool, _) = self.pool().await?;
        let fail = |error: sqlx::Error| Error::database(DbStep::Write, &self.target, error);
        let mut connection = pool.acquire().await.map_err(fail)?;
        D::register(&mut *connection, &self.config, (service, operations))
            .await
            .map_err(fail)
    }

    pub(crate) async fn prune(&mut self, before: DateTime<Utc>) -> Result<u64, Error> {
        let (pool, _) = self.pool().await?;
        let mut connection = pool
            .acquire()
            .await
            .map_err(|error| Error::database(D::connect_step(&error), &self.target, error))?;
        let bounds = (before, PRUNE_CHUNK, Some(PRUNE_BUDGET));
        prune::<D>(&mut *connection, &self.config, bounds, |_| {})
            .await
            .map_err(|error| Error::database(DbStep::Write, &self.target, error))
    }
}

/// Writes `part` and, from the records it actually inserted (so a replayed record counts once),
/// its rollups, in one transaction. Records that started before the pruned horizon are refused
/// (answered with the horizon), never added.
async fn write_part<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    limits: D::Limits,
    part: &[UsageRecord],
) -> Result<(Vec<Uuid>, DateTime<Utc>), sqlx::Error> {
    let mut tx = match D::BEGIN_WRITE {
        Some(begin) => connection.begin_with(begin).await?,
        None => connection.begin().await?,
    };
    let horizon = super::horizon::read::<D>(&mut *tx, config).await?;
    let refused: Vec<Uuid> = part
        .iter()
        .filter(|record| record.started_at < horizon)
        .map(|record| record.id)
        .collect();
    let kept: std::borrow::Cow<'_, [UsageRecord]> = if refused.is_empty() {
        std::borrow::Cow::Borrowed(part)
    } else {
        part.iter()
            .filter(|record| record.started_at >= horizon)
            .cloned()
            .collect()
    };
    if !kept.is_empty() {
        let mut inserted = D::insert(&mut *tx, config, limits, &kept).await?;
        // `remove`: a record repeated within the part counts once too.
        let rollup = Rollup::of(kept.iter().filter(|record| inserted.remove(&record.id)));
        if !rollup.is_empty() {
            D::add_rollup(&mut *tx, config, &rollup).await?;
        }
    }
    tx.commit().await?;
    Ok((refused, horizon))
}

/// Deletes, `chunk` at a time, the records of calls started before the hour `before` falls in
/// (whole hours, as everywhere: an hour is in the records entirely or not at all, so a report
/// from the records over a kept hour matches the rollups), keeping the rollups. Stops when
/// nothing is left or after `budget`; calls `progress` with the running total.
pub(crate) async fn prune<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    (before, chunk, budget): (DateTime<Utc>, u64, Option<Duration>),
    mut progress: impl FnMut(u64),
) -> Result<u64, sqlx::Error> {
    let statement = D::prune_statement(&config.records_table(), chunk.max(1));
    let cutoff = D::time_text(crate::rollup::hour_of(before));
    // Before anything goes, so no write adds again what is about to be deleted.
    super::horizon::raise::<D>(connection, config, &cutoff).await?;
    let started = Instant::now();
    let mut total = 0;
    loop {
        let deleted = D::execute(connection, statement.clone(), &[Arg::Text(&cutoff)]).await?;
        total += deleted;
        progress(total);
        if deleted == 0 || budget.is_some_and(|budget| started.elapsed() >= budget) {
            return Ok(total);
        }
    }
}
