use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body as AxumBody, routing::get};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::{Clock, OVERFLOW, PerformanceAnalytics, UNMATCHED};

/// A recorder that keeps every value, keyed by `name{label=value,…}`
/// with the labels sorted.
#[derive(Clone, Default)]
struct TestRecorder {
    histograms: Arc<Mutex<BTreeMap<String, Arc<Values>>>>,
    gauges: Arc<Mutex<BTreeMap<String, Arc<Values>>>>,
    counters: Arc<Mutex<BTreeMap<String, Arc<Values>>>>,
}

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl GaugeFn for Values {
    fn increment(&self, value: f64) {
        let mut v = self.0.lock().unwrap();
        let last = v.last().copied().unwrap_or(0.0);
        v.push(last + value);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl CounterFn for Values {
    fn increment(&self, value: u64) {
        GaugeFn::increment(self, value as f64);
    }
    fn absolute(&self, value: u64) {
        GaugeFn::set(self, value as f64);
    }
}

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn values(map: &Mutex<BTreeMap<String, Arc<Values>>>, key: &Key) -> Arc<Values> {
        Arc::clone(map.lock().unwrap().entry(key_string(key)).or_default())
    }

    /// The values recorded into histograms whose key contains every part.
    fn histogram(&self, parts: &[&str]) -> Vec<f64> {
        Self::find(&self.histograms, parts)
    }

    fn find(map: &Mutex<BTreeMap<String, Arc<Values>>>, parts: &[&str]) -> Vec<f64> {
        map.lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| parts.iter().all(|p| k.contains(p)))
            .flat_map(|(_, v)| v.0.lock().unwrap().clone())
            .collect()
    }

    /// The last value of each gauge whose key contains every part, summed.
    fn gauge(&self, parts: &[&str]) -> f64 {
        self.gauges
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| parts.iter().all(|p| k.contains(p)))
            .map(|(_, v)| v.0.lock().unwrap().last().copied().unwrap_or(0.0))
            .sum()
    }

    fn histogram_keys(&self) -> Vec<String> {
        self.histograms.lock().unwrap().keys().cloned().collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Self::values(&self.counters, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Self::values(&self.gauges, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Self::values(&self.histograms, key))
    }
}

fn request_to(uri: &str) -> Request<AxumBody> {
    Request::builder().uri(uri).body(AxumBody::empty()).unwrap()
}

async fn read<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

const HOUR: Duration = Duration::from_secs(3600);

/// An axum app whose layer is added with `Router::layer`, so matched
/// routes carry `MatchedPath` and the fallback is wrapped too.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_routes_are_labelled_by_template_and_unmatched_by_a_fixed_label() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let analytics = PerformanceAnalytics::new();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .nest(
            "/api",
            Router::new().route("/menu/{day}", get(|| async { "menu" })),
        )
        .layer(MetricsLayer::new().analytics(analytics.clone()));

    for uri in [
        "/users/42",
        "/users/43",
        "/api/menu/monday",
        "/wp-admin.php",
    ] {
        let response = app.clone().oneshot(request_to(uri)).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    let post = Request::post("/users/7").body(AxumBody::empty()).unwrap();
    let response = app.clone().oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let _ = response.into_body().collect().await.unwrap();

    let users = recorder.histogram(&[
        "http.server.request.duration{",
        "http.route=/users/{id}",
        "http.request.method=GET",
        "http.response.status_code=200",
    ]);
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|&s| s > 0.0 && s < 5.0));
    assert_eq!(
        recorder
            .histogram(&["http.route=/api/menu/{day}", "status_code=200"])
            .len(),
        1
    );
    assert_eq!(
        recorder
            .histogram(&["http.route=unmatched", "status_code=404"])
            .len(),
        1
    );
    assert_eq!(
        recorder
            .histogram(&["http.route=/users/{id}", "POST", "status_code=405"])
            .len(),
        1
    );
    // No raw path reached a label.
    for key in recorder.histogram_keys() {
        assert!(
            !key.contains("/users/42") && !key.contains("monday") && !key.contains("wp-admin"),
            "{key}"
        );
    }
    assert_eq!(recorder.gauge(&["http.server.active_requests"]), 0.0);
    assert_eq!(
        analytics.routes(),
        [
            "GET /users/{id}",
            "GET /api/menu/{day}",
            "GET unmatched",
            "POST /users/{id}"
        ]
    );
    let users = analytics.summary("GET /users/{id}", HOUR).unwrap();
    assert_eq!(
        (users.count, users.server_errors, users.client_errors),
        (2, 0, 0)
    );
    let unmatched = analytics.summary("GET unmatched", HOUR).unwrap();
    assert_eq!(unmatched.client_error_rate, 1.0);
}

