use std::sync::{Arc, OnceLock};

use http::Method;
use tower_layer::Layer;

use super::{
    CacheHit, DefaultRoute, Metrics, NoCacheHook, RouteExtractor,
    state::{Config, State},
};
use crate::{Clock, PerformanceAnalytics};

/// Measures requests; see the [module docs](super) for what is recorded
/// and examples.
///
/// Every service made from one layer (and its clones) shares the route
/// registry, the handles and the cold-start flag; the shared state is
/// built by the first [`layer`](Layer::layer) call. The builder methods
/// return a layer with fresh state.
#[must_use]
pub struct MetricsLayer<R = DefaultRoute, C = NoCacheHook> {
    config: Config,
    route: R,
    hook: C,
    state: Arc<OnceLock<Arc<State>>>,
}

impl<R: Clone, C: Clone> Clone for MetricsLayer<R, C> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            route: self.route.clone(),
            hook: self.hook.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<R, C> std::fmt::Debug for MetricsLayer<R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// The default setup: route from [`DefaultRoute`], cache status from
    /// `X-Cache`, up to 1000 routes, no headers, no analytics.
    pub fn new() -> Self {
        Self {
            config: Config::default(),
            route: DefaultRoute,
            hook: NoCacheHook,
            state: Arc::default(),
        }
    }
}

impl<R, C> MetricsLayer<R, C> {
    fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self.state = Arc::default();
        self
    }

    /// How to find a request's route template (default [`DefaultRoute`]).
    pub fn route<Q: RouteExtractor>(self, route: Q) -> MetricsLayer<Q, C> {
        MetricsLayer {
            config: self.config,
            route,
            hook: self.hook,
            state: Arc::default(),
        }
    }

    /// How to tell a cache hit from the response extensions, before the
    /// `X-Cache` fallback (default: `X-Cache` alone).
    pub fn cache_hit<Q: CacheHit>(self, hook: Q) -> MetricsLayer<R, Q> {
        MetricsLayer {
            config: self.config,
            route: self.route,
            hook,
            state: Arc::default(),
        }
    }

    /// Also records every request into `analytics`, under
    /// `"{METHOD} {route}"`, and times requests with its clock.
    pub fn analytics(self, analytics: PerformanceAnalytics) -> Self {
        self.configure(|c| c.analytics = Some(analytics))
    }

    /// Adds `X-Response-Time: 12.345ms`, the time from the call to the
    /// response headers. Off by default: it costs a header allocation per
    /// response.
    pub fn response_time_header(self, enabled: bool) -> Self {
        self.configure(|c| c.response_time_header = enabled)
    }

    /// Also records the time to the response headers, as the histogram
    /// `hasivu.http.server.time_to_headers` (seconds) with the same
    /// attributes. Off by default.
    pub fn time_to_headers(self, enabled: bool) -> Self {
        self.configure(|c| c.time_to_headers = enabled)
    }

    /// The most route templates with their own label (default 1000);
    /// later ones are labelled `_overflow`. `unmatched` is not counted.
    pub fn max_routes(self, routes: usize) -> Self {
        self.configure(|c| c.max_routes = routes)
    }

    /// Methods labelled by name besides the standard nine (at most 8 are
    /// kept); every other method is labelled `_OTHER`.
    pub fn methods(self, extra: &[Method]) -> Self {
        self.configure(|c| c.methods = extra.to_vec())
    }

    /// The clock that times requests (default [`Clock::new`]). With
    /// [`analytics`](Self::analytics), the analytics clock is used instead,
    /// so that samples land in the right slices.
    pub fn clock(self, clock: Clock) -> Self {
        self.configure(|c| c.clock = Some(clock))
    }

    /// Adds `X-Memory-Used` (bytes allocated while serving the request, up
    /// to its headers) and records the bytes allocated up to the end of the
    /// body as the histogram `hasivu.http.server.request.allocated`. Needs
    /// [`TrackingAllocator`](crate::TrackingAllocator) as the global
    /// allocator; without it, no header is added. Off by default.
    #[cfg(feature = "alloc-tracking")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc-tracking")))]
    pub fn memory_header(self, enabled: bool) -> Self {
        self.configure(|c| c.memory_header = enabled)
    }

    fn state(&self) -> &Arc<State> {
        self.state
            .get_or_init(|| Arc::new(State::new(&self.config)))
    }

    /// The route labels in use, `unmatched` first and `_overflow` last
    /// when the cap was reached.
    pub fn routes(&self) -> Vec<String> {
        self.state()
            .routes
            .entries()
            .map(|e| e.name.to_string())
            .collect()
    }

    /// Requests labelled `_overflow` because the route cap was reached.
    pub fn overflowed(&self) -> u64 {
        self.state().routes.overflowed()
    }
}

impl<S, R: Clone, C: Clone> Layer<S> for MetricsLayer<R, C> {
    type Service = Metrics<S, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            state: Arc::clone(self.state()),
            route: self.route.clone(),
            hook: self.hook.clone(),
        }
    }
}
