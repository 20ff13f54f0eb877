//! Request metrics, rolling analytics, alerts and regression detection for
//! tower services.
//!
//! `hasivu-metrics` provides:
//!
//! - **A metrics layer** that times each request to the end of its body and
//!   records it through the [`metrics`](https://docs.rs/metrics) facade under
//!   OpenTelemetry HTTP names, labelled with the matched route template (never
//!   the raw path) behind a cardinality guard.
//! - **Rolling analytics** in fixed memory: time-sliced log-linear histograms
//!   per route answering count, rate, mean, p50/p95/p99, error rate and cache
//!   hit rate for any window.
//! - **A system monitor** for memory, CPU, load, file descriptors and
//!   registered providers such as pool and cache statistics.
//! - **Alerts** with `for` and `keep_firing_for` durations, clear thresholds
//!   and deduplication, delivered to pluggable sinks (log, webhook, channel).
//! - **Regression detection** that requires both an effect size and
//!   statistical significance before it reports a slowdown.
//! - **Dashboard data** as one serde snapshot.
//!
//! # Where this comes from
//!
//! This crate serves sections 1.3 (response time benchmarking), 5.3 (resource
//! monitoring), 6 (metrics, dashboard and alerting) and 8.1 (continuous
//! monitoring) of the HASIVU performance report, whose naive thresholds and
//! ratio-of-averages comparison would flap and raise false alarms.
//!
//! # Status
//!
//! The API is being built; see the repository's README for what has landed.
#![cfg_attr(docsrs, feature(doc_cfg))]
