//! The connection to Redis, and the one way calls reach it: through the
//! circuit breaker and the per-call timeout, with metrics and throttled
//! warnings.

use std::{
    future::Future,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Histogram};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};

use crate::{
    Error,
    store::breaker::{Breaker, BreakerState},
};

/// Retries of one connection attempt inside the connection manager. Few,
/// because every call is bounded by our own timeout anyway and the breaker
/// decides when to try again.
const CONNECT_RETRIES: usize = 2;

/// At most one warning per this period; the others are counted and
/// reported with the next one.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection to one server or to a cluster; both reconnect by themselves.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
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

/// Makes connections: the first one, and a fresh one each time the
/// current one is given up.
#[derive(Clone)]
pub(super) enum Connector {
    Single(redis::Client, ConnectionManagerConfig),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster::ClusterClient, redis::cluster::ClusterConfig),
}

impl Connector {
    /// Connects lazily to one server: building succeeds while Redis is
    /// down, and calls fail (feeding the breaker) until it is back.
    pub(super) fn single(url: &str, timeout: Duration) -> Result<Self, Error> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(timeout);
        Ok(Connector::Single(client, config))
    }

    /// Connects lazily to a Redis Cluster reached through any of `urls`.
    #[cfg(feature = "cluster")]
    pub(super) fn cluster(urls: &[String], timeout: Duration) -> Result<Self, Error> {
        let client = redis::cluster::ClusterClient::new(urls.iter().map(String::as_str))?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        Ok(Connector::Cluster(client, config))
    }

    /// A new connection, made in the background on first use.
    fn connect(&self) -> Result<Connection, Error> {
        Ok(match self {
            Connector::Single(client, config) => Connection::Single(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            ),
            #[cfg(feature = "cluster")]
            Connector::Cluster(client, config) => {
                Connection::Cluster(client.get_pending_async_connection_with_config(config.clone()))
            }
        })
    }
}

/// The connection in use, replaceable.
///
/// The `redis` client reconnects when a connection closes or errors, but
/// not when one simply stops answering: a peer gone without a FIN or an RST
/// (a half-open TCP connection, a NAT or firewall that dropped the flow)
/// leaves every command on it to time out, forever. So the owner gives a
/// connection up after timeouts ([`replace`](Self::replace)) and the next
/// call connects afresh. Calls under way keep their clone of the old one.
pub(super) struct Link {
    connector: Connector,
    /// The generation of the connection (bumped by each replacement) and
    /// the connection.
    current: Mutex<(u64, Connection)>,
}

