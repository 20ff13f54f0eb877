//! Generations: what makes an invalidation O(1), and what keeps a load
//! overtaken by a write from storing its value.
//!
//! Every prefix invalidation (a cascade of prefixes at once) takes a new
//! number from one shared sequence (in Redis, or a local counter without
//! Redis) and records it as the generation of each of its prefixes. Writes
//! of single keys (`set`, `remove`, invalidated keys) take numbers from the
//! same sequence, so the highest number an instance has heard of (its
//! epoch) grows with every change it knows. An L2 entry carries a stamp:
//! the epoch its writer knew when the load started. The entry is still
//! valid exactly when no prefix covering its key has a generation above the
//! stamp, because a bump after the load started took a number above every
//! number that existed then.
//!
//! Locally, two counters order what this instance applied (its own changes
//! and those the backplane brought): one for prefix invalidations, one for
//! key writes. A load remembers both when it starts (its [`Token`]); before
//! storing, it checks that no prefix covering its key was invalidated and
//! no write of its key was applied since. Key writes are remembered in a
//! fixed table of counters indexed by a hash of the key: bounded whatever
//! the keys, and a collision only keeps a load out of the cache that could
//! have been kept (correct, only wider). L1 entries remember the prefix
//! counter they were loaded under, so an entry under a prefix invalidated
//! since is a miss without any walk over L1.
//!
//! Pure bookkeeping: no I/O, no clock.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
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

/// The counters remembering key writes (8 bytes each). A load is kept out
/// of the cache when a key sharing its counter is written while it runs:
/// with 4096, one load in 4096 at one write per load duration.
pub(crate) const KEY_SLOTS: usize = 4096;

/// The shared generation of a prefix whose invalidation is waiting to be
/// replayed to Redis: above every stamp.
const PENDING: u64 = u64::MAX;

/// Prefix lengths from this one up share one bit of [`Prefixes::lengths`].
const LONG: usize = 255;

/// What a load remembers from its start, to decide at its end whether its
/// value may still be stored, and to stamp its L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// The local prefix counter.
    prefixes: u64,
    /// The local key counter.
    keys: u64,
    /// The epoch: the highest shared generation known here.
    shared: u64,
}

impl Token {
    /// The stamp written next to the L2 entry.
    pub(crate) fn stamp(self) -> u64 {
        self.shared
    }

