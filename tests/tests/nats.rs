//! `NatsSink` against a real NATS JetStream server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use usage_runtime::sink::{NatsConfig, NatsSink, Sink};
use usage_runtime::{error::DbStep, error::FailureKind, track_usage, Error, Tracker, UsageRecord};

/// One tracker per process: the tests that install one take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stream and subject prefix of this test's own, so tests run in parallel.
fn own_config(name: &str) -> NatsConfig {
    let tag = format!("{name}_{}", fastrand::u32(..));
    NatsConfig::new()
        .stream(format!("USAGE_TEST_{tag}"))
        .subject_prefix(format!("usage_test.{tag}"))
}

/// A sink on a stream of the test's own (see [`own_config`]), with its configuration.
async fn own_sink(url: &str, name: &str) -> (NatsConfig, NatsSink) {
    let config = own_config(name);
    let sink = NatsSink::connect_with(url, config.clone()).await.unwrap();
    (config, sink)
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

async fn messages(url: &str, stream: &str) -> u64 {
    let mut stream = context(url).await.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// The stream's first message.
async fn first_message(url: &str, stream: &str) -> async_nats::jetstream::message::StreamMessage {
    let stream = context(url).await.get_stream(stream).await.unwrap();
    stream.get_raw_message(1).await.unwrap()
}

async fn delete(url: &str, stream: &str) {
    let _ = context(url).await.delete_stream(stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_is_one_message_per_record() {
    let Some(url) = tests::nats_url() else {
        return;
    };
    let (config, mut sink) = own_sink(&url, "twice").await;
    let records = tests::random_records(300, 7);
    sink.write(&records).await.unwrap();
    sink.write(&records).await.unwrap(); // a retry of a batch whose acks were lost
    sink.write(&records[..10]).await.unwrap();
    assert_eq!(messages(&url, &config.stream).await, 300);

    // Each message is the record as JSON, its id in `Nats-Msg-Id`, under the service's subject.
    let first = first_message(&url, &config.stream).await;
    let record: UsageRecord = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(record, records[0]);
    assert_eq!(
        first
            .headers
            .get("Nats-Msg-Id")
            .map(|id| id.as_str().to_owned()),
        Some(records[0].id.to_string())
    );
    assert!(first
        .subject
        .starts_with(&format!("{}.", config.subject_prefix)));
    delete(&url, &config.stream).await;
}

#[track_usage(operation = "nats.call", tenant = "acme")]
fn call(n: u64) -> u64 {
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_calls_reach_the_stream() {
    let Some(url) = tests::nats_url() else {
        return;
    };
    let _turn = TURN.lock().await;
    let (config, sink) = own_sink(&url, "tracked").await;
    let guard = Tracker::builder()
        .service("billing api")
        .sink(sink)
        .install()
        .unwrap();
    for n in 0..500 {
        call(n);
    }
    guard.flush().await.unwrap();
    assert_eq!(guard.health().written, 500);
    guard.shutdown().await.unwrap();
    assert_eq!(messages(&url, &config.stream).await, 500);
    // A service name with a space becomes one subject token.
    let first = first_message(&url, &config.stream).await;
    assert_eq!(
        first.subject.as_str(),
        format!("{}.billing_api", config.subject_prefix)
    );
    delete(&url, &config.stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_fit_is_named_with_what_is_wrong() {
    let Some(url) = tests::nats_url() else {
        return;
    };
    let config = own_config("misfit");
    context(&url)
        .await
        .create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec!["somewhere.else.>".into()],
            storage: stream::StorageType::Memory,
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = NatsSink::connect_with(&url, config.clone())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            Error::Database {
                step: DbStep::Migrate,
                ..
            }
        ),
        "{text}"
    );
    assert_eq!(
        error.failure_kind(),
        FailureKind::Other,
        "for a person to fix"
    );
    assert!(text.contains(&config.stream), "{text}");
    assert!(text.contains("do not take"), "{text}");
    assert!(text.contains("in memory"), "{text}");
    assert!(text.contains("duplicate window"), "{text}");
    delete(&url, &config.stream).await;
}

/// A NATS server of the test's own, stopped when dropped (so a failing test leaves no server
/// behind).
struct NatsServer {
    child: std::process::Child,
    port: u16,
}

impl NatsServer {
    /// Starts one on `port` (0: a free one), storing in `dir`, and waits until it accepts
    /// connections; `None` (after a loud message) if the binary is missing and `CI` is not set.
    fn start(dir: &std::path::Path, port: u16) -> Option<NatsServer> {
        let port = if port == 0 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        } else {
            port
        };
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut server = match child {
            Ok(child) => NatsServer { child, port },
            Err(error) if std::env::var_os("CI").is_none() => {
                eprintln!("\n!!!!!!!! SKIPPED: cannot start nats-server: {error}\n");
                return None;
            }
            Err(error) => panic!("cannot start nats-server (CI is set): {error}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server on port {port} exited ({status}): is the port taken?");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server on port {port} did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to be gone.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_rides_out_its_server_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NatsServer::start(dir.path(), 0) else {
        return;
    };
    let _turn = TURN.lock().await;
    let url = server.url();
    let config = own_config("restart");
    let mut sink = None;
    for _ in 0..50 {
        if let Ok(connected) = NatsSink::connect_with(&url, config.clone()).await {
            sink = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let guard = Tracker::builder()
        .sink(sink.expect("the test's server came up"))
        .batch_size(100)
        .flush_interval(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .max_retries(100)
        .write_timeout(Duration::from_secs(2))
        .install()
        .unwrap();
    let calls = 6_000u64;
    for n in 0..calls {
        call(n);
        if n == 2_000 {
            // The server goes away mid-stream, and comes back on the same port and store.
            server.stop();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if n == 4_000 {
            let port = server.port;
            drop(server);
            server = NatsServer::start(dir.path(), port).expect("restarted");
        }
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    guard.flush().await.unwrap();
    let health = guard.health();
    guard.shutdown().await.unwrap();
    assert_eq!(health.written, calls, "{health:?}");
    assert!(health.retries > 0, "the outage was felt: {health:?}");
    // Every call once: retried batches the server had already stored were dropped as duplicates.
    assert_eq!(messages(&url, &config.stream).await, calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_is_a_transient_failure() {
    // A server of this test's own, stopped halfway.
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NatsServer::start(dir.path(), 0) else {
        return;
    };
    let url = server.url();
    let port = server.port;
    let mut sink = None;
    for _ in 0..50 {
        match NatsSink::connect_with(&url, own_config("gone")).await {
            Ok(connected) => {
                sink = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut sink = sink.expect("the test's server came up");
    let records = tests::random_records(20, 3);
    sink.write(&records).await.unwrap();
    server.stop();
    let error = tokio::time::timeout(Duration::from_secs(30), sink.write(&records))
        .await
        .expect("a write to a dead server fails in bounded time")
        .unwrap_err();
    assert_eq!(error.failure_kind(), FailureKind::Transient, "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );

    // Nothing answers at all: the connection step fails, naming the server.
    let error = NatsSink::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Database {
                step: DbStep::Connect,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_a_producer_is_made_again_at_the_retry() {
    let Some(url) = tests::nats_url() else {
        return;
    };
    let (config, mut sink) = own_sink(&url, "deleted").await;
    let records = tests::random_records(50, 9);
    sink.write(&records[..10]).await.unwrap();
    // The server loses the stream (deleted, or JetStream's store wiped).
    delete(&url, &config.stream).await;
    let err = sink.write(&records[10..]).await.unwrap_err();
    assert_eq!(err.failure_kind(), FailureKind::Transient, "{err}");
    // The retry checks the stream again, makes it, and writes.
    sink.write(&records[10..]).await.unwrap();
    assert_eq!(messages(&url, &config.stream).await, 40);
    delete(&url, &config.stream).await;
}
