//! Response compression, safe request decompression and JSON field selection
//! for tower services.
//!
//! `hasivu-compress` provides:
//!
//! - **A compression layer** for `br`, `zstd`, `gzip` and `deflate` with
//!   RFC 9110 §12.5.3 negotiation (q-values, `*`, `identity;q=0`), a
//!   configurable server preference for ties, identity instead of a late 406,
//!   a size threshold that also works for bodies of unknown length, a
//!   content-type allow-list, `Cache-Control: no-transform`, correct `Vary`,
//!   `ETag` and `Content-Length` handling, and per-frame flushing for
//!   streamed responses. Levels are set per coding, with defaults chosen
//!   from measurements.
//! - **A request decompression layer** with a hard cap on decoded bytes, so a
//!   small compressed body cannot expand into gigabytes.
//! - **JSON field selection** (`?fields=id,email,school.name`) that prunes a
//!   response to what the client asked for before it is compressed.
//!
//! The negotiation is a public pure function ([`negotiate`]), so other
//! layers (such as an HTTP cache storing encoded variants) can key on its
//! result.
//!
//! # Where this comes from
//!
//! This crate serves sections 4.1 (response compression), 4.2 (efficient data
//! fetching) and 4.3 (payload limits) of the HASIVU performance report. The
//! report compresses dynamic responses with brotli at quality 11, which runs
//! at well under 1 MB/s; no default here comes near that level.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod coding;
mod layer_body;
mod negotiate;
mod problem;

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