#[tokio::test]
async fn routes_past_the_cap_share_the_overflow_label() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // A careless hook that labels by raw path, as a scanner would exploit.
    let layer = MetricsLayer::new()
        .route(|head: &RequestHead<'_>| Some(head.uri().path().to_owned()))
        .max_routes(5);
    let app = Router::new()
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(layer.clone());
    for i in 0..10_000 {
        let response = app
            .clone()
            .oneshot(request_to(&format!("/probe/{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let routes = layer.routes();
    assert_eq!(routes.len(), 7, "{routes:?}");
    assert_eq!(routes.first().map(String::as_str), Some(UNMATCHED));
    assert_eq!(routes.last().map(String::as_str), Some(OVERFLOW));
    assert_eq!(layer.overflowed(), 9_995);
    assert_eq!(recorder.histogram_keys().len(), 6);
    assert_eq!(recorder.histogram(&["http.route=_overflow"]).len(), 9_995);
}

#[tokio::test]
async fn unknown_methods_are_labelled_other() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = MetricsLayer::new().methods(&[Method::from_bytes(b"PROPFIND").unwrap()]);
    let app = Router::new().fallback(|| async { "ok" }).layer(layer);
    for method in ["BREW", "PROPFIND", "GET"] {
        let request = Request::builder()
            .method(method)
            .uri("/")
            .body(AxumBody::empty())
            .unwrap();
        let _ = app.clone().oneshot(request).await.unwrap();
    }
    assert_eq!(recorder.histogram(&["method=_OTHER"]).len(), 1);
    assert_eq!(recorder.histogram(&["method=PROPFIND"]).len(), 1);
    assert_eq!(recorder.histogram(&["method=GET"]).len(), 1);
    assert!(recorder.histogram(&["BREW"]).is_empty());
}

/// A body that sends one frame and then never ends.
struct Endless {
    sent: bool,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.sent, true) {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick")))))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_abort_is_its_own_outcome_and_leaves_no_active_request() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let analytics = PerformanceAnalytics::new();
    let app = Router::new()
        .route(
            "/events",
            get(|| async { AxumBody::new(Endless { sent: false }) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .layer(
            MetricsLayer::new()
                .analytics(analytics.clone())
                .route(|head: &RequestHead<'_>| Some(head.uri().path().to_owned())),
        );

    // The client reads one frame of the stream, then goes away.
    let response = app.clone().oneshot(request_to("/events")).await.unwrap();
    assert_eq!(recorder.gauge(&["http.server.active_requests"]), 1.0);
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "tick");
    drop(body);

    // The client gives up before the headers.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        app.clone().oneshot(request_to("/slow")),
    )
    .await;
    assert!(gave_up.is_err());

    assert_eq!(recorder.gauge(&["http.server.active_requests"]), 0.0);
    assert_eq!(
        recorder
            .histogram(&[
                "http.route=/events",
                "error.type=aborted",
                "status_code=200"
            ])
            .len(),
        1
    );
    let slow = recorder.histogram(&["http.route=/slow", "error.type=aborted"]);
    assert_eq!(slow.len(), 1);
    assert!(recorder.histogram(&["/slow", "status_code"]).is_empty());
    let events = analytics.summary("GET /events", HOUR).unwrap();
    assert_eq!((events.count, events.aborted), (1, 1));
    assert_eq!(events.abort_rate, 1.0);
    assert_eq!(events.error_rate, 0.0);
    assert_eq!(analytics.summary("GET /slow", HOUR).unwrap().aborted, 1);
}

/// A body that waits `delay`, then sends one frame and ends.
struct Delayed {
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl http_body::Body for Delayed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.done = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"done")))))
    }
}

