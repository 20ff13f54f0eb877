//! hasivu-ratelimit vs governor and raw Redis: the local keyed check
//! (policy, tier and load lookup included) over 10 000 keys, the bytes a
//! key costs, the Redis check against a raw `SET` round trip with 1 and 50
//! concurrent callers, and the Redis calls leases save.
//!
//! Run with `cargo bench -p hasivu-benches --bench ratelimit`; the ratio
//! table is printed at the end.

use std::{num::NonZeroU32, time::Duration};

use criterion::Criterion;
use hasivu_benches::{Row, criterion, criterion_dir, print_report};
use hasivu_ratelimit::{
    Hysteresis, LeaseConfig, Limiter, LoadControl, LocalStore, Policies, Policy, Quota, RedisStore,
    Request, Store, StoreKey, Tiers,
};

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
        .collect()
}

fn local_check(c: &mut Criterion, rows: &mut Vec<Row>) {
    let keys = keys();
    // A quota no benchmark run exhausts, so both sides take the admit path.
    let per_second = 1_000_000_000;
    let control = LoadControl::with(|| 0.2, Hysteresis::default(), Duration::from_secs(1));
    control.update();
    let ours = Limiter::builder()
        .policies(Policies::new(Policy::new(
            "general",
            Quota::per_second(per_second),
        )))
        .tiers(Tiers::report_defaults())
        .load(control)
        .build();
    let theirs: governor::DefaultKeyedRateLimiter<String> = governor::RateLimiter::keyed(
        governor::Quota::per_second(NonZeroU32::new(per_second).unwrap()),
    );
    let mut group = c.benchmark_group("ratelimit-local-check-10k-keys");
    let mut i = 0usize;
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let decision = ours
                .check_request_now(Request {
                    method: "GET",
                    path: "/menu/daily",
                    key: &keys[i],
                    tier: Some("premium"),
                    cost: 1,
                })
                .unwrap();
            decision.verdict.allowed
        })
    });
    let mut i = 0usize;
    group.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            theirs.check_key(&keys[i]).is_ok()
        })
    });
    group.finish();
    rows.push(Row {
        group: "ratelimit-local-check-10k-keys".into(),
        ours: "hasivu".into(),
        theirs: "governor".into(),
        note: "hasivu = `Limiter::check_request_now` (route policy, tier multiplier, load factor, GCRA in a sharded map); governor = `DefaultKeyedRateLimiter<String>::check_key`"
            .into(),
    });
}

/// The Redis store's check (one EVALSHA of the sliding-window counter,
/// reading `TIME`) against a raw `SET` through a `ConnectionManager`, one
/// caller at a time and 50 at once.
fn redis_check(c: &mut Criterion, rows: &mut Vec<Row>) {
    let redis = hasivu_testkit::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let quota = Quota::per_second(1_000_000_000);
    let store = runtime.block_on(async {
        RedisStore::builder(redis.url())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    });
    let raw = runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    let key = StoreKey {
        policy: "general",
        key: "198.51.100.7",
    };
    // Warm the script cache and the connection.
    runtime.block_on(async {
        assert!(store.check(key, &quota, 1).await.0.allowed);
    });
    let mut group = c.benchmark_group("ratelimit-redis-1-caller");
    group.bench_function("hasivu", |b| {
        b.iter(|| runtime.block_on(store.check(key, &quota, 1)).0.allowed)
    });
    group.bench_function("redis-set", |b| {
        let mut conn = raw.clone();
        b.iter(|| {
            runtime.block_on(async {
                redis::cmd("SET")
                    .arg("bench:set")
                    .arg("1")
                    .query_async::<()>(&mut conn)
                    .await
                    .unwrap();
            })
        })
    });
    group.finish();
    rows.push(Row {
        group: "ratelimit-redis-1-caller".into(),
        ours: "hasivu".into(),
        theirs: "redis-set".into(),
        note: "one check (EVALSHA of the sliding-window counter) vs one raw `SET`, same connection kind".into(),
    });

    const CALLERS: u64 = 50;
    let mut group = c.benchmark_group("ratelimit-redis-50-callers");
    let leased = runtime.block_on(async {
        RedisStore::builder(redis.url())
            .prefix("leased:")
            .timeout(Duration::from_secs(1))
            .leases(LeaseConfig::new(10))
            .build()
            .unwrap()
    });
    for (name, store) in [("hasivu", &store), ("hasivu-leases-10", &leased)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let store = store.clone();
                concurrently(&runtime, CALLERS, iters, move |t| {
                    let store = store.clone();
                    async move {
                        let key = format!("198.51.100.{t}");
                        let key = StoreKey {
                            policy: "general",
                            key: &key,
                        };
                        store.check(key, &quota, 1).await;
                    }
                })
            })
        });
    }
    group.bench_function("redis-set", |b| {
        b.iter_custom(|iters| {
            let raw = raw.clone();
            concurrently(&runtime, CALLERS, iters, move |t| {
                let mut conn = raw.clone();
                async move {
                    redis::cmd("SET")
                        .arg(format!("bench:set:{t}"))
                        .arg("1")
                        .query_async::<()>(&mut conn)
                        .await
                        .unwrap();
                }
            })
        })
    });
    group.finish();
    rows.push(Row {
        group: "ratelimit-redis-50-callers".into(),
        ours: "hasivu".into(),
        theirs: "redis-set".into(),
        note: "time per operation with 50 concurrent tasks on one multiplexed connection (inverse throughput); ratio = our throughput / SET's".into(),
    });
    rows.push(Row {
        group: "ratelimit-redis-50-callers".into(),
        ours: "hasivu-leases-10".into(),
        theirs: "redis-set".into(),
        note: "the same with token leases of 10 units (one script call per 10 checks; overshoot bound: limit + instances × 9 per window)".into(),
    });
}

