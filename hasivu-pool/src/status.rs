//! What a pool reports about itself: counters, a wait histogram, and a
//! status snapshot.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Why connections were closed, counted since the pool was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Closes {
    /// Past their maximum lifetime.
    pub lifetime: u64,
    /// Idle longer than the idle timeout.
    pub idle: u64,
    /// Used the maximum number of times.
    pub uses: u64,
    /// Reported broken by the caller or the manager, or failed validation.
    pub broken: u64,
    /// Closed by a drain.
    pub drain: u64,
    /// Closed because the caller was dropped (a client that left, a
    /// timeout around `get`) while the connection was being checked: its
    /// state is unknown.
    pub cancelled: u64,
}

/// Acquire waits, summarised from a log-scale histogram (buckets double
/// from 1 µs, so quantiles are within a factor of two).
///
/// Every acquire that ended counts, with the time until it ended: served,
/// timed out (so a timeout is the longest wait of all, and p99 does not
/// hide them), or failed with another error. Acquires whose caller was
/// dropped before they ended are not counted. The
/// `hasivu_pool_acquire_wait_seconds` histogram records the same waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WaitSummary {
    /// Acquires that ended (served or failed).
    pub count: u64,
    /// Median wait (upper bound of its bucket).
    pub p50: Duration,
    /// 99th percentile wait (upper bound of its bucket).
    pub p99: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// A snapshot of a pool (serializable, e.g. for a health or dashboard
/// endpoint; durations as `{ "secs", "nanos" }`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// The configured maximum.
    pub max_size: usize,
    /// Connections alive: idle, in use and being created.
    pub size: usize,
    /// Idle connections.
    pub idle: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Connections being created.
    pub creating: usize,
    /// Callers waiting for a connection.
    pub waiters: usize,
    /// Connections created.
    pub creates: u64,
    /// Failed creations.
    pub create_failures: u64,
    /// Acquires that timed out.
    pub timeouts: u64,
    /// Closed connections by reason.
    pub closes: Closes,
    /// Acquire waits, failed acquires included.
    pub wait: WaitSummary,
    /// Whether the circuit breaker is refusing acquires.
    pub breaker_open: bool,
    /// The backend's last error, as text.
    pub last_error: Option<String>,
    /// Whether the pool is draining or closed.
    pub closed: bool,
}

const BUCKETS: usize = 40;

/// Counters shared by the pool's operations.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) creates: AtomicU64,
    pub(crate) create_failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) close_lifetime: AtomicU64,
    pub(crate) close_idle: AtomicU64,
    pub(crate) close_uses: AtomicU64,
    pub(crate) close_broken: AtomicU64,
    pub(crate) close_drain: AtomicU64,
    pub(crate) close_cancelled: AtomicU64,
    waits: [AtomicU64; BUCKETS],
    max_wait_nanos: AtomicU64,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Lifetime,
    Idle,
    Uses,
    Broken,
    Drain,
    Cancelled,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Lifetime => "lifetime",
            CloseReason::Idle => "idle",
            CloseReason::Uses => "uses",
            CloseReason::Broken => "broken",
            CloseReason::Drain => "drain",
            CloseReason::Cancelled => "cancelled",
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            creates: AtomicU64::new(0),
            create_failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            close_lifetime: AtomicU64::new(0),
            close_idle: AtomicU64::new(0),
            close_uses: AtomicU64::new(0),
            close_broken: AtomicU64::new(0),
            close_drain: AtomicU64::new(0),
            close_cancelled: AtomicU64::new(0),
            waits: std::array::from_fn(|_| AtomicU64::new(0)),
            max_wait_nanos: AtomicU64::new(0),
        }
    }
}

impl Counters {
    pub(crate) fn closed(&self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Lifetime => &self.close_lifetime,
            CloseReason::Idle => &self.close_idle,
            CloseReason::Uses => &self.close_uses,
            CloseReason::Broken => &self.close_broken,
            CloseReason::Drain => &self.close_drain,
            CloseReason::Cancelled => &self.close_cancelled,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn wait(&self, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let bucket = (64 - micros.leading_zeros() as usize).min(BUCKETS - 1);
        self.waits[bucket].fetch_add(1, Relaxed);
        self.max_wait_nanos.fetch_max(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    pub(crate) fn closes(&self) -> Closes {
        Closes {
            lifetime: self.close_lifetime.load(Relaxed),
            idle: self.close_idle.load(Relaxed),
            uses: self.close_uses.load(Relaxed),
            broken: self.close_broken.load(Relaxed),
            drain: self.close_drain.load(Relaxed),
            cancelled: self.close_cancelled.load(Relaxed),
        }
    }

    pub(crate) fn wait_summary(&self) -> WaitSummary {
        let counts: Vec<u64> = self.waits.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    // Bucket b holds waits below 2^b µs.
                    return Duration::from_micros(1u64 << bucket.min(63));
                }
            }
            Duration::MAX
        };
        WaitSummary {
            count,
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: Duration::from_nanos(self.max_wait_nanos.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_log_buckets() {
        let c = Counters::default();
        for _ in 0..98 {
            c.wait(Duration::from_micros(3));
        }
        c.wait(Duration::from_millis(5));
        c.wait(Duration::from_millis(80));
        let s = c.wait_summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_micros(4));
        assert_eq!(s.p99, Duration::from_micros(8192));
        assert_eq!(s.max, Duration::from_millis(80));
        assert_eq!(Counters::default().wait_summary().p99, Duration::ZERO);
    }
}
