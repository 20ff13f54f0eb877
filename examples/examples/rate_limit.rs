//! Adding only the rate limiter to an axum app: the report's policies
//! (general 1000 per 15 min, login and payments stricter) and tiers, counted
//! in process (see `RedisStore` to share the counts between instances).
//! The client is the socket peer, so the app is served with
//! `into_make_service_with_connect_info` and the `axum` feature reads it.
//!
//! `cargo run -p hasivu-examples --example rate_limit`

use std::net::SocketAddr;

use axum::{Router, body::Body, extract::ConnectInfo, routing::post};
use hasivu_ratelimit::{Limiter, Policies, Tiers, http::RateLimitLayer};
use http::Request;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limiter = Limiter::builder()
        .policies(Policies::report_defaults())
        .tiers(Tiers::report_defaults())
        .build();
    let app = Router::new()
        .route("/auth/login", post(|| async { "token" }))
        .layer(RateLimitLayer::new(limiter));
    // In a server: `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
    // Here the peer is put in by hand.
    let login = || {
        let mut request = Request::post("/auth/login").body(Body::empty())?;
        let peer: SocketAddr = "203.0.113.7:50000".parse()?;
        request.extensions_mut().insert(ConnectInfo(peer));
        Ok::<_, Box<dyn std::error::Error>>(request)
    };
    for attempt in 1..=6 {
        let answer = app.clone().oneshot(login()?).await?;
        println!(
            "login {attempt}: {} RateLimit: {:?} Retry-After: {:?}",
            answer.status(),
            answer.headers().get("ratelimit"),
            answer.headers().get("retry-after"),
        );
    }
    Ok(())
}
