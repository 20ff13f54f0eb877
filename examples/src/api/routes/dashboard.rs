//! `GET /metrics`, `GET /dashboard/data`, `GET /dashboard` and `GET /`.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::api::{app::AppState, problem::respond};

/// Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.prometheus.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Per-route summaries (last minute and hour), system status, pools and
/// cache statistics, active alerts and the last 20 fires and resolves,
/// regressions.
pub async fn data(State(state): State<AppState>) -> Response {
    let routes = |window: Duration| {
        serde_json::to_value(state.analytics.summaries(window)).unwrap_or_default()
    };
    let pools: Vec<Value> = state
        .pools
        .status()
        .into_iter()
        .map(|e| {
            let s = e.status;
            json!({
                "kind": e.kind, "key": e.key, "size": s.size, "idle": s.idle, "in_use": s.in_use,
                "max_size": s.max_size, "waiters": s.waiters, "creates": s.creates,
                "timeouts": s.timeouts, "breaker_open": s.breaker_open,
                "wait_p99_ms": s.wait.p99.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    let c = state.cache.stats();
    respond(
        200,
        &json!({
            "uptime_secs": state.started.elapsed().as_secs_f64(),
            "ready": state.is_ready(),
            "database": state.db.kind(),
            "redis": state.redis.is_some(),
            "routes": { "last_minute": routes(Duration::from_secs(60)), "last_hour": routes(Duration::from_secs(3600)) },
            "system": state.monitor.status(),
            "alerts": serde_json::to_value(state.alerts.active()).unwrap_or_default(),
            "alert_history": serde_json::to_value(state.alert_history.recent(20).await).unwrap_or_default(),
            "regressions": serde_json::to_value(
                state.regressions.lock().map(|d| d.latest().to_vec()).unwrap_or_default(),
            )
            .unwrap_or_default(),
            "pools": pools,
            "cache": {
                "l1_hits": c.l1_hits, "l2_hits": c.l2_hits, "misses": c.misses, "loads": c.loads,
                "load_errors": c.load_errors, "stale_served": c.stale_served, "l2_errors": c.l2_errors,
                "hit_rate": c.hit_rate(), "backplane_synced": c.backplane_synced,
            },
        }),
    )
}

/// The dashboard page: inline SVG charts that poll `/dashboard/data`.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// A small index of the routes.
pub async fn index() -> Response {
    respond(
        200,
        &json!({
            "name": "HASIVU API (hasivu example)",
            "routes": crate::api::layers::ROUTES,
        }),
    )
}
