//! Adding only the abuse shield: requests are scored by the detectors and
//! a client that sends an injection is refused and blocklisted for an hour;
//! "Select your plan" and "O'Brien" pass.
//!
//! `cargo run -p hasivu-examples --example shield`

use std::net::SocketAddr;

use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
use hasivu_ratelimit::shield::ShieldLayer;
use http::Request;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The shield wraps the whole router (it hands the router an inspected
    // body), so it is added as an outer service layer.
    let router = Router::new().route("/search", get(|| async { "results" }));
    let app = tower::ServiceBuilder::new()
        .layer(ShieldLayer::new())
        .service(router);
    let search = |query: &str| {
        let mut request = Request::get(format!("/search?q={query}")).body(Body::empty())?;
        let peer: SocketAddr = "198.51.100.20:40000".parse()?;
        request.extensions_mut().insert(ConnectInfo(peer));
        Ok::<_, Box<dyn std::error::Error>>(request)
    };
    for query in [
        "Select+your+plan",
        "O%27Brien",
        "1%27%20OR%20%271%27%3D%271",
        "biryani",
    ] {
        let answer = app.clone().oneshot(search(query)?).await?;
        println!("q={query}: {}", answer.status());
    }
    Ok(())
}
