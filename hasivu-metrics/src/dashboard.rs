//! Dashboard data: one serde snapshot with system status, RED figures per
//! route, the slowest routes, cache and pool statistics, active alerts,
//! regressions and rule-based recommendations.
//!
//! ```
//! use std::time::Duration;
//! use hasivu_metrics::{Dashboard, PerformanceAnalytics, Sample};
//!
//! let analytics = PerformanceAnalytics::new();
//! for i in 0..100 {
//!     let sample = Sample::new(Duration::from_millis(20)).status(200).cache_hit(i % 3 != 0);
//!     analytics.record("GET /menu/daily", &sample);
//! }
//! let dashboard = Dashboard::new(analytics).version("1.4.2");
//! let snapshot = dashboard.snapshot(Duration::from_secs(3600));
//! assert_eq!(snapshot.routes[0].route, "GET /menu/daily");
//! assert_eq!(
//!     snapshot.recommendations[0].message,
//!     "cache hit rate 66% on GET /menu/daily, target 90%"
//! );
//! let json = serde_json::to_string(&snapshot).unwrap(); // for the dashboard's endpoint
//! # let _ = json;
//! ```
//!
//! With alerts, regressions and the system monitor:
//!
//! ```
//! use std::{sync::{Arc, Mutex}, time::Duration};
//! use hasivu_metrics::{
//!     Dashboard, PerformanceAnalytics, SystemStatus,
//!     alerts::{AlertManager, Rule},
//!     regression::RegressionDetector,
//! };
//!
//! let analytics = PerformanceAnalytics::new();
//! let alerts = AlertManager::builder().rules(Rule::report_defaults()).build().unwrap();
//! let detector = Arc::new(Mutex::new(RegressionDetector::new()));
//! let dashboard = Dashboard::new(analytics)
//!     .alerts(alerts)
//!     .regressions({
//!         let detector = Arc::clone(&detector);
//!         move || detector.lock().unwrap().latest().to_vec()
//!     })
//!     .system(SystemStatus::default) // e.g. `move || monitor.status()`
//!     .cache_hit_target(0.8)
//!     .slowest(5);
//! let snapshot = dashboard.snapshot(Duration::from_secs(300));
//! assert_eq!(snapshot.status, hasivu_metrics::dashboard::Health::Ok);
//! ```

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    PerformanceAnalytics, SystemStatus,
    alerts::{Alert, AlertManager, Phase, Severity},
    analytics::{RouteSummary, Summary},
    regression::{Regression, RegressionMetric},
};

type Source<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Overall health, from the firing alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing firing.
    Ok,
    /// A warning is firing.
    Warning,
    /// A critical alert is firing.
    Critical,
}

/// A route among the slowest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowRoute {
    /// The route.
    pub route: String,
    /// Its 95th percentile over the range, milliseconds.
    pub p95_ms: f64,
    /// Its 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Requests over the range.
    pub count: u64,
}

/// Cache figures over the range, all routes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Responses a cache answered.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// `hits / (hits + misses)`, `None` without lookups.
    pub hit_rate: Option<f64>,
}

/// A suggestion derived from the figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// How pressing it is.
    pub severity: Severity,
    /// The route it is about, if any.
    pub route: Option<String>,
    /// What to look at, in a sentence.
    pub message: String,
}

/// Everything a dashboard shows, at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DashboardSnapshot {
    /// The range the figures cover, seconds.
    pub range_secs: f64,
    /// The build version, when set.
    pub version: Option<String>,
    /// Overall health from the firing alerts.
    pub status: Health,
    /// The process and host, when a source is set.
    pub system: Option<SystemStatus>,
    /// All routes merged.
    pub total: Summary,
    /// Per route: rate, errors, duration (RED), by request count, busiest
    /// first.
    pub routes: Vec<RouteSummary>,
    /// The routes with the highest p95, slowest first.
    pub slowest: Vec<SlowRoute>,
    /// Cache hits and misses, all routes.
    pub cache: CacheStats,
    /// Provider readings of the system status (pool size, idle, waiting;
    /// cache statistics), by provider.
    pub pools: BTreeMap<String, BTreeMap<String, f64>>,
    /// Pending and firing alerts.
    pub alerts: Vec<Alert>,
    /// Regressions from the detector's latest run.
    pub regressions: Vec<Regression>,
    /// Suggestions, most pressing first.
    pub recommendations: Vec<Recommendation>,
}

