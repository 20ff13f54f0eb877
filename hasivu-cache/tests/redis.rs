//! The cache with a real Redis L2 (started by the testkit): promotion,
//! sharing between instances, Node-compatible JSON, the distributed lock,
//! and an outage in the middle of a run.
#![cfg(feature = "redis")]

mod support;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hasivu_cache::{BreakerState, Cache, EntryOptions};
use hasivu_testkit::RedisServer;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::{KEY, Source};
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Menu {
    date: String,
    items: Vec<String>,
}

fn menu(date: &str) -> Menu {
    Menu {
        date: date.to_owned(),
        items: vec!["ragi mudde".into(), "sambar".into()],
    }
}

fn cache(redis: &RedisServer) -> Cache {
    Cache::builder()
        .redis(redis.url())
        .l2_timeout(Duration::from_millis(200))
        .breaker(2, Duration::from_millis(300))
        .build()
        .unwrap()
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn l2_hits_are_promoted_and_instances_share_writes() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    let options = EntryOptions::new(Duration::from_secs(60));
    a.set("menu:daily:current", menu("2026-11-27"), &options)
        .await
        .unwrap();

    assert_eq!(
        b.get::<Menu>("menu:daily:current").await.unwrap(),
        Some(menu("2026-11-27"))
    );
    assert_eq!(b.stats().l2_hits, 1);
    assert_eq!(
        b.get::<Menu>("menu:daily:current").await.unwrap(),
        Some(menu("2026-11-27"))
    );
    assert_eq!(b.stats().l1_hits, 1, "the second read is served from L1");

    a.remove("menu:daily:current").await.unwrap();
    let mut conn = raw(&redis).await;
    let left: Option<String> = conn.get("menu:daily:current").await.unwrap();
    assert_eq!(left, None, "remove reaches Redis");
}

#[tokio::test]
async fn values_are_plain_json_both_ways() {
    let redis = RedisServer::start();
    let cache = cache(&redis);
    let mut conn = raw(&redis).await;
    // As a Node service writes it: SETEX key 300 JSON.stringify(value).
    let () = conn
        .set_ex(
            "school:active:list",
            r#"[{"id":1,"name":"Green Valley"},{"id":2,"name":"Lake View"}]"#,
            300,
        )
        .await
        .unwrap();
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct School {
        id: u32,
        name: String,
    }
    let schools: Vec<School> = cache.get("school:active:list").await.unwrap().unwrap();
    assert_eq!(schools[1].name, "Lake View");

    cache
        .set(
            "payment:methods:default",
            vec!["upi", "card"],
            &EntryOptions::new(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let stored: String = conn.get("payment:methods:default").await.unwrap();
    assert_eq!(stored, r#"["upi","card"]"#);
    let ttl: i64 = conn.ttl("payment:methods:default").await.unwrap();
    assert!(
        (55..=60).contains(&ttl),
        "L2 TTL set from the options: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_on_two_instances_load_once_with_the_lock() {
    let redis = RedisServer::start();
    let build = || {
        Cache::builder()
            .redis(redis.url())
            .distributed_lock(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let instances = [build(), build()];
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let cache = instances[i % 2].clone();
        let options = options.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("menu:daily:current", &options, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, io::Error>(menu("2026-11-27"))
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), menu("2026-11-27"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one load across both instances"
    );
}

#[tokio::test]
async fn a_redis_outage_is_absorbed_and_recovery_is_automatic() {
    let mut redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    let options = EntryOptions::new(Duration::from_secs(60));
    let calls = Arc::new(AtomicUsize::new(0));
    let load = |value: &'static str| {
        let calls = Arc::clone(&calls);
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>(value.to_owned())
        }
    };
    assert_eq!(
        a.get_or_load("k1", &options, load("v1")).await.unwrap(),
        "v1"
    );

    redis.stop();
    // Calls still answer: from L1, or from the loader, never an error.
    let started = Instant::now();
    assert_eq!(
        a.get_or_load("k1", &options, load("x")).await.unwrap(),
        "v1"
    );
    for i in 0..5 {
        let key = format!("down:{i}");
        assert_eq!(
            b.get_or_load(&key, &options, load("loaded")).await.unwrap(),
            "loaded"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.l2_breaker(), Some(BreakerState::Open));
    assert_eq!(b.stats().l2_breaker, Some(BreakerState::Open));
    assert!(b.stats().l2_errors >= 2);

    redis.start_again();
    // After the breaker's probe, writes on one instance reach the other.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        a.set("after", "back".to_owned(), &options).await.unwrap();
        if b.get::<String>("after").await.unwrap().as_deref() == Some("back") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "L2 not used again after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.l2_breaker(), Some(BreakerState::Closed));
}

#[tokio::test]
async fn strict_mode_reports_redis_failures_the_default_absorbs_them() {
    let mut redis = RedisServer::start();
    let strict = Cache::builder()
        .redis(redis.url())
        .l2_timeout(Duration::from_millis(200))
        .strict(true)
        .build()
        .unwrap();
    let calm = cache(&redis);
    redis.stop();
    let error = strict.get::<String>("k").await.unwrap_err();
    assert!(matches!(error, hasivu_cache::Error::L2(_)), "{error:?}");
    assert!(
        strict
            .set("k", 1u8, &EntryOptions::default())
            .await
            .is_err()
    );
    assert!(strict.remove("k").await.is_err());
    assert_eq!(calm.get::<String>("k").await.unwrap(), None);
    calm.set("k", 1u8, &EntryOptions::default()).await.unwrap();
    assert_eq!(
        calm.get::<u8>("k").await.unwrap(),
        Some(1),
        "L1 still works"
    );
}

/// How many times Redis ran `command` (from `INFO commandstats`).
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let mut conn = raw(redis).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let wanted = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(wanted.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Waits until `done` holds, polling every few milliseconds, for at most
/// `limit`.
async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn locking(redis: &RedisServer, ttl: Duration) -> Cache {
    Cache::builder()
        .redis(redis.url())
        .l2_timeout(Duration::from_millis(300))
        .distributed_lock(ttl)
        .build()
        .unwrap()
}

/// With the distributed lock, an instance waiting for another's load goes
/// on soon after that load fails or panics, not after the lock's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_go_on_soon_after_the_lock_holder_fails_or_panics() {
    const TTL: Duration = Duration::from_secs(10);
    for panics in [false, true] {
        let redis = RedisServer::start();
        let a = locking(&redis, TTL);
        let b = locking(&redis, TTL);
        let read = Arc::new(Notify::new());
        let go = Arc::new(Notify::new());
        let holder = tokio::spawn({
            let (a, read, go) = (a.clone(), Arc::clone(&read), Arc::clone(&go));
            async move {
                a.get_or_load::<String, _, _, _>(KEY, &support::options(), move || async move {
                    read.notify_one();
                    go.notified().await;
                    if panics {
                        panic!("a bug in the loader");
                    }
                    Err(io::Error::other("database down"))
                })
                .await
            }
        });
        read.notified().await;
        let sets = calls(&redis, "set").await;
        let started = Instant::now();
        let source = Source::new("v1");
        let waiter = tokio::spawn({
            let b = b.clone();
            let load = source.loader();
            async move { b.get_or_load(KEY, &support::options(), load).await }
        });
        // B found the lock taken (its SET NX failed) and waits.
        eventually(Duration::from_secs(5), async || {
            calls(&redis, "set").await > sets
        })
        .await;
        go.notify_one();
        assert!(
            holder.await.unwrap().is_err(),
            "A's callers get the failure"
        );
        assert_eq!(waiter.await.unwrap().unwrap(), "v1");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(2),
            "panics: {panics}: B waited {waited:?} for a lock whose holder had failed (TTL {TTL:?})"
        );
        assert_eq!(source.calls(), 1, "B loaded once the lock was free");
    }
}

/// A load on an instance whose runtime shuts down mid-load (a deploy)
/// releases its lock: the other instances do not wait for its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cancelled_mid_load_releases_the_lock() {
    const TTL: Duration = Duration::from_secs(10);
    let redis = RedisServer::start();
    let a = locking(&redis, TTL);
    let b = locking(&redis, TTL);
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn({
        let a = a.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let _load = tokio::spawn(async move {
                    a.get_or_load::<String, _, _, _>(KEY, &support::options(), move || async move {
                        let _ = read_tx.send(());
                        std::future::pending::<()>().await;
                        Ok::<_, io::Error>("never".to_owned())
                    })
                    .await
                });
                let _ = stop_rx.await;
            });
            // Dropping the runtime drops the load mid-way.
            drop(runtime);
        }
    });
    read_rx.await.unwrap();
    stop_tx.send(()).unwrap();
    thread.join().unwrap();

    let started = Instant::now();
    let source = Source::new("v1");
    assert_eq!(
        b.get_or_load(KEY, &support::options(), source.loader())
            .await
            .unwrap(),
        "v1"
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "B waited {waited:?} for the lock of a load that no longer runs (TTL {TTL:?})"
    );
}

