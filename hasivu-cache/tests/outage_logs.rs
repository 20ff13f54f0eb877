//! What a Redis outage writes to the log: a client can make a service
//! write, set or invalidate once per request, and during an outage each of
//! those fails; the log must not grow with them.
#![cfg(feature = "redis")]

use std::time::Duration;

use hasivu_cache::{Cache, EntryOptions};
use hasivu_testkit::{LogCapture, RedisServer};

/// 300 writes and 300 invalidations of client-chosen keys while Redis is
/// down: a handful of warnings, which name no key and count what they
/// stand for.
#[test]
fn an_outage_writes_a_bounded_log_whatever_the_requests() {
    let capture = LogCapture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut redis = RedisServer::start();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            let cache: Cache = Cache::builder()
                .redis(redis.url())
                .l2_timeout(Duration::from_millis(100))
                .breaker(2, Duration::from_millis(200))
                .build()
                .unwrap();
            redis.stop();
            let options = EntryOptions::new(Duration::from_secs(60));
            for i in 0..300 {
                cache
                    .set(&format!("client:{i}:x"), i, &options)
                    .await
                    .unwrap();
                let done = cache.invalidate_key(&format!("client:{i}:y")).await;
                assert!(!done.unwrap().propagated, "Redis is down");
            }
        });
    });
    let events = capture.events();
    let warnings: Vec<_> = events.iter().filter(|e| e.starts_with("WARN")).collect();
    assert!(
        warnings.len() <= 6,
        "{} warnings for 600 calls: {warnings:#?}",
        warnings.len()
    );
    assert!(
        !events.iter().any(|e| e.contains("client:")),
        "a key in the log: {events:#?}"
    );
}
