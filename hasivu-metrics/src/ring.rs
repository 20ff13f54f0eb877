//! A ring of time slices, each an atomic histogram with outcome counters.
//!
//! Pure logic over atomics: the caller passes the time (nanoseconds since
//! the clock's origin). Slice `e` (its epoch, counted from 1) covers
//! `[(e − 1)·width, e·width)`; it lives at index `e mod len` and is reused
//! `len` slices later. Recording touches the slice of the current epoch
//! only: one load of its epoch, one bucket increment, one sum increment,
//! and the counters the sample's flags ask for. The first recorder of a new
//! epoch claims the slice by a compare-and-swap of its epoch word and zeroes
//! it; recorders arriving during those few hundred nanoseconds wait for it,
//! which happens once per slice and route, never on the steady path.

use std::sync::{
    Arc,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

use crate::histogram::{Counts, Layout};

/// The epoch word of a slice being zeroed.
const RESETTING: u64 = 1 << 63;

/// The sample was a server error (5xx, a failed service or body).
pub(crate) const SERVER_ERROR: u8 = 1;
/// The sample was a client error (4xx).
pub(crate) const CLIENT_ERROR: u8 = 1 << 1;
/// The client went away before the response ended.
pub(crate) const ABORTED: u8 = 1 << 2;
/// The response came from a cache.
pub(crate) const CACHE_HIT: u8 = 1 << 3;
/// A cache was consulted and missed.
pub(crate) const CACHE_MISS: u8 = 1 << 4;

#[derive(Debug)]
struct Header {
    epoch: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    server_errors: AtomicU64,
    client_errors: AtomicU64,
    aborted: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl Header {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }
}

/// Outcome counters of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcomes {
    pub(crate) server_errors: u64,
    pub(crate) client_errors: u64,
    pub(crate) aborted: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
}

impl Outcomes {
    pub(crate) fn merge(&mut self, other: &Outcomes) {
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
        self.aborted += other.aborted;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
    }
}

/// The shape of a ring: slice width and count, and its bucket layout.
#[derive(Clone, Debug)]
pub(crate) struct RingSpec {
    pub(crate) width: u64,
    pub(crate) len: usize,
    pub(crate) layout: Arc<Layout>,
}

impl RingSpec {
    /// The longest window the ring answers completely: every slice but the
    /// one being filled.
    pub(crate) fn span(&self) -> u64 {
        self.width.saturating_mul(self.len as u64 - 1)
    }

    /// Bytes of one ring of this shape.
    pub(crate) fn memory(&self) -> usize {
        std::mem::size_of::<Ring>()
            + self.len * std::mem::size_of::<Header>()
            + self.len * self.layout.len() * std::mem::size_of::<AtomicU32>()
    }
}

/// One route's ring.
#[derive(Debug)]
pub(crate) struct Ring {
    width: u64,
    headers: Box<[Header]>,
    // `headers.len()` runs of `layout.len()` buckets.
    buckets: Box<[AtomicU32]>,
    layout: Arc<Layout>,
}

impl Ring {
    pub(crate) fn new(spec: &RingSpec) -> Self {
        let len = spec.len.max(2);
        Self {
            width: spec.width.max(1),
            headers: (0..len).map(|_| Header::new()).collect(),
            buckets: (0..len * spec.layout.len())
                .map(|_| AtomicU32::new(0))
                .collect(),
            layout: Arc::clone(&spec.layout),
        }
    }

    fn epoch(&self, now: u64) -> u64 {
        now / self.width + 1
    }

