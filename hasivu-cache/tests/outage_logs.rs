//! What a Redis outage writes to the log: a client can make a service
//! write, set or invalidate once per request, and during an outage each of
//! those fails; the log must not grow with them.
#![cfg(feature = "redis")]

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use hasivu_cache::{Cache, EntryOptions};
use hasivu_testkit::RedisServer;

/// Collects every event as `LEVEL field=value …`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// 300 writes and 300 invalidations of client-chosen keys while Redis is
/// down: a handful of warnings, which name no key and count what they
/// stand for.
#[test]
fn an_outage_writes_a_bounded_log_whatever_the_requests() {
    let capture = Capture::default();
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
    let events = capture.0.lock().unwrap().clone();
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
