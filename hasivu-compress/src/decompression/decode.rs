//! Bounded, incremental decoding of content-coded bytes (no I/O, no tower).
//!
//! Each coding is undone by a write-based streaming decoder whose output goes
//! into a [`Capped`] sink. The sink refuses a write that would pass the limit,
//! so a decoder stops as soon as its output would exceed it: a bomb costs at
//! most `limit` bytes of output and the CPU time to produce them. Stacked
//! codings are chained, each stage with its own cap, so an intermediate
//! stage cannot run unbounded either (a stream of empty deflate blocks decodes
//! to nothing but still costs CPU).

use std::{fmt, io, io::Write};

use bytes::Bytes;

#[cfg(feature = "zstd")]
use super::zstd_frames::Frames;
use crate::Coding;

/// The most codings a `Content-Encoding` list may stack.
pub(crate) const MAX_CODINGS: usize = 4;

/// The largest zstd window accepted, as a power of two: 8 MiB, the limit
/// RFC 9659 sets for the `zstd` content coding. A frame that asks for a
/// bigger window is refused before the decoder allocates it.
#[cfg(feature = "zstd")]
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Size of brotli's output buffer between the decoder and the sink.
#[cfg(feature = "br")]
const BROTLI_BUFFER: usize = 16 * 1024;

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The decoded bytes (of any stage) would pass the limit.
    TooLarge,
    /// The input is not a valid, complete stream of the codings: corrupt,
    /// truncated or followed by trailing bytes.
    Invalid,
    /// A decoder could not be set up (allocation or parameter failure in
    /// the codec library); nothing to do with the input.
    Setup,
}

/// Decodes a body encoded with a list of codings into at most `limit` bytes.
pub(crate) struct Decoder {
    /// The stage for the last coding applied, which sees the input first.
    first: Box<Stage>,
}

impl Decoder {
    /// A decoder for a body whose `Content-Encoding` lists `codings` in the
    /// order they were applied (so they are undone in reverse). `codings`
    /// holds enabled codings other than identity, at most [`MAX_CODINGS`].
    pub(crate) fn new(codings: &[Coding], limit: usize) -> Result<Self, DecodeError> {
        // Build from the innermost stage (the first coding applied, whose
        // output is the decoded body) outwards.
        let mut next = Next::Out(Vec::new());
        for &coding in codings {
            let sink = Capped {
                next,
                written: 0,
                limit,
                over: false,
            };
            next = Next::Stage(Box::new(Stage::new(coding, sink)?));
        }
        match next {
            Next::Stage(first) => Ok(Self { first }),
            // No coding to undo: callers pass the body through instead.
            Next::Out(_) => Err(DecodeError::Setup),
        }
    }

    /// Feeds the next chunk of encoded bytes.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        match self.first.write_all(chunk) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.classify()),
        }
    }

    /// Ends the input: checks every stage ended on a complete stream and
    /// returns the decoded bytes.
    pub(crate) fn finish(mut self) -> Result<Bytes, DecodeError> {
        match finish_chain(&mut self.first) {
            Ok(decoded) => Ok(Bytes::from(decoded)),
            Err(_) => Err(self.classify()),
        }
    }

    /// After an I/O error, tells a cap overrun (seen through the sinks' flags,
    /// as codecs may wrap or replace the sink's error) from bad input.
    fn classify(&self) -> DecodeError {
        if self.first.sink().over() {
            DecodeError::TooLarge
        } else {
            DecodeError::Invalid
        }
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

/// Finishes `stage`, then the stages after it, and takes the decoded bytes.
fn finish_chain(stage: &mut Stage) -> io::Result<Vec<u8>> {
    stage.finish()?;
    match &mut stage.sink_mut().next {
        Next::Out(out) => Ok(std::mem::take(out)),
        Next::Stage(next) => finish_chain(next),
    }
}

/// One streaming decoder, writing into a capped sink.
#[allow(
    clippy::large_enum_variant,
    reason = "every stage is boxed once already, so the brotli state's size costs nothing"
)]
enum Stage {
    #[cfg(feature = "gzip")]
    Gzip(flate2::write::MultiGzDecoder<Capped>),
    #[cfg(feature = "deflate")]
    Deflate(flate2::write::ZlibDecoder<Capped>),
    #[cfg(feature = "br")]
    Br(brotli_decompressor::DecompressorWriter<Capped>),
    #[cfg(feature = "zstd")]
    Zstd(ZstdStage),
    /// Keeps the matches below well-formed in builds without any codec.
    #[cfg(not(any(
        feature = "gzip",
        feature = "deflate",
        feature = "br",
        feature = "zstd"
    )))]
    #[allow(dead_code)]
    None(std::convert::Infallible, Capped),
}