    /// What an L1 entry loaded under this token remembers (see
    /// [`Generations::current`]).
    pub(crate) fn born(self) -> u64 {
        self.prefixes
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Generation {
    /// From the shared sequence; compared with L2 stamps.
    shared: u64,
    /// From the local prefix counter; compared with tokens and L1 entries.
    local: u64,
}

/// The prefixes invalidated so far, and which lengths they have, so that
/// looking up the prefixes of a key tries only lengths that exist.
#[derive(Debug, Default)]
struct Prefixes {
    map: HashMap<Box<str>, Generation>,
    /// Bit `n`: a prefix of `n` bytes is tracked (bit [`LONG`]: one of
    /// [`LONG`] bytes or more).
    lengths: [u64; 4],
}

impl Prefixes {
    /// The entry of `prefix`, or of the empty prefix (which covers every
    /// key) once the map holds [`MAX_PREFIXES`].
    fn entry(&mut self, prefix: &str) -> &mut Generation {
        let prefix = if self.map.len() >= MAX_PREFIXES && !self.map.contains_key(prefix) {
            ""
        } else {
            prefix
        };
        let bit = prefix.len().min(LONG);
        self.lengths[bit / 64] |= 1 << (bit % 64);
        self.map.entry(prefix.into()).or_default()
    }

    fn has_length(&self, len: usize) -> bool {
        let bit = len.min(LONG);
        self.lengths[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The generations of every tracked prefix of `key`, the empty one
    /// included.
    fn covering<'m>(&'m self, key: &'m str) -> impl Iterator<Item = &'m Generation> + 'm {
        (0..=key.len())
            .filter(move |&end| self.has_length(end) && key.is_char_boundary(end))
            .filter_map(move |end| self.map.get(&key[..end]))
    }
}

#[derive(Debug)]
pub(crate) struct Generations {
    prefixes: RwLock<Prefixes>,
    /// Counts prefix invalidations and L1 flushes applied here.
    prefix_seq: AtomicU64,
    /// Counts key writes applied here (own and received).
    key_seq: AtomicU64,
    /// The highest `key_seq` of a write of a key hashing to each slot.
    keys: Box<[AtomicU64]>,
    hasher: RandomState,
    /// The highest shared generation known here.
    shared_epoch: AtomicU64,
    /// How many prefixes wait for a replay (marked [`PENDING`]).
    pending: AtomicU64,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            prefixes: RwLock::default(),
            prefix_seq: AtomicU64::new(0),
            key_seq: AtomicU64::new(0),
            keys: (0..KEY_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            shared_epoch: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
}

impl Generations {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Taken when a load starts.
    pub(crate) fn token(&self) -> Token {
        Token {
            prefixes: self.prefix_seq.load(Ordering::Acquire),
            keys: self.key_seq.load(Ordering::Acquire),
            shared: self.shared_epoch.load(Ordering::Acquire),
        }
    }

    /// Records that `prefixes` were invalidated with shared generation
    /// `shared` (a new number of the shared sequence).
    pub(crate) fn apply<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>, shared: u64) {
        let mut tracked = self.prefixes.write().expect("generations lock");
        // Counted under the lock: whoever sees the new count and then takes
        // the lock sees the prefixes too.
        let local = self.prefix_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for prefix in prefixes {
            let entry = tracked.entry(prefix);
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
        let mut tracked = self.prefixes.write().expect("generations lock");
        let local = self.prefix_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for prefix in prefixes {
            let entry = tracked.entry(prefix);
            if entry.shared != PENDING {
                self.pending.fetch_add(1, Ordering::AcqRel);
            }
            entry.shared = PENDING;
            entry.local = local;
        }
    }

    /// Counts a flush of the whole L1: loads started before it must not
    /// store their values, and entries loaded before it are misses.
    pub(crate) fn flush_local(&self) {
        let mut tracked = self.prefixes.write().expect("generations lock");
        let local = self.prefix_seq.fetch_add(1, Ordering::AcqRel) + 1;
        tracked.entry("").local = local;
    }

    /// Records writes of `keys` (set, removed or invalidated, here or on
    /// another instance): loads of them started before must not store.
    /// Returns the count the writes were recorded with.
    pub(crate) fn touch<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> u64 {
        let local = self.key_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for key in keys {
            self.keys[self.slot(key)].fetch_max(local, Ordering::AcqRel);
        }
        local
    }

    /// Whether another write of `key` (or of a key sharing its counter)
    /// was recorded after the one [`touch`](Self::touch) counted as `mark`.
    pub(crate) fn written_since(&self, key: &str, mark: u64) -> bool {
        self.keys[self.slot(key)].load(Ordering::Acquire) > mark
    }

    /// Records that a change with shared generation `shared` happened (a
    /// key write, or the sequence as Redis holds it after a resync): loads
    /// starting from now stamp their values with it.
    pub(crate) fn observe(&self, shared: u64) {
        self.shared_epoch.fetch_max(shared, Ordering::AcqRel);
    }

    /// The next number of the local shared sequence, for caches without
    /// Redis.
    pub(crate) fn next_local_shared(&self) -> u64 {
        self.shared_epoch.load(Ordering::Acquire) + 1
    }

    /// Replaces the shared generations with those read from Redis, keeping
    /// local ones for prefixes Redis does not know.
    pub(crate) fn merge_shared(&self, from_redis: impl IntoIterator<Item = (String, u64)>) {
        let mut tracked = self.prefixes.write().expect("generations lock");
        let mut max = 0;
        for (prefix, shared) in from_redis {
            max = max.max(shared);
            let entry = tracked.entry(&prefix);
            if entry.shared != PENDING {
                entry.shared = entry.shared.max(shared);
            }
        }
        self.shared_epoch.fetch_max(max, Ordering::AcqRel);
    }

    /// Whether a value loaded under `token` may be stored: no invalidation
    /// of a prefix covering `key` and no write of `key` was applied since.
    pub(crate) fn unchanged_since(&self, key: &str, token: Token) -> bool {
        if self.key_seq.load(Ordering::Acquire) != token.keys
            && self.keys[self.slot(key)].load(Ordering::Acquire) > token.keys
        {
            return false;
        }
        if self.prefix_seq.load(Ordering::Acquire) == token.prefixes {
            return true;
        }
        let tracked = self.prefixes.read().expect("generations lock");
        !tracked.covering(key).any(|g| g.local > token.prefixes)
    }

    /// Whether an L1 entry of `key` that remembers `born` (the prefix
    /// counter it was loaded under) is still current: no prefix covering
    /// it was invalidated since. One atomic load when nothing was
    /// invalidated since the entry last checked; otherwise the check moves
    /// `born` forward, so each entry pays for a lookup once per
    /// invalidation, not on every hit.
    pub(crate) fn current(&self, key: &str, born: &AtomicU64) -> bool {
        let now = self.prefix_seq.load(Ordering::Acquire);
        let since = born.load(Ordering::Relaxed);
        if since == now {
            return true;
        }
        let tracked = self.prefixes.read().expect("generations lock");
        if tracked.covering(key).any(|g| g.local > since) {
            return false;
        }
        born.store(now, Ordering::Relaxed);
        true
    }

    /// Whether an L2 entry of `key` written with `stamp` is still valid.
    pub(crate) fn valid(&self, key: &str, stamp: u64) -> bool {
        if stamp >= self.shared_epoch.load(Ordering::Acquire)
            && self.pending.load(Ordering::Acquire) == 0
        {
            return true;
        }
        let tracked = self.prefixes.read().expect("generations lock");
        !tracked.covering(key).any(|g| g.shared > stamp)
    }

    fn slot(&self, key: &str) -> usize {
        // Truncating the hash is what indexing a table by it means.
        #[allow(clippy::cast_possible_truncation)]
        let hash = self.hasher.hash_one(key) as usize;
        hash % KEY_SLOTS
    }

    /// The number of prefixes tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.prefixes.read().expect("generations lock").map.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        assert!(!g.unchanged_since("anything", before));
        assert!(!g.current("anything", &AtomicU64::new(before.born())));
    }

    #[test]
    fn shared_generations_from_redis_merge_by_maximum() {
        let g = Generations::new();
        g.apply(["a:"], 3);
        g.merge_shared([("a:".to_owned(), 2), ("b:".to_owned(), 5)]);
        assert!(!g.valid("a:1", 2));
        assert!(g.valid("a:1", 3));
        assert!(!g.valid("b:1", 4));
        assert!(g.valid("b:1", 5));
        assert!(g.valid("c:1", 0), "not covered");
        assert_eq!(g.token().stamp(), 5);
        assert_eq!(g.next_local_shared(), 6);
        // A lower generation from Redis does not lower the epoch.
        g.merge_shared([("c:".to_owned(), 1)]);
        assert_eq!(g.token().stamp(), 5);
        assert!(!g.valid("c:1", 0));
    }

    #[test]
    fn a_merge_does_not_touch_local_counters() {
        let g = Generations::new();
        let before = g.token();
        let born = AtomicU64::new(before.born());
        g.merge_shared([("a:".to_owned(), 9)]);
        assert!(
            g.unchanged_since("a:1", before),
            "a re-read is not a change"
        );
        assert!(g.current("a:1", &born));
    }

    #[test]
    fn unicode_keys_are_split_on_char_boundaries() {
        let g = Generations::new();
        g.apply(["mé"], 1);
        assert!(!g.valid("ménu", 0));
        assert!(g.valid("mx", 0));
        // "m" plus the first byte of "é" is not a prefix of anything.
        assert!(g.valid("m", 0));
        // A tracked length that ends inside a character of the key is
        // skipped, not sliced.
        g.apply(["ab"], 2);
        assert!(g.valid("xé", 0));
        assert!(g.current("xé", &AtomicU64::new(0)));
    }

    #[test]
    fn long_prefixes_are_found() {
        let g = Generations::new();
        let long = "p".repeat(300);
        let longer = "q".repeat(LONG);
        g.apply([long.as_str(), longer.as_str()], 4);
        assert!(!g.valid(&format!("{long}:1"), 3));
        assert!(!g.valid(&long, 3));
        assert!(g.valid(&long[..299], 3));
        assert!(!g.valid(&format!("{longer}x"), 3));
        assert!(g.valid(&"q".repeat(LONG - 1), 3));
    }

    #[test]
    fn only_tracked_prefix_lengths_are_looked_up() {
        let mut prefixes = Prefixes::default();
        assert!(!(0..=LONG + 5).any(|len| prefixes.has_length(len)));
        prefixes.entry("user:");
        prefixes.entry("");
        prefixes.entry(&"x".repeat(70));
        prefixes.entry(&"y".repeat(LONG + 3));
        let tracked: Vec<usize> = (0..=LONG + 5)
            .filter(|&len| prefixes.has_length(len))
            .collect();
        let long: Vec<usize> = (LONG..=LONG + 5).collect();
        assert_eq!(tracked, [&[0, 5, 70][..], &long].concat());
        assert_eq!(prefixes.covering("user:1").count(), 2, "\"\" and \"user:\"");
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
        // Pending twice counts once.
        g.apply_pending(["a:"]);
        g.apply(["a:"], 6);
        assert!(g.valid("a:1", 6));
        assert!(!g.valid("a:1", 5));
        // Nothing pends any more: a current stamp takes the fast path,
        // elsewhere too.
        assert!(g.valid("b:1", 6));
    }

    #[test]
    fn pending_elsewhere_does_not_hide_other_prefixes() {
        let g = Generations::new();
        g.apply(["a:"], 4);
        g.apply_pending(["b:"]);
        assert!(g.valid("a:1", 4));
        assert!(!g.valid("b:1", 4));
        assert!(g.valid("c:1", 4));
    }

    #[test]
    fn a_local_flush_stops_older_loads_only() {
        let g = Generations::new();
        let before = g.token();
        let born = AtomicU64::new(before.born());
        g.flush_local();
        assert!(!g.unchanged_since("any", before));
        assert!(g.unchanged_since("any", g.token()));
        assert!(!g.current("any", &born), "entries loaded before are gone");
        assert!(g.valid("any", 0), "L2 stamps are untouched");
    }

    #[test]
    fn a_key_write_stops_loads_of_that_key_only() {
        let g = Generations::new();
        let before = g.token();
        g.touch(["menu:daily"]);
        assert!(!g.unchanged_since("menu:daily", before));
        assert!(g.unchanged_since("menu:daily", g.token()));
        for other in (0..100).map(|i| format!("other:{i}")) {
            let shares_a_slot = g.slot(&other) == g.slot("menu:daily");
            assert_eq!(g.unchanged_since(&other, before), !shares_a_slot, "{other}");
        }
        // The table spreads keys: about 100 000 / 4096 share a slot.
        let sharing = (0..100_000)
            .filter(|i| g.slot(&format!("k{i}")) == g.slot("menu:daily"))
            .count();
        assert!((5..100).contains(&sharing), "{sharing}");
        // A key write is not a prefix invalidation: L1 entries stay.
        assert!(g.current("menu:daily", &AtomicU64::new(before.born())));
        assert!(g.valid("menu:daily", before.stamp()));
    }

    #[test]
    fn key_writes_are_remembered_per_key() {
        let g = Generations::new();
        g.touch(["a"]);
        let between = g.token();
        g.touch(["b"]);
        // "a" was written before the token only.
        if g.slot("a") != g.slot("b") {
            assert!(g.unchanged_since("a", between));
        }
        assert!(!g.unchanged_since("b", between));
        // Several keys in one write.
        let before = g.token();
        g.touch(["c", "d"]);
        assert!(!g.unchanged_since("c", before));
        assert!(!g.unchanged_since("d", before));
    }

    #[test]
    fn a_writer_sees_writes_of_its_key_after_its_own() {
        let g = Generations::new();
        let mark = g.touch(["k"]);
        assert!(!g.written_since("k", mark), "its own write");
        g.touch(["other"]);
        if g.slot("other") != g.slot("k") {
            assert!(!g.written_since("k", mark));
        }
        let later = g.touch(["k"]);
        assert!(later > mark);
        assert!(g.written_since("k", mark));
        assert!(!g.written_since("k", later));
    }

    #[test]
    fn observed_generations_raise_the_epoch_only() {
        let g = Generations::new();
        let before = g.token();
        g.observe(40);
        assert_eq!(g.token().stamp(), 40);
        g.observe(30);
        assert_eq!(g.token().stamp(), 40, "never lowered");
        assert_eq!(g.next_local_shared(), 41);
        assert!(g.unchanged_since("k", before), "not a change of any key");
        // Older stamps are still valid: no prefix was invalidated.
        assert!(g.valid("k", 0));
    }

    #[test]
    fn l1_entries_go_stale_with_their_prefix_only() {
        let g = Generations::new();
        let born_user = AtomicU64::new(g.token().born());
        let born_menu = AtomicU64::new(g.token().born());
        assert!(g.current("user:1", &born_user));
        g.apply(["user:"], 1);
        assert!(!g.current("user:1", &born_user));
        assert!(!g.current("user:1", &born_user), "and stays so");
        assert!(g.current("menu:1", &born_menu));
        // The check moved the entry forward: it is not redone on each hit.
        assert_eq!(born_menu.load(Ordering::Relaxed), g.token().born());
        g.apply(["menu:"], 2);
        assert!(!g.current("menu:1", &born_menu));
        // An entry loaded after the invalidation is current.
        assert!(g.current("user:1", &AtomicU64::new(g.token().born())));
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
        // Known prefixes are still updated in place.
        g.apply(["p7:"], u64::MAX - 1);
        assert_eq!(g.len(), MAX_PREFIXES + 1);
        assert!(!g.valid("p7:x", u64::MAX - 2));
        // Generations read from Redis past the cap go to the empty prefix too.
        g.merge_shared([("new:".to_owned(), u64::MAX - 1)]);
        assert_eq!(g.len(), MAX_PREFIXES + 1);
        assert!(!g.valid("zzz", u64::MAX - 2));
    }

    proptest! {
        /// Against a plain model: a value is storable exactly when nothing
        /// covering its key happened since its token (up to key-slot
        /// collisions, which only ever refuse), and an L2 stamp is valid
        /// exactly when no covering prefix has a higher generation.
        #[test]
        fn agrees_with_a_model(ops in prop::collection::vec((0..4_u8, 0..6_usize), 1..40)) {
            let names = ["", "a", "a:", "a:1", "b:", "b:2"];
            let g = Generations::new();
            let mut shared = 0;
            // (key or prefix, is prefix, shared generation, op index)
            let mut history: Vec<(&str, bool, u64, usize)> = Vec::new();
            let mut tokens = Vec::new();
            for (i, (op, name)) in ops.iter().enumerate() {
                let name = names[*name];
                match op {
                    0 => {
                        shared += 1;
                        g.apply([name], shared);
                        history.push((name, true, shared, i));
                    }
                    1 => {
                        g.touch([name]);
                        history.push((name, false, 0, i));
                    }
                    _ => tokens.push((g.token(), i)),
                }
            }
            for key in ["a", "a:1", "a:12", "b:2", "c"] {
                for &(token, at) in &tokens {
                    let changed = history.iter().any(|&(name, prefix, _, i)| {
                        i > at && if prefix { key.starts_with(name) } else { key == name }
                    });
                    let collides = history.iter().any(|&(name, prefix, _, i)| {
                        i > at && !prefix && name != key && g.slot(name) == g.slot(key)
                    });
                    prop_assert_eq!(
                        g.unchanged_since(key, token),
                        !(changed || collides),
                        "{} after op {}", key, at
                    );
                    let prefix_changed = history.iter().any(|&(name, prefix, _, i)| {
                        i > at && prefix && key.starts_with(name)
                    });
                    prop_assert_eq!(
                        g.current(key, &AtomicU64::new(token.born())),
                        !prefix_changed,
                        "{} after op {}", key, at
                    );
                    let invalid = history.iter().any(|&(name, prefix, generation, _)| {
                        prefix && key.starts_with(name) && generation > token.stamp()
                    });
                    prop_assert_eq!(g.valid(key, token.stamp()), !invalid);
                }
            }
        }
    }
}
