//! MySQL and MariaDB: multi-row `INSERT` statements sized under the server's
//! `max_allowed_packet`, a batch (or each part of a large one, written at once over the write
//! connections) in one transaction, idempotent with
//! `ON DUPLICATE KEY UPDATE replays = replays + 1` (a stored record keeps its values and counts
//! the replay; not `INSERT IGNORE`, which would turn rejected values into silent truncation).

use std::collections::HashSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, MySql, QueryBuilder, Row};
use uuid::Uuid;

use super::connect::Endpoint;
use super::dialect::{
    push_record, push_rollup, statements, Arg, Dialect, MigrationLock, Options, TierRows,
};
use super::{rollup_columns, rollup_sums, sql_sink, Migration, SqlConfig, RECORD_COLUMNS};
use crate::call::catalog::Operation;
use crate::error::DbStep;
use crate::record::UsageRecord;
use crate::rollup::{compact_when, RollupKey};

/// A rollup table (`{table}`, its hour or day in the `{time}` column): both tiers have one
/// shape.
const ROLLUP_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS {prefix}{table} (
    rollup_key          BINARY(16)      NOT NULL PRIMARY KEY,
    {time} DATETIME        NOT NULL,
    service             VARCHAR(255)    NOT NULL,
    operation           VARCHAR(255)    NOT NULL,
    tenant_id           VARCHAR(255)    NOT NULL,
    model               VARCHAR(255)    NOT NULL,
    outcome             VARCHAR(16)     NOT NULL,
    calls               BIGINT          NOT NULL,
    input_tokens        BIGINT          NOT NULL,
    output_tokens       BIGINT          NOT NULL,
    cached_input_tokens BIGINT          NOT NULL,
    cost_nano_usd       BIGINT          NOT NULL,
    duration_us         BIGINT          NOT NULL,
    latency             MEDIUMBLOB      NULL,
    latency_base        BIGINT          NOT NULL DEFAULT 0,
    KEY {prefix}usage_rollups_{time} ({time})
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"#;

const MIGRATIONS: &[Migration] = &[
    Migration::sql(
        1,
        "usage_records",
        r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_records (
    id                  CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    operation           VARCHAR(255)  NOT NULL,
    function            VARCHAR(1024) NOT NULL,
    service             VARCHAR(255)  NOT NULL,
    instance            VARCHAR(255)  NOT NULL,
    started_at          DATETIME(6)   NOT NULL,
    duration_us         BIGINT UNSIGNED NOT NULL,
    outcome             VARCHAR(16)   NOT NULL,
    error_type          VARCHAR(1024) NULL,
    error_message       MEDIUMTEXT    NULL,
    tenant_id           VARCHAR(255)  NULL,
    user_id             CHAR(36) CHARACTER SET ascii NULL,
    session_id          CHAR(36) CHARACTER SET ascii NULL,
    model               VARCHAR(255)  NULL,
    input_tokens        BIGINT UNSIGNED NULL,
    output_tokens       BIGINT UNSIGNED NULL,
    cached_input_tokens BIGINT UNSIGNED NULL,
    cost_nano_usd       BIGINT        NULL,
    attributes          JSON          NOT NULL,
    KEY {prefix}usage_records_started_at (started_at),
    KEY {prefix}usage_records_tenant_started_at (tenant_id, started_at),
    KEY {prefix}usage_records_operation_started_at (operation, started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
"#,
    ),
    // Which write inserted a row, so a batch can tell its new records from replayed ones
    // without a locking read (whose gap locks deadlock concurrent writers).
    Migration::sql(
        5,
        "write ids on records",
        "ALTER TABLE {prefix}usage_records ADD COLUMN write_id BINARY(16) NULL",
    ),
    // How many later writes found the record already stored. Each one changes the row, so
    // the server counts it twice in the statement's affected rows and a write learns how many
    // of its rows were replays without reading them back.
    Migration::sql(
        6,
        "replay counts on records",
        "ALTER TABLE {prefix}usage_records ADD COLUMN replays BIGINT NOT NULL DEFAULT 0",
    ),
];

/// The operation catalog.
const CATALOG_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS {prefix}usage_operations (
    operation_key BINARY(16)    NOT NULL PRIMARY KEY,
    service       VARCHAR(255)  NOT NULL,
    operation     VARCHAR(255)  NOT NULL,
    function      VARCHAR(1024) NOT NULL,
    file          VARCHAR(1024) NOT NULL,
    line          INT           NOT NULL,
    first_seen    DATETIME(6)   NOT NULL,
    last_seen     DATETIME(6)   NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
"#;

/// At most this many rows per statement (26 placeholders each, far below MySQL's 65,535).
const MAX_ROWS_PER_STATEMENT: usize = 1000;

sql_sink!(
    /// Writes records to MySQL or MariaDB (feature `mysql`).
    ///
    /// Columns: `CHAR(36)` ids, `DATETIME(6)` UTC times, `BIGINT UNSIGNED` counts (the full
    /// `u64` range), `MEDIUMTEXT` error messages (up to 16 MiB), `JSON` attributes, `utf8mb4`
    /// text. Limits the database enforces (255 characters for `operation`, `tenant_id`, `model`,
    /// ...) are errors, never silent truncation.
    MySqlSink,
    MySql8,
    "mysql://user:password@host:3306/database"
);

/// MySQL's and MariaDB's SQL.
#[derive(Debug)]
pub(crate) struct MySql8;

impl Dialect for MySql8 {
    type Db = MySql;
    /// The bytes one statement may carry: half of `max_allowed_packet`.
    type Limits = usize;

    const SINK: &'static str = "MySqlSink";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    const SHARED_VERSIONS: [i64; 5] = [2, 3, 4, 7, 8];
    const ROLLUP_TABLE: &'static str = ROLLUP_TABLE;
    const CATALOG_TABLE: &'static str = CATALOG_TABLE;
    // DDL is not transactional in MySQL: a named lock keeps migrators one at a time.
    const LOCK: MigrationLock = MigrationLock::Named {
        get: "SELECT CAST(GET_LOCK(?, 30) AS CHAR)",
        release: "SELECT RELEASE_LOCK(?)",
    };
    const VERSION: &'static str = "SELECT VERSION()";
    const HORIZON_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS {prefix}usage_pruned (\
         name VARCHAR(64) NOT NULL PRIMARY KEY, pruned_before DATETIME(6) NOT NULL) \
         ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin";
    // A point read of one existing row: a record lock, no gap lock.
    const SHARE_LOCK: &'static str = " LOCK IN SHARE MODE";
    const TABLE_EXISTS: &'static str = "SELECT CAST(table_name AS CHAR) \
        FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?";
    const UPGRADE_RESET: Option<&'static str> =
        Some("UPDATE {hourly} SET latency = NULL; DELETE FROM {daily}");
    const AS_TEXT: &'static str = "CAST({column} AS CHAR)";
    const TIME_AS_TEXT: &'static str = "DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.%fZ')";
    const HEX: &'static str = "HEX({column})";
    const COLUMNS_OF: &'static str = "SELECT CAST(column_name AS CHAR) \
        FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?";
    const COUNT_TYPE: &'static str = "BIGINT UNSIGNED NULL";
    const SUM_TYPE: &'static str = "BIGINT NOT NULL DEFAULT 0";
    const LABEL_TYPE: &'static str = "VARCHAR(512) NULL";
    const MIGRATIONS_TABLE: &'static str = "CREATE TABLE {table} (\
         version BIGINT NOT NULL PRIMARY KEY, description VARCHAR(255) NOT NULL, \
         applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
         ENGINE = InnoDB DEFAULT CHARSET = utf8mb4";

    fn options(url: &str) -> Result<Options<Self>, sqlx::Error> {
        MySqlConnectOptions::from_str(url)
    }

    fn endpoint(options: &Options<Self>) -> Option<Endpoint<'_>> {
        let server = (options.get_host(), options.get_port());
        let database = options.get_database().unwrap_or("");
        Some(Endpoint::new(
            "mysql",
            options.get_username(),
            server,
            database,
        ))
    }

    /// Access denied (1045) and its relatives are `authenticate`; everything else on the way in
    /// is `connect` (a refused port, an unknown database).
    fn connect_step(error: &sqlx::Error) -> DbStep {
        match error {
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("28000") | Some("1045") | Some("1698")
                ) =>
            {
                DbStep::Authenticate
            }
            _ => DbStep::Connect,
        }
    }

    fn pool_options(config: &SqlConfig) -> MySqlPoolOptions {
        MySqlPoolOptions::new()
            .max_connections(config.write_connections as u32)
            .after_connect(|connection, _| Box::pin(strict(connection)))
    }

    async fn session(connection: &mut MySqlConnection) -> Result<(), sqlx::Error> {
        strict(connection).await
    }

    async fn limits(connection: &mut MySqlConnection) -> Result<usize, sqlx::Error> {
        let packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
            .fetch_one(connection)
            .await?;
        Ok(usize::try_from(packet / 2)
            .unwrap_or(usize::MAX)
            .max(64 * 1024))
    }

    fn time_param(_: usize) -> String {
        "CAST(? AS DATETIME(6))".into()
    }

    fn time_text(at: DateTime<Utc>) -> String {
        at.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }

    fn prune_statement(table: &str, chunk: u64) -> String {
        format!("DELETE FROM {table} WHERE started_at < CAST(? AS DATETIME(6)) LIMIT {chunk}")
    }

    async fn insert(
        connection: &mut MySqlConnection,
        config: &SqlConfig,
        budget: usize,
        batch: &[UsageRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        let table = config.records_table();
        // No RETURNING in MySQL. A statement whose affected rows equal its rows inserted them all
        // (a row already stored counts 2: its `replays` changes), one with twice as many inserted
        // none. Only a statement with some of each is read back: each row this transaction inserts
        // carries its write id (a row already present keeps the one of the write that made it), so
        // only what it inserted is rolled up and a replayed record counts once. (Reading the present
        // ids with a locking read first took gap locks, which deadlocked concurrent writers'
        // inserts.)
        let write_id = uuid::Uuid::now_v7();
        let mut inserted = std::collections::HashSet::new();
        let mut mixed = Vec::new();
        let mut start = 0;
        while start < batch.len() {
            // Grow the statement until the next row would pass the packet budget.
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() && end - start < MAX_ROWS_PER_STATEMENT {
                let next = row_bytes(&batch[end]);
                if end > start && bytes + next > budget {
                    break;
                }
                bytes += next;
                end += 1;
            }
            let statement = &batch[start..end];
            let affected = insert_rows(&mut *connection, &table, statement, write_id).await?;
            let rows = statement.len() as u64;
            match affected.checked_sub(rows) {
                Some(0) => inserted.extend(statement.iter().map(|record| record.id)),
                Some(replays) if replays == rows => {}
                _ => mixed.push(statement),
            }
            start = end;
        }
        for statement in mixed {
            let mut select: QueryBuilder<MySql> =
                QueryBuilder::new(format!("SELECT id FROM {table} WHERE write_id = "));
            select.push_bind(write_id.as_bytes().to_vec());
            select.push(" AND id IN (");
            let mut ids = select.separated(", ");
            for record in statement {
                ids.push_bind(record.id.hyphenated().to_string());
            }
            select.push(")");
            for row in select.build().fetch_all(&mut *connection).await? {
                let id: String = row.get(0);
                let id = uuid::Uuid::parse_str(&id)
                    .map_err(|error| sqlx::Error::Decode(error.into()))?;
                inserted.insert(id);
            }
        }
        Ok(inserted)
    }

    async fn register(
        connection: &mut MySqlConnection,
        config: &SqlConfig,
        (service, operations): (&str, &[&'static Operation]),
    ) -> Result<(), sqlx::Error> {
        let now = Self::time_text(chrono::Utc::now());
        for chunk in operations.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "INSERT INTO {} (operation_key, service, operation, function, file, line, \
                 first_seen, last_seen) ",
                config.operations_table()
            ));
            upsert.push_values(chunk, |mut row, op| {
                let key = format!("{service}\u{1f}{}\u{1f}{}", op.name(), op.function());
                let key = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes());
                row.push_bind(key.as_bytes().to_vec())
                    .push_bind(service.to_owned())
                    .push_bind(op.name())
                    .push_bind(op.function())
                    .push_bind(op.file())
                    .push_bind(op.line())
                    .push_bind(now.clone())
                    .push_bind(now.clone());
            });
            upsert.push(
                " ON DUPLICATE KEY UPDATE file = VALUES(file), line = VALUES(line), \
                 last_seen = VALUES(last_seen)",
            );
            upsert.build().execute(&mut *connection).await?;
        }
        Ok(())
    }

    /// DDL is not transactional in MySQL, so the rollups are emptied first: an interrupted
    /// backfill is simply redone. An earlier version's rollups, left half-made by an interrupted
    /// migration, are brought to the current shape first.
    async fn before_backfill(
        connection: &mut MySqlConnection,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error> {
        add_latency_columns(connection, &config.rollups_table()).await?;
        Self::raw(
            connection,
            format!(
                "DROP TABLE IF EXISTS {}; DELETE FROM {}; DELETE FROM {}",
                config.legacy_latency_table(),
                config.rollups_table(),
                config.daily_rollups_table()
            ),
        )
        .await
    }

    async fn before_upgrade(
        connection: &mut MySqlConnection,
        config: &SqlConfig,
    ) -> Result<(), sqlx::Error> {
        add_latency_columns(connection, &config.rollups_table()).await
    }

    /// Adds the rows of one tier in one upsert per chunk: sums added, the histogram appended (a
    /// concatenation is a sum); histograms grown well past their last canonical size
    /// ([`compact_when`]) are then read (the upsert holds their rows' locks, and every row it touched
    /// changed, so the transaction reads its own write) and rewritten in canonical form.
    async fn add_tier(
        connection: &mut MySqlConnection,
        config: &SqlConfig,
        (tier, rows): TierRows<'_>,
    ) -> Result<(), sqlx::Error> {
        let (table, time) = (config.tier_table(tier), tier.column());
        let mut rows: Vec<_> = rows
            .iter()
            .map(|(key, cell)| (rollup_key(key), key, cell))
            .collect();
        // In primary key order, as every part's upsert takes its row locks: parts written at
        // once then wait for each other instead of deadlocking on the gaps between new rows.
        rows.sort_unstable_by_key(|(id, _, _)| *id);
        for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut upsert: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "INSERT INTO {table} (rollup_key, {time}, {}) ",
                rollup_columns()
            ));
            upsert.push_values(chunk, |mut row, (id, key, cell)| {
                let start = key.start.format("%Y-%m-%d %H:00:00").to_string();
                row.push_bind(id.to_vec());
                push_rollup!(row, start: start, key, cell);
            });
            // Sums saturate at the largest BIGINT instead of failing the batch.
            upsert.push(" ON DUPLICATE KEY UPDATE ");
            upsert.push(rollup_sums(|c| {
                format!("LEAST(CAST({c} AS DECIMAL(21)) + VALUES({c}), 9223372036854775807)")
            }));
            upsert.push(", latency = CONCAT(COALESCE(latency, ''), VALUES(latency))");
            upsert.build().execute(&mut *connection).await?;
            let mut select: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "SELECT rollup_key, latency FROM {table} WHERE {} AND rollup_key IN (",
                compact_when("LENGTH(latency)")
            ));
            let mut ids = select.separated(", ");
            for (id, _, _) in chunk {
                ids.push_bind(id.to_vec());
            }
            // Not a locking read: the upsert holds these rows and what this transaction reads of them
            // is its own write (a locking read may scan, and lock, rows beyond them).
            select.push(")");
            let long = select.build().fetch_all(&mut *connection).await?;
            for row in &long {
                let id: Vec<u8> = row.get(0);
                let stored: Vec<u8> = row.get(1);
                Self::rewrite_compacted(
                    connection,
                    &table,
                    ("rollup_key", Arg::Bytes(&id)),
                    &stored,
                )
                .await?;
            }
        }
        Ok(())
    }

    statements!();
}

