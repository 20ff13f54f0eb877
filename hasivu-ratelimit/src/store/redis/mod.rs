//! The Redis store, documented on [`RedisStore`]: scripts, keys, the
//! connection with its breaker, leases and the memory signal.

mod client;
mod keys;
mod lease;
mod memory;
mod scripts;

use std::{sync::Arc, time::Duration};

use redis::Script;

use self::{
    client::{CallError, Client, Connector, Link},
    lease::Leases,
    scripts::Outcome,
};
pub use self::{
    lease::LeaseConfig,
    memory::{RedisMemory, RedisMemoryBuilder},
};
use super::breaker::Breaker;
use crate::{Error, LocalStore, Quota, Source, Store, StoreKey, Verdict};

/// The longest window the scripts are given, in microseconds (about 35
/// years): Lua numbers are doubles, exact up to 2⁵³.
const MAX_WINDOW_MICROS: u64 = 1 << 50;

/// How the Redis store counts.
///
/// ```
/// use hasivu_ratelimit::Algorithm;
///
/// assert_eq!(Algorithm::default(), Algorithm::SlidingWindowCounter);
/// let exact: Algorithm = serde_json::from_str(r#""sliding_log""#).unwrap();
/// assert_eq!(exact, Algorithm::SlidingLog);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Algorithm {
    /// Two counters per key, the previous window weighted by its overlap:
    /// small and approximate (see [`RedisStore`](crate::RedisStore#algorithms)).
    #[default]
    SlidingWindowCounter,
    /// One sorted-set entry per admitted unit: exact, memory grows with the
    /// limit.
    SlidingLog,
}

/// What the Redis store does when Redis is slow, down, or answers nonsense.
///
/// ```
/// use hasivu_ratelimit::FailPolicy;
///
/// assert_eq!(FailPolicy::default(), FailPolicy::Local);
/// let policy: FailPolicy = serde_json::from_str(r#""closed""#).unwrap();
/// assert_eq!(policy, FailPolicy::Closed);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailPolicy {
    /// Admit the request ([`Source::FailOpen`]).
    Open,
    /// Refuse the request ([`Source::FailClosed`]), with the breaker's open
    /// period as the retry time.
    Closed,
    /// Let an in-process [`LocalStore`] decide ([`Source::Fallback`]): the
    /// store's own, or the one given to
    /// [`fallback`](RedisStoreBuilder::fallback).
    #[default]
    Local,
}

