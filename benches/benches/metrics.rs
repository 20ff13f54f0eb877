//! hasivu-metrics vs the bare service and the `metrics` facade: the layer's
//! overhead per request, the cost of one analytics record against
//! `metrics::histogram!` with three dynamic labels, memory per route,
//! evaluating 100 alert rules, and the regression detector over 7 days of
//! 1-minute intervals for 50 routes.
//!
//! Run with `cargo bench -p hasivu-benches --bench metrics`.

use std::{convert::Infallible, time::Duration};

use criterion::Criterion;
use hasivu_benches::{Row, block_on, criterion, criterion_dir, print_report};
use hasivu_metrics::{MetricsLayer, PerformanceAnalytics, RegressionDetector, Sample};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

fn layer_overhead(c: &mut Criterion, rows: &mut Vec<Row>) {
    let bare = service_fn(|_req: http::Request<Full<bytes::Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(
            b"{\"menu\":[\"ragi mudde\",\"sambar\"]}",
        ))))
    });
    let analytics = PerformanceAnalytics::new();
    let plain = MetricsLayer::new().layer(bare);
    let with_analytics = MetricsLayer::new().analytics(analytics).layer(bare);
    let request = || {
        http::Request::get("/menu/daily")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let mut group = c.benchmark_group("metrics-layer");
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            block_on(async {
                let response = plain.clone().oneshot(request()).await.unwrap();
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .len()
            })
        })
    });
    group.bench_function("hasivu-analytics", |b| {
        b.iter(|| {
            block_on(async {
                let response = with_analytics.clone().oneshot(request()).await.unwrap();
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .len()
            })
        })
    });
    group.bench_function("bare", |b| {
        b.iter(|| {
            block_on(async {
                let response = bare.oneshot(request()).await.unwrap();
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .len()
            })
        })
    });
    group.finish();
    for ours in ["hasivu", "hasivu-analytics"] {
        rows.push(Row {
            group: "metrics-layer".into(),
            ours: ours.into(),
            theirs: "bare".into(),
            note: "one GET through `MetricsLayer` (no header, no exporter installed), body read to the end, vs the bare service; the difference is the layer's cost (target < 200 ns)".into(),
        });
    }
}

fn record_cost(c: &mut Criterion, rows: &mut Vec<Row>) {
    // A real recorder, so the facade does its work.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    let analytics = PerformanceAnalytics::new();
    let route = analytics.route("GET /menu/daily");
    let sample = Sample::new(Duration::from_micros(1234)).status(200);
    let mut group = c.benchmark_group("metrics-record");
    group.bench_function("hasivu", |b| b.iter(|| route.record(&sample)));
    let mut i = 0u64;
    group.bench_function("metrics-histogram-3-labels", |b| {
        b.iter(|| {
            i += 1;
            let status = if i.is_multiple_of(10) { "500" } else { "200" };
            metrics::histogram!(
                "http.server.request.duration",
                "http.request.method" => "GET",
                "http.route" => "/menu/daily",
                "http.response.status_code" => status,
            )
            .record(0.001_234);
        })
    });
    group.finish();
    // Keep the exporter's buffer from growing without bound.
    handle.run_upkeep();
    rows.push(Row {
        group: "metrics-record".into(),
        ours: "hasivu".into(),
        theirs: "metrics-histogram-3-labels".into(),
        note: "one `RouteHandle::record` (clock read, minute and hour rings) vs `metrics::histogram!` with 3 labels into the Prometheus recorder".into(),
    });
}

/// 100 threshold rules over plain values, evaluated at once.
fn alert_rules(c: &mut Criterion) -> String {
    use hasivu_metrics::alerts::{Inputs, Metric, Rule};

    let rules: Vec<Rule> = (0..100)
        .map(|i| {
            Rule::above(format!("rule{i}"), Metric::Value(format!("signal{i}")))
                .warning(50.0)
                .critical(90.0)
        })
        .collect();
    let manager = hasivu_metrics::AlertManager::builder()
        .rules(rules)
        .build()
        .unwrap();
    let mut inputs = Inputs::new();
    for i in 0..100 {
        inputs = inputs.value(format!("signal{i}"), f64::from(i));
    }
    let mut group = c.benchmark_group("metrics-alerts-100-rules");
    group.bench_function("hasivu", |b| b.iter(|| manager.evaluate(&inputs).len()));
    group.finish();
    let ns = hasivu_benches::median_ns(
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        "metrics-alerts-100-rules",
        "hasivu",
    )
    .unwrap_or(f64::NAN);
    format!(
        "Evaluating 100 alert rules (warning and critical thresholds, state machines included): {}",
        hasivu_benches::format_ns(ns)
    )
}

/// The regression detector over 7 days of 1-minute intervals (10 080
/// points) for 50 routes.
fn regression_detector() -> String {
    use hasivu_metrics::regression::Point;

    let mut detector = RegressionDetector::new();
    let start = 1_764_000_000u64;
    let minutes = 7 * 24 * 60;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 1000) as f64 / 1000.0
    };
    for route in 0..50 {
        let name = format!("GET /route/{route}");
        for m in 0..minutes {
            detector.record(
                &name,
                Point {
                    start_secs: start + m * 60,
                    requests: 600,
                    errors: 3,
                    p95_ms: 120.0 * (0.85 + 0.3 * noise()),
                    version: 0,
                },
            );
        }
    }
    let started = std::time::Instant::now();
    let found = detector.detect(start + minutes * 60);
    let took = started.elapsed();
    format!(
        "Regression detector over 7 days of 1-minute intervals for 50 routes (504 000 points): {took:?} for one pass, {} regressions found in noise",
        found.len()
    )
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    layer_overhead(&mut c, &mut rows);
    record_cost(&mut c, &mut rows);
    let alerts = alert_rules(&mut c);
    c.final_summary();
    print_report(
        "hasivu-metrics (speed ratio = anchor time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
    let analytics = PerformanceAnalytics::new();
    println!(
        "\nMemory per route with the default rings (60 × 1 min at ≤ 1 %, 168 × 1 h at ≤ 4.5 %): {} bytes",
        analytics.memory_per_route()
    );
    println!("{alerts}");
    println!("{}", regression_detector());
}
