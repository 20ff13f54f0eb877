//! The crate's errors.

use std::path::PathBuf;

/// What can go wrong when building alert rules, delivering notifications
/// or persisting regression history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule is inconsistent (no threshold, a clear threshold on the wrong
    /// side of its trigger, a duplicate name, ...).
    #[error("invalid rule `{rule}`: {reason}")]
    InvalidRule {
        /// The rule's name.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sink could not deliver a notification batch.
    #[error("sink `{sink}` failed: {reason}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// Why delivery failed (after any retries).
        reason: String,
    },
    /// A webhook URL could not be parsed or uses an unsupported scheme.
    #[error("invalid webhook url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing a history file failed.
    #[error("history file {path}: {source}")]
    HistoryIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A history file exists but is not valid history.
    #[error("history file {path} is not valid history: {source}")]
    HistoryFormat {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or writing history in Redis failed, or the key holds
    /// something that is not history.
    #[error("history in Redis key {key}: {reason}")]
    HistoryRedis {
        /// The key.
        key: String,
        /// What went wrong.
        reason: String,
    },
}
