//! `RedisHistoryStore` behind a fault-injecting proxy (a real Redis started
//! by the testkit, `FaultProxy` in between): while Redis is stalled or the
//! connection half-open, saving and loading fail with an error within a
//! bound instead of hanging; once the network heals they work again.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use hasivu_metrics::{
    Error,
    regression::{History, HistoryStore, Point, RedisHistoryStore},
};
use hasivu_testkit::{FaultProxy, RedisServer};

/// The store's timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(500);

/// What one call may take while Redis misbehaves: the timeout (documented
/// as the bound of the whole call, connecting included), plus slack for a
/// loaded machine. A hang would take for ever.
const BOUND: Duration = Duration::from_millis(500 + 250);

/// How soon after the network heals calls succeed again.
const RECOVERY: Duration = Duration::from_secs(5);

fn history(p95_ms: f64) -> History {
    let mut history = History::default();
    let points = (0..60)
        .map(|minute| Point {
            start_secs: 1_795_000_000 + minute * 60,
            requests: 100,
            errors: 1,
            p95_ms,
            version: 0,
        })
        .collect();
    history.routes.insert("GET /menu/daily".to_owned(), points);
    history
}

fn timed<T>(call: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = call();
    (out, started.elapsed())
}

/// Saves and loads through the fault: both are errors within the bound.
/// Returns the slowest call.
fn through_the_fault(store: &RedisHistoryStore, saved: &History) -> Duration {
    let (saving, save_took) = timed(|| store.save(saved));
    assert!(
        matches!(saving, Err(Error::HistoryRedis { .. })),
        "{saving:?}"
    );
    let (loading, load_took) = timed(|| store.load());
    assert!(
        matches!(loading, Err(Error::HistoryRedis { .. })),
        "{loading:?}"
    );
    let slowest = save_took.max(load_took);
    assert!(slowest <= BOUND, "a call took {slowest:?}");
    slowest
}

/// Saves `history` and loads it back until both succeed (each call within
/// the bound); returns how long that took.
fn until_it_works(store: &RedisHistoryStore, history: &History, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (saved, save_took) = timed(|| store.save(history));
        let (loaded, load_took) = timed(|| store.load());
        assert!(
            save_took.max(load_took) <= BOUND,
            "{what}: a call took {:?}",
            save_took.max(load_took)
        );
        if saved.is_ok() && loaded.as_ref().is_ok_and(|h| h.as_ref() == Some(history)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{what}: still failing {RECOVERY:?} after healing: {saved:?} {loaded:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stalled_redis_makes_saves_and_loads_quick_errors_and_they_work_after_heal() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let store = RedisHistoryStore::new(&proxy.redis_url(), "app:regression-history")
        .unwrap()
        .timeout(TIMEOUT);
    until_it_works(&store, &history(10.0), "first connection");

    proxy.stall();
    // The save held by the stall reaches Redis once it heals: it is the
    // same history as the one saved after, so the order does not matter.
    let after = history(12.0);
    let slowest = through_the_fault(&store, &after);
    eprintln!("history store, stalled: slowest call {slowest:?}");

    proxy.heal();
    let recovered = until_it_works(&store, &after, "after the stall");
    eprintln!("history store, stalled: works again {recovered:?} after healing");
}

#[test]
fn a_half_open_connection_makes_saves_and_loads_quick_errors_and_they_work_after_heal() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let store = RedisHistoryStore::new(&proxy.redis_url(), "app:regression-history")
        .unwrap()
        .timeout(TIMEOUT);
    until_it_works(&store, &history(10.0), "first connection");

    proxy.half_open();
    let slowest = through_the_fault(&store, &history(11.0));
    eprintln!("history store, half-open: slowest call {slowest:?}");

    proxy.heal();
    let recovered = until_it_works(&store, &history(12.0), "after the half-open connection");
    eprintln!("history store, half-open: works again {recovered:?} after healing");
}

#[test]
fn a_slow_link_cannot_stretch_a_call_past_the_timeout() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let store = RedisHistoryStore::new(&proxy.redis_url(), "app:regression-history")
        .unwrap()
        .timeout(TIMEOUT);
    // About 300 KB of JSON: routes with a long history each.
    let mut big = History::default();
    for route in 0..6 {
        let points = (0..500)
            .map(|minute| Point {
                start_secs: 1_795_000_000 + minute * 60,
                requests: 100 + minute,
                errors: 1,
                p95_ms: 12.5 + minute as f64 / 7.0,
                version: 0,
            })
            .collect();
        big.routes.insert(format!("GET /route/{route}"), points);
    }
    until_it_works(&store, &history(10.0), "first connection");

    // Every chunk crosses the link 300 ms late, well within the timeout:
    // the handshake, the 300 KB and the reply each wait a while, and
    // together they outlast the timeout.
    proxy.latency(Duration::from_millis(300));
    let (saving, took) = timed(|| store.save(&big));
    eprintln!("history store, slow link: a 300 KB save returned after {took:?}");
    assert!(took <= BOUND, "a save took {took:?}");
    assert!(
        matches!(saving, Err(Error::HistoryRedis { .. })),
        "{saving:?}"
    );

    proxy.heal();
    let recovered = until_it_works(&store, &big, "after the slow link");
    eprintln!("history store, slow link: works again {recovered:?} after healing");
}
