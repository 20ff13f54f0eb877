//! Applying a [`Selection`] to JSON: in place on a [`serde_json::Value`],
//! and in one pass over serialized bytes for the middleware.
//!
//! The byte pruner exists because it keeps the document's key order (a
//! `serde_json::Value` only does so with serde_json's `preserve_order`
//! feature), copies numbers and strings exactly as the service wrote them,
//! and never builds a tree for the members it drops. Both follow the same
//! rules, and the tests hold them to each other.

use serde_json::Value;

use super::parse::{Child, Node, Selection};

impl Selection {
    /// Prunes `value` in place to the selected fields.
    ///
    /// In place because it is the cheaper form: members are removed with
    /// `retain`, and nothing that is kept is moved or copied.
    ///
    /// - Objects keep only the selected members, in their order.
    /// - Arrays apply the selection to each element, at any depth (an array
    ///   of arrays of objects prunes the objects).
    /// - A sub-selection (`a(b)`, `a.b`) on a string, number or boolean
    ///   removes it (from its object, or from its array); `null` is kept, as
    ///   GraphQL answers `null` for a missing object.
    /// - Keys that are missing are simply absent from the result.
    /// - A top-level string, number, boolean or `null` is left unchanged.
    ///
    /// ```
    /// use hasivu_compress::fields::Selection;
    /// use serde_json::json;
    ///
    /// let selection = Selection::parse("id,school.name,orders(id)").unwrap();
    /// let mut user = json!({
    ///     "id": 1,
    ///     "email": "a@b",
    ///     "school": {"id": 3, "name": "Green Valley"},
    ///     "orders": [{"id": 1, "total": 5}, {"id": 2, "total": 7}],
    /// });
    /// selection.apply(&mut user);
    /// assert_eq!(
    ///     user,
    ///     json!({"id": 1, "school": {"name": "Green Valley"}, "orders": [{"id": 1}, {"id": 2}]}),
    /// );
    /// ```
    pub fn apply(&self, value: &mut Value) {
        prune(&self.root, value);
    }
}

/// Prunes `value` to `node`; returns whether a sub-selection can keep it at
/// all (objects, arrays and `null`).
fn prune(node: &Node, value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            map.retain(|key, member| match node.get(key) {
                None => false,
                Some(Child::Whole) => true,
                Some(Child::Part(inner)) => prune(inner, member),
            });
            true
        }
        Value::Array(items) => {
            items.retain_mut(|item| prune(node, item));
            true
        }
        Value::Null => true,
        Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}

/// Containers nested deeper than this are refused, like `serde_json` does,
/// which also bounds the recursion.
const MAX_NESTING: usize = 128;

/// Prunes a serialized JSON document to `selection` with the rules of
/// [`Selection::apply`], writing it compactly (scalars are copied verbatim).
///
/// Returns `None` when `input` is not JSON (RFC 8259: UTF-8, one value,
/// surrounding whitespace) or nests more than 128 containers. Duplicate
/// keys are all kept, where a `Value` would keep the last.
pub(crate) fn prune_slice(selection: &Selection, input: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(input).ok()?;
    let mut pruner = Pruner {
        text,
        input,
        pos: 0,
        out: Vec::with_capacity(input.len()),
    };
    pruner.whitespace();
    pruner.value(Mode::Select(&selection.root), 0)?;
    pruner.whitespace();
    (pruner.pos == input.len()).then_some(pruner.out)
}

/// What to do with the value being scanned.
#[derive(Clone, Copy)]
enum Mode<'s> {
    /// Validate only.
    Skip,
    /// Copy it whole.
    Keep,
    /// Copy the selected parts of it.
    Select(&'s Node),
}

struct Pruner<'a> {
    text: &'a str,
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
}

