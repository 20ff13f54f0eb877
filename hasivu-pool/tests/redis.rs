//! The Redis adapter against a real `redis-server`: commands through the
//! pool, an outage in the middle of a test, and network faults through a
//! proxy (a stall, resets).
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use hasivu_pool::{Pool, PoolConfig, PoolError, RedisManager, RedisManagerError};
use hasivu_testkit::{FaultProxy, RedisServer};

/// Short timeouts so an outage is seen and healed within a test, and a
/// long acquire timeout so "fast" cannot mean "timed out".
fn config() -> PoolConfig {
    PoolConfig::default()
        .max_size(3)
        .min_idle(1)
        .acquire_timeout(Duration::from_secs(30))
        .create_timeout(Duration::from_secs(2))
        .validate_after(Duration::ZERO)
        .retry_initial(Duration::from_millis(50))
        .retry_max(Duration::from_millis(400))
        .breaker_threshold(2)
        .leak_threshold(None)
}

fn pool(redis: &RedisServer) -> Pool<RedisManager> {
    Pool::builder(RedisManager::new(redis.url()).expect("a valid url"))
        .name("redis")
        .config(config())
        .build()
}

async fn ping(pool: &Pool<RedisManager>) -> Result<String, PoolError<RedisManagerError>> {
    let mut conn = pool.get().await?;
    Ok(redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .expect("PING answered"))
}

