//! The fault schedule: Redis and PostgreSQL restarted, the proxied
//! instance's Redis connection stalled (and made half-open), each at a
//! stated time, with when it began and when it healed.

use crate::{
    cluster::{PROXIED, Servers},
    load::Clock,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// `redis-server` stopped and started again (without persistence: its
    /// data is gone).
    RedisRestart,
    /// PostgreSQL stopped (fast shutdown: sessions terminated) and started
    /// again on the same data.
    PostgresRestart,
    /// The proxied instance's Redis connections hold every byte.
    Stall,
    /// The proxied instance's open Redis connections drop every byte, for
    /// good; new ones work once healed.
    HalfOpen,
}

impl FaultKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::RedisRestart => "redis restart",
            FaultKind::PostgresRestart => "postgres restart",
            FaultKind::Stall => "stall c->redis",
            FaultKind::HalfOpen => "half-open c->redis",
        }
    }

    /// The instances it touches.
    pub(crate) fn instances(self) -> Vec<usize> {
        match self {
            FaultKind::RedisRestart | FaultKind::PostgresRestart => vec![0, 1, 2],
            FaultKind::Stall | FaultKind::HalfOpen => vec![PROXIED],
        }
    }
}

/// One planned fault: at `at` seconds into the load, for `hold` seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    pub(crate) kind: FaultKind,
    pub(crate) at: f64,
    pub(crate) hold: f64,
}

/// The plan for `secs` of load: the short run's 36 s stretched to `secs`,
/// with at least 5 s after each heal before the next fault (recovery is
/// judged there).
pub(crate) fn schedule(secs: f64, half_open: bool) -> Vec<Step> {
    let u = secs / 36.0;
    let mut steps = vec![
        Step {
            kind: FaultKind::RedisRestart,
            at: 5.0 * u,
            hold: 3.0 * u,
        },
        Step {
            kind: FaultKind::PostgresRestart,
            at: 13.0 * u,
            hold: 3.0 * u,
        },
        Step {
            kind: FaultKind::Stall,
            at: 21.0 * u,
            hold: 3.0 * u,
        },
    ];
    if half_open {
        steps.push(Step {
            kind: FaultKind::HalfOpen,
            at: 29.0 * u,
            hold: 2.0 * u,
        });
    }
    steps
}

/// A fault as it happened, in seconds since the load started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    /// The injection began (e.g. `stop()` called).
    pub(crate) began: f64,
    /// It was in force (e.g. `stop()` returned).
    pub(crate) down: f64,
    /// The heal began (e.g. `start_again()` called).
    pub(crate) heal: f64,
    /// The dependency was back (e.g. `start_again()` returned: accepting
    /// connections).
    pub(crate) healed: f64,
}

impl Fault {
    /// Whether a request from `at` to `end` overlapped the fault.
    pub(crate) fn overlaps(&self, at: f64, end: f64) -> bool {
        at <= self.healed && end >= self.began
    }
}

/// Runs the schedule against the servers; hands them back (they must
/// outlive the verdicts) with what happened.
pub(crate) async fn run(
    mut servers: Servers,
    steps: Vec<Step>,
    clock: Clock,
) -> (Servers, Vec<Fault>) {
    let mut faults = Vec::new();
    for step in steps {
        tokio::time::sleep_until(clock.at(step.at).into()).await;
        let began = clock.now();
        // Stopping and starting servers blocks (it waits for the process).
        tokio::task::block_in_place(|| match step.kind {
            FaultKind::RedisRestart => servers.redis.stop(),
            FaultKind::PostgresRestart => servers.postgres.stop(),
            FaultKind::Stall => servers.proxy.stall(),
            FaultKind::HalfOpen => servers.proxy.half_open(),
        });
        let down = clock.now();
        tokio::time::sleep_until(clock.at(step.at + step.hold).into()).await;
        let heal = clock.now();
        tokio::task::block_in_place(|| match step.kind {
            FaultKind::RedisRestart => servers.redis.start_again(),
            FaultKind::PostgresRestart => servers.postgres.start_again(),
            FaultKind::Stall | FaultKind::HalfOpen => servers.proxy.heal(),
        });
        let healed = clock.now();
        eprintln!(
            "soak: {} at {began:.1}-{down:.1} s, healed at {heal:.1}-{healed:.1} s",
            step.kind.name()
        );
        faults.push(Fault {
            kind: step.kind,
            began,
            down,
            heal,
            healed,
        });
    }
    (servers, faults)
}

/// The plan as text, for the report.
pub(crate) fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| format!("{} at {:.0} s for {:.0} s", s.kind.name(), s.at, s.hold))
        .collect::<Vec<_>>()
        .join(", ")
}
