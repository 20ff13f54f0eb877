//! hasivu-cache vs raw moka and raw Redis: the L1 hit path, the L2 hit
//! path, `get_or_load` under contention, invalidating a cascade of rules
//! (vs the report's SCAN + DEL per pattern), backplane propagation, and a
//! Zipf hit-rate simulation; and the HTTP cache layer's hit through an axum
//! router against the same router returning static bytes.
//!
//! Run with `cargo bench -p hasivu-benches --bench cache`; the ratio table
//! and the hit rates are printed at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion};
use hasivu_benches::{Row, block_on, criterion, criterion_dir, print_report};
use hasivu_cache::{Cache, CacheLayer, EntryOptions, InvalidationRules, RoutePolicy};

/// A value like a cached user profile (about 100 bytes of JSON).
fn profile(i: u64) -> String {
    format!(
        "{{\"id\":{i},\"email\":\"user{i}@school.example\",\"school\":\"Green Valley\",\"tier\":\"free\"}}"
    )
}

fn l1_hit(c: &mut Criterion, rows: &mut Vec<Row>) {
    let keys: Vec<String> = (0..1000).map(|i| format!("user:profile:{i}")).collect();
    let ours = Cache::builder().build().unwrap();
    let options = EntryOptions::new(Duration::from_secs(3600));
    let raw: moka::future::Cache<String, String> =
        moka::future::Cache::builder().max_capacity(10_000).build();
    block_on(async {
        for (i, key) in keys.iter().enumerate() {
            ours.set(key, profile(i as u64), &options).await.unwrap();
            raw.insert(key.clone(), profile(i as u64)).await;
        }
    });
    let mut group = c.benchmark_group("cache-l1-hit");
    let mut i = 0usize;
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            block_on(ours.get::<String>(&keys[i]))
                .unwrap()
                .unwrap()
                .len()
        })
    });
    let mut i = 0usize;
    group.bench_function("moka", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            block_on(raw.get(&keys[i])).unwrap().len()
        })
    });
    group.finish();
    rows.push(Row {
        group: "cache-l1-hit".into(),
        ours: "hasivu".into(),
        theirs: "moka".into(),
        note: "`get` of a ~100-byte String over 1000 keys; moka = `future::Cache<String, String>::get`"
            .into(),
    });
}

fn l2_hit(c: &mut Criterion, rows: &mut Vec<Row>) {
    let redis = hasivu_testkit::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // An L1 of zero bytes: every `get` goes to Redis (GET, PTTL and the
    // stamp's GET in one MULTI/EXEC, one round trip; JSON decode).
    let ours = runtime.block_on(async {
        let cache = Cache::builder()
            .max_l1_bytes(0)
            .redis(redis.url())
            .build()
            .unwrap();
        cache
            .set(
                "user:profile:1",
                profile(1),
                &EntryOptions::new(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        cache
    });
    let mut raw = runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    let mut group = c.benchmark_group("cache-l2-hit");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            runtime
                .block_on(ours.get::<String>("user:profile:1"))
                .unwrap()
                .unwrap()
                .len()
        })
    });
    group.bench_function("redis-get", |b| {
        b.iter(|| {
            let value: String = runtime
                .block_on(redis::AsyncCommands::get(&mut raw, "user:profile:1"))
                .unwrap();
            value.len()
        })
    });
    group.finish();
    rows.push(Row {
        group: "cache-l2-hit".into(),
        ours: "hasivu".into(),
        theirs: "redis-get".into(),
        note: "L1 disabled; hasivu = GET + PTTL + the stamp's GET in one MULTI/EXEC + JSON decode; anchor = a raw GET through ConnectionManager"
            .into(),
    });
}

/// An HTTP cache hit through an axum `Router` against the same `Router`
/// returning the same bytes from the handler: what serving from the cache
/// costs compared with the cheapest possible handler.
fn http_hit(c: &mut Criterion, rows: &mut Vec<Row>) {
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    let body = hasivu_benches::corpus::menu_json(25 * 1024);
    let handler_body = body.clone();
    let plain: Router = Router::new().route(
        "/menu/daily",
        get(move || {
            let body = handler_body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let cache = Cache::builder().build().unwrap();
    let cached = plain.clone().layer(CacheLayer::new(cache).route(
        "/menu/daily",
        RoutePolicy::new(Duration::from_secs(3600)).namespace("menu:daily:"),
    ));
    let request = || {
        http::Request::get("/menu/daily?date=2026-11-27")
            .body(Body::empty())
            .unwrap()
    };
    // Fill the entry.
    let first = block_on(cached.clone().oneshot(request())).unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    let hit = block_on(cached.clone().oneshot(request())).unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT-L1");

    let mut group = c.benchmark_group("cache-http-hit-25kb");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            let response = block_on(cached.clone().oneshot(request())).unwrap();
            http_body::Body::size_hint(response.body()).exact()
        })
    });
    group.bench_function("static-bytes", |b| {
        b.iter(|| {
            let response = block_on(plain.clone().oneshot(request())).unwrap();
            http_body::Body::size_hint(response.body()).exact()
        })
    });
    group.finish();
    rows.push(Row {
        group: "cache-http-hit-25kb".into(),
        ours: "hasivu".into(),
        theirs: "static-bytes".into(),
        note: "axum Router + `oneshot`: a `CacheLayer` L1 hit (key normalisation, lookup, ETag/Age/X-Cache headers) vs the same Router whose handler returns the same 25 KB `Bytes`; ratio = share of the static Router's throughput"
            .into(),
    });
}

