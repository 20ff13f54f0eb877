//! The request metrics layer.
//!
//! [`MetricsLayer`] times every request from [`Service::call`] to the end
//! of its response body and records it through the
//! [`metrics`](https://docs.rs/metrics) facade under the OpenTelemetry HTTP
//! server names, labelled with the matched route template, never the raw
//! path.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use hasivu_metrics::MetricsLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .layer(MetricsLayer::new()); // labels: http.route = "/users/{id}"
//! # }
//! ```
//!
//! A customised setup: rolling analytics, the report's `X-Response-Time`
//! header, a cache status read from the cache layer's extension, a route
//! template set by the application, and a smaller route cap:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use hasivu_metrics::{MetricsLayer, PerformanceAnalytics, RequestHead, RouteTemplate};
//!
//! #[derive(Clone, Copy)]
//! struct FromCache(bool); // what a cache layer might leave in the response
//!
//! let analytics = PerformanceAnalytics::new();
//! let layer = MetricsLayer::new()
//!     .analytics(analytics.clone())
//!     .response_time_header(true)
//!     .cache_hit(|extensions: &http::Extensions| extensions.get::<FromCache>().map(|c| c.0))
//!     .route(|head: &RequestHead<'_>| {
//!         head.extensions().get::<RouteTemplate>().map(|t| t.as_str().to_owned())
//!     })
//!     .max_routes(200);
//! let app: Router = Router::new().route("/menu/daily", get(|| async { "menu" })).layer(layer);
//!
//! // Later, e.g. in a dashboard handler:
//! let last_hour = analytics.summaries(Duration::from_secs(3600));
//! # let _ = (app, last_hour);
//! ```
//!
//! # What is recorded
//!
//! | name | kind | attributes |
//! | --- | --- | --- |
//! | `http.server.request.duration` | histogram, seconds | `http.request.method`, `http.route`, `http.response.status_code`, `error.type` |
//! | `http.server.active_requests` | gauge | `http.request.method` |
//! | `hasivu.http.server.time_to_headers` | histogram, seconds (opt-in) | as the duration |
//! | `hasivu.http.server.request.allocated` | histogram, bytes (feature `alloc-tracking`, opt-in) | as the duration |
//! | `hasivu.http.server.cold_starts` | counter | — |
//!
//! - **Duration** runs from the call to the end of the response body (the
//!   last frame polled), as the OpenTelemetry conventions define it: a slow
//!   client reading a large body makes it longer. Responses without a body
//!   (`HEAD`, 1xx, 204, 304, or a body that is already at its end) end at
//!   their headers. `X-Response-Time` is the time to the headers.
//! - **`http.route`** is the template from the [`RouteExtractor`]
//!   ([`DefaultRoute`]: a [`RouteTemplate`] extension or axum's
//!   `MatchedPath`); requests without one are `unmatched`. After
//!   [`max_routes`](MetricsLayer::max_routes) distinct templates (1000)
//!   the rest share `_overflow`. Methods outside the standard nine (and
//!   those added with [`methods`](MetricsLayer::methods)) are `_OTHER`.
//!   So a scanner probing ten thousand paths adds no series.
//! - **`error.type`** is the status code for 5xx answers, `service_error`
//!   when the inner service returned an error (no status then),
//!   `body_error` when the body failed, and `aborted` when the client
//!   went away first (the response future or body was dropped), with the
//!   status when the headers had been produced. Aborted requests are also
//!   counted out of the active gauge, so it does not leak.
//! - **Cache hits** come from the [`CacheHit`] hook on the response
//!   extensions, else the `X-Cache` header (`HIT…`/`STALE` a hit, `MISS` a
//!   miss); they feed the analytics' cache hit rate.
//! - **Cold start**: the first request after the layer was built carries a
//!   [`ColdStart`] extension (request and response) and increments
//!   `hasivu.http.server.cold_starts`.
//!
//! Handles are resolved once per series, the first time it is seen, and
//! kept: the per-request work is one registry lookup of the route (a hash
//! of the borrowed template, no lock, no allocation), a few clock reads
//! and atomic updates. Install the metrics recorder (the exporter) before
//! the first request; a series first seen without a recorder keeps
//! recording into nothing.
//!
//! With [`analytics`](MetricsLayer::analytics), each request is also
//! recorded in [`PerformanceAnalytics`](crate::PerformanceAnalytics) under
//! `"{METHOD} {route}"`, e.g. `"GET /menu/daily"`.
//!
//! # Exporting to Prometheus
//!
//! The layer records through the facade; an exporter renders it. With
//! `metrics-exporter-prometheus` (0.18, `default-features = false`), give
//! the duration histogram the OpenTelemetry buckets (otherwise it becomes a
//! summary, which cannot be aggregated across instances) and run the
//! upkeep: the exporter buffers raw samples, about 16 bytes each, until
//! upkeep folds them into the buckets, so without upkeep its memory grows
//! with traffic whenever nobody scrapes.
//!
//! ```rust,ignore
//! use std::time::Duration;
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use metrics_util::MetricKindMask;
//!
//! let handle = PrometheusBuilder::new()
//!     .set_buckets_for_metric(
//!         Matcher::Full("http.server.request.duration".into()),
//!         &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
//!     )?
//!     .set_buckets(&[0.005, 0.025, 0.1, 0.5, 2.5, 10.0])? // other histograms
//!     // Drop series idle for 10 minutes (a route that stopped being hit).
//!     .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(600)))
//!     .install_recorder()?;
//! // `install_recorder` leaves upkeep to the caller: drain every 5 s, so at
//! // 10,000 requests/s the buffer stays under about 1 MB.
//! let upkeep = handle.clone();
//! tokio::spawn(async move {
//!     let mut tick = tokio::time::interval(Duration::from_secs(5));
//!     loop {
//!         tick.tick().await;
//!         upkeep.run_upkeep();
//!     }
//! });
//! // GET /metrics answers `handle.render()`. Names come out as
//! // `http_server_request_duration_seconds{http_route="/users/{id}",…}`.
//! ```
//!
//! (`PrometheusBuilder::install`, with its own HTTP listener, runs the
//! upkeep itself every `upkeep_timeout`, 5 s by default.)
//!
//! [`Service::call`]: tower_service::Service::call

mod body;
mod future;
mod hooks;
mod layer;
mod service;
mod state;

pub use body::MetricsBody;
pub use future::ResponseFuture;
pub use hooks::{CacheHit, DefaultRoute, NoCacheHook, RequestHead, RouteExtractor, RouteTemplate};
pub use layer::MetricsLayer;
pub use service::Metrics;

/// Marks the first request after the layer was built: in its request
/// extensions (for the handler) and its response extensions.
///
/// ```
/// # use hasivu_metrics::ColdStart;
/// # fn handler(request: &http::Request<()>) {
/// if request.extensions().get::<ColdStart>().is_some() {
///     tracing::info!("cold start");
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColdStart;

#[cfg(test)]
mod tests;
