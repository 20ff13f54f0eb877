//! SQLite: pooled [`rusqlite::Connection`]s, used off the async threads.
//!
//! SQLite calls block, so a [`SqliteConnection`] runs them on Tokio's
//! blocking threads: [`SqliteConnection::interact`] moves the connection
//! into a [`spawn_blocking`](tokio::task::spawn_blocking) task with your
//! closure and takes it back afterwards. If the closure panics (or the
//! `interact` future is dropped before the closure finishes) the connection
//! is gone: the caller gets [`SqliteError::Panicked`] (or nothing), and the
//! pooled connection reports itself broken, so the pool retires it and its
//! slot is free for a new one.
//!
//! Two kinds of database:
//!
//! - **A file** ([`SqliteManager::new`] with a path): each connection
//!   switches it to WAL (readers do not block the writer) and waits up to
//!   the busy timeout (default 5 s) for a lock instead of failing with
//!   `SQLITE_BUSY`.
//! - **A shared in-memory database** ([`SqliteManager::memory`] with a
//!   name, or [`SqliteManager::new`] with `":memory:"` for a fresh one): the
//!   connections open `file:NAME?mode=memory&cache=shared`, so they all see
//!   one database. The manager keeps one extra connection open so the
//!   database lives as long as the manager, even when the pool has no
//!   connection. Connections share SQLite's cache and its table locks; a
//!   statement that meets a table another connection has locked waits for
//!   it (SQLite's unlock notification) rather than failing.
//!
//! ```
//! use hasivu_pool::{Pool, PoolConfig, SqliteManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder(SqliteManager::new(":memory:"))
//!     .name("sqlite")
//!     .config(PoolConfig::default().max_size(4))
//!     .build();
//! let mut conn = pool.get().await?;
//! conn.interact(|db| db.execute_batch("CREATE TABLE notes (body TEXT)")).await??;
//! drop(conn);
//!
//! // Two pooled connections, one in-memory database.
//! let (mut a, mut b) = (pool.get().await?, pool.get().await?);
//! a.interact(|db| db.execute("INSERT INTO notes VALUES ('hello')", [])).await??;
//! let body: String = b
//!     .interact(|db| db.query_row("SELECT body FROM notes", [], |row| row.get(0)))
//!     .await??;
//! assert_eq!(body, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! A file database with a setup step on every new connection:
//!
//! ```
//! use std::time::Duration;
//! use hasivu_pool::{Pool, PoolConfig, SqliteManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("app.db");
//! let manager = SqliteManager::new(&path)
//!     .busy_timeout(Duration::from_secs(10))
//!     .init(|db| db.execute_batch("PRAGMA foreign_keys = ON"));
//! let pool = Pool::builder(manager)
//!     .config(PoolConfig::default().max_size(4))
//!     .build();
//! let mut conn = pool.get().await?;
//! let mode: String = conn
//!     .interact(|db| db.query_row("PRAGMA journal_mode", [], |row| row.get(0)))
//!     .await??;
//! assert_eq!(mode, "wal");
//! # Ok(())
//! # }
//! ```

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use crate::Manager;

type Init = dyn Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync;

/// Makes [`SqliteConnection`]s to a file or a shared in-memory database;
/// validates them with `SELECT 1`.
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct SqliteManager {
    target: Target,
    busy_timeout: Duration,
    init: Option<Arc<Init>>,
}

#[derive(Clone)]
enum Target {
    File(PathBuf),
    Memory {
        uri: String,
        /// Keeps the database alive while the pool has no connection.
        keeper: Arc<Mutex<Option<Connection>>>,
    },
}

impl std::fmt::Debug for SqliteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("SqliteManager");
        match &self.target {
            Target::File(path) => s.field("file", path),
            Target::Memory { uri, .. } => s.field("memory", uri),
        };
        s.field("busy_timeout", &self.busy_timeout)
            .field("init", &self.init.is_some())
            .finish()
    }
}

impl SqliteManager {
    /// A manager for the database file at `path`, or for a fresh shared
    /// in-memory database when `path` is `":memory:"` (not one private
    /// database per connection, as SQLite would make).
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        if path == Path::new(":memory:") {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            return Self::memory(&format!("hasivu-pool-{}-{n}", std::process::id()));
        }
        Self::with_target(Target::File(path.to_path_buf()))
    }

    /// A manager for the in-memory database called `name`, shared by every
    /// connection in this process that opens the same name.
    pub fn memory(name: &str) -> Self {
        Self::with_target(Target::Memory {
            uri: format!("file:{}?mode=memory&cache=shared", uri_escape(name)),
            keeper: Arc::new(Mutex::new(None)),
        })
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
            busy_timeout: Duration::from_secs(5),
            init: None,
        }
    }

    /// How long a statement waits for another connection's lock on a file
    /// database before failing with `SQLITE_BUSY` (default 5 s).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Runs `init` on every new connection after the manager's own setup
    /// (pragmas, functions, schema checks). An error fails the creation.
    #[must_use]
    pub fn init(
        mut self,
        init: impl Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.init = Some(Arc::new(init));
        self
    }

    /// Opens and sets up one connection (blocking).
    fn open(&self) -> rusqlite::Result<Connection> {
        let mut conn = match &self.target {
            Target::File(path) => {
                let conn = Connection::open_with_flags(path, OpenFlags::default())?;
                conn.busy_timeout(self.busy_timeout)?;
                let _mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
                conn
            }
            Target::Memory { uri, keeper } => {
                let mut keeper = keeper.lock().unwrap_or_else(|p| p.into_inner());
                if keeper.is_none() {
                    *keeper = Some(Connection::open_with_flags(uri, OpenFlags::default())?);
                }
                drop(keeper);
                let conn = Connection::open_with_flags(uri, OpenFlags::default())?;
                conn.busy_timeout(self.busy_timeout)?;
                conn
            }
        };
        if let Some(init) = &self.init {
            init(&mut conn)?;
        }
        Ok(conn)
    }
}

