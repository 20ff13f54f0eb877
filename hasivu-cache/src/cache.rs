//! The cache handle and its get-or-load engine.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{sync::oneshot, time::Instant};

use crate::{
    BoxError, CacheStats, Codec, CodecError, EntryOptions, Error, InvalidationRules, JsonCodec,
    generations::{Generations, Token},
    invalidation::Pending,
    message::Op,
    stats::Stats,
};

/// A value in L1, type-erased; `get::<T>` downcasts it.
type Value = Arc<dyn Any + Send + Sync>;
/// A load in progress, shared by every caller of the same key: the value
/// and whether it came from L2 or from the loader.
type Flight = Shared<BoxFuture<'static, Result<(Value, Source), Error>>>;

/// What a flight's task sends its callers.
type Outcome = Result<(Value, Source), Error>;

/// Where a flight found its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    L2,
    Loader,
}

/// Bytes counted for an L1 entry beyond its key and encoded value.
const SLOT_OVERHEAD: usize = 96;

/// What a value about to be produced (loaded, fetched) must be stored
/// with: the generations when production started, so that a write or an
/// invalidation meanwhile keeps it out of the cache, and the time, so that
/// a load too long to check against Redis is not written there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadToken {
    generations: Token,
    started: Instant,
}

impl LoadToken {
    /// The stamp its L2 entry is written with.
    pub(crate) fn stamp(self) -> u64 {
        self.generations.stamp()
    }
}

/// An L1 entry: the decoded value and its logical times. Times are tokio
/// instants, so tests control them; moka evicts the slot once its stale
/// window is over.
pub(crate) struct Slot {
    value: Value,
    weight: u32,
    fresh_until: Instant,
    stale_until: Instant,
    refresh_at: Option<Instant>,
    /// Whether a hit must read the clock: with a stale window or an eager
    /// refresh, or when the cache follows tokio's clock. Otherwise moka's
    /// own expiry (at `fresh_until`) already keeps out expired slots.
    check_clock: bool,
    /// The local prefix-invalidation count the value was produced under
    /// (moved forward by checks): an invalidation of a covering prefix
    /// since makes it a miss, without walking L1 (see
    /// [`Generations::current`]).
    born: AtomicU64,
    /// After a failed load, the stale value counts as fresh until this
    /// many nanoseconds after `fresh_until` (0: not throttled). Set on the
    /// slot itself, so a value written meanwhile is never replaced.
    throttled: AtomicU64,
}

impl Slot {
    fn physical_ttl(&self) -> Duration {
        self.stale_until.saturating_duration_since(Instant::now())
    }

    /// Whether the failing loader is not to be called again yet.
    fn throttled_at(&self, now: Instant) -> bool {
        match self.throttled.load(Ordering::Relaxed) {
            0 => false,
            nanos => self.fresh_until + Duration::from_nanos(nanos) > now,
        }
    }

    fn throttle_until(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.fresh_until).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.throttled.store(nanos, Ordering::Relaxed);
    }
}

struct SlotExpiry;

impl moka::Expiry<Arc<str>, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        slot: &Arc<Slot>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(slot.physical_ttl())
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        slot: &Arc<Slot>,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.physical_ttl())
    }
}

/// What L1 holds for a key.
enum Lookup<T> {
    Fresh { value: T, refresh_due: bool },
    Stale(Arc<Slot>),
    Miss,
}

