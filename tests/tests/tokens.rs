//! Token counts, models and exact cost: from the result, the attribute, the body and streams.
#![allow(missing_debug_implementations)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tests::runtime;
use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, Outcome, Pricing, UsageRecord, UsageReport};

const PRICES: &str = r#"
[models."gpt-4o"]
input = "2.50"
output = "10.00"
cached_input = "1.25"

[models."claude-3-5-haiku-*"]
input = "0.80"
output = "4.00"
"#;

fn capture() -> Capture {
    Capture::new().with_pricing(Pricing::from_toml(PRICES).unwrap())
}

fn run_async<F: Future>(capture: &Capture, future: F) -> F::Output {
    runtime().block_on(capture.run_async(future))
}

fn by_operation<'a>(records: &'a [UsageRecord], operation: &str) -> &'a UsageRecord {
    records
        .iter()
        .find(|r| r.operation == operation)
        .unwrap_or_else(|| panic!("no {operation} record in {records:#?}"))
}

// ---------------------------------------------------------------- from the result

/// The shape of an OpenAI chat completion.
#[derive(Debug, UsageReport)]
struct ChatCompletion {
    #[usage(model)]
    model: String,
    choices: Vec<String>,
    #[usage(flatten)]
    usage: Option<OpenAiUsage>,
}

#[derive(Debug, UsageReport)]
struct OpenAiUsage {
    #[usage(input_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: u32,
    #[usage(flatten)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, UsageReport)]
struct PromptDetails {
    #[usage(cached_input_tokens)]
    cached_tokens: u32,
}

/// The shape of an Anthropic message: cache reads are reported apart from `input_tokens`.
#[derive(UsageReport)]
struct Message {
    #[usage(model)]
    model: &'static str,
    #[usage(flatten)]
    usage: AnthropicUsage,
}

#[derive(UsageReport)]
struct AnthropicUsage {
    #[usage(input_tokens)]
    input_tokens: u64,
    #[usage(input_tokens, cached_input_tokens)]
    cache_read_input_tokens: Option<u64>,
    #[usage(output_tokens)]
    output_tokens: u64,
}

#[derive(Debug)]
struct ApiError;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rate limited")
    }
}

#[track_usage(operation = "openai.chat")]
async fn openai_chat(prompt: &str, cached: Option<u32>) -> Result<ChatCompletion, ApiError> {
    tokio::task::yield_now().await;
    Ok(ChatCompletion {
        model: "gpt-4o".into(),
        choices: vec![format!("re: {prompt}")],
        usage: Some(OpenAiUsage {
            prompt_tokens: 1000,
            completion_tokens: 1000,
            prompt_tokens_details: cached.map(|cached_tokens| PromptDetails { cached_tokens }),
        }),
    })
}

#[track_usage(operation = "openai.fail")]
async fn openai_fail() -> Result<ChatCompletion, ApiError> {
    Err(ApiError)
}

#[track_usage(operation = "anthropic.messages")]
fn anthropic_message() -> Message {
    Message {
        model: "claude-3-5-haiku-20241022",
        usage: AnthropicUsage {
            input_tokens: 100,
            cache_read_input_tokens: Some(900),
            output_tokens: 50,
        },
    }
}

#[test]
fn an_openai_like_response_reports_tokens_model_and_exact_cost() {
    let capture = capture();
    let completion = run_async(&capture, openai_chat("hi", None)).unwrap();
    assert_eq!(completion.choices.len(), 1);
    let record = &capture.records()[0];
    assert_eq!(record.model.as_deref(), Some("gpt-4o"));
    assert_eq!(
        (record.input_tokens, record.output_tokens),
        (Some(1000), Some(1000))
    );
    assert_eq!(record.cached_input_tokens, None);
    // 1,000 × 2.50 + 1,000 × 10.00 USD per million tokens = 0.0125 USD.
    assert_eq!(record.cost_nano_usd, Some(12_500_000));
}

#[test]
fn cached_input_tokens_are_billed_at_their_price() {
    let capture = capture();
    run_async(&capture, openai_chat("hi", Some(400))).unwrap();
    let record = &capture.records()[0];
    assert_eq!(record.cached_input_tokens, Some(400));
    // 600 × 2.50 + 400 × 1.25 + 1000 × 10.00 = 1500 + 500 + 10000 µUSD.
    assert_eq!(record.cost_nano_usd, Some(12_000_000));
}

