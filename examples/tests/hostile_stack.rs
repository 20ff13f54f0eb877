//! Hostile requests through the whole stack (`hasivu_examples::api::stack`:
//! metrics, shield, auth, rate limit, request decompression, cache,
//! compression, handlers), in process through `oneshot`.
//!
//! Random methods, paths and queries (traversal, injections, nested
//! character references, field selections), headers (`Forwarded`,
//! `X-Forwarded-For` from trusted and untrusted peers, every
//! `Content-Encoding` and bogus ones, huge and repeated headers, long
//! cookies, `Authorization` garbage next to a real token) and bodies
//! (random bytes, JSON-ish text, nested entities up to the shield's 64 KiB,
//! deeply nested JSON, gzip, zstd and brotli bombs). 256 cases from a fixed
//! seed, so a run is the same on every machine.
//!
//! Each request must be answered, body included, within [`BOUND`] (a
//! correctness bound that catches a hang, not a speed target), and with no
//! 5xx except the intended 503s: `/health` while a dependency is down or
//! the service warms up, and the rate limiter's answer while load has
//! reduced its quotas.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{body::Body, extract::ConnectInfo};
use hasivu_examples::api::{AppState, Config, app::stack};
use hasivu_ratelimit::TrustedProxies;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner},
};
use tower::ServiceExt;

/// How long one request may take, answer and body: generous for a debug
/// build on a busy machine; only a hang or runaway work comes near it.
const BOUND: Duration = Duration::from_secs(10);

const CASES: u32 = 256;
const SEED: [u8; 32] = *b"hasivu hostile stack seed 000001";

/// Where a generated `Authorization` header takes the real token.
const TOKEN: &str = "{token}";

/// 1 MiB of zeros in brotli (quality 5, 4 MiB window): 13 bytes.
const BR_BOMB: &[u8] = &[
    0x5b, 0xff, 0xff, 0x0f, 0x40, 0x02, 0x20, 0x1e, 0x0b, 0x24, 0xf7, 0xfe, 0x01,
];

/// A request body and the `Content-Encoding` it comes with, if any.
#[derive(Clone, Debug)]
enum BodySpec {
    Empty,
    Bytes(Vec<u8>),
    Text(String),
    /// `{"note":"&amp;amp;…lt;script&gt;…"}`, the reference nested this
    /// many times.
    NestedEntities(usize),
    /// `[[[[…` this deep.
    DeepJson(usize),
    /// Zeros, encoded with this coding, far past the decoded cap.
    Bomb(&'static str),
    /// This many bytes of `a`, past the body limit.
    Huge(usize),
}

#[derive(Clone, Debug)]
struct Hostile {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: BodySpec,
    peer: [u8; 4],
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("GET".to_owned()),
        3 => Just("POST".to_owned()),
        1 => prop::sample::select(vec!["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
            .prop_map(str::to_owned),
        1 => "[A-Z]{1,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "/", "/health", "/auth/login", "/menu/daily", "/users/1", "/users/2",
            "/orders/create", "/payments/create", "/metrics", "/dashboard", "/dashboard/data",
        ])
        .prop_map(str::to_owned),
        1 => "/users/[0-9a-z%.]{0,12}",
        1 => prop::sample::select(vec![
            "/static/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2f..%2fwin.ini",
            "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
            "/.env",
            "/wp-admin/install.php",
            "/menu/%64aily",
            "//menu//daily/",
        ])
        .prop_map(str::to_owned),
        1 => "/[ -~]{0,64}",
        1 => (1usize..6000).prop_map(|n| "/a".repeat(n)),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "fields=[a-z.,()*/ ]{0,40}",
        Just("q=' OR '1'='1' --".to_owned()),
        Just("q=%3Cscript%3Ealert(1)%3C/script%3E".to_owned()),
        Just("next=javascript:alert(document.cookie)".to_owned()),
        (1usize..3000).prop_map(|n| format!("q=%26{}lt;script%26gt;", "amp;".repeat(n))),
        "[ -~]{0,120}",
        (1usize..2000).prop_map(|n| "a=1&".repeat(n)),
    ])
}

