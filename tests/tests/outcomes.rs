//! Classification (success, error, panic, cancellation), error text, dimensions and the catalog.
#![allow(missing_debug_implementations)]

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use usage_runtime::testing::Capture;
use usage_runtime::{
    classify::Classification, classify::Classify, track_usage, Outcome, UsageRecord,
};
use uuid::Uuid;

fn records_of(f: impl FnOnce()) -> Vec<UsageRecord> {
    let capture = Capture::new();
    capture.run(f);
    capture.records()
}

fn block_on<F: Future>(capture: &Capture, future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(capture.run_async(future))
}

// ---------------------------------------------------------------- errors

#[derive(Debug)]
struct Inner;

impl std::fmt::Display for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused")
    }
}

/// An error with a cause; its alternate form prints the chain, as anyhow does.
#[derive(Debug)]
struct ChainError(Inner);

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "calling the model: {}", self.0)
        } else {
            f.write_str("calling the model")
        }
    }
}

type AppResult<T> = Result<T, ChainError>;

#[track_usage(operation = "alias")]
fn with_alias(fail: bool) -> AppResult<u8> {
    if fail {
        Err(ChainError(Inner))
    } else {
        Ok(1)
    }
}

#[track_usage(operation = "io")]
fn with_io_result() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no such model",
    ))
}

#[track_usage(operation = "boxed_error")]
fn with_boxed_error() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err("boxed failure".into())
}

#[derive(Debug)]
struct NotDisplay;

#[track_usage(operation = "not_display")]
fn with_non_display_error() -> Result<(), NotDisplay> {
    Err(NotDisplay)
}

#[track_usage(operation = "quiet", error_message = false)]
fn quiet_error() -> Result<(), ChainError> {
    Err(ChainError(Inner))
}

#[track_usage(operation = "long")]
fn long_error(bytes: usize) -> Result<(), String> {
    Err("x".repeat(bytes))
}

#[test]
fn err_of_any_result_alias_is_an_error_with_type_and_chain() {
    let records = records_of(|| {
        with_alias(false).unwrap();
        with_alias(true).unwrap_err();
        with_io_result().unwrap_err();
        with_boxed_error().unwrap_err();
    });
    assert_eq!(records[0].outcome, Outcome::Success);
    assert_eq!(records[0].error_type, None);

    assert_eq!(records[1].outcome, Outcome::Error);
    assert_eq!(
        records[1].error_type.as_deref(),
        Some("outcomes::ChainError")
    );
    assert_eq!(
        records[1].error_message.as_deref(),
        Some("calling the model: connection refused"),
        "the alternate form keeps the chain"
    );

    assert_eq!(
        records[2].error_type.as_deref(),
        Some("std::io::error::Error")
    );
    assert_eq!(records[2].error_message.as_deref(), Some("no such model"));

    assert_eq!(records[3].outcome, Outcome::Error);
    assert_eq!(records[3].error_message.as_deref(), Some("boxed failure"));
}

#[test]
fn error_without_display_and_error_text_turned_off() {
    let records = records_of(|| {
        with_non_display_error().unwrap_err();
        quiet_error().unwrap_err();
    });
    assert_eq!(records[0].outcome, Outcome::Error);
    assert_eq!(
        records[0].error_type.as_deref(),
        Some("outcomes::NotDisplay")
    );
    assert_eq!(records[0].error_message, None);
    assert_eq!(records[1].outcome, Outcome::Error);
    assert_eq!(
        records[1].error_type.as_deref(),
        Some("outcomes::ChainError")
    );
    assert_eq!(
        records[1].error_message, None,
        "error_message = false must keep text out"
    );
}

#[test]
fn error_text_is_truncated_to_one_kib_by_default() {
    let records = records_of(|| {
        long_error(1_000_000).unwrap_err();
        long_error(1024).unwrap_err();
    });
    let cut = records[0].error_message.as_deref().unwrap();
    assert_eq!(cut.len(), 1024);
    assert!(cut.ends_with('…'));
    assert_eq!(records[1].error_message.as_deref().unwrap().len(), 1024);
    assert!(!records[1].error_message.as_deref().unwrap().ends_with('…'));
}

// ---------------------------------------------------------------- user classification

