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
    mann_whitney_greater_inflated(before, after, 1.0)
}

/// [`mann_whitney_greater_inflated`] for a `before` sample already sorted
/// ascending (total order): one merge instead of a sort of both.
pub(crate) fn mann_whitney_greater_sorted(before: &[f64], after: &[f64], inflation: f64) -> f64 {
    let (nx, ny) = (before.len(), after.len());
    if nx == 0 || ny == 0 {
        return 1.0;
    }
    let mut after = after.to_vec();
    after.sort_unstable_by(f64::total_cmp);
    let (mut i, mut j) = (0, 0);
    let mut rank_sum_after = 0.0;
    let mut ties = 0.0;
    while i < nx || j < ny {
        let value = match (before.get(i), after.get(j)) {
            (Some(x), Some(y)) => {
                if x.total_cmp(y).is_le() {
                    *x
                } else {
                    *y
                }
            }
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        let (from_x, from_y) = (i, j);
        while i < nx && before[i].total_cmp(&value).is_eq() {
            i += 1;
        }
        while j < ny && after[j].total_cmp(&value).is_eq() {
            j += 1;
        }
        // Ranks from_x + from_y + 1 ..= i + j share their average.
        let average = (from_x + from_y + 1 + i + j) as f64 / 2.0;
        let tied = (i + j - from_x - from_y) as f64;
        ties += tied * tied * tied - tied;
        rank_sum_after += average * (j - from_y) as f64;
    }
    u_test_p(nx, ny, rank_sum_after, ties, inflation)
}

/// [`mann_whitney_greater`] with the variance of U multiplied by
/// `inflation` (at least 1): the correction for serially correlated
/// samples, whose rank sums vary more than independent ones'.
pub(crate) fn mann_whitney_greater_inflated(before: &[f64], after: &[f64], inflation: f64) -> f64 {
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
    u_test_p(nx, ny, rank_sum_after, ties, inflation)
}

/// The one-sided p-value from the rank sum of `after` and the tie term
/// `Σ (t³ − t)`, with the variance multiplied by `inflation`.
fn u_test_p(nx: usize, ny: usize, rank_sum_after: f64, ties: f64, inflation: f64) -> f64 {
    let n = (nx + ny) as f64;
    let (nx, ny) = (nx as f64, ny as f64);
    let u = rank_sum_after - ny * (ny + 1.0) / 2.0;
    let mean = nx * ny / 2.0;
    let variance = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0))) * inflation.max(1.0);
    if variance <= 0.0 || !variance.is_finite() {
        return 1.0;
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    upper_tail(z)
}

/// A sample sorted, with each value's mid-rank placement.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ranked {
    /// The values, ascending (total order).
    pub(crate) sorted: Vec<f64>,
    /// For each value in its original position, the share of the sample
    /// below it, ties counting half (uniform on (0, 1) for distinct values).
    pub(crate) placements: Vec<f64>,
}

/// Sorts `values` once and places each of them in the sample.
pub(crate) fn rank(values: &[f64]) -> Ranked {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
    let sorted: Vec<f64> = order.iter().map(|&i| values[i]).collect();
    let mut placements = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && sorted[end].total_cmp(&sorted[start]).is_eq() {
            end += 1;
        }
        let placement = (start as f64 + (end - start) as f64 / 2.0) / n as f64;
        for &i in &order[start..end] {
            placements[i] = placement;
        }
        start = end;
    }
    Ranked { sorted, placements }
}

/// How much more the mean of a window of `block` consecutive values varies
/// than the mean of as many independent values, estimated from a series
/// on a regular grid (`NaN` for a missing value) by overlapping batch
/// means: every window of `block` grid points holding at least
/// `min_count` values contributes its standardised squared deviation
/// `m (mean − μ)² / σ²`, which averages 1 for independent values and more
/// for serially correlated or seasonal ones. Never below 1; 1 when no
/// window qualifies.
pub(crate) fn batch_means_inflation(series: &[f64], block: usize, min_count: usize) -> f64 {
    let block = block.max(1);
    let (sum, count) = series
        .iter()
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count < 2 || series.len() < block {
        return 1.0;
    }
    let mean = sum / count as f64;
    let variance = series
        .iter()
        .filter(|v| !v.is_nan())
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / count as f64;
    if variance <= 0.0 {
        return 1.0;
    }
    // Running sums over the window [start, start + block).
    let (mut window_sum, mut window_count) = (0.0, 0usize);
    let (mut total, mut windows) = (0.0, 0usize);
    for (i, v) in series.iter().enumerate() {
        if !v.is_nan() {
            window_sum += v;
            window_count += 1;
        }
        if i >= block {
            let old = series[i - block];
            if !old.is_nan() {
                window_sum -= old;
                window_count -= 1;
            }
        }
        if i + 1 >= block && window_count >= min_count.max(1) {
            let m = window_count as f64;
            let deviation = window_sum / m - mean;
            total += m * deviation * deviation / variance;
            windows += 1;
        }
    }
    if windows == 0 {
        1.0
    } else {
        (total / windows as f64).max(1.0)
    }
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

        /// The merge over a sorted baseline is the same test, and placements
        /// are mid-ranks.
        #[test]
        fn sorted_merge_matches_the_plain_test(
            x in proptest::collection::vec(0u8..20, 1..60),
            y in proptest::collection::vec(0u8..20, 1..30),
        ) {
            let x: Vec<f64> = x.into_iter().map(f64::from).collect();
            let y: Vec<f64> = y.into_iter().map(f64::from).collect();
            let ranked = rank(&x);
            let plain = mann_whitney_greater(&x, &y);
            let merged = mann_whitney_greater_sorted(&ranked.sorted, &y, 1.0);
            prop_assert!((plain - merged).abs() < 1e-12, "{} {}", plain, merged);
            for (v, p) in x.iter().zip(&ranked.placements) {
                let below = x.iter().filter(|w| *w < v).count() as f64;
                let equal = x.iter().filter(|w| *w == v).count() as f64;
                prop_assert!((p - (below + equal / 2.0) / x.len() as f64).abs() < 1e-12);
            }
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
