//! Regression detection: per route, the p95 latency and error rate of the
//! recent intervals against a baseline, with an effect size *and*
//! statistical significance required, change-point detection to say when
//! it started, and the build version in the record.
//!
//! Feed the detector one [`Point`] per route and interval (one minute by
//! default), either by hand with [`record`](RegressionDetector::record) or
//! from [`PerformanceAnalytics`] with
//! [`record_analytics`](RegressionDetector::record_analytics), and call
//! [`detect`](RegressionDetector::detect). For each route it compares the
//! last [`recent`](RegressionConfig::recent) hour of intervals with the
//! [`baseline`](RegressionConfig::baseline) seven days before them
//! (optionally only the same hours of the week). A regression needs all
//! of:
//!
//! - **effect size**: the median of the recent intervals' p95 at least
//!   1.5× the baseline's median, or the recent error rate (errors over
//!   requests, pooled) at least 2× the baseline's and at least half a
//!   percentage point above it;
//! - **significance**: a one-sided Mann–Whitney U test on the per-interval
//!   values (p95s, or error rates) with p < 0.001, its variance corrected
//!   for serial correlation (below);
//! - **a minimum sample**: 10 recent and 30 baseline intervals with at
//!   least 20 requests each (the p95 of fewer requests is their maximum).
//!
//! A regression the previous check reported stays reported while it keeps
//! 80% of the effect-size thresholds at p < 0.01
//! ([`hold`](RegressionConfig::hold)), so a level hovering at a threshold
//! is one regression rather than one at every other check. When a
//! regression is found, change-point detection over the last day of
//! intervals places its start, and the record carries the build version
//! that served that interval and the one before it.
//!
//! # Intervals from analytics
//!
//! [`record_analytics`](RegressionDetector::record_analytics) reads the
//! slices of the analytics minute ring: each point is one completed slice
//! (or several, for longer intervals), so points never overlap and no
//! request is counted twice. Call it about once a minute: a late call
//! records each missed minute as its own point, and minutes that left the
//! ring (an hour with the default rings) before a call are reported in
//! [`Recorded::lost`] and logged rather than skipped silently.
//! [`flush_analytics`](RegressionDetector::flush_analytics) also records the
//! minute in progress, for a graceful shutdown.
//!
//! # False alarms
//!
//! Real traffic is autocorrelated: a slow minute is followed by slow
//! minutes. The per-interval values are then far from independent, and a
//! plain rank test over the recent hour takes an hour that wandered off
//! for a significant change; checked every minute, it raises false alarms
//! every day or two. The detector inflates the rank test's variance by how
//! much more hour-long windows of the baseline vary than independent
//! intervals would (overlapping batch means of the baseline's ranks,
//! estimated once an hour), which also absorbs a daily rhythm, and judges
//! at p < 0.001, because it judges 1440 times a day.
//!
//! Measured with minute-by-minute checks, one route, the default settings,
//! after a week of history, on simulated traffic with a lunch peak (3 to
//! 183 requests a minute, Poisson), a log p95 of 100 ms + 22% at the peak +
//! an AR(1) process of lag-1 correlation φ and standard deviation 0.2 +
//! sampling noise (0.15 at 100 requests), and a 0.5% error rate times a
//! log-normal AR(1) factor of standard deviation 0.5; a false alarm is a
//! check reporting a regression the check a minute before did not:
//!
//! | φ | false alarms per route (224 days) | before: plain test at p < 0.01, 5 requests, no hold (56 days) |
//! | ---: | ---: | ---: |
//! | 0.5 | none | 0.9 a week |
//! | 0.8 | none | 1.9 a week |
//! | 0.9 | 0.44 a week | 4.8 a week |
//!
//! On a noisier route (standard deviations 0.3 and 0.7) it is 0.34 a week
//! at φ = 0.8 and 0.72 a week at φ = 0.9, against 5.8 and 18 a week before.
//! (The "before" figures use one point per minute; the overlapping points
//! recorded before this crate read whole slices correlated even more.)
//! The crate's tests repeat the measurement on 56 days per setting with
//! fixed seeds and fail above one false alarm a week per route (two for
//! the noisier route at φ = 0.9). On independent noise, no regression was
//! reported over 1000 seeds of a week each. A 2× latency step is still
//! found within the hour: 31 intervals after it began on independent
//! noise, placed at the exact interval; 31 to 54 intervals on the
//! autocorrelated traffic at φ = 0.8.
//!
//! ```
//! use hasivu_metrics::regression::{Point, RegressionDetector, RegressionMetric};
//!
//! let mut detector = RegressionDetector::new();
//! let start = 1_700_000_000 - 1_700_000_000 % 60;
//! detector.set_version("1.4.1");
//! for i in 0..24 * 60 {
//!     let t = start + i * 60;
//!     if i == 24 * 60 - 40 {
//!         detector.set_version("1.4.2");
//!     }
//!     // p95 wobbles around 100 ms, then doubles with the deploy.
//!     let mut p95 = 100.0 + (i % 7) as f64;
//!     if i >= 24 * 60 - 40 {
//!         p95 *= 2.0;
//!     }
//!     detector.record("GET /menu/daily", Point { start_secs: t, requests: 120, errors: 0, p95_ms: p95, version: 0 });
//! }
//! let found = detector.detect(start + 24 * 60 * 60);
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].metric, RegressionMetric::LatencyP95);
//! assert_eq!(found[0].started_at_secs, start + (24 * 60 - 40) * 60);
//! assert_eq!(found[0].version.as_deref(), Some("1.4.2"));
//! assert_eq!(found[0].previous_version.as_deref(), Some("1.4.1"));
//! ```