struct HttpResponse {
    status: u16,
}

impl Classify for HttpResponse {
    fn classify(&self) -> Classification<'_> {
        if self.status >= 500 {
            Classification::error("http_5xx")
        } else {
            Classification::Success
        }
    }
}

#[track_usage(operation = "http")]
fn http(status: u16) -> HttpResponse {
    HttpResponse { status }
}

fn is_teapot(response: &HttpResponse) -> bool {
    response.status == 418
}

#[track_usage(operation = "teapot", error_if = is_teapot)]
fn teapot(status: u16) -> HttpResponse {
    HttpResponse { status }
}

#[track_usage(operation = "not_found_is_ok", ok_if = |r: &Result<u8, String>| match r {
    Ok(_) => true,
    Err(e) => e == "not found",
})]
fn lookup(found: Option<u8>, error: &str) -> Result<u8, String> {
    found.ok_or_else(|| error.to_owned())
}

#[track_usage(operation = "negative", error_if = |n| *n < 0)]
fn signed(n: i32) -> i32 {
    n
}

#[test]
fn a_type_can_classify_itself() {
    let records = records_of(|| {
        http(200);
        http(503);
    });
    assert_eq!(records[0].outcome, Outcome::Success);
    assert_eq!(records[1].outcome, Outcome::Error);
    assert_eq!(records[1].error_type.as_deref(), Some("http_5xx"));
}

#[test]
fn ok_if_and_error_if_override_the_classification() {
    let records = records_of(|| {
        teapot(418);
        teapot(503);
        lookup(Some(1), "").unwrap();
        lookup(None, "not found").unwrap_err();
        lookup(None, "database down").unwrap_err();
        signed(-1);
        signed(1);
    });
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| (r.operation.as_ref(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("teapot", Outcome::Error),
            ("teapot", Outcome::Success),
            ("not_found_is_ok", Outcome::Success),
            ("not_found_is_ok", Outcome::Success),
            ("not_found_is_ok", Outcome::Error),
            ("negative", Outcome::Error),
            ("negative", Outcome::Success),
        ]
    );
    // A non-error value called an error names its type.
    assert_eq!(records[5].error_type.as_deref(), Some("i32"));
    // An Err called an error keeps its own details.
    assert_eq!(records[4].error_message.as_deref(), Some("database down"));
}

// ---------------------------------------------------------------- panics and cancellation

#[track_usage(operation = "panics")]
fn panics(message: &str) -> u8 {
    panic!("{message}")
}

#[track_usage(operation = "async_panics")]
async fn async_panics() -> u8 {
    tokio::task::yield_now().await;
    panic!("async boom")
}

#[track_usage(operation = "slow")]
async fn slow() -> u8 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    1
}

#[test]
fn a_panic_is_recorded_and_keeps_unwinding() {
    let capture = Capture::new();
    let caught = capture.run(|| std::panic::catch_unwind(|| panics("sync boom")));
    assert!(caught.is_err(), "the panic must continue");
    let records = capture.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Panic);
    assert_eq!(records[0].operation, "panics");
}

#[test]
fn an_async_panic_is_recorded_when_the_task_is_dropped() {
    let capture = Capture::new();
    let joined = block_on(&capture, async {
        // The panic unwinds out of a poll; the task drops the future afterwards.
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async_panics())).await
    });
    assert!(joined.is_err());
    let records = capture.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Panic);
}

#[track_usage(operation = "builds_then_panics", tenant = "acme")]
fn builds_then_panics(fail: bool) -> impl Future<Output = u8> {
    assert!(!fail, "refused before the future exists");
    async { 1 }
}

#[track_usage(operation = "boxed_builds_then_panics")]
fn boxed_builds_then_panics(fail: bool) -> std::pin::Pin<Box<dyn Future<Output = u8> + Send>> {
    assert!(!fail, "refused before the future exists");
    Box::pin(async { 2 })
}

#[track_usage(operation = "stream_builds_then_panics", stream, tenant = org)]
fn stream_builds_then_panics(org: String, fail: bool) -> impl futures::Stream<Item = u8> {
    assert!(!fail, "refused before the stream exists");
    // The body takes what the tenant was read from.
    drop(org);
    futures::stream::iter([3])
}

