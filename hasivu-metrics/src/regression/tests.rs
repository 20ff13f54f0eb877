use super::*;

/// SplitMix64 with Box–Muller normals and Poisson counts, so every seed
/// gives the same series on every machine.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
    fn poisson(&mut self, lambda: f64) -> u64 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }
}

const START: u64 = 1_767_225_600; // a Thursday, 00:00 UTC
const DAY: u64 = 24 * 60;

/// One interval of a stable route: ~120 requests, p95 log-normal around
/// 100 ms (±15%), 0.5% errors, everything multiplied after `step`.
fn point(rng: &mut Rng, i: u64, latency: f64, errors: f64) -> Point {
    let requests = 100 + rng.u64() % 41;
    Point {
        start_secs: START + i * 60,
        requests,
        errors: rng.poisson(requests as f64 * 0.005 * errors),
        p95_ms: 100.0 * latency * (0.15 * rng.normal()).exp(),
        version: 0,
    }
}

/// A week and an hour of a stable route, one seed's.
fn noise(seed: u64) -> Vec<Point> {
    let mut rng = Rng(seed);
    (0..7 * DAY + 60)
        .map(|i| point(&mut rng, i, 1.0, 1.0))
        .collect()
}

fn check(points: &[Point], config: RegressionConfig) -> Vec<Regression> {
    let mut detector = RegressionDetector::with_config(config);
    for p in points {
        detector.record("GET /menu/daily", *p);
    }
    detector.detect(START + points.len() as u64 * 60)
}

#[test]
fn pure_noise_gives_no_regression_over_1000_seeds() {
    let any = (0..1000)
        .filter(|&seed| !check(&noise(seed), RegressionConfig::default()).is_empty())
        .count();
    eprintln!("false positives over 1000 seeds of independent noise: {any}");
    assert!(any <= 2, "{any}");
}

#[test]
fn the_significance_test_alone_holds_its_level_on_independent_noise() {
    // Effect sizes off and p < 0.01: about 1% of checks flag each metric
    // (binomial sd over 400 seeds: 0.5%), with the autocorrelation
    // correction on (it should change nothing on independent intervals).
    let significance_only = RegressionConfig {
        latency_factor: 0.0,
        error_factor: 0.0,
        min_error_rate_increase: f64::NEG_INFINITY,
        max_p: 0.01,
        ..RegressionConfig::default()
    };
    let (mut latency, mut errors) = (0, 0);
    for seed in 0..400 {
        for r in check(&noise(seed), significance_only.clone()) {
            match r.metric {
                RegressionMetric::LatencyP95 => latency += 1,
                RegressionMetric::ErrorRate => errors += 1,
            }
        }
    }
    eprintln!("significance alone over 400 seeds: latency {latency}, error rate {errors}");
    assert!(latency <= 10 && errors <= 10, "{latency} {errors}");
    assert!(
        latency + errors >= 2,
        "never significant: {latency} {errors}"
    );
}

#[test]
fn a_2x_step_is_found_at_the_interval_it_started_with_its_version() {
    let mut rng = Rng(42);
    let mut detector = RegressionDetector::new();
    detector.set_version("1.4.1");
    let step = 7 * DAY + 60;
    let mut first = None;
    for i in 0..step + 120 {
        if i == step {
            detector.set_version("1.4.2");
        }
        let factor = if i >= step { 2.0 } else { 1.0 };
        detector.record("GET /orders", point(&mut rng, i, factor, 1.0));
        // A stable neighbour must stay quiet.
        detector.record("GET /menu/daily", point(&mut rng, i, 1.0, 1.0));
        if i >= 7 * DAY {
            let found = detector.detect(START + (i + 1) * 60);
            if first.is_none()
                && let Some(r) = found.first()
            {
                first = Some((i, r.clone()));
            }
            assert!(
                i >= step || found.is_empty(),
                "before the step at {i}: {found:?}"
            );
            assert!(found.iter().all(|r| r.route == "GET /orders"), "{found:?}");
        }
    }
    let (at, r) = first.expect("the step was never detected");
    eprintln!(
        "2x step detected {} intervals after it began; start placed at interval {}, ratio {:.2}, p = {:.1e}",
        at + 1 - step,
        (r.started_at_secs - START) / 60,
        r.ratio,
        r.p_value
    );
    assert_eq!(r.metric, RegressionMetric::LatencyP95);
    assert_eq!(r.started_at_secs, START + step * 60);
    assert_eq!(r.version.as_deref(), Some("1.4.2"));
    assert_eq!(r.previous_version.as_deref(), Some("1.4.1"));
    assert!(r.ratio >= 1.5 && r.p_value < 0.01);
    // Within the recent hour: once more than half of it is at the new level.
    assert!(at + 1 - step <= 40, "{}", at + 1 - step);
}

