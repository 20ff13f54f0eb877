//! Counters: atomics for the `stats()` snapshot, and handles into the
//! `metrics` facade resolved once when the cache is built.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{Counter, Histogram};

/// A snapshot of the cache's counters since it was built (serializable,
/// e.g. for a dashboard endpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Fresh values found in L1.
    pub l1_hits: u64,
    /// Values found in L2 (and promoted to L1).
    pub l2_hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Loader calls started.
    pub loads: u64,
    /// Loader calls that failed or timed out.
    pub load_errors: u64,
    /// Stale values served by the fail-safe.
    pub stale_served: u64,
    /// Failed L2 calls (including calls refused by the open breaker).
    pub l2_errors: u64,
    /// Backplane messages received from other instances and applied.
    pub backplane_received: u64,
    /// Whether the backplane is subscribed and in sync (`None` without
    /// Redis). While it is not, L2 is not read.
    pub backplane_synced: Option<bool>,
    /// The state of the circuit breaker in front of Redis (`None` without
    /// L2).
    pub l2_breaker: Option<crate::BreakerState>,
}

impl CacheStats {
    /// Hits (L1 and L2) over lookups; `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let hits = self.l1_hits + self.l2_hits;
        let total = hits + self.misses;
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

pub(crate) struct Stats {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    stale_served: AtomicU64,
    l2_errors: AtomicU64,
    backplane_received: AtomicU64,
    m_l1_hits: Counter,
    m_l2_hits: Counter,
    m_misses: Counter,
    m_loads: Counter,
    m_load_seconds: Histogram,
    m_load_errors: Counter,
    m_stale: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    m_l2_errors: Counter,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        let name = name.to_owned();
        let lookups = |result: &'static str| metrics::counter!("hasivu_cache_lookups_total", "cache" => name.clone(), "result" => result);
        Self {
            l1_hits: AtomicU64::new(0),
            l2_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            load_errors: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            l2_errors: AtomicU64::new(0),
            backplane_received: AtomicU64::new(0),
            m_l1_hits: lookups("hit_l1"),
            m_l2_hits: lookups("hit_l2"),
            m_misses: lookups("miss"),
            m_loads: metrics::counter!("hasivu_cache_loads_total", "cache" => name.clone()),
            m_load_seconds: metrics::histogram!("hasivu_cache_load_duration_seconds", "cache" => name.clone()),
            m_load_errors: metrics::counter!("hasivu_cache_load_errors_total", "cache" => name.clone()),
            m_stale: metrics::counter!("hasivu_cache_stale_served_total", "cache" => name.clone()),
            m_l2_errors: metrics::counter!("hasivu_cache_l2_errors_total", "cache" => name),
        }
    }

    pub(crate) fn l1_hit(&self) {
        self.l1_hits.fetch_add(1, Relaxed);
        self.m_l1_hits.increment(1);
    }
    pub(crate) fn l2_hit(&self) {
        self.l2_hits.fetch_add(1, Relaxed);
        self.m_l2_hits.increment(1);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
        self.m_misses.increment(1);
    }
    pub(crate) fn load(&self) {
        self.loads.fetch_add(1, Relaxed);
        self.m_loads.increment(1);
    }
    /// How long a loader call took, successful or not.
    pub(crate) fn load_duration(&self, elapsed: std::time::Duration) {
        self.m_load_seconds.record(elapsed.as_secs_f64());
    }
    pub(crate) fn load_error(&self) {
        self.load_errors.fetch_add(1, Relaxed);
        self.m_load_errors.increment(1);
    }
    pub(crate) fn stale(&self) {
        self.stale_served.fetch_add(1, Relaxed);
        self.m_stale.increment(1);
    }
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn l2_error(&self) {
        self.l2_errors.fetch_add(1, Relaxed);
        self.m_l2_errors.increment(1);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn backplane_received(&self) {
        self.backplane_received.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            l1_hits: self.l1_hits.load(Relaxed),
            l2_hits: self.l2_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            loads: self.loads.load(Relaxed),
            load_errors: self.load_errors.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            l2_errors: self.l2_errors.load(Relaxed),
            backplane_received: self.backplane_received.load(Relaxed),
            backplane_synced: None,
            l2_breaker: None,
        }
    }
}
