//! Starts the API in process on a free port.

#![allow(dead_code, unreachable_pub)]

pub mod sql;

use std::io::Read;

use hasivu_examples::api::{AppState, Config, serve};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub struct Running {
    pub base: String,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops it the way SIGTERM does, and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The stores a test runs on: SQLite and in-process state, or PostgreSQL
/// and Redis started through the testkit (kept alive as long as this).
pub enum Backend {
    Sqlite {
        dir: tempfile::TempDir,
    },
    PostgresRedis {
        postgres: hasivu_testkit::PostgresServer,
        redis: hasivu_testkit::RedisServer,
    },
}

impl Backend {
    pub fn sqlite() -> Self {
        Self::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn postgres_and_redis() -> Self {
        Self::PostgresRedis {
            postgres: hasivu_testkit::PostgresServer::start(),
            redis: hasivu_testkit::RedisServer::start(),
        }
    }

    /// The test configuration on these stores; on SQLite the regression
    /// history goes to a file of this backend's directory, on Redis to Redis.
    pub fn config(&self) -> Config {
        match self {
            Self::Sqlite { dir } => Config {
                history_path: Some(dir.path().join("history.json").display().to_string()),
                ..config()
            },
            Self::PostgresRedis { postgres, redis } => Config {
                database_url: Some(postgres.url()),
                redis_url: Some(redis.url()),
                ..config()
            },
        }
    }

    pub fn database(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::PostgresRedis { .. } => "postgres",
        }
    }
}

/// One `#[tokio::test]` per scenario and backend: `sqlite::NAME` and
/// `postgres_and_redis::NAME`, each calling `NAME(backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres_and_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::postgres_and_redis()).await;
                }
            )*
        }
    };
}

pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        users: 50,
        token_secret: Some("test-secret-of-thirty-two-bytes!".into()),
        // The tests log in as the demo accounts, on every database.
        seed_demo: Some(true),
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Running {
    let listener = TcpListener::bind(config.addr).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::build(config).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = state.clone();
    let task = tokio::spawn(async move {
        serve(listener, serving, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        base,
        state,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A client that leaves bodies as they come (no automatic decoding).
pub fn client() -> Client {
    Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) hasivu-tests")
        .build()
        .unwrap()
}

pub async fn login(client: &Client, app: &Running, email: &str) -> String {
    let response = client
        .post(app.url("/auth/login"))
        .json(&json!({ "email": email, "password": "hasivu-demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "br" => {
            brotli_decompressor::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        "" | "identity" => out = bytes.to_vec(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

/// The first menu item of a school's menu today.
pub async fn first_item(client: &Client, app: &Running, token: &str) -> i64 {
    let menu: Value = client
        .get(app.url("/menu/daily"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    menu["items"][0]["id"].as_i64().unwrap()
}
