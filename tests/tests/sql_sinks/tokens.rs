//! Every token kind and the price entry stored, rolled up exactly, and added to a database of
//! the previous schema in place.

use usage_runtime::report::{Query, Reader, RepriceFilter};
use usage_runtime::sink::Sink;
use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, Pricing, UsageRecord, UsageReport};

use crate::backend::{Backend, Db};

/// An Anthropic-style reply with every kind, inclusive counts (cache reads and writes in
/// `input`, reasoning and audio in `output`).
#[derive(UsageReport)]
struct Reply {
    #[usage(input_tokens)]
    input: u64,
    #[usage(cache_read_input_tokens)]
    read: u64,
    #[usage(cache_creation_input_tokens)]
    written: u64,
    #[usage(cache_creation_1h_input_tokens)]
    written_1h: u64,
    #[usage(reasoning_tokens)]
    reasoning: u64,
    #[usage(audio_input_tokens)]
    audio_in: u64,
    #[usage(audio_output_tokens)]
    audio_out: u64,
    #[usage(output_tokens)]
    output: u64,
    #[usage(model)]
    model: &'static str,
}

#[track_usage(operation = "reply")]
fn reply(n: u64) -> Reply {
    Reply {
        model: "claude-sonnet-4-5",
        input: 26_000 + n,
        output: 500,
        read: 20_000,
        written: 5_000,
        written_1h: 2_000,
        reasoning: 300,
        audio_in: n,
        audio_out: 100,
    }
}

/// The token columns after the first three, in the order the record and the rollups keep them.
const LATER: [&str; 5] = [
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
];

/// `n` replies, priced at Sonnet 4.5's published prices.
fn replies(n: u64) -> Vec<UsageRecord> {
    let pricing = Pricing::from_toml(
        r#"[models."claude-sonnet-4-5"]
input = "3"
output = "15"
cached_input = "0.30"
cache_creation = "3.75"
cache_creation_1h = "6"
"#,
    )
    .unwrap();
    let capture = Capture::new().with_pricing(pricing);
    capture.run(|| {
        for i in 0..n {
            reply(i);
        }
    });
    capture.records()
}

/// Each later kind's sum in the records, then in the hourly and the daily rollups.
async fn sums(db: &Db, backend: Backend) -> [Vec<i64>; 3] {
    let mut conn = db.open().await;
    let select = |table: &str| {
        let columns: Vec<String> = LATER
            .iter()
            .map(|c| backend.int(&format!("COALESCE(SUM({c}), 0)")))
            .collect();
        format!("SELECT {} FROM {}", columns.join(", "), db.table(table))
    };
    let mut out: [Vec<i64>; 3] = Default::default();
    for (i, table) in [
        "usage_records",
        "usage_rollups_hourly",
        "usage_rollups_daily",
    ]
    .into_iter()
    .enumerate()
    {
        let row: (i64, i64, i64, i64, i64) = conn.row(&select(table)).await;
        out[i] = vec![row.0, row.1, row.2, row.3, row.4];
    }
    out
}

conformance!(every_token_kind_is_stored_and_rolled_up: Sqlite, Postgres, MySql);
async fn every_token_kind_is_stored_and_rolled_up(backend: Backend) {
    let Some(db) = Db::fresh(backend, "kinds").await else {
        return;
    };
    let records = replies(10);
    // 1,000 + n plain input at $3 (n audio at $3, no audio price), 20,000 read at $0.30, 3,000
    // 5-minute writes at $3.75, 2,000 1-hour at $6, 500 out at $15: for n = 0, 39,750 µUSD.
    assert_eq!(records[0].cost_nano_usd, Some(39_750_000));
    let price_id = records[0].price_id.clone().expect("priced");
    assert!(price_id.starts_with("claude-sonnet-4-5@-#"), "{price_id}");
    let mut sink = db.sink().await;
    sink.write(&records).await.unwrap();

    let mut conn = db.open().await;
    let (written, cost, stored_id): (i64, i64, String) = conn
        .row(&format!(
            "SELECT {}, {}, price_id FROM {} WHERE {} = 5",
            backend.int("cache_creation_input_tokens"),
            backend.int("cost_nano_usd"),
            db.table("usage_records"),
            backend.int("audio_input_tokens"),
        ))
        .await;
    assert_eq!((written, cost), (5_000, 39_765_000), "n = 5 adds 5 × $3");
    assert_eq!(stored_id, price_id.as_ref());
    let expected = vec![50_000, 20_000, 3_000, 45, 1_000];
    assert_eq!(
        sums(&db, backend).await,
        [expected.clone(), expected.clone(), expected]
    );
}

