//! `POST /orders/create`.

use axum::{
    Extension,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue},
    response::Response,
};
use serde_json::Value;

use crate::api::{
    app::AppState,
    auth::Claims,
    db::{Answer, Idempotency, NewOrder, OrderLine},
    problem::{invalid, respond},
};

/// Validates `{"items":[{"menu_item_id":1,"quantity":2}],"notes":"…"}`,
/// naming the first bad field's path.
pub fn validate(value: &Value) -> Result<(Vec<OrderLine>, Option<String>), Value> {
    let Some(object) = value.as_object() else {
        return Err(invalid("$", "expected a JSON object"));
    };
    let Some(items) = object.get("items").and_then(Value::as_array) else {
        return Err(invalid("items", "required, an array of order lines"));
    };
    if items.is_empty() || items.len() > 20 {
        return Err(invalid("items", "between 1 and 20 lines"));
    }
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item
            .get("menu_item_id")
            .and_then(Value::as_i64)
            .filter(|id| *id > 0);
        let Some(menu_item_id) = id else {
            return Err(invalid(
                &format!("items[{i}].menu_item_id"),
                "required, a positive integer",
            ));
        };
        let quantity = item
            .get("quantity")
            .and_then(Value::as_i64)
            .filter(|q| (1..=10).contains(q));
        let Some(quantity) = quantity else {
            return Err(invalid(
                &format!("items[{i}].quantity"),
                "required, an integer from 1 to 10",
            ));
        };
        lines.push(OrderLine {
            menu_item_id,
            quantity,
        });
    }
    let notes = match object.get("notes") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 500 => Some(s.clone()),
        Some(_) => return Err(invalid("notes", "a string of at most 500 characters")),
    };
    Ok((lines, notes))
}

/// Sends a stored or fresh answer, flagging replays.
pub(crate) fn answer(answer: &Answer) -> Response {
    let mut response = respond(answer.status, &answer.body);
    if answer.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Creates the order, then invalidates the order keys and the menu (the
/// portions left changed) on every instance.
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
        Ok(k) => k,
        Err(r) => return r,
    };
    let (value, fingerprint) =
        match super::json_body(&headers, body, state.config.max_body_bytes).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let (lines, notes) = match validate(&value) {
        Ok(v) => v,
        Err(problem) => return respond(400, &problem),
    };
    let idem = key.map(|key| Idempotency {
        key: format!("user:{}:orders:{key}", claims.sub),
        fingerprint,
        ttl: state.config.idempotency_ttl,
    });
    let order = NewOrder {
        user_id: claims.sub,
        school_id: claims.school,
        lines,
        notes,
    };
    let result = match state.db.create_order(order, idem).await {
        Ok(r) => r,
        Err(e) => return super::internal(e),
    };
    if result.status == 201 && !result.replayed {
        let order_id = result.body["order_id"].as_i64().unwrap_or_default();
        // After the commit: `order:*` (and what the rules add) and the menu.
        for pattern in [
            format!("order:{order_id}"),
            "order:*".to_owned(),
            "menu:*".to_owned(),
        ] {
            if let Err(error) = state.cache.invalidate(&pattern).await {
                tracing::warn!(%error, pattern, "invalidation failed");
            }
        }
    }
    answer(&result)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_bad_field_is_named_by_its_path() {
        let bad = validate(
            &json!({"items": [{"menu_item_id": 1, "quantity": 1}, {"menu_item_id": 2, "quantity": 0}]}),
        );
        assert_eq!(bad.unwrap_err()["errors"][0]["field"], "items[1].quantity");
        assert_eq!(validate(&json!([])).unwrap_err()["errors"][0]["field"], "$");
        let (lines, notes) =
            validate(&json!({"items": [{"menu_item_id": 3, "quantity": 2}], "notes": "no onion"}))
                .unwrap();
        assert_eq!((lines.len(), notes.as_deref()), (1, Some("no onion")));
    }
}
