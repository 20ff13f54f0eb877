//! Building the API: stores, pools, cache, warmup, the layer stack, and
//! serving with graceful shutdown.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    routing::{get, post},
};
use hasivu_cache::{Cache, CacheLayer, EntryOptions, InvalidationRules, RoutePolicy};
use hasivu_compress::{
    Coding, CompressionLayer, FieldSelectionLayer, RequestDecompressionLayer, negotiate_headers,
};
use hasivu_metrics::{
    AlertManager, MetricsLayer, MonitorHandle, PerformanceAnalytics, RegressionDetector,
    SystemMonitor,
    alerts::{Inputs, LogSink, Rule},
};
use hasivu_pool::{Pool, PoolConfig, PoolManager, PostgresManager, RedisManager, SqliteManager};
use hasivu_ratelimit::{
    AnyStore, Limiter, LocalStore, Policies, Policy, Quota, RedisStore, Tiers, WhenFull,
    http::{ClientIpKey, RateLimitLayer, UserOrIp},
    shield::{AnyBlocklist, LocalBlocklist, RedisBlocklist, ShieldLayer, Strikes},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::Digest;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::api::{
    alert_history::AlertHistory,
    auth::{AuthLayer, Tokens, bearer},
    config::Config,
    db::{
        Db, DbError, MenuItem, PaymentMethod, School,
        seed::{self, SeedData},
        today, weekday,
    },
    history::HistoryPlace,
    layers::ApiRoutes,
    routes::{self, auth::Logins},
};

/// A failure at start.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Today's menus of every school, as cached under `menu:daily:current`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DailyMenus {
    /// Day number (days since the Unix epoch).
    pub day: i64,
    /// Per school: id and items.
    pub schools: Vec<(i64, Vec<MenuItem>)>,
}

/// Everything handlers share; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// The database.
    pub db: Db,
    /// The Redis pool (with `REDIS_URL`).
    pub redis: Option<Pool<RedisManager>>,
    /// Every pool, for status and draining.
    pub pools: PoolManager,
    /// The cache (L1, and L2 with Redis).
    pub cache: Cache,
    /// Token signer.
    pub tokens: Tokens,
    /// The login quotas and the bounded password verifier.
    pub logins: Logins,
    /// Rolling per-route statistics.
    pub analytics: PerformanceAnalytics,
    /// System samples.
    pub monitor: Arc<MonitorHandle>,
    /// Prometheus exporter.
    pub prometheus: PrometheusHandle,
    /// The report's alert rules (logged when they fire and resolve).
    pub alerts: AlertManager,
    /// Regressions of each route against its own history.
    pub regressions: Arc<std::sync::Mutex<RegressionDetector>>,
    /// Where the regression history is kept across restarts.
    pub history: HistoryPlace,
    /// Every fire and resolve of the alert rules, newest first.
    pub alert_history: AlertHistory,
    /// Set once warm.
    pub ready: Arc<AtomicBool>,
    /// When the state was built.
    pub started: Instant,
}

/// The process-wide Prometheus recorder, installed once (the `metrics`
/// facade has one global recorder), with its upkeep on a thread of its own
/// so it outlives any runtime.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http.server.request.duration".into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
                )
                .and_then(|b| b.set_buckets(&[0.005, 0.025, 0.1, 0.5, 2.5, 10.0]))
                .expect("non-empty buckets")
                .idle_timeout(metrics_util::MetricKindMask::ALL, Some(Duration::from_secs(600)));
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Another recorder is installed: render our own, unregistered.
                    tracing::warn!(%error, "metrics recorder already installed; /metrics shows only this exporter's series");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("prometheus-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the upkeep thread");
            handle
        })
        .clone()
}

/// A `(limit, seconds)` setting as a quota.
pub fn quota((limit, secs): (u32, u64)) -> Quota {
    Quota::new(limit, Duration::from_secs(secs.max(1)))
}

