//! Redis key names: `{prefix}{<policy>:<key>}:<algorithm>`.
//!
//! The part in braces is a Redis Cluster hash tag, so every key of one
//! counter hashes to the same slot. Braces inside the policy or the client
//! key would end the tag early (Redis hashes from the first `{` to the next
//! `}`), so they are percent-escaped, along with `%` itself and, in the
//! policy, the `:` that separates it from the client key. The escaping is
//! injective: two different (policy, key) pairs never share a counter.

use super::Algorithm;
use crate::StoreKey;

/// The Redis key of `key`'s counter under `algorithm`.
pub(super) fn redis_key(prefix: &str, key: StoreKey<'_>, algorithm: Algorithm) -> String {
    let suffix = match algorithm {
        Algorithm::SlidingWindowCounter => ":swc",
        Algorithm::SlidingLog => ":log",
    };
    let mut out = String::with_capacity(prefix.len() + key.policy.len() + key.key.len() + 8);
    out.push_str(prefix);
    out.push('{');
    escape_into(&mut out, key.policy, true);
    out.push(':');
    escape_into(&mut out, key.key, false);
    out.push('}');
    out.push_str(suffix);
    out
}

fn escape_into(out: &mut String, text: &str, colon: bool) {
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' if colon => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

/// Whether a prefix keeps the hash tag intact (no braces).
pub(super) fn valid_prefix(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(policy: &'a str, key: &'a str) -> StoreKey<'a> {
        StoreKey { policy, key }
    }

    /// The hash tag as Redis Cluster sees it: from the first `{` to the
    /// next `}`, when not empty.
    fn hash_tag(name: &str) -> Option<&str> {
        let open = name.find('{')?;
        let close = name[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &name[open + 1..close])
    }

    #[test]
    fn names_carry_prefix_tag_and_algorithm() {
        assert_eq!(
            redis_key(
                "rl:",
                key("general", "203.0.113.7"),
                Algorithm::SlidingWindowCounter
            ),
            "rl:{general:203.0.113.7}:swc"
        );
        assert_eq!(
            redis_key("", key("login", "user:42"), Algorithm::SlidingLog),
            "{login:user:42}:log"
        );
    }

    #[test]
    fn braces_in_client_keys_stay_inside_the_hash_tag() {
        let name = redis_key(
            "rl:",
            key("general", "a {b} c}{"),
            Algorithm::SlidingWindowCounter,
        );
        assert_eq!(name, "rl:{general:a %7Bb%7D c%7D%7B}:swc");
        assert_eq!(hash_tag(&name), Some("general:a %7Bb%7D c%7D%7B"));
        // Both algorithms' keys of one counter share the tag.
        let log = redis_key("rl:", key("general", "a {b} c}{"), Algorithm::SlidingLog);
        assert_eq!(hash_tag(&log), hash_tag(&name));
    }

    #[test]
    fn escaping_is_injective() {
        let pairs = [
            ("a:b", "c"),
            ("a", "b:c"),
            ("a", "%7B"),
            ("a", "{"),
            ("a%", "3Ab"),
            ("a:", "b"),
        ];
        let names: std::collections::HashSet<String> = pairs
            .iter()
            .map(|(p, k)| redis_key("", key(p, k), Algorithm::SlidingLog))
            .collect();
        assert_eq!(names.len(), pairs.len(), "{names:?}");
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(valid_prefix("rl:"));
        assert!(valid_prefix(""));
        assert!(!valid_prefix("rl:{x}:"));
        assert!(!valid_prefix("}"));
    }

    proptest::proptest! {
        /// Whatever the client key, the tag spans the whole escaped
        /// (policy, key) pair.
        #[test]
        fn the_tag_covers_the_whole_key(policy in "[a-z_.-]{1,8}", client in "\\PC{0,24}") {
            let name = redis_key("p:", key(&policy, &client), Algorithm::SlidingWindowCounter);
            let tag = hash_tag(&name).expect("a hash tag");
            proptest::prop_assert_eq!(tag.len() + "p:{}:swc".len(), name.len());
        }
    }
}
