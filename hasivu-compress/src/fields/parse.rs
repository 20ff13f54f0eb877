//! The selection parser: a pure function from text to a [`Selection`] tree.
//!
//! Recursive descent over bytes. Recursion only happens after a field name
//! at a deeper level, so it is bounded by the depth limit, which is itself
//! capped at [`MAX_DEPTH_CEILING`].

use std::{borrow::Cow, error::Error, fmt, str::FromStr};

use percent_encoding::percent_decode;

/// Hard upper bound for [`SelectionLimits::max_depth`]. `serde_json` refuses
/// documents nested deeper than 128, so a deeper selection could never match
/// anything; the cap also bounds the parser's recursion.
const MAX_DEPTH_CEILING: usize = 128;

/// A parsed field selection such as `id,email,school.name,orders(id)`.
///
/// Build one with [`Selection::parse`] (or [`str::parse`]) or
/// [`Selection::from_query`], and apply it with [`Selection::apply`]. The
/// tree is canonical: duplicates and overlaps are merged while parsing, so
/// two selections that select the same fields compare equal, and
/// [`Display`](fmt::Display) writes a canonical text that parses back to an
/// equal selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub(crate) root: Node,
}

/// The fields selected at one level of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Node {
    /// Named fields, sorted by name so lookups can binary-search.
    fields: Vec<(Box<str>, Child)>,
    /// What `*` selects, for the keys not named in `fields`.
    rest: Option<Box<Child>>,
}

/// What is selected inside one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Child {
    /// The whole value.
    Whole,
    /// Only these fields of the value (of each element for arrays).
    Part(Node),
}

impl Node {
    /// The selection for the member `key`: its own entry if it is named,
    /// otherwise the wildcard's, if any.
    pub(crate) fn get(&self, key: &str) -> Option<&Child> {
        match self.fields.binary_search_by(|(name, _)| (**name).cmp(key)) {
            Ok(index) => Some(&self.fields[index].1),
            Err(_) => self.rest.as_deref(),
        }
    }

    /// Adds `child` under `name` (`*` is the wildcard), merging it with
    /// whatever is already selected there.
    fn insert(&mut self, name: &str, child: Child) {
        if name == "*" {
            match &mut self.rest {
                Some(slot) => slot.merge(child),
                None => self.rest = Some(Box::new(child)),
            }
            return;
        }
        match self
            .fields
            .binary_search_by(|(field, _)| (**field).cmp(name))
        {
            Ok(index) => self.fields[index].1.merge(child),
            Err(index) => self.fields.insert(index, (name.into(), child)),
        }
    }

    /// The number of entries, counting the wildcard.
    fn len(&self) -> usize {
        self.fields.len() + usize::from(self.rest.is_some())
    }

    /// The entries in canonical order: named fields by name, then `*`.
    fn entries(&self) -> impl Iterator<Item = (&str, &Child)> {
        self.fields
            .iter()
            .map(|(name, child)| (&**name, child))
            .chain(self.rest.as_deref().map(|child| ("*", child)))
    }
}

impl Child {
    /// Merges two selections of the same field: the whole value absorbs any
    /// part of it, and two parts are united.
    fn merge(&mut self, other: Child) {
        match other {
            Child::Whole => *self = Child::Whole,
            Child::Part(other) => {
                if let Child::Part(node) = self {
                    node.rest = match (node.rest.take(), other.rest) {
                        (Some(mut mine), Some(theirs)) => {
                            mine.merge(*theirs);
                            Some(mine)
                        }
                        (mine, theirs) => mine.or(theirs),
                    };
                    for (name, child) in other.fields {
                        node.insert(&name, child);
                    }
                }
            }
        }
    }
}

/// Bounds on the selections [`Selection::parse_with_limits`] accepts, so a
/// hostile query string costs little to refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectionLimits {
    max_len: usize,
    max_depth: usize,
    max_names: usize,
}

