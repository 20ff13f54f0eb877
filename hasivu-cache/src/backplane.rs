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
//! subscription is lost, the instance stops reading L2 (its L1 goes on
//! serving, within each entry's L1 TTL, which bounds how stale an entry can
//! get while Redis is unreachable); once subscribed again, it replays its
//! own invalidations that could not reach Redis, re-reads the generations
//! and flushes L1, and loads that started before the flush do not store
//! their values. No stale entry survives a missed message.
//!
//! A subscription can be lost without the socket closing, so closing is not
//! the only sign watched for:
//!
//! - an unsolicited `unsubscribe`/`sunsubscribe` push for the channel (a
//!   cluster drops its shard subscribers when the channel's slot moves or
//!   its master is demoted, and keeps their connections open);
//! - silence: a `PING` goes over the subscribing connection every
//!   [`Heartbeat::every`]; when nothing (answer or message) has come back
//!   for [`Heartbeat::down_after`], the connection is taken for dead (a
//!   half-open TCP connection never errors by itself);
//! - a full queue: pushes wait for the subscriber task in a queue of
//!   [`QUEUE`] entries; a flood that overflows it has cost messages.
//!
//! Each is a loss: the instance goes down, drops the connection, makes a
//! new one, subscribes and resyncs. Messages received before the loss are
//! still applied (after an overflow, only the one being applied: the
//! resync covers the rest). The resync (which may replay thousands of
//! invalidations) and the periodic retry run in a task of their own, so
//! the subscriber keeps applying messages meanwhile; a message applied
//! before the resync's flush is flushed with the rest, which is safe.

use std::{
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use redis::{
    PushInfo, PushKind, RedisResult, Value,
    aio::{AsyncPushSender, SendError},
};
use tokio::{
    sync::{
        Notify,
        mpsc::{self, Receiver, error::TrySendError},
    },
    task::JoinHandle,
    time::Instant,
};

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

/// The most pushes waiting for the subscriber task. Past it, pushes are
/// dropped and the instance resyncs (which covers everything dropped)
/// instead of holding a flood in memory.
pub(crate) const QUEUE: usize = 4096;

/// How the subscriber checks that its connection still delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// How often a `PING` is sent over the subscribing connection.
    pub(crate) every: Duration,
    /// Silence (no answer, no message) after which the connection is taken
    /// for dead: the bound on detecting a silent subscriber.
    pub(crate) down_after: Duration,
}

impl Heartbeat {
    /// A `PING` every second, down after three seconds of silence.
    pub(crate) const DEFAULT: Self = Self {
        every: Duration::from_secs(1),
        down_after: Duration::from_secs(3),
    };
    /// The shortest interval: anything shorter is a busy loop.
    const MIN_EVERY: Duration = Duration::from_millis(10);

    /// `every` of at least 10 ms; `down_after` of at least twice `every`,
    /// so that one late answer is not taken for a dead connection.
    pub(crate) fn new(every: Duration, down_after: Duration) -> Self {
        let every = every.max(Self::MIN_EVERY);
        Self {
            every,
            down_after: down_after.max(every.saturating_mul(2)),
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The state before the first sync (0: the `Default`).
#[allow(dead_code)]
const STARTING: u8 = 0;
const SYNCED: u8 = 1;
const DOWN: u8 = 2;

/// Why a subscription was taken for lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The connection closed or failed.
    Disconnected = 1,
    /// The server unsubscribed the connection by itself (a cluster slot
    /// moved, a master was demoted).
    Unsubscribed = 2,
    /// Nothing came back for the heartbeat's bound (half-open connection),
    /// or the connection answered out of step.
    Heartbeat = 3,
    /// The queue of pushes overflowed.
    Overflow = 4,
}

impl Loss {
    const ALL: [Loss; 4] = [
        Loss::Disconnected,
        Loss::Unsubscribed,
        Loss::Heartbeat,
        Loss::Overflow,
    ];

    /// The `reason` label of `hasivu_cache_backplane_losses_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Loss::Disconnected => "disconnected",
            Loss::Unsubscribed => "unsubscribed",
            Loss::Heartbeat => "heartbeat",
            Loss::Overflow => "overflow",
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|loss| *loss as u8 == n)
    }

