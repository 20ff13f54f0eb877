//! Redis memory use as a load signal.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::client::{Connector, Link};
use crate::{Error, LoadSignal};

/// Redis memory use between 0 and 1, as a [`LoadSignal`]: `used_memory /
/// maxmemory` from `INFO memory`, or `used_memory / capacity` when Redis
/// runs without `maxmemory` and a capacity was configured.
///
/// A background task samples Redis every few seconds (5 by default) into
/// an atomic, so [`load`](LoadSignal::load) costs one atomic read. While
/// Redis is unreachable, or when neither `maxmemory` nor a capacity is
/// known, the signal reads 0 and says so once in the log. The task stops
/// when the last clone is dropped.
///
/// ```no_run
/// use hasivu_ratelimit::{CompositeLoad, InFlight, LoadControl, RedisMemory};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hasivu_ratelimit::Error> {
/// let memory = RedisMemory::builder("redis://127.0.0.1:6379/")
///     .capacity(512 * 1024 * 1024) // used when maxmemory is 0
///     .build()?;
/// let load = CompositeLoad::new()
///     .part(0.7, InFlight::new(1000))
///     .part(0.3, memory);
/// let control = LoadControl::new(load);
/// control.spawn();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisMemory {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    capacity: Option<u64>,
    timeout: Duration,
    load: AtomicU64,
    /// A failure or a missing limit was logged and not yet resolved.
    logged_down: AtomicBool,
    logged_unbounded: AtomicBool,
}

impl std::fmt::Debug for RedisMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMemory")
            .field("load", &self.load())
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisMemory`]; see [`RedisMemory::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisMemoryBuilder {
    url: String,
    every: Duration,
    capacity: Option<u64>,
    timeout: Duration,
}

impl RedisMemory {
    /// A builder for the server at `url`: sampled every 5 s, each sample
    /// bounded by 1 s, no capacity.
    pub fn builder(url: impl Into<String>) -> RedisMemoryBuilder {
        RedisMemoryBuilder {
            url: url.into(),
            every: Duration::from_secs(5),
            capacity: None,
            timeout: Duration::from_secs(1),
        }
    }

    /// Samples Redis now and returns the new value (also what
    /// [`load`](LoadSignal::load) returns from now on).
    pub async fn refresh(&self) -> f64 {
        self.inner.sample().await
    }
}

impl RedisMemoryBuilder {
    /// How often Redis is sampled (default 5 s).
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(10));
        self
    }

    /// The memory Redis may use, in bytes, for servers without
    /// `maxmemory` (default: none, so such a server reads 0).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes).filter(|b| *b > 0);
        self
    }

    /// The timeout of each sample (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Starts sampling in the background; the first sample is taken at
    /// once. Building succeeds while Redis is down.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime, [`Error::Redis`] for
    /// an invalid URL.
    pub fn build(self) -> Result<RedisMemory, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime("RedisMemoryBuilder::build"));
        }
        let link = Link::new(Connector::single(&self.url, self.timeout)?)?;
        let memory = RedisMemory {
            inner: Arc::new(Inner {
                link,
                capacity: self.capacity,
                timeout: self.timeout,
                load: AtomicU64::new(0f64.to_bits()),
                logged_down: AtomicBool::new(false),
                logged_unbounded: AtomicBool::new(false),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&memory.inner);
        let every = self.every;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.sample().await;
            }
        });
        Ok(memory)
    }
}

impl LoadSignal for RedisMemory {
    fn load(&self) -> f64 {
        f64::from_bits(self.inner.load.load(Ordering::Relaxed))
    }
}

impl Inner {
    async fn sample(&self) -> f64 {
        let (generation, mut conn) = self.link.get();
        let info = tokio::time::timeout(
            self.timeout,
            redis::cmd("INFO")
                .arg("memory")
                .query_async::<String>(&mut conn),
        )
        .await;
        let load = match info {
            Ok(Ok(text)) => {
                if self.logged_down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis memory signal: redis answers again");
                }
                let (used, max) = parse_info(&text).unwrap_or((0, 0));
                match fraction(used, max, self.capacity) {
                    Some(load) => {
                        self.logged_unbounded.store(false, Ordering::Relaxed);
                        load
                    }
                    None => {
                        if !self.logged_unbounded.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                used,
                                "redis has no maxmemory and no capacity was configured: \
                                 the redis memory signal reads 0"
                            );
                        }
                        0.0
                    }
                }
            }
            Ok(Err(error)) => {
                if error.is_timeout() {
                    // A connection that stopped answering without closing
                    // is never remade by the client: the next sample
                    // connects afresh.
                    self.link.replace(generation);
                }
                self.down(&error);
                0.0
            }
            Err(_elapsed) => {
                self.link.replace(generation);
                self.down(&format!("no answer within {:?}", self.timeout));
                0.0
            }
        };
        self.load.store(load.to_bits(), Ordering::Relaxed);
        load
    }

    fn down(&self, error: &dyn std::fmt::Display) {
        if !self.logged_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "redis memory signal: redis unreachable, reading 0");
        }
    }
}

/// `used_memory` and `maxmemory` from an `INFO memory` reply.
fn parse_info(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            line.trim_end()
                .strip_prefix(name)?
                .strip_prefix(':')?
                .parse::<u64>()
                .ok()
        })
    };
    Some((field("used_memory")?, field("maxmemory")?))
}

/// The fraction of memory used; `None` when no bound is known.
fn fraction(used: u64, max: u64, capacity: Option<u64>) -> Option<f64> {
    let bound = if max > 0 { max } else { capacity? };
    Some((used as f64 / bound as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                        used_memory_rss:5000000\r\nmaxmemory:67108864\r\nmaxmemory_human:64.00M\r\n";

    #[test]
    fn reads_used_and_max_memory() {
        assert_eq!(parse_info(INFO), Some((1_048_576, 67_108_864)));
        assert_eq!(parse_info("# Memory\r\nused_memory_rss:5\r\n"), None);
    }

    #[test]
    fn fraction_of_maxmemory_or_capacity() {
        assert_eq!(fraction(16, 64, None), Some(0.25));
        assert_eq!(fraction(16, 0, Some(32)), Some(0.5));
        assert_eq!(fraction(16, 0, None), None);
        assert_eq!(fraction(128, 64, None), Some(1.0), "clamped");
    }

    #[test]
    fn building_needs_a_runtime() {
        assert!(matches!(
            RedisMemory::builder("redis://127.0.0.1:1/").build(),
            Err(Error::NoRuntime(_))
        ));
    }
}