impl SelectionLimits {
    /// The defaults: 2048 bytes, 16 levels, 256 field names.
    pub const fn new() -> Self {
        Self {
            max_len: 2048,
            max_depth: 16,
            max_names: 256,
        }
    }

    /// The longest selection accepted, in bytes (after percent-decoding).
    /// Default 2048.
    #[must_use]
    pub const fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// The deepest field accepted: `a` is at level 1, `a.b` and `a(b)` reach
    /// level 2. Default 16; values above 128 are treated as 128 (JSON
    /// nested deeper than that is refused by `serde_json` anyway).
    #[must_use]
    pub const fn max_depth(mut self, levels: usize) -> Self {
        self.max_depth = if levels > MAX_DEPTH_CEILING {
            MAX_DEPTH_CEILING
        } else {
            levels
        };
        self
    }

    /// The most field names accepted (every name counts, `*` and repeats
    /// included). Default 256.
    #[must_use]
    pub const fn max_names(mut self, names: usize) -> Self {
        self.max_names = names;
        self
    }
}

impl Default for SelectionLimits {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a selection was refused, and where.
///
/// The message names the byte position in the (percent-decoded) selection,
/// for example `expected a field name at position 7`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelectionError {
    kind: SelectionErrorKind,
    position: usize,
}

/// The kinds of [`SelectionError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectionErrorKind {
    /// Nothing but whitespace (`empty selection`).
    Empty,
    /// A field name (or `*`) was required here, such as after `,`, `.`, `/`
    /// or `(`.
    ExpectedName,
    /// A character that cannot appear here.
    Unexpected(char),
    /// A `(` without its `)` (the position is the `(`'s) or a `)` without
    /// its `(`.
    Unbalanced(char),
    /// The selection is longer than [`SelectionLimits::max_len`]; the
    /// position is the limit.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A field deeper than [`SelectionLimits::max_depth`].
    TooDeep {
        /// The limit, in levels.
        max: usize,
    },
    /// More field names than [`SelectionLimits::max_names`].
    TooManyNames {
        /// The limit, in names.
        max: usize,
    },
    /// The percent-decoded query parameter is not UTF-8.
    InvalidUtf8,
}

impl SelectionError {
    const fn new(kind: SelectionErrorKind, position: usize) -> Self {
        Self { kind, position }
    }

    /// What went wrong.
    pub const fn kind(&self) -> SelectionErrorKind {
        self.kind
    }

    /// The byte offset in the selection text (after percent-decoding) where
    /// the problem was found.
    pub const fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for SelectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.position;
        match self.kind {
            SelectionErrorKind::Empty => f.write_str("empty selection"),
            SelectionErrorKind::ExpectedName => {
                write!(f, "expected a field name at position {at}")
            }
            SelectionErrorKind::Unexpected(c) => {
                write!(f, "unexpected \"{}\" at position {at}", c.escape_debug())
            }
            SelectionErrorKind::Unbalanced(c) => {
                write!(f, "unbalanced \"{c}\" at position {at}")
            }
            SelectionErrorKind::TooLong { max } => {
                write!(f, "selection longer than {max} bytes")
            }
            SelectionErrorKind::TooDeep { max } => {
                write!(
                    f,
                    "selection nested deeper than {max} levels at position {at}"
                )
            }
            SelectionErrorKind::TooManyNames { max } => {
                write!(
                    f,
                    "selection has more than {max} field names at position {at}"
                )
            }
            SelectionErrorKind::InvalidUtf8 => {
                write!(f, "selection is not valid UTF-8 at position {at}")
            }
        }
    }
}

impl Error for SelectionError {}

impl Selection {
    /// Parses a selection with the default [`SelectionLimits`].
    ///
    /// ```
    /// use hasivu_compress::fields::Selection;
    ///
    /// let selection = Selection::parse("id, email, school.name, orders(id)").unwrap();
    /// assert_eq!(selection.to_string(), "email,id,orders.id,school.name");
    ///
    /// let error = Selection::parse("id,,email").unwrap_err();
    /// assert_eq!(error.to_string(), "expected a field name at position 3");
    /// ```
    pub fn parse(input: &str) -> Result<Self, SelectionError> {
        Self::parse_with_limits(input, SelectionLimits::new())
    }

