//! The verdicts, Jepsen-style: each client operation ended `ok` (a 201),
//! `fail` (a definite refusal) or `info` (indeterminate: a 5xx, a timeout,
//! a broken connection), checked against what PostgreSQL holds.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    time::{Duration, Instant},
};

use reqwest::Client;

use crate::{
    cluster::{Instance, NAMES, PROXIED},
    faults::{Fault, FaultKind},
    load::{Kind, Outcome, Record},
    report::{latency_ms, percentile},
};

/// The database pool's acquire timeout in the API (5 s) and slack for a
/// loaded machine: a 5xx while PostgreSQL is down must come within this.
pub(crate) const FAST_5XX: f64 = 5.0 + 3.0;
/// Seconds from a dependency being back to each instance it touched being
/// ready again (`/health` 200): the pools' breaker probes at least every
/// 2 s, the cache's and the limiter's Redis clients reconnect sooner.
pub(crate) const RECOVER_WITHIN: f64 = 5.0;
/// The login quotas of the API (`HASIVU_RATE_LOGIN` and
/// `HASIVU_RATE_LOGIN_ACCOUNT`, both the report's `10/900`, burst 5).
const LOGIN_LIMIT: u32 = 10;
const LOGIN_WINDOW_SECS: f64 = 900.0;
const LOGIN_BURST: u32 = 5;

/// What PostgreSQL holds after the run.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Order id → (notes: the key of the operation that made it, status).
    pub(crate) orders: BTreeMap<i64, (Option<String>, String)>,
    /// Payment id → order id.
    pub(crate) payments: BTreeMap<i64, i64>,
    /// Menu item → (portions left, portions in order lines).
    pub(crate) portions: BTreeMap<i64, (i64, i64)>,
}

