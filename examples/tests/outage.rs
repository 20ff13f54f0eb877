//! Two instances of the HASIVU API sharing one Redis (started through
//! testkit): the login limit is one quota for both, and Redis stopping in
//! the middle of a run turns into no 5xx; once it is back, the instances
//! share state again.

mod common;

use std::time::{Duration, Instant};

use common::{client, config, first_item, header, login, start};
use hasivu_testkit::RedisServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_limit_is_one_quota_for_both_instances() {
    let redis = RedisServer::start();
    let shared = || hasivu_examples::api::Config {
        redis_url: Some(redis.url()),
        ..config()
    };
    let a = start(shared()).await;
    let b = start(shared()).await;
    let http = client();
    let mut admitted = 0;
    let mut limited = 0;
    for attempt in 0..16 {
        let app = if attempt % 2 == 0 { &a } else { &b };
        let answer = http
            .post(app.url("/auth/login"))
            .json(&json!({ "email": "parent@hasivu.example", "password": "hasivu-demo" }))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            200 => admitted += 1,
            429 => {
                limited += 1;
                assert!(!header(&answer, "retry-after").is_empty());
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // The login policy allows 10 per 15 minutes per client, across both.
    assert_eq!(admitted, 10, "one shared quota");
    assert_eq!(limited, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_mid_run_gives_no_5xx_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let shared = || hasivu_examples::api::Config {
        redis_url: Some(redis.url()),
        ..config()
    };
    let a = start(shared()).await;
    let b = start(shared()).await;
    let http = client();
    let token = login(&http, &a, "parent@hasivu.example").await;
    let item = first_item(&http, &a, &token).await;

    redis.stop();
    // Every route still answers, from L1, the database and local state.
    let mut statuses = Vec::new();
    for round in 0..10 {
        for app in [&a, &b] {
            let menu = http
                .get(app.url("/menu/daily"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            statuses.push(menu.status().as_u16());
            let user = http
                .get(app.url("/users/2?fields=id,email"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            statuses.push(user.status().as_u16());
            let order = http
                .post(app.url("/orders/create"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("outage-{round}-{}", app.base))
                .json(&json!({ "items": [{ "menu_item_id": item, "quantity": 1 }] }))
                .send()
                .await
                .unwrap();
            statuses.push(order.status().as_u16());
        }
    }
    assert!(
        statuses.iter().all(|s| *s < 500),
        "no 5xx while Redis is down: {statuses:?}"
    );

    redis.start_again();
    // Once the backplane is back, an order on A makes B's menu miss again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    loop {
        round += 1;
        assert!(Instant::now() < deadline, "sharing did not resume");
        let menu = || http.get(b.url("/menu/daily")).bearer_auth(&token).send();
        // Fill B's cache, then change the data on A.
        let _ = menu().await.unwrap();
        if header(&menu().await.unwrap(), "x-cache") != "HIT-L1" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let order = http
            .post(a.url("/orders/create"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("after-{round}"))
            .json(&json!({ "items": [{ "menu_item_id": item, "quantity": 1 }] }))
            .send()
            .await
            .unwrap();
        assert!(order.status().is_success(), "{}", order.status());
        let mut missed = false;
        for _ in 0..20 {
            if header(&menu().await.unwrap(), "x-cache") == "MISS" {
                missed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if missed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
