//! The pool's rules with a counting manager: limits, fairness,
//! cancellation, retirement, refilling, backoff, the breaker and draining.
//! Time-dependent rules run on tokio's paused clock.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hasivu_pool::{Manager, Pool, PoolConfig, PoolError};

#[derive(Debug, thiserror::Error)]
#[error("connection refused (attempt {0})")]
struct Refused(u32);

/// Connections are numbers; counts what is alive and how often creation
/// was tried.
#[derive(Default)]
struct Counting {
    next: AtomicU32,
    live: AtomicUsize,
    most_live: AtomicUsize,
    attempts: AtomicU32,
    failing: AtomicBool,
    create_delay_ms: AtomicU32,
    destroyed: AtomicUsize,
}

impl Manager for Counting {
    type Connection = u32;
    type Error = Refused;

    async fn create(&self) -> Result<u32, Refused> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = self.create_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Refused(attempt));
        }
        let live = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_live.fetch_max(live, Ordering::SeqCst);
        Ok(self.next.fetch_add(1, Ordering::SeqCst))
    }

    async fn validate(&self, _conn: &mut u32) -> Result<(), Refused> {
        Ok(())
    }

    async fn destroy(&self, _conn: u32) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.destroyed.fetch_add(1, Ordering::SeqCst);
    }
}

fn pool(config: PoolConfig) -> (Pool<Arc<Counting>>, Arc<Counting>) {
    let manager = Arc::new(Counting::default());
    let pool = Pool::builder(Arc::clone(&manager))
        .name("test")
        .config(config)
        .build();
    (pool, manager)
}

