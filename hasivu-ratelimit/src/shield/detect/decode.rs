//! Decoding before detection: percent-encoding (twice, to see through
//! double encoding), `%uXXXX`, overlong UTF-8 forms of ASCII, `+` as a
//! space in queries and forms, HTML character references, and the string
//! literals of a JSON text. Pure and linear in the input.

use std::borrow::Cow;

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `bytes` hold a `%XX` or `%uXXXX` escape.
fn has_escape(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && ((hex(w[1]).is_some() && hex(w[2]).is_some())
                || ((w[1] == b'u' || w[1] == b'U') && hex(w[2]).is_some()))
    })
}

/// One round of percent-decoding into bytes: `%XX`, `%uXXXX` (IIS) and,
/// when `plus` is set, `+` as a space. Malformed escapes stay as they are.
fn decode_round(input: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U'))
                && let Some(code) = input.get(i + 2..i + 6).and_then(|d| {
                    d.iter()
                        .try_fold(0u32, |acc, &c| hex(c).map(|v| acc << 4 | u32::from(v)))
                })
            {
                let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

/// Replaces overlong UTF-8 encodings of ASCII (`C0 AE` for `.`, `C0 AF`
/// for `/`, `C1 9C` for `\`, `E0 80 AE`…) by the ASCII byte, as lenient
/// decoders once did.
fn fold_overlong(bytes: &mut Vec<u8>) {
    if !bytes.iter().any(|&b| b == 0xC0 || b == 0xC1 || b == 0xE0) {
        return;
    }
    let cont = |b: Option<&u8>| b.is_some_and(|b| b & 0xC0 == 0x80);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (b == 0xC0 || b == 0xC1) && cont(bytes.get(i + 1)) {
            out.push(((b & 0x1F) << 6) | (bytes[i + 1] & 0x3F));
            i += 2;
        } else if (b == 0xC0 || b == 0xC1) && bytes.get(i + 1).is_some_and(u8::is_ascii) {
            // `%c0%2e`: a lead byte before ASCII, which IIS once read as
            // the ASCII character alone.
            i += 1;
        } else if b == 0xE0
            && bytes.get(i + 1).is_some_and(|c| (0x80..=0x81).contains(c))
            && cont(bytes.get(i + 2))
        {
            out.push(((bytes[i + 1] & 0x3F) << 6) | (bytes[i + 2] & 0x3F));
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    *bytes = out;
}

/// Percent-decodes a URL component: `%XX`, `%uXXXX`, overlong forms of
/// ASCII, and `+` as a space when `plus` is set (queries and forms). A
/// result that still holds escapes is decoded once more, so `%252e`
/// becomes `.`. Invalid UTF-8 becomes U+FFFD. Borrows when there is
/// nothing to decode.
pub(crate) fn percent(raw: &str, plus: bool) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus && b == b'+')) {
        return Cow::Borrowed(raw);
    }
    let mut once = decode_round(bytes, plus);
    if has_escape(&once) {
        // The second round never turns `+` into a space: a `+` left after
        // one round was sent as `%2B`.
        once = decode_round(&once, false);
    }
    fold_overlong(&mut once);
    match String::from_utf8(once) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Whether the raw text used encodings no ordinary client sends for a dot:
/// `%2e`, a double-encoded `%25`, `%u`, or overlong UTF-8 (`%c0`, `%c1`,
/// `%e0%80`).
pub(crate) fn has_evasive_encoding(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()),
                (b'2', b'e') | (b'2', b'5') | (b'c', b'0') | (b'c', b'1') | (b'e', b'0')
            )
    }) || b
        .windows(2)
        .any(|w| w[0] == b'%' && (w[1] == b'u' || w[1] == b'U'))
}

/// The named character references that matter for script URLs and
/// markup; the rest are left alone.
const ENTITIES: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("colon", ':'),
    ("semi", ';'),
    ("lpar", '('),
    ("rpar", ')'),
    ("sol", '/'),
    ("bsol", '\\'),
    ("period", '.'),
    ("equals", '='),
    ("grave", '`'),
    ("tab", '\t'),
    ("newline", '\n'),
    ("nbsp", '\u{a0}'),
    ("excl", '!'),
    ("num", '#'),
    ("plus", '+'),
    ("comma", ','),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
];

