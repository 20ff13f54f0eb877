//! Real servers for hasivu's tests.
//!
//! Tests that touch Redis or PostgreSQL start the real thing through this
//! crate: [`RedisServer`] spawns `redis-server`, [`PostgresServer`] runs
//! `initdb` and `postgres`. Each server gets a free loopback port and its own
//! temporary directory, so any number of test processes (nextest runs one per
//! test) can use servers at once. Servers are killed when dropped.
//! [`RedisCluster`] joins three such `redis-server`s into a Redis Cluster
//! (three masters, no replicas, all 16384 slots) for cluster-client tests.
//!
//! Both offer `stop()` and `start_again()` on the same port, so a test can
//! take a dependency away in the middle of a run and bring it back, the way
//! an outage happens in production.
//!
//! [`FaultProxy`] sits between a client and one of those servers and
//! injects what clean stops and starts do not: latency, a stall, half-open
//! connections, resets, connections cut after N bytes.
//!
//! A missing server binary is a failure, never a skip: the panic message
//! names the Debian package to install (`redis-server`, `postgresql`).
//!
//! ```no_run
//! use hasivu_testkit::{PostgresServer, RedisServer};
//!
//! let mut redis = RedisServer::start();
//! let pg = PostgresServer::start();
//! println!("{} {}", redis.url(), pg.url());
//! redis.stop();
//! // … assert that the code under test keeps answering …
//! redis.start_again();
//! ```
//!
//! Servers started by a process that is killed outright (not unwound) are not
//! cleaned up; `pkill -f hasivu-redis-` and `pkill -f hasivu-pg-` find them.

mod cluster;
mod error;
mod logs;
mod postgres;
mod process;
mod proxy;
mod redis;

pub use cluster::RedisCluster;
pub use error::Error;
pub use logs::LogCapture;
pub use postgres::{PostgresServer, PostgresServerBuilder};
pub use proxy::FaultProxy;
pub use redis::{RedisServer, RedisServerBuilder};
