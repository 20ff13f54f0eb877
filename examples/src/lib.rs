//! Shared code of hasivu's examples.
//!
//! This crate will hold the full HASIVU school-meal API (`hasivu-api`), which
//! wires every hasivu crate into one axum service, one short example per
//! layer, and the load test. It is not published.
