//! Rolling per-route analytics in fixed memory.
//!
//! [`PerformanceAnalytics`] keeps, for every route, rings of time slices
//! (by default 60 one-minute slices and 168 one-hour slices), each slice an
//! atomic log-bucketed histogram with outcome counters. Every sample goes
//! into the current slice of every ring; a query for a window merges the
//! slices of the finest ring that spans it, so any window from one slice to
//! seven days is answered from memory that never grows.
//!
//! ```
//! use std::time::Duration;
//! use hasivu_metrics::{ManualClock, PerformanceAnalytics, Sample};
//!
//! let time = ManualClock::new();
//! let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
//! let menu = analytics.route("GET /menu/daily");
//! for ms in 1..=100 {
//!     menu.record(&Sample::new(Duration::from_millis(ms)).status(200).cache_hit(ms > 20));
//!     time.advance(Duration::from_millis(500));
//! }
//! menu.record(&Sample::new(Duration::from_millis(3)).status(503));
//!
//! let last_hour = analytics.summary("GET /menu/daily", Duration::from_secs(3600)).unwrap();
//! assert_eq!(last_hour.count, 101);
//! assert!((last_hour.p95_ms - 95.0).abs() <= 95.0 * 0.01);
//! assert!((last_hour.error_rate - 1.0 / 101.0).abs() < 1e-9);
//! assert_eq!(last_hour.cache_hit_rate, Some(80.0 / 100.0));
//! ```
//!
//! # Accuracy
//!
//! Count, sum (so the mean), minimum, maximum and the outcome counters are
//! exact. Quantiles come from log buckets: with the default 1% precision a
//! reported p50/p95/p99 is within 1% of the exact nearest-rank quantile of
//! the same samples, for durations from 1.024 µs to 68.7 s; outside that
//! range the quantile reports the exact minimum or maximum. See
//! [`AnalyticsBuilder::ring`] for other precisions.
//!
//! A window is answered by the slices that overlap it: the last hour at
//! one-minute slices covers between 60 and 61 minutes, the last day at
//! one-hour slices between 24 and 25 hours. [`Summary::covered_secs`] says
//! how much was covered, and rates are computed over it.
//!
//! # Memory
//!
//! A ring of `n` slices with `k` buckets per power of two holds
//! `(n + 2) × ((2 + 26·k) × 4 + 72)` bytes: 4-byte counters per bucket
//! (a slice counts up to 2³² − 1 samples per bucket), 72 bytes of counters,
//! one slice being filled and one staging slice (see the cost of a sample).
//! With the defaults (60 × 1 min at 1%, that is 36 buckets per power of
//! two; 168 × 1 h at 4.5%, 8 buckets):
//!
//! | ring | slices | buckets per slice | bytes |
//! | --- | ---: | ---: | ---: |
//! | 1 minute, 1% (0.98%) | 62 | 938 | 237,088 |
//! | 1 hour, 4.5% (4.34%) | 170 | 210 | 155,040 |
//! | **per route** | | | **≈ 383 KiB** |
//!
//! [`PerformanceAnalytics::memory_per_route`] gives the exact figure for a
//! configuration. Rings are allocated when a route is first seen; at most
//! [`max_routes`](AnalyticsBuilder::max_routes) routes (default 256) get
//! their own, later ones share the `_overflow` route, so the whole stays
//! under `(max_routes + 1) × memory_per_route`.
//!
//! # Cost of a sample
//!
//! Per ring: one division to find the slice, one atomic load of its epoch,
//! two atomic increments (bucket and sum), a load each for the minimum and
//! maximum (a compare-and-swap only when they move) and one increment per
//! outcome flag. No lock and no allocation.
//!
//! The first sample of a new slice zeroes it (about a microsecond, once
//! per slice) and nobody waits for that: samples arriving meanwhile go to a
//! staging slice of the ring, which is moved into the new slice as soon as
//! it is ready, by whichever writer sees that first. No sample is lost or
//! counted twice, and no thread waits for another, however long the
//! zeroing writer is descheduled; only a writer stalled for about a slice's
//! width can see its sample counted in the next slice.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    Clock,
    cardinality::{OVERFLOW, Registry},
    histogram::{Counts, Layout},
    ring::{self, Outcomes, Ring, RingSpec, SliceRead},
};

