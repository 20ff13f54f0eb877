//! The load test of the HASIVU API, built on [goose](https://docs.rs/goose).
//!
//! [`run`] plays the report's three scenarios one after the other against a
//! running API, each as its own goose attack with its own users and
//! duration, then (optionally) an open-model run, and returns a
//! [`Summary`]:
//!
//! | scenario | requests | report's users, duration | short default |
//! | --- | --- | --- | --- |
//! | `normal_load` | login once, then `/menu/daily` ×3, `/orders/create` ×1 | 100, 10 min | 50, 25 s |
//! | `peak_load` | login once, then an order and its `/payments/create` | 500, 5 min | 100, 25 s |
//! | `stress_test` | `/health` | 1000, 2 min | 200, 20 s |
//! | `open_model` | as `normal_load`, at a constant arrival rate | 200 at 200 req/s, 5 min | 50 at 150 req/s, 20 s |
//!
//! Every goose user is one client with its own `X-Forwarded-For` and, where
//! the scenario logs in, its own demo user (the next ones for each scenario,
//! cycling through the seeded users), so the API (started with
//! `HASIVU_TRUSTED_PROXIES` covering the load generator) keys its limits on
//! each simulated client. 429 answers from the limiter are counted apart and
//! are not failures; so are 409 answers to orders whose item sold out (the
//! seeded portions of the day run out under load: a right answer). The login is reported apart: its cost is the password
//! hash, by design.
//!
//! After each scenario the report's thresholds are judged on goose's
//! metrics: p95 < 1000 ms (every request but the login; the open model uses
//! the coordinated-omission-corrected times), failure rate < 1% (failures
//! over answers that are not 429) and more than 100 requests per second.
//! Each scenario writes goose's HTML report (latency charts) into the
//! output directory, and [`Summary::write`] writes `summary.json`.

mod scenarios;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use goose::{
    config::GooseConfiguration,
    metrics::{GooseRequestMetricTimingData, TimeBuckets},
    prelude::*,
};
use serde::{Deserialize, Serialize};

use scenarios::{LOGIN, Shared};

/// The report's thresholds.
pub const MAX_P95_MS: f64 = 1000.0;
/// Failures (429s excluded) as a percent of the answers that are not 429.
pub const MAX_FAILURE_PERCENT: f64 = 1.0;
/// Requests per second, more than.
pub const MIN_RPS: f64 = 100.0;

/// One of the report's scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Login, menu and orders.
    NormalLoad,
    /// Login and payments.
    PeakLoad,
    /// `/health`.
    StressTest,
}

impl ScenarioKind {
    /// The report's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NormalLoad => "normal_load",
            Self::PeakLoad => "peak_load",
            Self::StressTest => "stress_test",
        }
    }
}

/// How many users run a scenario, and for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario.
    pub kind: ScenarioKind,
    /// Goose users (simulated clients).
    pub users: usize,
    /// How long the scenario runs once every user has started.
    pub run_time: Duration,
}

/// The open-model run: `normal_load` at a constant arrival rate.
#[derive(Clone, Debug)]
pub struct OpenPlan {
    /// Goose users: enough that the rate, not the users, sets the pace.
    pub users: usize,
    /// Requests per second (goose `--throttle-requests`).
    pub rps: usize,
    /// How long it runs.
    pub run_time: Duration,
}

/// What to run, against what, and where to write the reports.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API, such as `http://127.0.0.1:8080`.
    pub host: String,
    /// The scenarios, in order.
    pub plans: Vec<Plan>,
    /// The open-model run, if any.
    pub open: Option<OpenPlan>,
    /// Seeded users to cycle through (the API's `HASIVU_USERS`).
    pub demo_users: u32,
    /// Where the HTML reports and `summary.json` go.
    pub output_dir: PathBuf,
    /// Goose's running metrics every this many seconds (the progress
    /// display); `None` for none.
    pub progress_secs: Option<usize>,
    /// Goose's own tables at the end of each scenario.
    pub print_metrics: bool,
}

impl Options {
    /// The short run (about 100 s in all, scaled-down users).
    pub fn short(host: impl Into<String>) -> Self {
        let secs = Duration::from_secs;
        Self {
            host: host.into(),
            plans: vec![
                Plan {
                    kind: ScenarioKind::NormalLoad,
                    users: 50,
                    run_time: secs(25),
                },
                Plan {
                    kind: ScenarioKind::PeakLoad,
                    users: 100,
                    run_time: secs(25),
                },
                Plan {
                    kind: ScenarioKind::StressTest,
                    users: 200,
                    run_time: secs(20),
                },
            ],
            open: Some(OpenPlan {
                users: 50,
                rps: 150,
                run_time: secs(20),
            }),
            demo_users: 1000,
            output_dir: PathBuf::from("target/loadtest"),
            progress_secs: Some(10),
            print_metrics: true,
        }
    }

