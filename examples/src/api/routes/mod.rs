//! The handlers, one module per route group.

// Helpers return the finished error response; it is built once per failed
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod dashboard;
pub mod health;
pub mod menu;
pub mod orders;
pub mod payments;
pub mod users;

use axum::{
    body::Body,
    http::{HeaderMap, header},
    response::Response,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{auth::Claims, db::DbError, problem::problem};

/// The caller's claims, or a 401.
pub(crate) fn caller(claims: Option<axum::Extension<Claims>>) -> Result<Claims, Response> {
    claims.map(|axum::Extension(c)| c).ok_or_else(|| {
        problem(
            401,
            "unauthorized",
            "send Authorization: Bearer <token> from POST /auth/login",
        )
    })
}

/// Reads a JSON body: 415 for another content type, 413 over `limit`
/// bytes, 400 for malformed JSON. Returns the value and a fingerprint of
/// the bytes (for idempotency).
pub(crate) async fn json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Value, String), Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(problem(
            415,
            "unsupported media type",
            "send Content-Type: application/json",
        ));
    }
    let too_large = || {
        problem(
            413,
            "payload too large",
            &format!("the body is limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        problem(
            400,
            "malformed JSON",
            &format!("the body is not valid JSON: {e}"),
        )
    })?;
    let fingerprint = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((value, fingerprint))
}

/// The `Idempotency-Key` header, if valid (1 to 255 visible characters).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 255 => Ok(Some(key.to_owned())),
            _ => Err(problem(
                400,
                "invalid Idempotency-Key",
                "1 to 255 visible ASCII characters",
            )),
        },
    }
}

/// A failure that shows none of its cause, which it logs: a 503 with
/// `Retry-After` while the database is unavailable (down, restarting, its
/// pool's breaker open), else a 500.
pub(crate) fn internal<E: std::error::Error + 'static>(error: E) -> Response {
    if db_unavailable(&error) {
        tracing::warn!(%error, "database unavailable");
        let mut response = problem(
            503,
            "service unavailable",
            "the database is unavailable; retry shortly",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    tracing::error!(%error, "request failed");
    problem(500, "internal error", "the request could not be completed")
}

/// A [`DbError`] saying so, itself, in the chain, or as a cache loader's error.
fn db_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(hasivu_cache::Error::Loader(loader)) = error.downcast_ref::<hasivu_cache::Error>() {
        let loader: &(dyn std::error::Error + 'static) = &***loader;
        return db_unavailable(loader);
    }
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<DbError>()
            .is_some_and(DbError::is_unavailable)
        {
            return true;
        }
        cause = e.source();
    }
    false
}
