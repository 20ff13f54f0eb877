//! hasivu-metrics vs the bare service and the `metrics` facade: the layer's
//! overhead per request, the cost of one analytics record against
//! `metrics::histogram!` with three dynamic labels, and memory per route.
//!
//! Run with `cargo bench -p hasivu-benches --bench metrics`.

use std::{convert::Infallible, time::Duration};

use criterion::Criterion;
use hasivu_benches::{Row, block_on, criterion, criterion_dir, print_report};
use hasivu_metrics::{MetricsLayer, PerformanceAnalytics, Sample};
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

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    layer_overhead(&mut c, &mut rows);
    record_cost(&mut c, &mut rows);
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
}
