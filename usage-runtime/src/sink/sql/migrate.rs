//! The migration runner, once for every database: one migrator at a time across processes (the
//! dialect's lock), each change applied once and recorded, the records rolled up when the
//! rollups are created, and rollups made by earlier versions upgraded in place. Rows the runner
//! reads back come as text, through the dialect's casts, so their decoding is written once.

use chrono::{DateTime, Utc};

use super::dialect::{first, Arg, Conn, Dialect, MigrationLock};
use super::{Change, Migration, SqlConfig, LATER_TOKEN_KINDS, SHARED_CHANGES};
use crate::error::{DbStep, Error};
use crate::record::Outcome;
use crate::rollup::{Cell, Parts, Rollup, RollupKey, RollupSums, Tier};

/// Records (or rollup rows) read per statement by a backfill or an upgrade.
const PAGE: usize = 10_000;

/// The statement creating `tier`'s rollup table.
fn rollup_table<D: Dialect>(config: &SqlConfig, tier: Tier) -> String {
    let sql = D::ROLLUP_TABLE
        .replace("{prefix}{table}", &config.tier_table(tier))
        .replace("{time}", tier.column());
    Migration::text(&sql, config)
}

/// Whether the table `name` exists.
pub(super) async fn exists<D: Dialect>(
    connection: &mut Conn<D>,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let rows = D::rows(connection, D::TABLE_EXISTS.to_owned(), &[Arg::Text(name)]).await?;
    Ok(rows
        .iter()
        .any(|row| row.first().is_some_and(Option::is_some)))
}

/// Applies the migrations not yet recorded, one migrator at a time across processes.
pub(crate) async fn migrate<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    target: &str,
) -> Result<(), Error> {
    let fail = |error: sqlx::Error| Error::database(DbStep::Migrate, target, error);
    let table = config.migrations_table();
    match D::LOCK {
        MigrationLock::EachStep(_) => {}
        MigrationLock::OneTransaction(lock) => {
            D::raw(connection, "BEGIN".into()).await.map_err(fail)?;
            if let Err(error) = D::execute(connection, lock.into(), &[Arg::Text(&table)]).await {
                let _ = D::raw(connection, "ROLLBACK".into()).await;
                return Err(fail(error));
            }
        }
        MigrationLock::Named { get, .. } => {
            let got = D::rows(connection, get.into(), &[Arg::Text(&table)])
                .await
                .map_err(fail)?;
            if first(&got) != Some("1") {
                return Err(Error::database(
                    DbStep::Migrate,
                    target,
                    "another process held the migration lock for 30 s",
                ));
            }
        }
    }
    let result = apply::<D>(connection, config, &table).await;
    match (D::LOCK, &result) {
        (MigrationLock::EachStep(_), Err(_)) => {
            let _ = D::raw(connection, "ROLLBACK".into()).await;
        }
        (MigrationLock::EachStep(_), Ok(())) => {}
        (MigrationLock::OneTransaction(_), Ok(())) => {
            D::raw(connection, "COMMIT".into()).await.map_err(fail)?;
        }
        (MigrationLock::OneTransaction(_), Err(_)) => {
            let _ = D::raw(connection, "ROLLBACK".into()).await;
        }
        (MigrationLock::Named { release, .. }, _) => {
            let _ = D::execute(connection, release.into(), &[Arg::Text(&table)]).await;
        }
    }
    result.map_err(fail)?;
    match D::check_schema(connection, config).await.map_err(fail)? {
        None => Ok(()),
        Some(problem) => Err(Error::database(DbStep::Migrate, target, problem)),
    }
}

