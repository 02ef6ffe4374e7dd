//! An axum chat service, tracked end to end.
//!
//! ```sh
//! cargo run -p examples --example axum_chat                 # SQLite file usage.db, port 3000
//! USAGE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test PORT=8080 MODEL_LATENCY_MS=200 \
//!     cargo run -p examples --example axum_chat
//!
//! curl -s localhost:3000/v1/chat -H 'authorization: Bearer key-acme' \
//!     -H 'content-type: application/json' -d '{"model":"gpt-4o","prompt":"hello there"}'
//! curl -s 'localhost:3000/v1/usage?since=1d' -H 'authorization: Bearer key-acme'
//! curl -s localhost:3000/health
//! ```
//!
//! - An API-key auth layer sets the request's tenant ([`Identity`]); the [`UsageLayer`] records
//!   every request under its route template with that tenant, wherever the two layers sit.
//! - `POST /v1/chat` is a `#[track_usage]` handler whose reply reports its token usage through
//!   `UsageReport`, priced from `pricing.toml`.
//! - `GET /health` is the tracker's health as JSON, 503 while writes are failing.
//! - `GET /v1/usage?since=7d` is the calling tenant's usage per operation and model, read through a
//!   tenant-scoped reader: no other tenant's rows can come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use usage_runtime::report::{GroupBy, Reader};
use usage_runtime::tower::{Identity, UsageLayer};
use usage_runtime::{track_usage, HealthState, Pricing, Tracker, UsageReport};

/// How the service is set up.
#[derive(Clone)]
pub struct Config {
    /// Where records go: `sqlite://...` (the default) or `postgres://...`.
    pub database_url: String,
    /// API key -> tenant.
    pub api_keys: HashMap<String, String>,
    /// How often the tracker writes a partial batch.
    pub flush_interval: Duration,
    /// The first retry's delay (doubling, with jitter).
    pub retry_base: Duration,
    /// How long the stand-in model takes to answer (zero: at once).
    pub model_latency: Duration,
    /// Whether requests are tracked at all (the baseline of the load benchmark).
    pub tracking: bool,
}

impl Config {
    /// Two tenants, `acme` and `globex`, with keys `key-acme` and `key-globex`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            api_keys: [("key-acme", "acme"), ("key-globex", "globex")]
                .into_iter()
                .map(|(key, tenant)| (key.to_owned(), tenant.to_owned()))
                .collect(),
            flush_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(100),
            model_latency: Duration::ZERO,
            tracking: true,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    api_keys: Arc<HashMap<String, String>>,
    reader: Option<Arc<Reader>>,
    model_latency: Duration,
}

// API keys and database passwords never reach logs through `Debug`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &usage_runtime::error::redact_url(&self.database_url),
            )
            .field("api_keys", &self.api_keys.len())
            .field("model_latency", &self.model_latency)
            .field("tracking", &self.tracking)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("api_keys", &self.api_keys.len())
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// The running service's tracker and router.
#[derive(Debug)]
pub struct App {
    /// Flush or shut it down; `None` when tracking is off.
    pub tracker: Option<Tracker>,
    /// The routes, layers included.
    pub router: Router,
    /// The state the auth layer needs (to build routers with the layers in another order).
    pub state: AppState,
}

/// Installs the tracker and builds the routes.
pub async fn build(config: Config) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
    let state = AppState {
        api_keys: Arc::new(config.api_keys.clone()),
        reader: None,
        model_latency: config.model_latency,
    };
    if !config.tracking {
        let router = routes(state.clone())
            .layer(middleware::from_fn_with_state(state.clone(), authenticate));
        return Ok(App {
            tracker: None,
            router,
            state,
        });
    }
    let pricing = Pricing::from_toml(include_str!("pricing.toml"))?;
    let builder = Tracker::builder()
        .service("axum-chat")
        .pricing(pricing)
        .flush_interval(config.flush_interval)
        .retry_backoff(config.retry_base, Duration::from_secs(2));
    let url = &config.database_url;
    let tracker = if url.starts_with("postgres") {
        let sink = usage_runtime::sink::PostgresSink::connect(url).await?;
        builder.sink(sink).install()?
    } else {
        let sink = usage_runtime::sink::SqliteSink::connect(url).await?;
        builder.sink(sink).install()?
    };
    let state = AppState {
        reader: Some(Arc::new(Reader::connect(url).await?)),
        ..state
    };
    // The usage layer outside auth, so refused requests are recorded too; the tenant the auth
    // layer sets is read when each request ends, so this order works as well as the other.
    let router = routes(state.clone())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(UsageLayer::new());
    Ok(App {
        tracker: Some(tracker),
        router,
        state,
    })
}

/// The routes, without the usage and auth layers.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat", post(chat))
        .route("/v1/usage", get(usage))
        .route("/health", get(health))
        .with_state(state)
}

