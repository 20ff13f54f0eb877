//! The cache with a real Redis L2 (started by the testkit): promotion,
//! sharing between instances, Node-compatible JSON, the distributed lock,
//! and an outage in the middle of a run.
#![cfg(feature = "redis")]

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
