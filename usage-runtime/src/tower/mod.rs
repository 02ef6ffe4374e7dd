//! HTTP services: [`UsageLayer`], a tower layer that records one usage record per request
//! (feature `tower`; feature `axum` adds route templates).
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use usage_runtime::tower::{Identity, UsageLayer};
//!
//! async fn auth(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
//!     // Whatever your auth decides; the usage layer reads it whichever side of it this runs.
//!     Identity::of(req.extensions_mut()).set_tenant("acme");
//!     next.run(req).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/{id}", post(|| async { "hi" }))
//!     .layer(UsageLayer::new())
//!     .layer(axum::middleware::from_fn(auth));
//! ```
//!
//! - **Operation**: `"<METHOD> <route template>"` (`"POST /v1/chat/{id}"`) from axum's
//!   `MatchedPath` (feature `axum`), so ids in paths never become operation names;
//!   `"<METHOD> (unmatched)"` when no
//!   route matched (add the layer with `Router::layer` or `route_layer` so it sees the route).
//!   [`UsageLayer::name_with`] names requests yourself.
//! - **Outcome**: a 5xx status is `Error` (`error_type` `"HTTP 503"`); any other status is
//!   `Success`; an error from the inner service or the response body is `Error` (its text kept
//!   unless [`UsageLayer::error_messages`] is off); a panic in the inner service or while the body
//!   is produced is `Panic`; a request whose future or response body is dropped before the end
//!   (the client went away) is `Cancelled`, while a response with nothing to send (HEAD, 204, 304,
//!   a reached `content-length`) is complete. The call lasts until the response body has been
//!   sent, and the body's production is part of it (`record_tokens` while streaming counts).
//! - **Who**: tenant, user and session come from the request's [`Identity`], read when the call
//!   ends, so an auth layer that sets them works inside or outside this layer.
//! - **Volume**: attributes `http_status`, `request_bytes` and `response_bytes` (body bytes that
//!   went through, counted as they pass).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Extensions, Method, Request, Response, StatusCode};
use http_body::Body;

mod body;

pub use body::{CountedBody, TrackedBody};

use crate::call::catalog::Operation;
use crate::call::classify::Classification;
use crate::call::dimension::{Dimensions, IdInput, IdValue, TenantValue};
use crate::call::guard::CallGuard;
use crate::call::intern::Interner;
use crate::call::tokens::TokenUsage;

/// Who made a request: tenant, user and session, shared by every layer and handler that sees the
/// request. An auth layer sets them with [`Identity::of`]; [`UsageLayer`] reads them when the
/// request ends, so the order of the two layers does not matter. Handlers can take it with
/// `Extension<Identity>` (present on every request that went through a `UsageLayer`).
///
/// Each request has its own: the only way to get one is [`Identity::of`] on that request's
/// extensions. Never put one `Identity` in several requests (such as through a shared
/// `Extension` layer): they would share a tenant.
#[derive(Clone)]
pub struct Identity(Arc<Mutex<Who>>);

#[derive(Debug, Clone, Default)]
struct Who {
    tenant: Option<String>,
    user: Option<IdInput>,
    session: Option<IdInput>,
}

impl Identity {
    /// The request's identity, added to `extensions` if it has none yet.
    pub fn of(extensions: &mut Extensions) -> Identity {
        if let Some(identity) = extensions.get::<Identity>() {
            return identity.clone();
        }
        let identity = Identity(Arc::default());
        extensions.insert(identity.clone());
        identity
    }

    /// Sets the tenant (anything [`TenantValue`]; an empty string clears it).
    pub fn set_tenant<T: TenantValue + ?Sized>(&self, tenant: &T) -> &Self {
        self.who().tenant = tenant.tenant_value();
        self
    }

    /// Sets the user (a UUID, or any id mapped to a UUIDv5 as with `user = ...`).
    pub fn set_user<T: IdValue + ?Sized>(&self, user: &T) -> &Self {
        self.who().user = user.id_value();
        self
    }

    /// Sets the session (as [`set_user`](Self::set_user)).
    pub fn set_session<T: IdValue + ?Sized>(&self, session: &T) -> &Self {
        self.who().session = session.id_value();
        self
    }

    /// The tenant set so far.
    pub fn tenant(&self) -> Option<String> {
        self.who().tenant.clone()
    }

    /// The user set so far.
    pub fn user(&self) -> Option<IdInput> {
        self.who().user.clone()
    }

    /// The session set so far.
    pub fn session(&self) -> Option<IdInput> {
        self.who().session.clone()
    }

    fn who(&self) -> std::sync::MutexGuard<'_, Who> {
        // The data is plain values: a panic elsewhere cannot leave it half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.who();
        f.debug_struct("Identity")
            .field("tenant", &who.tenant)
            .field("user", &who.user)
            .field("session", &who.session)
            .finish()
    }
}

type Naming = dyn Fn(&Parts) -> String + Send + Sync;

