//! Per-client state for the shield: a clock, the client's identity as a
//! number, and a bounded table keyed by it.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Nanoseconds since the clock was made, plus one second so 0 means
/// "never". The system clock is read through `quanta` (the CPU's
/// time-stamp counter); tests read tokio's clock to pause and advance it.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    Tsc(quanta::Clock, quanta::Instant),
    Tokio(tokio::time::Instant),
}

const EPOCH_OFFSET: u64 = 1_000_000_000;

impl Clock {
    pub(crate) fn new(tokio_time: bool) -> Self {
        if tokio_time {
            Clock::Tokio(tokio::time::Instant::now())
        } else {
            let clock = quanta::Clock::new();
            let start = clock.now();
            Clock::Tsc(clock, start)
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let elapsed = match self {
            Clock::Tsc(clock, start) => clock.now().saturating_duration_since(*start),
            Clock::Tokio(start) => start.elapsed(),
        };
        u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX - EPOCH_OFFSET)
            .saturating_add(EPOCH_OFFSET)
    }
}

/// A client as a number: an IPv4 address as its IPv4-mapped IPv6 form,
/// an IPv6 address by its /64 (one subscriber usually holds a whole /64,
/// as [`ip_key`](crate::ip_key) groups them).
pub(crate) fn client_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

/// The address a number stands for (the /64's first address for IPv6).
pub(crate) fn client_ip(bits: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(bits);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

const SHARDS: usize = 32;

/// A bounded map from clients to `T`, in shards behind short locks.
///
/// When a shard is full, its entries whose clients have rested are dropped;
/// if none has, the one worth least is evicted (counted in
/// `hasivu_shield_state_evictions_total`): each table ranks its entries so
/// that the client that has been quiet the longest goes first and one that
/// is actively counting goes last. Never an arbitrary one: an attacker with
/// many addresses would otherwise evict its own counter, or another
/// client's, by sending from new addresses.
pub(crate) struct Table<T> {
    shards: Box<[Mutex<HashMap<u128, T, foldhash::fast::RandomState>>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    name: &'static str,
    /// The entries held, kept beside the shards so an empty table answers
    /// without a lock.
    total: AtomicUsize,
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("max", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl<T> Table<T> {
    pub(crate) fn new(name: &'static str, max: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: max.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            name,
            total: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, T, foldhash::fast::RandomState>> {
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> 59) as usize % SHARDS]
    }

    /// Runs `f` on the entry of `key`, made by `make` when missing.
    ///
    /// `keep` ranks an entry when room is needed: `None` when its client
    /// has rested (the entry may go), otherwise its worth, the lowest
    /// evicted first. Only called when the shard is full: a pass over the
    /// shard, under its lock, that drops the rested and finds the least.
    pub(crate) fn with<K: Ord, R>(
        &self,
        key: u128,
        make: impl FnOnce() -> T,
        keep: impl Fn(&T) -> Option<K>,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let mut map = self.shard(key).lock().expect("shield state lock");
        if let Some(entry) = map.get_mut(&key) {
            return f(entry);
        }
        if map.len() >= self.per_shard {
            let before = map.len();
            let mut least: Option<(K, u128)> = None;
            map.retain(|k, v| match keep(v) {
                None => false,
                Some(worth) => {
                    if least.as_ref().is_none_or(|(w, _)| worth < *w) {
                        least = Some((worth, *k));
                    }
                    true
                }
            });
            if map.len() >= self.per_shard
                && let Some((_, victim)) = least
            {
                map.remove(&victim);
                metrics::counter!("hasivu_shield_state_evictions_total", "table" => self.name)
                    .increment(1);
            }
            self.total.fetch_sub(before - map.len(), Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        f(map.entry(key).or_insert_with(make))
    }

    /// Runs `f` on the entry of `key` if there is one.
    pub(crate) fn get<R>(&self, key: u128, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.shard(key)
            .lock()
            .expect("shield state lock")
            .get_mut(&key)
            .map(f)
    }

    /// Removes the entry of `key`; whether there was one.
    pub(crate) fn remove(&self, key: u128) -> Option<T> {
        let removed = self
            .shard(key)
            .lock()
            .expect("shield state lock")
            .remove(&key);
        if removed.is_some() {
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Calls `f` on every entry, dropping those for which it returns
    /// false.
    pub(crate) fn retain(&self, mut f: impl FnMut(u128, &mut T) -> bool) {
        for shard in &*self.shards {
            let mut map = shard.lock().expect("shield state lock");
            let before = map.len();
            map.retain(|k, v| f(*k, v));
            self.total.fetch_sub(before - map.len(), Ordering::Relaxed);
        }
    }

    /// The entries held.
    pub(crate) fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether no entry is held: one atomic load.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_as_numbers() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_bits(v4), client_bits(mapped));
        assert_eq!(client_ip(client_bits(v4)), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_bits(a), client_bits(b));
        assert_eq!(client_ip(client_bits(a)).to_string(), "2001:db8:1:2::");
    }

    #[test]
    fn a_full_table_drops_the_rested_then_the_least_worth() {
        // Two entries per shard; the worth is the value.
        let table: Table<u64> = Table::new("test", 64);
        let table = &table;
        let same_shard = |of: u128| {
            let shard = std::ptr::from_ref(table.shard(of));
            (of + 1..).find(|&k| std::ptr::eq(table.shard(k), shard))
        };
        let (a, b) = (1u128, same_shard(1).unwrap());
        table.with(a, || 10, |v| Some(*v), |_| ());
        table.with(b, || 20, |v| Some(*v), |_| ());
        // Full: the least worth goes, whichever came first.
        let c = same_shard(b).unwrap();
        table.with(c, || 30, |v| Some(*v), |_| ());
        assert_eq!(table.get(a, |v| *v), None);
        assert_eq!(table.get(b, |v| *v), Some(20));
        // A rested entry goes before any other, however much it was worth.
        let d = same_shard(c).unwrap();
        table.with(d, || 5, |v| (*v != 30).then_some(*v), |_| ());
        assert_eq!(table.get(c, |v| *v), None);
        assert_eq!(table.get(b, |v| *v), Some(20));
        assert_eq!(table.get(d, |v| *v), Some(5));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn the_table_stays_bounded() {
        let table: Table<u64> = Table::new("test", 64);
        for i in 0..10_000u128 {
            table.with(i, || 0, |v| (*v <= 5_000).then_some(*v), |v| *v = 1);
        }
        assert!(table.len() <= 64, "{}", table.len());
        table.with(u128::MAX, || 7, |v| Some(*v), |v| *v += 1);
        assert_eq!(table.get(u128::MAX, |v| *v), Some(8));
        assert_eq!(table.remove(u128::MAX), Some(8));
        table.retain(|_, _| false);
        assert_eq!(table.len(), 0);
        assert!(table.is_empty());
    }
}
