//! A TCP proxy that injects network faults between a client and a real
//! server, controlled from the test.
//!
//! The proxy runs on a thread of its own (with its own single-threaded
//! tokio runtime), so it keeps forwarding while the test's runtime has
//! paused time or blocks, and it works from synchronous tests too.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does with the bytes it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards them (after the latency, if any).
    Pass,
    /// Keeps them and forwards nothing until the mode changes: a network
    /// that stopped moving packets without closing anything.
    Stall,
    /// Drops them silently, both ways, forever for the connections open
    /// now: a peer that vanished without a FIN or RST (half-open TCP).
    HalfOpen,
    /// Resets new connections as soon as they are accepted.
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Faults {
    mode: Mode,
    latency: Duration,
    /// Close each connection once it has forwarded this many bytes (both
    /// directions together) since the setting was made.
    close_after: Option<u64>,
    /// Bumped by [`FaultProxy::reset`]: connections open at that moment
    /// are reset.
    resets: u64,
    /// Bumped by [`FaultProxy::half_open`]: connections open at that
    /// moment are dead, even if no byte crosses them before a heal (the
    /// mode alone may be back to `Pass` by the time they look).
    half_opens: u64,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicUsize,
    accepted: AtomicU64,
    forwarded: AtomicU64,
}

/// A TCP proxy in front of a real server, for fault-injection tests: added
/// latency, a stall (bytes accepted, nothing forwarded), half-open
/// connections (both directions dropped silently), resets, closing after N
/// bytes, refusing new connections, and healing.
///
/// Point the client at [`addr`](Self::addr) (or at
/// [`redis_url`](Self::redis_url) / [`postgres_url`](Self::postgres_url))
/// instead of the server's own address; the proxy stops when dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use hasivu_testkit::{FaultProxy, RedisServer};
///
/// let redis = RedisServer::start();
/// let proxy = FaultProxy::start(redis.addr());
/// let url = proxy.redis_url();
/// // … connect the code under test to `url` …
/// proxy.stall(); // requests now hang: the code under test must time out
/// proxy.heal(); // held bytes flow again
/// proxy.half_open(); // open connections are dead without knowing it
/// proxy.heal(); // new connections work; the half-open ones stay dead
/// proxy.latency(Duration::from_millis(20));
/// proxy.reset(); // every open connection gets an RST
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    ///
    /// # Panics
    ///
    /// When no port can be bound or the thread cannot start.
    pub fn start(upstream: SocketAddr) -> Self {
        let (faults, _) = watch::channel(Faults {
            mode: Mode::Pass,
            latency: Duration::ZERO,
            close_after: None,
            resets: 0,
            half_opens: 0,
        });
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let rx = faults.subscribe();
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("hasivu-fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                        .await
                        .expect("a loopback port for the proxy");
                    let _ = ready_tx.send(listener.local_addr().expect("the proxy's address"));
                    tokio::select! {
                        () = accept_loop(listener, upstream, rx, thread_counters) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("the proxy's thread");
        let addr = ready_rx.recv().expect("the proxy started");
        Self {
            addr,
            upstream,
            faults,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the proxy.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `redis://127.0.0.1:<proxy port>/`.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// `postgres_url` (a URL of [`PostgresServer`](crate::PostgresServer))
    /// with its port replaced by the proxy's.
    pub fn postgres_url(&self, postgres_url: &str) -> String {
        let upstream = format!("127.0.0.1:{}", self.upstream.port());
        let proxied = format!("127.0.0.1:{}", self.addr.port());
        postgres_url.replace(&upstream, &proxied)
    }

    fn edit(&self, f: impl FnOnce(&mut Faults)) {
        self.faults.send_modify(f);
    }

    /// Delays every chunk by `latency` in each direction (zero to stop).
    pub fn latency(&self, latency: Duration) {
        self.edit(|f| f.latency = latency);
    }

    /// Accepts bytes and forwards nothing until [`heal`](Self::heal) (or
    /// another mode): requests hang, connections stay open. Held bytes are
    /// delivered when the stall ends.
    pub fn stall(&self) {
        self.edit(|f| f.mode = Mode::Stall);
    }

    /// Makes the connections open now half-open: everything they send,
    /// either way, is dropped silently and they are never closed, even
    /// after [`heal`](Self::heal) (the peer is gone for good). Connections
    /// made while half-open are dead the same way; those made after
    /// healing work.
    pub fn half_open(&self) {
        self.edit(|f| {
            f.mode = Mode::HalfOpen;
            f.half_opens += 1;
        });
    }

    /// Resets (RST) every connection open now; new ones work.
    pub fn reset(&self) {
        self.edit(|f| f.resets += 1);
    }

    /// Resets new connections as soon as they are accepted (the server is
    /// unreachable); open ones keep working.
    pub fn refuse(&self) {
        self.edit(|f| f.mode = Mode::Refuse);
    }

    /// Closes each connection once it has forwarded `bytes` more bytes
    /// (both directions together), counted from now for open connections
    /// and from their start for new ones; `None` to stop.
    pub fn close_after(&self, bytes: Option<u64>) {
        self.edit(|f| f.close_after = bytes);
    }

    /// Back to a clean network: no latency, no stall, no refusal, no byte
    /// limit. Stalled bytes flow again; half-open connections stay dead.
    pub fn heal(&self) {
        self.edit(|f| {
            f.mode = Mode::Pass;
            f.latency = Duration::ZERO;
            f.close_after = None;
        });
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start.
    pub fn accepted_connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded since the start, both directions together.
    pub fn forwarded_bytes(&self) -> u64 {
        self.counters.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        if faults.borrow().mode == Mode::Refuse {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let faults = faults.clone();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            counters.open.fetch_add(1, Ordering::SeqCst);
            connection(client, upstream, faults, &counters).await;
            counters.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One proxied connection, until either side closes, a reset, or the byte
/// limit.
async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Faults>,
    counters: &Counters,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let start = *faults.borrow_and_update();
    let resets = start.resets;
    let link = Link {
        dead: AtomicBool::new(start.mode == Mode::HalfOpen),
        half_opens: start.half_opens,
        forwarded: AtomicU64::new(0),
        limit: std::sync::Mutex::new((start.close_after, 0)),
        counters,
    };
    let reset = {
        let mut faults = faults.clone();
        async move {
            let _ = faults.wait_for(|f| f.resets != resets).await;
        }
    };
    let ended = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(&mut client_read, &mut server_write, faults.clone(), &link);
        let down = pump(&mut server_read, &mut client_write, faults.clone(), &link);
        tokio::pin!(up, down, reset);
        let (mut up_done, mut down_done) = (false, false);
        // One direction closing leaves the other open (a half-close); a
        // byte limit or a reset ends both.
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
                () = &mut reset => End::Reset,
            };
            match end {
                End::Closed if !(up_done && down_done) => {}
                end => break end,
            }
        }
    };
    if matches!(ended, End::Reset | End::Limit) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// State shared by the two directions of one connection.
struct Link<'a> {
    /// Half-open: drop everything, forever.
    dead: AtomicBool,
    /// [`Faults::half_opens`] when the connection opened.
    half_opens: u64,
    /// Bytes forwarded both ways.
    forwarded: AtomicU64,
    /// The byte limit in force, and `forwarded` when it was set.
    limit: std::sync::Mutex<(Option<u64>, u64)>,
    counters: &'a Counters,
}

enum End {
    Closed,
    Limit,
    Reset,
}

/// Copies one direction, applying the faults to every chunk.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut faults: watch::Receiver<Faults>,
    link: &Link<'_>,
) -> End
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if !link.dead.load(Ordering::SeqCst) {
                    let _ = to.shutdown().await;
                }
                return End::Closed;
            }
            Ok(n) => n,
        };
        // Wait out a stall; a half-open link drops the chunk.
        let current = loop {
            let current = *faults.borrow_and_update();
            if current.mode == Mode::HalfOpen || current.half_opens != link.half_opens {
                link.dead.store(true, Ordering::SeqCst);
            }
            if current.mode != Mode::Stall || link.dead.load(Ordering::SeqCst) {
                break current;
            }
            if faults.changed().await.is_err() {
                return End::Closed;
            }
        };
        if link.dead.load(Ordering::SeqCst) {
            continue;
        }
        if !current.latency.is_zero() {
            tokio::time::sleep(current.latency).await;
        }
        let room = {
            let mut limit = link.limit.lock().unwrap_or_else(|p| p.into_inner());
            let forwarded = link.forwarded.load(Ordering::SeqCst);
            if limit.0 != current.close_after {
                *limit = (current.close_after, forwarded);
            }
            limit
                .0
                .map(|bytes| bytes.saturating_sub(forwarded - limit.1))
        };
        let mut chunk = &buf[..n];
        if let Some(room) = room {
            if room == 0 {
                return End::Limit;
            }
            chunk = &chunk[..chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        }
        if to.write_all(chunk).await.is_err() {
            return End::Closed;
        }
        let sent = chunk.len() as u64;
        link.forwarded.fetch_add(sent, Ordering::SeqCst);
        link.counters.forwarded.fetch_add(sent, Ordering::SeqCst);
        if chunk.len() < n {
            return End::Limit;
        }
    }
}