impl Stage {
    fn new(coding: Coding, sink: Capped) -> Result<Self, DecodeError> {
        match coding {
            #[cfg(feature = "gzip")]
            // Multi-member: RFC 1952 allows concatenated members, each of
            // which has its CRC checked.
            Coding::Gzip => Ok(Stage::Gzip(flate2::write::MultiGzDecoder::new(sink))),
            #[cfg(feature = "deflate")]
            // HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2).
            Coding::Deflate => Ok(Stage::Deflate(flate2::write::ZlibDecoder::new(sink))),
            #[cfg(feature = "br")]
            Coding::Br => Ok(Stage::Br(brotli_decompressor::DecompressorWriter::new(
                sink,
                BROTLI_BUFFER,
            ))),
            #[cfg(feature = "zstd")]
            Coding::Zstd => {
                let mut decoder =
                    zstd::stream::write::Decoder::new(sink).map_err(|_| DecodeError::Setup)?;
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|_| DecodeError::Setup)?;
                Ok(Stage::Zstd(ZstdStage {
                    decoder,
                    frames: Frames::default(),
                    frame_start: 0,
                }))
            }
            // Identity and disabled codings are filtered out by the caller.
            _ => {
                drop(sink);
                Err(DecodeError::Setup)
            }
        }
    }

    fn sink(&self) -> &Capped {
        match self {
            #[cfg(feature = "gzip")]
            Stage::Gzip(d) => d.get_ref(),
            #[cfg(feature = "deflate")]
            Stage::Deflate(d) => d.get_ref(),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.get_ref(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.decoder.get_ref(),
            #[cfg(not(any(
                feature = "gzip",
                feature = "deflate",
                feature = "br",
                feature = "zstd"
            )))]
            Stage::None(never, _) => match *never {},
        }
    }

    fn sink_mut(&mut self) -> &mut Capped {
        match self {
            #[cfg(feature = "gzip")]
            Stage::Gzip(d) => d.get_mut(),
            #[cfg(feature = "deflate")]
            Stage::Deflate(d) => d.get_mut(),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.get_mut(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.decoder.get_mut(),
            #[cfg(not(any(
                feature = "gzip",
                feature = "deflate",
                feature = "br",
                feature = "zstd"
            )))]
            Stage::None(never, _) => match *never {},
        }
    }

    /// Flushes what the decoder holds and fails unless the input ended on a
    /// complete stream (each codec reports truncation here).
    fn finish(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "gzip")]
            Stage::Gzip(d) => d.try_finish(),
            #[cfg(feature = "deflate")]
            Stage::Deflate(d) => d.try_finish(),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.close(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.decoder.do_finish(),
            #[cfg(not(any(
                feature = "gzip",
                feature = "deflate",
                feature = "br",
                feature = "zstd"
            )))]
            Stage::None(never, _) => match *never {},
        }
    }
}

impl Write for Stage {
    // Trailing bytes after a complete stream show up as an error here: the
    // flate2 and brotli writers accept nothing after the end (`write_all`
    // then fails with `WriteZero`), gzip and zstd read them as the header of
    // a further member or frame, which fails or stays incomplete.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(feature = "gzip")]
            Stage::Gzip(d) => d.write(buf),
            #[cfg(feature = "deflate")]
            Stage::Deflate(d) => d.write(buf),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.write(buf),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.write(buf),
            #[cfg(not(any(
                feature = "gzip",
                feature = "deflate",
                feature = "br",
                feature = "zstd"
            )))]
            Stage::None(never, _) => {
                let _ = buf;
                match *never {}
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "gzip")]
            Stage::Gzip(d) => d.flush(),
            #[cfg(feature = "deflate")]
            Stage::Deflate(d) => d.flush(),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.flush(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.decoder.flush(),
            #[cfg(not(any(
                feature = "gzip",
                feature = "deflate",
                feature = "br",
                feature = "zstd"
            )))]
            Stage::None(never, _) => match *never {},
        }
    }
}

/// The zstd decoder, and the framing of its input read alongside: at the
/// end of each frame, the bytes it decoded are checked against the size its
/// header declares (see [`Frames`] for why libzstd's check is not enough).
#[cfg(feature = "zstd")]
struct ZstdStage {
    decoder: zstd::stream::write::Decoder<'static, Capped>,
    frames: Frames,
    /// What the sink had been given when the current frame started.
    frame_start: usize,
}

#[cfg(feature = "zstd")]
impl ZstdStage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let (read, end) = self.frames.advance(rest);
            self.decoder.write_all(&rest[..read])?;
            rest = &rest[read..];
            if let Some(declared) = end {
                // Everything the frame decodes to reaches the sink.
                self.decoder.flush()?;
                let written = self.decoder.get_ref().written;
                let decoded = written - self.frame_start;
                self.frame_start = written;
                if declared.is_some_and(|declared| declared != decoded as u64) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a zstd frame decoded to another size than it declares",
                    ));
                }
            }
        }
        Ok(buf.len())
    }
}

/// Where a stage's output goes.
enum Next {
    /// The decoded body.
    Out(Vec<u8>),
    /// The stage undoing the previous coding.
    Stage(Box<Stage>),
}

