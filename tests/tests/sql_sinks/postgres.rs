//! What only the PostgreSQL sink does: native column types, NUL bytes replaced (PostgreSQL's text
//! cannot hold them), token counts held at `bigint`'s maximum, password authentication.

use sqlx::{Connection, PgConnection};
use usage_runtime::error::DbStep;
use usage_runtime::sink::PostgresSink;

use crate::backend::{Backend, Db};
use crate::step_of;
use crate::writes::{awkward_attributes, awkward_written};

#[tokio::test]
async fn columns_have_native_types() {
    let Some(db) = Db::fresh(Backend::Postgres, "types").await else {
        return;
    };
    db.sink().await;
    let types: Vec<(String, String)> = db
        .open()
        .await
        .rows(&format!(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = '{}' \
             AND column_name IN ('id', 'started_at', 'attributes', 'user_id') \
             ORDER BY column_name",
            db.table("usage_records")
        ))
        .await;
    assert_eq!(
        types,
        [
            ("attributes".into(), "jsonb".into()),
            ("id".into(), "uuid".into()),
            ("started_at".into(), "timestamp with time zone".into()),
            ("user_id".into(), "uuid".into()),
        ]
    );
}

#[tokio::test]
async fn nul_bytes_become_u_fffd() {
    let Some(attributes) = awkward_attributes(Backend::Postgres).await else {
        return;
    };
    assert_eq!(attributes["note"], "zero\u{FFFD}byte", "NUL becomes U+FFFD");
    assert_eq!(attributes["nested"]["deep"][1], "\u{FFFD}");
}

#[tokio::test]
async fn token_counts_are_held_at_bigints_maximum() {
    let Some((db, mut conn, records)) = awkward_written(Backend::Postgres, "awkward_counts").await
    else {
        return;
    };
    let (input, cached): (i64, i64) = conn
        .row(&format!(
            "SELECT input_tokens, cached_input_tokens FROM {} WHERE id = '{}'",
            db.table("usage_records"),
            records[1].id
        ))
        .await;
    assert_eq!(input, i64::MAX, "held at bigint's maximum");
    assert_eq!(cached, i64::MAX);
}

/// `.ci/run` makes PostgreSQL ask this role for a password (scram) on 127.0.0.1.
const PASSWORD_ROLE: &str = "usage_pw_test";

#[tokio::test]
async fn a_wrong_password_fails_at_authenticate_and_never_shows() {
    let Some(url) = tests::postgres_url() else {
        return;
    };
    let mut db = PgConnection::connect(&url).await.unwrap();
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-one'; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )))
    .execute(&mut db)
    .await;
    let wrong = tests::with_user(&url, PASSWORD_ROLE, Some("hunter2-wrong"));
    let err = PostgresSink::connect(&wrong)
        .await
        .expect_err("a wrong password (or a role that may not create tables) must fail");
    if step_of(&err) != DbStep::Authenticate {
        let message = format!(
            "PostgreSQL let {PASSWORD_ROLE} log in with a wrong password: pg_hba.conf trusts it \
             (.ci/run adds a scram-sha-256 line for this role); got: {err}"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!!!!! SKIPPED: {message}\n");
        return;
    }
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(PASSWORD_ROLE), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let Some(db) = Db::fresh(Backend::Postgres, "debug").await else {
        return;
    };
    // Trust authentication accepts any password, so a secret can ride along in the URL.
    let sink = db
        .connect(&tests::with_user(&db.url, "postgres", Some("topsecret")))
        .await
        .unwrap();
    let shown = format!("{sink:?}");
    assert!(shown.contains("postgres@127.0.0.1:5432/test"), "{shown}");
    assert!(!shown.contains("topsecret"), "{shown}");
}