/// How fixed intervals (of the regression detector) map onto the slices
/// of one ring: interval `i` is slices (epochs) `i·slices + 1 ..=
/// (i + 1)·slices`, so it starts at `i · slices · width` on the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IntervalRing {
    /// Index of the ring.
    pub(crate) ring: usize,
    /// Slice width, nanoseconds.
    pub(crate) width: u64,
    /// Slices per interval.
    pub(crate) slices: u64,
    /// Slices in the ring (the one being filled included).
    pub(crate) len: u64,
}

impl IntervalRing {
    /// The interval's length, nanoseconds.
    pub(crate) fn span(&self) -> u64 {
        self.width * self.slices
    }
}

/// Per-route rolling analytics; a cheap handle to shared state.
///
/// See the [module docs](self) for accuracy, memory and cost.
#[derive(Clone)]
pub struct PerformanceAnalytics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells instances apart (for readers that keep a cursor into the
    /// slices).
    id: u64,
    clock: Clock,
    // Sorted by span, finest first.
    specs: Box<[RingSpec]>,
    routes: Registry<Box<[Ring]>>,
}

impl std::fmt::Debug for PerformanceAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceAnalytics")
            .field("routes", &self.inner.routes.len())
            .field("max_routes", &self.inner.routes.cap())
            .field("rings", &self.inner.specs)
            .finish()
    }
}

impl Default for PerformanceAnalytics {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds [`PerformanceAnalytics`].
#[derive(Clone, Debug)]
#[must_use]
pub struct AnalyticsBuilder {
    clock: Option<Clock>,
    rings: Vec<(Duration, usize, f64)>,
    max_routes: usize,
}

impl Default for AnalyticsBuilder {
    fn default() -> Self {
        Self {
            clock: None,
            rings: Vec::new(),
            max_routes: 256,
        }
    }
}

/// The rings used when none is configured.
const DEFAULT_RINGS: [(Duration, usize, f64); 2] = [
    (Duration::from_secs(60), 60, 0.01),
    (Duration::from_secs(3600), 168, 0.045),
];

impl AnalyticsBuilder {
    /// The clock that places samples in slices (default: [`Clock::new`]).
    /// The metrics layer times requests with this clock too.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The most routes with their own rings (default 256); the rest share
    /// the `_overflow` route.
    pub fn max_routes(mut self, routes: usize) -> Self {
        self.max_routes = routes.max(1);
        self
    }

    /// Adds a ring of `slices` slices of `slice` each, whose quantiles are
    /// within `max_error` (relative, e.g. `0.01`) of the exact ones. The
    /// first call replaces the default rings (60 × 1 minute at 1% and
    /// 168 × 1 hour at 4.5%).
    ///
    /// Errors down to 0.2% are available (255 buckets per power of two).
    /// `slice` is rounded up to a whole microsecond, `slices` to at least 1.
    pub fn ring(mut self, slice: Duration, slices: usize, max_error: f64) -> Self {
        self.rings.push((slice, slices, max_error));
        self
    }

    /// Builds the analytics.
    pub fn build(self) -> PerformanceAnalytics {
        let rings = if self.rings.is_empty() {
            DEFAULT_RINGS.to_vec()
        } else {
            self.rings
        };
        let mut specs: Vec<RingSpec> = rings
            .into_iter()
            .map(|(slice, slices, max_error)| RingSpec {
                width: (slice.as_nanos().div_ceil(1000) * 1000).clamp(1000, u128::from(u64::MAX))
                    as u64,
                len: slices.max(1) + 1,
                layout: Arc::new(Layout::for_error(max_error)),
            })
            .collect();
        specs.sort_by_key(RingSpec::span);
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        PerformanceAnalytics {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                clock: self.clock.unwrap_or_default(),
                specs: specs.into_boxed_slice(),
                routes: Registry::new(self.max_routes, OVERFLOW),
            }),
        }
    }
}

impl PerformanceAnalytics {
    /// Analytics with the default rings, clock and route cap.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for other rings, clock or route cap.
    pub fn builder() -> AnalyticsBuilder {
        AnalyticsBuilder::default()
    }

    /// The clock samples are placed by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The handle of a route, registering it when new (or the `_overflow`
    /// route when [`max_routes`](AnalyticsBuilder::max_routes) are taken).
    /// Keep the handle: recording through it skips the name lookup.
    pub fn route(&self, name: &str) -> RouteHandle {
        let id = self.inner.routes.resolve(name, |_| self.new_rings());
        RouteHandle {
            inner: Arc::clone(&self.inner),
            id,
        }
    }

