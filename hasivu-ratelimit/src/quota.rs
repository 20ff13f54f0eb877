//! Quotas: how many requests per window, with what burst.

use std::time::Duration;

/// `limit` requests per `window`, with an optional burst.
///
/// What "per window" means depends on the store's algorithm:
///
/// - **GCRA** (the local store): a rested key may spend `burst` requests at
///   once (default: `limit`), then earns one every `window / limit`. Over a
///   long run the rate is `limit / window`; the first window of a rested key
///   can admit up to `burst + limit`.
/// - **Sliding window** (the Redis store): at most `limit` requests in any
///   `window`, exactly with the sliding log and approximately (previous
///   window weighted by its overlap) with the sliding-window counter; the
///   burst is not used.
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::Quota;
///
/// let general = Quota::new(1000, Duration::from_secs(15 * 60));
/// assert_eq!(general.limit(), 1000);
/// // A tier multiplier or the load factor scales both limit and burst.
/// assert_eq!(general.scaled(0.5).limit(), 500);
///
/// // From configuration: durations as "15m", "1h", "30s".
/// let login: Quota = serde_json::from_str(r#"{ "limit": 10, "window": "15m", "burst": 5 }"#).unwrap();
/// assert_eq!(login, Quota::new(10, Duration::from_secs(900)).burst(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    limit: u32,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    window: Duration,
    #[serde(default)]
    burst: Option<u32>,
    /// Read by the local store when full.
    #[serde(default)]
    pub(crate) when_full: WhenFull,
}

/// What the in-process store ([`LocalStore`](crate::LocalStore)) does
/// with a new key when the key's shard is full and every key it holds is
/// still counting. The Redis store ignores it; its local fallback
/// (`FailPolicy::Local`) is a `LocalStore` and follows it.
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::{Quota, WhenFull};
///
/// // Brute-force sensitive: never admit an uncounted login.
/// let login = Quota::new(10, Duration::from_secs(900)).burst(5).when_full(WhenFull::Refuse);
/// let configured: Quota = serde_json::from_str(
///     r#"{ "limit": 10, "window": "15m", "burst": 5, "when_full": "refuse" }"#,
/// ).unwrap();
/// assert_eq!(configured, login);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Forget the key closest to rested (the one owing the least, the new
    /// key included), so actively limited keys are the last to go. The
    /// forgotten key starts afresh: fails open for that one key.
    #[default]
    Evict,
    /// Refuse the new key's request with a retry-after, forgetting
    /// nothing: fails closed for new clients while the store is full. For
    /// policies where an uncounted request costs more than a refused one
    /// (login, payments).
    Refuse,
}

impl Quota {
    /// `limit` requests per `window`. A limit of 0 refuses everything; a
    /// zero window is treated as one nanosecond.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window: window.max(Duration::from_nanos(1)),
            burst: None,
            when_full: WhenFull::Evict,
        }
    }

    /// `limit` requests per second.
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute.
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour.
    pub fn per_hour(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// The burst a rested key may spend at once (GCRA stores; default
    /// `limit`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// What the local store does with a new key when it is full (default
    /// [`WhenFull::Evict`]; [`WhenFull::Refuse`] for strict policies).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// The number of requests per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The burst (`limit` unless set).
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or(self.limit)
    }

    /// The quota with limit and burst multiplied by `factor` (rounded down,
    /// but never below 1 when the original was not 0).
    pub fn scaled(&self, factor: f64) -> Self {
        if factor == 1.0 {
            return *self;
        }
        let scale = |n: u32| {
            if n == 0 {
                0
            } else {
                // `as` saturates at the u32 bounds, which is what a quota wants.
                ((f64::from(n) * factor.max(0.0)).floor() as u32).max(1)
            }
        };
        Self {
            limit: scale(self.limit),
            window: self.window,
            burst: self.burst.map(scale),
            when_full: self.when_full,
        }
    }

    /// The time one request's worth of quota takes to come back, in
    /// nanoseconds (`u64::MAX` for a limit of 0).
    pub(crate) fn emission_nanos(&self) -> u64 {
        if self.limit == 0 {
            return u64::MAX;
        }
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        (window / u64::from(self.limit)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_rounds_down_and_keeps_one() {
        let q = Quota::per_minute(5).burst(3);
        assert_eq!(q.scaled(0.5).limit(), 2);
        assert_eq!(q.scaled(0.5).burst_size(), 1);
        assert_eq!(q.scaled(0.01).limit(), 1);
        assert_eq!(q.scaled(10.0).limit(), 50);
        assert_eq!(Quota::per_minute(0).scaled(10.0).limit(), 0);
        assert_eq!(q.scaled(1.0), q);
    }

    #[test]
    fn emission_interval() {
        assert_eq!(Quota::per_second(4).emission_nanos(), 250_000_000);
        assert_eq!(Quota::per_second(0).emission_nanos(), u64::MAX);
        assert_eq!(
            Quota::new(1000, Duration::from_secs(900)).emission_nanos(),
            900_000_000
        );
    }

    #[test]
    fn configuration_errors_are_reported() {
        assert!(serde_json::from_str::<Quota>(r#"{ "limit": 10 }"#).is_err());
        assert!(
            serde_json::from_str::<Quota>(r#"{ "limit": 10, "window": "5 parsecs" }"#).is_err()
        );
        assert!(
            serde_json::from_str::<Quota>(r#"{ "limit": 10, "window": "1m", "brust": 2 }"#)
                .is_err()
        );
    }
}
