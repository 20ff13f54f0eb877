//! Blocklists: clients refused for a while. [`LocalBlocklist`] in process,
//! [`RedisBlocklist`] (feature `redis`) shared by instances.

#[cfg(feature = "redis")]
mod any;
mod local;
#[cfg(feature = "redis")]
mod redis;

use std::{future::Future, net::IpAddr, time::Duration};

#[cfg(feature = "redis")]
pub use any::AnyBlocklist;
pub use local::LocalBlocklist;
#[cfg(feature = "redis")]
pub use redis::{RedisBlocklist, RedisBlocklistBuilder};

/// What a blocklist knows about a client without asking anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Blocked for this much longer.
    Blocked(Duration),
    /// Not blocked.
    Clear,
    /// Unknown here: ask [`Blocklist::lookup`] (a shared store).
    Unknown,
}

/// A blocked client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// The client: an IPv4 address, or the first address of an IPv6 /64
    /// (clients are blocked by /64, as they are counted).
    pub ip: IpAddr,
    /// Why (the reason codes of the request that blocked it, or what the
    /// caller of [`Blocklist::block`] gave).
    pub reason: String,
    /// How much longer the block lasts.
    pub remaining: Duration,
}

/// Why a blocklist operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlocklistError {
    /// The shared store did not answer in time.
    #[error("blocklist store timed out after {0:?}")]
    Timeout(Duration),
    /// The shared store failed.
    #[cfg(feature = "redis")]
    #[error("blocklist store: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The blocklist could not be built.
    #[error("invalid blocklist configuration: {0}")]
    Config(String),
}

/// Clients refused for a while, by IP (IPv6 by /64).
///
/// Keep a clone of the blocklist you give the layer to manage it, from an
/// admin endpoint for instance:
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::shield::{Blocklist, LocalBlocklist, ShieldLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let blocklist = LocalBlocklist::new();
/// let layer = ShieldLayer::new().blocklist(blocklist.clone());
/// let ip = "198.51.100.23".parse().unwrap();
/// blocklist.block(ip, Duration::from_secs(600), "manual").await.unwrap();
/// for entry in blocklist.entries().await.unwrap() {
///     println!("{} blocked for {:?}: {}", entry.ip, entry.remaining, entry.reason);
/// }
/// assert!(blocklist.unblock(ip).await.unwrap());
/// # let _ = layer;
/// # }
/// ```
///
/// Lookups never fail: a store that cannot be reached answers from what
/// this instance knows, logs and counts the error, so a store outage never
/// refuses traffic or produces a 5xx. Changes report store errors to the
/// caller, after applying them locally.
pub trait Blocklist: Clone + Send + Sync + 'static {
    /// The answer from local state, without I/O. The shield calls it first
    /// on every request; [`Lookup::Unknown`] sends it to
    /// [`lookup`](Self::lookup).
    fn lookup_now(&self, ip: IpAddr) -> Lookup;

    /// How much longer `ip` is blocked, `None` when it is not; may ask a
    /// shared store.
    fn lookup(&self, ip: IpAddr) -> impl Future<Output = Option<Duration>> + Send;

    /// Blocks `ip` for `ttl` because of `reason`.
    ///
    /// # Errors
    ///
    /// [`BlocklistError`] when a shared store could not record it (the
    /// block holds locally all the same).
    fn block(
        &self,
        ip: IpAddr,
        ttl: Duration,
        reason: &str,
    ) -> impl Future<Output = Result<(), BlocklistError>> + Send;

    /// Lifts the block of `ip`; whether there was one.
    ///
    /// # Errors
    ///
    /// [`BlocklistError`] when a shared store could not be reached (the
    /// local entry is gone all the same).
    fn unblock(&self, ip: IpAddr) -> impl Future<Output = Result<bool, BlocklistError>> + Send;

    /// The blocked clients.
    ///
    /// # Errors
    ///
    /// [`BlocklistError`] when a shared store could not be read.
    fn entries(&self) -> impl Future<Output = Result<Vec<BlockEntry>, BlocklistError>> + Send;
}
