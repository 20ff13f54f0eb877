//! The operational routes (`/metrics`, `/dashboard`, `/dashboard/data`,
//! `/health/details`): behind the admin token, on the admin listener, or
//! not served on a public listener; and the public `/health`, which says
//! up or down and nothing else.

mod common;

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{client, config, header, start};
use hasivu_examples::api::{AppState, Config, app::serve_with};
use hasivu_testkit::{PostgresServer, RedisServer};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

const OPERATIONAL: [&str; 4] = [
    "/metrics",
    "/dashboard",
    "/dashboard/data",
    "/health/details",
];
const TOKEN: &str = "an-admin-token-of-some-length";

async fn status(url: String, auth: Option<&str>) -> u16 {
    let mut request = client().get(url);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listener_without_settings_serves_no_operational_routes() {
    let app = start(Config {
        addr: "0.0.0.0:0".parse().unwrap(),
        ..config()
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for path in OPERATIONAL {
        assert_eq!(status(url(path), None).await, 404, "{path}");
    }
    assert_eq!(status(url("/menu/daily"), None).await, 200);
    let health = client().get(url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_the_operational_routes() {
    let app = start(Config {
        admin_token: Some(TOKEN.into()),
        ..config()
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    for path in OPERATIONAL {
        let refused = client().get(app.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(header(&refused, "content-type"), "application/problem+json");
        assert!(
            refused
                .headers()
                .get_all("www-authenticate")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("Basic")),
            "a browser asks for the token"
        );
        let wrong = status(app.url(path), Some("Bearer not-the-admin-token")).await;
        assert_eq!(wrong, 401, "{path}");
        assert_eq!(status(app.url(path), Some(&bearer)).await, 200, "{path}");
    }
    // A browser sends it as the password of Basic authentication.
    let basic = format!("Basic {}", STANDARD.encode(format!("admin:{TOKEN}")));
    assert_eq!(status(app.url("/dashboard"), Some(&basic)).await, 200);
    assert_eq!(status(app.url("/dashboard/data"), Some(&basic)).await, 200);
    // The API itself needs no admin token.
    assert_eq!(status(app.url("/health"), None).await, 200);
    assert_eq!(status(app.url("/menu/daily"), None).await, 200);
    app.stop().await;
}

/// The API with an admin listener, both on free ports.
struct WithAdmin {
    main: String,
    admin: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_with_admin(config: Config) -> WithAdmin {
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let urls = (
        format!("http://{}", main.local_addr().unwrap()),
        format!("http://{}", admin.local_addr().unwrap()),
    );
    let state = AppState::build(Config {
        admin_addr: Some(admin.local_addr().unwrap()),
        ..config
    })
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_with(main, Some(admin), state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    WithAdmin {
        main: urls.0,
        admin: urls.1,
        stop,
        task,
    }
}

impl WithAdmin {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_serves_the_operational_routes() {
    let app = start_with_admin(config()).await;
    for path in OPERATIONAL {
        assert_eq!(
            status(format!("{}{path}", app.main), None).await,
            404,
            "{path}"
        );
        assert_eq!(
            status(format!("{}{path}", app.admin), None).await,
            200,
            "{path}"
        );
    }
    let details: Value = client()
        .get(format!("{}/health/details", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["checks"]["database"]["ok"], true, "{details}");
    assert_eq!(status(format!("{}/health", app.main), None).await, 200);
    app.stop().await;

    // With a token as well, the admin listener wants it too; the main
    // listener still serves none of them.
    let app = start_with_admin(Config {
        admin_token: Some(TOKEN.into()),
        ..config()
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let metrics = |base: &str| format!("{base}/metrics");
    assert_eq!(status(metrics(&app.admin), None).await, 401);
    assert_eq!(status(metrics(&app.admin), Some(&bearer)).await, 200);
    assert_eq!(status(metrics(&app.main), Some(&bearer)).await, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_health_shows_no_error_text_when_the_database_is_down() {
    let mut postgres = PostgresServer::start();
    let redis = RedisServer::start();
    let app = start(Config {
        database_url: Some(postgres.url()),
        redis_url: Some(redis.url()),
        ..config()
    })
    .await;
    let health = client().get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );

    postgres.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let down = loop {
        let health = client().get(app.url("/health")).send().await.unwrap();
        if health.status() == 503 {
            break health;
        }
        assert!(Instant::now() < deadline, "/health never said down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = down.text().await.unwrap();
    assert_eq!(text, r#"{"status":"down"}"#, "no dependency, no error text");

    // Operators still see why, on the operational side (open here: the
    // listener is on loopback and nothing else is configured).
    let details = client()
        .get(app.url("/health/details"))
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), 503);
    let details: Value = details.json().await.unwrap();
    assert_eq!(details["checks"]["database"]["ok"], false);
    assert!(
        details["checks"]["database"]["error"].is_string(),
        "{details}"
    );
    app.stop().await;
}
