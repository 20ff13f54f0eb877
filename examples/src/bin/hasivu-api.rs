//! The HASIVU API: `cargo run --release -p hasivu-examples --bin hasivu-api`.

use std::time::Instant;

use hasivu_examples::api::{
    AppState, Config,
    app::{Operations, serve_with},
    db::seed,
    shutdown_signal,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let exec = Instant::now();
    tracing_subscriber::fmt().with_target(false).init();
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let admin = match config.admin_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
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
    let dashboard = match (
        admin_addr,
        Operations::main_listener(&state.config, Some(addr), admin_addr.is_some()),
    ) {
        (Some(admin), _) => format!("http://{admin}/dashboard"),
        (None, Operations::Token(_)) => {
            format!("http://{addr}/dashboard (any user name, HASIVU_ADMIN_TOKEN as the password)")
        }
        (None, Operations::Open) => format!("http://{addr}/dashboard"),
        (None, Operations::Off) => "off (set HASIVU_ADMIN_ADDR or HASIVU_ADMIN_TOKEN)".to_owned(),
    };
    println!("Try: curl http://{addr}/health   dashboard: {dashboard}");
    serve_with(listener, admin, state, shutdown_signal()).await
}