/// How values of type `T` become L2 bytes: through the cache's codec, or
/// in a format of their own (the HTTP layer's stored responses).
pub(crate) trait Encoding<C, T>: Copy + Send + Sync + 'static {
    fn encode(self, codec: &C, value: &T) -> Result<Vec<u8>, CodecError>;
    fn decode(self, codec: &C, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Through the cache's codec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ViaCodec;

impl<C: Codec, T: Serialize + DeserializeOwned> Encoding<C, T> for ViaCodec {
    fn encode(self, codec: &C, value: &T) -> Result<Vec<u8>, CodecError> {
        codec.encode(value)
    }

    fn decode(self, codec: &C, bytes: &[u8]) -> Result<T, CodecError> {
        codec.decode(bytes)
    }
}

/// Where [`Cache::lookup_with`] found a value.
#[derive(Debug)]
#[cfg_attr(not(feature = "http"), allow(dead_code))] // the HTTP layer's
pub(crate) enum Found<T> {
    /// Fresh in L1.
    L1(T),
    /// In L2 (now also in L1).
    L2(T),
    /// Only a stale value, within its fail-safe window.
    Stale(T),
    /// Nothing.
    Miss,
}

/// A multi-layer cache handle: cheap to clone, shared by all clones.
///
/// ```
/// use std::time::Duration;
/// use hasivu_cache::{Cache, EntryOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_cache::Error> {
/// let cache = Cache::builder().max_l1_bytes(16 * 1024 * 1024).build()?;
/// let options = EntryOptions::new(Duration::from_secs(300)).fail_safe(Duration::from_secs(3600));
///
/// let menu: Vec<String> = cache
///     .get_or_load("menu:daily:current", &options, || async {
///         // The database query; run once however many callers arrive together.
///         Ok::<_, std::io::Error>(vec!["ragi mudde".to_owned(), "sambar".to_owned()])
///     })
///     .await?;
/// assert_eq!(menu.len(), 2);
/// assert_eq!(cache.get::<Vec<String>>("menu:daily:current").await?, Some(menu));
/// # Ok(())
/// # }
/// ```
pub struct Cache<C = JsonCodec> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("l1_entries", &self.inner.l1.entry_count())
            .field("stats", &self.inner.stats.snapshot())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner<C> {
    pub(crate) name: String,
    tokio_time: bool,
    pub(crate) l1: moka::future::Cache<Arc<str>, Arc<Slot>>,
    #[cfg(feature = "redis")]
    pub(crate) l2: Option<crate::l2::RedisL2>,
    #[cfg(feature = "redis")]
    lock: Option<(crate::lock::DistributedLock, Duration)>,
    /// Redis failures are returned to callers instead of absorbed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) strict: bool,
    codec: C,
    /// The loads in progress, each with the number its task removes it by.
    flights: Mutex<HashMap<Arc<str>, (u64, Flight)>>,
    next_flight: AtomicU64,
    pub(crate) stats: Stats,
    warmers: Mutex<Vec<Warmer<C>>>,
    pub(crate) rules: InvalidationRules,
    pub(crate) generations: Generations,
    /// This instance's id in backplane messages.
    pub(crate) origin: u64,
    /// Invalidations and writes that could not reach Redis, replayed on
    /// reconnect.
    pub(crate) pending: Mutex<Pending>,
    /// Whether L2 entries can be trusted (the backplane is in sync).
    #[cfg(feature = "redis")]
    pub(crate) sync: Option<Arc<crate::backplane::SyncState>>,
    /// The backplane's subscriber, stopped with the cache.
    #[cfg(feature = "redis")]
    backplane: Mutex<Option<crate::backplane::TaskGuard>>,
    /// L1 entries looked at by invalidations: tests check that applying one
    /// does not cost a walk of L1.
    #[cfg(test)]
    pub(crate) l1_visits: std::sync::atomic::AtomicUsize,
}

/// Builds a [`Cache`].
#[derive(Debug)]
#[must_use]
pub struct CacheBuilder<C = JsonCodec> {
    name: String,
    max_l1_bytes: u64,
    tokio_time: bool,
    codec: C,
    redis: RedisSettings,
    rules: InvalidationRules,
}

/// L2 settings, kept whatever the features so the builder stays one type.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct RedisSettings {
    url: Option<String>,
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    cluster: Vec<String>,
    prefix: String,
    timeout: Duration,
    breaker_threshold: u32,
    breaker_open_for: Duration,
    lock_ttl: Option<Duration>,
    strict: bool,
    /// The backplane's heartbeat: `PING` interval and silence bound.
    heartbeat: Option<(Duration, Duration)>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            max_l1_bytes: 64 * 1024 * 1024,
            tokio_time: false,
            codec: JsonCodec,
            rules: InvalidationRules::new(),
            redis: RedisSettings {
                url: None,
                cluster: Vec::new(),
                prefix: String::new(),
                timeout: Duration::from_millis(250),
                breaker_threshold: 5,
                breaker_open_for: Duration::from_secs(5),
                lock_ttl: None,
                strict: false,
                heartbeat: None,
            },
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// The cache's name, used as the `cache` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Bounds L1 by the bytes of its entries (encoded value, key and about
    /// 96 bytes of bookkeeping each); default 64 MiB. moka evicts by
    /// TinyLFU when full.
    pub fn max_l1_bytes(mut self, bytes: u64) -> Self {
        self.max_l1_bytes = bytes;
        self
    }

    /// Checks freshness against tokio's clock on every L1 hit, so tests that
    /// pause and advance time (`tokio::time::pause`) see entries expire.
    ///
    /// Off by default: an entry without fail-safe or eager refresh is then
    /// fresh exactly as long as moka keeps it (moka expires it on the
    /// system's monotonic clock, which is tokio's outside paused tests), and
    /// its hits read no clock at all.
    pub fn tokio_time(mut self, enabled: bool) -> Self {
        self.tokio_time = enabled;
        self
    }

    /// Replaces the codec (default [`JsonCodec`]).
    pub fn codec<C2: Codec>(self, codec: C2) -> CacheBuilder<C2> {
        CacheBuilder {
            name: self.name,
            max_l1_bytes: self.max_l1_bytes,
            tokio_time: self.tokio_time,
            codec,
            redis: self.redis,
            rules: self.rules,
        }
    }

    /// The invalidation rules (default none); see [`InvalidationRules`].
    pub fn rules(mut self, rules: InvalidationRules) -> Self {
        self.rules = rules;
        self
    }

    /// Adds Redis as L2 (`redis://host:port/db`). The connection is made
    /// lazily and remade in the background: building succeeds while Redis
    /// is down, and the cache runs on L1 and the loader until it is back.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis.url = Some(url.into());
        self
    }

    /// Adds a Redis Cluster as L2, reached through any of `urls`. Every
    /// command touches one key, so no call is cross-slot; the distributed
    /// lock's key (`lock:` + key) lands wherever its hash puts it.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn redis_cluster<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redis.cluster = urls.into_iter().map(Into::into).collect();
        self
    }

    /// A prefix for every Redis key (default none, so keys are the report's
    /// names, `menu:daily:current`, shared with other services).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis.prefix = prefix.into();
        self
    }

    /// The timeout of each Redis call (default 250 ms).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.redis.timeout = timeout;
        self
    }

    /// The circuit breaker in front of Redis: after `failures` consecutive
    /// failed calls, Redis is not called for `open_for`; then one probe
    /// call decides (default 5 failures, 5 s).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.redis.breaker_threshold = failures;
        self.redis.breaker_open_for = open_for;
        self
    }

    /// Loads each key once across all instances: before calling the loader,
    /// an instance takes a Redis lock (`SET NX PX ttl`), renews it every
    /// third of `ttl` while the loader runs (a load longer than `ttl` keeps
    /// it), and releases it (a Lua compare-and-delete) when the load ends,
    /// fails, panics or is dropped. The others look for the value in L2
    /// and retry the lock every 20 ms: they go on as soon as the holder is
    /// done, whatever its outcome. `ttl` bounds how long a holder that
    /// vanished without releasing (a crash, a runtime shut down with the
    /// cache's) keeps the others waiting; a loader that never returns keeps
    /// them waiting as long, so give loaders their own timeout. Off by
    /// default.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn distributed_lock(mut self, ttl: Duration) -> Self {
        self.redis.lock_ttl = Some(ttl);
        self
    }

    /// Strict mode: Redis failures in `get`, `set`, `remove` and the L2
    /// lookup of `get_or_load` are returned as [`Error::L2`] instead of
    /// being treated as misses. A value the loader produced is still
    /// returned when only its L2 write failed. Off by default.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn strict(mut self, strict: bool) -> Self {
        self.redis.strict = strict;
        self
    }

    /// How the backplane's subscriber checks that its connection still
    /// delivers: a `PING` over it every `every` (default 1 s); when nothing
    /// has come back for `down_after` (default 3 s), the connection is
    /// taken for dead, L2 is not read, and the instance reconnects,
    /// subscribes and resyncs. A silent subscriber (a half-open connection)
    /// is so detected within `down_after`. `every` is at least 10 ms and
    /// `down_after` at least twice `every`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn backplane_heartbeat(mut self, every: Duration, down_after: Duration) -> Self {
        self.redis.heartbeat = Some((every, down_after));
        self
    }

    /// Builds the cache. Metric handles are resolved here: install the
    /// `metrics` recorder before building caches.
    ///
    /// # Errors
    ///
    /// [`Error::L2`] when a Redis URL is invalid or, with Redis configured,
    /// when called outside a Tokio runtime.
    pub fn build(self) -> Result<Cache<C>, Error> {
        #[cfg(feature = "redis")]
        let (l2, lock) = {
            let breaker = || {
                crate::breaker::Breaker::new(
                    self.redis.breaker_threshold,
                    self.redis.breaker_open_for,
                )
            };
            let prefix = self.redis.prefix.clone();
            let timeout = self.redis.timeout;
            let l2 = match &self.redis.url {
                Some(url) => Some(
                    crate::l2::RedisL2::new(url, prefix, timeout, breaker()).map_err(Error::L2)?,
                ),
                #[cfg(feature = "cluster")]
                None if !self.redis.cluster.is_empty() => Some(
                    crate::l2::RedisL2::new_cluster(
                        &self.redis.cluster,
                        prefix,
                        timeout,
                        breaker(),
                    )
                    .map_err(Error::L2)?,
                ),
                None => None,
            };
            let lock = match (&l2, self.redis.lock_ttl) {
                (Some(l2), Some(ttl)) => Some((crate::lock::DistributedLock::new(l2.clone()), ttl)),
                _ => None,
            };
            (l2, lock)
        };
        let l1 = moka::future::Cache::builder()
            .max_capacity(self.max_l1_bytes)
            .weigher(|key: &Arc<str>, slot: &Arc<Slot>| {
                u32::try_from(key.len() + SLOT_OVERHEAD)
                    .unwrap_or(u32::MAX)
                    .saturating_add(slot.weight)
            })
            .expire_after(SlotExpiry)
            .build();
        #[cfg(feature = "redis")]
        let endpoint = match &self.redis.url {
            Some(url) => Some(crate::backplane::Endpoint::Single(url.clone())),
            #[cfg(feature = "cluster")]
            None if !self.redis.cluster.is_empty() => Some(crate::backplane::Endpoint::Cluster(
                self.redis.cluster.clone(),
            )),
            None => None,
        };
        let cache = Cache {
            inner: Arc::new(Inner {
                stats: Stats::new(&self.name),
                name: self.name,
                tokio_time: self.tokio_time,
                l1,
                #[cfg(feature = "redis")]
                l2,
                #[cfg(feature = "redis")]
                lock,
                strict: self.redis.strict,
                codec: self.codec,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                warmers: Mutex::new(Vec::new()),
                rules: self.rules,
                generations: Generations::new(),
                origin: fastrand::u64(1..),
                pending: Mutex::new(Pending::default()),
                #[cfg(feature = "redis")]
                sync: endpoint
                    .as_ref()
                    .map(|_| Arc::new(crate::backplane::SyncState::default())),
                #[cfg(feature = "redis")]
                backplane: Mutex::new(None),
                #[cfg(test)]
                l1_visits: std::sync::atomic::AtomicUsize::new(0),
            }),
        };
        #[cfg(feature = "redis")]
        if let (Some(endpoint), Some(sync)) = (&endpoint, &cache.inner.sync) {
            let target: std::sync::Weak<dyn crate::backplane::Target> =
                Arc::downgrade(&cache.inner) as _;
            let task = crate::backplane::spawn(
                endpoint,
                &self.redis.prefix,
                self.redis.timeout,
                self.redis
                    .heartbeat
                    .map_or_else(Default::default, |(every, down_after)| {
                        crate::backplane::Heartbeat::new(every, down_after)
                    }),
                Arc::clone(sync),
                target,
            )
            .map_err(Error::L2)?;
            *cache.inner.backplane.lock().expect("backplane lock") = Some(task);
        }
        Ok(cache)
    }
}

