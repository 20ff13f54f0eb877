//! [`Pool`]: acquiring, returning, the background upkeep and draining.

mod maintain;
mod pooled;
mod state;

use std::{
    panic::{AssertUnwindSafe, Location},
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram};
pub use pooled::Pooled;
use state::{Admit, Checkout, Conn, Grant, State};
use tokio::{sync::Notify, time::Instant};

use crate::{
    Manager, PoolConfig, PoolError, PoolStatus,
    status::{CloseReason, Counters},
};

/// A pool of connections made by a [`Manager`]. Cheap to clone; clones
/// share the pool.
///
/// ```
/// use std::{convert::Infallible, sync::atomic::{AtomicU32, Ordering}};
/// use hasivu_pool::{Manager, Pool, PoolConfig};
///
/// struct Numbers(AtomicU32);
///
/// impl Manager for Numbers {
///     type Connection = u32;
///     type Error = Infallible;
///     async fn create(&self) -> Result<u32, Infallible> {
///         Ok(self.0.fetch_add(1, Ordering::Relaxed))
///     }
///     async fn validate(&self, _: &mut u32) -> Result<(), Infallible> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_pool::PoolError<Infallible>> {
/// let pool = Pool::builder(Numbers(AtomicU32::new(0)))
///     .name("numbers")
///     .config(PoolConfig::default().max_size(2).min_idle(0))
///     .build();
/// let first = pool.get().await?;
/// assert_eq!(*first, 0);
/// drop(first); // back to the pool
/// assert_eq!(*pool.get().await?, 0, "reused");
/// assert_eq!(pool.status().creates, 1);
/// # Ok(())
/// # }
/// ```
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared<M: Manager> {
    /// This very pool, for handoffs and destroy tasks.
    me: Weak<Shared<M>>,
    manager: M,
    config: PoolConfig,
    name: Arc<str>,
    state: Mutex<State<M>>,
    next_id: AtomicU64,
    counters: Counters,
    metrics: Metrics,
    /// Woken whenever a connection is retired (drain waits on it) and when
    /// the background task should look again.
    changed: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Metric handles, resolved when the pool is built.
struct Metrics {
    wait: Histogram,
    create_errors: Counter,
    timeouts: Counter,
    closes: [Counter; 6],
    size: Gauge,
    idle: Gauge,
    in_use: Gauge,
    waiters: Gauge,
}

impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        let pool = Arc::clone(name);
        let close = |reason: CloseReason| metrics::counter!("hasivu_pool_closed_total", "pool" => Arc::clone(&pool), "reason" => reason.as_str());
        Self {
            wait: metrics::histogram!("hasivu_pool_acquire_wait_seconds", "pool" => Arc::clone(name)),
            create_errors: metrics::counter!("hasivu_pool_create_errors_total", "pool" => Arc::clone(name)),
            timeouts: metrics::counter!("hasivu_pool_timeouts_total", "pool" => Arc::clone(name)),
            closes: [
                close(CloseReason::Lifetime),
                close(CloseReason::Idle),
                close(CloseReason::Uses),
                close(CloseReason::Broken),
                close(CloseReason::Drain),
                close(CloseReason::Cancelled),
            ],
            size: metrics::gauge!("hasivu_pool_size", "pool" => Arc::clone(name)),
            idle: metrics::gauge!("hasivu_pool_idle", "pool" => Arc::clone(name)),
            in_use: metrics::gauge!("hasivu_pool_in_use", "pool" => Arc::clone(name)),
            waiters: metrics::gauge!("hasivu_pool_waiters", "pool" => Arc::clone(name)),
        }
    }
}

/// A grant on its way to a waiter. If the waiter is gone by the time it
/// would read it, dropping it gives the connection or the slot back.
pub(crate) struct Handoff<M: Manager> {
    grant: Option<Grant<M::Connection>>,
    pool: Weak<Shared<M>>,
}

impl<M: Manager> Drop for Handoff<M> {
    fn drop(&mut self) {
        if let (Some(grant), Some(pool)) = (self.grant.take(), self.pool.upgrade()) {
            match grant {
                Grant::Conn(conn) => pool.release(conn, false),
                Grant::Create { probe } => {
                    if probe {
                        // The probe's taker left: the next one may go.
                        pool.lock().probing = false;
                    }
                    pool.free_slot();
                }
                Grant::Unavailable(_) => {}
            }
        }
    }
}

