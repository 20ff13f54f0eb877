//! Pool settings.

use std::time::Duration;

use crate::duration;

/// How a pool sizes, checks and retires its connections.
///
/// The defaults are the report's (section 5.2): at most 10 connections,
/// at least 1 idle, acquire and create timeouts of 30 s, destroy 5 s, idle
/// timeout 5 min, reaping every minute, creation retried after 200 ms
/// (doubling, with jitter, up to 30 s), at most 1000 uses per connection;
/// plus a maximum lifetime of 30 min shortened by up to 2.5 % at random
/// (HikariCP's rule) so connections do not all expire together, validation
/// of connections idle for more than 500 ms, and a circuit breaker that
/// opens after 3 consecutive creation failures.
///
/// ```
/// use std::time::Duration;
/// use hasivu_pool::PoolConfig;
///
/// let database = PoolConfig::default().max_size(5).min_idle(1);
/// let from_file: PoolConfig = serde_json::from_str(
///     r#"{ "max_size": 5, "acquire_timeout": "2s", "idle_timeout": "5m" }"#,
/// ).unwrap();
/// assert_eq!(from_file.max_size, 5);
/// assert_eq!(from_file.acquire_timeout, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The most connections, in use and idle (at least 1).
    pub max_size: usize,
    /// Idle connections kept ready; refilled in the background and never
    /// retired by the idle timeout.
    pub min_idle: usize,
    /// How long `get` waits for a connection.
    #[serde(deserialize_with = "duration::deserialize")]
    pub acquire_timeout: Duration,
    /// How long creating one connection may take.
    #[serde(deserialize_with = "duration::deserialize")]
    pub create_timeout: Duration,
    /// How long validating one connection may take.
    #[serde(deserialize_with = "duration::deserialize")]
    pub validate_timeout: Duration,
    /// How long destroying one connection may take.
    #[serde(deserialize_with = "duration::deserialize")]
    pub destroy_timeout: Duration,
    /// Idle connections beyond `min_idle` are retired after this long.
    #[serde(deserialize_with = "duration::deserialize")]
    pub idle_timeout: Duration,
    /// Connections are retired after this long (minus jitter), idle or not:
    /// a connection in use is retired when it comes back.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_lifetime: Duration,
    /// The largest share of `max_lifetime` taken off at random per
    /// connection (0.0–1.0).
    pub lifetime_jitter: f64,
    /// Connections are retired after this many checkouts (0: no limit).
    pub max_uses: u32,
    /// Connections idle for at least this long are validated on checkout
    /// (`0s`: always).
    #[serde(deserialize_with = "duration::deserialize")]
    pub validate_after: Duration,
    /// How often the background task reaps, refills and looks for leaks.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reap_interval: Duration,
    /// The first delay before retrying a failed creation.
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_initial: Duration,
    /// The longest delay between creation retries.
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_max: Duration,
    /// Consecutive creation failures that open the circuit breaker (0: no
    /// breaker).
    pub breaker_threshold: u32,
    /// A connection held longer than this is reported as a possible leak,
    /// with the place it was acquired (`None`: no leak detection).
    #[serde(deserialize_with = "duration::deserialize_option")]
    pub leak_threshold: Option<Duration>,
    /// Hand out the most recently returned idle connection first (default),
    /// or the oldest (`false`). Waiters are always served first in, first
    /// out.
    pub lifo: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 1,
            acquire_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(30),
            validate_timeout: Duration::from_secs(5),
            destroy_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(1800),
            lifetime_jitter: 0.025,
            max_uses: 1000,
            validate_after: Duration::from_millis(500),
            reap_interval: Duration::from_secs(60),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            breaker_threshold: 3,
            leak_threshold: Some(Duration::from_secs(60)),
            lifo: true,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl PoolConfig {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`max_size`](Self::max_size).
    max_size: usize,
    /// Sets [`min_idle`](Self::min_idle).
    min_idle: usize,
    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    acquire_timeout: Duration,
    /// Sets [`create_timeout`](Self::create_timeout).
    create_timeout: Duration,
    /// Sets [`validate_timeout`](Self::validate_timeout).
    validate_timeout: Duration,
    /// Sets [`destroy_timeout`](Self::destroy_timeout).
    destroy_timeout: Duration,
    /// Sets [`idle_timeout`](Self::idle_timeout).
    idle_timeout: Duration,
    /// Sets [`max_lifetime`](Self::max_lifetime).
    max_lifetime: Duration,
    /// Sets [`lifetime_jitter`](Self::lifetime_jitter).
    lifetime_jitter: f64,
    /// Sets [`max_uses`](Self::max_uses).
    max_uses: u32,
    /// Sets [`validate_after`](Self::validate_after).
    validate_after: Duration,
    /// Sets [`reap_interval`](Self::reap_interval).
    reap_interval: Duration,
    /// Sets [`retry_initial`](Self::retry_initial).
    retry_initial: Duration,
    /// Sets [`retry_max`](Self::retry_max).
    retry_max: Duration,
    /// Sets [`breaker_threshold`](Self::breaker_threshold).
    breaker_threshold: u32,
    /// Sets [`leak_threshold`](Self::leak_threshold).
    leak_threshold: Option<Duration>,
    /// Sets [`lifo`](Self::lifo).
    lifo: bool,
}

impl PoolConfig {
    /// The config with its bounds enforced: `max_size` at least 1,
    /// `min_idle` at most `max_size`, jitter within 0–1.
    pub(crate) fn normalised(mut self) -> Self {
        self.max_size = self.max_size.max(1);
        self.min_idle = self.min_idle.min(self.max_size);
        self.lifetime_jitter = self.lifetime_jitter.clamp(0.0, 1.0);
        self.reap_interval = self.reap_interval.max(Duration::from_millis(1));
        self
    }
}