/// The report's policies with the configured quotas: general, and
/// stricter ones for login (burst 5) and payments (burst 10). Login and
/// payments are strict: a full in-process store refuses a new client
/// rather than forget one that is counting.
pub fn policies(config: &Config) -> Policies {
    let login = quota(config.rate_login);
    let payments = quota(config.rate_payments);
    Policies::new(Policy::new("general", quota(config.rate_general)))
        .route(
            Some("POST"),
            "/auth/login",
            Policy::new(
                "login",
                login
                    .burst(5.min(login.limit()))
                    .when_full(WhenFull::Refuse),
            ),
        )
        .route(
            Some("POST"),
            "/payments/*",
            Policy::new(
                "payments",
                payments
                    .burst(10.min(payments.limit()))
                    .when_full(WhenFull::Refuse),
            ),
        )
}

impl AppState {
    /// Connects, migrates, seeds and warms up; see the crate docs.
    ///
    /// # Errors
    ///
    /// A store that cannot be built or a database that cannot be migrated.
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let started = Instant::now();
        // A bad secret refuses the start before anything is touched.
        let tokens = Tokens::new(config.token_secret.as_deref(), config.token_ttl)?;
        let prometheus = prometheus();
        let pools = PoolManager::report_defaults()
            .kind(
                "database",
                PoolConfig::default()
                    .max_size(8)
                    .min_idle(2)
                    .acquire_timeout(Duration::from_secs(5))
                    // A restarted backend is noticed within 2 s, not the
                    // default 30 s of breaker backoff (a cheap probe).
                    .retry_max(Duration::from_secs(2)),
            )
            .kind(
                "redis",
                PoolConfig::default()
                    .max_size(4)
                    .min_idle(1)
                    .acquire_timeout(Duration::from_secs(2))
                    .retry_max(Duration::from_secs(2)),
            );
        let db = match &config.database_url {
            Some(url) => {
                Db::Postgres(pools.pool("database", "postgres", PostgresManager::from_url(url)?)?)
            }
            None => {
                let manager = match &config.sqlite_path {
                    Some(path) => SqliteManager::new(path),
                    None => SqliteManager::memory(&format!("hasivu-{}", next_id())),
                };
                Db::Sqlite(pools.pool("database", "sqlite", manager)?)
            }
        };
        // Demo accounts share a published password: only where wanted.
        let seed = config.seeds_demo().then(|| {
            let data = SeedData::generate(config.users, config.menu_items);
            match config.portions {
                Some(portions) => data.with_portions(portions),
                None => data,
            }
        });
        let seeded = db.migrate_and_seed(seed).await?;
        tracing::info!(database = db.kind(), seeded, "database ready");
        let persistent = config.database_url.is_some() || config.sqlite_path.is_some();
        seed::announce(db.kind(), config.seeds_demo(), seeded, persistent);