/// Builds a [`Pool`].
#[derive(Debug)]
#[must_use]
pub struct PoolBuilder<M> {
    manager: M,
    config: PoolConfig,
    name: String,
}

impl<M: Manager> Pool<M> {
    /// A builder for a pool of `manager`'s connections.
    pub fn builder(manager: M) -> PoolBuilder<M> {
        PoolBuilder {
            manager,
            config: PoolConfig::default(),
            name: "default".to_owned(),
        }
    }
}

impl<M: Manager> PoolBuilder<M> {
    /// The settings (default [`PoolConfig::default`]).
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// The pool's name in metrics, logs and status (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds the pool. Inside a Tokio runtime this also starts the
    /// background task that keeps `min_idle` connections, retires idle and
    /// old ones, retries failed creations with backoff and reports leaks;
    /// outside one, connections are only made on demand.
    pub fn build(self) -> Pool<M> {
        let name: Arc<str> = self.name.into();
        let shared = Arc::new_cyclic(|me| Shared {
            me: Weak::clone(me),
            manager: self.manager,
            config: self.config.normalised(),
            metrics: Metrics::new(&name),
            name,
            state: Mutex::new(State::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            changed: Arc::new(Notify::new()),
            task: Mutex::new(None),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let task = tokio::spawn(maintain::run(Arc::downgrade(&shared)));
            *shared.task.lock().expect("pool task lock") = Some(task);
        }
        Pool { shared }
    }
}

impl<M: Manager> Pool<M> {
    /// A connection: an idle one, a new one, or the next one returned, in
    /// the order callers asked.
    ///
    /// Cancel-safe: dropping the future at any point gives up the caller's
    /// place and leaks nothing. A connection already handed to it goes
    /// back; a creation slot (or the breaker's probe) handed to it, or one
    /// it was creating in, is freed; a connection it was checking is
    /// destroyed (its state is unknown, see [`Manager::validate`]) and
    /// counted in [`Closes::cancelled`](crate::Closes::cancelled).
    ///
    /// # Errors
    ///
    /// [`PoolError::Backend`] when a creation this call started failed (the
    /// backend's own error, at once); [`PoolError::Unavailable`] while the
    /// circuit breaker is open; [`PoolError::Timeout`] after the acquire
    /// timeout, with the backend's last error if there was one;
    /// [`PoolError::CreateTimeout`]; [`PoolError::Closed`] once draining.
    #[track_caller]
    pub fn get(
        &self,
    ) -> impl std::future::Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let site = Location::caller();
        self.shared.acquire(site)
    }

    /// A snapshot of the pool.
    pub fn status(&self) -> PoolStatus {
        self.shared.status()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// Refuses new acquires, wakes waiters with [`PoolError::Closed`],
    /// destroys idle connections, waits up to `deadline` for checked-out
    /// ones to come back (destroying each as it does) and stops the
    /// background task.
    pub async fn drain(&self, deadline: Duration) -> crate::DrainReport {
        self.shared.drain(deadline).await
    }
}

impl<M: Manager> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_conn(&self, raw: M::Connection, now: Instant) -> Conn<M::Connection> {
        let lifetime = self.config.max_lifetime;
        let jitter = lifetime.mul_f64(self.config.lifetime_jitter * fastrand::f64());
        Conn {
            raw,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            expires: now + lifetime.saturating_sub(jitter),
            uses: 0,
            idle_since: now,
        }
    }

    async fn acquire(
        self: &Arc<Self>,
        site: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let started = Instant::now();
        let outcome = self.try_acquire(site, started).await;
        if outcome.is_err() {
            // Failed acquires count in the wait statistics too: a timeout
            // is the longest wait of all. (A success records its wait when
            // it checks the connection out.)
            self.record_wait(started.elapsed());
        }
        outcome
    }

    async fn try_acquire(
        self: &Arc<Self>,
        site: &'static Location<'static>,
        started: Instant,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let deadline = started + self.config.acquire_timeout;
        let mut first = true;
        loop {
            // One clock read per attempt: the first attempt's is `started`.
            let now = if first { started } else { Instant::now() };
            if !first && now >= deadline {
                return Err(self.timed_out(started));
            }
            first = false;
            enum Step<M: Manager> {
                /// Checked out under the lock already: no validation due.
                Ready(Conn<M::Connection>),
                Idle(Conn<M::Connection>),
                /// A slot counted in `size` and `creating`.
                Create {
                    probe: bool,
                },
                Wait(u64, tokio::sync::oneshot::Receiver<Handoff<M>>),
                Refused(Duration),
            }
            let mut expired = Vec::new();
            let step = {
                let mut state = self.lock();
                if state.closed {
                    return Err(PoolError::Closed);
                }
                let mut found = None;
                while let Some(conn) = if self.config.lifo {
                    state.idle.pop_back()
                } else {
                    state.idle.pop_front()
                } {
                    if now >= conn.expires {
                        state.size -= 1;
                        expired.push((conn, CloseReason::Lifetime));
                        continue;
                    }
                    found = Some(conn);
                    break;
                }
                if found.is_some() && state.idle.len() < self.config.min_idle {
                    // The background task tops `min_idle` up again.
                    self.changed.notify_one();
                }
                match found {
                    Some(conn)
                        if now.saturating_duration_since(conn.idle_since)
                            < self.config.validate_after =>
                    {
                        // The fast path: one lock, one clock read.
                        if self.config.leak_threshold.is_some() {
                            state.checked_out.insert(
                                conn.id,
                                Checkout {
                                    site,
                                    since: now,
                                    warned: false,
                                },
                            );
                        }
                        Step::Ready(conn)
                    }
                    Some(conn) => Step::Idle(conn),
                    None => {
                        // Callers queued while the breaker held creations
                        // back are served before this newcomer (with the
                        // pool full, nobody is).
                        match state.serve_waiters(self.config.max_size, now, &self.me) {
                            Some(retry_in) => Step::Refused(retry_in),
                            None if state.size < self.config.max_size => match state.admit(now) {
                                Admit::No(retry_in) => Step::Refused(retry_in),
                                admit => {
                                    state.size += 1;
                                    state.creating += 1;
                                    Step::Create {
                                        probe: admit == Admit::Probe,
                                    }
                                }
                            },
                            None => {
                                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                                Step::Wait(id, state.enqueue(id))
                            }
                        }
                    }
                }
            };
            if !expired.is_empty() {
                self.retire_all(expired);
            }
            match step {
                Step::Ready(mut conn) => {
                    // A cheap synchronous look before handing it out, outside
                    // the lock: the manager's code never runs under it.
                    if self.is_broken(&conn.raw) {
                        if self.config.leak_threshold.is_some() {
                            self.lock().checked_out.remove(&conn.id);
                        }
                        self.retire(conn, CloseReason::Broken);
                        self.free_slot();
                        continue;
                    }
                    conn.uses = conn.uses.saturating_add(1);
                    self.record_wait(now - started);
                    return Ok(Pooled::new(conn, Arc::clone(self)));
                }
                Step::Idle(conn) => {
                    // Held by a guard across the check: a caller dropped
                    // there (or a check that panics) gives the slot back.
                    let mut checking = Checking {
                        shared: self,
                        conn: Some(conn),
                    };
                    let healthy = match checking.conn.as_mut() {
                        Some(conn) if !self.is_broken(&conn.raw) => {
                            let limit = deadline.saturating_duration_since(Instant::now());
                            self.validate(conn, limit).await
                        }
                        _ => false,
                    };
                    let conn = checking.conn.take().expect("the connection being checked");
                    if !healthy {
                        self.retire(conn, CloseReason::Broken);
                        self.free_slot();
                        continue;
                    }
                    return Ok(self.checkout(conn, site, started));
                }
                Step::Create { probe } => {
                    let slot = SlotGuard::new(self, probe);
                    let conn = self.create_within(slot, deadline, started).await?;
                    return Ok(self.checkout(conn, site, started));
                }
                Step::Refused(retry_in) => {
                    return Err(PoolError::Unavailable {
                        last_error: self.lock().last_error.clone(),
                        retry_in,
                    });
                }
                Step::Wait(id, rx) => {
                    let mut guard = WaitGuard {
                        shared: self,
                        id,
                        done: false,
                    };
                    let outcome = tokio::time::timeout_at(deadline, rx).await;
                    guard.done = true;
                    match outcome {
                        Ok(Ok(mut handoff)) => match handoff.grant.take() {
                            Some(Grant::Conn(conn)) => {
                                return Ok(self.checkout(conn, site, started));
                            }
                            Some(Grant::Create { probe }) => {
                                self.lock().creating += 1;
                                let slot = SlotGuard::new(self, probe);
                                let conn = self.create_within(slot, deadline, started).await?;
                                return Ok(self.checkout(conn, site, started));
                            }
                            Some(Grant::Unavailable(retry_in)) => {
                                return Err(PoolError::Unavailable {
                                    last_error: self.lock().last_error.clone(),
                                    retry_in,
                                });
                            }
                            None => continue,
                        },
                        Ok(Err(_closed)) => return Err(PoolError::Closed),
                        Err(_elapsed) => {
                            self.lock().forget_waiter(id);
                            return Err(self.timed_out(started));
                        }
                    }
                }
            }
        }
    }

    /// An acquire's wait, in the status histogram and the metric.
    fn record_wait(&self, waited: Duration) {
        self.counters.wait(waited);
        self.metrics.wait.record(waited.as_secs_f64());
    }

    /// `Timeout`, counted, with the backend's last error.
    fn timed_out(&self, started: Instant) -> PoolError<M::Error> {
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        self.metrics.timeouts.increment(1);
        PoolError::Timeout {
            waited: started.elapsed(),
            last_error: self.lock().last_error.clone(),
        }
    }

    /// [`create_in_slot`](Self::create_in_slot) for a caller: bounded by
    /// the create timeout and by what is left of the acquire timeout.
    async fn create_within(
        self: &Arc<Self>,
        slot: SlotGuard<'_, M>,
        deadline: Instant,
        started: Instant,
    ) -> Result<Conn<M::Connection>, PoolError<M::Error>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.create_in_slot(slot, left).await {
            Err(PoolError::CreateTimeout(_)) if left < self.config.create_timeout => {
                Err(self.timed_out(started))
            }
            outcome => outcome,
        }
    }

