//! The token counts of the providers' raw JSON, for services on plain `reqwest` or any client
//! that hands back the body: OpenAI (chat completions, the Responses API, embeddings),
//! Anthropic Messages and Gemini (`usageMetadata`). Each maps the provider's fields to the
//! inclusive counts of [`TokenUsage`] (input includes cache reads, cache writes and audio;
//! output includes reasoning and audio), so the provider's own convention never leaks into
//! costs. Each takes the whole response body (the model comes from it) or the usage object
//! alone.
//!
//! ```
//! # use usage_runtime::track_usage;
//! #[track_usage(operation = "chat")]
//! async fn chat(body: serde_json::Value) -> serde_json::Value {
//!     // `body` is what the provider answered.
//!     usage_runtime::record_usage(usage_runtime::providers::anthropic(&body));
//!     body
//! }
//! ```
//!
//! With the `openai` feature, async-openai's response types implement
//! [`UsageReport`](crate::UsageReport) themselves, so a tracked fn returning one needs nothing.

use std::borrow::Cow;

use serde_json::Value;

use crate::call::tokens::{TokenKind, TokenUsage};

#[cfg(feature = "openai")]
mod openai;

/// OpenAI's names of input, output and their details' objects: in chat completions, then in the
/// Responses API.
#[rustfmt::skip]
const USAGE_NAMES: [[&str; 4]; 2] = [
    ["prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"],
    ["input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"],
];

/// An OpenAI response's usage: a chat completion or its last stream chunk (`prompt_tokens`,
/// `completion_tokens` and their `_details`), a Responses API response (`input_tokens`,
/// `output_tokens` and their `_details`) or the stream event that ends one
/// (`response.completed`, `.incomplete`, `.failed`: its `response`), or an embedding
/// (`prompt_tokens` alone).
pub fn openai(body: &Value) -> TokenUsage<'_> {
    let body = match body.get("response") {
        Some(response) if body.get("type").and_then(Value::as_str).is_some() => response,
        _ => body,
    };
    let (usage, model) = parts(body, "usage", "model");
    let mut out = TokenUsage::new();
    // Chat completions' names, else the Responses API's.
    let chat = usage.get("prompt_tokens").is_some();
    let [input, output, input_details, output_details] = USAGE_NAMES[usize::from(!chat)];
    set(&mut out, TokenKind::Input, count(usage, &[input]));
    set(&mut out, TokenKind::Output, count(usage, &[output]));
    for (details, key, kind) in [
        (input_details, "cached_tokens", TokenKind::CachedInput),
        (input_details, "audio_tokens", TokenKind::AudioInput),
        (output_details, "reasoning_tokens", TokenKind::Reasoning),
        (output_details, "audio_tokens", TokenKind::AudioOutput),
    ] {
        set(&mut out, kind, count(&usage[details], &[key]));
    }
    with_model(out, model)
}

/// An Anthropic Messages response's usage (or a `message_start` event's, or a
/// `message_delta` event's). Anthropic counts cache reads and writes apart from
/// `input_tokens`; they are added to input here. The 1-hour cache writes come from
/// `cache_creation.ephemeral_1h_input_tokens`. A stream's events each hold totals so far, not
/// increments: use [`anthropic_stream`] on its first and last events rather than adding events.
pub fn anthropic(body: &Value) -> TokenUsage<'_> {
    let (usage, model) = if body.get("type").and_then(Value::as_str) == Some("message_start") {
        parts(&body["message"], "usage", "model")
    } else {
        parts(body, "usage", "model")
    };
    anthropic_usage(usage, model)
}

/// An Anthropic stream's usage from its `message_start` event and its last `message_delta`:
/// each count the delta gives (its totals so far) replaces the start's; the others (the input
/// side, on an API whose deltas carry only `output_tokens`) are the start's.
pub fn anthropic_stream(start: &Value, last_delta: &Value) -> TokenUsage<'static> {
    let mut usage = start["message"]["usage"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(delta) = last_delta["usage"].as_object() {
        for (key, value) in delta {
            if !value.is_null() {
                usage.insert(key.clone(), value.clone());
            }
        }
    }
    let model = start["message"]["model"].as_str();
    anthropic_usage(&Value::Object(usage), model).into_owned()
}

