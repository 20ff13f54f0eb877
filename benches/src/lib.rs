//! Benchmarks of the hasivu crates.
//!
//! Each bench target in this crate runs a hasivu crate and the alternative a
//! user would otherwise pick (tower-http, governor, moka, deadpool, bb8, the
//! `metrics` exporter) in the same criterion run and prints the ratio, so
//! that figures measured on one machine can be compared. It is not published.
