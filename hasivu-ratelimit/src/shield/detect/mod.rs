//! Detectors: what a request looks like to the shield ([`Inspection`]),
//! what a detector reports ([`Finding`]), and the built-in detectors.
//! Pure: no tower, no I/O.

mod agents;
pub(crate) mod decode;
mod rapid;
mod sqli;
mod traversal;
mod unusual;
mod xss;

use std::{borrow::Cow, net::IpAddr, sync::Arc};

pub use agents::UserAgents;
pub use rapid::RapidRequests;
pub use sqli::SqlInjection;
pub use traversal::PathTraversal;
pub use unusual::{DistinctPaths, NotFoundRate, ProbePaths};
pub use xss::Xss;

/// A sign of abuse: a weighted score and a reason code (`sqli`, `xss`,
/// `traversal`, `scanner_agent`, `bot_agent`, `rapid_requests`,
/// `probe_path`, `not_found_rate`, `distinct_paths`, or your own).
///
/// ```
/// use hasivu_ratelimit::shield::Finding;
///
/// let finding = Finding::new("trace_method", 5);
/// assert_eq!((finding.reason, finding.score), ("trace_method", 5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    /// Added to the request's score.
    pub score: u32,
    /// A short, stable code for logs and metric labels.
    pub reason: &'static str,
}

impl Finding {
    /// A finding of `reason` worth `score`.
    pub const fn new(reason: &'static str, score: u32) -> Self {
        Self { score, reason }
    }
}

/// Looks at a request and reports a sign of abuse.
///
/// Detectors run on every request that is not allow-listed or already
/// blocked, in order, all of them (stateful ones count every request);
/// their scores add up. [`observe`](Self::observe) sees the inner
/// service's answer, for signs that build up over answers (the 404 rate).
/// Detectors are shared by all clones of the layer behind an `Arc`, so
/// they keep their state in themselves (with interior mutability) and need
/// not be `Clone`.
///
/// Closures `Fn(&Inspection<'_>) -> Option<Finding>` are detectors:
///
/// ```
/// use hasivu_ratelimit::shield::{Detector, Finding, Inspection};
///
/// let no_trace = |request: &Inspection<'_>| {
///     (request.method() == "TRACE").then_some(Finding::new("trace_method", 5))
/// };
/// assert!(no_trace.inspect(&Inspection::new("TRACE", "/")).is_some());
/// assert!(no_trace.inspect(&Inspection::new("GET", "/")).is_none());
/// ```
pub trait Detector: Send + Sync + 'static {
    /// The finding for a request, if any.
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding>;

    /// Sees the status of the inner service's answer to a request of `ip`
    /// that was let through. Does nothing by default.
    fn observe(&self, ip: IpAddr, status: u16) {
        let _ = (ip, status);
    }
}

impl<F> Detector for F
where
    F: Fn(&Inspection<'_>) -> Option<Finding> + Send + Sync + 'static,
{
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        self(input)
    }
}

impl<D: Detector + ?Sized> Detector for Arc<D> {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        (**self).inspect(input)
    }

    fn observe(&self, ip: IpAddr, status: u16) {
        (**self).observe(ip, status);
    }
}

/// How much of a request is inspected. Input beyond the bounds is not
/// looked at (and counted in `hasivu_shield_uninspected_total{part}`), so
/// a huge request costs bounded time.
///
/// ```
/// use hasivu_ratelimit::shield::{Inspection, Limits, SqlInjection};
///
/// let limits: Limits = serde_json::from_str(r#"{ "uri_bytes": 64 }"#).unwrap();
/// assert_eq!(limits.body_bytes, 64 * 1024);
/// // An injection past the bound is not looked at.
/// let target = format!("/s?pad={}&id=1%20OR%201%3D1--", "a".repeat(100));
/// let request = Inspection::with_limits(limits, "GET", &target);
/// assert!(request.truncated().query);
/// assert!(!request.fields().iter().any(|f| SqlInjection::is_injection(&f.text)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The bytes of the path and of the query string inspected (default
    /// 8 KiB each).
    pub uri_bytes: usize,
    /// The bytes of a JSON or form body inspected (default 64 KiB). Bodies
    /// that declare a larger `Content-Length` are not buffered at all.
    pub body_bytes: usize,
    /// The bytes of the `User-Agent` inspected (default 512).
    pub header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            uri_bytes: 8 * 1024,
            body_bytes: 64 * 1024,
            header_bytes: 512,
        }
    }
}

/// Where a [`Field`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// A segment of the path.
    PathSegment,
    /// The name of a query parameter.
    QueryName,
    /// The value of a query parameter.
    QueryValue,
    /// A string of a JSON body (a key or a value), or a name or value of a
    /// form body.
    Body,
}

/// One decoded piece of a request: a path segment, a query name or value,
/// a body string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// Where it comes from.
    pub location: Location,
    /// As sent (percent-encoded, JSON-escaped).
    pub raw: &'a str,
    /// Decoded: percent-decoding twice (`%2527` is `'`), `+` as a space in
    /// queries and forms, `%uXXXX`, overlong UTF-8 forms of ASCII; JSON
    /// escapes in bodies.
    pub text: Cow<'a, str>,
    /// The kinds of bytes in `text`, for the detectors' prefilters.
    pub(crate) marks: Marks,
}

