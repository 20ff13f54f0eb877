//! The abuse shield through its tower layer: corpora of benign and
//! malicious requests, scoring, blocklists (local and shared through a real
//! Redis), the allow-list, spoofed forwarding headers and bounded
//! inspection.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
#[cfg(feature = "redis")]
use hasivu_ratelimit::shield::RedisBlocklist;
use hasivu_ratelimit::{
    TrustedProxies,
    http::{ClientIpKey, PeerAddr},
    shield::{Action, Blocklist, InspectedBody, ShieldLayer, ShieldVerdict, Strikes},
};
#[cfg(feature = "redis")]
use hasivu_testkit::RedisServer;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// The inner service: answers 404 under `/missing`, 200 elsewhere, and
/// reports the shield's score and reasons and the body it received.
async fn app<B>(request: Request<InspectedBody<B>>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let verdict = request.extensions().get::<ShieldVerdict>();
    let score = verdict.map_or(0, |v| v.score);
    let reasons = verdict.map_or_else(String::new, |v| {
        v.findings
            .iter()
            .map(|f| f.reason)
            .collect::<Vec<_>>()
            .join(",")
    });
    let status = if request.uri().path().starts_with("/missing") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let body = request
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Ok(Response::builder()
        .status(status)
        .header("x-score", score)
        .header("x-reasons", reasons)
        .header("x-body-len", body.len())
        .body(Full::new(body))
        .unwrap())
}

