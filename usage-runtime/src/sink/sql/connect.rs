//! Reaching a database: the host resolved first (a bad name is its own failure), a bounded
//! connection attempt, and the description of a database that errors print (never with a
//! password).

use std::time::Duration;

use crate::error::{DbStep, Error};

/// Where a database server is: what errors and `Debug` show of it, and the host resolved
/// before connecting. A file database has none.
pub(crate) struct Endpoint<'a> {
    scheme: &'static str,
    user: &'a str,
    host: &'a str,
    port: u16,
    database: &'a str,
}

impl<'a> Endpoint<'a> {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn new(
        scheme: &'static str,
        user: &'a str,
        (host, port): (&'a str, u16),
        database: &'a str,
    ) -> Self {
        Endpoint {
            scheme,
            user,
            host,
            port,
            database,
        }
    }

    /// `scheme://user@host:port/database`, never with a password.
    pub(crate) fn describe(&self) -> String {
        let Endpoint {
            scheme,
            host,
            port,
            database,
            ..
        } = self;
        match self.user {
            "" => format!("{scheme}://{host}:{port}/{database}"),
            user => format!("{scheme}://{user}@{host}:{port}/{database}"),
        }
    }

    /// The host and port to resolve.
    pub(crate) fn address(&self) -> (String, u16) {
        (self.host.to_owned(), self.port)
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
