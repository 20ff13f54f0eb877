//! Adding only the metrics layer: every request is timed to the end of its
//! body and recorded under its route template, and `PerformanceAnalytics`
//! answers p95 and error rate for a window.
//!
//! `cargo run -p hasivu-examples --example metrics_layer`

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use hasivu_metrics::{MetricsLayer, PerformanceAnalytics};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let analytics = PerformanceAnalytics::new();
    // Added with `route_layer`, the layer sees axum's matched template.
    let app = Router::new()
        .route("/users/{id}", get(|| async { "{\"id\":1}" }))
        .route_layer(MetricsLayer::new().analytics(analytics.clone()));
    for id in 0..100 {
        let request = Request::get(format!("/users/{id}")).body(Body::empty())?;
        // Timing ends with the body: read it (a dropped body is an abort).
        let answer = app.clone().oneshot(request).await?;
        answer.into_body().collect().await?;
    }
    for summary in analytics.summaries(Duration::from_secs(60)) {
        println!("{summary:?}");
    }
    Ok(())
}