/// The migration runner proper, under the lock.
async fn apply<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    table: &str,
) -> Result<(), sqlx::Error> {
    // Checked first, so a user who may not create tables can still run an up-to-date schema.
    if !exists::<D>(connection, table).await? {
        D::raw(connection, D::MIGRATIONS_TABLE.replace("{table}", table)).await?;
    }
    for migration in plan::<D>() {
        if let MigrationLock::EachStep(begin) = D::LOCK {
            D::raw(connection, begin.into()).await?;
        }
        let applied = D::rows(
            connection,
            format!(
                "SELECT {} FROM {table} WHERE version = {}",
                D::as_text("version"),
                D::param(1)
            ),
            &[Arg::Int(migration.version)],
        )
        .await?;
        if applied.is_empty() {
            match migration.change {
                Change::Sql { sql, .. } => D::raw(connection, Migration::text(sql, config)).await?,
                Change::Rollups => {
                    for tier in [Tier::Hour, Tier::Day] {
                        D::raw(connection, rollup_table::<D>(config, tier)).await?;
                    }
                    // The rollups are written in the current shape from here on.
                    later_sums::<D>(connection, config).await?;
                    backfill::<D>(connection, config).await?;
                }
                Change::Catalog => {
                    D::raw(connection, Migration::text(D::CATALOG_TABLE, config)).await?
                }
                Change::Daily => upgrade_rollups::<D>(connection, config).await?,
                Change::Horizon => super::horizon::create::<D>(connection, config).await?,
                Change::TokenKinds => {
                    let mut columns: Vec<(&str, &str)> = LATER_TOKEN_KINDS
                        .iter()
                        .map(|kind| (kind.name(), D::COUNT_TYPE))
                        .collect();
                    columns.push(("price_id", D::LABEL_TYPE));
                    add_missing::<D>(connection, &config.records_table(), &columns).await?;
                    later_sums::<D>(connection, config).await?;
                }
            }
            let now = D::time_text(Utc::now());
            D::execute(
                connection,
                format!(
                    "INSERT INTO {table} (version, description, applied_at) VALUES ({}, {}, {})",
                    D::param(1),
                    D::param(2),
                    D::time_param(3)
                ),
                &[
                    Arg::Int(migration.version),
                    Arg::Text(migration.description()),
                    Arg::Text(&now),
                ],
            )
            .await?;
        }
        if let MigrationLock::EachStep(_) = D::LOCK {
            D::raw(connection, "COMMIT".into()).await?;
        }
    }
    Ok(())
}

/// Every migration of `D`, its own and the shared ones, by version.
fn plan<D: Dialect>() -> Vec<Migration> {
    let shared = SHARED_CHANGES.into_iter().zip(D::SHARED_VERSIONS);
    let mut plan: Vec<Migration> = D::MIGRATIONS
        .iter()
        .copied()
        .chain(shared.map(|(change, version)| Migration::new(version, change)))
        .collect();
    plan.sort_by_key(|migration| migration.version);
    plan
}

/// Adds to `table` each of `columns` (name, type) it does not have yet, so a change that an
/// earlier one may have made already (the rollups are created in the current shape) is applied
/// once.
async fn add_missing<D: Dialect>(
    connection: &mut Conn<D>,
    table: &str,
    columns: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let present = D::columns(connection, table).await?;
    for (name, sql_type) in columns {
        if !present.iter().any(|column| column == name) {
            let sql = format!("ALTER TABLE {table} ADD COLUMN {name} {sql_type}");
            D::raw(connection, sql).await?;
        }
    }
    Ok(())
}

/// The sums of [`LATER_TOKEN_KINDS`] in both rollup tiers.
async fn later_sums<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let columns: Vec<(&str, &str)> = LATER_TOKEN_KINDS
        .iter()
        .map(|kind| (kind.name(), D::SUM_TYPE))
        .collect();
    for tier in [Tier::Hour, Tier::Day] {
        if exists::<D>(connection, &config.tier_table(tier)).await? {
            add_missing::<D>(connection, &config.tier_table(tier), &columns).await?;
        }
    }
    Ok(())
}

/// A decoding failure of a row the core read back.
fn decode(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

fn time(text: Option<&str>) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text.unwrap_or_default())
        .map(|at| at.with_timezone(&Utc))
        .map_err(decode)
}

fn outcome(text: Option<&str>) -> Result<Outcome, sqlx::Error> {
    text.unwrap_or_default().parse().map_err(decode)
}

/// A count read back as text: held to the `u64` range (a negative one is zero).
pub(super) fn count(text: Option<&str>) -> Option<u64> {
    let value: i128 = text?.split('.').next()?.parse().ok()?;
    Some(value.clamp(0, i128::from(u64::MAX)) as u64)
}