impl Link {
    /// A link whose first connection is made on first use.
    pub(super) fn new(connector: Connector) -> Result<Self, Error> {
        let conn = connector.connect()?;
        Ok(Self {
            connector,
            current: Mutex::new((0, conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (u64, Connection)> {
        // Every update is one assignment: a poisoned lock holds a valid value.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection in use and its generation.
    pub(super) fn get(&self) -> (u64, Connection) {
        let current = self.lock();
        (current.0, current.1.clone())
    }

    /// Gives up the connection of `generation` for a new one, unless it
    /// was already replaced (concurrent calls that timed out on the same
    /// connection replace it once). Whether it was replaced.
    pub(super) fn replace(&self, generation: u64) -> bool {
        let mut current = self.lock();
        if current.0 != generation {
            return false;
        }
        match self.connector.connect() {
            Ok(conn) => {
                *current = (generation.wrapping_add(1), conn);
                true
            }
            // Only a configuration error, which the first connection would
            // have met already: keep the one we have.
            Err(_) => false,
        }
    }
}

/// Why a call did not produce a reply.
#[derive(Debug)]
pub(super) enum CallError {
    /// The breaker is open: Redis was not called.
    Unavailable,
    /// No answer within the timeout.
    Timeout,
    /// Redis or the connection failed, or the reply made no sense.
    Failed,
}

/// The connection with its breaker, timeout and metrics.
pub(super) struct Client {
    link: Link,
    timeout: Duration,
    breaker: Breaker,
    latency: Histogram,
    unavailable: Counter,
    timeouts: Counter,
    connection_errors: Counter,
    reply_errors: Counter,
    log: LogThrottle,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conn = match self.link.connector {
            Connector::Single(..) => "single",
            #[cfg(feature = "cluster")]
            Connector::Cluster(..) => "cluster",
        };
        f.debug_struct("Client")
            .field("conn", &conn)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(super) fn new(link: Link, timeout: Duration, breaker: Breaker) -> Self {
        let errors = |kind: &'static str| metrics::counter!("hasivu_ratelimit_redis_errors_total", "kind" => kind);
        Self {
            link,
            timeout,
            breaker,
            latency: metrics::histogram!("hasivu_ratelimit_redis_seconds"),
            unavailable: errors("unavailable"),
            timeouts: errors("timeout"),
            connection_errors: errors("connection"),
            reply_errors: errors("reply"),
            log: LogThrottle::default(),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub(super) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one Redis call through the breaker and the timeout, records its
    /// outcome and latency, and converts its reply with `convert` (a reply
    /// that does not convert counts as a failed call, not as an outage).
    pub(super) async fn call<R, T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
        convert: impl FnOnce(R) -> Result<T, String>,
    ) -> Result<T, CallError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<R>>,
    {
        if !self.breaker.allow() {
            self.unavailable.increment(1);
            if let Some(suppressed) = self.log.ready() {
                tracing::warn!(op, suppressed, "redis unavailable (circuit breaker open)");
            }
            return Err(CallError::Unavailable);
        }
        let guard = Abandon(Some(&self.breaker));
        let (generation, conn) = self.link.get();
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, f(conn)).await;
        guard.defuse();
        self.latency.record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(reply)) => {
                self.breaker.success();
                convert(reply).map_err(|problem| {
                    self.reply_errors.increment(1);
                    if let Some(suppressed) = self.log.ready() {
                        tracing::warn!(op, problem, suppressed, "unexpected reply from redis");
                    }
                    CallError::Failed
                })
            }
            // The connection's own response timeout (the same duration) may
            // fire first; report it like ours.
            Ok(Err(error)) if error.is_timeout() => Err(self.timed_out(op, generation)),
            Err(_elapsed) => Err(self.timed_out(op, generation)),
            Ok(Err(error)) => {
                if is_outage(&error) {
                    self.failed(generation);
                    self.connection_errors.increment(1);
                } else {
                    // Redis answered, so it is reachable: an error reply says
                    // nothing about its health.
                    self.breaker.success();
                    self.reply_errors.increment(1);
                }
                if let Some(suppressed) = self.log.ready() {
                    tracing::warn!(op, error = %error, suppressed, "redis call failed");
                }
                Err(CallError::Failed)
            }
        }
    }

    /// Counts a failed call on the connection of `generation`. When that
    /// opens the breaker, the connection is given up: one that stopped
    /// answering without closing would otherwise fail every probe, and
    /// Redis would never be used again. The probe after the open period
    /// connects afresh.
    fn failed(&self, generation: u64) {
        self.breaker.failure();
        if self.breaker.state() == BreakerState::Open && self.link.replace(generation) {
            tracing::debug!("redis connection replaced after repeated failures");
        }
    }

    fn timed_out(&self, op: &'static str, generation: u64) -> CallError {
        self.failed(generation);
        self.timeouts.increment(1);
        if let Some(suppressed) = self.log.ready() {
            tracing::warn!(op, timeout = ?self.timeout, suppressed, "redis call timed out");
        }
        CallError::Timeout
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

/// Lets one warning through per [`LOG_EVERY`], so an outage under heavy
/// traffic does not flood the logs.
#[derive(Debug)]
struct LogThrottle {
    start: std::time::Instant,
    /// Milliseconds since `start` before which nothing is logged.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self {
            start: std::time::Instant::now(),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogThrottle {
    /// `Some(warnings suppressed since the last one)` when a warning may be
    /// logged now.
    fn ready(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        let period = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next
                .compare_exchange(next, now + period, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period() {
        let log = LogThrottle::default();
        assert_eq!(log.ready(), Some(0));
        assert_eq!(log.ready(), None);
        assert_eq!(log.ready(), None);
        // The period has not passed; pretend it has.
        log.next.store(0, Ordering::Relaxed);
        assert_eq!(log.ready(), Some(2), "reports what it held back");
    }

    #[test]
    fn error_replies_are_not_outages() {
        let reply = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!is_outage(&reply));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_outage(&io));
    }
}
