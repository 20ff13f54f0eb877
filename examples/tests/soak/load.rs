//! The load: virtual users following the report's mix, a client hammering
//! one account's login, and health probes; every request recorded.

use std::{
    error::Error as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, RequestBuilder, header::HeaderMap};
use serde_json::{Value, json};

/// How long a client waits for a whole answer before it calls the
/// request timed out (indeterminate).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one order or payment (the first and the retries with the
/// same `Idempotency-Key`) after answers that may or may not have committed.
const ATTEMPTS: u32 = 4;
/// The password of every demo account.
const PASSWORD: &str = "hasivu-demo";

/// Seconds since the load started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) t0: Instant,
}

impl Clock {
    pub(crate) fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub(crate) fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs.max(0.0))
    }
}

/// What a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Login,
    Menu,
    /// An order's first attempt.
    Order,
    /// The same key again after an indeterminate answer.
    OrderRetry,
    /// The same key again after a 201, as a client that lost the answer would.
    OrderReplay,
    Pay,
    PayRetry,
    PayReplay,
    /// A second payment of a paid order under a new key (must be refused).
    PaySecondKey,
    Health,
    /// One client hammering one account's login.
    Hammer,
    /// `/health` of one instance, directly, every 200 ms.
    Probe,
}

impl Kind {
    pub(crate) const ALL: [Kind; 12] = [
        Kind::Login,
        Kind::Menu,
        Kind::Order,
        Kind::OrderRetry,
        Kind::OrderReplay,
        Kind::Pay,
        Kind::PayRetry,
        Kind::PayReplay,
        Kind::PaySecondKey,
        Kind::Health,
        Kind::Hammer,
        Kind::Probe,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Menu => "menu",
            Kind::Order => "order",
            Kind::OrderRetry => "order retry",
            Kind::OrderReplay => "order replay",
            Kind::Pay => "payment",
            Kind::PayRetry => "payment retry",
            Kind::PayReplay => "payment replay",
            Kind::PaySecondKey => "payment 2nd key",
            Kind::Health => "health",
            Kind::Hammer => "login hammer",
            Kind::Probe => "health probe",
        }
    }

    pub(crate) fn is_order(self) -> bool {
        matches!(self, Kind::Order | Kind::OrderRetry | Kind::OrderReplay)
    }

    pub(crate) fn is_payment(self) -> bool {
        matches!(
            self,
            Kind::Pay | Kind::PayRetry | Kind::PayReplay | Kind::PaySecondKey
        )
    }

    /// Readiness checks: a 503 there is the answer, not a failure.
    pub(crate) fn is_health(self) -> bool {
        matches!(self, Kind::Health | Kind::Probe)
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Status(u16),
    /// No whole answer within [`REQUEST_TIMEOUT`].
    Timeout,
    /// The connection failed or broke.
    Error,
}

/// One request, as the client saw it.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) kind: Kind,
    /// The virtual user (`u32::MAX` for the hammer and the probes).
    pub(crate) vu: u32,
    pub(crate) instance: usize,
    /// When it was sent, in seconds since the load started.
    pub(crate) at: f64,
    /// Seconds until the whole answer (or the failure).
    pub(crate) latency: f64,
    pub(crate) outcome: Outcome,
    /// The `Idempotency-Key` of orders and payments.
    pub(crate) key: Option<String>,
    /// The order of an order's 201, or the order a payment was for.
    pub(crate) order: Option<i64>,
    /// The payment of a payment's 201.
    pub(crate) payment: Option<i64>,
    /// `Idempotent-Replayed: true`.
    pub(crate) replayed: bool,
    /// The error, or the start of a 5xx body.
    pub(crate) detail: String,
}

impl Record {
    pub(crate) fn end(&self) -> f64 {
        self.at + self.latency
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Status(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        self.status().is_some_and(|s| (200..300).contains(&s))
    }

    /// A 5xx, a timeout or a broken connection: the request may or may
    /// not have taken effect.
    pub(crate) fn is_indeterminate(&self) -> bool {
        !matches!(self.outcome, Outcome::Status(s) if s < 500)
    }
}

/// What every client of the run shares.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) bases: Vec<String>,
    next: AtomicUsize,
    pub(crate) clock: Clock,
    /// No new operation starts after this.
    pub(crate) end: Instant,
    /// Makes idempotency keys unique to the run.
    pub(crate) run: String,
}

impl Load {
    pub(crate) fn new(bases: Vec<String>, clock: Clock, secs: f64, run: String) -> Arc<Self> {
        Arc::new(Self {
            bases,
            next: AtomicUsize::new(0),
            clock,
            end: clock.at(secs),
            run,
        })
    }

