//! Service tests on L1 alone: what passes through, what the service sees,
//! and how errors, trailers and odd requests are handled.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{ServiceExt, service_fn};

use super::*;
use crate::Cache;

type Req = Request<Full<Bytes>>;

fn cache() -> Cache {
    Cache::builder().build().unwrap()
}

fn request(method: Method, uri: &str) -> Req {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::default())
        .unwrap()
}

fn get(uri: &str) -> Req {
    request(Method::GET, uri)
}

/// A service that records what it received and answers `body`.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Method, String, HeaderMap)>>>,
}

impl Recorder {
    fn service(
        &self,
        body: &'static str,
    ) -> impl tower::Service<
        Req,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let recorder = self.clone();
        service_fn(move |req: Req| {
            recorder.calls.fetch_add(1, Ordering::SeqCst);
            recorder.seen.lock().unwrap().push((
                req.method().clone(),
                req.uri().to_string(),
                req.headers().clone(),
            ));
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> (Method, String, HeaderMap) {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

fn policy() -> RoutePolicy {
    RoutePolicy::new(Duration::from_secs(60)).namespace("t:")
}

async fn body_of<B: http_body::Body>(response: Response<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn other_methods_and_unmatched_paths_pass_through_untouched() {
    let recorder = Recorder::default();
    let layer = CacheLayer::new(cache()).route("/menu/*", policy());
    let service = tower::Layer::layer(&layer, recorder.service("ok"));

    for (method, uri) in [
        (Method::POST, "/menu/daily"),
        (Method::DELETE, "/menu/daily"),
        (Method::GET, "/health"),
        (Method::GET, "/menu"),
    ] {
        let response = service
            .clone()
            .oneshot(request(method.clone(), uri))
            .await
            .unwrap();
        assert!(
            !response.headers().contains_key("x-cache"),
            "{method} {uri}"
        );
        assert!(response.extensions().get::<CacheStatus>().is_none());
        assert_eq!(recorder.last().0, method, "the method is not rewritten");
    }
    assert_eq!(recorder.calls(), 4);
    // Twice the same uncached request: the service answers both.
    service.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(recorder.calls(), 5);
}

#[tokio::test]
async fn the_first_matching_route_wins() {
    let recorder = Recorder::default();
    let layer = CacheLayer::new(cache())
        .route("/menu/daily", policy().namespace("daily:"))
        .route("/menu/*", policy().namespace("menus:").cache_control(false));
    let service = tower::Layer::layer(&layer, recorder.service("ok"));
    let daily = service.clone().oneshot(get("/menu/daily")).await.unwrap();
    assert_eq!(daily.headers()[header::CACHE_CONTROL], "public, max-age=60");
    let other = service.clone().oneshot(get("/menu/weekly")).await.unwrap();
    assert!(!other.headers().contains_key(header::CACHE_CONTROL));
    assert_eq!(other.headers()["x-cache"], "MISS");
}

#[tokio::test]
async fn the_service_sees_the_normalised_uri_as_a_get_without_validators() {
    let recorder = Recorder::default();
    let service = CacheService::new(recorder.service("menu"), cache(), policy());

    let response = service
        .clone()
        .oneshot(
            Request::head("http://school.example/menu/%64aily?z=1&a=%7e")
                .header(header::IF_NONE_MATCH, "\"stale\"")
                .header(header::IF_MODIFIED_SINCE, "Wed, 21 Oct 2026 07:28:00 GMT")
                .header(header::ACCEPT_LANGUAGE, "kn")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let (method, uri, headers) = recorder.last();
    assert_eq!(method, Method::GET, "HEAD misses fetch the GET answer");
    assert_eq!(uri, "http://school.example/menu/daily?a=~&z=1");
    assert!(!headers.contains_key(header::IF_NONE_MATCH));
    assert!(!headers.contains_key(header::IF_MODIFIED_SINCE));
    assert_eq!(headers[header::ACCEPT_LANGUAGE], "kn");
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "4");
    assert!(body_of(response).await.is_empty(), "HEAD: no body");

    // Every spelling of the URI finds the entry.
    let hit = service
        .clone()
        .oneshot(get("/menu/daily?a=~&z=1"))
        .await
        .unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT-L1");
    assert_eq!(body_of(hit).await, "menu");
    assert_eq!(recorder.calls(), 1);
}

#[tokio::test]
async fn service_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Down;
    let service = service_fn(|_req: Req| async { Err::<Response<Full<Bytes>>, _>(Down) });
    let service = CacheService::new(service, cache(), policy());
    let error = service.oneshot(get("/menu")).await.unwrap_err();
    assert_eq!(error, Down);
}

#[tokio::test]
async fn body_errors_pass_through_after_the_bytes_read() {
    let service = service_fn(|_req: Req| async {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"half a "))),
            Err(std::io::Error::other("connection reset")),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        Ok::<_, Infallible>(Response::new(body))
    });
    let service = CacheService::new(service, cache(), policy());
    let response = service.clone().oneshot(get("/menu")).await.unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "half a ");
    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "connection reset");
    let again = service.oneshot(get("/menu")).await.unwrap();
    assert_eq!(
        again.headers()["x-cache"],
        "MISS",
        "a failed body is not stored"
    );
}

