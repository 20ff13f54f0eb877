//! The backplane under network faults that close nothing: a subscriber
//! connection that goes half-open must be noticed by its heartbeat, and the
//! instance must stop trusting L2, subscribe again and resync, so that it
//! never serves a value another instance invalidated meanwhile. Real Redis
//! servers and a fault-injecting TCP proxy, started by the testkit.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use hasivu_cache::{Cache, EntryOptions};
use hasivu_testkit::{FaultProxy, RedisServer};

/// The documented bound: with the default heartbeat (a `PING` every second,
/// down after three seconds without an answer), a silent subscriber is
/// detected within three seconds.
const DETECTION_BOUND: Duration = Duration::from_secs(3);

/// Room for the scheduler of a loaded test machine on top of the bound.
const SCHEDULING: Duration = Duration::from_secs(1);

fn options() -> EntryOptions {
    EntryOptions::new(Duration::from_secs(60))
}

fn cache(url: String) -> Cache {
    Cache::builder()
        .redis(url)
        .l2_timeout(Duration::from_millis(300))
        .breaker(2, Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Waits until `done` holds, polling every millisecond, for at most `limit`;
/// returns how long it took.
async fn eventually(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

async fn synced(cache: &Cache) {
    eventually(Duration::from_secs(10), "first sync", async || {
        cache.stats().backplane_synced == Some(true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_subscriber_is_detected_and_resynced() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let a = cache(redis.url());
    // B reaches Redis only through the proxy.
    let b = cache(proxy.redis_url());
    synced(&a).await;
    synced(&b).await;
    a.set("menu:daily:current", "old".to_owned(), &options())
        .await
        .unwrap();
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("old")
    );

    // The network between B and Redis stops moving packets without closing
    // anything, and A invalidates: the message to B is lost on the way and
    // B's connections raise no error.
    let fault = Instant::now();
    proxy.half_open();
    let done = a.invalidate("menu:*").await.unwrap();
    assert!(done.propagated);

    // B's heartbeat goes unanswered: B stops trusting L2. (B reads nothing
    // from L2 meanwhile, so its idle data connection carries nothing the
    // proxy could drop; only the subscriber's connection, which carried the
    // message and the heartbeat, is dead.)
    eventually(
        DETECTION_BOUND + SCHEDULING,
        "B notices its silent subscriber",
        async || b.stats().backplane_synced == Some(false),
    )
    .await;
    let down = fault.elapsed();

    // New connections work again; the half-open one stays dead, so B must
    // make a new one, subscribe on it and resync.
    proxy.heal();
    eventually(Duration::from_secs(10), "B back in sync", async || {
        b.stats().backplane_synced == Some(true)
    })
    .await;
    let back = fault.elapsed();
    assert_eq!(
        b.get::<String>("menu:daily:current").await.unwrap(),
        None,
        "no stale read after the resync"
    );
    println!("half-open subscriber: down after {down:?}, in sync again after {back:?}");

    // The new subscription carries messages.
    a.set("menu:daily:current", "new".to_owned(), &options())
        .await
        .unwrap();
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("new")
    );
    a.invalidate("menu:*").await.unwrap();
    eventually(Duration::from_secs(5), "B hears A again", async || {
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .is_none()
    })
    .await;
}