impl Cache {
    /// A builder with the defaults: JSON codec, 64 MiB L1.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }
}

impl<C: Codec> Cache<C> {
    /// The fresh value of `key`, from L1 or else L2 (then kept in L1 for
    /// the default L1 TTL, capped by what is left of its L2 life).
    ///
    /// # Errors
    ///
    /// In strict mode, [`Error::L2`] when Redis fails; otherwise Redis
    /// failures count as misses.
    pub async fn get<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if let Lookup::Fresh { value, .. } = self.l1_lookup::<T>(key).await {
            self.inner.stats.l1_hit();
            return Ok(Some(value));
        }
        if let Some(value) = self
            .inner
            .l2_lookup::<T, _>(key, &EntryOptions::default(), ViaCodec)
            .await?
        {
            self.inner.stats.l2_hit();
            return Ok(Some((*value).clone()));
        }
        self.inner.stats.miss();
        Ok(None)
    }

    /// Stores `value` under `key`, here and in L2, and tells the other
    /// instances to drop their copy. A load of `key` that started before
    /// does not store what it read, here or in L2, on any instance.
    ///
    /// With [`EntryOptions::skip_l2`], the value stays out of L2, and the
    /// value L2 held before is deleted: the other instances load the key
    /// again instead of reading an older value.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when the value cannot be encoded; in strict mode,
    /// [`Error::L2`] when Redis fails (the value holds here, and the write
    /// is replayed to Redis and the other instances when it is back).
    pub async fn set<T>(&self, key: &str, value: T, options: &EntryOptions) -> Result<(), Error>
    where
        T: Serialize + Send + Sync + 'static,
    {
        let bytes = self.inner.codec.encode(&value).map_err(Error::Codec)?;
        let l2_value = (!options.skip_l2).then(|| (&bytes[..], options.jittered(options.l2_ttl)));
        let (written, alone) = self.inner.write(Op::Set, key, l2_value).await;
        if alone {
            // Taken once Redis has the value: a lookup that read the old
            // value from L2 before cannot bring it back over this one.
            let token = self.inner.load_token();
            self.inner
                .store(key, Arc::new(value), bytes.len(), options, None, token)
                .await;
        } else {
            // Another write of the key met this one: L2 has the last.
            self.inner.l1.invalidate(key).await;
        }
        written
    }

    /// Removes `key` from L1 and L2, here and on the other instances. A
    /// load of `key` that started before does not store what it read.
    ///
    /// # Errors
    ///
    /// In strict mode, [`Error::L2`] when Redis fails (the removal holds
    /// here and is replayed when Redis is back).
    pub async fn remove(&self, key: &str) -> Result<(), Error> {
        let (removed, _) = self.inner.write(Op::Remove, key, None).await;
        // Again once Redis has it: an L2 lookup may have brought the old
        // value back meanwhile.
        self.inner.l1.invalidate(key).await;
        removed
    }

    /// The state of the circuit breaker in front of Redis (`None` without
    /// L2).
    pub fn l2_breaker(&self) -> Option<crate::BreakerState> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.inner.l2 {
            return Some(l2.breaker_state());
        }
        None
    }

    /// The value of `key`, loaded by `loader` when there is no fresh one.
    ///
    /// Concurrent calls for one key share one loader call. The loader runs
    /// in its own task, so it finishes (and updates the cache) even when the
    /// callers stop waiting: after the soft timeout (when a stale value can
    /// be served), after the hard timeout, or when they are cancelled.
    ///
    /// # Errors
    ///
    /// [`Error::Loader`] when the loader failed and no stale value within
    /// the fail-safe duration exists; [`Error::Timeout`] when the hard
    /// timeout passed without one.
    pub async fn get_or_load<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let stale = match self.l1_lookup::<T>(key).await {
            Lookup::Fresh { value, refresh_due } => {
                self.inner.stats.l1_hit();
                if refresh_due {
                    // Started and left to run: the next callers find it
                    // fresh, this one does not wait.
                    drop(self.flight(key, options, loader, Start::Refresh));
                }
                return Ok(value);
            }
            Lookup::Stale(slot) => Some(slot),
            Lookup::Miss => None,
        };
        let flight = self.flight(key, options, loader, Start::Lookup);
        let wait = match (options.soft_timeout, &stale) {
            (Some(soft), Some(_)) => Some(soft),
            _ => options.hard_timeout,
        };
        let outcome = match wait {
            Some(limit) => tokio::time::timeout(limit, flight).await.map_err(|_| limit),
            None => Ok(flight.await),
        };
        let serve_stale = |error: Error| match stale.as_ref().and_then(|s| typed::<T>(&s.value)) {
            Some(value) => {
                self.inner.stats.stale();
                Ok(value)
            }
            None => Err(error),
        };
        match &outcome {
            Ok(Ok((_, Source::L2))) => self.inner.stats.l2_hit(),
            _ => self.inner.stats.miss(),
        }
        match outcome {
            Ok(Ok((value, _))) => typed::<T>(&value).ok_or_else(|| type_mismatch::<T>(key)),
            Ok(Err(error)) => serve_stale(error),
            Err(waited) => serve_stale(Error::Timeout(waited)),
        }
    }

    /// A snapshot of the counters and the L2 breaker's state.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.inner.stats.snapshot();
        stats.l2_breaker = self.l2_breaker();
        #[cfg(feature = "redis")]
        {
            stats.backplane_synced = self.inner.sync.as_ref().map(|s| s.is_synced());
        }
        stats
    }

    /// Where the value of `key` is: fresh in L1, in L2 (then kept in L1),
    /// stale in L1 within its fail-safe window, or nowhere. For callers
    /// that produce values themselves (the HTTP layer): take a
    /// [`load_token`](Self::load_token) before producing, and give it to
    /// [`store_with`](Self::store_with).
    ///
    /// # Errors
    ///
    /// In strict mode, [`Error::L2`] when Redis fails.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // the HTTP layer's
    pub(crate) async fn lookup_with<T, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        encoding: E,
    ) -> Result<Found<T>, Error>
    where
        T: Clone + Send + Sync + 'static,
        E: Encoding<C, T>,
    {
        let stale = match self.l1_lookup::<T>(key).await {
            Lookup::Fresh { value, .. } => {
                self.inner.stats.l1_hit();
                return Ok(Found::L1(value));
            }
            Lookup::Stale(slot) => typed::<T>(&slot.value),
            Lookup::Miss => None,
        };
        if let Some(value) = self.inner.l2_lookup::<T, E>(key, options, encoding).await? {
            self.inner.stats.l2_hit();
            return Ok(Found::L2((*value).clone()));
        }
        match stale {
            Some(value) => {
                self.inner.stats.stale();
                Ok(Found::Stale(value))
            }
            None => {
                self.inner.stats.miss();
                Ok(Found::Miss)
            }
        }
    }

    /// What a value about to be produced must be stored with, so that an
    /// invalidation or a write while it is produced keeps it out of the
    /// cache.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // the HTTP layer's
    pub(crate) fn load_token(&self) -> LoadToken {
        self.inner.load_token()
    }

    /// Stores a value produced since `token` was taken in L2 and L1,
    /// unless an invalidation or a write of `key` came in between (here,
    /// or in Redis from another instance). Not announced on the backplane:
    /// a produced value is a read, not a change.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when the value cannot be encoded; in strict mode,
    /// [`Error::L2`] when Redis fails.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // the HTTP layer's
    pub(crate) async fn store_with<T, E>(
        &self,
        key: &str,
        value: T,
        options: &EntryOptions,
        encoding: E,
        token: LoadToken,
    ) -> Result<(), Error>
    where
        T: Send + Sync + 'static,
        E: Encoding<C, T>,
    {
        let bytes = encoding
            .encode(&self.inner.codec, &value)
            .map_err(Error::Codec)?;
        self.inner
            .keep_loaded(key, Arc::new(value), Some(&bytes), options, token)
            .await
    }

    async fn l1_lookup<T: Clone + 'static>(&self, key: &str) -> Lookup<T> {
        let Some(slot) = self.inner.l1.get(key).await else {
            return Lookup::Miss;
        };
        // One atomic load unless a prefix was invalidated since the slot
        // last looked: what makes a prefix invalidation O(1) in L1. An
        // invalidated slot is not even stale (no fail-safe after a write).
        if !self.inner.generations.current(key, &slot.born) {
            return Lookup::Miss;
        }
        if !slot.check_clock {
            // moka returned it, so its TTL has not run out.
            return match typed::<T>(&slot.value) {
                Some(value) => Lookup::Fresh {
                    value,
                    refresh_due: false,
                },
                None => Lookup::Miss,
            };
        }
        let now = Instant::now();
        if slot.fresh_until > now {
            match typed::<T>(&slot.value) {
                Some(value) => Lookup::Fresh {
                    value,
                    refresh_due: slot.refresh_at.is_some_and(|at| now >= at),
                },
                // Another type under this key: a miss for this caller.
                None => Lookup::Miss,
            }
        } else if slot.throttled_at(now) {
            // A failed load recently: the stale value counts as fresh.
            match typed::<T>(&slot.value) {
                Some(value) => Lookup::Fresh {
                    value,
                    refresh_due: false,
                },
                None => Lookup::Miss,
            }
        } else if slot.stale_until > now {
            Lookup::Stale(slot)
        } else {
            Lookup::Miss
        }
    }

    /// Joins the load of `key` in progress, or starts one.
    fn flight<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
        start: Start,
    ) -> Flight
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (flight, guard, done) = {
            let mut flights = self.inner.flights.lock().expect("flights lock");
            if let Some((_, flight)) = flights.get(key) {
                return flight.clone();
            }
            let key: Arc<str> = Arc::from(key);
            let (done, outcome) = oneshot::channel::<Outcome>();
            // Without an answer, the task went away (its runtime shut down,
            // it was aborted, it was dropped before it ever ran): its guard
            // has removed the flight, so the next caller starts another.
            let flight = async move { outcome.await.unwrap_or_else(|_| Err(abandoned())) }
                .boxed()
                .shared();
            let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
            flights.insert(Arc::clone(&key), (id, flight.clone()));
            // Made before the task exists, so the flight is removed however
            // the task ends.
            let guard = FlightGuard {
                inner: Arc::clone(&self.inner),
                key,
                id,
            };
            (flight, guard, done)
        };
        let inner = Arc::clone(&self.inner);
        let options = options.clone();
        // Outside the flights lock: a runtime shutting down drops the task
        // (and the guard, which takes the lock) inside `spawn`.
        drop(tokio::spawn(async move {
            let outcome = inner
                .run_flight::<T, _, _, _>(&guard.key, &options, loader, start)
                .await;
            // Removed before the callers hear, so a caller that comes back
            // at once starts a new load instead of rejoining this one.
            drop(guard);
            let _ = done.send(outcome);
        }));
        flight
    }
}