impl<'a> Pruner<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A value starting at the current position (whitespace skipped).
    fn value<'s>(&mut self, mode: Mode<'s>, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(mode, depth + 1),
            b'[' => self.array(mode, depth + 1),
            _ => {
                let start = self.pos;
                self.scalar()?;
                // A scalar under `Select` is the top-level value: kept as is.
                if !matches!(mode, Mode::Skip) {
                    self.out.extend_from_slice(&self.input[start..self.pos]);
                }
                Some(())
            }
        }
    }

    fn object<'s>(&mut self, mode: Mode<'s>, depth: usize) -> Option<()> {
        if depth > MAX_NESTING {
            return None;
        }
        let write = !matches!(mode, Mode::Skip);
        self.pos += 1;
        if write {
            self.out.push(b'{');
        }
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            let mut first = true;
            loop {
                self.whitespace();
                let key_start = self.pos;
                let escaped = self.string()?;
                let key_end = self.pos;
                self.whitespace();
                if self.next()? != b':' {
                    return None;
                }
                self.whitespace();
                let member = match mode {
                    Mode::Skip => Mode::Skip,
                    Mode::Keep => Mode::Keep,
                    Mode::Select(node) => {
                        let raw = &self.text[key_start + 1..key_end - 1];
                        let child = if escaped {
                            node.get(&unescape(raw))
                        } else {
                            node.get(raw)
                        };
                        match child {
                            None => Mode::Skip,
                            Some(Child::Whole) => Mode::Keep,
                            Some(Child::Part(inner)) => self.select_in(inner),
                        }
                    }
                };
                if !matches!(member, Mode::Skip) {
                    if !first {
                        self.out.push(b',');
                    }
                    first = false;
                    self.out.extend_from_slice(&self.input[key_start..key_end]);
                    self.out.push(b':');
                }
                self.value(member, depth)?;
                self.whitespace();
                match self.next()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        if write {
            self.out.push(b'}');
        }
        Some(())
    }

    /// The mode for the value at the current position under a
    /// sub-selection: only objects, arrays and `null` survive one.
    fn select_in<'s>(&self, node: &'s Node) -> Mode<'s> {
        match self.peek() {
            Some(b'{' | b'[' | b'n') => Mode::Select(node),
            _ => Mode::Skip,
        }
    }

    fn array<'s>(&mut self, mode: Mode<'s>, depth: usize) -> Option<()> {
        if depth > MAX_NESTING {
            return None;
        }
        let write = !matches!(mode, Mode::Skip);
        self.pos += 1;
        if write {
            self.out.push(b'[');
        }
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            let mut first = true;
            loop {
                self.whitespace();
                let element = match mode {
                    Mode::Select(node) => self.select_in(node),
                    other => other,
                };
                if !matches!(element, Mode::Skip) {
                    if !first {
                        self.out.push(b',');
                    }
                    first = false;
                }
                self.value(element, depth)?;
                self.whitespace();
                match self.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
        }
        if write {
            self.out.push(b']');
        }
        Some(())
    }

    /// A string, number or literal.
    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        if self.input.get(self.pos..end)? != word {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digit()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digit()?;
        }
        Some(())
    }

    /// One or more digits.
    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then(|| self.digits())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A string starting at the current `"`; returns whether it holds
    /// escapes. The input is already known to be UTF-8.
    fn string(&mut self) -> Option<bool> {
        if self.next()? != b'"' {
            return None;
        }
        let mut escaped = false;
        loop {
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.input.get(self.pos..self.pos + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.pos += 4;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {}
            }
        }
    }
}

