//! PostgreSQL: pooled [`tokio_postgres::Client`]s.
//!
//! Each connection is a [`PostgresConnection`]: the client, whose
//! connection task (the half of `tokio-postgres` that does the socket I/O)
//! is spawned on the current Tokio runtime when the connection is made and
//! ends when the client is dropped or the server goes away. It dereferences
//! to the [`Client`], so every query method is at hand.
//!
//! A connection is checked before it is handed out after being idle (see
//! [`PoolConfig::validate_after`](crate::PoolConfig)): a closed client is
//! refused at once, an open one must answer an empty query (one round trip,
//! no parsing or planning). A client whose connection task has ended is
//! retired when it comes back.
//!
//! Prepared statements belong to the connection that prepared them: a
//! [`Statement`] prepared on one pooled connection cannot be used on
//! another. [`PostgresConnection::prepare_cached`] prepares a query once per
//! connection and hands the same statement back on later checkouts of that
//! connection.
//!
//! TLS: [`PostgresManager::new`] connects without TLS ([`NoTls`]);
//! [`PostgresManager::with_tls`] takes any [`MakeTlsConnect`] (for example
//! from `postgres-native-tls` or `tokio-postgres-rustls`), which this crate
//! does not depend on.
//!
//! ```no_run
//! use hasivu_pool::{Pool, PoolConfig, PostgresManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PostgresManager::from_url("postgres://app@127.0.0.1:5432/app")?;
//! let pool = Pool::builder(manager)
//!     .name("database")
//!     .config(PoolConfig::default().max_size(5))
//!     .build();
//! let conn = pool.get().await?;
//! let row = conn.query_one("SELECT $1::INT4 + 1", &[&41i32]).await?;
//! assert_eq!(row.get::<_, i32>(0), 42);
//! # Ok(())
//! # }
//! ```
//!
//! A customised setup with a statement prepared once per connection and a
//! transaction:
//!
//! ```no_run
//! use std::time::Duration;
//! use hasivu_pool::{Pool, PoolConfig, PostgresManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config: tokio_postgres::Config = "postgres://app@127.0.0.1:5432/app".parse()?;
//! config.application_name("billing").connect_timeout(Duration::from_secs(2));
//! let pool = Pool::builder(PostgresManager::new(config))
//!     .config(PoolConfig::default().max_size(5).validate_after(Duration::from_secs(1)))
//!     .build();
//!
//! let mut conn = pool.get().await?;
//! let insert = conn.prepare_cached("INSERT INTO invoices (amount) VALUES ($1)").await?;
//! let tx = conn.transaction().await?;
//! tx.execute(&insert, &[&120i64]).await?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    ops::{Deref, DerefMut},
};

use tokio_postgres::{
    Client, Config, NoTls, Socket, Statement,
    tls::{MakeTlsConnect, TlsConnect},
};

use crate::Manager;

/// Makes [`PostgresConnection`]s; validates them with an empty query.
///
/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct PostgresManager<T = NoTls> {
    config: Config,
    tls: T,
}

impl PostgresManager<NoTls> {
    /// A manager connecting with `config`, without TLS.
    pub fn new(config: Config) -> Self {
        Self::with_tls(config, NoTls)
    }

    /// A manager connecting to `url` (`postgres://user@host:port/db` or
    /// `host=… user=…`), without TLS.
    ///
    /// # Errors
    ///
    /// When `url` cannot be parsed. Nothing is connected yet.
    pub fn from_url(url: &str) -> Result<Self, PostgresManagerError> {
        Ok(Self::new(url.parse()?))
    }
}

impl<T> PostgresManager<T> {
    /// A manager connecting with `config` through `tls`.
    pub fn with_tls(config: Config, tls: T) -> Self {
        Self { config, tls }
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<T> Manager for PostgresManager<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = PostgresConnection;
    type Error = PostgresManagerError;

    async fn create(&self) -> Result<PostgresConnection, PostgresManagerError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped (Ok) or the socket fails; the
            // next use of the client reports the failure to its caller.
            if let Err(error) = connection.await {
                tracing::debug!(error = %super::with_causes(&error), "postgres connection ended");
            }
        });
        Ok(PostgresConnection {
            client,
            statements: HashMap::new(),
        })
    }

    async fn validate(&self, conn: &mut PostgresConnection) -> Result<(), PostgresManagerError> {
        if conn.client.is_closed() {
            return Err(PostgresManagerError::Closed);
        }
        conn.client.simple_query("").await?;
        Ok(())
    }

    fn is_broken(&self, conn: &PostgresConnection) -> bool {
        conn.client.is_closed()
    }
}

/// A pooled PostgreSQL connection: a [`Client`] (it dereferences to one)
/// and its per-connection statement cache.
pub struct PostgresConnection {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PostgresConnection {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, mutably (for [`Client::transaction`]).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Prepares `query` on this connection the first time and returns the
    /// same statement afterwards, for as long as the connection lives.
    /// Meant for a fixed set of queries: the cache is not bounded.
    ///
    /// # Errors
    ///
    /// The server's error when preparing fails (the query is not cached).
    pub async fn prepare_cached(
        &mut self,
        query: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(query) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(query).await?;
        self.statements.insert(query.to_owned(), statement.clone());
        Ok(statement)
    }

    /// How many statements [`prepare_cached`](Self::prepare_cached) holds.
    pub fn cached_statements(&self) -> usize {
        self.statements.len()
    }

    /// Forgets the cached statements (for example after `DISCARD ALL`).
    pub fn clear_statement_cache(&mut self) {
        self.statements.clear();
    }
}

impl Deref for PostgresConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PostgresConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl std::fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConnection")
            .field("closed", &self.client.is_closed())
            .field("cached_statements", &self.statements.len())
            .finish()
    }
}

/// Why a PostgreSQL connection could not be made or failed validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresManagerError {
    /// `tokio-postgres`'s error, with its causes in the message
    /// (`error connecting to server: Connection refused (os error 111)`).
    #[error("postgres: {}", super::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The client's connection has ended.
    #[error("postgres: connection closed")]
    Closed,
}

impl PostgresManagerError {
    /// `tokio-postgres`'s error, if that is what failed.
    pub fn as_postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            PostgresManagerError::Postgres(error) => Some(error),
            PostgresManagerError::Closed => None,
        }
    }
}
