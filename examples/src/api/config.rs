//! Settings, read from the environment (see the table in the README).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use hasivu_ratelimit::{TrustedProxies, http::ForwardedHeader};

/// Everything the API can be told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (`HASIVU_ADDR`, default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// `DATABASE_URL`: a `postgres://` URL switches from SQLite to
    /// PostgreSQL.
    pub database_url: Option<String>,
    /// `HASIVU_SQLITE_PATH`: the SQLite file (default: a shared in-memory
    /// database, seeded with the demo data at every start).
    pub sqlite_path: Option<String>,
    /// `REDIS_URL`: puts the L2 cache and its backplane, the limiter, the
    /// blocklist, and the alert and regression history in Redis.
    pub redis_url: Option<String>,
    /// `HASIVU_REDIS_PREFIX` (default `hasivu:`): the prefix of every Redis
    /// key the limiter and the blocklist write; instances that share limits
    /// share it.
    pub redis_prefix: String,
    /// `HASIVU_TOKEN_SECRET`: the HMAC key of the login tokens, at least
    /// 32 bytes (random when absent; tokens then die with the process).
    pub token_secret: Option<String>,
    /// `HASIVU_TOKEN_TTL_SECS` (default 3600).
    pub token_ttl: Duration,
    /// `HASIVU_RATE_GENERAL` (`limit/seconds`, default `1000/900`).
    pub rate_general: (u32, u64),
    /// `HASIVU_RATE_LOGIN` (default `10/900`, burst 5).
    pub rate_login: (u32, u64),
    /// `HASIVU_RATE_PAYMENTS` (default `30/900`, burst 10).
    pub rate_payments: (u32, u64),
    /// `HASIVU_USERS` (default 1000): seeded users, each with a student.
    pub users: u32,
    /// `HASIVU_MENU_ITEMS` (default 100): menu items per school and day.
    pub menu_items: u32,
    /// `HASIVU_SEED_DEMO` (`true` or `false`): whether an empty database
    /// gets the demo data, whose accounts share a published password.
    /// Unset: only the in-memory database is seeded; a SQLite file or a
    /// PostgreSQL database is migrated but left empty (see
    /// [`seeds_demo`](Self::seeds_demo)).
    pub seed_demo: Option<bool>,
    /// `HASIVU_PORTIONS`: portions of every menu item a day (default: the
    /// seeded 200–499 each; raise it for long load tests).
    pub portions: Option<u32>,
    /// `HASIVU_IDEMPOTENCY_TTL_SECS` (default 86400, one day): how long an
    /// `Idempotency-Key` replays its first answer; after it the key is new
    /// again, and expired keys are deleted.
    pub idempotency_ttl: Duration,
    /// `HASIVU_MAX_BODY_BYTES` (default 1 MiB): larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `HASIVU_SHUTDOWN_GRACE_SECS` (default 10): how long in-flight
    /// requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// `HASIVU_MENU_TTL_SECS` (default 60): how long a menu answer is cached.
    pub menu_ttl: Duration,
    /// `HASIVU_TRUSTED_PROXIES` (comma-separated CIDRs, default none): peers
    /// whose `Forwarded` / `X-Forwarded-For` the limiter and the shield
    /// believe, so that they key on the forwarded client instead of the proxy.
    pub trusted_proxies: TrustedProxies,
    /// `HASIVU_FORWARDED_HEADER` (default `x-forwarded-for`): the one
    /// header the trusted proxies set and the only one read: `forwarded`
    /// (RFC 7239), or a single-address header such as `x-real-ip` or
    /// `cf-connecting-ip`. The others are ignored, so a client cannot pick
    /// its own address by sending one.
    pub forwarded_header: ForwardedHeader,
    /// `HASIVU_SHIELD_STRIKES` (`count/seconds`, default `5/600`): requests
    /// at the shield's threshold from one address within the window that
    /// block it (each is refused; one alone blocks no one). Requests with
    /// a valid token are refused but never block their address.
    pub shield_strikes: (u32, u64),
    /// `HASIVU_HISTORY_PATH`: a JSON file for the regression detector's
    /// history (loaded at start, saved every 5 minutes and at shutdown).
    /// Unset: kept in Redis when `REDIS_URL` is set, else not kept.
    pub history_path: Option<String>,

    // Logins, operations and the HTTP server's limits.
    /// `HASIVU_LOGIN_WORKERS` (default: the number of cores): password
    /// verifications that run at once, each holding 19 MiB of argon2
    /// memory (allocated once and reused).
    pub login_workers: usize,
    /// `HASIVU_LOGIN_QUEUE` (default 256): logins that may wait for a
    /// verification worker; beyond, 503 with `Retry-After`.
    pub login_queue: usize,
    /// `HASIVU_LOGIN_WAIT_SECS` (default 5): how long a login waits for a
    /// worker before it gets 503.
    pub login_wait: Duration,
    /// `HASIVU_RATE_LOGIN_GLOBAL` (`limit/seconds`, default `1200/60`):
    /// logins of all clients together, per instance (in Redis with
    /// `REDIS_URL`, for all instances together).
    pub rate_login_global: (u32, u64),
    /// `HASIVU_RATE_LOGIN_ACCOUNT` (default `10/900`, burst 5): logins per
    /// submitted email (trimmed and lower-cased), known or not.
    pub rate_login_account: (u32, u64),
    /// `HASIVU_ADMIN_ADDR`: a second listener (e.g. `127.0.0.1:9090`) for
    /// the operational routes: `/metrics`, `/dashboard`,
    /// `/dashboard/data`, `/health/details`.
    pub admin_addr: Option<SocketAddr>,
    /// `HASIVU_ADMIN_TOKEN` (at least 16 characters): a bearer token the
    /// operational routes require, on either listener.
    pub admin_token: Option<String>,
    /// `HASIVU_MAX_HEADER_BYTES` (default 32768): a request whose header
    /// section (request line included) is larger gets 431.
    pub max_header_bytes: usize,
    /// `HASIVU_MAX_HEADERS` (default 100): a request with more header
    /// fields gets 431.
    pub max_headers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            sqlite_path: None,
            redis_url: None,
            redis_prefix: "hasivu:".to_owned(),
            token_secret: None,
            token_ttl: Duration::from_secs(3600),
            rate_general: (1000, 900),
            rate_login: (10, 900),
            rate_payments: (30, 900),
            users: 1000,
            menu_items: 100,
            seed_demo: None,
            portions: None,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            menu_ttl: Duration::from_secs(60),
            trusted_proxies: TrustedProxies::none(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            shield_strikes: (5, 600),
            history_path: None,
            login_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            login_queue: 256,
            login_wait: Duration::from_secs(5),
            rate_login_global: (1200, 60),
            rate_login_account: (10, 900),
            admin_addr: None,
            admin_token: None,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

/// A setting that could not be read.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Every setting's name, in the environment and in a `HASIVU_CONFIG` file.
pub const SETTINGS: &[&str] = &[
    "HASIVU_ADDR",
    "DATABASE_URL",
    "HASIVU_SQLITE_PATH",
    "REDIS_URL",
    "HASIVU_REDIS_PREFIX",
    "HASIVU_TOKEN_SECRET",
    "HASIVU_TOKEN_TTL_SECS",
    "HASIVU_RATE_GENERAL",
    "HASIVU_RATE_LOGIN",
    "HASIVU_RATE_PAYMENTS",
    "HASIVU_TRUSTED_PROXIES",
    "HASIVU_FORWARDED_HEADER",
    "HASIVU_SHIELD_STRIKES",
    "HASIVU_USERS",
    "HASIVU_MENU_ITEMS",
    "HASIVU_SEED_DEMO",
    "HASIVU_PORTIONS",
    "HASIVU_IDEMPOTENCY_TTL_SECS",
    "HASIVU_MAX_BODY_BYTES",
    "HASIVU_SHUTDOWN_GRACE_SECS",
    "HASIVU_MENU_TTL_SECS",
    "HASIVU_HISTORY_PATH",
    "HASIVU_LOGIN_WORKERS",
    "HASIVU_LOGIN_QUEUE",
    "HASIVU_LOGIN_WAIT_SECS",
    "HASIVU_RATE_LOGIN_GLOBAL",
    "HASIVU_RATE_LOGIN_ACCOUNT",
    "HASIVU_ADMIN_ADDR",
    "HASIVU_ADMIN_TOKEN",
    "HASIVU_MAX_HEADER_BYTES",
    "HASIVU_MAX_HEADERS",
];

/// The shortest `HASIVU_ADMIN_TOKEN` accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Reads the environment, and the TOML file named by `HASIVU_CONFIG`
    /// when set (the same names as keys: `HASIVU_ADDR = "0.0.0.0:8080"`);
    /// the environment wins over the file, and unset settings keep their
    /// defaults.
    ///
    /// # Errors
    ///
    /// A setting that is set but cannot be parsed, named in the message; a
    /// file that cannot be read or parsed, or holds an unknown name.
    pub fn from_env() -> Result<Self, ConfigError> {
        let file = match std::env::var("HASIVU_CONFIG") {
            Ok(path) if !path.trim().is_empty() => Self::read_file(path.trim())?,
            _ => BTreeMap::new(),
        };
        Self::from_lookup(|name| std::env::var(name).ok().or_else(|| file.get(name).cloned()))
    }

    /// The settings of a TOML file of `NAME = value` pairs, values as
    /// text (numbers and booleans written as they would be in the
    /// environment).
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, or holds a name that is not a
    /// setting.
    pub fn read_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("HASIVU_CONFIG: cannot read {path}: {e}")))?;
        Self::parse_file(&text).map_err(|ConfigError(e)| ConfigError(format!("{path}: {e}")))
    }

    fn parse_file(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(e.message().to_owned()))?;
        table
            .into_iter()
            .map(|(name, value)| {
                if !SETTINGS.contains(&name.as_str()) {
                    return Err(ConfigError(format!(
                        "unknown setting {name:?}; the settings are {}",
                        SETTINGS.join(", ")
                    )));
                }
                let text = match value {
                    toml::Value::String(text) => text,
                    other => other.to_string(),
                };
                Ok((name, text))
            })
            .collect()
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError(format!("{name}: cannot parse {value:?}")))
        }
        fn rate(name: &str, value: &str) -> Result<(u32, u64), ConfigError> {
            let (limit, secs) = value.split_once('/').ok_or_else(|| {
                ConfigError(format!("{name}: expected limit/seconds, got {value:?}"))
            })?;
            Ok((parse(name, limit)?, parse(name, secs)?))
        }
        if let Some(v) = get("HASIVU_ADDR") {
            config.addr = parse("HASIVU_ADDR", &v)?;
        }
        config.database_url = get("DATABASE_URL");
        config.sqlite_path = get("HASIVU_SQLITE_PATH");
        config.redis_url = get("REDIS_URL");
        config.history_path = get("HASIVU_HISTORY_PATH");
        if let Some(v) = get("HASIVU_REDIS_PREFIX") {
            config.redis_prefix = v;
        }
        config.token_secret = get("HASIVU_TOKEN_SECRET");
        if let Some(secret) = &config.token_secret {
            crate::api::auth::check_secret(secret)?;
        }
        if let Some(v) = get("HASIVU_TOKEN_TTL_SECS") {
            config.token_ttl = Duration::from_secs(parse("HASIVU_TOKEN_TTL_SECS", &v)?);
        }
        if let Some(v) = get("HASIVU_RATE_GENERAL") {
            config.rate_general = rate("HASIVU_RATE_GENERAL", &v)?;
        }
        if let Some(v) = get("HASIVU_RATE_LOGIN") {
            config.rate_login = rate("HASIVU_RATE_LOGIN", &v)?;
        }
        if let Some(v) = get("HASIVU_RATE_PAYMENTS") {
            config.rate_payments = rate("HASIVU_RATE_PAYMENTS", &v)?;
        }
        if let Some(v) = get("HASIVU_USERS") {
            config.users = parse("HASIVU_USERS", &v)?;
        }
        if let Some(v) = get("HASIVU_MENU_ITEMS") {
            config.menu_items = parse("HASIVU_MENU_ITEMS", &v)?;
        }
        if let Some(v) = get("HASIVU_SEED_DEMO") {
            config.seed_demo = Some(parse("HASIVU_SEED_DEMO", &v)?);
        }
        if let Some(v) = get("HASIVU_PORTIONS") {
            config.portions = Some(parse("HASIVU_PORTIONS", &v)?);
        }
        if let Some(v) = get("HASIVU_IDEMPOTENCY_TTL_SECS") {
            let secs: u64 = parse("HASIVU_IDEMPOTENCY_TTL_SECS", &v)?;
            if secs == 0 {
                return Err(ConfigError(
                    "HASIVU_IDEMPOTENCY_TTL_SECS: at least 1 second".to_owned(),
                ));
            }
            config.idempotency_ttl = Duration::from_secs(secs);
        }
        if let Some(v) = get("HASIVU_MAX_BODY_BYTES") {
            config.max_body_bytes = parse("HASIVU_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("HASIVU_SHUTDOWN_GRACE_SECS") {
            config.shutdown_grace = Duration::from_secs(parse("HASIVU_SHUTDOWN_GRACE_SECS", &v)?);
        }
        if let Some(v) = get("HASIVU_MENU_TTL_SECS") {
            config.menu_ttl = Duration::from_secs(parse("HASIVU_MENU_TTL_SECS", &v)?);
        }
        if let Some(v) = get("HASIVU_TRUSTED_PROXIES") {
            config.trusted_proxies =
                TrustedProxies::new(v.split(',').map(str::trim).filter(|c| !c.is_empty()))
                    .map_err(|e| ConfigError(format!("HASIVU_TRUSTED_PROXIES: {e}")))?;
        }
        if let Some(v) = get("HASIVU_FORWARDED_HEADER") {
            config.forwarded_header = v.parse().map_err(|_| {
                ConfigError(format!(
                    "HASIVU_FORWARDED_HEADER: {v:?} is not a header name (x-forwarded-for, forwarded, x-real-ip…)"
                ))
            })?;
        }
        if let Some(v) = get("HASIVU_SHIELD_STRIKES") {
            config.shield_strikes = rate("HASIVU_SHIELD_STRIKES", &v)?;
        }
        if let Some(v) = get("HASIVU_LOGIN_WORKERS") {
            config.login_workers = parse("HASIVU_LOGIN_WORKERS", &v)?;
            if config.login_workers == 0 {
                return Err(ConfigError("HASIVU_LOGIN_WORKERS: at least 1".into()));
            }
        }
        if let Some(v) = get("HASIVU_LOGIN_QUEUE") {
            config.login_queue = parse("HASIVU_LOGIN_QUEUE", &v)?;
        }
        if let Some(v) = get("HASIVU_LOGIN_WAIT_SECS") {
            config.login_wait = Duration::from_secs(parse("HASIVU_LOGIN_WAIT_SECS", &v)?);
        }
        if let Some(v) = get("HASIVU_RATE_LOGIN_GLOBAL") {
            config.rate_login_global = rate("HASIVU_RATE_LOGIN_GLOBAL", &v)?;
        }
        if let Some(v) = get("HASIVU_RATE_LOGIN_ACCOUNT") {
            config.rate_login_account = rate("HASIVU_RATE_LOGIN_ACCOUNT", &v)?;
        }
        if let Some(v) = get("HASIVU_ADMIN_ADDR") {
            config.admin_addr = Some(parse("HASIVU_ADMIN_ADDR", &v)?);
        }
        if let Some(token) = get("HASIVU_ADMIN_TOKEN") {
            let token = token.trim().to_owned();
            if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
                return Err(ConfigError(format!(
                    "HASIVU_ADMIN_TOKEN: at least {MIN_ADMIN_TOKEN_LEN} characters"
                )));
            }
            config.admin_token = Some(token);
        }
        if let Some(v) = get("HASIVU_MAX_HEADER_BYTES") {
            config.max_header_bytes = parse("HASIVU_MAX_HEADER_BYTES", &v)?;
            if config.max_header_bytes < 1024 {
                return Err(ConfigError("HASIVU_MAX_HEADER_BYTES: at least 1024".into()));
            }
        }
        if let Some(v) = get("HASIVU_MAX_HEADERS") {
            config.max_headers = parse("HASIVU_MAX_HEADERS", &v)?;
            if config.max_headers == 0 {
                return Err(ConfigError("HASIVU_MAX_HEADERS: at least 1".into()));
            }
        }
        if let Some(url) = &config.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError(format!(
                "DATABASE_URL: only postgres:// URLs are supported, got {url:?}"
            )));
        }
        Ok(config)
    }

    /// Whether an empty database gets the demo data: `HASIVU_SEED_DEMO`
    /// when set, else only the in-memory database (no `DATABASE_URL`, no
    /// `HASIVU_SQLITE_PATH`), which holds nothing else and dies with the
    /// process.
    pub fn seeds_demo(&self) -> bool {
        self.seed_demo
            .unwrap_or(self.database_url.is_none() && self.sqlite_path.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_keep_the_defaults_and_set_ones_are_parsed() {
        let config = Config::from_lookup(|name| match name {
            "HASIVU_ADDR" => Some("0.0.0.0:9000".into()),
            "HASIVU_RATE_LOGIN" => Some("3/60".into()),
            "HASIVU_TRUSTED_PROXIES" => Some("127.0.0.1/32, 10.0.0.0/8".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(config.rate_login, (3, 60));
        assert_eq!(config.rate_general, (1000, 900));
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(
            !config
                .trusted_proxies
                .contains("192.0.2.1".parse().unwrap())
        );
        let bad =
            Config::from_lookup(|name| (name == "HASIVU_TRUSTED_PROXIES").then(|| "x/99".into()));
        assert!(bad.unwrap_err().0.starts_with("HASIVU_TRUSTED_PROXIES"));
        assert_eq!(config.portions, None);
        let plenty =
            Config::from_lookup(|name| (name == "HASIVU_PORTIONS").then(|| "1000000".into()));
        assert_eq!(plenty.unwrap().portions, Some(1_000_000));
        let bad = Config::from_lookup(|name| (name == "HASIVU_USERS").then(|| "many".into()));
        assert!(bad.unwrap_err().0.starts_with("HASIVU_USERS"));
    }

    #[test]
    fn a_token_secret_under_32_bytes_is_refused() {
        let secret = |value: &str| {
            let value = value.to_owned();
            Config::from_lookup(move |name| (name == "HASIVU_TOKEN_SECRET").then(|| value.clone()))
        };
        let error = secret("change-me").expect_err("a 9-byte token secret must be refused");
        assert!(
            error.0.starts_with("HASIVU_TOKEN_SECRET") && error.0.contains("32 bytes"),
            "{error}"
        );
        assert!(secret(&"x".repeat(31)).is_err());
        let config = secret(&"x".repeat(32)).unwrap();
        assert_eq!(config.token_secret.map(|s| s.len()), Some(32));
        // Unset: a random secret (with a warning at start).
        assert_eq!(Config::from_lookup(|_| None).unwrap().token_secret, None);
    }

    #[test]
    fn demo_data_is_seeded_into_the_in_memory_database_unless_told_otherwise() {
        let config = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Config::from_lookup(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert!(config(&[]).unwrap().seeds_demo());
        assert!(
            !config(&[("HASIVU_SEED_DEMO", "false")])
                .unwrap()
                .seeds_demo()
        );
        let postgres = ("DATABASE_URL", "postgres://hasivu@db/hasivu");
        assert!(!config(&[postgres]).unwrap().seeds_demo());
        assert!(
            !config(&[("HASIVU_SQLITE_PATH", "hasivu.db")])
                .unwrap()
                .seeds_demo()
        );
        assert!(
            config(&[postgres, ("HASIVU_SEED_DEMO", "true")])
                .unwrap()
                .seeds_demo()
        );
        let error = config(&[("HASIVU_SEED_DEMO", "yes please")]).unwrap_err();
        assert!(error.0.starts_with("HASIVU_SEED_DEMO"), "{error}");
    }

    #[test]
    fn idempotency_keys_live_a_day_unless_told_otherwise() {
        let ttl = |value: Option<&str>| {
            let value = value.map(str::to_owned);
            Config::from_lookup(move |name| {
                (name == "HASIVU_IDEMPOTENCY_TTL_SECS")
                    .then(|| value.clone())
                    .flatten()
            })
        };
        assert_eq!(
            ttl(None).unwrap().idempotency_ttl,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            ttl(Some("60")).unwrap().idempotency_ttl,
            Duration::from_secs(60)
        );
        let error = ttl(Some("0")).unwrap_err();
        assert!(
            error.0.starts_with("HASIVU_IDEMPOTENCY_TTL_SECS"),
            "{error}"
        );
    }

    #[test]
    fn login_operations_and_header_settings_are_read_and_checked() {
        let config = Config::from_lookup(|name| {
            Some(
                match name {
                    "HASIVU_LOGIN_WORKERS" => "3",
                    "HASIVU_LOGIN_QUEUE" => "10",
                    "HASIVU_LOGIN_WAIT_SECS" => "2",
                    "HASIVU_RATE_LOGIN_GLOBAL" => "100/60",
                    "HASIVU_RATE_LOGIN_ACCOUNT" => "4/300",
                    "HASIVU_ADMIN_ADDR" => "127.0.0.1:9090",
                    "HASIVU_ADMIN_TOKEN" => " 0123456789abcdef ",
                    "HASIVU_MAX_HEADER_BYTES" => "16384",
                    "HASIVU_MAX_HEADERS" => "50",
                    _ => return None,
                }
                .to_owned(),
            )
        })
        .unwrap();
        assert_eq!((config.login_workers, config.login_queue), (3, 10));
        assert_eq!(config.login_wait, Duration::from_secs(2));
        assert_eq!(config.rate_login_global, (100, 60));
        assert_eq!(config.rate_login_account, (4, 300));
        assert_eq!(config.admin_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(config.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!((config.max_header_bytes, config.max_headers), (16384, 50));
        let defaults = Config::default();
        assert!(defaults.login_workers >= 1);
        assert_eq!(defaults.admin_token, None);
        assert_eq!(defaults.max_header_bytes, 32 * 1024);
        for (name, value) in [
            ("HASIVU_ADMIN_TOKEN", "short"),
            ("HASIVU_LOGIN_WORKERS", "0"),
            ("HASIVU_MAX_HEADER_BYTES", "100"),
            ("HASIVU_MAX_HEADERS", "0"),
            ("HASIVU_RATE_LOGIN_ACCOUNT", "10"),
            ("HASIVU_ADMIN_ADDR", "localhost"),
        ] {
            let error = Config::from_lookup(|n| (n == name).then(|| value.to_owned())).unwrap_err();
            assert!(error.0.starts_with(name), "{error}");
        }
    }

    #[test]
    fn a_toml_file_holds_the_same_names_and_rejects_others() {
        let file = Config::parse_file(
            "HASIVU_ADDR = \"0.0.0.0:9100\"\nHASIVU_USERS = 200\nHASIVU_RATE_LOGIN = \"4/60\"\n",
        )
        .unwrap();
        assert_eq!(file["HASIVU_USERS"], "200");
        let config = Config::from_lookup(|name| file.get(name).cloned()).unwrap();
        assert_eq!(config.addr.port(), 9100);
        assert_eq!(config.users, 200);
        assert_eq!(config.rate_login, (4, 60));
        let error = Config::parse_file("HASIVU_PORT = 1").unwrap_err();
        assert!(
            error.0.contains("unknown setting \"HASIVU_PORT\""),
            "{error}"
        );
        assert!(Config::parse_file("HASIVU_ADDR = ").is_err());
        assert!(Config::read_file("/nonexistent/hasivu.toml").is_err());
    }
}
