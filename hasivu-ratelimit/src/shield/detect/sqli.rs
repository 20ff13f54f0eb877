//! SQL injection: a SQL tokeniser and the shapes injections take.
//!
//! A value is read three ways, as libinjection does: as it is (a number
//! or name pasted into SQL, `1 OR 1=1`), and as the rest of a single- or
//! double-quoted string (`' OR '1'='1` closes the string the query opened).
//! In each reading the tokens after the first value must form an
//! injection: boolean logic with a comparison, a stacked statement, a
//! comment that cuts the query short, `ORDER BY`/`HAVING` probing, or a
//! string concatenated with a subquery. Anywhere in the value, `UNION
//! SELECT` with a select list, a stacked `; DROP TABLE`, time and error
//! functions (`SLEEP(5)`, `BENCHMARK(`, `WAITFOR DELAY '…'`,
//! `EXTRACTVALUE(`), `INTO OUTFILE`, and catalog tables count too.
//!
//! Keywords alone never do: "Select your plan", "Union von Europa",
//! "2104 GRANT AVE #A", "Yahoo! (Y!)", "O'Brien", "updated_at" and
//! "drop-off point" have no injection shape.

use super::{Detector, Finding, Inspection, Marks};

/// Finds SQL injection in decoded query values, path segments and body
/// strings by tokenising them; see the [module docs](crate::shield) for
/// what it catches and ignores. Reason `sqli`, default weight 5.
///
/// ```
/// use hasivu_ratelimit::shield::SqlInjection;
///
/// assert!(SqlInjection::is_injection("1' OR '1'='1"));
/// assert!(SqlInjection::is_injection("1 UNION ALL SELECT NULL,NULL--"));
/// assert!(SqlInjection::is_injection("x'; DROP TABLE users; --"));
/// assert!(!SqlInjection::is_injection("Select your plan"));
/// assert!(!SqlInjection::is_injection("Union von Europa"));
/// assert!(!SqlInjection::is_injection("O'Brien"));
/// ```
#[derive(Clone, Debug)]
pub struct SqlInjection {
    weight: u32,
}

impl Default for SqlInjection {
    fn default() -> Self {
        Self { weight: 5 }
    }
}

impl SqlInjection {
    /// The detector with the default weight (5, "critical" in CRS terms:
    /// enough to reach the default threshold alone).
    pub fn new() -> Self {
        Self::default()
    }

    /// The score of a finding.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Whether `text` (already decoded) has the shape of a SQL injection.
    pub fn is_injection(text: &str) -> bool {
        is_injection_marked(text, Marks::of(text))
    }
}

fn is_injection_marked(text: &str, marks: Marks) -> bool {
    let pre = Prefilter::of(text, marks);
    if !pre.any() {
        return false;
    }
    let mut tokens = Vec::new();
    (pre.bare && check(text, None, &mut tokens))
        || (pre.single && check(text, Some(b'\''), &mut tokens))
        || (pre.double && check(text, Some(b'"'), &mut tokens))
}

impl Detector for SqlInjection {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        input
            .fields()
            .iter()
            .any(|f| is_injection_marked(&f.text, f.marks))
            .then_some(Finding::new("sqli", self.weight))
    }
}

/// Which readings are worth tokenising.
struct Prefilter {
    bare: bool,
    single: bool,
    double: bool,
}

impl Prefilter {
    /// Quotes open the quoted readings; the bare reading needs SQL
    /// punctuation, a comment, or a keyword among several words.
    fn of(text: &str, marks: Marks) -> Self {
        let b = text.as_bytes();
        let comment = (marks.any(Marks::DASH) && b.windows(2).any(|w| w == b"--"))
            || (marks.any(Marks::SLASH) && b.windows(2).any(|w| w == b"/*"));
        let bare = marks.any(Marks::SQL_PUNCT)
            || comment
            || (marks.any(Marks::SPACE) && has_keyword(text));
        Self {
            bare,
            single: marks.any(Marks::QUOTE),
            double: marks.any(Marks::DQUOTE),
        }
    }

    fn any(&self) -> bool {
        self.bare || self.single || self.double
    }
}

/// Whether a word of `text` is a keyword that can start or join an
/// injection without punctuation (`1 OR x IS NULL`, `UNION SELECT`). Runs
/// on every value that passes the punctuation check, so it stays cheap:
/// bytes, a length switch, no allocation.
fn has_keyword(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if bare_keyword(&b[start..i]) {
            return true;
        }
    }
    false
}

