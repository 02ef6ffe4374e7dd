//! `NatsSink` against a real NATS JetStream server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use usage_runtime::sink::{NatsConfig, NatsSink, Sink};
use usage_runtime::{track_usage, DbStep, Error, FailureKind, Tracker, UsageRecord};

/// A stream and subject prefix of this test's own, so tests run in parallel.
fn own_config(name: &str) -> NatsConfig {
    let tag = format!("{name}_{}", fastrand::u32(..));
    NatsConfig::new()
        .stream(format!("USAGE_TEST_{tag}"))
        .subject_prefix(format!("usage_test.{tag}"))
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

async fn messages(url: &str, stream: &str) -> u64 {
    let mut stream = context(url).await.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn delete(url: &str, stream: &str) {
    let _ = context(url).await.delete_stream(stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_is_one_message_per_record() {
    let Some(url) = tests::nats_url() else {
        return;
    };
    let config = own_config("twice");
    let mut sink = NatsSink::connect_with(&url, config.clone()).await.unwrap();
    let records = tests::random_records(300, 7);
    sink.write(&records).await.unwrap();
    sink.write(&records).await.unwrap(); // a retry of a batch whose acks were lost
    sink.write(&records[..10]).await.unwrap();
    assert_eq!(messages(&url, &config.stream).await, 300);

    // Each message is the record as JSON, its id in `Nats-Msg-Id`, under the service's subject.
    let stream = context(&url)
        .await
        .get_stream(&config.stream)
        .await
        .unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
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
    let config = own_config("tracked");
    let sink = NatsSink::connect_with(&url, config.clone()).await.unwrap();
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
    let stream = context(&url)
        .await
        .get_stream(&config.stream)
        .await
        .unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
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
    assert!(text.contains(&config.stream), "{text}");
    assert!(text.contains("do not take"), "{text}");
    assert!(text.contains("in memory"), "{text}");
    assert!(text.contains("duplicate window"), "{text}");
    delete(&url, &config.stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_is_a_transient_failure() {
    // A server of this test's own, stopped halfway.
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut server = match server {
        Ok(server) => server,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("\n!!!!!!!! SKIPPED: cannot start nats-server: {error}\n");
            return;
        }
        Err(error) => panic!("cannot start nats-server (CI is set): {error}"),
    };
    let url = format!("nats://127.0.0.1:{port}");
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
    server.kill().unwrap();
    server.wait().unwrap();
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
