//! At most one warning per interval for a failure that repeats per call:
//! during a Redis outage every write, invalidation and L2 read fails, and
//! a client decides how many of those a service makes.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How often a repeated failure is logged at most.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets one event through per interval and counts the others.
#[derive(Debug)]
pub(crate) struct LogGate {
    origin: Instant,
    every: u64,
    /// Nanoseconds after `origin` from which the next event may pass.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            origin: Instant::now(),
            every: nanos(every),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this event may be logged (with how many
    /// were held back since the last one), `None` when it is held back.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let at = nanos(now.saturating_duration_since(self.origin));
        let next = self.next.load(Ordering::Relaxed);
        if at >= next
            && self
                .next
                .compare_exchange(
                    next,
                    at.saturating_add(self.every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_a_count_of_the_rest() {
        let gate = LogGate::new(Duration::from_secs(10));
        let t0 = gate.origin;
        assert_eq!(gate.admit_at(t0), Some(0), "the first passes");
        for s in 0..10 {
            assert_eq!(gate.admit_at(t0 + Duration::from_millis(s * 999)), None);
        }
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(10)), Some(10));
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn a_zero_interval_lets_everything_through() {
        let gate = LogGate::new(Duration::ZERO);
        let t0 = gate.origin;
        for _ in 0..3 {
            assert_eq!(gate.admit_at(t0), Some(0));
        }
    }
}