    /// Parses a selection with the given bounds.
    pub fn parse_with_limits(input: &str, limits: SelectionLimits) -> Result<Self, SelectionError> {
        if input.len() > limits.max_len {
            return Err(SelectionError::new(
                SelectionErrorKind::TooLong {
                    max: limits.max_len,
                },
                limits.max_len,
            ));
        }
        if input.bytes().all(|b| b.is_ascii_whitespace()) {
            return Err(SelectionError::new(SelectionErrorKind::Empty, 0));
        }
        let mut parser = Parser {
            input,
            pos: 0,
            names: 0,
            limits,
        };
        let root = parser.list(1, None)?;
        Ok(Self { root })
    }

    /// Finds the parameter `param` in a raw query string (`a=1&fields=id%2Cemail`),
    /// percent-decodes it (`+` is a space) and parses it with the default
    /// [`SelectionLimits`].
    ///
    /// Returns `Ok(None)` when the parameter is absent. A parameter that is
    /// present but empty (`fields=`, `fields`) is an error. When the
    /// parameter is repeated, the first occurrence is used. Error positions
    /// are offsets in the decoded value.
    ///
    /// ```
    /// use hasivu_compress::fields::Selection;
    ///
    /// let selection = Selection::from_query("page=2&fields=id%2Cschool.name", "fields").unwrap();
    /// assert_eq!(selection, Some(Selection::parse("id,school.name").unwrap()));
    /// assert_eq!(Selection::from_query("page=2", "fields").unwrap(), None);
    /// ```
    pub fn from_query(query: &str, param: &str) -> Result<Option<Self>, SelectionError> {
        Self::from_query_with_limits(query, param, SelectionLimits::new())
    }

    /// [`Selection::from_query`] with the given bounds.
    pub fn from_query_with_limits(
        query: &str,
        param: &str,
        limits: SelectionLimits,
    ) -> Result<Option<Self>, SelectionError> {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if *decode(key) != *param.as_bytes() {
                continue;
            }
            let value = decode(value);
            let text = std::str::from_utf8(&value).map_err(|error| {
                SelectionError::new(SelectionErrorKind::InvalidUtf8, error.valid_up_to())
            })?;
            return Self::parse_with_limits(text, limits).map(Some);
        }
        Ok(None)
    }
}

impl FromStr for Selection {
    type Err = SelectionError;

    fn from_str(input: &str) -> Result<Self, SelectionError> {
        Self::parse(input)
    }
}

/// Writes the canonical form: names sorted, `*` last, a level with a single
/// entry written with `.`, others with parentheses.
impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_entries(&self.root, f)
    }
}

fn write_entries(node: &Node, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (index, (name, child)) in node.entries().enumerate() {
        if index > 0 {
            f.write_str(",")?;
        }
        f.write_str(name)?;
        if let Child::Part(inner) = child {
            if inner.len() == 1 {
                f.write_str(".")?;
                write_entries(inner, f)?;
            } else {
                f.write_str("(")?;
                write_entries(inner, f)?;
                f.write_str(")")?;
            }
        }
    }
    Ok(())
}

/// Percent-decodes a query component, with `+` meaning a space. Borrows
/// when there is nothing to decode.
fn decode(raw: &str) -> Cow<'_, [u8]> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        Cow::Owned(percent_decode(spaced.as_bytes()).collect())
    } else {
        percent_decode(raw.as_bytes()).into()
    }
}

