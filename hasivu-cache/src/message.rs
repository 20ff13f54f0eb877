//! The backplane's message: small JSON telling the other instances which
//! keys or prefixes changed. Pure data; the Redis side is in `backplane`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a message asks the other instances to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    /// Keys were written: drop them from L1 (L2 holds the new values).
    Set,
    /// Keys were removed.
    Remove,
    /// Keys and prefixes were invalidated; prefixes at generation `g`.
    Invalidate,
}

/// One backplane message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) op: Op,
    /// Keys.
    #[serde(default, rename = "k", skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    /// Prefixes.
    #[serde(default, rename = "p", skip_serializing_if = "Vec::is_empty")]
    pub(crate) prefixes: Vec<String>,
    /// The generation of the prefixes.
    #[serde(default, rename = "g", skip_serializing_if = "is_zero")]
    pub(crate) generation: u64,
    /// The sending instance.
    #[serde(rename = "o")]
    pub(crate) origin: u64,
    /// When it was sent, in milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub(crate) sent_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
