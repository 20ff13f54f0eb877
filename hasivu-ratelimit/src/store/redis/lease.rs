//! Token leases: an instance takes a batch of units from Redis in one
//! script call and spends them locally, so most checks of a busy key cost
//! no round trip.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::{Quota, StoreKey, Verdict};

/// Token leases for a [`RedisStore`](crate::RedisStore): how many units an
/// instance takes from Redis at once, and how long it may keep them.
///
/// A batch is counted in Redis when it is taken, so the shared quota sees
/// leased units at once; units taken but never spent (the lease expired,
/// or the key went quiet) make that window stricter, never looser. The
/// price is that units taken in one window may be spent in the next: in
/// any window, the requests admitted by `n` instances can exceed the limit
/// by at most `n × (batch − 1)` (see the [store's
/// documentation](crate::RedisStore#token-leases)).
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::LeaseConfig;
///
/// // Ten units per round trip, unspent ones dropped after 500 ms.
/// let leases = LeaseConfig::new(10).ttl(Duration::from_millis(500));
/// assert_eq!(leases.batch(), 10);
///
/// // From configuration:
/// let parsed: LeaseConfig = serde_json::from_str(r#"{ "batch": 10, "ttl": "500ms" }"#).unwrap();
/// assert_eq!(parsed, leases);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    batch: u32,
    #[serde(
        default = "LeaseConfig::default_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    ttl: Duration,
    #[serde(default = "LeaseConfig::default_max_keys")]
    max_keys: usize,
}

impl LeaseConfig {
    /// Leases of `batch` units (at least 1; a batch is never larger than
    /// the quota's limit), kept for one second, for up to 10 000 keys.
    pub fn new(batch: u32) -> Self {
        Self {
            batch: batch.max(1),
            ttl: Self::default_ttl(),
            max_keys: Self::default_max_keys(),
        }
    }

    /// How long unspent units stay usable after they were taken (default
    /// 1 s). Shorter wastes more units on quiet keys; longer lets a lease
    /// outlive more of a window.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most keys holding a lease at once (default 10 000). Beyond it,
    /// expired leases are dropped first, then any (dropping a lease only
    /// loses its units).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The batch size.
    pub fn batch(&self) -> u32 {
        self.batch.max(1)
    }

    /// How long unspent units stay usable.
    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    fn default_ttl() -> Duration {
        Duration::from_secs(1)
    }

    fn default_max_keys() -> usize {
        10_000
    }
}

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<u64, Arc<Slot>>>;

/// The leases of one store: a slot per (policy, key).
pub(super) struct Leases {
    config: LeaseConfig,
    hasher: RandomState,
    per_shard: usize,
    shards: Box<[Shard]>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Leases {
    pub(super) fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            hasher: RandomState::new(),
            per_shard: config.max_keys.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub(super) fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The slot of `key`, made if needed.
    pub(super) fn slot(&self, key: StoreKey<'_>) -> Arc<Slot> {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key.policy.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(key.key.as_bytes());
        let hash = hasher.finish();
        let mut map = lock(&self.shards[(hash >> 60) as usize % SHARDS]);
        if let Some(slot) = map.get(&hash) {
            return Arc::clone(slot);
        }
        if map.len() >= self.per_shard {
            let now = Instant::now();
            // Slots in use by a check (strong count above 1) stay.
            map.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.is_live(now));
            if map.len() >= self.per_shard
                && let Some(victim) = map
                    .iter()
                    .find(|(_, slot)| Arc::strong_count(slot) == 1)
                    .map(|(hash, _)| *hash)
            {
                map.remove(&victim);
            }
        }
        Arc::clone(map.entry(hash).or_insert_with(|| Arc::new(Slot::default())))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the state valid, so a poisoned lock is usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One key's lease.
#[derive(Debug, Default)]
pub(super) struct Slot {
    state: Mutex<Held>,
    /// Serialises takes from Redis for this key, so an instance holds at
    /// most one batch's leftover at a time.
    pub(super) refill: tokio::sync::Mutex<()>,
    /// Takes for this key that failed (Redis slow or down), so the checks
    /// queued behind one apply the fail policy instead of waiting for a
    /// timeout each.
    failed_takes: AtomicU64,
}

/// Units held, and what Redis said when they were taken.
#[derive(Debug, Default)]
struct Held {
    tokens: u32,
    expires: Option<Instant>,
    /// The quota the units were taken for.
    quota: Option<(u32, Duration)>,
    /// Redis's remaining count and reset when the units were taken.
    remaining: u32,
    reset_at: Option<Instant>,
    /// Redis refused `cost` units until `until` for this quota: refuse as
    /// much or more locally until then.
    blocked: Option<Blocked>,
}

#[derive(Debug, Clone, Copy)]
struct Blocked {
    until: Instant,
    cost: u32,
    quota: (u32, Duration),
}

/// Units handed back by [`Slot::take_held`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Taken {
    pub(super) tokens: u32,
    expires: Option<Instant>,
}

fn quota_id(quota: &Quota) -> (u32, Duration) {
    (quota.limit(), quota.window())
}

impl Held {
    fn valid(&self, quota: &Quota, now: Instant) -> bool {
        self.expires.is_some_and(|e| e > now) && self.quota == Some(quota_id(quota))
    }
}

impl Slot {
    fn is_live(&self, now: Instant) -> bool {
        let held = lock(&self.state);
        (held.tokens > 0 && held.expires.is_some_and(|e| e > now))
            || held.blocked.is_some_and(|b| b.until > now)
    }