    /// Creates a connection in `slot` (counted in `size` and `creating`),
    /// within `limit` (and the create timeout). On failure, or if the
    /// caller is cancelled, the slot guard gives the slot back.
    pub(super) async fn create_in_slot(
        self: &Arc<Self>,
        mut slot: SlotGuard<'_, M>,
        limit: Duration,
    ) -> Result<Conn<M::Connection>, PoolError<M::Error>> {
        let limit = limit.min(self.config.create_timeout);
        let outcome = tokio::time::timeout(limit, self.manager.create()).await;
        let now = Instant::now();
        match outcome {
            Ok(Ok(raw)) => {
                slot.armed = false;
                let mut state = self.lock();
                state.creating -= 1;
                state.created();
                // The breaker has closed: callers it held back in the queue
                // get the free slots now.
                state.serve_waiters(self.config.max_size, now, &self.me);
                drop(state);
                if slot.probe {
                    // The upkeep rests while a probe is in flight.
                    self.changed.notify_one();
                }
                self.counters.creates.fetch_add(1, Ordering::Relaxed);
                Ok(self.new_conn(raw, now))
            }
            Ok(Err(error)) => {
                let error = Arc::new(error);
                self.record_failure(Some(Arc::clone(&error)), now);
                tracing::warn!(pool = &*self.name, %error, "creating a connection failed");
                drop(slot);
                Err(PoolError::Backend(error))
            }
            Err(_elapsed) => {
                self.record_failure(None, now);
                tracing::warn!(pool = &*self.name, timeout = ?self.config.create_timeout, "creating a connection timed out");
                drop(slot);
                Err(PoolError::CreateTimeout(self.config.create_timeout))
            }
        }
    }