#[test]
fn a_panic_while_a_future_or_stream_is_built_is_the_calls_panic() {
    let capture = Capture::new();
    for build in [
        (|| drop(builds_then_panics(true))) as fn(),
        || drop(boxed_builds_then_panics(true)),
        || drop(stream_builds_then_panics("globex".to_owned(), true)),
    ] {
        let caught = capture.run(|| std::panic::catch_unwind(build));
        assert!(caught.is_err(), "the panic must continue");
    }
    let records = capture.records();
    let seen = tests::summary(&records);
    assert_eq!(
        seen,
        [
            ("builds_then_panics", Outcome::Panic, Some("acme")),
            ("boxed_builds_then_panics", Outcome::Panic, None),
            ("stream_builds_then_panics", Outcome::Panic, Some("globex")),
        ]
    );
    // Built without a panic, each is still one record, made when it finishes.
    let capture = Capture::new();
    let total = block_on(&capture, async {
        use futures::StreamExt as _;
        let sum = builds_then_panics(false).await + boxed_builds_then_panics(false).await;
        sum + stream_builds_then_panics("globex".to_owned(), false)
            .collect::<Vec<_>>()
            .await[0]
    });
    assert_eq!(total, 6);
    let outcomes: Vec<_> = capture.records().iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Success; 3]);
}

#[track_usage(operation = "classifier_panics", error_if = |_| panic!("classifier boom"))]
fn classifier_panics() -> u8 {
    1
}

#[track_usage(operation = "async_classifier_panics", error_if = |_| panic!("classifier boom"))]
async fn async_classifier_panics() -> u8 {
    tokio::task::yield_now().await;
    1
}

#[track_usage(operation = "stream_classifier_panics", stream, error_if = |_| panic!("boom"))]
fn stream_classifier_panics() -> impl futures::Stream<Item = u8> {
    futures::stream::iter([1, 2])
}

#[test]
fn a_panic_in_the_calls_own_classification_is_its_panic() {
    let capture = Capture::new();
    let caught = capture.run(|| std::panic::catch_unwind(classifier_panics));
    assert!(caught.is_err());
    let joined = block_on(&capture, async {
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async_classifier_panics()))
            .await
    });
    assert!(joined.is_err());
    let joined = block_on(&capture, async {
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
            use futures::StreamExt as _;
            stream_classifier_panics().collect::<Vec<_>>().await
        }))
        .await
    });
    assert!(joined.is_err());
    let seen: Vec<_> = capture
        .records()
        .iter()
        .map(|r| (r.operation.to_string(), r.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            ("classifier_panics".to_owned(), Outcome::Panic),
            ("async_classifier_panics".to_owned(), Outcome::Panic),
            ("stream_classifier_panics".to_owned(), Outcome::Panic),
        ]
    );
}

#[test]
fn a_future_dropped_while_another_panic_unwinds_is_cancelled_not_a_panic() {
    let capture = Capture::new();
    let joined = block_on(&capture, async {
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
            let mut waiting = std::pin::pin!(slow());
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            // Not this call's panic: `waiting` is dropped while it unwinds.
            panic!("a sibling's panic");
        }))
        .await
    });
    assert!(joined.is_err());
    let records = capture.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].operation, "slow");
    assert_eq!(records[0].outcome, Outcome::Cancelled);
}

#[test]
fn a_dropped_future_is_cancelled_with_its_duration() {
    let capture = Capture::new();
    block_on(&capture, async {
        let mut future = std::pin::pin!(slow());
        // The first poll starts the clock; the future is dropped 30 ms later, still waiting.
        assert!(futures::poll!(future.as_mut()).is_pending());
        std::thread::sleep(Duration::from_millis(30));
    });
    let records = capture.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Cancelled);
    // The duration runs on the tracker's TSC clock, the sleep on the OS clock: their
    // calibrations differ by a fraction of a percent, so allow a millisecond.
    assert!(
        records[0].duration >= Duration::from_millis(29),
        "{:?}",
        records[0].duration
    );
    assert!(records[0].duration < Duration::from_secs(60));
}

#[test]
fn a_future_never_polled_records_nothing() {
    let capture = Capture::new();
    capture.run(|| drop(slow()));
    assert!(capture.records().is_empty());
}

