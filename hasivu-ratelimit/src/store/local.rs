//! The in-process store: GCRA with one `u64` of state per key, in shards
//! of hash maps behind short mutexes, bounded by a key cap.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{Store, StoreKey};
use crate::{Quota, Source, Verdict, WhenFull, gcra};

/// The number of shards (a power of two).
const SHARDS: usize = 64;

/// Keys are already hashes: the map uses them as they are.
#[derive(Default, Clone, Copy)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for safety.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<Identity>>;

/// An in-process GCRA store, bounded by a key count.
///
/// # Memory
///
/// Each key costs one `u64` of state plus its 64-bit hash: about 18 to 37
/// bytes per key with the hash map's control bytes and load factor (38
/// bytes measured for a million keys), so the default cap of 100 000 keys
/// holds about 2 to 4 MB whatever clients send. Keys are hashed with a
/// per-process random seed (foldhash), so clients cannot aim collisions;
/// two keys sharing a 64-bit hash would share a counter (about one pair in
/// 10¹³ among a million keys).
///
/// # When full
///
/// The keys are spread over 64 shards, each holding at most its share of
/// [`max_keys`](LocalStoreBuilder::max_keys). A new key arriving at a full
/// shard is placed by this rule, which costs one pass over the shard; a
/// key already held never pays it:
///
/// 1. Keys that have rested long enough to be whole again are dropped
///    (forgetting them changes nothing).
/// 2. Otherwise, for a quota with [`WhenFull::Evict`] (the default), the
///    key closest to rested (the least debt: the smallest theoretical
///    arrival time) is forgotten, the new key included: a new key is kept
///    only in place of one owing less. Actively limited keys owe the most,
///    so they are the last to go, and a client spreading requests over
///    many addresses cannot push a limited key out with fresh ones. A
///    forgotten key starts afresh on its next request; each is counted in
///    [`evictions`](Self::evictions) and
///    `hasivu_ratelimit_local_evictions_total`.
/// 3. For a quota with [`WhenFull::Refuse`] (strict: login, payments), the
///    new key's request is refused, with a retry-after of the time until
///    the key closest to rested has rested, and nothing is forgotten:
///    counted in [`refusals`](Self::refusals) and
///    `hasivu_ratelimit_local_full_total{policy}`. Raise `max_keys` if it
///    moves outside an attack.
///
/// ```
/// use hasivu_ratelimit::{LocalStore, Quota, Store, StoreKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = LocalStore::builder().max_keys(100_000).build();
/// let quota = Quota::per_minute(2);
/// let key = StoreKey { policy: "general", key: "203.0.113.7" };
/// assert!(store.check_sync(key, &quota, 1).allowed);
/// assert!(store.check_sync(key, &quota, 1).allowed);
/// let third = store.check_sync(key, &quota, 1);
/// assert!(!third.allowed);
/// assert!(third.retry_after.is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: foldhash::quality::RandomState,
    clock: Clock,
    evictions: AtomicU64,
    refusals: AtomicU64,
}

/// Nanoseconds since the store was made, plus one second so that a stored
/// TAT of 0 always means "rested". The system clock is read through
/// `quanta` (the CPU's time-stamp counter, calibrated against the
/// monotonic clock): a `clock_gettime` costs more than the rest of a check
/// on virtual machines.
#[derive(Debug, Clone)]
enum Clock {
    Tsc(quanta::Clock, quanta::Instant),
    Tokio(tokio::time::Instant),
}

const EPOCH_OFFSET: u64 = 1_000_000_000;

