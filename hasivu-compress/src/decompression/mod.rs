//! Request body decompression with bounded output.
//!
//! [`RequestDecompressionLayer`] decodes request bodies sent with a
//! `Content-Encoding` before the inner service sees them, like tower-http's
//! request decompression, with one difference that matters for a public
//! endpoint: the decoded size is capped. tower-http decodes without a limit
//! (tower-http#615), so a 16 KiB zstd body can expand to 512 MiB and a
//! kilobyte of brotli to gigabytes. Here decoding stops as soon as the output
//! would pass the cap, which defaults to 1 MiB, the request limit of section
//! 4.3 of the HASIVU report.
//!
//! # Behaviour
//!
//! - **No `Content-Encoding`, or only `identity`**: the request goes through
//!   untouched; the body keeps streaming and is not counted or buffered.
//! - **Encoded**: the body is read and decoded incrementally, chunk by chunk,
//!   with at most [`encoded_limit`](RequestDecompressionLayer::encoded_limit)
//!   bytes read (a larger `Content-Length` is refused before reading) and at
//!   most [`limit`](RequestDecompressionLayer::limit) bytes decoded. The inner
//!   service then gets the decoded bytes, without `Content-Encoding` (and
//!   `Transfer-Encoding`) and with `Content-Length` set to the decoded
//!   length. Request trailers of an encoded body are dropped.
//! - **Stacked codings** (`Content-Encoding: gzip, br`) are undone in reverse
//!   order, each stage with the same cap; at most
//!   [`MAX_CODINGS`](RequestDecompressionLayer::MAX_CODINGS) may be stacked.
//!
//! Refusals are `application/problem+json` answers and the inner service is
//! not called:
//!
//! | Case | Status | `code` |
//! |------|--------|--------|
//! | decoded or encoded size over its cap | 413 | `payload-too-large` |
//! | unknown, unbuilt or disabled coding; too many codings | 415, with `Accept-Encoding` | `unsupported-content-encoding` |
//! | corrupt or truncated stream, trailing bytes, body read error | 400 | `invalid-encoded-body` |
//!
//! Errors are answers, never `Err`: the service keeps the inner service's
//! error type.
//!
//! # Codings and memory
//!
//! The codings are those of the enabled cargo features: `br`, `zstd`, `gzip`
//! (also `x-gzip`; multi-member streams are accepted, each member's CRC is
//! checked) and `deflate` (the zlib format, RFC 9110 §8.4.1.2). Beyond the
//! decoded bytes, a decoder holds its window: 32 KiB for gzip and deflate, at
//! most 8 MiB for zstd (RFC 9659's limit; frames asking for more are refused
//! before anything is allocated) and at most 16 MiB for brotli (the format's
//! largest window; the large-window extension stays off). Decoding runs
//! inside the response future, so its CPU time is bounded by the caps.
//!
//! # Example
//!
//! The defaults:
//!
//! ```
//! # #[cfg(feature = "gzip")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::{convert::Infallible, io::Write};
//!
//! use bytes::Bytes;
//! use hasivu_compress::decompression::{DecompressedBody, RequestDecompressionLayer};
//! use http::{Request, Response, StatusCode, header};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! // An inner service that echoes the body it receives.
//! let service = ServiceBuilder::new()
//!     .layer(RequestDecompressionLayer::new())
//!     .service_fn(|request: Request<DecompressedBody<Full<Bytes>>>| async move {
//!         assert!(!request.headers().contains_key(header::CONTENT_ENCODING));
//!         let body = request.into_body().collect().await?.to_bytes();
//!         Ok::<_, Infallible>(Response::new(Full::new(body)))
//!     });
//!
//! let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gzip.write_all(br#"{"meal":"ragi mudde","quantity":120}"#).unwrap();
//! let request = Request::post("/orders")
//!     .header(header::CONTENT_ENCODING, "gzip")
//!     .body(Full::new(Bytes::from(gzip.finish().unwrap())))
//!     .unwrap();
//!
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, &br#"{"meal":"ragi mudde","quantity":120}"#[..]);
//! # }
//! # #[cfg(not(feature = "gzip"))]
//! # fn main() {}
//! ```
//!
//! Smaller caps, and no `deflate`:
//!
//! ```
//! # #[cfg(feature = "gzip")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::{convert::Infallible, io::Write};
//!
//! use bytes::Bytes;
//! use hasivu_compress::decompression::{DecompressedBody, RequestDecompressionLayer};
//! use http::{Request, Response, StatusCode, header};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let layer = RequestDecompressionLayer::new()
//!     .limit(64 * 1024)
//!     .encoded_limit(16 * 1024)
//!     .no_deflate();
//! let service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_: Request<DecompressedBody<Full<Bytes>>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
//!     });
//!
//! // 100 KiB of zeros compress to a few hundred bytes but decode past 64 KiB.
//! let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gzip.write_all(&[0; 100 * 1024]).unwrap();
//! let request = Request::post("/orders")
//!     .header(header::CONTENT_ENCODING, "gzip")
//!     .body(Full::new(Bytes::from(gzip.finish().unwrap())))
//!     .unwrap();
//!
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
//! assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
//! let problem = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(std::str::from_utf8(&problem).unwrap().contains("65536 bytes"));
//!
//! // A disabled coding is refused with the accepted ones listed.
//! let request = Request::post("/orders")
//!     .header(header::CONTENT_ENCODING, "deflate")
//!     .body(Full::new(Bytes::from_static(b"x")))
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
//! assert!(response.headers().contains_key(header::ACCEPT_ENCODING));
//! # }
//! # #[cfg(not(feature = "gzip"))]
//! # fn main() {}
//! ```

