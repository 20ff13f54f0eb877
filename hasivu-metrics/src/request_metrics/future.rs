use std::{
    future::Future,
    io::Write,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Method, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{
    CacheHit, ColdStart, MetricsBody,
    hooks::x_cache,
    state::{End, State},
};

/// One request on its way through the layer: created at `call`, moved into
/// the body with the response, recorded once at the end. Dropped before
/// that, it records the request as aborted.
pub(crate) struct Tracker {
    state: Arc<State>,
    start: u64,
    route: u32,
    method: u8,
    head: bool,
    cold: bool,
    done: bool,
    status: Option<u16>,
    cache_hit: Option<bool>,
    allocated: u64,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("route", &self.state.routes.get(self.route).name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    pub(crate) fn new(
        state: Arc<State>,
        start: u64,
        route: u32,
        method: usize,
        head: bool,
        cold: bool,
    ) -> Self {
        Self {
            state,
            start,
            route,
            method: method as u8,
            head,
            cold,
            done: false,
            status: None,
            cache_hit: None,
            allocated: 0,
        }
    }

    /// Adds the bytes this thread allocated since `before` (a reading of
    /// the tracking allocator's counter).
    #[inline]
    pub(crate) fn allocated_since(&mut self, before: u64) {
        self.allocated = self
            .allocated
            .wrapping_add(crate::alloc_counter().wrapping_sub(before));
    }

    /// Notes the response head and sets the layer's headers. `true` when
    /// the response has no body to wait for.
    fn headers<B: Body, C: CacheHit>(&mut self, response: &mut Response<B>, hook: &C) -> bool {
        let state = &*self.state;
        let now = state.clock.now();
        let elapsed = now.saturating_sub(self.start);
        let status = response.status();
        self.status = Some(status.as_u16());
        self.cache_hit = hook
            .cache_hit(response.extensions())
            .or_else(|| x_cache(response.headers()));
        if state.response_time_header {
            response
                .headers_mut()
                .insert("x-response-time", millis(elapsed));
        }
        if state.memory_header && crate::alloc_tracking_active() {
            response
                .headers_mut()
                .insert("x-memory-used", HeaderValue::from(self.allocated));
        }
        if self.cold {
            response.extensions_mut().insert(ColdStart);
        }
        state.headers_sent(self.route, self.method as usize, status.as_u16(), elapsed);
        self.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || response.body().is_end_stream()
    }

    /// Records the request; later calls (and the drop) do nothing.
    pub(crate) fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let state = &*self.state;
        let now = state.clock.now();
        state.finish(
            now,
            self.route,
            self.method as usize,
            now.saturating_sub(self.start),
            self.status,
            end,
            self.cache_hit,
            self.allocated,
        );
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish(End::Aborted);
    }
}

/// `12.345ms`: milliseconds with microseconds.
fn millis(nanos: u64) -> HeaderValue {
    let micros = nanos / 1_000;
    let mut buffer = [0u8; 32];
    let mut cursor = &mut buffer[..];
    let _ = write!(cursor, "{}.{:03}ms", micros / 1_000, micros % 1_000);
    let written = 32 - cursor.len();
    HeaderValue::from_bytes(&buffer[..written]).unwrap_or(HeaderValue::from_static("0ms"))
}

pin_project! {
    /// The response future of [`Metrics`](super::Metrics): passes the
    /// response on with its body wrapped in a [`MetricsBody`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        tracker: Option<Tracker>,
        hook: C,
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, tracker: Tracker, hook: C) -> Self {
        Self {
            inner,
            tracker: Some(tracker),
            hook,
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    C: CacheHit,
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let before = crate::alloc_counter();
        let poll = this.inner.poll(cx);
        if let Some(tracker) = this.tracker.as_mut() {
            tracker.allocated_since(before);
        }
        let result = ready!(poll);
        let Some(mut tracker) = this.tracker.take() else {
            // Polled again after completion: pass the inner answer on.
            return Poll::Ready(result.map(|r| r.map(|b| MetricsBody::new(b, None))));
        };
        Poll::Ready(match result {
            Ok(mut response) => {
                let tracker = if tracker.headers(&mut response, this.hook) {
                    tracker.finish(End::Completed);
                    None
                } else {
                    Some(tracker)
                };
                Ok(response.map(|body| MetricsBody::new(body, tracker)))
            }
            Err(e) => {
                tracker.finish(End::ServiceError);
                Err(e)
            }
        })
    }
}

/// Whether a request method never has a response body.
pub(crate) fn is_head(method: &Method) -> bool {
    method == Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_time_is_milliseconds_with_microseconds() {
        assert_eq!(millis(0), "0.000ms");
        assert_eq!(millis(1_234_567), "1.234ms");
        assert_eq!(millis(50_000_000), "50.000ms");
        assert_eq!(millis(12_000_999_999), "12000.999ms");
    }
}