#[tokio::test(start_paused = true)]
async fn the_header_is_time_to_headers_and_the_duration_runs_to_the_end_of_the_body() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let time = Clock::tokio();
    let analytics = PerformanceAnalytics::builder().clock(time).build();
    let app = Router::new()
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                AxumBody::new(Delayed {
                    sleep: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
                    done: false,
                })
            }),
        )
        .layer(
            MetricsLayer::new()
                .analytics(analytics.clone())
                .response_time_header(true)
                .time_to_headers(true)
                .route(|_: &RequestHead<'_>| Some("/report".to_owned())),
        );
    let response = app.oneshot(request_to("/report")).await.unwrap();
    assert_eq!(response.headers()["x-response-time"], "50.000ms");
    assert_eq!(read(response).await, "done");

    assert_eq!(
        recorder.histogram(&["http.server.request.duration{", "/report"]),
        [0.15]
    );
    assert_eq!(
        recorder.histogram(&["hasivu.http.server.time_to_headers", "/report"]),
        [0.05]
    );
    let summary = analytics.summary("GET /report", HOUR).unwrap();
    assert_eq!(summary.mean_ms, 150.0);
    assert_eq!(summary.max_ms, 150.0);
}

#[tokio::test]
async fn no_header_unless_asked() {
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(MetricsLayer::new());
    let response = app.oneshot(request_to("/")).await.unwrap();
    assert!(!response.headers().contains_key("x-response-time"));
    assert!(!response.headers().contains_key("x-memory-used"));
}

#[derive(Clone, Copy)]
struct Served(bool);

