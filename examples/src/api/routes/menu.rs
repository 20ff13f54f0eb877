//! `GET /menu/daily`: today's menu of the caller's school.

use axum::{
    Extension,
    extract::{Query, State},
    response::Response,
};
use serde::Deserialize;
use serde_json::json;

use crate::api::{
    app::AppState,
    auth::Claims,
    db::iso_date,
    problem::{problem, respond},
};

/// `?school=` for anonymous callers (default: the first school).
#[derive(Debug, Deserialize)]
pub struct MenuQuery {
    /// School id.
    pub school: Option<i64>,
}

/// The menu, from the `menu:daily:current` entry (the HTTP cache layer
/// keeps the encoded answer in front of this).
pub async fn daily(
    State(state): State<AppState>,
    claims: Option<Extension<Claims>>,
    Query(query): Query<MenuQuery>,
) -> Response {
    let school_id = claims
        .map(|Extension(c)| c.school)
        .or(query.school)
        .unwrap_or(1);
    let (menus, schools) = match tokio::try_join!(state.menus(), state.schools()) {
        Ok(v) => v,
        Err(e) => return super::internal(e),
    };
    let Some(school) = schools.into_iter().find(|s| s.id == school_id) else {
        return problem(404, "school not found", "no active school with this id");
    };
    let items = menus
        .schools
        .iter()
        .find(|(id, _)| *id == school_id)
        .map(|(_, items)| items.as_slice())
        .unwrap_or_default();
    respond(
        200,
        &json!({ "date": iso_date(menus.day), "school": school, "count": items.len(), "items": items }),
    )
}