mod changepoint;
mod history;
#[cfg(feature = "redis")]
mod redis_store;
mod series;
mod stats;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use history::{FileStore, History, HistoryStore, Point};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisHistoryStore;

use crate::{PerformanceAnalytics, Snapshot, error::Error};
use series::{Baseline, Series};

/// The detector's settings; the defaults follow the report (7-day
/// baseline, 1.5× latency, 2× error rate) with p < 0.001, corrected for
/// autocorrelation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RegressionConfig {
    /// Length of one interval (default 1 minute).
    pub interval: Duration,
    /// How far back the baseline reaches before the recent window
    /// (default 7 days).
    pub baseline: Duration,
    /// The recent window compared with the baseline (default 1 hour).
    pub recent: Duration,
    /// Compare only with baseline intervals in the same hours of the week
    /// as the recent ones (default off; give the baseline several weeks
    /// when on).
    pub hour_of_week: bool,
    /// The smallest ratio of recent to baseline median p95 that counts
    /// (default 1.5).
    pub latency_factor: f64,
    /// The smallest ratio of recent to baseline error rate that counts
    /// (default 2.0).
    pub error_factor: f64,
    /// The smallest rise of the error rate that counts, as a fraction
    /// (default 0.005), so 0.01% → 0.02% is not a regression.
    pub min_error_rate_increase: f64,
    /// The significance level of a check (default 0.001: the detector
    /// checks every minute, 1440 times a day).
    pub max_p: f64,
    /// Correct the significance test for serial correlation and daily
    /// rhythm (default on): the variance of the rank sum is multiplied by
    /// how much more the mean rank of a recent-window-long stretch of the
    /// baseline varies than that of independent intervals (overlapping
    /// batch means, estimated once per recent window). Off, the test
    /// treats the intervals as independent.
    pub autocorrelation: bool,
    /// The share of the effect-size thresholds a regression reported by
    /// the previous [`detect`](RegressionDetector::detect) must keep to
    /// stay reported, at ten times the significance level (default 0.8:
    /// a reported 1.5× latency regression holds down to 1.4×). A level
    /// hovering at a threshold is then one regression, not one at every
    /// other check. 1.0 judges every check afresh.
    pub hold: f64,
    /// Fewest recent intervals (default 10).
    pub min_recent: usize,
    /// Fewest baseline intervals (default 30).
    pub min_baseline: usize,
    /// Fewest requests for an interval to count (default 20): the p95 of
    /// fewer requests is their maximum. Routes with less traffic than that
    /// per minute need a longer [`interval`](Self::interval).
    pub min_requests: u64,
    /// How much history change-point detection looks at (default 1 day).
    pub changepoint_window: Duration,
    /// Most routes tracked (default 256); points of further routes are
    /// dropped.
    pub max_routes: usize,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            baseline: Duration::from_secs(7 * 24 * 3600),
            recent: Duration::from_secs(3600),
            hour_of_week: false,
            latency_factor: 1.5,
            error_factor: 2.0,
            min_error_rate_increase: 0.005,
            max_p: 0.001,
            autocorrelation: true,
            hold: 0.8,
            min_recent: 10,
            min_baseline: 30,
            min_requests: 20,
            changepoint_window: Duration::from_secs(24 * 3600),
            max_routes: 256,
        }
    }
}

