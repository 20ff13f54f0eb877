//! What an attacker sends, over HTTP to the whole API, on SQLite with
//! in-process state and again on PostgreSQL + Redis.

mod common;

use common::{Backend, client, header, login, start};
use serde_json::{Value, json};

on_every_backend!(
    nested_entities_in_a_body_cost_one_answer,
    a_clients_own_forwarded_header_buys_no_new_quota,
    cache_busting_parameters_make_no_new_menu_entries,
    one_injection_is_refused_and_repeated_ones_block_the_address,
    a_signed_in_client_is_refused_but_never_blocks_its_address,
);

/// The body that overflowed the stack of a worker thread and aborted the
/// process: 32 KB of `&amp;amp;…`, unauthenticated, before any quota.
async fn nested_entities_in_a_body_cost_one_answer(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    for levels in [4_000, 8_000, 16_000] {
        let body = format!(r#"{{"a":"&{}lt;script&gt;"}}"#, "amp;".repeat(levels));
        let answer = http
            .post(app.url("/orders/create"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        // No token: the shield lets it through (a lone `<script>` deep in
        // entities is not script) and the handler asks for a token, or the
        // body limit or the shield refuse it; never a crash or a 5xx.
        assert!(
            answer.status().is_client_error(),
            "{levels} levels: {}",
            answer.status()
        );
    }
    let health = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the process is still serving");
    app.stop().await;
}

/// Behind a proxy that appends only `X-Forwarded-For` (nginx, an ALB), a
/// client adds its own `Forwarded: for=…`, rotating it. The login quota
/// (burst 5 per address) must still count the address the proxy saw.
async fn a_clients_own_forwarded_header_buys_no_new_quota(backend: Backend) {
    let mut config = backend.config();
    config.trusted_proxies = hasivu_ratelimit::TrustedProxies::new(["127.0.0.1/32"]).unwrap();
    let app = start(config).await;
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let answer = http
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("forwarded", format!("for=198.51.100.{i}"))
            // A new account each time: only the per-address quota counts.
            .json(&json!({ "email": format!("nobody{i}@hasivu.example"), "password": "x" }))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    // The login policy's burst (5) in process; its limit (10) in Redis,
    // whose sliding window has no burst. Either way once, not per
    // `Forwarded` value.
    let admitted = statuses.iter().take_while(|s| **s == 401).count();
    assert!((5..=10).contains(&admitted), "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    app.stop().await;
}

/// `?junk=N` made a new cache entry per request (L1 and L2, until their
/// caps); the menu route keys only on the parameter it reads.
async fn cache_busting_parameters_make_no_new_menu_entries(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let menu = |query: String| {
        let http = http.clone();
        let url = app.url(&format!("/menu/daily{query}"));
        let token = token.clone();
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(header(&menu(String::new()).await, "x-cache"), "MISS");
    for n in 0..20 {
        let answer = menu(format!("?junk={n}&utm_source=mail{n}")).await;
        assert_eq!(answer.status(), 200);
        assert_eq!(header(&answer, "x-cache"), "HIT-L1", "request {n}");
    }
    // The parameter the route reads still makes its own entry.
    let school = |id: u32| {
        let http = http.clone();
        let url = app.url(&format!("/menu/daily?school={id}&junk=1"));
        async move { http.get(url).send().await.unwrap() }
    };
    let first = school(2).await;
    assert_eq!(header(&first, "x-cache"), "MISS");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["school"]["id"], 2);
    assert_eq!(header(&school(2).await, "x-cache"), "HIT-L1");
    app.stop().await;
}

/// A page embedding an injection in an image URL sends it with every
/// visitor's browser: one such request is refused, the address is not
/// blocked; only a client that keeps at it is.
async fn one_injection_is_refused_and_repeated_ones_block_the_address(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let attack = || {
        let http = http.clone();
        let url = app.url("/menu/daily?q=1' OR '1'='1");
        async move { http.get(url).send().await.unwrap() }
    };
    let first = attack().await;
    assert_eq!(first.status(), 429);
    assert!(first.headers().get("retry-after").is_none(), "not a block");
    let problem: Value = first.json().await.unwrap();
    assert_eq!(problem["code"], "SECURITY_VIOLATION");
    let after = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(after.status(), 200, "one finding blocks no one");
    for _ in 0..4 {
        assert_eq!(attack().await.status(), 429);
    }
    let after = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        after.status(),
        429,
        "five within the window block the address"
    );
    assert!(after.headers().get("retry-after").is_some());
    app.stop().await;
}

/// A request carrying a valid token is refused at the threshold, but never
/// puts its address on the blocklist: the user is known, the school's NAT
/// address is shared.
async fn a_signed_in_client_is_refused_but_never_blocks_its_address(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    for _ in 0..10 {
        let attack = http
            .get(app.url("/menu/daily?q=1' OR '1'='1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(attack.status(), 429);
    }
    let neighbour = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(neighbour.status(), 200, "the address is not blocked");
    // A forged token does not count as signed in.
    for _ in 0..5 {
        let forged = http
            .get(app.url("/menu/daily?q=1' OR '1'='1"))
            .bearer_auth("eyJzdWIiOjF9.forged")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 429);
    }
    let after = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        after.status(),
        429,
        "forged tokens strike like anonymous requests"
    );
    app.stop().await;
}