/// Decodes the escapes of a validated key, well enough to compare it with
/// field names: those are ASCII, so any non-ASCII `\u` escape becomes
/// U+FFFD, which matches none (and needs no surrogate handling).
fn unescape(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut index, mut copied) = (0, 0);
    while index < bytes.len() {
        if bytes[index] != b'\\' {
            index += 1;
            continue;
        }
        out.push_str(&raw[copied..index]);
        let (c, len) = match bytes.get(index + 1) {
            Some(b'u') => {
                let c = raw
                    .get(index + 2..index + 6)
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .and_then(char::from_u32)
                    .filter(char::is_ascii)
                    .unwrap_or('\u{fffd}');
                (c, 6)
            }
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(&other) => (char::from(other), 2),
            None => ('\u{fffd}', 1),
        };
        out.push(c);
        index += len;
        copied = index.min(bytes.len());
    }
    out.push_str(raw.get(copied..).unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn applied(selection: &str, mut value: Value) -> Value {
        Selection::parse(selection).unwrap().apply(&mut value);
        value
    }

    fn pruned(selection: &str, input: &str) -> Option<String> {
        let selection = Selection::parse(selection).unwrap();
        prune_slice(&selection, input.as_bytes()).map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn nested_objects() {
        let user = json!({"id": 1, "email": "a@b", "school": {"id": 3, "name": "G", "city": "X"}});
        assert_eq!(
            applied("id,school.name", user.clone()),
            json!({"id": 1, "school": {"name": "G"}})
        );
        assert_eq!(
            applied("school", user.clone()),
            json!({"school": {"id": 3, "name": "G", "city": "X"}})
        );
        assert_eq!(
            applied("school(id,city)", user),
            json!({"school": {"id": 3, "city": "X"}})
        );
    }

    #[test]
    fn arrays_of_objects_and_arrays_of_arrays() {
        let doc = json!({"orders": [{"id": 1, "total": 5}, {"id": 2, "total": 7}], "grid": [[{"a": 1, "b": 2}], [], [{"a": 3}]]});
        assert_eq!(
            applied("orders(id),grid.a", doc),
            json!({"orders": [{"id": 1}, {"id": 2}], "grid": [[{"a": 1}], [], [{"a": 3}]]})
        );
        let top = json!([{"id": 1, "x": 0}, [{"id": 2, "x": 0}], 5, null]);
        assert_eq!(applied("id", top), json!([{"id": 1}, [{"id": 2}], null]));
    }

    #[test]
    fn scalars_under_sub_selections_are_dropped_but_null_is_kept() {
        let doc =
            json!({"a": 1, "b": "s", "c": true, "d": null, "e": [1, {"x": 1, "y": 2}, "z", null]});
        assert_eq!(
            applied("a.x,b.x,c.x,d.x,e.x", doc),
            json!({"d": null, "e": [{"x": 1}, null]})
        );
        assert_eq!(applied("a", json!(3)), json!(3));
        assert_eq!(applied("a", json!("s")), json!("s"));
    }

    #[test]
    fn wildcard_keeps_everything_except_explicit_sub_selections() {
        let doc = json!({"id": 1, "school": {"id": 3, "name": "G"}, "tags": ["x"], "n": null});
        assert_eq!(applied("*", doc.clone()), doc);
        assert_eq!(
            applied("*,school.name", doc.clone()),
            json!({"id": 1, "school": {"name": "G"}, "tags": ["x"], "n": null})
        );
        // `*.id` applies `id` to every member; scalars under it are dropped.
        assert_eq!(
            applied("*.id", doc.clone()),
            json!({"school": {"id": 3}, "tags": [], "n": null})
        );
        // An explicit member's selection replaces the wildcard's.
        assert_eq!(
            applied("*.id,school.name,id", doc),
            json!({"id": 1, "school": {"name": "G"}, "tags": [], "n": null})
        );
    }

    #[test]
    fn missing_keys_are_absent() {
        assert_eq!(
            applied("nope,a.nope,b(c)", json!({"a": {"x": 1}, "z": 2})),
            json!({"a": {}})
        );
        assert_eq!(applied("a", json!({})), json!({}));
    }

    #[test]
    fn bytes_keep_key_order_and_scalars_verbatim() {
        let input =
            r#" { "z" : 1.50 , "b" : {"y": 1e2, "x": "\u00e9"}, "a" : [ 1 , 2 ] , "m": -0 } "#;
        assert_eq!(
            pruned("a,z,b(x,y)", input).as_deref(),
            Some(r#"{"z":1.50,"b":{"y":1e2,"x":"\u00e9"},"a":[1,2]}"#)
        );
        assert_eq!(
            pruned("m,a", input).as_deref(),
            Some(r#"{"a":[1,2],"m":-0}"#)
        );
        assert_eq!(pruned("q", input).as_deref(), Some("{}"));
        assert_eq!(pruned("x", " 5 ").as_deref(), Some("5"));
        assert_eq!(
            pruned("x", "[1,{\"x\":2,\"y\":[]},null]").as_deref(),
            Some("[{\"x\":2},null]")
        );
    }

    #[test]
    fn bytes_match_escaped_keys() {
        let input = r#"{"\u0069d":1,"na\u006De":{"\"q\"":2,"a\/b":3},"\u00e9":4}"#;
        assert_eq!(
            pruned("id,name", input).as_deref(),
            Some(r#"{"\u0069d":1,"na\u006De":{"\"q\"":2,"a\/b":3}}"#)
        );
        assert_eq!(
            pruned("name(q)", input).as_deref(),
            Some(r#"{"na\u006De":{}}"#)
        );
        assert_eq!(
            pruned("*", input).as_deref(),
            Some(r#"{"\u0069d":1,"na\u006De":{"\"q\"":2,"a\/b":3},"\u00e9":4}"#)
        );
    }

    #[test]
    fn bytes_refuse_invalid_json() {
        let invalid = [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "1e",
            ".5",
            "tru",
            "nul",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "1 2",
            "[1] x",
            "{\"a\":1}}",
            "NaN",
            "'a'",
            "[\"a\":1]",
        ];
        for input in invalid {
            assert_eq!(pruned("a", input), None, "{input:?}");
            assert!(serde_json::from_str::<Value>(input).is_err(), "{input:?}");
        }
        assert!(prune_slice(&Selection::parse("a").unwrap(), b"\"\xff\"").is_none());
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(pruned("a", &deep), None);
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert_eq!(pruned("a", &ok).as_deref(), Some(ok.as_str()));
    }

    #[test]
    fn unescape_decodes_ascii_and_replaces_the_rest() {
        assert_eq!(unescape(r"a\u0062\n\/\\\u00e9"), "ab\n/\\\u{fffd}");
        assert_eq!(unescape(r"\ud83d\ude00x"), "\u{fffd}\u{fffd}x");
        assert_eq!(unescape("plain"), "plain");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            // Short dyadic fractions, which serde_json parses exactly back.
            (any::<i16>(), 0..8)
                .prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u16 << e))),
            "[a-z\"\\\\é ]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-e]", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A selection as plain paths over the names `a` to `e`.
    fn selection_paths() -> impl Strategy<Value = Vec<Vec<String>>> {
        proptest::collection::vec(proptest::collection::vec("[a-e]", 1..4), 1..5)
    }

    /// Independent model of pruning over a set of paths (no wildcard):
    /// a value at `path` is kept whole when a selected path is a prefix of
    /// it, descended into when it is a proper prefix of a selected path, and
    /// otherwise dropped; arrays do not add to the path, and only the
    /// top-level value itself survives being a scalar.
    fn model(value: &Value, path: &[String], paths: &[Vec<String>], top: bool) -> Option<Value> {
        if paths.iter().any(|p| path.starts_with(p)) {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter_map(|(key, member)| {
                        let mut inner = path.to_vec();
                        inner.push(key.clone());
                        if !paths.iter().any(|p| p.starts_with(&inner)) {
                            return None;
                        }
                        model(member, &inner, paths, false).map(|kept| (key.clone(), kept))
                    })
                    .collect(),
            )),
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .filter_map(|item| model(item, path, paths, false))
                    .collect(),
            )),
            Value::Null => Some(Value::Null),
            _ if top => Some(value.clone()),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn apply_matches_the_model(value in json_value(), paths in selection_paths()) {
            let text = paths.iter().map(|p| p.join(".")).collect::<Vec<_>>().join(",");
            let selection = Selection::parse(&text).unwrap();
            let mut actual = value.clone();
            selection.apply(&mut actual);
            prop_assert_eq!(Some(actual.clone()), model(&value, &[], &paths, true));

            let serialized = serde_json::to_vec_pretty(&value).unwrap();
            let bytes = prune_slice(&selection, &serialized).unwrap();
            let reparsed: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(reparsed, actual);
            // Compact, and in the document's order.
            let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(&bytes).unwrap()).unwrap();
            prop_assert_eq!(bytes, compact);
        }

        #[test]
        fn bytes_agree_with_serde_json_on_validity(input in "[\\[\\]{}\":,0-2.eE+ tnrulfas-]{0,24}") {
            let selection = Selection::parse("a,b.c").unwrap();
            let ours = prune_slice(&selection, input.as_bytes());
            match serde_json::from_str::<Value>(&input) {
                Ok(mut value) => {
                    let ours = ours.expect("valid JSON was refused");
                    selection.apply(&mut value);
                    prop_assert_eq!(serde_json::from_slice::<Value>(&ours).unwrap(), value);
                }
                Err(error) if error.to_string().contains("out of range") => {}
                Err(_) => prop_assert!(ours.is_none()),
            }
        }

        #[test]
        fn bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64), selection in "[a-c*]([.,][a-c*]){0,4}") {
            let selection = Selection::parse(&selection).unwrap();
            let _ = prune_slice(&selection, &input);
        }

        #[test]
        fn bytes_never_panic_on_mutated_json(value in json_value(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut input = serde_json::to_vec(&value).unwrap();
            let index = at.index(input.len());
            input[index] = byte;
            let selection = Selection::parse("a,b(c,*),*.d").unwrap();
            let ours = prune_slice(&selection, &input);
            match serde_json::from_slice::<Value>(&input) {
                Ok(_) => prop_assert!(ours.is_some()),
                // Valid JSON that serde_json declines to hold.
                Err(error)
                    if ["surrogate", "out of range"]
                        .iter()
                        .any(|reason| error.to_string().contains(reason)) => {}
                Err(_) => prop_assert!(ours.is_none()),
            }
        }
    }
}
