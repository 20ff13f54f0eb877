//! A real `redis-server` process for one test.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use rustix::process::Signal;
use tempfile::TempDir;

use crate::{
    Error,
    process::{self, POLL},
};

const SERVER: &str = "redis-server";
const PACKAGE: &str = "redis-server";
const SEARCH: &[&str] = &["/usr/bin", "/usr/sbin", "/usr/local/bin"];
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` on a free loopback port with its own temporary directory
/// and no persistence, killed when dropped.
///
/// # Example
///
/// ```no_run
/// use hasivu_testkit::RedisServer;
///
/// let mut redis = RedisServer::start();
/// let url = redis.url(); // redis://127.0.0.1:PORT/
/// // … connect with any client, then simulate an outage:
/// redis.stop();
/// redis.start_again(); // same port, same directory, empty data
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    config: Vec<(String, String)>,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// Options for a [`RedisServer`]; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    config: Vec<(String, String)>,
}

impl RedisServerBuilder {
    /// Uses this `redis-server` executable instead of searching `PATH`,
    /// `/usr/bin`, `/usr/sbin` and `/usr/local/bin` (the environment variable
    /// `HASIVU_REDIS_SERVER` does the same).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Adds a configuration directive, passed as `--name value`
    /// (for example `config("maxmemory", "16mb")`).
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((name.into(), value.into()));
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`Error::MissingBinary`] when `redis-server` is not installed; other
    /// variants when it cannot be started or does not become ready.
    pub fn try_start(self) -> Result<RedisServer, Error> {
        let binary = match self.binary {
            Some(path) => path,
            None => match std::env::var_os("HASIVU_REDIS_SERVER") {
                Some(path) => PathBuf::from(path),
                None => process::find_binary(SERVER, SEARCH).ok_or_else(missing)?,
            },
        };
        if !process::is_executable(&binary) {
            return Err(Error::MissingBinary {
                binary: SERVER,
                package: PACKAGE,
                searched: binary.display().to_string(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("hasivu-redis-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for redis-server"))?;
        let mut server = RedisServer {
            binary,
            config: self.config,
            port: 0,
            dir,
            child: None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = process::free_port().map_err(Error::io("finding a free port"))?;
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process took the port between our probe and the bind.
                Err(Error::Exited { tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`try_start`](Self::try_start), for tests.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message says why, and how to
    /// install `redis-server` when it is missing.
    #[track_caller]
    pub fn start(self) -> RedisServer {
        self.try_start()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
    }
}

fn missing() -> Error {
    Error::MissingBinary {
        binary: SERVER,
        package: PACKAGE,
        searched: process::describe_search(SEARCH),
    }
}

impl RedisServer {
    /// Starts a server with the default options.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message says why, and how to
    /// install `redis-server` when it is missing.
    #[track_caller]
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Starts a server with the default options, returning failures.
    ///
    /// # Errors
    ///
    /// See [`RedisServerBuilder::try_start`].
    pub fn try_start() -> Result<Self, Error> {
        Self::builder().try_start()
    }

    /// Options for a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The connection URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's loopback address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's port; it stays the same across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server (`SIGTERM`, then `SIGKILL` after 5 s) and waits until
    /// it has exited; its clients see their connections closed. Stopping a
    /// stopped server does nothing.
    ///
    /// # Panics
    ///
    /// When the process cannot be signalled or reaped.
    #[track_caller]
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::shut_down(&mut child, Signal::TERM, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("cannot stop redis-server: {e}"));
        }
    }

    /// Starts the stopped server again on the same port and directory. Data
    /// does not survive: the server runs without persistence.
    ///
    /// # Panics
    ///
    /// When the server is running or cannot be started (for example because
    /// another process took its port meanwhile).
    #[track_caller]
    pub fn start_again(&mut self) {
        if self.is_running() {
            panic!("start_again called on a running redis-server");
        }
        self.launch()
            .unwrap_or_else(|e| panic!("cannot start redis-server again: {e}"));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn launch(&mut self) -> Result<(), Error> {
        let log = self.log_path();
        // A fresh log per launch, so start-up errors are read from this launch only.
        let _ = fs::remove_file(&log);
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log);
        for (name, value) in &self.config {
            command.arg(format!("--{name}")).arg(value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io(format!("spawning {}", self.binary.display())))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(e);
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().ok_or(Error::State("no child"))?;
            if let Some(status) = child
                .try_wait()
                .map_err(Error::io("waiting for redis-server"))?
            {
                self.child = None;
                return Err(Error::Exited {
                    server: SERVER,
                    status,
                    log: self.log_path(),
                    tail: process::log_tail(&self.log_path(), 0, 20),
                });
            }
            if ping(self.addr()) {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::NotReady {
                    server: SERVER,
                    waited: READY_TIMEOUT,
                    log: self.log_path(),
                    tail: process::log_tail(&self.log_path(), 0, 20),
                });
            }
            thread::sleep(POLL);
        }
    }
}

/// Whether a Redis server at `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let timeout = Duration::from_millis(500);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
