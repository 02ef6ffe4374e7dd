//! The axum example, served on an ephemeral port and driven with real HTTP requests.

#[allow(dead_code, unreachable_pub)]
#[path = "../axum_chat.rs"]
mod axum_chat;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum_chat::{build, App, Config};
use serde_json::{json, Value};
use sqlx::{Connection, Row, SqliteConnection};
use usage_runtime::tower::UsageLayer;

/// One tracker per process: the tests take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serve(router: Router) -> SocketAddr {
    tests::serve(router).await
}

async fn chat(address: SocketAddr, key: &str, user: &str, prompt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{address}/v1/chat"))
        .bearer_auth(key)
        .header("x-user-id", user)
        .json(&json!({ "model": "gpt-4o", "prompt": prompt }))
        .send()
        .await
        .unwrap()
}

async fn usage_of(address: SocketAddr, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{address}/v1/usage?since=1d"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

struct Sqlite {
    _dir: tempfile::TempDir,
    url: String,
}

fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    Sqlite { _dir: dir, url }
}

/// The app on a fresh SQLite database, served.
async fn served() -> (Sqlite, App, SocketAddr) {
    let db = sqlite();
    let app = build(Config::new(&db.url)).await.unwrap();
    let address = serve(app.router.clone()).await;
    (db, app, address)
}

