//! The generic cell rate algorithm: one number per key, the theoretical
//! arrival time (TAT). Pure integer arithmetic on nanoseconds.
//!
//! With emission interval `T = window / limit` and burst `B`, a request of
//! cost `c` at time `now` is admitted when `max(TAT, now) + c·T - B·T <= now`,
//! and then `TAT = max(TAT, now) + c·T`. A rejected request leaves the TAT
//! unchanged: it costs nothing, so a client retrying while limited gets in
//! as soon as its quota is back.

use std::time::Duration;

use crate::{Quota, Verdict};

/// The outcome of one GCRA step: the verdict and the TAT to store (`None`:
/// leave the stored state as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) verdict: Verdict,
    pub(crate) new_tat: Option<u64>,
}

/// One check of `cost` at `now` against a key whose TAT is `tat` (0 for a
/// key never seen, or one that has rested long enough to be forgotten).
pub(crate) fn check(quota: &Quota, tat: u64, now: u64, cost: u32) -> Step {
    let burst = quota.burst_size();
    let limit = quota.limit();
    let emission = quota.emission_nanos();
    if limit == 0 || cost > burst {
        // Can never pass: no retry hint.
        return Step {
            verdict: Verdict {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: None,
            },
            new_tat: None,
        };
    }
    let tolerance = emission.saturating_mul(u64::from(burst));
    let base = tat.max(now);
    let new_tat = base.saturating_add(emission.saturating_mul(u64::from(cost)));
    let earliest = new_tat.saturating_sub(tolerance);
    if earliest > now {
        let used = base - now;
        return Step {
            verdict: Verdict {
                allowed: false,
                limit,
                remaining: remaining(tolerance, used, emission),
                reset_after: nanos(used),
                retry_after: Some(nanos(earliest - now)),
            },
            new_tat: None,
        };
    }
    let used = new_tat - now;
    Step {
        verdict: Verdict {
            allowed: true,
            limit,
            remaining: remaining(tolerance, used, emission),
            reset_after: nanos(used),
            retry_after: None,
        },
        new_tat: Some(new_tat),
    }
}

/// Whole requests left in the burst when `used` nanoseconds of it are taken.
fn remaining(tolerance: u64, used: u64, emission: u64) -> u32 {
    u32::try_from(tolerance.saturating_sub(used) / emission).unwrap_or(u32::MAX)
}

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// Runs requests at the given times (seconds) and returns which passed.
    fn run(quota: &Quota, times: &[f64]) -> Vec<bool> {
        let mut tat = 0;
        times
            .iter()
            .map(|t| {
                let now = (t * SEC as f64) as u64 + SEC;
                let step = check(quota, tat, now, 1);
                if let Some(new) = step.new_tat {
                    tat = new;
                }
                step.verdict.allowed
            })
            .collect()
    }

    #[test]
    fn a_rested_key_spends_its_burst_then_one_per_interval() {
        let q = Quota::per_second(2).burst(3);
        // Three at once, the fourth waits 0.5 s.
        assert_eq!(
            run(&q, &[0.0, 0.0, 0.0, 0.0, 0.49, 0.5, 0.5, 1.0]),
            [true, true, true, false, false, true, false, true]
        );
    }

    #[test]
    fn rejected_requests_are_not_counted() {
        let q = Quota::per_second(1).burst(1);
        // A client hammering every 10 ms gets in once per second, not never.
        let times: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.01).collect();
        let passed = run(&q, &times).iter().filter(|ok| **ok).count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn verdicts_carry_remaining_reset_and_retry() {
        let q = Quota::per_second(10);
        let now = 5 * SEC;
        let first = check(&q, 0, now, 1);
        assert!(first.verdict.allowed);
        assert_eq!(first.verdict.remaining, 9);
        assert_eq!(first.verdict.reset_after, Duration::from_millis(100));
        let full = check(&q, now + SEC, now, 1);
        assert!(!full.verdict.allowed);
        assert_eq!(full.new_tat, None);
        assert_eq!(full.verdict.remaining, 0);
        assert_eq!(full.verdict.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(full.verdict.reset_after, Duration::from_secs(1));
    }

    #[test]
    fn costs_and_impossible_requests() {
        let q = Quota::per_second(10);
        let step = check(&q, 0, SEC, 4);
        assert!(step.verdict.allowed);
        assert_eq!(step.verdict.remaining, 6);
        let too_big = check(&q, 0, SEC, 11);
        assert!(!too_big.verdict.allowed);
        assert_eq!(too_big.verdict.retry_after, None);
        let nothing = check(&Quota::per_second(0), 0, SEC, 1);
        assert!(!nothing.verdict.allowed);
    }

    proptest::proptest! {
        /// Over any run of requests, the admitted count never exceeds
        /// burst + elapsed / T.
        #[test]
        fn never_more_than_burst_plus_rate(
            limit in 1u32..50,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..200_000_000, 1..400),
        ) {
            let q = Quota::per_second(limit).burst(burst);
            let mut tat = 0;
            let mut now = SEC;
            let start = now;
            let mut admitted = 0u64;
            for gap in gaps {
                now += gap;
                let step = check(&q, tat, now, 1);
                if let Some(new) = step.new_tat {
                    tat = new;
                    admitted += 1;
                }
            }
            let bound = u64::from(burst) + (now - start) / q.emission_nanos();
            proptest::prop_assert!(admitted <= bound, "{admitted} > {bound}");
        }
    }
}