/// Bytes allowed literally in a request target; the rest is escaped so
/// that `Uri` takes it (what a client would send).
fn uri_safe(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for b in target.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn ip_list() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
            any::<[u16; 8]>().prop_map(|a| format!("[{}]:443", std::net::Ipv6Addr::from(a))),
            Just("10.0.0.1".to_owned()),
            Just("unknown".to_owned()),
            "[ -~]{0,20}",
        ],
        0..12,
    )
    .prop_map(|hops| hops.join(", "))
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let named = |name: &'static str, values: BoxedStrategy<String>| {
        values.prop_map(move |v| (name.to_owned(), v.into_bytes()))
    };
    prop_oneof![
        named("x-forwarded-for", ip_list().boxed()),
        named(
            "forwarded",
            ip_list()
                .prop_map(|hops| {
                    hops.split(", ")
                        .map(|h| format!("for=\"{h}\";proto=https"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .boxed()
        ),
        named(
            "content-encoding",
            prop_oneof![
                prop::sample::select(vec![
                    "gzip",
                    "deflate",
                    "br",
                    "zstd",
                    "identity",
                    "x-gzip",
                    "gzip, br",
                    "zstd, gzip",
                    "compress",
                    "gzip, gzip, gzip, gzip, gzip",
                    "",
                    " , ,",
                ])
                .prop_map(str::to_owned),
                "[a-z, ]{0,24}",
            ]
            .boxed()
        ),
        named(
            "accept-encoding",
            prop_oneof![
                Just("gzip, deflate, br, zstd".to_owned()),
                Just("*;q=0".to_owned()),
                "[a-z*;=0-9., ]{0,40}",
            ]
            .boxed()
        ),
        named(
            "authorization",
            prop_oneof![
                Just(format!("Bearer {TOKEN}")),
                Just(format!("Bearer {TOKEN}x")),
                Just(format!("bearer  {TOKEN} ")),
                "Bearer [A-Za-z0-9._-]{0,200}",
                "Basic [A-Za-z0-9+/=]{0,40}",
                "[ -~]{0,80}",
            ]
            .boxed()
        ),
        named(
            "cookie",
            prop::collection::vec("[a-z]{1,8}=[!-~&&[^;]]{0,64}", 1..400)
                .prop_map(|c| c.join("; "))
                .boxed()
        ),
        named(
            "user-agent",
            prop_oneof![
                Just("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0".to_owned()),
                Just("sqlmap/1.7.2#stable".to_owned()),
                Just("Nikto/2.5.0".to_owned()),
                "[ -~]{0,700}",
            ]
            .boxed()
        ),
        named(
            "content-type",
            prop_oneof![
                Just("application/json".to_owned()),
                Just("application/x-www-form-urlencoded".to_owned()),
                Just("application/problem+json; charset=utf-8".to_owned()),
                "[ -~]{0,40}",
            ]
            .boxed()
        ),
        named("content-length", "[0-9]{1,22}".boxed()),
        named("if-none-match", "[ -~]{0,80}".boxed()),
        named("cache-control", "[a-z=0-9,\" -]{0,60}".boxed()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|v| ("x-garbage".to_owned(), v)),
        (1usize..48 * 1024).prop_map(|n| ("x-huge".to_owned(), vec![b'a'; n])),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        prop_oneof![
            4 => header().prop_map(|h| vec![h]),
            1 => (header(), 2usize..300).prop_map(|(h, n)| vec![h; n]),
        ],
        0..8,
    )
    .prop_map(|groups| groups.into_iter().flatten().collect())
}

fn body() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        2 => Just(BodySpec::Empty),
        2 => prop::collection::vec(any::<u8>(), 0..4096).prop_map(BodySpec::Bytes),
        2 => (1i64..200, -5i64..50, "[ -~]{0,80}").prop_map(|(item, quantity, note)| {
            BodySpec::Text(
                serde_json::json!({
                    "items": [{"menu_item_id": item, "quantity": quantity}],
                    "note": note,
                    "email": "parent@hasivu.example",
                    "password": note,
                    "order_id": item,
                    "method": "card",
                })
                .to_string(),
            )
        }),
        2 => "[\\[\\]{}\":,0-9a-z\\\\ ]{0,300}".prop_map(BodySpec::Text),
        1 => "([a-z]{1,6}=[ -~&&[^&]]{0,30}&){0,20}".prop_map(BodySpec::Text),
        1 => prop::sample::select(vec![8usize, 1000, 16_000]).prop_map(BodySpec::NestedEntities),
        1 => prop::sample::select(vec![200usize, 100_000]).prop_map(BodySpec::DeepJson),
        1 => prop::sample::select(vec!["gzip", "zstd", "br", "deflate"]).prop_map(BodySpec::Bomb),
        1 => Just(BodySpec::Huge(2 * 1024 * 1024)),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        method(),
        path(),
        query(),
        headers(),
        body(),
        // Mostly a new client each time: the shield blocks a client that
        // attacks, and every later request of it would be a 429.
        prop_oneof![
            1 => Just([10, 0, 0, 2]),
            1 => Just([203, 0, 113, 9]),
            8 => any::<[u8; 4]>(),
        ],
    )
        .prop_map(|(method, path, query, headers, body, peer)| Hostile {
            method,
            target: match query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            },
            headers,
            body,
            peer,
        })
}

fn encoded(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => unreachable!("no encoder for {other}"),
    }
}

