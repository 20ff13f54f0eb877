//! Benchmarks of the hasivu crates.
//!
//! Each bench target in this crate runs a hasivu crate and the alternative a
//! user would otherwise pick (tower-http, governor, moka, deadpool, bb8, the
//! `metrics` exporter) in the same criterion run and prints the ratio, so
//! that figures measured on one machine can be compared. It is not
//! published.
//!
//! This library holds what the bench targets share: the corpus, a tiny
//! executor for futures that complete without I/O, and the ratio report.

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use criterion::Criterion;

pub mod corpus;

/// Runs a future that needs no I/O or timers to completion on this thread.
///
/// # Panics
///
/// When the future would have to wait: benches measure ready work only.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("the benchmarked future did not complete without waiting");
}

/// Where criterion keeps its results for this target directory.
pub fn criterion_dir(target_tmpdir: &str) -> PathBuf {
    Path::new(target_tmpdir).parent().map_or_else(
        || PathBuf::from("target/criterion"),
        |p| p.join("criterion"),
    )
}

/// A criterion configured for this machine class: short warm-up, a few
/// seconds per benchmark, results under [`criterion_dir`].
pub fn criterion(target_tmpdir: &str) -> Criterion {
    Criterion::default()
        .output_directory(&criterion_dir(target_tmpdir))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .configure_from_args()
}

/// The median of one benchmark in nanoseconds, read from criterion's
/// `estimates.json`.
pub fn median_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

/// One line of a side-by-side report.
#[derive(Debug, Clone)]
pub struct Row {
    /// The criterion group both benchmarks are in.
    pub group: String,
    /// Our function id in the group.
    pub ours: String,
    /// The anchor's function id in the group.
    pub theirs: String,
    /// Extra columns (such as output sizes), already formatted.
    pub note: String,
}

/// Prints medians and the speed ratio (anchor time / our time, so above 1
/// means faster than the anchor) for each row, as a Markdown table.
pub fn print_report(title: &str, dir: &Path, rows: &[Row]) {
    println!("\n## {title}\n");
    println!("| case | hasivu median | anchor median | speed ratio | notes |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for row in rows {
        let ours = median_ns(dir, &row.group, &row.ours);
        let theirs = median_ns(dir, &row.group, &row.theirs);
        let ratio = match (ours, theirs) {
            (Some(o), Some(t)) if o > 0.0 => format!("{:.2}×", t / o),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.group,
            ours.map_or("–".to_owned(), format_ns),
            theirs.map_or("–".to_owned(), format_ns),
            ratio,
            row.note
        );
    }
}

/// Nanoseconds as a short human figure.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
