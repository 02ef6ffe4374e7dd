use super::*;

fn body(name: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/providers/");
    serde_json::from_str(&std::fs::read_to_string(format!("{dir}{name}")).unwrap()).unwrap()
}

/// The counts of `usage` in [`TokenKind::ALL`] order (input, output, cache read, cache write,
/// of it 1-hour, reasoning, audio in, audio out; `-` for none), then its model.
fn seen(usage: TokenUsage<'_>) -> String {
    let mut out: Vec<String> = usage
        .counts()
        .iter()
        .map(|n| n.map_or("-".to_owned(), |n| n.to_string()))
        .collect();
    out.push(usage.model.map_or("-".into(), Cow::into_owned));
    out.join(" ")
}

fn check(usage: TokenUsage<'_>, expected: &str) {
    assert_eq!(seen(usage), expected);
}

#[test]
fn openai_chat_responses_and_embeddings() {
    let chat = body("openai-chat.json");
    check(openai(&chat), "1117 46 1024 - - 0 0 0 gpt-4o-2024-08-06");
    let response = body("openai-response.json");
    check(openai(&response), "36 87 0 - - 0 - - gpt-4.1-2025-04-14");
    let embedding = body("openai-embedding.json");
    check(openai(&embedding), "8 - - - - - - - text-embedding-3-small");
    // The usage object alone: counts, no model.
    check(openai(&chat["usage"]), "1117 46 1024 - - 0 0 0 -");
    // The Responses stream's last event holds the response.
    for kind in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        let event = serde_json::json!({"type": kind, "sequence_number": 9, "response": response});
        assert_eq!(openai(&event), openai(&response), "{kind}");
    }
    // A stream chunk without usage reports nothing but its model.
    let chunk = serde_json::json!({"model": "o3", "usage": null, "choices": []});
    check(openai(&chunk), "- - - - - - - - o3");
}

#[test]
fn anthropic_cache_reads_and_writes_join_input() {
    let message = body("anthropic-message.json");
    // 2,095 plain + 4,102 read + 2,051 written = 8,248 input.
    let expected = "8248 503 4102 2051 1051 - - - claude-sonnet-4-5-20250929";
    assert_eq!(seen(anthropic(&message)), expected);
    // A message_start event carries the message; a message_delta its output so far.
    let start = serde_json::json!({"type": "message_start", "message": message});
    assert_eq!(seen(anthropic(&start)), expected);
    let delta = serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 15}});
    check(anthropic(&delta), "- 15 - - - - - - -");
    // A stream: the start's usage (its output_tokens already 1), deltas with totals so far.
    let start = serde_json::json!({"type": "message_start", "message": {
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}});
    let older = serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 40}});
    // The input from the start, the output the last delta's total, never added.
    let streamed = "100 40 90 - - - - - claude-sonnet-4-5";
    assert_eq!(seen(anthropic_stream(&start, &older)), streamed);
    // A delta with running totals of every count counts each once.
    let current = serde_json::json!({"type": "message_delta", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 90,
        "cache_creation_input_tokens": null, "output_tokens": 40}});
    assert_eq!(seen(anthropic_stream(&start, &current)), streamed);
    // Only the TTL breakdown: the writes are its sum.
    let ttl = serde_json::json!({"input_tokens": 10, "output_tokens": 1,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}});
    check(anthropic(&ttl), "17 1 - 7 4 - - - -");
}

#[test]
fn gemini_thoughts_and_tool_use_join_their_totals() {
    let response = body("gemini-generate.json");
    // 150 candidates + 1,128 thoughts = 1,278 output.
    check(
        gemini(&response),
        "1210 1278 1000 - - 1128 400 - gemini-2.5-flash",
    );
    let tools = serde_json::json!({"promptTokenCount": 5, "candidatesTokenCount": 2,
        "toolUsePromptTokenCount": 30,
        "toolUsePromptTokensDetails": [{"modality": "AUDIO", "tokenCount": 4}]});
    assert_eq!(
        seen(gemini(&tools)),
        "35 2 - - - - 4 - -",
        "tool-use prompt tokens are input"
    );
    let text_only = serde_json::json!({"promptTokenCount": 5, "candidatesTokenCount": 2});
    check(gemini(&text_only), "5 2 - - - - - - -");
}
