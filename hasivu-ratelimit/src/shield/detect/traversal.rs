//! Path traversal and local file inclusion.
//!
//! Paths are decoded first (percent-encoding twice, `%uXXXX`, overlong
//! UTF-8 such as `%c0%ae`), and backslashes count as slashes. In the
//! request path any `..` segment counts, and so does a NUL byte: clients
//! normalise paths before sending them, so only a hand-made request has
//! them. In query values and bodies, where relative links are ordinary
//! (`../images/a.png` in a Markdown text), a `..` segment counts with a
//! sign of intent: three or more levels, a sensitive target
//! (`etc/passwd`, `win.ini`, `.ssh/`, `.env`…), an encoding no client
//! needs for a dot (`%2e`, `%252e`, `%c0%ae`), or a NUL byte. Absolute
//! sensitive paths (`/etc/passwd`, `C:\Windows\win.ini`) and file
//! wrappers (`file://`, `php://filter`) count as values too.

use std::borrow::Cow;

use super::{
    Detector, Finding, Inspection, Location, Marks,
    decode::{contains_ci, has_evasive_encoding},
};

/// Finds path traversal in the decoded path and in query and body values;
/// see the [module docs](crate::shield). Reason `traversal`, default
/// weight 5.
///
/// ```
/// use hasivu_ratelimit::shield::PathTraversal;
///
/// assert!(PathTraversal::in_value("../../etc/passwd"));
/// assert!(PathTraversal::in_value("..\\..\\..\\windows\\win.ini"));
/// assert!(!PathTraversal::in_value("see ../docs/intro.md"));
/// assert!(PathTraversal::in_path("/static/../../app/config.toml"));
/// assert!(!PathTraversal::in_path("/static/app.v1..2.js"));
/// ```
#[derive(Clone, Debug)]
pub struct PathTraversal {
    weight: u32,
}

impl Default for PathTraversal {
    fn default() -> Self {
        Self { weight: 5 }
    }
}

/// Targets of traversal and file inclusion.
const SENSITIVE: &[&[u8]] = &[
    b"etc/passwd",
    b"etc/shadow",
    b"etc/hosts",
    b"etc/group",
    b"etc/issue",
    b"proc/self",
    b"proc/version",
    b"win.ini",
    b"boot.ini",
    b"system32",
    b"system.ini",
    b".ssh/",
    b"id_rsa",
    b".htpasswd",
    b".htaccess",
    b"web.config",
    b"wp-config",
    b".env",
    b".git/",
    b".bash_history",
    b"var/log",
    b"config.php",
    b"appsettings.json",
    b"application.properties",
    b"/bin/sh",
    b"/bin/bash",
    b"web-inf",
    b"meta-inf",
    b"database.yml",
    b"secrets.yml",
    b".aws/",
];

/// File wrappers of LFI payloads, at the start of a value.
const WRAPPERS: &[&[u8]] = &[
    b"file:/",
    b"php://",
    b"phar://",
    b"zip://",
    b"expect://",
    b"data://",
    b"glob://",
    b"jar:file",
];

impl PathTraversal {
    /// The detector with the default weight (5).
    pub fn new() -> Self {
        Self::default()
    }

    /// The score of a finding.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Whether a decoded request path traverses: a `..` segment, a NUL,
    /// or a system file (`/etc/passwd`, `win.ini`) or file wrapper
    /// (`php://`, `file:/`) in it.
    pub fn in_path(decoded: &str) -> bool {
        if !decoded.contains(['.', '\0', ':', '/', '\\']) && !has_lookalike_lead(decoded) {
            return false;
        }
        let decoded = fold_lookalikes(decoded);
        let b = decoded.as_bytes();
        decoded.contains('\0') || dot_segments(b) > 0 || sensitive_path(b)
    }

    /// Whether a decoded query or body value traverses, given only its
    /// decoded form (see [`in_value_raw`](Self::in_value_raw)).
    pub fn in_value(decoded: &str) -> bool {
        Self::in_value_raw(decoded, decoded)
    }

    /// Whether a query or body value traverses; `raw` is the value as sent,
    /// for the encodings only an attacker uses.
    pub fn in_value_raw(raw: &str, decoded: &str) -> bool {
        in_value_marked(raw, decoded, Marks::of(decoded))
    }
}

