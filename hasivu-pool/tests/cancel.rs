//! Every `.await` in `get` is a cancellation point: a caller dropped at any
//! of them (a client that disconnects, a tower timeout) leaves no slot,
//! probe or connection behind. Time runs on tokio's paused clock.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use hasivu_pool::{Manager, Pool, PoolConfig, PoolError};

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

/// Connections are numbers; checks take `check_ms`, creations fail while
/// `failing`.
#[derive(Default)]
struct Slow {
    next: AtomicU32,
    attempts: AtomicU32,
    check_ms: AtomicU64,
    checks: AtomicU32,
    failing: AtomicBool,
    hang: AtomicBool,
}

impl Manager for Slow {
    type Connection = u32;
    type Error = Refused;

    async fn create(&self) -> Result<u32, Refused> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        Ok(self.next.fetch_add(1, Ordering::SeqCst))
    }

    async fn validate(&self, _conn: &mut u32) -> Result<(), Refused> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let ms = self.check_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }
}

fn pool(name: &str, config: PoolConfig) -> (Pool<Arc<Slow>>, Arc<Slow>) {
    let manager = Arc::new(Slow::default());
    let pool = Pool::builder(Arc::clone(&manager))
        .name(name)
        .config(config)
        .build();
    (pool, manager)
}

fn quiet() -> PoolConfig {
    PoolConfig::default().min_idle(0).leak_threshold(None)
}

#[tokio::test(start_paused = true)]
async fn ten_requests_cancelled_while_their_connection_is_checked_leave_the_pool_serving() {
    let (pool, manager) = pool(
        "cancelled-checks",
        quiet()
            .max_size(2)
            .validate_after(Duration::ZERO)
            .acquire_timeout(Duration::from_secs(5)),
    );
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    drop((a, b));
    manager.check_ms.store(300, Ordering::SeqCst);
    // Ten requests whose client goes away (or whose tower timeout fires)
    // after 20 ms, while the idle connection they took is being checked.
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_millis(20), pool.get()).await;
    }
    let status = pool.status();
    assert_eq!(
        status.in_use, 0,
        "nothing is checked out, so nothing may count as in use: {status:?}"
    );
    assert!(status.size <= 2, "{status:?}");
    assert!(
        status.closes.cancelled >= 2,
        "connections whose check was cut short are closed: {status:?}"
    );
    // The pool still serves: a caller who waits out the 300 ms check gets
    // a connection instead of a timeout.
    let conn = pool.get().await;
    assert!(conn.is_ok(), "the pool serves again: {conn:?}");
    drop(conn);
    assert!(manager.checks.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(start_paused = true)]
async fn drain_is_not_held_up_by_a_cancelled_check() {
    let (pool, manager) = pool(
        "drain-after-cancelled-check",
        quiet().max_size(2).validate_after(Duration::ZERO),
    );
    drop(pool.get().await.unwrap());
    manager.check_ms.store(300, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_millis(20), pool.get()).await;
    let started = tokio::time::Instant::now();
    let report = pool.drain(Duration::from_secs(10)).await;
    assert_eq!(
        report.still_checked_out,
        0,
        "no connection is out, drain must not wait for one: {report:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_check_frees_its_slot() {
    struct Panicky;
    impl Manager for Panicky {
        type Connection = u32;
        type Error = Refused;
        async fn create(&self) -> Result<u32, Refused> {
            Ok(1)
        }
        async fn validate(&self, _conn: &mut u32) -> Result<(), Refused> {
            panic!("a check that panics");
        }
    }
    let pool = Pool::builder(Panicky)
        .config(
            quiet()
                .max_size(1)
                .validate_after(Duration::ZERO)
                .acquire_timeout(Duration::from_secs(1)),
        )
        .build();
    drop(pool.get().await.unwrap());
    let panicked = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|_| ()) }
    })
    .await;
    assert!(panicked.is_err_and(|e| e.is_panic()));
    let status = pool.status();
    assert_eq!(status.size, 0, "the slot came back: {status:?}");
    assert_eq!(
        (status.closes.broken, status.closes.cancelled),
        (1, 0),
        "{status:?}"
    );
    assert_eq!(status.in_use, 0, "{status:?}");
}

/// Counts, per pool name, how often the pool's gauges are refreshed: the
/// background upkeep refreshes them once a round.
#[derive(Default)]
struct Rounds(Mutex<HashMap<String, Arc<AtomicU64>>>);

struct RoundGauge(Arc<AtomicU64>);

