//! Soak: three `hasivu-api` processes on one PostgreSQL and one Redis
//! (started through hasivu-testkit), the last one's Redis connection
//! through a `FaultProxy`, under load from virtual users that follow the
//! load test's mix, while Redis and PostgreSQL are restarted and the
//! proxied connection is stalled, then made half-open.
//!
//! Every request is recorded (status, latency, ids, idempotency key), and
//! the verdicts at the end are Jepsen-style: each order and payment
//! operation ended `ok`, `fail` or `info` (indeterminate), and PostgreSQL
//! must hold every `ok` exactly once and nothing a client was refused.
//! The other promises: no order paid twice, only fast 503s while
//! PostgreSQL is down, the login quotas within their bound, every instance
//! ready again within 5 s of each heal and serving the current menu.
//!
//! `cargo nextest run -p hasivu-examples --test soak` runs the short
//! version (36 s of load); `./scripts/soak` the full one (150 s by
//! default). Settings: `HASIVU_SOAK_SECS` (seconds of load),
//! `HASIVU_SOAK_USERS` (virtual users), `HASIVU_SOAK_SEED` (the users'
//! choices; fault timing is real time, so a seed replays the mix, not the
//! interleaving), `HASIVU_SOAK_HALF_OPEN=false` (no half-open phase). The
//! instances' logs and the report are kept in `target/tmp/soak/`.

#[path = "soak/cluster.rs"]
mod cluster;
mod common;
#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/load.rs"]
mod load;
#[path = "soak/menus.rs"]
mod menus;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/verdict.rs"]
mod verdict;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use cluster::{Cluster, Settings};
use hasivu_testkit::{PostgresServer, RedisServer};
use load::{Clock, Load, Record, Session};
use verdict::Verdicts;

/// The short run's seconds of load (CI).
const SHORT_SECS: f64 = 36.0;

#[derive(Debug)]
struct Plan {
    secs: f64,
    users: u32,
    seed: u64,
    half_open: bool,
}

