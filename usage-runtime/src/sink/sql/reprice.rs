//! Repricing stored records with a corrected price table, once for every database: each record's
//! cost and price id rewritten, and the difference added to its hourly and daily rollup rows in
//! the same transaction, so the rollups stay equal to the records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::dialect::{Arg, Conn, Dialect};
use super::migrate::{count, int, key_of};
use super::SqlConfig;
use crate::pipeline::pricing::Pricing;
use crate::rollup::{Cell, Rollup, RollupKey, RollupSums, Tier};
use crate::TokenKind;

/// Records read per statement (and repriced per transaction).
const PAGE: usize = 2_000;

/// Which records to reprice: calls started in `[since, until)`, of `model` when given
/// (`RepriceFilter::default()` is every record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepriceFilter {
    /// Calls started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Calls started before.
    pub until: Option<DateTime<Utc>>,
    /// Only this model.
    pub model: Option<String>,
}

/// What a reprice changed (or, in a dry run, would change) for one model and tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RepriceRow {
    /// The model.
    pub model: String,
    /// The tenant (`""` for records without one).
    pub tenant: String,
    /// Records whose cost or price id changes.
    pub records: u64,
    /// Their costs before, nano-USD (an unpriced record counts 0).
    pub old_cost_nano_usd: i64,
    /// Their costs after, nano-USD.
    pub new_cost_nano_usd: i64,
}

/// The outcome of a reprice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Repriced {
    /// The changes by model and tenant, sorted.
    pub rows: Vec<RepriceRow>,
    /// Records the filter matched.
    pub records_read: u64,
    /// Records kept as they were because the new table gives them no cost: no price for their
    /// model (or none in force when they started), or no token counts. A reprice never turns
    /// a cost into "unpriced".
    pub records_without_price: u64,
    /// Whether the changes were written (not a dry run).
    pub written: bool,
}

/// One record as read back: id, the rollup key's parts, its tokens, its cost and price id.
struct Stored {
    id: String,
    key: RollupKey,
    tokens: [Option<u64>; 8],
    cost: Option<i64>,
    price_id: Option<String>,
}

/// Reprices the records `filter` matches at `pricing`, writing unless `dry_run`; calls
/// `progress` with the records read so far and how many match.
pub(crate) async fn reprice<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    (pricing, filter, dry_run): (&Pricing, &RepriceFilter, bool),
    mut progress: impl FnMut(u64, u64),
) -> Result<Repriced, sqlx::Error> {
    let records = config.records_table();
    let mut conditions = vec![
        format!("id {{}} {}", D::id_param(1)),
        "model IS NOT NULL".into(),
    ];
    let mut args: Vec<String> = vec![uuid::Uuid::nil().hyphenated().to_string()];
    for (column, bound) in [
        ("started_at >=", filter.since),
        ("started_at <", filter.until),
    ] {
        if let Some(at) = bound {
            args.push(D::time_text(at));
            conditions.push(format!("{column} {}", D::time_param(args.len())));
        }
    }
    if let Some(model) = &filter.model {
        args.push(model.clone());
        conditions.push(format!("model = {}", D::param(args.len())));
    }
    let tokens: Vec<String> = TokenKind::ALL
        .iter()
        .map(|k| D::as_text(k.name()))
        .collect();
    let select = format!(
        "SELECT {}, {}, service, operation, COALESCE(tenant_id, ''), model, outcome, {}, {}, \
         price_id FROM {records} WHERE {} ORDER BY id LIMIT {PAGE}",
        D::as_text("id"),
        D::time_as_text("started_at"),
        tokens.join(", "),
        D::as_text("cost_nano_usd"),
        conditions.join(" AND "),
    );
    let total = {
        let bound: Vec<Arg<'_>> = args.iter().map(|arg| Arg::Text(arg)).collect();
        let count = format!(
            "SELECT {} FROM {records} WHERE {}",
            D::as_text("COUNT(*)"),
            conditions.join(" AND ").replacen("{}", ">=", 1)
        );
        let rows = D::rows(connection, count, &bound).await?;
        super::migrate::count(super::dialect::first(&rows)).unwrap_or(0)
    };
    // Only a record still as it was read is changed, so a concurrent reprice or prune never
    // makes a rollup count a difference twice.
    let update = format!(
        "UPDATE {records} SET cost_nano_usd = {}, price_id = {} WHERE id = {} \
         AND COALESCE(cost_nano_usd, {NO_COST}) = {} AND COALESCE(price_id, '') = {}",
        D::param(1),
        D::param(2),
        D::id_param(3),
        D::param(4),
        D::param(5),
    );
    let mut rows: BTreeMap<(String, String), RepriceRow> = BTreeMap::new();
    let mut out = Repriced {
        written: !dry_run,
        ..Repriced::default()
    };
    let mut compare = ">=";
    loop {
        let page = select.replacen("{}", compare, 1);
        compare = ">";
        let bound: Vec<Arg<'_>> = args.iter().map(|arg| Arg::Text(arg)).collect();
        let page = D::rows(connection, page, &bound).await?;
        let Some(last) = page.last() else {
            break;
        };
        args[0] = last[0].clone().unwrap_or_default();
        out.records_read += page.len() as u64;
        let mut changes = Vec::new();
        for row in &page {
            let stored = stored(row)?;
            let usage = crate::TokenUsage::from_counts(stored.tokens, Some(&stored.key.model));
            let Some(cost) = pricing.cost(&usage, stored.key.start) else {
                out.records_without_price += 1;
                continue;
            };
            if stored.cost == Some(cost.nano_usd)
                && stored.price_id.as_deref() == Some(cost.price_id)
            {
                continue;
            }
            changes.push((stored, cost.nano_usd, cost.price_id.to_owned()));
        }
        let applied = if dry_run || changes.is_empty() {
            changes
        } else {
            apply::<D>(connection, config, &update, changes).await?
        };
        for (stored, new_cost, _) in applied {
            let row = rows
                .entry((stored.key.model.clone(), stored.key.tenant_id.clone()))
                .or_insert_with(|| RepriceRow {
                    model: stored.key.model.clone(),
                    tenant: stored.key.tenant_id.clone(),
                    ..RepriceRow::default()
                });
            row.records += 1;
            row.old_cost_nano_usd = row
                .old_cost_nano_usd
                .saturating_add(stored.cost.unwrap_or(0));
            row.new_cost_nano_usd = row.new_cost_nano_usd.saturating_add(new_cost);
        }
        progress(out.records_read, total);
    }
    out.rows = rows.into_values().collect();
    Ok(out)
}

