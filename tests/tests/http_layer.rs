//! `UsageLayer` on a real axum server over real HTTP: names, outcomes, volume.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use usage_runtime::sink::MemorySink;
use usage_runtime::tower::{Identity, UsageLayer};
use usage_runtime::{track_usage, Outcome, Tracker, UsageRecord};

/// One tracker per process: the tests take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serve(router: Router) -> SocketAddr {
    tests::serve(router).await
}

fn install() -> (Tracker, MemorySink) {
    let sink = MemorySink::new();
    let guard = Tracker::builder()
        .service("http")
        .flush_interval(Duration::from_millis(20))
        .sink(sink.clone())
        .install()
        .unwrap();
    (guard, sink)
}

/// Waits until `sink` holds `count` records (or panics after 10 s), and returns them; a record
/// too many (a request recorded twice) fails.
async fn wait_for(guard: &Tracker, sink: &MemorySink, count: usize) -> Vec<UsageRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        guard.flush().await.unwrap();
        let records = sink.records();
        if records.len() >= count {
            tokio::time::sleep(Duration::from_millis(100)).await;
            guard.flush().await.unwrap();
            let records = sink.records();
            assert_eq!(records.len(), count, "{records:?}");
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} records, have {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test's tracked server: its turn, the tracker and its sink, where the router listens, a client.
struct Served {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    guard: Tracker,
    sink: MemorySink,
    address: SocketAddr,
    client: reqwest::Client,
}

/// Takes this test's turn, installs a tracker and serves `app`.
async fn serve_tracked(app: Router) -> Served {
    let turn = TURN.lock().await;
    let (guard, sink) = install();
    let address = serve(app).await;
    Served {
        _turn: turn,
        guard,
        sink,
        address,
        client: reqwest::Client::new(),
    }
}

impl Served {
    /// The URL of `path` on the server.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// GET `path`.
    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.get(self.url(path)).send().await
    }

    /// The body of a GET of `path`.
    async fn text(&self, path: &str) -> String {
        self.get(path).await.unwrap().text().await.unwrap()
    }

    /// The `count` records of the requests, as [`wait_for`] finds them.
    async fn records(&self, count: usize) -> Vec<UsageRecord> {
        wait_for(&self.guard, &self.sink, count).await
    }
}

/// The record of operation `name`.
fn find<'a>(records: &'a [UsageRecord], name: &str) -> &'a UsageRecord {
    records
        .iter()
        .find(|r| r.operation == name)
        .unwrap_or_else(|| panic!("no {name} in {records:?}"))
}