    fn index(self) -> usize {
        self as usize - 1
    }
}

/// Whether L2 entries can be trusted: only while subscribed and in sync.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    state: AtomicU8,
    synced: Notify,
    /// Losses since start, by [`Loss`].
    losses: [AtomicU64; 4],
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

    /// Sets `state`; returns the state before.
    fn set(&self, state: u8) -> u8 {
        let before = self.state.swap(state, Ordering::AcqRel);
        if state == SYNCED {
            self.synced.notify_waiters();
        }
        before
    }

    /// Whether the backplane is subscribed and in sync.
    pub(crate) fn is_synced(&self) -> bool {
        self.state.load(Ordering::Acquire) == SYNCED
    }

    /// How many times the subscription was lost for `loss` since start.
    #[cfg_attr(not(test), allow(dead_code))] // the metric is what services read
    pub(crate) fn losses(&self, loss: Loss) -> u64 {
        self.losses[loss.index()].load(Ordering::Relaxed)
    }

    /// Goes down after `loss`: counted each time, logged at `warn` only
    /// when it ends a synced period (a loss while already down, such as a
    /// failed reconnection, is not news).
    fn lost(&self, loss: Loss) {
        self.losses[loss.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("hasivu_cache_backplane_losses_total", "reason" => loss.label())
            .increment(1);
        if self.set(DOWN) == SYNCED {
            tracing::warn!(
                reason = loss.label(),
                "backplane subscription lost: L2 unused until subscribed again and resynced"
            );
        } else {
            tracing::debug!(reason = loss.label(), "backplane subscription lost again");
        }
    }
}

/// Where to subscribe.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Single(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

/// What the subscriber connects to; checked once, when the cache is built.
enum Source {
    Single(redis::Client),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

impl Source {
    fn new(endpoint: &Endpoint) -> Result<Self, BoxError> {
        Ok(match endpoint {
            Endpoint::Single(url) => {
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                Source::Single(redis::Client::open(info.set_redis_settings(settings))?)
            }
            #[cfg(feature = "cluster")]
            Endpoint::Cluster(urls) => {
                redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .build()?;
                Source::Cluster(urls.clone())
            }
        })
    }

