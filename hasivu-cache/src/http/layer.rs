use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderMap, HeaderValue};
use metrics::Counter;
use tower_layer::Layer;

use super::{
    CacheService, CacheStatus, RoutePolicy, coalesce::Loading, headers::CacheControl,
    key::RoutePattern,
};
use crate::{Cache, Codec, EntryOptions, JsonCodec};

/// The layer's `Accept-Encoding` hook; see [`CacheLayer::accept_encoding`].
type AcceptEncoding = Arc<dyn Fn(&HeaderMap) -> String + Send + Sync>;

/// How long a miss waits by default for the same key's miss in flight.
const DEFAULT_COALESCE: Duration = Duration::from_secs(5);

/// The most background refreshes in flight per layer; past it, a stale
/// entry is served without starting another (a later request will).
const MAX_REFRESHES: usize = 1024;

/// Caches the GET and HEAD responses of a tower service in a [`Cache`],
/// per route; see the [module docs](super) for the rules and examples.
///
/// On a single axum route, with a policy of its own:
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use hasivu_cache::{Cache, CacheLayer, RoutePolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_cache::Error> {
/// let cache = Cache::builder().build()?;
/// let policy = RoutePolicy::new(Duration::from_secs(300)).namespace("school:active:");
/// let app: Router = Router::new().route(
///     "/schools",
///     get(|| async { "[]" }).layer(CacheLayer::with_policy(cache, policy)),
/// );
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct CacheLayer<C = JsonCodec> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C> Clone for CacheLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for CacheLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

/// One route: its pattern, its policy, and what is derived from the policy
/// once instead of per request.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) pattern: RoutePattern,
    pub(crate) policy: RoutePolicy,
    /// Entries live for the TTL plus the stale window; the layer decides
    /// freshness from the times stored in them.
    pub(crate) options: EntryOptions,
    pub(crate) fresh_ms: u64,
    pub(crate) stale_ms: u64,
    pub(crate) public: HeaderValue,
    pub(crate) private: HeaderValue,
    pub(crate) surrogate_key: Option<HeaderValue>,
    pub(crate) cache_tag: Option<HeaderValue>,
}

impl Route {
    fn new(pattern: &str, policy: RoutePolicy) -> Self {
        let lifetime = policy.ttl.saturating_add(policy.stale_while_revalidate);
        let max_age = policy.ttl.as_secs();
        let public = CacheControl {
            public: true,
            max_age: Some(max_age),
            s_maxage: policy.s_maxage.map(|d| d.as_secs()),
            stale_while_revalidate: (!policy.stale_while_revalidate.is_zero())
                .then_some(policy.stale_while_revalidate.as_secs()),
            ..CacheControl::default()
        };
        let private = CacheControl {
            private: true,
            max_age: Some(max_age),
            ..CacheControl::default()
        };
        let tags = policy.effective_tags();
        // Tags are written by the application; one that cannot be a header
        // value is left out rather than failing the response.
        let header = |separator: &str| {
            let tags: Vec<&str> = tags
                .iter()
                .map(String::as_str)
                .filter(|t| !t.is_empty() && !t.contains(' ') && !t.contains(','))
                .collect();
            (!tags.is_empty())
                .then(|| HeaderValue::from_str(&tags.join(separator)).ok())
                .flatten()
        };
        Self {
            pattern: RoutePattern::parse(pattern),
            options: EntryOptions::new(lifetime).l1_ttl(lifetime),
            fresh_ms: millis(policy.ttl),
            stale_ms: millis(policy.stale_while_revalidate),
            public: public.to_header_value(),
            private: private.to_header_value(),
            // Fastly separates surrogate keys with spaces, Cloudflare cache
            // tags with commas.
            surrogate_key: header(" "),
            cache_tag: header(","),
            policy,
        }
    }

    /// Whether entries of this route live at all (Redis refuses a zero
    /// expiry).
    pub(crate) fn stores(&self) -> bool {
        self.fresh_ms.saturating_add(self.stale_ms) > 0
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Metric handles, resolved once per layer.
#[derive(Clone)]
pub(crate) struct Metrics {
    hit_l1: Counter,
    hit_l2: Counter,
    stale: Counter,
    miss: Counter,
    bypass: Counter,
    pub(crate) not_modified: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) coalesced: Counter,
}

impl Metrics {
    fn new(cache: &str) -> Self {
        let responses = |status: &'static str| {
            metrics::counter!(
                "hasivu_cache_http_responses_total",
                "cache" => cache.to_owned(),
                "status" => status
            )
        };
        Self {
            hit_l1: responses("hit_l1"),
            hit_l2: responses("hit_l2"),
            stale: responses("stale"),
            miss: responses("miss"),
            bypass: responses("bypass"),
            not_modified: metrics::counter!(
                "hasivu_cache_http_not_modified_total",
                "cache" => cache.to_owned()
            ),
            refreshes: metrics::counter!(
                "hasivu_cache_http_refreshes_total",
                "cache" => cache.to_owned()
            ),
            coalesced: metrics::counter!(
                "hasivu_cache_http_coalesced_total",
                "cache" => cache.to_owned()
            ),
        }
    }

    pub(crate) fn response(&self, status: CacheStatus) {
        match status {
            CacheStatus::HitL1 => &self.hit_l1,
            CacheStatus::HitL2 => &self.hit_l2,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Miss => &self.miss,
            CacheStatus::Bypass => &self.bypass,
        }
        .increment(1);
    }
}

/// Keys being refreshed in the background: at most one refresh per key,
/// at most [`MAX_REFRESHES`] in all.
#[derive(Debug, Default)]
pub(crate) struct Refreshing {
    keys: Mutex<HashSet<String>>,
}

impl Refreshing {
    /// Claims `key`; `None` when it is already being refreshed or too many
    /// are.
    pub(crate) fn claim(self: &Arc<Self>, key: &str) -> Option<RefreshClaim> {
        let mut keys = self.keys.lock().ok()?;
        if keys.len() >= MAX_REFRESHES || keys.contains(key) {
            return None;
        }
        keys.insert(key.to_owned());
        Some(RefreshClaim {
            refreshing: Arc::clone(self),
            key: key.to_owned(),
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.lock().map_or(0, |keys| keys.len())
    }
}

/// Releases a key when its refresh ends, however it ends.
#[derive(Debug)]
pub(crate) struct RefreshClaim {
    refreshing: Arc<Refreshing>,
    key: String,
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.refreshing.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

/// Everything the layer's services share.
pub(crate) struct Shared<C> {
    pub(crate) cache: Cache<C>,
    pub(crate) routes: Vec<Route>,
    pub(crate) accept_encoding: Option<AcceptEncoding>,
    pub(crate) tag_headers: bool,
    pub(crate) metrics: Metrics,
    pub(crate) refreshing: Arc<Refreshing>,
    /// How long a miss waits for the same key's miss in flight (`None`:
    /// misses never wait).
    pub(crate) coalesce: Option<Duration>,
    pub(crate) loading: Arc<Loading>,
}

impl<C> Clone for Shared<C> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            routes: self.routes.clone(),
            accept_encoding: self.accept_encoding.clone(),
            tag_headers: self.tag_headers,
            metrics: self.metrics.clone(),
            refreshing: Arc::clone(&self.refreshing),
            coalesce: self.coalesce,
            loading: Arc::clone(&self.loading),
        }
    }
}

impl<C> fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("cache", &self.cache)
            .field("routes", &self.routes)
            .field("accept_encoding_hook", &self.accept_encoding.is_some())
            .field("tag_headers", &self.tag_headers)
            .field("coalesce", &self.coalesce)
            .finish_non_exhaustive()
    }
}

