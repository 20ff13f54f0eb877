//! The load test's library entry point against the API in process: a few
//! seconds, few users.

mod common;

use std::time::Duration;

use common::{config, start};
use hasivu_examples::loadtest::{self, OpenPlan, Options, Plan, ScenarioKind, Summary};
use hasivu_ratelimit::TrustedProxies;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_scenarios_and_the_open_model_run_with_429s_counted_apart() {
    let app = start(hasivu_examples::api::Config {
        trusted_proxies: TrustedProxies::new(["127.0.0.1/32"]).unwrap(),
        // Two payments per client, so that peak_load meets the limiter.
        rate_payments: (2, 900),
        ..config()
    })
    .await;
    let output = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loadtest-{}", std::process::id()));
    let plan = |kind| Plan {
        kind,
        users: 2,
        run_time: Duration::from_secs(2),
    };
    let options = Options {
        host: app.base.clone(),
        plans: vec![
            plan(ScenarioKind::NormalLoad),
            plan(ScenarioKind::PeakLoad),
            plan(ScenarioKind::StressTest),
        ],
        open: Some(OpenPlan {
            users: 2,
            rps: 20,
            run_time: Duration::from_secs(2),
        }),
        demo_users: 50,
        output_dir: output.clone(),
        progress_secs: None,
        print_metrics: false,
    };
    let summary = loadtest::run(&options).await.unwrap();
    println!("{}", summary.table());

    let names: Vec<&str> = summary.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["normal_load", "peak_load", "stress_test", "open_model"]
    );
    for scenario in &summary.scenarios {
        assert!(scenario.requests > 0, "{} sent nothing", scenario.name);
        assert_eq!(scenario.thresholds.len(), 3);
        assert!(
            std::fs::metadata(&scenario.report).unwrap().len() > 0,
            "{} has its HTML report",
            scenario.name
        );
    }

    // Each client logged in once as its own demo user, reported apart.
    let normal = summary.scenario("normal_load").unwrap();
    let login = normal
        .by_request
        .iter()
        .find(|r| r.name == "POST /auth/login")
        .unwrap();
    assert_eq!((login.requests, login.failures), (2, 0));
    assert!(normal.login.is_some());
    assert!(
        normal
            .by_request
            .iter()
            .any(|r| r.name == "GET /menu/daily" && r.requests > 0)
    );
    assert!(normal.transactions.iter().any(|t| t.name == "login"));

    // The limiter's 429s are counted apart, not as failures.
    let peak = summary.scenario("peak_load").unwrap();
    let payments = peak
        .by_request
        .iter()
        .find(|r| r.name == "POST /payments/create")
        .unwrap();
    assert!(payments.rate_limited > 0, "{payments:?}");
    assert_eq!(
        payments.rate_limited as usize,
        payments.status_codes.get(&429).copied().unwrap_or(0)
    );
    assert_eq!(payments.failures, 0, "{payments:?}");
    assert_eq!(
        peak.rate_limited,
        peak.by_request.iter().map(|r| r.rate_limited).sum::<u64>()
    );

    // The open model reports corrected latencies.
    let open = summary.scenario("open_model").unwrap();
    assert_eq!(open.arrival_rate, Some(20));
    assert!(open.corrected.is_some());

    // summary.json parses back.
    let json = std::fs::read(output.join("summary.json")).unwrap();
    let parsed: Summary = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed.scenarios.len(), 4);
    assert_eq!(parsed.passed, summary.passed);
    app.stop().await;
}
