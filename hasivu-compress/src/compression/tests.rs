use std::{
    convert::Infallible,
    future::Future,
    io::{Read, Write},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::{BoxError, Coding};

/// A menu-like JSON document of roughly `len` bytes.
fn menu_json(len: usize) -> Bytes {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < len {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":{i},"name":"Item {i}","category":"{}","price":{}.{:02},"allergens":["milk","nuts"],"available":true}}"#,
            ["main", "side", "dessert", "drink"][i % 4],
            20 + i % 30,
            i % 100
        ));
        i += 1;
    }
    out.push(']');
    Bytes::from(out)
}

/// Decodes with the reference decoders of each format.
fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn request(accept: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .header(header::ACCEPT_ENCODING, accept)
        .body(Full::default())
        .unwrap()
}

/// A service answering every request with `body` and `headers`.
fn answer(
    status: StatusCode,
    headers: &[(&'static str, &'static str)],
    body: Bytes,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone {
    let headers: Vec<(&'static str, &'static str)> = headers.to_vec();
    service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(body.clone()));
        *response.status_mut() = status;
        for (name, value) in &headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        async move { Ok::<_, Infallible>(response) }
    })
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// A skip-rule case: name, status, response headers, method, compressed?
type Case = (
    &'static str,
    StatusCode,
    Vec<(&'static str, &'static str)>,
    Method,
    bool,
);

async fn collect<B>(response: Response<B>) -> (http::response::Parts, Bytes)
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn every_coding_round_trips_byte_for_byte() {
    let original = menu_json(25_000);
    for coding in [Coding::Zstd, Coding::Br, Coding::Gzip, Coding::Deflate] {
        let service = CompressionLayer::new().prefer(&[coding]).layer(answer(
            StatusCode::OK,
            &[JSON],
            original.clone(),
        ));
        let response = service.oneshot(request(coding.as_str())).await.unwrap();
        let (parts, body) = collect(response).await;
        assert_eq!(parts.headers[header::CONTENT_ENCODING], coding.as_str());
        assert_eq!(
            parts.headers[header::CONTENT_LENGTH],
            body.len().to_string()
        );
        assert_eq!(parts.headers[header::VARY], "accept-encoding");
        assert!(
            body.len() < original.len() / 3,
            "{coding}: {} bytes",
            body.len()
        );
        assert_eq!(decode(coding.as_str(), &body), original, "{coding}");
    }
}

#[tokio::test]
async fn browsers_get_the_preferred_coding() {
    let service = CompressionLayer::new().layer(answer(StatusCode::OK, &[JSON], menu_json(5000)));
    for (accept, expected) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("gzip, deflate", "gzip"),
    ] {
        let response = service.clone().oneshot(request(accept)).await.unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_ENCODING],
            expected,
            "{accept}"
        );
    }
}

