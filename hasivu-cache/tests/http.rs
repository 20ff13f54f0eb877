//! The HTTP cache layer in front of axum handlers: privacy, what is never
//! stored, validators, variants, HEAD, normalisation, the body cap, and,
//! with a real Redis, sharing between instances, stale-while-revalidate and
//! invalidation across instances.
#![cfg(all(feature = "http", feature = "redis"))]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use hasivu_cache::{Cache, CacheLayer, CacheStatus, RoutePolicy};
use hasivu_testkit::RedisServer;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Counts handler calls.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    /// The number of this call, from 1.
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn local() -> Cache {
    Cache::builder().build().unwrap()
}

fn shared(redis: &RedisServer) -> Cache {
    Cache::builder().redis(redis.url()).build().unwrap()
}

fn minute() -> RoutePolicy {
    RoutePolicy::new(Duration::from_secs(60))
}

/// A GET with extra headers.
fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

fn plain(uri: &str) -> Request<Body> {
    get_with(uri, &[])
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    cache: Option<CacheStatus>,
    body: Bytes,
}

impl Answer {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let cache = response.extensions().get::<CacheStatus>().copied();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        cache,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A handler that answers `{prefix}{call number}`, and echoes the
/// `Authorization` header when there is one.
fn counting(calls: &Calls, prefix: &'static str) -> axum::routing::MethodRouter {
    let calls = calls.clone();
    get(move |headers: HeaderMap| {
        let n = calls.next();
        async move {
            match headers.get(header::AUTHORIZATION) {
                Some(auth) => format!("{prefix}{n} for {}", auth.to_str().unwrap()),
                None => format!("{prefix}{n}"),
            }
        }
    })
}

#[tokio::test]
async fn without_a_per_user_key_credentials_are_never_cached() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/users/me", counting(&calls, "profile "))
        .layer(CacheLayer::with_policy(local(), minute()));

    let asha = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer asha")]),
    )
    .await;
    let ravi = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer ravi")]),
    )
    .await;
    let asha_again = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer asha")]),
    )
    .await;
    let with_cookie = send(&app, get_with("/users/me", &[("cookie", "session=ravi")])).await;
    assert_eq!(asha.text(), "profile 1 for Bearer asha");
    assert_eq!(ravi.text(), "profile 2 for Bearer ravi");
    assert_eq!(asha_again.text(), "profile 3 for Bearer asha");
    assert_eq!(with_cookie.text(), "profile 4");
    for answer in [&asha, &ravi, &asha_again, &with_cookie] {
        assert_eq!(answer.x_cache(), "BYPASS");
        assert_eq!(answer.cache, Some(CacheStatus::Bypass));
        assert!(!answer.headers.contains_key(header::CACHE_CONTROL));
    }
    // Nor do they read what anonymous requests stored.
    let anonymous = send(&app, plain("/users/me")).await;
    assert_eq!(anonymous.x_cache(), "MISS");
    let asha_after = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer asha")]),
    )
    .await;
    assert_eq!(asha_after.text(), "profile 6 for Bearer asha");
    assert_eq!(calls.get(), 6);
}

