//! The Redis L2: byte values under prefixed keys, every call bounded by a
//! timeout and guarded by a circuit breaker. One server, or a Redis Cluster
//! with the `cluster` feature: every command touches one key (GET and PTTL
//! of one key share its slot), so no call is cross-slot.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Script, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};

use crate::{
    breaker::{Breaker, BreakerState},
    error::BoxError,
    keys,
    log_gate::{LOG_EVERY, LogGate},
};

/// Retries of one connection attempt inside the connection manager. Few,
/// because every call is bounded by our own timeout anyway and the breaker
/// decides when to try again.
const CONNECT_RETRIES: usize = 2;

/// Why an L2 call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum L2Error {
    /// The circuit breaker is open: Redis was not called.
    #[error("redis unavailable (circuit breaker open)")]
    Unavailable,
    /// The call did not finish within the per-call timeout.
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
    /// Redis or the connection to it failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis answered something the cache did not expect.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// A connection to one server or to a cluster; both reconnect by themselves
/// when the connection closes or fails, not when it only stops answering
/// (see [`Link::replace`]).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Single(_) => f.write_str("Connection::Single"),
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A value read from L2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct L2Entry {
    pub(crate) value: Bytes,
    /// The remaining time to live (`None`: no expiry).
    pub(crate) ttl: Option<Duration>,
    /// The generation stamp written with it (0 when none was).
    pub(crate) stamp: u64,
}

/// Stores a loaded value and its stamp unless the key's stamp is above
/// the load's: a write (set, remove, invalidation) since the load started
/// took a generation above every stamp that existed then.
const WRITE_LOADED: &str = r#"
local current = tonumber(redis.call("GET", KEYS[2]) or "0") or 0
if current > tonumber(ARGV[3]) then
    return 0
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("SET", KEYS[2], ARGV[3], "PX", ARGV[4])
return 1
"#;

/// How long a stamp outlives its value at least, and how long a deleted
/// key keeps its stamp (a tombstone): a load that started before a write
/// finds the write's stamp as long as it runs for less than this. Loads
/// that run longer are not written to L2 (see [`LONGEST_LOAD`]).
pub(crate) const STAMP_LIFE: Duration = Duration::from_secs(120);

/// Loads that ran longer than this are not written to L2: a stamp they
/// must see may have expired. Half the stamp life, so that a write delayed
/// on its way to Redis cannot land after the stamp's end.
pub(crate) const LONGEST_LOAD: Duration = Duration::from_secs(60);

/// The TTL of a stamp next to a value living `millis`.
pub(crate) fn stamp_life(millis: u64) -> u64 {
    millis.max(ttl_millis(STAMP_LIFE))
}

/// The Lua scripts, loaded once per L2.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) write_loaded: Script,
    pub(crate) change: Script,
    pub(crate) write_key: Script,
}

/// How to make a fresh connection when the one in use stopped answering.
#[derive(Clone)]
enum Connect {
    Single(redis::Client, ConnectionManagerConfig),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster::ClusterClient, redis::cluster::ClusterConfig),
}

impl Connect {
    fn connect(&self) -> Result<Connection, RedisError> {
        match self {
            Connect::Single(client, config) => Ok(Connection::Single(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            )),
            #[cfg(feature = "cluster")]
            Connect::Cluster(client, config) => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(config.clone()),
            )),
        }
    }
}

/// The connection in use, its generation (bumped when it is replaced) and
/// how to make the next one.
struct Link {
    current: Mutex<(u64, Connection)>,
    connect: Connect,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

impl Link {
    fn new(connect: Connect) -> Result<Self, RedisError> {
        Ok(Self {
            current: Mutex::new((0, connect.connect()?)),
            connect,
        })
    }

