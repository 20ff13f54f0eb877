//! The HTTP adapter against a local axum server: the per-host limit on
//! requests in flight, and the host going away and coming back.
#![cfg(feature = "http")]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hasivu_pool::{HttpError, HttpManager, Pool, PoolConfig, PoolError};
use http_body_util::Full;

/// Requests the server is answering right now, and the most at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// A local HTTP server that can be stopped and started again on its port.
struct Server {
    addr: SocketAddr,
    stats: Arc<InFlight>,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = Server {
            addr: listener.local_addr().unwrap(),
            stats: Arc::default(),
            running: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        use axum::{Router, routing::get};
        let stats = Arc::clone(&self.stats);
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/slow",
                get(move || {
                    let stats = Arc::clone(&stats);
                    async move {
                        let now = stats.now.fetch_add(1, Ordering::SeqCst) + 1;
                        stats.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        stats.now.fetch_sub(1, Ordering::SeqCst);
                        "slow"
                    }
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes idle keep-alive connections, waits for the
    /// server to finish.
    async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("running");
        let _ = stop.send(());
        task.await.unwrap();
    }

    async fn start_again(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

fn config() -> PoolConfig {
    PoolConfig::default()
        .max_size(3)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(30))
        .create_timeout(Duration::from_secs(2))
        .validate_after(Duration::ZERO)
        .retry_initial(Duration::from_millis(50))
        .retry_max(Duration::from_millis(400))
        .breaker_threshold(2)
        .leak_threshold(None)
}

fn pool(server: &Server) -> Pool<HttpManager> {
    Pool::builder(HttpManager::new(&server.url()).expect("a valid base"))
        .name("local-api")
        .config(config())
        .build()
}

/// The error behind a failed acquire, as text.
fn backend_text(error: &PoolError<HttpError>) -> String {
    match error {
        PoolError::Backend(e)
        | PoolError::Unavailable {
            last_error: Some(e),
            ..
        } => e.to_string(),
        other => panic!("expected the backend's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_to_the_host_never_exceed_max_size() {
    let server = Server::start().await;
    let pool = pool(&server);
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut api = pool.get().await.expect("a handle");
                let response = api.get("/slow").await.expect("answered");
                assert_eq!(response.status(), 200);
                assert_eq!(response.body(), "slow");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished");
    }
    assert_eq!(
        server.stats.most.load(Ordering::SeqCst),
        3,
        "the server saw max_size requests at once, never more"
    );
    let status = pool.status();
    assert_eq!(status.creates, 3, "{status:?}");
    assert_eq!(status.wait.count, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_name_the_pools_host_or_none() {
    let server = Server::start().await;
    let pool = pool(&server);
    let mut api = pool.get().await.unwrap();
    // A path is completed with the pool's host; a full URI must name it.
    let absolute = http::Request::get(format!("{}/hello", server.url()))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = api.request_bytes(absolute).await.unwrap();
    assert_eq!(response.body(), "hello");
    let elsewhere = http::Request::get("http://example.invalid/hello")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert!(matches!(
        api.request(elsewhere).await,
        Err(HttpError::OtherHost { .. })
    ));
    assert!(!api.is_broken(), "refusing a request breaks nothing");
    let response = api.get("/missing").await.unwrap();
    assert_eq!(response.status(), 404, "an error status is a response");
    assert!(matches!(
        HttpManager::new("/no-host"),
        Err(HttpError::InvalidBase(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_host_stopped_acquires_fail_fast_with_the_real_error_then_the_pool_heals() {
    let mut server = Server::start().await;
    let pool = pool(&server);
    // The pool at its maximum: two idle handles, one held across the outage.
    let all: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
    drop(all);
    let mut held = pool.get().await.unwrap();
    assert_eq!(held.get("/hello").await.unwrap().body(), "hello");

    server.stop().await;

    // The held handle's request fails in transport; it is retired on return.
    let error = held.get("/hello").await.expect_err("host gone");
    assert!(held.is_broken(), "{error}");
    let text = error.to_string().to_lowercase();
    assert!(
        matches!(error, HttpError::Client(_))
            && (text.contains("refused") || text.contains("closed")),
        "the transport's own words: {text}"
    );
    drop(held);

    // Idle handles fail their probe and are retired instead of being handed
    // out; the new handle's probe is refused, and the caller hears so at
    // once, not after the 30 s acquire timeout.
    let started = Instant::now();
    let error = pool.get().await.expect_err("host is down");
    let first = started.elapsed();
    let text = backend_text(&error);
    assert!(
        text.to_lowercase().contains("refused"),
        "the real cause: {text}"
    );
    assert!(first < Duration::from_secs(1), "failed fast: {first:?}");
    let status = pool.status();
    assert_eq!(status.closes.broken, 3, "{status:?}");

    let mut slowest = first;
    let mut unavailable = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let error = pool.get().await.expect_err("still down");
        slowest = slowest.max(started.elapsed());
        assert!(backend_text(&error).to_lowercase().contains("refused"));
        if matches!(error, PoolError::Unavailable { .. }) {
            unavailable += 1;
        }
    }
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(unavailable > 0, "the breaker opened");
    eprintln!(
        "with the host down: first acquire failed in {first:?} ({error}), slowest of 11 in {slowest:?}"
    );

    server.start_again().await;
    let restarted = Instant::now();
    loop {
        match pool.get().await {
            Ok(mut api) => {
                assert_eq!(api.get("/hello").await.unwrap().body(), "hello");
                break;
            }
            Err(error) => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "not healed after 5 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!("host back: the pool healed in {:?}", restarted.elapsed());
    assert!(!pool.status().breaker_open);
}
