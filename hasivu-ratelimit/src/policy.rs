//! Named policies per route, and tier multipliers.

use std::{sync::Arc, time::Duration};

use crate::{Quota, WhenFull};

/// A named quota. The name identifies the policy in the `RateLimit-Policy`
/// header and keeps the counters of different policies apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: Arc<str>,
    quota: Quota,
}

impl Policy {
    /// A policy named `name` (letters, digits, `-`, `_`, `.`; other
    /// characters are replaced by `_` so the name stays a valid header
    /// token).
    pub fn new(name: &str, quota: Quota) -> Self {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            name: name.into(),
            quota,
        }
    }

    /// The name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The quota before tier and load scaling.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }
}

/// Which requests a route policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteMatch {
    /// `None`: any method.
    method: Option<String>,
    path: String,
    prefix: bool,
}

impl RouteMatch {
    fn parse(method: Option<&str>, path: &str) -> Self {
        let (path, prefix) = match path.strip_suffix('*') {
            Some(prefix) => (prefix.to_owned(), true),
            None => (path.to_owned(), false),
        };
        Self {
            method: method.map(str::to_ascii_uppercase),
            path,
            prefix,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && if self.prefix {
                path.starts_with(&self.path)
            } else {
                path == self.path
            }
    }
}

/// The policies of an API: one per route pattern, and a default.
///
/// Patterns are exact paths (`/auth/login`) or prefixes ending in `*`
/// (`/payments/*`), optionally for one method; the first matching route
/// wins, and requests no route matches get the default policy.
///
/// ```
/// use hasivu_ratelimit::{Policies, Policy, Quota};
///
/// let policies = Policies::report_defaults();
/// assert_eq!(&**policies.resolve("GET", "/menu/daily").name(), "general");
/// assert_eq!(&**policies.resolve("POST", "/auth/login").name(), "login");
/// assert_eq!(&**policies.resolve("POST", "/payments/create").name(), "payments");
///
/// let custom = Policies::new(Policy::new("general", Quota::per_minute(600)))
///     .route(Some("POST"), "/orders/*", Policy::new("orders", Quota::per_minute(30)));
/// assert_eq!(&**custom.resolve("POST", "/orders/create").name(), "orders");
/// assert_eq!(&**custom.resolve("GET", "/orders/create").name(), "general");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    default: Policy,
    routes: Vec<(RouteMatch, Policy)>,
}

impl Policies {
    /// Only a default policy.
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            routes: Vec::new(),
        }
    }

    /// The report's general limit with stricter policies for login and
    /// payments:
    ///
    /// | policy | routes | quota | when the local store is full |
    /// | --- | --- | --- | --- |
    /// | `general` | everything else | 1000 per 15 min (the report's) | evict |
    /// | `login` | `POST /auth/login` | 10 per 15 min, burst 5 | refuse |
    /// | `payments` | `POST /payments/*` | 30 per 15 min, burst 10 | refuse |
    ///
    /// Login is limited hard because each attempt costs a deliberate
    /// password hash and invites credential stuffing; payments because each
    /// one reaches a payment provider. For the same reasons both are strict
    /// ([`WhenFull::Refuse`]): a full local store refuses a new client
    /// rather than forget one still counting. Tier multipliers apply to
    /// all three.
    pub fn report_defaults() -> Self {
        let fifteen_minutes = Duration::from_secs(15 * 60);
        Self::new(Policy::new("general", Quota::new(1000, fifteen_minutes)))
            .route(
                Some("POST"),
                "/auth/login",
                Policy::new(
                    "login",
                    Quota::new(10, fifteen_minutes)
                        .burst(5)
                        .when_full(WhenFull::Refuse),
                ),
            )
            .route(
                Some("POST"),
                "/payments/*",
                Policy::new(
                    "payments",
                    Quota::new(30, fifteen_minutes)
                        .burst(10)
                        .when_full(WhenFull::Refuse),
                ),
            )
    }

    /// Adds a route policy (`method` `None`: any method).
    #[must_use]
    pub fn route(mut self, method: Option<&str>, path: &str, policy: Policy) -> Self {
        self.routes.push((RouteMatch::parse(method, path), policy));
        self
    }

    /// The policy for a request.
    pub fn resolve(&self, method: &str, path: &str) -> &Policy {
        self.resolve_indexed(method, path).1
    }

    /// The policy for a request and its index in [`all`](Self::all).
    pub(crate) fn resolve_indexed(&self, method: &str, path: &str) -> (usize, &Policy) {
        self.routes
            .iter()
            .position(|(route, _)| route.matches(method, path))
            .map_or((0, &self.default), |i| (i + 1, &self.routes[i].1))
    }

    /// Every policy: the default first, then the routes' in order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&self.default).chain(self.routes.iter().map(|(_, p)| p))
    }

    /// The default policy.
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }
}

