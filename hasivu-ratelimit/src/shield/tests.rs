//! The shield through its layer: detectors, scoring, actions, the
//! allow-list, bodies, logs and metrics.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hasivu_testkit::LogCapture;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::{Cidr, Quota, http::PeerAddr};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0";

/// Answers 404 under `/missing`, reports the shield's findings in
/// `x-reasons` and the body it read in `x-body`.
async fn app<B>(request: Request<InspectedBody<B>>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let reasons = request
        .extensions()
        .get::<ShieldVerdict>()
        .map(|v| {
            v.findings
                .iter()
                .map(|f| f.reason)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let status = if request.uri().path().starts_with("/missing") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let buffered = request.body().was_buffered();
    let collected = request.into_body().collect().await;
    let (body, trailers) = match collected {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(e) => (Bytes::from(format!("error: {e:?}")), None),
    };
    let mut answer = Response::builder()
        .status(status)
        .header("x-reasons", reasons)
        .header("x-buffered", buffered.to_string())
        .header("x-body-len", body.len());
    if let Some(t) = trailers {
        answer = answer.header("x-trailers", t.len());
    }
    Ok(answer.body(Full::new(body)).unwrap())
}

fn get(peer: &str, uri: &str) -> Request<Full<Bytes>> {
    let mut r = Request::get(uri)
        .header("user-agent", BROWSER)
        .body(Full::new(Bytes::new()))
        .unwrap();
    r.extensions_mut()
        .insert(PeerAddr(format!("{peer}:5000").parse().unwrap()));
    r
}

fn reasons<B>(answer: &Response<B>) -> &str {
    answer.headers()["x-reasons"].to_str().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Test detectors read tokio's paused clock.
fn paused_detectors() -> Vec<Arc<dyn Detector>> {
    vec![
        Arc::new(SqlInjection::new()),
        Arc::new(Xss::new()),
        Arc::new(PathTraversal::new()),
        Arc::new(UserAgents::new()),
        Arc::new(
            RapidRequests::new()
                .quota(Quota::per_second(5).burst(10))
                .tokio_time(true),
        ),
        Arc::new(ProbePaths::new()),
        Arc::new(NotFoundRate::new().threshold(5).tokio_time(true)),
        Arc::new(DistinctPaths::new().threshold(40).tokio_time(true)),
    ]
}

#[tokio::test(start_paused = true)]
async fn each_detector_reports_through_the_layer() {
    let service = ServiceBuilder::new()
        .layer(
            ShieldLayer::new()
                .detectors(paused_detectors())
                .action(Action::LogOnly),
        )
        .service(service_fn(app::<Full<Bytes>>));
    let call = |r| service.clone().oneshot(r);

    let a = call(get("192.0.2.1", "/menu?id=1%27%20OR%20%271%27%3D%271"))
        .await
        .unwrap();
    assert_eq!(reasons(&a), "sqli");
    let a = call(get(
        "192.0.2.2",
        "/menu?note=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
    ))
    .await
    .unwrap();
    assert_eq!(reasons(&a), "xss");
    let a = call(get("192.0.2.3", "/static/%2e%2e/%2e%2e/etc/passwd"))
        .await
        .unwrap();
    assert_eq!(reasons(&a), "traversal");
    let mut r = get("192.0.2.4", "/menu");
    r.headers_mut()
        .insert("user-agent", "sqlmap/1.8#stable".parse().unwrap());
    assert_eq!(reasons(&call(r).await.unwrap()), "scanner_agent");
    let mut r = get("192.0.2.5", "/menu");
    r.headers_mut().remove("user-agent");
    assert_eq!(reasons(&call(r).await.unwrap()), "bot_agent");
    assert_eq!(
        reasons(&call(get("192.0.2.6", "/.env")).await.unwrap()),
        "probe_path"
    );

    // Rapid: a burst of 10 passes clean, the rest scores.
    let mut rapid = 0;
    for _ in 0..20 {
        if reasons(&call(get("192.0.2.7", "/menu")).await.unwrap()) == "rapid_requests" {
            rapid += 1;
        }
    }
    assert_eq!(rapid, 10);

    // Answers feed the 404 rate: the sixth request after five 404s scores.
    for _ in 0..5 {
        let a = call(get("192.0.2.8", "/missing/page")).await.unwrap();
        assert_eq!(a.status(), StatusCode::NOT_FOUND);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        reasons(&call(get("192.0.2.8", "/menu")).await.unwrap()),
        "not_found_rate"
    );

    // Many distinct paths, slowly enough not to be rapid.
    let mut distinct = false;
    for i in 0..80 {
        tokio::time::advance(Duration::from_millis(300)).await;
        let a = call(get("192.0.2.9", &format!("/p/{i}"))).await.unwrap();
        distinct |= reasons(&a) == "distinct_paths";
    }
    assert!(distinct);

    // A clean request carries no verdict at all.
    assert_eq!(
        reasons(
            &call(get("192.0.2.10", "/menu?q=Select+your+plan"))
                .await
                .unwrap()
        ),
        ""
    );
}

#[tokio::test(start_paused = true)]
async fn signs_add_up_and_only_together_block() {
    let blocklist = LocalBlocklist::with_tokio_time();
    let service = ServiceBuilder::new()
        .layer(
            ShieldLayer::new()
                .detectors(paused_detectors())
                .strikes(Strikes::first())
                .blocklist(blocklist.clone()),
        )
        .service(service_fn(app::<Full<Bytes>>));
    let scanner = |peer: &str, uri: &str| {
        let mut r = get(peer, uri);
        r.headers_mut()
            .insert("user-agent", "Mozilla/5.00 (Nikto/2.1.6)".parse().unwrap());
        r
    };
    // A scanner agent alone (2) is logged, never blocked.
    let a = service
        .clone()
        .oneshot(scanner("198.51.100.1", "/menu"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(reasons(&a), "scanner_agent");
    // A probe alone (3) too.
    let a = service
        .clone()
        .oneshot(get("198.51.100.2", "/wp-login.php"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(reasons(&a), "probe_path");
    // Together: 5, the threshold. Refused and blocked for an hour.
    let a = service
        .clone()
        .oneshot(scanner("198.51.100.1", "/.git/config"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers()["retry-after"], "3600");
    assert!(matches!(
        blocklist.lookup_now(ip("198.51.100.1")),
        Lookup::Blocked(_)
    ));
    assert_eq!(
        blocklist.entries().await.unwrap()[0].reason,
        "scanner_agent,probe_path"
    );
    // Its clean requests are refused now, with the time left.
    tokio::time::advance(Duration::from_secs(600)).await;
    let a = service
        .clone()
        .oneshot(get("198.51.100.1", "/menu"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers()["retry-after"], "3000");
    let problem: serde_json::Value =
        serde_json::from_slice(&a.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(problem["type"], "urn:hasivu:problem:security-violation");
    assert_eq!(problem["code"], "SECURITY_VIOLATION");
    assert_eq!(problem["retry_after_seconds"], 3000);
    // Others are not affected; after the hour the client is back.
    let a = service
        .clone()
        .oneshot(get("198.51.100.3", "/menu"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    tokio::time::advance(Duration::from_secs(3000)).await;
    let a = service
        .clone()
        .oneshot(get("198.51.100.1", "/menu"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
}

fn sqli(peer: &str) -> Request<Full<Bytes>> {
    get(peer, "/menu?id=1%27%20OR%20%271%27%3D%271")
}

#[tokio::test(start_paused = true)]
async fn repeated_violations_within_the_window_block() {
    let layer = ShieldLayer::new()
        .tokio_time(true)
        .strikes(Strikes {
            count: 3,
            window: Duration::from_secs(60),
            ..Strikes::default()
        })
        .blocklist(LocalBlocklist::with_tokio_time());
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    let peer = "198.51.100.60";
    for strike in 1..3 {
        let a = service.clone().oneshot(sqli(peer)).await.unwrap();
        assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(a.headers().get("retry-after").is_none(), "strike {strike}");
        assert!(blocklist.is_empty(), "strike {strike}");
        let a = service.clone().oneshot(get(peer, "/menu")).await.unwrap();
        assert_eq!(a.status(), StatusCode::OK, "after strike {strike}");
        tokio::time::advance(Duration::from_secs(20)).await;
    }
    // The third within the minute blocks.
    let a = service.clone().oneshot(sqli(peer)).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers()["retry-after"], "3600");
    assert_eq!(blocklist.entries().await.unwrap()[0].reason, "sqli");
    let a = service.oneshot(get(peer, "/menu")).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn violations_spread_over_more_than_the_window_never_block() {
    // The defaults: 5 strikes within 10 minutes.
    let layer = ShieldLayer::new()
        .tokio_time(true)
        .blocklist(LocalBlocklist::with_tokio_time());
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    // One every 3 minutes: never 5 within 10 minutes, for two hours.
    for n in 0..40 {
        let a = service
            .clone()
            .oneshot(sqli("198.51.100.61"))
            .await
            .unwrap();
        assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(a.headers().get("retry-after").is_none(), "violation {n}");
        assert!(blocklist.is_empty(), "violation {n}");
        tokio::time::advance(Duration::from_secs(180)).await;
    }
    // Five in a row do block.
    for _ in 0..5 {
        service
            .clone()
            .oneshot(sqli("198.51.100.61"))
            .await
            .unwrap();
    }
    assert!(matches!(
        blocklist.lookup_now(ip("198.51.100.61")),
        Lookup::Blocked(_)
    ));
}

/// Recognises the one valid token of the tests.
fn valid_token(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get("authorization")
        .is_some_and(|v| v == "Bearer valid")
}

fn with_token(mut request: Request<Full<Bytes>>, token: &str) -> Request<Full<Bytes>> {
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn authenticated_violations_are_refused_but_never_block_their_address() {
    let layer = ShieldLayer::new().authenticated(valid_token);
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    let school = "203.0.113.90";
    for n in 0..20 {
        let a = service
            .clone()
            .oneshot(with_token(sqli(school), "valid"))
            .await
            .unwrap();
        assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS, "violation {n}");
        assert!(a.headers().get("retry-after").is_none(), "violation {n}");
        assert!(blocklist.is_empty(), "violation {n}");
    }
    // They counted no strike: an unauthenticated client at that address
    // still needs all five, and a forged token is no token.
    for n in 0..4 {
        let a = service
            .clone()
            .oneshot(with_token(sqli(school), "forged"))
            .await
            .unwrap();
        assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(blocklist.is_empty(), "strike {}", n + 1);
    }
    service.clone().oneshot(sqli(school)).await.unwrap();
    assert!(matches!(
        blocklist.lookup_now(ip(school)),
        Lookup::Blocked(_)
    ));
    // The address is blocked; requests with a valid token are still
    // served, and still inspected.
    let a = service.clone().oneshot(get(school, "/menu")).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers().get("retry-after").is_some());
    let a = service
        .clone()
        .oneshot(with_token(get(school, "/menu"), "valid"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let a = service
        .clone()
        .oneshot(with_token(sqli(school), "valid"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers().get("retry-after").is_none());
}

#[test]
fn strikes_come_from_configuration() {
    let strikes: Strikes =
        serde_json::from_str(r#"{ "count": 3, "window": "5m", "max_clients": 1000 }"#).unwrap();
    assert_eq!(
        strikes,
        Strikes {
            count: 3,
            window: Duration::from_secs(300),
            max_clients: 1000,
        }
    );
    assert!(serde_json::from_str::<Strikes>(r#"{ "cuont": 3 }"#).is_err());
    assert_eq!(
        serde_json::from_str::<Strikes>("{}").unwrap(),
        Strikes::default()
    );
}

#[tokio::test]
async fn actions_log_reject_or_block() {
    let sqli = || get("203.0.113.5", "/menu?id=1%20UNION%20SELECT%20NULL,NULL--");

    let log_only = ShieldLayer::new().action(Action::LogOnly);
    let blocklist = log_only.get_blocklist().clone();
    let service = log_only.layer(service_fn(app::<Full<Bytes>>));
    let a = service.oneshot(sqli()).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(reasons(&a), "sqli");
    assert!(blocklist.is_empty());

    let reject = ShieldLayer::new().action(Action::Reject);
    let blocklist = reject.get_blocklist().clone();
    let service = reject.layer(service_fn(app::<Full<Bytes>>));
    let a = service.clone().oneshot(sqli()).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers().get("retry-after").is_none());
    let body = a.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        !text.contains("UNION") && !text.contains("sqli"),
        "no echo: {text}"
    );
    assert!(blocklist.is_empty(), "rejected, not blocked");
    let a = service.oneshot(get("203.0.113.5", "/menu")).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);

    let block = ShieldLayer::new()
        .action(Action::Block {
            ttl: Duration::from_secs(90),
        })
        .strikes(Strikes::first());
    let blocklist = block.get_blocklist().clone();
    let service = block.layer(service_fn(app::<Full<Bytes>>));
    let a = service.oneshot(sqli()).await.unwrap();
    assert_eq!(a.headers()["retry-after"], "90");
    assert!(
        matches!(blocklist.lookup_now(ip("203.0.113.5")), Lookup::Blocked(left) if left <= Duration::from_secs(90))
    );
    // The unblock API lets the client back in.
    assert!(blocklist.unblock(ip("203.0.113.5")).await.unwrap());
    assert_eq!(blocklist.lookup_now(ip("203.0.113.5")), Lookup::Clear);

    // Threshold 0: findings are only logged.
    let off = ShieldLayer::new()
        .threshold(0)
        .layer(service_fn(app::<Full<Bytes>>));
    assert_eq!(off.oneshot(sqli()).await.unwrap().status(), StatusCode::OK);

    // Actions come from configuration too.
    let action: Action = serde_json::from_str(r#"{"action":"block","ttl":"30m"}"#).unwrap();
    assert_eq!(
        action,
        Action::Block {
            ttl: Duration::from_secs(1800)
        }
    );
    let action: Action = serde_json::from_str(r#"{"action":"log_only"}"#).unwrap();
    assert_eq!(action, Action::LogOnly);
}

#[tokio::test]
async fn the_allow_list_always_wins() {
    let layer = ShieldLayer::new()
        .allow(Cidr::parse("192.0.2.0/24").unwrap())
        .strikes(Strikes::first());
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    // Never scored, never blocked…
    let a = service
        .clone()
        .oneshot(get("192.0.2.77", "/.env?id=1%27%20OR%201%3D1--"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(reasons(&a), "");
    assert!(blocklist.is_empty());
    // …and never refused, even when the blocklist holds the client.
    blocklist
        .block(ip("192.0.2.77"), Duration::from_secs(3600), "manual")
        .await
        .unwrap();
    let a = service
        .clone()
        .oneshot(get("192.0.2.77", "/menu"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    // Outside the network the same request is blocked.
    let a = service
        .oneshot(get("192.0.3.1", "/menu?id=1%27%20OR%201%3D1--"))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A body that must never be read.
struct Untouchable;

impl Body for Untouchable {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("a blocked client's body was read");
    }
}

#[tokio::test]
async fn blocked_clients_are_refused_before_anything_is_read() {
    // The hook is asked, but never the body.
    let layer = ShieldLayer::new().authenticated(valid_token);
    layer
        .get_blocklist()
        .block(ip("203.0.113.66"), Duration::from_secs(60), "manual")
        .await
        .unwrap();
    let mut service = layer.layer(service_fn(|_: Request<InspectedBody<Untouchable>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let mut r = Request::post("/orders?id=1")
        .header("content-type", "application/json")
        .body(Untouchable)
        .unwrap();
    r.extensions_mut()
        .insert(PeerAddr("203.0.113.66:1".parse().unwrap()));
    let answer = service.ready().await.unwrap().call(r).await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers()["retry-after"], "60");
}

/// A body from a list of frames, of unknown length, ending in an error
/// when asked.
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    fail: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if std::mem::take(&mut self.fail) {
            return Poll::Ready(Some(Err("connection reset")));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

fn frames(chunks: &[&[u8]], trailers: bool, fail: bool) -> Frames {
    let mut frames: VecDeque<Frame<Bytes>> = chunks
        .iter()
        .map(|c| Frame::data(Bytes::copy_from_slice(c)))
        .collect();
    if trailers {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        frames.push_back(Frame::trailers(t));
    }
    Frames { frames, fail }
}

fn post<B>(peer: &str, body: B) -> Request<B> {
    let mut r = Request::post("/orders")
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", BROWSER)
        .body(body)
        .unwrap();
    r.extensions_mut()
        .insert(PeerAddr(format!("{peer}:5000").parse().unwrap()));
    r
}

#[tokio::test]
async fn bodies_reach_the_service_whole_and_in_order() {
    let limits = Limits {
        body_bytes: 64,
        ..Limits::default()
    };
    let service = ServiceBuilder::new()
        .layer(ShieldLayer::new().limits(limits))
        .service(service_fn(app::<Frames>));

    // A JSON body in pieces, with trailers: read, inspected, replayed.
    let chunks: [&[u8]; 3] = [b"{\"note\":\"O'Brien, ", b"2104 GRANT AVE #A", b"\"}"];
    let a = service
        .clone()
        .oneshot(post("192.0.2.20", frames(&chunks, true, false)))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(a.headers()["x-buffered"], "true");
    assert_eq!(a.headers()["x-trailers"], "1");
    let body = a.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], &chunks.concat()[..]);

    // An injection split across frames is seen.
    let evil: [&[u8]; 2] = [b"{\"q\":\"1' UNION SEL", b"ECT password FROM users--\"}"];
    let a = service
        .clone()
        .oneshot(post("192.0.2.21", frames(&evil, false, false)))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);

    // Past the limit: the first 64 bytes are inspected, everything
    // arrives.
    let long: Vec<u8> = (0..200).map(|i| b'a' + (i % 26) as u8).collect();
    let pieces: Vec<&[u8]> = long.chunks(30).collect();
    let a = service
        .clone()
        .oneshot(post("192.0.2.22", frames(&pieces, false, false)))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(a.into_body().collect().await.unwrap().to_bytes(), long);

    // A failing body hands its error to the service, after its data.
    let a = service
        .clone()
        .oneshot(post("192.0.2.23", frames(&[b"{\"a\":"], false, true)))
        .await
        .unwrap();
    let body = a.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"error: \"connection reset\"");

    // Other content types are not read.
    let mut r = post(
        "192.0.2.24",
        frames(&[b"<script>alert(1)</script>"], false, false),
    );
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let a = service.clone().oneshot(r).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(a.headers()["x-buffered"], "false");
}

#[tokio::test]
async fn declared_large_bodies_stream_through_unread() {
    let service = ServiceBuilder::new()
        .layer(ShieldLayer::new().limits(Limits {
            body_bytes: 1024,
            ..Limits::default()
        }))
        .service(service_fn(app::<Full<Bytes>>));
    let big = format!("{{\"q\":\"{}' OR '1'='1\"}}", "x".repeat(4096));
    let mut r = post("192.0.2.30", Full::new(Bytes::from(big.clone())));
    r.headers_mut()
        .insert("content-length", big.len().to_string().parse().unwrap());
    let a = service.clone().oneshot(r).await.unwrap();
    assert_eq!(
        a.status(),
        StatusCode::OK,
        "beyond the bound: not inspected"
    );
    assert_eq!(a.headers()["x-buffered"], "false");
    assert_eq!(a.headers()["x-body-len"], big.len().to_string().as_str());
    // Within the bound the same payload is caught.
    let small = "{\"q\":\"' OR '1'='1\"}".to_owned();
    let a = service
        .oneshot(post("192.0.2.31", Full::new(Bytes::from(small))))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn form_bodies_are_inspected() {
    let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
    let mut r = post(
        "192.0.2.40",
        Full::new(Bytes::from_static(
            b"name=O%27Brien&comment=%3Csvg%2Fonload%3Dalert(1)%3E",
        )),
    );
    r.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let a = service.clone().oneshot(r).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    let form: &[u8] = b"name=O%27Brien&address=2104+GRANT+AVE+%23A";
    let mut r = post("192.0.2.41", Full::new(Bytes::from_static(form)));
    r.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let a = service.oneshot(r).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(a.into_body().collect().await.unwrap().to_bytes(), form);
}

#[tokio::test]
async fn requests_without_a_peer_are_rejected_not_blocked() {
    let layer = ShieldLayer::new();
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    let r = Request::get("/menu?id=1%20OR%201%3D1--")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = service.oneshot(r).await.unwrap();
    assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers().get("retry-after").is_none());
    assert!(blocklist.is_empty());
}

#[test]
fn events_carry_reasons_but_no_payloads() {
    let capture = LogCapture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
            let mut r = get(
                "198.51.100.9",
                "/orders/7?token=s3cr3t-t0ken&id=1%27%20OR%20%271%27%3D%271",
            );
            r.headers_mut()
                .insert("authorization", "Bearer hunter2".parse().unwrap());
            let a = service.clone().oneshot(r).await.unwrap();
            assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
            let a = service
                .oneshot(post(
                    "198.51.100.10",
                    Full::new(Bytes::from_static(
                        b"{\"password\":\"hunter2\",\"q\":\"<script>alert(1)</script>\"}",
                    )),
                ))
                .await
                .unwrap();
            assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
        });
    });
    let events = capture.events().join("\n");
    assert!(events.contains("ip=198.51.100.9"), "{events}");
    assert!(events.contains("reasons=sqli"), "{events}");
    assert!(events.contains("reasons=xss"), "{events}");
    assert!(events.contains("path=/orders/7"), "{events}");
    assert!(events.contains("score=5"), "{events}");
    assert!(events.contains("action=\"strike\""), "{events}");
    assert!(events.contains("strikes=1 strikes_to_block=5"), "{events}");
    for secret in ["s3cr3t", "hunter2", "OR", "script", "token"] {
        assert!(!events.contains(secret), "{secret} leaked: {events}");
    }
}

#[test]
fn a_lone_weak_sign_is_logged_at_debug_and_a_stronger_one_at_info() {
    let capture = LogCapture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
            // curl fetching the menu: automation, score 1 of 5.
            let mut curl = get("198.51.100.20", "/menu/daily");
            curl.headers_mut()
                .insert("user-agent", "curl/8.5.0".parse().unwrap());
            assert_eq!(service.clone().oneshot(curl).await.unwrap().status(), 200);
            // A probe for /.env: score 3 of 5, let through and logged.
            let probe = get("198.51.100.21", "/.env");
            assert_eq!(service.oneshot(probe).await.unwrap().status(), 200);
        });
    });
    let events = capture.events();
    let curl: Vec<_> = events
        .iter()
        .filter(|e| e.contains("ip=198.51.100.20"))
        .collect();
    assert_eq!(curl.len(), 1, "{events:?}");
    assert!(
        curl[0].starts_with("DEBUG ") && curl[0].contains("score=1"),
        "{curl:?}"
    );
    let probe: Vec<_> = events
        .iter()
        .filter(|e| e.contains("ip=198.51.100.21"))
        .collect();
    assert_eq!(probe.len(), 1, "{events:?}");
    assert!(
        probe[0].starts_with("INFO ") && probe[0].contains("score=3"),
        "{probe:?}"
    );
}

#[test]
fn a_client_repeating_itself_is_logged_once_per_interval() {
    let capture = LogCapture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            let quiet = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
            let every = ShieldLayer::new()
                .log_every(Duration::ZERO)
                .layer(service_fn(app::<Full<Bytes>>));
            for (service, peer) in [(quiet, "198.51.100.30"), (every, "198.51.100.31")] {
                for _ in 0..20 {
                    let probe = get(peer, "/.env");
                    let answer = service.clone().oneshot(probe).await.unwrap();
                    assert_eq!(answer.status(), 200, "scored 3 of 5: let through");
                }
            }
        });
    });
    let events = capture.events();
    let count = |ip: &str| {
        events
            .iter()
            .filter(|e| e.contains(&format!("ip={ip} ")))
            .count()
    };
    assert_eq!(count("198.51.100.30"), 1, "once per 10 s: {events:?}");
    assert_eq!(count("198.51.100.31"), 20, "every one with a zero interval");
}

/// Counts counter increments by their full key.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Counter(metrics::Key, Arc<Mutex<Vec<String>>>);

impl metrics::CounterFn for Counter {
    fn increment(&self, value: u64) {
        let labels: Vec<String> = self
            .0
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        for _ in 0..value {
            self.1
                .lock()
                .unwrap()
                .push(format!("{}{{{}}}", self.0.name(), labels.join(",")));
        }
    }
    fn absolute(&self, _: u64) {}
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(Counter(key.clone(), Arc::clone(&self.0))))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn decisions_are_counted_with_their_reasons() {
    let recorder = Recorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let service = ShieldLayer::new()
                .strikes(Strikes {
                    count: 2,
                    ..Strikes::default()
                })
                .allow(Cidr::parse("10.0.0.0/8").unwrap())
                .limits(Limits {
                    uri_bytes: 64,
                    ..Limits::default()
                })
                .layer(service_fn(app::<Full<Bytes>>));
            let call = |r| service.clone().oneshot(r);
            call(get("192.0.2.50", "/menu")).await.unwrap();
            for _ in 0..2 {
                call(get("192.0.2.51", "/menu?id=1%20OR%201%3D1--"))
                    .await
                    .unwrap();
            }
            call(get("192.0.2.51", "/menu")).await.unwrap();
            call(get("192.0.2.52", "/wp-admin/")).await.unwrap();
            call(get("10.1.2.3", "/menu?id=1%20OR%201%3D1--"))
                .await
                .unwrap();
            call(get("192.0.2.53", &format!("/menu?q={}", "a".repeat(100))))
                .await
                .unwrap();
        });
    });
    let seen = recorder.0.lock().unwrap().clone();
    let count = |key: &str| seen.iter().filter(|k| *k == key).count();
    assert_eq!(
        count("hasivu_shield_decisions_total{action=pass,reason=none}"),
        2,
        "{seen:?}"
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=strike,reason=sqli}"),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=block,reason=sqli}"),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=refuse,reason=blocklisted}"),
        1
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=log,reason=probe_path}"),
        1
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=pass,reason=allowlisted}"),
        1
    );
    assert_eq!(count("hasivu_shield_findings_total{reason=sqli}"), 2);
    assert_eq!(count("hasivu_shield_uninspected_total{part=query}"), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// However a body is cut into frames and wherever the limit falls, the
    /// service reads every byte in order, and the trailers.
    #[test]
    fn bodies_are_never_lost(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..12),
        limit in 1usize..400,
        trailers: bool,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let expected: Vec<u8> = chunks.concat();
        let (body, trailer_count) = runtime.block_on(async {
            let service = ShieldLayer::new()
                .action(Action::LogOnly)
                .limits(Limits { body_bytes: limit, ..Limits::default() })
                .layer(service_fn(app::<Frames>));
            let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let a = service.oneshot(post("192.0.2.60", frames(&slices, trailers, false))).await.unwrap();
            let count = a.headers().get("x-trailers").map(|v| v.to_str().unwrap().to_owned());
            (a.into_body().collect().await.unwrap().to_bytes(), count)
        });
        proptest::prop_assert_eq!(&body[..], &expected[..]);
        proptest::prop_assert_eq!(trailer_count.is_some(), trailers);
    }
}

