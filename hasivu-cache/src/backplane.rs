//! The backplane: Redis pub/sub messages that keep every instance's L1 in
//! step with the writes and invalidations of the others.
//!
//! A message is small JSON: the operation, the keys or prefixes, the
//! generation of a prefix invalidation, the origin instance and the time.
//! An instance ignores its own. On a cluster the channel is sharded
//! (`SSUBSCRIBE`/`SPUBLISH`), so one shard carries it instead of every
//! node.
//!
//! Pub/sub loses what is published while a subscriber is away. So when the
//! subscription drops, the instance stops reading L2 (its L1 goes on
//! serving, within each entry's L1 TTL, which bounds how stale an entry can
//! get while Redis is unreachable); once subscribed again, it replays its
//! own invalidations that could not reach Redis, re-reads the generations
//! and flushes L1, and loads that started before the flush do not store
//! their values. No stale entry survives a missed message.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use redis::{PushInfo, PushKind, RedisResult, Value, aio::ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc::UnboundedReceiver};

pub(crate) use crate::message::{Message, now_ms};
use crate::{error::BoxError, keys, l2::L2Error};

/// What the subscriber drives in the cache.
pub(crate) trait Target: Send + Sync + 'static {
    /// Applies a message from another instance.
    fn apply(&self, message: Message) -> BoxFuture<'_, ()>;
    /// The subscription is back: replay, re-read, flush.
    fn resync(&self) -> BoxFuture<'_, Result<(), L2Error>>;
    /// Retries invalidations and announcements that could not reach Redis
    /// (the data connection can fail while the subscription stays up).
    fn retry(&self) -> BoxFuture<'_, ()>;
}

/// How often queued invalidations are retried while subscribed.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The state before the first sync (0: the `Default`).
#[allow(dead_code)]
const STARTING: u8 = 0;
const SYNCED: u8 = 1;
const DOWN: u8 = 2;

/// Whether L2 entries can be trusted: only while subscribed and in sync.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    state: AtomicU8,
    synced: Notify,
}

impl SyncState {
    /// Waits up to `wait` for the first sync after start; afterwards
    /// answers at once.
    pub(crate) async fn ready(&self, wait: Duration) -> bool {
        match self.state.load(Ordering::Acquire) {
            SYNCED => true,
            DOWN => false,
            _ => {
                let notified = self.synced.notified();
                if self.state.load(Ordering::Acquire) == SYNCED {
                    return true;
                }
                let _ = tokio::time::timeout(wait, notified).await;
                self.state.load(Ordering::Acquire) == SYNCED
            }
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        if state == SYNCED {
            self.synced.notify_waiters();
        }
    }

    /// Whether the backplane is subscribed and in sync.
    pub(crate) fn is_synced(&self) -> bool {
        self.state.load(Ordering::Acquire) == SYNCED
    }
}

/// Where to subscribe.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Single(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

/// A subscribing connection that reconnects and resubscribes by itself.
enum Subscriber {
    Single(redis::aio::ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        conn: Option<redis::cluster_async::ClusterConnection>,
    },
}

impl Subscriber {
    fn new(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<(Self, UnboundedReceiver<PushInfo>), BoxError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = match endpoint {
            Endpoint::Single(url) => {
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))?;
                let config = ConnectionManagerConfig::new()
                    .set_push_sender(tx)
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(timeout);
                Subscriber::Single(redis::aio::ConnectionManager::new_lazy_with_config(
                    client, config,
                )?)
            }
            #[cfg(feature = "cluster")]
            Endpoint::Cluster(urls) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(tx)
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .build()?;
                Subscriber::Cluster {
                    client: Box::new(client),
                    conn: None,
                }
            }
        };
        Ok((subscriber, rx))
    }

    /// Subscribes (again); also how the connection is remade after a loss.
    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Subscriber::Single(manager) => manager.subscribe(channel).await,
            #[cfg(feature = "cluster")]
            Subscriber::Cluster { client, conn } => {
                if conn.is_none() {
                    *conn = Some(client.get_async_connection().await?);
                }
                let Some(connection) = conn.as_mut() else {
                    unreachable!("set above");
                };
                let result = connection.ssubscribe(channel).await;
                if result.is_err() {
                    *conn = None;
                }
                result
            }
        }
    }
}

