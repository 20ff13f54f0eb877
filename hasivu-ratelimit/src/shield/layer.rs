//! [`ShieldLayer`]: the configuration the services share.

use std::{net::IpAddr, sync::Arc, time::Duration};

use http::request::Parts;
use tower_layer::Layer;

use super::{
    Blocklist, Detector, DistinctPaths, Limits, LocalBlocklist, NotFoundRate, PathTraversal,
    ProbePaths, RapidRequests, Shield, SqlInjection, Strikes, UserAgents, Xss,
    log_throttle::LogThrottle, state::Clock, strikes::StrikeTable,
};
use crate::{Cidr, http::ClientIpKey};

/// Recognises requests that carry valid credentials, for a shield that runs
/// before authentication: such requests are never refused because their
/// address is blocked, and never block it or count a strike against it (a
/// request of theirs at the threshold is still refused). See
/// [`ShieldLayer::authenticated`].
///
/// Verify, do not trust: check the token's signature and expiry as your
/// authentication does, or anyone could send `Authorization: Bearer x` to
/// stay clear of the blocklist. The hook runs only for requests at the
/// threshold and for requests from blocked addresses, so its cost stays
/// off the clean path.
///
/// Closures `Fn(&http::request::Parts) -> bool` are hooks.
pub trait Authenticated: Clone + Send + Sync + 'static {
    /// Whether the request carries valid credentials.
    fn is_authenticated(&self, parts: &Parts) -> bool;
}

impl<F> Authenticated for F
where
    F: Fn(&Parts) -> bool + Clone + Send + Sync + 'static,
{
    fn is_authenticated(&self, parts: &Parts) -> bool {
        self(parts)
    }
}

/// The hook, type-erased: the layer keeps no type parameter for it.
pub(crate) type AuthHook = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// What the shield does with a request whose score reaches the threshold.
///
/// From configuration, with durations as `"30m"`, `"1h"` or seconds:
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::shield::Action;
///
/// let action: Action = serde_json::from_str(r#"{ "action": "block", "ttl": "30m" }"#).unwrap();
/// assert_eq!(action, Action::Block { ttl: Duration::from_secs(1800) });
/// let shadow: Action = serde_json::from_str(r#"{ "action": "log_only" }"#).unwrap();
/// assert_eq!(shadow, Action::LogOnly);
/// assert_eq!(Action::default(), Action::block_for_an_hour());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Action {
    /// Let it through and log it (shadow mode: see what would be blocked).
    LogOnly,
    /// Answer `429` with a `SECURITY_VIOLATION` problem.
    Reject,
    /// Answer `429` and blocklist the client for `ttl`.
    Block {
        /// How long the client stays blocked (default one hour).
        #[serde(deserialize_with = "crate::duration::deserialize")]
        ttl: Duration,
    },
}

impl Action {
    /// [`Action::Block`] for one hour, as the report does.
    pub const fn block_for_an_hour() -> Self {
        Action::Block {
            ttl: Duration::from_secs(3600),
        }
    }
}

impl Default for Action {
    fn default() -> Self {
        Self::block_for_an_hour()
    }
}

/// Scores requests with detectors and refuses abusive clients; see the
/// [module docs](crate::shield) for the detectors, weights, threshold,
/// actions and bounds.
///
/// Cheap to clone: the configuration, detectors and blocklist are shared.
///
/// ```
/// use std::sync::Arc;
/// use hasivu_ratelimit::shield::{Detector, ProbePaths, ShieldLayer, SqlInjection, UserAgents, Xss};
///
/// // Only some detectors, with weights of your own.
/// let layer = ShieldLayer::new().detectors([
///     Arc::new(SqlInjection::new()) as Arc<dyn Detector>,
///     Arc::new(Xss::new()),
///     Arc::new(UserAgents::new().scanner_weight(3)),
///     Arc::new(ProbePaths::new().segment("old-admin")),
/// ]);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ShieldLayer<Bl = LocalBlocklist> {
    pub(crate) config: Arc<Config<Bl>>,
}

/// One log event per client per this interval, by default.
const DEFAULT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The weight of a body the shield could not decode, by default: a
/// supporting sign, never enough alone.
const DEFAULT_UNDECODED_BODY_WEIGHT: u32 = 2;

/// Settings and state shared by the layer's services.
#[derive(Clone)]
pub(crate) struct Config<Bl> {
    pub(crate) detectors: Arc<[Arc<dyn Detector>]>,
    pub(crate) threshold: u32,
    pub(crate) action: Action,
    pub(crate) blocklist: Bl,
    pub(crate) allow: Vec<Cidr>,
    pub(crate) client_ip: ClientIpKey,
    pub(crate) limits: Limits,
    pub(crate) inspect_bodies: bool,
    pub(crate) undecoded_body_weight: u32,
    pub(crate) log_paths: bool,
    pub(crate) log_every: Duration,
    pub(crate) log_throttle: Arc<LogThrottle>,
    pub(crate) strikes: Strikes,
    pub(crate) strike_table: Arc<StrikeTable>,
    pub(crate) authenticated: Option<AuthHook>,
    pub(crate) tokio_time: bool,
}

