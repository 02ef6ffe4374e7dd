//! Every fn shape `#[track_usage]` supports, each asserting the record it produces.
#![deny(unused_variables)]
#![allow(missing_debug_implementations, async_fn_in_trait)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tests::runtime;
use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, Outcome, UsageRecord};
use uuid::Uuid;

#[derive(Debug, PartialEq)]
pub(crate) struct AppError(&'static str);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn one(capture: &Capture) -> UsageRecord {
    let mut records = capture.records();
    assert_eq!(records.len(), 1, "expected one record, got {records:#?}");
    records.remove(0)
}

fn capture_sync<R>(f: impl FnOnce() -> R) -> (R, UsageRecord) {
    let capture = Capture::new();
    let value = capture.run(f);
    (value, one(&capture))
}

fn capture_async<F: Future>(future: F) -> (F::Output, UsageRecord) {
    let capture = Capture::new();
    let value = runtime().block_on(capture.run_async(future));
    (value, one(&capture))
}

// ---------------------------------------------------------------- plain fns

#[track_usage(operation = "sync_op", tenant = "acme")]
fn sync_fn(x: u32) -> u32 {
    x * 2
}

#[track_usage(operation = "async_op", tenant = org, user = user)]
async fn async_fn(org: &str, user: Uuid) -> Result<u32, AppError> {
    tokio::task::yield_now().await;
    Ok(org.len() as u32)
}

#[test]
fn sync_fn_records_success_and_dimensions() {
    let (value, record) = capture_sync(|| sync_fn(21));
    assert_eq!(value, 42);
    assert_eq!(record.operation, "sync_op");
    assert_eq!(record.function, "shapes::sync_fn");
    assert_eq!(record.outcome, Outcome::Success);
    assert_eq!(record.tenant_id.as_deref(), Some("acme"));
    assert_eq!(record.user_id, None);
    assert_eq!(record.error_type, None);
}

#[test]
fn async_fn_records_across_awaits() {
    let user = Uuid::from_u128(0xabc);
    let (value, record) = capture_async(async_fn("tenant-7", user));
    assert_eq!(value, Ok(8));
    assert_eq!(record.operation, "async_op");
    assert_eq!(record.outcome, Outcome::Success);
    assert_eq!(record.tenant_id.as_deref(), Some("tenant-7"));
    assert_eq!(record.user_id, Some(user));
}

#[track_usage]
fn default_name() {}

#[test]
fn operation_defaults_to_the_fn_name() {
    let ((), record) = capture_sync(default_name);
    assert_eq!(record.operation, "default_name");
}

// ---------------------------------------------------------------- methods

#[derive(Clone)]
pub(crate) struct Service {
    tenant: String,
    calls: u32,
}

impl Service {
    fn new() -> Self {
        Service {
            tenant: "svc-tenant".into(),
            calls: 0,
        }
    }

    #[track_usage(operation = "by_value", tenant = self.tenant)]
    fn by_value(self) -> String {
        self.tenant
    }

    #[track_usage(operation = "by_ref", tenant = self.tenant)]
    fn by_ref(&self) -> &str {
        &self.tenant
    }

    #[track_usage(operation = "by_mut", tenant = self.tenant)]
    fn by_mut(&mut self) -> u32 {
        self.calls += 1;
        self.calls
    }

    #[track_usage(operation = "boxed_self", tenant = self.tenant)]
    fn boxed(self: Box<Self>) -> u32 {
        self.calls
    }

    #[track_usage(operation = "pinned_self", tenant = self.tenant)]
    fn pinned(self: Pin<&mut Self>) -> u32 {
        self.get_mut().calls += 10;
        10
    }

    #[track_usage(operation = "async_method", tenant = self.tenant)]
    async fn async_method(&mut self, by: u32) -> u32 {
        tokio::task::yield_now().await;
        self.calls += by;
        self.calls
    }
}

