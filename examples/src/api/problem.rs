//! `application/problem+json` answers (RFC 9457).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// A problem body; `extra` fields are merged in.
pub fn body(status: u16, title: &str, detail: &str, extra: Option<Value>) -> Value {
    let mut value = json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    if let (Some(Value::Object(extra)), Some(object)) = (extra, value.as_object_mut()) {
        object.extend(extra);
    }
    value
}

/// A 400 validation problem naming the field path (`items[0].quantity`).
pub fn invalid(field: &str, message: &str) -> Value {
    body(
        400,
        "invalid request",
        &format!("{field}: {message}"),
        Some(json!({ "errors": [{ "field": field, "message": message }] })),
    )
}

/// A response with a JSON body and `Content-Type: application/problem+json`
/// when `status` is an error.
pub fn respond(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body.to_string()).into_response();
    let content_type = if status.is_client_error() || status.is_server_error() {
        "application/problem+json"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A problem response.
pub fn problem(status: u16, title: &str, detail: &str) -> Response {
    respond(status, &body(status, title, detail, None))
}
