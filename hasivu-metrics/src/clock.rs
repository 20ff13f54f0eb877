//! The clock that times requests and places samples in time slices.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// A monotonic clock counting from its creation.
///
/// [`Clock::new`] reads the CPU's time-stamp counter through
/// [`quanta`](https://docs.rs/quanta) (about 10 ns a read where the system
/// clock call costs several times that), falling back to the OS clock where
/// the counter is unreliable. [`Clock::tokio`] follows tokio's clock, so
/// tests can `pause` and `advance` time; [`ManualClock`] is moved by hand.
///
/// Clones share the origin.
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::{Clock, ManualClock};
///
/// let clock = Clock::new();
/// let a = clock.elapsed();
/// assert!(clock.elapsed() >= a);
///
/// let manual = ManualClock::new();
/// let clock = manual.clock();
/// manual.advance(Duration::from_secs(90));
/// assert_eq!(clock.elapsed(), Duration::from_secs(90));
/// ```
#[derive(Clone)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Tsc(quanta::Clock, quanta::Instant),
    Tokio(tokio::time::Instant),
    Manual(Arc<AtomicU64>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Tsc(..) => "tsc",
            Kind::Tokio(_) => "tokio",
            Kind::Manual(_) => "manual",
        };
        f.debug_struct("Clock")
            .field("kind", &kind)
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// The time-stamp counter clock (the default).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        Self {
            kind: Kind::Tsc(clock, origin),
        }
    }

    /// Follows tokio's clock, which tests can pause and advance. Outside a
    /// runtime it reads the system's monotonic clock.
    pub fn tokio() -> Self {
        Self {
            kind: Kind::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Time since the clock was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now())
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.kind {
            Kind::Tsc(clock, origin) => {
                saturating_nanos(clock.now().saturating_duration_since(*origin))
            }
            Kind::Tokio(origin) => saturating_nanos(origin.elapsed()),
            Kind::Manual(nanos) => nanos.load(Ordering::Relaxed),
        }
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock moved by hand, for tests and simulations.
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::ManualClock;
///
/// let manual = ManualClock::new();
/// let clock = manual.clock();
/// manual.set(Duration::from_secs(3600));
/// manual.advance(Duration::from_millis(5));
/// assert_eq!(clock.elapsed(), Duration::from_millis(3_600_005));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A [`Clock`] reading this one.
    pub fn clock(&self) -> Clock {
        Clock {
            kind: Kind::Manual(Arc::clone(&self.nanos)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(saturating_nanos(by), Ordering::Relaxed);
    }

    /// Sets the time since the origin. Setting it backwards is allowed;
    /// samples then land in slices that may already have been reused and
    /// are dropped.
    pub fn set(&self, since_origin: Duration) {
        self.nanos
            .store(saturating_nanos(since_origin), Ordering::Relaxed);
    }

    /// The time since the origin.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}
