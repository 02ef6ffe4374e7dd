//! Quickstart: a small chat service whose handlers are tracked into SQLite.
//!
//! ```sh
//! cargo run -p examples --example quickstart
//! USAGE_DATABASE_URL=sqlite:///tmp/usage.db cargo run -p examples --example quickstart
//! ```
//!
//! Each handler carries one attribute. The run makes successful calls, errors, a panic that is
//! caught and a call that is cancelled by a timeout, shuts the tracker down (which flushes), then
//! reads the rows back from the database and prints a summary per operation.

use std::time::Duration;

use sqlx::{Connection, Row, SqliteConnection};
use usage_runtime::sink::SqliteSink;
use usage_runtime::{track_usage, Tracker};

struct ChatRequest {
    org: &'static str,
    user: &'static str,
    model: &'static str,
    prompt: String,
}

#[derive(Debug, thiserror::Error)]
enum ChatError {
    #[error("prompt is empty")]
    EmptyPrompt,
    #[error("model {0} is overloaded")]
    Overloaded(&'static str),
}

#[track_usage(operation = "chat", tenant = req.org, user = req.user, fields(model = req.model))]
async fn chat(req: &ChatRequest) -> Result<String, ChatError> {
    if req.prompt.is_empty() {
        return Err(ChatError::EmptyPrompt);
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    if req.prompt.contains("rush hour") {
        return Err(ChatError::Overloaded(req.model));
    }
    Ok(format!("echo: {}", req.prompt))
}

#[track_usage(operation = "embed", tenant = org)]
fn embed(org: &str, text: &str) -> Vec<f32> {
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

#[track_usage(operation = "stream_reply", tenant = org)]
async fn stream_reply(org: &str) -> String {
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

    let sink = SqliteSink::connect(&url).await?;
    let tracker = Tracker::builder()
        .service("quickstart-chat")
        .sink(sink)
        .install()?;

    let users = [("acme", "alice"), ("acme", "bob"), ("globex", "carol")];
    for round in 0..10 {
        for (org, user) in users {
            let prompt = match round {
                3 => String::new(),
                7 => "a question at rush hour".to_owned(),
                _ => format!("question {round}"),
            };
            let req = ChatRequest {
                org,
                user,
                model: "gpt-4o",
                prompt,
            };
            let _ = chat(&req).await;
            embed(org, "some text to embed");
        }
    }
    for query in ["rust", "sqlite"] {
        search("acme", query).await;
    }

    // A panic inside a tracked handler is recorded as `panic`, and the panic goes on: here the
    // task catches it, as a server would.
    std::panic::set_hook(Box::new(|info| eprintln!("(caught) {info}")));
    let crashed = tokio::spawn(async { search("globex", "corrupt").await }).await;
    let _ = std::panic::take_hook();
    assert!(crashed.is_err_and(|error| error.is_panic()));

    // A future dropped before it completes is recorded as `cancelled`.
    let timed_out = tokio::time::timeout(Duration::from_millis(20), stream_reply("acme")).await;
    assert!(timed_out.is_err());

    println!("tracker before shutdown: {:?}", tracker.health());
    tracker.shutdown().await?;

    print_summary(&url, &run_started).await?;
    Ok(())
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
        "{:<14} {:>6} {:>8} {:>7} {:>7} {:>10} {:>8} {:>10}",
        "operation", "calls", "success", "errors", "panics", "cancelled", "tenants", "avg µs"
    );
    let mut total = 0i64;
    for row in &rows {
        let calls: i64 = row.get("calls");
        total += calls;
        println!(
            "{:<14} {:>6} {:>8} {:>7} {:>7} {:>10} {:>8} {:>10}",
            row.get::<String, _>("operation"),
            calls,
            row.get::<i64, _>("success"),
            row.get::<i64, _>("errors"),
            row.get::<i64, _>("panics"),
            row.get::<i64, _>("cancelled"),
            row.get::<i64, _>("tenants"),
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
    println!("\n{total} rows in all; errors recorded:");
    for (error_type, message) in errors {
        println!("  {error_type}: {message}");
    }
    Ok(())
}