/// Percent-encodes everything but unreserved characters, for a name inside
/// a `file:` URI.
fn uri_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Manager for SqliteManager {
    type Connection = SqliteConnection;
    type Error = SqliteError;

    async fn create(&self) -> Result<SqliteConnection, SqliteError> {
        let manager = self.clone();
        let conn = tokio::task::spawn_blocking(move || manager.open())
            .await
            .map_err(SqliteError::from_join)??;
        Ok(SqliteConnection { conn: Some(conn) })
    }

    async fn validate(&self, conn: &mut SqliteConnection) -> Result<(), SqliteError> {
        conn.interact(|db| db.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)))
            .await??;
        Ok(())
    }

    async fn destroy(&self, mut conn: SqliteConnection) {
        // Closing may checkpoint the WAL: file I/O, off the async threads.
        if let Some(db) = conn.conn.take() {
            let _ = tokio::task::spawn_blocking(move || drop(db)).await;
        }
    }

    fn is_broken(&self, conn: &SqliteConnection) -> bool {
        conn.is_broken()
    }
}

/// A pooled SQLite connection, used through
/// [`interact`](Self::interact).
#[derive(Debug)]
pub struct SqliteConnection {
    /// `None` while a closure runs, and for good once one panicked or was
    /// abandoned.
    conn: Option<Connection>,
}

impl SqliteConnection {
    /// Runs `f` with the connection on a blocking thread and returns its
    /// result.
    ///
    /// ```
    /// use hasivu_pool::{Pool, SqliteManager};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Pool::builder(SqliteManager::new(":memory:")).build();
    /// let mut conn = pool.get().await?;
    /// // The outer `?` is the pool's (a panic), the inner one SQLite's.
    /// let sum: i64 = conn
    ///     .interact(|db| {
    ///         let tx = db.transaction()?;
    ///         tx.execute_batch("CREATE TABLE n (v); INSERT INTO n VALUES (1), (2)")?;
    ///         let sum = tx.query_row("SELECT sum(v) FROM n", [], |row| row.get(0))?;
    ///         tx.commit()?;
    ///         Ok::<i64, rusqlite::Error>(sum)
    ///     })
    ///     .await??;
    /// assert_eq!(sum, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Dropping the returned future does not stop `f`; the connection is
    /// then lost and this pooled connection is retired when it goes back.
    ///
    /// # Errors
    ///
    /// [`SqliteError::Panicked`] when `f` panicked (the connection is lost
    /// with it); [`SqliteError::Lost`] when an earlier call panicked or was
    /// abandoned. Errors of `f` itself are in `R`.
    pub async fn interact<F, R>(&mut self, f: F) -> Result<R, SqliteError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.conn.take().ok_or(SqliteError::Lost)?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut conn);
            (conn, result)
        })
        .await
        .map_err(SqliteError::from_join)?;
        self.conn = Some(conn);
        Ok(result)
    }

    /// Whether the connection was lost to a panic or an abandoned call.
    pub fn is_broken(&self) -> bool {
        self.conn.is_none()
    }
}

/// Why an SQLite connection could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// SQLite's error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The closure panicked on its blocking thread; the message is the
    /// panic's, when it was a string.
    #[error("sqlite: the closure panicked: {0}")]
    Panicked(String),
    /// The connection was lost to an earlier panic or abandoned call.
    #[error("sqlite: the connection was lost to an earlier panic or abandoned call")]
    Lost,
}

impl SqliteError {
    fn from_join(error: tokio::task::JoinError) -> Self {
        if !error.is_panic() {
            // Cancelled: the runtime is shutting down.
            return SqliteError::Lost;
        }
        let panic = error.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_owned());
        SqliteError::Panicked(message)
    }
}

#[cfg(test)]
mod tests {
    use super::uri_escape;

    #[test]
    fn names_are_escaped_inside_the_uri() {
        assert_eq!(uri_escape("cache-1_a.b"), "cache-1_a.b");
        assert_eq!(uri_escape("a b?c&d#"), "a%20b%3Fc%26d%23");
    }
}