#[test]
fn an_anthropic_like_response_counts_cache_reads_as_input() {
    let capture = capture();
    capture.run(anthropic_message);
    let record = &capture.records()[0];
    assert_eq!(record.model.as_deref(), Some("claude-3-5-haiku-20241022"));
    assert_eq!(record.input_tokens, Some(1000));
    assert_eq!(record.cached_input_tokens, Some(900));
    assert_eq!(record.output_tokens, Some(50));
    // Prefix price, no cached price: 1000 × 0.80 + 50 × 4.00 = 800 + 200 µUSD.
    assert_eq!(record.cost_nano_usd, Some(1_000_000));
}

#[test]
fn an_err_reports_no_tokens_and_other_types_record_none() {
    let capture = capture();
    run_async(&capture, openai_fail()).unwrap_err();
    capture.run(plain);
    let records = capture.records();
    let failed = by_operation(&records, "openai.fail");
    assert_eq!(failed.outcome, Outcome::Error);
    assert_eq!(
        (
            failed.input_tokens,
            failed.model.as_deref(),
            failed.cost_nano_usd
        ),
        (None, None, None)
    );
    let plain = by_operation(&records, "plain");
    assert!(!plain.has_tokens());
}

#[track_usage(operation = "plain")]
fn plain() -> String {
    "no usage here".into()
}

/// Each variant reports its own fields.
#[derive(UsageReport)]
enum ToolResult {
    Answer {
        #[usage(input_tokens)]
        input: u32,
        #[usage(output_tokens)]
        output: u32,
    },
    Cached(#[usage(cached_input_tokens, input_tokens)] u32),
    Refused,
}

#[track_usage(operation = "tool")]
fn tool(kind: u8) -> ToolResult {
    match kind {
        0 => ToolResult::Answer {
            input: 3,
            output: 4,
        },
        1 => ToolResult::Cached(9),
        _ => ToolResult::Refused,
    }
}

#[test]
fn enums_report_per_variant() {
    let capture = capture();
    capture.run(|| {
        tool(0);
        tool(1);
        tool(2);
    });
    let records = capture.records();
    assert_eq!(
        (records[0].input_tokens, records[0].output_tokens),
        (Some(3), Some(4))
    );
    assert_eq!(
        (records[1].input_tokens, records[1].cached_input_tokens),
        (Some(9), Some(9))
    );
    assert!(!records[2].has_tokens());
}

// ---------------------------------------------------------------- from the attribute

/// A foreign response type, which cannot implement `UsageReport` here.
mod vendor {
    pub(crate) struct Reply {
        pub(crate) tokens_in: i64,
        pub(crate) tokens_out: i64,
        pub(crate) text: String,
    }
}

#[track_usage(
    operation = "vendor.complete",
    tokens = |reply: &vendor::Reply| (reply.tokens_in, reply.tokens_out),
    model = request.model.clone(),
)]
fn vendor_complete(request: &VendorRequest) -> Result<vendor::Reply, ApiError> {
    if request.prompt.is_empty() {
        return Err(ApiError);
    }
    Ok(vendor::Reply {
        tokens_in: 1000,
        tokens_out: 1000,
        text: request.prompt.to_uppercase(),
    })
}

fn counts(reply: &vendor::Reply) -> (i64, i64) {
    (reply.tokens_in, reply.tokens_out)
}

#[track_usage(operation = "vendor.plain", tokens = counts, model = "gpt-4o")]
fn vendor_plain() -> vendor::Reply {
    vendor::Reply {
        tokens_in: 10,
        tokens_out: 20,
        text: String::new(),
    }
}

struct VendorRequest {
    model: String,
    prompt: String,
}

