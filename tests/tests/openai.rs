//! The real `async-openai` client against a local server that replays response bodies shaped as
//! OpenAI's API reference shows them (`tests/data/providers/`): a tracked fn returning the
//! client's response types gets the right tokens, model and cost with nothing in its body.

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    CreateChatCompletionRequest, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, CreateEmbeddingResponse};
use async_openai::types::responses::{CreateResponse, Response};
use async_openai::Client;
use axum::response::IntoResponse;
use futures::{Stream, StreamExt, TryStreamExt};
use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, Outcome, Pricing};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/providers/");

fn body(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{name}")).unwrap()
}

/// The provider: each endpoint answers its recorded body; a streamed chat (which must ask for
/// the usage) its recorded chunks as server-sent events.
async fn provider() -> Client<OpenAIConfig> {
    use axum::routing::post;
    use axum::Json;
    let json = |name: &'static str| {
        move || async move { ([("content-type", "application/json")], body(name)) }
    };
    let chat = |Json(request): Json<serde_json::Value>| async move {
        if request["stream"] == true {
            assert_eq!(request["stream_options"]["include_usage"], true);
            (
                [("content-type", "text/event-stream")],
                body("openai-chat-stream.txt"),
            )
                .into_response()
        } else {
            (
                [("content-type", "application/json")],
                body("openai-chat.json"),
            )
                .into_response()
        }
    };
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(json("openai-response.json")))
        .route("/v1/embeddings", post(json("openai-embedding.json")));
    let address = tests::serve(router).await;
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{address}/v1"))
            .with_api_key("sk-test-not-a-secret"),
    )
}

fn request<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[track_usage(operation = "chat")]
async fn chat(client: &Client<OpenAIConfig>) -> Result<CreateChatCompletionResponse, OpenAIError> {
    let request: CreateChatCompletionRequest = request(serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "What is in this image?"}]
    }));
    client.chat().create(request).await
}

#[track_usage(operation = "chat.stream", stream)]
fn chat_stream(
    client: Client<OpenAIConfig>,
) -> impl Stream<Item = Result<CreateChatCompletionStreamResponse, OpenAIError>> {
    let request: CreateChatCompletionRequest = request(serde_json::json!({
        "model": "o3",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    }));
    futures::stream::once(async move { client.chat().create_stream(request).await }).try_flatten()
}

#[track_usage(operation = "respond")]
async fn respond(client: &Client<OpenAIConfig>) -> Result<Response, OpenAIError> {
    let story = "Tell me a three sentence bedtime story about a unicorn.";
    let request: CreateResponse = request(serde_json::json!({"model": "gpt-4.1", "input": story}));
    client.responses().create(request).await
}

#[track_usage(operation = "embed")]
async fn embed(client: &Client<OpenAIConfig>) -> Result<CreateEmbeddingResponse, OpenAIError> {
    let text = "The food was delicious and the waiter...";
    let model = "text-embedding-3-small";
    let request: CreateEmbeddingRequest =
        request(serde_json::json!({"model": model, "input": text}));
    client.embeddings().create(request).await
}

#[tokio::test]
async fn async_openai_responses_carry_tokens_model_and_cost() {
    let client = provider().await;
    // OpenAI's published prices, per million tokens.
    let pricing = Pricing::from_toml(
        r#"
[models]
"gpt-4o*" = { input = "2.50", output = "10.00", cached_input = "1.25" }
"o3*" = { input = "2", output = "8", cached_input = "0.50" }
"gpt-4.1*" = { input = "2", output = "8" }
"text-embedding-3-small" = { input = "0.02", output = "0" }
"#,
    )
    .unwrap();
    let capture = Capture::new().with_pricing(pricing);
    capture.run_async(chat(&client)).await.unwrap();
    let chunks: Vec<_> = capture
        .run_async(chat_stream(client.clone()).collect::<Vec<_>>())
        .await;
    assert_eq!(chunks.len(), 4, "every chunk passes through");
    capture.run_async(respond(&client)).await.unwrap();
    capture.run_async(embed(&client)).await.unwrap();

    let records = capture.records();
    // Operation, model, then input, cached, reasoning and output tokens, and the cost.
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            assert_eq!(r.outcome, Outcome::Success);
            let count = |n: Option<u64>| n.unwrap_or(0);
            (
                (r.operation.as_ref(), r.model.as_deref().unwrap_or("")),
                [
                    r.input_tokens,
                    r.cached_input_tokens,
                    r.reasoning_tokens,
                    r.output_tokens,
                ]
                .map(count),
                r.cost_nano_usd,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            // 93 × 2.50 + 1,024 cached × 1.25 + 46 × 10 = 1,972.5 µUSD.
            (
                ("chat", "gpt-4o-2024-08-06"),
                [1117, 1024, 0, 46],
                Some(1_972_500)
            ),
            // 9 × 2 + 1,200 × 8 (1,152 of them reasoning, billed as output) = 9,618 µUSD.
            (
                ("chat.stream", "o3-2025-04-16"),
                [9, 0, 1152, 1200],
                Some(9_618_000)
            ),
            // 36 × 2 + 87 × 8 = 768 µUSD.
            (
                ("respond", "gpt-4.1-2025-04-14"),
                [36, 0, 0, 87],
                Some(768_000)
            ),
            // 8 × 0.02 = 0.16 µUSD; an embedding has no output.
            (("embed", "text-embedding-3-small"), [8, 0, 0, 0], Some(160)),
        ]
    );
    assert_eq!(records[3].output_tokens, None);
    assert!(records.iter().all(|r| r.price_id.is_some()));
}

/// The raw JSON mappers agree with the client's types on the same bodies.
#[test]
fn the_json_mappers_read_what_the_client_types_read() {
    use usage_runtime::UsageReport;
    let chat: serde_json::Value = serde_json::from_str(&body("openai-chat.json")).unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(chat.clone()).unwrap();
    assert_eq!(usage_runtime::providers::openai(&chat), typed.usage());
    let response: serde_json::Value = serde_json::from_str(&body("openai-response.json")).unwrap();
    let typed: Response = serde_json::from_value(response.clone()).unwrap();
    assert_eq!(usage_runtime::providers::openai(&response), typed.usage());
}