/// Tracks every request through the wrapped service. See the [module docs](self).
#[derive(Clone)]
pub struct UsageLayer {
    naming: Option<Arc<Naming>>,
    error_messages: bool,
}

impl Default for UsageLayer {
    fn default() -> Self {
        UsageLayer {
            naming: None,
            error_messages: true,
        }
    }
}

impl UsageLayer {
    /// Operations named `"<METHOD> <route template>"`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names each request's operation with `name` instead. Names should come from a small set
    /// (route templates, not raw paths): past 10,000 distinct names, requests are recorded under
    /// `"(other)"`.
    pub fn name_with(mut self, name: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.naming = Some(Arc::new(name));
        self
    }

    /// Whether the text of errors from the inner service or the response body is recorded (as
    /// `error_message`, cut to the tracker's limit); on by default, as with `#[track_usage]`.
    /// Turn it off when those errors can carry personal data or secrets.
    pub fn error_messages(mut self, record: bool) -> Self {
        self.error_messages = record;
        self
    }
}

impl fmt::Debug for UsageLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageLayer")
            .field("custom_naming", &self.naming.is_some())
            .field("error_messages", &self.error_messages)
            .finish()
    }
}

impl<S> tower_layer::Layer<S> for UsageLayer {
    type Service = UsageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UsageService {
            inner,
            naming: self.naming.clone(),
            error_messages: self.error_messages,
        }
    }
}

/// The service [`UsageLayer`] wraps around yours.
#[derive(Clone)]
pub struct UsageService<S> {
    inner: S,
    naming: Option<Arc<Naming>>,
    error_messages: bool,
}

impl<S: fmt::Debug> fmt::Debug for UsageService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for UsageService<S>
where
    S: tower_service::Service<Request<CountedBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ReqBody: Body,
    ResBody: Body,
    ResBody::Error: fmt::Display,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let matched = route(&parts).is_some();
        let name = match &self.naming {
            Some(naming) => Cow::Owned(naming(&parts)),
            None => default_name(&parts),
        };
        let guard = CallGuard::start(operation(name), None);
        let head = parts.method == Method::HEAD;
        let request = Arc::new(RequestState {
            identity: Identity::of(&mut parts.extensions),
            bytes: AtomicU64::new(0),
        });
        let body = CountedBody {
            inner: body,
            request: Arc::clone(&request),
        };
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture {
            future,
            call: Some(Ending {
                guard,
                request,
                head,
                matched,
                error_messages: self.error_messages,
            }),
        }
    }
}

/// What the record needs from the request once the call ends.
#[derive(Debug)]
struct RequestState {
    identity: Identity,
    bytes: AtomicU64,
}

/// A call under way, with what its record needs.
#[derive(Debug)]
struct Ending {
    guard: CallGuard,
    request: Arc<RequestState>,
    /// A HEAD request: its response has no body to send.
    head: bool,
    /// Whether axum matched a route before this layer saw the request.
    matched: bool,
    error_messages: bool,
}

impl Ending {
    /// Fills in the dimensions known only now: who (set by any layer on the way), status, volume.
    fn dimensions(&mut self, status: Option<StatusCode>, response_bytes: u64) {
        let who = self.request.identity.who().clone();
        let mut fields = Vec::with_capacity(3);
        if let Some(status) = status {
            fields.push(("http_status", status.as_u16().into()));
        }
        fields.push((
            "request_bytes",
            self.request.bytes.load(Ordering::Relaxed).into(),
        ));
        if status.is_some() {
            fields.push(("response_bytes", response_bytes.into()));
        }
        self.guard.set_dimensions(Dimensions {
            tenant: crate::call::dimension::tenant(&who.tenant),
            user: who.user,
            session: who.session,
            model: None,
            fields,
        });
    }

    fn finish(
        mut self,
        status: Option<StatusCode>,
        response_bytes: u64,
        failure: Option<Failure<'_>>,
    ) {
        self.dimensions(status, response_bytes);
        if let Some(status) = status {
            self.check_matched(status);
        }
        let (status_type, reason);
        let verdict = match (failure, status) {
            (Some(failure), _) => Classification::Error {
                error_type: failure.error_type,
                message: Some(failure.message).filter(|_| self.error_messages),
            },
            (None, Some(status)) if status.is_server_error() => {
                status_type = format!("HTTP {}", status.as_u16());
                reason = status.canonical_reason();
                Classification::Error {
                    error_type: &status_type,
                    message: reason.as_ref().map(|reason| reason as &dyn fmt::Display),
                }
            }
            (None, _) => Classification::Success,
        };
        self.guard.finish(verdict, TokenUsage::new());
    }

