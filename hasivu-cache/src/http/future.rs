use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_util::future::BoxFuture;
use http::{Response, header::HeaderName};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{CacheBody, CacheStatus};

pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

pin_project! {
    /// The response future of [`CacheService`](super::CacheService).
    ///
    /// Requests the layer does not cache (other methods, unmatched routes)
    /// and requests it bypasses (credentials without a per-user key) run
    /// the service's own future unboxed. A cached route needs an async
    /// cache lookup before the service is called, or instead of it: that
    /// path runs as one boxed future.
    pub struct ResponseFuture<F, B, E>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E>
    where
        B: Body,
    {
        Passthrough { #[pin] future: F },
        Bypass { #[pin] future: F },
        Cached { future: BoxFuture<'static, Result<Response<CacheBody<B>>, E>> },
    }
}

impl<F, B: Body, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Bypass { .. } => "Bypass",
            Kind::Cached { .. } => "Cached",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn bypass(future: F) -> Self {
        Self {
            kind: Kind::Bypass { future },
        }
    }

    pub(crate) fn cached(future: BoxFuture<'static, Result<Response<CacheBody<B>>, E>>) -> Self {
        Self {
            kind: Kind::Cached { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(CacheBody::inner)))
            }
            KindProj::Bypass { future } => {
                let mut response = ready!(future.poll(cx))?.map(CacheBody::inner);
                mark(&mut response, CacheStatus::Bypass);
                Poll::Ready(Ok(response))
            }
            KindProj::Cached { future } => future.as_mut().poll(cx),
        }
    }
}

/// Sets `X-Cache` and the [`CacheStatus`] extension.
pub(crate) fn mark<B>(response: &mut Response<B>, status: CacheStatus) {
    response
        .headers_mut()
        .insert(X_CACHE, status.header_value());
    response.extensions_mut().insert(status);
}
