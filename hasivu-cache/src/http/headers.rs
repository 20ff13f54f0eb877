//! Header logic of the HTTP cache: `Cache-Control` read and written,
//! strong `ETag`s, `If-None-Match` matching, `Vary` names, and which
//! response headers are stored.
//!
//! Pure logic: no I/O, no clock.

use std::hash::{Hash, Hasher};

use http::{HeaderName, HeaderValue, header};

/// The most `Vary` names a cached response may have; a response varying on
/// more is not cached.
pub(crate) const MAX_VARY: usize = 8;

/// What a `Cache-Control` header says, as far as this cache cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) public: bool,
    /// `private`, also with a field list: the whole response is kept out.
    pub(crate) private: bool,
    pub(crate) no_store: bool,
    /// `no-cache`, also with a field list.
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
}

impl CacheControl {
    /// Reads every line of a `Cache-Control` header. Names are
    /// case-insensitive, values may be quoted (commas inside quotes do not
    /// split), unknown directives are ignored, a malformed number is
    /// ignored and a huge one saturates.
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut cc = CacheControl::default();
        for line in lines {
            for (name, value) in directives(line) {
                let seconds = || value.and_then(parse_seconds);
                match name.to_ascii_lowercase().as_slice() {
                    b"public" => cc.public = true,
                    b"private" => cc.private = true,
                    b"no-store" => cc.no_store = true,
                    b"no-cache" => cc.no_cache = true,
                    b"max-age" => cc.max_age = seconds().or(cc.max_age),
                    b"s-maxage" => cc.s_maxage = seconds().or(cc.s_maxage),
                    b"stale-while-revalidate" => {
                        cc.stale_while_revalidate = seconds().or(cc.stale_while_revalidate);
                    }
                    _ => {}
                }
            }
        }
        cc
    }

    /// Whether a shared cache must not store the response.
    pub(crate) fn forbids_storing(&self) -> bool {
        self.private || self.no_store || self.no_cache
    }

    /// The header value: `public` or `private`, then `max-age`, `s-maxage`
    /// and `stale-while-revalidate` when set.
    pub(crate) fn to_header_value(&self) -> HeaderValue {
        let mut out = String::with_capacity(64);
        let mut push = |directive: &str| {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(directive);
        };
        if self.public {
            push("public");
        }
        if self.private {
            push("private");
        }
        if self.no_store {
            push("no-store");
        }
        if self.no_cache {
            push("no-cache");
        }
        if let Some(max_age) = self.max_age {
            push(&format!("max-age={max_age}"));
        }
        if let Some(s_maxage) = self.s_maxage {
            push(&format!("s-maxage={s_maxage}"));
        }
        if let Some(swr) = self.stale_while_revalidate {
            push(&format!("stale-while-revalidate={swr}"));
        }
        HeaderValue::from_str(&out).expect("directives are visible ASCII")
    }
}

/// Splits a comma-separated list of `name[=value]` items, honouring quoted
/// strings (the quotes are removed from values).
fn directives(line: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        // One item: up to the next comma outside quotes.
        let start = i;
        let mut quoted = false;
        while i < line.len() {
            match line[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => i += 1,
                b',' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        let item = line[start..i.min(line.len())].trim_ascii();
        i += 1;
        if item.is_empty() {
            continue;
        }
        match item.iter().position(|b| *b == b'=') {
            Some(eq) => {
                let value = item[eq + 1..].trim_ascii();
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                out.push((item[..eq].trim_ascii(), Some(value)));
            }
            None => out.push((item, None)),
        }
    }
    out
}

fn parse_seconds(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // RFC 9111 section 1.2.2: a delta too large to represent is read as the
    // greatest one.
    Some(
        std::str::from_utf8(value)
            .ok()?
            .parse::<u64>()
            .unwrap_or(u64::MAX),
    )
}

/// A strong entity tag for `body`: its length and a 64-bit hash, both in
/// hex (`"1f4-9c0e…"`). Computed once when the entry is stored; every
/// instance serves the stored tag.
pub(crate) fn strong_etag(body: &[u8]) -> HeaderValue {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let tag = format!("\"{:x}-{:016x}\"", body.len(), hasher.finish());
    HeaderValue::from_str(&tag).expect("hex digits and quotes")
}

/// Whether `value` is a well-formed strong entity tag (`"…"`, no `W/`).
pub(crate) fn is_strong_etag(value: &[u8]) -> bool {
    value.len() >= 2
        && value[0] == b'"'
        && value[value.len() - 1] == b'"'
        && value[1..value.len() - 1].iter().all(|b| is_etagc(*b))
}

/// RFC 9110 `etagc`: visible characters but `"`, and obs-text.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// The opaque part of an entity tag (with its quotes), weak or strong;
/// `None` when malformed.
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.trim_ascii();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    is_strong_etag(tag).then_some(tag)
}