#[test]
fn methods_of_every_receiver_kind() {
    let (tenant, record) = capture_sync(|| Service::new().by_value());
    assert_eq!(tenant, "svc-tenant");
    assert_eq!(
        (record.operation.as_ref(), record.outcome),
        ("by_value", Outcome::Success)
    );
    assert_eq!(record.tenant_id.as_deref(), Some("svc-tenant"));

    let service = Service::new();
    let (len, record) = capture_sync(|| service.by_ref().len());
    assert_eq!(len, 10);
    assert_eq!(record.operation, "by_ref");
    assert_eq!(record.tenant_id.as_deref(), Some("svc-tenant"));

    let mut service = Service::new();
    let (calls, record) = capture_sync(|| service.by_mut());
    assert_eq!((calls, service.calls), (1, 1));
    assert_eq!(record.operation, "by_mut");

    let (calls, record) = capture_sync(|| Box::new(Service::new()).boxed());
    assert_eq!(calls, 0);
    assert_eq!(record.operation, "boxed_self");
    assert_eq!(record.tenant_id.as_deref(), Some("svc-tenant"));

    let mut service = Service::new();
    let (added, record) = capture_sync(|| Pin::new(&mut service).pinned());
    assert_eq!((added, service.calls), (10, 10));
    assert_eq!(record.operation, "pinned_self");

    let mut service = Service::new();
    let (calls, record) = capture_async(service.async_method(5));
    assert_eq!(calls, 5);
    assert_eq!(record.operation, "async_method");
    assert_eq!(record.tenant_id.as_deref(), Some("svc-tenant"));
}

// ---------------------------------------------------------------- traits

pub(crate) trait Greeter {
    fn greet(&self, name: &str) -> String;
    fn shout(&self, name: &str) -> impl Future<Output = String> + Send;
    async fn whisper(&self, name: &str) -> String;
}

pub(crate) struct English;

impl Greeter for English {
    #[track_usage(operation = "greet", fields(name = name))]
    fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }

    #[track_usage(operation = "shout")]
    async fn shout(&self, name: &str) -> String {
        tokio::task::yield_now().await;
        format!("HELLO {}", name.to_uppercase())
    }

    #[track_usage(operation = "whisper")]
    async fn whisper(&self, name: &str) -> String {
        format!("hello {name}...")
    }
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[test]
fn trait_impls_and_native_async_fn_in_traits() {
    let (greeting, record) = capture_sync(|| English.greet("ada"));
    assert_eq!(greeting, "hello ada");
    assert_eq!(record.operation, "greet");
    assert_eq!(record.attributes["name"], "ada");

    let (shout, record) = capture_async(assert_send(English.shout("ada")));
    assert_eq!(shout, "HELLO ADA");
    assert_eq!(
        (record.operation.as_ref(), record.outcome),
        ("shout", Outcome::Success)
    );

    let (whisper, record) = capture_async(English.whisper("ada"));
    assert_eq!(whisper, "hello ada...");
    assert_eq!(record.operation, "whisper");
}

#[async_trait::async_trait]
pub(crate) trait Tool {
    async fn call(&self, input: u32) -> Result<u32, AppError>;
    async fn name(&self) -> String;
}

pub(crate) struct Doubler {
    tenant: &'static str,
}

#[async_trait::async_trait]
impl Tool for Doubler {
    #[track_usage(operation = "tool.double", tenant = self.tenant)]
    async fn call(&self, input: u32) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        if input == 0 {
            return Err(AppError("zero"));
        }
        Ok(input * 2)
    }

    async fn name(&self) -> String {
        "doubler".into()
    }
}

pub(crate) struct Tripler;

#[track_usage(tenant = "impl-tenant")]
#[async_trait::async_trait]
impl Tool for Tripler {
    async fn call(&self, input: u32) -> Result<u32, AppError> {
        Ok(input * 3)
    }

    #[track_usage(skip)]
    async fn name(&self) -> String {
        "tripler".into()
    }
}

#[test]
fn async_trait_methods_in_either_order() {
    let doubler = Doubler { tenant: "t-1" };
    let (value, record) = capture_async(doubler.call(4));
    assert_eq!(value, Ok(8));
    assert_eq!(record.operation, "tool.double");
    assert_eq!(record.tenant_id.as_deref(), Some("t-1"));
    assert_eq!(record.outcome, Outcome::Success);

    let (value, record) = capture_async(doubler.call(0));
    assert_eq!(value, Err(AppError("zero")));
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.error_message.as_deref(), Some("zero"));

    let tool: Box<dyn Tool + Send + Sync> = Box::new(Tripler);
    let (value, record) = capture_async(tool.call(2));
    assert_eq!(value, Ok(6));
    assert_eq!(record.operation, "call");
    assert_eq!(record.function, "shapes::Tripler::call");
    assert_eq!(record.tenant_id.as_deref(), Some("impl-tenant"));

    let capture = Capture::new();
    let name = runtime().block_on(capture.run_async(tool.name()));
    assert_eq!(name, "tripler");
    assert!(capture.records().is_empty(), "skipped method was tracked");
}