impl metrics::GaugeFn for RoundGauge {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl metrics::Recorder for &'static Rounds {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        if key.name() != "hasivu_pool_size" {
            return metrics::Gauge::noop();
        }
        let pool = key
            .labels()
            .find(|l| l.key() == "pool")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let count = Arc::clone(self.0.lock().unwrap().entry(pool).or_default());
        metrics::Gauge::from_arc(Arc::new(RoundGauge(count)))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The number of upkeep rounds of the pool called `name` so far.
fn rounds(name: &str) -> u64 {
    static ROUNDS: OnceLock<&'static Rounds> = OnceLock::new();
    let rounds = ROUNDS.get_or_init(|| {
        let rounds: &'static Rounds = Box::leak(Box::default());
        metrics::set_global_recorder(rounds).expect("the only recorder of this test binary");
        rounds
    });
    let count = rounds.0.lock().unwrap().get(name).cloned();
    count.map_or(0, |c| c.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_probe_handed_to_a_caller_who_left_is_not_lost() {
    const NAME: &str = "lost-probe";
    rounds(NAME); // the recorder is in place before the pool is built
    let retry = Duration::from_millis(100);
    let (pool, manager) = pool(
        NAME,
        PoolConfig::default()
            .max_size(2)
            .min_idle(1)
            .leak_threshold(None)
            .breaker_threshold(1)
            .retry_initial(retry)
            .retry_max(retry)
            .acquire_timeout(Duration::from_secs(30)),
    );
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    // W1 waits in a task of its own; W2 is a request the test holds (and
    // will drop, as a server drops the handler of a client that left).
    let w1 = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    let mut w2 = Box::pin(pool.get());
    assert!(poll_once(&mut w2).await.is_pending(), "W2 queues");
    // B breaks while the backend is down: W1 gets its slot, fails, and the
    // breaker opens; W2 keeps waiting.
    manager.failing.store(true, Ordering::SeqCst);
    b.mark_broken();
    drop(b);
    let first = w1.await.unwrap();
    assert!(matches!(first, Err(PoolError::Backend(_))), "{first:?}");
    assert!(pool.status().breaker_open);
    // The probe falls due and goes to W2, who has gone before reading it.
    tokio::time::sleep(retry + Duration::from_millis(10)).await;
    assert!(!pool.status().breaker_open);
    manager.failing.store(false, Ordering::SeqCst);
    let attempts = manager.attempts.load(Ordering::SeqCst);
    drop(w2);
    // Over the next second the pool makes a connection again (the
    // background refill to `min_idle` probes) and its upkeep rests.
    let before = rounds(NAME);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let upkeep_rounds = rounds(NAME) - before;
    let tried = manager.attempts.load(Ordering::SeqCst) - attempts;
    let status = pool.status();
    assert!(
        tried >= 1 && status.idle == 1,
        "the pool creates again after the probe's taker left (tried {tried} times): {status:?}"
    );
    assert!(
        upkeep_rounds < 20,
        "the upkeep is not spinning: {upkeep_rounds} rounds in a second"
    );
    let conn = pool.get().await;
    assert!(conn.is_ok(), "{conn:?}");
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn the_upkeep_rests_while_a_probe_is_in_flight() {
    const NAME: &str = "probe-in-flight";
    rounds(NAME);
    let (pool, manager) = pool(
        NAME,
        quiet()
            .max_size(3)
            .breaker_threshold(1)
            .retry_initial(Duration::from_millis(100))
            .retry_max(Duration::from_millis(100))
            .create_timeout(Duration::from_secs(20))
            .acquire_timeout(Duration::from_secs(30)),
    );
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    let mut c = pool.get().await.unwrap();
    let waiter = || {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    let mut waiters = Vec::new();
    for _ in 0..3 {
        waiters.push(waiter());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The first waiter gets B's slot and fails: the breaker opens. C
    // breaks too: two slots are free, and two callers wait.
    manager.failing.store(true, Ordering::SeqCst);
    b.mark_broken();
    drop(b);
    let first = waiters.remove(0).await.unwrap();
    assert!(matches!(first, Err(PoolError::Backend(_))), "{first:?}");
    c.mark_broken();
    drop(c);
    // The probe goes to the second waiter, whose creation hangs for up to
    // 20 s; the third waits behind it, with a slot free.
    manager.hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(pool.status().creating, 1, "the probe is in flight");
    let before = rounds(NAME);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let upkeep_rounds = rounds(NAME) - before;
    assert!(
        upkeep_rounds < 20,
        "the upkeep waits for the probe instead of polling: {upkeep_rounds} rounds in 10 s"
    );
    for waiter in waiters {
        waiter.abort();
    }
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn cancelling_at_every_point_of_get_leaks_nothing() {
    // Each cancellation point in turn: the check of an idle connection, a
    // creation, the wait for a returned connection, and a creation grant
    // in transit to a waiter. After each, the pool holds nothing for the
    // caller who left.
    let (pool, manager) = pool(
        "every-point",
        quiet()
            .max_size(1)
            .validate_after(Duration::ZERO)
            .acquire_timeout(Duration::from_secs(5)),
    );
    let check_in_use = |what: &str| {
        let status = pool.status();
        assert_eq!(status.in_use, 0, "after a cancelled {what}: {status:?}");
        assert_eq!(status.waiters, 0, "after a cancelled {what}: {status:?}");
    };
    // A check.
    drop(pool.get().await.unwrap());
    manager.check_ms.store(50, Ordering::SeqCst);
    let mut get = Box::pin(pool.get());
    assert!(poll_once(&mut get).await.is_pending());
    drop(get);
    check_in_use("check");
    manager.check_ms.store(0, Ordering::SeqCst);
    // A wait.
    let held = pool.get().await.unwrap();
    let mut get = Box::pin(pool.get());
    assert!(poll_once(&mut get).await.is_pending());
    assert_eq!(pool.status().waiters, 1);
    drop(get);
    drop(held);
    check_in_use("wait");
    // A wait, then a connection handed to the waiter who left before
    // reading it.
    let held = pool.get().await.unwrap();
    let mut get = Box::pin(pool.get());
    assert!(poll_once(&mut get).await.is_pending());
    drop(held);
    drop(get);
    check_in_use("handoff");
    assert_eq!(pool.status().idle, 1, "the connection went back");
    // A creation grant in transit: the held connection breaks while a
    // caller waits; the caller leaves before creating.
    let mut held = pool.get().await.unwrap();
    let mut get = Box::pin(pool.get());
    assert!(poll_once(&mut get).await.is_pending());
    held.mark_broken();
    drop(held);
    drop(get);
    check_in_use("grant");
    assert_eq!(pool.status().size, 0, "the slot went back");
    // Still serving, at full size.
    let all = futures_util::future::join_all((0..1).map(|_| pool.get())).await;
    assert!(all.iter().all(Result::is_ok));
    drop(all);
    let conn = tokio::time::timeout(Duration::from_secs(1), pool.get()).await;
    assert!(matches!(conn, Ok(Ok(_))));
}

/// Polls `future` once, without waiting.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

#[tokio::test(start_paused = true)]
async fn connections_idle_for_less_than_validate_after_are_not_checked() {
    let (pool, manager) = pool(
        "validate-after",
        quiet().validate_after(Duration::from_millis(100)),
    );
    drop(pool.get().await.unwrap());
    tokio::time::sleep(Duration::from_millis(99)).await;
    drop(pool.get().await.unwrap());
    assert_eq!(manager.checks.load(Ordering::SeqCst), 0, "fresh enough");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(pool.get().await.unwrap());
    assert_eq!(
        manager.checks.load(Ordering::SeqCst),
        1,
        "idle for exactly validate_after: checked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkout_wakes_the_upkeep_only_when_it_takes_the_pool_below_min_idle() {
    const NAME: &str = "min-idle-wake";
    rounds(NAME);
    let (pool, _) = pool(
        NAME,
        PoolConfig::default()
            .max_size(3)
            .min_idle(1)
            .leak_threshold(None)
            .reap_interval(Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let idle = || pool.status().idle;
    assert_eq!(idle(), 1, "filled at start");
    // Taking the only idle one wakes the upkeep, which refills.
    let start = rounds(NAME);
    let a = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let woken = rounds(NAME) - start;
    assert_eq!(woken, 1, "one round to refill");
    assert_eq!(idle(), 1, "refilled");
    // Two idle; taking one leaves min_idle: no wake-up.
    drop(a);
    let start = rounds(NAME);
    let b = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(rounds(NAME) - start, 0, "min_idle still met");
    // Full and nothing idle: a caller who has to wait wakes nobody either.
    let c = pool.get().await.unwrap();
    let d = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(idle(), 0);
    let start = rounds(NAME);
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(rounds(NAME) - start, 0, "nothing to refill at max_size");
    drop((b, c, d));
    assert!(waiter.await.unwrap().is_ok());
}
