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
        /// Whether trying again, or without some records, can succeed.
        kind: FailureKind,
    },
    /// Records could not be written during a flush or shutdown.
    #[error("{count} record(s) could not be written: {reason}")]
    NotWritten {
        /// How many records.
        count: u64,
        /// Why, from the last failure.
        reason: String,
    },
    /// The spool directory could not be opened.
    #[error("cannot open the usage spool in {dir}: {source}")]
    Spool {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sink panicked while writing a batch; the batch is counted as failed.
    #[error("the sink panicked while writing: {0}")]
    SinkPanicked(String),
    /// A bounded wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A sink that writes a batch in parts at once (PostgreSQL and MySQL, see
    /// `SqlConfig::write_connections`) committed some parts before another failed. The worker
    /// counts the records in `written` as written and goes on with the rest alone.
    #[error("{source} ({} record(s) of the batch were written)", written.len())]
    PartlyWritten {
        /// The ids of the records committed (every record of each part that committed).
        written: RecordIds,
        /// Why the rest was not: the first failed part's error.
        #[source]
        source: Box<Error>,
    },
    /// Records that started before the hour the database's records were pruned up to (by a
    /// tracker's `retention` or `usage prune`) are refused: the rollups kept that time, and
    /// may already count them (a record pruned, then written again from an old spool or a
    /// stream read from its start). The batch's other records were written. The worker
    /// quarantines the refused ones with this reason and counts them in `Health::expired`.
    #[error(
        "{} record(s) started before {horizon}, where the records were pruned (the rollups \
         keep that time and may count them already): refused, never added twice",
        refused.len()
    )]
    Expired {
        /// The ids refused.
        refused: RecordIds,
        /// The pruned horizon: records that started before it are refused.
        horizon: chrono::DateTime<chrono::Utc>,
    },
}

/// The ids of records: those a sink committed, in [`Error::PartlyWritten`], or refused, in
/// [`Error::Expired`]. `Debug` shows how many,
/// not the ids (a batch holds thousands).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RecordIds(pub Vec<uuid::Uuid>);

impl RecordIds {
    /// How many ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for RecordIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordIds({} ids)", self.0.len())
    }
}

/// The step of talking to a database that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
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

/// What kind of failure a database error is, which decides what the tracker does with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Trying again can succeed: a refused or reset connection, a timeout, an exhausted pool, a
    /// deadlock, a serialization failure, a busy database, a server shutting down.
    Transient,
    /// The database rejected a value or a constraint: the same records will fail again, but the
    /// batch without them can succeed.
    Rejected,
    /// Neither: a missing table, a permission, a bad configuration.
    Other,
}

impl Error {
    pub(crate) fn database(step: DbStep, target: &str, source: impl Failure) -> Self {
        Error::Database {
            step,
            target: target.to_owned(),
            kind: source.kind(),
            source: source.boxed(),
        }
    }

    /// The kind of a database failure; other errors are [`FailureKind::Other`], except a timeout,
    /// which is [`FailureKind::Transient`], and a sink that panicked, which is
    /// [`FailureKind::Rejected`] (the batch is split to find the record it cannot take).
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            Error::Database { kind, .. } => *kind,
            Error::PartlyWritten { source, .. } => source.failure_kind(),
            Error::Timeout(_) => FailureKind::Transient,
            Error::SinkPanicked(_) | Error::Expired { .. } => FailureKind::Rejected,
            _ => FailureKind::Other,
        }
    }
}

/// An error a sink can hand to [`Error::database`], with its [`FailureKind`].
pub(crate) trait Failure {
    fn kind(&self) -> FailureKind;
    fn boxed(self) -> BoxError;
}

impl Failure for &str {
    fn kind(&self) -> FailureKind {
        FailureKind::Other
    }
    fn boxed(self) -> BoxError {
        self.into()
    }
}

impl Failure for String {
    fn kind(&self) -> FailureKind {
        FailureKind::Other
    }
    fn boxed(self) -> BoxError {
        self.into()
    }
}

impl Failure for std::io::Error {
    fn kind(&self) -> FailureKind {
        use std::io::ErrorKind::*;
        match std::io::Error::kind(self) {
            NotFound | PermissionDenied | InvalidInput | InvalidData | Unsupported => {
                FailureKind::Other
            }
            _ => FailureKind::Transient,
        }
    }
    fn boxed(self) -> BoxError {
        self.into()
    }
}

impl Failure for serde_json::Error {
    fn kind(&self) -> FailureKind {
        FailureKind::Rejected
    }
    fn boxed(self) -> BoxError {
        self.into()
    }
}