#[tokio::test]
async fn cache_hits_come_from_the_hook_or_the_x_cache_header() {
    let analytics = PerformanceAnalytics::new();
    let layer = MetricsLayer::new()
        .analytics(analytics.clone())
        .route(|head: &RequestHead<'_>| Some(head.uri().path().to_owned()))
        .cache_hit(|extensions: &http::Extensions| extensions.get::<Served>().map(|s| s.0));
    let app = Router::new()
        .route(
            "/hook",
            get(|| async {
                let mut response = Response::new(AxumBody::from("x"));
                response.extensions_mut().insert(Served(true));
                response
            }),
        )
        .route(
            "/header-hit",
            get(|| async { ([("x-cache", "HIT-L2")], "x") }),
        )
        .route(
            "/header-miss",
            get(|| async { ([("x-cache", "MISS")], "x") }),
        )
        .route("/none", get(|| async { "x" }))
        .layer(layer);
    for uri in [
        "/hook",
        "/header-hit",
        "/header-miss",
        "/header-miss",
        "/none",
    ] {
        let response = app.clone().oneshot(request_to(uri)).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    let hit_rate = |route: &str| analytics.summary(route, HOUR).unwrap().cache_hit_rate;
    assert_eq!(hit_rate("GET /hook"), Some(1.0));
    assert_eq!(hit_rate("GET /header-hit"), Some(1.0));
    assert_eq!(hit_rate("GET /header-miss"), Some(0.0));
    assert_eq!(hit_rate("GET /none"), None);
    let total = analytics.total(HOUR).summary();
    assert_eq!((total.cache_hits, total.cache_misses), (2, 2));
}

#[tokio::test]
async fn the_first_request_is_the_cold_start() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let app = Router::new()
        .fallback(|request: Request<AxumBody>| async move {
            request
                .extensions()
                .get::<ColdStart>()
                .is_some()
                .to_string()
        })
        .layer(MetricsLayer::new());
    let first = app.clone().oneshot(request_to("/")).await.unwrap();
    assert_eq!(first.extensions().get::<ColdStart>(), Some(&ColdStart));
    assert_eq!(read(first).await, "true");
    let second = app.clone().oneshot(request_to("/")).await.unwrap();
    assert_eq!(second.extensions().get::<ColdStart>(), None);
    assert_eq!(read(second).await, "false");
    assert_eq!(
        TestRecorder::find(&recorder.counters, &["hasivu.http.server.cold_starts"]),
        [1.0]
    );
}

#[tokio::test]
async fn bodiless_responses_end_at_their_headers() {
    let analytics = PerformanceAnalytics::new();
    let app = Router::new()
        .route("/", get(|| async { "a body HEAD never sends" }))
        .route("/nothing", get(|| async { StatusCode::NO_CONTENT }))
        .layer(
            MetricsLayer::new()
                .analytics(analytics.clone())
                .route(|head: &RequestHead<'_>| Some(head.uri().path().to_owned())),
        );
    // Servers drop these bodies without polling them: not an abort.
    let head = Request::head("/").body(AxumBody::empty()).unwrap();
    drop(app.clone().oneshot(head).await.unwrap());
    drop(app.clone().oneshot(request_to("/nothing")).await.unwrap());
    let total = analytics.total(HOUR).summary();
    assert_eq!((total.count, total.aborted), (2, 0));
}

#[tokio::test]
async fn a_failing_service_is_a_server_error_without_a_status() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let analytics = PerformanceAnalytics::new();
    let service = MetricsLayer::new()
        .analytics(analytics.clone())
        .layer(service_fn(|_: Request<()>| async {
            Err::<Response<Full<Bytes>>, _>(std::io::Error::other("database down"))
        }));
    let result = service.oneshot(Request::new(())).await;
    assert!(result.is_err());
    assert_eq!(
        recorder
            .histogram(&["http.route=unmatched", "error.type=service_error"])
            .len(),
        1
    );
    assert!(recorder.histogram(&["status_code"]).is_empty());
    let summary = analytics.summary("GET unmatched", HOUR).unwrap();
    assert_eq!((summary.count, summary.server_errors), (1, 1));
}

#[tokio::test]
async fn server_errors_carry_their_status_as_error_type() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let service = Metrics::new(service_fn(|_: Request<()>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"oops")));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        Ok::<_, Infallible>(response)
    }));
    let response = service.oneshot(Request::new(())).await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(
        recorder
            .histogram(&["error.type=502", "status_code=502"])
            .len(),
        1
    );
}

#[tokio::test]
async fn a_template_extension_names_the_route_without_a_hook() {
    let analytics = PerformanceAnalytics::new();
    let service = MetricsLayer::new()
        .analytics(analytics.clone())
        .layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(RouteTemplate::new("/orders/{id}"));
    let response = service.oneshot(request).await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(analytics.routes(), ["GET /orders/{id}"]);
}

#[cfg(feature = "alloc-tracking")]
#[tokio::test]
async fn memory_used_counts_what_the_request_allocated() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let app = Router::new()
        .fallback(|| async {
            let buffer = vec![7u8; 1 << 20];
            tokio::task::yield_now().await;
            // A second poll allocates more.
            let more = vec![1u8; 1 << 16];
            (buffer.len() + more.len()).to_string()
        })
        .layer(MetricsLayer::new().memory_header(true));
    let response = app.oneshot(request_to("/")).await.unwrap();
    let used: u64 = response.headers()["x-memory-used"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used >= (1 << 20) + (1 << 16), "{used}");
    assert!(used < 4 << 20, "{used}");
    let _ = read(response).await;
    let recorded = recorder.histogram(&["hasivu.http.server.request.allocated"]);
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0] >= used as f64);
}