#[tokio::test]
async fn bodies_with_trailers_are_sent_whole_and_not_stored() {
    let service = service_fn(|_req: Req| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"data"))),
            Ok(Frame::trailers(trailers)),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
    });
    let service = CacheService::new(service, cache(), policy());
    let response = service.clone().oneshot(get("/t")).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "data");
    let again = service.oneshot(get("/t")).await.unwrap();
    assert_eq!(again.headers()["x-cache"], "MISS");
}

#[tokio::test]
async fn not_modified_only_for_successful_entries() {
    let service = service_fn(|_req: Req| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"gone")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        Ok::<_, Infallible>(response)
    });
    let service = CacheService::new(service, cache(), policy());
    let first = service.clone().oneshot(get("/x")).await.unwrap();
    let etag = first.headers()[header::ETAG].clone();
    let request = Request::get("/x")
        .header(header::IF_NONE_MATCH, etag)
        .body(Full::default())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-cache"], "HIT-L1");
}

#[tokio::test]
async fn hits_carry_age_and_the_status_extension() {
    let recorder = Recorder::default();
    let service = CacheService::new(recorder.service("menu"), cache(), policy());
    let miss = service.clone().oneshot(get("/m")).await.unwrap();
    assert_eq!(
        miss.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert!(!miss.headers().contains_key(header::AGE));
    let hit = service.oneshot(get("/m")).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::HitL1)
    );
    assert_eq!(hit.headers()[header::AGE], "0");
    assert!(
        !hit.headers().contains_key("surrogate-key"),
        "tags are opt-in"
    );
}

#[tokio::test]
async fn the_handlers_cache_control_is_kept_when_the_route_emits_none() {
    let service = service_fn(|_req: Req| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"x")));
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=5"),
        );
        Ok::<_, Infallible>(response)
    });
    let service = CacheService::new(service, cache(), policy().cache_control(false));
    service.clone().oneshot(get("/x")).await.unwrap();
    let hit = service.oneshot(get("/x")).await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT-L1");
    assert_eq!(hit.headers()[header::CACHE_CONTROL], "max-age=5");
}

#[tokio::test]
async fn over_long_keys_bypass_the_cache() {
    let recorder = Recorder::default();
    let service = CacheService::new(recorder.service("x"), cache(), policy());
    let uri = format!("/search?q={}", "a".repeat(5000));
    for _ in 0..2 {
        let response = service.clone().oneshot(get(&uri)).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "BYPASS");
    }
    assert_eq!(recorder.calls(), 2);
}

#[tokio::test]
async fn a_zero_ttl_caches_nothing() {
    let recorder = Recorder::default();
    let service = CacheService::new(
        recorder.service("x"),
        cache(),
        RoutePolicy::new(Duration::ZERO),
    );
    for _ in 0..2 {
        let response = service.clone().oneshot(get("/x")).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
    }
    assert_eq!(recorder.calls(), 2);
}