/// A load that outlives the lock's TTL keeps the lock (it is renewed while
/// the loader runs): no second instance loads the key meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_longer_than_the_lock_ttl_keeps_the_lock() {
    const TTL: Duration = Duration::from_millis(300);
    let redis = RedisServer::start();
    let a = locking(&redis, TTL);
    let b = locking(&redis, TTL);
    let source = Source::new("v1");
    let holder = tokio::spawn({
        let a = a.clone();
        let gated = source.gated();
        async move { a.get_or_load(KEY, &support::options(), gated).await }
    });
    source.read.notified().await;
    let other = Source::new("loaded by B");
    let waiter = tokio::spawn({
        let b = b.clone();
        let load = other.loader();
        async move { b.get_or_load(KEY, &support::options(), load).await }
    });
    // Four lock TTLs into A's load, B has still not loaded.
    let started = Instant::now();
    while started.elapsed() < TTL * 4 {
        assert_eq!(
            other.calls(),
            0,
            "B loaded after {:?}: A's lock expired under a running load",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.go.notify_one();
    assert_eq!(holder.await.unwrap().unwrap(), "v1");
    assert_eq!(waiter.await.unwrap().unwrap(), "v1", "B got A's value");
    assert_eq!(other.calls(), 0);
}

/// Eager refresh with L2 configured calls the loader: re-reading L2 would
/// only find the value the refresh is meant to replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_refresh_with_l2_reloads_from_the_source() {
    let redis = RedisServer::start();
    let cache = cache(&redis);
    let options = EntryOptions::new(Duration::from_secs(60))
        .l1_ttl(Duration::from_millis(300))
        .eager_refresh(0.1);
    let source = Source::new("v1");
    assert_eq!(
        cache
            .get_or_load(KEY, &options, source.loader())
            .await
            .unwrap(),
        "v1"
    );
    source.write("v2");
    // Hits past 10% of the L1 TTL refresh in the background.
    let started = Instant::now();
    loop {
        let value = cache
            .get_or_load(KEY, &options, source.loader())
            .await
            .unwrap();
        if value == "v2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still {value:?} after {:?}: the refresh never called the loader ({} calls)",
            started.elapsed(),
            source.calls()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
