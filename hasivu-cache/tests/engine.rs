//! The get-or-load engine with L1 only: single flight, TTLs, fail-safe,
//! timeouts, eager refresh, warming. Time is tokio's paused clock
//! (`tokio_time(true)`), except in the one test of the default time source.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hasivu_cache::{Cache, EntryOptions, Error};
use tokio::time::{advance, sleep};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A loader counting its calls, answering `value` after `delay`.
fn loader(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    value: Result<String, &'static str>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, io::Error>> + Send>>
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            sleep(delay).await;
            value.map_err(io::Error::other)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn set_get_remove_and_types() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let options = EntryOptions::new(secs(60));
    cache
        .set("school:active:list", vec![1u32, 2, 3], &options)
        .await
        .unwrap();
    assert_eq!(
        cache.get::<Vec<u32>>("school:active:list").await.unwrap(),
        Some(vec![1, 2, 3])
    );
    // Another type under the key is a miss, not a panic.
    assert_eq!(
        cache.get::<String>("school:active:list").await.unwrap(),
        None
    );
    cache.remove("school:active:list").await.unwrap();
    assert_eq!(
        cache.get::<Vec<u32>>("school:active:list").await.unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    cache
        .set("k", 1u8, &EntryOptions::new(secs(10)))
        .await
        .unwrap();
    advance(secs(9)).await;
    assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
    advance(secs(2)).await;
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_callers_run_the_loader_once() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(secs(60));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let cache = cache.clone();
        let options = options.clone();
        let load = loader(&calls, Duration::from_millis(100), Ok("menu".into()));
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("menu:daily:current", &options, load)
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "menu");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert_eq!(stats.misses, 1000);
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_the_stale_value_when_the_loader_fails() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(secs(10))
        .fail_safe(secs(3600))
        .fail_safe_throttle(secs(30));
    let v1 = cache
        .get_or_load(
            "k",
            &options,
            loader(&calls, Duration::ZERO, Ok("v1".into())),
        )
        .await
        .unwrap();
    assert_eq!(v1, "v1");
    advance(secs(11)).await;
    let served = cache
        .get_or_load(
            "k",
            &options,
            loader(&calls, Duration::ZERO, Err("database down")),
        )
        .await
        .unwrap();
    assert_eq!(served, "v1");
    assert_eq!(cache.stats().stale_served, 1);
    assert_eq!(cache.stats().load_errors, 1);
    // Throttled: the failing loader is not called again for 30 s.
    advance(secs(5)).await;
    let again = cache
        .get_or_load(
            "k",
            &options,
            loader(&calls, Duration::ZERO, Err("database down")),
        )
        .await
        .unwrap();
    assert_eq!(again, "v1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_stale_value_the_loader_error_is_returned() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let error = cache
        .get_or_load::<String, _, _, _>(
            "k",
            &EntryOptions::new(secs(10)),
            loader(&calls, Duration::ZERO, Err("database down")),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Loader(_)), "{error:?}");
    assert!(error.to_string().contains("database down"));
}

#[tokio::test(start_paused = true)]
async fn soft_timeout_serves_stale_and_the_loader_finishes_in_the_background() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(secs(10))
        .fail_safe(secs(3600))
        .soft_timeout(Duration::from_millis(100));
    cache
        .get_or_load(
            "k",
            &options,
            loader(&calls, Duration::ZERO, Ok("v1".into())),
        )
        .await
        .unwrap();
    advance(secs(11)).await;
    let started = tokio::time::Instant::now();
    let served = cache
        .get_or_load("k", &options, loader(&calls, secs(5), Ok("v2".into())))
        .await
        .unwrap();
    assert_eq!(served, "v1");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    // The slow load completes on its own and refreshes the cache.
    sleep(Duration::from_millis(5010)).await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v2")
    );
}

#[tokio::test(start_paused = true)]
async fn hard_timeout_without_stale_is_an_error_but_the_load_completes() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(secs(10)).hard_timeout(secs(1));
    let error = cache
        .get_or_load::<String, _, _, _>("k", &options, loader(&calls, secs(3), Ok("v".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Timeout(d) if d == secs(1)),
        "{error:?}"
    );
    sleep(secs(3)).await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}

#[tokio::test(start_paused = true)]
async fn eager_refresh_reloads_once_in_the_background() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(secs(10)).eager_refresh(0.5);
    cache
        .get_or_load(
            "k",
            &options,
            loader(&calls, Duration::ZERO, Ok("v1".into())),
        )
        .await
        .unwrap();
    advance(secs(6)).await;
    // Past 50% of the TTL: callers still get v1 at once; one refresh starts.
    for _ in 0..10 {
        let value = cache
            .get_or_load("k", &options, loader(&calls, secs(1), Ok("v2".into())))
            .await
            .unwrap();
        assert_eq!(value, "v1");
    }
    sleep(Duration::from_millis(1010)).await; // just past the refresh's own 1 s
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn warming_reports_failures_without_stopping_the_others() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    let options = EntryOptions::new(secs(300));
    cache.add_warmer("menu:daily:current", options.clone(), || async {
        Ok::<_, io::Error>(vec!["dal".to_owned()])
    });
    cache.add_warmer("payment:methods:default", options.clone(), || async {
        Err::<Vec<String>, _>(io::Error::other("gateway down"))
    });
    let report = cache.warm().await;
    assert_eq!(report.loaded, vec!["menu:daily:current".to_owned()]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "payment:methods:default");
    assert!(!report.is_ready());
    assert_eq!(
        cache
            .get::<Vec<String>>("menu:daily:current")
            .await
            .unwrap(),
        Some(vec!["dal".to_owned()])
    );
}

#[tokio::test(start_paused = true)]
async fn hit_rate_counts_l1_hits_and_misses() {
    let cache = Cache::builder().tokio_time(true).build().unwrap();
    assert_eq!(cache.stats().hit_rate(), None);
    cache
        .set("a", 1u8, &EntryOptions::new(secs(60)))
        .await
        .unwrap();
    for _ in 0..9 {
        cache.get::<u8>("a").await.unwrap();
    }
    cache.get::<u8>("b").await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.l1_hits, stats.misses), (9, 1));
    assert_eq!(stats.hit_rate(), Some(0.9));
}

/// The default time source: moka expires entries on the real monotonic
/// clock, and hits of plain entries read no clock. This one test needs real
/// time, because that is what it checks.
#[tokio::test]
async fn by_default_entries_expire_on_the_real_clock() {
    let cache = Cache::builder().build().unwrap();
    cache
        .set("k", 1u8, &EntryOptions::new(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
}