#[tokio::test]
async fn a_stale_hit_starts_one_refresh_per_key() {
    let recorder = Recorder::default();
    let layer = CacheLayer::new(cache()).route(
        "*",
        RoutePolicy::new(Duration::from_millis(1)).stale_while_revalidate(Duration::from_secs(60)),
    );
    let shared = Arc::clone(&layer.shared);
    // Holds the refresh claim of the key, as a running refresh would.
    let service = tower::Layer::layer(&layer, recorder.service("x"));
    service.clone().oneshot(get("/x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let claim = shared.refreshing.claim("http:GET /x").unwrap();
    let stale = service.clone().oneshot(get("/x")).await.unwrap();
    assert_eq!(stale.headers()["x-cache"], "STALE");
    tokio::task::yield_now().await;
    assert_eq!(recorder.calls(), 1, "the key is being refreshed already");
    drop(claim);
    service.clone().oneshot(get("/x")).await.unwrap();
    for _ in 0..100 {
        if recorder.calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.calls(), 2, "one refresh once the key was free");
    let (method, _, _) = recorder.last();
    assert_eq!(method, Method::GET);
}

#[tokio::test]
async fn per_user_answers_are_private_even_when_the_route_emits_no_cache_control() {
    let service = service_fn(|_req: Req| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"mine")));
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=600"),
        );
        Ok::<_, Infallible>(response)
    });
    let policy = policy()
        .cache_control(false)
        .per_user(|parts| Some(parts.headers.get(header::COOKIE)?.to_str().ok()?.to_owned()));
    let service = CacheService::new(service, cache(), policy);
    let request = || {
        Request::get("/me")
            .header(header::COOKIE, "session=7")
            .body(Full::default())
            .unwrap()
    };
    for expected in ["MISS", "HIT-L1"] {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.headers()["x-cache"], expected);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "private, max-age=60"
        );
    }
    let anonymous = service.oneshot(get("/me")).await.unwrap();
    assert_eq!(
        anonymous.headers()[header::CACHE_CONTROL],
        "public, max-age=600",
        "the handler's own header on shared entries"
    );
}

