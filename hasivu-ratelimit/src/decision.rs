//! What a check answers.

use std::{sync::Arc, time::Duration};

/// A store's answer for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted (and was counted).
    pub allowed: bool,
    /// The limit the check ran against (after tier and load scaling).
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Until the quota is whole again (GCRA) or the window ends (sliding
    /// window).
    pub reset_after: Duration,
    /// For a rejection: when the same request would be admitted; `None`
    /// when it never would be (a cost above the burst, a limit of 0).
    pub retry_after: Option<Duration>,
}

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The in-process store.
    Local,
    /// The shared Redis store.
    Redis,
    /// Tokens leased from Redis and spent locally.
    Lease,
    /// Redis failed and the fail-open policy admitted the request.
    FailOpen,
    /// Redis failed and the fail-closed policy refused the request.
    FailClosed,
    /// Redis failed and the local fallback store decided.
    Fallback,
}

impl Source {
    /// Every source, in [`index`](Self::index) order.
    pub(crate) const ALL: [Source; 6] = [
        Source::Local,
        Source::Redis,
        Source::Lease,
        Source::FailOpen,
        Source::FailClosed,
        Source::Fallback,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Redis => "redis",
            Source::Lease => "lease",
            Source::FailOpen => "fail_open",
            Source::FailClosed => "fail_closed",
            Source::Fallback => "fallback",
        }
    }
}

/// The limiter's answer: the store's verdict and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The store's verdict.
    pub verdict: Verdict,
    /// The policy that applied (its name, as in `RateLimit-Policy`).
    pub policy: Arc<str>,
    /// The window of the quota, for the `RateLimit-Policy` header.
    pub window: Duration,
    /// Whether limits were reduced because the service is under load.
    pub reduced: bool,
    /// Counted but not enforced (shadow mode): `verdict.allowed` says what
    /// enforcement would have done; the request goes through either way.
    pub shadow: bool,
    /// Where the verdict came from.
    pub source: Source,
}

impl Decision {
    /// Whether the request may proceed (always true in shadow mode).
    pub fn is_allowed(&self) -> bool {
        self.verdict.allowed || self.shadow
    }
}
