//! Where the counting happens: in process ([`LocalStore`]) or in Redis.

#[cfg(feature = "redis")]
mod any;
#[cfg(feature = "redis")]
mod breaker;
mod local;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use any::AnyStore;
pub use local::{LocalStore, LocalStoreBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{
    Algorithm, FailPolicy, LeaseConfig, RedisMemory, RedisMemoryBuilder, RedisStore,
    RedisStoreBuilder,
};

use crate::{Quota, Source, Verdict};

/// Which counter a check touches: the policy's name and the client's key.
/// Stores keep the counters of different policies apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreKey<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The client's key (an IP, a user id, an API key…).
    pub key: &'a str,
}

/// Counts requests against quotas.
///
/// A store never fails a check: a store backed by a service applies its
/// declared failure policy and says so in the [`Source`] it returns.
pub trait Store: Send + Sync + 'static {
    /// Checks `cost` units for `key` against `quota`, counting them when
    /// admitted (rejected requests are never counted).
    fn check(
        &self,
        key: StoreKey<'_>,
        quota: &Quota,
        cost: u32,
    ) -> impl Future<Output = (Verdict, Source)> + Send;

    /// The same check, answered at once when the store can do so without
    /// waiting (an in-process store); `None` sends the caller to
    /// [`check`](Self::check). Lets the tower layer skip a boxed future.
    fn check_now(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> Option<(Verdict, Source)> {
        let _ = (key, quota, cost);
        None
    }
}
