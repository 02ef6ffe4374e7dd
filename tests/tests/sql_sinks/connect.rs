//! Verification, and the step each failure to connect, authenticate, migrate or write is named
//! by, never showing a password.

use usage_runtime::sink::SqlConfig;
use usage_runtime::{error::DbStep, Error};

use crate::backend::{Backend, Db};
use crate::step_of;

conformance!(verify_walks_every_step: Sqlite, Postgres, MySql);
async fn verify_walks_every_step(backend: Backend) {
    let Some(db) = Db::fresh(backend, "verify").await else {
        return;
    };
    let report = db.sink().await.verify().await.unwrap();
    let steps: Vec<DbStep> = report.steps.iter().map(|(step, _)| *step).collect();
    let expected: &[DbStep] = match backend {
        // A file has no host to resolve and no user to authenticate.
        Backend::Sqlite => &[
            DbStep::Connect,
            DbStep::Migrate,
            DbStep::Write,
            DbStep::Read,
        ],
        Backend::Postgres | Backend::MySql => &[
            DbStep::Resolve,
            DbStep::Authenticate,
            DbStep::Migrate,
            DbStep::Write,
            DbStep::Read,
        ],
    };
    assert_eq!(steps, expected);
    assert!(!report.server_version.is_empty());
    if backend == Backend::Postgres {
        assert!(
            report.server_version.starts_with("PostgreSQL"),
            "{}",
            report.server_version
        );
    }
    let user = match backend {
        Backend::Sqlite => String::new(),
        _ => format!("{}@", backend.user()),
    };
    assert!(
        report
            .target
            .starts_with(&format!("{}://{user}", backend.scheme())),
        "{}",
        report.target
    );
    let left = db.records(&mut db.open().await).await;
    assert_eq!(left, 0, "the probe record is deleted");
}

/// The error of connecting a sink of `backend` to `url` (given the server's URL); `None` when the
/// server is unreachable.
async fn failure(backend: Backend, url: impl FnOnce(&str) -> String) -> Option<Error> {
    let server = backend.server_url()?;
    Some(backend.connect(&url(&server)).await.unwrap_err())
}

conformance!(a_wrong_host_fails_at_resolve: Postgres, MySql);
async fn a_wrong_host_fails_at_resolve(backend: Backend) {
    let (scheme, port) = (backend.scheme(), backend.port());
    let wrong = |_: &str| format!("{scheme}://app:secret@no-such-host.invalid:{port}/db");
    let Some(err) = failure(backend, wrong).await else {
        return;
    };
    assert_eq!(step_of(&err), DbStep::Resolve);
    let text = err.to_string();
    assert!(
        text.contains(&format!("no-such-host.invalid:{port}/db")) && text.contains("app@"),
        "{text}"
    );
    assert!(!text.contains("secret") && !format!("{err:?}").contains("secret"));
}

conformance!(a_wrong_port_fails_at_connect: Postgres, MySql);
async fn a_wrong_port_fails_at_connect(backend: Backend) {
    let (scheme, user) = (backend.scheme(), backend.user());
    let wrong = |_: &str| format!("{scheme}://{user}:secret@127.0.0.1:1/test");
    let Some(err) = failure(backend, wrong).await else {
        return;
    };
    assert_eq!(step_of(&err), DbStep::Connect);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!err.to_string().contains("secret"));
}

conformance!(a_missing_database_fails_at_connect_and_names_it: Postgres, MySql);
async fn a_missing_database_fails_at_connect_and_names_it(backend: Backend) {
    let missing = |url: &str| tests::with_database(url, "no_such_database_here");
    let Some(err) = failure(backend, missing).await else {
        return;
    };
    assert_eq!(step_of(&err), DbStep::Connect);
    assert!(err.to_string().contains("no_such_database_here"), "{err}");
}

conformance!(a_user_without_insert_permission_fails_at_write: Postgres, MySql);
async fn a_user_without_insert_permission_fails_at_write(backend: Backend) {
    let Some(db) = Db::fresh(backend, "readonly").await else {
        return;
    };
    db.sink().await;
    let (records, migrations) = (
        db.table("usage_records"),
        db.table("usage_schema_migrations"),
    );
    let mut conn = db.open().await;
    match backend {
        Backend::Postgres => {
            conn.execute(&format!(
                "DO $$ BEGIN CREATE ROLE usage_readonly LOGIN; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 GRANT CONNECT ON DATABASE test TO usage_readonly; \
                 GRANT USAGE ON SCHEMA public TO usage_readonly; \
                 GRANT SELECT ON {records}, {migrations} TO usage_readonly;"
            ))
            .await;
        }
        _ => {
            for host in ["%", "localhost"] {
                conn.execute(&format!(
                    "CREATE USER IF NOT EXISTS 'usage_readonly'@'{host}'; \
                     GRANT SELECT ON test.{records} TO 'usage_readonly'@'{host}'; \
                     GRANT SELECT ON test.{migrations} TO 'usage_readonly'@'{host}'"
                ))
                .await;
            }
        }
    }
    let readonly = db
        .connect(&tests::with_user(&db.url, "usage_readonly", None))
        .await
        .unwrap();
    let err = readonly.verify().await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Write, "{err}");
    let denied = match backend {
        Backend::Postgres => "permission denied",
        _ => "denied",
    };
    assert!(err.to_string().contains(denied), "{err}");
}

conformance!(a_table_with_other_columns_fails_at_migrate: Sqlite, Postgres, MySql);
async fn a_table_with_other_columns_fails_at_migrate(backend: Backend) {
    let Some(db) = Db::fresh(backend, "mismatch").await else {
        return;
    };
    db.open()
        .await
        .execute(&format!(
            "CREATE TABLE {} (id CHAR(36) PRIMARY KEY, note TEXT)",
            db.table("usage_records")
        ))
        .await;
    let err = db.connect(&db.url).await.unwrap_err();
    assert_eq!(step_of(&err), DbStep::Migrate, "{err}");
    assert!(err.to_string().contains("started_at"), "{err}");
}

conformance!(bad_urls_and_prefixes_are_named_errors: Postgres, MySql);
async fn bad_urls_and_prefixes_are_named_errors(backend: Backend) {
    let err = backend
        .connect(&format!(
            "{}://app:s3cret@host:notaport/db",
            backend.scheme()
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    assert!(matches!(
        SqlConfig::new().table_prefix("x; DROP TABLE y"),
        Err(Error::InvalidConfig(_))
    ));
}
