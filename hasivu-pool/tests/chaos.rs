//! Randomized runs: a manager whose every call may succeed, fail, hang,
//! panic or take a random time; callers that give up at random points (a
//! timeout around `get`, a client that leaves, a future polled once and
//! dropped) and hold what they get for a random time; the pool's
//! invariants checked all along and once the faults stop.
//!
//! Each run is one seed on a paused clock in a runtime of its own, so it is
//! fast and replays exactly. `HASIVU_CHAOS_SEEDS=<n>` runs `n` seeds (200
//! by default); `HASIVU_CHAOS_SEED=<seed>` runs that seed alone (every
//! failing seed is printed).

use std::{
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::Poll,
    time::Duration,
};

use futures_util::FutureExt;
use hasivu_pool::{Manager, Pool, PoolConfig, PoolError};
use tokio::time::Instant;

/// The message of every panic the manager injects.
const INJECTED: &str = "chaos: injected panic";
/// Timers fire on millisecond ticks.
const SLACK: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
#[error("injected {0} failure")]
struct Injected(&'static str);

/// A connection; counts itself alive until dropped.
struct Conn {
    _live: Live,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// What a manager call does.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Succeed,
    Fail,
    Hang,
    Panic,
}

/// A manager driven by a seeded RNG while `faults` is on; with it off,
/// every call succeeds at once.
struct Chaos {
    rng: Mutex<fastrand::Rng>,
    faults: AtomicBool,
    live: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

/// Counts across every run, to show what the runs reached.
#[derive(Default, Debug)]
struct Stats {
    creates_cancelled: AtomicU64,
    checks_cancelled: AtomicU64,
    panics: AtomicU64,
    served: AtomicU64,
    timeouts: AtomicU64,
    backend: AtomicU64,
    unavailable: AtomicU64,
    gave_up: AtomicU64,
    most_waiters: AtomicU64,
}

impl Chaos {
    /// `fail`, `hang` and `panic` are percentages.
    fn fate(&self, fail: u32, hang: u32, panic: u32) -> (Fate, Duration) {
        if !self.faults.load(SeqCst) {
            return (Fate::Succeed, Duration::ZERO);
        }
        let mut rng = self.rng.lock().unwrap();
        let roll = rng.u32(0..100);
        let fate = if roll < fail {
            Fate::Fail
        } else if roll < fail + hang {
            Fate::Hang
        } else if roll < fail + hang + panic {
            Fate::Panic
        } else {
            Fate::Succeed
        };
        let delay = if rng.bool() {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.u64(1..=60))
        };
        (fate, delay)
    }

    async fn play(&self, what: &'static str, fate: Fate, delay: Duration) -> Result<(), Injected> {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fate {
            Fate::Succeed => Ok(()),
            Fate::Fail => Err(Injected(what)),
            Fate::Hang => std::future::pending().await,
            Fate::Panic => {
                self.stats.panics.fetch_add(1, SeqCst);
                panic!("{INJECTED} in {what}")
            }
        }
    }
}

/// Counts a manager call dropped before it finished.
struct Unfinished<'a>(&'a AtomicU64, bool);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, SeqCst);
        }
    }
}

impl Manager for Chaos {
    type Connection = Conn;
    type Error = Injected;

    async fn create(&self) -> Result<Conn, Injected> {
        let (fate, delay) = self.fate(20, 10, 3);
        let mut call = Unfinished(&self.stats.creates_cancelled, false);
        let outcome = self.play("create", fate, delay).await;
        call.1 = true;
        outcome?;
        self.live.fetch_add(1, SeqCst);
        Ok(Conn {
            _live: Live(Arc::clone(&self.live)),
        })
    }

    async fn validate(&self, _conn: &mut Conn) -> Result<(), Injected> {
        let (fate, delay) = self.fate(15, 10, 3);
        let mut call = Unfinished(&self.stats.checks_cancelled, false);
        let outcome = self.play("validate", fate, delay).await;
        call.1 = true;
        outcome
    }

    async fn destroy(&self, conn: Conn) {
        let (fate, delay) = self.fate(0, 5, 0);
        let _ = self.play("destroy", fate, delay).await;
        drop(conn);
    }

