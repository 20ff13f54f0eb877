//! Response compression.
//!
//! [`CompressionLayer`] compresses the responses of a tower service with
//! zstd, brotli, gzip or deflate, whichever the client accepts and the
//! server prefers.
//!
//! ```
//! use axum::{Json, Router, routing::get};
//! use hasivu_compress::CompressionLayer;
//!
//! let app: Router = Router::new()
//!     .route("/menu", get(|| async { Json(vec!["rice", "dal", "curd"]) }))
//!     .layer(CompressionLayer::new());
//! ```
//!
//! A customised setup: gzip preferred over brotli, faster levels for big
//! bodies, per-frame flushing for server-sent events, and no compression for
//! responses that carry a session token:
//!
//! ```
//! use axum::{Router, routing::get};
//! use hasivu_compress::{Coding, CompressionLayer, Levels};
//!
//! let fast = Levels { zstd: 1, br: 2, gzip: 1, ..Levels::default() };
//! let layer = CompressionLayer::new()
//!     .prefer(&[Coding::Gzip, Coding::Br, Coding::Zstd])
//!     .large_body_levels(1024 * 1024, fast)
//!     .flush_every_frame(true)
//!     .compress_when(|response: &http::response::Parts| {
//!         !response.headers.contains_key("x-session-token")
//!     });
//! let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(layer);
//! ```
//!
//! # What is compressed
//!
//! The coding is negotiated from `Accept-Encoding` before the inner service
//! runs ([`negotiate`](crate::negotiate)); when nothing the client accepts is
//! available, the response goes out unencoded (never a 406 after the
//! handler has done its work). A response is then compressed unless:
//!
//! - the request is `HEAD`, or the status is 1xx, 204, 206 or 304, or it has
//!   `Content-Range`;
//! - it already has a `Content-Encoding` (other than `identity`);
//! - it has `Cache-Control: no-transform`;
//! - its `Content-Type` is missing or not in [`ContentTypes`] (text, JSON,
//!   JavaScript, XML, SVG, wasm by default; `text/event-stream` only with
//!   [`flush_every_frame`](CompressionLayer::flush_every_frame));
//! - it carries the [`NoCompression`] extension or the
//!   [`Predicate`] says no;
//! - its body is smaller than [`min_size`](CompressionLayer::min_size)
//!   (1 KiB). A body of unknown length is buffered up to that size first, so
//!   a short streamed answer is not inflated by codec framing.
//!
//! # Headers
//!
//! Every response of a compressible type gets `Vary: Accept-Encoding`
//! (merged into an existing `Vary`, never duplicated), also when it is sent
//! unencoded, so caches keep the variants apart. A compressed response gets
//! `Content-Encoding`, loses `Accept-Ranges`, has a strong `ETag` made weak
//! (`W/"…"`: the bytes differ from the original's), and carries the exact
//! compressed `Content-Length` when the body was compressed whole, none when
//! it streams.
//!
//! # Whole or streamed
//!
//! A body of known length (such as axum's `Json`) up to
//! [`one_shot_limit`](CompressionLayer::one_shot_limit) is read whole and
//! compressed in one call with a per-thread codec context that is reused
//! across responses; this is where most of the speed over tower-http comes
//! from. Other bodies are compressed frame by frame as they arrive, holding
//! one frame plus the codec state (brotli streams use a 512 KiB window,
//! zstd at most 8 MiB as RFC 9659 requires). Whenever the inner body has no
//! frame ready, the output so far is flushed, so a slow stream reaches the
//! client as it is produced instead of waiting for the next frame
//! (tower-http#292); [`flush_every_frame`](CompressionLayer::flush_every_frame)
//! flushes after every frame as well. Trailers are passed on.
//!
//! # BREACH
//!
//! Compressing a response that contains both a secret (a CSRF token) and
//! attacker-controlled input lets an attacker guess the secret from the
//! compressed sizes. Mark such responses with [`NoCompression`] or a
//! [`Predicate`]. The report's size headers
//! ([`size_headers`](CompressionLayer::size_headers): `X-Original-Size`,
//! `X-Compressed-Size`, `X-Compression-Ratio`) hand out exactly those sizes
//! and are therefore off by default.
//!
//! # Choosing levels
//!
//! The report compressed with brotli at quality 11, Node's default, which
//! runs at well under 1 MB/s on dynamic JSON. The defaults here are zstd 3,
//! brotli 4, gzip 6 (see [`Levels`]); the crate bench (`cargo bench -p
//! hasivu-benches --bench compress`) measures them against tower-http's
//! `CompressionLayer` on the same bodies, and the README's "Performance"
//! section lists one run.

mod body;
mod encoder;
mod future;
mod layer;
mod predicate;
mod service;

pub use body::CompressionBody;
pub use future::ResponseFuture;
pub use layer::{CompressionLayer, Levels};
pub use predicate::{Always, ContentTypes, NoCompression, Predicate};
pub use service::Compression;

// The tests decode every coding, so they need all of them.
#[cfg(all(
    test,
    feature = "br",
    feature = "zstd",
    feature = "gzip",
    feature = "deflate"
))]
mod tests;