    fn new_rings(&self) -> Box<[Ring]> {
        self.inner.specs.iter().map(Ring::new).collect()
    }

    /// Records one sample for `route` (a name lookup; see
    /// [`route`](Self::route) for the handle).
    pub fn record(&self, route: &str, sample: &Sample) {
        self.route(route).record(sample);
    }

    /// The statistics of `route` over the last `window`, or `None` for a
    /// route never recorded.
    pub fn summary(&self, route: &str, window: Duration) -> Option<Summary> {
        self.snapshot(route, window).map(|s| s.summary())
    }

    /// The mergeable histogram of `route` over the last `window`.
    pub fn snapshot(&self, route: &str, window: Duration) -> Option<Snapshot> {
        let entry = self.inner.routes.find(route)?;
        let now = self.inner.clock.now();
        let ring = self.ring_for(window);
        Some(self.collect(&entry.value, ring, now, window))
    }

    /// All routes merged, over the last `window`.
    pub fn total(&self, window: Duration) -> Snapshot {
        let now = self.inner.clock.now();
        let ring = self.ring_for(window);
        let mut total = self.empty(ring, window);
        for entry in self.inner.routes.entries() {
            total.merge(&self.collect(&entry.value, ring, now, window));
        }
        total
    }

    /// Every route's statistics over the last `window`, in registration
    /// order (the `_overflow` route last, when used).
    pub fn summaries(&self, window: Duration) -> Vec<RouteSummary> {
        let now = self.inner.clock.now();
        let ring = self.ring_for(window);
        self.inner
            .routes
            .entries()
            .map(|entry| RouteSummary {
                route: entry.name.to_string(),
                summary: self.collect(&entry.value, ring, now, window).summary(),
            })
            .collect()
    }

    /// The registered route names, in registration order.
    pub fn routes(&self) -> Vec<String> {
        self.inner
            .routes
            .entries()
            .map(|e| e.name.to_string())
            .collect()
    }

    /// Lookups of new routes that went to `_overflow` because the cap was
    /// reached.
    pub fn overflowed(&self) -> u64 {
        self.inner.routes.overflowed()
    }

    /// Bytes of one route's rings.
    pub fn memory_per_route(&self) -> usize {
        self.inner.specs.iter().map(RingSpec::memory).sum::<usize>()
            + std::mem::size_of::<OnceLock<crate::cardinality::Entry<Box<[Ring]>>>>()
    }

    /// Bytes held now: the routes registered so far (with `_overflow`
    /// when used) times [`memory_per_route`](Self::memory_per_route).
    pub fn memory(&self) -> usize {
        self.inner.routes.entries().count() * self.memory_per_route()
    }

    /// The most bytes the routes can ever hold:
    /// `(max_routes + 1) × memory_per_route`.
    pub fn max_memory(&self) -> usize {
        (self.inner.routes.cap() + 1) * self.memory_per_route()
    }

    /// Identifies this instance (and its clones).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The clock's time, nanoseconds since its origin.
    pub(crate) fn now_nanos(&self) -> u64 {
        self.inner.clock.now()
    }

    /// The finest ring whose slices tile `interval` and that holds two
    /// whole intervals besides the slice being filled.
    pub(crate) fn interval_ring(&self, interval: Duration) -> Option<IntervalRing> {
        let interval = u64::try_from(interval.as_nanos()).ok()?;
        self.inner
            .specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| interval > 0 && interval % spec.width == 0)
            .map(|(ring, spec)| IntervalRing {
                ring,
                width: spec.width,
                slices: interval / spec.width,
                len: spec.len.max(2) as u64,
            })
            .find(|r| 2 * r.slices < r.len)
    }

    /// Every route's counts over interval `index` of `ring`: `None` when a
    /// slice of it is still being zeroed by its first writer (read it again
    /// later); per route, `None` when a slice of it has been reused since.
    pub(crate) fn read_interval(
        &self,
        ring: &IntervalRing,
        index: u64,
    ) -> Option<Vec<(String, Option<Snapshot>)>> {
        let first = index * ring.slices + 1;
        let window = Duration::from_nanos(ring.span());
        let mut out = Vec::new();
        for entry in self.inner.routes.entries() {
            let mut snapshot = self.empty(ring.ring, window);
            snapshot.covered = window;
            let mut gone = false;
            for epoch in first..first + ring.slices {
                match entry.value[ring.ring].read_slice(
                    epoch,
                    &mut snapshot.counts,
                    &mut snapshot.outcomes,
                ) {
                    SliceRead::Filled | SliceRead::Empty => {}
                    SliceRead::Busy => return None,
                    SliceRead::Gone => gone = true,
                }
            }
            out.push((entry.name.to_string(), (!gone).then_some(snapshot)));
        }
        Some(out)
    }

    fn ring_for(&self, window: Duration) -> usize {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        self.inner
            .specs
            .iter()
            .position(|s| s.span() >= window)
            .unwrap_or(self.inner.specs.len() - 1)
    }

    fn empty(&self, ring: usize, window: Duration) -> Snapshot {
        let layout = Arc::clone(&self.inner.specs[ring].layout);
        Snapshot {
            counts: Counts::new(&layout),
            layout,
            outcomes: Outcomes::default(),
            window,
            covered: Duration::ZERO,
        }
    }

    fn collect(&self, rings: &[Ring], ring: usize, now: u64, window: Duration) -> Snapshot {
        let mut snapshot = self.empty(ring, window);
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let start = rings[ring].collect(now, nanos, &mut snapshot.counts, &mut snapshot.outcomes);
        snapshot.covered = Duration::from_nanos(now - start.min(now));
        snapshot
    }
}