fn in_value_marked(raw: &str, decoded: &str, marks: Marks) -> bool {
    // Every sign needs a dot, a slash, a backslash or a colon (or a
    // look-alike of one): most values have none and stop here.
    if !marks.any(Marks::DOT | Marks::SLASH | Marks::BACKSLASH | Marks::COLON | Marks::LOOKALIKE) {
        return false;
    }
    let decoded = fold_lookalikes(decoded);
    let b = decoded.as_bytes();
    let mut start = [0u8; 16];
    let mut len = 0;
    for &c in b.iter().skip_while(|c| c.is_ascii_whitespace()).take(16) {
        start[len] = c.to_ascii_lowercase();
        len += 1;
    }
    let lower_start = &start[..len];
    if WRAPPERS.iter().any(|w| lower_start.starts_with(w)) {
        return true;
    }
    if absolute_sensitive(lower_start, b) {
        return true;
    }
    if !b.windows(2).any(|w| w == b"..") {
        return false;
    }
    let levels = dot_segments(b);
    levels > 0
        && (levels >= 3
            || b.contains(&0)
            || has_evasive_encoding(raw)
            || SENSITIVE.iter().any(|s| contains_ci(b, s)))
}

/// Whether a path names a system file (`/etc/passwd`, `/proc/self/…`,
/// `win.ini`, `system32`, `/var/log/…`) or a file wrapper (`php://`,
/// `file:`). Segment by segment, without allocating: dotfiles are
/// [`ProbePaths`](super::ProbePaths)' business.
fn sensitive_path(b: &[u8]) -> bool {
    let mut previous: &[u8] = b"";
    for segment in b.split(|&c| c == b'/' || c == b'\\') {
        if segment.is_empty() {
            continue;
        }
        let is = |name: &[u8]| segment.eq_ignore_ascii_case(name);
        let after = |dir: &[u8]| previous.eq_ignore_ascii_case(dir);
        let hit = is(b"win.ini")
            || is(b"boot.ini")
            || is(b"system32")
            || (after(b"etc") && (is(b"passwd") || is(b"shadow") || is(b"hosts")))
            || (after(b"proc") && (is(b"self") || is(b"version")))
            || (after(b"var") && is(b"log"))
            || (segment.last() == Some(&b':')
                && [
                    &b"php:"[..],
                    b"phar:",
                    b"zip:",
                    b"expect:",
                    b"data:",
                    b"file:",
                ]
                .iter()
                .any(|w| segment.eq_ignore_ascii_case(w)));
        if hit {
            return true;
        }
        previous = segment;
    }
    false
}

/// Whether `text` has a byte that starts one of the look-alikes (all are
/// three-byte sequences starting `E2` or `EF`).
fn has_lookalike_lead(text: &str) -> bool {
    text.bytes().any(|c| c == 0xE2 || c == 0xEF)
}

/// Full-width dots and slashes (`%uff0e`) and the division and set-minus
/// slashes (`%u2215`, `%u2216`), which some servers fold to `.`, `/`, `\`.
fn fold_lookalikes(text: &str) -> Cow<'_, str> {
    const LOOKALIKES: [char; 5] = ['\u{ff0e}', '\u{ff0f}', '\u{ff3c}', '\u{2215}', '\u{2216}'];
    if !has_lookalike_lead(text) || !text.contains(LOOKALIKES) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\u{ff0e}' => '.',
                '\u{ff0f}' | '\u{2215}' => '/',
                '\u{ff3c}' | '\u{2216}' => '\\',
                c => c,
            })
            .collect(),
    )
}

/// `/etc/passwd`, `C:\Windows\win.ini`, `\\server\share\…`: a value that
/// is an absolute path to a sensitive file.
fn absolute_sensitive(lower_start: &[u8], b: &[u8]) -> bool {
    let absolute = lower_start.first() == Some(&b'/')
        || lower_start.starts_with(b"\\\\")
        || (lower_start.len() > 2
            && lower_start[0].is_ascii_alphabetic()
            && lower_start[1] == b':'
            && matches!(lower_start[2], b'/' | b'\\'));
    if !absolute {
        return false;
    }
    let normalised: Vec<u8> = b
        .iter()
        .map(|&c| if c == b'\\' { b'/' } else { c })
        .collect();
    SENSITIVE
        .iter()
        .any(|s| !s.starts_with(b".") && contains_ci(&normalised, s))
}

