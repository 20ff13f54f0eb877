//! A Redis lock for single-flight loads across instances: taken with
//! `SET NX PX`, renewed while the load runs, released by a compare-and-delete
//! (also when the load is dropped half-way).

use std::{sync::Arc, time::Duration};

use redis::Script;
use tokio::runtime::Handle;

use crate::l2::{L2Error, RedisL2, ttl_millis};

/// Deletes the lock only while it still holds our token, so an owner whose
/// lock expired cannot delete the next owner's lock.
const RELEASE: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
else
    return 0
end
"#;

/// Extends the lock only while it still holds our token.
const RENEW: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
else
    return 0
end
"#;

/// Proof of holding a lock; give it back to [`DistributedLock::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a lock held without releasing it blocks other loaders until its TTL"]
pub(crate) struct LockToken {
    key: String,
    token: String,
}

impl LockToken {
    /// The Redis key of the lock.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// `SET {prefix}lock:{key} <token> NX PX ttl` locks, released by a Lua
/// compare-and-delete. Shares the L2's connection, timeout and breaker.
#[derive(Debug, Clone)]
pub(crate) struct DistributedLock {
    l2: RedisL2,
    release: Arc<Script>,
    renew: Arc<Script>,
    /// Where a lock dropped without its release is released: the runtime
    /// the cache was built on, which outlives a runtime shut down mid-load.
    runtime: Handle,
}

impl DistributedLock {
    /// A lock manager on the L2's connection.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the L2 already needs one).
    pub(crate) fn new(l2: RedisL2) -> Self {
        Self {
            l2,
            release: Arc::new(Script::new(RELEASE)),
            renew: Arc::new(Script::new(RENEW)),
            runtime: Handle::current(),
        }
    }

    /// Takes the lock on `key` for `ttl`, as a guard that renews it while
    /// [`Held::keep`] is polled and releases it when dropped; `Ok(None)`
    /// when another holder has it. Dropped while Redis is asked (or after
    /// an error, when the `SET` may still land), the guard releases what
    /// may have been taken.
    pub(crate) async fn acquire(&self, key: &str, ttl: Duration) -> Result<Option<Held>, L2Error> {
        let token = self.token(key);
        let mut held = Held {
            lock: self.clone(),
            token: Some(token.clone()),
            ttl,
        };
        if self.take(&token, ttl).await? {
            Ok(Some(held))
        } else {
            held.token = None;
            Ok(None)
        }
    }

