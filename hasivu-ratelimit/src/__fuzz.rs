//! Internal entry points for the workspace's fuzz targets (feature
//! `fuzzing`): the crate-private parsers and decoders that see request
//! bytes. Not part of the public API: no semver guarantee, hidden from the
//! docs, never enabled by default.

use std::{borrow::Cow, net::IpAddr, time::Duration};

use crate::{Quota, shield::detect::decode};

/// The shield's percent-decoding of a URL component (twice, `%uXXXX`,
/// overlong UTF-8; `+` as a space when `plus`).
pub fn percent(raw: &str, plus: bool) -> Cow<'_, str> {
    decode::percent(raw, plus)
}

/// The shield's HTML character reference decoding (one round).
pub fn html_entities(text: &str) -> Cow<'_, str> {
    decode::html_entities(text)
}

/// Whether the raw text uses encodings only an attacker sends.
pub fn has_evasive_encoding(raw: &str) -> bool {
    decode::has_evasive_encoding(raw)
}

/// Every string literal of a JSON text, raw and unescaped.
pub fn json_strings<'a>(json: &'a str, f: impl FnMut(&'a str, Cow<'a, str>)) {
    decode::json_strings(json, f);
}

/// The raw `name=value` pairs of a query string or form body.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    decode::pairs(query)
}

/// The longest prefix of at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    decode::truncate(text, max)
}

/// The `X-Forwarded-For` hops of header values given in order, right to
/// left, at most [`TrustedProxies::MAX_HOPS`](crate::TrustedProxies::MAX_HOPS)
/// (`None`: not an address).
pub fn x_forwarded_for_hops<'a>(
    values: impl DoubleEndedIterator<Item = &'a str>,
) -> Vec<Option<IpAddr>> {
    crate::client_ip::x_forwarded_for_hops(values.rev().map(str::as_bytes)).collect()
}

/// The `for=` nodes of `Forwarded` header values given in order, right to
/// left, at most `MAX_HOPS` (`None`: not an address, or no `for=`).
pub fn forwarded_hops<'a>(values: impl DoubleEndedIterator<Item = &'a str>) -> Vec<Option<IpAddr>> {
    crate::client_ip::forwarded_hops(values.rev().map(str::as_bytes)).collect()
}

/// The configuration duration syntax (`250ms`, `5m`, a bare number of
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

/// The GCRA emission interval of a quota, in nanoseconds.
pub fn emission_nanos(quota: &Quota) -> u64 {
    quota.emission_nanos()
}
