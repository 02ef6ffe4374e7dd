//! The expansion adds no warnings: every shape of tracked fn, with a single-expression body and
//! with statements, compiles here with all warnings denied (as users building with `-D warnings`
//! do). Each fn is also called, so the file checks what the tracked fns return.
#![deny(warnings)]
#![allow(missing_debug_implementations)]

use std::future::Future;
use std::pin::Pin;

use futures::stream::{BoxStream, Stream, StreamExt};
use usage_runtime::testing::Capture;
use usage_runtime::track_usage;

#[derive(Debug, PartialEq)]
pub struct AppError;

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app error")
    }
}

pub struct Req {
    pub tenant: String,
}

// Written on one line each: rustc lints braces around a single expression only when they sit
// on one line with it.
#[rustfmt::skip]
mod tracked {
    use super::*;

    #[track_usage]
    pub(crate) fn sync_expr(x: u64) -> u64 { x.wrapping_mul(3) }

    #[track_usage]
    pub(crate) fn sync_unit() {}

    #[track_usage]
    pub(crate) fn sync_result(x: u64) -> Result<u64, AppError> { if x == 0 { Err(AppError) } else { Ok(x) } }

    #[track_usage(tenant = req.tenant, fields(n = x))]
    pub(crate) fn sync_dims(req: &Req, x: u64) -> u64 { req.tenant.len() as u64 + x }

    #[track_usage]
    pub(crate) fn sync_statements(x: u64) -> Result<u64, AppError> { let y = sync_result(x)?; Ok(y + 1) }

    #[track_usage]
    pub(crate) async fn async_expr(x: u64) -> u64 { std::future::ready(x).await * 2 }

    #[track_usage(operation = "async_result", fields(n = x))]
    pub(crate) async fn async_result(x: u64) -> Result<u64, AppError> { Ok(x.rotate_left(1)) }

    #[track_usage]
    pub(crate) fn impl_future(x: u64) -> impl Future<Output = u64> { async move { x + 1 } }

    #[track_usage]
    pub(crate) fn boxed_future(x: u64) -> Pin<Box<dyn Future<Output = Result<u64, AppError>> + Send>> { Box::pin(async move { Ok(x) }) }

    #[track_usage(stream)]
    pub(crate) fn impl_stream(n: u64) -> impl Stream<Item = u64> { futures::stream::iter(0..n) }

    #[track_usage(stream)]
    pub(crate) fn boxed_stream(n: u64) -> BoxStream<'static, u64> { futures::stream::iter(0..n).boxed() }

    #[track_usage]
    pub(crate) fn never(message: &str) -> ! { panic!("{message}") }

    pub(crate) struct Service { pub(crate) tenant: String }

    #[track_usage(tenant = self.tenant)]
    impl Service {
        pub(crate) fn method(&self) -> usize { self.tenant.len() }

        pub(crate) async fn async_method(&self) -> usize { self.tenant.len() + 1 }

        #[track_usage(skip)]
        pub(crate) fn untracked(&self) -> usize { 0 }
    }
}

use tracked::*;

#[test]
fn tracked_fns_compile_without_warnings_and_return_their_values() {
    let capture = Capture::new();
    let req = Req {
        tenant: "acme".into(),
    };
    let service = Service {
        tenant: "svc".into(),
    };
    capture.run(|| {
        assert_eq!(sync_expr(2), 6);
        sync_unit();
        assert_eq!(sync_result(0), Err(AppError));
        assert_eq!(sync_dims(&req, 1), 5);
        assert_eq!(sync_statements(1), Ok(2));
        assert_eq!(service.method(), 3);
        assert_eq!(service.untracked(), 0);
        assert!(std::panic::catch_unwind(|| never("boom")).is_err());
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(capture.run_async(async {
        assert_eq!(async_expr(2).await, 4);
        assert_eq!(async_result(1).await, Ok(2));
        assert_eq!(impl_future(1).await, 2);
        assert_eq!(boxed_future(1).await, Ok(1));
        assert_eq!(impl_stream(3).collect::<Vec<_>>().await, [0, 1, 2]);
        assert_eq!(boxed_stream(2).collect::<Vec<_>>().await, [0, 1]);
        assert_eq!(service.async_method().await, 4);
    }));
    assert_eq!(capture.records().len(), 15);
}
