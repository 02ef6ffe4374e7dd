//! Which database a URL names, decided once for the sinks, the reader and the CLI.

use crate::call::catalog::Operation;
use crate::error::{redact_url, Error};
use crate::record::UsageRecord;
use crate::sink::{Sink, SqlConfig, VerifyReport};

/// The SQL databases, as a URL's scheme names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `sqlite:` (feature `sqlite`).
    Sqlite,
    /// `postgres:` or `postgresql:` (feature `postgres`).
    Postgres,
    /// `mysql:` or `mariadb:` (feature `mysql`).
    MySql,
}

impl Backend {
    /// The database `url` names, if this build has its feature; else
    /// [`Error::InvalidUrl`], which never shows a password.
    pub fn of_url(url: &str) -> Result<Backend, Error> {
        let backend = match url.split(':').next() {
            #[cfg(feature = "sqlite")]
            Some("sqlite") => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Some("postgres" | "postgresql") => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Some("mysql" | "mariadb") => Backend::MySql,
            _ => {
                return Err(Error::InvalidUrl {
                    url: redact_url(url),
                    reason: "expected a sqlite://, postgres:// or mysql:// URL (with its feature)"
                        .into(),
                })
            }
        };
        Ok(backend)
    }
}

/// The SQL sink for whichever database a URL names (for a URL from configuration).
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySqlSink {
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(super::sqlite::SqliteSink),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PostgresSink),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    MySql(super::mysql::MySqlSink),
}

/// `$body` with `$sink` bound to the sink inside whichever variant `$any` is.
macro_rules! each {
    ($any:expr, $sink:ident => $body:expr) => {
        match $any {
            #[cfg(feature = "sqlite")]
            AnySqlSink::Sqlite($sink) => $body,
            #[cfg(feature = "postgres")]
            AnySqlSink::Postgres($sink) => $body,
            #[cfg(feature = "mysql")]
            AnySqlSink::MySql($sink) => $body,
        }
    };
}

impl AnySqlSink {
    /// Connects to the database `url` names ([`Backend::of_url`]) and brings its schema up to
    /// date.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, SqlConfig::new()).await
    }

    /// [`connect`](Self::connect) with a table prefix and write settings.
    pub async fn connect_with(url: &str, config: SqlConfig) -> Result<Self, Error> {
        Ok(match Backend::of_url(url)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                AnySqlSink::Sqlite(super::sqlite::SqliteSink::connect_with(url, config).await?)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => AnySqlSink::Postgres(
                super::postgres::PostgresSink::connect_with(url, config).await?,
            ),
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                AnySqlSink::MySql(super::mysql::MySqlSink::connect_with(url, config).await?)
            }
            #[allow(unreachable_patterns)] // a backend whose feature is off is refused above
            _ => unreachable!("Backend::of_url answers only compiled-in backends"),
        })
    }

    /// The database as errors show it (never the password).
    pub fn target(&self) -> &str {
        each!(self, sink => sink.target())
    }

    /// The sink's startup verification (see [`SqliteSink::verify`](super::sqlite::SqliteSink::verify)).
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        each!(self, sink => sink.verify().await)
    }
}

impl Sink for AnySqlSink {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        each!(self, sink => sink.write(batch).await)
    }

    async fn register(
        &mut self,
        service: &str,
        operations: &[&'static Operation],
    ) -> Result<(), Error> {
        each!(self, sink => sink.register(service, operations).await)
    }

    async fn prune(&mut self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, Error> {
        each!(self, sink => sink.prune(before).await)
    }
}
