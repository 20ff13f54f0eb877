//! Alerts without flapping: rules with warning and critical thresholds,
//! `for`, `keep_firing_for`, clear thresholds and a minimum volume;
//! deduplicated by fingerprint; notified on fire and on resolve through
//! [`AlertSink`]s.
//!
//! Every rule and threshold (and, for [`Target::EachRoute`], every route)
//! is one alert instance with a stable fingerprint. An instance moves
//! inactive → pending (trigger threshold crossed) → firing (crossed at
//! every evaluation for `for`) and back to inactive, with a *resolved*
//! notification, once the value has stayed inside the clear threshold for
//! `keep_firing_for`. A value oscillating around the trigger threshold
//! therefore neither fires nor resolves repeatedly, and each fire is
//! followed by exactly one resolve.
//!
//! # No data
//!
//! An evaluation may have no value for an instance: no requests in the
//! window, fewer than the rule's minimum volume (at 20 requests one failure
//! is a 5% error rate), a missing reading, or a route no longer in the
//! inputs. The rule's [`NoData`] policy decides: [`Keep`](NoData::Keep)
//! (the default) leaves the instance as it is, so an error-rate alert does
//! not resolve because an outage stopped the route's traffic, and resolves
//! once real requests are back below its clear threshold;
//! [`Clear`](NoData::Clear) counts no data as clear; [`Alert`](NoData::Alert)
//! fires on it, for values that must always be there.
//!
//! Every instance steps at every evaluation, those whose route has left
//! the inputs included (they see no data). An instance of a
//! [`Target::EachRoute`] rule whose route has been missing for the rule's
//! [`expire_after`](Rule::expire_after) (an hour by default) is forgotten,
//! with a resolve notification if it had fired: the instances stay
//! bounded by the routes in the inputs, and none fires forever.
//!
//! A firing critical alert inhibits the warning of the same rule and
//! route: the warning's notifications wait until the critical one has
//! resolved.
//!
//! ```
//! use std::time::Duration;
//! use hasivu_metrics::{ManualClock, alerts::{AlertManager, Inputs, Metric, Rule, Status}};
//!
//! let time = ManualClock::new();
//! let manager = AlertManager::builder()
//!     .clock(time.clock())
//!     .rule(
//!         Rule::above("queue", Metric::Value("queue_depth".into()))
//!             .warning(100.0)
//!             .warning_clear(80.0)
//!             .for_(Duration::from_secs(60)),
//!     )
//!     .build()
//!     .unwrap();
//!
//! assert!(manager.evaluate(&Inputs::new().value("queue_depth", 150.0)).is_empty()); // pending
//! time.advance(Duration::from_secs(60));
//! let fired = manager.evaluate(&Inputs::new().value("queue_depth", 150.0));
//! assert_eq!(fired[0].status, Status::Firing);
//! time.advance(Duration::from_secs(30));
//! // Below the trigger but above the clear threshold: still firing.
//! assert!(manager.evaluate(&Inputs::new().value("queue_depth", 90.0)).is_empty());
//! let resolved = manager.evaluate(&Inputs::new().value("queue_depth", 10.0));
//! assert_eq!(resolved[0].status, Status::Resolved);
//! ```
//!
//! The report's thresholds ([`Rule::report_defaults`]) with the SRE
//! workbook's burn-rate pair for a 99.9% objective, evaluated every 30
//! seconds on a background task:
//!
//! ```
//! use std::time::Duration;
//! use hasivu_metrics::{PerformanceAnalytics, alerts::{AlertManager, LogSink, Rule}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let analytics = PerformanceAnalytics::new();
//! let manager = AlertManager::builder()
//!     .rules(Rule::report_defaults())
//!     .rules(Rule::slo_burn_rates(0.999))
//!     .sink(LogSink)
//!     .build()
//!     .unwrap();
//! let task = manager.spawn(Duration::from_secs(30), analytics, None);
//! # task.abort();
//! # }
//! ```

mod rule;
mod sink;
mod state;
#[cfg(feature = "webhook")]
mod webhook;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub use rule::{Direction, Inputs, Metric, NoData, Reading, Rule, Severity, Target};
pub use sink::{AlertSink, ChannelSink, LogSink, SinkFuture};
pub use state::Phase;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub use webhook::WebhookSink;