pub(super) fn int(text: Option<&str>) -> i64 {
    text.and_then(|text| text.split('.').next()?.parse().ok())
        .unwrap_or(0)
}

/// Hexadecimal text as bytes (either case).
fn unhex(text: Option<&str>) -> Vec<u8> {
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    text.unwrap_or_default()
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| digit(pair[0]) << 4 | digit(pair[1]))
        .collect()
}

/// The key of a rollup row read back: its first six columns.
pub(super) fn key_of(row: &[Option<String>]) -> Result<RollupKey, sqlx::Error> {
    let text = |column: usize| row[column].clone().unwrap_or_default();
    Ok(RollupKey {
        start: time(row[0].as_deref())?,
        service: text(1),
        operation: text(2),
        tenant_id: text(3),
        model: text(4),
        outcome: outcome(row[5].as_deref())?.as_str(),
    })
}

/// `columns` as text, comma-separated.
fn texts<D: Dialect>(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|column| D::as_text(column))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The six key columns of a rollup row, as the core reads them.
fn key_columns<D: Dialect>(time: &str) -> String {
    format!(
        "{}, service, operation, tenant_id, model, outcome",
        D::time_as_text(time)
    )
}

/// Rolls up the records already in the table (when the rollups are created), a page at a time.
async fn backfill<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    D::before_backfill(connection, config).await?;
    let statement = format!(
        "SELECT {}, {}, service, operation, tenant_id, model, outcome, {} \
         FROM {} WHERE id {{}} {} ORDER BY id LIMIT {PAGE}",
        D::as_text("id"),
        D::time_as_text("started_at"),
        texts::<D>(&[
            "duration_us",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cost_nano_usd"
        ]),
        config.records_table(),
        D::id_param(1),
    );
    // From the smallest id (the nil one included), then past the last id read.
    let mut after = uuid::Uuid::nil().hyphenated().to_string();
    let mut compare = ">=";
    loop {
        let page = statement.replace("{}", compare);
        let rows = D::rows(connection, page, &[Arg::Text(&after)]).await?;
        compare = ">";
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last[0].clone().unwrap_or_default();
        let mut rollup = Rollup::default();
        for row in &rows {
            let text = |column: usize| row[column].as_deref();
            rollup.add_parts(Parts {
                started_at: time(text(1))?,
                service: text(2).unwrap_or_default(),
                operation: text(3).unwrap_or_default(),
                tenant_id: text(4),
                model: text(5),
                outcome: outcome(text(6))?,
                duration_us: count(text(7)).unwrap_or(0),
                // The kinds the records had when the rollups came; the later ones came after.
                tokens: [
                    count(text(8)),
                    count(text(9)),
                    count(text(10)),
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
                cost_nano_usd: text(11).map(|cost| int(Some(cost))),
            });
        }
        D::add_rollup(connection, config, &rollup).await?;
    }
}

/// Brings rollups made before the daily tier into the current shape: each hour's histogram
/// (one row per bucket in the legacy table) into its row's `latency`, the daily rows from the
/// hourly ones, then the legacy table dropped. Nothing to do when the rollups were created in
/// the current shape.
async fn upgrade_rollups<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let legacy = config.legacy_latency_table();
    if !exists::<D>(connection, &legacy).await? {
        return Ok(());
    }
    D::raw(connection, rollup_table::<D>(config, Tier::Day)).await?;
    later_sums::<D>(connection, config).await?;
    D::before_upgrade(connection, config).await?;
    let Some(reset) = D::UPGRADE_RESET else {
        fold_histograms::<D>(connection, config).await?;
        return D::raw(connection, format!("DROP TABLE {legacy}")).await;
    };
    // DDL is not transactional here: an interrupted upgrade is redone from the start, so the
    // fold's targets are emptied first, in the fold's own transaction.
    D::raw(connection, "BEGIN".into()).await?;
    let reset = reset
        .replace("{hourly}", &config.rollups_table())
        .replace("{daily}", &config.daily_rollups_table());
    let result = match D::raw(connection, reset).await {
        Ok(()) => fold_histograms::<D>(connection, config).await,
        Err(error) => Err(error),
    };
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = D::raw(connection, end.into()).await;
    // The fold's own error, if any, says more than a failed rollback after it.
    result?;
    ended?;
    D::raw(connection, format!("DROP TABLE {legacy}")).await
}

