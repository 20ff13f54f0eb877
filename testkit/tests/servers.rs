//! The testkit's own tests: real servers, real clients, outages and recovery.

use hasivu_testkit::{Error, PostgresServer, RedisServer};
use redis::AsyncCommands;
use tokio_postgres::NoTls;

async fn redis_connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

#[tokio::test]
async fn redis_start_stop_and_start_again() {
    let mut server = RedisServer::start();
    let port = server.port();
    let mut conn = redis_connection(&server.url()).await.unwrap();
    let () = conn.set("menu:daily:current", "[]").await.unwrap();
    let value: String = conn.get("menu:daily:current").await.unwrap();
    assert_eq!(value, "[]");

    server.stop();
    assert!(!server.is_running());
    let on_old: redis::RedisResult<String> = conn.get("menu:daily:current").await;
    assert!(on_old.is_err(), "a command on a stopped server must fail");
    assert!(
        redis_connection(&server.url()).await.is_err(),
        "connecting to a stopped server must fail"
    );

    server.start_again();
    assert_eq!(server.port(), port, "start_again keeps the port");
    let mut conn = redis_connection(&server.url()).await.unwrap();
    let value: Option<String> = conn.get("menu:daily:current").await.unwrap();
    assert_eq!(
        value, None,
        "no persistence: data does not survive a restart"
    );
    let () = conn.set("k", "v").await.unwrap();
    let value: String = conn.get("k").await.unwrap();
    assert_eq!(value, "v");
}

#[tokio::test]
async fn redis_servers_are_isolated() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    let mut on_a = redis_connection(&a.url()).await.unwrap();
    let mut on_b = redis_connection(&b.url()).await.unwrap();
    let () = on_a.set("only-on-a", 1).await.unwrap();
    let on_b_value: Option<i64> = on_b.get("only-on-a").await.unwrap();
    assert_eq!(on_b_value, None);
}

#[tokio::test]
async fn redis_config_directives_are_applied() {
    let server = RedisServer::builder().config("maxmemory", "1mb").start();
    let mut conn = redis_connection(&server.url()).await.unwrap();
    let (_, value): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "1048576");
}

#[tokio::test]
async fn redis_is_killed_on_drop() {
    let server = RedisServer::start();
    let url = server.url();
    redis_connection(&url).await.unwrap();
    drop(server);
    assert!(redis_connection(&url).await.is_err());
}

#[test]
fn missing_redis_binary_names_the_package() {
    let err = RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .try_start()
        .unwrap_err();
    assert!(matches!(err, Error::MissingBinary { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{message}"
    );
}

async fn pg_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn postgres_start_stop_and_start_again() {
    let mut server = PostgresServer::start();
    let port = server.port();
    let client = pg_client(&server.url()).await.unwrap();
    let db: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "hasivu");
    client
        .batch_execute("CREATE TABLE schools (id int PRIMARY KEY, name text NOT NULL); INSERT INTO schools VALUES (1, 'Green Valley')")
        .await
        .unwrap();

    server.stop();
    assert!(!server.is_running());
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "a query on a stopped server must fail"
    );
    assert!(pg_client(&server.url()).await.is_err());

    server.start_again();
    assert_eq!(server.port(), port, "start_again keeps the port");
    let client = pg_client(&server.url()).await.unwrap();
    let name: String = client
        .query_one("SELECT name FROM schools WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Green Valley", "committed data survives a restart");
}

#[tokio::test]
async fn postgres_servers_are_isolated() {
    let a = PostgresServer::start();
    let b = PostgresServer::start();
    assert_ne!(a.port(), b.port());
    let on_a = pg_client(&a.url()).await.unwrap();
    let on_b = pg_client(&b.url()).await.unwrap();
    on_a.batch_execute("CREATE TABLE only_on_a (id int)")
        .await
        .unwrap();
    let found: i64 = on_b
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_on_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 0);
}

#[tokio::test]
async fn postgres_is_shut_down_on_drop() {
    let server = PostgresServer::start();
    let url = server.url();
    pg_client(&url).await.unwrap();
    drop(server);
    assert!(pg_client(&url).await.is_err());
}

#[test]
fn missing_postgres_binaries_name_the_package() {
    let err = PostgresServer::builder()
        .bin_dir("/nonexistent")
        .try_start()
        .unwrap_err();
    assert!(matches!(err, Error::MissingBinary { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("apt-get install -y postgresql"),
        "{message}"
    );
}