fn quiet() -> PoolConfig {
    PoolConfig::default().min_idle(0).leak_threshold(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_acquirers_never_exceed_the_maximum_and_all_are_served() {
    let (pool, manager) = pool(quiet().max_size(8).acquire_timeout(Duration::from_secs(30)));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let conn = pool.get().await.expect("served");
                tokio::task::yield_now().await;
                drop(conn);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(manager.most_live.load(Ordering::SeqCst) <= 8);
    let status = pool.status();
    assert!(status.size <= 8);
    assert_eq!(status.in_use, 0);
    assert_eq!(status.wait.count, 1000);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_in_first_out() {
    let (pool, _) = pool(quiet().max_size(1));
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let pool = pool.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(conn);
        }));
        // Let each one queue before the next.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_acquire_leaks_nothing() {
    let (pool, manager) = pool(quiet().max_size(1));
    let held = pool.get().await.unwrap();
    // A waiter that gives up before the connection comes back.
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    waiting.abort();
    let _ = waiting.await;
    drop(held);
    // The connection is free for the next caller at once.
    let again = tokio::time::timeout(Duration::from_millis(10), pool.get()).await;
    assert!(again.is_ok(), "the returned connection was not lost");
    drop(again);
    // A creation cancelled half-way gives its slot back.
    manager.create_delay_ms.store(50, Ordering::SeqCst);
    let (pool, manager) = self::pool(quiet().max_size(1));
    manager.create_delay_ms.store(50, Ordering::SeqCst);
    let creating = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    creating.abort();
    let _ = creating.await;
    assert_eq!(pool.status().size, 0);
    manager.create_delay_ms.store(0, Ordering::SeqCst);
    assert!(pool.get().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_grant_to_a_waiter_that_left_goes_to_the_next() {
    let (pool, _) = pool(quiet().max_size(1));
    let held = pool.get().await.unwrap();
    let gone = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let next = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| *c) })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    gone.abort();
    let _ = gone.await;
    drop(held);
    assert_eq!(next.await.unwrap().unwrap(), 0);
    assert_eq!(pool.status().in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn connections_are_recycled_after_max_uses() {
    let (pool, manager) = pool(quiet().max_size(1).max_uses(3));
    for _ in 0..3 {
        assert_eq!(*pool.get().await.unwrap(), 0);
    }
    assert_eq!(*pool.get().await.unwrap(), 1, "a fresh one after 3 uses");
    tokio::task::yield_now().await;
    assert_eq!(manager.destroyed.load(Ordering::SeqCst), 1);
    assert_eq!(pool.status().closes.uses, 1);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_and_lifetime_are_reaped_but_min_idle_is_kept() {
    let (pool, manager) = pool(
        PoolConfig::default()
            .max_size(4)
            .min_idle(1)
            .idle_timeout(Duration::from_secs(60))
            .max_lifetime(Duration::from_secs(600))
            .lifetime_jitter(0.0)
            .reap_interval(Duration::from_secs(10))
            .leak_threshold(None),
    );
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    drop(held);
    assert_eq!(pool.status().idle, 4);
    tokio::time::sleep(Duration::from_secs(75)).await;
    let status = pool.status();
    assert_eq!(status.idle, 1, "idle beyond min_idle retired: {status:?}");
    assert_eq!(status.closes.idle, 3);
    // Past the lifetime even the min_idle one goes, and is replaced.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let status = pool.status();
    assert_eq!(status.closes.lifetime, 1, "{status:?}");
    assert_eq!(status.idle, 1, "refilled to min_idle");
    assert!(manager.next.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_filled_in_the_background() {
    let (pool, _) = pool(
        PoolConfig::default()
            .max_size(5)
            .min_idle(3)
            .leak_threshold(None),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.status().idle, 3);
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let status = pool.status();
    assert_eq!(status.idle, 3, "refilled while two are in use: {status:?}");
    assert_eq!(status.size, 5);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn with_the_backend_down_callers_get_its_error_fast_and_the_breaker_opens() {
    let (pool, manager) = pool(
        quiet()
            .max_size(4)
            .breaker_threshold(3)
            .retry_initial(Duration::from_millis(200)),
    );
    manager.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        match pool.get().await {
            Err(PoolError::Backend(error)) => {
                assert!(error.to_string().contains("connection refused"));
            }
            other => panic!("expected the backend's error: {other:?}"),
        }
    }
    // Open: refused at once, with the last error, without calling create.
    let attempts = manager.attempts.load(Ordering::SeqCst);
    match pool.get().await {
        Err(PoolError::Unavailable {
            last_error: Some(error),
            retry_in,
        }) => {
            assert!(error.to_string().contains("connection refused"));
            assert!(retry_in <= Duration::from_millis(800));
        }
        other => panic!("expected the open breaker: {other:?}"),
    }
    assert_eq!(manager.attempts.load(Ordering::SeqCst), attempts);
    assert!(pool.status().breaker_open);
    // The backend comes back: the next probe closes the breaker.
    manager.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pool.get().await.is_ok());
    assert!(!pool.status().breaker_open);
}

#[tokio::test(start_paused = true)]
async fn background_retries_back_off_exponentially() {
    let (pool, manager) = pool(
        PoolConfig::default()
            .max_size(2)
            .min_idle(1)
            .breaker_threshold(0)
            .retry_initial(Duration::from_millis(200))
            .retry_max(Duration::from_secs(5))
            .leak_threshold(None),
    );
    manager.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // 200 ms doubling (shortened by up to 20 % jitter) to 5 s: about 8
    // attempts in 10 s, not hundreds.
    let attempts = manager.attempts.load(Ordering::SeqCst);
    assert!((5..=14).contains(&attempts), "{attempts}");
    manager.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(pool.status().idle, 1, "healed");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_pool_times_out_naming_the_last_backend_error() {
    let (pool, _) = pool(
        quiet()
            .max_size(1)
            .acquire_timeout(Duration::from_millis(100)),
    );
    let _held = pool.get().await.unwrap();
    match pool.get().await {
        Err(PoolError::Timeout { waited, last_error }) => {
            assert!(waited >= Duration::from_millis(100));
            assert!(last_error.is_none(), "a full pool, not a dead backend");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.status().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn drain_refuses_wakes_waits_and_destroys() {
    let (pool, manager) = pool(quiet().max_size(2));
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(b); // handed straight to the waiter, who drops it: idle
    assert!(waiter.await.unwrap().is_ok());
    assert_eq!(pool.status().idle, 1);
    let waiter = {
        let pool = pool.clone();
        let held = pool.get().await.unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(|_| ()) }
        });
        (held, waiting)
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let draining = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Waiters are woken with `Closed`, new acquires refused.
    let (held, waiting) = waiter;
    assert!(matches!(waiting.await.unwrap(), Err(PoolError::Closed)));
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    // Checked-out connections are awaited, then destroyed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!draining.is_finished());
    drop(held);
    drop(a);
    let report = draining.await.unwrap();
    assert_eq!(report.destroyed_idle, 0);
    assert_eq!(report.still_checked_out, 0);
    tokio::task::yield_now().await;
    assert_eq!(manager.live.load(Ordering::SeqCst), 0);
    assert_eq!(pool.status().closes.drain, 2);

    // Idle connections are destroyed at once.
    let (pool, manager) = self::pool(quiet().max_size(1));
    drop(pool.get().await.unwrap());
    let started = tokio::time::Instant::now();
    let report = pool.drain(Duration::from_secs(1)).await;
    assert_eq!(report.destroyed_idle, 1);
    assert_eq!(report.still_checked_out, 0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing to wait for"
    );
    assert_eq!(pool.status().size, 0);
    assert_eq!(manager.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_at_its_deadline() {
    let (pool, _) = pool(quiet().max_size(1));
    let held = pool.get().await.unwrap();
    let report = pool.drain(Duration::from_secs(2)).await;
    assert_eq!(report.still_checked_out, 1);
    drop(held);
    assert_eq!(pool.status().size, 0, "destroyed once it came back");
}

#[tokio::test(start_paused = true)]
async fn broken_connections_are_not_reused() {
    let (pool, manager) = pool(quiet().max_size(1));
    let mut conn = pool.get().await.unwrap();
    conn.mark_broken();
    drop(conn);
    assert_eq!(*pool.get().await.unwrap(), 1);
    tokio::task::yield_now().await;
    assert_eq!(manager.destroyed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_backend_does_not_starve_another_pool() {
    let pools = hasivu_pool::PoolManager::new()
        .kind("database", quiet().max_size(2))
        .kind("redis", quiet().max_size(2).breaker_threshold(2));
    let redis = Arc::new(Counting::default());
    redis.failing.store(true, Ordering::SeqCst);
    let redis_pool = pools.pool("redis", "cache", Arc::clone(&redis)).unwrap();
    let db_pool = pools
        .pool("database", "hasivu", Arc::new(Counting::default()))
        .unwrap();
    for _ in 0..5 {
        assert!(redis_pool.get().await.is_err());
    }
    assert!(redis_pool.status().breaker_open);
    // The database pool is its own: served at once.
    let conn = tokio::time::timeout(Duration::from_millis(1), db_pool.get()).await;
    assert!(conn.unwrap().is_ok());
    let status = pools.status();
    assert_eq!(status.len(), 2);
    assert_eq!(status[0].kind, "database");
    assert_eq!(status[1].status.create_failures, 2);
    assert!(pools.get::<Arc<Counting>>("redis", "cache").is_some());
    let reports = pools.drain(Duration::from_secs(1)).await;
    assert_eq!(reports.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_connection_held_too_long_is_reported_with_its_acquire_site() {
    let (pool, _) = pool(
        PoolConfig::default()
            .min_idle(0)
            .reap_interval(Duration::from_secs(1))
            .leak_threshold(Some(Duration::from_secs(5))),
    );
    let held = pool.get().await.unwrap();
    let logs = tracing_capture::capture(async {
        tokio::time::sleep(Duration::from_secs(7)).await;
    })
    .await;
    assert!(
        logs.contains("connection held longer than the leak threshold"),
        "{logs}"
    );
    assert!(
        logs.contains("tests/pool.rs"),
        "names the acquire site: {logs}"
    );
    drop(held);
}

/// Collects the tracing output of a future as text.
mod tracing_capture {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(super) async fn capture(future: impl std::future::Future<Output = ()>) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let dispatch = tracing::Dispatch::new(subscriber);
        let _guard = tracing::dispatcher::set_default(&dispatch);
        future.await;
        String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_slot_the_breaker_frees_and_learns_of_an_outage_at_once() {
    let (pool, manager) = pool(
        quiet()
            .max_size(2)
            .breaker_threshold(1)
            .retry_initial(Duration::from_millis(50))
            .acquire_timeout(Duration::from_secs(2)),
    );
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    let waiter = |pool: &Pool<Arc<Counting>>| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            (pool.get().await.map(|c| *c), started.elapsed())
        })
    };
    let w1 = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let w2 = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(1)).await;
    manager.failing.store(true, Ordering::SeqCst);
    b.mark_broken();
    drop(b);
    // W1 got B's slot, tried, and got the backend's error.
    let (first, _) = w1.await.unwrap();
    assert!(matches!(first, Err(PoolError::Backend(_))), "{first:?}");
    // The backend recovers; once the breaker lets a probe through, W2 is
    // given the free slot instead of waiting out its timeout.
    manager.failing.store(false, Ordering::SeqCst);
    let (second, waited) = w2.await.unwrap();
    assert!(second.is_ok(), "{second:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    drop(a);

    // With nothing left that could come back, waiters fail at once.
    let (pool, manager) = self::pool(
        quiet()
            .max_size(1)
            .breaker_threshold(1)
            .retry_initial(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30)),
    );
    let mut only = pool.get().await.unwrap();
    let w = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(1)).await;
    manager.failing.store(true, Ordering::SeqCst);
    only.mark_broken();
    drop(only);
    // The slot goes to W, whose creation fails and opens the breaker.
    let (outcome, waited) = w.await.unwrap();
    assert!(matches!(outcome, Err(PoolError::Backend(_))), "{outcome:?}");
    assert!(waited < Duration::from_secs(1));
}

/// A manager whose check hangs, or whose connections report broken.
struct Stuck {
    hang: bool,
    broken: AtomicBool,
}

impl Manager for Stuck {
    type Connection = u32;
    type Error = Refused;

    async fn create(&self) -> Result<u32, Refused> {
        Ok(7)
    }

    async fn validate(&self, _conn: &mut u32) -> Result<(), Refused> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(Refused(99))
    }

    fn is_broken(&self, _conn: &u32) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn the_acquire_timeout_bounds_checks_and_check_errors_are_kept() {
    let config = quiet()
        .max_size(4)
        .validate_after(Duration::ZERO)
        .validate_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(1));
    let hanging = Pool::builder(Stuck {
        hang: true,
        broken: AtomicBool::new(false),
    })
    .config(config.clone())
    .build();
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| hanging.get())).await;
    drop(held);
    let started = tokio::time::Instant::now();
    let outcome = hanging.get().await;
    assert!(
        matches!(outcome, Err(PoolError::Timeout { .. })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() <= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );

    let failing = Pool::builder(Stuck {
        hang: false,
        broken: AtomicBool::new(false),
    })
    .config(config)
    .build();
    drop(failing.get().await.unwrap());
    // The idle one fails its check; a new one is made and handed out.
    assert!(failing.get().await.is_ok());
    assert_eq!(failing.status().closes.broken, 1);
    assert!(
        failing
            .status()
            .last_error
            .is_some_and(|e| e.contains("attempt 99")),
        "the check's error is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn broken_idle_connections_are_never_handed_out() {
    let pool = Pool::builder(Arc::new(Stuck {
        hang: false,
        broken: AtomicBool::new(false),
    }))
    .config(quiet().max_size(1))
    .build();
    drop(pool.get().await.unwrap());
    pool.manager().broken.store(true, Ordering::SeqCst);
    // Idle for less than `validate_after`, but broken: replaced by a new
    // one (which, still broken, is retired again when it comes back).
    drop(pool.get().await.unwrap());
    let status = pool.status();
    assert_eq!(status.creates, 2);
    assert_eq!(status.closes.broken, 2);
}

/// Connections are numbers; `is_broken` panics while `panicking` is set.
#[derive(Default)]
struct PanickyCheck {
    next: AtomicU32,
    panicking: AtomicBool,
}

impl Manager for PanickyCheck {
    type Connection = u32;
    type Error = Refused;

    async fn create(&self) -> Result<u32, Refused> {
        Ok(self.next.fetch_add(1, Ordering::SeqCst))
    }

    async fn validate(&self, _conn: &mut u32) -> Result<(), Refused> {
        Ok(())
    }

    fn is_broken(&self, _conn: &u32) -> bool {
        assert!(
            !self.panicking.load(Ordering::SeqCst),
            "is_broken panics (a bug in a manager)"
        );
        false
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_is_broken_retires_the_connection_instead_of_leaking_it() {
    // Fresh idle connections, and ones due for a check (which would pass).
    for validate_after in [Duration::from_secs(60), Duration::ZERO] {
        let pool = Pool::builder(Arc::new(PanickyCheck::default()))
            .config(
                quiet()
                    .max_size(1)
                    .validate_after(validate_after)
                    .acquire_timeout(Duration::from_secs(1)),
            )
            .build();
        drop(pool.get().await.unwrap());
        pool.manager().panicking.store(true, Ordering::SeqCst);
        // On checkout: the idle connection counts as broken and a new one
        // is made; on return: the connection is retired.
        let got = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(|c| *c) }
        })
        .await;
        assert!(
            matches!(got, Ok(Ok(1))),
            "a fresh connection instead of the panic ({validate_after:?}): {got:?}"
        );
        let status = pool.status();
        assert_eq!(status.size, 0, "both retired: {status:?}");
        assert_eq!(status.closes.broken, 2, "{status:?}");
        pool.manager().panicking.store(false, Ordering::SeqCst);
        assert_eq!(*pool.get().await.unwrap(), 2, "the pool serves on");
    }
}

#[tokio::test(start_paused = true)]
async fn queued_waiters_get_the_probe_before_a_newcomer() {
    let manager = Arc::new(Counting::default());
    // Built outside a runtime, the pool has no background task: who gets
    // the probe is decided by the callers' order alone.
    let pool = std::thread::spawn({
        let manager = Arc::clone(&manager);
        move || {
            Pool::builder(manager)
                .config(
                    quiet()
                        .max_size(2)
                        .breaker_threshold(1)
                        .retry_initial(Duration::from_millis(100))
                        .retry_max(Duration::from_millis(100))
                        .acquire_timeout(Duration::from_secs(10)),
                )
                .build()
        }
    })
    .join()
    .unwrap();
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    let waiter = |pool: &Pool<Arc<Counting>>| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| *c) })
    };
    let order = Arc::new(Mutex::new(Vec::new()));
    let w1 = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let w2 = tokio::spawn({
        let (pool, order) = (pool.clone(), Arc::clone(&order));
        async move {
            let conn = pool.get().await;
            order.lock().unwrap().push("w2");
            tokio::time::sleep(Duration::from_millis(5)).await;
            conn.map(|c| *c)
        }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    // W1 gets B's slot and fails: the breaker opens, W2 stays queued.
    manager.failing.store(true, Ordering::SeqCst);
    b.mark_broken();
    drop(b);
    assert!(matches!(w1.await.unwrap(), Err(PoolError::Backend(_))));
    manager.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The probe is due. A newcomer arrives before anyone else asks: the
    // probe goes to W2, who has waited longest; the newcomer queues
    // behind it.
    let newcomer = pool.get().await.map(|c| *c);
    order.lock().unwrap().push("newcomer");
    assert!(newcomer.is_ok(), "{newcomer:?}");
    assert!(w2.await.unwrap().is_ok());
    assert_eq!(
        *order.lock().unwrap(),
        ["w2", "newcomer"],
        "the waiter queued first is served first"
    );
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn wait_percentiles_count_timeouts_and_failures_too() {
    let (pool, manager) = pool(
        quiet()
            .max_size(1)
            .acquire_timeout(Duration::from_millis(100)),
    );
    let held = pool.get().await.unwrap();
    assert!(matches!(pool.get().await, Err(PoolError::Timeout { .. })));
    let wait = pool.status().wait;
    assert_eq!(wait.count, 2, "the timeout is counted: {wait:?}");
    assert!(
        wait.max >= Duration::from_millis(100),
        "the longest wait is the timeout's: {wait:?}"
    );
    assert!(wait.p99 >= Duration::from_millis(100), "{wait:?}");
    // A failed creation is an acquire that ended too.
    let mut held = held;
    held.mark_broken();
    drop(held);
    manager.failing.store(true, Ordering::SeqCst);
    assert!(matches!(pool.get().await, Err(PoolError::Backend(_))));
    assert_eq!(pool.status().wait.count, 3);
}

#[tokio::test(start_paused = true)]
async fn a_manager_type_mismatch_is_an_error_and_leaves_the_pool_manager_usable() {
    let pools = hasivu_pool::PoolManager::new();
    let counting = pools
        .pool("database", "main", Arc::new(Counting::default()))
        .unwrap();
    let mismatch = pools.pool("database", "main", Arc::new(PanickyCheck::default()));
    match mismatch {
        Err(hasivu_pool::PoolManagerError::ManagerMismatch {
            kind,
            key,
            requested,
        }) => {
            assert_eq!((kind.as_str(), key.as_str()), ("database", "main"));
            assert!(requested.contains("PanickyCheck"), "{requested}");
        }
        other => panic!("expected a mismatch: {other:?}"),
    }
    // Every later call still works, and the registered pool is untouched.
    assert_eq!(pools.status().len(), 1);
    let again = pools.get::<Arc<Counting>>("database", "main").unwrap();
    drop(again.get().await.unwrap());
    assert_eq!(counting.status().creates, 1);
    assert!(
        pools
            .pool("database", "main", Arc::new(Counting::default()))
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_reports_its_name_settings_and_status() {
    let (pool, _) = pool(quiet().max_size(3));
    assert_eq!(pool.name(), "test");
    assert_eq!(pool.config().max_size, 3);
    let conn = pool.get().await.unwrap();
    let debug = format!("{pool:?}");
    assert!(
        debug.starts_with("Pool") && debug.contains("in_use: 1"),
        "{debug}"
    );
    drop(conn);
}

#[tokio::test(start_paused = true)]
async fn lifetime_jitter_only_ever_shortens_a_lifetime_by_its_share() {
    // The pool's jitter draws from this thread's generator.
    fastrand::seed(7);
    let (pool, _) = pool(
        quiet()
            .max_size(20)
            .max_lifetime(Duration::from_secs(600))
            .lifetime_jitter(0.5)
            .reap_interval(Duration::from_secs(3600)),
    );
    let all: Vec<_> = futures_util::future::join_all((0..20).map(|_| pool.get())).await;
    drop(all);
    // Every connection lives at least half its lifetime.
    tokio::time::sleep(Duration::from_secs(290)).await;
    let again: Vec<_> = futures_util::future::join_all((0..20).map(|_| pool.get())).await;
    let status = pool.status();
    assert_eq!(status.closes.lifetime, 0, "{status:?}");
    assert_eq!(status.creates, 20, "all reused: {status:?}");
    drop(again);
    // And none lives longer than the whole of it.
    tokio::time::sleep(Duration::from_secs(311)).await;
    let again: Vec<_> = futures_util::future::join_all((0..20).map(|_| pool.get())).await;
    assert_eq!(pool.status().closes.lifetime, 20);
    drop(again);
}

#[tokio::test(start_paused = true)]
async fn a_connection_found_too_old_at_checkout_frees_its_slot() {
    let (pool, manager) = pool(
        quiet()
            .max_size(1)
            .max_lifetime(Duration::from_secs(10))
            .lifetime_jitter(0.0)
            .reap_interval(Duration::from_secs(3600)),
    );
    drop(pool.get().await.unwrap());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(*pool.get().await.unwrap(), 1, "a fresh one");
    let status = pool.status();
    assert_eq!(status.size, 1, "{status:?}");
    assert_eq!(status.closes.lifetime, 1, "{status:?}");
    tokio::task::yield_now().await;
    assert_eq!(manager.live.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_use_limit_a_connection_is_reused_indefinitely() {
    let (pool, _) = pool(quiet().max_size(1).max_uses(0));
    for _ in 0..5 {
        assert_eq!(*pool.get().await.unwrap(), 0);
    }
    assert_eq!(pool.status().closes.uses, 0);
}

#[tokio::test(start_paused = true)]
async fn the_acquire_timeout_cuts_a_slow_creation_short_and_says_so() {
    // The acquire timeout is the shorter: the caller's `Timeout`.
    let (pool, manager) = pool(
        quiet()
            .acquire_timeout(Duration::from_millis(100))
            .create_timeout(Duration::from_secs(5)),
    );
    manager.create_delay_ms.store(10_000, Ordering::SeqCst);
    let outcome = pool.get().await;
    assert!(
        matches!(outcome, Err(PoolError::Timeout { .. })),
        "{outcome:?}"
    );
    assert_eq!(pool.status().timeouts, 1);
    // The create timeout is the shorter, or equal: `CreateTimeout`.
    for create_ms in [100, 50] {
        let (pool, manager) = self::pool(
            quiet()
                .acquire_timeout(Duration::from_millis(100))
                .create_timeout(Duration::from_millis(create_ms)),
        );
        manager.create_delay_ms.store(10_000, Ordering::SeqCst);
        let outcome = pool.get().await;
        assert!(
            matches!(outcome, Err(PoolError::CreateTimeout(t)) if t == Duration::from_millis(create_ms)),
            "create timeout {create_ms} ms: {outcome:?}"
        );
        assert_eq!(pool.status().timeouts, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn status_counts_waiters_and_creations_apart_from_connections_in_use() {
    let (pool, manager) = pool(quiet().max_size(2));
    let held = pool.get().await.unwrap();
    manager.create_delay_ms.store(50, Ordering::SeqCst);
    let creating = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let status = pool.status();
    assert_eq!(
        (status.size, status.creating, status.in_use, status.idle),
        (2, 1, 1, 0),
        "{status:?}"
    );
    assert_eq!(status.waiters, 2, "{status:?}");
    drop(held);
    assert!(creating.await.unwrap().is_ok());
    for waiter in waiting {
        assert!(waiter.await.unwrap().is_ok());
    }
    assert_eq!(pool.status().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn with_the_breaker_open_and_nothing_alive_every_waiter_learns_at_once() {
    let (pool, manager) = pool(
        quiet()
            .max_size(1)
            .breaker_threshold(1)
            .retry_initial(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30)),
    );
    let mut only = pool.get().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                (pool.get().await.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    manager.failing.store(true, Ordering::SeqCst);
    only.mark_broken();
    drop(only);
    // The first waiter gets the slot and fails; the others are told the
    // backend is unavailable at once, not at their 30 s timeout.
    let mut waiters = waiters.into_iter();
    let (first, _) = waiters.next().unwrap().await.unwrap();
    assert!(matches!(first, Err(PoolError::Backend(_))), "{first:?}");
    for waiter in waiters {
        let (outcome, waited) = waiter.await.unwrap();
        assert!(
            matches!(outcome, Err(PoolError::Unavailable { .. })),
            "{outcome:?}"
        );
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }
    assert_eq!(pool.status().waiters, 0);
}