#[tokio::test]
async fn identity_when_nothing_acceptable_with_vary() {
    let original = menu_json(5000);
    for accept in ["identity;q=0, compress", "*;q=0", "unknown", ""] {
        let service =
            CompressionLayer::new().layer(answer(StatusCode::OK, &[JSON], original.clone()));
        let response = service.oneshot(request(accept)).await.unwrap();
        let (parts, body) = collect(response).await;
        assert_eq!(parts.status, StatusCode::OK, "{accept}");
        assert!(
            !parts.headers.contains_key(header::CONTENT_ENCODING),
            "{accept}"
        );
        assert_eq!(parts.headers[header::VARY], "accept-encoding", "{accept}");
        assert_eq!(body, original);
    }
    // No Accept-Encoding at all.
    let service = CompressionLayer::new().layer(answer(StatusCode::OK, &[JSON], original.clone()));
    let response = service
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn skip_rules() {
    let big = menu_json(5000);
    let cases: Vec<Case> = vec![
        (
            "204",
            StatusCode::NO_CONTENT,
            vec![JSON],
            Method::GET,
            false,
        ),
        (
            "304",
            StatusCode::NOT_MODIFIED,
            vec![JSON],
            Method::GET,
            false,
        ),
        (
            "206",
            StatusCode::PARTIAL_CONTENT,
            vec![JSON],
            Method::GET,
            false,
        ),
        (
            "content-range",
            StatusCode::OK,
            vec![JSON, ("content-range", "bytes 0-4999/9000")],
            Method::GET,
            false,
        ),
        (
            "already encoded",
            StatusCode::OK,
            vec![JSON, ("content-encoding", "gzip")],
            Method::GET,
            false,
        ),
        (
            "no-transform",
            StatusCode::OK,
            vec![JSON, ("cache-control", "public, no-transform")],
            Method::GET,
            false,
        ),
        (
            "image",
            StatusCode::OK,
            vec![("content-type", "image/png")],
            Method::GET,
            false,
        ),
        (
            "zip",
            StatusCode::OK,
            vec![("content-type", "application/zip")],
            Method::GET,
            false,
        ),
        (
            "no content type",
            StatusCode::OK,
            vec![],
            Method::GET,
            false,
        ),
        (
            "sse",
            StatusCode::OK,
            vec![("content-type", "text/event-stream")],
            Method::GET,
            false,
        ),
        ("head", StatusCode::OK, vec![JSON], Method::HEAD, false),
        (
            "html",
            StatusCode::OK,
            vec![("content-type", "text/html; charset=utf-8")],
            Method::GET,
            true,
        ),
        (
            "problem",
            StatusCode::NOT_FOUND,
            vec![("content-type", "application/problem+json")],
            Method::GET,
            true,
        ),
        (
            "identity encoding",
            StatusCode::OK,
            vec![JSON, ("content-encoding", "identity")],
            Method::GET,
            true,
        ),
    ];
    for (name, status, headers, method, compressed) in cases {
        let service = CompressionLayer::new().layer(answer(status, &headers, big.clone()));
        let mut req = request("gzip");
        *req.method_mut() = method;
        let response = service.oneshot(req).await.unwrap();
        let (parts, body) = collect(response).await;
        let encoding = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        if compressed {
            assert_eq!(encoding.as_deref(), Some("gzip"), "{name}");
            assert_eq!(decode("gzip", &body), big, "{name}");
        } else {
            assert!(
                encoding.is_none()
                    || encoding.as_deref() == Some("gzip") && name == "already encoded",
                "{name}"
            );
            assert_eq!(body, big, "{name}: body must be untouched");
        }
    }
}

#[tokio::test]
async fn head_keeps_vary() {
    let service = CompressionLayer::new().layer(answer(StatusCode::OK, &[JSON], menu_json(5000)));
    let mut req = request("gzip");
    *req.method_mut() = Method::HEAD;
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.headers()[header::VARY], "accept-encoding");
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn small_bodies_are_not_compressed_but_vary() {
    let small = menu_json(500);
    let service = CompressionLayer::new().layer(answer(StatusCode::OK, &[JSON], small.clone()));
    let (parts, body) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(parts.headers[header::VARY], "accept-encoding");
    assert_eq!(body, small);

    let service =
        CompressionLayer::new()
            .min_size(100)
            .layer(answer(StatusCode::OK, &[JSON], small.clone()));
    let (parts, _) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
    assert_eq!(parts.headers[header::CONTENT_ENCODING], "gzip");
}

#[tokio::test]
async fn opt_outs() {
    let big = menu_json(5000);
    let body = big.clone();
    let marked = service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(body.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(NoCompression);
        async move { Ok::<_, Infallible>(response) }
    });
    let response = CompressionLayer::new()
        .layer(marked)
        .oneshot(request("gzip"))
        .await
        .unwrap();
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));

    let service = CompressionLayer::new()
        .compress_when(|parts: &http::response::Parts| !parts.headers.contains_key("x-secret"))
        .layer(answer(
            StatusCode::OK,
            &[JSON, ("x-secret", "1")],
            big.clone(),
        ));
    let response = service.oneshot(request("gzip")).await.unwrap();
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn headers_of_compressed_responses() {
    let service = CompressionLayer::new().layer(answer(
        StatusCode::OK,
        &[
            JSON,
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("vary", "Origin"),
        ],
        menu_json(5000),
    ));
    let (parts, body) = collect(service.oneshot(request("br")).await.unwrap()).await;
    assert_eq!(parts.headers[header::CONTENT_ENCODING], "br");
    assert_eq!(parts.headers[header::ETAG], "W/\"v1\"");
    assert!(!parts.headers.contains_key(header::ACCEPT_RANGES));
    assert_eq!(parts.headers[header::VARY], "Origin, accept-encoding");
    assert_eq!(parts.headers.get_all(header::VARY).iter().count(), 1);
    assert_eq!(
        parts.headers[header::CONTENT_LENGTH],
        body.len().to_string()
    );
    assert!(!parts.headers.contains_key("x-original-size"));
}

#[tokio::test]
async fn size_headers_when_asked() {
    let original = menu_json(5000);
    let service = CompressionLayer::new().size_headers(true).layer(answer(
        StatusCode::OK,
        &[JSON],
        original.clone(),
    ));
    let (parts, body) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
    assert_eq!(parts.headers["x-original-size"], original.len().to_string());
    assert_eq!(parts.headers["x-compressed-size"], body.len().to_string());
    let ratio = parts.headers["x-compression-ratio"].to_str().unwrap();
    let saved: f64 = ratio.trim_end_matches('%').parse().unwrap();
    let expected = (1.0 - body.len() as f64 / original.len() as f64) * 100.0;
    assert!((saved - expected).abs() < 0.1, "{ratio} vs {expected}");
}