/// Builds [`DashboardSnapshot`]s; a cheap, cloneable handle.
#[derive(Clone)]
#[must_use]
pub struct Dashboard {
    analytics: PerformanceAnalytics,
    alerts: Option<AlertManager>,
    regressions: Option<Source<Vec<Regression>>>,
    system: Option<Source<SystemStatus>>,
    version: Option<String>,
    slowest: usize,
    cache_hit_target: f64,
    latency_target_ms: f64,
    error_rate_target: f64,
    memory_target: f64,
    min_requests: u64,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("version", &self.version)
            .field("alerts", &self.alerts.is_some())
            .field("regressions", &self.regressions.is_some())
            .field("system", &self.system.is_some())
            .field("slowest", &self.slowest)
            .field("cache_hit_target", &self.cache_hit_target)
            .field("latency_target_ms", &self.latency_target_ms)
            .field("error_rate_target", &self.error_rate_target)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard over `analytics`. Defaults: the 10 slowest routes;
    /// recommendations when a route's cache hit rate is below 90%, its p95
    /// above 2000 ms or its error rate above 1%, with at least 20
    /// requests, or host memory is above 80% in use.
    pub fn new(analytics: PerformanceAnalytics) -> Self {
        Self {
            analytics,
            alerts: None,
            regressions: None,
            system: None,
            version: None,
            slowest: 10,
            cache_hit_target: 0.9,
            latency_target_ms: 2000.0,
            error_rate_target: 0.01,
            memory_target: 0.8,
            min_requests: 20,
        }
    }

    /// Lists this manager's active alerts and derives health from them.
    pub fn alerts(mut self, manager: AlertManager) -> Self {
        self.alerts = Some(manager);
        self
    }

    /// Where regressions come from (e.g. a shared detector's
    /// [`latest`](crate::RegressionDetector::latest)).
    pub fn regressions<F>(mut self, source: F) -> Self
    where
        F: Fn() -> Vec<Regression> + Send + Sync + 'static,
    {
        self.regressions = Some(Arc::new(source));
        self
    }

    /// Where the system status comes from (e.g. a monitor handle's
    /// `status`).
    pub fn system<F>(mut self, source: F) -> Self
    where
        F: Fn() -> SystemStatus + Send + Sync + 'static,
    {
        self.system = Some(Arc::new(source));
        self
    }

    /// The build version shown.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// How many slowest routes to list.
    pub fn slowest(mut self, n: usize) -> Self {
        self.slowest = n;
        self
    }

    /// The cache hit rate below which a route gets a recommendation.
    pub fn cache_hit_target(mut self, target: f64) -> Self {
        self.cache_hit_target = target;
        self
    }

    /// The p95 above which a route gets a recommendation, milliseconds.
    pub fn latency_target_ms(mut self, target: f64) -> Self {
        self.latency_target_ms = target;
        self
    }

    /// The error rate above which a route gets a recommendation.
    pub fn error_rate_target(mut self, target: f64) -> Self {
        self.error_rate_target = target;
        self
    }

    /// Fewest requests for a route's figures to give recommendations.
    pub fn min_requests(mut self, requests: u64) -> Self {
        self.min_requests = requests;
        self
    }