/// Runs `iters` operations spread over `callers` tasks, each made by
/// `op(task)`, and returns what `iters` of them cost at that concurrency.
fn concurrently<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    callers: u64,
    iters: u64,
    op: F,
) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let per_task = iters.div_ceil(callers).max(1);
    let op = std::sync::Arc::new(op);
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|t| {
                let op = std::sync::Arc::clone(&op);
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        op(t).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let done = callers * per_task;
        Duration::from_secs_f64(started.elapsed().as_secs_f64() * iters as f64 / done as f64)
    })
}

/// Redis calls per 1000 checks with and without leases (batch 10), read
/// from `INFO commandstats`.
fn lease_calls() -> String {
    let redis = hasivu_testkit::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut calls = async || {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.lines()
                .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                .filter_map(|l| {
                    l.split("calls=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        };
        let quota = Quota::per_second(1_000_000);
        let mut report = Vec::new();
        for (label, leases) in [
            ("without leases", None),
            ("with leases (batch 10)", Some(LeaseConfig::new(10))),
        ] {
            let mut builder = RedisStore::builder(redis.url()).prefix(format!("{}:", label.len()));
            if let Some(leases) = leases {
                builder = builder.leases(leases);
            }
            let store = builder.build().unwrap();
            let key = StoreKey {
                policy: "general",
                key: "198.51.100.9",
            };
            store.check(key, &quota, 1).await;
            let before = calls().await;
            for _ in 0..1000 {
                store.check(key, &quota, 1).await;
            }
            report.push(format!("{label}: {}", calls().await - before));
        }
        format!(
            "Redis script calls per 1000 checks of one key: {}",
            report.join(", ")
        )
    })
}

/// The shield against the bare service: a clean request with a 200-byte
/// query, a blocked client, a 64 KiB JSON body, and 32 KB of nested
/// entities.
fn shield(c: &mut Criterion, rows: &mut Vec<Row>) {
    use std::convert::Infallible;

    use hasivu_ratelimit::{
        http::PeerAddr,
        shield::{InspectedBody, LocalBlocklist, ShieldLayer},
    };
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt, service_fn};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let query = "/menu/daily?school=green-valley-public-school&date=2026-11-27&fields=id,name,price,allergens,calories,category,description&lang=kn-IN&sort=category&page=1&per_page=100&q=ragi+mudde+with+sambar";
    assert!((190..=220).contains(&query.len()), "{}", query.len());
    let body: bytes::Bytes = {
        let mut json = String::from("{\"order\":{\"items\":[");
        let mut i = 0;
        while json.len() < 64 * 1024 - 200 {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"id\":{i},\"note\":\"Less spicy please, no onions; O'Brien's lunch <b>tiffin</b> & curd\",\"qty\":2}}"
            ));
            i += 1;
        }
        json.push_str("]}}");
        json.into()
    };
    let request = |uri: &str, peer: &str, body: bytes::Bytes| {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            )
            .body(Full::new(body))
            .unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr(format!("{peer}:4000").parse().unwrap()));
        request
    };
    let bare = service_fn(|req: http::Request<Full<bytes::Bytes>>| async move {
        let n = req.into_body().collect().await.unwrap().to_bytes().len();
        Ok::<_, Infallible>(http::Response::new(n))
    });
    let inner = service_fn(
        |req: http::Request<InspectedBody<Full<bytes::Bytes>>>| async move {
            let n = req.into_body().collect().await.unwrap().to_bytes().len();
            Ok::<_, Infallible>(http::Response::new(n))
        },
    );
    let blocklist = LocalBlocklist::new();
    let shielded = ShieldLayer::new().blocklist(blocklist.clone()).layer(inner);
    runtime.block_on(async {
        let blocked: std::net::IpAddr = "203.0.113.66".parse().unwrap();
        hasivu_ratelimit::shield::Blocklist::block(
            &blocklist,
            blocked,
            Duration::from_secs(3600),
            "bench",
        )
        .await
        .unwrap();
    });
    // 65 536 returning clients in turn: each comes back now and then, as
    // on a busy API, without tripping the rate detector.
    let mut n = 0u32;
    let mut peer = move || {
        n = n.wrapping_add(1) & 0xffff;
        format!("10.1.{}.{}", (n >> 8) & 255, n & 255)
    };
    let mut group = c.benchmark_group("shield-clean-200b-query");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            let req = request(query, &peer(), bytes::Bytes::new());
            runtime
                .block_on(shielded.clone().oneshot(req))
                .unwrap()
                .status()
        })
    });
    group.bench_function("bare", |b| {
        b.iter(|| {
            let req = request(query, &peer(), bytes::Bytes::new());
            runtime.block_on(bare.oneshot(req)).unwrap().status()
        })
    });
    group.finish();
    let mut group = c.benchmark_group("shield-blocked-client");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            let req = request(query, "203.0.113.66", bytes::Bytes::new());
            runtime
                .block_on(shielded.clone().oneshot(req))
                .unwrap()
                .status()
        })
    });
    group.bench_function("bare", |b| {
        b.iter(|| {
            let req = request(query, "203.0.113.66", bytes::Bytes::new());
            runtime.block_on(bare.oneshot(req)).unwrap().status()
        })
    });
    group.finish();
    let mut group = c.benchmark_group("shield-64kib-json-body");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            let req = request("/orders/create", &peer(), body.clone());
            runtime
                .block_on(shielded.clone().oneshot(req))
                .unwrap()
                .status()
        })
    });
    group.bench_function("bare", |b| {
        b.iter(|| {
            let req = request("/orders/create", &peer(), body.clone());
            runtime.block_on(bare.oneshot(req)).unwrap().status()
        })
    });
    group.finish();
    // The body that overflowed the stack before decoding was bounded: 32 KB
    // of `&amp;amp;…` in one JSON string.
    let nested: bytes::Bytes =
        format!(r#"{{"a":"&{}lt;script&gt;"}}"#, "amp;".repeat(8_000)).into();
    let mut group = c.benchmark_group("shield-32kb-nested-entities");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            let req = request("/orders/create", &peer(), nested.clone());
            runtime
                .block_on(shielded.clone().oneshot(req))
                .unwrap()
                .status()
        })
    });
    group.bench_function("bare", |b| {
        b.iter(|| {
            let req = request("/orders/create", &peer(), nested.clone());
            runtime.block_on(bare.oneshot(req)).unwrap().status()
        })
    });
    group.finish();
    for (group, note) in [
        (
            "shield-32kb-nested-entities",
            "the 32 KB body `{\"a\":\"&amp;amp;amp;…\"}` (8 000 levels) that overflowed the stack before entity decoding was bounded, inspected vs the bare service reading it",
        ),
        (
            "shield-clean-200b-query",
            "a clean GET with a ~200-byte query through `ShieldLayer` (all detectors, 65 536 returning clients in turn) vs the bare service; the difference is the shield's cost (target < 2 µs)",
        ),
        (
            "shield-blocked-client",
            "a blocklisted client refused before parsing vs the bare service answering",
        ),
        (
            "shield-64kib-json-body",
            "a clean 64 KiB JSON order with quotes, markup and `&` in every item, inspected and replayed to the service, vs the bare service reading it",
        ),
    ] {
        rows.push(Row {
            group: group.into(),
            ours: "hasivu".into(),
            theirs: "bare".into(),
            note: note.into(),
        });
    }
}