/// Connects to PostgreSQL (retrying: it was restarted during the run).
pub(crate) async fn connect(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach PostgreSQL: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub(crate) async fn snapshot(db: &tokio_postgres::Client) -> Snapshot {
    let orders = db
        .query("SELECT id, notes, status FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let payments = db
        .query("SELECT id, order_id FROM payments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let portions = db
        .query(
            "SELECT m.id, m.portions_left, COALESCE(SUM(oi.quantity), 0)::BIGINT
             FROM menu_items m LEFT JOIN order_items oi ON oi.menu_item_id = m.id
             GROUP BY m.id, m.portions_left",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Snapshot {
        orders,
        payments,
        portions,
    }
}

/// Failed promises, each with its evidence, and the report.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    pub(crate) failures: Vec<String>,
    pub(crate) report: String,
}

impl Verdicts {
    pub(crate) fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    pub(crate) fn line(&mut self, text: impl AsRef<str>) {
        self.report.push_str(text.as_ref());
        self.report.push('\n');
    }
}

/// The client operations of one kind, by key.
#[derive(Debug, Default)]
struct Op {
    /// Ids in 201 answers (one, however many replays).
    acked: BTreeSet<i64>,
    indeterminate: bool,
    /// The order a payment was for.
    order: Option<i64>,
    /// A 201 replay that did not say `Idempotent-Replayed: true`.
    unflagged_replays: u32,
}

fn operations(records: &[Record], kinds: impl Fn(Kind) -> bool) -> BTreeMap<&str, Op> {
    let mut ops: BTreeMap<&str, Op> = BTreeMap::new();
    for r in records.iter().filter(|r| kinds(r.kind)) {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        let op = ops.entry(key).or_default();
        op.order = op
            .order
            .or(if r.kind.is_payment() { r.order } else { None });
        if r.status() == Some(201) {
            let id = if r.kind.is_payment() {
                r.payment
            } else {
                r.order
            };
            if let Some(id) = id {
                if !op.acked.is_empty() && !r.replayed {
                    op.unflagged_replays += 1;
                }
                op.acked.insert(id);
            }
        }
        op.indeterminate |= r.is_indeterminate();
    }
    ops
}

/// (a) Every order answered 201 is in the database exactly once; no order
/// exists that no client saw answered, unless its operation was
/// indeterminate (then it is "recovered", Jepsen's word).
pub(crate) fn orders(v: &mut Verdicts, records: &[Record], db: &Snapshot) {
    let ops = operations(records, Kind::is_order);
    let mut by_key: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut unknown = Vec::new();
    for (id, (notes, _)) in &db.orders {
        match notes.as_deref().filter(|k| ops.contains_key(k)) {
            Some(key) => by_key.entry(key).or_default().push(*id),
            None => unknown.push(*id),
        }
    }
    let (mut ok, mut fail, mut info) = (0, 0, 0);
    let (mut lost, mut duplicated, mut unexpected, mut recovered, mut absent) = (0, 0, 0, 0, 0);
    let mut unflagged = 0;
    let mut evidence = Vec::new();
    for (key, op) in &ops {
        let rows = by_key.get(key).map_or(&[][..], Vec::as_slice);
        unflagged += op.unflagged_replays;
        if rows.len() > 1 || op.acked.len() > 1 {
            duplicated += 1;
            evidence.push(format!(
                "order key {key}: answered ids {:?}, database rows {rows:?}",
                op.acked
            ));
        }
        if !op.acked.is_empty() {
            ok += 1;
            if !rows.iter().any(|id| op.acked.contains(id)) {
                lost += 1;
                evidence.push(format!(
                    "order key {key}: answered 201 with {:?}, database rows {rows:?}",
                    op.acked
                ));
            }
        } else if op.indeterminate {
            info += 1;
            if rows.is_empty() {
                absent += 1;
            } else {
                recovered += 1;
            }
        } else {
            fail += 1;
            if !rows.is_empty() {
                unexpected += 1;
                evidence.push(format!(
                    "order key {key}: refused every time, yet database rows {rows:?}"
                ));
            }
        }
    }
    unexpected += unknown.len();
    if !unknown.is_empty() {
        evidence.push(format!(
            "{} orders no client asked for, e.g. {:?}",
            unknown.len(),
            &unknown[..unknown.len().min(5)]
        ));
    }
    let replays = records
        .iter()
        .filter(|r| r.kind == Kind::OrderReplay && r.status() == Some(201))
        .count();
    v.line(format!(
        "orders       {} operations: ok {ok}, fail {fail}, info {info} | database: lost {lost}, \
         duplicated {duplicated}, unexpected {unexpected}, info found (recovered) {recovered}, \
         info absent {absent} | 201 replays {replays}, unflagged {unflagged}",
        ops.len()
    ));
    if lost + duplicated + unexpected > 0 || unflagged > 0 {
        v.fail(format!(
            "(a) orders: lost {lost}, duplicated {duplicated}, unexpected {unexpected}, \
             replays without Idempotent-Replayed {unflagged}: {}",
            evidence.join("; ")
        ));
    }
    if ok == 0 {
        v.fail("(a) orders: no order succeeded at all".to_owned());
    }
}

/// (b) No order is paid twice: at most one payment per order in the
/// database, one payment id per order across every key, idempotent
/// replays with the first payment, second keys refused.
pub(crate) fn payments(v: &mut Verdicts, records: &[Record], db: &Snapshot) {
    let ops = operations(records, |k| {
        matches!(
            k,
            Kind::Pay | Kind::PayRetry | Kind::PayReplay | Kind::PaySecondKey
        )
    });
    let mut per_order_answered: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    let mut known_orders = BTreeSet::new();
    let (mut ok, mut fail, mut info) = (0, 0, 0);
    let mut unflagged = 0;
    for op in ops.values() {
        unflagged += op.unflagged_replays;
        if let Some(order) = op.order {
            known_orders.insert(order);
            per_order_answered
                .entry(order)
                .or_default()
                .extend(op.acked.iter().copied());
        }
        if !op.acked.is_empty() {
            ok += 1;
        } else if op.indeterminate {
            info += 1;
        } else {
            fail += 1;
        }
    }
    let mut db_per_order: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (payment, order) in &db.payments {
        db_per_order.entry(*order).or_default().push(*payment);
    }
    let mut evidence = Vec::new();
    let twice_answered: Vec<_> = per_order_answered
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    let twice_db: Vec<_> = db_per_order
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    let mut lost = 0;
    for (order, ids) in &per_order_answered {
        for id in ids {
            if db.payments.get(id) != Some(order) {
                lost += 1;
                evidence.push(format!(
                    "payment {id} of order {order} answered 201, not in the database"
                ));
            }
        }
    }
    let unexpected: Vec<_> = db_per_order
        .keys()
        .filter(|order| !known_orders.contains(order))
        .collect();
    let status_mismatch: Vec<_> = db
        .orders
        .iter()
        .filter(|(id, (_, status))| (status == "paid") != db_per_order.contains_key(id))
        .map(|(id, (_, status))| format!("order {id} is {status}"))
        .collect();
    let second = |status: u16| {
        records
            .iter()
            .filter(|r| r.kind == Kind::PaySecondKey && r.status() == Some(status))
            .count()
    };
    let replays = records
        .iter()
        .filter(|r| r.kind == Kind::PayReplay && r.status() == Some(201))
        .count();
    v.line(format!(
        "payments     {} operations: ok {ok}, fail {fail}, info {info} | paid twice: answered {}, \
         database {} | lost {lost}, unexpected {}, order status mismatches {} | 201 replays {replays}, \
         unflagged {unflagged} | second keys: 409 {}, 201 {}",
        ops.len(),
        twice_answered.len(),
        twice_db.len(),
        unexpected.len(),
        status_mismatch.len(),
        second(409),
        second(201),
    ));
    if !twice_answered.is_empty()
        || !twice_db.is_empty()
        || lost > 0
        || !unexpected.is_empty()
        || !status_mismatch.is_empty()
        || unflagged > 0
        || second(201) > 0
    {
        v.fail(format!(
            "(b) payments: paid twice (answered) {twice_answered:?}, paid twice (database) \
             {twice_db:?}, lost {lost}, for unknown orders {unexpected:?}, status mismatches \
             {status_mismatch:?}, unflagged replays {unflagged}, second keys paid {}; {}",
            second(201),
            evidence.join("; ")
        ));
    }
}

/// Portions are conserved: every item's portions left plus the portions in
/// its order lines is what was seeded.
pub(crate) fn portions(v: &mut Verdicts, db: &Snapshot, seeded: u32) {
    let wrong: Vec<_> = db
        .portions
        .iter()
        .filter(|(_, (left, ordered))| left + ordered != i64::from(seeded))
        .collect();
    let ordered: i64 = db.portions.values().map(|(_, o)| o).sum();
    v.line(format!(
        "portions     {} items, {ordered} portions in order lines, conserved on all but {}",
        db.portions.len(),
        wrong.len()
    ));
    if !wrong.is_empty() {
        v.fail(format!(
            "portions: left + ordered != {seeded} for (item, (left, ordered)) {:?}",
            &wrong[..wrong.len().min(10)]
        ));
    }
}

/// The fault a request overlapped, if any (the first in the schedule).
pub(crate) fn fault_of<'a>(faults: &'a [Fault], r: &Record) -> Option<&'a Fault> {
    faults.iter().find(|f| f.overlaps(r.at, r.end()))
}