/// What `COALESCE` makes of a record without a cost, so one comparison covers both.
const NO_COST: i64 = i64::MIN;

type Change = (Stored, i64, String);

/// Writes `changes` and their rollup differences in one transaction; answers the changes made
/// (a record deleted or changed since it was read is left out).
async fn apply<D: Dialect>(
    connection: &mut Conn<D>,
    config: &SqlConfig,
    update: &str,
    changes: Vec<Change>,
) -> Result<Vec<Change>, sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = match D::BEGIN_WRITE {
        Some(begin) => connection.begin_with(begin).await?,
        None => connection.begin().await?,
    };
    let mut applied = Vec::with_capacity(changes.len());
    let mut rollup = Rollup::default();
    for change in changes {
        let (stored, new_cost, price_id) = &change;
        let old_cost = stored.cost.unwrap_or(NO_COST);
        let old_id = stored.price_id.as_deref().unwrap_or("");
        let args = [
            Arg::Int(*new_cost),
            Arg::Text(price_id),
            Arg::Text(&stored.id),
            Arg::Int(old_cost),
            Arg::Text(old_id),
        ];
        if D::execute(&mut *tx, update.to_owned(), &args).await? != 1 {
            continue;
        }
        // The difference alone: no call, no latency, only the cost moves.
        let difference = new_cost.saturating_sub(stored.cost.unwrap_or(0));
        let cell = Cell {
            sums: RollupSums {
                cost_nano_usd: difference,
                ..RollupSums::default()
            },
            ..Cell::default()
        };
        rollup.add_cell(Tier::Hour, stored.key.clone(), &cell);
        applied.push(change);
    }
    if !rollup.is_empty() {
        D::add_rollup(&mut *tx, config, &rollup).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// A row of the page query: the id, then the rollup key's columns as `key_of` reads them, the
/// token counts, the cost and the price id.
fn stored(row: &[Option<String>]) -> Result<Stored, sqlx::Error> {
    let after_tokens = 7 + TokenKind::ALL.len();
    Ok(Stored {
        id: row[0].clone().unwrap_or_default(),
        key: key_of(&row[1..])?,
        tokens: std::array::from_fn(|i| count(row[7 + i].as_deref())),
        cost: row[after_tokens].as_deref().map(|cost| int(Some(cost))),
        price_id: row[after_tokens + 1].clone(),
    })
}
