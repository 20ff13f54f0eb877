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
//! one frame plus the codec state (brotli and zstd streams use a 512 KiB
//! window, gzip 32 KiB; RFC 9659 allows zstd at most 8 MiB, which no level
//! here exceeds). Whenever the inner body has no
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
//! The report compressed with brotli at quality 11, Node's default. On the
//! 25 KB menu document of the crate bench (2-core AMD EPYC VM, one thread,
//! each codec's context reused), the levels cost:
//!
//! | coding and level | time per 25 KB | throughput | output | ratio |
//! | --- | ---: | ---: | ---: | ---: |
//! | zstd 1 | 22 µs | 1178 MB/s | 3161 B | 8.1 |
//! | **zstd 3** (default) | 23 µs | 1103 MB/s | 3090 B | 8.3 |
//! | zstd 6 | 80 µs | 321 MB/s | 2737 B | 9.4 |
//! | zstd 19 | 8.0 ms | 3 MB/s | 2535 B | 10.2 |
//! | br 3 | 50 µs | 513 MB/s | 3077 B | 8.4 |
//! | **br 4** (default) | 76 µs | 340 MB/s | 2865 B | 9.0 |
//! | br 5 | 126 µs | 205 MB/s | 2516 B | 10.2 |
//! | br 9 | 313 µs | 82 MB/s | 2475 B | 10.4 |
//! | br 11 (the report's) | 13.3 ms | 1.9 MB/s | 2266 B | 11.4 |
//! | gzip 1 | 24 µs | 1054 MB/s | 5102 B | 5.0 |
//! | **gzip 6** (default) | 88 µs | 293 MB/s | 3048 B | 8.4 |
//! | gzip 9 | 130 µs | 197 MB/s | 2868 B | 9.0 |
//!
//! zstd 3 gives gzip 6's ratio at about four times its speed, which is why
//! zstd is preferred when the client accepts it (Chrome, Edge and Firefox
//! send `zstd`; Safari from 26). Brotli 4 is the best ratio among the fast
//! levels and the choice for clients without zstd; brotli 11 costs 175 times
//! brotli 4 for 21% fewer bytes and is never right for dynamic responses.
//! gzip 6 is the common default and what older clients get.
//!
//! Against tower-http 0.7's `CompressionLayer` on the same inner service,
//! through `oneshot`, body read to the end (median times, one `cargo bench
//! -p hasivu-benches --bench compress` run on the machine above):
//!
//! | body | browser `Accept-Encoding` | hasivu | tower-http | speed | output size |
//! | --- | --- | ---: | ---: | ---: | ---: |
//! | 1 KB JSON | `gzip, deflate, br, zstd` | 4.6 µs | 19.6 µs | 4.27× | +1.4% |
//! | 25 KB JSON | `gzip, deflate, br, zstd` | 23.6 µs | 39.0 µs | 1.65× | +0.0% |
//! | 25 KB JSON | `gzip, deflate, br` | 72.5 µs | 98.3 µs | 1.36× | −0.2% |
//! | 50 KB HTML | `gzip, deflate, br, zstd` | 33.1 µs | 52.3 µs | 1.58× | +0.0% |
//! | 50 KB HTML | `gzip, deflate, br` | 113.9 µs | 153.9 µs | 1.35× | +0.2% |
//! | 200 KB JSON | `gzip, deflate, br, zstd` | 129.4 µs | 150.8 µs | 1.17× | +0.6% |
//! | 200 KB JSON | `gzip, deflate, br` | 536 µs | 736 µs | 1.37× | −0.2% |
//! | 1 MB JSON | `gzip, deflate, br, zstd` | 752 µs | 759 µs | 1.01× | +0.0% |
//! | 1 MB JSON | `gzip, deflate, br` | 2.64 ms | 3.57 ms | 1.35× | +0.1% |
//!
//! The gain for small and medium bodies comes from compressing in one call
//! with a reused context (tower-http sets up a streaming encoder per
//! response); for brotli it comes from the encoder (mbrotli is about 1.4×
//! the `brotli` crate at quality 4). For large zstd bodies both spend their
//! time in the same libzstd call, and gzip and deflate use the same zlib-rs
//! on both sides: there, at equal levels, the two are within 0–20% of each
//! other. A compressible response below the threshold costs about 90 ns
//! more than the bare service (the `Vary` header, the header scan, an `Arc`
//! clone).

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