fn anthropic_usage<'a>(usage: &Value, model: Option<&'a str>) -> TokenUsage<'a> {
    let mut out = TokenUsage::new();
    let read = count(usage, &["cache_read_input_tokens"]);
    let ttl = &usage["cache_creation"];
    let (five_minutes, one_hour) = (
        count(ttl, &["ephemeral_5m_input_tokens"]),
        count(ttl, &["ephemeral_1h_input_tokens"]),
    );
    let written =
        count(usage, &["cache_creation_input_tokens"]).or(match (five_minutes, one_hour) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        });
    let plain = count(usage, &["input_tokens"]);
    if plain.is_some() || read.is_some() || written.is_some() {
        let total = [plain, read, written]
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(n.unwrap_or(0)));
        set(&mut out, TokenKind::Input, Some(total));
    }
    set(
        &mut out,
        TokenKind::Output,
        count(usage, &["output_tokens"]),
    );
    set(&mut out, TokenKind::CachedInput, read);
    set(&mut out, TokenKind::CacheCreation, written);
    set(&mut out, TokenKind::CacheCreation1h, one_hour);
    with_model(out, model)
}

/// A Gemini `generateContent` response's `usageMetadata` (or the object alone). Gemini counts
/// thinking tokens (`thoughtsTokenCount`) apart from `candidatesTokenCount`; they are added to
/// output here, and are the reasoning count. Tool-use prompt tokens (`toolUsePromptTokenCount`:
/// grounding, code execution) are billed as input and added to it. Cached content is part of
/// `promptTokenCount` already. Audio comes from the `AUDIO` entries of `promptTokensDetails`,
/// `toolUsePromptTokensDetails` and `candidatesTokensDetails`. The model is `modelVersion`.
pub fn gemini(body: &Value) -> TokenUsage<'_> {
    let (usage, model) = parts(body, "usageMetadata", "modelVersion");
    let mut out = TokenUsage::new();
    set(
        &mut out,
        TokenKind::Input,
        count(usage, &["toolUsePromptTokenCount"]),
    );
    let tool_audio = modality(&usage["toolUsePromptTokensDetails"], "AUDIO");
    set(&mut out, TokenKind::AudioInput, tool_audio);
    let candidates = count(usage, &["candidatesTokenCount"]);
    let thoughts = count(usage, &["thoughtsTokenCount"]);
    set(
        &mut out,
        TokenKind::Input,
        count(usage, &["promptTokenCount"]),
    );
    if candidates.is_some() || thoughts.is_some() {
        let output = candidates
            .unwrap_or(0)
            .saturating_add(thoughts.unwrap_or(0));
        set(&mut out, TokenKind::Output, Some(output));
    }
    set(&mut out, TokenKind::Reasoning, thoughts);
    set(
        &mut out,
        TokenKind::CachedInput,
        count(usage, &["cachedContentTokenCount"]),
    );
    set(
        &mut out,
        TokenKind::AudioInput,
        modality(&usage["promptTokensDetails"], "AUDIO"),
    );
    set(
        &mut out,
        TokenKind::AudioOutput,
        modality(&usage["candidatesTokensDetails"], "AUDIO"),
    );
    with_model(out, model)
}

/// The usage object and the model of `body`: its `usage` key and `model` key when it has the
/// first, else `body` itself is the usage object.
fn parts<'a>(body: &'a Value, usage: &str, model: &str) -> (&'a Value, Option<&'a str>) {
    match body.get(usage) {
        Some(inner) => (inner, body.get(model).and_then(Value::as_str)),
        None => (body, None),
    }
}

/// The first of `keys` that holds a non-negative integer.
fn count(object: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|key| object.get(key)?.as_u64())
}

/// The tokens of `modality` in a Gemini `[{modality, tokenCount}]` list.
fn modality(details: &Value, modality: &str) -> Option<u64> {
    details
        .as_array()?
        .iter()
        .filter(|entry| entry["modality"] == modality)
        .filter_map(|entry| entry["tokenCount"].as_u64())
        .reduce(u64::saturating_add)
}

fn set(usage: &mut TokenUsage<'_>, kind: TokenKind, count: Option<u64>) {
    if let Some(count) = count {
        usage.add(kind, count);
    }
}

fn with_model<'a>(usage: TokenUsage<'a>, model: Option<&'a str>) -> TokenUsage<'a> {
    match model.filter(|name| !name.is_empty()) {
        Some(model) => usage.with_model(Cow::Borrowed(model)),
        None => usage,
    }
}

#[cfg(test)]
mod tests;
