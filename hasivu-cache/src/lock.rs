//! A Redis lock for single-flight loads across instances.

use std::{sync::Arc, time::Duration};

use redis::Script;

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
}

impl DistributedLock {
    /// A lock manager on the L2's connection.
    pub(crate) fn new(l2: RedisL2) -> Self {
        Self {
            l2,
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    /// Takes the lock on `key` for `ttl`; `Ok(None)` when another holder has it.
    pub(crate) async fn try_acquire(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, L2Error> {
        let full = self.l2.full_key(&format!("lock:{key}"));
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut cmd = redis::cmd("SET");
        cmd.arg(&full)
            .arg(&token)
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
        Ok(acquired.map(|_| LockToken { key: full, token }))
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

    #[tokio::test]
    async fn calls_fail_when_redis_is_down() {
        let mut redis = RedisServer::start();
        let lock = lock(&redis);
        redis.stop();
        assert!(lock.try_acquire("k", Duration::from_secs(1)).await.is_err());
    }
}