// ---------------------------------------------------------------- dimensions

#[derive(Serialize)]
struct Plan {
    tier: &'static str,
    seats: u32,
}

struct Request {
    org: Option<String>,
    user: String,
    session: Option<Uuid>,
    model: String,
}

#[track_usage(
    operation = "chat",
    tenant = req.org,
    user = req.user,
    session = req.session,
    fields(model = req.model, plan = Plan { tier: "pro", seats: 3 }, turns = 2 + 2)
)]
fn chat(req: &Request) -> usize {
    req.model.len()
}

#[test]
fn dimensions_convert_without_moving_arguments() {
    let session = Uuid::from_u128(99);
    let real_user = Uuid::from_u128(7);
    let capture = Capture::new();
    capture.run(|| {
        let req = Request {
            org: Some("acme".into()),
            user: "user_42".into(),
            session: Some(session),
            model: "gpt-4o".into(),
        };
        assert_eq!(chat(&req), 6);
        let req = Request {
            org: None,
            user: real_user.to_string(),
            session: None,
            model: "m".into(),
        };
        chat(&req);
    });
    let records = capture.records();
    let first = &records[0];
    assert_eq!(first.tenant_id.as_deref(), Some("acme"));
    assert_eq!(
        first.user_id,
        Some(Uuid::new_v5(
            &usage_runtime::tracker::DEFAULT_ID_NAMESPACE,
            b"user_42"
        )),
        "a non-UUID id maps to UUIDv5 in the namespace"
    );
    assert_eq!(first.session_id, Some(session));
    assert_eq!(first.attributes["model"], "gpt-4o");
    assert_eq!(
        first.attributes["plan"],
        serde_json::json!({"tier": "pro", "seats": 3})
    );
    assert_eq!(first.attributes["turns"], 4);

    let second = &records[1];
    assert_eq!(second.tenant_id, None);
    assert_eq!(
        second.user_id,
        Some(real_user),
        "a UUID string is that UUID"
    );
    assert_eq!(second.session_id, None);
}

#[test]
fn the_id_namespace_is_configurable() {
    let namespace = Uuid::from_u128(0x55);
    let capture = Capture::with_namespace(namespace);
    capture.run(|| {
        chat(&Request {
            org: None,
            user: "user_42".into(),
            session: None,
            model: String::new(),
        })
    });
    assert_eq!(
        capture.records()[0].user_id,
        Some(Uuid::new_v5(&namespace, b"user_42"))
    );
}

#[test]
fn records_carry_time_and_unique_v7_ids() {
    let before = chrono::Utc::now();
    let records = records_of(|| {
        for _ in 0..100 {
            http(200);
        }
    });
    let after = chrono::Utc::now();
    let mut ids: Vec<_> = records.iter().map(|r| r.id).collect();
    assert!(ids.iter().all(|id| id.get_version_num() == 7));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    for record in &records {
        let slack = chrono::Duration::milliseconds(5);
        assert!(record.started_at >= before - slack && record.started_at <= after + slack);
        assert_eq!(
            record.started_at.timestamp_subsec_nanos() % 1000,
            0,
            "microseconds"
        );
    }
}

// ---------------------------------------------------------------- catalog

#[test]
fn every_annotated_fn_is_in_the_catalog() {
    let ops = usage_runtime::catalog::operations();
    let chat = ops
        .iter()
        .find(|op| op.name() == "chat")
        .expect("chat registered");
    assert_eq!(chat.function(), "outcomes::chat");
    assert!(chat.file().ends_with("outcomes.rs"), "{}", chat.file());
    let source = include_str!("outcomes.rs");
    let line = source.lines().nth(chat.line() as usize - 1).unwrap();
    assert!(
        line.contains("fn chat("),
        "line {} is {line:?}",
        chat.line()
    );
    // Registered even though never called.
    assert!(ops.iter().any(|op| op.name() == "never_called"));
    assert!(!ops
        .iter()
        .find(|op| op.name() == "quiet")
        .unwrap()
        .captures_error_message());
}

#[track_usage(operation = "never_called")]
#[allow(dead_code)]
fn never_called() {}