/// A route's pre-resolved handle: recording through it is atomics only.
#[derive(Clone)]
pub struct RouteHandle {
    inner: Arc<Inner>,
    id: u32,
}

impl std::fmt::Debug for RouteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteHandle")
            .field("route", &self.name())
            .finish()
    }
}

impl RouteHandle {
    /// The route's name (`_overflow` for routes past the cap).
    pub fn name(&self) -> &str {
        &self.inner.routes.get(self.id).name
    }

    /// Records one sample at the analytics clock's current time.
    pub fn record(&self, sample: &Sample) {
        let nanos = u64::try_from(sample.duration.as_nanos()).unwrap_or(u64::MAX);
        self.record_raw(self.inner.clock.now(), nanos, sample.flags());
    }

    /// Records `nanos` at `now` (both from the analytics clock).
    #[inline]
    pub(crate) fn record_raw(&self, now: u64, nanos: u64, flags: u8) {
        for ring in self.inner.routes.get(self.id).value.iter() {
            ring.record(now, nanos, flags);
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The response was sent to its end.
    Completed,
    /// The client went away first (the response future or body was
    /// dropped).
    Aborted,
    /// The service or the response body failed.
    Failed,
}

/// One request, as analytics records it.
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::{Outcome, Sample};
///
/// let sample = Sample::new(Duration::from_millis(12)).status(200).cache_hit(true);
/// let gone = Sample::new(Duration::from_secs(2)).outcome(Outcome::Aborted);
/// # let _ = (sample, gone);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    duration: Duration,
    status: Option<u16>,
    outcome: Outcome,
    cache_hit: Option<bool>,
}

impl Sample {
    /// A completed request that took `duration`, with no status yet.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            status: None,
            outcome: Outcome::Completed,
            cache_hit: None,
        }
    }

    /// The response status: 5xx counts as a server error, 4xx as a client
    /// error.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// How the request ended (default [`Outcome::Completed`]); `Failed`
    /// counts as a server error.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Whether a cache answered (`true`) or was consulted and missed
    /// (`false`). Requests without it do not count toward the hit rate.
    pub fn cache_hit(mut self, hit: bool) -> Self {
        self.cache_hit = Some(hit);
        self
    }

    pub(crate) fn flags(&self) -> u8 {
        flags(self.status, self.outcome, self.cache_hit)
    }
}

/// The ring flags of a request.
#[inline]
pub(crate) fn flags(status: Option<u16>, outcome: Outcome, cache_hit: Option<bool>) -> u8 {
    let mut flags = 0;
    match status {
        Some(500..) => flags |= ring::SERVER_ERROR,
        Some(400..=499) => flags |= ring::CLIENT_ERROR,
        _ => {}
    }
    match outcome {
        Outcome::Completed => {}
        Outcome::Aborted => flags |= ring::ABORTED,
        Outcome::Failed => flags |= ring::SERVER_ERROR,
    }
    match cache_hit {
        Some(true) => flags |= ring::CACHE_HIT,
        Some(false) => flags |= ring::CACHE_MISS,
        None => {}
    }
    flags
}