#[track_usage(operation = "lookup")]
async fn lookup(id: u64) -> String {
    format!("item {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_route_templates_never_raw_paths() {
    let served = serve_tracked(
        Router::new()
            .route(
                "/items/{id}",
                get(|axum::extract::Path(id): axum::extract::Path<u64>| lookup(id)),
            )
            .layer(UsageLayer::new()),
    )
    .await;
    for id in [1, 22, 333] {
        let text = served.text(&format!("/items/{id}")).await;
        assert_eq!(text, format!("item {id}"));
    }
    let missing = served.get("/nowhere/42").await.unwrap();
    assert_eq!(missing.status(), 404);

    let records = served.records(7).await;
    let mut names: Vec<_> = records.iter().map(|r| r.operation.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "GET (unmatched)",
            "GET /items/{id}",
            "GET /items/{id}",
            "GET /items/{id}",
            "lookup",
            "lookup",
            "lookup"
        ]
    );
    let unmatched = find(&records, "GET (unmatched)");
    assert_eq!(unmatched.outcome, Outcome::Success, "a 404 is the client's");
    assert_eq!(unmatched.attributes["http_status"], 404);
    served.guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naming_closure_names_requests() {
    let served = serve_tracked(
        Router::new()
            .route("/v2/{*rest}", get(|| async { "ok" }))
            .layer(UsageLayer::new().name_with(|parts| {
                let version = parts.uri.path().split('/').nth(1).unwrap_or("");
                format!("api.{version}")
            })),
    )
    .await;
    served.get("/v2/a/b/c").await.unwrap();
    let records = served.records(1).await;
    assert_eq!(records[0].operation, "api.v2");
    served.guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_panics_and_dropped_requests_are_classified() {
    let served = serve_tracked(
        Router::new()
            .route(
                "/fail",
                get(|| async { (StatusCode::BAD_GATEWAY, "upstream down") }),
            )
            .route("/bad", get(|| async { StatusCode::BAD_REQUEST }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("handler bug (simulated)");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .layer(UsageLayer::new()),
    )
    .await;
    let get = |path| served.get(path);
    assert_eq!(get("/fail").await.unwrap().status(), 502);
    assert_eq!(get("/bad").await.unwrap().status(), 400);
    assert!(
        get("/panic").await.is_err(),
        "the connection dies with the handler"
    );
    let slow = served
        .client
        .get(served.url("/slow"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(slow.is_err(), "the client gives up");

    let records = served.records(4).await;
    let find = |name| find(&records, name);
    let fail = find("GET /fail");
    assert_eq!(fail.outcome, Outcome::Error);
    assert_eq!(fail.error_type.as_deref(), Some("HTTP 502"));
    assert_eq!(fail.error_message.as_deref(), Some("Bad Gateway"));
    assert_eq!(find("GET /bad").outcome, Outcome::Success);
    assert_eq!(find("GET /panic").outcome, Outcome::Panic);
    let slow = find("GET /slow");
    assert_eq!(slow.outcome, Outcome::Cancelled);
    assert!(slow.duration >= Duration::from_millis(150), "{slow:?}");
    served.guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_are_counted_and_timed_to_their_end() {
    let served = serve_tracked(
        Router::new()
            .route(
                "/upload",
                post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .route(
                "/stream",
                get(|| async {
                    let chunks = futures::stream::iter(0..10).then(|n| async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Ok::<_, Infallible>(format!("chunk {n}\n"))
                    });
                    Response::new(Body::from_stream(chunks))
                }),
            )
            .layer(UsageLayer::new()),
    )
    .await;
    let upload = vec![b'x'; 100_000];
    let reply = served
        .client
        .post(served.url("/upload"))
        .body(upload)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(reply, "100000 bytes");
    let streamed = served.text("/stream").await;

    let records = served.records(2).await;
    let upload = find(&records, "POST /upload");
    assert_eq!(upload.attributes["request_bytes"], 100_000);
    assert_eq!(upload.attributes["response_bytes"], "100000 bytes".len());
    let stream = find(&records, "GET /stream");
    assert_eq!(stream.attributes["response_bytes"], streamed.len());
    assert_eq!(stream.outcome, Outcome::Success);
    assert!(
        stream.duration >= Duration::from_millis(250),
        "timed until the last chunk was sent: {:?}",
        stream.duration
    );
    served.guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_inner_service_is_an_error() {
    use tower::ServiceExt;

    let _turn = TURN.lock().await;
    let (guard, sink) = install();
    let failing = tower::service_fn(|request: Request<_>| async move {
        let identity = Identity::of(&mut request.into_parts().0.extensions);
        identity.set_tenant("acme");
        Err::<Response<Body>, _>(std::io::Error::other("backend refused"))
    });
    let service = tower::Layer::layer(&UsageLayer::new(), failing);
    let request = Request::get("/x").body(Body::empty()).unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    assert_eq!(error.to_string(), "backend refused");

    let records = wait_for(&guard, &sink, 1).await;
    assert_eq!(records[0].outcome, Outcome::Error);
    assert_eq!(records[0].error_message.as_deref(), Some("backend refused"));
    assert_eq!(records[0].tenant_id.as_deref(), Some("acme"));
    assert!(
        !records[0].attributes.contains_key("http_status"),
        "no response was sent"
    );
    guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_without_a_body_are_complete_not_cancelled() {
    let served = serve_tracked(
        Router::new()
            .route("/page", get(|| async { "a page with a body" }))
            .route("/gone", get(|| async { StatusCode::NO_CONTENT }))
            .layer(UsageLayer::new()),
    )
    .await;
    let head = served
        .client
        .head(served.url("/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let gone = served.get("/gone").await.unwrap();
    assert_eq!(gone.status(), 204);

    let records = served.records(2).await;
    for record in &records {
        assert_eq!(record.outcome, Outcome::Success, "{record:?}");
        assert_eq!(record.attributes["response_bytes"], 0, "{record:?}");
    }
    let mut names: Vec<_> = records.iter().map(|r| r.operation.as_ref()).collect();
    names.sort();
    assert_eq!(names, ["GET /gone", "HEAD /page"]);
    served.guard.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_cancelled_and_a_panicking_stream_is_a_panic() {
    let served = serve_tracked(
        Router::new()
            .route(
                "/endless",
                get(|| async {
                    let chunks = futures::stream::iter(0..).then(|n| async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, Infallible>(format!("chunk {n}\n"))
                    });
                    Response::new(Body::from_stream(chunks))
                }),
            )
            .route(
                "/broken",
                get(|| async {
                    let chunks = futures::stream::iter(0..3).map(|n| {
                        if n == 2 {
                            panic!("stream bug (simulated)");
                        }
                        Ok::<_, Infallible>(format!("chunk {n}\n"))
                    });
                    Response::new(Body::from_stream(chunks))
                }),
            )
            .layer(UsageLayer::new()),
    )
    .await;
    let mut endless = served.get("/endless").await.unwrap();
    let first = endless.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"chunk 0"));
    drop(endless); // the client goes away mid-stream
                   // The connection dies with the stream, before or after the headers went out.
    let broken = served.get("/broken").await;
    if let Ok(broken) = broken {
        assert!(broken.text().await.is_err(), "the stream dies mid-way");
    }

    let records = served.records(2).await;
    let find = |name| find(&records, name);
    let endless = find("GET /endless");
    assert_eq!(endless.outcome, Outcome::Cancelled);
    assert!(endless.attributes["response_bytes"].as_u64().unwrap() > 0);
    assert_eq!(find("GET /broken").outcome, Outcome::Panic);
    served.guard.shutdown().await.unwrap();
}
