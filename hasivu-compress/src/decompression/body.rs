use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The request body the inner service of
    /// [`RequestDecompression`](super::RequestDecompression) receives: the
    /// original body, untouched and still streaming, when the request had no
    /// `Content-Encoding` (or only `identity`), otherwise the decoded bytes.
    ///
    /// The error type is the original body's. Decoding is finished, and its
    /// failures answered, before the inner service is called, so the decoded
    /// variant cannot fail and there is no decoding error to report while
    /// the body is read. Bodies from hyper and axum have errors that convert
    /// into `Box<dyn Error + Send + Sync>`, which is what an axum `Router`
    /// asks of a request body.
    #[derive(Debug)]
    pub struct DecompressedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Decoded { body: Full<Bytes> },
    }
}

impl<B> DecompressedBody<B> {
    /// The original body, passed through.
    pub(super) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// The decoded bytes.
    pub(super) fn decoded(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Decoded {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B> Body for DecompressedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Decoded { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Decoded { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Decoded { body } => body.size_hint(),
        }
    }
}
