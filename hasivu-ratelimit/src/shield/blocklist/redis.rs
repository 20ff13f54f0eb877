//! [`RedisBlocklist`]: blocked clients in Redis, shared by instances.

use std::{
    future::Future,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BlockEntry, Blocklist, BlocklistError, Lookup};
use crate::shield::state::{Clock, Table, client_bits};

/// How long Redis is left alone after a failed call: lookups answer from
/// local state meanwhile, so an outage costs one timeout per second, not
/// one per request.
const BACKOFF: Duration = Duration::from_secs(1);

/// The most keys [`Blocklist::entries`] lists.
const MAX_LISTED: usize = 10_000;

/// A blocklist in Redis, shared by every instance that uses the same
/// server and prefix.
///
/// - **Keys**: `{prefix}block:<client>` (the client as
///   [`ip_key`](crate::ip_key) writes it: `203.0.113.7`,
///   `2001:db8:1:2::/64`), the reason as value, expiring with the block
///   (`SET … PX`).
/// - **Hot path off Redis.** Answers are cached in process for
///   `cache_ttl` (default 1 s), blocked and not blocked alike, in a bounded
///   map (default 100 000 clients). A client blocked by another instance is
///   refused here within `cache_ttl`; an unblock reaches every instance
///   within `cache_ttl` too. Blocks made by this instance hold at once.
/// - **Bounded and soft failures.** Every call is bounded by `timeout`
///   (default 50 ms). When Redis fails or is slow, lookups answer from
///   what this instance knows (its own blocks, cached answers) for the
///   next second before trying again; the error is logged and counted in
///   `hasivu_shield_blocklist_errors_total{op}`. A Redis outage never
///   refuses traffic and never produces a 5xx.
///
/// ```no_run
/// use std::time::Duration;
/// use hasivu_ratelimit::shield::{RedisBlocklist, ShieldLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let blocklist = RedisBlocklist::builder("redis://127.0.0.1:6379/")
///     .prefix("myapp:shield:")
///     .timeout(Duration::from_millis(30))
///     .build()
///     .unwrap();
/// let layer = ShieldLayer::new().blocklist(blocklist.clone());
/// # let _ = layer;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisBlocklist {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    cache_ttl: u64,
    cache: Table<Cached>,
    /// Until when (clock nanos) Redis is left alone.
    down_until: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBlocklist")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &Duration::from_nanos(self.cache_ttl))
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// What this instance knows about a client.
#[derive(Debug)]
struct Cached {
    /// When Redis was last asked (or told).
    checked: u64,
    /// The end of the block; 0 when not blocked.
    until: u64,
}

/// Builds a [`RedisBlocklist`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBlocklistBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    cache_ttl: Duration,
    max_cached: usize,
    tokio_time: bool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBlocklistBuilder {
    /// The key prefix (default `hasivu:shield:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound of every Redis call (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long answers are cached in process (default 1 s). Zero asks
    /// Redis on every request.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The most clients cached (default 100 000).
    pub fn max_cached(mut self, max: usize) -> Self {
        self.max_cached = max.max(1);
        self
    }

    /// Reads tokio's clock for the cache, so tests can pause time.
    pub fn tokio_time(mut self, enabled: bool) -> Self {
        self.tokio_time = enabled;
        self
    }

    /// Builds the blocklist without connecting: the connection is made on
    /// first use and remade in the background, so building succeeds while
    /// Redis is down.
    ///
    /// # Errors
    ///
    /// [`BlocklistError::Config`] for an invalid URL, or when called
    /// outside a Tokio runtime.
    pub fn build(self) -> Result<RedisBlocklist, BlocklistError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BlocklistError::Config(
                "RedisBlocklist must be built within a Tokio runtime".into(),
            ));
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| BlocklistError::Config(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BlocklistError::Config(e.to_string()))?;
        Ok(RedisBlocklist {
            inner: Arc::new(Inner {
                conn,
                prefix: self.prefix,
                timeout: self.timeout,
                cache_ttl: nanos(self.cache_ttl),
                cache: Table::new("redis_blocklist_cache", self.max_cached),
                down_until: AtomicU64::new(0),
                clock: Clock::new(self.tokio_time),
            }),
        })
    }
}