impl<Bl: std::fmt::Debug> std::fmt::Debug for Config<Bl> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("detectors", &self.detectors.len())
            .field("threshold", &self.threshold)
            .field("action", &self.action)
            .field("blocklist", &self.blocklist)
            .field("allow", &self.allow)
            .field("client_ip", &self.client_ip)
            .field("limits", &self.limits)
            .field("inspect_bodies", &self.inspect_bodies)
            .field("undecoded_body_weight", &self.undecoded_body_weight)
            .field("log_paths", &self.log_paths)
            .field("log_every", &self.log_every)
            .field("strikes", &self.strikes)
            .field("authenticated", &self.authenticated.is_some())
            .field("tokio_time", &self.tokio_time)
            .finish_non_exhaustive()
    }
}

impl<Bl> Config<Bl> {
    pub(crate) fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// Whether the hook recognises the request (false without a hook).
    pub(crate) fn authenticated(&self, parts: &Parts) -> bool {
        self.authenticated.as_ref().is_some_and(|hook| hook(parts))
    }

    /// Remakes the state that reads the clock, after a setting changed.
    fn rebuild_clocked(&mut self) {
        self.log_throttle = Arc::new(LogThrottle::with_clock(
            self.log_every,
            Clock::new(self.tokio_time),
        ));
        self.strike_table = Arc::new(StrikeTable::new(self.strikes, Clock::new(self.tokio_time)));
    }
}

/// The built-in detectors with their default weights.
fn default_detectors() -> Vec<Arc<dyn Detector>> {
    vec![
        Arc::new(SqlInjection::new()),
        Arc::new(Xss::new()),
        Arc::new(PathTraversal::new()),
        Arc::new(UserAgents::new()),
        Arc::new(RapidRequests::new()),
        Arc::new(ProbePaths::new()),
        Arc::new(NotFoundRate::new()),
        Arc::new(DistinctPaths::new()),
    ]
}

impl ShieldLayer<LocalBlocklist> {
    /// Every built-in detector with its default weight, threshold 5,
    /// [`Action::Block`] for an hour after 5 [`Strikes`] within 10 minutes,
    /// a [`LocalBlocklist`], no allow-list, no
    /// [`authenticated`](Self::authenticated) hook, the client IP from the
    /// socket peer, default [`Limits`].
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                detectors: default_detectors().into(),
                threshold: 5,
                action: Action::default(),
                blocklist: LocalBlocklist::new(),
                allow: Vec::new(),
                client_ip: ClientIpKey::new(),
                limits: Limits::default(),
                inspect_bodies: true,
                undecoded_body_weight: DEFAULT_UNDECODED_BODY_WEIGHT,
                log_paths: true,
                log_every: DEFAULT_LOG_EVERY,
                log_throttle: Arc::new(LogThrottle::new(DEFAULT_LOG_EVERY)),
                strikes: Strikes::default(),
                strike_table: Arc::new(StrikeTable::new(Strikes::default(), Clock::new(false))),
                authenticated: None,
                tokio_time: false,
            }),
        }
    }
}

