use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{
    CompressionBody, NoCompression, Predicate,
    encoder::{self, StreamEncoder},
    layer::Config,
    predicate::is_event_stream,
};
use crate::{BoxError, Coding, negotiate};

pin_project! {
    /// The response future of [`Compression`](super::Compression).
    pub struct ResponseFuture<F, B, P> {
        #[pin]
        state: State<F, B>,
        accept: Accept,
        // Negotiated once the response turns out to be worth compressing.
        coding: Coding,
        head: bool,
        config: Arc<Config>,
        predicate: P,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F, B> {
        Inner { #[pin] future: F },
        // Reading the body before the headers go out. Boxed: it is only
        // needed on the compressing path, and a small future is cheaper to
        // move on every other one.
        Collecting { collect: Box<Collect<B>> },
        Done,
    }
}

/// Reading the body: to the end when its size is known (one-shot
/// compression), else up to the threshold.
struct Collect<B> {
    // Boxed so that it can move into the response body afterwards.
    body: Pin<Box<B>>,
    parts: Parts,
    buffer: Vec<u8>,
    known_size: bool,
    trailers: Option<HeaderMap>,
}

impl<F, B, P> std::fmt::Debug for ResponseFuture<F, B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("coding", &self.coding)
            .finish_non_exhaustive()
    }
}

impl<F, B, P> ResponseFuture<F, B, P> {
    pub(crate) fn new(
        future: F,
        accept: Accept,
        head: bool,
        config: Arc<Config>,
        predicate: P,
    ) -> Self {
        Self {
            state: State::Inner { future },
            accept,
            coding: Coding::Identity,
            head,
            config,
            predicate,
        }
    }
}

impl<F, B, E, P> Future for ResponseFuture<F, B, P>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
    P: Predicate,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    let (mut parts, body) = response.into_parts();
                    match plan(
                        &mut parts,
                        &body,
                        this.accept,
                        *this.head,
                        this.config,
                        this.predicate,
                    ) {
                        Plan::Passthrough => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                CompressionBody::passthrough(body),
                            )));
                        }
                        Plan::Stream(coding) => {
                            *this.coding = coding;
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(stream(
                                parts,
                                Box::pin(body),
                                None,
                                *this.coding,
                                this.config,
                            )));
                        }
                        Plan::Collect {
                            coding,
                            capacity,
                            known_size,
                        } => {
                            *this.coding = coding;
                            this.state.set(State::Collecting {
                                collect: Box::new(Collect {
                                    body: Box::pin(body),
                                    parts,
                                    buffer: Vec::with_capacity(capacity),
                                    known_size,
                                    trailers: None,
                                }),
                            });
                        }
                    }
                }
                StateProj::Collecting { collect } => {
                    let Collect {
                        body,
                        buffer,
                        known_size,
                        trailers,
                        ..
                    } = &mut **collect;
                    let ended = loop {
                        if !*known_size && buffer.len() as u64 >= this.config.min_size {
                            break false;
                        }
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(mut chunk) => {
                                    while chunk.has_remaining() {
                                        let piece = chunk.chunk();
                                        let len = piece.len();
                                        buffer.extend_from_slice(piece);
                                        chunk.advance(len);
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                        break true;
                                    }
                                }
                            },
                            Some(Err(e)) => {
                                let StateReplace::Collecting { collect } =
                                    this.state.project_replace(State::Done)
                                else {
                                    unreachable!()
                                };
                                let parts = collect.parts;
                                // The client sees the body fail, as it would have
                                // without this layer.
                                return Poll::Ready(Ok(Response::from_parts(
                                    parts,
                                    CompressionBody::failed(e.into()),
                                )));
                            }
                            None => break true,
                        }
                    };
                    let StateReplace::Collecting { collect } =
                        this.state.project_replace(State::Done)
                    else {
                        unreachable!()
                    };
                    let Collect {
                        body,
                        parts,
                        buffer,
                        trailers,
                        ..
                    } = *collect;
                    let response = if ended {
                        whole::<B>(parts, buffer, trailers, *this.coding, this.config)
                    } else {
                        stream(
                            parts,
                            body,
                            Some(Bytes::from(buffer)),
                            *this.coding,
                            this.config,
                        )
                    };
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

enum Plan {
    Passthrough,
    Stream(Coding),
    Collect {
        coding: Coding,
        capacity: usize,
        known_size: bool,
    },
}