fn bare_keyword(word: &[u8]) -> bool {
    if !(2..=9).contains(&word.len()) {
        return false;
    }
    let mut buf = [0u8; 9];
    let lower = &mut buf[..word.len()];
    lower.copy_from_slice(word);
    lower.make_ascii_lowercase();
    match lower.len() {
        2 => lower == b"or",
        3 => matches!(&*lower, b"and" | b"xor"),
        4 => matches!(&*lower, b"drop" | b"exec" | b"into"),
        5 => matches!(&*lower, b"union" | b"order" | b"group" | b"sleep"),
        6 => matches!(
            &*lower,
            b"select" | b"insert" | b"update" | b"delete" | b"having"
        ),
        7 => matches!(&*lower, b"declare" | b"execute" | b"waitfor" | b"replace"),
        8 => matches!(&*lower, b"truncate" | b"shutdown" | b"pg_sleep"),
        _ => matches!(&*lower, b"benchmark"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Str {
        closed: bool,
    },
    Num,
    /// A name, or a keyword used as one.
    Word,
    Kw(Kw),
    /// `@name`
    Var,
    /// `@@name`
    SysVar,
    /// `=`, `<`, `>`, `<=`, `>=`, `<>`, `!=`, `<=>`
    Cmp,
    /// `&&`, `||`
    Logic,
    /// `+`, `-`, `/`, `%`, `&`, `|`, `^`, `~`, `!`, `:`
    Op(u8),
    Star,
    LParen,
    RParen,
    Semi,
    Comma,
    Dot,
    /// A comment that runs to the end of the value: `--`, `#`, `/*`
    /// without its end.
    Comment,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kw {
    Select,
    Union,
    Insert,
    Update,
    Delete,
    Drop,
    Create,
    Alter,
    Truncate,
    Exec,
    Declare,
    Shutdown,
    Waitfor,
    Delay,
    From,
    Where,
    And,
    Or,
    Not,
    Like,
    Is,
    In,
    Between,
    Null,
    Bool,
    Order,
    Group,
    By,
    Having,
    Limit,
    All,
    Distinct,
    Into,
    Outfile,
    Values,
    Set,
    /// `TABLE`, `DATABASE`, `SCHEMA`, `PROCEDURE`, …: what `DROP` drops.
    Object,
    Top,
    Case,
    Exists,
    /// A function common in injections (`ASCII(`, `CONCAT(`, `VERSION(`).
    Func,
    /// A function or procedure that only attacks use in a request
    /// (`SLEEP(`, `BENCHMARK(`, `EXTRACTVALUE(`, `xp_cmdshell`).
    Danger,
}

fn keyword(word: &str) -> Option<Kw> {
    if word.len() > 24 || !word.is_ascii() {
        return None;
    }
    let mut buf = [0u8; 24];
    let lower = &mut buf[..word.len()];
    lower.copy_from_slice(word.as_bytes());
    lower.make_ascii_lowercase();
    Some(match &*lower {
        b"select" => Kw::Select,
        b"union" => Kw::Union,
        b"insert" | b"replace" => Kw::Insert,
        b"update" => Kw::Update,
        b"delete" => Kw::Delete,
        b"drop" => Kw::Drop,
        b"create" => Kw::Create,
        b"alter" | b"rename" => Kw::Alter,
        b"truncate" => Kw::Truncate,
        b"exec" | b"execute" => Kw::Exec,
        b"declare" => Kw::Declare,
        b"shutdown" => Kw::Shutdown,
        b"waitfor" => Kw::Waitfor,
        b"delay" | b"time" => Kw::Delay,
        b"from" => Kw::From,
        b"where" => Kw::Where,
        b"and" => Kw::And,
        b"or" | b"xor" => Kw::Or,
        b"not" => Kw::Not,
        b"like" | b"rlike" | b"regexp" | b"ilike" | b"glob" => Kw::Like,
        b"is" => Kw::Is,
        b"in" => Kw::In,
        b"between" => Kw::Between,
        b"null" => Kw::Null,
        b"true" | b"false" => Kw::Bool,
        b"order" => Kw::Order,
        b"group" => Kw::Group,
        b"by" => Kw::By,
        b"having" => Kw::Having,
        b"limit" | b"offset" => Kw::Limit,
        b"all" => Kw::All,
        b"distinct" => Kw::Distinct,
        b"into" => Kw::Into,
        b"outfile" | b"dumpfile" => Kw::Outfile,
        b"values" => Kw::Values,
        b"set" => Kw::Set,
        b"table" | b"database" | b"schema" | b"procedure" | b"function" | b"view" | b"index"
        | b"trigger" | b"user" | b"login" => Kw::Object,
        b"top" => Kw::Top,
        b"case" => Kw::Case,
        b"exists" => Kw::Exists,
        b"ascii" | b"char" | b"chr" | b"concat" | b"concat_ws" | b"group_concat" | b"substring"
        | b"substr" | b"mid" | b"length" | b"len" | b"version" | b"if" | b"iif" | b"ifnull"
        | b"nullif" | b"coalesce" | b"count" | b"cast" | b"convert" | b"database_name"
        | b"db_name" | b"current_user" | b"system_user" | b"session_user" | b"hex" | b"unhex"
        | b"md5" | b"sha1" | b"ord" | b"floor" | b"rand" | b"elt" | b"make_set" | b"name_const"
        | b"gtid_subset" | b"json_keys" | b"exp" | b"unicode" | b"nchar" | b"to_char"
        | b"string_agg" | b"listagg" | b"row" => Kw::Func,
        b"sleep" | b"pg_sleep" | b"benchmark" | b"extractvalue" | b"updatexml" | b"load_file"
        | b"randomblob" | b"pg_read_file" | b"lo_import" | b"lo_export" | b"sys_eval"
        | b"sys_exec" | b"xp_cmdshell" | b"xp_dirtree" | b"xp_fileexist" | b"xp_regread"
        | b"sp_executesql" | b"sp_oacreate" | b"sp_makewebtask" | b"sp_configure"
        | b"dbms_pipe" | b"dbms_lock" | b"utl_inaddr" | b"utl_http" | b"dbms_xmlgen"
        | b"openrowset" | b"opendatasource" => Kw::Danger,
        _ => return None,
    })
}

/// A token: its kind and its byte range. Offsets are `u32` (texts are cut
/// to fit): punctuation-dense text has a token per byte, so the token list
/// is the largest allocation of an inspection, 12 bytes per token.
#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: Kind,
    start: u32,
    end: u32,
}

impl Tok {
    fn new(kind: Kind, start: usize, end: usize) -> Self {
        // `check` cuts its text to `u32::MAX` bytes.
        Self {
            kind,
            start: start as u32,
            end: end as u32,
        }
    }
}

/// Whether a byte continues a name (non-ASCII bytes do: names in any
/// script are one word).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Tokenises `s`, starting inside a string quoted by `quote` when given.
/// Inline comments (`/* … */`) are whitespace; MySQL's executable comments
/// (`/*!50000 UNION*/`) are code.
fn tokenise(s: &str, quote: Option<u8>, out: &mut Vec<Tok>) {
    out.clear();
    let b = s.as_bytes();
    let mut i = 0;
    if let Some(q) = quote {
        let (end, closed) = string_end(b, 0, q);
        out.push(Tok::new(Kind::Str { closed }, 0, end));
        i = end;
    }
    while i < b.len() {
        let c = b[i];
        let start = i;
        let next = b.get(i + 1).copied();
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0 => {
                i += 1;
                continue;
            }
            // U+00A0, a space to MySQL.
            0xC2 if next == Some(0xA0) => {
                i += 2;
                continue;
            }
            b'\'' | b'"' => {
                let (end, closed) = string_end(b, i + 1, c);
                i = end;
                Kind::Str { closed }
            }
            b'`' => {
                i = b[i + 1..]
                    .iter()
                    .position(|&x| x == b'`')
                    .map_or(b.len(), |p| i + 2 + p);
                Kind::Word
            }
            b'-' if next == Some(b'-') => match line_end(b, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => {
                    i = b.len();
                    Kind::Comment
                }
            },
            // MySQL's `#` comment; `#A` or `#1` (an apartment, a rank) is
            // not one in practice and was a known false positive.
            b'#' if next.is_none_or(|n| !n.is_ascii_alphanumeric()) => match line_end(b, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => {
                    i = b.len();
                    Kind::Comment
                }
            },
            b'/' if next == Some(b'*') => {
                if b.get(i + 2) == Some(&b'!') {
                    // Executable comment: skip the marker and version.
                    i += 3;
                    while i < b.len() && b[i].is_ascii_digit() && i - start < 8 {
                        i += 1;
                    }
                    continue;
                }
                match find(b, i + 2, b"*/") {
                    Some(end) => {
                        i = end + 2;
                        continue;
                    }
                    None => {
                        i = b.len();
                        Kind::Comment
                    }
                }
            }
            // The end of an executable comment.
            b'*' if next == Some(b'/') => {
                i += 2;
                continue;
            }
            b'0'..=b'9' => {
                let end = number_end(b, i);
                if end < b.len() && is_word(b[end]) {
                    let word_end = word_end(b, end);
                    if keyword(&s[end..word_end]).is_some() {
                        // `1union`, `1and`: a number, then the keyword.
                        i = end;
                        Kind::Num
                    } else {
                        // `5pm`, `2nd`, `3d`: a name.
                        i = word_end;
                        Kind::Word
                    }
                } else {
                    i = end;
                    Kind::Num
                }
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                i = number_end(b, i + 1);
                Kind::Num
            }
            b'@' if next == Some(b'@') => {
                i = word_end(b, i + 2);
                Kind::SysVar
            }
            b'@' if next.is_some_and(is_word) => {
                i = word_end(b, i + 1);
                Kind::Var
            }
            c if is_word(c) => {
                // `N'…'`, `X'…'`, `B'…'`, `E'…'`: prefixed strings.
                if matches!(c | 0x20, b'n' | b'x' | b'b' | b'e') && next == Some(b'\'') {
                    let (end, closed) = string_end(b, i + 2, b'\'');
                    i = end;
                    Kind::Str { closed }
                } else {
                    i = word_end(b, i);
                    match keyword(&s[start..i]) {
                        Some(kw) => Kind::Kw(kw),
                        None => Kind::Word,
                    }
                }
            }
            b'(' => {
                i += 1;
                Kind::LParen
            }
            b')' => {
                i += 1;
                Kind::RParen
            }
            b';' => {
                i += 1;
                Kind::Semi
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'.' => {
                i += 1;
                Kind::Dot
            }
            b'*' => {
                i += 1;
                Kind::Star
            }
            b'=' => {
                i += if next == Some(b'=') { 2 } else { 1 };
                Kind::Cmp
            }
            b'<' | b'>' => {
                i += 1;
                if matches!(b.get(i), Some(b'=' | b'>')) {
                    i += 1;
                    if b.get(i) == Some(&b'>') {
                        i += 1;
                    }
                }
                Kind::Cmp
            }
            b'!' if matches!(next, Some(b'=' | b'<' | b'>')) => {
                i += 2;
                Kind::Cmp
            }
            b'|' if next == Some(b'|') => {
                i += 2;
                Kind::Logic
            }
            b'&' if next == Some(b'&') => {
                i += 2;
                Kind::Logic
            }
            b'+' | b'-' | b'/' | b'%' | b'&' | b'|' | b'^' | b'~' | b'!' | b':' => {
                i += 1;
                Kind::Op(c)
            }
            _ => {
                // One character, whole (UTF-8 sequences stay together
                // through `is_word`, so this is ASCII).
                i += 1;
                Kind::Other
            }
        };
        out.push(Tok::new(kind, start, i));
    }
}

/// The end of a string whose body starts at `from`, and whether its closing
/// quote was found. A doubled quote and a backslash escape do not close it.
fn string_end(b: &[u8], from: usize, q: u8) -> (usize, bool) {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    return (i + 1, true);
                }
            }
            _ => i += 1,
        }
    }
    (b.len(), false)
}