    /// Records `value` nanoseconds with `flags` into the slice of `now`.
    #[inline]
    pub(crate) fn record(&self, now: u64, value: u64, flags: u8) {
        let epoch = self.epoch(now);
        let slot = (epoch % self.headers.len() as u64) as usize;
        let header = &self.headers[slot];
        if !self.claim(header, slot, epoch) {
            return;
        }
        let bucket = slot * self.layout.len() + self.layout.index(value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        header.sum.fetch_add(value, Ordering::Relaxed);
        if value > header.max.load(Ordering::Relaxed) {
            header.max.fetch_max(value, Ordering::Relaxed);
        }
        if value < header.min.load(Ordering::Relaxed) {
            header.min.fetch_min(value, Ordering::Relaxed);
        }
        if flags != 0 {
            let counters = [
                (SERVER_ERROR, &header.server_errors),
                (CLIENT_ERROR, &header.client_errors),
                (ABORTED, &header.aborted),
                (CACHE_HIT, &header.cache_hits),
                (CACHE_MISS, &header.cache_misses),
            ];
            for (flag, counter) in counters {
                if flags & flag != 0 {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Makes `slot` hold `epoch`, zeroing it when it held an older one.
    /// `false` when it already holds a newer epoch: the sample is older than
    /// the ring and is dropped.
    #[inline]
    fn claim(&self, header: &Header, slot: usize, epoch: u64) -> bool {
        let mut spins = 0u32;
        loop {
            let current = header.epoch.load(Ordering::Acquire);
            if current == epoch {
                return true;
            }
            if current & RESETTING != 0 {
                // Another recorder is zeroing this slice (about a
                // microsecond); yield if it was descheduled meanwhile.
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if current > epoch {
                return false;
            }
            if header
                .epoch
                .compare_exchange(
                    current,
                    epoch | RESETTING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.zero(header, slot);
                header.epoch.store(epoch, Ordering::Release);
                return true;
            }
        }
    }

    fn zero(&self, header: &Header, slot: usize) {
        let len = self.layout.len();
        for bucket in &self.buckets[slot * len..(slot + 1) * len] {
            bucket.store(0, Ordering::Relaxed);
        }
        header.sum.store(0, Ordering::Relaxed);
        header.min.store(u64::MAX, Ordering::Relaxed);
        header.max.store(0, Ordering::Relaxed);
        for counter in [
            &header.server_errors,
            &header.client_errors,
            &header.aborted,
            &header.cache_hits,
            &header.cache_misses,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Adds the slices that overlap `[now − window, now]` to `counts` and
    /// `outcomes`, and returns the start of the oldest of them (ns since
    /// the origin). Windows longer than the ring are cut to its span plus
    /// the slice being filled.
    pub(crate) fn collect(
        &self,
        now: u64,
        window: u64,
        counts: &mut Counts,
        outcomes: &mut Outcomes,
    ) -> u64 {
        let last = self.epoch(now);
        let len = self.headers.len() as u64;
        let first = self
            .epoch(now.saturating_sub(window))
            .max(last.saturating_sub(len - 1))
            .max(1);
        let buckets = self.layout.len();
        let mut scratch = Counts::new(&self.layout);
        for epoch in first..=last {
            let slot = (epoch % len) as usize;
            let header = &self.headers[slot];
            if header.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            for (out, bucket) in scratch
                .buckets
                .iter_mut()
                .zip(&self.buckets[slot * buckets..(slot + 1) * buckets])
            {
                *out = u64::from(bucket.load(Ordering::Relaxed));
            }
            scratch.sum = header.sum.load(Ordering::Relaxed);
            scratch.min = header.min.load(Ordering::Relaxed);
            scratch.max = header.max.load(Ordering::Relaxed);
            let slice = Outcomes {
                server_errors: header.server_errors.load(Ordering::Relaxed),
                client_errors: header.client_errors.load(Ordering::Relaxed),
                aborted: header.aborted.load(Ordering::Relaxed),
                cache_hits: header.cache_hits.load(Ordering::Relaxed),
                cache_misses: header.cache_misses.load(Ordering::Relaxed),
            };
            // Reused for a newer epoch while being read: not this window's.
            if header.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            counts.merge(&scratch);
            outcomes.merge(&slice);
        }
        (first - 1) * self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const MINUTE: u64 = 60 * SECOND;

    fn ring(width: u64, len: usize) -> Ring {
        Ring::new(&RingSpec {
            width,
            len,
            layout: Arc::new(Layout::new(37)),
        })
    }

    fn window(ring: &Ring, now: u64, window: u64) -> (Counts, Outcomes, u64) {
        let mut counts = Counts::new(&ring.layout);
        let mut outcomes = Outcomes::default();
        let start = ring.collect(now, window, &mut counts, &mut outcomes);
        (counts, outcomes, start)
    }

    #[test]
    fn windows_cover_the_slices_they_overlap() {
        let ring = ring(MINUTE, 61);
        for minute in 0..120u64 {
            ring.record(minute * MINUTE + SECOND, 1_000_000, 0);
        }
        let now = 119 * MINUTE + 30 * SECOND;
        // The current minute plus the four before it.
        let (counts, _, start) = window(&ring, now, 5 * MINUTE);
        assert_eq!(counts.count(), 6);
        assert_eq!(start, 114 * MINUTE);
        // Everything the ring holds: 61 slices.
        let (counts, _, _) = window(&ring, now, 10 * 60 * MINUTE);
        assert_eq!(counts.count(), 61);
    }

    #[test]
    fn old_slices_are_zeroed_when_reused() {
        let ring = ring(MINUTE, 3);
        ring.record(0, 5_000, SERVER_ERROR);
        ring.record(SECOND, 7_000, CACHE_HIT);
        // Three minutes later the same slot holds a new epoch.
        ring.record(3 * MINUTE, 9_000, 0);
        let (counts, outcomes, _) = window(&ring, 3 * MINUTE, 10 * MINUTE);
        assert_eq!(counts.count(), 1);
        assert_eq!(counts.min, 9_000);
        assert_eq!(counts.sum, 9_000);
        assert_eq!(outcomes, Outcomes::default());
    }

    #[test]
    fn samples_older_than_the_ring_are_dropped() {
        let ring = ring(MINUTE, 3);
        ring.record(3 * MINUTE, 1_000, 0);
        ring.record(0, 1_000, 0);
        let (counts, _, _) = window(&ring, 3 * MINUTE, 3 * MINUTE);
        assert_eq!(counts.count(), 1);
    }

    #[test]
    fn flags_reach_their_counters() {
        let ring = ring(SECOND, 4);
        ring.record(1, 2_000, SERVER_ERROR | ABORTED);
        ring.record(2, 2_000, CLIENT_ERROR | CACHE_MISS);
        ring.record(3, 2_000, CACHE_HIT);
        let (counts, outcomes, _) = window(&ring, 3, SECOND);
        assert_eq!(counts.count(), 3);
        assert_eq!(
            outcomes,
            Outcomes {
                server_errors: 1,
                client_errors: 1,
                aborted: 1,
                cache_hits: 1,
                cache_misses: 1,
            }
        );
    }

    #[test]
    fn concurrent_recorders_lose_nothing_across_rotations() {
        let ring = Arc::new(ring(1_000, 4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    // Everyone crosses the same three slice boundaries.
                    for now in 0..20_000u64 {
                        ring.record(now / 5, 5_000, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Four slices of 1000 ns, all still in the ring.
        let (counts, _, _) = window(&ring, 3_999, 4_000);
        assert_eq!(counts.count(), 4 * 20_000);
    }

    #[test]
    fn memory_is_what_the_spec_says() {
        let spec = RingSpec {
            width: MINUTE,
            len: 61,
            layout: Arc::new(Layout::new(37)),
        };
        let per_slice = spec.layout.len() * 4 + std::mem::size_of::<Header>();
        assert!(spec.memory() >= 61 * per_slice);
        assert!(spec.memory() < 61 * per_slice + 256);
    }
}