impl Plan {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secs: f64 = var("HASIVU_SOAK_SECS").map_or(SHORT_SECS, |v| {
            v.trim().parse().expect("HASIVU_SOAK_SECS: seconds")
        });
        assert!(secs >= 20.0, "HASIVU_SOAK_SECS: at least 20 s of load");
        let users = var("HASIVU_SOAK_USERS").map_or(if secs > SHORT_SECS { 16 } else { 10 }, |v| {
            v.trim().parse().expect("HASIVU_SOAK_USERS: a number")
        });
        assert!((1..=150).contains(&users), "HASIVU_SOAK_USERS: 1 to 150");
        let seed = var("HASIVU_SOAK_SEED").map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            },
            |v| v.trim().parse().expect("HASIVU_SOAK_SEED: a number"),
        );
        let half_open = var("HASIVU_SOAK_HALF_OPEN").is_none_or(|v| {
            v.trim()
                .parse()
                .expect("HASIVU_SOAK_HALF_OPEN: true or false")
        });
        Self {
            secs,
            users,
            seed,
            half_open,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_through_restarts_and_stalls_lose_no_order_and_pay_none_twice() {
    let plan = Plan::from_env();
    let settings = Settings {
        users: 200,
        portions: 1_000_000,
        menu_ttl: Duration::from_secs(10),
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak");
    eprintln!(
        "soak: {} s of load, {} users, seed {} (HASIVU_SOAK_SEED replays the mix)",
        plan.secs, plan.users, plan.seed
    );
    let started = Instant::now();
    let cluster = {
        let (settings, dir) = (settings.clone(), dir.clone());
        tokio::task::spawn_blocking(move || Cluster::start(&settings, &dir))
            .await
            .unwrap()
    };
    let Cluster {
        servers,
        instances,
        database_url,
    } = cluster;
    let start_secs = started.elapsed().as_secs_f64();

    let clock = Clock { t0: Instant::now() };
    let load = Load::new(
        instances.iter().map(|i| i.base.clone()).collect(),
        clock,
        plan.secs,
        format!("soak{:x}", plan.seed),
    );
    let steps = faults::schedule(plan.secs, plan.half_open);
    let schedule = tokio::spawn(faults::run(servers, steps.clone(), clock));
    let users: Vec<_> = (0..plan.users)
        .map(|vu| {
            let email = format!("user{}@hasivu.example", vu + 10);
            let seed = plan.seed ^ u64::from(vu).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            tokio::spawn(load::user(load.clone(), vu, email, seed))
        })
        .collect();
    let hammer = tokio::spawn(load::hammer(
        load.clone(),
        format!("user{}@hasivu.example", settings.users),
    ));
    let probes: Vec<_> = (0..instances.len())
        .map(|i| tokio::spawn(load::probe(load.clone(), i)))
        .collect();

    let mut records: Vec<Record> = Vec::new();
    let mut sessions: Vec<Session> = Vec::new();
    for user in users {
        let (mine, session) = user.await.unwrap();
        records.extend(mine);
        sessions.extend(session);
    }
    records.extend(hammer.await.unwrap());
    for probe in probes {
        records.extend(probe.await.unwrap());
    }
    let (servers, faults) = schedule.await.unwrap();
    records.sort_by(|a, b| a.at.total_cmp(&b.at));
    let load_secs = clock.now();

    // The menus first (freshness is measured from the last order), then
    // settle, then judge.
    let mut v = Verdicts::default();
    let db = verdict::connect(&database_url).await;
    let last_order = records
        .iter()
        .filter(|r| r.kind.is_order())
        .map(Record::end)
        .fold(0.0, f64::max);
    // A check sent before the deadline that finds the menu fresh counts.
    let deadline = last_order + settings.menu_ttl.as_secs_f64();
    let mut fresh = Verdicts::default();
    menus::menus(
        &mut fresh, &instances, &sessions, &db, clock, last_order, deadline,
    )
    .await;
    let settled = verdict::settle(&mut v, &instances, Duration::from_secs(30)).await;
    report::write_records(&dir.join("records.csv"), &records);
    v.line(format!(
        "soak: 3 hasivu-api processes ({} build), one PostgreSQL, one Redis, instance c's Redis \
         through a fault proxy; {} virtual users + 1 login hammer + 3 health probes, requests \
         round-robin over the instances; {:.0} s of load (cluster start {start_secs:.1} s, \
         settled {:.1} s after), seed {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        plan.users,
        load_secs,
        settled.as_secs_f64(),
        plan.seed
    ));
    v.line(format!("planned: {}", faults::describe(&steps)));
    for f in &faults {
        v.line(format!(
            "fault {:<20} began {:>6.1} s, in force {:>6.1} s, heal {:>6.1} s, back {:>6.1} s",
            f.kind.name(),
            f.began,
            f.down,
            f.heal,
            f.healed
        ));
    }
    v.line("");
    v.line(report::by_kind(&records));
    v.line(report::statuses(&records));
    v.line(report::phases(&records, &faults));
    v.line("5xx, timeouts and errors (instance, request, outcome):");
    v.line(report::error_timing(&records, &faults));

    let snapshot = verdict::snapshot(&db).await;
    verdict::orders(&mut v, &records, &snapshot);
    verdict::payments(&mut v, &records, &snapshot);
    verdict::portions(&mut v, &snapshot, settings.portions);
    verdict::errors(&mut v, &records, &faults);
    verdict::quota(&mut v, &records, &faults, plan.secs);
    v.report.push_str(&fresh.report);
    v.failures.extend(fresh.failures);
    verdict::recovery(&mut v, &records, &faults, load_secs);
    verdict::logs(&mut v, &instances);

    println!("{}", v.report);
    std::fs::write(dir.join("report.txt"), &v.report).unwrap();
    eprintln!(
        "soak: the report, records.csv and the instances' logs are in {}",
        dir.display()
    );
    drop(instances);
    drop(servers);
    assert!(
        v.failures.is_empty(),
        "the soak broke {} promise(s):\n- {}",
        v.failures.len(),
        v.failures.join("\n- ")
    );
}

/// A load balancer (or several) polls `/health` more often than the Redis
/// pool checks an idle connection before lending it (500 ms): after a
/// Redis restart the instance must still come back as ready, not keep
/// lending the dead connection to every health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ready_again_after_a_redis_restart_however_often_it_is_polled() {
    let mut redis = RedisServer::start();
    let app = common::start(hasivu_examples::api::Config {
        redis_url: Some(redis.url()),
        ..common::config()
    })
    .await;
    let http = common::client();
    let health = || async {
        let answer = http.get(app.url("/health/details")).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    assert_eq!(health().await.0, 200);
    tokio::task::block_in_place(|| redis.stop());
    let deadline = Instant::now() + Duration::from_secs(15);
    while health().await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/health never said Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| redis.start_again());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, details) = health().await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health still {status} 15 s after Redis came back, polled every 100 ms: {details}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// While PostgreSQL is down an order gets a fast 503 with `Retry-After`
/// (the client retries with the same `Idempotency-Key`), not a 500, both
/// from a pooled connection that died and from the pool's open breaker;
/// once PostgreSQL is back, the same key is answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_gets_a_503_with_retry_after_while_postgres_is_down() {
    let mut postgres = PostgresServer::start();
    let app = common::start(hasivu_examples::api::Config {
        database_url: Some(postgres.url()),
        ..common::config()
    })
    .await;
    let http = common::client();
    let token = common::login(&http, &app, "parent@hasivu.example").await;
    let item = common::first_item(&http, &app, &token).await;
    let order = serde_json::json!({ "items": [{ "menu_item_id": item, "quantity": 1 }] });
    let send = || {
        http.post(app.url("/orders/create"))
            .bearer_auth(&token)
            .header("idempotency-key", "while-postgres-is-down")
            .json(&order)
            .send()
    };
    tokio::task::block_in_place(|| postgres.stop());
    for _ in 0..5 {
        let answer = send().await.unwrap();
        let status = answer.status().as_u16();
        let retry_after = common::header(&answer, "retry-after");
        let body = answer.text().await.unwrap();
        assert_eq!(status, 503, "an order while PostgreSQL is down: {body}");
        assert_eq!(retry_after, "1", "the 503 says when to retry");
    }
    tokio::task::block_in_place(|| postgres.start_again());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = send().await.unwrap().status().as_u16();
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "an order while PostgreSQL comes back");
        assert!(
            Instant::now() < deadline,
            "no order accepted 15 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}