/// Configuration form of [`Policies`]:
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::{Policies, Quota, WhenFull};
///
/// let policies: Policies = serde_json::from_str(r#"{
///     "default": { "name": "general", "limit": 1000, "window": "15m" },
///     "routes": [
///         { "method": "POST", "path": "/auth/login", "name": "login", "limit": 10, "window": "15m", "burst": 5,
///           "when_full": "refuse" }
///     ]
/// }"#).unwrap();
/// assert_eq!(&**policies.resolve("POST", "/auth/login").name(), "login");
/// let login = Quota::new(10, Duration::from_secs(900)).burst(5).when_full(WhenFull::Refuse);
/// assert_eq!(policies.resolve("POST", "/auth/login").quota(), &login);
/// ```
impl<'de> serde::Deserialize<'de> for Policies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: String,
            limit: u32,
            #[serde(deserialize_with = "crate::duration::deserialize")]
            window: Duration,
            #[serde(default)]
            burst: Option<u32>,
            #[serde(default)]
            when_full: WhenFull,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Route {
            #[serde(default)]
            method: Option<String>,
            path: String,
            name: String,
            limit: u32,
            #[serde(deserialize_with = "crate::duration::deserialize")]
            window: Duration,
            #[serde(default)]
            burst: Option<u32>,
            #[serde(default)]
            when_full: WhenFull,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            default: Named,
            #[serde(default)]
            routes: Vec<Route>,
        }
        let quota = |limit: u32, window: Duration, burst: Option<u32>, when_full: WhenFull| {
            let quota = Quota::new(limit, window).when_full(when_full);
            match burst {
                Some(burst) => quota.burst(burst),
                None => quota,
            }
        };
        let raw = Raw::deserialize(d)?;
        let d = raw.default;
        let mut policies = Policies::new(Policy::new(
            &d.name,
            quota(d.limit, d.window, d.burst, d.when_full),
        ));
        for r in raw.routes {
            policies = policies.route(
                r.method.as_deref(),
                &r.path,
                Policy::new(&r.name, quota(r.limit, r.window, r.burst, r.when_full)),
            );
        }
        Ok(policies)
    }
}

/// Multipliers per user tier. The report's: free ×1, premium ×3, admin ×10.
/// An unknown or missing tier gets the base multiplier (1 unless set).
///
/// ```
/// use hasivu_ratelimit::Tiers;
///
/// let tiers = Tiers::report_defaults();
/// assert_eq!(tiers.multiplier(Some("premium")), 3.0);
/// assert_eq!(tiers.multiplier(Some("unknown")), 1.0);
/// assert_eq!(tiers.multiplier(None), 1.0);
///
/// let tiers: Tiers = serde_json::from_str(r#"{ "free": 1, "school": 5 }"#).unwrap();
/// assert_eq!(tiers.multiplier(Some("school")), 5.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tiers {
    tiers: Vec<(String, f64)>,
    base: f64,
}

impl Default for Tiers {
    fn default() -> Self {
        Self {
            tiers: Vec::new(),
            base: 1.0,
        }
    }
}

impl Tiers {
    /// No tiers: every request gets the base multiplier 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// free ×1, premium ×3, admin ×10.
    pub fn report_defaults() -> Self {
        Self::new()
            .tier("free", 1.0)
            .tier("premium", 3.0)
            .tier("admin", 10.0)
    }

    /// Adds or replaces a tier (negative multipliers count as 0).
    #[must_use]
    pub fn tier(mut self, name: &str, multiplier: f64) -> Self {
        let multiplier = multiplier.max(0.0);
        match self.tiers.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = multiplier,
            None => self.tiers.push((name.to_owned(), multiplier)),
        }
        self
    }

    /// The multiplier for requests without a known tier.
    #[must_use]
    pub fn base(mut self, multiplier: f64) -> Self {
        self.base = multiplier.max(0.0);
        self
    }

    /// The multiplier of `tier`.
    pub fn multiplier(&self, tier: Option<&str>) -> f64 {
        tier.and_then(|t| self.tiers.iter().find(|(n, _)| n == t))
            .map_or(self.base, |(_, m)| *m)
    }
}

impl<'de> serde::Deserialize<'de> for Tiers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, f64>::deserialize(d)?;
        Ok(map
            .into_iter()
            .fold(Tiers::new(), |tiers, (name, m)| tiers.tier(&name, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_route_wins() {
        let p = Policies::new(Policy::new("d", Quota::per_second(1)))
            .route(None, "/a/b", Policy::new("exact", Quota::per_second(2)))
            .route(None, "/a/*", Policy::new("prefix", Quota::per_second(3)))
            .route(
                Some("post"),
                "/c",
                Policy::new("post", Quota::per_second(4)),
            );
        assert_eq!(&**p.resolve("GET", "/a/b").name(), "exact");
        assert_eq!(&**p.resolve("GET", "/a/c").name(), "prefix");
        assert_eq!(&**p.resolve("GET", "/a").name(), "d");
        assert_eq!(&**p.resolve("POST", "/c").name(), "post");
        assert_eq!(&**p.resolve("GET", "/c").name(), "d");
    }

    #[test]
    fn login_and_payments_are_strict_by_default() {
        let p = Policies::report_defaults();
        for (method, path, when_full) in [
            ("POST", "/auth/login", WhenFull::Refuse),
            ("POST", "/payments/create", WhenFull::Refuse),
            ("GET", "/menu/daily", WhenFull::Evict),
        ] {
            assert_eq!(
                p.resolve(method, path).quota().when_full,
                when_full,
                "{path}"
            );
        }
        let bad =
            r#"{ "default": { "name": "g", "limit": 1, "window": "1s", "when_full": "panic" } }"#;
        assert!(serde_json::from_str::<Policies>(bad).is_err());
    }

    #[test]
    fn names_stay_header_tokens() {
        assert_eq!(
            &**Policy::new("a b;c\"d", Quota::per_second(1)).name(),
            "a_b_c_d"
        );
    }
}
