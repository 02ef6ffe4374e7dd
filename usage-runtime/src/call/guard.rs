//! The hot path: a call guard started at entry and finished with the call's verdict.
//!
//! Starting reads the monotonic clock and keeps the declared dimensions; finishing reads the clock
//! again and pushes one [`RawCall`] to the tracker's lock-free queue. A guard dropped unfinished
//! records `Panic` (its own code unwound) or `Cancelled` (its future was dropped, also while some
//! other panic unwinds). Nothing here does
//! I/O, reads the wall clock, mints an id or allocates for a call without dimensions or errors.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use crate::call::catalog::Operation;
use crate::call::classify::Classification;
use crate::call::dimension::Dimensions;
use crate::call::raw::{ErrorDetails, Extras, RawCall};
use crate::call::tokens::{Slot, Tally, TallyScope, TokenUsage};
use crate::record::Outcome;

/// The byte limit of recorded error text, set by the installed tracker.
pub(crate) static ERROR_MESSAGE_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_ERROR_MESSAGE_LIMIT);

/// Bytes of error text kept per record.
pub const DEFAULT_ERROR_MESSAGE_LIMIT: usize = 1024;

/// Times one call of a tracked fn.
#[doc(hidden)]
#[derive(Debug)]
pub struct CallGuard {
    op: &'static Operation,
    start: quanta::Instant,
    /// An interned tenant, apart from the other dimensions: a call with only a tenant (the
    /// common case) allocates nothing.
    tenant: Option<&'static str>,
    dims: Option<Box<Dimensions>>,
    /// Tokens and model recorded by the body (`record_tokens`, `set_model`).
    tally: Slot,
    /// The first error item of a tracked stream.
    stream_error: Option<Box<ErrorDetails>>,
    panicked: bool,
    /// Whether a future, stream or response body owns it between polls, and may be dropped by
    /// its owner (also while some other panic unwinds): a drop then is a cancellation unless a
    /// poll of this call's own panicked. Otherwise only this call's own code runs around it, so
    /// a drop while unwinding is this call's panic.
    cancellable: bool,
    finished: bool,
    #[cfg(feature = "testing")]
    capture: Option<std::sync::Arc<dyn super::capture::Hook>>,
}

impl CallGuard {
    /// Starts timing a call.
    #[inline]
    pub fn start(op: &'static Operation, dims: Option<Dimensions>) -> Self {
        let (tenant, dims) = split_tenant(dims);
        CallGuard {
            op,
            tenant,
            dims,
            tally: None,
            stream_error: None,
            panicked: false,
            cancellable: false,
            finished: false,
            #[cfg(feature = "testing")]
            capture: super::capture::current(),
            start: quanta::Instant::now(),
        }
    }

    /// Runs a synchronous body with this call innermost for `record_tokens` and `set_model`; a
    /// body that unwinds marks the call as panicked.
    #[inline]
    pub fn run<R>(&mut self, body: impl FnOnce() -> R) -> R {
        let mut sentinel = PanicSentinel {
            panicked: &mut self.panicked,
            armed: true,
        };
        let output = {
            let _scope = TallyScope::enter(&mut self.tally);
            body()
        };
        sentinel.armed = false;
        output
    }

    /// Ends the call with the verdict on its returned value and the usage it reports.
    #[inline]
    pub fn finish(mut self, verdict: Classification<'_>, usage: TokenUsage<'_>) {
        let end = quanta::Instant::now();
        self.finished = true;
        if !usage.is_empty() {
            self.add_usage(usage);
        }
        let (outcome, error) = match verdict {
            Classification::Success => (Outcome::Success, None),
            Classification::Error {
                error_type,
                message,
            } => (
                Outcome::Error,
                Some(self.error_details(error_type, message)),
            ),
        };
        self.deliver(end, outcome, error);
    }

    /// Takes in one item of a tracked stream: its usage is added; the first error item makes the
    /// stream's outcome `Error`.
    pub fn observe(&mut self, verdict: Classification<'_>, usage: TokenUsage<'_>) {
        if !usage.is_empty() {
            self.add_usage(usage);
        }
        if let Classification::Error {
            error_type,
            message,
        } = verdict
        {
            if self.stream_error.is_none() {
                self.stream_error = Some(self.error_details(error_type, message));
            }
        }
    }

