//! Request metrics, rolling analytics and a system monitor for tower
//! services.
//!
//! `hasivu-metrics` provides:
//!
//! - **[`MetricsLayer`]**, a tower layer that times each request from the
//!   call to the end of its response body and records it through the
//!   [`metrics`](https://docs.rs/metrics) facade under the OpenTelemetry
//!   HTTP names (`http.server.request.duration`,
//!   `http.server.active_requests`), labelled with the matched route
//!   template (never the raw path) behind a cardinality guard; client
//!   aborts are their own outcome, cache hits are read from the response,
//!   the first request is flagged as a cold start, and `X-Response-Time`
//!   and (feature `alloc-tracking`) `X-Memory-Used` headers are optional.
//!   See [`request_metrics`].
//! - **[`PerformanceAnalytics`]**, rolling per-route statistics in fixed
//!   memory: time-sliced log-bucketed histograms answering count, rate,
//!   mean, p50/p95/p99, maximum, error rate and cache hit rate for any
//!   window from a minute to seven days, mergeable across routes, with
//!   quantiles within 1% for the last hour. See [`analytics`].
//! - **[`SystemMonitor`]**, a background task sampling resident memory, CPU,
//!   uptime, load average and open file descriptors plus registered
//!   providers (pool status, cache statistics, Redis memory) into a
//!   [`SystemStatus`] snapshot and gauges. See [`system`].
//! - **[`AlertManager`]**, rules over request and system values with
//!   warning and critical thresholds (the report's by default), `for`,
//!   `keep_firing_for`, clear thresholds and a minimum volume, optional
//!   multi-window burn-rate SLO rules, a no-data policy per rule (keep the
//!   state by default, so an outage does not resolve an error alert),
//!   fingerprint dedup, inhibition and resolve notifications to
//!   [`AlertSink`]s (log, channel, webhook). See [`alerts`].
//! - **[`RegressionDetector`]**, per-route p95 and error-rate regressions
//!   against a 7-day (or same-hour-of-week) baseline, requiring effect size
//!   and significance (Mann–Whitney U corrected for autocorrelation,
//!   p < 0.001; under one false alarm a week per route on autocorrelated
//!   noise checked every minute), placed in time by change-point detection
//!   and tied to a build version; one point per completed analytics slice;
//!   history persists in a file. See [`regression`].
//! - **[`Dashboard`]**, a serde snapshot of system status, RED figures per
//!   route, the slowest routes, cache and pool statistics, active alerts,
//!   regressions and recommendations. See [`dashboard`].
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use std::time::Duration;
//! use axum::{Router, body::Body, routing::get};
//! use hasivu_metrics::{MetricsLayer, PerformanceAnalytics};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let analytics = PerformanceAnalytics::new();
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     // With the `axum` feature the route is axum's `MatchedPath`.
//!     .layer(MetricsLayer::new().analytics(analytics.clone()));
//!
//! let request = http::Request::get("/users/42").body(Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
//!
//! let stats = analytics.summary("GET /users/{id}", Duration::from_secs(3600)).unwrap();
//! assert_eq!(stats.count, 1);
//! # });
//! # }
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `axum` | no | [`DefaultRoute`] also reads axum's `MatchedPath` (without it, routes come from a [`RouteTemplate`] extension or a [`route`](MetricsLayer::route) hook) |
//! | `alloc-tracking` | no | [`TrackingAllocator`], and per-request allocated bytes: `X-Memory-Used` and a histogram |
//! | `webhook` | no | `alerts::WebhookSink`: notifications as JSON over HTTP POST (hyper client) |
//! | `redis` | no | `regression::RedisHistoryStore`: the regression history in one Redis key, shared by instances |
//! | `full` | no | all of the above |
//!
//! # Where this comes from
//!
//! This crate serves sections 1.3 (response time benchmarking), 5.3
//! (resource monitoring), 6.1 (metrics collection), 6.2 (alerting), 6.3
//! (regression detection) and 8.1 (dashboard) of the HASIVU performance
//! report. Differences from the report:
//!
//! - The report keeps the last 1000 samples per endpoint in an array and
//!   sorts them for each query, so a busy endpoint's "last hour" is its last
//!   few seconds and a quiet one's reaches back days. Here every request of
//!   the window counts, in memory fixed per route (≈ 383 KiB with the
//!   default rings), with quantiles within a stated error.
//! - The report labels CloudWatch metrics with the raw endpoint and keys
//!   its arrays by `method:endpoint`, so `/users/42` and `/users/43` are
//!   separate series. Here labels are route templates, capped, with
//!   `unmatched`, `_overflow` and `_OTHER` for the rest.
//! - The report counts 4xx answers as errors; here the error rate counts
//!   server errors (5xx and failures), as the OpenTelemetry conventions do,
//!   and 4xx and client aborts are reported separately.
//! - The report's cache hit rate divides by all requests; here it divides
//!   by the requests a cache was consulted for.
//! - The report's `X-Response-Time` is in whole milliseconds and its
//!   `X-Memory-Used` is the change of the shared heap during the request,
//!   which other requests move too (and goes negative after a collection);
//!   here the time has microseconds and the memory is the bytes allocated
//!   while this request's future and body were polled.
//! - The report flags cold starts from an environment variable; here the
//!   first request after the layer was built is the cold start.
//! - The report alerts the moment a value crosses a threshold and clears
//!   the moment it is back, so a value hovering at the threshold sends an
//!   alert at nearly every evaluation. Here an alert fires only after the
//!   threshold was crossed at every evaluation for `for`, holds until the
//!   value is inside a separate clear threshold for `keep_firing_for`,
//!   keeps its state through windows with too few requests or none, and
//!   sends one resolve per fire.
//! - The report flags a regression when the current average exceeds 1.5×
//!   (latency) or 2× (error rate) the 7-day average: a ratio of averages,
//!   which one slow burst or a busy hour tips over. Here the effect size is
//!   measured on medians of per-interval p95s (and pooled error rates) and
//!   must also be statistically significant (p < 0.001 on per-interval
//!   values, corrected for their autocorrelation) with a minimum sample;
//!   checked every minute on autocorrelated noise it raises under one false
//!   alarm a week per route (the measurement is in [`regression`]).
//! - The report's thresholds stay as the defaults ([`alerts::Rule::report_defaults`]);
//!   memory is host memory in use, and response time is watched on both
//!   p95 and the mean.
#![cfg_attr(docsrs, feature(doc_cfg))]
// `unsafe` is allowed in one place only: the `alloc-tracking` allocator.
#![cfg_attr(not(feature = "alloc-tracking"), forbid(unsafe_code))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;
#[cfg(feature = "alloc-tracking")]
mod alloc;
mod cardinality;
mod clock;
mod error;
mod histogram;
mod ring;