/// The request's `Accept-Encoding` lines, kept (cheap `Bytes` clones) so
/// that negotiation runs only for responses worth compressing.
#[derive(Debug)]
pub(crate) enum Accept {
    Absent,
    One(HeaderValue),
    Many(Vec<HeaderValue>),
}

impl Accept {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut lines = headers.get_all(header::ACCEPT_ENCODING).iter();
        match (lines.next(), lines.next()) {
            (None, _) => Accept::Absent,
            (Some(one), None) => Accept::One(one.clone()),
            (Some(first), Some(second)) => {
                let mut all = vec![first.clone(), second.clone()];
                all.extend(lines.cloned());
                Accept::Many(all)
            }
        }
    }

    fn negotiate(&self, preference: &[Coding]) -> Coding {
        match self {
            Accept::Absent => Coding::Identity,
            Accept::One(line) => negotiate([line], preference),
            Accept::Many(lines) => negotiate(lines, preference),
        }
    }
}

/// Decides from the response head what to do with the body, and adds
/// `Vary: Accept-Encoding` to every response whose representation depends
/// on the negotiation.
fn plan<B: Body, P: Predicate>(
    parts: &mut Parts,
    body: &B,
    accept: &Accept,
    head: bool,
    config: &Config,
    predicate: &P,
) -> Plan {
    let Some(response_head) = compressible(parts, config, predicate) else {
        return Plan::Passthrough;
    };
    if response_head.has_vary {
        add_vary(&mut parts.headers);
    } else {
        parts
            .headers
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if head {
        return Plan::Passthrough;
    }
    let size = response_head
        .content_length
        .or_else(|| body.size_hint().exact());
    if size.is_some_and(|size| size < config.min_size) {
        return Plan::Passthrough;
    }
    let coding = accept.negotiate(&config.preference);
    if coding == Coding::Identity {
        return Plan::Passthrough;
    }
    match size {
        Some(size) if size <= config.one_shot_limit => Plan::Collect {
            coding,
            capacity: usize::try_from(size).unwrap_or(0),
            known_size: true,
        },
        Some(_) => Plan::Stream(coding),
        None if config.flush_every_frame => Plan::Stream(coding),
        None => Plan::Collect {
            coding,
            capacity: usize::try_from(config.min_size).unwrap_or(0).min(64 * 1024),
            known_size: false,
        },
    }
}

/// What the plan needs from the response head, read in one pass.
struct Head {
    content_length: Option<u64>,
    has_vary: bool,
}

/// The rules that do not depend on the negotiated coding; `None` when the
/// response must go out untouched.
fn compressible<P: Predicate>(parts: &Parts, config: &Config, predicate: &P) -> Option<Head> {
    let status = parts.status;
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return None;
    }
    // One pass over the (usually few) headers instead of a lookup per rule.
    let mut head = Head {
        content_length: None,
        has_vary: false,
    };
    let mut content_type = None;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_TYPE {
            content_type = Some(value);
        } else if name == header::CONTENT_ENCODING {
            if !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"identity")
            {
                return None;
            }
        } else if name == header::CONTENT_RANGE {
            return None;
        } else if name == header::CACHE_CONTROL {
            if lists_token(value, "no-transform") {
                return None;
            }
        } else if name == header::CONTENT_LENGTH {
            head.content_length = value.to_str().ok().and_then(|v| v.trim().parse().ok());
        } else if name == header::VARY {
            head.has_vary = true;
        }
    }
    let content_type = content_type?.to_str().ok()?;
    if !config.content_types.matches(content_type)
        || (!config.flush_every_frame && is_event_stream(content_type))
    {
        return None;
    }
    (parts.extensions.get::<NoCompression>().is_none() && predicate.should_compress(parts))
        .then_some(head)
}

/// Whether a comma-separated header value lists `token` (ignoring case and
/// any `=value`).
fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|b| *b == b',').any(|item| {
        let item = item.trim_ascii();
        let name = item.split(|b| *b == b'=').next().unwrap_or(item);
        name.trim_ascii().eq_ignore_ascii_case(token.as_bytes())
    })
}

/// Whether any line of a comma-separated header lists `token`.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| lists_token(value, token))
}