        let redis = match &config.redis_url {
            Some(url) => Some(pools.pool("redis", "main", RedisManager::new(url.as_str())?)?),
            None => None,
        };
        let mut cache = Cache::builder()
            .name("api")
            .rules(InvalidationRules::report_defaults());
        if let Some(url) = &config.redis_url {
            cache = cache
                .redis(url.clone())
                .key_prefix(config.redis_prefix.clone());
        }
        let cache = cache.build()?;
        let logins = Logins::from_config(&config)?;
        let analytics = PerformanceAnalytics::new();
        let monitor = {
            let pools = pools.clone();
            let cache = cache.clone();
            SystemMonitor::new()
                .provider("pools", move || {
                    pools
                        .status()
                        .into_iter()
                        .flat_map(|e| {
                            let name = format!("{}.{}", e.kind, e.key);
                            [
                                (format!("{name}.size"), e.status.size as f64),
                                (format!("{name}.in_use"), e.status.in_use as f64),
                                (format!("{name}.waiters"), e.status.waiters as f64),
                            ]
                        })
                        .collect()
                })
                .provider("cache", move || {
                    let s = cache.stats();
                    vec![
                        ("hits".to_owned(), (s.l1_hits + s.l2_hits) as f64),
                        ("misses".to_owned(), s.misses as f64),
                        ("hit_rate".to_owned(), s.hit_rate().unwrap_or(0.0)),
                    ]
                })
                .interval(Duration::from_secs(2))
                .spawn()
        };
        let alert_history = match &redis {
            Some(pool) => AlertHistory::redis(pool.clone(), &config.redis_prefix),
            None => AlertHistory::local(),
        };
        let alerts = AlertManager::builder()
            .rules(Rule::report_defaults())
            .sink(LogSink)
            .sink(alert_history.clone())
            .build()?;
        let history = HistoryPlace::from_config(&config)?;
        let mut regressions = RegressionDetector::new();
        regressions.set_version(env!("CARGO_PKG_VERSION"));
        match history.load().await {
            Ok(Some(saved)) => {
                regressions.restore(saved);
                tracing::info!(
                    place = history.describe(),
                    routes = regressions.routes().count(),
                    "regression history loaded"
                );
            }
            Ok(None) => tracing::info!(place = history.describe(), "no regression history yet"),
            // Principle 4: a store that is down costs the history, not the start.
            Err(error) => {
                tracing::warn!(place = history.describe(), %error, "regression history not loaded; starting empty")
            }
        }
        let state = Self {
            config: Arc::new(config),
            db,
            redis,
            pools,
            cache,
            tokens,
            logins,
            analytics,
            monitor: Arc::new(monitor),
            prometheus,
            alerts,
            regressions: Arc::new(std::sync::Mutex::new(regressions)),
            history,
            alert_history,
            ready: Arc::new(AtomicBool::new(false)),
            started,
        };
        state.watch();
        state
            .db
            .spawn_idempotency_purge(state.config.idempotency_ttl, Arc::downgrade(&state.monitor));
        state.warm().await;
        Ok(state)
    }

    /// Evaluates the alert rules every 15 s and records a regression
    /// interval every minute, on tasks that end with the state.
    fn watch(&self) {
        let weak = std::sync::Arc::downgrade(&self.monitor);
        let alerts = self.alerts.clone();
        let analytics = self.analytics.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(15));
            loop {
                ticks.tick().await;
                let Some(monitor) = weak.upgrade() else {
                    return;
                };
                let status = monitor.status();
                drop(monitor);
                alerts
                    .run(&Inputs::new().analytics(&analytics).system(&status))
                    .await;
            }
        });
        let weak = std::sync::Arc::downgrade(&self.regressions);
        let analytics = self.analytics.clone();
        let place = self.history.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(60));
            ticks.tick().await;
            for minute in 1u64.. {
                ticks.tick().await;
                let Some(detector) = weak.upgrade() else {
                    return;
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let history = {
                    let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
                    detector.record_analytics(&analytics, now);
                    detector.detect(now);
                    (minute % 5 == 0).then(|| detector.history())
                };
                drop(detector);
                if let Some(history) = history
                    && let Err(error) = place.save(history).await
                {
                    tracing::warn!(place = place.describe(), %error, "regression history not saved");
                }
            }
        });
    }

    /// Saves the regression history where [`history`](Self::history)
    /// says (at shutdown, and every 5 minutes); a failure is logged.
    pub async fn save_history(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let history = {
            let mut detector = self.regressions.lock().unwrap_or_else(|p| p.into_inner());
            // The minute in progress too, so a restart loses none.
            detector.flush_analytics(&self.analytics, now);
            detector.history()
        };
        let routes = history.routes.len();
        match self.history.save(history).await {
            Ok(()) => tracing::info!(
                place = self.history.describe(),
                routes,
                "regression history saved"
            ),
            Err(error) => {
                tracing::warn!(place = self.history.describe(), %error, "regression history not saved")
            }
        }
    }

    /// Report 5.1: the critical cache keys and the pools' minimum idle
    /// connections, before the API says it is ready.
    pub async fn warm(&self) {
        let options = EntryOptions::new(self.config.menu_ttl).fail_safe(Duration::from_secs(3600));
        let db = self.db.clone();
        self.cache
            .add_warmer("menu:daily:current", options.clone(), move || {
                let db = db.clone();
                async move { load_menus(&db).await }
            });
        let db = self.db.clone();
        self.cache
            .add_warmer("school:active:list", options.clone(), move || {
                let db = db.clone();
                async move { db.schools().await }
            });
        let db = self.db.clone();
        self.cache
            .add_warmer("payment:methods:default", options, move || {
                let db = db.clone();
                async move { db.payment_methods().await }
            });
        let redis_warm = async {
            if let Some(pool) = &self.redis {
                let n = pool.config().min_idle;
                drop(futures_util::future::join_all((0..n).map(|_| pool.get())).await);
            }
        };
        let (report, (), ()) = tokio::join!(self.cache.warm(), self.db.warm(), redis_warm);
        for (key, error) in &report.failed {
            tracing::warn!(key, %error, "warmup failed");
        }
        self.ready.store(report.is_ready(), Ordering::Release);
    }

    /// Whether warmup has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Today's menus, from the cache (loaded from the database on a miss).
    ///
    /// # Errors
    ///
    /// The database's error when nothing is cached.
    pub async fn menus(&self) -> Result<DailyMenus, hasivu_cache::Error> {
        let options = EntryOptions::new(self.config.menu_ttl).fail_safe(Duration::from_secs(3600));
        let db = self.db.clone();
        self.cache
            .get_or_load("menu:daily:current", &options, move || async move {
                load_menus(&db).await
            })
            .await
    }

    /// Active schools, from the cache.
    ///
    /// # Errors
    ///
    /// As [`menus`](Self::menus).
    pub async fn schools(&self) -> Result<Vec<School>, hasivu_cache::Error> {
        let options = EntryOptions::new(Duration::from_secs(600));
        let db = self.db.clone();
        self.cache
            .get_or_load("school:active:list", &options, move || async move {
                db.schools().await
            })
            .await
    }

    /// Payment methods, from the cache.
    ///
    /// # Errors
    ///
    /// As [`menus`](Self::menus).
    pub async fn payment_methods(&self) -> Result<Vec<PaymentMethod>, hasivu_cache::Error> {
        let options = EntryOptions::new(Duration::from_secs(600));
        let db = self.db.clone();
        self.cache
            .get_or_load("payment:methods:default", &options, move || async move {
                db.payment_methods().await
            })
            .await
    }
}