#[cfg(test)]
use crate::SystemStatus;
use crate::{Clock, MonitorHandle, PerformanceAnalytics, error::Error};
use state::{Observation, Timing, Tracker, Transition};

/// Whether a notification announces a fire or a resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The alert started firing.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

impl Status {
    /// `"firing"` or `"resolved"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One fire or resolve, as sinks receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Fired or resolved.
    pub status: Status,
    /// The alert instance's fingerprint (rule, route, severity): the same
    /// for its fire and its resolve.
    pub fingerprint: String,
    /// The rule's name.
    pub rule: String,
    /// The threshold that fired.
    pub severity: Severity,
    /// The route, for per-route rules.
    pub route: Option<String>,
    /// The value at this evaluation, `None` when there was no data (a
    /// [`NoData::Alert`] fire, a [`NoData::Clear`] resolve, or the resolve
    /// of an instance whose route has left the inputs).
    pub value: Option<f64>,
    /// The trigger threshold.
    pub threshold: f64,
    /// When the alert fired, milliseconds since the Unix epoch.
    pub starts_at_ms: u64,
    /// When it resolved (resolves only).
    pub ends_at_ms: Option<u64>,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
}

/// A pending or firing alert instance, as [`AlertManager::active`] lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The instance's fingerprint.
    pub fingerprint: String,
    /// The rule's name.
    pub rule: String,
    /// The threshold's severity.
    pub severity: Severity,
    /// The route, for per-route rules.
    pub route: Option<String>,
    /// Pending or firing.
    pub phase: Phase,
    /// The latest value, `None` when the latest evaluation had no data.
    pub value: Option<f64>,
    /// The trigger threshold.
    pub threshold: f64,
    /// Since when it has been pending or firing, milliseconds since the
    /// Unix epoch.
    pub since_ms: u64,
    /// Whether a firing critical alert of the same rule and route holds its
    /// notifications back.
    pub inhibited: bool,
}

#[derive(Debug)]
struct Instance {
    tracker: Tracker,
    value: Option<f64>,
    notified: bool,
    /// Wall time of the fire notification, repeated in the resolve.
    fired_at_ms: u64,
    /// When its route was last in the inputs (on the manager's clock).
    seen: Duration,
}

/// Builds an [`AlertManager`].
#[derive(Debug, Default)]
#[must_use]
pub struct AlertManagerBuilder {
    rules: Vec<Rule>,
    sinks: Vec<Arc<dyn AlertSink>>,
    clock: Option<Clock>,
}