    /// Warns once if requests that axum did route reach the layer without their route (the
    /// layer sits outside the `Router`): every one of them would be named `(unmatched)`.
    fn check_matched(&self, status: StatusCode) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let not_found = matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        );
        if !self.matched && !not_found && !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation = self.guard.operation().name(),
                "the usage layer sees requests without their matched route; add it with \
                 Router::layer or Router::route_layer, not around the Router, to name operations \
                 by route"
            );
        }
    }

    /// Whether a response whose body was dropped unpolled had nothing to send anyway.
    fn bodiless(&self, status: StatusCode) -> bool {
        self.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
    }

    /// Ends the call as `Cancelled` (or `Panic`, if a poll of its own panicked).
    fn abandon(mut self, status: Option<StatusCode>, response_bytes: u64) {
        self.dimensions(status, response_bytes);
        drop(self.guard);
    }
}

struct Failure<'a> {
    error_type: &'a str,
    message: &'a dyn fmt::Display,
}

pin_project_lite::pin_project! {
    /// The future of a tracked request.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        call: Option<Ending>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.abandon(None, 0);
            }
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let call = this
            .call
            .as_mut()
            .expect("`ResponseFuture` polled after completion");
        // The request's call is innermost for `record_tokens` and marked if the poll panics.
        let future = this.future;
        let output = ready!(call.guard.poll_in_scope(|| future.poll(cx)));
        let call = this.call.take().expect("call present until completion");
        Poll::Ready(match output {
            Ok(response) => {
                let status = response.status();
                let length = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
                let empty = call.bodiless(status) || length == Some(0);
                Ok(response.map(|body| TrackedBody {
                    empty: empty || body.is_end_stream(),
                    inner: body,
                    status,
                    length,
                    bytes: 0,
                    call: Some(call),
                }))
            }
            Err(error) => {
                call.finish(
                    None,
                    0,
                    Some(Failure {
                        error_type: std::any::type_name::<E>(),
                        message: &error,
                    }),
                );
                Err(error)
            }
        })
    }
}

fn default_name(parts: &Parts) -> Cow<'static, str> {
    let method = standard_method(&parts.method);
    match route(parts) {
        Some(route) => Cow::Owned(format!("{method} {route}")),
        None => Cow::Owned(format!("{method} (unmatched)")),
    }
}

/// The route template the router matched (axum's `MatchedPath`, with the `axum` feature).
fn route(parts: &Parts) -> Option<&str> {
    #[cfg(feature = "axum")]
    return parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|route| route.as_str());
    #[cfg(not(feature = "axum"))]
    {
        let _ = parts;
        None
    }
}

/// The method's name, or `OTHER` for extension methods (any client can invent one).
fn standard_method(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("OTHER", |standard| match *standard {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            Method::CONNECT => "CONNECT",
            _ => "TRACE",
        })
}

/// Distinct operation names the layer will make; later names are recorded as `(other)`.
const MAX_OPERATIONS: usize = 10_000;

const FUNCTION: &str = "usage_runtime::tower::UsageLayer";

static OTHER: Operation = Operation::new("(other)", FUNCTION, file!(), line!(), true);

/// The operation named `name`, made once per name and kept for the life of the process (the
/// records refer to operations by `&'static`, as the ones of `#[track_usage]` fns are).
fn operation(name: Cow<'_, str>) -> &'static Operation {
    static OPERATIONS: Interner<&'static Operation> = Interner::new(MAX_OPERATIONS);
    let made = OPERATIONS.get(&name, |name| {
        Box::leak(Box::new(Operation::new(
            name,
            FUNCTION,
            file!(),
            line!(),
            true,
        )))
    });
    match made {
        Ok((_, operation)) => operation,
        Err(first) => {
            if first {
                tracing::warn!(
                    limit = MAX_OPERATIONS,
                    "the usage layer has named {MAX_OPERATIONS} distinct operations; further \
                     names are recorded as \"(other)\" (name requests by route template, not by \
                     raw path)"
                );
            }
            &OTHER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_made_once_per_name() {
        let a = operation(Cow::Borrowed("GET /a/{id}"));
        let again = operation(Cow::Owned(String::from("GET /a/{id}")));
        assert!(std::ptr::eq(a, again));
        assert_eq!(a.name(), "GET /a/{id}");
        assert!(!std::ptr::eq(a, operation(Cow::Borrowed("GET /b"))));
    }

    #[test]
    fn extension_methods_are_other() {
        assert_eq!(standard_method(&Method::PATCH), "PATCH");
        assert_eq!(
            standard_method(&Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
    }

    #[test]
    fn identity_is_shared_by_every_holder() {
        let mut extensions = Extensions::new();
        let outer = Identity::of(&mut extensions);
        Identity::of(&mut extensions)
            .set_tenant("acme")
            .set_user("user-1");
        assert_eq!(outer.tenant().as_deref(), Some("acme"));
        assert_eq!(outer.user(), Some(IdInput::Name("user-1".into())));
        outer.set_tenant("");
        assert_eq!(Identity::of(&mut extensions).tenant(), None);
    }
}
