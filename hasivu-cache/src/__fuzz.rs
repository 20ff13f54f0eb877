//! Internal entry points for the workspace's fuzz targets (feature
//! `fuzzing`): the crate-private parsers that see request bytes. Not part
//! of the public API: no semver guarantee, hidden from the docs, never
//! enabled by default.

use std::time::Duration;

/// The configuration duration syntax (`250ms`, `5m`, a bare number of
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

#[cfg(feature = "http")]
pub use self::http::*;

#[cfg(feature = "http")]
mod http {
    use std::borrow::Cow;

    use http::HeaderValue;

    use crate::http::{headers, key};

    /// Keys longer than this are not cached.
    pub const MAX_KEY_BYTES: usize = key::MAX_KEY_BYTES;

    /// The HTTP cache's path normalisation.
    pub fn normalize_path(path: &str) -> Cow<'_, str> {
        key::normalize_path(path)
    }

    /// The HTTP cache's query normalisation (`None`: empty), keeping only
    /// the parameters `keep` names when given.
    pub fn normalize_query(query: &str, keep: Option<&[String]>) -> Option<String> {
        key::normalize_query(query, keep)
    }

    /// The primary key of a normalised path and query.
    pub fn primary_key(
        namespace: &str,
        path: &str,
        query: Option<&str>,
        user: Option<&str>,
    ) -> String {
        key::primary_key(namespace, path, query, user)
    }

    /// The key of one variant of a response with `Vary`.
    pub fn variant_key<'a>(
        primary: &str,
        parts: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> String {
        key::variant_key(primary, parts)
    }

    /// Whether the route pattern `pattern` selects the normalised `path`.
    pub fn route_matches(pattern: &str, path: &str) -> bool {
        key::RoutePattern::parse(pattern).matches(path)
    }

    /// `Cache-Control` lines read, then written back as the cache writes
    /// them; and whether they forbid storing.
    pub fn cache_control<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> (HeaderValue, bool) {
        let cc = headers::CacheControl::parse(lines);
        (cc.to_header_value(), cc.forbids_storing())
    }

    /// Whether `If-None-Match` lines match `etag`.
    pub fn if_none_match<'a>(lines: impl IntoIterator<Item = &'a [u8]>, etag: &[u8]) -> bool {
        headers::if_none_match(lines, etag)
    }

    /// The strong entity tag the cache computes for `body`.
    pub fn strong_etag(body: &[u8]) -> HeaderValue {
        headers::strong_etag(body)
    }

    /// The `Vary` names of a response (`None`: not cacheable).
    pub fn vary<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<String>> {
        match headers::Vary::parse(lines) {
            headers::Vary::Names(names) => Some(names),
            headers::Vary::Uncacheable => None,
        }
    }
}