/// How many dot segments sit between separators (`/` or `\`), at least
/// one of them next to the segment: `..`, the `....//` of filters that
/// strip `../` once, and Tomcat's `..;param`. A trailing ellipsis
/// (`/search/...`) is not one.
fn dot_segments(b: &[u8]) -> usize {
    let sep = |c: u8| c == b'/' || c == b'\\';
    let mut count = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'.' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] == b'.' {
            i += 1;
        }
        let dots = i - start;
        let end = i;
        // A path parameter after the dots (`..;jsessionid=x/`).
        if i < b.len() && b[i] == b';' {
            while i < b.len() && !sep(b[i]) {
                i += 1;
            }
        }
        let before = start == 0 || sep(b[start - 1]);
        let after = i == b.len() || sep(b[i]);
        let beside = (start > 0 && sep(b[start - 1])) || (i < b.len() && sep(b[i]));
        // `...` counts only before a separator (`...//`): a trailing
        // ellipsis is text.
        let counts = dots == 2 || dots >= 4 || (dots == 3 && i < b.len());
        if counts && before && after && beside {
            count += 1;
        }
        i = i.max(end);
    }
    count
}

impl Detector for PathTraversal {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        let hit = Self::in_path(input.decoded_path())
            || input.fields().iter().any(|f| match f.location {
                // The path as a whole was judged above.
                Location::PathSegment => false,
                _ => in_value_marked(f.raw, &f.text, f.marks),
            });
        hit.then_some(Finding::new("traversal", self.weight))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::shield::detect::decode::percent;

    fn value(raw: &str) -> bool {
        PathTraversal::in_value_raw(raw, &percent(raw, true))
    }

    #[test]
    fn values() {
        for payload in [
            "../../etc/passwd",
            "../../../../../../windows/win.ini",
            "..\\..\\..\\boot.ini",
            "..%2f..%2f..%2fetc%2fpasswd",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "%252e%252e%252fetc%252fpasswd",
            "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
            "..%c0%af..%c0%afetc/passwd",
            "../../../../var/www/index.php%00.png",
            "....//....//....//etc/passwd",
            "/etc/passwd",
            "C:\\Windows\\System32\\drivers\\etc\\hosts",
            "file:///etc/passwd",
            "php://filter/convert.base64-encode/resource=index.php",
            "%2e%2e/x",
            "..;/..;/..;/etc/passwd",
            "...//...//...//etc/passwd",
            "../../.aws/credentials",
            "../WEB-INF/web.xml",
        ] {
            assert!(value(payload), "{payload}");
        }
        for text in [
            "see ../docs/intro.md",
            "[up](../README.md)",
            "Wait... what?",
            "1..5 and a...b",
            "version 2.0..2.4",
            "/menu/today",
            "C:\\Users\\me\\Documents\\plan.docx",
            "a%2Fb%2Fc",
            "How do I edit .env files?",
        ] {
            assert!(!value(text), "{text}");
        }
    }

    #[test]
    fn paths() {
        assert!(PathTraversal::in_path("/a/../b"));
        assert!(PathTraversal::in_path("/a/..\\..\\b"));
        assert!(PathTraversal::in_path("/a/.."));
        assert!(PathTraversal::in_path("/file.txt\0.png"));
        assert!(!PathTraversal::in_path("/a/b..c/d"));
        assert!(!PathTraversal::in_path("/a/.well-known/x"));
        assert!(!PathTraversal::in_path("/"));
        assert!(!PathTraversal::in_path("/search/..."));
        assert!(PathTraversal::in_path("/etc/passwd"));
        assert!(PathTraversal::in_path("/files/php://input"));
        assert!(PathTraversal::in_path("/a/..;x=1/b"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = value(&s);
            let _ = PathTraversal::in_path(&s);
        }

        #[test]
        fn dotless_text_never_traverses_relatively(s in "[a-z/\\\\_-]{0,40}") {
            prop_assert_eq!(dot_segments(s.as_bytes()), 0);
        }
    }
}
