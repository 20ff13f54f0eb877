//! Cache keys of HTTP responses: path and query normalisation, route
//! patterns, and the key layout described in the [module docs](super).
//!
//! Pure logic: no I/O, no clock.

use std::borrow::Cow;

/// Keys longer than this are not cached: the request passes through.
/// Bounds what one request can make the cache hold besides its body.
pub(crate) const MAX_KEY_BYTES: usize = 4096;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 `unreserved`: never needs encoding, so `%XX` of one of these is
/// decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` minus `%`.
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn is_path_literal(b: u8) -> bool {
    is_pchar(b) || b == b'/'
}

fn is_query_literal(b: u8) -> bool {
    is_pchar(b) || b == b'/' || b == b'?'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Whether `input` is already normal: only literal bytes, and every `%`
/// starts an upper-case escape of a byte that must stay encoded.
fn is_normal(input: &[u8], literal: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            let (Some(&hi), Some(&lo)) = (input.get(i + 1), input.get(i + 2)) else {
                return false;
            };
            let (Some(h), Some(l)) = (hex_value(hi), hex_value(lo)) else {
                return false;
            };
            if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() || is_unreserved(h << 4 | l) {
                return false;
            }
            i += 3;
        } else if literal(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Appends `input` normalised: escapes of unreserved bytes decoded, other
/// escapes upper-cased, bytes that may not appear literally encoded (a `%`
/// that starts no valid escape becomes `%25`). Returns whether a `.` was
/// decoded from `%2E`.
fn normalize_into(input: &[u8], literal: fn(u8) -> bool, out: &mut String) -> bool {
    let mut decoded_dot = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex_value),
                input.get(i + 2).copied().and_then(hex_value),
            )
        {
            let byte = h << 4 | l;
            if is_unreserved(byte) {
                decoded_dot |= byte == b'.';
                out.push(char::from(byte));
            } else {
                push_encoded(out, byte);
            }
            i += 3;
        } else {
            if literal(b) {
                out.push(char::from(b));
            } else {
                push_encoded(out, b);
            }
            i += 1;
        }
    }
    decoded_dot
}

/// Normalises a request path (RFC 3986 section 6.2.2): escapes of
/// unreserved characters are decoded, other escapes upper-cased, and
/// characters that may not appear in a path are encoded. Case, slashes and
/// dot-segments are kept; a segment that would decode to `.` or `..` keeps
/// its dots encoded (`%2E`), so decoding never creates a dot-segment that
/// the request did not have.
pub(crate) fn normalize_path(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    if is_normal(bytes, is_path_literal) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in bytes.split(|b| *b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let start = out.len();
        let decoded_dot = normalize_into(segment, is_pchar, &mut out);
        let written = &out[start..];
        if decoded_dot && (written == "." || written == "..") {
            let dots = written.len();
            out.truncate(start);
            for _ in 0..dots {
                out.push_str("%2E");
            }
        }
    }
    Cow::Owned(out)
}

/// Normalises a query: each `&`-separated parameter normalised as a path
/// is, empty parameters dropped, parameters stably sorted by name (the part
/// before the first `=`), so `b=2&a=1` and `a=1&b=2` are one query while
/// `a=1&a=2` and `a=2&a=1` stay apart. With `keep`, only the parameters
/// whose normalised name it lists remain. `None` for an empty query.
pub(crate) fn normalize_query(query: &str, keep: Option<&[String]>) -> Option<String> {
    let mut params: Vec<String> = query
        .split('&')
        .filter(|param| !param.is_empty())
        .map(|param| {
            let mut out = String::with_capacity(param.len());
            normalize_into(param.as_bytes(), is_query_literal, &mut out);
            out
        })
        .filter(|param| keep.is_none_or(|names| names.iter().any(|n| n == param_name(param))))
        .collect();
    if params.is_empty() {
        return None;
    }
    params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    Some(params.join("&"))
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// Appends `value` with `%`, spaces, controls and non-ASCII bytes encoded,
/// so that it holds no space: the separator of the key's parts.
fn push_escaped(out: &mut String, value: &[u8]) {
    for &b in value {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            push_encoded(out, b);
        }
    }
}