/// `(operation, tenant, outcome, attributes)` of every record, in write order.
async fn records(url: &str) -> Vec<(String, Option<String>, String, Value)> {
    let mut db = SqliteConnection::connect(url).await.unwrap();
    sqlx::query(
        "SELECT operation, tenant_id, outcome, attributes FROM usage_records ORDER BY started_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
    .into_iter()
    .map(|row| {
        let attributes: String = row.get(3);
        (
            row.get(0),
            row.get(1),
            row.get(2),
            serde_json::from_str(&attributes).unwrap(),
        )
    })
    .collect()
}

async fn flush(app: &App) {
    app.tracker.as_ref().unwrap().flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_land_with_their_tenant_and_route_template() {
    let _turn = TURN.lock().await;
    let (db, app, address) = served().await;

    let reply = chat(address, "key-acme", "alice", "hello there").await;
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["usage"]["prompt_tokens"], 23);
    let refused = chat(address, "no-such-key", "mallory", "hi").await;
    assert_eq!(refused.status(), 401);
    flush(&app).await;

    let rows = records(&db.url).await;
    let http: Vec<_> = rows
        .iter()
        .filter(|(operation, ..)| operation == "POST /v1/chat")
        .collect();
    assert_eq!(http.len(), 2, "{rows:?}");
    // The usage layer sits outside auth, and still records the tenant auth set.
    assert_eq!(http[0].1.as_deref(), Some("acme"));
    assert_eq!(http[0].2, "success");
    assert_eq!(http[0].3["http_status"], 200);
    assert_eq!(
        http[0].3["request_bytes"],
        json!({ "model": "gpt-4o", "prompt": "hello there" })
            .to_string()
            .len()
    );
    assert!(http[0].3["response_bytes"].as_u64().unwrap() > 50);
    // A refused request is recorded too, with no tenant.
    assert_eq!(http[1].1, None);
    assert_eq!(http[1].3["http_status"], 401);
    // The handler's own record carries the token usage and the tenant.
    let chat_row = rows.iter().find(|row| row.0 == "chat").unwrap();
    assert_eq!(chat_row.1.as_deref(), Some("acme"));

    let tracker = app.tracker.unwrap();
    tracker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reads_only_its_own_usage() {
    let _turn = TURN.lock().await;
    let (_db, app, address) = served().await;
    for _ in 0..3 {
        assert_eq!(
            chat(address, "key-acme", "alice", "one two three")
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        chat(address, "key-globex", "bob", "four").await.status(),
        200
    );
    flush(&app).await;

    let (status, acme) = usage_of(address, "key-acme").await;
    assert_eq!(status, 200, "{acme}");
    let (_, globex) = usage_of(address, "key-globex").await;
    let chat_calls = |rows: &Value| -> u64 {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|row| row["group"]["operation"] == "chat")
            .map(|row| row["calls"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(chat_calls(&acme), 3, "{acme}");
    assert_eq!(chat_calls(&globex), 1, "{globex}");
    let acme_tokens: u64 = acme
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(acme_tokens, 3 * (20 + 5), "{acme}");
    // Without a key there is no tenant, and no usage.
    let (status, _) = usage_of(address, "no-such-key").await;
    assert_eq!(status, 401);
    // A nonsense or out-of-range age is the caller's mistake, not a crash.
    for since in ["999999999999d", "soon", "12x"] {
        let response = reqwest::Client::new()
            .get(format!("http://{address}/v1/usage?since={since}"))
            .bearer_auth("key-acme")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "since={since}");
    }

    app.tracker.unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_layer_orders_record_the_tenant() {
    let _turn = TURN.lock().await;
    let db = sqlite();
    let app = build(Config::new(&db.url)).await.unwrap();
    let auth = || axum::middleware::from_fn_with_state(app.state.clone(), axum_chat::authenticate);
    let usage_inside = axum_chat::routes(app.state.clone())
        .layer(UsageLayer::new())
        .layer(auth());
    let usage_outside = axum_chat::routes(app.state.clone())
        .layer(auth())
        .layer(UsageLayer::new());
    let inside = serve(usage_inside).await;
    let outside = serve(usage_outside).await;
    assert_eq!(chat(inside, "key-acme", "alice", "hi").await.status(), 200);
    assert_eq!(chat(outside, "key-globex", "bob", "hi").await.status(), 200);
    flush(&app).await;

    let tenants: Vec<_> = records(&db.url)
        .await
        .into_iter()
        .filter(|row| row.0 == "POST /v1/chat")
        .map(|row| row.1)
        .collect();
    assert_eq!(
        tenants,
        [Some("acme".to_owned()), Some("globex".to_owned())]
    );
    app.tracker.unwrap().shutdown().await.unwrap();
}

async fn health_status(address: SocketAddr) -> u16 {
    reqwest::get(format!("http://{address}/health"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `/health` until it answers `want`, sending a chat request first each time so the tracker
/// has something to write.
async fn wait_for_health(address: SocketAddr, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        chat(address, "key-acme", "alice", "ping").await;
        let status = health_status(address).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {status}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_while_the_database_is_unreachable() {
    let Some(url) = tests::postgres_url() else {
        return;
    };
    let _turn = TURN.lock().await;
    let proxy = tests::Proxy::start(&tests::upstream(&url));
    // The server trusts local logins, so a password rides along unchecked: it must never show.
    let url = tests::with_user(&url, "postgres", Some("s3ntinel-pw"));
    let mut config = Config::new(proxy.url(&url));
    config.flush_interval = Duration::from_millis(50);
    config.retry_base = Duration::from_millis(50);
    let app = build(config).await.unwrap();
    assert!(!format!("{app:?}").contains("s3ntinel-pw"), "{app:?}");
    assert!(!format!("{app:?}").contains("key-acme"), "{app:?}");
    let address = serve(app.router.clone()).await;

    assert_eq!(chat(address, "key-acme", "alice", "hi").await.status(), 200);
    flush(&app).await;
    assert_eq!(health_status(address).await, 200);

    proxy.cut();
    wait_for_health(address, 503).await;
    let body: Value = reqwest::get(format!("http://{address}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "failing", "{body}");
    assert!(body["last_error"].is_string(), "{body}");
    assert!(
        !body.to_string().contains("s3ntinel-pw"),
        "no secret in the health report: {body}"
    );

    proxy.restore();
    wait_for_health(address, 200).await;
    app.tracker.unwrap().shutdown().await.unwrap();
}
