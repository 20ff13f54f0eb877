//! The HASIVU API: `cargo run --release -p hasivu-examples --bin hasivu-api`.

use std::time::Instant;

use hasivu_examples::api::{AppState, Config, db::seed, serve, shutdown_signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let exec = Instant::now();
    tracing_subscriber::fmt().with_target(false).init();
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let state = AppState::build(config).await?;
    tracing::info!(
        ready_ms = format!("{:.1}", exec.elapsed().as_secs_f64() * 1000.0),
        database = state.db.kind(),
        redis = state.redis.is_some(),
        "HASIVU API ready on http://{addr}"
    );
    if state.config.seeds_demo() {
        println!("Demo accounts (password {:?}):", seed::DEMO_PASSWORD);
        for (email, role, tier) in seed::DEMO_ACCOUNTS {
            println!("  {email:<24} role {role:<7} tier {tier}");
        }
    }
    println!("Try: curl http://{addr}/health   dashboard: http://{addr}/dashboard");
    serve(listener, state, shutdown_signal()).await
}
