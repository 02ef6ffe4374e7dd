//! Reaching a database: the host resolved first (a bad name is its own failure), a bounded
//! connection attempt, and the description of a database that errors print (never with a
//! password).

use std::time::Duration;

use crate::error::{DbStep, Error};

/// `scheme://user@host:port/database`: what errors and `Debug` show of a database.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn describe(scheme: &str, user: &str, host: &str, port: u16, database: &str) -> String {
    if user.is_empty() {
        format!("{scheme}://{host}:{port}/{database}")
    } else {
        format!("{scheme}://{user}@{host}:{port}/{database}")
    }
}

/// Resolves `host` before connecting, so a bad host name is its own named failure.
pub(crate) async fn resolve(host: &str, port: u16, target: &str) -> Result<(), Error> {
    if host.starts_with('/') {
        return Ok(()); // a Unix socket path
    }
    match tokio::net::lookup_host((host, port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::database(
            DbStep::Resolve,
            target,
            format!("`{host}` has no address"),
        )),
        Err(error) => Err(Error::database(DbStep::Resolve, target, error)),
    }
}

/// How long connecting may take before it is a named timeout.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a connection attempt with [`CONNECT_TIMEOUT`].
pub(crate) async fn with_connect_timeout<T>(
    target: &str,
    attempt: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::database(
            DbStep::Connect,
            target,
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}
