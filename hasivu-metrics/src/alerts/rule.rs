//! Alert rules and the values they read.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{PerformanceAnalytics, SystemStatus, analytics::Summary, error::Error};

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Look at it soon.
    Warning,
    /// Look at it now.
    Critical,
}

impl Severity {
    /// `"warning"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Which side of the threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Values above the threshold alert (latency, error rate, memory).
    Above,
    /// Values below the threshold alert (cache hit rate).
    Below,
}

impl Direction {
    fn beyond(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::Below => value < threshold,
        }
    }
}

/// What a rule measures. Request metrics are read from analytics over the
/// rule's window; rates are fractions (0.05 is 5%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Metric {
    /// 95th percentile duration, milliseconds.
    LatencyP95Ms,
    /// 99th percentile duration, milliseconds.
    LatencyP99Ms,
    /// Mean duration, milliseconds.
    LatencyMeanMs,
    /// Server errors over requests.
    ErrorRate,
    /// Cache hits over cache lookups; the volume is the number of lookups.
    CacheHitRate,
    /// Requests per second.
    RequestRate,
    /// Host memory in use over host memory, from [`SystemStatus`].
    MemoryUsed,
    /// Process CPU utilisation (1.0 is one core), from [`SystemStatus`].
    CpuUtilization,
    /// A provider's reading in [`SystemStatus::providers`].
    Provider {
        /// The provider's name.
        provider: String,
        /// The reading's name.
        reading: String,
    },
    /// A plain named value handed to [`Inputs::value`].
    Value(String),
    /// The SLO burn rate over two windows: the smaller of the error rates
    /// over `long` and `short`, divided by the error budget
    /// `1 - objective`. Both windows must burn faster than the threshold
    /// for the rule to trigger (the SRE workbook's multi-window alert).
    BurnRate {
        /// The availability objective, e.g. `0.999`.
        objective: f64,
        /// The long window (e.g. one hour).
        long: Duration,
        /// The short window (e.g. five minutes).
        short: Duration,
    },
}

impl Metric {
    fn is_request_metric(&self) -> bool {
        matches!(
            self,
            Self::LatencyP95Ms
                | Self::LatencyP99Ms
                | Self::LatencyMeanMs
                | Self::ErrorRate
                | Self::CacheHitRate
                | Self::RequestRate
                | Self::BurnRate { .. }
        )
    }
}

/// What a rule does when an evaluation has no value for it: no requests
/// (or cache lookups) in the window, fewer than the rule's
/// [`min_volume`](Rule::min_volume), a missing system reading or value, or
/// a route missing from the inputs.
///
/// The models are Grafana's "no data" states (Keep Last State, OK,
/// Alerting) and Prometheus' `absent()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoData {
    /// As if the evaluation had not happened (the default): a firing alert
    /// keeps firing, a pending one stays pending, an inactive one stays
    /// inactive. An error-rate alert does not resolve because its route
    /// stopped getting requests during an outage; it resolves once real
    /// traffic is back below the clear threshold.
    #[default]
    Keep,
    /// Counts as a value inside the clear threshold: a pending alert is
    /// dropped and a firing one resolves after `keep_firing_for`.
    Clear,
    /// Counts as a value beyond the trigger threshold: the alert goes
    /// pending and fires after `for`, with no value in its notification,
    /// like a Prometheus `absent()` rule. For gauges that must always be
    /// there (a heartbeat, a queue depth).
    Alert,
}

/// Which routes a request-metric rule watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// All routes merged.
    Total,
    /// One route, by name (`"GET /menu/daily"`).
    Route(String),
    /// Every route on its own: one alert per route.
    EachRoute,
}

/// One value read for a rule, with the number of events behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The value.
    pub value: f64,
    /// Requests (or cache lookups) behind it; `None` for gauges.
    pub volume: Option<u64>,
}

/// The values rules are evaluated against: analytics, a system status and
/// plain named values, any of them optional.
///
/// ```
/// use hasivu_metrics::alerts::Inputs;
///
/// let inputs = Inputs::new().value("queue_depth", 12.0);
/// # let _ = inputs;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Inputs<'a> {
    analytics: Option<&'a PerformanceAnalytics>,
    system: Option<&'a SystemStatus>,
    values: BTreeMap<String, Reading>,
}

impl<'a> Inputs<'a> {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads request metrics from `analytics`.
    pub fn analytics(mut self, analytics: &'a PerformanceAnalytics) -> Self {
        self.analytics = Some(analytics);
        self
    }

    /// Reads system metrics from `status`.
    pub fn system(mut self, status: &'a SystemStatus) -> Self {
        self.system = Some(status);
        self
    }

