//! Why an acquire failed.

use std::{sync::Arc, time::Duration};

/// Why [`Pool::get`](crate::Pool::get) failed.
///
/// Backend errors are shared (`Arc`) because one failure can answer many
/// callers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError<E: std::error::Error + 'static> {
    /// No connection became free within the acquire timeout. `last_error`
    /// is the backend's last error, if creating a connection failed
    /// meanwhile: a full pool and a dead backend are told apart.
    #[error("no connection within {waited:?}{}", last_error.as_ref().map(|e| format!(" (last backend error: {e})")).unwrap_or_default())]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// The backend's last error.
        last_error: Option<Arc<E>>,
    },
    /// Creating a connection failed: the backend's own error.
    #[error("backend: {0}")]
    Backend(#[source] Arc<E>),
    /// Creating a connection took longer than the create timeout.
    #[error("creating a connection took longer than {0:?}")]
    CreateTimeout(Duration),
    /// The backend has been failing: the circuit breaker refuses at once
    /// until its next probe. `last_error` is the failure that opened it.
    #[error("backend unavailable (circuit open, next probe in {retry_in:?}){}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Unavailable {
        /// The backend's last error.
        last_error: Option<Arc<E>>,
        /// When the breaker lets the next probe through.
        retry_in: Duration,
    },
    /// The pool is draining or closed.
    #[error("pool closed")]
    Closed,
}

impl<E: std::error::Error + 'static> Clone for PoolError<E> {
    fn clone(&self) -> Self {
        match self {
            PoolError::Timeout { waited, last_error } => PoolError::Timeout {
                waited: *waited,
                last_error: last_error.clone(),
            },
            PoolError::Backend(e) => PoolError::Backend(Arc::clone(e)),
            PoolError::CreateTimeout(d) => PoolError::CreateTimeout(*d),
            PoolError::Unavailable {
                last_error,
                retry_in,
            } => PoolError::Unavailable {
                last_error: last_error.clone(),
                retry_in: *retry_in,
            },
            PoolError::Closed => PoolError::Closed,
        }
    }
}

/// Why [`PoolManager::pool`](crate::PoolManager::pool) refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolManagerError {
    /// A pool of another manager type is registered under this type and
    /// key.
    #[error("pool {kind}/{key} holds another manager type than {requested}")]
    ManagerMismatch {
        /// The resource type asked for.
        kind: String,
        /// The configuration key asked for.
        key: String,
        /// The manager type asked for.
        requested: &'static str,
    },
}