impl Default for ShieldLayer<LocalBlocklist> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Bl: Blocklist> ShieldLayer<Bl> {
    fn edit(mut self, f: impl FnOnce(&mut Config<Bl>)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Replaces the detectors (the built-in ones are the default).
    pub fn detectors<I>(self, detectors: I) -> Self
    where
        I: IntoIterator<Item = Arc<dyn Detector>>,
    {
        let detectors: Arc<[Arc<dyn Detector>]> = detectors.into_iter().collect();
        self.edit(|c| c.detectors = detectors)
    }

    /// Adds a detector after the others.
    pub fn detector(self, detector: impl Detector) -> Self {
        self.edit(|c| {
            let mut all: Vec<Arc<dyn Detector>> = c.detectors.to_vec();
            all.push(Arc::new(detector));
            c.detectors = all.into();
        })
    }

    /// The score at which the [`Action`] applies (default 5, as the OWASP
    /// Core Rule Set's inbound anomaly threshold). 0 turns the action off:
    /// findings are only logged.
    pub fn threshold(self, threshold: u32) -> Self {
        self.edit(|c| c.threshold = threshold)
    }

    /// What happens at the threshold (default [`Action::Block`] for an
    /// hour, once the client has enough [`Strikes`]).
    pub fn action(self, action: Action) -> Self {
        self.edit(|c| c.action = action)
    }

    /// When [`Action::Block`] blocks a client: after `strikes.count`
    /// requests at or over the threshold within `strikes.window` (default
    /// 5 within 10 minutes). Each of them is refused; the ones before the
    /// last block no one. [`Strikes::first`] blocks at the first.
    pub fn strikes(self, strikes: Strikes) -> Self {
        self.edit(|c| {
            c.strikes = strikes;
            c.rebuild_clocked();
        })
    }

    /// Recognises requests that carry valid credentials (see
    /// [`Authenticated`]): they are refused at the threshold like any
    /// other, but never block their address or count a strike against it,
    /// and they are served (and inspected) even while their address is
    /// blocked. Without a hook (the default) every request is judged by its
    /// address alone.
    pub fn authenticated(self, hook: impl Authenticated) -> Self {
        let hook: AuthHook = Arc::new(move |parts: &Parts| hook.is_authenticated(parts));
        self.edit(|c| c.authenticated = Some(hook))
    }

    /// Reads tokio's clock for the layer's own state (strikes, the log
    /// throttle), so tests can pause and advance time. Detectors and
    /// blocklists have their own switch.
    pub fn tokio_time(self, enabled: bool) -> Self {
        self.edit(|c| {
            c.tokio_time = enabled;
            c.rebuild_clocked();
        })
    }

    /// Where blocked clients are kept (default a [`LocalBlocklist`]; a
    /// `RedisBlocklist` with feature `redis` shares them between
    /// instances).
    pub fn blocklist<Bl2: Blocklist>(self, blocklist: Bl2) -> ShieldLayer<Bl2> {
        let c = Arc::unwrap_or_clone(self.config);
        ShieldLayer {
            config: Arc::new(Config {
                detectors: c.detectors,
                threshold: c.threshold,
                action: c.action,
                blocklist,
                allow: c.allow,
                client_ip: c.client_ip,
                limits: c.limits,
                inspect_bodies: c.inspect_bodies,
                undecoded_body_weight: c.undecoded_body_weight,
                log_paths: c.log_paths,
                log_every: c.log_every,
                log_throttle: c.log_throttle,
                strikes: c.strikes,
                strike_table: c.strike_table,
                authenticated: c.authenticated,
                tokio_time: c.tokio_time,
            }),
        }
    }

    /// Clients in `cidr` are never inspected, scored, blocked or refused,
    /// even when the blocklist holds them.
    pub fn allow(self, cidr: Cidr) -> Self {
        self.edit(|c| c.allow.push(cidr))
    }

    /// Adds every network of `cidrs` to the allow-list.
    pub fn allow_all(self, cidrs: impl IntoIterator<Item = Cidr>) -> Self {
        self.edit(|c| c.allow.extend(cidrs))
    }

    /// How the client IP is found (default the socket peer; see
    /// [`ClientIpKey::trusted_proxies`] behind a load balancer). Forwarding
    /// headers from untrusted peers are ignored, so a client cannot get
    /// another address blocked.
    pub fn client_ip(self, client_ip: ClientIpKey) -> Self {
        self.edit(|c| c.client_ip = client_ip)
    }

    /// How much of each request is inspected (default 8 KiB of path and
    /// query, 64 KiB of body, 512 bytes of user agent).
    pub fn limits(self, limits: Limits) -> Self {
        self.edit(|c| c.limits = limits)
    }

    /// Whether JSON and form bodies are read and inspected (default true).
    pub fn inspect_bodies(self, enabled: bool) -> Self {
        self.edit(|c| c.inspect_bodies = enabled)
    }

    /// The score of a JSON or form body the shield cannot inspect because
    /// of its `Content-Encoding` (default 2, reason `undecoded_body`): a
    /// coding it does not decode (`br`, `zstd`, stacked codings such as
    /// `gzip, gzip`, unknown ones; `gzip` and `deflate` too without the
    /// `gzip` feature) or a body that does not decode as it claims. Below
    /// the threshold, so such a body alone is logged, not refused; 0 scores
    /// nothing.
    pub fn undecoded_body_weight(self, weight: u32) -> Self {
        self.edit(|c| c.undecoded_body_weight = weight)
    }

    /// Whether log events carry the request path (default true; turn it
    /// off when paths hold secrets such as reset tokens). Query strings and
    /// bodies are never logged.
    pub fn log_paths(self, enabled: bool) -> Self {
        self.edit(|c| c.log_paths = enabled)
    }

    /// At most one event per client per `interval` (default 10 s; zero
    /// logs every one) for its suspicious requests, refusals and strikes,
    /// and for the `DEBUG` event of a blocked client's refused request: a
    /// client that loops without pause would otherwise write a line per
    /// request. The events in between are counted in
    /// `hasivu_shield_log_suppressed_total`, and the next event carries
    /// their number as `suppressed`. Blocks are always logged.
    pub fn log_every(self, interval: Duration) -> Self {
        self.edit(|c| {
            c.log_every = interval;
            c.log_throttle = Arc::new(LogThrottle::with_clock(interval, Clock::new(c.tokio_time)));
        })
    }

    /// The blocklist, to unblock clients or list them.
    pub fn get_blocklist(&self) -> &Bl {
        &self.config.blocklist
    }
}

impl<S, Bl: Blocklist> Layer<S> for ShieldLayer<Bl> {
    type Service = Shield<S, Bl>;

    fn layer(&self, inner: S) -> Self::Service {
        Shield {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}
