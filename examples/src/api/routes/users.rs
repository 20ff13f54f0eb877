//! `GET /users/{id}`: a user with school and student (one query);
//! `?fields=` selects fields (through the field selection layer).

use axum::{
    Extension,
    extract::{Path, State},
    response::Response,
};

use crate::api::{
    app::AppState,
    auth::Claims,
    problem::{problem, respond},
};

/// The profile; parents see themselves, staff their school, admins all.
pub async fn user(
    State(state): State<AppState>,
    claims: Option<Extension<Claims>>,
    Path(id): Path<i64>,
) -> Response {
    let claims = match super::caller(claims) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let profile = match state.db.user_profile(id).await {
        Ok(Some(p)) => p,
        Ok(None) => return problem(404, "user not found", "no active user with this id"),
        Err(e) => return super::internal(e),
    };
    let allowed = claims.sub == id
        || claims.role == "admin"
        || (claims.role == "staff" && claims.school == profile.school.id);
    if !allowed {
        return problem(403, "forbidden", "you may read your own profile only");
    }
    respond(200, &serde_json::to_value(&profile).unwrap_or_default())
}
