//! A ring of time slices, each an atomic histogram with outcome counters.
//!
//! Pure logic over atomics: the caller passes the time (nanoseconds since
//! the clock's origin). Slice `e` (its epoch, counted from 1) covers
//! `[(e − 1)·width, e·width)`; it lives at index `e mod len` and is reused
//! `len` slices later. Recording touches the slice of the current epoch
//! only: one load of its epoch, one bucket increment, one sum increment,
//! and the counters the sample's flags ask for.
//!
//! # Rotation without waiting
//!
//! The first recorder of a new epoch claims the slice by a compare-and-swap
//! of its epoch word (setting the `RESETTING` bit), zeroes it, publishes the
//! epoch by clearing the bit, and then *drains* the ring's staging slice
//! into it. A recorder that finds the slice of its epoch being zeroed does
//! not wait: it records into the staging slice, then (after a sequentially
//! consistent fence) looks at the epoch word again. If the slice is still
//! being zeroed, the zeroing writer has not passed its own fence yet, so its
//! drain will see the staged sample; if it has been published, the recorder
//! drains the staging slice itself. Draining moves counts with `swap` and
//! `fetch_add` (minimum and maximum with `swap` and `fetch_min`/`fetch_max`),
//! so a count is moved exactly once whoever drains, and concurrent drains
//! and stagings lose nothing.
//!
//! No recorder ever waits for another thread: the only loop retries a
//! compare-and-swap that failed because another thread changed the epoch
//! word, and that word only moves forward (stale → resetting → published,
//! epochs increasing), so a recorder retries at most a few times per
//! rotation it races with.
//!
//! Two rare cases are tolerated, both only when a writer is descheduled for
//! about a slice's width or more: a sample staged while *another* slice of
//! the ring was rotated at the same moment may be drained into that slice
//! (counted once, in a neighbouring slice), and a writer that read the epoch
//! of a slice, stalled for a whole ring period and then wrote, writes into
//! the slice's newer epoch (as before).

use std::sync::{
    Arc,
    atomic::{AtomicU32, AtomicU64, Ordering, fence},
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

    fn counters(&self) -> [&AtomicU64; 6] {
        [
            &self.sum,
            &self.server_errors,
            &self.client_errors,
            &self.aborted,
            &self.cache_hits,
            &self.cache_misses,
        ]
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

    /// Bytes of one ring of this shape: its slices and the staging slice
    /// (whose header is in the `Ring`).
    pub(crate) fn memory(&self) -> usize {
        std::mem::size_of::<Ring>()
            + self.len * std::mem::size_of::<Header>()
            + (self.len + 1) * self.layout.len() * std::mem::size_of::<AtomicU32>()
    }
}

/// What one past slice held, as [`Ring::read_slice`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SliceRead {
    /// Its counts were added.
    Filled,
    /// Nothing was recorded in it.
    Empty,
    /// Its first writer is still zeroing it: read it again later.
    Busy,
    /// It has been reused for a newer epoch: its counts are gone.
    Gone,
}

/// One route's ring.
#[derive(Debug)]
pub(crate) struct Ring {
    width: u64,
    /// Slices in the ring (the staging slice is not one of them).
    len: usize,
    headers: Box<[Header]>,
    staging: Header,
    // `len + 1` runs of `layout.len()` buckets, the staging slice's last.
    buckets: Box<[AtomicU32]>,
    layout: Arc<Layout>,
}

impl Ring {
    pub(crate) fn new(spec: &RingSpec) -> Self {
        let len = spec.len.max(2);
        Self {
            width: spec.width.max(1),
            len,
            headers: (0..len).map(|_| Header::new()).collect(),
            staging: Header::new(),
            buckets: (0..(len + 1) * spec.layout.len())
                .map(|_| AtomicU32::new(0))
                .collect(),
            layout: Arc::clone(&spec.layout),
        }
    }

    /// The epoch of the slice holding `now`.
    pub(crate) fn epoch(&self, now: u64) -> u64 {
        now / self.width + 1
    }

    /// Records `value` nanoseconds with `flags` into the slice of `now`.
    #[inline]
    pub(crate) fn record(&self, now: u64, value: u64, flags: u8) {
        let epoch = self.epoch(now);
        let slot = (epoch % self.headers.len() as u64) as usize;
        let header = &self.headers[slot];
        if header.epoch.load(Ordering::Acquire) == epoch {
            self.add(header, slot, value, flags);
        } else {
            self.record_rotating(slot, epoch, value, flags);
        }
    }

