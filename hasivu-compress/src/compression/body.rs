use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::encoder::StreamEncoder;
use crate::BoxError;

pin_project! {
    /// The response body of [`Compression`](super::Compression): the inner
    /// body unchanged, the whole body compressed in one piece, or the body
    /// compressed as it streams.
    pub struct CompressionBody<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        Passthrough { #[pin] body: B },
        Full { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
        // Boxed: a body that was polled while the headers were decided
        // cannot move otherwise; one allocation next to a codec's.
        Streaming {
            body: Pin<Box<B>>,
            // Boxed, like the body: a codec is hundreds of bytes, and the
            // body moves with every response.
            encoder: Box<StreamEncoder>,
            prefix: Option<Bytes>,
            flush_every_frame: bool,
            // Input written since the last flush.
            unflushed: bool,
            finished: bool,
            trailers: Option<Box<HeaderMap>>,
        },
        Failed { error: Option<BoxError> },
    }
}

impl<B> std::fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.state {
            State::Passthrough { .. } => "Passthrough",
            State::Full { .. } => "Full",
            State::Streaming { .. } => "Streaming",
            State::Failed { .. } => "Failed",
        };
        f.debug_struct("CompressionBody")
            .field("state", &kind)
            .finish()
    }
}

impl<B> CompressionBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            state: State::Passthrough { body },
        }
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            state: State::Full {
                data: (!data.is_empty()).then_some(data),
                trailers: trailers.map(Box::new),
            },
        }
    }

    pub(crate) fn streaming(
        body: Pin<Box<B>>,
        encoder: StreamEncoder,
        prefix: Option<Bytes>,
        flush_every_frame: bool,
    ) -> Self {
        Self {
            state: State::Streaming {
                body,
                encoder: Box::new(encoder),
                prefix,
                flush_every_frame,
                unflushed: false,
                finished: false,
                trailers: None,
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

fn data(bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Ok(Frame::data(bytes))))
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().state.project() {
            StateProj::Passthrough { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            },
            StateProj::Full {
                data: bytes,
                trailers,
            } => {
                if let Some(bytes) = bytes.take() {
                    return data(bytes);
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            StateProj::Failed { error } => Poll::Ready(error.take().map(Err)),
            StateProj::Streaming {
                body,
                encoder,
                prefix,
                flush_every_frame,
                unflushed,
                finished,
                trailers,
            } => loop {
                if *finished {
                    return Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))));
                }
                if let Some(prefix) = prefix.take() {
                    encoder.write(&prefix)?;
                    *unflushed = true;
                }
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => {
                        // The source is waiting: send what we have rather than
                        // hold it back until the next frame (tower-http#292).
                        if *unflushed {
                            encoder.flush()?;
                            *unflushed = false;
                            let out = encoder.take();
                            if !out.is_empty() {
                                return data(out);
                            }
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut chunk) => {
                            while chunk.has_remaining() {
                                let piece = chunk.chunk();
                                let len = piece.len();
                                encoder.write(piece)?;
                                chunk.advance(len);
                            }
                            *unflushed = true;
                            if *flush_every_frame {
                                encoder.flush()?;
                                *unflushed = false;
                            }
                            let out = encoder.take();
                            if !out.is_empty() {
                                return data(out);
                            }
                        }
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                *trailers = Some(Box::new(t));
                            }
                        }
                    },
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => {
                        encoder.finish()?;
                        *finished = true;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return data(out);
                        }
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Passthrough { body } => body.is_end_stream(),
            State::Full { data, trailers } => data.is_none() && trailers.is_none(),
            State::Streaming {
                finished, trailers, ..
            } => *finished && trailers.is_none(),
            State::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Passthrough { body } => body.size_hint(),
            State::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            State::Streaming { .. } | State::Failed { .. } => SizeHint::default(),
        }
    }
}
