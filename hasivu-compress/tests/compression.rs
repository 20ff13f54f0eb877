//! The compression layer in a real axum server, fetched over TCP by reqwest,
//! whose own decoders (async-compression) check every coding.
#![cfg(all(
    feature = "br",
    feature = "zstd",
    feature = "gzip",
    feature = "deflate"
))]

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};
use hasivu_compress::{CompressionLayer, RequestDecompressionLayer};
use serde_json::{Value, json};

fn menu() -> Value {
    let items: Vec<Value> = (0..100)
        .map(|i| {
            let category = ["main", "side", "dessert", "drink"][i % 4];
            json!({
                "id": i,
                "name": format!("Item {i}"),
                "category": category,
                "price": 20 + i % 30,
                "allergens": ["milk", "nuts"],
                "available": true,
            })
        })
        .collect();
    json!({ "date": "2026-11-27", "school": 1, "items": items })
}

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route("/menu/daily", get(|| async { Json(menu()) }))
        .route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        )
        .layer(CompressionLayer::new())
        .layer(RequestDecompressionLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_coding_is_decoded_by_a_real_client() {
    let addr = serve().await;
    let url = format!("http://{addr}/menu/daily");
    let original = serde_json::to_vec(&menu()).unwrap();
    for coding in ["zstd", "br", "gzip", "deflate"] {
        let raw = raw_client()
            .get(&url)
            .header("accept-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(raw.headers()["content-encoding"], coding);
        assert_eq!(raw.headers()["vary"], "accept-encoding");
        let length: usize = raw.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let encoded = raw.bytes().await.unwrap();
        assert_eq!(
            encoded.len(),
            length,
            "{coding}: Content-Length is the encoded length"
        );
        assert!(
            encoded.len() < original.len() / 4,
            "{coding}: {} bytes",
            encoded.len()
        );

        let builder = reqwest::Client::builder()
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate();
        let client = match coding {
            "zstd" => builder.zstd(true),
            "br" => builder.brotli(true),
            "gzip" => builder.gzip(true),
            _ => builder.deflate(true),
        }
        .build()
        .unwrap();
        let decoded = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(decoded.as_ref(), original.as_slice(), "{coding}");
    }
}

#[tokio::test]
async fn a_browser_header_gets_zstd_and_no_header_gets_identity() {
    let addr = serve().await;
    let url = format!("http://{addr}/menu/daily");
    let response = raw_client()
        .get(&url)
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "zstd");

    let response = raw_client().get(&url).send().await.unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let body = response.bytes().await.unwrap();
    assert_eq!(
        body.as_ref(),
        serde_json::to_vec(&menu()).unwrap().as_slice()
    );
}

#[tokio::test]
async fn compressed_uploads_are_decoded_for_the_handler() {
    let addr = serve().await;
    let text = "Select your plan: ".repeat(200);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, text.as_bytes()).unwrap();
    let body = encoder.finish().unwrap();
    let response = raw_client()
        .post(format!("http://{addr}/echo"))
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), text);
}