fn abandoned() -> Error {
    Error::Loader(Arc::new("the load was abandoned before it finished".into()))
}

/// How a flight starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// A miss: L2 first, then the lock and the loader.
    Lookup,
    /// An eager refresh of a value still fresh here: the loader (L2 holds
    /// what is being refreshed).
    Refresh,
}

/// Removes its flight from the map when dropped, if the flight is still
/// its own.
struct FlightGuard<C> {
    inner: Arc<Inner<C>>,
    key: Arc<str>,
    id: u64,
}

impl<C> Drop for FlightGuard<C> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.inner.flights.lock()
            && flights.get(&self.key).is_some_and(|(id, _)| *id == self.id)
        {
            flights.remove(&self.key);
        }
    }
}

impl<C: Codec> Inner<C> {
    /// What a value about to be produced must be stored with.
    pub(crate) fn load_token(&self) -> LoadToken {
        LoadToken {
            generations: self.generations.token(),
            started: Instant::now(),
        }
    }

    /// The body of a flight's task.
    async fn run_flight<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
        start: Start,
    ) -> Outcome
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        // L2 first: one lookup for all the callers of this flight. A refresh
        // skips it: L2 holds the value being refreshed.
        if start == Start::Lookup
            && let Some(value) = self.l2_lookup::<T, _>(key, options, ViaCodec).await?
        {
            return Ok((value as Value, Source::L2));
        }
        let lock = match self.lock_or_wait::<T>(key, options, start).await {
            LockOutcome::Loaded(value) => return Ok((value as Value, Source::L2)),
            LockOutcome::Load(lock) => lock,
        };
        // Taken when the loader starts (after the L2 lookup, which waits
        // for the backplane's first sync): a write or an invalidation from
        // now on keeps this value out of L1, and out of (or invalid in) L2.
        let token = self.load_token();
        self.stats.load();
        // Converted at once: the loader's error type need not be `Send`. A
        // panicking loader is a failed load, not a dead task.
        let load = async move {
            let load = AssertUnwindSafe(async move { loader().await.map_err(Into::into) });
            match load.catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Err(panicked(&*panic)),
            }
        };
        let result = keep_lock(lock.as_ref(), load).await;
        self.stats.load_duration(token.started.elapsed());
        let outcome = match result {
            Ok(value) => {
                let bytes = self.codec.encode(&value).ok();
                let value = Arc::new(value);
                // The value is good even if the cache could not keep it.
                let _ = self
                    .keep_loaded(
                        key,
                        Arc::clone(&value) as Value,
                        bytes.as_deref(),
                        options,
                        token,
                    )
                    .await;
                Ok((value as Value, Source::Loader))
            }
            Err(error) => {
                self.stats.load_error();
                self.throttle_stale(key, options).await;
                Err(Error::Loader(Arc::new(error)))
            }
        };
        self.unlock(lock).await;
        outcome
    }

    /// Keeps a value produced under `token` in L2 (if `bytes`) and then in
    /// L1, unless a write or an invalidation overtook it: one applied here
    /// since, or one that reached Redis since (the L2 write refuses, and
    /// then L1 does not keep it either).
    pub(crate) async fn keep_loaded(
        &self,
        key: &str,
        value: Value,
        bytes: Option<&[u8]>,
        options: &EntryOptions,
        token: LoadToken,
    ) -> Result<(), Error> {
        if !self.generations.unchanged_since(key, token.generations) {
            return Ok(());
        }
        let weight = bytes.map_or(0, <[u8]>::len);
        if let Some(bytes) = bytes {
            match self.l2_store(key, bytes, options, token).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(error) => {
                    // Strict mode: L1 still keeps it, the caller hears.
                    self.store(key, value, weight, options, None, token).await;
                    return Err(error);
                }
            }
        }
        self.store(key, value, weight, options, None, token).await;
        Ok(())
    }

    /// Keeps a value in L1; `cap` bounds its TTL (what is left of its L2
    /// life when it came from L2).
    async fn store(
        &self,
        key: &str,
        value: Value,
        weight: usize,
        options: &EntryOptions,
        cap: Option<Duration>,
        token: LoadToken,
    ) {
        if options.skip_l1 || !self.generations.unchanged_since(key, token.generations) {
            return;
        }
        let now = Instant::now();
        let mut ttl = options.jittered(options.l1_ttl);
        if let Some(cap) = cap {
            ttl = ttl.min(cap);
        }
        let fresh_until = now + ttl;
        let slot = Slot {
            value,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            fresh_until,
            stale_until: fresh_until + options.fail_safe.unwrap_or(Duration::ZERO),
            refresh_at: options.eager_refresh.map(|share| now + ttl.mul_f64(share)),
            check_clock: self.tokio_time
                || options.fail_safe.is_some()
                || options.eager_refresh.is_some(),
            born: AtomicU64::new(token.generations.born()),
            throttled: AtomicU64::new(0),
        };
        self.l1.insert(Arc::from(key), Arc::new(slot)).await;
        // A write of the key that swept L1 between the check and the insert
        // missed this entry: take it out again. (A prefix invalidation needs
        // no second look: the slot's `born` already makes it a miss.)
        if !self.generations.unchanged_since(key, token.generations) {
            self.l1.invalidate(key).await;
        }
    }

    /// Reads `key` from L2 and keeps it in L1. Values that do not decode as
    /// `T`, or were written before an invalidation of a prefix covering
    /// `key`, are misses; Redis failures too, except in strict mode. While
    /// the backplane is out of sync, or while a write of `key` here waits
    /// to be replayed to Redis, L2 is not read.
    pub(crate) async fn l2_lookup<T, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        encoding: E,
    ) -> Result<Option<Arc<T>>, Error>
    where
        T: Send + Sync + 'static,
        E: Encoding<C, T>,
    {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2
            && !options.skip_l2
        {
            if !self.l2_trusted().await {
                if self.strict {
                    return Err(Error::L2("backplane not in sync".into()));
                }
                return Ok(None);
            }
            if self.queued(key) {
                // Redis still holds what this instance wrote over.
                return Ok(None);
            }
            // Taken after the wait: a resync flush before it does not
            // concern a value read after it.
            let token = self.load_token();
            match l2.get(key).await {
                Ok(Some(entry)) if self.generations.valid(key, entry.stamp) => {
                    if let Ok(value) = encoding.decode(&self.codec, &entry.value) {
                        let value = Arc::new(value);
                        self.store(
                            key,
                            Arc::clone(&value) as Value,
                            entry.value.len(),
                            options,
                            entry.ttl,
                            token,
                        )
                        .await;
                        return Ok(Some(value));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    self.stats.l2_error();
                    if self.strict {
                        return Err(Error::L2(error.into()));
                    }
                }
            }
        }
        let _ = (key, options, encoding);
        Ok(None)
    }

    /// Whether L2 entries can be trusted: the backplane is subscribed and
    /// has read the generations (waiting up to the L2 timeout for the first
    /// sync after start).
    #[cfg(feature = "redis")]
    async fn l2_trusted(&self) -> bool {
        match (&self.sync, &self.l2) {
            (Some(sync), Some(l2)) => sync.ready(l2.timeout()).await,
            _ => true,
        }
    }

    /// Writes a produced value's bytes to L2 for the jittered L2 TTL,
    /// stamped with the epoch its production started under, unless Redis
    /// has seen a write of the key since (then `Ok(false)`). Not written
    /// (but `Ok(true)`) without L2, with `skip_l2`, or after a load longer
    /// than Redis remembers writes for. Failures are counted, and returned
    /// in strict mode.
    async fn l2_store(
        &self,
        key: &str,
        bytes: &[u8],
        options: &EntryOptions,
        token: LoadToken,
    ) -> Result<bool, Error> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2
            && !options.skip_l2
            && token.started.elapsed() < crate::l2::LONGEST_LOAD
        {
            return match l2
                .set(key, bytes, options.jittered(options.l2_ttl), token.stamp())
                .await
            {
                Ok(stored) => Ok(stored),
                Err(error) => {
                    self.stats.l2_error();
                    if self.strict {
                        return Err(Error::L2(error.into()));
                    }
                    Ok(true)
                }
            };
        }
        let _ = (key, bytes, options, token);
        Ok(true)
    }

    /// With the distributed lock on: takes it, or waits until its holder
    /// is done (its value in L2) or gone (the lock free again: taken here).
    /// A refresh only waits for the lock: L2 holds the value it replaces.
    async fn lock_or_wait<T>(
        &self,
        key: &str,
        options: &EntryOptions,
        start: Start,
    ) -> LockOutcome<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        #[cfg(feature = "redis")]
        if let Some((lock, ttl)) = &self.lock
            && !options.skip_l2
        {
            let lookup = start == Start::Lookup;
            let mut waited = false;
            loop {
                match lock.acquire(key, *ttl).await {
                    Ok(Some(held)) => {
                        // Free again after a wait: the holder may have
                        // stored its value since the last look.
                        if waited
                            && lookup
                            && let Ok(Some(value)) =
                                self.l2_lookup::<T, _>(key, options, ViaCodec).await
                        {
                            self.unlock(Some(held)).await;
                            return LockOutcome::Loaded(value);
                        }
                        return LockOutcome::Load(Some(held));
                    }
                    Ok(None) => {}
                    Err(_) => {
                        // Redis is in trouble: load without the lock.
                        self.stats.l2_error();
                        break;
                    }
                }
                // Another instance loads. It renews the lock while its loader
                // runs, and releases it when done, or when it fails or is
                // dropped: retrying the lock notices all of them.
                waited = true;
                tokio::time::sleep(LOCK_POLL).await;
                if lookup
                    && let Ok(Some(value)) = self.l2_lookup::<T, _>(key, options, ViaCodec).await
                {
                    return LockOutcome::Loaded(value);
                }
            }
        }
        let _ = (key, options, start);
        LockOutcome::Load(None)
    }

    async fn unlock(&self, lock: Option<HeldLock>) {
        #[cfg(feature = "redis")]
        if let Some(held) = lock
            && held.release().await.is_err()
        {
            self.stats.l2_error();
        }
        #[cfg(not(feature = "redis"))]
        let _ = lock;
    }

    /// After a failed load, a stale value counts as fresh for the throttle
    /// duration, so a failing backend is not called by every request. The
    /// slot is marked in place: a value written meanwhile replaced the slot
    /// and is left alone.
    async fn throttle_stale(&self, key: &str, options: &EntryOptions) {
        let Some(slot) = self.l1.get(key).await else {
            return;
        };
        let now = Instant::now();
        if slot.fresh_until <= now && slot.stale_until > now {
            slot.throttle_until((now + options.fail_safe_throttle).min(slot.stale_until));
        }
    }
}

