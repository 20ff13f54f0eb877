//! One route's interval series, with its baseline's figures (the sorted
//! p95s and the pooled errors and requests of the usable intervals) kept up
//! to date as the windows slide: a check then costs a few binary searches
//! and one insertion and removal, not a pass over a week of points. Pure,
//! no I/O.

use std::{collections::VecDeque, ops::Range};

use super::{RegressionMetric, history::Point};

/// Windows that moved further than this many points are rebuilt rather
/// than slid (each slid point moves the sorted values once).
const MAX_SLIDE: u64 = 256;

/// A route's points, oldest first, and its baseline cache.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    points: VecDeque<Point>,
    /// The sequence number of `points[0]`; each point pushed gets the next.
    first: u64,
    baseline: Option<Baseline>,
    /// The autocorrelation correction of each metric, with the time it
    /// was estimated for.
    inflation: [Option<(u64, f64)>; 2],
}

/// The usable points of a stretch of the series, summarised.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Baseline {
    /// The sequence numbers covered, `lo..hi`.
    lo: u64,
    hi: u64,
    /// The fewest requests of a usable point.
    min_requests: u64,
    /// The usable points' p95s, ascending (total order).
    pub(crate) sorted: Vec<f64>,
    /// Their errors (at most their requests each).
    pub(crate) errors: u64,
    /// Their requests.
    pub(crate) requests: u64,
}

impl Baseline {
    /// The summary of `points`, those with at least `min_requests`.
    pub(crate) fn of<'a>(points: impl IntoIterator<Item = &'a Point>, min_requests: u64) -> Self {
        let mut baseline = Self {
            min_requests: min_requests.max(1),
            ..Self::default()
        };
        for p in points {
            if p.requests >= baseline.min_requests {
                baseline.sorted.push(p.p95_ms);
                baseline.errors += p.errors.min(p.requests);
                baseline.requests += p.requests;
            }
        }
        baseline.sorted.sort_unstable_by(f64::total_cmp);
        baseline
    }

    /// Usable points summarised.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    fn add(&mut self, p: &Point) {
        if p.requests >= self.min_requests {
            let at = self
                .sorted
                .partition_point(|v| v.total_cmp(&p.p95_ms).is_lt());
            self.sorted.insert(at, p.p95_ms);
            self.errors += p.errors.min(p.requests);
            self.requests += p.requests;
        }
    }

    fn remove(&mut self, p: &Point) {
        if p.requests >= self.min_requests {
            let at = self
                .sorted
                .partition_point(|v| v.total_cmp(&p.p95_ms).is_lt());
            if self
                .sorted
                .get(at)
                .is_some_and(|v| v.total_cmp(&p.p95_ms).is_eq())
            {
                self.sorted.remove(at);
            }
            self.errors -= p.errors.min(p.requests);
            self.requests -= p.requests;
        }
    }
}