/// Adds `Accept-Encoding` to `Vary`, merging with what is there and never
/// duplicating it (`*` already covers it).
fn add_vary(headers: &mut HeaderMap) {
    if !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return;
    }
    if has_token(headers, header::VARY, "accept-encoding") || has_token(headers, header::VARY, "*")
    {
        return;
    }
    let mut merged = Vec::new();
    for value in headers.get_all(header::VARY) {
        merged.extend_from_slice(value.as_bytes().trim_ascii());
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(b"accept-encoding");
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// The headers of a response whose body is now encoded with `coding`.
fn mark_encoded(headers: &mut HeaderMap, coding: Coding, length: Option<usize>) {
    headers.insert(header::CONTENT_ENCODING, coding.header_value());
    headers.remove(header::ACCEPT_RANGES);
    match length {
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    // The encoded bytes are a different representation: a strong validator
    // of the original must not vouch for them byte for byte.
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// A body read to its end: compressed in one call when it reached the
/// threshold, else sent as it is with its length.
fn whole<B>(
    mut parts: Parts,
    buffer: Vec<u8>,
    trailers: Option<HeaderMap>,
    coding: Coding,
    config: &Config,
) -> Response<CompressionBody<B>> {
    let original = buffer.len();
    if (original as u64) < config.min_size {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(original));
        return Response::from_parts(parts, CompressionBody::full(Bytes::from(buffer), trailers));
    }
    match encoder::compress_once(coding, config.levels_for(Some(original as u64)), &buffer) {
        Ok(compressed) => {
            mark_encoded(&mut parts.headers, coding, Some(compressed.len()));
            if config.size_headers {
                add_size_headers(&mut parts.headers, original, compressed.len());
            }
            Response::from_parts(
                parts,
                CompressionBody::full(Bytes::from(compressed), trailers),
            )
        }
        // Compression of bytes in memory fails only through a bug or an
        // allocation failure; the original is still a correct answer.
        Err(_) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(original));
            Response::from_parts(parts, CompressionBody::full(Bytes::from(buffer), trailers))
        }
    }
}

fn stream<B>(
    mut parts: Parts,
    body: Pin<Box<B>>,
    prefix: Option<Bytes>,
    coding: Coding,
    config: &Config,
) -> Response<CompressionBody<B>> {
    match StreamEncoder::new(coding, config.levels_for(None)) {
        Ok(encoder) => {
            mark_encoded(&mut parts.headers, coding, None);
            Response::from_parts(
                parts,
                CompressionBody::streaming(body, encoder, prefix, config.flush_every_frame),
            )
        }
        Err(e) => Response::from_parts(parts, CompressionBody::failed(e.into())),
    }
}

fn add_size_headers(headers: &mut HeaderMap, original: usize, compressed: usize) {
    headers.insert("x-original-size", HeaderValue::from(original));
    headers.insert("x-compressed-size", HeaderValue::from(compressed));
    // As the report: the share of bytes saved, in percent.
    let saved = if original == 0 {
        0.0
    } else {
        (1.0 - compressed as f64 / original as f64) * 100.0
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{saved:.1}%")) {
        headers.insert("x-compression-ratio", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_is_merged_once() {
        let mut headers = HeaderMap::new();
        add_vary(&mut headers);
        assert_eq!(headers[header::VARY], "accept-encoding");
        add_vary(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 1);

        let mut headers = HeaderMap::new();
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
        add_vary(&mut headers);
        assert_eq!(headers[header::VARY], "Origin, Cookie, accept-encoding");

        let mut headers = HeaderMap::new();
        headers.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Accept-Encoding"),
        );
        add_vary(&mut headers);
        assert_eq!(headers[header::VARY], "Origin, Accept-Encoding");

        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("*"));
        add_vary(&mut headers);
        assert_eq!(headers[header::VARY], "*");
    }

    #[test]
    fn strong_etags_become_weak() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(5000));
        mark_encoded(&mut headers, Coding::Gzip, None);
        assert_eq!(headers[header::ETAG], "W/\"abc\"");
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        assert!(!headers.contains_key(header::ACCEPT_RANGES));
        assert!(!headers.contains_key(header::CONTENT_LENGTH));

        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("W/\"abc\""));
        mark_encoded(&mut headers, Coding::Br, Some(10));
        assert_eq!(headers[header::ETAG], "W/\"abc\"");
        assert_eq!(headers[header::CONTENT_LENGTH], "10");
    }

    #[test]
    fn cache_control_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, No-Transform"),
        );
        assert!(has_token(&headers, header::CACHE_CONTROL, "no-transform"));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert!(!has_token(&headers, header::CACHE_CONTROL, "no-transform"));
    }
}
