//! Names of the Redis keys and channel the cache uses besides the values,
//! chosen so that each sits in the same Redis Cluster slot as what it
//! travels with. Pure string logic.

/// The part of a key that decides its Redis Cluster slot: the text between
/// the first `{` and the first `}` after it when that is not empty, else
/// the whole key.
pub(crate) fn slot_part(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The key holding the generation stamp of the value under
/// `prefix` + `key`, in the same slot as the value so that one pipeline
/// reads or writes both. `None` when no such name exists (a key without a
/// hash tag that contains a `}`): the value then goes without a stamp on a
/// cluster, which reads as stamp 0.
pub(crate) fn stamp_key(prefix: &str, key: &str) -> Option<String> {
    let full = format!("{prefix}{key}");
    let wanted = slot_part(&full);
    let plain = format!("{prefix}hasivu:stamp:{key}");
    if slot_part(&plain) == wanted {
        return Some(plain);
    }
    let tagged = format!("{prefix}hasivu:stamp:{{{full}}}");
    (slot_part(&tagged) == wanted).then_some(tagged)
}

/// The stamp key for a single server, where slots do not matter.
pub(crate) fn stamp_key_any(prefix: &str, key: &str) -> String {
    stamp_key(prefix, key).unwrap_or_else(|| format!("{prefix}hasivu:stamp:{key}"))
}

/// The hash of prefix → generation, and the sequence the generations come
/// from: one slot for both, so the bump script is not cross-slot.
pub(crate) fn generation_keys(prefix: &str) -> (String, String) {
    (
        format!("{prefix}hasivu:{{generations}}"),
        format!("{prefix}hasivu:{{generations}}:seq"),
    )
}

/// The backplane's pub/sub channel.
pub(crate) fn channel(prefix: &str) -> String {
    format!("{prefix}hasivu:backplane")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_parts_follow_the_cluster_spec() {
        assert_eq!(slot_part("user:1"), "user:1");
        assert_eq!(slot_part("{user1000}.following"), "user1000");
        assert_eq!(slot_part("foo{}{bar}"), "foo{}{bar}");
        assert_eq!(slot_part("foo{{bar}}zap"), "{bar");
        assert_eq!(slot_part("foo{bar}{zap}"), "bar");
        assert_eq!(slot_part("a{b"), "a{b");
    }

    #[test]
    fn stamps_share_the_value_slot() {
        for (prefix, key) in [
            ("", "menu:daily:current"),
            ("app:", "user:{42}:profile"),
            ("{app}:", "user:1"),
            ("", "a{b"),
            ("", "foo{{bar}}zap"),
        ] {
            let stamp = stamp_key(prefix, key).expect(key);
            assert_eq!(
                slot_part(&stamp),
                slot_part(&format!("{prefix}{key}")),
                "{prefix}{key} -> {stamp}"
            );
            assert!(stamp.starts_with(prefix));
        }
        // No name shares the slot of a tag-less key with a `}`.
        assert_eq!(stamp_key("", "a}b"), None);
        assert_eq!(stamp_key("", "x{}y}"), None);
        // A tag spanning prefix and key cannot be kept either.
        assert_eq!(stamp_key("a{", "b}c"), None);
        assert_eq!(stamp_key_any("", "a}b"), "hasivu:stamp:a}b");
    }

    #[test]
    fn generation_keys_share_a_slot() {
        let (map, seq) = generation_keys("app:");
        assert_eq!(slot_part(&map), slot_part(&seq));
        assert_eq!(channel("app:"), "app:hasivu:backplane");
    }
}
