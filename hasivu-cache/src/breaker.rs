//! A circuit breaker for the L2 backend: pure state, no I/O.

// Only the Redis L2 uses the breaker; without it only `BreakerState` remains.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

/// The state of the circuit breaker in front of Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls fail at once without touching Redis, until the open period ends.
    Open,
    /// The open period ended: one probe call at a time goes through; its
    /// success closes the breaker, its failure opens it again.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Opens after `failure_threshold` consecutive failures and stays open for
/// `open_for`, then lets one probe through at a time.
#[derive(Debug)]
pub(crate) struct Breaker {
    failure_threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker. A threshold of 0 behaves like 1.
    pub(crate) fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is always valid between statements, so a panic elsewhere
        // while holding the lock leaves nothing half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the backend now. In half-open state this
    /// hands out the single probe; the caller must then report
    /// [`success`](Self::success), [`failure`](Self::failure) or
    /// [`abandon`](Self::abandon).
    pub(crate) fn allow(&self) -> bool {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } => {
                if Instant::now() >= until {
                    *inner = Inner::HalfOpen { probing: true };
                    true
                } else {
                    false
                }
            }
            Inner::HalfOpen { ref mut probing } => {
                if *probing {
                    false
                } else {
                    *probing = true;
                    true
                }
            }
        }
    }

    /// A call succeeded: close and reset the failure count.
    pub(crate) fn success(&self) {
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// A call failed (timeout or connection trouble).
    pub(crate) fn failure(&self) {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                *inner = if failures >= self.failure_threshold {
                    self.open_state()
                } else {
                    Inner::Closed { failures }
                };
            }
            Inner::HalfOpen { .. } => *inner = self.open_state(),
            // A late failure from a call allowed before the breaker opened:
            // the open period already runs, do not extend it.
            Inner::Open { .. } => {}
        }
    }

    /// A call that was allowed ended without an outcome (its future was
    /// dropped). Frees the half-open probe slot so the breaker cannot stay
    /// half-open forever; otherwise changes nothing.
    pub(crate) fn abandon(&self) {
        if let Inner::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    /// The current state. An open breaker whose period has passed reports
    /// [`BreakerState::HalfOpen`]: the next call would be a probe.
    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn open_state(&self) -> Inner {
        Inner::Open {
            until: Instant::now() + self.open_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    fn opened(threshold: u32) -> Breaker {
        let breaker = Breaker::new(threshold, OPEN_FOR);
        for _ in 0..threshold {
            assert!(breaker.allow());
            breaker.failure();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn closed_allows_and_counts_consecutive_failures() {
        let breaker = Breaker::new(3, OPEN_FOR);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow());
        breaker.failure();
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow());
        // A success in between resets the count.
        breaker.success();
        breaker.failure();
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_threshold_opens_on_first_failure() {
        let breaker = Breaker::new(0, OPEN_FOR);
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_until_open_for_has_passed() {
        let breaker = opened(2);
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(!breaker.allow());
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.allow(), "the probe goes through");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let breaker = opened(1);
        tokio::time::advance(OPEN_FOR).await;
        assert!(breaker.allow());
        assert!(!breaker.allow());
        assert!(!breaker.allow());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes_and_resets() {
        let breaker = opened(2);
        tokio::time::advance(OPEN_FOR).await;
        assert!(breaker.allow());
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow());
        assert!(breaker.allow());
        // The count starts from zero again.
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_opens_again_for_open_for() {
        let breaker = opened(3);
        tokio::time::advance(OPEN_FOR).await;
        assert!(breaker.allow());
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow());
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_frees_the_slot() {
        let breaker = opened(1);
        tokio::time::advance(OPEN_FOR).await;
        assert!(breaker.allow());
        assert!(!breaker.allow());
        breaker.abandon();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.allow());
        assert!(!breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_does_nothing_when_closed_or_open() {
        let breaker = Breaker::new(2, OPEN_FOR);
        breaker.failure();
        breaker.abandon();
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker.abandon();
        assert!(!breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn late_failure_while_open_does_not_extend_the_period() {
        let breaker = opened(1);
        tokio::time::advance(OPEN_FOR / 2).await;
        breaker.failure();
        tokio::time::advance(OPEN_FOR / 2).await;
        assert!(breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn late_success_while_open_closes() {
        // A call allowed before the breaker opened that then succeeds proves
        // Redis answers; closing early is the useful reaction.
        let breaker = opened(1);
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn is_shared_across_threads() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Breaker>();
    }
}