    /// A plain value for [`Metric::Value`] rules.
    pub fn value(self, name: impl Into<String>, value: f64) -> Self {
        self.reading(
            name,
            Reading {
                value,
                volume: None,
            },
        )
    }

    /// A plain value with its volume, so [`Rule::min_volume`] applies.
    pub fn reading(mut self, name: impl Into<String>, reading: Reading) -> Self {
        self.values.insert(name.into(), reading);
        self
    }

    pub(crate) fn routes(&self) -> Vec<String> {
        self.analytics.map(|a| a.routes()).unwrap_or_default()
    }

    fn summary(&self, route: Option<&str>, window: Duration) -> Option<Summary> {
        let analytics = self.analytics?;
        match route {
            Some(route) => analytics.summary(route, window),
            None => Some(analytics.total(window).summary()),
        }
    }

    /// The reading of `metric` for `route` (`None`: all routes).
    pub(crate) fn read(
        &self,
        metric: &Metric,
        route: Option<&str>,
        window: Duration,
    ) -> Option<Reading> {
        let volume = |s: &Summary| Some(s.count);
        match metric {
            Metric::LatencyP95Ms
            | Metric::LatencyP99Ms
            | Metric::LatencyMeanMs
            | Metric::ErrorRate
            | Metric::RequestRate => {
                let s = self.summary(route, window)?;
                if s.count == 0 {
                    return None;
                }
                let value = match metric {
                    Metric::LatencyP95Ms => s.p95_ms,
                    Metric::LatencyP99Ms => s.p99_ms,
                    Metric::LatencyMeanMs => s.mean_ms,
                    Metric::ErrorRate => s.error_rate,
                    _ => s.rate_per_sec,
                };
                Some(Reading {
                    value,
                    volume: volume(&s),
                })
            }
            Metric::CacheHitRate => {
                let s = self.summary(route, window)?;
                Some(Reading {
                    value: s.cache_hit_rate?,
                    volume: Some(s.cache_hits + s.cache_misses),
                })
            }
            Metric::BurnRate {
                objective,
                long,
                short,
            } => {
                let long = self.summary(route, *long)?;
                let short = self.summary(route, *short)?;
                if long.count == 0 || short.count == 0 {
                    return None;
                }
                let budget = (1.0 - objective).max(f64::MIN_POSITIVE);
                Some(Reading {
                    value: long.error_rate.min(short.error_rate) / budget,
                    volume: Some(short.count),
                })
            }
            Metric::MemoryUsed => {
                let s = self.system?;
                let total = s.memory_total_bytes? as f64;
                let available = s.memory_available_bytes? as f64;
                (total > 0.0).then(|| Reading {
                    value: (total - available) / total,
                    volume: None,
                })
            }
            Metric::CpuUtilization => Some(Reading {
                value: self.system?.cpu_utilization?,
                volume: None,
            }),
            Metric::Provider { provider, reading } => Some(Reading {
                value: *self.system?.providers.get(provider)?.get(reading)?,
                volume: None,
            }),
            Metric::Value(name) => self.values.get(name).copied(),
        }
    }
}

/// An alert rule: a metric, a target, warning and critical thresholds with
/// optional clear thresholds, `for`, `keep_firing_for` and a minimum
/// volume.
///
/// Each threshold makes its own alert instance (severity is a label), so a
/// rule can be warning and critical at once; a firing critical alert
/// silences its warning's notifications (inhibition).
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::alerts::{Metric, Rule, Target};
///
/// let rule = Rule::above("checkout_p95", Metric::LatencyP95Ms)
///     .target(Target::Route("POST /checkout".into()))
///     .warning(800.0)
///     .warning_clear(600.0)
///     .critical(2000.0)
///     .window(Duration::from_secs(300))
///     .for_(Duration::from_secs(120))
///     .keep_firing_for(Duration::from_secs(300))
///     .min_volume(50);
/// assert_eq!(rule.name(), "checkout_p95");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) metric: Metric,
    pub(crate) target: Target,
    pub(crate) direction: Direction,
    pub(crate) warning: Option<f64>,
    pub(crate) critical: Option<f64>,
    pub(crate) warning_clear: Option<f64>,
    pub(crate) critical_clear: Option<f64>,
    pub(crate) window: Duration,
    pub(crate) for_: Duration,
    pub(crate) keep_firing_for: Duration,
    pub(crate) min_volume: u64,
    #[serde(default)]
    pub(crate) no_data: NoData,
    #[serde(default = "default_expire_after")]
    pub(crate) expire_after: Duration,
    pub(crate) labels: BTreeMap<String, String>,
}