    /// Ends a tracked stream that ran to its end.
    pub(crate) fn finish_stream(mut self) {
        let end = quanta::Instant::now();
        self.finished = true;
        let error = self.stream_error.take();
        let outcome = if error.is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        self.deliver(end, outcome, error);
    }

    /// Polls `poll` with this call innermost for in-body recording; a poll that unwinds marks the
    /// call as panicked.
    pub(crate) fn poll_in_scope<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        let output = self.run(poll);
        self.cancellable = true;
        output
    }

    /// Runs `step` (this call's own code between polls, such as classifying an item) so that a
    /// panic in it is this call's panic.
    pub(crate) fn own<T>(&mut self, step: impl FnOnce(&mut Self) -> T) -> T {
        let cancellable = std::mem::replace(&mut self.cancellable, false);
        let output = step(self);
        self.cancellable = cancellable;
        output
    }

    /// The operation this call is of.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn operation(&self) -> &'static Operation {
        self.op
    }

    /// Replaces the call's dimensions (for callers that learn them only as the call ends).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn set_dimensions(&mut self, dims: Dimensions) {
        (self.tenant, self.dims) = split_tenant(Some(dims));
    }

    /// Whether a poll of this call's future or body unwound.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn has_panicked(&self) -> bool {
        self.panicked
    }

    /// Adds the returned value's usage to what the body recorded; a model the body set wins.
    fn add_usage(&mut self, usage: TokenUsage<'_>) {
        let usage = usage.into_owned();
        match &mut self.tally {
            Some(tally) => tally.merge(usage),
            // Nothing recorded in the body (the usual case): the usage as it is, unmerged.
            None => {
                let mut tally = crate::call::tokens::spare_tally();
                *tally = usage;
                self.tally = Some(tally);
            }
        }
    }

    #[cold]
    fn error_details(
        &self,
        error_type: &str,
        message: Option<&dyn fmt::Display>,
    ) -> Box<ErrorDetails> {
        let message = message
            .filter(|_| self.op.captures_error_message())
            .map(|message| limited_text(message, ERROR_MESSAGE_LIMIT.load(Ordering::Relaxed)));
        Box::new(ErrorDetails {
            error_type: error_type.to_owned(),
            message,
        })
    }

    fn deliver(
        &mut self,
        end: quanta::Instant,
        outcome: Outcome,
        error: Option<Box<ErrorDetails>>,
    ) {
        let call = RawCall {
            op: self.op,
            start: self.start,
            end,
            outcome,
            tenant: self.tenant.take(),
            tokens: self.take_tokens(),
            extras: Extras::of(error, self.dims.take()),
        };
        #[cfg(feature = "testing")]
        if let Some(capture) = self.capture.take() {
            capture.push(call);
            return;
        }
        super::handoff::submit(call);
    }
}

/// An interned tenant travels apart from the other dimensions, which are boxed only if any.
fn split_tenant(dims: Option<Dimensions>) -> (Option<&'static str>, Option<Box<Dimensions>>) {
    match dims {
        Some(mut dims) => {
            let tenant = match dims.tenant.take() {
                Some(Cow::Borrowed(tenant)) => Some(tenant),
                owned => {
                    dims.tenant = owned;
                    None
                }
            };
            (tenant, (!dims.is_empty()).then(|| Box::new(dims)))
        }
        None => (None, None),
    }
}

impl CallGuard {
    fn take_tokens(&mut self) -> Option<Box<Tally>> {
        self.tally.take().filter(|tally| !tally.is_empty())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            // This call's own panic: caught where its body runs or its future is polled, or a
            // drop while unwinding when only its own code was running. A future dropped while
            // some other panic unwinds was cancelled.
            let outcome = if self.panicked || (!self.cancellable && std::thread::panicking()) {
                Outcome::Panic
            } else {
                Outcome::Cancelled
            };
            self.deliver(quanta::Instant::now(), outcome, None);
        }
    }
}

pin_project_lite::pin_project! {
    /// Polls a tracked fn's future while owning its guard, so a panic during a poll is recorded
    /// as `Panic` even though the future itself is dropped later, outside the unwinding.
    #[doc(hidden)]
    #[derive(Debug)]
    pub struct Guarded<F> {
        guard: Option<CallGuard>,
        #[pin]
        future: F,
    }
}

