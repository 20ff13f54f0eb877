//! Change-point detection over an interval series: binary segmentation on
//! the largest standardised shift in mean, each split kept only when the
//! two sides differ significantly (two-sided Mann–Whitney U, Bonferroni-
//! corrected for the candidate splits). Pure, no I/O.

use super::stats::mann_whitney_two_sided;

/// A point where a series' level changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ChangePoint {
    /// The first index of the new level.
    pub(crate) index: usize,
    /// The significance of the split.
    pub(crate) p_value: f64,
    /// Mean of the segment before.
    pub(crate) mean_before: f64,
    /// Mean of the segment after.
    pub(crate) mean_after: f64,
}

/// The change points of `series`, in index order. Segments are at least
/// `min_segment` long; a split is kept when its p-value is below `max_p`.
pub(crate) fn change_points(series: &[f64], min_segment: usize, max_p: f64) -> Vec<ChangePoint> {
    let min_segment = min_segment.max(2);
    let mut prefix = Vec::with_capacity(series.len() + 1);
    prefix.push(0.0);
    for v in series {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    let mut found = Vec::new();
    let mut ranges = vec![(0, series.len())];
    while let Some((start, end)) = ranges.pop() {
        if end - start < 2 * min_segment {
            continue;
        }
        let Some(split) = best_split(&prefix, start, end, min_segment) else {
            continue;
        };
        // The split is the best of many candidates: Bonferroni-correct for
        // them, or pure noise would yield a "significant" split per range.
        let candidates = (end - start - 2 * min_segment + 1) as f64;
        let p_value = (mann_whitney_two_sided(&series[start..split], &series[split..end])
            * candidates)
            .min(1.0);
        if p_value >= max_p {
            continue;
        }
        let mean = |a: usize, b: usize| (prefix[b] - prefix[a]) / (b - a) as f64;
        found.push(ChangePoint {
            index: split,
            p_value,
            mean_before: mean(start, split),
            mean_after: mean(split, end),
        });
        ranges.push((start, split));
        ranges.push((split, end));
    }
    found.sort_by_key(|c| c.index);
    found
}

/// The split maximising `nl·nr/n · (mean_l − mean_r)²`, the between-segment
/// sum of squares, which is where a single step in mean most likely is.
fn best_split(prefix: &[f64], start: usize, end: usize, min_segment: usize) -> Option<usize> {
    let n = (end - start) as f64;
    let total = prefix[end] - prefix[start];
    let mut best = None;
    let mut best_score = 0.0;
    for k in start + min_segment..=end - min_segment {
        let nl = (k - start) as f64;
        let nr = n - nl;
        let left = prefix[k] - prefix[start];
        let diff = left / nl - (total - left) / nr;
        let score = nl * nr / n * diff * diff;
        if score > best_score {
            best_score = score;
            best = Some(k);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn finds_a_step() {
        let mut s = noise(1, 200);
        for v in &mut s[130..] {
            *v += 2.0;
        }
        let cps = change_points(&s, 5, 0.01);
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!(cps[0].index, 130);
        assert!(cps[0].mean_after > cps[0].mean_before);
    }

    #[test]
    fn finds_two_steps() {
        let mut s = noise(2, 300);
        for v in &mut s[100..200] {
            *v += 3.0;
        }
        let idx: Vec<usize> = change_points(&s, 5, 0.01).iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![100, 200]);
    }

    #[test]
    fn flat_noise_has_none() {
        assert!(change_points(&noise(3, 500), 5, 0.001).is_empty());
        assert!(change_points(&[], 5, 0.01).is_empty());
        assert!(change_points(&[1.0; 4], 5, 0.01).is_empty());
    }

    proptest! {
        /// A clear step anywhere (segments of at least 10) is found exactly.
        #[test]
        fn step_found_where_it_is(seed in 0u64..1000, at in 10usize..190, height in 1.5f64..10.0) {
            let mut s = noise(seed, 200);
            for v in &mut s[at..] {
                *v += height;
            }
            let cps = change_points(&s, 5, 0.01);
            prop_assert!(cps.iter().any(|c| c.index == at), "{:?}", cps);
        }
    }
}
