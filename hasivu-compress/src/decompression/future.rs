use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    DecompressedBody,
    decode::{DecodeError, Decoder, MAX_CODINGS},
    layer::Config,
};
use crate::{LayerBody, problem::problem};

pin_project! {
    /// The response future of
    /// [`RequestDecompression`](super::RequestDecompression): reads and
    /// decodes the request body when it is encoded, then calls the inner
    /// service, or answers with a refusal without calling it.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<DecompressedBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<DecompressedBody<B>>>,
    {
        // Reading and decoding the encoded body.
        Reading {
            #[pin]
            body: B,
            // Taken when the body ends; `None` only after that.
            pending: Option<Pending<S>>,
        },
        // Waiting for the inner service.
        Calling {
            #[pin]
            future: S::Future,
        },
        // Answering without calling the inner service.
        Refused {
            refusal: Refusal,
        },
    }
}

/// What the reading state needs besides the body.
struct Pending<S> {
    parts: Parts,
    inner: S,
    decoder: Decoder,
    /// Encoded bytes read so far.
    read: u64,
    config: Config,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<DecompressedBody<B>>>,
{
    pub(super) fn reading(
        body: B,
        parts: Parts,
        inner: S,
        decoder: Decoder,
        config: Config,
    ) -> Self {
        let pending = Pending {
            parts,
            inner,
            decoder,
            read: 0,
            config,
        };
        Self {
            state: State::Reading {
                body,
                pending: Some(pending),
            },
        }
    }

    pub(super) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    pub(super) fn refused(refusal: Refusal) -> Self {
        Self {
            state: State::Refused { refusal },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<DecompressedBody<B>>, Response = Response<ResBody>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<LayerBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Reading { body, pending } => ready!(poll_read(body, pending, cx)),
                StateProj::Calling { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(LayerBody::inner));
                }
                // Built from a reference, so polling again cannot panic.
                StateProj::Refused { refusal } => return Poll::Ready(Ok(refusal.response())),
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// Reads the body into the decoder until it ends, fails or passes a cap,
/// and returns the next state.
fn poll_read<S, B>(
    mut body: Pin<&mut B>,
    pending: &mut Option<Pending<S>>,
    cx: &mut Context<'_>,
) -> Poll<State<S, B>>
where
    S: Service<Request<DecompressedBody<B>>>,
    B: Body<Data = Bytes>,
{
    loop {
        let Some(state) = pending.as_mut() else {
            return Poll::Ready(State::Refused {
                refusal: Refusal::Setup,
            });
        };
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                // Trailers are dropped: the decoded body is plain bytes.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                state.read = state.read.saturating_add(data.len() as u64);
                if state.read > state.config.encoded_limit as u64 {
                    return Poll::Ready(State::Refused {
                        refusal: Refusal::EncodedTooLarge {
                            limit: state.config.encoded_limit,
                        },
                    });
                }
                if let Err(error) = state.decoder.write(&data) {
                    return Poll::Ready(State::Refused {
                        refusal: Refusal::decode(error, &state.config),
                    });
                }
            }
            Some(Err(_)) => {
                return Poll::Ready(State::Refused {
                    refusal: Refusal::Unreadable,
                });
            }
            None => {
                let Some(Pending {
                    mut parts,
                    mut inner,
                    decoder,
                    config,
                    ..
                }) = pending.take()
                else {
                    continue;
                };
                let decoded = match decoder.finish() {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        return Poll::Ready(State::Refused {
                            refusal: Refusal::decode(error, &config),
                        });
                    }
                };
                // The inner service sees a plain body of known length.
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(decoded.len()));
                let request = Request::from_parts(parts, DecompressedBody::full(decoded));
                return Poll::Ready(State::Calling {
                    future: inner.call(request),
                });
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<DecompressedBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "reading",
            State::Calling { .. } => "calling",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Why a request is answered without calling the inner service.
#[derive(Clone, Debug)]
pub(super) enum Refusal {
    /// More encoded bytes than `encoded_limit`: 413.
    EncodedTooLarge { limit: usize },
    /// More decoded bytes than `limit`: 413.
    DecodedTooLarge { limit: usize },
    /// A coding that is unknown, not built in or turned off: 415.
    Unsupported { token: String, accept: HeaderValue },
    /// More than `MAX_CODINGS` codings: 415.
    TooManyCodings { accept: HeaderValue },
    /// Corrupt, truncated or trailing data: 400.
    Invalid,
    /// The request body failed while being read: 400.
    Unreadable,
    /// A decoder could not be set up: 500.
    Setup,
}

impl Refusal {
    /// The refusal for an unsupported coding token.
    pub(super) fn unsupported(token: &[u8], config: &Config) -> Self {
        // Echo a bounded piece of the client's token, not the whole header.
        let token = String::from_utf8_lossy(token).chars().take(40).collect();
        Refusal::Unsupported {
            token,
            accept: config.accept_encoding(),
        }
    }

    /// The refusal for a decoding failure.
    pub(super) fn decode(error: DecodeError, config: &Config) -> Self {
        match error {
            DecodeError::TooLarge => Refusal::DecodedTooLarge {
                limit: config.limit,
            },
            DecodeError::Invalid => Refusal::Invalid,
            DecodeError::Setup => Refusal::Setup,
        }
    }

    /// The problem+json answer.
    fn response<B>(&self) -> Response<LayerBody<B>> {
        const TOO_LARGE: &str = "payload-too-large";
        const UNSUPPORTED: &str = "unsupported-content-encoding";
        const INVALID: &str = "invalid-encoded-body";
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        match self {
            Refusal::EncodedTooLarge { limit } => problem(
                status,
                TOO_LARGE,
                "Content too large",
                &format!("The encoded request body is larger than the limit of {limit} bytes."),
            ),
            Refusal::DecodedTooLarge { limit } => problem(
                status,
                TOO_LARGE,
                "Content too large",
                &format!("The request body decodes to more than the limit of {limit} bytes."),
            ),
            Refusal::Unsupported { token, accept } => with_accept(
                problem(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    UNSUPPORTED,
                    "Unsupported content encoding",
                    &format!(
                        "The content coding \"{token}\" is not supported; encode the body with \
                         one of the codings in Accept-Encoding or send it unencoded."
                    ),
                ),
                accept,
            ),
            Refusal::TooManyCodings { accept } => with_accept(
                problem(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    UNSUPPORTED,
                    "Unsupported content encoding",
                    &format!(
                        "At most {MAX_CODINGS} content codings may be stacked on a request body."
                    ),
                ),
                accept,
            ),
            Refusal::Invalid => problem(
                StatusCode::BAD_REQUEST,
                INVALID,
                "Invalid encoded body",
                "The request body does not decode as its Content-Encoding says: it is corrupt, \
                 truncated or followed by trailing data.",
            ),
            Refusal::Unreadable => problem(
                StatusCode::BAD_REQUEST,
                INVALID,
                "Invalid encoded body",
                "The encoded request body could not be read to its end.",
            ),
            Refusal::Setup => problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "decoder-unavailable",
                "Decoder unavailable",
                "The server could not set up a decoder for this request body.",
            ),
        }
    }
}

/// Adds the accepted codings to a 415 (RFC 9110 §15.5.16).
fn with_accept<B>(
    mut response: Response<LayerBody<B>>,
    accept: &HeaderValue,
) -> Response<LayerBody<B>> {
    response
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, accept.clone());
    response
}
