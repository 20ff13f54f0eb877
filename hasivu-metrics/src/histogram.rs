//! Log-bucketed latency histograms: bucket maths and mergeable snapshots.
//!
//! Pure logic: no clock, no I/O, no atomics. [`Layout`] maps a duration in
//! nanoseconds to a bucket; [`Counts`] holds bucket counts plus the exact
//! count, sum, minimum and maximum of what was recorded, merges with other
//! counts and answers quantiles.
//!
//! # Buckets
//!
//! Each power of two between 2^10 ns (1.024 µs) and 2^36 ns (68.7 s) is cut
//! into `k` buckets of equal width on a log scale, so every bucket spans the
//! same ratio `γ = 2^(1/k)` of its lower to its upper bound. A bucket is
//! reported as the value that is equally far, relatively, from both bounds
//! (`2·lo·hi / (lo + hi)`), which bounds the relative error of any reported
//! quantile by `(γ − 1) / (γ + 1)`: 0.98% for `k = 36`, the layout chosen
//! for a 1% bound.
//!
//! The bucket of a value is found without a logarithm: the position of its
//! highest bit gives the power of two, and the next 11 bits index a
//! 2048-entry table that was filled with the log-scale bucket of each row.
//! The table's rows are 1/2048 of a power of two wide, which widens the
//! worst bucket by at most one row; [`Layout::max_relative_error`] reports
//! the bound from the table itself.
//!
//! Values below 2^10 ns fall into one underflow bucket and values of 2^36 ns
//! and more into one overflow bucket. Quantiles are clamped to the exact
//! minimum and maximum, so a quantile that lands in either reports the
//! recorded extreme; count, sum and maximum stay exact whatever the value.

/// The smallest power of two with its own buckets: 2^10 ns = 1.024 µs.
pub(crate) const MIN_EXP: u32 = 10;
/// The first power of two past the last bucket: 2^36 ns = 68.7 s.
pub(crate) const MAX_EXP: u32 = 36;
const OCTAVES: usize = (MAX_EXP - MIN_EXP) as usize;
const ROW_BITS: u32 = 11;
const ROWS: usize = 1 << ROW_BITS;

/// The largest number of buckets per power of two a layout may have.
pub(crate) const MAX_PER_OCTAVE: usize = 255;

/// A bucket layout: `k` log-scale buckets per power of two.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    per_octave: usize,
    // Row (the 11 bits after the leading one) → bucket within the octave.
    table: Box<[u8; ROWS]>,
    // First row of each bucket within an octave, then `ROWS`.
    bounds: Box<[u16]>,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("per_octave", &self.per_octave)
            .field("buckets", &self.len())
            .finish()
    }
}

impl Layout {
    /// A layout with `per_octave` buckets per power of two (1 to 255).
    pub(crate) fn new(per_octave: usize) -> Self {
        let per_octave = per_octave.clamp(1, MAX_PER_OCTAVE);
        let mut table = Box::new([0u8; ROWS]);
        for (row, slot) in table.iter_mut().enumerate() {
            let mantissa = 1.0 + row as f64 / ROWS as f64;
            let bucket = (mantissa.log2() * per_octave as f64).floor() as usize;
            *slot = bucket.min(per_octave - 1) as u8;
        }
        let mut bounds = vec![0u16; per_octave + 1];
        bounds[per_octave] = ROWS as u16;
        // Every bucket owns at least one row: the narrowest, at the top of
        // the octave, is 2048·(2 − 2^((k−1)/k)) ≥ 5 rows for k ≤ 255.
        for (bucket, bound) in bounds.iter_mut().enumerate().take(per_octave).skip(1) {
            *bound = table
                .iter()
                .position(|&b| b as usize >= bucket)
                .unwrap_or(ROWS) as u16;
        }
        Self {
            per_octave,
            table,
            bounds: bounds.into_boxed_slice(),
        }
    }

    /// The coarsest layout whose quantiles are within `max_error` (relative,
    /// e.g. `0.01`) of the exact ones; the finest available when none is.
    pub(crate) fn for_error(max_error: f64) -> Self {
        // The bound is about ln 2 / (2k); start just below and walk up.
        let guess = (std::f64::consts::LN_2 / (2.0 * max_error.max(1e-6))).floor() as usize;
        let mut k = guess.saturating_sub(2).clamp(1, MAX_PER_OCTAVE);
        loop {
            let layout = Self::new(k);
            if layout.max_relative_error() <= max_error || k == MAX_PER_OCTAVE {
                return layout;
            }
            k += 1;
        }
    }

    /// Buckets per power of two.
    #[cfg(test)]
    pub(crate) fn per_octave(&self) -> usize {
        self.per_octave
    }

    /// Number of buckets, underflow and overflow included.
    pub(crate) fn len(&self) -> usize {
        2 + OCTAVES * self.per_octave
    }

