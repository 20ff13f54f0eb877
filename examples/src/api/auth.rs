//! Passwords (argon2) and signed tokens (HMAC-SHA256).
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(secret,
//! first part))`: the claims carry the user id, school, role, tier and
//! expiry. [`AuthLayer`] verifies the `Authorization: Bearer` token of each
//! request and puts the [`Claims`] and a [`RateLimitIdentity`] into the
//! request's extensions, so the rate limiter keys on the user and scales the
//! quota by the tier, and handlers read who is calling. An absent or
//! invalid token leaves the request anonymous (handlers that need a user
//! answer 401).

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hasivu_ratelimit::http::RateLimitIdentity;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::api::{
    config::ConfigError,
    db::{now_secs, seed::DEMO_PASSWORD_HASH},
};

/// The shortest `HASIVU_TOKEN_SECRET` accepted, in bytes: the output size
/// of SHA-256, below which the HMAC key is weaker than the hash (RFC 2104
/// section 3) and a guessable phrase lets anyone forge tokens.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: i64,
    /// School id.
    pub school: i64,
    /// `admin`, `staff` or `parent`.
    pub role: String,
    /// Rate-limit tier: `free`, `premium` or `admin`.
    pub tier: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

/// Signs and verifies tokens.
#[derive(Clone)]
pub struct Tokens {
    key: Arc<[u8]>,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens signed with `secret`, valid for `ttl`; a random secret (and a
    /// warning) when `None`.
    ///
    /// # Errors
    ///
    /// A secret shorter than [`MIN_SECRET_BYTES`], named as the
    /// `HASIVU_TOKEN_SECRET` setting.
    pub fn new(secret: Option<&str>, ttl: Duration) -> Result<Self, ConfigError> {
        let key: Arc<[u8]> = match secret {
            Some(secret) => {
                check_secret(secret)?;
                secret.as_bytes().into()
            }
            None => {
                tracing::warn!(
                    "HASIVU_TOKEN_SECRET is not set: using a random secret; tokens die with this process and other instances reject them"
                );
                let mut key = [0u8; MIN_SECRET_BYTES];
                getrandom::fill(&mut key).expect("the operating system's random source");
                key.as_slice().into()
            }
        };
        Ok(Self { key, ttl })
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// A token for these claims (their `exp` is set from the TTL).
    pub fn issue(&self, mut claims: Claims) -> String {
        claims.exp = now_secs() + self.ttl.as_secs() as i64;
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (payload, signature) = token.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now_secs()).then_some(claims)
    }

    /// The token's validity in seconds.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Refuses a token secret shorter than [`MIN_SECRET_BYTES`]; the error
/// names the setting and the minimum, never the secret.
///
/// # Errors
///
/// The secret is too short.
pub fn check_secret(secret: &str) -> Result<(), ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError(format!(
            "HASIVU_TOKEN_SECRET: at least {MIN_SECRET_BYTES} bytes, got {}; e.g. `openssl rand -base64 32`",
            secret.len()
        )));
    }
    Ok(())
}

/// Checks a password against a PHC string (argon2). Runs on a blocking
/// thread: a hash is deliberately slow.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        // An unknown user is checked against the demo hash, so both cases
        // take the same time and do not reveal which emails exist.
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DEMO_PASSWORD_HASH.trim().to_owned());
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// The verified claims from an `Authorization: Bearer` header.
pub fn bearer(tokens: &Tokens, headers: &http::HeaderMap) -> Option<Claims> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    tokens.verify(token.trim())
}

/// Verifies tokens and records who calls; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    tokens: Tokens,
}

impl AuthLayer {
    /// A layer verifying with `tokens`.
    pub fn new(tokens: Tokens) -> Self {
        Self { tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    tokens: Tokens,
}

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Never trust claims a client put there.
        request.extensions_mut().remove::<Claims>();
        if let Some(claims) = bearer(&self.tokens, request.headers()) {
            request.extensions_mut().insert(RateLimitIdentity {
                user: Some(claims.sub.to_string()),
                tier: Some(claims.tier.clone()),
            });
            request.extensions_mut().insert(claims);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: 7,
            school: 1,
            role: "parent".into(),
            tier: "free".into(),
            exp: 0,
        }
    }

    const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes";

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let tokens = Tokens::new(Some(SECRET), Duration::from_secs(60)).unwrap();
        let token = tokens.issue(claims());
        assert_eq!(tokens.verify(&token).unwrap().sub, 7);
        let other = Tokens::new(Some(&SECRET.replace('a', "b")), Duration::from_secs(60)).unwrap();
        assert!(other.verify(&token).is_none());
        let (payload, signature) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .replace("\"sub\":7", "\"sub\":1"),
        );
        assert!(tokens.verify(&format!("{forged}.{signature}")).is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = Tokens::new(Some(SECRET), Duration::ZERO).unwrap();
        assert!(tokens.verify(&tokens.issue(claims())).is_none());
    }

    #[test]
    fn a_short_secret_is_refused_and_none_gets_a_random_one() {
        let error = Tokens::new(Some("secret"), Duration::from_secs(60)).unwrap_err();
        assert!(
            error.0.starts_with("HASIVU_TOKEN_SECRET") && error.0.contains("32 bytes"),
            "{error}"
        );
        assert!(
            !error.0.contains("\"secret\""),
            "the secret is not echoed: {error}"
        );
        assert!(Tokens::new(Some(&"x".repeat(31)), Duration::from_secs(60)).is_err());
        assert!(Tokens::new(Some(&"x".repeat(32)), Duration::from_secs(60)).is_ok());
        let a = Tokens::new(None, Duration::from_secs(60)).unwrap();
        let b = Tokens::new(None, Duration::from_secs(60)).unwrap();
        assert!(b.verify(&a.issue(claims())).is_none(), "two random secrets");
    }
}
