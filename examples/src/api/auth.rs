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
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version, password_hash};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hasivu_ratelimit::http::RateLimitIdentity;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The most memory one verification may take: a stored hash asking for
/// more (64 MiB) is refused rather than allocated.
const MAX_BLOCKS: usize = 64 * 1024;

/// Password verification with bounded concurrency and memory.
///
/// An argon2id verification of the demo hash (m = 19 MiB) needs 19 MiB of
/// working memory and a core for a few dozen milliseconds. Left unbounded,
/// a login storm runs one verification per request on the blocking pool,
/// each allocating and freeing 19 MiB, and the allocator keeps what it was
/// given: 300 concurrent logins took a process from 27 MiB to over 4 GiB
/// and it never came back. Here at most `workers` verifications run at
/// once, each in a block of memory that is allocated once and reused, so
/// their memory is at most `workers` × 19 MiB, whatever the load. Logins
/// beyond the workers wait in a queue of at most `queue`, for at most
/// `wait`; the rest are [`Busy`].
///
/// Every verification costs the same, whether the password is right or
/// wrong and whether the account exists (an unknown one is checked against
/// the demo hash), so timing does not reveal which emails exist.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<PasswordsInner>,
}

struct PasswordsInner {
    permits: Arc<Semaphore>,
    workers: usize,
    queue: usize,
    waiting: AtomicUsize,
    wait: Duration,
    /// Working memory of idle workers: at most one block per worker ever
    /// exists, since a worker takes one only while it holds a permit.
    memory: Mutex<Vec<Vec<Block>>>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("workers", &self.inner.workers)
            .field("busy", &self.busy())
            .field("queue", &self.inner.queue)
            .field("waiting", &self.waiting())
            .field("wait", &self.inner.wait)
            .finish()
    }
}

/// Every worker is busy and the queue is full, or the wait for a worker
/// timed out: answer 503 with `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy {
    /// When to try again.
    pub retry_after: Duration,
}

/// A worker held for one verification; see [`Passwords::worker`].
#[derive(Debug)]
pub struct Worker {
    permit: OwnedSemaphorePermit,
    passwords: Passwords,
}

/// Takes a place in the queue; gives it back when dropped, so a login
/// whose client went away while it waited leaves no place behind.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Passwords {
    /// At most `workers` (at least 1) verifications at once, `queue`
    /// logins waiting for one, each for at most `wait`.
    pub fn new(workers: usize, queue: usize, wait: Duration) -> Self {
        let workers = workers.max(1);
        Self {
            inner: Arc::new(PasswordsInner {
                permits: Arc::new(Semaphore::new(workers)),
                workers,
                queue,
                waiting: AtomicUsize::new(0),
                wait,
                memory: Mutex::new(Vec::with_capacity(workers)),
            }),
        }
    }

    /// How many verifications may run at once.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// How many run now.
    pub fn busy(&self) -> usize {
        self.inner.workers - self.inner.permits.available_permits()
    }

    /// How many logins wait for a worker.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    fn busy_error(&self) -> Busy {
        metrics::counter!("hasivu_login_busy_total").increment(1);
        Busy {
            retry_after: self.inner.wait.max(Duration::from_secs(1)),
        }
    }

    /// A worker: at once when one is idle, else after waiting in the
    /// queue.
    ///
    /// # Errors
    ///
    /// [`Busy`] when the queue is full or the wait timed out.
    pub async fn worker(&self) -> Result<Worker, Busy> {
        let inner = &self.inner;
        let worker = |permit| Worker {
            permit,
            passwords: self.clone(),
        };
        // Permits go to waiters first (the semaphore is fair), so this
        // succeeds only when nobody waits.
        if let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() {
            return Ok(worker(permit));
        }
        let joined = inner
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.queue).then_some(n + 1)
            });
        if joined.is_err() {
            return Err(self.busy_error());
        }
        let _queued = Queued(&inner.waiting);
        match tokio::time::timeout(inner.wait, Arc::clone(&inner.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(worker(permit)),
            // Timed out (the semaphore is never closed).
            _ => Err(self.busy_error()),
        }
    }

    /// Checks `password` against a PHC string (argon2); `None` for an
    /// unknown account, which is checked against the demo hash at the same
    /// cost and never matches.
    ///
    /// # Errors
    ///
    /// [`Busy`], as [`worker`](Self::worker).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        Ok(self.worker().await?.verify(password, hash).await)
    }
}

