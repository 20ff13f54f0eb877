use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{future::Tracker, state::End};

pin_project! {
    /// The response body of [`Metrics`](super::Metrics): the inner body,
    /// unchanged; the request is recorded when it ends, fails or is
    /// dropped before its end (a client abort).
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        tracker: Option<Tracker>,
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl<B> MetricsBody<B> {
    pub(crate) fn new(inner: B, tracker: Option<Tracker>) -> Self {
        Self { inner, tracker }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let before = crate::alloc_counter();
        let poll = this.inner.as_mut().poll_frame(cx);
        if let Some(tracker) = this.tracker.as_mut() {
            tracker.allocated_since(before);
            let end = match &poll {
                Poll::Ready(None) => Some(End::Completed),
                Poll::Ready(Some(Err(_))) => Some(End::BodyError),
                // Servers stop polling once the body says it has ended.
                Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(End::Completed),
                _ => None,
            };
            if let Some(end) = end {
                tracker.finish(end);
                *this.tracker = None;
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