/// A sink that takes at most `limit` bytes and then refuses every write.
struct Capped {
    next: Next,
    written: usize,
    limit: usize,
    /// Set when a write was refused for the cap; read back after the codec
    /// returns an error, whatever error it returns.
    over: bool,
}

impl Capped {
    /// Whether this sink or any later one refused a write for its cap.
    fn over(&self) -> bool {
        self.over
            || match &self.next {
                Next::Out(_) => false,
                Next::Stage(stage) => stage.sink().over(),
            }
    }
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // All or nothing, so that a body of exactly `limit` bytes passes and
        // one byte more does not.
        if self.over || buf.len() > self.limit - self.written {
            self.over = true;
            return Err(io::Error::other("decoded bytes exceed the limit"));
        }
        match &mut self.next {
            Next::Out(out) => {
                reserve_within(out, buf.len(), self.limit);
                out.extend_from_slice(buf);
            }
            Next::Stage(stage) => stage.write_all(buf)?,
        }
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.next {
            Next::Out(_) => Ok(()),
            Next::Stage(stage) => stage.flush(),
        }
    }
}

/// Grows `out` for `extra` more bytes, doubling as `Vec` would but never
/// past `limit`, so the capacity stays within the cap.
fn reserve_within(out: &mut Vec<u8>, extra: usize, limit: usize) {
    let needed = out.len() + extra;
    if needed > out.capacity() {
        let target = needed
            .max(out.capacity().saturating_mul(2))
            .max(8 * 1024)
            .min(limit)
            .max(needed);
        out.reserve_exact(target - out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_never_passes_the_limit() {
        let mut out = Vec::new();
        let limit = 100_000;
        let mut total = 0;
        while total + 3000 <= limit {
            reserve_within(&mut out, 3000, limit);
            out.extend_from_slice(&[0; 3000]);
            total += 3000;
            assert!(out.capacity() <= limit);
        }
    }

    /// Decodes `body` fed in pieces of `chunk` bytes (0: at once).
    #[cfg(feature = "zstd")]
    fn zstd_in_pieces(body: &[u8], chunk: usize) -> Result<Bytes, DecodeError> {
        let mut decoder = Decoder::new(&[Coding::Zstd], 1 << 20)?;
        for piece in body.chunks(if chunk == 0 { body.len() } else { chunk }) {
            decoder.write(piece)?;
        }
        decoder.finish()
    }

    /// A frame that declares more content than its blocks hold is refused
    /// however its bytes arrive. libzstd's streaming decoder skips the
    /// content-size check when a frame ends with an empty last block, so
    /// the same body was refused whole and accepted (empty, or short) in
    /// pieces (found by the `compress_decode` fuzz target).
    #[cfg(feature = "zstd")]
    #[test]
    fn a_zstd_frame_shorter_than_it_declares_is_refused_however_it_arrives() {
        // Magic, single-segment header declaring 4 bytes, one empty raw
        // last block.
        let empty = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x04, 0x01, 0x00, 0x00];
        // The same header, a raw block of 2 bytes, then an empty last block.
        let short = [
            0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x04, 0x10, 0x00, 0x00, b'h', b'i', 0x01, 0x00, 0x00,
        ];
        for body in [&empty[..], &short[..]] {
            for chunk in 0..=body.len() {
                assert_eq!(
                    zstd_in_pieces(body, chunk),
                    Err(DecodeError::Invalid),
                    "{body:02x?} in pieces of {chunk}"
                );
            }
        }
        // Declared sizes that are met still pass, in any pieces; so do
        // frames that declare none, and several frames in a row.
        let exact = [
            0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x02, 0x10, 0x00, 0x00, b'h', b'i', 0x01, 0x00, 0x00,
        ];
        let mut two = zstd::encode_all(&b"hello "[..], 3).unwrap();
        two.extend(zstd::encode_all(&b"world"[..], 3).unwrap());
        two.extend_from_slice(&exact);
        for chunk in 0..=two.len() {
            assert_eq!(
                zstd_in_pieces(&exact, chunk.min(exact.len())).unwrap(),
                &b"hi"[..]
            );
            assert_eq!(zstd_in_pieces(&two, chunk).unwrap(), &b"hello worldhi"[..]);
        }
    }

    #[test]
    fn empty_coding_list_is_a_setup_error() {
        assert_eq!(Decoder::new(&[], 10).err(), Some(DecodeError::Setup));
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn chunked_input_gives_the_same_output() {
        use flate2::{Compression, write::GzEncoder};
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&data).unwrap();
        let encoded = encoder.finish().unwrap();
        for chunk in [1, 7, 4096, encoded.len()] {
            let mut decoder = Decoder::new(&[Coding::Gzip], data.len()).unwrap();
            for piece in encoded.chunks(chunk) {
                decoder.write(piece).unwrap();
            }
            assert_eq!(decoder.finish().unwrap(), data);
        }
    }
}
