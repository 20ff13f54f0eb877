use std::borrow::Cow;

use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// What a [`RouteExtractor`] sees of a request: its head, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn new<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request target. Never use its path as a label: every distinct
    /// path would become a series.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions, where routers leave the matched route.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// Finds the route template of a request (`/users/{id}`, never
/// `/users/42`); `None` labels it `unmatched`.
///
/// Implemented for closures `Fn(&RequestHead<'_>) -> Option<String>`; a
/// type implementing the trait can instead borrow from the request, which
/// saves an allocation per request.
///
/// ```
/// use hasivu_metrics::{MetricsLayer, RequestHead};
///
/// // Group by the first path segment: `/users/42` → `/users/…`.
/// let layer = MetricsLayer::new().route(|head: &RequestHead<'_>| {
///     let first = head.uri().path().split('/').nth(1)?;
///     matches!(first, "users" | "orders").then(|| format!("/{first}/…"))
/// });
/// # let _ = layer;
/// ```
pub trait RouteExtractor: Clone + Send + Sync + 'static {
    /// The route template, borrowed from the request or owned.
    fn route<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, str>>;
}

impl<F> RouteExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn route<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, str>> {
        self(head).map(Cow::Owned)
    }
}

/// A route template put in the request extensions by a router or an outer
/// layer; [`DefaultRoute`] reads it first.
///
/// ```
/// use hasivu_metrics::RouteTemplate;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(RouteTemplate::new("/users/{id}"));
/// # assert_eq!(request.extensions().get::<RouteTemplate>().unwrap().as_str(), "/users/{id}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteTemplate(Cow<'static, str>);

impl RouteTemplate {
    /// A template such as `/users/{id}`.
    pub fn new(template: impl Into<Cow<'static, str>>) -> Self {
        Self(template.into())
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The default [`RouteExtractor`]: a [`RouteTemplate`] extension, else
/// (feature `axum`) axum's `MatchedPath`, else `unmatched`.
///
/// axum puts `MatchedPath` in the extensions before it calls a route's
/// layers, so add [`MetricsLayer`](crate::MetricsLayer) with
/// `Router::layer` (which also wraps the fallback: unmatched requests are
/// measured under `unmatched`) or `Router::route_layer` (matched routes
/// only). Wrapped around the whole router as a service, it sees no
/// `MatchedPath` and every request is `unmatched`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRoute;

impl RouteExtractor for DefaultRoute {
    #[inline]
    fn route<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, str>> {
        if let Some(template) = head.extensions().get::<RouteTemplate>() {
            return Some(Cow::Borrowed(template.as_str()));
        }
        #[cfg(feature = "axum")]
        if let Some(path) = head.extensions().get::<axum::extract::MatchedPath>() {
            return Some(Cow::Borrowed(path.as_str()));
        }
        None
    }
}

/// Tells from a response's extensions whether a cache answered it:
/// `Some(true)` a hit, `Some(false)` a miss, `None` no cache involved.
/// When it says `None`, the layer falls back to the `X-Cache` header.
///
/// Implemented for closures `Fn(&http::Extensions) -> Option<bool>`. With
/// `hasivu-cache` the example plugs its `CacheStatus` in:
///
/// ```
/// # mod hasivu_cache {
/// #     #[derive(Clone, Copy)] pub struct CacheStatus;
/// #     impl CacheStatus { pub fn is_hit(self) -> bool { true } }
/// # }
/// use hasivu_cache::CacheStatus;
/// use hasivu_metrics::MetricsLayer;
///
/// let layer = MetricsLayer::new().cache_hit(|extensions: &http::Extensions| {
///     extensions.get::<CacheStatus>().map(|status| status.is_hit())
/// });
/// # let _ = layer;
/// ```
///
/// (`CacheStatus::Bypass`, a request the cache did not look up, counts as
/// a miss that way; match on the variants to leave it out.)
pub trait CacheHit: Clone + Send + Sync + 'static {
    /// Whether the response came from a cache.
    fn cache_hit(&self, extensions: &Extensions) -> Option<bool>;
}

impl<F> CacheHit for F
where
    F: Fn(&Extensions) -> Option<bool> + Clone + Send + Sync + 'static,
{
    fn cache_hit(&self, extensions: &Extensions) -> Option<bool> {
        self(extensions)
    }
}

/// The default [`CacheHit`]: no extension; the `X-Cache` header alone
/// decides.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCacheHook;

impl CacheHit for NoCacheHook {
    #[inline]
    fn cache_hit(&self, _: &Extensions) -> Option<bool> {
        None
    }
}

/// Reads `X-Cache`: a first token starting with `HIT` or `STALE` is a hit,
/// `MISS` a miss, anything else (`BYPASS`, absent) no cache involved.
pub(crate) fn x_cache(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get("x-cache")?.as_bytes();
    let first = value
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let starts = |prefix: &[u8]| {
        first.len() >= prefix.len() && first[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if starts(b"HIT") || starts(b"STALE") {
        Some(true)
    } else if starts(b"MISS") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn x_cache_values() {
        let read = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-cache", HeaderValue::from_static(value));
            x_cache(&headers)
        };
        assert_eq!(read("HIT-L1"), Some(true));
        assert_eq!(read("hit"), Some(true));
        assert_eq!(read("STALE"), Some(true));
        assert_eq!(read("MISS"), Some(false));
        assert_eq!(read("Miss from cloudfront"), Some(false));
        assert_eq!(read("HIT, MISS"), Some(true));
        assert_eq!(read("BYPASS"), None);
        assert_eq!(read(""), None);
        assert_eq!(x_cache(&HeaderMap::new()), None);
    }

    #[test]
    fn the_default_route_reads_a_template_extension() {
        let mut request = Request::new(());
        assert_eq!(DefaultRoute.route(&RequestHead::new(&request)), None);
        request
            .extensions_mut()
            .insert(RouteTemplate::new("/users/{id}"));
        assert_eq!(
            DefaultRoute.route(&RequestHead::new(&request)).as_deref(),
            Some("/users/{id}")
        );
    }
}