    fn get(&self) -> (u64, Connection) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// Gives up the connection of `generation` (unless another call did
    /// already). The `redis` client remakes a connection that closes or
    /// errors, but not one that stopped answering without closing (a
    /// half-open TCP connection, a silently dropped NAT entry), whose
    /// commands would time out for ever: the next call connects afresh.
    fn replace(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        // Building a lazy connection fails only on a configuration the
        // first one accepted: keep the old one then.
        if let Ok(conn) = self.connect.connect() {
            *current = (generation.wrapping_add(1), conn);
        }
    }
}

/// The Redis side of the cache. Cheap to clone: clones share the connection
/// and the breaker.
#[derive(Debug, Clone)]
pub(crate) struct RedisL2 {
    link: Arc<Link>,
    cluster: bool,
    pub(crate) prefix: Arc<str>,
    timeout: Duration,
    breaker: Arc<Breaker>,
    pub(crate) scripts: Arc<Scripts>,
    /// One warning per interval for failed calls, here and in the callers
    /// that report a failure of their own.
    pub(crate) log_gate: Arc<LogGate>,
}

impl RedisL2 {
    /// Creates the L2 without connecting: the connection manager connects
    /// lazily on the first call and reconnects in the background, so building
    /// succeeds while Redis is down and calls fail (feeding the breaker) until
    /// it is back. Fails only on an invalid URL or configuration, or when
    /// called outside a Tokio runtime (the manager spawns a task).
    pub(crate) fn new(
        url: &str,
        prefix: impl Into<String>,
        timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, BoxError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("RedisL2::new must be called within a Tokio runtime".into());
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(timeout);
        let link = Link::new(Connect::Single(client, config))?;
        Ok(Self {
            link: Arc::new(link),
            cluster: false,
            prefix: prefix.into().into(),
            timeout,
            breaker: Arc::new(breaker),
            scripts: Arc::new(Scripts::new()),
            log_gate: Arc::new(LogGate::new(LOG_EVERY)),
        })
    }

    /// Like [`new`](Self::new), for a Redis Cluster reached through any of
    /// `urls`. The connection is pending until the first call, so building
    /// succeeds while the cluster is down.
    #[cfg(feature = "cluster")]
    pub(crate) fn new_cluster(
        urls: &[String],
        prefix: impl Into<String>,
        timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, BoxError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("RedisL2::new_cluster must be called within a Tokio runtime".into());
        }
        let client = redis::cluster::ClusterClient::new(urls.iter().map(String::as_str))?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let link = Link::new(Connect::Cluster(client, config))?;
        Ok(Self {
            link: Arc::new(link),
            cluster: true,
            prefix: prefix.into().into(),
            timeout,
            breaker: Arc::new(breaker),
            scripts: Arc::new(Scripts::new()),
            log_gate: Arc::new(LogGate::new(LOG_EVERY)),
        })
    }

    /// The full Redis key: prefix + key.
    pub(crate) fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// The Redis key of the stamp that travels with `key`'s value (see
    /// [`keys::stamp_key`]).
    pub(crate) fn stamp_key(&self, key: &str) -> Option<String> {
        if self.is_cluster() {
            keys::stamp_key(&self.prefix, key)
        } else {
            Some(keys::stamp_key_any(&self.prefix, key))
        }
    }

