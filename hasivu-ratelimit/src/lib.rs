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
//! # Status
//!
//! Available: [`Limiter`] with [`Policies`], [`Tiers`], load adaptation
//! ([`LoadControl`], [`CompositeLoad`], [`InFlight`], [`ErrorRate`],
//! [`Hysteresis`]) and the [`LocalStore`]. The Redis store, the tower layer
//! and the abuse shield are being built.
//!
//! The abuse shield is in [`shield`]: [`ShieldLayer`](shield::ShieldLayer)
//! with tokenising SQL injection, XSS and path traversal detectors, scanner
//! agents, rapid requests and probing patterns, and a local or Redis
//! blocklist.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client_ip;
mod decision;
mod duration;
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
pub use limiter::{Limiter, LimiterBuilder, Request};
pub use load::{
    CompositeLoad, ErrorRate, Hysteresis, InFlight, InFlightGuard, LoadControl, LoadSignal,
};
pub use policy::{Policies, Policy, Tiers};
pub use quota::Quota;
pub use store::{LocalStore, LocalStoreBuilder, Store, StoreKey};
