//! End-to-end tests of the HASIVU API over HTTP, each on SQLite with
//! in-process state and again on PostgreSQL + Redis (through the testkit).

mod common;

use std::time::Duration;

use common::{Backend, client, decode, first_item, header, login, start};
use serde_json::{Value, json};

on_every_backend!(
    login_order_payment_with_cache_invalidation_and_idempotent_replays,
    users_fields_metrics_and_dashboard,
    bad_requests_get_problem_bodies,
    menu_answers_are_compressed_once_per_coding_and_decode,
    the_limiter_answers_429_with_ratelimit_headers,
    shutdown_lets_an_in_flight_request_finish_and_drains_pools,
    the_regression_history_survives_a_restart,
    alert_notifications_are_kept_in_the_alert_history,
);

async fn login_order_payment_with_cache_invalidation_and_idempotent_replays(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();

    let health = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
    // The checks are operational (open on a loopback listener).
    let health: Value = http
        .get(app.url("/health/details"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ready"], true);
    assert_eq!(health["checks"]["database"]["ok"], true);
    assert_eq!(health["checks"]["database"]["kind"], backend.database());

    let token = login(&http, &app, "parent@hasivu.example").await;
    let menu = |token: String| {
        let http = http.clone();
        let url = app.url("/menu/daily");
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let first = menu(token.clone()).await;
    assert_eq!(header(&first, "x-cache"), "MISS");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["count"], 100);
    assert_eq!(body["school"]["id"], 1);
    assert_eq!(header(&menu(token.clone()).await, "x-cache"), "HIT-L1");

    let item = first_item(&http, &app, &token).await;
    let order = json!({ "items": [{ "menu_item_id": item, "quantity": 2 }], "notes": "no onion" });
    let create = || {
        http.post(app.url("/orders/create"))
            .bearer_auth(&token)
            .header("idempotency-key", "order-1")
            .json(&order)
            .send()
    };
    let created = create().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let replay = create().await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(header(&replay, "idempotent-replayed"), "true");
    assert_eq!(
        replay.json::<Value>().await.unwrap(),
        created,
        "the first answer, again"
    );

    // The order changed the portions left: the menu misses, then hits.
    let after = menu(token.clone()).await;
    assert_eq!(header(&after, "x-cache"), "MISS");
    let after: Value = after.json().await.unwrap();
    assert_eq!(
        after["items"][0]["portions_left"].as_i64().unwrap() + 2,
        body["items"][0]["portions_left"].as_i64().unwrap()
    );

    let order_id = created["order_id"].as_i64().unwrap();
    let pay = |key: &'static str| {
        http.post(app.url("/payments/create"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&json!({ "order_id": order_id, "method": "upi" }))
            .send()
    };
    let paid = pay("pay-1").await.unwrap();
    assert_eq!(paid.status(), 201);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["amount_cents"], created["total_cents"]);
    let again = pay("pay-1").await.unwrap();
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(
        again.json::<Value>().await.unwrap()["payment_id"],
        paid["payment_id"]
    );
    let twice = pay("pay-2").await.unwrap();
    assert_eq!(
        twice.status(),
        409,
        "another key never pays the order twice"
    );

    app.stop().await;
}

async fn users_fields_metrics_and_dashboard(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;

    let user: Value = http
        .get(app.url("/users/2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["email"], "parent@hasivu.example");
    assert_eq!(user["school"]["id"], 1);
    assert_eq!(user["student"]["student_code"], "STU-000002");
    let selected: Value = http
        .get(app.url("/users/2?fields=id,email,school.name"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        selected,
        json!({ "id": 2, "email": "parent@hasivu.example", "school": { "name": "Vidya Niketan Public School" } })
    );
    let other = http
        .get(app.url("/users/3"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    assert_eq!(
        http.get(app.url("/users/2")).send().await.unwrap().status(),
        401
    );

    let metrics = http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_server_request_duration"),
        "{metrics}"
    );
    assert!(metrics.contains("/users/{id}"));

    let data: Value = http
        .get(app.url("/dashboard/data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes: Vec<&str> = data["routes"]["last_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert!(routes.contains(&"GET /users/{id}"), "{routes:?}");
    assert_eq!(data["pools"][0]["kind"], "database");
    // Nothing fires on a calm test run, but both lists are there.
    assert!(data["alerts"].is_array(), "{}", data["alerts"]);
    assert!(data["regressions"].is_array(), "{}", data["regressions"]);
    let page = http
        .get(app.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<svg") && page.contains("/dashboard/data") && !page.contains("https://")
    );
    app.stop().await;
}

async fn bad_requests_get_problem_bodies(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let post = |body: reqwest::Body, content_type: &'static str| {
        http.post(app.url("/orders/create"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let invalid = post(
        json!({ "items": [{ "menu_item_id": 1, "quantity": 1 }, { "menu_item_id": 2, "quantity": 99 }] })
            .to_string()
            .into(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(header(&invalid, "content-type"), "application/problem+json");
    let problem: Value = invalid.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items[1].quantity");

    let huge = format!(
        "{{\"items\":[],\"notes\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 1)
    );
    let too_large = post(huge.into(), "application/json").await.unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(
        header(&too_large, "content-type"),
        "application/problem+json"
    );

    let wrong_type = post("items=1".into(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let problem: Value = wrong_type.json().await.unwrap();
    assert_eq!(problem["status"], 415);

    let anonymous = http
        .post(app.url("/orders/create"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .post(app.url("/auth/login"))
        .json(&json!({ "email": "parent@hasivu.example", "password": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    app.stop().await;
}

async fn menu_answers_are_compressed_once_per_coding_and_decode(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let plain = http
        .get(app.url("/menu/daily"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&plain, "content-encoding"), "");
    let plain: Vec<u8> = plain.bytes().await.unwrap().to_vec();
    let menu: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(menu["count"], 100);
    for coding in ["br", "gzip", "zstd"] {
        for expected in ["MISS", "HIT-L1"] {
            let response = http
                .get(app.url("/menu/daily"))
                .header("accept-encoding", coding)
                .send()
                .await
                .unwrap();
            assert_eq!(header(&response, "content-encoding"), coding);
            assert_eq!(header(&response, "x-cache"), expected, "{coding}");
            let bytes = response.bytes().await.unwrap();
            assert!(
                bytes.len() * 4 < plain.len(),
                "{coding}: {} of {}",
                bytes.len(),
                plain.len()
            );
            assert_eq!(decode(coding, &bytes), plain, "{coding}");
            println!(
                "/menu/daily: {} bytes plain, {} bytes {coding}",
                plain.len(),
                bytes.len()
            );
        }
    }
    app.stop().await;
}

async fn the_limiter_answers_429_with_ratelimit_headers(backend: Backend) {
    let app = start(hasivu_examples::api::Config {
        rate_general: (3, 60),
        ..backend.config()
    })
    .await;
    let http = client();
    for _ in 0..3 {
        let ok = http.get(app.url("/health")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert!(header(&ok, "ratelimit").starts_with("\"general\""));
    }
    let limited = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "ratelimit-policy"), "\"general\";q=3;w=60");
    assert!(header(&limited, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header(&limited, "content-type"), "application/problem+json");
    app.stop().await;
}

async fn shutdown_lets_an_in_flight_request_finish_and_drains_pools(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let state = app.state.clone();
    // A login is a slow request (argon2): stop while it runs.
    let slow = tokio::spawn({
        let http = http.clone();
        let url = app.url("/auth/login");
        async move {
            http.post(url)
                .json(&json!({ "email": "staff@hasivu.example", "password": "hasivu-demo" }))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.stop().await;
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    assert!(
        state.pools.status().iter().all(|p| p.status.closed),
        "pools drained"
    );
    drop(token);
}

async fn the_regression_history_survives_a_restart(backend: Backend) {
    let app = start(backend.config()).await;
    let http = client();
    for _ in 0..3 {
        assert_eq!(
            http.get(app.url("/health")).send().await.unwrap().status(),
            200
        );
    }
    // The API records an interval every minute; record one now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    app.state
        .regressions
        .lock()
        .unwrap()
        .flush_analytics(&app.state.analytics, now);
    // A graceful stop saves the history (a file on SQLite, Redis otherwise).
    app.stop().await;

    let again = start(backend.config()).await;
    let history = again.state.regressions.lock().unwrap().history();
    let health = &history.routes["GET /health"];
    assert_eq!(health.len(), 1, "{history:?}");
    assert_eq!(health[0].requests, 3);
    let version = health[0].version as usize;
    assert_eq!(history.versions[version], env!("CARGO_PKG_VERSION"));
    again.stop().await;
}

async fn alert_notifications_are_kept_in_the_alert_history(backend: Backend) {
    use hasivu_metrics::alerts::{AlertSink, Notification, Severity, Status};

    let app = start(backend.config()).await;
    let fired = Notification {
        status: Status::Firing,
        fingerprint: "p95-latency/GET /menu/daily/warning".into(),
        rule: "p95-latency".into(),
        severity: Severity::Warning,
        route: Some("GET /menu/daily".into()),
        value: Some(2400.0),
        threshold: 2000.0,
        starts_at_ms: 1_795_000_000_000,
        ends_at_ms: None,
        labels: Default::default(),
    };
    let resolved = Notification {
        status: Status::Resolved,
        ends_at_ms: Some(1_795_000_060_000),
        value: Some(900.0),
        ..fired.clone()
    };
    // What the alert manager does when a rule fires, then resolves.
    app.state.alert_history.send(&[fired]).await.unwrap();
    app.state.alert_history.send(&[resolved]).await.unwrap();
    let data = |app: &common::Running| {
        let url = app.url("/dashboard/data");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let history = data(&app).await["alert_history"].clone();
    assert_eq!(history[0]["status"], "resolved", "newest first: {history}");
    assert_eq!(history[1]["status"], "firing");
    assert_eq!(history[1]["value"], 2400.0);
    app.stop().await;

    // In Redis it outlives the instance; in process it does not.
    let again = start(backend.config()).await;
    let history = data(&again).await["alert_history"].clone();
    match backend.database() {
        "postgres" => assert_eq!(history.as_array().unwrap().len(), 2, "{history}"),
        _ => assert_eq!(history, json!([])),
    }
    again.stop().await;
}
