//! Orders and idempotency keys against the database, each on SQLite and
//! again on PostgreSQL + Redis: an order takes all its portions or none and
//! never more than are left, concurrent orders included; idempotency keys
//! replay for their TTL, then are new again and get deleted.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, client, header, login, sql, start};
use futures_util::future::join_all;
use hasivu_examples::api::Config;
use reqwest::Client;
use serde_json::{Value, json};

on_every_backend!(
    an_order_repeating_one_item_cannot_oversell_it,
    concurrent_orders_sell_exactly_the_portions_there_are,
    an_idempotency_key_replays_within_its_ttl_and_is_new_after_it,
    expired_idempotency_keys_are_deleted,
);

/// The ids of today's menu of the caller's school.
async fn menu_ids(http: &Client, app: &common::Running, token: &str) -> Vec<i64> {
    let menu: Value = http
        .get(app.url("/menu/daily"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

/// The portions left of a menu item, read from the database.
async fn portions(app: &common::Running, item: i64) -> i64 {
    sql::scalar(
        &app.state.db,
        &format!("SELECT portions_left FROM menu_items WHERE id = {item}"),
    )
    .await
}

/// An order of `lines` (`(menu_item_id, quantity)`), with an optional
/// `Idempotency-Key`.
async fn order(
    http: &Client,
    app: &common::Running,
    token: &str,
    lines: &[(i64, i64)],
    key: Option<&str>,
) -> reqwest::Response {
    let items: Vec<Value> = lines
        .iter()
        .map(|(id, quantity)| json!({ "menu_item_id": id, "quantity": quantity }))
        .collect();
    let mut request = http
        .post(app.url("/orders/create"))
        .bearer_auth(token)
        .json(&json!({ "items": items }));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Plenty of general quota: these tests send many orders at once.
fn roomy(config: Config) -> Config {
    Config {
        rate_general: (1_000_000, 900),
        ..config
    }
}

async fn an_order_repeating_one_item_cannot_oversell_it(backend: Backend) {
    let app = start(Config {
        portions: Some(250),
        ..backend.config()
    })
    .await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let ids = menu_ids(&http, &app, &token).await;
    let (item, other) = (ids[0], ids[1]);
    assert_eq!(portions(&app, item).await, 250);

    // 20 lines of 10 portions of one item: 200 portions in one order.
    let twenty_tens = vec![(item, 10); 20];
    let first = order(&http, &app, &token, &twenty_tens, None).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 20, "{first}");
    assert_eq!(portions(&app, item).await, 50);

    let second = order(&http, &app, &token, &twenty_tens, None).await;
    assert_eq!(
        second.status(),
        409,
        "200 portions ordered with 50 left must be refused as a whole; portions left now: {}",
        portions(&app, item).await
    );
    assert_eq!(header(&second, "content-type"), "application/problem+json");
    let problem: Value = second.json().await.unwrap();
    assert_eq!(problem["title"], "sold out", "{problem}");
    assert_eq!(
        portions(&app, item).await,
        50,
        "a refused order takes nothing"
    );

    // Exactly what is left, in five lines: taken; then nothing is left.
    let first_rest = order(&http, &app, &token, &[(item, 10); 5], None).await;
    assert_eq!(first_rest.status(), 201);
    assert_eq!(portions(&app, item).await, 0);
    // An order of a sold-out item and another one takes neither.
    let mixed = order(&http, &app, &token, &[(other, 2), (item, 1)], None).await;
    assert_eq!(mixed.status(), 409);
    assert_eq!(portions(&app, other).await, 250);
    assert_eq!(portions(&app, item).await, 0);
    app.stop().await;
}

async fn concurrent_orders_sell_exactly_the_portions_there_are(backend: Backend) {
    let app = start(roomy(Config {
        portions: Some(50),
        ..backend.config()
    }))
    .await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let item = menu_ids(&http, &app, &token).await[0];

    // 40 orders of 3 at once for 50 portions: 16 fit, 2 portions stay.
    let lines = [(item, 3)];
    let answers = join_all((0..40).map(|_| order(&http, &app, &token, &lines, None))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    statuses.sort_unstable();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let sold_out = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, sold_out), (16, 24), "statuses: {statuses:?}");
    assert_eq!(portions(&app, item).await, 2);
    let ordered = sql::scalar(
        &app.state.db,
        &format!("SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM order_items WHERE menu_item_id = {item}"),
    )
    .await;
    assert_eq!(
        ordered, 48,
        "the order lines stored match the portions taken"
    );
    app.stop().await;
}

async fn an_idempotency_key_replays_within_its_ttl_and_is_new_after_it(backend: Backend) {
    let ttl = 3600;
    let app = start(Config {
        idempotency_ttl: Duration::from_secs(ttl),
        ..backend.config()
    })
    .await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let item = menu_ids(&http, &app, &token).await[0];
    let db = &app.state.db;
    let age = |key: &'static str, secs: u64| {
        let statement = format!(
            "UPDATE idempotency_keys SET created_at = created_at - {secs} WHERE key LIKE '%:{key}'"
        );
        async move { sql::execute(db, &statement).await }
    };
    let id = |body: &Value| body["order_id"].as_i64().unwrap();

    let first = order(&http, &app, &token, &[(item, 1)], Some("ttl-order")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    // A minute short of the TTL: still the first answer.
    assert_eq!(age("orders:ttl-order", ttl - 60).await, 1);
    let replay = order(&http, &app, &token, &[(item, 1)], Some("ttl-order")).await;
    assert_eq!(header(&replay, "idempotent-replayed"), "true");
    assert_eq!(id(&replay.json().await.unwrap()), id(&first));

    // Past the TTL: a new order, and the key now replays that one.
    assert_eq!(age("orders:ttl-order", 61).await, 1);
    let fresh = order(&http, &app, &token, &[(item, 1)], Some("ttl-order")).await;
    assert_eq!(fresh.status(), 201);
    assert_eq!(
        header(&fresh, "idempotent-replayed"),
        "",
        "a key older than its TTL is new again"
    );
    let fresh: Value = fresh.json().await.unwrap();
    assert_ne!(id(&fresh), id(&first), "a second order");
    let again = order(&http, &app, &token, &[(item, 1)], Some("ttl-order")).await;
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(id(&again.json().await.unwrap()), id(&fresh));
    let rows = sql::scalar(
        db,
        "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE '%:orders:ttl-order'",
    )
    .await;
    assert_eq!(rows, 1, "the expired row was replaced");

    // Payments alike: past the TTL the key is new, and the order is paid.
    let pay = || {
        http.post(app.url("/payments/create"))
            .bearer_auth(&token)
            .header("idempotency-key", "ttl-pay")
            .json(&json!({ "order_id": id(&fresh), "method": "upi" }))
            .send()
    };
    assert_eq!(pay().await.unwrap().status(), 201);
    assert_eq!(header(&pay().await.unwrap(), "idempotent-replayed"), "true");
    assert_eq!(age("payments:ttl-pay", ttl).await, 1);
    let late = pay().await.unwrap();
    assert_eq!(header(&late, "idempotent-replayed"), "");
    assert_eq!(late.status(), 409, "already paid, not a replay");
    app.stop().await;
}

async fn expired_idempotency_keys_are_deleted(backend: Backend) {
    // A database that outlives the instance: a file on SQLite.
    let config = match &backend {
        Backend::Sqlite { dir } => Config {
            sqlite_path: Some(dir.path().join("hasivu.db").display().to_string()),
            seed_demo: Some(true),
            ..backend.config()
        },
        Backend::PostgresRedis { .. } => backend.config(),
    };
    let ttl = config.idempotency_ttl.as_secs();
    let app = start(config.clone()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let item = menu_ids(&http, &app, &token).await[0];
    for key in ["old", "new"] {
        let created = order(&http, &app, &token, &[(item, 1)], Some(key)).await;
        assert_eq!(created.status(), 201);
    }
    let moved = sql::execute(
        &app.state.db,
        &format!(
            "UPDATE idempotency_keys SET created_at = created_at - {} WHERE key LIKE '%:orders:old'",
            ttl + 1
        ),
    )
    .await;
    assert_eq!(moved, 1);
    app.stop().await;

    // The next instance deletes expired keys as it starts (and then
    // periodically), in the background.
    let again = start(config).await;
    let count = |key: &'static str| {
        let query =
            format!("SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE '%:orders:{key}'");
        let db = again.state.db.clone();
        async move { sql::scalar(&db, &query).await }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("old").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired idempotency key is still stored 20 s after the start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count("new").await, 1, "a key within its TTL stays");
    again.stop().await;
}

/// Orders locking the same items in opposite orders: PostgreSQL must never
/// find a deadlock (which it resolves by aborting one, a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_orders_in_opposite_line_orders_neither_deadlock_nor_oversell() {
    let backend = Backend::postgres_and_redis();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let app = start(roomy(Config {
        portions: Some(100),
        ..backend.config()
    }))
    .await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    let items: Vec<i64> = menu_ids(&http, &app, &token).await[..4].to_vec();

    // 64 orders of all four items, half in ascending and half in
    // descending line order; 128 portions of each wanted, 100 there.
    let orders = (0..64_i64).map(|i| {
        let quantity = 1 + i % 3;
        let mut lines: Vec<(i64, i64)> = items.iter().map(|id| (*id, quantity)).collect();
        if i % 2 == 1 {
            lines.reverse();
        }
        let (http, app, token) = (&http, &app, &token);
        async move {
            let answer = order(http, app, token, &lines, None).await;
            let status = answer.status().as_u16();
            (quantity, status, answer.text().await.unwrap())
        }
    });
    let answers = join_all(orders).await;
    let unexpected: Vec<&(i64, u16, String)> = answers
        .iter()
        .filter(|(_, status, _)| *status != 201 && *status != 409)
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 201 and 409: {unexpected:?}"
    );
    let taken: i64 = answers
        .iter()
        .filter(|(_, status, _)| *status == 201)
        .map(|(quantity, _, _)| quantity)
        .sum();
    assert!(taken > 0 && answers.iter().any(|(_, status, _)| *status == 409));
    for item in items {
        let left = portions(&app, item).await;
        assert!(left >= 0, "item {item}: {left} portions left");
        assert_eq!(
            100 - left,
            taken,
            "item {item}: portions taken = quantities of the 201s"
        );
    }
    app.stop().await;
}