/// A body fed through a channel: unknown length, frames arrive when sent.
struct ChannelBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[allow(clippy::type_complexity)]
fn channel_service(
    content_type: &'static str,
) -> (
    mpsc::Sender<Frame<Bytes>>,
    impl Service<Request<Full<Bytes>>, Response = Response<ChannelBody>, Error = Infallible>,
) {
    let (tx, rx) = mpsc::channel(64);
    let rx = std::sync::Mutex::new(Some(rx));
    let service = service_fn(move |_req: Request<Full<Bytes>>| {
        let rx = rx.lock().unwrap().take().expect("one request");
        let mut response = Response::new(ChannelBody { rx });
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        async move { Ok::<_, Infallible>(response) }
    });
    (tx, service)
}

/// Decodes a gzip stream that may not be finished yet.
fn gunzip_partial(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    decoder.write_all(bytes).unwrap();
    decoder.flush().unwrap();
    decoder.get_ref().clone()
}

#[tokio::test]
async fn slow_streams_arrive_compressed_before_they_end() {
    let (tx, service) = channel_service("application/x-ndjson");
    let service = CompressionLayer::new().layer(service);
    let first = menu_json(3000);
    tx.send(Frame::data(first.clone())).await.unwrap();
    let response = service.oneshot(request("gzip")).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
    let mut body = response.into_body();

    // The body has not ended, yet the first frame is readable now.
    let mut received = Vec::new();
    while gunzip_partial(&received) != first {
        let frame = body.frame().await.unwrap().unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }

    let second = menu_json(2000);
    tx.send(Frame::data(second.clone())).await.unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    tx.send(Frame::trailers(trailers)).await.unwrap();
    drop(tx);
    let mut seen_trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(data) => received.extend_from_slice(&data),
            Err(frame) => seen_trailers = frame.into_trailers().ok(),
        }
    }
    let mut expected = first.to_vec();
    expected.extend_from_slice(&second);
    assert_eq!(decode("gzip", &received), expected);
    assert_eq!(seen_trailers.unwrap()["x-checksum"], "abc");
}

#[tokio::test]
async fn short_streams_are_sent_as_they_are() {
    let (tx, service) = channel_service("application/json");
    let service = CompressionLayer::new().layer(service);
    tx.send(Frame::data(Bytes::from_static(b"{\"ok\":")))
        .await
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"true}")))
        .await
        .unwrap();
    drop(tx);
    let (parts, body) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(parts.headers[header::CONTENT_LENGTH], "11");
    assert_eq!(body, "{\"ok\":true}");
}