impl AlertManagerBuilder {
    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// Adds a sink; every batch goes to every sink.
    pub fn sink(mut self, sink: impl AlertSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// The clock `for` and `keep_firing_for` are measured with (default
    /// [`Clock::new`]); use the analytics clock or a [`ManualClock`](crate::ManualClock)'s.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the rules and builds the manager.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRule`] for a rule without thresholds, with a clear
    /// threshold on the alerting side of its trigger, a warning beyond its
    /// critical threshold, or a name used twice.
    pub fn build(self) -> Result<AlertManager, Error> {
        let mut names = std::collections::HashSet::new();
        for rule in &self.rules {
            rule.validate()?;
            if !names.insert(rule.name.as_str()) {
                return Err(Error::InvalidRule {
                    rule: rule.name.clone(),
                    reason: "the name is used twice".to_owned(),
                });
            }
        }
        Ok(AlertManager {
            inner: Arc::new(Inner {
                rules: self.rules,
                sinks: self.sinks,
                clock: self.clock.unwrap_or_default(),
                instances: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Evaluates rules and tracks alert instances; a cheap handle to shared
/// state. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct AlertManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rules: Vec<Rule>,
    sinks: Vec<Arc<dyn AlertSink>>,
    clock: Clock,
    instances: Mutex<HashMap<Key, Instance>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    rule: usize,
    route: Option<String>,
    severity: Severity,
}

impl AlertManager {
    /// A builder with no rules and no sinks.
    pub fn builder() -> AlertManagerBuilder {
        AlertManagerBuilder::default()
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// Evaluates every rule against `inputs` at the clock's current time
    /// and returns the notifications due (fires and resolves), without
    /// sending them; see [`notify`](Self::notify) and [`run`](Self::run).
    pub fn evaluate(&self, inputs: &Inputs<'_>) -> Vec<Notification> {
        let now = self.inner.clock.elapsed();
        let wall = unix_ms();
        let mut out = Vec::new();
        let mut instances = self
            .inner
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let per_route = self.inner.rules.iter().any(Rule::per_route);
        let routes = if per_route {
            inputs.routes()
        } else {
            Vec::new()
        };
        let present: HashSet<&str> = routes.iter().map(String::as_str).collect();
        for (index, rule) in self.inner.rules.iter().enumerate() {
            let mut targets: Vec<Option<String>> = match (&rule.target, rule.per_route()) {
                (_, false) | (Target::Total, true) => vec![None],
                (Target::Route(route), true) => vec![Some(route.clone())],
                (Target::EachRoute, true) => routes.iter().cloned().map(Some).collect(),
            };
            // Instances whose route has left the inputs step too: they see
            // no data, and expire.
            if rule.per_route() && rule.target == Target::EachRoute {
                let absent: BTreeSet<&String> = instances
                    .keys()
                    .filter(|key| key.rule == index)
                    .filter_map(|key| key.route.as_ref())
                    .filter(|route| !present.contains(route.as_str()))
                    .collect();
                targets.extend(absent.into_iter().cloned().map(Some));
            }
            let timing = Timing {
                for_: rule.for_,
                keep_firing_for: rule.keep_firing_for,
                no_data: rule.no_data,
            };
            for route in targets {
                let absent = route
                    .as_deref()
                    .is_some_and(|route| !present.contains(route));
                let reading = if absent {
                    None
                } else {
                    inputs
                        .read(&rule.metric, route.as_deref(), rule.window)
                        .filter(|r| r.value.is_finite())
                        .filter(|r| r.volume.is_none_or(|v| v >= rule.min_volume))
                };
                let mut crit_firing = false;
                // Critical first, so the warning knows whether it is inhibited.
                let mut thresholds: Vec<_> = rule.thresholds().collect();
                thresholds.sort_by_key(|(sev, ..)| std::cmp::Reverse(*sev));
                for (severity, trigger, clear) in thresholds {
                    let key = Key {
                        rule: index,
                        route: route.clone(),
                        severity,
                    };
                    let observation = match reading {
                        None => Observation::NoData,
                        Some(r) => Observation::Value {
                            trigger: rule.beyond(r.value, trigger),
                            hold: rule.beyond(r.value, clear),
                        },
                    };
                    // Only what would make an inactive alert pending starts
                    // an instance.
                    let starts = match observation {
                        Observation::NoData => rule.no_data == NoData::Alert,
                        Observation::Value { trigger, .. } => trigger,
                    };
                    if !starts && !instances.contains_key(&key) {
                        continue;
                    }
                    let instance = instances.entry(key.clone()).or_insert(Instance {
                        tracker: Tracker::default(),
                        value: None,
                        notified: false,
                        fired_at_ms: 0,
                        seen: now,
                    });
                    instance.value = reading.map(|r| r.value);
                    if !absent {
                        instance.seen = now;
                    } else if rule.target == Target::EachRoute
                        && now.saturating_sub(instance.seen) >= rule.expire_after
                    {
                        // Gone for long: forgotten, resolved if it had fired.
                        if instance.notified {
                            out.push(Notification {
                                status: Status::Resolved,
                                fingerprint: fingerprint(rule, route.as_deref(), severity),
                                rule: rule.name.clone(),
                                severity,
                                route: route.clone(),
                                value: None,
                                threshold: trigger,
                                starts_at_ms: instance.fired_at_ms,
                                ends_at_ms: Some(wall),
                                labels: rule.labels.clone(),
                            });
                        }
                        instances.remove(&key);
                        continue;
                    }
                    let transition = instance.tracker.step(now, observation, timing);
                    let inhibited = severity == Severity::Warning && crit_firing;
                    let notify = match transition {
                        Some(Transition::Resolved) => instance.notified,
                        Some(Transition::Fired) => !inhibited,
                        // A warning held back by a critical that has resolved.
                        None => {
                            instance.tracker.phase() == Phase::Firing
                                && !instance.notified
                                && !inhibited
                        }
                    };
                    let phase = instance.tracker.phase();
                    if notify {
                        let resolved = transition == Some(Transition::Resolved);
                        instance.notified = !resolved;
                        if !resolved {
                            let since = instance.tracker.since();
                            instance.fired_at_ms = wall.saturating_sub(millis(now - since));
                        }
                        out.push(Notification {
                            status: if resolved {
                                Status::Resolved
                            } else {
                                Status::Firing
                            },
                            fingerprint: fingerprint(rule, route.as_deref(), severity),
                            rule: rule.name.clone(),
                            severity,
                            route: route.clone(),
                            value: instance.value,
                            threshold: trigger,
                            starts_at_ms: instance.fired_at_ms,
                            ends_at_ms: resolved.then_some(wall),
                            labels: rule.labels.clone(),
                        });
                    }
                    if severity == Severity::Critical && phase == Phase::Firing {
                        crit_firing = true;
                    }
                    if phase == Phase::Inactive {
                        instances.remove(&key);
                    }
                }
            }
        }
        out
    }

    /// The pending and firing alerts, critical first.
    pub fn active(&self) -> Vec<Alert> {
        let now = self.inner.clock.elapsed();
        let wall = unix_ms();
        let instances = self
            .inner
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let critical_firing = |key: &Key| {
            key.severity == Severity::Warning
                && instances
                    .get(&Key {
                        severity: Severity::Critical,
                        ..key.clone()
                    })
                    .is_some_and(|i| i.tracker.phase() == Phase::Firing)
        };
        let mut alerts: Vec<Alert> = instances
            .iter()
            .filter(|(_, i)| i.tracker.phase() != Phase::Inactive)
            .map(|(key, i)| {
                let rule = &self.inner.rules[key.rule];
                Alert {
                    fingerprint: fingerprint(rule, key.route.as_deref(), key.severity),
                    rule: rule.name.clone(),
                    severity: key.severity,
                    route: key.route.clone(),
                    phase: i.tracker.phase(),
                    value: i.value,
                    threshold: rule
                        .thresholds()
                        .find(|(s, ..)| *s == key.severity)
                        .map_or(f64::NAN, |(_, t, _)| t),
                    since_ms: wall.saturating_sub(millis(now.saturating_sub(i.tracker.since()))),
                    inhibited: critical_firing(key),
                }
            })
            .collect();
        alerts.sort_by(|a, b| {
            (b.phase == Phase::Firing, b.severity, &a.rule, &a.route).cmp(&(
                a.phase == Phase::Firing,
                a.severity,
                &b.rule,
                &b.route,
            ))
        });
        alerts
    }

    /// Sends `batch` to every sink (nothing when it is empty). A failing
    /// sink does not stop the others.
    ///
    /// # Errors
    ///
    /// The first sink error, after all sinks were tried; every failure is
    /// also logged.
    pub async fn notify(&self, batch: &[Notification]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut first = None;
        for sink in &self.inner.sinks {
            if let Err(error) = sink.send(batch).await {
                tracing::warn!(sink = sink.name(), %error, "alert notification failed");
                first.get_or_insert(error);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// [`evaluate`](Self::evaluate), then [`notify`](Self::notify); returns
    /// what was due. Sink failures are logged.
    pub async fn run(&self, inputs: &Inputs<'_>) -> Vec<Notification> {
        let batch = self.evaluate(inputs);
        let _ = self.notify(&batch).await;
        batch
    }

    /// Evaluates every `interval` on a tokio task, reading `analytics` and,
    /// when given, the monitor's latest status; notifications go to the
    /// sinks. Abort the handle to stop.
    pub fn spawn(
        &self,
        interval: Duration,
        analytics: PerformanceAnalytics,
        system: Option<MonitorHandle>,
    ) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let status = system.as_ref().map(MonitorHandle::status);
                let batch = {
                    let mut inputs = Inputs::new().analytics(&analytics);
                    if let Some(status) = &status {
                        inputs = inputs.system(status);
                    }
                    manager.evaluate(&inputs)
                };
                let _ = manager.notify(&batch).await;
            }
        })
    }
}

/// FNV-1a over the rule name, route and severity: stable across processes
/// and versions, so receivers can deduplicate too.
fn fingerprint(rule: &Rule, route: Option<&str>, severity: Severity) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [rule.name.as_str(), route.unwrap_or(""), severity.as_str()];
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn unix_ms() -> u64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