/// A compressed body that decodes to far more than the 1 MiB cap.
fn bomb(coding: &str) -> Vec<u8> {
    static BOMBS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    let bombs = BOMBS.get_or_init(|| {
        let zeros = vec![0u8; 16 * 1024 * 1024];
        ["gzip", "deflate", "zstd"]
            .into_iter()
            .map(|c| (c, encoded(c, &zeros)))
            .chain([("br", BR_BOMB.to_vec())])
            .collect()
    });
    bombs.iter().find(|(c, _)| *c == coding).unwrap().1.clone()
}

fn request(case: &Hostile, token: &str) -> Request<Body> {
    let uri = Uri::try_from(uri_safe(&case.target)).unwrap_or_else(|_| Uri::from_static("/"));
    let method = Method::from_bytes(case.method.as_bytes()).unwrap_or(Method::GET);
    let (body, coding): (Vec<u8>, Option<&str>) = match &case.body {
        BodySpec::Empty => (Vec::new(), None),
        BodySpec::Bytes(bytes) => (bytes.clone(), None),
        BodySpec::Text(text) => (text.clone().into_bytes(), None),
        BodySpec::NestedEntities(n) => (
            format!(
                r#"{{"note":"&{}lt;script&gt;alert(1)&lt;/script&gt;"}}"#,
                "amp;".repeat(*n)
            )
            .into_bytes(),
            None,
        ),
        BodySpec::DeepJson(depth) => ("[".repeat(*depth).into_bytes(), None),
        BodySpec::Bomb(coding) => (bomb(coding), Some(*coding)),
        BodySpec::Huge(n) => (vec![b'a'; *n], None),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let headers = request.headers_mut();
    if let Some(coding) = coding {
        headers.insert("content-encoding", HeaderValue::from_static(coding));
    }
    if matches!(
        case.body,
        BodySpec::NestedEntities(_) | BodySpec::DeepJson(_)
    ) {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    for (name, value) in &case.headers {
        let value = if name == "authorization" {
            String::from_utf8_lossy(value)
                .replace(TOKEN, token)
                .into_bytes()
        } else {
            value.clone()
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    let peer = SocketAddr::from((case.peer, 40_000));
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// What came back: status, whether a 503 is one of the intended ones, and
/// how long it took.
struct Answer {
    status: u16,
    rate_limited: bool,
    elapsed: Duration,
}

async fn send<S>(service: &S, request: Request<Body>) -> Option<Answer>
where
    S: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone,
{
    let started = Instant::now();
    let answered = tokio::time::timeout(BOUND, async {
        let response = service.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        (status, body)
    })
    .await
    .ok()?;
    let (status, body) = answered;
    let rate_limited = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|problem| problem.get("policy").is_some() && problem["status"] == 503);
    Some(Answer {
        status,
        rate_limited,
        elapsed: started.elapsed(),
    })
}

#[test]
fn hostile_requests_get_answers_and_no_unintended_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (service, token) = runtime.block_on(async {
        let config = Config {
            users: 50,
            token_secret: Some("test-secret-of-thirty-two-bytes!".into()),
            // Peers in 10/8 are proxies: their forwarding headers count.
            trusted_proxies: TrustedProxies::new(["10.0.0.0/8"]).unwrap(),
            ..Config::default()
        };
        let state = AppState::build(config).await.unwrap();
        let service = stack(state).unwrap();
        let mut login = Request::post("/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"email":"parent@hasivu.example","password":"hasivu-demo"}"#,
            ))
            .unwrap();
        login
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40_000))));
        let response = service.clone().oneshot(login).await.unwrap();
        assert_eq!(response.status(), 200, "the demo login works");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (service, body["token"].as_str().unwrap().to_owned())
    });

    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };
    let statuses = RefCell::new(BTreeMap::<u16, u32>::new());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let result = runner.run(&hostile(), |case| {
        let method = case.method.clone();
        let target = case.target.chars().take(120).collect::<String>();
        let answer = runtime.block_on(send(&service, request(&case, &token)));
        let Some(answer) = answer else {
            return Err(TestCaseError::fail(format!(
                "{method} {target}: no answer within {BOUND:?}"
            )));
        };
        prop_assert!(
            answer.elapsed <= BOUND,
            "{} {}: answered after {:?}, past the bound of {:?}",
            method,
            target,
            answer.elapsed,
            BOUND
        );
        *statuses.borrow_mut().entry(answer.status).or_default() += 1;
        let intended_503 = answer.status == 503
            && (uri_safe(&case.target).starts_with("/health") || answer.rate_limited);
        prop_assert!(
            answer.status < 500 || intended_503,
            "{} {}: status {}",
            method,
            target,
            answer.status
        );
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // The cases reach the handlers, not only the refusals of the outer
    // layers.
    let statuses = statuses.into_inner();
    eprintln!("statuses: {statuses:?}");
    assert!(
        statuses.range(200..300).count() > 0 && statuses.len() >= 5,
        "too few kinds of answer: {statuses:?}"
    );
}
