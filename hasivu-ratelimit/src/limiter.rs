//! The limiter: policy, tier and load resolved into a quota, checked in a
//! store. Callable without HTTP.

use std::sync::Arc;

use metrics::Counter;

use crate::{
    Decision, LoadControl, LocalStore, Policies, Policy, Quota, Source, Store, StoreKey, Tiers,
};

/// One request to check.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The HTTP method (`GET`…), for route policies.
    pub method: &'a str,
    /// The path, for route policies.
    pub path: &'a str,
    /// The client's key (an IP, a user id, an API key).
    pub key: &'a str,
    /// The client's tier (`free`, `premium`, `admin`…), if known.
    pub tier: Option<&'a str>,
    /// How many units the request costs (usually 1).
    pub cost: u32,
}

/// Checks requests against policies, tiers and the load, in a [`Store`].
/// Cheap to clone; clones share everything.
///
/// ```
/// use hasivu_ratelimit::{Limiter, Policies, Policy, Quota, Request, Tiers};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limiter = Limiter::builder()
///     .policies(Policies::new(Policy::new("general", Quota::per_minute(2))))
///     .tiers(Tiers::report_defaults())
///     .build();
///
/// // Without HTTP: a key and a cost.
/// assert!(limiter.check("203.0.113.7", 1).await.is_allowed());
///
/// // A premium user gets three times the quota.
/// let request = Request { method: "GET", path: "/menu/daily", key: "user:42", tier: Some("premium"), cost: 1 };
/// let decision = limiter.check_request(request).await;
/// assert_eq!(decision.verdict.limit, 6);
/// assert_eq!(decision.verdict.remaining, 5);
/// # }
/// ```
pub struct Limiter<S = LocalStore> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Limiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.inner.store)
            .field("policies", &self.inner.policies)
            .field("tiers", &self.inner.tiers)
            .field("load", &self.inner.load)
            .field("shadow", &self.inner.shadow)
            .finish()
    }
}

struct Inner<S> {
    store: S,
    policies: Policies,
    tiers: Tiers,
    load: Option<LoadControl>,
    shadow: bool,
    /// Per policy (in `Policies::all` order): a counter per decision and
    /// source, resolved once.
    counters: Vec<[Counter; 2 * Source::ALL.len()]>,
}

/// Builds a [`Limiter`].
#[derive(Debug)]
#[must_use]
pub struct LimiterBuilder<S = LocalStore> {
    store: S,
    policies: Policies,
    tiers: Tiers,
    load: Option<LoadControl>,
    shadow: bool,
}

impl Limiter<LocalStore> {
    /// A builder with the defaults: a [`LocalStore`], the report's policies
    /// ([`Policies::report_defaults`]) and tiers
    /// ([`Tiers::report_defaults`]), no load adaptation, enforcing.
    pub fn builder() -> LimiterBuilder<LocalStore> {
        LimiterBuilder {
            store: LocalStore::new(),
            policies: Policies::report_defaults(),
            tiers: Tiers::report_defaults(),
            load: None,
            shadow: false,
        }
    }
}

impl<S: Store> LimiterBuilder<S> {
    /// The store that counts.
    pub fn store<S2: Store>(self, store: S2) -> LimiterBuilder<S2> {
        LimiterBuilder {
            store,
            policies: self.policies,
            tiers: self.tiers,
            load: self.load,
            shadow: self.shadow,
        }
    }

    /// The policies.
    pub fn policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }

    /// One policy for everything.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.policies = Policies::new(Policy::new("default", quota));
        self
    }

    /// The tier multipliers.
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.tiers = tiers;
        self
    }

    /// Scales limits with the load: while `control` says reduced, quotas are
    /// multiplied by its factor and rejections say so.
    pub fn load(mut self, control: LoadControl) -> Self {
        self.load = Some(control);
        self
    }

    /// Shadow mode: count and report, never refuse.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> Limiter<S> {
        let counters = self
            .policies
            .all()
            .map(|policy| {
                std::array::from_fn(|i| {
                    let allowed = i < Source::ALL.len();
                    let source = Source::ALL[i % Source::ALL.len()];
                    metrics::counter!(
                        "hasivu_ratelimit_decisions_total",
                        "policy" => Arc::clone(policy.name()),
                        "decision" => if allowed { "allowed" } else { "limited" },
                        "source" => source.as_str(),
                    )
                })
            })
            .collect();
        Limiter {
            inner: Arc::new(Inner {
                counters,
                store: self.store,
                policies: self.policies,
                tiers: self.tiers,
                load: self.load,
                shadow: self.shadow,
            }),
        }
    }
}

impl<S: Store> Limiter<S> {
    /// Checks `cost` units for `key` under the default policy, without a
    /// tier.
    pub async fn check(&self, key: &str, cost: u32) -> Decision {
        let policy = self.inner.policies.default_policy();
        self.decide(0, policy, key, None, cost).await
    }

    /// Checks a request: its route picks the policy, its tier and the load
    /// scale the quota.
    pub async fn check_request(&self, request: Request<'_>) -> Decision {
        let (index, policy) = self
            .inner
            .policies
            .resolve_indexed(request.method, request.path);
        self.decide(index, policy, request.key, request.tier, request.cost)
            .await
    }

    /// The policies.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The load control, if any.
    pub fn load_control(&self) -> Option<&LoadControl> {
        self.inner.load.as_ref()
    }

    /// [`check_request`](Self::check_request) answered at once when the
    /// store can (see [`Store::check_now`]).
    pub fn check_request_now(&self, request: Request<'_>) -> Option<Decision> {
        let (index, policy) = self
            .inner
            .policies
            .resolve_indexed(request.method, request.path);
        let (quota, load) = self.quota(policy, request.tier);
        let key = StoreKey {
            policy: policy.name(),
            key: request.key,
        };
        let (verdict, source) = self.inner.store.check_now(key, &quota, request.cost)?;
        Some(self.finish(index, policy, &quota, load, verdict, source))
    }

