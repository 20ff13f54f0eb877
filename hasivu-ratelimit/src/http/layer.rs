//! [`RateLimitLayer`]: the configuration the services share.

use std::sync::Arc;

use tower_layer::Layer;

use super::{ClientIpKey, KeyExtractor, RateLimit};
use crate::{ErrorRate, InFlight, Limiter, LocalStore, Store};

/// Applies a [`Limiter`] to every request of a service; see the
/// [module docs](crate::http) for the answers and headers.
#[derive(Clone, Debug)]
#[must_use]
pub struct RateLimitLayer<St = LocalStore, K = ClientIpKey> {
    pub(crate) limiter: Limiter<St>,
    pub(crate) key: K,
    pub(crate) config: Arc<Config>,
}

/// Settings shared by the layer's services.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) on_success: bool,
    pub(crate) legacy: bool,
    pub(crate) in_flight: Option<InFlight>,
    pub(crate) errors: Option<ErrorRate>,
}

impl<St: Store> RateLimitLayer<St, ClientIpKey> {
    /// Limits by client IP (the socket peer; see [`ClientIpKey`] to trust
    /// proxies), with `RateLimit` headers on every answer.
    pub fn new(limiter: Limiter<St>) -> Self {
        Self {
            limiter,
            key: ClientIpKey::new(),
            config: Arc::new(Config {
                on_success: true,
                legacy: false,
                in_flight: None,
                errors: None,
            }),
        }
    }
}

impl<St: Store, K: KeyExtractor> RateLimitLayer<St, K> {
    /// Who requests count against (default [`ClientIpKey`]).
    pub fn key<K2: KeyExtractor>(self, key: K2) -> RateLimitLayer<St, K2> {
        RateLimitLayer {
            limiter: self.limiter,
            key,
            config: self.config,
        }
    }

    /// Whether admitted answers carry `RateLimit-Policy` and `RateLimit`
    /// too (default true; rejections always do).
    pub fn headers_on_success(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.config).on_success = enabled;
        self
    }

    /// Adds the legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` (seconds) wherever the draft fields go (default
    /// off).
    pub fn legacy_headers(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.config).legacy = enabled;
        self
    }

    /// Counts requests in flight (from the check to the response head) in
    /// `in_flight`, typically a part of the load signal.
    pub fn in_flight(mut self, in_flight: InFlight) -> Self {
        Arc::make_mut(&mut self.config).in_flight = Some(in_flight);
        self
    }

    /// Records each answer in `errors` (5xx and service errors are
    /// failures; the layer's own 429/503 are not counted).
    pub fn error_rate(mut self, errors: ErrorRate) -> Self {
        Arc::make_mut(&mut self.config).errors = Some(errors);
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<St> {
        &self.limiter
    }
}

impl<S, St, K> Layer<S> for RateLimitLayer<St, K>
where
    St: Store,
    K: KeyExtractor,
{
    type Service = RateLimit<S, St, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            config: Arc::clone(&self.config),
        }
    }
}