    /// Adds one sample to the counters of slice `index` (`len`: staging),
    /// whose header is `header`.
    #[inline]
    fn add(&self, header: &Header, index: usize, value: u64, flags: u8) {
        let bucket = index * self.layout.len() + self.layout.index(value);
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

    /// The slice of `epoch` is not published: claim and zero it, stage the
    /// sample while another writer zeroes it, or drop a sample older than
    /// the ring. Never waits for another thread (see the module docs).
    #[cold]
    #[inline(never)]
    fn record_rotating(&self, slot: usize, epoch: u64, value: u64, flags: u8) {
        let header = &self.headers[slot];
        let mut current = header.epoch.load(Ordering::Acquire);
        loop {
            #[cfg(test)]
            hooks::attempt();
            let tag = current & !RESETTING;
            if tag > epoch {
                // The slice was reused for a newer epoch: the sample is
                // older than the ring.
                return;
            }
            let resetting = current & RESETTING != 0;
            if !resetting && tag == epoch {
                // Published since the first look.
                self.add(header, slot, value, flags);
                return;
            }
            if resetting && tag == epoch {
                self.stage(slot, value, flags);
                return;
            }
            // Stale (claim it), or being zeroed for an older epoch (move the
            // claim on to this one: the zeroing is the same).
            match header.epoch.compare_exchange(
                current,
                epoch | RESETTING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if resetting => {
                    self.stage(slot, value, flags);
                    return;
                }
                Ok(_) => {
                    self.rotate(slot, epoch, value, flags);
                    return;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Zeroes the claimed `slot`, publishes its epoch, drains the staging
    /// slice into it and records the claimer's own sample.
    fn rotate(&self, slot: usize, epoch: u64, value: u64, flags: u8) {
        let header = &self.headers[slot];
        self.zero(slot);
        // Clearing the bit publishes whatever epoch the claim was moved on
        // to meanwhile; the zeroing happens-before it for readers.
        let published = header.epoch.fetch_and(!RESETTING, Ordering::AcqRel) & !RESETTING;
        // Pairs with the fence in `stage`: either this drain sees a staged
        // sample, or its stager sees the slice published and drains.
        fence(Ordering::SeqCst);
        self.drain(slot);
        if published == epoch {
            self.add(header, slot, value, flags);
        }
    }

    /// Records into the staging slice while `slot` is being zeroed, and
    /// drains the staging slice into `slot` when the zeroing has finished.
    fn stage(&self, slot: usize, value: u64, flags: u8) {
        self.add(&self.staging, self.len, value, flags);
        fence(Ordering::SeqCst);
        if self.headers[slot].epoch.load(Ordering::Acquire) & RESETTING == 0 {
            self.drain(slot);
        }
    }

    /// Moves everything in the staging slice into `slot`.
    fn drain(&self, slot: usize) {
        let len = self.layout.len();
        let staged = &self.buckets[self.len * len..(self.len + 1) * len];
        let target = &self.buckets[slot * len..(slot + 1) * len];
        for (from, to) in staged.iter().zip(target) {
            if from.load(Ordering::Relaxed) != 0 {
                let n = from.swap(0, Ordering::Relaxed);
                to.fetch_add(n, Ordering::Relaxed);
            }
        }
        let (from, to) = (&self.staging, &self.headers[slot]);
        for (from, to) in from.counters().into_iter().zip(to.counters()) {
            if from.load(Ordering::Relaxed) != 0 {
                let n = from.swap(0, Ordering::Relaxed);
                to.fetch_add(n, Ordering::Relaxed);
            }
        }
        if from.max.load(Ordering::Relaxed) != 0 {
            let max = from.max.swap(0, Ordering::Relaxed);
            to.max.fetch_max(max, Ordering::Relaxed);
        }
        if from.min.load(Ordering::Relaxed) != u64::MAX {
            let min = from.min.swap(u64::MAX, Ordering::Relaxed);
            to.min.fetch_min(min, Ordering::Relaxed);
        }
    }

    fn zero(&self, slot: usize) {
        #[cfg(test)]
        hooks::zeroing();
        let len = self.layout.len();
        for bucket in &self.buckets[slot * len..(slot + 1) * len] {
            bucket.store(0, Ordering::Relaxed);
        }
        let header = &self.headers[slot];
        for counter in header.counters() {
            counter.store(0, Ordering::Relaxed);
        }
        header.min.store(u64::MAX, Ordering::Relaxed);
        header.max.store(0, Ordering::Relaxed);
    }

    /// Adds slice `slot`'s counts when it holds `epoch`; `false` when it
    /// does not (or was reused while being read).
    fn add_slice(
        &self,
        slot: usize,
        epoch: u64,
        counts: &mut Counts,
        outcomes: &mut Outcomes,
    ) -> bool {
        let header = &self.headers[slot];
        if header.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        let buckets = self.layout.len();
        let mut scratch = Counts::new(&self.layout);
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
            return false;
        }
        counts.merge(&scratch);
        outcomes.merge(&slice);
        true
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
        let len = self.len as u64;
        let first = self
            .epoch(now.saturating_sub(window))
            .max(last.saturating_sub(len - 1))
            .max(1);
        for epoch in first..=last {
            self.add_slice((epoch % len) as usize, epoch, counts, outcomes);
        }
        (first - 1) * self.width
    }

    /// Adds the counts of the slice of `epoch` alone, saying what it found.
    pub(crate) fn read_slice(
        &self,
        epoch: u64,
        counts: &mut Counts,
        outcomes: &mut Outcomes,
    ) -> SliceRead {
        let slot = (epoch % self.len as u64) as usize;
        let current = self.headers[slot].epoch.load(Ordering::Acquire);
        let tag = current & !RESETTING;
        if tag > epoch {
            SliceRead::Gone
        } else if tag < epoch {
            // Nothing recorded since the slice's previous use (a claim for
            // an older epoch in progress changes nothing).
            SliceRead::Empty
        } else if current & RESETTING != 0 {
            SliceRead::Busy
        } else if self.add_slice(slot, epoch, counts, outcomes) {
            SliceRead::Filled
        } else {
            SliceRead::Gone
        }
    }
}

/// Test instrumentation: stall a writer inside the zeroing of a slice.
#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut()>;

    thread_local! {
        /// Runs on this thread whenever it starts zeroing a slice.
        pub(crate) static ZEROING: RefCell<Option<Hook>> = const { RefCell::new(None) };
        /// Iterations of the rotation loop on this thread, for the record
        /// in progress and the most any record took.
        static ATTEMPTS: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    }

    pub(super) fn attempt() {
        ATTEMPTS.with(|a| {
            let (now, most) = a.get();
            a.set((now + 1, most.max(now + 1)));
        });
    }

    /// Starts counting the loop iterations of a new record.
    pub(crate) fn new_record() {
        ATTEMPTS.with(|a| a.set((0, a.get().1)));
    }

    /// The most loop iterations one record took on this thread.
    pub(crate) fn most_attempts() -> u32 {
        ATTEMPTS.with(|a| a.get().1)
    }

    pub(super) fn zeroing() {
        ZEROING.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
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
    fn a_stalled_rotation_holds_back_no_other_recorder() {
        use std::{sync::mpsc, time::Duration};

        let ring = Arc::new(ring(1_000, 4));
        ring.record(0, 1_000, 0);
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        // The first writer of the next slice is descheduled while zeroing it.
        let rotating = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                hooks::ZEROING.with(|hook| {
                    *hook.borrow_mut() = Some(Box::new(move || {
                        let _ = entered_tx.send(());
                        let _ = release_rx.recv();
                    }));
                });
                ring.record(1_000, 7_000, SERVER_ERROR);
            })
        };
        entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the rotating writer reached the zeroing");
        // Four recorders write into that slice meanwhile.
        let (done_tx, done_rx) = mpsc::channel();
        let recorders: Vec<_> = (0..4u64)
            .map(|t| {
                let ring = Arc::clone(&ring);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        ring.record(1_000 + i, 5_000 + t, 0);
                    }
                    let _ = done.send(());
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut finished = 0;
        while finished < 4 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        // Let the stalled writer go whatever happened, so nothing hangs.
        let _ = release_tx.send(());
        rotating.join().unwrap();
        for r in recorders {
            r.join().unwrap();
        }
        assert_eq!(
            finished, 4,
            "recorders waited for the stalled writer to finish zeroing"
        );
        // Nothing lost, nothing counted twice, the slice's extremes right.
        let (counts, outcomes, _) = window(&ring, 1_999, 999);
        assert_eq!(counts.count(), 4_001);
        assert_eq!(outcomes.server_errors, 1);
        assert_eq!((counts.min, counts.max), (5_000, 7_000));
        assert_eq!(counts.sum, 7_000 + 1_000 * (5_000 + 5_001 + 5_002 + 5_003));
    }

    /// Runs `threads` recorders through `epochs` slices of a 1 µs ring,
    /// `per_epoch` samples each per slice, in phases of `phase` slices
    /// separated by a barrier (odd threads take the phase's slices in the
    /// opposite order, so rotations of different slices overlap). After
    /// each phase the main thread checks the phase's slices together.
    /// Returns the most loop iterations any record took.
    fn stress(threads: u64, epochs: u64, phase: u64, per_epoch: u64) -> u32 {
        use std::sync::Barrier;

        let ring = Arc::new(ring(1_000, 4));
        let barrier = Arc::new(Barrier::new(threads as usize + 1));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (ring, barrier) = (Arc::clone(&ring), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    // The zeroing writer gives its core away, so others find
                    // the slice being zeroed.
                    hooks::ZEROING.with(|hook| {
                        *hook.borrow_mut() = Some(Box::new(|| {
                            for _ in 0..3 {
                                std::thread::yield_now();
                            }
                        }));
                    });
                    for first in (1..=epochs).step_by(phase as usize) {
                        let mut order: Vec<u64> = (first..first + phase).collect();
                        if t % 2 == 1 {
                            order.reverse();
                        }
                        for epoch in order {
                            for i in 0..per_epoch {
                                let now = (epoch - 1) * 1_000 + i % 1_000;
                                let flags = if i % 10 == 0 { SERVER_ERROR } else { 0 };
                                hooks::new_record();
                                ring.record(now, 2_000 + t, flags);
                            }
                        }
                        // Phase done; wait while the main thread checks it.
                        barrier.wait();
                        barrier.wait();
                    }
                    hooks::most_attempts()
                })
            })
            .collect();
        for first in (1..=epochs).step_by(phase as usize) {
            barrier.wait();
            let mut counts = Counts::new(&ring.layout);
            let mut outcomes = Outcomes::default();
            for epoch in first..first + phase {
                let read = ring.read_slice(epoch, &mut counts, &mut outcomes);
                assert_eq!(read, SliceRead::Filled, "slice {epoch}");
            }
            let n = threads * per_epoch * phase;
            assert_eq!(counts.count(), n, "slices {first}..{}", first + phase);
            assert_eq!(outcomes.server_errors, n / 10);
            assert_eq!((counts.min, counts.max), (2_000, 2_000 + threads - 1));
            barrier.wait();
        }
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn many_recorders_across_rotations_lose_nothing_and_never_wait() {
        // Every slice exact, with all recorders racing into each rotation.
        let attempts = stress(8, 200, 1, 200);
        // A record goes around the loop at most twice: a failed claim means
        // another writer claimed, and the second look finds the slice
        // claimed or published.
        assert!(attempts <= 2, "{attempts} iterations for one record");
        // Two slices rotating at once (each pair checked together).
        let attempts = stress(8, 200, 2, 200);
        assert!(attempts <= 2, "{attempts} iterations for one record");
    }