/// What regressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionMetric {
    /// The per-interval 95th percentile duration.
    LatencyP95,
    /// The server error rate.
    ErrorRate,
}

/// A detected regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// The route.
    pub route: String,
    /// What regressed.
    pub metric: RegressionMetric,
    /// Baseline level: median p95 in milliseconds, or error rate.
    pub baseline: f64,
    /// Recent level, in the same unit.
    pub current: f64,
    /// `current / baseline`; infinite for errors from a zero baseline,
    /// which JSON cannot hold and serialises as `null`.
    pub ratio: f64,
    /// The one-sided Mann–Whitney p-value.
    pub p_value: f64,
    /// Baseline intervals compared.
    pub baseline_intervals: usize,
    /// Recent intervals compared.
    pub recent_intervals: usize,
    /// Start of the first interval at the new level, seconds since the Unix
    /// epoch (from change-point detection; the start of the recent window
    /// when no change point is found).
    pub started_at_secs: u64,
    /// The build version that served that interval, when versions are set.
    pub version: Option<String>,
    /// The build version before it, when different.
    pub previous_version: Option<String>,
    /// When it was detected, seconds since the Unix epoch.
    pub detected_at_secs: u64,
}

/// What one [`record_analytics`](RegressionDetector::record_analytics)
/// call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// Whole intervals recorded, each one point per route.
    pub intervals: u64,
    /// Intervals that had already left the analytics ring, so no point
    /// was recorded for them: the calls were further apart than the ring
    /// is long (an hour with the default rings). Also logged as a warning.
    pub lost: u64,
    /// Whether the interval in progress was recorded too, as a point that
    /// the call recording it whole replaces
    /// ([`flush_analytics`](RegressionDetector::flush_analytics) only).
    pub partial: bool,
}

/// Where [`RegressionDetector::record_analytics`] stands in one analytics
/// instance's slices.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// [`PerformanceAnalytics::id`].
    analytics: u64,
    /// The next interval to record, counted on the analytics clock.
    next: u64,
    /// Unix time of the analytics clock's origin, nanoseconds, fixed at the
    /// first call so points stay exactly one interval apart.
    origin_ns: i128,
}

/// Compares recent intervals with a baseline, per route; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct RegressionDetector {
    config: RegressionConfig,
    versions: Vec<String>,
    current_version: u32,
    routes: BTreeMap<String, Series>,
    latest: Vec<Regression>,
    cursor: Option<Cursor>,
}

impl Default for RegressionDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl RegressionDetector {
    /// A detector with the default [`RegressionConfig`].
    pub fn new() -> Self {
        Self::with_config(RegressionConfig::default())
    }

    /// A detector with `config`.
    pub fn with_config(config: RegressionConfig) -> Self {
        Self {
            config,
            versions: vec![String::new()],
            current_version: 0,
            routes: BTreeMap::new(),
            latest: Vec::new(),
            cursor: None,
        }
    }

    /// A detector with `config` and the history saved in `store` (empty
    /// when nothing was saved yet).
    ///
    /// # Errors
    ///
    /// When the store cannot be read or does not hold history.
    pub fn load(config: RegressionConfig, store: &dyn HistoryStore) -> Result<Self, Error> {
        let mut detector = Self::with_config(config);
        if let Some(history) = store.load()? {
            detector.restore(history);
        }
        Ok(detector)
    }