impl<F> Guarded<F> {
    /// Wraps `future`, which the guard times.
    pub fn new(guard: CallGuard, future: F) -> Self {
        Guarded {
            guard: Some(guard),
            future,
        }
    }
}

/// Marks the guard as panicked if a poll unwinds; disarmed when the poll returns.
struct PanicSentinel<'a> {
    panicked: &'a mut bool,
    armed: bool,
}

impl Drop for PanicSentinel<'_> {
    fn drop(&mut self) {
        if self.armed {
            *self.panicked = true;
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "`Guarded` polled after completion";

impl<F: Future> Future for Guarded<F> {
    type Output = (CallGuard, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guard = this.guard.as_mut().expect(POLLED_AFTER_COMPLETION);
        // This call is innermost for in-body recording during the poll, on whichever thread.
        let poll = guard.poll_in_scope(|| this.future.poll(cx));
        match poll {
            Poll::Ready(output) => {
                let mut guard = this.guard.take().expect("guard present until completion");
                // What runs next (classifying the output) is this call's own code.
                guard.cancellable = false;
                Poll::Ready((guard, output))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An unreachable `return` of type `$ty`, first in a tracked body, so the closure or `async` block
/// running the body takes the fn's declared return type before the body's own `return`s and `?`s
/// are checked (generated code only; the idea is tracing-attributes' "fake return edge").
#[doc(hidden)]
#[macro_export]
macro_rules! __usage_return_edge {
    ($ty:ty) => {
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let __usage_fake_return: $ty = loop {};
            return __usage_fake_return;
        }
    };
}

/// Calls `body` once to build a tracked fn's future or stream: a closure passed here is
/// `FnOnce`, so it may hand out borrows of what it captured by move (`&mut self` in a fn
/// returning a future that borrows it). The call is timed from the first poll; a panic while
/// building is recorded as the call's `Panic` (with `dims`, when they are known by then).
#[doc(hidden)]
#[inline]
pub fn call<R>(op: &'static Operation, dims: Option<&Dimensions>, body: impl FnOnce() -> R) -> R {
    struct Building<'a> {
        op: &'static Operation,
        dims: Option<&'a Dimensions>,
        armed: bool,
    }
    impl Drop for Building<'_> {
        fn drop(&mut self) {
            if self.armed {
                let mut guard = CallGuard::start(self.op, self.dims.cloned());
                guard.panicked = true; // dropped unfinished: recorded as this call's panic
            }
        }
    }
    let mut building = Building {
        op,
        dims,
        armed: true,
    };
    let output = body();
    building.armed = false;
    output
}

/// Formats `{:#}` of `message` into at most `limit` bytes; truncated text ends with `…`.
pub(crate) fn limited_text(message: &dyn fmt::Display, limit: usize) -> String {
    struct Limited {
        text: String,
        limit: usize,
        truncated: bool,
    }

    impl fmt::Write for Limited {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = self.limit - self.text.len();
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.truncated = true;
            // Stop formatting: the rest would be thrown away.
            Err(fmt::Error)
        }
    }

    const ELLIPSIS: &str = "…";
    let mut out = Limited {
        text: String::new(),
        limit,
        truncated: false,
    };
    let _ = write!(out, "{message:#}");
    // Below the marker's own size, the plain prefix is all that fits.
    if out.truncated && limit >= ELLIPSIS.len() {
        let mut end = (limit - ELLIPSIS.len()).min(out.text.len());
        while !out.text.is_char_boundary(end) {
            end -= 1;
        }
        out.text.truncate(end);
        out.text.push_str(ELLIPSIS);
    }
    out.text
}

#[cfg(test)]
mod tests {
    use super::limited_text;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(limited_text(&"boom", 1024), "boom");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker() {
        let text = "é".repeat(1000); // 2000 bytes
        let cut = limited_text(&text, 1024);
        assert!(cut.len() <= 1024, "{} bytes", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
        assert_eq!(limited_text(&"abcdef", 3), "…");
        assert_eq!(limited_text(&"abcdef", 2), "ab");
    }

    #[test]
    fn alternate_display_is_used() {
        struct Chain;
        impl std::fmt::Display for Chain {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if f.alternate() {
                    f.write_str("outer: inner")
                } else {
                    f.write_str("outer")
                }
            }
        }
        assert_eq!(limited_text(&Chain, 100), "outer: inner");
    }
}