    /// A new connection whose pushes go to `pushes`. Never a shared or
    /// reused one: a half-open connection must be dropped and remade.
    async fn connect(&self, pushes: PushQueue, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Source::Single(client) => {
                // No response timeout: silence is the heartbeat's to judge.
                let config = redis::AsyncConnectionConfig::new()
                    .set_push_sender(pushes)
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Single(conn))
            }
            #[cfg(feature = "cluster")]
            Source::Cluster(urls) => {
                // A new client each time: a fresh view of the slots, and
                // pushes of this connection only.
                let client =
                    redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(pushes)
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// One subscribing connection.
#[derive(Clone)]
enum Connection {
    Single(redis::aio::MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single(conn) => conn.subscribe(channel).await,
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    /// A `PING` over the connection that carries the subscription (RESP3
    /// allows commands on a subscribed connection); on a cluster, to the
    /// master of the channel's slot.
    fn ping(&self, channel: &str) -> BoxFuture<'static, RedisResult<Value>> {
        match self.clone() {
            Connection::Single(mut conn) => {
                let _ = channel;
                async move { redis::cmd("PING").query_async(&mut conn).await }.boxed()
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(mut conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(channel, SlotAddr::Master);
                async move {
                    conn.route_command(
                        redis::cmd("PING"),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
                }
                .boxed()
            }
        }
    }
}

/// What one connection's pushes tell the subscriber task besides its
/// messages: when the server was last heard from, and the first loss seen.
/// Updated by the connection's own task as pushes arrive, so a loss is
/// noticed while the subscriber task is busy.
#[derive(Debug)]
struct Link {
    channel: String,
    heard: std::sync::Mutex<Instant>,
    loss: AtomicU8,
    lost: Notify,
}

impl Link {
    fn new(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
            heard: std::sync::Mutex::new(Instant::now()),
            loss: AtomicU8::new(0),
            lost: Notify::new(),
        }
    }

    fn hear(&self) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn heard(&self) -> Instant {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `loss` unless one was recorded already.
    fn lose(&self, loss: Loss) {
        let _ = self
            .loss
            .compare_exchange(0, loss as u8, Ordering::AcqRel, Ordering::Acquire);
        self.lost.notify_one();
    }

    /// The first loss recorded, if any.
    fn loss(&self) -> Option<Loss> {
        Loss::from_u8(self.loss.load(Ordering::Acquire))
    }

    /// Resolves with the first loss.
    async fn lost(&self) -> Loss {
        loop {
            let notified = self.lost.notified();
            if let Some(loss) = self.loss() {
                return loss;
            }
            notified.await;
        }
    }

    /// Whether an unsubscribe push (`[channel, count]`) is about our
    /// channel; one naming no channel counts.
    fn is_ours(&self, data: &[Value]) -> bool {
        match data.first() {
            Some(Value::BulkString(name)) => name.as_slice() == self.channel.as_bytes(),
            Some(Value::SimpleString(name)) => *name == self.channel,
            _ => true,
        }
    }
}

/// The push sender of one connection: messages into a bounded queue,
/// losses straight to the [`Link`]. Never blocks the connection's task.
struct PushQueue {
    messages: mpsc::Sender<PushInfo>,
    link: Arc<Link>,
}

impl AsyncPushSender for PushQueue {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                self.link.hear();
                match self.messages.try_send(info) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => {
                        self.link.lose(Loss::Overflow);
                        Ok(())
                    }
                    Err(TrySendError::Closed(_)) => Err(SendError),
                }
            }
            // We never unsubscribe, so this one came from the server.
            PushKind::Unsubscribe | PushKind::SUnsubscribe if self.link.is_ours(&info.data) => {
                self.link.lose(Loss::Unsubscribed);
                Ok(())
            }
            PushKind::Disconnection => {
                self.link.lose(Loss::Disconnected);
                Ok(())
            }
            _ => {
                self.link.hear();
                Ok(())
            }
        }
    }
}

/// Aborts the subscriber task when the cache goes away.
#[derive(Debug)]
pub(crate) struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscriber's settings.
#[derive(Debug, Clone)]
struct Settings {
    channel: String,
    /// Bounds connecting and subscribing.
    timeout: Duration,
    heartbeat: Heartbeat,
    /// The bound of the push queue.
    queue: usize,
}

/// Starts the subscriber task for `target`.
pub(crate) fn spawn(
    endpoint: &Endpoint,
    prefix: &str,
    timeout: Duration,
    heartbeat: Heartbeat,
    state: Arc<SyncState>,
    target: Weak<dyn Target>,
) -> Result<TaskGuard, BoxError> {
    let settings = Settings {
        channel: keys::channel(prefix),
        timeout,
        heartbeat,
        queue: QUEUE,
    };
    let source = Source::new(endpoint)?;
    Ok(TaskGuard(tokio::spawn(run(
        source, settings, state, target,
    ))))
}

/// Why a session ended.
enum End {
    Lost(Loss),
    /// The cache was dropped.
    Gone,
}

async fn run(source: Source, settings: Settings, state: Arc<SyncState>, target: Weak<dyn Target>) {
    let mut backoff = Backoff::new();
    let mut work = Work::default();
    let mut session = 0_u64;
    loop {
        let (messages, rx) = mpsc::channel(settings.queue);
        let link = Arc::new(Link::new(&settings.channel));
        let pushes = PushQueue {
            messages,
            link: Arc::clone(&link),
        };
        // Subscribed before the resync reads anything, so nothing published
        // after the read can be missed.
        let connected = async {
            let mut conn = source.connect(pushes, settings.timeout).await?;
            conn.subscribe(&settings.channel).await?;
            RedisResult::Ok(conn)
        };
        let conn = match tokio::time::timeout(settings.timeout.saturating_mul(2), connected).await {
            Ok(Ok(conn)) => conn,
            outcome => {
                let error = outcome.map(|connected| connected.err());
                tracing::debug!(?error, "backplane subscribe failed");
                state.set(DOWN);
                backoff.sleep().await;
                continue;
            }
        };
        session += 1;
        let mut current = Session {
            id: session,
            conn,
            rx,
            link,
            settings: &settings,
            state: &state,
            target: &target,
            work: &mut work,
            backoff: &mut backoff,
            applying: None,
        };
        let end = current.run().await;
        let Session { rx, applying, .. } = current;
        match end {
            End::Gone => return,
            End::Lost(loss) => {
                state.lost(loss);
                // What was received still applies (it can only drop L1
                // entries), unless a flood is what ended the session; the
                // connection goes, and the next session starts from a new
                // one.
                if let Some(cache) = target.upgrade() {
                    let queued = (loss != Loss::Overflow).then_some(rx);
                    tokio::spawn(finish(cache, applying, queued));
                }
                backoff.sleep().await;
            }
        }
    }
}

/// Finishes the message being applied when a session ended, then applies
/// the ones still `queued`.
async fn finish(
    cache: Arc<dyn Target>,
    applying: Option<BoxFuture<'static, ()>>,
    queued: Option<Receiver<PushInfo>>,
) {
    if let Some(applying) = applying {
        applying.await;
    }
    let Some(mut rx) = queued else {
        return;
    };
    rx.close();
    while let Ok(push) = rx.try_recv() {
        if let Some(message) = received(&push) {
            cache.apply(message).await;
        }
    }
}

/// The message of a received push, counted.
fn received(push: &PushInfo) -> Option<Message> {
    let message = parse(&push.data)?;
    metrics::counter!("hasivu_cache_backplane_messages_total", "direction" => "received")
        .increment(1);
    let delay = now_ms().saturating_sub(message.sent_ms);
    metrics::histogram!("hasivu_cache_backplane_delay_seconds")
        .record(Duration::from_millis(delay).as_secs_f64());
    Some(message)
}

/// A resync or a retry, run in a task of its own so that messages keep
/// being applied meanwhile. Never cancelled: a replay cut in half would
/// lose what it had taken from the queue. At most one runs at a time,
/// across sessions.
#[derive(Default)]
struct Work {
    running: Option<(Job, JoinHandle<Result<(), L2Error>>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// The resync of the session with this id.
    Resync(u64),
    Retry,
}

impl Work {
    fn busy(&self) -> bool {
        self.running.is_some()
    }

