//! Helpers for the workspace's tests: where the real services are, and what to do when one is
//! unreachable (skip loudly on a developer's machine, fail when `CI` is set).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The PostgreSQL URL the tests use: `USAGE_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> Option<String> {
    service_url(
        "USAGE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

/// The MySQL / MariaDB URL the tests use: `USAGE_TEST_MYSQL_URL`, default
/// `mysql://root@127.0.0.1:3306/test`.
pub fn mysql_url() -> Option<String> {
    service_url("USAGE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

/// The URL in `var` (or `default`) if its host answers on its port. Otherwise `None` after a
/// loud message, or a panic when the `CI` environment variable is set.
pub fn service_url(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let (host, port) = host_and_port(&url);
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            TcpStream::connect_timeout(&address, Duration::from_secs(3)).is_ok()
        });
    if reachable {
        return Some(url);
    }
    let message = format!(
        "{var}: nothing answers at {host}:{port}; start the service (see .ci/run) or set {var}"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message} (CI is set, so this is a failure)");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message}\n");
    None
}

/// `host` and `port` of a `scheme://user:password@host:port/database` URL.
fn host_and_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(0)),
        None => (
            authority.to_owned(),
            if url.starts_with("mysql") { 3306 } else { 5432 },
        ),
    }
}

/// `url` with its database path replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &head[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` with `user:password@` as its user info.
pub fn with_user(url: &str, user: &str, password: Option<&str>) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    match password {
        Some(password) => format!("{scheme}://{user}:{password}@{host}"),
        None => format!("{scheme}://{user}@{host}"),
    }
}

/// Records carrying every awkward value a user can produce: emoji and other Unicode, NUL bytes,
/// a 1 MiB error message, the largest token counts, a microsecond timestamp, nested JSON.
pub fn awkward_records() -> Vec<usage_runtime::UsageRecord> {
    use usage_runtime::testing::Capture;

    #[usage_runtime::track_usage(
        operation = "chat 💬 — ünïcödé",
        tenant = tenant,
        user = "user\u{0}with-nul",
        fields(note = note, nested = serde_json::json!({"emoji": "🦀", "deep": [1, "\u{0}"]}))
    )]
    fn awkward(tenant: &str, note: &str, fail: bool) -> Result<(), String> {
        if fail {
            Err(format!("failed \u{0} at {note}"))
        } else {
            Ok(())
        }
    }

    let capture = Capture::new();
    capture.run(|| {
        let _ = awkward("テナント-🏢", "zero\u{0}byte", true);
        let _ = awkward("plain", "ok", false);
    });
    let mut records = capture.records();
    records[0].error_message = Some("é".repeat(512 * 1024)); // 1 MiB of two-byte characters
    records[1].input_tokens = Some(u64::MAX);
    records[1].output_tokens = Some(0);
    records[1].cached_input_tokens = Some(u64::MAX - 1);
    records[1].cost_nano_usd = Some(i64::MAX);
    records[1].model = Some("模型-✨".to_owned());
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        assert_eq!(
            host_and_port("postgres://postgres@127.0.0.1:5432/test"),
            ("127.0.0.1".into(), 5432)
        );
        assert_eq!(
            host_and_port("mysql://root:pw@db/test"),
            ("db".into(), 3306)
        );
        assert_eq!(
            with_database("postgres://u@h:1/test?x=1", "other"),
            "postgres://u@h:1/other?x=1"
        );
        assert_eq!(
            with_user("mysql://root@h:3306/test", "app", Some("pw")),
            "mysql://app:pw@h:3306/test"
        );
    }
}
