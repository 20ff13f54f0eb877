//! Route policies: how the responses of one route are cached.

use std::{fmt, sync::Arc, time::Duration};

use http::request::Parts;

/// The per-user key extractor of a route; see [`RoutePolicy::per_user`].
pub(crate) type PerUser = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The statuses cached by default: those RFC 9110 calls heuristically
/// cacheable, less 206 (ranges), 405, 414 and 501.
pub(crate) const DEFAULT_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// How the responses of one route are cached: TTL, stale-while-revalidate,
/// which statuses, under which key namespace, the body size cap, the
/// headers sent to clients and CDNs, and whether requests with credentials
/// get entries of their own.
///
/// ```
/// use std::time::Duration;
/// use hasivu_cache::RoutePolicy;
///
/// let menu = RoutePolicy::new(Duration::from_secs(60))
///     .stale_while_revalidate(Duration::from_secs(30))
///     .s_maxage(Duration::from_secs(300))
///     .statuses([200, 404])
///     .namespace("menu:daily:")
///     .max_body_bytes(256 * 1024);
/// # let _ = menu;
/// ```
///
/// The plain fields also load from configuration (any serde format;
/// durations as `"250ms"`, `"30s"`, `"5m"` or seconds; missing fields take
/// the defaults). The per-user extractor is code and is set with
/// [`per_user`](Self::per_user):
///
/// ```
/// use std::time::Duration;
/// use hasivu_cache::RoutePolicy;
///
/// let policy: RoutePolicy = serde_json::from_str(
///     r#"{ "ttl": "60s", "stale_while_revalidate": "30s", "namespace": "menu:daily:",
///          "statuses": [200, 404] }"#,
/// ).unwrap();
/// assert_eq!(policy.ttl(), Duration::from_secs(60));
/// ```
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutePolicy {
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) ttl: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) stale_while_revalidate: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize_option")]
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) statuses: Vec<u16>,
    pub(crate) namespace: String,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) max_body_bytes: usize,
    pub(crate) cache_control: bool,
    pub(crate) query_params: Option<Vec<String>>,
    #[serde(skip)]
    pub(crate) per_user: Option<PerUser>,
}

impl fmt::Debug for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePolicy")
            .field("ttl", &self.ttl)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .field("s_maxage", &self.s_maxage)
            .field("statuses", &self.statuses)
            .field("namespace", &self.namespace)
            .field("tags", &self.tags)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cache_control", &self.cache_control)
            .field("query_params", &self.query_params)
            .field("per_user", &self.per_user.is_some())
            .finish()
    }
}