impl<C> Shared<C> {
    /// The first route whose pattern matches the normalised `path`.
    pub(crate) fn route_for(&self, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.pattern.matches(path))
    }
}

impl<C: Codec> CacheLayer<C> {
    /// A layer over `cache` with no routes yet: every request passes
    /// through until [`route`](Self::route) adds some. Metric handles are
    /// resolved here, labelled with the cache's name.
    pub fn new(cache: Cache<C>) -> Self {
        let metrics = Metrics::new(&cache.inner.name);
        Self {
            shared: Arc::new(Shared {
                cache,
                routes: Vec::new(),
                accept_encoding: None,
                tag_headers: false,
                metrics,
                refreshing: Arc::default(),
                coalesce: Some(DEFAULT_COALESCE),
                loading: Arc::default(),
            }),
        }
    }

    /// A layer that applies `policy` to every path: for a layer put on one
    /// route (axum's `route_layer`, or a `MethodRouter::layer`).
    pub fn with_policy(cache: Cache<C>, policy: RoutePolicy) -> Self {
        Self::new(cache).route("*", policy)
    }
}

impl<C> CacheLayer<C> {
    fn shared(&mut self) -> &mut Shared<C> {
        Arc::make_mut(&mut self.shared)
    }

    /// Caches the requests whose path matches `pattern` with `policy`.
    /// `pattern` is an exact path (`/menu/daily`) or a prefix ending in `*`
    /// (`/schools/*`; `*` alone matches every path), compared with the
    /// normalised path. Routes are tried in the order they were added; the
    /// first match wins; requests no route matches pass through untouched.
    pub fn route(mut self, pattern: &str, policy: RoutePolicy) -> Self {
        self.shared().routes.push(Route::new(pattern, policy));
        self
    }