    /// How many takes for this key failed so far.
    pub(super) fn failed_takes(&self) -> u64 {
        self.failed_takes.load(Ordering::Acquire)
    }

    /// A take for this key failed.
    pub(super) fn take_failed(&self) {
        self.failed_takes.fetch_add(1, Ordering::Release);
    }

    /// Decides locally when it can: spends held units, or refuses while
    /// Redis said no for at least this cost. `None`: ask Redis.
    pub(super) fn spend(&self, quota: &Quota, cost: u32) -> Option<Verdict> {
        let now = Instant::now();
        let mut held = lock(&self.state);
        let reset_after = held
            .reset_at
            .map_or(Duration::ZERO, |r| r.saturating_duration_since(now));
        if let Some(blocked) = held.blocked {
            if blocked.until > now && cost >= blocked.cost && blocked.quota == quota_id(quota) {
                return Some(Verdict {
                    allowed: false,
                    limit: quota.limit(),
                    remaining: 0,
                    reset_after,
                    retry_after: Some(blocked.until - now),
                });
            }
            if blocked.until <= now {
                held.blocked = None;
            }
        }
        if held.valid(quota, now) && held.tokens >= cost {
            held.tokens -= cost;
            return Some(Verdict {
                allowed: true,
                limit: quota.limit(),
                remaining: held
                    .tokens
                    .saturating_add(held.remaining)
                    .min(quota.limit()),
                reset_after,
                retry_after: None,
            });
        }
        None
    }

    /// Takes the units held for `quota` out of the slot (dropping units
    /// held for another quota or expired), so that no other check spends
    /// them while a new batch is fetched.
    pub(super) fn take_held(&self, quota: &Quota) -> Taken {
        let now = Instant::now();
        let mut held = lock(&self.state);
        let tokens = if held.valid(quota, now) {
            held.tokens
        } else {
            0
        };
        held.tokens = 0;
        Taken {
            tokens,
            expires: held.expires,
        }
    }

    /// Redis granted a batch: `left` units stay after this request.
    pub(super) fn refill(
        &self,
        quota: &Quota,
        left: u32,
        ttl: Duration,
        remaining: u32,
        reset_after: Duration,
    ) {
        let now = Instant::now();
        let mut held = lock(&self.state);
        held.tokens = left;
        held.expires = Some(now + ttl);
        held.quota = Some(quota_id(quota));
        held.remaining = remaining;
        held.reset_at = Some(now + reset_after);
        held.blocked = None;
    }