/// Runs `load` while renewing `lock` (if one is held), so a load longer
/// than the lock's TTL keeps it.
async fn keep_lock<F: Future>(lock: Option<&HeldLock>, load: F) -> F::Output {
    #[cfg(feature = "redis")]
    if let Some(held) = lock {
        let load = std::pin::pin!(load);
        let keep = std::pin::pin!(held.keep());
        return match futures_util::future::select(load, keep).await {
            futures_util::future::Either::Left((output, _)) => output,
            futures_util::future::Either::Right(((), load)) => load.await,
        };
    }
    let _ = lock;
    load.await
}

/// A loader's panic as a load error.
fn panicked(panic: &(dyn Any + Send)) -> BoxError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    format!("the loader panicked: {message}").into()
}

/// How often an instance waiting for another's load looks at L2.
#[cfg(feature = "redis")]
const LOCK_POLL: Duration = Duration::from_millis(20);

#[cfg(feature = "redis")]
type HeldLock = crate::lock::Held;
#[cfg(not(feature = "redis"))]
type HeldLock = std::convert::Infallible;

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
enum LockOutcome<T> {
    /// Another instance loaded the value meanwhile.
    Loaded(Arc<T>),
    /// Load now, holding the lock if one was taken.
    Load(Option<HeldLock>),
}