impl Series {
    /// A series of `points` (oldest first).
    pub(crate) fn new(points: impl IntoIterator<Item = Point>) -> Self {
        Self {
            points: points.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The correction of `metric` estimated for `anchor`, if it was.
    pub(crate) fn inflation(&self, metric: RegressionMetric, anchor: u64) -> Option<f64> {
        self.inflation[metric as usize]
            .filter(|(at, _)| *at == anchor)
            .map(|(_, inflation)| inflation)
    }

    /// Keeps the correction of `metric` estimated for `anchor`.
    pub(crate) fn set_inflation(&mut self, metric: RegressionMetric, anchor: u64, inflation: f64) {
        self.inflation[metric as usize] = Some((anchor, inflation));
    }

    /// The points, oldest first.
    pub(crate) fn points(&self) -> &VecDeque<Point> {
        &self.points
    }

    /// Appends `point`, or replaces the last point when it has the same
    /// start; drops it when older than the last. Then forgets the points
    /// that started more than `keep_secs` before it.
    pub(crate) fn push(&mut self, point: Point, keep_secs: u64) {
        let last_seq = (self.first + self.points.len() as u64).checked_sub(1);
        match self.points.back_mut() {
            Some(last) if last.start_secs == point.start_secs => {
                if let (Some(b), Some(seq)) = (&mut self.baseline, last_seq)
                    && (b.lo..b.hi).contains(&seq)
                {
                    b.remove(last);
                    b.add(&point);
                }
                *last = point;
            }
            Some(last) if last.start_secs > point.start_secs => return,
            _ => self.points.push_back(point),
        }
        let oldest = point.start_secs.saturating_sub(keep_secs);
        while let Some(front) = self.points.front() {
            if front.start_secs >= oldest {
                break;
            }
            if let Some(b) = &mut self.baseline {
                if (b.lo..b.hi).contains(&self.first) {
                    b.remove(front);
                }
                b.lo = b.lo.max(self.first + 1);
                b.hi = b.hi.max(b.lo);
            }
            self.points.pop_front();
            self.first += 1;
        }
    }

    /// The indices of the points that start in `from..to` (seconds).
    pub(crate) fn range(&self, from: u64, to: u64) -> Range<usize> {
        let start = self.points.partition_point(|p| p.start_secs < from);
        let end = self.points.partition_point(|p| p.start_secs < to);
        start..end.max(start)
    }

    /// Makes [`baseline`](Self::baseline) summarise the points that start
    /// in `from..to`, those with at least `min_requests`: slid from the
    /// previous summary when the window moved forward a little, rebuilt
    /// otherwise.
    pub(crate) fn slide_baseline(&mut self, from: u64, to: u64, min_requests: u64) {
        let range = self.range(from, to);
        let (lo, hi) = (
            self.first + range.start as u64,
            self.first + range.end as u64,
        );
        let min_requests = min_requests.max(1);
        let slide = self.baseline.as_ref().is_some_and(|b| {
            b.min_requests == min_requests
                && b.lo <= lo
                && b.hi <= hi
                && (lo - b.lo) + (hi - b.hi) <= MAX_SLIDE
        });
        if slide && let Some(b) = &mut self.baseline {
            let index = |seq: u64| (seq - self.first) as usize;
            for p in self.points.range(index(b.lo)..index(lo.min(b.hi))) {
                b.remove(p);
            }
            for p in self.points.range(index(b.hi.max(lo))..index(hi)) {
                b.add(p);
            }
            (b.lo, b.hi) = (lo, hi);
        } else {
            let mut b = Baseline::of(self.points.range(range), min_requests);
            (b.lo, b.hi) = (lo, hi);
            self.baseline = Some(b);
        }
    }

    /// The summary made by the last [`slide_baseline`](Self::slide_baseline)
    /// (empty before the first).
    pub(crate) fn baseline(&self) -> &Baseline {
        static EMPTY: Baseline = Baseline {
            lo: 0,
            hi: 0,
            min_requests: 1,
            sorted: Vec::new(),
            errors: 0,
            requests: 0,
        };
        self.baseline.as_ref().unwrap_or(&EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point(start_secs: u64, requests: u64, errors: u64, p95_ms: f64) -> Point {
        Point {
            start_secs,
            requests,
            errors,
            p95_ms,
            version: 0,
        }
    }

    proptest! {
        /// Whatever the pushes and windows, the slid summary equals one
        /// computed afresh.
        #[test]
        fn slid_baseline_matches_a_fresh_one(
            steps in proptest::collection::vec(
                (0u64..3, 0u64..40, 0u64..5, 0u16..50, 0u64..400, 0u64..200),
                1..300,
            ),
        ) {
            let mut series = Series::default();
            let mut t = 0u64;
            for (gap, requests, errors, p95, back, width) in steps {
                // Gaps of 0 replace the last point.
                t += gap * 60;
                series.push(point(t, requests, errors, f64::from(p95)), 3_600);
                let from = t.saturating_sub(back * 10);
                let to = from + width * 10;
                series.slide_baseline(from, to, 5);
                let got = series.baseline();
                let range = series.range(from, to);
                let fresh = Baseline::of(series.points().range(range), 5);
                prop_assert_eq!(&got.sorted, &fresh.sorted);
                prop_assert_eq!((got.errors, got.requests), (fresh.errors, fresh.requests));
            }
        }
    }

    #[test]
    fn old_points_are_forgotten_and_leave_the_baseline() {
        let mut series = Series::default();
        for i in 0..100u64 {
            series.push(point(i * 60, 10, 1, i as f64), 30 * 60);
        }
        // 31 minutes kept: 69 .. 99.
        assert_eq!(series.points().len(), 31);
        assert_eq!(series.points()[0].start_secs, 69 * 60);
        series.slide_baseline(0, 90 * 60, 1);
        let b = series.baseline();
        assert_eq!(b.len(), 21);
        assert_eq!((b.errors, b.requests), (21, 210));
        // Pushing forgets 69 and 70, which leave the summary as well.
        series.push(point(101 * 60, 10, 1, 101.0), 30 * 60);
        series.slide_baseline(0, 90 * 60, 1);
        let b = series.baseline();
        assert_eq!(b.sorted.first(), Some(&71.0));
        assert_eq!(b.len(), 19);
    }
}