pub mod alerts;
pub mod analytics;
pub mod dashboard;
pub mod regression;
pub mod request_metrics;
pub mod system;

pub use alerts::{AlertManager, AlertSink};
#[cfg(feature = "alloc-tracking")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc-tracking")))]
pub use alloc::TrackingAllocator;
pub use analytics::{
    AnalyticsBuilder, Outcome, PerformanceAnalytics, RouteHandle, RouteSummary, Sample, Snapshot,
    Summary,
};
pub use cardinality::{OTHER_METHOD, OVERFLOW, UNMATCHED};
pub use clock::{Clock, ManualClock};
pub use dashboard::{Dashboard, DashboardSnapshot};
pub use error::Error;
pub use regression::{Regression, RegressionDetector};
pub use request_metrics::{
    CacheHit, ColdStart, DefaultRoute, Metrics, MetricsLayer, NoCacheHook, RequestHead,
    RouteExtractor, RouteTemplate,
};
pub use system::{MonitorHandle, SystemMonitor, SystemStatus};

/// The current thread's allocation counter (0 without `alloc-tracking`).
#[inline]
pub(crate) fn alloc_counter() -> u64 {
    #[cfg(feature = "alloc-tracking")]
    {
        TrackingAllocator::allocated_by_this_thread()
    }
    #[cfg(not(feature = "alloc-tracking"))]
    {
        0
    }
}

/// Whether allocations are being counted.
#[inline]
pub(crate) fn alloc_tracking_active() -> bool {
    #[cfg(feature = "alloc-tracking")]
    {
        TrackingAllocator::is_installed()
    }
    #[cfg(not(feature = "alloc-tracking"))]
    {
        false
    }
}

// The unit tests count allocations when the feature is on.
#[cfg(all(test, feature = "alloc-tracking"))]
#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();
