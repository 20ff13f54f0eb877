//! Per-thread allocation counting for per-request memory figures.
//!
//! [`TrackingAllocator`] wraps another global allocator and adds the size
//! of every allocation (and every reallocation's new size) to a counter of
//! the current thread. The metrics layer reads that counter before and
//! after each poll of a request's future and body, so a request is charged
//! for what was allocated while it ran, on whichever threads it ran:
//! allocations of tasks it spawned are not included. The figure is bytes
//! allocated, not net growth: memory freed again is not subtracted.
//!
//! This module is the crate's only `unsafe` code: implementing
//! [`GlobalAlloc`] is an `unsafe` trait impl, and each method forwards to
//! the wrapped allocator under the caller's own contract.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicBool, Ordering},
};

thread_local! {
    // Const-initialised and without a destructor: reading it never
    // allocates, which an allocator must not do.
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// A global allocator that counts the bytes each thread allocates.
///
/// Install it in the binary (feature `alloc-tracking`), then turn on
/// [`MetricsLayer::memory_header`](crate::MetricsLayer::memory_header):
///
/// ```rust,standalone_crate
/// use hasivu_metrics::TrackingAllocator;
///
/// #[global_allocator]
/// static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();
///
/// fn main() {
///     let before = TrackingAllocator::allocated_by_this_thread();
///     let buffer = vec![0u8; 4096];
///     assert!(TrackingAllocator::allocated_by_this_thread() - before >= 4096);
///     assert!(TrackingAllocator::is_installed());
///     # drop(buffer);
/// }
/// ```
///
/// The cost is one thread-local addition per allocation.
#[derive(Debug, Default)]
pub struct TrackingAllocator<A = System> {
    inner: A,
}

impl TrackingAllocator<System> {
    /// Counts allocations of the system allocator.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A> TrackingAllocator<A> {
    /// Counts allocations of `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

impl TrackingAllocator {
    /// Bytes allocated by the current thread since it started (wrapping).
    #[inline]
    pub fn allocated_by_this_thread() -> u64 {
        ALLOCATED.try_with(Cell::get).unwrap_or(0)
    }

    /// Whether a `TrackingAllocator` is the global allocator (it has served
    /// an allocation).
    pub fn is_installed() -> bool {
        ACTIVE.load(Ordering::Relaxed)
    }
}

#[inline]
fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|c| c.set(c.get().wrapping_add(bytes as u64)));
    if !ACTIVE.load(Ordering::Relaxed) {
        ACTIVE.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `inner` with the arguments it was given,
// so the wrapped allocator's guarantees hold unchanged; counting touches only
// a const-initialised thread-local `Cell` and an atomic, neither of which
// allocates or unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}
