//! Rank statistics for the regression detector: the Mann–Whitney U test
//! and medians. Pure functions, no I/O.

/// The one-sided Mann–Whitney U test that values of `after` tend to be
/// larger than values of `before`: the p-value under the null hypothesis
/// that both come from the same distribution.
///
/// Uses the normal approximation with the tie correction and a continuity
/// correction, which is accurate for the sample sizes the detector
/// requires (ten or more on each side). Returns 1.0 when either side is
/// empty or every value is tied.
pub(crate) fn mann_whitney_greater(before: &[f64], after: &[f64]) -> f64 {
    let (nx, ny) = (before.len(), after.len());
    if nx == 0 || ny == 0 {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = before
        .iter()
        .map(|&v| (v, false))
        .chain(after.iter().map(|&v| (v, true)))
        .collect();
    all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum_after = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let average = (i + 1 + j) as f64 / 2.0;
        let tied = (j - i) as f64;
        ties += tied * tied * tied - tied;
        rank_sum_after += average * all[i..j].iter().filter(|(_, a)| *a).count() as f64;
        i = j;
    }
    let (nx, ny, n) = (nx as f64, ny as f64, n as f64);
    let u = rank_sum_after - ny * (ny + 1.0) / 2.0;
    let mean = nx * ny / 2.0;
    let variance = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return 1.0;
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    upper_tail(z)
}

/// Two-sided version: the smaller one-sided p-value, doubled.
pub(crate) fn mann_whitney_two_sided(x: &[f64], y: &[f64]) -> f64 {
    let p = mann_whitney_greater(x, y).min(mann_whitney_greater(y, x));
    (2.0 * p).min(1.0)
}

/// P(Z > z) for a standard normal Z.
pub(crate) fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, relative error below 1.2e-7
/// (Numerical Recipes' Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The median (mean of the middle two for even lengths); `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if values.len() % 2 == 1 {
        Some(m)
    } else {
        let below = lower.iter().copied().max_by(f64::total_cmp)?;
        Some((below + m) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normal_tail_matches_tables() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((upper_tail(2.326_348) - 0.01).abs() < 1e-6);
        assert!((upper_tail(-1.644_854) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn separated_samples_are_significant() {
        let before: Vec<f64> = (0..20).map(f64::from).collect();
        let after: Vec<f64> = (100..120).map(f64::from).collect();
        assert!(mann_whitney_greater(&before, &after) < 1e-6);
        assert!(mann_whitney_greater(&after, &before) > 0.999);
        // Exact tables: U = 0 for n = m = 20 has p ≈ 7e-12; the
        // approximation only needs to be far below 0.01.
    }

    #[test]
    fn all_tied_is_not_significant() {
        assert_eq!(mann_whitney_greater(&[0.0; 30], &[0.0; 30]), 1.0);
        assert_eq!(mann_whitney_greater(&[], &[1.0]), 1.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    proptest! {
        /// Shifting one sample up never makes the test less significant,
        /// and p-values are probabilities.
        #[test]
        fn shift_up_lowers_p(
            x in proptest::collection::vec(0.0f64..100.0, 10..40),
            y in proptest::collection::vec(0.0f64..100.0, 10..40),
            shift in 0.0f64..50.0,
        ) {
            let p = mann_whitney_greater(&x, &y);
            let shifted: Vec<f64> = y.iter().map(|v| v + shift).collect();
            let q = mann_whitney_greater(&x, &shifted);
            prop_assert!((0.0..=1.0).contains(&p));
            prop_assert!(q <= p + 1e-12);
            let two = mann_whitney_two_sided(&x, &y);
            prop_assert!((0.0..=1.0).contains(&two));
        }

        /// The median splits the sample in halves.
        #[test]
        fn median_splits(v in proptest::collection::vec(-1e6f64..1e6, 1..60)) {
            let m = median(&v).unwrap();
            let below = v.iter().filter(|x| **x < m).count();
            let above = v.iter().filter(|x| **x > m).count();
            prop_assert!(below <= v.len() / 2 && above <= v.len() / 2);
        }
    }
}