fn typed<T: Clone + 'static>(value: &Value) -> Option<T> {
    value.downcast_ref::<T>().cloned()
}

fn type_mismatch<T>(key: &str) -> Error {
    Error::Codec(CodecError::new(format!(
        "the value loaded for {key:?} is not a {}",
        std::any::type_name::<T>()
    )))
}

/// A registered warmer: loads one key through `get_or_load`.
type Warmer<C> = (
    String,
    Arc<dyn Fn(Cache<C>) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>,
);

/// The outcome of [`Cache::warm`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct WarmReport {
    /// Keys loaded (or already fresh).
    pub loaded: Vec<String>,
    /// Keys whose loader failed, with the error.
    pub failed: Vec<(String, Error)>,
}

impl WarmReport {
    /// Whether every warmer succeeded: usable as a readiness gate.
    pub fn is_ready(&self) -> bool {
        self.failed.is_empty()
    }
}

impl<C: Codec> Cache<C> {
    /// Registers a warmer: [`warm`](Self::warm) loads `key` with `loader`
    /// (the report warms `menu:daily:current`, `school:active:list` and
    /// `payment:methods:default` at start).
    pub fn add_warmer<T, F, Fut, E>(&self, key: impl Into<String>, options: EntryOptions, loader: F)
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let key = key.into();
        let loader = Arc::new(loader);
        let warm_key = key.clone();
        let run = move |cache: Cache<C>| {
            let key = warm_key.clone();
            let options = options.clone();
            let loader = Arc::clone(&loader);
            async move {
                cache
                    .get_or_load::<T, _, _, E>(&key, &options, move || loader())
                    .await
                    .map(|_| ())
            }
            .boxed()
        };
        self.inner
            .warmers
            .lock()
            .expect("warmers lock")
            .push((key, Arc::new(run)));
    }

    /// Runs every warmer concurrently; a failing one does not stop the
    /// others.
    pub async fn warm(&self) -> WarmReport {
        let warmers: Vec<Warmer<C>> = self.inner.warmers.lock().expect("warmers lock").clone();
        let runs = warmers.iter().map(|(key, run)| {
            let run = run(self.clone());
            async move { (key.clone(), run.await) }
        });
        let mut report = WarmReport::default();
        for (key, outcome) in futures_util::future::join_all(runs).await {
            match outcome {
                Ok(()) => report.loaded.push(key),
                Err(error) => report.failed.push((key, error)),
            }
        }
        report
    }
}
