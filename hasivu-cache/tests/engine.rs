//! The get-or-load engine with L1 only: single flight, TTLs, fail-safe,
//! timeouts, eager refresh, warming. Time is tokio's paused clock
//! (`tokio_time(true)`), except in the one test of the default time source.

mod support;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use hasivu_cache::{Cache, EntryOptions, Error};
use support::{KEY, Source, Write};
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

/// The reported fault, on one instance without Redis: a load that read the
/// source before a write of its key returns what it read to its callers,
/// but does not keep it, whichever way the key was written.
#[tokio::test(start_paused = true)]
async fn a_load_overtaken_by_any_write_of_its_key_is_returned_but_not_kept() {
    for write in Write::ALL {
        let cache = Cache::builder()
            .tokio_time(true)
            .rules(support::rules())
            .build()
            .unwrap();
        let source = Source::new("v1");
        let load = tokio::spawn({
            let cache = cache.clone();
            let gated = source.gated();
            async move { cache.get_or_load(KEY, &support::options(), gated).await }
        });
        source.read.notified().await;
        // The database changes, then the application tells the cache.
        source.write("v2");
        write.apply(&cache, "v2").await;
        source.go.notify_one();
        assert_eq!(
            load.await.unwrap().unwrap(),
            "v1",
            "{write:?}: the callers get what the load read"
        );
        assert_eq!(
            cache.get::<String>(KEY).await.unwrap(),
            write.expected("v2"),
            "{write:?}: the cache serves the value read before the write"
        );
        assert_eq!(
            cache
                .get_or_load(KEY, &support::options(), source.loader())
                .await
                .unwrap(),
            "v2",
            "{write:?}"
        );
    }
}

/// A load whose task was dropped before it ever ran (its runtime shut
/// down) leaves nothing behind: the next caller, on another runtime, loads
/// the key instead of joining a flight that can only fail.
#[test]
fn a_load_whose_task_never_ran_does_not_wedge_its_key() {
    let cache = Cache::builder().build().unwrap();
    let options = EntryOptions::new(secs(60));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(async {
        let mut call = Box::pin(cache.get_or_load("k", &options, || async {
            Ok::<_, io::Error>("never".to_owned())
        }));
        // One poll starts the load's task; nothing lets it run.
        let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
    });
    drop(first);

    let second = runtime();
    let value = second.block_on(cache.get_or_load("k", &options, || async {
        Ok::<_, io::Error>("loaded".to_owned())
    }));
    assert_eq!(value.unwrap(), "loaded");
}

/// After a failed load, the fail-safe keeps serving the stale value for
/// the throttle duration; that must not overwrite a value `set` at the
/// same moment. Raced on two threads, many rounds, the writer starting as
/// the loader fails and a little later each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fail_safe_throttle_does_not_overwrite_a_concurrent_set() {
    let cache = Cache::builder().build().unwrap();
    // Stale at once, kept an hour, throttled an hour after a failure.
    let stale = EntryOptions::new(Duration::ZERO)
        .fail_safe(secs(3600))
        .fail_safe_throttle(secs(3600));
    let fresh = EntryOptions::new(secs(3600));
    for round in 0..500_u32 {
        let key = format!("k{round}");
        cache.set(&key, "old".to_owned(), &stale).await.unwrap();
        let failed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn({
            let cache = cache.clone();
            let key = key.clone();
            let fresh = fresh.clone();
            let failed = Arc::clone(&failed);
            async move {
                let mut spins = 0_u32;
                while !failed.load(Ordering::Acquire) {
                    spins += 1;
                    if spins.is_multiple_of(4096) {
                        // Lets the load run when both workers are here.
                        tokio::task::yield_now().await;
                    }
                    std::hint::spin_loop();
                }
                for _ in 0..round % 97 {
                    std::hint::spin_loop();
                }
                cache.set(&key, "new".to_owned(), &fresh).await
            }
        });
        let served = cache
            .get_or_load(&key, &stale, move || async move {
                failed.store(true, Ordering::Release);
                Err::<String, _>(io::Error::other("database down"))
            })
            .await
            .unwrap();
        assert_eq!(served, "old", "the fail-safe answer");
        writer.await.unwrap().unwrap();
        assert_eq!(
            cache.get::<String>(&key).await.unwrap().as_deref(),
            Some("new"),
            "round {round}: the value set was replaced by the stale one"
        );
    }
}
