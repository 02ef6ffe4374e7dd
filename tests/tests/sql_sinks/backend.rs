//! The three SQL backends behind one face: a test body takes a [`Backend`], gets a fresh [`Db`]
//! from it, writes through its [`AnySink`] and checks through a [`Conn`], whose queries differ
//! between dialects only where [`Backend`]'s expressions say so.

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Connection, FromRow};
use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqlConfig, SqliteSink, VerifyReport};
use usage_runtime::{catalog::Operation, Error, UsageRecord};

/// Stamps out one `#[tokio::test]` per backend named after it (`sqlite`, `postgres`, `mysql`)
/// in a module named after the body, `async fn <body>(backend: Backend)` in the same module.
macro_rules! conformance {
    ($body:ident: $($backend:ident),+ $(,)?) => {
        mod $body {
            $(conformance!(@test $body $backend);)+
        }
    };
    (@test $body:ident Sqlite) => {
        #[tokio::test]
        async fn sqlite() {
            super::$body(crate::backend::Backend::Sqlite).await;
        }
    };
    (@test $body:ident Postgres) => {
        #[tokio::test]
        async fn postgres() {
            super::$body(crate::backend::Backend::Postgres).await;
        }
    };
    (@test $body:ident MySql) => {
        #[tokio::test]
        async fn mysql() {
            super::$body(crate::backend::Backend::MySql).await;
        }
    };
}

/// A SQL backend and its dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The server's URL, or `None` (after a loud message) when nothing answers; SQLite has no
    /// server, so its URL is a file's in [`Db::fresh`].
    pub(crate) fn server_url(self) -> Option<String> {
        match self {
            Backend::Sqlite => Some("sqlite::memory:".into()),
            Backend::Postgres => tests::postgres_url(),
            Backend::MySql => tests::mysql_url(),
        }
    }

    /// The URL scheme.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    /// The server's default port.
    pub(crate) fn port(self) -> u16 {
        match self {
            Backend::Sqlite => 0,
            Backend::Postgres => 5432,
            Backend::MySql => 3306,
        }
    }

    /// The user of the default URL.
    pub(crate) fn user(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "postgres",
            Backend::MySql => "root",
        }
    }

    /// A sink for `url` with the default configuration.
    pub(crate) async fn connect(self, url: &str) -> Result<AnySink, Error> {
        self.connect_with(url, SqlConfig::new()).await
    }

    /// A sink for `url` with `config`.
    pub(crate) async fn connect_with(self, url: &str, config: SqlConfig) -> Result<AnySink, Error> {
        Ok(match self {
            Backend::Sqlite => AnySink::Sqlite(SqliteSink::connect_with(url, config).await?),
            Backend::Postgres => AnySink::Postgres(PostgresSink::connect_with(url, config).await?),
            Backend::MySql => AnySink::MySql(MySqlSink::connect_with(url, config).await?),
        })
    }

    /// `expr` as a signed 64-bit integer (sums are wider or unsigned otherwise).
    pub(crate) fn int(self, expr: &str) -> String {
        match self {
            Backend::MySql => format!("CAST({expr} AS SIGNED)"),
            Backend::Sqlite | Backend::Postgres => format!("CAST({expr} AS BIGINT)"),
        }
    }

    /// `expr` as text.
    pub(crate) fn text(self, expr: &str) -> String {
        match self {
            Backend::MySql => format!("CAST({expr} AS CHAR)"),
            Backend::Sqlite | Backend::Postgres => format!("CAST({expr} AS TEXT)"),
        }
    }

    /// The string at `key` of the JSON object in `column`.
    pub(crate) fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Backend::Postgres => format!("{column}->>'{key}'"),
            Backend::MySql => format!("JSON_UNQUOTE(JSON_EXTRACT({column}, '$.{key}'))"),
        }
    }

    /// The time in `column` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (SQLite stores it so).
    pub(crate) fn micros(self, column: &str) -> String {
        match self {
            Backend::Sqlite => column.to_owned(),
            Backend::Postgres => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
            Backend::MySql => format!("DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
        }
    }

    /// The hour of the time in `column` as `YYYY-MM-DDTHH:00:00Z`.
    pub(crate) fn hour(self, column: &str) -> String {
        self.truncated(column, 13, "HH24:00:00", "%H:00:00")
    }

    /// The day of the time in `column` as `YYYY-MM-DDT00:00:00Z`.
    pub(crate) fn day(self, column: &str) -> String {
        self.truncated(column, 10, "00:00:00", "00:00:00")
    }

    /// The time in `column` as `YYYY-MM-DDT<time>Z`: SQLite's text cut after `keep` characters,
    /// `pg` or `my` (the time of day in PostgreSQL's or MySQL's format) after the date.
    fn truncated(self, column: &str, keep: usize, pg: &str, my: &str) -> String {
        match self {
            Backend::Sqlite => {
                let rest = &"YYYY-MM-DDT00:00:00Z"[keep..];
                format!("substr({column}, 1, {keep}) || '{rest}'")
            }
            Backend::Postgres => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"{pg}\"Z\"')")
            }
            Backend::MySql => format!("DATE_FORMAT({column}, '%Y-%m-%dT{my}Z')"),
        }
    }
}