/// Decodes HTML character references: `&#106;`, `&#x6A;` (the `;` is
/// optional, as browsers allow), and the named ones that matter for
/// markup and script URLs (`&lt;`, `&colon;`, `&Tab;`…). Borrows when
/// there is none.
pub(crate) fn html_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some((c, used)) = entity(after) {
            out.push(c);
            rest = &after[used..];
            changed = true;
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// The character of the reference at the start of `s` (after `&`) and
/// the bytes it used.
fn entity(s: &str) -> Option<(char, usize)> {
    let b = s.as_bytes();
    if b.first() == Some(&b'#') {
        let (radix, start) = match b.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = b[start..]
            .iter()
            .take_while(|c| {
                if radix == 16 {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            return None;
        }
        // Leading zeros are allowed (`&#0000106`); out of range is U+FFFD.
        let value = s[start..start + digits].bytes().fold(0u32, |acc, d| {
            acc.saturating_mul(radix)
                .saturating_add(u32::from(hex(d).unwrap_or(0)))
        });
        let c = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut used = start + digits;
        if b.get(used) == Some(&b';') {
            used += 1;
        }
        return Some((c, used));
    }
    let name_len = b
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if b.get(name_len) != Some(&b';') {
        return None;
    }
    let name = &s[..name_len];
    ENTITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| (c, name_len + 1))
}

/// Calls `f(raw, text)` for every string literal of a JSON text (keys and
/// values), with `raw` the literal as written (without quotes) and `text`
/// its unescaped value. Tolerant: invalid or truncated JSON yields what
/// could be read, an unterminated string included.
pub(crate) fn json_strings<'a>(json: &'a str, mut f: impl FnMut(&'a str, Cow<'a, str>)) {
    let b = json.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Strings start at `"`; nothing else in JSON holds text.
        let Some(open) = memchr(b'"', &b[i..]) else {
            return;
        };
        let start = i + open + 1;
        let mut j = start;
        let mut escaped = false;
        while j < b.len() {
            match b[j] {
                b'\\' => {
                    escaped = true;
                    j += 2;
                    continue;
                }
                b'"' => break,
                _ => j += 1,
            }
        }
        let end = j.min(b.len());
        let raw = &json[start..end];
        let text = if escaped {
            Cow::Owned(json_unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        f(raw, text);
        i = end + 1;
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The value of a JSON string literal's body; bad escapes are kept.
fn json_unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let digits: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&digits, 16) {
                    Ok(high) if digits.len() == 4 => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        let code = if (0xD800..0xDC00).contains(&high) {
                            // A surrogate pair: `\uD83D\uDE00`.
                            let rest = chars.as_str();
                            match rest
                                .strip_prefix("\\u")
                                .and_then(|r| r.get(..4))
                                .and_then(|d| u32::from_str_radix(d, 16).ok())
                            {
                                Some(low) if (0xDC00..0xE000).contains(&low) => {
                                    for _ in 0..6 {
                                        chars.next();
                                    }
                                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                                }
                                _ => high,
                            }
                        } else {
                            high
                        };
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    _ => out.push_str("\\u"),
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The `name=value` pairs of a query string or form body, raw.
pub(crate) fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Whether `hay` contains `needle` (ASCII lower-case) ignoring ASCII case.
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.len() < needle.len() {
        return false;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).any(|i| {
        hay[i].to_ascii_lowercase() == first
            && hay[i..i + needle.len()]
                .iter()
                .zip(needle)
                .all(|(h, n)| h.to_ascii_lowercase() == *n)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn percent_decoding_sees_through_double_and_overlong_forms() {
        assert_eq!(percent("a%20b+c", true), "a b c");
        assert_eq!(percent("a+b", false), "a+b");
        assert_eq!(percent("%2e%2e%2fetc", false), "../etc");
        assert_eq!(percent("%252e%252e%252f", false), "../");
        assert_eq!(percent("%c0%ae%c0%ae%c0%af", false), "../");
        assert_eq!(percent("%e0%80%ae", false), ".");
        assert_eq!(percent("%c1%9c", false), "\\");
        assert_eq!(percent("%c0%2e%c0%2e/", false), "../");
        assert_eq!(percent("%u002e%u002e%u2215", false), "..\u{2215}");
        assert_eq!(percent("100%", true), "100%");
        assert_eq!(percent("%zz%4", true), "%zz%4");
        assert_eq!(percent("a%00b", false), "a\0b");
        assert!(matches!(percent("plain", true), Cow::Borrowed(_)));
        // A `+` sent as %2B stays a plus.
        assert_eq!(percent("1%2B1", true), "1+1");
        // Not UTF-8: replacement characters, no panic.
        assert_eq!(percent("%ff", false), "\u{fffd}");
    }

    #[test]
    fn evasive_encodings() {
        assert!(has_evasive_encoding("%2E%2E/"));
        assert!(has_evasive_encoding("%252f"));
        assert!(has_evasive_encoding("%c0%ae"));
        assert!(has_evasive_encoding("%u002e"));
        assert!(!has_evasive_encoding("a%2Fb%20c"));
    }

    #[test]
    fn entities() {
        assert_eq!(html_entities("&#106;&#x61;v&#X61"), "java");
        assert_eq!(html_entities("a&colon;b&Tab;&lt;"), "a:b\t<");
        assert_eq!(
            html_entities("fish & chips &unknown;"),
            "fish & chips &unknown;"
        );
        assert_eq!(html_entities("&#0000106;"), "j");
        assert_eq!(html_entities("&#99999999999;"), "\u{fffd}");
    }

    #[test]
    fn json_string_literals() {
        let mut seen = Vec::new();
        json_strings(
            r#"{"a":"x\"y","n":1,"u":"\u003cb\u003e","e":"\ud83d\ude00","t":"unterminated"#,
            |_, text| seen.push(text.into_owned()),
        );
        assert_eq!(
            seen,
            ["a", "x\"y", "n", "u", "<b>", "e", "😀", "t", "unterminated"]
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
        assert!(contains_ci(b"xxJavaScript:", b"javascript:"));
        assert!(!contains_ci(b"java", b"javascript"));
        let p: Vec<_> = pairs("a=1&&b&c=x=y").collect();
        assert_eq!(p, [("a", "1"), ("b", ""), ("c", "x=y")]);
    }

    proptest! {
        #[test]
        fn decoding_never_panics_and_never_grows(s in ".{0,64}", plus: bool) {
            let d = percent(&s, plus);
            // Decoding shrinks, except where U+FFFD (3 bytes) replaces a
            // single invalid byte.
            prop_assert!(d.len() <= s.len() * 3);
            let _ = html_entities(&s);
            json_strings(&s, |_, _| {});
        }

        #[test]
        fn encoded_ascii_round_trips(s in "[ -$&-~]{0,40}") {
            let encoded: String = s.bytes().map(|b| format!("%{b:02x}")).collect();
            prop_assert_eq!(percent(&encoded, true), s.clone());
            let twice: String = s.bytes().map(|b| format!("%25{b:02x}")).collect();
            prop_assert_eq!(percent(&twice, false), s);
        }
    }
}