conformance!(a_database_of_the_previous_schema_gains_the_token_kinds: Sqlite, Postgres, MySql);
async fn a_database_of_the_previous_schema_gains_the_token_kinds(backend: Backend) {
    let Some(db) = Db::fresh(backend, "prevschema").await else {
        return;
    };
    // The previous schema: every table as the last release made it, without the later kinds
    // and the price id, and its last migration not applied.
    let old = replies(4);
    db.sink().await.write(&old).await.unwrap();
    let mut conn = db.open().await;
    let latest = match backend {
        Backend::Sqlite => 7,
        Backend::Postgres => 6,
        Backend::MySql => 8,
    };
    let drops = |table: &str, columns: &[&str]| {
        columns
            .iter()
            .map(|c| format!("ALTER TABLE {} DROP COLUMN {c};", db.table(table)))
            .collect::<String>()
    };
    let mut record_columns = LATER.to_vec();
    record_columns.push("price_id");
    conn.execute(&format!(
        "{}{}{}DELETE FROM {} WHERE version = {latest};",
        drops("usage_records", &record_columns),
        drops("usage_rollups_hourly", &LATER),
        drops("usage_rollups_daily", &LATER),
        db.table("usage_schema_migrations"),
    ))
    .await;

    // A reader (a newer `usage` command, say) reads it before its trackers migrate it: the
    // later kinds read as zero; a reprice asks for the migration first.
    let reader = Reader::connect_with(&db.url, db.config()).await.unwrap();
    let report = reader.report(&Query::new()).await.unwrap();
    assert_eq!(report.rows[0].input_tokens, 4 * 26_000 + 6);
    assert_eq!(report.rows[0].cache_creation_input_tokens, 0);
    let records = reader.report(&Query::new().distinct_users()).await.unwrap();
    assert_eq!(records.rows[0].reasoning_tokens, 0);
    let refused = reader
        .reprice(&Pricing::new(), &RepriceFilter::default(), true, |_, _| {})
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("usage migrate"), "{refused}");

    // Opening it migrates it; what it held keeps its meaning, the new kinds start at zero.
    let mut sink = db.sink().await;
    let versions: i64 = conn
        .scalar(&format!(
            "SELECT {} FROM {}",
            backend.int("MAX(version)"),
            db.table("usage_schema_migrations")
        ))
        .await;
    assert_eq!(versions, latest);
    let (input, calls): (i64, i64) = conn
        .row(&format!(
            "SELECT {}, {} FROM {}",
            backend.int("SUM(input_tokens)"),
            backend.int("SUM(calls)"),
            db.table("usage_rollups_daily")
        ))
        .await;
    assert_eq!((input, calls), (4 * 26_000 + 6, 4));
    assert_eq!(
        sums(&db, backend).await,
        [vec![0; 5], vec![0; 5], vec![0; 5]]
    );
    // New records carry every kind, and their rollups add up from zero.
    sink.write(&replies(4)).await.unwrap();
    let expected = vec![20_000, 8_000, 1_200, 6, 400];
    assert_eq!(
        sums(&db, backend).await,
        [expected.clone(), expected.clone(), expected]
    );
    // Migrated, it reprices; the progress counts up to every matching record.
    let reader = Reader::connect_with(&db.url, db.config()).await.unwrap();
    let mut seen = Vec::new();
    let repriced = reader
        .reprice(
            &Pricing::new(),
            &RepriceFilter::default(),
            true,
            |read, total| seen.push((read, total)),
        )
        .await
        .unwrap();
    assert_eq!((repriced.records_read, seen.last()), (8, Some(&(8, 8))));
}
