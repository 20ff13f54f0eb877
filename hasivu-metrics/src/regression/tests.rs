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

fn noise_run(seed: u64, config: RegressionConfig) -> Vec<Regression> {
    let mut rng = Rng(seed);
    let mut detector = RegressionDetector::with_config(config);
    let n = 7 * DAY + 60;
    for i in 0..n {
        let p = point(&mut rng, i, 1.0, 1.0);
        detector.record("GET /menu/daily", p);
    }
    detector.detect(START + n * 60)
}

#[test]
fn pure_noise_gives_at_most_one_percent_false_positives_over_1000_seeds() {
    let mut any = 0;
    // Significance alone (effect sizes off), to see that p < 0.01 means ~1%.
    let significance_only = RegressionConfig {
        latency_factor: 0.0,
        error_factor: 0.0,
        min_error_rate_increase: f64::NEG_INFINITY,
        ..RegressionConfig::default()
    };
    let (mut latency, mut errors) = (0, 0);
    for seed in 0..1000 {
        if !noise_run(seed, RegressionConfig::default()).is_empty() {
            any += 1;
        }
        for r in noise_run(seed, significance_only.clone()) {
            match r.metric {
                RegressionMetric::LatencyP95 => latency += 1,
                RegressionMetric::ErrorRate => errors += 1,
            }
        }
    }
    eprintln!(
        "false positives over 1000 seeds: {any} with defaults; \
         significance alone: latency {latency}, error rate {errors}"
    );
    assert!(any <= 10, "{any}");
    // The test itself is calibrated: near 1% each (binomial sd ≈ 0.3%).
    assert!(latency <= 20 && errors <= 20, "{latency} {errors}");
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
    detector.record_analytics(&analytics, START + 60);
    let history = detector.history();
    let points = &history.routes["GET /a"];
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
}
