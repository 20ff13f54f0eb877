//! A multi-layer cache for async Rust services.
//!
//! `hasivu-cache` puts a bounded in-process L1 ([moka]) in front of a shared
//! Redis L2 and answers `get_or_load` calls the way a busy API needs:
//!
//! - **Single flight.** Concurrent loads of one key run the loader once per
//!   process, and optionally once across instances through a Redis lock.
//! - **Fail-safe.** When the loader fails or is slow, a stale value within a
//!   bounded age is served instead of an error; soft and hard loader timeouts;
//!   eager refresh before expiry.
//! - **Calm when Redis fails.** Every L2 call has a timeout and a circuit
//!   breaker; the cache goes on with L1 and the loader.
//! - **Invalidation that reaches every instance.** Rules cascade from one key
//!   pattern to related ones (`user:*` → `user:profile:*`, `auth:sessions:*`),
//!   per-prefix generation counters make a whole prefix miss in O(1), and a
//!   Redis pub/sub backplane drops the affected L1 entries on the other
//!   instances.
//! - **An HTTP cache layer** for tower services that stores already-encoded
//!   response variants and answers `If-None-Match` without calling the service.
//!
//! Values in Redis are JSON by default, so a Node.js service that writes
//! `JSON.stringify` values under the same key names (`menu:daily:current`,
//! `user:profile:*`) shares the cache; the codec is pluggable.
//!
//! ```no_run
//! use std::time::Duration;
//! use hasivu_cache::{Cache, EntryOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hasivu_cache::Error> {
//! let cache = Cache::builder()
//!     .name("api")
//!     .max_l1_bytes(64 * 1024 * 1024)
//!     .redis("redis://127.0.0.1:6379/") // optional: L2, shared by instances
//!     .distributed_lock(Duration::from_secs(5)) // optional: one load per key across instances
//!     .build()?;
//!
//! let menu_options = EntryOptions::new(Duration::from_secs(300))
//!     .l1_ttl(Duration::from_secs(30))
//!     .jitter(Duration::from_secs(5))
//!     .fail_safe(Duration::from_secs(3600))
//!     .soft_timeout(Duration::from_millis(100))
//!     .eager_refresh(0.8);
//!
//! let menu: Vec<String> = cache
//!     .get_or_load("menu:daily:current", &menu_options, || async {
//!         Ok::<_, std::io::Error>(vec!["ragi mudde".to_owned()]) // the database query
//!     })
//!     .await?;
//! # let _ = menu;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `redis` | yes | the Redis L2, its circuit breaker and the distributed lock |
//! | `cluster` | no | Redis Cluster as L2 ([`CacheBuilder::redis_cluster`]) |
//! | `http` | no | the tower HTTP response cache layer (`CacheLayer`, module `http`) |
//!
//! # Where this comes from
//!
//! This crate serves sections 2.1 (multi-layer caching) and 2.2 (invalidation
//! patterns) of the HASIVU performance report. The report's own code never
//! invalidates its in-process layer, so other instances keep serving stale
//! data, and deletes Redis patterns with `KEYS`-style scans on the request
//! path; this crate does neither.
//!
//! # Status
//!
//! Tests that control time with `tokio::time::pause` build the cache with
//! [`CacheBuilder::tokio_time`], so that entries expire on tokio's clock.
//!
//! Available: [`Cache`] with L1 (moka, bounded by bytes, per-entry TTL) and
//! L2 (Redis: plain JSON values, GET + PTTL in one round trip, a timeout and
//! circuit breaker on every call), `get_or_load` with single flight, the
//! distributed lock, fail-safe stale values with throttling, soft and hard
//! loader timeouts, eager refresh, warmers ([`Cache::add_warmer`],
//! [`Cache::warm`]) and [`Cache::stats`] plus `metrics` counters
//! (`hasivu_cache_lookups_total{result}`, `hasivu_cache_loads_total`,
//! `hasivu_cache_load_errors_total`, `hasivu_cache_stale_served_total`,
//! `hasivu_cache_l2_errors_total`, the `hasivu_cache_load_duration_seconds`
//! histogram), and a strict mode that returns Redis failures instead of
//! absorbing them, and Redis Cluster as L2 (feature `cluster`); invalidation
//! rules, per-prefix generations and the backplane ([`Cache::invalidate`]);
//! the HTTP response cache layer (feature `http`). Not yet: a
//! breaker-state gauge.
//!
//! [moka]: https://docs.rs/moka
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without Redis, the halves of the invalidation code that talk to L2 and the
// backplane are compiled out and their helpers go unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

#[cfg(feature = "redis")]
mod backplane;
mod breaker;
mod cache;
mod codec;
mod duration;
mod error;
mod generations;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod invalidation;
#[cfg(feature = "redis")]
mod keys;
#[cfg(feature = "redis")]
mod l2;
#[cfg(feature = "redis")]
mod l2_invalidation;
#[cfg(feature = "redis")]
mod lock;
mod message;
mod options;
mod pattern;
mod stats;

#[cfg(feature = "http")]
pub use crate::http::{CacheLayer, CacheService, CacheStatus, RoutePolicy};
pub use breaker::BreakerState;
pub use cache::{Cache, CacheBuilder, WarmReport};
pub use codec::{Codec, JsonCodec};
pub use error::{BoxError, CodecError, Error};
pub use invalidation::Invalidation;
pub use options::EntryOptions;
pub use pattern::{InvalidationRules, Pattern, PatternError, escape_glob};
pub use stats::CacheStats;