// ---------------------------------------------------------------- futures returned by plain fns

#[track_usage(operation = "impl_future")]
fn returns_impl_future(delay_ms: u64) -> impl Future<Output = Result<u64, AppError>> + Send {
    async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Ok(delay_ms)
    }
}

#[track_usage(operation = "boxed_future", user = user)]
fn returns_boxed_future<'a>(
    user: &'a str,
    delay_ms: u64,
) -> Pin<Box<dyn Future<Output = Result<&'a str, AppError>> + Send + 'a>> {
    if delay_ms == 0 {
        return Box::pin(async { Err(AppError("no delay")) });
    }
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Ok(user)
    })
}

#[track_usage(operation = "box_future_alias")]
fn returns_box_future_alias(n: u32) -> futures::future::BoxFuture<'static, u32> {
    Box::pin(async move { n + 1 })
}

/// Builds the future, waits, then polls it: the record must time the run only.
fn run_later<F: Future>(
    build: impl FnOnce() -> F,
) -> (F::Output, UsageRecord, chrono::DateTime<chrono::Utc>) {
    let capture = Capture::new();
    let runtime = runtime();
    let future = capture.run(build);
    std::thread::sleep(Duration::from_millis(50));
    let polled_at = chrono::Utc::now();
    let value = runtime.block_on(capture.run_async(future));
    (value, one(&capture), polled_at)
}

#[test]
fn returned_futures_are_timed_from_first_poll() {
    let (value, record, polled_at) = run_later(|| returns_impl_future(20));
    assert_eq!(value, Ok(20));
    assert_eq!(
        (record.operation.as_ref(), record.outcome),
        ("impl_future", Outcome::Success)
    );
    assert!(
        record.duration >= Duration::from_millis(20),
        "{:?}",
        record.duration
    );
    // Construction happened 50 ms before the first poll; the start is the poll.
    assert!(
        record.started_at >= polled_at - chrono::Duration::milliseconds(10),
        "started {} but first polled {}",
        record.started_at,
        polled_at
    );

    let (value, record, polled_at) = run_later(|| returns_boxed_future("user-9", 20));
    assert_eq!(value, Ok("user-9"));
    assert_eq!(record.operation, "boxed_future");
    assert_eq!(
        record.user_id,
        Some(Uuid::new_v5(
            &usage_runtime::tracker::DEFAULT_ID_NAMESPACE,
            b"user-9"
        ))
    );
    assert!(record.duration >= Duration::from_millis(20));
    assert!(record.started_at >= polled_at - chrono::Duration::milliseconds(10));

    let (value, record) = capture_async(returns_boxed_future("u", 0));
    assert_eq!(value, Err(AppError("no delay")));
    assert_eq!(record.outcome, Outcome::Error);

    let (value, record) = capture_async(returns_box_future_alias(1));
    assert_eq!(value, 2);
    assert_eq!(record.operation, "box_future_alias");
}

// ---------------------------------------------------------------- generics and signatures

#[track_usage(operation = "generic", fields(len = items.len()))]
fn generic<'a, T, const N: usize>(items: &'a [T; N], pick: usize) -> Option<&'a T>
where
    T: Clone + std::fmt::Debug,
{
    items.get(pick)
}

#[track_usage(operation = "impl_args")]
fn impl_trait_args(values: impl IntoIterator<Item = u32>) -> impl Iterator<Item = u32> {
    values.into_iter().map(|v| v + 1)
}

#[track_usage(operation = "result_impl_iter")]
fn result_impl_iterator(limit: u32) -> Result<impl Iterator<Item = u32>, AppError> {
    let limit: u32 = if limit > 100 {
        Err(AppError("too many"))?
    } else {
        limit
    };
    Ok(0..limit)
}

#[track_usage(operation = "destructured", tenant = org, fields(x = x))]
fn destructured((x, y): (i32, i32), Wrapper { org, .. }: Wrapper) -> i32 {
    let _ = org;
    x + y
}

pub(crate) struct Wrapper {
    org: String,
    #[allow(dead_code)]
    extra: u8,
}

#[track_usage(operation = "unsafe_fn")]
unsafe fn unsafe_fn(ptr: *const u32) -> u32 {
    unsafe { *ptr }
}

