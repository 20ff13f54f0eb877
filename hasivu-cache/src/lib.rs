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
//! The API is being built; see the repository's README for what has landed.
//!
//! [moka]: https://docs.rs/moka
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod cache;
mod codec;
mod error;
#[cfg(feature = "redis")]
mod l2;
#[cfg(feature = "redis")]
mod lock;
mod options;
mod stats;

pub use breaker::BreakerState;
pub use cache::{Cache, CacheBuilder, WarmReport};
pub use codec::{Codec, JsonCodec};
pub use error::{BoxError, CodecError, Error};
pub use options::EntryOptions;
pub use stats::CacheStats;
