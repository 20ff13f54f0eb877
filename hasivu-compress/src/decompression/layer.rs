use http::HeaderValue;
use tower_layer::Layer;

use super::{decode::MAX_CODINGS, service::RequestDecompression};
use crate::Coding;

/// Decodes `Content-Encoding`d request bodies with a cap on both the encoded
/// and the decoded size, answering with a problem+json refusal when a body
/// is too large (413), uses a coding this layer does not accept (415) or
/// does not decode (400).
///
/// Defaults: 1 MiB of decoded bytes ([`limit`](Self::limit)), 1 MiB of
/// encoded bytes ([`encoded_limit`](Self::encoded_limit)), every coding the
/// cargo features enable, at most [`MAX_CODINGS`](Self::MAX_CODINGS)
/// stacked codings.
///
/// See the [module docs](super) for an example.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RequestDecompressionLayer {
    config: Config,
}

impl RequestDecompressionLayer {
    /// The default cap on decoded bytes: 1 MiB, the request size limit of
    /// section 4.3 of the HASIVU report.
    pub const DEFAULT_LIMIT: usize = 1024 * 1024;

    /// The default cap on encoded bytes read from the request: 1 MiB.
    pub const DEFAULT_ENCODED_LIMIT: usize = 1024 * 1024;

    /// The most codings a `Content-Encoding` list may stack (such as
    /// `gzip, br`); a longer list is answered with 415.
    pub const MAX_CODINGS: usize = MAX_CODINGS;

    /// A layer with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the decoded body at `bytes` (default
    /// [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT), 1 MiB). A body that decodes to
    /// exactly `bytes` passes; one byte more is answered with 413. With
    /// stacked codings every intermediate stage has the same cap.
    pub fn limit(mut self, bytes: usize) -> Self {
        self.config.limit = bytes;
        self
    }

    /// Caps the encoded bytes read from the request at `bytes` (default
    /// [`DEFAULT_ENCODED_LIMIT`](Self::DEFAULT_ENCODED_LIMIT), 1 MiB). A
    /// `Content-Length` above it is answered with 413 without reading the
    /// body; a body of unknown length is cut off as soon as it passes it.
    /// Bodies without a `Content-Encoding` are not counted.
    pub fn encoded_limit(mut self, bytes: usize) -> Self {
        self.config.encoded_limit = bytes;
        self
    }

    /// Refuses `br` bodies with 415 (accepted by default when the `br`
    /// feature is on).
    pub fn no_br(mut self) -> Self {
        self.config.br = false;
        self
    }

    /// Refuses `zstd` bodies with 415 (accepted by default when the `zstd`
    /// feature is on).
    pub fn no_zstd(mut self) -> Self {
        self.config.zstd = false;
        self
    }

    /// Refuses `gzip` and `x-gzip` bodies with 415 (accepted by default when
    /// the `gzip` feature is on).
    pub fn no_gzip(mut self) -> Self {
        self.config.gzip = false;
        self
    }

    /// Refuses `deflate` bodies with 415 (accepted by default when the
    /// `deflate` feature is on).
    pub fn no_deflate(mut self) -> Self {
        self.config.deflate = false;
        self
    }
}

impl<S> Layer<S> for RequestDecompressionLayer {
    type Service = RequestDecompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestDecompression::with_config(inner, self.config)
    }
}

/// The settings shared by the layer and the service.
#[derive(Clone, Copy, Debug)]
pub(super) struct Config {
    pub(super) limit: usize,
    pub(super) encoded_limit: usize,
    pub(super) br: bool,
    pub(super) zstd: bool,
    pub(super) gzip: bool,
    pub(super) deflate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limit: RequestDecompressionLayer::DEFAULT_LIMIT,
            encoded_limit: RequestDecompressionLayer::DEFAULT_ENCODED_LIMIT,
            br: true,
            zstd: true,
            gzip: true,
            deflate: true,
        }
    }
}

impl Config {
    /// Whether a body in `coding` is decoded (identity always is: there is
    /// nothing to do).
    pub(super) fn accepts(&self, coding: Coding) -> bool {
        coding.is_enabled()
            && match coding {
                Coding::Identity => true,
                Coding::Zstd => self.zstd,
                Coding::Br => self.br,
                Coding::Gzip => self.gzip,
                Coding::Deflate => self.deflate,
            }
    }

    /// The `Accept-Encoding` value sent with a 415 (RFC 9110 §15.5.16): the
    /// accepted codings in the default preference order, or `identity` when
    /// none is.
    pub(super) fn accept_encoding(&self) -> HeaderValue {
        let list = Coding::DEFAULT_PREFERENCE
            .iter()
            .filter(|coding| self.accepts(**coding))
            .map(|coding| coding.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if list.is_empty() {
            HeaderValue::from_static("identity")
        } else {
            // Built from the static tokens above, always a valid value.
            HeaderValue::try_from(list).unwrap_or(HeaderValue::from_static("identity"))
        }
    }
}