async fn load_menus(db: &Db) -> Result<DailyMenus, DbError> {
    let day = today();
    Ok(DailyMenus {
        day,
        schools: db.menus(weekday(day)).await?,
    })
}

fn next_id() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The coding the compression layer will choose, for the cache's key.
fn negotiated(headers: &http::HeaderMap) -> String {
    negotiate_headers(headers, Coding::DEFAULT_PREFERENCE)
        .as_str()
        .to_owned()
}

/// Where a listener serves the operational routes (`/metrics`,
/// `/dashboard`, `/dashboard/data`, `/health/details`): they tell a
/// stranger the API's routes, traffic, dependencies and errors, so they
/// are not public unless the listener is.
///
/// | settings | main listener | admin listener |
/// | --- | --- | --- |
/// | `HASIVU_ADMIN_ADDR` | not served (404) | served (behind the token if `HASIVU_ADMIN_TOKEN` is set) |
/// | `HASIVU_ADMIN_TOKEN` only | behind the token (401 without) | none |
/// | neither, main listener on loopback | served (the zero-setup local run) | none |
/// | neither, main listener elsewhere | not served (404), with a warning at start | none |
#[derive(Clone, Debug)]
pub enum Operations {
    /// Served to whoever reaches the listener.
    Open,
    /// Served to requests that carry the admin token.
    Token(AdminToken),
    /// Not served.
    Off,
}

impl Operations {
    /// What the main listener on `addr` serves (`None`: an address not
    /// known, as under Lambda, which counts as public), given whether an
    /// admin listener serves them.
    pub fn main_listener(config: &Config, addr: Option<SocketAddr>, admin_listener: bool) -> Self {
        if admin_listener {
            Self::Off
        } else if let Some(token) = &config.admin_token {
            Self::Token(AdminToken::new(token))
        } else if addr.is_some_and(|addr| addr.ip().is_loopback()) {
            Self::Open
        } else {
            Self::Off
        }
    }

    /// What the admin listener serves: everything, behind the token if one
    /// is set.
    pub fn admin_listener(config: &Config) -> Self {
        match &config.admin_token {
            Some(token) => Self::Token(AdminToken::new(token)),
            None => Self::Open,
        }
    }
}