/// Resident memory growth for one million keys, in bytes per key.
fn bytes_per_key() -> String {
    fn rss() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
    const N: u32 = 1_000_000;
    let quota = Quota::per_hour(100);
    let before = rss();
    let store = LocalStore::builder().max_keys(N as usize).build();
    for i in 0..N {
        let key = i.to_string();
        store.check_sync(
            StoreKey {
                policy: "general",
                key: &key,
            },
            &quota,
            1,
        );
    }
    let ours = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
    let held = store.len();
    drop(store);
    let before = rss();
    let theirs: governor::DefaultKeyedRateLimiter<String> =
        governor::RateLimiter::keyed(governor::Quota::per_hour(NonZeroU32::new(100).unwrap()));
    for i in 0..N {
        let _ = theirs.check_key(&i.to_string());
    }
    let governor = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
    let per_key = |bytes: Option<u64>, keys: usize| {
        bytes.map_or("–".to_owned(), |b| {
            format!("{:.0}", b as f64 / keys as f64)
        })
    };
    let report = format!(
        "Memory for {N} keys (RSS growth): hasivu LocalStore {} B per key ({held} keys held), governor {} B per key (String keys kept)",
        per_key(ours, held),
        per_key(governor, N as usize),
    );
    drop(theirs);
    report
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    local_check(&mut c, &mut rows);
    redis_check(&mut c, &mut rows);
    shield(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "hasivu-ratelimit (speed ratio = anchor time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
    println!("\n{}", bytes_per_key());
    println!("\n{}", lease_calls());
}