    /// Redis refused (or failed): the units taken out go back, and a
    /// refusal is remembered until its retry time.
    pub(super) fn give_back(&self, quota: &Quota, taken: Taken, refused: Option<(u32, Duration)>) {
        let now = Instant::now();
        let mut held = lock(&self.state);
        if taken.tokens > 0 && taken.expires.is_some_and(|e| e > now) {
            held.tokens = held.tokens.saturating_add(taken.tokens);
            held.expires = taken.expires;
            held.quota = Some(quota_id(quota));
        }
        if let Some((cost, retry_after)) = refused {
            held.blocked = Some(Blocked {
                until: now + retry_after,
                cost,
                quota: quota_id(quota),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> StoreKey<'_> {
        StoreKey {
            policy: "p",
            key: k,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn held_units_are_spent_until_they_expire() {
        let leases = Leases::new(LeaseConfig::new(5));
        let quota = Quota::per_second(100);
        let slot = leases.slot(key("a"));
        assert!(slot.spend(&quota, 1).is_none(), "nothing held yet");
        slot.refill(
            &quota,
            4,
            Duration::from_secs(1),
            90,
            Duration::from_millis(800),
        );
        let first = slot.spend(&quota, 1).unwrap();
        assert!(first.allowed);
        assert_eq!(first.remaining, 93);
        assert!(slot.spend(&quota, 3).unwrap().allowed);
        assert!(slot.spend(&quota, 1).is_none(), "all four spent");

        slot.refill(&quota, 4, Duration::from_secs(1), 90, Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(slot.spend(&quota, 1).is_none(), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn units_taken_for_another_quota_are_not_spent() {
        let leases = Leases::new(LeaseConfig::new(5));
        let slot = leases.slot(key("a"));
        slot.refill(
            &Quota::per_second(100),
            4,
            Duration::from_secs(1),
            0,
            Duration::ZERO,
        );
        assert!(slot.spend(&Quota::per_second(50), 1).is_none());
        assert_eq!(slot.take_held(&Quota::per_second(50)).tokens, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_remembered_until_its_retry_time() {
        let leases = Leases::new(LeaseConfig::new(5));
        let quota = Quota::per_second(10);
        let slot = leases.slot(key("a"));
        let taken = slot.take_held(&quota);
        slot.give_back(&quota, taken, Some((2, Duration::from_millis(300))));
        let refused = slot.spend(&quota, 2).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(300)));
        assert!(slot.spend(&quota, 1).is_none(), "a smaller cost may pass");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(slot.spend(&quota, 2).is_none(), "ask Redis again");
    }

    #[tokio::test(start_paused = true)]
    async fn units_taken_out_go_back_after_a_refusal() {
        let leases = Leases::new(LeaseConfig::new(5));
        let quota = Quota::per_second(10);
        let slot = leases.slot(key("a"));
        slot.refill(&quota, 2, Duration::from_secs(1), 0, Duration::ZERO);
        let taken = slot.take_held(&quota);
        assert_eq!(taken.tokens, 2);
        assert!(slot.spend(&quota, 1).is_none(), "taken out");
        slot.give_back(&quota, taken, None);
        assert!(slot.spend(&quota, 2).unwrap().allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_count_is_bounded() {
        let leases = Leases::new(LeaseConfig::new(5).max_keys(32));
        let quota = Quota::per_second(10);
        for i in 0..1000 {
            let slot = leases.slot(key(&i.to_string()));
            slot.refill(&quota, 3, Duration::from_millis(10), 0, Duration::ZERO);
        }
        assert!(leases.len() <= 32, "{}", leases.len());
        // Expired leases make room first.
        tokio::time::advance(Duration::from_millis(10)).await;
        let kept = leases.slot(key("kept"));
        kept.refill(&quota, 3, Duration::from_secs(10), 0, Duration::ZERO);
        drop(kept);
        for i in 0..40 {
            leases.slot(key(&format!("new{i}")));
        }
        assert!(leases.len() <= 32);
    }

    #[test]
    fn configuration() {
        let config: LeaseConfig = serde_json::from_str(r#"{ "batch": 20 }"#).unwrap();
        assert_eq!(config, LeaseConfig::new(20));
        assert_eq!(config.lease_ttl(), Duration::from_secs(1));
        assert_eq!(LeaseConfig::new(0).batch(), 1);
        assert!(serde_json::from_str::<LeaseConfig>(r#"{ "batch": 2, "size": 3 }"#).is_err());
    }
}