    fn is_broken(&self, _conn: &Conn) -> bool {
        if !self.faults.load(SeqCst) {
            return false;
        }
        let roll = self.rng.lock().unwrap().u32(0..100);
        if roll == 0 {
            self.stats.panics.fetch_add(1, SeqCst);
            panic!("{INJECTED} in is_broken");
        }
        roll < 6
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What went wrong in one run.
#[derive(Clone, Default)]
struct Violations(Arc<Mutex<Vec<String>>>);

impl Violations {
    fn push(&self, what: String) {
        let mut all = self.0.lock().unwrap();
        if all.len() < 10 {
            all.push(what);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Counts a connection the test holds, from `get` to its drop.
struct Holding(Arc<AtomicUsize>);

impl Holding {
    fn new(held: &Arc<AtomicUsize>) -> Self {
        held.fetch_add(1, SeqCst);
        Self(Arc::clone(held))
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// The invariants that hold at every moment.
fn observe(pool: &Pool<Arc<Chaos>>, held: &AtomicUsize, violations: &Violations, stats: &Stats) {
    let status = pool.status();
    let held = held.load(SeqCst);
    if status.size > status.max_size {
        violations.push(format!("size above max_size: {status:?}"));
    }
    if status.idle + status.creating > status.size {
        violations.push(format!("idle + creating above size: {status:?}"));
    }
    // Connections being checked or handed over count as in use too, so
    // what the test holds is a lower bound here and exact when quiet.
    if status.in_use < held {
        violations.push(format!(
            "in_use below the {held} connections held: {status:?}"
        ));
    }
    stats.most_waiters.fetch_max(status.waiters as u64, SeqCst);
}

/// How a caller asks for a connection.
async fn one_get(
    pool: &Pool<Arc<Chaos>>,
    rng: &mut fastrand::Rng,
    acquire_ms: u64,
) -> Option<Result<hasivu_pool::Pooled<Arc<Chaos>>, PoolError<Injected>>> {
    let give_up = ms(rng.u64(0..=acquire_ms + 10));
    match rng.u32(0..100) {
        0..30 => Some(pool.get().await),
        // A tower timeout: polls `get` first, gives up at its deadline.
        30..55 => tokio::time::timeout(give_up, pool.get()).await.ok(),
        // A client that leaves: when both are ready, leaving wins, and a
        // grant already sent to this caller is dropped unread.
        55..75 => {
            tokio::select! {
                biased;
                () = tokio::time::sleep(give_up) => None,
                got = pool.get() => Some(got),
            }
        }
        // A client that leaves just as the pool wakes its request: dropped
        // on its n-th wake-up, before it runs again (a connection or a
        // creation grant sent to it is dropped unread).
        75..92 => {
            LeaveOnWake {
                get: Box::pin(pool.get()),
                started: false,
                wakes: rng.u32(0..2),
            }
            .await
        }
        // Polled once, then dropped.
        _ => {
            let mut get = pin!(pool.get());
            match poll_once(&mut get).await {
                Poll::Ready(got) => Some(got),
                Poll::Pending => None,
            }
        }
    }
}

/// A request dropped when woken for the `wakes + 1`-th time, without
/// being polled again.
struct LeaveOnWake<F> {
    get: std::pin::Pin<Box<F>>,
    started: bool,
    wakes: u32,
}

impl<F: std::future::Future> std::future::Future for LeaveOnWake<F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if self.started {
            if self.wakes == 0 {
                return Poll::Ready(None);
            }
            self.wakes -= 1;
        }
        self.started = true;
        self.get.as_mut().poll(cx).map(Some)
    }
}

/// One caller: asks, holds, returns, again and again.
async fn caller(
    pool: Pool<Arc<Chaos>>,
    mut rng: fastrand::Rng,
    held: Arc<AtomicUsize>,
    violations: Violations,
    stats: Arc<Stats>,
) {
    let acquire_timeout = pool.config().acquire_timeout;
    let acquire_ms = u64::try_from(acquire_timeout.as_millis()).unwrap();
    for _ in 0..rng.u32(3..=12) {
        let pause = rng.u64(0..=40);
        if pause > 0 {
            tokio::time::sleep(ms(pause)).await;
        }
        let iteration = async {
            let started = Instant::now();
            let got = one_get(&pool, &mut rng, acquire_ms).await;
            let waited = started.elapsed();
            let Some(got) = got else {
                stats.gave_up.fetch_add(1, SeqCst);
                return;
            };
            if waited > acquire_timeout + SLACK {
                violations.push(format!(
                    "a get took {waited:?}, the acquire timeout is {acquire_timeout:?}: {got:?}",
                    got = got.as_ref().map(|_| "a connection")
                ));
            }
            let mut conn = match got {
                Ok(conn) => conn,
                Err(error) => {
                    let counter = match error {
                        PoolError::Timeout { .. } => &stats.timeouts,
                        PoolError::Unavailable { .. } => &stats.unavailable,
                        PoolError::Backend(_) | PoolError::CreateTimeout(_) => &stats.backend,
                        other => {
                            violations.push(format!("unexpected error: {other:?}"));
                            return;
                        }
                    };
                    counter.fetch_add(1, SeqCst);
                    return;
                }
            };
            stats.served.fetch_add(1, SeqCst);
            let holding = Holding::new(&held);
            observe(&pool, &held, &violations, &stats);
            let hold = rng.u64(0..=40);
            if hold > 0 {
                tokio::time::sleep(ms(hold)).await;
            }
            match rng.u32(0..100) {
                0..10 => conn.mark_broken(),
                10..13 => {
                    drop(conn.detach());
                    drop(holding);
                    return;
                }
                _ => {}
            }
            drop(conn);
            drop(holding);
        };
        // The manager's panics reach the caller whose call ran them; the
        // caller's task goes on.
        if let Err(panic) = AssertUnwindSafe(iteration).catch_unwind().await {
            let message = panic_message(&*panic);
            if !message.contains(INJECTED) {
                violations.push(format!("a caller panicked: {message}"));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// A random configuration with short timeouts.
fn config(rng: &mut fastrand::Rng) -> PoolConfig {
    let max_size = rng.usize(1..=4);
    PoolConfig::default()
        .max_size(max_size)
        .min_idle(rng.usize(0..=max_size.min(2)))
        .acquire_timeout(ms(rng.u64(20..=300)))
        .create_timeout(ms(rng.u64(5..=200)))
        .validate_timeout(ms(rng.u64(5..=200)))
        .destroy_timeout(ms(rng.u64(5..=50)))
        .validate_after(if rng.bool() {
            Duration::ZERO
        } else {
            ms(rng.u64(0..=30))
        })
        .idle_timeout(ms(rng.u64(10..=300)))
        .max_lifetime(ms(rng.u64(50..=2000)))
        .lifetime_jitter(if rng.bool() { 0.0 } else { 0.1 })
        .max_uses(if rng.bool() { 0 } else { rng.u32(1..=5) })
        .reap_interval(ms(rng.u64(5..=100)))
        .retry_initial(ms(rng.u64(1..=20)))
        .retry_max(ms(rng.u64(20..=100)))
        .breaker_threshold(rng.u32(0..=3))
        .leak_threshold(if rng.bool() {
            None
        } else {
            Some(ms(rng.u64(10..=200)))
        })
        .lifo(rng.bool())
}

/// One run; what went wrong in it.
async fn run(seed: u64, stats: Arc<Stats>) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let config = config(&mut rng);
    let live = Arc::new(AtomicUsize::new(0));
    let manager = Arc::new(Chaos {
        rng: Mutex::new(rng.fork()),
        faults: AtomicBool::new(true),
        live: Arc::clone(&live),
        stats: Arc::clone(&stats),
    });
    let pool = Pool::builder(Arc::clone(&manager))
        .name(format!("chaos-{seed}"))
        .config(config.clone())
        .build();
    let held = Arc::new(AtomicUsize::new(0));
    let violations = Violations::default();

    let watching = Arc::new(AtomicBool::new(true));
    let observer = tokio::spawn({
        let (pool, held, violations, stats, watching) = (
            pool.clone(),
            Arc::clone(&held),
            violations.clone(),
            Arc::clone(&stats),
            Arc::clone(&watching),
        );
        async move {
            while watching.load(SeqCst) {
                observe(&pool, &held, &violations, &stats);
                tokio::time::sleep(ms(1)).await;
            }
        }
    });
    let callers: Vec<_> = (0..rng.usize(2..=10))
        .map(|_| {
            tokio::spawn(caller(
                pool.clone(),
                rng.fork(),
                Arc::clone(&held),
                violations.clone(),
                Arc::clone(&stats),
            ))
        })
        .collect();
    for caller in callers {
        if let Err(error) = caller.await {
            violations.push(format!("a caller's task failed: {error}"));
        }
    }
    watching.store(false, SeqCst);
    let _ = observer.await;

    // Quiet: nothing held, so nothing in use.
    manager.faults.store(false, SeqCst);
    let status = pool.status();
    if status.in_use != held.load(SeqCst) || status.in_use != 0 {
        violations.push(format!(
            "nothing is held, yet in_use is {}: {status:?}",
            status.in_use
        ));
    }
    if status.waiters != 0 {
        violations.push(format!("waiters left behind: {status:?}"));
    }
    // Past every hanging call and any open breaker, the pool serves again.
    // (A creation that started failing just before may end as late as
    // `create_timeout` from now, and open the breaker for `retry_max`.)
    let settle =
        config.create_timeout + config.validate_timeout + config.destroy_timeout + config.retry_max;
    tokio::time::sleep(settle + ms(1)).await;
    let mut served = false;
    for _ in 0..100 {
        match pool.get().await {
            Ok(_) => {
                served = true;
                break;
            }
            Err(PoolError::Unavailable { retry_in, .. }) => {
                tokio::time::sleep(retry_in.max(ms(1))).await;
            }
            Err(error) => {
                violations.push(format!(
                    "after the faults stopped a get failed: {error:?}; {:?}",
                    pool.status()
                ));
                break;
            }
        }
    }
    if !served {
        violations.push(format!(
            "after the faults stopped the pool does not serve: {:?}",
            pool.status()
        ));
    }
    // No slot leaked: `max_size` callers at once are all served.
    let all = futures_util::future::join_all((0..config.max_size).map(|_| pool.get())).await;
    let failed: Vec<_> = all.iter().filter_map(|got| got.as_ref().err()).collect();
    if !failed.is_empty() {
        violations.push(format!(
            "{} of {} simultaneous gets failed after the faults stopped (slots leaked?): {:?}; {:?}",
            failed.len(),
            config.max_size,
            failed[0],
            pool.status()
        ));
    }
    drop(all);
    let status = pool.status();
    if status.in_use != 0 || status.size > config.max_size {
        violations.push(format!("after returning everything: {status:?}"));
    }
    let report = pool.drain(Duration::from_secs(1)).await;
    if report.still_checked_out != 0 {
        violations.push(format!(
            "drain waited for connections nobody holds: {report:?}"
        ));
    }
    tokio::time::sleep(config.destroy_timeout + ms(1)).await;
    if live.load(SeqCst) != 0 {
        violations.push(format!(
            "{} connections alive after the drain",
            live.load(SeqCst)
        ));
    }
    violations.take()
}

/// Runs `seed` on a paused clock in a runtime of its own.
fn run_seed(seed: u64, stats: &Arc<Stats>) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    // The pool's own jitter comes from this thread's generator.
    fastrand::seed(seed);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            match tokio::time::timeout(Duration::from_secs(600), run(seed, Arc::clone(stats))).await
            {
                Ok(violations) => violations,
                Err(_) => vec!["the run did not finish within 600 s".to_owned()],
            }
        })
    }));
    outcome.unwrap_or_else(|panic| vec![format!("the run panicked: {}", panic_message(&*panic))])
}

/// Silences the manager's injected panics; every other panic is printed.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).contains(INJECTED) {
                default(info);
            }
        }));
    });
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
    )
}