/// How long an instance of a route missing from the inputs lives on.
const EXPIRE_AFTER: Duration = Duration::from_secs(3600);

fn default_expire_after() -> Duration {
    EXPIRE_AFTER
}

const MINUTE: Duration = Duration::from_secs(60);

impl Rule {
    /// A rule alerting when `metric` rises above its thresholds. Defaults:
    /// total across routes, a 5-minute window, no `for`, no
    /// `keep_firing_for`, no minimum volume, [`NoData::Keep`], instances of
    /// absent routes forgotten after an hour, no thresholds (set at least
    /// one).
    pub fn above(name: impl Into<String>, metric: Metric) -> Self {
        Self {
            name: name.into(),
            metric,
            target: Target::Total,
            direction: Direction::Above,
            warning: None,
            critical: None,
            warning_clear: None,
            critical_clear: None,
            window: 5 * MINUTE,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            min_volume: 0,
            no_data: NoData::Keep,
            expire_after: EXPIRE_AFTER,
            labels: BTreeMap::new(),
        }
    }

    /// A rule alerting when `metric` falls below its thresholds.
    pub fn below(name: impl Into<String>, metric: Metric) -> Self {
        Self {
            direction: Direction::Below,
            ..Self::above(name, metric)
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routes watched (request metrics only; system and plain values
    /// ignore it).
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// The warning threshold.
    pub fn warning(mut self, threshold: f64) -> Self {
        self.warning = Some(threshold);
        self
    }

    /// The critical threshold.
    pub fn critical(mut self, threshold: f64) -> Self {
        self.critical = Some(threshold);
        self
    }

    /// Where a firing warning stops holding (default: its threshold). Must
    /// be on the good side of the threshold: below it for
    /// [`above`](Self::above) rules.
    pub fn warning_clear(mut self, threshold: f64) -> Self {
        self.warning_clear = Some(threshold);
        self
    }

    /// Where a firing critical alert stops holding (default: its
    /// threshold).
    pub fn critical_clear(mut self, threshold: f64) -> Self {
        self.critical_clear = Some(threshold);
        self
    }

    /// The window request metrics are read over (default 5 minutes).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long the trigger threshold must be crossed at every evaluation
    /// before the alert fires (Prometheus `for`; default zero).
    pub fn for_(mut self, duration: Duration) -> Self {
        self.for_ = duration;
        self
    }

    /// How long a firing alert keeps firing after the value came back
    /// inside the clear threshold (Prometheus `keep_firing_for`; default
    /// zero).
    pub fn keep_firing_for(mut self, duration: Duration) -> Self {
        self.keep_firing_for = duration;
        self
    }

    /// The fewest requests (or cache lookups) in the window for the value
    /// to count; below it the rule sees no data and follows its
    /// [`no_data`](Self::no_data) policy. Gauges and plain values without
    /// a volume are not held back.
    pub fn min_volume(mut self, volume: u64) -> Self {
        self.min_volume = volume;
        self
    }

    /// What an evaluation without a value does (default [`NoData::Keep`]).
    pub fn no_data(mut self, policy: NoData) -> Self {
        self.no_data = policy;
        self
    }

    /// How long an instance of a [`Target::EachRoute`] rule whose route is
    /// missing from the inputs lives on (default one hour). Its route gone,
    /// it sees no data at every evaluation and follows the
    /// [`no_data`](Self::no_data) policy; after this long without its route
    /// it is forgotten, with a resolve notification (no value) if it had
    /// fired, so the alerts of routes that went away neither fire forever
    /// nor pile up. A route that is in the inputs but gets no requests is
    /// not missing: its alerts keep to the policy as long as it takes.
    pub fn expire_after(mut self, duration: Duration) -> Self {
        self.expire_after = duration;
        self
    }

    /// A label copied into every notification (team, runbook, ...).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A multi-window burn-rate rule for an availability `objective`
    /// (e.g. `0.999`): it triggers when the error rate over both `long` and
    /// `short` burns the error budget faster than `factor`.
    pub fn burn_rate(
        name: impl Into<String>,
        objective: f64,
        long: Duration,
        short: Duration,
        factor: f64,
        severity: Severity,
    ) -> Self {
        let rule = Self::above(
            name,
            Metric::BurnRate {
                objective,
                long,
                short,
            },
        )
        .window(long);
        match severity {
            Severity::Warning => rule.warning(factor),
            Severity::Critical => rule.critical(factor),
        }
    }

    /// The SRE workbook's paging pair for `objective`: 1 h / 5 min at
    /// 14.4× (critical) and 6 h / 30 min at 6× (warning), on the total.
    pub fn slo_burn_rates(objective: f64) -> Vec<Self> {
        vec![
            Self::burn_rate(
                "slo_burn_rate_fast",
                objective,
                60 * MINUTE,
                5 * MINUTE,
                14.4,
                Severity::Critical,
            ),
            Self::burn_rate(
                "slo_burn_rate_slow",
                objective,
                360 * MINUTE,
                30 * MINUTE,
                6.0,
                Severity::Warning,
            ),
        ]
    }

    /// The report's thresholds (section 6.2), each route on its own, with
    /// hysteresis, `for` and a minimum volume added; with no data (no
    /// requests, too few, no memory reading) every rule keeps its state
    /// ([`NoData::Keep`]):
    ///
    /// | rule | metric | warning / clear | critical / clear | window, for, keep firing | min volume |
    /// | --- | --- | --- | --- | --- | --- |
    /// | `response_time_p95` | p95, ms | > 2000 / 1600 | > 5000 / 4000 | 5 min, 2 min, 5 min | 20 requests |
    /// | `response_time_mean` | mean, ms | > 2000 / 1600 | > 5000 / 4000 | 5 min, 2 min, 5 min | 20 requests |
    /// | `error_rate` | server errors | > 5% / 4% | > 10% / 8% | 5 min, 2 min, 5 min | 50 requests |
    /// | `cache_hit_rate` | hits / lookups | < 70% / 75% | < 50% / 55% | 15 min, 5 min, 10 min | 100 lookups |
    /// | `memory` | host memory used | > 80% / 75% | > 95% / 90% | —, 2 min, 5 min | — |
    pub fn report_defaults() -> Vec<Self> {
        let latency = |name: &str, metric| {
            Self::above(name, metric)
                .target(Target::EachRoute)
                .warning(2000.0)
                .warning_clear(1600.0)
                .critical(5000.0)
                .critical_clear(4000.0)
                .for_(2 * MINUTE)
                .keep_firing_for(5 * MINUTE)
                .min_volume(20)
        };
        vec![
            latency("response_time_p95", Metric::LatencyP95Ms),
            latency("response_time_mean", Metric::LatencyMeanMs),
            Self::above("error_rate", Metric::ErrorRate)
                .target(Target::EachRoute)
                .warning(0.05)
                .warning_clear(0.04)
                .critical(0.10)
                .critical_clear(0.08)
                .for_(2 * MINUTE)
                .keep_firing_for(5 * MINUTE)
                .min_volume(50),
            Self::below("cache_hit_rate", Metric::CacheHitRate)
                .target(Target::EachRoute)
                .warning(0.70)
                .warning_clear(0.75)
                .critical(0.50)
                .critical_clear(0.55)
                .window(15 * MINUTE)
                .for_(5 * MINUTE)
                .keep_firing_for(10 * MINUTE)
                .min_volume(100),
            Self::above("memory", Metric::MemoryUsed)
                .warning(0.80)
                .warning_clear(0.75)
                .critical(0.95)
                .critical_clear(0.90)
                .for_(2 * MINUTE)
                .keep_firing_for(5 * MINUTE),
        ]
    }

    /// The thresholds in force, as `(severity, trigger, clear)`.
    pub(crate) fn thresholds(&self) -> impl Iterator<Item = (Severity, f64, f64)> + '_ {
        [
            (Severity::Warning, self.warning, self.warning_clear),
            (Severity::Critical, self.critical, self.critical_clear),
        ]
        .into_iter()
        .filter_map(|(sev, trigger, clear)| trigger.map(|t| (sev, t, clear.unwrap_or(t))))
    }

    /// Whether the metric reads analytics, so [`Target`] applies.
    pub(crate) fn per_route(&self) -> bool {
        self.metric.is_request_metric()
    }

    pub(crate) fn beyond(&self, value: f64, threshold: f64) -> bool {
        self.direction.beyond(value, threshold)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidRule {
                rule: self.name.clone(),
                reason: reason.to_owned(),
            })
        };
        if self.warning.is_none() && self.critical.is_none() {
            return invalid("no warning or critical threshold");
        }
        for (_, trigger, clear) in self.thresholds() {
            if !trigger.is_finite() || !clear.is_finite() {
                return invalid("thresholds must be finite");
            }
            if self.direction.beyond(clear, trigger) {
                return invalid("a clear threshold is on the alerting side of its trigger");
            }
        }
        if let (Some(w), Some(c)) = (self.warning, self.critical)
            && self.direction.beyond(w, c)
        {
            return invalid("the warning threshold is beyond the critical one");
        }
        Ok(())
    }
}