/// The admin token (`HASIVU_ADMIN_TOKEN`), kept as its SHA-256 and
/// compared in constant time; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token `token`.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(sha2::Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether `headers` carry the token: `Authorization: Bearer <token>`,
    /// or `Basic` with the token as the password (what a browser sends
    /// after asking for it), whatever the user name.
    pub fn accepts(&self, headers: &http::HeaderMap) -> bool {
        use base64::Engine;

        let Some(value) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        let candidate = if scheme.eq_ignore_ascii_case("bearer") {
            credentials.as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return false;
            };
            match decoded.iter().position(|b| *b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        // Digests of equal length, compared without an early exit.
        let digest: [u8; 32] = sha2::Sha256::digest(&candidate).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// 401 for an operational route without the admin token; a browser asks
/// for it (Basic), curl users read the problem.
fn admin_token_required() -> axum::response::Response {
    let mut response = crate::api::problem::problem(
        401,
        "unauthorized",
        "the operational routes need the admin token: Authorization: Bearer <HASIVU_ADMIN_TOKEN>",
    );
    let headers = response.headers_mut();
    for challenge in [
        "Basic realm=\"hasivu operations\", charset=\"UTF-8\"",
        "Bearer realm=\"hasivu operations\"",
    ] {
        headers.append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    response
}

/// The operational routes (metrics, dashboard, dashboard data, detailed
/// health), guarded as `operations` says ([`Operations::Off`]: none).
pub fn operational_routes(operations: &Operations) -> Router<AppState> {
    let routes = Router::new()
        .route("/metrics", get(routes::dashboard::metrics))
        .route("/dashboard", get(routes::dashboard::page))
        .route("/dashboard/data", get(routes::dashboard::data))
        .route("/health/details", get(routes::health::details));
    match operations {
        Operations::Off => Router::new(),
        Operations::Open => routes,
        Operations::Token(token) => {
            let token = token.clone();
            routes.route_layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let allowed = token.accepts(request.headers());
                    async move {
                        if allowed {
                            next.run(request).await
                        } else {
                            admin_token_required()
                        }
                    }
                },
            ))
        }
    }
}

/// The router of the main listener with the operational routes as the
/// configuration says for a listener whose address is not known (see
/// [`Operations::main_listener`]); [`app_with`] chooses.
pub fn app(state: AppState) -> Router {
    let operations =
        Operations::main_listener(&state.config, None, state.config.admin_addr.is_some());
    app_with(state, &operations)
}

/// The router: routes, and inside it the cache and compression layers;
/// the operational routes as `operations` says.
pub fn app_with(state: AppState, operations: &Operations) -> Router {
    let menu_policy = RoutePolicy::new(state.config.menu_ttl)
        .namespace("menu:daily:")
        // The one parameter the handler reads: `?junk=N` makes no entry.
        .query_params(["school"])
        // One entry per school, shared by everyone of that school: the
        // verified token's school, put there by the auth layer.
        .per_user(|parts| {
            parts
                .extensions
                .get::<crate::api::auth::Claims>()
                .map(|claims| format!("school-{}", claims.school))
        });
    let cache_layer = CacheLayer::new(state.cache.clone())
        .route("/menu/daily", menu_policy)
        .accept_encoding(negotiated);
    Router::new()
        .route("/", get(routes::dashboard::index))
        .route("/health", get(routes::health::health))
        .route("/auth/login", post(routes::auth::login))
        .route("/menu/daily", get(routes::menu::daily))
        .route(
            "/users/{id}",
            get(routes::users::user).layer(FieldSelectionLayer::new()),
        )
        .route("/orders/create", post(routes::orders::create))
        .route("/payments/create", post(routes::payments::create))
        .merge(operational_routes(operations))
        .with_state(state)
        .layer(CompressionLayer::new())
        .layer(cache_layer)
}

/// The router of the admin listener: the operational routes and the
/// public `/health`, compressed; none of the API's layers (it is not the
/// API's traffic).
pub fn admin_app(state: AppState, operations: &Operations) -> Router {
    operational_routes(operations)
        .route("/health", get(routes::health::health))
        .with_state(state)
        .layer(CompressionLayer::new())
}

