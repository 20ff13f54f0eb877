//! [`LocalBlocklist`]: blocked clients in process memory.

use std::{net::IpAddr, sync::Arc, time::Duration};

use super::{BlockEntry, Blocklist, BlocklistError, Lookup};
use crate::shield::state::{Clock, Table, client_bits, client_ip};

/// A blocklist in process memory: a bounded map from clients to the end
/// of their block. Cheap to clone (clones share the map), so keep one to
/// unblock clients from an admin endpoint.
///
/// At most `max_entries` clients (default 100 000). When full, expired
/// blocks go first, then the block closest to its end: never an arbitrary
/// one, so clients blocked for long cannot be let out by an attacker who
/// gets many new addresses blocked. An empty blocklist answers with one
/// atomic load.
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::shield::{Blocklist, LocalBlocklist, Lookup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let blocklist = LocalBlocklist::new();
/// let ip = "203.0.113.9".parse().unwrap();
/// blocklist.block(ip, Duration::from_secs(3600), "sqli").await.unwrap();
/// assert!(matches!(blocklist.lookup_now(ip), Lookup::Blocked(left) if left <= Duration::from_secs(3600)));
/// assert_eq!(blocklist.entries().await.unwrap()[0].reason, "sqli");
/// assert!(blocklist.unblock(ip).await.unwrap());
/// assert_eq!(blocklist.lookup_now(ip), Lookup::Clear);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LocalBlocklist {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Table<Entry>,
    clock: Clock,
}

#[derive(Debug)]
struct Entry {
    until: u64,
    reason: Box<str>,
}

impl Default for LocalBlocklist {
    fn default() -> Self {
        Self::with_options(100_000, false)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl LocalBlocklist {
    /// An empty blocklist for up to 100 000 clients.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty blocklist for up to `max_entries` clients.
    pub fn with_capacity(max_entries: usize) -> Self {
        Self::with_options(max_entries, false)
    }

    /// An empty blocklist reading tokio's clock, so tests can pause and
    /// advance time.
    pub fn with_tokio_time() -> Self {
        Self::with_options(100_000, true)
    }

    fn with_options(max: usize, tokio_time: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Table::new("blocklist", max.max(1)),
                clock: Clock::new(tokio_time),
            }),
        }
    }

    /// The number of clients held (expired ones included until they are
    /// looked at or swept).
    pub fn len(&self) -> usize {
        self.inner.table.len()
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.inner.table.is_empty()
    }

    pub(crate) fn insert(&self, ip: IpAddr, ttl: Duration, reason: &str) {
        let now = self.inner.clock.now();
        let until = now.saturating_add(nanos(ttl));
        self.inner.table.with(
            client_bits(ip),
            || Entry {
                until,
                reason: reason.into(),
            },
            // Expired blocks go first, then the one closest to its end.
            |e| (e.until > now).then_some(e.until),
            |e| {
                e.until = until;
                e.reason = reason.into();
            },
        );
    }

    pub(crate) fn remaining(&self, ip: IpAddr) -> Option<Duration> {
        if self.inner.table.is_empty() {
            return None;
        }
        let key = client_bits(ip);
        let now = self.inner.clock.now();
        let left = self.inner.table.get(key, |e| e.until.saturating_sub(now))?;
        if left == 0 {
            self.inner.table.remove(key);
            return None;
        }
        Some(Duration::from_nanos(left))
    }

    pub(crate) fn remove(&self, ip: IpAddr) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .table
            .remove(client_bits(ip))
            .is_some_and(|e| e.until > now)
    }

    pub(crate) fn list(&self) -> Vec<BlockEntry> {
        let now = self.inner.clock.now();
        let mut out = Vec::new();
        self.inner.table.retain(|key, e| {
            if e.until <= now {
                return false;
            }
            out.push(BlockEntry {
                ip: client_ip(key),
                reason: e.reason.to_string(),
                remaining: Duration::from_nanos(e.until - now),
            });
            true
        });
        out
    }
}

impl Blocklist for LocalBlocklist {
    fn lookup_now(&self, ip: IpAddr) -> Lookup {
        match self.remaining(ip) {
            Some(left) => Lookup::Blocked(left),
            None => Lookup::Clear,
        }
    }

    async fn lookup(&self, ip: IpAddr) -> Option<Duration> {
        self.remaining(ip)
    }

    async fn block(&self, ip: IpAddr, ttl: Duration, reason: &str) -> Result<(), BlocklistError> {
        self.insert(ip, ttl, reason);
        Ok(())
    }

    async fn unblock(&self, ip: IpAddr) -> Result<bool, BlocklistError> {
        Ok(self.remove(ip))
    }

    async fn entries(&self) -> Result<Vec<BlockEntry>, BlocklistError> {
        Ok(self.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_expire() {
        let list = LocalBlocklist::with_tokio_time();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(list.lookup_now(ip), Lookup::Clear);
        list.block(ip, Duration::from_secs(10), "xss")
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(list.lookup_now(ip), Lookup::Blocked(Duration::from_secs(6)));
        // IPv6 clients are blocked by /64.
        let v6: IpAddr = "2001:db8:0:1::5".parse().unwrap();
        list.block(v6, Duration::from_secs(60), "sqli")
            .await
            .unwrap();
        assert!(matches!(
            list.lookup_now("2001:db8:0:1:ffff::1".parse().unwrap()),
            Lookup::Blocked(_)
        ));
        assert_eq!(
            list.lookup_now("2001:db8:0:2::5".parse().unwrap()),
            Lookup::Clear
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(list.lookup_now(ip), Lookup::Clear);
        let entries = list.entries().await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].ip.to_string(), "2001:db8:0:1::");
        assert!(!list.unblock(ip).await.unwrap());
        assert!(list.unblock(v6).await.unwrap());
        assert!(list.is_empty());
    }

    #[tokio::test]
    async fn a_full_blocklist_drops_the_block_closest_to_its_end() {
        let list = LocalBlocklist::with_capacity(64);
        let long: IpAddr = "203.0.113.1".parse().unwrap();
        list.block(long, Duration::from_secs(86_400), "sqli")
            .await
            .unwrap();
        // Many short blocks, enough to fill the list many times over: the
        // long one is never the one to go.
        for i in 0..10_000u32 {
            let other = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            list.block(other, Duration::from_secs(60), "probe")
                .await
                .unwrap();
            assert!(
                matches!(list.lookup_now(long), Lookup::Blocked(_)),
                "the day-long block went after {i} short ones"
            );
        }
        assert!(list.len() <= 64, "{}", list.len());
    }

    #[test]
    fn bounded() {
        let list = LocalBlocklist::with_capacity(100);
        for i in 0..10_000u32 {
            list.insert(IpAddr::from(i.to_be_bytes()), Duration::from_secs(60), "x");
        }
        assert!(list.len() <= 128, "{}", list.len());
    }
}
