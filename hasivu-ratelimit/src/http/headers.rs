//! Rate-limit response fields (draft-ietf-httpapi-ratelimit-headers-10),
//! the legacy `X-RateLimit-*` trio and the problem+json body. Pure.

use std::time::Duration;

use crate::Decision;

/// Whole seconds, rounded up: a client told to wait `n` seconds never
/// comes back too early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Seconds until the client should count on quota: on a rejection, until
/// the request would fit (the same as `Retry-After`); otherwise until the
/// quota is whole again.
pub(crate) fn reset_secs(decision: &Decision) -> u64 {
    let v = &decision.verdict;
    match (v.allowed, v.retry_after) {
        (false, Some(retry)) => ceil_secs(retry),
        _ => ceil_secs(v.reset_after),
    }
}

/// `RateLimit-Policy: "general";q=1000;w=900`
pub(crate) fn policy_field(decision: &Decision) -> String {
    format!(
        "\"{}\";q={};w={}",
        decision.policy,
        decision.verdict.limit,
        ceil_secs(decision.window)
    )
}

/// `RateLimit: "general";r=12;t=30`
pub(crate) fn limit_field(decision: &Decision) -> String {
    format!(
        "\"{}\";r={};t={}",
        decision.policy,
        decision.verdict.remaining,
        reset_secs(decision)
    )
}

/// The problem type of a rejection: the IANA-registered ones of the
/// draft.
pub(crate) fn problem_type(decision: &Decision) -> (&'static str, &'static str) {
    if decision.reduced {
        (
            "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "Temporarily reduced capacity",
        )
    } else {
        (
            "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "Quota exceeded",
        )
    }
}

/// The problem+json body of a rejection.
pub(crate) fn problem_body(decision: &Decision, status: u16) -> String {
    let (kind, title) = problem_type(decision);
    let detail = match decision.verdict.retry_after {
        Some(retry) if decision.reduced => format!(
            "the service is under heavy load and has reduced the {} quota to {} requests per {} s; retry in {} s",
            decision.policy,
            decision.verdict.limit,
            ceil_secs(decision.window),
            ceil_secs(retry)
        ),
        Some(retry) => format!(
            "the {} quota of {} requests per {} s is used up; retry in {} s",
            decision.policy,
            decision.verdict.limit,
            ceil_secs(decision.window),
            ceil_secs(retry)
        ),
        None => format!(
            "this request costs more than the {} quota of {} requests per {} s allows",
            decision.policy,
            decision.verdict.limit,
            ceil_secs(decision.window)
        ),
    };
    serde_json::json!({
        "type": kind,
        "title": title,
        "status": status,
        "detail": detail,
        "policy": &*decision.policy,
        "limit": decision.verdict.limit,
        "window_seconds": ceil_secs(decision.window),
        "retry_after_seconds": decision.verdict.retry_after.map(ceil_secs),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Source, Verdict};

    fn decision(allowed: bool, retry: Option<Duration>, reduced: bool) -> Decision {
        Decision {
            verdict: Verdict {
                allowed,
                limit: 1000,
                remaining: if allowed { 12 } else { 0 },
                reset_after: Duration::from_millis(29_100),
                retry_after: retry,
            },
            policy: Arc::from("general"),
            window: Duration::from_secs(900),
            reduced,
            shadow: false,
            source: Source::Local,
        }
    }

    #[test]
    fn fields_follow_the_draft() {
        let ok = decision(true, None, false);
        assert_eq!(policy_field(&ok), r#""general";q=1000;w=900"#);
        assert_eq!(limit_field(&ok), r#""general";r=12;t=30"#);
        let limited = decision(false, Some(Duration::from_millis(1500)), false);
        assert_eq!(limit_field(&limited), r#""general";r=0;t=2"#);
        assert_eq!(reset_secs(&limited), 2, "never earlier than the retry");
    }

    #[test]
    fn problem_bodies_name_their_type() {
        let body: serde_json::Value = serde_json::from_str(&problem_body(
            &decision(false, Some(Duration::from_secs(3)), true),
            503,
        ))
        .unwrap();
        assert_eq!(
            body["type"],
            "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
        );
        assert_eq!(body["status"], 503);
        assert_eq!(body["retry_after_seconds"], 3);
        let body: serde_json::Value =
            serde_json::from_str(&problem_body(&decision(false, None, false), 429)).unwrap();
        assert_eq!(
            body["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
        assert!(body["retry_after_seconds"].is_null());
    }
}