    fn record_failure(&self, error: Option<Arc<M::Error>>, now: Instant) -> Duration {
        self.counters
            .create_failures
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.create_errors.increment(1);
        self.lock().failed(
            error,
            self.config.breaker_threshold,
            self.config.retry_initial,
            self.config.retry_max,
            now,
        )
    }

    /// The manager's synchronous look at a connection. A panic in it is
    /// caught (it may run in `Pooled`'s `Drop`, and must not leak the
    /// connection's slot) and counts as broken.
    fn is_broken(&self, raw: &M::Connection) -> bool {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.manager.is_broken(raw))).unwrap_or_else(
            |_| {
                tracing::error!(
                    pool = &*self.name,
                    "the manager's is_broken panicked; the connection is closed"
                );
                true
            },
        )
    }

    /// Checks an idle connection within `limit` (and the validate
    /// timeout); a failure is logged and kept as the last backend error.
    async fn validate(&self, conn: &mut Conn<M::Connection>, limit: Duration) -> bool {
        let limit = limit.min(self.config.validate_timeout);
        match tokio::time::timeout(limit, self.manager.validate(&mut conn.raw)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(pool = &*self.name, %error, "an idle connection failed its check");
                self.lock().last_error = Some(Arc::new(error));
                false
            }
            Err(_elapsed) => {
                tracing::warn!(pool = &*self.name, timeout = ?limit, "checking an idle connection timed out");
                false
            }
        }
    }

    fn checkout(
        self: &Arc<Self>,
        mut conn: Conn<M::Connection>,
        site: &'static Location<'static>,
        started: Instant,
    ) -> Pooled<M> {
        conn.uses = conn.uses.saturating_add(1);
        let now = Instant::now();
        if self.config.leak_threshold.is_some() {
            self.lock().checked_out.insert(
                conn.id,
                Checkout {
                    site,
                    since: now,
                    warned: false,
                },
            );
        }
        self.record_wait(now - started);
        Pooled::new(conn, Arc::clone(self))
    }

    /// A connection comes back: to the next waiter, to the idle list, or
    /// retired (broken, too old, used up, or the pool is closed).
    pub(crate) fn release(&self, mut conn: Conn<M::Connection>, broken: bool) {
        let now = Instant::now();
        let reason = if broken || self.is_broken(&conn.raw) {
            Some(CloseReason::Broken)
        } else if now >= conn.expires {
            Some(CloseReason::Lifetime)
        } else if self.config.max_uses > 0 && conn.uses >= self.config.max_uses {
            Some(CloseReason::Uses)
        } else {
            None
        };
        let mut state = self.lock();
        state.checked_out.remove(&conn.id);
        let reason = if state.closed {
            Some(CloseReason::Drain)
        } else {
            reason
        };
        if let Some(reason) = reason {
            drop(state);
            self.retire(conn, reason);
            self.free_slot();
            return;
        }
        conn.idle_since = now;
        // Waiters get a clone of the pool's own weak handle: none is made
        // when nobody waits.
        if let Some(Grant::Conn(conn)) = state.hand_off(Grant::Conn(conn), &self.me) {
            state.idle.push_back(conn);
        }
    }

    /// A slot was freed (a connection retired, a creation failed): a waiter
    /// may create in it, else the pool shrinks.
    pub(crate) fn free_slot(&self) {
        let mut state = self.lock();
        let weak = &self.me;
        state.size -= 1;
        let refused = state.serve_waiters(self.config.max_size, Instant::now(), weak);
        // The breaker is open and no connection is left that could come
        // back to the waiters: they learn it now, not at their timeout.
        if let Some(retry_in) = refused
            && state.size == state.creating
        {
            while state.hand_off(Grant::Unavailable(retry_in), weak).is_none() {}
        }
        drop(state);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    fn retire(&self, conn: Conn<M::Connection>, reason: CloseReason) {
        self.counters.closed(reason);
        self.metrics.closes[reason as usize].increment(1);
        tracing::debug!(
            pool = &*self.name,
            id = conn.id,
            reason = reason.as_str(),
            "connection closed"
        );
        let raw = conn.raw;
        match (tokio::runtime::Handle::try_current(), self.me.upgrade()) {
            (Ok(runtime), Some(shared)) => {
                let timeout = self.config.destroy_timeout;
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(timeout, shared.manager.destroy(raw)).await;
                });
            }
            _ => drop(raw),
        }
    }

    fn retire_all(&self, conns: Vec<(Conn<M::Connection>, CloseReason)>) {
        for (conn, reason) in conns {
            self.retire(conn, reason);
            self.changed.notify_waiters();
        }
    }

    fn status(&self) -> PoolStatus {
        let state = self.lock();
        let idle = state.idle.len();
        let status = PoolStatus {
            name: self.name.to_string(),
            max_size: self.config.max_size,
            size: state.size,
            idle,
            in_use: state.size.saturating_sub(idle + state.creating),
            creating: state.creating,
            // A waiter that gives up takes itself out of the queue at once.
            waiters: state.waiters.len(),
            creates: self.counters.creates.load(Ordering::Relaxed),
            create_failures: self.counters.create_failures.load(Ordering::Relaxed),
            timeouts: self.counters.timeouts.load(Ordering::Relaxed),
            closes: self.counters.closes(),
            wait: self.counters.wait_summary(),
            breaker_open: state.is_open(Instant::now()),
            last_error: state.last_error.as_ref().map(|e| e.to_string()),
            closed: state.closed,
        };
        drop(state);
        self.metrics.size.set(status.size as f64);
        self.metrics.idle.set(status.idle as f64);
        self.metrics.in_use.set(status.in_use as f64);
        self.metrics.waiters.set(status.waiters as f64);
        status
    }

    async fn drain(self: &Arc<Self>, deadline: Duration) -> crate::DrainReport {
        let until = Instant::now() + deadline;
        let (idle, waiters) = {
            let mut state = self.lock();
            state.closed = true;
            let idle: Vec<_> = state.idle.drain(..).collect();
            state.size -= idle.len();
            (idle, std::mem::take(&mut state.waiters))
        };
        // Dropping the senders wakes every waiter with `Closed`.
        drop(waiters);
        let destroyed_idle = idle.len();
        let destroys = idle.into_iter().map(|conn| {
            self.counters.closed(CloseReason::Drain);
            self.metrics.closes[CloseReason::Drain as usize].increment(1);
            let timeout = self.config.destroy_timeout;
            async move {
                let _ = tokio::time::timeout(timeout, self.manager.destroy(conn.raw)).await;
            }
        });
        futures_util::future::join_all(destroys).await;
        loop {
            let notified = self.changed.notified();
            let left = self.lock().size;
            if left == 0 || Instant::now() >= until {
                break;
            }
            let _ = tokio::time::timeout_at(until, notified).await;
        }
        if let Some(task) = self.task.lock().expect("pool task lock").take() {
            task.abort();
        }
        let still_checked_out = self.lock().size;
        tracing::info!(
            pool = &*self.name,
            destroyed_idle,
            still_checked_out,
            "pool drained"
        );
        crate::DrainReport {
            destroyed_idle,
            still_checked_out,
        }
    }
}