#[test]
fn random_faults_and_cancellations_never_break_the_pool() {
    quiet_injected_panics();
    let seeds: Vec<u64> = match env_u64("HASIVU_CHAOS_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("HASIVU_CHAOS_SEEDS").unwrap_or(200)).collect(),
    };
    let stats = Arc::new(Stats::default());
    let mut failed = Vec::new();
    for &seed in &seeds {
        let violations = run_seed(seed, &stats);
        if !violations.is_empty() {
            eprintln!("seed {seed} failed:");
            for violation in &violations {
                eprintln!("  {violation}");
            }
            failed.push(seed);
        }
    }
    eprintln!("{} seeds: {stats:?}", seeds.len());
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?} (replay one with HASIVU_CHAOS_SEED=<seed>)",
        failed.len(),
        seeds.len()
    );
    // The runs reach every await of `get` and every outcome.
    if seeds.len() >= 100 {
        for (what, count) in [
            ("cancelled creations", &stats.creates_cancelled),
            ("cancelled checks", &stats.checks_cancelled),
            ("injected panics", &stats.panics),
            ("served gets", &stats.served),
            ("timed-out gets", &stats.timeouts),
            ("backend errors", &stats.backend),
            ("breaker refusals", &stats.unavailable),
            ("callers that gave up", &stats.gave_up),
            ("queued waiters", &stats.most_waiters),
        ] {
            assert!(count.load(SeqCst) > 0, "no {what} in {} seeds", seeds.len());
        }
    }
}

/// Polls `future` once, without waiting.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}