/// After a line comment starting at `i`: the next line, if any.
fn line_end(b: &[u8], i: usize) -> Option<usize> {
    b[i..].iter().position(|&c| c == b'\n').map(|p| i + p + 1)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_word(b[i]) {
        i += 1;
    }
    i
}

fn number_end(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        let mut j = i + 2;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > i + 2 {
            return j;
        }
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && (b[i] | 0x20) == b'e' {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// What came before the tokens that must form the injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    /// Nothing: the value starts with the injection (`OR 1=1`).
    Empty,
    /// A number or name (`1 OR 1=1`, `admin) OR (1=1`).
    Value,
    /// The string the query opened, closed by the value (`x' OR …`).
    Str,
}

/// What an operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    Str,
    Num,
    /// `NULL`, `TRUE`, `FALSE`
    Const,
    Var,
    /// A call of a function known to injections.
    KnownCall,
    /// A call of any other function.
    Call,
    /// `(SELECT …`, `EXISTS(`
    Select,
    /// A name; its token index, to compare `a=a`.
    Word(usize),
}

struct Matcher<'a> {
    t: &'a [Tok],
    s: &'a str,
}

impl Matcher<'_> {
    fn kind(&self, i: usize) -> Option<Kind> {
        self.t.get(i).map(|t| t.kind)
    }

    fn kw(&self, i: usize) -> Option<Kw> {
        match self.kind(i) {
            Some(Kind::Kw(kw)) => Some(kw),
            _ => None,
        }
    }

    fn text(&self, i: usize) -> &str {
        self.t
            .get(i)
            .map_or("", |t| &self.s[t.start as usize..t.end as usize])
    }

    /// The end of the value, a comment or a `;`.
    fn end_like(&self, i: usize) -> bool {
        matches!(self.kind(i), None | Some(Kind::Comment | Kind::Semi))
    }

    fn is_logic(&self, i: usize) -> bool {
        matches!(self.kind(i), Some(Kind::Logic | Kind::Kw(Kw::And | Kw::Or)))
    }

    fn is_name(&self, i: usize) -> bool {
        matches!(self.kind(i), Some(Kind::Word | Kind::Kw(_)))
    }

    fn is_call(&self, i: usize) -> bool {
        self.is_name(i) && self.kind(i + 1) == Some(Kind::LParen)
    }

    /// The index after the `)` matching the `(` at `open`.
    fn after_parens(&self, open: usize) -> usize {
        let mut depth = 0usize;
        for (j, t) in self.t.iter().enumerate().skip(open) {
            match t.kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
        }
        self.t.len()
    }

    fn skip_rparens(&self, mut i: usize) -> usize {
        while self.kind(i) == Some(Kind::RParen) {
            i += 1;
        }
        i
    }

    /// The operand at `i` (after `(`, `NOT`, `!` and signs) and the index
    /// after it.
    fn operand(&self, mut i: usize) -> Option<(Operand, usize)> {
        while matches!(
            self.kind(i)?,
            Kind::LParen | Kind::Kw(Kw::Not) | Kind::Op(b'!' | b'-' | b'+' | b'~')
        ) {
            i += 1;
        }
        let operand = match self.kind(i)? {
            Kind::Str { .. } => Operand::Str,
            Kind::Num => Operand::Num,
            Kind::Kw(Kw::Null | Kw::Bool) => Operand::Const,
            Kind::Var | Kind::SysVar => Operand::Var,
            Kind::Kw(Kw::Select) => return Some((Operand::Select, i + 1)),
            Kind::Kw(Kw::Exists) if self.kind(i + 1) == Some(Kind::LParen) => {
                return Some((Operand::Select, i + 1));
            }
            _ if self.is_call(i) => {
                let known = matches!(self.kw(i), Some(Kw::Func | Kw::Danger));
                let after = self.after_parens(i + 1);
                return Some((
                    if known {
                        Operand::KnownCall
                    } else {
                        Operand::Call
                    },
                    after,
                ));
            }
            Kind::Word | Kind::Kw(Kw::Func | Kw::Object) => {
                // `schema.table.column`
                let mut j = i + 1;
                while self.kind(j) == Some(Kind::Dot) && self.is_name(j + 1) {
                    j += 2;
                }
                if self.is_call(j - 1) && j > i + 1 {
                    return Some((Operand::Call, self.after_parens(j)));
                }
                return Some((Operand::Word(i), j));
            }
            _ => return None,
        };
        Some((operand, i + 1))
    }

    /// A comparison at `i` whose left side is `left`.
    fn comparison(&self, left: Operand, i: usize) -> bool {
        match self.kind(i) {
            Some(Kind::Cmp) => match self.operand(i + 1) {
                // `a=a` is a tautology; `kids = happy` is prose.
                Some((Operand::Word(r), _)) => match left {
                    Operand::Word(l) => self.text(l).eq_ignore_ascii_case(self.text(r)),
                    _ => true,
                },
                Some(_) => true,
                None => false,
            },
            Some(Kind::Kw(Kw::Like)) => matches!(
                self.operand(i + 1),
                Some((
                    Operand::Str
                        | Operand::Var
                        | Operand::KnownCall
                        | Operand::Call
                        | Operand::Select,
                    _
                ))
            ),
            Some(Kind::Kw(Kw::Is)) => matches!(self.kw(i + 1), Some(Kw::Null | Kw::Bool | Kw::Not)),
            Some(Kind::Kw(Kw::In)) => self.kind(i + 1) == Some(Kind::LParen),
            Some(Kind::Kw(Kw::Between)) => {
                matches!(self.operand(i + 1), Some((Operand::Num | Operand::Str, _)))
            }
            _ => false,
        }
    }

    /// After `AND`/`OR`: a condition that makes it an injection.
    fn logic_tail(&self, i: usize, prefix: Prefix) -> bool {
        let Some((left, after)) = self.operand(i) else {
            return false;
        };
        if matches!(left, Operand::Select | Operand::KnownCall) {
            return true;
        }
        let k = self.skip_rparens(after);
        if self.comparison(left, k) {
            return true;
        }
        // `' OR 1--`, `1 AND TRUE;`, `1 OR TRUE`, `' OR TRUE OR '`; not
        // "1 or 2".
        prefix != Prefix::Empty
            && match left {
                Operand::Num | Operand::Var => {
                    matches!(self.kind(k), Some(Kind::Comment | Kind::Semi))
                        || (prefix == Prefix::Str && self.end_like(k))
                }
                Operand::Const => self.end_like(k) || self.is_logic(k),
                _ => false,
            }
    }

    /// After `;`: a statement.
    fn stacked(&self, i: usize) -> bool {
        match self.kw(i) {
            Some(Kw::Select) => self.select_list(i + 1, true),
            Some(Kw::Drop | Kw::Truncate | Kw::Alter | Kw::Create) => {
                self.kw(i + 1) == Some(Kw::Object)
            }
            Some(Kw::Delete) => {
                self.kw(i + 1) == Some(Kw::From)
                    || (self.kind(i + 1) == Some(Kind::Word) && self.kw(i + 2) == Some(Kw::From))
            }
            Some(Kw::Insert) => self.kw(i + 1) == Some(Kw::Into),
            Some(Kw::Update) => self.is_name(i + 1) && self.kw(i + 2) == Some(Kw::Set),
            Some(Kw::Exec) => match self.kind(i + 1) {
                Some(Kind::LParen | Kind::Str { .. } | Kind::Var | Kind::Kw(Kw::Danger)) => true,
                Some(Kind::Word) => {
                    let w = self.text(i + 1).to_ascii_lowercase();
                    w.starts_with("xp_") || w.starts_with("sp_") || w == "master"
                }
                _ => false,
            },
            Some(Kw::Declare | Kw::Set) => {
                matches!(self.kind(i + 1), Some(Kind::Var | Kind::SysVar))
            }
            Some(Kw::Shutdown) => self.end_like(i + 1),
            Some(Kw::Waitfor) => self.kw(i + 1) == Some(Kw::Delay),
            Some(Kw::Danger) => self.is_call(i),
            _ => false,
        }
    }

    /// After `SELECT`: something only a query selects. `lenient` accepts
    /// `name FROM table` at the end of the value.
    fn select_list(&self, mut i: usize, lenient: bool) -> bool {
        while matches!(self.kw(i), Some(Kw::All | Kw::Distinct)) {
            i += 1;
        }
        if self.kw(i) == Some(Kw::Top) {
            return self.kind(i + 1) == Some(Kind::Num);
        }
        match self.kind(i) {
            Some(
                Kind::Star
                | Kind::Num
                | Kind::Str { .. }
                | Kind::Var
                | Kind::SysVar
                | Kind::LParen
                | Kind::Kw(Kw::Null | Kw::Case),
            ) => true,
            _ if self.is_call(i) => true,
            Some(Kind::Word | Kind::Kw(Kw::Func | Kw::Object)) => match self.kind(i + 1) {
                // `name, …`, `t.name`, `user || ':' || password`
                Some(Kind::Comma | Kind::Dot | Kind::Logic | Kind::Op(_)) => true,
                Some(Kind::Kw(Kw::From)) => {
                    self.is_name(i + 2)
                        && match self.kind(i + 3) {
                            None => lenient,
                            Some(
                                Kind::Semi
                                | Kind::Comment
                                | Kind::RParen
                                | Kind::Dot
                                | Kind::Kw(Kw::Where | Kw::Limit | Kw::Order | Kw::Group | Kw::Union),
                            ) => true,
                            _ => false,
                        }
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The tokens right after the value the query expected.
    fn anchored(&self, i: usize, prefix: Prefix) -> bool {
        let k = self.skip_rparens(i);
        // `1) OR (1=1`: a closed parenthesis is as good as a value.
        let prefix = if k > i && prefix == Prefix::Empty {
            Prefix::Value
        } else {
            prefix
        };
        match self.kind(k) {
            Some(Kind::Kw(Kw::And | Kw::Or) | Kind::Logic) => self.logic_tail(k + 1, prefix),
            Some(Kind::Semi) => prefix != Prefix::Empty && self.stacked(k + 1),
            Some(Kind::Comment) => prefix == Prefix::Str,
            Some(Kind::Kw(Kw::Order | Kw::Group)) => {
                prefix != Prefix::Empty
                    && self.kw(k + 1) == Some(Kw::By)
                    && matches!(self.kind(k + 2), Some(Kind::Num | Kind::Word))
            }
            Some(Kind::Kw(Kw::Having)) => {
                prefix != Prefix::Empty
                    && self
                        .operand(k + 1)
                        .is_some_and(|(left, after)| self.comparison(left, after))
            }
            // `'='`, `' = '' OR '`
            Some(Kind::Cmp) if prefix == Prefix::Str => {
                self.operand(k + 1).is_some_and(|(right, after)| {
                    matches!(right, Operand::Str | Operand::Num)
                        && (self.is_logic(after) || self.end_like(after))
                })
            }
            // `'+(SELECT …)+'`, `'-SLEEP(5)-'`
            Some(Kind::Op(b'+' | b'-' | b'|')) if prefix == Prefix::Str => matches!(
                self.operand(k + 1),
                Some((Operand::Select | Operand::KnownCall, _))
            ),
            _ => false,
        }
    }

    /// A statement that is the whole value (`SELECT * FROM users`).
    fn statement(&self) -> bool {
        match self.kw(0) {
            // `SELECT … FROM table`, `SELECT @@version`, `SELECT SLEEP(5)`;
            // not "Select * (all fields)" or "Select 3 items".
            Some(Kw::Select) => {
                self.select_list(1, false)
                    && (matches!(self.kind(1), Some(Kind::SysVar | Kind::Kw(Kw::Danger)))
                        || (1..12).any(|i| self.kw(i) == Some(Kw::From) && self.is_name(i + 1)))
            }
            // A terminator makes it a statement: "Drop table reservation"
            // is a sentence, `DROP TABLE users;` is not.
            Some(Kw::Drop | Kw::Truncate) => {
                self.kw(1) == Some(Kw::Object)
                    && self.is_name(2)
                    && matches!(self.kind(3), Some(Kind::Semi | Kind::Comment))
            }
            Some(Kw::Delete) => {
                self.kw(1) == Some(Kw::From)
                    && self.is_name(2)
                    && matches!(
                        self.kind(3),
                        Some(Kind::Kw(Kw::Where) | Kind::Semi | Kind::Comment)
                    )
            }
            Some(Kw::Insert) => {
                self.kw(1) == Some(Kw::Into)
                    && self.is_name(2)
                    && matches!(
                        self.kind(3),
                        Some(Kind::LParen | Kind::Kw(Kw::Values | Kw::Select))
                    )
            }
            Some(Kw::Update) => {
                self.is_name(1)
                    && self.kw(2) == Some(Kw::Set)
                    && self.is_name(3)
                    && self.kind(4) == Some(Kind::Cmp)
            }
            Some(Kw::Exec | Kw::Declare) => self.stacked(0),
            Some(Kw::Shutdown) => matches!(self.kind(1), Some(Kind::Semi | Kind::Comment)),
            _ => false,
        }
    }

    /// Shapes that are injections wherever they appear.
    fn anywhere(&self) -> bool {
        (0..self.t.len()).any(|i| match self.t[i].kind {
            Kind::Kw(Kw::Union) => {
                let mut j = i + 1;
                while matches!(self.kw(j), Some(Kw::All | Kw::Distinct))
                    || self.kind(j) == Some(Kind::LParen)
                {
                    j += 1;
                }
                self.kw(j) == Some(Kw::Select) && self.select_list(j + 1, true)
            }
            Kind::Semi => self.stacked(i + 1),
            Kind::Kw(Kw::Danger) => self.danger(i),
            Kind::Kw(Kw::Waitfor) => {
                self.kw(i + 1) == Some(Kw::Delay)
                    && matches!(self.kind(i + 2), Some(Kind::Str { .. }))
            }
            Kind::Kw(Kw::Into) => self.kw(i + 1) == Some(Kw::Outfile),
            Kind::SysVar => {
                i > 0
                    && matches!(
                        self.t[i - 1].kind,
                        Kind::Cmp
                            | Kind::Op(_)
                            | Kind::LParen
                            | Kind::Comma
                            | Kind::Logic
                            | Kind::Kw(Kw::Select | Kw::And | Kw::Or | Kw::Union)
                    )
            }
            Kind::Word => {
                let w = self.text(i);
                (w.eq_ignore_ascii_case("information_schema")
                    || w.eq_ignore_ascii_case("pg_catalog")
                    || w.eq_ignore_ascii_case("sqlite_master")
                    || w.eq_ignore_ascii_case("sysobjects")
                    || w.eq_ignore_ascii_case("syscolumns"))
                    && (self.kind(i + 1) == Some(Kind::Dot)
                        || (i > 0 && self.kw(i - 1) == Some(Kw::From)))
            }
            Kind::LParen => self.kw(i + 1) == Some(Kw::Select) && self.select_list(i + 2, false),
            _ => false,
        })
    }

    /// A dangerous function or procedure, used as one.
    fn danger(&self, i: usize) -> bool {
        let name = self.text(i).to_ascii_lowercase();
        match name.as_str() {
            // `SLEEP(5)`, `SLEEP((SELECT …))`; not "sleep(8 hours)".
            "sleep" | "pg_sleep" | "randomblob" => {
                self.kind(i + 1) == Some(Kind::LParen)
                    && match self.kind(i + 2) {
                        Some(Kind::Num) => matches!(
                            self.kind(i + 3),
                            Some(Kind::RParen | Kind::Op(_) | Kind::Star)
                        ),
                        Some(Kind::LParen | Kind::Var | Kind::Kw(Kw::Select | Kw::Func)) => true,
                        _ => false,
                    }
            }
            "benchmark" => {
                self.kind(i + 1) == Some(Kind::LParen)
                    && self.kind(i + 2) == Some(Kind::Num)
                    && self.kind(i + 3) == Some(Kind::Comma)
            }
            // Procedures and packages: their names are the sign.
            n if n.starts_with("xp_")
                || n.starts_with("sp_")
                || n.starts_with("dbms_")
                || n.starts_with("utl_")
                || n.starts_with("open") =>
            {
                matches!(
                    self.kind(i + 1),
                    Some(Kind::LParen | Kind::Dot | Kind::Str { .. } | Kind::Var)
                )
            }
            _ => self.kind(i + 1) == Some(Kind::LParen),
        }
    }
}

/// Whether `text`, read in one context, is an injection.
fn check(text: &str, quote: Option<u8>, tokens: &mut Vec<Tok>) -> bool {
    let text = super::decode::truncate(text, u32::MAX as usize);
    tokenise(text, quote, tokens);
    let m = Matcher { t: tokens, s: text };
    let anchored = match quote {
        Some(_) => {
            // The value must close the string for the rest to be SQL.
            if !matches!(
                tokens.first(),
                Some(Tok {
                    kind: Kind::Str { closed: true },
                    ..
                })
            ) {
                return false;
            }
            m.anchored(1, Prefix::Str)
        }
        None => {
            let mut i = 0;
            if matches!(m.kind(0), Some(Kind::Op(b'-' | b'+'))) && m.kind(1) == Some(Kind::Num) {
                i = 1;
            }
            match m.kind(i) {
                // A number or a name; `true && false == false` is prose.
                Some(Kind::Num | Kind::Word | Kind::Kw(Kw::Func | Kw::Object)) => {
                    // `admin.users` as one value
                    let mut j = i + 1;
                    while m.kind(j) == Some(Kind::Dot) && m.is_name(j + 1) {
                        j += 2;
                    }
                    m.anchored(j, Prefix::Value)
                }
                _ => m.anchored(0, Prefix::Empty) || m.statement(),
            }
        }
    };
    anchored || m.anywhere()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sqli(s: &str) -> bool {
        SqlInjection::is_injection(s)
    }

    #[test]
    fn tokens() {
        let mut t = Vec::new();
        tokenise("a' OR 1=1 -- x", Some(b'\''), &mut t);
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Str { closed: true },
                Kind::Kw(Kw::Or),
                Kind::Num,
                Kind::Cmp,
                Kind::Num,
                Kind::Comment
            ]
        );
        tokenise("1/*!50000UNION*/ SELECT 5pm @@version 0x7e", None, &mut t);
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Num,
                Kind::Kw(Kw::Union),
                Kind::Kw(Kw::Select),
                Kind::Word,
                Kind::SysVar,
                Kind::Num
            ]
        );
        tokenise("it''s 'x\\'y' #A", None, &mut t);
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Word,
                Kind::Str { closed: true },
                Kind::Word,
                Kind::Str { closed: true },
                Kind::Other,
                Kind::Word
            ]
        );
    }

    #[test]
    fn tautologies_and_comments() {
        for payload in [
            "1' OR '1'='1",
            "' or ''='",
            "' OR 1=1 -- -",
            "admin'--",
            "admin' #",
            "admin'/*",
            "\" or \"\"=\"",
            "1 OR 1=1",
            "-1 or 1=1",
            "or 1=1--",
            "') or ('a'='a",
            "1) or (1=1",
            "' or username like '%admin%",
            "x' AND email IS NULL; --",
            "' or 'x'='x",
            "'/**/OR/**/1=1#",
            "1' ORDER BY 3--+",
            "' having 1=1--",
            "' or a=a--",
            "1 or true",
            "' or true or '",
            "'||(SELECT version())||'",
        ] {
            assert!(sqli(payload), "{payload}");
        }
    }

    #[test]
    fn unions_stacks_and_functions() {
        for payload in [
            "1 UNION SELECT username, password FROM users",
            "-1' UNION ALL SELECT NULL,NULL,NULL-- -",
            "1 /*!UNION*/ /*!SELECT*/ 1,2,3",
            "'; DROP TABLE users; --",
            "1; DELETE FROM orders",
            "'; exec master..xp_cmdshell 'ping 10.0.0.1'--",
            "1 AND SLEEP(5)",
            "1' AND (SELECT * FROM (SELECT(SLEEP(5)))a)--",
            "'; WAITFOR DELAY '0:0:5'--",
            "' AND extractvalue(1,concat(0x7e,version()))--",
            "1 AND 1=CONVERT(int,@@version)",
            "' UNION SELECT table_name FROM information_schema.tables--",
            "SELECT * FROM users",
            "select @@version",
            "' UNION SELECT username || ':' || password FROM users--",
            "DROP TABLE users;",
            "1' AND ASCII(SUBSTRING((SELECT password FROM users LIMIT 1),1,1))>64--",
            "' AND 1=DBMS_PIPE.RECEIVE_MESSAGE('a',10)--",
            "1 INTO OUTFILE '/var/www/x.php'",
        ] {
            assert!(sqli(payload), "{payload}");
        }
    }

    #[test]
    fn prose_is_not_sql() {
        for text in [
            "Select your plan",
            "Selection of deleted items",
            "Union von Europa",
            "O'Brien",
            "D'Angelo and O'Neil",
            "2104 GRANT AVE #A",
            "Yahoo! (Y!)",
            "updated_at",
            "drop-off point",
            "Drop-off at 5pm",
            "Delete my account please",
            "Select 3 items to compare",
            "the kids' and parents' menu",
            "Rock 'n' roll or jazz",
            "It's 5 o'clock; time for lunch",
            "Tom & Jerry = classic",
            "Order by price, then rating",
            "James' #1 fan",
            "1 or 2 bedrooms",
            "Insert coin (one)",
            "Say \"yes\" or \"no\"",
            "(select all that apply)",
            "Select * (all fields)",
            "Drop table reservation",
            "sleep(8 hours) is healthy",
            "true && false == false",
            "Nguyễn Thị Minh Khai",
            "email: a.b@example.com; phone +1 (555) 010-2030",
        ] {
            assert!(!sqli(text), "{text}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = sqli(&s);
        }

        #[test]
        fn sql_punctuation_soup_never_panics(s in "[ '\"`;()=#@|&*/!<>a-z0-9.,-]{0,60}") {
            let _ = sqli(&s);
        }

        #[test]
        fn plain_words_are_never_injections(words in proptest::collection::vec("[a-zA-Z]{1,10}", 0..12)) {
            // Without punctuation only keyword chains such as
            // `UNION SELECT name FROM t` can match; random words do not
            // contain them in the forms that match.
            let text = words.join(" ");
            let lower = text.to_ascii_lowercase();
            prop_assume!(!lower.contains("union") && !lower.contains("select") && !lower.contains("drop") && !lower.contains("delete") && !lower.contains("insert") && !lower.contains("update"));
            prop_assert!(!sqli(&text), "{}", text);
        }
    }
}
