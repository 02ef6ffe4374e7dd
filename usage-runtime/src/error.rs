//! The runtime's errors, and the redaction of secrets in what they print.

use std::fmt;
use std::time::Duration;

/// A boxed error from a database driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the runtime. Every message names what failed and where, and
/// none contains a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tracker is already installed in this process.
    #[error(
        "a usage tracker is already installed in this process; shut it down (or drop its guard) \
         before installing another"
    )]
    AlreadyInstalled,
    /// `install()` was called without a sink.
    #[error("no sink configured: call TrackerBuilder::sink(...) before install()")]
    NoSink,
    /// A builder setting is out of range.
    #[error("invalid tracker configuration: {0}")]
    InvalidConfig(String),
    /// The worker thread could not be started.
    #[error("could not start the usage worker thread: {0}")]
    WorkerSpawn(#[source] std::io::Error),
    /// The worker thread is gone (it panicked or was already shut down).
    #[error("the usage worker has stopped; records can no longer be written")]
    WorkerStopped,
    /// A database URL could not be understood.
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A database step failed.
    #[error("{step} failed for {target}: {source}")]
    Database {
        /// Which step failed.
        step: DbStep,
        /// The database, as `scheme://user@host:port/database`, never with the password.
        target: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Records could not be written during a flush or shutdown.
    #[error("{count} record(s) could not be written: {reason}")]
    NotWritten {
        /// How many records.
        count: u64,
        /// Why, from the last failure.
        reason: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// The step of talking to a database that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbStep {
    /// Resolving the host name.
    Resolve,
    /// Opening the connection (or the database file).
    Connect,
    /// Logging in.
    Authenticate,
    /// Creating or upgrading the schema.
    Migrate,
    /// Writing records.
    Write,
    /// Reading records back.
    Read,
}

impl fmt::Display for DbStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbStep::Resolve => "resolve",
            DbStep::Connect => "connect",
            DbStep::Authenticate => "authenticate",
            DbStep::Migrate => "migrate",
            DbStep::Write => "write",
            DbStep::Read => "read",
        })
    }
}

impl Error {
    pub(crate) fn database(step: DbStep, target: &str, source: impl Into<BoxError>) -> Self {
        Error::Database {
            step,
            target: target.to_owned(),
            source: source.into(),
        }
    }
}

/// `url` with the password in its user info, and any `password=` query parameter, replaced by
/// `***`.
///
/// ```
/// assert_eq!(
///     usage_runtime::redact_url("postgres://app:hunter2@db:5432/usage?sslmode=require&password=x"),
///     "postgres://app:***@db:5432/usage?sslmode=require&password=***",
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host_and_path}"),
                None => format!("{scheme}://{userinfo}@{host_and_path}"),
            },
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "sslpassword",
    ]
    .iter()
    .any(|secret| key == *secret)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        for (url, expected) in [
            ("sqlite://usage.db", "sqlite://usage.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://u:p%40ss@h:1/db", "postgres://u:***@h:1/db"),
            (
                "mysql://root:s3cr3t@127.0.0.1",
                "mysql://root:***@127.0.0.1",
            ),
            (
                "postgres://h/db?password=abc&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
        ] {
            assert_eq!(redact_url(url), expected);
        }
        assert!(!redact_url("postgres://a:topsecret@h/d").contains("topsecret"));
    }
}