#[test]
fn bodies_the_shield_cannot_decode_are_counted_as_uninspected() {
    let recorder = Recorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
            let mut r = post(
                "192.0.2.70",
                Full::new(Bytes::from_static(b"\x1b\x0b\x00\xf8\xa5\x40")),
            );
            r.headers_mut()
                .insert("content-encoding", "br".parse().unwrap());
            let a = service.clone().oneshot(r).await.unwrap();
            assert_eq!(a.status(), StatusCode::OK);
            assert_eq!(reasons(&a), "undecoded_body");
            assert_eq!(a.headers()["x-buffered"], "false", "not even read");
            // Not JSON or a form: not the shield's to read, whatever the
            // coding.
            let mut r = post("192.0.2.71", Full::new(Bytes::from_static(b"\x1b")));
            r.headers_mut()
                .insert("content-encoding", "br".parse().unwrap());
            r.headers_mut()
                .insert("content-type", "image/png".parse().unwrap());
            let a = service.oneshot(r).await.unwrap();
            assert_eq!(reasons(&a), "");
        });
    });
    let seen = recorder.0.lock().unwrap().clone();
    let count = |key: &str| seen.iter().filter(|k| *k == key).count();
    assert_eq!(
        count("hasivu_shield_uninspected_total{part=body}"),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count("hasivu_shield_decisions_total{action=log,reason=undecoded_body}"),
        1,
        "{seen:?}"
    );
}

#[test]
fn strikes_and_refusals_are_logged_once_per_interval_and_blocks_always() {
    let capture = LogCapture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
            // Five injections in a row: four strikes, then the block.
            for _ in 0..5 {
                let answer = service
                    .clone()
                    .oneshot(sqli("198.51.100.40"))
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
            }
            // The blocked client keeps sending.
            for _ in 0..20 {
                let answer = service
                    .clone()
                    .oneshot(get("198.51.100.40", "/menu"))
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
            }
        });
    });
    let events = capture.events();
    let of = |what: &str| {
        events
            .iter()
            .filter(|e| e.contains("ip=198.51.100.40") && e.contains(what))
            .count()
    };
    assert_eq!(of("action=\"strike\""), 1, "{events:?}");
    assert_eq!(of("action=\"block\""), 1, "{events:?}");
    assert!(of("blocked client refused") <= 1, "{events:?}");
}
