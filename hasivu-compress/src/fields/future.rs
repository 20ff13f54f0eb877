//! The response future of [`FieldSelection`](super::FieldSelection).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{parse::Selection, prune::prune_slice};
use crate::{LayerBody, problem::problem};

pin_project! {
    /// Response future of [`FieldSelection`](super::FieldSelection): waits
    /// for the inner service, then, when the response can be pruned,
    /// collects and prunes its body.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// The selection was malformed; the inner service was not called.
        Refused { response: Option<Response<LayerBody<B>>> },
        /// No selection: the response passes through.
        Passthrough { #[pin] future: F },
        /// Waiting for the response to a request with a selection.
        Call {
            #[pin]
            future: F,
            selection: Option<Selection>,
            max_body: usize,
        },
        /// Collecting a body to prune.
        Collect {
            #[pin]
            body: B,
            parts: Option<Parts>,
            buffer: Vec<u8>,
            limit: usize,
            selection: Selection,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn refused(response: Response<LayerBody<B>>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            state: State::Passthrough { future },
        }
    }

    pub(crate) fn select(future: F, selection: Selection, max_body: usize) -> Self {
        Self {
            state: State::Call {
                future,
                selection: Some(selection),
                max_body,
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Refused { .. } => "refused",
            State::Passthrough { .. } => "passthrough",
            State::Call { .. } => "call",
            State::Collect { .. } => "collect",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<LayerBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                StateProj::Passthrough { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(LayerBody::inner));
                }
                StateProj::Call {
                    future,
                    selection,
                    max_body,
                } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(limit) = prunable(&response, *max_body) else {
                        return Poll::Ready(Ok(response.map(LayerBody::inner)));
                    };
                    let selection = selection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let (parts, body) = response.into_parts();
                    state.set(State::Collect {
                        body,
                        parts: Some(parts),
                        buffer: Vec::with_capacity(limit),
                        limit,
                        selection,
                    });
                }
                StateProj::Collect {
                    mut body,
                    parts,
                    buffer,
                    limit,
                    selection,
                } => {
                    while let Some(frame) = ready!(body.as_mut().poll_frame(cx)) {
                        let Ok(frame) = frame else {
                            return Poll::Ready(Ok(body_error(
                                "the response body failed while it was read for field selection",
                            )));
                        };
                        // Trailers cannot follow a `Full` body: they are dropped.
                        if let Ok(data) = frame.into_data() {
                            if buffer.len() + data.len() > *limit {
                                return Poll::Ready(Ok(body_error(
                                    "the response body was longer than its declared length",
                                )));
                            }
                            buffer.extend_from_slice(&data);
                        }
                    }
                    let mut parts = parts
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let bytes = match prune_slice(selection, buffer) {
                        Some(pruned) => {
                            representation_changed(&mut parts.headers, pruned.len());
                            pruned
                        }
                        // Not JSON after all: the original bytes, unchanged.
                        None => std::mem::take(buffer),
                    };
                    let response = Response::from_parts(parts, LayerBody::full(Bytes::from(bytes)));
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// The answer when the body cannot be read whole. The body's error cannot
/// travel in a body of our own bytes, and the headers have not been sent,
/// so a clean 500 is the most honest answer left.
fn body_error<B>(detail: &str) -> Response<LayerBody<B>> {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "upstream-body-error",
        "Response body failed",
        detail,
    )
}

/// Fixes the headers of a pruned representation.
fn representation_changed(headers: &mut HeaderMap, len: usize) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // Validators and digests described the unpruned bytes.
    headers.remove(header::ETAG);
    headers.remove("content-digest");
    headers.remove("repr-digest");
    headers.remove("content-md5");
}

/// Whether the response can be pruned, and if so the most bytes its body
/// may have: a 2xx other than 206, JSON, not content-coded, and of a known
/// length within `max_body`.
fn prunable<B: Body>(response: &Response<B>, max_body: usize) -> Option<usize> {
    let status = response.status();
    if !status.is_success() || status == StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let headers = response.headers();
    if !is_json(headers) || !is_identity(headers) {
        return None;
    }
    let len = response.body().size_hint().exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    })?;
    usize::try_from(len).ok().filter(|len| *len <= max_body)
}

/// `application/json` or `application/*+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .as_bytes()
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default();
    let Some(slash) = essence.iter().position(|b| *b == b'/') else {
        return false;
    };
    let (kind, subtype) = (
        essence[..slash].trim_ascii(),
        essence[slash + 1..].trim_ascii(),
    );
    kind.eq_ignore_ascii_case(b"application")
        && (subtype.eq_ignore_ascii_case(b"json")
            || (subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json")))
}

/// No `Content-Encoding`, or only `identity`.
fn is_identity(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|value| {
            value.as_bytes().split(|b| *b == b',').all(|coding| {
                let coding = coding.trim_ascii();
                coding.is_empty() || coding.eq_ignore_ascii_case(b"identity")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn json_media_types() {
        for value in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/vnd.api+json ;v=1",
        ] {
            assert!(is_json(&headers(&[("content-type", value)])), "{value}");
        }
        for value in [
            "text/json",
            "application/jsonx",
            "application/+json",
            "application",
            "text/plain",
            "application/json-seq",
        ] {
            assert!(!is_json(&headers(&[("content-type", value)])), "{value}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn identity_codings() {
        assert!(is_identity(&HeaderMap::new()));
        assert!(is_identity(&headers(&[("content-encoding", "identity")])));
        assert!(is_identity(&headers(&[("content-encoding", "Identity, ")])));
        assert!(!is_identity(&headers(&[("content-encoding", "gzip")])));
        assert!(!is_identity(&headers(&[(
            "content-encoding",
            "identity, br"
        )])));
    }
}
