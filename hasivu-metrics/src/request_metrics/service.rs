use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    CacheHit, ColdStart, DefaultRoute, MetricsLayer, NoCacheHook, RequestHead, RouteExtractor,
    future::{ResponseFuture, Tracker, is_head},
    state::State,
};

/// Measures the requests of the inner service; see the [module
/// docs](super).
#[derive(Clone, Debug)]
pub struct Metrics<S, R = DefaultRoute, C = NoCacheHook> {
    pub(crate) inner: S,
    pub(crate) state: Arc<State>,
    pub(crate) route: R,
    pub(crate) hook: C,
}

impl<S> Metrics<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        use tower_layer::Layer;
        MetricsLayer::new().layer(inner)
    }

    /// A [`MetricsLayer`] with the default settings.
    pub fn layer() -> MetricsLayer {
        MetricsLayer::new()
    }
}

impl<S, R, C> Metrics<S, R, C> {
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

impl<S, R, C, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S, R, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    R: RouteExtractor,
    C: CacheHit,
{
    type Response = Response<super::MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let state = &self.state;
        let start = state.clock.now();
        let method = state.methods.index(request.method());
        let route = match self.route.route(&RequestHead::new(&request)) {
            Some(template) => state.route(&template),
            None => state.unmatched,
        };
        let cold = state.start(method);
        if cold {
            request.extensions_mut().insert(ColdStart);
        }
        let head = is_head(request.method());
        // Created before the inner call: if that panics, the drop counts
        // the request out again.
        let tracker = Tracker::new(Arc::clone(state), start, route, method, head, cold);
        ResponseFuture::new(self.inner.call(request), tracker, self.hook.clone())
    }
}
