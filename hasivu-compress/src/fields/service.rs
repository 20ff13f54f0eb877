//! [`FieldSelection`]: the field selection middleware.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::{FieldSelectionLayer, ResponseFuture, Selection, layer::Config};
use crate::{LayerBody, problem::problem};

/// Middleware that prunes JSON responses to the fields named in the
/// request's `?fields=` query parameter, and answers 400 to a malformed
/// selection without calling the inner service.
///
/// See the [module docs](super) for the rules.
#[derive(Clone, Debug)]
pub struct FieldSelection<S> {
    inner: S,
    config: Config,
}

impl<S> FieldSelection<S> {
    /// Wraps `inner` with the default settings (see
    /// [`FieldSelectionLayer::new`]).
    pub fn new(inner: S) -> Self {
        Self::with_config(inner, Config::default())
    }

    pub(crate) fn with_config(inner: S, config: Config) -> Self {
        Self { inner, config }
    }

    /// A layer that wraps services with this middleware.
    pub fn layer() -> FieldSelectionLayer {
        FieldSelectionLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FieldSelection<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let selection = match request.uri().query() {
            Some(query) => {
                Selection::from_query_with_limits(query, &self.config.param, self.config.limits)
            }
            None => Ok(None),
        };
        match selection {
            Ok(None) => ResponseFuture::passthrough(self.inner.call(request)),
            Ok(Some(selection)) => {
                ResponseFuture::select(self.inner.call(request), selection, self.config.max_body)
            }
            // Refused before the handler does any work for it.
            Err(error) => ResponseFuture::refused(problem(
                StatusCode::BAD_REQUEST,
                "invalid-field-selection",
                "Invalid field selection",
                &error.to_string(),
            )),
        }
    }
}