/// A fresh place for one test to write: a table prefix whose tables are dropped first (so reruns
/// start clean), and for SQLite a new database file.
pub(crate) struct Db {
    pub(crate) backend: Backend,
    pub(crate) url: String,
    pub(crate) prefix: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    /// Tables prefixed `<sq|pg|my>_<name>_`, none of them there yet; `None` when the server is
    /// unreachable (see [`tests::service_url`]).
    pub(crate) async fn fresh(backend: Backend, name: &str) -> Option<Db> {
        let url = backend.server_url()?;
        let short = match backend {
            Backend::Sqlite => "sq",
            Backend::Postgres => "pg",
            Backend::MySql => "my",
        };
        let mut db = Db {
            backend,
            url,
            prefix: format!("{short}_{name}_"),
            _dir: None,
        };
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().unwrap();
            db.url = format!("sqlite://{}", dir.path().join("usage.db").display());
            db._dir = Some(dir);
            return Some(db);
        }
        let cascade = if backend == Backend::Postgres {
            " CASCADE"
        } else {
            ""
        };
        let mut conn = db.open().await;
        for table in tests::SINK_TABLES {
            conn.execute(&format!(
                "DROP TABLE IF EXISTS {}{cascade}",
                db.table(table)
            ))
            .await;
        }
        Some(db)
    }

    /// The sink's configuration: this test's prefix.
    pub(crate) fn config(&self) -> SqlConfig {
        SqlConfig::new().table_prefix(&self.prefix).unwrap()
    }

    /// `table` with this test's prefix.
    pub(crate) fn table(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }

    /// A sink writing here.
    pub(crate) async fn sink(&self) -> AnySink {
        self.connect(&self.url).await.unwrap()
    }

    /// A sink writing here through `url` (another user, say).
    pub(crate) async fn connect(&self, url: &str) -> Result<AnySink, Error> {
        self.backend.connect_with(url, self.config()).await
    }

    /// How many rows the records table holds.
    pub(crate) async fn records(&self, conn: &mut Conn) -> i64 {
        let table = self.table("usage_records");
        conn.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// How many calls the hourly rollups count.
    pub(crate) async fn rolled_calls(&self, conn: &mut Conn) -> i64 {
        let (calls, table) = (
            self.backend.int("SUM(calls)"),
            self.table("usage_rollups_hourly"),
        );
        conn.scalar(&format!("SELECT {calls} FROM {table}")).await
    }

    /// A raw connection for checks (for SQLite, creating the file if the sink has not).
    pub(crate) async fn open(&self) -> Conn {
        match self.backend {
            Backend::Sqlite => Conn::Sqlite(
                SqliteConnection::connect(&format!("{}?mode=rwc", self.url))
                    .await
                    .unwrap(),
            ),
            Backend::Postgres => Conn::Postgres(PgConnection::connect(&self.url).await.unwrap()),
            Backend::MySql => Conn::MySql(MySqlConnection::connect(&self.url).await.unwrap()),
        }
    }
}