    /// The figures over the last `range`.
    pub fn snapshot(&self, range: Duration) -> DashboardSnapshot {
        let mut routes: Vec<RouteSummary> = self
            .analytics
            .summaries(range)
            .into_iter()
            .filter(|r| r.summary.count > 0)
            .collect();
        routes.sort_by(|a, b| {
            b.summary
                .count
                .cmp(&a.summary.count)
                .then(a.route.cmp(&b.route))
        });
        let total = self.analytics.total(range).summary();
        let mut slowest: Vec<SlowRoute> = routes
            .iter()
            .map(|r| SlowRoute {
                route: r.route.clone(),
                p95_ms: r.summary.p95_ms,
                p99_ms: r.summary.p99_ms,
                count: r.summary.count,
            })
            .collect();
        slowest.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms).then(a.route.cmp(&b.route)));
        slowest.truncate(self.slowest);
        let system = self.system.as_ref().map(|f| f());
        let alerts = self
            .alerts
            .as_ref()
            .map(AlertManager::active)
            .unwrap_or_default();
        let regressions = self.regressions.as_ref().map(|f| f()).unwrap_or_default();
        let firing = |s| {
            alerts
                .iter()
                .any(|a| a.phase == Phase::Firing && a.severity == s)
        };
        let status = if firing(Severity::Critical) {
            Health::Critical
        } else if firing(Severity::Warning) {
            Health::Warning
        } else {
            Health::Ok
        };
        let recommendations = self.recommend(&routes, system.as_ref(), &regressions);
        DashboardSnapshot {
            range_secs: range.as_secs_f64(),
            version: self.version.clone(),
            status,
            pools: system
                .as_ref()
                .map(|s| s.providers.clone())
                .unwrap_or_default(),
            system,
            cache: CacheStats {
                hits: total.cache_hits,
                misses: total.cache_misses,
                hit_rate: total.cache_hit_rate,
            },
            total,
            routes,
            slowest,
            alerts,
            regressions,
            recommendations,
        }
    }

    fn recommend(
        &self,
        routes: &[RouteSummary],
        system: Option<&SystemStatus>,
        regressions: &[Regression],
    ) -> Vec<Recommendation> {
        let mut out = Vec::new();
        let pct = |f: f64| (f * 100.0).round();
        let mut add = |severity, route: Option<&str>, message: String| {
            out.push(Recommendation {
                severity,
                route: route.map(str::to_owned),
                message,
            });
        };
        for r in regressions {
            let message = match r.metric {
                RegressionMetric::LatencyP95 => format!(
                    "p95 on {} rose {:.1}× ({:.0} → {:.0} ms)",
                    r.route, r.ratio, r.baseline, r.current
                ),
                RegressionMetric::ErrorRate => format!(
                    "error rate on {} rose from {:.2}% to {:.2}%",
                    r.route,
                    r.baseline * 100.0,
                    r.current * 100.0
                ),
            };
            let message = match &r.version {
                Some(v) => format!("{message} since version {v}; check that deploy"),
                None => message,
            };
            add(Severity::Critical, Some(&r.route), message);
        }
        for r in routes
            .iter()
            .filter(|r| r.summary.count >= self.min_requests)
        {
            let s = &r.summary;
            if s.error_rate > self.error_rate_target {
                add(
                    Severity::Critical,
                    Some(&r.route),
                    format!(
                        "error rate {:.1}% on {}, target below {}%",
                        s.error_rate * 100.0,
                        r.route,
                        pct(self.error_rate_target)
                    ),
                );
            }
            if s.p95_ms > self.latency_target_ms {
                add(
                    Severity::Warning,
                    Some(&r.route),
                    format!(
                        "p95 {:.0} ms on {}, target {:.0} ms",
                        s.p95_ms, r.route, self.latency_target_ms
                    ),
                );
            }
            if let Some(hit) = s.cache_hit_rate
                && s.cache_hits + s.cache_misses >= self.min_requests
                && hit < self.cache_hit_target
            {
                add(
                    Severity::Warning,
                    Some(&r.route),
                    format!(
                        "cache hit rate {}% on {}, target {}%",
                        (hit * 100.0).floor(),
                        r.route,
                        pct(self.cache_hit_target)
                    ),
                );
            }
        }
        if let Some(s) = system {
            if let (Some(total), Some(available)) = (s.memory_total_bytes, s.memory_available_bytes)
                && total > 0
            {
                let used = 1.0 - available as f64 / total as f64;
                if used > self.memory_target {
                    add(
                        Severity::Warning,
                        None,
                        format!(
                            "host memory {}% in use, target below {}%",
                            pct(used),
                            pct(self.memory_target)
                        ),
                    );
                }
            }
            for (provider, readings) in &s.providers {
                if let Some(waiting) = readings.get("db.client.connection.pending_requests")
                    && *waiting > 0.0
                {
                    add(
                        Severity::Warning,
                        None,
                        format!(
                            "{waiting:.0} requests waiting for a connection in {provider}; raise its size or shorten queries"
                        ),
                    );
                }
            }
        }
        // Stable: critical first, then in the order found.
        out.sort_by_key(|r| std::cmp::Reverse(r.severity));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ManualClock, Sample,
        alerts::{Inputs, Metric, Rule},
    };

    #[test]
    fn snapshot_has_red_slowest_alerts_and_recommendations() {
        let time = ManualClock::new();
        let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
        time.set(Duration::from_secs(600));
        for i in 0..100u64 {
            analytics.record(
                "GET /menu/daily",
                &Sample::new(Duration::from_millis(20))
                    .status(200)
                    .cache_hit(i % 100 < 62),
            );
            if i % 2 == 0 {
                let status = if i % 10 == 0 { 500 } else { 200 };
                analytics.record(
                    "POST /orders",
                    &Sample::new(Duration::from_millis(2500)).status(status),
                );
            }
        }
        let alerts = AlertManager::builder()
            .clock(time.clock())
            .rule(Rule::above("queue", Metric::Value("q".into())).critical(10.0))
            .build()
            .unwrap();
        alerts.evaluate(&Inputs::new().value("q", 50.0));
        let status = SystemStatus {
            memory_total_bytes: Some(100),
            memory_available_bytes: Some(10),
            providers: [(
                "db".to_owned(),
                [("db.client.connection.pending_requests".to_owned(), 3.0)].into(),
            )]
            .into(),
            ..SystemStatus::default()
        };
        let regression = Regression {
            route: "POST /orders".into(),
            metric: RegressionMetric::LatencyP95,
            baseline: 1000.0,
            current: 2500.0,
            ratio: 2.5,
            p_value: 1e-9,
            baseline_intervals: 1000,
            recent_intervals: 60,
            started_at_secs: 0,
            version: Some("1.4.2".into()),
            previous_version: Some("1.4.1".into()),
            detected_at_secs: 3600,
        };
        let dashboard = Dashboard::new(analytics)
            .alerts(alerts)
            .system(move || status.clone())
            .regressions(move || vec![regression.clone()])
            .version("1.4.2");
        let s = dashboard.snapshot(Duration::from_secs(300));
        assert_eq!(s.status, Health::Critical);
        assert_eq!(s.alerts.len(), 1);
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.routes[0].route, "GET /menu/daily"); // busiest first
        assert_eq!(s.slowest[0].route, "POST /orders");
        assert_eq!(s.total.count, 150);
        assert_eq!(s.cache.hits, 62);
        assert_eq!(s.pools["db"]["db.client.connection.pending_requests"], 3.0);
        let messages: Vec<&str> = s
            .recommendations
            .iter()
            .map(|r| r.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "p95 on POST /orders rose 2.5× (1000 → 2500 ms) since version 1.4.2; check that deploy",
                "error rate 20.0% on POST /orders, target below 1%",
                "cache hit rate 62% on GET /menu/daily, target 90%",
                "p95 2500 ms on POST /orders, target 2000 ms",
                "host memory 90% in use, target below 80%",
                "3 requests waiting for a connection in db; raise its size or shorten queries",
            ]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["status"], "critical");
        let back: DashboardSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back.routes, s.routes);
    }
}
