//! Exponential backoff with jitter for creation retries. Pure.

use std::time::Duration;

/// `base · 2^attempt`, capped at `max`, then shortened by up to `jitter`
/// (a share between 0 and 1) so that many pools do not retry in step.
/// `random` is a number in `0.0..1.0`.
pub(crate) fn delay(
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter: f64,
    random: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let capped = exp.min(max);
    capped.mul_f64(1.0 - jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        let d = |n| delay(base, max, n, 0.0, 0.0);
        assert_eq!(d(0), Duration::from_millis(200));
        assert_eq!(d(1), Duration::from_millis(400));
        assert_eq!(d(4), Duration::from_millis(3200));
        assert_eq!(d(5), max);
        assert_eq!(d(60), max);
        // Jitter only shortens.
        assert_eq!(delay(base, max, 0, 0.5, 1.0), Duration::from_millis(100));
        assert_eq!(delay(base, max, 0, 0.5, 0.0), base);
    }
}