/// A window's histogram and counters; merge snapshots of several routes
/// for a total.
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::{PerformanceAnalytics, Sample};
///
/// let analytics = PerformanceAnalytics::new();
/// analytics.record("GET /a", &Sample::new(Duration::from_millis(10)).status(200));
/// analytics.record("GET /b", &Sample::new(Duration::from_millis(30)).status(200));
/// let hour = Duration::from_secs(3600);
/// let mut both = analytics.snapshot("GET /a", hour).unwrap();
/// both.merge(&analytics.snapshot("GET /b", hour).unwrap());
/// assert_eq!(both.count(), 2);
/// assert_eq!(both.max(), Some(Duration::from_millis(30)));
/// ```
#[derive(Clone, Debug)]
pub struct Snapshot {
    layout: Arc<Layout>,
    counts: Counts,
    outcomes: Outcomes,
    window: Duration,
    covered: Duration,
}

impl Snapshot {
    /// Number of requests.
    pub fn count(&self) -> u64 {
        self.counts.count()
    }

    /// The `q` quantile (0 to 1, nearest rank), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.counts
            .quantile(&self.layout, q)
            .map(|nanos| Duration::from_nanos(nanos.round() as u64))
    }

    /// The mean duration, `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_nanos(self.counts.sum / n))
    }

    /// The shortest duration, `None` when empty.
    pub fn min(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_nanos(self.counts.min))
    }

    /// The longest duration, `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_nanos(self.counts.max))
    }

    /// Server errors (5xx, failed services and bodies).
    pub(crate) fn server_errors(&self) -> u64 {
        self.outcomes.server_errors
    }

    /// The bound on the relative error of [`quantile`](Self::quantile) for
    /// durations in the bucketed range.
    pub fn max_relative_error(&self) -> f64 {
        self.layout.max_relative_error()
    }

    /// Adds another snapshot's samples. Snapshots of the same ring merge
    /// exactly; from a ring of another precision, the other's buckets are
    /// moved to the nearest bucket here and the error bounds add up.
    pub fn merge(&mut self, other: &Snapshot) {
        if Arc::ptr_eq(&self.layout, &other.layout) || self.layout == other.layout {
            self.counts.merge(&other.counts);
        } else {
            self.counts
                .merge_rebucketed(&self.layout, &other.counts, &other.layout);
        }
        self.outcomes.merge(&other.outcomes);
        self.window = self.window.max(other.window);
        self.covered = self.covered.max(other.covered);
    }

    /// The statistics, in milliseconds and fractions.
    pub fn summary(&self) -> Summary {
        let count = self.count();
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let ratio = |n: u64| {
            if count == 0 {
                0.0
            } else {
                n as f64 / count as f64
            }
        };
        let covered = self.covered.as_secs_f64();
        let o = &self.outcomes;
        let lookups = o.cache_hits + o.cache_misses;
        Summary {
            window_secs: self.window.as_secs_f64(),
            covered_secs: covered,
            count,
            rate_per_sec: if covered > 0.0 {
                count as f64 / covered
            } else {
                0.0
            },
            mean_ms: ms(self.mean()),
            p50_ms: ms(self.quantile(0.5)),
            p95_ms: ms(self.quantile(0.95)),
            p99_ms: ms(self.quantile(0.99)),
            min_ms: ms(self.min()),
            max_ms: ms(self.max()),
            server_errors: o.server_errors,
            client_errors: o.client_errors,
            aborted: o.aborted,
            error_rate: ratio(o.server_errors),
            client_error_rate: ratio(o.client_errors),
            abort_rate: ratio(o.aborted),
            cache_hits: o.cache_hits,
            cache_misses: o.cache_misses,
            cache_hit_rate: (lookups > 0).then(|| o.cache_hits as f64 / lookups as f64),
            max_relative_error: self.max_relative_error(),
        }
    }
}