#[track_usage(operation = "async_unsafe_fn")]
async unsafe fn async_unsafe_fn(ptr: *const u32) -> u32 {
    unsafe { *ptr + 1 }
}

#[test]
fn generics_lifetimes_const_generics_and_where_clauses() {
    let items = [1u8, 2, 3];
    let (picked, record) = capture_sync(|| generic(&items, 1).copied());
    assert_eq!(picked, Some(2));
    assert_eq!(record.operation, "generic");
    assert_eq!(record.attributes["len"], 3);
}

#[test]
fn impl_trait_in_arguments_and_returns() {
    let (values, record) = capture_sync(|| impl_trait_args(vec![1, 2]).collect::<Vec<_>>());
    assert_eq!(values, [2, 3]);
    assert_eq!(record.operation, "impl_args");

    let (values, record) = capture_sync(|| result_impl_iterator(3).map(|it| it.sum::<u32>()));
    assert_eq!(values, Ok(3));
    assert_eq!(record.outcome, Outcome::Success);

    let (values, record) = capture_sync(|| result_impl_iterator(101).map(|it| it.count()));
    assert_eq!(values, Err(AppError("too many")));
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.error_type.as_deref(), Some("shapes::AppError"));
}

#[test]
fn destructured_arguments() {
    let wrapper = Wrapper {
        org: "org-d".into(),
        extra: 0,
    };
    let (sum, record) = capture_sync(|| destructured((2, 3), wrapper));
    assert_eq!(sum, 5);
    assert_eq!(record.tenant_id.as_deref(), Some("org-d"));
    assert_eq!(record.attributes["x"], 2);
}

#[test]
fn unsafe_fns() {
    let value = 41u32;
    let (read, record) = capture_sync(|| unsafe { unsafe_fn(&value) });
    assert_eq!(read, 41);
    assert_eq!(record.operation, "unsafe_fn");

    let (read, record) = capture_async(unsafe { async_unsafe_fn(&value) });
    assert_eq!(read, 42);
    assert_eq!(record.operation, "async_unsafe_fn");
}

// ---------------------------------------------------------------- control flow and hygiene

#[track_usage(operation = "early")]
fn early_return(n: i32) -> Result<i32, AppError> {
    if n < 0 {
        return Err(AppError("negative"));
    }
    if n == 0 {
        return Ok(0);
    }
    let parsed: i32 = "x".parse().or(Err(AppError("parse")))?;
    Ok(parsed)
}

/// Documented, with an inner attribute that must survive: without it, the crate-level
/// `deny(unused_variables)` would reject `unused`.
#[track_usage(operation = "inner_attrs")]
fn inner_attributes() -> u8 {
    #![allow(unused_variables)]
    let unused = 5;
    7
}

mod shadowing {
    use super::*;

    /// A local module named like the runtime crate: generated paths are absolute.
    #[allow(dead_code)]
    mod usage_runtime {
        pub(crate) struct CallGuard;
        pub(crate) mod __private {}
    }

    pub(crate) mod other {
        #[allow(dead_code)]
        #[derive(Debug)]
        pub(crate) struct Output;
    }

    #[derive(Debug, PartialEq)]
    pub(crate) struct Output(pub(crate) u8);

    #[track_usage(operation = "shadowed")]
    pub(crate) fn shadowed_return() -> Output {
        // This `use` shadows the return type's name inside the body only.
        #[allow(unused_imports)]
        use other::Output;
        self::Output(3)
    }
}

#[test]
fn early_return_and_question_mark() {
    for (input, expected, outcome) in [
        (-1, Err(AppError("negative")), Outcome::Error),
        (0, Ok(0), Outcome::Success),
        (1, Err(AppError("parse")), Outcome::Error),
    ] {
        let (value, record) = capture_sync(|| early_return(input));
        assert_eq!(value, expected);
        assert_eq!(record.outcome, outcome);
    }
}

#[test]
fn inner_attributes_shadowed_crate_and_shadowed_return_type() {
    let (value, record) = capture_sync(inner_attributes);
    assert_eq!(value, 7);
    assert_eq!(record.operation, "inner_attrs");

    let (value, record) = capture_sync(shadowing::shadowed_return);
    assert_eq!(value, shadowing::Output(3));
    assert_eq!(record.operation, "shadowed");
    assert_eq!(record.function, "shapes::shadowing::shadowed_return");
}

// ---------------------------------------------------------------- impl blocks

