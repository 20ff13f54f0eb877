//! The dashboard in a real browser: headless Chromium (Debian package
//! `chromium`) opens `/dashboard`, the page polls `/dashboard/data` and
//! draws its charts; the test reads the DOM the scripts left and keeps a
//! screenshot (`<target>/tmp/dashboard.png`).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{client, config, login, start};

/// `HASIVU_CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("HASIVU_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs headless Chromium and found none on PATH; install it with \
         `apt-get install -y chromium` (scripts/test does), or point HASIVU_CHROMIUM at a \
         Chromium or Chrome binary"
    );
}

/// Runs the browser on `url` with `args` and returns its standard output;
/// a browser that runs over a minute is killed and fails the test.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            // The test may run as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Timers run on virtual time (the page polls every 2 s), paused
        // while a fetch is pending: 9 s of page time, a second or two of ours.
        .arg("--virtual-time-budget=9000")
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} ran for over a minute", browser.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        browser.display(),
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `<svg id="…">…</svg>` element of the DOM.
fn svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the page"));
    let end = start + dom[start..].find("</svg>").expect("an svg that ends");
    &dom[start..end]
}

fn attribute(element: &str, name: &str) -> u64 {
    let key = format!("{name}=\"");
    let start = element
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + key.len();
    let end = start + element[start..].find('"').unwrap();
    element[start..end].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_its_charts_in_headless_chromium() {
    let browser = chromium();
    let app = start(config()).await;
    let http = client();
    let token = login(&http, &app, "parent@hasivu.example").await;
    for _ in 0..20 {
        for path in ["/menu/daily", "/users/2", "/health"] {
            let response = http
                .get(app.url(path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{path}");
        }
    }

    let profile = tempfile::tempdir().unwrap();
    let url = app.url("/dashboard");
    let dom = tokio::task::spawn_blocking({
        let (browser, profile, url) = (browser.clone(), profile.path().to_owned(), url.clone());
        move || browse(&browser, &profile, &["--dump-dom"], &url)
    })
    .await
    .unwrap();

    assert!(dom.contains("<span class=\"ok\">ready</span>"), "{dom}");
    let polls = dom
        .find("data-polls=\"")
        .map(|i| attribute(&dom[i..], "data-polls"))
        .unwrap_or(0);
    assert!(polls >= 3, "the page polled /dashboard/data {polls} times");
    for chart in ["rate", "p95", "errors", "hits"] {
        let element = svg(&dom, chart);
        assert!(attribute(element, "data-series") >= 1, "{chart}: {element}");
        assert!(
            attribute(element, "data-points") >= polls,
            "{chart}: {element}"
        );
        // Lines, not single points: a move and at least one line segment.
        assert!(
            element.contains("<path") && element.contains(" d=\"M") && element.contains('L'),
            "{chart} has no line: {element}"
        );
    }
    let rate = svg(&dom, "rate");
    for route in ["GET /menu/daily", "GET /users/{id}", "GET /health"] {
        assert!(
            rate.contains(&format!("data-route=\"{route}\"")),
            "{route} not charted: {rate}"
        );
    }
    assert!(dom.contains("pool database/sqlite"), "pool status shown");
    assert!(dom.contains("none firing"), "alerts and regressions shown");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    tokio::task::spawn_blocking({
        let (profile, screenshot) = (profile.path().to_owned(), screenshot.clone());
        move || {
            browse(
                &browser,
                &profile,
                &[
                    "--window-size=1280,1000",
                    &format!("--screenshot={}", screenshot.display()),
                ],
                &url,
            )
        }
    })
    .await
    .unwrap();
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("dashboard screenshot: {}", screenshot.display());
    app.stop().await;
}
