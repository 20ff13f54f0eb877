//! Load adaptation: a load signal between 0 and 1, and the control that
//! turns it into a limit multiplier with hysteresis.
//!
//! ```
//! use std::sync::Arc;
//! use hasivu_ratelimit::{CompositeLoad, InFlight, LoadControl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let in_flight = InFlight::new(1000);
//! let load = CompositeLoad::new()
//!     .part(0.4, in_flight.clone())  // the report's weights
//!     .part(0.3, || 0.2)             // pool utilisation, from your pool
//!     .part(0.3, || 0.5);            // Redis memory, e.g. `RedisMemory`
//! let control = LoadControl::new(load);
//! control.update();
//! assert!(!control.is_reduced());
//! # }
//! ```

mod hysteresis;
mod signals;

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

pub use hysteresis::Hysteresis;
pub use signals::{CompositeLoad, ErrorRate, InFlight, InFlightGuard};
use tokio::time::Instant;

/// A load score between 0.0 (idle) and 1.0 (saturated).
///
/// Closures `Fn() -> f64` are load signals. Values outside 0–1 are clamped;
/// NaN counts as 0.
pub trait LoadSignal: Send + Sync + 'static {
    /// The current load.
    fn load(&self) -> f64;
}

impl<F: Fn() -> f64 + Send + Sync + 'static> LoadSignal for F {
    fn load(&self) -> f64 {
        self()
    }
}

impl<L: LoadSignal + ?Sized> LoadSignal for Arc<L> {
    fn load(&self) -> f64 {
        (**self).load()
    }
}

pub(crate) fn clamp(load: f64) -> f64 {
    if load.is_nan() {
        0.0
    } else {
        load.clamp(0.0, 1.0)
    }
}

/// Samples a [`LoadSignal`] and decides, with [`Hysteresis`], whether
/// limits are reduced. Cheap to clone; clones share the state.
///
/// The limiter reads one atomic per check; sampling happens in
/// [`update`](Self::update), which [`spawn`](Self::spawn) calls on a timer
/// (every second by default).
#[derive(Clone)]
pub struct LoadControl {
    inner: Arc<Control>,
}

struct Control {
    signal: Box<dyn LoadSignal>,
    hysteresis: Hysteresis,
    every: Duration,
    reduced: AtomicBool,
    last_load: AtomicU64,
    changed_at: Mutex<Instant>,
}

impl std::fmt::Debug for LoadControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadControl")
            .field("hysteresis", &self.inner.hysteresis)
            .field("reduced", &self.is_reduced())
            .field("load", &self.last_load())
            .finish_non_exhaustive()
    }
}

impl LoadControl {
    /// A control with the default [`Hysteresis`] and a one-second sampling
    /// period.
    pub fn new(signal: impl LoadSignal) -> Self {
        Self::with(signal, Hysteresis::default(), Duration::from_secs(1))
    }

    /// A control with its thresholds and sampling period.
    pub fn with(signal: impl LoadSignal, hysteresis: Hysteresis, every: Duration) -> Self {
        Self {
            inner: Arc::new(Control {
                signal: Box::new(signal),
                hysteresis,
                every: every.max(Duration::from_millis(1)),
                reduced: AtomicBool::new(false),
                last_load: AtomicU64::new(0f64.to_bits()),
                changed_at: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Samples the signal now and updates the state; returns whether limits
    /// are reduced.
    pub fn update(&self) -> bool {
        let load = clamp(self.inner.signal.load());
        self.inner
            .last_load
            .store(load.to_bits(), Ordering::Relaxed);
        let mut changed_at = self.inner.changed_at.lock().expect("load control lock");
        let reduced = self.inner.reduced.load(Ordering::Acquire);
        let next = self
            .inner
            .hysteresis
            .next(reduced, changed_at.elapsed(), load);
        if next != reduced {
            *changed_at = Instant::now();
            self.inner.reduced.store(next, Ordering::Release);
            metrics::gauge!("hasivu_ratelimit_reduced").set(if next { 1.0 } else { 0.0 });
            if next {
                tracing::warn!(load, "load above threshold: rate limits reduced");
            } else {
                tracing::info!(load, "load back to normal: rate limits restored");
            }
        }
        metrics::gauge!("hasivu_ratelimit_load").set(load);
        next
    }

    /// Calls [`update`](Self::update) every sampling period on the Tokio
    /// runtime until the last clone of this control is dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Control> = Arc::downgrade(&self.inner);
        let every = self.inner.every;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                LoadControl { inner }.update();
            }
        })
    }

    /// Whether limits are reduced now.
    pub fn is_reduced(&self) -> bool {
        self.inner.reduced.load(Ordering::Acquire)
    }

    /// The multiplier for limits now: 1, or the hysteresis factor.
    pub fn factor(&self) -> f64 {
        if self.is_reduced() {
            self.inner.hysteresis.factor
        } else {
            1.0
        }
    }

    /// The load at the last sample.
    pub fn last_load(&self) -> f64 {
        f64::from_bits(self.inner.last_load.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn enters_and_leaves_with_hysteresis() {
        let level = Arc::new(AtomicU64::new(0.5f64.to_bits()));
        let signal = {
            let level = Arc::clone(&level);
            move || f64::from_bits(level.load(Ordering::Relaxed))
        };
        let control = LoadControl::new(signal);
        let set = |v: f64| level.store(v.to_bits(), Ordering::Relaxed);
        assert!(!control.update());
        assert_eq!(control.factor(), 1.0);
        set(0.9);
        assert!(control.update());
        assert_eq!(control.factor(), 0.5);
        set(0.5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(control.update(), "minimum dwell not over");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!control.update());
        assert_eq!(control.last_load(), 0.5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_spawned_sampler_follows_the_signal_and_stops_with_the_control() {
        let level = Arc::new(AtomicU64::new(0.95f64.to_bits()));
        let signal = {
            let level = Arc::clone(&level);
            move || f64::from_bits(level.load(Ordering::Relaxed))
        };
        let control = LoadControl::new(signal);
        let task = control.spawn();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(control.is_reduced());
        drop(control);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(task.is_finished());
    }

    #[test]
    fn odd_values_are_clamped() {
        assert_eq!(clamp(f64::NAN), 0.0);
        assert_eq!(clamp(7.0), 1.0);
        assert_eq!(clamp(-1.0), 0.0);
    }
}