/// A window's statistics: what the report's `getPerformanceAnalytics`
/// returned, plus quantiles, outcomes and the window actually covered.
/// Durations are in milliseconds, rates are fractions (0 to 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The window asked for, in seconds.
    pub window_secs: f64,
    /// The time the included slices cover, up to now, in seconds.
    pub covered_secs: f64,
    /// Requests in the window.
    pub count: u64,
    /// Requests per second over the covered time.
    pub rate_per_sec: f64,
    /// Mean duration (exact).
    pub mean_ms: f64,
    /// Median duration.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Shortest duration (exact).
    pub min_ms: f64,
    /// Longest duration (exact).
    pub max_ms: f64,
    /// Responses with a 5xx status, failed services and failed bodies.
    pub server_errors: u64,
    /// Responses with a 4xx status.
    pub client_errors: u64,
    /// Requests whose client went away before the response ended.
    pub aborted: u64,
    /// `server_errors / count`.
    pub error_rate: f64,
    /// `client_errors / count`.
    pub client_error_rate: f64,
    /// `aborted / count`.
    pub abort_rate: f64,
    /// Responses a cache answered.
    pub cache_hits: u64,
    /// Requests a cache was consulted for and missed.
    pub cache_misses: u64,
    /// `cache_hits / (cache_hits + cache_misses)`; `None` when no request
    /// had a cache status.
    pub cache_hit_rate: Option<f64>,
    /// The bound on the quantiles' relative error.
    pub max_relative_error: f64,
}

