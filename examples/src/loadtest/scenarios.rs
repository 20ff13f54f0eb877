//! The goose scenarios: what each simulated client does.
//!
//! Every goose user is one client: it sends its own `X-Forwarded-For`
//! (`10.<scenario>.<hi>.<lo>`, from its index), and, where the scenario
//! needs a token, logs in once as its own demo user (cycling through the
//! seeded ones). The login is a transaction of its own, so its latency
//! (the password hash, by design) is reported apart. A 429 from the limiter
//! is marked a success in goose's metrics and counted in [`Shared`] instead;
//! so is the 409 of an order whose item sold out.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use goose::{
    goose::{GooseResponse, TransactionError},
    prelude::*,
};
use serde_json::{Value, json};

use crate::api::db::seed::{DEMO_ACCOUNTS, DEMO_PASSWORD};

/// The request names (goose keys them as `METHOD name`).
pub(crate) const LOGIN: &str = "/auth/login";
const MENU: &str = "/menu/daily";
const ORDER: &str = "/orders/create";
const ORDER_TO_PAY: &str = "/orders/create (to pay)";
const PAYMENT: &str = "/payments/create";
const HEALTH: &str = "/health";

/// The transaction name of the login, reported apart.
const LOGIN_TRANSACTION: &str = "login";

/// What the users of one run share: settings and the 429 counters.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Seeded users to cycle through (`HASIVU_USERS` of the API).
    demo_users: u32,
    /// The second octet of the forwarded addresses, one per scenario.
    network: u8,
    /// The first demo user of this scenario (0-based), so that scenarios use
    /// distinct users and do not inherit each other's quotas.
    first_user: u32,
    /// Makes idempotency keys unique across runs against the same API.
    nonce: u64,
    next_key: AtomicU64,
    rate_limited: Mutex<BTreeMap<String, u64>>,
    sold_out: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub(crate) fn new(demo_users: u32, network: u8, first_user: u32) -> Arc<Self> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Arc::new(Self {
            demo_users: demo_users.max(1),
            network,
            first_user,
            nonce,
            next_key: AtomicU64::new(0),
            rate_limited: Mutex::new(BTreeMap::new()),
            sold_out: Mutex::new(BTreeMap::new()),
        })
    }

    /// 429 answers per request key (`POST /payments/create`).
    pub(crate) fn rate_limited(&self) -> BTreeMap<String, u64> {
        self.rate_limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// 409 answers to orders (the item sold out) per request key.
    pub(crate) fn sold_out(&self) -> BTreeMap<String, u64> {
        self.sold_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    fn idempotency_key(&self, user: usize) -> String {
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        format!("lt-{:x}-{user}-{n}", self.nonce)
    }

    /// The forwarded address of goose user `index`.
    fn address(&self, index: usize) -> String {
        let n = index as u32 + 1;
        Ipv4Addr::new(10, self.network, (n >> 8) as u8, n as u8).to_string()
    }

    /// The demo account of goose user `index`.
    fn email(&self, index: usize) -> String {
        let id = ((self.first_user + index as u32) % self.demo_users) as usize + 1;
        match DEMO_ACCOUNTS.get(id - 1) {
            Some((email, _, _)) => (*email).to_owned(),
            None => format!("user{id}@hasivu.example"),
        }
    }
}

/// Per-user state.
#[derive(Clone, Debug, Default)]
struct Session {
    token: Option<String>,
    items: Vec<i64>,
}

type Result = std::result::Result<(), Box<TransactionError>>;

/// Wraps an `async fn(&mut GooseUser, Arc<Shared>)` into a transaction.
macro_rules! with_shared {
    ($shared:expr, $f:ident) => {{
        let shared = Arc::clone(&$shared);
        Transaction::new(Arc::new(move |user| {
            let shared = Arc::clone(&shared);
            Box::pin(async move { $f(user, shared).await })
        }))
    }};
}

/// How a request is sent.
struct Call<'a> {
    method: GooseMethod,
    path: &'a str,
    name: &'a str,
    body: Option<Value>,
    idempotent: bool,
}

/// Sends one request as this user; a 429 is counted apart and marked a
/// success. Returns the status (0 without an answer) and the JSON body
/// of a 2xx answer when `read` is set.
async fn send(
    user: &mut GooseUser,
    shared: &Shared,
    call: Call<'_>,
    read: bool,
) -> std::result::Result<(u16, Option<Value>), Box<TransactionError>> {
    let index = user.weighted_users_index;
    let token = user
        .get_session_data::<Session>()
        .and_then(|s| s.token.clone());
    let mut builder = user
        .get_request_builder(&call.method, call.path)?
        .header("x-forwarded-for", shared.address(index));
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = &call.body {
        builder = builder.json(body);
    }
    if call.idempotent {
        builder = builder.header("idempotency-key", shared.idempotency_key(index));
    }
    let request = GooseRequest::builder()
        .method(call.method)
        .path(call.path)
        .name(call.name)
        .set_request_builder(builder)
        .build();
    let GooseResponse {
        mut request,
        response,
    } = user.request(request).await?;
    let status = request.status_code;
    let key = || format!("{} {}", request.raw.method_label(), request.name);
    // The limiter's 429, and the 409 of an order whose item sold out (the
    // seeded portions run out under load): right answers, counted apart.
    let apart = match status {
        429 => Some(&shared.rate_limited),
        409 if call.path == ORDER => Some(&shared.sold_out),
        _ => None,
    };
    if let Some(map) = apart {
        Shared::count(map, key());
        user.set_success(&mut request)?;
        return Ok((status, None));
    }
    let body = match response {
        Ok(response) if read && response.status().is_success() => {
            response.json::<Value>().await.ok()
        }
        _ => None,
    };
    Ok((status, body))
}

