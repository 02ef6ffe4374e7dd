//! `UsageReport` for async-openai's responses (feature `openai`), by the same rules as
//! [`openai`](super::openai) reads the raw JSON.

use std::borrow::Cow;

use async_openai::types::chat::{
    CompletionUsage, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
};
use async_openai::types::embeddings::CreateEmbeddingResponse;
use async_openai::types::responses::{Response, ResponseStreamEvent, ResponseUsage};

use crate::call::tokens::{TokenKind, TokenUsage, UsageReport};

fn chat<'a>(model: &'a str, usage: Option<&CompletionUsage>) -> TokenUsage<'a> {
    let mut out = TokenUsage::new().with_model(Cow::Borrowed(model));
    let Some(usage) = usage else {
        return out;
    };
    out = out
        .with(TokenKind::Input, u64::from(usage.prompt_tokens))
        .with(TokenKind::Output, u64::from(usage.completion_tokens));
    if let Some(details) = &usage.prompt_tokens_details {
        add(&mut out, TokenKind::CachedInput, details.cached_tokens);
        add(&mut out, TokenKind::AudioInput, details.audio_tokens);
    }
    if let Some(details) = &usage.completion_tokens_details {
        add(&mut out, TokenKind::Reasoning, details.reasoning_tokens);
        add(&mut out, TokenKind::AudioOutput, details.audio_tokens);
    }
    out
}

fn responses<'a>(model: &'a str, usage: Option<&ResponseUsage>) -> TokenUsage<'a> {
    let out = TokenUsage::new().with_model(Cow::Borrowed(model));
    let Some(usage) = usage else {
        return out;
    };
    out.with(TokenKind::Input, u64::from(usage.input_tokens))
        .with(TokenKind::Output, u64::from(usage.output_tokens))
        .with(
            TokenKind::CachedInput,
            u64::from(usage.input_tokens_details.cached_tokens),
        )
        .with(
            TokenKind::Reasoning,
            u64::from(usage.output_tokens_details.reasoning_tokens),
        )
}

fn add(usage: &mut TokenUsage<'_>, kind: TokenKind, count: Option<u32>) {
    if let Some(count) = count {
        usage.add(kind, u64::from(count));
    }
}

/// A chat completion's usage and model.
impl UsageReport for CreateChatCompletionResponse {
    fn usage(&self) -> TokenUsage<'_> {
        chat(&self.model, self.usage.as_ref())
    }
}

/// A stream chunk's: only the last chunk of a stream asked with
/// `stream_options.include_usage` has counts; the others give the model alone.
impl UsageReport for CreateChatCompletionStreamResponse {
    fn usage(&self) -> TokenUsage<'_> {
        chat(&self.model, self.usage.as_ref())
    }
}

/// A Responses API response's usage and model.
impl UsageReport for Response {
    fn usage(&self) -> TokenUsage<'_> {
        responses(&self.model, self.usage.as_ref())
    }
}

/// A Responses API stream event's: the last event (`response.completed`, or
/// `response.incomplete` or `response.failed`, whose tokens are billed too) carries the
/// usage; other events report nothing.
impl UsageReport for ResponseStreamEvent {
    fn usage(&self) -> TokenUsage<'_> {
        match self {
            ResponseStreamEvent::ResponseCompleted(event) => event.response.usage(),
            ResponseStreamEvent::ResponseIncomplete(event) => event.response.usage(),
            ResponseStreamEvent::ResponseFailed(event) => event.response.usage(),
            _ => TokenUsage::new(),
        }
    }
}

/// An embedding's input tokens and model (an embedding has no output).
impl UsageReport for CreateEmbeddingResponse {
    fn usage(&self) -> TokenUsage<'_> {
        TokenUsage::new()
            .with_model(Cow::Borrowed(self.model.as_str()))
            .with(TokenKind::Input, u64::from(self.usage.prompt_tokens))
    }
}