impl RedisBlocklist {
    /// A builder for the Redis server at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisBlocklistBuilder {
        RedisBlocklistBuilder {
            url: url.into(),
            prefix: "hasivu:shield:".into(),
            timeout: Duration::from_millis(50),
            cache_ttl: Duration::from_secs(1),
            max_cached: 100_000,
            tokio_time: false,
        }
    }

    fn key(&self, ip: IpAddr) -> String {
        format!("{}block:{}", self.inner.prefix, crate::ip_key(ip))
    }

    fn is_down(&self, now: u64) -> bool {
        self.inner.down_until.load(Ordering::Relaxed) > now
    }

    /// Runs one Redis call within the timeout; a failure leaves Redis
    /// alone for a while and is logged and counted.
    async fn call<T, F>(&self, op: &'static str, call: F) -> Result<T, BlocklistError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => BlocklistError::Redis(e),
            Err(_) => BlocklistError::Timeout(self.inner.timeout),
        };
        let now = self.inner.clock.now();
        self.inner
            .down_until
            .store(now.saturating_add(nanos(BACKOFF)), Ordering::Relaxed);
        metrics::counter!("hasivu_shield_blocklist_errors_total", "op" => op).increment(1);
        tracing::warn!(
            target: "hasivu_ratelimit::shield",
            op,
            error = %result,
            "shield blocklist: redis failed; answering from local state for {}s",
            BACKOFF.as_secs()
        );
        Err(result)
    }

    fn remember(&self, ip: IpAddr, until: u64) {
        let now = self.inner.clock.now();
        let ttl = self.inner.cache_ttl;
        self.inner.cache.with(
            client_bits(ip),
            || Cached {
                checked: now,
                until,
            },
            // Stale answers go first, then "not blocked" ones before
            // blocks, the least recently checked first.
            |c| {
                (c.until > now || now.saturating_sub(c.checked) < ttl)
                    .then_some((c.until > now, c.checked))
            },
            |c| {
                c.checked = now;
                c.until = until;
            },
        );
    }

    /// What the cache says, fresh or not: (remaining nanos, fresh).
    fn cached(&self, ip: IpAddr, now: u64) -> Option<(u64, bool)> {
        if self.inner.cache.is_empty() {
            return None;
        }
        self.inner.cache.get(client_bits(ip), |c| {
            (
                c.until.saturating_sub(now),
                now.saturating_sub(c.checked) < self.inner.cache_ttl,
            )
        })
    }
}

impl Blocklist for RedisBlocklist {
    fn lookup_now(&self, ip: IpAddr) -> Lookup {
        let now = self.inner.clock.now();
        let down = self.is_down(now);
        match self.cached(ip, now) {
            Some((left, fresh)) if fresh || down => {
                if left > 0 {
                    Lookup::Blocked(Duration::from_nanos(left))
                } else {
                    Lookup::Clear
                }
            }
            None if down => Lookup::Clear,
            _ => Lookup::Unknown,
        }
    }

    async fn lookup(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.inner.clock.now();
        if self.is_down(now) {
            return self
                .cached(ip, now)
                .and_then(|(left, _)| (left > 0).then(|| Duration::from_nanos(left)));
        }
        let key = self.key(ip);
        let mut conn = self.inner.conn.clone();
        let pttl: Result<i64, _> = self
            .call("lookup", async move {
                redis::cmd("PTTL").arg(&key).query_async(&mut conn).await
            })
            .await;
        let now = self.inner.clock.now();
        match pttl {
            Ok(ms) if ms > 0 => {
                let left = Duration::from_millis(ms.unsigned_abs());
                self.remember(ip, now.saturating_add(nanos(left)));
                Some(left)
            }
            // A key without expiry (set by hand): blocked; look again soon.
            Ok(-1) => {
                let left = Duration::from_secs(3600);
                self.remember(ip, now.saturating_add(nanos(left)));
                Some(left)
            }
            Ok(_) => {
                self.remember(ip, 0);
                None
            }
            Err(_) => self
                .cached(ip, now)
                .and_then(|(left, _)| (left > 0).then(|| Duration::from_nanos(left))),
        }
    }

    async fn block(&self, ip: IpAddr, ttl: Duration, reason: &str) -> Result<(), BlocklistError> {
        let now = self.inner.clock.now();
        self.remember(ip, now.saturating_add(nanos(ttl)));
        let key = self.key(ip);
        let reason = reason.to_owned();
        let mut conn = self.inner.conn.clone();
        self.call("block", async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&reason)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn unblock(&self, ip: IpAddr) -> Result<bool, BlocklistError> {
        let was_cached = self.inner.cache.remove(client_bits(ip));
        let key = self.key(ip);
        let mut conn = self.inner.conn.clone();
        let deleted: i64 = self
            .call("unblock", async move {
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await
            })
            .await?;
        // Remember "not blocked" so this instance lets the client in now.
        self.remember(ip, 0);
        let now = self.inner.clock.now();
        Ok(deleted > 0 || was_cached.is_some_and(|c| c.until > now))
    }

    async fn entries(&self) -> Result<Vec<BlockEntry>, BlocklistError> {
        let pattern = format!("{}block:*", self.inner.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.inner.conn.clone();
            let pattern = pattern.clone();
            let (next, batch): (u64, Vec<String>) = self
                .call("entries", async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= MAX_LISTED {
                break;
            }
        }
        keys.truncate(MAX_LISTED);
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            let mut conn = self.inner.conn.clone();
            let replies: Vec<redis::Value> = self
                .call("entries", async move { pipe.query_async(&mut conn).await })
                .await?;
            for (key, pair) in chunk.iter().zip(replies.chunks(2)) {
                let [value, pttl] = pair else { continue };
                let reason: Option<String> = redis::from_redis_value_ref(value).ok();
                let pttl: i64 = redis::from_redis_value_ref(pttl).unwrap_or(-2);
                let Some(reason) = reason else { continue };
                let client = key
                    .strip_prefix(&pattern[..pattern.len() - 1])
                    .map(|c| c.trim_end_matches("/64"))
                    .and_then(|c| c.parse::<IpAddr>().ok());
                let Some(ip) = client else { continue };
                let remaining = match pttl {
                    ms if ms > 0 => Duration::from_millis(ms.unsigned_abs()),
                    -1 => Duration::MAX,
                    _ => continue,
                };
                out.push(BlockEntry {
                    ip,
                    reason,
                    remaining,
                });
            }
        }
        Ok(out)
    }
}