#[tokio::test]
async fn event_streams_flush_every_frame() {
    let (tx, service) = channel_service("text/event-stream");
    let service = CompressionLayer::new()
        .flush_every_frame(true)
        .layer(service);
    let response = service.oneshot(request("gzip")).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let mut body = response.into_body();
    let mut received = Vec::new();
    for i in 0..3 {
        let event = format!("data: {{\"tick\":{i}}}\n\n");
        tx.send(Frame::data(Bytes::from(event.clone())))
            .await
            .unwrap();
        // Each small event is decodable as soon as it was sent.
        let frame = body.frame().await.unwrap().unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
        assert!(
            String::from_utf8(gunzip_partial(&received))
                .unwrap()
                .ends_with(&event),
            "event {i} not flushed"
        );
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        received.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    let text = String::from_utf8(decode("gzip", &received)).unwrap();
    assert_eq!(text.matches("data: ").count(), 3);
}

#[tokio::test]
async fn every_coding_streams() {
    for coding in [Coding::Zstd, Coding::Br, Coding::Gzip, Coding::Deflate] {
        let (tx, service) = channel_service("text/plain");
        let service = CompressionLayer::new().prefer(&[coding]).layer(service);
        let mut expected = Vec::new();
        for i in 0..20 {
            let chunk = menu_json(700 + i * 13);
            expected.extend_from_slice(&chunk);
            tx.send(Frame::data(chunk)).await.unwrap();
        }
        drop(tx);
        let (parts, body) = collect(service.oneshot(request(coding.as_str())).await.unwrap()).await;
        assert_eq!(parts.headers[header::CONTENT_ENCODING], coding.as_str());
        assert_eq!(decode(coding.as_str(), &body), expected, "{coding}");
    }
}

#[tokio::test]
async fn large_known_bodies_stream_over_the_one_shot_limit() {
    let original = menu_json(50_000);
    let service = CompressionLayer::new().one_shot_limit(10_000).layer(answer(
        StatusCode::OK,
        &[JSON],
        original.clone(),
    ));
    let (parts, body) = collect(service.oneshot(request("zstd")).await.unwrap()).await;
    assert_eq!(parts.headers[header::CONTENT_ENCODING], "zstd");
    assert!(!parts.headers.contains_key(header::CONTENT_LENGTH));
    assert_eq!(decode("zstd", &body), original);
}

#[tokio::test]
async fn levels_change_the_output() {
    let original = menu_json(50_000);
    let size = |level: u32| {
        let original = original.clone();
        let service = CompressionLayer::new().gzip_level(level).layer(answer(
            StatusCode::OK,
            &[JSON],
            original.clone(),
        ));
        async move {
            let (_, body) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
            assert_eq!(decode("gzip", &body), original);
            body.len()
        }
    };
    assert!(size(1).await > size(9).await);
    let fast = Levels {
        gzip: 1,
        ..Levels::default()
    };
    let service = CompressionLayer::new()
        .gzip_level(9)
        .large_body_levels(10_000, fast)
        .layer(answer(StatusCode::OK, &[JSON], original.clone()));
    let (_, body) = collect(service.oneshot(request("gzip")).await.unwrap()).await;
    assert_eq!(
        body.len(),
        size(1).await,
        "bodies over 10 000 bytes use the large-body levels"
    );
}

#[tokio::test]
async fn trailers_survive_one_shot_compression() {
    let original = menu_json(5000);
    let body = original.clone();
    let service = service_fn(move |_req: Request<Full<Bytes>>| {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-done", HeaderValue::from_static("yes"));
        let body = Full::new(body.clone())
            .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(original.len()));
        async move { Ok::<_, Infallible>(response) }
    });
    let response = CompressionLayer::new()
        .layer(service)
        .oneshot(request("gzip"))
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-done"], "yes");
}

#[tokio::test]
async fn body_errors_reach_the_client() {
    struct Failing;
    impl Body for Failing {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("disk gone"))))
        }
    }
    let service = service_fn(|_req: Request<Full<Bytes>>| async {
        let mut response = Response::new(Failing);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok::<_, Infallible>(response)
    });
    let response = CompressionLayer::new()
        .layer(service)
        .oneshot(request("gzip"))
        .await
        .unwrap();
    let error: BoxError = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.to_string(), "disk gone");
}

#[tokio::test]
async fn works_in_a_service_builder_and_keeps_poll_ready() {
    let mut service = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .service(answer(StatusCode::OK, &[JSON], menu_json(2000)));
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let response = service.call(request("gzip")).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
}

/// Decodes zstd the way Chrome does: refusing windows over 8 MiB (RFC 9659).
fn unzstd_rfc9659(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = zstd::stream::read::Decoder::new(bytes).unwrap();
    decoder.window_log_max(23).unwrap();
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn zstd_windows_stay_within_rfc_9659_at_every_level() {
    let original = menu_json(300_000);
    for level in [1, 3, 19, 22] {
        // Whole.
        let service = CompressionLayer::new().zstd_level(level).layer(answer(
            StatusCode::OK,
            &[JSON],
            original.clone(),
        ));
        let (_, body) = collect(service.oneshot(request("zstd")).await.unwrap()).await;
        assert_eq!(unzstd_rfc9659(&body), original, "level {level}, whole");
        // Streamed.
        let (tx, service) = channel_service("application/json");
        let service = CompressionLayer::new().zstd_level(level).layer(service);
        for chunk in original.chunks(64 * 1024) {
            tx.send(Frame::data(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        drop(tx);
        let (parts, body) = collect(service.oneshot(request("zstd")).await.unwrap()).await;
        assert!(!parts.headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(unzstd_rfc9659(&body), original, "level {level}, streamed");
    }
}

#[cfg(feature = "serde")]
#[test]
fn levels_load_from_configuration() {
    let levels: Levels = serde_json::from_str(r#"{ "br": 5, "zstd": 1 }"#).unwrap();
    assert_eq!(
        levels,
        Levels {
            br: 5,
            zstd: 1,
            ..Levels::default()
        }
    );
    assert!(serde_json::from_str::<Levels>(r#"{ "brotli": 5 }"#).is_err());
}

#[test]
fn the_response_body_stays_small() {
    // Moved with every response: streaming state and trailers live on the
    // heap, only on the paths that need them.
    assert!(std::mem::size_of::<CompressionBody<Full<Bytes>>>() <= 64);
}
