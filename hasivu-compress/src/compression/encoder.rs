//! The codecs: one-shot compression with per-thread reusable contexts, and
//! streaming encoders for bodies of unknown length.
//!
//! Nothing here knows about HTTP; the body and the future call in.

// A build without any coding still compiles the layer (it then only adds
// `Vary`); the codec plumbing is dead code there.
#![cfg_attr(
    not(any(
        feature = "zstd",
        feature = "br",
        feature = "gzip",
        feature = "deflate"
    )),
    allow(dead_code, unreachable_code, unused_variables)
)]

use std::io;
#[cfg(any(
    feature = "zstd",
    feature = "br",
    feature = "gzip",
    feature = "deflate"
))]
use std::io::Write;

use bytes::Bytes;

use super::Levels;
use crate::Coding;

/// zstd window cap for HTTP (RFC 9659: decoders may refuse windows over
/// 8 MiB; Chrome does).
#[cfg(feature = "zstd")]
const ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// Brotli window for streamed bodies (512 KiB, as ngx_brotli): bounds the
/// memory a streamed response holds.
#[cfg(feature = "br")]
const BR_STREAM_WINDOW_LOG: u8 = 19;

/// Compresses `input` whole. Codec contexts (zstd, zlib) are kept per thread
/// and reset between calls instead of being allocated for every response.
pub(crate) fn compress_once(coding: Coding, levels: &Levels, input: &[u8]) -> io::Result<Vec<u8>> {
    match coding {
        #[cfg(feature = "zstd")]
        Coding::Zstd => zstd_once(levels.zstd, input),
        #[cfg(feature = "br")]
        Coding::Br => br_once(levels.br, input),
        #[cfg(feature = "gzip")]
        Coding::Gzip => flate_once(Format::Gzip, levels.gzip, input),
        #[cfg(feature = "deflate")]
        Coding::Deflate => flate_once(Format::Zlib, levels.deflate, input),
        _ => {
            let _ = (levels, input);
            Err(unsupported(coding))
        }
    }
}

fn unsupported(coding: Coding) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("coding {coding} is not enabled in this build"),
    )
}

#[cfg(feature = "zstd")]
fn zstd_once(level: i32, input: &[u8]) -> io::Result<Vec<u8>> {
    use std::cell::RefCell;
    use zstd::bulk::Compressor;
    use zstd::zstd_safe::CParameter;

    thread_local! {
        static CONTEXT: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let reuse = matches!(&*slot, Some((l, _)) if *l == level);
        if !reuse {
            let mut compressor = Compressor::new(level)?;
            // zstd shrinks the window to the input it is given whole; only
            // levels above 19 would otherwise pass RFC 9659's cap.
            if level > 19 {
                compressor.set_parameter(CParameter::WindowLog(ZSTD_MAX_WINDOW_LOG))?;
            }
            *slot = Some((level, compressor));
        }
        let (_, compressor) = slot.as_mut().expect("context was just set");
        compressor.compress(input)
    })
}

/// zstd window for streamed bodies (512 KiB): the window is allocated per
/// response, and a stream's frames rarely repeat across more than that.
#[cfg(feature = "zstd")]
const ZSTD_STREAM_WINDOW_LOG: u32 = 19;

/// Brotli windows: 1 MiB for bodies compressed whole (the compressor is
/// kept per thread, so its window is memory held for good), 512 KiB for
/// streamed ones (as ngx_brotli).
#[cfg(feature = "br")]
const BR_ONE_SHOT_WINDOW_LOG: u8 = 20;

#[cfg(feature = "br")]
fn br_config(quality: u32, window_log: u8) -> io::Result<mbrotli::EncoderConfig> {
    use mbrotli::{Quality, Window};
    let quality = match quality {
        0 => Quality::Q0,
        1 => Quality::Q1,
        2 => Quality::Q2,
        3 => Quality::Q3,
        4 => Quality::Q4,
        5 => Quality::Q5,
        6 => Quality::Q6,
        7 => Quality::Q7,
        8 => Quality::Q8,
        9 => Quality::Q9,
        10 => Quality::Q10,
        _ => Quality::Q11,
    };
    let window = Window::standard(window_log).map_err(io::Error::other)?;
    Ok(mbrotli::EncoderConfig::default()
        .with_quality(quality)
        .with_window(window))
}

