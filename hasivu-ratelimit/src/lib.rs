//! Adaptive rate limiting and an abuse shield for tower services.
//!
//! `hasivu-ratelimit` limits requests per key and route with the features a
//! multi-instance API needs and single-process limiters lack:
//!
//! - **Policies** of `limit` per `window` with an optional burst, per route,
//!   with tier multipliers (free ×1, premium ×3, admin ×10 by default) and
//!   keys taken from the client IP, a user id, an API key or a closure.
//! - **Load adaptation.** A load signal between 0 and 1 scales limits down
//!   when the service is busy, with hysteresis so limits do not flap.
//! - **Stores.** A local GCRA store with a bounded key count, and a Redis
//!   store updated by one atomic Lua script per check that reads Redis `TIME`
//!   and never counts rejected requests, so instances share one quota.
//! - **A declared fail policy** (open, closed or local fallback) with a
//!   timeout and circuit breaker when Redis is slow or down.
//! - **Standard headers**: `RateLimit-Policy`, `RateLimit` and `Retry-After`
//!   on 429 answers with an `application/problem+json` body.
//! - **An abuse shield** that scores requests with tokenising detectors for
//!   SQL injection, XSS and path traversal, scanner user agents and probing
//!   patterns, and keeps a local or shared blocklist with an allow-list that
//!   always wins.
//!
//! # Where this comes from
//!
//! This crate serves sections 3.1 (adaptive rate limiting) and 3.2 (DDoS
//! protection) of the HASIVU performance report. The report's limiter counts
//! rejected requests in a non-atomic pipeline, so a client that retries while
//! limited stays locked out, and its regex "SQL injection" check flags
//! harmless text such as "Select your plan"; this crate fixes both.
//!
//! ```
//! use hasivu_ratelimit::{Limiter, Policies, Tiers, http::RateLimitLayer};
//!
//! // The report's policies (general 1000 per 15 min, login and payments
//! // stricter) and tiers (free ×1, premium ×3, admin ×10), counted in
//! // process; see `RedisStore` (feature `redis`) to share them.
//! let limiter = Limiter::builder()
//!     .policies(Policies::report_defaults())
//!     .tiers(Tiers::report_defaults())
//!     .build();
//! let layer = RateLimitLayer::new(limiter); // 429 + RateLimit headers
//! # let _ = layer;
//! ```
//!
//! # What is here
//!
//! - [`Limiter`]: route [`Policies`] and [`Tiers`] resolved into a
//!   [`Quota`], scaled by [`LoadControl`] (a [`LoadSignal`] such as
//!   [`CompositeLoad`] of [`InFlight`], [`ErrorRate`] and `RedisMemory`,
//!   with [`Hysteresis`]), checked in a [`Store`]; callable without HTTP
//!   ([`Limiter::check`]).
//! - [`LocalStore`]: GCRA in process, one `u64` per key, bounded.
//! - `RedisStore` (feature `redis`): one atomic Lua script per check
//!   (sliding-window counter or sliding log, Redis `TIME`, rejections not
//!   counted), fail policies with a timeout and a circuit breaker, optional
//!   token leases.
//! - [`http::RateLimitLayer`] (feature `tower`, default): 429 or 503
//!   problem+json with draft-10 `RateLimit-Policy`/`RateLimit` fields and
//!   `Retry-After`, key extractors with trusted-proxy client IPs.
//! - [`shield`] (feature `tower`): [`ShieldLayer`](shield::ShieldLayer)
//!   scores requests with tokenising SQL injection, XSS and path traversal
//!   detectors, scanner agents, rapid requests and probing patterns, and
//!   keeps a local or Redis blocklist with an allow-list that always wins.
//!
//! # Feature flags
//!
//! | Feature | Default | Enables |
//! |---|---|---|
//! | `tower` | yes | the tower layer (`http` module) |
//! | `gzip` | yes | the shield decodes `gzip` and `deflate` request bodies to inspect them (flate2, pure-Rust zlib-rs backend); implies `tower` |
//! | `axum` | no | reads the peer from axum's `ConnectInfo<SocketAddr>` |
//! | `redis` | no | `RedisStore`, `LeaseConfig`, `RedisMemory`, the crate's `Error`, the shield's `RedisBlocklist` |
//! | `cluster` | no | Redis Cluster for the Redis store (`RedisStore::cluster`); implies `redis` |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;
mod client_ip;
mod decision;
mod duration;
#[cfg(feature = "redis")]
mod error;
mod gcra;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http;
mod limiter;
mod load;
mod policy;
mod quota;
pub mod shield;
mod store;

pub use client_ip::{Cidr, CidrError, TrustedProxies, ip_key};
pub use decision::{Decision, Source, Verdict};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use error::Error;
pub use limiter::{Limiter, LimiterBuilder, Request};
pub use load::{
    CompositeLoad, ErrorRate, Hysteresis, InFlight, InFlightGuard, LoadControl, LoadSignal,
};
pub use policy::{Policies, Policy, Tiers};
pub use quota::{Quota, WhenFull};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::{
    Algorithm, AnyStore, FailPolicy, LeaseConfig, RedisMemory, RedisMemoryBuilder, RedisStore,
    RedisStoreBuilder,
};
pub use store::{LocalStore, LocalStoreBuilder, Store, StoreKey};
