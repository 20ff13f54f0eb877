//! The background task: retire idle and old connections, keep `min_idle`
//! ready (retrying failed creations with backoff, which is also the
//! breaker's probe), report connections held too long, refresh gauges.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;

use super::{Shared, state::Admit};
use crate::{Manager, status::CloseReason};

pub(super) async fn run<M: Manager>(pool: Weak<Shared<M>>) {
    loop {
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let Some(next) = shared.upkeep().await else {
            return;
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
        // it lets a probe through.
        {
            let mut state = self.lock();
            while !state.closed && !state.waiters.is_empty() && state.size < self.config.max_size {
                match state.admit(Instant::now()) {
                    Admit::No(retry_in) => {
                        next = next.min(retry_in.max(Duration::from_millis(1)));
                        break;
                    }
                    admit @ (Admit::Yes | Admit::Probe) => {
                        state.size += 1;
                        let weak = Arc::downgrade(self);
                        if state.hand_off(super::state::Grant::Create, &weak).is_some() {
                            state.size -= 1;
                            if admit == Admit::Probe {
                                state.probing = false;
                            }
                            break;
                        }
                    }
                }
            }
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
                    match state.admit(Instant::now()) {
                        Admit::No(retry_in) => {
                            next = next.min(retry_in.max(Duration::from_millis(1)));
                            None
                        }
                        Admit::Yes | Admit::Probe => {
                            state.size += 1;
                            state.creating += 1;
                            Some(())
                        }
                    }
                }
            };
            if admitted.is_none() {
                break;
            }
            match self.create_in_slot(self.config.create_timeout).await {
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
