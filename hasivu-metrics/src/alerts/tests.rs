use std::time::Duration;

use super::*;
use crate::{ManualClock, Sample};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A deterministic uniform noise source in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn value_rule() -> Rule {
    Rule::above("latency", Metric::Value("latency".into()))
        .warning(100.0)
        .warning_clear(80.0)
        .for_(secs(60))
        .keep_firing_for(secs(120))
}

/// Runs `levels` (level, amplitude, evaluations) every 10 s and returns
/// every notification.
async fn drive(rule: Rule, levels: &[(f64, f64, usize)]) -> Vec<Notification> {
    let time = ManualClock::new();
    let (sink, mut rx) = ChannelSink::new(1024);
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(rule)
        .sink(sink)
        .build()
        .unwrap();
    let mut noise = Noise(7);
    for &(level, amplitude, n) in levels {
        for _ in 0..n {
            let v = level + amplitude * noise.next();
            manager.run(&Inputs::new().value("latency", v)).await;
            time.advance(secs(10));
        }
    }
    drop(manager);
    let mut out = Vec::new();
    while let Some(n) = rx.recv().await {
        out.push(n);
    }
    out
}

// Ten minutes around the threshold from below, ten above it (dipping
// under the threshold but not the clear one), ten well below.
const NOISY: [(f64, f64, usize); 3] = [(95.0, 10.0, 60), (110.0, 15.0, 60), (60.0, 15.0, 60)];

#[tokio::test]
async fn noisy_signal_around_the_threshold_fires_once_and_resolves_once() {
    let sent = drive(value_rule(), &NOISY).await;
    let statuses: Vec<Status> = sent.iter().map(|n| n.status).collect();
    assert_eq!(statuses, [Status::Firing, Status::Resolved], "{sent:#?}");
    assert_eq!(sent[0].fingerprint, sent[1].fingerprint);
    assert_eq!(sent[0].starts_at_ms, sent[1].starts_at_ms);
    assert!(sent[1].ends_at_ms.is_some());
}

#[tokio::test]
async fn the_same_signal_flaps_under_a_naive_threshold() {
    let naive = Rule::above("latency", Metric::Value("latency".into())).warning(100.0);
    let sent = drive(naive, &NOISY).await;
    // What the report's bare threshold would have sent for the same data.
    assert!(sent.len() > 10, "{}", sent.len());
}

#[tokio::test]
async fn a_firing_alert_is_not_repeated() {
    let time = ManualClock::new();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(value_rule().for_(Duration::ZERO))
        .build()
        .unwrap();
    let high = Inputs::new().value("latency", 500.0);
    assert_eq!(manager.evaluate(&high).len(), 1);
    for _ in 0..20 {
        time.advance(secs(10));
        assert!(manager.evaluate(&high).is_empty());
    }
    let active = manager.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].phase, Phase::Firing);
    // Missing data keeps it firing (the default), however long.
    for _ in 0..100 {
        time.advance(secs(60));
        assert!(manager.evaluate(&Inputs::new()).is_empty());
    }
    assert_eq!(manager.active()[0].phase, Phase::Firing);
    assert_eq!(manager.active()[0].value, None);
}

#[tokio::test]
async fn no_data_can_clear_or_alert() {
    let time = ManualClock::new();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(value_rule().for_(Duration::ZERO).no_data(NoData::Clear))
        .rule(
            Rule::below("heartbeat", Metric::Value("heartbeat".into()))
                .critical(1.0)
                .for_(secs(60))
                .no_data(NoData::Alert),
        )
        .build()
        .unwrap();
    let statuses = |sent: Vec<Notification>| -> Vec<(String, Status, Option<f64>)> {
        sent.into_iter()
            .map(|n| (n.rule, n.status, n.value))
            .collect()
    };
    let both = Inputs::new()
        .value("latency", 500.0)
        .value("heartbeat", 1.0);
    assert_eq!(
        statuses(manager.evaluate(&both)),
        [("latency".to_owned(), Status::Firing, Some(500.0))]
    );
    // Both values stop coming. Clear: the latency alert resolves after
    // keep_firing_for (120 s). Alert: the missing heartbeat fires after
    // `for` (60 s), with no value.
    let mut sent = Vec::new();
    for _ in 0..13 {
        time.advance(secs(10));
        sent.extend(statuses(manager.evaluate(&Inputs::new())));
    }
    assert_eq!(
        sent,
        [
            ("heartbeat".to_owned(), Status::Firing, None),
            ("latency".to_owned(), Status::Resolved, None),
        ]
    );
    // The heartbeat is back.
    time.advance(secs(10));
    assert_eq!(
        statuses(manager.evaluate(&Inputs::new().value("heartbeat", 1.0))),
        [("heartbeat".to_owned(), Status::Resolved, Some(1.0))]
    );
}

