//! Per-entry options.

use std::time::Duration;

/// How one entry is cached and loaded.
///
/// The defaults follow the report (300 s in Redis) with a shorter L1 life
/// so that instances converge without a backplane: L1 60 s, L2 300 s, no
/// jitter, no fail-safe, no loader timeouts, no eager refresh.
///
/// ```
/// use std::time::Duration;
/// use hasivu_cache::EntryOptions;
///
/// let menu = EntryOptions::new(Duration::from_secs(300))
///     .l1_ttl(Duration::from_secs(30))
///     .jitter(Duration::from_secs(5))
///     .fail_safe(Duration::from_secs(3600))
///     .soft_timeout(Duration::from_millis(100))
///     .hard_timeout(Duration::from_secs(2))
///     .eager_refresh(0.8);
/// ```
///
/// Options also load from configuration (any serde format); durations are
/// written `"250ms"`, `"30s"`, `"5m"`, `"1h"` or as a number of seconds, and
/// missing fields take the defaults:
///
/// ```
/// use std::time::Duration;
/// use hasivu_cache::EntryOptions;
///
/// let options: EntryOptions = serde_json::from_str(
///     r#"{ "l1_ttl": "30s", "l2_ttl": "5m", "fail_safe": "1h", "eager_refresh": 0.8 }"#,
/// ).unwrap();
/// assert_eq!(
///     options,
///     EntryOptions::new(Duration::from_secs(300))
///         .l1_ttl(Duration::from_secs(30))
///         .fail_safe(Duration::from_secs(3600))
///         .eager_refresh(0.8)
/// );
/// ```
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntryOptions {
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) l1_ttl: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) l2_ttl: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) jitter: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize_option")]
    pub(crate) fail_safe: Option<Duration>,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) fail_safe_throttle: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize_option")]
    pub(crate) soft_timeout: Option<Duration>,
    #[serde(deserialize_with = "crate::duration::deserialize_option")]
    pub(crate) hard_timeout: Option<Duration>,
    #[serde(deserialize_with = "deserialize_share")]
    pub(crate) eager_refresh: Option<f64>,
    pub(crate) skip_l1: bool,
    pub(crate) skip_l2: bool,
}

/// An eager-refresh share from configuration: outside `0.0..1.0` is off, as
/// with [`EntryOptions::eager_refresh`].
fn deserialize_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let share: Option<f64> = serde::Deserialize::deserialize(d)?;
    Ok(share.filter(|share| *share > 0.0 && *share < 1.0))
}

impl Default for EntryOptions {
    fn default() -> Self {
        Self {
            l1_ttl: Duration::from_secs(60),
            l2_ttl: Duration::from_secs(300),
            jitter: Duration::ZERO,
            fail_safe: None,
            fail_safe_throttle: Duration::from_secs(10),
            soft_timeout: None,
            hard_timeout: None,
            eager_refresh: None,
            skip_l1: false,
            skip_l2: false,
        }
    }
}

impl EntryOptions {
    /// Options with `ttl` for both layers.
    pub fn new(ttl: Duration) -> Self {
        Self {
            l1_ttl: ttl,
            l2_ttl: ttl,
            ..Self::default()
        }
    }

    /// How long the value is fresh in L1 (capped by what is left of its L2
    /// life when it was read from L2).
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl;
        self
    }

    /// How long the value lives in Redis.
    #[must_use]
    pub fn l2_ttl(mut self, ttl: Duration) -> Self {
        self.l2_ttl = ttl;
        self
    }

    /// Adds a random extra of up to `jitter` to each TTL, so entries written
    /// together do not all expire together.
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Keeps an expired value for up to `max` after its expiry, and serves
    /// it when the loader fails or times out (fail-safe). After serving it
    /// on a failure, the loader is not called again for the throttle
    /// duration (default 10 s).
    #[must_use]
    pub fn fail_safe(mut self, max: Duration) -> Self {
        self.fail_safe = Some(max);
        self
    }

    /// How long a stale value served after a loader failure counts as fresh
    /// again before the loader is retried (default 10 s).
    #[must_use]
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = throttle;
        self
    }

    /// When a stale value is available, callers wait at most this long for
    /// the loader; then they get the stale value and the loader finishes in
    /// the background, updating the cache.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// Callers wait at most this long for the loader; then they get the
    /// stale value if there is one, else [`Error::Timeout`](crate::Error).
    /// The loader still finishes in the background and updates the cache.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// An access after this fraction of the L1 TTL (e.g. 0.8) starts a
    /// refresh in the background, once per key: a loader call (not a read
    /// of L2, which holds the value being refreshed), so hot keys never
    /// expire in front of callers. Values outside `0.0..1.0` turn it off.
    #[must_use]
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.eager_refresh = (fraction > 0.0 && fraction < 1.0).then_some(fraction);
        self
    }

    /// Does not keep the value in L1.
    #[must_use]
    pub fn skip_l1(mut self) -> Self {
        self.skip_l1 = true;
        self
    }

    /// Does not read or write the value in L2 (a [`Cache::set`] with it
    /// still deletes the value L2 held, which is older).
    ///
    /// [`Cache::set`]: crate::Cache::set
    #[must_use]
    pub fn skip_l2(mut self) -> Self {
        self.skip_l2 = true;
        self
    }

    /// `ttl` plus a random share of the jitter.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        if self.jitter.is_zero() {
            return ttl;
        }
        let extra = fastrand::u64(0..=self.jitter.as_millis().min(u128::from(u64::MAX)) as u64);
        ttl + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_validated() {
        let options: EntryOptions =
            serde_json::from_str(r#"{ "eager_refresh": 0, "hard_timeout": 2 }"#).unwrap();
        assert_eq!(options.eager_refresh, None, "0 turns eager refresh off");
        assert_eq!(options.hard_timeout, Some(Duration::from_secs(2)));
        assert_eq!(options.l1_ttl, EntryOptions::default().l1_ttl);
        let error = serde_json::from_str::<EntryOptions>(r#"{ "l1_ttl": "soon" }"#).unwrap_err();
        assert!(error.to_string().contains("invalid duration"), "{error}");
        assert!(serde_json::from_str::<EntryOptions>(r#"{ "ttl": "1s" }"#).is_err());
    }
}
