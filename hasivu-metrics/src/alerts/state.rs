//! The per-alert state machine: pending → firing → resolved, with `for`,
//! `keep_firing_for` and hysteresis. Pure: time and the observed condition
//! come in as arguments, transitions come out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NoData;

/// Where an alert instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The condition is not met.
    Inactive,
    /// The condition is met but has not held for the rule's `for` yet; no
    /// notification has been sent.
    Pending,
    /// The alert fired and its notification was sent.
    Firing,
}

/// What one evaluation saw, for one alert instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observation {
    /// No usable value (missing, or below the minimum volume).
    NoData,
    /// A value, with whether it crosses the trigger threshold and whether
    /// it is still beyond the clear threshold.
    Value {
        /// Beyond the trigger threshold.
        trigger: bool,
        /// Beyond the clear threshold (implied by `trigger`).
        hold: bool,
    },
}

/// A transition that calls for a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Pending long enough (or `for` is zero): the alert fires.
    Fired,
    /// The condition stayed clear for `keep_firing_for`: the alert resolves.
    Resolved,
}

/// The timing of a rule, and what it does without data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) for_: Duration,
    pub(crate) keep_firing_for: Duration,
    pub(crate) no_data: NoData,
}

/// One alert instance's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tracker {
    phase: Phase,
    /// Pending: when the condition started. Firing: when it fired.
    since: Duration,
    /// Firing: since when the condition has been clear.
    clear_since: Option<Duration>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            phase: Phase::Inactive,
            since: Duration::ZERO,
            clear_since: None,
        }
    }
}

impl Tracker {
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Pending: when the condition started; firing: when the alert fired.
    pub(crate) fn since(&self) -> Duration {
        self.since
    }

    /// Advances the state to `now` given what was observed.
    ///
    /// Pending needs the trigger threshold crossed at every evaluation;
    /// firing holds while the value is beyond the clear threshold and for
    /// `keep_firing_for` after it stopped being so. Missing data changes
    /// nothing ([`NoData::Keep`]), counts as clear ([`NoData::Clear`]) or
    /// as beyond the trigger threshold ([`NoData::Alert`]).
    pub(crate) fn step(
        &mut self,
        now: Duration,
        observation: Observation,
        timing: Timing,
    ) -> Option<Transition> {
        let (trigger, hold) = match observation {
            Observation::NoData => match timing.no_data {
                NoData::Keep => return None,
                NoData::Clear => (false, false),
                NoData::Alert => (true, true),
            },
            Observation::Value { trigger, hold } => (trigger, hold || trigger),
        };
        match self.phase {
            Phase::Inactive if trigger => {
                self.phase = Phase::Pending;
                self.since = now;
                self.fire_if_due(now, timing)
            }
            Phase::Inactive => None,
            Phase::Pending if trigger => self.fire_if_due(now, timing),
            Phase::Pending => {
                *self = Self::default();
                None
            }
            Phase::Firing if hold => {
                self.clear_since = None;
                None
            }
            Phase::Firing => {
                let clear_since = *self.clear_since.get_or_insert(now);
                if now.saturating_sub(clear_since) >= timing.keep_firing_for {
                    *self = Self::default();
                    Some(Transition::Resolved)
                } else {
                    None
                }
            }
        }
    }