#[tokio::test]
async fn per_user_keys_keep_separate_private_entries() {
    let calls = Calls::default();
    let policy = minute().namespace("user:profile:").per_user(|parts| {
        let auth = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        // An unknown scheme is not cached.
        auth.strip_prefix("Bearer ").map(str::to_owned)
    });
    let app = Router::new()
        .route("/users/me", counting(&calls, "profile "))
        .layer(
            CacheLayer::new(local())
                .route("/users/*", policy)
                .tag_headers(true),
        );

    let asha = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer asha")]),
    )
    .await;
    let ravi = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer ravi")]),
    )
    .await;
    assert_eq!((asha.x_cache(), ravi.x_cache()), ("MISS", "MISS"));
    let asha_hit = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer asha")]),
    )
    .await;
    let ravi_hit = send(
        &app,
        get_with("/users/me", &[("authorization", "Bearer ravi")]),
    )
    .await;
    assert_eq!(asha_hit.x_cache(), "HIT-L1");
    assert_eq!(ravi_hit.x_cache(), "HIT-L1");
    assert_eq!(asha_hit.text(), "profile 1 for Bearer asha");
    assert_eq!(ravi_hit.text(), "profile 2 for Bearer ravi");
    for answer in [&asha, &ravi, &asha_hit, &ravi_hit] {
        assert_eq!(answer.headers[header::CACHE_CONTROL], "private, max-age=60");
        assert!(!answer.headers.contains_key("surrogate-key"));
        assert!(!answer.headers.contains_key("cache-tag"));
    }

    let basic = send(
        &app,
        get_with("/users/me", &[("authorization", "Basic eA==")]),
    )
    .await;
    assert_eq!(basic.x_cache(), "BYPASS");
    // Without credentials: one shared, public entry, never a user's.
    let anonymous = send(&app, plain("/users/me")).await;
    assert_eq!(anonymous.text(), "profile 4");
    assert!(
        anonymous.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .starts_with("public")
    );
    assert_eq!(anonymous.headers["surrogate-key"], "user:* user:profile:*");
    assert_eq!(send(&app, plain("/users/me")).await.text(), "profile 4");
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn set_cookie_answers_are_never_cached() {
    let calls = Calls::default();
    let handler_calls = calls.clone();
    let app = Router::new()
        .route(
            "/login/form",
            get(move || {
                let n = handler_calls.next();
                async move {
                    (
                        [(header::SET_COOKIE, format!("csrf={n}"))],
                        format!("form {n}"),
                    )
                }
            }),
        )
        .layer(CacheLayer::with_policy(local(), minute()));
    let first = send(&app, plain("/login/form")).await;
    let second = send(&app, plain("/login/form")).await;
    assert_eq!(first.headers[header::SET_COOKIE], "csrf=1");
    assert_eq!(second.headers[header::SET_COOKIE], "csrf=2");
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(second.text(), "form 2");
    assert!(!second.headers.contains_key(header::ETAG));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn the_handlers_no_store_and_private_are_respected() {
    for directive in [
        "no-store",
        "private",
        "no-cache",
        "private=\"x-user\", max-age=60",
    ] {
        let calls = Calls::default();
        let handler_calls = calls.clone();
        let app = Router::new()
            .route(
                "/report",
                get(move || {
                    let n = handler_calls.next();
                    async move { ([(header::CACHE_CONTROL, directive)], format!("report {n}")) }
                }),
            )
            .layer(CacheLayer::with_policy(local(), minute()));
        send(&app, plain("/report")).await;
        let second = send(&app, plain("/report")).await;
        assert_eq!(second.x_cache(), "MISS", "{directive}");
        assert_eq!(second.text(), "report 2", "{directive}");
        assert_eq!(
            second.headers[header::CACHE_CONTROL],
            directive,
            "the handler's header is sent as it was"
        );
        assert_eq!(calls.get(), 2);
    }
}

#[tokio::test]
async fn if_none_match_is_answered_from_the_cache_with_304() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/menu/daily", counting(&calls, "menu "))
        .layer(CacheLayer::with_policy(local(), minute()));

    let first = send(&app, plain("/menu/daily")).await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");

    for header_value in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let answer = send(
            &app,
            get_with("/menu/daily", &[("if-none-match", &header_value)]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{header_value}");
        assert!(answer.body.is_empty());
        assert_eq!(answer.headers[header::ETAG], etag.as_str());
        assert_eq!(answer.headers[header::CACHE_CONTROL], "public, max-age=60");
        assert_eq!(answer.x_cache(), "HIT-L1");
        assert!(!answer.headers.contains_key(header::CONTENT_TYPE));
    }
    let changed = send(
        &app,
        get_with("/menu/daily", &[("if-none-match", "\"other\"")]),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.text(), "menu 1");
    assert_eq!(calls.get(), 1, "the handler ran once");
}

#[tokio::test]
async fn a_client_validator_on_a_miss_gets_a_full_answer_that_is_stored() {
    let calls = Calls::default();
    let handler_calls = calls.clone();
    // A handler that honours validators itself: it must not see them, or
    // the cache would have no body to store.
    let app = Router::new()
        .route(
            "/menu/daily",
            get(move |headers: HeaderMap| {
                let n = handler_calls.next();
                async move {
                    if headers.contains_key(header::IF_NONE_MATCH) {
                        return Response::builder()
                            .status(StatusCode::NOT_MODIFIED)
                            .body(Body::empty())
                            .unwrap();
                    }
                    Response::new(Body::from(format!("menu {n}")))
                }
            }),
        )
        .layer(CacheLayer::with_policy(local(), minute()));

    let first = send(
        &app,
        get_with("/menu/daily", &[("if-none-match", "\"old\"")]),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "menu 1");
    assert_eq!(first.x_cache(), "MISS");
    let second = send(&app, plain("/menu/daily")).await;
    assert_eq!(second.x_cache(), "HIT-L1");
    assert_eq!(second.text(), "menu 1");
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn vary_stores_one_entry_per_variant() {
    let calls = Calls::default();
    let handler_calls = calls.clone();
    let app = Router::new()
        .route(
            "/menu/daily",
            get(move |headers: HeaderMap| {
                handler_calls.next();
                let language = headers
                    .get(header::ACCEPT_LANGUAGE)
                    .map_or("en", |v| v.to_str().unwrap())
                    .to_owned();
                async move {
                    let text = if language.starts_with("kn") {
                        "ರಾಗಿ ಮುದ್ದೆ"
                    } else {
                        "ragi mudde"
                    };
                    ([(header::VARY, "Accept-Language")], text)
                }
            }),
        )
        .layer(CacheLayer::with_policy(local(), minute()));

    let english = send(&app, get_with("/menu/daily", &[("accept-language", "en")])).await;
    let kannada = send(&app, get_with("/menu/daily", &[("accept-language", "kn")])).await;
    assert_eq!((english.x_cache(), kannada.x_cache()), ("MISS", "MISS"));
    let english_hit = send(
        &app,
        get_with("/menu/daily", &[("accept-language", " en ")]),
    )
    .await;
    let kannada_hit = send(&app, get_with("/menu/daily", &[("accept-language", "kn")])).await;
    assert_eq!(english_hit.x_cache(), "HIT-L1");
    assert_eq!(english_hit.text(), "ragi mudde");
    assert_eq!(kannada_hit.x_cache(), "HIT-L1");
    assert_eq!(kannada_hit.text(), "ರಾಗಿ ಮುದ್ದೆ");
    assert_eq!(kannada_hit.headers[header::VARY], "Accept-Language");
    assert_ne!(
        english_hit.headers[header::ETAG],
        kannada_hit.headers[header::ETAG]
    );
    // No header is a variant of its own.
    assert_eq!(send(&app, plain("/menu/daily")).await.x_cache(), "MISS");
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn accept_encoding_is_keyed_by_the_negotiated_coding() {
    let calls = Calls::default();
    let handler_calls = calls.clone();
    // Stands in for a compression layer inside the cache.
    let app = Router::new()
        .route(
            "/menu/daily",
            get(move |headers: HeaderMap| {
                handler_calls.next();
                let accept = headers
                    .get(header::ACCEPT_ENCODING)
                    .map_or("", |v| v.to_str().unwrap())
                    .to_owned();
                async move {
                    let coding = if accept.contains("br") {
                        "br"
                    } else {
                        "identity"
                    };
                    (
                        [
                            (header::VARY, "accept-encoding".to_owned()),
                            (header::CONTENT_ENCODING, coding.to_owned()),
                            // A weak tag, as a compression layer leaves it.
                            (header::ETAG, "W/\"menu\"".to_owned()),
                        ],
                        format!("bytes in {coding}"),
                    )
                }
            }),
        )
        .layer(
            CacheLayer::with_policy(local(), minute()).accept_encoding(|headers| {
                let accept = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains("br") {
                    "br"
                } else {
                    "identity"
                }
                .to_owned()
            }),
        );

    let first = send(
        &app,
        get_with("/menu/daily", &[("accept-encoding", "gzip, br")]),
    )
    .await;
    assert_eq!(first.x_cache(), "MISS");
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(!etag.starts_with("W/"), "the stored bytes get a strong tag");
    let same_coding = send(
        &app,
        get_with("/menu/daily", &[("accept-encoding", "br;q=1, gzip")]),
    )
    .await;
    assert_eq!(same_coding.x_cache(), "HIT-L1");
    assert_eq!(same_coding.text(), "bytes in br");
    assert_eq!(same_coding.headers[header::CONTENT_ENCODING], "br");
    assert_eq!(same_coding.headers[header::ETAG], etag.as_str());
    let identity = send(
        &app,
        get_with("/menu/daily", &[("accept-encoding", "gzip")]),
    )
    .await;
    assert_eq!(identity.x_cache(), "MISS");
    assert_eq!(identity.text(), "bytes in identity");
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn head_is_served_from_the_get_entry() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/menu/daily", counting(&calls, "menu "))
        .layer(CacheLayer::with_policy(local(), minute()));
    let full = send(&app, plain("/menu/daily")).await;
    let head = send(
        &app,
        Request::head("/menu/daily").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.x_cache(), "HIT-L1");
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::CACHE_CONTROL,
    ] {
        assert_eq!(head.headers.get(&name), full.headers.get(&name), "{name}");
    }
    assert_eq!(head.headers[header::CONTENT_LENGTH], "6");
    assert_eq!(calls.get(), 1, "HEAD did not reach the handler");
}

#[tokio::test]
async fn queries_are_normalised() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/schools/{id}/menu", counting(&calls, "menu "))
        .layer(CacheLayer::new(local()).route("/schools/*", minute()));
    assert_eq!(
        send(&app, plain("/schools/7/menu?a=1&b=2")).await.x_cache(),
        "MISS"
    );
    for uri in [
        "/schools/7/menu?b=2&a=1",
        "/schools/7/menu?b=2&&a=%31",
        "/schools/%37/menu?a=1&b=2",
    ] {
        let answer = send(&app, plain(uri)).await;
        assert_eq!(answer.x_cache(), "HIT-L1", "{uri}");
        assert_eq!(answer.text(), "menu 1");
    }
    assert_eq!(
        send(&app, plain("/schools/7/menu?a=2&b=2")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&app, plain("/schools/8/menu?a=1&b=2")).await.x_cache(),
        "MISS"
    );
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn statuses_follow_the_policy() {
    let calls = Calls::default();
    let handler_calls = calls.clone();
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<u32>| {
                handler_calls.next();
                async move {
                    match id {
                        500 => (StatusCode::INTERNAL_SERVER_ERROR, "down"),
                        404 => (StatusCode::NOT_FOUND, "no such order"),
                        _ => (StatusCode::OK, "order"),
                    }
                }
            }),
        )
        .layer(CacheLayer::with_policy(
            local(),
            minute().statuses([200, 404]),
        ));
    for _ in 0..2 {
        let error = send(&app, plain("/orders/500")).await;
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.x_cache(), "MISS");
    }
    assert_eq!(send(&app, plain("/orders/404")).await.x_cache(), "MISS");
    let not_found = send(&app, plain("/orders/404")).await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_eq!(not_found.x_cache(), "HIT-L1");
    assert_eq!(not_found.text(), "no such order");
    assert_eq!(calls.get(), 3);

    // Without 404 in the list, it is not stored.
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(|| async { (StatusCode::NOT_FOUND, "no") }),
        )
        .layer(CacheLayer::with_policy(local(), minute().statuses([200])));
    send(&app, plain("/orders/1")).await;
    assert_eq!(send(&app, plain("/orders/1")).await.x_cache(), "MISS");
}