/// Gives a creation slot back if the creation fails, panics or its caller
/// is cancelled; made as soon as the slot is counted, before any `.await`.
pub(super) struct SlotGuard<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    armed: bool,
    /// This creation is the breaker's probe.
    probe: bool,
}

impl<'a, M: Manager> SlotGuard<'a, M> {
    pub(super) fn new(shared: &'a Arc<Shared<M>>, probe: bool) -> Self {
        Self {
            shared,
            armed: true,
            probe,
        }
    }
}

impl<M: Manager> Drop for SlotGuard<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.lock();
            state.creating -= 1;
            if self.probe {
                // A failed or cancelled probe must not leave the breaker
                // half-open; another one may go.
                state.probing = false;
            }
            drop(state);
            self.shared.free_slot();
        }
    }
}

/// An idle connection being checked. If the caller is dropped during the
/// check, or the check panics, the connection is closed (its state is
/// unknown: a check may be half-way through a round trip) and its slot
/// given back.
struct Checking<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    conn: Option<Conn<M::Connection>>,
}

impl<M: Manager> Drop for Checking<'_, M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let reason = if std::thread::panicking() {
                CloseReason::Broken
            } else {
                CloseReason::Cancelled
            };
            self.shared.retire(conn, reason);
            self.shared.free_slot();
        }
    }
}

/// Takes a cancelled waiter out of the queue.
struct WaitGuard<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    id: u64,
    done: bool,
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().forget_waiter(self.id);
        }
    }
}
