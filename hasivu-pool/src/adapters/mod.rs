//! [`Manager`](crate::Manager)s for real backends, each behind its Cargo
//! feature.
//!
//! | Module | Feature | Manager | Connection | Validation |
//! |---|---|---|---|---|
//! | `redis` | `redis` | `RedisManager` | `redis::aio::MultiplexedConnection` | `PING` |
//! | `postgres` | `postgres` | `PostgresManager` | `PostgresConnection` (a `tokio_postgres::Client`) | closed check, then an empty query |
//! | `sqlite` | `sqlite` | `SqliteManager` | `SqliteConnection` (a `rusqlite::Connection` used on `spawn_blocking`) | `SELECT 1` |
//! | `http` | `http` | `HttpManager` | `HttpHandle` (a handle to a shared `hyper-util` client) | a TCP connect to the host (also on create) |
//!
//! Every adapter's error carries the backend's own message, causes
//! included, so [`PoolError::Backend`](crate::PoolError::Backend) and the
//! `last_error` of [`PoolError::Timeout`](crate::PoolError::Timeout) and
//! [`PoolError::Unavailable`](crate::PoolError::Unavailable) read like
//! `error connecting to server: Connection refused (os error 111)`.

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

/// `error: cause: cause…`, each cause once: some errors (tokio-postgres,
/// hyper) keep the interesting part ("Connection refused") in `source()`
/// only, and the pool's errors print just the top message.
#[cfg(any(feature = "http", feature = "postgres", feature = "redis"))]
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(all(test, any(feature = "http", feature = "postgres", feature = "redis")))]
mod tests {
    use super::with_causes;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_appended_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(with_causes(&Outer(refused)), "outer: refused");
        let plain = std::io::Error::other("plain");
        assert_eq!(with_causes(&plain), "plain");
    }
}
