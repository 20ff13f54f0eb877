//! A fair, cancel-safe, self-healing async connection pool.
//!
//! `hasivu-pool` provides:
//!
//! - **`Pool<M: Manager>`**: a manager creates, validates and destroys
//!   connections; the pool keeps a minimum of idle connections, retires them
//!   after an idle timeout, a maximum lifetime (with jitter) or a maximum
//!   number of uses, and retries creation with exponential backoff.
//! - **Fairness and cancel safety**: waiters are served first in, first out,
//!   a returned connection goes straight to the next waiter, a cancelled
//!   acquire leaks nothing, and no lock is held across I/O.
//! - **Fast failure**: with the backend down, callers get the real backend
//!   error quickly and a circuit breaker fails acquires at once while one
//!   probe retries.
//! - **A keyed pool manager** that isolates resource types (a dead Redis
//!   cannot starve the database pool), reports status, detects leaked
//!   connections and drains everything on shutdown.
//! - **Adapters** for Redis, PostgreSQL, SQLite and HTTP clients.
//!
//! # Where this comes from
//!
//! This crate serves sections 1.2 and 5.2 (connection pooling) of the HASIVU
//! performance report, with its per-resource pool options (sizes, timeouts,
//! idle reaping, creation retry, maximum uses, draining on `SIGTERM`).
//!
//! # Status
//!
//! Available: [`Pool`] with [`PoolConfig`], [`Manager`], [`Pooled`],
//! [`PoolStatus`] and [`Pool::drain`]; [`PoolManager`]; adapters for
//! Redis, PostgreSQL, SQLite and HTTP behind features.
//!
//! # Feature flags
//!
//! None is on by default; each adds one adapter (see the `adapters` module).
//!
//! | Feature | Enables |
//! |---|---|
//! | `redis` | `RedisManager`: multiplexed Redis connections validated with `PING` |
//! | `postgres` | `PostgresManager`, `PostgresConnection`: `tokio-postgres` clients validated with an empty query, a per-connection statement cache; `NoTls` or any `MakeTlsConnect` |
//! | `sqlite` | `SqliteManager`, `SqliteConnection`: `rusqlite` (SQLite compiled in) on `spawn_blocking`, file databases in WAL mode or shared in-memory ones |
//! | `http` | `HttpManager`, `HttpHandle`: a per-host concurrency limit for a shared `hyper-util` client |
//! | `full` | all of the above |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;
#[cfg(any(
    feature = "http",
    feature = "postgres",
    feature = "redis",
    feature = "sqlite"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "http",
        feature = "postgres",
        feature = "redis",
        feature = "sqlite"
    )))
)]
pub mod adapters;
mod backoff;
mod config;
mod duration;
mod error;
mod manager;
mod pool;
mod registry;
mod status;

pub use config::PoolConfig;
pub use error::{PoolError, PoolManagerError};
pub use manager::Manager;
pub use pool::{Pool, PoolBuilder, Pooled};
pub use registry::{PoolEntry, PoolManager};
pub use status::{Closes, PoolStatus, WaitSummary};

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use adapters::http::{HttpError, HttpHandle, HttpManager};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use adapters::postgres::{PostgresConnection, PostgresManager, PostgresManagerError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use adapters::redis::{RedisManager, RedisManagerError};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use adapters::sqlite::{SqliteConnection, SqliteError, SqliteManager};

/// What [`Pool::drain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Idle connections destroyed at once.
    pub destroyed_idle: usize,
    /// Connections still checked out when the deadline passed (0: all came
    /// back and were destroyed).
    pub still_checked_out: usize,
}