    fn start(&mut self, job: Job, target: Arc<dyn Target>) {
        let task = tokio::spawn(async move {
            match job {
                Job::Resync(_) => target.resync().await,
                Job::Retry => {
                    target.retry().await;
                    Ok(())
                }
            }
        });
        self.running = Some((job, task));
    }

    /// Waits for the running job (forever when none runs).
    async fn finished(&mut self) -> (Job, Result<(), String>) {
        let Some((job, task)) = &mut self.running else {
            return std::future::pending().await;
        };
        let job = *job;
        let outcome = match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        self.running = None;
        (job, outcome)
    }
}

/// One subscribed connection, from the subscription to its loss.
struct Session<'a> {
    id: u64,
    conn: Connection,
    rx: Receiver<PushInfo>,
    link: Arc<Link>,
    settings: &'a Settings,
    state: &'a SyncState,
    target: &'a Weak<dyn Target>,
    work: &'a mut Work,
    backoff: &'a mut Backoff,
    /// The message being applied. Polled alongside the rest, so a slow
    /// apply does not hide a loss.
    applying: Option<BoxFuture<'static, ()>>,
}

impl Session<'_> {
    /// Ends the session for `loss`, or for what the pushes reported first
    /// (a push taken for the heartbeat's reply is also reported as a loss
    /// of its own).
    fn lost(&self, loss: Loss) -> End {
        End::Lost(self.link.loss().unwrap_or(loss))
    }

