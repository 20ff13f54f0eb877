//! Built-in load signals: requests in flight against a capacity, the
//! recent error rate, and a weighted composite.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{LoadSignal, clamp};

/// Requests in flight against a capacity; the rate-limit layer counts them
/// when given one. Cheap to clone; clones share the count.
#[derive(Clone, Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    capacity: usize,
}

impl InFlight {
    /// A counter whose load is `in flight / capacity` (capacity at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            count: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
        }
    }

    /// Counts one request until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            count: Arc::clone(&self.count),
        }
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl LoadSignal for InFlight {
    fn load(&self) -> f64 {
        self.current() as f64 / self.capacity as f64
    }
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    count: Arc<AtomicUsize>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The share of failed requests over a sliding window of ten slots.
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::{ErrorRate, LoadSignal};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let errors = ErrorRate::new(Duration::from_secs(60));
/// for i in 0..10 {
///     errors.record(i % 5 != 0); // every fifth request fails
/// }
/// assert_eq!(errors.load(), 0.2);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ErrorRate {
    inner: Arc<Mutex<Slots>>,
    slot: Duration,
}

#[derive(Debug)]
struct Slots {
    /// (slot number, requests, errors)
    slots: [(u64, u64, u64); SLOTS],
    start: Instant,
}

const SLOTS: usize = 10;

impl ErrorRate {
    /// Errors over the last `window` (at least 10 ms).
    pub fn new(window: Duration) -> Self {
        let slot = (window / SLOTS as u32).max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Mutex::new(Slots {
                slots: [(u64::MAX, 0, 0); SLOTS],
                start: Instant::now(),
            })),
            slot,
        }
    }

    /// Records one request's outcome.
    pub fn record(&self, success: bool) {
        let mut slots = self.inner.lock().expect("error rate lock");
        let n = self.slot_number(slots.start);
        let cell = &mut slots.slots[(n % SLOTS as u64) as usize];
        if cell.0 != n {
            *cell = (n, 0, 0);
        }
        cell.1 += 1;
        if !success {
            cell.2 += 1;
        }
    }

    fn slot_number(&self, start: Instant) -> u64 {
        let elapsed = start.elapsed().as_nanos() / self.slot.as_nanos().max(1);
        u64::try_from(elapsed).unwrap_or(u64::MAX - 1)
    }
}

impl LoadSignal for ErrorRate {
    fn load(&self) -> f64 {
        let slots = self.inner.lock().expect("error rate lock");
        let now = self.slot_number(slots.start);
        let (requests, errors) = slots
            .slots
            .iter()
            .filter(|(n, _, _)| *n != u64::MAX && now.saturating_sub(*n) < SLOTS as u64)
            .fold((0, 0), |(r, e), (_, requests, errors)| {
                (r + requests, e + errors)
            });
        if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        }
    }
}

/// A weighted average of load signals.
///
/// The report weighs concurrency 0.4, database pool utilisation 0.3 and
/// Redis memory 0.3; an error-rate part can be added with its own weight.
/// The score is `Σ wᵢ·loadᵢ / Σ wᵢ`, each part clamped to 0–1.
#[derive(Default)]
pub struct CompositeLoad {
    parts: Vec<(f64, Box<dyn LoadSignal>)>,
}

impl std::fmt::Debug for CompositeLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeLoad")
            .field(
                "weights",
                &self.parts.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CompositeLoad {
    /// No parts: the load is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a part with its weight (negative weights count as 0).
    #[must_use]
    pub fn part(mut self, weight: f64, signal: impl LoadSignal) -> Self {
        self.parts.push((weight.max(0.0), Box::new(signal)));
        self
    }
}

impl LoadSignal for CompositeLoad {
    fn load(&self) -> f64 {
        let total: f64 = self.parts.iter().map(|(w, _)| w).sum();
        if total <= 0.0 {
            return 0.0;
        }
        self.parts
            .iter()
            .map(|(w, s)| w * clamp(s.load()))
            .sum::<f64>()
            / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let f = InFlight::new(4);
        let a = f.enter();
        let _b = f.enter();
        assert_eq!(f.load(), 0.5);
        drop(a);
        assert_eq!(f.current(), 1);
    }

    #[test]
    fn composite_weighs_and_clamps() {
        let c = CompositeLoad::new()
            .part(0.4, || 1.0)
            .part(0.3, || 0.0)
            .part(0.3, || 5.0);
        assert!((c.load() - 0.7).abs() < 1e-9);
        assert_eq!(CompositeLoad::new().load(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn old_errors_leave_the_window() {
        let e = ErrorRate::new(Duration::from_secs(10));
        e.record(false);
        e.record(true);
        assert_eq!(e.load(), 0.5);
        tokio::time::advance(Duration::from_secs(5)).await;
        e.record(true);
        e.record(true);
        assert_eq!(e.load(), 0.25);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(e.load(), 0.0, "the failure is older than the window");
    }
}
