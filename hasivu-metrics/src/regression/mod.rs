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
//!   values (p95s, or error rates) with p < 0.01, so on a stable service
//!   about 1% of checks or fewer are false alarms;
//! - **a minimum sample**: 10 recent and 30 baseline intervals with at
//!   least 5 requests each.
//!
//! The test runs on per-interval aggregates rather than single requests,
//! which keeps the samples close to independent (a burst of slow requests
//! is one slow interval, not hundreds of "independent" observations).
//! When a regression is found, change-point detection over the last day
//! of intervals places its start, and the record carries the build
//! version that served that interval and the one before it.
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
mod stats;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use history::{FileStore, History, HistoryStore, Point};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisHistoryStore;

use crate::{PerformanceAnalytics, error::Error};

/// The detector's settings; the defaults follow the report (7-day
/// baseline, 1.5× latency, 2× error rate) with p < 0.01.
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
    /// The significance level (default 0.01).
    pub max_p: f64,
    /// Fewest recent intervals (default 10).
    pub min_recent: usize,
    /// Fewest baseline intervals (default 30).
    pub min_baseline: usize,
    /// Fewest requests for an interval to count (default 5): a p95 of two
    /// requests says little.
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
            max_p: 0.01,
            min_recent: 10,
            min_baseline: 30,
            min_requests: 5,
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

/// Compares recent intervals with a baseline, per route; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct RegressionDetector {
    config: RegressionConfig,
    versions: Vec<String>,
    current_version: u32,
    routes: BTreeMap<String, VecDeque<Point>>,
    latest: Vec<Regression>,
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
        let series = self.routes.entry(route.to_owned()).or_default();
        match series.back_mut() {
            Some(last) if last.start_secs == point.start_secs => *last = point,
            Some(last) if last.start_secs > point.start_secs => return,
            _ => series.push_back(point),
        }
        let keep = (self.config.baseline + self.config.recent).as_secs();
        let oldest = point.start_secs.saturating_sub(keep);
        while series.front().is_some_and(|p| p.start_secs < oldest) {
            series.pop_front();
        }
    }

    /// Records, for every route of `analytics`, the interval that ends
    /// `now_secs` (Unix seconds) from its summary over the last
    /// [`interval`](RegressionConfig::interval). Call it once per interval.
    pub fn record_analytics(&mut self, analytics: &PerformanceAnalytics, now_secs: u64) {
        let interval = self.config.interval.as_secs().max(1);
        let start = now_secs.saturating_sub(interval);
        for route in analytics.summaries(self.config.interval) {
            let s = route.summary;
            self.record(
                &route.route,
                Point {
                    start_secs: start,
                    requests: s.count,
                    errors: s.server_errors,
                    p95_ms: if s.count == 0 { 0.0 } else { s.p95_ms },
                    version: 0,
                },
            );
        }
    }

    /// Compares every route's recent intervals with its baseline as of
    /// `now_secs` (Unix seconds) and returns the regressions found, which
    /// are also kept for [`latest`](Self::latest).
    pub fn detect(&mut self, now_secs: u64) -> Vec<Regression> {
        let found: Vec<Regression> = self
            .routes
            .iter()
            .flat_map(|(route, series)| self.detect_route(route, series, now_secs))
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
                .map(|(r, s)| (r.clone(), s.iter().copied().collect()))
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
                let points = points
                    .into_iter()
                    .map(|p| Point {
                        version: if (p.version as usize) < known {
                            p.version
                        } else {
                            0
                        },
                        ..p
                    })
                    .collect();
                (route, points)
            })
            .collect();
        self.set_version(current);
    }

    fn detect_route(&self, route: &str, series: &VecDeque<Point>, now: u64) -> Vec<Regression> {
        let c = &self.config;
        let recent_start = now.saturating_sub(c.recent.as_secs());
        let baseline_start = recent_start.saturating_sub(c.baseline.as_secs());
        let usable = |p: &&Point| p.requests >= c.min_requests.max(1);
        let recent: Vec<&Point> = series
            .iter()
            .filter(|p| p.start_secs >= recent_start && p.start_secs < now)
            .filter(usable)
            .collect();
        if recent.len() < c.min_recent {
            return Vec::new();
        }
        let hours: HashSet<u64> = recent.iter().map(|p| hour_of_week(p.start_secs)).collect();
        let baseline: Vec<&Point> = series
            .iter()
            .filter(|p| p.start_secs >= baseline_start && p.start_secs < recent_start)
            .filter(usable)
            .filter(|p| !c.hour_of_week || hours.contains(&hour_of_week(p.start_secs)))
            .collect();
        if baseline.len() < c.min_baseline {
            return Vec::new();
        }
        let mut out = Vec::new();

        let before: Vec<f64> = baseline.iter().map(|p| p.p95_ms).collect();
        let after: Vec<f64> = recent.iter().map(|p| p.p95_ms).collect();
        if let (Some(b), Some(a)) = (stats::median(&before), stats::median(&after))
            && b > 0.0
            && a / b >= c.latency_factor
        {
            let p = stats::mann_whitney_greater(&before, &after);
            if p < c.max_p {
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

        let rate = |points: &[&Point]| {
            let (e, n) = points.iter().fold((0u64, 0u64), |(e, n), p| {
                (e + p.errors.min(p.requests), n + p.requests)
            });
            e as f64 / n as f64
        };
        let (b, a) = (rate(&baseline), rate(&recent));
        let ratio = if b > 0.0 { a / b } else { f64::INFINITY };
        if a - b >= c.min_error_rate_increase && ratio >= c.error_factor {
            let per =
                |points: &[&Point]| -> Vec<f64> { points.iter().map(|p| error_rate(p)).collect() };
            let p = stats::mann_whitney_greater(&per(&baseline), &per(&recent));
            if p < c.max_p {
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
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn record_for(
        &self,
        route: &str,
        series: &VecDeque<Point>,
        now: u64,
        metric: RegressionMetric,
        baseline: f64,
        current: f64,
        p_value: f64,
        (baseline_intervals, recent_intervals): (usize, usize),
    ) -> Regression {
        let c = &self.config;
        let from = now.saturating_sub(c.changepoint_window.as_secs());
        let recent_start = now.saturating_sub(c.recent.as_secs());
        let window: Vec<&Point> = series
            .iter()
            .filter(|p| p.start_secs >= from && p.start_secs < now)
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
        let start = changepoint::change_points(&values, 5, c.max_p)
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
