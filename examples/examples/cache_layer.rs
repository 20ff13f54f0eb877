//! Adding only the HTTP cache to an axum app: answers of `/menu/daily`
//! are kept for 60 s (in process here; `.redis(url)` on the cache builder
//! shares them between instances) and `If-None-Match` gets a 304 without
//! calling the handler.
//!
//! `cargo run -p hasivu-examples --example cache_layer`

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use hasivu_cache::{Cache, CacheLayer, RoutePolicy};
use http::Request;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = Cache::builder().build()?;
    let app = Router::new()
        .route(
            "/menu/daily",
            get(|| async { "ragi mudde, sambar, curd rice" }),
        )
        .layer(CacheLayer::new(cache.clone()).route(
            "/menu/daily",
            RoutePolicy::new(Duration::from_secs(60)).namespace("menu:daily:"),
        ));

    let get = |etag: Option<&str>| {
        let mut request = Request::get("/menu/daily");
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.body(Body::empty())
    };
    let first = app.clone().oneshot(get(None)?).await?;
    let etag = first.headers()["etag"].to_str()?.to_owned();
    println!(
        "first:  {} X-Cache: {:?}",
        first.status(),
        first.headers()["x-cache"]
    );
    let second = app.clone().oneshot(get(None)?).await?;
    println!(
        "second: {} X-Cache: {:?}",
        second.status(),
        second.headers()["x-cache"]
    );
    let revalidated = app.clone().oneshot(get(Some(&etag))?).await?;
    println!("with If-None-Match: {}", revalidated.status());

    // After a write, every instance misses.
    cache.invalidate("menu:*").await?;
    let after = app.oneshot(get(None)?).await?;
    println!(
        "after invalidate(\"menu:*\"): X-Cache: {:?}",
        after.headers()["x-cache"]
    );
    Ok(())
}
