//! The HASIVU API example: every hasivu crate wired into one axum service.
//!
//! Run it with no setup (embedded SQLite, in-process stores):
//!
//! ```text
//! cargo run --release -p hasivu-examples --bin hasivu-api
//! ```
//!
//! `DATABASE_URL=postgres://…` switches to PostgreSQL and `REDIS_URL=redis://…`
//! puts the L2 cache, the rate limiter, the shield's blocklist and the
//! cache backplane in Redis, so several instances share them. The module
//! [`api`] holds the application so that tests and other entry points reuse
//! it: build an [`api::AppState`] from an [`api::Config`], then
//! [`api::serve`] it, or take the whole layer stack as one service with
//! [`api::stack`] (the `hasivu-lambda` binary, feature `lambda`, runs it
//! under AWS Lambda). The README lists every setting and a curl session for
//! every route.
//!
//! [`loadtest`] is the load test of the API (the `loadtest` binary), on goose.

pub mod api;
pub mod loadtest;
