//! When to reduce limits and when to restore them: two thresholds and a
//! minimum time in the reduced state, so limits do not flap. Pure.

use std::time::Duration;

/// Enter the reduced state above `enter`, leave it below `leave` once it
/// has lasted `min_dwell`; while reduced, limits are multiplied by
/// `factor`. Defaults: enter 0.8 (the report's threshold), leave 0.7,
/// 10 s minimum, factor 0.5 (the report's halving).
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::Hysteresis;
///
/// let h = Hysteresis::default();
/// assert!(h.next(false, Duration::ZERO, 0.85));   // enters at once
/// assert!(h.next(true, Duration::from_secs(3), 0.6)); // too early to leave
/// assert!(!h.next(true, Duration::from_secs(11), 0.6));
/// assert!(h.next(true, Duration::from_secs(60), 0.75)); // between the thresholds: stays
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hysteresis {
    /// Load above which limits are reduced.
    pub enter: f64,
    /// Load below which they are restored.
    pub leave: f64,
    /// The least time limits stay reduced.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub min_dwell: Duration,
    /// The multiplier while reduced.
    pub factor: f64,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            enter: 0.8,
            leave: 0.7,
            min_dwell: Duration::from_secs(10),
            factor: 0.5,
        }
    }
}

impl Hysteresis {
    /// The next state: `reduced` is the current one, `dwell` how long it has
    /// lasted, `load` the latest load (0.0–1.0).
    pub fn next(&self, reduced: bool, dwell: Duration, load: f64) -> bool {
        if reduced {
            !(load < self.leave && dwell >= self.min_dwell)
        } else {
            load > self.enter
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_load_around_the_threshold_does_not_flap() {
        let h = Hysteresis::default();
        let mut reduced = false;
        let mut since = 0u64;
        let mut changes = 0;
        // Load oscillating 0.75..0.85 every second for ten minutes.
        for second in 0..600u64 {
            let load = if second % 2 == 0 { 0.85 } else { 0.75 };
            let next = h.next(reduced, Duration::from_secs(second - since), load);
            if next != reduced {
                changes += 1;
                reduced = next;
                since = second;
            }
        }
        assert_eq!(changes, 1, "entered once and stayed");
        assert!(reduced);
    }

    #[test]
    fn leaves_once_the_load_has_dropped_and_the_dwell_passed() {
        let h = Hysteresis::default();
        assert!(
            !h.next(false, Duration::ZERO, 0.8),
            "the threshold itself is not above it"
        );
        assert!(h.next(true, Duration::from_secs(9), 0.1));
        assert!(!h.next(true, Duration::from_secs(10), 0.69));
    }
}