/// Aborts the subscriber task when the cache goes away.
#[derive(Debug)]
pub(crate) struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the subscriber task for `target`.
pub(crate) fn spawn(
    endpoint: &Endpoint,
    prefix: &str,
    timeout: Duration,
    state: Arc<SyncState>,
    target: Weak<dyn Target>,
) -> Result<TaskGuard, BoxError> {
    let (subscriber, rx) = Subscriber::new(endpoint, timeout)?;
    let channel = keys::channel(prefix);
    Ok(TaskGuard(tokio::spawn(run(
        subscriber, rx, channel, timeout, state, target,
    ))))
}

async fn run(
    mut subscriber: Subscriber,
    mut rx: UnboundedReceiver<PushInfo>,
    channel: String,
    timeout: Duration,
    state: Arc<SyncState>,
    target: Weak<dyn Target>,
) {
    let mut backoff = Backoff::new();
    loop {
        // Subscribed before the resync reads anything, so nothing published
        // after the read can be missed.
        match tokio::time::timeout(timeout, subscriber.subscribe(&channel)).await {
            Ok(Ok(())) => {}
            outcome => {
                tracing::debug!(?outcome, "backplane subscribe failed");
                state.set(DOWN);
                backoff.sleep().await;
                continue;
            }
        }
        let Some(cache) = target.upgrade() else {
            return;
        };
        if let Err(error) = cache.resync().await {
            tracing::warn!(%error, "backplane resync failed");
            state.set(DOWN);
            drop(cache);
            backoff.sleep().await;
            continue;
        }
        drop(cache);
        backoff.reset();
        state.set(SYNCED);
        tracing::debug!(channel, "backplane subscribed and in sync");
        // Receive until the connection drops.
        let mut retried = tokio::time::Instant::now();
        loop {
            let wait = RETRY_EVERY.saturating_sub(retried.elapsed());
            let received = tokio::time::timeout(wait, rx.recv()).await;
            let Some(cache) = target.upgrade() else {
                return;
            };
            if retried.elapsed() >= RETRY_EVERY {
                cache.retry().await;
                retried = tokio::time::Instant::now();
            }
            let push = match received {
                Ok(Some(push)) => push,
                Ok(None) => return,
                Err(_quiet) => continue,
            };
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    if let Some(message) = parse(&push.data) {
                        metrics::counter!("hasivu_cache_backplane_messages_total", "direction" => "received")
                            .increment(1);
                        let delay = now_ms().saturating_sub(message.sent_ms);
                        metrics::histogram!("hasivu_cache_backplane_delay_seconds")
                            .record(Duration::from_millis(delay).as_secs_f64());
                        cache.apply(message).await;
                    }
                }
                PushKind::Disconnection => {
                    // L1 keeps serving (within its TTL) through the outage;
                    // it is flushed once the subscription is back.
                    state.set(DOWN);
                    tracing::warn!("backplane connection lost: L2 unused until it is back");
                    break;
                }
                _ => {}
            }
        }
    }
}

/// The message in a pushed `[channel, payload]`.
fn parse(data: &[Value]) -> Option<Message> {
    let payload = match data.last()? {
        Value::BulkString(bytes) => bytes.as_slice(),
        Value::SimpleString(text) => text.as_bytes(),
        _ => return None,
    };
    match serde_json::from_slice(payload) {
        Ok(message) => Some(message),
        Err(error) => {
            tracing::warn!(%error, "ignored a malformed backplane message");
            None
        }
    }
}

/// Exponential backoff with jitter between reconnection attempts: 50 ms
/// doubling to 2 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    async fn sleep(&mut self) {
        let jitter = self.0.mul_f64(fastrand::f64() * 0.5);
        tokio::time::sleep(self.0 + jitter).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Op;

    #[test]
    fn messages_are_small_json() {
        let message = Message {
            op: Op::Invalidate,
            keys: vec![],
            prefixes: vec!["user:".into(), "auth:sessions:".into()],
            generation: 42,
            origin: 7,
            sent_ms: 1_764_000_000_000,
        };
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(
            json,
            r#"{"op":"invalidate","p":["user:","auth:sessions:"],"g":42,"o":7,"t":1764000000000}"#
        );
        let back = parse(&[
            Value::BulkString(b"chan".to_vec()),
            Value::BulkString(json.into_bytes()),
        ]);
        assert_eq!(back, Some(message));
        let set = Message {
            op: Op::Set,
            keys: vec!["menu:daily:current".into()],
            prefixes: vec![],
            generation: 0,
            origin: 1,
            sent_ms: 2,
        };
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"{"op":"set","k":["menu:daily:current"],"o":1,"t":2}"#
        );
        assert_eq!(parse(&[Value::BulkString(b"not json".to_vec())]), None);
        assert_eq!(parse(&[]), None);
    }
}
