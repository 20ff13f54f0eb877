//! Redis: pooled [`MultiplexedConnection`]s.
//!
//! A multiplexed connection already carries many concurrent requests over
//! one socket, so the pool's job here is a few sockets to spread the load,
//! a `PING` before handing out a connection that has been idle, quick and
//! real errors while Redis is down, and healing once it is back. Keep
//! blocking commands (`BLPOP`, `SUBSCRIBE`) and `WATCH`/`MULTI`
//! transactions off pooled multiplexed connections: they change the state
//! every user of the socket shares.
//!
//! A multiplexed connection gives no cheap way to tell that its socket
//! died, so [`Manager::is_broken`] cannot see it; a dead connection is
//! caught by the `PING` on checkout (set
//! [`PoolConfig::validate_after`](crate::PoolConfig) to zero to check on
//! every checkout), or mark it yourself after an I/O error with
//! [`Pooled::mark_broken`](crate::Pooled::mark_broken).
//!
//! ```no_run
//! use hasivu_pool::{Pool, PoolConfig, RedisManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder(RedisManager::new("redis://127.0.0.1:6379/")?)
//!     .name("redis")
//!     .config(PoolConfig::default().max_size(4))
//!     .build();
//! let mut conn = pool.get().await?;
//! let () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut *conn).await?;
//! let greeting: String = redis::cmd("GET").arg("greeting").query_async(&mut *conn).await?;
//! assert_eq!(greeting, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! With its own timeouts:
//!
//! ```no_run
//! use std::time::Duration;
//! use hasivu_pool::{Pool, PoolConfig, RedisManager};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = RedisManager::new("redis://127.0.0.1:6379/")?
//!     .connect_timeout(Duration::from_millis(500))
//!     .response_timeout(Some(Duration::from_secs(2)));
//! let pool = Pool::builder(manager)
//!     .config(PoolConfig::default().validate_after(Duration::ZERO))
//!     .build();
//! # let _ = pool;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use ::redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, aio::MultiplexedConnection};

use crate::Manager;

/// Makes multiplexed Redis connections; validates them with `PING`.
///
/// See the [module documentation](self) for what pooling a multiplexed
/// connection is for.
#[derive(Clone)]
pub struct RedisManager {
    client: Client,
    config: AsyncConnectionConfig,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
}

impl std::fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisManager")
            .field("addr", &self.client.get_connection_info().addr())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisManager {
    /// A manager for the server at `url` (`redis://host:port/db`, or
    /// anything else [`redis::Client::open`] takes). Connecting times out
    /// after 1 s and each command after 500 ms (the `redis` crate's
    /// defaults).
    ///
    /// # Errors
    ///
    /// When `url` cannot be parsed. Nothing is connected yet.
    pub fn new(url: impl IntoConnectionInfo) -> Result<Self, RedisManagerError> {
        Ok(Self::from_client(Client::open(url)?))
    }

    /// A manager for an existing client.
    pub fn from_client(client: Client) -> Self {
        Self {
            client,
            config: AsyncConnectionConfig::new(),
            connect_timeout: Some(Duration::from_secs(1)),
            response_timeout: Some(Duration::from_millis(500)),
        }
    }

    /// The connection settings (push sender, DNS resolver, …) for new
    /// connections. The timeouts set with
    /// [`connect_timeout`](Self::connect_timeout) and
    /// [`response_timeout`](Self::response_timeout) apply on top of it.
    #[must_use]
    pub fn connection_config(mut self, config: AsyncConnectionConfig) -> Self {
        self.config = config;
        self
    }

    /// How long connecting may take (default 1 s). The pool's
    /// `create_timeout` bounds it too.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long each command may take (`None`: no limit; default 500 ms).
    /// A command that times out leaves the connection usable.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The client connections are made from.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Manager for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisManagerError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisManagerError> {
        let config = self
            .config
            .clone()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout);
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    async fn validate(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisManagerError> {
        let pong: String = ::redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisManagerError::UnexpectedPong(pong))
        }
    }
}

/// Why a Redis connection could not be made or failed its `PING`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisManagerError {
    /// The `redis` crate's error, with its causes in the message
    /// (`Connection refused (os error 111)`, `broken pipe`, …).
    #[error("redis: {}", super::with_causes(.0))]
    Redis(#[from] ::redis::RedisError),
    /// `PING` answered something other than `PONG`.
    #[error("redis: PING answered {0:?}")]
    UnexpectedPong(String),
}

impl RedisManagerError {
    /// The `redis` crate's error, if that is what failed.
    pub fn as_redis(&self) -> Option<&::redis::RedisError> {
        match self {
            RedisManagerError::Redis(error) => Some(error),
            RedisManagerError::UnexpectedPong(_) => None,
        }
    }
}