    async fn run(&mut self) -> End {
        let heartbeat = self.settings.heartbeat;
        // The subscription was just confirmed.
        self.link.hear();
        let now = Instant::now();
        let mut resync_wanted = true;
        let mut synced = false;
        let mut ping: Option<BoxFuture<'static, RedisResult<Value>>> = None;
        // Timers kept across iterations and re-armed when they fire, so a
        // stream of messages does not re-register them one by one.
        let silence = tokio::time::sleep_until(later(now, heartbeat.down_after));
        let ping_tick = tokio::time::sleep_until(later(now, heartbeat.every));
        let resync_timer = tokio::time::sleep_until(now);
        let retry_timer = tokio::time::sleep_until(now + RETRY_EVERY);
        tokio::pin!(silence, ping_tick, resync_timer, retry_timer);
        loop {
            tokio::select! {
                loss = self.link.lost() => return End::Lost(loss),
                () = &mut silence => {
                    let until = later(self.link.heard(), heartbeat.down_after);
                    if until <= Instant::now() {
                        return self.lost(Loss::Heartbeat);
                    }
                    silence.as_mut().reset(until);
                }
                push = self.rx.recv(), if self.applying.is_none() => {
                    // The connection's task dropped its sender: it ended.
                    let Some(push) = push else {
                        return self.lost(Loss::Disconnected);
                    };
                    if let Some(message) = received(&push) {
                        let Some(cache) = self.target.upgrade() else {
                            return End::Gone;
                        };
                        self.applying = Some(async move { cache.apply(message).await }.boxed());
                    }
                }
                () = poll_some(&mut self.applying) => self.applying = None,
                reply = poll_some(&mut ping) => {
                    ping = None;
                    match reply {
                        Ok(reply) if is_pong(&reply) => self.link.hear(),
                        // Replies out of step with requests (a push taken
                        // for a reply): start again on a clean connection.
                        Ok(reply) => {
                            tracing::debug!(?reply, "backplane heartbeat answered out of step");
                            return self.lost(Loss::Heartbeat);
                        }
                        Err(error) if error.is_unrecoverable_error() => {
                            return self.lost(Loss::Disconnected);
                        }
                        // A slow answer: silence is judged by its own timer.
                        Err(error) => tracing::debug!(%error, "backplane heartbeat failed"),
                    }
                }
                () = &mut ping_tick => {
                    ping_tick.as_mut().reset(later(Instant::now(), heartbeat.every));
                    // One at a time: an unanswered one is answer enough.
                    if ping.is_none() {
                        ping = Some(self.conn.ping(&self.settings.channel));
                    }
                }
                (job, outcome) = self.work.finished(), if self.work.busy() => {
                    match (job, outcome) {
                        (Job::Resync(id), Ok(())) if id == self.id => {
                            synced = true;
                            retry_timer.as_mut().reset(Instant::now() + RETRY_EVERY);
                            self.backoff.reset();
                            if self.state.set(SYNCED) == DOWN {
                                tracing::info!("backplane subscribed again and in sync");
                            } else {
                                tracing::debug!(channel = self.settings.channel, "backplane subscribed and in sync");
                            }
                        }
                        (Job::Resync(id), Err(error)) if id == self.id => {
                            tracing::warn!(%error, "backplane resync failed");
                            resync_wanted = true;
                            resync_timer.as_mut().reset(Instant::now() + self.backoff.next());
                        }
                        // A retry, or the resync of a lost session.
                        _ => {}
                    }
                }
                () = &mut resync_timer, if resync_wanted && !self.work.busy() => {
                    let Some(cache) = self.target.upgrade() else {
                        return End::Gone;
                    };
                    resync_wanted = false;
                    self.work.start(Job::Resync(self.id), cache);
                }
                () = &mut retry_timer, if synced && !self.work.busy() => {
                    let Some(cache) = self.target.upgrade() else {
                        return End::Gone;
                    };
                    retry_timer.as_mut().reset(Instant::now() + RETRY_EVERY);
                    self.work.start(Job::Retry, cache);
                }
            }
        }
    }
}

/// `at` + `duration`, saturating far in the future (durations come from
/// the application's settings and may be huge).
fn later(at: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    at.checked_add(duration.min(FAR)).unwrap_or(at)
}

/// Polls the future in `slot`; pending forever when there is none.
async fn poll_some<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

