use std::time::Duration;

use super::*;

#[tokio::test]
async fn a_sample_has_plausible_process_figures() {
    // Burn a little CPU so the CPU time is visibly above zero.
    // (CPU time is counted in 10 ms ticks.)
    let started = std::time::Instant::now();
    let mut x = 0u64;
    while started.elapsed() < Duration::from_millis(50) {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
    }
    std::hint::black_box(x);
    let monitor = SystemMonitor::new().gauges(false);
    let status = monitor.sample().await;
    assert!(status.cpus >= 1);
    assert!(status.uptime_secs >= 0.0 && status.uptime_secs < 86_400.0 * 365.0);
    assert!(status.timestamp_ms > 1_600_000_000_000);
    if cfg!(target_os = "linux") {
        let rss = status.rss_bytes.expect("VmRSS");
        assert!((1 << 20..1 << 40).contains(&rss), "rss {rss}");
        let fds = status.open_fds.expect("fd count");
        assert!((3..100_000).contains(&fds), "fds {fds}");
        assert!(status.threads.expect("threads") >= 1);
        assert!(status.cpu_seconds.expect("cpu time") > 0.0);
        let load = status.load_average.expect("loadavg");
        assert!(load.iter().all(|l| (0.0..10_000.0).contains(l)));
        let total = status.memory_total_bytes.expect("MemTotal");
        let available = status.memory_available_bytes.expect("MemAvailable");
        assert!(available <= total && total > rss);
        // The utilisation of the first sample averages since the start.
        let utilization = status.cpu_utilization.expect("utilisation");
        assert!((0.0..=status.cpus as f64 * 1.5).contains(&utilization));
    }
}

#[tokio::test]
async fn open_files_are_counted() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let monitor = SystemMonitor::new().gauges(false);
    let before = monitor.sample().await.open_fds.unwrap();
    let files: Vec<std::fs::File> = (0..20)
        .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
        .collect();
    let during = monitor.sample().await.open_fds.unwrap();
    drop(files);
    // Other tests of this binary may open files meanwhile: at least ours.
    assert!(during >= before + 20, "{before} → {during}");
}

#[tokio::test(start_paused = true)]
async fn the_background_task_samples_every_interval_with_providers() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let mut handle = SystemMonitor::new()
        .gauges(false)
        .interval(Duration::from_secs(5))
        .provider("pool", move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            vec![
                ("size".to_owned(), 10.0),
                ("waiting".to_owned(), f64::from(n)),
            ]
        })
        .async_provider("redis", || async {
            tokio::task::yield_now().await;
            vec![("memory.used".to_owned(), 2048.0)]
        })
        .spawn();
    let first = handle.next().await;
    assert_eq!(first.providers["pool"]["size"], 10.0);
    assert_eq!(first.providers["pool"]["waiting"], 0.0);
    assert_eq!(first.providers["redis"]["memory.used"], 2048.0);
    let second = handle.next().await;
    assert_eq!(second.providers["pool"]["waiting"], 1.0);
    assert_eq!(handle.status(), second);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    handle.stop();
}

#[test]
fn the_status_serializes_for_a_dashboard() {
    let status = SystemStatus {
        rss_bytes: Some(1024),
        load_average: Some([0.5, 0.25, 0.125]),
        ..SystemStatus::default()
    };
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["rss_bytes"], 1024);
    assert_eq!(json["load_average"][2], 0.125);
    assert!(json["open_fds"].is_null());
    let back: SystemStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);
}
