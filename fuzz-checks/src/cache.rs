//! hasivu-cache: invalidation patterns, HTTP cache keys and the header
//! logic of the HTTP cache.

use hasivu_cache::{__fuzz, InvalidationRules, Pattern, escape_glob};

use crate::{Budget, split_once, text};

/// Patterns copy and escape the text a few times (escaping at most doubles
/// it); rules and their cascade are made of the input's lines.
const PATTERN: Budget = Budget::new(64, 4096);

/// A cascade also keeps a few collection entries per rule whatever the
/// rule's length (about 230 bytes per rule for one-byte lines, found by
/// the fuzzer): 256 bytes for each of the at most 64 rules on top.
const CASCADE: Budget = Budget::new(64, 4096 + 64 * 256);

/// `Pattern::parse`, `escape_glob` and invalidation rules. Input: text;
/// its first line is parsed as a pattern and escaped as a key, every line
/// becomes a rule relating it to the next one.
///
/// Checks: a parsed pattern written back (`to_glob`) parses to itself and
/// covers itself; an escaped key parses to exactly that key, and with a
/// final `*` to the prefix; a cascade holds only patterns of the rules or
/// the start, never more than there are; allocation linear.
pub fn cache_pattern(data: &[u8]) {
    let input = text(data);
    let first = input.lines().next().unwrap_or_default();
    PATTERN.run("patterns", data.len(), || {
        if let Ok(pattern) = Pattern::parse(first) {
            let glob = pattern.to_glob();
            assert_eq!(Pattern::parse(&glob).as_ref(), Ok(&pattern), "{glob:?}");
            assert_eq!(pattern.to_string(), glob);
            assert!(pattern.covers(&pattern));
        }
        let escaped = escape_glob(first);
        assert_eq!(Pattern::parse(&escaped), Ok(Pattern::Key(first.to_owned())));
        assert_eq!(
            Pattern::parse(&format!("{escaped}*")),
            Ok(Pattern::Prefix(first.to_owned()))
        );
        assert!(Pattern::Prefix(first.to_owned()).matches(first));
    });

    let lines: Vec<&str> = input.lines().take(64).collect();
    let mut rules = InvalidationRules::new();
    for pair in lines.windows(2) {
        if let Ok(next) = rules.clone().rule(pair[0], [pair[1]]) {
            rules = next;
        }
    }
    if let Ok(start) = Pattern::parse(first) {
        let cascade = CASCADE.run("cascade", data.len(), || rules.cascade(&start));
        assert!(cascade.len() <= lines.len() + 1);
        assert!(
            cascade.iter().any(|p| p.covers(&start)),
            "the cascade of {start:?} does not cover it"
        );
    }
}

/// Normalising encodes a byte as at most three (nine for an invalid UTF-8
/// byte, which the text holds as three); the key holds path, query and
/// user once each, in strings grown by doubling: (9 + 9 + 19) × 2 bytes per
/// input byte at worst, 80 with the copies on the way (the fuzzer found 68
/// for a query of invalid UTF-8), plus 1 KiB.
const KEY: Budget = Budget::new(80, 1024);

