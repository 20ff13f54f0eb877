use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Method, Request, Response, header};
use http_body::Body;
use tower_service::Service;

use super::{
    CacheLayer, RoutePolicy,
    flow::{self, Plan},
    future::ResponseFuture,
    key::{MAX_KEY_BYTES, normalize_path, normalize_query, primary_key},
    layer::Shared,
};
use crate::{Cache, Codec, JsonCodec};

/// Caches the GET and HEAD responses of the inner service; see the
/// [module docs](super).
pub struct CacheService<S, C = JsonCodec> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for CacheService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CacheService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, C: Codec> CacheService<S, C> {
    /// Wraps `inner`, caching every path with `policy` (as
    /// [`CacheLayer::with_policy`]).
    ///
    /// ```
    /// use std::{convert::Infallible, time::Duration};
    /// use bytes::Bytes;
    /// use hasivu_cache::{Cache, CacheService, RoutePolicy};
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let menu = service_fn(|_request: Request<Full<Bytes>>| async {
    ///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ragi mudde"))))
    /// });
    /// let policy = RoutePolicy::new(Duration::from_secs(60));
    /// let service = CacheService::new(menu, Cache::builder().build()?, policy);
    ///
    /// let request = || Request::get("/menu").body(Full::default());
    /// let first = service.clone().oneshot(request()?).await?;
    /// assert_eq!(first.headers()["x-cache"], "MISS");
    /// let second = service.oneshot(request()?).await?;
    /// assert_eq!(second.headers()["x-cache"], "HIT-L1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(inner: S, cache: Cache<C>, policy: RoutePolicy) -> Self {
        tower_layer::Layer::layer(&CacheLayer::with_policy(cache, policy), inner)
    }

    /// A [`CacheLayer`] over `cache`, to which routes are added.
    pub fn layer(cache: Cache<C>) -> CacheLayer<C> {
        CacheLayer::new(cache)
    }
}

impl<S, C> CacheService<S, C> {
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

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    C: Codec,
    ReqBody: Default + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    type Response = Response<super::CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return ResponseFuture::passthrough(self.inner.call(req)),
        };
        let path = normalize_path(req.uri().path());
        let Some(index) = self.shared.route_for(&path) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let path = path.into_owned();
        let route = &self.shared.routes[index];
        let credentials = req.headers().contains_key(header::AUTHORIZATION)
            || req.headers().contains_key(header::COOKIE);
        let (req, user) = if credentials {
            let Some(per_user) = &route.policy.per_user else {
                return self.bypass(req);
            };
            let (parts, body) = req.into_parts();
            let user = per_user(&parts);
            let req = Request::from_parts(parts, body);
            match user {
                Some(user) => (req, Some(user)),
                None => return self.bypass(req),
            }
        } else {
            (req, None)
        };
        let query = req
            .uri()
            .query()
            .and_then(|q| normalize_query(q, route.policy.query_params.as_deref()));
        let primary = primary_key(
            &route.policy.namespace,
            &path,
            query.as_deref(),
            user.as_deref(),
        );
        if primary.len() > MAX_KEY_BYTES {
            return self.bypass(req);
        }
        let plan = Plan {
            route: index,
            primary,
            path,
            query,
            per_user: user.is_some(),
            head,
        };
        // The ready service goes with the request; a clone waits for the
        // next `poll_ready`.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::cached(Box::pin(flow::handle(
            Arc::clone(&self.shared),
            plan,
            service,
            req,
        )))
    }
}

impl<S, C> CacheService<S, C> {
    fn bypass<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Body,
    {
        self.shared.metrics.response(super::CacheStatus::Bypass);
        ResponseFuture::bypass(self.inner.call(req))
    }
}