impl Clock {
    fn now(&self) -> u64 {
        let elapsed = match self {
            Clock::Tsc(clock, start) => clock.now().saturating_duration_since(*start),
            Clock::Tokio(start) => start.elapsed(),
        };
        u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX - EPOCH_OFFSET)
            .saturating_add(EPOCH_OFFSET)
    }
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("keys", &self.len())
            .field("max_keys", &(self.inner.per_shard * SHARDS))
            .field("evictions", &self.inner.evictions.load(Ordering::Relaxed))
            .field("refusals", &self.inner.refusals.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Builds a [`LocalStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalStoreBuilder {
    max_keys: usize,
    tokio_time: bool,
}

impl LocalStoreBuilder {
    /// The most keys kept (default 100 000, about 2–4 MB); rounded up to a
    /// multiple of the 64 shards.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// Reads tokio's clock instead of the system's monotonic clock, so
    /// tests can pause and advance time.
    pub fn tokio_time(mut self, enabled: bool) -> Self {
        self.tokio_time = enabled;
        self
    }

    /// Builds the store.
    pub fn build(self) -> LocalStore {
        let per_shard = self.max_keys.div_ceil(SHARDS);
        LocalStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                per_shard,
                hasher: foldhash::quality::RandomState::default(),
                clock: if self.tokio_time {
                    Clock::Tokio(tokio::time::Instant::now())
                } else {
                    let clock = quanta::Clock::new();
                    let start = clock.now();
                    Clock::Tsc(clock, start)
                },
                evictions: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
            }),
        }
    }
}

impl LocalStore {
    /// A store with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder.
    pub fn builder() -> LocalStoreBuilder {
        LocalStoreBuilder {
            max_keys: 100_000,
            tokio_time: false,
        }
    }

    /// The check, synchronously: it never waits on anything but a shard's
    /// short lock.
    pub fn check_sync(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> Verdict {
        let hash = self.hash(key);
        let now = self.inner.clock.now();
        let shard = &self.inner.shards[shard_index(hash)];
        let mut map = shard.lock().expect("local store shard lock");
        if let Some(tat) = map.get_mut(&hash) {
            let step = gcra::check(quota, *tat, now, cost);
            if let Some(new_tat) = step.new_tat {
                *tat = new_tat;
            }
            return step.verdict;
        }
        let step = gcra::check(quota, 0, now, cost);
        if let Some(new_tat) = step.new_tat {
            if map.len() >= self.inner.per_shard {
                return self.insert_when_full(&mut map, hash, now, key, quota, step);
            }
            map.insert(hash, new_tat);
        }
        step.verdict
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().expect("local store shard lock").len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped while still counting, because the cap was reached.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Requests of new keys refused because their shard was full of keys
    /// still counting and their quota says [`WhenFull::Refuse`].
    pub fn refusals(&self) -> u64 {
        self.inner.refusals.load(Ordering::Relaxed)
    }

    fn hash(&self, key: StoreKey<'_>) -> u64 {
        let mut hasher = self.inner.hasher.build_hasher();
        hasher.write(key.policy.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(key.key.as_bytes());
        hasher.finish()
    }

    /// A new key at a full shard (see "When full" in the type's docs);
    /// `step` is its admission had there been room.
    #[cold]
    fn insert_when_full(
        &self,
        map: &mut Shard,
        hash: u64,
        now: u64,
        key: StoreKey<'_>,
        quota: &Quota,
        step: gcra::Step,
    ) -> Verdict {
        let (admitted, Some(new_tat)) = (step.verdict, step.new_tat) else {
            return step.verdict;
        };
        // One pass: drop the rested keys, find the one closest to rested.
        let mut closest: Option<(u64, u64)> = None;
        map.retain(|&held, &mut tat| {
            if tat <= now {
                return false;
            }
            if closest.is_none_or(|(_, least)| tat < least) {
                closest = Some((held, tat));
            }
            true
        });
        let closest = match closest {
            Some(closest) if map.len() >= self.inner.per_shard => closest,
            _ => {
                map.insert(hash, new_tat);
                return admitted;
            }
        };
        let (victim, victim_tat) = closest;
        match quota.when_full {
            WhenFull::Refuse => {
                self.inner.refusals.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("hasivu_ratelimit_local_full_total", "policy" => key.policy.to_owned())
                    .increment(1);
                let wait = std::time::Duration::from_nanos(victim_tat - now);
                Verdict {
                    allowed: false,
                    limit: admitted.limit,
                    remaining: 0,
                    reset_after: wait,
                    retry_after: Some(wait),
                }
            }
            WhenFull::Evict => {
                // Otherwise the new key owes the least: admitted, not kept.
                if victim_tat < new_tat {
                    map.remove(&victim);
                    map.insert(hash, new_tat);
                }
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("hasivu_ratelimit_local_evictions_total").increment(1);
                admitted
            }
        }
    }
}

/// The shard of a key hash: its top bits (the map's buckets use the low
/// ones).
#[inline]
fn shard_index(hash: u64) -> usize {
    (hash >> 58) as usize % SHARDS
}

impl Store for LocalStore {
    async fn check(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> (Verdict, Source) {
        (self.check_sync(key, quota, cost), Source::Local)
    }

    fn check_now(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> Option<(Verdict, Source)> {
        Some((self.check_sync(key, quota, cost), Source::Local))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::WhenFull;

    fn key(k: &str) -> StoreKey<'_> {
        StoreKey {
            policy: "p",
            key: k,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exact_admission_at_window_boundaries() {
        let store = LocalStore::builder().tokio_time(true).build();
        // 10 per second with the default burst of 10.
        let quota = Quota::per_second(10);
        for _ in 0..10 {
            assert!(store.check_sync(key("a"), &quota, 1).allowed);
        }
        assert!(!store.check_sync(key("a"), &quota, 1).allowed);
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!store.check_sync(key("a"), &quota, 1).allowed);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            store.check_sync(key("a"), &quota, 1).allowed,
            "one back after 100 ms"
        );
        assert!(!store.check_sync(key("a"), &quota, 1).allowed);
        // A full window later the whole burst is back.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut admitted = 0;
        while store.check_sync(key("a"), &quota, 1).allowed {
            admitted += 1;
        }
        assert_eq!(admitted, 10);
        // Other keys and other policies have their own counters.
        assert!(store.check_sync(key("b"), &quota, 1).allowed);
        let other = StoreKey {
            policy: "q",
            key: "a",
        };
        assert!(store.check_sync(other, &quota, 1).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_retrying_while_limited_gets_in_after_the_window() {
        let store = LocalStore::builder().tokio_time(true).build();
        let quota = Quota::per_second(5);
        let mut admitted = 0;
        // Hammer every 10 ms for three seconds.
        for _ in 0..300 {
            if store.check_sync(key("c"), &quota, 1).allowed {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // The first burst of 5, then 5 per second.
        assert!((19..=21).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_million_distinct_keys_stay_under_the_cap() {
        let store = LocalStore::builder().max_keys(10_000).build();
        let quota = Quota::per_hour(100);
        for i in 0..1_000_000u32 {
            let k = i.to_string();
            assert!(store.check_sync(key(&k), &quota, 1).allowed);
        }
        assert!(store.len() <= 10_048, "{}", store.len());
        assert!(store.evictions() > 0);
    }

    /// `n` keys of `policy` that land in shard `shard`.
    fn keys_in_shard(
        store: &LocalStore,
        policy: &'static str,
        shard: usize,
        n: usize,
    ) -> Vec<String> {
        (0u32..)
            .map(|i| format!("{policy}-{shard}-{i}"))
            .filter(|k| {
                shard_index(store.hash(StoreKey {
                    policy,
                    key: k.as_str(),
                })) == shard
            })
            .take(n)
            .collect()
    }

    fn at<'a>(policy: &'a str, key: &'a str) -> StoreKey<'a> {
        StoreKey { policy, key }
    }

    #[tokio::test(start_paused = true)]
    async fn an_actively_limited_key_outlives_a_flood_of_new_keys() {
        // One key per shard.
        let store = LocalStore::builder().max_keys(64).tokio_time(true).build();
        let login = Quota::new(10, Duration::from_secs(15 * 60)).burst(5);
        for _ in 0..5 {
            assert!(store.check_sync(key("victim"), &login, 1).allowed);
        }
        assert!(!store.check_sync(key("victim"), &login, 1).allowed);
        // An attacker with many addresses tries once from each.
        for i in 0..5000u32 {
            store.check_sync(key(&format!("flood{i}")), &login, 1);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let verdict = store.check_sync(key("victim"), &login, 1);
        assert!(
            !verdict.allowed,
            "the limited key was forgotten and got a fresh burst: {verdict:?}"
        );
        assert!(store.len() <= 64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_forgets_the_key_closest_to_rested() {
        // Two keys per shard; in every shard, a busy key and an old one.
        let store = LocalStore::builder().max_keys(128).tokio_time(true).build();
        let quota = Quota::per_minute(10); // one back every 6 s
        let shards: Vec<Vec<String>> = (0..SHARDS)
            .map(|s| keys_in_shard(&store, "p", s, 5))
            .collect();
        for keys in &shards {
            for _ in 0..9 {
                assert!(store.check_sync(at("p", &keys[0]), &quota, 1).allowed);
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for keys in &shards {
            assert!(store.check_sync(at("p", &keys[1]), &quota, 1).allowed);
        }
        assert_eq!(store.len(), 128);
        tokio::time::advance(Duration::from_secs(1)).await;
        // A newcomer with more debt than the old key replaces it.
        for keys in &shards {
            for _ in 0..2 {
                assert!(store.check_sync(at("p", &keys[2]), &quota, 1).allowed);
            }
        }
        assert_eq!(store.evictions(), 64);
        for (s, keys) in shards.iter().enumerate() {
            let busy = store.check_sync(at("p", &keys[0]), &quota, 1);
            assert_eq!(
                busy.remaining, 0,
                "shard {s}: the busy key is still counted"
            );
            let old = store.check_sync(at("p", &keys[1]), &quota, 1);
            assert_eq!(old.remaining, 9, "shard {s}: the old key was forgotten");
        }
        // The forgotten keys came back in place of the ones closest to
        // rested; the busy keys stay through another round.
        for keys in &shards {
            assert!(store.check_sync(at("p", &keys[3]), &quota, 1).allowed);
        }
        for (s, keys) in shards.iter().enumerate() {
            let busy = store.check_sync(at("p", &keys[0]), &quota, 1);
            assert!(!busy.allowed, "shard {s}: the busy key is limited");
        }
        assert!(store.len() <= 128);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_closest_to_rested_is_the_one_not_kept() {
        let store = LocalStore::builder().max_keys(64).tokio_time(true).build();
        let quota = Quota::per_minute(10);
        let keys = keys_in_shard(&store, "p", 7, 2);
        for _ in 0..5 {
            store.check_sync(at("p", &keys[0]), &quota, 1);
        }
        // The shard is full of a key deeper in debt than a newcomer would
        // be: the newcomer is admitted but not kept.
        let newcomer = store.check_sync(at("p", &keys[1]), &quota, 1);
        assert!(newcomer.allowed);
        assert_eq!(store.evictions(), 1);
        assert_eq!(store.check_sync(at("p", &keys[0]), &quota, 1).remaining, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_strict_quota_refuses_a_new_key_rather_than_evict_a_counting_one() {
        let store = LocalStore::builder().max_keys(128).tokio_time(true).build();
        let strict = Quota::new(10, Duration::from_secs(900))
            .burst(5)
            .when_full(WhenFull::Refuse);
        let general = Quota::per_minute(60);
        let login = keys_in_shard(&store, "login", 3, 2);
        let other = keys_in_shard(&store, "general", 3, 1);
        // The shard holds a login key being limited and a general key.
        for _ in 0..5 {
            assert!(store.check_sync(at("login", &login[0]), &strict, 1).allowed);
        }
        assert!(
            store
                .check_sync(at("general", &other[0]), &general, 1)
                .allowed
        );
        // A new login key: refused, with the time until the general key
        // has rested; nothing is forgotten.
        let refused = store.check_sync(at("login", &login[1]), &strict, 1);
        assert!(!refused.allowed, "{refused:?}");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(store.refusals(), 1);
        assert_eq!(store.evictions(), 0);
        assert_eq!(store.len(), 2);
        assert!(!store.check_sync(at("login", &login[0]), &strict, 1).allowed);
        assert_eq!(
            store
                .check_sync(at("general", &other[0]), &general, 1)
                .remaining,
            58,
            "the general key is still counted"
        );
        // Once a key has rested, the new login key takes its place.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(store.check_sync(at("login", &login[1]), &strict, 1).allowed);
        assert_eq!(store.refusals(), 1);
        assert!(!store.check_sync(at("login", &login[0]), &strict, 1).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn rested_keys_make_room_before_counting_ones_are_evicted() {
        let store = LocalStore::builder().max_keys(64).tokio_time(true).build();
        let quota = Quota::per_second(1000);
        // Each key is whole again a millisecond after its request.
        for i in 0..2000u32 {
            store.check_sync(key(&i.to_string()), &quota, 1);
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        assert_eq!(store.evictions(), 0, "only rested keys were dropped");
        assert!(store.len() <= 64);
        // Keys still counting are evicted only when nothing has rested.
        for i in 0..200u32 {
            store.check_sync(key(&format!("busy{i}")), &quota, 1);
        }
        assert!(store.evictions() > 0);
        assert!(store.len() <= 64);
    }
}
