//! Demo data (accounts with a published password) goes only where it is
//! wanted: the in-memory database, or a database whose operator says so
//! with `HASIVU_SEED_DEMO`. Every database is migrated.

mod common;

use common::{client, config, login, sql, start};
use hasivu_examples::api::Config;
use hasivu_testkit::PostgresServer;
use serde_json::json;

async fn users(app: &common::Running) -> i64 {
    sql::scalar(&app.state.db, "SELECT COUNT(*) FROM users").await
}

async fn demo_login_status(app: &common::Running) -> u16 {
    client()
        .post(app.url("/auth/login"))
        .json(&json!({ "email": "admin@hasivu.example", "password": "hasivu-demo" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_gets_demo_accounts_only_when_the_setting_says_so() {
    let postgres = PostgresServer::start();
    let unset = Config {
        database_url: Some(postgres.url()),
        seed_demo: None,
        ..config()
    };
    let app = start(unset.clone()).await;
    assert_eq!(
        users(&app).await,
        0,
        "a PostgreSQL database is not seeded unless HASIVU_SEED_DEMO says so"
    );
    assert_eq!(demo_login_status(&app).await, 401);
    // Migrated all the same.
    assert_eq!(
        sql::scalar(&app.state.db, "SELECT COUNT(*) FROM idempotency_keys").await,
        0
    );
    app.stop().await;

    let app = start(Config {
        seed_demo: Some(true),
        ..unset
    })
    .await;
    assert_eq!(users(&app).await, 50);
    login(&client(), &app, "parent@hasivu.example").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_gets_demo_accounts_only_when_the_setting_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = Config {
        sqlite_path: Some(dir.path().join("hasivu.db").display().to_string()),
        seed_demo: None,
        ..config()
    };
    let app = start(file.clone()).await;
    assert_eq!(
        users(&app).await,
        0,
        "a SQLite file is not seeded by default"
    );
    assert_eq!(demo_login_status(&app).await, 401);
    app.stop().await;

    let app = start(Config {
        seed_demo: Some(true),
        ..file
    })
    .await;
    assert_eq!(users(&app).await, 50);
    assert_eq!(demo_login_status(&app).await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_database_is_seeded_unless_the_setting_says_no() {
    let app = start(Config {
        seed_demo: None,
        ..config()
    })
    .await;
    assert_eq!(users(&app).await, 50);
    assert_eq!(demo_login_status(&app).await, 200);
    app.stop().await;

    let app = start(Config {
        seed_demo: Some(false),
        ..config()
    })
    .await;
    assert_eq!(users(&app).await, 0);
    app.stop().await;
}
