//! The bodies of the shield: the request body the inner service reads
//! ([`InspectedBody`]) and the response body it answers with
//! ([`ShieldBody`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body handed to the inner service: the original body,
    /// untouched, or (when the shield read a JSON or form body to inspect
    /// it) the frames it read followed by the rest of the original. Either
    /// way the inner service reads every byte, trailer and error the client
    /// sent, in order.
    pub struct InspectedBody<B>
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
        Passthrough { #[pin] body: B },
        Replay {
            frames: VecDeque<Frame<Bytes>>,
            error: Option<B::Error>,
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> std::fmt::Debug for InspectedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Passthrough { .. } => f.write_str("InspectedBody::Passthrough"),
            Kind::Replay { frames, rest, .. } => f
                .debug_struct("InspectedBody::Replay")
                .field("buffered_frames", &frames.len())
                .field("streaming", &rest.is_some())
                .finish(),
        }
    }
}

impl<B: Body> InspectedBody<B> {
    /// The original body, untouched.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    /// Frames already read, then `error` if reading failed, then what is
    /// left of the body (`None` once it ended).
    pub(crate) fn replay(
        frames: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            kind: Kind::Replay {
                frames,
                error,
                rest,
            },
        }
    }

    /// Whether the shield read part of the body before handing it on.
    pub fn was_buffered(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. })
    }
}

impl<B> Body for InspectedBody<B>
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
            KindProj::Passthrough { body } => body.poll_frame(cx),
            KindProj::Replay {
                frames,
                error,
                rest,
            } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Replay {
                frames,
                error,
                rest,
            } => {
                frames.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Replay { frames, rest, .. } => {
                let buffered: u64 = frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(buffered));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

/// The response body of the shield: the inner service's body, unchanged,
/// or the shield's problem answer (the same body as the rate-limit
/// layer's).
pub type ShieldBody<B> = crate::http::RateLimitBody<B>;