/// The error behind a failed acquire, as text.
fn backend_text(error: &PoolError<RedisManagerError>) -> String {
    match error {
        PoolError::Backend(e)
        | PoolError::Unavailable {
            last_error: Some(e),
            ..
        } => e.to_string(),
        other => panic!("expected the backend's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_get_from_many_tasks_through_three_connections() {
    let redis = RedisServer::start();
    let pool = pool(&redis);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await.expect("a connection");
                let key = format!("key:{i}");
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut *conn)
                    .await
                    .expect("SET");
                let value: i64 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut *conn)
                    .await
                    .expect("GET");
                assert_eq!(value, i);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished");
    }
    let mut conn = pool.get().await.unwrap();
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut *conn).await.unwrap();
    assert_eq!(keys, 40);
    drop(conn);
    let status = pool.status();
    assert!(status.size <= 3, "{status:?}");
    assert!(status.creates <= 3, "connections are reused: {status:?}");
    assert_eq!(status.wait.count, 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_acquires_fail_fast_with_the_real_error_then_the_pool_heals() {
    let mut redis = RedisServer::start();
    let pool = pool(&redis);
    // The pool at its maximum (so the background refill adds nothing),
    // every connection idle, about to lose its server.
    let all: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
    drop(all);
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    let idle_before = pool.status().idle;
    assert_eq!(idle_before, 3);

    tokio::task::block_in_place(|| redis.stop());

    // The idle connections fail their PING and are retired instead of being
    // handed out; the new connection is refused, and the caller hears so at
    // once, not after the 30 s acquire timeout.
    let started = Instant::now();
    let error = pool.get().await.expect_err("redis is down");
    let first = started.elapsed();
    let text = backend_text(&error);
    assert!(
        text.to_lowercase().contains("refused"),
        "the real cause: {text}"
    );
    assert!(first < Duration::from_secs(1), "failed fast: {first:?}");
    let status = pool.status();
    assert_eq!(
        status.closes.broken, idle_before as u64,
        "dead idle connections were caught by validation: {status:?}"
    );
    assert_eq!(status.idle, 0);

    // Every further acquire fails fast too; the breaker opens and answers
    // without trying.
    let mut slowest = first;
    let mut unavailable = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let error = pool.get().await.expect_err("still down");
        slowest = slowest.max(started.elapsed());
        assert!(backend_text(&error).to_lowercase().contains("refused"));
        if matches!(error, PoolError::Unavailable { .. }) {
            unavailable += 1;
        }
    }
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(unavailable > 0, "the breaker opened");
    assert!(
        pool.status()
            .last_error
            .is_some_and(|e| e.to_lowercase().contains("refused"))
    );
    eprintln!(
        "with redis down: first acquire failed in {first:?} ({error}), slowest of 11 in {slowest:?}"
    );

    tokio::task::block_in_place(|| redis.start_again());
    let restarted = Instant::now();
    loop {
        match ping(&pool).await {
            Ok(pong) => {
                assert_eq!(pong, "PONG");
                break;
            }
            Err(error) => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "not healed after 5 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let healed = restarted.elapsed();
    eprintln!("redis back: the pool healed in {healed:?}");
    assert!(!pool.status().breaker_open);
    // The same pool keeps serving.
    for _ in 0..5 {
        assert_eq!(ping(&pool).await.unwrap(), "PONG");
    }
}

const ACQUIRE: Duration = Duration::from_millis(500);
/// Room for a loaded machine's scheduling on top of the acquire timeout;
/// a hang would last forever.
const SLACK: Duration = Duration::from_secs(2);

/// `PING` through the pool; any failure as text.
async fn try_ping(pool: &Pool<RedisManager>) -> Result<String, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .map_err(|e| e.to_string())
}

/// Waits (polling, up to 10 s) until `PING` answers through `pool`.
async fn until_served(pool: &Pool<RedisManager>) -> Duration {
    let started = Instant::now();
    loop {
        match try_ping(pool).await {
            Ok(pong) => {
                assert_eq!(pong, "PONG");
                return started.elapsed();
            }
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "not serving again after 10 s: {error}; {:?}",
                    pool.status()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Gets `n` connections at once and returns them, retrying (a loaded
/// machine may be slow to connect) for up to 10 s.
async fn warm(pool: &Pool<RedisManager>, n: usize) {
    let started = Instant::now();
    loop {
        let all: Vec<_> = futures_util::future::join_all((0..n).map(|_| pool.get())).await;
        if all.iter().all(Result::is_ok) {
            return;
        }
        drop(all);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) for `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_stall_and_resets_acquires_are_bounded_and_the_pool_recovers() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let pool = Pool::builder(RedisManager::new(proxy.redis_url()).expect("a valid url"))
        .name("redis-proxied")
        .config(
            config()
                .min_idle(0)
                .acquire_timeout(ACQUIRE)
                .validate_timeout(Duration::from_millis(200)),
        )
        .build();
    warm(&pool, 3).await;
    until_served(&pool).await;

    // A stall: PINGs on idle connections and new handshakes hang.
    proxy.stall();
    let acquires = (0..6).map(|_| async {
        let started = Instant::now();
        let outcome = pool.get().await.map(|_| ());
        (outcome, started.elapsed())
    });
    for (outcome, waited) in futures_util::future::join_all(acquires).await {
        assert!(outcome.is_err(), "nothing answers while stalled");
        assert!(
            waited < ACQUIRE + SLACK,
            "an acquire hung for {waited:?} (acquire timeout {ACQUIRE:?}): {outcome:?}"
        );
    }
    assert_eq!(pool.status().in_use, 0, "{:?}", pool.status());
    proxy.heal();
    let healed = until_served(&pool).await;
    eprintln!("redis stalled then healed: served again {healed:?} after healing");

    // Resets: every open connection gets an RST; the idle ones are found
    // dead by their PING and replaced.
    warm(&pool, 3).await;
    let broken_before = pool.status().closes.broken;
    proxy.reset();
    until("the proxy reset its connections", || {
        proxy.open_connections() == 0
    })
    .await;
    // Each acquire is bounded; the pool serves again through new
    // connections.
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        let pong = try_ping(&pool).await;
        let waited = attempt.elapsed();
        assert!(waited < ACQUIRE + SLACK, "{waited:?}: {pong:?}");
        if pong.as_deref() == Ok("PONG") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not serving after the reset: {pong:?}; {:?}",
            pool.status()
        );
    }
    let status = pool.status();
    assert!(
        status.closes.broken > broken_before,
        "the reset connections were retired: {status:?}"
    );
    assert_eq!(status.in_use, 0, "{status:?}");
    assert!(status.size <= 3, "{status:?}");
}