impl<'a> Field<'a> {
    pub(crate) fn new(location: Location, raw: &'a str, text: Cow<'a, str>) -> Self {
        let marks = Marks::of(&text);
        Self {
            location,
            raw,
            text,
            marks,
        }
    }

    /// A percent-encoded component, decoded (`+` as a space when `plus`).
    /// One pass over the raw text when there is nothing to decode.
    fn percent_encoded(location: Location, raw: &'a str, plus: bool) -> Self {
        let marks = Marks::of(raw);
        let escapes = Marks::PERCENT | if plus { Marks::PLUS } else { 0 };
        if !marks.any(escapes) {
            return Self {
                location,
                raw,
                text: Cow::Borrowed(raw),
                marks,
            };
        }
        Self::new(location, raw, decode::percent(raw, plus))
    }
}

/// Which kinds of bytes a text holds, found in one table-driven pass, so
/// each detector's prefilter is a mask test and a clean value is read once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks(u32);

impl Marks {
    pub(crate) const QUOTE: u32 = 1;
    pub(crate) const DQUOTE: u32 = 1 << 1;
    pub(crate) const BACKTICK: u32 = 1 << 2;
    /// `; ( ) = # @ | & < > *`
    pub(crate) const SQL_PUNCT: u32 = 1 << 3;
    pub(crate) const DASH: u32 = 1 << 4;
    pub(crate) const SLASH: u32 = 1 << 5;
    pub(crate) const LT: u32 = 1 << 6;
    pub(crate) const EQ: u32 = 1 << 7;
    pub(crate) const COLON: u32 = 1 << 8;
    pub(crate) const BRACE: u32 = 1 << 9;
    pub(crate) const AMP: u32 = 1 << 10;
    pub(crate) const DOT: u32 = 1 << 11;
    pub(crate) const BACKSLASH: u32 = 1 << 12;
    /// ASCII whitespace, and `C2` (the lead byte of U+00A0).
    pub(crate) const SPACE: u32 = 1 << 13;
    pub(crate) const NUL: u32 = 1 << 14;
    /// `E2` and `EF`: lead bytes of look-alike slashes and dots.
    pub(crate) const LOOKALIKE: u32 = 1 << 15;
    pub(crate) const PERCENT: u32 = 1 << 16;
    pub(crate) const PLUS: u32 = 1 << 17;
    /// Anything but the unreserved `A-Z a-z 0-9 - . _ ~`.
    pub(crate) const RESERVED: u32 = 1 << 18;

    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        t[b'\'' as usize] = Self::QUOTE;
        t[b'"' as usize] = Self::DQUOTE;
        t[b'`' as usize] = Self::BACKTICK;
        t[b';' as usize] = Self::SQL_PUNCT;
        t[b'(' as usize] = Self::SQL_PUNCT;
        t[b')' as usize] = Self::SQL_PUNCT;
        t[b'=' as usize] = Self::SQL_PUNCT | Self::EQ;
        t[b'#' as usize] = Self::SQL_PUNCT;
        t[b'@' as usize] = Self::SQL_PUNCT;
        t[b'|' as usize] = Self::SQL_PUNCT;
        t[b'&' as usize] = Self::SQL_PUNCT | Self::AMP;
        t[b'<' as usize] = Self::SQL_PUNCT | Self::LT;
        t[b'>' as usize] = Self::SQL_PUNCT;
        t[b'*' as usize] = Self::SQL_PUNCT;
        t[b'-' as usize] = Self::DASH;
        t[b'/' as usize] = Self::SLASH;
        t[b':' as usize] = Self::COLON;
        t[b'{' as usize] = Self::BRACE;
        t[b'.' as usize] = Self::DOT;
        t[b'\\' as usize] = Self::BACKSLASH;
        t[b' ' as usize] = Self::SPACE;
        t[b'\t' as usize] = Self::SPACE;
        t[b'\n' as usize] = Self::SPACE;
        t[b'\r' as usize] = Self::SPACE;
        t[0x0b] = Self::SPACE;
        t[0x0c] = Self::SPACE;
        t[0xC2] = Self::SPACE;
        t[0] = Self::NUL | Self::SPACE;
        t[0xE2] = Self::LOOKALIKE;
        t[0xEF] = Self::LOOKALIKE;
        t[b'%' as usize] = Self::PERCENT;
        t[b'+' as usize] = Self::PLUS;
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b'~') {
                t[i] |= Self::RESERVED;
            }
            i += 1;
        }
        t
    };

    pub(crate) fn of(text: &str) -> Self {
        Self(
            text.bytes()
                .fold(0, |acc, b| acc | Self::TABLE[usize::from(b)]),
        )
    }

    /// Whether any of `mask` is present.
    pub(crate) fn any(self, mask: u32) -> bool {
        self.0 & mask != 0
    }
}