fn is_pong(reply: &Value) -> bool {
    match reply {
        Value::SimpleString(text) => text.eq_ignore_ascii_case("pong"),
        Value::BulkString(bytes) => bytes.eq_ignore_ascii_case(b"pong"),
        _ => false,
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

    /// The next delay.
    fn next(&mut self) -> Duration {
        let jitter = self.0.mul_f64(fastrand::f64() * 0.5);
        let delay = self.0 + jitter;
        self.0 = (self.0 * 2).min(Self::MAX);
        delay
    }

    async fn sleep(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use futures_util::FutureExt;
    use hasivu_testkit::RedisServer;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::message::Op;

    /// A [`Target`] that records what the backplane asks of it; its
    /// `apply` and `resync` wait at gates the test opens.
    struct Probe {
        applied: Mutex<Vec<Message>>,
        applies_started: AtomicUsize,
        resyncs_started: AtomicUsize,
        resyncs_done: AtomicUsize,
        apply_gate: Semaphore,
        resync_gate: Semaphore,
    }

    impl Probe {
        fn new(apply_open: bool, resync_open: bool) -> Arc<Self> {
            let permits = |open: bool| if open { Semaphore::MAX_PERMITS } else { 0 };
            Arc::new(Self {
                applied: Mutex::new(Vec::new()),
                applies_started: AtomicUsize::new(0),
                resyncs_started: AtomicUsize::new(0),
                resyncs_done: AtomicUsize::new(0),
                apply_gate: Semaphore::new(permits(apply_open)),
                resync_gate: Semaphore::new(permits(resync_open)),
            })
        }

        fn applied(&self) -> Vec<Message> {
            self.applied.lock().unwrap().clone()
        }
    }

    impl Target for Probe {
        fn apply(&self, message: Message) -> BoxFuture<'_, ()> {
            async move {
                self.applies_started.fetch_add(1, Ordering::SeqCst);
                let _open = self.apply_gate.acquire().await;
                self.applied.lock().unwrap().push(message);
            }
            .boxed()
        }

        fn resync(&self) -> BoxFuture<'_, Result<(), L2Error>> {
            async move {
                self.resyncs_started.fetch_add(1, Ordering::SeqCst);
                let _open = self.resync_gate.acquire().await;
                self.resyncs_done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            .boxed()
        }

        fn retry(&self) -> BoxFuture<'_, ()> {
            async {}.boxed()
        }
    }

    fn message(origin: u64, key: &str) -> Vec<u8> {
        serde_json::to_vec(&Message {
            op: Op::Set,
            keys: vec![key.to_owned()],
            prefixes: vec![],
            generation: 0,
            origin,
            sent_ms: now_ms(),
        })
        .unwrap()
    }

    async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Waits until `done` holds, polling every millisecond, for at most
    /// `limit`; panics with `what` otherwise.
    async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let started = tokio::time::Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn start(redis: &RedisServer, probe: &Arc<Probe>, state: &Arc<SyncState>) -> TaskGuard {
        start_at(redis.url(), Heartbeat::DEFAULT, probe, state)
    }

    fn start_at(
        url: String,
        heartbeat: Heartbeat,
        probe: &Arc<Probe>,
        state: &Arc<SyncState>,
    ) -> TaskGuard {
        let target: Weak<dyn Target> = Arc::downgrade(probe) as _;
        spawn(
            &Endpoint::Single(url),
            "",
            Duration::from_millis(500),
            heartbeat,
            Arc::clone(state),
            target,
        )
        .unwrap()
    }

    /// One command to one node, not through a cluster client.
    #[cfg(feature = "cluster")]
    async fn node<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    #[cfg(feature = "cluster")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sunsubscribe_push_is_counted_once_and_resubscribed() {
        let cluster = hasivu_testkit::RedisCluster::start();
        let urls = cluster.urls();
        let probe = Probe::new(true, true);
        let state = Arc::new(SyncState::default());
        let target: Weak<dyn Target> = Arc::downgrade(&probe) as _;
        let _task = spawn(
            &Endpoint::Cluster(urls.clone()),
            "",
            Duration::from_millis(500),
            Heartbeat::DEFAULT,
            Arc::clone(&state),
            target,
        )
        .unwrap();
        eventually(Duration::from_secs(10), "first sync", || state.is_synced()).await;

        // Move the channel's slot to the next master.
        let channel = keys::channel("");
        let slot: i64 = node(&urls[0], &["CLUSTER", "KEYSLOT", &channel]).await;
        let from = usize::try_from(slot / 5461).unwrap().min(2);
        let to = (from + 1) % 3;
        let slot = slot.to_string();
        let from_id: String = node(&urls[from], &["CLUSTER", "MYID"]).await;
        let to_id: String = node(&urls[to], &["CLUSTER", "MYID"]).await;
        let () = node(
            &urls[to],
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        )
        .await;
        let () = node(
            &urls[from],
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        )
        .await;
        for url in [&urls[to], &urls[from], &urls[3 - from - to]] {
            let () = node(url, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await;
        }

        eventually(Duration::from_secs(10), "resynced after the move", || {
            probe.resyncs_done.load(Ordering::SeqCst) == 2 && state.is_synced()
        })
        .await;
        assert_eq!(state.losses(Loss::Unsubscribed), 1);
        assert_eq!(state.losses(Loss::Heartbeat), 0);
        let (_, subscribers): (String, i64) =
            node(&urls[to], &["PUBSUB", "SHARDNUMSUB", &channel]).await;
        assert_eq!(subscribers, 1, "subscribed on the slot's new master");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswered_heartbeat_is_one_loss_and_a_new_connection() {
        let redis = RedisServer::start();
        let proxy = hasivu_testkit::FaultProxy::start(redis.addr());
        let probe = Probe::new(true, true);
        let state = Arc::new(SyncState::default());
        let heartbeat = Heartbeat::new(Duration::from_millis(50), Duration::from_millis(300));
        let _task = start_at(proxy.redis_url(), heartbeat, &probe, &state);
        eventually(Duration::from_secs(5), "first sync", || state.is_synced()).await;
        let connections = proxy.accepted_connections();

        // Quiet is not silence: the heartbeat keeps a healthy idle
        // connection in sync.
        let quiet = tokio::time::Instant::now();
        while quiet.elapsed() < heartbeat.down_after * 3 {
            assert!(state.is_synced(), "a healthy connection was taken for dead");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state.losses(Loss::Heartbeat), 0);

        proxy.half_open();
        eventually(Duration::from_secs(5), "the silence noticed", || {
            !state.is_synced()
        })
        .await;
        // Reconnecting through a dead network fails without counting (or
        // logging) the same loss again.
        eventually(Duration::from_secs(5), "a reconnection attempted", || {
            proxy.accepted_connections() > connections
        })
        .await;
        proxy.heal();
        eventually(Duration::from_secs(10), "in sync again", || {
            state.is_synced()
        })
        .await;
        assert_eq!(state.losses(Loss::Heartbeat), 1);
        assert_eq!(probe.resyncs_done.load(Ordering::SeqCst), 2);

        // On the new connection, messages flow.
        let mut conn = raw(&redis).await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys::channel(""))
            .arg(message(7, "after"))
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually(Duration::from_secs(5), "a message after the fault", || {
            probe.applied().iter().any(|m| m.keys == ["after"])
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_are_applied_while_a_resync_runs() {
        let redis = RedisServer::start();
        // The resync (a long replay, say) does not finish until the test
        // lets it.
        let probe = Probe::new(true, false);
        let state = Arc::new(SyncState::default());
        let _task = start(&redis, &probe, &state);
        eventually(Duration::from_secs(5), "resync started", || {
            probe.resyncs_started.load(Ordering::SeqCst) == 1
        })
        .await;

        // Another instance announces a write while the resync runs.
        let mut conn = raw(&redis).await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys::channel(""))
            .arg(message(7, "menu:daily:current"))
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually(
            Duration::from_secs(5),
            "a message applied during the resync",
            || probe.applied().len() == 1,
        )
        .await;
        assert_eq!(probe.applied()[0].keys, ["menu:daily:current"]);
        assert_eq!(probe.resyncs_done.load(Ordering::SeqCst), 0);
        assert!(
            !state.is_synced(),
            "L2 is not trusted before the resync ends"
        );

        probe.resync_gate.add_permits(1);
        eventually(Duration::from_secs(5), "synced after the resync", || {
            state.is_synced()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_overflows_the_bounded_queue_into_one_resync() {
        let redis = RedisServer::start();
        // `apply` does not return until the test lets it: everything pushed
        // meanwhile waits in the queue.
        let probe = Probe::new(false, true);
        let state = Arc::new(SyncState::default());
        let _task = start(&redis, &probe, &state);
        eventually(Duration::from_secs(5), "first sync", || state.is_synced()).await;

        let flood = 3 * QUEUE;
        let mut pipe = redis::pipe();
        for i in 0..flood {
            pipe.cmd("PUBLISH")
                .arg(keys::channel(""))
                .arg(message(7, &format!("k{i}")))
                .ignore();
        }
        let mut conn = raw(&redis).await;
        pipe.query_async::<()>(&mut conn).await.unwrap();

        // The queue overflows: the instance goes down and resyncs once,
        // instead of holding every message.
        eventually(
            Duration::from_secs(10),
            "one resync after the flood",
            || probe.resyncs_done.load(Ordering::SeqCst) == 2 && state.is_synced(),
        )
        .await;
        let started = probe.applies_started.load(Ordering::SeqCst);
        assert!(
            started <= QUEUE + 1,
            "{started} of {flood} messages were held for applying"
        );
        assert_eq!(
            state.losses(Loss::Overflow),
            1,
            "one loss, not one per message"
        );

        // The backplane works on afterwards.
        probe.apply_gate.add_permits(Semaphore::MAX_PERMITS);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys::channel(""))
            .arg(message(7, "after"))
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually(Duration::from_secs(5), "a message after the flood", || {
            probe.applied().iter().any(|m| m.keys == ["after"])
        })
        .await;
    }

    #[test]
    fn the_heartbeat_is_bounded_below() {
        assert_eq!(
            Heartbeat::default(),
            Heartbeat::new(Duration::from_secs(1), Duration::from_secs(3))
        );
        let tight = Heartbeat::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(tight.every, Duration::from_millis(10));
        assert_eq!(tight.down_after, Duration::from_millis(20));
        let late = Heartbeat::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(late.down_after, Duration::from_secs(4));
        let huge = Heartbeat::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.down_after, Duration::MAX);
        let now = Instant::now();
        assert!(later(now, huge.every) > now + Duration::from_secs(86_400));
    }

    fn push(kind: PushKind, channel: &str) -> PushInfo {
        PushInfo {
            kind,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(b"{}".to_vec()),
            ],
        }
    }

    #[tokio::test]
    async fn pushes_are_queued_up_to_the_bound_and_losses_bypass_the_queue() {
        let link = Arc::new(Link::new("hasivu:backplane"));
        let (messages, mut rx) = mpsc::channel(2);
        let pushes = PushQueue {
            messages,
            link: Arc::clone(&link),
        };
        // Confirmations and other channels' unsubscriptions are no loss.
        for info in [
            push(PushKind::Subscribe, "hasivu:backplane"),
            push(PushKind::SUnsubscribe, "another"),
        ] {
            pushes.send(info).unwrap();
        }
        assert_eq!(link.loss(), None);
        for _ in 0..5 {
            pushes
                .send(push(PushKind::SMessage, "hasivu:backplane"))
                .unwrap();
        }
        assert_eq!(rx.len(), 2, "the queue holds no more than its bound");
        assert_eq!(link.lost().await, Loss::Overflow);

        // The first loss is the one reported.
        pushes
            .send(push(PushKind::SUnsubscribe, "hasivu:backplane"))
            .unwrap();
        assert_eq!(link.lost().await, Loss::Overflow);
        let fresh = Arc::new(Link::new("hasivu:backplane"));
        let pushes = PushQueue {
            messages: mpsc::channel(2).0,
            link: Arc::clone(&fresh),
        };
        pushes
            .send(push(PushKind::SUnsubscribe, "hasivu:backplane"))
            .unwrap();
        assert_eq!(fresh.lost().await, Loss::Unsubscribed);
        rx.close();
    }

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