/// A slow service (every answer takes `delay`) counting its calls, with
/// `headers` on every answer.
fn slow_service(
    calls: Arc<AtomicUsize>,
    delay: Duration,
    headers: &'static [(&'static str, &'static str)],
) -> impl tower::Service<
    Req,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Full::new(Bytes::from(format!("answer {n}"))));
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(*name, http::HeaderValue::from_static(value));
            }
            Ok::<_, Infallible>(response)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_key_costs_the_service_one_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(cache()).route("/menu/*", policy());
    let service = tower::Layer::layer(
        &layer,
        slow_service(Arc::clone(&calls), Duration::from_millis(100), &[]),
    );
    let burst: Vec<_> = (0..50)
        .map(|_| tokio::spawn(service.clone().oneshot(get("/menu/daily"))))
        .collect();
    let mut statuses = Vec::new();
    for task in burst {
        let response = task.await.unwrap().unwrap();
        statuses.push(response.headers()["x-cache"].to_str().unwrap().to_owned());
        assert_eq!(body_of(response).await, "answer 1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for the burst");
    assert_eq!(statuses.iter().filter(|s| *s == "MISS").count(), 1);
    assert_eq!(statuses.iter().filter(|s| *s == "HIT-L1").count(), 49);
    assert_eq!(layer.shared.loading.len(), 0, "nothing left in flight");

    // Off, each miss calls the service.
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(cache())
        .route("/menu/*", policy())
        .no_coalescing();
    let service = tower::Layer::layer(
        &layer,
        slow_service(Arc::clone(&calls), Duration::from_millis(100), &[]),
    );
    let burst: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(get("/menu/daily"))))
        .collect();
    for task in burst {
        task.await.unwrap().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_call_the_service_themselves_when_the_answer_is_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(cache()).route("/menu/*", policy());
    let service = tower::Layer::layer(
        &layer,
        slow_service(
            Arc::clone(&calls),
            Duration::from_millis(50),
            &[("cache-control", "no-store")],
        ),
    );
    let burst: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(get("/menu/daily"))))
        .collect();
    let mut bodies = Vec::new();
    for task in burst {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
        bodies.push(body_of(response).await);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5, "no answer was shared");
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 5, "each got its own answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_request_releases_the_waiters_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(cache())
        .route("/menu/*", policy())
        .coalesce(Duration::from_secs(30));
    let service = tower::Layer::layer(
        &layer,
        slow_service(Arc::clone(&calls), Duration::from_millis(300), &[]),
    );
    let first = tokio::spawn(service.clone().oneshot(get("/menu/daily")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(service.clone().oneshot(get("/menu/daily")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The client of the first request went away.
    first.abort();
    let started = std::time::Instant::now();
    let response = second.await.unwrap().unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(body_of(response).await, "answer 2");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the 30 s wait: {:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_request_is_waited_for_only_as_long_as_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(cache())
        .route("/menu/*", policy())
        .coalesce(Duration::from_millis(50));
    let service = tower::Layer::layer(
        &layer,
        slow_service(Arc::clone(&calls), Duration::from_millis(400), &[]),
    );
    let first = tokio::spawn(service.clone().oneshot(get("/menu/daily")));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = service.clone().oneshot(get("/menu/daily")).await.unwrap();
    // The second gave up waiting after 50 ms and asked the service itself.
    assert_eq!(second.headers()["x-cache"], "MISS");
    assert_eq!(body_of(second).await, "answer 2");
    first.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn only_the_declared_query_parameters_make_a_key() {
    let recorder = Recorder::default();
    let layer = CacheLayer::new(cache())
        .route("/menu", policy().query_params(["page"]))
        .route("/any", policy());
    let service = tower::Layer::layer(&layer, recorder.service("ok"));

    // A cache-busting parameter neither makes an entry nor reaches the
    // service: a hundred of them are one entry and one call.
    for n in 0..100 {
        let response = service
            .clone()
            .oneshot(get(&format!("/menu?junk={n}&utm_source=x{n}")))
            .await
            .unwrap();
        let expected = if n == 0 { "MISS" } else { "HIT-L1" };
        assert_eq!(response.headers()["x-cache"], expected, "request {n}");
    }
    assert_eq!(recorder.calls(), 1);
    assert_eq!(
        recorder.last().1,
        "/menu",
        "undeclared parameters are not forwarded"
    );
    // A declared one is part of the key and is forwarded (normalised).
    let response = service
        .clone()
        .oneshot(get("/menu?junk=1&p%61ge=2"))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(recorder.last().1, "/menu?page=2");
    let response = service.clone().oneshot(get("/menu?page=2")).await.unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT-L1");
    assert_eq!(recorder.calls(), 2);

    // Without a declaration every parameter counts, as before.
    service.clone().oneshot(get("/any?a=1")).await.unwrap();
    service.clone().oneshot(get("/any?a=2")).await.unwrap();
    assert_eq!(recorder.calls(), 4);
    // An empty declaration ignores the query entirely.
    let none = CacheLayer::new(cache()).route("/x", policy().query_params(Vec::<String>::new()));
    let recorder = Recorder::default();
    let service = tower::Layer::layer(&none, recorder.service("ok"));
    service.clone().oneshot(get("/x?a=1")).await.unwrap();
    service.clone().oneshot(get("/x?b=2")).await.unwrap();
    assert_eq!(recorder.calls(), 1);
    assert_eq!(recorder.last().1, "/x");
}

#[test]
fn query_parameters_load_from_configuration() {
    let policy: RoutePolicy =
        serde_json::from_str(r#"{ "query_params": ["page", "fields"] }"#).unwrap();
    assert_eq!(
        policy.query_params.as_deref(),
        Some(&["page".to_owned(), "fields".to_owned()][..])
    );
    let policy: RoutePolicy = serde_json::from_str("{}").unwrap();
    assert!(policy.query_params.is_none());
}