/// The legacy histograms into the hourly rows (their sums zero: those are in the rows already),
/// then the daily rows from the hourly ones, a page of hours at a time.
async fn fold_histograms<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    let legacy = config.legacy_latency_table();
    let hourly = config.rollups_table();
    let hour = D::time_as_text("hour");
    let keys = key_columns::<D>("hour");
    let passes = [
        (
            Tier::Hour,
            legacy.as_str(),
            format!("{keys}, {}", texts::<D>(&["bucket", "calls"])),
        ),
        (
            Tier::Day,
            hourly.as_str(),
            format!(
                "{keys}, {}, {}",
                texts::<D>(&RollupSums::COLUMNS),
                D::hex("latency"),
            ),
        ),
    ];
    for (tier, table, columns) in passes {
        // Pages of whole hours, compared as the text they are read as (the same on every
        // database), so a page never splits an hour.
        let mut after = String::new();
        loop {
            let hours = D::rows(
                connection,
                format!(
                    "SELECT DISTINCT {hour} FROM {table} WHERE {hour} > {} ORDER BY 1 LIMIT {}",
                    D::param(1),
                    PAGE / 100
                ),
                &[Arg::Text(&after)],
            )
            .await?;
            let Some(last) = hours.last().and_then(|row| row[0].clone()) else {
                break;
            };
            let rows = D::rows(
                connection,
                format!(
                    "SELECT {columns} FROM {table} WHERE {hour} > {} AND {hour} <= {}",
                    D::param(1),
                    D::param(2)
                ),
                &[Arg::Text(&after), Arg::Text(&last)],
            )
            .await?;
            after = last;
            let mut rollup = Rollup::default();
            for row in &rows {
                let text = |column: usize| row[column].as_deref();
                let cell = match tier {
                    Tier::Hour => Cell::bucket(int(text(6)), int(text(7))),
                    Tier::Day => Cell::stored(
                        |i| int(text(6 + i)),
                        &unhex(text(6 + RollupSums::COLUMNS.len())),
                    )
                    .map_err(decode)?,
                };
                rollup.add_cell(tier, key_of(row)?, &cell);
            }
            match tier {
                Tier::Hour => rollup.days.clear(),
                Tier::Day => rollup.hours.clear(),
            }
            D::add_rollup(connection, config, &rollup).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Each database's versions run from 1 without a gap or a repeat, the shared changes in
    /// their order, so no database skips or reorders a change.
    #[test]
    fn every_database_applies_every_change_once_in_order() {
        fn check<D: super::Dialect>() {
            let plan = super::plan::<D>();
            let versions: Vec<i64> = plan.iter().map(|migration| migration.version).collect();
            assert_eq!(
                versions,
                (1..=plan.len() as i64).collect::<Vec<_>>(),
                "{}",
                D::SINK
            );
            assert!(D::SHARED_VERSIONS.windows(2).all(|pair| pair[0] < pair[1]));
        }
        #[cfg(feature = "sqlite")]
        check::<crate::sink::sql::sqlite::Sqlite3>();
        #[cfg(feature = "postgres")]
        check::<crate::sink::sql::postgres::Postgres>();
        #[cfg(feature = "mysql")]
        check::<crate::sink::sql::mysql::MySql8>();
    }

    #[test]
    fn counts_and_bytes_read_back_as_text() {
        assert_eq!(super::count(Some("18446744073709551615")), Some(u64::MAX));
        assert_eq!(super::count(Some("-3")), Some(0));
        assert_eq!(super::count(Some("12.0")), Some(12));
        assert_eq!(super::count(None), None);
        assert_eq!(super::unhex(Some("00fFA1")), vec![0, 255, 161]);
        assert_eq!(super::unhex(None), Vec::<u8>::new());
    }
}
