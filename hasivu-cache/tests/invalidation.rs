//! Invalidation rules, per-prefix generations and the backplane, on real
//! Redis servers started by the testkit: what a second instance sees after
//! the first invalidates, messages missed while disconnected, a Redis
//! restart in the middle, and the SCAN-based purge.
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

use hasivu_cache::{
    Cache, EntryOptions, Error, InvalidationRules, Pattern, PatternError, escape_glob,
};
use hasivu_testkit::RedisServer;
use support::{KEY, Source, Write};

fn options() -> EntryOptions {
    EntryOptions::new(Duration::from_secs(60))
}

fn cache(redis: &RedisServer) -> Cache {
    Cache::builder()
        .redis(redis.url())
        .rules(InvalidationRules::report_defaults())
        .l2_timeout(Duration::from_millis(300))
        .breaker(2, Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Waits until `done` holds, polling every millisecond, for at most `limit`.
async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

async fn synced(cache: &Cache) {
    eventually(Duration::from_secs(10), async || {
        cache.stats().backplane_synced == Some(true)
    })
    .await;
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn rules_cascade_and_cycles_end_without_redis() {
    let cache = Cache::builder()
        .rules(
            InvalidationRules::report_defaults()
                .rule("analytics:*", ["report:*"])
                .unwrap()
                .rule("report:*", ["analytics:*"])
                .unwrap(),
        )
        .build()
        .unwrap();
    for key in [
        "menu:daily:current",
        "menu:weekly:47",
        "analytics:menu:top",
        "report:monthly",
        "user:profile:1",
    ] {
        cache.set(key, key.to_owned(), &options()).await.unwrap();
    }
    let done = cache.invalidate("menu:*").await.unwrap();
    assert!(done.propagated, "nothing to propagate to without Redis");
    assert_eq!(
        done.patterns,
        ["analytics:*", "menu:*", "report:*"]
            .map(|p| Pattern::parse(p).unwrap())
            .to_vec()
    );
    for gone in [
        "menu:daily:current",
        "menu:weekly:47",
        "analytics:menu:top",
        "report:monthly",
    ] {
        assert_eq!(cache.get::<String>(gone).await.unwrap(), None, "{gone}");
    }
    assert_eq!(
        cache
            .get::<String>("user:profile:1")
            .await
            .unwrap()
            .as_deref(),
        Some("user:profile:1"),
        "outside the cascade"
    );

    let error = cache.invalidate("user:*:profile").await.unwrap_err();
    assert!(
        matches!(error, Error::Pattern(PatternError::NotPrefix(_))),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_invalidation_makes_every_instance_miss_without_deleting() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    a.set("user:profile:1", "Asha".to_owned(), &options())
        .await
        .unwrap();
    a.set("auth:sessions:1", "token".to_owned(), &options())
        .await
        .unwrap();
    a.set("menu:daily:current", "dal".to_owned(), &options())
        .await
        .unwrap();
    for key in ["user:profile:1", "auth:sessions:1", "menu:daily:current"] {
        assert!(b.get::<String>(key).await.unwrap().is_some(), "{key}");
    }
    assert_eq!(b.stats().l2_hits, 3);

    let done = a.invalidate("user:*").await.unwrap();
    assert!(done.propagated);
    assert!(done.generation > 0);
    // At once on A, whose L1 held the values it set.
    assert_eq!(a.get::<String>("user:profile:1").await.unwrap(), None);
    assert_eq!(a.get::<String>("auth:sessions:1").await.unwrap(), None);
    // B drops its L1 copies on the backplane message, and the L2 entries
    // are misses by their stamps.
    eventually(Duration::from_secs(2), async || {
        b.get::<String>("user:profile:1").await.unwrap().is_none()
    })
    .await;
    assert_eq!(b.get::<String>("auth:sessions:1").await.unwrap(), None);
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("dal")
    );

    // O(1): the values are still in Redis, only their generation is old.
    let mut conn = raw(&redis).await;
    let still: Option<String> = redis::cmd("GET")
        .arg("user:profile:1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(still.as_deref(), Some("\"Asha\""));

    // An instance started after the invalidation reads the generations.
    let c = cache(&redis);
    assert_eq!(c.get::<String>("user:profile:1").await.unwrap(), None);
    assert_eq!(
        c.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("dal")
    );

    // A value written after the invalidation is valid everywhere.
    a.set("user:profile:1", "Asha K".to_owned(), &options())
        .await
        .unwrap();
    eventually(Duration::from_secs(2), async || {
        b.get::<String>("user:profile:1").await.unwrap().as_deref() == Some("Asha K")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_other_l1_and_nobody_hears_itself() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    a.set("menu:daily:current", 1_u32, &options())
        .await
        .unwrap();
    assert_eq!(b.get::<u32>("menu:daily:current").await.unwrap(), Some(1));

    // Each write is announced; B drops its L1 copy and reads the new one.
    let mut delays = Vec::new();
    for value in 2..=201_u32 {
        let before = b.stats().backplane_received;
        let started = Instant::now();
        a.set("menu:daily:current", value, &options())
            .await
            .unwrap();
        eventually(Duration::from_secs(2), async || {
            b.stats().backplane_received > before
        })
        .await;
        delays.push(started.elapsed());
        assert_eq!(
            b.get::<u32>("menu:daily:current").await.unwrap(),
            Some(value)
        );
    }
    delays.sort();
    println!(
        "write to L1 drop on the other instance (set + publish + delivery): p50 {:?}, p99 {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        delays[delays.len() - 1]
    );
    assert_eq!(
        a.stats().backplane_received,
        0,
        "A ignores its own messages"
    );
    assert_eq!(b.stats().backplane_received, 201, "one message per write");

    b.remove("menu:daily:current").await.unwrap();
    eventually(Duration::from_secs(2), async || {
        a.get::<u32>("menu:daily:current").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_missed_while_unsubscribed_are_caught_by_the_resync() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
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

    // Cut every subscriber off, and invalidate before they are back: the
    // message reaches nobody.
    let mut conn = raw(&redis).await;
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    let done = a.invalidate("menu:*").await.unwrap();
    assert!(done.propagated, "Redis took the bump");

    // B resubscribes, re-reads the generations and flushes L1: the old
    // value is gone even though B never saw the message.
    eventually(Duration::from_secs(5), async || {
        b.stats().backplane_synced == Some(true)
            && b.get::<String>("menu:daily:current")
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_replays_queued_invalidations_and_flushes_l1() {
    let mut redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    a.set("menu:daily:current", "old".to_owned(), &options())
        .await
        .unwrap();
    // B has heard of the write: its copy of the value is not one a read
    // racing the write's message might have fetched before the write.
    eventually(Duration::from_secs(2), async || {
        b.stats().backplane_received >= 1
    })
    .await;
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("old")
    );

    redis.stop();
    // Fail soft: B answers from L1 while Redis is down.
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("old")
    );
    // The invalidation holds locally at once and is queued.
    let done = a.invalidate("menu:*").await.unwrap();
    assert!(!done.propagated);
    assert!(a.pending_invalidations() > 0);
    assert_eq!(a.get::<String>("menu:daily:current").await.unwrap(), None);

    redis.start_again();
    eventually(Duration::from_secs(10), async || {
        a.pending_invalidations() == 0
            && a.stats().backplane_synced == Some(true)
            && b.stats().backplane_synced == Some(true)
    })
    .await;
    assert_eq!(
        b.get::<String>("menu:daily:current").await.unwrap(),
        None,
        "no stale answer after the restart"
    );

    // The replayed generation is above every stamp written before the
    // restart, although Redis lost its data: a fresh write after it is
    // valid, and a value stamped before it is not.
    let c = cache(&redis);
    synced(&c).await;
    c.set("menu:daily:current", "new".to_owned(), &options())
        .await
        .unwrap();
    assert_eq!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("new")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_an_invalidation_is_not_kept() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let calls = Arc::clone(&calls);
        move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, io::Error>(n)
        }
    };
    let slow = {
        let a = a.clone();
        let load = load.clone();
        tokio::spawn(async move { a.get_or_load("order:active:9", &options(), load).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another instance changes the order while A's load is running.
    b.invalidate_key("order:active:9").await.unwrap();
    // The caller gets what the load read...
    assert_eq!(slow.await.unwrap().unwrap(), 1);
    // ...but it was read before the change: the next caller loads again.
    assert_eq!(
        a.get_or_load("order:active:9", &options(), load)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn purge_scans_and_unlinks_only_what_matches() {
    let redis = RedisServer::start();
    let cache = cache(&redis);
    let hour = EntryOptions::new(Duration::from_secs(3600));
    for i in 0..1200 {
        cache
            .set(&format!("order:history:{i}"), i, &hour)
            .await
            .unwrap();
    }
    cache.set("order:active:1", 1, &hour).await.unwrap();
    cache.set("search:q=*rice?", 1, &hour).await.unwrap();
    cache.set("search:q=xricey", 2, &hour).await.unwrap();

    assert_eq!(cache.purge("order:history:*").await.unwrap(), 1200);
    // A key holding glob metacharacters, escaped: exactly that key.
    assert_eq!(
        cache.purge(&escape_glob("search:q=*rice?")).await.unwrap(),
        1
    );

    let mut conn = raw(&redis).await;
    let mut left: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    left.retain(|key| !key.starts_with("hasivu:"));
    left.sort();
    assert_eq!(left, ["order:active:1", "search:q=xricey"]);
    // The stamps of purged values go within the stamp life (two minutes),
    // not with the hour their values had; the others keep their hour.
    let pttl = async |conn: &mut redis::aio::MultiplexedConnection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
    };
    for purged in ["order:history:7", "search:q=*rice?"] {
        let left = pttl(&mut conn, &format!("hasivu:stamp:{{{purged}}}")).await;
        assert!((1..=120_000).contains(&left), "{purged}: {left}");
    }
    let kept = pttl(&mut conn, "hasivu:stamp:{order:active:1}").await;
    assert!(kept > 3_000_000, "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_queued_while_redis_stalls_is_retried_without_a_reconnect() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    a.set("menu:daily:current", "old".to_owned(), &options())
        .await
        .unwrap();
    assert!(
        b.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .is_some()
    );

    // Writes stall for 800 ms: the bump times out, the subscriptions stay.
    let mut conn = raw(&redis).await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("WRITE")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let done = a.invalidate("menu:*").await.unwrap();
    assert!(!done.propagated);
    assert_eq!(a.get::<String>("menu:daily:current").await.unwrap(), None);

    // The backplane task retries the queue once Redis takes writes again.
    eventually(Duration::from_secs(5), async || {
        a.pending_invalidations() == 0
            && b.get::<String>("menu:daily:current")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    // Replayed, the invalidation has its generation from Redis: what is
    // written under the prefix afterwards is valid for A too.
    b.set("menu:weekly", "later".to_owned(), &options())
        .await
        .unwrap();
    assert_eq!(
        a.get::<String>("menu:weekly").await.unwrap().as_deref(),
        Some("later")
    );
}

/// A write that reached Redis leaves nothing queued, and the value set is
/// served from this instance's L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_reached_redis_is_kept_here_and_queues_nothing() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    synced(&a).await;
    a.set("menu:1", "v".to_owned(), &options()).await.unwrap();
    assert_eq!(a.pending_invalidations(), 0);
    let hits = a.stats().l1_hits;
    assert_eq!(
        a.get::<String>("menu:1").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(a.stats().l1_hits, hits + 1, "served from L1");
    a.remove("menu:1").await.unwrap();
    a.invalidate_key("menu:2").await.unwrap();
    a.invalidate("menu:*").await.unwrap();
    assert_eq!(a.pending_invalidations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_round_trip_fails_is_announced_later() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
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

    // Writes stall for 800 ms: the write's one round trip (value, stamp and
    // message) times out; the write holds locally and its announcement is
    // queued.
    let mut conn = raw(&redis).await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("WRITE")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    a.set("menu:daily:current", "new".to_owned(), &options())
        .await
        .unwrap();
    assert_eq!(a.pending_invalidations(), 1);
    assert_eq!(
        a.get::<String>("menu:daily:current")
            .await
            .unwrap()
            .as_deref(),
        Some("new")
    );

    // Once Redis takes writes again, the replay deletes the key from L2
    // (the write held by the pause may or may not have landed) and B
    // hears of it: it no longer serves the old value.
    eventually(Duration::from_secs(5), async || {
        a.pending_invalidations() == 0
            && b.get::<String>("menu:daily:current")
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

/// Whether a read of L2 through `cache` works (no L2 error counted).
async fn l2_works(cache: &Cache) -> bool {
    let errors = cache.stats().l2_errors;
    let _ = cache.get::<i32>("probe").await;
    cache.stats().l2_errors == errors
}

/// An instance whose rules let the overtaking tests reach [`KEY`] through
/// a rule.
fn overtaking_cache(redis: &RedisServer) -> Cache {
    Cache::builder()
        .redis(redis.url())
        .rules(support::rules())
        .l2_timeout(Duration::from_millis(300))
        .breaker(2, Duration::from_millis(300))
        .build()
        .unwrap()
}

/// The reported fault with Redis: a load on A read the source, the source
/// changed and the key was written (on A, or on B), then the load returned.
/// Its callers get what it read; no instance may serve that afterwards,
/// from L1 or from L2, whatever the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_any_write_on_any_instance_is_served_nowhere() {
    for write in Write::ALL {
        for remote in [false, true] {
            let case = format!("{write:?} on {}", if remote { "B" } else { "A" });
            let redis = RedisServer::start();
            let a = overtaking_cache(&redis);
            let b = overtaking_cache(&redis);
            synced(&a).await;
            synced(&b).await;
            let source = Source::new("v1");
            let load = tokio::spawn({
                let a = a.clone();
                let gated = source.gated();
                async move { a.get_or_load(KEY, &support::options(), gated).await }
            });
            source.read.notified().await;
            source.write("v2");
            let (writer, other) = if remote { (&b, &a) } else { (&a, &b) };
            let before = other.stats().backplane_received;
            write.apply(writer, "v2").await;
            // The other instance has heard of the write before the load ends.
            eventually(Duration::from_secs(2), async || {
                other.stats().backplane_received > before
            })
            .await;
            source.go.notify_one();
            assert_eq!(load.await.unwrap().unwrap(), "v1", "{case}");

            let c = overtaking_cache(&redis);
            synced(&c).await;
            for (name, cache) in [("A", &a), ("B", &b), ("a new instance", &c)] {
                let seen = cache.get::<String>(KEY).await.unwrap();
                assert_ne!(
                    seen.as_deref(),
                    Some("v1"),
                    "{case}: {name} serves the value read before the write"
                );
                assert_eq!(
                    cache
                        .get_or_load(KEY, &support::options(), source.loader())
                        .await
                        .unwrap(),
                    "v2",
                    "{case}: {name}"
                );
            }
        }
    }
}

/// A remote `set` racing a local load: B writes the new value while A's
/// load of the old one runs. A's load must not replace it, in A's L1 or in
/// Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_set_racing_a_local_load_wins() {
    let redis = RedisServer::start();
    let a = overtaking_cache(&redis);
    let b = overtaking_cache(&redis);
    synced(&a).await;
    synced(&b).await;
    let source = Source::new("v1");
    let load = tokio::spawn({
        let a = a.clone();
        let gated = source.gated();
        async move { a.get_or_load(KEY, &support::options(), gated).await }
    });
    source.read.notified().await;
    source.write("v2");
    b.set(KEY, "v2".to_owned(), &support::options())
        .await
        .unwrap();
    source.go.notify_one();
    assert_eq!(load.await.unwrap().unwrap(), "v1");
    // Whether A heard of the set before its load ended or after, once it
    // has, every instance serves the value set.
    eventually(Duration::from_secs(2), async || {
        a.stats().backplane_received >= 1
    })
    .await;
    let c = overtaking_cache(&redis);
    synced(&c).await;
    for (name, cache) in [("A", &a), ("B", &b), ("a new instance", &c)] {
        assert_eq!(
            cache.get::<String>(KEY).await.unwrap().as_deref(),
            Some("v2"),
            "{name} lost the value set"
        );
    }
}

/// A `set` whose round trip never reached Redis (its connection died while
/// Redis held writes) is queued; the replay must take the old value out of
/// L2, not only announce the write, or every other instance reads the old
/// value back from Redis with a valid stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_on_the_way_to_redis_is_replayed_as_a_delete() {
    let redis = RedisServer::start();
    let a = cache(&redis);
    let b = cache(&redis);
    synced(&a).await;
    synced(&b).await;
    a.set(KEY, "old".to_owned(), &options()).await.unwrap();
    assert_eq!(b.get::<String>(KEY).await.unwrap().as_deref(), Some("old"));

    let mut conn = raw(&redis).await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    a.set(KEY, "new".to_owned(), &options()).await.unwrap();
    assert_eq!(a.pending_invalidations(), 1, "the write is queued");
    // The write Redis is holding never runs: its connection goes away.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), async || {
        a.pending_invalidations() == 0
            && a.stats().backplane_synced == Some(true)
            && b.stats().backplane_synced == Some(true)
    })
    .await;
    // A later write from A reaches B through Redis (both connections are
    // back) and through the backplane, after the replay's message.
    let heard = b.stats().backplane_received;
    a.set("after", "later".to_owned(), &options())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), async || {
        b.stats().backplane_received > heard
            && b.get::<String>("after").await.unwrap().as_deref() == Some("later")
    })
    .await;
    assert_ne!(
        b.get::<String>(KEY).await.unwrap().as_deref(),
        Some("old"),
        "after the replay, B reads back from Redis the value the write replaced"
    );
    assert_eq!(
        a.get::<String>(KEY).await.unwrap().as_deref(),
        Some("new"),
        "the write holds where it was made"
    );
}

/// After a write of a key (any kind, on either instance), the next load of
/// it is kept again, in L1 and in L2: a write's stamp refuses only the
/// loads that started before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_after_a_write_are_kept_again() {
    for write in Write::ALL {
        for remote in [false, true] {
            let case = format!("{write:?} on {}", if remote { "B" } else { "A" });
            let redis = RedisServer::start();
            let a = overtaking_cache(&redis);
            let b = overtaking_cache(&redis);
            synced(&a).await;
            synced(&b).await;
            let source = Source::new("v1");
            let load = || source.loader();
            assert_eq!(
                a.get_or_load(KEY, &support::options(), load())
                    .await
                    .unwrap(),
                "v1"
            );
            source.write("v2");
            let (writer, other) = if remote { (&b, &a) } else { (&a, &b) };
            let before = other.stats().backplane_received;
            write.apply(writer, "v2").await;
            eventually(Duration::from_secs(2), async || {
                other.stats().backplane_received > before
            })
            .await;
            let calls = source.calls();
            for _ in 0..2 {
                assert_eq!(
                    a.get_or_load(KEY, &support::options(), load())
                        .await
                        .unwrap(),
                    "v2",
                    "{case}"
                );
            }
            assert!(
                source.calls() <= calls + 1,
                "{case}: A loaded {} times: its load was not kept",
                source.calls() - calls
            );
            let c = overtaking_cache(&redis);
            synced(&c).await;
            assert_eq!(
                c.get::<String>(KEY).await.unwrap().as_deref(),
                Some("v2"),
                "{case}: the value loaded after the write is not in L2"
            );
        }
    }
}

/// A write dropped half-way (its caller cancelled while Redis held it, and
/// the connection then died, so Redis never ran it) is still made: the key
/// left L1 before Redis was asked, and the write is queued and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_half_way_is_still_made_everywhere() {
    for write in Write::ALL {
        let redis = RedisServer::start();
        let a = overtaking_cache(&redis);
        let b = overtaking_cache(&redis);
        synced(&a).await;
        synced(&b).await;
        a.set(KEY, "old".to_owned(), &support::options())
            .await
            .unwrap();
        eventually(Duration::from_secs(2), async || {
            b.get::<String>(KEY).await.unwrap().as_deref() == Some("old")
        })
        .await;
        let mut conn = raw(&redis).await;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("WRITE")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let dropped =
            tokio::time::timeout(Duration::from_millis(100), write.apply(&a, "new")).await;
        assert!(dropped.is_err(), "{write:?}: Redis held it");
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .unwrap();
        redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        // Both instances reach Redis again (their killed connections are
        // remade), A's queue is empty and both are in sync.
        eventually(Duration::from_secs(10), async || {
            l2_works(&a).await
                && l2_works(&b).await
                && a.pending_invalidations() == 0
                && a.stats().backplane_synced == Some(true)
                && b.stats().backplane_synced == Some(true)
        })
        .await;
        // And B has heard everything A sent.
        let heard = b.stats().backplane_received;
        a.set("after", 1, &support::options()).await.unwrap();
        eventually(Duration::from_secs(5), async || {
            b.stats().backplane_received > heard && b.get::<i32>("after").await.unwrap() == Some(1)
        })
        .await;
        for (name, cache) in [("A", &a), ("B", &b)] {
            assert_ne!(
                cache.get::<String>(KEY).await.unwrap().as_deref(),
                Some("old"),
                "{write:?} dropped half-way: {name} still serves what it replaced"
            );
        }
    }
}