/// A [`Store`] in Redis: one quota shared by every instance that uses the
/// same Redis and prefix, counted by one atomic Lua script per check.
/// Cheap to clone; clones share the connection, the breaker, the fallback
/// store and the leases. Needs the `redis` feature, which is not on by
/// default.
///
/// ```
/// use hasivu_ratelimit::{Limiter, Quota, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_ratelimit::Error> {
/// // Building does not connect: it works while Redis is down (but needs a
/// // Tokio runtime). Here nothing listens, so checks fall back to a local
/// // store, the default fail policy.
/// let store = RedisStore::builder("redis://127.0.0.1:1/").build()?;
/// let limiter = Limiter::builder()
///     .store(store)
///     .quota(Quota::per_minute(100))
///     .build();
/// let decision = limiter.check("203.0.113.7", 1).await;
/// assert!(decision.is_allowed());
/// assert_eq!(decision.source, hasivu_ratelimit::Source::Fallback);
/// # Ok(())
/// # }
/// ```
///
/// A customised store: the exact sliding log, a tighter timeout, failing
/// closed, and token leases.
///
/// ```no_run
/// use std::time::Duration;
/// use hasivu_ratelimit::{Algorithm, FailPolicy, LeaseConfig, Quota, RedisStore, Store, StoreKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_ratelimit::Error> {
/// let store = RedisStore::builder("redis://10.0.0.5:6379/")
///     .prefix("api:rl:")
///     .algorithm(Algorithm::SlidingLog)
///     .timeout(Duration::from_millis(20))
///     .breaker(3, Duration::from_secs(2))
///     .on_failure(FailPolicy::Closed)
///     .leases(LeaseConfig::new(10))
///     .build()?;
/// let key = StoreKey { policy: "payments", key: "user:42" };
/// let (verdict, source) = store.check(key, &Quota::per_minute(30), 1).await;
/// println!("{verdict:?} from {}", source.as_str());
/// # Ok(())
/// # }
/// ```
///
/// # Algorithms
///
/// Each check runs one Lua script (`EVALSHA`, loaded again by itself after
/// a Redis restart) that reads the clock with Redis `TIME`, so instances
/// whose clocks drift still share one timeline. It counts a request only
/// when it admits it: a client that keeps retrying while limited gets in
/// again as soon as its quota is back.
///
/// - **Sliding-window counter** ([`Algorithm::SlidingWindowCounter`], the
///   default). Time is cut into fixed windows; the count is the current
///   window's plus the previous window's weighted by how much of it still
///   overlaps the sliding window: `previous × (time left / window) +
///   current`. A request of cost `c` passes when that plus `c` is at most
///   the limit. It assumes the previous window's requests were spread
///   evenly: no fixed window ever holds more than `limit`, but a burst at
///   the end of one window followed by steady traffic through the next
///   lets an arbitrary sliding window hold up to `2 × limit` in the worst
///   case, and requests bunched early in a window make it stricter.
///   Cloudflare measured 0.003% of requests wrongly allowed or limited with
///   this method on their traffic (400M requests from 270k sources); that
///   is their measurement, not a guarantee. In this crate's tests, a client
///   retrying every 20 ms for 3.2 s against 5 per second got 15–17
///   requests through, with up to 8 within some 950 ms (the sliding log:
///   20, five at 0, 1, 2 and 3 s, never more than 5 within a second); 200
///   concurrent requests from two instances against 50 per minute got
///   exactly 50 through. One small hash per key.
/// - **Sliding log** ([`Algorithm::SlidingLog`]). A sorted set with one
///   entry per admitted unit, scored with its admission time: exactly at
///   most `limit` units in any window. Entries carry a random suffix, so
///   requests within the same microsecond are all counted. Memory grows
///   with the limit; use it for small limits (logins, payments).
///
/// The quota's burst is not used: the limit is the burst.
///
/// ## What a verdict says
///
/// | | Sliding-window counter | Sliding log |
/// |---|---|---|
/// | `remaining` | `limit − weighted count` (after this request), rounded down | `limit − entries in the window` |
/// | `reset_after` | until the current fixed window ends | until the oldest counted request leaves the window |
/// | `retry_after` | when the previous windows' weight has decayed enough for this cost | when enough of the oldest entries have left |
///
/// `retry_after` is computed from the state Redis holds at the check, so it
/// is never earlier than the moment the same request would truly pass
/// (other clients can only make it later). A limit of 0, or a cost above
/// the limit, is refused without asking Redis and without a retry time.
///
/// ## Keys and memory
///
/// A counter lives under `{prefix}{<policy>:<key>}:swc` (a hash with the
/// window index and two counts) or `{prefix}{<policy>:<key>}:log` (a sorted
/// set). The braces are a Redis Cluster hash tag; braces, `%` and (in the
/// policy) `:` inside names are percent-escaped, so client keys may contain
/// anything without breaking the tag or colliding with another key. Keys
/// expire by themselves: a counter when its previous window stops
/// mattering (at most two windows after its last admitted request), a log
/// one window after its newest entry. Refused requests do not extend them.
///
/// Measured with `MEMORY USAGE` on Redis 7.0 (prefix `rl:`, policy
/// `general`, an IPv4 client key; the key name is included):
///
/// | Structure | Bytes |
/// |---|---|
/// | Sliding-window counter: one hash of three small fields | 104 per key |
/// | Sliding log, up to 128 entries (listpack) | 46 per admitted unit |
/// | Sliding log, above 128 entries (skiplist) | 119 per admitted unit (11 110 entries: 1.3 MB) |
///
/// # When Redis is slow or down
///
/// Every call is bounded by a timeout (default 50 ms: a limiter must not add
/// much latency), so a check waits for Redis at most that long (twice with
/// [leases](#token-leases)), and guarded by a circuit breaker: after
/// `failures` consecutive failed calls (default 5) Redis is not called for
/// `open_for` (default 1 s), then one probe call decides. While the breaker
/// is open, checks answer at once. When a call fails, the [`FailPolicy`]
/// decides and the [`Source`] of the verdict says which way:
///
/// | Policy | Verdict | Source |
/// |---|---|---|
/// | [`FailPolicy::Local`] (default) | an in-process GCRA [`LocalStore`] decides, per instance | [`Source::Fallback`] |
/// | [`FailPolicy::Open`] | admitted | [`Source::FailOpen`] |
/// | [`FailPolicy::Closed`] | refused, retry after the breaker's open period | [`Source::FailClosed`] |
///
/// With the local fallback each instance enforces the quota on its own, so
/// `n` instances admit up to `n` times the limit while Redis is away; the
/// local store counts with GCRA (the quota's burst applies). When Redis
/// answers again, shared counting resumes by itself: the probe closes the
/// breaker and the connection reconnects in the background. A call that
/// timed out may still have been counted in Redis.
///
/// When the breaker opens, the store also gives its connection up and the
/// probe connects afresh. The `redis` client remakes a connection that
/// closes or fails, but not one that merely stopped answering (a peer, NAT
/// or firewall gone without a FIN or RST: a half-open TCP connection),
/// whose commands would otherwise time out for ever.
///
/// In this crate's tests, with Redis behind a proxy that stalls traffic,
/// half-opens or resets connections (50 ms timeout, the default breaker),
/// every decision took at most about 55 ms while the fault lasted (up to
/// 70 ms for 200 concurrent checks on a loaded two-core machine), and
/// checks were counted in Redis again about 1 s (the open period) after
/// the network healed, within 30 ms of a reset.
///
/// Metrics: `hasivu_ratelimit_redis_errors_total{kind}` (`unavailable`:
/// breaker open; `timeout`; `connection`; `reply`: an error or unexpected
/// reply) and the histogram `hasivu_ratelimit_redis_seconds` (the latency of
/// each call). The [`Limiter`](crate::Limiter) counts every decision by
/// source in `hasivu_ratelimit_decisions_total`. Failures are logged with
/// `tracing` at warn level, at most once per 10 seconds per store, with
/// the number of warnings held back.
///
/// # Token leases
///
/// With [`leases`](RedisStoreBuilder::leases), an instance takes a batch of
/// units for a key in one script call (the script admits up to the batch,
/// at least the request's cost, against the same counter) and spends them
/// locally until they run out or their lease expires; after Redis refuses,
/// the instance also refuses the same or larger costs locally until the
/// retry time Redis gave. Verdicts decided locally have
/// [`Source::Lease`].
///
/// Leased units are counted in Redis when taken, so Redis never admits
/// more than the algorithm allows; the error comes from spending them
/// later. Each instance holds at most `batch − 1` unspent units per key
/// (takes for one key are serialised per instance), and what is spent in a
/// window is what was taken in it plus what was held when it started. So
/// in any window, `n` instances admit at most **`limit + n × (batch − 1)`**
/// with the sliding log (add the counter's own error with the counter).
/// Units that expire unspent were counted but never used: they make the
/// window stricter, not looser. `remaining` and `reset_after` of a leased
/// verdict are Redis's figures at the take, minus what was spent since.
/// Units held when Redis fails are still spent; the fail policy decides
/// once they run out.
///
/// Checks of one key that find no units queue for one take at a time. Each
/// waits at most the timeout for its turn, and when the take it waited for
/// failed it applies the fail policy at once instead of trying again: a
/// stalled Redis costs a crowd of checks one timeout, not one each. So a
/// leased check waits for Redis at most twice the timeout.
///
/// Measured in this crate's tests, sliding log, batches of 10:
///
/// | Run | Redis calls | Admitted |
/// |---|---|---|
/// | 1000 checks within the quota, one instance | 100 (1000 without leases) | all |
/// | Two instances, about 1 650 checks in 3 s against 100 per second | 21–25 per 1000 checks | 300; at most 100 in any 950 ms, 101–102 in any 1 s |
/// | Worst case built on purpose: two instances hold 9 units each past a window's end (limit 20) | – | 38 in one window: the bound, reached and not passed |
///
/// The second run costs so few calls because refusals are remembered until
/// Redis's retry time.
///
/// # Redis Cluster
///
/// With the `cluster` feature, [`RedisStore::cluster`] connects to a Redis
/// Cluster. Each check touches one key, and the hash tag keeps every key of
/// one counter in one slot.
///
/// # Differences from the report
///
/// The report's limiter sends `ZREMRANGEBYSCORE`, `ZADD`, `ZCOUNT` and
/// `EXPIRE` in a pipeline, with scores from each instance's `Date.now()`.
///
/// - It adds every request before counting it, admitted or not: rejected
///   requests are counted, and a client that keeps retrying while limited
///   stays locked out for as long as it retries. Here a refusal writes
///   nothing.
/// - A pipeline is not a transaction: the commands of concurrent requests
///   interleave, so the count one request sees depends on what others did
///   in between. Here one script trims, counts, decides and adds at once.
/// - Instances trim and score with their own clocks, so a clock running
///   ahead trims entries the others still count. Here the script reads
///   Redis `TIME`.
/// - Its reset time is always now plus the window; here `reset_after` and
///   `retry_after` come from the stored state.
/// - Its keys have no hash tag or policy name; here counters of different
///   policies are apart and each sits in one cluster slot.
///
/// Like the report, entries carry a random part, so same-millisecond
/// requests stay apart.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: Box<str>,
    algorithm: Algorithm,
    policy: FailPolicy,
    fallback: LocalStore,
    leases: Option<Leases>,
    script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("algorithm", &self.inner.algorithm)
            .field("on_failure", &self.inner.policy)
            .field("client", &self.inner.client)
            .field("leases", &self.inner.leases)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Target {
    Single(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    algorithm: Algorithm,
    timeout: Duration,
    breaker: (u32, Duration),
    policy: FailPolicy,
    fallback: Option<LocalStore>,
    leases: Option<LeaseConfig>,
}

impl RedisStore {
    /// A builder for a store on the Redis server at `url`
    /// (`redis://host:port/db`, `rediss://` for TLS if the `redis` crate
    /// was built with it), with the defaults: prefix `rl:`, the
    /// sliding-window counter, a 50 ms timeout, a breaker opening for 1 s
    /// after 5 failures, the local fallback, no leases.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target: Target::Single(url.into()),
            prefix: "rl:".to_owned(),
            algorithm: Algorithm::default(),
            timeout: Duration::from_millis(50),
            breaker: (5, Duration::from_secs(1)),
            policy: FailPolicy::default(),
            fallback: None,
            leases: None,
        }
    }

    /// A builder for a store on a Redis Cluster reached through any of
    /// `urls`, with the same defaults as [`builder`](Self::builder).
    ///
    /// ```no_run
    /// use hasivu_ratelimit::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), hasivu_ratelimit::Error> {
    /// let store = RedisStore::cluster(["redis://10.0.0.5:7000/", "redis://10.0.0.6:7000/"])
    ///     .build()?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster<I, S>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut builder = Self::builder(String::new());
        builder.target = Target::Cluster(urls.into_iter().map(Into::into).collect());
        builder
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The fail policy.
    pub fn fail_policy(&self) -> FailPolicy {
        self.inner.policy
    }

    /// The local store that decides under [`FailPolicy::Local`].
    pub fn fallback(&self) -> &LocalStore {
        &self.inner.fallback
    }

    /// The timeout of each Redis call.
    pub fn timeout(&self) -> Duration {
        self.inner.client.timeout()
    }

    /// Whether Redis is called now: false while the circuit breaker is
    /// open after repeated failures.
    pub fn is_available(&self) -> bool {
        self.inner.client.breaker_state() != super::breaker::BreakerState::Open
    }

    /// Asks Redis for at least `need` and at most `want` units.
    async fn take(
        &self,
        key: StoreKey<'_>,
        quota: &Quota,
        need: u32,
        want: u32,
    ) -> Result<Outcome, CallError> {
        let inner = &*self.inner;
        let redis_key = keys::redis_key(&inner.prefix, key, inner.algorithm);
        let window = u64::try_from(quota.window().as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_WINDOW_MICROS);
        let mut invocation = inner.script.key(redis_key);
        invocation
            .arg(quota.limit())
            .arg(window)
            .arg(need)
            .arg(want);
        if inner.algorithm == Algorithm::SlidingLog {
            invocation.arg(format!("{:08x}", fastrand::u32(..)));
        }
        let invocation = &invocation;
        inner
            .client
            .call(
                "check",
                |mut conn| async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await },
                |reply| scripts::parse(&reply),
            )
            .await
    }

    /// The verdict of the fail policy.
    fn fail(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> (Verdict, Source) {
        let limit = quota.limit();
        match self.inner.policy {
            FailPolicy::Open => (
                Verdict {
                    allowed: true,
                    limit,
                    remaining: limit.saturating_sub(cost),
                    reset_after: Duration::ZERO,
                    retry_after: None,
                },
                Source::FailOpen,
            ),
            FailPolicy::Closed => (
                Verdict {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after: Duration::ZERO,
                    retry_after: Some(self.inner.client.breaker().open_for()),
                },
                Source::FailClosed,
            ),
            FailPolicy::Local => (
                self.inner.fallback.check_sync(key, quota, cost),
                Source::Fallback,
            ),
        }
    }

    async fn check_leased(
        &self,
        leases: &Leases,
        key: StoreKey<'_>,
        quota: &Quota,
        cost: u32,
    ) -> (Verdict, Source) {
        let slot = leases.slot(key);
        if let Some(verdict) = slot.spend(quota, cost) {
            return (verdict, Source::Lease);
        }
        // Checks of one key queue here behind one take at a time. A check
        // waits at most the timeout for its turn, and gives up at once when
        // a take failed while it waited: a stalled Redis must not cost each
        // queued check a timeout of its own.
        let failed_takes = slot.failed_takes();
        let Ok(_refill) =
            tokio::time::timeout(self.inner.client.timeout(), slot.refill.lock()).await
        else {
            return self.fail(key, quota, cost);
        };
        // Another check may have refilled the lease while this one waited.
        if let Some(verdict) = slot.spend(quota, cost) {
            return (verdict, Source::Lease);
        }
        if slot.failed_takes() != failed_takes {
            return self.fail(key, quota, cost);
        }
        let limit = quota.limit();
        let taken = slot.take_held(quota);
        // Units held (fewer than `cost`) pay part of this request.
        let need = cost.saturating_sub(taken.tokens);
        let want = leases
            .config()
            .batch()
            .max(cost)
            .min(limit)
            .saturating_sub(taken.tokens);
        match self.take(key, quota, need, want).await {
            Ok(outcome) if outcome.admitted => {
                let left = (taken.tokens + outcome.granted).saturating_sub(cost);
                slot.refill(
                    quota,
                    left,
                    leases.config().lease_ttl(),
                    outcome.remaining,
                    outcome.reset_after,
                );
                let verdict = Verdict {
                    allowed: true,
                    limit,
                    remaining: outcome.remaining.saturating_add(left).min(limit),
                    reset_after: outcome.reset_after,
                    retry_after: None,
                };
                (verdict, Source::Redis)
            }
            Ok(outcome) => {
                let retry = outcome.retry_after.unwrap_or_default();
                slot.give_back(quota, taken, Some((cost, retry)));
                (self.verdict(quota, outcome), Source::Redis)
            }
            Err(_) => {
                slot.take_failed();
                slot.give_back(quota, taken, None);
                self.fail(key, quota, cost)
            }
        }
    }

    fn verdict(&self, quota: &Quota, outcome: Outcome) -> Verdict {
        Verdict {
            allowed: outcome.admitted,
            limit: quota.limit(),
            remaining: outcome.remaining,
            reset_after: outcome.reset_after,
            retry_after: outcome.retry_after,
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key (default `rl:`). Give each application its
    /// own when they share a Redis; instances of one application must use
    /// the same. It may not contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The algorithm (default [`Algorithm::SlidingWindowCounter`]). All
    /// instances sharing a quota must use the same; the two keep separate
    /// keys.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The timeout of each Redis call, connecting included (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The circuit breaker: after `failures` consecutive failed calls,
    /// Redis is not called for `open_for`, then one probe call decides
    /// (default 5 failures, 1 s).
    pub fn breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker = (failures, open_for);
        self
    }

    /// What to do when Redis fails (default [`FailPolicy::Local`]).
    pub fn on_failure(mut self, policy: FailPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The local store that decides under [`FailPolicy::Local`] (default:
    /// a [`LocalStore`] with its defaults). Give one to bound its keys, or
    /// to share it with other parts of the application.
    pub fn fallback(mut self, store: LocalStore) -> Self {
        self.fallback = Some(store);
        self
    }

    /// Takes units from Redis in batches and spends them locally (default:
    /// off, one Redis call per check). See [`LeaseConfig`] and the bound
    /// on the overshoot in the [store docs](crate::RedisStore#token-leases).
    pub fn leases(mut self, leases: LeaseConfig) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Builds the store without connecting: the connection is made on the
    /// first check and remade in the background after a failure, so
    /// building succeeds while Redis is down.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime (the connection
    /// manager spawns a task), [`Error::InvalidPrefix`] for a prefix with
    /// braces, and [`Error::Redis`] for an invalid URL.
    pub fn build(self) -> Result<RedisStore, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime("RedisStoreBuilder::build"));
        }
        if !keys::valid_prefix(&self.prefix) {
            return Err(Error::InvalidPrefix(self.prefix));
        }
        let connector = match &self.target {
            Target::Single(url) => Connector::single(url, self.timeout)?,
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => Connector::cluster(urls, self.timeout)?,
        };
        let (failures, open_for) = self.breaker;
        let script = match self.algorithm {
            Algorithm::SlidingWindowCounter => scripts::SLIDING_WINDOW_COUNTER,
            Algorithm::SlidingLog => scripts::SLIDING_LOG,
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client: Client::new(
                    Link::new(connector)?,
                    self.timeout,
                    Breaker::new(failures, open_for),
                ),
                prefix: self.prefix.into(),
                algorithm: self.algorithm,
                policy: self.policy,
                fallback: self.fallback.unwrap_or_default(),
                leases: self.leases.map(Leases::new),
                script: Script::new(script),
            }),
        })
    }
}

impl Store for RedisStore {
    async fn check(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> (Verdict, Source) {
        let limit = quota.limit();
        if limit == 0 || cost > limit {
            // Never admissible: no need to ask.
            let verdict = Verdict {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: None,
            };
            return (verdict, Source::Redis);
        }
        if let Some(leases) = &self.inner.leases {
            return self.check_leased(leases, key, quota, cost).await;
        }
        match self.take(key, quota, cost, cost).await {
            Ok(outcome) => (self.verdict(quota, outcome), Source::Redis),
            Err(_) => self.fail(key, quota, cost),
        }
    }
}
