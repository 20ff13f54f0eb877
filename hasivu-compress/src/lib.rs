//! Response compression, bounded request decompression and JSON field
//! selection for tower services.
//!
//! - [`CompressionLayer`] compresses responses with zstd, brotli, gzip or
//!   deflate: RFC 9110 negotiation with a server preference for ties,
//!   identity instead of a late 406, a size threshold that also works for
//!   streamed bodies, a content-type allow-list, `no-transform`, correct
//!   `Vary`, `ETag` and `Content-Length`, one-shot compression with reused
//!   codec contexts for bodies of known length, and frame-by-frame
//!   compression that flushes while the source waits for streams. See
//!   [`compression`].
//! - [`RequestDecompressionLayer`] decodes compressed request bodies with a
//!   hard cap on decoded bytes (a 1 KiB brotli body cannot become 1 GiB):
//!   413, 415 and 400 answers as `application/problem+json`. See
//!   [`decompression`].
//! - [`FieldSelectionLayer`] (feature `fields`) prunes JSON responses to
//!   `?fields=id,email,school.name` before they are compressed. See
//!   `fields`.
//! - [`negotiate`] is the negotiation as a pure function, so other layers
//!   (an HTTP cache storing encoded variants) can key on its result.
//!
//! ```
//! # #[cfg(feature = "fields")] {
//! use axum::{Json, Router, routing::get};
//! use hasivu_compress::{CompressionLayer, FieldSelectionLayer, RequestDecompressionLayer};
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { Json(serde_json::json!({"id": 7, "email": "a@b"})) }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(RequestDecompressionLayer::new()) // uploads: decoded, capped at 1 MiB
//!             .layer(CompressionLayer::new()) // answers: zstd, br or gzip
//!             .layer(FieldSelectionLayer::new()), // ?fields=… pruned before compression
//!     );
//! # }
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `zstd` | yes | zstd (C libzstd through the `zstd` crate; 8 MiB window cap) |
//! | `br` | yes | brotli: encoding through `mbrotli` (safe Rust), decoding through `brotli-decompressor` |
//! | `gzip` | yes | gzip through flate2's `zlib-rs` backend |
//! | `deflate` | no | deflate (zlib format) through flate2's `zlib-rs` backend |
//! | `fields` | no | JSON field selection (`serde_json`, `percent-encoding`) |
//! | `serde` | no | `serde::Deserialize` for [`Levels`], to load levels from configuration |
//! | `full` | no | all of the above |
//!
//! # Where this comes from
//!
//! This crate serves sections 4.1 (response compression), 4.2 (efficient data
//! fetching) and 4.3 (payload limits) of the HASIVU performance report. The
//! report compresses dynamic responses with brotli at quality 11 (Node's
//! default), which runs at well under 1 MB/s, base64-encodes the result,
//! and reports the base64 length as the compressed size; no default here
//! comes near that level, and the optional size headers count real bytes.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod coding;
mod layer_body;
mod negotiate;
mod problem;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;
pub mod compression;
pub mod decompression;
#[cfg(feature = "fields")]
#[cfg_attr(docsrs, doc(cfg(feature = "fields")))]
pub mod fields;

/// The error type of bodies produced by this crate's layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use coding::Coding;
pub use compression::{CompressionLayer, Levels};
pub use decompression::RequestDecompressionLayer;
#[cfg(feature = "fields")]
pub use fields::{FieldSelectionLayer, Selection};
pub use layer_body::LayerBody;
pub use negotiate::{negotiate, negotiate_headers};
