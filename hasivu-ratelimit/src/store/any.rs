//! [`AnyStore`]: a store chosen at run time.

use crate::{LocalStore, Quota, RedisStore, Source, Store, StoreKey, Verdict};

/// A store chosen at run time, from configuration: in process, or shared
/// through Redis. [`Store`] is not object-safe (its `check` is an `async
/// fn`), so this enum is how a service picks one without making its
/// `Limiter` generic.
///
/// ```
/// use hasivu_ratelimit::{AnyStore, Limiter, LocalStore, Policies, RedisStore};
///
/// # fn main() -> Result<(), hasivu_ratelimit::Error> {
/// let redis_url: Option<&str> = None; // e.g. std::env::var("REDIS_URL").ok()
/// let store = match redis_url {
///     Some(url) => AnyStore::Redis(RedisStore::builder(url).build()?),
///     None => AnyStore::Local(LocalStore::new()),
/// };
/// let limiter = Limiter::builder()
///     .store(store)
///     .policies(Policies::report_defaults())
///     .build();
/// # let _ = limiter;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// [`LocalStore`].
    Local(LocalStore),
    /// [`RedisStore`] (with its fail policy when Redis is down).
    Redis(RedisStore),
}

impl From<LocalStore> for AnyStore {
    fn from(store: LocalStore) -> Self {
        Self::Local(store)
    }
}

impl From<RedisStore> for AnyStore {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

impl Store for AnyStore {
    async fn check(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> (Verdict, Source) {
        match self {
            Self::Local(store) => Store::check(store, key, quota, cost).await,
            Self::Redis(store) => Store::check(store, key, quota, cost).await,
        }
    }

    fn check_now(&self, key: StoreKey<'_>, quota: &Quota, cost: u32) -> Option<(Verdict, Source)> {
        match self {
            Self::Local(store) => Store::check_now(store, key, quota, cost),
            Self::Redis(store) => Store::check_now(store, key, quota, cost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_variant_counts_like_the_local_store() {
        let store = AnyStore::from(LocalStore::new());
        let quota = Quota::per_second(2);
        let key = StoreKey {
            policy: "p",
            key: "k",
        };
        let mut allowed = 0;
        for _ in 0..3 {
            let (verdict, source) = store.check(key, &quota, 1).await;
            assert_eq!(source, Source::Local);
            allowed += u32::from(verdict.allowed);
        }
        assert_eq!(allowed, 2);
        assert!(
            store.check_now(key, &quota, 1).is_some(),
            "local checks are synchronous"
        );
    }
}
