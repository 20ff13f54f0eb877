use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;
use tower_service::Service;

use super::{
    DecompressedBody, RequestDecompressionLayer,
    decode::{Decoder, MAX_CODINGS},
    future::{Refusal, ResponseFuture},
    layer::Config,
};
use crate::{Coding, LayerBody};

/// Decodes `Content-Encoding`d request bodies with capped encoded and decoded
/// sizes before calling the inner service.
///
/// Built by [`RequestDecompressionLayer`], or with [`new`](Self::new) and
/// the same builder methods. See the [module docs](super) for the behaviour.
#[derive(Clone, Debug)]
pub struct RequestDecompression<S> {
    inner: S,
    config: Config,
}

impl<S> RequestDecompression<S> {
    /// Wraps `inner` with the defaults of [`RequestDecompressionLayer`].
    pub fn new(inner: S) -> Self {
        Self::with_config(inner, Config::default())
    }

    pub(super) fn with_config(inner: S, config: Config) -> Self {
        Self { inner, config }
    }

    /// A [`RequestDecompressionLayer`] with the defaults.
    pub fn layer() -> RequestDecompressionLayer {
        RequestDecompressionLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// See [`RequestDecompressionLayer::limit`] (default 1 MiB).
    #[must_use]
    pub fn limit(mut self, bytes: usize) -> Self {
        self.config.limit = bytes;
        self
    }

    /// See [`RequestDecompressionLayer::encoded_limit`] (default 1 MiB).
    #[must_use]
    pub fn encoded_limit(mut self, bytes: usize) -> Self {
        self.config.encoded_limit = bytes;
        self
    }

    /// See [`RequestDecompressionLayer::no_br`].
    #[must_use]
    pub fn no_br(mut self) -> Self {
        self.config.br = false;
        self
    }

    /// See [`RequestDecompressionLayer::no_zstd`].
    #[must_use]
    pub fn no_zstd(mut self) -> Self {
        self.config.zstd = false;
        self
    }

    /// See [`RequestDecompressionLayer::no_gzip`].
    #[must_use]
    pub fn no_gzip(mut self) -> Self {
        self.config.gzip = false;
        self
    }

    /// See [`RequestDecompressionLayer::no_deflate`].
    #[must_use]
    pub fn no_deflate(mut self) -> Self {
        self.config.deflate = false;
        self
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestDecompression<S>
where
    S: Service<Request<DecompressedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body<Data = Bytes>,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = self.config;
        let codings = match codings(req.headers(), &config) {
            Ok(codings) => codings,
            Err(refusal) => return ResponseFuture::refused(refusal),
        };
        if codings.is_empty() {
            // Nothing to decode: stream the body through, headers untouched.
            return ResponseFuture::calling(self.inner.call(req.map(DecompressedBody::inner)));
        }
        // A declared length over the cap is refused before reading anything.
        let declared = content_length(req.headers()).max(req.body().size_hint().lower());
        if declared > config.encoded_limit as u64 {
            return ResponseFuture::refused(Refusal::EncodedTooLarge {
                limit: config.encoded_limit,
            });
        }
        let decoder = match Decoder::new(&codings, config.limit) {
            Ok(decoder) => decoder,
            Err(error) => return ResponseFuture::refused(Refusal::decode(error, &config)),
        };
        // The inner service is called after the body is read, so take the
        // instance that was driven to readiness and leave a clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::reading(body, parts, inner, decoder, config)
    }
}

/// The codings of the request's `Content-Encoding` lines, in the order they
/// were applied, without `identity`; empty when there is nothing to decode.
fn codings(headers: &HeaderMap, config: &Config) -> Result<Vec<Coding>, Refusal> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        for token in value.as_bytes().split(|&byte| byte == b',') {
            let token = token.trim_ascii();
            // Lists may hold empty elements (RFC 9110 §5.6.1).
            if token.is_empty() {
                continue;
            }
            match Coding::from_token(token) {
                Some(Coding::Identity) => {}
                Some(coding) if config.accepts(coding) => {
                    if codings.len() == MAX_CODINGS {
                        return Err(Refusal::TooManyCodings {
                            accept: config.accept_encoding(),
                        });
                    }
                    codings.push(coding);
                }
                _ => return Err(Refusal::unsupported(token, config)),
            }
        }
    }
    Ok(codings)
}

/// The request's `Content-Length`, or 0 when absent or malformed (the body
/// is counted while it is read anyway).
fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}