    async fn decide(
        &self,
        index: usize,
        policy: &Policy,
        key: &str,
        tier: Option<&str>,
        cost: u32,
    ) -> Decision {
        let (quota, load) = self.quota(policy, tier);
        let store_key = StoreKey {
            policy: policy.name(),
            key,
        };
        let (verdict, source) = self.inner.store.check(store_key, &quota, cost).await;
        self.finish(index, policy, &quota, load, verdict, source)
    }

    /// The policy's quota scaled by the tier and the load, and the load
    /// factor.
    fn quota(&self, policy: &Policy, tier: Option<&str>) -> (Quota, f64) {
        let load = self.inner.load.as_ref().map_or(1.0, LoadControl::factor);
        let factor = self.inner.tiers.multiplier(tier) * load;
        (policy.quota().scaled(factor), load)
    }

    fn finish(
        &self,
        index: usize,
        policy: &Policy,
        quota: &Quota,
        load: f64,
        verdict: crate::Verdict,
        source: Source,
    ) -> Decision {
        let slot = source.index()
            + if verdict.allowed {
                0
            } else {
                Source::ALL.len()
            };
        self.inner.counters[index][slot].increment(1);
        if !verdict.allowed {
            tracing::debug!(
                policy = &**policy.name(),
                limit = verdict.limit,
                source = source.as_str(),
                shadow = self.inner.shadow,
                "rate limited"
            );
        }
        Decision {
            verdict,
            policy: Arc::clone(policy.name()),
            window: quota.window(),
            reduced: load < 1.0,
            shadow: self.inner.shadow,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Hysteresis, LoadControl};

    fn request<'a>(path: &'a str, key: &'a str, tier: Option<&'a str>) -> Request<'a> {
        Request {
            method: "GET",
            path,
            key,
            tier,
            cost: 1,
        }
    }

    #[tokio::test]
    async fn tier_multipliers_scale_the_quota() {
        let limiter = Limiter::builder().quota(Quota::per_minute(2)).build();
        for (tier, expected) in [
            (None, 2),
            (Some("free"), 2),
            (Some("premium"), 6),
            (Some("admin"), 20),
        ] {
            let key = format!("{tier:?}");
            let mut admitted = 0;
            while limiter
                .check_request(request("/", &key, tier))
                .await
                .is_allowed()
            {
                admitted += 1;
            }
            assert_eq!(admitted, expected, "{tier:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn load_halves_the_quota_and_marks_the_decision() {
        let load = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let control = {
            let load = Arc::clone(&load);
            LoadControl::with(
                move || {
                    if load.load(std::sync::atomic::Ordering::Relaxed) {
                        0.95
                    } else {
                        0.1
                    }
                },
                Hysteresis::default(),
                Duration::from_secs(1),
            )
        };
        control.update();
        let limiter = Limiter::builder()
            .quota(Quota::per_minute(10))
            .load(control.clone())
            .build();
        let decision = limiter.check("k", 1).await;
        assert!(decision.reduced);
        assert_eq!(decision.verdict.limit, 5);
        load.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(11)).await;
        control.update();
        let decision = limiter.check("k2", 1).await;
        assert!(!decision.reduced);
        assert_eq!(decision.verdict.limit, 10);
    }

    #[tokio::test]
    async fn shadow_mode_reports_but_lets_through() {
        let limiter = Limiter::builder()
            .quota(Quota::per_minute(1))
            .shadow(true)
            .build();
        assert!(limiter.check("k", 1).await.verdict.allowed);
        let second = limiter.check("k", 1).await;
        assert!(!second.verdict.allowed);
        assert!(second.is_allowed());
        assert!(second.shadow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_refuses_new_logins_and_admits_new_general_requests() {
        let store = LocalStore::builder().max_keys(64).tokio_time(true).build();
        let limiter = Limiter::builder().store(store.clone()).build();
        // Clients of the general policy fill every shard.
        let mut i = 0;
        while store.len() < 64 {
            assert!(limiter.check(&format!("192.0.2.{i}"), 1).await.is_allowed());
            i += 1;
            assert!(i < 100_000, "the store never filled");
        }
        let login = |key| Request {
            method: "POST",
            path: "/auth/login",
            key,
            tier: None,
            cost: 1,
        };
        let refused = limiter.check_request(login("203.0.113.1")).await;
        assert!(!refused.is_allowed(), "a strict policy fails closed");
        assert_eq!(&*refused.policy, "login");
        let retry = refused.verdict.retry_after.expect("a retry hint");
        assert!(retry <= Duration::from_millis(900), "{retry:?}");
        assert_eq!(store.refusals(), 1);
        assert!(
            limiter.check("203.0.113.2", 1).await.is_allowed(),
            "the general policy evicts instead"
        );
        // Once the general keys have rested, the login gets in.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            limiter
                .check_request(login("203.0.113.1"))
                .await
                .is_allowed()
        );
    }

    #[tokio::test]
    async fn routes_pick_their_policy_and_count_apart() {
        let limiter = Limiter::builder().build();
        let login = Request {
            method: "POST",
            path: "/auth/login",
            key: "203.0.113.9",
            tier: None,
            cost: 1,
        };
        let mut admitted = 0;
        while limiter.check_request(login).await.is_allowed() {
            admitted += 1;
        }
        assert_eq!(admitted, 5, "the login policy's burst");
        let general = limiter
            .check_request(request("/menu/daily", "203.0.113.9", None))
            .await;
        assert!(general.is_allowed(), "general has its own counter");
        assert_eq!(&*general.policy, "general");
    }
}