#[tokio::test]
async fn too_few_requests_follow_the_no_data_policy() {
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let rule = |name: &str, no_data| {
        Rule::above(name, Metric::ErrorRate)
            .target(Target::Route("POST /orders".into()))
            .critical(0.10)
            .critical_clear(0.08)
            .min_volume(50)
            .no_data(no_data)
    };
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(rule("keep", NoData::Keep))
        .rule(rule("clear", NoData::Clear))
        .build()
        .unwrap();
    time.set(secs(3600));
    let mut sent = Vec::new();
    for _ in 0..2 {
        sent.extend(minute_of_traffic(
            &time,
            &analytics,
            &manager,
            "POST /orders",
            200,
            40,
        ));
    }
    assert_eq!(sent.len(), 2, "{sent:?}");
    // A trickle of healthy requests: 4 a minute, under the minimum volume
    // once the failing minutes have left the 5-minute window.
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.extend(minute_of_traffic(
            &time,
            &analytics,
            &manager,
            "POST /orders",
            4,
            0,
        ));
    }
    let resolved: Vec<&str> = sent.iter().map(|n| n.rule.as_str()).collect();
    assert_eq!(resolved, ["clear"], "{sent:?}");
    assert!(
        manager
            .active()
            .iter()
            .any(|a| a.rule == "keep" && a.phase == Phase::Firing)
    );
}