fn is_path_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// The HTTP cache key (`http/key.rs`). Input: a request target as text,
/// split at the first `?` into path and query.
///
/// Checks: path and query normalisation are idempotent; a normalised path
/// holds only path characters and `%XX` escapes, and is at most three
/// times as long; a normalised query has no empty parameter and its names
/// are sorted; a route pattern matches the path it was written as; the
/// primary key holds the normalised parts; allocation linear.
pub fn cache_key(data: &[u8]) {
    let input = text(data);
    let (path, query) = input.split_once('?').unwrap_or((&input, ""));
    let (normal_path, normal_query, key) = KEY.run("cache key", data.len(), || {
        let normal_path = __fuzz::normalize_path(path).into_owned();
        let normal_query = __fuzz::normalize_query(query, None);
        let key = __fuzz::primary_key("ns:", &normal_path, normal_query.as_deref(), Some(query));
        (normal_path, normal_query, key)
    });

    assert_eq!(
        __fuzz::normalize_path(&normal_path),
        normal_path,
        "path normalisation is not idempotent"
    );
    assert!(normal_path.len() <= 3 * path.len());
    let bytes = normal_path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escape = bytes.get(i + 1..i + 3).unwrap_or_default();
            assert!(
                escape.len() == 2
                    && escape
                        .iter()
                        .all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')),
                "a stray % in {normal_path:?}"
            );
            i += 3;
        } else {
            assert!(
                is_path_literal(bytes[i]),
                "{:?} left unencoded in {normal_path:?}",
                char::from(bytes[i])
            );
            i += 1;
        }
    }
    assert!(__fuzz::route_matches(&normal_path, &normal_path));

    if let Some(normal_query) = &normal_query {
        assert_eq!(
            __fuzz::normalize_query(normal_query, None).as_ref(),
            Some(normal_query),
            "query normalisation is not idempotent"
        );
        // A route's declared parameters: only those stay, and keeping is
        // idempotent and commutes with normalisation.
        let keep = ["a".to_owned(), "page".to_owned()];
        let kept = __fuzz::normalize_query(query, Some(&keep));
        if let Some(kept) = &kept {
            assert!(
                kept.split('&').all(|p| keep
                    .iter()
                    .any(|k| k == p.split_once('=').map_or(p, |(n, _)| n))),
                "an undeclared parameter was kept: {kept:?}"
            );
        }
        assert_eq!(
            __fuzz::normalize_query(normal_query, Some(&keep)),
            kept,
            "keeping parameters depends on how the query was written"
        );
        let names: Vec<&str> = normal_query
            .split('&')
            .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
            .collect();
        assert!(names.is_sorted(), "parameters not sorted by name");
        assert!(normal_query.split('&').all(|p| !p.is_empty()));
    }
    assert!(key.starts_with("ns:GET "));
    assert!(key.contains(normal_path.as_str()));
    assert_eq!(
        key.matches(" user=").count(),
        1,
        "the user part escapes its spaces"
    );
    let (_, user) = key.rsplit_once(" user=").expect("a user part");
    assert!(!user.contains(' '));
    let variant = __fuzz::variant_key(&key, [("accept-encoding", query.as_bytes())]);
    assert_eq!(variant.matches(' ').count(), key.matches(' ').count() + 2);
}

/// Header parsing keeps a small record per directive, tag or name.
const HEADERS: Budget = Budget::new(48, 4096);

/// The HTTP cache's header logic (`http/headers.rs`). Input: header field
/// lines separated by `\n`, read as `Cache-Control`, as `If-None-Match`
/// and as `Vary`.
///
/// Checks: `Cache-Control` read and written back reads the same (the
/// written form is a fixed point); `If-None-Match` matches `*`, the tag
/// itself and its weak form, and lines that follow a match do not undo
/// it; `Vary` keeps at most 8 lower-case names; allocation linear.
pub fn cache_headers(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let etag = __fuzz::strong_etag(data);
    let (written, forbids, matched, vary) = HEADERS.run("headers", data.len(), || {
        let (written, forbids) = __fuzz::cache_control(lines.iter().copied());
        let matched = __fuzz::if_none_match(lines.iter().copied(), etag.as_bytes());
        let vary = __fuzz::vary(lines.iter().copied());
        (written, forbids, matched, vary)
    });
    let (again, forbids_again) = __fuzz::cache_control([written.as_bytes()]);
    assert_eq!(
        again, written,
        "Cache-Control written back reads differently"
    );
    assert_eq!(forbids_again, forbids);

    let tag = etag.as_bytes();
    assert!(__fuzz::if_none_match([&b"*"[..]], tag));
    assert!(__fuzz::if_none_match([tag], tag));
    assert!(__fuzz::if_none_match([&[b"W/", tag].concat()[..]], tag));
    if matched {
        let (first, _) = split_once(data, b'\n');
        let with_more = __fuzz::if_none_match(lines.iter().copied().chain([first]), tag);
        assert!(with_more, "an extra line undid a match");
    }
    if let Some(names) = vary {
        assert!(names.len() <= 8, "{} Vary names kept", names.len());
        for name in &names {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
}
