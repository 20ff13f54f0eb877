//! The HASIVU school-meal API: every hasivu crate wired into one axum
//! service.
//!
//! [`app::AppState::build`] connects the database (SQLite by default,
//! PostgreSQL with `DATABASE_URL`), migrates it (and seeds the demo data
//! where [`Config::seeds_demo`] says), builds the cache (with Redis as L2
//! and backplane when `REDIS_URL` is set) and warms the critical keys and
//! pools. [`app::app`] is the router with the cache and
//! compression layers; [`app::stack`] puts the outer layers around it (see
//! [`layers`] for the order and why) and [`app::serve`] serves that until
//! shutdown, then saves the regression history ([`history`]) and drains the
//! pools.

pub mod alert_history;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod history;
pub mod layers;
pub mod problem;
pub mod routes;

pub use app::{AppState, app, serve, shutdown_signal, stack};
pub use config::Config;