    fn fire_if_due(&mut self, now: Duration, timing: Timing) -> Option<Transition> {
        if now.saturating_sub(self.since) >= timing.for_ {
            self.phase = Phase::Firing;
            self.since = now;
            self.clear_since = None;
            Some(Transition::Fired)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn value(trigger: bool, hold: bool) -> Observation {
        Observation::Value { trigger, hold }
    }

    const TIMING: Timing = Timing {
        for_: secs(60),
        keep_firing_for: secs(120),
        no_data: NoData::Clear,
    };

    #[test]
    fn fires_only_after_for() {
        let mut t = Tracker::default();
        assert_eq!(t.step(secs(0), value(true, true), TIMING), None);
        assert_eq!(t.phase(), Phase::Pending);
        assert_eq!(t.step(secs(30), value(true, true), TIMING), None);
        assert_eq!(
            t.step(secs(60), value(true, true), TIMING),
            Some(Transition::Fired)
        );
        assert_eq!(t.phase(), Phase::Firing);
    }

    #[test]
    fn pending_is_dropped_when_the_condition_breaks() {
        let mut t = Tracker::default();
        t.step(secs(0), value(true, true), TIMING);
        // Above the clear threshold is not enough to stay pending.
        assert_eq!(t.step(secs(30), value(false, true), TIMING), None);
        assert_eq!(t.phase(), Phase::Inactive);
        t.step(secs(40), value(true, true), TIMING);
        assert_eq!(t.step(secs(90), value(true, true), TIMING), None);
        assert_eq!(
            t.step(secs(100), value(true, true), TIMING),
            Some(Transition::Fired)
        );
    }

    #[test]
    fn resolves_after_keep_firing_for_and_hysteresis_holds() {
        let mut t = Tracker::default();
        let zero = Timing {
            for_: Duration::ZERO,
            ..TIMING
        };
        assert_eq!(
            t.step(secs(0), value(true, true), zero),
            Some(Transition::Fired)
        );
        // Between clear and trigger thresholds: still firing, clock reset.
        assert_eq!(t.step(secs(10), value(false, true), zero), None);
        assert_eq!(t.step(secs(20), value(false, false), zero), None);
        assert_eq!(t.step(secs(100), value(false, true), zero), None);
        assert_eq!(t.step(secs(200), value(false, false), zero), None);
        assert_eq!(t.step(secs(319), Observation::NoData, zero), None);
        assert_eq!(
            t.step(secs(320), value(false, false), zero),
            Some(Transition::Resolved)
        );
        assert_eq!(t.phase(), Phase::Inactive);
    }

    #[test]
    fn no_data_keeps_clears_or_alerts_by_policy() {
        let with = |no_data| Timing { no_data, ..TIMING };
        // Keep: a firing alert holds through any gap, and resolves only on
        // values inside the clear threshold, `keep_firing_for` after the
        // first of them.
        let mut t = Tracker::default();
        t.step(secs(0), value(true, true), with(NoData::Keep));
        t.step(secs(60), value(true, true), with(NoData::Keep));
        assert_eq!(t.phase(), Phase::Firing);
        for s in (70..3_600).step_by(10) {
            assert_eq!(
                t.step(secs(s), Observation::NoData, with(NoData::Keep)),
                None
            );
        }
        assert_eq!(t.phase(), Phase::Firing);
        assert_eq!(
            t.step(secs(3_600), value(false, false), with(NoData::Keep)),
            None
        );
        assert_eq!(
            t.step(secs(3_720), value(false, false), with(NoData::Keep)),
            Some(Transition::Resolved)
        );
        // Keep: pending stays pending through a gap, and `for` counts on.
        let mut t = Tracker::default();
        t.step(secs(0), value(true, true), with(NoData::Keep));
        t.step(secs(30), Observation::NoData, with(NoData::Keep));
        assert_eq!(t.phase(), Phase::Pending);
        assert_eq!(
            t.step(secs(60), value(true, true), with(NoData::Keep)),
            Some(Transition::Fired)
        );
        // Clear: a gap drops pending and resolves firing.
        let mut t = Tracker::default();
        t.step(secs(0), value(true, true), with(NoData::Clear));
        t.step(secs(10), Observation::NoData, with(NoData::Clear));
        assert_eq!(t.phase(), Phase::Inactive);
        // Alert: no data fires after `for` and holds.
        let mut t = Tracker::default();
        assert_eq!(
            t.step(secs(0), Observation::NoData, with(NoData::Alert)),
            None
        );
        assert_eq!(t.phase(), Phase::Pending);
        assert_eq!(
            t.step(secs(60), Observation::NoData, with(NoData::Alert)),
            Some(Transition::Fired)
        );
        assert_eq!(
            t.step(secs(70), value(false, false), with(NoData::Alert)),
            None
        );
        assert_eq!(
            t.step(secs(190), value(false, false), with(NoData::Alert)),
            Some(Transition::Resolved)
        );
    }

    proptest! {
        /// Whatever the observations, fired and resolved alternate, starting
        /// with fired, and a fire is never sooner than `for` after the first
        /// trigger of its streak.
        #[test]
        fn transitions_alternate(
            obs in proptest::collection::vec((0u8..3, 0u64..90), 1..200),
            policy in 0u8..3,
        ) {
            let no_data = [NoData::Keep, NoData::Clear, NoData::Alert][usize::from(policy)];
            let timing = Timing { no_data, ..TIMING };
            let mut t = Tracker::default();
            let mut now = Duration::ZERO;
            let mut last = None;
            let mut streak_start = None;
            for (kind, gap) in obs {
                now += secs(gap);
                let o = match kind {
                    0 => Observation::NoData,
                    1 => value(false, gap % 2 == 0),
                    _ => value(true, true),
                };
                let triggers = matches!(o, Observation::Value { trigger: true, .. })
                    || (o == Observation::NoData && no_data == NoData::Alert);
                if triggers {
                    streak_start.get_or_insert(now);
                }
                if let Some(tr) = t.step(now, o, timing) {
                    prop_assert_ne!(Some(tr), last);
                    if last.is_none() {
                        prop_assert_eq!(tr, Transition::Fired);
                    }
                    if tr == Transition::Fired {
                        prop_assert!(now - streak_start.unwrap() >= timing.for_);
                    }
                    last = Some(tr);
                }
                if t.phase() != Phase::Pending {
                    streak_start = None;
                }
            }
            if last == Some(Transition::Fired) {
                prop_assert_eq!(t.phase(), Phase::Firing);
            }
        }
    }
}
