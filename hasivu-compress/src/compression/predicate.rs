//! Which responses are compressed: the content-type allow-list, the
//! per-response opt-out and the user's predicate.

use http::response::Parts;

/// Put this in a response's extensions to send it uncompressed, e.g. for
/// responses that reflect user input next to a secret (see "BREACH" in the
/// [module docs](super)).
///
/// ```
/// use hasivu_compress::compression::NoCompression;
///
/// let mut response = http::Response::new("token=…");
/// response.extensions_mut().insert(NoCompression);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoCompression;

/// Decides, per response, whether it may be compressed; consulted after the
/// built-in rules (status, `Content-Encoding`, `no-transform`, content
/// type). Closures `Fn(&http::response::Parts) -> bool` implement it.
pub trait Predicate: Clone {
    /// Whether the response may be compressed.
    fn should_compress(&self, response: &Parts) -> bool;
}

/// The default predicate: every response the built-in rules allow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Always;

impl Predicate for Always {
    fn should_compress(&self, _: &Parts) -> bool {
        true
    }
}

impl<F> Predicate for F
where
    F: Fn(&Parts) -> bool + Clone,
{
    fn should_compress(&self, response: &Parts) -> bool {
        self(response)
    }
}

/// The media types worth compressing.
///
/// The default list is text and structured text: `text/*` (except
/// `text/event-stream`, which is compressed only when flushing per frame),
/// JSON (`application/json`, `application/*+json` such as
/// `application/problem+json`, `application/x-ndjson`), JavaScript, XML
/// (`application/xml`, `application/*+xml`), SVG (`image/svg+xml`), wasm
/// and `application/graphql-response+json`. Images, video, audio, fonts in
/// compressed formats and archives are never on it. Matching ignores case
/// and parameters such as `charset`.
#[derive(Clone, Debug)]
pub struct ContentTypes {
    /// Exact `type/subtype` names.
    exact: Vec<String>,
    /// Top-level types (`text` matches `text/*`).
    types: Vec<String>,
    /// Structured-syntax suffixes (`json` matches `application/*+json`).
    suffixes: Vec<String>,
}

impl Default for ContentTypes {
    fn default() -> Self {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Self {
            exact: owned(&[
                "application/json",
                "application/x-ndjson",
                "application/javascript",
                "application/ecmascript",
                "application/xml",
                "application/wasm",
                "application/manifest+json",
                "image/svg+xml",
            ]),
            types: owned(&["text"]),
            suffixes: owned(&["json", "xml"]),
        }
    }
}

impl ContentTypes {
    /// An empty list: nothing is compressed until types are added.
    pub fn none() -> Self {
        Self {
            exact: Vec::new(),
            types: Vec::new(),
            suffixes: Vec::new(),
        }
    }

    /// Adds an exact media type such as `application/x-protobuf`, a whole
    /// top-level type as `font/*`, or a suffix as `*/*+cbor`.
    pub fn allow(mut self, pattern: &str) -> Self {
        let pattern = pattern.trim().to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix("*/*+") {
            self.suffixes.push(suffix.to_owned());
        } else if let Some(top) = pattern.strip_suffix("/*") {
            self.types.push(top.to_owned());
        } else {
            self.exact.push(pattern);
        }
        self
    }

    /// Whether a `Content-Type` value is on the list.
    pub fn matches(&self, content_type: &str) -> bool {
        let essence = essence(content_type.as_bytes());
        // Byte searches: this runs for every response.
        let Some(slash) = essence.iter().position(|b| *b == b'/') else {
            return false;
        };
        let (top, sub) = (&essence[..slash], &essence[slash + 1..]);
        self.exact
            .iter()
            .any(|e| essence.eq_ignore_ascii_case(e.as_bytes()))
            || self
                .types
                .iter()
                .any(|t| top.eq_ignore_ascii_case(t.as_bytes()))
            || sub.iter().rposition(|b| *b == b'+').is_some_and(|plus| {
                let suffix = &sub[plus + 1..];
                self.suffixes
                    .iter()
                    .any(|s| suffix.eq_ignore_ascii_case(s.as_bytes()))
            })
    }
}

/// The media type without parameters: `text/html; charset=utf-8` → `text/html`.
fn essence(content_type: &[u8]) -> &[u8] {
    let end = content_type
        .iter()
        .position(|b| *b == b';')
        .unwrap_or(content_type.len());
    content_type[..end].trim_ascii()
}

/// Whether a `Content-Type` is `text/event-stream`.
pub(crate) fn is_event_stream(content_type: &str) -> bool {
    essence(content_type.as_bytes()).eq_ignore_ascii_case(b"text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list() {
        let types = ContentTypes::default();
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            "application/vnd.api+json",
            "application/x-ndjson",
            "text/html; charset=utf-8",
            "text/css",
            "text/plain",
            "text/event-stream",
            "application/javascript",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
        ] {
            assert!(types.matches(yes), "{yes} should be compressible");
        }
        for no in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/mpeg",
            "application/zip",
            "application/gzip",
            "application/octet-stream",
            "font/woff2",
            "application/grpc",
            "",
            "json",
        ] {
            assert!(!types.matches(no), "{no} should not be compressible");
        }
    }

    #[test]
    fn allow_adds_patterns() {
        let types = ContentTypes::none()
            .allow("application/x-protobuf")
            .allow("font/*")
            .allow("*/*+cbor");
        assert!(types.matches("application/x-protobuf"));
        assert!(types.matches("font/ttf"));
        assert!(types.matches("application/senml+cbor"));
        assert!(!types.matches("application/json"));
    }

    #[test]
    fn event_stream() {
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(!is_event_stream("text/plain"));
    }
}
