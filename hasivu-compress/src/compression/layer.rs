use std::sync::Arc;

use tower_layer::Layer;

use super::{Always, Compression, ContentTypes, Predicate};
use crate::Coding;

/// Compression levels, one per coding.
///
/// The defaults (zstd 3, br 4, gzip 6, deflate 6) were chosen from the
/// crate's bench corpus; see "Choosing levels" in the [module
/// docs](super). Values out of range are clamped: zstd to 1..=22 (negative
/// "fast" levels are allowed down to -7), br to 0..=11, gzip and deflate to
/// 0..=9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Levels {
    /// zstd level.
    pub zstd: i32,
    /// Brotli quality. 11 runs at well under 1 MB/s: never use it for
    /// dynamic responses.
    pub br: u32,
    /// gzip level.
    pub gzip: u32,
    /// deflate level.
    pub deflate: u32,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            zstd: 3,
            br: 4,
            gzip: 6,
            deflate: 6,
        }
    }
}

impl Levels {
    fn clamped(self) -> Self {
        Self {
            zstd: self.zstd.clamp(-7, 22),
            br: self.br.min(11),
            gzip: self.gzip.min(9),
            deflate: self.deflate.min(9),
        }
    }
}

/// Settings shared by the layer and every service it makes.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) preference: Vec<Coding>,
    pub(crate) levels: Levels,
    pub(crate) large: Option<(u64, Levels)>,
    pub(crate) min_size: u64,
    pub(crate) one_shot_limit: u64,
    pub(crate) content_types: ContentTypes,
    pub(crate) flush_every_frame: bool,
    pub(crate) size_headers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            preference: Coding::DEFAULT_PREFERENCE.to_vec(),
            levels: Levels::default(),
            large: None,
            min_size: 1024,
            one_shot_limit: 4 * 1024 * 1024,
            content_types: ContentTypes::default(),
            flush_every_frame: false,
            size_headers: false,
        }
    }
}

impl Config {
    /// The levels for a body of `size` bytes (unknown: the normal ones).
    pub(crate) fn levels_for(&self, size: Option<u64>) -> &Levels {
        match (&self.large, size) {
            (Some((min, levels)), Some(size)) if size >= *min => levels,
            _ => &self.levels,
        }
    }
}

/// Compresses responses; see the [module docs](super) for the rules and
/// examples.
#[derive(Clone, Debug)]
#[must_use]
pub struct CompressionLayer<P = Always> {
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
}

impl Default for CompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CompressionLayer {
    /// The default setup: every enabled coding, preferred in the order zstd,
    /// br, gzip, deflate; default [`Levels`]; a 1 KiB threshold; the default
    /// [`ContentTypes`].
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config::default()),
            predicate: Always,
        }
    }
}

impl<P> CompressionLayer<P> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The codings to offer, most preferred first; the order breaks ties
    /// between codings the client weighs equally. Codings not enabled in
    /// this build, duplicates and `Identity` are dropped.
    pub fn prefer(mut self, codings: &[Coding]) -> Self {
        let mut preference: Vec<Coding> = Vec::new();
        for &coding in codings {
            if coding != Coding::Identity && coding.is_enabled() && !preference.contains(&coding) {
                preference.push(coding);
            }
        }
        self.config().preference = preference;
        self
    }

    /// Stops offering one coding.
    pub fn without(mut self, coding: Coding) -> Self {
        self.config().preference.retain(|c| *c != coding);
        self
    }

    /// Sets every level at once.
    pub fn levels(mut self, levels: Levels) -> Self {
        self.config().levels = levels.clamped();
        self
    }

    /// Sets the zstd level (default 3).
    pub fn zstd_level(mut self, level: i32) -> Self {
        let levels = self.config().levels;
        self.levels(Levels {
            zstd: level,
            ..levels
        })
    }

    /// Sets the brotli quality (default 4).
    pub fn br_level(mut self, quality: u32) -> Self {
        let levels = self.config().levels;
        self.levels(Levels {
            br: quality,
            ..levels
        })
    }

    /// Sets the gzip level (default 6).
    pub fn gzip_level(mut self, level: u32) -> Self {
        let levels = self.config().levels;
        self.levels(Levels {
            gzip: level,
            ..levels
        })
    }

    /// Sets the deflate level (default 6).
    pub fn deflate_level(mut self, level: u32) -> Self {
        let levels = self.config().levels;
        self.levels(Levels {
            deflate: level,
            ..levels
        })
    }

    /// Uses other (usually faster) levels for bodies of known size of at
    /// least `min_size` bytes. Off by default.
    pub fn large_body_levels(mut self, min_size: u64, levels: Levels) -> Self {
        self.config().large = Some((min_size, levels.clamped()));
        self
    }

    /// Bodies smaller than this are sent as they are (default 1024 bytes).
    /// Bodies of unknown length are buffered up to this size before the
    /// decision.
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.config().min_size = bytes;
        self
    }

    /// Bodies of known length up to this size (default 4 MiB) are collected
    /// and compressed in one call, which is faster and gives the response a
    /// `Content-Length`; larger ones are compressed as they stream.
    pub fn one_shot_limit(mut self, bytes: u64) -> Self {
        self.config().one_shot_limit = bytes;
        self
    }

    /// Replaces the list of compressible media types.
    pub fn content_types(mut self, types: ContentTypes) -> Self {
        self.config().content_types = types;
        self
    }

    /// Flushes the encoder after every body frame, so each frame reaches the
    /// client at once (server-sent events, streamed NDJSON), and compresses
    /// `text/event-stream` (skipped otherwise). Off by default: output is
    /// flushed whenever the body waits for more data anyway.
    pub fn flush_every_frame(mut self, enabled: bool) -> Self {
        self.config().flush_every_frame = enabled;
        self
    }

    /// Adds the report's `X-Original-Size`, `X-Compressed-Size` and
    /// `X-Compression-Ratio` headers to responses compressed whole. Off by
    /// default: exact compressed sizes help BREACH-style attacks on
    /// responses that mix secrets with reflected input.
    pub fn size_headers(mut self, enabled: bool) -> Self {
        self.config().size_headers = enabled;
        self
    }

    /// Consults `predicate` for every response the built-in rules would
    /// compress; `false` sends it uncompressed.
    pub fn compress_when<Q: Predicate>(self, predicate: Q) -> CompressionLayer<Q> {
        CompressionLayer {
            config: self.config,
            predicate,
        }
    }
}

impl<S, P: Clone> Layer<S> for CompressionLayer<P> {
    type Service = Compression<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Compression {
            inner,
            config: Arc::clone(&self.config),
            predicate: self.predicate.clone(),
        }
    }
}