/// Strict mode for the session, whatever the server's default: a value too long for its column
/// is an error (and the record is quarantined), never silently truncated.
async fn strict(connection: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "SET SESSION sql_mode = \
         CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')",
    )
    .execute(connection)
    .await
    .map(|_| ())
}

/// The rollup key as 16 bytes: MySQL cannot index the six key columns together (too long for an
/// InnoDB key), so rows are keyed by a UUIDv5 of them, each field length-prefixed so that no two
/// keys share a text (a tenant ending in the next field's text stays apart). Rows written before
/// the prefixes (by an earlier version) keep their keys; reports group by the key columns, so a
/// key split over an old and a new row still adds up.
fn rollup_key(key: &RollupKey) -> [u8; 16] {
    let mut text = key.start.timestamp().to_string();
    for field in [
        key.service.as_str(),
        key.operation.as_str(),
        key.tenant_id.as_str(),
        key.model.as_str(),
        key.outcome,
    ] {
        text.push_str(&format!("|{}:{field}", field.len()));
    }
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).as_bytes()
}

/// Adds the histogram columns to an hourly rollup table made by an earlier version (DDL is not
/// transactional in MySQL, so whether they are there is read first).
async fn add_latency_columns(
    connection: &mut MySqlConnection,
    hourly: &str,
) -> Result<(), sqlx::Error> {
    let present: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'latency'",
    )
    .bind(hourly)
    .fetch_one(&mut *connection)
    .await?;
    if present == 0 {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {hourly} ADD COLUMN latency MEDIUMBLOB NULL, \
             ADD COLUMN latency_base BIGINT NOT NULL DEFAULT 0"
        )))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Roughly the bytes a row adds to a statement.