#[test]
fn a_foreign_type_through_tokens_and_model_arguments() {
    let capture = capture();
    capture.run(|| {
        let request = VendorRequest {
            model: "gpt-4o".into(),
            prompt: "hi".into(),
        };
        assert_eq!(
            vendor_complete(&request).ok().map(|r| r.text),
            Some("HI".into())
        );
        let empty = VendorRequest {
            model: "gpt-4o".into(),
            prompt: String::new(),
        };
        vendor_complete(&empty).ok();
        vendor_plain();
    });
    let records = capture.records();
    assert_eq!(records[0].model.as_deref(), Some("gpt-4o"));
    assert_eq!(
        (records[0].input_tokens, records[0].output_tokens),
        (Some(1000), Some(1000))
    );
    assert_eq!(records[0].cost_nano_usd, Some(12_500_000));
    // An `Err` reads no tokens; the model from the attribute stays.
    assert_eq!(records[1].outcome, Outcome::Error);
    assert_eq!(
        (records[1].input_tokens, records[1].model.as_deref()),
        (None, Some("gpt-4o"))
    );
    assert_eq!(
        (records[2].input_tokens, records[2].output_tokens),
        (Some(10), Some(20))
    );
}

// ---------------------------------------------------------------- from inside the body

#[track_usage(operation = "body.sync", model = "fallback-model")]
fn body_sync() -> usize {
    usage_runtime::record_tokens(100, 10);
    usage_runtime::record_tokens(50, 5);
    usage_runtime::set_model("claude-3-5-haiku-20241022");
    3
}

#[track_usage(operation = "body.async")]
async fn body_async(steps: u64) -> u64 {
    for step in 0..steps {
        usage_runtime::record_tokens(10, 1);
        // Yield to the scheduler so the task may resume on the other worker thread.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = step;
    }
    usage_runtime::tokens::record_cached_input_tokens(5);
    usage_runtime::set_model("gpt-4o");
    steps
}

#[track_usage(operation = "body.outer")]
async fn outer_call() -> u64 {
    usage_runtime::record_tokens(1, 1);
    let inner = inner_call().await;
    usage_runtime::record_tokens(2, 2);
    inner_sync();
    inner
}

#[track_usage(operation = "body.inner")]
async fn inner_call() -> u64 {
    tokio::task::yield_now().await;
    usage_runtime::record_tokens(100, 100);
    7
}

#[track_usage(operation = "body.inner_sync")]
fn inner_sync() {
    usage_runtime::record_tokens(1000, 0);
}

#[test]
fn in_body_recording_in_sync_code() {
    let capture = capture();
    capture.run(body_sync);
    let record = &capture.records()[0];
    assert_eq!(
        (record.input_tokens, record.output_tokens),
        (Some(150), Some(15))
    );
    assert_eq!(
        record.model.as_deref(),
        Some("claude-3-5-haiku-20241022"),
        "set_model wins"
    );
    assert_eq!(record.cost_nano_usd, Some(180_000)); // 150 × 0.80 + 15 × 4.00 µUSD/1000
}

#[test]
fn in_body_recording_across_awaits_on_a_multi_thread_runtime() {
    let capture = capture();
    let runtime = runtime();
    let steps = runtime.block_on(capture.run_async(body_async(40)));
    assert_eq!(steps, 40);
    let record = &capture.records()[0];
    assert_eq!(
        (record.input_tokens, record.output_tokens),
        (Some(400), Some(40))
    );
    assert_eq!(record.cached_input_tokens, Some(5));
    assert_eq!(record.model.as_deref(), Some("gpt-4o"));
}

/// Pending once, then ready: lets a test move a future to another thread between two polls.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[track_usage(operation = "body.two_threads")]
async fn two_threads() -> std::thread::ThreadId {
    usage_runtime::record_tokens(10, 1);
    YieldOnce(false).await;
    usage_runtime::record_tokens(10, 1);
    std::thread::current().id()
}

#[test]
fn in_body_recording_follows_a_future_to_another_thread() {
    let capture = capture();
    let mut future = Box::pin(capture.run_async(two_threads()));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(future.as_mut().poll(&mut context).is_pending());
    let first_thread = std::thread::current().id();
    let second_thread = std::thread::spawn(move || {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(thread) => thread,
            std::task::Poll::Pending => panic!("still pending"),
        }
    })
    .join()
    .unwrap();
    assert_ne!(first_thread, second_thread, "the second poll ran elsewhere");
    let record = &capture.records()[0];
    assert_eq!(
        (record.input_tokens, record.output_tokens),
        (Some(20), Some(2))
    );
}

