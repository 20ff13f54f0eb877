//! The Redis store against a real Redis (started by the testkit): exact
//! admission, instances sharing a quota, rejected requests not counted,
//! TTLs and memory, every fail policy through an outage, leases, the memory
//! signal and a Redis Cluster.
#![cfg(feature = "redis")]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hasivu_ratelimit::{
    Algorithm, Error, FailPolicy, LeaseConfig, LoadSignal, Quota, RedisMemory, RedisStore,
    RedisStoreBuilder, Source, Store, StoreKey, Verdict,
};
use hasivu_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

fn key(k: &str) -> StoreKey<'_> {
    StoreKey {
        policy: "general",
        key: k,
    }
}

/// A store whose timeout leaves room for a busy test machine: the tests
/// that count exactly must not see a spurious timeout.
fn patient(redis: &RedisServer) -> RedisStoreBuilder {
    RedisStore::builder(redis.url())
        .timeout(Duration::from_secs(2))
        .on_failure(FailPolicy::Closed)
}

async fn raw(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn check(store: &RedisStore, k: &str, quota: &Quota) -> (Verdict, Source) {
    store.check(key(k), quota, 1).await
}

/// Checks until one is refused; returns how many were admitted.
async fn drain(store: &RedisStore, k: &str, quota: &Quota) -> u32 {
    let mut admitted = 0;
    loop {
        let (verdict, source) = check(store, k, quota).await;
        assert_eq!(source, Source::Redis, "{verdict:?}");
        if !verdict.allowed {
            return admitted;
        }
        admitted += 1;
        assert!(admitted <= quota.limit() * 2, "runaway");
    }
}

/// The most timestamps within any span of `width`.
fn densest(times: &[Instant], width: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// `calls` of EVAL and EVALSHA since the last `CONFIG RESETSTAT`.
async fn script_calls(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split_once("calls=")?.1;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

async fn reset_stats(conn: &mut MultiplexedConnection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(conn)
        .await
        .unwrap();
}

/// Checks until Redis answers (the lazy connection is made, or remade after
/// an outage); panics after 15 s.
async fn wait_for_redis(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let quota = Quota::per_second(1_000_000);
    loop {
        if check(store, "wait-for-redis", &quota).await.1 == Source::Redis {
            return;
        }
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn counter_admits_the_limit_then_again_after_the_window() {
    let redis = RedisServer::start();
    let store = patient(&redis).build().unwrap();
    let quota = Quota::per_second(5);
    let mut first_reset = None;
    for expected_remaining in (0..5).rev() {
        let (verdict, source) = check(&store, "a", &quota).await;
        assert!(verdict.allowed);
        assert_eq!(source, Source::Redis);
        assert_eq!(verdict.limit, 5);
        assert_eq!(verdict.remaining, expected_remaining);
        assert!(verdict.reset_after <= Duration::from_secs(1));
        first_reset.get_or_insert(verdict.reset_after);
    }
    let (refused, _) = check(&store, "a", &quota).await;
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let retry = refused.retry_after.expect("a retry time");
    assert!(retry <= Duration::from_secs(2), "{refused:?}");
    // When the six checks fell in one window (Redis's clock, so the burst
    // may straddle a window's start, which makes an earlier retry right),
    // the sixth fits only once the next window has started and enough of
    // this one has slid out.
    if first_reset.is_some_and(|first| refused.reset_after <= first) {
        assert!(retry > refused.reset_after, "{refused:?}");
    }
    // Other keys are not affected.
    assert!(check(&store, "b", &quota).await.0.allowed);

    tokio::time::sleep(retry).await;
    let (again, _) = check(&store, "a", &quota).await;
    assert!(again.allowed, "admitted at the retry time: {again:?}");

    // Two windows later nothing of the past weighs: the full limit again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(drain(&store, "a", &quota).await, 5);
}

#[tokio::test]
async fn sliding_log_admits_the_limit_and_its_retry_time_is_exact() {
    let redis = RedisServer::start();
    let store = patient(&redis)
        .algorithm(Algorithm::SlidingLog)
        .build()
        .unwrap();
    let quota = Quota::per_second(5);
    assert_eq!(drain(&store, "a", &quota).await, 5);
    let (refused, _) = check(&store, "a", &quota).await;
    let retry = refused.retry_after.expect("a retry time");
    assert!(retry <= Duration::from_secs(1), "{refused:?}");
    assert!(refused.reset_after <= Duration::from_secs(1));

    tokio::time::sleep(retry).await;
    let (again, _) = check(&store, "a", &quota).await;
    assert!(again.allowed, "{again:?}");

    // Costs: a cost of 3 needs three entries to have left.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (big, _) = store.check(key("a"), &quota, 3).await;
    assert!(big.allowed);
    assert_eq!(big.remaining, 2);
    let (too_big, _) = store.check(key("a"), &quota, 3).await;
    assert!(!too_big.allowed);
    assert!(too_big.retry_after.is_some());
    assert!(store.check(key("a"), &quota, 2).await.0.allowed);
}

#[tokio::test]
async fn impossible_requests_are_refused_without_a_retry_time() {
    let redis = RedisServer::start();
    for algorithm in [Algorithm::SlidingWindowCounter, Algorithm::SlidingLog] {
        let store = patient(&redis).algorithm(algorithm).build().unwrap();
        let (zero, _) = check(&store, "z", &Quota::per_second(0)).await;
        assert!(!zero.allowed);
        assert_eq!(zero.retry_after, None);
        let (too_big, _) = store.check(key("z"), &Quota::per_second(3), 4).await;
        assert!(!too_big.allowed);
        assert_eq!(too_big.retry_after, None);
        // Neither was counted: the full quota is there.
        assert_eq!(drain(&store, "z", &Quota::per_second(3)).await, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_quota() {
    let redis = RedisServer::start();
    for algorithm in [Algorithm::SlidingLog, Algorithm::SlidingWindowCounter] {
        let a = patient(&redis).algorithm(algorithm).build().unwrap();
        let b = patient(&redis).algorithm(algorithm).build().unwrap();
        let quota = Quota::per_minute(50);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.check(key("shared"), &quota, 1).await
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            let (verdict, source) = task.await.unwrap();
            assert_eq!(source, Source::Redis);
            admitted += u32::from(verdict.allowed);
        }
        // The log is exact. The counter is exact within one fixed window;
        // a burst crossing a window boundary e seconds in could admit
        // floor(count × e / 60) more, which is 0 for a burst under a second.
        assert_eq!(admitted, 50, "{algorithm:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retrying_while_limited_gets_in_again() {
    let redis = RedisServer::start();
    let quota = Quota::per_second(5);
    let window = quota.window();
    let run = |algorithm| {
        let store = patient(&redis).algorithm(algorithm).build().unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut admitted = Vec::new();
            // Hammer every 20 ms for 3.2 s.
            while started.elapsed() < Duration::from_millis(3200) {
                let (verdict, source) = check(&store, "hammer", &quota).await;
                assert_eq!(source, Source::Redis);
                if verdict.allowed {
                    admitted.push(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (started, admitted)
        })
    };
    let log = run(Algorithm::SlidingLog);
    let counter = run(Algorithm::SlidingWindowCounter);
    for (name, task) in [("log", log), ("counter", counter)] {
        let (started, admitted) = task.await.unwrap();
        // About 16 are due (5 at once, then 5/s); counted rejections would
        // keep it at 5 for good. The margin is for a loaded machine, where
        // the 20 ms loop runs late.
        assert!(admitted.len() >= 12, "{name}: {}", admitted.len());
        let last = *admitted.last().unwrap() - started;
        assert!(last >= Duration::from_millis(2500), "{name}: {last:?}");
        // Densest stretch, measured on this side of the network: narrow the
        // window by 50 ms for the jitter between Redis's clock and ours.
        let densest = densest(&admitted, window - Duration::from_millis(50));
        println!(
            "{name}: {} admitted in 3.2 s at 50 requests/s against 5/s; at most {densest} in any window",
            admitted.len()
        );
        match name {
            "log" => assert!(densest <= 5, "{densest}"),
            // The counter's worst case is twice the limit in a sliding
            // window.
            _ => assert!(densest <= 10, "{densest}"),
        }
    }
}

#[tokio::test]
async fn keys_carry_ttls_and_refusals_do_not_extend_them() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis).await;
    let quota = Quota::new(2, Duration::from_secs(10));
    let counter = patient(&redis).prefix("ttl:").build().unwrap();
    let log = patient(&redis)
        .prefix("ttl:")
        .algorithm(Algorithm::SlidingLog)
        .build()
        .unwrap();
    assert_eq!(drain(&counter, "k", &quota).await, 2);
    assert_eq!(drain(&log, "k", &quota).await, 2);

    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("ttl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys, ["ttl:{general:k}:log", "ttl:{general:k}:swc"]);
    let pttl = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(name)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // The counter lives until its window's successor ends: at most two
    // windows; the log one window after its newest entry.
    let counter_ttl = pttl("ttl:{general:k}:swc").await;
    assert!((10_000..=20_000).contains(&counter_ttl), "{counter_ttl}");
    let log_ttl = pttl("ttl:{general:k}:log").await;
    assert!((9_000..=10_000).contains(&log_ttl), "{log_ttl}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert!(!check(&counter, "k", &quota).await.0.allowed);
        assert!(!check(&log, "k", &quota).await.0.allowed);
    }
    assert!(pttl("ttl:{general:k}:swc").await <= counter_ttl - 250);
    assert!(pttl("ttl:{general:k}:log").await <= log_ttl - 250);

    // Short windows: gone soon after.
    let short = Quota::new(2, Duration::from_millis(100));
    assert!(check(&counter, "short", &short).await.0.allowed);
    assert!(check(&log, "short", &short).await.0.allowed);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("ttl:{general:short}*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn memory_per_key_is_as_documented() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis).await;
    let counter = patient(&redis).build().unwrap();
    let log = patient(&redis)
        .algorithm(Algorithm::SlidingLog)
        .build()
        .unwrap();
    let usage = |name: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(name)
                .arg("SAMPLES")
                .arg(0)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let quota = Quota::per_hour(100_000);
    let ip = "203.0.113.7";
    check(&counter, ip, &quota).await;
    let counter_bytes = usage(format!("rl:{{general:{ip}}}:swc")).await;

    // Per entry, from the difference between two sizes of one encoding.
    for _ in 0..10 {
        check(&log, ip, &quota).await;
    }
    let log_10 = usage(format!("rl:{{general:{ip}}}:log")).await;
    for _ in 0..100 {
        check(&log, ip, &quota).await;
    }
    let log_110 = usage(format!("rl:{{general:{ip}}}:log")).await;
    let small_entry = (log_110 - log_10) / 100;
    assert!(log.check(key(ip), &quota, 1000).await.0.allowed);
    let log_1110 = usage(format!("rl:{{general:{ip}}}:log")).await;
    for _ in 0..10 {
        assert!(log.check(key(ip), &quota, 1000).await.0.allowed);
    }
    let log_11110 = usage(format!("rl:{{general:{ip}}}:log")).await;
    let large_entry = (log_11110 - log_1110) / 10_000;
    println!(
        "counter: {counter_bytes} B per key; log: {small_entry} B per entry (listpack), \
         {large_entry} B per entry (skiplist, 11 110 entries = {log_11110} B)"
    );
    // The figures in the module documentation.
    assert!((90..=120).contains(&counter_bytes), "{counter_bytes}");
    assert!((35..=55).contains(&small_entry), "{small_entry}");
    assert!((100..=140).contains(&large_entry), "{large_entry}");
    let _ = &mut conn;
}

#[tokio::test]
async fn client_keys_with_braces_and_spaces_keep_their_own_counters() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis).await;
    let store = patient(&redis).build().unwrap();
    let quota = Quota::per_minute(2);
    let odd = "a {b} c}{ d";
    assert_eq!(drain(&store, odd, &quota).await, 2);
    assert_eq!(drain(&store, "a {b} c", &quota).await, 2);
    assert_eq!(drain(&store, "a %7Bb%7D c", &quota).await, 2);
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "rl:{general:a %257Bb%257D c}:swc",
            "rl:{general:a %7Bb%7D c%7D%7B d}:swc",
            "rl:{general:a %7Bb%7D c}:swc",
        ]
    );
}

/// Runs one outage: Redis up, down (checks answer fast under `policy`),
/// up again (shared counting resumes). Returns the verdicts while down.
async fn outage(policy: FailPolicy, build_while_down: bool) -> Vec<(Verdict, Source)> {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let builder = || {
        RedisStore::builder(&url)
            .on_failure(policy)
            .breaker(3, Duration::from_millis(300))
    };
    if build_while_down {
        redis.stop();
    }
    let (a, b) = (builder().build().unwrap(), builder().build().unwrap());
    if !build_while_down {
        wait_for_redis(&a).await;
        redis.stop();
    }

    let quota = Quota::per_minute(3);
    let mut down = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        down.push(check(&a, "down", &quota).await);
        slowest = slowest.max(started.elapsed());
    }
    println!("{policy:?}: slowest check while down {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert!(!a.is_available(), "the breaker opened");

    redis.start_again();
    wait_for_redis(&a).await;
    wait_for_redis(&b).await;
    // Shared again: four checks each, three admitted in all.
    let fresh = Quota::per_minute(3);
    let mut admitted = 0;
    for _ in 0..4 {
        for store in [&a, &b] {
            let (verdict, source) = check(store, "after", &fresh).await;
            assert_eq!(source, Source::Redis);
            admitted += u32::from(verdict.allowed);
        }
    }
    assert_eq!(admitted, 3);
    down
}

#[tokio::test]
async fn fail_open_admits_while_redis_is_down() {
    let down = outage(FailPolicy::Open, false).await;
    for (verdict, source) in down {
        assert!(verdict.allowed);
        assert_eq!(source, Source::FailOpen);
    }
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down_even_when_built_then() {
    let down = outage(FailPolicy::Closed, true).await;
    for (verdict, source) in down {
        assert!(!verdict.allowed);
        assert_eq!(source, Source::FailClosed);
        assert_eq!(verdict.retry_after, Some(Duration::from_millis(300)));
    }
}

#[tokio::test]
async fn local_fallback_counts_in_process_while_redis_is_down() {
    let down = outage(FailPolicy::Local, false).await;
    let allowed: Vec<bool> = down.iter().map(|(v, _)| v.allowed).collect();
    assert_eq!(allowed[..4], [true, true, true, false]);
    assert!(allowed[3..].iter().all(|a| !a));
    assert!(down.iter().all(|(_, s)| *s == Source::Fallback));
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let redis = RedisServer::start();
    let store = RedisStore::builder(redis.url())
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    wait_for_redis(&store).await;
    // Redis holds every client's commands for two seconds: a hang, not a
    // refused connection.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async::<()>(&mut raw(&redis).await)
        .await
        .unwrap();
    let started = Instant::now();
    let (verdict, source) = check(&store, "k", &Quota::per_minute(10)).await;
    let elapsed = started.elapsed();
    assert!(verdict.allowed);
    assert_eq!(source, Source::Fallback);
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(600),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn leases_take_one_redis_call_per_batch() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis).await;
    let quota = Quota::per_minute(10_000);
    let leased = patient(&redis)
        .leases(LeaseConfig::new(10).ttl(Duration::from_secs(30)))
        .build()
        .unwrap();
    let plain = patient(&redis).build().unwrap();
    // Load the script first, so NOSCRIPT round trips are not counted.
    check(&plain, "warm-up", &quota).await;

    reset_stats(&mut conn).await;
    let mut from_lease = 0;
    for _ in 0..1000 {
        let (verdict, source) = check(&leased, "busy", &quota).await;
        assert!(verdict.allowed);
        from_lease += u32::from(source == Source::Lease);
    }
    let with_leases = script_calls(&mut conn).await;

    reset_stats(&mut conn).await;
    for _ in 0..1000 {
        assert!(check(&plain, "busy-plain", &quota).await.0.allowed);
    }
    let without = script_calls(&mut conn).await;
    println!("redis calls per 1000 checks: {with_leases} with batches of 10, {without} without");
    assert_eq!(with_leases, 100);
    assert_eq!(from_lease, 900);
    assert_eq!(without, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_leases_overshoot_within_the_bound() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis).await;
    let quota = Quota::per_second(100);
    let batch = 10;
    let build = || {
        patient(&redis)
            .algorithm(Algorithm::SlidingLog)
            .leases(LeaseConfig::new(batch))
            .build()
            .unwrap()
    };
    let instances = [build(), build()];
    check(&instances[0], "warm-up", &quota).await;
    reset_stats(&mut conn).await;

    let admitted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for store in instances {
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut checks = 0u64;
            // About 400 requests per second per instance, four times the
            // quota together, for three seconds.
            while started.elapsed() < Duration::from_secs(3) {
                let (verdict, _) = check(&store, "shared", &quota).await;
                checks += 1;
                if verdict.allowed {
                    admitted.lock().unwrap().push(Instant::now());
                }
                tokio::time::sleep(Duration::from_micros(2500)).await;
            }
            checks
        }));
    }
    let mut checks = 0;
    for task in tasks {
        checks += task.await.unwrap();
    }
    let calls = script_calls(&mut conn).await;
    let admitted = admitted.lock().unwrap().clone();
    let bound = 100 + 2 * (batch as usize - 1);
    // Measured on this side of the network; 50 ms narrower than the window
    // for the jitter between Redis's clock and ours.
    let densest_full = densest(&admitted, Duration::from_secs(1));
    let densest = densest(&admitted, Duration::from_millis(950));
    println!(
        "leases: {checks} checks, {calls} redis calls ({} per 1000 checks), {} admitted \
         in 3 s; at most {densest} in any 950 ms and {densest_full} in any 1 s \
         (limit 100, bound {bound})",
        calls * 1000 / checks,
        admitted.len()
    );
    assert!(densest <= bound, "{densest} > {bound}");
    assert!(admitted.len() >= 250, "{}", admitted.len());
    assert!(calls * 4 < checks, "{calls} calls for {checks} checks");
}

#[tokio::test]
async fn lease_overshoot_reaches_but_never_passes_the_bound() {
    // The worst case, built on purpose: both instances take a batch, spend
    // one unit each and hold the rest past the end of the window, then one
    // of them spends what it holds and takes the new window's units.
    let redis = RedisServer::start();
    let quota = Quota::per_second(20);
    let batch = 10;
    let build = || {
        patient(&redis)
            .algorithm(Algorithm::SlidingLog)
            .leases(LeaseConfig::new(batch).ttl(Duration::from_secs(5)))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    assert_eq!(check(&a, "k", &quota).await, (check_ok(19), Source::Redis));
    assert_eq!(check(&b, "k", &quota).await.1, Source::Redis);
    tokio::time::sleep(Duration::from_millis(1050)).await;

    // The next window, from here on: everything below takes a few ms.
    let mut admitted = 0;
    for store in [&b, &a] {
        loop {
            let (verdict, _) = check(store, "k", &quota).await;
            if !verdict.allowed {
                break;
            }
            admitted += 1;
        }
    }
    let bound = 20 + 2 * (batch - 1);
    println!("lease worst case: {admitted} admitted in one window (limit 20, bound {bound})");
    assert_eq!(admitted, bound, "the bound is reached, and not passed");
}

fn check_ok(remaining: u32) -> Verdict {
    Verdict {
        allowed: true,
        limit: 20,
        remaining,
        reset_after: Duration::from_secs(1),
        retry_after: None,
    }
}

#[tokio::test]
async fn redis_memory_reports_a_fraction_and_zero_when_unreachable() {
    let mut redis = RedisServer::builder().config("maxmemory", "64mb").start();
    let memory = RedisMemory::builder(redis.url())
        .every(Duration::from_millis(100))
        .build()
        .unwrap();
    let load = memory.refresh().await;
    println!("redis memory load with maxmemory 64mb: {load}");
    assert!(load > 0.0 && load <= 1.0, "{load}");
    assert_eq!(memory.load(), load);

    // Without maxmemory: a configured capacity, or 0.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async::<()>(&mut raw(&redis).await)
        .await
        .unwrap();
    let with_capacity = RedisMemory::builder(redis.url())
        .capacity(32 * 1024 * 1024)
        .build()
        .unwrap();
    let doubled = with_capacity.refresh().await;
    assert!(doubled > load && doubled <= 1.0, "{doubled} vs {load}");
    let unbounded = RedisMemory::builder(redis.url()).build().unwrap();
    assert_eq!(unbounded.refresh().await, 0.0);

    redis.stop();
    let started = Instant::now();
    assert_eq!(memory.refresh().await, 0.0);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The background sampler reads 0 too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(memory.load(), 0.0);
}

#[test]
fn building_needs_a_runtime_and_a_valid_prefix() {
    assert!(matches!(
        RedisStore::builder("redis://127.0.0.1:1/").build(),
        Err(Error::NoRuntime(_))
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(matches!(
            RedisStore::builder("redis://127.0.0.1:1/")
                .prefix("rl:{x}:")
                .build(),
            Err(Error::InvalidPrefix(_))
        ));
        assert!(matches!(
            RedisStore::builder("not a url").build(),
            Err(Error::Redis(_))
        ));
    });
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_keys_on_every_master() {
    use hasivu_testkit::RedisCluster;

    let cluster = RedisCluster::start();
    let build = || {
        RedisStore::cluster(cluster.urls())
            .timeout(Duration::from_secs(2))
            .on_failure(FailPolicy::Closed)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let mut node0 = redis::Client::open(cluster.urls()[0].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // One client key per master.
    let mut picked: [Option<(String, String)>; 3] = [None, None, None];
    for i in 0..100 {
        let client = format!("client {{{i}}}");
        let name = format!("rl:{{general:client %7B{i}%7D}}:swc");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&name)
            .query_async(&mut node0)
            .await
            .unwrap();
        // Node i serves the i-th third of the slots.
        let node = match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        };
        picked[node].get_or_insert((client, name));
    }
    let quota = Quota::per_minute(3);
    for (node, pick) in picked.iter().enumerate() {
        let (client, name) = pick.as_ref().expect("a key on every master");
        let mut admitted = 0;
        for _ in 0..3 {
            for store in [&a, &b] {
                let (verdict, source) = check(store, client, &quota).await;
                assert_eq!(source, Source::Redis);
                admitted += u32::from(verdict.allowed);
            }
        }
        assert_eq!(admitted, 3, "{client}");
        // The counter sits on the master that owns its slot.
        let mut owner = redis::Client::open(cluster.urls()[node].as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let exists: u32 = redis::cmd("EXISTS")
            .arg(name)
            .query_async(&mut owner)
            .await
            .unwrap();
        assert_eq!(exists, 1, "{name} on node {node}");
    }
}