    /// The bucket of `nanos`.
    #[inline]
    pub(crate) fn index(&self, nanos: u64) -> usize {
        if nanos < 1 << MIN_EXP {
            return 0;
        }
        if nanos >= 1 << MAX_EXP {
            return self.len() - 1;
        }
        let zeros = nanos.leading_zeros();
        let exp = 63 - zeros;
        // Shift the leading one out; the next ROW_BITS bits are the row.
        let row = ((nanos << zeros) << 1) >> (64 - ROW_BITS);
        1 + (exp - MIN_EXP) as usize * self.per_octave + self.table[row as usize] as usize
    }

    /// The lower and upper bound of a bucket, in nanoseconds (upper
    /// exclusive). The underflow bucket is `[0, 2^10)`, the overflow bucket
    /// `[2^36, ∞)`.
    pub(crate) fn bounds(&self, index: usize) -> (f64, f64) {
        if index == 0 {
            return (0.0, (1u64 << MIN_EXP) as f64);
        }
        if index >= self.len() - 1 {
            return ((1u64 << MAX_EXP) as f64, f64::INFINITY);
        }
        let octave = (index - 1) / self.per_octave;
        let bucket = (index - 1) % self.per_octave;
        let base = (1u64 << (MIN_EXP as usize + octave)) as f64;
        let lo = base * (1.0 + f64::from(self.bounds[bucket]) / ROWS as f64);
        let hi = base * (1.0 + f64::from(self.bounds[bucket + 1]) / ROWS as f64);
        (lo, hi)
    }

    /// The value a bucket is reported as, in nanoseconds: the point with the
    /// same relative distance to both bounds.
    pub(crate) fn representative(&self, index: usize) -> f64 {
        let (lo, hi) = self.bounds(index);
        if index == 0 {
            return hi;
        }
        if hi.is_infinite() {
            return lo;
        }
        2.0 * lo * hi / (lo + hi)
    }

    /// The largest relative error of a reported value for values inside
    /// the range, from the table.
    pub(crate) fn max_relative_error(&self) -> f64 {
        self.bounds
            .windows(2)
            .map(|w| {
                let (lo, hi) = (f64::from(w[0]), f64::from(w[1]));
                (hi - lo) / (2.0 * ROWS as f64 + lo + hi)
            })
            .fold(0.0, f64::max)
    }
}

