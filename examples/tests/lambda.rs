//! The `hasivu-lambda` binary (feature `lambda`) run as AWS runs it: the
//! test serves the Lambda Runtime API (`/2018-06-01/runtime/invocation/…`)
//! on a local port, starts the binary with `AWS_LAMBDA_RUNTIME_API`
//! pointing at it, and hands it API Gateway HTTP API (payload 2.0)
//! events, reading back the responses the binary posts.

use std::{
    collections::HashMap,
    io::Read,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The Runtime API's side: events waiting to be taken, and who waits for
/// each answer.
struct RuntimeApi {
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>,
    answers: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    init_error: Mutex<Option<String>>,
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    let Some((id, event)) = api.events.lock().await.recv().await else {
        return (axum::http::StatusCode::GONE, "no more events").into_response();
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(60);
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:hasivu"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".parse().unwrap(),
    );
    (headers, axum::Json(event)).into_response()
}

async fn answer(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>, body: String) {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if let Some(waiter) = api.answers.lock().unwrap().remove(&id) {
        let _ = waiter.send(value);
    }
}

async fn error(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>, body: String) {
    if let Some(waiter) = api.answers.lock().unwrap().remove(&id) {
        let _ = waiter.send(json!({ "invocation_error": body }));
    }
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: String) {
    *api.init_error.lock().unwrap() = Some(body);
}

/// The binary, killed when the test ends.
struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Harness {
    api: Arc<RuntimeApi>,
    events: mpsc::Sender<(String, Value)>,
    ids: AtomicU64,
    _function: Function,
}

impl Harness {
    async fn start() -> Self {
        let (events, receiver) = mpsc::channel(16);
        let api = Arc::new(RuntimeApi {
            events: tokio::sync::Mutex::new(receiver),
            answers: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(answer))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&api));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let function = Command::new(env!("CARGO_BIN_EXE_hasivu-lambda"))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "hasivu")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("HASIVU_USERS", "50")
            .env(
                "HASIVU_TOKEN_SECRET",
                "lambda-test-secret-of-32-bytes-or-more",
            )
            .env("HASIVU_SEED_DEMO", "true")
            .env("HASIVU_RATE_GENERAL", "6/60")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("HASIVU_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the hasivu-lambda binary");
        Self {
            api,
            events,
            ids: AtomicU64::new(1),
            _function: Function(function),
        }
    }

    /// Invokes the function with `event` and returns what it answered.
    async fn invoke(&self, event: Value) -> Value {
        let id = format!("req-{}", self.ids.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.api.answers.lock().unwrap().insert(id.clone(), tx);
        self.events.send((id, event)).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(answer) => answer.unwrap(),
            Err(_) => panic!(
                "no answer within a minute; init error: {:?}",
                self.api.init_error.lock().unwrap()
            ),
        }
    }
}

/// An API Gateway HTTP API (payload 2.0) event.
fn event(method: &str, path: &str, source_ip: &str, headers: Value, body: Option<&str>) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "hasivu",
            "domainName": "hasivu.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "hasivu",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": "Mozilla/5.0 hasivu-tests"
            },
            "requestId": "api-request",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:19:00:00 +0000",
            "timeEpoch": 1_795_000_000_000_u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

fn header<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer["headers"][name].as_str().unwrap_or("")
}

fn body(answer: &Value) -> Vec<u8> {
    let text = answer["body"].as_str().unwrap_or("");
    if answer["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        text.as_bytes().to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_api_gateway_events_under_the_lambda_runtime() {
    let lambda = Harness::start().await;
    let browser = json!({ "user-agent": "Mozilla/5.0 hasivu-tests" });

    let health = lambda
        .invoke(event(
            "GET",
            "/health",
            "203.0.113.7",
            browser.clone(),
            None,
        ))
        .await;
    assert_eq!(health["statusCode"], 200, "{health}");
    let status: Value = serde_json::from_slice(&body(&health)).unwrap();
    assert_eq!(status, json!({ "status": "ok" }));

    let login = lambda
        .invoke(event(
            "POST",
            "/auth/login",
            "203.0.113.7",
            json!({ "content-type": "application/json", "user-agent": "Mozilla/5.0 hasivu-tests" }),
            Some(r#"{"email":"parent@hasivu.example","password":"hasivu-demo"}"#),
        ))
        .await;
    assert_eq!(login["statusCode"], 200, "{login}");
    let token: Value = serde_json::from_slice(&body(&login)).unwrap();
    let token = token["token"].as_str().unwrap();

    // The menu, compressed once and cached: binary, so base64 in the answer.
    let menu = |ip: &'static str| {
        event(
            "GET",
            "/menu/daily",
            ip,
            json!({
                "accept-encoding": "br",
                "authorization": format!("Bearer {token}"),
                "user-agent": "Mozilla/5.0 hasivu-tests"
            }),
            None,
        )
    };
    let first = lambda.invoke(menu("203.0.113.7")).await;
    assert_eq!(first["statusCode"], 200, "{first}");
    assert_eq!(header(&first, "content-encoding"), "br");
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert_eq!(first["isBase64Encoded"], true);
    let mut json = Vec::new();
    brotli_decompressor::Decompressor::new(&body(&first)[..], 4096)
        .read_to_end(&mut json)
        .unwrap();
    let menu_json: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(menu_json["count"], 100);
    let second = lambda.invoke(menu("203.0.113.7")).await;
    assert_eq!(header(&second, "x-cache"), "HIT-L1");

    // The limiter keys anonymous clients on API Gateway's sourceIp: six
    // requests per minute for each address.
    let anonymous = |ip: &'static str| event("GET", "/health", ip, browser.clone(), None);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(lambda.invoke(anonymous("198.51.100.1")).await["statusCode"].clone());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let limited = lambda.invoke(anonymous("198.51.100.1")).await;
    assert_eq!(limited["statusCode"], 429);
    assert!(
        header(&limited, "ratelimit").starts_with("\"general\""),
        "{limited}"
    );
    let other = lambda.invoke(anonymous("198.51.100.2")).await;
    assert_eq!(
        other["statusCode"], 200,
        "another address has its own quota"
    );
}
