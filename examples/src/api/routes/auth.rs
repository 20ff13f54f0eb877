//! `POST /auth/login`.
//!
//! A login costs an argon2id verification (19 MiB, a core for tens of
//! milliseconds), so it is guarded three ways before and while it runs:
//!
//! 1. a quota per account, keyed on the submitted email (trimmed and
//!    lower-cased, hashed so that no address lands in Redis), whether the
//!    account exists or not;
//! 2. a global quota, all clients together;
//! 3. the bounded verifier ([`Passwords`]): a few workers, a bounded queue
//!    with a timeout.
//!
//! Quotas answer 429 and a busy verifier 503, both with `Retry-After` and
//! a problem body. The quotas live in the limiter's store: in process, or
//! in Redis with `REDIS_URL`, so that instances share them. The layer
//! stack's per-client `login` policy still applies before all this.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use hasivu_ratelimit::{AnyStore, Decision, Limiter, Policies, Policy};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{
    app::{AppState, BoxError, limiter_store, quota},
    auth::{Busy, Claims, Passwords},
    config::Config,
    problem::{body, invalid, problem, respond},
};

/// The login quotas and the password verifier, shared by the handlers.
#[derive(Clone, Debug)]
pub struct Logins {
    /// Password verification, bounded in concurrency and memory.
    pub passwords: Passwords,
    account: Limiter<AnyStore>,
    global: Limiter<AnyStore>,
}

impl Logins {
    /// The quotas `HASIVU_RATE_LOGIN_ACCOUNT` and
    /// `HASIVU_RATE_LOGIN_GLOBAL` in the limiter's store, and a verifier
    /// with `HASIVU_LOGIN_WORKERS`, `HASIVU_LOGIN_QUEUE` and
    /// `HASIVU_LOGIN_WAIT_SECS`.
    ///
    /// # Errors
    ///
    /// An invalid Redis URL.
    pub fn from_config(config: &Config) -> Result<Self, BoxError> {
        let store = limiter_store(config)?;
        let limiter = |name: &str, quota| {
            Limiter::builder()
                .store(store.clone())
                .policies(Policies::new(Policy::new(name, quota)))
                .build()
        };
        let account = quota(config.rate_login_account);
        Ok(Self {
            passwords: Passwords::new(config.login_workers, config.login_queue, config.login_wait),
            account: limiter(
                "login-account",
                account.burst(5.min(account.limit()).max(1)),
            ),
            global: limiter("login-global", quota(config.rate_login_global)),
        })
    }

    /// The quotas' verdict on a login for `email`: `None` when admitted,
    /// else the 429 to send. The account is checked first, so that attempts
    /// on a refused account do not use up everyone's quota.
    pub async fn admit(&self, email: &str) -> Option<Response> {
        let normalised = email.trim().to_lowercase();
        let key: String = Sha256::digest(normalised.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let account = self.account.check(&key, 1).await;
        if !account.is_allowed() {
            return Some(quota_exceeded(&account));
        }
        let global = self.global.check("all", 1).await;
        (!global.is_allowed()).then(|| quota_exceeded(&global))
    }
}

/// Whole seconds, rounded up: a client told to wait never comes back early.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// 429, with the body fields of the rate-limit layer's own.
fn quota_exceeded(decision: &Decision) -> Response {
    let window = ceil_secs(decision.window);
    let retry = decision.verdict.retry_after.map(ceil_secs);
    let detail = match retry {
        Some(retry) => format!(
            "the {} quota of {} logins per {window} s is used up; retry in {retry} s",
            decision.policy, decision.verdict.limit
        ),
        None => format!(
            "the {} quota of {} logins per {window} s admits none",
            decision.policy, decision.verdict.limit
        ),
    };
    let mut value = body(
        429,
        "Quota exceeded",
        &detail,
        Some(json!({
            "policy": &*decision.policy,
            "limit": decision.verdict.limit,
            "window_seconds": window,
            "retry_after_seconds": retry,
        })),
    );
    value["type"] = "https://iana.org/assignments/http-problem-types#quota-exceeded".into();
    let mut response = respond(429, &value);
    // The stack's rate-limit layer writes the `RateLimit` fields of its
    // own policy on every answer; this quota speaks in the body.
    if let Some(retry) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    response
}

/// 503: every verification worker is busy and the queue is full, or the
/// wait timed out.
fn busy(busy: Busy) -> Response {
    let retry = ceil_secs(busy.retry_after);
    let mut response = problem(
        503,
        "login busy",
        &format!("every password check is in use; retry in {retry} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    response
}

/// Email and password → a signed token with user id, school, role and tier.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (value, _) = match super::json_body(&headers, body, 16 * 1024).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(email) = field("email").filter(|e| e.contains('@')) else {
        return respond(400, &invalid("email", "required, an email address"));
    };
    let Some(password) = field("password").filter(|p| !p.is_empty()) else {
        return respond(400, &invalid("password", "required"));
    };
    // The quotas first: they cost a map lookup (or one Redis call), the
    // rest a query and a hash.
    if let Some(refused) = state.logins.admit(&email).await {
        return refused;
    }
    let row = match state.db.login(&email.to_ascii_lowercase()).await {
        Ok(row) => row,
        Err(e) => return super::internal(e),
    };
    let hash = row.as_ref().map(|r| r.password_hash.clone());
    match state.logins.passwords.verify(password, hash).await {
        Ok(true) => {}
        Ok(false) => return problem(401, "invalid credentials", "wrong email or password"),
        Err(b) => return busy(b),
    }
    let row = row.expect("verified rows exist");
    let claims = Claims {
        sub: row.id,
        school: row.school_id,
        role: row.role,
        tier: row.tier,
        exp: 0,
    };
    let token = state.tokens.issue(claims.clone());
    Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl().as_secs(),
        "user": { "id": claims.sub, "school_id": claims.school, "role": claims.role, "tier": claims.tier },
    }))
    .into_response()
}
