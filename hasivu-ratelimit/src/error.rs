//! The errors of the crate.

/// Why a store or a signal could not be built.
///
/// Checks never fail: a store backed by a service applies its fail policy
/// instead (see [`Source`](crate::Source)). Only construction can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL or client configuration was rejected.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The constructor needs a Tokio runtime (it spawns a connection or
    /// sampling task) and was called outside one.
    #[error("{0} must be called within a Tokio runtime")]
    NoRuntime(&'static str),
    /// A key prefix may not contain `{` or `}`: they would break the hash
    /// tags that keep a counter's keys in one Redis Cluster slot.
    #[error("invalid key prefix {0:?}: it may not contain '{{' or '}}'")]
    InvalidPrefix(String),
}
