//! Content codings of request bodies: which coding a body declares, and
//! bounded decoding of the ones the shield reads (`gzip` and `deflate`,
//! feature `gzip`). Pure: no tower, no I/O.
//!
//! The decoded output stops at the body limit, and at most the limit of
//! input is decoded: a bomb (10 MB of zeros in 10 KB) costs the limit of
//! output and the CPU time to produce it. The inner service still gets the
//! bytes as sent; only the shield reads the decoded ones.

/// What a body's `Content-Encoding` asks of the shield.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// None, or `identity`: read as sent.
    Identity,
    /// `gzip` (or `x-gzip`): decoded, then read.
    #[cfg(feature = "gzip")]
    Gzip,
    /// `deflate` (the zlib format, RFC 9110 §8.4.1.2): decoded, then read.
    #[cfg(feature = "gzip")]
    Deflate,
    /// A coding the shield does not decode: `br`, `zstd`, stacked codings,
    /// unknown ones (and `gzip` and `deflate` without the feature).
    Undecoded,
}

impl Coding {
    /// The coding of a body whose `Content-Encoding` header lines are
    /// `values` (a list each, comma-separated). Only one coding besides
    /// `identity` is decoded: stacked codings are rare in requests and
    /// each would need its own bounded stage.
    pub(crate) fn of<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut found = Coding::Identity;
        for value in values {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                    continue;
                }
                if found != Coding::Identity {
                    return Coding::Undecoded;
                }
                found = Self::one(token);
            }
        }
        found
    }

    fn one(token: &[u8]) -> Self {
        #[cfg(feature = "gzip")]
        {
            if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                return Coding::Gzip;
            }
            if token.eq_ignore_ascii_case(b"deflate") {
                return Coding::Deflate;
            }
        }
        let _ = token;
        Coding::Undecoded
    }
}

/// What decoding gave.
#[cfg(feature = "gzip")]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The decoded bytes, at most the limit.
    pub(crate) bytes: Vec<u8>,
    /// Whether the output reached the limit: the rest was not decoded.
    pub(crate) truncated: bool,
    /// Whether the input is not a valid stream of the coding (corrupt,
    /// not what it claims, trailing bytes). Input cut short by the reader's
    /// own limit is not invalid, only truncated.
    pub(crate) invalid: bool,
}

/// Decodes `input` (cut to `limit` bytes) into at most `limit` bytes.
/// `cut` says the input was cut short by the reader, so its end is no
/// error.
#[cfg(feature = "gzip")]
pub(crate) fn decode(coding: Coding, input: &[u8], cut: bool, limit: usize) -> Decoded {
    let cut = cut || input.len() > limit;
    let input = &input[..input.len().min(limit)];
    match coding {
        Coding::Gzip => bounded(flate2::bufread::MultiGzDecoder::new(input), cut, limit),
        Coding::Deflate => bounded(flate2::bufread::ZlibDecoder::new(input), cut, limit),
        Coding::Identity | Coding::Undecoded => Decoded {
            bytes: Vec::new(),
            truncated: false,
            invalid: true,
        },
    }
}

/// Reads `reader` into at most `limit` bytes, growing the buffer by
/// doubling but never past `limit + 1` (one byte more tells that the
/// output went on).
#[cfg(feature = "gzip")]
fn bounded(mut reader: impl std::io::Read, cut: bool, limit: usize) -> Decoded {
    use std::io::ErrorKind;

    let cap = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(cap.min(8 * 1024));
    let mut invalid = false;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= cap {
                break;
            }
            out.reserve_exact(out.capacity().max(1024).min(cap - out.len()));
        }
        let start = out.len();
        out.resize(out.capacity(), 0);
        match reader.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                break;
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == ErrorKind::Interrupted => out.truncate(start),
            Err(_) => {
                out.truncate(start);
                // The end of input the reader cut is no fault of the body.
                invalid = !cut;
                break;
            }
        }
    }
    let truncated = out.len() > limit || cut;
    out.truncate(limit);
    Decoded {
        bytes: out,
        truncated,
        invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> Coding {
        Coding::of(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn codings_from_headers() {
        assert_eq!(of(&[]), Coding::Identity);
        assert_eq!(of(&["identity"]), Coding::Identity);
        assert_eq!(of(&["br"]), Coding::Undecoded);
        assert_eq!(of(&["zstd"]), Coding::Undecoded);
        assert_eq!(of(&["x-unknown"]), Coding::Undecoded);
        assert_eq!(of(&["gzip, gzip"]), Coding::Undecoded);
        assert_eq!(of(&["gzip", "deflate"]), Coding::Undecoded);
        #[cfg(feature = "gzip")]
        {
            assert_eq!(of(&["gzip"]), Coding::Gzip);
            assert_eq!(of(&[" X-GZIP "]), Coding::Gzip);
            assert_eq!(of(&["identity, deflate"]), Coding::Deflate);
        }
        #[cfg(not(feature = "gzip"))]
        assert_eq!(of(&["gzip"]), Coding::Undecoded);
    }

    #[cfg(feature = "gzip")]
    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn a_bomb_decodes_to_the_limit_and_no_further() {
        // 10 MB of zeros in ten members of 1 MB, about 10 KB.
        let bomb = gzip(&vec![0u8; 1 << 20]).repeat(10);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let decoded = decode(Coding::Gzip, &bomb, false, 64 * 1024);
        assert_eq!(decoded.bytes.len(), 64 * 1024);
        assert!(decoded.bytes.capacity() <= 64 * 1024 + 1);
        assert!(decoded.truncated);
        assert!(!decoded.invalid);
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn bodies_decode_whole_or_say_why_not() {
        let body = br#"{"a":"b"}"#;
        let sent = gzip(body);
        let whole = decode(Coding::Gzip, &sent, false, 1024);
        assert_eq!(
            whole,
            Decoded {
                bytes: body.to_vec(),
                truncated: false,
                invalid: false,
            }
        );
        // Cut by the reader: what decoded, truncated, not invalid.
        let cut = decode(Coding::Gzip, &sent[..sent.len() - 4], true, 1024);
        assert!(cut.truncated && !cut.invalid);
        // The same bytes as the whole body: invalid.
        let short = decode(Coding::Gzip, &sent[..sent.len() - 4], false, 1024);
        assert!(short.invalid);
        // Not gzip at all, or gzip followed by garbage.
        assert!(decode(Coding::Gzip, body, false, 1024).invalid);
        let mut trailing = sent.clone();
        trailing.extend_from_slice(b"garbage");
        let decoded = decode(Coding::Gzip, &trailing, false, 1024);
        assert!(decoded.invalid);
        assert_eq!(decoded.bytes, body, "what decoded is kept");
        // Output stops at the limit.
        let big = gzip(&[b'a'; 4096]);
        assert!(big.len() < 64);
        let limited = decode(Coding::Gzip, &big, false, 64);
        assert_eq!(limited.bytes, [b'a'; 64]);
        assert!(limited.truncated && !limited.invalid);
        // Input past the limit is not decoded: what it gave is kept.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let sent = gzip(&noise);
        let partial = decode(Coding::Gzip, &sent, false, 2048);
        assert!(partial.truncated && !partial.invalid);
        assert!(partial.bytes.len() <= 2048);
        assert_eq!(partial.bytes, noise[..partial.bytes.len()]);
    }
}
