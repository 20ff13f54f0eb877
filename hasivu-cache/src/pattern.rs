//! Key patterns and invalidation rules: parsing the glob syntax, escaping
//! keys into it, and the cycle-safe cascade of rules.
//!
//! Pure logic: no I/O, no clock.

use std::collections::{BTreeSet, HashSet, VecDeque};

/// Characters with a meaning in Redis glob patterns.
const META: &[char] = &['*', '?', '[', ']', '\\'];

/// Escapes the glob metacharacters of `key` (`*`, `?`, `[`, `]`, `\`) with
/// a backslash, so the result matches exactly `key`.
///
/// ```
/// use hasivu_cache::escape_glob;
///
/// assert_eq!(escape_glob("search:q=*rice?"), r"search:q=\*rice\?");
/// // A prefix pattern for every key under an escaped literal:
/// assert_eq!(format!("{}*", escape_glob("menu:[veg]:")), r"menu:\[veg\]:*");
/// ```
pub fn escape_glob(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if META.contains(&c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// What a pattern given to [`Cache::invalidate`](crate::Cache::invalidate)
/// or to an [`InvalidationRules`] rule selects.
///
/// The syntax is Redis's glob syntax restricted to what can be invalidated
/// in O(1): a literal key (`menu:daily:current`), or a literal prefix
/// followed by one final `*` (`user:profile:*`). A backslash escapes the
/// next character, so `search:\*` is the key `search:*` and `a\\*` is every
/// key under `a\`. Other globs (`?`, `[a-z]`, a `*` in the middle) are
/// accepted only by [`Cache::purge`](crate::Cache::purge), which scans.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this key.
    Key(String),
    /// Every key that starts with this string (the empty prefix: every key).
    Prefix(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern uses a glob feature that cannot be invalidated without
    /// scanning (`?`, `[…]`, or a `*` that is not the last character).
    #[error(
        "pattern {0:?} is neither a key nor a prefix followed by one final `*`; \
         use Cache::purge for general globs"
    )]
    NotPrefix(String),
    /// The pattern ends in a lone backslash.
    #[error("pattern {0:?} ends in an unfinished escape")]
    TrailingEscape(String),
}

impl Pattern {
    /// Parses the glob syntax described on [`Pattern`].
    ///
    /// # Errors
    ///
    /// [`PatternError`] for globs other than a key or a prefix.
    ///
    /// ```
    /// use hasivu_cache::Pattern;
    ///
    /// assert_eq!(Pattern::parse("user:*")?, Pattern::Prefix("user:".into()));
    /// assert_eq!(Pattern::parse("menu:daily:current")?, Pattern::Key("menu:daily:current".into()));
    /// assert_eq!(Pattern::parse(r"search:\*")?, Pattern::Key("search:*".into()));
    /// assert!(Pattern::parse("user:*:profile").is_err());
    /// # Ok::<(), hasivu_cache::PatternError>(())
    /// ```
    pub fn parse(glob: &str) -> Result<Self, PatternError> {
        let mut literal = String::with_capacity(glob.len());
        let mut chars = glob.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => literal.push(escaped),
                    None => return Err(PatternError::TrailingEscape(glob.to_owned())),
                },
                '*' if chars.peek().is_none() => return Ok(Pattern::Prefix(literal)),
                '*' | '?' | '[' | ']' => return Err(PatternError::NotPrefix(glob.to_owned())),
                other => literal.push(other),
            }
        }
        Ok(Pattern::Key(literal))
    }

    /// The pattern in glob syntax, literal parts escaped.
    pub fn to_glob(&self) -> String {
        match self {
            Pattern::Key(key) => escape_glob(key),
            Pattern::Prefix(prefix) => format!("{}*", escape_glob(prefix)),
        }
    }

    /// Whether `key` is selected.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Pattern::Key(k) => k == key,
            Pattern::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }

    /// Whether everything `other` selects is also selected by `self`.
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Prefix(p), Pattern::Prefix(q)) => q.starts_with(p.as_str()),
            (_, Pattern::Key(key)) => self.matches(key),
            (Pattern::Key(_), Pattern::Prefix(_)) => false,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_glob())
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Rules that widen an invalidation: invalidating what a rule's pattern
/// covers also invalidates the rule's related patterns, transitively.
///
/// A rule fires when its pattern covers the invalidated pattern: the rule
/// `order:*` fires for `invalidate("order:*")`, for `invalidate("order:active:*")`
/// and for `invalidate_key("order:1234")`. Related patterns fire their own
/// rules in turn; a pattern is expanded once, so cycles end.
///
/// The report's rules (section 2.2):
///
/// ```
/// use hasivu_cache::{InvalidationRules, Pattern};
///
/// let rules = InvalidationRules::new()
///     .rule("user:*", ["user:profile:*", "user:permissions:*", "auth:sessions:*"])?
///     .rule("menu:*", ["menu:daily:*", "menu:weekly:*", "analytics:menu:*"])?
///     .rule("payment:*", ["payment:methods:*", "payment:history:*", "analytics:payment:*"])?
///     .rule("order:*", ["order:history:*", "order:active:*", "analytics:orders:*"])?;
///
/// // `user:profile:*` lies under `user:*`, so the cascade keeps two prefixes.
/// let cascade = rules.cascade(&Pattern::parse("user:*")?);
/// assert_eq!(cascade, vec![Pattern::parse("auth:sessions:*")?, Pattern::parse("user:*")?]);
/// # Ok::<(), hasivu_cache::PatternError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct InvalidationRules {
    rules: Vec<(Pattern, Vec<Pattern>)>,
}

