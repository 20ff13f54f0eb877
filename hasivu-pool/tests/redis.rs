//! The Redis adapter against a real `redis-server`: commands through the
//! pool, and an outage in the middle of a test.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use hasivu_pool::{Pool, PoolConfig, PoolError, RedisManager, RedisManagerError};
use hasivu_testkit::RedisServer;

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