/// Whether an `If-None-Match` header (all its lines) matches `etag` by the
/// weak comparison (RFC 9110 section 13.1.2): `*`, or a listed tag with the
/// same opaque part, `W/` or not. A malformed list matches nothing from the
/// point where it goes wrong.
pub(crate) fn if_none_match<'a>(lines: impl IntoIterator<Item = &'a [u8]>, etag: &[u8]) -> bool {
    let Some(ours) = opaque(etag) else {
        return false;
    };
    lines.into_iter().any(|line| {
        let mut rest = line;
        loop {
            rest = rest.trim_ascii_start();
            while let Some(after) = rest.strip_prefix(b",") {
                rest = after.trim_ascii_start();
            }
            if rest.is_empty() {
                return false;
            }
            if let Some(after) = rest.strip_prefix(b"*") {
                if after.trim_ascii().is_empty() || after.trim_ascii_start().starts_with(b",") {
                    return true;
                }
                return false;
            }
            let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
            let Some(body) = tag.strip_prefix(b"\"") else {
                return false;
            };
            let Some(end) = body.iter().position(|b| *b == b'"') else {
                return false;
            };
            let theirs = &tag[..end + 2];
            if !body[..end].iter().all(|b| is_etagc(*b)) {
                return false;
            }
            if theirs == ours {
                return true;
            }
            rest = &body[end + 1..];
        }
    })
}

/// The names a response varies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Vary {
    /// Lower-cased, in order, without duplicates; empty when no `Vary`.
    Names(Vec<String>),
    /// `Vary: *`, or more than [`MAX_VARY`] names: never cached.
    Uncacheable,
}

impl Vary {
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut names: Vec<String> = Vec::new();
        for line in lines {
            for name in line.split(|b| *b == b',') {
                let name = name.trim_ascii();
                if name.is_empty() {
                    continue;
                }
                if name == b"*" {
                    return Vary::Uncacheable;
                }
                let Ok(name) = HeaderName::from_bytes(name) else {
                    return Vary::Uncacheable;
                };
                let name = name.as_str().to_owned();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        if names.len() > MAX_VARY {
            return Vary::Uncacheable;
        }
        Vary::Names(names)
    }
}

/// Whether a response header is stored with the entry. Hop-by-hop headers
/// belong to one connection, `Content-Length` is recomputed from the stored
/// body, and `Age`, `X-Cache` and `Cache-Control` are written when the
/// entry is served (the handler's `Cache-Control` is kept only when the
/// route does not emit its own).
pub(crate) fn is_stored(name: &HeaderName, keep_cache_control: bool) -> bool {
    !(matches!(
        *name,
        header::CONNECTION
            | header::TRANSFER_ENCODING
            | header::TE
            | header::TRAILER
            | header::UPGRADE
            | header::PROXY_AUTHENTICATE
            | header::PROXY_AUTHORIZATION
            | header::CONTENT_LENGTH
            | header::AGE
            | header::SET_COOKIE
    ) || name == "keep-alive"
        || name == "x-cache"
        || name == "surrogate-key"
        || name == "cache-tag"
        || (*name == header::CACHE_CONTROL && !keep_cache_control))
}

/// The headers a 304 answer carries (RFC 9110 section 15.4.5), besides
/// the cache's own `X-Cache` and `Age`.
pub(crate) fn kept_in_not_modified(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CACHE_CONTROL
            | header::CONTENT_LOCATION
            | header::DATE
            | header::ETAG
            | header::EXPIRES
            | header::VARY
    ) || name == "surrogate-key"
        || name == "cache-tag"
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cc(line: &str) -> CacheControl {
        CacheControl::parse([line.as_bytes()])
    }