/// A route's name with its statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    /// The route (`"GET /menu/daily"` when recorded by the metrics layer).
    pub route: String,
    /// Its statistics.
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn analytics() -> (ManualClock, PerformanceAnalytics) {
        let time = ManualClock::new();
        let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
        (time, analytics)
    }

    #[test]
    fn windows_follow_the_clock() {
        let (time, analytics) = analytics();
        let route = analytics.route("GET /orders");
        // One request a minute for two hours, taking `minute` ms.
        for minute in 0..120u64 {
            route.record(&Sample::new(Duration::from_millis(minute + 1)).status(200));
            time.advance(MINUTE);
        }
        // Now: 120 minutes in, at the start of an empty slice.
        let five = analytics.summary("GET /orders", 5 * MINUTE).unwrap();
        assert_eq!(five.count, 5);
        assert_eq!(five.min_ms, 116.0);
        assert_eq!(five.max_ms, 120.0);
        assert_eq!(five.covered_secs, 300.0);
        assert!((five.rate_per_sec - 1.0 / 60.0).abs() < 1e-12);

        let hour = analytics.summary("GET /orders", HOUR).unwrap();
        assert_eq!(hour.count, 60);
        assert_eq!(hour.min_ms, 61.0);

        // Two hours need the hourly ring: two whole hours plus the current.
        let two = analytics.summary("GET /orders", 2 * HOUR).unwrap();
        assert_eq!(two.count, 120);
        assert!(two.max_relative_error > 0.04);

        // An hour and a half later the minute ring is empty.
        time.advance(90 * MINUTE);
        assert_eq!(analytics.summary("GET /orders", HOUR).unwrap().count, 0);
        assert_eq!(
            analytics.summary("GET /orders", 3 * HOUR).unwrap().count,
            120
        );
        // After a week and a day nothing is left.
        time.advance(8 * 24 * HOUR);
        assert_eq!(
            analytics
                .summary("GET /orders", 7 * 24 * HOUR)
                .unwrap()
                .count,
            0
        );
    }

    #[test]
    fn a_young_window_covers_only_the_time_since_the_start() {
        let (time, analytics) = analytics();
        time.advance(Duration::from_secs(10));
        for _ in 0..20 {
            analytics.record("GET /", &Sample::new(Duration::from_millis(2)));
        }
        let s = analytics.summary("GET /", HOUR).unwrap();
        assert_eq!(s.covered_secs, 10.0);
        assert_eq!(s.rate_per_sec, 2.0);
    }

    #[test]
    fn outcomes_and_rates() {
        let (_, analytics) = analytics();
        let route = analytics.route("POST /payments/create");
        let d = Duration::from_millis(40);
        route.record(&Sample::new(d).status(201).cache_hit(false));
        route.record(&Sample::new(d).status(429));
        route.record(&Sample::new(d).status(502));
        route.record(&Sample::new(d).outcome(Outcome::Failed));
        route.record(&Sample::new(d).status(200).outcome(Outcome::Aborted));
        let s = analytics.summary("POST /payments/create", MINUTE).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!((s.server_errors, s.client_errors, s.aborted), (2, 1, 1));
        assert_eq!(s.error_rate, 0.4);
        assert_eq!(s.cache_hit_rate, Some(0.0));
        assert_eq!(s.mean_ms, 40.0);
    }

    #[test]
    fn unknown_routes_have_no_summary() {
        let (_, analytics) = analytics();
        assert!(analytics.summary("GET /nowhere", HOUR).is_none());
    }

    #[test]
    fn totals_merge_every_route() {
        let (_, analytics) = analytics();
        for (i, route) in ["GET /a", "GET /b", "GET /c"].into_iter().enumerate() {
            for _ in 0..=i {
                analytics.record(
                    route,
                    &Sample::new(Duration::from_millis(10 * (i as u64 + 1))),
                );
            }
        }
        let total = analytics.total(HOUR);
        assert_eq!(total.count(), 6);
        assert_eq!(total.max(), Some(Duration::from_millis(30)));
        assert_eq!(total.min(), Some(Duration::from_millis(10)));
        let summaries = analytics.summaries(HOUR);
        let names: Vec<&str> = summaries.iter().map(|s| s.route.as_str()).collect();
        assert_eq!(names, ["GET /a", "GET /b", "GET /c"]);
    }

    #[test]
    fn memory_stays_bounded_for_ten_thousand_routes() {
        let (_, analytics) = analytics();
        let per_route = analytics.memory_per_route();
        // The documented figure for the default rings.
        assert!((380 * 1024..385 * 1024).contains(&per_route), "{per_route}");
        let small = PerformanceAnalytics::builder()
            .max_routes(100)
            .ring(MINUTE, 10, 0.01)
            .build();
        for i in 0..10_000 {
            small.record(
                &format!("GET /items/{i}"),
                &Sample::new(Duration::from_millis(1)),
            );
        }
        assert_eq!(small.routes().len(), 101);
        assert_eq!(small.routes().last().map(String::as_str), Some(OVERFLOW));
        assert_eq!(small.overflowed(), 9_900);
        assert!(small.memory() <= small.max_memory());
        assert_eq!(small.max_memory(), 101 * small.memory_per_route());
        // Every sample is still counted, the overflow ones together.
        assert_eq!(small.total(MINUTE).count(), 10_000);
        assert_eq!(small.summary(OVERFLOW, MINUTE).unwrap().count, 9_900);
    }

    #[test]
    fn snapshots_of_different_precision_merge() {
        let (_, analytics) = analytics();
        analytics.record("GET /", &Sample::new(Duration::from_millis(100)));
        let mut fine = analytics.snapshot("GET /", MINUTE).unwrap();
        let coarse = analytics.snapshot("GET /", 2 * HOUR).unwrap();
        fine.merge(&coarse);
        assert_eq!(fine.count(), 2);
        let p50 = fine.quantile(0.5).unwrap().as_secs_f64();
        assert!((p50 - 0.1).abs() / 0.1 <= 0.01 + 0.045);
    }

    proptest::proptest! {
        // Through the rings: samples spread over the last hour, queried
        // as one window, against the exact nearest-rank quantiles.
        #[test]
        fn window_quantiles_are_within_one_percent(
            samples in proptest::collection::vec((10.0f64..36.0, 0u64..3_600), 1..1_500),
        ) {
            let (time, analytics) = analytics();
            let route = analytics.route("GET /");
            let mut at: Vec<(u64, u64)> = samples
                .iter()
                .map(|&(exp, second)| (second, exp.exp2() as u64))
                .collect();
            at.sort_unstable();
            for &(second, nanos) in &at {
                time.set(Duration::from_secs(second));
                route.record(&Sample::new(Duration::from_nanos(nanos)));
            }
            time.set(Duration::from_secs(3_599));
            let snapshot = analytics.snapshot("GET /", HOUR).unwrap();
            let mut values: Vec<u64> = at.iter().map(|&(_, v)| v).collect();
            values.sort_unstable();
            proptest::prop_assert_eq!(snapshot.count(), values.len() as u64);
            for q in [0.5, 0.95, 0.99] {
                let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                let exact = values[rank - 1] as f64;
                let estimate = snapshot.quantile(q).unwrap().as_nanos() as f64;
                proptest::prop_assert!(
                    (estimate - exact).abs() / exact <= 0.01 + 1.0 / exact,
                    "q={} estimate={} exact={}", q, estimate, exact
                );
            }
        }
    }

    #[test]
    fn summaries_serialize() {
        let (_, analytics) = analytics();
        analytics.record("GET /", &Sample::new(Duration::from_millis(1)).status(200));
        let json = serde_json::to_value(analytics.summaries(MINUTE)).unwrap();
        assert_eq!(json[0]["route"], "GET /");
        assert_eq!(json[0]["summary"]["count"], 1);
        assert!(json[0]["summary"]["cache_hit_rate"].is_null());
    }
}
