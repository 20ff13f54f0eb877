//! `GET /health` (public): up or down, as a status code and
//! `{"status":"ok"}`, `"warming"` or `"down"`, with nothing about the
//! dependencies; 503 while warming up or when a required dependency is
//! down. `GET /health/details` (operational): the same verdict with the
//! per-dependency checks, their latencies and errors, and the pools.

use std::time::Instant;

use axum::{extract::State, response::Response};
use serde_json::{Value, json};

use crate::api::{app::AppState, problem::respond};

/// Up or down, without details (raw dependency errors would tell a
/// stranger which database and hosts the API uses and what fails).
pub async fn health(State(state): State<AppState>) -> Response {
    let (code, body) = checks(&state).await;
    respond(code, &json!({ "status": body["status"] }))
}

/// The verdict with every check, for operators.
pub async fn details(State(state): State<AppState>) -> Response {
    let (code, body) = checks(&state).await;
    respond(code, &body)
}

/// The status code and the detailed report.
async fn checks(state: &AppState) -> (u16, Value) {
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
                Ok(mut conn) => {
                    let pong = redis::cmd("PING").query_async::<String>(&mut *conn).await;
                    // A connection that failed its PING is dead (Redis
                    // restarted): retire it, or frequent health checks keep
                    // getting it back before the pool re-checks idle ones.
                    if pong.is_err() {
                        conn.mark_broken();
                    }
                    pong.map_err(|e| e.to_string())
                }
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
    (if ok && ready { 200 } else { 503 }, body)
}
