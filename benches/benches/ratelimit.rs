//! hasivu-ratelimit vs governor: the local keyed check (policy, tier and
//! load lookup included) over 10 000 keys, and the bytes a key costs.
//!
//! Run with `cargo bench -p hasivu-benches --bench ratelimit`; the ratio
//! table is printed at the end.

use std::{num::NonZeroU32, time::Duration};

use criterion::Criterion;
use hasivu_benches::{Row, criterion, criterion_dir, print_report};
use hasivu_ratelimit::{
    Hysteresis, Limiter, LoadControl, LocalStore, Policies, Policy, Quota, Request, StoreKey, Tiers,
};

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
        .collect()
}

fn local_check(c: &mut Criterion, rows: &mut Vec<Row>) {
    let keys = keys();
    // A quota no benchmark run exhausts, so both sides take the admit path.
    let per_second = 1_000_000_000;
    let control = LoadControl::with(|| 0.2, Hysteresis::default(), Duration::from_secs(1));
    control.update();
    let ours = Limiter::builder()
        .policies(Policies::new(Policy::new(
            "general",
            Quota::per_second(per_second),
        )))
        .tiers(Tiers::report_defaults())
        .load(control)
        .build();
    let theirs: governor::DefaultKeyedRateLimiter<String> = governor::RateLimiter::keyed(
        governor::Quota::per_second(NonZeroU32::new(per_second).unwrap()),
    );
    let mut group = c.benchmark_group("ratelimit-local-check-10k-keys");
    let mut i = 0usize;
    group.bench_function("hasivu", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let decision = ours
                .check_request_now(Request {
                    method: "GET",
                    path: "/menu/daily",
                    key: &keys[i],
                    tier: Some("premium"),
                    cost: 1,
                })
                .unwrap();
            decision.verdict.allowed
        })
    });
    let mut i = 0usize;
    group.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            theirs.check_key(&keys[i]).is_ok()
        })
    });
    group.finish();
    rows.push(Row {
        group: "ratelimit-local-check-10k-keys".into(),
        ours: "hasivu".into(),
        theirs: "governor".into(),
        note: "hasivu = `Limiter::check_request_now` (route policy, tier multiplier, load factor, GCRA in a sharded map); governor = `DefaultKeyedRateLimiter<String>::check_key`"
            .into(),
    });
}

/// Resident memory growth for one million keys, in bytes per key.
fn bytes_per_key() -> String {
    fn rss() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
    const N: u32 = 1_000_000;
    let quota = Quota::per_hour(100);
    let before = rss();
    let store = LocalStore::builder().max_keys(N as usize).build();
    for i in 0..N {
        let key = i.to_string();
        store.check_now(
            StoreKey {
                policy: "general",
                key: &key,
            },
            &quota,
            1,
        );
    }
    let ours = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
    let held = store.len();
    drop(store);
    let before = rss();
    let theirs: governor::DefaultKeyedRateLimiter<String> =
        governor::RateLimiter::keyed(governor::Quota::per_hour(NonZeroU32::new(100).unwrap()));
    for i in 0..N {
        let _ = theirs.check_key(&i.to_string());
    }
    let governor = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
    let per_key = |bytes: Option<u64>, keys: usize| {
        bytes.map_or("–".to_owned(), |b| {
            format!("{:.0}", b as f64 / keys as f64)
        })
    };
    let report = format!(
        "Memory for {N} keys (RSS growth): hasivu LocalStore {} B per key ({held} keys held), governor {} B per key (String keys kept)",
        per_key(ours, held),
        per_key(governor, N as usize),
    );
    drop(theirs);
    report
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    local_check(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "hasivu-ratelimit (speed ratio = anchor time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
    println!("\n{}", bytes_per_key());
}
