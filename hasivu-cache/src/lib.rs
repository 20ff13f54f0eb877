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
//! # Invalidation
//!
//! [`Cache::invalidate`] takes a key (`menu:daily:current`) or a prefix
//! glob (`user:*`, see [`Pattern`]); [`InvalidationRules`] widen it, and
//! the cascade is transitive and cycle-safe. The report's four rules are
//! [`InvalidationRules::report_defaults`]:
//!
//! ```
//! use hasivu_cache::{Cache, InvalidationRules};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hasivu_cache::Error> {
//! let cache = Cache::builder()
//!     .rules(
//!         InvalidationRules::report_defaults()
//!             .rule("school:*", ["menu:*"])?, // and your own
//!     )
//!     .build()?;
//! // After the order is committed to the database:
//! let done = cache.invalidate_key("order:1234").await?;
//! // `order:*` covers the key, so `order:history:*`, `order:active:*` and
//! // `analytics:orders:*` go too.
//! assert_eq!(done.patterns.len(), 4);
//! # Ok(())
//! # }
//! ```
//!
//! **A prefix costs O(1), whatever it covers.** Each invalidation takes one
//! new generation (Redis `TIME` in microseconds, kept increasing by a Lua
//! script, so it still grows after Redis restarts without its data) and
//! records it for every prefix of the cascade in the hash
//! `hasivu:{generations}`. Every L2 value is written with a stamp beside it
//! (`hasivu:stamp:{<key>}`, same cluster slot): the generation its writer
//! knew when the load started. A value is valid exactly when no prefix
//! covering its key has a newer generation. The stamp is read with the
//! value in one `MULTI`/`EXEC` (one round trip), and written with it by one
//! script, so a reader never pairs a value with another write's stamp; it
//! costs Redis one small key per entry. In L1, each entry remembers the
//! invalidations it was loaded after, so an invalidated prefix is a miss
//! there too at the cost of one atomic load per hit, without walking L1.
//! Nothing is scanned or deleted on the request path; the memory of
//! invalidated values comes back with their TTL, or at once through the
//! maintenance call [`Cache::purge`] (`SCAN` + `UNLINK`, on every master of
//! a cluster, never `KEYS`).
//!
//! **A load overtaken by a write is not kept.** A load that read the
//! database before a write and returns after it ([`Cache::set`],
//! [`Cache::remove`], an invalidation of its key or of a prefix covering
//! it, on this instance or on another) gives its value to its callers but
//! stores it nowhere. Every write takes a generation from the same
//! sequence and leaves it in the key's stamp (a deleted key keeps its stamp
//! for two minutes, a tombstone); a loaded value is written to Redis by a
//! script that refuses when the stamp is newer than the load, and in L1
//! only when no write of the key was applied here since it started
//! (counted in a fixed table of 4096 counters, so a collision only ever
//! keeps a value out). A load that ran longer than a minute is not written
//! to Redis (its stamp check could come after the tombstone expired).
//!
//! **Every instance's L1 follows within milliseconds.** The writing
//! instance updates its own L1; a backplane message on Redis pub/sub
//! (sharded pub/sub on a cluster) makes the others drop the keys and
//! record the prefixes. Explicit writes ([`Cache::set`], [`Cache::remove`])
//! are announced too, so the others drop their L1 copy; values a loader
//! produced are not (they are reads, not changes). On one Redis server, a
//! write, its stamp and its message are one script: all or nothing, one
//! round trip. A message is small JSON (operation, keys or prefixes,
//! generation, origin, time) and an instance ignores its own. Pub/sub loses
//! messages sent while a subscriber is away: while the subscription is down,
//! the instance does not read L2 (its L1 goes on serving, within each
//! entry's L1 TTL); once it is back, the instance replays its own writes and
//! invalidations that could not reach Redis (a write is replayed as a
//! delete: Redis holds an older value), re-reads the generations and
//! flushes its L1. Until the replay, this instance does not read those keys
//! from L2.
//!
//! **A silent subscriber is detected within 3 s.** A subscription can be
//! lost without its connection closing: a Redis Cluster unsubscribes its
//! shard subscribers when the channel's slot moves or its master is
//! demoted, and a half-open TCP connection just goes quiet. An unsubscribe
//! the instance did not ask for counts as a loss at once; and a `PING`
//! goes over the subscribing connection every second, so a connection
//! that has answered nothing for 3 s is taken for dead
//! ([`CacheBuilder::backplane_heartbeat`] changes both). After a loss the
//! instance stops reading L2, drops the connection, subscribes on a new
//! one (on a cluster, wherever the slot now lives) and resyncs as above.
//! The resync runs beside the subscriber, which goes on applying messages
//! meanwhile. Received messages wait in a queue of at most 4096; a flood
//! that overflows it costs a resync, not memory.
//!
//! **Sharing with other services.** Values stay plain JSON under their own
//! names. A value another service wrote has no stamp and reads as stamp 0
//! (or as the stamp a write from this crate left): valid until a prefix
//! covering it is invalidated, a miss afterwards until it is written again. Another service invalidates a prefix by running the
//! same bump (a `TIME`-based generation `HSET` into `hasivu:{generations}`)
//! and publishing `{"op":"invalidate","p":["menu:"],"g":<generation>,"o":<its id>,"t":<ms>}`
//! on `hasivu:backplane`; all these names sit under the key prefix. The
//! namespace `hasivu:` under the key prefix belongs to the cache.
//!
//! # Where this comes from
//!
//! This crate serves sections 2.1 (multi-layer caching) and 2.2 (invalidation
//! patterns) of the HASIVU performance report. The report's own code never
//! invalidates its in-process layer, so other instances keep serving stale
//! data, and deletes Redis patterns with `KEYS`-style scans on the request
//! path; this crate does neither: invalidation is a generation bump plus a
//! backplane message, and scanning is a separate maintenance call.
//!
//! # Observability
//!
//! [`Cache::stats`] gives counters since the cache was built, the L2
//! breaker's state and whether the backplane is in sync. Through the
//! `metrics` facade: `hasivu_cache_lookups_total{cache, result}`,
//! `hasivu_cache_loads_total`, `hasivu_cache_load_errors_total`,
//! `hasivu_cache_stale_served_total`, `hasivu_cache_l2_errors_total`,
//! `hasivu_cache_invalidations_total`,
//! `hasivu_cache_backplane_messages_total{direction}`,
//! `hasivu_cache_backplane_losses_total{reason}` (`unsubscribed`,
//! `heartbeat`, `overflow`, `disconnected`: each time the backplane lost
//! its subscription; a warning is logged when that ends a synced period),
//! and the histograms
//! `hasivu_cache_load_duration_seconds` and
//! `hasivu_cache_backplane_delay_seconds` (sender's clock to receiver's).
//!
//! Tests that control time with `tokio::time::pause` build the cache with
//! [`CacheBuilder::tokio_time`], so that entries expire on tokio's clock.
//!
//! [moka]: https://docs.rs/moka
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without Redis, the halves of the invalidation code that talk to L2 and the
// backplane are compiled out and their helpers go unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;
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
#[cfg(feature = "redis")]
mod log_gate;
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