#[test]
fn an_error_rate_step_is_found() {
    let mut rng = Rng(9);
    let mut detector = RegressionDetector::new();
    let step = 3 * DAY;
    for i in 0..step + 60 {
        let factor = if i >= step { 4.0 } else { 1.0 };
        detector.record("POST /orders", point(&mut rng, i, 1.0, factor));
    }
    let found = detector.detect(START + (step + 60) * 60);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].metric, RegressionMetric::ErrorRate);
    assert!(found[0].current > 0.015 && found[0].baseline < 0.007);
    let start = (found[0].started_at_secs - START) / 60;
    assert!(start.abs_diff(step) <= 10, "{start} vs {step}");
}

#[test]
fn same_hour_of_week_baseline_ignores_a_daily_peak() {
    // Lunch (12:00–13:00) is twice as slow every day.
    let run = |hour_of_week: bool| {
        let mut rng = Rng(5);
        let mut detector = RegressionDetector::with_config(RegressionConfig {
            hour_of_week,
            baseline: Duration::from_secs(28 * 24 * 3600),
            ..RegressionConfig::default()
        });
        let end = 28 * DAY + 13 * 60;
        for i in 0..end {
            let lunch = (i % DAY) / 60 == 12;
            detector.record(
                "GET /menu/daily",
                point(&mut rng, i, if lunch { 2.0 } else { 1.0 }, 1.0),
            );
        }
        detector.detect(START + end * 60)
    };
    assert_eq!(
        run(false).len(),
        1,
        "a plain baseline sees lunch as a regression"
    );
    assert!(run(true).is_empty());
}

#[test]
fn too_few_intervals_say_nothing() {
    let mut detector = RegressionDetector::new();
    for i in 0..100 {
        let p95 = if i >= 95 { 1000.0 } else { 100.0 };
        detector.record(
            "GET /a",
            Point {
                start_secs: START + i * 60,
                requests: 50,
                errors: 0,
                p95_ms: p95,
                version: 0,
            },
        );
        // Intervals with too few requests do not count.
        detector.record(
            "GET /b",
            Point {
                start_secs: START + i * 60,
                requests: 2,
                errors: 0,
                p95_ms: p95 * 10.0,
                version: 0,
            },
        );
    }
    assert!(detector.detect(START + 100 * 60).is_empty());
}

#[test]
fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("regression-history.json"));
    let mut rng = Rng(3);
    let step = 2 * DAY;
    let end = step + 50;
    {
        let mut detector = RegressionDetector::load(RegressionConfig::default(), &store).unwrap();
        assert_eq!(detector.routes().count(), 0);
        detector.set_version("2.0.0");
        for i in 0..step {
            detector.record("GET /a", point(&mut rng, i, 1.0, 1.0));
        }
        detector.save(&store).unwrap();
    }
    // A new process: the baseline comes back from the file.
    let mut detector = RegressionDetector::load(RegressionConfig::default(), &store).unwrap();
    detector.set_version("2.1.0");
    for i in step..end {
        detector.record("GET /a", point(&mut rng, i, 2.0, 1.0));
    }
    let found = detector.detect(START + end * 60);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].baseline_intervals, step as usize - 10);
    assert_eq!(found[0].started_at_secs, START + step * 60);
    assert_eq!(found[0].version.as_deref(), Some("2.1.0"));
    assert_eq!(found[0].previous_version.as_deref(), Some("2.0.0"));

    // A corrupt file is an error, not an empty history.
    std::fs::write(store.path(), b"{not json").unwrap();
    assert!(matches!(
        RegressionDetector::load(RegressionConfig::default(), &store),
        Err(Error::HistoryFormat { .. })
    ));
}

