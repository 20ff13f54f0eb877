//! The errors of the cache.

use std::time::Duration;

/// A boxed error from a loader or a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a cache call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader failed and no stale value within the fail-safe duration
    /// was available.
    #[error("loader failed: {0}")]
    Loader(#[source] std::sync::Arc<BoxError>),
    /// The loader did not finish within the hard timeout and no stale value
    /// was available.
    #[error("loader timed out after {0:?}")]
    Timeout(Duration),
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[source] CodecError),
    /// The L2 backend failed (only returned in strict mode; otherwise the
    /// cache goes on without L2).
    #[error("l2: {0}")]
    L2(#[source] BoxError),
    /// A pattern given to [`Cache::invalidate`](crate::Cache::invalidate)
    /// is not a key or a prefix glob.
    #[error("pattern: {0}")]
    Pattern(#[from] crate::PatternError),
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Loader(e) => Error::Loader(std::sync::Arc::clone(e)),
            Error::Timeout(d) => Error::Timeout(*d),
            Error::Codec(e) => Error::Codec(e.clone()),
            Error::L2(e) => Error::L2(e.to_string().into()),
            Error::Pattern(e) => Error::Pattern(e.clone()),
        }
    }
}

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    message: String,
}

impl CodecError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
