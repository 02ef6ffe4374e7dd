//! `#[track_usage(stream)]`: a returned stream timed from its first poll until it ends (or is
//! dropped: `Cancelled`), summing the token usage of its items; an error item makes the outcome
//! `Error`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::call::catalog::Operation;
use crate::call::dimension::Dimensions;
use crate::call::guard::CallGuard;

pin_project_lite::pin_project! {
    /// A stream whose run is one tracked call.
    #[doc(hidden)]
    #[derive(Debug)]
    pub struct TrackedStream<S, F> {
        op: &'static Operation,
        dims: Option<Dimensions>,
        guard: Option<CallGuard>,
        ended: bool,
        observe: F,
        #[pin]
        stream: S,
    }
}

impl<S, F> TrackedStream<S, F>
where
    S: Stream,
    F: FnMut(&S::Item, &mut CallGuard),
{
    /// Tracks `stream`; `observe` reads each item into the call.
    pub fn new(op: &'static Operation, dims: Option<Dimensions>, stream: S, observe: F) -> Self {
        TrackedStream {
            op,
            dims,
            guard: None,
            ended: false,
            observe,
            stream,
        }
    }
}

impl<S, F> Stream for TrackedStream<S, F>
where
    S: Stream,
    F: FnMut(&S::Item, &mut CallGuard),
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        if *this.ended {
            return this.stream.poll_next(cx);
        }
        let guard = this
            .guard
            .get_or_insert_with(|| CallGuard::start(this.op, this.dims.take()));
        let mut stream = this.stream;
        let poll = guard.poll_in_scope(|| stream.as_mut().poll_next(cx));
        match &poll {
            Poll::Ready(Some(item)) => {
                let observe = this.observe;
                guard.own(|guard| observe(item, guard));
            }
            Poll::Ready(None) => {
                *this.ended = true;
                if let Some(guard) = this.guard.take() {
                    guard.finish_stream();
                }
            }
            Poll::Pending => {}
        }
        poll
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}