    /// Whether the connection is to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The value under `key`, its remaining time to live and its stamp;
    /// `Ok(None)` when the key is missing. GET, PTTL and the stamp's GET
    /// travel in one transaction (`MULTI`/`EXEC`, one slot on a cluster), so
    /// the stamp is the one written with the value.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<L2Entry>, L2Error> {
        let full = self.full_key(key);
        let stamp_key = self.stamp_key(key);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        if let Some(stamp_key) = &stamp_key {
            pipe.cmd("GET").arg(stamp_key);
        }
        let reply: (Option<Vec<u8>>, i64, Option<u64>) = self
            .call("get", |mut conn| async move {
                if stamp_key.is_some() {
                    pipe.query_async(&mut conn).await
                } else {
                    let (value, pttl): (Option<Vec<u8>>, i64) = pipe.query_async(&mut conn).await?;
                    Ok((value, pttl, None))
                }
            })
            .await?;
        let (value, pttl, stamp) = reply;
        Ok(value.map(|value| L2Entry {
            value: Bytes::from(value),
            ttl: remaining_ttl(pttl),
            stamp: stamp.unwrap_or(0),
        }))
    }

    /// Stores a loaded `value` under `key` for `ttl`, stamped with the
    /// epoch the load started under, unless the key was written since
    /// (its stamp is above ours): one script, so value and stamp change
    /// together. `Ok(false)` when a write since refused it. On a cluster, a
    /// key whose stamp cannot share its slot is not stored (nothing would
    /// tell a write after the load from one before), and `Ok(true)`. A TTL
    /// below one millisecond is stored as one millisecond, since Redis
    /// rejects zero.
    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        stamp: u64,
    ) -> Result<bool, L2Error> {
        let Some(stamp_key) = self.stamp_key(key) else {
            // Nothing in Redis could tell a write since from one before:
            // not stored there, but nothing refused it either.
            return Ok(true);
        };
        let millis = ttl_millis(ttl);
        let mut invocation = self.scripts.write_loaded.key(self.full_key(key));
        invocation
            .key(stamp_key)
            .arg(value)
            .arg(millis)
            .arg(stamp)
            .arg(stamp_life(millis));
        let stored: i64 = self
            .call("set", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(stored == 1)
    }

    /// Removes the value of `key` (`UNLINK`: the memory is freed off the
    /// main thread); its stamp is left to expire within [`STAMP_LIFE`], so
    /// that a load that started before a write still finds the write's
    /// stamp.
    pub(crate) async fn remove(&self, key: &str) -> Result<(), L2Error> {
        let mut pipe = redis::pipe();
        self.push_remove(&mut pipe, key);
        self.call("remove", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Adds the commands of [`remove`](Self::remove) to `pipe`.
    pub(crate) fn push_remove(&self, pipe: &mut Pipeline, key: &str) {
        pipe.cmd("UNLINK").arg(self.full_key(key)).ignore();
        if let Some(stamp_key) = self.stamp_key(key) {
            pipe.cmd("PEXPIRE")
                .arg(stamp_key)
                .arg(ttl_millis(STAMP_LIFE))
                .ignore();
        }
    }

    /// The per-call timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The state of the circuit breaker.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one Redis call through the breaker and the timeout, and records
    /// its outcome.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, L2Error>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow() {
            metrics::counter!("hasivu_cache_l2_errors_total", "kind" => "unavailable").increment(1);
            return Err(L2Error::Unavailable);
        }
        let guard = Abandon(Some(&self.breaker));
        let (generation, conn) = self.link.get();
        let result = tokio::time::timeout(self.timeout, f(conn)).await;
        guard.defuse();
        let timed_out = match &result {
            Err(_elapsed) => true,
            Ok(Err(error)) => error.is_timeout(),
            Ok(Ok(_)) => false,
        };
        if timed_out {
            self.link.replace(generation);
        }
        match result {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            // The connection's own response timeout (the same duration) may
            // fire first; report it like ours.
            Ok(Err(error)) if error.is_timeout() => Err(self.timed_out(op)),
            Err(_elapsed) => Err(self.timed_out(op)),
            Ok(Err(error)) => {
                if is_outage(&error) {
                    self.breaker.failure();
                } else {
                    // Redis answered, so it is reachable: an error reply says
                    // nothing about its health.
                    self.breaker.success();
                }
                metrics::counter!("hasivu_cache_l2_errors_total", "kind" => "redis").increment(1);
                if let Some(suppressed) = self.log_gate.admit() {
                    tracing::warn!(op, error = %error, suppressed, "redis L2 call failed");
                }
                Err(L2Error::Redis(error))
            }
        }
    }

    fn timed_out(&self, op: &'static str) -> L2Error {
        self.breaker.failure();
        metrics::counter!("hasivu_cache_l2_errors_total", "kind" => "timeout").increment(1);
        if let Some(suppressed) = self.log_gate.admit() {
            tracing::warn!(op, timeout = ?self.timeout, suppressed, "redis L2 call timed out");
        }
        L2Error::Timeout(self.timeout)
    }
}

impl Scripts {
    fn new() -> Self {
        Self {
            write_loaded: Script::new(WRITE_LOADED),
            change: Script::new(crate::l2_invalidation::CHANGE),
            write_key: Script::new(crate::l2_invalidation::WRITE_KEY),
        }
    }
}

/// Frees the half-open probe slot when a call's future is dropped before it
/// reports an outcome, so a cancelled probe cannot keep the breaker shut.
struct Abandon<'a>(Option<&'a Breaker>);

impl Abandon<'_> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.0 {
            breaker.abandon();
        }
    }
}

/// Whether the error means Redis is unreachable or unhealthy (as opposed to a
/// reply that Redis gave to a bad command).
fn is_outage(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::ResponseError | ServerErrorKind::ExecAbort | ServerErrorKind::NoScript
        ) | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType
    )
}

/// PTTL's reply as a remaining TTL: -1 means no expiry. -2 (gone) can only
/// come from the key expiring between GET and PTTL; it then has no time left.
fn remaining_ttl(pttl: i64) -> Option<Duration> {
    match pttl {
        -1 => None,
        ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }
}

pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hasivu_testkit::RedisServer;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);
    const OPEN_FOR: Duration = Duration::from_millis(500);
    const THRESHOLD: u32 = 3;

    fn l2(redis: &RedisServer, prefix: &str) -> RedisL2 {
        RedisL2::new(
            &redis.url(),
            prefix,
            TIMEOUT,
            Breaker::new(THRESHOLD, OPEN_FOR),
        )
        .unwrap()
    }

    async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn set_get_round_trip_with_prefix_and_ttl() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "app:");
        l2.set("user:1", b"hello", Duration::from_secs(60), 7)
            .await
            .unwrap();
        let entry = l2.get("user:1").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"hello");
        assert_eq!(entry.stamp, 7);
        let ttl = entry.ttl.expect("a TTL");
        assert!(
            ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(55),
            "{ttl:?}"
        );

        // Stored under prefix + key.
        let mut raw = raw(&redis).await;
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg("app:user:1")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(stored.as_deref(), Some(&b"hello"[..]));
        assert_eq!(l2.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn empty_prefix_and_key_without_ttl() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "");
        let mut raw = raw(&redis).await;
        redis::cmd("SET")
            .arg("plain")
            .arg("v")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        let entry = l2.get("plain").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"v");
        assert_eq!(entry.ttl, None);
        // Written by another client: no stamp.
        assert_eq!(entry.stamp, 0);
    }

    #[tokio::test]
    async fn value_written_by_another_client_is_returned_byte_for_byte() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "menu:");
        let mut raw = raw(&redis).await;
        redis::cmd("SET")
            .arg("menu:daily:current")
            .arg(r#"{"a":1}"#)
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        let entry = l2.get("daily:current").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], br#"{"a":1}"#);
    }

    #[tokio::test]
    async fn remove_and_missing_key() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        assert!(l2.get("nothing").await.unwrap().is_none());
        l2.set("k", b"v", Duration::from_secs(10), 1).await.unwrap();
        assert!(l2.get("k").await.unwrap().is_some());
        l2.remove("k").await.unwrap();
        assert!(l2.get("k").await.unwrap().is_none());
        // The stamp stays a while, for loads that started before.
        let mut raw = raw(&redis).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(keys, ["p:hasivu:stamp:{p:k}"]);
        let left: i64 = redis::cmd("PTTL")
            .arg(&keys[0])
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!((1..=120_000).contains(&left), "{left}");
        assert!(
            !l2.set("k", b"old", Duration::from_secs(10), 0)
                .await
                .unwrap(),
            "a load that started before the removal is refused"
        );
        // Removing a missing key is fine.
        l2.remove("k").await.unwrap();
    }

    /// How many times Redis ran each of `commands`, summed.
    async fn calls(redis: &RedisServer, commands: &[&str]) -> u64 {
        let mut raw = raw(redis).await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut raw)
            .await
            .unwrap();
        commands
            .iter()
            .map(|command| {
                let wanted = format!("cmdstat_{command}:calls=");
                info.lines()
                    .find_map(|line| line.strip_prefix(wanted.as_str()))
                    .and_then(|rest| rest.split(',').next())
                    .map_or(0, |n| n.parse::<u64>().unwrap())
            })
            .sum()
    }

    /// A value and its stamp are written in one atomic step and read in
    /// one transaction, so a reader cannot pair one write's value with
    /// another write's stamp (an old value with a new, valid stamp).
    #[tokio::test]
    async fn a_value_and_its_stamp_are_read_and_written_atomically() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        let atomic = ["exec", "eval", "evalsha"];
        // The first write loads the script.
        l2.set("k", b"v", Duration::from_secs(60), 7).await.unwrap();
        let before = calls(&redis, &atomic).await;
        l2.set("k", b"v", Duration::from_secs(60), 7).await.unwrap();
        let written = calls(&redis, &atomic).await;
        assert_eq!(written - before, 1, "the write is not one atomic step");
        let entry = l2.get("k").await.unwrap().unwrap();
        assert_eq!((&entry.value[..], entry.stamp), (&b"v"[..], 7));
        let read = calls(&redis, &atomic).await;
        assert_eq!(read - written, 1, "the read is not one transaction");
    }

    #[tokio::test]
    async fn tiny_ttl_is_accepted_and_expires() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        l2.set("k", b"v", Duration::ZERO, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(l2.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn error_reply_does_not_trip_the_breaker() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        let mut raw = raw(&redis).await;
        redis::cmd("LPUSH")
            .arg("p:list")
            .arg("x")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        for _ in 0..THRESHOLD + 1 {
            let err = l2.get("list").await.unwrap_err();
            assert!(matches!(err, L2Error::Redis(_)), "{err:?}");
        }
        assert_eq!(l2.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn builds_while_redis_is_down_and_connects_later() {
        let mut redis = RedisServer::start();
        redis.stop();
        let l2 = l2(&redis, "p:");
        assert!(l2.get("k").await.is_err());
        redis.start_again();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match l2.set("k", b"v", Duration::from_secs(10), 0).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no reconnect: {e}"),
            }
        }
        assert_eq!(&l2.get("k").await.unwrap().unwrap().value[..], b"v");
    }

    #[tokio::test]
    async fn outage_opens_the_breaker_and_recovery_closes_it() {
        let mut redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        l2.set("k", b"v", Duration::from_secs(60), 0).await.unwrap();

        redis.stop();
        for _ in 0..THRESHOLD {
            let started = Instant::now();
            let err = l2.get("k").await.unwrap_err();
            assert!(
                matches!(err, L2Error::Redis(_) | L2Error::Timeout(_)),
                "{err:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2), "slow failure");
        }
        assert_eq!(l2.breaker_state(), BreakerState::Open);
        let started = Instant::now();
        assert!(matches!(
            l2.set("k", b"v", Duration::from_secs(1), 0).await,
            Err(L2Error::Unavailable)
        ));
        assert!(matches!(l2.remove("k").await, Err(L2Error::Unavailable)));
        assert!(started.elapsed() < Duration::from_millis(50));

        redis.start_again();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            tokio::time::sleep(OPEN_FOR).await;
            match l2.set("k", b"again", Duration::from_secs(60), 0).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                }
                Err(e) => panic!("no recovery: {e}"),
            }
        }
        assert_eq!(l2.breaker_state(), BreakerState::Closed);
        let entry = l2.get("k").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"again");
    }

    #[tokio::test]
    async fn hung_redis_times_out() {
        let redis = RedisServer::start();
        let l2 = l2(&redis, "p:");
        l2.set("k", b"v", Duration::from_secs(60), 0).await.unwrap();
        // Redis holds every client's commands for a second: a hang, not a
        // refused connection.
        let mut raw = raw(&redis).await;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1000)
            .arg("ALL")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        let started = Instant::now();
        let err = l2.get("k").await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, L2Error::Timeout(TIMEOUT)), "{err:?}");
        assert!(
            elapsed >= TIMEOUT && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert_eq!(l2.breaker_state(), BreakerState::Closed, "one failure");
    }

    /// A connection that stops answering without closing (half-open TCP)
    /// raises no error the `redis` client acts on: it is given up after a
    /// timeout, so once the network heals the next calls succeed.
    #[tokio::test]
    async fn a_connection_that_stopped_answering_is_replaced() {
        let redis = RedisServer::start();
        let proxy = hasivu_testkit::FaultProxy::start(redis.addr());
        let l2 = RedisL2::new(
            &proxy.redis_url(),
            "p:",
            TIMEOUT,
            Breaker::new(THRESHOLD, OPEN_FOR),
        )
        .unwrap();
        l2.set("k", b"v", Duration::from_secs(60), 0).await.unwrap();

        proxy.half_open();
        let err = l2.get("k").await.unwrap_err();
        assert!(matches!(err, L2Error::Timeout(_)), "{err:?}");
        // The connection in use stays dead after healing; new ones work.
        proxy.heal();
        let entry = l2.get("k").await.expect("a fresh connection answers");
        assert_eq!(&entry.unwrap().value[..], b"v");
        assert_eq!(l2.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn pttl_replies() {
        assert_eq!(remaining_ttl(-1), None);
        assert_eq!(remaining_ttl(-2), Some(Duration::ZERO));
        assert_eq!(remaining_ttl(1500), Some(Duration::from_millis(1500)));
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        let result = RedisL2::new(
            "redis://127.0.0.1:1/",
            "",
            TIMEOUT,
            Breaker::new(1, OPEN_FOR),
        );
        assert!(result.is_err());
    }
}
