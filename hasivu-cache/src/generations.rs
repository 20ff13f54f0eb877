//! Per-prefix generation counters: what makes a prefix invalidation O(1).
//!
//! Every prefix invalidation (a cascade of prefixes at once) takes a new
//! number from one shared sequence (Redis `INCR`, or a local counter
//! without Redis) and records it as the generation of each of its
//! prefixes. An L2 entry carries a stamp: the highest generation its
//! writer knew when the load started. The entry is still valid exactly when
//! no prefix covering its key has a generation above the stamp, because a
//! bump after the load started took a number above every number that
//! existed then.
//!
//! L1 entries carry no stamp: an invalidation sweeps them out of L1 at
//! once. A load that started before the sweep and finishes after it would
//! put an old value back, so loads compare the local sequence (one count
//! per applied invalidation) before storing.
//!
//! Pure bookkeeping: no I/O, no clock.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// The most prefixes tracked. Prefixes come from the application's rules
/// and calls, not from clients, but the map is bounded anyway: past the cap
/// a new prefix is recorded as the empty prefix, which covers every key
/// (correct, only wider).
pub(crate) const MAX_PREFIXES: usize = 65_536;

/// The shared generation of a prefix whose invalidation is waiting to be
/// replayed to Redis: above every stamp.
const PENDING: u64 = u64::MAX;

/// What a load remembers from its start, to decide at its end whether its
/// value may still be stored, and to stamp its L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadToken {
    local: u64,
    shared: u64,
}

impl LoadToken {
    /// The stamp written next to the L2 entry.
    pub(crate) fn stamp(self) -> u64 {
        self.shared
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Generation {
    /// From the shared sequence; compared with L2 stamps.
    shared: u64,
    /// From the local sequence; compared with load tokens.
    local: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Generations {
    prefixes: RwLock<HashMap<Box<str>, Generation>>,
    /// Counts invalidations applied here (own and received).
    local_seq: AtomicU64,
    /// The highest shared generation known here.
    shared_epoch: AtomicU64,
    /// How many prefixes wait for a replay (marked [`PENDING`]).
    pending: AtomicU64,
}

impl Generations {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Taken when a load starts.
    pub(crate) fn token(&self) -> LoadToken {
        LoadToken {
            local: self.local_seq.load(Ordering::Acquire),
            shared: self.shared_epoch.load(Ordering::Acquire),
        }
    }

    /// Records that `prefixes` were invalidated with shared generation
    /// `shared` (already the next number of the shared sequence).
    pub(crate) fn apply<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>, shared: u64) {
        let mut map = self.prefixes.write().expect("generations lock");
        let local = self.local_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for prefix in prefixes {
            let entry = bounded_entry(&mut map, prefix);
            entry.shared = if entry.shared == PENDING {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                shared
            } else {
                entry.shared.max(shared)
            };
            entry.local = local;
        }
        self.shared_epoch.fetch_max(shared, Ordering::AcqRel);
    }

    /// Records an invalidation of `prefixes` that could not reach Redis:
    /// every L2 entry under them counts as invalid until the invalidation
    /// is replayed (and [`apply`](Self::apply)ed with its real generation).
    pub(crate) fn apply_pending<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        let mut map = self.prefixes.write().expect("generations lock");
        let local = self.local_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for prefix in prefixes {
            let entry = bounded_entry(&mut map, prefix);
            if entry.shared != PENDING {
                self.pending.fetch_add(1, Ordering::AcqRel);
            }
            entry.shared = PENDING;
            entry.local = local;
        }
    }

    /// Counts a flush of the whole L1: loads started before it must not
    /// store their values.
    pub(crate) fn flush_local(&self) {
        let mut map = self.prefixes.write().expect("generations lock");
        let local = self.local_seq.fetch_add(1, Ordering::AcqRel) + 1;
        map.entry("".into()).or_default().local = local;
    }

    /// The next number of the local shared sequence, for caches without
    /// Redis.
    pub(crate) fn next_local_shared(&self) -> u64 {
        self.shared_epoch.load(Ordering::Acquire) + 1
    }

    /// Replaces the shared generations with those read from Redis, keeping
    /// local ones for prefixes Redis does not know.
    pub(crate) fn merge_shared(&self, from_redis: impl IntoIterator<Item = (String, u64)>) {
        let mut map = self.prefixes.write().expect("generations lock");
        let mut max = 0;
        for (prefix, shared) in from_redis {
            max = max.max(shared);
            if map.len() >= MAX_PREFIXES && !map.contains_key(prefix.as_str()) {
                let all = map.entry("".into()).or_default();
                all.shared = all.shared.max(shared);
                continue;
            }
            let entry = map.entry(prefix.into_boxed_str()).or_default();
            if entry.shared != PENDING {
                entry.shared = entry.shared.max(shared);
            }
        }
        self.shared_epoch.fetch_max(max, Ordering::AcqRel);
    }

    /// Whether a value loaded under `token` may be stored in L1: no
    /// invalidation of a prefix covering `key` was applied since.
    pub(crate) fn unchanged_since(&self, key: &str, token: LoadToken) -> bool {
        if self.local_seq.load(Ordering::Acquire) == token.local {
            return true;
        }
        let map = self.prefixes.read().expect("generations lock");
        !covering(&map, key).any(|g| g.local > token.local)
    }

    /// Whether an L2 entry of `key` written with `stamp` is still valid.
    pub(crate) fn valid(&self, key: &str, stamp: u64) -> bool {
        if stamp >= self.shared_epoch.load(Ordering::Acquire)
            && self.pending.load(Ordering::Acquire) == 0
        {
            return true;
        }
        let map = self.prefixes.read().expect("generations lock");
        !covering(&map, key).any(|g| g.shared > stamp)
    }

    /// The number of prefixes tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.prefixes.read().expect("generations lock").len()
    }
}

