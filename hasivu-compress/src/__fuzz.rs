//! Internal entry points for the workspace's fuzz targets (feature
//! `fuzzing`). Not part of the public API: no semver guarantee, hidden from
//! the docs, never enabled by default.

use bytes::Bytes;

use crate::Coding;

/// The most codings a `Content-Encoding` list may stack.
pub const MAX_CODINGS: usize = crate::decompression::decode::MAX_CODINGS;

/// The request decoder of [`RequestDecompressionLayer`](crate::RequestDecompressionLayer),
/// as the layer drives it.
#[derive(Debug)]
pub struct Decoder(crate::decompression::decode::Decoder);

/// Why decoding stopped: `"too large"`, `"invalid"` or `"setup"`.
pub type DecodeError = &'static str;

fn reason(error: crate::decompression::decode::DecodeError) -> DecodeError {
    use crate::decompression::decode::DecodeError as E;
    match error {
        E::TooLarge => "too large",
        E::Invalid => "invalid",
        E::Setup => "setup",
    }
}

impl Decoder {
    /// A decoder for `codings` (in the order they were applied) into at
    /// most `limit` bytes per stage.
    pub fn new(codings: &[Coding], limit: usize) -> Result<Self, DecodeError> {
        crate::decompression::decode::Decoder::new(codings, limit)
            .map(Self)
            .map_err(reason)
    }

    /// Feeds the next chunk of encoded bytes.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        self.0.write(chunk).map_err(reason)
    }

    /// Ends the input and returns the decoded bytes.
    pub fn finish(self) -> Result<Bytes, DecodeError> {
        self.0.finish().map_err(reason)
    }
}

/// The field-selection middleware's byte pruner: `None` when `input` is
/// not JSON it accepts.
#[cfg(feature = "fields")]
pub fn prune_slice(selection: &crate::Selection, input: &[u8]) -> Option<Vec<u8>> {
    crate::fields::prune::prune_slice(selection, input)
}