/// API-key auth: `Authorization: Bearer <key>` sets the tenant; `x-user-id` the user. Everything
/// but `/health` needs a known key.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let key = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(tenant) = key.and_then(|key| state.api_keys.get(key)).cloned() else {
        return (StatusCode::UNAUTHORIZED, "unknown API key\n").into_response();
    };
    // The user id is the caller's word (behind a valid key): it attributes usage, it grants
    // nothing.
    let user = request
        .headers()
        .get("x-user-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let identity = Identity::of(request.extensions_mut());
    identity.set_tenant(&tenant).set_user(&user);
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    prompt: String,
}

/// Shaped like an OpenAI chat completion: the tracker reads the usage off it.
#[derive(Debug, Serialize, UsageReport)]
struct ChatReply {
    text: String,
    #[usage(model)]
    model: String,
    #[usage(flatten)]
    usage: TokenCounts,
}

#[derive(Debug, Serialize, UsageReport)]
struct TokenCounts {
    #[usage(input_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: u32,
}

#[derive(Debug, thiserror::Error)]
enum ChatError {
    #[error("prompt is empty")]
    EmptyPrompt,
    #[error("model {0} is overloaded")]
    Overloaded(String),
}

impl IntoResponse for ChatReply {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let status = match self {
            ChatError::EmptyPrompt => StatusCode::BAD_REQUEST,
            ChatError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{self}\n")).into_response()
    }
}

fn count_tokens(text: &str) -> u32 {
    text.split_whitespace().count() as u32 * 4 / 3 + 1
}

/// A stand-in for a model call: the reply and its token counts are made up, deterministically.
#[track_usage(operation = "chat", tenant = identity.tenant(), user = identity.user())]
async fn chat(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Json(request): Json<ChatRequest>,
) -> Result<ChatReply, ChatError> {
    if !state.model_latency.is_zero() {
        tokio::time::sleep(state.model_latency).await;
    }
    if request.prompt.trim().is_empty() {
        return Err(ChatError::EmptyPrompt);
    }
    if request.model == "overloaded" {
        return Err(ChatError::Overloaded(request.model));
    }
    let text = format!("You said: {}", request.prompt);
    Ok(ChatReply {
        usage: TokenCounts {
            prompt_tokens: 20 + count_tokens(&request.prompt),
            completion_tokens: count_tokens(&text),
        },
        model: request.model,
        text,
    })
}

/// The tracker's health; 503 while writes are failing.
async fn health() -> Response {
    match usage_runtime::health() {
        Some(health) => {
            let status = if matches!(health.state, HealthState::Failing | HealthState::Stopped) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(health)).into_response()
        }
        None => (
            StatusCode::OK,
            Json(serde_json::json!({ "state": "untracked" })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct UsageParams {
    /// `7d`, `12h`, or an RFC 3339 time; default `30d`.
    since: Option<String>,
}

/// The calling tenant's usage per operation and model.
async fn usage(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(params): Query<UsageParams>,
) -> Response {
    let (Some(reader), Some(tenant)) = (state.reader.as_deref(), identity.tenant()) else {
        return (StatusCode::NOT_FOUND, "usage is not tracked here\n").into_response();
    };
    let Some(since) = parse_since(params.since.as_deref().unwrap_or("30d")) else {
        return (
            StatusCode::BAD_REQUEST,
            "since: expected like 7d, 12h or an RFC 3339 time\n",
        )
            .into_response();
    };
    let query = usage_runtime::report::Query::new()
        .since(since)
        .group_by([GroupBy::Operation, GroupBy::Model]);
    match reader.for_tenant(tenant).report(&query).await {
        Ok(report) => Json(report.rows).into_response(),
        Err(error) => {
            // The details (which name the database) stay in the server's log.
            tracing::error!(%error, "usage report failed");
            (StatusCode::SERVICE_UNAVAILABLE, "usage is unavailable\n").into_response()
        }
    }
}

/// `7d`, `12h` or an RFC 3339 time; `None` for anything else, including ages out of range.
fn parse_since(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let now = chrono::Utc::now();
    let age = if let Some(days) = text.strip_suffix('d') {
        chrono::TimeDelta::try_days(days.parse().ok()?)
    } else if let Some(hours) = text.strip_suffix('h') {
        chrono::TimeDelta::try_hours(hours.parse().ok()?)
    } else {
        None
    };
    if let Some(age) = age {
        return now.checked_sub_signed(age);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.to_utc())
}

#[allow(dead_code)] // The tests include this file for its `build`, not its `main`.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("USAGE_DATABASE_URL").unwrap_or_else(|_| "sqlite://usage.db".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let mut config = Config::new(url);
    if let Some(ms) = std::env::var("MODEL_LATENCY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        config.model_latency = Duration::from_millis(ms);
    }
    let app = build(config).await?;
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Some(tracker) = app.tracker {
        tracker.shutdown().await?;
    }
    Ok(())
}
