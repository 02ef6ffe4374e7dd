//! The pruned horizon: the hour before which the records were deleted while their rollups were
//! kept. A record that started before it is refused at write ([`Error::Expired`]), never added
//! to rollups that may already count it (a record pruned, then written again from an old spool
//! or a stream replayed from its start).
//!
//! A prune raises the horizon, committed, before it deletes; a write reads it with a shared lock
//! in its own transaction. So a write either ends before the horizon moves (and what it inserted
//! is pruned with the rest) or reads the new one: no record is pruned and then added again.
//!
//! [`Error::Expired`]: crate::Error::Expired

use chrono::{DateTime, Utc};
use sqlx::Connection as _;

use super::dialect::{first, Arg, Conn, Dialect};
use super::{Migration, SqlConfig};
use crate::rollup::hour_of;

/// The horizon's row in the table.
const ROW: &str = "'records'";

fn parse(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The first time in `column` of `table` (the last with `newest`).
async fn edge<D: Dialect>(
    connection: &mut Conn<D>,
    table: &str,
    column: &str,
    newest: bool,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let order = if newest { " DESC" } else { "" };
    let rows = D::rows(
        connection,
        format!(
            "SELECT {} FROM {table} ORDER BY {column}{order} LIMIT 1",
            D::time_as_text(column)
        ),
        &[],
    )
    .await?;
    Ok(parse(first(&rows)))
}

/// Creates the horizon's table. A database pruned by an earlier version (rollup hours older than
/// the oldest record, or rollups without records) starts from the oldest record's hour (or the
/// hour after the last rollup), so what was pruned then is refused too; else from the epoch.
pub(crate) async fn create<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<(), sqlx::Error> {
    D::raw(connection, Migration::text(D::HORIZON_TABLE, config)).await?;
    let table = config.pruned_table();
    let exists = D::rows(
        connection,
        format!("SELECT name FROM {table} WHERE name = {ROW}"),
        &[],
    )
    .await?;
    if !exists.is_empty() {
        return Ok(());
    }
    let hourly = config.rollups_table();
    let oldest_record = edge::<D>(connection, &config.records_table(), "started_at", false).await?;
    let oldest_hour = edge::<D>(connection, &hourly, "hour", false).await?;
    let initial = match (oldest_record, oldest_hour) {
        (Some(record), Some(hour)) if hour < hour_of(record) => hour_of(record),
        (None, Some(_)) => {
            let newest = edge::<D>(connection, &hourly, "hour", true).await?;
            newest.map_or(DateTime::UNIX_EPOCH, |hour| {
                hour + chrono::Duration::hours(1)
            })
        }
        _ => DateTime::UNIX_EPOCH,
    };
    D::execute(
        connection,
        format!(
            "INSERT INTO {table} (name, pruned_before) VALUES ({ROW}, {})",
            D::time_param(1)
        ),
        &[Arg::Text(&D::time_text(initial))],
    )
    .await
    .map(|_| ())
}

/// Raises the horizon to `cutoff` (committed before anything is deleted); never lowers it.
/// Refuses a database whose schema predates the horizon (`usage prune` does not migrate):
/// deleting there would let a pruned record be added again.
pub(crate) async fn raise<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    cutoff: &str,
) -> Result<(), sqlx::Error> {
    let table = config.pruned_table();
    let row = format!("SELECT name FROM {table} WHERE name = {ROW}");
    if !super::migrate::exists::<D>(connection, &table).await?
        || D::rows(connection, row, &[]).await?.is_empty()
    {
        return Err(sqlx::Error::Configuration(
            format!(
                "table `{table}` is missing: the schema predates the pruned horizon; run \
                 `usage migrate` (or start a tracker on this database) before pruning"
            )
            .into(),
        ));
    }
    let mut tx = connection.begin().await?;
    D::execute(
        &mut *tx,
        format!(
            "UPDATE {} SET pruned_before = {} WHERE name = {ROW} AND pruned_before < {}",
            config.pruned_table(),
            D::time_param(1),
            D::time_param(2)
        ),
        &[Arg::Text(cutoff), Arg::Text(cutoff)],
    )
    .await?;
    tx.commit().await
}

/// The horizon, read in the caller's write transaction with a shared lock (a prune raising it
/// waits for the write, and a write after the prune's raise reads the new one).
pub(crate) async fn read<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let rows = D::rows(
        connection,
        format!(
            "SELECT {} FROM {} WHERE name = {ROW}{}",
            D::time_as_text("pruned_before"),
            config.pruned_table(),
            D::SHARE_LOCK
        ),
        &[],
    )
    .await?;
    Ok(parse(first(&rows)).unwrap_or(DateTime::UNIX_EPOCH))
}
