//! A real three-master Redis Cluster for one test.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, RedisServer, process};

const SERVER: &str = "redis cluster";
const MASTERS: usize = 3;
const SLOTS: u16 = 16384;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const PORT_ATTEMPTS: usize = 5;

/// Three `redis-server` processes joined into a Redis Cluster: masters only,
/// no replicas, all 16384 hash slots split evenly between them. Each node is
/// a [`RedisServer`] with its own port, directory and cluster bus port, and
/// is killed when the cluster is dropped.
///
/// Nodes run with `cluster-node-timeout 2000`, so a master stopped through
/// [`node_mut`](Self::node_mut) is marked failing (and the cluster goes to
/// `cluster_state:fail`) about two seconds later. Its `nodes.conf` survives
/// [`RedisServer::start_again`], so a restarted master rejoins with the same
/// slots (but no data); [`try_wait_ok`](Self::try_wait_ok) waits for that.
///
/// The cluster is formed with raw `CLUSTER ADDSLOTSRANGE` and `CLUSTER MEET`
/// commands, so it needs `redis-server` 7.0 or later and no `redis-cli`.
///
/// # Example
///
/// ```no_run
/// use hasivu_testkit::RedisCluster;
///
/// let mut cluster = RedisCluster::start();
/// let urls = cluster.urls(); // ["redis://127.0.0.1:PORT/", …], one per master
/// // … connect with a cluster client, then take one master away:
/// cluster.node_mut(1).stop();
/// # let _ = urls;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the three masters, joins them into a cluster and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started; the message says why, and how to
    /// install `redis-server` when it is missing.
    #[track_caller]
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start a redis cluster: {e}"))
    }

    /// Like [`start`](Self::start), returning failures.
    ///
    /// # Errors
    ///
    /// [`Error::MissingBinary`] when `redis-server` is not installed;
    /// [`Error::NotReady`] when the cluster does not reach `cluster_state:ok`
    /// within 20 s; other variants when a node cannot be started or refuses
    /// a cluster command (for example a `redis-server` older than 7.0).
    pub fn try_start() -> Result<Self, Error> {
        let mut nodes = Vec::with_capacity(MASTERS);
        for _ in 0..MASTERS {
            nodes.push(start_node()?);
        }
        let cluster = Self { nodes };
        cluster.join()?;
        cluster.try_wait_ok()?;
        Ok(cluster)
    }

    /// The connection URLs of the masters, `redis://127.0.0.1:PORT/` each,
    /// in node order; any of them is enough to seed a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The masters, in node order: node `i` serves the `i`-th third of the
    /// hash slots (0–5460, 5461–10922, 10923–16383).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Master `i`, to stop it or start it again.
    ///
    /// # Panics
    ///
    /// When `i` is not 0, 1 or 2.
    #[track_caller]
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Waits up to 20 s until every node answers `CLUSTER INFO` with
    /// `cluster_state:ok` and knows all three masters — after start-up, or
    /// after a stopped master was started again.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] naming the first node that is not ready, with its
    /// last `CLUSTER INFO` answer (or the error) and the tail of its log.
    pub fn try_wait_ok(&self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let pending = self
                .nodes
                .iter()
                .find_map(|node| match cluster_info(node.addr()) {
                    Ok(info) if is_ok(&info) => None,
                    Ok(info) => Some((node, info)),
                    Err(e) => Some((node, format!("(no answer: {e})"))),
                });
            let Some((node, info)) = pending else {
                return Ok(());
            };
            if started.elapsed() > READY_TIMEOUT {
                let log = node.dir().join("redis.log");
                let tail = process::log_tail(&log, 0, 20);
                return Err(Error::NotReady {
                    server: SERVER,
                    waited: READY_TIMEOUT,
                    log,
                    tail: format!(
                        "{tail}\n(node 127.0.0.1:{} still says, to CLUSTER INFO:\n{})",
                        node.port(),
                        info.trim_end()
                    ),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Gives each node its third of the slots and a distinct config epoch,
    /// then has node 0 meet the others.
    fn join(&self) -> Result<(), Error> {
        let per_node = SLOTS / MASTERS as u16;
        for (i, node) in self.nodes.iter().enumerate() {
            let index = i as u16;
            let first = index * per_node;
            let last = if i + 1 == MASTERS {
                SLOTS - 1
            } else {
                first + per_node - 1
            };
            let epoch = (i + 1).to_string();
            command(node, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch])?;
            command(
                node,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let (first, others) = self.nodes.split_first().ok_or(Error::State("no nodes"))?;
        for other in others {
            let bus = bus_port(other)?;
            command(
                first,
                &[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &other.port().to_string(),
                    &bus.to_string(),
                ],
            )?;
        }
        Ok(())
    }
}

/// Starts one cluster-enabled node. Its cluster bus port is picked freely
/// (the default, port + 10000, can be taken or above 65535); a bus port that
/// another process took meanwhile is retried with a fresh one.
fn start_node() -> Result<RedisServer, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bus = process::free_port().map_err(Error::io("finding a free cluster bus port"))?;
        let started = RedisServer::builder()
            .config("cluster-enabled", "yes")
            // Relative to `--dir`: the node's own temporary directory.
            .config("cluster-config-file", "nodes.conf")
            .config("cluster-node-timeout", "2000")
            .config("cluster-port", bus.to_string())
            .try_start();
        match started {
            Err(Error::Exited { tail, .. })
                if attempt < PORT_ATTEMPTS && tail.contains("Address already in use") => {}
            other => return other,
        }
    }
}

/// The cluster bus port the node was started with.
fn bus_port(node: &RedisServer) -> Result<u16, Error> {
    let reply = command(node, &["CONFIG", "GET", "cluster-port"])?;
    reply
        .lines()
        .nth(1)
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| {
            Error::io(format!("reading the cluster bus port of {}", node.addr()))(io::Error::other(
                format!("unexpected CONFIG GET reply {reply:?}"),
            ))
        })
}

/// Whether a `CLUSTER INFO` answer shows a healthy three-master cluster.
fn is_ok(info: &str) -> bool {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    field("cluster_state") == Some("ok")
        && field("cluster_known_nodes") == Some("3")
        && field("cluster_size") == Some("3")
}

fn cluster_info(addr: SocketAddr) -> io::Result<String> {
    request(addr, &["CLUSTER", "INFO"])
}

/// Sends one command to `node`, turning failures into [`Error::Io`] that name
/// the command and the node.
fn command(node: &RedisServer, args: &[&str]) -> Result<String, Error> {
    request(node.addr(), args).map_err(Error::io(format!(
        "`{}` on {} (forming a cluster needs redis-server 7.0 or later)",
        args.join(" "),
        node.addr()
    )))
}

/// Sends one command as a RESP array on a fresh connection and reads the
/// reply: a simple string, integer or bulk string comes back as text, array
/// elements one a line; an error reply is an error.
fn request(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    stream.write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    let length = || {
        rest.parse::<i64>()
            .map_err(|_| io::Error::other(format!("bad RESP length in {line:?}")))
    };
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(io::Error::other(format!("server replied -{rest}"))),
        "$" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(String::new()); // null bulk string
            };
            let mut bytes = vec![0; len + 2];
            reader.read_exact(&mut bytes)?;
            bytes.truncate(len);
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        "*" => {
            let count = usize::try_from(length()?).unwrap_or(0);
            let items = (0..count)
                .map(|_| read_reply(reader))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(items.join("\n"))
        }
        _ => Err(io::Error::other(format!("unexpected RESP reply {line:?}"))),
    }
}
