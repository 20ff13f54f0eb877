//! A real PostgreSQL server (`initdb` + `postgres`) for one test.

use std::{
    fs::{self, OpenOptions},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt,
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

const SERVER: &str = "postgres";
const PACKAGE: &str = "postgresql";
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;
/// The superuser created by `initdb`; it authenticates with `trust` on loopback.
const USER: &str = "hasivu";
/// The database created for the test.
const DATABASE: &str = "hasivu";

/// A PostgreSQL server on a free loopback port with its own temporary data
/// directory and a database named `hasivu`, shut down when dropped.
///
/// The binaries are taken from `HASIVU_PG_BIN` when set, else from the
/// directory of the `postgres` found on `PATH`, else from the newest
/// `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so when
/// this process is root the server runs as the `postgres` user (or `nobody`).
/// Durability is switched off (`fsync`, `synchronous_commit`) for speed.
///
/// # Example
///
/// ```no_run
/// use hasivu_testkit::PostgresServer;
///
/// let mut pg = PostgresServer::start();
/// let url = pg.url(); // postgres://hasivu@127.0.0.1:PORT/hasivu
/// // … connect with any client, then simulate an outage:
/// pg.stop();
/// pg.start_again(); // same port and data directory: the data survives
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    settings: Vec<(String, String)>,
    user: Option<(u32, u32)>,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// Options for a [`PostgresServer`]; see [`PostgresServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct PostgresServerBuilder {
    bin_dir: Option<PathBuf>,
    settings: Vec<(String, String)>,
}