/// Brotli through mbrotli, a safe-Rust port of Google's encoder that is
/// markedly faster than the `brotli` crate at the low qualities used for
/// dynamic content, with a compressor that keeps its working memory between
/// payloads.
#[cfg(feature = "br")]
fn br_once(quality: u32, input: &[u8]) -> io::Result<Vec<u8>> {
    use mbrotli::Compressor;
    use std::cell::RefCell;

    thread_local! {
        static CONTEXT: RefCell<Option<(u32, Compressor)>> = const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some((q, _)) if *q == quality) {
            let compressor = Compressor::new(br_config(quality, BR_ONE_SHOT_WINDOW_LOG)?)
                .map_err(io::Error::other)?;
            *slot = Some((quality, compressor));
        }
        let (_, compressor) = slot.as_mut().expect("context was just set");
        compressor.compress(input).map_err(io::Error::other)
    })
}

#[cfg(any(feature = "gzip", feature = "deflate"))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    #[cfg(feature = "gzip")]
    Gzip,
    #[cfg(feature = "deflate")]
    Zlib,
}

#[cfg(any(feature = "gzip", feature = "deflate"))]
fn flate_once(format: Format, level: u32, input: &[u8]) -> io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    use std::cell::RefCell;

    thread_local! {
        static CONTEXT: RefCell<Option<(Format, u32, Compress)>> = const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &mut *slot {
            Some((f, l, compress)) if *f == format && *l == level => compress.reset(),
            _ => {
                let level_ = Compression::new(level.min(9));
                let compress = match format {
                    #[cfg(feature = "gzip")]
                    Format::Gzip => Compress::new_gzip(level_, 15),
                    #[cfg(feature = "deflate")]
                    Format::Zlib => Compress::new(level_, true),
                };
                *slot = Some((format, level, compress));
            }
        }
        let (_, _, compress) = slot.as_mut().expect("context was just set");
        // deflateBound plus the gzip wrapper: one call normally suffices.
        let bound = input.len() + (input.len() >> 12) + (input.len() >> 14) + 64;
        let mut out = Vec::with_capacity(bound);
        loop {
            let consumed = compress.total_in() as usize;
            let status = compress
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            match status {
                Status::StreamEnd => return Ok(out),
                Status::Ok | Status::BufError => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

/// A streaming encoder writing into an in-memory buffer that the body drains
/// after every call.
pub(crate) enum StreamEncoder {
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    #[cfg(feature = "br")]
    Br(BrEncoder),
    #[cfg(feature = "gzip")]
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    #[cfg(feature = "deflate")]
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    /// Keeps the enum inhabited-in-type when no coding is enabled.
    #[cfg(not(any(
        feature = "zstd",
        feature = "br",
        feature = "gzip",
        feature = "deflate"
    )))]
    None(std::convert::Infallible),
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamEncoder")
    }
}

