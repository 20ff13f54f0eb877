//! The HASIVU API under AWS Lambda (the report's platform), behind API
//! Gateway (REST or HTTP API) or an Application Load Balancer: the same
//! [`stack`] as `hasivu-api`, the same settings from the environment.
//!
//! ```sh
//! cargo build --release -p hasivu-examples --features lambda --bin hasivu-lambda
//! ```
//!
//! The state (pools, cache, limiter, analytics) is built once per execution
//! environment, before the first invocation, and reused by the warm ones.
//! Set `DATABASE_URL` (an in-memory SQLite lives only as long as one
//! environment) and `REDIS_URL` so that limits, the blocklist and the cache
//! are shared by the concurrent environments, and `HASIVU_TOKEN_SECRET` so
//! that every environment accepts the same tokens.

use std::net::{IpAddr, SocketAddr};

use hasivu_examples::api::{AppState, Config, app::Request, stack};
use lambda_http::{RequestExt, request::RequestContext};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // CloudWatch stamps every line itself.
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .init();
    let config = Config::from_env()?;
    let state = AppState::build(config).await?;
    tracing::info!(
        database = state.db.kind(),
        redis = state.redis.is_some(),
        "HASIVU API ready under Lambda"
    );
    let service = tower::ServiceBuilder::new()
        .map_request(into_axum)
        .service(stack(state)?);
    lambda_http::run(service).await
}

/// The Lambda request as the stack takes it, with the client's address
/// where the limiter and the shield look for the peer.
fn into_axum(request: lambda_http::Request) -> Request {
    let client = client_ip(&request);
    let mut request = request.map(axum::body::Body::new);
    if let Some(ip) = client {
        request.extensions_mut().insert(SocketAddr::new(ip, 0));
    }
    request
}

/// The client as AWS saw it: API Gateway's `sourceIp`, or the last
/// `X-Forwarded-For` entry, the one an Application Load Balancer appends
/// (the entries before it are the client's word).
fn client_ip(request: &lambda_http::Request) -> Option<IpAddr> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?.parse().ok(),
        RequestContext::ApiGatewayV1(context) => {
            context.identity.source_ip.as_deref()?.parse().ok()
        }
        RequestContext::Alb(_) => request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .next_back()?
            .to_str()
            .ok()?
            .rsplit(',')
            .next()?
            .trim()
            .parse()
            .ok(),
        // Other triggers: no address, the limiter keys on the user.
        _ => None,
    }
}