/// The limiter's store: local, or in Redis with a local fallback.
///
/// # Errors
///
/// An invalid Redis URL.
pub fn limiter_store(config: &Config) -> Result<AnyStore, BoxError> {
    Ok(match &config.redis_url {
        Some(url) => AnyStore::Redis(
            RedisStore::builder(url.clone())
                .prefix(format!("{}rl:", config.redis_prefix))
                .build()?,
        ),
        None => AnyStore::Local(LocalStore::new()),
    })
}

/// The limiter: local, or in Redis with a local fallback.
///
/// # Errors
///
/// An invalid Redis URL.
pub fn limiter(config: &Config) -> Result<Limiter<AnyStore>, BoxError> {
    Ok(Limiter::builder()
        .store(limiter_store(config)?)
        .policies(policies(config))
        .tiers(Tiers::report_defaults())
        .build())
}

/// The shield's blocklist: local, or in Redis.
///
/// # Errors
///
/// An invalid Redis URL.
pub fn blocklist(config: &Config) -> Result<AnyBlocklist, BoxError> {
    Ok(match &config.redis_url {
        Some(url) => AnyBlocklist::Redis(
            RedisBlocklist::builder(url.clone())
                .prefix(format!("{}shield:", config.redis_prefix))
                .build()?,
        ),
        None => AnyBlocklist::Local(LocalBlocklist::new()),
    })
}

/// The request type of the whole stack (axum's body).
pub type Request = http::Request<axum::body::Body>;

/// The full stack (see [`layers`](crate::api::layers) for the order and
/// why): metrics, shield, auth, rate limit and request decompression
/// around [`app`]. It reads the client's address from a `SocketAddr` or
/// axum `ConnectInfo<SocketAddr>` extension; [`serve`] provides one, and so
/// does the Lambda binary (from the request context). The operational
/// routes are there only behind `HASIVU_ADMIN_TOKEN` (the listener's
/// address is not known here); [`stack_with`] chooses.
///
/// # Errors
///
/// The limiter or blocklist could not be built.
pub fn stack(
    state: AppState,
) -> Result<
    impl tower_service::Service<
        Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    BoxError,
> {
    let operations =
        Operations::main_listener(&state.config, None, state.config.admin_addr.is_some());
    stack_with(state, operations)
}

/// [`stack`] with the operational routes as `operations` says.
///
/// # Errors
///
/// The limiter or blocklist could not be built.
pub fn stack_with(
    state: AppState,
    operations: Operations,
) -> Result<
    impl tower_service::Service<
        Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    BoxError,
> {
    let config = Arc::clone(&state.config);
    let limiter = limiter(&config)?;
    let blocklist = blocklist(&config)?;
    let analytics = state.analytics.clone();
    // The socket peer, or the client a trusted proxy forwarded.
    let client_ip = ClientIpKey::trusted_proxies(config.trusted_proxies.clone())
        .forwarded_header(config.forwarded_header.clone());
    // A request with a valid token is refused at the shield's threshold
    // but never blocks its address (a school shares one behind its NAT).
    let tokens = state.tokens.clone();
    let signed_in = move |parts: &http::request::Parts| bearer(&tokens, &parts.headers).is_some();
    let (strikes, window) = config.shield_strikes;
    Ok(ServiceBuilder::new()
        // Every layer's body in axum's own body type.
        .map_response(|response: http::Response<_>| response.map(axum::body::Body::new))
        .layer(
            MetricsLayer::new()
                .analytics(analytics)
                .route(ApiRoutes)
                .response_time_header(true),
        )
        .layer(
            ShieldLayer::new()
                .blocklist(blocklist)
                .client_ip(client_ip.clone())
                .strikes(Strikes {
                    count: strikes,
                    window: Duration::from_secs(window.max(1)),
                    ..Strikes::default()
                })
                .authenticated(signed_in),
        )
        .layer(AuthLayer::new(state.tokens.clone()))
        .layer(RateLimitLayer::new(limiter).key(UserOrIp::new(client_ip)))
        .layer(RequestDecompressionLayer::new().limit(config.max_body_bytes))
        .service(app_with(state, &operations)))
}

/// Serves [`stack`] on `listener` until `shutdown` resolves, and the
/// operational routes on a second listener bound to `HASIVU_ADMIN_ADDR`
/// when it is set; see [`serve_with`].
///
/// # Errors
///
/// The admin listener could not be bound, the limiter or blocklist could
/// not be built, or a listener's task failed.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let admin = match state.config.admin_addr {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_with(listener, admin, state, shutdown).await
}