    /// The report's users and durations (about 22 minutes).
    pub fn full(host: impl Into<String>) -> Self {
        let mins = |m: u64| Duration::from_secs(m * 60);
        Self {
            plans: vec![
                Plan {
                    kind: ScenarioKind::NormalLoad,
                    users: 100,
                    run_time: mins(10),
                },
                Plan {
                    kind: ScenarioKind::PeakLoad,
                    users: 500,
                    run_time: mins(5),
                },
                Plan {
                    kind: ScenarioKind::StressTest,
                    users: 1000,
                    run_time: mins(2),
                },
            ],
            open: Some(OpenPlan {
                users: 200,
                rps: 200,
                run_time: mins(5),
            }),
            progress_secs: Some(30),
            ..Self::short(host)
        }
    }
}

/// A failed load test run (not a failed threshold: see [`Summary::passed`]).
#[derive(Debug)]
pub struct LoadTestError(pub String);

impl std::fmt::Display for LoadTestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadTestError {}

impl From<GooseError> for LoadTestError {
    fn from(e: GooseError) -> Self {
        Self(e.to_string())
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    fn of(data: &GooseRequestMetricTimingData) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(data.percentile_us(0.50)),
            p95_ms: ms(data.percentile_us(0.95)),
            p99_ms: ms(data.percentile_us(0.99)),
            max_ms: ms(data.maximum_time_us),
        }
    }
}

/// One request (`METHOD name`) of a scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestSummary {
    /// `POST /auth/login`, …
    pub name: String,
    /// Requests sent (429s included).
    pub requests: usize,
    /// Failed requests (429s excluded).
    pub failures: usize,
    /// 429 answers from the limiter, counted apart.
    pub rate_limited: u64,
    /// 409 answers to orders whose item sold out, counted apart.
    pub sold_out: u64,
    /// Requests per second over the scenario.
    pub rps: f64,
    /// Measured latency.
    pub latency: Latency,
    /// Coordinated-omission-corrected latency (open model).
    pub corrected: Option<Latency>,
    /// Answers per status code.
    pub status_codes: BTreeMap<u16, usize>,
}

/// One transaction of a scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransactionSummary {
    /// `login`, `menu`, …
    pub name: String,
    /// Runs.
    pub runs: usize,
    /// Failed runs.
    pub failures: usize,
    /// How long a run took.
    pub latency: Latency,
}

/// One judged threshold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdOutcome {
    /// The rule, as the report words it.
    pub rule: String,
    /// What was observed.
    pub observed: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// One scenario's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioSummary {
    /// `normal_load`, `peak_load`, `stress_test` or `open_model`.
    pub name: String,
    /// Goose users.
    pub users: usize,
    /// The constant arrival rate of the open model.
    pub arrival_rate: Option<usize>,
    /// Seconds goose measured.
    pub duration_secs: usize,
    /// Requests sent, login and 429s included.
    pub requests: usize,
    /// Failed requests (429s excluded).
    pub failures: usize,
    /// 429 answers, counted apart.
    pub rate_limited: u64,
    /// 409 answers to orders whose item sold out, counted apart.
    pub sold_out: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency of every request but the login.
    pub latency: Latency,
    /// Corrected latency of every request but the login (open model).
    pub corrected: Option<Latency>,
    /// The login's latency, apart (absent when the scenario does not log in).
    pub login: Option<Latency>,
    /// Per request.
    pub by_request: Vec<RequestSummary>,
    /// Per transaction.
    pub transactions: Vec<TransactionSummary>,
    /// The report's thresholds, judged.
    pub thresholds: Vec<ThresholdOutcome>,
    /// Whether every threshold passed.
    pub passed: bool,
    /// Goose's HTML report.
    pub report: String,
}

/// The whole run, as written to `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The API.
    pub host: String,
    /// The scenarios, then the open model.
    pub scenarios: Vec<ScenarioSummary>,
    /// Whether every threshold of every scenario passed.
    pub passed: bool,
}