/// The sink of one backend.
#[derive(Debug)]
pub(crate) enum AnySink {
    Sqlite(SqliteSink),
    Postgres(PostgresSink),
    MySql(MySqlSink),
}

impl AnySink {
    /// The sink's startup verification.
    pub(crate) async fn verify(&self) -> Result<VerifyReport, Error> {
        match self {
            AnySink::Sqlite(sink) => sink.verify().await,
            AnySink::Postgres(sink) => sink.verify().await,
            AnySink::MySql(sink) => sink.verify().await,
        }
    }
}

impl Sink for AnySink {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        match self {
            AnySink::Sqlite(sink) => sink.write(batch).await,
            AnySink::Postgres(sink) => sink.write(batch).await,
            AnySink::MySql(sink) => sink.write(batch).await,
        }
    }

    async fn register(
        &mut self,
        service: &str,
        operations: &[&'static Operation],
    ) -> Result<(), Error> {
        match self {
            AnySink::Sqlite(sink) => sink.register(service, operations).await,
            AnySink::Postgres(sink) => sink.register(service, operations).await,
            AnySink::MySql(sink) => sink.register(service, operations).await,
        }
    }

    async fn prune(&mut self, before: DateTime<Utc>) -> Result<u64, Error> {
        match self {
            AnySink::Sqlite(sink) => sink.prune(before).await,
            AnySink::Postgres(sink) => sink.prune(before).await,
            AnySink::MySql(sink) => sink.prune(before).await,
        }
    }
}

/// A row type every backend decodes: tuples of `String`, `i64`, `Vec<u8>` and their options.
pub(crate) trait AnyRow:
    for<'r> FromRow<'r, SqliteRow>
    + for<'r> FromRow<'r, PgRow>
    + for<'r> FromRow<'r, MySqlRow>
    + Send
    + Unpin
{
}

impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, SqliteRow>
        + for<'r> FromRow<'r, PgRow>
        + for<'r> FromRow<'r, MySqlRow>
        + Send
        + Unpin
{
}

/// A raw connection to one backend, for checks and for setting up what a test needs.
pub(crate) enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

/// `$body` with `$conn` bound to the connection inside `$self`, whichever backend it is.
macro_rules! on_each {
    ($self:expr, $conn:ident => $body:expr) => {
        match $self {
            Conn::Sqlite($conn) => $body,
            Conn::Postgres($conn) => $body,
            Conn::MySql($conn) => $body,
        }
    };
}

impl Conn {
    /// Runs `sql` (one statement or several), and panics if it fails.
    pub(crate) async fn execute(&mut self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        on_each!(self, conn => { sqlx::raw_sql(sql).execute(conn).await.unwrap(); });
    }

    /// The rows of `sql`.
    pub(crate) async fn rows<T: AnyRow>(&mut self, sql: &str) -> Vec<T> {
        let sql = AssertSqlSafe(sql.to_owned());
        on_each!(self, conn => sqlx::query_as(sql).fetch_all(conn).await.unwrap())
    }

    /// The one row of `sql`.
    pub(crate) async fn row<T: AnyRow>(&mut self, sql: &str) -> T {
        let sql = AssertSqlSafe(sql.to_owned());
        on_each!(self, conn => sqlx::query_as(sql).fetch_one(conn).await.unwrap())
    }

    /// The one value of `sql`.
    pub(crate) async fn scalar<T>(&mut self, sql: &str) -> T
    where
        (T,): AnyRow,
    {
        self.row::<(T,)>(sql).await.0
    }

    /// How many ids `table` (with its prefix) holds.
    pub(crate) async fn distinct_ids(&mut self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(DISTINCT id) FROM {table}"))
            .await
    }
}