    /// Extends the lock to `ttl` from now if `token` still holds it;
    /// `Ok(false)` when it was lost (expired, taken by another).
    pub(crate) async fn renew(&self, token: &LockToken, ttl: Duration) -> Result<bool, L2Error> {
        let script = &self.renew;
        let renewed: i64 = self
            .l2
            .call("renew lock", |mut conn| async move {
                script
                    .key(&token.key)
                    .arg(&token.token)
                    .arg(ttl_millis(ttl))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Takes the lock on `key` for `ttl`; `Ok(None)` when another holder has it.
    #[cfg(test)]
    pub(crate) async fn try_acquire(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, L2Error> {
        let token = self.token(key);
        Ok(self.take(&token, ttl).await?.then_some(token))
    }

    /// A new token for the lock on `key`.
    fn token(&self, key: &str) -> LockToken {
        LockToken {
            key: self.l2.full_key(&format!("lock:{key}")),
            token: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        }
    }

    /// `SET NX PX`: whether `token` now holds its lock.
    async fn take(&self, token: &LockToken, ttl: Duration) -> Result<bool, L2Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&token.key)
            .arg(&token.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(ttl));
        // NX replies nil when the key exists.
        let acquired: Option<String> = self
            .l2
            .call("lock", |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(acquired.is_some())
    }

    /// Releases the lock if `token` still holds it; `Ok(false)` when it had
    /// expired or another holder has it now (which is left alone).
    pub(crate) async fn release(&self, token: LockToken) -> Result<bool, L2Error> {
        let script = &self.release;
        let deleted: i64 = self
            .l2
            .call("unlock", |mut conn| async move {
                // EVALSHA, falling back to EVAL when the script is not cached.
                script
                    .key(&token.key)
                    .arg(&token.token)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }
}

/// A lock this process holds for a load. Renewed while [`keep`](Self::keep)
/// is polled; released by [`release`](Self::release), or in the background
/// when dropped without it (a load cancelled or panicking half-way).
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock"]
pub(crate) struct Held {
    lock: DistributedLock,
    token: Option<LockToken>,
    ttl: Duration,
}

impl Held {
    /// Renews the lock every third of its TTL, for as long as it is polled:
    /// a load that outlives the TTL keeps the lock. Never returns; poll it
    /// beside the load.
    pub(crate) async fn keep(&self) {
        let Some(token) = &self.token else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            match self.lock.renew(token, self.ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        key = token.key,
                        "distributed lock lost during a load (its TTL passed unrenewed)"
                    );
                    return std::future::pending().await;
                }
                // Retried at the next beat; the TTL covers two of them.
                Err(_) => {}
            }
        }
    }

    /// Releases the lock (if it still holds our token). Dropped half-way,
    /// the release is started again in the background.
    pub(crate) async fn release(mut self) -> Result<(), L2Error> {
        if let Some(token) = self.token.clone() {
            self.lock.release(token).await?;
        }
        self.token = None;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn token(&self) -> Option<&LockToken> {
        self.token.as_ref()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let lock = self.lock.clone();
            // Spawned on the cache's runtime; if that one is shutting down
            // too, the TTL frees the lock.
            drop(self.lock.runtime.spawn(async move {
                if let Err(error) = lock.release(token).await {
                    tracing::debug!(%error, "releasing a dropped lock failed; its TTL frees it");
                }
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use hasivu_testkit::RedisServer;

    use super::*;
    use crate::breaker::Breaker;

    fn lock(redis: &RedisServer) -> DistributedLock {
        let l2 = RedisL2::new(
            &redis.url(),
            "app:",
            Duration::from_millis(500),
            Breaker::new(3, Duration::from_secs(1)),
        )
        .unwrap();
        DistributedLock::new(l2)
    }

    #[tokio::test]
    async fn second_acquire_fails_and_owner_release_frees() {
        let redis = RedisServer::start();
        let lock = lock(&redis);
        let token = lock
            .try_acquire("user:1", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("first acquire");
        assert_eq!(token.key(), "app:lock:user:1");
        assert!(
            lock.try_acquire("user:1", Duration::from_secs(30))
                .await
                .unwrap()
                .is_none()
        );
        // Other keys are independent.
        let other = lock
            .try_acquire("user:2", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("other key");
        assert!(lock.release(token).await.unwrap());
        let again = lock
            .try_acquire("user:1", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("free after release");
        assert!(lock.release(again).await.unwrap());
        assert!(lock.release(other).await.unwrap());
    }

    #[tokio::test]
    async fn stale_token_does_not_release() {
        let redis = RedisServer::start();
        let lock = lock(&redis);
        let token = lock
            .try_acquire("k", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let stale = LockToken {
            key: token.key.clone(),
            token: "0123456789abcdef0123456789abcdef".into(),
        };
        assert!(!lock.release(stale).await.unwrap());
        assert!(
            lock.try_acquire("k", Duration::from_secs(30))
                .await
                .unwrap()
                .is_none(),
            "still held"
        );
        // Releasing twice: the second finds nothing.
        assert!(lock.release(token.clone()).await.unwrap());
        assert!(!lock.release(token).await.unwrap());
    }

    #[tokio::test]
    async fn lock_expires_after_its_ttl() {
        let redis = RedisServer::start();
        let lock = lock(&redis);
        let first = lock
            .try_acquire("k", Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = lock
            .try_acquire("k", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("expired lock is free");
        assert_ne!(first.token, second.token);
        // The expired owner cannot release the new owner's lock.
        assert!(!lock.release(first).await.unwrap());
        assert!(lock.release(second).await.unwrap());
    }

    /// Polls `acquire` until it succeeds, for at most `limit`.
    async fn acquired_within(lock: &DistributedLock, key: &str, limit: Duration) -> Held {
        let started = std::time::Instant::now();
        loop {
            if let Some(held) = lock.acquire(key, Duration::from_secs(30)).await.unwrap() {
                return held;
            }
            assert!(started.elapsed() < limit, "still locked after {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A holder dropped at any await (cancelled, panicking) releases the
    /// lock: the next holder does not wait for the TTL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_dropped_half_way_releases_the_lock() {
        let redis = RedisServer::start();
        let lock = lock(&redis);
        // Dropped while the load runs.
        let held = lock
            .acquire("k", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let load = tokio::spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        load.abort();
        assert!(load.await.unwrap_err().is_cancelled());
        let again = acquired_within(&lock, "k", Duration::from_secs(2)).await;
        // Dropped while its release is on the way.
        let release = again.release();
        drop(tokio::time::timeout(Duration::ZERO, release).await);
        let third = acquired_within(&lock, "k", Duration::from_secs(2)).await;
        // Released normally: free at once, and not released twice.
        third.release().await.unwrap();
        let fourth = lock
            .acquire("k", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("free after release");
        assert!(fourth.token().is_some());
    }

    /// Renewal keeps a lock past its TTL; a renewal by a stale token does
    /// not extend another holder's lock.
    #[tokio::test]
    async fn renewal_extends_only_our_own_lock() {
        let redis = RedisServer::start();
        let lock = lock(&redis);
        let ttl = Duration::from_millis(300);
        let held = lock.acquire("k", ttl).await.unwrap().unwrap();
        let kept = tokio::time::timeout(ttl * 3, held.keep()).await;
        assert!(kept.is_err(), "keep never returns");
        assert!(
            lock.try_acquire("k", ttl).await.unwrap().is_none(),
            "still held three TTLs later"
        );
        let token = held.token().unwrap().clone();
        held.release().await.unwrap();
        let other = lock
            .try_acquire("k", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(!lock.renew(&token, ttl).await.unwrap(), "not ours any more");
        assert!(lock.renew(&other, Duration::from_secs(30)).await.unwrap());
        assert!(lock.release(other).await.unwrap());
    }

    #[tokio::test]
    async fn calls_fail_when_redis_is_down() {
        let mut redis = RedisServer::start();
        let lock = lock(&redis);
        redis.stop();
        assert!(lock.try_acquire("k", Duration::from_secs(1)).await.is_err());
    }
}