    /// Saves the history to `store`.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    pub fn save(&self, store: &dyn HistoryStore) -> Result<(), Error> {
        store.save(&self.history())
    }

    /// The settings.
    pub fn config(&self) -> &RegressionConfig {
        &self.config
    }

    /// The build version that serves the intervals recorded from now on
    /// (e.g. from `CARGO_PKG_VERSION` or a git hash).
    pub fn set_version(&mut self, version: impl Into<String>) {
        let version = version.into();
        let index = match self.versions.iter().position(|v| *v == version) {
            Some(index) => index,
            None => {
                self.versions.push(version);
                self.versions.len() - 1
            }
        };
        self.current_version = u32::try_from(index).unwrap_or(0);
    }

    /// Adds one interval of `route`, tagged with the current version (the
    /// point's own `version` is ignored). Points must come in time order: a
    /// point for an interval already recorded replaces it, an older one is
    /// dropped. Points older than baseline + recent are forgotten.
    pub fn record(&mut self, route: &str, point: Point) {
        let point = Point {
            version: self.current_version,
            ..point
        };
        if !self.routes.contains_key(route) && self.routes.len() >= self.config.max_routes {
            return;
        }
        let keep = (self.config.baseline + self.config.recent).as_secs();
        self.routes
            .entry(route.to_owned())
            .or_default()
            .push(point, keep);
    }

    /// Records every whole [`interval`](RegressionConfig::interval) that
    /// `analytics` completed since the last call: one point per route and
    /// interval, read from the slices of an analytics ring, so points never
    /// overlap and no slice is counted twice. `now_secs` is the Unix time
    /// now; the first call ties the analytics clock to it, and points are
    /// then placed exactly one interval apart.
    ///
    /// Call it about once per interval (more often is harmless). A late
    /// call records each missed interval as its own point; intervals that
    /// left the ring before a call (calls further apart than the ring is
    /// long) are counted in [`Recorded::lost`] and logged. The first call
    /// records the whole intervals the ring still holds. An interval is
    /// whole a second after it ended (a tenth of a slice for slices under
    /// ten seconds), so requests timed just before its end have landed.
    ///
    /// The interval must be a whole number of slices of one of the
    /// analytics rings holding at least two intervals (the defaults: one
    /// minute, the minute ring). Otherwise nothing is recorded and a
    /// warning is logged.
    pub fn record_analytics(
        &mut self,
        analytics: &PerformanceAnalytics,
        now_secs: u64,
    ) -> Recorded {
        self.record_slices(analytics, now_secs, false)
    }

    /// [`record_analytics`](Self::record_analytics), then the interval in
    /// progress as a point of its own (replaced when a later call records
    /// it whole). For a graceful shutdown, before
    /// [`save`](Self::save), so the last minutes are not lost.
    pub fn flush_analytics(&mut self, analytics: &PerformanceAnalytics, now_secs: u64) -> Recorded {
        self.record_slices(analytics, now_secs, true)
    }

    fn record_slices(
        &mut self,
        analytics: &PerformanceAnalytics,
        now_secs: u64,
        partial: bool,
    ) -> Recorded {
        let mut recorded = Recorded::default();
        let Some(ring) = analytics.interval_ring(self.config.interval) else {
            tracing::warn!(
                interval = ?self.config.interval,
                "no analytics ring has slices that tile the regression interval; nothing recorded"
            );
            return recorded;
        };
        let now = analytics.now_nanos();
        let span = ring.span();
        let grace = (ring.width / 10).min(1_000_000_000);
        // Intervals before `complete` have ended (and their grace passed).
        let complete = now.saturating_sub(grace) / span;
        // The oldest interval whose slices are all still in the ring.
        let current_epoch = now / ring.width + 1;
        let oldest_epoch = current_epoch.saturating_sub(ring.len - 1).max(1);
        let oldest = (oldest_epoch - 1).div_ceil(ring.slices);
        let mut cursor = match self.cursor {
            Some(cursor) if cursor.analytics == analytics.id() => cursor,
            _ => Cursor {
                analytics: analytics.id(),
                next: oldest,
                origin_ns: i128::from(now_secs) * 1_000_000_000 - i128::from(now),
            },
        };
        if cursor.next < oldest {
            recorded.lost = oldest - cursor.next;
            tracing::warn!(
                lost = recorded.lost,
                "regression intervals left the analytics ring before they were recorded"
            );
            cursor.next = oldest;
        }
        let start_secs = |index: u64| {
            let ns = cursor.origin_ns + i128::from(index) * i128::from(span);
            u64::try_from((ns + 500_000_000).div_euclid(1_000_000_000)).unwrap_or(0)
        };
        while cursor.next < complete {
            // A slice still being zeroed: read the interval on the next call.
            let Some(routes) = analytics.read_interval(&ring, cursor.next) else {
                break;
            };
            for (route, snapshot) in routes {
                if let Some(snapshot) = snapshot {
                    self.record(&route, point(start_secs(cursor.next), &snapshot));
                }
            }
            recorded.intervals += 1;
            cursor.next += 1;
        }
        if partial
            && cursor.next == complete
            && let Some(routes) = analytics.read_interval(&ring, complete)
        {
            for (route, snapshot) in routes {
                if let Some(snapshot) = snapshot {
                    self.record(&route, point(start_secs(complete), &snapshot));
                }
            }
            recorded.partial = true;
        }
        self.cursor = Some(cursor);
        recorded
    }

    /// Compares every route's recent intervals with its baseline as of
    /// `now_secs` (Unix seconds) and returns the regressions found, which
    /// are also kept for [`latest`](Self::latest).
    pub fn detect(&mut self, now_secs: u64) -> Vec<Regression> {
        let checker = Checker {
            previous: &self.latest,
            config: &self.config,
            versions: &self.versions,
            current_version: self.current_version,
        };
        let found: Vec<Regression> = self
            .routes
            .iter_mut()
            .flat_map(|(route, series)| checker.detect_route(route, series, now_secs))
            .collect();
        self.latest.clone_from(&found);
        found
    }

    /// The regressions of the last [`detect`](Self::detect).
    pub fn latest(&self) -> &[Regression] {
        &self.latest
    }

    /// The routes with history.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// A copy of the history, for saving.
    pub fn history(&self) -> History {
        History {
            versions: self.versions.clone(),
            routes: self
                .routes
                .iter()
                .map(|(r, s)| (r.clone(), s.points().iter().copied().collect()))
                .collect(),
        }
    }

    /// Replaces the history with `history` (the current version stays).
    pub fn restore(&mut self, history: History) {
        let current = self.versions[self.current_version as usize].clone();
        self.versions = history.versions;
        if self.versions.first().is_none_or(|v| !v.is_empty()) {
            self.versions.insert(0, String::new());
        }
        let known = self.versions.len();
        self.routes = history
            .routes
            .into_iter()
            .take(self.config.max_routes)
            .map(|(route, points)| {
                let points = points.into_iter().map(|p| Point {
                    version: if (p.version as usize) < known {
                        p.version
                    } else {
                        0
                    },
                    ..p
                });
                (route, Series::new(points))
            })
            .collect();
        self.set_version(current);
    }
}

