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

#[cfg(test)]
mod tests {
    use super::*;

    struct Test;

    impl Manager for Test {
        type Connection = u32;
        type Error = std::io::Error;

        async fn create(&self) -> Result<u32, Self::Error> {
            Ok(0)
        }

        async fn validate(&self, _: &mut u32) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    fn no_pool() -> Weak<Shared<Test>> {
        Weak::new()
    }

    fn error(text: &str) -> Option<Arc<std::io::Error>> {
        Some(Arc::new(std::io::Error::other(text.to_owned())))
    }

    /// What a waiter's receiver holds, if anything.
    fn received(rx: &mut oneshot::Receiver<Handoff<Test>>) -> Option<Grant<u32>> {
        rx.try_recv()
            .ok()
            .and_then(|mut handoff| handoff.grant.take())
    }

    fn is_create(grant: Option<Grant<u32>>, probe: bool) -> bool {
        matches!(grant, Some(Grant::Create { probe: p }) if p == probe)
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_lets_one_probe_through_at_its_end() {
        let now = Instant::now();
        let mut state = State::<Test>::new();
        assert_eq!(state.admit(now), Admit::Yes);
        let first = state.failed(error("refused"), 2, BASE, MAX, now);
        assert!(
            first <= BASE && first >= BASE.mul_f64(0.8),
            "the first retry waits the base delay (less jitter): {first:?}"
        );
        assert_eq!(state.retry_at, Some(now + first));
        assert!(!state.is_open(now), "one failure of two");
        assert_eq!(state.admit(now), Admit::Yes);
        let second = state.failed(None, 2, BASE, MAX, now);
        assert!(second > BASE && second <= BASE * 2, "doubled: {second:?}");
        let until = now + second;
        assert_eq!(state.open_until, Some(until));
        assert!(state.is_open(now));
        assert!(state.is_open(until - Duration::from_nanos(1)));
        assert!(!state.is_open(until), "closed for probing at its end");
        assert_eq!(state.admit(now), Admit::No(second));
        assert_eq!(
            state.admit(until - Duration::from_nanos(1)),
            Admit::No(Duration::from_nanos(1))
        );
        assert_eq!(state.admit(until), Admit::Probe, "the probe is due at once");
        assert!(state.probing);
        assert_eq!(
            state.admit(until),
            Admit::No(Duration::ZERO),
            "one probe at a time"
        );
        assert_eq!(state.failures, 2);
        assert_eq!(
            state.last_error.as_ref().map(|e| e.to_string()).as_deref(),
            Some("refused"),
            "a failure without an error keeps the last one"
        );
    }

    #[test]
    fn without_a_threshold_the_breaker_never_opens() {
        let now = Instant::now();
        let mut state = State::<Test>::new();
        for _ in 0..5 {
            state.failed(error("refused"), 0, BASE, MAX, now);
        }
        assert_eq!(state.open_until, None);
        assert_eq!(state.admit(now), Admit::Yes);
        assert!(state.retry_at.is_some(), "the refill still backs off");
    }

    #[test]
    fn a_success_closes_the_breaker_and_ends_the_probe() {
        let now = Instant::now();
        let mut state = State::<Test>::new();
        let delay = state.failed(error("refused"), 1, BASE, MAX, now);
        assert_eq!(state.admit(now + delay), Admit::Probe);
        state.created();
        assert_eq!(state.failures, 0);
        assert_eq!(state.open_until, None);
        assert!(!state.probing);
        assert_eq!(state.retry_at, None);
        assert_eq!(state.admit(now + delay), Admit::Yes);
        // The count starts again: one failure is below a threshold of 2.
        state.failed(None, 2, BASE, MAX, now);
        assert!(!state.is_open(now));
    }

    #[test]
    fn a_waiter_who_gave_up_is_forgotten_and_the_others_kept_in_order() {
        let mut state = State::<Test>::new();
        let mut rx: Vec<_> = (1..=3).map(|id| state.enqueue(id)).collect();
        state.forget_waiter(2);
        state.forget_waiter(9);
        let ids: Vec<_> = state.waiters.iter().map(|w| w.id).collect();
        assert_eq!(ids, [1, 3]);
        assert!(
            state
                .hand_off(Grant::Create { probe: false }, &no_pool())
                .is_none()
        );
        assert!(is_create(received(&mut rx[0]), false), "the first in line");
        assert!(
            state
                .hand_off(Grant::Create { probe: false }, &no_pool())
                .is_none()
        );
        assert!(is_create(received(&mut rx[2]), false));
        assert!(received(&mut rx[1]).is_none(), "the forgotten one");
    }

    #[test]
    fn a_grant_skips_waiters_who_left_and_comes_back_when_nobody_is_left() {
        let mut state = State::<Test>::new();
        drop(state.enqueue(1));
        let mut rx = state.enqueue(2);
        assert!(
            state
                .hand_off(Grant::Create { probe: true }, &no_pool())
                .is_none()
        );
        assert!(is_create(received(&mut rx), true));
        assert!(state.waiters.is_empty());
        drop(state.enqueue(3));
        let back = state.hand_off(Grant::Create { probe: true }, &no_pool());
        assert!(is_create(back, true), "nobody took it");
        assert!(state.waiters.is_empty());
    }

    #[test]
    fn queued_waiters_get_free_slots_then_the_probe_then_wait_for_it() {
        let now = Instant::now();
        let mut state = State::<Test>::new();
        state.size = 1;
        let mut rx: Vec<_> = (1..=4).map(|id| state.enqueue(id)).collect();
        // Room for two more, the breaker closed.
        assert_eq!(state.serve_waiters(3, now, &no_pool()), None);
        assert_eq!(state.size, 3);
        assert!(is_create(received(&mut rx[0]), false));
        assert!(is_create(received(&mut rx[1]), false));
        assert_eq!(state.waiters.len(), 2, "no room for the others");
        // Open: refused, with the time to the probe.
        let delay = state.failed(None, 1, BASE, MAX, now);
        state.size = 1;
        assert_eq!(state.serve_waiters(3, now, &no_pool()), Some(delay));
        assert_eq!(state.size, 1);
        // The probe is due: the next waiter gets it, the last one waits.
        let due = now + delay;
        assert_eq!(
            state.serve_waiters(3, due, &no_pool()),
            Some(Duration::ZERO)
        );
        assert!(is_create(received(&mut rx[2]), true));
        assert!(received(&mut rx[3]).is_none());
        assert_eq!(state.size, 2);
        assert!(state.probing);
        // Closed pools serve nobody.
        state.created();
        state.closed = true;
        assert_eq!(state.serve_waiters(3, due, &no_pool()), None);
        assert!(received(&mut rx[3]).is_none());
        assert_eq!(state.size, 2);
    }

    #[test]
    fn a_probe_nobody_takes_is_ended() {
        let now = Instant::now();
        let mut state = State::<Test>::new();
        let delay = state.failed(None, 1, BASE, MAX, now);
        drop(state.enqueue(1));
        assert_eq!(state.serve_waiters(2, now + delay, &no_pool()), None);
        assert_eq!(state.size, 0, "the slot is not kept");
        assert!(!state.probing, "the next caller may probe");
        assert_eq!(state.admit(now + delay), Admit::Probe);
    }

    #[test]
    fn a_full_pool_serves_nobody_from_the_queue() {
        let mut state = State::<Test>::new();
        state.size = 2;
        let mut rx = state.enqueue(1);
        assert_eq!(state.serve_waiters(2, Instant::now(), &no_pool()), None);
        assert!(received(&mut rx).is_none());
        assert_eq!(state.size, 2);
    }
}
