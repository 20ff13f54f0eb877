//! [`AnyBlocklist`]: a blocklist chosen at run time.

use std::{net::IpAddr, time::Duration};

use super::{BlockEntry, Blocklist, BlocklistError, LocalBlocklist, Lookup, RedisBlocklist};

/// A blocklist chosen at run time, from configuration: in process, or
/// shared through Redis ([`Blocklist`] is not object-safe).
///
/// ```
/// use hasivu_ratelimit::shield::{AnyBlocklist, LocalBlocklist, RedisBlocklist, ShieldLayer};
///
/// # fn main() -> Result<(), hasivu_ratelimit::shield::BlocklistError> {
/// let redis_url: Option<&str> = None; // e.g. std::env::var("REDIS_URL").ok()
/// let blocklist = match redis_url {
///     Some(url) => AnyBlocklist::Redis(RedisBlocklist::builder(url).build()?),
///     None => AnyBlocklist::Local(LocalBlocklist::new()),
/// };
/// let layer = ShieldLayer::new().blocklist(blocklist);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub enum AnyBlocklist {
    /// [`LocalBlocklist`].
    Local(LocalBlocklist),
    /// [`RedisBlocklist`].
    Redis(RedisBlocklist),
}

impl From<LocalBlocklist> for AnyBlocklist {
    fn from(blocklist: LocalBlocklist) -> Self {
        Self::Local(blocklist)
    }
}

impl From<RedisBlocklist> for AnyBlocklist {
    fn from(blocklist: RedisBlocklist) -> Self {
        Self::Redis(blocklist)
    }
}

impl Blocklist for AnyBlocklist {
    fn lookup_now(&self, ip: IpAddr) -> Lookup {
        match self {
            Self::Local(b) => b.lookup_now(ip),
            Self::Redis(b) => b.lookup_now(ip),
        }
    }

    async fn lookup(&self, ip: IpAddr) -> Option<Duration> {
        match self {
            Self::Local(b) => b.lookup(ip).await,
            Self::Redis(b) => b.lookup(ip).await,
        }
    }

    async fn block(&self, ip: IpAddr, ttl: Duration, reason: &str) -> Result<(), BlocklistError> {
        match self {
            Self::Local(b) => b.block(ip, ttl, reason).await,
            Self::Redis(b) => b.block(ip, ttl, reason).await,
        }
    }

    async fn unblock(&self, ip: IpAddr) -> Result<bool, BlocklistError> {
        match self {
            Self::Local(b) => b.unblock(ip).await,
            Self::Redis(b) => b.unblock(ip).await,
        }
    }

    async fn entries(&self) -> Result<Vec<BlockEntry>, BlocklistError> {
        match self {
            Self::Local(b) => b.entries().await,
            Self::Redis(b) => b.entries().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_variant_blocks_and_unblocks() {
        let blocklist = AnyBlocklist::from(LocalBlocklist::new());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(blocklist.lookup(ip).await.is_none());
        blocklist
            .block(ip, Duration::from_secs(60), "test")
            .await
            .unwrap();
        assert!(blocklist.lookup(ip).await.is_some());
        assert_eq!(blocklist.entries().await.unwrap().len(), 1);
        assert!(blocklist.unblock(ip).await.unwrap());
        assert!(blocklist.lookup(ip).await.is_none());
    }
}