#[test]
fn analytics_intervals_are_recorded() {
    use crate::{ManualClock, Sample};
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    time.set(Duration::from_secs(600));
    for i in 0..40 {
        let status = if i < 2 { 500 } else { 200 };
        analytics.record(
            "GET /a",
            &Sample::new(Duration::from_millis(10 + i)).status(status),
        );
    }
    let mut detector = RegressionDetector::new();
    // The minute from 600 s is whole a second after it ended.
    time.set(Duration::from_secs(661));
    let recorded = detector.record_analytics(&analytics, START + 61);
    // Every whole minute the ring holds: 0–60 s up to 600–660 s.
    assert_eq!(
        recorded,
        Recorded {
            intervals: 11,
            lost: 0,
            partial: false
        }
    );
    let history = detector.history();
    let points: Vec<&Point> = history.routes["GET /a"]
        .iter()
        .filter(|p| p.requests > 0)
        .collect();
    assert_eq!(points.len(), 1);
    assert_eq!(
        (points[0].start_secs, points[0].requests, points[0].errors),
        (START, 40, 2)
    );
    assert!(
        (points[0].p95_ms - 48.0).abs() < 1.0,
        "{}",
        points[0].p95_ms
    );
    // Nothing new yet.
    assert_eq!(
        detector.record_analytics(&analytics, START + 61).intervals,
        0
    );
}

#[test]
fn analytics_points_are_whole_slices_that_never_overlap() {
    use crate::{ManualClock, Sample};
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let route = analytics.route("GET /a");
    let mut detector = RegressionDetector::new();
    let secs = Duration::from_secs;
    // Minute m gets 30 + m requests, one of them failing; the tick comes
    // 25 s into every minute, and the one in minute 6 is missed.
    for m in 0..11u64 {
        time.set(secs(60 * m + 1));
        if m < 10 {
            for r in 0..30 + m {
                let status = if r == 0 { 500 } else { 200 };
                route.record(&Sample::new(Duration::from_millis(10 + m)).status(status));
            }
        }
        time.set(secs(60 * m + 25));
        if m != 6 {
            detector.record_analytics(&analytics, START + 60 * m + 25);
        }
    }
    let history = detector.history();
    let points = &history.routes["GET /a"];
    // (start in seconds from START, requests, errors)
    let got: Vec<(i64, u64, u64)> = points
        .iter()
        .map(|p| (p.start_secs as i64 - START as i64, p.requests, p.errors))
        .collect();
    let want: Vec<(i64, u64, u64)> = (0..10).map(|m| (60 * m as i64, 30 + m, 1)).collect();
    assert_eq!(got, want, "one point per minute, each its own requests");
}

#[test]
fn a_long_gap_is_reported_and_a_flush_keeps_the_minute_in_progress() {
    use crate::{ManualClock, Sample};
    let time = ManualClock::new();
    let analytics = PerformanceAnalytics::builder().clock(time.clock()).build();
    let route = analytics.route("GET /a");
    let mut detector = RegressionDetector::new();
    let at = |secs: u64| {
        time.set(Duration::from_secs(secs));
        START + secs
    };
    route.record(&Sample::new(Duration::from_millis(5)));
    let first = detector.record_analytics(&analytics, at(61));
    assert_eq!(
        first,
        Recorded {
            intervals: 1,
            lost: 0,
            partial: false
        }
    );
    // Two hours without a call: the minute ring holds the last hour only,
    // minutes 60 to 119; minutes 1 to 59 are lost.
    let late = detector.record_analytics(&analytics, at(2 * 3600 + 30));
    assert_eq!(
        late,
        Recorded {
            intervals: 60,
            lost: 59,
            partial: false
        }
    );
    let history = detector.history();
    let points = &history.routes["GET /a"];
    assert_eq!(points.len(), 61);
    // Exactly one interval apart after the gap as before it.
    assert_eq!(points[1].start_secs - points[0].start_secs, 60 * 60);
    assert!(
        points
            .windows(2)
            .skip(1)
            .all(|w| w[1].start_secs - w[0].start_secs == 60)
    );

    // At shutdown, the minute in progress is recorded too ...
    for _ in 0..7 {
        route.record(&Sample::new(Duration::from_millis(5)).status(503));
    }
    let flushed = detector.flush_analytics(&analytics, at(2 * 3600 + 40));
    assert_eq!(
        flushed,
        Recorded {
            intervals: 0,
            lost: 0,
            partial: true
        }
    );
    let last = *detector.history().routes["GET /a"].last().unwrap();
    assert_eq!(
        (last.start_secs, last.requests, last.errors),
        (START + 7200, 7, 7)
    );
    // ... and replaced by the whole minute when it completes.
    route.record(&Sample::new(Duration::from_millis(5)));
    let later = detector.record_analytics(&analytics, at(2 * 3600 + 61));
    assert_eq!(later.intervals, 1);
    let points = detector.history().routes["GET /a"].clone();
    assert_eq!(points.len(), 62);
    assert_eq!(points.last().map(|p| (p.requests, p.errors)), Some((8, 7)));
}

