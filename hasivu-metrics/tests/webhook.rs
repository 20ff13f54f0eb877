//! The webhook sink against real local HTTP servers: a healthy one, a slow
//! one, failing ones and none at all.
#![cfg(feature = "webhook")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use hasivu_metrics::{
    Error, ManualClock,
    alerts::{
        AlertManager, AlertSink, Inputs, Metric, Notification, Rule, Severity, Status, WebhookSink,
    },
};
use serde_json::Value;

#[derive(Clone, Default)]
struct Server {
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

/// Serves `answer(call number)` (after an optional delay) and records the
/// JSON bodies.
async fn serve(answer: fn(usize) -> StatusCode, delay: Duration) -> (String, Server) {
    let server = Server::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State(s): State<Server>, Json(body): Json<Value>| async move {
                    let n = s.calls.fetch_add(1, Ordering::SeqCst);
                    s.bodies.lock().unwrap().push(body);
                    tokio::time::sleep(delay).await;
                    answer(n)
                },
            ),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), server)
}

fn batch() -> Vec<Notification> {
    vec![Notification {
        status: Status::Firing,
        fingerprint: "0123456789abcdef".into(),
        rule: "error_rate".into(),
        severity: Severity::Critical,
        route: Some("GET /menu/daily".into()),
        value: Some(0.12),
        threshold: 0.10,
        starts_at_ms: 1,
        ends_at_ms: None,
        labels: [("team".to_owned(), "kitchen".to_owned())].into(),
    }]
}

fn sink(url: &str) -> WebhookSink {
    WebhookSink::new(url)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .retries(2)
        .backoff(Duration::from_millis(10))
}

#[tokio::test]
async fn posts_alertmanager_style_json() {
    let (url, server) = serve(|_| StatusCode::OK, Duration::ZERO).await;
    sink(&url)
        .header("x-token", "t")
        .send(&batch())
        .await
        .unwrap();
    let bodies = server.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["version"], "1");
    assert_eq!(bodies[0]["status"], "firing");
    assert_eq!(bodies[0]["alerts"][0]["rule"], "error_rate");
    assert_eq!(bodies[0]["alerts"][0]["route"], "GET /menu/daily");
    assert_eq!(bodies[0]["alerts"][0]["labels"]["team"], "kitchen");
}

#[tokio::test]
async fn retries_a_failing_server_until_it_answers() {
    let (url, server) = serve(
        |n| {
            if n < 2 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        },
        Duration::ZERO,
    )
    .await;
    sink(&url).send(&batch()).await.unwrap();
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn gives_up_on_a_server_that_keeps_failing() {
    let (url, server) = serve(|_| StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
    let err = sink(&url).send(&batch()).await.unwrap_err();
    assert!(matches!(err, Error::Sink { .. }));
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn does_not_retry_a_client_error() {
    let (url, server) = serve(|_| StatusCode::BAD_REQUEST, Duration::ZERO).await;
    assert!(sink(&url).send(&batch()).await.is_err());
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn times_out_a_slow_server() {
    let (url, server) = serve(|_| StatusCode::OK, Duration::from_secs(60)).await;
    let started = Instant::now();
    let err = sink(&url)
        .timeout(Duration::from_millis(200))
        .retries(1)
        .send(&batch())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
    // Generous bound: far below the server's 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn reports_a_server_that_is_not_there() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    assert!(sink(&url).retries(1).send(&batch()).await.is_err());
}

#[test]
fn refuses_urls_it_cannot_post_to() {
    assert!(matches!(
        WebhookSink::new("https://example.com/x"),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(WebhookSink::new("not a url").is_err());
    assert!(WebhookSink::new("/relative").is_err());
}

#[tokio::test]
async fn the_manager_sends_fire_and_resolve_once_each() {
    let (url, server) = serve(|_| StatusCode::OK, Duration::ZERO).await;
    let time = ManualClock::new();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(
            Rule::above("queue", Metric::Value("q".into()))
                .warning(100.0)
                .for_(Duration::from_secs(30))
                .keep_firing_for(Duration::from_secs(60)),
        )
        .sink(sink(&url))
        .build()
        .unwrap();
    for v in [
        150.0, 150.0, 150.0, 150.0, 150.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0,
    ] {
        manager.run(&Inputs::new().value("q", v)).await;
        time.advance(Duration::from_secs(10));
    }
    let bodies = server.bodies.lock().unwrap();
    let statuses: Vec<&str> = bodies
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    assert_eq!(
        bodies[0]["alerts"][0]["fingerprint"],
        bodies[1]["alerts"][0]["fingerprint"]
    );
}