fn request(peer: IpAddr, uri: &str) -> Request<Full<Bytes>> {
    let mut r = Request::get(uri)
        .header("user-agent", BROWSER)
        .body(Full::new(Bytes::new()))
        .unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

fn json(peer: IpAddr, uri: &str, body: String) -> Request<Full<Bytes>> {
    let mut r = Request::post(uri)
        .header("user-agent", BROWSER)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Percent-encodes everything but unreserved characters (and `%` when
/// `keep_percent`, for entries that are already encoded).
fn encode_with(text: &str, keep_percent: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~')
                || (keep_percent && b == b'%')
            {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Percent-encodes what a URI cannot hold, keeping `/`, `.`, `%`, `?`, `=`
/// and `;`: for traversal payloads sent as paths.
fn encode_path(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'_' | b'~' | b'/' | b'%' | b'?' | b'=' | b';' | b':' | b'@'
                )
            {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether the entry is already percent-encoded (then it is sent as it is).
fn pre_encoded(entry: &str) -> bool {
    let b = entry.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
        || b.windows(2).any(|w| w == b"%u")
}

/// The entries of a corpus file with their section.
fn corpus(name: &str) -> Vec<(String, String)> {
    let path = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line == "#" || line.starts_with("# ") {
            if let Some(rest) = line.strip_prefix("# [") {
                section = rest.trim_end_matches(']').to_owned();
            }
            continue;
        }
        entries.push((section.clone(), line.replace("{NL}", "\n")));
    }
    entries
}

/// The requests that carry an entry: a query value, a path segment or path,
/// a JSON body string.
fn requests_for(
    section: &str,
    entry: &str,
    malicious: bool,
) -> Vec<(&'static str, String, Option<String>)> {
    let mut out = Vec::new();
    let encoded = pre_encoded(entry);
    let value = encode_with(entry, encoded);
    out.push(("query", format!("/search?page=1&q={value}"), None));
    if malicious && section == "traversal" {
        let path = encode_path(entry);
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/files/{path}")
        };
        out.push(("path", path, None));
    } else if malicious || (entry.len() <= 200 && !entry.contains(['/', '\\', '\n'])) {
        out.push(("path", format!("/search/{value}"), None));
    }
    if !encoded {
        let body =
            serde_json::json!({ "order": 42, "comment": entry, "tags": ["lunch"] }).to_string();
        out.push(("json", "/orders".to_owned(), Some(body)));
    }
    out
}

#[derive(Default)]
struct Rates {
    requests: usize,
    scored: usize,
    blocked: usize,
    misses: Vec<String>,
}

async fn run_corpus(name: &str, malicious: bool) -> Rates {
    let service = ServiceBuilder::new()
        .layer(ShieldLayer::new())
        .service(service_fn(app::<Full<Bytes>>));
    let mut rates = Rates::default();
    let mut client: u32 = 0;
    for (section, entry) in corpus(name) {
        for (context, uri, body) in requests_for(&section, &entry, malicious) {
            // One client per request: stateful detectors see ordinary users.
            client += 1;
            let peer = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + client));
            let req = match body {
                Some(body) => json(peer, &uri, body),
                None => request(peer, &uri),
            };
            let answer = service.clone().oneshot(req).await.unwrap();
            rates.requests += 1;
            let blocked = answer.status() == StatusCode::TOO_MANY_REQUESTS;
            let score: u32 = answer
                .headers()
                .get("x-score")
                .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
            if blocked {
                rates.blocked += 1;
            }
            if blocked || score > 0 {
                rates.scored += 1;
                if !malicious {
                    rates.misses.push(format!(
                        "{context} [{section}] {entry:?} score {score} blocked {blocked}"
                    ));
                }
            } else if malicious {
                rates
                    .misses
                    .push(format!("{context} [{section}] {entry:?}"));
            }
        }
    }
    rates
}

#[tokio::test]
async fn corpora_rates() {
    let benign = run_corpus("benign.txt", false).await;
    let malicious = run_corpus("malicious.txt", true).await;
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of as f64;
    println!(
        "benign:    {} requests from {} entries, {} scored ({:.2}%), {} blocked ({:.2}%)",
        benign.requests,
        corpus("benign.txt").len(),
        benign.scored,
        pct(benign.scored, benign.requests),
        benign.blocked,
        pct(benign.blocked, benign.requests)
    );
    println!(
        "malicious: {} requests from {} entries, {} scored ({:.2}%), {} blocked ({:.2}%)",
        malicious.requests,
        corpus("malicious.txt").len(),
        malicious.scored,
        pct(malicious.scored, malicious.requests),
        malicious.blocked,
        pct(malicious.blocked, malicious.requests)
    );
    for miss in &benign.misses {
        println!("benign scored: {miss}");
    }
    for miss in &malicious.misses {
        println!("malicious missed: {miss}");
    }
    assert!(corpus("benign.txt").len() >= 400);
    assert!(corpus("malicious.txt").len() >= 400);
    assert_eq!(benign.blocked, 0, "no benign request may be blocked");
    assert!(
        pct(benign.scored, benign.requests) <= 0.5,
        "at most 0.5% of benign requests scored"
    );
    assert!(
        pct(malicious.scored, malicious.requests) >= 95.0,
        "at least 95% of malicious requests scored"
    );
}

fn attack(peer: IpAddr) -> Request<Full<Bytes>> {
    request(peer, "/menu?id=1%27%20OR%20%271%27%3D%271")
}

#[cfg(feature = "redis")]
fn redis_blocklist(redis: &RedisServer, prefix: &str) -> RedisBlocklist {
    RedisBlocklist::builder(redis.url())
        .prefix(prefix)
        .timeout(Duration::from_millis(50))
        // Every lookup asks Redis, so the test sees changes at once.
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap()
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_blocklist_is_shared_by_two_instances() {
    let redis = RedisServer::start();
    let a_list = redis_blocklist(&redis, "test:shared:");
    let b_list = redis_blocklist(&redis, "test:shared:");
    // Blocks at the first violation: the test is about sharing them.
    let a = ShieldLayer::new()
        .strikes(Strikes::first())
        .blocklist(a_list.clone())
        .layer(service_fn(app::<Full<Bytes>>));
    let b = ShieldLayer::new()
        .blocklist(b_list.clone())
        .layer(service_fn(app::<Full<Bytes>>));
    let attacker = ip("203.0.113.200");

    // Instance B has never seen the client: it passes.
    let answer = b.clone().oneshot(request(attacker, "/menu")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // The attack hits instance A, which blocks the client…
    let answer = a.clone().oneshot(attack(attacker)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    // …and instance B refuses it from then on, with the time left.
    let answer = b.clone().oneshot(request(attacker, "/menu")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    // Both list it, with its reason.
    let entries = b_list.entries().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].ip, attacker);
    assert_eq!(entries[0].reason, "sqli");
    // Unblocking through B lets the client into A again.
    assert!(b_list.unblock(attacker).await.unwrap());
    let answer = a.clone().oneshot(request(attacker, "/menu")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(a_list.entries().await.unwrap().is_empty());
    // IPv6 clients are blocked by /64, on both instances.
    a_list
        .block(ip("2001:db8:5:6::1"), Duration::from_secs(60), "manual")
        .await
        .unwrap();
    let answer = b
        .oneshot(request(ip("2001:db8:5:6:ffff::9"), "/menu"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b_list.entries().await.unwrap()[0].ip, ip("2001:db8:5:6::"));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn cached_answers_keep_the_hot_path_off_redis() {
    let redis = RedisServer::start();
    let list = RedisBlocklist::builder(redis.url())
        .prefix("test:cache:")
        .build()
        .unwrap();
    let client = ip("198.51.100.77");
    assert_eq!(
        list.lookup_now(client),
        hasivu_ratelimit::shield::Lookup::Unknown
    );
    assert_eq!(list.lookup(client).await, None);
    // Answered locally for the next second.
    assert_eq!(
        list.lookup_now(client),
        hasivu_ratelimit::shield::Lookup::Clear
    );
    list.block(client, Duration::from_secs(30), "manual")
        .await
        .unwrap();
    assert!(matches!(
        list.lookup_now(client),
        hasivu_ratelimit::shield::Lookup::Blocked(_)
    ));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_outage_never_blocks_traffic() {
    let mut redis = RedisServer::start();
    let list = redis_blocklist(&redis, "test:outage:");
    let service = ShieldLayer::new()
        .strikes(Strikes::first())
        .blocklist(list.clone())
        .layer(service_fn(app::<Full<Bytes>>));
    let answer = service
        .clone()
        .oneshot(request(ip("192.0.2.90"), "/menu"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    redis.stop();

    // Clean traffic passes, quickly: one bounded timeout at most, then the
    // instance answers from local state.
    let started = Instant::now();
    for i in 0..50u8 {
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i));
        let answer = service
            .clone()
            .oneshot(request(peer, "/menu"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );

    // Attacks are still refused, and the instance keeps its own blocks.
    let attacker = ip("192.0.2.99");
    let answer = service.clone().oneshot(attack(attacker)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let answer = service
        .clone()
        .oneshot(request(attacker, "/menu"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(list.entries().await.is_err(), "listing reports the outage");

    // Redis comes back: calls go through again after the backoff.
    redis.start_again();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = service
        .clone()
        .oneshot(request(ip("192.0.2.98"), "/menu"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    list.block(ip("192.0.2.97"), Duration::from_secs(60), "manual")
        .await
        .unwrap();
    assert_eq!(list.entries().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_cannot_get_another_address_blocked() {
    let layer =
        ShieldLayer::new()
            .strikes(Strikes::first())
            .client_ip(ClientIpKey::trusted_proxies(
                TrustedProxies::new(["10.0.0.0/8"]).unwrap(),
            ));
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    let victim = ip("203.0.113.50");

    // An untrusted peer attacks, claiming to be the victim.
    let mut r = attack(ip("198.51.100.3"));
    r.headers_mut()
        .insert("x-forwarded-for", "203.0.113.50".parse().unwrap());
    r.headers_mut()
        .insert("forwarded", "for=203.0.113.50".parse().unwrap());
    let answer = service.clone().oneshot(r).await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);

    // The attacker is blocked, not the victim.
    let blocked: Vec<IpAddr> = blocklist
        .entries()
        .await
        .unwrap()
        .iter()
        .map(|e| e.ip)
        .collect();
    assert_eq!(blocked, [ip("198.51.100.3")]);
    let mut r = request(ip("10.0.0.1"), "/menu");
    r.headers_mut()
        .insert("x-forwarded-for", "203.0.113.50".parse().unwrap());
    let answer = service.clone().oneshot(r).await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "the victim behind the proxy"
    );
    let answer = service
        .clone()
        .oneshot(request(victim, "/menu"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "the victim directly");

    // Behind the trusted proxy, the forwarded client is the one blocked.
    let mut r = attack(ip("10.0.0.1"));
    r.headers_mut()
        .insert("x-forwarded-for", "6.6.6.6, 198.51.100.44".parse().unwrap());
    assert_eq!(
        service.clone().oneshot(r).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(matches!(
        blocklist.lookup_now(ip("198.51.100.44")),
        hasivu_ratelimit::shield::Lookup::Blocked(_)
    ));
    assert_eq!(
        blocklist.lookup_now(ip("6.6.6.6")),
        hasivu_ratelimit::shield::Lookup::Clear
    );
    assert_eq!(
        blocklist.lookup_now(ip("10.0.0.1")),
        hasivu_ratelimit::shield::Lookup::Clear
    );
}

/// A body of `len` bytes of JSON string, in 16 KiB frames, of unknown
/// length.
struct Endless {
    left: usize,
    started: bool,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"q\":\"")))));
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(16 * 1024);
        self.left -= n;
        // `' OR '1'='1` repeated: every piece is an injection.
        let chunk: Vec<u8> = b"' OR '1'='1 ".iter().copied().cycle().take(n).collect();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

#[tokio::test]
async fn huge_inputs_cost_bounded_time() {
    let service = ShieldLayer::new()
        .action(Action::LogOnly)
        .layer(service_fn(app::<Full<Bytes>>));
    let time = |uri: String, peer: IpAddr| {
        let service = service.clone();
        async move {
            let started = Instant::now();
            let answer = service.oneshot(request(peer, &uri)).await.unwrap();
            (started.elapsed(), answer)
        }
    };
    // A query of hostile-looking soup: inspection stops at 8 KiB, so
    // 60 KiB (near the longest URI `http` accepts) costs about what 8 KiB
    // does. The best of five runs, to keep scheduling noise out.
    let soup = |len: usize| "%27%22%3C(%2F*".repeat(len / 14);
    let best = |uri: String, peer: IpAddr| {
        let time = &time;
        async move {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let (elapsed, answer) = time(uri.clone(), peer).await;
                assert_eq!(answer.status(), StatusCode::OK);
                best = best.min(elapsed);
            }
            best
        }
    };
    let small = best(format!("/s?q={}", soup(8 * 1024)), ip("192.0.2.1")).await;
    let large = best(format!("/s?q={}", soup(60 * 1024)), ip("192.0.2.2")).await;
    println!("8 KiB query {small:?}, 60 KiB query {large:?}");
    assert!(
        large < small * 3 + Duration::from_millis(5),
        "inspecting 60 KiB ({large:?}) should cost about 8 KiB ({small:?})"
    );
    // An injection past the bound is not seen; within it, it is.
    let padded = format!("/s?pad={}&id=1%20OR%201%3D1--", "a".repeat(9 * 1024));
    let (_, answer) = time(padded, ip("192.0.2.3")).await;
    assert_eq!(answer.headers()["x-score"], "0");
    let (_, answer) = time("/s?id=1%20OR%201%3D1--".to_owned(), ip("192.0.2.4")).await;
    assert_eq!(answer.headers()["x-score"], "5");

    // A 16 MiB body of unknown length: 64 KiB inspected, all delivered.
    let body_service = ShieldLayer::new()
        .action(Action::LogOnly)
        .layer(service_fn(app::<Endless>));
    let mut r = Request::post("/orders")
        .header("content-type", "application/json")
        .header("user-agent", BROWSER)
        .body(Endless {
            left: 16 * 1024 * 1024,
            started: false,
        })
        .unwrap();
    r.extensions_mut()
        .insert(PeerAddr((ip("192.0.2.5"), 1).into()));
    let started = Instant::now();
    let answer = body_service.oneshot(r).await.unwrap();
    println!("16 MiB streamed body: {:?}", started.elapsed());
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["x-score"], "5", "the prefix was inspected");
    assert_eq!(
        answer.headers()["x-body-len"],
        (16 * 1024 * 1024 + 6).to_string().as_str(),
        "every byte reached the service"
    );
}

/// `{"a":"&amp;amp;amp;…"}`: `repetitions` levels of nested entities.
fn nested_entities(repetitions: usize) -> String {
    format!("{{\"a\":\"&{}\"}}", "amp;".repeat(repetitions))
}

#[tokio::test]
async fn nested_entities_in_a_body_are_answered() {
    let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
    // 32 KB, as reported, and 64 KB, the most the shield reads.
    for (n, repetitions) in [(1, 8_000), (2, 16_000)] {
        let body = nested_entities(repetitions);
        assert!(body.len() <= 64 * 1024);
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 70 + n));
        let answer = service
            .clone()
            .oneshot(json(peer, "/orders", body.clone()))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{} bytes", body.len());
        assert_eq!(answer.headers()["x-score"], "0", "text, not script");
        assert_eq!(
            answer.headers()["x-body-len"],
            body.len().to_string().as_str()
        );
    }
}

#[tokio::test]
async fn one_violation_rejects_the_request_and_blocks_no_one() {
    let layer = ShieldLayer::new();
    let blocklist = layer.get_blocklist().clone();
    let service = layer.layer(service_fn(app::<Full<Bytes>>));
    // A page embeds `<img src="https://api/menu/daily?q=1'+OR+'1'='1">`:
    // the browser of a visitor behind a school's one NAT address sends it.
    let school = ip("203.0.113.80");
    let answer = service
        .clone()
        .oneshot(request(school, "/menu/daily?q=1%27+OR+%271%27%3D%271"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.headers().get("retry-after").is_none());
    assert!(blocklist.entries().await.unwrap().is_empty());
    // Every other visitor behind that address still gets the menu.
    let answer = service
        .oneshot(request(school, "/menu/daily"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

/// A JSON body sent with `Content-Encoding: coding`.
fn encoded(peer: IpAddr, coding: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut r = Request::post("/orders")
        .header("user-agent", BROWSER)
        .header("content-type", "application/json")
        .header("content-encoding", coding)
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// HTTP's `deflate`: the zlib format.
#[cfg(feature = "gzip")]
fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[cfg(feature = "gzip")]
#[tokio::test]
async fn gzip_and_deflate_bodies_are_inspected_decoded() {
    let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
    let attack = br#"{"q":"1' UNION SELECT password FROM users--"}"#;
    let clean = br#"{"note":"O'Brien, 2104 GRANT AVE #A","qty":2}"#;
    type Encode = fn(&[u8]) -> Vec<u8>;
    let codings: [(&str, Encode); 4] = [
        ("gzip", gzip),
        ("x-gzip", gzip),
        ("deflate", zlib),
        ("GZIP", gzip),
    ];
    for (n, (coding, encode)) in (1u8..).zip(codings) {
        let answer = service
            .clone()
            .oneshot(encoded(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
                coding,
                encode(attack),
            ))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS, "{coding}");
        // The same, clean: it passes, and the service (or the decompression
        // layer in front of it) gets the bytes as sent.
        let sent = encode(clean);
        let answer = service
            .clone()
            .oneshot(encoded(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + n)),
                coding,
                sent.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{coding}");
        assert_eq!(answer.headers()["x-score"], "0", "{coding}");
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), sent);
    }
    // `identity` is no coding at all.
    let answer = service
        .oneshot(encoded(ip("192.0.2.99"), "identity", attack.to_vec()))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[cfg(feature = "gzip")]
#[tokio::test]
async fn a_gzip_bomb_is_decoded_only_as_far_as_the_limit() {
    let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
    // 10 MB of zeros after the JSON, in about 10 KB (ten gzip members of
    // 1 MB, which compress faster than one of 10 MB): the prefix within
    // the body limit is inspected, the rest never decoded.
    let zeros = gzip(&vec![b'0'; 1 << 20]);
    let bomb = |head: &str| {
        let mut first = head.as_bytes().to_vec();
        first.resize(1 << 20, b'0');
        let mut sent = gzip(&first);
        for _ in 1..10 {
            sent.extend_from_slice(&zeros);
        }
        sent
    };
    let sent = bomb(r#"{"note":"lunch at noon","pad":""#);
    assert!(sent.len() < 64 * 1024, "{}", sent.len());
    let answer = service
        .clone()
        .oneshot(encoded(ip("192.0.2.120"), "gzip", sent.clone()))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["x-score"], "0");
    assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), sent);
    let answer = service
        .oneshot(encoded(
            ip("192.0.2.121"),
            "gzip",
            bomb(r#"{"q":"' OR '1'='1","pad":""#),
        ))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn bodies_in_codings_the_shield_does_not_decode_are_scored() {
    let service = ShieldLayer::new().layer(service_fn(app::<Full<Bytes>>));
    // An injection the shield cannot read, whatever it is.
    let hidden = gzip(&gzip(br#"{"q":"1' OR '1'='1"}"#));
    for (n, coding) in (1u8..).zip(["br", "zstd", "gzip, gzip", "compress", "x-unknown"]) {
        let answer = service
            .clone()
            .oneshot(encoded(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 130 + n)),
                coding,
                hidden.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::OK,
            "{coding}: scored, not refused"
        );
        assert_eq!(answer.headers()["x-reasons"], "undecoded_body", "{coding}");
        assert_eq!(answer.headers()["x-score"], "2", "{coding}");
        assert_eq!(
            answer.into_body().collect().await.unwrap().to_bytes(),
            hidden
        );
    }
    // The weight is a setting.
    let service = ShieldLayer::new()
        .undecoded_body_weight(5)
        .layer(service_fn(app::<Full<Bytes>>));
    let answer = service
        .oneshot(encoded(ip("192.0.2.140"), "br", hidden))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
}
