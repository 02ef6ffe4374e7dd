//! The bodies of a tracked exchange: the response body, whose end ends the call, and the request
//! body, whose bytes are counted.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use super::{Ending, Failure, RequestState};

/// What `poll_frame` answers for a body `B`.
type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

pin_project_lite::pin_project! {
    /// A response body that ends the request's call when it has been sent (or dropped).
    #[derive(Debug)]
    pub struct TrackedBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) status: StatusCode,
        // The declared `content-length`: a server stops polling once that much was sent.
        pub(super) length: Option<u64>,
        pub(super) bytes: u64,
        // Nothing to send (HEAD, 204, 304, an empty body), so a server may drop it unpolled.
        pub(super) empty: bool,
        pub(super) call: Option<Ending>,
    }

    impl<B> PinnedDrop for TrackedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                let sent = *this.empty || this.length.is_some_and(|length| *this.bytes >= length);
                if sent && !call.guard.has_panicked() {
                    call.finish(Some(*this.status), *this.bytes, None);
                } else {
                    call.abandon(Some(*this.status), *this.bytes);
                }
            }
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<Self> {
        let mut this = self.project();
        let inner = this.inner.as_mut();
        // Producing the body is part of the call: in-body recording and panics count for it.
        let frame = ready!(match this.call.as_mut() {
            Some(call) => call.guard.poll_in_scope(|| inner.poll_frame(cx)),
            None => inner.poll_frame(cx),
        });
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                if this.inner.is_end_stream() {
                    if let Some(call) = this.call.take() {
                        call.finish(Some(*this.status), *this.bytes, None);
                    }
                }
            }
            Some(Err(error)) => {
                if let Some(call) = this.call.take() {
                    call.finish(
                        Some(*this.status),
                        *this.bytes,
                        Some(Failure {
                            error_type: "response body",
                            message: error,
                        }),
                    );
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    call.finish(Some(*this.status), *this.bytes, None);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the bytes read from it.
    #[derive(Debug)]
    pub struct CountedBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) request: Arc<RequestState>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<Self> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let bytes = data.remaining() as u64;
                this.request.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