#[test]
fn an_interval_the_rings_cannot_tile_records_nothing() {
    let analytics = PerformanceAnalytics::new();
    analytics.record("GET /a", &crate::Sample::new(Duration::from_millis(5)));
    let mut detector = RegressionDetector::with_config(RegressionConfig {
        interval: Duration::from_secs(90),
        ..RegressionConfig::default()
    });
    assert_eq!(
        detector.record_analytics(&analytics, START),
        Recorded::default()
    );
    assert_eq!(detector.routes().count(), 0);
    // Five minutes tile on the minute ring.
    let mut five = RegressionDetector::with_config(RegressionConfig {
        interval: Duration::from_secs(300),
        ..RegressionConfig::default()
    });
    assert_eq!(five.record_analytics(&analytics, START).lost, 0);
}

/// A school-meal route minute by minute, autocorrelated: traffic peaks
/// at lunch (3 requests a minute at night, 183 at noon, Poisson); the log
/// p95 is 100 ms, +22% at the lunch peak, plus an AR(1) process (lag-1
/// correlation `phi`, standard deviation `sigma_latency`) plus sampling
/// noise shrinking with the requests (0.15 at 100); the error rate is
/// 0.5% times a log-normal AR(1) factor (`sigma_errors`).
struct Traffic {
    rng: Rng,
    phi: f64,
    sigma_latency: f64,
    sigma_errors: f64,
    x: f64,
    y: f64,
}

impl Traffic {
    fn new(seed: u64, phi: f64, sigma_latency: f64, sigma_errors: f64) -> Self {
        let mut rng = Rng(seed);
        let x = sigma_latency * rng.normal();
        let y = sigma_errors * rng.normal();
        Self {
            rng,
            phi,
            sigma_latency,
            sigma_errors,
            x,
            y,
        }
    }

    fn count(&mut self, lambda: f64) -> u64 {
        if lambda < 30.0 {
            self.rng.poisson(lambda)
        } else {
            (lambda + lambda.sqrt() * self.rng.normal())
                .round()
                .max(0.0) as u64
        }
    }

    fn point(&mut self, i: u64) -> Point {
        self.point_with(i, 1.0, 1.0)
    }

    fn point_with(&mut self, i: u64, latency: f64, errors: f64) -> Point {
        let hour = (i % DAY) as f64 / 60.0;
        let lunch = (-((hour - 12.0) / 3.0).powi(2)).exp();
        let requests = self.count(3.0 + 180.0 * lunch);
        let keep = (1.0 - self.phi * self.phi).sqrt();
        self.x = self.phi * self.x + keep * self.sigma_latency * self.rng.normal();
        self.y = self.phi * self.y + keep * self.sigma_errors * self.rng.normal();
        let sampling = 0.15 * (100.0 / requests.max(1) as f64).sqrt().min(3.0);
        let p95 = 100.0 * latency * (0.2 * lunch + self.x + sampling * self.rng.normal()).exp();
        let rate = 0.005 * errors * (self.y - self.sigma_errors * self.sigma_errors / 2.0).exp();
        let errors = self.count(requests as f64 * rate).min(requests);
        Point {
            start_secs: START + i * 60,
            requests,
            errors,
            p95_ms: if requests == 0 { 0.0 } else { p95 },
            version: 0,
        }
    }
}