/// Serves [`stack`] on `listener`, and the operational routes on `admin`
/// if given (see [`Operations`] for where they go otherwise), until
/// `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish for up to the configured grace, saves the regression history
/// and drains the pools.
///
/// Connections are HTTP/1.1 with the header limits of the configuration:
/// a request whose header section is larger than `HASIVU_MAX_HEADER_BYTES`
/// or has more than `HASIVU_MAX_HEADERS` fields is answered `431 Request
/// Header Fields Too Large` (by hyper, with an empty body) and its
/// connection closed. Each request carries the peer as axum's
/// `ConnectInfo<SocketAddr>`.
///
/// # Errors
///
/// The limiter or blocklist could not be built, or a listener's task
/// failed.
pub async fn serve_with<F>(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: AppState,
    shutdown: F,
) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let config = Arc::clone(&state.config);
    let pools = state.pools.clone();
    let addr = listener.local_addr()?;
    let operations = Operations::main_listener(&config, Some(addr), admin.is_some());
    match (&operations, &admin) {
        (Operations::Open, _) => tracing::info!(
            "operational routes (/metrics, /dashboard, /dashboard/data, /health/details) on http://{addr}: \
             the listener is on loopback; set HASIVU_ADMIN_ADDR or HASIVU_ADMIN_TOKEN before listening elsewhere"
        ),
        (Operations::Token(_), _) => {
            tracing::info!("operational routes on http://{addr} behind HASIVU_ADMIN_TOKEN")
        }
        (Operations::Off, Some(admin)) => tracing::info!(
            "operational routes on the admin listener http://{}",
            admin.local_addr()?
        ),
        (Operations::Off, None) => tracing::warn!(
            "operational routes are off: http://{addr} is not loopback and neither \
             HASIVU_ADMIN_ADDR nor HASIVU_ADMIN_TOKEN is set"
        ),
    }
    let service = stack_with(state.clone(), operations)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let main = tokio::spawn(accept(
        listener,
        service,
        http1(&config),
        stopped.clone(),
        config.shutdown_grace,
    ));
    let admin = admin.map(|listener| {
        let service = admin_app(state.clone(), &Operations::admin_listener(&config));
        tokio::spawn(accept(
            listener,
            service,
            http1(&config),
            stopped,
            config.shutdown_grace,
        ))
    });
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop.send(true);
    main.await?;
    if let Some(admin) = admin {
        admin.await?;
    }
    state.save_history().await;
    for (kind, key, report) in pools.drain(config.shutdown_grace).await {
        tracing::info!(kind, key, ?report, "pool drained");
    }
    Ok(())
}

/// The HTTP/1 connection settings: hyper's defaults but the header limits.
fn http1(config: &Config) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_header_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    builder
}

/// Accepts connections on `listener` and serves `service` on each until
/// `stop` turns true; then closes the listener, lets every connection
/// finish its in-flight request for up to `grace` (idle ones close at
/// once), and ends those still running.
async fn accept<S>(
    listener: TcpListener,
    service: S,
    http1: hyper::server::conn::http1::Builder,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) where
    S: tower_service::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // A client that gave up before it was accepted;
                        // anything else (out of file descriptors) is worth
                        // a pause rather than a busy loop.
                        if !matches!(
                            error.kind(),
                            std::io::ErrorKind::ConnectionAborted
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::ConnectionRefused
                        ) {
                            tracing::error!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        continue;
                    }
                };
                let service = service.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let mut request = request.map(axum::body::Body::new);
                        request
                            .extensions_mut()
                            .insert(axum::extract::ConnectInfo(peer));
                        service.clone().oneshot(request)
                    },
                );
                let connection = graceful.watch(
                    http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, %peer, "connection failed");
                    }
                });
            }
            // Reap finished connections, so the set stays as large as the
            // open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // The one change is to stop (or the sender is gone).
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests still running after the grace period; stopping them"
        );
        connections.abort_all();
    }
}

/// Resolves on ctrl-c or `SIGTERM`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
