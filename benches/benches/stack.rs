//! The whole hasivu stack against a bare axum `Router`: one GET of the
//! daily menu (about 25 KB of JSON) through metrics → shield → rate limit
//! → HTTP cache (hit) → compression (gzip, stored compressed) → handler,
//! against the same `Router` without layers serving the same bytes
//! uncompressed.
//!
//! Run with `cargo bench -p hasivu-benches --bench stack`.

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use criterion::Criterion;
use hasivu_benches::{Row, criterion, criterion_dir, print_report};
use hasivu_cache::{Cache, CacheLayer, RoutePolicy};
use hasivu_compress::CompressionLayer;
use hasivu_metrics::{MetricsLayer, PerformanceAnalytics};
use hasivu_ratelimit::{
    Limiter,
    http::{PeerAddr, RateLimitLayer},
    shield::ShieldLayer,
};
use tower::{ServiceBuilder, ServiceExt};

fn stack(c: &mut Criterion, rows: &mut Vec<Row>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let menu = hasivu_benches::corpus::menu_json(25 * 1024);
    let handler_menu = menu.clone();
    let plain: Router = Router::new().route(
        "/menu/daily",
        get(move || {
            let body = handler_menu.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let full = runtime.block_on(async {
        let cache = Cache::builder().build().unwrap();
        let routed = plain
            .clone()
            // Inside the cache, so entries hold the compressed bytes.
            .layer(CompressionLayer::new())
            .layer(
                CacheLayer::new(cache)
                    .route(
                        "/menu/daily",
                        RoutePolicy::new(Duration::from_secs(300)).namespace("menu:daily:"),
                    )
                    .accept_encoding(|headers: &http::HeaderMap| {
                        hasivu_compress::negotiate_headers(
                            headers,
                            hasivu_compress::Coding::DEFAULT_PREFERENCE,
                        )
                        .as_str()
                        .to_owned()
                    }),
            );
        let limiter = Limiter::builder().build();
        ServiceBuilder::new()
            .layer(MetricsLayer::new().analytics(PerformanceAnalytics::new()))
            .layer(ShieldLayer::new())
            .layer(RateLimitLayer::new(limiter))
            .service(routed)
    });
    let request = |n: u32| {
        let mut request = http::Request::get("/menu/daily?date=2026-11-27")
            .header("accept-encoding", "gzip")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            )
            .body(Body::empty())
            .unwrap();
        // Many clients, so neither the limiter nor the shield's rate
        // detector steps in.
        request.extensions_mut().insert(PeerAddr(
            format!("10.2.{}.{}:4000", (n >> 8) & 255, n & 255)
                .parse()
                .unwrap(),
        ));
        request
    };
    runtime.block_on(async {
        let first = full.clone().oneshot(request(0)).await.unwrap();
        assert_eq!(first.headers()["x-cache"], "MISS");
        let hit = full.clone().oneshot(request(1)).await.unwrap();
        assert_eq!(hit.headers()["x-cache"], "HIT-L1");
        assert_eq!(hit.headers()["content-encoding"], "gzip");
    });
    let mut group = c.benchmark_group("stack-menu-daily");
    let mut n = 0u32;
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            n = n.wrapping_add(1) & 0xffff;
            let response = runtime.block_on(full.clone().oneshot(request(n))).unwrap();
            http_body::Body::size_hint(response.body()).lower()
        })
    });
    group.bench_function("bare-router", |b| {
        b.iter(|| {
            n = n.wrapping_add(1) & 0xffff;
            let response = runtime.block_on(plain.clone().oneshot(request(n))).unwrap();
            http_body::Body::size_hint(response.body()).lower()
        })
    });
    group.finish();
    rows.push(Row {
        group: "stack-menu-daily".into(),
        ours: "hasivu".into(),
        theirs: "bare-router".into(),
        note: format!(
            "GET /menu/daily ({} KB JSON): metrics + analytics → shield → rate limit → cache hit of the gzip variant ({} KB) vs the bare Router sending it uncompressed",
            menu.len() / 1024,
            runtime.block_on(async {
                let response = full.clone().oneshot(request(2)).await.unwrap();
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes()
                    .len()
                    / 1024
            })
        ),
    });
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    stack(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "the hasivu stack (speed ratio = bare time / stack time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
}
