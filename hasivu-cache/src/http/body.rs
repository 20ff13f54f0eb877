use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`CacheService`](super::CacheService): the
    /// service's body passed through, a body served from the cache (or read
    /// whole before being stored), or, for a body over the size cap, the
    /// part read so far followed by the rest as it streams.
    ///
    /// Errors are the service body's own: a body that failed while it was
    /// being read sends what was read, then the error.
    pub struct CacheBody<B>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B>
    where
        B: Body,
    {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
        // Boxed: the body was polled (pinned) while it was read.
        Prefixed { prefix: Option<Bytes>, rest: Pin<Box<B>> },
        Failed { prefix: Option<Bytes>, error: Option<B::Error> },
    }
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Full { .. } => "Full",
            Kind::Prefixed { .. } => "Prefixed",
            Kind::Failed { .. } => "Failed",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B: Body> CacheBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers: trailers.map(Box::new),
            },
        }
    }

    pub(crate) fn empty() -> Self {
        Self::full(Bytes::new(), None)
    }

    pub(crate) fn prefixed(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Prefixed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    pub(crate) fn failed(prefix: Bytes, error: B::Error) -> Self {
        Self {
            kind: Kind::Failed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                error: Some(error),
            },
        }
    }
}

fn bytes_frame<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|frame| frame.map(bytes_frame)))
            }
            KindProj::Full { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            KindProj::Prefixed { prefix, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                Poll::Ready(
                    ready!(rest.as_mut().poll_frame(cx)).map(|frame| frame.map(bytes_frame)),
                )
            }
            KindProj::Failed { prefix, error } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                Poll::Ready(error.take().map(Err))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Prefixed { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(extra));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn a_prefixed_body_sends_the_prefix_then_the_rest() {
        let rest = Box::pin(Full::new(Bytes::from_static(b" world")));
        let body = CacheBody::prefixed(Bytes::from_static(b"hello"), rest);
        assert_eq!(body.size_hint().exact(), Some(11));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello world");
    }

    #[tokio::test]
    async fn a_failed_body_sends_what_was_read_then_the_error() {
        type Stream = StreamBody<futures_util::stream::Empty<Result<Frame<Bytes>, std::io::Error>>>;
        let mut body = CacheBody::<Stream>::failed(
            Bytes::from_static(b"part"),
            std::io::Error::other("reset"),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "reset");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn full_bodies_carry_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let body = CacheBody::<Full<Bytes>>::full(Bytes::from_static(b"ab"), Some(trailers));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
        assert_eq!(&collected.to_bytes()[..], b"ab");
        assert!(CacheBody::<Full<Bytes>>::empty().is_end_stream());
    }
}
