//! Quickstart: a small chat service whose handlers are tracked into SQLite.
//!
//! ```sh
//! cargo run -p examples --example quickstart
//! USAGE_DATABASE_URL=sqlite:///tmp/usage.db cargo run -p examples --example quickstart
//! ```
//!
//! Each handler carries one attribute. The run makes successful calls that report LLM token usage
//! (read off the response, recorded in the body, summed over a stream), errors, a panic that is
//! caught and calls that are cancelled; it prices them from `pricing.toml`, shuts the tracker down
//! (which flushes), then reads the rows back from the database and prints a summary per operation.

use std::time::Duration;

use futures::{Stream, StreamExt};
use sqlx::{Connection, Row, SqliteConnection};
use usage_runtime::sink::SqliteSink;
use usage_runtime::{track_usage, Pricing, Tracker, UsageReport};

struct ChatRequest {
    org: &'static str,
    user: &'static str,
    model: &'static str,
    prompt: String,
}

/// Shaped like an OpenAI chat completion: the usage is read off it, nothing written by hand.
#[derive(UsageReport)]
struct ChatResponse {
    text: String,
    #[usage(model)]
    model: String,
    #[usage(flatten)]
    usage: Usage,
}

#[derive(UsageReport)]
struct Usage {
    #[usage(input_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: u32,
}