/// When each instance answered its first success that needed PostgreSQL
/// (an order or payment 201, a `/health` 200) after `fault` healed.
fn back_after(records: &[Record], fault: &Fault, instance: usize) -> Option<f64> {
    records
        .iter()
        .filter(|r| r.instance == instance && r.at >= fault.healed)
        .filter(|r| {
            (r.kind == Kind::Probe && r.status() == Some(200))
                || ((r.kind.is_order() || r.kind.is_payment()) && r.status() == Some(201))
        })
        .map(Record::end)
        .reduce(f64::min)
}

/// (c) No 5xx, timeout or broken connection on the API's routes, except
/// fast 503s (within [`FAST_5XX`]) while PostgreSQL was down for that
/// instance: from the stop until the instance's first success after the
/// restart (its pool's breaker waits for its next probe), at most
/// [`RECOVER_WITHIN`] after it. Readiness answers (`/health` 503) are
/// counted apart: they are the design.
pub(crate) fn errors(v: &mut Verdicts, records: &[Record], faults: &[Fault]) {
    let outages: Vec<(usize, f64, f64)> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::PostgresRestart)
        .flat_map(|f| {
            (0..NAMES.len()).map(move |i| {
                let back = back_after(records, f, i).unwrap_or(f.healed);
                (i, f.began, back.min(f.healed + RECOVER_WITHIN))
            })
        })
        .collect();
    let mut during_pg: BTreeMap<String, usize> = BTreeMap::new();
    let mut after_heal = 0;
    let mut slow = Vec::new();
    let mut unexpected = Vec::new();
    for r in records.iter().filter(|r| !r.kind.is_health()) {
        if !r.is_indeterminate() {
            continue;
        }
        let outage = outages
            .iter()
            .find(|(i, from, to)| *i == r.instance && r.at <= *to && r.end() >= *from);
        match outage {
            Some(_) => {
                *during_pg.entry(outcome_name(&r.outcome)).or_default() += 1;
                if faults.iter().any(|f| {
                    f.kind == FaultKind::PostgresRestart
                        && r.at > f.healed
                        && r.at <= f.healed + 60.0
                }) {
                    after_heal += 1;
                }
                if r.latency > FAST_5XX || r.status() != Some(503) {
                    slow.push(describe(r, faults));
                }
            }
            None => unexpected.push(describe(r, faults)),
        }
    }
    v.line(format!(
        "5xx          while postgres was down for the instance: {} ({}; sent after the restart, \
         before the instance's first success: {after_heal}; not 503 or slower than {FAST_5XX:.0} s: {}) | \
         elsewhere: {}",
        during_pg.values().sum::<usize>(),
        join_counts(&during_pg),
        slow.len(),
        unexpected.len()
    ));
    if !unexpected.is_empty() || !slow.is_empty() {
        v.fail(format!(
            "(c) {} 5xx/timeouts outside the postgres outage, {} during it not a fast 503: {}",
            unexpected.len(),
            slow.len(),
            unexpected
                .iter()
                .chain(&slow)
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    // What the instance whose Redis stalled answered meanwhile.
    for fault in faults
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::Stall | FaultKind::HalfOpen))
    {
        let during: Vec<&Record> = records
            .iter()
            .filter(|r| r.instance == PROXIED && fault.overlaps(r.at, r.end()))
            .collect();
        let mut by: BTreeMap<(Kind, String), usize> = BTreeMap::new();
        for r in &during {
            *by.entry((r.kind, outcome_name(&r.outcome))).or_default() += 1;
        }
        let mut latencies: Vec<f64> = during
            .iter()
            .filter(|r| !r.kind.is_health())
            .map(|r| r.latency)
            .collect();
        let answered = by
            .iter()
            .map(|((k, o), n)| format!("{} {o} ×{n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        v.line(format!(
            "{:<12} instance {} answered {} requests (API p50 {} ms, p99 {} ms): {answered}",
            fault.kind.name(),
            NAMES[PROXIED],
            during.len(),
            latency_ms(percentile(&mut latencies, 0.50)),
            latency_ms(percentile(&mut latencies, 0.99)),
        ));
    }
}