pub(crate) struct Repo {
    org: &'static str,
}

#[track_usage(tenant = self.org)]
impl Repo {
    fn find(&self, id: u32) -> Option<u32> {
        (id < 10).then_some(id)
    }

    #[track_usage(operation = "repo.save", fields(id = id))]
    fn save(&mut self, id: u32) -> Result<(), AppError> {
        if id == 0 {
            Err(AppError("bad id"))
        } else {
            Ok(())
        }
    }

    #[track_usage(skip)]
    fn helper(&self) -> &'static str {
        self.org
    }

    async fn load(&self) -> u32 {
        1
    }
}

#[test]
fn impl_block_tracks_every_method_but_skipped_ones() {
    let mut repo = Repo { org: "org-r" };
    let capture = Capture::new();
    capture.run(|| {
        assert_eq!(repo.find(3), Some(3));
        repo.save(0).unwrap_err();
        assert_eq!(repo.helper(), "org-r");
    });
    runtime().block_on(capture.run_async(async { repo.load().await }));
    let records = capture.records();
    let summary = tests::summary(&records);
    assert_eq!(
        summary,
        [
            ("find", Outcome::Success, Some("org-r")),
            ("repo.save", Outcome::Error, Some("org-r")),
            ("load", Outcome::Success, Some("org-r")),
        ]
    );
    assert_eq!(records[1].attributes["id"], 0);
    assert_eq!(records[0].function, "shapes::Repo::find");
}

// ---------------------------------------------------------------- coercions and borrowing

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

type DynResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[track_usage(operation = "coerce_sync")]
fn coerce_sync(fail: u8) -> DynResult<u8> {
    if fail == 1 {
        return Err(Box::new(Boom));
    }
    let parsed: u8 =
        "x".parse()
            .map_err(|_| Boom)
            .or_else(|e| if fail == 2 { Err(e) } else { Ok(0) })?;
    Ok(parsed)
}

#[track_usage(operation = "coerce_async")]
async fn coerce_async(fail: u8) -> DynResult<u8> {
    if fail == 1 {
        return Err(Box::new(Boom));
    }
    tokio::task::yield_now().await;
    let value: u8 = "7".parse()?;
    Ok(value)
}

#[test]
fn returns_coerce_to_the_declared_type() {
    let (value, record) = capture_sync(|| coerce_sync(1));
    assert_eq!(value.unwrap_err().to_string(), "boom");
    assert_eq!(record.outcome, Outcome::Error);
    let (value, _) = capture_sync(|| coerce_sync(2));
    assert!(value.is_err());
    let (value, record) = capture_async(coerce_async(1));
    assert_eq!(value.unwrap_err().to_string(), "boom");
    assert_eq!(record.error_message.as_deref(), Some("boom"));
    let (value, record) = capture_async(coerce_async(0));
    assert_eq!(value.unwrap(), 7);
    assert_eq!(record.outcome, Outcome::Success);
}

struct Connection {
    rows: Vec<u32>,
}

impl Connection {
    #[track_usage(operation = "next_row")]
    fn next_row(&mut self) -> impl Future<Output = Option<u32>> + '_ {
        async move { self.rows.pop() }
    }

    #[track_usage(operation = "unpin_future")]
    fn unpin_future(&self) -> impl Future<Output = usize> + Unpin + '_ {
        std::future::ready(self.rows.len())
    }
}

#[test]
fn returned_futures_may_borrow_mut_self_and_stay_unpin() {
    let mut connection = Connection { rows: vec![1, 2] };
    let (row, record) = capture_async(connection.next_row());
    assert_eq!(row, Some(2));
    assert_eq!(record.operation, "next_row");
    fn assert_unpin<T: Unpin>(value: T) -> T {
        value
    }
    let (len, record) = capture_async(assert_unpin(connection.unpin_future()));
    assert_eq!(len, 1);
    assert_eq!(record.operation, "unpin_future");
}

#[track_usage(operation = "never_returns")]
fn never_returns(message: &str) -> ! {
    panic!("{message}")
}

#[test]
fn a_fn_returning_never_records_its_panic() {
    let capture = Capture::new();
    let caught = capture.run(|| std::panic::catch_unwind(|| never_returns("gone")));
    assert!(caught.is_err());
    let record = one(&capture);
    assert_eq!(
        (record.operation.as_ref(), record.outcome),
        ("never_returns", Outcome::Panic)
    );
}
