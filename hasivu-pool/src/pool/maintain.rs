//! The background task: retire idle and old connections, keep `min_idle`
//! ready (retrying failed creations with backoff, which is also the
//! breaker's probe), report connections held too long, refresh gauges.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{Shared, SlotGuard, state::Admit};
use crate::{Manager, status::CloseReason};

pub(super) async fn run<M: Manager>(pool: Weak<Shared<M>>) {
    loop {
        let Some(shared) = pool.upgrade() else {
            return;
        };
        // A manager that panics (in `create`, say) must not end the
        // upkeep: the refill, the breaker's probes for queued callers and
        // the reaping would stop with it. Its slot guards have already
        // put the pool right.
        let next = match AssertUnwindSafe(shared.upkeep()).catch_unwind().await {
            Ok(Some(next)) => next,
            Ok(None) => return,
            Err(_) => {
                tracing::error!(
                    pool = &*shared.name,
                    "the pool's upkeep panicked; it goes on"
                );
                shared.config.retry_initial.max(Duration::from_millis(1))
            }
        };
        let changed = Arc::clone(&shared.changed);
        drop(shared);
        // Woken early when a creation fails or a connection is retired, so
        // `min_idle` is restored without waiting a whole reap interval.
        let _ = tokio::time::timeout(next, changed.notified()).await;
    }
}

impl<M: Manager> Shared<M> {
    /// One round of upkeep; the time until the next one, or `None` once
    /// the pool is closed.
    async fn upkeep(self: &Arc<Self>) -> Option<Duration> {
        let now = Instant::now();
        let mut retired = Vec::new();
        {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            // Oldest idle first: past the lifetime always, past the idle
            // timeout only above `min_idle`.
            let mut kept = std::collections::VecDeque::with_capacity(state.idle.len());
            let mut idle_left = state.idle.len();
            while let Some(conn) = state.idle.pop_front() {
                if now >= conn.expires {
                    idle_left -= 1;
                    retired.push((conn, CloseReason::Lifetime));
                } else if now.saturating_duration_since(conn.idle_since) >= self.config.idle_timeout
                    && idle_left > self.config.min_idle
                {
                    idle_left -= 1;
                    retired.push((conn, CloseReason::Idle));
                } else {
                    kept.push_back(conn);
                }
            }
            state.idle = kept;
            state.size -= retired.len();
            if let Some(threshold) = self.config.leak_threshold {
                for (id, checkout) in state.checked_out.iter_mut() {
                    let held = now.saturating_duration_since(checkout.since);
                    if !checkout.warned && held >= threshold {
                        checkout.warned = true;
                        tracing::warn!(
                            pool = &*self.name,
                            connection = id,
                            held = ?held,
                            acquired_at = %checkout.site,
                            "connection held longer than the leak threshold"
                        );
                    }
                }
            }
        }
        for (conn, reason) in retired {
            self.retire(conn, reason);
        }
        let mut next = self.config.reap_interval;
        // Waiters queued while the breaker was open get the free slots once
        // it lets a probe through. While a probe is in flight (a refusal of
        // zero) there is nothing to wait for: its end wakes this task.
        let refused = self
            .lock()
            .serve_waiters(self.config.max_size, Instant::now(), &self.me);
        if let Some(retry_in) = refused.filter(|r| !r.is_zero()) {
            next = next.min(retry_in);
        }
        // Refill to `min_idle`, one creation at a time.
        loop {
            let admitted = {
                let mut state = self.lock();
                let ready = state.idle.len() + state.creating;
                let now = Instant::now();
                if state.closed
                    || ready >= self.config.min_idle
                    || state.size >= self.config.max_size
                {
                    None
                } else if let Some(at) = state.retry_at.filter(|at| now < *at) {
                    // Backing off after a failed creation.
                    next = next.min(at - now);
                    None
                } else {
                    match state.admit(now) {
                        Admit::No(retry_in) => {
                            // Zero: a probe is in flight; its end wakes
                            // this task.
                            if !retry_in.is_zero() {
                                next = next.min(retry_in);
                            }
                            None
                        }
                        admit => {
                            state.size += 1;
                            state.creating += 1;
                            Some(admit == Admit::Probe)
                        }
                    }
                }
            };
            let Some(probe) = admitted else {
                break;
            };
            let slot = SlotGuard::new(self, probe);
            match self.create_in_slot(slot, self.config.create_timeout).await {
                Ok(conn) => self.release(conn, false),
                Err(_) => {
                    let retry = self
                        .lock()
                        .retry_at
                        .map(|at| at.saturating_duration_since(Instant::now()));
                    next = next.min(
                        retry
                            .unwrap_or(self.config.retry_initial)
                            .max(Duration::from_millis(1)),
                    );
                    break;
                }
            }
        }
        self.status();
        Some(next)
    }
}