pub(crate) fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Status(s) => s.to_string(),
        Outcome::Timeout => "timeout".to_owned(),
        Outcome::Error => "error".to_owned(),
    }
}

fn join_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One request, for evidence: when (relative to the nearest fault), where,
/// what, how it ended.
pub(crate) fn describe(r: &Record, faults: &[Fault]) -> String {
    let when = faults
        .iter()
        .rfind(|f| f.began <= r.at + 0.001)
        .map_or(format!("t={:.1}s", r.at), |f| {
            format!("t={:.1}s ({} +{:.1}s)", r.at, f.kind.name(), r.at - f.began)
        });
    let who = if r.vu == u32::MAX {
        String::new()
    } else {
        format!("user {} ", r.vu)
    };
    format!(
        "{when} {who}{} via {} {} in {:.0} ms key={} {}",
        r.kind.name(),
        NAMES[r.instance],
        outcome_name(&r.outcome),
        r.latency * 1000.0,
        r.key.as_deref().unwrap_or("-"),
        r.detail.replace('\n', " ")
    )
}

/// (d) The login quotas held: logins admitted (any answer but 429) for
/// one account from one address, across the three instances, within the
/// bound the rate limiter documents.
pub(crate) fn quota(v: &mut Verdicts, records: &[Record], faults: &[Fault], secs: f64) {
    let hammer: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Hammer).collect();
    let admitted = hammer
        .iter()
        .filter(|r| r.status().is_some_and(|s| s != 429))
        .count() as u32;
    let maybe = hammer.iter().filter(|r| r.status().is_none()).count() as u32;
    let restarts = faults
        .iter()
        .filter(|f| f.kind == FaultKind::RedisRestart)
        .count() as u32;
    // Redis keeps the quota for every instance, one sliding-window counter:
    // at most 2 × limit in any window (a burst at the end of one fixed
    // window, then the next); a run shorter than the window touches at most
    // two. Redis runs without persistence, so each restart starts counting
    // again. While Redis is away (or an instance's connection stalls) each
    // instance's local GCRA fallback admits its burst plus the rate over
    // the run.
    let epochs = 1 + restarts;
    let instances = NAMES.len() as u32;
    let per_local = LOGIN_BURST + (secs * f64::from(LOGIN_LIMIT) / LOGIN_WINDOW_SECS).ceil() as u32;
    let bound = epochs * 2 * LOGIN_LIMIT + instances * per_local;
    let ideal = epochs * LOGIN_LIMIT;
    v.line(format!(
        "quota        login {}/{} s burst {}: {} attempts, admitted {admitted} (+{maybe} without an \
         answer), bound {bound} = {epochs} Redis epochs × 2 × {} + {instances} instances × local \
         fallback {per_local}; one shared quota without faults would admit {ideal}",
        LOGIN_LIMIT,
        LOGIN_WINDOW_SECS,
        LOGIN_BURST,
        hammer.len(),
        LOGIN_LIMIT,
    ));
    if admitted + maybe > bound {
        v.fail(format!(
            "(d) login quota: {admitted} admitted (+{maybe} unanswered) > bound {bound}"
        ));
    }
    if admitted == 0 {
        v.fail("(d) login quota: the hammering client never logged in".to_owned());
    }
}