/// Bytes allowed in a field name besides `*`.
const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$' | b'@')
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    names: usize,
    limits: SelectionLimits,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn error(&self, kind: SelectionErrorKind) -> SelectionError {
        SelectionError::new(kind, self.pos)
    }

    /// The error for the character at the current position. The parser only
    /// ever steps over ASCII, so the position is a character boundary.
    fn unexpected(&self) -> SelectionError {
        let c = self.input[self.pos..].chars().next().unwrap_or('\0');
        self.error(SelectionErrorKind::Unexpected(c))
    }

    /// `list = item *("," item)`, at `depth`; `open` is the position of the
    /// `(` that started it, for nested lists.
    fn list(&mut self, depth: usize, open: Option<usize>) -> Result<Node, SelectionError> {
        let mut node = Node::default();
        loop {
            self.item(depth, &mut node)?;
            self.skip_whitespace();
            match (self.peek(), open) {
                (Some(b','), _) => self.pos += 1,
                (Some(b')'), Some(_)) => {
                    self.pos += 1;
                    return Ok(node);
                }
                (Some(b')'), None) => {
                    return Err(self.error(SelectionErrorKind::Unbalanced(')')));
                }
                (None, None) => return Ok(node),
                (None, Some(open)) => {
                    return Err(SelectionError::new(
                        SelectionErrorKind::Unbalanced('('),
                        open,
                    ));
                }
                (Some(_), _) => return Err(self.unexpected()),
            }
        }
    }

    /// `item = path [ "(" list ")" ]`, merged into `node`.
    fn item(&mut self, depth: usize, node: &mut Node) -> Result<(), SelectionError> {
        let mut path = vec![self.name(depth)?];
        loop {
            self.skip_whitespace();
            if !matches!(self.peek(), Some(b'.' | b'/')) {
                break;
            }
            self.pos += 1;
            path.push(self.name(depth + path.len())?);
        }
        let mut child = if self.peek() == Some(b'(') {
            let open = self.pos;
            self.pos += 1;
            Child::Part(self.list(depth + path.len(), Some(open))?)
        } else {
            Child::Whole
        };
        // `a.b.c` is `a(b(c))`: build it from the inside out, then merge.
        for name in path[1..].iter().rev() {
            let mut inner = Node::default();
            inner.insert(name, child);
            child = Child::Part(inner);
        }
        node.insert(path[0], child);
        Ok(())
    }

    /// `name = 1*( ALPHA / DIGIT / "_" / "-" / "$" / "@" ) / "*"`, at `depth`.
    fn name(&mut self, depth: usize) -> Result<&'a str, SelectionError> {
        self.skip_whitespace();
        let start = self.pos;
        match self.peek() {
            Some(b'*') => self.pos += 1,
            Some(b) if is_name_byte(b) => {
                while self.peek().is_some_and(is_name_byte) {
                    self.pos += 1;
                }
            }
            _ => return Err(self.error(SelectionErrorKind::ExpectedName)),
        }
        if depth > self.limits.max_depth {
            return Err(SelectionError::new(
                SelectionErrorKind::TooDeep {
                    max: self.limits.max_depth,
                },
                start,
            ));
        }
        self.names += 1;
        if self.names > self.limits.max_names {
            return Err(SelectionError::new(
                SelectionErrorKind::TooManyNames {
                    max: self.limits.max_names,
                },
                start,
            ));
        }
        Ok(&self.input[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(input: &str) -> Selection {
        Selection::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn valid_selections_in_canonical_form() {
        let cases = [
            ("id", "id"),
            ("id,email,school.name", "email,id,school.name"),
            ("school/name", "school.name"),
            ("items(id,name)", "items(id,name)"),
            ("items(id,tags(name))", "items(id,tags.name)"),
            ("*", "*"),
            ("id, school . name", "id,school.name"),
            (" \t id \n", "id"),
            ("a.b.c", "a.b.c"),
            ("a/b(c,d)", "a.b(c,d)"),
            ("a(b/c)", "a.b.c"),
            ("_-$@9,A", "A,_-$@9"),
            ("*(id)", "*.id"),
            ("*.id,a", "a,*.id"),
            ("a ( b , c ) , d", "a(b,c),d"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
    }

    #[test]
    fn duplicates_and_overlaps_merge() {
        let cases = [
            ("a,a", "a"),
            ("a,a.b", "a"),
            ("a.b,a", "a"),
            ("a.b,a.c", "a(b,c)"),
            ("a(b),a(c(d)),a.c.e", "a(b,c(d,e))"),
            ("a(b(c)),a.b", "a.b"),
            ("*,*", "*"),
            ("*.a,*.b", "*(a,b)"),
            ("*.a,*", "*"),
            ("a.*,a.b", "a(b,*)"),
            ("x/y,x.y.z", "x.y"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
        assert_eq!(parse("a.b,a.c"), parse("a(c,b)"));
    }

    #[test]
    fn invalid_selections_name_the_position() {
        let cases = [
            ("", "empty selection"),
            ("  ", "empty selection"),
            (",a", "expected a field name at position 0"),
            ("a,", "expected a field name at position 2"),
            ("id,email,", "expected a field name at position 9"),
            ("a,,b", "expected a field name at position 2"),
            ("a.", "expected a field name at position 2"),
            ("a..b", "expected a field name at position 2"),
            ("a./b", "expected a field name at position 2"),
            ("a()", "expected a field name at position 2"),
            ("(a)", "expected a field name at position 0"),
            ("a(b,)", "expected a field name at position 4"),
            ("#a", "expected a field name at position 0"),
            ("a)", "unbalanced \")\" at position 1"),
            ("a(b))", "unbalanced \")\" at position 4"),
            ("a(b", "unbalanced \"(\" at position 1"),
            ("a(b(c)", "unbalanced \"(\" at position 1"),
            ("x,a(b(c)", "unbalanced \"(\" at position 3"),
            ("a b", "unexpected \"b\" at position 2"),
            ("a#", "unexpected \"#\" at position 1"),
            ("a*", "unexpected \"*\" at position 1"),
            ("*a", "unexpected \"a\" at position 1"),
            ("a(b)c", "unexpected \"c\" at position 4"),
            ("a(b).c", "unexpected \".\" at position 4"),
            ("ab\u{e9}", "unexpected \"\u{e9}\" at position 2"),
            ("a\u{0}", "unexpected \"\\0\" at position 1"),
            ("a\"", "unexpected \"\\\"\" at position 1"),
        ];
        for (input, message) in cases {
            let error = Selection::parse(input).unwrap_err();
            assert_eq!(error.to_string(), message, "{input:?}");
        }
    }

    #[test]
    fn error_kinds_and_positions() {
        let error = Selection::parse("id,email,(").unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::ExpectedName);
        assert_eq!(error.position(), 9);
        let error = Selection::parse("a)").unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::Unbalanced(')'));
        assert_eq!(error.position(), 1);
    }

    #[test]
    fn length_is_bounded() {
        let limits = SelectionLimits::new().max_len(8);
        assert!(Selection::parse_with_limits("abcd,efg", limits).is_ok());
        let error = Selection::parse_with_limits("abcd,efgh", limits).unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::TooLong { max: 8 });
        assert_eq!(error.position(), 8);
        assert_eq!(error.to_string(), "selection longer than 8 bytes");
        let long = "a".repeat(2049);
        assert_eq!(
            Selection::parse(&long).unwrap_err().kind(),
            SelectionErrorKind::TooLong { max: 2048 }
        );
        assert!(Selection::parse(&long[1..]).is_ok());
    }

    #[test]
    fn depth_is_bounded() {
        let ok = vec!["a"; 16].join(".");
        assert!(Selection::parse(&ok).is_ok());
        let deep = vec!["a"; 17].join(".");
        let error = Selection::parse(&deep).unwrap_err();
        assert_eq!(
            error.to_string(),
            "selection nested deeper than 16 levels at position 32"
        );
        let nested = format!("{}b{}", "a(".repeat(16), ")".repeat(16));
        let error = Selection::parse(&nested).unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::TooDeep { max: 16 });
        assert_eq!(error.position(), 32);
        let limits = SelectionLimits::new().max_depth(2);
        assert!(Selection::parse_with_limits("a.b,c(d)", limits).is_ok());
        let error = Selection::parse_with_limits("a(b.c)", limits).unwrap_err();
        assert_eq!(
            error.to_string(),
            "selection nested deeper than 2 levels at position 4"
        );
        // The ceiling keeps recursion bounded even with silly limits.
        let limits = SelectionLimits::new()
            .max_depth(usize::MAX)
            .max_len(usize::MAX);
        let nested = format!("{}b{}", "a(".repeat(200), ")".repeat(200));
        let error = Selection::parse_with_limits(&nested, limits).unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::TooDeep { max: 128 });
    }

    #[test]
    fn names_are_bounded() {
        let ok = vec!["a"; 256].join(",");
        assert!(Selection::parse(&ok).is_ok());
        let many = vec!["a"; 257].join(",");
        let error = Selection::parse(&many).unwrap_err();
        assert_eq!(
            error.to_string(),
            "selection has more than 256 field names at position 512"
        );
        let limits = SelectionLimits::new().max_names(3);
        assert!(Selection::parse_with_limits("a.b.c", limits).is_ok());
        assert!(Selection::parse_with_limits("a.b,*", limits).is_ok());
        let error = Selection::parse_with_limits("a(b,c),d", limits).unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::TooManyNames { max: 3 });
        assert_eq!(error.position(), 7);
    }

    #[test]
    fn from_query_decodes_the_parameter() {
        let found = |query: &str| Selection::from_query(query, "fields");
        assert_eq!(found("").unwrap(), None);
        assert_eq!(found("a=1&b").unwrap(), None);
        assert_eq!(found("fieldsx=a&xfields=b").unwrap(), None);
        assert_eq!(
            found("a=1&fields=id%2Cemail&b").unwrap(),
            Some(parse("id,email"))
        );
        assert_eq!(
            found("fields=id,school.name").unwrap(),
            Some(parse("id,school.name"))
        );
        assert_eq!(
            found("fields=id,+school+.name").unwrap(),
            Some(parse("id,school.name"))
        );
        assert_eq!(
            found("fields=items%28id%29").unwrap(),
            Some(parse("items(id)"))
        );
        assert_eq!(found("fi%65lds=id").unwrap(), Some(parse("id")));
        assert_eq!(found("fields=a&fields=b").unwrap(), Some(parse("a")));
        assert_eq!(
            found("fields=a=b").unwrap_err().to_string(),
            "unexpected \"=\" at position 1"
        );
        assert_eq!(found("fields=").unwrap_err().to_string(), "empty selection");
        assert_eq!(
            found("a=1&fields").unwrap_err().to_string(),
            "empty selection"
        );
        assert_eq!(
            found("fields=+").unwrap_err().to_string(),
            "empty selection"
        );
        // `%2B` is a literal plus, which is not a name character.
        assert_eq!(
            found("fields=a%2Bb").unwrap_err().to_string(),
            "unexpected \"+\" at position 1"
        );
        let error = found("fields=ab%FFc").unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::InvalidUtf8);
        assert_eq!(
            error.to_string(),
            "selection is not valid UTF-8 at position 2"
        );
        assert_eq!(
            found("fields=a%2C%2C").unwrap_err().to_string(),
            "expected a field name at position 2"
        );
        let limits = SelectionLimits::new().max_len(3);
        let error =
            Selection::from_query_with_limits("fields=a%2Cbc", "fields", limits).unwrap_err();
        assert_eq!(error.kind(), SelectionErrorKind::TooLong { max: 3 });
        assert_eq!(
            Selection::from_query("select=id", "select").unwrap(),
            Some(parse("id"))
        );
    }

    #[test]
    fn from_str_parses() {
        let selection: Selection = "a.b".parse().unwrap();
        assert_eq!(selection, parse("a(b)"));
        assert!("a..b".parse::<Selection>().is_err());
    }

    /// A tree of items, rendered with a random but equivalent syntax.
    #[derive(Clone, Debug)]
    struct Item {
        name: String,
        children: Vec<Item>,
    }

    fn item() -> impl Strategy<Value = Item> {
        let name = prop_oneof![
            4 => "[a-d]",
            1 => Just("*".to_owned()),
            1 => "[A-Za-z0-9_$@-]{1,6}",
        ];
        let leaf = name.clone().prop_map(|name| Item {
            name,
            children: Vec::new(),
        });
        leaf.prop_recursive(4, 24, 4, move |inner| {
            (name.clone(), proptest::collection::vec(inner, 1..4))
                .prop_map(|(name, children)| Item { name, children })
        })
    }

    /// Renders items; `style` picks separators, grouping and whitespace.
    fn render(items: &[Item], style: &mut impl Iterator<Item = u8>) -> String {
        let mut out = String::new();
        for (index, item) in items.iter().enumerate() {
            let s = style.next().unwrap_or(0);
            if index > 0 {
                out.push_str(if s & 1 == 0 { "," } else { " , " });
            }
            out.push_str(&item.name);
            match item.children.as_slice() {
                [] => {}
                [only] if s & 2 != 0 => {
                    out.push_str(if s & 4 == 0 { "." } else { " / " });
                    out.push_str(&render(std::slice::from_ref(only), style));
                }
                children => {
                    out.push_str(if s & 4 == 0 { "(" } else { " ( " });
                    out.push_str(&render(children, style));
                    out.push(')');
                }
            }
        }
        out
    }

    /// Independent model: the set of selected paths, as every item's path.
    fn paths(items: &[Item], prefix: &[String], out: &mut Vec<Vec<String>>) {
        for item in items {
            let mut path = prefix.to_vec();
            path.push(item.name.clone());
            if item.children.is_empty() {
                out.push(path);
            } else {
                paths(&item.children, &path, out);
            }
        }
    }

    /// The leaf paths of a parsed selection.
    fn selected(node: &Node, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for (name, child) in node.entries() {
            let mut path = prefix.to_vec();
            path.push(name.to_owned());
            match child {
                Child::Whole => out.push(path),
                Child::Part(inner) => selected(inner, &path, out),
            }
        }
    }

    /// Removes every path that has a proper prefix in the set (that prefix
    /// selects it whole), then sorts.
    fn minimal(mut paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
        let all = paths.clone();
        paths.retain(|p| !all.iter().any(|q| q.len() < p.len() && p.starts_with(q)));
        paths.sort();
        paths.dedup();
        paths
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(input in ".{0,64}") {
            let _ = Selection::parse(&input);
            let _ = Selection::from_query(&input, "fields");
        }

        #[test]
        fn never_panics_on_grammar_soup(input in "[ab*.,/() _$@-]{0,48}") {
            if let Ok(selection) = Selection::parse(&input) {
                prop_assert_eq!(Selection::parse(&selection.to_string()), Ok(selection));
            }
        }

        #[test]
        fn errors_point_inside_the_input(input in "[ab*.,/()#é ]{0,32}") {
            if let Err(error) = Selection::parse(&input) {
                prop_assert!(error.position() <= input.len());
                prop_assert!(input.is_char_boundary(error.position()));
            }
        }

        #[test]
        fn generated_selections_round_trip(
            items in proptest::collection::vec(item(), 1..5),
            style in proptest::collection::vec(any::<u8>(), 64),
        ) {
            let text = render(&items, &mut style.iter().copied());
            let selection = Selection::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            let mut expected = Vec::new();
            paths(&items, &[], &mut expected);
            let mut actual = Vec::new();
            selected(&selection.root, &[], &mut actual);
            prop_assert_eq!(minimal(expected), minimal(actual.clone()));
            // Canonical trees hold no redundant paths.
            prop_assert_eq!(minimal(actual.clone()).len(), actual.len());
            prop_assert_eq!(Selection::parse(&selection.to_string()), Ok(selection));
        }
    }
}
