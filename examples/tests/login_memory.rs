//! A login storm against an API in process: 300 correct logins at once.
//! Each argon2id verification needs 19 MiB; the process must not grow
//! with the number of concurrent logins, and must come back down after.
//!
//! Linux only (reads `VmRSS` from `/proc/self/status`); one test per
//! process (nextest), so the figures are this API's.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{client, config, start};
use serde_json::json;

const LOGINS: usize = 300;
const CLIENTS: usize = 150;
const MIB: u64 = 1024 * 1024;
/// Growth allowed while the storm runs: the verifiers' memory (2 × 19 MiB)
/// and 300 connections, with room to spare; far below 300 × 19 MiB.
const DURING: u64 = 128 * MIB;
/// Growth allowed once the storm is over: the verifiers' memory is kept
/// for the next login, little else.
const AFTER: u64 = 64 * MIB;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[test]
fn a_login_storm_holds_bounded_memory_and_gives_it_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(storm());
    // Do not wait for verifications still running when the bound was
    // crossed: they would take the memory the test is guarding.
    runtime.shutdown_background();
    if let Err(message) = outcome {
        panic!("{message}");
    }
}

async fn storm() -> Result<(), String> {
    // 150 clients behind a trusted proxy, each logging in twice as its
    // own user: no quota stands in the way. Two verification workers,
    // whatever the machine, and room for every login in their queue.
    let app = start(hasivu_examples::api::Config {
        users: 200,
        login_workers: 2,
        login_queue: LOGINS,
        login_wait: Duration::from_secs(600),
        trusted_proxies: hasivu_ratelimit::TrustedProxies::new(["127.0.0.1/32"]).unwrap(),
        ..config()
    })
    .await;
    let http = client();
    let url = app.url("/auth/login");
    let login = |client: usize| {
        let request = http
            .post(&url)
            .header("x-forwarded-for", format!("10.0.{}.{}", client / 250, client % 250 + 1))
            .json(&json!({ "email": format!("user{}@hasivu.example", client + 5), "password": "hasivu-demo" }));
        async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    // One login first: what every API holds once it has served one.
    assert_eq!(login(CLIENTS).await, Ok(200), "a first login");
    let start_rss = rss();
    let peak = Arc::new(AtomicU64::new(start_rss));
    let crossed = Arc::new(AtomicBool::new(false));
    let crossed_notify = Arc::new(tokio::sync::Notify::new());
    let sampler = tokio::spawn({
        let (peak, crossed, notify) = (peak.clone(), crossed.clone(), crossed_notify.clone());
        async move {
            loop {
                let now = rss();
                peak.fetch_max(now, Ordering::Relaxed);
                if now.saturating_sub(start_rss) > DURING {
                    crossed.store(true, Ordering::Relaxed);
                    notify.notify_one();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let logins =
        futures_util::future::join_all((0..LOGINS).map(|i| tokio::spawn(login(i % CLIENTS))));
    let statuses = tokio::select! {
        statuses = logins => statuses,
        () = crossed_notify.notified() => Vec::new(),
    };
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    if crossed.load(Ordering::Relaxed) {
        return Err(format!(
            "RSS grew by more than {} MiB during {LOGINS} concurrent logins: {} MiB at start, {} MiB seen",
            DURING / MIB,
            start_rss / MIB,
            peak / MIB
        ));
    }
    drop(http);
    let after = rss();
    println!(
        "RSS: {} MiB before {LOGINS} concurrent logins, peak {} MiB, {} MiB after",
        start_rss / MIB,
        peak / MIB,
        after / MIB
    );
    app.stop().await;
    if after.saturating_sub(start_rss) > AFTER {
        return Err(format!(
            "RSS stayed {} MiB above the start after {LOGINS} logins (start {} MiB, after {} MiB)",
            after.saturating_sub(start_rss) / MIB,
            start_rss / MIB,
            after / MIB
        ));
    }
    let ok = statuses.iter().filter(|s| matches!(s, Ok(Ok(200)))).count();
    assert_eq!(ok, LOGINS, "every login succeeds: {statuses:?}");
    Ok(())
}