/// The kind of a body the shield reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` and `application/*+json`: every string literal.
    Json,
    /// `application/x-www-form-urlencoded`: every name and value.
    Form,
}

/// What parts of a request went past the [`Limits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    /// The path.
    pub path: bool,
    /// The query string.
    pub query: bool,
    /// The body.
    pub body: bool,
    /// The user agent.
    pub header: bool,
}

/// A request as detectors see it: the client IP, the method, the path
/// (raw and decoded), the decoded fields of the path, query and body, and
/// the user agent, all within the [`Limits`].
///
/// The tower layer builds it; build one yourself to test a detector:
///
/// ```
/// use hasivu_ratelimit::shield::{BodyKind, Inspection, Location};
///
/// let request = Inspection::new("POST", "/search?q=caf%C3%A9+au+lait&page=2")
///     .with_user_agent("Mozilla/5.0")
///     .with_body(BodyKind::Json, r#"{"note":"O'Brien \u0026 sons"}"#);
/// let values: Vec<&str> = request
///     .fields()
///     .iter()
///     .filter(|f| f.location == Location::QueryValue || f.location == Location::Body)
///     .map(|f| &*f.text)
///     .collect();
/// assert_eq!(values, ["café au lait", "2", "note", "O'Brien & sons"]);
/// ```
#[derive(Clone, Debug)]
pub struct Inspection<'a> {
    ip: Option<IpAddr>,
    method: &'a str,
    path: &'a str,
    decoded_path: Cow<'a, str>,
    user_agent: Option<&'a str>,
    fields: Vec<Field<'a>>,
    limits: Limits,
    truncated: Truncated,
}

impl<'a> Inspection<'a> {
    /// A request for `target` (a path with an optional `?query`) with the
    /// default [`Limits`].
    pub fn new(method: &'a str, target: &'a str) -> Self {
        Self::with_limits(Limits::default(), method, target)
    }

    /// A request for `target` inspected within `limits`.
    pub fn with_limits(limits: Limits, method: &'a str, target: &'a str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut truncated = Truncated::default();
        let path = {
            let cut = decode::truncate(path, limits.uri_bytes);
            truncated.path = cut.len() < path.len();
            cut
        };
        // One allocation: two fields per query pair, and a few segments.
        let pairs = query.map_or(0, |q| q.bytes().filter(|&b| b == b'&').count() + 1);
        let mut fields = Vec::with_capacity(2 * pairs + 2);
        // Only segments with more than unreserved characters can carry an
        // injection.
        for segment in path.split('/') {
            let field = Field::percent_encoded(Location::PathSegment, segment, false);
            if field.marks.any(Marks::RESERVED) {
                fields.push(field);
            }
        }
        if let Some(query) = query {
            let cut = decode::truncate(query, limits.uri_bytes);
            truncated.query = cut.len() < query.len();
            for (name, value) in decode::pairs(cut) {
                fields.push(Field::percent_encoded(Location::QueryName, name, true));
                fields.push(Field::percent_encoded(Location::QueryValue, value, true));
            }
        }
        let decoded_path = decode::percent(path, false);
        Self {
            ip: None,
            method,
            path,
            decoded_path,
            user_agent: None,
            fields,
            limits,
            truncated,
        }
    }

    /// Sets the client IP.
    #[must_use]
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the user agent (cut to the header limit).
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: &'a str) -> Self {
        let cut = decode::truncate(user_agent, self.limits.header_bytes);
        self.truncated.header = cut.len() < user_agent.len();
        self.user_agent = Some(cut);
        self
    }

    /// Adds the strings of a body (cut to the body limit).
    #[must_use]
    pub fn with_body(mut self, kind: BodyKind, text: &'a str) -> Self {
        let cut = decode::truncate(text, self.limits.body_bytes);
        self.truncated.body |= cut.len() < text.len();
        match kind {
            BodyKind::Json => decode::json_strings(cut, |raw, text| {
                self.fields.push(Field::new(Location::Body, raw, text));
            }),
            BodyKind::Form => {
                for (name, value) in decode::pairs(cut) {
                    for raw in [name, value] {
                        self.fields
                            .push(Field::percent_encoded(Location::Body, raw, true));
                    }
                }
            }
        }
        self
    }

    /// Marks the body as cut short (a stream that ran past the limit).
    #[must_use]
    pub fn with_body_truncated(mut self, truncated: bool) -> Self {
        self.truncated.body |= truncated;
        self
    }

    /// The client IP, when known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The method.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The path as sent (within the limit).
    pub fn path(&self) -> &str {
        self.path
    }

    /// The path, percent-decoded twice, with overlong forms folded.
    pub fn decoded_path(&self) -> &str {
        &self.decoded_path
    }

    /// The user agent, if sent.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent
    }

    /// The decoded path segments (those with more than unreserved
    /// characters), query names and values, and body strings, in order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// What went past the limits.
    pub fn truncated(&self) -> Truncated {
        self.truncated
    }
}