#[test]
fn concurrent_tasks_on_both_threads_keep_their_own_tokens() {
    let capture = capture();
    let runtime = runtime();
    runtime.block_on(async {
        let tasks: Vec<_> = (1..=16u64)
            .map(|n| tokio::spawn(capture.run_async(body_async(n))))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let mut inputs: Vec<u64> = capture
        .records()
        .iter()
        .map(|r| r.input_tokens.unwrap())
        .collect();
    inputs.sort();
    assert_eq!(inputs, (1..=16).map(|n| n * 10).collect::<Vec<_>>());
}

#[test]
fn health_counts_unpriced_records() {
    let sink = usage_runtime::sink::MemorySink::new();
    let guard = usage_runtime::Tracker::builder()
        .sink(sink.clone())
        .pricing(Pricing::from_toml(PRICES).unwrap())
        .install()
        .unwrap();
    unknown_model();
    anthropic_message();
    plain();
    huge();
    guard.flush_blocking().unwrap();
    let health = guard.health();
    assert_eq!(
        health.unpriced, 1,
        "only the record with tokens and no price"
    );
    assert_eq!(health.token_counts_saturated, 1);
    let records = sink.records();
    assert_eq!(
        by_operation(&records, "anthropic.messages").cost_nano_usd,
        Some(1_000_000)
    );
}

#[test]
fn nested_calls_keep_their_own_tokens() {
    let capture = capture();
    assert_eq!(run_async(&capture, outer_call()), 7);
    let records = capture.records();
    let inner = by_operation(&records, "body.inner");
    let inner_sync = by_operation(&records, "body.inner_sync");
    let outer = by_operation(&records, "body.outer");
    assert_eq!(
        (inner.input_tokens, inner.output_tokens),
        (Some(100), Some(100))
    );
    assert_eq!(inner_sync.input_tokens, Some(1000));
    assert_eq!(
        (outer.input_tokens, outer.output_tokens),
        (Some(3), Some(3))
    );
}

#[test]
fn recording_outside_a_tracked_call_does_nothing() {
    usage_runtime::record_tokens(5, 5);
    usage_runtime::set_model("nobody");
    let capture = capture();
    capture.run(plain);
    assert!(!capture.records()[0].has_tokens());
}

// ---------------------------------------------------------------- streams

/// One chunk of a streamed chat completion; the last one carries the usage.
#[derive(Debug, UsageReport)]
struct Chunk {
    text: String,
    #[usage(flatten)]
    usage: Option<ChunkUsage>,
}

#[derive(Debug, UsageReport)]
struct ChunkUsage {
    #[usage(input_tokens)]
    input: u32,
    #[usage(output_tokens)]
    output: u32,
    #[usage(model)]
    model: &'static str,
}

#[track_usage(operation = "chat.stream", stream, tenant = tenant)]
fn chat_stream(tenant: &str, words: usize) -> impl Stream<Item = Result<Chunk, ApiError>> + '_ {
    futures::stream::iter(0..words).then(move |n| async move {
        tokio::task::yield_now().await;
        let usage = (n + 1 == words).then_some(ChunkUsage {
            input: 1000,
            output: 1000,
            model: "gpt-4o",
        });
        Ok(Chunk {
            text: format!("{tenant}-{n}"),
            usage,
        })
    })
}

#[track_usage(operation = "chat.stream_boxed", stream)]
fn failing_stream() -> Pin<Box<dyn Stream<Item = Result<Chunk, ApiError>> + Send>> {
    Box::pin(futures::stream::iter(vec![
        Ok(Chunk {
            text: "partial".into(),
            usage: Some(ChunkUsage {
                input: 10,
                output: 1,
                model: "gpt-4o",
            }),
        }),
        Err(ApiError),
        Ok(Chunk {
            text: "more".into(),
            usage: None,
        }),
    ]))
}

#[track_usage(operation = "chat.stream_chunks", stream)]
fn per_chunk_usage(n: u32) -> futures::stream::BoxStream<'static, Chunk> {
    futures::stream::iter((0..n).map(|i| Chunk {
        text: i.to_string(),
        usage: Some(ChunkUsage {
            input: 0,
            output: 1,
            model: "gpt-4o",
        }),
    }))
    .boxed()
}

