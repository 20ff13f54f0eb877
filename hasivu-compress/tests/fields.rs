//! Field selection in front of an axum 0.8 application.
#![cfg(feature = "fields")]

use axum::{Json, Router, body::Body, http::header, routing::get};
use hasivu_compress::fields::FieldSelectionLayer;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The user as the handler writes it, in its own key order.
const USER: &str = r#"{"id":1,"email":"a@b","name":"A","school":{"id":3,"name":"Green Valley","city":"X"},"orders":[{"id":1,"total":5},{"id":2,"total":7}]}"#;

fn app() -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async { Json(serde_json::from_str::<Value>(USER).unwrap()) }),
        )
        .route(
            "/raw/users/{id}",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], USER) }),
        )
        .route("/text", get(|| async { "id,email" }))
        .layer(FieldSelectionLayer::new())
}

async fn get_body(uri: &str) -> (StatusCode, http::HeaderMap, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Named so that `cargo test fields` selects these tests too.
mod fields {
    use super::*;

    #[tokio::test]
    async fn axum_json_handler_is_pruned() {
        let (status, headers, body) =
            get_body("/users/1?fields=id,email,school.name,orders(id)").await;
        assert_eq!(status, StatusCode::OK);
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            json!({"id": 1, "email": "a@b", "school": {"name": "Green Valley"}, "orders": [{"id": 1}, {"id": 2}]})
        );
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn key_order_of_the_handler_is_kept() {
        let (status, _, body) =
            get_body("/raw/users/1?fields=orders(id),school.name,email,id").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"id":1,"email":"a@b","school":{"name":"Green Valley"},"orders":[{"id":1},{"id":2}]}"#
        );
        let (_, _, body) = get_body("/raw/users/1?fields=school%2Fname%2C%20id").await;
        assert_eq!(body, r#"{"id":1,"school":{"name":"Green Valley"}}"#);
    }

    #[tokio::test]
    async fn axum_answers_pass_through_or_are_refused() {
        let (status, _, body) = get_body("/users/1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            serde_json::from_str::<Value>(USER).unwrap()
        );

        let (status, _, body) = get_body("/text?fields=id").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "id,email"));

        let (status, _, body) = get_body("/missing?fields=id").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.is_empty());

        let (status, headers, body) = get_body("/users/1?fields=school(name").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "invalid-field-selection");
        assert_eq!(problem["detail"], "unbalanced \"(\" at position 6");
    }

    #[tokio::test]
    async fn over_a_real_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app()).await });
        let response = reqwest::get(format!(
            "http://{address}/raw/users/7?fields=id,email,school.name,orders(id)"
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let expected = r#"{"id":1,"email":"a@b","school":{"name":"Green Valley"},"orders":[{"id":1},{"id":2}]}"#;
        assert_eq!(response.content_length(), Some(expected.len() as u64));
        assert_eq!(response.text().await.unwrap(), expected);
        server.abort();
    }
}