impl Worker {
    /// Runs the verification on a blocking thread (a hash is deliberately
    /// slow). The worker is held until it ends, even if the caller stops
    /// waiting, so that no more than the configured number ever run.
    pub async fn verify(self, password: String, hash: Option<String>) -> bool {
        tokio::task::spawn_blocking(move || {
            let inner = &self.passwords.inner;
            let mut memory = inner
                .memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            let known = hash.is_some();
            let stored = hash.as_deref().map(str::trim);
            let ok = match stored.map(|hash| verify_into(&mut memory, password.as_bytes(), hash)) {
                Some(Ok(ok)) => ok && known,
                // Unknown account, or a stored hash that cannot be used:
                // the same work against the demo hash, and no match.
                Some(Err(_)) | None => {
                    let _ =
                        verify_into(&mut memory, password.as_bytes(), DEMO_PASSWORD_HASH.trim());
                    false
                }
            };
            inner
                .memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(memory);
            drop(self.permit);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// Verifies `password` against the PHC string `phc` with `memory` as the
/// argon2 working memory (grown when the hash asks for more, never
/// shrunk): what `PasswordVerifier::verify_password` does, without
/// allocating the memory anew each time.
fn verify_into(
    memory: &mut Vec<Block>,
    password: &[u8],
    phc: &str,
) -> Result<bool, password_hash::Error> {
    let hash = PasswordHash::new(phc)?;
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Err(password_hash::Error::PhcStringField);
    };
    let algorithm = Algorithm::try_from(hash.algorithm)?;
    let version = match hash.version {
        Some(v) => Version::try_from(v)?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash)?;
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return Err(password_hash::Error::ParamValueInvalid(
            password_hash::errors::InvalidValue::TooLong,
        ));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; password_hash::Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory[..blocks],
    )?;
    // `Output` compares in constant time.
    Ok(password_hash::Output::new(out)? == expected)
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
    fn verifying_in_reused_memory_agrees_with_argon2() {
        use argon2::PasswordVerifier;

        let demo = DEMO_PASSWORD_HASH.trim();
        let parsed = PasswordHash::new(demo).unwrap();
        // Memory left dirty by other verifications changes nothing.
        let mut memory = vec![Block::new(); 8];
        for (password, expected) in [("hasivu-demo", true), ("hasivu-demO", false), ("", false)] {
            assert_eq!(
                verify_into(&mut memory, password.as_bytes(), demo).unwrap(),
                expected,
                "{password:?}"
            );
            assert_eq!(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                expected
            );
        }
        assert_eq!(memory.len(), 19 * 1024, "19 MiB, kept for the next one");
        assert!(
            verify_into(
                &mut memory,
                b"x",
                "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$aGFzaA"
            )
            .is_err()
        );
        assert!(verify_into(&mut memory, b"x", "not a hash").is_err());
    }

    #[tokio::test]
    async fn unknown_accounts_never_match_and_memory_is_one_block_per_worker() {
        let passwords = Passwords::new(2, 8, Duration::from_secs(60));
        let demo = || Some(DEMO_PASSWORD_HASH.trim().to_owned());
        assert_eq!(
            passwords.verify("hasivu-demo".into(), demo()).await,
            Ok(true)
        );
        assert_eq!(passwords.verify("wrong".into(), demo()).await, Ok(false));
        assert_eq!(
            passwords.verify("hasivu-demo".into(), None).await,
            Ok(false)
        );
        let broken = Some("$argon2id$broken".to_owned());
        assert_eq!(
            passwords.verify("hasivu-demo".into(), broken).await,
            Ok(false)
        );
        let all = futures_util::future::join_all(
            (0..6).map(|_| passwords.verify("hasivu-demo".into(), demo())),
        )
        .await;
        assert!(all.iter().all(|ok| *ok == Ok(true)), "{all:?}");
        let blocks = passwords.inner.memory.lock().unwrap();
        assert!(blocks.len() <= 2, "{} blocks for 2 workers", blocks.len());
        assert_eq!(passwords.busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_and_waits_time_out() {
        use futures_util::FutureExt;

        let passwords = Passwords::new(1, 1, Duration::from_secs(5));
        let held = passwords.worker().await.unwrap();
        assert_eq!(passwords.busy(), 1);

        // One may wait; the next one is refused at once.
        let waiting = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.worker().await.map(drop) }
        });
        while passwords.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = passwords.worker().await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        // The waiter gives up after the wait, and leaves its place.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(waiting.await.unwrap().is_err());
        assert_eq!(passwords.waiting(), 0);

        // A waiter whose caller goes away leaves no place behind either.
        let mut gone = Box::pin(passwords.worker());
        assert!((&mut gone).now_or_never().is_none());
        assert_eq!(passwords.waiting(), 1);
        drop(gone);
        assert_eq!(passwords.waiting(), 0);

        // Released, the worker serves the next login at once.
        drop(held);
        let next = passwords.worker().await.unwrap();
        assert_eq!(passwords.busy(), 1);
        drop(next);
        assert_eq!(passwords.busy(), 0);
    }

    #[tokio::test]
    async fn no_queue_means_busy_at_once() {
        let passwords = Passwords::new(1, 0, Duration::from_secs(60));
        let _held = passwords.worker().await.unwrap();
        assert!(passwords.worker().await.is_err());
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