/// Four rules in a chain: invalidating `order:*` fires all four and bumps
/// five prefixes.
fn chain_rules() -> InvalidationRules {
    InvalidationRules::new()
        .rule("order:*", ["analytics:orders:*"])
        .and_then(|r| r.rule("analytics:*", ["report:orders:*"]))
        .and_then(|r| r.rule("report:*", ["dashboard:orders:*"]))
        .and_then(|r| r.rule("dashboard:*", ["export:orders:*"]))
        .unwrap()
}

const CASCADE: [&str; 5] = [
    "order:",
    "analytics:orders:",
    "report:orders:",
    "dashboard:orders:",
    "export:orders:",
];

fn invalidate_cascade(c: &mut Criterion, rows: &mut Vec<Row>) {
    let redis = hasivu_testkit::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = EntryOptions::new(Duration::from_secs(3600));
    // 10 000 entries in L1 and Redis: 100 under each prefix of the cascade,
    // the rest elsewhere.
    let ours = runtime.block_on(async {
        let cache = Cache::builder()
            .redis(redis.url())
            .rules(chain_rules())
            .build()
            .unwrap();
        for (p, prefix) in CASCADE.iter().enumerate() {
            for i in 0..100 {
                cache
                    .set(&format!("{prefix}{i}"), p * 100 + i, &options)
                    .await
                    .unwrap();
            }
        }
        for i in 0..9500 {
            cache
                .set(&format!("user:profile:{i}"), i, &options)
                .await
                .unwrap();
        }
        cache
    });
    let mut raw = runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    let mut group = c.benchmark_group("cache-invalidate-cascade");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            runtime
                .block_on(ours.invalidate("order:*"))
                .unwrap()
                .generation
        })
    });
    // The report's `invalidatePattern`: for each pattern, SCAN the keyspace
    // and DEL what matches. The keys it deletes are put back between runs,
    // outside the measurement.
    let mut refill = raw.clone();
    group.bench_function("scan-del", |b| {
        b.iter_batched(
            || {
                runtime.block_on(async {
                    let mut pipe = redis::pipe();
                    for prefix in CASCADE {
                        for i in 0..100 {
                            pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(i).ignore();
                        }
                    }
                    pipe.query_async::<()>(&mut refill).await.unwrap();
                })
            },
            |()| {
                runtime.block_on(async {
                    let mut deleted = 0_usize;
                    for prefix in CASCADE {
                        let mut cursor = 0_u64;
                        loop {
                            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(format!("{prefix}*"))
                                .arg("COUNT")
                                .arg(1000)
                                .query_async(&mut raw)
                                .await
                                .unwrap();
                            if !keys.is_empty() {
                                deleted += keys.len();
                                redis::cmd("DEL")
                                    .arg(&keys)
                                    .query_async::<()>(&mut raw)
                                    .await
                                    .unwrap();
                            }
                            if next == 0 {
                                break;
                            }
                            cursor = next;
                        }
                    }
                    deleted
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    rows.push(Row {
        group: "cache-invalidate-cascade".into(),
        ours: "hasivu".into(),
        theirs: "scan-del".into(),
        note: "`invalidate(\"order:*\")` firing 4 chained rules (5 prefixes) over ~10k keys: hasivu = one Lua bump + publish + L1 sweep; anchor = SCAN MATCH + DEL per pattern (the report's way)"
            .into(),
    });
}

/// Backplane propagation: from `set` on one instance to the other instance
/// having applied the message (its L1 copy dropped), over 1000 writes.
fn backplane_propagation() -> String {
    let redis = hasivu_testkit::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let build = || Cache::builder().redis(redis.url()).build().unwrap();
        let (a, b) = (build(), build());
        while a.stats().backplane_synced != Some(true) || b.stats().backplane_synced != Some(true) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let options = EntryOptions::new(Duration::from_secs(3600));
        let mut set_only = Vec::new();
        let mut delivered = Vec::new();
        for i in 0..1000_u32 {
            let before = b.stats().backplane_received;
            let started = Instant::now();
            a.set("menu:daily:current", i, &options).await.unwrap();
            set_only.push(started.elapsed());
            while b.stats().backplane_received == before {
                tokio::task::yield_now().await;
            }
            delivered.push(started.elapsed());
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        format!(
            "Backplane propagation over 1000 writes (from the start of `set` on instance A to instance B having dropped its L1 copy): p50 {:?}, p99 {:?}; the `set` itself (L1, then one pipeline: SET value, SET stamp, PUBLISH): p50 {:?}, p99 {:?}",
            pct(&mut delivered, 50),
            pct(&mut delivered, 99),
            pct(&mut set_only, 50),
            pct(&mut set_only, 99),
        )
    })
}

fn contended_get_or_load(c: &mut Criterion, rows: &mut Vec<Row>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache-get-or-load-64-tasks-100-keys");
    for (name, expire) in [("hasivu-hot", false), ("hasivu-expiring", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let cache = Cache::builder().build().unwrap();
                // Expiring entries make every key reload now and then, so
                // single flight is exercised, not only hits.
                let ttl = if expire {
                    Duration::from_millis(1)
                } else {
                    Duration::from_secs(3600)
                };
                let options = EntryOptions::new(ttl);
                let per_task = iters.div_ceil(64);
                let started = Instant::now();
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..64u64)
                        .map(|t| {
                            let cache = cache.clone();
                            let options = options.clone();
                            tokio::spawn(async move {
                                for n in 0..per_task {
                                    let key = format!("k{}", (t * 7919 + n) % 100);
                                    let value: String = cache
                                        .get_or_load(&key, &options, move || async move {
                                            Ok::<_, std::io::Error>(profile(n))
                                        })
                                        .await
                                        .unwrap();
                                    std::hint::black_box(value);
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
    rows.push(Row {
        group: "cache-get-or-load-64-tasks-100-keys".into(),
        ours: "hasivu-hot".into(),
        theirs: "hasivu-expiring".into(),
        note: "time per call, 64 tasks on 2 workers; 'expiring' = 1 ms TTL, loads shared by single flight"
            .into(),
    });
}

/// Zipf(s) sampler over `n` ranks by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self {
            cdf,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn sample(&mut self) -> usize {
        // xorshift64*: reproducible, no dependency.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let u = (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|p| *p < u)
    }
}

/// Replays a Zipf(1.0) workload; with `redis`, an L2 holds what L1 evicts.
fn hit_rate_simulation(redis: Option<&hasivu_testkit::RedisServer>) -> String {
    const KEYS: usize = 100_000;
    const REQUESTS: usize = 1_000_000;
    let value = "x".repeat(100);
    // Each entry weighs key + value + 96 bytes; size L1 for 10% of the keys.
    let entry_weight = "user:profile:99999".len() + value.len() + 2 + 96;
    let options = EntryOptions::new(Duration::from_secs(3600));
    let loads = Arc::new(AtomicU64::new(0));
    let mut zipf = Zipf::new(KEYS, 1.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = runtime.block_on(async {
        let mut builder = Cache::builder().max_l1_bytes((KEYS / 10 * entry_weight) as u64);
        if let Some(redis) = redis {
            builder = builder.redis(redis.url());
        }
        let cache = builder.build().unwrap();
        for _ in 0..REQUESTS {
            let key = format!("user:profile:{}", zipf.sample());
            let value = value.clone();
            let loads = Arc::clone(&loads);
            let _: String = cache
                .get_or_load(&key, &options, move || async move {
                    loads.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(value)
                })
                .await
                .unwrap();
        }
        cache.stats()
    });
    let lookups = (stats.l1_hits + stats.l2_hits + stats.misses) as f64;
    format!(
        "Zipf(1.0) over {KEYS} keys, {REQUESTS} requests, L1 sized for 10% of the keys{}: \
         L1 hit rate {:.1}%, overall hit rate {:.1}% ({} loads)",
        if redis.is_some() {
            ", Redis L2"
        } else {
            ", no L2"
        },
        stats.l1_hits as f64 / lookups * 100.0,
        stats.hit_rate().unwrap_or(0.0) * 100.0,
        loads.load(Ordering::Relaxed)
    )
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    l1_hit(&mut c, &mut rows);
    l2_hit(&mut c, &mut rows);
    contended_get_or_load(&mut c, &mut rows);
    invalidate_cascade(&mut c, &mut rows);
    http_hit(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "hasivu-cache (speed ratio = anchor time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
    println!("\n{}", backplane_propagation());
    println!("\n{}", hit_rate_simulation(None));
    let redis = hasivu_testkit::RedisServer::start();
    println!("{}", hit_rate_simulation(Some(&redis)));
}
