//! `POST /payments/create`: pays an order once, whatever the retries.

use axum::{Extension, body::Body, extract::State, http::HeaderMap, response::Response};
use serde_json::Value;

use crate::api::{
    app::AppState,
    auth::Claims,
    db::{Idempotency, NewPayment},
    problem::{invalid, problem, respond},
};

/// `{"order_id": 1, "method": "upi"}` with a required `Idempotency-Key`.
/// The order is paid at most once (a second key gets 409); a repeated key
/// gets the first answer while it lives (`HASIVU_IDEMPOTENCY_TTL_SECS`).
pub async fn create(
    State(state): State<AppState>,
    claims: Option<Extension<Claims>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let claims = match super::caller(claims) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let key = match super::idempotency_key(&headers) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return problem(
                400,
                "Idempotency-Key required",
                "payments need an Idempotency-Key header",
            );
        }
        Err(r) => return r,
    };
    let (value, fingerprint) = match super::json_body(&headers, body, 16 * 1024).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(order_id) = value
        .get("order_id")
        .and_then(Value::as_i64)
        .filter(|id| *id > 0)
    else {
        return respond(400, &invalid("order_id", "required, a positive integer"));
    };
    let methods = match state.payment_methods().await {
        Ok(m) => m,
        Err(e) => return super::internal(e),
    };
    let method = value.get("method").and_then(Value::as_str).unwrap_or("");
    if !methods.iter().any(|m| m.code == method) {
        let codes: Vec<&str> = methods.iter().map(|m| m.code.as_str()).collect();
        return respond(
            400,
            &invalid("method", &format!("one of {}", codes.join(", "))),
        );
    }
    let payment = NewPayment {
        user_id: claims.sub,
        order_id,
        method: method.to_owned(),
    };
    let idem = Idempotency {
        key: format!("user:{}:payments:{key}", claims.sub),
        fingerprint,
        ttl: state.config.idempotency_ttl,
    };
    let result = match state.db.create_payment(payment, idem).await {
        Ok(r) => r,
        Err(e) => return super::internal(e),
    };
    if result.status == 201
        && !result.replayed
        && let Err(error) = state.cache.invalidate(&format!("order:{order_id}")).await
    {
        tracing::warn!(%error, "invalidation failed");
    }
    super::orders::answer(&result)
}
