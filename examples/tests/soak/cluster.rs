//! The soak's cluster: one PostgreSQL, one Redis, a fault proxy in front
//! of Redis for the last instance, and three `hasivu-api` processes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hasivu_testkit::{FaultProxy, PostgresServer, RedisServer};

/// One token secret for the three: a token from one works on the others.
pub(crate) const TOKEN_SECRET: &str = "soak-secret-shared-by-all-three-instances";
/// The instances' names, in order.
pub(crate) const NAMES: [&str; 3] = ["a", "b", "c"];
/// The instance whose Redis connection goes through the fault proxy.
pub(crate) const PROXIED: usize = 2;
/// How long an instance may take to migrate, seed and warm up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the instances are started with.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `HASIVU_USERS`.
    pub(crate) users: u32,
    /// `HASIVU_PORTIONS`: every menu item's portions of the day.
    pub(crate) portions: u32,
    /// `HASIVU_MENU_TTL_SECS`.
    pub(crate) menu_ttl: Duration,
}

impl Settings {
    /// Every variable the instances get, besides their addresses and URLs.
    fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HASIVU_ADDR", "127.0.0.1:0".to_owned()),
            ("HASIVU_TOKEN_SECRET", TOKEN_SECRET.to_owned()),
            // A fresh PostgreSQL database: the demo accounts, when told.
            ("HASIVU_SEED_DEMO", "true".to_owned()),
            ("HASIVU_USERS", self.users.to_string()),
            ("HASIVU_PORTIONS", self.portions.to_string()),
            ("HASIVU_MENU_TTL_SECS", self.menu_ttl.as_secs().to_string()),
            // The virtual users connect from loopback and name themselves
            // in X-Forwarded-For, each its own client of the limiter.
            ("HASIVU_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
            // Generous but finite: the load exercises the handlers, not the
            // general and payment quotas. The login quotas keep the
            // report's values; the quota verdict measures them.
            ("HASIVU_RATE_GENERAL", "1000000/900".to_owned()),
            ("HASIVU_RATE_PAYMENTS", "1000000/900".to_owned()),
            // Three processes on two cores: one password check at a time each.
            ("HASIVU_LOGIN_WORKERS", "1".to_owned()),
            ("HASIVU_SHUTDOWN_GRACE_SECS", "1".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
    }
}

/// One `hasivu-api` process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) name: &'static str,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// Its standard output and error.
    pub(crate) log: PathBuf,
    child: Child,
}

impl Instance {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers the fault schedule takes away and brings back.
#[derive(Debug)]
pub(crate) struct Servers {
    pub(crate) postgres: PostgresServer,
    pub(crate) redis: RedisServer,
    /// Between the last instance and Redis.
    pub(crate) proxy: FaultProxy,
}

/// The servers and the three instances.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) servers: Servers,
    pub(crate) instances: Vec<Instance>,
    pub(crate) database_url: String,
}

impl Cluster {
    /// Starts PostgreSQL, Redis and the proxy, then the three instances at
    /// once (the first to take the advisory lock migrates and seeds), and
    /// waits until each has printed its address. Blocking.
    pub(crate) fn start(settings: &Settings, logs: &Path) -> Self {
        let postgres = PostgresServer::start();
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr());
        let database_url = postgres.url();
        fs::create_dir_all(logs).unwrap();
        let binary = env!("CARGO_BIN_EXE_hasivu-api");
        let mut starting = Vec::new();
        for (i, name) in NAMES.into_iter().enumerate() {
            let redis_url = if i == PROXIED {
                proxy.redis_url()
            } else {
                redis.url()
            };
            let log = logs.join(format!("instance-{name}.log"));
            let out = fs::File::create(&log).unwrap();
            let mut command = Command::new(binary);
            // Nothing of the caller's own settings leaks in.
            command.env_remove("HASIVU_CONFIG");
            for setting in hasivu_examples::api::config::SETTINGS {
                command.env_remove(setting);
            }
            let child = command
                .envs(settings.environment())
                .env("DATABASE_URL", &database_url)
                .env("REDIS_URL", redis_url)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out.try_clone().unwrap()))
                .stderr(Stdio::from(out))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
            starting.push((name, log, child));
        }
        let mut instances = Vec::new();
        for (name, log, child) in starting {
            let mut instance = Instance {
                name,
                base: String::new(),
                log,
                child,
            };
            instance.base = wait_ready(&mut instance);
            instances.push(instance);
        }
        Self {
            servers: Servers {
                postgres,
                redis,
                proxy,
            },
            instances,
            database_url,
        }
    }
}

/// The base URL the instance prints once it listens and is warm
/// (`Try: curl http://127.0.0.1:PORT/health`).
fn wait_ready(instance: &mut Instance) -> String {
    const MARK: &str = "Try: curl http://";
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(&instance.log).unwrap_or_default();
        if let Some(at) = text.find(MARK) {
            let rest = &text[at + MARK.len()..];
            let addr = rest.split('/').next().unwrap_or_default();
            return format!("http://{addr}");
        }
        if let Ok(Some(status)) = instance.child.try_wait() {
            panic!(
                "instance {} exited with {status} before it was ready:\n{}",
                instance.name,
                tail(&text, 30)
            );
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "instance {} not ready after {READY_TIMEOUT:?}:\n{}",
            instance.name,
            tail(&text, 30)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