/// The entry of `prefix`, or of the empty prefix (which covers every key)
/// once the map holds [`MAX_PREFIXES`].
fn bounded_entry<'m>(
    map: &'m mut HashMap<Box<str>, Generation>,
    prefix: &str,
) -> &'m mut Generation {
    let prefix = if map.len() >= MAX_PREFIXES && !map.contains_key(prefix) {
        ""
    } else {
        prefix
    };
    map.entry(prefix.into()).or_default()
}

/// The generations of every tracked prefix of `key`, the empty one included.
fn covering<'m>(
    map: &'m HashMap<Box<str>, Generation>,
    key: &'m str,
) -> impl Iterator<Item = &'m Generation> + 'm {
    (0..=key.len())
        .filter(|&end| key.is_char_boundary(end))
        .filter_map(move |end| map.get(&key[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_invalidates_older_stamps_under_the_prefix_only() {
        let g = Generations::new();
        let before = g.token();
        g.apply(["user:"], 7);
        assert!(!g.valid("user:42", before.stamp()));
        assert!(g.valid("menu:daily", before.stamp()));
        assert!(g.valid("user:42", g.token().stamp()));
        assert!(!g.unchanged_since("user:profile:1", before));
        assert!(g.unchanged_since("username", before));
        assert!(g.unchanged_since("menu:x", before));
        assert!(g.unchanged_since("user:42", g.token()));
    }

    #[test]
    fn the_empty_prefix_covers_everything() {
        let g = Generations::new();
        let before = g.token();
        g.apply([""], 1);
        assert!(!g.valid("anything", before.stamp()));
        assert!(!g.valid("", before.stamp()));
    }

    #[test]
    fn shared_generations_from_redis_merge_by_maximum() {
        let g = Generations::new();
        g.apply(["a:"], 3);
        g.merge_shared([("a:".to_owned(), 2), ("b:".to_owned(), 5)]);
        assert!(!g.valid("a:1", 2));
        assert!(g.valid("a:1", 3));
        assert!(!g.valid("b:1", 4));
        assert_eq!(g.token().stamp(), 5);
        assert_eq!(g.next_local_shared(), 6);
    }

    #[test]
    fn unicode_keys_are_split_on_char_boundaries() {
        let g = Generations::new();
        g.apply(["mé"], 1);
        assert!(!g.valid("ménu", 0));
        assert!(g.valid("mx", 0));
    }

    #[test]
    fn pending_invalidations_hide_l2_until_replayed() {
        let g = Generations::new();
        g.apply(["a:"], 4);
        let before = g.token();
        g.apply_pending(["a:"]);
        assert!(!g.valid("a:1", u64::MAX - 1));
        assert!(!g.unchanged_since("a:1", before));
        // The epoch did not move: new stamps are not inflated.
        assert_eq!(g.token().stamp(), 4);
        g.merge_shared([("a:".to_owned(), 4)]);
        assert!(!g.valid("a:1", 5), "still pending after a re-read");
        g.apply(["a:"], 6);
        assert!(g.valid("a:1", 6));
        assert!(!g.valid("a:1", 5));
    }

    #[test]
    fn a_local_flush_stops_older_loads_only() {
        let g = Generations::new();
        let before = g.token();
        g.flush_local();
        assert!(!g.unchanged_since("any", before));
        assert!(g.unchanged_since("any", g.token()));
        assert!(g.valid("any", 0), "L2 stamps are untouched");
    }

    #[test]
    fn the_map_is_bounded() {
        let g = Generations::new();
        for i in 0..MAX_PREFIXES + 10 {
            g.apply([format!("p{i}:").as_str()], i as u64 + 1);
        }
        assert_eq!(g.len(), MAX_PREFIXES + 1);
        // A prefix past the cap went to the empty prefix: everything older
        // is invalid.
        assert!(!g.valid("unrelated", 10));
    }
}