/// `url` with its secrets replaced by `***`: the password in the user info (the whole user info
/// when it is a bare token, as in `nats://TOKEN@host`, for schemes other than the SQL ones), and
/// `password=`, `token=`-like parameters, in a query string or in a `key=value` connection string.
///
/// ```
/// assert_eq!(
///     usage_runtime::error::redact_url("postgres://app:hunter2@db:5432/usage?sslmode=require&password=x"),
///     "postgres://app:***@db:5432/usage?sslmode=require&password=***",
/// );
/// assert_eq!(
///     usage_runtime::error::redact_url("host=db user=app password=hunter2"),
///     "host=db user=app password=***",
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let url_parts = url
        .split_once("://")
        .filter(|(scheme, _)| is_scheme(scheme));
    let Some((scheme, rest)) = url_parts else {
        // Not a URL (a `://` inside a value does not make one): a libpq-style `key = value`
        // connection string, its secrets redacted.
        return redact_conninfo(url);
    };
    // The user info ends at the last `@`: a password may hold `/`, `?` or `#` unescaped, and
    // cutting too much only hides more. Without a `:`, text holding `/` or `?` before that `@`
    // is a path or a query (`?password=p@ss`), not a user name.
    let (userinfo, host_and_rest) = match rest.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.contains(':') && userinfo.contains(['/', '?']) => {
            (None, rest)
        }
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, rest),
    };
    let (host_and_path, query) = match host_and_rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (host_and_rest, None),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => out.push_str(&format!("{user}:***@")),
            None if is_sql_scheme(scheme) => out.push_str(&format!("{userinfo}@")),
            None => out.push_str("***@"),
        }
    }
    out.push_str(host_and_path);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_pairs(query, '&'));
    }
    out
}

/// A `key = value` connection string (libpq's form: spaces around `=` allowed, values in single
/// quotes with `\'` and `\\` escapes) with each secret value replaced by `***`. A string that does
/// not read as one is not shown at all when it might hold a secret.
fn redact_conninfo(text: &str) -> String {
    match conninfo_pairs(text) {
        Some(pairs) => pairs
            .iter()
            .map(|(key, value)| match is_secret_key(key) {
                true => format!("{key}=***"),
                false => format!("{key}={value}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        None if text.contains('=') || text.contains('\'') => {
            "<a connection string that does not parse, not shown>".to_owned()
        }
        None => text.to_owned(),
    }
}

/// The `key=value` pairs of a libpq connection string, each value as written (quotes kept), or
/// `None` when it is not one.
fn conninfo_pairs(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start().strip_prefix('=')?.trim_start();
        if key.is_empty() {
            return None;
        }
        // A backslash escapes the next character, quoted or not (a space too).
        let value_end = if let Some(quoted) = rest.strip_prefix('\'') {
            unescaped(quoted, |c| c == '\'')? + 2 // both quotes
        } else {
            unescaped(rest, char::is_whitespace).unwrap_or(rest.len())
        };
        pairs.push((key, &rest[..value_end]));
        rest = rest[value_end..].trim_start();
    }
    Some(pairs)
}

/// Where in `text` the first character that `ends` and that no backslash escapes stands.
fn unescaped(text: &str, ends: impl Fn(char) -> bool) -> Option<usize> {
    let mut escaped = false;
    text.char_indices()
        .find(|&(_, c)| {
            let end = !escaped && ends(c);
            escaped = !escaped && c == '\\';
            end
        })
        .map(|(at, _)| at)
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_sql_scheme(scheme: &str) -> bool {
    ["postgres", "postgresql", "mysql", "mariadb", "sqlite"].contains(&scheme)
}

fn redact_pairs(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "sslpassword",
        "pass",
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
            ("postgres://app:pa?ss@db/x", "postgres://app:***@db/x"),
            ("nats://s3cr3tT0ken@nats:4222", "nats://***@nats:4222"),
            ("nats://user:pw@nats:4222", "nats://user:***@nats:4222"),
            (
                "host=db user=app password=hunter2",
                "host=db user=app password=***",
            ),
            (
                "host=db user=app password = hunter2",
                "host=db user=app password=***",
            ),
            (
                "host=db password='hunter 2' dbname=x",
                "host=db password=*** dbname=x",
            ),
            (
                r"password='it\'s a secret' host='my db'",
                "password=*** host='my db'",
            ),
            ("usage.db", "usage.db"),
        ] {
            assert_eq!(redact_url(url), expected);
        }
        for url in [
            "postgres://a:topsecret@h/d",
            "mysql://a:top@secret@h/d",
            "postgres://a:top?secret@h/d?x=1",
            "redis://topsecret@h",
            "dbname=x password=topsecret",
            "host=db user=app password = topsecret",
            "host=db password='top secret'",
            "host=db PASSWORD =   'topsecret' port=5",
            "host=db password='topsecret",
            "host=db password=",
            "password=topsecret=more",
            "host=db password=a://topsecret",
            "host=db application_name=x://u@h password=topsecret",
            r"password=top\ secret host=db",
            "postgres://h/db?password=top@secret",
            "postgres://h/db?x=1&password=topsecret@h2",
        ] {
            assert!(
                !redact_url(url).contains("secret"),
                "{url} -> {}",
                redact_url(url)
            );
        }
    }
}