impl StreamEncoder {
    pub(crate) fn new(coding: Coding, levels: &Levels) -> io::Result<Self> {
        match coding {
            #[cfg(feature = "zstd")]
            Coding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                encoder.window_log(ZSTD_STREAM_WINDOW_LOG)?;
                Ok(Self::Zstd(encoder))
            }
            #[cfg(feature = "br")]
            Coding::Br => Ok(Self::Br(BrEncoder::new(levels.br)?)),
            #[cfg(feature = "gzip")]
            Coding::Gzip => Ok(Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip.min(9)),
            ))),
            #[cfg(feature = "deflate")]
            Coding::Deflate => Ok(Self::Deflate(flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.deflate.min(9)),
            ))),
            _ => {
                let _ = levels;
                Err(unsupported(coding))
            }
        }
    }

    /// Feeds input; output, if any, is left for [`take`](Self::take).
    pub(crate) fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match self {
            #[cfg(feature = "zstd")]
            Self::Zstd(e) => e.write_all(input),
            #[cfg(feature = "br")]
            Self::Br(e) => e.run(input, mbrotli::Operation::Process),
            #[cfg(feature = "gzip")]
            Self::Gzip(e) => e.write_all(input),
            #[cfg(feature = "deflate")]
            Self::Deflate(e) => e.write_all(input),
            #[cfg(not(any(
                feature = "zstd",
                feature = "br",
                feature = "gzip",
                feature = "deflate"
            )))]
            Self::None(never) => match *never {},
        }
    }

    /// Emits everything written so far as complete, decodable output.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "zstd")]
            Self::Zstd(e) => e.flush(),
            #[cfg(feature = "br")]
            Self::Br(e) => e.run(&[], mbrotli::Operation::Flush),
            #[cfg(feature = "gzip")]
            Self::Gzip(e) => e.flush(),
            #[cfg(feature = "deflate")]
            Self::Deflate(e) => e.flush(),
            #[cfg(not(any(
                feature = "zstd",
                feature = "br",
                feature = "gzip",
                feature = "deflate"
            )))]
            Self::None(never) => match *never {},
        }
    }

    /// Ends the stream; the rest of the output is left for `take`.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "zstd")]
            Self::Zstd(e) => e.do_finish(),
            #[cfg(feature = "br")]
            Self::Br(e) => e.run(&[], mbrotli::Operation::Finish),
            #[cfg(feature = "gzip")]
            Self::Gzip(e) => e.try_finish(),
            #[cfg(feature = "deflate")]
            Self::Deflate(e) => e.try_finish(),
            #[cfg(not(any(
                feature = "zstd",
                feature = "br",
                feature = "gzip",
                feature = "deflate"
            )))]
            Self::None(never) => match *never {},
        }
    }

    /// The output produced since the last call.
    pub(crate) fn take(&mut self) -> Bytes {
        let buffer: &mut Vec<u8> = match self {
            #[cfg(feature = "zstd")]
            Self::Zstd(e) => e.get_mut(),
            #[cfg(feature = "br")]
            Self::Br(e) => &mut e.output,
            #[cfg(feature = "gzip")]
            Self::Gzip(e) => e.get_mut(),
            #[cfg(feature = "deflate")]
            Self::Deflate(e) => e.get_mut(),
            #[cfg(not(any(
                feature = "zstd",
                feature = "br",
                feature = "gzip",
                feature = "deflate"
            )))]
            Self::None(never) => match *never {},
        };
        Bytes::from(std::mem::take(buffer))
    }
}

/// A brotli stream with the output it produced so far.
#[cfg(feature = "br")]
pub(crate) struct BrEncoder {
    session: mbrotli::EncoderSessionOwned,
    scratch: Box<[u8]>,
    output: Vec<u8>,
}

#[cfg(feature = "br")]
impl BrEncoder {
    fn new(quality: u32) -> io::Result<Self> {
        let compressor = mbrotli::Compressor::new(br_config(quality, BR_STREAM_WINDOW_LOG)?)
            .map_err(io::Error::other)?;
        Ok(Self {
            session: compressor
                .into_session(mbrotli::StreamConfig::default())
                .map_err(io::Error::other)?,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            output: Vec::new(),
        })
    }

    /// Feeds `input` with `operation` until the session wants more input
    /// (or, for `Finish`, has finished), collecting the output.
    fn run(&mut self, mut input: &[u8], operation: mbrotli::Operation) -> io::Result<()> {
        use mbrotli::{EncoderStatus, Operation};
        loop {
            let progress = self
                .session
                .process(input, &mut self.scratch, operation)
                .map_err(io::Error::other)?;
            input = &input[progress.consumed..];
            self.output
                .extend_from_slice(&self.scratch[..progress.produced]);
            let done = match progress.status {
                EncoderStatus::NeedsOutput => false,
                EncoderStatus::Finished => true,
                EncoderStatus::NeedsInput => {
                    input.is_empty() && !matches!(operation, Operation::Finish)
                }
            };
            if done {
                return Ok(());
            }
        }
    }
}
