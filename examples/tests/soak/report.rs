//! The figures: requests by kind, statuses, latency per phase, and when the
//! 5xx came relative to the faults.

use std::collections::BTreeMap;

use crate::{
    cluster::NAMES,
    faults::Fault,
    load::{Kind, Record},
    verdict::{fault_of, outcome_name},
};

/// The `p` quantile (0–1) of `values`, sorted in place; `None` when empty.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

pub(crate) fn latency_ms(secs: Option<f64>) -> String {
    secs.map_or("-".to_owned(), |s| format!("{:.1}", s * 1000.0))
}

/// Requests by kind: answers by class, and latency.
pub(crate) fn by_kind(records: &[Record]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>7} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}\n",
        "request", "total", "2xx", "4xx", "5xx", "t/o+err", "p50 ms", "p99 ms", "max ms"
    );
    for kind in Kind::ALL {
        let of: Vec<&Record> = records.iter().filter(|r| r.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let class = |lo: u16, hi: u16| {
            of.iter()
                .filter(|r| r.status().is_some_and(|s| (lo..hi).contains(&s)))
                .count()
        };
        let broken = of.iter().filter(|r| r.status().is_none()).count();
        let mut latencies: Vec<f64> = of.iter().map(|r| r.latency).collect();
        out.push_str(&format!(
            "{:<16} {:>7} {:>7} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}\n",
            kind.name(),
            of.len(),
            class(200, 300),
            class(400, 500),
            class(500, 600),
            broken,
            latency_ms(percentile(&mut latencies, 0.50)),
            latency_ms(percentile(&mut latencies, 0.99)),
            latency_ms(percentile(&mut latencies, 1.0)),
        ));
    }
    out
}

/// Every status (and timeout, error) with its count, per kind.
pub(crate) fn statuses(records: &[Record]) -> String {
    let mut by: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
    for r in records {
        *by.entry(r.kind)
            .or_default()
            .entry(outcome_name(&r.outcome))
            .or_default() += 1;
    }
    by.iter()
        .map(|(kind, counts)| {
            let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
            format!("{:<16} {}\n", kind.name(), counts.join(", "))
        })
        .collect()
}

/// Latency of the API's requests (not the probes) per phase: steady, or
/// overlapping a fault.
pub(crate) fn phases(records: &[Record], faults: &[Fault]) -> String {
    let mut by: BTreeMap<(usize, &str), Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind != Kind::Probe) {
        let phase = match faults.iter().position(|f| f.overlaps(r.at, r.end())) {
            Some(n) => (n + 1, faults[n].kind.name()),
            None => (0, "steady"),
        };
        by.entry(phase).or_default().push(r);
    }
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7}\n",
        "phase", "requests", "req/s", "p50 ms", "p99 ms", "5xx", "t/o+err"
    );
    for ((n, name), of) in &by {
        let span = if *n == 0 {
            None
        } else {
            let f = &faults[n - 1];
            Some(f.healed - f.began)
        };
        let mut latencies: Vec<f64> = of.iter().map(|r| r.latency).collect();
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7}\n",
            name,
            of.len(),
            span.map_or("-".to_owned(), |s| format!(
                "{:.0}",
                of.len() as f64 / s.max(0.1)
            )),
            latency_ms(percentile(&mut latencies, 0.50)),
            latency_ms(percentile(&mut latencies, 0.99)),
            of.iter()
                .filter(|r| r.status().is_some_and(|s| s >= 500))
                .count(),
            of.iter().filter(|r| r.status().is_none()).count(),
        ));
    }
    out
}

/// 5xx, timeouts and errors grouped by instance, request and outcome, with
/// their first and last time relative to the fault they overlapped.
pub(crate) fn error_timing(records: &[Record], faults: &[Fault]) -> String {
    let mut by: BTreeMap<(usize, Kind, String), Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_indeterminate()) {
        by.entry((r.instance, r.kind, outcome_name(&r.outcome)))
            .or_default()
            .push(r);
    }
    if by.is_empty() {
        return "none\n".to_owned();
    }
    let mut out = String::new();
    for ((instance, kind, outcome), of) in &by {
        let first = of[0];
        let last = of[of.len() - 1];
        let when = |r: &Record| match fault_of(faults, r) {
            Some(f) => format!("{} {:+.1} s", f.kind.name(), r.at - f.began),
            None => format!("t={:.1} s (no fault)", r.at),
        };
        let max = of.iter().map(|r| r.latency).fold(0.0, f64::max);
        out.push_str(&format!(
            "{} {:<16} {:<8} ×{:<5} first {}, last {}, slowest {:.0} ms\n",
            NAMES[*instance],
            kind.name(),
            outcome,
            of.len(),
            when(first),
            when(last),
            max * 1000.0
        ));
    }
    out
}

/// Every record as CSV, for whoever reads a failure.
pub(crate) fn write_records(path: &std::path::Path, records: &[Record]) {
    let mut out = String::from(
        "at_s,latency_ms,instance,kind,vu,outcome,key,order,payment,replayed,detail\n",
    );
    for r in records {
        out.push_str(&format!(
            "{:.3},{:.1},{},{},{},{},{},{},{},{},\"{}\"\n",
            r.at,
            r.latency * 1000.0,
            NAMES[r.instance],
            r.kind.name(),
            if r.vu == u32::MAX {
                String::new()
            } else {
                r.vu.to_string()
            },
            outcome_name(&r.outcome),
            r.key.as_deref().unwrap_or(""),
            r.order.map_or(String::new(), |o| o.to_string()),
            r.payment.map_or(String::new(), |p| p.to_string()),
            r.replayed,
            r.detail.replace('"', "'").replace('\n', " "),
        ));
    }
    std::fs::write(path, out).unwrap();
}
