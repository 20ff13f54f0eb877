//! The HASIVU API on PostgreSQL and Redis (started through testkit): the
//! main flow, and two instances sharing one Redis.

mod common;

use common::{client, config, first_item, header, login, start};
use hasivu_testkit::{PostgresServer, RedisServer};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_and_redis_share_cache_and_invalidations() {
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    let shared = || hasivu_examples::api::Config {
        database_url: Some(postgres.url()),
        redis_url: Some(redis.url()),
        // A PostgreSQL database gets the demo accounts only when told.
        seed_demo: Some(true),
        ..config()
    };
    let a = start(shared()).await;
    let b = start(shared()).await;
    let http = client();

    let health: Value = http
        .get(a.url("/health/details"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["database"]["kind"], "postgres");
    assert_eq!(health["checks"]["redis"]["ok"], true);

    // One token secret: a token from A works on B.
    let token = login(&http, &a, "parent@hasivu.example").await;
    let menu =
        |base: &common::Running| http.get(base.url("/menu/daily")).bearer_auth(&token).send();
    assert_eq!(header(&menu(&a).await.unwrap(), "x-cache"), "MISS");
    assert_eq!(header(&menu(&a).await.unwrap(), "x-cache"), "HIT-L1");
    // B finds A's entry in Redis.
    assert_eq!(header(&menu(&b).await.unwrap(), "x-cache"), "HIT-L2");
    assert_eq!(header(&menu(&b).await.unwrap(), "x-cache"), "HIT-L1");

    // An order on A invalidates the menu on B too.
    let item = first_item(&http, &a, &token).await;
    let created = http
        .post(a.url("/orders/create"))
        .bearer_auth(&token)
        .header("idempotency-key", "pg-order-1")
        .json(&json!({ "items": [{ "menu_item_id": item, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        seen = header(&menu(&b).await.unwrap(), "x-cache");
        if seen == "MISS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "MISS", "B saw the invalidation");

    // The same key on B replays A's answer (one database).
    let replay = http
        .post(b.url("/orders/create"))
        .bearer_auth(&token)
        .header("idempotency-key", "pg-order-1")
        .json(&json!({ "items": [{ "menu_item_id": item, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&replay, "idempotent-replayed"), "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), created);

    let order_id = created["order_id"].as_i64().unwrap();
    let pay = |base: &common::Running, key: &'static str| {
        http.post(base.url("/payments/create"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&json!({ "order_id": order_id, "method": "card" }))
            .send()
    };
    assert_eq!(pay(&a, "pg-pay-1").await.unwrap().status(), 201);
    assert_eq!(
        header(&pay(&b, "pg-pay-1").await.unwrap(), "idempotent-replayed"),
        "true"
    );
    assert_eq!(pay(&b, "pg-pay-2").await.unwrap().status(), 409);

    a.stop().await;
    b.stop().await;
}