/// (f) Recovery: from each heal to the first `/health` 200 of each
/// instance (the probes), and to its first order answered 201; every
/// instance the fault touched is ready again within [`RECOVER_WITHIN`].
pub(crate) fn recovery(v: &mut Verdicts, records: &[Record], faults: &[Fault], load_secs: f64) {
    v.line(
        "recovery     seconds from the dependency being back to the first success, per instance",
    );
    v.line(format!(
        "             {:<20} {:>16} {:>16} {:>16}",
        "fault", "a health|order", "b health|order", "c health|order"
    ));
    for fault in faults {
        let until = (fault.healed + RECOVER_WITHIN).min(load_secs);
        let mut cells = Vec::new();
        for (instance, name) in NAMES.iter().enumerate() {
            let first = |pick: &dyn Fn(&Record) -> bool| {
                records
                    .iter()
                    .filter(|r| r.instance == instance && r.at >= fault.healed && pick(r))
                    .map(Record::end)
                    .fold(None, |min: Option<f64>, e| {
                        Some(min.map_or(e, |m| m.min(e)))
                    })
                    .map(|end| end - fault.healed)
            };
            let health = first(&|r| r.kind == Kind::Probe && r.status() == Some(200));
            let order = first(&|r| {
                matches!(r.kind, Kind::Order | Kind::OrderRetry) && r.status() == Some(201)
            });
            let show = |x: Option<f64>| x.map_or("-".to_owned(), |s| format!("{s:.2}"));
            cells.push(format!("{:>7}|{:<8}", show(health), show(order)));
            let affected = fault.kind.instances().contains(&instance);
            match health {
                Some(s) if fault.healed + s <= until => {}
                _ if affected => v.fail(format!(
                    "(f) instance {name} not ready again within {RECOVER_WITHIN:.0} s of the heal \
                     of {} at {:.1} s (first /health 200 after {})",
                    fault.kind.name(),
                    fault.healed,
                    health.map_or("never".to_owned(), |s| format!("{s:.1} s"))
                )),
                _ => {}
            }
        }
        v.line(format!(
            "             {:<20} {}",
            fault.kind.name(),
            cells.join(" ")
        ));
    }
}

/// Waits until every instance answers `/health` 200 (the settle period),
/// at most `within`; an instance that does not is a failure.
pub(crate) async fn settle(v: &mut Verdicts, instances: &[Instance], within: Duration) -> Duration {
    let started = Instant::now();
    let http = Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let checks = instances.iter().map(|instance| {
        let http = &http;
        async move {
            loop {
                let last = match http.get(instance.url("/health")).send().await {
                    Ok(r) if r.status() == 200 => return Ok(()),
                    Ok(r) => format!("status {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > within {
                    return Err(format!(
                        "instance {} not healthy {within:?} after the load: {last}",
                        instance.name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    for result in futures_util::future::join_all(checks).await {
        if let Err(e) = result {
            v.fail(format!("(f) {e}"));
        }
    }
    started.elapsed()
}

/// ERROR and WARN lines of each instance's log, the most frequent messages.
pub(crate) fn logs(v: &mut Verdicts, instances: &[Instance]) {
    for instance in instances {
        let text = std::fs::read_to_string(&instance.log).unwrap_or_default();
        let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        for line in text.lines() {
            for level in ["ERROR", "WARN"] {
                if let Some(at) = line.find(&format!(" {level} ")) {
                    let message: String = line[at + level.len() + 2..].chars().take(110).collect();
                    *counts.entry(level).or_default().entry(message).or_default() += 1;
                }
            }
        }
        let mut summary = String::new();
        for (level, messages) in &counts {
            let total: usize = messages.values().sum();
            let mut top: Vec<_> = messages.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            let _ = write!(summary, " {level} ×{total} (");
            for (message, n) in top.iter().take(3) {
                let _ = write!(summary, "×{n} {message}; ");
            }
            summary.push(')');
        }
        v.line(format!(
            "log {}        {}:{}",
            instance.name,
            instance.log.file_name().unwrap_or_default().display(),
            if summary.is_empty() {
                " clean"
            } else {
                &summary
            }
        ));
    }
}
