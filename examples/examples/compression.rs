//! Adding only response compression (zstd > br > gzip, 1 KiB threshold)
//! and `?fields=` selection to an axum app.
//!
//! `cargo run -p hasivu-examples --example compression`

use axum::{Json, Router, body::Body, routing::get};
use hasivu_compress::{CompressionLayer, FieldSelectionLayer};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let items: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({ "id": i, "name": format!("dish {i}"), "price": 40 + i % 30 }))
        .collect();
    let app = Router::new()
        .route(
            "/menu/daily",
            get(move || {
                let items = items.clone();
                async move { Json(items) }
            }),
        )
        .layer(CompressionLayer::new())
        .layer(FieldSelectionLayer::new());
    for (accept, uri) in [
        ("br, gzip", "/menu/daily"),
        ("identity", "/menu/daily?fields=id"),
    ] {
        let request = Request::get(uri)
            .header("accept-encoding", accept)
            .body(Body::empty())?;
        let answer = app.clone().oneshot(request).await?;
        let coding = answer.headers().get("content-encoding").cloned();
        let bytes = answer.into_body().collect().await?.to_bytes().len();
        println!(
            "{uri} with Accept-Encoding: {accept}: {bytes} bytes, Content-Encoding {coding:?}"
        );
    }
    Ok(())
}
