//! `RedisHistoryStore` against a real Redis (through the testkit).
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use hasivu_metrics::{
    Error,
    regression::{
        History, HistoryStore, Point, RedisHistoryStore, RegressionConfig, RegressionDetector,
    },
};
use hasivu_testkit::RedisServer;

fn point(start_secs: u64, p95_ms: f64) -> Point {
    Point {
        start_secs,
        requests: 100,
        errors: 1,
        p95_ms,
        version: 0,
    }
}

#[test]
fn two_instances_share_the_history_and_a_new_one_starts_with_it() {
    let redis = RedisServer::start();
    let a = RedisHistoryStore::new(&redis.url(), "app:regression-history").unwrap();
    assert_eq!(a.load().unwrap(), None, "nothing saved yet");

    let mut detector = RegressionDetector::load(RegressionConfig::default(), &a).unwrap();
    detector.set_version("1.0.0");
    for minute in 0..30 {
        detector.record("GET /menu/daily", point(1_795_000_000 + minute * 60, 12.0));
    }
    detector.save(&a).unwrap();

    // Another instance (its own store value, same key) starts with it.
    let b = RedisHistoryStore::new(&redis.url(), "app:regression-history").unwrap();
    let loaded = RegressionDetector::load(RegressionConfig::default(), &b).unwrap();
    let history = loaded.history();
    assert_eq!(history.routes["GET /menu/daily"].len(), 30);
    assert_eq!(history, detector.history());
    assert!(history.versions.contains(&"1.0.0".to_owned()));

    // Another key is another history.
    let other = RedisHistoryStore::new(&redis.url(), "other:regression-history").unwrap();
    assert_eq!(other.load().unwrap(), None);
}

#[test]
fn a_key_holding_something_else_is_an_error_not_an_empty_history() {
    let redis = RedisServer::start();
    let store = RedisHistoryStore::new(&redis.url(), "app:regression-history").unwrap();
    store.save(&History::default()).unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg("app:regression-history")
        .arg("not json")
        .query::<()>(&mut conn)
        .unwrap();
    let error = store.load().unwrap_err();
    assert!(
        matches!(&error, Error::HistoryRedis { key, reason } if key == "app:regression-history" && reason.starts_with("not history")),
        "{error}"
    );
}

#[test]
fn a_stopped_redis_is_a_quick_error() {
    let mut redis = RedisServer::start();
    let store = RedisHistoryStore::new(&redis.url(), "app:regression-history")
        .unwrap()
        .timeout(Duration::from_millis(500));
    store.save(&History::default()).unwrap();
    redis.stop();
    let started = Instant::now();
    assert!(matches!(store.load(), Err(Error::HistoryRedis { .. })));
    assert!(matches!(
        store.save(&History::default()),
        Err(Error::HistoryRedis { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(RedisHistoryStore::new("not a url", "k").is_err());
}