/// One chunk of a streamed reply; the last one carries the usage.
#[derive(UsageReport)]
struct Chunk {
    text: String,
    #[usage(flatten)]
    usage: Option<Usage>,
    #[usage(model)]
    model: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
enum ChatError {
    #[error("prompt is empty")]
    EmptyPrompt,
    #[error("model {0} is overloaded")]
    Overloaded(&'static str),
}

fn count_tokens(text: &str) -> u32 {
    text.split_whitespace().count() as u32 * 4 / 3 + 1
}

#[track_usage(operation = "chat", tenant = req.org, user = req.user, fields(model = req.model))]
async fn chat(req: &ChatRequest) -> Result<ChatResponse, ChatError> {
    if req.prompt.is_empty() {
        return Err(ChatError::EmptyPrompt);
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    if req.prompt.contains("rush hour") {
        return Err(ChatError::Overloaded(req.model));
    }
    let text = format!("Here is a thoughtful answer to: {}", req.prompt);
    Ok(ChatResponse {
        usage: Usage {
            prompt_tokens: 200 + count_tokens(&req.prompt),
            completion_tokens: count_tokens(&text),
        },
        model: req.model.to_owned(),
        text,
    })
}

#[track_usage(operation = "chat.stream", tenant = org, stream)]
fn chat_stream(org: &'static str, words: usize) -> impl Stream<Item = Chunk> {
    futures::stream::iter(0..words).then(move |n| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let last = n + 1 == words;
        Chunk {
            text: format!("word{n} "),
            usage: last.then_some(Usage {
                prompt_tokens: 150,
                completion_tokens: words as u32,
            }),
            model: last.then_some("claude-3-5-haiku-20241022"),
        }
    })
}

#[track_usage(operation = "embed", tenant = org)]
fn embed(org: &str, text: &str) -> Vec<f32> {
    // A client that returns no usage type: record it from inside the body.
    usage_runtime::record_tokens(u64::from(count_tokens(text)), 0);
    usage_runtime::set_model("text-embedding-3-small");
    text.bytes().map(|b| f32::from(b) / 255.0).collect()
}

#[track_usage(operation = "tool.search", tenant = org)]
async fn search(org: &str, query: &str) -> Vec<String> {
    tokio::task::yield_now().await;
    if query == "corrupt" {
        panic!("search index is corrupted (simulated)");
    }
    vec![format!("result for {query}")]
}

#[track_usage(operation = "slow_report", tenant = org)]
async fn slow_report(org: &str) -> String {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "done".into()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("USAGE_DATABASE_URL").unwrap_or_else(|_| "sqlite://usage.db".into());
    // Timestamps are stored as RFC 3339 UTC text, so this run's rows sort after this instant.
    let run_started = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();

    let pricing = Pricing::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/pricing.toml"))?;
    let sink = SqliteSink::connect(&url).await?;
    let tracker = Tracker::builder()
        .service("quickstart-chat")
        .pricing(pricing)
        .sink(sink)
        .install()?;

    let users = [("acme", "alice"), ("acme", "bob"), ("globex", "carol")];
    for round in 0..10 {
        for (org, user) in users {
            let prompt = match round {
                3 => String::new(),
                7 => "a question at rush hour".to_owned(),
                _ => format!("question number {round} about invoices"),
            };
            let req = ChatRequest {
                org,
                user,
                model: "gpt-4o",
                prompt,
            };
            if let Ok(response) = chat(&req).await {
                assert!(!response.text.is_empty());
            }
            embed(org, "some text to embed for search");
        }
    }
    for query in ["rust", "sqlite"] {
        search("acme", query).await;
    }
    let reply: String = chat_stream("globex", 12)
        .map(|chunk| chunk.text)
        .collect()
        .await;
    assert_eq!(reply.split_whitespace().count(), 12);

    // A panic inside a tracked handler is recorded as `panic`, and the panic goes on: here the
    // task catches it, as a server would.
    std::panic::set_hook(Box::new(|info| eprintln!("(caught) {info}")));
    let crashed = tokio::spawn(async { search("globex", "corrupt").await }).await;
    let _ = std::panic::take_hook();
    assert!(crashed.is_err_and(|error| error.is_panic()));

    // A future dropped before it completes, or a stream dropped before its end, is `cancelled`.
    let timed_out = tokio::time::timeout(Duration::from_millis(20), slow_report("acme")).await;
    assert!(timed_out.is_err());
    let first_words: Vec<Chunk> = chat_stream("acme", 100).take(3).collect().await;
    assert_eq!(first_words.len(), 3);

    println!("tracker before shutdown: {:?}", tracker.health());
    tracker.shutdown().await?;

    print_summary(&url, &run_started).await?;
    Ok(())
}

/// Nano-USD as dollars, exactly.
fn dollars(nano_usd: i64) -> String {
    format!(
        "${}.{:09}",
        nano_usd / 1_000_000_000,
        nano_usd % 1_000_000_000
    )
}

async fn print_summary(url: &str, since: &str) -> Result<(), sqlx::Error> {
    let mut db = SqliteConnection::connect(url).await?;
    let rows = sqlx::query(
        "SELECT operation,
                COUNT(*)                                  AS calls,
                SUM(outcome = 'success')                  AS success,
                SUM(outcome = 'error')                    AS errors,
                SUM(outcome = 'panic')                    AS panics,
                SUM(outcome = 'cancelled')                AS cancelled,
                COUNT(DISTINCT tenant_id)                 AS tenants,
                COALESCE(SUM(input_tokens), 0)            AS input_tokens,
                COALESCE(SUM(output_tokens), 0)           AS output_tokens,
                COALESCE(SUM(cost_nano_usd), 0)           AS cost,
                CAST(AVG(duration_us) AS INTEGER)         AS avg_us
         FROM usage_records
         WHERE service = 'quickstart-chat' AND started_at >= ?
         GROUP BY operation
         ORDER BY operation",
    )
    .bind(since)
    .fetch_all(&mut db)
    .await?;
    println!("\nrows written to {url} by this run, per operation:\n");
    println!(
        "{:<12} {:>5} {:>7} {:>6} {:>6} {:>9} {:>7} {:>9} {:>9} {:>14} {:>8}",
        "operation",
        "calls",
        "success",
        "errors",
        "panics",
        "cancelled",
        "tenants",
        "tokens in",
        "tokens out",
        "cost",
        "avg µs"
    );
    let (mut total_calls, mut total_cost) = (0i64, 0i64);
    for row in &rows {
        let calls: i64 = row.get("calls");
        let cost: i64 = row.get("cost");
        total_calls += calls;
        total_cost += cost;
        println!(
            "{:<12} {:>5} {:>7} {:>6} {:>6} {:>9} {:>7} {:>9} {:>9} {:>14} {:>8}",
            row.get::<String, _>("operation"),
            calls,
            row.get::<i64, _>("success"),
            row.get::<i64, _>("errors"),
            row.get::<i64, _>("panics"),
            row.get::<i64, _>("cancelled"),
            row.get::<i64, _>("tenants"),
            row.get::<i64, _>("input_tokens"),
            row.get::<i64, _>("output_tokens"),
            dollars(cost),
            row.get::<i64, _>("avg_us"),
        );
    }
    let errors: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT error_type, error_message FROM usage_records
         WHERE service = 'quickstart-chat' AND started_at >= ? AND outcome = 'error'
         ORDER BY error_message",
    )
    .bind(since)
    .fetch_all(&mut db)
    .await?;
    println!(
        "\n{total_calls} rows in all, costing {} in all; errors recorded:",
        dollars(total_cost)
    );
    for (error_type, message) in errors {
        println!("  {error_type}: {message}");
    }
    Ok(())
}
