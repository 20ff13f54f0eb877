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
//! [`PoolStatus`] and [`Pool::drain`]; [`PoolManager`]. The adapters are
//! being built.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod config;
mod duration;
mod error;
mod manager;
mod pool;
mod registry;
mod status;

pub use config::PoolConfig;
pub use error::PoolError;
pub use manager::Manager;
pub use pool::{Pool, PoolBuilder, Pooled};
pub use registry::{PoolEntry, PoolManager};
pub use status::{Closes, PoolStatus, WaitSummary};

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
