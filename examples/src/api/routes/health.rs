//! `GET /health`: per-dependency checks; 503 while warming up or when a
//! required dependency is down.

use std::time::Instant;

use axum::{extract::State, response::Response};
use serde_json::{Value, json};

use crate::api::{app::AppState, problem::respond};

/// The checks.
pub async fn health(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let db = state.db.ping().await;
    let database = json!({
        "kind": state.db.kind(),
        "ok": db.is_ok(),
        "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
        "error": db.as_ref().err().map(ToString::to_string),
    });
    let mut ok = db.is_ok();
    let redis = match &state.redis {
        None => json!({ "configured": false }),
        Some(pool) => {
            let started = Instant::now();
            let result = match pool.get().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut *conn)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            ok &= result.is_ok();
            json!({
                "configured": true,
                "ok": result.is_ok(),
                "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
                "error": result.err(),
            })
        }
    };
    let pools: Vec<Value> = state
        .pools
        .status()
        .into_iter()
        .map(|e| {
            json!({
                "kind": e.kind, "key": e.key, "size": e.status.size, "idle": e.status.idle,
                "in_use": e.status.in_use, "max_size": e.status.max_size,
                "breaker_open": e.status.breaker_open,
            })
        })
        .collect();
    let ready = state.is_ready();
    let status = if !ok {
        "down"
    } else if !ready {
        "warming"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "ready": ready,
        "uptime_secs": state.started.elapsed().as_secs_f64(),
        "checks": { "database": database, "redis": redis, "pools": pools },
    });
    respond(if ok && ready { 200 } else { 503 }, &body)
}