    /// How the request's `Accept-Encoding` enters the key of a response
    /// that varies on it. By default it is the header's value, trimmed, so
    /// every distinct header gets its own entry; a hook that returns the
    /// coding the compression layer will pick (`br`, `zstd`, `gzip`,
    /// `identity`) makes all the clients that get one coding share one
    /// entry of already-compressed bytes. The hook must agree with the
    /// compression layer's negotiation: an entry is served to every request
    /// for which it returns the same string.
    pub fn accept_encoding<F>(mut self, hook: F) -> Self
    where
        F: Fn(&HeaderMap) -> String + Send + Sync + 'static,
    {
        self.shared().accept_encoding = Some(Arc::new(hook));
        self
    }

    /// Sends the route's tags (see [`RoutePolicy::tags`]) with every cached
    /// shared response, as `Surrogate-Key` (space-separated, Fastly) and
    /// `Cache-Tag` (comma-separated, Cloudflare), so a CDN purge by tag
    /// follows an invalidation. Off by default: the tags name the
    /// application's key layout.
    pub fn tag_headers(mut self, enabled: bool) -> Self {
        self.shared().tag_headers = enabled;
        self
    }

    /// How long a miss waits for a miss of the same key already at the
    /// service (default 5 s). A burst of requests on a cold or expired key
    /// then costs the service one call: the first goes through, the others
    /// wait for it and are served its stored answer (`HIT-L1`). When that
    /// answer is not stored (an error, `no-store`, a different `Vary`
    /// variant) or the wait runs out, each goes to the service itself.
    /// Keys are per variant of the primary key, so per-user routes coalesce
    /// per user only.
    pub fn coalesce(mut self, wait: Duration) -> Self {
        self.shared().coalesce = Some(wait);
        self
    }

    /// Turns miss coalescing off: every miss calls the service.
    pub fn no_coalescing(mut self) -> Self {
        self.shared().coalesce = None;
        self
    }

    /// The cache the layer stores into: the handle to invalidate with.
    pub fn cache(&self) -> &Cache<C> {
        &self.shared.cache
    }
}

impl<S, C> Layer<S> for CacheLayer<C> {
    type Service = CacheService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn routes_derive_their_headers_once() {
        let route = Route::new(
            "/menu/*",
            RoutePolicy::new(Duration::from_secs(60))
                .stale_while_revalidate(Duration::from_secs(30))
                .s_maxage(Duration::from_secs(300))
                .namespace("menu:daily:"),
        );
        assert_eq!(
            route.public,
            "public, max-age=60, s-maxage=300, stale-while-revalidate=30"
        );
        assert_eq!(route.private, "private, max-age=60");
        assert_eq!(route.surrogate_key.as_ref().unwrap(), "menu:* menu:daily:*");
        assert_eq!(route.cache_tag.as_ref().unwrap(), "menu:*,menu:daily:*");
        assert_eq!(route.options, EntryOptions::new(Duration::from_secs(90)));
        assert!(route.stores());
        assert!(!Route::new("*", RoutePolicy::new(Duration::ZERO)).stores());
    }

    #[test]
    fn refreshes_are_one_per_key_and_bounded() {
        let refreshing = Arc::new(Refreshing::default());
        let first = refreshing.claim("a").unwrap();
        assert!(refreshing.claim("a").is_none());
        drop(first);
        assert!(refreshing.claim("a").is_some(), "released on drop");
        let claims: Vec<_> = (0..MAX_REFRESHES)
            .map(|i| refreshing.claim(&i.to_string()).unwrap())
            .collect();
        assert!(refreshing.claim("one more").is_none());
        drop(claims);
        assert_eq!(refreshing.len(), 0);
    }
}
