//! hasivu-pool vs deadpool and bb8: uncontended get + release, and a
//! contended run (256 tasks, 8 connections, 1 ms hold, 5 s) reporting
//! throughput, acquisitions per task and p99 wait.
//!
//! Run with `cargo bench -p hasivu-benches --bench pool`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use criterion::Criterion;
use hasivu_benches::{Row, criterion, criterion_dir, print_report};

/// A connection that costs nothing: the pools' own overhead is measured.
struct Noop;

impl hasivu_pool::Manager for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn validate(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
}

impl deadpool::managed::Manager for Noop {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

impl bb8::ManageConnection for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

const SIZE: usize = 8;

struct Pools {
    ours: hasivu_pool::Pool<Noop>,
    deadpool: deadpool::managed::Pool<Noop>,
    bb8: bb8::Pool<Noop>,
}

fn pools(runtime: &tokio::runtime::Runtime) -> Pools {
    runtime.block_on(async {
        Pools {
            ours: hasivu_pool::Pool::builder(Noop)
                .config(
                    hasivu_pool::PoolConfig::default()
                        .max_size(SIZE)
                        .min_idle(0),
                )
                .build(),
            deadpool: deadpool::managed::Pool::builder(Noop)
                .max_size(SIZE)
                .build()
                .unwrap(),
            bb8: bb8::Pool::builder()
                .max_size(u32::try_from(SIZE).unwrap())
                .build(Noop)
                .await
                .unwrap(),
        }
    })
}

fn uncontended(c: &mut Criterion, rows: &mut Vec<Row>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pools = pools(&runtime);
    let mut group = c.benchmark_group("pool-get-release");
    group.bench_function("hasivu", |b| {
        b.iter(|| runtime.block_on(async { *pools.ours.get().await.unwrap() }))
    });
    group.bench_function("deadpool", |b| {
        b.iter(|| runtime.block_on(async { *pools.deadpool.get().await.unwrap() }))
    });
    group.bench_function("bb8", |b| {
        b.iter(|| runtime.block_on(async { *pools.bb8.get().await.unwrap() }))
    });
    group.finish();
    for theirs in ["deadpool", "bb8"] {
        rows.push(Row {
            group: "pool-get-release".into(),
            ours: "hasivu".into(),
            theirs: theirs.into(),
            note: "uncontended `get` of an idle connection and its release, no-op manager, through `Runtime::block_on`; hasivu with its defaults (leak tracking on, validation after 500 ms idle)".into(),
        });
    }
}

/// 256 tasks share 8 connections for 5 s, each holding one for 1 ms.
fn contended() -> String {
    const TASKS: usize = 256;
    const RUN: Duration = Duration::from_secs(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pools = Arc::new(pools(&runtime));
    let mut lines = vec![
        "| pool | acquisitions/s | per task min / median / max | tasks served at most once | p99 wait |".to_owned(),
        "| --- | ---: | ---: | ---: | ---: |".to_owned(),
    ];
    for which in ["hasivu", "deadpool", "bb8"] {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let counts = runtime.block_on(async {
            let deadline = Instant::now() + RUN;
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let pools = Arc::clone(&pools);
                    let waits = Arc::clone(&waits);
                    tokio::spawn(async move {
                        let mut count = 0usize;
                        let mut mine = Vec::new();
                        while Instant::now() < deadline {
                            let started = Instant::now();
                            let remaining = deadline.saturating_duration_since(started);
                            let got = match which {
                                "hasivu" => {
                                    tokio::time::timeout(remaining, async {
                                        let c = pools.ours.get().await;
                                        let waited = started.elapsed();
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                        c.is_ok().then_some(waited)
                                    })
                                    .await
                                }
                                "deadpool" => {
                                    tokio::time::timeout(remaining, async {
                                        let c = pools.deadpool.get().await;
                                        let waited = started.elapsed();
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                        c.is_ok().then_some(waited)
                                    })
                                    .await
                                }
                                _ => {
                                    tokio::time::timeout(remaining, async {
                                        let c = pools.bb8.get().await;
                                        let waited = started.elapsed();
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                        c.is_ok().then_some(waited)
                                    })
                                    .await
                                }
                            };
                            match got {
                                Ok(Some(waited)) => {
                                    count += 1;
                                    mine.push(waited);
                                }
                                // Still waiting when the run ended: that
                                // wait counts too.
                                _ => mine.push(started.elapsed()),
                            }
                        }
                        waits.lock().unwrap().extend(mine);
                        count
                    })
                })
                .collect();
            let mut counts = Vec::new();
            for task in tasks {
                counts.push(task.await.unwrap());
            }
            counts
        });
        let mut counts = counts;
        counts.sort_unstable();
        let total: usize = counts.iter().sum();
        let mut waits = std::mem::take(&mut *waits.lock().unwrap());
        waits.sort_unstable();
        let p99 = waits
            .get(waits.len() * 99 / 100)
            .copied()
            .unwrap_or_default();
        lines.push(format!(
            "| {which} | {:.0} | {} / {} / {} | {} of {TASKS} | {:.1} ms |",
            total as f64 / RUN.as_secs_f64(),
            counts[0],
            counts[TASKS / 2],
            counts[TASKS - 1],
            counts.iter().filter(|c| **c <= 1).count(),
            p99.as_secs_f64() * 1000.0,
        ));
    }
    format!(
        "Contended: {TASKS} tasks, {SIZE} connections, 1 ms hold, {} s, 2 worker threads\n\n{}",
        RUN.as_secs(),
        lines.join("\n")
    )
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    uncontended(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "hasivu-pool (speed ratio = anchor time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
    println!("\n{}", contended());
}