    #[test]
    fn cache_control_is_read() {
        let parsed = cc("Public, MAX-AGE=60, s-maxage=\"300\", stale-while-revalidate=30");
        assert_eq!(
            parsed,
            CacheControl {
                public: true,
                max_age: Some(60),
                s_maxage: Some(300),
                stale_while_revalidate: Some(30),
                ..CacheControl::default()
            }
        );
        assert!(!parsed.forbids_storing());
        assert!(cc("no-store").forbids_storing());
        assert!(cc("max-age=60, private").forbids_storing());
        assert!(cc(r#"private="set-cookie, x-a", max-age=5"#).private);
        assert_eq!(cc(r#"private="set-cookie, max-age=9""#).max_age, None);
        assert!(cc("no-cache=\"x\"").forbids_storing());
        assert!(!cc("no-transform, must-revalidate").forbids_storing());
        assert_eq!(cc("max-age=abc").max_age, None);
        assert_eq!(cc("max-age=-1").max_age, None);
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(u64::MAX)
        );
        assert_eq!(cc(",,, ,").max_age, None);
        let two = CacheControl::parse([&b"max-age=5"[..], b"no-store"]);
        assert!(two.no_store && two.max_age == Some(5));
    }

    #[test]
    fn cache_control_is_written() {
        let public = CacheControl {
            public: true,
            max_age: Some(60),
            s_maxage: Some(300),
            stale_while_revalidate: Some(30),
            ..CacheControl::default()
        };
        assert_eq!(
            public.to_header_value(),
            "public, max-age=60, s-maxage=300, stale-while-revalidate=30"
        );
        let private = CacheControl {
            private: true,
            max_age: Some(60),
            ..CacheControl::default()
        };
        assert_eq!(private.to_header_value(), "private, max-age=60");
    }

    #[test]
    fn etags() {
        let tag = strong_etag(b"hello");
        assert!(is_strong_etag(tag.as_bytes()));
        assert_eq!(tag, strong_etag(b"hello"));
        assert_ne!(tag, strong_etag(b"hellp"));
        assert!(tag.to_str().unwrap().starts_with("\"5-"));
        assert!(!is_strong_etag(b"W/\"a\""));
        assert!(!is_strong_etag(b"\"a\"b\""));
        assert!(!is_strong_etag(b"\""));
        assert!(is_strong_etag(b"\"\""));
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison() {
        let m = |header: &str, etag: &str| if_none_match([header.as_bytes()], etag.as_bytes());
        assert!(m("\"a\"", "\"a\""));
        assert!(m("W/\"a\"", "\"a\""));
        assert!(m("\"a\"", "W/\"a\""));
        assert!(m("*", "\"a\""));
        assert!(m(" * ", "\"a\""));
        assert!(m("\"x\", W/\"y\" , \"a\"", "\"a\""));
        assert!(m("\"x,y\", \"a\"", "\"a\""), "commas inside tags");
        assert!(!m("\"x,y\"", "\"y\""));
        assert!(!m("\"b\"", "\"a\""));
        assert!(!m("a", "\"a\""), "unquoted");
        assert!(!m("\"a", "\"a\""), "unterminated");
        assert!(!m("", "\"a\""));
        assert!(!m("\"a\"", "not-a-tag"));
        assert!(if_none_match(
            [&b"\"x\""[..], b"\"a\""],
            b"\"a\"" // on a second line
        ));
    }

    #[test]
    fn vary_names() {
        let v = |line: &str| Vary::parse([line.as_bytes()]);
        assert_eq!(v(""), Vary::Names(vec![]));
        assert_eq!(
            v("Accept-Encoding, accept-language,ACCEPT-ENCODING"),
            Vary::Names(vec!["accept-encoding".into(), "accept-language".into()])
        );
        assert_eq!(v("origin, *"), Vary::Uncacheable);
        assert_eq!(v("a b"), Vary::Uncacheable);
        assert_eq!(v("a,b,c,d,e,f,g,h,i"), Vary::Uncacheable);
    }

    fn tag_strategy() -> impl Strategy<Value = String> {
        ("[!#-~]{0,12}", any::<bool>())
            .prop_map(|(opaque, weak)| format!("{}\"{opaque}\"", if weak { "W/" } else { "" }))
    }

    proptest! {
        #[test]
        fn cache_control_round_trips(
            private in any::<bool>(),
            max_age in any::<u32>(),
            s_maxage in proptest::option::of(any::<u32>()),
            swr in proptest::option::of(any::<u32>()),
        ) {
            let written = CacheControl {
                public: !private,
                private,
                max_age: Some(u64::from(max_age)),
                s_maxage: s_maxage.map(u64::from),
                stale_while_revalidate: swr.map(u64::from),
                ..CacheControl::default()
            };
            let value = written.to_header_value();
            prop_assert_eq!(CacheControl::parse([value.as_bytes()]), written);
        }

        #[test]
        fn cache_control_parsing_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = CacheControl::parse([line.as_slice()]);
        }

        #[test]
        fn a_listed_tag_always_matches(
            before in proptest::collection::vec(tag_strategy(), 0..4),
            after in proptest::collection::vec(tag_strategy(), 0..4),
            tag in tag_strategy(),
            weak_in_list in any::<bool>(),
        ) {
            let stored = tag.trim_start_matches("W/").to_owned();
            let listed = if weak_in_list { format!("W/{stored}") } else { stored.clone() };
            let list: Vec<String> = before.into_iter().chain([listed]).chain(after).collect();
            let header = list.join(", ");
            prop_assert!(if_none_match([header.as_bytes()], stored.as_bytes()));
        }

        #[test]
        fn an_absent_tag_never_matches(
            list in proptest::collection::vec(tag_strategy(), 0..6),
            tag in "[a-z]{1,8}",
        ) {
            let stored = format!("\"{tag}-stored\"");
            prop_assume!(!list.iter().any(|t| t.trim_start_matches("W/") == stored));
            prop_assert!(!if_none_match([list.join(",").as_bytes()], stored.as_bytes()));
        }

        #[test]
        fn if_none_match_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = if_none_match([line.as_slice()], b"\"a\"");
        }
    }
}