impl InvalidationRules {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report's four rules, as in the example above.
    pub fn report_defaults() -> Self {
        let rule = |from: &str, to: [&str; 3]| {
            (
                Pattern::Prefix(from.trim_end_matches('*').to_owned()),
                to.iter()
                    .map(|p| Pattern::Prefix(p.trim_end_matches('*').to_owned()))
                    .collect(),
            )
        };
        Self {
            rules: vec![
                rule(
                    "user:*",
                    ["user:profile:*", "user:permissions:*", "auth:sessions:*"],
                ),
                rule(
                    "menu:*",
                    ["menu:daily:*", "menu:weekly:*", "analytics:menu:*"],
                ),
                rule(
                    "payment:*",
                    [
                        "payment:methods:*",
                        "payment:history:*",
                        "analytics:payment:*",
                    ],
                ),
                rule(
                    "order:*",
                    ["order:history:*", "order:active:*", "analytics:orders:*"],
                ),
            ],
        }
    }

    /// Adds a rule: invalidating what `pattern` covers also invalidates
    /// `related`.
    ///
    /// # Errors
    ///
    /// [`PatternError`] when a pattern is not a key or a prefix glob.
    pub fn rule<I, S>(mut self, pattern: &str, related: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let from = Pattern::parse(pattern)?;
        let to = related
            .into_iter()
            .map(|p| Pattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        self.rules.push((from, to));
        Ok(self)
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Everything invalidating `start` must invalidate: `start` and the
    /// related patterns of every rule it reaches, transitively, minus the
    /// patterns another one already covers. Sorted (keys first), without
    /// duplicates.
    pub fn cascade(&self, start: &Pattern) -> Vec<Pattern> {
        let mut seen: HashSet<Pattern> = HashSet::from([start.clone()]);
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(pattern) = queue.pop_front() {
            for (from, related) in &self.rules {
                if !from.covers(&pattern) {
                    continue;
                }
                for next in related {
                    if seen.insert(next.clone()) {
                        queue.push_back(next.clone());
                    }
                }
            }
        }
        minimal(seen)
    }
}

/// Drops every pattern that another pattern of the set covers.
fn minimal(patterns: HashSet<Pattern>) -> Vec<Pattern> {
    let sorted: BTreeSet<Pattern> = patterns.into_iter().collect();
    sorted
        .iter()
        .filter(|p| !sorted.iter().any(|q| q != *p && q.covers(p)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(glob: &str) -> Pattern {
        Pattern::parse(glob).unwrap()
    }

    #[test]
    fn parses_keys_prefixes_and_escapes() {
        assert_eq!(p("a:b"), Pattern::Key("a:b".into()));
        assert_eq!(p("a:*"), Pattern::Prefix("a:".into()));
        assert_eq!(p("*"), Pattern::Prefix(String::new()));
        assert_eq!(p(r"a\*"), Pattern::Key("a*".into()));
        assert_eq!(p(r"a\\*"), Pattern::Prefix(r"a\".into()));
        assert_eq!(p(r"x\[1\]:*"), Pattern::Prefix("x[1]:".into()));
        for bad in ["a*b", "a?", "[ab]*", "**"] {
            assert_eq!(
                Pattern::parse(bad),
                Err(PatternError::NotPrefix(bad.into()))
            );
        }
        assert_eq!(
            Pattern::parse("a\\"),
            Err(PatternError::TrailingEscape("a\\".into()))
        );
    }

    #[test]
    fn escaping_round_trips() {
        for key in ["plain", "a*b?c[d]e\\f", "ünïcødé*", ""] {
            assert_eq!(p(&escape_glob(key)), Pattern::Key(key.into()));
            assert_eq!(
                p(&format!("{}*", escape_glob(key))),
                Pattern::Prefix(key.into())
            );
            assert_eq!(
                p(&Pattern::Key(key.into()).to_glob()),
                Pattern::Key(key.into())
            );
        }
    }

    #[test]
    fn covering() {
        assert!(p("user:*").covers(&p("user:profile:*")));
        assert!(p("user:*").covers(&p("user:42")));
        assert!(!p("user:profile:*").covers(&p("user:*")));
        assert!(!p("user:42").covers(&p("user:*")));
        assert!(p("user:42").covers(&p("user:42")));
        assert!(p("*").covers(&p("anything")));
    }

    #[test]
    fn report_rules_cascade() {
        let rules = InvalidationRules::report_defaults();
        assert_eq!(
            rules.cascade(&p("menu:*")),
            vec![p("analytics:menu:*"), p("menu:*")]
        );
        // A key under a rule's pattern fires it; the key itself stays.
        assert_eq!(
            rules.cascade(&p("order:1234")),
            vec![
                p("order:1234"),
                p("analytics:orders:*"),
                p("order:active:*"),
                p("order:history:*"),
            ]
        );
        // Nothing covers `session:*`: it stands alone.
        assert_eq!(rules.cascade(&p("session:*")), vec![p("session:*")]);
    }

    #[test]
    fn cascade_is_transitive_and_cycle_safe() {
        let rules = InvalidationRules::new()
            .rule("a:*", ["b:*"])
            .unwrap()
            .rule("b:*", ["c:1"])
            .unwrap()
            .rule("c:*", ["a:*", "d:*"])
            .unwrap();
        assert_eq!(
            rules.cascade(&p("a:x")),
            vec![p("c:1"), p("a:*"), p("b:*"), p("d:*")]
        );
        assert_eq!(
            rules.cascade(&p("c:1")),
            vec![p("c:1"), p("a:*"), p("b:*"), p("d:*")]
        );
        let self_loop = InvalidationRules::new().rule("x:*", ["x:*"]).unwrap();
        assert_eq!(self_loop.cascade(&p("x:*")), vec![p("x:*")]);
    }

    proptest::proptest! {
        #[test]
        fn escaped_keys_parse_back_to_themselves(key in "\\PC{0,40}") {
            proptest::prop_assert_eq!(p(&escape_glob(&key)), Pattern::Key(key.clone()));
            let prefix = p(&format!("{}*", escape_glob(&key)));
            proptest::prop_assert_eq!(&prefix, &Pattern::Prefix(key.clone()));
            proptest::prop_assert!(prefix.matches(&key));
        }

        #[test]
        fn a_prefix_covers_exactly_what_starts_with_it(
            prefix in "[a-c:]{0,4}",
            key in "[a-c:]{0,6}",
        ) {
            let pattern = Pattern::Prefix(prefix.clone());
            proptest::prop_assert_eq!(pattern.matches(&key), key.starts_with(&prefix));
            proptest::prop_assert_eq!(
                pattern.covers(&Pattern::Key(key.clone())),
                key.starts_with(&prefix)
            );
        }

        #[test]
        fn a_cascade_contains_its_start_or_a_pattern_covering_it(
            rules in proptest::collection::vec(("[ab]{1,2}", proptest::collection::vec("[ab]{1,3}", 0..3)), 0..6),
            start in "[ab]{0,3}",
        ) {
            let mut set = InvalidationRules::new();
            for (from, to) in &rules {
                let to: Vec<String> = to.iter().map(|t| format!("{t}*")).collect();
                set = set.rule(&format!("{from}*"), &to).unwrap();
            }
            let start = Pattern::Prefix(start);
            let cascade = set.cascade(&start);
            proptest::prop_assert!(cascade.iter().any(|p| p.covers(&start)));
            // Minimal: no pattern covers another.
            for a in &cascade {
                for b in &cascade {
                    proptest::prop_assert!(a == b || !a.covers(b));
                }
            }
        }
    }
}