/// The primary key: `{namespace}GET {path}[?{query}][ user={id}]`, with the
/// path and query already normalised.
pub(crate) fn primary_key(
    namespace: &str,
    path: &str,
    query: Option<&str>,
    user: Option<&str>,
) -> String {
    let mut key = String::with_capacity(
        namespace.len() + 4 + path.len() + query.map_or(0, |q| q.len() + 1) + 16,
    );
    key.push_str(namespace);
    key.push_str("GET ");
    key.push_str(path);
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
    if let Some(user) = user {
        key.push_str(" user=");
        push_escaped(&mut key, user.as_bytes());
    }
    key
}

/// The key of one variant of a response with `Vary`:
/// `{primary} vary {name}={value} …`, names lower-cased, in the order of
/// the response's `Vary`.
pub(crate) fn variant_key<'a>(
    primary: &str,
    parts: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut key = String::with_capacity(primary.len() + 48);
    key.push_str(primary);
    key.push_str(" vary");
    for (name, value) in parts {
        key.push(' ');
        key.push_str(name);
        key.push('=');
        push_escaped(&mut key, value);
    }
    key
}

/// Which requests a route policy applies to: an exact path, or a prefix
/// written with a final `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RoutePattern {
    Exact(String),
    Prefix(String),
}

impl RoutePattern {
    /// `/menu/daily` (exactly that path) or `/schools/*` (every path that
    /// starts with `/schools/`); `*` alone matches every path. The pattern is
    /// normalised like request paths.
    pub(crate) fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => RoutePattern::Prefix(normalize_path(prefix).into_owned()),
            None => RoutePattern::Exact(normalize_path(pattern).into_owned()),
        }
    }

    /// Whether a normalised path is selected.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            RoutePattern::Exact(exact) => exact == path,
            RoutePattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize_path("/menu/daily"), "/menu/daily");
        assert!(matches!(normalize_path("/menu/daily"), Cow::Borrowed(_)));
        assert_eq!(normalize_path("/menu/%64aily"), "/menu/daily");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb", "reserved escapes stay");
        assert_eq!(normalize_path("/a%7e%7E~"), "/a~~~");
        assert_eq!(normalize_path("/Menu//Daily/"), "/Menu//Daily/");
        assert_eq!(normalize_path("/a|b{c}"), "/a%7Cb%7Bc%7D");
        assert_eq!(normalize_path("/100%"), "/100%25");
        assert_eq!(normalize_path("/%zz"), "/%25zz");
        assert_eq!(normalize_path("/%c3%a9t%C3%A9"), "/%C3%A9t%C3%A9");
        // Decoding never creates dot-segments.
        assert_eq!(
            normalize_path("/static/%2e%2E/secret"),
            "/static/%2E%2E/secret"
        );
        assert_eq!(normalize_path("/static/.%2e/x"), "/static/%2E%2E/x");
        assert_eq!(normalize_path("/a/%2e"), "/a/%2E");
        assert_eq!(normalize_path("/a/../b"), "/a/../b");
        assert_eq!(normalize_path("/a/%2E%2Ex"), "/a/..x");
        assert_eq!(normalize_path(""), "");
    }

    #[test]
    fn queries_are_sorted_by_name_and_stable() {
        assert_eq!(normalize_query("b=2&a=1", None).as_deref(), Some("a=1&b=2"));
        assert_eq!(
            normalize_query("a=2&b=1&a=1", None).as_deref(),
            Some("a=2&a=1&b=1")
        );
        assert_eq!(normalize_query("", None), None);
        assert_eq!(normalize_query("&&", None), None);
        assert_eq!(normalize_query("a=%7e&&b", None), Some("a=~&b".to_owned()));
        assert_eq!(
            normalize_query("q=a%26b=c", None).as_deref(),
            Some("q=a%26b=c")
        );
        assert_eq!(normalize_query("x=1|2", None).as_deref(), Some("x=1%7C2"));
        let keep = ["page".to_owned()];
        assert_eq!(
            normalize_query("junk=1&p%61ge=2&page", Some(&keep)).as_deref(),
            Some("page=2&page")
        );
        assert_eq!(normalize_query("junk=1", Some(&keep)), None);
        assert_eq!(normalize_query("page=1", Some(&[])), None);
        assert_eq!(
            normalize_query("next=/a?b", None).as_deref(),
            Some("next=/a?b")
        );
    }

    #[test]
    fn key_layout() {
        assert_eq!(
            primary_key("menu:daily:", "/menu/daily", None, None),
            "menu:daily:GET /menu/daily"
        );
        assert_eq!(
            primary_key("http:", "/users/7", Some("fields=id"), Some("user 7%")),
            "http:GET /users/7?fields=id user=user%207%25"
        );
        let primary = primary_key("http:", "/", None, None);
        assert_eq!(
            variant_key(
                &primary,
                [
                    ("accept-encoding", &b"br"[..]),
                    ("accept-language", b"en-IN, kn;q=0.8")
                ]
            ),
            "http:GET / vary accept-encoding=br accept-language=en-IN,%20kn;q=0.8"
        );
    }

    #[test]
    fn route_patterns() {
        let exact = RoutePattern::parse("/menu/daily");
        assert!(exact.matches("/menu/daily"));
        assert!(!exact.matches("/menu/daily/2"));
        let prefix = RoutePattern::parse("/schools/*");
        assert!(prefix.matches("/schools/7"));
        assert!(prefix.matches("/schools/"));
        assert!(!prefix.matches("/schools"));
        assert!(RoutePattern::parse("*").matches("/anything"));
        assert!(RoutePattern::parse("/m%65nu").matches("/menu"));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        // Bytes a request path can hold (visible ASCII without `?`/`#`),
        // with escapes made likely.
        proptest::collection::vec(
            prop_oneof![
                "[a-zA-Z0-9/._~%:@!$&'()*+,;=|{}^`\\[\\]\"<>-]",
                "%[0-9a-fA-F]{2}",
                Just("%2e".to_owned()),
                Just("/".to_owned()),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    fn param_strategy() -> impl Strategy<Value = String> {
        ("[a-d]{1,2}", proptest::option::of("[a-z0-9%~.|]{0,6}")).prop_map(|(name, value)| {
            match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            }
        })
    }

    proptest! {
        #[test]
        fn path_normalisation_is_idempotent(path in path_strategy()) {
            let once = normalize_path(&path).into_owned();
            let twice = normalize_path(&once).into_owned();
            prop_assert_eq!(&once, &twice);
            prop_assert!(once.bytes().all(|b| b == b'%' || is_path_literal(b)));
        }

        #[test]
        fn query_normalisation_is_idempotent(query in "[a-z0-9=&%~|.?/]{0,40}") {
            let once = normalize_query(&query, None);
            let twice = once.as_deref().and_then(|q| normalize_query(q, None));
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn query_order_of_distinct_names_does_not_matter(
            params in proptest::collection::vec(param_strategy(), 0..8),
            seed in any::<u64>(),
        ) {
            // Keep one parameter per name: the order of same-name
            // parameters is meaningful and kept.
            let mut seen = std::collections::HashSet::new();
            let params: Vec<String> = params
                .into_iter()
                .filter(|p| seen.insert(param_name(p).to_owned()))
                .collect();
            let mut shuffled = params.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut shuffled);
            prop_assert_eq!(
                normalize_query(&params.join("&"), None),
                normalize_query(&shuffled.join("&"), None)
            );
        }

        #[test]
        fn same_name_parameters_keep_their_order(a in "[a-z0-9]{1,4}", b in "[a-z0-9]{1,4}") {
            prop_assume!(a != b);
            prop_assert_ne!(
                normalize_query(&format!("x={a}&x={b}"), None),
                normalize_query(&format!("x={b}&x={a}"), None)
            );
        }

        #[test]
        fn escaped_values_hold_no_space(value in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut out = String::new();
            push_escaped(&mut out, &value);
            prop_assert!(!out.contains(' '));
            prop_assert!(out.is_ascii());
        }
    }
}
