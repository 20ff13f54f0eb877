//! The pool's shared state, changed only under its mutex and never across
//! an `.await`.

use std::{
    collections::{HashMap, VecDeque},
    panic::Location,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{Handoff, Shared};
use crate::{Manager, backoff};

/// A connection and its bookkeeping.
pub(crate) struct Conn<C> {
    pub(crate) raw: C,
    pub(crate) id: u64,
    /// Retired when it comes back (or is found idle) after this.
    pub(crate) expires: Instant,
    pub(crate) uses: u32,
    pub(crate) idle_since: Instant,
}

/// What a waiter is handed: a connection, or a free slot to create one in.
pub(crate) enum Grant<C> {
    Conn(Conn<C>),
    /// A slot, counted in `size`; `probe` when this creation is the
    /// breaker's one probe (whoever ends it, or drops it, ends the probe).
    Create {
        probe: bool,
    },
    /// The breaker is open and nothing alive could come back: give up now,
    /// the next probe is due in this long.
    Unavailable(Duration),
}

/// A caller waiting for a connection, in arrival order.
pub(crate) struct Waiter<M: Manager> {
    pub(crate) id: u64,
    pub(crate) tx: oneshot::Sender<Handoff<M>>,
}

/// A connection checked out, for leak detection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkout {
    pub(crate) site: &'static Location<'static>,
    pub(crate) since: Instant,
    pub(crate) warned: bool,
}

/// The circuit breaker's answer for a creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes,
    /// The one probe after an open period.
    Probe,
    /// Refused; the next probe is due in this long.
    No(Duration),
}

pub(crate) struct State<M: Manager> {
    pub(crate) idle: VecDeque<Conn<M::Connection>>,
    /// Alive: idle, checked out, and being created.
    pub(crate) size: usize,
    pub(crate) creating: usize,
    pub(crate) waiters: VecDeque<Waiter<M>>,
    pub(crate) closed: bool,
    pub(crate) last_error: Option<Arc<M::Error>>,
    /// Consecutive failed creations.
    pub(crate) failures: u32,
    pub(crate) open_until: Option<Instant>,
    pub(crate) probing: bool,
    /// The background refill waits until then after a failed creation.
    pub(crate) retry_at: Option<Instant>,
    pub(crate) checked_out: HashMap<u64, Checkout>,
}

impl<M: Manager> State<M> {
    pub(crate) fn new() -> Self {
        Self {
            idle: VecDeque::new(),
            size: 0,
            creating: 0,
            waiters: VecDeque::new(),
            closed: false,
            last_error: None,
            failures: 0,
            open_until: None,
            probing: false,
            retry_at: None,
            checked_out: HashMap::new(),
        }
    }

    /// Whether a creation may start now.
    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No(until - now),
            Some(_) if self.probing => Admit::No(Duration::ZERO),
            Some(_) => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// A creation succeeded: the breaker closes.
    pub(crate) fn created(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.probing = false;
        self.retry_at = None;
    }

    /// A creation failed: after `threshold` in a row the breaker opens for
    /// the next backoff step. Returns the delay before the next retry.
    pub(crate) fn failed(
        &mut self,
        error: Option<Arc<M::Error>>,
        threshold: u32,
        base: Duration,
        max: Duration,
        now: Instant,
    ) -> Duration {
        if error.is_some() {
            self.last_error = error;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = backoff::delay(base, max, self.failures - 1, 0.2, fastrand::f64());
        if threshold > 0 && self.failures >= threshold {
            self.open_until = Some(now + delay);
        }
        self.retry_at = Some(now + delay);
        delay
    }

    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// Queues a caller; it learns what it is granted through the receiver.
    pub(crate) fn enqueue(&mut self, id: u64) -> oneshot::Receiver<Handoff<M>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(Waiter { id, tx });
        rx
    }

    /// Removes a waiter that gave up (timed out or was cancelled).
    pub(crate) fn forget_waiter(&mut self, id: u64) {
        if let Some(i) = self.waiters.iter().position(|w| w.id == id) {
            self.waiters.remove(i);
        }
    }

    /// Hands creation slots to queued waiters, first come first served,
    /// while there is room and the breaker lets creations through. Returns
    /// the breaker's refusal (the next probe is due in this long; zero
    /// while a probe is in flight) if waiters are left for that reason.
    pub(crate) fn serve_waiters(
        &mut self,
        max_size: usize,
        now: Instant,
        pool: &Weak<Shared<M>>,
    ) -> Option<Duration> {
        while !self.closed && !self.waiters.is_empty() && self.size < max_size {
            let probe = match self.admit(now) {
                Admit::No(retry_in) => return Some(retry_in),
                Admit::Yes => false,
                Admit::Probe => true,
            };
            self.size += 1;
            if self.hand_off(Grant::Create { probe }, pool).is_some() {
                // Every waiter had gone.
                self.size -= 1;
                if probe {
                    self.probing = false;
                }
            }
        }
        None
    }

    /// Hands `grant` to the first waiter still listening; gives it back
    /// when nobody is. A grant a waiter received but dropped unread comes
    /// back to the pool through [`Handoff`]'s `Drop`.
    pub(crate) fn hand_off(
        &mut self,
        mut grant: Grant<M::Connection>,
        pool: &Weak<Shared<M>>,
    ) -> Option<Grant<M::Connection>> {
        while let Some(waiter) = self.waiters.pop_front() {
            let handoff = Handoff {
                grant: Some(grant),
                pool: Weak::clone(pool),
            };
            match waiter.tx.send(handoff) {
                Ok(()) => return None,
                // Taken back out, so its `Drop` (which locks) does not run
                // under this lock.
                Err(mut back) => grant = back.grant.take().expect("a grant just sent"),
            }
        }
        Some(grant)
    }
}