fn row_bytes(record: &UsageRecord) -> usize {
    let text = |s: Option<&str>| s.map_or(0, str::len);
    200 + record.operation.len()
        + record.function.len()
        + record.service.len()
        + record.instance.len()
        + text(record.error_type.as_deref())
        + text(record.error_message.as_deref())
        + text(record.tenant_id.as_deref())
        + text(record.model.as_deref())
        + text(record.price_id.as_deref())
        + serde_json::to_string(&record.attributes).map_or(0, |json| json.len())
}

/// Inserts `rows`, each carrying `write_id`; returns the affected rows: 1 per new row, 2 per row
/// already stored (its `replays` goes up).
async fn insert_rows(
    connection: &mut MySqlConnection,
    table: &str,
    rows: &[UsageRecord],
    write_id: uuid::Uuid,
) -> Result<u64, sqlx::Error> {
    let mut insert: QueryBuilder<MySql> =
        QueryBuilder::new(format!("INSERT INTO {table} ({RECORD_COLUMNS}, write_id) "));
    insert.push_values(rows, |mut row, record| {
        push_record!(
            row,
            record,
            started: record.started_at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            duration: u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
            count: std::convert::identity
        )
        .push_bind(write_id.as_bytes().as_slice());
    });
    insert.push(" ON DUPLICATE KEY UPDATE replays = replays + 1");
    let done = insert.build().execute(connection).await?;
    Ok(done.rows_affected())
}