pub(crate) mod decode;
mod future;
mod layer;
mod service;
#[cfg(feature = "zstd")]
mod zstd_frames;

/// The request body the inner service of [`RequestDecompression`] receives:
/// the original body, untouched and still streaming, when the request had no
/// `Content-Encoding` (or only `identity`), otherwise the decoded bytes.
///
/// The error type is the original body's. Decoding is finished, and its
/// failures answered, before the inner service is called, so the decoded
/// variant cannot fail. Bodies from hyper and axum have errors that convert
/// into `Box<dyn Error + Send + Sync>`, which is what an axum `Router` asks
/// of a request body.
pub type DecompressedBody<B> = crate::LayerBody<B>;
pub use future::ResponseFuture;
pub use layer::RequestDecompressionLayer;
pub use service::RequestDecompression;

#[cfg(test)]
// Some helpers serve only the tests of some codings.
#[cfg_attr(
    not(all(
        feature = "gzip",
        feature = "deflate",
        feature = "br",
        feature = "zstd"
    )),
    allow(dead_code, unused_variables, unused_imports)
)]
mod tests {
    use std::{
        collections::VecDeque,
        convert::Infallible,
        io::{self, Write},
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        task::{Context, Poll},
        time::{Duration, Instant},
    };

    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
    use http_body::{Body, Frame, SizeHint};
    use http_body_util::{BodyExt, Full};
    use tower::{Service, ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::Coding;

    const GIB: usize = 1 << 30;

    /// A request body made of chunks, with an exact size or none, that
    /// records whether it was polled.
    struct TestBody {
        chunks: VecDeque<Result<Bytes, io::Error>>,
        exact: Option<u64>,
        polled: Arc<AtomicBool>,
    }

    impl TestBody {
        /// One chunk, exact size hint (like `Full`).
        fn full(bytes: impl Into<Bytes>) -> Self {
            let bytes = bytes.into();
            Self {
                exact: Some(bytes.len() as u64),
                chunks: VecDeque::from([Ok(bytes)]),
                polled: Arc::default(),
            }
        }

        /// Chunks of `size` bytes, unknown length (like a chunked upload).
        fn chunked(bytes: &[u8], size: usize) -> Self {
            Self {
                chunks: bytes
                    .chunks(size)
                    .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
                    .collect(),
                exact: None,
                polled: Arc::default(),
            }
        }

        /// Some bytes, then an error.
        fn failing(prefix: &[u8]) -> Self {
            Self {
                chunks: VecDeque::from([
                    Ok(Bytes::copy_from_slice(prefix)),
                    Err(io::Error::other("connection reset")),
                ]),
                exact: None,
                polled: Arc::default(),
            }
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            let this = self.get_mut();
            this.polled.store(true, Ordering::SeqCst);
            Poll::Ready(this.chunks.pop_front().map(|chunk| chunk.map(Frame::data)))
        }

        fn size_hint(&self) -> SizeHint {
            self.exact.map(SizeHint::with_exact).unwrap_or_default()
        }
    }

    /// What came back, and how often the inner service ran.
    struct Outcome {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        calls: usize,
    }

    impl Outcome {
        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap_or("<binary>")
        }

        /// A request header as the inner service saw it.
        fn seen(&self, name: &str) -> Option<&str> {
            self.headers
                .get(format!("x-seen-{name}"))
                .map(|value| value.to_str().unwrap())
        }

        fn assert_ok(&self, expected: &[u8]) {
            assert_eq!(self.status, StatusCode::OK, "{}", self.text());
            assert_eq!(self.calls, 1);
            assert!(self.body == expected, "decoded body differs");
        }

        fn assert_problem(&self, status: StatusCode, code: &str) {
            assert_eq!(self.status, status, "{}", self.text());
            assert_eq!(self.calls, 0, "the inner service must not run");
            assert_eq!(
                self.headers[header::CONTENT_TYPE],
                "application/problem+json"
            );
            let text = self.text();
            assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
            assert!(text.contains(&format!(r#""code":"{code}""#)), "{text}");
            assert!(
                text.contains(&format!(r#""status":{}"#, status.as_u16())),
                "{text}"
            );
            #[cfg(feature = "fields")]
            {
                let json: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(json["code"], code);
                assert_eq!(json["status"], status.as_u16());
                assert!(json["detail"].is_string());
            }
        }

        fn detail_mentions(&self, words: &str) {
            assert!(self.text().contains(words), "{}", self.text());
        }
    }

    /// Sends `request` through `layer` to an echo service that reports the
    /// request headers it saw as `x-seen-*`.
    async fn send(layer: RequestDecompressionLayer, request: Request<TestBody>) -> Outcome {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let inner = service_fn(move |request: Request<DecompressedBody<TestBody>>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let mut response = Response::new(Full::new(body));
                for name in [
                    header::CONTENT_ENCODING,
                    header::CONTENT_LENGTH,
                    header::TRANSFER_ENCODING,
                ] {
                    if let Some(value) = parts.headers.get(&name) {
                        let seen = HeaderName::try_from(format!("x-seen-{name}")).unwrap();
                        response.headers_mut().insert(seen, value.clone());
                    }
                }
                Ok::<_, io::Error>(response)
            }
        });
        let response = layer.layer(inner).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Outcome {
            status: parts.status,
            headers: parts.headers,
            body,
            calls: calls.load(Ordering::SeqCst),
        }
    }

    fn request(encoding: Option<&str>, body: TestBody) -> Request<TestBody> {
        let mut builder = Request::post("/orders");
        if let Some(encoding) = encoding {
            builder = builder.header(header::CONTENT_ENCODING, encoding);
        }
        builder.body(body).unwrap()
    }

    /// An encoded request with its `Content-Length`, as a client sends it.
    fn encoded(encoding: &str, bytes: Vec<u8>) -> Request<TestBody> {
        let mut request = request(Some(encoding), TestBody::full(bytes));
        let length = request.body().exact.unwrap_or(0);
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.into());
        request
    }

    /// Text that compresses somewhat, like a JSON-ish payload.
    fn sample(len: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "idli ",
            "dosa ",
            "ragi ",
            "mudde ",
            "{\"id\":",
            "42,",
            "\"qty\":",
            "bisi bele bath ",
        ];
        let mut state = 0x2545_f491_u32;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            out.extend_from_slice(WORDS[(state >> 29) as usize].as_bytes());
        }
        out.truncate(len);
        out
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

    /// Applies `codings` in order, as a `Content-Encoding` list says.
    fn encode_stack(codings: &[Coding], data: &[u8]) -> Vec<u8> {
        codings
            .iter()
            .fold(data.to_vec(), |bytes, &coding| encode(coding, &bytes))
    }

    fn list(codings: &[Coding]) -> String {
        codings
            .iter()
            .map(|coding| coding.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes `total` zeros through `encoder` in 64 KiB chunks.
    fn zeros_through<W: Write>(mut encoder: W, total: usize) -> W {
        let chunk = vec![0; 64 * 1024];
        for _ in 0..total / chunk.len() {
            encoder.write_all(&chunk).unwrap();
        }
        encoder
    }

    /// Sends a bomb with the default layer and checks it is refused fast.
    async fn assert_bomb_refused(encoding: &str, bomb: Vec<u8>) {
        let started = Instant::now();
        let outcome = send(RequestDecompressionLayer::new(), encoded(encoding, bomb)).await;
        let elapsed = started.elapsed();
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        outcome.detail_mentions("decodes to more than the limit of 1048576 bytes");
        // Decoding stops at the 1 MiB cap; the full expansion would take
        // many seconds (and a gigabyte) in a debug build.
        assert!(elapsed < Duration::from_secs(3), "{encoding}: {elapsed:?}");
    }

    #[tokio::test]
    async fn each_enabled_coding_round_trips() {
        let data = sample(200_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let outcome = send(
                RequestDecompressionLayer::new(),
                encoded(coding.as_str(), encode(coding, &data)),
            )
            .await;
            outcome.assert_ok(&data);
            assert_eq!(outcome.seen("content-length"), Some("200000"), "{coding}");
            assert_eq!(outcome.seen("content-encoding"), None, "{coding}");
        }
    }

    #[tokio::test]
    async fn chunked_uploads_decode_and_lose_transfer_encoding() {
        let data = sample(5_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let encoded = encode(coding, &data);
            let mut request = request(Some(coding.as_str()), TestBody::chunked(&encoded, 7));
            request
                .headers_mut()
                .insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
            let outcome = send(RequestDecompressionLayer::new(), request).await;
            outcome.assert_ok(&data);
            assert_eq!(outcome.seen("content-length"), Some("5000"));
            assert_eq!(outcome.seen("transfer-encoding"), None);
        }
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn coding_tokens_ignore_case_and_accept_x_gzip() {
        let data = sample(1_000);
        for token in ["x-gzip", "GZIP", " GZip ", "X-Gzip"] {
            let outcome = send(
                RequestDecompressionLayer::new(),
                encoded(token, encode(Coding::Gzip, &data)),
            )
            .await;
            outcome.assert_ok(&data);
        }
    }

    #[tokio::test]
    async fn absent_empty_and_identity_pass_through_untouched() {
        // Larger than both caps: pass-through bodies are not counted.
        let data = sample(3 * 1024 * 1024);
        for encoding in [None, Some("identity"), Some("IDENTITY"), Some("")] {
            let outcome = send(
                RequestDecompressionLayer::new(),
                request(encoding, TestBody::chunked(&data, 64 * 1024)),
            )
            .await;
            outcome.assert_ok(&data);
            assert_eq!(outcome.seen("content-encoding"), encoding);
            assert_eq!(outcome.seen("content-length"), None);
        }
    }

    #[tokio::test]
    async fn pass_through_bodies_keep_streaming() {
        let data = sample(10 * 1024);
        let service = RequestDecompression::new(service_fn(
            |request: Request<DecompressedBody<TestBody>>| async move {
                // Frame by frame, as sent: nothing was buffered.
                let mut body = request.into_body();
                assert_eq!(body.size_hint().exact(), None);
                let mut frames = 0;
                while let Some(frame) = body.frame().await {
                    assert_eq!(frame?.into_data().unwrap().len(), 1024);
                    frames += 1;
                }
                Ok::<_, io::Error>(Response::new(Full::new(Bytes::from(frames.to_string()))))
            },
        ));
        let response = service
            .oneshot(request(None, TestBody::chunked(&data, 1024)))
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "10");
    }

    #[cfg(any(
        feature = "gzip",
        feature = "deflate",
        feature = "br",
        feature = "zstd"
    ))]
    #[tokio::test]
    async fn stacked_codings_are_undone_in_reverse() {
        let data = sample(20_000);
        let all = Coding::DEFAULT_PREFERENCE;
        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded(&list(all), encode_stack(all, &data)),
        )
        .await;
        outcome.assert_ok(&data);
        assert_eq!(outcome.seen("content-encoding"), None);
        assert_eq!(outcome.seen("content-length"), Some("20000"));
    }

    #[cfg(all(feature = "gzip", feature = "br"))]
    #[tokio::test]
    async fn gzip_then_br_over_one_or_two_header_lines() {
        let data = sample(20_000);
        let body = encode_stack(&[Coding::Gzip, Coding::Br], &data);
        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded("gzip, br", body.clone()),
        )
        .await;
        outcome.assert_ok(&data);

        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded("gzip,, identity ,br", body.clone()),
        )
        .await;
        outcome.assert_ok(&data);

        let mut request = encoded("gzip", body.clone());
        request
            .headers_mut()
            .append(header::CONTENT_ENCODING, "br".parse().unwrap());
        let outcome = send(RequestDecompressionLayer::new(), request).await;
        outcome.assert_ok(&data);

        // The wrong order does not decode.
        let outcome = send(RequestDecompressionLayer::new(), encoded("br, gzip", body)).await;
        outcome.assert_problem(StatusCode::BAD_REQUEST, "invalid-encoded-body");
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn at_most_four_codings_stack() {
        let data = sample(1_000);
        let four = [Coding::Gzip; 4];
        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded(&list(&four), encode_stack(&four, &data)),
        )
        .await;
        outcome.assert_ok(&data);

        let five = [Coding::Gzip; 5];
        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded(&list(&five), encode_stack(&five, &data)),
        )
        .await;
        outcome.assert_problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-content-encoding",
        );
        outcome.detail_mentions("At most 4");
        assert!(outcome.headers.contains_key(header::ACCEPT_ENCODING));
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn gzip_bomb_is_refused() {
        // Deflate expands at most ~1032:1, so 16 KiB of gzip reach 16 MiB:
        // sixteen members of 1 MiB of zeros each (RFC 1952 allows members to
        // follow each other).
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let member = zeros_through(encoder, 1024 * 1024).finish().unwrap();
        let bomb = member.repeat(16);
        assert!(bomb.len() <= 17 * 1024, "{}", bomb.len());
        assert_bomb_refused("gzip", bomb).await;
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn stacked_gzip_bomb_is_refused() {
        // gzip of 1024 gzip members of 1 MiB of zeros: a few KiB that would
        // expand to 1 GiB; the intermediate stage hits its cap first.
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let member = zeros_through(encoder, 1024 * 1024).finish().unwrap();
        let inner = member.repeat(1024);
        let mut outer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        outer.write_all(&inner).unwrap();
        let bomb = outer.finish().unwrap();
        assert!(bomb.len() <= 16 * 1024, "{}", bomb.len());
        assert_bomb_refused("gzip, gzip", bomb).await;
    }

    #[cfg(feature = "zstd")]
    #[tokio::test]
    async fn zstd_bomb_is_refused() {
        // 1 GiB of zeros. A zstd block regenerates at most 128 KiB, so 1 GiB
        // needs about 32 KiB (16 KiB would reach 512 MiB).
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let bomb = zeros_through(encoder, GIB).finish().unwrap();
        assert!(bomb.len() <= 40 * 1024, "{}", bomb.len());
        assert_bomb_refused("zstd", bomb).await;
    }

    #[cfg(feature = "zstd")]
    #[tokio::test]
    async fn zstd_frames_with_huge_windows_are_refused() {
        // A frame whose window needs more than 8 MiB (RFC 9659) is refused
        // before the decoder allocates the window.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        encoder.window_log(27).unwrap();
        encoder.long_distance_matching(true).unwrap();
        let data = sample(64 * 1024);
        encoder.write_all(&data).unwrap();
        let frame = encoder.finish().unwrap();
        let outcome = send(RequestDecompressionLayer::new(), encoded("zstd", frame)).await;
        outcome.assert_problem(StatusCode::BAD_REQUEST, "invalid-encoded-body");
    }

    #[cfg(feature = "br")]
    #[tokio::test]
    async fn br_bomb_is_refused() {
        // 1 GiB of zeros in well under 1 KiB.
        let encoder = brotli::CompressorWriter::new(Vec::new(), 64 * 1024, 2, 24);
        let bomb = zeros_through(encoder, GIB).into_inner();
        assert!(bomb.len() <= 16 * 1024, "{}", bomb.len());
        assert_bomb_refused("br", bomb).await;
    }

    #[cfg(any(
        feature = "gzip",
        feature = "deflate",
        feature = "br",
        feature = "zstd"
    ))]
    #[tokio::test]
    async fn decoded_cap_is_exact() {
        let layer = RequestDecompressionLayer::new().limit(1_000);
        let fits = sample(1_000);
        let over = sample(1_001);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let outcome = send(
                layer.clone(),
                encoded(coding.as_str(), encode(coding, &fits)),
            )
            .await;
            outcome.assert_ok(&fits);
            let outcome = send(
                layer.clone(),
                encoded(coding.as_str(), encode(coding, &over)),
            )
            .await;
            outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
            outcome.detail_mentions("decodes to more than the limit of 1000 bytes");
        }
        let all = Coding::DEFAULT_PREFERENCE;
        let outcome = send(layer.clone(), encoded(&list(all), encode_stack(all, &fits))).await;
        outcome.assert_ok(&fits);
        let outcome = send(layer, encoded(&list(all), encode_stack(all, &over))).await;
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn encoded_cap_is_exact() {
        let data = sample(10_000);
        let body = encode(Coding::Gzip, &data);
        let fits = RequestDecompressionLayer::new().encoded_limit(body.len());
        let outcome = send(
            fits.clone(),
            request(Some("gzip"), TestBody::chunked(&body, 100)),
        )
        .await;
        outcome.assert_ok(&data);
        let short = RequestDecompressionLayer::new().encoded_limit(body.len() - 1);
        let outcome = send(short, request(Some("gzip"), TestBody::chunked(&body, 100))).await;
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        outcome.detail_mentions(&format!(
            "encoded request body is larger than the limit of {} bytes",
            body.len() - 1
        ));
    }

    #[cfg(feature = "gzip")]
    #[tokio::test]
    async fn declared_length_over_encoded_cap_is_refused_unread() {
        let body = encode(Coding::Gzip, &sample(10_000));
        let layer = RequestDecompressionLayer::new().encoded_limit(100);

        // By Content-Length, on a body without a size hint.
        let mut request = request(Some("gzip"), TestBody::chunked(&body, 10));
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, body.len().into());
        let polled = request.body().polled.clone();
        let outcome = send(layer.clone(), request).await;
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        outcome.detail_mentions("limit of 100 bytes");
        assert!(!polled.load(Ordering::SeqCst), "the body must not be read");

        // By the body's exact size hint, without Content-Length.
        let request = request_with_hint(&body);
        let polled = request.body().polled.clone();
        let outcome = send(layer, request).await;
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        assert!(!polled.load(Ordering::SeqCst), "the body must not be read");
    }

    fn request_with_hint(body: &[u8]) -> Request<TestBody> {
        request(Some("gzip"), TestBody::full(body.to_vec()))
    }

    #[cfg(feature = "zstd")]
    #[tokio::test]
    async fn chunked_body_over_encoded_cap_is_refused() {
        // Pseudo-random bytes do not compress: the encoded body is > 8 KiB.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let data: Vec<u8> = (0..20_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let body = encode(Coding::Zstd, &data);
        assert!(body.len() > 8 * 1024);
        let request = request(Some("zstd"), TestBody::chunked(&body, 512));
        let polled = request.body().polled.clone();
        let outcome = send(
            RequestDecompressionLayer::new().encoded_limit(8 * 1024),
            request,
        )
        .await;
        outcome.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        outcome.detail_mentions("encoded request body is larger than the limit of 8192 bytes");
        assert!(polled.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn unknown_codings_get_415_with_accept_encoding() {
        let accepted = match list(Coding::DEFAULT_PREFERENCE) {
            none if none.is_empty() => "identity".to_owned(),
            some => some,
        };
        for encoding in ["compress", "foo", "x-compress", "*", "gzip, foo", "br;q=1"] {
            let outcome = send(
                RequestDecompressionLayer::new(),
                encoded(encoding, b"anything".to_vec()),
            )
            .await;
            outcome.assert_problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
            );
            assert_eq!(outcome.headers[header::ACCEPT_ENCODING], accepted.as_str());
        }
        let outcome = send(
            RequestDecompressionLayer::new(),
            encoded("compress", b"anything".to_vec()),
        )
        .await;
        outcome.detail_mentions(r#"The content coding \"compress\" is not supported"#);
    }

    #[tokio::test]
    async fn disabled_codings_get_415() {
        let layer = RequestDecompressionLayer::new().no_gzip().no_br();
        let accepted: Vec<_> = Coding::DEFAULT_PREFERENCE
            .iter()
            .copied()
            .filter(|coding| !matches!(coding, Coding::Gzip | Coding::Br))
            .collect();
        for encoding in ["gzip", "x-gzip", "br"] {
            let outcome = send(layer.clone(), encoded(encoding, b"anything".to_vec())).await;
            outcome.assert_problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
            );
            let expected = if accepted.is_empty() {
                "identity".to_owned()
            } else {
                list(&accepted)
            };
            assert_eq!(outcome.headers[header::ACCEPT_ENCODING], expected.as_str());
        }
        let none = RequestDecompressionLayer::new()
            .no_gzip()
            .no_br()
            .no_zstd()
            .no_deflate();
        let outcome = send(none.clone(), encoded("zstd", b"anything".to_vec())).await;
        assert_eq!(outcome.headers[header::ACCEPT_ENCODING], "identity");
        // Identity still passes.
        let outcome = send(none, request(Some("identity"), TestBody::full("plain"))).await;
        outcome.assert_ok(b"plain");
    }

    #[tokio::test]
    async fn corrupt_truncated_and_trailing_streams_get_400() {
        let data = sample(50_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            let good = encode(coding, &data);
            let mut cases: Vec<(&str, Vec<u8>)> = vec![
                ("garbage", b"this is not an encoded body at all".to_vec()),
                ("empty", Vec::new()),
                ("truncated by one byte", good[..good.len() - 1].to_vec()),
                ("truncated in half", good[..good.len() / 2].to_vec()),
                ("header only", good[..3].to_vec()),
                ("trailing garbage", [&good[..], b"garbage"].concat()),
                ("trailing zero byte", [&good[..], &[0]].concat()),
            ];
            if matches!(coding, Coding::Gzip | Coding::Deflate) {
                // Checksums catch a flipped byte.
                let mut flipped = good.clone();
                let middle = flipped.len() / 2;
                flipped[middle] ^= 0x55;
                cases.push(("flipped byte", flipped));
            }
            if matches!(coding, Coding::Br | Coding::Deflate) {
                // These formats have no multi-stream form.
                cases.push(("second stream", good.repeat(2)));
            }
            for (case, body) in cases {
                let outcome = send(
                    RequestDecompressionLayer::new(),
                    encoded(coding.as_str(), body),
                )
                .await;
                assert_eq!(outcome.status, StatusCode::BAD_REQUEST, "{coding}: {case}");
                outcome.assert_problem(StatusCode::BAD_REQUEST, "invalid-encoded-body");
            }
        }
    }

    #[tokio::test]
    async fn gzip_members_and_zstd_frames_may_follow_each_other() {
        let data = sample(10_000);
        for &coding in Coding::DEFAULT_PREFERENCE {
            if matches!(coding, Coding::Gzip | Coding::Zstd) {
                let body = encode(coding, &data).repeat(2);
                let outcome = send(
                    RequestDecompressionLayer::new(),
                    encoded(coding.as_str(), body),
                )
                .await;
                outcome.assert_ok(&data.repeat(2));
            }
        }
    }

    #[tokio::test]
    async fn body_read_errors_get_400() {
        for &coding in Coding::DEFAULT_PREFERENCE {
            let good = encode(coding, &sample(10_000));
            let request = request(Some(coding.as_str()), TestBody::failing(&good[..10]));
            let outcome = send(RequestDecompressionLayer::new(), request).await;
            outcome.assert_problem(StatusCode::BAD_REQUEST, "invalid-encoded-body");
            outcome.detail_mentions("could not be read");
        }
    }

    #[test]
    fn futures_are_send_and_types_debug() {
        fn assert_send<T: Send>(_: &T) {}
        let mut service =
            RequestDecompression::new(service_fn(|_: Request<DecompressedBody<TestBody>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        let future = service.call(request(Some("gzip"), TestBody::full("x")));
        assert_send(&future);
        assert!(format!("{future:?}").contains("ResponseFuture"));
        assert!(format!("{service:?}").contains("RequestDecompression"));
        let layer = RequestDecompressionLayer::new().limit(5);
        assert!(format!("{layer:?}").contains("limit: 5"));
        assert!(
            format!("{:?}", DecompressedBody::inner(Full::new(Bytes::new()))).contains("Inner")
        );
    }

    #[test]
    fn service_accessors_and_builders() {
        let service = RequestDecompression::new(7_u8)
            .limit(10)
            .encoded_limit(20)
            .no_br()
            .no_zstd()
            .no_gzip()
            .no_deflate();
        assert_eq!(*service.get_ref(), 7);
        let mut service = service;
        *service.get_mut() = 8;
        assert_eq!(service.into_inner(), 8);
        let layer = RequestDecompression::<()>::layer();
        assert!(format!("{layer:?}").contains("limit: 1048576"));
    }
}
