//! `POST /auth/login`.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::api::{
    app::AppState,
    auth::{Claims, verify_password},
    problem::{invalid, problem, respond},
};

/// Email and password → a signed token with user id, school, role and tier.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (value, _) = match super::json_body(&headers, body, 16 * 1024).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(email) = field("email").filter(|e| e.contains('@')) else {
        return respond(400, &invalid("email", "required, an email address"));
    };
    let Some(password) = field("password").filter(|p| !p.is_empty()) else {
        return respond(400, &invalid("password", "required"));
    };
    let row = match state.db.login(&email.to_ascii_lowercase()).await {
        Ok(row) => row,
        Err(e) => return super::internal(e),
    };
    let hash = row.as_ref().map(|r| r.password_hash.clone());
    if !verify_password(password, hash).await {
        return problem(401, "invalid credentials", "wrong email or password");
    }
    let row = row.expect("verified rows exist");
    let claims = Claims {
        sub: row.id,
        school: row.school_id,
        role: row.role,
        tier: row.tier,
        exp: 0,
    };
    let token = state.tokens.issue(claims.clone());
    Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl().as_secs(),
        "user": { "id": claims.sub, "school_id": claims.school, "role": claims.role, "tier": claims.tier },
    }))
    .into_response()
}
