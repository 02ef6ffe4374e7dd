//! What only the MySQL / MariaDB sink does: its column types and the binary collation of ids,
//! NUL bytes kept, the full `u64` range of token counts, `replays`, password authentication.

use sqlx::{MySqlConnection, Row};

use crate::backend::{Backend, Conn, Db};
use crate::step_of;
use crate::writes::{awkward_attributes, awkward_written, written_twice};
use usage_runtime::error::DbStep;

/// The MySQL connection inside `conn`, for values only MySQL decodes (unsigned integers).
fn mysql(conn: &mut Conn) -> &mut MySqlConnection {
    match conn {
        Conn::MySql(conn) => conn,
        _ => unreachable!("a MySQL test opened another backend"),
    }
}

#[tokio::test]
async fn columns_have_native_types() {
    let Some(db) = Db::fresh(Backend::MySql, "types").await else {
        return;
    };
    db.sink().await;
    let mut conn = db.open().await;
    let records = db.table("usage_records");
    let types: Vec<(String, String)> = conn
        .rows(&format!(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = '{records}' \
             AND column_name IN ('id', 'started_at', 'input_tokens', 'user_id') \
             ORDER BY column_name"
        ))
        .await;
    assert_eq!(
        types,
        [
            ("id".into(), "char(36)".into()),
            ("input_tokens".into(), "bigint(20) unsigned".into()),
            ("started_at".into(), "datetime(6)".into()),
            ("user_id".into(), "char(36)".into()),
        ]
    );
    // The primary key compares ids byte by byte (they are always lowercase), not through a
    // case-insensitive collation.
    let collation: String = conn
        .scalar(&format!(
            "SELECT CAST(collation_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = '{records}' \
             AND column_name = 'id'"
        ))
        .await;
    assert_eq!(collation, "ascii_bin");
}

#[tokio::test]
async fn nul_bytes_are_kept() {
    let Some(attributes) = awkward_attributes(Backend::MySql).await else {
        return;
    };
    assert_eq!(
        attributes["note"], "zero\u{0}byte",
        "MySQL keeps NUL as it is"
    );
    assert_eq!(attributes["nested"]["deep"][1], "\u{0}");
}

#[tokio::test]
async fn token_counts_keep_the_full_u64_range() {
    let Some((db, mut conn, records)) = awkward_written(Backend::MySql, "awkward_counts").await
    else {
        return;
    };
    let sql = format!(
        "SELECT input_tokens, output_tokens, cached_input_tokens FROM {} WHERE id = ?",
        db.table("usage_records")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(records[1].id.to_string())
        .fetch_one(mysql(&mut conn))
        .await
        .unwrap();
    assert_eq!(
        row.get::<u64, _>("input_tokens"),
        u64::MAX,
        "the full u64 range"
    );
    assert_eq!(row.get::<u64, _>("output_tokens"), 0);
    assert_eq!(row.get::<u64, _>("cached_input_tokens"), u64::MAX - 1);
}

/// Each row counts the writes that found it stored: the second write's, and the third's for
/// ten of them.
#[tokio::test]
async fn replays_count_the_writes_that_found_a_row_stored() {
    let Some((db, mut conn)) = written_twice(Backend::MySql).await else {
        return;
    };
    let replays: Vec<(i64, i64)> = conn
        .rows(&format!(
            "SELECT replays, COUNT(*) FROM {} GROUP BY replays ORDER BY replays",
            db.table("usage_records")
        ))
        .await;
    assert_eq!(replays, [(1, 790), (2, 10)]);
}

#[tokio::test]
async fn a_wrong_password_fails_at_authenticate_and_never_shows() {
    let Some(db) = Db::fresh(Backend::MySql, "password").await else {
        return;
    };
    db.open()
        .await
        .execute(
            "CREATE USER IF NOT EXISTS 'usage_pw_test'@'%' IDENTIFIED BY 'right-one'; \
             CREATE USER IF NOT EXISTS 'usage_pw_test'@'localhost' IDENTIFIED BY 'right-one'",
        )
        .await;
    let wrong = tests::with_user(&db.url, "usage_pw_test", Some("hunter2-wrong"));
    let err = Backend::MySql.connect(&wrong).await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Authenticate, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("usage_pw_test"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let Some(db) = Db::fresh(Backend::MySql, "debug").await else {
        return;
    };
    let mut conn = db.open().await;
    for host in ["%", "localhost"] {
        conn.execute(&format!(
            "CREATE USER IF NOT EXISTS 'usage_pw_debug'@'{host}' IDENTIFIED BY 'topsecret'; \
             GRANT ALL ON test.* TO 'usage_pw_debug'@'{host}'"
        ))
        .await;
    }
    let with_password = tests::with_user(&db.url, "usage_pw_debug", Some("topsecret"));
    let sink = db.connect(&with_password).await.unwrap();
    let shown = format!("{sink:?}");
    assert!(
        shown.contains("usage_pw_debug@127.0.0.1:3306/test"),
        "{shown}"
    );
    assert!(!shown.contains("topsecret"), "{shown}");
}

/// A batch written in two parts at once, one all refused as older than the pruned horizon, the
/// other failing on a rejected value: nothing new committed, so the write fails as the rejected
/// part did (a partial write naming no record would have the worker send the same batch again
/// and again).
#[tokio::test]
async fn refused_and_rejected_parts_fail_as_the_rejection() {
    use usage_runtime::sink::Sink;
    // Half the records from before the horizon, half from now; one of these too long.
    let now = chrono::Utc::now();
    let mut records = tests::random_records(2048, 81);
    for (n, record) in records.iter_mut().enumerate() {
        record.started_at = if n < 1024 {
            now - chrono::Duration::days(3)
        } else {
            now
        };
    }
    records[2000].operation = "x".repeat(300).into();
    let Some(db) = Db::fresh(Backend::MySql, "refused_rejected").await else {
        return;
    };
    let mut sink = db.sink().await;
    assert_eq!(
        sink.prune(now - chrono::Duration::days(1)).await.unwrap(),
        0
    );
    let error = sink.write(&records).await.unwrap_err();
    assert!(
        matches!(error, usage_runtime::Error::Database { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.failure_kind(),
        usage_runtime::error::FailureKind::Rejected
    );
}