impl PostgresServerBuilder {
    /// Uses the `initdb`, `postgres` and `createdb` executables in this
    /// directory (the environment variable `HASIVU_PG_BIN` does the same).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Adds a server setting, passed as `-c name=value`
    /// (for example `setting("max_connections", "20")`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Initialises a data directory, starts the server, waits until it
    /// accepts connections and creates the `hasivu` database.
    ///
    /// # Errors
    ///
    /// [`Error::MissingBinary`] when PostgreSQL is not installed; other
    /// variants when it cannot be initialised, started or reached.
    pub fn try_start(self) -> Result<PostgresServer, Error> {
        let bin_dir = match self.bin_dir {
            Some(dir) => dir,
            None => match std::env::var_os("HASIVU_PG_BIN") {
                Some(dir) => PathBuf::from(dir),
                None => find_bin_dir().ok_or_else(|| missing("postgres", PACKAGE, None))?,
            },
        };
        for (binary, package) in [
            ("postgres", PACKAGE),
            ("initdb", PACKAGE),
            ("createdb", "postgresql-client"),
        ] {
            if !process::is_executable(&bin_dir.join(binary)) {
                return Err(missing(binary, package, Some(&bin_dir)));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("hasivu-pg-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for PostgreSQL"))?;
        let user = process::unprivileged_user(&["postgres", "nobody"]);
        let mut server = PostgresServer {
            bin_dir,
            settings: self.settings,
            user,
            port: 0,
            dir,
            child: None,
        };
        server.init_data_dir()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = process::free_port().map_err(Error::io("finding a free port"))?;
            match server.launch() {
                Ok(()) => break,
                // Another process took the port between our probe and the bind.
                Err(Error::Exited { tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("could not bind") => {}
                Err(e) => return Err(e),
            }
        }
        server.create_database()?;
        Ok(server)
    }

    /// Like [`try_start`](Self::try_start), for tests.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message says why, and how to
    /// install PostgreSQL when it is missing.
    #[track_caller]
    pub fn start(self) -> PostgresServer {
        self.try_start()
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    }
}

fn missing(binary: &'static str, package: &'static str, dir: Option<&Path>) -> Error {
    let searched = match dir {
        Some(dir) => dir.display().to_string(),
        None => format!("PATH, {VERSIONED_ROOT}/*/bin"),
    };
    Error::MissingBinary {
        binary,
        package,
        searched,
    }
}

/// The directory of the `postgres` on `PATH` (symlinks resolved, so that the
/// matching `initdb` is found), else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(found) = process::find_binary("postgres", &[])
        && let Ok(found) = fs::canonicalize(found)
        && let Some(dir) = found.parent()
        && process::is_executable(&dir.join("initdb"))
    {
        return Some(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(VERSIONED_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            process::is_executable(&bin.join("postgres")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PostgresServer {
    /// Starts a server with the default options.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message says why, and how to
    /// install PostgreSQL when it is missing.
    #[track_caller]
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Starts a server with the default options, returning failures.
    ///
    /// # Errors
    ///
    /// See [`PostgresServerBuilder::try_start`].
    pub fn try_start() -> Result<Self, Error> {
        Self::builder().try_start()
    }

    /// Options for a server.
    pub fn builder() -> PostgresServerBuilder {
        PostgresServerBuilder::default()
    }

    /// The connection URL, `postgres://hasivu@127.0.0.1:PORT/hasivu`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
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

    /// The temporary directory holding `data/`, the socket directory and
    /// `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server with a fast shutdown (`SIGINT`: open sessions are
    /// terminated), waits until it has exited (`SIGKILL` after 15 s).
    /// Stopping a stopped server does nothing.
    ///
    /// # Panics
    ///
    /// When the process cannot be signalled or reaped.
    #[track_caller]
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::shut_down(&mut child, Signal::INT, Duration::from_secs(15))
                .unwrap_or_else(|e| panic!("cannot stop PostgreSQL: {e}"));
        }
    }

    /// Starts the stopped server again on the same port and data directory;
    /// committed data survives.
    ///
    /// # Panics
    ///
    /// When the server is running or cannot be started (for example because
    /// another process took its port meanwhile).
    #[track_caller]
    pub fn start_again(&mut self) {
        if self.is_running() {
            panic!("start_again called on a running PostgreSQL server");
        }
        self.launch()
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL again: {e}"));
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command that runs as the unprivileged user when this process is root.
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn init_data_dir(&mut self) -> Result<(), Error> {
        fs::create_dir(self.socket_dir()).map_err(Error::io("creating the socket directory"))?;
        if let Some((uid, gid)) = self.user {
            process::chown_tree(self.dir.path(), uid, gid)
                .map_err(Error::io("handing the data directory to the postgres user"))?;
        }
        let mut initdb = self.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--username", USER, "--auth", "trust", "--encoding", "UTF8"])
            .args(["--locale", "C", "--no-sync", "--no-instructions"]);
        run(initdb)
    }

    fn launch(&mut self) -> Result<(), Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(Error::io("opening postgres.log"))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(Error::io("opening postgres.log"))?;
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.socket_dir())
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"]);
        for (name, value) in &self.settings {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        let child = postgres
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(Error::io("spawning postgres"))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(log_start) {
            if let Some(mut child) = self.child.take() {
                let _ = process::shut_down(&mut child, Signal::QUIT, Duration::from_secs(5));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits for `postmaster.pid` to say `ready` (as `pg_ctl` does) and for
    /// the port to accept connections.
    fn wait_ready(&mut self, log_start: u64) -> Result<(), Error> {
        let started = Instant::now();
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            let child = self.child.as_mut().ok_or(Error::State("no child"))?;
            if let Some(status) = child
                .try_wait()
                .map_err(Error::io("waiting for postgres"))?
            {
                self.child = None;
                return Err(Error::Exited {
                    server: SERVER,
                    status,
                    log: self.log_path(),
                    tail: process::log_tail(&self.log_path(), log_start, 20),
                });
            }
            let ready = fs::read_to_string(&pid_file)
                .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|s| s.trim() == "ready"));
            if ready && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::NotReady {
                    server: SERVER,
                    waited: READY_TIMEOUT,
                    log: self.log_path(),
                    tail: process::log_tail(&self.log_path(), log_start, 20),
                });
            }
            thread::sleep(POLL);
        }
    }

    fn create_database(&self) -> Result<(), Error> {
        let mut createdb = Command::new(self.bin_dir.join("createdb"));
        createdb
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--username", USER, "--no-password", DATABASE])
            .env_remove("PGDATABASE")
            .env_remove("PGSERVICE");
        run(createdb)
    }
}

/// Runs a helper command to completion, turning a failure into an error with
/// its output.
fn run(mut command: Command) -> Result<(), Error> {
    let line = format!("{command:?}");
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(Error::io(format!("running {line}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: line,
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: nothing needs to survive a dropped test server.
            let _ = process::shut_down(&mut child, Signal::QUIT, Duration::from_secs(5));
        }
    }
}
