//! Request decompression in front of a real axum 0.8 `Router`, through
//! `oneshot` and over TCP with reqwest.
#![cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "br",
    feature = "zstd"
))]

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    body::{Body, Bytes},
    routing::post,
};
use hasivu_compress::{Coding, decompression::RequestDecompressionLayer};
use http::{HeaderMap, HeaderName, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A router whose handler echoes the body and reports the request headers it
/// saw as `x-seen-*`; `calls` counts handler runs.
fn app(layer: RequestDecompressionLayer) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new()
        .route(
            "/echo",
            post(move |headers: HeaderMap, body: Bytes| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut seen = HeaderMap::new();
                    for name in [header::CONTENT_ENCODING, header::CONTENT_LENGTH] {
                        if let Some(value) = headers.get(&name) {
                            let name = HeaderName::try_from(format!("x-seen-{name}")).unwrap();
                            seen.insert(name, value.clone());
                        }
                    }
                    seen.insert("x-body-length", body.len().into());
                    (seen, body)
                }
            }),
        )
        .layer(layer);
    (router, calls)
}

fn sample(len: usize) -> Vec<u8> {
    let record = b"{\"student\":\"Asha\",\"meal\":\"ragi mudde\"},";
    (0..len).map(|i| record[i % record.len()]).collect()
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        #[cfg(feature = "gzip")]
        Coding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        #[cfg(feature = "deflate")]
        Coding::Deflate => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        #[cfg(feature = "br")]
        Coding::Br => {
            let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            encoder.write_all(data).unwrap();
            encoder.into_inner()
        }
        #[cfg(feature = "zstd")]
        Coding::Zstd => zstd::encode_all(data, 3).unwrap(),
        other => panic!("{other} is not enabled"),
    }
}

/// 1 GiB of zeros as zstd, about 32 KiB.
#[cfg(feature = "zstd")]
fn zstd_bomb() -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let chunk = vec![0; 64 * 1024];
    for _ in 0..(1 << 30) / chunk.len() {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

fn post_encoded(encoding: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/echo")
        .header(header::CONTENT_ENCODING, encoding)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap()
}

async fn body_text(response: axum::response::Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

// In a module named like the file, so that `cargo test decompression` runs
// these too.
mod decompression {
    use super::*;

    #[tokio::test]
    async fn handler_receives_each_coding_decoded() {
        let data = sample(300_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let (router, calls) = app(RequestDecompressionLayer::new());
            let response = router
                .oneshot(post_encoded(coding.as_str(), encode(coding, &data)))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{coding}");
            assert_eq!(response.headers()["x-seen-content-length"], "300000");
            assert_eq!(response.headers()["x-body-length"], "300000");
            assert!(!response.headers().contains_key("x-seen-content-encoding"));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body == data, "{coding}: decoded body differs");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn handler_receives_stacked_codings_decoded() {
        let data = sample(50_000);
        let codings = Coding::DEFAULT_PREFERENCE;
        let body = codings
            .iter()
            .fold(data.clone(), |bytes, &coding| encode(coding, &bytes));
        let list = codings
            .iter()
            .map(|coding| coding.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (router, _) = app(RequestDecompressionLayer::new());
        let response = router.oneshot(post_encoded(&list, body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-body-length"], "50000");
    }

    #[tokio::test]
    async fn plain_bodies_pass_through() {
        let (router, calls) = app(RequestDecompressionLayer::new());
        // Over both caps of the layer, which neither counts nor buffers
        // unencoded bodies.
        let data = sample(1536 * 1024);
        let request = Request::post("/echo").body(Body::from(data)).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-body-length"], "1572864");
        assert!(!response.headers().contains_key("x-seen-content-encoding"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (router, _) = app(RequestDecompressionLayer::new());
        let request = Request::post("/echo")
            .header(header::CONTENT_ENCODING, "identity")
            .body(Body::from("plain"))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-seen-content-encoding"], "identity");
        assert_eq!(body_text(response).await, "plain");
    }

    #[tokio::test]
    async fn refusals_are_problem_json_and_skip_the_handler() {
        let (router, calls) = app(RequestDecompressionLayer::new());
        let response = router
            .clone()
            .oneshot(post_encoded("compress", b"anything".to_vec()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let accepted = Coding::DEFAULT_PREFERENCE
            .iter()
            .map(|coding| coding.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(
            response.headers()[header::ACCEPT_ENCODING],
            accepted.as_str()
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(
            body_text(response)
                .await
                .contains(r#""code":"unsupported-content-encoding""#)
        );

        for &coding in Coding::DEFAULT_PREFERENCE {
            let mut body = encode(coding, &sample(1_000));
            body.extend_from_slice(b"trailing");
            let response = router
                .clone()
                .oneshot(post_encoded(coding.as_str(), body))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{coding}");
            assert!(
                body_text(response)
                    .await
                    .contains(r#""code":"invalid-encoded-body""#)
            );
        }

        let response = router
            .clone()
            .oneshot(post_encoded(
                Coding::DEFAULT_PREFERENCE[0].as_str(),
                vec![0; 2 * 1024 * 1024],
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body_text(response).await.contains("limit of 1048576 bytes"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[cfg(feature = "zstd")]
    #[tokio::test]
    async fn zstd_bomb_is_refused_by_the_router() {
        let (router, calls) = app(RequestDecompressionLayer::new());
        let response = router
            .oneshot(post_encoded("zstd", zstd_bomb()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let text = body_text(response).await;
        assert!(text.contains(r#""code":"payload-too-large""#), "{text}");
        assert!(text.contains("decodes to more than the limit of 1048576 bytes"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn over_tcp_with_a_real_client() {
        let (router, calls) = app(RequestDecompressionLayer::new().limit(256 * 1024));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/echo", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();

        let data = sample(200_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let response = client
                .post(&url)
                .header(header::CONTENT_ENCODING, coding.as_str())
                .body(encode(coding, &data))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{coding}");
            assert_eq!(response.headers()["x-seen-content-length"], "200000");
            assert!(response.bytes().await.unwrap() == data, "{coding}");
        }
        let served = calls.load(Ordering::SeqCst);

        // Decodes past the 256 KiB cap.
        let too_big = sample(300_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let response = client
                .post(&url)
                .header(header::CONTENT_ENCODING, coding.as_str())
                .body(encode(coding, &too_big))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{coding}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            let text = response.text().await.unwrap();
            assert!(text.contains("limit of 262144 bytes"), "{text}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), served);
        server.abort();
    }
}