#[test]
fn a_stream_consumed_fully_sums_its_tokens() {
    let capture = capture();
    let texts: Vec<String> = run_async(
        &capture,
        chat_stream("acme", 5)
            .map(|chunk| chunk.unwrap().text)
            .collect(),
    );
    assert_eq!(texts.len(), 5);
    let record = &capture.records()[0];
    assert_eq!(
        (record.operation.as_ref(), record.outcome),
        ("chat.stream", Outcome::Success)
    );
    assert_eq!(record.tenant_id.as_deref(), Some("acme"));
    assert_eq!(
        (record.input_tokens, record.output_tokens),
        (Some(1000), Some(1000))
    );
    assert_eq!(record.cost_nano_usd, Some(12_500_000));

    let capture = self::capture();
    let count = run_async(&capture, per_chunk_usage(7).count());
    assert_eq!(count, 7);
    let record = &capture.records()[0];
    assert_eq!(record.output_tokens, Some(7), "summed over chunks");
}

#[test]
fn a_stream_dropped_halfway_is_cancelled() {
    let capture = capture();
    let taken: Vec<_> = run_async(&capture, chat_stream("acme", 10).take(3).collect());
    assert_eq!(taken.len(), 3);
    let record = &capture.records()[0];
    assert_eq!(record.outcome, Outcome::Cancelled);
    assert!(!record.has_tokens(), "the usage chunk never arrived");
}

#[test]
fn a_stream_yielding_an_error_is_an_error() {
    let capture = capture();
    let items: Vec<_> = run_async(&capture, failing_stream().collect());
    assert_eq!(items.len(), 3);
    let record = &capture.records()[0];
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.error_message.as_deref(), Some("rate limited"));
    assert_eq!(record.error_type.as_deref(), Some("tokens::ApiError"));
    assert_eq!(record.input_tokens, Some(10));
}

#[test]
fn a_stream_never_polled_records_nothing() {
    let capture = capture();
    capture.run(|| drop(failing_stream()));
    assert!(capture.records().is_empty());
}

// ---------------------------------------------------------------- unpriced and saturated

#[derive(UsageReport)]
struct Huge {
    #[usage(input_tokens)]
    a: u64,
    #[usage(input_tokens)]
    b: u64,
    #[usage(model)]
    model: &'static str,
}

#[track_usage(operation = "huge")]
fn huge() -> Huge {
    Huge {
        a: u64::MAX,
        b: 10,
        model: "gpt-4o",
    }
}

#[derive(UsageReport)]
struct Wide {
    #[usage(output_tokens)]
    out: u128,
}

#[track_usage(operation = "wide")]
fn wide() -> Wide {
    Wide {
        out: u128::from(u64::MAX) + 1,
    }
}

#[track_usage(operation = "unknown_model")]
fn unknown_model() -> Message {
    Message {
        model: "some-new-model",
        usage: AnthropicUsage {
            input_tokens: 1,
            cache_read_input_tokens: None,
            output_tokens: 1,
        },
    }
}

#[test]
fn overflowing_counts_saturate_and_are_flagged() {
    let capture = capture();
    capture.run(huge);
    let record = &capture.records()[0];
    assert_eq!(record.input_tokens, Some(u64::MAX));
    assert_eq!(
        record.attributes[usage_runtime::tokens::SATURATED_ATTRIBUTE],
        true
    );
    assert_eq!(record.cost_nano_usd, Some(i64::MAX));
}

#[test]
fn the_model_is_not_copied_per_call() {
    let capture = capture();
    capture.run(huge);
    capture.run(huge);
    let records = capture.records();
    for record in &records {
        assert!(
            matches!(record.model, Some(std::borrow::Cow::Borrowed("gpt-4o"))),
            "{:?}",
            record.model
        );
    }
    let text = |record: &UsageRecord| record.model.as_deref().unwrap().as_ptr();
    assert!(std::ptr::eq(text(&records[0]), text(&records[1])));
}

#[test]
fn a_wider_count_that_does_not_fit_is_held_and_flagged() {
    let capture = capture();
    capture.run(wide);
    let record = &capture.records()[0];
    assert_eq!(record.output_tokens, Some(u64::MAX));
    assert_eq!(
        record.attributes[usage_runtime::tokens::SATURATED_ATTRIBUTE],
        true
    );
}

#[test]
fn an_unknown_model_stays_unpriced_never_zero() {
    let capture = capture();
    capture.run(unknown_model);
    let record = &capture.records()[0];
    assert_eq!(record.model.as_deref(), Some("some-new-model"));
    assert_eq!(record.input_tokens, Some(1));
    assert_eq!(record.cost_nano_usd, None);
}