impl Summary {
    /// The scenario of this name.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioSummary> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// Writes `summary.json` into `dir`; returns its path.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("summary.json");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json)?;
        Ok(path)
    }

    /// The figures and thresholds as text tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>4} {:>8} {:>6} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "scenario",
            "users",
            "secs",
            "requests",
            "fails",
            "429s",
            "409s",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "login p95"
        );
        for s in &self.scenarios {
            let l = s.corrected.as_ref().unwrap_or(&s.latency);
            let login = s
                .login
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| format!("{:.1}", l.p95_ms));
            let _ = writeln!(
                out,
                "{:<12} {:>5} {:>4} {:>8} {:>6} {:>7} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10}",
                s.name,
                s.users,
                s.duration_secs,
                s.requests,
                s.failures,
                s.rate_limited,
                s.sold_out,
                s.rps,
                l.p50_ms,
                l.p95_ms,
                l.p99_ms,
                login
            );
        }
        if let Some(open) = self.scenario("open_model")
            && let Some(corrected) = &open.corrected
        {
            let _ = writeln!(
                out,
                "open_model at {} req/s: corrected p95 {:.1} ms, p99 {:.1} ms (measured p95 {:.1} ms, p99 {:.1} ms)",
                open.arrival_rate.unwrap_or_default(),
                corrected.p95_ms,
                corrected.p99_ms,
                open.latency.p95_ms,
                open.latency.p99_ms
            );
        }
        let _ = writeln!(
            out,
            "\n{:<12} {:<40} {:>10}  result",
            "scenario", "threshold", "observed"
        );
        for s in &self.scenarios {
            for t in &s.thresholds {
                let _ = writeln!(
                    out,
                    "{:<12} {:<40} {:>10.2}  {}",
                    s.name,
                    t.rule,
                    t.observed,
                    if t.passed { "PASS" } else { "FAIL" }
                );
            }
        }
        out
    }
}

/// Runs every plan, then the open model, and writes `summary.json`.
///
/// # Errors
///
/// Goose could not run a scenario (an invalid host, say) or the reports
/// could not be written. Failed thresholds are not errors: see
/// [`Summary::passed`].
pub async fn run(options: &Options) -> Result<Summary, LoadTestError> {
    let io = |e: std::io::Error| LoadTestError(format!("{}: {e}", options.output_dir.display()));
    std::fs::create_dir_all(&options.output_dir).map_err(io)?;
    let mut scenarios = Vec::new();
    // Each scenario logs in as the next demo users.
    let mut first_user = 0u32;
    for (i, plan) in options.plans.iter().enumerate() {
        let shared = Shared::new(options.demo_users, i as u8 + 1, first_user);
        if plan.kind != ScenarioKind::StressTest {
            first_user += plan.users as u32;
        }
        let name = plan.kind.name();
        let scenario = match plan.kind {
            ScenarioKind::NormalLoad => scenarios::normal_load(name, &shared),
            ScenarioKind::PeakLoad => scenarios::peak_load(name, &shared),
            ScenarioKind::StressTest => scenarios::stress_test(name, &shared),
        };
        scenarios.push(
            attack(
                options,
                name,
                scenario,
                plan.users,
                plan.run_time,
                None,
                &shared,
            )
            .await?,
        );
    }
    if let Some(open) = &options.open {
        let network = options.plans.len() as u8 + 1;
        let shared = Shared::new(options.demo_users, network, first_user);
        let scenario = scenarios::normal_load("open_model", &shared);
        let rate = Some(open.rps);
        scenarios.push(
            attack(
                options,
                "open_model",
                scenario,
                open.users,
                open.run_time,
                rate,
                &shared,
            )
            .await?,
        );
    }
    let summary = Summary {
        host: options.host.clone(),
        passed: scenarios.iter().all(|s| s.passed),
        scenarios,
    };
    summary.write(&options.output_dir).map_err(io)?;
    Ok(summary)
}

async fn attack(
    options: &Options,
    name: &str,
    scenario: Scenario,
    users: usize,
    run_time: Duration,
    arrival_rate: Option<usize>,
    shared: &Arc<Shared>,
) -> Result<ScenarioSummary, LoadTestError> {
    let report = options.output_dir.join(format!("{name}.html"));
    let users = users.max(1);
    // (Built field by field: goose keeps some fields private.)
    let mut config = GooseConfiguration::default();
    config.host = Some(options.host.clone());
    config.users = Some(users);
    // Every user starts within about a second.
    config.increase_rate = Some(users.to_string());
    config.run_time = Some(format!("{}s", run_time.as_secs().max(1)));
    config.running_metrics = options.progress_secs;
    config.no_print_metrics = !options.print_metrics;
    config.report_file = vec![report.display().to_string()];
    // Keep the logins made while users start.
    config.no_reset_metrics = true;
    config.no_telnet = true;
    config.no_websocket = true;
    // The open model: a constant arrival rate, and latencies corrected for
    // coordinated omission.
    config.throttle_requests = arrival_rate;
    config.co_mitigation = arrival_rate.map(|_| GooseCoordinatedOmissionMitigation::Average);
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario)
        .execute()
        .await?;
    let apart = Apart {
        rate_limited: shared.rate_limited(),
        sold_out: shared.sold_out(),
    };
    let mut summary = summarize(name, users, arrival_rate, &metrics, &apart);
    summary.report = report.display().to_string();
    Ok(summary)
}