    #[test]
    fn a_claim_moves_on_to_a_newer_epoch_while_zeroing() {
        use std::{sync::mpsc, time::Duration};

        let ring = Arc::new(ring(1_000, 4));
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        // A late writer claims slice 2 for epoch 2 and stalls zeroing it.
        let late = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                hooks::ZEROING.with(|hook| {
                    *hook.borrow_mut() = Some(Box::new(move || {
                        let _ = entered_tx.send(());
                        let _ = release_rx.recv();
                    }));
                });
                ring.record(1_500, 9_000, 0);
            })
        };
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // A writer of epoch 6 (the same slot, a ring later) does not wait.
        ring.record(5_500, 3_000, CACHE_HIT);
        release_tx.send(()).unwrap();
        late.join().unwrap();
        let (counts, outcomes, _) = window(&ring, 5_999, 999);
        // The newer sample is kept; the one older than the ring is dropped.
        assert_eq!(counts.count(), 1);
        assert_eq!((counts.min, counts.max, counts.sum), (3_000, 3_000, 3_000));
        assert_eq!(outcomes.cache_hits, 1);
        let mut counts = Counts::new(&ring.layout);
        let read = ring.read_slice(2, &mut counts, &mut Outcomes::default());
        assert_eq!(read, SliceRead::Gone);
    }

    #[test]
    fn past_slices_read_one_by_one() {
        let ring = ring(1_000, 4);
        ring.record(1_000, 5_000, SERVER_ERROR);
        ring.record(3_000, 6_000, 0);
        let read = |epoch| {
            let mut counts = Counts::new(&ring.layout);
            let mut outcomes = Outcomes::default();
            let r = ring.read_slice(epoch, &mut counts, &mut outcomes);
            (r, counts.count(), outcomes.server_errors)
        };
        assert_eq!(read(2), (SliceRead::Filled, 1, 1));
        assert_eq!(read(3), (SliceRead::Empty, 0, 0));
        assert_eq!(read(4), (SliceRead::Filled, 1, 0));
        // Epoch 6 reuses epoch 2's slot.
        ring.record(5_000, 7_000, 0);
        assert_eq!(read(2), (SliceRead::Gone, 0, 0));
        assert_eq!(read(6), (SliceRead::Filled, 1, 0));
    }

    #[test]
    fn memory_is_what_the_spec_says() {
        let spec = RingSpec {
            width: MINUTE,
            len: 61,
            layout: Arc::new(Layout::new(37)),
        };
        let per_slice = spec.layout.len() * 4 + std::mem::size_of::<Header>();
        // 61 slices and the staging slice.
        assert!(spec.memory() >= 62 * per_slice);
        assert!(spec.memory() < 62 * per_slice + 256);
    }
}
