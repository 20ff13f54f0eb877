use http::HeaderValue;

/// What the cache layer did with a request: inserted into the extensions
/// of every response the layer handled (a route matched a GET or HEAD), so
/// that a metrics layer outside it can count hits. The same information
/// goes to clients as the `X-Cache` header.
///
/// ```
/// use hasivu_cache::CacheStatus;
///
/// # fn record(response: &http::Response<()>) {
/// match response.extensions().get::<CacheStatus>() {
///     Some(status) if status.is_hit() => { /* count a hit */ }
///     Some(_) => { /* a miss or a bypass */ }
///     None => { /* not a cached route */ }
/// }
/// # }
/// assert_eq!(CacheStatus::HitL2.as_str(), "HIT-L2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served fresh from this instance's memory (`X-Cache: HIT-L1`).
    HitL1,
    /// Served fresh from Redis (`X-Cache: HIT-L2`).
    HitL2,
    /// Served past its TTL within the stale-while-revalidate window, while
    /// a background request refreshes it (`X-Cache: STALE`).
    Stale,
    /// Answered by the service (`X-Cache: MISS`); stored when cacheable.
    Miss,
    /// Not looked up: the request carries credentials and the route has no
    /// per-user key, or its key is too long (`X-Cache: BYPASS`).
    Bypass,
}

impl CacheStatus {
    /// The `X-Cache` value: `HIT-L1`, `HIT-L2`, `STALE`, `MISS` or
    /// `BYPASS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitL1 => "HIT-L1",
            CacheStatus::HitL2 => "HIT-L2",
            CacheStatus::Stale => "STALE",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Whether the answer came from the cache (fresh or stale) without
    /// waiting for the service.
    pub const fn is_hit(self) -> bool {
        matches!(
            self,
            CacheStatus::HitL1 | CacheStatus::HitL2 | CacheStatus::Stale
        )
    }

    pub(crate) const fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
