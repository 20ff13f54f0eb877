//! Content codings.

use std::fmt;

use http::HeaderValue;

/// A content coding (RFC 9110 §8.4.1).
///
/// Every variant exists whatever the cargo features; [`Coding::is_enabled`]
/// says whether this build can encode and decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// No transformation.
    Identity,
    /// Zstandard (`zstd`, RFC 8878, with the 8 MiB window of RFC 9659).
    Zstd,
    /// Brotli (`br`, RFC 7932).
    Br,
    /// gzip (`gzip`, also accepted as `x-gzip`, RFC 1952).
    Gzip,
    /// The zlib format (`deflate`, RFC 1950).
    Deflate,
}

impl Coding {
    /// The codings this build can produce, in the default server preference
    /// order: zstd, br, gzip, deflate (see the crate docs, "choosing levels",
    /// for the measurements behind the order).
    pub const DEFAULT_PREFERENCE: &'static [Coding] = &[
        #[cfg(feature = "zstd")]
        Coding::Zstd,
        #[cfg(feature = "br")]
        Coding::Br,
        #[cfg(feature = "gzip")]
        Coding::Gzip,
        #[cfg(feature = "deflate")]
        Coding::Deflate,
    ];

    /// The token as sent in `Content-Encoding`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// The token as a header value.
    pub const fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Parses a coding token, ignoring ASCII case and surrounding whitespace;
    /// `x-gzip` is gzip (RFC 9110 §8.4.1.3). Unknown tokens give `None`.
    pub fn from_token(token: &[u8]) -> Option<Self> {
        let token = token.trim_ascii();
        [
            ("identity", Coding::Identity),
            ("zstd", Coding::Zstd),
            ("br", Coding::Br),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
        ]
        .into_iter()
        .find_map(|(name, coding)| {
            token
                .eq_ignore_ascii_case(name.as_bytes())
                .then_some(coding)
        })
    }

    /// Whether this build supports the coding (identity always; the others
    /// through the cargo features of the same name).
    pub const fn is_enabled(self) -> bool {
        match self {
            Coding::Identity => true,
            Coding::Zstd => cfg!(feature = "zstd"),
            Coding::Br => cfg!(feature = "br"),
            Coding::Gzip => cfg!(feature = "gzip"),
            Coding::Deflate => cfg!(feature = "deflate"),
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_ignore_case_and_accept_x_gzip() {
        assert_eq!(Coding::from_token(b"GZip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token(b" x-gzip "), Some(Coding::Gzip));
        assert_eq!(Coding::from_token(b"BR"), Some(Coding::Br));
        assert_eq!(Coding::from_token(b"compress"), None);
        assert_eq!(Coding::from_token(b""), None);
    }

    #[test]
    fn default_preference_lists_only_enabled_codings() {
        assert!(Coding::DEFAULT_PREFERENCE.iter().all(|c| c.is_enabled()));
    }
}
