//! The login's guards over HTTP, on SQLite with in-process state and on
//! PostgreSQL + Redis: the per-account and global quotas (429) and the
//! bounded password verifier (503).

mod common;

use common::{Backend, client, header, start};
use hasivu_examples::api::Config;
use hasivu_ratelimit::TrustedProxies;
use serde_json::{Value, json};

on_every_backend!(
    attempts_on_one_account_from_many_clients_get_429,
    the_global_login_quota_covers_every_account,
    a_busy_verifier_answers_503_with_retry_after,
);

/// Clients behind a trusted proxy, so that each attempt below comes from a
/// client of its own and the per-client `login` policy never applies.
fn behind_a_proxy(backend: &Backend) -> Config {
    Config {
        trusted_proxies: TrustedProxies::new(["127.0.0.1/32"]).unwrap(),
        ..backend.config()
    }
}

async fn attempt(
    app: &common::Running,
    from: u32,
    email: &str,
    password: &str,
) -> reqwest::Response {
    client()
        .post(app.url("/auth/login"))
        .header(
            "x-forwarded-for",
            format!("10.1.{}.{}", from / 250, from % 250 + 1),
        )
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Attempts until the first 429 (at most `max`), each from a new client;
/// the statuses before it, and the 429.
async fn until_limited(
    app: &common::Running,
    next_client: &mut u32,
    emails: &[&str],
    password: &str,
    max: usize,
) -> (Vec<u16>, Option<reqwest::Response>) {
    let mut before = Vec::new();
    for i in 0..max {
        *next_client += 1;
        let answer = attempt(app, *next_client, emails[i % emails.len()], password).await;
        if answer.status() == 429 {
            return (before, Some(answer));
        }
        before.push(answer.status().as_u16());
    }
    (before, None)
}

async fn attempts_on_one_account_from_many_clients_get_429(backend: Backend) {
    let app = start(behind_a_proxy(&backend)).await;
    // The default quota per account: 10 per 15 minutes, burst 5 (in
    // process, GCRA: 5 at once; in Redis, a sliding window: 10).
    let admitted = if backend.database() == "postgres" {
        10
    } else {
        5
    };
    let mut clients = 0;

    // Spelled in any case, with spaces around: one account.
    let spellings = [
        "parent@hasivu.example",
        "PARENT@hasivu.example",
        " Parent@Hasivu.Example ",
    ];
    let (before, limited) = until_limited(&app, &mut clients, &spellings, "guess", 20).await;
    assert_eq!(
        before,
        vec![401; admitted],
        "wrong passwords until the quota is spent"
    );
    let limited = limited.expect("a 429 once the account's quota is spent");
    assert!(header(&limited, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header(&limited, "content-type"), "application/problem+json");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["policy"], "login-account");
    assert!(
        problem["retry_after_seconds"].as_u64().unwrap() >= 1,
        "{problem}"
    );
    // The right password too, until the quota refills.
    clients += 1;
    let right = attempt(&app, clients, "parent@hasivu.example", "hasivu-demo").await;
    assert_eq!(right.status(), 429);

    // Other accounts are not affected.
    clients += 1;
    let other = attempt(&app, clients, "staff@hasivu.example", "hasivu-demo").await;
    assert_eq!(other.status(), 200);

    // An email without an account is limited the same way: the answers do
    // not tell which emails exist.
    let (before, limited) =
        until_limited(&app, &mut clients, &["nobody@hasivu.example"], "guess", 20).await;
    assert_eq!(before, vec![401; admitted]);
    assert!(limited.is_some());
    app.stop().await;
}

async fn the_global_login_quota_covers_every_account(backend: Backend) {
    let app = start(Config {
        rate_login_global: (3, 60),
        ..behind_a_proxy(&backend)
    })
    .await;
    let mut clients = 0;
    let accounts = [
        "parent@hasivu.example",
        "premium@hasivu.example",
        "staff@hasivu.example",
        "admin@hasivu.example",
        "user5@hasivu.example",
    ];
    let (before, limited) = until_limited(&app, &mut clients, &accounts, "hasivu-demo", 5).await;
    assert_eq!(
        before,
        vec![200; 3],
        "three logins, each a different client and account"
    );
    let limited = limited.expect("the fourth login is over the global quota");
    assert!(header(&limited, "retry-after").parse::<u64>().unwrap() >= 1);
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["policy"], "login-global");
    assert_eq!(problem["limit"], 3);
    app.stop().await;
}

async fn a_busy_verifier_answers_503_with_retry_after(backend: Backend) {
    let app = start(Config {
        login_workers: 1,
        login_queue: 0,
        ..behind_a_proxy(&backend)
    })
    .await;
    // The only worker is taken (as by a login that runs).
    let held = app.state.logins.passwords.worker().await.unwrap();
    let busy = attempt(&app, 1, "parent@hasivu.example", "hasivu-demo").await;
    assert_eq!(busy.status(), 503);
    assert_eq!(header(&busy, "retry-after"), "5");
    assert_eq!(header(&busy, "content-type"), "application/problem+json");
    let problem: Value = busy.json().await.unwrap();
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"].as_str().unwrap().contains("retry in 5 s"),
        "{problem}"
    );
    drop(held);
    let ok = attempt(&app, 2, "parent@hasivu.example", "hasivu-demo").await;
    assert_eq!(ok.status(), 200);
    app.stop().await;
}