fn empty_timing() -> GooseRequestMetricTimingData {
    GooseRequestMetricTimingData {
        times_us: TimeBuckets::new(),
        minimum_time_us: 0,
        maximum_time_us: 0,
        total_time_us: 0,
        counter: 0,
    }
}

/// Adds `other`'s times to `into`.
fn merge(into: &mut GooseRequestMetricTimingData, other: &GooseRequestMetricTimingData) {
    for (&bucket, &count) in other.times_us.iter() {
        let now = into.times_us.get(&bucket).copied().unwrap_or(0);
        into.times_us.insert(bucket, now + count);
    }
    if other.counter > 0 {
        into.minimum_time_us = if into.counter == 0 {
            other.minimum_time_us
        } else {
            into.minimum_time_us.min(other.minimum_time_us)
        };
    }
    into.maximum_time_us = into.maximum_time_us.max(other.maximum_time_us);
    into.total_time_us += other.total_time_us;
    into.counter += other.counter;
}

/// Answers counted apart, per request key.
struct Apart {
    rate_limited: BTreeMap<String, u64>,
    sold_out: BTreeMap<String, u64>,
}

/// The scenario's figures and thresholds from goose's metrics and our
/// counters of answers counted apart.
fn summarize(
    name: &str,
    users: usize,
    arrival_rate: Option<usize>,
    metrics: &GooseMetrics,
    apart: &Apart,
) -> ScenarioSummary {
    let secs = metrics.duration.max(1) as f64;
    let login_key = format!("POST {LOGIN}");
    let mut by_request = Vec::new();
    let mut all = empty_timing();
    let mut all_corrected = empty_timing();
    let mut login = None;
    for (key, r) in &metrics.requests {
        let requests = r.success_count + r.fail_count;
        let corrected = r.coordinated_omission_data.as_ref();
        if *key == login_key {
            login = Some(Latency::of(&r.raw_data));
        } else {
            merge(&mut all, &r.raw_data);
            merge(&mut all_corrected, corrected.unwrap_or(&r.raw_data));
        }
        by_request.push(RequestSummary {
            name: key.clone(),
            requests,
            failures: r.fail_count,
            rate_limited: apart.rate_limited.get(key).copied().unwrap_or(0),
            sold_out: apart.sold_out.get(key).copied().unwrap_or(0),
            rps: requests as f64 / secs,
            latency: Latency::of(&r.raw_data),
            corrected: corrected.map(Latency::of),
            status_codes: r.status_code_counts.iter().map(|(k, v)| (*k, *v)).collect(),
        });
    }
    by_request.sort_by(|a, b| a.name.cmp(&b.name));
    let transactions = metrics
        .transactions
        .iter()
        .flatten()
        .map(|t| TransactionSummary {
            name: t.transaction_name.name_for_transaction().to_owned(),
            runs: t.success_count + t.fail_count,
            failures: t.fail_count,
            latency: Latency::of(&t.run_times),
        })
        .collect();
    let requests: usize = by_request.iter().map(|r| r.requests).sum();
    let failures: usize = by_request.iter().map(|r| r.failures).sum();
    let limited: u64 = by_request.iter().map(|r| r.rate_limited).sum();
    let sold_out: u64 = by_request.iter().map(|r| r.sold_out).sum();
    let latency = Latency::of(&all);
    let corrected = arrival_rate.map(|_| Latency::of(&all_corrected));
    let answered = requests.saturating_sub(limited as usize).max(1);
    let failure_percent = failures as f64 * 100.0 / answered as f64;
    let rps = requests as f64 / secs;
    let judged_p95 = corrected.as_ref().unwrap_or(&latency).p95_ms;
    let p95_rule = if corrected.is_some() {
        "p95 < 1000 ms (corrected, login apart)"
    } else {
        "p95 < 1000 ms (login apart)"
    };
    let thresholds = vec![
        ThresholdOutcome {
            rule: p95_rule.to_owned(),
            observed: judged_p95,
            passed: all.counter > 0 && judged_p95 < MAX_P95_MS,
        },
        ThresholdOutcome {
            rule: "failure rate < 1% (429s apart)".to_owned(),
            observed: failure_percent,
            passed: requests > 0 && failure_percent < MAX_FAILURE_PERCENT,
        },
        ThresholdOutcome {
            rule: "throughput > 100 req/s".to_owned(),
            observed: rps,
            passed: rps > MIN_RPS,
        },
    ];
    ScenarioSummary {
        name: name.to_owned(),
        users,
        arrival_rate,
        duration_secs: metrics.duration,
        requests,
        failures,
        rate_limited: limited,
        sold_out,
        rps,
        latency,
        corrected,
        login,
        by_request,
        transactions,
        passed: thresholds.iter().all(|t| t.passed),
        thresholds,
        report: String::new(),
    }
}