/// The significance a change point must have to date a regression.
const CHANGEPOINT_P: f64 = 0.01;

/// What a check needs besides the series: the settings and the versions.
struct Checker<'a> {
    /// The regressions the previous check reported.
    previous: &'a [Regression],
    config: &'a RegressionConfig,
    versions: &'a [String],
    current_version: u32,
}

impl Checker<'_> {
    fn detect_route(&self, route: &str, series: &mut Series, now: u64) -> Vec<Regression> {
        let c = self.config;
        let recent_start = now.saturating_sub(c.recent.as_secs());
        let baseline_start = recent_start.saturating_sub(c.baseline.as_secs());
        let min_requests = c.min_requests.max(1);
        let usable = |p: &&Point| p.requests >= min_requests;
        let recent_range = series.range(recent_start, now);
        let recent_count = series
            .points()
            .range(recent_range.clone())
            .filter(usable)
            .count();
        if recent_count < c.min_recent {
            return Vec::new();
        }
        // Same hours of the week: a baseline of its own each time. Plain: the
        // series keeps it up to date as the windows slide.
        if !c.hour_of_week {
            series.slide_baseline(baseline_start, recent_start, min_requests);
        }
        let (found, estimated) = self.check(route, series, now, recent_range);
        for (metric, estimate) in estimated {
            series.set_inflation(metric, self.anchor(now), estimate);
        }
        found
    }

    /// The checks of [`detect_route`](Self::detect_route) on a series whose
    /// baseline is up to date; with the autocorrelation estimates made.
    fn check(
        &self,
        route: &str,
        series: &Series,
        now: u64,
        recent_range: std::ops::Range<usize>,
    ) -> (Vec<Regression>, Vec<(RegressionMetric, f64)>) {
        let c = self.config;
        let recent_start = now.saturating_sub(c.recent.as_secs());
        let baseline_start = recent_start.saturating_sub(c.baseline.as_secs());
        let min_requests = c.min_requests.max(1);
        let usable = |p: &&Point| p.requests >= min_requests;
        let own;
        let baseline: &Baseline = if c.hour_of_week {
            let hours: HashSet<u64> = series
                .points()
                .range(recent_range.clone())
                .map(|p| hour_of_week(p.start_secs))
                .collect();
            let range = series.range(baseline_start, recent_start);
            own = Baseline::of(
                series
                    .points()
                    .range(range)
                    .filter(|p| hours.contains(&hour_of_week(p.start_secs))),
                min_requests,
            );
            &own
        } else {
            series.baseline()
        };
        if baseline.len() < c.min_baseline {
            return (Vec::new(), Vec::new());
        }
        let recent: Vec<&Point> = series.points().range(recent_range).filter(usable).collect();
        // The baseline's points in time order, for the rarer tests below.
        let points_in = |from: u64, to: u64| -> Vec<&Point> {
            let hours: HashSet<u64> = recent.iter().map(|p| hour_of_week(p.start_secs)).collect();
            series
                .points()
                .range(series.range(from, to))
                .filter(usable)
                .filter(|p| !c.hour_of_week || hours.contains(&hour_of_week(p.start_secs)))
                .collect()
        };
        // The autocorrelation correction is estimated once per recent window
        // (an hour by default): from the baseline as of the last multiple
        // of it, which is a week of the same series give or take an hour.
        let anchor = self.anchor(now);
        let mut estimated = Vec::new();
        let mut inflation = |metric: RegressionMetric, value: fn(&Point) -> f64| -> f64 {
            if !c.autocorrelation {
                return 1.0;
            }
            if c.hour_of_week {
                return self.inflation(&points_in(baseline_start, recent_start), value);
            }
            if let Some(cached) = series.inflation(metric, anchor) {
                return cached;
            }
            let estimate = self.inflation(
                &points_in(anchor.saturating_sub(c.baseline.as_secs()), anchor),
                value,
            );
            estimated.push((metric, estimate));
            estimate
        };
        // A regression the previous check reported holds on a little
        // below the thresholds that found it, so a level hovering at them
        // is one regression, not one at every other check.
        let held = |metric| {
            c.hold < 1.0
                && self
                    .previous
                    .iter()
                    .any(|r| r.metric == metric && r.route == route)
        };
        let relaxed = |held: bool, factor: f64| {
            if held {
                1.0 + (factor - 1.0) * c.hold
            } else {
                factor
            }
        };
        let max_p = |held: bool| if held { c.max_p * 10.0 } else { c.max_p };
        let mut out = Vec::new();

        let after: Vec<f64> = recent.iter().map(|p| p.p95_ms).collect();
        let latency_held = held(RegressionMetric::LatencyP95);
        if let (Some(b), Some(a)) = (sorted_median(&baseline.sorted), stats::median(&after))
            && b > 0.0
            && a / b >= relaxed(latency_held, c.latency_factor)
        {
            let inflation = inflation(RegressionMetric::LatencyP95, |p| p.p95_ms);
            let p = stats::mann_whitney_greater_sorted(&baseline.sorted, &after, inflation);
            if p < max_p(latency_held) {
                out.push(self.record_for(
                    route,
                    series,
                    now,
                    RegressionMetric::LatencyP95,
                    b,
                    a,
                    p,
                    (baseline.len(), recent.len()),
                ));
            }
        }

        let (e, n) = recent.iter().fold((0u64, 0u64), |(e, n), p| {
            (e + p.errors.min(p.requests), n + p.requests)
        });
        let (b, a) = (
            baseline.errors as f64 / baseline.requests as f64,
            e as f64 / n as f64,
        );
        let ratio = if b > 0.0 { a / b } else { f64::INFINITY };
        let errors_held = held(RegressionMetric::ErrorRate);
        let increase = if errors_held {
            c.min_error_rate_increase * c.hold
        } else {
            c.min_error_rate_increase
        };
        if a - b >= increase && ratio >= relaxed(errors_held, c.error_factor) {
            let inflation = inflation(RegressionMetric::ErrorRate, error_rate);
            let mut before: Vec<f64> = points_in(baseline_start, recent_start)
                .into_iter()
                .map(error_rate)
                .collect();
            before.sort_unstable_by(f64::total_cmp);
            let rates: Vec<f64> = recent.iter().map(|p| error_rate(p)).collect();
            let p = stats::mann_whitney_greater_sorted(&before, &rates, inflation);
            if p < max_p(errors_held) {
                out.push(self.record_for(
                    route,
                    series,
                    now,
                    RegressionMetric::ErrorRate,
                    b,
                    a,
                    p,
                    (baseline.len(), recent.len()),
                ));
            }
        }
        (out, estimated)
    }

    /// Where the autocorrelation correction used at `now` is estimated:
    /// the start of the recent window, rounded down to a multiple of its
    /// length.
    fn anchor(&self, now: u64) -> u64 {
        let window = self.config.recent.as_secs().max(1);
        now.saturating_sub(window) / window * window
    }

    /// How much more a recent window's mean rank varies than independent
    /// intervals' would: overlapping batch means of the placements of
    /// `baseline`'s values over windows as long as the recent one.
    fn inflation(&self, baseline: &[&Point], value: fn(&Point) -> f64) -> f64 {
        let c = self.config;
        let (Some(first), Some(last)) = (baseline.first(), baseline.last()) else {
            return 1.0;
        };
        let values: Vec<f64> = baseline.iter().map(|p| value(p)).collect();
        let placements = stats::rank(&values).placements;
        let interval = c.interval.as_secs().max(1);
        // On the interval grid, unusable intervals as NaN, so a window is a
        // stretch of time like the recent one.
        let mut grid =
            vec![f64::NAN; ((last.start_secs - first.start_secs) / interval) as usize + 1];
        for (p, placement) in baseline.iter().zip(placements) {
            grid[((p.start_secs - first.start_secs) / interval) as usize] = placement;
        }
        let block = (c.recent.as_secs() / interval).max(1) as usize;
        stats::batch_means_inflation(&grid, block, c.min_recent)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_for(
        &self,
        route: &str,
        series: &Series,
        now: u64,
        metric: RegressionMetric,
        baseline: f64,
        current: f64,
        p_value: f64,
        (baseline_intervals, recent_intervals): (usize, usize),
    ) -> Regression {
        let c = self.config;
        let from = now.saturating_sub(c.changepoint_window.as_secs());
        let recent_start = now.saturating_sub(c.recent.as_secs());
        let window: Vec<&Point> = series
            .points()
            .range(series.range(from, now))
            .filter(|p| p.requests >= c.min_requests.max(1))
            .collect();
        let values: Vec<f64> = window
            .iter()
            .map(|p| match metric {
                // Logs: a latency step is multiplicative.
                RegressionMetric::LatencyP95 => p.p95_ms.max(1e-3).ln(),
                RegressionMetric::ErrorRate => error_rate(p),
            })
            .collect();
        let start = changepoint::change_points(&values, 5, CHANGEPOINT_P)
            .into_iter()
            .rev()
            .find(|cp| cp.mean_after > cp.mean_before)
            .map(|cp| cp.index);
        let (started_at_secs, version, previous) = match start {
            Some(i) => (
                window[i].start_secs,
                window[i].version,
                i.checked_sub(1).map(|j| window[j].version),
            ),
            None => {
                let first = window.iter().position(|p| p.start_secs >= recent_start);
                match first {
                    Some(i) => (
                        window[i].start_secs,
                        window[i].version,
                        i.checked_sub(1).map(|j| window[j].version),
                    ),
                    None => (recent_start, self.current_version, None),
                }
            }
        };
        let name = |v: u32| {
            self.versions
                .get(v as usize)
                .filter(|s| !s.is_empty())
                .cloned()
        };
        Regression {
            route: route.to_owned(),
            metric,
            baseline,
            current,
            ratio: if baseline > 0.0 {
                current / baseline
            } else {
                f64::INFINITY
            },
            p_value,
            baseline_intervals,
            recent_intervals,
            started_at_secs,
            version: name(version),
            previous_version: previous.filter(|p| *p != version).and_then(name),
            detected_at_secs: now,
        }
    }
}

/// The median of ascending `values`.
fn sorted_median(values: &[f64]) -> Option<f64> {
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The point of one interval's snapshot.
fn point(start_secs: u64, snapshot: &Snapshot) -> Point {
    let requests = snapshot.count();
    Point {
        start_secs,
        requests,
        errors: snapshot.server_errors(),
        p95_ms: snapshot
            .quantile(0.95)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        version: 0,
    }
}

fn error_rate(p: &Point) -> f64 {
    if p.requests == 0 {
        0.0
    } else {
        p.errors.min(p.requests) as f64 / p.requests as f64
    }
}

/// Hours since the epoch modulo a week: equal for the same hour of the
/// same weekday.
fn hour_of_week(secs: u64) -> u64 {
    (secs / 3600) % 168
}
