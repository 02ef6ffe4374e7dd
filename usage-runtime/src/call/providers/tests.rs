use super::*;

fn body(name: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/providers/");
    serde_json::from_str(&std::fs::read_to_string(format!("{dir}{name}")).unwrap()).unwrap()
}

/// The counts of `usage` in [`TokenKind::ALL`] order, and its model.
fn counts(usage: TokenUsage<'_>) -> ([Option<u64>; 8], Option<String>) {
    (usage.counts(), usage.model.map(Cow::into_owned))
}

#[test]
fn openai_chat_responses_and_embeddings() {
    let chat = body("openai-chat.json");
    assert_eq!(
        counts(openai(&chat)),
        (
            [
                Some(1117),
                Some(46),
                Some(1024),
                None,
                None,
                Some(0),
                Some(0),
                Some(0)
            ],
            Some("gpt-4o-2024-08-06".into())
        )
    );
    let response = body("openai-response.json");
    assert_eq!(
        counts(openai(&response)),
        (
            [Some(36), Some(87), Some(0), None, None, Some(0), None, None],
            Some("gpt-4.1-2025-04-14".into())
        )
    );
    let embedding = body("openai-embedding.json");
    assert_eq!(
        counts(openai(&embedding)),
        (
            [Some(8), None, None, None, None, None, None, None],
            Some("text-embedding-3-small".into())
        )
    );
    // The usage object alone: counts, no model.
    assert_eq!(openai(&chat["usage"]).input_tokens, Some(1117));
    assert_eq!(openai(&chat["usage"]).model, None);
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
    assert!(!openai(&chunk).has_counts());
}

#[test]
fn anthropic_cache_reads_and_writes_join_input() {
    let message = body("anthropic-message.json");
    // 2,095 plain + 4,102 read + 2,051 written = 8,248 input.
    assert_eq!(
        counts(anthropic(&message)),
        (
            [
                Some(8248),
                Some(503),
                Some(4102),
                Some(2051),
                Some(1051),
                None,
                None,
                None
            ],
            Some("claude-sonnet-4-5-20250929".into())
        )
    );
    // A message_start event carries the message; a message_delta its output so far.
    let start = serde_json::json!({"type": "message_start", "message": message});
    assert_eq!(anthropic(&start).input_tokens, Some(8248));
    let delta = serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 15}});
    assert_eq!(counts(anthropic(&delta)).0[..2], [None, Some(15)]);
    // A stream: the start's usage (its output_tokens already 1), deltas with totals so far.
    let start = serde_json::json!({"type": "message_start", "message": {
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}});
    let older = serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 40}});
    assert_eq!(
        counts(anthropic_stream(&start, &older)),
        (
            [Some(100), Some(40), Some(90), None, None, None, None, None],
            Some("claude-sonnet-4-5".into())
        ),
        "the input from the start, the output the last delta's total, never added"
    );
    let current = serde_json::json!({"type": "message_delta", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 90,
        "cache_creation_input_tokens": null, "output_tokens": 40}});
    assert_eq!(
        counts(anthropic_stream(&start, &current)).0,
        [Some(100), Some(40), Some(90), None, None, None, None, None],
        "a delta with running totals of every count counts each once"
    );
    // Only the TTL breakdown: the writes are its sum.
    let ttl = serde_json::json!({"input_tokens": 10, "output_tokens": 1,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}});
    assert_eq!(
        counts(anthropic(&ttl)).0[..5],
        [Some(17), Some(1), None, Some(7), Some(4)]
    );
}

#[test]
fn gemini_thoughts_join_output() {
    let response = body("gemini-generate.json");
    // 150 candidates + 1,128 thoughts = 1,278 output.
    assert_eq!(
        counts(gemini(&response)),
        (
            [
                Some(1210),
                Some(1278),
                Some(1000),
                None,
                None,
                Some(1128),
                Some(400),
                None
            ],
            Some("gemini-2.5-flash".into())
        )
    );
    let tools = serde_json::json!({"promptTokenCount": 5, "candidatesTokenCount": 2,
        "toolUsePromptTokenCount": 30,
        "toolUsePromptTokensDetails": [{"modality": "AUDIO", "tokenCount": 4}]});
    assert_eq!(
        counts(gemini(&tools)).0,
        [Some(35), Some(2), None, None, None, None, Some(4), None],
        "tool-use prompt tokens are input"
    );
    let text_only = serde_json::json!({"promptTokenCount": 5, "candidatesTokenCount": 2});
    assert_eq!(
        counts(gemini(&text_only)).0,
        [Some(5), Some(2), None, None, None, None, None, None]
    );
}
