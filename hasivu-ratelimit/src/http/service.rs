//! [`RateLimit`]: the service.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::FutureExt;
use http::{Request, Response};
use tower_service::Service;

use super::{
    ClientIpKey, KeyExtractor, RateLimitBody, RateLimitIdentity, ResponseFuture, layer::Config,
};
use crate::{Limiter, LocalStore, Store};

/// Checks each request with a [`Limiter`] before calling the inner
/// service; built by [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Clone, Debug)]
pub struct RateLimit<S, St = LocalStore, K = ClientIpKey> {
    pub(crate) inner: S,
    pub(crate) limiter: Limiter<St>,
    pub(crate) key: K,
    pub(crate) config: Arc<Config>,
}

impl<S, St, K> RateLimit<S, St, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, St, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    St: Store,
    K: KeyExtractor,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let Some(key) = self.key.key(&parts) else {
            return ResponseFuture::unlimited(
                self.inner.call(Request::from_parts(parts, body)),
                Arc::clone(&self.config),
            );
        };
        let guard = self.config.in_flight.as_ref().map(crate::InFlight::enter);
        let tier = parts
            .extensions
            .get::<RateLimitIdentity>()
            .and_then(|id| id.tier.clone());
        let check = crate::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            key: &key,
            tier: tier.as_deref(),
            cost: 1,
        };
        // An in-process store answers at once: no boxed future.
        if let Some(decision) = self.limiter.check_request_now(check) {
            let config = Arc::clone(&self.config);
            if !decision.is_allowed() {
                return ResponseFuture::rejected(decision, config);
            }
            let fut = self.inner.call(Request::from_parts(parts, body));
            return ResponseFuture::calling(fut, decision, guard, config);
        }
        // The service that was polled ready serves this request; the clone
        // waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let checking = async move {
            let method = parts.method.clone();
            let path = parts.uri.path().to_owned();
            let decision = limiter
                .check_request(crate::Request {
                    method: method.as_str(),
                    path: &path,
                    key: &key,
                    tier: tier.as_deref(),
                    cost: 1,
                })
                .await;
            if decision.is_allowed() {
                super::future::Checked::Call(inner.call(Request::from_parts(parts, body)), decision)
            } else {
                super::future::Checked::Reject(decision)
            }
        }
        .boxed();
        ResponseFuture::checking(checking, guard, Arc::clone(&self.config))
    }
}
