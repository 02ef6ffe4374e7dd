//! Capturing the records of tracked calls inside a test, without installing the process-wide
//! tracker (so tests running in parallel never clash). Feature `testing`.
//!
//! ```
//! use usage_runtime::{testing::Capture, track_usage, Outcome};
//!
//! #[track_usage(operation = "greet", tenant = "acme")]
//! fn greet(name: &str) -> String {
//!     format!("hello {name}")
//! }
//!
//! let capture = Capture::new();
//! capture.run(|| greet("ada"));
//! let records = capture.records();
//! assert_eq!(records[0].operation, "greet");
//! assert_eq!(records[0].outcome, Outcome::Success);
//! assert_eq!(records[0].tenant_id.as_deref(), Some("acme"));
//! ```
//!
//! A call is captured when it *starts* inside [`Capture::run`] or a poll of
//! [`Capture::run_async`]'s future on the same thread; calls on threads or tasks spawned from
//! there go to the installed tracker as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use uuid::Uuid;

use crate::call::capture::{Hook, Scope};
use crate::call::raw::RawCall;
use crate::pipeline::record::{Anchor, RecordContext};
use crate::record::UsageRecord;

#[derive(Debug)]
struct CaptureBuffer {
    context: RecordContext,
    records: Mutex<Vec<UsageRecord>>,
}

impl Hook for CaptureBuffer {
    fn push(&self, call: RawCall) {
        let record = call.into_record(&self.context, &Anchor::now());
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }
}

/// Collects the records of tracked calls made inside [`run`](Capture::run) or
/// [`run_async`](Capture::run_async). Records get the service `"test"`, the instance `"test"` and
/// the default id namespace.
#[derive(Debug, Clone)]
pub struct Capture {
    buffer: Arc<CaptureBuffer>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::with_namespace(crate::call::dimension::DEFAULT_ID_NAMESPACE)
    }

    /// An empty capture mapping non-UUID ids in `namespace`.
    pub fn with_namespace(namespace: Uuid) -> Self {
        Capture {
            buffer: Arc::new(CaptureBuffer {
                context: RecordContext {
                    service: "test".into(),
                    instance: "test".into(),
                    namespace,
                    pricing: None,
                },
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Prices the captured records with `pricing`. Call before capturing anything.
    pub fn with_pricing(self, pricing: crate::Pricing) -> Self {
        let context = RecordContext {
            pricing: Some(Arc::new(pricing)),
            ..self.buffer.context.clone()
        };
        Capture {
            buffer: Arc::new(CaptureBuffer {
                context,
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f`, capturing the tracked calls it makes on this thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _scope = Scope::enter(self.buffer.clone());
        f()
    }

    /// Wraps `future`: tracked calls it starts while being polled are captured, including ones
    /// whose futures it drops (cancelled).
    pub fn run_async<F: Future>(&self, future: F) -> Captured<F> {
        Captured {
            buffer: Arc::clone(&self.buffer),
            future: Some(future),
        }
    }

    /// The records captured so far, in the order the calls finished.
    pub fn records(&self) -> Vec<UsageRecord> {
        self.buffer
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`Capture::run_async`].
    #[derive(Debug)]
    pub struct Captured<F> {
        buffer: Arc<CaptureBuffer>,
        #[pin]
        future: Option<F>,
    }

    impl<F> PinnedDrop for Captured<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _scope = Scope::enter(this.buffer.clone());
            this.future.set(None);
        }
    }
}

impl<F: Future> Future for Captured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let _scope = Scope::enter(this.buffer.clone());
        let poll = match this.future.as_mut().as_pin_mut() {
            Some(future) => future.poll(cx),
            None => panic!("`Captured` polled after completion"),
        };
        if poll.is_ready() {
            this.future.set(None);
        }
        poll
    }
}