/// Logs in as this user's demo account; keeps the token.
async fn login(user: &mut GooseUser, shared: Arc<Shared>) -> Result {
    let email = shared.email(user.weighted_users_index);
    let call = Call {
        method: GooseMethod::Post,
        path: LOGIN,
        name: LOGIN,
        body: Some(json!({ "email": email, "password": DEMO_PASSWORD })),
        idempotent: false,
    };
    let (_, body) = send(user, &shared, call, true).await?;
    let token = body.and_then(|b| b["token"].as_str().map(str::to_owned));
    let mut session = user
        .get_session_data::<Session>()
        .cloned()
        .unwrap_or_default();
    session.token = token;
    user.set_session_data(session);
    Ok(())
}

/// Logs in again when the first login was refused (a 429, say).
async fn ensure_login(user: &mut GooseUser, shared: &Arc<Shared>) -> Result {
    let has_token = user
        .get_session_data::<Session>()
        .is_some_and(|s| s.token.is_some());
    if has_token {
        Ok(())
    } else {
        login(user, Arc::clone(shared)).await
    }
}

/// `GET /menu/daily` of the user's school; remembers the item ids.
async fn fetch_menu(user: &mut GooseUser, shared: &Shared, name: &str) -> Result {
    let call = Call {
        method: GooseMethod::Get,
        path: MENU,
        name,
        body: None,
        idempotent: false,
    };
    let (_, body) = send(user, shared, call, true).await?;
    let items: Vec<i64> = body
        .as_ref()
        .and_then(|b| b["items"].as_array())
        .map(|items| items.iter().filter_map(|i| i["id"].as_i64()).collect())
        .unwrap_or_default();
    if !items.is_empty() {
        let mut session = user
            .get_session_data::<Session>()
            .cloned()
            .unwrap_or_default();
        session.items = items;
        user.set_session_data(session);
    }
    Ok(())
}

async fn menu(user: &mut GooseUser, shared: Arc<Shared>) -> Result {
    ensure_login(user, &shared).await?;
    fetch_menu(user, &shared, MENU).await
}

/// A random item of the user's menu, fetching it first if needed.
async fn some_item(
    user: &mut GooseUser,
    shared: &Shared,
) -> std::result::Result<Option<i64>, Box<TransactionError>> {
    let known = |user: &GooseUser| {
        user.get_session_data::<Session>()
            .filter(|s| !s.items.is_empty())
            .map(|s| s.items[fastrand::usize(..s.items.len())])
    };
    if let Some(item) = known(user) {
        return Ok(Some(item));
    }
    fetch_menu(user, shared, MENU).await?;
    Ok(known(user))
}

/// Creates an order of one random item; returns its id when created.
async fn create_order(
    user: &mut GooseUser,
    shared: &Shared,
    name: &str,
) -> std::result::Result<Option<i64>, Box<TransactionError>> {
    let Some(item) = some_item(user, shared).await? else {
        return Ok(None);
    };
    let call = Call {
        method: GooseMethod::Post,
        path: ORDER,
        name,
        body: Some(json!({
            "items": [{ "menu_item_id": item, "quantity": 1 }],
            "notes": "load test",
        })),
        idempotent: true,
    };
    let (_, body) = send(user, shared, call, true).await?;
    Ok(body.and_then(|b| b["order_id"].as_i64()))
}

async fn order(user: &mut GooseUser, shared: Arc<Shared>) -> Result {
    ensure_login(user, &shared).await?;
    create_order(user, &shared, ORDER).await.map(drop)
}

/// An order to pay (named apart), then its payment.
async fn pay(user: &mut GooseUser, shared: Arc<Shared>) -> Result {
    ensure_login(user, &shared).await?;
    let Some(order_id) = create_order(user, &shared, ORDER_TO_PAY).await? else {
        return Ok(());
    };
    let call = Call {
        method: GooseMethod::Post,
        path: PAYMENT,
        name: PAYMENT,
        body: Some(json!({ "order_id": order_id, "method": "upi" })),
        idempotent: true,
    };
    send(user, &shared, call, false).await.map(drop)
}

async fn health(user: &mut GooseUser, shared: Arc<Shared>) -> Result {
    let call = Call {
        method: GooseMethod::Get,
        path: HEALTH,
        name: HEALTH,
        body: None,
        idempotent: false,
    };
    send(user, &shared, call, false).await.map(drop)
}

fn login_transaction(shared: &Arc<Shared>) -> Transaction {
    with_shared!(shared, login)
        .set_name(LOGIN_TRANSACTION)
        .set_on_start()
}

/// normal_load: log in once, then the menu (weight 3) and orders (weight 1).
pub(crate) fn normal_load(name: &str, shared: &Arc<Shared>) -> Scenario {
    Scenario::new(name)
        .register_transaction(login_transaction(shared))
        .register_transaction(
            with_shared!(shared, menu)
                .set_name("menu")
                .set_weight(3)
                .expect("non-zero weight"),
        )
        .register_transaction(with_shared!(shared, order).set_name("order"))
}

/// peak_load: log in once, then pay orders (each created just before).
pub(crate) fn peak_load(name: &str, shared: &Arc<Shared>) -> Scenario {
    Scenario::new(name)
        .register_transaction(login_transaction(shared))
        .register_transaction(with_shared!(shared, pay).set_name("order and payment"))
}

/// stress_test: `/health`, anonymous.
pub(crate) fn stress_test(name: &str, shared: &Arc<Shared>) -> Scenario {
    Scenario::new(name).register_transaction(with_shared!(shared, health).set_name("health"))
}