/// Bucket counts with the exact aggregates of the recorded values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) buckets: Vec<u64>,
    pub(crate) sum: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl Counts {
    /// Empty counts for `layout`.
    pub(crate) fn new(layout: &Layout) -> Self {
        Self {
            buckets: vec![0; layout.len()],
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one value (tests and the single-threaded paths).
    #[cfg(test)]
    pub(crate) fn record(&mut self, layout: &Layout, nanos: u64) {
        self.buckets[layout.index(nanos)] += 1;
        self.sum = self.sum.saturating_add(nanos);
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    /// Number of values.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds counts of the same layout.
    pub(crate) fn merge(&mut self, other: &Counts) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.merge_aggregates(other);
    }

    /// Adds counts of another layout, moving each of its buckets to the
    /// bucket of its representative here. The error of the result is at
    /// most the sum of both layouts' errors.
    pub(crate) fn merge_rebucketed(&mut self, layout: &Layout, other: &Counts, from: &Layout) {
        for (index, &n) in other.buckets.iter().enumerate() {
            if n > 0 {
                let value = from.representative(index) as u64;
                self.buckets[layout.index(value)] += n;
            }
        }
        self.merge_aggregates(other);
    }

    fn merge_aggregates(&mut self, other: &Counts) {
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0 to 1) in nanoseconds by nearest rank: the value
    /// of rank `⌈q·n⌉`, as its bucket's representative clamped to the exact
    /// minimum and maximum (the minimum for the underflow bucket, the
    /// maximum for the overflow bucket). `None` when empty.
    pub(crate) fn quantile(&self, layout: &Layout, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (index, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (min, max) = (self.min.min(self.max) as f64, self.max as f64);
                // Outside the bucketed range the extremes are the best
                // estimate there is.
                if index == 0 {
                    return Some(min);
                }
                if index == self.buckets.len() - 1 {
                    return Some(max);
                }
                return Some(layout.representative(index).clamp(min, max));
            }
        }
        Some(self.max as f64)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn default_resolution_is_within_one_percent() {
        let layout = Layout::for_error(0.01);
        assert_eq!(layout.per_octave(), 36);
        assert!(layout.max_relative_error() <= 0.01);
        assert!(layout.max_relative_error() > 0.0097);
        assert_eq!(layout.len(), 2 + 26 * 36);
    }

    #[test]
    fn coarser_layouts_meet_their_bound() {
        for target in [0.005, 0.02, 0.045, 0.1] {
            let layout = Layout::for_error(target);
            assert!(layout.max_relative_error() <= target, "{target}");
            let coarser = Layout::new(layout.per_octave() - 1);
            assert!(
                coarser.max_relative_error() > target,
                "{target} not the coarsest"
            );
        }
    }

    #[test]
    fn indices_are_monotonic_and_cover_every_bucket() {
        let layout = Layout::new(37);
        let mut last = 0;
        let mut seen = vec![false; layout.len()];
        // Every value of one octave, then a sweep of the others.
        for v in (1u64 << 11)..(1 << 12) {
            let i = layout.index(v);
            assert!(i >= last);
            last = i;
            seen[i] = true;
        }
        for exp in MIN_EXP..MAX_EXP {
            for step in 0..4096u64 {
                let v = (1u64 << exp) + (step << exp >> 12);
                seen[layout.index(v)] = true;
            }
        }
        seen[0] = true;
        seen[layout.len() - 1] = true;
        assert!(seen.iter().all(|&s| s), "a bucket no value reaches");
        assert_eq!(layout.index(0), 0);
        assert_eq!(layout.index(1023), 0);
        assert_eq!(layout.index(1024), 1);
        assert_eq!(layout.index(u64::MAX), layout.len() - 1);
        assert_eq!(layout.index(1 << MAX_EXP), layout.len() - 1);
        assert_eq!(layout.index((1 << MAX_EXP) - 1), layout.len() - 2);
    }

    #[test]
    fn values_fall_within_their_bucket_bounds() {
        let layout = Layout::new(37);
        for v in [
            1024u64,
            1500,
            4095,
            65_537,
            1_000_000,
            123_456_789,
            (1 << 36) - 1,
        ] {
            let (lo, hi) = layout.bounds(layout.index(v));
            assert!(lo <= v as f64 && (v as f64) < hi, "{v} not in [{lo}, {hi})");
        }
    }

    #[test]
    fn quantiles_of_an_empty_histogram_are_none() {
        let layout = Layout::new(37);
        assert_eq!(Counts::new(&layout).quantile(&layout, 0.5), None);
    }

    #[test]
    fn extremes_are_exact() {
        let layout = Layout::new(8);
        let mut counts = Counts::new(&layout);
        for v in [300, 5_000, 7_000, 90_000_000_000] {
            counts.record(&layout, v);
        }
        assert_eq!(counts.quantile(&layout, 0.0), Some(300.0));
        assert_eq!(counts.quantile(&layout, 1.0), Some(90_000_000_000.0));
        assert_eq!(counts.count(), 4);
    }

    #[test]
    fn rebucketing_into_a_finer_layout_keeps_the_count() {
        let coarse = Layout::new(8);
        let fine = Layout::new(37);
        let mut a = Counts::new(&coarse);
        for v in [2_000, 30_000, 400_000] {
            a.record(&coarse, v);
        }
        let mut b = Counts::new(&fine);
        b.merge_rebucketed(&fine, &a, &coarse);
        assert_eq!(b.count(), 3);
        assert_eq!(b.max, 400_000);
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        let n = sorted.len() as u64;
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        sorted[rank as usize - 1]
    }

    proptest! {
        // Log-uniform durations across the whole range, 1.024 µs to 68.7 s.
        #[test]
        fn quantiles_are_within_one_percent_of_exact(
            exps in prop::collection::vec(10.0f64..36.0, 1..2000),
            q in 0.0f64..=1.0,
        ) {
            let layout = Layout::for_error(0.01);
            let mut counts = Counts::new(&layout);
            let mut values: Vec<u64> = exps.iter().map(|e| e.exp2() as u64).collect();
            for &v in &values {
                counts.record(&layout, v);
            }
            values.sort_unstable();
            for q in [q, 0.5, 0.95, 0.99, 1.0] {
                let truth = exact(&values, q) as f64;
                let estimate = counts.quantile(&layout, q).unwrap();
                prop_assert!(
                    (estimate - truth).abs() / truth <= 0.01,
                    "q={q} estimate={estimate} exact={truth}"
                );
            }
        }

        #[test]
        fn merging_equals_recording_together(
            a in prop::collection::vec(0u64..1 << 40, 0..300),
            b in prop::collection::vec(0u64..1 << 40, 0..300),
        ) {
            let layout = Layout::new(37);
            let (mut left, mut right, mut both) =
                (Counts::new(&layout), Counts::new(&layout), Counts::new(&layout));
            for &v in &a { left.record(&layout, v); both.record(&layout, v); }
            for &v in &b { right.record(&layout, v); both.record(&layout, v); }
            left.merge(&right);
            prop_assert_eq!(left, both);
        }

        #[test]
        fn every_value_lands_in_its_bounds(v in 1024u64..1 << 36, k in 1usize..=MAX_PER_OCTAVE) {
            let layout = Layout::new(k);
            let (lo, hi) = layout.bounds(layout.index(v));
            prop_assert!(lo <= v as f64 && (v as f64) < hi);
        }
    }
}
