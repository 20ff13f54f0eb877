//! Internal entry points for the workspace's fuzz targets (feature
//! `fuzzing`). Not part of the public API: no semver guarantee, hidden from
//! the docs, never enabled by default.

use std::time::Duration;

/// The configuration duration syntax (`250ms`, `5m`, a bare number of
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}