#[tokio::test]
async fn bodies_over_the_cap_pass_through_complete_and_uncached() {
    const SIZE: usize = 2 * 1024 * 1024;
    let expected: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let expected = Bytes::from(expected);
    let calls = Calls::default();
    let (streamed_calls, known_calls) = (calls.clone(), calls.clone());
    let (streamed, known) = (expected.clone(), expected.clone());
    let app = Router::new()
        // Unknown length: buffered up to the cap, then streamed.
        .route(
            "/export/streamed",
            get(move || {
                streamed_calls.next();
                let chunks: Vec<Result<Bytes, Infallible>> = streamed
                    .chunks(64 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                async move { Body::from_stream(futures_util::stream::iter(chunks)) }
            }),
        )
        // Known length: not even buffered.
        .route(
            "/export/known",
            get(move || {
                known_calls.next();
                let body = known.clone();
                async move { body }
            }),
        )
        .layer(CacheLayer::with_policy(local(), minute()));

    for uri in ["/export/streamed", "/export/known"] {
        for _ in 0..2 {
            let answer = send(&app, plain(uri)).await;
            assert_eq!(answer.x_cache(), "MISS", "{uri}");
            assert_eq!(answer.body.len(), SIZE, "{uri}");
            assert!(answer.body == expected, "{uri}: every byte, in order");
            assert!(!answer.headers.contains_key(header::ETAG));
        }
    }
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn a_second_instance_hits_l2() {
    let redis = RedisServer::start();
    let calls = Calls::default();
    let app = |cache: Cache| {
        Router::new()
            .route("/menu/daily", counting(&calls, "menu "))
            .layer(CacheLayer::with_policy(
                cache,
                minute().namespace("menu:daily:"),
            ))
    };
    let a = app(shared(&redis));
    let b = app(shared(&redis));

    let miss = send(&a, plain("/menu/daily")).await;
    assert_eq!(miss.x_cache(), "MISS");
    let l2 = send(&b, plain("/menu/daily")).await;
    assert_eq!(l2.x_cache(), "HIT-L2");
    assert_eq!(l2.cache, Some(CacheStatus::HitL2));
    assert_eq!(l2.text(), "menu 1");
    assert_eq!(l2.headers[header::ETAG], miss.headers[header::ETAG]);
    assert_eq!(
        l2.headers[header::CONTENT_TYPE],
        miss.headers[header::CONTENT_TYPE]
    );
    assert_eq!(send(&b, plain("/menu/daily")).await.x_cache(), "HIT-L1");
    // B answers A's validator.
    let etag = miss.headers[header::ETAG].to_str().unwrap();
    let not_modified = send(&b, get_with("/menu/daily", &[("if-none-match", etag)])).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn foreign_bytes_under_a_key_are_a_miss() {
    let redis = RedisServer::start();
    let cache = shared(&redis);
    // A Node.js service wrote JSON where the layer keeps its entry.
    cache
        .set(
            "http:GET /menu/daily",
            vec!["ragi mudde"],
            &hasivu_cache::EntryOptions::new(Duration::from_secs(60)).skip_l1(),
        )
        .await
        .unwrap();
    let calls = Calls::default();
    let app = Router::new()
        .route("/menu/daily", counting(&calls, "menu "))
        .layer(CacheLayer::with_policy(cache, minute()));
    let answer = send(&app, plain("/menu/daily")).await;
    assert_eq!(answer.x_cache(), "MISS");
    assert_eq!(answer.text(), "menu 1");
    assert_eq!(send(&app, plain("/menu/daily")).await.x_cache(), "HIT-L1");
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let redis = RedisServer::start();
    let calls = Calls::default();
    let handler_calls = calls.clone();
    let app = Router::new()
        .route(
            "/menu/daily",
            get(move || {
                let n = handler_calls.next();
                async move {
                    if n > 1 {
                        // A slow refresh: stale answers must not wait for it.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    format!("menu {n}")
                }
            }),
        )
        .layer(CacheLayer::with_policy(
            shared(&redis),
            RoutePolicy::new(Duration::from_millis(200))
                .stale_while_revalidate(Duration::from_secs(2)),
        ));

    let first = send(&app, plain("/menu/daily")).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.headers[header::CACHE_CONTROL],
        "public, max-age=0, stale-while-revalidate=2"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let stale =
        futures_util::future::join_all((0..5).map(|_| send(&app, plain("/menu/daily")))).await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "stale answers do not wait for the refresh"
    );
    for answer in &stale {
        assert_eq!(answer.x_cache(), "STALE");
        assert_eq!(answer.cache, Some(CacheStatus::Stale));
        assert_eq!(answer.text(), "menu 1");
    }

    let deadline = Instant::now() + Duration::from_secs(2);
    let refreshed = loop {
        let answer = send(&app, plain("/menu/daily")).await;
        if answer.text() != "menu 1" || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refreshed.text(), "menu 2");
    assert_eq!(refreshed.x_cache(), "HIT-L1");
    assert_eq!(
        calls.get(),
        2,
        "one background refresh for six stale requests"
    );
}

#[tokio::test]
async fn an_invalidation_on_one_instance_makes_the_other_miss() {
    let redis = RedisServer::start();
    let calls = Calls::default();
    let cache_a = shared(&redis);
    let cache_b = shared(&redis);
    let app = |cache: Cache| {
        Router::new()
            .route("/menu/daily", counting(&calls, "menu "))
            .route("/schools", counting(&calls, "schools "))
            .layer(
                CacheLayer::new(cache)
                    .route("/menu/daily", minute().namespace("menu:daily:"))
                    .route("/schools", minute().namespace("school:active:")),
            )
    };
    let a = app(cache_a.clone());
    let b = app(cache_b);

    assert_eq!(send(&b, plain("/menu/daily")).await.x_cache(), "MISS");
    assert_eq!(send(&b, plain("/schools")).await.x_cache(), "MISS");
    assert_eq!(send(&b, plain("/menu/daily")).await.x_cache(), "HIT-L1");
    assert_eq!(send(&a, plain("/menu/daily")).await.x_cache(), "HIT-L2");

    // An order was created: instance A invalidates the menus.
    let done = cache_a.invalidate("menu:*").await.unwrap();
    assert!(done.propagated);

    // B's L1 copy is dropped by the backplane within moments.
    let deadline = Instant::now() + Duration::from_secs(2);
    let on_b = loop {
        let answer = send(&b, plain("/menu/daily")).await;
        if answer.x_cache() != "HIT-L1" || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(on_b.x_cache(), "MISS", "the L2 entry is out of date too");
    assert_eq!(on_b.text(), "menu 3");
    // A finds B's new entry, not its own old one.
    let on_a = send(&a, plain("/menu/daily")).await;
    assert_eq!(on_a.x_cache(), "HIT-L2");
    assert_eq!(on_a.text(), "menu 3");
    assert_eq!(
        send(&b, plain("/schools")).await.x_cache(),
        "HIT-L1",
        "other namespaces keep their entries"
    );
    assert_eq!(calls.get(), 3);
}
