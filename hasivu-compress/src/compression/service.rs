use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Buf;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    Always, CompressionBody, CompressionLayer, Predicate,
    future::{Accept, ResponseFuture},
    layer::Config,
};
use crate::BoxError;

/// Compresses the responses of the inner service; see the [module
/// docs](super).
#[derive(Clone, Debug)]
pub struct Compression<S, P = Always> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
}

impl<S> Compression<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            config: Arc::new(Config::default()),
            predicate: Always,
        }
    }

    /// A [`CompressionLayer`] with the default settings.
    pub fn layer() -> CompressionLayer {
        CompressionLayer::new()
    }
}

impl<S, P> Compression<S, P> {
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
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for Compression<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Data: Buf,
    ResBody::Error: Into<BoxError>,
    P: Predicate,
{
    type Response = Response<CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The coding depends on the request alone; it is negotiated after
        // the handler only for responses that turn out to be compressible.
        let accept = Accept::from_headers(req.headers());
        let head = req.method() == Method::HEAD;
        ResponseFuture::new(
            self.inner.call(req),
            accept,
            head,
            Arc::clone(&self.config),
            self.predicate.clone(),
        )
    }
}