    /// The front: requests go round-robin over the instances, whoever sends them.
    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len()
    }

    fn url(&self, instance: usize, path: &str) -> String {
        format!("{}{path}", self.bases[instance])
    }

    fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// Sends one request and records it; the parsed body of an answer.
    async fn send(
        &self,
        kind: Kind,
        vu: u32,
        instance: usize,
        request: RequestBuilder,
        key: Option<&str>,
    ) -> (Record, Option<Value>) {
        let at = self.clock.now();
        let started = Instant::now();
        let mut record = Record {
            kind,
            vu,
            instance,
            at,
            latency: 0.0,
            outcome: Outcome::Error,
            key: key.map(str::to_owned),
            order: None,
            payment: None,
            replayed: false,
            detail: String::new(),
        };
        let mut body = None;
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                record.replayed = replayed(response.headers());
                match response.bytes().await {
                    Ok(bytes) => {
                        record.outcome = Outcome::Status(status);
                        if status >= 500 {
                            let end = bytes.len().min(600);
                            record.detail = String::from_utf8_lossy(&bytes[..end]).into_owned();
                        }
                        body = serde_json::from_slice::<Value>(&bytes).ok();
                    }
                    Err(e) => failed(&mut record, &e),
                }
            }
            Err(e) => failed(&mut record, &e),
        }
        record.latency = started.elapsed().as_secs_f64();
        if let Some(body) = &body
            && record.is_success()
        {
            record.order = body["order_id"].as_i64();
            record.payment = body["payment_id"].as_i64();
        }
        (record, body)
    }
}

fn replayed(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true")
}

fn failed(record: &mut Record, error: &reqwest::Error) {
    record.outcome = if error.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Error
    };
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    record.detail = detail;
}

/// A client as one user's device: its own connections, its own address.
fn client(address: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", address.parse().unwrap());
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) hasivu-soak")
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The address of virtual user `vu` (or of another client by its number).
fn address(network: u8, n: u32) -> String {
    format!("10.{network}.{}.{}", (n >> 8) & 0xff, n & 0xff)
}

/// One virtual user: logs in once, then loops over the report's mix
/// (menu, order, payment, health) until the end, retrying orders and
/// payments with the same key after indeterminate answers and replaying
/// some on purpose.
pub(crate) async fn user(
    load: Arc<Load>,
    vu: u32,
    email: String,
    seed: u64,
) -> (Vec<Record>, Option<Session>) {
    let mut records = Vec::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let http = client(&address(77, vu));
    let login = json!({ "email": email, "password": PASSWORD });
    let session = loop {
        if !load.running() {
            return (records, None);
        }
        let i = load.pick();
        let request = http.post(load.url(i, "/auth/login")).json(&login);
        let (record, body) = load.send(Kind::Login, vu, i, request, None).await;
        let ok = record.status() == Some(200);
        records.push(record);
        let token = body.as_ref().and_then(|b| b["token"].as_str());
        let school = body.as_ref().and_then(|b| b["user"]["school_id"].as_i64());
        match (token, school) {
            (Some(token), Some(school)) if ok => {
                break Session {
                    token: token.to_owned(),
                    school,
                };
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let token = session.token.clone();
    let mut items: Vec<i64> = Vec::new();
    let mut n = 0u32;
    while load.running() {
        n += 1;
        let i = load.pick();
        let request = http.get(load.url(i, "/menu/daily")).bearer_auth(&token);
        let (record, body) = load.send(Kind::Menu, vu, i, request, None).await;
        let ok = record.is_success();
        records.push(record);
        if ok && let Some(list) = body.as_ref().and_then(|b| b["items"].as_array()) {
            items = list.iter().filter_map(|item| item["id"].as_i64()).collect();
        }
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let key = format!("{}-v{vu}-o{n}", load.run);
        let lines: Vec<Value> = (0..rng.usize(1..=2))
            .map(|_| json!({ "menu_item_id": items[rng.usize(..items.len())], "quantity": rng.i64(1..=3) }))
            .collect();
        // The key in the notes too: the database tells which operation made each order.
        let order = json!({ "items": lines, "notes": key });
        let ordered = operation(
            &load,
            &http,
            &mut records,
            &token,
            Op::order(&key, &order),
            vu,
        )
        .await;
        if let Some(order_id) = ordered {
            if rng.f32() < 0.2 {
                let i = load.pick();
                let request = post(&http, &load, i, "/orders/create", &token, &key, &order);
                let (record, _) = load
                    .send(Kind::OrderReplay, vu, i, request, Some(&key))
                    .await;
                records.push(record);
            }
            if rng.f32() < 0.6 {
                let pay_key = format!("{}-v{vu}-p{n}", load.run);
                let method = if rng.bool() { "card" } else { "upi" };
                let payment = json!({ "order_id": order_id, "method": method });
                let paid = operation(
                    &load,
                    &http,
                    &mut records,
                    &token,
                    Op::payment(&pay_key, &payment, order_id),
                    vu,
                )
                .await;
                if paid.is_some() && rng.f32() < 0.25 {
                    let i = load.pick();
                    let request = post(
                        &http,
                        &load,
                        i,
                        "/payments/create",
                        &token,
                        &pay_key,
                        &payment,
                    );
                    let (mut record, _) = load
                        .send(Kind::PayReplay, vu, i, request, Some(&pay_key))
                        .await;
                    record.order = Some(order_id);
                    records.push(record);
                }
                if paid.is_some() && rng.f32() < 0.15 {
                    let second = format!("{pay_key}-again");
                    let i = load.pick();
                    let request = post(
                        &http,
                        &load,
                        i,
                        "/payments/create",
                        &token,
                        &second,
                        &payment,
                    );
                    let (mut record, _) = load
                        .send(Kind::PaySecondKey, vu, i, request, Some(&second))
                        .await;
                    record.order = Some(order_id);
                    records.push(record);
                }
            }
        }
        if rng.bool() {
            let i = load.pick();
            let request = http.get(load.url(i, "/health"));
            let (record, _) = load.send(Kind::Health, vu, i, request, None).await;
            records.push(record);
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..80))).await;
    }
    (records, Some(session))
}

/// A virtual user's token and school.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) school: i64,
}

