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

/// The NATS URL the tests use: `USAGE_TEST_NATS_URL`, default `nats://127.0.0.1:4222`.
pub fn nats_url() -> Option<String> {
    service_url("USAGE_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

/// Held by each test that installs the process-wide tracker (or shares a table), so the tests of
/// one binary take turns; a test that failed while holding it does not stop the rest.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A multi-thread runtime of two workers, for tests that block on async code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A sink that never finishes a write.
#[derive(Debug)]
pub struct Hung;

impl usage_runtime::sink::Sink for Hung {
    async fn write(
        &mut self,
        _batch: &[usage_runtime::UsageRecord],
    ) -> Result<(), usage_runtime::Error> {
        std::future::pending().await
    }
}

/// Waits until `done` answers true, checking every `every`; fails with `why()` after `within`.
pub fn wait_until(
    within: std::time::Duration,
    every: std::time::Duration,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> String,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{}", why());
        std::thread::sleep(every);
    }
}

/// Each record's operation, outcome and tenant, in order: what most shape tests compare.
pub fn summary(
    records: &[usage_runtime::UsageRecord],
) -> Vec<(&str, usage_runtime::Outcome, Option<&str>)> {
    records
        .iter()
        .map(|r| (r.operation.as_ref(), r.outcome, r.tenant_id.as_deref()))
        .collect()
}

/// The records of a JSON lines file, one a line.
pub fn jsonl_records(path: &std::path::Path) -> Vec<usage_runtime::UsageRecord> {
    assert!(path.exists(), "{} is missing", path.display());
    quarantined(path)
        .into_iter()
        .map(|line| serde_json::from_value(line).unwrap())
        .collect()
}

/// The lines of a quarantine file, each parsed as JSON; none when there is no file yet.
pub fn quarantined(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A PostgreSQL sink configuration writing tables named with `prefix`, those tables dropped first.
pub async fn fresh_postgres(url: &str, prefix: &str) -> usage_runtime::sink::SqlConfig {
    drop_postgres_tables(url, prefix).await;
    usage_runtime::sink::SqlConfig::new()
        .table_prefix(prefix)
        .unwrap()
}

/// A MySQL sink configuration writing tables named with `prefix`, those tables dropped first.
pub async fn fresh_mysql(url: &str, prefix: &str) -> usage_runtime::sink::SqlConfig {
    drop_mysql_tables(url, prefix).await;
    usage_runtime::sink::SqlConfig::new()
        .table_prefix(prefix)
        .unwrap()
}

/// The URL of a new SQLite database file `usage.db` in `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("usage.db").display())
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
    records[1].model = Some("模型-✨".into());
    records
}

/// A TCP proxy in front of a real database, for outage tests: [`cut`](Proxy::cut) closes every
/// connection and refuses new ones until [`restore`](Proxy::restore).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    _runtime: std::thread::JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;

        let upstream = upstream.to_owned();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let runtime = {
            let cut = std::sync::Arc::clone(&cut);
            let connections = std::sync::Arc::clone(&connections);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                    loop {
                        let Ok((mut client, _)) = listener.accept().await else {
                            continue;
                        };
                        if cut.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let upstream = upstream.clone();
                        let task = tokio::spawn(async move {
                            if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                        connections.lock().unwrap().push(task.abort_handle());
                    }
                });
            })
        };
        Proxy {
            port: port_rx.recv().unwrap(),
            cut,
            connections,
            _runtime: runtime,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` pointed at the proxy instead of the database.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (format!("{userinfo}@"), rest),
            None => (String::new(), rest),
        };
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme}://{userinfo}127.0.0.1:{}{path}", self.port)
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `host:port` of a database URL.
pub fn upstream(url: &str) -> String {
    let (host, port) = host_and_port(url);
    format!("{host}:{port}")
}

/// The 4,096 tracked calls of one batch (operation `part`), the 3,501st of operation `refused`:
/// a database told to refuse it fails the batch's last part (records 3,072 to 4,095) as a whole.
pub fn calls_with_one_refused() {
    #[usage_runtime::track_usage(operation = "part")]
    fn part() {}

    #[usage_runtime::track_usage(operation = "refused")]
    fn refused() {}

    for n in 0..4096 {
        if n == 3500 {
            refused();
        } else {
            part();
        }
    }
}

/// Random records spread over hours, tenants, models, outcomes and durations.
pub fn random_records(count: usize, seed: u64) -> Vec<usage_runtime::UsageRecord> {
    use usage_runtime::testing::Capture;

    #[usage_runtime::track_usage(operation = "rolled", tenant = tenant)]
    fn rolled(tenant: Option<&str>) {}

    let mut rng = fastrand::Rng::with_seed(seed);
    let capture = Capture::new();
    capture.run(|| {
        for _ in 0..count {
            let tenant = ["acme", "globex", ""][rng.usize(..3)];
            rolled((!tenant.is_empty()).then_some(tenant));
        }
    });
    let mut records = capture.records();
    let base = chrono::Utc::now() - chrono::Duration::days(2);
    for record in &mut records {
        record.started_at = base + chrono::Duration::microseconds(rng.i64(0..36 * 3_600_000_000));
        record.duration = std::time::Duration::from_micros(rng.u64(0..5_000_000));
        record.outcome = usage_runtime::Outcome::ALL[rng.usize(..4)];
        record.model = [None, Some("gpt-4o".into()), Some("haiku".into())][rng.usize(..3)].clone();
        record.input_tokens = rng.bool().then(|| rng.u64(0..10_000));
        record.output_tokens = rng.bool().then(|| rng.u64(0..10_000));
        record.cost_nano_usd = rng.bool().then(|| rng.i64(0..1_000_000));
        if rng.u8(..10) == 0 {
            record.operation = "other".into();
        }
        record.user_id = rng.bool().then(|| uuid::Uuid::from_u128(rng.u128(0..7)));
    }
    records
}

/// Two records with the same rollup key (hour, operation, tenant, model, outcome) and token
/// counts so large that their sum overflows any 64-bit integer.
pub fn overflowing_pair() -> Vec<usage_runtime::UsageRecord> {
    #[usage_runtime::track_usage(operation = "huge", tenant = "acme")]
    fn huge() {}

    let capture = usage_runtime::testing::Capture::new();
    capture.run(|| {
        huge();
        huge();
    });
    let mut records = capture.records();
    let hour = records[0].started_at;
    for record in &mut records {
        record.started_at = hour;
        record.input_tokens = Some(u64::MAX);
        record.cost_nano_usd = Some(i64::MAX);
        record.model = Some("gpt-4o".into());
    }
    records
}

/// Every table a SQL sink makes (with a prefix before each name), and the histogram table of
/// earlier versions.
pub const SINK_TABLES: [&str; 7] = [
    "usage_records",
    "usage_pruned",
    "usage_rollups_hourly",
    "usage_rollup_latency",
    "usage_rollups_daily",
    "usage_operations",
    "usage_schema_migrations",
];

/// Drops every table a PostgreSQL sink with `prefix` makes, so a test or bench leaves the shared
/// database as it found it.
pub async fn drop_postgres_tables(url: &str, prefix: &str) {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    for table in SINK_TABLES {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {prefix}{table}"
        )))
        .execute(&mut db)
        .await;
    }
}

/// Drops every table a MySQL sink with `prefix` makes, so a test starts clean.
pub async fn drop_mysql_tables(url: &str, prefix: &str) {
    use sqlx::Connection;
    let mut db = sqlx::MySqlConnection::connect(url).await.unwrap();
    for table in SINK_TABLES {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {prefix}{table}"
        )))
        .execute(&mut db)
        .await
        .unwrap();
    }
}

/// Rollup sums keyed by (hour, service, operation, tenant, model, outcome), the hour as
/// `YYYY-MM-DDTHH:00:00Z`: calls, input tokens, output tokens, cost, duration.
pub type RollupSums = std::collections::BTreeMap<
    (String, String, String, String, String, String),
    (i64, i64, i64, i64, i64),
>;

/// Hourly rollup sums added up per UTC day (`YYYY-MM-DDT00:00:00Z`), as the daily rows hold them.
pub fn by_day(hourly: &RollupSums) -> RollupSums {
    let mut days = RollupSums::new();
    for ((hour, service, operation, tenant, model, outcome), sums) in hourly {
        let day = format!("{}T00:00:00Z", &hour[..10]);
        let key = (
            day,
            service.clone(),
            operation.clone(),
            tenant.clone(),
            model.clone(),
            outcome.clone(),
        );
        let total = days.entry(key).or_default();
        total.0 += sums.0;
        total.1 += sums.1;
        total.2 += sums.2;
        total.3 += sums.3;
        total.4 += sums.4;
    }
    days
}

/// The calls an encoded rollup latency histogram holds.
pub fn histogram_calls(latency: &[u8]) -> u64 {
    let mut calls = 0;
    usage_runtime::rollup::decode_latency(latency, |_, n| calls += n).unwrap();
    calls
}

/// Serves `router` on an ephemeral local port; answers its address.
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
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