/// Onsets of regressions reported over `days` of minute-by-minute checks
/// after a week and an hour of history: a check reporting a metric the
/// check a minute before did not report.
fn false_alarms(traffic: &mut Traffic, days: u64, config: &RegressionConfig) -> u64 {
    let mut detector = RegressionDetector::with_config(config.clone());
    let warmup = 7 * DAY + 60;
    for i in 0..warmup {
        detector.record("GET /menu/daily", traffic.point(i));
    }
    let mut onsets = 0;
    let mut before: Vec<RegressionMetric> = Vec::new();
    for i in warmup..warmup + days * DAY {
        detector.record("GET /menu/daily", traffic.point(i));
        let found: Vec<RegressionMetric> = detector
            .detect(START + (i + 1) * 60)
            .iter()
            .map(|r| r.metric)
            .collect();
        onsets += found.iter().filter(|m| !before.contains(m)).count() as u64;
        before = found;
    }
    onsets
}

#[test]
fn false_alarms_on_autocorrelated_noise_stay_under_one_a_week() {
    // 8 seeds × 7 days of minute-by-minute checks per setting.
    const SEEDS: u64 = 8;
    const DAYS: u64 = 7;
    let route_days = (SEEDS * DAYS) as f64;
    let run = |phi: f64, sigmas: (f64, f64), seeds: u64, config: &RegressionConfig| -> u64 {
        (0..seeds)
            .map(|seed| {
                let mut traffic = Traffic::new(seed, phi, sigmas.0, sigmas.1);
                false_alarms(&mut traffic, DAYS, config)
            })
            .sum()
    };
    // (phi, sigmas, most false alarms a week)
    let settings = [
        (0.5, (0.2, 0.5), 1.0),
        (0.8, (0.2, 0.5), 1.0),
        (0.9, (0.2, 0.5), 1.0),
        // A noisier route: p95 wandering ±30%, error rate ±70%.
        (0.8, (0.3, 0.7), 1.0),
        (0.9, (0.3, 0.7), 2.0),
    ];
    for (phi, sigmas, per_week) in settings {
        let alarms = run(phi, sigmas, SEEDS, &RegressionConfig::default());
        eprintln!(
            "phi {phi}, sigmas {sigmas:?}: {alarms} false alarms in {route_days} route-days \
             ({:.3} a day, {:.2} a week)",
            alarms as f64 / route_days,
            7.0 * alarms as f64 / route_days,
        );
        assert!(
            alarms as f64 <= per_week * route_days / 7.0,
            "phi {phi}, sigmas {sigmas:?}: {alarms} false alarms in {route_days} route-days"
        );
    }
    // What the correction is for: the method without it (p < 0.01 on the
    // plain Mann–Whitney test, intervals of 5 requests, no hold), on one
    // of the same weeks, is well over the bound.
    let plain = RegressionConfig {
        autocorrelation: false,
        max_p: 0.01,
        min_requests: 5,
        hold: 1.0,
        ..RegressionConfig::default()
    };
    let plain_alarms = run(0.9, (0.2, 0.5), 1, &plain);
    eprintln!("without the correction, phi 0.9: {plain_alarms} false alarms in 7 route-days");
    assert!(plain_alarms > 1, "{plain_alarms}");
}

#[test]
fn steps_in_autocorrelated_seasonal_traffic_are_still_found() {
    for (latency, errors) in [(2.0, 1.0), (1.0, 4.0)] {
        for seed in 0..6u64 {
            let mut traffic = Traffic::new(500 + seed, 0.8, 0.2, 0.5);
            let mut detector = RegressionDetector::new();
            // The step comes at 9:00 + seed hours on the eighth day.
            let step = 7 * DAY + (9 + seed) * 60;
            for i in 0..step {
                detector.record("GET /a", traffic.point(i));
            }
            let mut found = None;
            for i in step..step + 120 {
                detector.record("GET /a", traffic.point_with(i, latency, errors));
                if let Some(r) = detector.detect(START + (i + 1) * 60).first() {
                    found = Some((i + 1 - step, r.clone()));
                    break;
                }
            }
            let (after, r) = found.unwrap_or_else(|| {
                panic!("{latency}x latency, {errors}x errors at seed {seed}: never found")
            });
            let placed = (r.started_at_secs as i64 - (START + step * 60) as i64) / 60;
            eprintln!(
                "{latency}x latency, {errors}x errors, seed {seed}: found after {after} min, \
                 placed {placed} min off"
            );
            let metric = if latency > 1.0 {
                RegressionMetric::LatencyP95
            } else {
                RegressionMetric::ErrorRate
            };
            assert_eq!(r.metric, metric);
            assert!(after <= 60, "found {after} intervals after the step");
            assert!(placed.abs() <= 30, "placed {placed} intervals off");
        }
    }
}