/// An order or a payment: its route, key, body and record kinds.
struct Op<'a> {
    path: &'static str,
    key: &'a str,
    body: &'a Value,
    first: Kind,
    retry: Kind,
    /// The order a payment is for.
    order: Option<i64>,
}

impl<'a> Op<'a> {
    fn order(key: &'a str, body: &'a Value) -> Self {
        Self {
            path: "/orders/create",
            key,
            body,
            first: Kind::Order,
            retry: Kind::OrderRetry,
            order: None,
        }
    }

    fn payment(key: &'a str, body: &'a Value, order: i64) -> Self {
        Self {
            path: "/payments/create",
            key,
            body,
            first: Kind::Pay,
            retry: Kind::PayRetry,
            order: Some(order),
        }
    }
}

/// Sends `op` until a definite answer: a 201 (the order's or payment's
/// id), a 4xx (none), or [`ATTEMPTS`] indeterminate answers (none), each
/// retry with the same key and body, as clients do after a timeout.
async fn operation(
    load: &Load,
    http: &Client,
    records: &mut Vec<Record>,
    token: &str,
    op: Op<'_>,
    vu: u32,
) -> Option<i64> {
    for attempt in 0..ATTEMPTS {
        let kind = if attempt == 0 { op.first } else { op.retry };
        let i = load.pick();
        let request = post(http, load, i, op.path, token, op.key, op.body);
        let (mut record, _) = load.send(kind, vu, i, request, Some(op.key)).await;
        if op.order.is_some() {
            record.order = op.order;
        }
        let status = record.status();
        let id = if op.order.is_some() {
            record.payment
        } else {
            record.order
        };
        records.push(record);
        match status {
            Some(201) => return id,
            Some(s) if s < 500 => return None,
            _ => {
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt + 1))).await;
            }
        }
    }
    None
}

fn post(
    http: &Client,
    load: &Load,
    instance: usize,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> RequestBuilder {
    http.post(load.url(instance, path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
}

/// One client logging in as one account every 100 ms, through the front:
/// what the login quotas let through across the three instances.
pub(crate) async fn hammer(load: Arc<Load>, email: String) -> Vec<Record> {
    let mut records = Vec::new();
    let http = client(&address(78, 1));
    let login = json!({ "email": email, "password": PASSWORD });
    while load.running() {
        let i = load.pick();
        let request = http.post(load.url(i, "/auth/login")).json(&login);
        let (record, _) = load.send(Kind::Hammer, u32::MAX, i, request, None).await;
        records.push(record);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    records
}

/// `/health` of one instance every 200 ms, directly: when each one is
/// ready again after a fault.
pub(crate) async fn probe(load: Arc<Load>, instance: usize) -> Vec<Record> {
    let mut records = Vec::new();
    let http = client(&address(79, instance as u32));
    while load.running() {
        let request = http
            .get(load.url(instance, "/health/details"))
            .timeout(Duration::from_secs(3));
        let (record, _) = load
            .send(Kind::Probe, u32::MAX, instance, request, None)
            .await;
        records.push(record);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    records
}