impl Default for RoutePolicy {
    /// A 60 s TTL and the other defaults of [`new`](Self::new).
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl RoutePolicy {
    /// Responses fresh for `ttl`, and the defaults: no
    /// stale-while-revalidate, no `s-maxage`, the statuses 200, 203, 204,
    /// 300, 301, 308, 404 and 410, namespace `http:`, tags derived from the
    /// namespace, bodies up to 1 MiB, `Cache-Control` emitted, requests
    /// with `Authorization` or `Cookie` not cached, every query parameter
    /// part of the key.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            stale_while_revalidate: Duration::ZERO,
            s_maxage: None,
            statuses: DEFAULT_STATUSES.to_vec(),
            namespace: "http:".to_owned(),
            tags: None,
            max_body_bytes: 1024 * 1024,
            cache_control: true,
            query_params: None,
            per_user: None,
        }
    }

    /// After its TTL, a response is served for up to `window` more (as
    /// `X-Cache: STALE`) while one request per key refreshes it in the
    /// background. Default none.
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// The `s-maxage` sent to shared caches (CDNs) in `Cache-Control`;
    /// default none (they use `max-age`, the TTL).
    #[must_use]
    pub fn s_maxage(mut self, s_maxage: Duration) -> Self {
        self.s_maxage = Some(s_maxage);
        self
    }

    /// The statuses that are cached (default 200, 203, 204, 300, 301, 308,
    /// 404, 410). Others pass through uncached.
    #[must_use]
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// The prefix of this route's keys (default `http:`). Give each route
    /// its own, such as `menu:daily:`, so that
    /// [`Cache::invalidate`](crate::Cache::invalidate) with `menu:*` or
    /// `menu:daily:*` makes its entries miss on every instance.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The `Surrogate-Key` / `Cache-Tag` values of this route's responses
    /// when the layer emits them ([`CacheLayer::tag_headers`](super::CacheLayer::tag_headers)).
    /// By default, one `prefix*` pattern per `:`-terminated prefix of the
    /// namespace (`menu:daily:` gives `menu:*` and `menu:daily:*`): the
    /// patterns an [`Invalidation`](crate::Invalidation) of this route
    /// lists, so a CDN purge by those tags matches.
    #[must_use]
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Requests with `Authorization` or `Cookie` are cached per user: `key`
    /// reads the user's id from the request (a verified token's subject, a
    /// session id) and it becomes part of the key; `None` passes the
    /// request through uncached. Such responses are sent with
    /// `Cache-Control: private, max-age=…` (also with
    /// [`cache_control(false)`](Self::cache_control)) and without tags, so
    /// no shared cache downstream keeps them. Requests without credentials
    /// still share one entry.
    ///
    /// Without it (the default), requests carrying `Authorization` or
    /// `Cookie` are never looked up or stored.
    #[must_use]
    pub fn per_user<F>(mut self, key: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.per_user = Some(Arc::new(key));
        self
    }

    /// Bodies longer than this are not cached (default 1 MiB): they are
    /// buffered up to the cap, then sent on as they stream, complete.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Whether the layer sets `Cache-Control` on the responses it caches
    /// (default `true`): `public, max-age=<ttl>` plus `s-maxage` and
    /// `stale-while-revalidate` when set, or `private, max-age=<ttl>` for
    /// per-user entries. With `false`, the handler's own `Cache-Control` is
    /// stored and sent, except on per-user entries, which are always sent
    /// `private`.
    #[must_use]
    pub fn cache_control(mut self, enabled: bool) -> Self {
        self.cache_control = enabled;
        self
    }

    /// Only these query parameters are part of the key; the others are
    /// dropped from the request before the service sees it, so the cached
    /// answer is exactly the answer to the key. An empty list ignores the
    /// query altogether.
    ///
    /// By default every parameter counts, as in most CDNs: then a client
    /// can make a new entry per request with a cache-busting parameter
    /// (`?junk=1`, `?junk=2`…), pushing useful entries out of L1 and
    /// filling L2 until their caps. Declare the parameters each route
    /// reads. Names are compared after normalisation (`p%61ge` is `page`),
    /// case-sensitively.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hasivu_cache::RoutePolicy;
    ///
    /// // `/products?page=2&utm_source=mail` is cached and served as
    /// // `/products?page=2`.
    /// let products = RoutePolicy::new(Duration::from_secs(60)).query_params(["page", "sort"]);
    /// // `/menu?anything` is `/menu`.
    /// let menu = RoutePolicy::new(Duration::from_secs(60)).query_params(Vec::<String>::new());
    /// # let _ = (products, menu);
    /// ```
    #[must_use]
    pub fn query_params<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.query_params = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The tags: those set with [`tags`](Self::tags), else derived from the
    /// namespace.
    pub(crate) fn effective_tags(&self) -> Vec<String> {
        if let Some(tags) = &self.tags {
            return tags.clone();
        }
        let mut tags = Vec::new();
        for (i, c) in self.namespace.char_indices() {
            if c == ':' {
                tags.push(format!("{}*", crate::escape_glob(&self.namespace[..=i])));
            }
        }
        if tags.is_empty() && !self.namespace.is_empty() {
            tags.push(format!("{}*", crate::escape_glob(&self.namespace)));
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_namespace() {
        let policy = RoutePolicy::default().namespace("menu:daily:");
        assert_eq!(policy.effective_tags(), ["menu:*", "menu:daily:*"]);
        assert_eq!(RoutePolicy::default().effective_tags(), ["http:*"]);
        assert_eq!(
            RoutePolicy::default().namespace("menu").effective_tags(),
            ["menu*"]
        );
        assert_eq!(
            RoutePolicy::default().tags(["menu"]).effective_tags(),
            ["menu"]
        );
    }

    #[test]
    fn configuration_is_validated() {
        let policy: RoutePolicy = serde_json::from_str(r#"{ "max_body_bytes": 10 }"#).unwrap();
        assert_eq!(policy.max_body_bytes, 10);
        assert_eq!(policy.ttl, Duration::from_secs(60));
        assert_eq!(policy.statuses, DEFAULT_STATUSES);
        assert!(serde_json::from_str::<RoutePolicy>(r#"{ "per_user": true }"#).is_err());
        assert!(serde_json::from_str::<RoutePolicy>(r#"{ "ttl": "soon" }"#).is_err());
    }
}
