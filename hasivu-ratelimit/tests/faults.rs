//! The Redis store and the Redis blocklist behind a fault-injecting proxy
//! (a real Redis, started by the testkit, with `FaultProxy` in between):
//! a stalled Redis, half-open connections and resets. Every decision stays
//! within the documented budget and follows its fail policy; once the
//! network heals, state is shared through Redis again within a stated time.
#![cfg(all(feature = "redis", feature = "tower"))]

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hasivu_ratelimit::{
    Decision, FailPolicy, LeaseConfig, Limiter, Quota, RedisMemory, RedisStore, Source,
    http::PeerAddr,
    shield::{Blocklist, InspectedBody, RedisBlocklist, ShieldLayer, Strikes},
};
use hasivu_testkit::{FaultProxy, RedisServer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

/// The store's and the blocklist's documented timeout (their default).
const TIMEOUT: Duration = Duration::from_millis(50);

/// What one decision may take while Redis misbehaves: the timeout plus
/// slack for a loaded test machine. Not a speed figure: a check that hangs
/// on a dead connection takes seconds, or forever.
const BUDGET: Duration = Duration::from_millis(250);

/// How soon after the network heals decisions are counted in Redis again:
/// the breaker's open period (1 s by default), a reconnection and slack.
const RECOVERY: Duration = Duration::from_secs(5);

/// A limiter on the store behind the proxy, with the documented defaults
/// (50 ms timeout, breaker 5 failures / 1 s) and `policy`.
fn proxied(proxy: &FaultProxy, prefix: &str, policy: FailPolicy) -> Limiter<RedisStore> {
    limiter(
        RedisStore::builder(proxy.redis_url())
            .prefix(prefix)
            .timeout(TIMEOUT)
            .on_failure(policy)
            .build()
            .unwrap(),
    )
}

/// A limiter straight on Redis, patient, as another instance that never
/// saw the fault.
fn direct(redis: &RedisServer, prefix: &str) -> Limiter<RedisStore> {
    limiter(
        RedisStore::builder(redis.url())
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .on_failure(FailPolicy::Closed)
            .build()
            .unwrap(),
    )
}

fn limiter(store: RedisStore) -> Limiter<RedisStore> {
    Limiter::builder()
        .store(store)
        .quota(Quota::per_minute(3))
        .build()
}

/// One check, timed.
async fn timed(limiter: &Limiter<RedisStore>, key: &str) -> (Decision, Duration) {
    let started = Instant::now();
    let decision = limiter.check(key, 1).await;
    (decision, started.elapsed())
}

/// Checks a key with a huge quota until Redis decides again; every check
/// on the way must stay within the budget. Returns how long it took.
async fn until_counted_in_redis(limiter: &Limiter<RedisStore>, what: &str) -> Duration {
    let started = Instant::now();
    let probe = Limiter::builder()
        .store(limiter.store().clone())
        .quota(Quota::per_second(1_000_000))
        .build();
    loop {
        let (decision, took) = timed(&probe, "probe").await;
        assert!(took <= BUDGET, "{what}: a check took {took:?}");
        if decision.source == Source::Redis {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{what}: still not counted in Redis {RECOVERY:?} after healing (last source {:?})",
            decision.source
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The proxied instance and a direct one share one quota again: two checks
/// each against 3 per minute admit exactly 3, all decided by Redis.
async fn assert_shared(a: &Limiter<RedisStore>, b: &Limiter<RedisStore>, key: &str) {
    let mut admitted = 0;
    for _ in 0..2 {
        for limiter in [a, b] {
            let decision = limiter.check(key, 1).await;
            assert_eq!(decision.source, Source::Redis, "{decision:?}");
            admitted += u32::from(decision.verdict.allowed);
        }
    }
    assert_eq!(admitted, 3, "one quota shared through Redis");
}

/// Ten checks of one key (quota 3 per minute) while the fault lasts: each
/// within the budget. Returns the decisions and the slowest.
async fn ten_checks(limiter: &Limiter<RedisStore>, key: &str) -> (Vec<Decision>, Duration) {
    let mut decisions = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (decision, took) = timed(limiter, key).await;
        slowest = slowest.max(took);
        decisions.push(decision);
    }
    (decisions, slowest)
}

fn assert_policy(policy: FailPolicy, decisions: &[Decision]) {
    match policy {
        FailPolicy::Open => {
            for d in decisions {
                assert!(d.verdict.allowed, "{d:?}");
                assert_eq!(d.source, Source::FailOpen);
            }
        }
        FailPolicy::Closed => {
            for d in decisions {
                assert!(!d.verdict.allowed, "{d:?}");
                assert_eq!(d.source, Source::FailClosed);
                assert_eq!(d.verdict.retry_after, Some(Duration::from_secs(1)));
            }
        }
        _ => {
            // Counted in process: the limit holds on this instance.
            let allowed: Vec<bool> = decisions.iter().map(|d| d.verdict.allowed).collect();
            assert_eq!(allowed[..4], [true, true, true, false], "{decisions:?}");
            assert!(allowed[3..].iter().all(|a| !a), "{decisions:?}");
            assert!(decisions.iter().all(|d| d.source == Source::Fallback));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_keeps_every_policy_within_the_budget_and_counting_resumes_after_heal() {
    let redis = RedisServer::start();
    for policy in [FailPolicy::Local, FailPolicy::Open, FailPolicy::Closed] {
        let proxy = FaultProxy::start(redis.addr());
        let prefix = format!("stall:{policy:?}:");
        let limiter = proxied(&proxy, &prefix, policy);
        let other = direct(&redis, &prefix);
        until_counted_in_redis(&limiter, "first connection").await;

        proxy.stall();
        let (decisions, slowest) = ten_checks(&limiter, "stalled").await;
        eprintln!("{policy:?}: slowest decision while stalled {slowest:?}");
        assert!(slowest <= BUDGET, "{policy:?}: a decision took {slowest:?}");
        assert_policy(policy, &decisions);

        proxy.heal();
        let recovered = until_counted_in_redis(&limiter, "after the stall").await;
        eprintln!("{policy:?}: counted in Redis again {recovered:?} after healing");
        assert_shared(&limiter, &other, "after-stall").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_replaced_and_counting_resumes_after_heal() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let limiter = proxied(&proxy, "half-open:", FailPolicy::Local);
    let other = direct(&redis, "half-open:");
    until_counted_in_redis(&limiter, "first connection").await;
    let accepted = proxy.accepted_connections();

    // The peer vanishes without a FIN: the open connection is dead for good.
    proxy.half_open();
    let (decisions, slowest) = ten_checks(&limiter, "half-open").await;
    eprintln!("half-open: slowest decision {slowest:?}");
    assert!(slowest <= BUDGET, "a decision took {slowest:?}");
    assert_policy(FailPolicy::Local, &decisions);

    // New connections work again; the old one never will.
    proxy.heal();
    let recovered = until_counted_in_redis(&limiter, "after the half-open connection").await;
    eprintln!("half-open: counted in Redis again {recovered:?} after healing");
    assert!(
        proxy.accepted_connections() > accepted,
        "the store made a new connection"
    );
    assert_shared(&limiter, &other, "after-half-open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_are_remade_and_counting_resumes() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let limiter = proxied(&proxy, "reset:", FailPolicy::Local);
    let other = direct(&redis, "reset:");
    until_counted_in_redis(&limiter, "first connection").await;

    let started = Instant::now();
    proxy.reset();
    let recovered = until_counted_in_redis(&limiter, "after the reset").await;
    eprintln!("reset: counted in Redis again {recovered:?} after the reset");
    assert!(started.elapsed() < RECOVERY);
    assert_shared(&limiter, &other, "after-reset").await;
}

/// 200 checks at once while Redis is stalled: each is timed in its own
/// task; returns the slowest (each must answer, none may hang).
async fn two_hundred_at_once(limiter: &Limiter<RedisStore>, same_key: bool) -> Duration {
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let key = if same_key {
                    "crowd".to_owned()
                } else {
                    format!("client-{i}")
                };
                timed(&limiter, &key).await
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (decision, took) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a check hung")
            .unwrap();
        assert_eq!(decision.source, Source::Fallback, "{decision:?}");
        slowest = slowest.max(took);
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_checks_during_a_stall_stay_within_the_budget() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    // Two instances, so each crowd meets a closed breaker.
    let many = proxied(&proxy, "crowd:", FailPolicy::Local);
    let one = proxied(&proxy, "crowd:", FailPolicy::Local);
    until_counted_in_redis(&many, "first connection").await;
    until_counted_in_redis(&one, "first connection").await;

    proxy.stall();
    let slowest = two_hundred_at_once(&many, false).await;
    eprintln!("200 concurrent checks, 200 keys: slowest {slowest:?}");
    assert!(slowest <= BUDGET, "a check took {slowest:?}");
    let slowest = two_hundred_at_once(&one, true).await;
    eprintln!("200 concurrent checks, one key: slowest {slowest:?}");
    assert!(slowest <= BUDGET, "a check took {slowest:?}");

    proxy.heal();
    for limiter in [&many, &one] {
        let recovered = until_counted_in_redis(limiter, "after the stall").await;
        eprintln!("200 concurrent checks: counted in Redis again {recovered:?} after healing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_leased_checks_of_one_key_during_a_stall_stay_within_the_budget() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let limiter = limiter(
        RedisStore::builder(proxy.redis_url())
            .prefix("leased:")
            .timeout(TIMEOUT)
            .leases(LeaseConfig::new(10))
            .build()
            .unwrap(),
    );
    until_counted_in_redis(&limiter, "first connection").await;

    // Takes for one key queue behind each other: each waiter must not add
    // a timeout of its own to the one it waited for.
    proxy.stall();
    let slowest = two_hundred_at_once(&limiter, true).await;
    eprintln!("200 concurrent leased checks, one key: slowest {slowest:?}");
    assert!(slowest <= BUDGET, "a check took {slowest:?}");

    proxy.heal();
    let recovered = until_counted_in_redis(&limiter, "after the stall").await;
    eprintln!("200 concurrent leased checks: counted in Redis again {recovered:?} after healing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_signal_reads_again_after_a_half_open_connection() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let memory = RedisMemory::builder(proxy.redis_url())
        .capacity(1 << 30)
        .timeout(TIMEOUT)
        .every(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Samples until Redis answers (a load above 0); each sample bounded.
    let until_read = |what: &'static str| {
        let memory = memory.clone();
        async move {
            let started = Instant::now();
            loop {
                let sample = Instant::now();
                let load = memory.refresh().await;
                assert!(
                    sample.elapsed() <= BUDGET,
                    "{what}: a sample took {:?}",
                    sample.elapsed()
                );
                if load > 0.0 {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < RECOVERY,
                    "{what}: the signal still reads 0 after {RECOVERY:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until_read("first connection").await;

    proxy.half_open();
    let started = Instant::now();
    assert_eq!(memory.refresh().await, 0.0, "unreachable reads 0");
    let took = started.elapsed();
    eprintln!("memory signal, half-open: sample took {took:?}");
    assert!(took <= BUDGET, "a sample took {took:?}");

    proxy.heal();
    let recovered = until_read("after the half-open connection").await;
    eprintln!("memory signal, half-open: reads again {recovered:?} after healing");
}

// The shield's blocklist.

async fn ok(
    request: Request<InspectedBody<Full<Bytes>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request;
    Ok(Response::new(Full::new(Bytes::new())))
}

fn request(peer: IpAddr, uri: &str) -> Request<Full<Bytes>> {
    let mut r = Request::get(uri)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

fn blocklist(url: String, prefix: &str) -> RedisBlocklist {
    RedisBlocklist::builder(url)
        .prefix(prefix)
        .timeout(TIMEOUT)
        // Every lookup asks Redis, so sharing shows at once.
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap()
}

fn peer(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))
}

/// Blocks a fresh client through `a` until `b` (straight on Redis) sees
/// it; every call within the budget. Returns how long it took.
async fn until_blocks_are_shared(a: &RedisBlocklist, b: &RedisBlocklist, what: &str) -> Duration {
    let started = Instant::now();
    for i in 100..=255u8 {
        let client = peer(i);
        let call = Instant::now();
        let blocked = a.block(client, Duration::from_secs(60), "test").await;
        let took = call.elapsed();
        assert!(took <= BUDGET, "{what}: a block took {took:?}");
        if blocked.is_ok() && b.lookup(client).await.is_some() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{what}: blocks not shared {RECOVERY:?} after healing ({blocked:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: ran out of clients");
}

/// While the fault lasts: clean traffic through the shield passes, lookups
/// and blocks answer within the budget, and a block holds on the instance
/// that made it. Returns the slowest call.
async fn through_the_fault(list: &RedisBlocklist) -> Duration {
    let shield = ShieldLayer::new()
        .strikes(Strikes::first())
        .blocklist(list.clone())
        .layer(service_fn(ok));
    let mut slowest = Duration::ZERO;
    for i in 1..=30u8 {
        let started = Instant::now();
        let answer = shield
            .clone()
            .oneshot(request(peer(i), "/menu"))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status(), StatusCode::OK, "refused because of Redis");

        let started = Instant::now();
        assert_eq!(list.lookup(peer(i)).await, None);
        slowest = slowest.max(started.elapsed());
    }
    for i in 31..=35u8 {
        let started = Instant::now();
        let _ = list.block(peer(i), Duration::from_secs(60), "test").await;
        slowest = slowest.max(started.elapsed());
        let started = Instant::now();
        assert!(list.lookup(peer(i)).await.is_some(), "the block holds here");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_never_holds_or_refuses_traffic_and_blocks_are_shared_after_heal() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let a = blocklist(proxy.redis_url(), "faults:stall:");
    let b = blocklist(redis.url(), "faults:stall:");
    until_blocks_are_shared(&a, &b, "first connection").await;

    proxy.stall();
    let slowest = through_the_fault(&a).await;
    eprintln!("blocklist, stalled: slowest call {slowest:?}");
    assert!(slowest <= BUDGET, "a call took {slowest:?}");

    proxy.heal();
    let recovered = until_blocks_are_shared(&a, &b, "after the stall").await;
    eprintln!("blocklist, stalled: blocks shared again {recovered:?} after healing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_half_open_connection_blocks_are_shared_again() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let a = blocklist(proxy.redis_url(), "faults:half-open:");
    let b = blocklist(redis.url(), "faults:half-open:");
    until_blocks_are_shared(&a, &b, "first connection").await;

    proxy.half_open();
    let slowest = through_the_fault(&a).await;
    eprintln!("blocklist, half-open: slowest call {slowest:?}");
    assert!(slowest <= BUDGET, "a call took {slowest:?}");

    proxy.heal();
    let recovered = until_blocks_are_shared(&a, &b, "after the half-open connection").await;
    eprintln!("blocklist, half-open: blocks shared again {recovered:?} after healing");
}