#[tokio::test]
async fn critical_inhibits_its_warning_until_it_resolves() {
    let time = ManualClock::new();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rule(
            Rule::above("queue", Metric::Value("q".into()))
                .warning(100.0)
                .critical(200.0),
        )
        .build()
        .unwrap();
    let at = |v: f64| {
        time.advance(secs(10));
        manager
            .evaluate(&Inputs::new().value("q", v))
            .into_iter()
            .map(|n| (n.severity, n.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(at(250.0), [(Severity::Critical, Status::Firing)]);
    let active = manager.active();
    assert_eq!(active.len(), 2);
    assert!(
        active
            .iter()
            .any(|a| a.severity == Severity::Warning && a.inhibited)
    );
    assert_eq!(
        at(150.0),
        [
            (Severity::Critical, Status::Resolved),
            (Severity::Warning, Status::Firing)
        ]
    );
    assert_eq!(at(50.0), [(Severity::Warning, Status::Resolved)]);
    assert!(at(50.0).is_empty());
}

#[tokio::test]
async fn low_volume_is_no_data_and_each_route_is_its_own_alert() {
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rules(Rule::report_defaults())
        .build()
        .unwrap();
    time.set(secs(3600));
    // 1 failure in 10 requests: 10%, but too few requests to mean anything.
    for i in 0..10 {
        let status = if i == 0 { 500 } else { 200 };
        analytics.record(
            "GET /quiet",
            &Sample::new(Duration::from_millis(5)).status(status),
        );
    }
    let inputs = Inputs::new().analytics(&analytics);
    assert!(manager.evaluate(&inputs).is_empty());
    assert!(manager.active().is_empty());

    // A busy route failing 12% of the time, and a slow one.
    let mut fired = Vec::new();
    for _ in 0..4 {
        for i in 0..100 {
            let status = if i % 8 == 0 { 500 } else { 200 };
            analytics.record(
                "GET /busy",
                &Sample::new(Duration::from_millis(5)).status(status),
            );
            analytics.record(
                "GET /slow",
                &Sample::new(Duration::from_millis(3000)).status(200),
            );
        }
        fired.extend(manager.evaluate(&Inputs::new().analytics(&analytics)));
        time.advance(secs(60));
    }
    let mut got: Vec<(String, Option<String>, Severity)> = fired
        .iter()
        .map(|n| (n.rule.clone(), n.route.clone(), n.severity))
        .collect();
    got.sort();
    let r = |s: &str| Some(s.to_owned());
    assert_eq!(
        got,
        [
            ("error_rate".into(), r("GET /busy"), Severity::Critical),
            (
                "response_time_mean".into(),
                r("GET /slow"),
                Severity::Warning
            ),
            (
                "response_time_p95".into(),
                r("GET /slow"),
                Severity::Warning
            ),
        ]
    );
    let fingerprints: std::collections::HashSet<_> = fired.iter().map(|n| &n.fingerprint).collect();
    assert_eq!(fingerprints.len(), 3);
}

#[tokio::test]
async fn burn_rate_pair_pages_on_fast_burn_and_resolves() {
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rules(Rule::slo_burn_rates(0.999))
        .build()
        .unwrap();
    let minute = |errors_per_1000: u32| {
        for i in 0..1000 {
            let status = if i < errors_per_1000 { 500 } else { 200 };
            analytics.record(
                "GET /a",
                &Sample::new(Duration::from_millis(5)).status(status),
            );
        }
        time.advance(secs(60));
    };
    // 0.05% errors for an hour: half the budget, no alert.
    for _ in 0..60 {
        minute(0);
        minute(1);
    }
    assert!(
        manager
            .evaluate(&Inputs::new().analytics(&analytics))
            .is_empty()
    );
    // 3% errors for an hour burns the budget at 30×.
    let mut fired = Vec::new();
    for _ in 0..60 {
        minute(30);
        fired.extend(manager.evaluate(&Inputs::new().analytics(&analytics)));
    }
    let mut rules: Vec<&str> = fired.iter().map(|n| n.rule.as_str()).collect();
    rules.sort();
    assert_eq!(rules, ["slo_burn_rate_fast", "slo_burn_rate_slow"]);
    // Clean again: the short window clears first, and the fast alert
    // resolves although the hour still holds the burst.
    let mut resolved = Vec::new();
    for _ in 0..10 {
        minute(0);
        resolved.extend(manager.evaluate(&Inputs::new().analytics(&analytics)));
    }
    let rules: Vec<&str> = resolved.iter().map(|n| n.rule.as_str()).collect();
    assert!(rules.contains(&"slo_burn_rate_fast"), "{rules:?}");
}

#[test]
fn inconsistent_rules_are_rejected() {
    let build = |rule: Rule| AlertManager::builder().rule(rule).build();
    let m = || Metric::Value("x".into());
    assert!(build(Rule::above("a", m())).is_err());
    assert!(build(Rule::above("a", m()).warning(10.0).warning_clear(12.0)).is_err());
    assert!(build(Rule::below("a", m()).warning(0.7).warning_clear(0.6)).is_err());
    assert!(build(Rule::above("a", m()).warning(10.0).critical(5.0)).is_err());
    let twice = AlertManager::builder()
        .rule(Rule::above("a", m()).warning(1.0))
        .rule(Rule::above("a", m()).warning(2.0))
        .build();
    assert!(matches!(twice, Err(Error::InvalidRule { .. })));
    assert!(
        AlertManager::builder()
            .rules(Rule::report_defaults())
            .rules(Rule::slo_burn_rates(0.999))
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn memory_rule_reads_the_system_status() {
    let time = ManualClock::new();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rules(Rule::report_defaults())
        .build()
        .unwrap();
    let status = SystemStatus {
        memory_total_bytes: Some(1000),
        memory_available_bytes: Some(100),
        ..SystemStatus::default()
    };
    let mut fired = Vec::new();
    for _ in 0..13 {
        fired.extend(manager.evaluate(&Inputs::new().system(&status)));
        time.advance(secs(10));
    }
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule, "memory");
    assert_eq!(fired[0].severity, Severity::Warning);
    assert!((fired[0].value.unwrap() - 0.9).abs() < 1e-9);
}

/// Records one minute of `requests` on `route`, `errors` of them failing,
/// and evaluates every 15 s through it; returns the notifications.
fn minute_of_traffic(
    time: &ManualClock,
    analytics: &PerformanceAnalytics,
    manager: &AlertManager,
    route: &str,
    requests: u32,
    errors: u32,
) -> Vec<Notification> {
    let mut out = Vec::new();
    for quarter in 0..4 {
        for i in 0..requests / 4 {
            let status = if i < errors / 4 { 500 } else { 200 };
            analytics.record(route, &Sample::new(Duration::from_millis(5)).status(status));
        }
        let _ = quarter;
        out.extend(manager.evaluate(&Inputs::new().analytics(analytics)));
        time.advance(secs(15));
    }
    out
}

#[tokio::test]
async fn a_firing_error_alert_stays_firing_while_its_route_gets_no_requests() {
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rules(Rule::report_defaults())
        .build()
        .unwrap();
    time.set(secs(3600));
    let errors = |sent: &[Notification]| -> Vec<(Severity, Status)> {
        sent.iter()
            .filter(|n| n.rule == "error_rate")
            .map(|n| (n.severity, n.status))
            .collect()
    };
    // 12% of 200 requests a minute fail: critical fires after `for`.
    let mut sent = Vec::new();
    for _ in 0..4 {
        sent.extend(minute_of_traffic(
            &time,
            &analytics,
            &manager,
            "POST /orders",
            200,
            24,
        ));
    }
    assert_eq!(errors(&sent), [(Severity::Critical, Status::Firing)]);

    // An outage: the route gets no requests for half an hour.
    for _ in 0..120 {
        let sent = manager.evaluate(&Inputs::new().analytics(&analytics));
        assert!(
            errors(&sent).is_empty(),
            "no data resolved the alert: {sent:?}"
        );
        time.advance(secs(15));
    }
    let firing = manager.active();
    assert!(
        firing.iter().any(|a| a.rule == "error_rate"
            && a.severity == Severity::Critical
            && a.phase == Phase::Firing),
        "{firing:?}"
    );

    // Healthy traffic again: resolved once the real value has stayed below
    // the clear threshold for keep_firing_for (5 minutes).
    let mut sent = Vec::new();
    let mut minutes = 0;
    while errors(&sent).is_empty() && minutes < 20 {
        sent.extend(minute_of_traffic(
            &time,
            &analytics,
            &manager,
            "POST /orders",
            200,
            0,
        ));
        minutes += 1;
    }
    assert_eq!(errors(&sent), [(Severity::Critical, Status::Resolved)]);
    assert!(
        (5..=7).contains(&minutes),
        "resolved after {minutes} minutes of traffic"
    );
}

#[tokio::test]
async fn per_route_alerts_step_while_their_route_is_absent_and_expire() {
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let manager = AlertManager::builder()
        .clock(time.clock())
        .rules(Rule::report_defaults())
        .build()
        .unwrap();
    time.set(secs(3600));
    let mut sent = Vec::new();
    for _ in 0..4 {
        sent.extend(minute_of_traffic(
            &time,
            &analytics,
            &manager,
            "POST /orders",
            200,
            24,
        ));
    }
    assert!(
        sent.iter()
            .any(|n| n.rule == "error_rate" && n.status == Status::Firing)
    );
    // The route disappears from the inputs (here: evaluations without
    // analytics). Its instances keep stepping: with the default no-data
    // policy they hold, until they expire after an hour without the route.
    let mut resolved = Vec::new();
    let mut evaluations = 0;
    while resolved.is_empty() && evaluations < 2 * 240 {
        resolved = manager.evaluate(&Inputs::new());
        time.advance(secs(15));
        evaluations += 1;
    }
    assert_eq!(
        resolved
            .iter()
            .map(|n| (n.rule.as_str(), n.severity, n.status, n.value))
            .collect::<Vec<_>>(),
        [("error_rate", Severity::Critical, Status::Resolved, None)],
        "expected one resolve (no value) when the absent route expired"
    );
    let hours = evaluations as f64 * 15.0 / 3600.0;
    assert!((1.0..1.1).contains(&hours), "expired after {hours} h");
    assert!(manager.active().is_empty(), "{:?}", manager.active());
}
